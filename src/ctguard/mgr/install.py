"""Put the ctguard mgr module where a ceph-mgr finds it, without touching Ceph's own files unless asked.

Pacific (16.2.x) loads modules from one directory, the `mgr_module_path` option (default
/usr/share/ceph/mgr), and puts that directory first on the modules' sys.path: `mgr_module.py` and
`mgr_util.py`, which every module imports, must be in it too. The mgr follows symlinks when it probes that
directory (checked on 16.2.15: every `lab up` loads Ceph's modules through them). So the default install
is a module directory of our own (`--path`, default /usr/local/lib/ctguard/mgr-modules): one symlink per entry of
Ceph's directory, plus a copy of the `ctguard` package, and `mgr_module_path` pointed at it (checked on
16.2.15 in the lab: every Ceph module still loads, and `ctguard` is listed and runs). A Ceph upgrade that
adds or removes a module needs the links refreshed: run the install again (the plan shows what changed).

`--into-ceph-dir` instead adds only the `ctguard` directory to Ceph's own module directory (no
mgr_module_path change; a package upgrade leaves it alone, as it is no file of the package).

The plan comes first and nothing is written without `apply`; what was made is recorded in
`<path>/.ctguard-install.json`, so a later run knows which links are its own.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ctguard.errors import BadInput, CannotRead, CommandFailed

CEPH_MGR_DIR = "/usr/share/ceph/mgr"
DEFAULT_PATH = "/usr/local/lib/ctguard/mgr-modules"  # code, not state: not under /var/lib/ctguard
MODULE = "ctguard"
MANIFEST = ".ctguard-install.json"
MODULE_FILES = ("__init__.py", "core.py", "module.py")


def module_source() -> str:
    """The module package shipped inside ctguard (ctguard/mgr_module/ctguard)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mgr_module", MODULE)


@dataclass(frozen=True)
class Step:
    action: str  # "mkdir" | "link" | "relink" | "unlink" | "copy" | "keep"
    path: str
    target: str = ""

    def as_json(self) -> dict[str, str]:
        return {"action": self.action, "path": self.path, "target": self.target}


@dataclass(frozen=True)
class Plan:
    mode: str  # "path" | "ceph-dir"
    path: str  # the directory the mgr loads modules from
    ceph_dir: str
    steps: tuple[Step, ...]
    config: tuple[str, ...]  # ceph commands the operator (or --configure) runs afterwards
    notes: tuple[str, ...] = field(default=())

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if s.action != "keep"]

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "path": self.path, "ceph_dir": self.ceph_dir,
                "module_dir": os.path.join(self.path, MODULE),
                "steps": [s.as_json() for s in self.steps], "changes": len(self.changes),
                "config": list(self.config), "notes": list(self.notes)}


def _module_differs(src: str, dst: str) -> bool:
    if not os.path.isdir(dst) or os.path.islink(dst):
        return True
    for f in MODULE_FILES:
        a, b = os.path.join(src, f), os.path.join(dst, f)
        if not os.path.isfile(b) or not filecmp.cmp(a, b, shallow=False):
            return True
    return False


def plan_install(path: str | None = None, ceph_dir: str = CEPH_MGR_DIR, into_ceph_dir: bool = False,
                 source: str | None = None) -> Plan:
    src = source or module_source()
    if not all(os.path.isfile(os.path.join(src, f)) for f in MODULE_FILES):
        raise CannotRead(f"the ctguard mgr module is missing from {src} (broken ctguard install?)")
    if not os.path.isfile(os.path.join(ceph_dir, "mgr_module.py")):
        raise CannotRead(f"{ceph_dir} holds no Ceph mgr modules (no mgr_module.py): install ceph-mgr, or give "
                         "--ceph-dir (the directory of Ceph's mgr modules)")
    ceph_dir = os.path.realpath(ceph_dir)
    enable = (f"ceph mgr module enable {MODULE}",)
    if into_ceph_dir:
        if path is not None:
            raise BadInput("give either --path or --into-ceph-dir, not both")
        dst = os.path.join(ceph_dir, MODULE)
        if os.path.lexists(dst) and not os.path.isfile(os.path.join(dst, "core.py")):
            raise BadInput(f"{dst} exists and is not a ctguard mgr module: refusing to replace it")
        act = "copy" if _module_differs(src, dst) else "keep"
        return Plan("ceph-dir", ceph_dir, ceph_dir, (Step(act, dst, src),),
                    ("ceph mgr fail   # the active mgr restarts and finds the new module", *enable),
                    ("adds one directory to Ceph's module directory; no file of the ceph packages is changed",))
    path = os.path.abspath(path or DEFAULT_PATH)
    real = os.path.realpath(path)
    if real == ceph_dir or real.startswith(ceph_dir + os.sep):
        raise BadInput(f"--path {path} is Ceph's own module directory: use --into-ceph-dir to write there")
    steps: list[Step] = []
    mine = _manifest_links(path)
    if not os.path.isdir(path):
        if os.path.lexists(path):
            raise BadInput(f"--path {path} exists and is not a directory")
        steps.append(Step("mkdir", path))
    wanted = {n: os.path.join(ceph_dir, n) for n in sorted(os.listdir(ceph_dir))
              if n != MODULE and not n.startswith(".") and n != "__pycache__"}
    for name, target in wanted.items():
        p = os.path.join(path, name)
        if os.path.islink(p):
            steps.append(Step("keep" if os.readlink(p) == target else "relink", p, target))
        elif os.path.lexists(p):
            raise BadInput(f"{p} exists and is not a symlink: refusing to replace it (remove it or pick another "
                           "--path)")
        else:
            steps.append(Step("link", p, target))
    for name in sorted(mine - set(wanted)):
        p = os.path.join(path, name)
        if os.path.islink(p):  # a module Ceph no longer ships: our stale link
            steps.append(Step("unlink", p, os.readlink(p)))
    dst = os.path.join(path, MODULE)
    if os.path.lexists(dst) and not os.path.isfile(os.path.join(dst, "core.py")):
        raise BadInput(f"{dst} exists and is not a ctguard mgr module: refusing to replace it")
    steps.append(Step("copy" if _module_differs(src, dst) else "keep", dst, src))
    notes = [f"links every module of {ceph_dir} (Pacific loads one directory); re-run after a Ceph upgrade"]
    closed = _not_searchable(path)
    if closed:
        notes.append(f"{closed} is not searchable by other users: a ceph-mgr running as user ceph cannot read the "
                     "modules (chmod o+x it or pick another --path)")
    return Plan("path", path, ceph_dir, tuple(steps),
                (f"ceph config set mgr mgr_module_path {path}",
                 "ceph mgr fail   # every mgr reads mgr_module_path when it starts: restart or fail over each",
                 *enable),
                tuple(notes))


def _not_searchable(path: str) -> str | None:
    """The first existing directory on the way to `path` that others cannot traverse (ceph-mgr runs as `ceph`)."""
    d = path
    chain = []
    while True:
        chain.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for d in reversed(chain):
        try:
            mode = os.stat(d).st_mode
        except OSError:
            continue
        if not mode & 0o001:
            return d
    return None


def _manifest_links(path: str) -> set[str]:
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            doc = json.load(f)
        return {str(n) for n in doc.get("links", [])}
    except (OSError, ValueError, AttributeError):
        return set()


def _copy_module(src: str, dst: str) -> None:
    """Copy the package next to `dst` and rename it into place: a mgr starting meanwhile sees the old or the
    new module, never half of one."""
    parent = os.path.dirname(dst)
    tmp = os.path.join(parent, f".{MODULE}.new.{os.getpid()}")
    old = os.path.join(parent, f".{MODULE}.old.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for f in MODULE_FILES:
        shutil.copy2(os.path.join(src, f), os.path.join(tmp, f))
    if os.path.lexists(dst):
        os.rename(dst, old)
    os.rename(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def apply_install(plan: Plan) -> list[Step]:
    """Carry out the plan's changes; returns the steps done. Re-planning afterwards shows only `keep`."""
    done: list[Step] = []
    try:
        for s in plan.steps:
            if s.action == "mkdir":
                os.makedirs(s.path, mode=0o755, exist_ok=True)
            elif s.action == "link":
                os.symlink(s.target, s.path)
            elif s.action == "relink":
                tmp = s.path + ".ctguard-new"
                if os.path.lexists(tmp):
                    os.unlink(tmp)
                os.symlink(s.target, tmp)
                os.replace(tmp, s.path)
            elif s.action == "unlink":
                os.unlink(s.path)
            elif s.action == "copy":
                _copy_module(s.target, s.path)
            else:
                continue
            done.append(s)
    except OSError as e:
        raise CommandFailed(f"mgr install stopped after {len(done)} of {len(plan.changes)} changes: {e}") from e
    if plan.mode == "path":
        links = sorted(os.path.basename(s.path) for s in plan.steps if s.action in ("link", "relink", "keep")
                       and s.target != module_source() and os.path.basename(s.path) != MODULE)
        doc = {"schema": 1, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "ceph_dir": plan.ceph_dir, "links": links, "module": MODULE}
        tmpm = os.path.join(plan.path, MANIFEST + ".tmp")
        with open(tmpm, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.replace(tmpm, os.path.join(plan.path, MANIFEST))
    return done


def config_commands(plan: Plan) -> Sequence[Sequence[str]]:
    """The `ceph` argument lists `--configure` runs (mgr_module_path only: failing over the mgr and
    enabling the module stay the operator's step)."""
    if plan.mode == "path":
        return [["config", "set", "mgr", "mgr_module_path", plan.path]]
    return []
