"""The `guard` scenario of `lab reproduce`: in the default list (so `make demo` runs it), the real CLI with
--preempt, its events in the series, the side-effect counters it is judged on, and the headroom comparison."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from ctguard.lab.reproduce import (
    GUARD_EXPECT,
    Result,
    _compare_guard_to_headroom,
    _delta,
    _GuardProcess,
    check_scenarios,
    policy_drops,
    tcp_snmp,
)

SNMP = """Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 100
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 120 80 7 3 40 9000 9100 12 0 15 0
Udp: InDatagrams
Udp: 5
"""


def test_guard_is_a_default_scenario_with_its_expectation() -> None:
    sc = {s.name: s for s in check_scenarios([], 10.0, 10)}
    assert "guard" in sc and sc["guard"].guard and sc["guard"].expect == GUARD_EXPECT
    assert sc["guard"].all_at_once and sc["guard"].headroom == sc["all-at-once"].headroom == 0.5
    assert not sc["all-at-once"].guard


def test_the_guard_runs_as_the_real_cli_with_preempt(tmp_path: pathlib.Path) -> None:
    g = _GuardProcess("gd-h1", str(tmp_path))
    argv = g.argv()
    assert argv[1:3] == ["-c", "from ctguard.cli import main; main()"]
    assert argv[3:] == ["guard", "--preempt", "--apply", "--json", "--netns", "gd-h1", "--state-dir",
                        str(tmp_path / "guard-state")]


def test_guard_events_become_purge_and_guard_records(tmp_path: pathlib.Path) -> None:
    (tmp_path / "log").mkdir()
    g = _GuardProcess("gd-h1", str(tmp_path))
    lines = [{"ts": "2026-12-06T10:00:00.000000Z", "event": "start", "netns": "gd-h1", "preempt": True},
             {"ts": "2026-12-06T10:00:01.500000Z", "event": "purge", "netns": "gd-h1", "trigger": "preempt",
              "deleted": 190, "by_state": {"TIME_WAIT": 190}},
             {"ts": "2026-12-06T10:00:09.000000Z", "event": "stop", "netns": "gd-h1", "purges": 1}]
    with open(g.log, "w") as f:
        f.write("not json\n" + "".join(json.dumps(x) + "\n" for x in lines))

    class Sink:
        t0 = 1_796_551_200.0  # 2026-12-06T10:00:00Z
        errors: list[str] = []
        recs: list[dict[str, Any]] = []

        def add(self, kind: str, at: float | None = None, **fields: Any) -> None:
            self.recs.append({"t": round((at or 0) - self.t0, 3), "kind": kind, **fields})

    s = Sink()
    g.record(s)  # type: ignore[arg-type]
    assert [(r["kind"], r["t"]) for r in s.recs] == [("guard", 0.0), ("purge", 1.5), ("guard", 9.0)]
    assert s.recs[1]["trigger"] == "preempt" and s.recs[1]["deleted"] == 190 and "event" not in s.recs[1]
    assert s.recs[0]["event"] == "start"


def test_side_effect_counters() -> None:
    assert tcp_snmp(SNMP) == {"attempt_fails": 7, "estab_resets": 3, "in_errs": 0, "retrans_segs": 12,
                              "out_rsts": 15}
    assert tcp_snmp("Ip: a\nIp: 1\n") == {}
    doc = {"nftables": [{"metainfo": {}}, {"chain": {"name": "input"}},
                        {"rule": {"expr": [{"match": {}}, {"accept": None}]}},
                        {"rule": {"comment": "dropped by policy", "expr": [{"counter": {"packets": 42, "bytes": 9}}]}}]}
    assert policy_drops(json.dumps(doc)) == 42
    assert _delta({"a": 1, "b": 5}, {"a": 4, "b": 5, "c": 9}) == {"a": 3, "b": 0}


def test_the_guard_must_not_block_clients_longer_than_headroom() -> None:
    def res(name: str, met: bool | None, blocked: float | None) -> Result:
        r = Result(name, name, met=met)
        if blocked is not None:
            setattr(r, "client_blocked_s", blocked)  # noqa: B010 - a field the client summary adds
        return r

    rs = [res("headroom", True, 2.0), res("guard", True, 2.9)]
    _compare_guard_to_headroom(rs)
    assert rs[1].met is True
    rs = [res("headroom", True, 2.0), res("guard", True, 6.0)]
    _compare_guard_to_headroom(rs)
    assert rs[1].met is False
    rs = [res("guard", True, 6.0)]  # no headroom run: nothing to compare
    _compare_guard_to_headroom(rs)
    assert rs[0].met is True
    rs = [res("headroom", True, None), res("guard", False, None)]  # drops stay a failure
    _compare_guard_to_headroom(rs)
    assert rs[1].met is False
