"""The ctguard ceph-mgr module: its logic on recorded lab output (OSD tree/dump, an exporter scrape), the
poller's time bounds with fake and real (loopback) exporters, and the MgrModule class under a fake
`mgr_module` (Ceph's exists only inside ceph-mgr)."""

from __future__ import annotations

import ast
import errno
import http.server
import json
import os
import socket
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "mgr")


# -- a stand-in for Ceph's mgr_module (src/pybind/mgr/mgr_module.py), enough for the module's import ------------
class _FakeMgrModule:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.options: dict[str, Any] = {}
        self.data: dict[str, Any] = {}
        self.health: list[dict[str, Any]] = []
        self.log = types.SimpleNamespace(info=lambda *a: None, error=lambda *a: None, exception=lambda *a: None)

    def get_module_option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def get(self, name: str) -> Any:
        return self.data[name]

    def set_health_checks(self, checks: dict[str, Any]) -> None:
        self.health.append(checks)


def _hcr(retval: int = 0, stdout: str = "", stderr: str = "") -> tuple[int, str, str]:
    return (retval, stdout, stderr)


def _command(prefix: str, poll: bool = False) -> Any:
    def deco(f: Any) -> Any:
        f.ceph_prefix = prefix
        return f
    return deco


def _option(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, **kw}


if "mgr_module" not in sys.modules:
    fake = types.ModuleType("mgr_module")
    fake.MgrModule = _FakeMgrModule  # type: ignore[attr-defined]
    fake.HandleCommandResult = _hcr  # type: ignore[attr-defined]
    fake.CLIReadCommand = _command  # type: ignore[attr-defined]
    fake.Option = _option  # type: ignore[attr-defined]
    sys.modules["mgr_module"] = fake

from ctguard.mgr_module.ctguard import core  # noqa: E402
from ctguard.mgr_module.ctguard.module import Module  # noqa: E402


def _fix(name: str) -> str:
    with open(os.path.join(FIX, name)) as f:
        return f.read()


def _maps() -> tuple[dict[str, Any], dict[str, Any]]:
    return json.loads(_fix("osd_tree.json")), json.loads(_fix("osd_dump.json"))


EXPO = """ctguard_conntrack_entries {e}
ctguard_conntrack_limit {lim}
ctguard_conntrack_free_entries {free}
ctguard_conntrack_drop_total {d}
ctguard_conntrack_state_entries{{state="TIME_WAIT"}} 7
ctguard_conntrack_state_entries{{state="ESTABLISHED"}} 30
ctguard_conntrack_daemon_entries{{daemon="osd.0"}} 15
ctguard_conntrack_daemon_entries{{daemon="osd.1"}} 20
ctguard_restart_burst_entries{{daemon="osd.1"}} 40
"""


def expo(entries: int, limit: int = 1000, drops: int = 0) -> str:
    return EXPO.format(e=entries, lim=limit, free=limit - entries, d=drops)


def test_module_files_parse_as_python36() -> None:
    # Pacific's container images run ceph-mgr on python3.6: no syntax newer than that in the module
    d = os.path.dirname(core.__file__)
    for name in ("__init__.py", "core.py", "module.py"):
        with open(os.path.join(d, name)) as f:
            tree = ast.parse(f.read(), name, feature_version=(3, 6))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                # stdlib and Ceph's mgr_module only: never the ctguard tool, no 3.7+ modules
                assert node.module in ("typing", "mgr_module") or node.module in sys.stdlib_module_names, name
                assert node.module not in ("__future__", "dataclasses"), name
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in sys.stdlib_module_names for a in node.names), name
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
                assert node.value.id not in ("list", "dict", "tuple", "set"), f"{name}: {node.value.id}[...]"


# -- hosts and URLs -----------------------------------------------------------------------------------------------
def test_hosts_from_the_recorded_osd_tree_and_dump() -> None:
    tree, dump = _maps()
    hosts = core.hosts_from_maps(tree, dump)
    assert [(h.name, h.addr, h.osds) for h in hosts] == [("mg-h1", "198.18.0.11", [0, 1]),
                                                         ("mg-h2", "198.18.0.12", [2, 3])]


def test_a_host_without_osds_is_no_osd_host_and_addresses_fall_back() -> None:
    tree = {"nodes": [{"id": -1, "name": "default", "type": "root", "children": [-2, -3]},
                      {"id": -2, "name": "empty", "type": "host", "children": []},
                      {"id": -3, "name": "b", "type": "host", "children": [5]}]}
    dump = {"osds": [{"osd": 5, "public_addrs": {"addrvec": []}, "public_addr": "[fd00::5]:6800/12"}]}
    hosts = core.hosts_from_maps(tree, dump)
    assert [(h.name, h.addr, h.osds) for h in hosts] == [("b", "fd00::5", [5])]
    assert core.exporter_url("http://{addr}:9477/metrics", hosts[0], {}) == "http://[fd00::5]:9477/metrics"
    down = core.hosts_from_maps(tree, {"osds": [{"osd": 5, "public_addr": "-"}]})
    assert core.exporter_url("http://{addr}:9477/metrics", down[0], {}) == "http://b:9477/metrics"


def test_url_template_and_address_map() -> None:
    h = core.Host("node1", "10.0.0.5", [1])
    assert core.exporter_url("http://{host}.mon.example:9477/metrics", h, {}) == \
        "http://node1.mon.example:9477/metrics"
    m = core.parse_address_map("node1=192.0.2.9, node2=exp2:9000")
    assert m == {"node1": "192.0.2.9", "node2": "exp2:9000"}
    assert core.exporter_url("http://{addr}:9477/metrics", h, m) == "http://192.0.2.9:9477/metrics"
    assert core.parse_address_map('{"node1": "192.0.2.9"}') == {"node1": "192.0.2.9"}
    assert core.parse_address_map("") == {}
    for bad in ("node1", "{not json", "[1]"):
        with pytest.raises(ValueError):
            core.parse_address_map(bad)


# -- readings ---------------------------------------------------------------------------------------------------
def test_reading_from_a_recorded_exporter_scrape() -> None:
    r = core.reading_from_samples(core.parse_exposition(_fix("exporter_h1.prom")), 100.0, "x")
    assert (r.entries, r.limit, r.drops) == (33, 262144, 840)
    assert r.osd_entries == {0: 15, 1: 16}
    assert (r.burst, r.burst_daemon) == (32, "osd.1")
    assert r.time_wait is not None and r.free == 262144 - 33


def test_not_an_exporter_is_a_fetch_error() -> None:
    with pytest.raises(core.FetchError, match="not a ctguard exporter"):
        core.reading_from_samples(core.parse_exposition("node_load1 0.5\n"), 1.0, "http://x/metrics")


def test_prometheus_answer_and_query() -> None:
    h = core.Host("mg-h1", "198.18.0.11", [0])
    q = core.prometheus_query(h, 'instance=~"{host}(:[0-9]+)?"')
    assert q.startswith('{__name__=~"ctguard_conntrack_entries|') and 'instance=~"mg\\-h1(:[0-9]+)?"' in q
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "ctguard_conntrack_entries", "instance": "mg-h1:9477"}, "value": [1, "500"]},
        {"metric": {"__name__": "ctguard_conntrack_limit", "instance": "mg-h1:9477"}, "value": [1, "1000"]},
        {"metric": {"__name__": "ctguard_conntrack_drop_total", "instance": "mg-h1:9477"}, "value": [1, "3"]},
        {"metric": {"__name__": "ctguard_conntrack_daemon_entries", "daemon": "osd.0"}, "value": [1, "12"]},
    ]}})
    r = core.reading_from_samples(core.samples_from_prometheus(body, "p"), 5.0, "p")
    assert (r.entries, r.limit, r.drops, r.osd_entries) == (500, 1000, 3, {0: 12})
    with pytest.raises(core.FetchError, match="no ctguard series"):
        core.samples_from_prometheus(json.dumps({"status": "success", "data": {"result": []}}), "p")
    with pytest.raises(core.FetchError, match="bad query"):
        core.samples_from_prometheus(json.dumps({"status": "error", "error": "bad query"}), "p")
    with pytest.raises(core.FetchError, match="unexpected answer"):
        core.samples_from_prometheus("<html>", "p")


# -- health checks ----------------------------------------------------------------------------------------------
S = core.Settings(nearfull_ratio=0.9, drops_window=60.0, burst_factor=2.0, reserve=0, stale_after=30.0)


def _state(name: str, *readings: tuple[float, str]) -> core.HostState:
    st = core.HostState(core.Host(name, "10.0.0.1", [0, 1]), f"http://{name}:9477/metrics")
    for ts, text in readings:
        st.record(core.reading_from_samples(core.parse_exposition(text), ts, "x"), S.drops_window)
    return st


def test_quiet_hosts_raise_nothing() -> None:
    assert core.health_checks([_state("a", (100.0, expo(100)))], S, 101.0) == {}


def test_nearfull_by_ratio_names_the_host() -> None:
    c = core.health_checks([_state("b", (100.0, expo(100))), _state("a", (100.0, expo(950)))], S, 101.0)
    assert list(c) == [core.CHECK_NEARFULL]
    assert c[core.CHECK_NEARFULL]["count"] == 1
    assert c[core.CHECK_NEARFULL]["detail"] == [
        "host a: conntrack table 95.0% full (950/1,000 entries, 50 free; nearfull_ratio 0.9)"]


def test_nearfull_when_free_is_below_the_restart_burst() -> None:
    # 970 of 1000 is below a 0.99 ratio, but 30 free < the busiest OSD's burst of 40
    s = core.Settings(nearfull_ratio=0.99, drops_window=60.0)
    c = core.health_checks([_state("a", (100.0, expo(970)))], s, 101.0)
    assert c[core.CHECK_NEARFULL]["detail"] == [
        "host a: 30 free conntrack entries, below the predicted restart burst of 40 (osd.1)"]
    assert core.health_checks([_state("a", (100.0, expo(950)))], s, 101.0) == {}


def test_drops_rise_within_the_window_and_clear_after_it() -> None:
    st = _state("a", (100.0, expo(10, drops=5)), (110.0, expo(10, drops=5)))
    assert core.health_checks([st], S, 111.0) == {}  # a counter that stands still is no drop
    st.record(core.reading_from_samples(core.parse_exposition(expo(10, drops=12)), 120.0, "x"), S.drops_window)
    c = core.health_checks([st], S, 121.0)
    assert c[core.CHECK_DROPS]["detail"] == ["host a: 7 packets dropped by a full conntrack table in the last 60 s"]
    for t in range(130, 180, 10):  # no further drops: the rise ages out of the window
        st.record(core.reading_from_samples(core.parse_exposition(expo(10, drops=12)), float(t), "x"), 60.0)
    assert core.health_checks([st], S, 175.0) == {core.CHECK_DROPS: c[core.CHECK_DROPS]}  # seen at 120 > 175-60
    st.record(core.reading_from_samples(core.parse_exposition(expo(10, drops=12)), 181.0, "x"), 60.0)
    assert core.health_checks([st], S, 181.0) == {}  # the rise (seen at 120) is older than 60 s


def test_a_counter_reset_is_not_a_drop() -> None:
    st = _state("a", (100.0, expo(10, drops=500)), (110.0, expo(10, drops=0)), (120.0, expo(10, drops=0)))
    assert core.health_checks([st], S, 121.0) == {}


def test_unreachable_and_stale_hosts_are_exporter_down() -> None:
    dead = _state("a")
    dead.fail("http://a:9477/metrics: connection refused", 3600.0)
    stale = _state("b", (100.0, expo(999)))
    c = core.health_checks([dead, stale], S, 3700.0)
    assert list(c) == [core.CHECK_DOWN]  # a stale reading is not judged nearfull
    assert c[core.CHECK_DOWN]["detail"] == [
        "host a: ctguard exporter unreachable since 01:00:00 UTC: http://a:9477/metrics: connection refused",
        "host b: last reading is 3600 s old (http://b:9477/metrics)"]
    dead.record(core.reading_from_samples(core.parse_exposition(expo(1)), 3701.0, "x"), 60.0)
    assert core.health_checks([dead], S, 3702.0) == {}  # recovered: the check clears


# -- status and ok-to-restart -----------------------------------------------------------------------------------
def test_status_document_and_table() -> None:
    st = _state("a", (100.0, expo(100, drops=1)), (110.0, expo(100, drops=21)))
    dead = _state("b")
    dead.fail("http://b:9477/metrics: timed out", 110.0)
    doc = core.status_doc([st, dead], S, 111.0)
    a, b = doc["hosts"]
    assert doc["schema"] == 1
    assert (a["entries"], a["limit"], a["free"], a["time_wait"], a["drops"], a["drops_rate"],
            a["predicted_burst"], a["osd_entries"]) == (100, 1000, 900, 7, 21, 2.0, 40, {"osd.0": 15, "osd.1": 20})
    assert (b["up"], b["error"], b["entries"]) == (False, "http://b:9477/metrics: timed out", None)
    text = core.status_text(doc)
    assert text.splitlines()[0].split() == ["HOST", "STATE", "COUNT", "MAX", "FREE", "FILL", "TIME_WAIT",
                                            "DROPS/s", "BURST", "AGE"]
    assert text.splitlines()[1].split() == ["a", "up", "100", "1000", "900", "10.0%", "7", "2", "40", "1s"]
    assert text.splitlines()[2].split()[:3] == ["b", "DOWN", "-"]
    assert "b: http://b:9477/metrics: timed out" in text


def _ok(states: list[core.HostState], osds: list[int], now: float = 101.0,
        s: core.Settings = S) -> tuple[bool, dict[str, Any]]:
    osd_host = {o: st.host.name for st in states for o in st.host.osds}
    return core.ok_to_restart(states, osd_host, osds, s, now)


def test_ok_to_restart_yes_when_the_bursts_fit() -> None:
    ok, doc = _ok([_state("a", (100.0, expo(900)))], [0, 1])
    # free 100 >= 2x15 + 2x20 + reserve 16
    assert ok and doc["hosts"][0]["need"] == 86 and doc["hosts"][0]["predicted_burst"] == {"osd.0": 30,
                                                                                          "osd.1": 40}


def test_ok_to_restart_no_when_free_is_below_the_burst() -> None:
    ok, doc = _ok([_state("a", (100.0, expo(950)))], [0, 1])
    assert not ok
    assert doc["reason"] == "host a: 50 free conntrack entries < 86 needed (predicted burst 70 + reserve 16)"
    ok1, _ = _ok([_state("a", (100.0, expo(950)))], [0])  # one OSD's burst fits
    assert ok1


def test_ok_to_restart_no_after_drops_or_without_a_fresh_reading() -> None:
    dropping = _state("a", (100.0, expo(10, drops=0)), (110.0, expo(10, drops=3)))
    ok, doc = _ok([dropping], [0], now=111.0)
    assert not ok and "3 packets dropped" in doc["reason"]
    dead = _state("a")
    dead.fail("http://a:9477/metrics: connection refused", 100.0)
    ok, doc = _ok([dead], [0])
    assert not ok and "exporter unreachable" in doc["reason"]
    ok, doc = _ok([_state("a", (10.0, expo(10)))], [0], now=100.0)
    assert not ok and "90 s old" in doc["reason"]


def test_an_unattributed_osd_takes_the_busiest_burst() -> None:
    st = _state("a", (100.0, expo(900)))
    st.host.osds.append(7)
    ok, doc = _ok([st], [7])
    assert ok and doc["hosts"][0]["predicted_burst"] == {"osd.7": 40}
    bare = _state("a", (100.0, "ctguard_conntrack_entries 10\nctguard_conntrack_limit 1000\n"))
    ok, doc = _ok([bare], [0])
    assert not ok and "breakdown has not run" in doc["reason"]


def test_osd_names() -> None:
    assert core.parse_osd_names(["osd.3", "4", "osd.5,osd.3"], {3, 4, 5}) == [3, 4, 5]
    with pytest.raises(ValueError, match="does not exist"):
        core.parse_osd_names(["osd.9"], {3})
    with pytest.raises(ValueError, match="not an OSD name"):
        core.parse_osd_names(["mon.a"], {3})
    with pytest.raises(ValueError, match="at least one"):
        core.parse_osd_names([], {3})


# -- the poller: bounded cycles -----------------------------------------------------------------------------------
def test_poller_reads_fails_and_times_out_without_piling_up() -> None:
    release = threading.Event()
    calls: dict[str, int] = {}

    def fetch(url: str, timeout: float) -> str:
        calls[url] = calls.get(url, 0) + 1
        if "hang" in url:
            release.wait(10)
            return expo(5)
        if "dead" in url:
            raise core.FetchError(f"{url}: connection refused")
        return expo(500)

    hosts = [core.Host("ok", "", [0]), core.Host("dead", "", [1]), core.Host("hang", "", [2])]
    urls = {h.name: f"http://{h.name}/metrics" for h in hosts}
    p = core.Poller(fetch)
    t0 = time.monotonic()
    p.poll(hosts, urls, 0.1, 0.3, 60.0)
    assert time.monotonic() - t0 < 5  # bounded by the deadline, not by the hung fetch
    by = {st.host.name: st for st in p.snapshot()}
    assert by["ok"].reading is not None and by["ok"].reading.entries == 500 and not by["ok"].error
    assert by["dead"].error == "http://dead/metrics: connection refused"
    assert by["hang"].error == "http://hang/metrics: timed out after 0.3 s"
    p.poll(hosts, urls, 0.1, 0.3, 60.0)
    assert calls["http://hang/metrics"] == 1 and calls["http://ok/metrics"] == 2  # no second thread on a hung host
    release.set()
    deadline = time.monotonic() + 5
    while "hang" in p._busy and time.monotonic() < deadline:
        time.sleep(0.01)
    p.poll(hosts, urls, 0.1, 0.3, 60.0)
    by = {st.host.name: st for st in p.snapshot()}
    assert by["hang"].reading is not None and not by["hang"].error
    p.poll(hosts[:1], urls, 0.1, 0.3, 60.0)  # hosts that left the OSD map are forgotten
    assert [st.host.name for st in p.snapshot()] == ["ok"]


# -- the fetcher against real HTTP servers on loopback ------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    conns: list[tuple[str, int]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.client_address not in self.conns:
            self.conns.append(self.client_address)
        body = expo(3).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/metrics"
    finally:
        srv.shutdown()
        srv.server_close()


def test_fetcher_keeps_one_connection_alive(http_server: str) -> None:
    _Handler.conns = []
    f = core.KeepAliveFetcher()
    for _ in range(3):
        assert "ctguard_conntrack_entries 3" in f(http_server, 2.0)
    assert len(_Handler.conns) == 1  # one TCP connection, one conntrack entry on the host
    f.close()


def test_fetcher_refused_and_silent_servers() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    f = core.KeepAliveFetcher()
    with pytest.raises(core.FetchError, match="connection refused"):
        f(f"http://127.0.0.1:{port}/metrics", 1.0)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts into the backlog, never answers: a hung exporter
    try:
        with pytest.raises(core.FetchError, match="timed out"):
            f(f"http://127.0.0.1:{silent.getsockname()[1]}/metrics", 0.3)
    finally:
        silent.close()
    with pytest.raises(core.FetchError, match="only http"):
        f("https://x/metrics", 1.0)


# -- the MgrModule class ------------------------------------------------------------------------------------------
def _module(fetch: Any, **options: Any) -> Any:
    m = Module()
    m.options = {"exporter_url": "http://{addr}:9477/metrics", "host_addresses": "", "prometheus_url": "",
                 "prometheus_selector": 'instance=~"{host}(:[0-9]+)?"', "interval": 10, "timeout": 0.2,
                 "nearfull_ratio": 0.9, "drops_window": 300, "burst_factor": 2.0, "reserve": 0, **options}
    tree, dump = _maps()
    m.data = {"osd_map_tree": tree, "osd_map": dump}
    m.poller.fetch = fetch
    return m


def test_module_cycle_sets_and_clears_health_checks() -> None:
    texts = {"http://198.18.0.11:9477/metrics": expo(950), "http://198.18.0.12:9477/metrics": expo(10)}
    m = _module(lambda url, timeout: texts[url])
    m.cycle()
    assert list(m.health[-1]) == [core.CHECK_NEARFULL]
    assert m.health[-1][core.CHECK_NEARFULL]["detail"][0].startswith("host mg-h1: conntrack table 95.0% full")
    texts["http://198.18.0.11:9477/metrics"] = expo(10)
    m.cycle()
    assert m.health[-1] == {}


def test_module_commands_answer_from_the_cache() -> None:
    texts = {"http://198.18.0.11:9477/metrics": expo(950), "http://198.18.0.12:9477/metrics": expo(10)}
    m = _module(lambda url, timeout: texts[url])
    m.cycle()
    m.poller.fetch = lambda url, timeout: pytest.fail("a command must never fetch")
    rc, out, err = m.status(format="json")
    assert rc == 0 and [h["host"] for h in json.loads(out)["hosts"]] == ["mg-h1", "mg-h2"]
    rc, out, err = m.status()
    assert out.startswith("HOST") and "mg-h1" in out
    rc, out, err = m.ok_to_restart(["osd.0", "osd.1"])
    assert rc == -errno.EBUSY and json.loads(out)["ok_to_restart"] is False
    assert err.startswith("unsafe to restart osd(s) at this time (host mg-h1: 50 free")
    rc, out, err = m.ok_to_restart(["osd.2"])
    assert rc == 0 and json.loads(out)["ok_to_restart"] is True
    assert m.ok_to_restart(["osd.9"])[0] == -errno.ENOENT
    assert m.ok_to_restart(["mon.a"])[0] == -errno.EINVAL
    assert m.status.ceph_prefix == "ctguard status"
    assert m.ok_to_restart.ceph_prefix == "ctguard ok-to-restart"


def test_module_bad_option_is_a_health_check_not_a_crash() -> None:
    m = _module(lambda url, timeout: expo(1), host_addresses="nonsense")
    m.cycle()
    assert list(m.health[-1]) == ["CTGUARD_CONFIG_INVALID"]
    rc, out, _ = m.status(format="json")
    assert "host_addresses" in json.loads(out)["config_error"]


def test_module_prometheus_source_urls() -> None:
    seen: list[str] = []

    def fetch(url: str, timeout: float) -> str:
        seen.append(url)
        return json.dumps({"status": "success", "data": {"result": [
            {"metric": {"__name__": "ctguard_conntrack_entries"}, "value": [1, "10"]},
            {"metric": {"__name__": "ctguard_conntrack_limit"}, "value": [1, "1000"]}]}})

    m = _module(fetch, prometheus_url="http://prom:9090/")
    m.cycle()
    assert m.health[-1] == {}
    assert sorted(u.split("?")[0] for u in seen) == ["http://prom:9090/api/v1/query"] * 2


def test_serve_stops_on_shutdown() -> None:
    m = _module(lambda url, timeout: expo(1))
    t = threading.Thread(target=m.serve)
    t.start()
    time.sleep(0.2)
    m.shutdown()
    t.join(5)
    assert not t.is_alive() and m.health
