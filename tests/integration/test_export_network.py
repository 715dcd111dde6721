"""`ctguard exporter` on a network, against the real kernel and a real Prometheus: 40 idle and half-open
connections cannot lock scrapers out (issue 15: 16 used to block every new scrape for 600 s), with a plain
and with a full table; and --web-config: TLS and basic auth scraped by Prometheus's own https/basic_auth
client, right and wrong password, keep-alive through TLS while the table is full.

Prometheus runs in the testbed's client namespace and scrapes the exporter in the server namespace over the
198.18.0.0/24 veth, as from a monitoring host; its HTTP API is read on the client namespace's loopback, which a
full table in the server namespace does not touch. The attackers connect from both sides: the client
namespace (the same source address as Prometheus) and the server's loopback."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import bcrypt
import pytest
from peers import stop_group

from ctguard.errors import CannotRead
from ctguard.export.client import ScrapeClient
from ctguard.kernel.netns import Netns, entered
from ctguard.kernel.settings import conntrack_count, conntrack_settings
from ctguard.lab import testbed as _tb
from ctguard.lab import tlscerts
from ctguard.lab.fill import fill

pytestmark = pytest.mark.integration
PORT = 9477
PROM_PORT = 9090
CLI = [sys.executable, "-c", "from ctguard.cli import main; main()"]
HEAVY_LOCK = "/tmp/ctguard-heavy.lock"


@contextmanager
def heavy(wait: float = 300) -> Iterator[None]:
    """Hold the machine-wide lock around a full table (the GC's early drop is global across namespaces).
    If it cannot be had within `wait` seconds (e.g. the whole run was started under `flock` on the same file,
    which would otherwise deadlock), go on without it and say so."""
    with open(HEAVY_LOCK, "a") as f:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    warnings.warn(f"{HEAVY_LOCK} still held after {wait:.0f} s: filling without it", stacklevel=2)
                    held = False
                    break
                time.sleep(0.5)
        try:
            yield
        finally:
            if held:
                fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def exporter(ns: str, *args: str, state_dir: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, object]]]:
    p = subprocess.Popen(  # noqa: S603
        [*CLI, "exporter", "--netns", ns, "--listen", f"0.0.0.0:{PORT}", "--json", "--state-dir", state_dir,
         "--no-breakdown", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 20)
        assert ready and p.stdout is not None, "exporter did not start within 20 s"
        line = p.stdout.readline()
        assert line, f"exporter exited: {p.stderr.read() if p.stderr else ''}"
        ev = json.loads(line)
        assert ev["event"] == "listening"
        yield p, ev
    finally:
        stop_group(p)


class Attack:
    """Keeps `n` connections to the exporter open that never complete a request: every other one sends an
    unfinished request (half an HTTP header, or the first bytes of a TLS record), the rest say nothing.
    Connections the exporter closes are reopened every 0.1 s (while a new connection can still be made)."""

    def __init__(self, targets: list[tuple[Netns, str]], n: int, tls: bool) -> None:
        self.targets, self.n, self.tls = targets, n, tls
        self.socks: list[socket.socket] = []
        self.opened = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _open(self, i: int) -> None:
        ns, ip = self.targets[i % len(self.targets)]
        with entered(ns):
            s = socket.socket()
        s.settimeout(0.3)
        try:
            s.connect((ip, PORT))
            if i % 2:
                s.sendall(b"\x16\x03\x01\x02\x00" if self.tls else b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            s.close()
            return
        s.setblocking(False)
        self.socks.append(s)
        self.opened += 1

    def top_up(self) -> None:
        for s in list(self.socks):
            try:
                if s.recv(4096) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                continue
            except OSError:
                pass
            self.socks.remove(s)
            s.close()
        for i in range(self.n - len(self.socks)):
            if self._stop.is_set():
                return
            self._open(i)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.top_up()

    def __enter__(self) -> Attack:
        self.top_up()  # 40 connects made (the exporter may already be closing some: that is the point)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)
        for s in self.socks:
            s.close()


def prom_query(cli: Netns, expr: str) -> list[dict[str, object]]:
    c = ScrapeClient("127.0.0.1", PROM_PORT, cli, timeout=5)
    try:
        doc = json.loads(c.scrape(f"/api/v1/query?query={urllib.parse.quote(expr)}").text)
    finally:
        c.close()
    assert doc["status"] == "success", doc
    return list(doc["data"]["result"])


def start_prometheus(tb: _tb.Testbed, d: str, jobs: str) -> Netns:
    prom = shutil.which("prometheus")
    if prom is None:
        pytest.fail("prometheus is not installed (Debian package `prometheus`): run `make setup`")
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n" + jobs)
    tb.spawn(tb.cli, [prom, f"--config.file={cfg}", f"--storage.tsdb.path={d}/data",
                      f"--web.listen-address=127.0.0.1:{PROM_PORT}"])
    return Netns(name=tb.cli)


def wait_up(cli: Netns, job: str, timeout: float = 40) -> float:
    """Wait until Prometheus has a sample of up{job} and return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = prom_query(cli, f'up{{job="{job}"}}')
        except CannotRead:
            r = []
        if r:
            return float(r[0]["value"][1])  # type: ignore[index]
        time.sleep(0.3)
    pytest.fail(f"Prometheus never scraped job {job}")


def assert_scraping(cli: Netns, job: str, seconds: float = 6.0) -> list[tuple[float, float]]:
    """Over the last `seconds`, every scrape of `job` succeeded and none was more than 2 s after the one
    before or before now. Returns the (timestamp, value) samples of up."""
    time.sleep(seconds)
    now = time.time()
    r = prom_query(cli, f'up{{job="{job}"}}[{int(seconds)}s]')
    assert r, f"no up samples for {job}"
    samples = [(float(t), float(v)) for t, v in r[0]["values"]]  # type: ignore[index]
    assert len(samples) >= seconds / 2, samples
    assert all(v == 1 for _, v in samples), f"failed scrapes of {job}: {samples}"
    times = [t for t, _ in samples] + [now]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= 2.0, f"scrape gaps of {job}: {gaps}"
    return samples


def test_idle_and_half_open_connections_cannot_lock_out_scrapers(testbed: _tb.Testbed, tmp_path: object) -> None:
    tb = testbed
    srv = Netns(name=tb.srv)
    d = str(tmp_path)
    with exporter(tb.srv, state_dir=d) as (p, _):
        scraper = ScrapeClient("127.0.0.1", PORT, srv)
        scraper.scrape()
        targets = [(Netns(name=tb.cli), _tb.SRV_IP), (srv, "127.0.0.1")]
        with Attack(targets, 40, tls=False) as attack:
            # The keep-alive scraper still gets answers at once, and so does a brand-new connection.
            for _ in range(3):
                assert scraper.scrape().seconds < 2
            t0 = time.monotonic()
            fresh = ScrapeClient(_tb.SRV_IP, PORT, Netns(name=tb.cli), timeout=2)
            assert fresh.scrape().samples()["ctguard_exporter_read_success"] == 1
            assert time.monotonic() - t0 < 2
            fresh.close()
            # A real Prometheus, started while the attack goes on: a new connection from the attackers' own
            # address, and every one of its scrapes succeeds, at most 2 s apart.
            cli = start_prometheus(tb, os.path.join(d, "prom"), f"""
  - job_name: ctguard
    static_configs:
      - targets: ["{_tb.SRV_IP}:{PORT}"]
""")
            assert wait_up(cli, "ctguard") == 1
            assert_scraping(cli, "ctguard")
            assert scraper.scrape().seconds < 2 and scraper.connects == 1
            assert attack.opened > 40  # the exporter kept closing attackers, and they kept coming back
            s = scraper.scrape().samples()  # and says so in its metrics
            closed = {r: s[f'ctguard_exporter_http_connections_closed_total{{reason="{r}"}}']
                      for r in ("evicted", "refused", "timed_out")}
            assert closed["evicted"] + closed["timed_out"] > 0 and closed["refused"] == 0, closed
        scraper.close()
    assert p.returncode == 0
    assert p.stderr is not None
    err = p.stderr.read()
    assert "Traceback" not in err and "Error" not in err, err[-2000:]


def test_tls_and_basic_auth_with_a_real_prometheus_and_a_full_table(testbed: _tb.Testbed, tmp_path: object) -> None:
    tb = testbed
    srv = Netns(name=tb.srv)
    d = str(tmp_path)
    certs = tlscerts.make(os.path.join(d, "certs"), server_sans=(f"IP:{_tb.SRV_IP}", "IP:127.0.0.1"))
    web = os.path.join(d, "web.yml")
    with open(web, "w") as f:
        f.write(f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n"
                f"basic_auth_users:\n  prometheus: {bcrypt.hashpw(b's3cret', bcrypt.gensalt(10)).decode()}\n")
    ctx = ssl.create_default_context(cafile=certs.ca)
    with exporter(tb.srv, "--web-config", web, state_dir=d) as (p, ev):
        assert ev["url"] == f"https://0.0.0.0:{PORT}/metrics" and ev["tls"] and ev["basic_auth"]
        scraper = ScrapeClient("127.0.0.1", PORT, srv, tls=ctx, auth=("prometheus", "s3cret"))
        assert scraper.scrape().samples()["ctguard_exporter_read_success"] == 1
        wrong = ScrapeClient("127.0.0.1", PORT, srv, tls=ctx, auth=("prometheus", "guess"))
        with pytest.raises(CannotRead, match="HTTP 401"):
            wrong.scrape()
        wrong.close()
        job = f"""    scheme: https
    tls_config:
      ca_file: {certs.ca}
    static_configs:
      - targets: ["{_tb.SRV_IP}:{PORT}"]
"""
        cli = start_prometheus(tb, os.path.join(d, "prom"), f"""
  - job_name: ctguard
    basic_auth:
      username: prometheus
      password: s3cret
{job}
  - job_name: wrong-password
    basic_auth:
      username: prometheus
      password: guess
{job}
  - job_name: no-tls
    static_configs:
      - targets: ["{_tb.SRV_IP}:{PORT}"]
""")
        assert wait_up(cli, "ctguard") == 1
        assert wait_up(cli, "wrong-password") == 0
        assert wait_up(cli, "no-tls") == 0
        limit = conntrack_settings(srv).max
        targets = [(Netns(name=tb.cli), _tb.SRV_IP), (srv, "127.0.0.1")]
        with heavy():
            fill("tcp-est", limit - 300, _tb.FILL_SRC, srv)
            with Attack(targets, 40, tls=True):
                # The last entries: from now on no new connection gets through (its SYN is dropped).
                fill("tcp-est", max(0, limit - conntrack_count(srv)), _tb.FILL_SRC, srv, start=limit)
                assert conntrack_count(srv) >= limit
                with entered(srv):
                    probe = socket.socket()
                probe.settimeout(1.0)
                with pytest.raises(OSError):
                    probe.connect(("127.0.0.1", PORT))
                probe.close()
                # Prometheus's TLS keep-alive connection keeps scraping, every 1-2 s, and sees the full table.
                assert_scraping(cli, "ctguard")
                free = prom_query(cli, 'ctguard_conntrack_free_entries{job="ctguard"}')
                assert float(free[0]["value"][1]) == 0  # type: ignore[index]
                drops = prom_query(cli, 'ctguard_conntrack_drop_total{job="ctguard"}')
                assert float(drops[0]["value"][1]) > 0  # type: ignore[index]
                for _ in range(3):
                    s = scraper.scrape()
                    assert s.seconds < 2 and s.samples()["ctguard_conntrack_free_entries"] == 0
                assert scraper.connects == 1
        scraper.close()
    assert p.stderr is not None
    err = p.stderr.read()
    assert "Traceback" not in err, err[-2000:]
