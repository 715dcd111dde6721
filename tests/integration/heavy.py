"""The machine's lock for runs that squeeze a conntrack table near full: the kernel GC's early drop is global
across namespaces, so two such runs at once disturb each other's results (/work/wt/RULES.md)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

HEAVY_LOCK = "/tmp/ctguard-heavy.lock"  # noqa: S108 - the agreed, well-known lock path


@contextmanager
def heavy_lock() -> Iterator[None]:
    with open(HEAVY_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
