"""What the exporter, `watch` and alert rules derive from a few cheap readings: growth, time-to-full, headroom.

Pure functions and a small sample window; nothing here reads the host.

Growth comes from deltas of `nf_conntrack_count`, not from the `insert` counter: on kernels >= 5.x the
procfs `insert` column is no longer maintained (always 0, measured on 6.18, see ctguard.kernel.stats), so the
net growth of the table is the one insert rate every kernel gives. It is *net* growth (inserts minus expiries
and deletes), which is exactly what decides when the table fills.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

# A restart of a daemon adds about its own entries once more: the old connections linger as TIME_WAIT
# (120 s) while the new ones are made. The Ceph lab measured +200..240 entries for 4 OSDs restarted at once
# (ceph-lab.md), i.e. about one ESTABLISHED set plus one TIME_WAIT set; 2 leaves room for reconnect storms.
DEFAULT_BURST_FACTOR = 2.0


@dataclass(frozen=True)
class Sample:
    t: float  # monotonic seconds
    count: int


class SampleWindow:
    """The last `window` seconds of (time, count) samples; thread-safe, bounded."""

    def __init__(self, window: float = 30.0, maxlen: int = 4096, min_span: float = 1.0) -> None:
        if window <= 0:
            raise ValueError("window must be > 0")
        self.window = window
        self.min_span = min_span
        self._samples: deque[Sample] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, t: float, count: int) -> None:
        with self._lock:
            if self._samples and t < self._samples[-1].t:
                return  # a late sample from a slower reader: keep the series monotonic in time
            self._samples.append(Sample(t, count))
            while self._samples and self._samples[0].t < t - self.window:
                self._samples.popleft()

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def growth_per_second(self) -> float | None:
        return growth_per_second(self.samples(), self.min_span)


def growth_per_second(samples: Iterable[Sample], min_span: float = 1.0) -> float | None:
    """Least-squares slope of count over time (entries/s); None with fewer than 2 samples or when they span
    less than `min_span` seconds (two readings a millisecond apart say nothing about a rate).

    A slope rather than last-minus-first: one sample taken just after a GC pass would otherwise swing it."""
    pts = list(samples)
    if len(pts) < 2 or pts[-1].t - pts[0].t < min_span:
        return None
    n = len(pts)
    mt = sum(p.t for p in pts) / n
    mc = sum(p.count for p in pts) / n
    var = sum((p.t - mt) ** 2 for p in pts)
    if var <= 0:
        return None
    cov = sum((p.t - mt) * (p.count - mc) for p in pts)
    return cov / var


def seconds_to_full(count: int, limit: int, growth: float | None) -> float:
    """Projected seconds until count reaches limit at the given growth; +Inf when not growing, 0 when full."""
    if limit <= 0:
        return math.inf
    free = limit - count
    if free <= 0:
        return 0.0
    if growth is None or growth <= 0:
        return math.inf
    return free / growth


@dataclass(frozen=True)
class Headroom:
    """Would restarting the busiest local OSD now overflow the table?"""

    free: int  # limit - count
    daemon: str | None  # the busiest local OSD ("osd.3"), None if the breakdown found none
    daemon_entries: int
    burst: int  # entries a restart of it would add: its entries x burst factor
    headroom: int  # free - burst; < 0: that restart would overflow

    @property
    def would_overflow(self) -> bool:
        return self.headroom < 0


def restart_headroom(
    count: int,
    limit: int,
    daemons: Iterable[tuple[str, int]],
    burst_factor: float = DEFAULT_BURST_FACTOR,
) -> Headroom:
    """Headroom against a restart of the local OSD with the most entries (`daemons`: (name, entries))."""
    free = max(0, limit - count)
    best: tuple[str, int] | None = None
    for name, n in daemons:
        if not name.startswith("osd."):
            continue
        if best is None or n > best[1] or (n == best[1] and name < best[0]):
            best = (name, n)
    if best is None:
        return Headroom(free, None, 0, 0, free)
    burst = int(math.ceil(best[1] * burst_factor))
    return Headroom(free, best[0], best[1], burst, free - burst)


def cap_labels(values: Iterable[tuple[str, int]], top: int, other: str = "other") -> list[tuple[str, int]]:
    """Keep the `top` largest label values and fold the rest into `other`: a bounded series count whatever
    the table holds (never one series per peer or per port)."""
    merged: dict[str, int] = {}
    for k, v in values:
        merged[k] = merged.get(k, 0) + v
    ranked = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
    if top < 0:
        top = 0
    if len(ranked) <= top:
        return ranked
    kept = [kv for kv in ranked[:top] if kv[0] != other]
    names = {k for k, _ in kept}
    rest = sum(v for k, v in ranked if k not in names)
    return [*kept, (other, rest)]
