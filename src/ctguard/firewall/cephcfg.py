"""Ports and networks from the cluster's configuration (`ceph config get`), with a short timeout.

Flags win over the cluster, the cluster over defaults (docs/developing.md). When no cluster answers (no
ceph.conf, no keyring, mons down) we fall back to Ceph's defaults and say so: the rules must never wait on
a cluster that is the very thing in trouble.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctguard.errors import CtguardError
from ctguard.runner import Runner, run

CONNECT_TIMEOUT = 5
TIMEOUT = 10.0


@dataclass(frozen=True)
class CephValues:
    ms_bind_port_min: int | None = None
    ms_bind_port_max: int | None = None
    networks: tuple[str, ...] = ()
    source: str = "defaults"       # "cluster" | "defaults"
    error: str | None = None


def _get(who: str, option: str, runner: Runner) -> str:
    done = runner(["ceph", "--connect-timeout", str(CONNECT_TIMEOUT), "config", "get", who, option],
                  timeout=TIMEOUT)
    if not done.ok:
        raise CtguardError(f"ceph config get {who} {option}: {done.first_error_line()}")
    return done.stdout.strip()


def parse_networks(text: str) -> tuple[str, ...]:
    """public_network/cluster_network are comma- or space-separated CIDR lists; empty when unset."""
    return tuple(t for t in text.replace(",", " ").split() if t)


def read_ceph_values(runner: Runner = run, want_networks: bool = True) -> CephValues:
    try:
        lo = int(_get("osd", "ms_bind_port_min", runner))
        hi = int(_get("osd", "ms_bind_port_max", runner))
        nets: tuple[str, ...] = ()
        if want_networks:
            nets = parse_networks(_get("mon", "public_network", runner))
            nets += parse_networks(_get("osd", "cluster_network", runner))
        return CephValues(lo, hi, tuple(dict.fromkeys(nets)), "cluster")
    except (CtguardError, ValueError) as e:
        msg = e.message if isinstance(e, CtguardError) else f"unexpected answer ({e})"
        return CephValues(source="defaults", error=msg)
