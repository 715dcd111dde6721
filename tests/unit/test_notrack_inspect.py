"""Judging a host firewall from recorded `nft -j list ruleset` / `iptables-save` output (nft 1.0.6,
iptables 1.8.9, captured in a namespace)."""

from __future__ import annotations

import json

from notrack_fakes import FakeRunner, _items, _read

from ctguard.firewall import inspect as insp
from ctguard.kernel.netns import Netns


def test_policy_drop_chain_needs_the_operator_line() -> None:
    i = insp.Inspection()
    assert insp.analyse_nft(_items("nft-policy-drop.json"), i) is False
    by = {c.where: c for c in i.chains}
    assert set(by) == {"nft inet fw input", "nft inet fw output"}   # nat chain and raw chain are not judged
    assert by["nft inet fw input"].verdict == "drops-untracked"
    assert by["nft inet fw input"].fix == "nft insert rule inet fw input ct state untracked accept"
    assert by["nft inet fw output"].verdict == "passes"
    assert i.other_notrack == ["nft inet other_raw pre"]
    assert i.managers == ["nftables"]


def test_chain_that_accepts_untracked_is_ok() -> None:
    i = insp.Inspection()
    insp.analyse_nft(_items("nft-accepts-untracked.json"), i)
    by = {c.where: c for c in i.chains}
    assert by["nft inet fw input"].verdict == "accepts-untracked"
    assert i.needs_operator == []


def test_conditional_accept_and_jumps_are_for_review() -> None:
    i = insp.Inspection()
    insp.analyse_nft(_items("nft-review.json"), i)
    (c,) = i.chains
    assert c.verdict == "review"
    assert "jumps to another chain" in c.detail and "further conditions" in c.detail
    assert "rule 4 drops everything" in c.detail


def test_iptables_nft_tables_are_recognised() -> None:
    i = insp.Inspection()
    assert insp.analyse_nft(_items("nft-iptables-nft.json"), i) is True
    assert i.managers == ["iptables-nft"] and i.chains == []


def test_judge_iptables_save() -> None:
    (inp, out) = insp.judge_iptables("iptables-nft (IPv4)", _read("iptables-nft-save-policy-drop.txt"), False)
    assert inp.verdict == "drops-untracked"
    assert inp.fix == "iptables-nft -I INPUT 1 -m conntrack --ctstate UNTRACKED -j ACCEPT"
    assert out.verdict == "passes"
    (inp, _) = insp.judge_iptables("iptables-nft (IPv4)", _read("iptables-nft-save-accepts.txt"), False)
    assert inp.verdict == "accepts-untracked"
    (inp, _) = insp.judge_iptables("iptables-nft (IPv6)", _read("iptables-nft-save-policy-drop.txt"), True)
    assert inp.verdict == "accepts-untracked" and "ctguard's chain" in inp.detail
    (inp, _) = insp.judge_iptables("iptables-legacy (IPv6)", _read("iptables-nft-save-policy-drop.txt"), False)
    assert inp.fix is not None and inp.fix.startswith("ip6tables-legacy -I INPUT 1")


def _inspect(runner: FakeRunner, firewalld: bool = False, legacy: bool = False) -> insp.Inspection:
    return insp.inspect(Netns(name="x"), "nft", runner, firewalld=lambda ns: firewalld,
                        legacy_in_use=lambda ns, v: legacy)


def test_foreign_ctguard_table_and_firewalld_are_refused() -> None:
    items = json.loads(_read("nft-policy-drop.json"))
    items["nftables"].append({"table": {"family": "inet", "name": "ctguard", "handle": 9}})
    r = FakeRunner({("nft", "-j", "list", "ruleset"): json.dumps(items),
                    ("nft", "list", "table", "inet", "ctguard"): "table inet ctguard {\n\tchain x {\n\t}\n}\n"})
    i = _inspect(r, firewalld=True)
    assert i.own_table == "foreign"
    assert any("did not create" in x for x in i.refusals)
    assert any("firewalld" in x for x in i.refusals) and "firewalld" in i.managers


def test_our_table_is_recognised_by_its_comment() -> None:
    items = json.loads(_read("nft-accepts-untracked.json"))
    items["nftables"].append({"table": {"family": "inet", "name": "ctguard", "handle": 9}})
    listing = 'table inet ctguard {\n\tcomment "managed by ctguard notrack"\n}\n'
    r = FakeRunner({("nft", "-j", "list", "ruleset"): json.dumps(items),
                    ("nft", "list", "table", "inet", "ctguard"): listing})
    i = _inspect(r)
    assert i.own_table == "ours" and i.own_table_text == listing and i.refusals == []


def test_legacy_rules_are_read_and_judged() -> None:
    r = FakeRunner({("nft", "-j", "list", "ruleset"): '{"nftables": []}',
                    ("iptables-legacy-save",): _read("iptables-nft-save-policy-drop.txt"),
                    ("ip6tables-legacy-save",): ""})
    i = _inspect(r, legacy=True)
    assert i.managers == ["iptables-legacy"]
    assert [c.where for c in i.needs_operator] == ["iptables-legacy (IPv4) filter INPUT"]


def _chain(rules: list[list[dict[str, object]]], policy: str = "drop") -> insp.ChainVerdict:
    return insp.judge_nft_chain("nft inet fw input", "input", policy, [{"expr": e} for e in rules])


CT_STATE = {"ct": {"key": "state"}}


def test_vmap_on_ct_state() -> None:
    def vmap(pairs: list[list[object]]) -> list[dict[str, object]]:
        return [{"vmap": {"key": CT_STATE, "data": {"set": pairs}}}]

    ok = _chain([vmap([["established", {"accept": None}], ["untracked", {"accept": None}]])])
    assert ok.verdict == "accepts-untracked"
    no = _chain([vmap([["established", {"accept": None}], ["invalid", {"drop": None}]])])
    assert no.verdict == "drops-untracked"
    dropped = _chain([vmap([["untracked", {"drop": None}]])], policy="accept")
    assert dropped.verdict == "drops-untracked" and "maps ct state untracked to drop" in dropped.detail


def test_accept_after_an_unconditional_drop_does_not_count() -> None:
    untracked = {"match": {"op": "in", "left": CT_STATE, "right": "untracked"}}
    v = _chain([[{"drop": None}], [untracked, {"accept": None}]], policy="accept")
    assert v.verdict == "drops-untracked" and v.detail.startswith("rule 1 drops everything")
    v = _chain([[untracked, {"accept": None}], [{"drop": None}]], policy="accept")
    assert v.verdict == "accepts-untracked"


def test_chains_of_an_ip_version_we_do_not_exempt_are_not_judged() -> None:
    items: list[dict[str, object]] = [
        {"table": {"family": "ip6", "name": "fw6"}},
        {"chain": {"family": "ip6", "table": "fw6", "name": "in", "type": "filter", "hook": "input", "policy": "drop"}},
    ]
    i = insp.Inspection()
    insp.analyse_nft(items, i, versions={4})
    assert i.chains == []
    insp.analyse_nft(items, i, versions={4, 6})
    assert [c.verdict for c in i.chains] == ["drops-untracked"]


def test_iptables_unconditional_drop_rule_counts_like_a_policy() -> None:
    save = ("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            "-A INPUT -p tcp -m tcp --dport 22 -j DROP\n"
            '-A INPUT -m comment --comment "default deny" -j REJECT --reject-with icmp-port-unreachable\n'
            "COMMIT\n")
    (inp, out) = insp.judge_iptables("iptables-nft (IPv4)", save, False)
    assert inp.verdict == "drops-untracked" and inp.detail.startswith("rule 3 drops everything")
    assert out.verdict == "passes"
