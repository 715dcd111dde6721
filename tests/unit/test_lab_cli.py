"""`ctguard lab` without a lab: bad input is one line on stderr with exit 3; the comparison renders from a
recorded run document."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

from ctguard.cli.lab import comparison_table

CTGUARD = [sys.executable, "-c", "from ctguard.cli import main; main()"]
DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data", "lab")


def ctguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CTGUARD + list(args), capture_output=True, text=True, timeout=60, check=False)


def _one_line_error(out: subprocess.CompletedProcess[str], rc: int, word: str) -> None:
    assert out.returncode == rc, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctguard: ") and word in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_help_lists_the_commands() -> None:
    out = ctguard("lab", "--help")
    assert out.returncode == 0
    for cmd in ("up", "down", "status", "ceph", "exec", "restart-osds", "reproduce"):
        assert cmd in out.stdout


def test_status_without_a_lab(tmp_path: object) -> None:
    _one_line_error(ctguard("lab", "status", "--prefix", "ctlzz9", "--dir", str(tmp_path)), 3, "no lab")


def test_bad_prefix() -> None:
    _one_line_error(ctguard("lab", "up", "--prefix", "Bad-Prefix"), 3, "prefix")


def test_bad_hosts() -> None:
    _one_line_error(ctguard("lab", "up", "--prefix", "ctlzz9", "--hosts", "0"), 3, "--hosts")


def test_unknown_scenario(tmp_path: object) -> None:
    _one_line_error(ctguard("lab", "reproduce", "--prefix", "ctlzz9", "--dir", str(tmp_path), "--scenario",
                            "bogus"), 3, "bogus")


def test_restart_osds_without_a_lab(tmp_path: object) -> None:
    _one_line_error(ctguard("lab", "restart-osds", "--prefix", "ctlzz9", "--dir", str(tmp_path), "ctlzz9-h1"),
                    3, "no lab")


def _doc() -> dict[str, object]:
    return {"run_id": "r1", "host": "cl-h1", "baseline": 190, "burst": 220, "max": 262144, "scenarios": [
        {"name": "all-at-once", "available": True, "met": True, "peak": 262144, "filler": 261800,
         "peak_over_baseline": 1.8, "free_before": 110, "drops": 870, "overflow_seconds": 12.3,
         "seconds_to_clean": 22.9, "osds_marked_down": 0, "fault_lines_per_s": 4.4, "client_blocked_s": 0.0,
         "expect": "drops"},
        {"name": "ctguard-restart", "available": False, "met": None, "expect": "no-drops"},
    ]}


def test_comparison_table_renders() -> None:
    console = Console(width=200, record=True)
    console.print(comparison_table(_doc()))
    text = console.export_text()
    assert "all-at-once" in text and "870" in text and "12.3" in text and "n/a" in text


@pytest.mark.parametrize("run_json", sorted(glob.glob(os.path.join(DATA, "*", "run.json"))))
def test_recorded_runs_are_documented_shape(run_json: str) -> None:
    """Every recorded run in data/lab has the documented shape (docs/lab.md) and its series files exist."""
    with open(run_json) as f:
        doc = json.load(f)
    assert doc["schema"] == 1
    for key in ("run_id", "lab", "host", "kernel", "ceph_version", "max", "baseline", "burst", "scenarios"):
        assert key in doc
    console = Console(width=200, record=True)
    console.print(comparison_table(doc))
    d = os.path.dirname(run_json)
    names = {s["name"] for s in doc["scenarios"]}
    assert "measure" in names and "all-at-once" in names
    for s in doc["scenarios"]:
        if not s["available"]:
            assert s["reason"]
            continue
        series = os.path.join(d, f"{s['name']}.jsonl")
        with open(series) as f:
            recs = [json.loads(line) for line in f]
        assert recs[0]["kind"] == "meta" and recs[0]["scenario"]["name"] == s["name"]
        kinds = {r["kind"] for r in recs}
        assert {"ct", "ceph", "states", "event"} <= kinds
        ct = [r for r in recs if r["kind"] == "ct"]
        # >= 5 Hz over the window
        assert len(ct) >= 5 * (ct[-1]["t"] - ct[0]["t"]) * 0.9
        assert max(r["count"] for r in ct) == s["peak"]
        assert ct[-1]["drop"] - ct[0]["drop"] == s["drops"]
