"""The cheap readings every scrape, `watch` frame and `guard` poll makes: count, limit and counters.

All O(1) in the table size: two sysctl files and one IPCTNL_MSG_CT_GET_STATS_CPU dump (one message per CPU),
never a listing of entries (node_exporter#96: listing on every scrape makes a bad situation worse).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ctguard.kernel import netns as _netns
from ctguard.kernel.procfs import PROC, netfilter_path, read_int
from ctguard.kernel.stats import conntrack_stats

# The counters exported as ctguard_conntrack_<name>_total, in this order. `insert` is 0 on kernels that no
# longer maintain it (5.x+: see ctguard.kernel.stats); it is exported anyway for older kernels.
EXPORTED_COUNTERS = ("drop", "early_drop", "insert_failed", "invalid", "insert", "search_restart")


@dataclass(frozen=True)
class Reading:
    t: float  # monotonic seconds when read
    count: int
    limit: int
    counters: dict[str, int] = field(default_factory=dict)
    source: str = "netlink"  # where the counters came from: "netlink" or "procfs"

    @property
    def free(self) -> int:
        return max(0, self.limit - self.count)

    @property
    def fill(self) -> float:
        return self.count / self.limit if self.limit > 0 else 0.0


def read_count_limit(ns: _netns.Netns | None, proc_root: str = PROC) -> tuple[int, int]:
    with _netns.entered(ns):
        return (read_int(netfilter_path(proc_root, "nf_conntrack_count")),
                read_int(netfilter_path(proc_root, "nf_conntrack_max")))


def read_now(ns: _netns.Netns | None, proc_root: str = PROC,
             clock: Callable[[], float] = time.monotonic) -> Reading:
    count, limit = read_count_limit(ns, proc_root)
    st = conntrack_stats(ns, proc_root)
    return Reading(clock(), count, limit, dict(st.counters), st.source)


def read_drops(ns: _netns.Netns | None, proc_root: str = PROC) -> int:
    return conntrack_stats(ns, proc_root).get("drop")


def rate(a: Reading | None, b: Reading, name: str) -> float | None:
    """Per-second rate of a counter between two readings; None without a previous one or on a reset."""
    if a is None or b.t <= a.t:
        return None
    d = b.counters.get(name, 0) - a.counters.get(name, 0)
    if d < 0:
        return None  # counters reset (namespace recreated): no rate rather than a negative one
    return d / (b.t - a.t)
