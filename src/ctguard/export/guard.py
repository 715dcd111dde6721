"""`ctguard guard`: purge closing-state entries before the table overflows (--preempt), and at the first drop.

When a table full of ASSURED entries overflows, the kernel only recovers at its next GC pass, which early-drops
TCP entries in closing states (tcp_can_early_drop(): FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE). The
passes come on a ~61.6 s cycle, so the overflow lasts 10-82 s by the luck of timing (kernel-conntrack.md §6b,
measured in the Ceph lab) and OSDs that cannot reconnect within the 20 s heartbeat grace are marked down. The
guard polls the `drop` counter (O(1): one stats message per CPU) at 10 Hz and, at the first drop, runs the
foundation's purge() of the same closing states itself: the lab measured the overflow ending in < 0.4 s.

Pre-emptive mode (`preempt`): the kernel's early-drop pass starts only *after* a drop, so the guard also polls
the fill (nf_conntrack_count of the namespace, a pread of a descriptor opened once inside it) and, while free
entries are below a reserve, purges TIME_WAIT and CLOSE entries as soon as the count grows: the restart burst's
TIME_WAIT half leaves the table before the new connections need its slots. The reserve defaults to the larger
of 1 % of the max and the host's predicted whole-host restart burst: the entries of its local Ceph daemons
(from a breakdown, refreshed every few minutes in a child process) times the burst factor (2: a restart adds
about the daemons' entries again, export/trend.py; the lab measured 1.2-1.4x).

Safety: it deletes only entries in the configured states (closing connections the kernel would drop first
anyway) and optionally only on Ceph ports; at most one purge per `min_interval`; every purge is logged as a
JSON line and accumulated in a state file the exporter exports. It is opt-in: nothing runs it unless asked.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ctguard.errors import BadInput, CannotRead
from ctguard.export.trend import DEFAULT_BURST_FACTOR
from ctguard.kernel.netns import Netns
from ctguard.kernel.nfnetlink import CLOSING_STATES, TCP_STATES
from ctguard.model.breakdown import CEPH_PREFIXES
from ctguard.model.roles import MON, OSD
from ctguard.output import jsonable, rfc3339
from ctguard.statefile import read_json, write_json

SCHEMA = 1
PORT_SCOPES = ("all", "ceph")
MIN_POLL_HZ = 5.0  # the lab's < 0.4 s recovery needs a poll at least every 0.2 s
MIN_PREEMPT_POLL_HZ = 10.0  # a restart adds ~90 entries within ~0.5 s (ceph-lab.md): see them coming
TRIGGERS = ("preempt", "drop")
# Before any drop, only the states of connections that are over at both ends: TIME_WAIT (the closer waits out
# 2 MSL) and CLOSE (after a reset). FIN_WAIT, CLOSE_WAIT and LAST_ACK are closes still under way (CLOSE_WAIT is a
# half-closed connection that may send data for a long time): deleting them makes their next segments new to
# conntrack. Those are left to the purge after a drop, as they are to the kernel's early drop.
PREEMPT_STATES = ("TIME_WAIT", "CLOSE")
RESERVE_FRACTION = 0.01  # the reserve is never below 1 % of the max


@dataclass(frozen=True)
class GuardConfig:
    states: tuple[str, ...] = CLOSING_STATES  # purged after a drop
    preempt_states: tuple[str, ...] = PREEMPT_STATES  # purged before any drop
    ports: str = "all"  # "all" or "ceph" (only entries on Ceph mon/OSD ports)
    poll_hz: float = 10.0
    min_interval: float = 5.0  # at most one purge after drops per this many seconds
    heartbeat: float = 10.0  # rewrite the state file at least this often
    preempt: bool = False  # also purge while free entries are below the reserve, before any drop
    reserve: int | None = None  # fixed reserve (entries); None: max(1 % of max, predicted whole-host burst)
    reserve_fraction: float = RESERVE_FRACTION
    burst_factor: float = DEFAULT_BURST_FACTOR
    preempt_interval: float = 0.5  # at most one pre-emptive purge per this many seconds ...
    preempt_backoff_max: float = 30.0  # ... doubling up to this while purges find nothing to delete

    def __post_init__(self) -> None:
        lo = MIN_PREEMPT_POLL_HZ if self.preempt else MIN_POLL_HZ
        if self.poll_hz < lo or self.poll_hz > 1000:
            raise BadInput(f"poll rate {self.poll_hz:g} Hz out of range ({lo:g}..1000"
                           f"{' with --preempt' if self.preempt else ''})")
        if self.min_interval < 0:
            raise BadInput("min interval must be >= 0")
        if self.ports not in PORT_SCOPES:
            raise BadInput(f"ports must be one of {', '.join(PORT_SCOPES)}, not {self.ports!r}")
        if not self.states or not self.preempt_states:
            raise BadInput("give at least one state to purge")
        for s in (*self.states, *self.preempt_states):
            if s not in TCP_STATES:
                raise BadInput(f"unknown TCP conntrack state {s!r} (one of {', '.join(TCP_STATES)})")
        if "ESTABLISHED" in self.states or "ESTABLISHED" in self.preempt_states:
            # Deleting ESTABLISHED entries of a stateful firewall drops live connections' next packets
            # (policy drop, no entry): never as an automatic reaction.
            raise BadInput("the guard never purges ESTABLISHED entries")
        if self.reserve is not None and self.reserve < 1:
            raise BadInput("the reserve must be >= 1 entry")
        if not 0 <= self.reserve_fraction <= 0.5:
            raise BadInput("the reserve fraction must be within 0..0.5")
        if self.burst_factor < 0:
            raise BadInput("the burst factor must be >= 0")
        if self.preempt_interval < 0.1:
            raise BadInput("the pre-emptive purge interval must be >= 0.1 s")
        if self.preempt_backoff_max < self.preempt_interval:
            raise BadInput("the pre-emptive backoff cap must be >= the pre-emptive interval")


def state_path(state_dir: str, ns: Netns) -> str:
    label = ns.label.replace("/", "_").replace(":", "-")
    return os.path.join(state_dir, f"guard-{label}.json")


# -- the reserve ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reserve:
    """Free entries the guard keeps: below this many, it purges closing states before anything is dropped."""

    entries: int
    floor: int  # ceil(fraction x max)
    burst: int  # predicted whole-host restart burst (0: unknown, no breakdown yet)
    daemon_entries: int  # entries of the local Ceph daemons the burst was predicted from
    daemons: int  # how many local Ceph daemons
    # where the burst came from: "breakdown" (per-daemon counts), "roles" (per-role counts), "floor" (no
    # breakdown yet: the reserve is the floor), "fixed" (--reserve)
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"reserve": self.entries, "floor": self.floor, "predicted_burst": self.burst,
                "daemon_entries": self.daemon_entries, "daemons": self.daemons, "source": self.source}


def compute_reserve(
    limit: int,
    *,
    by_daemon: Iterable[tuple[str, int]] | None = None,
    by_role: Mapping[str, int] | None = None,
    burst_factor: float = DEFAULT_BURST_FACTOR,
    fraction: float = RESERVE_FRACTION,
    fixed: int | None = None,
) -> Reserve:
    """max(ceil(fraction x limit), whole-host burst); a fixed reserve wins over both.

    The whole-host burst is what restarting every local Ceph daemon at once adds: their entries x the burst
    factor (the old connections linger as TIME_WAIT while the new ones are made: export/trend.py, the same
    factor as the exporter's per-OSD headroom). Daemons come from the breakdown's socket attribution
    (`osd.N`, `mon.X`, ...); when it attributed none (no /proc access, a daemon in another PID namespace) the
    entries on Ceph ports by role stand in (they are the same connections seen from the port side)."""
    floor = int(math.ceil(max(0, limit) * fraction))
    if fixed is not None:
        return Reserve(fixed, floor, 0, 0, 0, "fixed")
    ceph = [(n, e) for n, e in (by_daemon or ()) if n.startswith(CEPH_PREFIXES)]
    entries, source = sum(e for _, e in ceph), "breakdown"
    if entries == 0 and by_role:
        entries, source = int(by_role.get(OSD, 0)) + int(by_role.get(MON, 0)), "roles"
    if by_daemon is None and by_role is None:
        source = "floor"
    burst = int(math.ceil(entries * burst_factor))
    return Reserve(max(floor, burst), floor, burst, entries, len(ceph), source)


# -- what the guard did ----------------------------------------------------------------------------------------

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
    preempt: bool = False
    purges_by_trigger: dict[str, int] = field(default_factory=dict)
    freed_by_trigger: dict[str, int] = field(default_factory=dict)  # deleted + expired entries freed
    reserve: dict[str, Any] | None = None  # Reserve.to_json() of the reserve in force
    below_reserve: bool = False  # free < reserve at the last poll
    free: int | None = None  # free entries at the last poll (pre-emptive mode reads the fill)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **{k: jsonable(v) for k, v in self.__dict__.items()}}


def save_state(path: str, st: GuardState) -> None:
    """Atomic replace: the exporter never reads half a file."""
    write_json(path, st.to_json())


def _int_map(v: Any) -> dict[str, int]:
    return {str(k): int(n) for k, n in dict(v or {}).items()}


def load_state(path: str) -> GuardState | None:
    """The guard's state file, None when there is none (no guard running here)."""
    doc = read_json(path, "guard state")
    if doc is None:
        return None
    if doc.get("schema") != SCHEMA:
        raise CannotRead(f"{path}: not a guard state file of schema {SCHEMA}")
    try:
        reserve = doc.get("reserve")
        free = doc.get("free")
        return GuardState(
            netns=str(doc["netns"]), started=float(doc["started"]), updated=float(doc.get("updated", 0)),
            polls=int(doc.get("polls", 0)), drops_seen=int(doc.get("drops_seen", 0)),
            purges=int(doc.get("purges", 0)), purged_entries=int(doc.get("purged_entries", 0)),
            purged_by_state=_int_map(doc.get("purged_by_state")),
            expired_freed=int(doc.get("expired_freed", 0)), rate_limited=int(doc.get("rate_limited", 0)),
            errors=int(doc.get("errors", 0)),
            last_purge=doc.get("last_purge") if isinstance(doc.get("last_purge"), dict) else None,
            preempt=bool(doc.get("preempt", False)),
            purges_by_trigger=_int_map(doc.get("purges_by_trigger")),
            freed_by_trigger=_int_map(doc.get("freed_by_trigger")),
            reserve={str(k): v for k, v in reserve.items()} if isinstance(reserve, dict) else None,
            below_reserve=bool(doc.get("below_reserve", False)),
            free=None if free is None else int(free),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CannotRead(f"{path}: bad guard state ({e})") from e


PurgeFn = Callable[..., Any]  # purge(ns, states=..., ports=...) -> PurgeResult
Emit = Callable[[str, Mapping[str, Any]], None]
# (by_daemon, by_role) of the newest breakdown, or None while there is none; read at every poll, so cheap.
ReserveSource = Callable[[], tuple[list[tuple[str, int]], dict[str, int]] | None]


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


class Guard:
    """The polling loop, with every effect injected (readers, purge, reserve source, clock, sleep, event sink).

    At the first drop: purge (at most once per `min_interval`). With `preempt`, also while free entries are
    below the reserve:
    * purge when the guard first sees free < reserve, and whenever the count has grown since the last purge;
    * after a purge that freed something, purge again at the next turn even without growth: a restart turns
      its daemons' ESTABLISHED entries into TIME_WAIT in place (the count hardly moves) seconds before the new
      processes connect all at once (lab: +95 entries within 100 ms), so the purges follow the closing churn
      until one finds nothing;
    * at most once per `preempt_interval`, and never more than a third of the time (the gap is at least twice
      the last purge's duration: a dump of a full 262,144-entry table takes ~0.5 s of CPU);
    * a purge that found nothing doubles that interval (up to `preempt_backoff_max`): a table that sits just
      below its max full of ESTABLISHED entries must not be dumped twice a second. A purge that freed
      something, or free >= reserve again, resets it."""

    def __init__(
        self,
        ns: Netns,
        config: GuardConfig,
        *,
        read_drops: Callable[[], int],
        purge: PurgeFn,
        emit: Emit,
        read_fill: Callable[[], tuple[int, int]] | None = None,  # (count, limit): needed with preempt
        reserve_source: ReserveSource | None = None,
        state_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if config.preempt and read_fill is None:
            raise BadInput("the pre-emptive guard needs a fill reader")
        self.ns = ns
        self.config = config
        self._read_drops = read_drops
        self._read_fill = read_fill
        self._reserve_source = reserve_source
        self._purge = purge
        self._emit = emit
        self._state_file = state_file
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self.state = GuardState(netns=ns.label, started=wall(), preempt=config.preempt)
        self._last_drops: int | None = None
        self._last_purge_at: float | None = None  # last purge after a drop
        self._last_save = -1e18
        self._limited_reported = False
        self._last_error: str | None = None
        self._last_error_at = -1e18
        # pre-emptive mode
        self.reserve: Reserve | None = None
        self._reserve_key: tuple[int, object] | None = None
        self._ref: int | None = None  # lowest count since the last purge (None: free >= reserve)
        self._pending = False  # a pre-emptive purge is due (at the next turn the rate limit allows)
        self._last_seconds = 0.0  # how long the last purge took
        self._last_preempt_at: float | None = None
        self._interval = config.preempt_interval

    def _save(self, force: bool = False) -> None:
        now = self._clock()
        if self._state_file is None or (not force and now - self._last_save < self.config.heartbeat):
            return
        self.state.updated = self._wall()
        save_state(self._state_file, self.state)
        self._last_save = now

    def _fail(self, e: CannotRead) -> None:
        self.state.errors += 1
        now = self._clock()
        # At 10 Hz a lasting failure (namespace gone, module unloaded) would flood the journal: say it
        # when it changes, and then every 10 s.
        if e.message != self._last_error or now - self._last_error_at >= 10.0:
            self._emit("error", {"netns": self.ns.label, "message": e.message, "errors": self.state.errors})
            self._last_error, self._last_error_at = e.message, now
        self._save()

    def step(self) -> None:
        """One poll: read the drop counter (and the fill when pre-emptive); purge if it is due."""
        try:
            drops = self._read_drops()
            fill = self._read_fill() if self.config.preempt and self._read_fill is not None else None
        except CannotRead as e:
            self._fail(e)
            return
        self._last_error = None
        self.state.polls += 1
        prev, self._last_drops = self._last_drops, drops
        if prev is not None and drops > prev:  # the first reading is the baseline; a reset is not a drop
            self._on_drops(drops - prev, drops, fill)
        elif fill is not None:
            self._preempt(*fill)
        self._save()

    # -- at the first drop --------------------------------------------------------------------------------
    def _on_drops(self, delta: int, drops: int, fill: tuple[int, int] | None) -> None:
        self.state.drops_seen += delta
        now = self._clock()
        if self._last_purge_at is not None and now - self._last_purge_at < self.config.min_interval:
            self.state.rate_limited += 1
            if not self._limited_reported:
                self._emit("rate_limited", {"netns": self.ns.label, "drops": delta,
                                            "next_in_s": round(self.config.min_interval - (now - self._last_purge_at), 3)})
                self._limited_reported = True
            return
        self._limited_reported = False
        self._emit("drop", {"netns": self.ns.label, "drops": delta, "drop_total": drops})
        self._last_purge_at = now
        res = self._run_purge("drop", None if fill is None else max(0, fill[1] - fill[0]))
        if fill is not None:
            self._last_preempt_at = self._clock()  # a pre-emptive purge right after this one would find nothing
            if res is not None:
                self._after_preempt_purge(res, fill[0])

    # -- before any drop ----------------------------------------------------------------------------------
    def _update_reserve(self, limit: int) -> Reserve:
        src = self._reserve_source() if self._reserve_source is not None and self.config.reserve is None else None
        key = (limit, src)
        if self.reserve is None or key != self._reserve_key:
            r = compute_reserve(limit, by_daemon=None if src is None else src[0],
                                by_role=None if src is None else src[1], burst_factor=self.config.burst_factor,
                                fraction=self.config.reserve_fraction, fixed=self.config.reserve)
            self._reserve_key = key
            if r != self.reserve:
                self.reserve = r
                self.state.reserve = r.to_json()
                self._emit("reserve", {"netns": self.ns.label, "limit": limit, **r.to_json()})
        assert self.reserve is not None
        return self.reserve

    def _preempt(self, count: int, limit: int) -> None:
        r = self._update_reserve(limit)
        free = max(0, limit - count)
        self.state.free = free
        if free >= r.entries:
            if self._ref is not None:
                self._emit("reserve_ok", {"netns": self.ns.label, "free": free, "reserve": r.entries})
            self._ref, self._pending, self.state.below_reserve = None, False, False
            self._interval = self.config.preempt_interval
            return
        if self._ref is None:  # just fell below the reserve
            self._emit("below_reserve", {"netns": self.ns.label, "count": count, "limit": limit, "free": free,
                                         "reserve": r.entries})
            self.state.below_reserve = True
            self._ref, self._pending = count, True
        else:
            if count > self._ref:  # growth since the lowest count after the last purge
                self._pending = True
            self._ref = min(self._ref, count)
        if not self._pending:
            return
        now = self._clock()
        gap = max(self._interval, 2.0 * self._last_seconds)
        if self._last_preempt_at is not None and now - self._last_preempt_at < gap:
            return
        self._pending = False
        res = self._run_purge("preempt", free)
        self._last_preempt_at = self._clock()  # the gap runs from the end of the purge
        if res is not None:
            self._after_preempt_purge(res, count)

    def _after_preempt_purge(self, res: Any, count: int) -> None:
        after = _field(res, "count_after")
        self._ref = int(after) if isinstance(after, int) and after > 0 else count
        secs = _field(res, "seconds")
        self._last_seconds = float(secs) if isinstance(secs, (int, float)) else 0.0
        freed = int(_field(res, "deleted", 0) or 0) + int(_field(res, "expired_freed", 0) or 0)
        if freed > 0:
            self._interval = self.config.preempt_interval
            self._pending = True  # closing churn: look again at the next turn
        else:
            self._interval = min(self.config.preempt_backoff_max, self._interval * 2)

    # -- one purge ------------------------------------------------------------------------------------------
    def _run_purge(self, trigger: str, free: int | None) -> Any:
        try:
            states = self.config.preempt_states if trigger == "preempt" else self.config.states
            res = self._purge(self.ns, states=states, ports=self.config.ports)
        except CannotRead as e:
            self.state.errors += 1
            self._emit("error", {"netns": self.ns.label, "message": e.message, "trigger": trigger})
            self._save(force=True)
            return None
        deleted = int(_field(res, "deleted", 0))
        by_state = {str(k): int(v) for k, v in dict(_field(res, "by_state", {}) or {}).items()}
        expired = int(_field(res, "expired_freed", 0) or 0)
        st = self.state
        st.purges += 1
        st.purged_entries += deleted
        st.expired_freed += expired
        st.purges_by_trigger[trigger] = st.purges_by_trigger.get(trigger, 0) + 1
        st.freed_by_trigger[trigger] = st.freed_by_trigger.get(trigger, 0) + deleted + expired
        for k, v in by_state.items():
            st.purged_by_state[k] = st.purged_by_state.get(k, 0) + v
        last = {
            "ts": self._wall(),
            "trigger": trigger,
            "free_before": free,
            "reserve": None if self.reserve is None or not self.config.preempt else self.reserve.entries,
            "matched": _field(res, "matched"),
            "deleted": deleted,
            "missing": _field(res, "missing"),
            "failed": _field(res, "failed"),
            "by_state": by_state,
            "by_role": jsonable(_field(res, "by_role", {}) or {}),
            "expired_freed": expired,
            "count_before": _field(res, "count_before"),
            "count_after": _field(res, "count_after"),
            "seconds": _field(res, "seconds"),
        }
        st.last_purge = last
        self._save(force=True)  # before the log line: whoever reacts to the line finds the file current
        self._emit("purge", {"netns": self.ns.label, **{k: v for k, v in last.items() if k != "ts"},
                             "at": rfc3339(last["ts"])})
        return res

    def run(self, should_stop: Callable[[], bool]) -> GuardState:
        period = 1.0 / self.config.poll_hz
        start: dict[str, Any] = {"netns": self.ns.label, "states": list(self.config.states),
                                 "ports": self.config.ports, "poll_hz": self.config.poll_hz,
                                 "min_interval_s": self.config.min_interval, "preempt": self.config.preempt}
        if self.config.preempt:
            start.update(preempt_states=list(self.config.preempt_states), reserve=self.config.reserve,
                         reserve_fraction=self.config.reserve_fraction,
                         burst_factor=self.config.burst_factor, preempt_interval_s=self.config.preempt_interval)
        self._emit("start", start)
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
                            "purged_entries": self.state.purged_entries,
                            "purges_by_trigger": dict(self.state.purges_by_trigger)})
        return self.state
