"""A three-namespace testbed for real-kernel tests, benchmarks and the lab's filler.

    <p>-cli [198.18.0.2/24] <==veth==> [198.18.0.1/24] <p>-srv [198.18.1.1/24] <==veth==> [no IP] <p>-sink

`srv` is the host under test: conntrack is on there (a `ct state` rule), 198.19.0.0/16 is routed into the
sink (a static neighbour, no ARP) where it is silently discarded, and spoofed filler replies from that range
are dropped on input. Only 198.18.0.0/15 addresses, only namespaces this object made; `close()` kills what it
started (by PID) and deletes its namespaces by name. Nothing in the init namespace is touched.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Sequence
from types import TracebackType

from ctguard.errors import BadInput
from ctguard.kernel.netns import Netns
from ctguard.runner import Completed, run

SRV_IP = "198.18.0.1"
CLI_IP = "198.18.0.2"
FILL_SRC = "198.18.1.1"

BASE_RULES = """
table inet tb {
  chain input {
    type filter hook input priority filter; policy accept;
    ip saddr 198.19.0.0/16 drop
    ct state established,related accept
  }
}
"""

CEPH_PORTS = "3300, 6789, 6800-7568"


def host_firewall(extra_ports: str = "") -> str:
    """A typical stateful host firewall: established first, service ports (Ceph's, plus `extra_ports`) opened
    for `ct state new` only, everything else dropped. What `notrack` must keep closed."""
    ports = CEPH_PORTS + (f", {extra_ports}" if extra_ports else "")
    return f"""
table inet tb {{
  chain input {{
    type filter hook input priority filter; policy drop;
    ip saddr 198.19.0.0/16 drop
    ct state established,related accept
    iif "lo" accept
    tcp dport {{ {ports} }} ct state new accept
  }}
}}
"""


class Testbed:
    """Context manager; `Testbed(prefix=None)` picks a unique `ctg<6 hex>` prefix."""

    __test__ = False  # not a pytest test class

    def __init__(self, prefix: str | None = None, rules: str | None = BASE_RULES) -> None:
        self.prefix = prefix or "ctg" + secrets.token_hex(3)
        if len(self.prefix) > 10 or not self.prefix.replace("-", "").isalnum():
            raise BadInput(f"bad testbed prefix {self.prefix!r} (at most 10 letters, digits or '-')")
        self.srv = f"{self.prefix}-srv"
        self.cli = f"{self.prefix}-cli"
        self.sink = f"{self.prefix}-sink"
        self._rules = rules
        self._procs: list[subprocess.Popen[bytes]] = []
        self._made: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> Testbed:
        try:
            self.up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def up(self) -> None:
        for ns in (self.srv, self.cli, self.sink):
            run(["ip", "netns", "add", ns], timeout=10, check=True)
            self._made.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"], timeout=10, check=True)
            self.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
            self.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
        p = self.prefix
        ip = ["ip"]
        steps = [
            ip + ["link", "add", f"{p}s0", "netns", self.srv, "type", "veth", "peer", "name", f"{p}c0", "netns", self.cli],
            ip + ["link", "add", f"{p}s1", "netns", self.srv, "type", "veth", "peer", "name", f"{p}k1", "netns", self.sink],
            ip + ["-n", self.srv, "addr", "add", f"{SRV_IP}/24", "dev", f"{p}s0"],
            ip + ["-n", self.cli, "addr", "add", f"{CLI_IP}/24", "dev", f"{p}c0"],
            ip + ["-n", self.srv, "addr", "add", f"{FILL_SRC}/24", "dev", f"{p}s1"],
            ip + ["-n", self.srv, "link", "set", f"{p}s0", "up"],
            ip + ["-n", self.srv, "link", "set", f"{p}s1", "up"],
            ip + ["-n", self.cli, "link", "set", f"{p}c0", "up"],
            ip + ["-n", self.sink, "link", "set", f"{p}k1", "up"],
        ]
        for argv in steps:
            run(argv, timeout=10, check=True)
        mac = run(["ip", "-n", self.sink, "-br", "link", "show", f"{p}k1"], timeout=10, check=True).stdout.split()[2]
        run(["ip", "-n", self.srv, "neigh", "replace", "198.18.1.2", "lladdr", mac, "dev", f"{p}s1",
             "nud", "permanent"], timeout=10, check=True)
        run(["ip", "-n", self.srv, "route", "add", "198.19.0.0/16", "via", "198.18.1.2", "dev", f"{p}s1"],
            timeout=10, check=True)
        if self._rules:
            self.nft(self.srv, self._rules)

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()
        for ns in reversed(self._made):
            run(["ip", "netns", "del", ns], timeout=30)
        self._made.clear()

    # -- helpers -------------------------------------------------------------------------------------------
    def ns(self, name: str | None = None) -> Netns:
        return Netns(name=name or self.srv)

    def exec(self, ns: str, argv: Sequence[str], timeout: float = 30, check: bool = True,
             input: str | None = None) -> Completed:
        return run(["ip", "netns", "exec", ns, *argv], timeout=timeout, check=check, input=input)

    def sysctl(self, ns: str, key: str, value: str) -> None:
        """A per-netns sysctl, inside one of our own namespaces only."""
        if ns not in (self.srv, self.cli, self.sink):
            raise BadInput(f"{ns} is not a namespace of this testbed")
        self.exec(ns, ["sysctl", "-qw", f"{key}={value}"])

    def nft(self, ns: str, ruleset: str) -> None:
        self.exec(ns, ["nft", "-f", "-"], input=ruleset)

    def spawn(self, ns: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start a background process in `ns`, in its own process group; killed by close()."""
        proc = subprocess.Popen(  # noqa: S603 - argument list
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def count(self, ns: str | None = None) -> int:
        from ctguard.kernel.settings import conntrack_count

        return conntrack_count(Netns(name=ns or self.srv))
