"""`ctguard simulate` and `ctguard plan`: predict a restart storm, and size conntrack from the workload."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from typing import Any

import click

from ctguard.cli.common import (
    EXIT_CODES_HELP,
    handle_errors,
    json_option,
    netns_options,
    print_json,
    proc_root_option,
    target_netns,
)
from ctguard.errors import BadInput, CannotRead, CommandFailed, CtguardError, Exit
from ctguard.model import whatif
from ctguard.model.ceph import RestartBehaviour
from ctguard.model.inventory import Inventory
from ctguard.model.plan import Current, make_plan, slab_entry_bytes
from ctguard.model.scenario import ClusterSpec, Scenario, load
from ctguard.model.simulate import STRATEGIES
from ctguard.model.table import TableConfig, Timeouts
from ctguard.output import emit_event
from ctguard.runner import run

SCHEMA = 1
CEPH_TIMEOUT = 15.0


def _ceph_json(args: list[str], conf: str | None) -> Any:
    argv = ["ceph", *(["-c", conf] if conf else []), "--connect-timeout", "10", *args, "-f", "json"]
    done = run(argv, timeout=CEPH_TIMEOUT)
    if not done.ok:
        raise CommandFailed(f"ceph {' '.join(args)}: {done.first_error_line()}", Exit.UNKNOWN)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as e:
        raise CannotRead(f"ceph {' '.join(args)}: output is not JSON") from e


def cluster_from_ceph(dump: Any, tree: Any, hostname: str | None = None) -> tuple[ClusterSpec, int | None]:
    """Hosts, OSDs per host and PGs per OSD from `ceph osd dump` and `ceph osd tree` (-f json).
    Returns the spec and the OSD count of `hostname` when the tree has that host."""
    try:
        nodes = tree["nodes"]
        hosts = [n for n in nodes if n.get("type") == "host"]
        osds = [o for o in dump["osds"]]
        pools = dump.get("pools", [])
    except (KeyError, TypeError) as e:
        raise CannotRead("ceph osd dump/tree: unexpected JSON shape") from e
    if not hosts or not osds:
        raise CannotRead("ceph osd tree: no host with OSDs")
    per_host = [len([c for c in h.get("children", []) if c >= 0]) for h in hosts]
    mine = next((len([c for c in h.get("children", []) if c >= 0]) for h in hosts
                 if hostname is not None and h.get("name") == hostname), None)
    replicas = sum(int(p.get("pg_num", 0)) * int(p.get("size", 1)) for p in pools)
    pgs_per_osd = max(1.0, replicas / max(1, len(osds)))
    size = max((int(p.get("size", 1)) for p in pools), default=3)
    spec = ClusterSpec(hosts=len(hosts), osds_per_host=max(1, round(sum(per_host) / len(hosts))),
                       pgs_per_osd=pgs_per_osd, pool_size=size)
    return spec, mine


def client_ops(conf: str | None) -> float | None:
    """The clients' ops/s now (`ceph -s` pgmap read_op_per_sec + write_op_per_sec; absent keys: idle).
    How busy the client sessions are decides whether a restart can start the reconnect loop; None (cannot
    tell) keeps the model's worst case (every session busy)."""
    try:
        st = _ceph_json(["-s"], conf)
        pgmap = st.get("pgmap") or {}
        return float(pgmap.get("read_op_per_sec", 0) or 0) + float(pgmap.get("write_op_per_sec", 0) or 0)
    except (CtguardError, AttributeError, TypeError, ValueError):
        return None


def _strategy_opts(f: Any) -> Any:
    for opt in reversed([
        click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
                     help="How the host's OSDs are restarted (default all-at-once)."),
        click.option("--gap", type=click.FloatRange(min=0), default=None, metavar="S",
                     help="Seconds between steps (stagger, batch; minimum for adaptive). Default 10."),
        click.option("--batch", type=click.IntRange(min=0), default=None, metavar="N",
                     help="OSDs per step (batch; upper bound for adaptive)."),
    ]):
        f = opt(f)
    return f


def _cluster_opts(f: Any) -> Any:
    for opt in reversed([
        click.option("--scenario", "scenario_file", type=click.Path(dir_okay=False), default=None,
                     help="A YAML/JSON scenario file (flags given as well override it)."),
        click.option("--from-cluster", is_flag=True,
                     help="Read the topology from `ceph osd dump/tree` and the table from this host."),
        click.option("--ceph-conf", default=None, metavar="FILE", help="ceph.conf for --from-cluster."),
        click.option("--hosts", type=click.IntRange(min=1), default=None),
        click.option("--osds-per-host", type=click.IntRange(min=1), default=None),
        click.option("--conn-per-host", type=click.FloatRange(min=1), default=None,
                     help="Measured conntrack entries per host in steady state."),
        click.option("--clients-per-osd", type=click.FloatRange(min=0), default=None),
        click.option("--pgs-per-osd", type=click.FloatRange(min=1), default=None,
                     help="PG replicas per OSD (pg_num x size / OSDs); or give --pg-num."),
        click.option("--pg-num", type=click.IntRange(min=1), default=None, metavar="N",
                     help="PGs of the pool (sets the PG replicas per OSD with --pool-size/--ec)."),
        click.option("--pool-size", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Replicas per PG (default 3)."),
        click.option("--ec", default=None, metavar="K+M",
                     help="Erasure-coded pool: counts as size K+M (e.g. 4+2)."),
        click.option("--clients", type=click.IntRange(min=0), default=None, metavar="N",
                     help="Client instances (librados, RBD, ...); sessions from the fitted formula."),
        click.option("--client-rate", type=click.FloatRange(min=0), default=None, metavar="OPS",
                     help="Ops/s of each client: how busy their sessions are when an OSD restarts."),
        click.option("--inventory", "inventory_file", type=click.Path(dir_okay=False), default=None,
                     metavar="FILE", help="The host's measured entries by role: `ctguard status --breakdown "
                     "--json` output, or a JSON object {osd_out, osd_in, local, client, mon_mgr, other}."),
        click.option("--max", "max_entries", type=click.IntRange(min=1), default=None,
                     help="nf_conntrack_max (default 262144)."),
        click.option("--buckets", type=click.IntRange(min=1), default=None),
        click.option("--time-wait", type=click.IntRange(min=1), default=None, metavar="S",
                     help="nf_conntrack_tcp_timeout_time_wait (default 120)."),
        click.option("--close", "close_timeout", type=click.IntRange(min=1), default=None, metavar="S"),
        click.option("--client-active", type=click.FloatRange(0, 1), default=None,
                     help="Share of clients with I/O in flight (they re-open at once on a fault)."),
        click.option("--other-entries", type=click.FloatRange(min=0), default=None, metavar="N",
                     help="ASSURED entries of other services on the host (they hold slots throughout)."),
        click.option("--dump-every", type=click.FloatRange(min=0.1), default=None, metavar="S",
                     help="A table dump every S seconds frees expired entries (monitoring agents)."),
    ]):
        f = opt(f)
    return _strategy_opts(f)


def read_inventory(path: str) -> Inventory:
    """A measured inventory: `status --breakdown --json` (its breakdown.inventory) or the bare object."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError as e:
        raise BadInput(f"{path}: no such file") from e
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror})") from e
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from e
    if isinstance(doc, dict) and ("schema" in doc or "breakdown" in doc):
        # a `status --json` document: its breakdown's inventory (only with --breakdown)
        doc = (doc.get("breakdown") or {}).get("inventory") if isinstance(doc.get("breakdown") or {}, dict) else None
    if not isinstance(doc, dict):
        raise BadInput(f"{path}: no inventory (expected status --breakdown --json or a role -> entries object)")
    try:
        return Inventory.from_mapping(doc)
    except BadInput as e:
        raise BadInput(f"{path}: {e.message}") from e


def build_scenario(params: dict[str, Any], proc_root: str, ns_name: str | None, ns_pid: int | None,
                   want_current: bool = False) -> tuple[Scenario, Current]:
    sc = load(params["scenario_file"]) if params.get("scenario_file") else Scenario(
        cluster=ClusterSpec(conn_per_host=5500), table=TableConfig(max=262144))
    cluster, table, strat, beh = sc.cluster, sc.table, sc.strategy, sc.behaviour
    current = Current(cores=os.cpu_count() or 1)
    if params.get("from_cluster") or want_current:
        from ctguard.kernel.settings import conntrack_settings

        ns = target_netns(ns_name, ns_pid)
        s = conntrack_settings(ns, proc_root)
        ceph_entries = None
        inventory: Inventory | None = None
        if proc_root == "/proc":
            # who holds the entries: one netlink dump (root); the counts alone suffice without it
            from ctguard.table.status import table_status

            try:
                st = table_status(ns, breakdown=True, inventory=True, state_dir=None, proc_root=proc_root)
            except CtguardError:
                st = None
            if st is not None and st.breakdown is not None:
                ceph_entries = st.breakdown.breakdown.ceph_daemon_entries or None
                inventory = st.breakdown.breakdown.inventory
                if inventory is not None and inventory.ceph_open == 0:
                    inventory = None  # Ceph not tracked here (or not running): nothing measured to use
        eb = None
        try:
            with open(os.path.join(proc_root, "slabinfo"), encoding="ascii", errors="replace") as f:
                eb = slab_entry_bytes(f.read())
        except OSError:
            eb = None
        not_ceph = None
        if inventory is not None:
            not_ceph = inventory.other
        elif ceph_entries:
            not_ceph = max(0, s.count - ceph_entries)
        current = Current(max=s.max, buckets=s.buckets or s.hashsize, count=s.count, timeouts=s.timeouts,
                          cores=os.cpu_count() or 1, entry_bytes=eb, ceph_entries=ceph_entries,
                          other_entries=not_ceph)
        table = dataclasses.replace(table, max=s.max, buckets=s.buckets, timeouts=Timeouts.from_sysctl(s.timeouts))
        if params.get("from_cluster"):
            dump = _ceph_json(["osd", "dump"], params.get("ceph_conf"))
            tree = _ceph_json(["osd", "tree"], params.get("ceph_conf"))
            spec, mine = cluster_from_ceph(dump, tree, socket.gethostname())
            cluster = dataclasses.replace(spec, osds_per_host=mine or spec.osds_per_host,
                                          conn_per_host=None, clients_per_osd=None,
                                          client_ops=client_ops(params.get("ceph_conf")))
        measured_flags = any(params.get(k) is not None for k in ("conn_per_host", "clients_per_osd", "clients",
                                                                 "inventory_file"))
        if (params.get("from_cluster") or not params.get("scenario_file")) and not measured_flags:
            # the measured workload is this host's reading: by role when the dump could be read, else
            # its Ceph share (or its whole count) as entries per host
            if inventory is not None:
                sc = dataclasses.replace(sc, inventory=inventory, other_entries=float(inventory.held))
            else:
                measured = float(ceph_entries or s.count)
                if measured < 1:
                    raise BadInput("this host's table holds 0 entries: nothing measured (is Ceph tracked here?); "
                                   "give --conn-per-host, --clients or --inventory")
                cluster = dataclasses.replace(cluster, conn_per_host=measured, clients_per_osd=None)
                if ceph_entries:
                    sc = dataclasses.replace(sc, other_entries=float(max(0, s.count - ceph_entries)))
    if params.get("pg_num") is not None and params.get("pgs_per_osd") is not None:
        raise BadInput("give --pg-num or --pgs-per-osd, not both")
    over_c: dict[str, Any] = {}
    for key in ("hosts", "osds_per_host", "conn_per_host", "clients_per_osd", "pgs_per_osd", "pg_num",
                "pool_size", "ec", "clients", "client_rate"):
        if params.get(key) is not None:
            over_c[key] = params[key]
    if "pgs_per_osd" in over_c:
        over_c["pg_num"] = None
    if "conn_per_host" in over_c:
        over_c.setdefault("clients_per_osd", None)
        over_c.setdefault("clients", None)
    if over_c.get("clients_per_osd") is not None or over_c.get("clients") is not None:
        over_c["conn_per_host"] = None
    cluster = dataclasses.replace(cluster, **over_c)
    if cluster.ec is not None:
        from ctguard.model.ceph import pool_width

        pool_width(None, cluster.ec)  # bad K+M: one line, exit 3
    if params.get("inventory_file"):
        inv = read_inventory(params["inventory_file"])
        sc = dataclasses.replace(sc, inventory=inv, other_entries=float(inv.held))
    if sc.inventory is not None and any(params.get(k) is not None for k in ("conn_per_host", "clients_per_osd",
                                                                            "clients")):
        raise BadInput("a measured inventory gives the host's entries: drop --conn-per-host/--clients*")
    if params.get("max_entries") is not None:
        table = dataclasses.replace(table, max=params["max_entries"])
    if params.get("buckets") is not None:
        table = dataclasses.replace(table, buckets=params["buckets"])
    if params.get("dump_every") is not None:
        table = dataclasses.replace(table, dump_every_s=params["dump_every"])
    tmo = {}
    if params.get("time_wait") is not None:
        tmo["time_wait"] = params["time_wait"]
    if params.get("close_timeout") is not None:
        tmo["close"] = params["close_timeout"]
    if tmo:
        table = dataclasses.replace(table, timeouts=dataclasses.replace(table.timeouts, **tmo))
    over_s: dict[str, Any] = {}
    if params.get("strategy"):
        over_s["name"] = params["strategy"]
    if params.get("gap") is not None:
        over_s["gap_s"] = params["gap"]
    if params.get("batch") is not None:
        over_s["batch"] = params["batch"]
    strat = dataclasses.replace(strat, **over_s)
    if params.get("client_active") is not None:
        beh = dataclasses.replace(beh, client_active_fraction=params["client_active"])
    if params.get("other_entries") is not None:
        sc = dataclasses.replace(sc, other_entries=params["other_entries"])
    sc = dataclasses.replace(sc, cluster=cluster, table=table, strategy=strat,
                             behaviour=beh if isinstance(beh, RestartBehaviour) else RestartBehaviour())
    return sc.validate(), current


def text_chart(series: list[tuple[float, float]], max_entries: int, width: int = 60, height: int = 10) -> str:
    """A plain-text chart of the count over time, with the limit as a row of '='."""
    if not series:
        return ""
    t_end = max(t for t, _ in series) or 1.0
    top = max(max_entries, max(c for _, c in series)) * 1.05
    cols = [0.0] * width
    for t, c in series:
        i = min(width - 1, int(t / t_end * (width - 1)))
        cols[i] = max(cols[i], c)
    for i in range(1, width):  # carry the level forward over empty columns
        if cols[i] == 0.0:
            cols[i] = cols[i - 1]
    limit_row = min(height - 1, int(max_entries / top * height))
    rows = []
    for r in range(height - 1, -1, -1):
        line = "".join("#" if cols[i] / top * height > r else ("=" if r == limit_row else " ")
                       for i in range(width))
        label = f"{top * (r + 1) / height:>9,.0f} |"
        rows.append(label + line)
    rows.append(" " * 10 + "+" + "-" * width)
    rows.append(" " * 11 + f"0 s{' ' * (width - 12)}{t_end:>8.0f} s   (= nf_conntrack_max {max_entries:,})")
    return "\n".join(rows)


def write_plot(path: str, res: whatif.WhatIf) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = res.headline
    t = [row[0] for row in h.series]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(t, [row[1] for row in h.series], label="count", color="black")
    ax.plot(t, [row[2] for row in h.series], label="established", alpha=0.7)
    ax.plot(t, [row[3] for row in h.series], label="TIME_WAIT/CLOSE", alpha=0.7)
    ax.plot(t, [row[4] for row in h.series], label="unassured", alpha=0.7)
    ax.axhline(h.max, color="red", linestyle="--", label="nf_conntrack_max")
    ax.set_xlabel("seconds after the first kill")
    ax.set_ylabel("conntrack entries")
    ax.set_title(f"{res.scenario.strategy.label()}: peak {h.peak_entries:,.0f}, verdict {res.verdict}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise BadInput(f"{path}: cannot write the plot ({e.strerror})") from e
    finally:
        plt.close(fig)


@click.command(help="Predict what restarting a host's OSDs does to its conntrack table: peak entries, "
               "seconds over the limit, drops, recovery, OSDs marked down, and a verdict. The GC worker's "
               "phase is swept, so overflow durations come as a distribution. Without flags: the 2014 "
               "incident's host (6 hosts x 8 OSDs, 5,500 entries) on today's default table (262,144). "
               "See docs/simulate.md.\n\n" + EXIT_CODES_HELP
               + " Here: 0 the table holds, 1 close to the limit (or overflows in some GC phases), "
               "2 it overflows.")
@_cluster_opts
@click.option("--gc-phases", type=click.IntRange(1, 64), default=None, help="GC phases to sweep (default 6).")
@click.option("--purge-after", type=click.FloatRange(min=0), default=None, metavar="S",
              help="What-if: `ctguard purge` S seconds after the first drop, again at later drops "
                   "(at most once a second).")
@click.option("--rolling", is_flag=True, help="Every host, one after the other (fleet what-if).")
@click.option("--plot", "plot_file", default=None, metavar="FILE", help="Write a PNG time series.")
@click.option("--chart/--no-chart", default=True, help="Terminal chart (human output).")
@netns_options
@json_option
@proc_root_option
@handle_errors
def simulate(netns_name: str | None, netns_pid: int | None, as_json: bool, proc_root: str,
             gc_phases: int | None, purge_after: float | None, rolling: bool, plot_file: str | None,
             chart: bool, **params: Any) -> None:
    sc, _ = build_scenario(params, proc_root, netns_name, netns_pid)
    if gc_phases is not None:
        sc = dataclasses.replace(sc, gc_phases=gc_phases)
    if purge_after is not None:
        sc = dataclasses.replace(sc, purge_after_s=purge_after)
    if rolling:
        def progress(done: int, total: int) -> None:
            if done % max(1, total // 10) and done != total:
                return
            if as_json:  # machines: one JSON object per line on stderr, stdout stays the document
                emit_event("simulate.progress", {"hosts_done": done, "hosts": total}, sys.stderr)
            else:
                click.echo(f"  {done}/{total} hosts", err=True)

        fleet = whatif.run_fleet(sc, progress)
        doc = fleet.to_json()
        if as_json:
            print_json(doc, SCHEMA)
        else:
            click.echo(f"Rolling restart of {fleet.hosts} hosts ({fleet.osds} OSDs), "
                       f"{sc.strategy.label()} per host: {doc['verdict']}")
            click.echo(f"  worst peak {fleet.worst_peak:,.0f} / {fleet.max:,} (host #{fleet.worst_peak_host}), "
                       f"{fleet.overflowing_hosts} host(s) overflow, {fleet.drops:,.0f} drops, "
                       f"{fleet.marked_down} OSD(s) marked down, ~{fleet.duration_s / 3600:.1f} h in all")
        raise SystemExit({"OK": 0, "WARN": 1, "CRIT": 2}[doc["verdict"]])
    res = whatif.run(sc, record=bool(plot_file or (chart and not as_json)))
    if plot_file:
        write_plot(plot_file, res)
    doc = res.to_json()
    if as_json:
        print_json(doc, SCHEMA)
    else:
        h = res.headline
        dist = doc["overflow_duration"]
        click.echo(f"{sc.strategy.label()} on a host of {sc.conns().osds} OSDs, "
                   f"{h.baseline:,.0f} entries, nf_conntrack_max {h.max:,}: {res.verdict}")
        click.echo(f"  peak entries     {h.peak_entries:,.0f} ({doc['peak_ratio']:.2f}x baseline) "
                   f"at {h.peak_t:.0f} s")
        click.echo(f"  over the limit   {h.over_limit_s:.0f} s (GC phases: min {dist['min_s']} s, median "
                   f"{dist['median_s']} s, max {dist['max_s']} s; {dist['overflowing']}/{dist['phases']} overflow)")
        click.echo(f"  drops            {h.drops:,.0f}")
        click.echo(f"  recovery         {h.recovery_s:.0f} s (table back at baseline after "
                   f"{'-' if h.settle_s is None else f'{h.settle_s:.0f}'} s)")
        click.echo(f"  OSDs marked down {len(h.marked_down)} for good, {len(h.flapped)} wrongly and back "
                   f"({h.markdowns} mark-downs in all)")
        for r in res.reasons():
            click.echo(f"  - {r}")
        if chart:
            click.echo(text_chart([(row[0], row[1]) for row in h.series], h.max))
        if plot_file:
            click.echo(f"plot written to {plot_file}")
    raise SystemExit({"OK": 0, "WARN": 1, "CRIT": 2}[res.verdict])


@click.command(help="Recommend nf_conntrack_max, hashsize and timeouts from this host's workload and the "
               "worst burst of the restart strategy, with the memory cost, kube-proxy's formula for "
               "comparison, and whether untracking the Ceph ports is the better answer. Prints the files; "
               "writes them only with --write DIR. Never applies a setting.\n\n" + EXIT_CODES_HELP
               + " Here: 0 the current table holds the burst, 1 it does not (or unknown), 3 bad input.")
@_cluster_opts
@click.option("--safety", type=click.FloatRange(min=1.0), default=2.0, show_default=True)
@click.option("--host", "read_host", is_flag=True, help="Read the current settings of this host.")
@click.option("--allow-lower", is_flag=True,
              help="Recommend a nf_conntrack_max or hash size below the current one (never by default).")
@click.option("--write", "write_dir", default=None, metavar="DIR",
              help="Write sysctl.d/ and modprobe.d/ files under DIR (e.g. / or a staging dir).")
@netns_options
@json_option
@proc_root_option
@handle_errors
def plan(netns_name: str | None, netns_pid: int | None, as_json: bool, proc_root: str, safety: float,
         read_host: bool, allow_lower: bool, write_dir: str | None, **params: Any) -> None:
    sc, current = build_scenario(params, proc_root, netns_name, netns_pid, want_current=read_host)
    if current.max is None and params.get("max_entries") is not None:
        current = dataclasses.replace(current, max=params["max_entries"])
    p = make_plan(sc, current, safety, allow_lower=allow_lower)
    written: list[str] = []
    if write_dir is not None:
        for rel, text in (("etc/sysctl.d/90-ctguard-conntrack.conf", p.sysctl_conf()),
                          ("etc/modprobe.d/ctguard-conntrack.conf", p.modprobe_conf())):
            path = os.path.join(write_dir, rel)
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = path + ".ctguard-tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)
                os.replace(tmp, path)  # atomic: never a half-written file
            except OSError as e:
                raise BadInput(f"{path}: cannot write ({e.strerror})") from e
            written.append(path)
    doc = p.to_json()
    doc["written"] = written
    if as_json:
        print_json(doc, SCHEMA)
    else:
        click.echo(f"Plan for {sc.strategy.label()}: baseline {p.baseline:,.0f}, peak {p.peak_entries:,.0f} "
                   f"entries, safety x{safety:g}")
        for i in p.items:
            cur = "?" if i.current is None else f"{i.current:,}"
            click.echo(f"  {i.name} = {i.value:,} (now {cur})\n      {i.reason}")
        if p.other_entries > 0:
            click.echo(f"  counted: {p.other_entries:,.0f} entries that are not Ceph's (measured; held through "
                       "the restart)")
        for i in p.left_alone:
            cur = "?" if i.current is None else f"{i.current:,}"
            click.echo(f"  left alone: {i.name} = {cur} (would be {i.value:,})\n      {i.reason}")
        click.echo(f"  memory: {p.memory_bytes / 2**20:,.1f} MiB at {p.entry_bytes} B per entry "
                   f"({p.entry_bytes_source}) + 8 B per bucket")
        click.echo(f"  kube-proxy would set {p.kube_proxy_max:,} (max(131072, 32768 x {current.cores} cores))")
        click.echo(f"  untrack the Ceph ports instead: {'yes' if p.untrack_better else 'not needed'}: "
                   f"{p.untrack_reason}")
        if written:
            click.echo("written: " + ", ".join(written))
        else:
            click.echo("\n# /etc/sysctl.d/90-ctguard-conntrack.conf\n" + p.sysctl_conf())
            click.echo("# /etc/modprobe.d/ctguard-conntrack.conf\n" + p.modprobe_conf())
    raise SystemExit(0 if p.current_overflow is False else 1)


commands = [simulate, plan]
