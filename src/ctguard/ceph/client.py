"""The `ceph` CLI as a typed client: every call `ceph … -f json` through ctguard.runner.run with a timeout.

`argv_prefix` says how to reach the cluster: `["ceph"]` on an admin host, `["ceph", "-c", conf]`, or the lab's
`["ip", "netns", "exec", "cl-mon", "ceph", "-c", conf]`. `--connect-timeout` bounds the connection to the
mon and the runner's timeout bounds the whole call: mgr-served commands (`ok-to-stop`, `pg stat`) hang with
no active mgr instead of failing (ceph-lab.md §2), so the timeout is what turns a hang into an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ctguard import runner
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
from ctguard.errors import CommandFailed
from ctguard.runner import Completed, Runner

EBUSY = 16  # errno EBUSY: `ok-to-stop` says no


@dataclass
class CephClient:
    argv_prefix: Sequence[str] = ("ceph",)
    timeout: float = 30.0
    run: Runner = field(default=runner.run)

    def _call(self, args: Sequence[str], *, json_out: bool = True, ok_codes: tuple[int, ...] = (0,)) -> Completed:
        argv = [*self.argv_prefix, "--connect-timeout", str(max(1, int(self.timeout))), *args]
        if json_out:
            argv += ["-f", "json"]
        done = self.run(argv, timeout=self.timeout)
        if done.returncode not in ok_codes:
            raise CommandFailed(f"ceph {' '.join(args)}: {done.first_error_line()} (rc {done.returncode})")
        return done

    def osd_dump(self) -> OsdDump:
        return parse_osd_dump(self._call(["osd", "dump"]).stdout)

    def osd_tree(self) -> OsdTree:
        return parse_osd_tree(self._call(["osd", "tree"]).stdout)

    def pg_stat(self) -> PgSummary:
        return parse_pg_stat(self._call(["pg", "stat"]).stdout)

    def status(self) -> ClusterStatus:
        return parse_status(self._call(["-s"]).stdout)

    def ok_to_stop(self, ids: Sequence[int], max_osds: int | None = None) -> OkToStop:
        """Ask the mgr whether stopping `ids` keeps every PG active. With `max_osds`, Ceph grows the set up to
        that many OSDs that can stop together (same failure domain). EBUSY (rc 16) is an answer, not an error."""
        args = ["osd", "ok-to-stop", *(str(i) for i in ids)]
        if max_osds is not None and max_osds > 1:
            args += ["--max", str(max_osds)]
        done = self._call(args, ok_codes=(0, EBUSY))
        return parse_ok_to_stop(done.stdout, done.stderr, done.returncode)

    def flags(self) -> frozenset[str]:
        return self.osd_dump().flags

    def set_flag(self, flag: str) -> None:
        # prints "noout is set" on stderr, nothing on stdout, rc 0 (ceph-lab.md §4)
        self._call(["osd", "set", flag], json_out=False)

    def unset_flag(self, flag: str) -> None:
        self._call(["osd", "unset", flag], json_out=False)  # idempotent: rc 0 when already unset

    def orch_daemon_restart(self, name: str) -> None:
        self._call(["orch", "daemon", "restart", name], json_out=False)
