"""The exporter's HTTP server: HTTP/1.1 keep-alive that nobody can lock out, with optional TLS and basic auth.

A new TCP connection to the exporter needs a conntrack entry, and when the table is full the SYN is dropped
(kernel-conntrack.md §3: new connections time out, established ones keep working). prometheus_client's
start_http_server speaks HTTP/1.0 — one connection per scrape — and goes dark exactly during an overflow. Here
every response carries Content-Length and the server speaks HTTP/1.1, so a scraper's connection (Prometheus
keeps its scrape connections alive) rides on its existing entry and keeps getting answers.

Nobody can take those connections away (issue 15: 16 idle connections used to block every new scrape for the
600 s idle timeout, and a client that went away left a BrokenPipeError traceback in the log):
* a request (TLS handshake, request line, headers and body) must arrive whole within `request_timeout` of its
  first byte (of the accept, for a connection's first request): a half-open or trickling client is closed;
* at the connection cap the connection idle longest is closed instead of refusing the new one, never-proven
  connections first, so a scraper that keeps scraping keeps its connection (connections.py);
* `max_per_source` connections per source address;
* a client that goes away costs one debug line, never a traceback.

The listening socket is made inside the target namespace (sockets stay bound to the namespace they were
created in), so `--netns X` serves X's table on X's own network, where a full table also blocks connections.
One thread per connection; a thread blocked reading an idle connection is woken by shutdown(2) when its
connection is evicted.
"""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from ctguard.errors import BadInput
from ctguard.export import webconfig as _web
from ctguard.export.connections import Conn, Connections
from ctguard.kernel import netns as _netns

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9477"
# Longer than Prometheus' own idle keep-alive (5 min), so it is Prometheus that closes an idle connection.
DEFAULT_IDLE_TIMEOUT = 600.0
# A scraper sends its whole request at once, right after connecting: 10 s covers a TLS handshake on a loaded
# host many times over, and is what a half-open connection can hold a slot for.
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_MAX_PER_SOURCE = 8
MAX_BODY = 64 * 1024  # scrapes have no body; a small one is read and ignored so keep-alive stays in step
# Bytes one request may send in all (header lines are each capped at 64 KiB by http.server, but not their
# sum): 32 connections can then buffer at most ~8 MiB, well inside the unit's MemoryMax.
MAX_REQUEST_BYTES = 256 * 1024

_INDEX = (b"<html><head><title>ctguard exporter</title></head><body><h1>ctguard exporter</h1>"
          b"<p><a href=\"/metrics\">/metrics</a></p></body></html>\n")


def parse_listen(text: str) -> tuple[str, int, socket.AddressFamily]:
    """'127.0.0.1:9477' / '[::1]:9477' / '0.0.0.0:9477' -> (host, port, family)."""
    host, sep, port_s = text.rpartition(":")
    if not sep or not port_s.isdigit():
        raise BadInput(f"bad listen address {text!r} (expected HOST:PORT, e.g. {DEFAULT_LISTEN})")
    port = int(port_s)
    if not 0 <= port <= 65535:  # 0: any free port (tests)
        raise BadInput(f"bad port {port} in {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as e:
        raise BadInput(f"bad listen address {text!r}: give an IP address, not a name") from e
    return str(ip), port, socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def _shut(sock: socket.socket) -> None:
    """Wake the thread blocked on `sock` (EOF in its recv). The plain socket's shutdown(2), also for an
    SSLSocket: SSLSocket.shutdown would drop its SSL object under the reading thread."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _Gone(Exception):
    """The client closed its end or was evicted (EOF): end the connection quietly."""


class _Reader:
    """The handler's rfile: a buffered line reader whose every recv(2) is bounded by the connection's current
    deadline, so a request trickled in a byte at a time still has to be whole by its deadline."""

    def __init__(self, sock: socket.socket, request_timeout: float, clock: Callable[[], float]) -> None:
        self.sock, self.request_timeout, self.clock = sock, request_timeout, clock
        self.buf = bytearray()
        self._idle_until = 0.0
        self._deadline: float | None = None
        self._received = 0  # bytes received for the current request

    def expect_request(self, idle_until: float, deadline: float | None = None) -> None:
        """Wait for the next request until `idle_until`; once its first byte is in, it must be whole by
        `deadline` (default: first byte + request_timeout)."""
        self._idle_until = idle_until
        self._deadline = deadline
        self._received = len(self.buf)
        if self.buf and deadline is None:  # a pipelined request is already here
            self._deadline = self.clock() + self.request_timeout

    def _fill(self) -> bool:
        now = self.clock()
        until = self._deadline if self._deadline is not None else self._idle_until
        left = until - now
        if left <= 0:
            raise TimeoutError("request deadline passed")
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        if not data:
            return False
        self._received += len(data)
        if self._received > MAX_REQUEST_BYTES:
            raise _Gone(f"request larger than {MAX_REQUEST_BYTES} bytes")
        if self._deadline is None:
            self._deadline = self.clock() + self.request_timeout
        self.buf += data
        return True

    def readline(self, limit: int = -1) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0 and (limit < 0 or i < limit):
                n = i + 1
                break
            if 0 <= limit <= len(self.buf):
                n = limit
                break
            if not self._fill():
                if self.buf:  # EOF inside a request: never answer half a request
                    raise _Gone("closed in the middle of a request")
                return b""  # EOF between requests: a client that closed its keep-alive connection
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise _Gone("closed in the middle of a request body")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


class _Writer:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False

    def write(self, b: bytes) -> int:
        self.sock.sendall(b)
        return len(b)

    def flush(self) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def __init__(self, request: socket.socket, client_address: Any, server: _Server, conn: Conn,
                 box: list[socket.socket]) -> None:
        self.conn, self.box = conn, box
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        srv = self.server
        sock: socket.socket = self.request
        # Headers and body leave in one write, and TCP_NODELAY keeps it from waiting for the scraper's
        # delayed ACK (measured: 43 ms per keep-alive scrape instead of ~2 ms before it was set).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first_deadline = self.conn.opened + srv.request_timeout
        if srv.tls is not None:
            tls = srv.tls.get().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            self.box[0] = tls
            if not srv.connections.set_kill(self.conn, functools.partial(_shut, tls)):
                raise _Gone("evicted before the TLS handshake")
            tls.settimeout(max(0.001, first_deadline - srv.clock()))
            try:
                tls.do_handshake()
            except (OSError, ValueError) as e:
                if self.conn.evicted:
                    raise _Gone("evicted during the TLS handshake") from e
                srv.count("tls_failed")
                raise _Gone(f"TLS handshake failed: {e}") from e
            sans = srv.tls.settings.client_allowed_sans
            if sans and not set(_web.peer_sans(tls.getpeercert())) & set(sans):
                srv.count("tls_failed")
                raise _Gone("client certificate has none of client_allowed_sans")
            sock = tls
        self.connection = sock
        self.rfile = _Reader(sock, srv.request_timeout, srv.clock)  # type: ignore[assignment]
        self.wfile = _Writer(sock)  # type: ignore[assignment]
        self.rfile.expect_request(first_deadline, first_deadline)  # type: ignore[attr-defined]

    def handle(self) -> None:
        self.close_connection = False
        while True:
            self.handle_one_request()
            if self.close_connection:
                return
            srv = self.server
            self.rfile.expect_request(srv.clock() + srv.idle_timeout)  # type: ignore[attr-defined]

    def finish(self) -> None:
        pass  # the server closes the socket

    def handle_one_request(self) -> None:
        srv = self.server
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.parse_request():  # it answered with an error (and Connection: close)
            return
        if self.headers.get("Transfer-Encoding"):
            self.send_error(HTTPStatus.NOT_IMPLEMENTED, "no request bodies")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.send_error(HTTPStatus.BAD_REQUEST if length < 0 else HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return
        if length:
            self.rfile.read(length)
        if not srv.connections.begin(self.conn):
            raise _Gone("evicted")
        proven = False
        try:
            self.connection.settimeout(srv.request_timeout)  # a client that does not read cannot hold us
            proven = self._respond()
        finally:
            srv.connections.done(self.conn, proven)

    def _respond(self) -> bool:
        """Answer one request; True if it was an authorised one (its connection is a scraper's)."""
        srv = self.server
        srv.count("requests")
        extra: list[tuple[str, str]] = []
        authorised = False
        if self.command not in ("GET", "HEAD"):
            code, ctype, body = 405, "text/plain", b"method not allowed\n"
            extra.append(("Allow", "GET, HEAD"))
        elif srv.limiter is not None and not srv.limiter.allow():
            code, ctype, body = 429, "text/plain", b"too many requests\n"
        elif srv.auth is not None and not srv.auth.verify(self.headers.get("Authorization")):
            srv.count("unauthorized")
            code, ctype, body = 401, "text/plain", b"unauthorized\n"
            extra.append(("WWW-Authenticate", 'Basic realm="ctguard"'))
        else:
            authorised = True
            path = urlsplit(self.path).path
            if path == "/metrics":
                encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
                try:
                    body = encoder(srv.registry)
                    code = 200
                except Exception as e:  # noqa: BLE001 - a broken collector must not kill the connection
                    body, ctype, code = f"collect failed: {type(e).__name__}\n".encode(), "text/plain", 500
            elif path == "/":
                body, ctype, code = _INDEX, "text/html; charset=utf-8", 200
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
        head = [f"HTTP/1.1 {code} {HTTPStatus(code).phrase}",
                f"Date: {email.utils.formatdate(usegmt=True)}",
                f"Content-Type: {ctype}",
                f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (*extra, *srv.headers)]
        if self.close_connection:
            head.append("Connection: close")
        out = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(out if self.command == "HEAD" else out + body)
        return authorised

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s: " + format, self.conn.source, *args)


class _Server(socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 128  # a burst of connects waits in the backlog, not dropped, while we evict

    def __init__(self, addr: tuple[str, int], family: socket.AddressFamily, registry: CollectorRegistry,
                 idle_timeout: float, request_timeout: float, max_connections: int, max_per_source: int,
                 web: _web.WebConfig | None, clock: Callable[[], float]) -> None:
        self.address_family = family
        self.registry = registry
        self.idle_timeout, self.request_timeout, self.clock = idle_timeout, request_timeout, clock
        self.connections = Connections(max_connections, max_per_source, clock)
        self.tls = (_web.TLSContexts(web.tls, web.path, on_error=lambda m: log.warning("%s", m))
                    if web is not None and web.tls is not None else None)
        self.auth = _web.BasicAuth(web.users) if web is not None and web.users else None
        self.limiter = (_web.RateLimit(web.rate_interval, web.rate_burst)
                        if web is not None and web.rate_interval > 0 else None)
        self.headers: tuple[tuple[str, str], ...] = tuple(web.headers.items()) if web is not None else ()
        self._lock = threading.Lock()
        self.counters = {"requests": 0, "unauthorized": 0, "tls_failed": 0, "timed_out": 0, "gone": 0}
        super().__init__(addr, _Handler)  # type: ignore[arg-type]

    def count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1

    def process_request(self, request: Any, client_address: Any) -> None:
        source = str(client_address[0])
        conn = self.connections.open(source, functools.partial(_shut, request))
        if conn is None:  # every slot is busy answering: only then is a new connection turned away
            log.debug("%s: refused, all %d connections busy", source, self.connections.max_total)
            self.shutdown_request(request)
            return
        try:
            threading.Thread(target=self._serve, args=(request, client_address, conn), daemon=True,
                             name="ctguard-http-conn").start()
        except RuntimeError as e:  # cannot start a thread: drop this one connection, keep serving
            log.warning("cannot serve a connection from %s: %s", source, e)
            self.connections.close(conn)
            self.shutdown_request(request)

    def _serve(self, request: socket.socket, client_address: Any, conn: Conn) -> None:
        box = [request]
        try:
            _Handler(request, client_address, self, conn, box)
        except TimeoutError:
            self.count("timed_out")
            log.debug("%s: closed, no whole request within the deadline", conn.source)
        except (_Gone, OSError, ValueError) as e:  # gone, reset, broken pipe, TLS alert, evicted
            self.count("gone")
            log.debug("%s: connection ended: %s", conn.source, e if str(e) else type(e).__name__)
        except Exception as e:  # noqa: BLE001 - one line, never a traceback, and keep serving
            log.warning("%s: connection failed: %s: %s", conn.source, type(e).__name__, e)
        finally:
            self.connections.close(conn)
            try:
                box[0].close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("%s: error while accepting", client_address)

    def close_all(self) -> None:
        for c in self.connections.snapshot():
            c.kill()


class MetricsServer:
    """Serve `registry` on `listen` inside `ns`, in a background thread."""

    def __init__(self, registry: CollectorRegistry, listen: str = DEFAULT_LISTEN, ns: _netns.Netns | None = None,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_per_source: int = DEFAULT_MAX_PER_SOURCE, request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                 web: _web.WebConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        host, port, family = parse_listen(listen)
        if max_connections < 1 or max_per_source < 1:
            raise BadInput("max connections (total and per source) must be >= 1")
        if request_timeout <= 0 or idle_timeout <= 0:
            raise BadInput("timeouts must be > 0")
        try:
            with _netns.entered(ns):
                self._httpd = _Server((host, port), family, registry, idle_timeout, request_timeout,
                                      max_connections, max_per_source, web, clock)
        except OSError as e:
            raise BadInput(f"cannot listen on {listen}: {e.strerror or e}") from e
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        a = self._httpd.server_address
        return str(a[0]), int(a[1])

    @property
    def tls(self) -> bool:
        return self._httpd.tls is not None

    @property
    def url(self) -> str:
        host, port = self.address
        scheme = "https" if self.tls else "http"
        return f"{scheme}://[{host}]:{port}/metrics" if ":" in host else f"{scheme}://{host}:{port}/metrics"

    @property
    def stats(self) -> dict[str, int]:
        h = self._httpd
        c = h.connections
        return {**h.counters, "connections": c.opened, "open": len(c), "refused": c.refused,
                "evicted": c.evicted}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="ctguard-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_all()
        if self._thread is not None:
            self._thread.join(5)


class HttpCollector:
    """The server's own counters as metrics, so a lock-out attempt shows on the dashboard: evictions, request
    deadlines missed, clients gone, failed TLS handshakes, refused and unauthorised requests."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        st = self.server.stats
        yield CounterMetricFamily("ctguard_exporter_http_connections", "TCP connections accepted",
                                  value=st["connections"])
        closed = CounterMetricFamily("ctguard_exporter_http_connections_closed",
                                     "connections the exporter closed early: evicted (idlest at a cap), refused "
                                     "(every slot busy), timed_out (no whole request in time, or idle), gone "
                                     "(client left or reset), tls_failed (handshake or client certificate)",
                                     labels=["reason"])
        for reason in ("evicted", "refused", "timed_out", "gone", "tls_failed"):
            closed.add_metric([reason], st[reason])
        yield closed
        yield GaugeMetricFamily("ctguard_exporter_http_open_connections", "connections open now", value=st["open"])
        yield CounterMetricFamily("ctguard_exporter_http_requests", "HTTP requests answered", value=st["requests"])
        yield CounterMetricFamily("ctguard_exporter_http_unauthorized", "requests refused with 401 (basic auth)",
                                  value=st["unauthorized"])
