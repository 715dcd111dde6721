"""One host's connection inventory by role, from its measured conntrack entries: what `simulate` and `plan`
need to know about a host instead of guessing it from a formula.

Roles (of the entries whose connections are still open; closing or never-assured ones are `transient`):

* ``osd_out``: this host's OSDs connected to an OSD on another host (cluster messenger sessions and the
  heartbeat front/back connections this host's OSDs open: ``lossless_peer`` / ``lossy_client`` policies,
  src/ceph_osd.cc);
* ``osd_in``: an OSD on another host connected to one of ours (the same kinds, the other way);
* ``local``: both ends on this host (heartbeats between the host's own OSDs; one entry per connection,
  kernel-conntrack.md §1);
* ``client``: a client (librados, RBD, RGW, CephFS) connected to one of our OSDs (lossy, one session per OSD
  it talks to);
* ``mon_mgr``: sessions with a monitor (3300/6789) or the mgr (an OSD-range port on a monitor's address, or
  ``mgr_addrs``), in either direction;
* ``other``: not Ceph's (VMs, containers, the host's own services): they hold their slots through a restart;
* ``transient``: Ceph entries already closing (TIME_WAIT, CLOSE, ...) or not assured: they do not churn.

A connection's Ceph role comes from its service port (`roles.PortRoles`); which *peer* it is comes from the
addresses: the monitors are the addresses this host reaches on a monitor port, the OSD hosts the addresses it
reaches on OSD ports (minus the monitors'), unless given. An inbound connection to an OSD port from an address
that is neither is a client. Entries conntrack picked up mid-stream (original direction = a reply) are turned
round by their service port.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ctguard.errors import BadInput
from ctguard.model.roles import MON, OSD, OTHER, PortRoles

KEYS = ("osd_out", "osd_in", "local", "client", "mon_mgr", "other", "transient")
# TCP states whose connection is open for conntrack: the entries a restart turns into TIME_WAIT
OPEN_STATES = frozenset({"ESTABLISHED", "SYN_SENT", "SYN_RECV", "SYN_SENT2"})


@dataclass(frozen=True)
class Inventory:
    """Entries of one host by role (counts, not per OSD)."""

    osd_out: int = 0
    osd_in: int = 0
    local: int = 0
    client: int = 0
    mon_mgr: int = 0
    other: int = 0
    transient: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, k) for k in KEYS)

    @property
    def osd_osd(self) -> int:
        """OSD<->OSD sessions with other hosts, both directions."""
        return self.osd_out + self.osd_in

    @property
    def ceph_open(self) -> int:
        """Open Ceph sessions: what a whole-host restart closes and re-opens."""
        return self.osd_out + self.osd_in + self.local + self.client + self.mon_mgr

    @property
    def held(self) -> int:
        """Entries a restart leaves alone (not Ceph's, or already closing)."""
        return self.other + self.transient

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in KEYS}

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], where: str = "inventory") -> Inventory:
        kw: dict[str, int] = {}
        for k, v in doc.items():
            if k not in KEYS:
                raise BadInput(f"{where}: unknown role {k!r} (known: {', '.join(KEYS)})")
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise BadInput(f"{where}.{k}: expected a count >= 0")
            kw[k] = int(v)
        return cls(**kw)


def _addr(a: Any) -> bytes:
    """An address as packed bytes (text, bytes or an integer as the column path reads it)."""
    if isinstance(a, bytes):
        return a
    if isinstance(a, int):
        raise BadInput("inventory: integer addresses need their byte order; pass bytes")
    try:
        return ipaddress.ip_address(str(a)).packed
    except ValueError as e:
        raise BadInput(f"inventory: bad address {a!r}") from e


def _is_loopback(a: bytes) -> bool:
    return (len(a) == 4 and a[0] == 127) or a == bytes(15) + b"\x01"


# one aggregated key: (source address, destination address, source port role, destination port role, state)
Key = tuple[bytes, bytes, str, str, str]


def classify_counts(
    counts: Mapping[Key, int],
    local_addrs: Iterable[Any],
    *,
    mon_addrs: Iterable[Any] | None = None,
    mgr_addrs: Iterable[Any] = (),
    osd_host_addrs: Iterable[Any] | None = None,
    client_addrs: Iterable[Any] = (),
    other: int = 0,
) -> Inventory:
    """The inventory from aggregated entries. `other` adds entries counted elsewhere as not Ceph's."""
    local = {_addr(a) for a in local_addrs}
    clients = {_addr(a) for a in client_addrs}
    mgrs = {_addr(a) for a in mgr_addrs}
    # orient every Ceph entry: (remote address, remote is the server?, service role, is local, state)
    oriented: list[tuple[bytes, bool, str, bool, str, int]] = []
    out: Counter[str] = Counter()
    out["other"] += other
    for (src, dst, rs, rd, state), n in counts.items():
        if rd == OTHER and rs == OTHER:
            out["other"] += n
            continue
        both_local = (src in local or _is_loopback(src)) and (dst in local or _is_loopback(dst))
        if rd != OTHER:  # the original destination is the server: src connected to dst
            role, src_local = rd, src in local or _is_loopback(src)
            remote, outbound = (dst, True) if src_local else (src, False)
        else:  # picked up mid-stream from a reply: the source is the server
            role, dst_local = rs, dst in local or _is_loopback(dst)
            remote, outbound = (src, True) if dst_local else (dst, False)
        oriented.append((remote, outbound, role, both_local, state, n))
    mons = ({_addr(a) for a in mon_addrs} if mon_addrs is not None
            else {r for r, o, role, lo, _, _ in oriented if o and role == MON and not lo})
    osd_hosts = ({_addr(a) for a in osd_host_addrs} if osd_host_addrs is not None
                 else {r for r, o, role, lo, _, _ in oriented if o and role == OSD and not lo} - mons - mgrs)
    for remote, outbound, role, both_local, state, n in oriented:
        if state not in OPEN_STATES:
            out["transient"] += n
        elif both_local:
            out["local"] += n
        elif role == MON or remote in mons or remote in mgrs:
            out["mon_mgr"] += n
        elif remote in clients:
            out["client"] += n
        elif outbound:
            out["osd_out"] += n
        elif remote in osd_hosts:
            out["osd_in"] += n
        else:
            out["client"] += n
    return Inventory(**{k: out[k] for k in KEYS})


def classify_entries(
    entries: Iterable[Any],
    local_addrs: Iterable[Any],
    *,
    roles: PortRoles | None = None,
    mon_addrs: Iterable[Any] | None = None,
    osd_host_addrs: Iterable[Any] | None = None,
    client_addrs: Iterable[Any] = (),
) -> Inventory:
    """Entries as the lab sweep records them: [proto, state, orig_src, orig_dst, orig_sport, orig_dport]
    (proto a name or number, state a TCP state name or number; non-TCP entries are `other` unless on a Ceph
    port)."""
    from ctguard.kernel.nfnetlink import TCP_STATES

    pr = roles or PortRoles()
    counts: Counter[Key] = Counter()
    for i, e in enumerate(entries):
        try:
            proto, state, src, dst, sport, dport = e
            sport_i, dport_i = int(sport), int(dport)
        except (TypeError, ValueError) as err:
            raise BadInput(f"baseline_entries[{i}]: expected [proto, state, src, dst, sport, dport]") from err
        if isinstance(state, int):
            state = TCP_STATES[state] if 0 <= state < len(TCP_STATES) else f"STATE_{state}"
        tcp = str(proto).lower() in ("tcp", "6")
        counts[(_addr(src), _addr(dst), pr.role(sport_i), pr.role(dport_i),
                 str(state).upper() if tcp else "ESTABLISHED")] += 1
    return classify_counts(counts, local_addrs, mon_addrs=mon_addrs, osd_host_addrs=osd_host_addrs,
                           client_addrs=client_addrs)
