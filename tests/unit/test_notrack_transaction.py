"""apply / confirm / rollback / recover with recorded tool output, a fake clock and a fake watchdog spawn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from notrack_fakes import FakeRunner, _read

from ctguard.errors import BadInput, CtguardError, Exit
from ctguard.firewall import inspect as insp_mod
from ctguard.firewall import journal, transaction
from ctguard.firewall.cephcfg import parse_networks, read_ceph_values
from ctguard.firewall.spec import build_spec
from ctguard.kernel.netns import Netns

NS = Netns(name="h1")


@pytest.fixture(autouse=True)
def _no_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The namespace "h1" does not exist: no firewalld scan, no legacy xtables probe."""
    monkeypatch.setattr(insp_mod, "_firewalld_in", lambda ns: False)
    monkeypatch.setattr(insp_mod, "_legacy_in_use", lambda ns, v: False)
OURS = 'table inet ctguard {\n\tcomment "managed by ctguard notrack"\n}\n'


def _ruleset_with_insert() -> str:
    doc = json.loads(_read("nft-policy-drop.json"))
    doc["nftables"].append({"table": {"family": "inet", "name": "ctguard", "handle": 9}})
    doc["nftables"].append({"rule": {"family": "inet", "table": "fw", "chain": "input", "handle": 7,
                                     "comment": "ctguard notrack", "expr": []}})
    return json.dumps(doc)


def _runner(**over: object) -> FakeRunner:
    answers: dict[tuple[str, ...], object] = {
        ("nft", "-j", "list", "ruleset"): _read("nft-policy-drop.json"),
        ("nft", "-c", "-f", "-"): "",
        ("nft", "list", "ruleset"): "table inet fw {}\n",
        ("nft", "-s", "list", "ruleset"): "table inet fw {}\n",
        ("nft", "-e", "-a", "-f", "-"): (
            'insert rule inet fw input ct state untracked accept comment "ctguard notrack" # handle 7\n'),
        ("nft", "-f", "-"): "",
    }
    answers.update({tuple(k.split("|")): v for k, v in over.items()})
    return FakeRunner(answers)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_validate_reports_nft_error_and_loads_nothing() -> None:
    r = _runner(**{"nft|-c|-f|-": (1, "", "/dev/stdin:3:1-2: Error: Could not process rule: File exists\n")})
    plan = transaction.make_plan(build_spec(["10.0.0.0/8"]), "nft")
    with pytest.raises(BadInput, match="nft -c rejected the rules, nothing loaded: .*File exists"):
        transaction.validate(NS, plan, r)
    assert all(c[0][:2] == ("nft", "-c") for c in r.calls)


def test_apply_pending_then_confirm(tmp_path: Path) -> None:
    r, clock, spawned = _runner(), Clock(), []
    out = transaction.apply(NS, build_spec(["10.0.0.0/8"]), timeout=60, state_dir=str(tmp_path),
                            inserts=[("inet", "fw", "input")], runner=r, clock=clock,
                            spawn=lambda p, t: spawned.append((p, t)) or 4242)
    assert out.status == "pending" and out.deadline == 1060.0
    assert out.inserted == [{"family": "inet", "table": "fw", "chain": "input", "handle": 7}]
    jpath = journal.path(str(tmp_path), NS)
    doc = journal.read(jpath)
    assert doc is not None and doc["status"] == "pending" and doc["watchdog_pid"] == 4242
    assert spawned == [(jpath, out.token)]
    assert doc["before"]["nft"] == "table inet fw {}\n"
    loaded = [c[1] for c in r.calls if c[0] == ("nft", "-e", "-a", "-f", "-")]
    assert len(loaded) == 1 and loaded[0] is not None and "table inet ctguard {" in loaded[0]
    # a second apply while one waits for confirm is refused
    with pytest.raises(transaction.Refused, match="still waiting for confirm"):
        transaction.apply(NS, build_spec(["10.0.0.0/8"]), state_dir=str(tmp_path), runner=r, clock=clock,
                          spawn=lambda p, t: 1)
    clock.t = 1059.0
    assert transaction.confirm(NS, str(tmp_path), r, clock).status == "confirmed"
    assert transaction.rollback(jpath, str(out.token), r, clock) is None  # the watchdog then does nothing


def test_confirm_too_late_rolls_back_exactly_what_was_added(tmp_path: Path) -> None:
    r, clock = _runner(), Clock()
    out = transaction.apply(NS, build_spec(["10.0.0.0/8"]), timeout=5, state_dir=str(tmp_path),
                            inserts=[("inet", "fw", "input")], runner=r, clock=clock, spawn=lambda p, t: 1)
    r.answers[("nft", "-j", "list", "ruleset")] = _ruleset_with_insert()  # type: ignore[index]
    r.answers[("nft", "list", "table", "inet", "ctguard")] = OURS  # type: ignore[index]
    clock.t = 1005.0
    with pytest.raises(CtguardError, match="too late") as e:
        transaction.confirm(NS, str(tmp_path), r, clock)
    assert e.value.exit_code == Exit.CRIT
    undo = [c[1] for c in r.calls if c[0] == ("nft", "-f", "-")]
    assert undo == ["delete rule inet fw input handle 7\ndelete table inet ctguard\n"]
    doc = journal.read(journal.path(str(tmp_path), NS))
    assert doc is not None and doc["status"] == "rolled-back" and doc["token"] == out.token
    assert doc["result"]["identical"] is True


def test_refusal_changes_nothing(tmp_path: Path) -> None:
    doc = json.loads(_read("nft-policy-drop.json"))
    doc["nftables"].append({"table": {"family": "inet", "name": "ctguard", "handle": 9}})
    r = _runner(**{"nft|-j|list|ruleset": json.dumps(doc), "nft|list|table|inet|ctguard": "table inet ctguard {\n}\n"})
    with pytest.raises(transaction.Refused, match="did not create"):
        transaction.apply(NS, build_spec(["10.0.0.0/8"]), state_dir=str(tmp_path), runner=r, spawn=lambda p, t: 1)
    assert not any(c[0][:2] in (("nft", "-f"), ("nft", "-e")) for c in r.calls)
    assert journal.read(journal.path(str(tmp_path), NS)) is None


def test_recover_after_a_dead_watchdog(tmp_path: Path) -> None:
    r, clock = _runner(), Clock()
    transaction.apply(NS, build_spec(["10.0.0.0/8"]), timeout=5, state_dir=str(tmp_path), runner=r,
                      clock=clock, spawn=lambda p, t: 999999999)
    r.answers[("nft", "list", "table", "inet", "ctguard")] = OURS  # type: ignore[index]
    clock.t = 1004.0
    assert transaction.recover(NS, str(tmp_path), r, clock) is None      # not yet due
    clock.t = 1010.0
    out = transaction.recover(NS, str(tmp_path), r, clock)
    assert out is not None and out.status == "rolled-back" and "watchdog gone" in out.notes[0]


def test_bad_timeout_and_backend(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="timeout"):
        transaction.apply(NS, build_spec(["10.0.0.0/8"]), timeout=0, state_dir=str(tmp_path), runner=_runner())
    with pytest.raises(BadInput, match="unknown backend"):
        transaction.make_plan(build_spec(["10.0.0.0/8"]), "pf")
    with pytest.raises(BadInput, match="nft backend"):
        transaction.make_plan(build_spec(["10.0.0.0/8"]), "iptables-nft", [("inet", "fw", "input")])
    with pytest.raises(BadInput, match="FAMILY TABLE CHAIN"):
        transaction.parse_chain_ref("fw input")
    assert transaction.parse_chain_ref("inet/fw/input") == ("inet", "fw", "input")


def test_ceph_values() -> None:
    base = ("ceph", "--connect-timeout", "5", "config", "get")
    r = FakeRunner({base + ("osd", "ms_bind_port_min"): "6800\n", base + ("osd", "ms_bind_port_max"): "7300\n",
                    base + ("mon", "public_network"): "10.1.0.0/16, 10.3.0.0/24\n",
                    base + ("osd", "cluster_network"): "\n"})
    v = read_ceph_values(r)
    assert (v.ms_bind_port_min, v.ms_bind_port_max, v.networks, v.source) == (6800, 7300, ("10.1.0.0/16", "10.3.0.0/24"), "cluster")
    v = read_ceph_values(FakeRunner({}))
    assert v.source == "defaults" and v.error is not None and "unexpected command" in v.error
    assert parse_networks("") == ()
