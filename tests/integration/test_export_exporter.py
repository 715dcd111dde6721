"""`ctguard exporter` against the real kernel: scraped over HTTP inside a Testbed namespace with known entries,
still answering over its keep-alive connection when the table is full, and scraped by a real Prometheus."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from peers import PEER, stop_group, wait_ready

from ctguard.errors import CannotRead
from ctguard.export.breakdown import take
from ctguard.export.client import ScrapeClient
from ctguard.kernel.netns import Netns, entered
from ctguard.kernel.settings import conntrack_count, conntrack_settings
from ctguard.lab import testbed as _tb
from ctguard.lab.fill import fill
from ctguard.restart.gates import KeepAliveFetcher, PrometheusSource

pytestmark = pytest.mark.integration
PORT = 9477
CLI = [sys.executable, "-c", "from ctguard.cli import main; main()"]


@contextmanager
def exporter(ns: str, *args: str, state_dir: str, host: str = "127.0.0.1") -> Iterator[subprocess.Popen[str]]:
    """`ctguard exporter --netns ns` from the root namespace; yields once it listens; killed by PID."""
    p = subprocess.Popen(  # noqa: S603
        [*CLI, "exporter", "--netns", ns, "--listen", f"{host}:{PORT}", "--json", "--state-dir", state_dir,
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 20)
        assert ready, "exporter did not start within 20 s"
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line, f"exporter exited: {p.stderr.read() if p.stderr else ''}"
        ev = json.loads(line)
        assert ev["event"] == "listening" and ev["url"] == f"http://{host}:{PORT}/metrics"
        yield p
    finally:
        stop_group(p)


def test_scrape_reports_known_entries_and_stays_up_when_the_table_is_full(testbed: _tb.Testbed, tmp_path: object) -> None:
    ns = Netns(name=testbed.srv)
    n = 300
    fill("tcp-est", n, _tb.FILL_SRC, ns)
    assert conntrack_count(ns) == n
    with exporter(testbed.srv, "--no-breakdown", state_dir=str(tmp_path), host="0.0.0.0"):
        scraper = ScrapeClient("127.0.0.1", PORT, ns)
        s = scraper.scrape().samples()
        # The scraper's own loopback connection is tracked too: exactly one more entry.
        assert s["ctguard_conntrack_entries"] == n + 1
        assert s["ctguard_conntrack_limit"] == conntrack_settings(ns).max
        assert s["ctguard_conntrack_drop_total"] == 0
        assert s["ctguard_exporter_read_success"] == 1
        assert s['ctguard_conntrack_counters_source{source="netlink"}'] == 1

        # Fill the namespace to the global max with ASSURED entries: now nothing new gets an entry.
        limit = conntrack_settings(ns).max
        fill("tcp-est", limit, _tb.FILL_SRC, ns, start=n)
        assert conntrack_count(ns) >= limit
        drops_before = scraper.scrape().samples()["ctguard_conntrack_drop_total"]
        # A new connection to the exporter is refused (its SYN is dropped: it times out) ...
        with entered(ns):
            fresh = socket.socket()
        fresh.settimeout(1.5)
        with pytest.raises(OSError):
            fresh.connect(("127.0.0.1", PORT))
        fresh.close()
        # ... while the persistent connection keeps getting answers, reporting the full table and the drops.
        for _ in range(3):
            s = scraper.scrape().samples()
            assert s["ctguard_conntrack_entries"] >= limit
            assert s["ctguard_conntrack_free_entries"] == 0
            assert s["ctguard_conntrack_drop_total"] > drops_before  # the refused SYN, counted
            assert s["ctguard_conntrack_projected_full_seconds"] == 0
        assert scraper.connects == 1
        # From the monitoring network: a new connection is refused too, until `ctguard notrack` exempts the
        # exporter's port for that network; then new scrapers get through the full table.
        remote = ScrapeClient(_tb.SRV_IP, PORT, Netns(name=testbed.cli), timeout=1.0)
        with pytest.raises(CannotRead):
            remote.scrape()
        nt = [*CLI, "notrack", "apply", "--netns", testbed.srv, "--state-dir", os.path.join(str(tmp_path), "nt"),
              "--network", "198.18.0.0/24", "--no-ceph", "--extra-port", str(PORT),
              "--extra-from", "198.18.0.0/24", "--no-rollback", "--json"]
        done = subprocess.run(nt, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
        assert done.returncode in (0, 1), done.stderr
        try:
            for _ in range(3):
                s = ScrapeClient(_tb.SRV_IP, PORT, Netns(name=testbed.cli), timeout=2.0).scrape().samples()
                assert s["ctguard_conntrack_entries"] >= limit and s["ctguard_conntrack_drop_total"] > drops_before
        finally:
            rm = subprocess.run([*CLI, "notrack", "remove", "--netns", testbed.srv, "--state-dir",  # noqa: S603
                                 os.path.join(str(tmp_path), "nt"), "--json"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert rm.returncode == 0, rm.stderr
        scraper.scrape()  # the keep-alive scraper never noticed
        assert scraper.connects == 1
        scraper.close()


def test_listen_in_host_serves_a_target_namespace_on_the_root_loopback(testbed: _tb.Testbed,
                                                                        tmp_path: object) -> None:
    ns = Netns(name=testbed.srv)
    fill("tcp-tw", 123, _tb.FILL_SRC, ns)
    p = subprocess.Popen(  # noqa: S603
        [*CLI, "exporter", "--netns", testbed.srv, "--listen-in-host", "--listen", "127.0.0.1:0", "--json",
         "--no-breakdown", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert p.stdout is not None
        ready, _, _ = select.select([p.stdout], [], [], 20)
        assert ready, "exporter did not start"
        url = json.loads(p.stdout.readline())["url"]
        port = int(urllib.parse.urlsplit(url).port or 0)
        assert port > 0
        s = ScrapeClient("127.0.0.1", port).scrape().samples()  # from this (root) namespace
        assert s["ctguard_conntrack_entries"] == 123  # the scrape itself is not in srv's table
        assert s[f'ctguard_exporter_info{{netns="{testbed.srv}",version="0.1.0"}}'] == 1
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)
    assert p.returncode == 0


def test_breakdown_and_restart_headroom_of_a_local_osd(testbed: _tb.Testbed, tmp_path: object) -> None:
    """A process named `ceph-osd -i 3` holds 5 connections (2 closed into TIME_WAIT): the exporter's
    background breakdown attributes them, and the headroom is free - 5 x burst factor."""
    tb = testbed
    d = str(tmp_path)
    osd_exe = os.path.join(d, "ceph-osd")
    os.symlink(os.path.realpath(sys.executable), osd_exe)
    osd = tb.spawn(tb.srv, [osd_exe, PEER, "-i", "3", os.path.join(d, "osd"), "serve", _tb.SRV_IP, "6800"])
    wait_ready(os.path.join(d, "osd"), osd)
    cp = tb.spawn(tb.cli, [sys.executable, PEER, os.path.join(d, "c"), "connect", _tb.SRV_IP, "6800", "5",
                           "--close", "2"])
    wait_ready(os.path.join(d, "c"), cp)
    ns = Netns(name=tb.srv)
    fill("tcp-est", 100, _tb.FILL_SRC, ns)
    with exporter(tb.srv, "--burst-factor", "3", state_dir=d):
        scraper = ScrapeClient("127.0.0.1", PORT, ns)
        deadline = time.monotonic() + 20
        s = scraper.scrape().samples()
        while s.get("ctguard_breakdown_runs_total", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            s = scraper.scrape().samples()
        assert s["ctguard_breakdown_errors_total"] == 0
        assert s['ctguard_conntrack_daemon_entries{daemon="osd.3"}'] == 5
        assert s['ctguard_conntrack_state_entries{state="TIME_WAIT"}'] == 2
        assert s['ctguard_conntrack_role_entries{role="ceph-osd"}'] == 5
        assert s['ctguard_conntrack_protocol_entries{protocol="tcp"}'] >= 105
        assert s["ctguard_conntrack_assured_entries"] >= 105
        assert s['ctguard_restart_burst_entries{daemon="osd.3"}'] == 15
        free = s["ctguard_conntrack_limit"] - s["ctguard_conntrack_entries"]
        assert s['ctguard_restart_headroom_entries{daemon="osd.3"}'] == free - 15
        assert s["ctguard_breakdown_age_seconds"] < 30
        assert s["ctguard_breakdown_expired_freed_entries_total"] >= 0
        scraper.close()


RULES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "src", "ctguard", "export", "rules", "ctguard.yml")
def test_a_breakdown_dump_reports_the_expired_entries_it_freed(testbed: _tb.Testbed) -> None:
    """Entries past their timeout stay counted until the kernel's GC reaps them (kernel-conntrack.md §6b). The
    exporter's breakdown child (`take`, the code `python -m ctguard.export.breakdown` runs) reaps them with its
    dump and reports how many: exported as ctguard_breakdown_expired_freed_entries_total.

    The GC worker is global and its next pass comes after a moving average of the remaining timeouts it last
    saw (1-60 s, net/netfilter/nf_conntrack_core.c gc_worker), so other namespaces' churn can bring it forward:
    the dump comes 50 ms after expiry, and a round the GC won (nothing left to reap) is tried again."""
    tb = testbed
    ns = Netns(name=tb.srv)
    tb.sysctl(tb.srv, "net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1")  # per netns, ours
    fill("tcp-est", 50_000, _tb.FILL_SRC, ns)  # long-lived entries
    n_tw = 1000
    rounds = 5
    for rnd in range(rounds):
        fill("tcp-tw", n_tw, _tb.FILL_SRC, ns, sport=40001 + rnd)
        time.sleep(1.01)  # the last entry expires 1 s after the fill ends: dump right then, before the GC passes
        counted = conntrack_count(ns)
        bd = take(ns)
        assert bd.by_state.get("TIME_WAIT", 0) == 0 and bd.by_state["ESTABLISHED"] == 50_000
        assert bd.expired_freed <= max(0, counted - 50_000)  # never more than what was there to free
        if counted - 50_000 >= n_tw // 2:  # the GC left most of them: the dump must have freed them
            assert bd.expired_freed >= n_tw // 4
            assert conntrack_count(ns) == 50_000
            return
    # The precondition could not be produced, which is not a failure of the code under test: the GC worker runs
    # back to back while other namespaces churn (measured here: expired entries reaped within 0.2-0.9 s).
    pytest.skip(f"the kernel's GC reaped the expired entries before every dump ({rounds} rounds): "
                "the global GC is running continuously on this machine")


PROM_CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: ctguard
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def _prom_query(ns: Netns, port: int, expr: str) -> list[dict[str, object]]:
    url = f"/api/v1/query?query={urllib.parse.quote(expr)}"
    client = ScrapeClient("127.0.0.1", port, ns, timeout=5)
    try:
        text = client.scrape(url).text
    finally:
        client.close()
    doc = json.loads(text)
    assert doc["status"] == "success", doc
    return list(doc["data"]["result"])


def test_real_prometheus_scrapes_the_exporter(testbed: _tb.Testbed, tmp_path: object) -> None:
    prom = shutil.which("prometheus")
    if prom is None:
        pytest.fail("prometheus is not installed (Debian package `prometheus`): run `make setup`")
    ns = Netns(name=testbed.srv)
    n = 200
    fill("tcp-est", n, _tb.FILL_SRC, ns)
    d = os.path.join(str(tmp_path), "prom")
    os.makedirs(d)
    cfg = os.path.join(d, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(PROM_CONFIG.format(port=PORT, rules=RULES))
    prom_port = 9090
    with exporter(testbed.srv, "--no-breakdown", state_dir=str(tmp_path)):
        # Prometheus runs inside the namespace too (killed by PID by the testbed), on its loopback.
        testbed.spawn(testbed.srv, [prom, f"--config.file={cfg}", f"--storage.tsdb.path={d}/data",
                                    f"--web.listen-address=127.0.0.1:{prom_port}"])
        deadline = time.monotonic() + 30
        result: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            try:
                result = _prom_query(ns, prom_port, 'ctguard_conntrack_limit{job="ctguard"}')
            except CannotRead:
                result = []
            if result:
                break
            time.sleep(0.5)
        assert result, "Prometheus never stored a sample of ctguard_conntrack_limit"
        assert float(result[0]["value"][1]) == conntrack_settings(ns).max  # type: ignore[index]
        entries = _prom_query(ns, prom_port, "ctguard_conntrack_entries")
        # The filler plus a few connections of Prometheus and of this test (each new one is tracked).
        assert n < float(entries[0]["value"][1]) < n + 50  # type: ignore[index]
        up = _prom_query(ns, prom_port, 'up{job="ctguard"}')
        assert float(up[0]["value"][1]) == 1  # type: ignore[index]
        # `ctguard restart --gate-source URL` reads its gates through this same HTTP API (PrometheusSource).
        fetcher = KeepAliveFetcher()
        src = PrometheusSource(f"http://127.0.0.1:{prom_port}", fetch=lambda url, t, _ns: fetcher(url, t, ns))
        gate = src.read("127.0.0.1")
        fetcher.close()
        assert gate.limit == conntrack_settings(ns).max and n < gate.entries < n + 50 and gate.drops == 0
        # Our alert rules are loaded and evaluate cleanly against the real series; none fires on a quiet table.
        c = ScrapeClient("127.0.0.1", prom_port, ns)
        deadline = time.monotonic() + 15
        while True:
            rules = json.loads(c.scrape("/api/v1/rules", reconnect=True).text)["data"]["groups"]
            evaluated = [r for g in rules for r in g["rules"]]
            if all(r.get("lastEvaluation", "").startswith("20") for r in evaluated) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        c.close()
        assert len(evaluated) == 8
        assert all(r["health"] == "ok" for r in evaluated), [(r["name"], r.get("lastError")) for r in evaluated]
        assert all(r["state"] == "inactive" for r in evaluated), [(r["name"], r["state"]) for r in evaluated]
