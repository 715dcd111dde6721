"""Lab shapes (pool size, pg_num or PG replicas per OSD, clients and their rate, store) and the sweep's pure
parts: shape ids, records against the contract, resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import pytest

from ctguard.errors import BadInput
from ctguard.kernel import nfnetlink as nl
from ctguard.kernel.ctdump import Entry
from ctguard.lab import config as cfg
from ctguard.lab import sweep as sw
from ctguard.lab.reproduce import MEASURE, Result
from ctguard.lab.state import LabState, load_state

CTGUARD = [sys.executable, "-c", "from ctguard.cli import main; main()"]


# -- config ---------------------------------------------------------------------------------------------------
def test_defaults_unchanged() -> None:
    spec = cfg.LabSpec()
    assert (spec.pool_size, spec.pg_num, spec.min_size, spec.client_rate) == (3, 64, 2, 40.0)
    assert cfg.LabSpec(hosts=2, osds_per_host=2).pool_size == 2
    assert spec.shape() == {"hosts": 3, "osds_per_host": 4, "pool_size": 3, "pg_num": 64,
                            "pg_replicas_per_osd": 16.0, "clients": 1, "client_rate": 40.0, "store": "memstore"}


def test_explicit_shape() -> None:
    spec = cfg.LabSpec(hosts=3, osds_per_host=5, size=3, pgs=128, clients=40, client_rate=3, store="bluestore")
    assert spec.shape() == {"hosts": 3, "osds_per_host": 5, "pool_size": 3, "pg_num": 128,
                            "pg_replicas_per_osd": 25.6, "clients": 40, "client_rate": 3, "store": "bluestore"}
    conf = cfg.ceph_conf(spec, "f")
    assert "osd pool default size = 3" in conf and "osd objectstore = bluestore" in conf
    two = cfg.ceph_conf(cfg.LabSpec(hosts=4, osds_per_host=3, size=2, pgs=64), "f")
    assert "osd pool default size = 2" in two and "osd pool default min size = 1" in two


@pytest.mark.parametrize(("per_osd", "osds", "size", "pg_num"), [
    (100, 12, 3, 512),    # exactly 400 -> nearest power of two on a log scale: 512 (log2 8.64)
    (30, 20, 3, 256),     # 200 -> 256 (38.4 per OSD) rather than 128 (19.2)
    (32, 4, 2, 64),       # exact
    (170, 12, 2, 1024),   # 1020 -> 1024
    (0.01, 3, 3, 1),      # never below one PG
    (1e6, 12, 1, 4096),   # never above the lab's cap
])
def test_pgs_per_osd_to_power_of_two(per_osd: float, osds: int, size: int, pg_num: int) -> None:
    assert cfg.pg_num_for(per_osd, osds, size) == pg_num


def test_pgs_per_osd_flag() -> None:
    spec = cfg.LabSpec(hosts=2, osds_per_host=6, size=2, pgs_per_osd=170)
    assert spec.pg_num == 1024 and spec.pg_replicas_per_osd == 170.7


@pytest.mark.parametrize("kw", [
    {"size": 4},                              # 3 hosts: a 4th copy has no host
    {"size": 0},
    {"pgs": 100},                             # not a power of two
    {"pgs": 0},
    {"pgs": 8192},
    {"pgs": 64, "pgs_per_osd": 10.0},         # both
    {"pgs_per_osd": 0.0},
    {"pgs_per_osd": -5.0},
    {"clients": 65},
    {"client_rate": 0.0},
    {"client_rate": 5000.0},
    {"hosts": 2, "osds_per_host": 1, "size": 2, "pgs": 1024},   # 2,050 PG replicas per OSD > mon limit
])
def test_bad_shape(kw: dict[str, Any]) -> None:
    with pytest.raises(BadInput):
        cfg.LabSpec(**kw)


def test_state_records_the_shape(tmp_path: object) -> None:
    d = str(tmp_path)
    shape = cfg.LabSpec(hosts=4, osds_per_host=3, size=2, pgs=64, clients=40, client_rate=3).shape()
    st = LabState(prefix="ctl1", dir=d, conf=os.path.join(d, "ceph.conf"), shape=shape)
    st.save()
    back = load_state(d)
    assert back is not None and back.shape == shape
    # a journal from before shapes were recorded still loads
    doc = st.to_json()
    del doc["shape"]
    assert LabState.from_json(doc).shape == {}


def _ctguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CTGUARD + list(args), capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("args", "word"), [
    (["lab", "up", "--prefix", "ctlzz9", "--pool-size", "4"], "--pool-size"),
    (["lab", "up", "--prefix", "ctlzz9", "--pg-num", "100"], "--pg-num"),
    (["lab", "up", "--prefix", "ctlzz9", "--pg-num", "64", "--pgs-per-osd", "30"], "not both"),
    (["lab", "up", "--prefix", "ctlzz9", "--client-rate", "0"], "--client-rate"),
    (["lab", "sweep", "--shape", "3x5"], "bad shape"),
    (["lab", "sweep", "--shape", "2x2-s3-pg64-c1"], "--pool-size"),
])
def test_cli_bad_shape_is_one_line(args: list[str], word: str) -> None:
    out = _ctguard(*args)
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctguard: ") and word in lines[0], out.stderr


# -- shape ids ------------------------------------------------------------------------------------------------
def test_shape_ids_round_trip() -> None:
    for s in sw.SHAPES:
        assert sw.parse_shape(s.id) == s
    assert sw.Shape(3, 5, 3, 128).id == "3x5-s3-pg128-c1"
    light = sw.parse_shape("4x3-s2-pg64-c40-r3")
    assert (light.clients, light.client_rate, light.store) == (40, 3.0, "memstore")
    blue = sw.parse_shape("2x2-s2-pg64-c1-bluestore")
    assert blue.store == "bluestore" and blue.id == "2x2-s2-pg64-c1-bluestore"
    assert sw.parse_shape("2x2-s2-pg64-c0-r2.5").id == "2x2-s2-pg64-c0-r2.5"


def test_default_set_covers_the_issue() -> None:
    shapes = sw.SHAPES
    assert len(shapes) >= 8 and len({s.id for s in shapes}) == len(shapes)
    assert {s.hosts for s in shapes} >= {2, 3, 4, 5, 6}
    assert {s.osds_per_host for s in shapes} >= {2, 3, 4, 5, 6}
    assert {s.pool_size for s in shapes} == {2, 3}
    per_osd = [s.spec().pg_replicas_per_osd for s in shapes]
    assert min(per_osd) <= 30 and max(per_osd) >= 150
    assert {s.clients for s in shapes} >= {1, 10, 40}
    assert {s.client_rate for s in shapes if s.clients > 1} >= {sw.LIGHT_RATE, cfg.DEFAULT_CLIENT_RATE}
    assert {s.store for s in shapes} == set(cfg.STORES)
    assert all(s.hosts * s.osds_per_host <= 24 for s in shapes)


def test_select() -> None:
    assert sw.select([]) == list(sw.SHAPES) and sw.select(["all"]) == list(sw.SHAPES)
    assert [s.id for s in sw.select(["2x2-s2-pg64-c1", "2x2-s2-pg64-c1", "6x2-s3-pg128-c10-r3"])] == \
        ["2x2-s2-pg64-c1", "6x2-s3-pg128-c10-r3"]
    with pytest.raises(BadInput):
        sw.select(["9x2-s2-pg64-c1"])  # 9 hosts: more than the lab builds


# -- records --------------------------------------------------------------------------------------------------
def _entry(src: str, dst: str, sport: int, dport: int, proto: int = 6, state: int = 3) -> Entry:
    a, b = socket.inet_aton(src), socket.inet_aton(dst)
    return Entry(socket.AF_INET, proto, a, b, sport, dport, b, a, dport, sport, nl.IPS_ASSURED, state, 1, 0)


def test_entry_row() -> None:
    assert sw.entry_row(_entry("198.18.0.11", "198.18.0.12", 40000, 6800)) == \
        ["tcp", "ESTABLISHED", "198.18.0.11", "198.18.0.12", 40000, 6800]
    assert sw.entry_row(_entry("127.0.0.1", "127.0.0.1", 0, 0, proto=1, state=-1))[:2] == ["icmp", None]


def test_ceph_release() -> None:
    assert sw.ceph_release("ceph version 16.2.15 (618f440892089921c3e944a991122ddc44e60516) pacific (stable)") \
        == "16.2.15"
    assert sw.ceph_release("") == ""


def _records() -> list[dict[str, Any]]:
    t = [{"t": 2.0 + i / 10, "kind": "ct", "count": c, "drop": d, "early_drop": 0}
         for i, (c, d) in enumerate([(300, 0), (300, 0), (420, 0), (430, 5), (430, 9)])]
    return [*t, {"t": 2.15, "kind": "event", "event": "stop", "osd": 0, "pid": 5},
            {"t": 2.2, "kind": "states", "by_state": {"ESTABLISHED": 90, "TIME_WAIT": 40}},
            {"t": 2.3, "kind": "states", "by_state": {"ESTABLISHED": 100}}]


def _record(scenario: str = "all-at-once", **res_kw: Any) -> dict[str, Any]:
    sc = {"measure": MEASURE, "one-by-one": sw.ONE_BY_ONE, "all-at-once": sw.SQUEEZED}[scenario]
    kw: dict[str, Any] = {"baseline": 100, "peak": 430, "filler": 200, "free_before": 50, "drops": 9,
                          "loadavg": [0.5, 0.7], "started": "2026-12-06T10:00:00Z"}
    if sc.headroom is None:
        kw.update(filler=0, peak=230, drops=0, free_before=262000)
    kw.update(res_kw)
    res = Result(sc.name, sc.title, **kw)
    rows = [sw.entry_row(_entry("198.18.0.11", "198.18.0.12", 40000 + i, 6800)) for i in range(3)]
    addresses = {"mon": cfg.MON_IP, "clients": [cfg.CLIENT_IP], "hosts": {"sw-h1": "198.18.0.11"}}
    return sw.make_record(sw.Shape(3, 5, 3, 128), "sw-h1", addresses, sc, res, 262144, rows, _records(),
                          "16.2.15", {"lab_up_s": 20.0})


def test_make_record_follows_the_contract() -> None:
    r = _record()
    assert sw.check_record(r) == []
    assert (r["peak"], r["burst"], r["free"], r["overflow"], r["gap_s"]) == (230, 130, 50, True, 0)
    assert r["shape"]["id"] == "3x5-s3-pg128-c1" and r["shape"]["pg_replicas_per_osd"] == 25.6
    assert r["baseline_states"] == {"ESTABLISHED": 3} and r["peak_states"] == {"ESTABLISHED": 90, "TIME_WAIT": 40}
    # one point per second since the first stop (t=2.15): entries minus filler, drops so far
    assert r["timeline"] == [[-1, 100, 0], [0, 230, 9]]
    assert r["lab_up_s"] == 20.0
    json.dumps(r)  # plain JSON
    m = _record("measure")
    assert sw.check_record(m) == [] and m["free"] is None and m["filler"] == 0 and not m["overflow"]
    o = _record("one-by-one")
    assert sw.check_record(o) == [] and o["gap_s"] == 5.0


@pytest.mark.parametrize(("change", "word"), [
    ({"overflow": False}, "overflow"),
    ({"peak": 50, "burst": -50}, "peak 50 < baseline"),
    ({"burst": 1}, "burst"),
    ({"drops": "9"}, "drops"),
    ({"free": None}, "without filler"),
    ({"shape": {**sw.Shape(3, 5, 3, 128).to_json(), "pg_num": 64}}, "does not match"),
    ({"scenario": "stagger"}, "scenario"),
    ({"baseline_entries": [["tcp"]]}, "baseline_entries"),
    ({"host": "sw-h9"}, "addresses"),
])
def test_check_record_sees_the_bad_case(change: dict[str, Any], word: str) -> None:
    r = {**_record(), **change}
    errs = sw.check_record(r)
    assert errs and any(word in e for e in errs), errs


def test_resume_reads_what_is_recorded(tmp_path: object) -> None:
    out = str(tmp_path)
    sid = "3x5-s3-pg128-c1"
    assert sw.recorded(out, sid) == set() and not sw.is_done(out, sid)
    with open(sw.shape_file(out, sid), "w") as f:
        f.write(json.dumps(_record("measure")) + "\n")
    assert sw.recorded(out, sid) == {"measure"} and not sw.is_done(out, sid)
    with open(sw.shape_file(out, sid), "a") as f:
        f.write(json.dumps(_record("one-by-one")) + "\n" + json.dumps(_record()) + "\n")
    assert sw.is_done(out, sid)
    runs = sw.sweep([sw.Shape(3, 5, 3, 128)], out)  # skipped: nothing is brought up
    assert [(r.status, len(r.records)) for r in runs] == [("skipped", 3)]


def test_heavy_lock_is_the_flock_of_flock1(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "heavy.lock")
    with sw.heavy_lock(path) as waited:
        assert waited >= 0
        busy = subprocess.run(["flock", "-n", path, "true"], check=False)
        assert busy.returncode == 1  # held: flock(1) cannot take it
    free = subprocess.run(["flock", "-n", path, "true"], check=False)
    assert free.returncode == 0


def test_cli_list_and_a_recorded_shape_runs_nothing(tmp_path: object) -> None:
    out = str(tmp_path)
    sid = "3x5-s3-pg128-c1"
    with open(sw.shape_file(out, sid), "w") as f:
        for sc in sw.SCENARIO_NAMES:
            f.write(json.dumps(_record(sc)) + "\n")
    listed = _ctguard("lab", "sweep", "--list", "--json", "--out", out)
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["schema"] == 1
    done = {s["id"]: s["done"] for s in doc["shapes"]}
    assert done[sid] is True and done["2x2-s2-pg64-c1"] is False and len(done) == len(sw.SHAPES)
    # everything asked is recorded: nothing is brought up (no root needed), the figures come from the file
    again = _ctguard("lab", "sweep", "--shape", sid, "--out", out, "--json")
    assert again.returncode == 0, again.stderr
    shapes = json.loads(again.stdout)["shapes"]
    assert [(s["id"], s["status"]) for s in shapes] == [(sid, "skipped")]
    assert {s["scenario"]: s["drops"] for s in shapes[0]["scenarios"]} == \
        {"measure": 0, "one-by-one": 0, "all-at-once": 9}
    table = _ctguard("lab", "sweep", "--shape", sid, "--out", out)
    assert table.returncode == 0 and sid in table.stdout and "230 (2.30x)" in table.stdout, table.stdout
