"""Lab daemons as plain processes: started in their namespace with a private UTS namespace, found again by
PID file or by scanning /proc, stopped by PID only after checking their command line names this lab.

Daemons run in the foreground (`-f`), so the PID we start is the daemon (ceph-lab.md pitfall 14: a
daemonizing ceph double-forks, is reparented to PID 1 and lingers as a zombie after SIGKILL). `ip netns exec`
and `unshare` exec in place, and so does the tiny hostname shim, so the PID never changes. A process another
command started is reparented to PID 1 when that command exits: we cannot wait(2) for it, so "gone" means no
/proc entry or a zombie (state Z/X), not `kill -0`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence

from ctguard.kernel.procfs import PROC

# Sets the hostname inside the fresh UTS namespace, then becomes the daemon (execvp keeps the PID).
_HOSTNAME_SHIM = "import os,socket,sys; socket.sethostname(sys.argv[1]); os.execvp(sys.argv[2], sys.argv[2:])"

_children: dict[int, subprocess.Popen[bytes]] = {}


def daemon_argv(ns: str, hostname: str, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` inside netns `ns` with its own UTS namespace whose hostname is `hostname`
    (`ip netns exec` changes only the network and mount namespaces: ceph-lab.md pitfall 10)."""
    return ["ip", "netns", "exec", ns, "unshare", "--uts", "--",
            sys.executable, "-I", "-S", "-c", _HOSTNAME_SHIM, hostname, *argv]


def spawn(ns: str, hostname: str, argv: Sequence[str], log_path: str) -> int:
    """Start a long-running process in its own session (a Ctrl-C of the CLI must not reach it), stdout and
    stderr appended to log_path. Returns its PID; this process can wait for it while it lives."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - argument list; long-running, so not runner.run
            daemon_argv(ns, hostname, argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    return proc.pid


def cmdline(pid: int, proc_root: str = PROC) -> list[str]:
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def state(pid: int, proc_root: str = PROC) -> str | None:
    """The one-letter state of /proc/PID/stat, None when there is no such process."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the comm field may hold spaces and parentheses: the state follows the last ')'
    rest = raw[raw.rfind(")") + 1:].split()
    return rest[0] if rest else None


def alive(pid: int, proc_root: str = PROC) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    st = state(pid, proc_root)
    return st is not None and st not in ("Z", "X")


def belongs(pid: int, marker: str, proc_root: str = PROC) -> bool:
    """The process's argv names `marker` (this lab's ceph.conf path) as a whole argument."""
    return marker in cmdline(pid, proc_root)


def netns_inode(pid: int, proc_root: str = PROC) -> int | None:
    try:
        return os.stat(os.path.join(proc_root, str(pid), "ns", "net")).st_ino
    except OSError:
        return None


def scan(marker: str | None, netns_inodes: Iterable[int] = (), proc_root: str = PROC,
         me: int | None = None) -> list[int]:
    """PIDs of live processes whose argv has `marker`, or that live in one of `netns_inodes` (our lab's
    namespaces: anything in there was started for the lab). Never this process or its ancestors."""
    inodes = set(netns_inodes)
    skip = {me if me is not None else os.getpid(), os.getppid(), 1}
    found: list[int] = []
    try:
        names = os.listdir(proc_root)
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in skip:
            continue
        st = state(pid, proc_root)
        if st is None or st in ("Z", "X"):
            continue
        if (marker is not None and belongs(pid, marker, proc_root)) or (
            inodes and netns_inode(pid, proc_root) in inodes
        ):
            found.append(pid)
    return sorted(found)


def signal_pid(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def wait_gone(pids: Iterable[int], timeout: float, clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> list[int]:
    """Wait until every PID has exited (reaping our own children); return those still alive at the end."""
    left = set(pids)
    deadline = clock() + timeout
    while left:
        for pid in list(left):
            child = _children.get(pid)
            if child is not None:
                if child.poll() is not None:
                    _children.pop(pid, None)
                    left.discard(pid)
            elif not alive(pid):
                left.discard(pid)
        if not left or clock() >= deadline:
            break
        sleep(0.02)
    return sorted(left)


def stop(pids: Sequence[int], marker: str | None, sig: int = signal.SIGTERM, timeout: float = 30.0) -> list[int]:
    """Signal the PIDs that still belong to this lab (argv has `marker`; None: no check), wait, and SIGKILL
    what is left after `timeout`. Returns the PIDs that were signalled."""
    mine = [p for p in pids if alive(p) and (marker is None or belongs(p, marker))]
    for p in mine:
        signal_pid(p, sig)
    left = wait_gone(mine, timeout)
    for p in left:
        signal_pid(p, signal.SIGKILL)
    wait_gone(left, 10.0)
    return mine
