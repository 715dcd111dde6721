"""What the daemons wrote during a scenario: messenger fault lines of the restarted host's OSDs (with
`debug ms = 1`), and the mon's cluster log (OSDs failed / marked down / booted).

Files are read from the offset they had when the scenario started, so a long lab run never re-reads old
log text. Ceph 16 log lines start with an ISO timestamp, e.g.
`2026-11-26T06:10:00.398+0000 7f03e5f176c0  1 --2- [v2:...] >> [...] conn(...)._fault with nothing to send`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

# msgr2 (ProtocolV2/AsyncConnection) reports failed or broken sessions at debug_ms 1 with `_fault ...`;
# the 2014 report's SimpleMessenger lines say `.fault on lossy channel` / `.fault 0: Success`.
FAULT_RE = re.compile(r"_fault|\.fault|fault on lossy|reconnect failed|connect failed|Connection refused")
_TS_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)([+-]\d{4})")
# cluster log: the mon marks an OSD down on failure reports ("osd.3 failed (root=default,host=h1) (2 reporters
# from different host after 21.2 >= grace 20.0)"), an OSD stopping cleanly says it marked itself down
_FAILED_RE = re.compile(r"cluster \[\w+\] (osd\.\d+) failed \(")
_ITSELF_RE = re.compile(r"cluster \[\w+\] (osd\.\d+) marked itself (?:down|dead)")
_BOOT_RE = re.compile(r"cluster \[\w+\] (osd\.\d+) \[[^\]]*\] boot")
_WRONGLY_RE = re.compile(r"wrongly marked me down|marked osd\.\d+ down, but it is still running")


def timestamp(line: str) -> float | None:
    m = _TS_RE.match(line)
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1) + m.group(2), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        return None


def sizes(paths: Iterable[str]) -> dict[str, int]:
    out = {}
    for p in paths:
        try:
            out[p] = os.path.getsize(p)
        except OSError:
            out[p] = 0
    return out


def read_from(path: str, offset: int, limit: int = 512 << 20) -> Iterator[str]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(limit)
    except OSError:
        return
    for raw in data.splitlines():
        yield raw.decode("utf-8", "replace")


@dataclass
class FaultSummary:
    total: int = 0
    per_second: dict[int, int] = field(default_factory=dict)  # int(seconds since t0) -> lines
    wrongly_marked_down: int = 0
    sample: list[str] = field(default_factory=list)  # the first lines, for the record

    @property
    def peak_per_second(self) -> int:
        return max(self.per_second.values(), default=0)


def fault_lines(lines: Iterable[str], t0: float, t1: float, keep: int = 40) -> FaultSummary:
    out = FaultSummary()
    per: Counter[int] = Counter()
    for line in lines:
        if _WRONGLY_RE.search(line):
            ts = timestamp(line)
            if ts is not None and t0 <= ts <= t1:
                out.wrongly_marked_down += 1
        if not FAULT_RE.search(line):
            continue
        ts = timestamp(line)
        if ts is None or not t0 <= ts <= t1:
            continue
        out.total += 1
        per[int(ts - t0)] += 1
        if len(out.sample) < keep:
            out.sample.append(line[:400])
    out.per_second = dict(sorted(per.items()))
    return out


@dataclass
class ClusterEvents:
    failed: list[tuple[float, str]] = field(default_factory=list)  # marked down by the mon on reports
    marked_itself_down: list[tuple[float, str]] = field(default_factory=list)
    boot: list[tuple[float, str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the window's cluster-channel lines (not audit)


def cluster_events(lines: Iterable[str], t0: float, t1: float, keep: int = 400) -> ClusterEvents:
    ev = ClusterEvents()
    for line in lines:
        if " cluster [" not in line:
            continue
        ts = timestamp(line)
        if ts is None or not t0 <= ts <= t1:
            continue
        if len(ev.lines) < keep and "pgmap v" not in line:
            ev.lines.append(line[:400])
        for regex, bucket in ((_FAILED_RE, ev.failed), (_ITSELF_RE, ev.marked_itself_down), (_BOOT_RE, ev.boot)):
            m = regex.search(line)
            if m:
                bucket.append((ts - t0, m.group(1)))
    return ev
