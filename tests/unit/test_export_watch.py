"""watch frames (rates, verdict, JSON), the rich rendering, and the CLI on a fake /proc tree."""

from __future__ import annotations

import json
import pathlib

from click.testing import CliRunner
from rich.console import Console

from ctguard.cli import cli
from ctguard.cli.export import render
from ctguard.export.breakdown import Breakdown, Refresher
from ctguard.export.readings import Reading
from ctguard.export.watch import WatchModel

HEADER = ("entries clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop "
          "icmp_error expect_new expect_create expect_delete search_restart")


def fake_proc(root: pathlib.Path, count: int, limit: int, drops: tuple[int, int]) -> str:
    nf = root / "sys" / "net" / "netfilter"
    nf.mkdir(parents=True)
    (nf / "nf_conntrack_count").write_text(f"{count}\n")
    (nf / "nf_conntrack_max").write_text(f"{limit}\n")
    stat = root / "net" / "stat"
    stat.mkdir(parents=True)
    rows = [" ".join(f"{v:08x}" for v in [count, 0, 0, 0, 0, 0, 0, 0, 0, 0, d, 2, 0, 0, 0, 0, 1]) for d in drops]
    (stat / "nf_conntrack").write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    return str(root)


def _model(readings: list[Reading], bd: Breakdown | None = None) -> WatchModel:
    it = iter(readings)
    ref = None
    if bd is not None:
        ref = Refresher(lambda: bd, 60)
        ref.refresh_once()
    return WatchModel("n1", lambda: next(it), ref, top=2, wall=lambda: 1_700_000_000.0)


BD = Breakdown(1.0, 0.3, 950, by_state={"ESTABLISHED": 600, "TIME_WAIT": 300, "CLOSE": 50},
               by_daemon=[("osd.4", 400), ("osd.5", 100), ("mon.a", 50)])


def test_frames_compute_rates_and_verdict() -> None:
    m = _model([Reading(0.0, 900, 1000, {"drop": 10}, "netlink"), Reading(2.0, 950, 1000, {"drop": 30}, "netlink")],
               BD)
    first = m.frame()
    assert first.drop_rate is None and first.growth is None
    f = m.frame()
    assert f.drop_rate == 10.0 and f.growth == 25.0 and f.seconds_to_full == 2.0
    assert f.insert_rate is None  # the kernel does not maintain it: shown as unknown, not 0
    assert f.verdict == "CRIT"
    assert f.headroom is not None and f.headroom.daemon == "osd.4" and f.headroom.headroom == 50 - 800
    doc = f.to_json()
    assert doc["top_daemons"] == [{"name": "osd.4", "entries": 400}, {"name": "osd.5", "entries": 100}]
    assert doc["top_states"] == [{"state": "ESTABLISHED", "entries": 600}, {"state": "TIME_WAIT", "entries": 300}]
    assert doc["headroom"]["would_overflow"] is True and doc["rates"]["drop"] == 10.0


def test_quiet_table_is_ok_and_renders() -> None:
    m = _model([Reading(0.0, 20, 1000, {"drop": 0}, "procfs"), Reading(1.0, 20, 1000, {"drop": 0}, "procfs")])
    m.frame()
    f = m.frame()
    assert f.verdict == "OK" and f.to_json()["seconds_to_full"] is None
    con = Console(record=True, width=100, color_system=None)
    con.print(render(f))
    text = con.export_text()
    assert "ctguard watch  n1" in text and "20 / 1,000  (2.0%)" in text
    assert "not filling" in text and "waiting for the first breakdown" in text


def test_render_names_the_osd_whose_restart_would_overflow() -> None:
    m = _model([Reading(0.0, 950, 1000, {"drop": 0}, "netlink")], BD)
    con = Console(record=True, width=120, color_system=None)
    con.print(render(m.frame()))
    text = con.export_text()
    assert "restarting osd.4 now would overflow" in text and "osd.4" in text and "ESTABLISHED" in text


def test_cli_watch_once_json_on_a_fake_proc_tree(tmp_path: pathlib.Path) -> None:
    root = fake_proc(tmp_path, 800, 1000, (5, 6))
    res = CliRunner().invoke(cli, ["watch", "--once", "--json", "--no-breakdown", "--interval", "0.1",
                                   "--proc-root", root])
    assert res.exit_code == 1, res.output  # 80 % full: WARN
    doc = json.loads(res.output)
    assert doc["schema"] == 1 and doc["count"] == 800 and doc["counters"]["drop"] == 11
    assert doc["counters_source"] == "procfs" and doc["verdict"] == "WARN"


def test_cli_guard_plan_on_a_fake_proc_tree(tmp_path: pathlib.Path) -> None:
    root = fake_proc(tmp_path, 10, 1000, (0, 0))
    res = CliRunner().invoke(cli, ["guard", "--json", "--proc-root", root, "--states", "TIME_WAIT,close",
                                   "--ports", "ceph", "--state-dir", str(tmp_path / "st")])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["applied"] is False and doc["states"] == ["TIME_WAIT", "CLOSE"] and doc["ports"] == "ceph"
    assert not (tmp_path / "st").exists()
    res = CliRunner().invoke(cli, ["guard", "--proc-root", root])
    assert res.exit_code == 0 and "Nothing done: run with --apply" in res.output


def test_cli_bad_input_is_one_line_and_exit_3(tmp_path: pathlib.Path) -> None:
    root = fake_proc(tmp_path, 10, 1000, (0, 0))
    for args in (["exporter", "--listen", "nowhere", "--proc-root", root, "--no-breakdown"],
                 ["exporter", "--netns", "a/b"],
                 ["watch", "--once", "--netns", "x", "--netns-pid", "5"],
                 ["guard", "--states", "ESTABLISHED", "--proc-root", root],
                 ["guard", "--states", "BOGUS", "--proc-root", root],
                 ["guard", "--poll-hz", "1", "--proc-root", root]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 3, (args, res.output)
        assert res.output.startswith("ctguard: ") and res.output.count("\n") == 1, (args, res.output)
