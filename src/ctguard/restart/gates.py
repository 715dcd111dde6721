"""Where the conntrack gates of an OSD host are read from: the local kernel (a namespace), a host's
`ctguard exporter` /metrics, or a Prometheus server's HTTP API.

A `Reading` is one sample: entries, limit, cumulative drop counter and, when the source can tell, the entries
each local OSD holds (that is what a restart of that OSD throws away and makes again). Only the local kernel
can free expired-but-counted entries (a netlink dump does it as a side effect: ctnetlink_dump_table() evicts
the expired entries it walks, net/netfilter/nf_conntrack_netlink.c) and purge closing-state entries; the
remote sources report what the host's exporter saw, so their `live()` is just `read()`.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ctguard.errors import CannotRead
from ctguard.kernel import netns as _netns

ENTRIES = "ctguard_conntrack_entries"
LIMIT = "ctguard_conntrack_limit"
DROPS = "ctguard_conntrack_drop_total"
DAEMON_ENTRIES = "ctguard_conntrack_daemon_entries"
ROLE_ENTRIES = "ctguard_conntrack_role_entries"
CLOSING_STATES = ("TIME_WAIT", "CLOSE")


@dataclass(frozen=True)
class Reading:
    host: str
    entries: int
    limit: int
    drops: int
    source: str
    ts: float
    daemon_entries: dict[int, int] = field(default_factory=dict)  # osd id -> entries it holds
    osd_role_entries: int | None = None  # entries on Ceph OSD ports (all local OSDs together)
    expired_freed: int = 0

    @property
    def free(self) -> int:
        return self.limit - self.entries

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "entries": self.entries, "limit": self.limit, "free": self.free,
                "drops": self.drops, "source": self.source, "expired_freed": self.expired_freed}


@dataclass(frozen=True)
class PurgeInfo:
    deleted: int
    count_before: int
    count_after: int
    seconds: float
    expired_freed: int = 0


class GateSource(Protocol):
    def read(self, host: str) -> Reading:
        """A cheap sample (count, limit, drops): polled at a few Hz while waiting."""
        ...

    def live(self, host: str, osd_ids: Sequence[int]) -> Reading:
        """A reading on live entries (expired ones freed first where possible) with per-OSD entries."""
        ...

    def purge(self, host: str) -> PurgeInfo | None:
        """Delete closing-state entries (TIME_WAIT, CLOSE) as the kernel's GC would under pressure; None when
        this source cannot (remote)."""
        ...


# --------------------------------------------------------------------------------------------------------------
# local kernel


def osd_id_of_cmdline(argv: Sequence[str]) -> int | None:
    """`ceph-osd … -i N` / `--id N` / `--id=N` -> N (systemd units run `ceph-osd -f --cluster ceph --id N`)."""
    if not argv or not os.path.basename(argv[0]).startswith("ceph-osd"):
        return None
    for i, a in enumerate(argv):
        if a in ("-i", "--id") and i + 1 < len(argv) and argv[i + 1].isdigit():
            return int(argv[i + 1])
        if a.startswith("--id=") and a[5:].isdigit():
            return int(a[5:])
    return None


@dataclass
class LocalKernelSource:
    """Gates read from this machine's kernel. `netns_of(host)` names the namespace of each host (the lab
    has one per host; a real host has one: the current one)."""

    netns_of: Callable[[str], _netns.Netns | None] = lambda host: None
    proc_root: str = "/proc"
    clock: Callable[[], float] = time.time

    def read(self, host: str) -> Reading:
        from ctguard.kernel.settings import conntrack_settings
        from ctguard.kernel.stats import conntrack_stats

        ns = self.netns_of(host)
        s = conntrack_settings(ns, self.proc_root)
        st = conntrack_stats(ns, self.proc_root)
        return Reading(host, s.count, s.max, st.get("drop"), f"kernel:{ns.label if ns else 'host'}", self.clock())

    def live(self, host: str, osd_ids: Sequence[int]) -> Reading:
        """One breakdown dump (table_status): frees expired-but-counted entries, attributes entries to local
        daemons by socket owner (`osd.N`), then the count and drops are read after it."""
        from ctguard.table.status import table_status

        ns = self.netns_of(host)
        ts = table_status(ns, breakdown=True, state_dir=None, proc_root=self.proc_root)
        daemons: dict[int, int] = {}
        osd_role: int | None = None
        freed = 0
        if ts.breakdown is not None:
            bd = ts.breakdown.breakdown
            freed = ts.breakdown.expired_freed
            for d in bd.by_daemon:
                m = re.fullmatch(r"osd\.(\d+)", d.name)
                if m:
                    daemons[int(m.group(1))] = daemons.get(int(m.group(1)), 0) + d.entries
            osd_role = bd.by_role.get("ceph-osd")
        return Reading(host, ts.count, ts.max, ts.stats.get("drop", 0), f"kernel:{ns.label if ns else 'host'}",
                       self.clock(), daemons, osd_role, freed)

    def purge(self, host: str) -> PurgeInfo | None:
        from ctguard.table.purge import purge

        r = purge(self.netns_of(host), states=CLOSING_STATES, ports="all")
        return PurgeInfo(r.deleted, r.count_before, r.count_after, r.seconds, r.expired_freed)


# --------------------------------------------------------------------------------------------------------------
# Prometheus text exposition (a host's `ctguard exporter`)

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of the Prometheus text format 0.0.4 (enough for gauges and counters; no exemplars)."""
    out: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(3) or "")}
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        out.append((m.group(1), labels, value))
    return out


def _one(samples: list[tuple[str, dict[str, str], float]], name: str, where: str) -> float:
    vals = [v for n, lab, v in samples if n == name and not lab.get("le")]
    if not vals:
        raise CannotRead(f"{where}: no {name} sample")
    return sum(vals) if name.endswith("_total") else vals[0]


def _osd_samples(samples: list[tuple[str, dict[str, str], float]]) -> tuple[dict[int, int], int | None]:
    """Per-daemon and per-role entries from the exporter's breakdown series:
    ctguard_conntrack_daemon_entries{daemon="osd.N"} and ctguard_conntrack_role_entries{role="ceph-osd"}."""
    daemons: dict[int, int] = {}
    role: int | None = None
    for n, lab, v in samples:
        if not math.isfinite(v):
            continue
        if n == DAEMON_ENTRIES:
            m = re.fullmatch(r"osd\.(\d+)", lab.get("daemon", ""))
            if m:
                daemons[int(m.group(1))] = daemons.get(int(m.group(1)), 0) + int(v)
        elif n == ROLE_ENTRIES and lab.get("role") == "ceph-osd":
            role = (role or 0) + int(v)
    return daemons, role


class _NsConnection(http.client.HTTPConnection):
    """An HTTP/1.1 connection whose socket is made inside `ns` (the lab's exporters listen on 127.0.0.1 of
    each host namespace); a socket stays bound to the namespace it was made in (netns.py)."""

    def __init__(self, host: str, port: int, timeout: float, ns: _netns.Netns | None) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ns = ns

    def connect(self) -> None:
        with _netns.entered(self._ns):
            self.sock = socket.create_connection((self.host, self.port), self.timeout)


class KeepAliveFetcher:
    """GET over persistent HTTP/1.1 connections, one per (host, port, namespace). A new TCP connection needs
    a conntrack entry on the host being read, which is refused exactly when its table is full; a kept-alive
    one already has its entry and keeps answering (measured by the exporter work, issue 9)."""

    def __init__(self) -> None:
        self._conns: dict[tuple[str, int, _netns.Netns | None], _NsConnection] = {}

    def __call__(self, url: str, timeout: float, ns: _netns.Netns | None = None) -> str:
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise CannotRead(f"{url}: only http:// URLs are supported")
        key = (u.hostname, u.port or 80, ns)
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        for attempt in (0, 1):
            conn = self._conns.get(key)
            if conn is None:
                conn = self._conns[key] = _NsConnection(key[0], key[1], timeout, ns)
            try:
                conn.request("GET", path, headers={"Accept": "text/plain"})
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._conns.pop(key, None)
                if attempt:
                    raise CannotRead(f"{url}: {e}") from e
                continue  # the server closed an idle connection: one fresh try
            if resp.status != 200:
                raise CannotRead(f"{url}: HTTP {resp.status} {resp.reason}")
            return body.decode("utf-8", errors="replace")
        raise CannotRead(f"{url}: no answer")

    def close(self) -> None:
        for c in self._conns.values():
            c.close()
        self._conns.clear()


@dataclass
class ExporterSource:
    """Each host's `ctguard exporter`: `url_template` with `{host}`; `netns_of(host)` for lab namespaces."""

    url_template: str = "http://{host}:9477/metrics"
    timeout: float = 5.0
    netns_of: Callable[[str], _netns.Netns | None] = lambda host: None
    fetch: Callable[[str, float, _netns.Netns | None], str] = field(default_factory=KeepAliveFetcher)
    clock: Callable[[], float] = time.time

    def read(self, host: str) -> Reading:
        url = self.url_template.format(host=host)
        samples = parse_exposition(self.fetch(url, self.timeout, self.netns_of(host)))
        daemons, role = _osd_samples(samples)
        return Reading(host, int(_one(samples, ENTRIES, url)), int(_one(samples, LIMIT, url)),
                       int(_one(samples, DROPS, url)), f"exporter:{url}", self.clock(), daemons, role)

    def live(self, host: str, osd_ids: Sequence[int]) -> Reading:
        return self.read(host)

    def purge(self, host: str) -> PurgeInfo | None:
        return None


@dataclass
class PrometheusSource:
    """A Prometheus server's HTTP API (`/api/v1/query`). `selector` picks one host's series, `{host}`
    substituted: by default the `instance` label starting with the host name. Readings lag by a scrape
    interval; the drop gate's settle window should be longer than that."""

    base_url: str
    selector: str = 'instance=~"{host}(:[0-9]+)?"'
    timeout: float = 5.0
    fetch: Callable[[str, float, _netns.Netns | None], str] = field(default_factory=KeepAliveFetcher)
    clock: Callable[[], float] = time.time

    def _query(self, expr: str) -> float:
        url = self.base_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            doc = json.loads(self.fetch(url, self.timeout, None))
            result = doc["data"]["result"]
        except (ValueError, KeyError, TypeError) as e:
            raise CannotRead(f"{url}: unexpected answer ({e!r})") from e
        if doc.get("status") != "success" or not result:
            raise CannotRead(f"prometheus: no result for {expr}")
        return float(result[0]["value"][1])

    def read(self, host: str) -> Reading:
        sel = "{" + self.selector.format(host=host) + "}"
        return Reading(
            host,
            int(self._query(f"sum({ENTRIES}{sel})")),
            int(self._query(f"max({LIMIT}{sel})")),
            int(self._query(f"sum({DROPS}{sel})")),
            f"prometheus:{self.base_url}",
            self.clock(),
        )

    def live(self, host: str, osd_ids: Sequence[int]) -> Reading:
        return self.read(host)

    def purge(self, host: str) -> PurgeInfo | None:
        return None


# --------------------------------------------------------------------------------------------------------------
# the ctguard mgr module (`ceph ctguard status` / `ceph ctguard ok-to-restart`)


class MgrCommands(Protocol):
    def mgr_json(self, args: Sequence[str], cmd: dict[str, Any], ok_codes: tuple[int, ...]) -> tuple[int, Any]:
        """Run a mgr command (`ceph ARGS -f json`); (return code, parsed stdout)."""
        ...


EBUSY = 16


def _mgr_host(doc: Any, host: str, where: str) -> dict[str, Any]:
    hosts = doc.get("hosts") if isinstance(doc, dict) else None
    if not isinstance(hosts, list):
        raise CannotRead(f"{where}: unexpected answer (no hosts list): is the ctguard mgr module enabled?")
    for h in hosts:
        if isinstance(h, dict) and h.get("host") == host:
            return h
    raise CannotRead(f"{where}: the ctguard mgr module has no reading for host {host}")


def _mgr_reading(h: dict[str, Any], host: str, where: str, clock: Callable[[], float]) -> Reading:
    if h.get("entries") is None or h.get("limit") is None:
        raise CannotRead(f"{where}: host {host}: {h.get('error') or h.get('reason') or 'no reading'}")
    daemons = {}
    for name, n in (h.get("osd_entries") or {}).items():
        m = re.fullmatch(r"osd\.(\d+)", str(name))
        if m:
            daemons[int(m.group(1))] = int(n)
    # the module's reading is as old as its last poll: date it back so the engine sees its true age
    ts = clock() - float(h.get("age") or 0.0)
    return Reading(host, int(h["entries"]), int(h["limit"]), int(h.get("drops") or 0), f"mgr:{where}", ts,
                   daemons)


@dataclass
class MgrSource:
    """The ctguard mgr module as the gate source (`restart --gate-source mgr`): the same readings and the
    same answer Ceph gives every orchestrator and script, through nothing but `ceph` access.

    read(): `ceph ctguard status -f json`, the module's latest reading of the host (it polls each host's
    exporter every few seconds). live(): `ceph ctguard ok-to-restart osd.N …` for the OSDs about to be
    restarted. A "no" for lack of room comes back as the reading it was computed from, so the headroom gate
    waits or shrinks the batch by the same arithmetic (free >= sum of bursts + reserve); a "no" because the
    module has no fresh reading of the host (exporter down, stale) is an error, which stops the run safely.
    Every answer is kept in `answers` for the journal and the dry run."""

    ceph: MgrCommands
    clock: Callable[[], float] = time.time
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def read(self, host: str) -> Reading:
        _rc, doc = self.ceph.mgr_json(["ctguard", "status"], {"prefix": "ctguard status"}, (0,))
        h = _mgr_host(doc, host, "ceph ctguard status")
        if not h.get("up"):
            raise CannotRead(f"ceph ctguard status: host {host}: {h.get('error') or 'no reading'}")
        return _mgr_reading(h, host, "ceph ctguard status", self.clock)

    def _ask(self, host: str, osd_ids: Sequence[int]) -> tuple[bool, dict[str, Any], dict[str, Any]]:
        """`ceph ctguard ok-to-restart osd.N ...`: (yes?, the whole answer, this host's part); remembered in
        `answers` for the engine's events."""
        ids = [f"osd.{o}" for o in osd_ids]
        rc, doc = self.ceph.mgr_json(["ctguard", "ok-to-restart", *ids],
                                     {"prefix": "ctguard ok-to-restart", "ids": ids}, (0, EBUSY))
        if not isinstance(doc, dict) or "ok_to_restart" not in doc:
            raise CannotRead("ceph ctguard ok-to-restart: unexpected answer (no ok_to_restart)")
        h = _mgr_host(doc, host, "ceph ctguard ok-to-restart")
        ok = rc == 0 and bool(doc["ok_to_restart"])
        self.answers[host] = {"ok_to_restart": ok, "rc": rc, "osds": ids, "free": h.get("free"),
                              "need": h.get("need"), "reason": h.get("reason") or None}
        return ok, doc, h

    def live(self, host: str, osd_ids: Sequence[int]) -> Reading:
        if not osd_ids:
            return self.read(host)
        _, _, h = self._ask(host, osd_ids)
        return _mgr_reading(h, host, "ceph ctguard ok-to-restart", self.clock)

    def confirm(self, host: str, osd_ids: Sequence[int]) -> tuple[bool, str]:
        """The engine's headroom gate asks this before it restarts a batch: (yes?, the module's reason)."""
        ok, doc, h = self._ask(host, osd_ids)
        if h.get("need") is None and not ok:  # no fresh reading of the host: nothing to wait for here
            raise CannotRead(f"ceph ctguard ok-to-restart: {h.get('reason') or doc.get('reason') or 'no'}")
        return ok, "" if ok else f"ceph ctguard ok-to-restart: {h.get('reason') or doc.get('reason')}"

    def purge(self, host: str) -> PurgeInfo | None:
        return None


@dataclass
class CephMgrCommands:
    """MgrCommands over the ceph client (CLI or librados), with its timeouts."""

    client: Any  # ctguard.ceph.client.CephClient

    def mgr_json(self, args: Sequence[str], cmd: dict[str, Any], ok_codes: tuple[int, ...]) -> tuple[int, Any]:
        done = self.client._call(args, cmd, mgr=True, ok_codes=ok_codes)
        try:
            return int(done.returncode), json.loads(done.stdout)
        except ValueError as e:
            raise CannotRead(f"ceph {' '.join(args)}: not JSON ({done.stdout[:60]!r}): is the ctguard mgr module "
                             "enabled? (`ceph mgr module enable ctguard`, docs/ceph-health.md)") from e
