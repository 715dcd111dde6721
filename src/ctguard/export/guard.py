"""`ctguard guard`: purge closing-state entries the moment the table overflows.

When a table full of ASSURED entries overflows, the kernel only recovers at its next GC pass, which early-drops
TCP entries in closing states (tcp_can_early_drop(): FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE). The
passes come on a ~61.6 s cycle, so the overflow lasts 10-82 s by the luck of timing (kernel-conntrack.md §6b,
measured in the Ceph lab) and OSDs that cannot reconnect within the 20 s heartbeat grace are marked down. The
guard polls the `drop` counter (O(1): one stats message per CPU) at 10 Hz and, at the first drop, runs the
foundation's purge() of the same closing states itself: the lab measured the overflow ending in < 0.4 s.

Safety: it deletes only entries in the configured states (closing connections the kernel would drop first
anyway) and optionally only on Ceph ports; at most one purge per `min_interval`; every purge is logged as a
JSON line and accumulated in a state file the exporter exports. It is opt-in: nothing runs it unless asked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ctguard.errors import BadInput, CannotRead
from ctguard.kernel.netns import Netns
from ctguard.kernel.nfnetlink import CLOSING_STATES, TCP_STATES
from ctguard.output import jsonable, rfc3339
from ctguard.statefile import read_json, write_json

SCHEMA = 1
PORT_SCOPES = ("all", "ceph")
MIN_POLL_HZ = 5.0  # the lab's < 0.4 s recovery needs a poll at least every 0.2 s


@dataclass(frozen=True)
class GuardConfig:
    states: tuple[str, ...] = CLOSING_STATES
    ports: str = "all"  # "all" or "ceph" (only entries on Ceph mon/OSD ports)
    poll_hz: float = 10.0
    min_interval: float = 5.0  # at most one purge per this many seconds
    heartbeat: float = 10.0  # rewrite the state file at least this often

    def __post_init__(self) -> None:
        if self.poll_hz < MIN_POLL_HZ or self.poll_hz > 1000:
            raise BadInput(f"poll rate {self.poll_hz:g} Hz out of range ({MIN_POLL_HZ:g}..1000)")
        if self.min_interval < 0:
            raise BadInput("min interval must be >= 0")
        if self.ports not in PORT_SCOPES:
            raise BadInput(f"ports must be one of {', '.join(PORT_SCOPES)}, not {self.ports!r}")
        if not self.states:
            raise BadInput("give at least one state to purge")
        for s in self.states:
            if s not in TCP_STATES:
                raise BadInput(f"unknown TCP conntrack state {s!r} (one of {', '.join(TCP_STATES)})")
        if "ESTABLISHED" in self.states:
            # Deleting ESTABLISHED entries of a stateful firewall drops live connections' next packets
            # (policy drop, no entry): never as an automatic reaction.
            raise BadInput("the guard never purges ESTABLISHED entries")


def state_path(state_dir: str, ns: Netns) -> str:
    label = ns.label.replace("/", "_").replace(":", "-")
    return os.path.join(state_dir, f"guard-{label}.json")


@dataclass
class GuardState:
    """What the guard has done since it started; written to `guard-<netns>.json` for the exporter."""

    netns: str
    started: float  # epoch seconds
    updated: float = 0.0
    polls: int = 0
    drops_seen: int = 0  # increase of the drop counter seen while running
    purges: int = 0
    purged_entries: int = 0
    purged_by_state: dict[str, int] = field(default_factory=dict)
    expired_freed: int = 0
    rate_limited: int = 0
    errors: int = 0
    last_purge: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **{k: jsonable(v) for k, v in self.__dict__.items()}}


def save_state(path: str, st: GuardState) -> None:
    """Atomic replace: the exporter never reads half a file."""
    write_json(path, st.to_json())


def load_state(path: str) -> GuardState | None:
    """The guard's state file, None when there is none (no guard running here)."""
    doc = read_json(path, "guard state")
    if doc is None:
        return None
    if doc.get("schema") != SCHEMA:
        raise CannotRead(f"{path}: not a guard state file of schema {SCHEMA}")
    try:
        return GuardState(
            netns=str(doc["netns"]), started=float(doc["started"]), updated=float(doc.get("updated", 0)),
            polls=int(doc.get("polls", 0)), drops_seen=int(doc.get("drops_seen", 0)),
            purges=int(doc.get("purges", 0)), purged_entries=int(doc.get("purged_entries", 0)),
            purged_by_state={str(k): int(v) for k, v in dict(doc.get("purged_by_state") or {}).items()},
            expired_freed=int(doc.get("expired_freed", 0)), rate_limited=int(doc.get("rate_limited", 0)),
            errors=int(doc.get("errors", 0)),
            last_purge=doc.get("last_purge") if isinstance(doc.get("last_purge"), dict) else None,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CannotRead(f"{path}: bad guard state ({e})") from e


PurgeFn = Callable[..., Any]  # purge(ns, states=..., ports=...) -> PurgeResult
Emit = Callable[[str, Mapping[str, Any]], None]


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


class Guard:
    """The polling loop, with every effect injected (drop reader, purge, clock, sleep, event sink)."""

    def __init__(
        self,
        ns: Netns,
        config: GuardConfig,
        *,
        read_drops: Callable[[], int],
        purge: PurgeFn,
        emit: Emit,
        state_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.ns = ns
        self.config = config
        self._read_drops = read_drops
        self._purge = purge
        self._emit = emit
        self._state_file = state_file
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self.state = GuardState(netns=ns.label, started=wall())
        self._last_drops: int | None = None
        self._last_purge_at: float | None = None
        self._last_save = -1e18
        self._limited_reported = False
        self._last_error: str | None = None
        self._last_error_at = -1e18

    def _save(self, force: bool = False) -> None:
        now = self._clock()
        if self._state_file is None or (not force and now - self._last_save < self.config.heartbeat):
            return
        self.state.updated = self._wall()
        save_state(self._state_file, self.state)
        self._last_save = now

    def step(self) -> None:
        """One poll: read the drop counter; purge if it rose and the rate limit allows."""
        try:
            drops = self._read_drops()
        except CannotRead as e:
            self.state.errors += 1
            now = self._clock()
            # At 10 Hz a lasting failure (namespace gone, module unloaded) would flood the journal: say it
            # when it changes, and then every 10 s.
            if e.message != self._last_error or now - self._last_error_at >= 10.0:
                self._emit("error", {"netns": self.ns.label, "message": e.message, "errors": self.state.errors})
                self._last_error, self._last_error_at = e.message, now
            self._save()
            return
        self._last_error = None
        self.state.polls += 1
        prev, self._last_drops = self._last_drops, drops
        if prev is None or drops <= prev:  # first reading is the baseline; a reset is not a drop
            self._save()
            return
        delta = drops - prev
        self.state.drops_seen += delta
        now = self._clock()
        if self._last_purge_at is not None and now - self._last_purge_at < self.config.min_interval:
            self.state.rate_limited += 1
            if not self._limited_reported:
                self._emit("rate_limited", {"netns": self.ns.label, "drops": delta,
                                            "next_in_s": round(self.config.min_interval - (now - self._last_purge_at), 3)})
                self._limited_reported = True
            self._save()
            return
        self._limited_reported = False
        self._emit("drop", {"netns": self.ns.label, "drops": delta, "drop_total": drops})
        self._last_purge_at = now
        try:
            res = self._purge(self.ns, states=self.config.states, ports=self.config.ports)
        except CannotRead as e:
            self.state.errors += 1
            self._emit("error", {"netns": self.ns.label, "message": e.message})
            self._save(force=True)
            return
        deleted = int(_field(res, "deleted", 0))
        by_state = {str(k): int(v) for k, v in dict(_field(res, "by_state", {}) or {}).items()}
        freed = int(_field(res, "expired_freed", 0) or 0)
        self.state.purges += 1
        self.state.purged_entries += deleted
        self.state.expired_freed += freed
        for k, v in by_state.items():
            self.state.purged_by_state[k] = self.state.purged_by_state.get(k, 0) + v
        last = {
            "ts": self._wall(),
            "matched": _field(res, "matched"),
            "deleted": deleted,
            "missing": _field(res, "missing"),
            "failed": _field(res, "failed"),
            "by_state": by_state,
            "by_role": jsonable(_field(res, "by_role", {}) or {}),
            "expired_freed": freed,
            "count_before": _field(res, "count_before"),
            "count_after": _field(res, "count_after"),
            "seconds": _field(res, "seconds"),
        }
        self.state.last_purge = last
        self._save(force=True)  # before the log line: whoever reacts to the line finds the file current
        self._emit("purge", {"netns": self.ns.label, **{k: v for k, v in last.items() if k != "ts"},
                             "at": rfc3339(last["ts"])})

    def run(self, should_stop: Callable[[], bool]) -> GuardState:
        period = 1.0 / self.config.poll_hz
        self._emit("start", {"netns": self.ns.label, "states": list(self.config.states),
                             "ports": self.config.ports, "poll_hz": self.config.poll_hz,
                             "min_interval_s": self.config.min_interval})
        self._save(force=True)
        next_at = self._clock()
        while not should_stop():
            self.step()
            next_at += period
            delay = next_at - self._clock()
            if delay > 0:
                self._sleep(delay)
            else:
                next_at = self._clock()  # fell behind (a purge took long): don't burst to catch up
        self._save(force=True)
        self._emit("stop", {"netns": self.ns.label, "purges": self.state.purges,
                            "purged_entries": self.state.purged_entries})
        return self.state
