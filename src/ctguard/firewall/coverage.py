"""Which untracked Ceph packets does a filter chain accept without a `ct state` match?

Once `table inet ctguard` untracks Ceph's traffic, those packets never match `ct state established,related`.
A chain still takes them if a rule before its drop accepts them *statelessly*: by address and port, with no
ct-state match (`ip saddr 198.18.5.0/24 tcp dport { 3300, 6789, 6800-7568 } accept`). Whether such rules
cover everything we untrack is a question of sets, answered here cell by cell: every (peer network, local
network, port range) that our notrack rules untrack at a hook must be accepted before the chain drops.

What reaches each hook untracked (see nftrules.table_body):
  input:  "to our daemons"             tcp dport <ceph ports>, saddr and daddr in the Ceph networks
          "replies from peer daemons"  tcp sport <ceph ports>: replies to this host's OWN connections to
                                       other OSDs and the monitors
  output: "replies of our daemons"     tcp sport <ceph ports>
          "to peer daemons"            tcp dport <ceph ports>
The second input class is the one a stateless `dport` accept forgets. Measured on kernel 6.18 in two
namespaces with the chain `policy drop; ct state established,related accept; ip saddr NET tcp dport {...}
accept`: a peer's connection to port 6800 here went through, this host's connection to the peer's port 6801
timed out (its SYN-ACK came back untracked with sport 6801 and met the policy).

Conditions we cannot judge (an interface other than lo, negations, tcp flags, iptables-nft compat matches)
make a rule "for review" when it would otherwise have covered something; it is never silently counted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ctguard.errors import BadInput
from ctguard.firewall.spec import Network, NotrackSpec, PortRange

ANY4 = ipaddress.ip_network("0.0.0.0/0")
ANY6 = ipaddress.ip_network("::/0")
PORT_ANY = (PortRange(1, 65535),)


@dataclass(frozen=True)
class Cell:
    """Untracked packets of one class: from `peer` to `local` (input) or the other way (output)."""

    flow: str          # "to our daemons", ...
    port_field: str    # "dport" | "sport"
    peer: Network
    local: Network
    ports: PortRange

    def describe(self) -> str:
        return f"{self.flow} (tcp {self.port_field} {self.ports.nft()} from/to {self.peer})"


@dataclass(frozen=True)
class Match:
    """A rule's conditions, as far as they decide whether it takes untracked Ceph packets."""

    saddr: tuple[Network, ...] | None = None   # None: any
    daddr: tuple[Network, ...] | None = None
    sport: tuple[PortRange, ...] | None = None
    dport: tuple[PortRange, ...] | None = None
    ct: str | None = None                      # None | "untracked" (matches them) | "never" (cannot match)
    lo_only: bool = False                      # iif lo: traffic between hosts never comes this way
    not_tcp: bool = False                      # a protocol match that excludes tcp
    unknown: tuple[str, ...] = ()              # conditions we do not judge

    @property
    def conditional(self) -> bool:
        return any(x is not None for x in (self.saddr, self.daddr, self.sport, self.dport)) or bool(self.unknown)


def cells(spec: NotrackSpec, hook: str, versions: Iterable[int] = (4, 6)) -> list[Cell]:
    """Everything ctguard's notrack rules make reach `hook` untracked, for the IP versions the chain sees."""
    want = set(versions)
    nets = [n for n in spec.networks if n.version in want]
    out: list[Cell] = []
    classes = (("to our daemons", "dport"), ("replies from peer daemons", "sport")) if hook == "input" else \
        (("replies of our daemons", "sport"), ("to peer daemons", "dport"))
    for flow, pf in classes:
        for peer in nets:
            for local in nets:
                if peer.version != local.version:
                    continue
                out += [Cell(flow, pf, peer, local, r) for r in spec.ceph_ports]
    for ex in spec.extra:
        flow, pf = ("extra port, from its clients", "dport") if hook == "input" else ("extra port, replies", "sport")
        for peer in ex.sources:
            if peer.version in want:
                any_local = ANY4 if peer.version == 4 else ANY6
                out += [Cell(flow, pf, peer, any_local, r) for r in ex.ports]
    return out


def _nets_cover(rule_nets: tuple[Network, ...] | None, net: Network) -> bool:
    if rule_nets is None:
        return True
    return any(n.version == net.version and net.subnet_of(n) for n in rule_nets)  # type: ignore[arg-type,unused-ignore]


def _nets_overlap(rule_nets: tuple[Network, ...] | None, net: Network) -> bool:
    if rule_nets is None:
        return True
    return any(n.version == net.version and n.overlaps(net) for n in rule_nets)


def _addr_fields(hook: str) -> tuple[str, str]:
    """(field holding the peer's address, field holding ours) at this hook."""
    return ("saddr", "daddr") if hook == "input" else ("daddr", "saddr")


def _subtract(r: PortRange, cut: Sequence[PortRange]) -> list[PortRange]:
    parts = [(r.lo, r.hi)]
    for c in cut:
        nxt: list[tuple[int, int]] = []
        for lo, hi in parts:
            if c.hi < lo or c.lo > hi:
                nxt.append((lo, hi))
                continue
            if lo < c.lo:
                nxt.append((lo, c.lo - 1))
            if c.hi < hi:
                nxt.append((c.hi + 1, hi))
        parts = nxt
    return [PortRange(lo, hi) for lo, hi in parts]


def _overlaps(r: PortRange, ranges: Sequence[PortRange]) -> bool:
    return any(not (c.hi < r.lo or c.lo > r.hi) for c in ranges)


def accept(remaining: list[Cell], m: Match, hook: str) -> tuple[list[Cell], list[Cell]]:
    """(what is left, what this accepting rule took)."""
    if m.ct == "never" or m.lo_only or m.not_tcp:
        return remaining, []
    peer_f, local_f = _addr_fields(hook)
    left: list[Cell] = []
    took: list[Cell] = []
    for c in remaining:
        ports = m.dport if c.port_field == "dport" else m.sport
        other = m.sport if c.port_field == "dport" else m.dport
        if (other is not None and other != PORT_ANY) or not _nets_cover(getattr(m, peer_f), c.peer) \
                or not _nets_cover(getattr(m, local_f), c.local):
            # An accept that also demands the other port (a fixed source port...) or covers only part of a
            # network takes only part of the cell: not counted.
            left.append(c)
            continue
        cut = ports if ports is not None else PORT_ANY
        rest = _subtract(c.ports, cut)
        if rest != [c.ports]:
            took.append(c)
        left += [Cell(c.flow, c.port_field, c.peer, c.local, r) for r in rest]
    return left, took


def dropped_by(remaining: list[Cell], m: Match, hook: str) -> list[Cell]:
    """The cells a conditional drop/reject rule with known conditions hits (any overlap counts)."""
    if m.ct == "never" or m.lo_only or m.not_tcp or m.unknown:
        return []
    peer_f, local_f = _addr_fields(hook)
    hit = []
    for c in remaining:
        ports = m.dport if c.port_field == "dport" else m.sport
        if _nets_overlap(getattr(m, peer_f), c.peer) and _nets_overlap(getattr(m, local_f), c.local) \
                and (ports is None or _overlaps(c.ports, ports)):
            hit.append(c)
    return hit


def summary(cs: Sequence[Cell]) -> str:
    """`replies from peer daemons (tcp sport 3300, 6789, 6800-7568 from 198.18.5.0/24)`, grouped by flow."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in cs:
        groups.setdefault((c.flow, c.port_field), []).append(c)
    parts = []
    for (flow, pf), g in groups.items():
        ports = ", ".join(dict.fromkeys(c.ports.nft() for c in g))
        peers = ", ".join(dict.fromkeys(str(c.peer) for c in g))
        parts.append(f"{flow} (tcp {pf} {ports}; peers {peers})")
    return "; ".join(parts)


def consequence(cs: Sequence[Cell]) -> str:
    flows = {c.flow for c in cs}
    says = []
    if "to our daemons" in flows:
        says.append("peers cannot reach this host's daemons")
    if "replies from peer daemons" in flows:
        says.append("this host's own connections to other OSDs and the monitors fail")
    if "replies of our daemons" in flows:
        says.append("this host's daemons cannot answer their peers")
    if "to peer daemons" in flows:
        says.append("this host's daemons cannot open connections to their peers")
    if any(f.startswith("extra port") for f in flows):
        says.append("the extra ports are unreachable")
    return ", ".join(says)


@dataclass
class Walk:
    """A chain read top to bottom: what is still untracked-and-not-accepted, and what the rules so far did."""

    hook: str
    remaining: list[Cell]
    took: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)

    def step(self, i: int, m: Match, accepts: bool) -> list[Cell]:
        """Rule `i` (accept or drop/reject) with conditions `m`; returns the cells a drop rule hits."""
        if not accepts:
            return dropped_by(self.remaining, m, self.hook) if m.conditional else []
        if m.unknown:
            _, would = accept(self.remaining, replace(m, unknown=()), self.hook)
            if would:
                self.review.append(f"rule {i} accepts {summary(would)} only if {', '.join(m.unknown)} (not judged)")
            return []
        self.remaining, got = accept(self.remaining, m, self.hook)
        if got:
            self.took.append(f"rule {i} accepts {summary(got)} statelessly")
        return []

    @property
    def done(self) -> bool:
        return not self.remaining

    def accepted(self) -> str:
        return "every untracked Ceph packet is accepted before any drop: " + "; ".join(self.took + self.review)


# -- nft JSON -----------------------------------------------------------------------------------------------

@dataclass
class NftSets:
    """Named sets of the ruleset: (family, table, name) -> elements, for `@name` references."""

    by_key: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, items: Sequence[Mapping[str, Any]]) -> NftSets:
        out = cls()
        for i in items:
            s = i.get("set")
            if isinstance(s, dict):
                out.by_key[(str(s.get("family")), str(s.get("table")), str(s.get("name")))] = list(s.get("elem", []))
        return out


def _elem_values(right: Any, sets: NftSets, where: tuple[str, str]) -> list[Any] | None:
    if isinstance(right, str) and right.startswith("@"):
        got = sets.by_key.get((where[0], where[1], right[1:]))
        return None if got is None else got
    if isinstance(right, dict) and "set" in right:
        return list(right["set"])
    if isinstance(right, list):
        return list(right)
    return [right]


def _unwrap(v: Any) -> Any:
    if isinstance(v, dict) and "elem" in v and isinstance(v["elem"], dict):
        return v["elem"].get("val")
    return v


def _to_nets(vals: Iterable[Any]) -> tuple[Network, ...] | None:
    out: list[Network] = []
    for v in map(_unwrap, vals):
        try:
            if isinstance(v, dict) and "prefix" in v:
                out.append(ipaddress.ip_network(f"{v['prefix']['addr']}/{v['prefix']['len']}", strict=False))
            elif isinstance(v, dict) and "range" in v:
                lo, hi = (ipaddress.ip_address(x) for x in v["range"])
                out += list(ipaddress.summarize_address_range(lo, hi))  # type: ignore[arg-type,unused-ignore]
            elif isinstance(v, str):
                out.append(ipaddress.ip_network(v, strict=False))
            else:
                return None
        except (ValueError, TypeError, KeyError):
            return None
    return tuple(out)


def _to_ports(vals: Iterable[Any]) -> tuple[PortRange, ...] | None:
    out: list[PortRange] = []
    for v in map(_unwrap, vals):
        if isinstance(v, int) and 0 < v < 65536:
            out.append(PortRange(v, v))
        elif isinstance(v, dict) and "range" in v and all(isinstance(x, int) for x in v["range"]):
            out.append(PortRange(int(v["range"][0]), int(v["range"][1])))
        else:
            return None
    return tuple(out)


def _ct_values(right: Any) -> list[str]:
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    vals = right if isinstance(right, list) else [right]
    return [str(v) for v in vals]


def nft_match(rule: Mapping[str, Any], sets: NftSets | None = None) -> Match:
    """The conditions of one `nft -j` rule."""
    sets = sets or NftSets()
    where = (str(rule.get("family")), str(rule.get("table")))
    f: dict[str, Any] = {}
    unknown: list[str] = []
    for e in rule.get("expr", []):
        if not isinstance(e, dict):
            continue
        if "xt" in e:
            unknown.append("an iptables-nft compat match")
            continue
        m = e.get("match")
        if not isinstance(m, dict):
            continue
        op, left, right = m.get("op", "=="), m.get("left"), m.get("right")
        if not isinstance(left, dict):
            unknown.append("a match ctguard does not read")
            continue
        if isinstance(left.get("ct"), dict) and left["ct"].get("key") == "state":
            vals = _ct_values(right)
            has = "untracked" in vals
            if op == "!=":
                has = not has
            f["ct"] = "untracked" if has else "never"
            continue
        meta = left.get("meta")
        if isinstance(meta, dict) and meta.get("key") in ("iif", "iifname", "oif", "oifname"):
            if op in ("==", "in") and _ct_values(right) == ["lo"]:
                f["lo_only"] = True
            else:
                unknown.append(f"{meta['key']} {right}")
            continue
        if isinstance(meta, dict) and meta.get("key") in ("l4proto", "nfproto"):
            vals = _ct_values(right)
            if meta["key"] == "l4proto" and op in ("==", "in") and "tcp" not in vals and "6" not in vals:
                f["not_tcp"] = True
            elif op not in ("==", "in"):
                unknown.append(f"meta {meta['key']} {op} {right}")
            continue
        pl = left.get("payload")
        if isinstance(pl, dict):
            proto, fld = pl.get("protocol"), pl.get("field")
            if op not in ("==", "in"):
                unknown.append(f"{proto} {fld} {op} {right}")
                continue
            if proto in ("ip", "ip6") and fld == "protocol" or proto == "ip6" and fld == "nexthdr":
                if "tcp" not in _ct_values(right) and "6" not in _ct_values(right):
                    f["not_tcp"] = True
                continue
            conv = _to_nets if proto in ("ip", "ip6") and fld in ("saddr", "daddr") else \
                _to_ports if proto in ("tcp", "th") and fld in ("sport", "dport") else None
            if conv is not None:
                elems = _elem_values(right, sets, where)
                got = conv(elems) if elems is not None else None
                if got is None:
                    unknown.append(f"{proto} {fld} {right}")
                else:
                    f[str(fld)] = got
                continue
            if proto in ("udp", "sctp", "udplite", "icmp", "icmpv6", "dccp"):
                f["not_tcp"] = True
                continue
            unknown.append(f"{proto} {fld}")
            continue
        unknown.append("a match ctguard does not read")
    return Match(unknown=tuple(unknown), **f)


# -- iptables-save ------------------------------------------------------------------------------------------

def _ipt_ports(text: str) -> tuple[PortRange, ...] | None:
    """`6800:7568`, `3300,6789,6800:7568`, `:1024`, `1024:` (iptables-extensions(8), tcp and multiport)."""
    out: list[PortRange] = []
    for p in text.split(","):
        lo, colon, hi = p.partition(":")
        try:
            a = int(lo) if lo else 1
            b = int(hi) if hi else (65535 if colon else a)
            out.append(PortRange(a, b))
        except (ValueError, BadInput):
            return None
    return tuple(out)


def ipt_match(tokens: Sequence[str]) -> Match:
    """The conditions of one `-A CHAIN ... -j TARGET` line (already split, without -A CHAIN and the target)."""
    f: dict[str, Any] = {}
    unknown: list[str] = []
    i = 0
    modules_ok = {"tcp", "multiport", "conntrack", "state", "comment"}
    while i < len(tokens):
        t = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if t == "!":
            unknown.append("! " + nxt)
            i += 2
            continue
        if t in ("-s", "--source", "-d", "--destination"):
            try:
                nets = tuple(ipaddress.ip_network(x, strict=False) for x in nxt.split(","))
                f["saddr" if t.startswith(("-s", "--s")) else "daddr"] = nets
            except ValueError:
                unknown.append(f"{t} {nxt}")
            i += 2
        elif t in ("-p", "--protocol"):
            if nxt not in ("tcp", "6"):
                f["not_tcp"] = True
            i += 2
        elif t in ("-i", "--in-interface", "-o", "--out-interface"):
            if nxt == "lo":
                f["lo_only"] = True
            else:
                unknown.append(f"{t} {nxt}")
            i += 2
        elif t == "-m":
            if nxt not in modules_ok:
                unknown.append(f"-m {nxt}")
            i += 2
        elif t in ("--dport", "--destination-port", "--dports", "--destination-ports",
                   "--sport", "--source-port", "--sports", "--source-ports", "--ports"):
            ports = _ipt_ports(nxt)
            keys = ["dport", "sport"] if t == "--ports" else (["sport"] if "s" == t.lstrip("-")[0] else ["dport"])
            if ports is None:
                unknown.append(f"{t} {nxt}")
            elif t == "--ports":
                unknown.append(f"--ports {nxt}")  # either port matches: not the same as both
            else:
                f[keys[0]] = ports
            i += 2
        elif t in ("--ctstate", "--state"):
            f["ct"] = "untracked" if "UNTRACKED" in nxt.split(",") else "never"
            i += 2
        elif t == "--comment":
            i += 2
        else:
            unknown.append(t)
            i += 1
    return Match(unknown=tuple(unknown), **f)
