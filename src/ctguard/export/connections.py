"""Who keeps a connection to the exporter when there are too many: the admission policy, pure and clocked.

A plain accept-or-refuse cap lets anyone blind the exporter: 16 idle connections (half of them with an
unfinished request header) blocked every new scrape for the 600 s idle timeout. Here a new connection is
always admitted unless every slot is busy answering; to make room, the connection idle longest is closed,
choosing first among connections that never completed a request (idle or half-open ones), then among
scrapers by their last answer. So a scraper that keeps scraping keeps its connection, which matters most
when the table is full and no new connection can be made (its SYN is dropped).

A per-source cap keeps one address from holding every slot: at the cap, the new connection replaces that
address's own longest-idle connection (the same order), never someone else's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(eq=False)
class Conn:
    source: str
    opened: float
    last_done: float  # when its last response was sent; `opened` until then
    kill: Callable[[], None] = field(default=lambda: None, repr=False)
    busy: bool = False  # a whole request has been read and is being answered
    proven: bool = False  # it completed an authorised request (it is a scraper)
    requests: int = 0
    closed: bool = False
    evicted: bool = False


@dataclass(frozen=True)
class Admission:
    admit: bool
    evict: Conn | None = None
    reason: str = ""  # "", "cap" or "source_cap"


def victim(conns: Iterable[Conn]) -> Conn | None:
    """The connection to close first: not busy; never-proven before proven; idle longest first."""
    idle = [c for c in conns if not c.busy]
    return min(idle, key=lambda c: (c.proven, c.last_done)) if idle else None


def admit(conns: list[Conn], source: str, max_total: int, max_per_source: int) -> Admission:
    mine = [c for c in conns if c.source == source]
    if len(mine) >= max_per_source:
        v = victim(mine)
        return Admission(v is not None, v, "source_cap")
    if len(conns) >= max_total:
        v = victim(conns)
        return Admission(v is not None, v, "cap")
    return Admission(True)


class Connections:
    """The live connections, under one lock. `kill` of an evicted connection runs under the lock (a
    shutdown(2): quick, and it cannot race with the owning thread closing the socket)."""

    def __init__(self, max_total: int, max_per_source: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_total, self.max_per_source, self.clock = max_total, max_per_source, clock
        self._conns: list[Conn] = []
        self._lock = threading.Lock()
        self.opened = 0
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._conns)

    def snapshot(self) -> list[Conn]:
        with self._lock:
            return list(self._conns)

    def open(self, source: str, kill: Callable[[], None]) -> Conn | None:
        now = self.clock()
        with self._lock:
            a = admit(self._conns, source, self.max_total, self.max_per_source)
            if not a.admit:
                self.refused += 1
                return None
            if a.evict is not None:
                self._drop(a.evict)
                a.evict.evicted = True
                self.evicted += 1
                a.evict.kill()
            c = Conn(source, now, now, kill)
            self._conns.append(c)
            self.opened += 1
            return c

    def set_kill(self, c: Conn, kill: Callable[[], None]) -> bool:
        """Point `kill` at a new socket object (after a TLS wrap); False if `c` was closed meanwhile."""
        with self._lock:
            c.kill = kill
            return not c.closed

    def begin(self, c: Conn) -> bool:
        """A whole request has been read: from now on `c` is not evicted until `done`. False if it already was."""
        with self._lock:
            if c.closed:
                return False
            c.busy = True
            return True

    def done(self, c: Conn, proven: bool) -> None:
        with self._lock:
            c.busy = False
            c.requests += 1
            c.proven = c.proven or proven
            c.last_done = self.clock()

    def close(self, c: Conn) -> None:
        with self._lock:
            self._drop(c)

    def _drop(self, c: Conn) -> None:
        if not c.closed:
            c.closed = True
            self._conns.remove(c)
