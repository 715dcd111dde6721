"""`ctguard exporter`, `ctguard guard` and `ctguard watch`: metrics, first aid at the first drop, a live view."""

from __future__ import annotations

import functools
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ctguard.cli.common import (
    EXIT_CODES_HELP,
    handle_errors,
    json_option,
    netns_options,
    print_json,
    proc_root_option,
    target_netns,
)
from ctguard.errors import Exit
from ctguard.export import guard as _guard
from ctguard.export import webconfig as _webconfig
from ctguard.export.breakdown import Refresher, child_source
from ctguard.export.exporter import Exporter, ExporterConfig
from ctguard.export.probe import Probe
from ctguard.export.readings import read_now
from ctguard.export.server import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PER_SOURCE,
    DEFAULT_REQUEST_TIMEOUT,
)
from ctguard.export.trend import DEFAULT_BURST_FACTOR
from ctguard.export.watch import Frame, WatchModel
from ctguard.kernel.nfnetlink import CLOSING_STATES
from ctguard.model.roles import PortRoles, parse_range
from ctguard.output import emit_event
from ctguard.table.purge import parse_states, purge

DEFAULT_STATE_DIR = "/var/lib/ctguard"


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM/SIGINT/SIGHUP, so daemons stop cleanly (exit 0) under systemd."""
    stop = threading.Event()
    old: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: object) -> None:
        stop.set()

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        old[s] = signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _emitter(as_json: bool) -> Callable[[str, Mapping[str, Any]], None]:
    lock = threading.Lock()  # background threads (breakdown errors) log too: one whole line at a time

    def emit(event: str, fields: Mapping[str, Any]) -> None:
        with lock:
            if as_json:
                emit_event(event, fields)
            else:
                detail = " ".join(f"{k}={v}" for k, v in fields.items())
                click.echo(f"{time.strftime('%H:%M:%S')} {event} {detail}")
                sys.stdout.flush()
    return emit


# -- exporter -----------------------------------------------------------------------------------------------------

@click.command(help="Serve Prometheus metrics of the conntrack table: fill, drops, breakdown, restart headroom, "
                    "time-to-full. HTTP/1.1 keep-alive, so a scraper's connection keeps working while the table "
                    "is full; idle and half-open connections cannot lock scrapers out. With --netns, the "
                    "listening socket is made inside that namespace. --web-config adds TLS and basic auth "
                    "(node_exporter's file format).\n\n"
                    + EXIT_CODES_HELP)
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT to listen on.")
@click.option("--web-config", "web_config", default=None, metavar="FILE",
              help="TLS and basic auth, in the Prometheus exporter-toolkit web config format "
                   "(tls_server_config, basic_auth_users with bcrypt hashes, http_server_config, rate_limit). "
                   "A bad file stops the start with one line (exit 3).")
@click.option("--max-connections", type=click.IntRange(min=1, max=1024), default=DEFAULT_MAX_CONNECTIONS,
              show_default=True, help="Connections served at once. At the cap the one idle longest is closed "
                                      "(never-scraped ones first); a new one is refused only if all are busy.")
@click.option("--max-connections-per-source", "max_per_source", type=click.IntRange(min=1, max=1024),
              default=DEFAULT_MAX_PER_SOURCE, show_default=True,
              help="Connections one source address may hold; its next one replaces its own idlest.")
@click.option("--request-timeout", type=click.FloatRange(min=0.1), default=DEFAULT_REQUEST_TIMEOUT,
              show_default=True, help="Seconds for a whole request (TLS handshake, headers, body) to arrive.")
@click.option("--idle-timeout", type=click.FloatRange(min=1.0), default=DEFAULT_IDLE_TIMEOUT, show_default=True,
              help="Seconds a keep-alive connection may wait for its next request.")
@click.option("--breakdown-interval", type=click.FloatRange(min=1.0), default=60.0, show_default=True,
              help="Seconds between breakdown dumps (done in a child process, never during a scrape).")
@click.option("--no-breakdown", is_flag=True, help="Export only the O(1) figures (no table dumps at all).")
@click.option("--rate-window", type=click.FloatRange(min=2.0), default=30.0, show_default=True,
              help="Seconds of 1 Hz count samples used for growth and time-to-full.")
@click.option("--burst-factor", type=click.FloatRange(min=0.0), default=DEFAULT_BURST_FACTOR, show_default=True,
              help="A restart adds about the daemon's entries times this.")
@click.option("--top-daemons", type=click.IntRange(min=1, max=200), default=20, show_default=True,
              help="Cap on daemon label values (the rest are summed as daemon=\"other\").")
@click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True,
              help="Where `ctguard guard` leaves its state (exported when present).")
@click.option("--osd-range", default=None, metavar="LOW-HIGH", help="Ceph OSD port range (default 6800-7568).")
@click.option("--listen-in-host", is_flag=True,
              help="Make the listening socket in the exporter's own namespace, not the --netns target.")
@netns_options
@json_option
@proc_root_option
@handle_errors
def exporter(listen: str, web_config: str | None, max_connections: int, max_per_source: int,
             request_timeout: float, idle_timeout: float, breakdown_interval: float, no_breakdown: bool,
             rate_window: float, burst_factor: float, top_daemons: int, state_dir: str, osd_range: str | None,
             listen_in_host: bool, netns_name: str | None, netns_pid: int | None, as_json: bool,
             proc_root: str) -> None:
    ns = target_netns(netns_name, netns_pid)
    if osd_range:
        parse_range(osd_range)  # one clear line now, not a failing child later
    web = _webconfig.load(web_config) if web_config else None  # a bad file: one line, exit 3, before listening
    cfg = ExporterConfig(listen=listen, breakdown_interval=None if no_breakdown else breakdown_interval,
                         rate_window=rate_window, burst_factor=burst_factor, top_daemons=top_daemons,
                         state_dir=state_dir, listen_in_target=not listen_in_host, osd_range=osd_range,
                         max_connections=max_connections, max_per_source=max_per_source,
                         request_timeout=request_timeout, idle_timeout=idle_timeout, web=web)
    ex = Exporter(ns, cfg, proc_root)
    emit = _emitter(as_json)
    if ex.refresher is not None:
        def on_result(bd: object, err: str | None) -> None:
            if err is not None:
                emit("breakdown_error", {"netns": ns.label, "message": err})
        ex.refresher.on_result(on_result)
    with _stop_on_signals() as stop:
        ex.start()
        emit("listening", {"schema": 1, "netns": ns.label, "url": ex.server.url,
                           "breakdown_interval_s": cfg.breakdown_interval, "tls": ex.server.tls,
                           "basic_auth": bool(web is not None and web.users)})
        try:
            while not stop.wait(1.0):
                pass
        finally:
            ex.stop()
            emit("stopped", {"netns": ns.label, **ex.server.stats})


# -- guard --------------------------------------------------------------------------------------------------------

@click.command(help="Keep the conntrack table from dropping: purge closing-state TCP entries (never "
                    "ESTABLISHED) at the first drop, and with --preempt before any drop: it polls the fill "
                    "(nf_conntrack_count) at >= 10 Hz and, while free entries are below a reserve, purges "
                    "TIME_WAIT and CLOSE entries as soon as the count grows (rate-limited). The reserve defaults to the larger of 1 % of the "
                    "max and the host's predicted whole-host restart burst (local Ceph daemons' entries x "
                    "--burst-factor, from a breakdown every --reserve-interval s). Trade-off: a late segment "
                    "of a purged TIME_WAIT connection is seen as new (see docs/exporter.md). Opt-in: without "
                    "--apply it only shows what it would do.\n\n" + EXIT_CODES_HELP)
@click.option("--preempt", is_flag=True,
              help="Also purge while free entries are below the reserve, before anything is dropped.")
@click.option("--reserve", type=click.IntRange(min=1), default=None, metavar="ENTRIES",
              help="Fixed reserve of free entries for --preempt (default: max(1 % of max, predicted burst)).")
@click.option("--reserve-interval", type=click.FloatRange(min=10.0), default=300.0, show_default=True,
              help="Seconds between the breakdowns the reserve is predicted from (a child dumps the table).")
@click.option("--burst-factor", type=click.FloatRange(min=0.0), default=DEFAULT_BURST_FACTOR, show_default=True,
              help="A restart adds about the daemons' entries times this.")
@click.option("--preempt-interval", type=click.FloatRange(min=0.1), default=0.5, show_default=True,
              help="At most one pre-emptive purge per this many seconds (doubling, up to 30 s, while purges "
                   "find nothing).")
@click.option("--preempt-states", default=",".join(_guard.PREEMPT_STATES), show_default=True,
              help="TCP conntrack states purged before any drop (connections over at both ends).")
@click.option("--states", default=",".join(CLOSING_STATES), show_default=True,
              help="TCP conntrack states purged after a drop (never ESTABLISHED).")
@click.option("--ports", type=click.Choice(list(_guard.PORT_SCOPES)), default="all", show_default=True,
              help="Purge on all ports, or only entries on Ceph ports.")
@click.option("--poll-hz", type=float, default=10.0, show_default=True,
              help="Polls per second (>= 5; >= 10 with --preempt).")
@click.option("--min-interval", type=float, default=5.0, show_default=True,
              help="At most one purge after drops per this many seconds.")
@click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True,
              help="Where to keep the state file the exporter reads.")
@click.option("--osd-range", default=None, metavar="LOW-HIGH",
              help="Ceph OSD port range for --ports ceph and the breakdown (default 6800-7568).")
@click.option("--apply", "apply_", is_flag=True, help="Run the guard (without it: show the plan and exit).")
@netns_options
@json_option
@proc_root_option
@handle_errors
def guard(preempt: bool, reserve: int | None, reserve_interval: float, burst_factor: float, preempt_interval: float,
          preempt_states: str, states: str, ports: str, poll_hz: float, min_interval: float, state_dir: str, osd_range: str | None,
          apply_: bool, netns_name: str | None, netns_pid: int | None, as_json: bool, proc_root: str) -> None:
    ns = target_netns(netns_name, netns_pid)
    cfg = _guard.GuardConfig(states=parse_states(states), preempt_states=parse_states(preempt_states),
                             ports=ports, poll_hz=poll_hz,
                             min_interval=min_interval, preempt=preempt, reserve=reserve,
                             burst_factor=burst_factor, preempt_interval=preempt_interval)
    roles = PortRoles(osd_range=parse_range(osd_range)) if osd_range else PortRoles()
    state_file = _guard.state_path(state_dir, ns)
    probe = Probe(ns, proc_root)
    try:
        # fail early, with one line, if the counters cannot be read
        drops0 = probe.drops()
        count, limit = probe.fill()
    except BaseException:
        probe.close()
        raise
    plan: dict[str, Any] = {"netns": ns.label, "states": list(cfg.states), "ports": cfg.ports,
                            "poll_hz": cfg.poll_hz, "min_interval_s": cfg.min_interval,
                            "osd_range": list(roles.osd_range), "mon_ports": list(roles.mon_ports),
                            "state_file": state_file, "drop_total": drops0, "count": count, "limit": limit,
                            "preempt": preempt, "applied": apply_}
    if preempt:
        r = _guard.compute_reserve(limit, burst_factor=burst_factor, fixed=reserve)
        plan.update(preempt_states=list(cfg.preempt_states), reserve=r.to_json(),
                    preempt_interval_s=cfg.preempt_interval,
                    reserve_interval_s=None if reserve is not None else reserve_interval)
    if not apply_:
        probe.close()
        if as_json:
            print_json(plan, _guard.SCHEMA)
            return
        click.echo(f"ctguard guard would poll the drop counter of {ns.label} at {cfg.poll_hz:g} Hz and, at "
                   f"the first drop, purge {','.join(cfg.states)} entries on {cfg.ports} ports "
                   f"(at most once per {cfg.min_interval:g} s); state in {state_file}.")
        if preempt:
            how = (f"{reserve:,} entries (fixed)" if reserve is not None else
                   f"max(1 % of max = {plan['reserve']['floor']:,}, the predicted whole-host restart burst = "
                   f"local Ceph daemons' entries x {burst_factor:g}, from a breakdown every "
                   f"{reserve_interval:g} s)")
            click.echo(f"With --preempt it also watches the fill ({count:,} of {limit:,}) and, while free "
                       f"entries are below a reserve of {how}, purges {','.join(cfg.preempt_states)} entries "
                       f"as the count grows (at most once per "
                       f"{cfg.preempt_interval:g} s), before anything is dropped.")
        click.echo("Nothing done: run with --apply to start it.")
        return
    emit = _emitter(as_json)
    refresher: Refresher | None = None
    reserve_source = None
    if preempt and reserve is None:
        refresher = Refresher(child_source(ns, osd_range), reserve_interval)

        def on_result(bd: object, err: str | None) -> None:
            if err is not None:
                emit("breakdown_error", {"netns": ns.label, "message": err})
        refresher.on_result(on_result)
        reserve_source = _reserve_source(refresher)
    with _stop_on_signals() as stop:
        if refresher is not None:
            refresher.start()
        g = _guard.Guard(ns, cfg, read_drops=probe.drops, read_fill=probe.fill, reserve_source=reserve_source,
                         purge=functools.partial(purge, roles=roles),
                         emit=emit, state_file=state_file,
                         sleep=stop.wait)  # wakes at once on SIGTERM
        try:
            g.run(stop.is_set)
        finally:
            if refresher is not None:
                refresher.stop(0.5)
            probe.close()


def _reserve_source(refresher: Refresher) -> _guard.ReserveSource:
    """The newest breakdown's (by_daemon, by_role), the same object until the next breakdown."""
    cache: list[Any] = [None, None]

    def latest() -> tuple[list[tuple[str, int]], dict[str, int]] | None:
        bd, _age = refresher.latest()
        if bd is None:
            return None
        if cache[0] is not bd:
            cache[0], cache[1] = bd, (list(bd.by_daemon), dict(bd.by_role))
        out: tuple[list[tuple[str, int]], dict[str, int]] = cache[1]
        return out
    return latest


# -- watch --------------------------------------------------------------------------------------------------------

def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}/s"


def _fmt_seconds(s: float) -> str:
    if math.isinf(s):
        return "not filling"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


_COLOURS = {"OK": "green", "WARN": "yellow", "CRIT": "bold red"}


def render(f: Frame, width: int = 40) -> RenderableType:
    r = f.reading
    colour = _COLOURS[f.verdict]
    filled = min(width, int(round(r.fill * width)))
    gauge = Text()
    gauge.append("fill  ")
    gauge.append("█" * filled, style=colour)
    gauge.append("░" * (width - filled), style="dim")
    gauge.append(f"  {r.count:,} / {r.limit:,}  ({r.fill:.1%})  free {r.free:,}")
    rates = Table.grid(padding=(0, 2))
    rates.add_row("drops", Text(_fmt_rate(f.drop_rate), style="bold red" if (f.drop_rate or 0) > 0 else ""),
                  "drop total", f"{r.counters.get('drop', 0):,}")
    rates.add_row("early drops", _fmt_rate(f.early_drop_rate), "inserts", _fmt_rate(f.insert_rate))
    rates.add_row("growth", _fmt_rate(f.growth), "full in", _fmt_seconds(f.seconds_to_full))
    daemons = Table(title="top daemons", title_justify="left", box=None, pad_edge=False)
    daemons.add_column("daemon")
    daemons.add_column("entries", justify="right")
    for n, e in f.top_daemons():
        daemons.add_row(n, f"{e:,}")
    states = Table(title="top states", title_justify="left", box=None, pad_edge=False)
    states.add_column("state")
    states.add_column("entries", justify="right")
    for s, e in f.top_states():
        states.add_row(s, f"{e:,}")
    tops = Table.grid(padding=(0, 6))
    tops.add_row(daemons, states)
    h = f.headroom
    if h is None:
        head = Text("headroom  (waiting for the first breakdown)" if f.breakdown is None else "headroom  -", style="dim")
    elif h.daemon is None:
        head = Text(f"headroom  {h.free:,} free; no local OSD seen")
    else:
        head = Text(f"headroom  {h.headroom:,} after restarting {h.daemon} ({h.daemon_entries:,} entries "
                    f"→ burst {h.burst:,})", style="bold red" if h.would_overflow else "")
        if h.would_overflow:
            head.append(f"  restarting {h.daemon} now would overflow")
    age = "" if f.breakdown_age is None else f"  breakdown {f.breakdown_age:.0f} s old"
    title = f"ctguard watch  {f.netns}  {time.strftime('%H:%M:%S', time.localtime(f.ts))}  {f.verdict}"
    return Panel(Group(gauge, Text(""), rates, Text(""), tops, Text(""), head),
                 title=title, subtitle=f"counters: {r.source}{age}", border_style=colour)


@click.command(help="A live view of the conntrack table, refreshed every second: fill gauge, insert and drop "
                    "rates, top daemons and states, restart headroom. Works over ssh and in tmux. --once prints "
                    "one frame (exit code = verdict); with --json a JSON document (or JSON lines when live).\n\n"
                    + EXIT_CODES_HELP)
@click.option("--once", is_flag=True, help="Print one frame and exit (rates over --interval).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between frames.")
@click.option("--breakdown-interval", type=click.FloatRange(min=1.0), default=10.0, show_default=True,
              help="Seconds between breakdown dumps (in a child process).")
@click.option("--no-breakdown", is_flag=True, help="No table dumps: fill and rates only.")
@click.option("--top", type=click.IntRange(min=1, max=50), default=5, show_default=True, help="Rows of top lists.")
@click.option("--burst-factor", type=click.FloatRange(min=0.0), default=DEFAULT_BURST_FACTOR, show_default=True)
@click.option("--osd-range", default=None, metavar="LOW-HIGH", help="Ceph OSD port range (default 6800-7568).")
@netns_options
@json_option
@proc_root_option
@handle_errors
def watch(once: bool, interval: float, breakdown_interval: float, no_breakdown: bool, top: int,
          burst_factor: float, osd_range: str | None, netns_name: str | None, netns_pid: int | None,
          as_json: bool, proc_root: str) -> None:
    ns = target_netns(netns_name, netns_pid)
    if osd_range:
        parse_range(osd_range)
    read_now(ns, proc_root)  # fail early with one line
    refresher = None if no_breakdown else Refresher(child_source(ns, osd_range), breakdown_interval)
    model = WatchModel(ns.label, lambda: read_now(ns, proc_root), refresher, burst_factor=burst_factor, top=top)
    if once:
        model.frame()
        if refresher is not None:
            refresher.refresh_once()  # synchronously: one frame should show the breakdown
        time.sleep(interval)
        f = model.frame()
        if as_json:
            doc = f.to_json()
            if refresher is not None and refresher.last_error:
                doc["breakdown_error"] = refresher.last_error
            print_json(doc, 1)
        else:
            Console().print(render(f))
            if refresher is not None and refresher.last_error:
                click.echo(f"ctguard: breakdown unavailable: {refresher.last_error}", err=True)
        sys.exit(int({"OK": Exit.OK, "WARN": Exit.WARN, "CRIT": Exit.CRIT}[f.verdict]))
    if refresher is not None:
        refresher.start()
    with _stop_on_signals() as stop:
        try:
            if as_json:
                while not stop.is_set():
                    emit_event("frame", {"schema": 1, **model.frame().to_json()})
                    stop.wait(interval)
                return
            console = Console()
            if not console.is_terminal:  # piped or redirected: one frame after another, no cursor games
                while True:
                    console.print(render(model.frame()))
                    if stop.wait(interval):
                        return
            with Live(render(model.frame()), console=console, refresh_per_second=4, auto_refresh=False,
                      transient=False) as live:
                while not stop.wait(interval):
                    live.update(render(model.frame()), refresh=True)
        finally:
            if refresher is not None:
                refresher.stop(0.5)


commands = [exporter, guard, watch]
