"""The lab for real: Debian's Ceph 16.2.15 daemons in network namespaces (root, real kernel).

Small on purpose (2 hosts x 2 OSDs, CI share <= 6 minutes): HEALTH_OK with all PGs active+clean, the incident
reproduced with filler (all at once drops packets, the untracked-ports remedy drops none), `lab down` leaves
nothing; and `lab down` cleans up after a `lab up` killed half-way. Each test uses its own `ctl<hex>` prefix
and a temporary lab dir, so it never meets another lab on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict

import pytest

from ctguard.lab import config as cfg
from ctguard.lab import network as net
from ctguard.lab import procs
from ctguard.lab.cluster import Lab, down, up
from ctguard.lab.reproduce import Reproducer, check_scenarios

pytestmark = pytest.mark.lab


def _need_ceph() -> None:
    for tool in ("ceph-mon", "ceph-osd", "ceph-mgr", "ceph", "nft", "conntrack"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make setup`")


def _assert_nothing_left(prefix: str, base: str) -> None:
    d = cfg.lab_dir(prefix, base)
    conf = os.path.join(d, "ceph.conf")
    assert [n for n in net.list_netns() if n.startswith(prefix + "-")] == []
    assert procs.scan(conf) == []
    assert not os.path.exists(d)
    with open("/proc/self/mountinfo") as f:
        assert prefix + "-" not in f.read()


@pytest.fixture
def lab_prefix(tmp_path: object) -> Iterator[tuple[str, str]]:
    _need_ceph()
    prefix = "ctl" + secrets.token_hex(3)
    base = str(tmp_path)
    try:
        yield prefix, base
    finally:
        down(prefix, base)


def test_small_lab_reproduces_and_the_untracked_fix_holds(lab_prefix: tuple[str, str], tmp_path: object) -> None:
    prefix, base = lab_prefix
    lab = up(cfg.LabSpec(prefix=prefix, hosts=2, osds_per_host=2, clients=1, base_dir=base))
    r = lab.readiness()
    assert r.ready, r.reason
    assert r.health == "HEALTH_OK" and r.num_pgs == r.expected_pgs == r.clean_pgs and r.osds_up == r.osds == 4
    # CRUSH hosts are the namespaces, hostnames too
    tree = lab.ceph_json(["osd", "tree"])
    assert {n["name"] for n in tree["nodes"] if n["type"] == "host"} == {f"{prefix}-h1", f"{prefix}-h2"}
    assert lab.ceph_json(["osd", "metadata", str(lab.osd_ids(f"{prefix}-h2")[0])])["hostname"] == f"{prefix}-h2"
    same = Lab.load(prefix, base)
    assert same.hosts == lab.hosts and same.osd_pid(0) == lab.osd_pid(0) is not None

    out = os.path.join(str(tmp_path), "runs")
    os.makedirs(out)
    rep = Reproducer(lab, out_dirs=[out], max_window=75.0, plots=True)
    doc = rep.run(check_scenarios(["all-at-once", "untracked"], 10.0, 10))
    by = {s["name"]: s for s in doc["scenarios"]}
    assert doc["burst"] > 0 and doc["baseline"] > 0
    # run.json records the shape: 2 hosts -> size 2, fewer than 8 OSDs -> 32 PGs (32 x 2 / 4 = 16 per OSD)
    assert {k: doc["lab"][k] for k in ("hosts", "osds_per_host", "pool_size", "pg_num", "pg_replicas_per_osd",
                                       "clients", "client_rate", "store")} == \
        {"hosts": 2, "osds_per_host": 2, "pool_size": 2, "pg_num": 32, "pg_replicas_per_osd": 16.0, "clients": 1,
         "client_rate": 40.0, "store": "memstore"}
    assert by["measure"]["drops"] == 0
    if by["all-at-once"]["drops"] == 0:
        # The GC worker's early-drop mode is global: another namespace's overflow on this machine can make its
        # next pass evict our TIME_WAIT half of the burst mid-restart (docs/lab.md, caveat). One more try.
        sc = check_scenarios(["all-at-once"], 10.0, 10)[0]
        try:
            by["all-at-once"] = asdict(rep.scenario(sc))
        finally:
            rep._restore()
    assert by["all-at-once"]["drops"] > 0, by["all-at-once"]
    assert by["all-at-once"]["peak"] == doc["max"]
    assert by["untracked"]["drops"] == 0, by["untracked"]
    # the same squeeze as the incident: fewer free entries than the host's restart burst
    assert 0 < by["untracked"]["free_before"] < doc["burst"] + 10
    run_dir = os.path.join(out, doc["run_id"])
    for name in ("measure", "all-at-once", "untracked"):
        assert os.path.getsize(os.path.join(run_dir, f"{name}.png")) > 1000
        with open(os.path.join(run_dir, f"{name}.jsonl")) as f:
            kinds = {json.loads(line)["kind"] for line in f}
        assert {"meta", "ct", "states", "ceph", "event"} <= kinds
    # the host is back to its own firewall, no notrack table, no filler
    text = subprocess.run(["ip", "netns", "exec", f"{prefix}-h1", "nft", "list", "ruleset"], capture_output=True,
                          text=True, timeout=30, check=True).stdout
    assert "notrack" not in text and f"{prefix}_fw" in text

    res = down(prefix, base)
    assert res.left == [] and len(res.namespaces) == 6
    _assert_nothing_left(prefix, base)


def test_down_after_up_killed_half_way(lab_prefix: tuple[str, str]) -> None:
    prefix, base = lab_prefix
    state = os.path.join(cfg.lab_dir(prefix, base), "state.json")
    cli = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", "from ctguard.cli import main; main()", "lab", "up", "--prefix", prefix, "--dir", base,
         "--hosts", "2", "--osds-per-host", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        # kill it once the mon runs and OSD ids are being handed out: daemons, namespaces and files exist
        while time.monotonic() < deadline:
            try:
                with open(state) as f:
                    doc = json.load(f)
                if "mgr.x" in doc.get("daemons", {}):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        else:
            pytest.fail("lab up never got as far as the mgr")
    finally:
        os.killpg(cli.pid, signal.SIGKILL)
        cli.wait(timeout=30)
    assert any(n.startswith(prefix + "-") for n in net.list_netns())
    assert procs.scan(os.path.join(cfg.lab_dir(prefix, base), "ceph.conf")) != []
    res = down(prefix, base)
    assert res.left == [] and res.killed
    _assert_nothing_left(prefix, base)
    assert down(prefix, base).killed == []  # idempotent


def test_a_bluestore_shape_is_what_was_asked(lab_prefix: tuple[str, str]) -> None:
    """`lab up` builds the asked shape (pool size, pg_num, clients at their rate) on BlueStore over sparse
    files in the lab dir, records it, and survives an all-at-once restart of a host."""
    prefix, base = lab_prefix
    spec = cfg.LabSpec(prefix=prefix, hosts=2, osds_per_host=1, store="bluestore", size=2, pgs=16, clients=2,
                       client_rate=5, base_dir=base)
    lab = up(spec)
    pool = {p["pool_name"]: p for p in lab.ceph_json(["osd", "pool", "ls", "detail"])}[cfg.POOL]
    assert (pool["size"], pool["min_size"], pool["pg_num"]) == (2, 1, 16)
    meta = lab.ceph_json(["osd", "metadata", "0"])
    assert meta["osd_objectstore"] == "bluestore"
    block = os.path.join(lab.dir, "osd", "ceph-0", "block")
    assert os.stat(block).st_size == 4 << 30 and os.stat(block).st_blocks * 512 < 1 << 30  # sparse
    assert Lab.load(prefix, base).state.shape == spec.shape() and spec.shape()["pg_replicas_per_osd"] == 16.0
    time.sleep(3)
    for c in range(2):
        with open(os.path.join(lab.dir, "log", f"client.{c}.jsonl")) as f:
            # ops *issued* per second (the asynchronous client issues at its rate whatever comes back; its
            # completions bunch up after a slow second, e.g. 30 in one second after PGs peered)
            issued = [json.loads(line)["issued"] for line in f][1:]  # the first second is partial
        assert issued and max(issued) <= 6, issued  # 5 ops/s, not the default 40
    lab.restart_osds(f"{prefix}-h1", all_at_once=True)
    r = lab.wait_ready(120, allow_flags=True)
    assert r.clean_pgs == r.num_pgs == r.expected_pgs and r.osds_up == 2
