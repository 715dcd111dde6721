"""The table breakdown (entries by state, protocol, role, daemon), refreshed slowly and off the scrape path.

A breakdown dumps the whole table: ~0.7 s of CPU for 262,144 entries (kernel-conntrack.md §5). Done in a thread
of the exporter it would hold the GIL for most of that time, and every scrape arriving meanwhile would wait for
it in 5 ms slices (sys.getswitchinterval()) — exactly when the table is busiest. So the dump runs in a short-lived
child process (`python -m ctguard.export.breakdown`, through ctguard.runner), which prints one JSON document;
the exporter keeps only the small summary. The child also isolates the exporter from a dump's memory
(~100 MB of Python objects for a full table) and from a crash in it.

A dump frees expired entries the kernel still counts (kernel-conntrack.md §6b); the child measures how many by
reading the count just before and just after the dump, and the exporter exports it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctguard.errors import CannotRead, CtguardError
from ctguard.export.periodic import Periodic
from ctguard.kernel.netns import Netns
from ctguard.model.roles import PortRoles, parse_range
from ctguard.runner import Runner, run
from ctguard.table.status import read_breakdown

SCHEMA = 1
UNATTRIBUTED = "unattributed"


@dataclass(frozen=True)
class Breakdown:
    """One breakdown: what the table held when it was dumped."""

    taken_at: float  # wall-clock time of the dump (epoch seconds)
    seconds: float  # how long the dump and its summary took
    count: int  # entries in the dump
    by_state: dict[str, int] = field(default_factory=dict)
    by_proto: dict[str, int] = field(default_factory=dict)
    by_role: dict[str, int] = field(default_factory=dict)
    by_daemon: list[tuple[str, int]] = field(default_factory=list)  # local daemons, e.g. ("osd.3", 412)
    assured: int = 0
    expired_freed: int = 0  # expired-but-counted entries this dump freed

    def to_json(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at,
            "seconds": self.seconds,
            "count": self.count,
            "by_state": dict(self.by_state),
            "by_proto": dict(self.by_proto),
            "by_role": dict(self.by_role),
            "by_daemon": [{"name": n, "entries": e} for n, e in self.by_daemon],
            "assured": self.assured,
            "expired_freed": self.expired_freed,
        }


def _int_map(doc: Any, what: str) -> dict[str, int]:
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise CannotRead(f"breakdown: {what} is not an object")
    out: dict[str, int] = {}
    for k, v in doc.items():
        if not isinstance(v, int) or isinstance(v, bool):
            raise CannotRead(f"breakdown: {what}[{k!r}] is not an integer")
        out[str(k)] = v
    return out


def _daemons(doc: Any) -> list[tuple[str, int]]:
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise CannotRead("breakdown: by_daemon is not a list")
    out: list[tuple[str, int]] = []
    for d in doc:
        if not isinstance(d, Mapping) or not isinstance(d.get("name"), str) or not isinstance(d.get("entries"), int):
            raise CannotRead("breakdown: by_daemon items need a string name and integer entries")
        out.append((d["name"], int(d["entries"])))
    return out


def from_json(doc: Mapping[str, Any]) -> Breakdown:
    """Parse the child's document (this module's own shape, see `to_json`)."""
    try:
        return Breakdown(
            taken_at=float(doc["taken_at"]),
            seconds=float(doc["seconds"]),
            count=int(doc["count"]),
            by_state=_int_map(doc.get("by_state"), "by_state"),
            by_proto=_int_map(doc.get("by_proto"), "by_proto"),
            by_role=_int_map(doc.get("by_role"), "by_role"),
            by_daemon=_daemons(doc.get("by_daemon")),
            assured=int(doc.get("assured", 0)),
            expired_freed=int(doc.get("expired_freed", 0)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CannotRead(f"breakdown: bad document ({e})") from e


# -- the child: one dump, one JSON document on stdout ---------------------------------------------------------

def take(ns: Netns, proc_root: str = "/proc", roles: PortRoles | None = None) -> Breakdown:
    """Dump the table of `ns` once (the foundation's read_breakdown) and summarise it for the exporter.

    read_breakdown, not table_status: status also saves a drop sample for `ctguard status`'s verdict, and
    the exporter must not move another command's baseline."""
    r = read_breakdown(ns, roles, proc_root)
    b = r.breakdown
    daemons = [(d.name, d.entries) for d in b.by_daemon]
    if b.unattributed:
        daemons.append((UNATTRIBUTED, b.unattributed))  # so the daemon series sum to the total
    return Breakdown(
        taken_at=time.time(),
        seconds=r.seconds,
        count=b.total,
        by_state=dict(b.by_state),
        by_proto=dict(b.by_proto),
        by_role=dict(b.by_role),
        by_daemon=daemons,
        assured=b.assured,
        expired_freed=r.expired_freed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctguard.export.breakdown",
                                description="One breakdown of a conntrack table as JSON (the exporter's child).")
    p.add_argument("--netns", default=None)
    p.add_argument("--netns-pid", type=int, default=None)
    p.add_argument("--osd-range", default=None, help="Ceph OSD port range LOW-HIGH (default 6800-7568)")
    p.add_argument("--nice", type=int, default=10, help="lower this child's CPU priority by this much")
    a = p.parse_args(argv)
    if a.nice > 0:
        # The dump is CPU-bound for ~1 s on a full table; the exporter's scrapes (and the Ceph daemons) must win
        # the CPU over it, especially on small hosts where it would otherwise take a whole core.
        os.nice(a.nice)
    try:
        roles = PortRoles(osd_range=parse_range(a.osd_range)) if a.osd_range else PortRoles()
        bd = take(Netns(name=a.netns, pid=a.netns_pid), roles=roles)
    except CtguardError as e:
        print(f"ctguard breakdown: {e.message}", file=sys.stderr)
        return int(e.exit_code)
    print(json.dumps({"schema": SCHEMA, **bd.to_json()}))
    return 0


# -- the parent: a background refresher ------------------------------------------------------------------------

Source = Callable[[], Breakdown]


def child_source(ns: Netns, osd_range: str | None = None, timeout: float = 60.0,
                 runner: Runner = run) -> Source:
    """A Source that runs one child process per breakdown."""
    argv = [sys.executable, "-m", "ctguard.export.breakdown"]
    if ns.name is not None:
        argv += ["--netns", ns.name]
    elif ns.pid is not None:
        argv += ["--netns-pid", str(ns.pid)]
    if osd_range is not None:
        argv += ["--osd-range", osd_range]

    def fetch() -> Breakdown:
        done = runner(argv, timeout=timeout)
        if not done.ok:
            raise CannotRead(f"breakdown: {done.first_error_line()}")
        try:
            doc = json.loads(done.stdout)
        except ValueError as e:
            raise CannotRead("breakdown: the child printed no JSON") from e
        if not isinstance(doc, dict):
            raise CannotRead("breakdown: the child printed no JSON object")
        return from_json(doc)

    return fetch


class Refresher(Periodic):
    """Runs `source` every `interval` seconds in a daemon thread and keeps the latest result.

    Readers (`latest()`) never wait for a dump. Errors are kept as a message and counted; the last good
    breakdown stays available (with its age, so a dashboard can tell it is stale)."""

    def __init__(self, source: Source, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(interval)
        self._source = source
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: Breakdown | None = None
        self._latest_at: float | None = None  # monotonic
        self.errors = 0
        self.runs = 0
        self.last_error: str | None = None
        self.expired_freed_total = 0
        self._listeners: list[Callable[[Breakdown | None, str | None], None]] = []

    def on_result(self, fn: Callable[[Breakdown | None, str | None], None]) -> None:
        self._listeners.append(fn)

    def refresh_once(self) -> Breakdown | None:
        try:
            bd = self._source()
        except CtguardError as e:
            with self._lock:
                self.errors += 1
                self.runs += 1
                self.last_error = e.message
            for fn in self._listeners:
                fn(None, e.message)
            return None
        with self._lock:
            self._latest = bd
            self._latest_at = self._clock()
            self.runs += 1
            self.last_error = None
            self.expired_freed_total += bd.expired_freed
        for fn in self._listeners:
            fn(bd, None)
        return bd

    def latest(self) -> tuple[Breakdown | None, float | None]:
        """The latest breakdown and its age in seconds (None, None before the first one)."""
        with self._lock:
            if self._latest is None or self._latest_at is None:
                return None, None
            return self._latest, max(0.0, self._clock() - self._latest_at)

    thread_name = "ctguard-breakdown"

    def step(self) -> None:
        self.refresh_once()


if __name__ == "__main__":
    sys.exit(main())
