"""File reads from /proc and /sys behind an injectable root (psutil's `proc_root` seam).

Tests point `proc_root` at a checked-in fake tree (tests/fixtures/proc/...). On a live host the default is
`/proc`; network files are then read through `/proc/thread-self/net`, because `/proc/net` follows the
namespace of the thread-group leader, not of a thread that entered another namespace with setns(2).
"""

from __future__ import annotations

import errno
import os

from ctguard.errors import CannotRead, NeedsPrivilege

PROC = "/proc"
SYS = "/sys"
NETFILTER = "sys/net/netfilter"


def proc_path(proc_root: str, *parts: str) -> str:
    return os.path.join(proc_root, *parts)


def net_path(proc_root: str, *parts: str) -> str:
    """Path of a per-netns file under <proc>/net."""
    if os.path.realpath(proc_root) == PROC:
        return os.path.join(PROC, "thread-self", "net", *parts)
    return os.path.join(proc_root, "net", *parts)


def netfilter_path(proc_root: str, name: str) -> str:
    return os.path.join(proc_root, NETFILTER, name)


def read_text(path: str) -> str:
    """The whole file; CannotRead/NeedsPrivilege with a one-line reason instead of OSError."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except FileNotFoundError as e:
        raise CannotRead(f"{path}: no such file") from e
    except PermissionError as e:
        raise NeedsPrivilege(f"{path}: permission denied (needs root)") from e
    except OSError as e:
        raise CannotRead(f"{path}: {os.strerror(e.errno or errno.EIO)}") from e


def read_int(path: str) -> int:
    text = read_text(path).strip()
    try:
        return int(text.split()[0])
    except (ValueError, IndexError) as e:
        raise CannotRead(f"{path}: expected an integer, got {text[:40]!r}") from e


def optional_int(path: str) -> int | None:
    """An integer file that may be absent or unreadable (e.g. root-only), as None."""
    try:
        return read_int(path)
    except CannotRead:
        return None
