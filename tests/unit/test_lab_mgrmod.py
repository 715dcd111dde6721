"""The lab's side of the mgr module: its checks read from a recorded `ceph health detail -f json`, the
exporter command line, and `lab status` rendering them."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from click.testing import CliRunner

from ctguard.cli import cli
from ctguard.lab import config as cfg
from ctguard.lab import mgrmod
from ctguard.lab.cluster import Lab
from ctguard.lab.state import HostState, LabState

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "mgr")


def _lab(tmp_path: Any) -> Lab:
    st = LabState(prefix="ut", dir=str(tmp_path), conf=str(tmp_path / "ceph.conf"), phase="up", mon_ns="ut-mon",
                  hosts=[HostState("ut-h1", cfg.host_ip(1), cfg.fill_src(1), [0, 1])])
    return Lab(st)


def test_checks_from_recorded_health_detail(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(os.path.join(FIX, "health_detail_nearfull.json")) as f:
        doc = json.load(f)
    doc["checks"]["OSDMAP_FLAGS"] = {"severity": "HEALTH_WARN", "summary": {"message": "noout flag(s) set"},
                                     "detail": []}
    lab = _lab(tmp_path)
    monkeypatch.setattr(Lab, "ceph_json", lambda self, args, timeout=30: doc)
    assert mgrmod.checks(lab) == {"CTGUARD_CONNTRACK_NEARFULL": {
        "severity": "HEALTH_WARN", "summary": "1 host(s) with a nearly full conntrack table",
        "detail": ["host mg-h1: conntrack table 99.9% full (262,104/262,144 entries, 40 free; nearfull_ratio 0.9)"]}}


def test_exporter_listens_on_the_hosts_lab_address(tmp_path: Any) -> None:
    argv = mgrmod.exporter_argv(_lab(tmp_path), "ut-h1")
    assert argv[1:4] == ["-m", "ctguard", "exporter"]
    assert argv[argv.index("--listen") + 1] == f"198.18.0.11:{cfg.EXPORTER_PORT}"


def test_host_firewall_opens_the_exporter_port_to_the_mon_only() -> None:
    fw = cfg.host_firewall(cfg.LabSpec(prefix="ut"))
    assert f"tcp dport {cfg.EXPORTER_PORT} ip saddr {cfg.MON_IP} accept" in fw
    assert fw.index(f"dport {cfg.EXPORTER_PORT}") < fw.index('counter comment "dropped by policy"')


def test_lab_status_shows_the_module_checks(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"prefix": "ut", "health": "HEALTH_WARN", "num_pgs": 33, "pg_states": {"active+clean": 33},
           "hosts": [], "errors": [], "exporters": [{"host": "ut-h1", "pid": None}],
           "mgr_checks": {"CTGUARD_EXPORTER_DOWN": {"severity": "HEALTH_WARN", "summary": "1 host(s) …",
                                                    "detail": ["host ut-h1: ctguard exporter unreachable since "
                                                               "10:36:09 UTC: http://198.18.0.11:9477/metrics: "
                                                               "connection refused"]}}}
    monkeypatch.setattr(Lab, "load", classmethod(lambda cls, prefix="cl", base_dir=None: _lab(tmp_path)))
    monkeypatch.setattr("ctguard.lab.status.lab_status", lambda lab: doc)
    res = CliRunner().invoke(cli, ["lab", "status", "--prefix", "ut"])
    assert res.exit_code == 1
    assert "ctguard mgr module: CTGUARD_EXPORTER_DOWN; exporter not running on ut-h1" in res.output
    assert "CTGUARD_EXPORTER_DOWN: host ut-h1: ctguard exporter unreachable since 10:36:09 UTC" in res.output
