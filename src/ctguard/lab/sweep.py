"""`lab sweep`: the restart burst measured across lab shapes, one JSON line per (shape, scenario).

For each shape the sweep brings a lab up (`cluster.up`), restarts the OSDs of its first host three ways with
`lab reproduce`'s machinery (reset, settle, sample at 10 Hz, observe until clean), and takes the lab down:

* `measure`: every OSD of the host at once, no filler: the host's baseline entries and its peak;
* `one-by-one`: the host's OSDs one at a time, 5 s from one start to the next stop, no filler: its peak;
* `all-at-once`: every OSD at once with the table squeezed to half the measured burst of free entries
  (filler, as in `lab reproduce`): overflow or not, drops. Only this one is run under the machine's heavy lock
  (/tmp/ctguard-heavy.lock): the kernel GC's early drop is global, so concurrent overflows disturb each other,
  while runs without filler are far from any limit.

Records go to `<out>/<shape id>.jsonl` (one file per shape, written when the shape is done), so a sweep split
into parts resumes: shapes whose file holds all three scenarios are skipped. The record format (schema 1) is
the contract the model's calibration codes against (docs/lab.md, "The sweep").
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ctguard.errors import BadInput, CannotRead, CtguardError
from ctguard.kernel import ctdump
from ctguard.lab import config as cfg
from ctguard.lab.cluster import Progress, _noop
from ctguard.lab.reproduce import MEASURE, Reproducer, Result, Scenario, _ceph_version
from ctguard.lab.sampler import Record
from ctguard.model.breakdown import PROTO_NAMES

SCHEMA = 1
DEFAULT_PREFIX = "sw"
DEFAULT_OUT = os.path.join("data", "lab", "sweep")
HEAVY_LOCK = "/tmp/ctguard-heavy.lock"
GAP = 5.0
LIGHT_RATE = 3.0  # ops/s of a "light" client
ONE_BY_ONE = Scenario("one-by-one", f"one at a time, {GAP:g} s apart, no filler", all_at_once=False, gap=GAP,
                      headroom=None)
SQUEEZED = Scenario("all-at-once", "all OSDs at once, free entries = burst/2", expect="drops")
SCENARIOS = (MEASURE, ONE_BY_ONE, SQUEEZED)
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)

_ID_RE = re.compile(r"^(\d+)x(\d+)-s(\d+)-pg(\d+)-c(\d+)(?:-r(\d+(?:\.\d+)?))?(?:-(memstore|bluestore))?$")



@dataclass(frozen=True)
class Shape:
    hosts: int
    osds_per_host: int
    pool_size: int
    pg_num: int
    clients: int = 1
    client_rate: float = cfg.DEFAULT_CLIENT_RATE
    store: str = "memstore"

    @property
    def id(self) -> str:
        """`3x5-s3-pg128-c1`; `-r3` when the client rate is not the default 40 ops/s, `-bluestore` for
        BlueStore. parse_shape() reads it back."""
        rate = "" if self.client_rate == cfg.DEFAULT_CLIENT_RATE else f"-r{self.client_rate:g}"
        store = "" if self.store == "memstore" else f"-{self.store}"
        return f"{self.hosts}x{self.osds_per_host}-s{self.pool_size}-pg{self.pg_num}-c{self.clients}{rate}{store}"

    def spec(self, prefix: str = DEFAULT_PREFIX, base_dir: str | None = None) -> cfg.LabSpec:
        """The lab spec (validates the shape: BadInput for one the lab cannot build)."""
        return cfg.LabSpec(prefix=prefix, hosts=self.hosts, osds_per_host=self.osds_per_host, store=self.store,
                           clients=self.clients, base_dir=base_dir, size=self.pool_size, pgs=self.pg_num,
                           client_rate=self.client_rate)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.spec().shape()}


def parse_shape(text: str) -> Shape:
    m = _ID_RE.match(text.strip())
    if not m:
        raise BadInput(f"bad shape {text!r}: HOSTSxOSDS-sSIZE-pgPGS-cCLIENTS[-rRATE][-bluestore], "
                       "e.g. 3x5-s3-pg128-c1 or 4x3-s2-pg64-c40-r3")
    h, o, s, pg, c, rate, store = m.groups()
    shape = Shape(int(h), int(o), int(s), int(pg), int(c), float(rate) if rate else cfg.DEFAULT_CLIENT_RATE,
                  store or "memstore")
    shape.spec()  # validate now, not after an hour of other shapes
    return shape


# The default set: hosts 2-6, OSDs per host 2-6, pool size 2 and 3, ~10 to ~170 PG replicas per OSD, 1, 10 and
# 40 clients, light (3 ops/s each) and busy (40 ops/s each), memstore and BlueStore; at most 24 OSDs (a 2-core
# machine). The first three are the shapes of issue 14's report (3x5 s3 128 PGs; 4x3 s2 64 PGs, with 1 and
# with 40 clients).
SHAPES: tuple[Shape, ...] = (
    Shape(3, 5, 3, 128, 1),                              # 25.6 PG replicas per OSD
    Shape(4, 3, 2, 64, 1),                               # 10.7
    Shape(4, 3, 2, 64, 40, LIGHT_RATE),                  # 40 light clients
    Shape(2, 2, 2, 64, 1),                               # 32, the smallest cluster
    Shape(3, 4, 3, 256, 10),                             # 64, 10 busy clients
    Shape(6, 2, 3, 128, 10, LIGHT_RATE),                 # 32, six hosts, 10 light clients
    Shape(2, 6, 2, 1024, 1),                             # 170.7, six OSDs per host
    Shape(5, 4, 3, 256, 1),                              # 38.4, 20 OSDs
    # more points between and around them
    Shape(3, 4, 3, 64, 1),                               # 16, the default lab (data/lab/<run id>/)
    Shape(3, 3, 2, 128, 1, store="bluestore"),           # 28.4 on BlueStore
    Shape(4, 6, 3, 512, 1),                              # 64, 24 OSDs
    Shape(2, 4, 2, 256, 40, LIGHT_RATE),                 # 64, 40 light clients on two hosts
    Shape(6, 3, 3, 512, 1),                              # 85.3, 18 OSDs
    Shape(5, 2, 3, 32, 10),                              # 9.6, 10 busy clients
    Shape(3, 6, 3, 256, 1),                              # 42.7, six OSDs per host, size 3
    Shape(4, 4, 2, 512, 10, LIGHT_RATE),                 # 64, 10 light clients, size 2
    Shape(5, 3, 2, 128, 1),                              # 17.1
    Shape(3, 2, 3, 256, 40, LIGHT_RATE),                 # 128, 40 light clients, size 3
    Shape(4, 5, 2, 1024, 1),                             # 102.4, 20 OSDs
    Shape(2, 5, 2, 64, 10),                              # 12.8, 10 busy clients
)


def select(names: Sequence[str]) -> list[Shape]:
    """The shapes to run: the default set, or the given ids (any parseable id, in the given order)."""
    if not names or list(names) == ["all"]:
        return list(SHAPES)
    out: list[Shape] = []
    for n in names:
        s = parse_shape(n)
        if s not in out:
            out.append(s)
    return out


# -- records ---------------------------------------------------------------------------------------------------
def shape_file(out_dir: str, shape_id: str) -> str:
    return os.path.join(out_dir, f"{shape_id}.jsonl")


def read_records(path: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except ValueError as e:
                        raise CannotRead(f"{path}:{n}: not JSON ({e})") from e
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CannotRead(f"cannot read {path}: {e.strerror}") from e
    return out


def recorded(out_dir: str, shape_id: str) -> set[str]:
    """Scenarios already recorded for this shape."""
    return {str(r.get("scenario")) for r in read_records(shape_file(out_dir, shape_id))}


def is_done(out_dir: str, shape_id: str) -> bool:
    return set(SCENARIO_NAMES) <= recorded(out_dir, shape_id)


def entry_row(e: ctdump.Entry) -> list[Any]:
    """[proto, state, orig_src, orig_dst, orig_sport, orig_dport] of one entry (state None unless TCP)."""
    fam = socket.AF_INET6 if len(e.src) == 16 else socket.AF_INET
    return [PROTO_NAMES.get(e.proto, str(e.proto)), e.state_name, socket.inet_ntop(fam, e.src),
            socket.inet_ntop(fam, e.dst), e.sport, e.dport]


def ceph_release(version_line: str) -> str:
    """"ceph version 16.2.15 (618f...) pacific (stable)" -> "16.2.15" ("" when not recognised)."""
    m = re.search(r"ceph version (\S+)", version_line)
    return m.group(1) if m else ""


def timeline(records: Sequence[Record], filler: int) -> list[list[Any]]:
    """One point per second of the window: [t (s since the first OSD stop, whole), peak entries minus filler
    that second, drops so far]. Small enough to keep in the record, enough to see how the burst builds."""
    ct = [r for r in records if r["kind"] == "ct"]
    if not ct:
        return []
    stops = [float(r["t"]) for r in records if r["kind"] == "event" and r["event"] == "stop"]
    t_stop = min(stops) if stops else float(ct[0]["t"])
    drop0 = int(ct[0]["drop"])
    per: dict[int, list[int]] = {}
    for r in ct:
        sec = int((float(r["t"]) - t_stop) // 1)
        cur = per.setdefault(sec, [0, 0])
        cur[0] = max(cur[0], int(r["count"]) - filler)
        cur[1] = max(cur[1], int(r["drop"]) - drop0)
    return [[s, v[0], v[1]] for s, v in sorted(per.items())]


def peak_states(records: Sequence[Record]) -> dict[str, int]:
    """The 2 Hz state breakdown (filler excluded) with the most entries: what the peak is made of."""
    best: dict[str, int] = {}
    for r in records:
        if r["kind"] == "states" and sum(r["by_state"].values()) > sum(best.values()):
            best = {str(k): int(v) for k, v in r["by_state"].items()}
    return best


def make_record(shape: Shape, host: str, addresses: dict[str, Any], sc: Scenario, res: Result, max_: int,
                baseline_entries: Sequence[Sequence[Any]], records: Sequence[Record], ceph_version: str,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line of the sweep (schema 1). The contract's fields first; more may be added, never renamed."""
    peak = res.peak - res.filler
    states = Counter(str(row[1] or row[0]) for row in baseline_entries)
    return {
        "schema": SCHEMA,
        "shape": shape.to_json(),
        "scenario": sc.name,
        "host": host,
        "gap_s": sc.gap if not sc.all_at_once else 0,
        "addresses": addresses,
        "max": max_,
        "baseline": res.baseline,
        "baseline_entries": [list(r) for r in baseline_entries],
        "free": res.free_before if sc.headroom is not None else None,
        "filler": res.filler,
        "peak": peak,
        "burst": peak - res.baseline,
        "drops": res.drops,
        "overflow": res.drops > 0,
        "osds_marked_down": res.osds_marked_down,
        "fault_lines_per_s": res.fault_lines_per_s,
        "load": list(res.loadavg),
        "ts": res.started,
        "ceph_version": ceph_version,
        # beyond the contract
        "baseline_states": dict(sorted(states.items())),
        "peak_states": peak_states(records),
        "peak_over_baseline": res.peak_over_baseline,
        "margin": res.margin,
        "early_drops": res.early_drops,
        "first_drop_s": res.first_drop_s,
        "overflow_seconds": res.overflow_seconds,
        "seconds_to_clean": res.seconds_to_clean,
        "wrongly_marked_down": res.wrongly_marked_down,
        # the asynchronous client's figures (lab/clients.py); the sweep's records up to 2026-12-06 were made
        # with the synchronous client and hold client_errors / client_stalled_s instead
        "client_blocked_s": res.client_blocked_s,
        "client_failed_ops": res.client_failed_ops,
        "client_timeouts": res.client_timeouts,
        "client_ops_per_s": res.client_ops_per_s,
        "client_worst_ms": res.client_worst_ms,
        "slow_ops_peak": res.slow_ops_peak,
        "restarted": res.restarted,
        "ended_by": res.ended_by,
        "window_s": res.window_s,
        "errors": list(res.errors),
        "timeline": timeline(records, res.filler),
        **(extra or {}),
    }


def check_record(r: Any) -> list[str]:
    """What is wrong with one record against the contract (empty: nothing)."""
    bad: list[str] = []
    if not isinstance(r, dict):
        return ["not an object"]

    def typed(key: str, types: tuple[type, ...], nullable: bool = False) -> bool:
        v = r.get(key)
        if (v is None and nullable) or (isinstance(v, types) and not (isinstance(v, bool) and bool not in types)):
            return True
        bad.append(f"{key}: {v!r} is not {'/'.join(t.__name__ for t in types)}")
        return False

    typed("schema", (int,))
    if r.get("schema") != SCHEMA:
        bad.append(f"schema {r.get('schema')!r}")
    shape = r.get("shape")
    if not isinstance(shape, dict):
        bad.append("shape is not an object")
    else:
        for k in ("hosts", "osds_per_host", "pool_size", "pg_num", "clients"):
            if not isinstance(shape.get(k), int) or isinstance(shape.get(k), bool) or shape[k] < 0:
                bad.append(f"shape.{k}: {shape.get(k)!r}")
        for k in ("pg_replicas_per_osd", "client_rate"):
            if not isinstance(shape.get(k), int | float):
                bad.append(f"shape.{k}: {shape.get(k)!r}")
        if shape.get("store") not in cfg.STORES:
            bad.append(f"shape.store: {shape.get('store')!r}")
        try:
            if parse_shape(str(shape.get("id"))).to_json() != shape:
                bad.append(f"shape.id {shape.get('id')!r} does not match the shape's fields")
        except BadInput as e:
            bad.append(e.message)
    if r.get("scenario") not in SCENARIO_NAMES:
        bad.append(f"scenario {r.get('scenario')!r}")
    typed("host", (str,))
    typed("gap_s", (int, float))
    addr = r.get("addresses")
    if not (isinstance(addr, dict) and isinstance(addr.get("mon"), str) and isinstance(addr.get("clients"), list)
            and isinstance(addr.get("hosts"), dict) and r.get("host") in addr["hosts"]):
        bad.append(f"addresses: {addr!r}")
    for k in ("max", "baseline", "filler", "peak", "burst", "drops", "osds_marked_down"):
        typed(k, (int,))
    typed("free", (int,), nullable=True)
    typed("overflow", (bool,))
    typed("fault_lines_per_s", (int, float))
    typed("ts", (str,))
    typed("ceph_version", (str,))
    rows = r.get("baseline_entries")
    if not isinstance(rows, list) or not all(isinstance(x, list) and len(x) == 6 for x in rows):
        bad.append("baseline_entries: not a list of 6-element rows")
    load = r.get("load")
    if not (isinstance(load, list) and len(load) == 2 and all(isinstance(x, int | float) for x in load)):
        bad.append(f"load: {load!r}")
    if bad:
        return bad
    if r["peak"] < r["baseline"]:
        bad.append(f"peak {r['peak']} < baseline {r['baseline']}")
    if r["burst"] != r["peak"] - r["baseline"]:
        bad.append(f"burst {r['burst']} != peak - baseline")
    if r["overflow"] != (r["drops"] > 0):
        bad.append(f"overflow {r['overflow']} but {r['drops']} drops")
    if r["scenario"] == "all-at-once":
        if r["free"] is None or r["filler"] <= 0:
            bad.append("all-at-once without filler")
    elif r["free"] is not None or r["filler"] != 0:
        bad.append(f"{r['scenario']} with filler")
    if r["gap_s"] != (GAP if r["scenario"] == "one-by-one" else 0):
        bad.append(f"gap_s {r['gap_s']} for {r['scenario']}")
    return bad


# -- running ---------------------------------------------------------------------------------------------------
@contextmanager
def heavy_lock(path: str = HEAVY_LOCK, progress: Progress = _noop) -> Iterator[float]:
    """The machine's lock for runs that squeeze a table near full: the same flock(2) as `flock PATH cmd`.
    Yields the seconds waited for it."""
    t = time.monotonic()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("lock-wait", {"lock": path})
            fcntl.flock(fd, fcntl.LOCK_EX)
        waited = round(time.monotonic() - t, 1)
        progress("lock-held", {"lock": path, "waited_s": waited})
        yield waited
    finally:
        os.close(fd)  # releases the flock


class _SweepReproducer(Reproducer):
    """lab reproduce's machinery, keeping what the sweep records and reproduce does not: the host's real
    table at the baseline (dumped right after the settle, before any filler) and the raw samples."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.baseline_entries: list[list[Any]] = []
        self.last_records: list[Record] = []

    def _settle(self, quiet: float = 3.0, timeout: float = 30.0) -> int:
        n = super()._settle(quiet, timeout)
        self.baseline_entries = [entry_row(e) for e in ctdump.entries(self.ns)]
        return n

    def _summarise(self, res: Result, records: list[Record], t0: float, t1: float, files: list[str],
                   offsets: dict[str, int]) -> None:
        super()._summarise(res, records, t0, t1, files, offsets)
        self.last_records = records


@dataclass
class ShapeRun:
    shape: Shape
    status: str = ""  # "recorded" | "skipped" | "failed"
    wall_s: float = 0.0
    lab_up_s: float = 0.0
    file: str = ""
    error: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"id": self.shape.id, "status": self.status, "wall_s": self.wall_s, "lab_up_s": self.lab_up_s,
                "file": self.file, "error": self.error,
                "scenarios": [{k: r[k] for k in ("scenario", "baseline", "peak", "burst", "free", "drops",
                                                  "overflow", "osds_marked_down")} for r in self.records]}


def run_shape(shape: Shape, out_dir: str, prefix: str = DEFAULT_PREFIX, base_dir: str | None = None,
              progress: Progress = _noop, max_window: float = 150.0, lock_path: str = HEAVY_LOCK) -> ShapeRun:
    """Up, the three scenarios, down; the shape's lines written to out_dir when all three are done."""
    from ctguard.lab.cluster import down, up

    spec = shape.spec(prefix, base_dir)
    sr = ShapeRun(shape, file=shape_file(out_dir, shape.id))
    t0 = time.monotonic()
    if os.path.exists(spec.dir):
        raise BadInput(f"lab {prefix!r} already exists ({spec.dir}): the sweep brings up its own labs; "
                       f"`ctguard lab down --prefix {prefix}` first or pick another --prefix")
    progress("shape", {"shape": shape.id, **spec.shape()})
    try:
        lab = up(spec, progress=lambda s, f: progress(s, {"shape": shape.id, **f}) if s != "waiting" else None)
        sr.lab_up_s = round(time.monotonic() - t0, 1)
        rep = _SweepReproducer(lab, None, [os.path.join(lab.dir, "runs")], progress=progress,
                               max_window=max_window, plots=False)
        addresses = {"mon": cfg.MON_IP, "clients": [cfg.CLIENT_IP] if shape.clients else [],
                     "hosts": {h.name: h.ip for h in lab.state.hosts}}
        version = ceph_release(_ceph_version())
        extra_all = {"osds": lab.osd_ids(rep.host), "kernel": os.uname().release, "run_id": rep.run_id,
                     "lab_up_s": sr.lab_up_s}
        rep._debug_ms(True)
        try:
            for sc in SCENARIOS:
                t_sc = time.monotonic()
                lock_wait = None
                if sc.headroom is not None:
                    with heavy_lock(lock_path, progress) as lock_wait:
                        res = rep.scenario(sc)
                else:
                    res = rep.scenario(sc)
                if sc is MEASURE:
                    rep.baseline, rep.burst = res.baseline, max(1, res.burst)
                extra = {**extra_all, "scenario_wall_s": round(time.monotonic() - t_sc, 1),
                         "lock_wait_s": lock_wait}
                sr.records.append(make_record(shape, rep.host, addresses, sc, res, rep.max, rep.baseline_entries,
                                              rep.last_records, version, extra))
        finally:
            rep._restore()
    except BaseException as e:
        sr.status = "failed"
        sr.error = e.message if isinstance(e, CtguardError) else f"{type(e).__name__}: {e}"
        raise
    finally:
        try:
            down(prefix, base_dir)
        except CtguardError as e:
            progress("down-failed", {"shape": shape.id, "error": e.message})
        sr.wall_s = round(time.monotonic() - t0, 1)
    for r in sr.records:
        r["shape_wall_s"] = sr.wall_s
    os.makedirs(out_dir, exist_ok=True)
    tmp = sr.file + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r, sort_keys=False) + "\n" for r in sr.records)
    os.replace(tmp, sr.file)
    sr.status = "recorded"
    progress("recorded", {"shape": shape.id, "file": sr.file, "wall_s": sr.wall_s})
    return sr


def sweep(shapes: Sequence[Shape], out_dir: str, prefix: str = DEFAULT_PREFIX, base_dir: str | None = None,
          resume: bool = True, progress: Progress = _noop, max_window: float = 150.0,
          lock_path: str = HEAVY_LOCK) -> list[ShapeRun]:
    """Every shape in turn; recorded shapes skipped when resuming. A shape that fails is reported and the
    sweep goes on with the next; an interrupt stops it (after the lab is down)."""
    runs: list[ShapeRun] = []
    for n, shape in enumerate(shapes, 1):
        if resume and is_done(out_dir, shape.id):
            runs.append(ShapeRun(shape, "skipped", file=shape_file(out_dir, shape.id),
                                 records=read_records(shape_file(out_dir, shape.id))))
            progress("skipped", {"shape": shape.id, "reason": "already recorded", "n": n, "of": len(shapes)})
            continue
        progress("start", {"shape": shape.id, "n": n, "of": len(shapes)})
        try:
            runs.append(run_shape(shape, out_dir, prefix, base_dir, progress, max_window, lock_path))
        except CtguardError as e:
            runs.append(ShapeRun(shape, "failed", error=e.message))
            progress("failed", {"shape": shape.id, "error": e.message})
            if isinstance(e, BadInput) and "already exists" in e.message:
                break  # every next shape would hit the same
    return runs
