"""nftables text for `table inet ctguard`: raw-priority notrack chains for Ceph traffic, nothing else.

Why there is no accept chain in our table: in nftables every base chain on a hook gives its own verdict, and
`accept` only ends the chain it is in; the packet goes on to the next base chain at that hook, where a `drop`
(rule or policy) is final (nftables wiki, "Configuring chains": "drops are instant, there is no re-evaluation";
measured here on 6.18: an `accept` at priority -10 in our table did not stop `policy drop` at priority 0 in
the host's table). So an accept can only help inside the chain that drops, which is the operator's own: the
one line they need there is `ct state untracked accept` (see OPERATOR_RULE), which never changes when ports or
networks change, because all the scoping lives in our notrack rules: only what they untrack is untracked.

Both sport rules refuse a bare SYN: replies always carry ACK, so a host in the Ceph networks cannot open a
connection to some other local port (sshd, ...) by choosing a Ceph source port; such a SYN stays tracked and
meets the operator's stateful rules as usual.
"""

from __future__ import annotations

from ctguard import __version__
from ctguard.firewall.spec import Exemption, Network, NotrackSpec, PortRange

TABLE_FAMILY = "inet"
TABLE_NAME = "ctguard"
TABLE_COMMENT = "managed by ctguard notrack"
# The line the host's own filter chains need (input, and output if it drops), before any rule that drops.
OPERATOR_RULE = "ct state untracked accept"
NOT_BARE_SYN = "tcp flags & (syn | ack) != syn"


def _elements(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _ports(ranges: tuple[PortRange, ...]) -> str:
    return _elements([r.nft() for r in ranges])


def _nets(nets: tuple[Network, ...]) -> str:
    return _elements([str(n) for n in nets])


def _set(name: str, typ: str, elements: str) -> list[str]:
    return [f"\tset {name} {{", f"\t\ttype {typ}", "\t\tflags interval", f"\t\telements = {elements}", "\t}"]


def table_body(spec: NotrackSpec) -> str:
    """The `table inet ctguard { ... }` block."""
    lines = [f"table {TABLE_FAMILY} {TABLE_NAME} {{", f'\tcomment "{TABLE_COMMENT}"']
    lines += _set("ceph_ports", "inet_service", _ports(spec.ceph_ports))
    fams: list[tuple[str, str]] = []
    if spec.v4:
        lines += _set("nets4", "ipv4_addr", _nets(spec.v4))
        fams.append(("ip", "nets4"))
    if spec.v6:
        lines += _set("nets6", "ipv6_addr", _nets(spec.v6))
        fams.append(("ip6", "nets6"))
    extra_rules_in: list[str] = []
    extra_rules_out: list[str] = []
    for i, ex in enumerate(spec.extra):
        lines += _set(f"extra{i}_ports", "inet_service", _ports(ex.ports))
        for fam, typ, nets in _extra_families(ex):
            sname = f"extra{i}_{'nets4' if fam == 'ip' else 'nets6'}"
            lines += _set(sname, typ, _nets(nets))
            extra_rules_in.append(f"{fam} saddr @{sname} tcp dport @extra{i}_ports notrack "
                                  f'comment "extra port, from its clients"')
            extra_rules_out.append(f"{fam} daddr @{sname} tcp sport @extra{i}_ports {NOT_BARE_SYN} notrack "
                                   f'comment "extra port, replies"')
    pre: list[str] = []
    out: list[str] = []
    for fam, sname in fams:
        between = f"{fam} saddr @{sname} {fam} daddr @{sname}"
        pre.append(f'{between} tcp dport @ceph_ports notrack comment "to our Ceph daemons"')
        pre.append(f'{between} tcp sport @ceph_ports {NOT_BARE_SYN} notrack comment "replies from peer daemons"')
        out.append(f'{between} tcp sport @ceph_ports {NOT_BARE_SYN} notrack comment "replies of our daemons"')
        out.append(f'{between} tcp dport @ceph_ports notrack comment "to peer daemons"')
    for name, hook, rules in (("prerouting", "prerouting", pre + extra_rules_in),
                              ("output", "output", out + extra_rules_out)):
        # priority raw (-300): before conntrack (-200) sees the packet (nft(8), "Standard priority names")
        lines.append(f"\tchain {name} {{")
        lines.append(f"\t\ttype filter hook {hook} priority raw; policy accept;")
        lines += [f"\t\t{r}" for r in rules]
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _extra_families(ex: Exemption) -> list[tuple[str, str, tuple[Network, ...]]]:
    v4 = tuple(n for n in ex.sources if n.version == 4)
    v6 = tuple(n for n in ex.sources if n.version == 6)
    out: list[tuple[str, str, tuple[Network, ...]]] = []
    if v4:
        out.append(("ip", "ipv4_addr", v4))
    if v6:
        out.append(("ip6", "ipv6_addr", v6))
    return out


def load_script(spec: NotrackSpec) -> str:
    """What `nft -f` loads: replaces our table (and only it) in one transaction. The `table` + `delete table`
    pair is the usual idiom that works whether or not the table exists yet; all three statements commit
    together or not at all."""
    return (f"table {TABLE_FAMILY} {TABLE_NAME}\n"
            f"delete table {TABLE_FAMILY} {TABLE_NAME}\n" + table_body(spec))


def include_file(spec: NotrackSpec) -> str:
    """A file for configuration management: `include` it from /etc/nftables.conf after `flush ruleset`."""
    head = [
        f"# Generated by ctguard {__version__} (`ctguard notrack show --format include`). Do not edit by hand:",
        "# regenerate it. It takes Ceph's traffic between the Ceph networks out of conntrack:",
        f"#   ports {', '.join(r.nft() for r in spec.ceph_ports)}; networks {', '.join(map(str, spec.networks))}",
        "# Include it from /etc/nftables.conf (after any `flush ruleset`):",
        '#   include "/etc/nftables.d/ctguard-notrack.nft"',
        "# and make sure every filter chain of yours that drops (input, and output if it drops) has, before",
        "# its drops, the line",
        f"#   {OPERATOR_RULE}",
        "# because untracked packets never match `ct state established,related`.",
    ]
    return "\n".join(head) + "\n" + load_script(spec)


def remove_script(present: bool) -> str:
    return f"delete table {TABLE_FAMILY} {TABLE_NAME}\n" if present else ""
