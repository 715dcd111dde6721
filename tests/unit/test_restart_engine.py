"""The restart engine against a fake Ceph and fake kernel readings: every gate and every failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_restart_fakes import Crash, FakeBackend, FakeSource, World

from ctguard.errors import Exit
from ctguard.restart.engine import Engine, Options
from ctguard.restart.journal import Journal, RunLock
from ctguard.restart.plan import build_plan

Events = list[tuple[str, dict[str, Any]]]


def make(world: World, tmp: Path, backend: FakeBackend | None = None, hosts: list[str] | None = None,
         **opt: Any) -> tuple[Engine, Events, Journal]:
    journal = Journal(str(tmp), durable=False)
    plan = build_plan(world.ceph().osd_tree(), hosts=hosts or list(world.hosts))
    events: Events = []
    opts = Options(**{"settle": 2.0, **opt})
    eng = Engine(plan, world.ceph(), backend or FakeBackend(world), FakeSource(world), journal, opts,
                 emit=lambda e, f: events.append((e, f)), clock=world.clock, sleep=world.sleep)
    return eng, events, journal


def names(events: Events) -> list[str]:
    return [e for e, _ in events]


def of(events: Events, name: str) -> list[dict[str, Any]]:
    return [f for e, f in events if e == name]


def test_ample_headroom_batches_the_host_and_clears_noout(tmp_path: Path) -> None:
    w = World()
    eng, ev, j = make(w, tmp_path)
    res = eng.run()
    assert res.exit_code == Exit.OK, res.reason
    assert dict(w.restarts) == {0: 1, 1: 1, 2: 1}
    assert of(ev, "batch")[0]["osds"] == [0, 1, 2]  # one batch: headroom and ok-to-stop --max allow it
    assert "noout" not in w.flags
    assert [f["action"] for f in of(ev, "noout")] == ["set", "unset"]
    assert "osd set noout" in w.calls and "osd unset noout" in w.calls
    assert names(ev)[0] == "plan" and names(ev)[-1] == "done"
    assert set(names(ev)) >= {"gate", "stop", "start", "up", "pgs", "burst", "clean"}
    # measured burst factor replaces the start value (true factor of the fake host: 1.4)
    assert res.burst_factor == pytest.approx(1.4, abs=0.05)
    assert j.load(res.run_id).status == "done"


def test_every_step_is_journaled_before_and_after(tmp_path: Path) -> None:
    w = World(hosts={"h1": [0]})
    eng, _, j = make(w, tmp_path)
    res = eng.run()
    steps = [(s["step"], s["phase"]) for s in j.steps(res.run_id) if s["osd"] == 0]
    assert steps == [("restart", "begin"), ("stop", "end"), ("restart", "end"), ("up", "end"), ("pgs", "end"),
                     ("osd", "end")]
    all_steps = [(s["step"], s["phase"]) for s in j.steps(res.run_id)]
    assert all_steps[0] == ("noout_set", "begin") and all_steps[1] == ("noout_set", "end")
    assert all_steps[-2:] == [("noout_clear", "begin"), ("noout_clear", "end")]


def test_ok_to_stop_ebusy_then_ok_retries_with_backoff(tmp_path: Path) -> None:
    w = World(ebusy=3)
    eng, ev, _ = make(w, tmp_path)
    res = eng.run()
    assert res.exit_code == Exit.OK
    waits = [f for f in of(ev, "wait") if f["gate"] == "ok_to_stop"]
    assert [f["retry_in"] for f in waits] == [2.0, 4.0, 8.0]
    assert all("EBUSY" in f["reason"] for f in waits)
    assert res.waited["ok_to_stop"] == pytest.approx(14.0)


def test_ok_to_stop_ebusy_forever_gives_up_within_the_bound(tmp_path: Path) -> None:
    w = World(ebusy=10**6)
    eng, ev, _ = make(w, tmp_path, ok_to_stop_timeout=60.0)
    res = eng.run()
    assert res.exit_code == Exit.CRIT
    assert "not ok to stop" in res.reason and "EBUSY" in res.reason
    assert sum(w.restarts.values()) == 0
    assert "noout" not in w.flags  # cleared on failure
    assert w.t < 70


def test_osd_that_never_comes_back_stops_the_run(tmp_path: Path) -> None:
    w = World(never_back={0}, max_ok=1)
    eng, ev, j = make(w, tmp_path, up_timeout=30.0)
    res = eng.run()
    assert res.exit_code == Exit.CRIT
    assert "osd.0 not up" in res.reason
    assert dict(w.restarts) == {0: 1}  # nothing else was started
    assert "noout" not in w.flags
    assert of(ev, "abort")[0]["resumable"] is True
    assert j.load(res.run_id).status == "failed"


def test_hanging_ceph_call_is_retried_until_it_answers(tmp_path: Path) -> None:
    w = World(hosts={"h1": [0]})
    w.hang["osd dump"] = 0
    backend = FakeBackend(w, on_restart=lambda osd: w.hang.update({"osd dump": 2}))
    eng, ev, _ = make(w, tmp_path, backend=backend)
    res = eng.run()
    assert res.exit_code == Exit.OK
    errs = of(ev, "ceph_error")
    assert errs and "no answer within 30 s" in errs[0]["error"]


def test_hanging_ok_to_stop_counts_against_its_bound(tmp_path: Path) -> None:
    w = World()
    w.hang["osd ok-to-stop"] = 100
    eng, _, _ = make(w, tmp_path, ok_to_stop_timeout=100.0)
    res = eng.run()
    assert res.exit_code == Exit.CRIT and "no answer" in res.reason
    assert sum(w.restarts.values()) == 0


def test_drops_mid_run_purge_stop_recover_and_fail(tmp_path: Path) -> None:
    w = World(max_ok=1, extra_drops_at={0: 7})
    eng, ev, _ = make(w, tmp_path)
    res = eng.run()
    assert res.exit_code == Exit.CRIT
    assert "dropped 7 packets" in res.reason and "recovered" in res.reason
    assert dict(w.restarts) == {0: 1}  # no new restart after the drops
    assert any(f["why"] == "drops" for f in of(ev, "purge"))
    assert w.osds[0].up  # waited for the OSD in flight
    assert "noout" not in w.flags
    assert res.waited["recovery"] > 0


def test_noout_already_set_is_left_as_found(tmp_path: Path) -> None:
    w = World()
    w.flags.add("noout")
    eng, ev, _ = make(w, tmp_path)
    res = eng.run()
    assert res.exit_code == Exit.OK
    assert "noout" in w.flags
    assert not any(c.startswith("osd set") or c.startswith("osd unset") for c in w.calls)
    assert of(ev, "noout")[0]["action"] == "keep"


def test_interrupt_finishes_the_step_then_resume_completes(tmp_path: Path) -> None:
    w = World(max_ok=1)
    eng, ev, j = make(w, tmp_path)
    backend = FakeBackend(w, on_restart=lambda osd: eng.request_stop("SIGTERM received"))
    eng.backend = backend
    res = eng.run()
    assert res.exit_code == Exit.INTERRUPTED
    assert dict(w.restarts) == {0: 1}
    assert w.osds[0].up and of(ev, "pgs")  # the step under way finished: up and PGs active
    assert "noout" not in w.flags
    st = j.latest_unfinished()
    assert st is not None and st.status == "interrupted" and st.done == {0}
    eng2, ev2, _ = make(w, tmp_path)
    res2 = eng2.run(resume=st)
    assert res2.exit_code == Exit.OK
    assert dict(w.restarts) == {0: 1, 1: 1, 2: 1}
    assert res2.run_id == res.run_id


def test_headroom_short_batches_small_and_purges(tmp_path: Path) -> None:
    # 150 entries free: one OSD (50 x 2.0 start factor = 100) + reserve 20 fits, two do not
    w = World(limit=1150, base_entries=1000, ttl=120.0)
    eng, ev, _ = make(w, tmp_path, reserve=20)
    res = eng.run()
    assert res.exit_code == Exit.OK, res.reason
    assert w.drops == 0
    sizes = [len(f["osds"]) for f in of(ev, "batch")]
    assert sizes[0] == 1 and sum(sizes) == 3
    assert of(ev, "purge")  # the previous restart's closing entries were purged to make room


def test_headroom_short_without_purge_waits_for_expiry(tmp_path: Path) -> None:
    w = World(hosts={"h1": [0, 1]}, limit=1130, base_entries=1000, ttl=60.0)
    eng, ev, _ = make(w, tmp_path, reserve=20, purge=False, gate_poll=2.0)
    res = eng.run()
    assert res.exit_code == Exit.OK, res.reason
    assert w.drops == 0
    assert res.waited["headroom"] > 30  # waited for the first burst to expire
    w_ev = [f for f in of(ev, "wait") if f["gate"] == "headroom"]
    assert w_ev and "waiting for entries to expire" in w_ev[0]["reason"]


def test_headroom_never_enough_aborts_with_reason(tmp_path: Path) -> None:
    w = World(limit=1050, base_entries=1000)
    eng, _, _ = make(w, tmp_path, gate_timeout=20.0)
    res = eng.run()
    assert res.exit_code == Exit.CRIT
    assert "not enough conntrack headroom for osd.0" in res.reason and "need 116" in res.reason
    assert sum(w.restarts.values()) == 0 and "noout" not in w.flags


def test_settle_gate_waits_for_a_moving_drop_counter_before_the_first_restart(tmp_path: Path) -> None:
    w = World(hosts={"h1": [0]})
    ticks = {"n": 0}

    def bump(world: World) -> None:
        ticks["n"] += 1
        if ticks["n"] <= 4:
            world.drops += 1

    w.on_sleep = bump
    eng, ev, _ = make(w, tmp_path)
    res = eng.run()
    assert res.exit_code == Exit.OK
    assert res.waited["settle"] >= 2.0
    assert of(ev, "gate")[0]["gate"] == "settle"


def test_two_hosts_roll_one_after_the_other(tmp_path: Path) -> None:
    w = World(hosts={"h1": [0, 1], "h2": [2, 3]})
    order: list[int] = []
    eng, ev, _ = make(w, tmp_path, backend=FakeBackend(w, on_restart=order.append))
    res = eng.run()
    assert res.exit_code == Exit.OK
    assert order == [0, 1, 2, 3]
    hosts = [f["host"] for f in of(ev, "batch")]
    assert hosts == sorted(hosts)  # never a batch mixing hosts, h1 finished before h2
    assert of(ev, "clean")  # waited for active+clean between hosts


def test_clean_timeout_is_a_warning(tmp_path: Path) -> None:
    w = World(hosts={"h1": [0]}, recover=10_000)
    eng, _, _ = make(w, tmp_path, clean_timeout=20.0)
    res = eng.run()
    assert res.exit_code == Exit.WARN and "active+clean" in res.reason
    assert "noout" not in w.flags


def test_lock_allows_one_run_per_host(tmp_path: Path) -> None:
    with RunLock(str(tmp_path)):
        with pytest.raises(Exception) as e:
            with RunLock(str(tmp_path)):
                pass
        assert "another ctguard restart is running" in str(e.value)
    with RunLock(str(tmp_path)):
        pass


def test_dry_run_changes_nothing_and_reads_every_gate(tmp_path: Path) -> None:
    w = World()
    eng, _, _ = make(w, tmp_path)
    doc = eng.dry_run()
    assert sum(w.restarts.values()) == 0 and "noout" not in w.flags and w.purges == 0
    h = doc["hosts"][0]
    assert h["reading"]["free"] == w.limit - w.entries
    assert h["fits_at_once"] == 3 and h["ok_to_stop"]["ok"] is True
    assert [o["predicted_burst"] for o in h["osds"]] == [100, 100, 100]
    assert doc["noout"] == "will be set for the run" and doc["pgs"]["all_clean"] is True


# --- crash (kill -9) at every journaled step, then --resume ----------------------------------------------------

def _count_steps(tmp: Path) -> int:
    w = World(max_ok=1)
    eng, _, j = make(w, tmp)
    res = eng.run()
    assert res.exit_code == Exit.OK
    return len(j.steps(res.run_id))


def test_resume_after_a_crash_at_every_step(tmp_path: Path) -> None:
    total = _count_steps(tmp_path / "count")
    assert total > 15
    for k in range(1, total + 1):
        d = tmp_path / f"crash{k}"
        w = World(max_ok=1)
        eng, _, j = make(w, d)
        real_step = j.step
        n = {"i": 0}

        def step(*a: Any, _real: Any = real_step, _w: World = w, _n: dict[str, int] = n, _k: int = k,
                 **kw: Any) -> None:
            _real(*a, **kw)
            _n["i"] += 1
            if _n["i"] == _k:  # the step is on disk, then the process dies
                _w.dead = True
                raise Crash()

        j.step = step  # type: ignore[method-assign]
        with pytest.raises(Crash):
            eng.run()
        w.dead = False
        j.close()
        j2 = Journal(str(d))
        st = j2.latest_unfinished()
        if st is None:  # crashed after the very last step: the run was complete but not marked
            continue
        eng2, _, _ = make(w, d)
        res = eng2.run(resume=st)
        assert res.exit_code == Exit.OK, (k, res.reason)
        assert dict(w.starts) == {0: 1, 1: 1, 2: 1}, (k, dict(w.starts))  # each OSD started exactly once
        assert all(o.up for o in w.osds.values())
        assert "noout" not in w.flags, k
        assert w.drops == 0


def test_resume_after_a_crash_between_stop_and_start(tmp_path: Path) -> None:
    w = World(max_ok=1)
    backend = FakeBackend(w, crash_between=True)
    eng, _, j = make(w, tmp_path, backend=backend)
    with pytest.raises(Crash):
        eng.run()
    w.dead = False
    assert not w.osds[0].up
    st = Journal(str(tmp_path)).latest_unfinished()
    assert st is not None and 0 in st.restart_begun
    eng2, ev, _ = make(w, tmp_path)
    res = eng2.run(resume=st)
    assert res.exit_code == Exit.OK, res.reason
    assert of(ev, "resume")[0]["down"] == [0]
    assert dict(w.restarts) == {0: 2, 1: 1, 2: 1}  # osd.0: stopped by the crashed run, started by the resume
    assert all(o.up for o in w.osds.values()) and "noout" not in w.flags


def test_resume_keeps_noout_that_was_set_before_the_run(tmp_path: Path) -> None:
    w = World(max_ok=1)
    w.flags.add("noout")
    eng, _, _ = make(w, tmp_path, backend=FakeBackend(w, crash_between=True))
    with pytest.raises(Crash):
        eng.run()
    w.dead = False
    st = Journal(str(tmp_path)).latest_unfinished()
    assert st is not None and not st.noout_owned
    eng2, _, _ = make(w, tmp_path)
    assert eng2.run(resume=st).exit_code == Exit.OK
    assert "noout" in w.flags


def test_an_unexpected_error_still_clears_noout_and_fails_cleanly(tmp_path: Path) -> None:
    w = World(hosts={"h1": [0]})

    def boom(osd: int) -> None:
        raise ValueError("bug")

    eng, ev, j = make(w, tmp_path, backend=FakeBackend(w, on_restart=boom))
    res = eng.run()
    assert res.exit_code == Exit.CRIT and "unexpected error: ValueError: bug" in res.reason
    assert "noout" not in w.flags and of(ev, "abort")
    assert j.load(res.run_id).status == "failed"
