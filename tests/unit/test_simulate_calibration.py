"""Calibration: the simulator against the lab's recorded runs (data/lab/<run>/<scenario>.jsonl, docs/lab.md).

Given each run's starting point (baseline, filler, max, TIME_WAIT, strategy, the OSD stop/start timing), the
predicted peak of the host's real entries (filler excluded) is within 15 % of the measured one, and the
overflow verdict (did the host drop packets) is right every time; purge runs also end their overflow within
a few seconds as measured. Without recorded runs the test is skipped
(the ceph-lab.md §4 calibration in test_simulate.py still runs)."""

from __future__ import annotations

import glob
import json
import os

import pytest

from ctguard.model import calibrate, whatif

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
DATA = os.environ.get("CTGUARD_LAB_DATA", os.path.join(REPO, "data", "lab"))


def _cases() -> list[tuple[str, str]]:
    """Every recorded scenario the simulator predicts: not the untracked (notrack takes Ceph out of the
    table) and ctguard-restart ones (another capability's gate decides their timing)."""
    out = []
    for run_dir in sorted(glob.glob(os.path.join(DATA, "*"))):
        for path in sorted(glob.glob(os.path.join(run_dir, "*.jsonl"))):
            with open(path, encoding="utf-8") as f:
                first = f.readline()
            # a run's series starts with its meta record; data/lab/sweep/ holds the sweep's summary lines
            meta = json.loads(first) if first.strip() else {}
            if meta.get("kind") == "meta" and calibrate.applicable(meta):
                out.append((os.path.basename(run_dir), path))
    return out


CASES = _cases()


@pytest.mark.skipif(not CASES, reason=f"no recorded lab runs under {DATA}")
@pytest.mark.parametrize("run_id,path", CASES, ids=[f"{r}/{os.path.basename(p)}" for r, p in CASES])
def test_prediction_matches_recorded_run(run_id: str, path: str) -> None:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    run_file = os.path.join(os.path.dirname(path), "run.json")
    run = None
    if os.path.exists(run_file):
        with open(run_file, encoding="utf-8") as f:
            run = json.load(f)
    m = calibrate.measured(rows)
    sc = calibrate.scenario(rows, run)
    res = whatif.run(sc)
    filler = float(rows[0].get("filler") or 0)
    predicted = res.headline.peak_entries - filler
    actual = m.peak - filler
    assert abs(predicted - actual) <= 0.15 * actual, (m.name, predicted, actual)
    assert res.headline.overflow == m.overflow, (m.name, [r.overflow for r in res.runs], m.drops)
    if sc.purge_after_s is not None and m.overflow:
        # purging closing states at the first drop (and again at later ones) ends it within seconds
        assert res.headline.over_limit_s <= 10.0
