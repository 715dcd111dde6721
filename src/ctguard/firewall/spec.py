"""What to take out of conntrack: Ceph's ports, the networks they are reachable from, and extra exemptions.

Pure values and their validation; nothing here reads the host. Every bad value is a `BadInput` with one line
that names the flag and the value, raised before any rule text exists, so a bad input can never produce a
half-written ruleset.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ctguard.errors import BadInput

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Ceph defaults: msgr2 3300 and msgr1 6789 for monitors; ms_bind_port_min..max for every other daemon
# (src/common/options/global.yaml.in: ms_bind_port_min 6800, ms_bind_port_max 7568).
DEFAULT_MON_PORTS: tuple[int, ...] = (3300, 6789)
DEFAULT_MS_BIND_PORT_MIN = 6800
DEFAULT_MS_BIND_PORT_MAX = 7568


@dataclass(frozen=True, order=True)
class PortRange:
    lo: int
    hi: int

    def __post_init__(self) -> None:
        for p in (self.lo, self.hi):
            if not 1 <= p <= 65535:
                raise BadInput(f"port {p} out of range (1-65535)")
        if self.lo > self.hi:
            raise BadInput(f"port range {self.lo}-{self.hi} is reversed")

    def nft(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"

    def ipt(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}:{self.hi}"

    def __str__(self) -> str:
        return self.nft()


@dataclass(frozen=True)
class Exemption:
    """Extra server ports on this host (e.g. the exporter's 9477) untracked only for clients in `sources`."""

    ports: tuple[PortRange, ...]
    sources: tuple[Network, ...]


@dataclass(frozen=True)
class NotrackSpec:
    networks: tuple[Network, ...]
    mon_ports: tuple[int, ...] = DEFAULT_MON_PORTS
    osd_range: PortRange = field(default_factory=lambda: PortRange(DEFAULT_MS_BIND_PORT_MIN,
                                                                   DEFAULT_MS_BIND_PORT_MAX))
    extra: tuple[Exemption, ...] = ()

    @property
    def ceph_ports(self) -> tuple[PortRange, ...]:
        """Mon ports and the messenger range, merged and sorted (nft interval sets refuse overlaps)."""
        return merge_ranges([PortRange(p, p) for p in self.mon_ports] + [self.osd_range])

    @property
    def v4(self) -> tuple[ipaddress.IPv4Network, ...]:
        return tuple(n for n in self.networks if isinstance(n, ipaddress.IPv4Network))

    @property
    def v6(self) -> tuple[ipaddress.IPv6Network, ...]:
        return tuple(n for n in self.networks if isinstance(n, ipaddress.IPv6Network))

    def to_json(self) -> dict[str, object]:
        return {
            "networks": [str(n) for n in self.networks],
            "mon_ports": list(self.mon_ports),
            "osd_range": [self.osd_range.lo, self.osd_range.hi],
            "ceph_ports": [str(r) for r in self.ceph_ports],
            "extra": [{"ports": [str(p) for p in e.ports], "from": [str(s) for s in e.sources]}
                      for e in self.extra],
        }


def merge_ranges(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    out: list[PortRange] = []
    for r in sorted(ranges):
        if out and r.lo <= out[-1].hi + 1:
            out[-1] = PortRange(out[-1].lo, max(out[-1].hi, r.hi))
        else:
            out.append(r)
    return tuple(out)


def parse_port(text: str | int, what: str = "port") -> int:
    s = str(text).strip()
    if not s.isdigit():
        raise BadInput(f"bad {what} {str(text)!r}: expected a number 1-65535")
    p = int(s)
    if not 1 <= p <= 65535:
        raise BadInput(f"bad {what} {s}: out of range 1-65535")
    return p


def parse_range(text: str, what: str = "port range") -> PortRange:
    """`6800-7568`, `6800:7568` or a single port."""
    s = text.strip()
    for sep in ("-", ":"):
        if sep in s:
            lo_s, _, hi_s = s.partition(sep)
            lo, hi = parse_port(lo_s, what), parse_port(hi_s, what)
            if lo > hi:
                raise BadInput(f"bad {what} {text!r}: start {lo} is above end {hi}")
            return PortRange(lo, hi)
    p = parse_port(s, what)
    return PortRange(p, p)


def parse_port_list(text: str, what: str = "port") -> tuple[int, ...]:
    items = [t for t in text.replace(" ", ",").split(",") if t]
    if not items:
        raise BadInput(f"bad {what} list {text!r}: empty")
    return tuple(sorted({parse_port(t, what) for t in items}))


def parse_network(text: str, what: str = "network") -> Network:
    """An IPv4 or IPv6 CIDR. Host bits set is an error (a typo there would silently widen or shift the
    exemption), and so is a /0 (that would take all traffic on these ports out of the firewall)."""
    s = text.strip()
    try:
        net = ipaddress.ip_network(s, strict=True)
    except ValueError as e:
        try:
            loose = ipaddress.ip_network(s, strict=False)
        except ValueError:
            raise BadInput(f"bad {what} {text!r}: not an IPv4 or IPv6 CIDR ({e})") from None
        raise BadInput(f"bad {what} {text!r}: host bits set (did you mean {loose}?)") from None
    if net.prefixlen == 0:
        raise BadInput(f"refusing {what} {s}: a /0 would exempt these ports from everywhere")
    return net


def dedupe_networks(nets: Iterable[Network]) -> tuple[Network, ...]:
    """Sorted, duplicates and networks inside another one dropped (nft interval sets refuse overlaps)."""
    items = list(nets)
    v4 = list(ipaddress.collapse_addresses(n for n in items if isinstance(n, ipaddress.IPv4Network)))
    v6 = list(ipaddress.collapse_addresses(n for n in items if isinstance(n, ipaddress.IPv6Network)))
    return tuple(v4) + tuple(v6)


def build_spec(
    networks: Sequence[str],
    mon_ports: Sequence[int | str] | None = None,
    osd_range: str | tuple[int, int] | None = None,
    extra_ports: Sequence[str] = (),
    extra_from: Sequence[str] = (),
) -> NotrackSpec:
    """Validate user input into a spec; raises BadInput with the first problem found."""
    if not networks:
        raise BadInput("no network given: pass --network CIDR (Ceph public and cluster networks), "
                       "or run where `ceph config get` can read public_network/cluster_network")
    nets = dedupe_networks(parse_network(n, "--network") for n in networks)
    mons = DEFAULT_MON_PORTS if mon_ports is None else tuple(sorted({parse_port(p, "--mon-port")
                                                                    for p in mon_ports}))
    if not mons:
        raise BadInput("--mon-ports: empty list")
    if osd_range is None:
        rng = PortRange(DEFAULT_MS_BIND_PORT_MIN, DEFAULT_MS_BIND_PORT_MAX)
    elif isinstance(osd_range, tuple):
        lo, hi = parse_port(osd_range[0], "ms_bind_port_min"), parse_port(osd_range[1], "ms_bind_port_max")
        if lo > hi:
            raise BadInput(f"ms_bind_port_min {lo} is above ms_bind_port_max {hi}")
        rng = PortRange(lo, hi)
    else:
        rng = parse_range(osd_range, "--osd-range")
    extra: tuple[Exemption, ...] = ()
    if extra_ports or extra_from:
        if not extra_ports:
            raise BadInput("--extra-from needs at least one --extra-port")
        if not extra_from:
            raise BadInput("--extra-port needs --extra-from CIDR (the clients allowed to reach it)")
        ports = merge_ranges(parse_range(p, "--extra-port") for p in extra_ports)
        srcs = dedupe_networks(parse_network(n, "--extra-from") for n in extra_from)
        extra = (Exemption(ports, srcs),)
    return NotrackSpec(networks=nets, mon_ports=mons, osd_range=rng, extra=extra)
