"""apply / confirm / rollback / remove, journaled, like iptables-apply but never touching what is not ours.

apply:  inspect -> refuse on conflicts -> validate with the real tool in check mode (nothing loaded) ->
        snapshot (`nft list ruleset`, `iptables-save`) -> journal "applying" -> load in one transaction ->
        journal "pending" with a deadline -> start a detached watchdog (watchdog.py) that rolls back at the
        deadline unless the journal says "confirmed" by then.
rollback: undo exactly what apply added (our table / chains / jumps / the rules inserted with consent, and
        the previous version of our own table if apply replaced one), in one transaction, then compare the
        ruleset with the snapshot. We never restore by flushing the whole ruleset: that would reset other
        tables' counters, sets and dynamic state, and would clobber changes someone else made meanwhile.
remove: delete what ctguard added (found by its comment), journal or not.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ctguard
from ctguard.errors import BadInput, CommandFailed, CtguardError, Exit
from ctguard.firewall import inspect as insp_mod
from ctguard.firewall import iptrules, journal, nftrules
from ctguard.firewall.inspect import Inspection, ns_run
from ctguard.firewall.spec import NotrackSpec
from ctguard.kernel.netns import Netns
from ctguard.runner import Runner, run

BACKENDS = ("nft", "iptables-nft", "iptables-legacy")
INSERT_COMMENT = "ctguard notrack"
DEFAULT_TIMEOUT = 60.0


class Refused(CtguardError):
    """apply would conflict with how the firewall is managed; nothing was changed."""

    exit_code = Exit.CRIT


@dataclass(frozen=True)
class Plan:
    backend: str
    spec: NotrackSpec
    nft: str                     # the nft script (nft backend), else ""
    ipt: dict[int, str]          # IP version -> iptables-restore --noflush text (iptables backends)
    inserts: tuple[tuple[str, str, str], ...] = ()   # operator chains to insert OPERATOR_RULE into

    def text(self) -> str:
        if self.backend == "nft":
            return self.nft
        out = []
        for v, body in sorted(self.ipt.items()):
            tool = _ipt_tool(self.backend, v, "restore")
            out.append(f"# {tool} --noflush\n{body}")
        return "\n".join(out)


@dataclass
class Outcome:
    action: str
    status: str
    backend: str
    netns: str
    token: str | None = None
    deadline: float | None = None
    journal: str | None = None
    identical: bool | None = None          # ruleset byte-identical to the snapshot (rollback/remove)
    identical_stateless: bool | None = None
    diff: str | None = None
    inserted: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ipt_tool(backend: str, version: int, what: str) -> str:
    kind = backend.split("-", 1)[1]  # nft | legacy
    return ("iptables" if version == 4 else "ip6tables") + f"-{kind}-{what}"


def parse_chain_ref(text: str) -> tuple[str, str, str]:
    """`inet fw input` (or `inet/fw/input`) -> (family, table, chain)."""
    parts = re.split(r"[\s/]+", text.strip())
    if len(parts) != 3 or parts[0] not in ("inet", "ip", "ip6"):
        raise BadInput(f"bad chain {text!r}: expected 'FAMILY TABLE CHAIN', e.g. 'inet filter input'")
    for p in parts[1:]:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", p):
            raise BadInput(f"bad chain {text!r}: unexpected characters in {p!r}")
    if parts[1] == nftrules.TABLE_NAME and parts[0] == nftrules.TABLE_FAMILY:
        raise BadInput("--insert-accept names a chain of another table (ctguard's own needs none)")
    return parts[0], parts[1], parts[2]


def make_plan(spec: NotrackSpec, backend: str, inserts: Sequence[tuple[str, str, str]] = (),
              existing_jumps: dict[int, set[str]] | None = None) -> Plan:
    if backend not in BACKENDS:
        raise BadInput(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    if backend == "nft":
        script = nftrules.load_script(spec)
        for fam, table, chain in inserts:
            script += (f"insert rule {fam} {table} {chain} {nftrules.OPERATOR_RULE} "
                       f'comment "{INSERT_COMMENT}"\n')
        return Plan(backend, spec, script, {}, tuple(inserts))
    if inserts:
        raise BadInput("--insert-accept is for the nft backend; the iptables backend jumps to its own "
                       "accept chain from INPUT/OUTPUT")
    ej = existing_jumps or {}
    ipt = {v: iptrules.restore_text(spec, v, ej.get(v, set())) for v in iptrules.families(spec)}
    return Plan(backend, spec, "", ipt)


def validate(ns: Netns | None, plan: Plan, runner: Runner = run) -> None:
    """The real tool in check mode; raises BadInput with its first error line. Nothing is loaded."""
    if plan.backend == "nft":
        done = ns_run(ns, ["nft", "-c", "-f", "-"], runner, input=plan.nft)
        if not done.ok:
            raise BadInput(f"nft -c rejected the rules, nothing loaded: {_nft_error(done.stderr)}")
        return
    for v, body in plan.ipt.items():
        tool = _ipt_tool(plan.backend, v, "restore")
        done = ns_run(ns, [tool, "--test", "--noflush"], runner, input=body)
        if not done.ok:
            raise BadInput(f"{tool} --test rejected the rules, nothing loaded: {done.first_error_line()}")


def _nft_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errs = [ln for ln in lines if "Error:" in ln]
    return (errs[0] if errs else (lines[0] if lines else "unknown error"))[:300]


# -- snapshots -------------------------------------------------------------------------------------------

def snapshot(ns: Netns | None, backend: str, runner: Runner = run) -> dict[str, Any]:
    snap: dict[str, Any] = {"nft": insp_mod.nft_text(ns, runner),
                            "nft_stateless": insp_mod.nft_text(ns, runner, stateless=True)}
    if backend.startswith("iptables"):
        snap["ipt"] = {}
        for v in (4, 6):
            tool = _ipt_tool(backend, v, "save")
            done = ns_run(ns, [tool], runner)
            if not done.ok:
                raise CommandFailed(f"{tool}: {done.first_error_line()}")
            snap["ipt"][str(v)] = _strip_save(done.stdout)
        items = insp_mod.nft_json(ns, runner)
        snap["nft_tables"] = sorted([i["table"]["family"], i["table"]["name"]] for i in items if "table" in i)
        snap["nft_chains"] = sorted([i["chain"]["family"], i["chain"]["table"], i["chain"]["name"]]
                                    for i in items if "chain" in i)
    return snap


def _strip_save(text: str) -> str:
    """iptables-save without its timestamp comments and packet counters."""
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith(":"):
            line = re.sub(r"\[\d+:\d+\]$", "[0:0]", line)
        out.append(line)
    return "\n".join(out) + "\n" if out else ""


def compare(ns: Netns | None, snap: dict[str, Any], backend: str, runner: Runner = run) -> tuple[bool, bool, str | None]:
    now = insp_mod.nft_text(ns, runner)
    now_s = insp_mod.nft_text(ns, runner, stateless=True)
    identical = now == snap["nft"]
    stateless = now_s == snap["nft_stateless"]
    diff = None if identical else _short_diff(snap["nft"], now)
    if backend.startswith("iptables"):
        for v in (4, 6):
            done = ns_run(ns, [_ipt_tool(backend, v, "save")], runner)
            now_save = _strip_save(done.stdout)
            if backend == "iptables-legacy":
                # legacy xtables tables, once instantiated in a netns, stay (empty) until the netns goes:
                # compare the tables that existed before.
                now_save = _only_tables(now_save, _table_names(snap["ipt"][str(v)]))
            if now_save != snap["ipt"][str(v)]:
                identical = stateless = False
                diff = (diff or "") + f"\niptables-save (IPv{v}) differs:\n" + _short_diff(snap["ipt"][str(v)],
                                                                                          now_save)
    return identical, stateless, diff


def _table_names(save: str) -> set[str]:
    return {line[1:].strip() for line in save.splitlines() if line.startswith("*")}


def _only_tables(save: str, names: set[str]) -> str:
    out: list[str] = []
    keep = False
    for line in save.splitlines():
        if line.startswith("*"):
            keep = line[1:].strip() in names
        if keep:
            out.append(line)
    return "\n".join(out) + "\n" if out else ""


def _short_diff(a: str, b: str, limit: int = 20) -> str:
    import difflib

    lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), "before", "now", lineterm="", n=1))
    return "\n".join(lines[:limit] + (["..."] if len(lines) > limit else []))


# -- apply ------------------------------------------------------------------------------------------------

def apply(
    ns: Netns,
    spec: NotrackSpec,
    *,
    backend: str = "nft",
    timeout: float | None = DEFAULT_TIMEOUT,
    state_dir: str = journal.DEFAULT_STATE_DIR,
    inserts: Sequence[tuple[str, str, str]] = (),
    force: bool = False,
    runner: Runner = run,
    spawn: Callable[[str, str], int] | None = None,
    clock: Callable[[], float] = time.time,
) -> Outcome:
    """Load the exemption; with `timeout` (seconds) it rolls back by itself unless confirmed in time."""
    if timeout is not None and timeout <= 0:
        raise BadInput("rollback timeout must be > 0 seconds (or none, to apply confirmed)")
    jpath = journal.path(state_dir, ns)
    with journal.locked(jpath):
        _recover_locked(jpath, runner, clock)
        prev = journal.read(jpath)
        if prev and prev.get("status") in ("pending", "applying"):
            raise Refused(f"an apply on {ns.label} is still waiting for confirm (journal {jpath}): "
                          "`ctguard notrack confirm` or `remove` first")
        insp = insp_mod.inspect(ns, backend, runner, versions=set(iptrules.families(spec)), spec=spec)
        _check_inserts(insp, inserts, ns, runner)
        if insp.refusals and not force:
            raise Refused("refusing to apply: " + "; ".join(insp.refusals))
        jumps = {v: insp.ipt_state.get(f"{backend.split('-', 1)[-1]}{v}", (set(), set()))[0]
                 for v in (4, 6)} if backend.startswith("iptables") else None
        if inserts:
            have = {(r["family"], r["table"], r["chain"]) for r in
                    (i.get("rule") for i in insp_mod.nft_json(ns, runner)) if r and r.get("comment") == INSERT_COMMENT}
            inserts = [c for c in inserts if c not in have]  # already there from an earlier apply: keep it once
        plan = make_plan(spec, backend, inserts, jumps)
        validate(ns, plan, runner)
        snap = snapshot(ns, backend, runner)
        token = secrets.token_hex(8)
        doc: dict[str, Any] = {
            "status": "applying", "token": token, "backend": backend,
            "netns": {"name": ns.name, "pid": ns.pid}, "applied_at": clock(), "deadline": None,
            "watchdog_pid": None, "before": snap, "previous_table": insp.own_table_text,
            "inserted": [], "spec": spec.to_json(), "events": [_ev("applying", clock)],
            # the confirmed apply this one replaces (its snapshot is the true "before" for a later remove)
            "previous": _as_previous(_in_force(prev)),
        }
        journal.write(jpath, doc)
        try:
            inserted = _load(ns, plan, runner)
        except CtguardError:
            doc["status"] = "failed"
            doc["events"].append(_ev("failed", clock))
            journal.write(jpath, doc)
            raise
        doc["inserted"] = inserted
        if timeout is None:
            doc["status"] = "confirmed"
            doc["events"].append(_ev("confirmed", clock))
            journal.write(jpath, doc)
        else:
            doc["status"] = "pending"
            doc["deadline"] = clock() + timeout
            doc["events"].append(_ev("pending", clock))
            journal.write(jpath, doc)
            try:
                doc["watchdog_pid"] = (spawn or spawn_watchdog)(jpath, token)
            except OSError as e:
                # No watchdog, no safety net: undo now rather than leave an unguarded change.
                _rollback_locked(jpath, token, runner, clock, reason="watchdog failed to start")
                raise CommandFailed(f"could not start the rollback watchdog ({e}); rolled back") from e
            journal.write(jpath, doc)
        out = Outcome("apply", doc["status"], backend, ns.label, token, doc["deadline"], jpath,
                      inserted=inserted)
        out.notes = [f"{c.where}: {c.detail}; add: {c.fix}" for c in insp.needs_operator
                     if not _covered_by_insert(c.where, inserts)] + insp.warnings
        return out


def _ev(event: str, clock: Callable[[], float], **kw: Any) -> dict[str, Any]:
    return {"ts": clock(), "event": event, **kw}


def _covered_by_insert(where: str, inserts: Sequence[tuple[str, str, str]]) -> bool:
    return any(where == f"nft {f} {t} {c}" for f, t, c in inserts)


def _check_inserts(insp: Inspection, inserts: Sequence[tuple[str, str, str]], ns: Netns,
                   runner: Runner) -> None:
    if not inserts:
        return
    known = {c.where for c in insp.chains}
    for fam, table, chain in inserts:
        if f"nft {fam} {table} {chain}" not in known:
            raise BadInput(f"--insert-accept: no filter chain {fam} {table} {chain} at the input or output hook "
                           f"in {ns.label}")


def _load(ns: Netns, plan: Plan, runner: Runner) -> list[dict[str, Any]]:
    if plan.backend == "nft":
        # -e -a: echo what was added, with handles, so the inserted rules can be deleted exactly later.
        done = ns_run(ns, ["nft", "-e", "-a", "-f", "-"], runner, input=plan.nft)
        if not done.ok:
            raise CommandFailed(f"nft rejected the rules, nothing loaded: {_nft_error(done.stderr)}")
        inserted = []
        for line in done.stdout.splitlines():
            m = re.match(r"insert rule (\S+) (\S+) (\S+) .*# handle (\d+)", line.strip())
            if m and INSERT_COMMENT in line:
                inserted.append({"family": m[1], "table": m[2], "chain": m[3], "handle": int(m[4])})
        return inserted
    loaded: list[int] = []
    for v, body in sorted(plan.ipt.items()):
        tool = _ipt_tool(plan.backend, v, "restore")
        done = ns_run(ns, [tool, "--noflush"], runner, input=body)
        if not done.ok:
            # iptables-restore commits per family: take back the family already loaded, so nothing is
            # left half-applied.
            for w in loaded:
                _ipt_undo(ns, plan.backend, w, runner)
            raise CommandFailed(f"{tool} failed, nothing left loaded: {done.first_error_line()}")
        loaded.append(v)
    return [{"iptables": plan.backend, "family": v} for v in loaded]


def _ipt_undo(ns: Netns, backend: str, version: int, runner: Runner) -> None:
    done = ns_run(ns, [_ipt_tool(backend, version, "save")], runner)
    if not done.ok:
        raise CommandFailed(f"{_ipt_tool(backend, version, 'save')}: {done.first_error_line()}")
    jumps, chains, _ = iptrules.parse_save(done.stdout)
    text = iptrules.undo_text(jumps, chains)
    if text:
        r = ns_run(ns, [_ipt_tool(backend, version, "restore"), "--noflush"], runner, input=text)
        if not r.ok:
            raise CommandFailed(f"{_ipt_tool(backend, version, 'restore')}: {r.first_error_line()}")


def spawn_watchdog(jpath: str, token: str) -> int:
    """A detached `python -m ctguard.firewall.watchdog` in its own session: it outlives this process (and a
    closed terminal). Not through runner.run, which waits for its child by design; this one must not."""
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(ctguard.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(jpath + ".watchdog.log", "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
            [sys.executable, "-m", "ctguard.firewall.watchdog", jpath, token],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
            cwd="/", env=env,
        )
    return proc.pid


# -- confirm / rollback / remove ------------------------------------------------------------------------

def _ns_of(doc: dict[str, Any]) -> Netns:
    n = doc.get("netns") or {}
    return Netns(name=n.get("name"), pid=n.get("pid"))


def confirm(ns: Netns, state_dir: str = journal.DEFAULT_STATE_DIR, runner: Runner = run,
            clock: Callable[[], float] = time.time) -> Outcome:
    jpath = journal.path(state_dir, ns)
    with journal.locked(jpath):
        doc = journal.read(jpath)
        if not doc or doc.get("status") != "pending":
            status = doc.get("status") if doc else "nothing applied"
            raise CtguardError(f"nothing to confirm on {ns.label} (state: {status})", Exit.WARN)
        if clock() >= float(doc["deadline"]):
            out = _rollback_locked(jpath, str(doc["token"]), runner, clock, reason="confirm came too late")
            raise CtguardError(f"too late: the rollback deadline had passed; rolled back "
                               f"(ruleset identical: {out.identical})", Exit.CRIT)
        doc["status"] = "confirmed"
        doc["events"].append(_ev("confirmed", clock))
        journal.write(jpath, doc)
        return Outcome("confirm", "confirmed", str(doc["backend"]), ns.label, str(doc["token"]), None, jpath)


def rollback(jpath: str, token: str, runner: Runner = run, clock: Callable[[], float] = time.time,
             reason: str = "timer expired") -> Outcome | None:
    """The watchdog's entry: roll back if the journal is still pending under this token."""
    with journal.locked(jpath):
        doc = journal.read(jpath)
        if not doc or doc.get("status") != "pending" or doc.get("token") != token:
            return None
        return _rollback_locked(jpath, token, runner, clock, reason)


def _rollback_locked(jpath: str, token: str, runner: Runner, clock: Callable[[], float],
                     reason: str) -> Outcome:
    doc = journal.read(jpath)
    assert doc is not None and doc.get("token") == token
    ns = _ns_of(doc)
    backend = str(doc["backend"])
    doc["status"] = "rolling-back"
    doc["events"].append(_ev("rolling-back", clock, reason=reason))
    journal.write(jpath, doc)
    _undo(ns, backend, doc.get("inserted", []), doc.get("previous_table"), doc["before"], runner)
    ident, ident_s, diff = compare(ns, doc["before"], backend, runner)
    doc["status"] = "rolled-back"
    doc["events"].append(_ev("rolled-back", clock, identical=ident, identical_stateless=ident_s))
    doc["result"] = {"identical": ident, "identical_stateless": ident_s, "diff": diff}
    journal.write(jpath, doc)
    return Outcome("rollback", "rolled-back", backend, ns.label, token, None, jpath, ident, ident_s, diff,
                   notes=[reason])


def _undo(ns: Netns, backend: str, inserted: list[dict[str, Any]], previous_table: str | None,
          before: dict[str, Any], runner: Runner) -> None:
    if backend == "nft":
        script = _nft_remove_script(ns, runner, [(i["family"], i["table"], i["chain"], int(i["handle"]))
                                                 for i in inserted if "handle" in i])
        if previous_table:
            script += previous_table if previous_table.endswith("\n") else previous_table + "\n"
        if script:
            done = ns_run(ns, ["nft", "-f", "-"], runner, input=script)
            if not done.ok:
                raise CommandFailed(f"rollback failed, ruleset unchanged: {_nft_error(done.stderr)}")
        return
    for v in (4, 6):
        _ipt_undo(ns, backend, v, runner)
        earlier = iptrules.ours_from_save(before.get("ipt", {}).get(str(v), ""))
        if earlier:  # this apply had replaced a confirmed one: put that back
            tool = _ipt_tool(backend, v, "restore")
            done = ns_run(ns, [tool, "--noflush"], runner, input=earlier)
            if not done.ok:
                raise CommandFailed(f"{tool}: could not restore the earlier ctguard rules: {done.first_error_line()}")
    if backend == "iptables-nft":
        _drop_created_tables(ns, before, runner)


def _drop_created_tables(ns: Netns, before: dict[str, Any], runner: Runner) -> None:
    """iptables-nft creates `table ip raw`, base chains such as filter OUTPUT, etc. on first use. Those that
    apply created and that are empty again are deleted, so the ruleset is what it was."""
    had_tables = {(f, n) for f, n in before.get("nft_tables", [])}
    had_chains = {(f, t, c) for f, t, c in before.get("nft_chains", [])}
    items = insp_mod.nft_json(ns, runner)
    used = {(r["rule"]["family"], r["rule"]["table"], r["rule"]["chain"]) for r in items if "rule" in r}
    script = ""
    left: dict[tuple[str, str], int] = {}
    for c in [i["chain"] for i in items if "chain" in i]:
        key = (c["family"], c["table"], c["name"])
        if (c["family"] in ("ip", "ip6") and c["table"] in ("raw", "filter") and key not in had_chains
                and key not in used):
            script += f"delete chain {c['family']} {c['table']} {c['name']}\n"
        else:
            left[(c["family"], c["table"])] = left.get((c["family"], c["table"]), 0) + 1
    for t in [i["table"] for i in items if "table" in i]:
        key2 = (t["family"], t["name"])
        if t["family"] in ("ip", "ip6") and t["name"] in ("raw", "filter") and key2 not in had_tables \
                and not left.get(key2):
            script += f"delete table {t['family']} {t['name']}\n"
    if script:
        done = ns_run(ns, ["nft", "-f", "-"], runner, input=script)
        if not done.ok:
            raise CommandFailed(f"could not delete the empty iptables-nft chains apply created: "
                                f"{_nft_error(done.stderr)}")


def _nft_remove_script(ns: Netns, runner: Runner, handles: Sequence[tuple[str, str, str, int]] | None) -> str:
    """Delete our table (if present and ours) and inserted accept rules: with `handles` (a rollback) only
    those this apply inserted and that still exist, so a rule kept from an earlier confirmed apply stays;
    with None (remove) every rule carrying our comment, journal or not."""
    items = insp_mod.nft_json(ns, runner)
    script = ""
    live: set[tuple[str, str, str, int]] = set()
    for i in items:
        r = i.get("rule")
        if r and r.get("comment") == INSERT_COMMENT and r.get("table") != nftrules.TABLE_NAME:
            live.add((r["family"], r["table"], r["chain"], int(r["handle"])))
    doomed = live if handles is None else live & set(handles)
    for fam, tab, chain, handle in sorted(doomed):
        script += f"delete rule {fam} {tab} {chain} handle {handle}\n"
    owner, _ = insp_mod.own_table(ns, runner)
    if owner == "foreign":
        raise CtguardError(f"table {nftrules.TABLE_FAMILY} {nftrules.TABLE_NAME} in {ns.label} was not "
                           "created by ctguard: not touching it", Exit.CRIT)
    if owner == "ours":
        script += nftrules.remove_script(True)
    return script


def remove(ns: Netns, state_dir: str = journal.DEFAULT_STATE_DIR, backend: str | None = None,
           runner: Runner = run, clock: Callable[[], float] = time.time) -> Outcome:
    jpath = journal.path(state_dir, ns)
    with journal.locked(jpath):
        doc = journal.read(jpath)
        if doc and doc.get("status") in ("pending", "applying", "rolling-back"):
            out = _rollback_locked(jpath, str(doc["token"]), runner, clock, reason="removed before confirm")
            out.action = "remove"
            return out
        live = _in_force(doc)
        be = backend or (str(live["backend"]) if live else "nft")
        if be == "nft":
            script = _nft_remove_script(ns, runner, None)
            if script:
                done = ns_run(ns, ["nft", "-f", "-"], runner, input=script)
                if not done.ok:
                    raise CommandFailed(f"remove failed, ruleset unchanged: {_nft_error(done.stderr)}")
        else:
            for v in (4, 6):
                _ipt_undo(ns, be, v, runner)
            if be == "iptables-nft" and live:
                _drop_created_tables(ns, live["before"], runner)
        out = Outcome("remove", "removed", be, ns.label, None, None, jpath)
        if doc and live:
            # against the ruleset before the first of a chain of re-applies: remove takes them all away
            out.identical, out.identical_stateless, out.diff = compare(ns, _pristine_before(live), be, runner)
            doc["status"] = "removed"
            doc["events"].append(_ev("removed", clock, identical=out.identical))
            journal.write(jpath, doc)
        return out


def _pristine_before(rec: dict[str, Any]) -> dict[str, Any]:
    prev = rec.get("previous")
    before: dict[str, Any] = prev["before"] if isinstance(prev, dict) else rec["before"]
    return before


def _as_previous(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    if rec is None:
        return None
    out = {k: v for k, v in rec.items() if k != "previous"}
    out["before"] = _pristine_before(rec)
    return out


def _in_force(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The journal record of the apply whose rules are in place: this one when confirmed, or the confirmed
    apply that a rolled-back re-apply had replaced (and that the rollback put back)."""
    if not doc:
        return None
    if doc.get("status") == "confirmed":
        return doc
    prev = doc.get("previous")
    if doc.get("status") == "rolled-back" and isinstance(prev, dict) and prev.get("status") == "confirmed":
        return prev
    return None


def state(ns: Netns, state_dir: str = journal.DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    """The journal without its snapshot (for show/check output); creates nothing."""
    doc = journal.read(os.path.join(state_dir, "notrack", journal.key(ns) + ".json"))
    if doc is None:
        return None
    return {k: v for k, v in doc.items() if k not in ("before", "previous_table")}


def recover(ns: Netns, state_dir: str = journal.DEFAULT_STATE_DIR, runner: Runner = run,
            clock: Callable[[], float] = time.time) -> Outcome | None:
    """Roll back an apply whose deadline passed while no watchdog was alive (killed, host crash)."""
    jpath = os.path.join(state_dir, "notrack", journal.key(ns) + ".json")
    if not os.path.exists(jpath):
        return None
    with journal.locked(jpath):
        return _recover_locked(jpath, runner, clock)


def _recover_locked(jpath: str, runner: Runner, clock: Callable[[], float]) -> Outcome | None:
    doc = journal.read(jpath)
    if not doc:
        return None
    status = doc.get("status")
    if status == "applying" or status == "rolling-back":
        # crashed mid-way: the load is atomic, so either it happened or not; undo is safe either way
        return _rollback_locked(jpath, str(doc["token"]), runner, clock, reason=f"recovered from '{status}'")
    if status == "pending" and clock() >= float(doc["deadline"]) + 2.0 and not _alive(doc.get("watchdog_pid")):
        return _rollback_locked(jpath, str(doc["token"]), runner, clock, reason="watchdog gone; deadline passed")
    return None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"ctguard.firewall.watchdog" in f.read()
    except OSError:
        return False
