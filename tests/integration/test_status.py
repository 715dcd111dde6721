"""`ctguard status` / `purge` against the real kernel, in namespaces the tests make (198.18.0.0/15 only)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from peers import PEER, wait_ready

from ctguard.errors import BadInput
from ctguard.kernel.netns import Netns
from ctguard.kernel.settings import conntrack_settings
from ctguard.kernel.stats import conntrack_stats
from ctguard.lab.fill import fill
from ctguard.lab.testbed import CLI_IP, FILL_SRC, SRV_IP, Testbed
from ctguard.table.purge import purge
from ctguard.table.status import table_status

pytestmark = pytest.mark.integration
CTGUARD = [sys.executable, "-c", "from ctguard.cli import main; main()"]


def _as(tmp_path: Path, name: str) -> str:
    """A symlink to the interpreter named like a daemon, so /proc/<pid>/cmdline starts with it."""
    link = tmp_path / name
    link.symlink_to(os.path.realpath(sys.executable))
    return str(link)


def _connect(ns: str, addr: str, port: int, timeout: float = 1.5) -> bool:
    """One new TCP connection from inside `ns`; True if it was accepted."""
    code = (f"import socket,sys\ns=socket.socket();s.settimeout({timeout})\n"
            f"try:\n s.connect(({addr!r},{port}));print('ok')\nexcept OSError:\n print('fail')")
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout + 10, check=True)
    return out.stdout.strip() == "ok"


def _ctguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CTGUARD + list(args), capture_output=True, text=True, timeout=120, check=False)


def test_breakdown_counts_exactly(testbed: Testbed, tmp_path: Path) -> None:
    """Known connections across the veth: exact counts by state, role and owning process."""
    tb = testbed
    r = tmp_path / "ready"
    r.mkdir()
    # cli listens on an OSD port: srv's osd.3 connects out to it (an outbound entry owned by osd.3)
    p = tb.spawn(tb.cli, [sys.executable, PEER, str(r / "c0"), "serve", CLI_IP, "6801"])
    wait_ready(r / "c0", p)
    osd = tb.spawn(tb.srv, [_as(tmp_path, "ceph-osd"), PEER, "-i", "3", str(r / "osd"), "serve", SRV_IP, "6800",
                            "--connect", f"{CLI_IP}:6801"])
    wait_ready(r / "osd", osd)
    mon = tb.spawn(tb.srv, [_as(tmp_path, "ceph-mon"), PEER, "--id", "a", str(r / "mon"), "serve", SRV_IP, "3300"])
    wait_ready(r / "mon", mon)
    other = tb.spawn(tb.srv, [sys.executable, PEER, str(r / "oth"), "serve", SRV_IP, "9000"])
    wait_ready(r / "oth", other)
    for name, port, n, close in (("a", 6800, 5, 2), ("b", 3300, 3, 0), ("c", 9000, 2, 0)):
        cp = tb.spawn(tb.cli, [sys.executable, PEER, str(r / name), "connect", SRV_IP, str(port), str(n),
                               "--close", str(close)])
        wait_ready(r / name, cp)

    out = _ctguard("status", "--netns", tb.srv, "--breakdown", "--json", "--state-dir", str(tmp_path / "st"))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == 1 and doc["netns"] == tb.srv and doc["verdict"] == "OK"
    b = doc["breakdown"]
    assert doc["count"] == b["total"] == 11
    assert b["by_state"] == {"ESTABLISHED": 9, "TIME_WAIT": 2}
    assert b["by_proto"] == {"tcp": 11}
    assert b["assured"] == 11
    assert b["by_role"] == {"ceph-mon": 3, "ceph-osd": 6, "other": 2}
    daemons = {d["name"]: (d["pid"], d["entries"]) for d in b["by_daemon"]}
    assert daemons["osd.3"][1] == 6  # 5 inbound (2 of them in TIME_WAIT, socket gone) + 1 outbound
    assert daemons["mon.a"][1] == 3
    assert sum(e for _, e in daemons.values()) == 11 and b["unattributed"] == 0
    assert b["ceph_daemon_entries"] == 9
    assert b["top_peers"][0] == {"address": CLI_IP, "entries": 11}
    # by role for the model (docs/simulate.md): cli is reached on an OSD port, so it is an OSD host; its
    # 2 closed sessions are closing, not churned; the mon's sessions are mon/mgr
    assert b["inventory"] == {"osd_out": 1, "osd_in": 3, "local": 0, "client": 0, "mon_mgr": 3, "other": 2,
                              "transient": 2}
    # the pids are the daemons' own (ip netns exec execs in place)
    assert daemons["osd.3"][0] == osd.pid and daemons["mon.a"][0] == mon.pid

    # --netns-pid reaches the same namespace
    by_pid = _ctguard("status", "--netns-pid", str(osd.pid), "--json", "--state-dir", str(tmp_path / "st2"))
    assert json.loads(by_pid.stdout)["count"] == 11


def test_full_table_is_crit_and_drops_rise(testbed: Testbed, tmp_path: Path) -> None:
    tb = testbed
    ns = tb.ns()
    limit = conntrack_settings(ns).max
    p = tb.spawn(tb.srv, [sys.executable, PEER, str(tmp_path / "s"), "serve", SRV_IP, "7000"])
    wait_ready(tmp_path / "s", p)
    state = str(tmp_path / "state")
    first = table_status(ns, state_dir=state)
    assert first.verdict == "OK" and first.drop_delta is None
    fill("tcp-est", limit, FILL_SRC, ns)
    assert conntrack_settings(ns).count >= limit
    drops0 = conntrack_stats(ns).get("drop")
    assert not _connect(tb.cli, SRV_IP, 7000)  # refused: no room for its entry
    assert conntrack_stats(ns).get("drop") > drops0
    out = _ctguard("status", "--netns", tb.srv, "--json", "--state-dir", state)
    assert out.returncode == 2, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["verdict"] == "CRIT" and doc["drop_delta"] > 0 and doc["fill"] >= 0.95
    assert any("dropped" in r for r in doc["reasons"]) and any("full" in r for r in doc["reasons"])


def test_purge_ends_an_overflow_and_keeps_established(testbed: Testbed, tmp_path: Path) -> None:
    tb = testbed
    ns = tb.ns()
    limit = conntrack_settings(ns).max
    p = tb.spawn(tb.srv, [sys.executable, PEER, str(tmp_path / "s"), "serve", SRV_IP, "6800"])
    wait_ready(tmp_path / "s", p)
    n_tw = 2000
    fill("tcp-est", limit - n_tw, FILL_SRC, ns)
    fill("tcp-tw", n_tw, FILL_SRC, ns, sport=40001)
    assert conntrack_settings(ns).count >= limit
    # Above 95 % full the kernel's GC early-drops closing entries (gc_worker, nf_conntrack_max95), and on a
    # machine whose other namespaces keep the shared GC busy it may free some before the connection comes:
    # top the table up with TIME_WAIT entries and try again (one SYN each: 0.5 s < the 1 s retransmission).
    tw_added, nxt = n_tw, n_tw
    for _attempt in range(20):
        gap = limit - conntrack_settings(ns).count
        if gap > 0:
            fill("tcp-tw", gap, FILL_SRC, ns, sport=40001, start=nxt)
            nxt += gap
            tw_added += gap
        if not _connect(tb.cli, SRV_IP, 6800, timeout=0.5):
            break
    else:
        pytest.fail("could not hold the table full long enough to refuse a connection")
    out = _ctguard("purge", "--netns", tb.srv, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == 1 and doc["failed"] == 0
    # every TIME_WAIT entry still there went (the GC may have taken some first); nothing else did
    assert 0 < doc["deleted"] <= tw_added + 20 and doc["by_state"].get("TIME_WAIT", 0) > 0
    assert set(doc["by_state"]) <= {"TIME_WAIT", "CLOSE", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK"}
    after = table_status(ns, breakdown=True, state_dir=None)
    assert after.breakdown is not None
    assert after.breakdown.breakdown.by_state.get("TIME_WAIT", 0) == 0
    assert after.breakdown.breakdown.by_state["ESTABLISHED"] == limit - n_tw
    assert _connect(tb.cli, SRV_IP, 6800)


def test_purge_ceph_ports_only(testbed: Testbed) -> None:
    tb = testbed
    ns = tb.ns()
    fill("tcp-tw", 50, FILL_SRC, ns, base_port=6800)   # TIME_WAIT towards OSD-range ports
    fill("tcp-tw", 30, FILL_SRC, ns, sport=40001, base_port=20000)  # and towards other ports
    r = purge(ns, ports="ceph", dry_run=True)
    assert r.matched == 50 and r.deleted == 0 and r.by_role == {"ceph-osd": 50}
    r = purge(ns, ports="ceph")
    assert r.deleted == 50
    assert purge(ns, ports="all").deleted == 30


def test_inactive_namespace_says_so(tmp_path: Path) -> None:
    with Testbed(rules=None) as tb:
        out = _ctguard("status", "--netns", tb.srv, "--json", "--state-dir", str(tmp_path))
        doc = json.loads(out.stdout)
        assert out.returncode == 0
        assert doc["tracking"] is False and "no connection tracking here" in doc["reasons"][0]


def test_not_root_degrades_honestly(testbed: Testbed, tmp_path: Path) -> None:
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    base = nobody + CTGUARD
    out = subprocess.run(base + ["status", "--json", "--breakdown", "--state-dir", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert out.returncode in (0, 1, 2), out.stderr
    doc = json.loads(out.stdout)
    assert doc["stats_source"] == "procfs"
    notes = " ".join(doc["notes"])
    assert "CAP_NET_ADMIN" in notes or doc["tracking"] is False
    out = subprocess.run(base + ["status", "--netns", testbed.srv], capture_output=True, text=True, timeout=60,
                         env=env, check=False)
    assert out.returncode == 3
    assert out.stderr.startswith("ctguard: ") and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_namespace_entry_never_leaks(testbed: Testbed) -> None:
    home = os.stat("/proc/thread-self/ns/net").st_ino
    table_status(Netns(name=testbed.srv), breakdown=True, state_dir=None)
    with pytest.raises(BadInput):
        table_status(Netns(name=testbed.prefix + "-nope"), state_dir=None)
    assert os.stat("/proc/thread-self/ns/net").st_ino == home
    assert socket.gethostname()
