"""Run a scenario: one host over a sweep of GC phases (-> a distribution of overflow durations), or a whole
cluster's rolling restart host after host."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ctguard.model.scenario import Scenario
from ctguard.model.simulate import HostResult, HostSim


@dataclass(frozen=True)
class WhatIf:
    scenario: Scenario
    headline: HostResult  # the worst GC phase (longest overflow, then highest peak)
    runs: tuple[HostResult, ...]  # one per GC phase

    @property
    def verdict(self) -> str:
        h = self.headline
        if h.overflow:
            return "CRIT"
        if h.peak_entries >= 0.9 * h.max or any(r.overflow for r in self.runs):
            return "WARN"
        if self.scenario.conns().source == "scaled":
            return "WARN"  # the input was below the formula: the prediction rests on a scaled mesh
        return "OK"

    def reasons(self) -> list[str]:
        h, out = self.headline, []
        over = [r for r in self.runs if r.overflow]
        if over:
            out.append(f"the table overflows in {len(over)} of {len(self.runs)} GC phases; "
                       f"{h.drops:,.0f} packets dropped in the worst one")
            if h.marked_down:
                out.append(f"{len(h.marked_down)} OSD(s) stay stuck in the lossy-client reconnect loop until "
                           f"the monitors mark them down ({self.scenario.ceph.mon_osd_report_timeout_s:g} s)")
            if h.flapped:
                out.append(f"{len(h.flapped)} OSD(s) would be wrongly marked down (heartbeat grace "
                           f"{self.scenario.ceph.osd_heartbeat_grace_s:g} s) and come back")
        elif h.peak_entries >= 0.9 * h.max:
            out.append(f"the peak reaches {h.peak_entries / h.max:.0%} of nf_conntrack_max")
        else:
            out.append(f"the peak stays at {h.peak_entries / h.max:.0%} of nf_conntrack_max")
        sc = self.scenario
        conns = sc.conns()
        if conns.note:
            out.append(conns.note)
        if (conns.clients > 0 and sc.cluster.client_rate is None and sc.cluster.client_ops is None
                and sc.behaviour.client_active_fraction >= 1.0):
            out.append(f"clients' activity not given: all {conns.clients * conns.osds:,.0f} client sessions are "
                       "taken as busy (the worst case; --client-rate, or --from-cluster's measured ops/s, decides "
                       "whether they loop)")
        if h.not_restarted:
            out.append(f"adaptive: {len(h.not_restarted)} OSD(s) not restarted (even one would not fit)")
        return out

    def distribution(self) -> dict[str, Any]:
        d = sorted(r.over_limit_s for r in self.runs)
        return {
            "phases": len(d),
            "overflowing": sum(1 for r in self.runs if r.overflow),
            "min_s": round(d[0], 1),
            "median_s": round(statistics.median(d), 1),
            "max_s": round(d[-1], 1),
            "values_s": [round(x, 1) for x in d],
        }

    def to_json(self, series: bool = False) -> dict[str, Any]:
        h = self.headline
        sc = self.scenario
        conns = sc.conns()
        doc: dict[str, Any] = {
            "scenario": sc.name or None,
            "strategy": {"name": sc.strategy.name, "gap_s": sc.strategy.gap_s, "batch": sc.strategy.batch,
                         "label": sc.strategy.label()},
            "host": conns.as_dict(),
            "max": h.max,
            "baseline_entries": round(h.baseline),
            "peak_entries": round(h.peak_entries),
            "peak_ratio": round((h.peak_entries - sc.other_entries) / h.baseline, 2) if h.baseline else None,
            "other_entries": round(sc.other_entries),
            "peak_t_s": round(h.peak_t, 1),
            "overflow": h.overflow,
            "over_limit_s": round(h.over_limit_s, 1),
            "drops": round(h.drops),
            "early_drops": round(h.early_drops),
            "gc_early_drops": round(h.gc_early_drops),
            "recovery_s": round(h.recovery_s, 1),
            "settle_s": None if h.settle_s is None else round(h.settle_s, 1),
            "osds_marked_down": len(h.marked_down),
            "osds_flapped": len(h.flapped),
            "markdowns": h.markdowns,
            "osds_not_restarted": len(h.not_restarted),
            "steps": [{"t_s": round(t, 1), "osds": list(ids)} for t, ids in h.steps],
            "gc_phase_s": round(h.gc_phase_s, 1),
            "overflow_duration": self.distribution(),
            "verdict": self.verdict,
            "reasons": self.reasons(),
        }
        if series:
            doc["series"] = [{"t": t, "count": round(c), "established": round(e), "closing": round(w),
                              "unassured": round(u)} for t, c, e, w, u in h.series]
        return doc


def phases(sc: Scenario) -> list[float]:
    cyc = sc.table.gc_cycle_s
    k = sc.gc_phases
    return [cyc * (i + 0.5) / k for i in range(k)]


def _one(sc: Scenario, phase: float, record: bool) -> HostResult:
    table = dataclasses.replace(sc.table, gc_phase_s=phase)
    return HostSim(sc.conns(), table, sc.strategy, sc.effective_behaviour(), sc.ceph, record=record,
                   purge_after_s=sc.purge_after_s,
                   other_entries=sc.other_entries).run()


def run(sc: Scenario, record: bool = False) -> WhatIf:
    runs = [_one(sc, p, record) for p in phases(sc)]
    worst = max(range(len(runs)), key=lambda i: (runs[i].over_limit_s, runs[i].peak_entries, -i))
    head = runs[worst]
    return WhatIf(sc, head, tuple(runs))


@dataclass(frozen=True)
class FleetResult:
    hosts: int
    osds: int
    overflowing_hosts: int
    worst_peak: float
    worst_peak_host: int
    max: int
    drops: float
    marked_down: int
    duration_s: float  # first kill of the first host -> last host recovered

    def to_json(self) -> dict[str, Any]:
        return {"hosts": self.hosts, "osds": self.osds, "overflowing_hosts": self.overflowing_hosts,
                "worst_peak_entries": round(self.worst_peak), "worst_peak_host": self.worst_peak_host,
                "max": self.max, "drops": round(self.drops), "osds_marked_down": self.marked_down,
                "duration_s": round(self.duration_s, 1),
                "verdict": "CRIT" if self.overflowing_hosts else
                ("WARN" if self.worst_peak >= 0.9 * self.max else "OK")}


def run_fleet(sc: Scenario, progress: Callable[[int, int], None] | None = None,
              memo: bool = True) -> FleetResult:
    """A rolling restart of every host, one host after the other (as ceph-ansible's rolling_update and
    cephadm do), each host with the scenario's strategy and its own GC phase (each kernel has its own
    cycle). The next host starts `gap_s` after the previous one has recovered; the sessions it shared with
    that host (1/(hosts-1) of that host's OSD<->OSD sessions) are still TIME_WAIT on its table if that was
    less than TIME_WAIT ago. Hosts further back are older than TIME_WAIT, unless recoveries are very short.

    Host h gets the GC phase h mod K of the scenario's K-phase sweep. Hosts of a flag- or file-given cluster
    are identical but for that phase, so with `memo` each distinct (host, phase) is simulated once: the
    result of a pure function of identical inputs, not an estimate."""
    conns = sc.conns()
    n = sc.cluster.hosts
    over = 0
    worst, worst_h = 0.0, 0
    drops = 0.0
    down = 0
    t = 0.0
    sweep = phases(sc)
    cache: dict[tuple[int, int], HostResult] = {}
    # sessions each host has with the host restarted just before it: that host's OSD<->OSD sessions
    # spread over the other hosts; they turned TIME_WAIT during its restart
    shared = conns.osds * conns.osd_osd_per_osd / max(1, n - 1) if n > 1 else 0.0
    ago = float("inf")
    for h in range(n):
        k = h % len(sweep)
        # seconds since the previous host's restart churned them (its kills on average), rounded for memo
        inherit = round(ago) if ago < sc.table.timeouts.time_wait else -1
        r = cache.get((k, inherit)) if memo else None
        if r is None:
            table = dataclasses.replace(sc.table, gc_phase_s=sweep[k])
            r = HostSim(conns, table, sc.strategy, sc.effective_behaviour(), sc.ceph, purge_after_s=sc.purge_after_s,
                        other_entries=sc.other_entries,
                        inherited=(shared, float(inherit)) if inherit >= 0 else None).run()
            cache[(k, inherit)] = r
        kills = [t_kill for t_kill, _ in r.steps]
        mean_kill = sum(kills) / len(kills) if kills else 0.0
        ago = max(0.0, r.recovery_s - mean_kill) + sc.strategy.gap_s
        over += r.overflow
        if r.peak_entries > worst:
            worst, worst_h = r.peak_entries, h
        drops += r.drops
        down += len(r.marked_down)
        t += r.recovery_s + sc.strategy.gap_s
        if progress is not None:
            progress(h + 1, n)
    return FleetResult(n, n * conns.osds, over, worst, worst_h, sc.table.max, drops, down, t)
