"""The lab's network: one namespace per host on a bridge that lives in its own namespace, and a sink per
OSD host for filler packets. Nothing is created in, and no sysctl is written to, the init namespace
(ceph-lab.md pitfall 12: the init netns has br_netfilter loaded, so the bridge must not live there).

    <p>-mon 198.18.0.1 ─┐
    <p>-cli 198.18.0.2 ─┼─ br0 in <p>-sw
    <p>-hN  198.18.0.1N ─┘
    <p>-hN  198.18.(100+N).1/24 ── veth ── <p>-sink (no address, no forwarding: packets to 198.19/16 vanish)
"""

from __future__ import annotations

from collections.abc import Callable

from ctguard.lab import config as cfg
from ctguard.runner import Completed, run

Runner = Callable[..., Completed]


def ip(argv: list[str], runner: Runner = run) -> Completed:
    return runner(["ip", *argv], timeout=15, check=True)


def netns_exists(name: str, runner: Runner = run) -> bool:
    return name in list_netns(runner)


def list_netns(runner: Runner = run) -> list[str]:
    out = runner(["ip", "netns", "list"], timeout=15, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def add_netns(name: str, runner: Runner = run) -> None:
    ip(["netns", "add", name], runner)
    ip(["-n", name, "link", "set", "lo", "up"], runner)
    # netns-local sysctls: no IPv6 (no fe80:: addresses, no ND noise)
    runner(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1"], timeout=15, check=True)


def make_switch(sw: str, runner: Runner = run) -> None:
    ip(["-n", sw, "link", "add", "br0", "type", "bridge"], runner)
    ip(["-n", sw, "link", "set", "br0", "up"], runner)


def attach(sw: str, ns: str, port: str, addr: str, runner: Runner = run) -> None:
    """A veth from the bridge into `ns` (created directly in both namespaces), `eth0` there with `addr`/24."""
    ip(["-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns], runner)
    ip(["-n", sw, "link", "set", port, "master", "br0", "up"], runner)
    ip(["-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0"], runner)
    ip(["-n", ns, "link", "set", "eth0", "up"], runner)


def attach_sink(sink: str, host: str, i: int, runner: Runner = run) -> None:
    """The host's filler path, as in lab/testbed.py: 198.19.0.0/16 routed to a static neighbour in the sink,
    where it is silently discarded (no address, no forwarding, no ICMP)."""
    ip(["-n", host, "link", "add", "fill0", "type", "veth", "peer", "name", f"k{i}", "netns", sink], runner)
    ip(["-n", host, "addr", "add", f"{cfg.fill_src(i)}/24", "dev", "fill0"], runner)
    ip(["-n", host, "link", "set", "fill0", "up"], runner)
    ip(["-n", sink, "link", "set", f"k{i}", "up"], runner)
    mac = ip(["-n", sink, "-br", "link", "show", f"k{i}"], runner).stdout.split()[2]
    ip(["-n", host, "neigh", "replace", cfg.fill_gw(i), "lladdr", mac, "dev", "fill0", "nud", "permanent"], runner)
    ip(["-n", host, "route", "add", cfg.FILL_NET, "via", cfg.fill_gw(i), "dev", "fill0"], runner)


def nft(ns: str, ruleset: str, runner: Runner = run) -> None:
    runner(["ip", "netns", "exec", ns, "nft", "-f", "-"], timeout=15, check=True, input=ruleset)


def set_sysctl(ns: str, key: str, value: str | int, runner: Runner = run) -> None:
    """A per-netns sysctl inside one of the lab's own namespaces."""
    runner(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"], timeout=15, check=True)


def get_sysctl(ns: str, key: str, runner: Runner = run) -> str:
    return runner(["ip", "netns", "exec", ns, "sysctl", "-n", key], timeout=15, check=True).stdout.strip()


def del_netns(name: str, runner: Runner = run) -> bool:
    return runner(["ip", "netns", "del", name], timeout=30).ok
