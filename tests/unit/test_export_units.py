"""The systemd units and the Grafana dashboard that ship with the exporter are well-formed and only use
flags and metrics that exist."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex

import click

from ctguard.cli import cli

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "src", "ctguard", "export")


def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    with open(os.path.join(PKG, "systemd", name), encoding="utf-8") as f:
        cp.read_file(f)
    return cp


def _parse(argv: list[str]) -> click.Context:
    assert argv[0].endswith("/ctguard")
    cmd = cli.get_command(click.Context(cli), argv[1])
    assert cmd is not None
    return cmd.make_context(argv[1], argv[2:])


def test_exporter_unit_runs_the_exporter_with_valid_flags() -> None:
    u = _unit("ctguard-exporter.service")
    ctx = _parse(shlex.split(u["Service"]["ExecStart"]))
    assert ctx.params["listen"] == "127.0.0.1:9477" and ctx.params["as_json"] is True
    assert "CAP_NET_ADMIN" in u["Service"]["CapabilityBoundingSet"]
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_guard_unit_is_explicitly_applied_and_never_purges_established() -> None:
    u = _unit("ctguard-guard.service")
    ctx = _parse(shlex.split(u["Service"]["ExecStart"]))
    assert ctx.params["apply_"] is True and ctx.params["poll_hz"] >= 10
    assert ctx.params["preempt"] is True and ctx.params["reserve"] is None  # the predicted reserve
    assert ctx.params["preempt_states"].upper().split(",") == ["TIME_WAIT", "CLOSE"]
    assert "CAP_SYS_PTRACE" in u["Service"]["CapabilityBoundingSet"]  # the breakdown attributes daemons
    assert "ESTABLISHED" not in ctx.params["states"].upper().split(",")


def test_dashboard_is_grafana_json_over_exported_metrics() -> None:
    with open(os.path.join(PKG, "dashboards", "ctguard.json"), encoding="utf-8") as f:
        dash = json.load(f)
    assert dash["title"] and dash["uid"] and isinstance(dash["panels"], list) and len(dash["panels"]) >= 6
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance"} <= names
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    used = {m for e in exprs for m in re.findall(r"ctguard_[a-z_]+", e)}
    known = {
        "ctguard_conntrack_entries", "ctguard_conntrack_limit", "ctguard_conntrack_free_entries",
        "ctguard_conntrack_drop_total", "ctguard_conntrack_early_drop_total", "ctguard_conntrack_insert_failed_total",
        "ctguard_conntrack_growth_entries_per_second", "ctguard_conntrack_projected_full_seconds",
        "ctguard_conntrack_state_entries", "ctguard_conntrack_role_entries", "ctguard_conntrack_daemon_entries",
        "ctguard_conntrack_protocol_entries", "ctguard_restart_headroom_entries", "ctguard_restart_burst_entries",
        "ctguard_breakdown_expired_freed_entries_total", "ctguard_breakdown_age_seconds",
        "ctguard_guard_purged_entries_total", "ctguard_guard_purges_total",
    }
    assert used <= known, used - known
    for must in ("ctguard_conntrack_drop_total", "ctguard_restart_headroom_entries", "ctguard_conntrack_state_entries",
                 "ctguard_conntrack_daemon_entries"):
        assert must in used
    for e in exprs:
        assert "$instance" in e or "instance=~" in e, e  # every panel follows the host picker
