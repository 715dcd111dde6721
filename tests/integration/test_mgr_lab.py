"""The ctguard mgr module in a real Ceph 16.2.15 lab (2 hosts x 2 OSDs): each health check rises and clears,
`ok-to-restart` answers from the table, a hung exporter costs one health detail and no stalled command, and
`restart --gate-source mgr` restarts an OSD through it. The filled phase holds /tmp/ctguard-heavy.lock (a
full table's early-drop is global across namespaces)."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ctguard.kernel.settings import conntrack_settings
from ctguard.lab import config as cfg
from ctguard.lab import mgrmod, procs
from ctguard.lab.cluster import Lab, down, up
from ctguard.lab.fill import fill
from ctguard.lab.status import lab_status
from ctguard.runner import run

pytestmark = pytest.mark.lab

NEAR, DROPS, DOWN = "CTGUARD_CONNTRACK_NEARFULL", "CTGUARD_CONNTRACK_DROPS", "CTGUARD_EXPORTER_DOWN"


@pytest.fixture
def lab(tmp_path: Any) -> Iterator[Lab]:
    for tool in ("ceph-mon", "ceph-osd", "ceph-mgr", "ceph", "nft", "conntrack"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make setup`")
    prefix = "ctm" + secrets.token_hex(3)
    base = str(tmp_path)
    pids: list[int] = []
    try:
        lab = up(cfg.LabSpec(prefix=prefix, hosts=2, osds_per_host=2, clients=0, base_dir=base))
        pids = [p for n, p in lab.state.daemons.items() if n.startswith("exporter.")]
        assert len(pids) == 2
        # a short drop window, so the test can watch CTGUARD_CONNTRACK_DROPS clear
        lab.ceph(["config", "set", "mgr", "mgr/ctguard/drops_window", "10"], check=True)
        yield lab
    finally:
        down(prefix, base)
        assert not [p for p in pids if procs.alive(p)]  # `lab down` stopped the exporters
        assert [n for n in os.listdir("/run/netns") if n.startswith(prefix + "-")] == []
        assert procs.scan(os.path.join(cfg.lab_dir(prefix, base), "ceph.conf")) == []


T0 = [time.monotonic()]


def _wait(lab: Lab, what: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> float:
    """Poll the module's checks until pred holds; the seconds it took."""
    t0 = time.monotonic()
    print(f"{t0 - T0[0]:7.1f} s  waiting: {what}")
    last: dict[str, Any] = {}
    while time.monotonic() - t0 < timeout:
        last = mgrmod.checks(lab)
        if pred(last):
            return time.monotonic() - t0
        time.sleep(1.0)
    raise AssertionError(f"{what} not within {timeout:g} s; checks: {json.dumps(last)}")


def _names(checks: dict[str, Any], code: str, host: str) -> bool:
    return code in checks and any(line.startswith(f"host {host}:") for line in checks[code]["detail"])


def _heavy() -> Any:
    f = open("/tmp/ctguard-heavy.lock", "w")  # noqa: SIM115 - held across the filled phase
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def test_mgr_module_checks_rise_and_clear(lab: Lab, tmp_path: Any) -> None:
    h1, h2 = lab.hosts
    st = lab_status(lab)
    assert st["mgr_checks"] == {} and all(x["pid"] for x in st["exporters"])
    status = mgrmod.status(lab)
    assert [(h["host"], h["up"]) for h in status["hosts"]] == [(h1, True), (h2, True)]
    assert mgrmod.ok_to_restart(lab, lab.osd_ids(h1))[0] == 0

    ns = lab.host_netns(h1)
    lock = _heavy()
    T0[0] = time.monotonic()  # phase times from here: the lock may have been held by another run
    try:
        # >= 99 %: fewer free entries than the host's predicted restart burst
        s = conntrack_settings(ns)
        assert mgrmod.fill_to_free(lab, h1, 20) >= 0.99 * s.max
        took = _wait(lab, "NEARFULL naming the filled host", lambda c: _names(c, NEAR, h1))
        assert took <= 60
        c = mgrmod.checks(lab)
        assert not _names(c, NEAR, h2)
        # the host's own closed connections keep expiring: fill again, give the module one cycle
        mgrmod.fill_to_free(lab, h1, 20)
        time.sleep(3.5)
        rc, ans = mgrmod.ok_to_restart(lab, lab.osd_ids(h1)[:1])
        assert rc == 16 and ans["ok_to_restart"] is False and "free conntrack entries <" in ans["reason"]
        assert mgrmod.ok_to_restart(lab, lab.osd_ids(h2)[:1])[0] == 0  # the other host has room

        # past the limit: the kernel drops the filler's packets, the drop counter rises
        r = fill("tcp-est", 500, lab.fill_src(h1), ns, start=5_000_000)
        assert r.send_errors > 0
        _wait(lab, "DROPS naming the host", lambda c: _names(c, DROPS, h1))

        # empty it: NEARFULL clears; DROPS once the 10 s drop window has passed; then ok-to-restart says yes
        run(["ip", "netns", "exec", h1, "conntrack", "-D", "--mark", "1"], timeout=180)
    finally:
        lock.close()
    _wait(lab, "NEARFULL cleared", lambda c: NEAR not in c)
    _wait(lab, "DROPS cleared", lambda c: DROPS not in c, timeout=90)
    rc, ans = mgrmod.ok_to_restart(lab, lab.osd_ids(h1)[:1])
    assert rc == 0 and ans["ok_to_restart"] is True

    # a hung exporter (stopped, its socket still accepting): one health detail, commands still answer
    pid = mgrmod.exporter_pid(lab, h2)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        _wait(lab, "EXPORTER_DOWN naming the hung host", lambda c: _names(c, DOWN, h2))
        doc = mgrmod.status(lab, timeout=15)
        assert [h["up"] for h in doc["hosts"]] == [True, False] and "timed out" in doc["hosts"][1]["error"]
        assert mgrmod.ok_to_restart(lab, lab.osd_ids(h2)[:1])[0] == 16
    finally:
        os.kill(pid, signal.SIGCONT)
    _wait(lab, "EXPORTER_DOWN cleared", lambda c: DOWN not in c)

    # a dead exporter: connection refused
    mgrmod.stop_exporter(lab, h2)
    _wait(lab, "EXPORTER_DOWN naming the stopped host", lambda c: _names(c, DOWN, h2)
          and "connection refused" in " ".join(c[DOWN]["detail"]))
    assert "exporter not running" not in json.dumps(lab_status(lab)["mgr_checks"])
    mgrmod.start_exporter(lab, h2)
    _wait(lab, "EXPORTER_DOWN cleared after restart", lambda c: DOWN not in c)

    # restart --gate-source mgr: one OSD restarted through `ceph ctguard ok-to-restart`
    print(f"{time.monotonic() - T0[0]:7.1f} s  restart --gate-source mgr")
    osd = lab.osd_ids(h1)[0]
    done = subprocess.run(
        [sys.executable, "-m", "ctguard", "restart", f"osd.{osd}", "--lab", lab.prefix, "--lab-dir",
         os.path.dirname(lab.dir), "--gate-source", "mgr", "--state-dir", str(tmp_path), "--json",
         "--no-wait-clean", "--settle", "1"],
        capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    gates = [e for e in events if e.get("event") == "gate" and e.get("gate") == "headroom"]
    assert gates and gates[0]["reading"]["source"].startswith("mgr:ceph ctguard")
    assert gates[0]["source_confirmed"] is True and gates[0]["batch"] == [osd]
    print(f"{time.monotonic() - T0[0]:7.1f} s  done")
