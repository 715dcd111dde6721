"""The HTTP/1.1 server on the loopback of the test's own namespace (no root needed): keep-alive, lengths,
a bounded number of connections, bad listen addresses."""

from __future__ import annotations

import http.client
import logging
import pathlib
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from ctguard.errors import BadInput
from ctguard.export.collector import ConntrackCollector, build_registry
from ctguard.export.readings import Reading
from ctguard.export.server import HttpCollector, MetricsServer, parse_listen
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


def _raw(server: MetricsServer, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(server.address)
    return s


def _get(s: socket.socket, path: str = "/metrics", extra: str = "") -> bytes:
    """One keep-alive request on a raw socket; the whole response (headers and Content-Length body)."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, "closed"
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    n = int(next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")).split(b":")[1])
    while len(body) < n:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True


def _wait(cond: Callable[[], bool], timeout: float = 5) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def test_at_the_cap_the_idlest_connection_makes_room_and_scrapers_keep_theirs(server: MetricsServer) -> None:
    # Cap 2. A scraper (one request done) and an idle connection hold both slots.
    scraper = _raw(server)
    assert b" 200 OK" in _get(scraper)
    idle = _raw(server)
    assert _wait(lambda: server.stats["open"] == 2)
    # A new connection is served, not refused: the never-used idle one is closed to make room.
    fresh = _raw(server)
    assert b" 200 OK" in _get(fresh)
    assert _closed(idle)
    # Another new one: now both held connections have scraped, so the one idle longest goes: the scraper
    # that scraped first; the fresh one stays.
    time.sleep(0.05)
    assert b" 200 OK" in _get(scraper)  # the scraper scrapes again: `fresh` is now idle longest
    newer = _raw(server)
    assert b" 200 OK" in _get(newer)
    assert _closed(fresh)
    assert b" 200 OK" in _get(scraper)  # the active scraper kept its connection throughout
    st = server.stats
    assert st["evicted"] == 2 and st["refused"] == 0
    for s in (scraper, idle, fresh, newer):
        s.close()


def test_many_idle_connections_never_push_out_a_scraper() -> None:
    col = ConntrackCollector(Netns(), read=lambda: Reading(time.monotonic(), 5, 10, {"drop": 1}, "procfs"))
    srv = MetricsServer(build_registry(col), "127.0.0.1:0", None, max_connections=4, max_per_source=100)
    srv.start()
    try:
        scraper = _raw(srv)
        _get(scraper)
        # 40 connections that never send a whole request: idle ones and half-open ones (unfinished header).
        junk = []
        for i in range(40):
            s = _raw(srv)
            if i % 2:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            junk.append(s)
        t0 = time.monotonic()
        assert b" 200 OK" in _get(scraper)
        fresh = _raw(srv)  # and a new scraper gets in too
        assert b" 200 OK" in _get(fresh)
        assert time.monotonic() - t0 < 5
        assert _wait(lambda: srv.stats["open"] <= 4)
        assert srv.stats["evicted"] >= 37 and srv.stats["refused"] == 0
        fams = {m.name: m for m in HttpCollector(srv).collect()}
        closed = {x.labels["reason"]: x.value for x in fams["ctguard_exporter_http_connections_closed"].samples}
        assert closed["evicted"] == srv.stats["evicted"] and closed["refused"] == 0
        assert b" 200 OK" in _get(scraper)
        for s in (*junk, scraper, fresh):
            s.close()
    finally:
        srv.stop()


def test_per_source_cap_replaces_that_sources_own_connections() -> None:
    col = ConntrackCollector(Netns(), read=lambda: Reading(time.monotonic(), 5, 10, {}, "procfs"))
    srv = MetricsServer(build_registry(col), "127.0.0.1:0", None, max_connections=10, max_per_source=2)
    srv.start()
    try:
        other = _raw(srv, "127.0.0.2")  # another source, idle and never scraped
        mine = [_raw(srv) for _ in range(2)]
        assert _wait(lambda: srv.stats["open"] == 3)
        third = _raw(srv)
        assert b" 200 OK" in _get(third)
        assert _closed(mine[0])  # its own oldest went, not the other source's older idle connection
        assert _wait(lambda: srv.stats["open"] == 3)
        assert b" 200 OK" in _get(other)
        for s in (other, *mine, third):
            s.close()
    finally:
        srv.stop()


def test_a_request_must_arrive_whole_within_the_request_timeout() -> None:
    col = ConntrackCollector(Netns(), read=lambda: Reading(time.monotonic(), 5, 10, {}, "procfs"))
    srv = MetricsServer(build_registry(col), "127.0.0.1:0", None, request_timeout=1.0, idle_timeout=30)
    srv.start()
    try:
        silent = _raw(srv)  # connects and says nothing
        trickle = _raw(srv)  # a byte every 0.2 s: each recv is quick, the request never whole in time
        t0 = time.monotonic()
        closed_at = None
        for ch in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                trickle.sendall(bytes([ch]))
            except OSError:
                closed_at = time.monotonic() - t0
                break
            time.sleep(0.2)
            if _wait(lambda: srv.stats["timed_out"] >= 2, 0):
                closed_at = time.monotonic() - t0
                break
        assert closed_at is not None and closed_at < 5
        assert _closed(silent) and _closed(trickle)
        assert srv.stats["timed_out"] == 2
        # A keep-alive connection between requests waits for the idle timeout, not the request timeout.
        s = _raw(srv)
        _get(s)
        time.sleep(1.5)
        assert b" 200 OK" in _get(s)
        s.close()
    finally:
        srv.stop()


def test_a_client_that_goes_away_leaves_no_traceback(capfd: pytest.CaptureFixture[str],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    def slow() -> Reading:
        time.sleep(0.3)
        return Reading(time.monotonic(), 5, 10, {}, "procfs")

    col = ConntrackCollector(Netns(), read=slow)
    srv = MetricsServer(build_registry(col), "127.0.0.1:0", None)
    srv.start()
    caplog.set_level(logging.DEBUG, logger="ctguard.export.server")
    try:
        for _ in range(3):
            s = _raw(srv)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST while the exporter is still collecting: its write fails
        s = _raw(srv)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x")  # half a request, then gone
        s.close()
        assert _wait(lambda: srv.stats["gone"] >= 4, 10)
    finally:
        srv.stop()
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "Error" not in err
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
    assert len([r for r in caplog.records if "ended" in r.getMessage()]) == 4


def test_idle_connections_are_closed_after_the_idle_timeout(server: MetricsServer) -> None:
    s = socket.create_connection(server.address, timeout=10)
    _get(s)
    t0 = time.monotonic()
    assert s.recv(100) == b""  # the server hangs up on an idle keep-alive connection
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


def test_responses_are_not_held_back_by_nagle(server: MetricsServer) -> None:
    # Without TCP_NODELAY a response waits for the scraper's delayed ACK (40 ms) on a keep-alive connection
    # (measured by benchmarks/bench_exporter.py). Look at the server's end of a live connection.
    s = _raw(server)
    _get(s)
    conns = server._httpd.connections.snapshot()
    assert len(conns) == 1
    server_sock = conns[0].kill.args[0]  # type: ignore[attr-defined]  # functools.partial(_shut, sock)
    assert server_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    s.close()


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
        # The server's own counters: this one connection, no early closes yet.
        assert s["ctguard_exporter_http_connections_total"] == 1
        assert s["ctguard_exporter_http_open_connections"] == 1
        assert s['ctguard_exporter_http_connections_closed_total{reason="evicted"}'] == 0
        assert s["ctguard_exporter_http_requests_total"] >= 1  # this one is counted before it is answered
        c.close()
    finally:
        ex.stop()
    with pytest.raises(BadInput):
        Exporter(Netns(name="no/such"), cfg, proc_root=str(tmp_path))


def test_a_request_cannot_grow_without_bound(server: MetricsServer) -> None:
    # Many header lines, each under http.server's 64 KiB line cap, together over MAX_REQUEST_BYTES.
    from ctguard.export.server import MAX_REQUEST_BYTES

    s = _raw(server)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    line = b"X-Pad: " + b"a" * 8000 + b"\r\n"
    sent = 0
    try:
        while sent <= MAX_REQUEST_BYTES + len(line):
            s.sendall(line)
            sent += len(line)
    except OSError:
        pass
    assert _closed(s)
    assert _wait(lambda: server.stats["gone"] == 1)
    s.close()
