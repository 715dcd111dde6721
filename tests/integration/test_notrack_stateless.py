"""`notrack check` on host firewalls that accept Ceph statelessly, against the real kernel: its verdict must
say what the packets really do once ctguard's notrack rules are loaded. For each ruleset the test loads the
exemption (nft backend, nothing inserted into the host's chain), asks `check`, then opens connections in each
direction and compares. Only 198.18.0.0/24 in namespaces the test makes.

    cli 198.18.0.2 (a peer OSD, port 6801)  <==>  srv 198.18.0.1 (our OSDs, ports 6800 and 7100)
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from peers import PEER, wait_ready
from test_notrack import CTGUARD, talk

from ctguard.firewall import apply_notrack, remove_notrack
from ctguard.kernel.netns import Netns
from ctguard.lab.testbed import CLI_IP, SRV_IP, Testbed

pytestmark = pytest.mark.integration
NET = "198.18.0.0/24"
CEPH = "3300, 6789, 6800-7568"

NFT = {
    "stateless": f"""ct state established,related accept
    iif "lo" accept
    ip saddr {NET} tcp dport {{ {CEPH} }} accept
    ip saddr {NET} tcp sport {{ {CEPH} }} accept""",
    "dport-only": f"""ct state established,related accept
    ip saddr {NET} tcp dport {{ {CEPH} }} accept""",
    "ct-only": f"""ct state established,related accept
    iif "lo" accept
    tcp dport {{ {CEPH} }} ct state new accept""",
    "partial": f"""ct state established,related accept
    ip saddr {NET} tcp dport {{ 3300, 6789, 6800-7000 }} accept
    ip saddr {NET} tcp sport {{ {CEPH} }} accept""",
}
IPT = {
    "stateless": ["-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                  f"-A INPUT -s {NET} -p tcp -m multiport --dports 3300,6789,6800:7568 -j ACCEPT",
                  f"-A INPUT -s {NET} -p tcp -m multiport --sports 3300,6789,6800:7568 -j ACCEPT"],
    "dport-only": ["-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                   f"-A INPUT -s {NET} -p tcp -m multiport --dports 3300,6789,6800:7568 -j ACCEPT"],
    "ct-only": ["-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A INPUT -p tcp -m multiport --dports 3300,6789,6800:7568 -m conntrack --ctstate NEW -j ACCEPT"],
    "partial": ["-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                f"-A INPUT -s {NET} -p tcp -m multiport --dports 3300,6789,6800:7000 -j ACCEPT",
                f"-A INPUT -s {NET} -p tcp -m multiport --sports 3300,6789,6800:7568 -j ACCEPT"],
}
# ruleset -> (check exit code, in to 6800, in to 7100, out to the peer's 6801)
EXPECT = {
    "stateless": (0, True, True, True),
    "dport-only": (1, True, True, False),
    "ct-only": (1, False, False, False),
    "partial": (1, True, False, True),
}


@pytest.mark.parametrize("tool", ["nft", "iptables-nft"])
@pytest.mark.parametrize("name", list(EXPECT))
def test_check_tells_what_the_kernel_does(name: str, tool: str, tmp_path: Path) -> None:
    rules = None
    if tool == "nft":
        rules = f"table inet tb {{\n  chain input {{\n    type filter hook input priority filter; policy drop;\n" \
                f"    {NFT[name]}\n  }}\n}}\n"
    with Testbed(prefix="cts" + secrets.token_hex(3), rules=rules) as tb:
        if tool != "nft":
            tb.exec(tb.srv, ["iptables-nft", "-P", "INPUT", "DROP"])
            for r in IPT[name]:
                tb.exec(tb.srv, ["iptables-nft", *r.split()])
        for ns, addr, ports, who in ((tb.srv, "0.0.0.0", ("6800", "7100"), "srv"), (tb.cli, CLI_IP, ("6801",), "cli")):
            ready = tmp_path / f"{who}.ready"
            wait_ready(ready, tb.spawn(ns, [sys.executable, PEER, str(ready), "serve", addr, *ports]))
        state = str(tmp_path / "state")
        apply_notrack(Netns(name=tb.srv), [NET], osd_range=(6800, 7568), state_dir=state, backend="nft")
        try:
            r = subprocess.run([*CTGUARD, "notrack", "check", "--netns", tb.srv, "--state-dir", state, "--network",
                                NET, "--no-ceph", "--osd-range", "6800-7568", "--backend", "nft", "--json"],
                               capture_output=True, text=True, timeout=60, check=False)
            doc = json.loads(r.stdout)
            got = (r.returncode, talk(tb.cli, SRV_IP, 6800), talk(tb.cli, SRV_IP, 7100),
                   talk(tb.srv, CLI_IP, 6801, src=SRV_IP))
            chains = [c for c in doc["inspection"]["chains"] if c["hook"] == "input"]
            assert got == EXPECT[name], (got, chains)
            (chain,) = chains
            if name == "stateless":
                assert chain["verdict"] == "accepts-untracked" and doc["operator_must_add"] == []
            else:
                assert chain["verdict"] == "drops-untracked", chain
                dropped = chain["detail"].split("dropped there:")[1].split("; rule")[0]
                assert ("to our daemons" in dropped) == (not (got[1] and got[2]))
                assert ("replies from peer daemons" in dropped) == (not got[3])
                assert ("7001-7568" in dropped) == (name == "partial")
        finally:
            remove_notrack(Netns(name=tb.srv), state_dir=state)
