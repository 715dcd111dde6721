"""Port roles: which Ceph daemon kind a connection belongs to, from its service port.

Ceph's monitors listen on 3300 (msgr2) and 6789 (msgr1); OSDs, MGRs and MDSs bind in
ms_bind_port_min..ms_bind_port_max, 6800-7568 by default since Ceph 15 (7300 before). A connection's role is
that of its server-side port: the original tuple's destination port (who was connected to), falling back to
the source port for entries conntrack picked up mid-stream (direction guessed from a reply packet). Linux's
ephemeral range (32768-60999) does not overlap either, so a client-side port is never mistaken for one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctguard.errors import BadInput

MON = "ceph-mon"
OSD = "ceph-osd"
OTHER = "other"
ROLES = (MON, OSD, OTHER)


@dataclass(frozen=True)
class PortRoles:
    mon_ports: tuple[int, ...] = (3300, 6789)
    osd_range: tuple[int, int] = (6800, 7568)

    def __post_init__(self) -> None:
        lo, hi = self.osd_range
        if not (0 < lo <= hi <= 65535):
            raise BadInput(f"bad OSD port range {lo}-{hi}")
        for p in self.mon_ports:
            if not 0 < p <= 65535:
                raise BadInput(f"bad mon port {p}")

    def role(self, port: int) -> str:
        if port in self.mon_ports:
            return MON
        lo, hi = self.osd_range
        if lo <= port <= hi:
            return OSD
        return OTHER

    def table(self) -> list[str]:
        """role for every port 0..65535, for per-entry lookups without branching."""
        t = [OTHER] * 65536
        lo, hi = self.osd_range
        for p in range(lo, hi + 1):
            t[p] = OSD
        for p in self.mon_ports:
            t[p] = MON
        return t

    def is_ceph(self, port: int) -> bool:
        return self.role(port) != OTHER


def parse_range(text: str) -> tuple[int, int]:
    """'6800-7568' or '6800:7568' -> (6800, 7568)."""
    sep = "-" if "-" in text else ":"
    try:
        lo_s, hi_s = text.split(sep, 1)
        lo, hi = int(lo_s), int(hi_s)
    except ValueError as e:
        raise BadInput(f"bad port range {text!r} (expected LOW-HIGH)") from e
    if not (0 < lo <= hi <= 65535):
        raise BadInput(f"bad port range {text!r}")
    return lo, hi
