"""The alert rules: valid for the real promtool, their unit tests pass, and they only use metrics we export."""

from __future__ import annotations

import os
import pathlib
import re
import shutil

import pytest
import yaml

from ctguard.export.breakdown import Breakdown, Refresher
from ctguard.export.collector import ConntrackCollector, build_registry
from ctguard.export.guard import GuardState, save_state
from ctguard.export.readings import Reading
from ctguard.kernel.netns import Netns
from ctguard.runner import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES_DIR = os.path.join(ROOT, "src", "ctguard", "export", "rules")
RULES = os.path.join(RULES_DIR, "ctguard.yml")
RULE_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "export_rules", "ctguard_rules_test.yml")


def _promtool() -> str:
    p = shutil.which("promtool")
    if p is None:
        pytest.fail("promtool is not installed (Debian package `prometheus`): run `make setup`")
    return p


def test_promtool_check_rules() -> None:
    done = run([_promtool(), "check", "rules", RULES], timeout=60)
    assert done.ok, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_promtool_rule_unit_tests() -> None:
    done = run([_promtool(), "test", "rules", RULE_TESTS], timeout=120)
    assert done.ok, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _exported_names(guard_file: str) -> set[str]:
    bd = Breakdown(taken_at=1.0, seconds=0.5, count=10, by_state={"ESTABLISHED": 10}, by_proto={"tcp": 10},
                   by_role={"ceph-osd": 10}, by_daemon=[("osd.1", 10)], assured=10, expired_freed=1)
    ref = Refresher(lambda: bd, 60)
    ref.refresh_once()
    st = GuardState(netns="host", started=1.0, purges=1, purged_by_state={"TIME_WAIT": 5},
                    last_purge={"ts": 2.0, "deleted": 5})
    save_state(guard_file, st)
    col = ConntrackCollector(Netns(), refresher=ref, read=lambda: Reading(1.0, 10, 100, {"drop": 1}, "netlink"),
                             guard_state_file=guard_file)
    names: set[str] = set()
    for fam in build_registry(col).collect():
        for s in fam.samples:
            names.add(s.name)
    return names


def test_rules_use_only_exported_metrics_and_carry_a_runbook(tmp_path: pathlib.Path) -> None:
    with open(RULES, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    exported = _exported_names(str(tmp_path / "guard-host.json"))
    seen = 0
    for group in doc["groups"]:
        for rule in group["rules"]:
            seen += 1
            for name in re.findall(r"ctguard_[a-z_]+", rule["expr"]):
                assert name in exported, f"{rule['alert']} uses {name}, which the exporter does not export"
            assert "ctguard " in rule["annotations"]["runbook"], rule["alert"]
            assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert seen == 8
