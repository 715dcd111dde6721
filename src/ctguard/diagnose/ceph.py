"""Ceph daemon and cluster log lines: the shapes and the messages that matter for a conntrack incident.

Line shapes (all versions from Firefly to Squid):
* daemon log: `TIMESTAMP THREAD LEVEL MESSAGE`, e.g.
  `2014-08-06 15:22:35.348175 7f92f25a8700 10 -- ...` (Firefly, local time, no zone),
  `2019-07-15 09:46:40.479 ffff91adbbd0  0 ...` (Nautilus), `2026-11-26T06:08:44.066+0000 7f36e0e336c0  2 ...`
  (Octopus on); containers prefix `debug `, and the crash dump of recent events prefixes `  -123> `.
* cluster log (`ceph.log` on the mons, `ceph -w`): `TIMESTAMP mon.a (mon.0) 62 : cluster [INF] MESSAGE`,
  Firefly `TIMESTAMP mon.0 172.22.4.1:6789/0 1234 : [INF] MESSAGE`, `ceph -w` `TIMESTAMP mon.a [INF] MESSAGE`.

Messenger lines carry `LOCAL >> PEER pipe(...)` (SimpleMessenger, src/msg/simple/Pipe.cc) or `conn(...)`
(AsyncMessenger: `-- ` Luminous/Mimic AsyncConnection.cc, `--1- ` ProtocolV1.cc, `--2- ` ProtocolV2.cc), then
`.fault on lossy channel, failing` (Pipe::fault, level 10; ProtocolV1::fault level 1) or
`._fault on lossy channel, failing` (ProtocolV2::_fault, level 2). `l=1` marks a lossy connection: clients on
the public messenger and the heartbeat messengers. A lossy connection is not retried by the messenger: the
client opens a new one, and every new one is a new conntrack entry.
Monitor messages (src/mon/OSDMonitor.cc): `osd.N ADDR failed (N reporters from different host after X >=
grace Y)` (Firefly: `(N reports from M peers after ...)`), `osd.N marked itself down`, `osd.N marked down after
no beacon for X seconds` (mon_osd_report_timeout, 900 s; before Luminous `... no pg stats for X seconds`),
`osd.N ADDR boot`. OSD messages (src/osd/OSD.cc): `heartbeat_check: no reply from ADDR osd.N ...`,
`map eN wrongly marked me down at eM`, `done with init, starting boot process`, slow request/ops warnings.
"""

from __future__ import annotations

import re

from ctguard.diagnose import model

# TIMESTAMP then the rest; optional `debug ` (containers) and ` -123> ` (dump of recent events).
NATIVE_RE = re.compile(
    r"^(?:debug )?(?:\s*-?\d+> )?(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?) (.*)$")
DAEMON_REST_RE = re.compile(r"^([0-9a-f]{4,16}) +(-?\d{1,2}) (.*)$")
# The common case in one match (a daemon line: TIMESTAMP THREAD LEVEL MESSAGE); groups 1-8 are ISO_RE's
# (clock.Clock.iso reads them), 11 is the message. Saves two regex passes and two copies per storm line.
DAEMON_LINE_RE = re.compile(
    r"^(?:debug )?(?:\s*-?\d+> )?(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)? "
    r"([0-9a-f]{4,16}) +(-?\d{1,2}) (.*)$")
CLUSTER_REST_RE = re.compile(
    r"^((?:mon|osd|mgr|mds|client)\.[\w.-]+) (?:\([\w.]+\) )?(?:[\w.:/\[\],-]+ ){0,2}?(?:\d+ : )?\s*(?:\w+ )?"
    r"\[(DBG|INF|WRN|ERR|SEC)\] (.*)$")

_OSD_PREFIX_RE = re.compile(r"^(osd\.\d+) \d+ ")
_HB_RE = re.compile(r"heartbeat_check: no reply from (?:(\S+) )?(osd\.\d+)")
_WRONGLY_RE = re.compile(r"wrongly marked me down(?: at e(\d+))?")
_MON_BOOT_RE = re.compile(r"^(osd\.\d+) (?:\S+ )?boot\s*$")
_FAILED_RE = re.compile(r"^(osd\.\d+) (?:\S+ )?failed \((.*)$")
_ITSELF_RE = re.compile(r"^(osd\.\d+) marked itself down")  # not "marked itself dead as of eN"
_NO_REPORT_RE = re.compile(r"^(osd\.\d+) marked down after no (beacon|pg stats) for ([\d.]+) ?seconds")
_SLOW_RES = (
    re.compile(r"(\d+) slow requests?\b"),  # "3 slow requests, 1 included below", "12 slow requests are blocked"
    re.compile(r"(\d+) slow ops\b"),  # "get_health_metrics reporting 3 slow ops", "10 slow ops, oldest one ..."
    re.compile(r"\b(\d+) requests are blocked > "),  # Hammer/Jewel health: "12 requests are blocked > 32 sec"
    re.compile(r"\bslow request ()(?:[\d.]+ seconds old|\S+\(.*\) initiated )"),  # one request described in full
)
_STILL_RUNNING_RE = re.compile(r"Monitor daemon marked (osd\.\d+) down, but it is still running")
_PROCESS_RE = re.compile(r"\bceph version .*, process ceph-osd, pid (\d+)")


def daemon_from_message(msg: str) -> str:
    m = _OSD_PREFIX_RE.match(msg)
    return m.group(1) if m else ""


def messenger(msg: str) -> tuple[str, str, str, bool, str] | None:
    """(kind, local, peer, lossy, tail) for a messenger line worth counting, else None.
    Plain string operations, not a regular expression: in a storm most candidate lines are these."""
    i = msg.find(" >> ")
    if i <= 0:
        return None
    local = msg[:i].rpartition(" ")[2]
    peer, _, rest = msg[i + 4:].partition(" ")
    if not (local and peer and (rest.startswith("conn(") or rest.startswith("pipe("))):
        return None
    j = rest.find(").")
    if j < 0:
        return None
    params, tail = rest[5:j], rest[j + 2:]
    k = params.find(" l=")
    lossy = k >= 0 and params[k + 3:k + 4] == "1"
    if "fault" in tail[:8]:
        if "on lossy channel" in tail:
            return (model.MS_FAULT, local, peer, lossy, tail)
        return (model.MS_CLOSE, local, peer, lossy, tail)
    if "couldn't read tag" in tail or "writer finishing" in tail:
        return (model.MS_CLOSE, local, peer, lossy, tail)
    if "RESETSESSION" in tail or "session reset" in tail or tail.startswith("reset_session"):
        return (model.MS_RESET, local, peer, lossy, tail)
    return None


def osd_message(msg: str) -> tuple[str, int, str, str] | None:
    """Daemon-log messages: (kind, count, peer, detail)."""
    if "no reply from" in msg:
        m = _HB_RE.search(msg)
        if m:
            return (model.HB_NO_REPLY, 1, m.group(2), m.group(1) or "")
    if "wrongly marked me down" in msg:
        m = _WRONGLY_RE.search(msg)
        return (model.WRONGLY_DOWN, 1, "", f"e{m.group(1)}" if m and m.group(1) else "")
    if "but it is still running" in msg:
        m = _STILL_RUNNING_RE.search(msg)
        if m:
            return (model.WRONGLY_DOWN, 1, m.group(1), "still running")
    if "done with init, starting boot process" in msg:
        return (model.OSD_START, 1, "", "")
    if "process ceph-osd" in msg:
        m = _PROCESS_RE.search(msg)
        if m:
            return (model.OSD_START, 1, "", f"process start, pid {m.group(1)}")
    return slow_message(msg)


def slow_message(msg: str) -> tuple[str, int, str, str] | None:
    if "slow " not in msg and "requests are blocked" not in msg:
        return None
    for rx in _SLOW_RES:
        m = rx.search(msg)
        if m:
            return (model.SLOW, int(m.group(1)) if m.group(1) else 1, "", "")
    return None


def cluster_message(msg: str) -> tuple[str, int, str, str, str] | None:
    """Cluster-log messages: (kind, count, subject daemon, peer, detail)."""
    if msg.endswith("boot") or msg.endswith("boot "):
        m = _MON_BOOT_RE.match(msg)
        if m:
            return (model.MON_BOOT, 1, m.group(1), "", "")
    if " failed (" in msg:
        m = _FAILED_RE.match(msg)
        if m:
            return (model.MARKED_DOWN, 1, m.group(1), "", "failed (" + m.group(2))
    if "marked " in msg:
        m = _ITSELF_RE.match(msg)
        if m:
            return (model.MARKED_DOWN, 1, m.group(1), "", "marked itself down")
        m = _NO_REPORT_RE.match(msg)
        if m:
            return (model.MARKED_DOWN, 1, m.group(1), "", f"no {m.group(2)} for {m.group(3)} s")
    s = slow_message(msg) if not msg.startswith("Health check cleared") else None  # (it is over)
    if s is not None:
        return (s[0], s[1], "", "", "")
    return None
