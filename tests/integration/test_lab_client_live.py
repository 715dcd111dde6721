"""The lab's librados client tells the truth about a blocked cluster: every OSD of a small lab (2 hosts x 2 OSDs)
paused with SIGSTOP for 5 s; the client keeps issuing, writes a record for every second although nothing
completes, and the summary `lab reproduce` uses says it was blocked ~4 s (5 s, minus the first second of each
op). No conntrack squeeze: no heavy lock needed. About a minute.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator

import pytest

from ctguard.lab import clients
from ctguard.lab import config as cfg
from ctguard.lab.cluster import Lab, down, up
from ctguard.lab.reproduce import Result, _client_summary

pytestmark = pytest.mark.lab

PAUSE = 5.0


@pytest.fixture
def small_lab(tmp_path: object) -> Iterator[Lab]:
    for tool in ("ceph-mon", "ceph-osd", "ceph-mgr", "ceph", "nft", "conntrack"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make setup`")
    prefix = "ctl" + secrets.token_hex(3)
    base = str(tmp_path)
    try:
        yield up(cfg.LabSpec(prefix=prefix, hosts=2, osds_per_host=2, clients=1, base_dir=base))
    finally:
        down(prefix, base)


def _records(lab: Lab) -> list[clients.ClientSecond]:
    with open(os.path.join(lab.dir, "log", "client.0.jsonl")) as f:
        return clients.parse(f, "client.0")


def test_paused_osds_show_as_blocked_client_time(small_lab: Lab) -> None:
    lab = small_lab
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the client is connected and its ops complete
        recs = _records(lab)
        if len(recs) >= 3 and recs[-1].ops > 0 and recs[-1].outstanding == 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the lab's client never ran steadily: {_records(lab)[-3:]}")
    pids = [p for h in lab.hosts for i in lab.osd_ids(h) if (p := lab.osd_pid(i)) is not None]
    assert len(pids) == 4
    t_stop = time.time()
    try:
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        time.sleep(PAUSE)
    finally:
        for p in pids:
            os.kill(p, signal.SIGCONT)
    t_cont = time.time()
    time.sleep(3.0)
    recs = _records(lab)
    s = clients.summarise(recs, t_stop - 2, t_cont + 2, ["client.0"])
    during = [r for r in recs if t_stop + 1 <= r.t and r.t + 1 <= t_cont]
    # the seconds in which nothing completed have their line, with the ops still in flight
    assert len(during) >= 3 and all(r.ops == 0 and r.outstanding > 0 and r.blocked_ms > 0 for r in during), during
    assert all(r.issued > 0 for r in during)  # the fixed rate went on while blocked
    assert s.silent_s == 0
    paused = t_cont - t_stop
    assert paused - 1 - 0.5 <= s.blocked_s <= paused + 0.5, s
    assert s.worst_ms >= (paused - 0.5) * 1000 and s.longest_no_completion_s >= 3, s
    assert s.failed_ops == 0
    # and the fields `lab reproduce` prints
    res = Result("sigstop", "all OSDs paused")
    _client_summary(res, recs, t_stop - 2, t_cont + 2, ["client.0"])
    assert res.client_blocked_s == s.blocked_s and res.client_blocked_s is not None and res.client_blocked_s > 3
    # and afterwards the client is fine again
    last = [r for r in recs if r.t >= t_cont + 1]
    assert last and all(r.blocked_ms == 0 and r.ops > 0 for r in last), last
