"""Local sockets of a network namespace and the processes that hold them.

/proc/net/{tcp,tcp6,udp,udp6} list the sockets of the reading thread's namespace (addresses in hex, IPv4 as
a little-endian 32-bit word, IPv6 as four of them); /proc/<pid>/fd/* link to `socket:[inode]`. Socket
inodes are global, so a process in any namespace that holds one of these inodes owns that socket.
TIME_WAIT sockets are listed with inode 0: they have no owner any more.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ctguard.errors import CannotRead
from ctguard.kernel import netns as _netns
from ctguard.kernel.procfs import PROC, net_path, proc_path, read_text

TCP_LISTEN = 0x0A
UDP_UNCONN = 0x07
_V4_MAPPED = bytes(10) + b"\xff\xff"


@dataclass(frozen=True)
class Socket:
    proto: str  # "tcp" or "udp"
    local: bytes  # packed address: 4 bytes, or 16 for IPv6 (IPv4-mapped addresses are given as 4)
    lport: int
    remote: bytes
    rport: int
    state: int
    inode: int

    @property
    def listening(self) -> bool:
        return self.state == TCP_LISTEN if self.proto == "tcp" else self.state == UDP_UNCONN


@dataclass(frozen=True)
class Process:
    pid: int
    name: str  # `osd.3` for Ceph daemons, else the command name


@dataclass(frozen=True)
class SocketTable:
    sockets: tuple[Socket, ...] = ()
    owners: dict[int, Process] = field(default_factory=dict)  # inode -> process
    local_addrs: frozenset[bytes] = frozenset()


def _addr(hexaddr: str) -> bytes:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return raw[::-1]
    if len(raw) != 16:
        raise ValueError(hexaddr)
    a = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return a[12:] if a.startswith(_V4_MAPPED) else a


def parse_proc_net(text: str, proto: str) -> list[Socket]:
    """Parse one /proc/net/{tcp,udp}[6] file; malformed lines are skipped."""
    out: list[Socket] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            la, lp = parts[1].split(":")
            ra, rp = parts[2].split(":")
            out.append(Socket(proto, _addr(la), int(lp, 16), _addr(ra), int(rp, 16), int(parts[3], 16),
                              int(parts[9])))
        except ValueError:
            continue
    return out


_CEPH_DAEMONS = {"ceph-osd": "osd", "ceph-mon": "mon", "ceph-mgr": "mgr", "ceph-mds": "mds"}
_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def daemon_name(cmdline: list[str], comm: str) -> str:
    """`ceph-osd -f -i 3` / `--id 3` / `--id=3` / `-n osd.3` / `--name=osd.3` -> `osd.3`; else the command."""
    if not cmdline:
        return comm
    prog = os.path.basename(cmdline[0])
    kind = _CEPH_DAEMONS.get(prog)
    if kind is None:
        return comm or prog
    args = cmdline[1:]
    for i, a in enumerate(args):
        value: str | None = None
        if a in ("-i", "--id", "-n", "--name") and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(("--id=", "--name=")):
            value = a.split("=", 1)[1]
        if value and _ID_RE.match(value):
            if a.startswith(("-n", "--name")):
                return value if "." in value else f"{kind}.{value}"
            return f"{kind}.{value}"
    return prog


def process_name(pid: int, proc_root: str = PROC) -> str:
    try:
        raw = read_text(proc_path(proc_root, str(pid), "cmdline"))
    except CannotRead:
        raw = ""
    try:
        comm = read_text(proc_path(proc_root, str(pid), "comm")).strip()
    except CannotRead:
        comm = ""
    return daemon_name([a for a in raw.split("\0") if a], comm)


def socket_owners(inodes: set[int], proc_root: str = PROC) -> dict[int, Process]:
    """inode -> owning process, for the inodes asked about (first holder found wins)."""
    owners: dict[int, Process] = {}
    if not inodes:
        return owners
    try:
        pids = [int(d) for d in os.listdir(proc_root) if d.isdigit()]
    except OSError as e:
        raise CannotRead(f"{proc_root}: cannot list processes") from e
    for pid in sorted(pids):
        fd_dir = proc_path(proc_root, str(pid), "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to read
            continue
        hits: list[int] = []
        for fd in fds:
            try:
                link = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                try:
                    ino = int(link[8:-1])
                except ValueError:
                    continue
                if ino in inodes and ino not in owners:
                    hits.append(ino)
        if hits:
            proc = Process(pid, process_name(pid, proc_root))
            for ino in hits:
                owners[ino] = proc
    return owners


def parse_fib_trie(text: str) -> set[bytes]:
    """Local IPv4 addresses from /proc/net/fib_trie (`/32 host LOCAL` leaves)."""
    out: set[bytes] = set()
    last: str | None = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|--"):
            last = s[3:].strip()
        elif "/32 host LOCAL" in s and last:
            try:
                out.add(bytes(int(x) for x in last.split(".")))
            except ValueError:
                pass
    return {a for a in out if len(a) == 4}


def parse_if_inet6(text: str) -> set[bytes]:
    out: set[bytes] = set()
    for line in text.splitlines():
        parts = line.split()
        if parts and len(parts[0]) == 32:
            try:
                out.add(bytes.fromhex(parts[0]))
            except ValueError:
                pass
    return out


def socket_table(ns: _netns.Netns | None = None, proc_root: str = PROC) -> SocketTable:
    socks: list[Socket] = []
    local: set[bytes] = set()
    with _netns.entered(ns):
        for name, proto in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
            try:
                socks += parse_proc_net(read_text(net_path(proc_root, name)), proto)
            except CannotRead:
                continue  # e.g. no IPv6
        for name, parse in (("fib_trie", parse_fib_trie), ("if_inet6", parse_if_inet6)):
            try:
                local |= parse(read_text(net_path(proc_root, name)))
            except CannotRead:
                continue
    inodes = {s.inode for s in socks if s.inode}
    return SocketTable(tuple(socks), socket_owners(inodes, proc_root), frozenset(local))
