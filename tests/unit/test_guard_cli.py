"""`ctguard guard --preempt` on a fake /proc tree: the plan names the reserve, bad values are one line and exit 3,
and the probe reads count, limit and drops from descriptors opened once (re-read on every poll)."""

from __future__ import annotations

import json
import pathlib

import pytest
from click.testing import CliRunner
from test_export_watch import HEADER, fake_proc

from ctguard.cli import cli
from ctguard.errors import CannotRead
from ctguard.export.probe import Probe
from ctguard.kernel.netns import Netns


def test_preempt_plan_shows_the_reserve_and_writes_nothing(tmp_path: pathlib.Path) -> None:
    root = fake_proc(tmp_path, 261_000, 262_144, (3, 4))
    res = CliRunner().invoke(cli, ["guard", "--preempt", "--json", "--proc-root", root,
                                   "--state-dir", str(tmp_path / "st")])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["schema"] == 1 and doc["preempt"] is True and doc["applied"] is False
    assert doc["count"] == 261_000 and doc["limit"] == 262_144 and doc["drop_total"] == 7
    assert doc["reserve"] == {"reserve": 2_622, "floor": 2_622, "predicted_burst": 0, "daemon_entries": 0,
                              "daemons": 0, "source": "floor"}
    assert doc["preempt_interval_s"] == 0.5 and doc["reserve_interval_s"] == 300
    assert not (tmp_path / "st").exists()
    res = CliRunner().invoke(cli, ["guard", "--preempt", "--reserve", "5000", "--proc-root", root])
    assert res.exit_code == 0, res.output
    assert "reserve of 5,000 entries (fixed)" in res.output and "Nothing done: run with --apply" in res.output


def test_bad_preempt_values_are_one_line_and_exit_3(tmp_path: pathlib.Path) -> None:
    root = fake_proc(tmp_path, 10, 1000, (0, 0))
    for args in (["--preempt", "--poll-hz", "5"], ["--preempt", "--reserve", "0"],
                 ["--preempt", "--preempt-interval", "0.01"], ["--preempt", "--reserve-interval", "1"],
                 ["--preempt", "--burst-factor", "-1"]):
        res = CliRunner().invoke(cli, ["guard", *args, "--proc-root", root])
        assert res.exit_code in (2, 3), (args, res.output)  # click's usage errors are 2, ours 3
        assert res.exit_code == 3 or "Invalid value" in res.output, (args, res.output)
    res = CliRunner().invoke(cli, ["guard", "--preempt", "--proc-root", str(tmp_path / "nowhere")])
    assert res.exit_code == 3 and res.output.startswith("ctguard: ") and res.output.count("\n") == 1


def test_probe_rereads_the_same_descriptors(tmp_path: pathlib.Path) -> None:
    root = fake_proc(tmp_path, 100, 1000, (1, 2))
    p = Probe(Netns(), root)
    try:
        assert p.fill() == (100, 1000) and p.drops() == 3 and p.source == "procfs"
        (tmp_path / "sys" / "net" / "netfilter" / "nf_conntrack_count").write_text("250\n")
        row = " ".join(f"{v:08x}" for v in [250, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 1])
        (tmp_path / "net" / "stat" / "nf_conntrack").write_text(HEADER + "\n" + row + "\n")
        assert p.fill() == (250, 1000) and p.drops() == 9
    finally:
        p.close()


def test_a_namespace_that_is_gone_is_a_failed_reading_not_bad_input(tmp_path: pathlib.Path) -> None:
    """The guard logs a failed reading and keeps polling (the name may come back); start-up checks the name."""
    p = Probe(Netns(name=f"ctguard-test-none-{tmp_path.name}"), fake_proc(tmp_path, 1, 10, (0, 0)))
    with pytest.raises(CannotRead, match="no network namespace"):
        p.fill()
    with pytest.raises(CannotRead):
        p.drops()
