"""Fill a namespace's conntrack table with entries of a chosen kind, from raw packets.

Only ASSURED entries can overflow a table: unreplied UDP or bare SYNs are evicted by early_drop() when the
table is full (net/netfilter/nf_conntrack_core.c, early_drop() skips IPS_ASSURED entries). So the filler
forges both directions of a handshake: a packet out to 198.19.x.y and a spoofed reply from 198.19.x.y that
is delivered locally. The namespace must route 198.19.0.0/16 to a sink and drop those spoofed replies on
input (`ip saddr 198.19.0.0/16 drop`), or the local stack answers them with RSTs. `Testbed` sets that up.

Modes: `tcp-est` (ESTABLISHED, ASSURED), `tcp-tw` (TIME_WAIT, ASSURED), `udp-assured` (UDP stream, ASSURED),
`udp` (UNREPLIED, evictable), `syn` (SYN_SENT, evictable).
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from ctguard.errors import BadInput
from ctguard.kernel import netns as _netns

MODES = ("tcp-est", "tcp-tw", "udp-assured", "udp", "syn")
SYN, ACK, FIN = 0x02, 0x10, 0x01
FILL_NET = "198.19.0.0/16"


@dataclass(frozen=True)
class FillResult:
    mode: str
    requested: int
    packets: int
    send_errors: int
    seconds: float


def _ip(src: bytes, dst: bytes, proto: int, plen: int) -> bytes:
    # tot_len, id and checksum are filled in by the kernel for IP_HDRINCL sockets
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + plen, 0, 0x4000, 64, proto, 0, src, dst)


def _tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int) -> bytes:
    return _ip(src, dst, 6, 20) + struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)


def _udp(src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    return _ip(src, dst, 17, 9) + struct.pack("!HHHH", sport, dport, 9, 0) + b"x"


def peer(i: int, base_port: int = 10000) -> tuple[bytes, int]:
    """The i-th distinct remote endpoint: 65,534 hosts of 198.19.0.0/16 times successive ports."""
    h = (i % 65534) + 1
    return bytes((198, 19, h >> 8, h & 255)), base_port + i // 65534


def fill(
    mode: str,
    count: int,
    src: str,
    ns: _netns.Netns | None = None,
    sport: int = 40000,
    base_port: int = 10000,
    start: int = 0,
) -> FillResult:
    """Create up to `count` entries of `mode` from local address `src` inside `ns`. Packets refused by a full
    table are counted in `send_errors` (EPERM from the full namespace) and the fill goes on."""
    if mode not in MODES:
        raise BadInput(f"unknown fill mode {mode!r} (one of {', '.join(MODES)})")
    if count < 0:
        raise BadInput("fill count must be >= 0")
    s = socket.inet_aton(src)
    t0 = time.perf_counter()
    sent = errors = 0
    with _netns.entered(ns):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        send = raw.sendto

        def out(pkt: bytes, dst: bytes) -> None:
            nonlocal sent, errors
            try:
                send(pkt, (socket.inet_ntoa(dst), 0))
                sent += 1
            except OSError:
                errors += 1

        rng = range(start, start + count)
        if mode == "udp":
            for i in rng:
                d, p = peer(i, base_port)
                out(_udp(s, d, sport, p), d)
        elif mode == "syn":
            for i in rng:
                d, p = peer(i, base_port)
                out(_tcp(s, d, sport, p, 1000, 0, SYN), d)
        elif mode == "tcp-est":
            for i in rng:
                d, p = peer(i, base_port)
                out(_tcp(s, d, sport, p, 1000, 0, SYN), d)
                out(_tcp(d, s, p, sport, 5000, 1001, SYN | ACK), s)
                out(_tcp(s, d, sport, p, 1001, 5001, ACK), d)
        elif mode == "tcp-tw":
            for i in rng:
                d, p = peer(i, base_port)
                out(_tcp(s, d, sport, p, 1000, 0, SYN), d)
                out(_tcp(d, s, p, sport, 5000, 1001, SYN | ACK), s)
                out(_tcp(s, d, sport, p, 1001, 5001, ACK), d)
                out(_tcp(s, d, sport, p, 1001, 5001, FIN | ACK), d)
                out(_tcp(d, s, p, sport, 5001, 1002, ACK), s)
                out(_tcp(d, s, p, sport, 5001, 1002, FIN | ACK), s)
                out(_tcp(s, d, sport, p, 1002, 5002, ACK), d)
        else:  # udp-assured: a replied flow still active > 2 s after creation becomes ASSURED
            for i in rng:
                d, p = peer(i, base_port)
                out(_udp(s, d, sport, p), d)
                out(_udp(d, s, p, sport), s)
            time.sleep(2.1)
            for i in rng:
                d, p = peer(i, base_port)
                out(_udp(s, d, sport, p), d)
    finally:
        raw.close()
    return FillResult(mode, count, sent, errors, time.perf_counter() - t0)
