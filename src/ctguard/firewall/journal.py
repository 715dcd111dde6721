"""The apply journal: one JSON file per target namespace under <state-dir>/notrack/, written atomically
(temp file, fsync, rename) before and after every change, so a crash at any point leaves enough on disk to
put the firewall back: the snapshot taken before the change, and the exact undo.

Status: applying -> pending (waiting for `confirm`) -> confirmed | rolled-back; removed; failed.
A lock file (flock) serialises the CLI, the watchdog and the lab helper on one namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from typing import Any

from ctguard.errors import CannotRead
from ctguard.kernel.netns import Netns
from ctguard.statefile import read_json, write_json

DEFAULT_STATE_DIR = "/var/lib/ctguard"
SCHEMA = 1


def key(ns: Netns) -> str:
    if ns.name is not None:
        return "netns-" + re.sub(r"[^A-Za-z0-9_.-]", "_", ns.name)
    if ns.pid is not None:
        return f"pid-{ns.pid}"
    return "host"


def directory(state_dir: str) -> str:
    d = os.path.join(state_dir, "notrack")
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
    except OSError as e:
        raise CannotRead(f"cannot create state directory {d}: {e.strerror}") from e
    return d


def path(state_dir: str, ns: Netns) -> str:
    return os.path.join(directory(state_dir), key(ns) + ".json")


def read(p: str) -> dict[str, Any] | None:
    return read_json(p, "journal")


def write(p: str, doc: dict[str, Any]) -> None:
    doc = dict(doc)
    doc["schema"] = SCHEMA
    write_json(p, doc, durable=True, indent=1, sort_keys=True)


@contextlib.contextmanager
def locked(p: str) -> Iterator[None]:
    fd = os.open(p + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock
