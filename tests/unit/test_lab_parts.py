"""The lab's pure parts: layout and ceph.conf, the journal, /proc scanning, log and output parsers."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime

import pytest

from ctguard.errors import BadInput, CannotRead
from ctguard.kernel import nfnetlink as nl
from ctguard.kernel.ctdump import Entry
from ctguard.lab import config as cfg
from ctguard.lab import logs, procs
from ctguard.lab.cluster import Lab, lab_namespaces
from ctguard.lab.reproduce import check_scenarios, socket_pairs, stale_entries
from ctguard.lab.sampler import parse_ceph_status, parse_conntrack_states
from ctguard.lab.state import HostState, LabState, load_state

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "lab")


# -- config ---------------------------------------------------------------------------------------------------
def test_spec_names_and_addresses() -> None:
    spec = cfg.LabSpec(prefix="ctlab1", hosts=2, osds_per_host=2, base_dir="/tmp/x")
    assert spec.host_names == ["ctlab1-h1", "ctlab1-h2"]
    assert spec.namespaces == ["ctlab1-sw", "ctlab1-mon", "ctlab1-cli", "ctlab1-sink", "ctlab1-h1", "ctlab1-h2"]
    assert spec.dir == "/tmp/x/ctlab1" and spec.conf == "/tmp/x/ctlab1/ceph.conf"
    assert spec.pool_size == 2 and spec.pg_num == 32
    assert cfg.LabSpec().pool_size == 3 and cfg.LabSpec().pg_num == 64
    assert cfg.host_ip(1) == "198.18.0.11" and cfg.fill_src(2) == "198.18.102.1"
    for addr in (cfg.MON_IP, cfg.CLIENT_IP, cfg.host_ip(8), cfg.fill_src(8), cfg.fill_gw(8)):
        assert addr.startswith("198.18.")  # the only range this machine allows


@pytest.mark.parametrize("prefix", ["", "CL", "cl-1", "a" * 13, "1cl", "c l", "../x"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(BadInput):
        cfg.check_prefix(prefix)


@pytest.mark.parametrize("kw", [{"hosts": 0}, {"hosts": 9}, {"osds_per_host": 0}, {"store": "filestore"},
                                {"clients": -1}])
def test_bad_spec(kw: dict[str, object]) -> None:
    with pytest.raises(BadInput):
        cfg.LabSpec(**kw)  # type: ignore[arg-type]


def test_ceph_conf_answers_the_pitfalls() -> None:
    spec = cfg.LabSpec(prefix="cl", base_dir="/l")
    text = cfg.ceph_conf(spec, "fsid-1")
    for line in ("fsid = fsid-1", "mon host = [v2:198.18.0.1:3300,v1:198.18.0.1:6789]",
                 "osd crush chooseleaf type = 1", "osd fast shutdown = false", "mon mgr digest period = 1",
                 "auth allow insecure global id reclaim = false", "osd objectstore = memstore",
                 "run dir = /l/cl/run", "osd pool default size = 3", "osd pool default min size = 2"):
        assert line in text
    assert "admin socket" not in text  # pitfall 4: clients would clash on one socket
    assert "bluestore block create = true" in cfg.ceph_conf(cfg.LabSpec(store="bluestore", hosts=2), "f")
    assert "osd pool default min size = 1" in cfg.ceph_conf(cfg.LabSpec(hosts=2), "f")


def test_host_firewall_is_stateful_and_marks_filler() -> None:
    text = cfg.host_firewall(cfg.LabSpec(prefix="cl"))
    assert "policy drop;" in text and "ct state established,related accept" in text
    assert "tcp dport { 3300, 6789, 6800-7568 } accept" in text
    assert "ip saddr 198.19.0.0/16 drop" in text and "ip daddr 198.19.0.0/16 ct mark set 0x1" in text
    # replaces the table atomically: declare, delete, define in one transaction
    assert text.index("delete table inet cl_fw") < text.index("chain input")


# -- state ----------------------------------------------------------------------------------------------------
def _state(d: str) -> LabState:
    return LabState(prefix="ctl1", dir=d, conf=os.path.join(d, "ceph.conf"), mon_ns="ctl1-mon",
                    namespaces=["ctl1-sw", "ctl1-mon", "ctl1-h1", "ctl1-h2"], phase="up",
                    hosts=[HostState("ctl1-h1", "198.18.0.11", "198.18.101.1", [0, 1]),
                           HostState("ctl1-h2", "198.18.0.12", "198.18.102.1", [2, 3])],
                    daemons={"mon.a": 10, "osd.0": 11})


def test_state_round_trip(tmp_path: object) -> None:
    d = str(tmp_path)
    st = _state(d)
    st.save()
    back = load_state(d)
    assert back is not None and back.to_json() == st.to_json()
    assert json.load(open(os.path.join(d, "state.json")))["schema"] == 1
    assert [f for f in os.listdir(d) if f.startswith(".state.")] == []  # no temp file left


def test_state_missing_and_corrupt(tmp_path: object) -> None:
    d = str(tmp_path)
    assert load_state(d) is None
    with open(os.path.join(d, "state.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(CannotRead):
        load_state(d)
    with open(os.path.join(d, "state.json"), "w") as f:
        f.write('{"prefix": "x"}')
    with pytest.raises(CannotRead):
        load_state(d)


def test_lab_api_from_state(tmp_path: object) -> None:
    lab = Lab(_state(str(tmp_path)))
    assert lab.hosts == ["ctl1-h1", "ctl1-h2"]
    assert lab.osd_ids("ctl1-h2") == [2, 3] and lab.osd_host(1) == "ctl1-h1"
    assert lab.host_netns("ctl1-h1").name == "ctl1-h1"
    assert lab.ceph_argv() == ["ip", "netns", "exec", "ctl1-mon", "ceph", "-c", lab.conf]
    assert lab.osd_argv(2)[:5] == ["ceph-osd", "-f", "-c", lab.conf, "-i"]
    assert "host=ctl1-h2" in lab.osd_argv(2)[-1]
    with pytest.raises(BadInput):
        lab.host_netns("ctl1-h9")
    with pytest.raises(BadInput):
        lab.osd_host(7)


def test_load_without_lab(tmp_path: object) -> None:
    with pytest.raises(BadInput, match="no lab"):
        Lab.load("ctl1", str(tmp_path))
    st = _state(os.path.join(str(tmp_path), "ctl1"))
    st.phase = "creating"
    st.save()
    with pytest.raises(BadInput, match="not up"):
        Lab.load("ctl1", str(tmp_path))


def test_lab_namespaces_only_this_prefix() -> None:
    names = ["cl-mon", "cl-h1", "cl-h12", "cl2-h1", "cl-hx", "cl-sw", "ctl1-h1", "cl-sink", "cl-cli", "other"]
    assert lab_namespaces("cl", names) == ["cl-mon", "cl-h1", "cl-h12", "cl-sw", "cl-sink", "cl-cli"]


# -- procs ----------------------------------------------------------------------------------------------------
def _fake_proc(root: str, pid: int, argv: list[str], state: str = "S", comm: str = "ceph-osd",
               netns: str | None = None) -> None:
    d = os.path.join(root, str(pid))
    os.makedirs(os.path.join(d, "ns"), exist_ok=True)
    with open(os.path.join(d, "cmdline"), "wb") as f:
        f.write(b"\0".join(a.encode() for a in argv) + b"\0")
    with open(os.path.join(d, "stat"), "w") as f:
        f.write(f"{pid} ({comm}) {state} 1 {pid} {pid} 0 -1\n")
    if netns is not None:
        os.link(netns, os.path.join(d, "ns", "net"))  # same inode as the namespace file


def test_scan_by_conf_and_by_namespace(tmp_path: object) -> None:
    root = str(tmp_path)
    nsfile = os.path.join(root, "nsfile")
    open(nsfile, "w").close()
    conf = "/var/lib/ctguard/lab/ctl1/ceph.conf"
    _fake_proc(root, 100, ["ceph-osd", "-f", "-c", conf, "-i", "0"])
    _fake_proc(root, 101, ["ceph-osd", "-f", "-c", conf + ".other", "-i", "0"])  # another lab
    _fake_proc(root, 102, ["sleep", "100"], netns=nsfile)  # lives in our namespace
    _fake_proc(root, 103, ["ceph-osd", "-f", "-c", conf], state="Z")  # zombie: already gone
    _fake_proc(root, 104, ["weird (name) x", "-c", conf], comm="a) b (c")
    assert procs.scan(conf, [os.stat(nsfile).st_ino], proc_root=root, me=1) == [100, 102, 104]
    assert procs.scan(conf, [], proc_root=root, me=100) == [104]
    assert procs.state(104, root) == "S" and procs.state(999, root) is None
    assert procs.belongs(100, conf, root) and not procs.belongs(101, conf, root)
    assert not procs.alive(103, root) and procs.alive(100, root)


def test_daemon_argv_keeps_the_pid() -> None:
    argv = procs.daemon_argv("cl-h1", "cl-h1", ["ceph-osd", "-f"])
    assert argv[:7] == ["ip", "netns", "exec", "cl-h1", "unshare", "--uts", "--"]
    assert argv[-3:] == ["cl-h1", "ceph-osd", "-f"]
    assert "os.execvp" in argv[-4]  # exec in place: the PID we started is the daemon's


# -- logs -----------------------------------------------------------------------------------------------------
def _ts(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def test_fault_lines_window_and_rate() -> None:
    t0, t1 = _ts("2026-11-26T06:10:00+00:00"), _ts("2026-11-26T06:11:00+00:00")
    f = logs.fault_lines(logs.read_from(os.path.join(FIX, "osd.log"), 0), t0, t1)
    assert f.total == 3 and f.per_second == {0: 2, 1: 1} and f.peak_per_second == 2
    assert f.wrongly_marked_down == 1
    assert len(f.sample) == 3 and "_fault" in f.sample[0]


def test_cluster_events() -> None:
    t0, t1 = _ts("2026-11-26T06:10:00+00:00"), _ts("2026-11-26T06:10:30+00:00")
    ev = logs.cluster_events(logs.read_from(os.path.join(FIX, "ceph.log"), 0), t0, t1)
    assert [o for _, o in ev.failed] == ["osd.3"]
    assert [o for _, o in ev.marked_itself_down] == ["osd.0"]
    assert [o for _, o in ev.boot] == ["osd.2"]
    assert all("audit" not in ln and "pgmap" not in ln for ln in ev.lines)
    assert abs(ev.failed[0][0] - 25.0) < 0.01


def test_read_from_offset(tmp_path: object) -> None:
    p = os.path.join(str(tmp_path), "x.log")
    with open(p, "w") as f:
        f.write("old line\n")
    off = logs.sizes([p])[p]
    with open(p, "a") as f:
        f.write("new line\n")
    assert list(logs.read_from(p, off)) == ["new line"]
    assert list(logs.read_from(p + ".missing", 0)) == []
    assert logs.timestamp("garbage") is None


# -- sampler parsers ------------------------------------------------------------------------------------------
def test_parse_conntrack_states() -> None:
    text = (
        "tcp      6 431265 ESTABLISHED src=198.18.0.11 dst=198.18.0.11 sport=42370 dport=6814 src=198.18.0.11 "
        "dst=198.18.0.11 sport=6814 dport=42370 [ASSURED] mark=0 use=1\n"
        "tcp      6 100 TIME_WAIT src=198.18.0.11 dst=198.18.0.12 sport=1 dport=6804 src=198.18.0.12 "
        "dst=198.18.0.11 sport=6804 dport=1 [ASSURED] mark=0 use=1\n"
        "udp      17 29 src=127.0.0.1 dst=127.0.0.1 sport=1 dport=2 [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 "
        "sport=2 dport=1 mark=0 use=1\n"
        "\n"
    )
    assert parse_conntrack_states(text) == {"ESTABLISHED": 1, "TIME_WAIT": 1, "udp": 1}


def test_parse_ceph_status_recorded() -> None:
    with open(os.path.join(FIX, "ceph_status_ok.json")) as f:
        s = parse_ceph_status(json.load(f))
    assert s["health"] == "HEALTH_OK" and s["osds"] == 12 and s["osds_up"] == 12
    assert s["num_pgs"] == 65 and s["pgs_clean"] == 65 and s["slow_ops"] == 0


def test_parse_ceph_status_slow_ops() -> None:
    doc = {"health": {"status": "HEALTH_WARN", "checks": {"SLOW_OPS": {"summary": {
        "message": "7 slow ops, oldest one blocked for 311 sec, daemons [osd.5,osd.9] have slow ops."}}}},
        "osdmap": {"num_osds": 4, "num_up_osds": 3, "num_in_osds": 4},
        "pgmap": {"num_pgs": 32, "pgs_by_state": [{"state_name": "active+clean", "count": 30},
                                                   {"state_name": "peering", "count": 2}]}}
    s = parse_ceph_status(doc)
    assert s["slow_ops"] == 7 and s["osds_up"] == 3 and s["pgs_clean"] == 30 and s["checks"] == ["SLOW_OPS"]


# -- reproduce helpers ----------------------------------------------------------------------------------------
def _entry(src: str, sport: int, dst: str, dport: int, state: str) -> Entry:
    return Entry(socket.AF_INET, 6, socket.inet_aton(src), socket.inet_aton(dst), sport, dport,
                 socket.inet_aton(dst), socket.inet_aton(src), dport, sport, nl.IPS_ASSURED,
                 nl.TCP_STATES.index(state), 1, 0)


def test_stale_entries_keep_live_connections() -> None:
    ss = ("ESTAB 0 0 198.18.0.11:6800 198.18.0.12:40000\n"
          "ESTAB 0 0 198.18.0.11:41000 198.18.0.1:3300\n"
          "LISTEN 0 512 198.18.0.11:6800 0.0.0.0:*\n")
    live_in = _entry("198.18.0.12", 40000, "198.18.0.11", 6800, "ESTABLISHED")
    live_out = _entry("198.18.0.11", 41000, "198.18.0.1", 3300, "ESTABLISHED")
    dead = _entry("198.18.0.11", 42000, "198.18.0.13", 6804, "ESTABLISHED")
    tw = _entry("198.18.0.12", 40000, "198.18.0.11", 6800, "TIME_WAIT")
    assert ("198.18.0.12:40000", "198.18.0.11:6800") in socket_pairs(ss)
    assert stale_entries([live_in, live_out, dead, tw], ss) == [dead, tw]


def test_scenarios_selection() -> None:
    names = [s.name for s in check_scenarios([], 10.0, 10)]
    assert names == ["all-at-once", "stagger", "stagger-tw", "headroom", "ctguard-restart", "purge", "guard",
                     "untracked"]
    sel = check_scenarios(["untracked", "all-at-once"], 5.0, 8)
    assert [s.name for s in sel] == ["untracked", "all-at-once"]
    tw = check_scenarios(["stagger-tw"], 5.0, 8)[0]
    assert tw.time_wait == 8 and tw.gap == 10.0 and not tw.all_at_once
    with pytest.raises(BadInput):
        check_scenarios(["bogus"], 10.0, 10)


def test_a_scenario_that_restarted_too_few_osds_is_not_met() -> None:
    from ctguard.cli.lab import client_notes
    from ctguard.lab.reproduce import restart_shortfall

    assert restart_shortfall(4, 4) is None and restart_shortfall(5, 4) is None
    why = restart_shortfall(0, 4)
    assert why == "only 0 of the host's 4 OSDs restarted within the window"
    doc = {"scenarios": [{"name": "ctguard-restart", "available": True, "met": False, "reason": why}]}
    assert client_notes(doc) == [f"ctguard-restart: NOT met: {why}"]
