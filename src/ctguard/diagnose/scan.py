"""Reading the inputs, and the hot loop that finds the few lines that matter among millions.

Design for throughput (measured in docs/benchmarks.md): nothing is done per line in Python except for
candidate lines. A candidate line contains one of NEEDLES; finding them is C work.
* Plain files: `grep -F -o -b -n` with all needles at once (Aho-Corasick-like multi-pattern search in C,
  ASCII-only output, so binary garbage cannot upset the decoding), while this process counts lines and NUL
  bytes in 8 MiB binary chunks in parallel (the two use the two cores); candidate lines are then read back by
  offset through mmap. Without grep, or with `use_grep=False`, the pure-Python loop below does the same.
* Compressed files (.gz/.xz/.bz2, recognised by their magic bytes) and stdin: the pure-Python loop over 8 MiB
  chunks: `bytes.count` for lines, `bytes.find` per needle (C fastsearch) and line bounds with `rfind`.
Only candidate lines are decoded (UTF-8, errors replaced) and run through the regular expressions.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import mmap
import os
import re
import shutil
import sys
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from ctguard import runner
from ctguard.diagnose import kernel, model
from ctguard.diagnose.lines import SKIPPED, SourceCtx, parse_line
from ctguard.errors import CommandFailed

# Every interesting line contains one of these (see ceph.py/kernel.py for the messages).
NEEDLES: tuple[bytes, ...] = (
    b"table full",  # kernel: nf_conntrack/ip_conntrack table full
    b" >> ",  # every SimpleMessenger/AsyncMessenger connection line: `LOCAL >> PEER pipe(...)/conn(...)`
    b"no reply from",  # heartbeat_check
    b"marked ",  # wrongly marked me down / marked itself down / marked down after no beacon
    b" failed (",  # mon: osd.N failed (...)
    b" boot",  # mon: osd.N boot; OSD: starting boot process
    b"slow ",  # slow requests / slow ops
)
SUPPRESSED = b"callbacks suppressed"  # only looked for right before a table-full line (kernel.py)
CHUNK = 8 << 20
MAX_LINE = 1 << 20  # a "line" longer than this without a newline is cut (binary blobs)
MAX_PARSE = 8192  # characters of a candidate line given to the parser
GREP_MIN_BYTES = 4 << 20  # below this the Python loop is as fast as starting grep

class Reader(Protocol):
    def read(self, n: int = ..., /) -> bytes: ...

    def close(self) -> None: ...


Progress = Callable[[str, int, int], None]  # (source, bytes done, bytes total or 0)

_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_DAEMON_FILE_RE = re.compile(r"^ceph-(osd|mon|mgr|mds)\.([\w-]+)\.log")
_KERNEL_SAMPLE_RE = re.compile(
    rb"(?m)( kernel: |^(?:\w+\s*:\s*\w+\s*: )?\[\s*\d+\.\d+\] |^\[[A-Z][a-z]{2} [A-Z][a-z]{2} |\"_TRANSPORT\" ?: ?\"kernel\")")
_CEPH_SAMPLE_RE = re.compile(rb"(?m)^(?:debug )?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S* [0-9a-f]{4,16} +-?\d+ ")
_CLUSTER_SAMPLE_RE = re.compile(rb"(?m) (?:mon|osd)\.\S+ .{0,80}\[(?:INF|WRN|DBG|ERR)\] ")


@dataclass(frozen=True)
class InputSpec:
    path: str  # "-" for stdin
    host: str = ""


@dataclass
class InputInfo:
    source: str
    host: str
    daemon: str
    kinds: list[str]  # "kernel", "ceph-daemon", "ceph-cluster" seen in the first 64 KiB
    compression: str
    via: str  # "grep" or "python"
    lines: int = 0
    bytes: int = 0
    error: str = ""


@dataclass
class ScanResult:
    events: list[model.Event] = field(default_factory=list)
    buckets: dict[model.BucketKey, model.Bucket] = field(default_factory=dict)
    read: int = 0
    matched: int = 0
    skipped: int = 0
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
        return sum(1 for i in self.inputs if "kernel" in i.kinds)


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
                        out.append(InputSpec(path=p, host=s.host))
        else:
            out.append(s)
    return out


def daemon_from_name(path: str) -> str:
    base = os.path.basename(path)
    m = _DAEMON_FILE_RE.match(base)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    if base.startswith("ceph.log"):
        return "cluster"
    return ""


def sample_kinds(head: bytes) -> list[str]:
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
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
        peek = getattr(raw, "peek", None)
        head = peek(6)[:6] if peek is not None else b""
    else:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
        head = raw.read(6)
        raw.seek(0)
    kind = _magic_kind(head)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb"), kind
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb"), kind
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb"), kind
    return raw, kind


class _Lines:
    """Per-source state of the Python loop."""

    def __init__(self, ctx: SourceCtx, acc: ScanResult) -> None:
        self.ctx = ctx
        self.acc = acc
        self.lines = 0
        self.tail: list[tuple[int, bytes]] = []  # last lines of the previous buffer, for the lookback
        self.supp_done: set[int] = set()

    def emit(self, line: bytes, line_no: int) -> None:
        if b"\x00" in line:
            return  # counted as garbage already
        got = parse_line(line[:MAX_PARSE].decode("utf-8", "replace"), line_no, self.ctx)
        if got is SKIPPED:
            self.acc.skipped += 1
        elif isinstance(got, model.Event):
            if got.kind == model.SUPPRESSED:
                if line_no in self.supp_done:
                    return
                self.supp_done.add(line_no)
            self.acc.add(got)

    def buffer(self, buf: bytes, end: int) -> None:
        """buf[:end] is whole lines, each ending with a newline."""
        find, rfind = buf.find, buf.rfind
        nl = buf.count(b"\n", 0, end)
        # binary garbage: lines with a NUL byte (memchr speed)
        i = find(b"\x00", 0, end)
        while i != -1:
            e = find(b"\n", i, end)
            self.acc.skipped += 1
            i = find(b"\x00", e, end)
        starts: dict[int, int] = {}
        lookback: list[int] = []
        for nd in NEEDLES:
            i = find(nd, 0, end)
            while i != -1:
                s = rfind(b"\n", 0, i) + 1
                e = find(b"\n", i, end)
                starts[s] = e
                if nd is NEEDLES[0]:
                    lookback.append(s)
                i = find(nd, e, end)
        from_tail: list[tuple[int, bytes]] = []
        for s in lookback:  # "net_ratelimit: N callbacks suppressed" within the lines before a table-full line
            pe = s
            for step in range(kernel.SUPPRESSED_WINDOW):
                if pe == 0:
                    for ln, text in self.tail[::-1][: kernel.SUPPRESSED_WINDOW - step]:
                        if SUPPRESSED in text:
                            from_tail.append((ln, text))
                    break
                ps = rfind(b"\n", 0, pe - 1) + 1
                if find(SUPPRESSED, ps, pe) != -1:
                    starts[ps] = pe - 1
                pe = ps
        base = self.lines
        for ln, text in from_tail:
            self.emit(text, ln)
        pos, ln = 0, base
        for s in sorted(starts):
            ln += buf.count(b"\n", pos, s)
            pos = s
            self.emit(buf[s:starts[s]], ln + 1)
        self.lines = base + nl
        # keep the last few lines for the next buffer's lookback
        tail: list[tuple[int, bytes]] = []
        pe = end
        for k in range(kernel.SUPPRESSED_WINDOW):
            if pe <= 0:
                break
            ps = rfind(b"\n", 0, pe - 1) + 1
            tail.append((self.lines - k, buf[ps:pe - 1]))
            pe = ps
        self.tail = tail[::-1]


def _scan_python(stream: Reader, ctx: SourceCtx, acc: ScanResult, info: InputInfo,
                 progress: Progress | None, total: int) -> None:
    st = _Lines(ctx, acc)
    carry = b""
    done = 0
    try:
        while True:
            data = stream.read(CHUNK)
            if not data:
                break
            done += len(data)
            buf = carry + data if carry else data
            end = buf.rfind(b"\n") + 1
            if end == 0 and len(buf) > MAX_LINE:
                buf, end = buf + b"\n", len(buf) + 1
            if end:
                st.buffer(buf, end)
            carry = buf[end:]
            if progress is not None:
                progress(info.source, done, total)
    except (EOFError, OSError, lzma.LZMAError, zlib.error, ValueError) as e:
        info.error = f"stopped early: {type(e).__name__}: {e}"[:200]  # truncated/corrupt archive
    if carry:
        st.buffer(carry + b"\n", len(carry) + 1)
    info.lines = st.lines
    info.bytes = done


def _count(path: str, acc: ScanResult, progress: Progress | None, source: str, total: int) -> tuple[int, int]:
    """Lines and bytes of a plain file, and its NUL-byte (garbage) lines, read in big binary chunks."""
    lines = done = 0
    last = b"\n"
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            done += len(b)
            lines += b.count(b"\n")
            i = b.find(b"\x00")
            while i != -1:  # a NUL line that straddles two chunks is counted twice; harmless
                e = b.find(b"\n", i)
                acc.skipped += 1
                if e == -1:
                    break
                i = b.find(b"\x00", e)
            last = b[-1:]
            if progress is not None:
                progress(source, done, total)
    if done and last != b"\n":
        lines += 1
    return lines, done


def _scan_grep(path: str, ctx: SourceCtx, acc: ScanResult, info: InputInfo, size: int,
               progress: Progress | None) -> bool:
    """The grep-assisted path; False if grep cannot be used (the caller then runs the Python loop)."""
    grep = shutil.which("grep")
    if grep is None:
        return False
    argv = [grep, "-a", "-n", "-b", "-o", "-F"]
    for nd in (*NEEDLES, SUPPRESSED):
        argv += ["-e", nd.decode()]
    argv += ["--", path]
    skipped_before = acc.skipped
    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(runner.run, argv, timeout=120 + size / 20e6, env={"LC_ALL": "C"})
        try:
            lines, nbytes = _count(path, acc, progress, info.source, size)
        except OSError:
            fut.result() if not fut.done() else None
            raise
        try:
            done = fut.result()
        except CommandFailed:
            acc.skipped = skipped_before
            return False
    if done.returncode not in (0, 1):
        acc.skipped = skipped_before
        return False
    hits: dict[int, int] = {}
    for row in done.stdout.splitlines():
        a, _, rest = row.partition(":")
        b, _, _needle = rest.partition(":")
        if a.isdigit() and b.isdigit():
            hits.setdefault(int(a), int(b))
    info.via, info.lines, info.bytes = "grep", lines, nbytes
    if not hits:
        return True
    supp: list[model.Event] = []
    full_lines: set[int] = set()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        n = len(mm)
        for ln in sorted(hits):
            off = hits[ln]
            if off >= n or ln > lines:
                continue  # the file grew while we read it
            s = mm.rfind(b"\n", 0, off) + 1
            e = mm.find(b"\n", off)
            line = mm[s: e if e != -1 else n]
            if b"\x00" in line:
                continue
            got = parse_line(line[:MAX_PARSE].decode("utf-8", "replace"), ln, ctx)
            if got is SKIPPED:
                acc.skipped += 1
            elif isinstance(got, model.Event):
                if got.kind == model.SUPPRESSED:
                    supp.append(got)
                    continue
                if got.kind == model.TABLE_FULL:
                    full_lines.add(ln)
                acc.add(got)
    for ev in supp:  # the same rule as the Python loop's lookback
        if any(ev.line_no + k in full_lines for k in range(1, kernel.SUPPRESSED_WINDOW + 1)):
            acc.add(ev)
    return True


def scan(specs: Iterable[InputSpec], make_ctx: Callable[[str, str, str], SourceCtx], *,
         use_grep: bool = True, progress: Progress | None = None, grep_min_bytes: int = GREP_MIN_BYTES) -> ScanResult:
    """Read every input; unreadable ones are reported in `inputs[].error`, never raised."""
    acc = ScanResult()
    for spec in expand(specs):
        daemon = daemon_from_name(spec.path) if spec.path != "-" else ""
        ctx = make_ctx(spec.path, spec.host, daemon)
        info = InputInfo(source=spec.path, host=spec.host, daemon=daemon, kinds=[], compression="", via="python")
        acc.inputs.append(info)
        try:
            stream, comp = _open(spec.path)
        except OSError as e:
            info.error = f"cannot read: {e.strerror or e}"
            continue
        info.compression = comp
        try:
            plain = not comp and spec.path != "-"
            size = os.path.getsize(spec.path) if plain else 0
            head = _peek_head(stream, spec.path, plain)
            info.kinds = sample_kinds(head)
            if not comp and spec.path != "-" and use_grep and size >= grep_min_bytes:
                if _scan_grep(spec.path, ctx, acc, info, size, progress):
                    acc.read += info.lines
                    continue
            _scan_python(stream if plain or not head else _Prefixed(head, stream), ctx, acc, info, progress, size)
            acc.read += info.lines
        except OSError as e:
            info.error = f"cannot read: {e.strerror or e}"
        finally:
            if spec.path != "-":
                stream.close()
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
