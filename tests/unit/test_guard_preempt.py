"""The pre-emptive guard on a fake table and a fake clock: it purges closing states while free entries are below
the reserve and the count grows, before any drop; never ESTABLISHED; rate-limited with a backoff; the reserve is
max(1 % of max, the predicted whole-host burst)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from ctguard.errors import BadInput
from ctguard.export.guard import Guard, GuardConfig, compute_reserve, load_state
from ctguard.kernel.netns import Netns
from ctguard.table.purge import PurgeResult


class Table:
    """A conntrack table reduced to what the guard can see and do: count, limit, drop counter, and entries by
    TCP state. Adding past the limit drops (the kernel's `drop` counter) instead of inserting."""

    def __init__(self, limit: int, **states: int) -> None:
        self.limit = limit
        self.states: dict[str, int] = dict(states)
        self.drops = 0
        self.purged: list[tuple[str, ...]] = []

    @property
    def count(self) -> int:
        return sum(self.states.values())

    def add(self, state: str, n: int) -> None:
        room = max(0, self.limit - self.count)
        self.states[state] = self.states.get(state, 0) + min(n, room)
        self.drops += max(0, n - room)

    def close(self, n: int) -> None:
        """n ESTABLISHED connections close: their entries linger in TIME_WAIT (no change of the count)."""
        n = min(n, self.states.get("ESTABLISHED", 0))
        self.states["ESTABLISHED"] -= n
        self.states["TIME_WAIT"] = self.states.get("TIME_WAIT", 0) + n

    def fill(self) -> tuple[int, int]:
        return self.count, self.limit

    def purge(self, ns: Netns, *, states: tuple[str, ...], ports: str) -> PurgeResult:
        self.purged.append(states)
        before = self.count
        by_state = {s: self.states.pop(s) for s in states if self.states.get(s)}
        return PurgeResult(netns=ns.label, states=states, ports=ports, matched=sum(by_state.values()),
                           deleted=sum(by_state.values()), missing=0, failed=0, by_state=by_state,
                           count_before=before, count_after=self.count, seconds=0.01)


class Rig:
    def __init__(self, table: Table, tmp: pathlib.Path | None = None, source: Any = None, **cfg: Any) -> None:
        self.t = table
        self.now = 0.0
        self.events: list[tuple[str, dict[str, Any]]] = []
        cfg.setdefault("preempt", True)
        self.g = Guard(Netns(name="h1"), GuardConfig(**cfg), read_drops=lambda: self.t.drops,
                       read_fill=self.t.fill, purge=self.t.purge, emit=self._emit, reserve_source=source,
                       state_file=None if tmp is None else str(tmp / "guard-h1.json"),
                       clock=lambda: self.now, wall=lambda: 1_700_000_000.0 + self.now, sleep=lambda s: None)

    def _emit(self, event: str, fields: Any) -> None:
        self.events.append((event, dict(fields)))

    def poll(self, n: int = 1) -> None:
        for _ in range(n):
            self.g.step()
            self.now += 0.1

    def names(self) -> list[str]:
        return [e for e, _ in self.events]

    def purges(self) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == "purge"]


def restart_host(rig: Rig, osds: int = 4, per_osd: int = 50) -> None:
    """Every OSD of the host at once, as the lab measured it: the connections close and turn into TIME_WAIT in
    place (the count does not move), a few of the peers' reconnects are refused while the OSDs are down (CLOSE
    entries), and ~2 s later the new processes open a fresh set within one 100 ms poll. Polled at 10 Hz."""
    rig.t.close(osds * per_osd)
    rig.poll(3)
    for _ in range(3):
        rig.t.add("CLOSE", osds)
        rig.poll()
    rig.poll(20)
    rig.t.add("ESTABLISHED", osds * per_osd)
    rig.poll(20)


def test_a_restart_burst_larger_than_the_free_entries_drops_without_preempt_and_not_with_it() -> None:
    # free = 100 < burst (200 new sessions + refused attempts), as in the lab's squeeze
    base = Rig(Table(10_000, ESTABLISHED=9_900), preempt=False)
    restart_host(base)
    assert base.t.drops > 0 and base.t.purged == [(
        "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE")]  # only after the first drop

    rig = Rig(Table(10_000, ESTABLISHED=9_900), reserve=300)
    restart_host(rig)
    assert rig.t.drops == 0
    assert rig.purges() and all(p["trigger"] == "preempt" for p in rig.purges())
    assert sum(p["deleted"] for p in rig.purges()) >= 200  # the old connections' TIME_WAIT entries went
    assert rig.t.states["ESTABLISHED"] == 9_900  # every live connection kept its entry
    assert rig.g.state.purges_by_trigger == {"preempt": len(rig.purges())}
    assert rig.g.state.freed_by_trigger["preempt"] == sum(p["deleted"] for p in rig.purges())


def test_never_established_and_before_a_drop_only_connections_over_at_both_ends() -> None:
    with pytest.raises(BadInput, match="ESTABLISHED"):
        GuardConfig(preempt=True, states=("TIME_WAIT", "ESTABLISHED"))
    with pytest.raises(BadInput, match="ESTABLISHED"):
        GuardConfig(preempt=True, preempt_states=("ESTABLISHED",))
    rig = Rig(Table(1_000, ESTABLISHED=980, TIME_WAIT=5, FIN_WAIT=3, CLOSE_WAIT=2), reserve=50)
    rig.poll()
    rig.t.add("ESTABLISHED", 5)
    rig.poll(30)
    assert rig.t.purged and set(rig.t.purged) == {("TIME_WAIT", "CLOSE")}
    assert rig.t.states["ESTABLISHED"] == 985 and rig.t.states["FIN_WAIT"] == 3 and rig.t.states["CLOSE_WAIT"] == 2
    # after a drop, every closing state the kernel's own early drop would take (still never ESTABLISHED)
    rig.t.drops += 1
    rig.poll()
    assert rig.t.purged[-1] == ("FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE")
    assert rig.t.states["ESTABLISHED"] == 985 and "FIN_WAIT" not in rig.t.states


def test_above_the_reserve_nothing_happens_and_below_it_purges_follow_growth_and_closing_churn() -> None:
    rig = Rig(Table(10_000, ESTABLISHED=5_000), reserve=200)
    rig.poll(50)
    assert rig.t.purged == [] and rig.g.state.polls == 50 and not rig.g.state.below_reserve
    rig.t.add("ESTABLISHED", 4_850)  # free 150 < 200: one purge at once
    rig.poll(100)  # it found nothing and the count does not grow: nothing more
    assert rig.names().count("purge") == 1 and rig.names().count("below_reserve") == 1
    assert rig.g.state.below_reserve and rig.g.state.free == 150
    rig.t.add("TIME_WAIT", 40)  # growth: purge
    rig.poll()
    assert len(rig.purges()) == 2 and rig.purges()[-1]["deleted"] == 40
    assert rig.purges()[-1]["free_before"] == 110 and rig.purges()[-1]["reserve"] == 200
    # it freed something: connections are closing, so it looks again 0.5 s later without any growth ...
    rig.t.close(25)
    rig.poll(6)
    assert len(rig.purges()) == 3 and rig.purges()[-1]["deleted"] == 25
    rig.poll(50)  # ... until a purge finds nothing
    assert len(rig.purges()) == 4 and rig.purges()[-1]["deleted"] == 0
    # back above the reserve: reported once, and the next fall purges at once again
    rig.t.states["ESTABLISHED"] -= 100
    rig.poll(3)
    assert rig.names().count("reserve_ok") == 1


def test_preemptive_purges_are_rate_limited_and_back_off_while_they_find_nothing() -> None:
    rig = Rig(Table(10_000, ESTABLISHED=9_950), reserve=500, preempt_interval=0.5, preempt_backoff_max=4.0)
    at: list[float] = []
    for _ in range(400):  # 40 s of ESTABLISHED churn (+1 per poll, -40 now and then): nothing a purge can free
        if rig.t.count >= 9_990:
            rig.t.states["ESTABLISHED"] -= 40
        rig.t.add("ESTABLISHED", 1)
        n = len(rig.t.purged)
        rig.poll()
        if len(rig.t.purged) > n:
            at.append(round(rig.now - 0.1, 1))
    gaps = [round(b - a, 1) for a, b in zip(at, at[1:], strict=False)]
    assert gaps and min(gaps) >= 0.5
    assert all(4.0 <= g <= 4.1 for g in gaps[-3:])  # doubled up to the cap
    assert len(at) <= 15  # not 80 (every 0.5 s)
    # a purge that frees something resets the interval to 0.5 s
    rig.t.states["ESTABLISHED"] -= 200
    rig.poll()
    rig.t.add("TIME_WAIT", 60)
    rig.poll(45)  # within the backed-off 4 s
    assert any(p["deleted"] == 60 for p in rig.purges())
    rig.t.add("TIME_WAIT", 60)
    n = len(rig.purges())
    rig.poll(6)
    assert len(rig.purges()) == n + 1 and rig.purges()[-1]["deleted"] == 60


def test_purges_take_at_most_a_third_of_the_time() -> None:
    """A slow purge (a full table on a busy host) is followed by a gap of twice its duration."""
    t = Table(10_000, ESTABLISHED=9_900)
    rig = Rig(t, reserve=500)
    slow = t.purge

    def purge(ns: Netns, *, states: tuple[str, ...], ports: str) -> PurgeResult:
        rig.now += 2.0  # the dump took 2 s
        r = slow(ns, states=states, ports=ports)
        return PurgeResult(**{**r.__dict__, "seconds": 2.0})

    rig.g._purge = purge
    at = []
    for _ in range(300):
        t.close(5)  # closing churn all the time: every purge finds something
        n = len(t.purged)
        rig.poll()
        if len(t.purged) > n:
            at.append(rig.now)
    gaps = [b - a for a, b in zip(at, at[1:], strict=False)]
    assert gaps and min(gaps) >= 2.0 + 4.0 - 1e-9  # its own 2 s, then 4 s of rest


def test_the_first_drop_still_purges_with_trigger_drop() -> None:
    rig = Rig(Table(1_000, ESTABLISHED=400), reserve=50, min_interval=5.0)
    rig.poll(3)
    rig.t.drops = 7  # dropped between two polls (a burst faster than 10 Hz)
    rig.poll()
    assert [p["trigger"] for p in rig.purges()] == ["drop"]
    assert rig.g.state.purges_by_trigger == {"drop": 1} and rig.g.state.drops_seen == 7


def test_reserve_is_the_larger_of_1_percent_and_the_whole_host_burst() -> None:
    r = compute_reserve(262_144)
    assert (r.entries, r.floor, r.burst, r.source) == (2_622, 2_622, 0, "floor")
    daemons = [("osd.0", 600), ("osd.1", 500), ("mon.a", 100), ("sshd", 5_000), ("unattributed", 9)]
    r = compute_reserve(262_144, by_daemon=daemons, by_role={"ceph-osd": 1}, burst_factor=2.0)
    assert (r.entries, r.burst, r.daemon_entries, r.daemons, r.source) == (2_622, 2_400, 1_200, 3, "breakdown")
    r = compute_reserve(262_144, by_daemon=[*daemons, ("osd.2", 400)], burst_factor=2.0)
    assert (r.entries, r.burst, r.source) == (3_200, 3_200, "breakdown")
    # no daemon attributed: the entries on Ceph ports by role stand in
    r = compute_reserve(65_536, by_daemon=[("unattributed", 900)],
                        by_role={"ceph-osd": 700, "ceph-mon": 20, "other": 5_000}, burst_factor=2.5)
    assert (r.entries, r.burst, r.source) == (1_800, 1_800, "roles")
    assert compute_reserve(262_144, by_daemon=daemons, fixed=100).entries == 100


def test_the_reserve_follows_the_newest_breakdown_and_is_saved(tmp_path: pathlib.Path) -> None:
    bd: list[Any] = [None]
    rig = Rig(Table(20_000, ESTABLISHED=19_500), tmp_path, source=lambda: bd[0])
    rig.poll()
    assert rig.g.reserve is not None and rig.g.reserve.entries == 200 and rig.g.reserve.source == "floor"
    bd[0] = ([("osd.0", 300), ("osd.1", 280)], {"ceph-osd": 580})
    rig.poll(101)  # the state file is rewritten at least every 10 s
    assert rig.g.reserve.entries == 1_160 and rig.g.reserve.source == "breakdown"
    assert [f["reserve"] for e, f in rig.events if e == "reserve"] == [200, 1_160]
    st = load_state(str(tmp_path / "guard-h1.json"))
    assert st is not None and st.preempt and st.reserve is not None
    assert st.reserve["reserve"] == 1_160 and st.reserve["predicted_burst"] == 1_160 and st.below_reserve


@pytest.mark.parametrize("cfg", [dict(preempt=True, poll_hz=5.0), dict(reserve=0), dict(preempt_interval=0.01),
                                 dict(burst_factor=-1.0), dict(reserve_fraction=0.9)])
def test_bad_preempt_configs_are_refused(cfg: dict[str, Any]) -> None:
    with pytest.raises(BadInput):
        GuardConfig(**cfg)


def test_preempt_needs_a_fill_reader() -> None:
    with pytest.raises(BadInput):
        Guard(Netns(), GuardConfig(preempt=True), read_drops=lambda: 0, purge=lambda *a, **k: None,
              emit=lambda e, f: None)
