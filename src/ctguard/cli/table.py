"""`ctguard status` and `ctguard purge`: the table now, and first aid."""

from __future__ import annotations

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
from ctguard.errors import Exit
from ctguard.kernel.nfnetlink import CLOSING_STATES
from ctguard.model.roles import PortRoles, parse_range
from ctguard.model.verdict import Thresholds
from ctguard.table import purge as _purge
from ctguard.table import status as _status
from ctguard.table.sample import DEFAULT_STATE_DIR

_COLOR = {"OK": "green", "WARN": "yellow", "CRIT": "bold red"}


def roles_option(f: Any) -> Any:
    f = click.option("--osd-ports", default="6800-7568", show_default=True, metavar="LOW-HIGH",
                     help="Ceph OSD/MGR/MDS port range (ms_bind_port_min-max).")(f)
    f = click.option("--mon-ports", default="3300,6789", show_default=True, metavar="P,P",
                     help="Ceph monitor ports.")(f)
    return f


def make_roles(mon_ports: str, osd_ports: str) -> PortRoles:
    from ctguard.errors import BadInput

    try:
        mons = tuple(int(p) for p in mon_ports.split(",") if p.strip())
    except ValueError as e:
        raise BadInput(f"bad --mon-ports {mon_ports!r}") from e
    return PortRoles(mon_ports=mons, osd_range=parse_range(osd_ports))


def _render_status(st: _status.TableStatus) -> None:
    # rich is imported only for people: `--json` runs (monitoring, every minute) skip its import cost.
    from rich.console import Console
    from rich.table import Table

    con = Console()
    color = _COLOR.get(st.verdict, "white")
    con.print(f"[{color}]{st.verdict}[/] conntrack in [bold]{st.netns}[/]: {st.count:,} / {st.max:,} entries "
              f"({st.fill:.1%} full), {max(0, st.max - st.count):,} free")
    for r in st.reasons:
        con.print(f"  [{color}]•[/] {r}")
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="dim")
    t.add_column()
    t.add_row("buckets", f"{st.buckets}" + (f" (hashsize {st.hashsize})" if st.hashsize else ""))
    drops = f"{st.stats.get('drop', 0):,}"
    if st.drop_delta is not None:
        drops += f" (+{st.drop_delta} in {st.since_s:.0f} s)" if st.since_s is not None else ""
    t.add_row("drop", drops)
    t.add_row("early_drop", f"{st.stats.get('early_drop', 0):,}")
    t.add_row("insert_failed / invalid", f"{st.stats.get('insert_failed', 0):,} / {st.stats.get('invalid', 0):,}")
    tw = st.timeouts.get("tcp_timeout_time_wait")
    est = st.timeouts.get("tcp_timeout_established")
    t.add_row("timeouts", f"time_wait {tw} s, established {est} s, udp {st.timeouts.get('udp_timeout')} s")
    con.print(t)
    if st.breakdown is not None:
        b = st.breakdown.breakdown
        bt = Table(title=f"Breakdown ({b.total:,} entries, {b.assured:,} assured, dump {st.breakdown.seconds:.2f} s, "
                   f"{st.breakdown.expired_freed} expired freed)", title_justify="left")
        bt.add_column("by state")
        bt.add_column("entries", justify="right")
        bt.add_column("by role")
        bt.add_column("entries", justify="right")
        bt.add_column("by daemon")
        bt.add_column("entries", justify="right")
        states = list(b.by_state.items())
        roles = [(k, v) for k, v in b.by_role.items()] + [(f"proto {k}", v) for k, v in b.by_proto.items()]
        daemons = [(f"{d.name} [{d.pid}]", d.entries) for d in b.by_daemon[:12]]
        if b.unattributed:
            daemons.append(("(no local socket)", b.unattributed))
        for i in range(max(len(states), len(roles), len(daemons))):
            row: list[str] = []
            for col in (states, roles, daemons):
                row += [col[i][0], f"{col[i][1]:,}"] if i < len(col) else ["", ""]
            bt.add_row(*row)
        con.print(bt)
        if b.top_peers:
            con.print("top peers: " + ", ".join(f"{p.address} ({p.entries:,})" for p in b.top_peers[:5]))
        if b.inventory is not None:
            inv = b.inventory
            con.print(f"connections by role: OSD->OSD out {inv.osd_out:,}, in {inv.osd_in:,}, local {inv.local:,}, "
                      f"client {inv.client:,}, mon/mgr {inv.mon_mgr:,}, not Ceph {inv.other:,}, "
                      f"closing {inv.transient:,} (what `simulate`/`plan --from-cluster` take)")
    for n in st.notes:
        con.print(f"[dim]note: {n}[/]")


@click.command(help="Show the conntrack table of this host or of a namespace, with a verdict: CRIT when "
               "drops rose since the last sample or the table is >= 95 % full, WARN at >= 75 % or when a "
               "whole-host restart of the local Ceph daemons would not fit.\n\n" + EXIT_CODES_HELP)
@netns_options
@click.option("--breakdown", is_flag=True, help="Dump the table: entries by state, protocol, role, daemon, peer.")
@click.option("--window", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="Compare drops over this window instead of with the previous run's sample.")
@click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True,
              help="Where the previous sample is kept.")
@click.option("--warn", "warn_fill", type=click.FloatRange(0, 1), default=0.75, show_default=True,
              help="Fill ratio for WARN.")
@click.option("--crit", "crit_fill", type=click.FloatRange(0, 1), default=0.95, show_default=True,
              help="Fill ratio for CRIT.")
@roles_option
@json_option
@proc_root_option
@handle_errors
def status(netns_name: str | None, netns_pid: int | None, breakdown: bool, window: float, state_dir: str,
           warn_fill: float, crit_fill: float, mon_ports: str, osd_ports: str, as_json: bool,
           proc_root: str) -> None:
    ns = target_netns(netns_name, netns_pid)
    st = _status.table_status(
        ns, breakdown=breakdown, roles=make_roles(mon_ports, osd_ports), inventory=breakdown, state_dir=state_dir,
        proc_root=proc_root, window=window, thresholds=Thresholds(warn_fill=warn_fill, crit_fill=crit_fill))
    if as_json:
        print_json(st.to_json(), _status.SCHEMA)
    else:
        _render_status(st)
    sys.exit(int({"OK": Exit.OK, "WARN": Exit.WARN, "CRIT": Exit.CRIT}[st.verdict]))


@click.command(help="End an overflow now: delete the TCP entries in closing states (what the kernel's GC "
               "would early-drop at its next pass, up to a minute later). ESTABLISHED entries are never "
               "touched unless named in --states.\n\n"
               "Exit codes: 0 done, 2 some deletes failed, 3 cannot read or bad input, 130 interrupted.")
@netns_options
@click.option("--states", default=",".join(CLOSING_STATES), show_default=True,
              help="Comma-separated TCP states to delete ('closing' = all closing states).")
@click.option("--ports", type=click.Choice(_purge.PORTS), default="all", show_default=True,
              help="Every port, like the kernel's GC, or only Ceph's.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@roles_option
@json_option
@handle_errors
def purge(netns_name: str | None, netns_pid: int | None, states: str, ports: str, dry_run: bool,
          mon_ports: str, osd_ports: str, as_json: bool) -> None:
    ns = target_netns(netns_name, netns_pid)
    r = _purge.purge(ns, states=_purge.parse_states(states), ports=ports, roles=make_roles(mon_ports, osd_ports),
                     dry_run=dry_run)
    if as_json:
        print_json(r.to_json(), _purge.SCHEMA)
    else:
        verb = "would delete" if dry_run else "deleted"
        n = r.matched if dry_run else r.deleted
        click.echo(f"{r.netns}: {verb} {n:,} entries in {r.seconds:.2f} s "
                   f"({', '.join(f'{k} {v:,}' for k, v in r.by_state.items()) or 'none matched'}); "
                   f"count {r.count_before:,} -> {r.count_after:,}, {r.expired_freed:,} expired entries freed by the dump")
        if r.by_role:
            click.echo("  by role: " + ", ".join(f"{k} {v:,}" for k, v in r.by_role.items()))
        if r.missing:
            click.echo(f"  {r.missing} were already gone")
    if r.failed:
        sys.exit(int(Exit.CRIT))


commands = [status, purge]
