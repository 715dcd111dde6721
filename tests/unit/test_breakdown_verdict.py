"""The pure parts: breakdown aggregation, verdict rules, purge state parsing."""

from __future__ import annotations

import pytest

from ctguard.errors import BadInput
from ctguard.kernel.ctdump import Entry
from ctguard.kernel.sockets import Process, Socket, SocketTable
from ctguard.model.breakdown import breakdown
from ctguard.model.roles import PortRoles, parse_range
from ctguard.model.verdict import Thresholds, verdict
from ctguard.table.purge import parse_states

HOST = bytes((198, 18, 0, 11))
PEER = bytes((198, 18, 0, 12))
ASSURED = 0x0E


def tcp(src: bytes, sport: int, dst: bytes, dport: int, state: int = 3, status: int = ASSURED) -> Entry:
    return Entry(2, 6, src, dst, sport, dport, dst, src, dport, sport, status, state, 1, 0)


def test_breakdown_roles_states_owners() -> None:
    osd = Process(100, "osd.0")
    mon = Process(200, "mon.a")
    socks = SocketTable(
        sockets=(
            Socket("tcp", bytes(4), 6800, bytes(4), 0, 0x0A, 11),  # osd.0 listens on *:6800
            Socket("tcp", HOST, 3300, bytes(4), 0, 0x0A, 12),  # mon.a listens on HOST:3300
            Socket("tcp", HOST, 40000, PEER, 6801, 0x01, 13),  # osd.0 -> peer OSD
            Socket("tcp", HOST, 40001, HOST, 3300, 0x01, 14),  # osd.0 -> local mon (loopback-style)
        ),
        owners={11: osd, 12: mon, 13: osd, 14: osd},
        local_addrs=frozenset({HOST}),
    )
    entries = [
        tcp(PEER, 50000, HOST, 6800),  # inbound to osd.0
        tcp(PEER, 50001, HOST, 6800, state=7),  # inbound, TIME_WAIT, socket gone: still osd.0 by its port
        tcp(HOST, 40000, PEER, 6801),  # outbound from osd.0
        tcp(HOST, 40001, HOST, 3300),  # osd.0 -> local mon: counted once, for osd.0
        tcp(PEER, 50002, HOST, 3300),  # inbound to mon.a
        tcp(HOST, 45000, PEER, 22, state=7),  # outbound ssh, socket gone: unattributed
        Entry(2, 17, HOST, PEER, 5000, 53, PEER, HOST, 53, 5000, 0x08, -1, 2, 0),  # udp, not assured
    ]
    b = breakdown([entries[:3], entries[3:]], socks, PortRoles())
    assert b.total == 7 and b.assured == 6
    assert b.by_state == {"ESTABLISHED": 4, "TIME_WAIT": 2}
    assert b.by_proto == {"tcp": 6, "udp": 1}
    assert b.by_role == {"ceph-mon": 2, "ceph-osd": 3, "other": 2}
    assert {d.name: d.entries for d in b.by_daemon} == {"osd.0": 4, "mon.a": 1}
    assert b.unattributed == 2 and b.ceph_daemon_entries == 5
    assert b.top_peers[0].address == "198.18.0.12" and b.top_peers[0].entries == 6
    assert b.busiest() is not None and b.busiest().name == "osd.0"  # type: ignore[union-attr]


def test_role_falls_back_to_source_port_for_midstream_pickups() -> None:
    b = breakdown([[tcp(HOST, 6800, PEER, 51000)]], SocketTable())
    assert b.by_role["ceph-osd"] == 1


@pytest.mark.parametrize(
    ("count", "drops", "ceph", "level"),
    [
        (100, 0, 10, "OK"),
        (100, 3, 10, "CRIT"),
        (960, 0, None, "CRIT"),
        (760, 0, None, "WARN"),
        (700, None, 400, "WARN"),  # a doubling of 400 does not fit in 300 free
        (700, None, 300, "OK"),
    ],
)
def test_verdict(count: int, drops: int | None, ceph: int | None, level: str) -> None:
    v = verdict(count, 1000, drops, ceph)
    assert v.level == level
    assert (level == "OK") == (not v.reasons)


def test_verdict_thresholds_and_inactive() -> None:
    assert verdict(500, 1000, 0, None, Thresholds(warn_fill=0.4)).level == "WARN"
    v = verdict(0, 1000, None, None, tracking=False)
    assert v.level == "OK" and "nothing to overflow" in v.reasons[0]


def test_parse_states() -> None:
    assert parse_states("time_wait, CLOSE") == ("TIME_WAIT", "CLOSE")
    assert "LAST_ACK" in parse_states("closing")
    with pytest.raises(BadInput):
        parse_states("TIMEWAIT")
    with pytest.raises(BadInput):
        parse_states("")


def test_port_roles() -> None:
    r = PortRoles(osd_range=parse_range("6800:7300"))
    assert (r.role(3300), r.role(6789), r.role(7300), r.role(7301)) == ("ceph-mon", "ceph-mon", "ceph-osd", "other")
    with pytest.raises(BadInput):
        parse_range("7000-6000")
    with pytest.raises(BadInput):
        PortRoles(osd_range=(0, 10))
