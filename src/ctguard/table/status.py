"""`status`: the table of one namespace now, with a verdict. Counters only by default (~1 ms at any table
size); with `breakdown=True` one netlink dump says what the entries are and who holds them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ctguard.errors import CannotRead, CtguardError, NeedsPrivilege
from ctguard.kernel import ctdump
from ctguard.kernel.netns import HOST, Netns, exec_argv, inode
from ctguard.kernel.procfs import PROC
from ctguard.kernel.settings import conntrack_count, conntrack_settings
from ctguard.kernel.sockets import socket_table
from ctguard.kernel.stats import conntrack_stats
from ctguard.model.breakdown import Accumulator, Breakdown
from ctguard.model.roles import PortRoles
from ctguard.model.verdict import Thresholds, verdict
from ctguard.runner import run
from ctguard.table import sample as _sample

SCHEMA = 1


@dataclass(frozen=True)
class BreakdownReading:
    breakdown: Breakdown
    expired_freed: int  # entries the dump freed: expired but still counted until then (a lower bound)
    seconds: float


@dataclass(frozen=True)
class TableStatus:
    netns: str
    inode: int | None
    count: int
    max: int
    buckets: int | None
    hashsize: int | None
    stats: dict[str, int]
    stats_source: str
    timeouts: dict[str, int]
    tracking: bool | None
    verdict: str
    reasons: tuple[str, ...]
    drop_delta: int | None
    since_s: float | None
    breakdown: BreakdownReading | None
    notes: tuple[str, ...] = ()

    @property
    def fill(self) -> float:
        return self.count / self.max if self.max > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "netns": self.netns,
            "inode": self.inode,
            "count": self.count,
            "max": self.max,
            "free": max(0, self.max - self.count),
            "buckets": self.buckets,
            "hashsize": self.hashsize,
            "fill": round(self.fill, 6),
            "stats": dict(self.stats),
            "stats_source": self.stats_source,
            "timeouts": dict(self.timeouts),
            "tracking": self.tracking,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "drop_delta": self.drop_delta,
            "since_s": None if self.since_s is None else round(self.since_s, 3),
            "notes": list(self.notes),
        }
        if self.breakdown is not None:
            b = self.breakdown.breakdown
            doc["breakdown"] = {
                "total": b.total,
                "assured": b.assured,
                "by_state": b.by_state,
                "by_proto": b.by_proto,
                "by_role": b.by_role,
                "by_daemon": [{"name": d.name, "pid": d.pid, "entries": d.entries} for d in b.by_daemon],
                "unattributed": b.unattributed,
                "ceph_daemon_entries": b.ceph_daemon_entries,
                "top_peers": [{"address": p.address, "entries": p.entries} for p in b.top_peers],
                "inventory": None if b.inventory is None else b.inventory.as_dict(),
                "expired_freed": self.breakdown.expired_freed,
                "dump_seconds": round(self.breakdown.seconds, 4),
            }
        return doc


def read_breakdown(ns: Netns | None = None, roles: PortRoles | None = None,
                   proc_root: str = PROC, inventory: bool = False) -> BreakdownReading:
    """One dump of the table, summarised (needs CAP_NET_ADMIN)."""
    t0 = time.perf_counter()
    sockets = socket_table(ns, proc_root)  # first: the dump is then counted against known local endpoints
    before = conntrack_count(ns, proc_root)
    acc = Accumulator(roles or PortRoles(), sockets, inventory=inventory)
    for batch in ctdump.batches(ns):
        acc.feed_batch(batch)
    after = conntrack_count(ns, proc_root)
    b = acc.result()
    return BreakdownReading(b, max(0, before - after), time.perf_counter() - t0)


def tracking_active(ns: Netns | None) -> bool | None:
    """Does any rule in the namespace use conntrack? A namespace tracks nothing until one does (an nft `ct`
    expression, an xt conntrack/state match or a NAT rule; measured on 6.18, kernel-conntrack.md §1).
    None when we cannot tell (tools missing or not allowed)."""
    prefix = exec_argv(ns)
    seen_tool = False
    for argv, needles in (
        (["nft", "list", "ruleset"], (" ct ", "\tct ", "masquerade", "snat", "dnat", " nat ")),
        (["iptables-save"], ("-m conntrack", "-m state", "-j MASQUERADE", "-j SNAT", "-j DNAT", "-j CT ")),
        (["iptables-legacy-save"], ("-m conntrack", "-m state", "-j MASQUERADE", "-j SNAT", "-j DNAT")),
    ):
        try:
            done = run(prefix + argv, timeout=10)
        except CtguardError:  # missing tool or no answer: try the next one
            continue
        if not done.ok:
            continue
        seen_tool = True
        text = " " + done.stdout.replace("\n", " \n ")
        if any(n in text for n in needles):
            return True
    return False if seen_tool else None


def table_status(
    ns: Netns | None = None,
    *,
    breakdown: bool = False,
    roles: PortRoles | None = None,
    inventory: bool = False,
    state_dir: str | None = _sample.DEFAULT_STATE_DIR,
    proc_root: str = PROC,
    window: float = 0.0,
    thresholds: Thresholds | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> TableStatus:
    ns = ns or HOST
    notes: list[str] = []
    settings = conntrack_settings(ns, proc_root)
    stats = conntrack_stats(ns, proc_root)
    if stats.source == "procfs" and proc_root == PROC:
        notes.append("counters from /proc/net/stat/nf_conntrack (netlink needs CAP_NET_ADMIN)")
    try:
        ino: int | None = inode(ns)
    except CannotRead:
        ino = None

    drop_delta: int | None = None
    since: float | None = None
    now = clock()
    if window > 0:
        sleep(window)
        later = conntrack_stats(ns, proc_root)
        drop_delta = later.get("drop") - stats.get("drop")
        since = window
        stats = later
        settings = conntrack_settings(ns, proc_root)
        now = clock()
    elif state_dir is not None and ino is not None:
        prev = _sample.load(state_dir, ns.label, ino)
        if prev is not None:
            drop_delta = max(0, stats.get("drop") - prev.drop)
            since = max(0.0, now - prev.ts)
        else:
            notes.append("no previous sample: drops since the last sample unknown (next run compares)")
    if state_dir is not None and ino is not None:
        if not _sample.save(state_dir, ns.label, _sample.Sample(now, ino, stats.get("drop"))):
            notes.append(f"cannot write the sample to {state_dir} (not root?)")

    tracking: bool | None = None
    if settings.count == 0 and not any(stats.counters.values()) and proc_root == PROC:
        tracking = tracking_active(ns)

    reading: BreakdownReading | None = None
    if breakdown and tracking is not False:
        try:
            reading = read_breakdown(ns, roles, proc_root, inventory=inventory)
        except NeedsPrivilege:
            notes.append("breakdown needs CAP_NET_ADMIN (run as root): not shown")

    ceph_entries = reading.breakdown.ceph_daemon_entries if reading is not None else None
    if reading is None and tracking is not False and settings.count > 0:
        notes.append("restart headroom not checked (needs --breakdown)")
    v = verdict(settings.count, settings.max, drop_delta, ceph_entries, thresholds, tracking)
    return TableStatus(
        netns=ns.label,
        inode=ino,
        count=settings.count,
        max=settings.max,
        buckets=settings.buckets,
        hashsize=settings.hashsize,
        stats=dict(stats.counters),
        stats_source=stats.source,
        timeouts=dict(settings.timeouts),
        tracking=tracking,
        verdict=v.level,
        reasons=v.reasons,
        drop_delta=drop_delta,
        since_s=since,
        breakdown=reading,
        notes=tuple(notes),
    )
