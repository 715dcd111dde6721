"""Gate sources: exporter exposition, Prometheus API answers, local kernel in a fake /proc, plan building."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

import pytest

from ctguard.ceph.parse import OsdTree
from ctguard.errors import BadInput, CannotRead
from ctguard.kernel.netns import Netns
from ctguard.restart.backends import TemplateBackend
from ctguard.restart.gates import (
    ExporterSource,
    LocalKernelSource,
    PrometheusSource,
    osd_id_of_cmdline,
    parse_exposition,
)
from ctguard.restart.plan import build_plan, parse_osd_names

EXPOSITION = """# HELP ctguard_conntrack_entries Entries in the conntrack table.
# TYPE ctguard_conntrack_entries gauge
ctguard_conntrack_entries{netns="cl-h1"} 1234
# TYPE ctguard_conntrack_limit gauge
ctguard_conntrack_limit{netns="cl-h1"} 262144
# TYPE ctguard_conntrack_drop_total counter
ctguard_conntrack_drop_total{netns="cl-h1"} 17
ctguard_conntrack_daemon_entries{daemon="osd.3",netns="cl-h1"} 48
ctguard_conntrack_daemon_entries{daemon="osd.4",netns="cl-h1"} 52
ctguard_conntrack_daemon_entries{daemon="other",netns="cl-h1"} 9
ctguard_conntrack_role_entries{role="ceph-osd",netns="cl-h1"} 180
ctguard_conntrack_role_entries{role="other",netns="cl-h1"} 1000
"""


def test_exposition_parser() -> None:
    s = parse_exposition(EXPOSITION + 'weird_metric{a="x\\"y"} NaN\nbroken line\n')
    assert ("ctguard_conntrack_limit", {"netns": "cl-h1"}, 262144.0) in s
    assert any(n == "weird_metric" and lab["a"] == 'x"y' for n, lab, _ in s)


def test_exporter_source_reads_each_host() -> None:
    seen: list[tuple[str, Netns | None]] = []

    def fetch(url: str, timeout: float, ns: Netns | None) -> str:
        seen.append((url, ns))
        return EXPOSITION

    src = ExporterSource("http://{host}:9477/metrics", fetch=fetch, netns_of=lambda h: Netns(name=h))
    r = src.read("cl-h1")
    assert (r.entries, r.limit, r.drops, r.free) == (1234, 262144, 17, 262144 - 1234)
    assert r.daemon_entries == {3: 48, 4: 52} and r.osd_role_entries == 180
    assert seen == [("http://cl-h1:9477/metrics", Netns(name="cl-h1"))]
    assert src.purge("cl-h1") is None  # remote: cannot purge


def test_exporter_without_the_metrics_is_cannot_read() -> None:
    src = ExporterSource(fetch=lambda u, t, n: "other_metric 1\n")
    with pytest.raises(CannotRead, match="no ctguard_conntrack_entries sample"):
        src.read("h")


def test_prometheus_source_queries() -> None:
    asked: list[str] = []

    def fetch(url: str, timeout: float, ns: Netns | None) -> str:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["query"][0]
        asked.append(q)
        v = {"sum(ctguard_conntrack_entries": "900", "max(ctguard_conntrack_limit": "262144",
             "sum(ctguard_conntrack_drop_total": "3"}[q.split("{")[0]]
        return json.dumps({"status": "success", "data": {"resultType": "vector",
                                                         "result": [{"metric": {}, "value": [1.0, v]}]}})

    r = PrometheusSource("http://prom:9090", fetch=fetch).read("cl-h1")
    assert (r.entries, r.limit, r.drops) == (900, 262144, 3)
    assert asked[0] == 'sum(ctguard_conntrack_entries{instance=~"cl-h1(:[0-9]+)?"})'


def test_prometheus_empty_result_is_cannot_read() -> None:
    src = PrometheusSource("http://p:9090",
                           fetch=lambda u, t, n: json.dumps({"status": "success", "data": {"result": []}}))
    with pytest.raises(CannotRead, match="no result"):
        src.read("h")


def test_local_kernel_source_on_a_fake_proc(tmp_path: Path) -> None:
    nf = tmp_path / "sys" / "net" / "netfilter"
    nf.mkdir(parents=True)
    (nf / "nf_conntrack_count").write_text("5000\n")
    (nf / "nf_conntrack_max").write_text("262144\n")
    (nf / "nf_conntrack_buckets").write_text("262144\n")
    (nf / "nf_conntrack_tcp_timeout_time_wait").write_text("120\n")
    st = tmp_path / "net" / "stat"
    st.mkdir(parents=True)
    hdr = ("entries clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop "
           "icmp_error expect_new expect_create expect_delete search_restart")
    row = " ".join(["00001388"] + ["00000000"] * 9 + ["00000007"] + ["00000000"] * 6)
    (st / "nf_conntrack").write_text(f"{hdr}\n{row}\n{row}\n")
    r = LocalKernelSource(proc_root=str(tmp_path)).read("h1")
    assert (r.entries, r.limit, r.drops) == (5000, 262144, 14)


def test_osd_id_from_cmdline() -> None:
    assert osd_id_of_cmdline(["/usr/bin/ceph-osd", "-f", "--cluster", "ceph", "--id", "12"]) == 12
    assert osd_id_of_cmdline(["ceph-osd", "-c", "/x.conf", "-i", "3", "-f"]) == 3
    assert osd_id_of_cmdline(["ceph-osd", "--id=7"]) == 7
    assert osd_id_of_cmdline(["ceph-mon", "-i", "a"]) is None


def test_plan_building() -> None:
    tree = OsdTree({"h1": (0, 1), "h2": (2, 3)})
    assert build_plan(tree, cluster=True).to_json() == [{"host": "h1", "osds": [0, 1]},
                                                       {"host": "h2", "osds": [2, 3]}]
    assert build_plan(tree, parse_osd_names(["osd.3", "2", "osd.0"])).to_json() == [
        {"host": "h2", "osds": [3, 2]}, {"host": "h1", "osds": [0]}]
    with pytest.raises(BadInput, match="no CRUSH host 'h9'"):
        build_plan(tree, hosts=["h9"])
    with pytest.raises(BadInput, match="not an OSD name"):
        parse_osd_names(["mon.a"])
    with pytest.raises(BadInput, match="not under any CRUSH host"):
        build_plan(tree, [9])


def test_restart_cmd_template() -> None:
    b = TemplateBackend("ssh {host} 'systemctl restart ceph-osd@{id}'")
    assert b.argv(4, "h2") == ["ssh", "h2", "systemctl restart ceph-osd@4"]
    with pytest.raises(BadInput, match="must contain"):
        TemplateBackend("systemctl restart ceph-osd")
    with pytest.raises(BadInput, match="bad placeholder"):
        TemplateBackend("x {id} {nope}").argv(1, "h")


def test_journal_path_is_in_the_state_dir(tmp_path: Path) -> None:
    from ctguard.restart.journal import Journal

    j = Journal(str(tmp_path / "state"))
    rid = j.start_run([{"host": "h", "osds": [1]}], {})
    j.step(rid, "restart", "begin", host="h", osd=1, data={"up_from": 9})
    st = j.latest_unfinished()
    assert st is not None and st.restart_begun == {1: 9}
    assert os.path.exists(tmp_path / "state" / "restart-journal.sqlite")


def test_keepalive_fetcher_reuses_one_connection() -> None:
    import http.server
    import threading

    from ctguard.restart.gates import KeepAliveFetcher

    conns: list[object] = []

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            conns.append(self.connection)

        def do_GET(self) -> None:  # noqa: N802
            body = EXPOSITION.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        f = KeepAliveFetcher()
        src = ExporterSource(f"http://127.0.0.1:{srv.server_address[1]}/metrics", fetch=f)
        for _ in range(3):
            assert src.read("h").entries == 1234
        assert len(conns) == 1  # one TCP connection for three scrapes
        f.close()
    finally:
        srv.shutdown()
        srv.server_close()
