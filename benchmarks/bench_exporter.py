"""Benchmark: `ctguard exporter` scrapes on a full table, side by side with prometheus_client's default server.

Run as root from the repo root:  .venv/bin/python benchmarks/bench_exporter.py [--scrapes N]

In a fresh Testbed namespace filled with ASSURED (ESTABLISHED) entries up to the global nf_conntrack_max
(262,144 here), it runs, inside that namespace:
  A  `ctguard exporter --no-breakdown` (counters only), scraped over one keep-alive connection;
  B  `ctguard exporter --breakdown-interval 1` (a breakdown dump in a child process every second, i.e. all the
     time), scraped the same way: scrapes overlapping a refresh show whether it stays off the scrape path;
  C  the peer: the same collector served by prometheus_client.start_http_server (HTTP/1.0, one connection per
     scrape), timed while the table still had room, then probed for availability once the table is full.
Then the cost of one breakdown refresh: the exporter's child process (`python -m ctguard.export.breakdown`),
the in-process read_breakdown() it runs, and the naive alternative of listing the table (`conntrack -L`).
Prints a Markdown table (medians, p99, max).

`--scrape-cost [--old-src DIR]` measures instead what one scrape costs the exporter, before and after the
lock-out hardening and with --web-config (issue 15), on a namespace with 10,000 entries (no full table, so no
heavy lock): wall time per keep-alive scrape and the exporter process's CPU time per scrape (utime + stime
from /proc, all threads, including the 1 Hz sampler), for: the exporter from DIR (an older checkout's src/,
e.g. `git archive <commit> src | tar -x -C /tmp/old`), this one plain, plain while 40 connections that never
finish a request are kept open against it, TLS, and TLS + basic auth; plus the first scrape on a new TLS
connection and the first one that pays bcrypt (cost 10).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from common import timed

from ctguard.export.breakdown import child_source
from ctguard.export.client import Scrape, ScrapeClient
from ctguard.kernel.netns import Netns, entered, exec_argv
from ctguard.kernel.settings import conntrack_count, conntrack_settings
from ctguard.kernel.stats import conntrack_stats
from ctguard.lab import tlscerts
from ctguard.lab.fill import fill
from ctguard.lab.testbed import FILL_SRC, Testbed
from ctguard.runner import run
from ctguard.table.status import read_breakdown

CLI = [sys.executable, "-c", "from ctguard.cli import main; main()"]


def start_exporter(ns: str, port: int, *args: str, src: str | None = None,
                   stderr: int | None = None) -> subprocess.Popen[str]:
    env = None if src is None else {**os.environ, "PYTHONPATH": src}
    p = subprocess.Popen([*CLI, "exporter", "--netns", ns, "--listen", f"127.0.0.1:{port}", "--json",  # noqa: S603
                          "--state-dir", f"/tmp/ctguard-bench-{os.getpid()}", *args],
                         stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True, env=env)
    ready, _, _ = select.select([p.stdout], [], [], 30)
    assert ready and p.stdout is not None and json.loads(p.stdout.readline())["event"] == "listening"
    return p


def stats_ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    return f"{statistics.median(xs) * 1e3:.2f} | {p99 * 1e3:.2f} | {xs[-1] * 1e3:.2f}"


def http10_scrape(ns: Netns, port: int, timeout: float = 1.0) -> float | None:
    """One scrape the way an HTTP/1.0 client does it: a new connection each time."""
    with entered(ns):
        s = socket.socket()
    s.settimeout(timeout)
    t = time.perf_counter()
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        while s.recv(65536):
            pass
        return time.perf_counter() - t
    except OSError:
        return None
    finally:
        s.close()


class RawKeepAlive:
    """A minimal HTTP/1.1 keep-alive scraper, like Prometheus's: one connection, request, read Content-Length
    bytes. (http.client's header parsing alone adds 1-2 ms on this machine, which is the client's cost, not
    the exporter's.)"""

    def __init__(self, ns: Netns, port: int, tls: ssl.SSLContext | None = None, auth: str = "") -> None:
        with entered(ns):
            s = socket.socket()
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s = tls.wrap_socket(s, server_hostname="127.0.0.1") if tls is not None else s
        extra = f"Authorization: Basic {base64.b64encode(auth.encode()).decode()}\r\n" if auth else ""
        self.req = (f"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept: text/plain;version=0.0.4\r\n{extra}"
                    "\r\n").encode()

    def scrape(self) -> tuple[float, bytes]:
        t = time.perf_counter()
        self.s.sendall(self.req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        n = int(next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")).split(b":")[1])
        while len(body) < n:
            body += self.s.recv(1 << 16)
        return time.perf_counter() - t, body

    def close(self) -> None:
        self.s.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hold_idle_connections(ns: Netns, port: int, n: int, stop: threading.Event) -> list[int]:
    """Keep n connections open that never finish a request (every other one sends half a header), reopening
    the ones the exporter closes, until `stop`. Returns [connects made] (updated in place)."""
    made = [0]

    def run() -> None:
        socks: list[socket.socket] = []
        while not stop.is_set():
            for x in list(socks):
                try:
                    if x.recv(4096) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                socks.remove(x)
                x.close()
            while len(socks) < n and not stop.is_set():
                with entered(ns):
                    x = socket.socket()
                x.settimeout(0.5)
                try:
                    x.connect(("127.0.0.1", port))
                    if made[0] % 2:
                        x.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                except OSError:
                    x.close()
                    continue
                x.setblocking(False)
                socks.append(x)
                made[0] += 1
            stop.wait(0.1)
        for x in socks:
            x.close()

    threading.Thread(target=run, daemon=True).start()
    return made


def scrape_cost(a: argparse.Namespace) -> None:
    rows: list[tuple[str, str, str, str, str, str]] = []
    with Testbed() as tb, tempfile.TemporaryDirectory() as d:
        ns = tb.ns()
        fill("tcp-est", 10_000, FILL_SRC, ns)
        certs = tlscerts.make(os.path.join(d, "certs"))
        import bcrypt

        pw_hash = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(10)).decode()
        tls_cfg = os.path.join(d, "tls.yml")
        with open(tls_cfg, "w") as f:
            f.write(f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n")
        auth_cfg = os.path.join(d, "auth.yml")
        with open(auth_cfg, "w") as f:
            f.write(f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n"
                    f"basic_auth_users:\n  prometheus: {pw_hash}\n")
        ctx = ssl.create_default_context(cafile=certs.ca)
        procs: list[subprocess.Popen[str]] = []

        def err_fd(port: int) -> int:  # each exporter's stderr, to count tracebacks in it afterwards
            return os.open(os.path.join(d, f"stderr-{port}"), os.O_WRONLY | os.O_CREAT, 0o600)

        def tracebacks(port: int) -> int:
            with open(os.path.join(d, f"stderr-{port}")) as f:
                return f.read().count("Traceback")

        try:
            cases: list[tuple[str, int, ssl.SSLContext | None, str, bool]] = []
            if a.old_src:
                procs.append(start_exporter(tb.srv, 9480, "--no-breakdown", src=a.old_src, stderr=err_fd(9480)))
                cases.append((f"before: exporter from {a.old_src}", 9480, None, "", False))
                cases.append(("before: 40 never-finished connections kept open against it", 9480, None, "", True))
            procs.append(start_exporter(tb.srv, 9477, "--no-breakdown", stderr=err_fd(9477)))
            cases.append(("after: plain HTTP", 9477, None, "", False))
            cases.append(("after: plain HTTP, 40 never-finished connections kept open against it", 9477, None, "",
                          True))
            procs.append(start_exporter(tb.srv, 9478, "--no-breakdown", "--web-config", tls_cfg,
                                        stderr=err_fd(9478)))
            cases.append(("after: TLS (--web-config)", 9478, ctx, "", False))
            procs.append(start_exporter(tb.srv, 9479, "--no-breakdown", "--web-config", auth_cfg,
                                        stderr=err_fd(9479)))
            cases.append(("after: TLS + basic auth (bcrypt cost 10, cached)", 9479, ctx, "prometheus:s3cret",
                          False))
            for label, port, tls, auth, attack in cases:
                pid = next(p.pid for p in procs if f"127.0.0.1:{port}" in " ".join(map(str, p.args)))  # type: ignore[arg-type]
                t = time.perf_counter()
                c = RawKeepAlive(ns, port, tls, auth)  # connected first, as Prometheus already is
                c.scrape()
                first_ever = f"{(time.perf_counter() - t) * 1e3:.1f}"
                stop = threading.Event()
                made = hold_idle_connections(ns, port, 40, stop) if attack else [0]
                time.sleep(1.0 if attack else 0)
                walls: list[float] = []
                cpu0 = cpu_seconds(pid)
                for _ in range(a.scrapes):
                    sec, _ = c.scrape()
                    walls.append(sec)
                    time.sleep(0.005)
                cpu = (cpu_seconds(pid) - cpu0) / a.scrapes
                # A new connection now (during the attack, if any): connect, TLS, first scrape.
                t = time.perf_counter()
                try:
                    fresh = RawKeepAlive(ns, port, tls, auth)
                    fresh.scrape()
                    fresh_s = f"{(time.perf_counter() - t) * 1e3:.1f}"
                    fresh.close()
                except OSError as e:
                    fresh_s = f"**failed** ({type(e).__name__})"
                stop.set()
                c.close()
                note = f" ({made[0]} attacker connects meanwhile)" if attack else ""
                rows.append((label, stats_ms(walls), f"{cpu * 1e3:.2f}{note}", first_ever, fresh_s,
                             str(tracebacks(port))))
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(10)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"{a.scrapes} keep-alive scrapes each, table 10,000 entries; load average at the end {' '.join(load)}\n")
    print("| exporter | wall median ms | p99 ms | max ms | exporter CPU ms per scrape | first connection + scrape "
          "ms | a new connection + scrape at the end ms | tracebacks in its stderr so far |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scrapes", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scrape-cost", action="store_true", help="measure the cost per scrape (see the docstring)")
    ap.add_argument("--old-src", default=None, help="with --scrape-cost: an older checkout's src/ to compare")
    a = ap.parse_args()
    if a.scrape_cost:
        scrape_cost(a)
        return
    rows: list[tuple[str, str]] = []
    with Testbed() as tb:
        ns = tb.ns()
        limit = conntrack_settings(ns).max
        slack = 3000  # room for the HTTP/1.0 peer's connections before the table is made full
        fill("tcp-est", limit - slack, FILL_SRC, ns)
        peer_code = ("import threading\n"
                     "from prometheus_client import start_http_server\n"
                     "from ctguard.kernel.netns import Netns\n"
                     "from ctguard.export.collector import ConntrackCollector, build_registry\n"
                     "start_http_server(9479, '127.0.0.1', registry=build_registry(ConntrackCollector(Netns())))\n"
                     "print('ready', flush=True)\n"
                     "threading.Event().wait()\n")
        # Every server is its own process inside the namespace, as deployed.
        pc = subprocess.Popen(["ip", "netns", "exec", tb.srv, sys.executable, "-c", peer_code],  # noqa: S603
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
        pa = start_exporter(tb.srv, 9477, "--no-breakdown")
        pb = start_exporter(tb.srv, 9478, "--breakdown-interval", "1")
        try:
            assert pc.stdout is not None and pc.stdout.readline().strip() == "ready"
            os.killpg(pb.pid, signal.SIGSTOP)  # B (and its breakdown child) frozen while A and C are timed
            peer = [x for x in (http10_scrape(ns, 9479) for _ in range(a.scrapes)) if x is not None]
            ca = ScrapeClient("127.0.0.1", 9477, ns)
            cb = ScrapeClient("127.0.0.1", 9478, ns)
            ca.scrape()
            rka = RawKeepAlive(ns, 9477)
            os.killpg(pb.pid, signal.SIGCONT)
            cb.scrape()
            rkb = RawKeepAlive(ns, 9478)
            os.killpg(pb.pid, signal.SIGSTOP)
            # Now fill the table to the limit: from here on no new connection gets an entry.
            fill("tcp-est", limit, FILL_SRC, ns, start=limit - slack)
            count = conntrack_count(ns)
            ta: list[float] = []
            collect_a: list[float] = []
            for i in range(a.scrapes):
                sec, body = rka.scrape()
                ta.append(sec)
                if i % 10 == 0:
                    collect_a.append(Scrape(0, body.decode()).samples()["ctguard_exporter_collect_seconds"])
                time.sleep(0.01)
            os.killpg(pb.pid, signal.SIGCONT)  # B runs: a breakdown dump every second, scrapes meanwhile
            tb_: list[float] = []
            sb: dict[str, float] = {}
            deadline = time.monotonic() + 180
            # At least --scrapes scrapes, and until two breakdowns have completed meanwhile.
            while len(tb_) < a.scrapes or (sb.get("ctguard_breakdown_runs_total", 0) < 2
                                           and time.monotonic() < deadline):
                sec, body = rkb.scrape()
                tb_.append(sec)
                if len(tb_) % 20 == 0:
                    sb = Scrape(0, body.decode()).samples()
                time.sleep(0.01)
            sb = cb.scrape().samples()
            # Top the table up again (the kernel's GC early-drops closing entries above 95 %, e.g. the peer's
            # TIME_WAITs), then probe the peer at once.
            fill("tcp-est", max(0, limit - conntrack_count(ns)), FILL_SRC, ns, start=2 * limit)
            drops0 = conntrack_stats(ns).get("drop")
            peer_full = [http10_scrape(ns, 9479) for _ in range(5)]
            peer_drops = conntrack_stats(ns).get("drop") - drops0
            after = ca.scrape()  # and the keep-alive one still answers right after
            ka_full_ok = ca.connects == 1 and cb.connects == 1
            rows.append((f"A keep-alive scrape, counters only, table {count:,}/{limit:,} (median, p99, max ms)",
                         stats_ms(ta)))
            rows.append(("A collect() inside the exporter (median, p99, max ms)", stats_ms(collect_a)))
            rows.append((f"B keep-alive scrape while a breakdown refreshes every 1 s ({len(tb_)} scrapes; median, p99, max ms)",
                         stats_ms(tb_)))
            rows.append(("B breakdowns done during the run / last dump's duration",
                         f"{int(sb['ctguard_breakdown_runs_total'])} / "
                         f"{sb['ctguard_breakdown_duration_seconds']:.3f} s"))
            rows.append((f"C peer: prometheus_client HTTP/1.0, new connection per scrape, table {limit - slack:,} "
                         "(median, p99, max ms)", stats_ms(peer)))
            rows.append(("C peer: scrapes answered once the table is full",
                         f"{sum(x is not None for x in peer_full)}/5, {peer_drops} SYNs dropped (A and B: all "
                         f"{a.scrapes}, one connection each: {ka_full_ok}; A right after: "
                         f"{after.seconds * 1e3:.1f} ms)"))
        finally:
            for p in (pa, pb, pc):
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGCONT)
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(10)
        # Cost of one breakdown refresh, off the scrape path.
        src = child_source(ns)
        child = [timed(src) for _ in range(a.repeat)]
        inproc = [timed(lambda: read_breakdown(ns)) for _ in range(a.repeat)]
        listing = [timed(lambda: run([*exec_argv(ns), "conntrack", "-L"], timeout=120, check=False))
                   for _ in range(a.repeat)]
        rows.append(("breakdown refresh: child process incl. interpreter start (median s)",
                     f"{statistics.median(child):.3f}"))
        rows.append(("breakdown refresh: read_breakdown() in-process (median s)", f"{statistics.median(inproc):.3f}"))
        rows.append(("naive alternative: `conntrack -L` (median s)", f"{statistics.median(listing):.3f}"))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"| measurement ({a.scrapes} scrapes, {a.repeat} repeats; load average at the end {' '.join(load)}) | value |")
    print("|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
