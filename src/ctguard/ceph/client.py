"""Ceph as a typed client: every call `ceph … -f json` through ctguard.runner.run with a timeout, or the same
command through one librados connection (`ceph.librados`) when the binding is importable.

`argv_prefix` says how to reach the cluster: `["ceph"]` on an admin host, `["ceph", "-c", conf]`, or the lab's
`["ip", "netns", "exec", "cl-mon", "ceph", "-c", conf]`. `--connect-timeout` bounds the connection to the
mon and the runner's timeout bounds the whole call: mgr-served commands (`ok-to-stop`, `pg stat`) hang with
no active mgr instead of failing (ceph-lab.md §2), so the timeout is what turns a hang into an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctguard import runner
from ctguard.ceph.librados import RadosConnection
from ctguard.ceph.parse import (
    ClusterStatus,
    OkToStop,
    OsdDump,
    OsdTree,
    PgSummary,
    parse_ok_to_stop,
    parse_osd_dump,
    parse_osd_tree,
    parse_pg_stat,
    parse_status,
)
from ctguard.errors import BadInput, CommandFailed
from ctguard.runner import Completed, Runner

EBUSY = 16  # errno EBUSY: `ok-to-stop` says no


@dataclass
class CephClient:
    argv_prefix: Sequence[str] = ("ceph",)
    timeout: float = 30.0
    run: Runner = field(default=runner.run)
    rados: RadosConnection | None = None  # when set, commands go through it instead of the CLI

    @property
    def via(self) -> str:
        return "librados" if self.rados is not None else "cli"

    def _call(self, args: Sequence[str], cmd: Mapping[str, Any], *, mgr: bool = False, json_out: bool = True,
              ok_codes: tuple[int, ...] = (0,)) -> Completed:
        """`args`: the CLI's words; `cmd`: the same command as the mon/mgr command table has it (what the CLI
        sends), for librados; `mgr`: served by the mgr, not the mon."""
        if self.rados is not None:
            done = self.rados.call({**cmd, "format": "json"} if json_out else cmd, mgr=mgr, words=args)
        else:
            argv = [*self.argv_prefix, "--connect-timeout", str(max(1, int(self.timeout))), *args]
            if json_out:
                argv += ["-f", "json"]
            done = self.run(argv, timeout=self.timeout)
        if done.returncode not in ok_codes:
            raise CommandFailed(f"ceph {' '.join(args)}: {done.first_error_line()} (rc {done.returncode})")
        return done

    def osd_dump(self) -> OsdDump:
        return parse_osd_dump(self._call(["osd", "dump"], {"prefix": "osd dump"}).stdout)

    def osd_tree(self) -> OsdTree:
        return parse_osd_tree(self._call(["osd", "tree"], {"prefix": "osd tree"}).stdout)

    def pg_stat(self) -> PgSummary:
        return parse_pg_stat(self._call(["pg", "stat"], {"prefix": "pg stat"}, mgr=True).stdout)

    def status(self) -> ClusterStatus:
        return parse_status(self._call(["-s"], {"prefix": "status"}).stdout)

    def ok_to_stop(self, ids: Sequence[int], max_osds: int | None = None) -> OkToStop:
        """Ask the mgr whether stopping `ids` keeps every PG active. With `max_osds`, Ceph grows the set up to
        that many OSDs that can stop together (same failure domain). EBUSY (rc 16) is an answer, not an error."""
        args = ["osd", "ok-to-stop", *(str(i) for i in ids)]
        cmd: dict[str, Any] = {"prefix": "osd ok-to-stop", "ids": [str(i) for i in ids]}
        if max_osds is not None and max_osds > 1:
            args += ["--max", str(max_osds)]
            cmd["max"] = max_osds
        done = self._call(args, cmd, mgr=True, ok_codes=(0, EBUSY))
        return parse_ok_to_stop(done.stdout, done.stderr, done.returncode)

    def flags(self) -> frozenset[str]:
        return self.osd_dump().flags

    def set_flag(self, flag: str) -> None:
        # prints "noout is set" on stderr, nothing on stdout, rc 0 (ceph-lab.md §4)
        self._call(["osd", "set", flag], {"prefix": "osd set", "key": flag}, json_out=False)

    def unset_flag(self, flag: str) -> None:
        self._call(["osd", "unset", flag], {"prefix": "osd unset", "key": flag},
                   json_out=False)  # idempotent: rc 0 when already unset

    def orch_daemon_restart(self, name: str) -> None:
        self._call(["orch", "daemon", "restart", name], {"prefix": "orch daemon", "action": "restart", "name": name},
                   mgr=True, json_out=False)


VIAS = ("auto", "cli", "librados")


def client_for(argv: Sequence[str], *, timeout: float, via: str = "auto") -> CephClient:
    """A client that reaches the cluster the way `argv` (a `ceph` command line) would.

    `librados`: through the binding (a plain `ceph [-c …] [-n …|--id …] [-k …] [--cluster …]` only; anything
    else is BadInput). `auto`: the same when it can (binding importable, plain command, connection made), else the
    CLI, whose own error then says what is wrong. `cli`: always the CLI."""
    from ctguard.ceph.librados import rados_module, target_from_argv

    if via not in VIAS:
        raise BadInput(f"unknown way to reach ceph: {via!r} (one of {', '.join(VIAS)})")
    if via == "cli":
        return CephClient(argv, timeout=timeout)
    target = target_from_argv(argv)
    if target is None:
        if via == "librados":
            raise BadInput("librados needs a plain ceph command: ceph [-c CONF] [-n NAME | --id ID] [-k KEYRING] "
                           f"[--cluster NAME], not {' '.join(argv)!r}")
        return CephClient(argv, timeout=timeout)
    if rados_module() is None:
        if via == "librados":
            raise BadInput("librados: the rados Python binding is not installed (python3-rados)")
        return CephClient(argv, timeout=timeout)
    try:
        conn = RadosConnection(target, timeout)
    except CommandFailed:
        if via == "librados":
            raise
        return CephClient(argv, timeout=timeout)
    return CephClient(argv, timeout=timeout, rados=conn)
