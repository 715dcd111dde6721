"""A small librados client for the lab: keeps sessions open to the OSDs like a production client does, with
a steady stream of 4 KiB writes and reads over a fixed set of objects (so memstore never fills up:
ceph-lab.md pitfall 3), issued at a fixed rate whether or not earlier ops came back, and logs one JSON line
per second, also for the seconds in which nothing completed (docs/lab.md, "Client records").

Runs under the system python3 (Debian's python3-rados), standalone: it imports nothing from ctguard.
    python3 workload.py --conf LAB/ceph.conf --pool labpool --name 0 --log LAB/log/client.0.jsonl

Why asynchronous: a synchronous client that waits for each op is silent while an op hangs, so the seconds in
which the cluster blocked it leave no trace (issue 13: one op waited 26-29 s and the report said 0 s stalled).
Here ops go out through librados aio (`Ioctx.aio_write_full` / `aio_read`, completions called back on
librados' finisher thread) on a fixed schedule; at most --max-outstanding are in flight (default 256, well
under the Objecter's `objecter_inflight_ops` = 1024, so an aio call never blocks the issuing loop on the
Objecter's throttle); ops due while that many are in flight are counted as `throttled`, not issued.
Every op is bounded by `rados osd op timeout` (30 s, set below and in the lab's ceph.conf): the Objecter
cancels a timed-out op with -ETIMEDOUT (src/osdc/Objecter.cc, op_cancel), counted here as a timeout.

One line per wall-clock second `t` (epoch seconds, the second [t, t+1)):
    {"t", "issued", "ops" (completed OK), "errors", "timeouts", "throttled",
     "outstanding" and "oldest_ms" (in flight at t+1, age of the oldest), "worst_ms" (slowest op completed in
     the second), "blocked_ms" (how much of the second some op had been in flight for more than 1 s)}
`blocked_ms` is exact (the union of [issued + 1 s, completed] of every op, clipped to the second), so the
sum over a window is the time during which this client had an op outstanding for more than a second.
About 200 bytes a line: 150 s x 40 clients is ~1.2 MB.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

BLOCKED_AFTER = 1.0  # seconds an op must be outstanding before it counts as blocking the client
OK, ERROR, TIMEOUT = "ok", "error", "timeout"


def outcome(ret: int) -> str:
    """librados completion return value -> ok / timeout (-ETIMEDOUT: `rados osd op timeout`) / error."""
    if ret >= 0:
        return OK
    return TIMEOUT if ret == -errno.ETIMEDOUT else ERROR


def union_length(intervals: list[tuple[float, float]]) -> float:
    total = 0.0
    end = float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


class Book:
    """One client's ops, accounted per second. Times are `time.monotonic()` seconds; `issue` and `close` come
    from the issuing loop, `done` from librados' finisher thread (hence the lock)."""

    def __init__(self, blocked_after: float = BLOCKED_AFTER) -> None:
        self.blocked_after = blocked_after
        self._lock = threading.Lock()
        self._pending: dict[int, float] = {}  # seq -> issue time
        self._done: list[tuple[float, float, str]] = []  # (issued, completed, outcome), not yet accounted
        self._issued = 0
        self._throttled = 0
        self._seq = 0

    def outstanding(self) -> int:
        with self._lock:
            return len(self._pending)

    def issue(self, t: float) -> int:
        with self._lock:
            self._seq += 1
            self._pending[self._seq] = t
            self._issued += 1
            return self._seq

    def throttle(self) -> None:
        with self._lock:
            self._throttled += 1

    def done(self, seq: int, t: float, result: str) -> None:
        with self._lock:
            issued = self._pending.pop(seq, None)
            if issued is not None:
                self._done.append((issued, max(t, issued), result))

    def close(self, wall_second: int, end: float) -> dict[str, Any]:
        """The record of the second that ends at monotonic time `end` (wall clock `wall_second` + 1)."""
        start = end - 1.0
        after = self.blocked_after
        with self._lock:
            this = [d for d in self._done if d[1] < end]
            self._done = [d for d in self._done if d[1] >= end]
            # in flight at `end`: not completed yet, or completed after `end` but before this close ran
            open_at_end = [i for i in self._pending.values() if i < end] + [d[0] for d in self._done if d[0] < end]
            issued, throttled = self._issued, self._throttled
            self._issued = self._throttled = 0
        spans = [(max(start, i + after), c) for i, c, _ in this if c - i > after]
        spans += [(max(start, i + after), end) for i in open_at_end if i + after < end]
        blocked = union_length([(a, min(b, end)) for a, b in spans if min(b, end) > a])
        return {
            "t": wall_second,
            "issued": issued,
            "ops": sum(1 for d in this if d[2] == OK),
            "errors": sum(1 for d in this if d[2] == ERROR),
            "timeouts": sum(1 for d in this if d[2] == TIMEOUT),
            "throttled": throttled,
            "outstanding": len(open_at_end),
            "oldest_ms": round(max((end - i for i in open_at_end), default=0.0) * 1000, 1),
            "worst_ms": round(max((c - i for i, c, _ in this), default=0.0) * 1000, 1),
            "blocked_ms": round(blocked * 1000, 1),
        }


Issue = Callable[[int, Callable[[int], None]], None]  # (op number, on_done(return value)) -> queues the op


def loop(issue: Issue, book: Book, log: TextIO, rate: float, max_outstanding: int,
         stop: Callable[[], bool], clock: Callable[[], float] = time.monotonic,
         wall: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
    """Issue op after op at `rate` per second without waiting for any, close every wall-clock second."""
    offset = wall() - clock()  # wall = monotonic + offset, fixed at start: latencies never see a clock step
    sec = int(clock() + offset)
    end = sec + 1 - offset
    period = 1.0 / rate
    due = clock()
    n = 0
    while not stop():
        now = clock()
        while now >= end:
            log.write(json.dumps(book.close(sec, end)) + "\n")
            sec += 1
            end += 1.0
        if now >= due:
            if book.outstanding() >= max_outstanding:
                book.throttle()
            else:
                seq = book.issue(now)

                def on_done(ret: int, seq: int = seq) -> None:
                    book.done(seq, clock(), outcome(ret))

                try:
                    issue(n, on_done)
                except Exception:  # noqa: BLE001 - rados.Error and friends: the op failed at once
                    book.done(seq, clock(), ERROR)
            n += 1
            due += period
            if now - due > 1.0:  # the machine stalled us: resume the schedule, do not fire a burst
                due = now + period
        sleep(max(0.0, min(due, end) - clock()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conf", required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--name", default="0")
    ap.add_argument("--log", required=True)
    ap.add_argument("--objects", type=int, default=64)
    ap.add_argument("--rate", type=float, default=40.0, help="operations per second")
    ap.add_argument("--max-outstanding", type=int, default=256, help="ops in flight at most")
    ap.add_argument("--op-timeout", type=int, default=30, help="rados osd/mon op timeout, seconds")
    args = ap.parse_args(argv)
    if args.rate <= 0 or args.max_outstanding < 1 or args.objects < 1:
        ap.error("--rate > 0, --max-outstanding >= 1, --objects >= 1")

    import rados

    stopped = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    timeout = str(args.op_timeout)
    cluster = rados.Rados(conffile=args.conf, conf={"rados_osd_op_timeout": timeout, "rados_mon_op_timeout": timeout})
    cluster.connect(timeout=args.op_timeout)
    ioctx = cluster.open_ioctx(args.pool)
    payload = b"x" * 4096
    names = [f"lab-client{args.name}-obj{i}" for i in range(args.objects)]

    def issue(n: int, on_done: Callable[[int], None]) -> None:
        name = names[(n // 2) % len(names)]
        if n % 2 == 0:
            ioctx.aio_write_full(name, payload, oncomplete=lambda c: on_done(c.get_return_value()))
        else:  # read back what was just written (ops to one object are applied in order)
            ioctx.aio_read(name, 4096, 0, oncomplete=lambda c, data: on_done(c.get_return_value()))

    book = Book()
    with open(args.log, "a", buffering=1) as log:
        loop(issue, book, log, args.rate, args.max_outstanding, stopped.is_set)
    if book.outstanding():
        os._exit(0)  # ops still in flight: do not wait up to the op timeout in ioctx/cluster teardown
    ioctx.close()
    cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
