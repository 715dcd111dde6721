"""What the conntrack table is made of: entries by TCP state, protocol, Ceph port role, owning local daemon,
and remote peer. Pure: takes dumped entries and a socket table, never reads the host.

The aggregation runs over hundreds of thousands of entries, so it is done with C-level iteration
(`Counter.update` over `map`/`itemgetter`), never a Python loop per entry: a full 262,144-entry table is
summarised in a few hundred milliseconds on a small VM.

Ownership: an entry belongs to the local process whose socket is one of its endpoints. Outbound
connections are matched on the original source (address, port) against connected local sockets; inbound
ones on the original destination against listening sockets (also after the connection's own socket is gone,
TIME_WAIT or CLOSE: the listening port still names its daemon unambiguously). A connection between two local
processes is attributed once, to the side that connected.
"""

from __future__ import annotations

import ipaddress
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import or_

from ctguard.kernel.ctdump import ENTRY_LAYOUT, Batch, Columns, Entry, Layout
from ctguard.kernel.nfnetlink import IPS_ASSURED, TCP_STATES
from ctguard.kernel.sockets import Process, SocketTable
from ctguard.model.inventory import Inventory, Key, classify_counts
from ctguard.model.roles import MON, OSD, OTHER, ROLES, PortRoles

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 58: "icmpv6", 132: "sctp", 136: "udplite"}
CEPH_PREFIXES = ("osd.", "mon.", "mgr.", "mds.")
TOP_PEERS = 10



@dataclass(frozen=True)
class DaemonEntries:
    name: str
    pid: int | None
    entries: int


@dataclass(frozen=True)
class Peer:
    address: str
    entries: int


@dataclass(frozen=True)
class Breakdown:
    total: int
    assured: int
    by_state: dict[str, int] = field(default_factory=dict)
    by_proto: dict[str, int] = field(default_factory=dict)
    by_role: dict[str, int] = field(default_factory=dict)
    by_daemon: tuple[DaemonEntries, ...] = ()
    unattributed: int = 0
    top_peers: tuple[Peer, ...] = ()
    # the host's connections by role (OSD<->OSD out and in, client, mon/mgr, local, not Ceph): what
    # `simulate`/`plan` take instead of a formula (model/inventory.py)
    inventory: Inventory | None = None

    @property
    def ceph_daemon_entries(self) -> int:
        """Entries held by local Ceph daemons: what a whole-host restart churns."""
        return sum(d.entries for d in self.by_daemon if d.name.startswith(CEPH_PREFIXES))

    def busiest(self, prefix: str = "osd.") -> DaemonEntries | None:
        ds = [d for d in self.by_daemon if d.name.startswith(prefix)]
        return max(ds, key=lambda d: d.entries) if ds else None


def address_text(a: bytes) -> str:
    try:
        return str(ipaddress.ip_address(a))
    except ValueError:
        return a.hex()


class Accumulator:
    """Feed it dump batches; `result()` gives the Breakdown. Memory is bounded by distinct keys: endpoints
    are only counted where they are a local socket's (the socket table is read before the dump)."""

    def __init__(self, roles: PortRoles, sockets: SocketTable, inventory: bool = False) -> None:
        # inventory: also count the Ceph entries by address pair (what `simulate`/`plan` need): one more
        # pass per Ceph entry, so only when asked (status --breakdown, simulate/plan), not for the exporter's
        # or the restart gates' dumps
        self.want_inventory = inventory
        self._role_of = roles.table()
        self.sockets = sockets
        # Endpoints worth counting: connected local sockets (original source of outbound entries) and
        # listening ones (original destination of inbound entries; wildcard listeners on every local address).
        self._connected: dict[tuple[bytes, int], Process] = {}
        self._listening: dict[tuple[bytes, int], Process] = {}
        wildcard: dict[int, Process] = {}
        self._local_remote: Counter[tuple[bytes, int]] = Counter()  # remote ends of connected sockets
        for s in sockets.sockets:
            owner = sockets.owners.get(s.inode)
            if owner is None:
                continue
            if s.listening:
                if s.proto != "tcp":
                    continue
                if any(s.local):
                    self._listening.setdefault((s.local, s.lport), owner)
                else:  # 0.0.0.0 or ::
                    wildcard.setdefault(s.lport, owner)
            else:
                self._connected.setdefault((s.local, s.lport), owner)
        for port, owner in wildcard.items():
            for addr in sockets.local_addrs:
                self._listening.setdefault((addr, port), owner)
        # The same IPv4 endpoints as integers, for the column path (address + port bytes, read natively).
        self._connected_int = {_ep_int(a, p): (a, p) for a, p in self._connected if len(a) == 4}
        self._listening_int = {_ep_int(a, p): (a, p) for a, p in self._listening if len(a) == 4}
        self._is_other = [r == OTHER for r in self._role_of]
        self._code = [_CODE[r] for r in self._role_of]  # 0 not Ceph's, 1 mon, 2 OSD range
        # Ceph entries by (src, dst, sport role, dport role, state): keys are address pairs of Ceph sessions
        # (hosts x clients), never the not-Ceph entries' pairs, so memory stays bounded by the cluster's size
        self.ceph_pairs: Counter[tuple[object, object, int, int, int]] = Counter()
        self.pss: Counter[tuple[int, int, int]] = Counter()
        self.roles: Counter[tuple[str, str]] = Counter()
        self.src_ep: Counter[tuple[bytes, int]] = Counter()
        self.dst_ep: Counter[tuple[bytes, int]] = Counter()
        self.addrs: Counter[bytes] = Counter()
        self.addr_ints: Counter[int] = Counter()  # IPv4 addresses counted by the column path
        self.src_ep_int: Counter[int] = Counter()
        self.dst_ep_int: Counter[int] = Counter()
        self.total = 0

    def feed_batch(self, batch: Batch | Columns) -> None:
        if isinstance(batch, Columns):
            self.feed_columns(batch)
        else:
            self.feed(batch.rows, batch.layout)

    def feed_columns(self, c: Columns) -> None:
        """Count a buffer of IPv4 messages of one shape from strided byte columns: every per-entry step is a
        C-level pass over bytes or machine integers, and no per-entry object is made."""
        k = c.k
        self.total += k
        # (state, assured) pairs as 16-bit integers: state byte, then 1 if the ASSURED bit is set
        # (bit 2 of the big-endian status word's last byte).
        pair = bytearray(2 * k)
        pair[0::2] = c.column(11, 1)
        pair[1::2] = c.buf[c.offsets[10] + 3::c.size].translate(_ASSURED_BIT)
        for v, n in Counter(memoryview(pair).cast("H")).items():
            state, assured = (v & 0xFF, v >> 8) if sys.byteorder == "little" else (v >> 8, v & 0xFF)
            self.pss[(c.proto, state, IPS_ASSURED if assured else 0)] += n
        dports = _ports(c, 5)
        sports = _ports(c, 4)
        r = self._role_of.__getitem__
        for rd, n in Counter(map(r, dports)).items():
            if rd != OTHER:
                self.roles[(rd, OTHER)] += n
        for rs, n in Counter(map(r, compress(sports, map(self._is_other.__getitem__, dports)))).items():
            self.roles[(OTHER, rs)] += n
        src = memoryview(c.column(2, 4)).cast("I")
        dst = memoryview(c.column(3, 4)).cast("I")
        self.addr_ints.update(src)
        self.addr_ints.update(dst)
        if self.want_inventory:
            self._pairs_columns(c, src, dst, sports, dports)
        if self._connected_int:
            self.src_ep_int.update(filter(self._connected_int.__contains__, _endpoints(c, 2, 4)))
        if self._listening_int:
            self.dst_ep_int.update(filter(self._listening_int.__contains__, _endpoints(c, 3, 5)))

    def feed(self, rows: list[Entry] | list[tuple[object, ...]], layout: Layout = ENTRY_LAYOUT) -> None:
        """Count a batch of rows (Entries, or a template's raw rows read through its layout)."""
        r = self._role_of.__getitem__
        self.total += len(rows)
        self.pss.update(map(layout.pss, rows))
        self.roles.update(zip(map(r, map(layout.dport, rows)), map(r, map(layout.sport, rows)), strict=True))
        self.src_ep.update(filter(self._connected.__contains__, map(layout.src_ep, rows)))
        self.dst_ep.update(filter(self._listening.__contains__, map(layout.dst_ep, rows)))
        self.addrs.update(map(layout.src, rows))
        self.addrs.update(map(layout.dst, rows))
        if self.want_inventory:
            code = self._code.__getitem__
            dcode = list(map(code, map(layout.dport, rows)))
            scode = list(map(code, map(layout.sport, rows)))
            idx = list(compress(range(len(rows)), map(or_, dcode, scode)))  # the Ceph entries only
            if idx:
                sel = [rows[i] for i in idx]
                states = [st if p == 6 else _ESTABLISHED for p, st in zip(map(layout.proto, sel),
                                                                          map(layout.state, sel), strict=True)]
                self.ceph_pairs.update(zip(map(layout.src, sel), map(layout.dst, sel), map(scode.__getitem__, idx),
                                           map(dcode.__getitem__, idx), states, strict=True))

    def _pairs_columns(self, c: Columns, src: memoryview, dst: memoryview, sports: memoryview,
                       dports: memoryview) -> None:
        """Ceph entries of a column buffer by (src, dst, roles, state). Few Ceph entries: their indices
        first, so the rest cost three C-level passes; mostly Ceph: one zip over all, filtered (cheaper than
        indexing each column)."""
        code = self._code.__getitem__
        dcode, scode = bytes(map(code, dports)), bytes(map(code, sports))
        mask = bytes(map(or_, dcode, scode))
        n = c.k - mask.count(0)
        if n == 0:
            return
        tcp = c.proto == 6
        if n * 4 > c.k:
            every: Iterable[int] = c.column(11, 1) if tcp else repeat(_ESTABLISHED)
            # not strict: a non-TCP buffer's state is an endless repeat()
            self.ceph_pairs.update(compress(zip(src, dst, scode, dcode, every, strict=False), mask))
            return
        idx = list(compress(range(c.k), mask))
        some: Iterable[int] = map(c.column(11, 1).__getitem__, idx) if tcp else repeat(_ESTABLISHED, len(idx))
        self.ceph_pairs.update(zip(map(src.__getitem__, idx), map(dst.__getitem__, idx),
                                   map(scode.__getitem__, idx), map(dcode.__getitem__, idx), some, strict=True))

    def _top_peers(self) -> tuple[Peer, ...]:
        """Top remote addresses. IPv4 ones are counted as integers (the column path's keys; the row path's
        few are folded in), IPv6 ones as bytes; the two key spaces are disjoint, so their tops merge exactly."""
        v4 = self.addr_ints.copy()
        v6: Counter[bytes] = Counter()
        for a, n in self.addrs.items():
            if len(a) == 4:
                v4[int.from_bytes(a, sys.byteorder)] += n
            else:
                v6[a] = n
        for a in self.sockets.local_addrs:
            if len(a) == 4:
                v4.pop(int.from_bytes(a, sys.byteorder), None)
            else:
                v6.pop(a, None)
        tops = [(n, a.to_bytes(4, sys.byteorder)) for a, n in v4.most_common(TOP_PEERS)]
        tops += [(n, a) for a, n in v6.most_common(TOP_PEERS)]
        tops.sort(key=lambda t: -t[0])
        return tuple(Peer(address_text(a), n) for n, a in tops[:TOP_PEERS])

    def _merge_columns(self) -> None:
        """Fold the column path's endpoint counters (local sockets only: few keys) into the row path's."""
        for e, n in self.src_ep_int.items():
            self.src_ep[self._connected_int[e]] += n
        for e, n in self.dst_ep_int.items():
            self.dst_ep[self._listening_int[e]] += n
        self.src_ep_int.clear()
        self.dst_ep_int.clear()

    def result(self) -> Breakdown:
        self._merge_columns()
        by_state: Counter[str] = Counter()
        by_proto: Counter[str] = Counter()
        assured = 0
        for (proto, state, status), n in self.pss.items():
            by_proto[PROTO_NAMES.get(proto, str(proto))] += n
            if proto == 6:
                by_state[TCP_STATES[state] if 0 <= state < len(TCP_STATES) else f"STATE_{state}"] += n
            if status & IPS_ASSURED:
                assured += n
        by_role: Counter[str] = Counter(dict.fromkeys(ROLES, 0))
        for (rd, rs), n in self.roles.items():
            by_role[rd if rd != OTHER else rs] += n
        daemons, unattributed = self._owners()
        top = self._top_peers()
        inventory = self._inventory(by_role[OTHER]) if self.want_inventory else None
        return Breakdown(
            total=self.total,
            assured=assured,
            by_state=dict(by_state.most_common()),
            by_proto=dict(by_proto.most_common()),
            by_role={k: by_role[k] for k in (MON, OSD, OTHER)},
            by_daemon=daemons,
            unattributed=unattributed,
            top_peers=top,
            inventory=inventory,
        )

    def _inventory(self, not_ceph: int) -> Inventory:
        names = {0: OTHER, 1: MON, 2: OSD}
        counts: Counter[Key] = Counter()
        for (src, dst, sc, dc, st), n in self.ceph_pairs.items():
            a, b = _addr_bytes(src), _addr_bytes(dst)
            state = TCP_STATES[st] if isinstance(st, int) and 0 <= st < len(TCP_STATES) else f"STATE_{st}"
            counts[(a, b, names[sc], names[dc], state)] += n
        return classify_counts(counts, self.sockets.local_addrs, other=not_ceph)

    def _owners(self) -> tuple[tuple[DaemonEntries, ...], int]:
        """Entries per owning process. Loops run over sockets and endpoints, never over entries."""
        per: Counter[Process] = Counter()
        counted_dst: Counter[tuple[bytes, int]] = Counter()  # inbound endpoints already counted from the src side
        remote_of = {(s.local, s.lport): (s.remote, s.rport) for s in self.sockets.sockets if not s.listening}
        for ep, n in self.src_ep.items():
            per[self._connected[ep]] += n
            if ep in remote_of:
                counted_dst[remote_of[ep]] += n
        for ep, n in self.dst_ep.items():
            n -= counted_dst.get(ep, 0)  # a local client's connection, counted already for the client
            if n > 0:
                per[self._listening[ep]] += n
        out = tuple(DaemonEntries(p.name, p.pid, n) for p, n in per.most_common())
        return out, self.total - sum(per.values())


def breakdown(batches: Iterable[Batch | Columns | list[Entry]], sockets: SocketTable,
              roles: PortRoles | None = None, inventory: bool = True) -> Breakdown:
    acc = Accumulator(roles or PortRoles(), sockets, inventory=inventory)
    for b in batches:
        if isinstance(b, Batch | Columns):
            acc.feed_batch(b)
        else:
            acc.feed(b)
    return acc.result()


def _addr_bytes(a: object) -> bytes:
    """An address as the column path (native-order integer) or the row path (bytes) counted it."""
    if isinstance(a, int):
        return a.to_bytes(4, sys.byteorder)
    return bytes(a) if isinstance(a, bytes | bytearray | memoryview) else b""


_CODE = {OTHER: 0, MON: 1, OSD: 2}
_ESTABLISHED = TCP_STATES.index("ESTABLISHED")
_ASSURED_BIT = bytes(1 if b & IPS_ASSURED else 0 for b in range(256))


def _ep_int(addr: bytes, port: int) -> int:
    """An IPv4 endpoint as the column path reads it: address bytes, port big-endian, two zero bytes."""
    return int.from_bytes(addr + port.to_bytes(2, "big") + b"\0\0", sys.byteorder)


def _ports(c: Columns, slot: int) -> memoryview:
    """A port column as native 16-bit integers (the message has them big-endian)."""
    off = c.offsets[slot]
    out = bytearray(2 * c.k)
    if sys.byteorder == "little":
        out[0::2] = c.buf[off + 1::c.size]
        out[1::2] = c.buf[off::c.size]
    else:
        out[0::2] = c.buf[off::c.size]
        out[1::2] = c.buf[off + 1::c.size]
    return memoryview(out).cast("H")


def _endpoints(c: Columns, addr_slot: int, port_slot: int) -> memoryview:
    """(address, port) of every message as one 64-bit integer each, matching _ep_int()."""
    out = bytearray(8 * c.k)
    a, p = c.offsets[addr_slot], c.offsets[port_slot]
    for j in range(4):
        out[j::8] = c.buf[a + j::c.size]
    out[4::8] = c.buf[p::c.size]
    out[5::8] = c.buf[p + 1::c.size]
    return memoryview(out).cast("Q")
