"""conntrack's per-namespace counters (drop, early_drop, insert_failed, ...), summed over CPUs.

From ctnetlink (IPCTNL_MSG_CT_GET_STATS_CPU, kernel >= 3.19) when we may open the socket, else from
/proc/net/stat/nf_conntrack (hex, one row per possible CPU, world-readable). In the procfs file the first
column `entries` is the namespace-wide count repeated on every CPU row: never sum it. Several procfs
columns (found, new, delete, insert, ignore) are kept for compatibility and no longer maintained (always 0
on 6.x). The counters are cumulative and survive `conntrack -F`: consumers compute deltas.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from ctguard.errors import CannotRead, NeedsPrivilege
from ctguard.kernel import netns as _netns
from ctguard.kernel import nfnetlink as nl
from ctguard.kernel.procfs import PROC, net_path, read_text

# The counters ctguard reports, in a stable order.
COUNTERS = (
    "drop",
    "early_drop",
    "insert_failed",
    "invalid",
    "found",
    "insert",
    "search_restart",
    "clash_resolve",
    "chaintoolong",
    "error",
)

# enum ctattr_stats_cpu (uapi nfnetlink_conntrack.h) -> our names
_CTA_STATS_CPU = {
    2: "found",
    4: "invalid",
    8: "insert",
    9: "insert_failed",
    10: "drop",
    11: "early_drop",
    12: "error",
    13: "search_restart",
    14: "clash_resolve",  # since 5.15
    15: "chaintoolong",  # since 5.15
}
# /proc/net/stat/nf_conntrack column names -> our names (older kernels have fewer columns)
_PROC_COLUMNS = {
    "found": "found",
    "invalid": "invalid",
    "insert": "insert",
    "insert_failed": "insert_failed",
    "drop": "drop",
    "early_drop": "early_drop",
    "icmp_error": "error",
    "error": "error",
    "search_restart": "search_restart",
    "clashres": "clash_resolve",
    "clash_resolve": "clash_resolve",
    "chaintoolong": "chaintoolong",
}


@dataclass(frozen=True)
class ConntrackStats:
    source: str  # "netlink" or "procfs"
    counters: dict[str, int] = field(default_factory=dict)
    cpus: int = 0
    entries: int | None = None  # only the procfs file carries it

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)


def parse_proc_stat(text: str, path: str = "/proc/net/stat/nf_conntrack") -> ConntrackStats:
    """Parse the procfs stat file: a header line of column names, then one hex row per CPU."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise CannotRead(f"{path}: empty file")
    header = lines[0]
    if not header or header[0] != "entries" or any(not c.isidentifier() for c in header):
        raise CannotRead(f"{path}: unknown format (header {' '.join(header[:4])!r}...)")
    totals = dict.fromkeys(COUNTERS, 0)
    rows = 0
    entries: int | None = None
    for row in lines[1:]:
        if len(row) != len(header):
            raise CannotRead(f"{path}: row with {len(row)} columns under a header of {len(header)}")
        try:
            values = [int(v, 16) for v in row]
        except ValueError as e:
            raise CannotRead(f"{path}: not a hex number in {' '.join(row[:3])!r}...") from e
        rows += 1
        if entries is None:
            entries = values[0]  # repeated on every row: take it once
        for name, v in zip(header, values, strict=True):
            key = _PROC_COLUMNS.get(name)
            if key is not None:
                totals[key] += v
    if rows == 0:
        raise CannotRead(f"{path}: no CPU rows")
    return ConntrackStats("procfs", totals, rows, entries)


def proc_stats(ns: _netns.Netns | None = None, proc_root: str = PROC) -> ConntrackStats:
    with _netns.entered(ns):
        path = net_path(proc_root, "stat", "nf_conntrack")
        return parse_proc_stat(read_text(path), path)


def parse_stats_cpu(buffers: list[bytes]) -> ConntrackStats:
    """Sum the per-CPU messages of an IPCTNL_MSG_CT_GET_STATS_CPU dump."""
    totals = dict.fromkeys(COUNTERS, 0)
    cpus = 0
    want = nl.msg_type(nl.IPCTNL_MSG_CT_GET_STATS_CPU)
    for buf in buffers:
        off, end = 0, len(buf)
        while off + 16 <= end:
            mlen, mtype = struct.unpack_from("=IH", buf, off)
            if mlen < 16 or off + mlen > end:
                raise CannotRead("conntrack stats: malformed netlink message")
            if mtype == want:
                cpus += 1
                for atype, (a, b) in nl.attrs(buf, off + 20, off + mlen).items():
                    name = _CTA_STATS_CPU.get(atype)
                    if name is not None and b - a >= 4:
                        totals[name] += struct.unpack_from(">I", buf, a)[0]
            off += (mlen + 3) & ~3
    return ConntrackStats("netlink", totals, cpus)


def _read_dump(sock: socket.socket, what: str) -> list[bytes]:
    out: list[bytes] = []
    for buf in nl.recv_buffers(sock, what, 1 << 16):
        off, end = 0, len(buf)
        while off + 16 <= end:
            mlen, mtype = struct.unpack_from("=IH", buf, off)
            if mlen < 16:
                raise CannotRead(f"{what}: malformed netlink message")
            if mtype == nl.NLMSG_DONE:
                out.append(buf[:off])
                return out
            if mtype == nl.NLMSG_ERROR:
                err = nl.error_code(buf, off, mlen, what)
                if err:
                    nl.raise_errno(err, what)
            off += (mlen + 3) & ~3
        out.append(buf)
    raise CannotRead(f"{what}: the dump ended without NLMSG_DONE")


def netlink_stats(ns: _netns.Netns | None = None) -> ConntrackStats:
    with _netns.entered(ns):
        sock = nl.open_socket(1 << 16)
    try:
        sock.send(nl.message(nl.msg_type(nl.IPCTNL_MSG_CT_GET_STATS_CPU), nl.NLM_F_REQUEST | nl.NLM_F_DUMP, 1))
        return parse_stats_cpu(_read_dump(sock, "conntrack stats"))
    finally:
        sock.close()


def conntrack_stats(
    ns: _netns.Netns | None = None, proc_root: str = PROC, netlink: bool = True
) -> ConntrackStats:
    """Counters from netlink, falling back to procfs when netlink is not allowed (not root) or absent."""
    if netlink and proc_root == PROC:
        try:
            return netlink_stats(ns)
        except (NeedsPrivilege, CannotRead):
            pass
    return proc_stats(ns, proc_root)
