"""The recorded sweep (data/lab/sweep/*.jsonl, and the repeated shapes in data/lab/sweep/repeat/) follows the
contract the model's calibration codes against, and covers the shapes issue 14 asks for."""

from __future__ import annotations

import glob
import os
from typing import Any

import pytest

from ctguard.lab import sweep as sw

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data", "lab", "sweep")
SHAPE_FILES = sorted(glob.glob(os.path.join(DATA, "*.jsonl")))
FILES = SHAPE_FILES + sorted(glob.glob(os.path.join(DATA, "repeat", "*.jsonl")))


def _all() -> list[tuple[str, dict[str, Any]]]:
    return [(os.path.basename(f), r) for f in FILES for r in sw.read_records(f)]


def test_the_recorded_sweep_covers_the_issue() -> None:
    shapes = [sw.read_records(f)[0]["shape"] for f in SHAPE_FILES]
    assert len(shapes) >= 8, f"{len(shapes)} shapes recorded under {DATA}"
    assert {s["hosts"] for s in shapes} >= {2, 3, 4, 5, 6}
    assert {s["osds_per_host"] for s in shapes} >= {2, 3, 4, 5, 6}
    assert {s["pool_size"] for s in shapes} >= {2, 3}
    per_osd = [s["pg_replicas_per_osd"] for s in shapes]
    assert min(per_osd) <= 30 and max(per_osd) >= 150
    assert {s["clients"] for s in shapes} >= {1, 10, 40}
    many = [s for s in shapes if s["clients"] >= 10]
    assert {s["client_rate"] <= 5 for s in many} == {True, False}  # light and busy


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_each_shape_file_follows_the_contract(path: str) -> None:
    records = sw.read_records(path)
    sid = os.path.basename(path)[: -len(".jsonl")]
    assert sorted(r["scenario"] for r in records) == sorted(sw.SCENARIO_NAMES), path
    for r in records:
        assert sw.check_record(r) == [], (path, r["scenario"])
        assert r["shape"]["id"] == sid
        assert r["host"] == records[0]["host"] and r["shape"] == records[0]["shape"]
        # the host's real table at the baseline: about as many rows as the baseline count, all with addresses
        assert abs(len(r["baseline_entries"]) - r["baseline"]) <= max(10, r["baseline"] // 5), (path, r["scenario"])
        assert all(row[0] in ("tcp", "udp", "icmp") for row in r["baseline_entries"])
    by = {r["scenario"]: r for r in records}
    # the squeezed run starts with half the measured burst free, as `lab reproduce` does (within what the
    # table moved while the filler was loaded)
    half = max(1, by["measure"]["burst"] // 2)
    assert abs(by["all-at-once"]["free"] - half) <= max(20, half // 2), path


def test_records_are_the_lab_that_made_them() -> None:
    for name, r in _all():
        hosts = r["addresses"]["hosts"]
        assert len(hosts) == r["shape"]["hosts"], name
        assert len(r.get("osds", [])) == r["shape"]["osds_per_host"], name
        assert r["ceph_version"] == "16.2.15", name
