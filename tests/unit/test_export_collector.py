"""The collector on its own registry: values from fake readings and a fake breakdown, label caps, failures."""

from __future__ import annotations

import math
import pathlib
import sys

import prometheus_client
from prometheus_client.exposition import generate_latest

from ctguard.errors import CannotRead
from ctguard.export.breakdown import Breakdown, Refresher
from ctguard.export.client import Scrape
from ctguard.export.collector import ConntrackCollector, build_registry
from ctguard.export.guard import GuardState, save_state
from ctguard.export.readings import Reading
from ctguard.export.trend import SampleWindow
from ctguard.kernel.netns import Netns

BD = Breakdown(taken_at=1_700_000_000.0, seconds=0.42, count=9000,
               by_state={"ESTABLISHED": 6000, "TIME_WAIT": 2500, "SYN_SENT": 500},
               by_proto={"tcp": 9000}, by_role={"ceph-osd": 7000, "ceph-mon": 500, "other": 1500},
               by_daemon=[("osd.1", 3000), ("osd.2", 2000), ("mon.a", 500)] + [(f"p{i}", 1) for i in range(100)],
               assured=8500, expired_freed=37)


def _scrape(col: ConntrackCollector) -> dict[str, float]:
    return Scrape(0.0, generate_latest(build_registry(col)).decode()).samples()


def _reading(t: float = 100.0, count: int = 9000, drop: int = 7) -> Reading:
    return Reading(t, count, 10000, {"drop": drop, "early_drop": 3, "insert_failed": 1, "invalid": 2,
                                     "insert": 0, "search_restart": 4, "found": 99}, "netlink")


def test_nothing_registered_at_import() -> None:
    names = {n for c in prometheus_client.REGISTRY._collector_to_names.values() for n in c}  # noqa: SLF001
    assert not any(n.startswith("ctguard_") for n in names)
    assert "ctguard.export.collector" in sys.modules


def test_table_counters_breakdown_and_headroom(tmp_path: pathlib.Path) -> None:
    ref = Refresher(lambda: BD, 60)
    ref.refresh_once()
    col = ConntrackCollector(Netns(name="x"), refresher=ref, read=lambda: _reading(), top_daemons=5,
                             burst_factor=2.0)
    s = _scrape(col)
    assert s['ctguard_exporter_info{netns="x",version="0.1.0"}'] == 1
    assert s["ctguard_conntrack_entries"] == 9000
    assert s["ctguard_conntrack_limit"] == 10000
    assert s["ctguard_conntrack_free_entries"] == 1000
    assert s["ctguard_conntrack_drop_total"] == 7
    assert s["ctguard_conntrack_early_drop_total"] == 3
    assert s["ctguard_conntrack_insert_failed_total"] == 1
    assert s["ctguard_conntrack_invalid_total"] == 2
    assert s["ctguard_conntrack_insert_total"] == 0
    assert s["ctguard_conntrack_search_restart_total"] == 4
    assert "ctguard_conntrack_found_total" not in s
    assert s['ctguard_conntrack_state_entries{state="TIME_WAIT"}'] == 2500
    assert s['ctguard_conntrack_role_entries{role="ceph-osd"}'] == 7000
    assert s['ctguard_conntrack_protocol_entries{protocol="tcp"}'] == 9000
    daemons = {k: v for k, v in s.items() if k.startswith("ctguard_conntrack_daemon_entries")}
    assert len(daemons) == 6  # top 5 + other
    assert sum(daemons.values()) == sum(n for _, n in BD.by_daemon)
    assert s['ctguard_conntrack_daemon_entries{daemon="other"}'] == 98
    assert s["ctguard_conntrack_assured_entries"] == 8500
    assert s['ctguard_restart_burst_entries{daemon="osd.1"}'] == 6000
    assert s['ctguard_restart_headroom_entries{daemon="osd.1"}'] == 1000 - 6000
    assert s["ctguard_breakdown_expired_freed_entries_total"] == 37
    assert s["ctguard_breakdown_last_expired_freed_entries"] == 37
    assert s["ctguard_breakdown_duration_seconds"] == 0.42
    assert s["ctguard_breakdown_runs_total"] == 1 and s["ctguard_breakdown_errors_total"] == 0
    assert s["ctguard_exporter_read_success"] == 1
    assert math.isnan(s["ctguard_conntrack_growth_entries_per_second"])  # one sample: no rate yet
    assert math.isinf(s["ctguard_conntrack_projected_full_seconds"])


def test_growth_and_time_to_full_from_successive_readings() -> None:
    readings = iter([_reading(t=100.0, count=9000), _reading(t=110.0, count=9500)])
    col = ConntrackCollector(Netns(), read=lambda: next(readings), window=SampleWindow(60))
    _scrape(col)
    s = _scrape(col)
    assert s["ctguard_conntrack_growth_entries_per_second"] == 50.0
    assert s["ctguard_conntrack_projected_full_seconds"] == 10.0  # 500 free at 50/s


def test_a_failed_reading_is_a_metric_not_an_error() -> None:
    def broken() -> Reading:
        raise CannotRead("nope")

    col = ConntrackCollector(Netns(), read=broken)
    s = _scrape(col)
    assert s["ctguard_exporter_read_success"] == 0
    assert s["ctguard_exporter_read_errors_total"] == 1
    assert "ctguard_conntrack_entries" not in s
    assert col.last_error == "nope"


def test_breakdown_errors_keep_the_last_good_one() -> None:
    calls = iter([BD])

    def src() -> Breakdown:
        try:
            return next(calls)
        except StopIteration:
            raise CannotRead("dump failed") from None

    ref = Refresher(src, 60)
    ref.refresh_once()
    ref.refresh_once()
    assert ref.last_error == "dump failed"
    s = _scrape(ConntrackCollector(Netns(), refresher=ref, read=lambda: _reading()))
    assert s["ctguard_breakdown_runs_total"] == 2 and s["ctguard_breakdown_errors_total"] == 1
    assert s['ctguard_conntrack_state_entries{state="ESTABLISHED"}'] == 6000


def test_guard_state_is_exported(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "guard-host.json")
    col = ConntrackCollector(Netns(), read=lambda: _reading(), guard_state_file=path)
    assert not any(k.startswith("ctguard_guard") for k in _scrape(col))  # no guard: no series
    save_state(path, GuardState(netns="host", started=1.0, updated=5.0, purges=2, drops_seen=40,
                                purged_entries=300, purged_by_state={"TIME_WAIT": 290, "CLOSE": 10},
                                last_purge={"ts": 4.0, "deleted": 10}))
    s = _scrape(col)
    # an older guard's file has no per-trigger counts: it only ever purged after drops
    assert s['ctguard_guard_purges_total{trigger="drop"}'] == 2
    assert s['ctguard_guard_purges_total{trigger="preempt"}'] == 0
    assert s['ctguard_guard_freed_entries_total{trigger="drop"}'] == 300
    assert s["ctguard_guard_preempt"] == 0 and "ctguard_guard_reserve_entries" not in s
    assert s["ctguard_guard_drops_seen_total"] == 40
    assert s['ctguard_guard_purged_entries_total{state="TIME_WAIT"}'] == 290
    assert s["ctguard_guard_last_purge_timestamp_seconds"] == 4.0
    assert s["ctguard_guard_heartbeat_timestamp_seconds"] == 5.0


def test_preempting_guard_exports_purges_by_trigger_and_its_reserve(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "guard-host.json")
    col = ConntrackCollector(Netns(), read=lambda: _reading(), guard_state_file=path)
    save_state(path, GuardState(netns="host", started=1.0, updated=5.0, purges=5, purged_entries=400,
                                expired_freed=7, preempt=True, purges_by_trigger={"preempt": 4, "drop": 1},
                                freed_by_trigger={"preempt": 380, "drop": 27}, below_reserve=True,
                                reserve={"reserve": 2622, "floor": 2622, "predicted_burst": 380,
                                         "daemon_entries": 190, "daemons": 4, "source": "breakdown"}))
    s = _scrape(col)
    assert s['ctguard_guard_purges_total{trigger="preempt"}'] == 4
    assert s['ctguard_guard_purges_total{trigger="drop"}'] == 1
    assert s['ctguard_guard_freed_entries_total{trigger="preempt"}'] == 380
    assert s['ctguard_guard_freed_entries_total{trigger="drop"}'] == 27
    assert s["ctguard_guard_preempt"] == 1
    assert s["ctguard_guard_reserve_entries"] == 2622
    assert s["ctguard_guard_predicted_burst_entries"] == 380
    assert s["ctguard_guard_below_reserve"] == 1
