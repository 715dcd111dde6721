"""`plan`: size nf_conntrack from the host's measured workload and the worst burst of its restart strategy.

Nobody sizes from the workload: kube-proxy scales by CPU count (max(131072, 32768 x cores), capped at
1,048,576 — kubernetes pkg/proxy/conntrack), the kernel by RAM (buckets = RAM/16384/8, max = buckets since
5.15). Here: the simulated peak of the restart (unconstrained table) x a safety factor, rounded up to a
power of two; buckets = max (the kernel's own ratio since 5.15: average chain <= 1, so early_drop's 8-bucket
scan sees few entries); memory = max x the slab object size (256 B measured on 6.18) + 8 B per bucket.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ctguard.errors import CannotRead
from ctguard.model.scenario import Scenario
from ctguard.model.simulate import HostSim

KUBE_MIN = 131072
KUBE_PER_CORE = 32768
KUBE_CAP = 1048576
ENTRY_BYTES_MEASURED = 256  # slab_size of nf_conntrack on 6.18 (kernel-conntrack.md §2.2)
BUCKET_BYTES = 8
TIME_WAIT_RECOMMENDED = 30


def kube_proxy_max(cores: int) -> int:
    return min(KUBE_CAP, max(KUBE_MIN, KUBE_PER_CORE * max(1, cores)))


def slab_entry_bytes(slabinfo: str) -> int | None:
    """Bytes per conntrack entry from /proc/slabinfo's `nf_conntrack` line: pages per slab x 4 KiB over
    objects per slab (the real cost with slab overhead), or None when the line is absent."""
    for line in slabinfo.splitlines():
        parts = line.split()
        if parts and parts[0] == "nf_conntrack":
            try:
                objsize, per_slab, pages = int(parts[3]), int(parts[4]), int(parts[5])
            except (IndexError, ValueError) as e:
                raise CannotRead(f"/proc/slabinfo: unknown nf_conntrack line {line.strip()[:60]!r}") from e
            if per_slab > 0 and pages > 0:
                return max(objsize, pages * 4096 // per_slab)
            return objsize
    return None


def pow2_at_least(n: float) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


@dataclass(frozen=True)
class Current:
    max: int | None = None
    buckets: int | None = None
    count: int | None = None
    timeouts: dict[str, int] = field(default_factory=dict)
    cores: int = 1
    entry_bytes: int | None = None  # from slabinfo
    ceph_entries: int | None = None  # entries held by local Ceph daemons (status breakdown)
    other_entries: int | None = None  # measured entries that are not Ceph's (VMs, containers, services)


@dataclass(frozen=True)
class Item:
    name: str
    value: int
    current: int | None
    reason: str


@dataclass(frozen=True)
class Plan:
    items: tuple[Item, ...]
    peak_entries: float
    baseline: float
    safety: float
    entry_bytes: int
    entry_bytes_source: str
    memory_bytes: int
    kube_proxy_max: int
    current_overflow: bool | None  # would the current table overflow in this restart?
    untrack_better: bool
    untrack_reason: str
    strategy: str
    other_entries: float = 0.0  # not-Ceph entries counted in the size
    left_alone: tuple[Item, ...] = ()  # settings the plan would change but does not (value = what it wanted)

    def item(self, name: str) -> Item:
        return next(i for i in self.items if i.name == name)

    def sysctl_conf(self) -> str:
        lines = ["# Written by `ctguard plan`: conntrack sized from this host's workload and restart burst.",
                 f"# Peak {self.peak_entries:,.0f} entries ({self.strategy}) x safety {self.safety:g}."]
        for i in self.items:
            if i.name.startswith("net.netfilter."):
                lines.append(f"# {i.reason}")
                lines.append(f"{i.name} = {i.value}")
        return "\n".join(lines) + "\n"

    def modprobe_conf(self) -> str:
        b = self.item("hashsize")
        return ("# Written by `ctguard plan`. nf_conntrack_buckets is read-only outside the initial network "
                "namespace;\n# the hash size is a module parameter (built-in conntrack: boot with "
                f"nf_conntrack.hashsize={b.value}).\n# {b.reason}\noptions nf_conntrack hashsize={b.value}\n")

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "baseline_entries": round(self.baseline),
            "peak_entries": round(self.peak_entries),
            "safety": self.safety,
            "recommendations": [{"name": i.name, "value": i.value, "current": i.current, "reason": i.reason}
                                for i in self.items],
            "memory": {"bytes": self.memory_bytes, "entry_bytes": self.entry_bytes,
                       "entry_bytes_source": self.entry_bytes_source},
            "kube_proxy_max": self.kube_proxy_max,
            "current_overflows": self.current_overflow,
            "untrack_better": self.untrack_better,
            "untrack_reason": self.untrack_reason,
            "other_entries": round(self.other_entries),
            "left_alone": [{"name": i.name, "current": i.current, "wanted": i.value, "reason": i.reason}
                           for i in self.left_alone],
            "files": {"/etc/sysctl.d/90-ctguard-conntrack.conf": self.sysctl_conf(),
                      "/etc/modprobe.d/ctguard-conntrack.conf": self.modprobe_conf()},
        }


def unconstrained_peak(sc: Scenario) -> float:
    """The restart's peak when the table never fills (the burst the table must hold), at the worst of the
    scenario's GC phases (expired entries stay counted until a pass)."""
    from ctguard.model.whatif import phases

    peaks = []
    for phase in phases(sc):
        big = dataclasses.replace(sc.table, max=1 << 40, buckets=1 << 40, gc_phase_s=phase)
        peaks.append(HostSim(sc.conns(), big, sc.strategy, sc.effective_behaviour(), sc.ceph,
                             other_entries=sc.other_entries).run().peak_entries)
    return max(peaks)


def make_plan(sc: Scenario, current: Current, safety: float = 2.0, allow_lower: bool = False) -> Plan:
    """The recommendation. It never lowers nf_conntrack_max or the hash size below the host's current
    values unless `allow_lower`: the host's table also serves what the model does not see coming (VMs,
    containers on hyper-converged nodes, a kernel default sized by RAM), and the measured not-Ceph entries
    are counted in the size (held through the restart)."""
    conns = sc.conns()
    if current.other_entries is not None and current.other_entries > sc.other_entries:
        sc = dataclasses.replace(sc, other_entries=float(current.other_entries))
    if sc.strategy.name == "adaptive":
        # adaptive fits its steps to whatever table it finds; the table must at least hold its smallest
        # step (one OSD, or its batch bound) at the strategy's fill target
        size = max(1, sc.strategy.batch)
        step = dataclasses.replace(sc.strategy, name="batch" if size > 1 else "stagger", batch=size)
        sc = dataclasses.replace(sc, strategy=step)
        safety = max(safety, 1.0 / sc.strategy.target_fill)
    peak = unconstrained_peak(sc)
    other = sc.other_entries
    wanted = max(65536, pow2_at_least(peak * safety))
    items: list[Item] = []
    left: list[Item] = []
    cur_max = current.max
    sized = (f"the restart ({sc.strategy.label()}) peaks at {peak:,.0f} entries from a baseline of "
             f"{conns.baseline:,.0f} Ceph entries"
             + (f" + {other:,.0f} not Ceph's (held throughout)" if other > 0 else "")
             + f"; x{safety:g} safety, rounded up to a power of two")
    want = wanted
    if cur_max is not None and wanted < cur_max and not allow_lower:
        want = cur_max
        left.append(Item("net.netfilter.nf_conntrack_max", wanted, cur_max,
                         f"kept at the current {cur_max:,}: {sized} = {wanted:,}, but lowering the limit takes "
                         "slots from whatever else this host runs or will run (VMs, containers); "
                         "--allow-lower recommends it"))
        reason = f"kept: the current {cur_max:,} already holds the restart ({peak:,.0f} x{safety:g})"
    else:
        reason = sized + (f"; the current {cur_max:,} would overflow" if cur_max is not None and cur_max < peak
                          else "")
    items.append(Item("net.netfilter.nf_conntrack_max", want, cur_max, reason))
    buckets = want
    bucket_reason = ("one bucket per entry: the kernel's own ratio since 5.15 (average chain <= 1), so "
                     f"early_drop's 8-bucket scan finds evictable entries; {BUCKET_BYTES} B per bucket")
    if current.buckets is not None and buckets < current.buckets and not allow_lower:
        left.append(Item("hashsize", buckets, current.buckets,
                         f"kept at the current {current.buckets:,} buckets (one per entry would be {buckets:,}); "
                         "fewer buckets never help; --allow-lower recommends it"))
        buckets = current.buckets
        bucket_reason = f"kept: the current {current.buckets:,} buckets are at least one per entry"
    items.append(Item("hashsize", buckets, current.buckets, bucket_reason))
    tw_now = current.timeouts.get("tcp_timeout_time_wait", sc.table.timeouts.time_wait)
    tw = min(tw_now, TIME_WAIT_RECOMMENDED)
    items.append(Item(
        "net.netfilter.nf_conntrack_tcp_timeout_time_wait", tw, tw_now,
        f"closing entries of restarted sessions stay {tw_now} s (+ up to one ~62 s GC cycle); {tw} s "
        "shortens that plateau and any overflow held by TIME_WAIT; it does not lower the peak, which comes "
        "within about 10 s of the kill (lab: TIME_WAIT 20 s, same peak)"))
    if tw_now <= TIME_WAIT_RECOMMENDED:
        left.append(Item("net.netfilter.nf_conntrack_tcp_timeout_time_wait", TIME_WAIT_RECOMMENDED, tw_now,
                         f"kept at {tw_now} s: already at or below the recommended {TIME_WAIT_RECOMMENDED} s"))
    est_now = current.timeouts.get("tcp_timeout_established", sc.table.timeouts.established)
    items.append(Item(
        "net.netfilter.nf_conntrack_tcp_timeout_established", est_now, est_now,
        "keep: Ceph sessions live for days and may idle; an entry expiring under a live session makes its "
        "next packet a mid-stream pickup (or a drop under a stateful policy)"))
    src = "slabinfo" if current.entry_bytes else "measured on kernel 6.18 (256 B)"
    eb = current.entry_bytes or ENTRY_BYTES_MEASURED
    mem = want * eb + buckets * BUCKET_BYTES
    kube = kube_proxy_max(current.cores)
    cur_over = None if cur_max is None else cur_max < peak
    ceph_share = None
    if current.ceph_entries is not None and current.count:
        ceph_share = current.ceph_entries / max(1, current.count)
    reasons = []
    if want > KUBE_CAP:
        reasons.append(f"the table would need {want:,} entries ({mem / 2**20:,.0f} MiB), beyond kube-proxy's "
                       f"1,048,576 cap where vmalloc fallbacks were reported")
    if ceph_share is not None and ceph_share >= 0.5:
        reasons.append(f"{ceph_share:.0%} of the entries belong to Ceph daemons: untracking the Ceph ports "
                       "removes them and the whole restart burst from the table")
    if peak > 10 * conns.baseline:
        reasons.append("the burst is driven by the lossy-client reconnect loop (peak > 10x baseline): no "
                       "table size is safe against a loop that lasts until the OSDs are marked down")
    untrack = bool(reasons)
    if not reasons:
        reasons.append("a table of this size holds the burst; untracking is still the way to take Ceph out "
                       "of the table's failure mode altogether")
    return Plan(tuple(items), peak, conns.baseline, safety, eb, src, mem, kube, cur_over, untrack,
                "; ".join(reasons), sc.strategy.label(), other_entries=other, left_alone=tuple(left))
