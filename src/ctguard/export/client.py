"""A small keep-alive scrape client: one persistent HTTP/1.1 connection, made inside a namespace if asked.

Used by the benchmark and the tests (and handy on a host: it scrapes like Prometheus does, over one
connection). The connection is created inside `ns` and stays bound to it afterwards.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import time
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from ctguard.errors import CannotRead
from ctguard.kernel import netns as _netns


@dataclass(frozen=True)
class Scrape:
    seconds: float
    text: str

    def samples(self) -> dict[str, float]:
        """'name{a="b",c="d"}' (labels sorted) -> value."""
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(self.text):
            for s in fam.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
        return out

    def value(self, key: str) -> float:
        v = self.samples().get(key)
        if v is None:
            raise KeyError(key)
        return v


class ScrapeClient:
    def __init__(self, host: str, port: int, ns: _netns.Netns | None = None, timeout: float = 5.0,
                 tls: ssl.SSLContext | None = None, auth: tuple[str, str] | None = None) -> None:
        """`tls`: speak HTTPS with this client context; `auth`: (user, password) for basic auth."""
        self.host, self.port, self.ns, self.timeout, self.tls = host, port, ns, timeout, tls
        self._headers = {"Accept": "text/plain;version=0.0.4"}
        if auth is not None:
            self._headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        self._conn: http.client.HTTPConnection | None = None
        self.connects = 0

    def connect(self) -> None:
        conn = (http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.tls)
                if self.tls is not None else http.client.HTTPConnection(self.host, self.port, timeout=self.timeout))
        try:
            with _netns.entered(self.ns):
                conn.connect()  # the socket is made here, inside ns
        except OSError as e:
            raise CannotRead(f"cannot connect to {self.host}:{self.port}: {e.strerror or e!r}") from e
        self._conn = conn
        self.connects += 1

    def scrape(self, path: str = "/metrics", reconnect: bool = False) -> Scrape:
        """GET path over the persistent connection. Never reconnects silently unless asked: the point is
        to know whether the *same* connection still works."""
        if self._conn is None:
            if not reconnect and self.connects:
                raise CannotRead("connection closed")
            self.connect()
        assert self._conn is not None
        t0 = time.perf_counter()
        try:
            self._conn.request("GET", path, headers=self._headers)
            resp = self._conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise CannotRead(f"scrape of {self.host}:{self.port}{path} failed: {e!r}") from e
        if resp.status != 200:
            raise CannotRead(f"scrape of {self.host}:{self.port}{path}: HTTP {resp.status}")
        if resp.will_close:
            self.close()
        return Scrape(time.perf_counter() - t0, body.decode())

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
