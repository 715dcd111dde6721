"""Simulate one host's conntrack table through a restart of its OSDs.

The mechanism, explicitly (issue 6; anchors-features.md §0; kernel-conntrack.md §6b; ceph-lab.md §4):

1. Kill: every session of the restarted OSDs closes; its entry turns into TIME_WAIT (120 s, ASSURED) or
   CLOSE (reset, 10 s). Nothing is freed: the count stays, the old set is now "closing".
2. Down: peers and clients knock on a closed port. Each attempt is a new, never-assured entry (SYN answered
   by RST -> CLOSE, 10 s): lossless OSD peers with backoff 0.2 s doubling to 15 s, heartbeat clients every
   6 s (front and back), active lossy clients at once on every fault.
3. Up: the OSD binds again and the whole session set is re-opened within ~1 s: a second, ESTABLISHED set.
   Old + new = the ~2x plateau the lab measured for exactly the TIME_WAIT timeout (plus the GC's lag).
4. Peering: until its PGs are active the OSD does not serve; every active lossy client session faults and
   the client re-opens a *new* connection at once. Each cycle leaves one more TIME_WAIT entry: the loop.
   Peering needs the OSD's own new sessions; while the table drops packets few get through, so peering
   stalls and the loop goes on (what sustained the 2014 incident). Other OSDs of the host that
   stay up re-open part of their OSD<->OSD sessions at every step (new osdmap epochs), so one-by-one can peak
   *higher* than all at once (lab: 2.65x against 2.2-2.4x): a stagger is never assumed to help.
5. Full table: new entries early-drop unassured ones; when none is found the packet is dropped and the GC
   worker's next pass (one ~61.6 s cycle) kills closing entries down to 95 % of the max. Without the loop
   the overflow ends there (10-82 s in the lab, by where in the cycle it began); with the loop the freed
   slots are taken by reconnecting clients at once and the table stays full.
6. The end: an OSD whose peers cannot reach it for the heartbeat grace (20 s) is (wrongly) marked down and
   reasserts itself; an OSD that has not served for ``mon_osd_report_timeout`` (900 s) is marked down for good
   — its clients stop talking to it, the loop stops, the TIME_WAIT entries run out (the incident's ~15 min).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ctguard.model.ceph import CephOptions, HostConns, RestartBehaviour, backoff_attempts
from ctguard.model.table import Kind, Table, TableConfig

STRATEGIES = ("all-at-once", "stagger", "batch", "adaptive")
FINE_DT = 0.5  # seconds per step while the table is at its limit
EPS = 1e-6
ONE = 0.5  # fewer than half a connection still waiting counts as none (the fluid model's tail)


@dataclass(frozen=True)
class Strategy:
    name: str = "all-at-once"
    gap_s: float = 10.0  # between the kills of two steps (stagger, batch); minimum gap for adaptive
    batch: int = 1  # OSDs per step (batch); upper bound for adaptive (0 = no bound)
    target_fill: float = 0.8  # adaptive: start a step only if its predicted burst keeps the table below this

    def label(self) -> str:
        if self.name == "all-at-once":
            return "all OSDs at once"
        if self.name == "stagger":
            return f"one OSD every {self.gap_s:g} s"
        if self.name == "batch":
            return f"{self.batch} OSDs every {self.gap_s:g} s"
        return f"adaptive (predicted burst below {self.target_fill:.0%} of the max, gap >= {self.gap_s:g} s)"


def fixed_schedule(strategy: Strategy, osds: int) -> list[tuple[float, tuple[int, ...]]]:
    """Kill times and OSD indices of each step, for the strategies that do not look at the table."""
    ids = list(range(osds))
    if strategy.name == "all-at-once":
        return [(0.0, tuple(ids))]
    size = 1 if strategy.name == "stagger" else max(1, strategy.batch)
    return [(i * strategy.gap_s, tuple(ids[j:j + size])) for i, j in enumerate(range(0, osds, size))]


@dataclass(eq=False)
class _Osd:
    idx: int
    phase: str = "up"  # up (serving) | down | peering | marked (by the mon, will reassert) | out (for good)
    t_kill: float = 0.0
    t_up: float = 0.0
    need: float = 0.0  # peering seconds needed
    progress: float = 0.0
    live_clients: float = 0.0
    down_clients: float = 0.0  # active clients without a session, retrying their SYN
    pending_infra: float = 0.0
    refused_rate: float = 0.0
    impaired_since: float | None = None
    served_at: float | None = None
    flapped_at: float | None = None  # first time the mon marked it down (it came back: "wrongly marked")
    out_at: float | None = None  # marked down for good
    markdowns: list[float] = field(default_factory=list)


@dataclass
class _Ramp:
    t0: float
    t1: float
    infra: float  # entries per second
    clients: float
    owner: int | None
    races: float = 0.0  # entries per second of sessions opened twice at once: one closes (TIME_WAIT)


@dataclass(frozen=True)
class HostResult:
    baseline: float
    max: int
    peak_entries: float
    peak_t: float
    overflow: bool
    over_limit_s: float
    first_drop_t: float | None
    last_drop_t: float | None
    drops: float
    early_drops: float
    gc_early_drops: float
    recovery_s: float  # first kill -> no more drops and every restarted OSD serving (or marked down)
    settle_s: float | None  # first kill -> count back within 2 % of the baseline
    marked_down: tuple[int, ...]  # OSD indices marked down for good (the loop's end)
    flapped: tuple[int, ...]  # OSD indices wrongly marked down (heartbeat grace) that came back
    markdowns: int  # times the mon marked one of them down (flaps included)
    not_restarted: tuple[int, ...]  # adaptive: OSDs it would not restart (even one does not fit)
    steps: tuple[tuple[float, tuple[int, ...]], ...]
    gc_phase_s: float
    balance: float  # conservation check: count minus what inserted/freed says (0)
    series: tuple[tuple[float, float, float, float, float], ...] = field(default=(), repr=False)
    # (t, count, established, time_wait+close, unassured)


class HostSim:
    """One host, one restart strategy, one GC phase."""

    def __init__(
        self,
        conns: HostConns,
        table: TableConfig,
        strategy: Strategy,
        behaviour: RestartBehaviour | None = None,
        options: CephOptions | None = None,
        *,
        record: bool = False,
        purge_after_s: float | None = None,
        fine_dt: float = FINE_DT,
        other_entries: float = 0.0,
        inherited: tuple[float, float] | None = None,
    ) -> None:
        if strategy.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy.name!r}")
        self.c = conns
        self.cfg = table
        self.s = strategy
        self.b = behaviour or RestartBehaviour()
        self.o = options or CephOptions()
        self.record = record
        self.purge_after_s = purge_after_s
        self.fine_dt = fine_dt
        # other_entries: ASSURED entries that are not Ceph's (other services, the lab's filler): they hold
        # slots for the whole what-if and are never evicted
        self.other = max(0.0, other_entries)
        self.table = Table(table, open_entries=conns.baseline + self.other)
        if inherited is not None and inherited[0] > 0:
            # (entries, seconds ago): sessions with a host that restarted just before, now TIME_WAIT
            n, ago = inherited
            self.table.insert(Kind.TIME_WAIT, n, -ago)
        self.pairs = tuple(conns.local_pairs())
        self.osds = [_Osd(i, live_clients=conns.clients) for i in range(conns.osds)]
        self.ramps: list[_Ramp] = []
        self.active: list[_Osd] = []  # OSDs with something going on (down, peering, retrying)
        self.pending_host = 0.0  # re-opened OSD<->OSD sessions of up OSDs whose SYN was dropped
        self.series: list[tuple[float, float, float, float, float]] = []
        self.peak = self.table.count
        self.peak_t = 0.0
        self.over_s = 0.0
        self.first_drop: float | None = None
        self.last_drop: float | None = None
        self.steps_done: list[tuple[float, tuple[int, ...]]] = []
        self.not_restarted: tuple[int, ...] = ()
        self.purged_at: float | None = None
        self.purges = 0
        if strategy.name == "adaptive":
            self.plan: list[tuple[float, tuple[int, ...]]] = []
            self.remaining = list(range(conns.osds))
        else:
            self.plan = fixed_schedule(strategy, conns.osds)
            self.remaining = []
        self.last_kill = -math.inf

    # -- the pieces of a step --------------------------------------------------------------------------
    def _step_churn(self, ids: tuple[int, ...]) -> float:
        """Entries of the sessions that close when the OSDs `ids` are killed together (a local pair with
        both ends in the step closes once)."""
        sel = set(ids)
        per = len(ids) * self.c.per_osd
        local = sum(self.c.local_per_pair for a, b in self.pairs if a in sel or b in sel)
        return per + local

    def _repeer(self, ids: tuple[int, ...]) -> float:
        """OSD<->OSD sessions the host's staying OSDs re-open at a step: `repeer_fraction` of theirs, in
        proportion to the share of the host's other OSDs the step restarts. Over a whole one-by-one pass
        that is repeer_fraction x the host's OSD<->OSD sessions, whatever the OSD count: what the lab sweep
        measured (one-by-one 2.15-2.8x baseline on 2 to 6 OSDs per host against 2.1-2.4x all at once). The
        mechanism (OSD::maybe_update_heartbeat_peers): the OSDs that pinged the restarted one drop it, fill
        their set to osd_heartbeat_min_peers with another (new connections), and drop that one again when it
        is back; so nothing changes in a cluster of at most min_peers + 1 OSDs."""
        if 0 < self.c.cluster_osds - 1 <= self.o.osd_heartbeat_min_peers:
            # every OSD already pings every other: a restart changes no heartbeat peer set (the lab's 2 x 2
            # one-by-one peaked at 2.48x against 2.32x all at once, its local pair's second churn alone)
            return 0.0
        sel = set(ids)
        up = sum(1 for o in self.osds if o.idx not in sel and o.phase == "up")
        share = len(sel) / max(1, self.c.osds - 1)
        return self.b.repeer_fraction * self.c.osd_osd_per_osd * up * share

    def _refused_rate(self, n_osds: int, down: float) -> float:
        """Attempts per second at the closed ports of n_osds down OSDs (never assured)."""
        active = self.c.clients * self.b.client_active_fraction
        clients = active / self.b.lossy_retry_s
        hb = 2 * self.c.hb_remote / self.o.osd_heartbeat_interval_s
        lossless = (self.c.pg_peers * self.b.lossless_active_fraction
                    * backoff_attempts(down, self.o) / down) if down > 0 else 0.0
        return n_osds * (clients + hb + lossless)

    def predicted_burst(self, k: int) -> float:
        """What a step of k OSDs adds to the count at worst (adaptive strategy, plan): a new session set,
        the repeer churn, the refused attempts while down, and the lossy loop during peering."""
        ids = tuple(range(k))
        churn = self._step_churn(ids)
        active = k * self.c.clients * self.b.client_active_fraction
        need = self.b.peering_s(k * self.c.pgs_per_osd)
        loop = active * need / self.b.lossy_retry_s
        refused = self._refused_rate(k, self.b.downtime_s) * min(self.b.downtime_s, self.cfg.timeouts.close)
        return churn + self._repeer(ids) + loop + refused

    def _kill(self, t: float, ids: tuple[int, ...]) -> None:
        churn = self._step_churn(ids)
        rst = self.b.rst_fraction
        self.table.close_open(churn * (1 - rst), Kind.TIME_WAIT, t)
        self.table.close_open(churn * rst, Kind.CLOSE, t)
        rep = self._repeer(ids)
        if rep > 0:
            self.table.close_open(rep, Kind.TIME_WAIT, t)
            self.ramps.append(_Ramp(t, t + self.b.ramp_s, rep / self.b.ramp_s, 0.0, None))
        sel = set(ids)
        local = sum(self.c.local_per_pair for a, b in self.pairs if a in sel or b in sel)
        # peering work is the PGs of every OSD of the host that is down or peering at the same time
        busy = len(sel | {o.idx for o in self.active if o.phase in ("down", "peering", "marked")})
        need = self.b.peering_s(busy * self.c.pgs_per_osd)
        for i in ids:
            o = self.osds[i]
            o.phase, o.t_kill, o.t_up = "down", t, t + self.b.downtime_s
            o.need, o.progress = need, 0.0
            o.live_clients = o.down_clients = o.pending_infra = 0.0
            o.refused_rate = self._refused_rate(1, self.b.downtime_s)
            o.impaired_since = o.served_at = None
        # the sessions re-open when the OSD is bound again (local pairs: shared by the step)
        per_local = local / len(ids)
        race = self.b.race_fraction * (self.c.osd_osd_per_osd + per_local)
        for i in ids:
            t_up = self.osds[i].t_up
            self.ramps.append(_Ramp(t_up, t_up + self.b.ramp_s,
                                    (self.c.infra_per_osd + per_local) / self.b.ramp_s,
                                    self.c.clients / self.b.ramp_s, i, race / self.b.ramp_s))
        self.steps_done.append((t, ids))
        self.last_kill = t
        self.active = [o for o in self.osds if o.phase != "up" or o.idx in sel
                       or o.pending_infra > EPS or o.down_clients > EPS]

    # -- time ----------------------------------------------------------------------------------------------
    def _next_event(self, t: float, horizon: float) -> float:
        nxt = min(horizon, self.table.next_event())
        if self.plan:
            nxt = min(nxt, self.plan[0][0])
        if self.remaining:
            nxt = min(nxt, max(t + 1.0, self.last_kill + self.s.gap_s))
        for o in self.active:
            if o.phase == "down":
                nxt = min(nxt, o.t_up)
            elif o.phase == "peering":
                if o.progress < o.need:
                    nxt = min(nxt, t + (o.need - o.progress))
                nxt = min(nxt, o.t_up + self.o.mon_osd_report_timeout_s)
                if o.impaired_since is not None:
                    nxt = min(nxt, o.impaired_since + self.o.osd_heartbeat_grace_s)
            elif o.phase == "marked":
                quiet = (self.last_drop or 0.0) + 1.0
                nxt = min(nxt, max(quiet, o.markdowns[-1] + self.b.reassert_s, t + 1e-3))
                nxt = min(nxt, o.t_up + self.o.mon_osd_report_timeout_s)
        for r in self.ramps:
            if r.t0 > t:
                nxt = min(nxt, r.t0)
            elif r.t1 > t:
                nxt = min(nxt, r.t1)
        due = self._purge_due()
        if due is not None:
            nxt = min(nxt, max(due, t + 1e-3))
        return max(nxt, t + 1e-6)

    def _busy(self) -> bool:
        if self.pending_host > ONE:
            return True
        return any(o.pending_infra > ONE or o.down_clients > ONE for o in self.active)

    def _rates(self, t: float) -> float:
        """Entries per second the count grows by right now, if nothing is dropped."""
        r = 0.0
        for ramp in self.ramps:
            if ramp.t0 <= t < ramp.t1:
                r += ramp.infra + ramp.clients
        for o in self.active:
            if o.phase == "down":
                r += o.refused_rate
            elif o.phase == "peering":
                r += o.live_clients * self.b.client_active_fraction / self.b.lossy_retry_s
        return r

    def _integrate(self, a: float, b: float) -> None:
        dt = b - a
        if dt <= 0:
            return
        syn = min(1.0, dt / self.b.syn_retry_s)

        def backoff(o: _Osd | None) -> float:
            # a dropped SYN is retried 1 s later five times, then with doubling waits
            # (tcp_syn_linear_timeouts=4, measured in kernel-conntrack.md §3): demand fades with time
            since = self.first_drop if o is None else o.impaired_since
            tau = 0.0 if since is None else max(0.0, a - since)
            wait = self.b.syn_retry_s if tau < 5.0 else min(tau - 4.0, 32.0)
            return min(1.0, dt / wait)
        requests: list[tuple[Kind, float]] = []
        # (who, what, amount) to settle once the admitted fraction is known
        book: list[tuple[int | None, str, float]] = []
        for ramp in self.ramps:
            lo, hi = max(a, ramp.t0), min(b, ramp.t1)
            if hi > lo:
                n_inf, n_cli = ramp.infra * (hi - lo), ramp.clients * (hi - lo)
                requests.append((Kind.OPEN, n_inf + n_cli))
                book.append((ramp.owner, "infra", n_inf))
                book.append((ramp.owner, "clients", n_cli))
                if ramp.races > 0:
                    # the losing side of a connection race: nobody retries it (the other one won)
                    requests.append((Kind.TIME_WAIT, ramp.races * (hi - lo)))
        if self.pending_host > EPS:
            n = self.pending_host * backoff(None)
            self.pending_host -= n
            requests.append((Kind.OPEN, n))
            book.append((None, "infra", n))
        refused = 0.0
        for o in self.active:
            if o.phase == "down":
                refused += o.refused_rate * dt
                continue
            if o.pending_infra > EPS:
                n = o.pending_infra * backoff(o)
                o.pending_infra -= n
                requests.append((Kind.OPEN, n))
                book.append((o.idx, "infra", n))
            if o.phase == "peering":
                # each active session faults every lossy_retry_s and the client re-opens a new one at once:
                # the old entry turns TIME_WAIT, the new one takes a slot. Over a long drop-free interval
                # that is many cycles (one TIME_WAIT entry more per cycle), over a fine step at most one.
                active = o.live_clients * self.b.client_active_fraction
                faults = active * dt / self.b.lossy_retry_s
                if faults > 0:
                    requests.append((Kind.TIME_WAIT, faults))
                    book.append((o.idx, "faults", faults))
            retry = o.down_clients * syn
            if retry > 0:
                o.down_clients -= retry
                requests.append((Kind.OPEN, retry))
                book.append((o.idx, "clients", retry))
        if refused > 0:
            requests.append((Kind.UNASSURED, refused))
        drops_before = self.table.counters.drop
        q = self.table.insert_many(requests, a, b)
        dropped = self.table.counters.drop - drops_before
        for who, what, n in book:
            ok, lost = n * q, n * (1 - q)
            if who is None:
                self.pending_host += lost
                continue
            o = self.osds[who]
            if what == "infra":
                o.pending_infra += lost
            elif what == "faults":
                # a session whose reconnect was dropped: its old entry is TIME_WAIT, it has no new one
                gone = min(o.live_clients * self.b.client_active_fraction, lost)
                self.table.close_open(gone, Kind.TIME_WAIT, a, b)
                o.live_clients -= gone
                o.down_clients += gone
            elif who is not None and what == "clients":
                o.live_clients += ok
                o.down_clients += lost * self.b.client_active_fraction
                # idle clients whose reconnect was dropped simply wait for their next operation
                o.live_clients += lost * (1 - self.b.client_active_fraction)
        dropping = dropped > 1e-3
        if dropping:
            self.over_s += dt
            if self.first_drop is None:
                self.first_drop = a
            self.last_drop = b
        for o in self.active:
            if o.phase != "peering":
                continue
            if dropping:
                # its own new sessions are among the dropped: peering stalls (it goes on in drop-free
                # stretches, e.g. between purges; none while a loop keeps the table saturated)
                if o.impaired_since is None:
                    o.impaired_since = a
            elif o.pending_infra > ONE:
                o.impaired_since = None  # still reconnecting, but nothing is dropped: no progress yet
            else:
                o.progress += dt
                o.impaired_since = None
        c = self.table.count
        if c > self.peak + 1e-9:
            self.peak, self.peak_t = c, b

    def _events(self, t: float) -> None:
        while self.plan and self.plan[0][0] <= t + 1e-9:
            _, ids = self.plan.pop(0)
            self._kill(t, ids)
        if self.remaining and t >= self.last_kill + self.s.gap_s - 1e-9:
            self._adaptive_step(t)
        for o in self.active:
            if o.phase == "down" and t >= o.t_up - 1e-9:
                o.phase = "peering"
            if o.phase == "peering":
                if o.progress >= o.need - 1e-9 and o.pending_infra <= ONE:
                    o.phase, o.served_at = "up", t
                    o.impaired_since = None
                elif t >= o.t_up + self.o.mon_osd_report_timeout_s - 1e-9:
                    self._out(o, t)
                elif (o.impaired_since is not None
                      and t >= o.impaired_since + self.o.osd_heartbeat_grace_s - 1e-9):
                    self._markdown(o, t)
            elif o.phase == "marked":
                if t >= o.t_up + self.o.mon_osd_report_timeout_s - 1e-9:
                    self._out(o, t)
                elif (t >= o.markdowns[-1] + self.b.reassert_s - 1e-9
                      and (self.last_drop is None or t >= self.last_drop + 1.0 - 1e-9)):
                    # "wrongly marked me down": it boots again once its messages get through; the clients
                    # come back on the new map and it peers again
                    o.phase, o.progress, o.impaired_since = "peering", 0.0, None
                    self.ramps.append(_Ramp(t, t + self.b.ramp_s, 0.0, self.c.clients / self.b.ramp_s, o.idx))
        self.ramps = [r for r in self.ramps if r.t1 > t + 1e-9]
        self._ramps_at_once(t)
        owners = {r.owner for r in self.ramps}
        self.active = [o for o in self.active if o.phase in ("down", "peering", "marked")
                       or o.pending_infra > ONE or o.down_clients > ONE or o.idx in owners]
        due = self._purge_due()
        if due is not None and t >= due - 1e-9:
            self.table.purge()
            self.purged_at = t
            self.purges += 1

    def _purge_due(self) -> float | None:
        """`ctguard purge` of closing states: purge_after_s after the first drop, then again whenever the
        host drops again, at most once a second (as a protection loop would; lab scenario `purge`)."""
        if self.purge_after_s is None or self.first_drop is None:
            return None
        if self.purged_at is None:
            return self.first_drop + self.purge_after_s
        if self.last_drop is not None and self.last_drop > self.purged_at + 1e-9:
            return max(self.purged_at + 1.0, self.last_drop)
        return None

    def _ramps_at_once(self, t: float) -> None:
        """Ramps that begin now, certainly fit and feed no reconnect loop (re-opened OSD<->OSD sessions, idle
        clients) are admitted in one go, ~1 s early (an approximation; the peak moves by a few percent at
        most where a GC pass falls inside the ramp), which saves an event per step. Busy clients' ramps
        stay gradual: each session joins the loop when it re-opens."""
        busy = self.b.client_active_fraction > 0
        due = [r for r in self.ramps if r.t0 <= t + 1e-9 and not (busy and r.clients > 0)]
        if not due:
            return
        total = sum((r.infra + r.clients + r.races) * (r.t1 - max(t, r.t0)) for r in due)
        if self.table.count + total > self.cfg.max - 1.0:
            return
        for r in due:
            span = r.t1 - max(t, r.t0)
            n_inf, n_cli = r.infra * span, r.clients * span
            self.table.insert(Kind.OPEN, n_inf + n_cli, t, r.t1)
            if r.races > 0:
                self.table.insert(Kind.TIME_WAIT, r.races * span, t, r.t1)
            if r.owner is not None:
                self.osds[r.owner].live_clients += n_cli
        done = {id(r) for r in due}
        self.ramps = [r for r in self.ramps if id(r) not in done]
        c = self.table.count
        if c > self.peak + 1e-9:
            self.peak, self.peak_t = c, t

    def _markdown(self, o: _Osd, t: float) -> None:
        """The mon marks o down: its peers could not reach it for the heartbeat grace. Clients stop using it
        (their sessions close), so its share of the reconnect loop stops. osd_max_markdown_count marks
        within osd_max_markdown_period and the OSD shuts itself down."""
        o.markdowns.append(t)
        if o.flapped_at is None:
            o.flapped_at = t
        self.table.close_open(o.live_clients, Kind.TIME_WAIT, t)
        o.live_clients = o.down_clients = 0.0
        o.phase, o.impaired_since = "marked", None
        limit = self.o.osd_max_markdown_count
        recent = [m for m in o.markdowns if m > t - self.o.osd_max_markdown_period_s]
        if limit > 0 and len(recent) >= limit:
            self._out(o, t)

    def _out(self, o: _Osd, t: float) -> None:
        """Marked down for good (report timeout, or it shut itself down after flapping): clients stop talking
        to it, the loop stops."""
        o.phase, o.out_at = "out", t
        self.table.close_open(o.live_clients, Kind.TIME_WAIT, t)
        o.live_clients = o.down_clients = o.pending_infra = 0.0

    def _adaptive_step(self, t: float) -> None:
        # one step at a time: wait until the previous one serves again
        if any(o.phase in ("down", "peering", "marked") for o in self.active) or self._busy():
            return
        room = self.s.target_fill * self.cfg.max - self.table.count
        cap = len(self.remaining) if self.s.batch <= 0 else min(self.s.batch, len(self.remaining))
        k = 0
        for n in range(cap, 0, -1):
            if self.predicted_burst(n) <= room:
                k = n
                break
        if k == 0:
            # nothing fits now; if the table is back at its baseline it never will
            drained = self.table.count <= self.c.baseline * 1.02 + 1 + self.other
            if drained and self.predicted_burst(1) > (self.s.target_fill * self.cfg.max - self.c.baseline
                                                      - self.other):
                self.not_restarted = tuple(self.remaining)
                self.remaining = []
            return
        ids, self.remaining = tuple(self.remaining[:k]), self.remaining[k:]
        self._kill(t, ids)

    def _sample(self, t: float) -> None:
        if not self.record:
            return
        live = self.table.live
        self.series.append((round(t, 3), self.table.count, self.table.open,
                            live[Kind.TIME_WAIT] + live[Kind.CLOSE], live[Kind.UNASSURED]))

    def _quiet(self) -> bool:
        return (not self.plan and not self.remaining and not self.ramps and not self._busy()
                and all(o.phase in ("up", "out") for o in self.active))

    def run(self, max_t: float | None = None) -> HostResult:
        cap = max_t
        if cap is None:
            span = (self.plan[-1][0] if self.plan else 0.0) + self.c.osds * (self.s.gap_s + 60.0)
            cap = span + self.o.mon_osd_report_timeout_s + 3 * self.cfg.timeouts.time_wait + 4 * self.cfg.gc_cycle_s
        t = 0.0
        settle: float | None = None
        quiet_since: float | None = None
        self._sample(0.0)
        while t < cap:
            self.table.advance(t)
            self._events(t)
            self._sample(t)
            if self._quiet():
                if quiet_since is None:
                    quiet_since = t
                if self.table.count <= self.c.baseline * 1.02 + 1 + self.other:
                    settle = t if settle is None else settle
                    break
            else:
                quiet_since = None
            nxt = self._next_event(t, cap)
            near_full = self.table.count >= self.cfg.max - 1.0
            if near_full or self._busy():
                # while the table stays saturated nothing changes between events but the drop count:
                # longer steps (up to 4x) keep a 15-minute loop cheap
                sustained = (self.last_drop is not None and self.last_drop >= t - 1e-9 and not self.ramps
                             and near_full)
                grow = 1.0
                if sustained and self.first_drop is not None:
                    # saturated for long: only the GC passes and the deadlines change anything
                    grow = 10.0 if t - self.first_drop > 60.0 else 4.0
                nxt = min(nxt, t + self.fine_dt * grow)
            else:
                rate = self._rates(t)
                if rate > 0:
                    room = self.cfg.max - self.table.count
                    fill_at = t + room / rate
                    if fill_at < nxt:
                        nxt = max(fill_at, t + 1e-6)
            self._integrate(t, nxt)
            t = nxt
        kills = [s[0] for s in self.steps_done]
        start = kills[0] if kills else 0.0
        served = [o.served_at or o.out_at or start for o in self.osds if o.idx in
                  {i for _, ids in self.steps_done for i in ids}]
        done = max(served + [self.last_drop or start])
        return HostResult(
            baseline=self.c.baseline,
            max=self.cfg.max,
            peak_entries=self.peak,
            peak_t=self.peak_t,
            overflow=self.first_drop is not None,
            over_limit_s=self.over_s,
            first_drop_t=self.first_drop,
            last_drop_t=self.last_drop,
            drops=self.table.counters.drop,
            early_drops=self.table.counters.early_drop,
            gc_early_drops=self.table.counters.gc_early_drop,
            recovery_s=done - start,
            settle_s=(settle - start) if settle is not None else None,
            marked_down=tuple(o.idx for o in self.osds if o.out_at is not None),
            flapped=tuple(o.idx for o in self.osds if o.flapped_at is not None and o.out_at is None),
            markdowns=sum(len(o.markdowns) for o in self.osds),
            not_restarted=self.not_restarted,
            steps=tuple(self.steps_done),
            gc_phase_s=self.cfg.gc_phase_s,
            balance=self.table.balance(),
            series=tuple(self.series),
        )
