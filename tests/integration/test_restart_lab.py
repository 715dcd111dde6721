"""`ctguard restart` on a real Ceph lab (2 hosts x 3 OSDs in network namespaces, real daemons and kernel).

One lab for the module (~30 s to bring up). Order matters and is cheap on purpose:
1. --cluster over both hosts with ample headroom, gates read from `ctguard exporter`s started in the hosts'
   namespaces (when the exporter is in this tree; else from the hosts' kernels). Each host goes as one
   batch, so this run also measures the host's real all-at-once burst;
2. host 1 with its free entries shrunk by ESTABLISHED filler below that measured all-at-once burst:
   `ctguard restart --host` is killed with SIGKILL after its first OSD is back, and `--resume` finishes.
After each run: 0 drops, every OSD up, all PGs active+clean, noout cleared. The all-at-once and fixed-gap
restarts from the same headroom, with their drops, are in benchmarks/bench_restart.py (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers import stop_group

from ctguard.ceph.client import CephClient
from ctguard.kernel.settings import conntrack_settings
from ctguard.kernel.stats import conntrack_stats
from ctguard.restart.journal import Journal

pytestmark = pytest.mark.lab

CT = [sys.executable, "-c", "from ctguard.cli import main; main()"]
RESERVE = "16"  # the lab host's table is tiny next to the global max: keep the reserve at lab scale


def env() -> dict[str, str]:
    e = dict(os.environ)
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    e["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.abspath(src), e.get("PYTHONPATH", "")) if p)
    return e


def ctguard(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CT, *args], capture_output=True, text=True, timeout=timeout, env=env())


class LabFixture:
    def __init__(self, prefix: str, base: str) -> None:
        from ctguard.lab.cluster import Lab

        self.prefix, self.base = prefix, base
        self.lab = Lab.load(prefix=prefix, base_dir=base)
        self.ceph = CephClient(self.lab.ceph_argv(), timeout=30)
        self.all_at_once_burst: dict[str, int] = {}  # measured by the cluster test

    def restart_args(self, state: Path) -> list[str]:
        return ["restart", "--lab", self.prefix, "--lab-dir", self.base, "--state-dir", str(state), "--json",
                "--reserve", RESERVE]

    def drops(self) -> dict[str, int]:
        return {h: conntrack_stats(self.lab.host_netns(h)).get("drop") for h in self.lab.hosts}

    def assert_healthy(self, drops_before: dict[str, int]) -> None:
        assert self.drops() == drops_before, "conntrack dropped packets"
        dump = self.ceph.osd_dump()
        assert all(o.up for o in dump.osds.values()), "an OSD is down"
        assert "noout" not in dump.flags
        pgs = self.ceph.pg_stat()
        assert pgs.all_clean, pgs.short()

    def wait_clean(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                dump = self.ceph.osd_dump()
                if all(o.up for o in dump.osds.values()) and self.ceph.pg_stat().all_clean:
                    return
            except Exception:  # noqa: BLE001 - the cluster may be busy recovering
                pass
            time.sleep(1)
        raise AssertionError("lab not clean")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFixture]:
    pytest.importorskip("ctguard.lab.cluster", reason="the lab has not landed in this tree")
    if shutil.which("ceph-osd") is None:
        pytest.fail("Ceph is not installed: run scripts/setup.sh")
    prefix = "ctr" + secrets.token_hex(2)
    base = str(tmp_path_factory.mktemp("ctrlab"))
    try:
        up = ctguard("lab", "up", "--prefix", prefix, "--hosts", "2", "--osds-per-host", "3", "--dir", base,
                     timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        yield LabFixture(prefix, base)
    finally:
        down = ctguard("lab", "down", "--prefix", prefix, "--dir", base, timeout=300)
        assert down.returncode == 0, down.stderr[-2000:]


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _exporter_available() -> bool:
    try:
        import ctguard.export.exporter  # noqa: F401
    except ImportError:
        return False
    return True


def test_cluster_rolls_host_after_host_reading_exporters(lab: LabFixture, tmp_path: Path) -> None:
    before = lab.drops()
    procs: list[subprocess.Popen[bytes]] = []
    args = lab.restart_args(tmp_path / "state") + ["--cluster"]
    if _exporter_available():
        for h in lab.lab.hosts:
            procs.append(subprocess.Popen([*CT, "exporter", "--netns", h, "--listen", "127.0.0.1:9477"],
                                          env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
        args += ["--gate-source", "exporter", "--exporter-url", "http://127.0.0.1:9477/metrics"]
        time.sleep(2)
    try:
        p = ctguard(*args)
    finally:
        for proc in procs:
            stop_group(proc, timeout=30)
    assert p.returncode == 0, p.stderr[-3000:]
    ev = events(p.stdout)
    if procs:
        src = {e["reading"]["source"] for e in ev if e["event"] == "gate" and "reading" in e}
        assert all(s.startswith("exporter:") for s in src), src
    batches = [(e["host"], e["osds"]) for e in ev if e["event"] == "batch"]
    h1, h2 = lab.lab.hosts
    assert [h for h, _ in batches] == sorted(h for h, _ in batches)  # host 1 done before host 2 starts
    assert sorted(o for _, b in batches for o in b) == sorted(lab.lab.osd_ids(h1) + lab.lab.osd_ids(h2))
    done = [e for e in ev if e["event"] == "done"][0]
    assert done["exit_code"] == 0
    lab.assert_healthy(before)
    for e in ev:
        if e["event"] == "burst" and len(e["osds"]) == len(lab.lab.osd_ids(e["host"])):
            lab.all_at_once_burst[e["host"]] = int(e["burst"])


PROM_CONFIG = """global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: ctguard
    static_configs:
{targets}
    relabel_configs:
      - source_labels: [host]
        target_label: instance
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_cluster_rolls_reading_a_real_prometheus(lab: LabFixture, tmp_path: Path) -> None:
    """`--gate-source http://PROMETHEUS`: every gate reading comes from a real Prometheus scraping one
    `ctguard exporter` per lab host (instance label = host name, the source's default selector)."""
    from ctguard.restart.gates import PrometheusSource

    prom = shutil.which("prometheus")
    if prom is None:
        pytest.fail("prometheus is not installed (Debian package `prometheus`): run scripts/setup.sh")
    procs: list[subprocess.Popen[bytes]] = []
    targets = []
    try:
        for h in lab.lab.hosts:
            port = _free_port()
            procs.append(subprocess.Popen([*CT, "exporter", "--netns", h, "--listen", f"127.0.0.1:{port}",
                                           "--listen-in-host", "--state-dir", str(tmp_path / f"ex-{h}")],
                                          env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
            targets.append(f"      - targets: ['127.0.0.1:{port}']\n        labels: {{host: '{h}'}}")
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(PROM_CONFIG.format(targets="\n".join(targets)))
        prom_url = f"http://127.0.0.1:{_free_port()}"
        procs.append(subprocess.Popen([prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                       f"--web.listen-address={prom_url[7:]}"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        src = PrometheusSource(prom_url)
        deadline = time.monotonic() + 60
        while True:  # both hosts' series stored
            try:
                if all(src.read(h).limit > 0 for h in lab.lab.hosts):
                    break
            except Exception:  # noqa: BLE001 - not up or not scraped yet
                pass
            assert time.monotonic() < deadline, "Prometheus never stored both hosts' series"
            time.sleep(0.5)
        before = lab.drops()
        p = ctguard(*lab.restart_args(tmp_path / "state"), "--cluster", "--gate-source", prom_url)
    finally:
        for proc in procs:
            stop_group(proc, timeout=30)
    assert p.returncode == 0, p.stderr[-3000:]
    ev = events(p.stdout)
    sources = {e["reading"]["source"] for e in ev if e["event"] == "gate" and "reading" in e}
    assert sources == {f"prometheus:{prom_url}"}, sources
    batches = [(e["host"], e["osds"]) for e in ev if e["event"] == "batch"]
    assert sorted(o for _, b in batches for o in b) == sorted(o for h in lab.lab.hosts for o in lab.lab.osd_ids(h))
    assert [e for e in ev if e["event"] == "done"][0]["exit_code"] == 0
    lab.assert_healthy(before)


def _fill_to(lab: LabFixture, host: str, free: int) -> int:
    from ctguard.lab.fill import fill

    ns = lab.lab.host_netns(host)
    s = conntrack_settings(ns)
    r = fill("tcp-est", s.max - free - s.count, lab.lab.fill_src(host), ns)
    assert r.send_errors == 0
    return conntrack_settings(ns).free


def test_shrunk_headroom_kill_9_mid_run_then_resume_no_drops(lab: LabFixture, tmp_path: Path) -> None:
    from ctguard.restart.gates import LocalKernelSource

    h1 = lab.lab.hosts[0]
    ns = lab.lab.host_netns(h1)
    burst = lab.all_at_once_burst.get(h1)
    if burst is None:
        pytest.fail("the cluster test did not measure this host's all-at-once burst (run the whole module)")
    from ctguard.table.purge import purge

    # what the gate does when short: closing entries (left by the cluster test's restarts, and counted for
    # the daemons whose ports they name) are purged, then the OSDs' entries are read
    purge(ns)
    live = LocalKernelSource(netns_of=lambda h: ns).live(h1, lab.lab.osd_ids(h1))
    osd_entries = [live.daemon_entries.get(o, 0) for o in lab.lab.osd_ids(h1)]
    assert all(n > 0 for n in osd_entries), live.daemon_entries
    # free entries: one OSD's predicted burst (2x its entries, the start factor) + reserve, and less than
    # what this host really added when all its OSDs restarted at once
    one = 2 * max(osd_entries) + int(RESERVE)
    # some slack over `one`: an OSD's entries move by a few as its peers reconnect after each restart, and
    # the filler (ESTABLISHED) never expires, so a gate short by one entry would wait for --gate-timeout
    margin = min(burst - 8, one + 16)
    assert margin >= one + 8, f"the measured all-at-once burst {burst} leaves no room for one OSD ({one})"
    before = lab.drops()
    _fill_to(lab, h1, margin)

    state = tmp_path / "state"
    proc = subprocess.Popen([*CT, *lab.restart_args(state), "--host", h1], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first: list[dict[str, Any]] = []
    try:
        for line in proc.stdout:
            first.append(json.loads(line))
            if first[-1]["event"] == "up":  # the first OSD is back: kill ctguard in the middle of the run
                break
        # while it runs, the lock refuses a second run on this host
        second = ctguard(*lab.restart_args(state), "--host", h1, timeout=120)
        assert second.returncode == 2 and "another ctguard restart is running" in second.stderr
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert first[-1]["event"] == "up", [e["event"] for e in first]
    batch = [e for e in first if e["event"] == "batch"][0]
    assert len(batch["osds"]) < len(osd_entries), "the headroom gate should have split the host"
    st = Journal(str(state)).latest_unfinished()
    assert st is not None and st.status == "running" and st.noout_owned
    assert "noout" in lab.ceph.flags()  # the killed run could not clear it

    p = ctguard(*lab.restart_args(state), "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    ev = events(p.stdout)
    assert ev[0]["event"] == "plan" and ev[0]["resumed"] is True
    assert all(len(e["osds"]) < len(osd_entries) for e in ev if e["event"] == "batch")
    finished = Journal(str(state)).load(st.run_id)
    assert finished.status == "done" and finished.done == set(lab.lab.osd_ids(h1))
    lab.assert_healthy(before)


LIBRADOS_PROBE = """
import json, sys
from ctguard.ceph.client import client_for
c = client_for(["ceph", "-c", sys.argv[1]], timeout=20, via="librados")
tree, dump, pgs, ok = c.osd_tree(), c.osd_dump(), c.pg_stat(), c.ok_to_stop([0], max_osds=3)
c.set_flag("noout")
flags = sorted(c.flags())
c.unset_flag("noout")
print(json.dumps({"via": c.via, "hosts": {h: list(v) for h, v in tree.hosts.items()},
                  "up": sorted(i for i, o in dump.osds.items() if o.up), "num_pgs": pgs.num_pgs,
                  "ok": ok.ok, "ok_osds": list(ok.osds), "flags_while_set": flags,
                  "flags_after": sorted(c.flags())}))
"""


def test_librados_answers_as_the_cli_does(lab: LabFixture, tmp_path: Path) -> None:
    """The real binding (python3-rados, from the system's site directory) against the real mon and mgr, run in
    the mon's namespace; then a dry run of `ctguard restart` through it, end to end."""
    from ctguard.ceph.librados import rados_module

    if rados_module() is None:
        pytest.fail("python3-rados is not importable: run scripts/setup.sh (ceph-common brings it)")
    mon_ns, conf = lab.lab.state.mon_ns, lab.lab.conf
    p = subprocess.run(["ip", "netns", "exec", mon_ns, sys.executable, "-c", LIBRADOS_PROBE, conf],
                       capture_output=True, text=True, timeout=120, env=env())
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout)
    cli_tree, cli_dump, cli_pgs = lab.ceph.osd_tree(), lab.ceph.osd_dump(), lab.ceph.pg_stat()
    assert got["via"] == "librados"
    assert got["hosts"] == {h: list(v) for h, v in cli_tree.hosts.items()}
    assert got["up"] == sorted(i for i, o in cli_dump.osds.items() if o.up)
    assert got["num_pgs"] == cli_pgs.num_pgs
    assert got["ok"] and 0 in got["ok_osds"]
    assert "noout" in got["flags_while_set"] and "noout" not in got["flags_after"]
    assert "noout" not in cli_dump.flags
    dry = subprocess.run(["ip", "netns", "exec", mon_ns, *CT, "restart", "--dry-run", "--json", "--ceph-cmd",
                          f"ceph -c {conf}", "--ceph-via", "librados", "--state-dir", str(tmp_path / "s"),
                          "--reserve", RESERVE, "--backend", "cephadm", "0"], capture_output=True, text=True,
                         timeout=120, env=env())
    assert dry.returncode == 0, dry.stderr[-3000:]
    doc = json.loads(dry.stdout)
    assert doc["ceph"] == "librados" and doc["plan"] and doc["pgs"]["num_pgs"] == cli_pgs.num_pgs
