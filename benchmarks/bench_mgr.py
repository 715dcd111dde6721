"""Benchmark: the ctguard mgr module's reading cycle and command answers while some exporters hang, side by side
with the naive design (fetch every host inside the command, one after another).

Run from the repo root (no root needed; loopback only):  PYTHONPATH=src .venv/bin/python benchmarks/bench_mgr.py

N loopback HTTP/1.1 servers serve the exposition recorded from a lab exporter (tests/fixtures/mgr); H of them
hang (a listening socket that accepts into its backlog and never answers: a SIGSTOPped exporter).
  A  core.Poller.poll(): one reading cycle of every host, worker threads, per-fetch timeout T, deadline 2T+0.5;
  B  the commands' work in the module: status_doc() + status_text() + ok_to_restart() from the cached readings;
  C  the peer: what a command would cost if it fetched each host itself, sequentially, with the same timeout
     (urllib.request.urlopen, a new connection per fetch).
Prints a Markdown table (median and max of R repeats).
"""

from __future__ import annotations

import argparse
import http.server
import importlib.util
import os
import socket
import statistics
import sys
import threading
import time
import urllib.request
from typing import Any

from common import timed

# core.py alone, by path: the package's __init__ imports Ceph's mgr_module, which exists only inside ceph-mgr
_CORE = os.path.join(os.path.dirname(__file__), "..", "src", "ctguard", "mgr_module", "ctguard", "core.py")
_spec = importlib.util.spec_from_file_location("ctguard_mgr_core", _CORE)
assert _spec is not None and _spec.loader is not None
core: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(core)

FIX = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "mgr", "exporter_h1.prom")


def serve(body: bytes) -> tuple[http.server.ThreadingHTTPServer, int]:
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, int(srv.server_address[1])


def hung() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s, int(s.getsockname()[1])


def naive(urls: list[str], timeout: float) -> None:
    for u in urls:
        try:
            with urllib.request.urlopen(u, timeout=timeout) as r:  # noqa: S310 - loopback http only
                core.reading_from_samples(core.parse_exposition(r.read().decode()), time.time(), u)
        except OSError:
            pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=24)
    ap.add_argument("--hung", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    with open(FIX, "rb") as f:
        body = f.read()
    servers = [serve(body) for _ in range(a.hosts - a.hung)]
    hangs = [hung() for _ in range(a.hung)]
    ports = [p for _, p in servers] + [p for _, p in hangs]
    hosts = [core.Host(f"h{i}", "127.0.0.1", [2 * i, 2 * i + 1]) for i in range(a.hosts)]
    urls = {h.name: f"http://127.0.0.1:{p}/metrics" for h, p in zip(hosts, ports, strict=True)}
    settings = core.Settings(stale_after=3600)
    osd_host = {o: h.name for h in hosts for o in h.osds}

    rows: list[tuple[str, list[float]]] = []
    for hung_now in (0, a.hung):
        live = hosts[: a.hosts - a.hung] + hosts[a.hosts - a.hung:][:hung_now]
        poller = core.Poller(core.KeepAliveFetcher())
        cycles = [timed(lambda p=poller, hs=live: p.poll(hs, urls, a.timeout, 2 * a.timeout + 0.5, 300.0))
                  for _ in range(a.repeat)]
        rows.append((f"A poll cycle, {len(live)} hosts, {hung_now} hung (timeout {a.timeout:g} s)", cycles))
        snap = poller.snapshot()
        def command(s: Any = snap) -> None:
            t = time.time()
            core.status_text(core.status_doc(s, settings, t))
            core.ok_to_restart(s, osd_host, [0, 1], settings, t)

        cmd = [timed(command) for _ in range(200)]
        rows.append((f"B status + ok-to-restart from the cache, {hung_now} hung", cmd))
        peer = [timed(lambda hs=live: naive([urls[h.name] for h in hs], a.timeout)) for _ in range(a.repeat)]
        rows.append((f"C peer: sequential fetch inside the command, {hung_now} hung", peer))
    print(f"{a.hosts} hosts, python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}\n")
    print("| measurement | median | max |\n|---|---|---|")
    for name, xs in rows:
        unit, k = ("µs", 1e6) if max(xs) < 1e-3 else ("ms", 1e3)
        print(f"| {name} | {statistics.median(xs) * k:.1f} {unit} | {max(xs) * k:.1f} {unit} |")
    for srv, _ in servers:
        srv.shutdown()
    for s, _ in hangs:
        s.close()


if __name__ == "__main__":
    main()
