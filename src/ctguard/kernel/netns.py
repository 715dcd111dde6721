"""Network namespaces: name or PID to a namespace file, and a short-lived setns(2) into it.

conntrack is per network namespace (its count, entries and counters; the limit `nf_conntrack_max` is global),
so every reading can target another namespace. We enter it with setns(2) on the namespace file, do the
reading (open files, create netlink sockets: both stay bound to the namespace they were made in), and always
return to where we were, even on error. Python 3.11 has no os.setns, hence ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ctguard.errors import BadInput, NeedsPrivilege

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"  # where `ip netns add NAME` bind-mounts its namespaces

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        if err == 1:  # EPERM
            raise NeedsPrivilege("entering a network namespace needs CAP_SYS_ADMIN (run as root)")
        raise OSError(err, os.strerror(err))


@dataclass(frozen=True)
class Netns:
    """A network namespace as the user named it: `ip netns` NAME, or the PID of a process inside it."""

    name: str | None = None
    pid: int | None = None

    @property
    def path(self) -> str:
        if self.name is not None:
            if "/" in self.name or self.name in (".", ".."):
                raise BadInput(f"bad namespace name {self.name!r}")
            return os.path.join(NETNS_RUN_DIR, self.name)
        if self.pid is not None:
            return f"/proc/{self.pid}/ns/net"
        return "/proc/self/ns/net"

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        if self.pid is not None:
            return f"pid:{self.pid}"
        return "host"

    @property
    def is_current(self) -> bool:
        return self.name is None and self.pid is None


HOST = Netns()


def inode(ns: Netns = HOST) -> int:
    """The namespace's inode: the number the kernel prints in `table full in netns N`."""
    try:
        return os.stat(ns.path).st_ino
    except FileNotFoundError as e:
        raise BadInput(f"no network namespace {ns.label!r} ({ns.path} does not exist)") from e
    except PermissionError as e:
        raise NeedsPrivilege(f"{ns.path}: permission denied (needs root)") from e


@contextmanager
def entered(ns: Netns | None) -> Iterator[None]:
    """Run the body inside `ns` (the calling thread only), then come back. None or HOST: no change."""
    if ns is None or ns.is_current:
        yield
        return
    try:
        target = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise BadInput(f"no network namespace {ns.label!r} ({ns.path} does not exist)") from e
    except PermissionError as e:
        raise NeedsPrivilege(f"{ns.path}: permission denied (needs root)") from e
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)
        os.close(target)


def exec_argv(ns: Netns | None) -> list[str]:
    """Prefix that runs a command inside `ns` (for external tools such as nft or conntrack)."""
    if ns is None or ns.is_current:
        return []
    if ns.name is not None:
        return ["ip", "netns", "exec", ns.name]
    return ["nsenter", f"--net=/proc/{ns.pid}/ns/net", "--"]
