"""What the lab's librados clients saw during a scenario, from their per-second records (lab/workload.py).

A client line covers the wall-clock second [t, t+1): ops issued, completed OK, failed (errors, timeouts),
throttled, in flight at its end (and the oldest one's age), the slowest op completed in it, and `blocked_ms`:
how much of the second some op of that client had been outstanding for more than 1 s.

The scenario's figures:
* `blocked_s`: per second, the largest `blocked_ms` of any client, summed. With one client it is exactly the
  time during which some op was outstanding for more than 1 s; with several it is a lower bound of that
  union (the records do not say whether two clients' blocked stretches overlap within a second).
* `worst_ms`: the slowest op: completed ones, and ones still in flight when a second ended (an op stuck past
  the window's end counts with the age it had reached).
* `failed_ops` (errors + timeouts), `timeouts`, `ops_per_s` (OK completions of all clients / window length).
* `silent_s`: the window's seconds for which some client wrote no line (a dead or frozen workload); its
  blocked time is unknown for those seconds, never taken as 0 silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientSecond:
    name: str
    t: int
    issued: int = 0
    ops: int = 0
    errors: int = 0
    timeouts: int = 0
    throttled: int = 0
    outstanding: int = 0
    oldest_ms: float = 0.0
    worst_ms: float = 0.0
    blocked_ms: float = 0.0


def parse(lines: Iterable[str], name: str) -> list[ClientSecond]:
    """Workload lines of client `name`; lines that are not a client record are passed over."""
    out = []
    for line in lines:
        try:
            d = json.loads(line)
            out.append(ClientSecond(
                name=name, t=int(d["t"]), issued=int(d.get("issued", 0)), ops=int(d.get("ops", 0)),
                errors=int(d.get("errors", 0)), timeouts=int(d.get("timeouts", 0)),
                throttled=int(d.get("throttled", 0)), outstanding=int(d.get("outstanding", 0)),
                oldest_ms=float(d.get("oldest_ms", 0.0)), worst_ms=float(d.get("worst_ms", 0.0)),
                blocked_ms=float(d.get("blocked_ms", 0.0))))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return out


@dataclass(frozen=True)
class ClientSummary:
    clients: int
    blocked_s: float
    worst_ms: float
    failed_ops: int
    timeouts: int
    ops: int
    ops_per_s: float
    throttled: int
    silent_s: int
    # longest run of whole seconds in which some client had an op in flight and completed nothing
    longest_no_completion_s: int


def summarise(records: Sequence[ClientSecond], start: float, end: float, names: Sequence[str] = ()) -> ClientSummary:
    """The window [start, end) (epoch seconds); a record counts when its second overlaps the window.
    `names`: the clients that should have written (for `silent_s`); default the ones that did."""
    first, last = math.floor(start), math.ceil(end)
    inside = [r for r in records if first <= r.t < last]
    # a second's line is written as it ends: the ones ending in the last half second may not be there yet
    due = [s for s in range(first, last) if s + 1.5 <= end]
    clients = sorted(set(names) | {r.name for r in inside})
    per_second: dict[int, float] = {}
    seen: dict[str, set[int]] = {c: set() for c in clients}
    for r in inside:
        per_second[r.t] = max(per_second.get(r.t, 0.0), r.blocked_ms)
        seen[r.name].add(r.t)
    ops = sum(r.ops for r in inside)
    silent = max((sum(1 for s in due if s not in seen[c]) for c in clients), default=0)
    # no completion while something was in flight, per client, in seconds that follow one another
    longest = 0
    for c in clients:
        run = 0
        prev = None
        for r in sorted((r for r in inside if r.name == c), key=lambda r: r.t):
            stuck = r.ops + r.errors + r.timeouts == 0 and r.outstanding > 0
            run = (run + 1 if prev is not None and r.t == prev + 1 else 1) if stuck else 0
            prev = r.t
            longest = max(longest, run)
    return ClientSummary(
        clients=len(clients),
        blocked_s=round(sum(per_second.values()) / 1000, 1),
        worst_ms=max((max(r.worst_ms, r.oldest_ms) for r in inside), default=0.0),
        failed_ops=sum(r.errors + r.timeouts for r in inside),
        timeouts=sum(r.timeouts for r in inside),
        ops=ops,
        ops_per_s=round(ops / max(1.0, end - start), 1),
        throttled=sum(r.throttled for r in inside),
        silent_s=silent if clients else 0,
        longest_no_completion_s=longest,
    )
