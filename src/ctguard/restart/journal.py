"""The restart journal (SQLite) and the per-host run lock, both under the state dir.

Every step is written before it starts (`begin`) and after it ends (`end` or `fail`), in its own committed
transaction, so a run killed at any point (kill -9, power loss) leaves a journal that says exactly which OSD
was in which step. `--resume` reads it back: the plan, whether this run owns the `noout` flag, the OSDs that
are done, and the one that was in flight together with the `up_from` epoch it had before its restart (which
tells a restart that happened from one that did not).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ctguard.errors import CannotRead, CtguardError, Exit

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  started REAL NOT NULL,
  finished REAL,
  status TEXT NOT NULL,          -- running | done | failed | interrupted
  reason TEXT,
  plan TEXT NOT NULL,            -- JSON: [{"host": h, "osds": [ids]}]
  options TEXT NOT NULL,         -- JSON of the options that shape the run
  noout_owned INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS steps (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id INTEGER NOT NULL REFERENCES runs(id),
  ts REAL NOT NULL,
  host TEXT,
  osd INTEGER,
  step TEXT NOT NULL,            -- noout_set | gates | stop | restart | up | pgs | osd | noout_clear | ...
  phase TEXT NOT NULL,           -- begin | end | fail
  data TEXT                      -- JSON
);
CREATE INDEX IF NOT EXISTS steps_run ON steps(run_id, id);
"""

ACTIVE = ("running", "interrupted", "failed")


@dataclass
class RunState:
    """What a journal says about one run: enough to resume it."""

    run_id: int
    status: str
    plan: list[dict[str, Any]]
    options: dict[str, Any]
    noout_owned: bool
    noout_begun: bool = False
    done: set[int] = field(default_factory=set)
    restart_begun: dict[int, int] = field(default_factory=dict)  # osd -> up_from before its restart
    restart_ended: set[int] = field(default_factory=set)
    burst_factors: list[float] = field(default_factory=list)
    reason: str | None = None


class Journal:
    def __init__(self, state_dir: str, clock: Any = time.time, durable: bool = True) -> None:
        if state_dir == ":memory:":  # dry runs: nothing on disk
            self.path = state_dir
        else:
            os.makedirs(state_dir, mode=0o750, exist_ok=True)
            self.path = os.path.join(state_dir, "restart-journal.sqlite")
        self.clock = clock
        try:
            # autocommit: each step is its own durable transaction
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: a step is on disk before the action it announces (tests may trade that for speed)
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise CannotRead(f"{self.path}: {e}") from e

    def close(self) -> None:
        self.db.close()

    def start_run(self, plan: list[dict[str, Any]], options: dict[str, Any]) -> int:
        cur = self.db.execute(
            "INSERT INTO runs(started, status, plan, options) VALUES (?, 'running', ?, ?)",
            (self.clock(), json.dumps(plan), json.dumps(options)),
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def set_status(self, run_id: int, status: str, reason: str | None = None) -> None:
        finished = self.clock() if status in ("done", "failed", "interrupted") else None
        self.db.execute("UPDATE runs SET status=?, reason=?, finished=? WHERE id=?", (status, reason, finished, run_id))

    def set_noout_owned(self, run_id: int, owned: bool) -> None:
        self.db.execute("UPDATE runs SET noout_owned=? WHERE id=?", (int(owned), run_id))

    def step(self, run_id: int, step: str, phase: str, *, host: str | None = None, osd: int | None = None,
             data: dict[str, Any] | None = None) -> None:
        self.db.execute(
            "INSERT INTO steps(run_id, ts, host, osd, step, phase, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, self.clock(), host, osd, step, phase, json.dumps(data or {})),
        )

    def steps(self, run_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT ts, host, osd, step, phase, data FROM steps WHERE run_id=? ORDER BY id", (run_id,)
        ).fetchall()
        return [{"ts": r[0], "host": r[1], "osd": r[2], "step": r[3], "phase": r[4], "data": json.loads(r[5] or "{}")}
                for r in rows]

    def latest_unfinished(self) -> RunState | None:
        row = self.db.execute(
            "SELECT id FROM runs WHERE status IN ('running','interrupted','failed') ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return self.load(int(row[0])) if row else None

    def load(self, run_id: int) -> RunState:
        row = self.db.execute(
            "SELECT status, plan, options, noout_owned, reason FROM runs WHERE id=?", (run_id,)
        ).fetchone()
        if row is None:
            raise CannotRead(f"{self.path}: no run {run_id}")
        st = RunState(run_id, row[0], json.loads(row[1]), json.loads(row[2]), bool(row[3]), reason=row[4])
        for s in self.steps(run_id):
            osd = s["osd"]
            if s["step"] == "osd" and s["phase"] == "end" and osd is not None:
                st.done.add(int(osd))
            elif s["step"] == "restart" and s["phase"] == "begin" and osd is not None:
                st.restart_begun[int(osd)] = int(s["data"].get("up_from", 0))
            elif s["step"] == "restart" and s["phase"] == "end" and osd is not None:
                st.restart_ended.add(int(osd))
            elif s["step"] == "noout_set" and s["phase"] == "begin":
                st.noout_begun = True
            elif s["step"] == "burst" and s["phase"] == "end":
                f = s["data"].get("factor")
                if isinstance(f, int | float):
                    st.burst_factors.append(float(f))
        return st

    def mark_superseded(self, run_id: int) -> None:
        self.set_status(run_id, "superseded", "a new run was started without --resume")


class RunLock:
    """One restart run per host: an flock on `<state_dir>/restart.lock`. The kernel releases it when the
    process dies (kill -9 included), so a crashed run never leaves a stale lock behind."""

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        self.path = os.path.join(state_dir, "restart.lock")
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise CtguardError(f"another ctguard restart is running on this host (pid {holder}, lock {self.path})",
                               Exit.CRIT) from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
