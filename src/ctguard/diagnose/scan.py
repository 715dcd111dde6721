"""Reading the inputs, and the hot loop that finds the few lines that matter among millions.

Design for throughput (figures in docs/benchmarks.md): nothing is done per line in Python except for candidate
lines, which contain one of a few long NEEDLES. Which needles a file gets depends on what its first 64 KiB look
like (`needles_for`): a kernel-only log gets one, a log written by Ceph gets no kernel needle, a syslog gets all.
Binary chunks (2 MiB) are read into one reused buffer; `needles.Search` finds every needle in one numpy pass;
lines are counted with numpy; line bounds come from `rfind`/`find`. Big plain files are split at line starts over
one process per CPU (at most 4). Only candidate lines are decoded (UTF-8, errors replaced) and given to the
regular expressions.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import multiprocessing
import os
import re
import stat
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from ctguard.diagnose import dedup, model
from ctguard.diagnose.lines import SKIPPED, SourceCtx, parse_line
from ctguard.diagnose.needles import Search, numpy_or_none

# Needles (every interesting line contains one). Those of 7 bytes or more cost nothing extra in the hashed pass
# (needles.py); a shorter one costs a `find` pass of its own.
KERNEL_NEEDLES: tuple[bytes, ...] = (
    b", dropping packet",  # every nf_conntrack/ip_conntrack table-full form
    b"callbacks suppressed",  # net_ratelimit / __ratelimit: N callbacks suppressed (2.6.31 on; kernel.py)
    b"messages suppressed",  # printk: N messages suppressed. (2.6 before 2.6.31)
)
DAEMON_NEEDLES: tuple[bytes, ...] = (
    b"lossy channel",  # messenger: (_)fault on lossy channel, failing (all messenger generations)
    b"heartbeat_check",  # heartbeat_check: no reply from ... osd.N
    b"marked me down",  # map eN wrongly marked me down
    b"done with init",  # done with init, starting boot process (OSD process start)
    b"slow requests",  # N slow requests (Firefly..Mimic), also the cluster log's REQUEST_SLOW
    b"slow ops, oldest",  # N slow ops, oldest is/one ... (Nautilus on), also the cluster log's SLOW_OPS
    b"RESETSESSION",  # connect got RESETSESSION (Simple, AsyncMessenger v1): the peer dropped our session
    b"session reset",  # handle_session_reset received session reset (ProtocolV2)
    b"process ceph-osd",  # ceph version X (...), process ceph-osd, pid N: the first line of every OSD start
    b"but it is still running",  # Monitor daemon marked osd.N down, but it is still running (Luminous on)
    b"slow request ",  # slow request 30.0 seconds old, received at ... (one op; the summary has "slow requests")
    b"requests are blocked",  # Hammer/Jewel health: N requests are blocked > 32 sec
)
SIMPLE_NEEDLES: tuple[bytes, ...] = (b"couldn't read tag", b"writer finishing")  # SimpleMessenger teardown
LAB_NEEDLES: tuple[bytes, ...] = (b'"kind": "meta"', b'"kind": "ct"', b'"kind": "event"', b'"kind": "boot"',
                                  b'"kind": "marked_down"')  # ctguard lab recordings (data/lab/, docs/lab.md)
MON_NEEDLES: tuple[bytes, ...] = (b" failed (", b"marked itself down", b"marked down after", b" boot")
CHUNK = 2 << 20  # bytes per read: small enough that the numpy passes find them in cache
MAX_LINE = 1 << 20  # a "line" longer than this without a newline is cut (binary blobs)
MAX_PARSE = 8192  # characters of a candidate line given to the parser
PARALLEL_MIN_BYTES = 32 << 20
MAX_WORKERS = 4
BINARY = "binary file, not a log: not read"  # inputs[].error of a binary file found in a directory


class Reader(Protocol):
    def read(self, n: int = ..., /) -> bytes: ...

    def close(self) -> None: ...


Progress = Callable[[str, int, int], None]  # (source, bytes done, bytes total or 0)

_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_DAEMON_FILE_RE = re.compile(r"(?:^|[._-])ceph-(osd|mon|mgr|mds)\.([\w-]+)\.log")
_KERNEL_SAMPLE_RE = re.compile(
    rb"(?m)( kernel: |^(?:\w+\s*:\s*\w+\s*: )?\[\s*\d+\.\d+\] |^\[[A-Z][a-z]{2} [A-Z][a-z]{2} |\"_TRANSPORT\" ?: ?\"kernel\")")
_CEPH_SAMPLE_RE = re.compile(rb"(?m)^(?:debug )?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S* [0-9a-f]{4,16} +-?\d+ ")
_CLUSTER_SAMPLE_RE = re.compile(rb"(?m) (?:mon|osd)\.\S+ .{0,80}\[(?:INF|WRN|DBG|ERR)\] ")
_MON_SAMPLE_RE = re.compile(rb"ceph-mon|log_channel\(cluster\) log \[\w+\] : osd\.")


@dataclass(frozen=True)
class InputSpec:
    path: str  # "-" for stdin
    host: str = ""
    walked: bool = False  # found below a directory given on the command line (not named by the user)


@dataclass
class InputInfo:
    source: str
    host: str
    daemon: str
    kinds: list[str]  # "kernel", "ceph-daemon", "ceph-cluster" seen in the first 64 KiB
    compression: str
    via: str = "python"  # how candidate lines were found: "numpy" (one hashed pass) or "python" (find)
    lines: int = 0
    bytes: int = 0
    error: str = ""
    duplicates: int = 0  # kernel records that another input of the same host holds too (dedup.py): not counted


@dataclass
class ScanResult:
    events: list[model.Event] = field(default_factory=list)
    buckets: dict[model.BucketKey, model.Bucket] = field(default_factory=dict)
    read: int = 0
    matched: int = 0
    skipped: int = 0
    duplicates: int = 0  # matched kernel lines not counted: another input of the same host has them (dedup.py)
    inputs: list[InputInfo] = field(default_factory=list)

    def add(self, ev: model.Event) -> None:
        self.matched += 1
        if ev.kind in model.BUCKETED:
            key = model.bucket_key(ev)
            b = self.buckets.get(key)
            if b is None:
                b = self.buckets[key] = model.Bucket(first=ev)
            b.add(ev)
        else:
            self.events.append(ev)

    @property
    def kernel_inputs(self) -> int:
        return sum(1 for i in self.inputs if "kernel" in i.kinds or "kernel-counters" in i.kinds)


def parse_spec(arg: str) -> InputSpec:
    """`PATH`, `-` (stdin) or `HOST=PATH` (the host for lines that do not name one)."""
    if "=" in arg and not os.path.exists(arg):
        host, _, path = arg.partition("=")
        if _HOST_RE.match(host) and path:
            return InputSpec(path=path, host=host)
    return InputSpec(path=arg)


def expand(specs: Iterable[InputSpec]) -> list[InputSpec]:
    """Directories become the regular files below them (sorted); order does not matter to the analysis."""
    out: list[InputSpec] = []
    for s in specs:
        if s.path != "-" and os.path.isdir(s.path):
            for root, dirs, files in os.walk(s.path):
                dirs.sort()
                for f in sorted(files):
                    p = os.path.join(root, f)
                    if os.path.isfile(p):
                        out.append(InputSpec(path=p, host=s.host, walked=True))
        else:
            out.append(s)
    return out


_HOST_BEFORE_RE = re.compile(
    r"^([A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*?)[._-](?:kern\.log|syslog|messages|dmesg|journal|ceph[\w.-]*\.log)")
_HOST_AFTER_RE = re.compile(
    r"^(?:kern\.log|syslog|messages|dmesg|journal)[._-]([A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*?)"
    r"(?:\.\d+)?(?:\.(?:gz|xz|bz2|log|txt))*$")
_NOT_HOSTS = frozenset({"log", "txt", "gz", "xz", "bz2", "json", "out", "old", "bak", "current", "ceph", "var"})
_SOS_RE = re.compile(r"^sosreport-([A-Za-z][A-Za-z0-9-]*?)-")  # sosreport-HOST-CASE-DATE...


def host_from_name(path: str) -> str:
    """A host named in the path: `HOST.kern.log`, `HOST-ceph-osd.3.log`, `kern.log.HOST[.1][.gz]`, or a
    `sosreport-HOST-...` directory. Only a hint: a syslog line's own host wins, and HOST=PATH overrides it."""
    parts = os.path.normpath(path).split(os.sep)
    for comp in parts[:-1]:
        m = _SOS_RE.match(comp)
        if m:
            return m.group(1)
    base = parts[-1]
    m = _HOST_BEFORE_RE.match(base) or _HOST_AFTER_RE.match(base)
    if m is None or m.group(1).lower() in _NOT_HOSTS:
        return ""
    return m.group(1)


def daemon_from_name(path: str) -> str:
    base = os.path.basename(path)
    m = _DAEMON_FILE_RE.search(base)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    if base.startswith("ceph.log") or re.search(r"[._-]ceph\.log", base):
        return "cluster"
    return ""


def sample_kinds(head: bytes) -> list[str]:
    if head.startswith(b'{"kind": "meta"'):
        return ["kernel-counters"]  # a ctguard lab recording
    kinds = []
    if _KERNEL_SAMPLE_RE.search(head):
        kinds.append("kernel")
    if _CEPH_SAMPLE_RE.search(head):
        kinds.append("ceph-daemon")
    if _CLUSTER_SAMPLE_RE.search(head):
        kinds.append("ceph-cluster")
    return kinds


def _magic_kind(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"BZh"):
        return "bzip2"
    return ""


def _open(path: str) -> tuple[Reader, str]:
    """The input as a byte stream, decompressed by its magic bytes (peeked, so pipes and FIFOs work too)."""
    raw: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - closed by the caller
    peek = getattr(raw, "peek", None)
    head = peek(6)[:6] if peek is not None else b""
    kind = _magic_kind(head)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb"), kind
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb"), kind
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb"), kind
    return raw, kind


_KERNEL_LINE_RE = re.compile(
    rb"^(?:\S+ +\d+ [\d:.]+ \S+ kernel: |\d{4}-\S+ \S+ kernel: |(?:\w+\s*:\s*\w+\s*: )?\[[^\]]+\] |\d{4}-\d\d-\d\dT\S+,\d+\S* )")
_NATIVE_LINE_RE = re.compile(rb"^(?:debug )?(?:\s*-?\d+> )?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d")


def needles_for(daemon: str, head: bytes) -> tuple[bytes, ...]:
    """The needles worth searching a file for, from its name and its first 64 KiB.

    A file Ceph wrote itself (every sampled line starts with a Ceph timestamp) cannot hold kernel lines, and a
    kernel-only log (kern.log, dmesg, journalctl -k: every sampled line is a kernel line) cannot hold Ceph
    lines; anything else (syslog, a journal export, an empty or unknown start) gets every needle. Each needle
    costs one pass over the data, so this is most of the speed on real inputs."""
    if head.startswith(b'{"kind": "meta"'):
        return LAB_NEEDLES
    lines = [x for x in head.split(b"\n")[:-1] if x.strip()][:400] if head else []
    n_kernel = sum(1 for x in lines if _KERNEL_LINE_RE.match(x))
    n_native = sum(1 for x in lines if _NATIVE_LINE_RE.match(x))
    # Ceph's logs have multi-line dumps (config, JSON): 90 % for them; a syslog with a few non-kernel lines
    # among kernel ones is not a kernel-only log
    kernel_only = bool(lines) and n_kernel == len(lines)
    ceph_only = bool(lines) and n_kernel == 0 and n_native >= 0.9 * len(lines)
    out: tuple[bytes, ...] = ()
    if not ceph_only:
        out += KERNEL_NEEDLES
    if not kernel_only:
        out += DAEMON_NEEDLES
        if b" pipe(0x" in head:
            out += SIMPLE_NEEDLES
        if (daemon == "cluster" or daemon.startswith("mon.") or not lines or not (n_kernel or n_native)
                or _CLUSTER_SAMPLE_RE.search(head) or _MON_SAMPLE_RE.search(head)):
            out += MON_NEEDLES
    return out


def newlines_before(buf: bytes | bytearray, end: int, points: list[int]) -> tuple[list[int], int]:
    """How many newlines come before each of the sorted offsets `points`, and in all of buf[:end].

    With numpy: one `== 10` pass, then `count_nonzero` of the stretches between points (0.15 ns/byte against
    0.4 for `bytes.count`, which is what remains without numpy)."""
    _np = numpy_or_none()
    before: list[int] = []
    n = prev = 0
    if _np is None:
        for p in points:
            n += buf.count(b"\n", prev, p)
            prev = p
            before.append(n)
        return before, n + buf.count(b"\n", prev, end)
    eq = _np.frombuffer(memoryview(buf)[:end], dtype=_np.uint8) == 10
    count = _np.count_nonzero
    for p in points:
        n += int(count(eq[prev:p]))
        prev = p
        before.append(n)
    return before, n + int(count(eq[prev:end]))


class _Lines:
    """Per-source state of the hot loop."""

    def __init__(self, ctx: SourceCtx, acc: ScanResult, search: Search) -> None:
        self.ctx = ctx
        self.acc = acc
        self.search = search
        self.lines = 0

    def emit(self, line: bytes, line_no: int) -> None:
        if b"\x00" in line:
            return  # counted as garbage already
        got = parse_line(line[:MAX_PARSE].decode("utf-8", "replace"), line_no, self.ctx)
        if got is SKIPPED:
            self.acc.skipped += 1
        elif isinstance(got, model.Event):
            self.acc.add(got)

    def buffer(self, buf: bytes | bytearray, end: int) -> None:
        """buf[:end] is whole lines, each ending with a newline."""
        find, rfind = buf.find, buf.rfind
        # binary garbage: lines with a NUL byte (memchr speed)
        i = find(b"\x00", 0, end)
        while i != -1:
            e = find(b"\n", i, end)
            self.acc.skipped += 1
            i = find(b"\x00", e, end)
        starts: dict[int, int] = {}
        s = e = -1
        for i, _nd in sorted(self.search.find(buf, end)):
            if i > e:  # a new line; later needles in the same line cost nothing (a megabyte-long line full of
                # needles stays linear: no rfind back to its start for each of them)
                s = rfind(b"\n", 0, i) + 1
                e = find(b"\n", i, end)
                starts[s] = e
        base = self.lines
        order = sorted(starts)
        before, nl = newlines_before(buf, end, order)  # line numbers
        for s, k in zip(order, before, strict=True):
            self.emit(bytes(buf[s:starts[s]]), base + k + 1)
        self.lines = base + nl


def _run(st: _Lines, stream: Reader, limit: int, info: InputInfo, progress: Progress | None, total: int) -> int:
    """Feed `stream` through `st` in big chunks; with limit >= 0, stop after `limit` bytes (a range of a file
    that starts and ends at line starts). Returns the bytes read."""
    done = 0
    readinto = getattr(stream, "readinto", None)
    buf = bytearray(CHUNK + MAX_LINE)  # reused: the partial last line moves to the front, the next read follows
    mv = memoryview(buf)
    have = 0  # bytes of a partial line at the front of buf
    try:
        while True:
            want = CHUNK if limit < 0 else min(CHUNK, limit - done)
            if want <= 0:
                break
            if readinto is not None:
                n = readinto(mv[have:have + want])
            else:
                data = stream.read(want)
                n = len(data)
                mv[have:have + n] = data
            if not n:
                break
            done += n
            filled = have + n
            end = buf.rfind(b"\n", 0, filled) + 1
            if filled - end > MAX_LINE:  # a megabyte without a newline (a binary blob): cut it here
                end = filled
                buf[end - 1:end] = b"\n"
            if end:
                st.buffer(buf, end)
            have = filled - end
            if have:
                buf[:have] = buf[end:filled]
            if progress is not None:
                progress(info.source, done, total)
    except (EOFError, OSError, lzma.LZMAError, zlib.error, ValueError) as e:
        info.error = f"stopped early: {type(e).__name__}: {e}"[:200]  # truncated/corrupt archive
    if have:
        last = bytes(buf[:have]) + b"\n"
        st.buffer(last, len(last))
    return done


def _next_line_start(path: str, off: int) -> int:
    """The offset of the first line that starts at or after `off`."""
    if off == 0:
        return 0
    with open(path, "rb") as f:
        f.seek(off - 1)
        pos = off - 1
        while True:
            b = f.read(1 << 16)
            if not b:
                return pos
            j = b.find(b"\n")
            if j >= 0:
                return pos + j + 1
            pos += len(b)


def _scan_range(path: str, start: int, end: int, ctx: SourceCtx, search: Search) -> tuple[ScanResult, int, str]:
    """One worker's share of a big plain file; its lines are numbered from 1 within the range."""
    acc = ScanResult()
    info = InputInfo(source=path, host="", daemon="", kinds=[], compression="")
    st = _Lines(ctx, acc, search)
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        _run(st, f, end - start, info, None, 0)
    return acc, st.lines, info.error


def _merge(into: ScanResult, part: ScanResult, line_offset: int) -> None:
    def fix(e: model.Event) -> model.Event:
        e.line_no += line_offset  # (in place: the worker's copy is ours alone)
        return e

    into.matched += part.matched
    into.skipped += part.skipped
    for e in part.events:
        into.events.append(fix(e))
    for key, b in part.buckets.items():
        have = into.buckets.get(key)
        if have is None:
            into.buckets[key] = model.Bucket(first=fix(b.first), count=b.count, peers=b.peers)
        else:
            have.count += b.count
            have.peers |= set(list(b.peers)[: max(0, model.PEER_CAP - len(have.peers))])
            if b.first.ts < have.first.ts:
                have.first = fix(b.first)


def _ranges(path: str, size: int, n: int) -> list[tuple[int, int]]:
    cuts = [0]
    for k in range(1, n):
        c = _next_line_start(path, size * k // n)
        if cuts[-1] < c < size:
            cuts.append(c)
    cuts.append(size)
    return list(zip(cuts, cuts[1:], strict=False))


def _scan_parallel(path: str, size: int, ctx: SourceCtx, search: Search, acc: ScanResult,
                   info: InputInfo, workers: int, progress: Progress | None) -> None:
    ranges = _ranges(path, size, workers)
    # fork: a worker needs nothing but its arguments, and starts in milliseconds. This process reads the first
    # range itself: one result fewer to pickle and send back (their events cost ~0.15 s a GiB)
    with ProcessPoolExecutor(max_workers=max(1, len(ranges) - 1),
                             mp_context=multiprocessing.get_context("fork")) as pool:
        futs = [pool.submit(_scan_range, path, a, b, ctx, search) for a, b in ranges[1:]]
        results = [_scan_range(path, *ranges[0], ctx, search)] + [f.result() for f in futs]
    offset = 0
    for (part, lines, err), (_a, b) in zip(results, ranges, strict=True):
        _merge(acc, part, offset)
        offset += lines
        if err and not info.error:
            info.error = err
        if progress is not None:
            progress(info.source, b, size)
    info.lines, info.bytes = offset, size


def scan(specs: Iterable[InputSpec], make_ctx: Callable[[str, str, str], SourceCtx], *,
         progress: Progress | None = None, workers: int | None = None, use_numpy: bool = True,
         parallel_min_bytes: int = PARALLEL_MIN_BYTES) -> ScanResult:
    """Read every input; unreadable ones are reported in `inputs[].error`, never raised."""
    acc = ScanResult()
    if workers is None:
        workers = min(MAX_WORKERS, os.cpu_count() or 1)
    for spec in expand(specs):
        daemon = daemon_from_name(spec.path) if spec.path != "-" else ""
        host = spec.host or (host_from_name(spec.path) if spec.path != "-" else "")
        ctx = make_ctx(spec.path, host, daemon)
        info = InputInfo(source=spec.path, host=host, daemon=daemon, kinds=[], compression="")
        acc.inputs.append(info)
        try:
            stream, comp = _open(spec.path)
        except OSError as e:
            info.error = f"cannot read: {e.strerror or e}"
            continue
        info.compression = comp
        try:
            # a regular file can be reopened, mapped and split; a pipe, FIFO or stdin is one stream
            plain = not comp and spec.path != "-" and stat.S_ISREG(os.stat(spec.path).st_mode)
            size = os.path.getsize(spec.path) if plain else 0
            head = _peek_head(stream, spec.path, plain)
            if spec.walked and not comp and b"\x00" in head[:8192]:
                # a plot, a core or a database next to the logs (a lab run's PNGs, a sosreport): like grep's
                # binary-file check. A file named on the command line is read anyway, its garbage counted.
                info.error = BINARY
                continue
            info.kinds = sample_kinds(head)
            needles = needles_for(daemon, head)
            search = Search(needles, head, use_numpy=use_numpy)
            info.via = "numpy" if search.hashed else "python"
            if plain and workers > 1 and size >= parallel_min_bytes and needles != LAB_NEEDLES:
                # (a lab recording is read in order: its drop counter is cumulative)
                _scan_parallel(spec.path, size, ctx, search, acc, info, workers, progress)
            else:
                st = _Lines(ctx, acc, search)
                info.bytes = _run(st, stream if plain or not head else _Prefixed(head, stream), -1, info,
                                  progress, size)
                info.lines = st.lines
            acc.read += info.lines
        except OSError as e:
            info.error = f"cannot read: {e.strerror or e}"
        except Exception as e:  # noqa: BLE001 - one odd input must not cost the analysis of the others
            info.error = f"not read to the end: {type(e).__name__}: {e}"[:200]
        finally:
            if spec.path != "-":
                stream.close()
    attach_suppressed(acc)
    acc.events, removed = dedup.dedup(acc.events)
    for info in acc.inputs:
        info.duplicates = removed.get(info.source, 0)
    acc.duplicates = sum(removed.values())
    return acc


def _peek_head(stream: Reader, path: str, plain: bool) -> bytes:
    """The first 64 KiB, for sample_kinds. Plain files are read again from the start; a decompressing or
    stdin stream gets the bytes put back in front (_Prefixed)."""
    try:
        if plain:
            with open(path, "rb") as f:
                return f.read(64 << 10)
        return stream.read(64 << 10)
    except (EOFError, OSError, lzma.LZMAError, zlib.error, ValueError):
        return b""


class _Prefixed:
    """A stream with bytes already read put back in front."""

    def __init__(self, head: bytes, rest: Reader) -> None:
        self._head = head
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._head:
            h, self._head = self._head, b""
            return h
        return self._rest.read(n)

    def close(self) -> None:
        self._rest.close()


def attach_suppressed(acc: ScanResult) -> None:
    """Keep a suppression count (`net_ratelimit: N callbacks suppressed`, `printk: N messages suppressed.`) only
    when it belongs to the conntrack messages: the kernel prints it right before the next message that passes
    the rate limit (lib/ratelimit.c; kernel/printk.c `__printk_ratelimit` before 2.6.31), so it counts when the
    next kernel line of the same host in the same input (the one before it in a file written newest first) is
    a table-full line printed within a second of it (the same second in syslog and dmesg -T, microseconds apart
    in journald). Host, not line distance: a journal export of several hosts interleaves their records. The
    other suppression lines become ordinary lines."""
    groups: dict[tuple[str, str], list[model.Event]] = defaultdict(list)
    for e in acc.events:
        if e.kind in (model.TABLE_FULL, model.SUPPRESSED):
            groups[(e.source, e.host)].append(e)
    drop: set[int] = set()
    for evs in groups.values():
        evs.sort(key=lambda e: e.line_no)
        if sum(b.ts - a.ts for a, b in zip(evs, evs[1:], strict=False)) < 0:
            evs.reverse()  # written newest first: the kernel's order is the reverse of the file's
        for i, e in enumerate(evs):
            if e.kind != model.SUPPRESSED:
                continue
            after = evs[i + 1] if i + 1 < len(evs) else None
            if after is None or after.kind != model.TABLE_FULL or abs(after.ts - e.ts) > 1.0:
                drop.add(id(e))
    if drop:
        acc.events = [e for e in acc.events if id(e) not in drop]
        acc.matched -= len(drop)
