"""`purge`: end an overflow now by deleting closing-state TCP entries.

When the table is full of ASSURED entries the kernel refuses new connections until its GC worker passes
and early-drops TCP entries in closing states (TIME_WAIT, CLOSE, FIN_WAIT, LAST_ACK, CLOSE_WAIT:
`tcp_can_early_drop()`, net/netfilter/nf_conntrack_proto_tcp.c). Those passes come on one ~62 s cycle,
so lab overflows lasted 10-82 s, long enough for the monitor to wrongly mark restarted OSDs down.
Deleting the same entries from user space at the first drop ended the overflow in < 0.4 s
(shared/reference/kernel-conntrack.md §6b). We never touch ESTABLISHED entries unless asked.

One dump; each receive buffer's victims are deleted (by tuple and id) while the kernel is still producing the
next buffers, so the first slots are free within milliseconds even when dumping a full table takes seconds
(`conntrack -D` needed 0.67 s per state on a full table). The dump also frees expired entries that were still
counted; that number is reported too.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import compress
from operator import or_

from ctguard.errors import BadInput
from ctguard.kernel import ctdump
from ctguard.kernel.netns import Netns
from ctguard.kernel.nfnetlink import CLOSING_STATES, TCP_STATES
from ctguard.kernel.settings import conntrack_count
from ctguard.model.roles import OTHER, PortRoles

SCHEMA = 1
PORTS = ("all", "ceph")


@dataclass(frozen=True)
class PurgeResult:
    netns: str
    states: tuple[str, ...]
    ports: str
    matched: int
    deleted: int
    missing: int  # gone before we got to them (expired, or closed and replaced)
    failed: int
    by_state: dict[str, int] = field(default_factory=dict)
    by_role: dict[str, int] = field(default_factory=dict)
    expired_freed: int = 0
    count_before: int = 0
    count_after: int = 0
    seconds: float = 0.0
    first_freed_s: float | None = None  # when the first entries were gone: the overflow ends there
    dry_run: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "netns": self.netns,
            "states": list(self.states),
            "ports": self.ports,
            "dry_run": self.dry_run,
            "matched": self.matched,
            "deleted": self.deleted,
            "missing": self.missing,
            "failed": self.failed,
            "by_state": self.by_state,
            "by_role": self.by_role,
            "expired_freed": self.expired_freed,
            "count_before": self.count_before,
            "count_after": self.count_after,
            "freed": max(0, self.count_before - self.count_after),
            "seconds": round(self.seconds, 4),
            "first_freed_s": None if self.first_freed_s is None else round(self.first_freed_s, 4),
        }


def parse_states(text: str | Iterable[str]) -> tuple[str, ...]:
    """'TIME_WAIT,CLOSE' -> ('TIME_WAIT', 'CLOSE'); 'closing' = every closing state."""
    items = [s.strip().upper() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    out: list[str] = []
    for s in items:
        if s == "CLOSING":
            out += [c for c in CLOSING_STATES if c not in out]
        elif s in TCP_STATES:
            if s not in out:
                out.append(s)
        else:
            raise BadInput(f"unknown TCP conntrack state {s!r} (one of {', '.join(TCP_STATES)} or 'closing')")
    if not out:
        raise BadInput("no states given")
    return tuple(out)


def purge(
    ns: Netns | None = None,
    *,
    states: Iterable[str] = CLOSING_STATES,
    ports: str = "all",
    roles: PortRoles | None = None,
    dry_run: bool = False,
) -> PurgeResult:
    """Delete the TCP entries in `states` (of Ceph ports only with ports='ceph'); report what was freed."""
    states = parse_states(states)
    if ports not in PORTS:
        raise BadInput(f"--ports must be one of {', '.join(PORTS)}, not {ports!r}")
    roles = roles or PortRoles()
    wanted = {TCP_STATES.index(s) for s in states}
    is_ceph = [r != OTHER for r in roles.table()].__getitem__
    t0 = time.perf_counter()
    label = (ns or Netns()).label
    count_before = conntrack_count(ns)
    victims: list[ctdump.Entry] = []
    first_freed: float | None = None
    deleter = None if dry_run else ctdump.Deleter(ns)
    try:
        for batch in ctdump.batches(ns):
            # C-level filters: this runs during an overflow, on a full table.
            rows, lay = batch.rows, batch.layout
            hits = list(compress(rows, map(wanted.__contains__, map(lay.state, rows))))
            if ports == "ceph":
                hits = list(compress(hits, map(or_, map(is_ceph, map(lay.dport, hits)),
                                               map(is_ceph, map(lay.sport, hits)))))
            if not hits:
                continue
            found = lay.entries(hits)
            victims.extend(found)
            if deleter is not None:
                # Delete now, while the kernel dumps the rest: the overflow ends at the first freed slots.
                deleter.delete(found)
                if first_freed is None and deleter.deleted:
                    first_freed = time.perf_counter() - t0
        count_dumped = conntrack_count(ns)
        result = deleter.result if deleter is not None else ctdump.DeleteResult(0, 0, 0)
    finally:
        if deleter is not None:
            deleter.close()
    count_after = conntrack_count(ns)
    role_of = roles.table()
    by_role: Counter[str] = Counter()
    for e in victims:
        r = role_of[e.dport]
        by_role[r if r != OTHER else role_of[e.sport]] += 1
    by_state = Counter(TCP_STATES[e.state] for e in victims)
    return PurgeResult(
        netns=label,
        states=states,
        ports=ports,
        matched=len(victims),
        deleted=result.deleted,
        missing=result.missing,
        failed=result.failed,
        by_state=dict(by_state.most_common()),
        by_role=dict(by_role.most_common()),
        expired_freed=max(0, count_before - count_dumped - result.deleted),
        count_before=count_before,
        count_after=count_after,
        seconds=time.perf_counter() - t0,
        first_freed_s=first_freed,
        dry_run=dry_run,
    )
