"""The guard's loop with every effect faked: baseline, purge at the first drop, rate limit, errors, state."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctguard.errors import BadInput, CannotRead
from ctguard.export.guard import Guard, GuardConfig, GuardState, load_state, save_state, state_path
from ctguard.kernel.netns import Netns
from ctguard.table.purge import PurgeResult


class Fake:
    def __init__(self, drops: list[int | Exception]) -> None:
        self.drops = drops
        self.now = 0.0
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.purges: list[dict[str, Any]] = []
        self.purge_error: Exception | None = None

    def read(self) -> int:
        v = self.drops.pop(0)
        if isinstance(v, Exception):
            raise v
        return v

    def purge(self, ns: Netns, *, states: tuple[str, ...], ports: str) -> PurgeResult:
        self.purges.append({"ns": ns, "states": states, "ports": ports})
        if self.purge_error is not None:
            raise self.purge_error
        return PurgeResult(netns=ns.label, states=states, ports=ports, matched=120, deleted=118, missing=2,
                           failed=0, by_state={"TIME_WAIT": 100, "CLOSE": 18}, by_role={"ceph-osd": 118},
                           expired_freed=4, count_before=1000, count_after=878, seconds=0.2)

    def emit(self, event: str, fields: Any) -> None:
        self.events.append((event, dict(fields)))

    def guard(self, tmp: pathlib.Path | None = None, **cfg: Any) -> Guard:
        return Guard(Netns(name="n1"), GuardConfig(**cfg), read_drops=self.read, purge=self.purge, emit=self.emit,
                     state_file=None if tmp is None else str(tmp / "guard-n1.json"),
                     clock=lambda: self.now, wall=lambda: 1_700_000_000.0 + self.now, sleep=self._sleep)

    def _sleep(self, s: float) -> None:
        self.now += s


def test_first_reading_is_a_baseline_and_a_rise_purges(tmp_path: pathlib.Path) -> None:
    f = Fake([500, 500, 503])
    g = f.guard(tmp_path, states=("TIME_WAIT", "CLOSE"), ports="ceph")
    g.step()  # 500 drops before we started: not ours to react to
    g.step()
    assert f.purges == []
    g.step()
    assert f.purges == [{"ns": Netns(name="n1"), "states": ("TIME_WAIT", "CLOSE"), "ports": "ceph"}]
    assert [e for e, _ in f.events] == ["drop", "purge"]
    ev = f.events[1][1]
    assert ev["deleted"] == 118 and ev["by_state"] == {"TIME_WAIT": 100, "CLOSE": 18} and ev["failed"] == 0
    st = load_state(str(tmp_path / "guard-n1.json"))
    assert st is not None
    assert (st.purges, st.purged_entries, st.drops_seen, st.expired_freed) == (1, 118, 3, 4)
    assert st.purged_by_state == {"TIME_WAIT": 100, "CLOSE": 18}
    assert st.last_purge is not None and st.last_purge["count_after"] == 878


def test_purges_are_rate_limited() -> None:
    f = Fake([0, 1, 2, 3, 4])
    g = f.guard(min_interval=5.0)
    g.step()
    g.step()  # purge at t=0
    f.now = 1.0
    g.step()  # within 5 s: rate limited, reported once
    f.now = 2.0
    g.step()
    assert len(f.purges) == 1
    assert [e for e, _ in f.events] == ["drop", "purge", "rate_limited"]
    f.now = 5.5
    g.step()
    assert len(f.purges) == 2 and g.state.rate_limited == 2


def test_counter_reset_and_read_errors_never_purge() -> None:
    f = Fake([100, 3, CannotRead("gone"), 3])
    g = f.guard()
    for _ in range(4):
        g.step()
    assert f.purges == [] and g.state.errors == 1
    assert f.events == [("error", {"netns": "n1", "message": "gone", "errors": 1})]


def test_a_lasting_read_failure_is_logged_every_10_s_not_every_poll() -> None:
    f = Fake([CannotRead("gone")] * 200)
    g = f.guard(poll_hz=10.0)
    for _ in range(200):  # 20 s at 10 Hz
        g.step()
        f.now += 0.1
    assert g.state.errors == 200
    assert [e for e, _ in f.events] == ["error", "error"]


def test_a_failed_purge_is_logged_and_the_guard_goes_on() -> None:
    f = Fake([0, 1, 2])
    f.purge_error = CannotRead("netlink refused")
    g = f.guard(min_interval=0.0)
    g.step()
    g.step()
    assert g.state.errors == 1 and ("error", {"netns": "n1", "message": "netlink refused", "trigger": "drop"}) in f.events
    f.purge_error = None
    g.step()
    assert g.state.purges == 1


def test_run_polls_at_the_configured_rate_until_stopped() -> None:
    f = Fake([0] * 1000)
    g = f.guard(poll_hz=10.0)
    st = g.run(lambda: f.now >= 3.0)
    assert 29 <= st.polls <= 31
    assert f.events[0][0] == "start" and f.events[0][1]["poll_hz"] == 10.0 and f.events[-1][0] == "stop"


@pytest.mark.parametrize("cfg", [
    {"poll_hz": 2.0},  # too slow to end an overflow in < 0.4 s
    {"ports": "some"},
    {"states": ()},
    {"states": ("ESTABLISHED",)},
    {"states": ("NOT_A_STATE",)},
    {"min_interval": -1.0},
])
def test_bad_configs_are_refused(cfg: dict[str, Any]) -> None:
    with pytest.raises(BadInput):
        GuardConfig(**cfg)


def test_state_file_round_trip_and_bad_files(tmp_path: pathlib.Path) -> None:
    p = state_path(str(tmp_path), Netns(pid=42))
    assert p.endswith("guard-pid-42.json")
    assert load_state(p) is None
    st = GuardState(netns="pid:42", started=1.0, purges=3, purged_by_state={"TIME_WAIT": 9})
    save_state(p, st)
    back = load_state(p)
    assert back is not None and back.purges == 3 and back.purged_by_state == {"TIME_WAIT": 9}
    assert [x.name for x in tmp_path.iterdir()] == ["guard-pid-42.json"]  # no temp file left
    pathlib.Path(p).write_text("{not json")
    with pytest.raises(CannotRead):
        load_state(p)
    pathlib.Path(p).write_text(json.dumps({"schema": 99}))
    with pytest.raises(CannotRead):
        load_state(p)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | st.dictionaries(st.sampled_from(["schema", "netns", "started", "purges", "purged_by_state", "last_purge"]),
                         st.none() | st.integers() | st.text(max_size=4) | st.lists(st.integers(), max_size=2),
                         max_size=6).map(lambda d: json.dumps({"schema": 1, **d}).encode()))
def test_any_state_file_loads_or_is_cannot_read(tmp_path: pathlib.Path, raw: bytes) -> None:
    p = tmp_path / "guard-x.json"
    p.write_bytes(raw)
    try:
        load_state(str(p))
    except CannotRead:
        pass
