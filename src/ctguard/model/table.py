"""A fluid model of one host's nf_conntrack table (one network namespace), as the kernel behaves on 6.x.

Entries are tracked as cohorts (how many, which class, when they expire) rather than one by one, so a
1,000-host what-if runs in seconds. What the kernel does, and where we know it from:

* A new entry beyond ``nf_conntrack_max`` first tries ``early_drop()``: it scans 8 hash buckets and evicts
  one entry that is not ASSURED (expired ones it meets are freed too); only if that fails is the packet
  dropped ("table full, dropping packet", counter ``drop``) — torvalds/linux net/netfilter/nf_conntrack_core.c
  ``__nf_conntrack_alloc``/``early_drop_list``. ASSURED entries (every completed TCP handshake, also in
  TIME_WAIT) are never evicted synchronously (kernel-conntrack.md §2.3, §3.2).
* Entries that expired stay counted until the GC worker meets them (kernel-conntrack.md §3.1, §6b: count
  stayed high 30-60 s after expiry). The worker's passes come on one ~61.6 s cycle (measured, §6b).
* After a drop the worker runs in early-drop mode: on its next pass, while the count is at or above 95 % of
  the max, it kills entries that are not ASSURED or are TCP in a closing state (TIME_WAIT, CLOSE, FIN_WAIT,
  LAST_ACK, CLOSE_WAIT: ``tcp_can_early_drop``) — ``gc_worker``/``gc_worker_can_early_drop``. Every lab
  overflow ended at such a pass, 10-82 s after it began (§6b).
* A purge from user space (``ctguard purge``: delete closing states) frees them at once.
* Lowering a timeout does not shorten entries that exist (§3.1): each cohort keeps the expiry it was
  given when it was created.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

# Kernel defaults (Documentation/networking/nf_conntrack-sysctl.rst; anchors-features.md §6), seconds.
DEFAULT_TIMEOUTS: dict[str, int] = {
    "tcp_timeout_established": 432000,
    "tcp_timeout_syn_sent": 120,
    "tcp_timeout_syn_recv": 60,
    "tcp_timeout_fin_wait": 120,
    "tcp_timeout_close_wait": 60,
    "tcp_timeout_last_ack": 30,
    "tcp_timeout_time_wait": 120,
    "tcp_timeout_close": 10,
}

GC_CYCLE_S = 61.6  # measured on 6.18: passes on one ~61.6 s cycle shared by all namespaces (§6b)
EARLY_DROP_PCT = 95  # gc_worker: nf_conntrack_max / 100 * 95
EVICTION_BUCKETS = 8  # NF_CT_EVICTION_RANGE


@dataclass(frozen=True)
class Timeouts:
    """The TCP timeouts the model uses (seconds), as the sysctls name them without the prefix."""

    established: int = 432000
    syn_sent: int = 120
    time_wait: int = 120
    close: int = 10
    close_wait: int = 60
    fin_wait: int = 120
    last_ack: int = 30

    @classmethod
    def from_sysctl(cls, values: dict[str, int]) -> Timeouts:
        """From `conntrack_settings().timeouts` (keys like ``tcp_timeout_time_wait``); missing keys keep
        the kernel default."""
        def get(name: str, default: int) -> int:
            v = values.get(f"tcp_timeout_{name}", values.get(f"nf_conntrack_tcp_timeout_{name}", default))
            return int(v)

        return cls(
            established=get("established", cls.established),
            syn_sent=get("syn_sent", cls.syn_sent),
            time_wait=get("time_wait", cls.time_wait),
            close=get("close", cls.close),
            close_wait=get("close_wait", cls.close_wait),
            fin_wait=get("fin_wait", cls.fin_wait),
            last_ack=get("last_ack", cls.last_ack),
        )


class Kind(Enum):
    """Entry classes that behave differently under pressure."""

    OPEN = "established"  # ASSURED, open: never evicted (the 5-day timeout outlives any what-if)
    TIME_WAIT = "time_wait"  # ASSURED closing: only the GC's early-drop pass may evict it
    CLOSE = "close"  # ASSURED, reset (RST) connections: closing, 10 s
    UNASSURED = "unassured"  # refused attempts (SYN answered by RST -> CLOSE), never assured


EVICTABLE_BY_GC = (Kind.UNASSURED, Kind.TIME_WAIT, Kind.CLOSE)


@dataclass(frozen=True)
class TableConfig:
    max: int
    buckets: int | None = None  # None: the kernel's auto-size (= max since 5.15, max_factor 1)
    timeouts: Timeouts = field(default_factory=Timeouts)
    gc_cycle_s: float = GC_CYCLE_S
    gc_phase_s: float = 0.0  # time of the first GC pass after t=0, in [0, gc_cycle_s)
    early_drop_pct: int = EARLY_DROP_PCT
    dump_every_s: float | None = None  # a table dump (conntrack -L, ctguard status --breakdown) frees
    # every expired entry it meets (kernel-conntrack.md §6b); the lab sampled `conntrack -L` every 1 s

    def timeout(self, kind: Kind) -> float:
        if kind is Kind.TIME_WAIT:
            return float(self.timeouts.time_wait)
        if kind is Kind.OPEN:
            return float(self.timeouts.established)
        return float(self.timeouts.close)

    @property
    def chain(self) -> float:
        """Average hash chain length at a full table."""
        b = self.buckets or self.max
        return max(1.0, self.max / max(1, b))


class _Cohort:
    """n entries created uniformly over [t0, t1], so they expire uniformly over [t0+T, t1+T]."""

    __slots__ = ("e0", "e1", "n")

    def __init__(self, e0: float, e1: float, n: float) -> None:
        self.e0, self.e1, self.n = e0, e1, n

    def expired_by(self, t: float) -> float:
        if t >= self.e1:
            return self.n
        if t <= self.e0:
            return 0.0
        return self.n * (t - self.e0) / (self.e1 - self.e0)


@dataclass
class Counters:
    """Cumulative, like the kernel's: `drop` and `early_drop` as in conntrack -S, plus what the GC did."""

    inserted: float = 0.0
    drop: float = 0.0
    early_drop: float = 0.0
    expired_on_insert: float = 0.0  # expired entries early_drop() met and freed
    gc_freed: float = 0.0  # expired entries freed by the GC worker
    gc_early_drop: float = 0.0  # live closing/unassured entries killed by an early-drop pass
    purged: float = 0.0
    removed: float = 0.0  # entries removed by the model's callers (e.g. sessions that closed)


class Table:
    """The mutable engine. Count = live entries + expired ones the GC has not freed yet.

    Conservation: count == initial + inserted - early_drop - gc_freed - gc_early_drop - purged - removed
    at every moment (tested)."""

    def __init__(self, cfg: TableConfig, open_entries: float = 0.0, t0: float = 0.0) -> None:
        self.cfg = cfg
        self.t = t0
        self.open = float(open_entries)
        self.initial = float(open_entries)
        self.cohorts: dict[Kind, deque[_Cohort]] = {k: deque() for k in EVICTABLE_BY_GC}
        self.live: dict[Kind, float] = dict.fromkeys(EVICTABLE_BY_GC, 0.0)
        self._tot = 0.0  # sum of self.live, kept up to date (count is read on every step)
        self.counters = Counters()
        self.early_drop_mode = False
        phase = cfg.gc_phase_s % cfg.gc_cycle_s if cfg.gc_cycle_s > 0 else 0.0
        self.next_gc = t0 + phase if phase > 0 else t0 + cfg.gc_cycle_s
        self.gc_passes: list[float] = []
        self.next_dump = t0 + cfg.dump_every_s if cfg.dump_every_s else math.inf

    # -- reading -------------------------------------------------------------------------------------
    @property
    def count(self) -> float:
        return self.open + self._tot

    def expired(self, t: float | None = None) -> float:
        """Entries past their timeout but still counted (freed by the next GC pass or a dump)."""
        at = self.t if t is None else t
        total = 0.0
        for q in self.cohorts.values():
            for c in q:
                if c.e0 >= at:
                    break
                total += c.expired_by(at)
        return total

    def by_kind(self) -> dict[str, float]:
        out = {Kind.OPEN.value: self.open}
        for k, v in self.live.items():
            out[k.value] = v
        return out

    # -- time ----------------------------------------------------------------------------------------
    def next_event(self) -> float:
        return min(self.next_gc, self.next_dump)

    def advance(self, t: float) -> None:
        """Run the GC passes (and dumps) due up to t (inclusive)."""
        while True:
            g = self.next_gc if self.cfg.gc_cycle_s > 0 else math.inf
            d = self.next_dump
            if min(g, d) > t:
                break
            if g <= d:
                self._gc_pass(g)
                self.next_gc += self.cfg.gc_cycle_s
            else:
                self._free_expired(d)
                self.next_dump += self.cfg.dump_every_s or math.inf
        self.t = max(self.t, t)

    def _gc_pass(self, g: float) -> None:
        self.gc_passes.append(g)
        self._free_expired(g)
        if self.early_drop_mode:
            target = self.cfg.max * self.cfg.early_drop_pct / 100.0
            excess = self.count - target
            if excess > 0:
                self.counters.gc_early_drop += self._evict(excess, EVICTABLE_BY_GC)
            # the kernel clears gc_work->early_drop once a full scan is done
            self.early_drop_mode = False

    def _free_expired(self, g: float) -> None:
        for kind, q in self.cohorts.items():
            freed = 0.0
            while q and q[0].e0 < g:
                c = q[0]
                gone = c.expired_by(g)
                if gone >= c.n - 1e-9:
                    freed += c.n
                    q.popleft()
                else:
                    freed += gone
                    c.n -= gone
                    c.e0 = g
                    break
            self.live[kind] -= freed
            self._tot -= freed
            self.counters.gc_freed += freed

    def _evict(self, n: float, kinds: tuple[Kind, ...]) -> float:
        """Evict up to n entries of the given kinds, oldest (soonest to expire) first."""
        done = 0.0
        for kind in kinds:
            q = self.cohorts[kind]
            while q and done < n - 1e-12:
                c = q[0]
                take = min(c.n, n - done)
                if c.n - take <= 1e-9:
                    take = c.n
                c.n -= take
                done += take
                self.live[kind] -= take
                self._tot -= take
                if c.n <= 0:
                    q.popleft()
                else:
                    # the survivors of a partly evicted cohort keep their later expiries
                    c.e0 = c.e0 + (c.e1 - c.e0) * (take / (take + c.n))
            if done >= n - 1e-12:
                break
        return done

    # -- changes -------------------------------------------------------------------------------------
    def _add(self, kind: Kind, n: float, t0: float, t1: float) -> None:
        if n <= 0:
            return
        if kind is Kind.OPEN:
            self.open += n
            return
        T = self.cfg.timeout(kind)
        q = self.cohorts[kind]
        e0, e1 = t0 + T, max(t1, t0) + T
        if q and abs(q[-1].e0 - e0) < 1e-9 and abs(q[-1].e1 - e1) < 1e-9:
            q[-1].n += n
        elif q and q[-1].e1 <= e0 + 1e-9 and e1 - q[-1].e0 <= 2.0:
            # coalesce into the previous cohort (expiries within 2 s): keeps the queues short
            q[-1].e1 = e1
            q[-1].n += n
        else:
            q.append(_Cohort(e0, e1, n))
        self.live[kind] += n
        self._tot += n

    def insert(self, kind: Kind, n: float, t0: float, t1: float | None = None) -> float:
        """n new entries over [t0, t1]; returns how many were admitted."""
        return self.insert_many([(kind, n)], t0, t1) * n if n > 0 else 0.0

    def insert_many(self, requests: list[tuple[Kind, float]], t0: float, t1: float | None = None) -> float:
        """New entries of several kinds competing for the same free slots over [t0, t1]. Those beyond the
        max try early_drop (evicts an unassured or expired entry found in 8 hash buckets), else they are
        dropped. Returns the admitted fraction, the same for every request (they race for slots)."""
        total = sum(n for _, n in requests if n > 0)
        if total <= 0:
            return 1.0
        t1 = t0 if t1 is None else t1
        free = max(0.0, self.cfg.max - self.count)
        admitted = min(total, free)
        rest = total - admitted
        if rest > 0:
            count = self.count
            unassured = self.live[Kind.UNASSURED]
            expired = self.expired(t1) if count > 0 else 0.0
            evictable = min(count, unassured + expired)
            if evictable > 0 and count > 0:
                f = evictable / count
                k = EVICTION_BUCKETS * self.cfg.chain
                p = 1.0 - (1.0 - f) ** k
                wins = min(rest * p, evictable)
                # expired entries first (freed on sight), then unassured ones
                got = self._evict_expired(wins, t1)
                self.counters.expired_on_insert += got
                if got < wins:
                    killed = self._evict(wins - got, (Kind.UNASSURED,))
                    self.counters.early_drop += killed
                    got += killed
                admitted += got
                rest -= got
            if rest > 1e-9:
                self.counters.drop += rest
                self.early_drop_mode = True
        q = admitted / total
        for kind, n in requests:
            if n > 0:
                self._add(kind, n * q, t0, t1)
        self.counters.inserted += admitted
        return q

    def _evict_expired(self, n: float, t: float) -> float:
        done = 0.0
        for kind, q in self.cohorts.items():
            while q and done < n - 1e-12 and q[0].e0 < t:
                c = q[0]
                gone = min(c.expired_by(t), n - done)
                if gone <= 0:
                    break
                if gone >= c.n - 1e-9:
                    gone = c.n
                done += gone
                self.live[kind] -= gone
                self._tot -= gone
                if gone >= c.n:
                    q.popleft()
                else:
                    frac = gone / c.n
                    c.n -= gone
                    c.e0 = c.e0 + (c.e1 - c.e0) * frac
            if done >= n - 1e-12:
                break
        return done

    def close_open(self, n: float, into: Kind, t0: float, t1: float | None = None) -> float:
        """n open connections close: their entries move to a closing state (count unchanged)."""
        n = min(n, self.open)
        if n <= 0:
            return 0.0
        self.open -= n
        self._add(into, n, t0, t0 if t1 is None else t1)
        return n

    def remove_open(self, n: float) -> float:
        n = min(n, self.open)
        self.open -= n
        self.counters.removed += n
        return n

    def purge(self, kinds: tuple[Kind, ...] = EVICTABLE_BY_GC) -> float:
        """User-space purge of closing/unassured entries (ctguard purge): frees them at once."""
        done = 0.0
        for kind in kinds:
            done += self.live[kind]
            self._tot -= self.live[kind]
            self.live[kind] = 0.0
            self.cohorts[kind].clear()
        self.counters.purged += done
        return done

    def balance(self) -> float:
        """count minus what conservation says it must be (0 up to rounding)."""
        c = self.counters
        expected = (self.initial + c.inserted - c.early_drop - c.expired_on_insert - c.gc_freed - c.gc_early_drop
                    - c.purged - c.removed)
        return self.count - expected

