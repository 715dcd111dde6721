"""Ceph commands through librados, when the `rados` Python binding can be imported.

Why: a `ceph` CLI call is a new Python process that connects to the mon and authenticates, 0.3-0.6 s each, and a
gated restart asks `ok-to-stop`, `pg stat` and `osd dump` again and again. One librados connection answers each
of those in milliseconds. Where the binding is missing or the connection fails, the CLI does the work.

Finding the binding: the distribution's package (Debian/Ubuntu `python3-rados`, EL `python3-rados`) installs
`rados.cpython-3XY-<arch>.so` for the system Python only; a ctguard installed in a virtualenv cannot see it.
When the plain import fails we look in the system's site directories for a module built for this very
interpreter (same `cache_tag`, e.g. cpython-311), import it from there, and take the directory off `sys.path`
again so nothing else comes from it.

Timeouts: `Rados.mon_command`'s `timeout` argument is ignored by the binding (its docstring says so); the
client's `rados_mon_op_timeout` bounds mon and mgr commands alike (librados RadosClient::mon_command and
::mgr_command wait with it) and `client_mount_timeout` bounds the connect, so a command sent while no mgr is
active fails with ETIMEDOUT instead of hanging (ceph-lab.md §2).
"""

from __future__ import annotations

import errno
import glob
import importlib
import json
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ctguard.errors import BadInput, CommandFailed
from ctguard.runner import Completed

SYSTEM_SITE_DIRS = ("/usr/lib/python3/dist-packages", "/usr/lib64/python3*/site-packages",
                    "/usr/lib/python3*/site-packages")
_MODULE: list[Any] = []
_LOCK = threading.Lock()


def rados_module(search: Sequence[str] = SYSTEM_SITE_DIRS) -> Any:
    """The `rados` module, or None where no binding for this interpreter exists."""
    with _LOCK:
        if _MODULE:
            return _MODULE[0]
        mod = None
        try:
            mod = importlib.import_module("rados")
        except ImportError:
            tag = sys.implementation.cache_tag  # e.g. "cpython-311": the ABI the .so must be built for
            for pattern in search:
                for d in sorted(glob.glob(pattern)):
                    if not glob.glob(os.path.join(d, f"rados.{tag}-*.so")):
                        continue
                    sys.path.append(d)
                    try:
                        mod = importlib.import_module("rados")
                    except ImportError:
                        mod = None
                    finally:
                        sys.path.remove(d)
                    if mod is not None:
                        break
                if mod is not None:
                    break
        _MODULE.append(mod)
        return mod


@dataclass(frozen=True)
class Target:
    """How the `ceph` CLI would reach the cluster: the same options, read from `--ceph-cmd`."""

    conffile: str = ""  # "" = the default search ($CEPH_CONF, /etc/ceph/$cluster.conf, ...)
    name: str = "client.admin"
    cluster: str = "ceph"
    keyring: str = ""


def target_from_argv(argv: Sequence[str]) -> Target | None:
    """A plain `ceph [-c CONF] [-n NAME | --id ID] [-k KEYRING] [--cluster C]`, else None (wrappers such as
    `ip netns exec`, `cephadm shell --` or `ssh` need the CLI)."""
    if not argv or os.path.basename(argv[0]) != "ceph":
        return None
    conf, name, cluster, keyring = "", "client.admin", "ceph", ""
    i = 1
    while i < len(argv):
        opt = argv[i]
        key, eq, inline = opt.partition("=")
        if key not in ("-c", "--conf", "-n", "--name", "--id", "--user", "-k", "--keyring", "--cluster"):
            return None
        if eq:
            val = inline
            i += 1
        elif i + 1 < len(argv):
            val = argv[i + 1]
            i += 2
        else:
            return None
        if key in ("-c", "--conf"):
            conf = val
        elif key in ("-n", "--name"):
            name = val
        elif key in ("--id", "--user"):
            name = f"client.{val}"
        elif key in ("-k", "--keyring"):
            keyring = val
        else:
            cluster = val
    return Target(conffile=conf, name=name, cluster=cluster, keyring=keyring)


class RadosConnection:
    """One librados connection for the life of a command; `call` answers like a `ceph … -f json` run."""

    SLACK = 5.0  # seconds past the timeout before a call counts as stuck

    def __init__(self, target: Target, timeout: float, module: Any = None) -> None:
        mod = module if module is not None else rados_module()
        if mod is None:
            raise BadInput("the rados Python binding is not installed (python3-rados)")
        secs = str(max(1, int(timeout)))
        conf: dict[str, str] = {"rados_mon_op_timeout": secs, "client_mount_timeout": secs}
        if target.keyring:
            conf["keyring"] = target.keyring
        self.timeout = timeout
        try:
            self._cluster = mod.Rados(name=target.name, clustername=target.cluster, conffile=target.conffile,
                                      conf=conf)
            if os.environ.get("CEPH_ARGS"):  # the CLI honours it (src/ceph.in); so does this connection
                self._cluster.conf_parse_env()
            self._cluster.connect(timeout=max(1, int(timeout)))
        except mod.Error as e:
            raise CommandFailed(f"librados: cannot connect as {target.name}: {e}") from e
        self._error = mod.Error
        self._stuck = False

    def call(self, cmd: Mapping[str, Any], *, mgr: bool, words: Sequence[str]) -> Completed:
        """`words` only name the command in messages; errors of the binding become a nonzero return code."""
        if self._stuck:
            raise CommandFailed(f"ceph {' '.join(words)} (librados): an earlier call never returned")
        body = json.dumps(dict(cmd))
        send = self._cluster.mgr_command if mgr else self._cluster.mon_command
        got: list[Any] = []

        def work() -> None:
            try:
                got.append(send(body, b""))
            except self._error as e:
                got.append(e)

        # rados_mon_op_timeout should end the call; a thread with a deadline makes sure of it (a stuck call is
        # left behind in a daemon thread and the connection is not used again)
        t = threading.Thread(target=work, name="ctguard-librados", daemon=True)
        t.start()
        t.join(self.timeout + self.SLACK)
        if not got:
            self._stuck = True
            raise CommandFailed(f"ceph {' '.join(words)} (librados): no answer within {self.timeout:g} s")
        if isinstance(got[0], self._error):
            raise CommandFailed(f"ceph {' '.join(words)} (librados): {got[0]}")
        ret, out, outs = got[0]
        text = out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)
        err = outs.decode("utf-8", "replace") if isinstance(outs, bytes) else str(outs)
        if ret < 0:  # as the CLI prints it (src/ceph.in): "Error EBUSY: unsafe to stop osd(s) at this time"
            err = f"Error {errno.errorcode.get(-ret, 'Unknown')}: {err.strip() or os.strerror(-ret)}"
        # librados returns -errno; the CLI exits with errno (EBUSY: 16) and prints "Error EBUSY: ..." the same way
        return Completed(("librados", *words), -ret if ret < 0 else ret, text, err)

    def close(self) -> None:
        try:
            self._cluster.shutdown()
        except self._error:  # pragma: no cover - shutting down a broken connection
            pass
