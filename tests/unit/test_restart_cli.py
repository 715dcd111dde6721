"""`ctguard restart` end to end through the CLI, with a stand-in `ceph` program (the real 16.2.15 output
shapes, state in a JSON file), a `--restart-cmd` that "restarts" an OSD in that state, and gates read from an
exporter-format HTTP endpoint: no kernel, no cluster."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

FAKE_CEPH = r'''
import json, sys
state_path, args = sys.argv[1], sys.argv[2:]
if "--connect-timeout" in args:
    i = args.index("--connect-timeout"); del args[i:i + 2]
args = [a for a in args if a not in ("-f", "json")]
st = json.load(open(state_path))
def save(): json.dump(st, open(state_path, "w"))
if args[:1] == ["restart"]:
    if args[2:3] == ["slow"]:
        import time; time.sleep(1.0)
    o = args[1]; st["epoch"] += 1; st["osds"][o]["up_from"] = st["epoch"]; st["restarts"].append(int(o)); save()
elif args[:2] == ["osd", "tree"]:
    hosts = {}
    for o, v in st["osds"].items():
        hosts.setdefault(v.get("host", "h1"), []).append(int(o))
    print(json.dumps({"nodes": [{"id": -2 - k, "name": h, "type": "host", "children": ids}
                                for k, (h, ids) in enumerate(hosts.items())]
                      + [{"id": int(o), "name": "osd." + o, "type": "osd"} for o in st["osds"]], "stray": []}))
elif args[:2] == ["osd", "dump"]:
    print(json.dumps({"epoch": st["epoch"], "flags": ",".join(st["flags"]), "flags_set": st["flags"],
                      "osds": [{"osd": int(o), "up": 1, "in": 1, "up_from": v["up_from"]} for o, v in st["osds"].items()]}))
elif args[:2] == ["pg", "stat"]:
    print(json.dumps({"pg_summary": {"num_pg_by_state": [{"name": "active+clean", "num": 8}], "num_pgs": 8}}))
elif args == ["-s"]:
    print(json.dumps({"health": {"status": "HEALTH_OK", "checks": {}}, "osdmap": {"num_osds": 2, "num_up_osds": 2},
                      "pgmap": {"pgs_by_state": [{"state_name": "active+clean", "count": 8}], "num_pgs": 8}}))
elif args[:2] == ["osd", "ok-to-stop"]:
    print(json.dumps({"ok_to_stop": True, "osds": [int(a) for a in args[2:3]], "num_ok_pgs": 8, "num_not_ok_pgs": 0}))
elif args[:2] == ["osd", "set"]:
    st["flags"].append(args[2]); save(); print(args[2] + " is set", file=sys.stderr)
elif args[:2] == ["osd", "unset"]:
    st["flags"] = [f for f in st["flags"] if f != args[2]]; save(); print(args[2] + " is unset", file=sys.stderr)
else:
    print("Error EINVAL: " + " ".join(args), file=sys.stderr); sys.exit(22)
'''

METRICS = """ctguard_conntrack_entries 500
ctguard_conntrack_limit 262144
ctguard_conntrack_drop_total 0
ctguard_conntrack_daemon_entries{daemon="osd.0"} 40
ctguard_conntrack_daemon_entries{daemon="osd.1"} 45
"""


@pytest.fixture
def exporter() -> Iterator[str]:
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            body = METRICS.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/metrics"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Path, list[str]]:
    script = tmp_path / "fake_ceph.py"
    script.write_text(FAKE_CEPH)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"epoch": 10, "flags": ["sortbitwise"], "restarts": [],
                                 "osds": {"0": {"up_from": 5}, "1": {"up_from": 6}}}))
    return state, [sys.executable, str(script), str(state)]


def ctguard(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.abspath("src"), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-c", "from ctguard.cli import main; main()", "restart", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_json_run_restarts_every_osd_and_clears_noout(tmp_path: Path, cluster: tuple[Path, list[str]],
                                                      exporter: str) -> None:
    state, ceph = cluster
    p = ctguard("--host", "h1", "--json", "--ceph-cmd", " ".join(ceph),
                "--restart-cmd", " ".join(ceph) + " restart {id}", "--gate-source", "exporter",
                "--exporter-url", exporter, "--settle", "0.2", "--state-dir", str(tmp_path / "st"))
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    assert all(isinstance(e["ts"], str) and e["event"] for e in events)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "plan" and kinds[-1] == "done"
    for k in ("gate", "batch", "stop", "start", "up", "pgs", "noout"):
        assert k in kinds
    gates = [e for e in events if e["event"] == "gate" and e["gate"] == "headroom"]
    assert gates[0]["reading"]["entries"] == 500 and gates[0]["predicted"]["osd.0"] == 80
    st = json.loads(state.read_text())
    assert sorted(st["restarts"]) == [0, 1] and "noout" not in st["flags"]


def test_dry_run_changes_nothing(tmp_path: Path, cluster: tuple[Path, list[str]], exporter: str) -> None:
    state, ceph = cluster
    p = ctguard("--host", "h1", "--dry-run", "--json", "--ceph-cmd", " ".join(ceph), "--gate-source", "exporter",
                "--exporter-url", exporter, "--state-dir", str(tmp_path / "st"), "--backend", "cephadm")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["schema"] == 1 and doc["hosts"][0]["reading"]["free"] == 262144 - 500
    assert doc["hosts"][0]["osds"][0]["restart"] == "ceph orch daemon restart osd.0"
    st = json.loads(state.read_text())
    assert st["restarts"] == [] and "noout" not in st["flags"]
    assert not (tmp_path / "st").exists()


@pytest.mark.parametrize("args,msg", [
    ((), "nothing to restart"),
    (("osd.0", "--burst-factor", "0.5"), "--burst-factor must be >= 1"),
    (("mon.a",), "not an OSD name"),
    (("--resume", "osd.1"), "--resume takes the plan from the journal"),
    (("--cluster", "--gate-source", "local"), "several hosts"),
    (("--host", "nope"), "no CRUSH host 'nope'"),
    (("osd.0", "--restart-cmd", "echo"), "must contain {id}"),
    (("--host", "h2", "--backend", "systemd"), "the systemd backend restarts this machine's daemons"),
])
def test_bad_input_is_one_line_and_exit_3(tmp_path: Path, cluster: tuple[Path, list[str]],
                                          args: tuple[str, ...], msg: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    state, ceph = cluster
    st = json.loads(state.read_text())
    st["osds"]["2"] = {"up_from": 7, "host": "h2"}
    state.write_text(json.dumps(st))
    # never the real systemd backend in a unit test: a harmless template unless the case sets its own
    code, err = in_process("--restart-cmd", "false {id}", *args, "--ceph-cmd", " ".join(ceph),
                           "--state-dir", str(tmp_path / "st"), capsys=capsys)
    assert code == 3, (code, err)
    assert msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_nothing_to_resume(tmp_path: Path, cluster: tuple[Path, list[str]],
                           capsys: pytest.CaptureFixture[str]) -> None:
    _, ceph = cluster
    code, err = in_process("--resume", "--ceph-cmd", " ".join(ceph), "--state-dir", str(tmp_path / "st"),
                           capsys=capsys)
    assert code == 3 and "nothing to resume" in err


def in_process(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from ctguard.cli import main

    with pytest.raises(SystemExit) as e:
        main(["restart", *args])
    return int(e.value.code or 0), capsys.readouterr().err


def test_ansible_example_is_serial_and_json() -> None:
    import yaml

    root = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "ansible", "rolling-restart.yml")
    with open(root) as f:
        play = yaml.safe_load(f)[0]
    assert play["serial"] == 1 and play["max_fail_percentage"] == 0
    argv = " ".join(t["ansible.builtin.command"]["argv"] for t in play["tasks"] if "ansible.builtin.command" in t)
    assert "'restart', '--local', '--json'" in argv


def test_sigterm_finishes_the_step_then_resume(tmp_path: Path, cluster: tuple[Path, list[str]],
                                               exporter: str) -> None:
    import signal

    state, ceph = cluster
    args = ["--host", "h1", "--json", "--ceph-cmd", " ".join(ceph), "--max-parallel", "1",
            "--restart-cmd", " ".join(ceph) + " restart {id} slow", "--gate-source", "exporter",
            "--exporter-url", exporter, "--settle", "0.2", "--state-dir", str(tmp_path / "st")]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.abspath("src"), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen([sys.executable, "-c", "from ctguard.cli import main; main()", "restart", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "stop":  # the restart command is running now
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    seen += [json.loads(line) for line in out.splitlines()]
    assert proc.returncode == 130, err
    kinds = [e["event"] for e in seen]
    assert "up" in kinds and "pgs" in kinds  # the step under way was finished
    assert kinds[-1] == "abort" and "SIGTERM" in seen[-1]["reason"]
    st = json.loads(state.read_text())
    assert st["restarts"] == [0] and "noout" not in st["flags"]
    p = ctguard(*args[2:], "--resume")  # the plan comes from the journal
    assert p.returncode == 0, p.stderr
    st = json.loads(state.read_text())
    assert st["restarts"] == [0, 1] and "noout" not in st["flags"]
