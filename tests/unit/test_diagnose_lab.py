"""`ctguard diagnose` on the lab's recorded reproductions (data/lab/<run>/, docs/lab.md): for every scenario,
the cause it names agrees with what the lab measured (drops or none), and the drops it counts are the lab's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctguard.diagnose import correlate, report, scan
from ctguard.diagnose.clock import Clock
from ctguard.diagnose.lines import SourceCtx

LAB = Path(__file__).parent.parent.parent / "data" / "lab"
RUNS = sorted(LAB.glob("*/run.json"))
SCENARIOS = [(run, sc) for run in RUNS for sc in json.loads(run.read_text()).get("scenarios", [])
             if sc.get("available", True) and (run.parent / f"{sc['name']}.jsonl").exists()]


def diagnose(*paths: Path) -> tuple[list[correlate.Incident], dict[str, object]]:
    clock = Clock()

    def ctx(path: str, host: str, daemon: str) -> SourceCtx:
        return SourceCtx(source=path, host=host, daemon=daemon, clock=clock)

    res = scan.scan([scan.InputSpec(str(p)) for p in paths if p.exists()], ctx)
    incs = correlate.correlate(res)
    return incs, report.document(res, incs)


@pytest.mark.skipif(not SCENARIOS, reason="no lab recording under data/lab yet")
@pytest.mark.parametrize(("run", "sc"), SCENARIOS, ids=[f"{r.parent.name}-{s['name']}" for r, s in SCENARIOS])
def test_lab_scenario_cause(run: Path, sc: dict[str, object]) -> None:
    name = str(sc["name"])
    incs, doc = diagnose(run.parent / f"{name}.jsonl", run.parent / f"{name}.log")
    conntrack = [i for i in incs if i.conntrack]
    drops = sc.get("drops")
    assert isinstance(drops, int)
    if drops > 0:
        assert conntrack, (name, [i.cause for i in incs])
        assert sum(i.drops_counted for i in conntrack) == drops
        assert doc["verdict"] == "CRIT"
        # a restart of the host's OSDs started every overflow the lab provoked
        assert conntrack[0].cause_kind == "conntrack-overflow-after-restart", conntrack[0].cause
        assert conntrack[0].restarted and all(c.evidence for c in conntrack[0].claims[:2])
    else:
        assert not conntrack, (name, [i.cause for i in conntrack])
        assert doc["verdict"] in ("OK", "WARN")


def _span(jsonl: Path) -> tuple[float, float]:
    """The wall-clock span of a scenario's recording (its meta t0 to its last sample)."""
    t0 = last = 0.0
    for line in jsonl.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "meta":
            t0 = float(rec["t0"])
        last = max(last, float(rec.get("t", 0.0)))
    return t0, t0 + last


@pytest.mark.skipif(not RUNS, reason="no lab recording under data/lab yet")
@pytest.mark.parametrize("run", RUNS, ids=[r.parent.name for r in RUNS])
def test_a_whole_run_directory(run: Path) -> None:
    """The directory as an operator would pass it (the PNG plots are passed over): one incident per scenario
    that dropped, each with its own drops (the scenario's kernel drop counter, run.json) and its own mark-downs
    (run.json's osds_marked_down; OSDs the lab stopped cleanly marked themselves down: a restart, not a
    mark-down), and no conntrack incident elsewhere."""
    incs, doc = diagnose(run.parent)
    binary = [i for i in doc["inputs"] if i["error"] == scan.BINARY]  # type: ignore[index, union-attr]
    assert {Path(i["source"]).suffix for i in binary} <= {".png"}  # type: ignore[index]
    assert doc["lines"]["skipped"] == 0  # type: ignore[index]
    conntrack = [i for i in incs if i.conntrack]
    dropped = [sc for sc in json.loads(run.read_text())["scenarios"]
               if sc.get("available", True) and int(sc.get("drops") or 0) > 0]
    assert len(conntrack) == len(dropped), ([sc["name"] for sc in dropped], [i.cause for i in conntrack])
    for sc in dropped:
        a, b = _span(run.parent / f"{sc['name']}.jsonl")
        mine = [i for i in conntrack if a <= min(k.first for k in i.kernel) and max(k.last for k in i.kernel) <= b]
        assert len(mine) == 1, (sc["name"], [(i.start, i.end) for i in conntrack])
        inc = mine[0]
        assert 0 < inc.drops <= int(sc["drops"]) and inc.drops_counted == int(sc["drops"]), (sc["name"], inc.drops)
        downs = inc.marked_down_by_mon
        assert len(downs) == int(sc.get("osds_marked_down") or 0), (sc["name"], [(p.daemon, p.how) for p in downs])
        assert inc.lab_scenarios == [sc["name"]]
        assert ("ended when the mon marked" in inc.cause) == bool(downs), inc.cause
        assert inc.cause_kind == "conntrack-overflow-after-restart", inc.cause
        assert inc.restarted and all(a - 120 <= p.ts <= b for p in inc.restarted), (sc["name"], inc.restarted)
