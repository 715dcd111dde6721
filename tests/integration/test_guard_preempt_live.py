"""`ctguard guard --preempt --apply` against the real kernel: a namespace's table close to full, TIME_WAIT entries
pile up until free entries are below the reserve, then a burst of new connections larger than what was free.
Without the guard the burst is dropped in part; with it, the guard has purged the TIME_WAIT entries before the
burst, nothing is dropped, and no ESTABLISHED entry was touched.

Squeezes a table near full: holds /tmp/ctguard-heavy.lock (the kernel GC's early drop is global)."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
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
from ctguard.table.purge import purge

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-c", "from ctguard.cli import main; main()"]
FREE = 4_000  # free entries with only the ESTABLISHED filler: above the default reserve (1 % of 262,144)
TW = 3_000  # TIME_WAIT entries that then pile up: free 1,000, below the reserve
BURST = 1_500  # new connections: more than the 1,000 free


@pytest.fixture
def squeeze() -> Iterator[None]:
    with heavy_lock():
        yield


def _burst(cli: Netns, n: int) -> list[socket.socket]:
    """n non-blocking connects to the server: n SYNs within milliseconds."""
    socks = []
    for _ in range(n):
        with entered(cli):
            s = socket.socket()
        s.setblocking(False)
        try:
            s.connect((_tb.SRV_IP, 6800))
        except BlockingIOError:
            pass
        socks.append(s)
    return socks


def _reset(socks: list[socket.socket]) -> None:
    """Close with a reset (linger 0): the entries go to CLOSE at once, and a purge of closing states takes them."""
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        s.close()


def _events(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def _wait_event(path: str, g: subprocess.Popen[bytes], pred: Any, timeout: float) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for ev in _events(path):
            if pred(ev):
                return ev
        assert g.poll() is None, f"guard exited {g.returncode}: {g.stderr.read() if g.stderr else b''!r}"
        time.sleep(0.05)
    pytest.fail(f"no such guard event within {timeout} s: {_events(path)[-5:]}")


def test_preempt_purges_time_wait_before_a_burst_and_nothing_is_dropped(
        testbed: _tb.Testbed, squeeze: None, tmp_path: object) -> None:
    tb, d = testbed, str(tmp_path)
    ns, cli = Netns(name=tb.srv), Netns(name=tb.cli)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * BURST:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * BURST), hard))
    with entered(ns):
        srv = socket.socket()
    srv.bind((_tb.SRV_IP, 6800))
    srv.listen(4096)  # the kernel completes the handshakes; nobody needs to accept
    limit = conntrack_settings(ns).max
    fill("tcp-est", limit - FREE, _tb.FILL_SRC, ns)
    established = conntrack_settings(ns).count

    # Without the guard: TIME_WAIT piles up, the burst does not fit.
    fill("tcp-tw", TW, _tb.FILL_SRC, ns, sport=40001)
    drops0 = conntrack_stats(ns).get("drop")
    socks = _burst(cli, BURST)
    time.sleep(0.5)
    dropped_without = conntrack_stats(ns).get("drop") - drops0
    _reset(socks)
    time.sleep(0.3)
    purge(ns)  # back to the ESTABLISHED filler only
    assert dropped_without > 0, "the burst fit without the guard: the test cannot tell anything"
    assert conntrack_settings(ns).count <= established + 10

    # With the guard: it sees free < reserve as the TIME_WAIT entries come and purges them before any drop.
    log = os.path.join(d, "guard.jsonl")
    with open(log, "wb") as out:
        g = subprocess.Popen([*CLI, "guard", "--preempt", "--apply", "--json", "--netns", tb.srv,  # noqa: S603
                              "--state-dir", d], stdout=out, stderr=subprocess.PIPE, start_new_session=True)
    try:
        reserve = _wait_event(log, g, lambda e: e["event"] == "reserve", 30)
        assert reserve["reserve"] == max(reserve["floor"], reserve["predicted_burst"]) >= (limit + 99) // 100
        assert FREE > reserve["reserve"] > FREE - TW  # the premise: above the reserve, then below it
        drops1 = conntrack_stats(ns).get("drop")
        fill("tcp-tw", TW, _tb.FILL_SRC, ns, sport=40001, start=TW)
        p = _wait_event(log, g, lambda e: e["event"] == "purge", 60)
        assert p["trigger"] == "preempt" and p["failed"] == 0
        assert set(p["by_state"]) <= {"TIME_WAIT"}
        assert p["free_before"] < reserve["reserve"]
        socks = _burst(cli, BURST)
        time.sleep(0.5)
        assert conntrack_stats(ns).get("drop") == drops1, "dropped with the pre-emptive guard running"
        est = sum(1 for s in socks if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
        assert est == BURST
        # only closing entries went: the filler and the burst's connections are all there
        assert conntrack_settings(ns).count >= established + BURST
        _reset(socks)
        time.sleep(1.0)  # a heartbeat of state
    finally:
        stop_group(g)
    srv.close()
    assert g.returncode == 0
    evs = _events(log)
    assert evs[-1]["event"] == "stop" and evs[-1]["purges_by_trigger"].get("drop", 0) == 0
    assert any(e["event"] == "below_reserve" for e in evs)
    st = load_state(state_path(d, ns))
    assert st is not None and st.preempt and st.purges_by_trigger.get("preempt", 0) >= 1
    assert st.freed_by_trigger["preempt"] >= p["deleted"] and st.drops_seen == 0
    assert st.reserve is not None and st.reserve["reserve"] == reserve["reserve"]
