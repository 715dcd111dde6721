"""`ctguard mgr install`: the plan, apply, re-plan after a Ceph upgrade, refusals; on a fake Ceph module dir."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ctguard.cli import cli
from ctguard.errors import BadInput, CannotRead
from ctguard.mgr.install import MANIFEST, apply_install, module_source, plan_install
from ctguard.runner import Completed


@pytest.fixture
def ceph_dir(tmp_path: Path) -> Path:
    d = tmp_path / "share-ceph-mgr"
    d.mkdir()
    (d / "mgr_module.py").write_text("# Ceph's\n")
    (d / "mgr_util.py").write_text("# Ceph's\n")
    for m in ("balancer", "prometheus"):
        (d / m).mkdir()
        (d / m / "__init__.py").write_text("")
    return d


def _actions(plan: Any) -> dict[str, str]:
    return {os.path.basename(s.path): s.action for s in plan.steps}


def test_plan_writes_nothing_and_apply_builds_the_module_dir(tmp_path: Path, ceph_dir: Path) -> None:
    path = tmp_path / "mods"
    plan = plan_install(str(path), ceph_dir=str(ceph_dir))
    assert not path.exists()
    assert _actions(plan) == {"mods": "mkdir", "balancer": "link", "mgr_module.py": "link", "mgr_util.py": "link",
                              "prometheus": "link", "ctguard": "copy"}
    assert plan.config[0] == f"ceph config set mgr mgr_module_path {path}"
    apply_install(plan)
    assert os.readlink(path / "balancer") == str(ceph_dir / "balancer")
    assert os.readlink(path / "mgr_module.py") == str(ceph_dir / "mgr_module.py")
    assert not (path / "ctguard").is_symlink()
    assert (path / "ctguard" / "core.py").read_bytes() == Path(module_source(), "core.py").read_bytes()
    assert json.loads((path / MANIFEST).read_text())["links"] == ["balancer", "mgr_module.py", "mgr_util.py",
                                                                  "prometheus"]
    again = plan_install(str(path), ceph_dir=str(ceph_dir))
    assert again.changes == []  # idempotent
    assert sorted(os.listdir(ceph_dir)) == ["balancer", "mgr_module.py", "mgr_util.py", "prometheus"]


def test_replan_after_a_ceph_upgrade(tmp_path: Path, ceph_dir: Path) -> None:
    path = tmp_path / "mods"
    apply_install(plan_install(str(path), ceph_dir=str(ceph_dir)))
    (ceph_dir / "rgw").mkdir()  # a module the new release adds
    (ceph_dir / "balancer" / "__init__.py").unlink()
    (ceph_dir / "balancer").rmdir()  # one it removes
    (path / "ctguard" / "core.py").write_text("# edited\n")  # and a changed module copy
    plan = plan_install(str(path), ceph_dir=str(ceph_dir))
    assert {os.path.basename(s.path): s.action for s in plan.changes} == {"rgw": "link", "balancer": "unlink",
                                                                         "ctguard": "copy"}
    apply_install(plan)
    assert not os.path.lexists(path / "balancer") and (path / "rgw").is_symlink()
    assert plan_install(str(path), ceph_dir=str(ceph_dir)).changes == []


def test_refusals(tmp_path: Path, ceph_dir: Path) -> None:
    with pytest.raises(BadInput, match="Ceph's own module directory"):
        plan_install(str(ceph_dir), ceph_dir=str(ceph_dir))
    path = tmp_path / "mods"
    path.mkdir()
    (path / "prometheus").mkdir()  # someone's real directory where a link would go
    with pytest.raises(BadInput, match="not a symlink"):
        plan_install(str(path), ceph_dir=str(ceph_dir))
    with pytest.raises(CannotRead, match="no mgr_module.py"):
        plan_install(str(tmp_path / "x"), ceph_dir=str(tmp_path))
    (ceph_dir / "ctguard").mkdir()  # a foreign module of the same name
    with pytest.raises(BadInput, match="not a ctguard mgr module"):
        plan_install(None, ceph_dir=str(ceph_dir), into_ceph_dir=True)


def test_into_ceph_dir_adds_only_the_module(ceph_dir: Path) -> None:
    before = sorted(os.listdir(ceph_dir))
    plan = plan_install(None, ceph_dir=str(ceph_dir), into_ceph_dir=True)
    assert [(s.action, s.path) for s in plan.steps] == [("copy", str(ceph_dir / "ctguard"))]
    apply_install(plan)
    assert sorted(os.listdir(ceph_dir)) == sorted([*before, "ctguard"])
    assert plan_install(None, ceph_dir=str(ceph_dir), into_ceph_dir=True).changes == []
    assert not (ceph_dir / MANIFEST).exists()


def test_cli_plan_apply_json_and_exit_codes(tmp_path: Path, ceph_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    r = CliRunner()
    path = str(tmp_path / "mods")
    base = ["mgr", "install", "--path", path, "--ceph-dir", str(ceph_dir)]
    res = r.invoke(cli, base)
    assert res.exit_code == 1 and "nothing written: run again with --apply" in res.output
    assert "link   4 entries of" in res.output and not os.path.exists(path)
    res = r.invoke(cli, [*base, "--configure"])
    assert res.exit_code == 3 and "together with --apply" in res.output
    calls: list[list[str]] = []

    def fake_run(argv: list[str], timeout: float, **kw: Any) -> Completed:
        calls.append(list(argv))
        return Completed(tuple(argv), 0, "", "")

    monkeypatch.setattr("ctguard.cli.mgr.run", fake_run)
    res = r.invoke(cli, [*base, "--apply", "--configure", "--json", "--ceph-cmd", "ceph -c /etc/ceph/x.conf"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["schema"] == 1 and doc["applied"] is True and len(doc["done"]) == 6
    assert doc["configured"] == [f"ceph config set mgr mgr_module_path {path}"]
    assert calls == [["ceph", "-c", "/etc/ceph/x.conf", "--connect-timeout", "20", "config", "set", "mgr",
                      "mgr_module_path", path]]
    res = r.invoke(cli, base)
    assert res.exit_code == 0 and "unchanged: 5 entries" in res.output
    res = r.invoke(cli, ["mgr", "install", "--path", str(ceph_dir), "--ceph-dir", str(ceph_dir)])
    assert res.exit_code == 3 and res.output.count("\n") == 1  # one line, no traceback
    res = r.invoke(cli, ["mgr", "path"])
    assert res.exit_code == 0 and res.output.strip() == module_source()


def test_a_path_the_ceph_user_cannot_traverse_is_noted(ceph_dir: Path) -> None:
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="ctguard-mgr-", dir="/tmp"))  # pytest's own tmp root is 0700
    try:
        top.chmod(0o755)
        closed = top / "closed"
        closed.mkdir()
        closed.chmod(0o700)
        plan = plan_install(str(closed / "mods"), ceph_dir=str(ceph_dir))
        assert [n for n in plan.notes if "not searchable" in n] == [
            f"{closed} is not searchable by other users: a ceph-mgr running as user ceph cannot read the modules "
            "(chmod o+x it or pick another --path)"]
        closed.chmod(0o755)
        plan = plan_install(str(closed / "mods"), ceph_dir=str(ceph_dir))
        assert not any("not searchable" in n for n in plan.notes)
    finally:
        shutil.rmtree(top)
