"""Calibration against the lab's recorded runs (`data/lab/<run id>/<scenario>.jsonl`, docs/lab.md schema 1).

Given a run's starting point (baseline entries, filler, max, TIME_WAIT, the strategy and the OSDs it
restarted), build the scenario the simulator should predict, and read what was measured: peak entries and
whether the host dropped packets. Pure: takes the parsed JSON lines, never reads files or the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ctguard.errors import BadInput
from ctguard.model.ceph import RestartBehaviour
from ctguard.model.scenario import ClusterSpec, Scenario
from ctguard.model.simulate import Strategy
from ctguard.model.table import TableConfig, Timeouts

LAB_PGS = 65  # the lab's pools: rbdtest 64 PGs + device_health_metrics 1, size 3 (ceph-lab.md §3)
LAB_SIZE = 3
LAB_DUMP_EVERY_S = 0.5  # the sampler lists the table at 2 Hz; a dump frees expired entries (§6b)


@dataclass(frozen=True)
class Measured:
    name: str
    peak: float
    drops: int
    overflow: bool
    first_drop_s: float | None  # after the first stop
    last_drop_s: float | None
    marked_down: int


LAB_PURGE_AFTER_S = 0.1  # the lab purges at the first drop its 10 Hz sampler sees


def applicable(meta: Mapping[str, Any]) -> bool:
    """Scenarios the model predicts: restarts, with or without purges (not notrack, which takes Ceph out of
    the table, nor ctguard restart, whose gate is another capability, nor the pre-emptive `ctguard guard`,
    whose purges before any drop the model's purge-at-the-first-drop does not describe)."""
    sc = meta.get("scenario") or {}
    return not (sc.get("untracked") or sc.get("ctguard_restart") or sc.get("guard"))


def measured(rows: Iterable[Mapping[str, Any]]) -> Measured:
    rows = list(rows)
    if not rows or rows[0].get("kind") != "meta":
        raise BadInput("lab series: the first line must be the meta record")
    meta = rows[0]
    ct = [r for r in rows if r.get("kind") == "ct"]
    if not ct:
        raise BadInput("lab series: no ct samples")
    stops = [float(r["t"]) for r in rows if r.get("kind") == "event" and r.get("event") == "stop"]
    t_stop = min(stops) if stops else 0.0
    d0 = int(ct[0]["drop"])
    dropped = [float(r["t"]) for r in ct if int(r["drop"]) > d0]
    # a drop sample shows the counter moved since the previous one
    firsts = [float(b["t"]) for a, b in zip(ct, ct[1:], strict=False) if int(b["drop"]) > int(a["drop"])]
    return Measured(
        name=str((meta.get("scenario") or {}).get("name", "")),
        peak=float(max(int(r["count"]) for r in ct)),
        drops=int(ct[-1]["drop"]) - d0,
        overflow=bool(dropped),
        first_drop_s=(firsts[0] - t_stop) if firsts else None,
        last_drop_s=(firsts[-1] - t_stop) if firsts else None,
        marked_down=len({r.get("osd") for r in rows if r.get("kind") == "marked_down"}),
    )


def scenario(rows: Iterable[Mapping[str, Any]], run: Mapping[str, Any] | None = None) -> Scenario:
    """The what-if that starts where the recorded run started."""
    rows = list(rows)
    meta = rows[0]
    sc = meta.get("scenario") or {}
    lab = (run or {}).get("lab") or {}
    osds = {r.get("osd") for r in rows if r.get("kind") == "event" and r.get("osd") is not None}
    per_host = int(lab.get("osds_per_host") or len(osds) or 4)
    hosts = int(lab.get("hosts") or 3)
    clients = float(lab.get("clients") or 1)
    tw = int(sc.get("time_wait") or (run or {}).get("time_wait_default") or 120)
    try:
        baseline = float(meta["baseline"])
        filler = float(meta.get("filler") or 0)
        mx = int(meta["max"])
    except (KeyError, TypeError, ValueError) as e:
        raise BadInput("lab series: meta needs baseline, filler and max") from e
    strategy = Strategy("all-at-once") if sc.get("all_at_once", True) else Strategy(
        "stagger", gap_s=float(sc.get("gap") or 0.0))
    # the lab's librados client: one session per OSD, I/O in flight (40 ops/s over 64 objects)
    pgs_per_osd = LAB_PGS * LAB_SIZE / max(1, hosts * per_host)
    spec = ClusterSpec(hosts=hosts, osds_per_host=per_host, pgs_per_osd=pgs_per_osd, clients_per_osd=clients)
    behaviour = dataclasses.replace(RestartBehaviour(), client_active_fraction=1.0)
    down = downtime(rows)
    if down is not None:
        behaviour = dataclasses.replace(behaviour, downtime_s=max(0.2, down))
    table = TableConfig(max=mx, timeouts=Timeouts(time_wait=tw), dump_every_s=LAB_DUMP_EVERY_S)
    first = Scenario(cluster=spec, table=table, strategy=strategy, behaviour=behaviour, gc_phases=6,
                     name=str(sc.get("name", "")))
    # what the host holds besides its OSDs' sessions (CLI sessions, the filler): held throughout
    other = filler + max(0.0, baseline - first.conns().baseline)
    purge = LAB_PURGE_AFTER_S if sc.get("purge") else None
    return dataclasses.replace(first, other_entries=other, purge_after_s=purge).validate()


def downtime(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """Mean seconds from an OSD's stop to its start in the recorded events (the restart's own timing)."""
    stop: dict[Any, float] = {}
    gaps = []
    for r in rows:
        if r.get("kind") != "event":
            continue
        if r.get("event") == "stop":
            stop[r.get("osd")] = float(r["t"])
        elif r.get("event") == "start" and r.get("osd") in stop:
            gaps.append(float(r["t"]) - stop.pop(r.get("osd")))
    return sum(gaps) / len(gaps) if gaps else None
