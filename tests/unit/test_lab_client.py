"""The lab's librados client and what `lab reproduce` makes of it: the workload's per-second accounting (a fake
clock, no Ceph), the summary over recorded workload output (a real client while every OSD of a 3 x 4 lab was
SIGSTOPped for 5 s), the table and the plot."""

from __future__ import annotations

import heapq
import io
import json
import os
from collections.abc import Callable

import pytest
from rich.console import Console

from ctguard.cli.lab import client_notes, comparison_table
from ctguard.lab import clients
from ctguard.lab import workload as wl
from ctguard.lab.plot import client_series, plot_series_file
from ctguard.lab.reproduce import Result, _client_summary

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "lab")
SIGSTOP = os.path.join(FIX, "client-sigstop-5s.jsonl")


# -- workload: the per-second book ----------------------------------------------------------------------------
def test_outcome_of_librados_return_values() -> None:
    assert wl.outcome(4096) == wl.outcome(0) == "ok"
    assert wl.outcome(-110) == "timeout"  # -ETIMEDOUT: rados osd op timeout
    assert wl.outcome(-2) == wl.outcome(-108) == "error"


def test_union_length() -> None:
    assert wl.union_length([]) == 0
    assert wl.union_length([(0, 1), (0.5, 2), (3, 4)]) == pytest.approx(3.0)
    assert wl.union_length([(0, 5), (1, 2)]) == pytest.approx(5.0)


def test_fast_ops_never_block() -> None:
    b = wl.Book()
    for k in range(10):
        seq = b.issue(100.0 + k * 0.1)
        b.done(seq, 100.0 + k * 0.1 + 0.005, "ok")
    rec = b.close(1700000000, 101.0)
    assert rec == {"t": 1700000000, "issued": 10, "ops": 10, "errors": 0, "timeouts": 0, "throttled": 0,
                   "outstanding": 0, "oldest_ms": 0.0, "worst_ms": 5.0, "blocked_ms": 0.0}


def test_one_slow_op_blocks_from_one_second_after_issue_until_done() -> None:
    b = wl.Book()
    slow = b.issue(0.2)
    recs = []
    for sec in range(6):
        if sec == 5:
            b.done(slow, 5.3, "ok")
        recs.append(b.close(sec, sec + 1.0))
    assert [r["blocked_ms"] for r in recs] == [0.0, 800.0, 1000.0, 1000.0, 1000.0, 300.0]
    assert [r["outstanding"] for r in recs] == [1, 1, 1, 1, 1, 0]
    assert recs[3]["oldest_ms"] == pytest.approx(3800.0)
    assert recs[5]["worst_ms"] == pytest.approx(5100.0) and recs[5]["ops"] == 1
    # the seconds in which nothing completed are there, with ops = 0
    assert [r["ops"] for r in recs] == [0, 0, 0, 0, 0, 1]


def test_overlapping_slow_ops_count_once() -> None:
    b = wl.Book()
    a, c = b.issue(0.0), b.issue(0.5)
    b.done(a, 2.5, "timeout")
    b.done(c, 2.9, "error")
    r0, r1, r2 = b.close(0, 1.0), b.close(1, 2.0), b.close(2, 3.0)
    assert (r0["blocked_ms"], r1["blocked_ms"], r2["blocked_ms"]) == (0.0, 1000.0, 900.0)
    assert r2["timeouts"] == 1 and r2["errors"] == 1 and r2["ops"] == 0


def test_completion_after_the_second_ended_but_before_its_close() -> None:
    """librados called back at 2.05 for an op of the second [1, 2) that was closed late (at 2.1): the op was
    still in flight when that second ended, and it completes in the next one."""
    b = wl.Book()
    seq = b.issue(0.5)
    b.done(seq, 2.05, "ok")
    r1 = b.close(1, 2.0)
    assert r1["outstanding"] == 1 and r1["ops"] == 0 and r1["blocked_ms"] == pytest.approx(500.0)
    r2 = b.close(2, 3.0)
    assert r2["ops"] == 1 and r2["blocked_ms"] == pytest.approx(50.0)


class FakeCluster:
    """A fake clock and a cluster that answers ops after `latency(issue_time)` seconds."""

    def __init__(self, latency: Callable[[float], float | None], ret: int = 4096) -> None:
        self.now = 1000.0
        self.latency = latency
        self.ret = ret
        self.q: list[tuple[float, int, Callable[[int], None]]] = []
        self.n = 0

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + 1_699_999_000.5  # wall seconds do not start on a monotonic whole second

    def issue(self, n: int, on_done: Callable[[int], None]) -> None:
        lat = self.latency(self.now - 1000.0)
        if lat is not None:
            self.n += 1
            heapq.heappush(self.q, (self.now + lat, self.n, on_done))

    def sleep(self, dt: float) -> None:
        until = self.now + max(dt, 1e-4)
        while self.q and self.q[0][0] <= until:
            at, _, cb = heapq.heappop(self.q)
            self.now = at
            cb(self.ret)
        self.now = until


def run_loop(fc: FakeCluster, seconds: float, rate: float = 10.0, max_outstanding: int = 1000) -> list[dict[str, int]]:
    log = io.StringIO()
    wl.loop(fc.issue, wl.Book(), log, rate, max_outstanding, lambda: fc.now >= 1000.0 + seconds,
            clock=fc.clock, wall=fc.wall, sleep=fc.sleep)
    return [json.loads(line) for line in log.getvalue().splitlines()]


def test_loop_keeps_issuing_and_writes_every_second_while_blocked() -> None:
    # ops issued between 2.0 and 5.0 s hang until 5.0 s (a paused primary), the others take 10 ms
    fc = FakeCluster(lambda t: (5.0 - t) if 2.0 <= t < 5.0 else 0.01)
    recs = run_loop(fc, 9.0)
    ts = [r["t"] for r in recs]
    assert ts == list(range(ts[0], ts[0] + len(ts))) and len(recs) >= 8  # no second left out
    assert all(r["issued"] in (9, 10, 11) for r in recs[1:-1])  # the fixed rate went on while blocked
    stuck = [r for r in recs if r["ops"] == 0 and r["outstanding"] > 0]
    assert len(stuck) >= 2 and all(r["blocked_ms"] > 0 for r in stuck)
    # the first op hung from 2.0 to 5.0: blocked from 3.0 to 5.0
    assert sum(r["blocked_ms"] for r in recs) == pytest.approx(2000.0, abs=1.0)
    assert max(r["worst_ms"] for r in recs) == pytest.approx(3000.0, abs=1.0)
    assert max(r["oldest_ms"] for r in recs) >= 2000.0


def test_loop_bounds_what_is_in_flight() -> None:
    fc = FakeCluster(lambda t: None if t >= 1.0 else 0.01)  # from 1 s on, nothing ever answers
    recs = run_loop(fc, 4.0, rate=20.0, max_outstanding=8)
    assert max(r["outstanding"] for r in recs) == 8
    assert sum(r["throttled"] for r in recs) >= 40
    assert recs[-1]["ops"] == 0 and recs[-1]["blocked_ms"] == pytest.approx(1000.0)


def test_loop_counts_timeouts_and_failed_issues() -> None:
    fc = FakeCluster(lambda t: 0.02, ret=-110)
    recs = run_loop(fc, 2.0)
    assert sum(r["timeouts"] for r in recs) >= 15 and sum(r["ops"] for r in recs) == 0

    def refuse(n: int, on_done: Callable[[int], None]) -> None:
        raise OSError("rados.Error: cannot queue")

    fc2 = FakeCluster(lambda t: 0.01)
    log = io.StringIO()
    wl.loop(refuse, wl.Book(), log, 10.0, 100, lambda: fc2.now >= 1002.0, clock=fc2.clock, wall=fc2.wall,
            sleep=fc2.sleep)
    recs = [json.loads(line) for line in log.getvalue().splitlines()]
    assert sum(r["errors"] for r in recs) >= 15 and all(r["outstanding"] == 0 for r in recs)


def test_workload_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        wl.main(["--conf", "x", "--pool", "p", "--log", "l", "--rate", "0"])


# -- summary over recorded workload output --------------------------------------------------------------------
def _recorded() -> list[clients.ClientSecond]:
    with open(SIGSTOP) as f:
        return clients.parse(f, "client.0")


def test_recorded_sigstop_is_blocked_four_seconds() -> None:
    """Every OSD of a 3 x 4 lab SIGSTOPped at 1796553079.05 and SIGCONTed 5.03 s later (40 ops/s)."""
    recs = _recorded()
    assert len(recs) == 16
    s = clients.summarise(recs, 1796553072.0, 1796553088.0, ["client.0"])
    assert s.blocked_s == pytest.approx(4.0, abs=0.1)  # 5 s stopped, minus the first second of each op
    assert s.worst_ms == pytest.approx(5024.2)
    assert s.longest_no_completion_s == 4
    assert s.failed_ops == 0 and s.timeouts == 0 and s.silent_s == 0 and s.clients == 1
    assert s.ops == sum(r.ops for r in recs) and s.ops_per_s == pytest.approx(s.ops / 16, abs=0.1)


def test_window_before_the_stop_is_clean() -> None:
    s = clients.summarise(_recorded(), 1796553072.0, 1796553079.0, ["client.0"])
    assert s.blocked_s == 0 and s.worst_ms < 10 and s.longest_no_completion_s == 0


def test_an_op_still_in_flight_at_the_window_end_counts_as_the_worst() -> None:
    s = clients.summarise(_recorded(), 1796553072.0, 1796553084.0, ["client.0"])
    assert s.worst_ms == pytest.approx(4922.5) and s.blocked_s == pytest.approx(3.9, abs=0.1)


def test_a_silent_client_is_said_not_taken_as_fine() -> None:
    recs = [r for r in _recorded() if not 1796553080 <= r.t <= 1796553083]
    s = clients.summarise(recs, 1796553072.0, 1796553088.0, ["client.0", "client.1"])
    assert s.silent_s == 15  # client.1 wrote nothing at all (the last second is not due yet at the end)
    s1 = clients.summarise(recs, 1796553072.0, 1796553088.0, ["client.0"])
    assert s1.silent_s == 4
    res = Result("all-at-once", "t")
    _client_summary(res, recs, 1796553072.0, 1796553088.0, ["client.0"])
    assert res.client_silent_s == 4 and any("no record for 4 s" in e for e in res.errors)


def test_several_clients_take_the_worst_per_second() -> None:
    a = _recorded()
    b = [clients.ClientSecond(name="client.1", t=r.t, ops=40, issued=40) for r in a]
    s = clients.summarise(a + b, 1796553072.0, 1796553088.0)
    assert s.clients == 2 and s.blocked_s == pytest.approx(4.0, abs=0.1)
    assert s.ops == sum(r.ops for r in a) + 40 * 16


def test_parse_passes_over_what_is_not_a_record() -> None:
    lines = ["", "not json", "[1, 2]", '{"no_t": 1}', '{"t": 5, "ops": 3, "errors": 1, "worst_ms": 20.5}']
    recs = clients.parse(lines, "client.0")
    assert recs == [clients.ClientSecond(name="client.0", t=5, ops=3, errors=1, worst_ms=20.5)]


def test_result_fields_without_clients_stay_unknown() -> None:
    res = Result("headroom", "t")
    _client_summary(res, [], 0.0, 100.0, [])
    assert res.client_blocked_s is None and res.client_ops_per_s is None and res.errors == []


# -- table and plot -------------------------------------------------------------------------------------------
def _doc() -> dict[str, object]:
    base = {"available": True, "met": True, "filler": 261800, "peak_over_baseline": 1.6, "free_before": 110,
            "overflow_seconds": 0.0, "seconds_to_clean": 10.0, "osds_marked_down": 0, "fault_lines_per_s": 3.0,
            "client_timeouts": 0, "client_no_completion_s": 0}
    return {"run_id": "r1", "host": "cc-h1", "baseline": 190, "burst": 220, "max": 262144, "scenarios": [
        {**base, "name": "all-at-once", "peak": 262144, "drops": 2486, "overflow_seconds": 29.0, "expect": "drops",
         "client_blocked_s": 27.4, "client_worst_ms": 28960.0, "client_failed_ops": 12, "client_timeouts": 3,
         "client_ops_per_s": 21.5, "client_no_completion_s": 26},
        {**base, "name": "headroom", "peak": 262000, "drops": 0, "expect": "no-drops", "client_blocked_s": 0.0,
         "client_worst_ms": 35.2, "client_failed_ops": 0, "client_ops_per_s": 39.9},
        {"name": "ctguard-restart", "available": False, "met": None, "expect": "no-drops"},
    ]}


def test_table_says_how_long_the_client_was_blocked() -> None:
    console = Console(width=160, record=True)
    console.print(comparison_table(_doc()))
    text = console.export_text()
    row = next(line for line in text.splitlines() if "all-at-once" in line)
    assert "27.4" in row and "29.0" in row and "12" in row and "21.5" in row
    head = next(line for line in text.splitlines() if "headroom" in line)
    assert "39.9" in head and "0.0" in head
    notes = client_notes(_doc())
    assert len(notes) == 1 and "all-at-once" in notes[0] and "27.4 s" in notes[0]
    assert "no op completed for 26 s" in notes[0] and "12 op(s) failed (3 timed out)" in notes[0]


def test_table_of_a_run_recorded_before_the_blocked_column() -> None:
    doc = _doc()
    old = {k: v for k, v in doc["scenarios"][0].items() if not k.startswith("client_")}  # type: ignore[index]
    doc["scenarios"] = [{**old, "client_errors": 0, "client_worst_ms": 1021.2, "client_stalled_s": 0}]
    console = Console(width=160, record=True)
    console.print(comparison_table(doc))
    row = next(line for line in console.export_text().splitlines() if "all-at-once" in line)
    assert "1.0" in row and row.count(" - ") >= 3  # blocked, failed, ops/s unknown: never a made-up 0
    assert client_notes(doc) == []


def test_client_series_old_and_new_records() -> None:
    new = [{"t": 0.5, "kind": "client", "name": "client.0", "ops": 0, "worst_ms": 0.0, "oldest_ms": 2500.0,
            "blocked_ms": 1000.0},
           {"t": 0.5, "kind": "client", "name": "client.1", "ops": 30, "worst_ms": 12.0, "oldest_ms": 0.0,
            "blocked_ms": 0.0}]
    old = [{"t": 1.5, "kind": "client", "name": "client.0", "ops": 10, "errors": 0, "worst_ms": 1021.2}]
    ts, ops, worst, blocked = client_series(new + old)
    assert ts == [0.5, 1.5] and ops == [30, 10]
    assert worst == pytest.approx([2.5, 1.0212]) and blocked == [1.0, 0.0]


def test_plot_has_the_client_panel(tmp_path: object) -> None:
    series = os.path.join(str(tmp_path), "all-at-once.jsonl")
    meta = {"kind": "meta", "t": 0.0, "t0": 1796553072.0, "scenario": {"name": "all-at-once", "title": "x"},
            "max": 1000, "baseline": 190, "filler": 600}
    with open(series, "w") as f, open(SIGSTOP) as src:
        f.write(json.dumps(meta) + "\n")
        for k in range(30):
            f.write(json.dumps({"t": k * 0.5, "kind": "ct", "count": 800, "drop": k, "early_drop": 0}) + "\n")
        for line in src:
            c = json.loads(line)
            f.write(json.dumps({**c, "t": c["t"] - 1796553072, "kind": "client", "name": "client.0"}) + "\n")
    png = os.path.join(str(tmp_path), "all-at-once.png")
    plot_series_file(series, png)
    assert os.path.getsize(png) > 1000
