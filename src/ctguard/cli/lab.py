"""`ctguard lab ...`: a real Ceph cluster in network namespaces that reproduces the 2014 incident."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ctguard.cli.common import EXIT_CODES_HELP, handle_errors, json_option, print_json
from ctguard.errors import BadInput, Exit
from ctguard.lab import config as cfg
from ctguard.output import emit_event
from ctguard.runner import run

SCHEMA = 1
_err = Console(stderr=True)
# wide enough for the comparison table when stdout is a pipe or a file (the demo's log)
_out = Console() if sys.stdout.isatty() else Console(width=160)


def _prefix_options(f: Any) -> Any:
    f = click.option("--dir", "base_dir", default=None, metavar="DIR",
                     help=f"Parent of the lab directory (default {cfg.DEFAULT_BASE}; the lab lives in DIR/PREFIX).")(f)
    f = click.option("--prefix", default=cfg.DEFAULT_PREFIX, show_default=True,
                     help="Name of the lab: its namespaces are PREFIX-mon, PREFIX-h1, ...")(f)
    return f


def _progress(as_json: bool) -> Any:
    def cb(step: str, fields: dict[str, Any]) -> None:
        if as_json:
            emit_event(step, fields, stream=sys.stderr)
        elif step != "waiting":
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            _err.print(f"[dim]lab:[/dim] {step} {extra}")
    return cb


@click.group(help="A real Ceph 16.2.15 cluster in network namespaces: reproduce the conntrack incident and "
             "prove each fix.\n\n" + EXIT_CODES_HELP)
def lab() -> None:
    pass


@lab.command(help="Bring up a lab: mon+mgr, N OSD hosts with a stateful firewall each, librados clients. "
             "Waits for HEALTH_OK with all PGs active+clean.\n\n" + EXIT_CODES_HELP)
@_prefix_options
@click.option("--hosts", default=3, show_default=True, help="OSD hosts (namespaces).")
@click.option("--osds-per-host", default=4, show_default=True)
@click.option("--store", type=click.Choice(cfg.STORES), default="memstore", show_default=True)
@click.option("--clients", default=1, show_default=True, help="librados client processes (a steady trickle).")
@click.option("--client-rate", type=float, default=cfg.DEFAULT_CLIENT_RATE, show_default=True, metavar="R",
              help="Operations per second of each client (4 KiB writes and reads).")
@click.option("--pool-size", type=int, default=None, metavar="N",
              help="Replicas of the lab's pool (default: 3, or the number of hosts if fewer).")
@click.option("--pg-num", type=int, default=None, metavar="N", help="PGs of the lab's pool (a power of two).")
@click.option("--pgs-per-osd", type=float, default=None, metavar="N",
              help="PG replicas per OSD instead of --pg-num: pg_num = the power of two nearest to "
              "N x OSDs / pool size.")
@json_option
@handle_errors
def up(prefix: str, base_dir: str | None, hosts: int, osds_per_host: int, store: str, clients: int,
       client_rate: float, pool_size: int | None, pg_num: int | None, pgs_per_osd: float | None,
       as_json: bool) -> None:
    from ctguard.lab.cluster import up as lab_up

    spec = cfg.LabSpec(prefix=prefix, hosts=hosts, osds_per_host=osds_per_host, store=store, clients=clients,
                       base_dir=base_dir, size=pool_size, pgs=pg_num, pgs_per_osd=pgs_per_osd,
                       client_rate=client_rate)
    try:
        lab_obj = lab_up(spec, progress=_progress(as_json))
    except BaseException as e:
        if not isinstance(e, KeyboardInterrupt | SystemExit):
            _err.print(f"lab up failed; `ctguard lab down --prefix {prefix}` removes what was made "
                       f"(logs in {spec.dir}/log)")
        raise
    st = lab_obj.state
    doc = {"prefix": st.prefix, "dir": st.dir, "conf": st.conf, "shape": st.shape, "hosts": [
        {"host": h.name, "ip": h.ip, "osds": h.osds} for h in st.hosts], "timings": st.timings}
    if as_json:
        print_json(doc, SCHEMA)
    else:
        _out.print(f"lab [bold]{prefix}[/bold] up in {st.timings.get('ready', 0):.1f} s: "
                   f"{len(st.hosts)} hosts x {osds_per_host} OSDs ({store}), pool size {spec.pool_size}, "
                   f"pg_num {spec.pg_num} ({spec.pg_replicas_per_osd:g} PG replicas per OSD), "
                   f"{clients} client(s) at {client_rate:g} ops/s; "
                   f"ceph CLI: ctguard lab ceph --prefix {prefix} -- -s")


@lab.command(help="Remove everything of a lab: processes, namespaces, files. Safe after a crashed `up` "
             "and when nothing is left.\n\n" + EXIT_CODES_HELP)
@_prefix_options
@json_option
@handle_errors
def down(prefix: str, base_dir: str | None, as_json: bool) -> None:
    from ctguard.lab.cluster import down as lab_down

    res = lab_down(prefix, base_dir)
    doc = {"prefix": prefix, "killed": res.killed, "namespaces": res.namespaces, "removed_dir": res.removed_dir,
           "left": res.left}
    if as_json:
        print_json(doc, SCHEMA)
    else:
        _out.print(f"lab {prefix}: killed {len(res.killed)} process(es), deleted {len(res.namespaces)} "
                   f"namespace(s){', removed ' + res.removed_dir if res.removed_dir else ''}")
        for x in res.left:
            _err.print(f"[red]left behind:[/red] {x}")
    if res.left:
        sys.exit(int(Exit.CRIT))


@lab.command(help="Health, OSDs up/in per host, PG states, conntrack count per host.\n\n" + EXIT_CODES_HELP)
@_prefix_options
@json_option
@handle_errors
def status(prefix: str, base_dir: str | None, as_json: bool) -> None:
    from ctguard.lab.cluster import Lab
    from ctguard.lab.status import lab_status

    doc = lab_status(Lab.load(prefix, base_dir))
    if as_json:
        print_json(doc, SCHEMA)
    else:
        _out.print(f"lab {prefix}: {doc['health']}  PGs {doc['num_pgs']}: "
                   + ", ".join(f"{n} {k}" for k, n in doc["pg_states"].items()))
        t = Table("host", "OSDs up/in", "conntrack count", "max", "drop", "early_drop")
        for h in doc["hosts"]:
            ct = h["conntrack"] or {}
            osds = " ".join(f"{o['id']}:{'U' if o['up'] else 'd'}{'I' if o['in'] else 'o'}" for o in h["osds"])
            t.add_row(h["host"], osds, str(ct.get("count", "?")), str(ct.get("max", "?")),
                      str(ct.get("drop", "?")), str(ct.get("early_drop", "?")))
        _out.print(t)
        down = [x["host"] for x in doc.get("exporters", []) if x["pid"] is None]
        checks = doc.get("mgr_checks")
        if checks is not None:
            _out.print("ctguard mgr module: " + ("no CTGUARD_* health checks" if not checks else
                                                 ", ".join(sorted(checks)))
                       + (f"; exporter not running on {', '.join(down)}" if down else ""))
            for code, c in sorted(checks.items()):
                for line in c["detail"]:
                    _out.print(f"  {code}: {line}", markup=False)
        for e in doc["errors"]:
            _err.print(f"[yellow]{e}[/yellow]")
    health = doc["health"]
    if health is None:
        sys.exit(int(Exit.UNKNOWN))
    if health != "HEALTH_OK":
        sys.exit(int(Exit.WARN if health == "HEALTH_WARN" else Exit.CRIT))


@lab.command(name="ceph", context_settings={"ignore_unknown_options": True},
             help="Run the real `ceph` CLI inside the lab: `ctguard lab ceph -- -s`.\n\n" + EXIT_CODES_HELP)
@_prefix_options
@click.option("--timeout", default=60.0, show_default=True)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def ceph_cmd(prefix: str, base_dir: str | None, timeout: float, args: tuple[str, ...]) -> None:
    from ctguard.lab.cluster import Lab

    lab_obj = Lab.load(prefix, base_dir)
    done = run([*lab_obj.ceph_argv(), *args], timeout=timeout)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    sys.exit(done.returncode)


@lab.command(name="exec", context_settings={"ignore_unknown_options": True},
             help="Run a command inside a lab host's namespace: `ctguard lab exec cl-h1 -- conntrack -C`.\n\n"
             + EXIT_CODES_HELP)
@_prefix_options
@click.option("--timeout", default=300.0, show_default=True)
@click.argument("host")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@handle_errors
def exec_cmd(prefix: str, base_dir: str | None, timeout: float, host: str, argv: tuple[str, ...]) -> None:
    from ctguard.lab.cluster import Lab

    lab_obj = Lab.load(prefix, base_dir)
    st = lab_obj.state
    if host not in (*lab_obj.hosts, st.mon_ns, st.client_ns):
        raise BadInput(f"no host {host!r} in lab {prefix!r} (hosts: {', '.join(lab_obj.hosts)}, {st.mon_ns}, "
                       f"{st.client_ns})")
    done = run(["ip", "netns", "exec", host, *argv], timeout=timeout)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    sys.exit(done.returncode)


@lab.command(name="restart-osds", help="Restart every OSD of HOST, all at once or staggered.\n\n" + EXIT_CODES_HELP)
@_prefix_options
@click.argument("host")
@click.option("--all-at-once", "mode", flag_value="all", default=True, help="Signal all, then start all (default).")
@click.option("--gap", type=float, default=None, metavar="S", help="One by one, S seconds apart.")
@click.option("--signal", "signame", type=click.Choice(["TERM", "KILL"]), default="TERM", show_default=True)
@json_option
@handle_errors
def restart_osds(prefix: str, base_dir: str | None, host: str, mode: str, gap: float | None, signame: str,
                 as_json: bool) -> None:
    from ctguard.lab.cluster import Lab

    if gap is not None and gap < 0:
        raise BadInput("--gap must be >= 0")
    lab_obj = Lab.load(prefix, base_dir)
    sig = signal.SIGTERM if signame == "TERM" else signal.SIGKILL
    events = lab_obj.restart_osds(host, all_at_once=gap is None, gap=gap or 0.0, sig=sig)
    doc = {"host": host, "events": [{"t": e.t, "event": e.event, "osd": e.osd, "pid": e.pid} for e in events]}
    if as_json:
        print_json(doc, SCHEMA)
    else:
        for e in events:
            _out.print(f"{e.event:8s} osd.{e.osd} pid {e.pid}")


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}{unit}"
    return f"{v}{unit}"


# a client blocked this long is the incident's main symptom (the 2014 report: requests blocked ~15 minutes)
BLOCKED_LOUD_S = 10.0


def _secs_from_ms(v: Any) -> str:
    return "-" if v is None else f"{float(v) / 1000:.1f}"


def _blocked(s: dict[str, Any]) -> str:
    v = s.get("client_blocked_s")
    if v is None:
        return "-"
    return f"[bold red]{v:g}[/bold red]" if v >= BLOCKED_LOUD_S else f"{v:g}"


def comparison_table(doc: dict[str, Any]) -> Table:
    t = Table(title=f"lab reproduce {doc['run_id']}: host {doc['host']}, baseline {doc['baseline']} entries, "
              f"burst {doc['burst']}, max {doc['max']}", title_justify="left")
    cols = ("scenario", "free", "peak", "drops", "overflow\ns", "clean\nafter s", "OSDs\nmarked down", "faults/s",
            "client\nblocked s", "worst\nop s", "failed\nops", "ops/s", "expected", "ok")
    for col in cols:
        # no value wraps (a scenario's name or a figure broken over two lines misreads): two-line headers
        t.add_column(col, justify="left" if col in ("scenario", "expected") else "right", no_wrap=True)
    for s in doc["scenarios"]:
        if not s["available"]:
            t.add_row(s["name"], *[""] * (len(cols) - 3), s["expect"], "n/a")
            continue
        ok = {True: "[green]yes[/green]", False: "[red]NO[/red]", None: ""}[s["met"]]
        peak = f"{s['peak'] - s['filler']} ({s['peak_over_baseline']:g}x)"
        # runs recorded before the asynchronous client (data/lab up to 20261126) have no client_blocked_s
        t.add_row(s["name"], _fmt(s["free_before"]), peak, _fmt(s["drops"]), _fmt(s["overflow_seconds"]),
                  _fmt(s["seconds_to_clean"]), _fmt(s["osds_marked_down"]), _fmt(s["fault_lines_per_s"]),
                  _blocked(s), _secs_from_ms(s.get("client_worst_ms")),
                  _fmt(s.get("client_failed_ops")), _fmt(s.get("client_ops_per_s")), s["expect"] or "(truth)", ok)
    return t


def client_notes(doc: dict[str, Any]) -> list[str]:
    """One sentence per scenario whose librados client was blocked, so nobody reads past it in the table; and
    why a scenario that ran did not meet its expectation when the table's figures cannot say it."""
    out = []
    for s in doc["scenarios"]:
        if s.get("available") and s.get("met") is False and s.get("reason"):
            out.append(f"{s['name']}: NOT met: {s['reason']}")
        blocked = s.get("client_blocked_s")
        if not s.get("available") or not blocked or blocked < 1.0:
            continue
        line = (f"{s['name']}: the librados client was blocked {blocked:g} s (an op outstanding > 1 s); slowest "
                f"op {_secs_from_ms(s.get('client_worst_ms'))} s")
        if s.get("client_no_completion_s"):
            line += f", no op completed for {s['client_no_completion_s']} s in a row"
        if s.get("client_failed_ops"):
            line += f", {s['client_failed_ops']} op(s) failed ({s.get('client_timeouts') or 0} timed out)"
        out.append(line)
    return out


@lab.command(help="Reproduce the 2014 incident on one OSD host, then each remedy from the same starting "
             "point; prints a comparison, saves the time series (JSON lines) and one PNG per scenario.\n\n"
             "Exit 0 when every scenario met its expectation, 2 when one did not.\n\n" + EXIT_CODES_HELP)
@_prefix_options
@click.option("--host", default=None, help="OSD host to restart (default: the first).")
@click.option("--scenario", "names", multiple=True, metavar="NAME",
              help="Run only these (repeatable): all-at-once, stagger, stagger-tw, headroom, untracked, "
              "ctguard-restart, purge, guard. The `measure` run always comes first.")
@click.option("--gap", type=float, default=10.0, show_default=True, help="Stagger gap, seconds.")
@click.option("--short-time-wait", type=int, default=10, show_default=True,
              help="Per-netns TIME_WAIT timeout for the stagger-tw scenario (its gap is this + 2 s).")
@click.option("--max-window", type=float, default=150.0, show_default=True,
              help="Longest observation per scenario, seconds.")
@click.option("--out", "out_dir", default=None, metavar="DIR",
              help="Also save the series under DIR/<run id>/ (e.g. data/lab). Always saved in the lab dir.")
@click.option("--plot", "plot_dir", default=None, metavar="DIR", help="Copy the PNGs to DIR.")
@click.option("--no-plots", is_flag=True, help="Skip the PNGs.")
@json_option
@handle_errors
def reproduce(prefix: str, base_dir: str | None, host: str | None, names: tuple[str, ...], gap: float,
              short_time_wait: int, max_window: float, out_dir: str | None, plot_dir: str | None, no_plots: bool,
              as_json: bool) -> None:
    import shutil

    from ctguard.lab.cluster import Lab
    from ctguard.lab.reproduce import Reproducer, check_scenarios

    if gap < 0 or short_time_wait < 1 or max_window < 10:
        raise BadInput("--gap >= 0, --short-time-wait >= 1, --max-window >= 10")
    wanted = check_scenarios(names, gap, short_time_wait)
    lab_obj = Lab.load(prefix, base_dir)
    if host is not None:
        lab_obj.host_index(host)
    dirs = [os.path.join(lab_obj.dir, "runs")] + ([out_dir] if out_dir else [])
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    rep = Reproducer(lab_obj, host, dirs, progress=_progress(as_json), max_window=max_window,
                     plots=not no_plots)

    def on_term(signum: int, frame: object) -> None:
        # SIGTERM like Ctrl-C: the reproducer puts the host back (firewall, TIME_WAIT, filler, debug ms)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        doc = rep.run(wanted)
    finally:
        signal.signal(signal.SIGTERM, old)
    if plot_dir:
        os.makedirs(plot_dir, exist_ok=True)
        for s in doc["scenarios"]:
            if s.get("plot"):
                shutil.copy(s["plot"], os.path.join(plot_dir, os.path.basename(s["plot"])))
    if as_json:
        print_json(doc, SCHEMA)
    else:
        _out.print(comparison_table(doc))
        for line in client_notes(doc):
            _out.print(line)
        _out.print(f"series and plots: {', '.join(os.path.join(d, doc['run_id']) for d in dirs)}")
    if any(s["met"] is False for s in doc["scenarios"]):
        sys.exit(int(Exit.CRIT))


def sweep_table(runs: list[dict[str, Any]]) -> Table:
    t = Table(title="lab sweep: host 1 of each shape (entries, filler excluded)", title_justify="left")
    for col in ("shape", "status", "wall s", "baseline", "measure peak", "one-by-one peak", "free",
                "all-at-once peak", "drops", "marked down"):
        t.add_column(col, justify="left" if col in ("shape", "status") else "right")
    for r in runs:
        by = {s["scenario"]: s for s in r["scenarios"]}
        m, o, a = by.get("measure", {}), by.get("one-by-one", {}), by.get("all-at-once", {})
        ratio = f" ({m['peak'] / m['baseline']:.2f}x)" if m.get("baseline") else ""
        t.add_row(r["id"], r["status"] if not r["error"] else f"{r['status']}: {r['error']}", _fmt(r["wall_s"]),
                  _fmt(m.get("baseline")), f"{_fmt(m.get('peak'))}{ratio}", _fmt(o.get("peak")),
                  _fmt(a.get("free")), _fmt(a.get("peak")), _fmt(a.get("drops")), _fmt(a.get("osds_marked_down")))
    return t


@lab.command(help="Measure the restart burst across lab shapes: for each shape bring a lab up, restart the "
             "OSDs of its first host all at once (measure), one at a time (5 s apart) and all at once with the "
             "table squeezed to half the burst (under /tmp/ctguard-heavy.lock), take it down, and write one "
             "JSON line per scenario to OUT/<shape id>.jsonl. Shapes already recorded there are skipped, so a "
             "sweep split into parts resumes.\n\n"
             "Exit 0 when every shape was recorded or skipped, 2 when one failed.\n\n" + EXIT_CODES_HELP)
@click.option("--dir", "base_dir", default=None, metavar="DIR",
              help=f"Parent of the lab directory (default {cfg.DEFAULT_BASE}).")
@click.option("--prefix", default="sw", show_default=True, help="Name of the sweep's labs (one at a time).")
@click.option("--shape", "shape_ids", multiple=True, metavar="ID",
              help="Run these shapes (repeatable), e.g. 3x5-s3-pg128-c1 or 4x3-s2-pg64-c40-r3 "
              "(HOSTSxOSDS-sSIZE-pgPGS-cCLIENTS[-rOPS_PER_S][-bluestore]); default: the built-in set.")
@click.option("--out", "out_dir", default="data/lab/sweep", show_default=True, metavar="DIR",
              help="Where the records go: DIR/<shape id>.jsonl, one file per shape.")
@click.option("--force", is_flag=True, help="Record shapes again even if OUT already has them.")
@click.option("--list", "list_only", is_flag=True, help="List the shapes and whether each is recorded; run nothing.")
@click.option("--max-window", type=float, default=150.0, show_default=True,
              help="Longest observation per scenario, seconds.")
@json_option
@handle_errors
def sweep(base_dir: str | None, prefix: str, shape_ids: tuple[str, ...], out_dir: str, force: bool,
          list_only: bool, max_window: float, as_json: bool) -> None:
    from ctguard.lab import sweep as sw

    cfg.check_prefix(prefix)
    if max_window < 10:
        raise BadInput("--max-window must be >= 10")
    shapes = sw.select(shape_ids)
    if list_only:
        doc: dict[str, Any] = {"out": out_dir, "shapes": [
            {**s.to_json(), "recorded": sorted(sw.recorded(out_dir, s.id)), "done": sw.is_done(out_dir, s.id)}
            for s in shapes]}
        if as_json:
            print_json(doc, SCHEMA)
        else:
            for s in doc["shapes"]:
                _out.print(f"{s['id']:28s} {s['pg_replicas_per_osd']:6g} PG replicas/OSD  "
                           f"{'recorded' if s['done'] else 'to do'}")
        return

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # like Ctrl-C: the lab is put back and taken down

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        runs = sw.sweep(shapes, out_dir, prefix, base_dir, resume=not force, progress=_progress(as_json),
                        max_window=max_window)
    finally:
        signal.signal(signal.SIGTERM, old)
    doc = {"out": out_dir, "shapes": [r.summary() for r in runs]}
    if as_json:
        print_json(doc, SCHEMA)
    else:
        _out.print(sweep_table(doc["shapes"]))
    if any(r.status == "failed" for r in runs):
        sys.exit(int(Exit.CRIT))


@lab.command(name="plot", help="Redraw the PNGs of a recorded run directory (data/lab/<run id>).\n\n"
             + EXIT_CODES_HELP)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@handle_errors
def plot_cmd(run_dir: str) -> None:
    from ctguard.lab.plot import plot_series_file

    n = 0
    for name in sorted(os.listdir(run_dir)):
        if name.endswith(".jsonl"):
            try:
                plot_series_file(os.path.join(run_dir, name), os.path.join(run_dir, name[:-6] + ".png"))
            except (ValueError, KeyError, OSError) as e:
                raise BadInput(f"{name}: {e}") from e
            n += 1
    _out.print(f"{n} plot(s) in {run_dir}")


commands = [lab]
