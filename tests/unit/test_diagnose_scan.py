"""Reading inputs: files, directories, .gz/.xz/.bz2, stdin, HOST=PATH, garbage; one process or several over
ranges of a file, big chunks or tiny ones: the same answer."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from pathlib import Path

import pytest

from ctguard.diagnose import model, scan
from ctguard.diagnose.clock import Clock
from ctguard.diagnose.lines import SourceCtx

LOGS = Path(__file__).parent.parent / "fixtures" / "logs"
FULL = LOGS / "incident-2014-full"
CLOCK = Clock(year=2014)


def ctx(path: str, host: str, daemon: str) -> SourceCtx:
    return SourceCtx(source=path, host=host, daemon=daemon, clock=CLOCK)


def run(*specs: str, **kw: object) -> scan.ScanResult:
    return scan.scan([scan.parse_spec(s) for s in specs], ctx, **kw)  # type: ignore[arg-type]


def summary(r: scan.ScanResult) -> tuple[object, ...]:
    evs = sorted((e.source, e.line_no, e.kind, e.count, e.host, e.daemon) for e in r.events)
    bks = sorted((k, b.count, len(b.peers), b.first.line_no) for k, b in r.buckets.items())
    return (r.read, r.matched, r.skipped, evs, bks)


def test_hashed_search_find_loop_parallel_ranges_and_one_stream_agree_on_the_incident() -> None:
    a = run(f"cartman06={FULL}/cartman06", str(FULL / "cartman01"), workers=3, parallel_min_bytes=0)
    b = run(f"cartman06={FULL}/cartman06", str(FULL / "cartman01"), workers=1)
    c = run(f"cartman06={FULL}/cartman06", str(FULL / "cartman01"), workers=1, use_numpy=False)
    assert summary(a) == summary(b) == summary(c)
    assert {i.via for i in b.inputs} == {"numpy"} and {i.via for i in c.inputs} == {"python"}
    assert a.read == sum(1 for p in FULL.rglob("*.log") for _ in p.open())
    kinds = {e.kind for e in a.events} | {k[1] for k in a.buckets}
    assert kinds >= {model.TABLE_FULL, model.SUPPRESSED, model.MS_FAULT, model.MS_CLOSE, model.HB_NO_REPLY,
                     model.OSD_START, model.MON_BOOT, model.MARKED_DOWN, model.SLOW}
    assert {e.host for e in a.events if e.source.endswith("ceph-osd.3.log")} == {"cartman06"}


def test_small_chunks_do_not_lose_lines_or_suppressed_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = run(str(FULL / "cartman06" / "kern.log"), workers=1)
    monkeypatch.setattr(scan, "CHUNK", 97)  # many lines and suppression/table-full pairs cut at the boundary
    tiny = run(str(FULL / "cartman06" / "kern.log"), workers=1)
    assert summary(whole) == summary(tiny)
    cut = run(str(FULL / "cartman06" / "kern.log"), workers=4, parallel_min_bytes=0)  # ranges cut anywhere
    assert summary(whole) == summary(cut)
    supp = [e for e in tiny.events if e.kind == model.SUPPRESSED]
    assert len(supp) == sum(1 for line in open(FULL / "cartman06" / "kern.log") if "callbacks suppressed" in line)


def test_line_numbers_point_at_the_line(tmp_path: Path) -> None:
    r = run(f"cartman06={FULL}/cartman06", workers=1)
    for e in r.events[:200] + [b.first for b in list(r.buckets.values())[:200]]:
        with open(e.source, encoding="utf-8") as f:
            assert f.readlines()[e.line_no - 1].rstrip("\n") == e.text


@pytest.mark.parametrize(("suffix", "opener"), [(".gz", gzip.open), (".xz", lzma.open), (".bz2", bz2.open)])
def test_compressed_inputs(tmp_path: Path, suffix: str, opener: object) -> None:
    src = FULL / "cartman06" / "kern.log"
    dst = tmp_path / ("kern.log.1" + suffix)
    with opener(dst, "wb") as f:  # type: ignore[operator]
        f.write(src.read_bytes())
    plain, packed = run(str(src)), run(str(dst))
    assert packed.inputs[0].compression in ("gzip", "xz", "bzip2") and packed.inputs[0].kinds == ["kernel"]
    assert summary(plain)[:3] == summary(packed)[:3]
    assert [e.kind for e in plain.events] == [e.kind for e in packed.events]


def test_truncated_archive_is_reported_not_raised(tmp_path: Path) -> None:
    data = gzip.compress((FULL / "cartman06" / "kern.log").read_bytes())
    bad = tmp_path / "kern.log.gz"
    bad.write_bytes(data[: len(data) // 2])
    r = run(str(bad))
    assert r.inputs[0].error.startswith("stopped early")
    assert r.read > 0 and any(e.kind == model.TABLE_FULL for e in r.events)


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    data = gzip.compress((LOGS / "incident-2014" / "kern.log").read_bytes())

    class Stdin:
        buffer = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]

    monkeypatch.setattr("sys.stdin", Stdin)
    r = run("-")
    assert r.read == 1 and [e.kind for e in r.events] == [model.TABLE_FULL]
    assert r.inputs[0].compression == "gzip"


def test_directories_and_host_assignment(tmp_path: Path) -> None:
    r = run(f"cartman06={FULL}/cartman06", workers=1)
    assert len(r.inputs) == 9 and all(i.host == "cartman06" for i in r.inputs)
    daemons = {i.daemon for i in r.inputs}
    assert daemons == {f"osd.{n}" for n in range(8)} | {""}
    assert scan.parse_spec("a=b").host == "a" and scan.parse_spec("a=b").path == "b"
    f = tmp_path / "x=y.log"
    f.write_text("")
    assert scan.parse_spec(str(f)).path == str(f)  # an existing file with "=" in its name is a path


def test_garbage_counts_as_skipped(tmp_path: Path) -> None:
    p = tmp_path / "junk.log"
    good = (LOGS / "incident-2014" / "kern.log").read_bytes()
    p.write_bytes(b"\x00\x01\xff table full\n" + os.urandom(5000) + b"\n" + good + b"random table full text\n"
                  + b"no newline at the end table full")
    for kw in ({"workers": 1, "use_numpy": True}, {"workers": 2, "parallel_min_bytes": 0, "use_numpy": True},
               {"workers": 1, "use_numpy": False}):
        r = run(str(p), **kw)
        assert [e.kind for e in r.events] == [model.TABLE_FULL]
        assert r.skipped >= 3  # the NUL line, the random candidate, the unterminated last line
        assert r.read == p.read_bytes().count(b"\n") + 1


def test_unreadable_input_is_reported(tmp_path: Path) -> None:
    r = run(str(tmp_path / "missing.log"))
    assert r.inputs[0].error.startswith("cannot read")


def test_sample_kinds() -> None:
    assert scan.sample_kinds((FULL / "cartman06" / "kern.log").read_bytes()[:65536]) == ["kernel"]
    assert scan.sample_kinds((FULL / "cartman06" / "ceph-osd.0.log").read_bytes()[:65536]) == ["ceph-daemon"]
    assert scan.sample_kinds((FULL / "cartman01" / "ceph.log").read_bytes()[:65536]) == ["ceph-cluster"]
    assert scan.sample_kinds(b"[ 8723.214092] hello\n") == ["kernel"]


def test_needles_follow_what_the_file_is() -> None:
    kern = b"Aug  6 15:23:48 h kernel: [1.0] x\n[ 8723.214092] y\n"
    osd = b"2026-11-26T06:08:44.066+0000 7f36e0e336c0  2 x\n" * 20 + b"    \"name\": 1,\n"
    syslog = kern + b"Aug  6 15:23:49 h ceph-osd[12]: 2026-11-26T06:08:44.066+0000 7f36e0e336c0  2 x\n"
    assert scan.needles_for("", kern) == scan.KERNEL_NEEDLES  # kern.log/dmesg: no Ceph lines in there
    assert scan.KERNEL_NEEDLES[0] not in scan.needles_for("osd.1", osd)  # Ceph's own log: no kernel lines
    assert scan.MON_NEEDLES[0] not in scan.needles_for("osd.1", osd)
    assert set(scan.needles_for("", syslog)) >= set(scan.KERNEL_NEEDLES + scan.DAEMON_NEEDLES)
    assert set(scan.needles_for("cluster", b"")) >= set(scan.MON_NEEDLES)  # unknown: everything
    assert set(scan.SIMPLE_NEEDLES) <= set(scan.needles_for("", b"x pipe(0x7f92 sd=1 l=1).fault\n"))


def test_giant_lines_are_cut_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "CHUNK", 64)
    monkeypatch.setattr(scan, "MAX_LINE", 100)
    p = tmp_path / "blob.log"
    good = (LOGS / "incident-2014" / "kern.log").read_bytes()
    p.write_bytes(good + b"x" * 1000 + b"\n" + good)
    r = run(str(p), workers=1)
    assert [e.line_no for e in r.events if e.kind == model.TABLE_FULL][0] == 1
    assert len([e for e in r.events if e.kind == model.TABLE_FULL]) == 2


def test_fifo_is_read_as_a_stream(tmp_path: Path) -> None:
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = gzip.compress((LOGS / "incident-2014" / "kern.log").read_bytes())

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(data)

    t = threading.Thread(target=feed)
    t.start()
    r = run(str(fifo), parallel_min_bytes=0)
    t.join(timeout=10)
    assert r.inputs[0].compression == "gzip" and [e.kind for e in r.events] == [model.TABLE_FULL]


@pytest.mark.parametrize(("path", "host", "daemon"), [
    ("cartman06.kern.log", "cartman06", ""), ("kern.log.stor-03.gz", "stor-03", ""), ("kern.log.1.gz", "", ""),
    ("stor1-ceph-osd.3.log", "stor1", "osd.3"), ("ceph-osd.3.log.2.gz", "", "osd.3"), ("mon1.ceph.log", "mon1", "cluster"),
    ("messages-20241103", "", ""), ("dmesg.log", "", ""), ("/x/sosreport-stor5-0123-2024/var/log/kern.log", "stor5", ""),
])
def test_host_and_daemon_from_the_file_name(path: str, host: str, daemon: str) -> None:
    assert (scan.host_from_name(path), scan.daemon_from_name(path)) == (host, daemon)


def test_file_name_host_is_a_hint(tmp_path: Path) -> None:
    p = tmp_path / "stor7-ceph-osd.2.log"
    p.write_text("2026-11-26T06:08:31.014+0000 7f36e39f71c0  0 osd.2 0 done with init, starting boot process\n")
    k = tmp_path / "stor7.kern.log"
    k.write_text("Aug  6 15:23:48 other kernel: nf_conntrack: table full, dropping packet\n")  # the line names a host
    r = run(str(p), str(k))
    assert [(e.host, e.daemon) for e in r.events] == [("stor7", "osd.2"), ("other", "kernel")]
    assert run(f"h9={p}").events[0].host == "h9"


@pytest.mark.parametrize("use_numpy", [True, False])
def test_every_lossy_fault_and_session_reset_shape_is_a_candidate(tmp_path: Path, use_numpy: bool) -> None:
    from test_diagnose_parsers import MESSENGER

    p = tmp_path / "ceph-osd.3.log"
    p.write_text("".join(line + "\n" for line, *_ in MESSENGER))
    r = run(str(p), workers=1, use_numpy=use_numpy)
    found = {b.first.line_no for b in r.buckets.values()} | {e.line_no for e in r.events}
    want = {n for n, (_line, kind, *_rest) in enumerate(MESSENGER, 1) if kind in (model.MS_FAULT, model.MS_RESET)}
    assert want and want <= found
    assert any(e.kind == model.MS_RESET for e in r.events)


def test_binary_files_in_a_directory_are_passed_over_but_a_named_one_is_read(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    (d / "kern.log").write_bytes((FULL / "cartman06" / "kern.log").read_bytes())
    png = d / "plot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(4000) + b"\n\x00table full\n")
    (d / "kern.log.2.gz").write_bytes(gzip.compress(b"Aug  6 10:00:00 a kernel: nf_conntrack: table full, "
                                                    b"dropping packet\n"))
    walked = run(str(d), workers=1)
    by = {os.path.basename(i.source): i for i in walked.inputs}
    assert by["plot.png"].error == scan.BINARY and by["plot.png"].lines == 0
    assert not by["kern.log"].error and not by["kern.log.2.gz"].error  # compressed logs are not "binary"
    assert walked.skipped == 0
    named = run(str(png), workers=1)
    assert not named.inputs[0].error and named.skipped >= 1  # garbage counted, as for any named input


@pytest.mark.parametrize("use_numpy", [True, False])
def test_a_long_line_full_of_needles_is_one_candidate(tmp_path: Path, use_numpy: bool) -> None:
    p = tmp_path / "syslog"
    junk = b"x lossy channel heartbeat_check , dropping packet" * 20000  # ~1 MB, 60,000 needles in one line
    p.write_bytes(b"Aug  6 10:00:00 a kernel: nf_conntrack: table full, dropping packet\n" + junk + b"\n"
                  + b"Aug  6 10:00:01 a kernel: nf_conntrack: table full, dropping packet\n")
    r = run(str(p), workers=1, use_numpy=use_numpy)
    assert r.read == 3 and [e.line_no for e in r.events] == [1, 3] and r.skipped == 1
