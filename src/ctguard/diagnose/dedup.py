"""The same kernel message read from two inputs of one host counts once.

A sosreport holds `var/log/kern.log` (or `messages`) and `sos_commands/kernel/dmesg_-T`; an operator often
passes `journalctl -k -o json` and kern.log together. Each of them has every `table full` and `callbacks
suppressed` line, so adding them up doubles the drops. Two kernel records are the same message when

* they come from different inputs of the same host (an input whose lines name no host, like `dmesg -T`, takes
  the host of the other kernel inputs of its directory when they name exactly one),
* their messages are equal (table full, with the same netns; or the same suppression count), and
* their times agree within the coarser clock's resolution after the constant offset between the two inputs is
  taken off. Resolutions: journald `__REALTIME_TIMESTAMP` and RFC 3339 stamps with a fraction, microseconds;
  BSD syslog (kern.log) and `dmesg -T`, one second (truncated). `dmesg -T` (and raw dmesg placed with
  --boot-time) compute wall time as boot time + uptime, and drift from the wall clock by seconds to minutes on
  a long-running host, so the offset is estimated: the whole number of seconds, within MAX_SKEW, under which
  most records of one input meet a record of the other (suppression counts are nearly unique and pin it;
  ties go to the smallest offset). An offset is only used when at least half of the smaller input's records
  match under it; otherwise the inputs are taken as different events.

The copy from the finer clock is kept (journald, then RFC 3339, then syslog, then dmesg -T), so the evidence
lines and the timeline use the best timestamps.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict

from ctguard.diagnose import model

MAX_SKEW = 300  # seconds of drift between a dmesg -T and the wall clock that we look through
SAMPLE = 200  # records of an input the offset is estimated on
KINDS = (model.TABLE_FULL, model.SUPPRESSED)
_DMESG_X_RE = re.compile(r"^\w+\s*:\s*\w+\s*: ")  # dmesg -x: `kern  :warn  : `


def resolution(text: str) -> tuple[float, bool]:
    """(clock resolution in seconds, whether the clock drifts from wall time) of a kernel record's line."""
    if text.startswith("{"):
        return (1e-6, False)  # journald: microseconds, the wall clock at reception
    text = _DMESG_X_RE.sub("", text, count=1)
    if text.startswith("["):
        # `[Wed Aug  6 15:23:48 2014] ...` (dmesg -T: whole seconds), `[ 8723.214092] ...` (raw dmesg placed by
        # --boot-time): both are boot time + uptime
        return (1.0, True) if text[1:2].isalpha() else (1e-6, True)
    head = text.split(" ", 1)[0]
    if head[:4].isdigit() and ("." in head or "," in head):
        return (1e-6, False)  # RFC 3339 syslog, dmesg --time-format=iso: with a fraction
    return (1.0, False)  # BSD syslog (kern.log), journalctl short: whole seconds


def _key(e: model.Event) -> tuple[str, int, str]:
    return (e.kind, e.count, e.detail)


def _offset(keep: list[model.Event], other: list[model.Event]) -> int | None:
    """The whole-second shift (other - keep) under which most of `other` meets `keep`, or None.

    Scored on the first SAMPLE records of `other` (bounded work on inputs of any size), against the records of
    `keep` within MAX_SKEW of them."""
    sample = sorted(other, key=lambda e: e.ts)[:SAMPLE]
    lo, hi = sample[0].ts - MAX_SKEW - 2, sample[-1].ts + MAX_SKEW + 2
    near = [e for e in keep if lo <= e.ts <= hi]
    at: Counter[tuple[tuple[str, int, str], int]] = Counter((_key(e), int(e.ts // 1)) for e in near)
    by_key: dict[tuple[str, int, str], list[int]] = defaultdict(list)
    for e in near:
        by_key[_key(e)].append(int(e.ts // 1))
    # candidate shifts: from the suppression lines when they pair up (nearly unique counts), else the first few
    pins = [e for e in sample if e.kind == model.SUPPRESSED][:20] or sample[:20]
    cands: set[int] = set()
    for e in pins:
        t = int(e.ts // 1)
        cands.update(t - s for s in by_key.get(_key(e), ()) if abs(t - s) <= MAX_SKEW)
    best, best_score = None, 0
    for d in sorted(cands, key=lambda d: (abs(d), d)):
        score = sum(1 for e in sample if any(at.get((_key(e), int(e.ts // 1) - d + j), 0) for j in (-1, 0, 1)))
        if score > best_score:
            best, best_score = d, score
    if best is None or 2 * best_score < min(len(sample), len(near)):
        return None
    return best


def _matches(keep: list[model.Event], other: list[model.Event], d: int, tol: float) -> set[int]:
    """ids of the records of `other` that are copies of one in `keep` (each record matched at most once)."""
    out: set[int] = set()
    by_key: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for e in keep:
        by_key[_key(e)].append(e.ts)
    for times in by_key.values():
        times.sort()
    used: dict[tuple[str, int, str], int] = defaultdict(int)  # greedy in time order, per message
    for e in sorted(other, key=lambda e: e.ts):
        k = _key(e)
        ts_list = by_key.get(k, [])
        if not ts_list:
            continue
        i = used[k]
        t = e.ts - d
        while i < len(ts_list) and ts_list[i] < t - tol:
            i += 1
        if i < len(ts_list) and abs(ts_list[i] - t) <= tol:
            out.add(id(e))
            i += 1
        used[k] = i
    return out


def _hosts_by_dir(events: list[model.Event]) -> dict[str, str]:
    """source -> host, for inputs whose kernel lines name no host, when the other kernel inputs of their
    directory name exactly one."""
    named: dict[str, set[str]] = defaultdict(set)
    hostless: set[str] = set()
    for e in events:
        if e.host:
            named[os.path.dirname(e.source)].add(e.host)
        else:
            hostless.add(e.source)
    out = {}
    for src in hostless:
        hosts = named.get(os.path.dirname(src), set())
        if len(hosts) == 1:
            out[src] = next(iter(hosts))
    return out


def dedup(events: list[model.Event]) -> tuple[list[model.Event], Counter[str]]:
    """The events without the second copies of kernel records; and per source, how many were dropped."""
    kern = [e for e in events if e.kind in KINDS and e.clock == model.WALL]
    removed: Counter[str] = Counter()
    if not kern or len({e.source for e in kern}) < 2:
        return events, removed
    fill = _hosts_by_dir(kern)
    for e in kern:
        if not e.host and e.source in fill:
            e.host = fill[e.source]
    per: dict[str, dict[str, list[model.Event]]] = defaultdict(lambda: defaultdict(list))
    for e in kern:  # by short host name: a sosreport's directory says `cartman06`, its syslog `cartman06.example.com`
        per[e.host.split(".")[0]][e.source].append(e)
    gone: set[int] = set()
    for host, sources in per.items():
        if not host or len(sources) < 2:
            continue  # (records of an unknown host are never taken for another input's: two hosts can overflow
            # at the same second, and a cluster's hosts often do)
        res = {src: resolution(evs[0].text) for src, evs in sources.items()}
        order = sorted(sources, key=lambda s: (res[s][0], res[s][1], s))  # the finest clock first
        kept: list[model.Event] = list(sources[order[0]])
        kept_res = res[order[0]][0]
        for src in order[1:]:
            other = sources[src]
            d = _offset(kept, other)
            if d is not None:
                tol = max(kept_res, res[src][0]) + (0.5 if d else 0.0)
                dup = _matches(kept, other, d, tol)
                gone |= dup
                removed[src] += len(dup)
                other = [e for e in other if id(e) not in dup]
            kept.extend(other)
            kept_res = max(kept_res, res[src][0])
    if not gone:
        return events, removed
    return [e for e in events if id(e) not in gone], removed
