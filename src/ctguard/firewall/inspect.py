"""Read the firewall of a namespace and judge it: who manages it, would it drop untracked Ceph packets,
is `table inet ctguard` ours.

Nothing here changes the host. The judgement is deliberately simple and says so when it cannot tell: a chain
at the input or output hook that drops (policy drop, or an unconditional drop/reject rule) drops untracked
packets unless a rule that accepts `ct state untracked` (with no other condition) comes before that drop.
Rules with more conditions are reported for review instead of being guessed at.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctguard.errors import CannotRead, CommandFailed
from ctguard.firewall import coverage as cov
from ctguard.firewall import iptrules, nftrules
from ctguard.firewall.spec import NotrackSpec
from ctguard.kernel import netns as _netns
from ctguard.kernel.procfs import net_path
from ctguard.runner import Completed, Runner, run

TIMEOUT = 20.0
IPT_TABLE_NAMES = {"filter", "raw", "mangle", "nat", "security"}
FILTER_HOOKS = ("input", "output")


@dataclass(frozen=True)
class ChainVerdict:
    where: str     # "nft inet fw input", "iptables-legacy filter INPUT (IPv4)"
    hook: str      # input | output
    verdict: str   # passes | accepts-untracked | drops-untracked | review
    detail: str
    fix: str | None = None  # what the operator must add, verbatim


@dataclass
class Inspection:
    managers: list[str] = field(default_factory=list)
    chains: list[ChainVerdict] = field(default_factory=list)
    own_table: str = "absent"            # absent | ours | foreign
    own_table_text: str | None = None    # `nft list table inet ctguard`, when present
    ipt_state: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)  # "nft4" -> (jumps, chains)
    ipt_save: dict[str, str] = field(default_factory=dict)  # "legacy4" -> iptables-save text
    other_notrack: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    @property
    def needs_operator(self) -> list[ChainVerdict]:
        return [c for c in self.chains if c.verdict in ("drops-untracked", "review")]

    def to_json(self) -> dict[str, Any]:
        return {
            "managers": self.managers,
            "own_table": self.own_table,
            "chains": [c.__dict__ for c in self.chains],
            "other_notrack": self.other_notrack,
            "warnings": self.warnings,
            "refusals": self.refusals,
        }


def ns_run(ns: _netns.Netns | None, argv: Sequence[str], runner: Runner = run, input: str | None = None,
           timeout: float = TIMEOUT) -> Completed:
    return runner([*_netns.exec_argv(ns), *argv], timeout=timeout, input=input)


def nft_json(ns: _netns.Netns | None, runner: Runner = run) -> list[dict[str, Any]]:
    done = ns_run(ns, ["nft", "-j", "list", "ruleset"], runner)
    if not done.ok:
        raise CommandFailed(f"nft -j list ruleset: {done.first_error_line()}")
    try:
        doc = json.loads(done.stdout or '{"nftables": []}')
        items: list[dict[str, Any]] = doc["nftables"]
    except (ValueError, KeyError, TypeError) as e:
        raise CannotRead(f"nft -j list ruleset: unexpected output ({e})") from e
    return items


def nft_text(ns: _netns.Netns | None, runner: Runner = run, stateless: bool = False) -> str:
    argv = ["nft", *(["-s"] if stateless else []), "list", "ruleset"]
    done = ns_run(ns, argv, runner)
    if not done.ok:
        raise CommandFailed(f"nft list ruleset: {done.first_error_line()}")
    return done.stdout


def own_table(ns: _netns.Netns | None, runner: Runner = run) -> tuple[str, str | None]:
    """("absent" | "ours" | "foreign", listing). Ours = carries TABLE_COMMENT."""
    done = ns_run(ns, ["nft", "list", "table", nftrules.TABLE_FAMILY, nftrules.TABLE_NAME], runner)
    if not done.ok:
        return "absent", None
    marker = f'comment "{nftrules.TABLE_COMMENT}"'
    head = done.stdout.splitlines()[1:2]
    return ("ours" if head and head[0].strip() == marker else "foreign"), done.stdout


def _is_untracked_match(e: dict[str, Any]) -> bool:
    m = e.get("match")
    if not isinstance(m, dict):
        return False
    left = m.get("left")
    if not (isinstance(left, dict) and isinstance(left.get("ct"), dict) and left["ct"].get("key") == "state"):
        return False
    right = m.get("right")
    vals = right if isinstance(right, list) else [right]
    if isinstance(right, dict) and "set" in right:
        vals = right["set"]
    return m.get("op") in ("in", "==") and "untracked" in vals


def _vmap_untracked(rule: dict[str, Any]) -> str | None:
    """`ct state vmap { ..., untracked : accept }`: the verdict it maps untracked packets to."""
    for e in rule.get("expr", []):
        vm = e.get("vmap") if isinstance(e, dict) else None
        if not (isinstance(vm, dict) and isinstance(vm.get("key"), dict)
                and isinstance(vm["key"].get("ct"), dict) and vm["key"]["ct"].get("key") == "state"):
            continue
        data = vm.get("data")
        pairs = data.get("set", []) if isinstance(data, dict) else []
        for pair in pairs:
            if isinstance(pair, list) and len(pair) == 2 and pair[0] == "untracked" and isinstance(pair[1], dict):
                return next(iter(pair[1]), None)
    return None


def _verdict(rule: dict[str, Any]) -> str | None:
    for e in rule.get("expr", []):
        for k in ("accept", "drop", "reject", "jump", "goto", "return", "queue"):
            if k in e:
                return k
    return None


def _has_conditions(rule: dict[str, Any], ignore_untracked: bool = False) -> bool:
    for e in rule.get("expr", []):
        if "match" in e and not (ignore_untracked and _is_untracked_match(e)):
            return True
    return False


def judge_nft_chain(where: str, hook: str, policy: str, rules: list[dict[str, Any]],
                    cells: list[cov.Cell] | None = None, sets: cov.NftSets | None = None) -> ChainVerdict:
    """One base chain: would it drop an untracked Ceph packet? With `cells` (what our notrack rules untrack at
    this hook), rules that accept Ceph's ports statelessly count too (coverage.py); without, only a
    `ct state untracked` accept does."""
    walk = cov.Walk(hook, list(cells)) if cells is not None else None
    if walk is not None and walk.done:
        return ChainVerdict(where, hook, "passes", "no untracked Ceph packet of this IP version reaches it")
    review: list[str] = walk.review if walk else []
    for i, rule in enumerate(rules, 1):
        mapped = _vmap_untracked(rule)
        if mapped in ("accept", "drop", "reject"):
            if _has_conditions(rule):
                review.append(f"rule {i} maps untracked to {mapped} only under further conditions")
            elif mapped == "accept":
                note = f"; earlier: {'; '.join(review)}" if review else ""
                return ChainVerdict(where, hook, "accepts-untracked", f"rule {i} maps ct state untracked to accept{note}")
            else:
                return _drops(where, hook, f"rule {i} maps ct state untracked to {mapped}", walk or review)
        verdict = _verdict(rule)
        if verdict == "accept" and any(_is_untracked_match(e) for e in rule.get("expr", [])):
            if _has_conditions(rule, ignore_untracked=True):
                if walk is None:
                    review.append(f"rule {i} accepts untracked packets only under further conditions")
                    continue
            else:
                note = f"; earlier: {'; '.join(review)}" if review else ""
                return ChainVerdict(where, hook, "accepts-untracked", f"rule {i} accepts ct state untracked{note}")
        if walk is not None and verdict in ("accept", "drop", "reject"):
            m = cov.nft_match(rule, sets)
            hit = walk.step(i, m, verdict == "accept")
            if walk.done:
                return ChainVerdict(where, hook, "accepts-untracked", walk.accepted())
            if hit:
                return _drops(where, hook, f"rule {i} drops {cov.summary(hit)}", walk, hit)
            if verdict == "accept" or m.conditional:
                continue
        if verdict in ("drop", "reject") and not _has_conditions(rule):
            return _drops(where, hook, f"rule {i} drops everything not accepted before it", walk or review)
        if verdict in ("jump", "goto"):
            review.append(f"rule {i} {verdict}s to another chain (not followed)")
    if policy == "drop":
        return _drops(where, hook, "policy drop", walk or review)
    return ChainVerdict(where, hook, "passes", "policy accept, no unconditional drop")


def _notes(how: cov.Walk | list[str], hit: list[cov.Cell] | None) -> tuple[str, list[str], list[str]]:
    """(what is dropped, notes, review notes) from a walk (spec known) or a plain review list."""
    if isinstance(how, list):
        return "untracked Ceph packets are dropped", list(how), list(how)
    left = hit if hit is not None else how.remaining
    return f"dropped there: {cov.summary(left)} ({cov.consequence(left)})", how.review + how.took, how.review


def _drops(where: str, hook: str, why: str, how: cov.Walk | list[str], hit: list[cov.Cell] | None = None
           ) -> ChainVerdict:
    fam, table, chain = where.split(" ")[1:4]
    fix = f"nft insert rule {fam} {table} {chain} {nftrules.OPERATOR_RULE}"
    what, notes, review = _notes(how, hit)
    if review:
        return ChainVerdict(where, hook, "review", f"{why}; {'; '.join(notes)}", fix)
    extra = f"; {'; '.join(notes)}" if notes else ""
    return ChainVerdict(where, hook, "drops-untracked",
                        f"{why}, and no `{nftrules.OPERATOR_RULE}` before it: {what}{extra}", fix)


def looks_iptables_nft(table: dict[str, Any], chains: list[dict[str, Any]]) -> bool:
    if table.get("family") not in ("ip", "ip6") or table.get("name") not in IPT_TABLE_NAMES:
        return False
    names = {c.get("name") for c in chains if c.get("table") == table.get("name")
             and c.get("family") == table.get("family")}
    return any(n in names for n in ("INPUT", "OUTPUT", "PREROUTING", "FORWARD", "POSTROUTING")) or not names


def analyse_nft(items: list[dict[str, Any]], insp: Inspection, versions: set[int] | None = None,
                spec: NotrackSpec | None = None) -> bool:
    """Fill `insp` from `nft -j list ruleset`; returns whether iptables-nft tables are present. Chains of
    family ip/ip6 are judged only when the exemption has networks of that IP version (`versions`). With the
    exemption's `spec`, stateless accepts of what it untracks count (coverage.py)."""
    sets = cov.NftSets.of(items)
    fam_ok = {"inet": True, "ip": versions is None or 4 in versions, "ip6": versions is None or 6 in versions}
    tables = [i["table"] for i in items if "table" in i]
    chains = [i["chain"] for i in items if "chain" in i]
    rules = [i["rule"] for i in items if "rule" in i]
    ipt_nft = False
    native = False
    for t in tables:
        fam, name = t.get("family"), t.get("name")
        if fam == nftrules.TABLE_FAMILY and name == nftrules.TABLE_NAME:
            # nft 1.0.6 leaves table comments out of its JSON: ownership is decided from the text listing
            insp.own_table = "present"
            continue
        if looks_iptables_nft(t, chains):
            ipt_nft = True
            continue
        native = True
        if name == "firewalld":
            insp.warnings.append(f"table {fam} firewalld present: firewalld manages this firewall")
    if native:
        insp.managers.append("nftables")
    if ipt_nft:
        insp.managers.append("iptables-nft")
    ipt_tables = {(t.get("family"), t.get("name")) for t in tables if looks_iptables_nft(t, chains)}
    for c in chains:
        key = (c.get("family"), c.get("table"))
        if key == (nftrules.TABLE_FAMILY, nftrules.TABLE_NAME) or key in ipt_tables:
            continue
        if any(_is_notrack(r) for r in rules if (r.get("family"), r.get("table"), r.get("chain"))
               == (c.get("family"), c.get("table"), c.get("name"))):
            insp.other_notrack.append(f"nft {c.get('family')} {c.get('table')} {c.get('name')}")
        if c.get("hook") not in FILTER_HOOKS or c.get("type", "filter") != "filter":
            continue
        if not fam_ok.get(str(c.get("family")), False):
            continue
        mine = [r for r in rules if (r.get("family"), r.get("table"), r.get("chain"))
                == (c.get("family"), c.get("table"), c.get("name"))]
        where = f"nft {c.get('family')} {c.get('table')} {c.get('name')}"
        hook = str(c.get("hook"))
        fam_versions = {"inet": (4, 6), "ip": (4,), "ip6": (6,)}[str(c.get("family"))]
        cells = cov.cells(spec, hook, fam_versions) if spec is not None else None
        insp.chains.append(judge_nft_chain(where, hook, str(c.get("policy", "accept")), mine, cells, sets))
    return ipt_nft


def _is_notrack(rule: dict[str, Any]) -> bool:
    return any("notrack" in e for e in rule.get("expr", []))


def judge_iptables(label: str, save_text: str, ours_first: bool,
                   spec: NotrackSpec | None = None) -> list[ChainVerdict]:
    """INPUT/OUTPUT of the filter table from `iptables-save` text. `ours_first`: ctguard's iptables backend
    is (or will be) in place, whose jump sits at the top of INPUT/OUTPUT. With `spec`, rules that accept what
    the exemption untracks statelessly (`-s NET -p tcp -m multiport --dports ...`) count (coverage.py)."""
    out: list[ChainVerdict] = []
    table = ""
    policies: dict[str, str] = {}
    rules: dict[str, list[str]] = {"INPUT": [], "OUTPUT": []}
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table == "filter" and line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            policies[name] = rest.split(" ")[0]
        elif table == "filter" and line.startswith("-A "):
            toks = line.split()
            if toks[1] in rules:
                rules[toks[1]].append(line)
    version = 6 if "IPv6" in label else 4
    for chain, hook in (("INPUT", "input"), ("OUTPUT", "output")):
        if chain not in policies:
            continue
        where = f"{label} filter {chain}"
        cmd = label.split(" ")[0].replace("iptables", "ip6tables") if "IPv6" in label else label.split(" ")[0]
        fix = f"{cmd} -I {chain} 1 -m conntrack --ctstate UNTRACKED -j ACCEPT"
        walk = cov.Walk(hook, cov.cells(spec, hook, (version,))) if spec is not None else None
        verdict: ChainVerdict | None = None
        if walk is not None and walk.done:
            out.append(ChainVerdict(where, hook, "passes", "no untracked Ceph packet of this IP version reaches it"))
            continue
        for i, line in enumerate(rules[chain], 1):
            toks = line.split()
            target = toks[toks.index("-j") + 1] if "-j" in toks else ""
            if target in iptrules.FILTER_CHAINS.values() and iptrules.COMMENT in line:
                verdict = ChainVerdict(where, hook, "accepts-untracked", f"rule {i} jumps to ctguard's {target}")
                break
            if target == "ACCEPT" and "UNTRACKED" in line and ("--ctstate" in line or "--state" in line):
                conds = [t for t in toks if t.startswith("-") and t not in
                         ("-A", "-j", "-m", "--ctstate", "--state")]
                if not conds:
                    verdict = ChainVerdict(where, hook, "accepts-untracked", f"rule {i} accepts UNTRACKED")
                    break
                if walk is None:
                    verdict = ChainVerdict(where, hook, "review", f"rule {i} accepts UNTRACKED under conditions",
                                           fix)
                    break
            if walk is not None and target in ("ACCEPT", "DROP", "REJECT"):
                m = _ipt_rule_match(line)
                hit = walk.step(i, m, target == "ACCEPT")
                if walk.done:
                    verdict = ChainVerdict(where, hook, "accepts-untracked", walk.accepted())
                    break
                if hit:
                    verdict = _ipt_drop(where, hook, f"rule {i} drops {cov.summary(hit)}", fix, ours_first, walk, hit)
                    break
                if target == "ACCEPT" or m.conditional:
                    continue
            if target in ("DROP", "REJECT") and _ipt_unconditional(line):
                verdict = _ipt_drop(where, hook, f"rule {i} drops everything", fix, ours_first, walk)
                break
        if verdict is None:
            if policies[chain] == "DROP":
                verdict = _ipt_drop(where, hook, "policy DROP", fix, ours_first, walk)
            else:
                verdict = ChainVerdict(where, hook, "passes", "policy ACCEPT, no unconditional DROP")
        out.append(verdict)
    return out


def _ipt_rule_match(line: str) -> cov.Match:
    try:
        toks = shlex.split(line)
    except ValueError:
        return cov.Match(unknown=("an unparsable rule",))
    end = toks.index("-j") if "-j" in toks else len(toks)
    return cov.ipt_match(toks[2:end])


def _ipt_unconditional(line: str) -> bool:
    """`-A CHAIN [-m comment --comment X] -j DROP|REJECT [--reject-with ...]`: no condition at all."""
    try:
        toks = shlex.split(line)
    except ValueError:
        return False
    toks = toks[2:toks.index("-j")] if "-j" in toks else toks[2:]
    if toks[:3] == ["-m", "comment", "--comment"]:
        toks = toks[4:]
    return not toks


def _ipt_drop(where: str, hook: str, why: str, fix: str, ours_first: bool, walk: cov.Walk | None = None,
              hit: list[cov.Cell] | None = None) -> ChainVerdict:
    if ours_first:
        return ChainVerdict(where, hook, "accepts-untracked", f"{why}; ctguard's chain (jumped to first) "
                            "accepts the untracked Ceph packets")
    what, notes, review = _notes(walk if walk is not None else [], hit)
    extra = "".join(f"; {n}" for n in notes)
    if review:
        return ChainVerdict(where, hook, "review", f"{why}{extra}", fix)
    return ChainVerdict(where, hook, "drops-untracked", f"{why}, and no UNTRACKED accept before it: {what}{extra}",
                        fix)


def _legacy_in_use(ns: _netns.Netns | None, version: int) -> bool:
    name = "ip_tables_names" if version == 4 else "ip6_tables_names"
    try:
        with _netns.entered(ns):
            with open(net_path("/proc", name), encoding="ascii") as f:
                return bool(f.read().strip())
    except FileNotFoundError:
        return False


def _firewalld_in(ns: _netns.Netns | None, proc: str = "/proc") -> bool:
    """A firewalld process whose network namespace is the target one."""
    try:
        target = _netns.inode(ns or _netns.HOST)
    except CannotRead:
        return False
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            with open(os.path.join(proc, pid, "comm"), encoding="ascii", errors="replace") as f:
                if f.read().strip() != "firewalld":
                    continue
            if os.stat(os.path.join(proc, pid, "ns", "net")).st_ino == target:
                return True
        except OSError:
            continue
    return False


def _nftables_conf_flushes(paths: Sequence[str] = ("/etc/nftables.conf", "/etc/sysconfig/nftables.conf")) -> str | None:
    for p in paths:
        try:
            with open(p, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        if "flush ruleset" in text and "ctguard" not in text:
            return p
    return None


def inspect(
    ns: _netns.Netns | None,
    backend: str,
    runner: Runner = run,
    firewalld: Callable[[_netns.Netns | None], bool] | None = None,
    legacy_in_use: Callable[[_netns.Netns | None, int], bool] | None = None,
    versions: set[int] | None = None,
    spec: NotrackSpec | None = None,
) -> Inspection:
    """Everything `check` and `apply` need to know about the target's firewall."""
    firewalld = firewalld or _firewalld_in
    legacy_in_use = legacy_in_use or _legacy_in_use
    insp = Inspection()
    items = nft_json(ns, runner)
    ipt_nft = analyse_nft(items, insp, versions, spec)
    if insp.own_table != "absent":
        insp.own_table, insp.own_table_text = own_table(ns, runner)
    if insp.own_table == "foreign":
        insp.refusals.append(f"a table {nftrules.TABLE_FAMILY} {nftrules.TABLE_NAME} exists that ctguard did not "
                             "create (no ctguard comment): rename it or remove it yourself")
    ours_first = backend.startswith("iptables")
    variants: list[tuple[str, int]] = []
    if ipt_nft or backend == "iptables-nft":
        variants += [("nft", 4), ("nft", 6)]
    for v in (4, 6):
        if backend == "iptables-legacy" or legacy_in_use(ns, v):
            variants.append(("legacy", v))
    seen_legacy = False
    for kind, v in variants:
        tool = ("iptables" if v == 4 else "ip6tables") + f"-{kind}-save"
        done = ns_run(ns, [tool], runner)
        if not done.ok:
            insp.warnings.append(f"{tool}: {done.first_error_line()}")
            continue
        insp.ipt_save[f"{kind}{v}"] = done.stdout
        jumps, chains, _ = iptrules.parse_save(done.stdout)
        insp.ipt_state[f"{kind}{v}"] = (jumps, chains)
        if kind == "legacy" and "*" in done.stdout:
            seen_legacy = True
        label = f"iptables-{kind} (IPv{v})"
        mine = ours_first and backend == f"iptables-{kind}"
        if versions is None or v in versions:
            insp.chains += judge_iptables(label, done.stdout, mine, spec)
    if seen_legacy:
        insp.managers.append("iptables-legacy")
    if firewalld(ns):
        # firewalld before 2.0 flushed tables it does not own on start/reload (firewalld/firewalld#742, #863,
        # fixed by PR #1082 in 2023, and only for the nftables backend without --direct rules), and its own
        # zones filter with their own chains: our rules would vanish or be shadowed. Refuse by default.
        insp.managers.append("firewalld")
        insp.refusals.append("firewalld manages this firewall: it rebuilds its rules on reload and filters with "
                             "its own zones; add the exemption through firewalld (or pass --force after "
                             "checking its zones accept `ct state untracked` for the Ceph ports)")
    if ns is None or ns.is_current:
        conf = _nftables_conf_flushes()
        if conf:
            insp.warnings.append(f"{conf} starts with `flush ruleset`: a reload of nftables.service deletes "
                                 "ctguard's table; include ctguard's file from it (`ctguard notrack show "
                                 "--format include`)")
    if backend == "iptables-nft" and "iptables-legacy" in insp.managers:
        insp.refusals.append("iptables-legacy rules are loaded here: use --backend iptables-legacy "
                             "(mixing the two backends makes rule order unpredictable)")
    if backend == "iptables-legacy" and "iptables-nft" in insp.managers:
        insp.refusals.append("iptables-nft rules are loaded here: use --backend iptables-nft")
    if insp.other_notrack:
        insp.warnings.append("other notrack rules exist (" + ", ".join(insp.other_notrack) + "): "
                             f"`{nftrules.OPERATOR_RULE}` accepts what they untrack too")
    return insp
