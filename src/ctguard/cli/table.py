"""`ctguard status` and `ctguard purge`: the table now, and first aid."""

from __future__ import annotations

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
from ctguard.kernel.settings import conntrack_settings
from ctguard.kernel.stats import conntrack_stats


@click.command(help="Show the conntrack table of this host or of a namespace.\n\n" + EXIT_CODES_HELP)
@netns_options
@json_option
@proc_root_option
@handle_errors
def status(netns_name: str | None, netns_pid: int | None, as_json: bool, proc_root: str) -> None:
    ns = target_netns(netns_name, netns_pid)
    s = conntrack_settings(ns, proc_root)
    st = conntrack_stats(ns, proc_root)
    doc = {"netns": ns.label, "count": s.count, "max": s.max, "buckets": s.buckets, "fill": s.fill,
           "stats": st.counters, "timeouts": s.timeouts}
    if as_json:
        print_json(doc, 1)
    else:
        click.echo(f"{ns.label}: {s.count}/{s.max} ({s.fill:.1%}) drop={st.get('drop')}")


commands = [status]
