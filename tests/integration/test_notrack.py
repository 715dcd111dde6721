"""`ctguard notrack` against the real kernel: a stateful policy-drop host whose conntrack table is full of
ASSURED entries. Only 198.18.0.0/15 addresses, only namespaces these tests make (Testbed, `ctn…` prefix).

    cli 198.18.0.2 (+ 198.18.2.2, outside the configured network)  <==>  srv 198.18.0.1 (+ 198.18.2.1)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from peers import PEER, wait_ready

from ctguard.errors import CommandFailed
from ctguard.firewall import apply_notrack, confirm_notrack, remove_notrack, transaction
from ctguard.firewall.spec import build_spec
from ctguard.kernel.netns import Netns, entered
from ctguard.lab.fill import fill
from ctguard.lab.testbed import CLI_IP, FILL_SRC, SRV_IP, Testbed, host_firewall

pytestmark = pytest.mark.integration
CTGUARD = [sys.executable, "-c", "from ctguard.cli import main; main()"]
NET = "198.18.0.0/24"
OUTSIDE_CLI = "198.18.2.2"     # a client address outside NET
SRV_PORTS = (6800, 6789, 8080, 9477, 9100)
CLI_OSD_PORT = 6801

HOST_FW = host_firewall("8080, 9477")  # plus the test peer's and the exporter's ports


@dataclass
class Host:
    tb: Testbed
    state_dir: str

    @property
    def srv(self) -> str:
        return self.tb.srv

    def ruleset(self) -> str:
        return self.tb.exec(self.srv, ["nft", "list", "ruleset"]).stdout

    def ctguard(self, *args: str, ns: bool = True) -> subprocess.CompletedProcess[str]:
        extra = ["--netns", self.srv, "--state-dir", self.state_dir] if ns else []
        return subprocess.run(CTGUARD + [*args, *extra], capture_output=True, text=True, timeout=60, check=False)

    def tracked(self, port: int) -> int:
        """conntrack entries with this original destination port in srv."""
        out = self.tb.exec(self.srv, ["conntrack", "-L", "-p", "tcp", "--dport", str(port)], check=False)
        return sum(1 for line in out.stdout.splitlines() if line.startswith("tcp"))


def strip_counters(line: str) -> str:
    return re.sub(r"\[\d+:\d+\]$", "", line)


def talk(ns: str, addr: str, port: int, src: str | None = None, sport: int = 0, timeout: float = 0.6) -> bool:
    """A new TCP connection from `ns` (optionally from src:sport) that must echo data both ways. The socket
    is made inside `ns` (it stays bound to it) and used from here: no process to start."""
    with entered(Netns(name=ns)):
        s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if src or sport:
            s.bind((src or "", sport))
        s.settimeout(timeout)
        s.connect((addr, port))
        s.sendall(b"ping")
        return s.recv(4) == b"ping"
    except OSError:
        return False
    finally:
        s.close()


def _make_host(tmp: Path, rules: str | None) -> Iterator[Testbed]:
    with Testbed(prefix="ctn" + secrets.token_hex(3), rules=rules) as tb:
        p = tb.prefix
        tb.exec(tb.cli, ["ip", "addr", "add", f"{OUTSIDE_CLI}/24", "dev", f"{p}c0"])
        tb.exec(tb.srv, ["ip", "addr", "add", "198.18.2.1/24", "dev", f"{p}s0"])
        for ns, addr, ports, name in ((tb.srv, SRV_IP, SRV_PORTS, "srv"), (tb.cli, CLI_IP, (CLI_OSD_PORT,), "cli")):
            ready = tmp / f"{name}.ready"
            proc = tb.spawn(ns, [sys.executable, PEER, str(ready), "serve", "0.0.0.0" if name == "srv" else addr,
                                 *map(str, ports)])
            wait_ready(ready, proc)
        yield tb


@pytest.fixture(scope="module")
def full_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """srv with HOST_FW and its table filled to the max with ASSURED entries (~3 s)."""
    tmp = tmp_path_factory.mktemp("notrack")
    for tb in _make_host(tmp, HOST_FW):
        limit = int(tb.exec(tb.srv, ["sysctl", "-n", "net.netfilter.nf_conntrack_max"]).stdout)
        fill("tcp-est", limit + 2000, FILL_SRC, Netns(name=tb.srv))
        assert tb.count() >= limit
        yield Host(tb, str(tmp / "state"))


def _spec_args(*more: str) -> list[str]:
    return ["--network", NET, "--no-ceph", "--osd-range", "6800-7568", *more]


def test_full_table_notrack_opens_ceph_only_and_remove_restores(full_host: Host) -> None:
    h = full_host
    before = h.ruleset()
    assert not talk(h.tb.cli, SRV_IP, 6800), "table full: a new OSD connection must fail before apply"
    r = h.ctguard("notrack", "check", *_spec_args(), "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["valid"] is True
    assert doc["operator_must_add"] == [{"chain": "nft inet tb input",
                                         "rule": "nft insert rule inet tb input ct state untracked accept"}]

    r = h.ctguard("notrack", "apply", *_spec_args("--extra-port", "9477", "--extra-from", "198.18.2.0/24",
                                                 "--insert-accept", "inet tb input", "--no-rollback"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "confirmed"
    try:
        assert talk(h.tb.cli, SRV_IP, 6800), "OSD port must open once untracked"
        assert talk(h.tb.cli, SRV_IP, 6789), "mon port too"
        assert talk(h.tb.srv, CLI_IP, CLI_OSD_PORT, src=SRV_IP), "outbound to a peer OSD, replies back in"
        assert not talk(h.tb.cli, SRV_IP, 8080), "a non-Ceph port stays tracked, so still closed"
        assert not talk(h.tb.cli, SRV_IP, 6800, src=OUTSIDE_CLI), "Ceph port from outside the networks stays closed"
        assert talk(h.tb.cli, SRV_IP, 9477, src=OUTSIDE_CLI), "extra port from its network opens"
        assert not talk(h.tb.cli, SRV_IP, 9477, src=CLI_IP), "extra port from elsewhere stays closed"
        assert h.tb.count() >= int(h.tb.exec(h.srv, ["sysctl", "-n", "net.netfilter.nf_conntrack_max"]).stdout)
    finally:
        r = h.ctguard("notrack", "remove", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["identical"] is True
    assert h.ruleset() == before
    assert not talk(h.tb.cli, SRV_IP, 6800)


def test_accept_in_a_separate_base_chain_does_not_help(full_host: Host) -> None:
    """The nftables fact the design rests on: an accept in another base chain does not stop the host's
    policy drop; only the host chain's own `ct state untracked accept` does."""
    h = full_host
    before = h.ruleset()
    apply_notrack(Netns(name=h.srv), [NET], osd_range=(6800, 7568), state_dir=h.state_dir)
    try:
        h.tb.nft(h.srv, "table inet ctnproof {\n chain input {\n  type filter hook input priority -10; "
                        "policy accept;\n  ct state untracked accept\n }\n}\n")
        assert not talk(h.tb.cli, SRV_IP, 6800), "accept in our own base chain must not be enough"
        h.tb.exec(h.srv, ["nft", "delete", "table", "inet", "ctnproof"])
        h.tb.exec(h.srv, ["nft", "insert", "rule", "inet", "tb", "input", "ct", "state", "untracked", "accept"])
        assert talk(h.tb.cli, SRV_IP, 6800), "the operator's one line makes it work"
        h.tb.exec(h.srv, ["nft", "delete", "rule", "inet", "tb", "input", "handle",
                          _handle(h, "ct state untracked accept")])
    finally:
        out = remove_notrack(Netns(name=h.srv), state_dir=h.state_dir)
    assert out.identical is True
    assert h.ruleset() == before


def _handle(h: Host, text: str) -> str:
    for line in h.tb.exec(h.srv, ["nft", "-a", "list", "chain", "inet", "tb", "input"]).stdout.splitlines():
        if text in line:
            return line.rsplit("# handle ", 1)[1].strip()
    raise AssertionError(f"no rule {text!r}")


def test_rollback_without_confirm_restores_byte_identical(full_host: Host) -> None:
    h = full_host
    before = h.ruleset()
    r = h.ctguard("notrack", "apply", *_spec_args("--insert-accept", "inet tb input", "--timeout", "2"))
    assert r.returncode == 0, r.stderr
    assert talk(h.tb.cli, SRV_IP, 6800)
    jpath = Path(h.state_dir) / "notrack" / f"netns-{h.srv}.json"
    end = time.monotonic() + 15
    while json.loads(jpath.read_text())["status"] != "rolled-back":
        assert time.monotonic() < end, "watchdog did not roll back"
        time.sleep(0.1)
    assert h.ruleset() == before
    assert json.loads(jpath.read_text())["result"]["identical"] is True
    assert not talk(h.tb.cli, SRV_IP, 6800)
    r = h.ctguard("notrack", "confirm")
    assert r.returncode == 1 and "nothing to confirm" in r.stderr


def test_confirm_keeps_rules_past_the_deadline(full_host: Host) -> None:
    h = full_host
    before = h.ruleset()
    ns = Netns(name=h.srv)
    out = apply_notrack(ns, [NET], osd_range=(6800, 7568), insert_accept=["inet tb input"], rollback_after=3,
                        state_dir=h.state_dir)
    assert out.status == "pending" and out.deadline is not None
    assert confirm_notrack(ns, state_dir=h.state_dir).status == "confirmed"
    time.sleep(max(0.0, out.deadline - time.time()) + 0.6)
    assert talk(h.tb.cli, SRV_IP, 6800), "confirmed: no rollback"
    assert h.ctguard("notrack", "remove").returncode == 0
    assert h.ruleset() == before


def test_invalid_input_or_rules_never_half_loaded(full_host: Host) -> None:
    h = full_host
    before = h.ruleset()
    r = h.ctguard("notrack", "apply", "--network", "198.18.0.1/24", "--no-ceph", "--no-rollback")
    assert r.returncode == 3 and "host bits set" in r.stderr and "Traceback" not in r.stderr
    r = h.ctguard("notrack", "apply", *_spec_args("--insert-accept", "inet tb nosuchchain"))
    assert r.returncode == 3 and "nosuchchain" in r.stderr
    # A script whose last statement the kernel refuses: the valid statements before it are not applied.
    plan = transaction.make_plan(build_spec([NET]), "nft", [("inet", "tb", "input")])
    broken = transaction.Plan(plan.backend, plan.spec, plan.nft + "add rule inet tb nosuchchain accept\n", {})
    with pytest.raises(CommandFailed):
        transaction._load(Netns(name=h.srv), broken, transaction.run)
    assert h.ruleset() == before


# -- iptables backends: no fill needed; "untracked" is proven by the absence of conntrack entries ------------

IPT_FW = [
    "-P INPUT DROP",
    "-A INPUT -s 198.19.0.0/16 -j DROP",
    "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -p tcp -m multiport --dports 6789,6800:7568,8080 -m conntrack --ctstate NEW -j ACCEPT",
]


@pytest.mark.parametrize("backend", ["iptables-nft", "iptables-legacy"])
def test_iptables_backend(backend: str, tmp_path: Path) -> None:
    tool = "iptables-legacy" if backend == "iptables-legacy" else "iptables-nft"
    for tb in _make_host(tmp_path, None):
        h = Host(tb, str(tmp_path / "state"))
        for rule in IPT_FW:
            tb.exec(tb.srv, [tool, *rule.split()])
        save = [f"{tool}-save"]
        before_ipt = [ln for ln in tb.exec(tb.srv, save).stdout.splitlines() if not ln.startswith("#")]
        before_nft = h.ruleset()
        before_nft_s = _stateless(h)
        assert talk(tb.cli, SRV_IP, 6800) and h.tracked(6800) >= 1, "tracked before apply"
        tb.exec(tb.srv, ["conntrack", "-F"])
        r = h.ctguard("notrack", "check", *_spec_args(), "--json")  # auto: the iptables backend, with its accepts
        doc = json.loads(r.stdout)
        assert r.returncode == 0 and doc["backend"] == backend and doc["operator_must_add"] == [], r.stdout
        assert any(c["where"] == f"{tool} (IPv4) filter INPUT" and c["verdict"] == "accepts-untracked"
                   for c in doc["inspection"]["chains"])
        r = h.ctguard("notrack", "apply", *_spec_args("--no-rollback"), "--json")  # --backend auto
        assert r.returncode == 0, r.stderr + r.stdout
        assert json.loads(r.stdout)["backend"] == backend
        assert talk(tb.cli, SRV_IP, 6800) and talk(tb.srv, CLI_IP, CLI_OSD_PORT, src=SRV_IP)
        assert h.tracked(6800) == 0 and h.tracked(CLI_OSD_PORT) == 0, "Ceph traffic must be untracked"
        assert talk(tb.cli, SRV_IP, 8080) and h.tracked(8080) >= 1, "other ports stay tracked"
        assert not talk(tb.cli, SRV_IP, 9100, sport=6800), "a Ceph source port must not open other ports"
        talk(tb.cli, SRV_IP, 6800, src=OUTSIDE_CLI)
        assert h.tracked(6800) == 1, "from outside the networks a Ceph port stays tracked"
        # a second apply (other range) left unconfirmed: the rollback brings the first one back exactly
        v1 = [strip_counters(x) for x in tb.exec(tb.srv, save).stdout.splitlines() if not x.startswith("#")]
        r = h.ctguard("notrack", "apply", "--network", NET, "--no-ceph", "--osd-range", "6800-7300", "--timeout", "1")
        assert r.returncode == 0, r.stderr
        jpath = Path(h.state_dir) / "notrack" / f"netns-{tb.srv}.json"
        end = time.monotonic() + 15
        while json.loads(jpath.read_text())["status"] != "rolled-back":
            assert time.monotonic() < end, "watchdog did not roll back"
            time.sleep(0.1)
        assert [strip_counters(x) for x in tb.exec(tb.srv, save).stdout.splitlines() if not x.startswith("#")] == v1
        r = h.ctguard("notrack", "remove", "--json")
        assert r.returncode == 0, r.stderr
        # iptables-nft rules carry counters that traffic moved: equal apart from counters
        assert json.loads(r.stdout)["identical_stateless"] is True, r.stdout
        after_ipt = [ln for ln in tb.exec(tb.srv, save).stdout.splitlines() if not ln.startswith("#")]
        strip = re.compile(r"\[\d+:\d+\]$")
        if backend == "iptables-nft":
            assert [strip.sub("", x) for x in after_ipt] == [strip.sub("", x) for x in before_ipt]
            assert _stateless(h) == before_nft_s
        else:
            assert [x for x in after_ipt if "CTGUARD" in x] == []
            assert [strip.sub("", x) for x in after_ipt if x.startswith((":INPUT", "-A INPUT"))] == \
                [strip.sub("", x) for x in before_ipt if x.startswith((":INPUT", "-A INPUT"))]
            assert h.ruleset() == before_nft


def _stateless(h: Host) -> str:
    return h.tb.exec(h.srv, ["nft", "-s", "list", "ruleset"]).stdout


def test_ceph_source_port_does_not_open_other_ports_nft(tmp_path: Path) -> None:
    for tb in _make_host(tmp_path, HOST_FW):
        h = Host(tb, str(tmp_path / "state"))
        apply_notrack(Netns(name=tb.srv), [NET], osd_range=(6800, 7568), state_dir=h.state_dir,
                      insert_accept=["inet tb input"])
        assert talk(tb.cli, SRV_IP, 6800) and h.tracked(6800) == 0
        assert not talk(tb.cli, SRV_IP, 9100, sport=6800), "bare SYN from a Ceph port stays tracked -> dropped"
        remove_notrack(Netns(name=tb.srv), state_dir=h.state_dir)


def test_ipt_second_family_failure_takes_back_the_first(tmp_path: Path) -> None:
    for tb in _make_host(tmp_path, None):
        ns = Netns(name=tb.srv)
        before = tb.exec(tb.srv, ["iptables-nft-save"]).stdout.splitlines()
        plan = transaction.make_plan(build_spec([NET, "fd00:18::/64"]), "iptables-nft")
        broken = transaction.Plan(plan.backend, plan.spec, "", {4: plan.ipt[4], 6: plan.ipt[6] + "*raw\n-A NOPE\nCOMMIT\n"})
        with pytest.raises(CommandFailed):
            transaction._load(ns, broken, transaction.run)
        after = tb.exec(tb.srv, ["iptables-nft-save"]).stdout.splitlines()
        assert [x for x in after if "CTGUARD" in x] == [] and len([x for x in before if "CTGUARD" in x]) == 0


def test_v6_and_extra_rules_pass_the_real_tools_and_netns_pid(tmp_path: Path) -> None:
    """IPv6 + extra-port rule text is accepted by nft -c and both iptables-restore --test flavours; the
    namespace can be named by a PID inside it."""
    for tb in _make_host(tmp_path, HOST_FW):
        spec = build_spec([NET, "fd00:18::/64"], extra_ports=["9477"], extra_from=["198.18.2.0/24", "fd00:9::/64"])
        ns = Netns(name=tb.srv)
        transaction.validate(ns, transaction.make_plan(spec, "nft", [("inet", "tb", "input")]))
        for backend in ("iptables-nft", "iptables-legacy"):
            plan = transaction.make_plan(spec, backend)
            assert set(plan.ipt) == {4, 6}
            transaction.validate(ns, plan)
        proc = tb.spawn(tb.srv, ["sleep", "60"])
        time.sleep(0.3)
        pid = subprocess.run(["pgrep", "-P", str(proc.pid), "sleep"], capture_output=True, text=True,
                             check=False).stdout.split() or [str(proc.pid)]
        r = subprocess.run(CTGUARD + ["notrack", "check", "--netns-pid", pid[0], "--state-dir", str(tmp_path),
                                      *_spec_args("--network", "fd00:18::/64"), "--json"],
                           capture_output=True, text=True, timeout=60, check=False)
        doc = json.loads(r.stdout)
        assert doc["netns"] == f"pid:{pid[0]}" and doc["valid"] is True
        assert [c["chain"] for c in doc["operator_must_add"]] == ["nft inet tb input"]


def test_reapply_then_rollback_restores_the_previous_ctguard_rules(full_host: Host) -> None:
    h = full_host
    before = h.ruleset()
    assert h.ctguard("notrack", "apply", *_spec_args("--insert-accept", "inet tb input", "--no-rollback")).returncode == 0
    v1 = h.ruleset()
    r = h.ctguard("notrack", "apply", "--network", "198.18.0.0/23", "--no-ceph", "--osd-range", "6800-7300",
                  "--insert-accept", "inet tb input", "--timeout", "2")
    assert r.returncode == 0, r.stderr
    v2 = h.ruleset()
    assert "6800-7300" in v2 and v2.count("ctguard notrack\"") == v1.count("ctguard notrack\"")  # not inserted twice
    jpath = Path(h.state_dir) / "notrack" / f"netns-{h.srv}.json"
    end = time.monotonic() + 15
    while json.loads(jpath.read_text())["status"] != "rolled-back":
        assert time.monotonic() < end, "watchdog did not roll back"
        time.sleep(0.1)
    assert h.ruleset() == v1, "the confirmed first apply (and its inserted rule) is back exactly"
    assert talk(h.tb.cli, SRV_IP, 6800)
    # a confirmed re-apply, then remove: back to the ruleset before the very first apply
    r = h.ctguard("notrack", "apply", "--network", "198.18.0.0/23", "--no-ceph", "--no-rollback")
    assert r.returncode in (0, 1), r.stderr
    r = h.ctguard("notrack", "remove", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["identical"] is True, r.stdout
    assert h.ruleset() == before


def test_killed_watchdog_is_made_good_by_the_next_command(full_host: Host) -> None:
    h = full_host
    before = h.ruleset()
    r = h.ctguard("notrack", "apply", *_spec_args("--insert-accept", "inet tb input", "--timeout", "1"), "--json")
    assert r.returncode == 0, r.stderr
    jpath = Path(h.state_dir) / "notrack" / f"netns-{h.srv}.json"
    pid = json.loads(jpath.read_text())["watchdog_pid"]
    os.kill(pid, signal.SIGKILL)  # the watchdog this test's apply started
    time.sleep(3.2)               # past the deadline and the 2 s grace
    assert h.ruleset() != before, "nobody rolled back yet"
    r = h.ctguard("notrack", "check", *_spec_args(), "--json")
    doc = json.loads(r.stdout)
    assert doc["recovered"]["status"] == "rolled-back" and doc["recovered"]["identical"] is True
    assert h.ruleset() == before
