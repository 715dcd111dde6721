"""The ctguard mgr module's logic, free of the mgr: host discovery from the OSD map, reading each host's
`ctguard exporter` (or Prometheus), drop windows, health checks and the ok-to-restart answer.

It runs inside ceph-mgr's embedded interpreter, so it is self-contained: standard library only, no import of
the ctguard tool, and Python 3.6 syntax (Pacific's container images run python3.6; Debian's ceph-mgr runs the
system python3): no dataclasses, no `from __future__ import annotations`, typing.List/Dict in annotations.
"""

import http.client
import json
import math
import re
import socket
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

ENTRIES = "ctguard_conntrack_entries"
LIMIT = "ctguard_conntrack_limit"
FREE = "ctguard_conntrack_free_entries"
DROPS = "ctguard_conntrack_drop_total"
STATE_ENTRIES = "ctguard_conntrack_state_entries"
DAEMON_ENTRIES = "ctguard_conntrack_daemon_entries"
BURST = "ctguard_restart_burst_entries"
METRICS = (ENTRIES, LIMIT, FREE, DROPS, STATE_ENTRIES, DAEMON_ENTRIES, BURST)

CHECK_NEARFULL = "CTGUARD_CONNTRACK_NEARFULL"
CHECK_DROPS = "CTGUARD_CONNTRACK_DROPS"
CHECK_DOWN = "CTGUARD_EXPORTER_DOWN"

Sample = Tuple[str, Dict[str, str], float]

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_OSD = re.compile(r"^osd\.(\d+)$")


class FetchError(Exception):
    """A host's source could not be read: the message is one health detail."""


# -- hosts ------------------------------------------------------------------------------------------------------
class Host(object):
    """A CRUSH host with OSDs: its name, an address (an OSD's public address from the OSD map) and its OSDs."""

    def __init__(self, name: str, addr: str, osds: List[int]) -> None:
        self.name = name
        self.addr = addr
        self.osds = osds

    def __repr__(self) -> str:
        return "Host({!r}, {!r}, {!r})".format(self.name, self.addr, self.osds)


def _addr_ip(addr: str) -> str:
    """'198.18.0.11:6801/1234' -> '198.18.0.11'; '[fd00::1]:6801/0' -> 'fd00::1'; '-' or '' -> ''."""
    a = addr.split("/", 1)[0]
    if a.startswith("["):
        return a[1:a.find("]")] if "]" in a else ""
    ip = a.rsplit(":", 1)[0] if ":" in a else a
    return "" if ip in ("", "-", "0.0.0.0") else ip


def _osd_public_ip(osd: Dict[str, Any]) -> str:
    for a in (osd.get("public_addrs") or {}).get("addrvec") or []:
        ip = _addr_ip(str(a.get("addr", "")))
        if ip:
            return ip
    return _addr_ip(str(osd.get("public_addr", "")))


def hosts_from_maps(tree: Dict[str, Any], osd_map: Dict[str, Any]) -> List[Host]:
    """OSD hosts from `osd_map_tree` (the `ceph osd tree` document: host buckets and their OSD children) and
    addresses from `osd_map` (the OSDs' public addresses; a down OSD keeps its last one)."""
    ips = {}  # type: Dict[int, str]
    for o in osd_map.get("osds", []):
        ip = _osd_public_ip(o)
        if ip:
            ips[int(o["osd"])] = ip
    out = []  # type: List[Host]
    for n in tree.get("nodes", []):
        if n.get("type") != "host":
            continue
        osds = sorted(int(c) for c in n.get("children", []) if int(c) >= 0)
        if not osds:
            continue
        addr = next((ips[o] for o in osds if o in ips), "")
        out.append(Host(str(n["name"]), addr, osds))
    return sorted(out, key=lambda h: h.name)


def parse_address_map(text: str) -> Dict[str, str]:
    """The `host_addresses` option: 'host1=10.0.0.1,host2=exporter2.example:9477' or a JSON object."""
    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise ValueError("host_addresses: not JSON: {}".format(e)) from e
        if not isinstance(doc, dict):
            raise ValueError("host_addresses: a JSON object {host: address} expected")
        return {str(k): str(v) for k, v in doc.items()}
    out = {}
    for part in re.split(r"[,\s]+", text):
        if not part:
            continue
        if "=" not in part:
            raise ValueError("host_addresses: {!r} is not host=address".format(part))
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def exporter_url(template: str, host: Host, addresses: Dict[str, str]) -> str:
    """`{host}`: the CRUSH host name; `{addr}`: the host_addresses entry, else the OSD map's public address."""
    addr = addresses.get(host.name) or host.addr or host.name
    if ":" in addr and not addr.startswith("[") and addr.count(":") > 1:
        addr = "[{}]".format(addr)  # IPv6 literal in a URL
    return template.replace("{host}", host.name).replace("{addr}", addr)


# -- readings ---------------------------------------------------------------------------------------------------
def parse_exposition(text: str) -> List[Sample]:
    """Samples of the Prometheus text format 0.0.4 (gauges and counters; no exemplars)."""
    out = []  # type: List[Sample]
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


class Reading(object):
    """One host's table as its exporter saw it. Optional figures are None when the exporter had none yet
    (the breakdown runs in the background: TIME_WAIT, per-OSD entries and the burst come with it)."""

    def __init__(self, entries: int, limit: int, drops: int, ts: float, time_wait: Optional[int] = None,
                 osd_entries: Optional[Dict[int, int]] = None, burst: Optional[int] = None,
                 burst_daemon: str = "") -> None:
        self.entries = entries
        self.limit = limit
        self.drops = drops
        self.ts = ts
        self.time_wait = time_wait
        self.osd_entries = osd_entries or {}
        self.burst = burst
        self.burst_daemon = burst_daemon

    @property
    def free(self) -> int:
        return max(0, self.limit - self.entries)

    @property
    def fill(self) -> float:
        return self.entries / self.limit if self.limit > 0 else 0.0


def reading_from_samples(samples: List[Sample], ts: float, where: str) -> Reading:
    def one(name: str) -> Optional[float]:
        vals = [v for n, _lab, v in samples if n == name and math.isfinite(v)]
        if not vals:
            return None
        return sum(vals) if name.endswith("_total") else vals[0]

    entries, limit, drops = one(ENTRIES), one(LIMIT), one(DROPS)
    if entries is None or limit is None:
        raise FetchError("{}: no {} / {} sample (not a ctguard exporter?)".format(where, ENTRIES, LIMIT))
    time_wait = None  # type: Optional[int]
    osd_entries = {}  # type: Dict[int, int]
    burst = None  # type: Optional[int]
    burst_daemon = ""
    for n, lab, v in samples:
        if not math.isfinite(v):
            continue
        if n == STATE_ENTRIES and lab.get("state") == "TIME_WAIT":
            time_wait = (time_wait or 0) + int(v)
        elif n == DAEMON_ENTRIES:
            m = _OSD.match(lab.get("daemon", ""))
            if m:
                osd_entries[int(m.group(1))] = osd_entries.get(int(m.group(1)), 0) + int(v)
        elif n == BURST and (burst is None or int(v) > burst):
            burst, burst_daemon = int(v), lab.get("daemon", "")
    if time_wait is None and any(n == STATE_ENTRIES for n, _l, _v in samples):
        time_wait = 0  # a breakdown without TIME_WAIT entries
    return Reading(int(entries), int(limit), int(drops or 0), ts, time_wait, osd_entries, burst, burst_daemon)


def prometheus_query(host: Host, selector: str) -> str:
    """One instant query for every series the module reads of one host."""
    sel = selector.replace("{host}", re.escape(host.name)).replace("{addr}", re.escape(host.addr or host.name))
    return '{{__name__=~"{}",{}}}'.format("|".join(METRICS), sel)


def samples_from_prometheus(body: str, where: str) -> List[Sample]:
    try:
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise FetchError("{}: {}".format(where, doc.get("error", "query failed")))
        result = doc["data"]["result"]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise FetchError("{}: unexpected answer ({})".format(where, e)) from e
    out = []  # type: List[Sample]
    for r in result:
        metric = dict(r.get("metric", {}))
        name = metric.pop("__name__", "")
        try:
            out.append((name, metric, float(r["value"][1])))
        except (KeyError, IndexError, TypeError, ValueError):
            continue
    if not out:
        raise FetchError("{}: no ctguard series for this host".format(where))
    return out


# -- fetching ---------------------------------------------------------------------------------------------------
class KeepAliveFetcher(object):
    """GET over one persistent HTTP/1.1 connection per (host, port). A new TCP connection needs a conntrack
    entry on the host being read, which its kernel refuses exactly when the table is full; a kept-alive
    connection already has its entry and keeps answering (the exporter speaks HTTP/1.1 for this reason)."""

    def __init__(self) -> None:
        self._conns = {}  # type: Dict[Tuple[str, int], http.client.HTTPConnection]
        self._lock = threading.Lock()

    def __call__(self, url: str, timeout: float) -> str:
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise FetchError("{}: only http:// URLs are supported".format(url))
        key = (u.hostname, u.port or 80)
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        for attempt in (0, 1):
            with self._lock:
                conn = self._conns.pop(key, None)
            if conn is None:
                conn = http.client.HTTPConnection(key[0], key[1], timeout=timeout)
            try:
                conn.request("GET", path, headers={"Accept": "text/plain", "Connection": "keep-alive"})
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if attempt or isinstance(e, (socket.timeout, ConnectionRefusedError)):
                    raise FetchError("{}: {}".format(url, _reason(e))) from e
                continue  # the server closed an idle connection: one fresh try
            if resp.status != 200:
                conn.close()
                raise FetchError("{}: HTTP {} {}".format(url, resp.status, resp.reason))
            with self._lock:
                self._conns[key] = conn
            return body.decode("utf-8", errors="replace")
        raise FetchError("{}: no answer".format(url))

    def close(self) -> None:
        with self._lock:
            for c in self._conns.values():
                c.close()
            self._conns.clear()


def _reason(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    return str(e) or type(e).__name__


# -- per-host state and health ----------------------------------------------------------------------------------
class Settings(object):
    def __init__(self, nearfull_ratio: float = 0.9, drops_window: float = 300.0, burst_factor: float = 2.0,
                 reserve: int = 0, stale_after: float = 60.0) -> None:
        self.nearfull_ratio = nearfull_ratio
        self.drops_window = drops_window
        self.burst_factor = burst_factor
        self.reserve = reserve
        self.stale_after = stale_after


class HostState(object):
    """What the module knows of one host: the latest reading, the last error, the drop counter history."""

    def __init__(self, host: Host, url: str) -> None:
        self.host = host
        self.url = url
        self.reading = None  # type: Optional[Reading]
        self.error = ""
        self.error_since = None  # type: Optional[float]
        self.last_ok = None  # type: Optional[float]
        self.drop_hist = []  # type: List[Tuple[float, int]]

    def record(self, reading: Reading, window: float) -> None:
        self.reading = reading
        self.error = ""
        self.error_since = None
        self.last_ok = reading.ts
        if self.drop_hist and reading.drops < self.drop_hist[-1][1]:
            self.drop_hist = []  # the counter restarted (exporter or namespace restarted): a new baseline
        self.drop_hist.append((reading.ts, reading.drops))
        # keep one sample at or before the window's start, so a rise anywhere inside it is seen
        cut = reading.ts - window
        while len(self.drop_hist) > 2 and self.drop_hist[1][0] <= cut:
            self.drop_hist.pop(0)

    def fail(self, error: str, now: float) -> None:
        self.error = error
        if self.error_since is None:
            self.error_since = now

    def drops_in_window(self, now: float, window: float) -> int:
        """Drops counted within the last `window` seconds (0 with fewer than two samples)."""
        if len(self.drop_hist) < 2:
            return 0
        base = self.drop_hist[0]
        for ts, d in self.drop_hist:
            if ts <= now - window:
                base = (ts, d)
        return max(0, self.drop_hist[-1][1] - base[1])

    def drops_rate(self, now: float, window: float) -> Optional[float]:
        if len(self.drop_hist) < 2:
            return None
        first = next(((t, d) for t, d in self.drop_hist if t >= now - window), self.drop_hist[0])
        last = self.drop_hist[-1]
        span = last[0] - first[0]
        if span <= 0:
            first = self.drop_hist[0]
            span = last[0] - first[0]
        return (last[1] - first[1]) / span if span > 0 else None


def osd_burst(reading: Reading, osd: int, factor: float) -> Tuple[int, str]:
    """Predicted entries a restart of `osd` adds: its own entries x factor (it reconnects while the old
    connections linger in TIME_WAIT). When the exporter has not attributed entries to that OSD, the
    exporter's burst of its busiest OSD stands in (an over-estimate, never an under-estimate)."""
    if osd in reading.osd_entries:
        return int(math.ceil(reading.osd_entries[osd] * factor)), "osd entries x {:g}".format(factor)
    if reading.burst is not None:
        return reading.burst, "busiest OSD's burst ({})".format(reading.burst_daemon or "exporter")
    return 0, "unknown (no breakdown yet)"


def host_burst(reading: Reading) -> Optional[int]:
    """The host's predicted restart burst: what restarting its busiest OSD adds (the exporter's figure)."""
    return reading.burst


def reserve_for(reading: Reading, s: Settings) -> int:
    # entries kept free beyond the burst for unrelated traffic; the restart engine's default max(16, max/10000)
    return s.reserve if s.reserve > 0 else max(16, reading.limit // 10000)


def _fmt(n: int) -> str:
    return "{:,}".format(n)


def health_checks(states: List[HostState], s: Settings, now: float) -> Dict[str, Dict[str, Any]]:
    """The module's health checks from the latest state: one detail line per host, a check only while its
    cause lasts (an empty dict clears them all)."""
    near, drops, down = [], [], []  # type: List[str], List[str], List[str]
    for st in sorted(states, key=lambda x: x.host.name):
        name = st.host.name
        if st.error:
            since = time.strftime("%H:%M:%S", time.gmtime(st.error_since or now))
            down.append("host {}: ctguard exporter unreachable since {} UTC: {}".format(name, since, st.error))
            continue
        r = st.reading
        if r is None:
            continue
        if now - r.ts > s.stale_after:
            down.append("host {}: last reading is {:.0f} s old ({})".format(name, now - r.ts, st.url))
            continue
        burst = host_burst(r)
        if r.fill >= s.nearfull_ratio:
            near.append("host {}: conntrack table {:.1f}% full ({}/{} entries, {} free; nearfull_ratio {:g})"
                        .format(name, math.floor(1000 * r.fill) / 10, _fmt(r.entries), _fmt(r.limit), _fmt(r.free),
                                s.nearfull_ratio))
        elif burst is not None and r.free < burst:
            near.append("host {}: {} free conntrack entries, below the predicted restart burst of {} ({})"
                        .format(name, _fmt(r.free), _fmt(burst), r.burst_daemon or "busiest OSD"))
        n = st.drops_in_window(now, s.drops_window)
        if n > 0:
            drops.append("host {}: {} packets dropped by a full conntrack table in the last {:.0f} s"
                         .format(name, _fmt(n), s.drops_window))
    checks = {}  # type: Dict[str, Dict[str, Any]]
    if near:
        checks[CHECK_NEARFULL] = {"severity": "warning", "count": len(near), "detail": near,
                                  "summary": "{} host(s) with a nearly full conntrack table".format(len(near))}
    if drops:
        checks[CHECK_DROPS] = {"severity": "warning", "count": len(drops), "detail": drops,
                               "summary": "{} host(s) dropping packets: conntrack table full".format(len(drops))}
    if down:
        checks[CHECK_DOWN] = {"severity": "warning", "count": len(down), "detail": down,
                              "summary": "{} host(s) without a ctguard exporter reading".format(len(down))}
    return checks


def status_doc(states: List[HostState], s: Settings, now: float) -> Dict[str, Any]:
    hosts = []
    for st in sorted(states, key=lambda x: x.host.name):
        r = st.reading
        h = {"host": st.host.name, "url": st.url, "osds": ["osd.{}".format(o) for o in st.host.osds],
             "up": not st.error and r is not None, "error": st.error or None,
             "entries": None, "limit": None, "free": None, "fill": None, "time_wait": None, "drops": None,
             "drops_rate": None, "drops_in_window": None, "predicted_burst": None, "burst_daemon": None,
             "osd_entries": {}, "age": None}  # type: Dict[str, Any]
        if r is not None:
            rate = st.drops_rate(now, s.drops_window)
            h.update({"entries": r.entries, "limit": r.limit, "free": r.free, "fill": round(r.fill, 4),
                      "time_wait": r.time_wait, "drops": r.drops,
                      "drops_rate": None if rate is None else round(rate, 3),
                      "drops_in_window": st.drops_in_window(now, s.drops_window),
                      "predicted_burst": host_burst(r), "burst_daemon": r.burst_daemon or None,
                      "osd_entries": {"osd.{}".format(k): v for k, v in sorted(r.osd_entries.items())},
                      "age": round(now - r.ts, 1)})
        hosts.append(h)
    return {"schema": 1, "hosts": hosts, "nearfull_ratio": s.nearfull_ratio, "drops_window": s.drops_window,
            "burst_factor": s.burst_factor}


def status_text(doc: Dict[str, Any]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return "{:.3g}".format(v)
        return str(v)

    rows = [("HOST", "STATE", "COUNT", "MAX", "FREE", "FILL", "TIME_WAIT", "DROPS/s", "BURST", "AGE")]
    for h in doc["hosts"]:
        fill = "-" if h["fill"] is None else "{:.1f}%".format(math.floor(1000 * h["fill"]) / 10)
        rows.append((h["host"], "up" if h["up"] else "DOWN", cell(h["entries"]), cell(h["limit"]),
                     cell(h["free"]), fill, cell(h["time_wait"]), cell(h["drops_rate"]),
                     cell(h["predicted_burst"]), "-" if h["age"] is None else "{:.0f}s".format(h["age"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for h in doc["hosts"]:
        if h["error"]:
            lines.append("{}: {}".format(h["host"], h["error"]))
    return "\n".join(lines) + "\n"


def ok_to_restart(states: List[HostState], osd_host: Dict[int, str], osds: List[int], s: Settings,
                  now: float) -> Tuple[bool, Dict[str, Any]]:
    """Like `ceph osd ok-to-stop`: yes only when every host of `osds` has a fresh reading, no drops within
    the window, and free entries >= the sum of those OSDs' predicted bursts + the reserve."""
    by_name = {st.host.name: st for st in states}
    per_host = {}  # type: Dict[str, List[int]]
    for o in osds:
        per_host.setdefault(osd_host[o], []).append(o)
    hosts = []
    ok = True
    reasons = []  # type: List[str]
    for name in sorted(per_host):
        ids = sorted(per_host[name])
        st = by_name.get(name)
        h = {"host": name, "osds": ids, "ok": False, "free": None, "need": None, "reserve": None,
             "predicted_burst": {}, "age": None, "reason": ""}  # type: Dict[str, Any]
        r = st.reading if st is not None else None
        if st is None:
            h["reason"] = "no ctguard reading for host {} yet".format(name)
        elif st.error or r is None:
            h["reason"] = "host {}: exporter unreachable: {}".format(name, st.error or "no reading yet")
        elif now - r.ts > s.stale_after:
            h["reason"] = "host {}: last reading is {:.0f} s old".format(name, now - r.ts)
        else:
            bursts = {o: osd_burst(r, o, s.burst_factor) for o in ids}
            reserve = reserve_for(r, s)
            need = sum(b for b, _how in bursts.values()) + reserve
            dropped = st.drops_in_window(now, s.drops_window)
            h.update({"entries": r.entries, "limit": r.limit, "drops": r.drops,
                      "osd_entries": {"osd.{}".format(k): v for k, v in sorted(r.osd_entries.items())},
                      "free": r.free, "need": need, "reserve": reserve, "age": round(now - r.ts, 1),
                      "predicted_burst": {"osd.{}".format(o): b for o, (b, _how) in bursts.items()},
                      "drops_in_window": dropped})
            if dropped > 0:
                h["reason"] = "host {}: {} packets dropped by its conntrack table in the last {:.0f} s".format(
                    name, dropped, s.drops_window)
            elif any(b == 0 and "unknown" in how for b, how in bursts.values()) and r.burst is None:
                h["reason"] = "host {}: no per-OSD entries yet (the exporter's breakdown has not run)".format(name)
            elif r.free < need:
                h["reason"] = ("host {}: {} free conntrack entries < {} needed (predicted burst {} + reserve {})"
                               .format(name, _fmt(r.free), _fmt(need), _fmt(need - reserve), reserve))
            else:
                h["ok"] = True
        if not h["ok"]:
            ok = False
            reasons.append(h["reason"])
        hosts.append(h)
    doc = {"ok_to_restart": ok, "osds": sorted(osds), "hosts": hosts}  # type: Dict[str, Any]
    if reasons:
        doc["reason"] = "; ".join(reasons)
    return ok, doc


def parse_osd_names(words: List[str], known: Set[int]) -> List[int]:
    """'osd.3', '3' and 'osd.3,osd.4' -> ids; ValueError on anything else or an OSD not in the map."""
    out = []  # type: List[int]
    for w in words:
        for part in str(w).split(","):
            part = part.strip()
            if not part:
                continue
            m = re.match(r"^(?:osd\.)?(\d+)$", part)
            if not m:
                raise ValueError("{!r} is not an OSD name (osd.N)".format(part))
            i = int(m.group(1))
            if i not in known:
                raise ValueError("osd.{} does not exist".format(i))
            if i not in out:
                out.append(i)
    if not out:
        raise ValueError("name at least one OSD (osd.N)")
    return out


# -- the poller -------------------------------------------------------------------------------------------------
class Poller(object):
    """Reads every host once per call of `poll()`, in parallel worker threads, and never waits longer than
    `deadline` seconds: a host whose fetch is still running counts as unreachable ("timed out") and gets no
    second fetch until the first has returned, so a hung exporter never piles up threads or stalls a cycle."""

    def __init__(self, fetch: Callable[[str, float], str], clock: Callable[[], float] = time.time) -> None:
        self.fetch = fetch
        self.clock = clock
        self.states = {}  # type: Dict[str, HostState]
        self._busy = set()  # type: Set[str]
        self._results = {}  # type: Dict[str, Tuple[Optional[Reading], str, float]]
        self._lock = threading.Lock()

    def snapshot(self) -> List[HostState]:
        """The hosts' states; read them inside `consistent()` when several fields must agree."""
        with self._lock:
            return list(self.states.values())

    def consistent(self, fn: Callable[[List[HostState]], Any]) -> Any:
        """fn(states) while no poll result is being recorded (a command sees each host's reading and drop
        history from the same cycle). fn must be quick: it holds the lock the workers report under."""
        with self._lock:
            return fn(list(self.states.values()))

    def _work(self, host: Host, url: str, timeout: float, prometheus: bool) -> None:
        try:
            body = self.fetch(url, timeout)
            now = self.clock()
            samples = samples_from_prometheus(body, url) if prometheus else parse_exposition(body)
            res = (reading_from_samples(samples, now, url), "", now)  # type: Tuple[Optional[Reading], str, float]
        except FetchError as e:
            res = (None, str(e), self.clock())
        except Exception as e:  # noqa: BLE001 - a worker must always report back
            res = (None, "{}: {}".format(url, e), self.clock())
        with self._lock:
            self._results[host.name] = res
            self._busy.discard(host.name)

    def poll(self, hosts: List[Host], urls: Dict[str, str], timeout: float, deadline: float, window: float,
             prometheus: bool = False) -> None:
        started = []
        with self._lock:
            names = {h.name for h in hosts}
            for gone in set(self.states) - names:
                del self.states[gone]
            for h in hosts:
                st = self.states.get(h.name)
                if st is None or st.url != urls[h.name]:
                    st = self.states[h.name] = HostState(h, urls[h.name])
                st.host = h
                if h.name in self._busy:
                    continue
                self._busy.add(h.name)
                started.append(h)
        for h in started:
            t = threading.Thread(target=self._work, args=(h, urls[h.name], timeout, prometheus),
                                 name="ctguard-fetch-" + h.name, daemon=True)
            t.start()
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            with self._lock:
                if not any(h.name in self._busy for h in started):
                    break
            time.sleep(0.05)
        now = self.clock()
        with self._lock:
            for name, (reading, err, ts) in self._results.items():
                st = self.states.get(name)
                if st is None:
                    continue
                if reading is not None:
                    st.record(reading, window)
                else:
                    st.fail(err, ts)
            self._results.clear()
            for name in self._busy:
                if name in self.states:
                    self.states[name].fail("{}: timed out after {:g} s".format(self.states[name].url, deadline),
                                           now)
