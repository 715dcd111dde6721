"""Stateless accepts: a chain that accepts Ceph's ports from the Ceph networks without a ct-state match takes
the packets ctguard untracks, and only a real gap is reported. Rulesets recorded from nft 1.0.6 /
iptables-nft 1.8.9 in a namespace (tests/fixtures/notrack/nft-stateless-*.json, ipt-*.txt)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from notrack_fakes import _items, _read

from ctguard.firewall import coverage as cov
from ctguard.firewall import inspect as insp
from ctguard.firewall.spec import PortRange, build_spec

SPEC = build_spec(["198.18.5.0/24"], osd_range=(6800, 7568))


def _judge(name: str) -> insp.ChainVerdict:
    i = insp.Inspection()
    insp.analyse_nft(_items(name), i, {4}, SPEC)
    (c,) = i.chains
    return c


def test_stateless_accept_of_both_directions_needs_nothing() -> None:
    c = _judge("nft-stateless-full.json")
    assert c.verdict == "accepts-untracked", c.detail
    assert "rule 3 accepts to our daemons" in c.detail and "rule 4 accepts replies from peer daemons" in c.detail


def test_named_sets_are_resolved() -> None:
    c = _judge("nft-stateless-named-sets.json")
    assert c.verdict == "accepts-untracked", c.detail


def test_dport_only_accept_drops_the_replies_to_our_own_connections() -> None:
    """The chain of the report: inbound Ceph traffic passes, this host's outbound connections do not (measured,
    see coverage.py's docstring and the integration test)."""
    c = _judge("nft-stateless-dport-only.json")
    assert c.verdict == "drops-untracked"
    assert c.detail.startswith("policy drop")
    assert "replies from peer daemons (tcp sport 3300, 6789, 6800-7568; peers 198.18.5.0/24)" in c.detail
    assert "to our daemons (" not in c.detail.split("dropped there:")[1].split(")")[0]
    assert "rule 2 accepts to our daemons" in c.detail
    assert "own connections to other OSDs and the monitors fail" in c.detail


def test_ct_state_only_chain_drops_everything_untracked() -> None:
    c = _judge("nft-stateless-ct-only.json")
    assert c.verdict == "drops-untracked"
    assert "to our daemons" in c.detail and "replies from peer daemons" in c.detail
    assert c.fix == "nft insert rule inet fw input ct state untracked accept"


def test_partial_port_cover_names_the_ports_left() -> None:
    c = _judge("nft-stateless-partial.json")
    assert c.verdict == "drops-untracked"
    assert "to our daemons (tcp dport 7001-7568; peers 198.18.5.0/24)" in c.detail
    assert "replies from peer daemons" not in c.detail.split("dropped there:")[1].split("(tcp")[0]


def test_interface_condition_is_for_review_not_guessed() -> None:
    c = _judge("nft-stateless-iface.json")
    assert c.verdict == "review"
    assert 'iifname eth1' in c.detail and "not judged" in c.detail


def test_without_a_spec_only_the_untracked_accept_counts() -> None:
    i = insp.Inspection()
    insp.analyse_nft(_items("nft-stateless-full.json"), i, {4})
    assert i.chains[0].verdict == "drops-untracked"


@pytest.mark.parametrize(("name", "verdict", "needle"), [
    ("ipt-stateless.txt", "accepts-untracked", "rule 4 accepts replies from peer daemons"),
    ("ipt-dport-only.txt", "drops-untracked", "replies from peer daemons (tcp sport 3300, 6789, 6800-7568"),
    ("ipt-partial.txt", "drops-untracked", "replies from peer daemons (tcp sport 3300, 6789, 7001-7568"),
])
def test_iptables_stateless_rules(name: str, verdict: str, needle: str) -> None:
    inp, out = insp.judge_iptables("iptables-nft (IPv4)", _read(name), False, SPEC)
    assert inp.verdict == verdict, inp.detail
    assert needle in inp.detail
    assert out.verdict == "passes"


def test_other_networks_and_ports_do_not_count() -> None:
    two = build_spec(["198.18.5.0/24", "198.18.6.0/24"], osd_range=(6800, 7568))
    inp, _ = insp.judge_iptables("iptables-nft (IPv4)", _read("ipt-stateless.txt"), False, two)
    assert inp.verdict == "drops-untracked"
    dropped = inp.detail.split("dropped there:")[1].split("; rule")[0]
    assert "peers 198.18.6.0/24" in dropped and "peers 198.18.5.0/24" not in dropped


def test_conditional_drop_before_the_accept_is_named() -> None:
    save = _read("ipt-stateless.txt").replace(
        "-A INPUT -i lo -j ACCEPT", "-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 6900:6999 -j DROP")
    inp, _ = insp.judge_iptables("iptables-nft (IPv4)", save, False, SPEC)
    assert inp.verdict == "drops-untracked" and inp.detail.startswith("rule 3 drops to our daemons (tcp dport 6800-7568")
    save = _read("ipt-stateless.txt").replace(
        "-A INPUT -i lo -j ACCEPT", "-A INPUT -i lo -j ACCEPT\n-A INPUT -s 198.19.0.0/16 -j DROP")
    inp, _ = insp.judge_iptables("iptables-nft (IPv4)", save, False, SPEC)
    assert inp.verdict == "accepts-untracked", "a drop of other networks takes nothing of ours"


def test_output_hook_classes() -> None:
    names = {(c.flow, c.port_field) for c in cov.cells(SPEC, "output")}
    assert names == {("replies of our daemons", "sport"), ("to peer daemons", "dport")}
    m = cov.ipt_match(["-d", "198.18.5.0/24", "-p", "tcp", "-m", "multiport", "--dports", "3300,6789,6800:7568"])
    left, took = cov.accept(cov.cells(SPEC, "output"), m, "output")
    assert {c.flow for c in left} == {"replies of our daemons"} and took


ports = st.lists(st.tuples(st.integers(1, 65535), st.integers(0, 2000)), min_size=1, max_size=5).map(
    lambda xs: tuple(PortRange(a, min(65535, a + n)) for a, n in xs))


@given(ports, ports)
def test_accept_subtracts_exactly_the_ports_it_names(have: tuple[PortRange, ...], rule: tuple[PortRange, ...]) -> None:
    net = ipaddress.ip_network("198.18.5.0/24")
    cells = [cov.Cell("to our daemons", "dport", net, net, r) for r in have]
    left, _ = cov.accept(cells, cov.Match(dport=rule), "input")
    before = {p for r in have for p in range(r.lo, r.hi + 1)}
    cut = {p for r in rule for p in range(r.lo, r.hi + 1)}
    assert {p for c in left for p in range(c.ports.lo, c.ports.hi + 1)} == before - cut
