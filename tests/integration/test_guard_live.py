"""`ctguard guard --apply` against the real kernel: a namespace full of ESTABLISHED filler and TIME_WAIT entries
refuses a connection; the guard sees the drop, purges the TIME_WAIT entries within a second, and the next
connection passes. ESTABLISHED entries are never touched."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from heavy import heavy_lock
from peers import stop_group

from ctguard.export.guard import load_state, state_path
from ctguard.kernel.netns import Netns, entered
from ctguard.kernel.settings import conntrack_settings
from ctguard.kernel.stats import conntrack_stats
from ctguard.lab import testbed as _tb
from ctguard.lab.fill import fill

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-c", "from ctguard.cli import main; main()"]
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netpeer.py")


def _connect(ns: Netns, addr: str, port: int, timeout: float) -> bool:
    with entered(ns):
        s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Events:
    """The guard's JSON lines, read by a thread (a buffered pipe and select() do not mix)."""

    def __init__(self, p: subprocess.Popen[str]) -> None:
        self.p = p
        self.q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.q.put(line)
        self.q.put(None)

    def next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.q.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no event from the guard within {timeout} s")
        assert line is not None, f"guard exited: {self.p.stderr.read() if self.p.stderr else ''}"
        ev: dict[str, Any] = json.loads(line)
        return ev

    def rest(self) -> list[dict[str, Any]]:
        out = []
        while (line := self.q.get(timeout=10)) is not None:
            out.append(json.loads(line))
        return out


def test_guard_without_apply_only_shows_its_plan(testbed: _tb.Testbed, tmp_path: object) -> None:
    out = subprocess.run([*CLI, "guard", "--netns", testbed.srv, "--json", "--state-dir", str(tmp_path)],  # noqa: S603
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == 1 and doc["applied"] is False and doc["netns"] == testbed.srv
    assert doc["states"] == ["FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE"]
    assert not os.listdir(str(tmp_path))  # nothing started, nothing written
    bad = subprocess.run([*CLI, "guard", "--netns", testbed.srv, "--states", "ESTABLISHED"],  # noqa: S603
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1 and "ESTABLISHED" in bad.stderr


def test_guard_purges_within_a_second_of_a_drop(testbed: _tb.Testbed, tmp_path: object) -> None:
    with heavy_lock():  # it fills a table to the limit
        _purges_within_a_second_of_a_drop(testbed, tmp_path)


def _purges_within_a_second_of_a_drop(testbed: _tb.Testbed, tmp_path: object) -> None:
    tb = testbed
    ns = Netns(name=tb.srv)
    cli_ns = Netns(name=tb.cli)
    d = str(tmp_path)
    peer = tb.spawn(tb.srv, [sys.executable, PEER, os.path.join(d, "s"), "serve", _tb.SRV_IP, "6800"])
    deadline = time.monotonic() + 15
    while not os.path.exists(os.path.join(d, "s")):
        assert peer.poll() is None and time.monotonic() < deadline, "peer did not start"
        time.sleep(0.05)
    limit = conntrack_settings(ns).max
    n_tw = 2000
    g = subprocess.Popen(  # noqa: S603
        [*CLI, "guard", "--netns", tb.srv, "--apply", "--json", "--state-dir", d, "--min-interval", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    events = Events(g)
    try:
        start = events.next(20)
        assert start["event"] == "start" and start["poll_hz"] == 10
        # Fill exactly to the limit (an overshoot would itself be dropped and wake the guard). Above 95 % the
        # kernel's GC early-drops closing entries (gc_worker, nf_conntrack_max95) - continuously on a machine
        # whose other namespaces keep the global GC busy - so a thread keeps topping the table up with
        # TIME_WAIT entries until the first drop, the moment the guard acts on.
        fill("tcp-est", limit - n_tw, _tb.FILL_SRC, ns)
        fill("tcp-tw", n_tw, _tb.FILL_SRC, ns, sport=40001)
        drops0 = conntrack_stats(ns).get("drop")
        done = threading.Event()
        tw_added = [n_tw]

        def top_up() -> None:
            nxt = n_tw
            while not done.is_set() and conntrack_stats(ns).get("drop") == drops0:
                gap = limit - conntrack_settings(ns).count
                if gap > 0:
                    fill("tcp-tw", gap, _tb.FILL_SRC, ns, sport=40001, start=nxt)
                    nxt += gap
                    tw_added[0] += gap
                time.sleep(0.002)

        topper = threading.Thread(target=top_up, daemon=True)
        topper.start()
        try:
            for _attempt in range(20):
                t_refused = time.time()
                # One SYN only (0.5 s < the 1 s retransmission): dropped while the table is full.
                if not _connect(cli_ns, _tb.SRV_IP, 6800, 0.5):
                    break
            else:
                pytest.fail("could not hold the table full long enough to refuse a connection")
        finally:
            done.set()
            topper.join(10)
        assert conntrack_stats(ns).get("drop") > drops0
        drop = events.next(5)
        assert drop["event"] == "drop" and drop["drops"] >= 1
        purge = events.next(10)
        assert purge["event"] == "purge"
        tw = purge["deleted"]
        assert tw <= tw_added[0] and purge["failed"] == 0 and set(purge["by_state"]) <= {"TIME_WAIT"}
        if tw_added[0] - n_tw < n_tw // 2:
            # The TIME_WAIT entries stayed (the normal case: a GC pass comes every ~62 s): the guard freed them.
            assert tw > 0 and purge["by_state"] == {"TIME_WAIT": tw}
        # else the kernel's GC, kept running back to back by other namespaces' churn on a shared machine, was
        # evicting TIME_WAIT entries as fast as they were added (the top-up had to replace most of them), and may
        # have freed the rest before the purge: the guard's reaction is still checked below.
        # "Within a second of the refused connection": the drop was seen and the purge done by then.
        seen_after = _parse_ts(drop["ts"]) - t_refused
        done_after = _parse_ts(purge["ts"]) - t_refused
        assert seen_after < 1.0, f"drop seen {seen_after:.2f} s after the refused connection"
        assert done_after < 1.0 + purge["seconds"], f"purge done {done_after:.2f} s after"
        # The next connection passes; every ESTABLISHED filler entry is still there.
        assert _connect(cli_ns, _tb.SRV_IP, 6800, 2.0)
        assert conntrack_settings(ns).count >= limit - tw  # only TIME_WAIT went
        st = load_state(state_path(d, ns))
        assert st is not None and st.purges == 1 and st.purged_entries == tw
        assert st.purged_by_state == purge["by_state"] and st.drops_seen >= 1
    finally:
        stop_group(g)
    assert g.returncode == 0
    tail = events.rest()
    assert tail and tail[-1]["event"] == "stop" and tail[-1]["purges"] == 1


def _parse_ts(ts: str) -> float:
    from datetime import datetime

    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=__import__("datetime").UTC).timestamp()
