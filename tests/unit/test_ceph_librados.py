"""Ceph through librados: the commands the client sends (as the CLI would), errors, timeouts, and when `auto`
takes the CLI instead. A fake binding here; the real one against a real cluster in test_restart_lab.py."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from ctguard.ceph import librados
from ctguard.ceph.client import CephClient, client_for
from ctguard.ceph.librados import RadosConnection, Target, target_from_argv
from ctguard.errors import BadInput, CommandFailed

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ceph"


class FakeError(Exception):
    pass


class FakeRados:
    """The parts of rados.Rados the client uses; answers from a table keyed by the command's prefix."""

    Error = FakeError
    made: list[FakeRados] = []

    def __init__(self, name: str, clustername: str, conffile: str, conf: dict[str, str]) -> None:
        self.args = {"name": name, "clustername": clustername, "conffile": conffile, "conf": conf}
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.answers: dict[str, tuple[int, bytes, str]] = {}
        self.hang = threading.Event()
        self.connected = False
        FakeRados.made.append(self)

    def conf_parse_env(self, var: str = "CEPH_ARGS") -> None:
        self.args["env"] = var

    def connect(self, timeout: int = 0) -> None:
        if self.args["name"] == "client.nokey":
            raise FakeError("[errno 2] RADOS object not found (error connecting to the cluster)")
        self.connected = True

    def _answer(self, where: str, cmd: str) -> tuple[int, bytes, str]:
        d = json.loads(cmd)
        self.sent.append((where, d))
        if d["prefix"] == "hang":
            self.hang.wait(5)
        if d["prefix"] == "raise":
            raise FakeError("[errno 110] timed out")
        return self.answers.get(d["prefix"], (0, b"", ""))

    def mon_command(self, cmd: str, inbuf: bytes, timeout: int = 0) -> tuple[int, bytes, str]:
        return self._answer("mon", cmd)

    def mgr_command(self, cmd: str, inbuf: bytes, timeout: int = 0) -> tuple[int, bytes, str]:
        return self._answer("mgr", cmd)

    def shutdown(self) -> None:
        self.connected = False


class FakeModule:
    Rados = FakeRados
    Error = FakeError


def connect(**kw: Any) -> tuple[CephClient, FakeRados]:
    conn = RadosConnection(Target(**kw), timeout=7, module=FakeModule)
    return CephClient(["ceph"], timeout=7, rados=conn), FakeRados.made[-1]


def test_plain_ceph_command_lines_give_a_target_and_wrappers_do_not() -> None:
    assert target_from_argv(["ceph"]) == Target()
    assert target_from_argv(["/usr/bin/ceph", "-c", "/etc/ceph/x.conf", "--id", "ops", "--cluster=x"]) == Target(
        conffile="/etc/ceph/x.conf", name="client.ops", cluster="x")
    assert target_from_argv(["ceph", "-n", "client.a", "-k", "/k"]) == Target(name="client.a", keyring="/k")
    for argv in (["ip", "netns", "exec", "m", "ceph"], ["cephadm", "shell", "--", "ceph"], ["ceph", "-c"],
                 ["ceph", "--connect-timeout", "3"], []):
        assert target_from_argv(argv) is None, argv


def test_every_command_goes_where_the_cli_would_send_it() -> None:
    c, r = connect(conffile="/etc/ceph/ceph.conf", name="client.admin")
    assert r.connected and r.args["conf"] == {"rados_mon_op_timeout": "7", "client_mount_timeout": "7"}
    r.answers["osd dump"] = (0, (FIXTURES / "osd_dump.json").read_bytes(), "")
    r.answers["pg stat"] = (0, (FIXTURES / "pg_stat.json").read_bytes(), "")
    assert c.osd_dump().osds and c.pg_stat() is not None
    c.set_flag("noout")
    c.unset_flag("noout")
    r.answers["osd ok-to-stop"] = (0, b'{"ok_to_stop":true,"osds":[1,2],"num_ok_pgs":1,"num_not_ok_pgs":0}', "")
    assert c.ok_to_stop([1, 2], max_osds=4).ok
    c.orch_daemon_restart("osd.1")
    assert r.sent == [
        ("mon", {"prefix": "osd dump", "format": "json"}),
        ("mgr", {"prefix": "pg stat", "format": "json"}),
        ("mon", {"prefix": "osd set", "key": "noout"}),
        ("mon", {"prefix": "osd unset", "key": "noout"}),
        ("mgr", {"prefix": "osd ok-to-stop", "ids": ["1", "2"], "max": 4, "format": "json"}),
        ("mgr", {"prefix": "orch daemon", "action": "restart", "name": "osd.1"}),
    ]
    assert c.via == "librados"


def test_ebusy_is_an_answer_and_other_errnos_are_errors_with_their_name() -> None:
    c, r = connect()
    r.answers["osd ok-to-stop"] = (-16, b'{"ok_to_stop":false,"osds":[0]}', "unsafe to stop osd(s) at this time")
    ans = c.ok_to_stop([0])
    assert not ans.ok and ans.reason == "Error EBUSY: unsafe to stop osd(s) at this time"
    r.answers["osd ok-to-stop"] = (-2, b"", "")
    with pytest.raises(CommandFailed, match="Error ENOENT: No such file or directory"):
        c.ok_to_stop([9])


def test_binding_errors_and_calls_that_never_return_fail_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    c, r = connect()
    rc = c.rados
    assert rc is not None
    with pytest.raises(CommandFailed, match="timed out"):
        rc.call({"prefix": "raise"}, mgr=False, words=["x"])
    monkeypatch.setattr(RadosConnection, "SLACK", 0.1)
    rc.timeout = 0.1
    with pytest.raises(CommandFailed, match="no answer within 0.1 s"):
        rc.call({"prefix": "hang"}, mgr=True, words=["hang"])
    with pytest.raises(CommandFailed, match="never returned"):  # the stuck connection is not used again
        c.osd_dump()
    r.hang.set()


def test_auto_takes_the_cli_when_librados_cannot_be_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(librados, "rados_module", lambda search=(): FakeModule)
    assert client_for(["ceph"], timeout=5).via == "librados"
    assert client_for(["ceph"], timeout=5, via="cli").via == "cli"
    assert client_for(["ip", "netns", "exec", "m", "ceph"], timeout=5).via == "cli"
    assert client_for(["ceph", "-n", "client.nokey"], timeout=5).via == "cli"  # cannot connect: the CLI will say
    with pytest.raises(CommandFailed, match="cannot connect as client.nokey"):
        client_for(["ceph", "-n", "client.nokey"], timeout=5, via="librados")
    with pytest.raises(BadInput, match="plain ceph command"):
        client_for(["ssh", "h", "ceph"], timeout=5, via="librados")
    monkeypatch.setattr(librados, "rados_module", lambda search=(): None)
    assert client_for(["ceph"], timeout=5).via == "cli"
    with pytest.raises(BadInput, match="python3-rados"):
        client_for(["ceph"], timeout=5, via="librados")


def test_a_binding_built_for_another_python_is_not_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rados.cpython-29-x86_64-linux-gnu.so").write_bytes(b"not for this interpreter")
    monkeypatch.setattr(librados, "_MODULE", [])
    monkeypatch.setattr(librados.importlib, "import_module", _no_rados)
    assert librados.rados_module([str(tmp_path)]) is None
    assert str(tmp_path) not in __import__("sys").path


def _no_rados(name: str) -> Any:
    raise ImportError(name)


def test_ceph_args_in_the_environment_reach_librados_as_they_reach_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CEPH_ARGS", raising=False)
    _, r = connect()
    assert "env" not in r.args
    monkeypatch.setenv("CEPH_ARGS", "--id ops")
    _, r = connect()
    assert r.args["env"] == "CEPH_ARGS"
