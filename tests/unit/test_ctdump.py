"""The ctnetlink dump parser on recorded kernel output, and fuzzed: the template fast path must give exactly
what the generic walker gives, and garbage must end in CannotRead, never another exception."""

from __future__ import annotations

import os
import socket
import struct
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctguard.errors import CannotRead
from ctguard.kernel import ctdump
from ctguard.kernel import nfnetlink as nl

HERE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "netlink")


def recorded() -> list[bytes]:
    with open(os.path.join(HERE, "dump.bin"), "rb") as f:
        data = f.read()
    out, off = [], 0
    while off < len(data):
        n = struct.unpack_from("=I", data, off)[0]
        out.append(data[off + 4:off + 4 + n])
        off += 4 + n
    return out


def generic(bufs: list[bytes]) -> list[ctdump.Entry]:
    out = []
    for b in bufs:
        off = 0
        while off + 16 <= len(b):
            mlen, mtype = struct.unpack_from("=IH", b, off)
            if mlen < 16 or off + mlen > len(b):
                raise CannotRead("bad")
            if mtype == nl.NLMSG_DONE:
                return out
            if mtype == (1 << 8):
                out.append(ctdump._generic(b, off, mlen)[0])
            off += (mlen + 3) & ~3
    return out


def test_recorded_dump() -> None:
    es = ctdump.parse_buffers(recorded())
    assert len(es) == 9
    assert Counter((e.family, e.state_name) for e in es) == {
        (socket.AF_INET, "ESTABLISHED"): 3, (socket.AF_INET, "TIME_WAIT"): 1,
        (socket.AF_INET6, "ESTABLISHED"): 3, (socket.AF_INET6, "TIME_WAIT"): 1, (socket.AF_INET, None): 1}
    tcp = [e for e in es if e.proto == 6]
    assert all(e.dport == 6800 and e.rsport == 6800 and e.assured for e in tcp)
    assert all(e.src == e.dst == (b"\x7f\0\0\x01" if e.family == 2 else bytes(15) + b"\x01") for e in tcp)
    udp = [e for e in es if e.proto == 17][0]
    assert udp.dport == 5555 and not udp.assured and udp.state == -1
    assert es == generic(recorded())


def test_template_fast_path_on_uniform_buffers() -> None:
    bufs = recorded()
    tcp4 = [m for m in _messages(bufs[0]) if m[16] == socket.AF_INET and m[52] == 6]
    uniform = b"".join(tcp4) * 50
    p = ctdump.Parser()
    out: list[ctdump.Entry] = []
    p.feed(tcp4[0], out)  # learn
    p.feed(uniform, out)
    assert out[1:] == generic([uniform])
    assert len(out) == 1 + 50 * len(tcp4)


def _messages(buf: bytes) -> list[bytes]:
    out, off = [], 0
    while off + 16 <= len(buf):
        mlen, mtype = struct.unpack_from("=IH", buf, off)
        if mtype == nl.NLMSG_DONE:
            break
        out.append(buf[off:off + ((mlen + 3) & ~3)])
        off += (mlen + 3) & ~3
    return out


def test_delete_message_layout() -> None:
    e = ctdump.parse_buffers(recorded())[0]
    msg = ctdump.delete_message(e, 7)
    mlen, mtype, flags, seq = struct.unpack_from("=IHHI", msg, 0)
    assert mlen == len(msg) and mtype == (1 << 8) | nl.IPCTNL_MSG_CT_DELETE and seq == 7
    assert flags == nl.NLM_F_REQUEST | nl.NLM_F_ACK and msg[16] == e.family
    top = nl.attrs(msg, 20, len(msg))
    assert set(top) == {nl.CTA_TUPLE_ORIG, nl.CTA_ID}
    a, b = top[nl.CTA_ID]
    assert struct.unpack(">I", msg[a:b])[0] == e.id


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_garbage_is_cannot_read(data: bytes) -> None:
    try:
        ctdump.parse_buffers([data])
    except CannotRead:
        pass


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_recordings_parse_exactly_or_fail_cleanly(data: st.DataObject) -> None:
    buf = bytearray(recorded()[0])
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    b = bytes(buf)
    try:
        fast = ctdump.parse_buffers([b, b])  # the second pass runs on learned templates
    except CannotRead:
        return
    try:
        slow = generic([b, b])
    except CannotRead:
        pytest.fail("the fast path accepted what the walker rejects")
    assert fast == slow


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_uniform_buffers_parse_exactly(data: st.DataObject) -> None:
    """The whole-buffer fast path (big-integer header check + fields-only struct) must agree with the walker
    on any mutation, or hand the buffer to the per-message path, which must agree too."""
    tcp4 = [m for m in _messages(recorded()[0]) if m[16] == socket.AF_INET and m[52] == 6]
    buf = bytearray(b"".join(tcp4) * 5)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    b = bytes(buf)
    p = ctdump.Parser()
    learned: list[ctdump.Entry] = []
    p.feed(tcp4[0], learned)
    out: list[ctdump.Batch] = []
    try:
        p.feed_batches(b, out)
    except CannotRead:
        return
    fast = [e for batch in out for e in batch.entries()]
    try:
        slow = generic([b])
    except CannotRead:
        pytest.fail("the fast path accepted what the walker rejects")
    assert fast == slow


def _column_vs_rows(buf: bytes, tcp4: list[bytes]) -> None:
    from ctguard.kernel.sockets import Process, Socket, SocketTable
    from ctguard.model.breakdown import breakdown

    p = ctdump.Parser()
    p.feed(tcp4[0], [])
    out: list[ctdump.Batch | ctdump.Columns] = []
    try:
        p.feed_batches(buf, out)
    except CannotRead:
        return
    rows = generic([buf])
    lo = b"\x7f\0\0\x01"
    first = rows[0]
    socks = SocketTable(
        sockets=(Socket("tcp", lo, 6800, bytes(4), 0, 0x0A, 1), Socket("tcp", first.src, first.sport, lo, 6800, 1, 2)),
        owners={1: Process(10, "osd.1"), 2: Process(11, "osd.2")},
        local_addrs=frozenset({lo}),
    )
    assert breakdown(out, socks) == breakdown([rows], socks)
    assert [e for b in out for e in b.entries()] == rows


def test_column_path_equals_row_path() -> None:
    tcp4 = [m for m in _messages(recorded()[0]) if m[16] == socket.AF_INET and m[52] == 6]
    buf = b"".join(tcp4) * 40
    p = ctdump.Parser()
    p.feed(tcp4[0], [])
    out: list[ctdump.Batch | ctdump.Columns] = []
    p.feed_batches(buf, out)
    assert isinstance(out[0], ctdump.Columns)
    _column_vs_rows(buf, tcp4)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_column_path_equals_row_path_on_mutations(data: st.DataObject) -> None:
    tcp4 = [m for m in _messages(recorded()[0]) if m[16] == socket.AF_INET and m[52] == 6]
    buf = bytearray(b"".join(tcp4) * 6)
    for _ in range(data.draw(st.integers(1, 12))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    _column_vs_rows(bytes(buf), tcp4)
