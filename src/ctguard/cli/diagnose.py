"""`ctguard diagnose`: rebuild a conntrack incident from kernel and Ceph logs and name its cause."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from ctguard.cli.common import EXIT_CODES_HELP, handle_errors, json_option, print_json
from ctguard.errors import BadInput, CannotRead, Exit
from ctguard.output import emit_event

_COLOR = {"OK": "green", "WARN": "yellow", "CRIT": "bold red"}


def _boot_time(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise BadInput(f"bad --boot-time {value!r}: use RFC 3339, e.g. 2026-11-26T06:00:00Z") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class _Progress:
    """Progress on stderr: a rich bar for people, JSON lines (--progress with --json) for machines."""

    def __init__(self, as_json: bool, enabled: bool) -> None:
        self.as_json = as_json
        self.enabled = enabled
        self.last = 0.0
        self.console = Console(stderr=True)

    def __call__(self, source: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.5:
            return
        self.last = now
        if self.as_json:
            emit_event("progress", {"source": source, "bytes": done, "total": total or None}, stream=sys.stderr)
        else:
            pct = f" {100 * done / total:.0f}%" if total else ""
            self.console.print(f"[dim]reading {escape(source)}: {done / 1e6:.0f} MB{pct}[/]", highlight=False)


def _render(doc: dict[str, Any]) -> None:
    from ctguard.diagnose import report as _report

    con = Console()
    color = _COLOR.get(doc["verdict"], "white")
    for n, line in enumerate(_report.text(doc).splitlines()):
        if n == 0:
            con.print(f"[{color}]{doc['verdict']}[/] {escape(line)}", highlight=False, soft_wrap=True)
        elif line.startswith("  Cause"):
            con.print(f"[bold]{escape(line)}[/]", highlight=False, soft_wrap=True)
        elif line.startswith("      "):
            con.print(f"[dim]{escape(line)}[/]", highlight=False, soft_wrap=True)
        else:
            con.print(escape(line), highlight=False, soft_wrap=True)


@click.command(help="Rebuild conntrack incidents from kernel and Ceph logs, and name the cause with the evidence "
               "lines behind each claim.\n\n"
               "INPUTS are files, directories (read recursively), .gz/.xz/.bz2 archives, or - for stdin; several "
               "hosts at once, in any order. A file whose lines do not name their host (Ceph daemon logs) takes it "
               "from its name (HOST-ceph-osd.3.log, HOST.kern.log, kern.log.HOST, sosreport-HOST-...) or from "
               "HOST=PATH. Kernel logs: kern.log/syslog, dmesg (raw, -T, --time-format=iso), "
               "journalctl -k (short, short-iso) and journalctl -o json. Ceph: OSD logs (SimpleMessenger and "
               "AsyncMessenger v1/v2), mon logs and the cluster log.\n\n"
               "Exit 2 (CRIT) when a conntrack overflow incident is found, 1 (WARN) for OSD trouble without "
               "conntrack evidence, 0 when there is no incident, 3 when no input could be read.\n\n"
               + EXIT_CODES_HELP)
@click.argument("inputs", nargs=-1, metavar="INPUTS...")
@json_option
@click.option("--html", "html_path", type=click.Path(dir_okay=False, writable=True), default=None,
              metavar="FILE", help="Also write a self-contained HTML report with a timeline plot.")
@click.option("--year", type=click.IntRange(1970, 2200), default=None,
              help="Year of syslog lines (which have none). Default: this year, or last year for dates ahead.")
@click.option("--tz", default="UTC", show_default=True, metavar="ZONE",
              help="Zone of timestamps without one (syslog, dmesg -T, Ceph before Octopus): UTC, local, +HH:MM "
                   "or a name like Europe/Berlin.")
@click.option("--boot-time", default=None, metavar="RFC3339",
              help="When the host booted, to place raw dmesg lines ([secs.usecs]) on the wall clock.")
@click.option("--gap", type=click.FloatRange(min=1), default=120.0, show_default=True, metavar="SECONDS",
              help="Trouble lines closer than this belong to one incident.")
@click.option("--drop-gap", type=click.FloatRange(min=1), default=30.0, show_default=True, metavar="SECONDS",
              help="Drop-free seconds that end one overflow: the next drop starts another incident.")
@click.option("--lookback", type=click.FloatRange(min=0), default=600.0, show_default=True, metavar="SECONDS",
              help="How far before the first drop to look for the restarts that started it.")
@click.option("--storm", "storm_per_s", type=click.IntRange(min=1), default=20, show_default=True,
              metavar="N", help="Lossy faults per second that make a reconnect storm on their own.")
@click.option("--workers", type=click.IntRange(1, 64), default=None, metavar="N",
              help="Processes reading one big plain file (default: the CPUs, at most 4).")
@click.option("--progress", is_flag=True, help="With --json: progress as JSON lines on stderr.")
@handle_errors
def diagnose(inputs: tuple[str, ...], as_json: bool, html_path: str | None, year: int | None, tz: str,
             boot_time: str | None, gap: float, drop_gap: float, lookback: float, storm_per_s: int,
             workers: int | None,
             progress: bool) -> None:
    # imported here, not at module level: every ctguard command registers this module at start-up
    from ctguard.diagnose import correlate as _correlate
    from ctguard.diagnose import report as _report
    from ctguard.diagnose.clock import Clock, parse_tz
    from ctguard.diagnose.lines import SourceCtx
    from ctguard.diagnose.scan import ScanResult, parse_spec, scan

    if not inputs:
        if sys.stdin.isatty():
            raise BadInput("give log files or directories, or - to read stdin")
        inputs = ("-",)
    clock = Clock(year=year, tz=parse_tz(tz))
    boot = _boot_time(boot_time)
    specs = [parse_spec(a) for a in inputs]
    for s in specs:
        if s.path != "-" and not os.path.exists(s.path):
            raise CannotRead(f"{s.path}: no such file or directory")

    def make_ctx(path: str, host: str, daemon: str) -> SourceCtx:
        return SourceCtx(source=path, host=host, daemon=daemon, clock=clock, boot_time=boot)

    show = progress if as_json else sys.stderr.isatty()
    res: ScanResult = scan(specs, make_ctx, workers=workers, progress=_Progress(as_json, show))
    if not res.inputs:
        raise CannotRead(f"no files in {', '.join(s.path for s in specs)}")
    if all(i.error for i in res.inputs):
        raise CannotRead("; ".join(f"{i.source}: {i.error}" for i in res.inputs))
    opts = _correlate.Options(gap=gap, drop_gap=drop_gap, lookback=lookback, storm_per_s=storm_per_s)
    incidents = _correlate.correlate(res, opts)
    doc = _report.document(res, incidents)
    if html_path is not None:
        try:
            with open(html_path, "w", encoding="utf-8") as f:
                f.write(_report.html_report(doc, incidents))
        except OSError as e:
            raise CannotRead(f"cannot write {html_path}: {e.strerror or e}") from e
    if as_json:
        print_json(doc, _report.SCHEMA)
    else:
        _render(doc)
        if html_path is not None:
            click.echo(f"HTML report: {html_path}")
    sys.exit(int({"OK": Exit.OK, "WARN": Exit.WARN, "CRIT": Exit.CRIT}[doc["verdict"]]))


commands = [diagnose]
