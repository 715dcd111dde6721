"""Hypothesis fuzzing of every parser: no input makes them raise, and generated valid lines of every shape are
read back exactly."""

from __future__ import annotations

import calendar
import gzip
import os
import tempfile
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctguard.diagnose import ceph, correlate, kernel, model, scan
from ctguard.diagnose.clock import Clock
from ctguard.diagnose.lines import SKIPPED, SourceCtx, parse_line

CTX = SourceCtx(source="f", clock=Clock(year=2020))
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text that looks like logs: pieces of real lines glued with random text
PIECES = ["nf_conntrack: ", "table full", " in netns 4026532177", ", dropping packet", "net_ratelimit: ",
          "callbacks suppressed", " kernel: ", "[ 8723.214092] ", "Aug  6 15:23:48 ", "2014-08-06 15:22:35.348175 ",
          "2026-11-26T06:08:44.066+0000 ", "7f92f25a8700 ", " 10 ", "-- ", " >> ", "172.22.4.42:6802/9560",
          " pipe(0x7f9208035440 sd=382 :6802 s=2 pgs=26750 cs=1 l=1 c=0x7f92080021c0)", ".fault on lossy channel",
          " conn(0x1 0x2 crc :-1 s=READY pgs=2 cs=0 l=1 rev1=1 rx=0 tx=0)", "._fault", "osd.3 ", "mon.a (mon.0) 62 : ",
          "cluster [INF] ", " failed (", " boot", "marked itself down", " slow requests", "heartbeat_check: no reply from ",
          "wrongly marked me down", "{", '"__REALTIME_TIMESTAMP": "1"', '"MESSAGE": ', "}", "debug ", "  -12> ",
          "log_channel(cluster) log [WRN] : ", "done with init, starting boot process", "\x00", "\ufffd", " ", "(", ")",
          '"kind": "meta"', '"kind": "ct"', '"kind": "event"', '"t": 1.5', '"t0": 1795675211.8', '"drop": 3',
          '"osd": 1', '"event": "start"', ", "]
loglike = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=14).map("".join)


@FAST
@given(st.one_of(st.text(max_size=300), loglike))
def test_parse_line_never_raises(text: str) -> None:
    got = parse_line(text, 1, CTX)
    assert got is None or got is SKIPPED or isinstance(got, model.Event)


@FAST
@given(loglike)
def test_message_parsers_never_raise(text: str) -> None:
    kernel.kernel_message(text)
    ceph.messenger(text)
    ceph.osd_message(text)
    ceph.cluster_message(text)
    ceph.slow_message(text)
    ceph.daemon_from_message(text)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=200), loglike.map(lambda s: s.encode("utf-8", "replace"))), max_size=30),
       st.booleans(), st.booleans())
def test_scanner_never_raises_and_counts_lines(chunks: list[bytes], compress: bool, newline_at_end: bool) -> None:
    data = b"\n".join(chunks) + (b"\n" if newline_at_end and chunks else b"")
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.log")
        with open(p, "wb") as f:
            f.write(gzip.compress(data) if compress else data)
        results = [scan.scan([scan.InputSpec(p)], lambda s, h, dm: SourceCtx(source=s, host=h, daemon=dm,
                                                                                clock=CTX.clock),
                             workers=w, parallel_min_bytes=0 if w > 1 else 1 << 40, use_numpy=g)
               for w, g in ((1, True), (2, True), (1, False))]
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    for r in results:
        assert r.read == lines and r.matched + r.skipped <= r.read + lines
        correlate.correlate(r)  # and the correlation never raises either
    if not compress:
        want = [(e.kind, e.line_no) for e in results[0].events]
        assert all([(e.kind, e.line_no) for e in r.events] == want for r in results)


times = st.integers(min_value=calendar.timegm((2000, 1, 1, 0, 0, 0)), max_value=calendar.timegm((2037, 1, 1, 0, 0, 0)))


@FAST
@given(times, st.integers(0, 999999), st.sampled_from(["syslog", "rfc3339", "short-iso", "dmesg-T", "dmesg-iso"]),
       st.sampled_from(["nf_conntrack: table full, dropping packet", "ip_conntrack: table full, dropping packet.",
                        "nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet"]),
       st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True))
def test_generated_kernel_lines_read_back(t: int, us: int, fmt: str, msg: str, host: str) -> None:
    g = time.gmtime(t)
    clock = Clock(year=g.tm_year)
    if fmt == "syslog":
        line, ts, h = time.strftime("%b %e %H:%M:%S", g) + f" {host} kernel: [ 12.5] {msg}", t, host
    elif fmt == "rfc3339":
        line, ts, h = time.strftime("%Y-%m-%dT%H:%M:%S", g) + f".{us:06d}+00:00 {host} kernel: {msg}", t + us / 1e6, host
    elif fmt == "short-iso":
        line, ts, h = time.strftime("%Y-%m-%dT%H:%M:%S", g) + f"+0000 {host} kernel: {msg}", t, host
    elif fmt == "dmesg-T":
        line, ts, h = time.strftime("[%a %b %e %H:%M:%S %Y] ", g) + msg, t, ""
    else:
        line, ts, h = time.strftime("%Y-%m-%dT%H:%M:%S", g) + f",{us:06d}+00:00 {msg}", t + us / 1e6, ""
    e = parse_line(line, 3, SourceCtx(source="k", clock=clock))
    assert isinstance(e, model.Event)
    assert (e.kind, e.host, e.line_no) == (model.TABLE_FULL, h, 3)
    assert abs(e.ts - ts) < 1e-5
    assert e.detail == ("4026532177" if "netns" in msg else "")


addr = st.builds(lambda a, b, p, n: f"10.{a}.{b}.1:{p}/{n}", st.integers(0, 255), st.integers(0, 255),
                 st.integers(0, 7568), st.integers(0, 2**32))
addrvec = st.one_of(addr, st.builds(lambda x: f"[v2:{x},v1:{x}]", addr))


@FAST
@given(st.sampled_from(["simple", "async", "v1", "v2"]), addrvec, addrvec, st.integers(0, 1),
       st.sampled_from(["fault on lossy channel, failing", "fault 0: Success", "reader couldn't read tag, Success",
                        "writer finishing", "accept peer addr is really x"]), st.integers(0, 20))
def test_generated_messenger_lines_read_back(proto: str, local: str, peer: str, lossy: int, tail: str, level: int) -> None:
    params = {"simple": f"pipe(0x7f92 sd=382 :6802 s=2 pgs=26750 cs=1 l={lossy} c=0x7f92)",
              "async": f"conn(0x55d4 :6800 s=STATE_OPEN pgs=12 cs=1 l={lossy})",
              "v1": f"conn(0x55d4 0x55d5 :6801 s=OPENED pgs=3 cs=1 l={lossy})",
              "v2": f"conn(0x1 0x2 crc :-1 s=READY pgs=2 cs=0 l={lossy} rev1=1 rx=0 tx=0)"}[proto]
    prefix = {"simple": "--", "async": "--", "v1": "--1-", "v2": "--2-"}[proto]
    dot = "._" if proto == "v2" and tail.startswith("fault") else "."
    line = f"2019-07-15 09:46:40.479 ffff91adbbd0 {level:2d} {prefix} {local} >> {peer} {params}{dot}{tail}"
    e = parse_line(line, 1, SourceCtx(source="ceph-osd.4.log", daemon="osd.4", clock=Clock()))
    if tail.startswith("accept"):
        assert e is None
        return
    assert isinstance(e, model.Event)
    want = model.MS_FAULT if "lossy channel" in tail else model.MS_CLOSE
    assert (e.kind, e.peer, e.lossy, e.daemon) == (want, peer, bool(lossy), "osd.4")
