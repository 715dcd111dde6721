"""`ctguard restart`: roll OSD restarts gated on conntrack headroom and Ceph health (see docs/restart.md)."""

from __future__ import annotations

import contextlib
import importlib
import shlex
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import click

from ctguard.ceph.client import client_for
from ctguard.cli.common import handle_errors, json_option, print_json
from ctguard.errors import BadInput, Exit
from ctguard.kernel.netns import Netns
from ctguard.output import emit_event
from ctguard.restart.backends import make_backend
from ctguard.restart.engine import Engine, Options, Result
from ctguard.restart.gates import (
    CephMgrCommands,
    ExporterSource,
    GateSource,
    LocalKernelSource,
    MgrSource,
    PrometheusSource,
)
from ctguard.restart.journal import Journal, RunLock
from ctguard.restart.plan import Plan, build_plan, parse_osd_names

RESTART_EXIT_HELP = (
    "Exit codes: 0 every OSD restarted and PGs active+clean; 1 every OSD restarted but PGs not active+clean "
    "within --clean-timeout; 2 stopped safely (gate timeout, drops, an OSD not back, ceph failing, lock held) - "
    "the journal says where, `--resume` goes on; 3 bad input or cannot read; 130 interrupted (SIGINT/SIGTERM "
    "after finishing the step under way; `--resume` goes on)."
)


def _load_lab(prefix: str, base_dir: str | None) -> Any:
    try:
        cluster = importlib.import_module("ctguard.lab.cluster")  # the lab lands separately
    except ImportError as e:
        raise BadInput("this ctguard has no lab (ctguard.lab.cluster)") from e
    return cluster.Lab.load(prefix=prefix, base_dir=base_dir)


class _Human:
    """Rich progress for people: one line per event, a progress bar over the OSDs."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=False, highlight=False)
        self.progress = Progress(TextColumn("[bold]restart[/]"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.description}"), console=self.console,
                                 transient=False)
        self.task = self.progress.add_task("", total=total)

    def __enter__(self) -> _Human:
        self.progress.start()
        return self

    def __exit__(self, *a: object) -> None:
        self.progress.stop()

    def __call__(self, event: str, f: dict[str, Any]) -> None:
        p = self.progress
        r = f.get("reading") or {}
        rtxt = f"{r.get('entries')}/{r.get('limit')} entries, {r.get('free')} free, drops {r.get('drops')}" if r else ""
        if event == "plan":
            for h in f["hosts"]:
                done = [o for o in h["osds"] if o in f.get("done", [])]
                p.console.print(f"[bold]plan[/] {h['host']}: " + ", ".join(f"osd.{o}" for o in h["osds"])
                                + (f" (done: {', '.join(f'osd.{o}' for o in done)})" if done else ""))
            p.advance(self.task, len(f.get("done", [])))
        elif event == "gate":
            extra = ""
            if f["gate"] == "headroom":
                extra = f" batch {', '.join(f'osd.{o}' for o in f['batch'])}: need {f['need']}"
            elif f["gate"] == "ok_to_stop":
                extra = f" {', '.join(f'osd.{o}' for o in f['osds'])}"
            p.console.print(f"  [green]gate {f['gate']}[/] {f['host']}{extra} (waited {f['waited']} s) {rtxt}")
        elif event == "wait":
            p.update(self.task, description=f"waiting: {f.get('gate')} {f.get('reason', '')}"[:80])
            p.console.print(f"  [yellow]wait {f.get('gate')}[/] {f.get('reason', '')} {rtxt}")
        elif event in ("stop", "start", "up"):
            p.update(self.task, description=f"osd.{f['osd']} {event}")
            if event == "up":
                p.console.print(f"  osd.{f['osd']} up after {f['seconds']} s")
        elif event == "pgs":
            p.console.print(f"  PGs active after {f['seconds']} s")
            p.advance(self.task, len(f["osds"]))
        elif event == "burst":
            p.console.print(f"  burst {f['burst']} entries (peak {f['peak']}), factor now {f['burst_factor']}")
        elif event == "purge":
            p.console.print(f"  [cyan]purged[/] {f['deleted']} closing entries ({f['why']})")
        elif event == "drops":
            p.console.print(f"  [bold red]DROPS[/] {f['new']} packets dropped on {f['host']}: stopping")
        elif event == "noout":
            p.console.print(f"  noout: {f['action']} {f.get('reason', '')}")
        elif event == "ceph_error":
            p.console.print(f"  [yellow]ceph[/] {f['error']}")
        elif event == "done":
            p.console.print(f"[bold green]done[/] {f['reason']} in {f['seconds']} s; waited {f['waited']}")
        elif event == "abort":
            p.console.print(f"[bold red]stopped[/] {f['reason']} (run {f['run_id']}: `ctguard restart --resume`)")
        elif event == "interrupt":
            p.console.print("[yellow]signal received: finishing the current step, then stopping[/]")


def _json_emit(event: str, fields: dict[str, Any]) -> None:
    emit_event(event, fields)


def _render_dry_run(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console(highlight=False)
    c.print(f"[bold]dry run[/]: backend {doc['backend']}, burst factor {doc['burst_factor']}, noout {doc['noout']}")
    pgs = doc.get("pgs", {})
    c.print(f"PGs: {pgs.get('states', pgs.get('error'))}")
    for h in doc["hosts"]:
        r = h.get("reading", {})
        c.print(f"[bold]{h['host']}[/]: {r.get('entries')}/{r.get('limit')} entries, {r.get('free')} free, "
                f"drops {r.get('drops')} ({r.get('source', r.get('error'))}); reserve {h.get('reserve')}; "
                f"fits at once: {h.get('fits_at_once')}; ok-to-stop: {h.get('ok_to_stop')}")
        t = Table("OSD", "entries", "predicted burst", "restart with")
        for o in h["osds"]:
            t.add_row(f"osd.{o['osd']}", str(o.get("entries", "?")), str(o.get("predicted_burst", "?")),
                      o["restart"])
        c.print(t)


@click.command(help="Restart OSDs one batch at a time, each behind conntrack and Ceph gates.\n\n"
               "OSDS are osd.N names. Or --host HOST (repeatable), --local (this host's CRUSH host), "
               "--cluster (every host, one after another).\n\n" + RESTART_EXIT_HELP)
@click.argument("osds", nargs=-1)
@click.option("--host", "hosts", multiple=True, metavar="HOST", help="Every OSD of this CRUSH host (repeatable).")
@click.option("--local", is_flag=True, help="Every OSD of this machine's CRUSH host (short hostname).")
@click.option("--cluster", is_flag=True, help="Every OSD of every host, host after host.")
@click.option("--backend", type=click.Choice(["systemd", "cephadm", "cmd", "lab"]), default=None,
              help="How to restart an OSD [systemd; cmd with --restart-cmd; lab with --lab].")
@click.option("--restart-cmd", default=None, metavar="TEMPLATE",
              help="Command template with {id} and {host}, e.g. 'ssh {host} systemctl restart ceph-osd@{id}'.")
@click.option("--lab", "lab_prefix", default=None, metavar="PREFIX",
              help="Act on the ctguard lab PREFIX (its ceph, processes and host namespaces).")
@click.option("--lab-dir", default=None, metavar="DIR", help="Parent directory of the lab (as `lab up --dir`).")
@click.option("--ceph-cmd", default="ceph", show_default=True, help="How to run ceph (split like a shell).")
@click.option("--ceph-timeout", type=float, default=30.0, show_default=True, help="Seconds per ceph call.")
@click.option("--ceph-via", type=click.Choice(["auto", "cli", "librados"]), default="auto", show_default=True,
              help="auto: one librados connection when python3-rados is installed and --ceph-cmd is a plain "
                   "`ceph [-c CONF] [-n NAME|--id ID] [-k KEYRING] [--cluster NAME]`; else the ceph CLI.")
@click.option("--gate-source", default="local", show_default=True, metavar="local|exporter|mgr|URL",
              help="Read conntrack gates from this kernel, each host's `ctguard exporter`, the ctguard mgr "
                   "module (`ceph ctguard ok-to-restart`), or a Prometheus URL.")
@click.option("--exporter-url", default="http://{host}:9477/metrics", show_default=True,
              help="Exporter URL template ({host}).")
@click.option("--netns", "netns_name", default=None, help="Local gates: read this network namespace.")
@click.option("--burst-factor", type=float, default=2.0, show_default=True,
              help="Predicted burst = an OSD's entries x this, until the run has measured its own.")
@click.option("--osd-entries", type=int, default=None, help="Entries per OSD when the source cannot tell.")
@click.option("--reserve", type=int, default=0, help="Entries kept free beyond the predicted burst [max(16, max/10000)].")
@click.option("--settle", type=float, default=3.0, show_default=True,
              help="Seconds the drop counter and count must be still before each batch.")
@click.option("--max-parallel", type=int, default=0, show_default=True,
              help="Largest batch of one host (0: what ok-to-stop --max and headroom allow).")
@click.option("--ok-to-stop-timeout", type=float, default=300.0, show_default=True)
@click.option("--gate-timeout", type=float, default=900.0, show_default=True,
              help="Longest wait for headroom or a settled table.")
@click.option("--up-timeout", type=float, default=300.0, show_default=True)
@click.option("--pg-timeout", type=float, default=600.0, show_default=True)
@click.option("--clean-timeout", type=float, default=600.0, show_default=True)
@click.option("--no-wait-clean", is_flag=True, help="Do not wait for active+clean between hosts and at the end.")
@click.option("--no-noout", is_flag=True, help="Do not set noout for the run.")
@click.option("--no-purge", is_flag=True, help="Never purge closing-state entries.")
@click.option("--state-dir", default="/var/lib/ctguard", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the last unfinished run from the journal.")
@click.option("--discard", is_flag=True, help="Start a new run although the journal holds an unfinished one.")
@click.option("--dry-run", is_flag=True, help="Show the plan and every gate's reading; change nothing.")
@json_option
@handle_errors
def restart(osds: tuple[str, ...], hosts: tuple[str, ...], local: bool, cluster: bool, backend: str | None,
            restart_cmd: str | None, lab_prefix: str | None, lab_dir: str | None, ceph_cmd: str, ceph_timeout: float, ceph_via: str,
            gate_source: str,
            exporter_url: str, netns_name: str | None, burst_factor: float, osd_entries: int | None, reserve: int,
            settle: float, max_parallel: int, ok_to_stop_timeout: float, gate_timeout: float, up_timeout: float,
            pg_timeout: float, clean_timeout: float, no_wait_clean: bool, no_noout: bool, no_purge: bool,
            state_dir: str, resume: bool, discard: bool, dry_run: bool, as_json: bool) -> None:
    if burst_factor < 1.0:
        raise BadInput("--burst-factor must be >= 1")
    for name, v in (("--settle", settle), ("--ceph-timeout", ceph_timeout), ("--gate-timeout", gate_timeout)):
        if v <= 0:
            raise BadInput(f"{name} must be > 0")
    if resume and (osds or hosts or local or cluster):
        raise BadInput("--resume takes the plan from the journal: give no OSDs, --host, --local or --cluster")
    lab = _load_lab(lab_prefix, lab_dir) if lab_prefix else None
    if lab is not None:
        ceph_argv = list(lab.ceph_argv())
    else:
        try:
            ceph_argv = shlex.split(ceph_cmd)
        except ValueError as e:
            raise BadInput(f"--ceph-cmd: {e}") from e
    ceph = client_for(ceph_argv, timeout=ceph_timeout, via=ceph_via)
    kind = backend or ("lab" if lab is not None else "cmd" if restart_cmd else "systemd")
    be = make_backend(kind, ceph=ceph, template=restart_cmd, lab=lab)

    # the lock comes first: the journal is only read by the run that holds it (one run per host)
    with contextlib.ExitStack() as stack:
        if not dry_run:
            stack.enter_context(RunLock(state_dir))
        journal = Journal(":memory:" if dry_run else state_dir)  # a dry run leaves no file behind
        state = journal.latest_unfinished() if not dry_run else None
        if resume:
            if state is None:
                raise BadInput(f"nothing to resume: no unfinished run in {journal.path}")
            plan = Plan.from_json(state.plan)
        else:
            if state is not None and not discard:
                raise BadInput(f"run {state.run_id} did not finish ({state.status}: {state.reason or 'crashed'}): "
                               "`ctguard restart --resume`, or --discard to start anew"
                               + (" (it set noout: clear it by hand if you discard)" if state.noout_owned else ""))
            names = parse_osd_names(osds)
            want_hosts = list(hosts)
            if local:
                want_hosts.append(socket.gethostname().split(".")[0])
            if not (names or want_hosts or cluster):
                raise BadInput("nothing to restart: name OSDs (osd.N), --host HOST, --local or --cluster")
            plan = build_plan(ceph.osd_tree(), names, want_hosts, cluster)
            if state is not None and discard:
                journal.mark_superseded(state.run_id)

        if kind == "systemd":
            me = socket.gethostname().split(".")[0]
            other = [h.host for h in plan.hosts if h.host != me]
            if other:
                raise BadInput(f"the systemd backend restarts this machine's daemons ({me}), not {other[0]}'s: "
                               "use --backend cephadm or --restart-cmd 'ssh {host} systemctl restart "
                               "ceph-osd@{id}'")

        netns_of: Callable[[str], Netns | None]
        if lab is not None:
            netns_of = lab.host_netns
        else:
            local_ns = Netns(name=netns_name) if netns_name else None
            netns_of = lambda host: local_ns  # noqa: E731
        source: GateSource
        if gate_source == "local":
            if lab is None and len(plan.hosts) > 1:
                raise BadInput("several hosts: read their gates with --gate-source exporter or a Prometheus URL")
            source = LocalKernelSource(netns_of=netns_of)
        elif gate_source == "exporter":
            source = ExporterSource(exporter_url, netns_of=netns_of if lab is not None else (lambda h: None))
        elif gate_source == "mgr":
            source = MgrSource(CephMgrCommands(ceph))
        elif gate_source.startswith("http://"):
            source = PrometheusSource(gate_source)
        else:
            raise BadInput(f"--gate-source {gate_source!r}: local, exporter, mgr or http://PROMETHEUS:9090")

        opts = Options(burst_factor=burst_factor, osd_entries=osd_entries, reserve=reserve, settle=settle,
                       max_parallel=max_parallel, ok_to_stop_timeout=ok_to_stop_timeout, gate_timeout=gate_timeout,
                       up_timeout=up_timeout, pg_timeout=pg_timeout, clean_timeout=clean_timeout,
                       wait_clean=not no_wait_clean, set_noout=not no_noout, purge=not no_purge)

        if dry_run:
            eng = Engine(plan, ceph, be, source, journal, opts)
            doc = eng.dry_run()
            journal.close()
            if as_json:
                print_json(doc, 1)
            else:
                _render_dry_run(doc)
            return

        human = None if as_json else _Human(len(plan.osds))
        emit = _json_emit if as_json else human
        assert emit is not None
        eng = Engine(plan, ceph, be, source, journal, opts, emit=emit)

        def on_signal(signum: int, frame: object) -> None:
            # only a flag: the engine finishes the step under way and reports the stop itself
            eng.request_stop(f"{signal.Signals(signum).name} received")

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if human is not None:
                with human:
                    result = eng.run(state if resume else None)
            else:
                result = eng.run(state if resume else None)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            journal.close()
        _finish(result)


def _finish(result: Result) -> None:
    if result.exit_code not in (Exit.OK,):
        click.echo(f"ctguard: {result.reason}", err=True)
    sys.stdout.flush()
    sys.exit(result.exit_code)


commands = [restart]
