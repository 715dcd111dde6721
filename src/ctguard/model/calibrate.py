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
from ctguard.model.ceph import Formula, RestartBehaviour
from ctguard.model.inventory import Inventory, classify_entries
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
    if not isinstance(sc, Mapping):
        return False  # not a lab reproduce series (a sweep record names its scenario by a string)
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
    # the lab's librados client(s): 40 ops/s each over 64 objects; how busy that makes a session, and whether
    # it loops, is the fitted model's (FITTED.fault_per_op)
    pgs_per_osd = LAB_PGS * LAB_SIZE / max(1, hosts * per_host)
    spec = ClusterSpec(hosts=hosts, osds_per_host=per_host, pgs_per_osd=pgs_per_osd, clients_per_osd=clients,
                       client_rate=float(lab.get("client_rate") or 40.0))
    behaviour = RestartBehaviour()
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


# -- the sweep: one JSON line per (shape, scenario), data/lab/sweep/*.jsonl (docs/lab.md "The sweep") --------

SWEEP_SCENARIOS = ("measure", "one-by-one", "all-at-once")
MODES = ("measured", "shape")  # predict from the host's measured inventory | from the shape alone
TOLERANCE = 0.15
FAULT_GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)  # candidate faults per op (Formula.fault_per_op)
# stop -> start of a lab OSD when the record does not say: memstore, the mean of the 26 restart scenarios
# recorded in data/lab/ (0.56-1.96 s); BlueStore OSDs take ~3 s more to exit and mount (ceph-lab.md §4)
LAB_DOWNTIME_S = {"memstore": 1.1, "bluestore": 4.0}
REPEER_GRID = (0.0, 0.15, 0.3, 0.45, 0.6, 0.8, 1.0)
RACE_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # candidate connection-race shares (Formula.race_fraction)
WIDTH_GRID = (0.0, 1.0, 2.0, 3.0)  # candidate exponents of the race share's growth with 3 / width  # candidate re-opened shares (Formula.repeer_fraction)


@dataclass(frozen=True)
class Record:
    """One sweep line, as the model reads it."""

    shape_id: str
    hosts: int
    osds_per_host: int
    pool_size: int
    pg_num: int
    replicas_per_osd: float
    clients: int
    client_rate: float
    scenario: str
    gap_s: float
    max: int
    baseline: int
    filler: int
    free: int | None
    peak: int
    overflow: bool
    drops: int
    inventory: Inventory | None  # classified baseline_entries (None: the record has none)
    downtime_s: float | None = None
    time_wait: int = 120
    store: str = "memstore"

    @property
    def restart(self) -> bool:
        return self.scenario in SWEEP_SCENARIOS


def record(doc: Mapping[str, Any], where: str = "sweep") -> Record:
    """A sweep line (schema 1) -> Record; BadInput naming what is missing."""
    if not isinstance(doc, Mapping) or doc.get("schema") != 1:
        raise BadInput(f"{where}: not a schema-1 sweep record")
    try:
        shape = doc["shape"]
        addresses = doc.get("addresses") or {}
        host = str(doc["host"])
        inv = None
        rows = doc.get("baseline_entries")
        if rows:
            hosts = dict(addresses.get("hosts") or {})
            mine = hosts.get(host)
            if mine is None:
                raise BadInput(f"{where}: addresses.hosts has no address for {host!r}")
            inv = classify_entries(rows, [mine, "127.0.0.1"],
                                   mon_addrs=[addresses["mon"]] if addresses.get("mon") else None,
                                   osd_host_addrs=[a for h, a in hosts.items() if h != host],
                                   client_addrs=list(addresses.get("clients") or []))
        hosts_n, per = int(shape["hosts"]), int(shape["osds_per_host"])
        size, pg_num = int(shape["pool_size"]), int(shape["pg_num"])
        return Record(
            shape_id=str(shape.get("id") or f"{hosts_n}x{per}-s{size}-pg{pg_num}-c{shape.get('clients', 1)}"),
            hosts=hosts_n, osds_per_host=per, pool_size=size, pg_num=pg_num,
            replicas_per_osd=float(shape.get("pg_replicas_per_osd") or pg_num * size / (hosts_n * per)),
            clients=int(shape.get("clients", 1)), client_rate=float(shape.get("client_rate", 40.0)),
            scenario=str(doc["scenario"]), gap_s=float(doc.get("gap_s") or 0.0), max=int(doc["max"]),
            baseline=int(doc["baseline"]), filler=int(doc.get("filler") or 0),
            free=None if doc.get("free") is None else int(doc["free"]), peak=int(doc["peak"]),
            overflow=bool(doc["overflow"]), drops=int(doc.get("drops") or 0), inventory=inv,
            downtime_s=None if doc.get("downtime_s") is None else float(doc["downtime_s"]),
            time_wait=int(doc.get("time_wait") or 120), store=str(shape.get("store") or "memstore"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise BadInput(f"{where}: sweep record lacks or mistypes {e}") from e


def records_from_lab_run(series: Mapping[str, list[Mapping[str, Any]]], run: Mapping[str, Any]) -> list[Record]:
    """The recorded 3 x 4 runs (data/lab/<run>/, before the sweep) as sweep records of one shape: measure,
    all-at-once and stagger (one by one). They have no per-entry baseline: mode `measured` takes their
    entry count as connections per host."""
    lab = run.get("lab") or {}
    hosts, per = int(lab.get("hosts") or 3), int(lab.get("osds_per_host") or 4)
    clients = int(lab.get("clients") or 1)
    out = []
    for name, rows in series.items():
        if name not in ("measure", "all-at-once", "stagger") or not rows:
            continue
        meta = rows[0]
        m = measured(rows)
        sc = meta.get("scenario") or {}
        filler = int(meta.get("filler") or 0)
        out.append(Record(
            shape_id=f"{hosts}x{per}-s{LAB_SIZE}-pg{LAB_PGS - 1}-c{clients}", hosts=hosts, osds_per_host=per,
            pool_size=LAB_SIZE, pg_num=LAB_PGS, replicas_per_osd=LAB_PGS * LAB_SIZE / (hosts * per),
            clients=clients, client_rate=40.0, scenario="one-by-one" if name == "stagger" else name,
            gap_s=float(sc.get("gap") or 0.0), max=int(meta["max"]), baseline=int(meta["baseline"]),
            filler=filler, free=None, peak=int(m.peak) - filler, overflow=m.overflow, drops=m.drops,
            inventory=None, downtime_s=downtime(rows),
            time_wait=int(sc.get("time_wait") or run.get("time_wait_default") or 120)))
    return out


def record_scenario(r: Record, mode: str, formula: Formula, gc_phases: int = 6) -> Scenario:
    """The what-if that starts where the record started. `measured`: the host's classified entries (or, for
    records without them, its entry count); `shape`: nothing of the host but its shape, the table and the
    filler (the host's own entries come from the formula)."""
    if mode not in MODES:
        raise ValueError(mode)
    down = r.downtime_s if r.downtime_s is not None else LAB_DOWNTIME_S.get(r.store, 1.1)
    # the lab waits `gap` from one OSD's start to the next one's stop: kill to kill is the gap + downtime
    strategy = (Strategy("stagger", gap_s=r.gap_s + down) if r.scenario == "one-by-one"
                else Strategy("all-at-once"))
    spec = ClusterSpec(hosts=r.hosts, osds_per_host=r.osds_per_host, pool_size=r.pool_size,
                       pgs_per_osd=r.replicas_per_osd, clients=r.clients, client_rate=r.client_rate)
    behaviour = RestartBehaviour(repeer_fraction=formula.repeer_fraction, race_fraction=formula.race_fraction,
                                 downtime_s=max(0.2, down))
    table = TableConfig(max=r.max, timeouts=Timeouts(time_wait=r.time_wait), dump_every_s=LAB_DUMP_EVERY_S)
    sc = Scenario(cluster=spec, table=table, strategy=strategy, behaviour=behaviour, gc_phases=gc_phases,
                  name=f"{r.shape_id}/{r.scenario}", formula=formula)
    other = float(r.filler)
    if mode == "measured":
        if r.inventory is not None:
            # what the snapshot missed or added against the count read with it is held like the rest
            sc = dataclasses.replace(sc, inventory=r.inventory)
            other += r.inventory.held + max(0, r.baseline - r.inventory.total)
        else:
            sc = dataclasses.replace(sc, cluster=dataclasses.replace(spec, clients=None, conn_per_host=r.baseline))
    return dataclasses.replace(sc, other_entries=other).validate()


@dataclass(frozen=True)
class Prediction:
    record: Record
    mode: str
    peak: float  # the host's entries (filler excluded)
    overflow: bool
    baseline: float

    @property
    def error(self) -> float:
        return (self.peak - self.record.peak) / self.record.peak if self.record.peak else 0.0

    @property
    def ok(self) -> bool:
        return abs(self.error) <= TOLERANCE and self.overflow == self.record.overflow


def predict(r: Record, mode: str, formula: Formula, gc_phases: int = 6) -> Prediction:
    from ctguard.model import whatif

    sc = record_scenario(r, mode, formula, gc_phases)
    res = whatif.run(sc)
    return Prediction(r, mode, res.headline.peak_entries - r.filler, res.headline.overflow,
                      sc.conns().baseline)


def _shape_mesh(r: Record) -> tuple[float, float, int]:
    from ctguard.model.ceph import CephOptions, _mesh

    return _mesh(r.hosts, r.osds_per_host, r.replicas_per_osd, r.pool_size, CephOptions())


def fit_formula(records: Iterable[Record], prior: Formula | None = None) -> Formula:
    """The shape -> inventory constants from every record with a measured inventory (one mean inventory per
    shape, so a shape with more scenarios does not weigh more). OSD<->OSD: least squares on entries per OSD
    = hb_conns x heartbeat peers + peer_conns x PG peers, relative errors, with a weak pull to the theory
    (4, 1) because the two regressors move together on small clusters; local, mon/mgr and client entries:
    ratio estimates. Without any inventory: the prior."""
    base = prior or Formula()
    by_shape: dict[str, list[Record]] = {}
    for r in records:
        if r.inventory is not None:
            by_shape.setdefault(r.shape_id, []).append(r)
    if not by_shape:
        return base
    rows = []
    for recs in by_shape.values():
        r0 = recs[0]
        n = len(recs)
        inv = {k: sum(getattr(x.inventory, k) for x in recs if x.inventory is not None) / n
               for k in ("osd_out", "osd_in", "local", "client", "mon_mgr")}
        pg_peers, hb_remote, pairs = _shape_mesh(r0)
        rows.append((r0, inv, pg_peers, hb_remote, pairs))
    # 2x2 normal equations with relative weights and a ridge toward the prior
    lam = 0.05
    s11 = s12 = s22 = b1 = b2 = 0.0
    for r0, inv, pg, hb, _ in rows:
        y = (inv["osd_out"] + inv["osd_in"]) / r0.osds_per_host
        w = 1.0 / max(1.0, y) ** 2
        s11 += w * hb * hb
        s12 += w * hb * pg
        s22 += w * pg * pg
        b1 += w * hb * y
        b2 += w * pg * y
    p1, p2 = base.hb_conns, base.peer_conns
    r1, r2 = lam / max(1.0, p1) ** 2, lam / max(1.0, p2) ** 2
    a11, a22 = s11 + r1, s22 + r2
    det = a11 * a22 - s12 * s12
    if det > 1e-12:
        hb_c = ((b1 + r1 * p1) * a22 - s12 * (b2 + r2 * p2)) / det
        pg_c = (a11 * (b2 + r2 * p2) - s12 * (b1 + r1 * p1)) / det
    else:
        hb_c, pg_c = p1, p2
    hb_c, pg_c = max(0.0, hb_c), max(0.0, pg_c)
    pairs_sum = sum(p for *_, p in rows)
    local = sum(inv["local"] for _, inv, *_ in rows) / pairs_sum if pairs_sum else base.local_per_pair
    osds = sum(r0.osds_per_host for r0, *_ in rows)
    mon = sum(inv["mon_mgr"] for _, inv, *_ in rows) / osds
    sessions = sum(r0.clients * r0.osds_per_host for r0, *_ in rows)
    client = sum(inv["client"] for _, inv, *_ in rows) / sessions if sessions else base.client_osds
    return dataclasses.replace(base, hb_conns=hb_c, peer_conns=pg_c, local_per_pair=local, mon_mgr=mon,
                               client_osds=client)


_PREDICTIONS: dict[tuple[int, tuple[float, ...]], float] = {}


def _error(r: Record, formula: Formula) -> float:
    """|relative error| of the mode-`measured` peak (one GC phase), memoised: folds share the grid's runs
    (the burst grids run on the prior inventory constants, which a measured inventory does not use but for
    how a down OSD's peers knock)."""
    key = (id(r), tuple(dataclasses.astuple(formula)))
    if key not in _PREDICTIONS:
        _PREDICTIONS[key] = abs(predict(r, "measured", formula, gc_phases=1).error)
    return _PREDICTIONS[key]


def _grid(recs: list[Record], formula: Formula, name: str, grid: tuple[float, ...]) -> float:
    """The grid value of `name` with the least mean relative peak error over `recs` in mode `measured`
    (ties: the first, i.e. the weaker effect)."""
    if not recs:
        return float(getattr(formula, name))
    best: tuple[float, float] | None = None
    for v in grid:
        fm = dataclasses.replace(formula, **{name: v})
        err = sum(_error(r, fm) for r in recs) / len(recs)
        if best is None or err < best[0] - 1e-9:
            best = (err, v)
    assert best is not None
    return best[1]


def fit_burst(records: Iterable[Record], formula: Formula) -> Formula:
    """The restart's fitted behaviours, from the measured peaks of the restarts that did not overflow (an
    overflowing one peaks at the limit, whatever the model): on the whole-host restarts the connection-race
    share, its growth with narrower pools and the faults per op (the clients' reconnect loop), by turns
    (race with no loop, the width exponent, the race again, the loop, the race again); then on the one-by-one
    restarts the re-opened share of the OSDs that stay up. Whether many light or busy clients loop is decided
    here, by the measurements."""
    recs = [r for r in records if r.restart and not r.overflow]
    whole = [r for r in recs if r.scenario != "one-by-one"]
    steps = [r for r in recs if r.scenario == "one-by-one"]
    prior = Formula()
    f = dataclasses.replace(prior, fault_per_op=0.0, race_width_exp=0.0)
    f = dataclasses.replace(f, race_fraction=_grid(whole, f, "race_fraction", RACE_GRID))
    f = dataclasses.replace(f, race_width_exp=_grid(whole, f, "race_width_exp", WIDTH_GRID))
    f = dataclasses.replace(f, race_fraction=_grid(whole, f, "race_fraction", RACE_GRID))
    f = dataclasses.replace(f, fault_per_op=_grid(whole, f, "fault_per_op", FAULT_GRID))
    f = dataclasses.replace(f, race_fraction=_grid(whole, f, "race_fraction", RACE_GRID))
    f = dataclasses.replace(f, repeer_fraction=_grid(steps, f, "repeer_fraction", REPEER_GRID))
    return dataclasses.replace(formula, race_fraction=f.race_fraction, race_width_exp=f.race_width_exp,
                               fault_per_op=f.fault_per_op, repeer_fraction=f.repeer_fraction)


def fit(records: Iterable[Record], prior: Formula | None = None) -> Formula:
    recs = list(records)
    return fit_burst(recs, fit_formula(recs, prior))


@dataclass(frozen=True)
class Fold:
    shape_id: str
    formula: Formula  # fitted on every other shape
    predictions: tuple[Prediction, ...]


def leave_one_shape_out(records: Iterable[Record], prior: Formula | None = None) -> list[Fold]:
    """For each shape: fit on every other shape, predict this one's restarts in both modes."""
    recs = [r for r in records if r.restart]
    shapes = sorted({r.shape_id for r in recs})
    folds = []
    for s in shapes:
        formula = fit([r for r in recs if r.shape_id != s], prior)
        preds = tuple(predict(r, mode, formula) for r in recs if r.shape_id == s for mode in MODES)
        folds.append(Fold(s, formula, preds))
    return folds


def table_markdown(folds: Iterable[Fold]) -> str:
    """The leave-one-shape-out table for docs/simulate.md: one row per record, both modes side by side."""
    lines = ["| shape (left out) | scenario | baseline | measured peak | measured overflow | predicted, measured "
             "inventory | error | predicted, shape only | error |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cell(p: Prediction) -> tuple[str, str]:
        ov = "overflow" if p.overflow else "holds"
        return f"{p.peak:,.0f} ({ov})", f"{p.error:+.0%}" + ("" if p.ok else " **FAIL**")

    for fold in folds:
        preds = list(fold.predictions)
        for a in [p for p in preds if p.mode == "measured"]:
            b = next(p for p in preds if p.mode == "shape" and p.record is a.record)
            r = a.record
            ca, cb = cell(a), cell(b)
            lines.append(f"| {fold.shape_id} | {r.scenario} | {r.baseline:,} | {r.peak:,} | "
                         f"{'yes' if r.overflow else 'no'} ({r.drops:,} drops) | {ca[0]} | {ca[1]} | "
                         f"{cb[0]} | {cb[1]} |")
    return "\n".join(lines)


def load_records(sweep_dir: str, lab_dir: str | None = None) -> list[Record]:
    """Every sweep record under `sweep_dir` (*.jsonl, subdirectories too) and, with `lab_dir`, the recorded 3 x 4 runs
    (`lab_dir`/<run>/run.json + <scenario>.jsonl) as one more shape. BadInput names the file and line."""
    import glob
    import json
    import os

    out: list[Record] = []
    # repeats of a shape (e.g. sweep/repeat/<id>.jsonl) are more records of that shape
    for path in sorted(glob.glob(os.path.join(sweep_dir, "**", "*.jsonl"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        doc = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise BadInput(f"{path}:{i}: not JSON ({e.msg})") from e
                    out.append(record(doc, f"{path}:{i}"))
    if lab_dir is not None:
        for run_file in sorted(glob.glob(os.path.join(lab_dir, "*", "run.json"))):
            d = os.path.dirname(run_file)
            with open(run_file, encoding="utf-8") as f:
                run = json.load(f)
            series = {}
            for path in sorted(glob.glob(os.path.join(d, "*.jsonl"))):
                with open(path, encoding="utf-8") as f:
                    series[os.path.basename(path)[:-6]] = [json.loads(x) for x in f if x.strip()]
            out += records_from_lab_run(series, run)
    return out


TABLE_BEGIN, TABLE_END = "<!-- loo-table -->", "<!-- /loo-table -->"


def replace_table(doc: str, table: str) -> str:
    """`doc` with the text between the table markers replaced by `table`."""
    a, b = doc.find(TABLE_BEGIN), doc.find(TABLE_END)
    if a < 0 or b < a:
        raise BadInput(f"no {TABLE_BEGIN} ... {TABLE_END} markers")
    return doc[:a + len(TABLE_BEGIN)] + "\n" + table + "\n" + doc[b:]


def replace_fitted(source: str, formula: Formula) -> str:
    """`source` (model/ceph.py) with its `FITTED = Formula(...)` line set to `formula`."""
    import re

    args = ", ".join(f"{k}={v!r}" for k, v in formula.as_dict().items())
    out, n = re.subn(r"^FITTED = Formula\([^)]*\)$", f"FITTED = Formula({args})", source, flags=re.M)
    if n != 1:
        raise BadInput("no `FITTED = Formula(...)` line")
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m ctguard.model.calibrate [--docs FILE] [--fitted FILE] [SWEEP_DIR] [LAB_DIR]`: the fit on every
    shape and the leave-one-shape-out table (what docs/simulate.md prints). --docs writes the table between
    the markers, --fitted the fit into model/ceph.py's FITTED (what the tests check after new sweep data)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    docs = fitted = None
    while args[:1] in (["--docs"], ["--fitted"]) and len(args) > 1:
        if args[0] == "--docs":
            docs = args[1]
        else:
            fitted = args[1]
        args = args[2:]
    sweep_dir = args[0] if args else "data/lab/sweep"
    lab_dir = args[1] if len(args) > 1 else "data/lab"
    try:
        recs = load_records(sweep_dir, lab_dir)
    except BadInput as e:
        print(f"calibrate: {e.message}", file=sys.stderr)
        return 3
    shapes = sorted({r.shape_id for r in recs})
    print(f"{len(recs)} records, {len(shapes)} shapes: {', '.join(shapes)}")
    every = fit(recs)
    print(f"fitted on every shape: {every.as_dict()}")
    if fitted is not None:
        with open(fitted, encoding="utf-8") as f:
            text = f.read()
        with open(fitted, "w", encoding="utf-8") as f:
            f.write(replace_fitted(text, every))
    folds = leave_one_shape_out(recs)
    table = table_markdown(folds)
    print(table)
    if docs is not None:
        with open(docs, encoding="utf-8") as f:
            text = f.read()
        with open(docs, "w", encoding="utf-8") as f:
            f.write(replace_table(text, table))
    bad = [p for f in folds for p in f.predictions if not p.ok]
    print(f"{len(bad)} of {sum(len(f.predictions) for f in folds)} predictions outside +-15 % or with the wrong "
          "overflow verdict")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
