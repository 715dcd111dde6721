"""The status CLI against fake /proc trees: exit codes follow the monitoring-plugin convention, bad input is
one line on stderr with exit 3, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROC = os.path.join(os.path.dirname(__file__), "..", "fixtures", "proc")
CTGUARD = [sys.executable, "-c", "from ctguard.cli import main; main()"]


def ctguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CTGUARD + list(args), capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("tree", "rc", "verdict"), [("linux-4.19", 0, "OK"), ("linux-6.18", 1, "WARN"),
                                                     ("linux-3.10", 2, "CRIT")])
def test_status_exit_codes(tree: str, rc: int, verdict: str, tmp_path: object) -> None:
    out = ctguard("status", "--json", "--proc-root", os.path.join(PROC, tree), "--state-dir", str(tmp_path))
    assert out.returncode == rc, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == 1 and doc["verdict"] == verdict
    for key in ("netns", "count", "max", "buckets", "fill", "stats", "timeouts", "verdict", "reasons"):
        assert key in doc
    assert doc["stats_source"] == "procfs"


def test_drops_since_last_sample_are_crit(tmp_path: object) -> None:
    tree = os.path.join(PROC, "linux-4.19")
    state = str(tmp_path)
    assert ctguard("status", "--proc-root", tree, "--state-dir", state).returncode == 0
    # simulate a later sample with a lower stored drop count: the counter "rose" since
    path = os.path.join(state, "status", "host.json")
    with open(path) as f:
        d = json.load(f)
    d["drop"] -= 4
    with open(path, "w") as f:
        json.dump(d, f)
    out = ctguard("status", "--json", "--proc-root", tree, "--state-dir", state)
    assert out.returncode == 2
    assert json.loads(out.stdout)["drop_delta"] == 4


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--proc-root", os.path.join(PROC, "no-conntrack")],
        ["status", "--proc-root", os.path.join(PROC, "garbled-stat")],
        ["status", "--osd-ports", "9000-100"],
        ["status", "--mon-ports", "x"],
        ["status", "--netns", "a", "--netns-pid", "1"],
        ["status", "--netns", "../etc"],
        ["purge", "--states", "BOGUS"],
        ["status", "--window", "-1"],
        ["nonsense"],
    ],
)
def test_bad_input_is_one_line_exit_3(args: list[str]) -> None:
    out = ctguard(*args)
    assert out.returncode == 3, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("ctguard: ")


def test_help_documents_exit_codes() -> None:
    out = ctguard("status", "--help")
    assert out.returncode == 0 and "3 UNKNOWN" in out.stdout
