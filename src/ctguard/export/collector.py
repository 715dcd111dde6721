"""The Prometheus collector: a custom prometheus_client Collector on its own CollectorRegistry.

Nothing is registered at import (prometheus_client's own ProcessCollector registers itself in the global
REGISTRY at import, a smell the textfile docs also warn about); `build_registry()` makes a fresh registry.

Per scrape, only O(1) readings: count, limit and the per-CPU counters (ctguard.export.readings). The breakdown
(entries by state/protocol/role/daemon) comes from the background Refresher's last result, capped in label
values, and growth/time-to-full from the 1 Hz sample window. Names follow
`ctguard_<subsystem>_<what>[_unit][_total]`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from ctguard import __version__
from ctguard.errors import CtguardError
from ctguard.export import guard as _guard
from ctguard.export.breakdown import Refresher
from ctguard.export.periodic import Periodic
from ctguard.export.readings import EXPORTED_COUNTERS, Reading, read_now
from ctguard.export.trend import (
    DEFAULT_BURST_FACTOR,
    SampleWindow,
    cap_labels,
    restart_headroom,
    seconds_to_full,
)
from ctguard.kernel.netns import Netns

COUNTER_HELP = {
    "drop": "Packets dropped because the conntrack table was full (a new flow could not get an entry).",
    "early_drop": "Unassured entries evicted to make room for a new one (the table was full).",
    "insert_failed": "Entries that could not be inserted (clash races; not a full table).",
    "invalid": "Packets conntrack could not track (invalid state or malformed).",
    "insert": "Entries inserted (0 on kernels that no longer maintain it, 5.x+; use growth instead).",
    "search_restart": "Hash lookups restarted because the table was resized or changed under them.",
}

# Label-value caps: whatever the table holds, the exporter emits a bounded number of series.
DEFAULT_TOP_DAEMONS = 20
TOP_STATES = 16  # TCP has 10 conntrack states, plus non-TCP protocols' pseudo-states
TOP_PROTOCOLS = 8


class ConntrackCollector:
    """collect() reads the table's O(1) figures live and joins the latest breakdown."""

    def __init__(
        self,
        ns: Netns,
        *,
        proc_root: str = "/proc",
        refresher: Refresher | None = None,
        window: SampleWindow | None = None,
        burst_factor: float = DEFAULT_BURST_FACTOR,
        top_daemons: int = DEFAULT_TOP_DAEMONS,
        guard_state_file: str | None = None,
        read: Callable[[], Reading] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.ns = ns
        self.refresher = refresher
        self.window = window if window is not None else SampleWindow()
        self.burst_factor = burst_factor
        self.top_daemons = top_daemons
        self.guard_state_file = guard_state_file
        self._read = read if read is not None else (lambda: read_now(ns, proc_root))
        self._wall = wall
        self._errors = 0
        self._lock = threading.Lock()
        self.last_reading: Reading | None = None
        self.last_error: str | None = None

    def read(self) -> Reading:
        r = self._read()
        self.window.add(r.t, r.count)
        self.last_reading = r
        return r

    def collect(self) -> Iterator[Metric]:
        t0 = time.perf_counter()
        info = GaugeMetricFamily("ctguard_exporter_info", "ctguard exporter: version and target namespace.",
                                 labels=["version", "netns"])
        info.add_metric([__version__, self.ns.label], 1)
        yield info
        try:
            r: Reading | None = self.read()
        except CtguardError as e:
            with self._lock:
                self._errors += 1
            self.last_error = e.message
            r = None
        ok = GaugeMetricFamily("ctguard_exporter_read_success",
                               "1 if this scrape read the conntrack table, 0 if the reading failed.")
        ok.add_metric([], 1 if r is not None else 0)
        yield ok
        errs = CounterMetricFamily("ctguard_exporter_read_errors", "Scrapes whose reading of the table failed.")
        errs.add_metric([], self._errors)
        yield errs
        if r is not None:
            yield from self._table(r)
        yield from self._breakdown(r)
        yield from self._guard()
        dur = GaugeMetricFamily("ctguard_exporter_collect_seconds",
                                "Time this scrape's collection took (the breakdown is never on this path).")
        dur.add_metric([], time.perf_counter() - t0)
        yield dur

    # -- the live figures -------------------------------------------------------------------------------------
    def _table(self, r: Reading) -> Iterator[Metric]:
        g = GaugeMetricFamily("ctguard_conntrack_entries", "Entries in the conntrack table (nf_conntrack_count).")
        g.add_metric([], r.count)
        yield g
        g = GaugeMetricFamily("ctguard_conntrack_limit",
                              "Most entries the table may hold (nf_conntrack_max; global, applies per namespace).")
        g.add_metric([], r.limit)
        yield g
        g = GaugeMetricFamily("ctguard_conntrack_free_entries", "Entries still free: limit - entries.")
        g.add_metric([], r.free)
        yield g
        for name in EXPORTED_COUNTERS:
            c = CounterMetricFamily(f"ctguard_conntrack_{name}", COUNTER_HELP[name])
            c.add_metric([], r.counters.get(name, 0))
            yield c
        g = GaugeMetricFamily("ctguard_conntrack_counters_source",
                              "Where the counters were read: netlink (preferred) or the procfs stat file.",
                              labels=["source"])
        g.add_metric([r.source], 1)
        yield g
        growth = self.window.growth_per_second()
        g = GaugeMetricFamily("ctguard_conntrack_growth_entries_per_second",
                              "Net growth of the table over the recent sample window (entries/s; from count deltas).")
        g.add_metric([], growth if growth is not None else math.nan)
        yield g
        g = GaugeMetricFamily("ctguard_conntrack_projected_full_seconds",
                              "Seconds until the table is full at the recent growth (+Inf when not growing).")
        g.add_metric([], seconds_to_full(r.count, r.limit, growth))
        yield g

    # -- the slow breakdown -----------------------------------------------------------------------------------
    def _breakdown(self, r: Reading | None) -> Iterator[Metric]:
        if self.refresher is None:
            return
        bd, age = self.refresher.latest()
        c = CounterMetricFamily("ctguard_breakdown_runs", "Breakdown dumps attempted.")
        c.add_metric([], self.refresher.runs)
        yield c
        c = CounterMetricFamily("ctguard_breakdown_errors", "Breakdown dumps that failed.")
        c.add_metric([], self.refresher.errors)
        yield c
        c = CounterMetricFamily("ctguard_breakdown_expired_freed_entries",
                                "Expired-but-still-counted entries freed by the breakdown dumps (a dump reaps them).")
        c.add_metric([], self.refresher.expired_freed_total)
        yield c
        if bd is None or age is None:
            return
        g = GaugeMetricFamily("ctguard_breakdown_last_expired_freed_entries",
                              "Expired-but-still-counted entries the latest breakdown dump freed.")
        g.add_metric([], bd.expired_freed)
        yield g
        g = GaugeMetricFamily("ctguard_breakdown_age_seconds", "Age of the latest breakdown.")
        g.add_metric([], age)
        yield g
        g = GaugeMetricFamily("ctguard_breakdown_duration_seconds", "How long the latest breakdown dump took.")
        g.add_metric([], bd.seconds)
        yield g
        g = GaugeMetricFamily("ctguard_breakdown_timestamp_seconds", "When the latest breakdown was taken.")
        g.add_metric([], bd.taken_at)
        yield g
        g = GaugeMetricFamily("ctguard_conntrack_state_entries", "Entries by conntrack state (latest breakdown).",
                              labels=["state"])
        for k, v in cap_labels(bd.by_state.items(), TOP_STATES):
            g.add_metric([k], v)
        yield g
        g = GaugeMetricFamily("ctguard_conntrack_protocol_entries", "Entries by protocol (latest breakdown).",
                              labels=["protocol"])
        for k, v in cap_labels(bd.by_proto.items(), TOP_PROTOCOLS):
            g.add_metric([k], v)
        yield g
        g = GaugeMetricFamily("ctguard_conntrack_role_entries",
                              "Entries by Ceph role of the service port: ceph-mon, ceph-osd, other.", labels=["role"])
        for k, v in cap_labels(bd.by_role.items(), TOP_PROTOCOLS):
            g.add_metric([k], v)
        yield g
        g = GaugeMetricFamily("ctguard_conntrack_daemon_entries",
                              f"Entries by local daemon (top {self.top_daemons}, the rest as daemon=\"other\").",
                              labels=["daemon"])
        for k, v in cap_labels(bd.by_daemon, self.top_daemons):
            g.add_metric([k], v)
        yield g
        g = GaugeMetricFamily("ctguard_conntrack_assured_entries",
                              "ASSURED entries (only these can fill a table: early_drop cannot evict them).")
        g.add_metric([], bd.assured)
        yield g
        if r is None:
            return
        h = restart_headroom(r.count, r.limit, bd.by_daemon, self.burst_factor)
        g = GaugeMetricFamily("ctguard_restart_burst_entries",
                              f"Entries a restart of the busiest local OSD would add (its entries x {self.burst_factor:g}).",
                              labels=["daemon"])
        g.add_metric([h.daemon or ""], h.burst)
        yield g
        g = GaugeMetricFamily("ctguard_restart_headroom_entries",
                              "Free entries minus the restart burst of the busiest local OSD (< 0: that restart would overflow).",
                              labels=["daemon"])
        g.add_metric([h.daemon or ""], h.headroom)
        yield g

    # -- the guard's work, from its state file -----------------------------------------------------------------
    def _guard(self) -> Iterable[Metric]:
        if self.guard_state_file is None:
            return []
        try:
            st = _guard.load_state(self.guard_state_file)
        except CtguardError:
            st = None
        if st is None:
            return []
        out: list[Metric] = []
        g = GaugeMetricFamily("ctguard_guard_heartbeat_timestamp_seconds",
                              "When the guard last wrote its state (it does at least every 10 s).")
        g.add_metric([], st.updated)
        out.append(g)
        c = CounterMetricFamily("ctguard_guard_purges",
                                "Purges the guard ran, by trigger: preempt (free entries below the reserve, before "
                                "any drop) or drop (after the drop counter rose).", labels=["trigger"])
        for trig in _guard.TRIGGERS:
            c.add_metric([trig], _by_trigger(st, st.purges_by_trigger, trig, st.purges))
        out.append(c)
        c = CounterMetricFamily("ctguard_guard_freed_entries",
                                "Entries the guard's purges freed (deleted, plus expired ones the dump reaped), "
                                "by trigger.", labels=["trigger"])
        for trig in _guard.TRIGGERS:
            c.add_metric([trig], _by_trigger(st, st.freed_by_trigger, trig, st.purged_entries + st.expired_freed))
        out.append(c)
        c = CounterMetricFamily("ctguard_guard_drops_seen", "Drops the guard saw while running.")
        c.add_metric([], st.drops_seen)
        out.append(c)
        c = CounterMetricFamily("ctguard_guard_purged_entries", "Entries the guard's purges deleted, by state.",
                                labels=["state"])
        for k, v in cap_labels(st.purged_by_state.items(), TOP_STATES):
            c.add_metric([k], v)
        out.append(c)
        g = GaugeMetricFamily("ctguard_guard_preempt", "1 if the guard purges before drops (--preempt), 0 if only "
                              "after them.")
        g.add_metric([], 1 if st.preempt else 0)
        out.append(g)
        if st.preempt and st.reserve is not None:
            g = GaugeMetricFamily("ctguard_guard_reserve_entries",
                                  "Free entries the pre-emptive guard keeps: below this it purges closing states.")
            g.add_metric([], float(st.reserve.get("reserve") or 0))
            out.append(g)
            g = GaugeMetricFamily("ctguard_guard_predicted_burst_entries",
                                  "Predicted whole-host restart burst the reserve covers (local Ceph daemons' "
                                  "entries x burst factor; 0 before the first breakdown).")
            g.add_metric([], float(st.reserve.get("predicted_burst") or 0))
            out.append(g)
            g = GaugeMetricFamily("ctguard_guard_below_reserve",
                                  "1 if free entries were below the reserve at the guard's last state write.")
            g.add_metric([], 1 if st.below_reserve else 0)
            out.append(g)
        if st.last_purge is not None:
            g = GaugeMetricFamily("ctguard_guard_last_purge_timestamp_seconds", "When the guard last purged.")
            g.add_metric([], float(st.last_purge.get("ts") or 0))
            out.append(g)
        return out


def _by_trigger(st: _guard.GuardState, counts: dict[str, int], trigger: str, total: int) -> int:
    """A count by trigger; a state file of an older guard (no per-trigger counts) only ever purged at drops."""
    if not counts and not st.preempt:
        return total if trigger == "drop" else 0
    return counts.get(trigger, 0)


class Sampler(Periodic):
    """Reads the O(1) figures every `interval` seconds in a daemon thread, so growth and time-to-full follow
    a table that fills in seconds even when Prometheus scrapes once a minute."""

    thread_name = "ctguard-sampler"

    def __init__(self, collector: ConntrackCollector, interval: float = 1.0) -> None:
        super().__init__(interval)
        self.collector = collector

    def step(self) -> None:
        try:
            self.collector.read()
        except CtguardError as e:
            self.collector.last_error = e.message


def build_registry(collector: ConntrackCollector) -> CollectorRegistry:
    """A fresh registry holding only our collector (never the global REGISTRY)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg
