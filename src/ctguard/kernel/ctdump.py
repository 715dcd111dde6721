"""Dump, and delete from, a namespace's conntrack table over ctnetlink, fast.

One IPCTNL_MSG_CT_GET dump returns every entry of the socket's namespace (the kernel walks the global hash
and skips other namespaces' entries). Walking every nested attribute in Python costs ~5 µs per entry, so the
parser learns a *template* per message shape: messages of one kind (say IPv4 TCP without NAT or helper) have
the same length and the same attribute headers at the same offsets, because ctnetlink_fill_info() emits a
fixed sequence for them (net/netfilter/nf_conntrack_netlink.c). A template is one precompiled struct that
reads every attribute header and every wanted field of such a message in one C call; a message is accepted
by a template only if all of its attribute headers equal the template's, which makes the walk identical, so
the fast path is exact, not a guess. Anything else takes the generic walker (and teaches a new template).

A dump also frees expired entries that are still counted (the kernel reaps what it meets while dumping;
measured: 3,000 expired entries of a 203,000-entry table freed at once, see kernel-conntrack.md §6b).
"""

from __future__ import annotations

import errno
import queue
import socket
import struct
import threading
from collections.abc import Iterable, Iterator
from itertools import repeat
from operator import itemgetter
from typing import NamedTuple

from ctguard.errors import CannotRead
from ctguard.kernel import netns as _netns
from ctguard.kernel import nfnetlink as nl

_GET = nl.msg_type(nl.IPCTNL_MSG_CT_GET)
_NEW = nl.msg_type(nl.IPCTNL_MSG_CT_NEW)
_DELETE = nl.msg_type(nl.IPCTNL_MSG_CT_DELETE)
_HDR = struct.Struct("=IH")
_NLA = struct.Struct("=HH")
_MAX_TEMPLATES = 512


class Entry(NamedTuple):
    """One conntrack entry, as the kernel reported it. Addresses are packed bytes (4 or 16), ports host
    integers, `state` the TCP conntrack state number (nfnetlink.TCP_STATES) or -1 for non-TCP."""

    family: int
    proto: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    rsrc: bytes
    rdst: bytes
    rsport: int
    rdport: int
    status: int
    state: int
    id: int
    zone: int

    @property
    def assured(self) -> bool:
        return bool(self.status & nl.IPS_ASSURED)

    @property
    def state_name(self) -> str | None:
        if self.state < 0:
            return None
        return nl.TCP_STATES[self.state] if self.state < len(nl.TCP_STATES) else f"STATE_{self.state}"


# Field slots of Entry; the parser fills them from attributes found at these paths (types, nested).
_FIELDS: dict[tuple[int, ...], tuple[int, str]] = {
    (nl.CTA_TUPLE_ORIG, nl.CTA_TUPLE_PROTO, nl.CTA_PROTO_NUM): (1, "B"),
    (nl.CTA_TUPLE_ORIG, nl.CTA_TUPLE_IP, nl.CTA_IP_V4_SRC): (2, "4s"),
    (nl.CTA_TUPLE_ORIG, nl.CTA_TUPLE_IP, nl.CTA_IP_V4_DST): (3, "4s"),
    (nl.CTA_TUPLE_ORIG, nl.CTA_TUPLE_IP, nl.CTA_IP_V6_SRC): (2, "16s"),
    (nl.CTA_TUPLE_ORIG, nl.CTA_TUPLE_IP, nl.CTA_IP_V6_DST): (3, "16s"),
    (nl.CTA_TUPLE_ORIG, nl.CTA_TUPLE_PROTO, nl.CTA_PROTO_SRC_PORT): (4, "H"),
    (nl.CTA_TUPLE_ORIG, nl.CTA_TUPLE_PROTO, nl.CTA_PROTO_DST_PORT): (5, "H"),
    (nl.CTA_TUPLE_REPLY, nl.CTA_TUPLE_IP, nl.CTA_IP_V4_SRC): (6, "4s"),
    (nl.CTA_TUPLE_REPLY, nl.CTA_TUPLE_IP, nl.CTA_IP_V4_DST): (7, "4s"),
    (nl.CTA_TUPLE_REPLY, nl.CTA_TUPLE_IP, nl.CTA_IP_V6_SRC): (6, "16s"),
    (nl.CTA_TUPLE_REPLY, nl.CTA_TUPLE_IP, nl.CTA_IP_V6_DST): (7, "16s"),
    (nl.CTA_TUPLE_REPLY, nl.CTA_TUPLE_PROTO, nl.CTA_PROTO_SRC_PORT): (8, "H"),
    (nl.CTA_TUPLE_REPLY, nl.CTA_TUPLE_PROTO, nl.CTA_PROTO_DST_PORT): (9, "H"),
    (nl.CTA_STATUS,): (10, "I"),
    (nl.CTA_PROTOINFO, nl.CTA_PROTOINFO_TCP, nl.CTA_PROTOINFO_TCP_STATE): (11, "B"),
    (nl.CTA_ID,): (12, "I"),
    (nl.CTA_ZONE,): (13, "H"),
}
_NESTED_PATHS = {p[:i] for p in _FIELDS for i in range(1, len(p))}
_SIZES = {"B": 1, "H": 2, "I": 4, "4s": 4, "16s": 16}
_DEFAULTS: tuple[object, ...] = (0, 0, b"", b"", 0, 0, b"", b"", 0, 0, 0, -1, 0, 0)


class Layout:
    """Where each Entry field sits in a row: plain Entry tuples, or the rows a template unpacks straight
    from a receive buffer. Consumers read rows through these getters (C-level, no per-row Python code);
    `complete` layouts carry every field the aggregations read (TCP templates do; UDP/ICMP ones, which lack
    a state or ports, are turned into Entry tuples instead)."""

    __slots__ = ("proto", "state", "status", "src", "dst", "sport", "dport", "src_ep", "dst_ep",
                 "pss", "entry_of", "suffix", "pad")

    def __init__(self, index: tuple[int, ...], entry_of: itemgetter[tuple[object, ...]] | None = None,
                 suffix: tuple[object, ...] = (), pad: tuple[object, ...] = ()) -> None:
        f = dict(zip(Entry._fields, index, strict=True))
        self.proto = itemgetter(f["proto"])
        self.state = itemgetter(f["state"])
        self.status = itemgetter(f["status"])
        self.src = itemgetter(f["src"])
        self.dst = itemgetter(f["dst"])
        self.sport = itemgetter(f["sport"])
        self.dport = itemgetter(f["dport"])
        self.src_ep = itemgetter(f["src"], f["sport"])
        self.dst_ep = itemgetter(f["dst"], f["dport"])
        self.pss = itemgetter(f["proto"], f["state"], f["status"])
        self.entry_of = entry_of  # row -> the Entry field values, in order (None: rows are Entries)
        self.suffix = suffix  # values of trailing fields the rows lack (the zone)
        self.pad = pad  # incomplete rows: turned into Entries (row + pad) before anyone reads them

    def entries(self, rows: Iterable[tuple[object, ...]]) -> list[Entry]:
        if self.entry_of is None:
            return list(rows)  # type: ignore[arg-type]
        if self.pad:
            rows = map(_tuple_add, rows, repeat(self.pad))
        values = map(self.entry_of, rows)
        if self.suffix:
            values = map(_tuple_add, values, repeat(self.suffix))
        return list(map(_tuple_new, repeat(Entry), values))


ENTRY_LAYOUT = Layout(tuple(range(len(Entry._fields))))


class Batch(NamedTuple):
    rows: list[tuple[object, ...]]
    layout: Layout

    def entries(self) -> list[Entry]:
        return self.layout.entries(self.rows)


class Columns(NamedTuple):
    """A receive buffer of `k` IPv4 messages of one complete shape, `size` bytes apart, left as bytes:
    aggregations read its fields as strided columns (`buf[offset::size]`), with no per-entry object at all.
    `offsets` maps Entry slots to byte offsets within a message; `proto` is the template's (checked for
    every message with the headers)."""

    buf: bytes
    k: int
    size: int
    offsets: dict[int, int]
    proto: int
    rows_struct: struct.Struct
    layout: Layout

    def column(self, slot: int, width: int) -> bytes:
        """The field's bytes of every message, contiguous (network byte order)."""
        off = self.offsets[slot]
        if width == 1:
            return self.buf[off::self.size]
        out = bytearray(self.k * width)
        for j in range(width):
            out[j::width] = self.buf[off + j::self.size]
        return bytes(out)

    @property
    def rows(self) -> list[tuple[object, ...]]:
        return list(self.rows_struct.iter_unpack(self.buf))

    def entries(self) -> list[Entry]:
        return self.layout.entries(self.rows)


class _Template(NamedTuple):
    struct: struct.Struct  # covers the whole message, padded to 4 bytes
    headers: tuple[int, ...]
    header_of: itemgetter[tuple[int, ...]]
    fields_of: itemgetter[tuple[object, ...]]  # (row + _DEFAULTS) -> Entry values
    # For buffers made only of this shape: the message's bytes and a mask of its header bytes (compared for
    # a whole buffer at once as big integers), and a struct that reads only the fields.
    image: bytes
    mask: bytes
    fields_struct: struct.Struct
    fields_layout: Layout  # how to read fields_struct rows
    multiples: dict[int, tuple[int, int]]  # k -> (image * k, mask * k) as integers
    offsets: dict[int, int]  # Entry slot -> byte offset of the field in the message


def _walk(buf: bytes, start: int, end: int, path: tuple[int, ...], base: int,
          headers: list[tuple[int, int]], found: dict[int, tuple[int, str]]) -> None:
    a = start
    while a + 4 <= end:
        alen, atype = _NLA.unpack_from(buf, a)
        if alen < 4 or a + alen > end:
            raise CannotRead(f"conntrack dump: malformed attribute (len {alen}) at offset {a - base}")
        headers.append((a - base, (alen << 16) | atype))
        t = atype & nl.NLA_TYPE_MASK
        p = path + (t,)
        spec = _FIELDS.get(p)
        if spec is not None and alen - 4 >= _SIZES[spec[1]]:
            found[spec[0]] = (a + 4 - base, spec[1])
        elif p in _NESTED_PATHS:
            _walk(buf, a + 4, a + alen, p, base, headers, found)
        a += (alen + 3) & ~3


def _generic(buf: bytes, off: int, mlen: int) -> tuple[Entry, _Template | None]:
    """Walk one message; return its entry and a template for messages of the same shape."""
    headers: list[tuple[int, int]] = []
    found: dict[int, tuple[int, str]] = {}
    _walk(buf, off + 20, off + mlen, (), off, headers, found)
    values = list(_DEFAULTS)
    values[0] = buf[off + 16]
    for slot, (rel, fmt) in found.items():
        values[slot] = struct.unpack_from(">" + fmt, buf, off + rel)[0]
    entry = Entry._make(values)
    aligned = (mlen + 3) & ~3
    if off + aligned > len(buf):
        return entry, None
    # The template reads the netlink header (length, type), every attribute header and every field, in
    # offset order, as one big-endian struct (headers are only compared for equality, so their byte order
    # does not matter).
    items: list[tuple[int, str, int]] = [(0, "I", -1), (4, "H", -1), (16, "B", 0)]
    items += [(rel, "I", -1) for rel, _ in headers]  # -1: a header
    items += [(rel, fmt, slot) for slot, (rel, fmt) in found.items()]
    items.sort()
    fmt_parts = [">"]
    pos = 0
    header_idx: list[int] = []
    slot_idx = {}
    for i, (rel, fmt, slot) in enumerate(items):
        if rel < pos:
            return entry, None  # overlapping reads: no template for this odd shape
        if rel > pos:
            fmt_parts.append(f"{rel - pos}x")
        fmt_parts.append(fmt)
        pos = rel + _SIZES[fmt]
        if slot < 0:
            header_idx.append(i)
        else:
            slot_idx[slot] = i
    if pos > aligned:
        return entry, None
    if aligned > pos:
        fmt_parts.append(f"{aligned - pos}x")
    st = struct.Struct("".join(fmt_parts))
    n = len(items)
    # Missing fields come from the defaults appended after the unpacked values.
    getter_idx = tuple(slot_idx.get(s, n + s) for s in range(len(_DEFAULTS)))
    first = st.unpack_from(buf, off)
    hdr_values = tuple(first[i] for i in header_idx)
    mask = bytearray(aligned)
    mask[0:6] = b"\xff" * 6  # nlmsg_len, nlmsg_type
    mask[16] = 0xFF  # nfgen family
    for rel, _ in headers:
        mask[rel:rel + 4] = b"\xff\xff\xff\xff"
    if 1 in found:
        mask[found[1][0]] = 0xFF  # the L4 protocol too: a template's rows all share it
    # The fields-only struct, for whole buffers of this shape.
    fitems = sorted([(16, "B", 0)] + [(rel, fmt, slot) for slot, (rel, fmt) in found.items()])
    fparts = [">"]
    pos = 0
    fslot: dict[int, int] = {}
    for i, (rel, fmt, slot) in enumerate(fitems):
        if rel > pos:
            fparts.append(f"{rel - pos}x")
        fparts.append(fmt)
        pos = rel + _SIZES[fmt]
        fslot[slot] = i
    if aligned > pos:
        fparts.append(f"{aligned - pos}x")
    fn = len(fitems)
    fidx = tuple(fslot.get(s, fn + s) for s in range(len(_DEFAULTS)))
    # Rows can be read as they are when every field but the zone (0 unless zones are in use) is present;
    # otherwise they are completed with the defaults into Entry tuples.
    if all(s in fslot for s in range(13)) and 13 not in fslot:
        flayout = Layout(fidx[:13] + (0,), itemgetter(*fidx[:13]), (0,))
    else:
        flayout = Layout(fidx, itemgetter(*fidx), (), pad=_DEFAULTS)
    return entry, _Template(st, hdr_values, itemgetter(*header_idx), itemgetter(*getter_idx),
                            bytes(buf[off:off + aligned]), bytes(mask), struct.Struct("".join(fparts)), flayout, {},
                            {slot: rel for slot, (rel, _) in found.items()})


_tuple_new = tuple.__new__
_tuple_add = tuple.__add__


class Parser:
    """Parses dump buffers into batches; keeps its learned templates across buffers.

    Fast path: a receive buffer made only of messages of one known shape (the common case: a table of
    IPv4 TCP entries) is unpacked with one `Struct.iter_unpack` and checked header by header in C; its rows
    are handed on as they are, with the template's Layout. Otherwise each message is matched against the
    templates of its length, or walked, into Entry tuples."""

    def __init__(self) -> None:
        self._templates: dict[int, list[_Template]] = {}
        self._count = 0
        self.done = False

    def _uniform(self, buf: bytes, out: list[Batch | Columns]) -> bool:
        mlen = _HDR.unpack_from(buf, 0)[0]
        aligned = (mlen + 3) & ~3
        if mlen < 20 or len(buf) % aligned:
            return False
        k = len(buf) // aligned
        for t in self._templates.get((mlen << 8) | buf[16], ()):
            pair = t.multiples.get(k)
            if pair is None:
                pair = (int.from_bytes(t.image * k, "little"), int.from_bytes(t.mask * k, "little"))
                if len(t.multiples) < 64:
                    t.multiples[k] = pair
            # Every header byte of every message equals the template's: one XOR and one AND on big integers.
            if (int.from_bytes(buf, "little") ^ pair[0]) & pair[1]:
                continue
            lay = t.fields_layout
            if not lay.pad and buf[16] == socket.AF_INET:
                out.append(Columns(buf, k, aligned, t.offsets, buf[t.offsets[1]], t.fields_struct, lay))
                return True
            rows = list(t.fields_struct.iter_unpack(buf))
            if lay.pad:
                out.append(Batch(lay.entries(rows), ENTRY_LAYOUT))  # type: ignore[arg-type]
            else:
                out.append(Batch(rows, lay))
            return True
        return False

    def feed_batches(self, buf: bytes, out: list[Batch | Columns]) -> None:
        if len(buf) >= 20 and self._uniform(buf, out):
            return
        ents: list[Entry] = []
        self.feed(buf, ents)
        if ents:
            out.append(Batch(ents, ENTRY_LAYOUT))  # type: ignore[arg-type]

    def feed(self, buf: bytes, out: list[Entry]) -> None:
        """Per-message parsing into Entry tuples."""
        templates = self._templates
        unpack_hdr = _HDR.unpack_from
        append = out.append
        defaults = _DEFAULTS
        off = 0
        end = len(buf)
        while off + 16 <= end:
            mlen, mtype = unpack_hdr(buf, off)
            if mlen < 16 or off + mlen > end:
                raise CannotRead(f"conntrack dump: malformed netlink message (length {mlen})")
            if mtype == _NEW:
                if mlen < 20:
                    raise CannotRead("conntrack dump: truncated entry message")
                key = (mlen << 8) | buf[off + 16]
                for t in templates.get(key, ()):
                    if off + t.struct.size > end:
                        continue
                    vals = t.struct.unpack_from(buf, off)
                    if t.header_of(vals) == t.headers:
                        append(_tuple_new(Entry, t.fields_of(vals + defaults)))
                        break
                else:
                    entry, tmpl = _generic(buf, off, mlen)
                    append(entry)
                    if tmpl is not None and self._count < _MAX_TEMPLATES:
                        templates.setdefault(key, []).insert(0, tmpl)
                        self._count += 1
            elif mtype == nl.NLMSG_DONE:
                self.done = True
                return
            elif mtype == nl.NLMSG_ERROR:
                err = nl.error_code(buf, off, mlen, "conntrack dump")
                if err:
                    nl.raise_errno(err, "conntrack dump")
            off += (mlen + 3) & ~3


def dump_request(seq: int = 1, family: int = socket.AF_UNSPEC) -> bytes:
    return nl.message(_GET, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, seq, family)


def _last_message_type(buf: bytes) -> int:
    """Type of the buffer's closing NLMSG_DONE (20 bytes) or NLMSG_ERROR, else 0. A hint for the receiver
    thread only: the parser, which walks every message, is authoritative."""
    if len(buf) >= 20 and buf[-20:-16] == b"\x14\x00\x00\x00" and buf[-16] == nl.NLMSG_DONE and buf[-15] == 0:
        return nl.NLMSG_DONE
    if len(buf) >= 36 and _HDR.unpack_from(buf, 0)[1] == nl.NLMSG_ERROR:
        return nl.NLMSG_ERROR
    return 0


def _receiver(sock: socket.socket, q: queue.SimpleQueue[bytes | BaseException | None]) -> None:
    """Receive the dump in a thread: the kernel builds dump messages inside recv(), without the GIL, so it
    works on the next buffer while the parser works on this one (2 cores: ~max(kernel, parse) instead of
    their sum)."""
    try:
        for buf in nl.recv_buffers(sock, "conntrack dump"):
            q.put(buf)
            if _last_message_type(buf):
                break
        q.put(None)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, who raises it
        q.put(e)


def batches(ns: _netns.Netns | None = None, family: int = socket.AF_UNSPEC) -> Iterator[Batch | Columns]:
    """One dump of the table, a receive buffer at a time (bounded memory for huge tables)."""
    with _netns.entered(ns):
        sock = nl.open_socket()
    q: queue.SimpleQueue[bytes | BaseException | None] = queue.SimpleQueue()
    thread = threading.Thread(target=_receiver, args=(sock, q), name="ctdump-recv", daemon=True)
    try:
        sock.send(dump_request(1, family))
        thread.start()
        parser = Parser()
        while True:
            item = q.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            out: list[Batch | Columns] = []
            parser.feed_batches(item, out)
            yield from out
            if parser.done:
                break
        if not parser.done:
            raise CannotRead("conntrack dump: ended without NLMSG_DONE")
    finally:
        sock.close()  # also ends a receiver still waiting in recv()
        thread.join(timeout=5)


def entries(ns: _netns.Netns | None = None, family: int = socket.AF_UNSPEC) -> list[Entry]:
    out: list[Entry] = []
    for b in batches(ns, family):
        out.extend(b.entries())
    return out


def parse_buffers(buffers: Iterable[bytes]) -> list[Entry]:
    """Entries from recorded dump buffers (tests, fuzzing), through the same fast paths as a live dump."""
    parser = Parser()
    out: list[Entry] = []
    for buf in buffers:
        bs: list[Batch | Columns] = []
        parser.feed_batches(buf, bs)
        for b in bs:
            out.extend(b.entries())
        if parser.done:
            break
    return out


# -- delete -------------------------------------------------------------------------------------------------

def _addr_attrs(family: int, src: bytes, dst: bytes) -> bytes:
    if family == socket.AF_INET6:
        return nl.attr(nl.CTA_IP_V6_SRC, src) + nl.attr(nl.CTA_IP_V6_DST, dst)
    return nl.attr(nl.CTA_IP_V4_SRC, src) + nl.attr(nl.CTA_IP_V4_DST, dst)


def delete_message(e: Entry, seq: int) -> bytes:
    """IPCTNL_MSG_CT_DELETE by original tuple, pinned to the entry's id: if the kernel has meanwhile
    replaced the entry by a new one with the same tuple, the id differs and nothing is deleted
    (ctnetlink_del_conntrack() compares CTA_ID, since 2.6.x)."""
    tuple_attr = nl.nested(
        nl.CTA_TUPLE_ORIG,
        nl.nested(nl.CTA_TUPLE_IP, _addr_attrs(e.family, e.src, e.dst)),
        nl.nested(
            nl.CTA_TUPLE_PROTO,
            nl.attr(nl.CTA_PROTO_NUM, bytes((e.proto,))),
            nl.attr(nl.CTA_PROTO_SRC_PORT, struct.pack(">H", e.sport)),
            nl.attr(nl.CTA_PROTO_DST_PORT, struct.pack(">H", e.dport)),
        ),
    )
    body = tuple_attr + nl.attr(nl.CTA_ID, struct.pack(">I", e.id))
    if e.zone:
        body += nl.attr(nl.CTA_ZONE, struct.pack(">H", e.zone))
    return nl.message(_DELETE, nl.NLM_F_REQUEST | nl.NLM_F_ACK, seq, e.family, body)


class DeleteResult(NamedTuple):
    deleted: int
    missing: int  # already gone (expired, or replaced: ENOENT)
    failed: int


class Deleter:
    """A ctnetlink socket for deletes, kept open across calls: `purge` deletes each dump buffer's victims
    while the kernel is still producing the next buffers, so the first slots free up within milliseconds
    instead of after a full-table dump (seconds on a 262,144-entry table)."""

    def __init__(self, ns: _netns.Netns | None = None) -> None:
        with _netns.entered(ns):
            self._sock = nl.open_socket(1 << 20)
        self._seq = 0
        self.deleted = self.missing = self.failed = 0

    def __enter__(self) -> Deleter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    @property
    def result(self) -> DeleteResult:
        return DeleteResult(self.deleted, self.missing, self.failed)

    def delete(self, victims: list[Entry], batch: int = 256) -> None:
        """Delete entries by tuple and id, `batch` messages per send(); count the kernel's acks."""
        sock = self._sock
        for i in range(0, len(victims), batch):
            chunk = victims[i:i + batch]
            msgs = []
            for e in chunk:
                self._seq += 1
                msgs.append(delete_message(e, self._seq))
            sock.send(b"".join(msgs))
            acks = 0
            while acks < len(chunk):
                buf = sock.recv(1 << 20)
                off = 0
                while off + 16 <= len(buf):
                    mlen, mtype = _HDR.unpack_from(buf, off)
                    if mlen < 16:
                        raise CannotRead("conntrack delete: malformed netlink message")
                    if mtype == nl.NLMSG_ERROR:
                        acks += 1
                        err = nl.error_code(buf, off, mlen, "conntrack delete")
                        if err == 0:
                            self.deleted += 1
                        elif err == errno.ENOENT:
                            self.missing += 1
                        elif err in (errno.EPERM, errno.EACCES):
                            nl.raise_errno(err, "conntrack delete")
                        else:
                            self.failed += 1
                    off += (mlen + 3) & ~3


def delete(ns: _netns.Netns | None, victims: list[Entry], batch: int = 256) -> DeleteResult:
    """Delete entries by tuple and id; what the kernel answered for each."""
    if not victims:
        return DeleteResult(0, 0, 0)
    with Deleter(ns) as d:
        d.delete(victims, batch)
        return d.result
