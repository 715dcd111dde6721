"""Golden rule text for nftables and iptables, and the properties that make it safe."""

from __future__ import annotations

import os
import re

from ctguard.firewall import iptrules, nftrules
from ctguard.firewall.spec import build_spec
from ctguard.firewall.transaction import make_plan

GOLD = os.path.join(os.path.dirname(__file__), "..", "fixtures", "notrack")


def _gold(name: str) -> str:
    with open(os.path.join(GOLD, name), encoding="utf-8") as f:
        return f.read()


def test_nft_golden_v4_v6_extra() -> None:
    spec = build_spec(["10.1.0.0/16", "10.2.0.0/24", "fd00:1::/64"], extra_ports=["9477"],
                      extra_from=["10.9.0.0/24", "fd00:9::/64"])
    assert nftrules.table_body(spec) == _gold("golden-v4v6-extra.nft")


def test_nft_rules_properties() -> None:
    body = nftrules.table_body(build_spec(["10.1.0.0/16"]))
    # only raw-priority chains: nothing of ours filters, and conntrack (-200) has not seen the packet yet
    assert re.findall(r"type filter hook (\w+) priority (\w+);", body) == [("prerouting", "raw"), ("output", "raw")]
    assert "accept\n" not in body.replace("policy accept;", "")
    assert " drop" not in body
    # every rule keyed on a Ceph *source* port refuses a bare SYN
    for line in body.splitlines():
        if "sport @ceph_ports" in line:
            assert nftrules.NOT_BARE_SYN in line
    # both ends inside the Ceph networks
    assert body.count("ip saddr @nets4 ip daddr @nets4") == 4
    assert "nets6" not in body


def test_load_script_replaces_only_our_table_atomically() -> None:
    script = nftrules.load_script(build_spec(["10.1.0.0/16"]))
    assert script.startswith("table inet ctguard\ndelete table inet ctguard\ntable inet ctguard {\n")
    assert "flush ruleset" not in script
    assert re.findall(r"^(?:add|delete|flush|insert) .*", script, re.M) == ["delete table inet ctguard"]


def test_include_file_tells_the_operator_line() -> None:
    text = nftrules.include_file(build_spec(["10.1.0.0/16"]))
    assert "#   ct state untracked accept" in text
    assert text.endswith(nftrules.load_script(build_spec(["10.1.0.0/16"])))


def test_insert_accept_goes_into_the_same_transaction() -> None:
    plan = make_plan(build_spec(["10.1.0.0/16"]), "nft", [("inet", "fw", "input")])
    assert plan.nft.endswith('insert rule inet fw input ct state untracked accept comment "ctguard notrack"\n')


def test_iptables_golden_two_networks() -> None:
    assert iptrules.restore_text(build_spec(["10.1.0.0/16", "10.2.0.0/24"]), 4) == _gold("golden-two-nets.ipt")


def test_iptables_existing_jumps_not_duplicated_and_v6_separate() -> None:
    spec = build_spec(["10.1.0.0/16", "fd00:1::/64"])
    text = iptrules.restore_text(spec, 4, {"raw:PREROUTING:CTGUARD-PRE", "filter:INPUT:CTGUARD-IN"})
    assert "-I PREROUTING" not in text and "-I INPUT" not in text
    assert "-I OUTPUT 1" in text and "fd00" not in text
    assert iptrules.families(spec) == [4, 6]
    v6 = iptrules.restore_text(spec, 6)
    assert "fd00:1::/64" in v6 and "10.1.0.0" not in v6


def test_iptables_multiport_limit_of_15() -> None:
    spec = build_spec(["10.1.0.0/16"], mon_ports=[str(p) for p in range(3300, 3316)], osd_range="6800-7568")
    text = iptrules.restore_text(spec, 4)
    for line in text.splitlines():
        m = re.search(r"--[sd]ports (\S+)", line)
        if m:
            assert sum(2 if ":" in p else 1 for p in m.group(1).split(",")) <= 15


def test_iptables_parse_save_and_undo() -> None:
    save = ("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:CTGUARD-PRE - [0:0]\n"
            '-A PREROUTING -m comment --comment "ctguard notrack" -j CTGUARD-PRE\nCOMMIT\n'
            "*filter\n:INPUT DROP [0:0]\n:CTGUARD-IN - [0:0]\n-A INPUT -j CTGUARD-IN\nCOMMIT\n")
    jumps, chains, policies = iptrules.parse_save(save)
    # a jump without our comment is not ours: we never delete it
    assert jumps == {"raw:PREROUTING:CTGUARD-PRE"}
    assert chains == {"raw:CTGUARD-PRE", "filter:CTGUARD-IN"}
    assert policies["filter"]["INPUT"] == "DROP"
    undo = iptrules.undo_text(jumps, chains)
    assert undo == ("*raw\n-D PREROUTING -m comment --comment \"ctguard notrack\" -j CTGUARD-PRE\n"
                    "-F CTGUARD-PRE\n-X CTGUARD-PRE\nCOMMIT\n*filter\n-F CTGUARD-IN\n-X CTGUARD-IN\nCOMMIT\n")
    assert iptrules.undo_text(set(), set()) == ""


def test_iptables_ours_from_save_round_trip() -> None:
    save = ("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:CTGUARD-OUT - [0:0]\n:CTGUARD-PRE - [0:0]\n"
            '-A PREROUTING -m comment --comment "ctguard notrack" -j CTGUARD-PRE\n'
            '-A OUTPUT -m comment --comment "ctguard notrack" -j CTGUARD-OUT\n'
            "-A CTGUARD-PRE -s 10.1.0.0/16 -p tcp -j CT --notrack\nCOMMIT\n"
            "*filter\n:INPUT DROP [5:300]\n-A INPUT -j ACCEPT\nCOMMIT\n")
    assert iptrules.ours_from_save(save) == (
        "*raw\n:CTGUARD-PRE - [0:0]\n:CTGUARD-OUT - [0:0]\n"
        '-I PREROUTING 1 -m comment --comment "ctguard notrack" -j CTGUARD-PRE\n'
        '-I OUTPUT 1 -m comment --comment "ctguard notrack" -j CTGUARD-OUT\n'
        "-A CTGUARD-PRE -s 10.1.0.0/16 -p tcp -j CT --notrack\nCOMMIT\n")
    assert iptrules.ours_from_save("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n") == ""
