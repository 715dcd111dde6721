"""Every Ceph and kernel log form that matters for a conntrack incident, from the sources (firefly 0.80 to squid 19,
Linux 2.4/2.6 to 6.x), each with an expected parse, and each found by the one-pass needle search when it is read
from a file of its kind. The source of each form is cited next to it: the function that prints it and the
versions that print it this way. Lines are real ones where we have them (the 2014 ceph-users report, the Ceph 16.2.15
lab under data/lab/, public bug reports and mailing-list posts quoting them), else built from the format string."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctguard.diagnose import correlate, model, scan
from ctguard.diagnose.clock import Clock
from ctguard.diagnose.lines import SourceCtx, parse_line

# (id, file name the line comes in, line, kind, daemon, count, detail prefix, source)

FORMS = [
 # ---- monitors: mark-downs by failure reports (src/mon/OSDMonitor.cc OSDMonitor::check_failure) ----
 ("failed-firefly", "ceph.log",
  "2014-08-06 15:36:01.123456 mon.0 172.22.4.1:6789/0 1234 : [INF] osd.3 172.22.4.42:6802/9560 failed (3 reports from 3 peers after 21.000172 >= grace 20.000000)",
  "marked_down", "osd.3", 1, "failed (3 reports", "v0.80 firefly: `osdmap.get_inst(target_osd) << \" failed (\" << fi.num_reports << \" reports from \" << reporters << \" peers after \"`"),
 ("failed-jewel", "ceph.log",
  "2017-02-02 12:40:01.123456 mon.0 10.0.0.1:6789/0 5336 : cluster [INF] osd.3 10.0.0.2:6800/1752 failed (2 reporters from different host after 21.000215 >= grace 20.000000)",
  "marked_down", "osd.3", 1, "failed (2 reporters", "v10.2 jewel: `get_inst(target_osd) << \" failed (\" << reporters_by_subtree.size() << \" reporters from different \" << reporter_subtree_level`"),
 ("failed-luminous-mon-log", "ceph-mon.a.log",
  "2019-07-15 09:46:20.479 7f6dc9034700  0 log_channel(cluster) log [INF] : osd.44 failed (root=default,host=node-4) (2 reporters from different host after 20.000311 >= grace 20.000000)",
  "marked_down", "osd.44", 1, "failed (root=default", "v12-v14: the mon's copy of its clog line; CRUSH location from get_full_location_ordered_string"),
 ("failed-pacific", "ceph.log",
  "2026-11-26T09:21:32.097224+0000 mon.a (mon.0) 367 : cluster [INF] osd.0 failed (root=default,host=cl-h1) (2 reporters from different host after 20.000215 >= grace 20.000000)",
  "marked_down", "osd.0", 1, "failed (root=default", "v16.2.15 pacific (data/lab run 20261126T092034Z)"),
 ("failed-refused", "ceph.log",
  "2022-07-22T14:02:47.553439+0800 mon.node03 [INF] osd.0 failed (root=default,host=node03) (connection refused reported by osd.19)",
  "marked_down", "osd.0", 1, "failed (root=default,host=node03) (connection refused", "v15 octopus on: OSDMonitor::force_failure, `ceph -w` shape"),
 # ---- monitors: missing beacons / pg stats (mon_osd_report_timeout, 900 s) ----
 ("no-beacon", "ceph.log",
  "2019-03-04 10:15:08.114226 mon.a mon.0 10.0.0.1:6789/0 212 : cluster [INF] osd.12 marked down after no beacon for 900.274113 seconds",
  "marked_down", "osd.12", 1, "no beacon for 900.274113 s", "v12 luminous on: OSDMonitor::handle_osd_timeouts `\"osd.\" << i << \" marked down after no beacon for \" << diff << \" seconds\"`"),
 ("no-beacon-journald", "journal.json",
  json.dumps({"__REALTIME_TIMESTAMP": "1551694508114226", "_HOSTNAME": "mon1", "SYSLOG_IDENTIFIER": "ceph-mon", "MESSAGE": "debug 2019-03-04T10:15:08.114+0000 7f6dc9034700  0 log_channel(cluster) log [INF] : osd.12 marked down after no beacon for 900.274113 seconds"}),
  "marked_down", "osd.12", 1, "no beacon for 900.274113 s", "a containerised mon (cephadm/rook) logging to journald"),
 ("no-pg-stats-firefly", "ceph.log",
  "2014-08-06 15:36:04.000000 mon.0 172.22.4.1:6789/0 1301 : [INF] osd.0 marked down after no pg stats for 900.794465seconds",
  "marked_down", "osd.0", 1, "no pg stats for 900.794465 s", "v0.80 firefly - v11 kraken: PGMonitor::handle_osd_timeouts `\"... no pg stats for \" << diff << \"seconds\\n\"` (no space)"),
 # ---- clean stops ----
 ("itself-firefly", "ceph.log",
  "2014-08-06 15:19:58.000000 mon.0 172.22.4.1:6789/0 1201 : [INF] osd.3 marked itself down",
  "marked_down", "osd.3", 1, "marked itself down", "v0.80 firefly on: OSDMonitor::prepare_mark_me_down `\"osd.\" << target_osd << \" marked itself down\"`"),
 ("itself-and-dead", "ceph.log",
  "2026-11-26T09:21:07.235876+0000 mon.a (mon.0) 295 : cluster [INF] osd.3 marked itself down and dead",
  "marked_down", "osd.3", 1, "marked itself down", "v16 pacific on (osd_mon_shutdown_timeout, MOSDMarkMeDown with request_ack and down_and_dead)"),
 # ---- boot ----
 ("boot-firefly", "ceph.log",
  "2014-08-06 15:20:05.100000 mon.0 172.22.4.1:6789/0 1210 : [INF] osd.0 172.22.4.42:6800/9500 boot",
  "mon_boot", "osd.0", 1, "", "v0.80 firefly on: OSDMonitor::_booted `m->get_orig_source_inst() << \" boot\"`"),
 ("boot-msgr2", "ceph.log",
  "2026-11-26T09:21:10.248887+0000 mon.a (mon.0) 322 : cluster [INF] osd.3 [v2:198.18.0.11:6824/19757,v1:198.18.0.11:6825/19757] boot",
  "mon_boot", "osd.3", 1, "", "v14 nautilus on: an addrvec"),
 # ---- the OSD's side ----
 ("wrongly-firefly", "ceph-osd.3.log",
  "2014-08-06 15:37:01.123456 7f92f25a8700  0 log [WRN] : map e12399 wrongly marked me down",
  "wrongly_down", "osd.3", 1, "", "v0.80 firefly: OSD::_committed_osd_maps `clog.warn() << \"map e\" << epoch << \" wrongly marked me down\"`"),
 ("wrongly-at", "ceph-osd.44.log",
  "2019-07-15 09:46:40.479 ffff91adbbd0  0 log_channel(cluster) log [DBG] : map e6540 wrongly marked me down at e6539",
  "wrongly_down", "osd.44", 1, "e6539", "v12 luminous on: `clog->debug() << ... \" wrongly marked me down at e\" << down_epoch`"),
 ("still-running", "ceph.log",
  "2019-07-15 09:46:40.479520 osd.44 osd.44 10.0.0.4:6800/3613380 1 : cluster [WRN] Monitor daemon marked osd.44 down, but it is still running",
  "wrongly_down", "osd.44", 1, "still running", "v12 luminous on: `clog->warn() << \"Monitor daemon marked osd.\" << whoami << \" down, but it is still running\"`"),
 ("process-start", "ceph-osd.1.log",
  "2017-02-02 12:34:17.777933 7fb7df1e7800  0 ceph version 10.2.3-17.el7cp (ca9d57c0b140eb5cea9de7f7133260271e57490e), process ceph-osd, pid 1752",
  "osd_start", "osd.1", 1, "process start, pid 1752", "every version: global_init's first line of a ceph-osd run"),
 ("process-start-container", "journal.json",
  json.dumps({"__REALTIME_TIMESTAMP": "1686982898402000", "_HOSTNAME": "ceph04", "SYSLOG_IDENTIFIER": "bash", "_SYSTEMD_UNIT": "ceph-8d9e7a5c-e5a3-11ed-9b0d-0050568466c6@osd.8.service", "MESSAGE": "debug 2025-06-23T06:21:38.402+0000 7fdc5b066640  0 ceph version 18.2.4 (e7ad5345525c7aa95470c26863873b581076945d) reef (stable), process ceph-osd, pid 8"}),
  "osd_start", "osd.8", 1, "process start, pid 8", "v18 reef, cephadm: the unit ceph-FSID@osd.8 names the OSD"),
 ("init-done", "ceph-osd.0.log",
  "2014-08-06 15:20:04.200000 7ff004aac702  0 osd.0 12345 done with init, starting boot process",
  "osd_start", "osd.0", 1, "", "v0.87 giant on at level 0 (dout(0); dout(10) before): OSD::init"),
 # ---- heartbeats (src/osd/OSD.cc OSD::heartbeat_check) ----
 ("hb-firefly", "ceph-osd.3.log",
  "2014-08-06 15:22:40.348175 7f92f25a8700 -1 osd.3 12350 heartbeat_check: no reply from osd.12 since back 2014-08-06 15:22:19.348000 front 2014-08-06 15:22:19.348000 (cutoff 2014-08-06 15:22:20.348175)",
  "hb_no_reply", "osd.3", 1, "", "v0.80 firefly: `\"heartbeat_check: no reply from osd.\" << p->first << \" since back \"`"),
 ("hb-ever", "ceph-osd.3.log",
  "2016-11-05 10:12:19.813628 7f6f54d9d900 -1 osd.3 4301 heartbeat_check: no reply from osd.7 ever on either front or back, first ping sent 2016-11-05 10:11:59.813000 (cutoff 2016-11-05 10:11:59.813628)",
  "hb_no_reply", "osd.3", 1, "", "v0.94 hammer on: a peer that never answered"),
 ("hb-addr", "ceph-osd.23.log",
  "2025-04-28T12:54:48.773+0800 fffd27d2c880 -1 osd.23 69462 heartbeat_check: no reply from 192.168.26.62:6860 osd.16 since back 2025-04-28T12:53:18.142303+0800 front 2025-04-28T12:53:18.142376+0800 (oldest deadline 2025-04-28T12:53:43.441974+0800)",
  "hb_no_reply", "osd.23", 1, "192.168.26.62:6860", "v14 nautilus on: the peer's front address first"),
 # ---- slow requests / slow ops, every historic form ----
 ("slow-firefly", "ceph-osd.0.log",
  "2014-08-06 15:25:04.349781 7f92f25a8700  0 log [WRN] : 6 slow requests, 6 included below; oldest blocked for > 30.005692 secs",
  "slow", "osd.0", 6, "", "v0.80 firefly - v13 mimic: OpTracker::check_ops_in_flight summary"),
 ("slow-one-op", "ceph-osd.0.log",
  "2014-08-06 15:25:04.349790 7f92f25a8700  0 log [WRN] : slow request 30.005692 seconds old, received at 2014-08-06 15:24:34.344089: osd_op(client.4240.0:8 rbd_data.1 [write 0~4194304] 0.69848840) v4 currently waiting for subops from [6,10]",
  "slow", "osd.0", 1, "", "v0.80 firefly - v13 mimic: one op in full"),
 ("slow-jewel-health", "ceph.log",
  "2017-02-02 12:40:00.000000 mon.0 10.0.0.1:6789/0 5400 : cluster [WRN] HEALTH_WARN; 12 requests are blocked > 32 sec",
  "slow", "mon.0", 12, "", "v0.94 hammer - v10 jewel: Monitor health summary (mon_health_to_clog)"),
 ("slow-request-slow", "ceph.log",
  "2020-05-28 21:24:08.804634 mon.juju-e71ac3-18-lxd-4 mon.0 172.26.234.21:6789/0 5336 : cluster [WRN] Health check failed: 7 slow requests are blocked > 32 sec. Implicated osds 6 (REQUEST_SLOW)",
  "slow", "mon.juju-e71ac3-18-lxd-4", 7, "", "v12 luminous - v13 mimic: health check REQUEST_SLOW"),
 ("slow-ops-metrics", "ceph-osd.40.log",
  "2022-02-10T16:20:34.819+0000 7fc354235700 -1 osd.40 229380 get_health_metrics reporting 256 slow ops, oldest is osd_op(client.264463607.0:295362 23.3 23.9b18bc83 (undecoded) ondisk+retry+write+known_if_redirected e229371)",
  "slow", "osd.40", 256, "", "v14 nautilus on: OSD::get_health_metrics `reporting \" << slow << \" slow ops, oldest is \"`"),
 ("slow-ops-health", "ceph.log",
  "2026-11-26T09:22:04.927825+0000 mon.a (mon.0) 441 : cluster [WRN] Health check failed: 6 slow ops, oldest one blocked for 31 sec, daemons [osd.0,osd.1] have slow ops. (SLOW_OPS)",
  "slow", "mon.a", 6, "", "v14 nautilus on: health check SLOW_OPS"),
 ("slow-by-type", "ceph-osd.23.log",
  "2025-04-28T12:54:48.773+0800 fffd27d2c880  0 log_channel(cluster) log [WRN] : 3 slow requests (by type [ 'delayed' : 3 ] most affected pool [ 'rbd' : 3 ])",
  "slow", "osd.23", 3, "", "v14 nautilus on: OSD::get_health_metrics clog summary"),
 # ---- messengers: lossy faults (the reconnect loop) ----
 ("lossy-simple", "ceph-osd.3.log",
  "2014-08-06 15:22:35.348175 7f92f25a8700 10 -- 172.22.4.42:6802/9560 >> 172.22.4.51:0/2025662 pipe(0x7f9208035440 sd=382 :6802 s=2 pgs=26750 cs=1 l=1 c=0x7f92080021c0).fault on lossy channel, failing",
  "ms_fault", "osd.3", 1, "fault on lossy channel", "v0.80 firefly - v13 mimic SimpleMessenger: Pipe::fault (level 10), the 2014 report verbatim"),
 ("lossy-async", "ceph-osd.3.log",
  "2019-12-08 17:05:13.657946 7f23414a2700  1 -- 10.35.105.64:6800/1234 >> 10.35.105.63:0/5678 conn(0x564e9bb2a000 :6800 s=STATE_OPEN pgs=79849 cs=1 l=1).fault on lossy channel, failing",
  "ms_fault", "osd.3", 1, "fault on lossy channel", "v12 luminous - v13 mimic AsyncConnection::fault (level 1)"),
 ("lossy-v1", "ceph-osd.3.log",
  "2020-06-01 10:00:00.000 7f23414a2700  1 --1- 10.35.105.64:6800/1234 >> 10.35.105.63:0/5678 conn(0x564e9bb2a000 0x564e9bb2c800 :6800 s=OPENED pgs=79849 cs=1 l=1).fault on lossy channel, failing",
  "ms_fault", "osd.3", 1, "fault on lossy channel", "v14 nautilus on ProtocolV1::fault (level 1)"),
 ("lossy-v2", "ceph-osd.0.log",
  "2026-11-26T06:08:44.066+0000 7f36e0e336c0  2 --2- [v2:127.0.0.1:6800/9593,v1:127.0.0.1:6801/9593] >> 127.0.0.1:0/3024957 conn(0x5612a9d0c000 0x5612a9d1e580 crc :-1 s=READY pgs=3 cs=0 l=1 rev1=1 crypto rx=0 tx=0 comp rx=0 tx=0)._fault on lossy channel, failing",
  "ms_fault", "osd.0", 1, "_fault on lossy channel", "v14 nautilus on ProtocolV2::_fault (level 2), prefix from ProtocolV2::_conn_prefix"),
]


def _ctx(fname: str) -> SourceCtx:
    return SourceCtx(source=fname, daemon=scan.daemon_from_name(fname), clock=Clock(year=2014))


@pytest.mark.parametrize(("fname", "line", "kind", "daemon", "count", "detail"),
                         [f[1:7] for f in FORMS], ids=[f[0] for f in FORMS])
def test_ceph_form_parses(fname: str, line: str, kind: str, daemon: str, count: int, detail: str) -> None:
    e = parse_line(line, 1, _ctx(fname))
    assert isinstance(e, model.Event), (line, e)
    assert (e.kind, e.daemon, e.count) == (kind, daemon, count)
    assert e.detail.startswith(detail) or e.peer.startswith(detail), (e.detail, e.peer)


@pytest.mark.parametrize(("fname", "line", "kind"), [(f[1], f[2], f[3]) for f in FORMS], ids=[f[0] for f in FORMS])
def test_ceph_form_is_found_in_a_file_of_its_kind(tmp_path: Path, fname: str, line: str, kind: str) -> None:
    """The needles a file gets depend on what its first 64 KiB look like: the form must be found among the
    ordinary lines of a log of its kind (a daemon log, the cluster log, a journal export)."""
    if fname.endswith(".json"):
        filler = json.dumps({"__REALTIME_TIMESTAMP": "1551694508000000", "_HOSTNAME": "h", "SYSLOG_IDENTIFIER": "x",
                             "MESSAGE": "an ordinary line"})
    elif fname == "ceph.log":
        filler = "2019-03-04 10:15:08.000000 mon.a mon.0 10.0.0.1:6789/0 211 : cluster [DBG] osdmap e17: 3 total, 3 up"
    else:
        filler = "2019-03-04 10:15:08.000 7f6dc9034700  1 osd.0 17 tick checking mon for new map"
    p = tmp_path / fname
    p.write_text("\n".join([filler] * 50 + [line] + [filler] * 50) + "\n")
    for numpy in (True, False):
        res = scan.scan([scan.InputSpec(str(p))], lambda path, host, daemon: SourceCtx(
            source=path, host=host, daemon=daemon, clock=Clock(year=2014)), use_numpy=numpy)
        assert [e.kind for e in res.events] + [k[1] for k in res.buckets] == [kind], (numpy, res.events)


# --- the kernel: the table-full messages and the rate limiter's suppression counts, 2.4 to 6.x --------------------
KERNEL_MESSAGES = [
    # (id, message, kind, count, detail, source)
    ("ip-conntrack", "ip_conntrack: table full, dropping packet.", model.TABLE_FULL, 1, "",
     "2.4 - 2.6.19 net/ipv4/netfilter/ip_conntrack_core.c: `if (net_ratelimit()) printk(...)`"),
    ("nf-conntrack-2.6", "nf_conntrack: table full, dropping packet.", model.TABLE_FULL, 1, "",
     "2.6.15 - 3.x net/netfilter/nf_conntrack_core.c __nf_conntrack_alloc, with the period"),
    ("nf-conntrack", "nf_conntrack: table full, dropping packet", model.TABLE_FULL, 1, "",
     "3.x - 6.x: net_warn_ratelimited(\"nf_conntrack: table full, dropping packet\\n\")"),
    ("nf-conntrack-netns", "nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet",
     model.TABLE_FULL, 1, "4026532177", "6.18 as measured (kernel-conntrack.md 2.4): pr_fmt prefix twice, netns inode"),
    ("net-suppressed", "NET: 12 messages suppressed.", model.SUPPRESSED, 12, "NET",
     "2.4 - 2.6.9 net/core/utils.c net_ratelimit(): its own token bucket"),
    ("printk-suppressed", "printk: 40 messages suppressed.", model.SUPPRESSED, 40, "printk",
     "2.6.10 - 2.6.30 kernel/printk.c __printk_ratelimit(), which net_ratelimit() called"),
    ("ratelimit-suppressed", "__ratelimit: 9 callbacks suppressed", model.SUPPRESSED, 9, "__ratelimit",
     "2.6.31 - 2.6.33 lib/ratelimit.c __ratelimit(): `printk(\"%s: %d callbacks suppressed\\n\", __func__, ...)`"),
    ("net-ratelimit-suppressed", "net_ratelimit: 311 callbacks suppressed", model.SUPPRESSED, 311, "net_ratelimit",
     "2.6.34 - 6.x lib/ratelimit.c ___ratelimit(rs, func): the caller's name"),
]
T = 1407338628  # 2014-08-06T15:23:48Z
ENVELOPES = [
    # (id, file name, line of a message, host the line gives)
    ("syslog", "kern.log", lambda m: f"Aug  6 15:23:48 cartman06 kernel: [12713575.554784] {m}", "cartman06"),
    ("syslog-empty-tag", "kern.log", lambda m: f"Aug  6 15:23:48 cartman06 kernel: : {m}", "cartman06"),
    ("dmesg-T", "dmesg_-T", lambda m: f"[Wed Aug  6 15:23:48 2014] {m}", ""),
    ("journal-json", "journal.json", lambda m: json.dumps({
        "__REALTIME_TIMESTAMP": str(T * 1_000_000 + 554784), "_HOSTNAME": "cartman06", "_TRANSPORT": "kernel",
        "SYSLOG_IDENTIFIER": "kernel", "PRIORITY": "4", "MESSAGE": m}), "cartman06"),
]


@pytest.mark.parametrize(("env", "fname", "wrap", "host"), ENVELOPES, ids=[e[0] for e in ENVELOPES])
@pytest.mark.parametrize(("msg", "kind", "count", "detail"), [k[1:5] for k in KERNEL_MESSAGES],
                         ids=[k[0] for k in KERNEL_MESSAGES])
def test_kernel_form_parses(env: str, fname: str, wrap: object, host: str, msg: str, kind: str, count: int,
                            detail: str) -> None:
    assert callable(wrap)
    e = parse_line(wrap(msg), 1, _ctx(fname))
    assert isinstance(e, model.Event), (env, msg, e)
    assert (e.kind, e.count, e.detail, e.host, e.daemon) == (kind, count, detail, host, "kernel")
    assert int(e.ts) == T


@pytest.mark.parametrize(("env", "fname", "wrap", "host"), ENVELOPES, ids=[e[0] for e in ENVELOPES])
@pytest.mark.parametrize("supp", [k for k in KERNEL_MESSAGES if k[2] == model.SUPPRESSED], ids=lambda k: k[0])
def test_suppression_counts_in_front_of_a_table_full_line(tmp_path: Path, env: str, fname: str, wrap: object,
                                                          host: str, supp: tuple[str, str, str, int, str, str]) -> None:
    """In every shape and every kernel's wording, the suppression count printed in front of a table-full line is
    counted; the same count in front of another message is not (the budget is shared)."""
    assert callable(wrap)
    other = "TCP: request_sock_TCP: Possible SYN flooding on port 6800. Sending cookies."
    lines = ["e1000e: eth0 NIC Link is Up 1000 Mbps Full Duplex", supp[1], "nf_conntrack: table full, dropping packet",
             "nf_conntrack: table full, dropping packet", supp[1], other]
    p = tmp_path / fname
    p.write_text("\n".join(wrap(m) for m in lines) + "\n")
    res = scan.scan([scan.InputSpec(str(p))], lambda path, h, d: SourceCtx(source=path, host=h, daemon=d,
                                                                           clock=Clock(year=2014)))
    (inc,) = correlate.correlate(res)
    assert (inc.drops_logged, inc.suppressed) == (2, supp[3]), env


def test_an_incident_that_ended_by_beacon_timeout_says_so(tmp_path: Path) -> None:
    """The 2014 incident ended when the mon marked the OSDs down for missing reports (mon_osd_report_timeout):
    the cause says so, in Luminous's words (no beacon) as in Firefly's (no pg stats)."""
    kern = tmp_path / "h1.kern.log"
    kern.write_text("".join(f"Mar  4 10:{m:02d}:{s:02d} h1 kernel: nf_conntrack: table full, dropping packet\n"
                            for m in range(0, 16) for s in range(0, 60, 10)))
    cl = tmp_path / "ceph.log"
    cl.write_text("2019-03-04 10:15:08.114226 mon.a mon.0 10.0.0.1:6789/0 212 : cluster [INF] osd.12 marked down "
                  "after no beacon for 900.274113 seconds\n")
    res = scan.scan([scan.InputSpec(str(kern)), scan.InputSpec(str(cl))], lambda path, h, d: SourceCtx(
        source=path, host=h, daemon=d, clock=Clock(year=2019)))
    (inc,) = correlate.correlate(res)
    assert inc.conntrack and "ended when the mon marked 1 OSD(s) down" in inc.cause
    assert "1 of them for no beacon (after 900.274113 s: mon_osd_report_timeout)" in inc.cause


IGNORED = [
    # (id, file name, line, why)
    ("reported-failed", "ceph.log",
     "2026-11-26T09:21:30.805236+0000 mon.a (mon.0) 355 : cluster [DBG] osd.0 reported failed by osd.3",
     "OSDMonitor::prepare_failure (v12 on; Firefly: `<< m->get_target() << \" reported failed by \"`): one report, "
     "not the decision; the `failed (` line that follows is the mark-down"),
    ("reported-immediately", "ceph.log",
     "2026-11-26T06:08:44.275784+0000 mon.a (mon.0) 41 : cluster [DBG] osd.2 reported immediately failed by osd.1",
     "v15 on: connection refused, a report"),
    ("marked-dead", "ceph.log",
     "2026-11-26T06:09:06.261615+0000 mon.a (mon.0) 65 : cluster [INF] osd.1 marked itself dead as of e17",
     "v16 on OSDMonitor::prepare_mark_me_dead: the mon acknowledging an OSD already down"),
    ("health-cleared", "ceph.log",
     "2026-11-26T09:22:06.935606+0000 mon.a (mon.0) 453 : cluster [INF] Health check cleared: SLOW_OPS (was: 6 slow "
     "ops, oldest one blocked for 31 sec, daemons [osd.0,osd.1] have slow ops.)", "the end of slow ops, not trouble"),
    ("fault-success", "ceph-osd.3.log",
     "2014-08-06 15:22:35.348284 7f8fd4fca700 2 -- 172.22.4.42:6802/9560 >> 172.22.4.5:0/3032136 pipe(0x7f92080686b0 "
     "sd=305 :6802 s=2 pgs=306100 cs=1 l=1 c=0x7f920805f340).fault 0: Success",
     "Pipe::fault's first line (level 2): the `on lossy channel` line after it carries the signal (counted as other "
     "teardown)"),
    ("other-ratelimited", "kern.log",
     "Aug  6 15:23:48 cartman06 kernel: [12713575.554784] TCP: request_sock_TCP: Possible SYN flooding on port 6800. "
     "Sending cookies.", "another net_*_ratelimited() message: not conntrack"),
]


@pytest.mark.parametrize(("fname", "line"), [(f[1], f[2]) for f in IGNORED], ids=[f[0] for f in IGNORED])
def test_forms_that_are_not_counted(fname: str, line: str) -> None:
    e = parse_line(line, 1, _ctx(fname))
    assert e is None or (isinstance(e, model.Event) and e.kind == model.MS_CLOSE), e
