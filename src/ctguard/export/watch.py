"""`ctguard watch`: the data of one frame of the live view (the CLI renders it with rich).

Each frame is one O(1) reading (count, limit, counters) compared with the previous one for rates, plus the
latest breakdown from a background refresher (top daemons and states, headroom). No terminal code here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ctguard.export.breakdown import Breakdown, Refresher
from ctguard.export.readings import Reading, rate
from ctguard.export.trend import (
    DEFAULT_BURST_FACTOR,
    Headroom,
    SampleWindow,
    restart_headroom,
    seconds_to_full,
)
from ctguard.output import rfc3339

SCHEMA = 1
WARN_FILL = 0.75
CRIT_FILL = 0.90


@dataclass(frozen=True)
class Frame:
    netns: str
    ts: float  # epoch seconds
    reading: Reading
    drop_rate: float | None  # drops/s since the previous frame
    early_drop_rate: float | None
    insert_rate: float | None  # from the kernel counter; None when the kernel does not maintain it
    growth: float | None  # net entries/s over the sample window
    seconds_to_full: float
    breakdown: Breakdown | None
    breakdown_age: float | None
    headroom: Headroom | None
    top: int = 5

    @property
    def verdict(self) -> str:
        r = self.reading
        if (self.drop_rate or 0) > 0 or r.fill >= CRIT_FILL or (self.headroom is not None and self.headroom.would_overflow):
            return "CRIT"
        if r.fill >= WARN_FILL or self.seconds_to_full < 600:
            return "WARN"
        return "OK"

    def top_daemons(self) -> list[tuple[str, int]]:
        if self.breakdown is None:
            return []
        return sorted(self.breakdown.by_daemon, key=lambda d: (-d[1], d[0]))[: self.top]

    def top_states(self) -> list[tuple[str, int]]:
        if self.breakdown is None:
            return []
        return sorted(self.breakdown.by_state.items(), key=lambda kv: (-kv[1], kv[0]))[: self.top]

    def to_json(self) -> dict[str, Any]:
        r = self.reading
        h = self.headroom
        return {
            "netns": self.netns,
            "ts": rfc3339(self.ts),
            "verdict": self.verdict,
            "count": r.count,
            "max": r.limit,
            "fill": round(r.fill, 6),
            "free": r.free,
            "counters": dict(r.counters),
            "counters_source": r.source,
            "rates": {"drop": self.drop_rate, "early_drop": self.early_drop_rate, "insert": self.insert_rate,
                      "growth": self.growth},
            "seconds_to_full": None if math.isinf(self.seconds_to_full) else self.seconds_to_full,
            "headroom": None if h is None else {"daemon": h.daemon, "daemon_entries": h.daemon_entries,
                                                "burst": h.burst, "free": h.free, "headroom": h.headroom,
                                                "would_overflow": h.would_overflow},
            "top_daemons": [{"name": n, "entries": e} for n, e in self.top_daemons()],
            "top_states": [{"state": s, "entries": e} for s, e in self.top_states()],
            "breakdown_age_s": self.breakdown_age,
        }


class WatchModel:
    def __init__(self, netns_label: str, read: Callable[[], Reading], refresher: Refresher | None = None,
                 window: SampleWindow | None = None, burst_factor: float = DEFAULT_BURST_FACTOR, top: int = 5,
                 wall: Callable[[], float] = time.time) -> None:
        self.netns_label = netns_label
        self._read = read
        self.refresher = refresher
        self.window = window if window is not None else SampleWindow(30.0)
        self.burst_factor = burst_factor
        self.top = top
        self._wall = wall
        self._prev: Reading | None = None
        self._insert_seen = False

    def frame(self) -> Frame:
        r = self._read()
        self.window.add(r.t, r.count)
        prev, self._prev = self._prev, r
        if r.counters.get("insert", 0) > 0:
            self._insert_seen = True
        growth = self.window.growth_per_second()
        bd, age = (None, None) if self.refresher is None else self.refresher.latest()
        head = None if bd is None else restart_headroom(r.count, r.limit, bd.by_daemon, self.burst_factor)
        return Frame(
            netns=self.netns_label, ts=self._wall(), reading=r,
            drop_rate=rate(prev, r, "drop"), early_drop_rate=rate(prev, r, "early_drop"),
            insert_rate=rate(prev, r, "insert") if self._insert_seen else None,
            growth=growth, seconds_to_full=seconds_to_full(r.count, r.limit, growth),
            breakdown=bd, breakdown_age=age, headroom=head, top=self.top,
        )
