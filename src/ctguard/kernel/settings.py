"""conntrack's sysctl settings of one network namespace: count, limit, buckets, hashsize and timeouts.

`nf_conntrack_count` and every timeout are per namespace; `nf_conntrack_max` and `nf_conntrack_buckets`
are global (read-only 0444 inside a non-init namespace, measured on 6.18). The module parameter `hashsize`
(/sys/module/nf_conntrack/parameters/hashsize, 0600 root) equals the global bucket count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ctguard.errors import CannotRead
from ctguard.kernel import netns as _netns
from ctguard.kernel.procfs import NETFILTER, PROC, SYS, netfilter_path, optional_int, read_int


@dataclass(frozen=True)
class ConntrackSettings:
    count: int
    max: int
    buckets: int | None
    hashsize: int | None
    timeouts: dict[str, int] = field(default_factory=dict)

    @property
    def fill(self) -> float:
        return self.count / self.max if self.max > 0 else 0.0

    @property
    def free(self) -> int:
        return max(0, self.max - self.count)


def _timeout_names(proc_root: str) -> list[str]:
    try:
        names = os.listdir(os.path.join(proc_root, NETFILTER))
    except FileNotFoundError as e:
        raise CannotRead(
            f"{os.path.join(proc_root, NETFILTER)}: no such directory (nf_conntrack not loaded?)"
        ) from e
    return sorted(n for n in names if n.startswith("nf_conntrack_") and "timeout" in n)


def conntrack_count(ns: _netns.Netns | None = None, proc_root: str = PROC) -> int:
    """nf_conntrack_count of a namespace: ~1 µs, never lists entries."""
    with _netns.entered(ns):
        return read_int(netfilter_path(proc_root, "nf_conntrack_count"))


def conntrack_settings(
    ns: _netns.Netns | None = None, proc_root: str = PROC, sys_root: str = SYS
) -> ConntrackSettings:
    with _netns.entered(ns):
        if not os.path.exists(netfilter_path(proc_root, "nf_conntrack_count")):
            raise CannotRead(
                f"{netfilter_path(proc_root, 'nf_conntrack_count')}: no such file "
                "(nf_conntrack is not loaded on this host: nothing to overflow)"
            )
        count = read_int(netfilter_path(proc_root, "nf_conntrack_count"))
        limit = read_int(netfilter_path(proc_root, "nf_conntrack_max"))
        buckets = optional_int(netfilter_path(proc_root, "nf_conntrack_buckets"))
        timeouts: dict[str, int] = {}
        for name in _timeout_names(proc_root):
            value = optional_int(netfilter_path(proc_root, name))
            if value is not None:
                timeouts[name.removeprefix("nf_conntrack_")] = value
    hashsize = optional_int(os.path.join(sys_root, "module", "nf_conntrack", "parameters", "hashsize"))
    return ConntrackSettings(count=count, max=limit, buckets=buckets, hashsize=hashsize, timeouts=timeouts)
