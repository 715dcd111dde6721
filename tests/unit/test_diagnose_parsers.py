"""Every kernel and Ceph log shape diagnose reads, line by line: real lines (the 2014 incident, kernel 6.18 as
measured in kernel-conntrack.md, a Ceph 16.2.15 lab) and the shapes of the Ceph/kernel sources."""

from __future__ import annotations

import calendar
import json

import pytest

from ctguard.diagnose import ceph, model
from ctguard.diagnose.clock import Clock, parse_tz
from ctguard.diagnose.lines import SKIPPED, SourceCtx, parse_line
from ctguard.errors import BadInput

CTX = SourceCtx(source="t.log", clock=Clock(year=2014))
T = calendar.timegm((2014, 8, 6, 15, 23, 48, 0, 0, 0))


def ev(line: str, ctx: SourceCtx = CTX) -> model.Event:
    got = parse_line(line, 7, ctx)
    assert isinstance(got, model.Event), (line, got)
    return got


# --- kernel: every envelope -------------------------------------------------------------------------------
KERNEL_SHAPES = [
    # kern.log / syslog, with the kernel's own [secs] inside (the incident's line, single-space day)
    ("Aug 6 15:23:48 cartman06 kernel: [12713575.554784] nf_conntrack: table full, dropping packet", T, "cartman06"),
    ("Aug  6 15:23:48 cartman06 kernel: nf_conntrack: table full, dropping packet", T, "cartman06"),
    # RFC 3339 syslog (rsyslog high precision)
    ("2014-08-06T15:23:48.250000+00:00 cartman06 kernel: [12713575.554784] nf_conntrack: table full, dropping packet",
     T + 0.25, "cartman06"),
    # journalctl -k -o short-iso (old and new offset spelling), and short-iso-precise in another zone
    ("2014-08-06T15:23:48+0000 cartman06 kernel: nf_conntrack: table full, dropping packet", T, "cartman06"),
    ("2014-08-06T17:23:48.5+02:00 cartman06 kernel: nf_conntrack: table full, dropping packet", T + 0.5, "cartman06"),
    # journalctl -k (short): like syslog, zero-padded day
    ("Aug 06 15:23:48 cartman06 kernel: nf_conntrack: table full, dropping packet", T, "cartman06"),
    # dmesg -T and dmesg --time-format=iso (no host)
    ("[Wed Aug  6 15:23:48 2014] nf_conntrack: table full, dropping packet", T, ""),
    ("2014-08-06T15:23:48,250000+00:00 nf_conntrack: table full, dropping packet", T + 0.25, ""),
    # dmesg -x (facility and level)
    ("kern  :warn  : [Wed Aug  6 15:23:48 2014] nf_conntrack: table full, dropping packet", T, ""),
]


@pytest.mark.parametrize(("line", "ts", "host"), KERNEL_SHAPES)
def test_kernel_shapes(line: str, ts: float, host: str) -> None:
    e = ev(line)
    assert (e.kind, e.daemon, e.host, e.clock) == (model.TABLE_FULL, "kernel", host, model.WALL)
    assert e.ts == pytest.approx(ts)
    assert e.line_no == 7 and e.source == "t.log" and e.text == line


def test_journal_json_kernel_and_binary_message() -> None:
    rec = {"__REALTIME_TIMESTAMP": str(int(T * 1e6) + 554784), "_HOSTNAME": "cartman06", "_TRANSPORT": "kernel",
           "SYSLOG_IDENTIFIER": "kernel", "PRIORITY": "4",
           "MESSAGE": "nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet"}
    e = ev(json.dumps(rec))
    assert (e.kind, e.host, e.detail) == (model.TABLE_FULL, "cartman06", "4026532177")
    assert e.ts == pytest.approx(T + 0.554784)
    rec["MESSAGE"] = list(b"net_ratelimit: 4990 callbacks suppressed\xff")  # journald's byte-array form
    e = ev(json.dumps(rec))
    assert (e.kind, e.count) == (model.SUPPRESSED, 4990)


def test_raw_dmesg_is_on_the_boot_clock_unless_anchored() -> None:
    line = "[ 8723.214092] nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet"
    e = ev(line)
    assert (e.clock, e.ts, e.detail) == (model.BOOT, pytest.approx(8723.214092), "4026532177")
    anchored = SourceCtx(source="d", clock=Clock(), boot_time=1_000_000.0)
    e = ev(line, anchored)
    assert (e.clock, e.ts) == (model.WALL, pytest.approx(1_008_723.214092))


@pytest.mark.parametrize(("msg", "kind", "count", "detail"), [
    ("nf_conntrack: table full, dropping packet", model.TABLE_FULL, 1, ""),
    ("nf_conntrack: nf_conntrack: table full, dropping packet", model.TABLE_FULL, 1, ""),
    ("nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet", model.TABLE_FULL, 1, "4026532177"),
    ("ip_conntrack: table full, dropping packet.", model.TABLE_FULL, 1, ""),
    ("net_ratelimit: 149990 callbacks suppressed", model.SUPPRESSED, 149990, "net_ratelimit"),
    ("__ratelimit: 12 callbacks suppressed", model.SUPPRESSED, 12, "__ratelimit"),
])
def test_kernel_messages(msg: str, kind: str, count: int, detail: str) -> None:
    e = ev(f"[ 8755.832058] {msg}")
    assert (e.kind, e.count, e.detail) == (kind, count, detail)


@pytest.mark.parametrize("line", [
    "[ 8755.832058] e1000e: eth0 NIC Link is Up 1000 Mbps Full Duplex",
    "Aug  6 15:23:48 cartman06 kernel: [12713575.554784] TCP: request_sock_TCP: Possible SYN flooding on port 6800",
    "Aug  6 15:23:48 cartman06 CRON[123]: (root) CMD (true)",
    "Aug  6 15:23:48 cartman06 kernel: printk: some_other_ratelimit_thing: 4 callbacks suppressed_not",
])
def test_other_kernel_and_syslog_lines_are_ignored(line: str) -> None:
    assert parse_line(line, 1, CTX) is None


@pytest.mark.parametrize("line", [
    "", "\x00\x01\x02 table full", "garbage table full, dropping packet", "Foo 99 99:99:99 x kernel: table full",
    "2014-13-45T99:99:99+0000 host kernel: nf_conntrack: table full, dropping packet",
    '{"MESSAGE": "nf_conntrack: table full, dropping packet"}', "{not json", "[ 12.5",
    "Aug  6 15:23:4",  # truncated
])
def test_garbage_and_truncated_lines_are_skipped(line: str) -> None:
    assert parse_line(line, 1, CTX) is SKIPPED


def test_year_and_zone_for_lines_without_them() -> None:
    berlin = SourceCtx(source="t", clock=Clock(year=2014, tz=parse_tz("Europe/Berlin")))
    assert ev("Aug  6 17:23:48 h kernel: nf_conntrack: table full, dropping packet", berlin).ts == T
    plus2 = SourceCtx(source="t", clock=Clock(year=2014, tz=parse_tz("+02:00")))
    assert ev("2014-08-06 17:23:48.000000 7f92f25a8700 -1 osd.3 1 heartbeat_check: no reply from osd.12 since",
              plus2).ts == T
    # no --year: this year, or last year when that would be in the future (a December log read in January)
    jan = calendar.timegm((2015, 1, 2, 0, 0, 0, 0, 0, 0))
    ctx = SourceCtx(source="t", clock=Clock(now=jan))
    assert ev("Dec 31 23:00:00 h kernel: nf_conntrack: table full, dropping packet", ctx).ts == calendar.timegm(
        (2014, 12, 31, 23, 0, 0, 0, 0, 0))
    assert ev("Jan  1 23:00:00 h kernel: nf_conntrack: table full, dropping packet", ctx).ts == calendar.timegm(
        (2015, 1, 1, 23, 0, 0, 0, 0, 0))


@pytest.mark.parametrize("spec", ["Mars/Olympus", "+25:00x", "yesterday"])
def test_bad_zone_is_bad_input(spec: str) -> None:
    with pytest.raises(BadInput):
        parse_tz(spec)


# --- Ceph messenger: SimpleMessenger, AsyncMessenger (Luminous), ProtocolV1, ProtocolV2 --------------------
INCIDENT_FAULT = ("2014-08-06 15:22:35.348175 7f92f25a8700 10 -- 172.22.4.42:6802/9560 >> 172.22.4.51:0/2025662 "
                  "pipe(0x7f9208035440 sd=382 :6802 s=2 pgs=26750 cs=1 l=1 c=0x7f92080021c0).fault on lossy "
                  "channel, failing")
MESSENGER = [
    (INCIDENT_FAULT, model.MS_FAULT, "172.22.4.42:6802/9560", "172.22.4.51:0/2025662", True),
    ("2014-08-06 15:22:35.344719 7f8fd1d98700 2 -- 172.22.4.42:6802/9560 >> 172.22.4.49:0/3026524 pipe(0x7f9208033a80 "
     "sd=492 :6802 s=2 pgs=12845 cs=1 l=1 c=0x7f9208033ce0).reader couldn't read tag, Success",
     model.MS_CLOSE, "172.22.4.42:6802/9560", "172.22.4.49:0/3026524", True),
    ("2014-08-06 15:22:35.348293 7f8fe24e4700 20 -- 172.22.4.42:6802/9560 >> 172.22.4.38:0/1013265 pipe(0x7f92080476e0 "
     "sd=450 :6802 s=4 pgs=32439 cs=1 l=1 c=0x7f9208018e90).writer finishing",
     model.MS_CLOSE, "172.22.4.42:6802/9560", "172.22.4.38:0/1013265", True),
    ("2014-08-06 15:22:35.348284 7f8fd4fca700 2 -- 172.22.4.42:6802/9560 >> 172.22.4.5:0/3032136 pipe(0x7f92080686b0 "
     "sd=305 :6802 s=2 pgs=306100 cs=1 l=1 c=0x7f920805f340).fault 0: Success",
     model.MS_CLOSE, "172.22.4.42:6802/9560", "172.22.4.5:0/3032136", True),
    # Luminous AsyncConnection::_conn_prefix: "-- ADDR >> ADDR conn(0x.. :PORT s=STATE pgs= cs= l=)."
    ("2018-03-01 10:00:00.123456 7f0c4d7fa700  1 -- 10.0.0.5:6800/2211 >> 10.0.1.9:0/3881 conn(0x55d4 :6800 "
     "s=STATE_OPEN pgs=12 cs=1 l=1).fault on lossy channel, failing",
     model.MS_FAULT, "10.0.0.5:6800/2211", "10.0.1.9:0/3881", True),
    # ProtocolV1::_conn_prefix (Nautilus on): "--1- ADDRS >> ADDRS conn(0x.. 0x.. :PORT s= pgs= cs= l=)."
    ("2019-07-15 09:46:40.479 ffff91adbbd0  1 --1- [v2:10.0.0.5:6800/2211,v1:10.0.0.5:6801/2211] >> v1:10.0.1.9:0/3881 "
     "conn(0x55d4 0x55d5 :6801 s=OPENED pgs=3 cs=1 l=1).fault on lossy channel, failing",
     model.MS_FAULT, "[v2:10.0.0.5:6800/2211,v1:10.0.0.5:6801/2211]", "v1:10.0.1.9:0/3881", True),
    ("2019-07-15 09:46:40.479 ffff91adbbd0  0 --1- [v2:10.0.0.5:6800/2211,v1:10.0.0.5:6801/2211] >> "
     "v1:10.0.0.6:6801/99 conn(0x1 0x2 :-1 s=CONNECTING_SEND_CONNECT_MSG pgs=0 cs=0 l=0).handle_connect_reply_2 "
     "connect got RESETSESSION", model.MS_RESET, "[v2:10.0.0.5:6800/2211,v1:10.0.0.5:6801/2211]",
     "v1:10.0.0.6:6801/99", False),
    # ProtocolV2 (real, Ceph 16.2.15 lab)
    ("2026-11-26T06:08:44.066+0000 7f36e0e336c0  2 --2- [v2:127.0.0.1:6804/9593,v1:127.0.0.1:6805/9593] >> "
     "127.0.0.1:0/9823 conn(0x7f36cc018940 0x7f36cc01b3b0 crc :-1 s=READY pgs=2 cs=0 l=1 rev1=1 rx=0 tx=0)._fault on "
     "lossy channel, failing", model.MS_FAULT, "[v2:127.0.0.1:6804/9593,v1:127.0.0.1:6805/9593]", "127.0.0.1:0/9823",
     True),
    ("2026-11-26T06:08:44.070+0000 7f36e0e336c0  1 --2- 127.0.0.1:0/9593 >> [v2:127.0.0.1:6820/9823,v1:127.0.0.1:6821/"
     "9823] conn(0x7f36a0004da0 0x7f36a0007220 unknown :-1 s=START_CONNECT pgs=0 cs=0 l=1 rev1=0 rx=0 tx=0)._fault "
     "waiting 0.200000", model.MS_CLOSE, "127.0.0.1:0/9593", "[v2:127.0.0.1:6820/9823,v1:127.0.0.1:6821/9823]", True),
]


@pytest.mark.parametrize(("line", "kind", "local", "peer", "lossy"), MESSENGER)
def test_messenger_lines(line: str, kind: str, local: str, peer: str, lossy: bool) -> None:
    e = ev(line)
    assert (e.kind, e.daemon, e.peer, e.lossy) == (kind, local, peer, lossy)
    osd = ev(line, SourceCtx(source="ceph-osd.3.log", daemon="osd.3", clock=Clock(year=2014)))
    assert osd.daemon == "osd.3"  # the file name names the daemon


def test_messenger_lines_that_are_not_faults_are_ignored() -> None:
    line = ("2026-11-26T06:08:30.014+0000 7f36e39f71c0  1 --2- [v2:127.0.0.1:6800/9593,v1:127.0.0.1:6801/9593] >> "
            "[v2:127.0.0.1:3300/0,v1:127.0.0.1:6789/0] conn(0x1 0x2 secure :-1 s=READY pgs=1 cs=0 l=1 rev1=1 "
            "rx=0 tx=0).ready entity=mon.0")
    assert parse_line(line, 1, CTX) is None


@pytest.mark.parametrize("prefix", ["debug ", "  -1234> ", "   -12> "])
def test_container_and_crash_dump_prefixes(prefix: str) -> None:
    assert ev(prefix + INCIDENT_FAULT).kind == model.MS_FAULT


# --- OSD and monitor messages ------------------------------------------------------------------------------
OSD_LINES = [
    ("2026-11-26T06:09:01.438+0000 7f36cbfff6c0 -1 osd.0 16 heartbeat_check: no reply from 127.0.0.1:6812 osd.1 since "
     "back 2026-11-26T06:08:53.860443+0000 front 2026-11-26T06:08:53.860648+0000 (oldest deadline "
     "2026-11-26T06:09:00.660166+0000)", model.HB_NO_REPLY, "osd.0", "osd.1", 1),
    ("2019-07-12 06:50:18.528 ffff89882bd0 -1 osd.23 6178 heartbeat_check: no reply from 192.168.200.3:6802 osd.44 "
     "ever on either front or back, first ping sent 2019-07-12 06:49:58.148429 (oldest deadline 2019-07-12 "
     "06:50:18.148429)", model.HB_NO_REPLY, "osd.23", "osd.44", 1),
    ("2014-08-06 15:25:00.1 7f92f25a8700 -1 osd.3 12350 heartbeat_check: no reply from osd.12 since back 2014-08-06 "
     "15:24:39.1 front 2014-08-06 15:24:39.1 (cutoff 2014-08-06 15:24:40.1)", model.HB_NO_REPLY, "osd.3", "osd.12", 1),
    ("2026-11-26T06:09:13.078+0000 7f36c9ffb6c0  0 log_channel(cluster) log [DBG] : map e20 wrongly marked me down at "
     "e20", model.WRONGLY_DOWN, "osd.0", "", 1),
    ("2026-11-26T06:08:31.014+0000 7f36e39f71c0  0 osd.0 0 done with init, starting boot process",
     model.OSD_START, "osd.0", "", 1),
    ("2014-08-06 15:25:01.1234 7f92f25a8700 0 log [WRN] : 23 slow requests, 5 included below; oldest blocked for > "
     "62.123456 secs", model.SLOW, "osd.0", "", 23),
    ("2014-08-06 15:25:01.1234 7f92f25a8700 0 log [WRN] : slow request 30.224 seconds old, received at 2014-08-06 "
     "15:24:30.9 osd_op(client.4123.0:9 rbd_data.1 [write 0~4096] 2.3f ondisk+write e12350) currently waiting for subops",
     model.SLOW, "osd.0", "", 1),
    ("2026-11-26T06:10:01.1+0000 7f36c9ffb6c0 -1 osd.0 31 get_health_metrics reporting 4 slow ops, oldest is "
     "osd_op(client.4151.0:1 2.1 2:8c3a8e2e:::obj:head [write 0~4096] snapc 0=[] ondisk+write+known_if_redirected e31)",
     model.SLOW, "osd.0", "", 4),
]


@pytest.mark.parametrize(("line", "kind", "daemon", "peer", "count"), OSD_LINES)
def test_osd_messages(line: str, kind: str, daemon: str, peer: str, count: int) -> None:
    e = ev(line, SourceCtx(source="ceph-osd.0.log", daemon="osd.0", clock=Clock()))
    assert (e.kind, e.daemon, e.peer, e.count) == (kind, daemon, peer, count)


CLUSTER_LINES = [
    # Pacific (real): mark-downs, boots, an OSD's own clog line
    ("2026-11-26T06:09:01.442481+0000 mon.a (mon.0) 62 : cluster [INF] osd.1 failed (root=default,host=vm) (1 reporters "
     "from different host after 7.000172 >= grace 6.000000)", model.MARKED_DOWN, "osd.1"),
    ("2026-11-26T06:08:44.275999+0000 mon.a (mon.0) 42 : cluster [INF] osd.2 failed (root=default,host=vm) (connection "
     "refused reported by osd.1)", model.MARKED_DOWN, "osd.2"),
    ("2026-11-26T06:09:18.638421+0000 mon.a (mon.0) 80 : cluster [INF] osd.1 marked itself down and dead",
     model.MARKED_DOWN, "osd.1"),
    ("2026-11-26T06:09:07.372074+0000 mon.a (mon.0) 69 : cluster [INF] osd.1 [v2:127.0.0.1:6808/9719,v1:127.0.0.1:6809/"
     "9719] boot", model.MON_BOOT, "osd.1"),
    ("2026-11-26T06:09:06.260140+0000 osd.1 (osd.1) 4 : cluster [DBG] map e17 wrongly marked me down at e17",
     model.WRONGLY_DOWN, "osd.1"),
    ("2024-03-05T10:00:00.000000+0000 mon.a (mon.0) 900 : cluster [WRN] Health check update: 10 slow ops, oldest one "
     "blocked for 31 sec, osd.0 has slow ops (SLOW_OPS)", model.SLOW, "mon.a"),
    # Firefly (cluster log with the mon's address), Luminous beacon timeout, `ceph -w`
    ("2014-08-06 15:36:01.000000 mon.0 172.22.4.1:6789/0 4002 : [INF] osd.0 marked down after no pg stats for "
     "900.794465seconds", model.MARKED_DOWN, "osd.0"),
    ("2014-08-06 15:37:12.123456 mon.0 172.22.4.1:6789/0 4100 : [INF] osd.3 172.22.4.42:6806/9530 failed (3 reports "
     "from 3 peers after 21.000 >= grace 20.000)", model.MARKED_DOWN, "osd.3"),
    ("2018-01-01 00:00:00.000000 mon.a mon.0 10.0.0.1:6789/0 77 : cluster [INF] osd.7 marked down after no beacon for "
     "900.123 seconds", model.MARKED_DOWN, "osd.7"),
    ("2014-08-06 15:20:05.100000 mon.0 172.22.4.1:6789/0 4001 : [INF] osd.3 172.22.4.42:6806/9530 boot",
     model.MON_BOOT, "osd.3"),
    ("2024-01-30T16:58:16.631680+0300 mon.mon-01 [INF] osd.1 marked itself down and dead", model.MARKED_DOWN, "osd.1"),
    # the mon's own log carries the same clog message
    ("2026-11-26T06:09:01.442+0000 7f5c3b7fe6c0  0 log_channel(cluster) log [INF] : osd.1 failed (root=default,host=vm) "
     "(1 reporters from different host after 7.000172 >= grace 6.000000)", model.MARKED_DOWN, "osd.1"),
]


@pytest.mark.parametrize(("line", "kind", "daemon"), CLUSTER_LINES)
def test_cluster_messages(line: str, kind: str, daemon: str) -> None:
    e = ev(line, SourceCtx(source="ceph.log", daemon="cluster", clock=Clock()))
    assert (e.kind, e.daemon) == (kind, daemon)


@pytest.mark.parametrize("line", [
    "2026-11-26T06:09:06.261615+0000 mon.a (mon.0) 65 : cluster [INF] osd.1 marked itself dead as of e17",
    "2026-11-26T06:08:44.275784+0000 mon.a (mon.0) 41 : cluster [DBG] osd.2 reported immediately failed by osd.1",
    "2026-11-26T06:09:07.366279+0000 mon.a (mon.0) 67 : cluster [INF] Health check cleared: OSD_DOWN (was: 1 osds down)",
    "2014-08-06 15:21:00.000000 mon.0 172.22.4.1:6789/0 4050 : [INF] pgmap v28350: 4096 pgs: 4096 active+clean",
])
def test_cluster_lines_that_are_not_events(line: str) -> None:
    assert parse_line(line, 1, SourceCtx(source="ceph.log", daemon="cluster", clock=Clock())) is None


def test_ceph_through_syslog_and_journald() -> None:
    # Proxmox/journald: the daemon's own line (with its zone) inside a syslog record
    line = ("Sep 30 11:49:26 pve01 ceph-osd[3439766]: 2026-09-30T11:49:26.642+0300 713008a466c0 -1 osd.0 771 "
            "heartbeat_check: no reply from 192.168.202.179:6802 osd.2 ever on either front or back, first ping sent "
            "2026-09-30T11:42:30.464605+0300 (oldest deadline 2026-09-30T11:42:50.464605+0300)")
    e = ev(line, SourceCtx(source="syslog", clock=Clock(year=2026)))
    assert (e.kind, e.host, e.daemon, e.peer) == (model.HB_NO_REPLY, "pve01", "osd.0", "osd.2")
    assert e.ts == pytest.approx(calendar.timegm((2026, 9, 30, 8, 49, 26, 0, 0, 0)) + 0.642)
    # journald-native Ceph: no timestamp in MESSAGE, the unit names the daemon
    rec = {"__REALTIME_TIMESTAMP": "1764137324000000", "_HOSTNAME": "stor-3", "SYSLOG_IDENTIFIER": "ceph-osd",
           "_SYSTEMD_UNIT": "ceph-osd@12.service",
           "MESSAGE": "--2- [v2:10.0.0.3:6800/7,v1:10.0.0.3:6801/7] >> 10.0.9.9:0/55 conn(0x1 0x2 crc :-1 s=READY "
                      "pgs=2 cs=0 l=1 rev1=1 rx=0 tx=0)._fault on lossy channel, failing"}
    e = ev(json.dumps(rec))
    assert (e.kind, e.host, e.daemon, e.peer, e.ts) == (model.MS_FAULT, "stor-3", "osd.12", "10.0.9.9:0/55", 1764137324.0)


def test_ceph_message_helpers_reject_near_misses() -> None:
    assert ceph.messenger("-- a >> b something else") is None
    assert ceph.cluster_message("osd.x failed (nope") is None
    assert ceph.slow_message("slow down") is None
    assert ceph.osd_message("heartbeat_check: no reply from nobody") is None
