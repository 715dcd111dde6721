"""The HTTP/1.1 server on the loopback of the test's own namespace (no root needed): keep-alive, lengths,
a bounded number of connections, bad listen addresses."""

from __future__ import annotations

import http.client
import pathlib
import socket
import time
from collections.abc import Iterator

import pytest

from ctguard.errors import BadInput
from ctguard.export.collector import ConntrackCollector, build_registry
from ctguard.export.readings import Reading
from ctguard.export.server import MetricsServer, parse_listen
from ctguard.kernel.netns import Netns


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    col = ConntrackCollector(Netns(), read=lambda: Reading(time.monotonic(), 5, 10, {"drop": 1}, "procfs"))
    srv = MetricsServer(build_registry(col), "127.0.0.1:0", None, idle_timeout=2.0, max_connections=2)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_keep_alive_serves_many_scrapes_on_one_connection(server: MetricsServer) -> None:
    host, port = server.address
    c = http.client.HTTPConnection(host, port, timeout=5)
    for _ in range(5):
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and r.version == 11 and not r.will_close
        assert int(r.headers["Content-Length"]) == len(body)
        assert b"ctguard_conntrack_entries 5.0" in body
    c.request("GET", "/nope")
    r = c.getresponse()
    assert r.status == 404 and r.read() == b"not found\n"
    c.request("HEAD", "/metrics")
    r = c.getresponse()
    assert r.status == 200 and r.read() == b""
    c.close()
    assert server.stats["connections"] == 1 and server.stats["requests"] == 7


def test_openmetrics_when_asked(server: MetricsServer) -> None:
    c = http.client.HTTPConnection(*server.address, timeout=5)
    c.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0"})
    r = c.getresponse()
    body = r.read()
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    c.close()


def test_connections_beyond_the_cap_are_closed_at_accept(server: MetricsServer) -> None:
    held = [http.client.HTTPConnection(*server.address, timeout=5) for _ in range(2)]
    for c in held:
        c.request("GET", "/metrics")
        c.getresponse().read()
    extra = socket.create_connection(server.address, timeout=5)
    extra.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert extra.recv(100) == b""  # closed without an answer
    extra.close()
    deadline = time.monotonic() + 5
    while server.stats["refused"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stats["refused"] == 1
    for c in held:  # the held ones still work
        c.request("GET", "/metrics")
        assert c.getresponse().status == 200
        c.close()


def test_idle_connections_are_closed_after_the_idle_timeout(server: MetricsServer) -> None:
    s = socket.create_connection(server.address, timeout=10)
    t0 = time.monotonic()
    assert s.recv(100) == b""  # the server hangs up on an idle connection
    assert 1.5 < time.monotonic() - t0 < 8
    s.close()


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9477") == ("127.0.0.1", 9477, socket.AF_INET)
    assert parse_listen("[::1]:9477") == ("::1", 9477, socket.AF_INET6)
    for bad in ("9477", "localhost:9477", "127.0.0.1:99999", "127.0.0.1:x", ""):
        with pytest.raises(BadInput):
            parse_listen(bad)


def test_a_port_in_use_is_one_clear_error(server: MetricsServer) -> None:
    host, port = server.address
    col = ConntrackCollector(Netns(), read=lambda: Reading(0, 0, 1, {}, "procfs"))
    with pytest.raises(BadInput, match="cannot listen"):
        MetricsServer(build_registry(col), f"{host}:{port}")


def test_responses_are_not_held_back_by_nagle() -> None:
    # Headers and body are two writes: without TCP_NODELAY the body waits for the scraper's delayed ACK
    # (40 ms) on a keep-alive connection (measured by benchmarks/bench_exporter.py).
    from ctguard.export.server import _Handler

    assert _Handler.disable_nagle_algorithm is True


def test_exporter_wiring_on_a_fake_proc_tree(tmp_path: pathlib.Path) -> None:
    """Exporter = collector + 1 Hz sampler + breakdown refresher + server, on the test's loopback."""
    from ctguard.export.breakdown import Breakdown
    from ctguard.export.client import ScrapeClient
    from ctguard.export.exporter import Exporter, ExporterConfig

    nf = tmp_path / "sys" / "net" / "netfilter"
    nf.mkdir(parents=True)
    (nf / "nf_conntrack_count").write_text("40\n")
    (nf / "nf_conntrack_max").write_text("100\n")
    (tmp_path / "net" / "stat").mkdir(parents=True)
    (tmp_path / "net" / "stat" / "nf_conntrack").write_text(
        "entries found invalid insert insert_failed drop early_drop search_restart\n"
        "00000028 00000000 00000000 00000000 00000000 00000009 00000000 00000000\n")
    bd = Breakdown(1.0, 0.1, 40, by_state={"TIME_WAIT": 40}, by_daemon=[("osd.0", 25)])
    cfg = ExporterConfig(listen="127.0.0.1:0", breakdown_interval=3600, state_dir=str(tmp_path / "st"),
                         sample_interval=0.1)
    ex = Exporter(Netns(), cfg, proc_root=str(tmp_path), breakdown_source=lambda: bd)
    ex.start()
    try:
        c = ScrapeClient(*ex.server.address)
        deadline = time.monotonic() + 10
        s = c.scrape().samples()
        while (s.get("ctguard_breakdown_runs_total", 0) < 1 or len(ex.collector.window.samples()) < 2) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
            s = c.scrape().samples()
        assert s["ctguard_conntrack_entries"] == 40 and s["ctguard_conntrack_drop_total"] == 9
        assert s['ctguard_conntrack_counters_source{source="procfs"}'] == 1
        assert s['ctguard_restart_headroom_entries{daemon="osd.0"}'] == 60 - 50
        assert len(ex.collector.window.samples()) >= 2  # the sampler runs between scrapes
        c.close()
    finally:
        ex.stop()
    with pytest.raises(BadInput):
        Exporter(Netns(name="no/such"), cfg, proc_root=str(tmp_path))
