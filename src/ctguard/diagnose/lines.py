"""One log line -> one Event (or nothing, or "skipped").

Envelopes tried in order: journald JSON (`journalctl -o json`), BSD syslog / kern.log / `journalctl` short
(`Aug  6 15:23:48 host ident[pid]: msg`), `dmesg --time-format=iso`, Ceph's own daemon and cluster log lines,
RFC 3339 syslog and `journalctl -o short-iso` (`2026-11-26T06:05:51+0000 host ident[pid]: msg`), raw `dmesg`
(`[ 8723.214092] msg`) and `dmesg -T`. A line whose envelope is none of these (binary garbage, a truncated
line, another program's format) is SKIPPED; a line in a known envelope whose message is not about conntrack
or Ceph health is IGNORED (None).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from ctguard.diagnose import ceph, kernel, model
from ctguard.diagnose.clock import ISO_RE, Clock


class _Skipped:
    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED: Final = _Skipped()
Parsed = model.Event | None | _Skipped

SYSLOG_RE = re.compile(
    r"^(?:<\d{1,3}>)?([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d:\d\d:\d\d)(?:\.(\d{1,9}))? (\S+) ([^\s:\[]+)(?:\[(\d+)\])?: ?(.*)$")
ISO_SYSLOG_RE = re.compile(
    r"^(?:<\d{1,3}>1? ?)?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)) (\S+) ([^\s:\[]+)"
    r"(?:\[(\d+)\])?: ?(.*)$")
# ceph-osd@3.service (packages), ceph-FSID@osd.3.service (cephadm)
_UNIT_RE = re.compile(r"ceph-(?:[0-9a-f]{8}-[0-9a-f-]{27}@(osd|mon|mgr|mds)\.|(osd|mon|mgr|mds)@)([\w.-]+?)(?:\.service)?$")


@dataclass(frozen=True)
class SourceCtx:
    source: str  # path, or "-" for stdin
    host: str = ""  # from HOST=PATH on the command line
    daemon: str = ""  # from the file name: "osd.3", "mon.a", "cluster"
    clock: Clock = Clock()
    boot_time: float | None = None  # anchors raw dmesg seconds-since-boot
    state: dict[str, Any] = field(default_factory=dict)  # per-source memory (a lab recording's t0, last drop)


def _ev(ctx: SourceCtx, line_no: int, text: str, ts: float, kind: str, host: str, daemon: str,
        clock: str = model.WALL, count: int = 1, peer: str = "", lossy: bool = False, detail: str = "") -> model.Event:
    return model.Event(ts=ts, kind=kind, host=host or ctx.host, daemon=daemon, source=ctx.source,
                       line_no=line_no, text=text[:model.MAX_TEXT], clock=clock, count=count, peer=peer,
                       lossy=lossy, detail=detail[:120])


def parse_line(text: str, line_no: int, ctx: SourceCtx) -> Parsed:
    """Never raises on any input."""
    try:
        return _parse(text.rstrip("\r\n"), line_no, ctx)
    except (ValueError, KeyError, OverflowError, OSError, TypeError):
        return SKIPPED


def _parse(text: str, n: int, ctx: SourceCtx) -> Parsed:
    if not text or "\x00" in text:
        return SKIPPED
    c0 = text[0]
    if c0 == "{":
        return _journal_json(text, n, ctx)
    if "A" <= c0 <= "Z" or c0 == "<":
        m = SYSLOG_RE.match(text)
        if m:
            msg = m.group(8)
            if "0" <= msg[:1] <= "9" or msg.startswith("debug "):  # a Ceph line inside: its own time is finer
                d = ceph.DAEMON_LINE_RE.match(msg)
                if d:
                    hint = ctx.daemon
                    return _ceph_message(ctx.clock.iso(d), m.group(5), hint, d.group(11), n, ctx, text)
            ts = ctx.clock.syslog(m.group(1), int(m.group(2)), m.group(3), m.group(4))
            return _message(ts, m.group(5), m.group(6), msg, n, ctx, text)
    if "0" <= c0 <= "9" or c0 in " -d<":
        d = ceph.DAEMON_LINE_RE.match(text)
        if d:
            return _ceph_message(ctx.clock.iso(d), "", ctx.daemon, d.group(11), n, ctx, text)
        m = kernel.DMESG_ISO_RE.match(text)
        if m:
            im = ISO_RE.match(m.group(1))
            if im is None:
                return SKIPPED
            return _kernel(ctx.clock.iso(im), model.WALL, "", m.group(2), n, ctx, text)
        m = ceph.NATIVE_RE.match(text)
        if m:
            got = _ceph_native(m, n, ctx, text, "")
            if got is not SKIPPED:
                return got
        m = ISO_SYSLOG_RE.match(text)
        if m:
            im = ISO_RE.match(m.group(1))
            if im is None:
                return SKIPPED
            return _message(ctx.clock.iso(im), m.group(2), m.group(3), m.group(5), n, ctx, text)
    m = kernel.DMESG_RAW_RE.match(text)
    if m:
        secs = int(m.group(1)) + float("0." + m.group(2))
        if ctx.boot_time is not None:
            return _kernel(ctx.boot_time + secs, model.WALL, "", m.group(3), n, ctx, text)
        return _kernel(secs, model.BOOT, "", m.group(3), n, ctx, text)
    m = kernel.DMESG_T_RE.match(text)
    if m:
        ts = ctx.clock.ctime(m.group(1), int(m.group(2)), m.group(3), int(m.group(4)))
        return _kernel(ts, model.WALL, "", m.group(5), n, ctx, text)
    return SKIPPED


def _kernel(ts: float, clock: str, host: str, msg: str, n: int, ctx: SourceCtx, text: str) -> Parsed:
    k = kernel.kernel_message(msg)
    if k is None:
        return None
    return _ev(ctx, n, text, ts, k[0], host, "kernel", clock=clock, count=k[1], detail=k[2])


def _message(ts: float, host: str, ident: str, msg: str, n: int, ctx: SourceCtx, text: str,
             daemon_hint: str = "") -> Parsed:
    """The message part of a syslog/journal record."""
    if ident == "kernel":
        return _kernel(ts, model.WALL, host, kernel.INNER_STAMP_RE.sub("", msg, count=1), n, ctx, text)
    hint = daemon_hint or ctx.daemon
    d = ceph.DAEMON_LINE_RE.match(msg)
    if d:
        return _ceph_message(ctx.clock.iso(d), host, hint, d.group(11), n, ctx, text)
    m = ceph.NATIVE_RE.match(msg)
    if m:  # a Ceph daemon logging through syslog/journald keeps its own (more precise) timestamp
        got = _ceph_native(m, n, ctx, text, host, hint)
        return None if got is SKIPPED else got
    k = kernel.kernel_message(msg)
    if k is not None:
        return _ev(ctx, n, text, ts, k[0], host, "kernel", count=k[1], detail=k[2])
    if ident.startswith("ceph") or hint:
        return _ceph_message(ts, host, hint, msg, n, ctx, text)
    return None


def _ceph_native(m: re.Match[str], n: int, ctx: SourceCtx, text: str, host: str, hint: str = "") -> Parsed:
    im = ISO_RE.match(m.group(1))
    if im is None:
        return SKIPPED
    rest = m.group(2)
    d = ceph.DAEMON_REST_RE.match(rest)
    if d:
        return _ceph_message(ctx.clock.iso(im), host, hint or ctx.daemon, d.group(3), n, ctx, text)
    c = ceph.CLUSTER_REST_RE.match(rest)
    if c:
        return _cluster(ctx.clock.iso(im), host, c.group(1), c.group(3), n, ctx, text)
    return SKIPPED


def _cluster(ts: float, host: str, name: str, msg: str, n: int, ctx: SourceCtx, text: str) -> Parsed:
    if name.startswith("osd."):  # an OSD's own clog line, e.g. "map e17 wrongly marked me down at e17"
        o = ceph.osd_message(msg)
        if o is None:
            return None
        return _osd(ctx, n, text, ts, o, host, name)
    c = ceph.cluster_message(msg)
    if c is None:
        return None
    return _ev(ctx, n, text, ts, c[0], host, c[2] or name, count=c[1], peer=name, detail=c[4])


def _osd(ctx: SourceCtx, n: int, text: str, ts: float, o: tuple[str, int, str, str], host: str,
         daemon: str) -> model.Event:
    kind, count, peer, detail = o
    if kind == model.WRONGLY_DOWN and peer:  # "Monitor daemon marked osd.N down, but it is still running": osd.N
        daemon, peer = peer, ""
    elif kind == model.OSD_START and not daemon and detail.startswith("process start, pid "):
        daemon = f"ceph-osd[{detail.rpartition(' ')[2]}]"  # (a container's log: name the file or the unit)
    return _ev(ctx, n, text, ts, kind, host, daemon, count=count, peer=peer, detail=detail)


def _ceph_message(ts: float, host: str, hint: str, msg: str, n: int, ctx: SourceCtx, text: str) -> Parsed:
    if " >> " in msg:
        mm = ceph.messenger(msg)
        if mm is None:
            return None
        daemon = hint if hint and hint != "cluster" else mm[1]
        return _ev(ctx, n, text, ts, mm[0], host, daemon, peer=mm[2], lossy=mm[3], detail=mm[4])
    daemon = ceph.daemon_from_message(msg) or (hint if hint != "cluster" else "")
    if "log_channel(cluster)" in msg or msg.startswith("log ["):
        # a daemon's copy of its cluster-log message: `log_channel(cluster) log [INF] : osd.1 failed (...)`
        i = msg.find("] : ")
        if i >= 0:
            inner = msg[i + 4:]
            if daemon.startswith("osd.") or not daemon and ctx.daemon.startswith("osd."):
                o = ceph.osd_message(inner)
                if o is not None:
                    return _osd(ctx, n, text, ts, o, host, daemon or ctx.daemon)
                return None
            c = ceph.cluster_message(inner)
            if c is not None:
                return _ev(ctx, n, text, ts, c[0], host, c[2] or daemon, count=c[1], detail=c[4])
            o = ceph.osd_message(inner)  # an OSD's clog line in a log that does not say which daemon wrote it
            if o is not None and o[0] in (model.WRONGLY_DOWN, model.OSD_START):
                return _osd(ctx, n, text, ts, o, host, daemon)
            return None
    o = ceph.osd_message(msg)
    if o is not None:
        return _osd(ctx, n, text, ts, o, host, daemon)
    c = ceph.cluster_message(msg)
    if c is not None:
        return _ev(ctx, n, text, ts, c[0], host, c[2] or daemon, count=c[1], detail=c[4])
    return None


def _str(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(b, int) and 0 <= b < 256 for b in v):
        return bytes(v).decode("utf-8", "replace")  # journald stores non-UTF-8 messages as byte arrays
    if isinstance(v, int | float):
        return str(v)
    return ""


def _journal_json(text: str, n: int, ctx: SourceCtx) -> Parsed:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return SKIPPED
    if not isinstance(obj, dict):
        return SKIPPED
    if "__REALTIME_TIMESTAMP" not in obj and "kind" in obj and "t" in obj:
        return _lab_record(obj, text, n, ctx)
    rt = _str(obj.get("__REALTIME_TIMESTAMP"))
    if not rt.isdigit():
        return SKIPPED
    ts = int(rt) / 1e6
    msg = _str(obj.get("MESSAGE"))
    host = _str(obj.get("_HOSTNAME"))
    ident = _str(obj.get("SYSLOG_IDENTIFIER")) or _str(obj.get("_COMM"))
    if _str(obj.get("_TRANSPORT")) == "kernel":
        ident = "kernel"
    hint = ""
    um = _UNIT_RE.search(_str(obj.get("_SYSTEMD_UNIT")))
    if um:
        hint = f"{um.group(1) or um.group(2)}.{um.group(3)}"
    return _message(ts, host, ident, msg, n, ctx, text, daemon_hint=hint)


def _lab_osd(v: Any) -> int | None:
    """The OSD of a lab record: `"osd": 3` (events) or `"osd": "osd.3"` (boot and marked_down records)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        num = v[4:] if v.startswith("osd.") else v
        if num.isdigit():
            return int(num)
    return None


def _lab_record(obj: dict[str, Any], text: str, n: int, ctx: SourceCtx) -> Parsed:
    """A line of a `ctguard lab reproduce` series (data/lab/<run>/<scenario>.jsonl, docs/lab.md): the first
    line (`meta`) gives t0 and the host; `ct` samples carry the kernel's cumulative `drop` counter, the best
    drop evidence there is (kernel-conntrack.md 2.4); `event` start, `boot` and `marked_down` name OSDs."""
    kind = obj.get("kind")
    st = ctx.state
    if kind == "meta":
        t0 = obj.get("t0")
        if not isinstance(t0, int | float):
            return SKIPPED
        st["t0"], st["host"] = float(t0), _str(obj.get("host"))
        st["netns"] = _str(obj.get("netns_inode"))
        sc = obj.get("scenario")
        st["scenario"] = _str(sc.get("name")) if isinstance(sc, dict) else ""
        st.pop("drop", None)
        return None
    t = obj.get("t")
    if "t0" not in st or not isinstance(t, int | float):
        return SKIPPED
    ts = st["t0"] + float(t)
    host = ctx.host or st["host"]
    if kind == "ct":
        drop = obj.get("drop")
        if not isinstance(drop, int):
            return SKIPPED
        prev = st.get("drop")
        st["drop"] = drop
        if prev is None or drop <= prev:
            return None
        return _ev(ctx, n, text, ts, model.COUNTED_DROPS, host, "kernel", count=drop - prev, detail=st["netns"],
                   peer=st["scenario"])  # (peer: the lab scenario, to name the incident after it)
    osd = _lab_osd(obj.get("osd"))
    if osd is None:
        return None
    if kind == "event" and obj.get("event") == "start":
        return _ev(ctx, n, text, ts, model.OSD_START, host, f"osd.{osd}", detail="process start (lab)")
    if kind == "boot":
        return _ev(ctx, n, text, ts, model.MON_BOOT, host, f"osd.{osd}")
    if kind == "marked_down":
        return _ev(ctx, n, text, ts, model.MARKED_DOWN, host, f"osd.{osd}", detail="failed (lab record)")
    return None
