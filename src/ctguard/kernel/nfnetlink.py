"""A minimal nfnetlink (NETLINK_NETFILTER) client for ctnetlink, on the standard library only.

pyroute2 dumps were measured at 4k-20k entries/s, unusable on a full table; this walks only the attributes
ctguard needs. Constants are from the kernel's uapi headers (include/uapi/linux/netfilter/nfnetlink.h,
nfnetlink_conntrack.h, nf_conntrack_tcp.h, nf_conntrack_common.h), stable since 2.6.x unless noted.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

from ctguard.errors import CannotRead, NeedsPrivilege

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1

# enum cntl_msg_types
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
IPCTNL_MSG_CT_GET_STATS_CPU = 4  # since 3.19
IPCTNL_MSG_CT_GET_STATS = 5  # since 3.19

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

# enum ctattr_type
CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_PROTOINFO = 4
CTA_TIMEOUT = 7
CTA_ID = 12
CTA_ZONE = 18
# enum ctattr_tuple / ctattr_ip / ctattr_l4proto
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_TUPLE_ZONE = 3
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_IP_V6_SRC = 3
CTA_IP_V6_DST = 4
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
# enum ctattr_protoinfo / ctattr_protoinfo_tcp
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE = 1

# enum ip_conntrack_status bits
IPS_SEEN_REPLY = 1 << 1
IPS_ASSURED = 1 << 2
IPS_DYING = 1 << 9

# enum tcp_conntrack (uapi nf_conntrack_tcp.h); index = value
TCP_STATES = (
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
)
# The states the kernel's GC early-drops under pressure (net/netfilter/nf_conntrack_proto_tcp.c,
# tcp_can_early_drop(), since 4.10/5.x): the connection is already closing on at least one side.
CLOSING_STATES = ("FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE")

_NLMSGHDR = struct.Struct("=IHHII")
_NLATTR = struct.Struct("=HH")
RCVBUF = 8 << 20


def msg_type(msg: int) -> int:
    return (NFNL_SUBSYS_CTNETLINK << 8) | msg


def attr(atype: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    n = 4 + len(payload)
    return _NLATTR.pack(n, atype) + payload + b"\0" * ((4 - n % 4) % 4)


def nested(atype: int, *children: bytes) -> bytes:
    return attr(atype | NLA_F_NESTED, b"".join(children))


def message(mtype: int, flags: int, seq: int, family: int = socket.AF_UNSPEC, body: bytes = b"",
            res_id: int = 0) -> bytes:
    """nlmsghdr + nfgenmsg(family, NFNETLINK_V0, res_id) + attributes."""
    payload = struct.pack("=BBH", family, 0, socket.htons(res_id)) + body
    return _NLMSGHDR.pack(16 + len(payload), mtype, flags, seq, 0) + payload


def open_socket(rcvbuf: int = RCVBUF) -> socket.socket:
    """A ctnetlink socket bound in the calling thread's current network namespace."""
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    except PermissionError as e:
        raise NeedsPrivilege("ctnetlink needs CAP_NET_ADMIN (run as root)") from e
    except OSError as e:
        raise CannotRead(f"cannot open a netfilter netlink socket: {e.strerror}") from e
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # SO_RCVBUFFORCE (33) lifts net.core.rmem_max for root, so a fast dump is not throttled.
        s.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)
    except OSError:
        pass
    s.bind((0, 0))
    return s


def recv_buffers(sock: socket.socket, what: str, bufsize: int = 1 << 20) -> Iterator[bytes]:
    """Receive buffers of a dump, forever: the caller's parser sees NLMSG_DONE and stops. Netlink never
    splits a message across datagrams, so each buffer holds whole messages."""
    recv = sock.recv
    while True:
        try:
            buf = recv(bufsize)
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                raise CannotRead(f"{what}: the kernel dropped dump messages (ENOBUFS); try again") from e
            raise CannotRead(f"{what}: {e.strerror}") from e
        if not buf:
            raise CannotRead(f"{what}: netlink socket closed")
        yield buf


def error_code(buf: bytes, off: int, mlen: int, what: str) -> int:
    """The errno of an NLMSG_ERROR message (0 for an ACK); raise for a truncated one."""
    if mlen < 20:
        raise CannotRead(f"{what}: truncated netlink error message")
    return -int(struct.unpack_from("=i", buf, off + 16)[0])


def raise_errno(err: int, what: str) -> None:
    if err in (errno.EPERM, errno.EACCES):
        raise NeedsPrivilege(f"{what}: operation not permitted (needs CAP_NET_ADMIN, run as root)")
    raise CannotRead(f"{what}: {os.strerror(err)}")


def attrs(buf: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """{type: (payload_start, payload_end)} of the attributes in buf[start:end] (one level)."""
    out: dict[int, tuple[int, int]] = {}
    a = start
    while a + 4 <= end:
        alen, atype = _NLATTR.unpack_from(buf, a)
        if alen < 4:
            break
        out[atype & NLA_TYPE_MASK] = (a + 4, min(a + alen, end))
        a += (alen + 3) & ~3
    return out
