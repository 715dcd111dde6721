"""iptables-restore text (iptables-nft or iptables-legacy, IPv4 and IPv6) for the same exemption.

iptables has one `raw` and one `filter` table per family, shared by everyone, so ctguard keeps everything in
chains it owns (CTGUARD-PRE/-OUT in raw, CTGUARD-IN/-OUT in filter) and adds exactly one jump at the top of
each built-in chain; `remove` deletes those jumps and chains and nothing else. Unlike nftables, an ACCEPT in
our chain jumped to from INPUT *is* final for the filter table's INPUT, so the accepts live here.
Loaded with `iptables-restore --noflush`: one table section commits as a whole.
"""

from __future__ import annotations

from collections.abc import Iterable

from ctguard.firewall.spec import Network, NotrackSpec, PortRange

COMMENT = "ctguard notrack"
RAW_CHAINS = {"PREROUTING": "CTGUARD-PRE", "OUTPUT": "CTGUARD-OUT"}
FILTER_CHAINS = {"INPUT": "CTGUARD-IN", "OUTPUT": "CTGUARD-OUT"}
NOT_BARE_SYN = "-m tcp ! --tcp-flags SYN,ACK SYN"


def _multiport(ranges: tuple[PortRange, ...], direction: str) -> list[str]:
    """multiport takes at most 15 ports, a range counting as two (iptables-extensions(8))."""
    chunks: list[list[PortRange]] = [[]]
    used = 0
    for r in ranges:
        cost = 1 if r.lo == r.hi else 2
        if used + cost > 15:
            chunks.append([])
            used = 0
        chunks[-1].append(r)
        used += cost
    return [f"-m multiport --{direction} " + ",".join(r.ipt() for r in c) for c in chunks if c]


def jump_rule(builtin: str, chain: str) -> str:
    return f'-A {builtin} -m comment --comment "{COMMENT}" -j {chain}'


def _rules(spec: NotrackSpec, nets: tuple[Network, ...], extra: list[tuple[tuple[PortRange, ...],
           tuple[Network, ...]]]) -> dict[str, list[str]]:
    """Match parts (without chain and target), keyed by direction: 'in' (prerouting/input), 'out'."""
    r: dict[str, list[str]] = {"in": [], "out": []}
    for src in nets:
        for dst in nets:
            pair = f"-s {src} -d {dst} -p tcp"
            for mp in _multiport(spec.ceph_ports, "dports"):
                r["in"].append(f"{pair} {mp}")
                r["out"].append(f"{pair} {mp}")
            for mp in _multiport(spec.ceph_ports, "sports"):
                r["in"].append(f"{pair} {NOT_BARE_SYN} {mp}")
                r["out"].append(f"{pair} {NOT_BARE_SYN} {mp}")
    for ports, sources in extra:
        for src in sources:
            for mp in _multiport(ports, "dports"):
                r["in"].append(f"-s {src} -p tcp {mp}")
            for mp in _multiport(ports, "sports"):
                r["out"].append(f"-d {src} -p tcp {NOT_BARE_SYN} {mp}")
    return r


def _family_parts(spec: NotrackSpec, version: int) -> dict[str, list[str]]:
    nets = spec.v4 if version == 4 else spec.v6
    extra = []
    for ex in spec.extra:
        srcs = tuple(n for n in ex.sources if n.version == version)
        if srcs:
            extra.append((ex.ports, srcs))
    return _rules(spec, nets, extra)


def families(spec: NotrackSpec) -> list[int]:
    out = []
    if spec.v4 or any(n.version == 4 for ex in spec.extra for n in ex.sources):
        out.append(4)
    if spec.v6 or any(n.version == 6 for ex in spec.extra for n in ex.sources):
        out.append(6)
    return out


def restore_text(spec: NotrackSpec, version: int, existing_jumps: Iterable[str] = ()) -> str:
    """Input for `iptables-restore --noflush` (or ip6tables-). Declaring our chains flushes them, so a
    second apply replaces their rules; a jump already present (`existing_jumps`, as `BUILTIN:CHAIN` strings
    of the table `raw:`/`filter:`) is not added twice."""
    have = set(existing_jumps)
    parts = _family_parts(spec, version)
    lines: list[str] = []
    for table, chains, target in (("raw", RAW_CHAINS, "-j CT --notrack"),
                                  ("filter", FILTER_CHAINS, "-m conntrack --ctstate UNTRACKED -j ACCEPT")):
        lines.append(f"*{table}")
        lines += [f":{c} - [0:0]" for c in chains.values()]
        for builtin, chain in chains.items():
            if f"{table}:{builtin}:{chain}" not in have:
                lines.append(f'-I {builtin} 1 -m comment --comment "{COMMENT}" -j {chain}')
        for builtin, chain in chains.items():
            direction = "in" if builtin in ("PREROUTING", "INPUT") else "out"
            lines += [f"-A {chain} {m} {target}" for m in parts[direction]]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def undo_text(existing_jumps: Iterable[str], existing_chains: Iterable[str]) -> str:
    """Delete our jumps and chains (only those present, as `table:BUILTIN:CHAIN` / `table:CHAIN`)."""
    jumps = set(existing_jumps)
    chains = set(existing_chains)
    lines: list[str] = []
    for table, mapping in (("raw", RAW_CHAINS), ("filter", FILTER_CHAINS)):
        body: list[str] = []
        for builtin, chain in mapping.items():
            if f"{table}:{builtin}:{chain}" in jumps:
                body.append(f'-D {builtin} -m comment --comment "{COMMENT}" -j {chain}')
        for chain in dict.fromkeys(mapping.values()):
            if f"{table}:{chain}" in chains:
                body += [f"-F {chain}", f"-X {chain}"]
        if body:
            lines += [f"*{table}", *body, "COMMIT"]
    return "\n".join(lines) + "\n" if lines else ""


def parse_save(text: str) -> tuple[set[str], set[str], dict[str, dict[str, str]]]:
    """From `iptables-save` output: our jumps (`table:BUILTIN:CHAIN`), our chains (`table:CHAIN`), and
    the built-in chain policies per table."""
    jumps: set[str] = set()
    chains: set[str] = set()
    policies: dict[str, dict[str, str]] = {}
    table = ""
    ours = set(RAW_CHAINS.values()) | set(FILTER_CHAINS.values())
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            policies.setdefault(table, {})
        elif line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            pol = rest.split(" ")[0]
            if pol != "-":
                policies.setdefault(table, {})[name] = pol
            if name in ours:
                chains.add(f"{table}:{name}")
        elif line.startswith("-A "):
            toks = line.split()
            if "-j" in toks:
                target = toks[toks.index("-j") + 1]
                if target in ours and COMMENT in line:
                    jumps.add(f"{table}:{toks[1]}:{target}")
    return jumps, chains, policies


def ours_from_save(text: str) -> str:
    """Our chains, their rules and our jumps as they are in `iptables-save` text, as iptables-restore
    --noflush input: what a rollback puts back when the apply being undone had replaced an earlier one.
    Jumps go back to the top of their built-in chain, where apply puts them."""
    ours = set(RAW_CHAINS.values()) | set(FILTER_CHAINS.values())
    out: list[str] = []
    table = ""
    body: list[str] = []

    def close() -> None:
        if table and body:
            out.extend([f"*{table}", *body, "COMMIT"])

    for line in text.splitlines():
        if line.startswith("*"):
            close()
            table, body = line[1:].strip(), []
        elif line.startswith(":") and line[1:].split(" ")[0] in ours:
            body.insert(0, line.rsplit(" ", 1)[0] + " [0:0]")
        elif line.startswith("-A "):
            toks = line.split()
            target = toks[toks.index("-j") + 1] if "-j" in toks else ""
            if toks[1] in ours:
                body.append(line)
            elif target in ours and COMMENT in line:
                body.append(f"-I {toks[1]} 1 " + line.split(" ", 2)[2])
    close()
    return "\n".join(out) + "\n" if out else ""
