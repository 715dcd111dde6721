"""Correlation: the 2014 incident (its real lines, and a full reconstruction in every kernel log format), the
real Ceph 16.2.15 lab lines, and the cases that are not a conntrack overflow."""

from __future__ import annotations

import calendar
import json
import re
import time
from pathlib import Path

import pytest

from ctguard.diagnose import correlate, model, report, scan
from ctguard.diagnose.clock import Clock
from ctguard.diagnose.lines import SourceCtx

LOGS = Path(__file__).parent.parent / "fixtures" / "logs"
FULL = LOGS / "incident-2014-full"


def diagnose(*specs: str, year: int | None = 2014, boot: float | None = None,
             **opts: object) -> tuple[scan.ScanResult, list[correlate.Incident], dict[str, object]]:
    clock = Clock(year=year)

    def ctx(path: str, host: str, daemon: str) -> SourceCtx:
        return SourceCtx(source=path, host=host, daemon=daemon, clock=clock, boot_time=boot)

    res = scan.scan([scan.parse_spec(s) for s in specs], ctx, workers=1)
    incs = correlate.correlate(res, correlate.Options(**opts))  # type: ignore[arg-type]
    return res, incs, report.document(res, incs)


def test_the_incident_lines_as_posted() -> None:
    res, incs, doc = diagnose(str(LOGS / "incident-2014"))
    # "fault 0: Success" is not looked at: the "fault on lossy channel" line after it carries the signal
    assert doc["lines"] == {"read": 7, "matched": 6, "skipped": 0, "ignored": 1, "duplicates": 0}
    (inc,) = incs
    assert inc.cause_kind == "conntrack-overflow-reconnect-storm"
    assert inc.hosts == ["cartman06"] and inc.drops_logged == 1
    texts = [e.text for c in inc.claims for e in c.evidence]
    assert any("nf_conntrack: table full, dropping packet" in t for t in texts)
    assert any("fault on lossy channel, failing" in t for t in texts)
    assert "no daemon restart line" in " ".join(c.claim for c in inc.claims)
    d = doc["incidents"][0]  # type: ignore[index]
    assert d["start"] == "2014-08-06T15:22:35.344Z" and d["end"] == "2014-08-06T15:23:48.000Z"


def check_full(doc: dict[str, object], incs: list[correlate.Incident]) -> None:
    (inc,) = incs
    assert inc.cause_kind == "conntrack-overflow-after-restart" and inc.conntrack
    assert [p.daemon for p in inc.restarted] == [f"osd.{i}" for i in range(8)]
    assert [p.daemon for p in inc.marked_down] == [f"osd.{i}" for i in range(8)]
    assert all(p.how.startswith("no pg stats for 900") for p in inc.marked_down)
    (k,) = inc.kernel
    assert k.host == "cartman06" and k.drops_logged == 1740 and 880 < k.duration < 900
    assert inc.suppressed == sum(int(m.group(1)) for m in re.finditer(
        r"(\d+) callbacks suppressed", (FULL / "cartman06" / "kern.log").read_text()))
    d = doc["incidents"][0]  # type: ignore[index]
    assert d["drops"] == 1740 + inc.suppressed and d["hosts"] == ["cartman06"]
    assert d["start"] == "2014-08-06T15:20:00.000Z"  # the first OSD process start (its init ended at 15:20:04.2)
    assert "triggered by the restart of 8 daemon(s)" in d["cause"]
    assert "sustained by a lossy-client reconnect loop" in d["cause"]
    assert "ended when the mon marked 8 OSD(s) down" in d["cause"]
    for c in d["claims"]:
        assert c["evidence"], c["claim"]
        for e in c["evidence"]:  # every piece of evidence is a real line of a real input
            assert e["text"] in Path(e["source"]).read_text()
    osd = {x["daemon"]: x for x in d["daemons"]}
    assert osd["osd.3"]["lossy_faults"] > 100 and osd["osd.3"]["distinct_peers"] > 20
    assert osd["osd.3"]["heartbeat_no_reply"] > 0 and osd["osd.3"]["slow_requests_max"] > 0


def test_full_reconstruction_names_restart_loop_and_markdown() -> None:
    _, incs, doc = diagnose(f"cartman06={FULL}/cartman06", str(FULL / "cartman01"))
    check_full(doc, incs)
    assert doc["verdict"] == "CRIT"


BOOT = calendar.timegm((2014, 8, 6, 15, 23, 48, 0, 0, 0)) + 0.554784 - 12713575.554784
_KERN = re.compile(r"^(\w{3}) +(\d+) (\d\d:\d\d:\d\d) (\S+) kernel: \[\s*(\d+\.\d+)\] (.*)$")


def _convert(line: str, fmt: str) -> str:
    m = _KERN.match(line)
    if m is None:
        return line
    up, msg = float(m.group(5)), m.group(6)
    t = BOOT + up
    iso = lambda sep, off: (__import__("time").strftime("%Y-%m-%dT%H:%M:%S", __import__("time").gmtime(t))  # noqa: E731
                            + f"{sep}{int(t % 1 * 1e6):06d}" + off)
    if fmt == "dmesg":
        return f"[{up:14.6f}] {msg}"
    if fmt == "dmesg-T":
        return "[" + __import__("time").strftime("%a %b %e %H:%M:%S %Y", __import__("time").gmtime(t)) + f"] {msg}"
    if fmt == "dmesg-iso":
        return iso(",", "+00:00") + f" {msg}"
    if fmt == "rfc3339":
        return iso(".", "+00:00") + f" cartman06 kernel: [{up:.6f}] {msg}"
    if fmt == "short-iso":
        return iso(".", "+0000") + f" cartman06 kernel: {msg}"
    if fmt == "json":
        return json.dumps({"__REALTIME_TIMESTAMP": str(round(t * 1e6)), "_HOSTNAME": "cartman06",
                           "_TRANSPORT": "kernel", "SYSLOG_IDENTIFIER": "kernel", "MESSAGE": msg})
    if fmt == "doubled-netns":
        return line.replace("nf_conntrack: table full,", "nf_conntrack: nf_conntrack: table full in netns 4026531840,")
    if fmt == "ip_conntrack":
        return line.replace("nf_conntrack: table full, dropping packet", "ip_conntrack: table full, dropping packet.")
    if fmt == "__ratelimit":
        return line.replace("net_ratelimit:", "__ratelimit:")
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["dmesg", "dmesg-T", "dmesg-iso", "rfc3339", "short-iso", "json", "doubled-netns",
                                 "ip_conntrack", "__ratelimit"])
def test_every_kernel_format_gives_the_same_diagnosis(tmp_path: Path, fmt: str) -> None:
    lines = (FULL / "cartman06" / "kern.log").read_text().splitlines()
    (tmp_path / "kern.log").write_text("\n".join(_convert(x, fmt) for x in lines) + "\n")
    _, incs, doc = diagnose(f"cartman06={tmp_path / 'kern.log'}", str(FULL / "cartman01"),
                            boot=BOOT if fmt == "dmesg" else None)
    (inc,) = incs
    assert inc.cause_kind == "conntrack-overflow-after-restart"  # restarts from the cluster log's boot lines
    (k,) = inc.kernel
    assert k.host == "cartman06" and k.drops_logged == 1740 and 880 < k.duration < 900
    assert inc.suppressed == sum(int(m.group(1)) for m in re.finditer(r"(\d+) callbacks suppressed", "\n".join(lines)))
    assert len(inc.restarted) == 8 and len(inc.marked_down) == 8
    if fmt == "doubled-netns":
        assert doc["incidents"][0]["table_full"][0]["netns"] == ["4026531840"]  # type: ignore[index]


def test_raw_dmesg_without_boot_time_is_its_own_clock(tmp_path: Path) -> None:
    p = tmp_path / "dmesg.txt"
    p.write_text("[ 8755.832058] net_ratelimit: 149990 callbacks suppressed\n"
                 + "".join(f"[ 8755.{832071 + i:06d}] nf_conntrack: nf_conntrack: table full in netns 4026532177, "
                           "dropping packet\n" for i in range(10)))
    _, incs, doc = diagnose(f"h1={p}")
    (inc,) = incs
    assert inc.clock == model.BOOT and inc.drops_logged == 10 and inc.suppressed == 149990
    assert doc["incidents"][0]["start"] == "boot+8755.832s"  # type: ignore[index]
    assert inc.cause_kind == "conntrack-overflow"


def test_pacific_lab_without_kernel_logs_is_not_blamed_on_conntrack() -> None:
    _, incs, doc = diagnose(str(LOGS / "pacific-1host"), year=None)
    (inc,) = incs
    assert inc.cause_kind == "no-kernel-log" and doc["verdict"] == "WARN"
    assert {p.daemon for p in inc.marked_down} == {"osd.0", "osd.1", "osd.2"}
    # the three starts, osd.2 after its SIGKILL, osd.1 after its SIGTERM
    assert [p.daemon for p in inc.restarted] == ["osd.0", "osd.1", "osd.2", "osd.2", "osd.1"]
    assert "add kern.log" in inc.cause


def test_clean_kernel_log_rules_conntrack_out(tmp_path: Path) -> None:
    k = tmp_path / "kern.log"
    k.write_text("Nov 26 06:08:40 vm kernel: [  100.000000] e1000e: eth0 NIC Link is Up\n")
    _, incs, _ = diagnose(str(LOGS / "pacific-1host"), f"vm={k}", year=2026)
    assert incs[0].cause_kind == "not-conntrack" and "did not overflow" in incs[0].cause


def test_pacific_lab_with_a_netns_overflow_is_conntrack(tmp_path: Path) -> None:
    k = tmp_path / "kern.log"
    k.write_text("".join(f"Nov 26 06:08:{40 + i} vm kernel: [  1{i}0.5] nf_conntrack: nf_conntrack: table full in "
                         "netns 4026532177, dropping packet\n" for i in range(6)))
    _, incs, doc = diagnose(str(LOGS / "pacific-1host"), f"vm={k}", year=2026)
    inc = incs[0]
    assert inc.conntrack and inc.cause_kind == "conntrack-overflow-after-restart"
    assert "vm" in inc.hosts and doc["verdict"] == "CRIT"


def test_quiet_logs_have_no_incident(tmp_path: Path) -> None:
    p = tmp_path / "ceph-osd.1.log"
    p.write_text("2026-11-26T06:08:31.014+0000 7f36e39f71c0  0 osd.1 0 done with init, starting boot process\n"
                 "2026-11-26T06:08:32.014+0000 7f36e39f71c0  1 osd.1 5 state: booting -> active\n")
    _, incs, doc = diagnose(str(p), year=None)
    assert incs == [] and doc["verdict"] == "OK"


def test_unordered_input_gives_the_same_answer(tmp_path: Path) -> None:
    host = tmp_path / "cartman06"
    host.mkdir()
    for p in (FULL / "cartman06").iterdir():
        lines = p.read_text().splitlines()
        (host / p.name).write_text("\n".join(lines[::-1]) + "\n")  # newest first
    _, incs, doc = diagnose(f"cartman06={host}", str(FULL / "cartman01"))
    check_full(doc, incs)


def test_separate_incidents_are_separate(tmp_path: Path) -> None:
    p = tmp_path / "kern.log"
    p.write_text("Aug  6 10:00:00 a kernel: nf_conntrack: table full, dropping packet\n"
                 "Aug  6 12:00:00 b kernel: nf_conntrack: table full, dropping packet\n")
    _, incs, _ = diagnose(str(p))
    assert [i.hosts for i in incs] == [["a"], ["b"]]


def test_html_report_is_self_contained(tmp_path: Path) -> None:
    _, incs, doc = diagnose(f"cartman06={FULL}/cartman06", str(FULL / "cartman01"))
    page = report.html_report(doc, incs)
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") == 1
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "conntrack-overflow-after-restart" in page and "&lt;" not in doc["incidents"][0]["cause"]  # type: ignore[index]
    png = report.timeline_png(incs[0])
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_several_hosts_at_once(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("".join(f"Aug  6 15:20:{i}0 stor-a kernel: nf_conntrack: table full, dropping packet\n" for i in range(3)))
    b.write_text("Aug  6 15:21:00 stor-b kernel: e1000e: eth0 NIC Link is Up\n")
    osd = tmp_path / "ceph-osd.7.log"
    osd.write_text("2014-08-06 15:19:30.000000 7f92f25a8700 0 osd.7 12345 done with init, starting boot process\n")
    _, incs, doc = diagnose(str(a), str(b), f"stor-b={osd}")
    (inc,) = incs
    assert [k.host for k in inc.kernel] == ["stor-a"]  # only the host whose table overflowed
    assert inc.hosts == ["stor-a", "stor-b"] and [(p.daemon, p.host) for p in inc.restarted] == [("osd.7", "stor-b")]
    assert doc["incidents"][0]["table_full"][0]["duration_s"] == 20.0  # type: ignore[index]


def test_one_incident_per_overflow(tmp_path: Path) -> None:
    """Two overflows a few minutes apart, each after its own restart, with mark-downs after the first only: two
    incidents, each with its own drops (logged lines and a drop counter's rises), restarts and mark-downs. The
    drops of one overflow come a few seconds apart (the rate limit's bursts); 30 drop-free seconds end it."""
    kern = tmp_path / "h1.kern.log"
    lines = []
    for t0 in (0, 200):
        for s in range(0, 40, 5):
            lines.append(f"Aug  6 15:{22 + (t0 + 10 + s) // 60:02d}:{(t0 + 10 + s) % 60:02d} h1 kernel: "
                         f"nf_conntrack: table full, dropping packet")
    kern.write_text("\n".join(lines) + "\n")
    cl = tmp_path / "ceph.log"
    cl.write_text(
        "2014-08-06 15:22:00.000000 mon.0 10.0.0.1:6789/0 1 : [INF] osd.1 10.0.0.2:6800/1 boot\n"
        "2014-08-06 15:22:35.000000 mon.0 10.0.0.1:6789/0 2 : [INF] osd.1 10.0.0.2:6800/1 failed "
        "(3 reports from 3 peers after 21.000 >= grace 20.000)\n"
        "2014-08-06 15:25:19.000000 mon.0 10.0.0.1:6789/0 3 : [INF] osd.2 10.0.0.2:6804/1 boot\n")
    _, incs, doc = diagnose(str(kern), f"h1={cl}")
    assert [i.drops_logged for i in incs] == [8, 8], [i.cause for i in incs]
    assert [[p.daemon for p in i.restarted] for i in incs] == [["osd.1"], ["osd.2"]]
    assert [[p.daemon for p in i.marked_down] for i in incs] == [["osd.1"], []]
    assert "ended when the mon marked 1 OSD(s) down" in incs[0].cause and "mark-down" not in incs[0].cause[-20:]
    assert "no mark-down line" in incs[1].cause


def test_lab_recording_series(tmp_path: Path) -> None:
    """The shape of `ctguard lab reproduce` output (docs/lab.md): drops from the kernel's drop counter."""
    rows = [{"kind": "meta", "t": 0.0, "t0": 1795675211.836094, "host": "ctlx1-h1", "netns_inode": 4026532867,
             "scenario": {"name": "all-at-once"}},
            {"t": 0.1, "kind": "ct", "count": 262034, "drop": 7, "early_drop": 0},
            {"t": 2.1, "kind": "event", "event": "stop", "osd": 0, "pid": 4427},
            {"t": 3.3, "kind": "event", "event": "start", "osd": 0, "pid": 6957},
            {"t": 6.5, "kind": "ct", "count": 262144, "drop": 9, "early_drop": 0},
            {"t": 6.6, "kind": "ct", "count": 262144, "drop": 65, "early_drop": 0},
            {"t": 7.0, "kind": "faults", "lines": 37},
            {"t": 9.0, "kind": "ct", "count": 262144, "drop": 65, "early_drop": 0},
            {"t": 20.0, "kind": "marked_down", "osd": 1}]
    p = tmp_path / "all-at-once.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res, incs, doc = diagnose(str(p), year=None)
    (inc,) = incs
    assert inc.drops_counted == 58 and inc.drops == 58  # deltas only: the 7 before the window are not counted
    assert inc.cause_kind == "conntrack-overflow-after-restart" and inc.hosts == ["ctlx1-h1"]
    assert [p.daemon for p in inc.restarted] == ["osd.0"] and [p.daemon for p in inc.marked_down] == ["osd.1"]
    assert inc.kernel[0].netns == ["4026532867"] and res.inputs[0].kinds == ["kernel-counters"]
    assert doc["incidents"][0]["drops_counted"] == 58  # type: ignore[index]


def test_background_faults_all_day_do_not_stretch_the_incident_back(tmp_path: Path) -> None:
    """A host whose clients fault a few times a minute all day: the incident starts within --lookback of the
    first drop, not at the start of the log (the reach-back once walked through all contiguous activity)."""
    fault = ("Aug  6 {t} cartman06 ceph-osd[2231]: 2014-08-06 {t}.123456 7f92f25a8700 10 -- 10.0.0.6:6800/2231 >> "
             "10.0.9.{p}:0/1001 pipe(0x1 sd=3 :6800 s=2 pgs=7 cs=1 l=1 c=0x2).fault on lossy channel, failing")
    drop = "Aug  6 {t} cartman06 kernel: [ 1234.5] nf_conntrack: table full, dropping packet"
    lines = []
    for s in range(0, 12 * 3600, 20):  # 06:00 .. 18:00, one fault every 20 s
        t = f"{6 + s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
        lines.append(fault.format(t=t, p=s % 200))
        if s == 10 * 3600:  # 16:00:00
            lines += [drop.format(t=t)] * 3
    p = tmp_path / "syslog"
    p.write_text("\n".join(lines) + "\n")
    _res, incs, doc = diagnose(str(p), lookback=600.0)
    (inc,) = incs
    first_drop = calendar.timegm((2014, 8, 6, 16, 0, 0, 0, 0, 0))
    assert first_drop - 600 <= inc.start <= first_drop and inc.drops_logged == 3


def _dmesg_t(kern_line: str, drift: int) -> str:
    """The kern.log line as `dmesg -T` prints it: no host, a ctime stamp that drifts from the wall clock."""
    m = re.match(r"^(\w{3}) +(\d+) (\d\d:\d\d:\d\d) \S+ kernel: \[[\d. ]+\] (.*)$", kern_line)
    assert m
    t = calendar.timegm(time.strptime(f"2014 {m.group(1)} {m.group(2)} {m.group(3)}", "%Y %b %d %H:%M:%S")) + drift
    return time.strftime("[%a %b %e %H:%M:%S %Y] ", time.gmtime(t)) + m.group(4)


@pytest.mark.parametrize("drift", [0, 7, -42])
def test_kern_log_and_its_dmesg_t_count_each_line_once(tmp_path: Path, drift: int) -> None:
    """A sosreport-like directory: the host's kern.log and its `dmesg -T` (the ring buffer holds the later
    part only, and its clock drifts by `drift` s): each kernel line counts once, the kern.log copy is kept."""
    kern = (FULL / "cartman06" / "kern.log").read_text().splitlines()
    host = tmp_path / "cartman06"
    host.mkdir()
    (host / "kern.log").write_text("\n".join(kern) + "\n")
    ring = [_dmesg_t(x, drift) for x in kern[len(kern) // 3:] if " kernel: [" in x]
    (host / "dmesg_-T").write_text("\n".join(ring) + "\n")
    alone_res, alone, _ = diagnose(str(host / "kern.log"))
    res, incs, doc = diagnose(str(host))
    (inc,), (ref,) = incs, alone
    assert (inc.drops_logged, inc.suppressed) == (ref.drops_logged, ref.suppressed) == (1740, ref.suppressed)
    assert ref.suppressed > 0 and [k.host for k in inc.kernel] == ["cartman06"]
    dups = {Path(i["source"]).name: i["duplicates"] for i in doc["inputs"]}  # type: ignore[index, union-attr]
    assert dups["kern.log"] == 0 and dups["dmesg_-T"] == sum(
        1 for x in ring if "table full" in x or "callbacks suppressed" in x)
    assert doc["lines"]["duplicates"] == dups["dmesg_-T"]  # type: ignore[index]


def test_journal_json_of_two_hosts_and_their_kern_logs() -> None:
    """`journalctl -o json` of two hosts (interleaved) plus each host's kern.log: each message once, per host;
    a host's kern.log is not matched with the other host's journal records."""
    T = calendar.timegm((2014, 8, 6, 15, 23, 48, 0, 0, 0))
    ev: list[tuple[float, str, str]] = []
    for k in range(6):
        for h, n in (("stor-a", 100 + k), ("stor-b", 311 + k)):
            t = T + 5 * k + (0.25 if h == "stor-b" else 0.0)
            ev.append((t, h, f"net_ratelimit: {n} callbacks suppressed"))
            ev += [(t + 0.0001 * j, h, "nf_conntrack: table full, dropping packet") for j in range(1, 4)]
    ev.sort()
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        (base / "journal.json").write_text("".join(json.dumps(
            {"__REALTIME_TIMESTAMP": str(int(t * 1e6)), "_HOSTNAME": h, "_TRANSPORT": "kernel", "MESSAGE": m}) + "\n"
            for t, h, m in ev))
        for h in ("stor-a", "stor-b"):
            (base / f"{h}.kern.log").write_text("".join(
                time.strftime("%b %e %H:%M:%S ", time.gmtime(t)) + f"{hh} kernel: [1234.5] {m}\n"
                for t, hh, m in ev if hh == h))
        _, incs, doc = diagnose(str(base))
    (inc,) = incs
    assert {k.host: (k.drops_logged, k.suppressed) for k in inc.kernel} == {
        "stor-a": (18, sum(range(100, 106))), "stor-b": (18, sum(range(311, 317)))}
    assert doc["lines"]["duplicates"] == 48  # type: ignore[index]


def test_same_lines_of_unknown_hosts_are_not_merged(tmp_path: Path) -> None:
    """Two hosts' `dmesg -T` in two directories, no host named anywhere: the same lines at the same seconds may
    well be two hosts overflowing together, so both count."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "dmesg_-T").write_text("[Wed Aug  6 15:23:48 2014] nf_conntrack: table full, dropping packet\n"
                                               "[Wed Aug  6 15:23:49 2014] nf_conntrack: table full, dropping packet\n")
    _, incs, doc = diagnose(str(tmp_path))
    assert [i.drops_logged for i in incs] == [4] and doc["lines"]["duplicates"] == 0  # type: ignore[index]


def test_a_sosreport_with_kern_log_and_dmesg_t(tmp_path: Path) -> None:
    """The layout of a sosreport: var/log/kern.log (lines name the host, here fully qualified) and
    sos_commands/kernel/dmesg_-T (no host; the sosreport's directory names it): counted once."""
    sos = tmp_path / "sosreport-cartman06-0123-2014-08-06-abcdef"
    (sos / "var" / "log").mkdir(parents=True)
    (sos / "sos_commands" / "kernel").mkdir(parents=True)
    kern = [x.replace(" cartman06 ", " cartman06.example.com ")
            for x in (FULL / "cartman06" / "kern.log").read_text().splitlines()]
    (sos / "var" / "log" / "kern.log").write_text("\n".join(kern) + "\n")
    (sos / "sos_commands" / "kernel" / "dmesg_-T").write_text(
        "\n".join(_dmesg_t(x, 3) for x in kern if " kernel: [" in x) + "\n")
    _, incs, doc = diagnose(str(tmp_path))
    (inc,) = incs
    assert inc.drops_logged == 1740 and doc["lines"]["duplicates"] > 1740  # type: ignore[index]


@pytest.mark.parametrize(("quiet", "restart", "incidents"), [(20, False, 1), (60, False, 1), (60, True, 2),
                                                              (100, False, 2)])
def test_an_overflow_ends_at_a_drop_free_settled_stretch(tmp_path: Path, quiet: int, restart: bool,
                                                          incidents: int) -> None:
    """Drops 5 s apart, then `quiet` drop-free seconds, then drops again: one overflow unless the stretch is both
    drop-free (30 s) and settled (a restart in between, or more than 90 s: past the GC pass)."""
    t0 = calendar.timegm((2014, 8, 6, 15, 0, 0, 0, 0, 0))
    times = [t0 + 5 * k for k in range(6)] + [t0 + 25 + quiet + 5 * k for k in range(6)]
    kern = tmp_path / "h1.kern.log"
    kern.write_text("".join(time.strftime("%b %e %H:%M:%S h1 kernel: nf_conntrack: table full, dropping packet\n",
                                          time.gmtime(t)) for t in times))
    specs = [str(kern)]
    if restart:
        osd = tmp_path / "h1-ceph-osd.2.log"
        osd.write_text(time.strftime("%Y-%m-%d %H:%M:%S.000000 7f92f25a8700  0 osd.2 12345 done with init, starting "
                                     "boot process\n", time.gmtime(t0 + 25 + quiet // 2)))
        specs.append(str(osd))
    _, incs, _ = diagnose(*specs)
    assert len([i for i in incs if i.conntrack]) == incidents, [i.cause for i in incs]
    assert sum(i.drops_logged for i in incs) == 12


def test_journal_export_of_several_hosts_interleaves_their_records(tmp_path: Path) -> None:
    """A journal export of a cluster: host B's suppression count is followed by host A's records and other
    programs' before B's own table-full line. Each count is charged to its own host's next line."""
    T = calendar.timegm((2014, 8, 6, 15, 23, 48, 0, 0, 0))

    def rec(dt: float, host: str, msg: str, transport: str = "kernel") -> str:
        return json.dumps({"__REALTIME_TIMESTAMP": str(int((T + dt) * 1e6)), "_HOSTNAME": host,
                           "_TRANSPORT": transport, "SYSLOG_IDENTIFIER": "kernel" if transport == "kernel" else "sshd",
                           "MESSAGE": msg})
    lines = [rec(0.0, "stor-a", "net_ratelimit: 40 callbacks suppressed"),
             rec(0.001, "stor-b", "net_ratelimit: 311 callbacks suppressed")]
    lines += [rec(0.002 + k / 1000, "stor-c", "Accepted publickey for root", "syslog") for k in range(5)]
    lines += [rec(0.01, "stor-a", "nf_conntrack: table full, dropping packet"),
              rec(0.02, "stor-b", "nf_conntrack: table full, dropping packet"),
              rec(0.03, "stor-b", "net_ratelimit: 7 callbacks suppressed"),  # in front of nothing of ours: not counted
              rec(0.04, "stor-b", "TCP: request_sock_TCP: Possible SYN flooding on port 6800. Sending cookies.")]
    p = tmp_path / "cluster.json"
    p.write_text("\n".join(lines) + "\n")
    _, incs, _ = diagnose(str(p))
    (inc,) = incs
    assert {k.host: (k.drops_logged, k.suppressed) for k in inc.kernel} == {"stor-a": (1, 40), "stor-b": (1, 311)}
