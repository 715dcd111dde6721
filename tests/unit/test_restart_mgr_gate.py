"""`restart --gate-source mgr`: readings and answers of the ctguard mgr module, from recorded lab output."""

from __future__ import annotations

import os
from typing import Any

import pytest

from ctguard.ceph.client import CephClient
from ctguard.errors import CannotRead
from ctguard.restart.gates import CephMgrCommands, MgrSource
from ctguard.runner import Completed

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "mgr")


def _fix(name: str) -> str:
    with open(os.path.join(FIX, name)) as f:
        return f.read()


class Recorded:
    """`ceph …` answered from recorded output, keyed by the words after `ceph`."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float, **kw: Any) -> Completed:
        self.calls.append(list(argv))
        words = tuple(a for a in argv[3:] if a not in ("-f", "json"))  # after ceph --connect-timeout N
        rc, out, err = self.answers[words]
        return Completed(tuple(argv), rc, out, err)


def _source(answers: dict[tuple[str, ...], tuple[int, str, str]]) -> tuple[MgrSource, Recorded]:
    rec = Recorded(answers)
    client = CephClient(("ceph",), timeout=10, run=rec)
    return MgrSource(CephMgrCommands(client), clock=lambda: 1000.0), rec


def test_read_takes_the_module_status() -> None:
    src, rec = _source({("ctguard", "status"): (0, _fix("ctguard_status.json"), "")})
    r = src.read("mg-h1")
    assert (r.entries, r.limit, r.drops, r.daemon_entries) == (33, 262144, 840, {0: 15, 1: 16})
    assert r.ts == 1000.0 - 0.5 and r.source == "mgr:ceph ctguard status"
    assert rec.calls[0] == ["ceph", "--connect-timeout", "10", "ctguard", "status", "-f", "json"]
    with pytest.raises(CannotRead, match="no reading for host mg-h9"):
        src.read("mg-h9")


def test_live_asks_ok_to_restart_and_returns_its_reading() -> None:
    src, rec = _source({("ctguard", "ok-to-restart", "osd.0", "osd.1"): (0, _fix("ok_to_restart_yes.json"), "")})
    r = src.live("mg-h1", [0, 1])
    assert r.free == 262144 - r.entries and r.daemon_entries == {0: 15, 1: 16}
    assert src.answers["mg-h1"]["ok_to_restart"] is True


def test_a_no_for_lack_of_room_is_the_reading_the_engine_waits_on() -> None:
    # recorded in the lab with mg-h1's table filled to 40 free entries: rc 16 (EBUSY), JSON on stdout
    src, _ = _source({("ctguard", "ok-to-restart", "osd.0", "osd.1"):
                      (16, _fix("ok_to_restart_no.json"), _fix("ok_to_restart_no.stderr"))})
    r = src.live("mg-h1", [0, 1])
    assert (r.free, r.entries) == (40, 262104)
    assert src.answers["mg-h1"] == {"ok_to_restart": False, "rc": 16, "osds": ["osd.0", "osd.1"], "free": 40,
                                    "need": 88, "reason": "host mg-h1: 40 free conntrack entries < 88 needed "
                                    "(predicted burst 62 + reserve 26)"}


def test_no_fresh_reading_stops_safely() -> None:
    down = ('{"ok_to_restart": false, "osds": [2], "hosts": [{"host": "mg-h2", "osds": [2], "ok": false, '
            '"free": null, "need": null, "reserve": null, "predicted_burst": {}, "age": null, "reason": '
            '"host mg-h2: exporter unreachable: http://198.18.0.12:9477/metrics: connection refused"}]}')
    status = _fix("ctguard_status.json").replace('"host": "mg-h2", "url": "http://198.18.0.12:9477/metrics", '
                                                 '"osds": ["osd.2", "osd.3"], "up": true, "error": null',
                                                 '"host": "mg-h2", "url": "http://198.18.0.12:9477/metrics", '
                                                 '"osds": ["osd.2", "osd.3"], "up": false, "error": "timed out"')
    src, _ = _source({("ctguard", "ok-to-restart", "osd.2"): (16, down, "Error EBUSY: unsafe"),
                      ("ctguard", "status"): (0, status, "")})
    with pytest.raises(CannotRead, match="exporter unreachable"):
        src.live("mg-h2", [2])
    with pytest.raises(CannotRead, match="host mg-h2: timed out"):
        src.read("mg-h2")


def test_module_not_enabled() -> None:
    src, _ = _source({("ctguard", "status"): (22, "", "Error EINVAL: invalid command")})
    with pytest.raises(Exception, match="invalid command"):
        src.read("mg-h1")
    src, _ = _source({("ctguard", "status"): (0, "HOST STATE\n", "")})
    with pytest.raises(CannotRead, match="mgr module enable ctguard"):
        src.read("mg-h1")
    assert src.purge("mg-h1") is None


# -- the engine honours a source that answers for itself (the mgr module's ok-to-restart) ------------------------
def test_engine_waits_for_and_shrinks_to_the_sources_yes(tmp_path: Any) -> None:
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from test_restart_engine import make, of
    from test_restart_fakes import World

    from ctguard.errors import Exit

    w = World()
    eng, ev, _ = make(w, tmp_path)
    asked: list[list[int]] = []

    def confirm(host: str, osds: Any) -> tuple[bool, str]:
        asked.append(list(osds))
        if len(asked) <= 3:  # the first round (3, 2, 1 OSDs): no
            return False, "ceph ctguard ok-to-restart: host h1: 3 packets dropped"
        return len(osds) == 1, "ceph ctguard ok-to-restart: room for one only"

    eng.source.confirm = confirm  # type: ignore[attr-defined]
    res = eng.run()
    assert res.exit_code == Exit.OK, res.reason
    assert asked[:4] == [[0, 1, 2], [0, 1], [0], [0, 1, 2]]
    assert [b["osds"] for b in of(ev, "batch")] == [[0], [1], [2]]  # one at a time, as the source allows
    waits = [f for f in of(ev, "wait") if f["gate"] == "headroom"]
    assert waits and waits[0]["reason"] == "ceph ctguard ok-to-restart: host h1: 3 packets dropped"
    gates = [f for f in of(ev, "gate") if f["gate"] == "headroom"]
    assert all(g["source_confirmed"] for g in gates)


def test_confirm_answers_from_recorded_ok_to_restart() -> None:
    src, _ = _source({("ctguard", "ok-to-restart", "osd.0", "osd.1"): (0, _fix("ok_to_restart_yes.json"), ""),
                      ("ctguard", "ok-to-restart", "osd.0"):
                      (16, _fix("ok_to_restart_no.json"), _fix("ok_to_restart_no.stderr"))})
    assert src.confirm("mg-h1", [0, 1]) == (True, "")
    ok, why = src.confirm("mg-h1", [0])
    assert not ok and why == ("ceph ctguard ok-to-restart: host mg-h1: 40 free conntrack entries < 88 needed "
                              "(predicted burst 62 + reserve 26)")
    down = ('{"ok_to_restart": false, "osds": [2], "hosts": [{"host": "mg-h2", "osds": [2], "ok": false, '
            '"free": null, "need": null, "reason": "host mg-h2: exporter unreachable: timed out"}]}')
    src, _ = _source({("ctguard", "ok-to-restart", "osd.2"): (16, down, "Error EBUSY: unsafe")})
    with pytest.raises(CannotRead, match="exporter unreachable"):
        src.confirm("mg-h2", [2])


# -- end to end through the CLI: a stand-in `ceph` that answers `ctguard …` with the recorded module output ------
MGR_FAKE = r'''
import os, sys
fix, count = os.environ["CTGUARD_MGR_FIX"], os.environ["CTGUARD_MGR_COUNT"]
words = [a for a in sys.argv[2:] if a not in ("-f", "json")]
if "--connect-timeout" in words:
    i = words.index("--connect-timeout"); del words[i:i + 2]
if words[:2] == ["ctguard", "status"]:
    print(open(os.path.join(fix, "ctguard_status.json")).read()); sys.exit(0)
if words[:2] == ["ctguard", "ok-to-restart"]:
    n = int(open(count).read()) if os.path.exists(count) else 0
    open(count, "w").write(str(n + 1))
    if n < 2:  # the first two answers (the batch of two, then one): the table is full
        print(open(os.path.join(fix, "ok_to_restart_no.json")).read())
        sys.stderr.write(open(os.path.join(fix, "ok_to_restart_no.stderr")).read()); sys.exit(16)
    print(open(os.path.join(fix, "ok_to_restart_yes.json")).read()); sys.exit(0)
'''


def test_cli_restart_gates_on_the_mgr_module(tmp_path: Any) -> None:
    import json
    import subprocess
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from test_restart_cli import FAKE_CEPH, ctguard

    script = tmp_path / "fake_ceph.py"
    script.write_text(MGR_FAKE + FAKE_CEPH)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"epoch": 10, "flags": ["sortbitwise"], "restarts": [],
                                 "osds": {"0": {"up_from": 5, "host": "mg-h1"},
                                          "1": {"up_from": 6, "host": "mg-h1"}}}))
    ceph = [sys.executable, str(script), str(state)]
    os.environ["CTGUARD_MGR_FIX"] = FIX
    os.environ["CTGUARD_MGR_COUNT"] = str(tmp_path / "count")
    try:
        p: subprocess.CompletedProcess[str] = ctguard(
            "--host", "mg-h1", "--json", "--ceph-cmd", " ".join(ceph), "--restart-cmd",
            " ".join(ceph) + " restart {id}", "--gate-source", "mgr", "--settle", "0.2",
            "--state-dir", str(tmp_path / "st"))
    finally:
        del os.environ["CTGUARD_MGR_FIX"], os.environ["CTGUARD_MGR_COUNT"]
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    waits = [e for e in events if e["event"] == "wait" and e["gate"] == "headroom"]
    assert waits[0]["reason"] == ("ceph ctguard ok-to-restart: host mg-h1: 40 free conntrack entries < 88 needed "
                                  "(predicted burst 62 + reserve 26)")
    gates = [e for e in events if e["event"] == "gate" and e["gate"] == "headroom"]
    assert gates[0]["source_confirmed"] is True and gates[0]["reading"]["source"] == "mgr:ceph ctguard status"
    assert sorted(json.loads(state.read_text())["restarts"]) == [0, 1]
