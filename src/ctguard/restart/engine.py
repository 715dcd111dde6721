"""The restart engine: roll a plan host after host, each batch behind its gates, every step journaled.

Per batch (one host at a time; a batch is one or more OSDs of that host):
  1. settle: the drop counter has not moved and the entry count has stopped climbing for `settle` seconds
     (the previous restart's burst has landed: this is the adaptive gap);
  2. Ceph `osd ok-to-stop FIRST --max N` (EBUSY exit 16: retry with backoff up to a bound);
  3. headroom on live entries (expired ones freed by a dump): free >= sum of the batch's predicted bursts +
     reserve, the predicted burst of an OSD being its current entries x the burst factor (2.0 until this run
     has measured one). Short: purge closing-state entries (TIME_WAIT, CLOSE), then wait for entries to
     expire; the batch is the longest prefix of what ok-to-stop allowed that fits;
  4. restart through the backend; then wait until each OSD is up in the OSD map with a newer `up_from`, and
     until every PG is active again; meanwhile sample the table (peak -> measured burst factor), purge when
     free entries fall below the batch's predicted burst, and watch the drop counter.
Drops after the first restart of the run: purge at once, start nothing more, wait for the OSDs in flight to
come back and the PGs to be active, then stop with exit 2 and the reason.
SIGINT/SIGTERM (request_stop): the step under way finishes, nothing new starts, exit 130; `--resume` goes on.
`noout` is set for the run unless it was already set, and cleared at the end, on failure and on interrupt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ctguard.ceph.client import CephClient
from ctguard.ceph.parse import OkToStop
from ctguard.errors import CtguardError, Exit
from ctguard.restart.backends import Backend
from ctguard.restart.gates import GateSource, Reading
from ctguard.restart.journal import Journal, RunState
from ctguard.restart.plan import Plan

Emit = Callable[[str, dict[str, Any]], None]

# Lab-measured (ceph-lab.md §4): ~45 entries per OSD in steady state on a 12-OSD/3-host cluster; rounded up.
# Used only when the source cannot say how many entries an OSD holds.
DEFAULT_OSD_ENTRIES = 64


@dataclass
class Options:
    burst_factor: float = 2.0  # start value until measured (lab: a host peaks at 2.2-2.4x its baseline)
    osd_entries: int | None = None  # override the per-OSD entries estimate
    # entries kept free beyond the predicted burst, for unrelated traffic during the restart window;
    # 0 = max(16, limit / 10000): 26 at the default 262144. Small on purpose: the burst prediction (2x until
    # measured, the lab measured 1.3-1.8x per OSD) carries the slack, and closing entries are purged at
    # once in the window if the table gets short anyway.
    reserve: int = 0
    settle: float = 3.0  # seconds the drop counter (and the count) must be still before a batch
    poll: float = 0.5  # table sampling period while a batch restarts
    ceph_poll: float = 1.0  # Ceph polling period
    gate_poll: float = 2.0  # headroom re-check period while waiting for entries to expire
    live_every: float = 5.0  # while short, at most one table dump (purge or plain) this often
    max_parallel: int = 0  # 0: as many OSDs of a host as ok-to-stop and headroom allow
    ok_to_stop_timeout: float = 300.0
    ok_to_stop_backoff: tuple[float, float] = (2.0, 30.0)  # first and largest retry delay
    gate_timeout: float = 900.0
    up_timeout: float = 300.0
    pg_timeout: float = 600.0
    clean_timeout: float = 600.0
    wait_clean: bool = True
    set_noout: bool = True
    purge: bool = True
    recovery_timeout: float = 300.0  # after drops: how long to wait for the in-flight OSDs and PGs

    def journal_view(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok_to_stop_backoff"] = list(self.ok_to_stop_backoff)
        return d


class Abort(CtguardError):
    """The run stops safely: nothing new is started; the reason goes to the user and the journal."""

    exit_code = Exit.CRIT


class Interrupted(CtguardError):
    exit_code = Exit.INTERRUPTED


@dataclass
class Result:
    exit_code: int
    reason: str
    run_id: int
    restarted: list[int] = field(default_factory=list)
    seconds: float = 0.0
    waited: dict[str, float] = field(default_factory=dict)
    burst_factor: float = 0.0
    drops: int = 0


@dataclass
class _Window:
    """Samples of one host's table taken while a batch restarts."""

    before: Reading
    peak: int
    drops0: int
    purged: int = 0
    last_purge: float = -1e9


class Engine:
    def __init__(
        self,
        plan: Plan,
        ceph: CephClient,
        backend: Backend,
        source: GateSource,
        journal: Journal,
        options: Options | None = None,
        emit: Emit | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.plan = plan
        self.ceph = ceph
        self.backend = backend
        self.source = source
        self.journal = journal
        self.opt = options or Options()
        self._emit = emit or (lambda e, f: None)
        self.clock = clock
        self.sleep = sleep
        self.stop_reason: str | None = None
        self.run_id = 0
        self.noout_owned = False
        self.factors: list[float] = []
        self.restarted: list[int] = []
        self.started_any = False
        self.drops_baseline: dict[str, int] = {}
        self.waited: dict[str, float] = {"settle": 0.0, "ok_to_stop": 0.0, "headroom": 0.0, "recovery": 0.0}
        self.done: set[int] = set()
        self.resume_state: RunState | None = None
        self._live: dict[str, Reading] = {}  # last dump per host: per-OSD entries
        self._quiet: dict[str, tuple[float, int, int]] = {}  # host -> (still since, drops, entries)

    # -- small helpers ---------------------------------------------------------------------------------------
    def emit(self, event: str, **fields: Any) -> None:
        self._emit(event, fields)

    def request_stop(self, why: str = "interrupted") -> None:
        """Called from a signal handler: finish the current step, start nothing new."""
        if self.stop_reason is None:
            self.stop_reason = why

    def _check_stop(self) -> None:
        if self.stop_reason is not None:
            self.emit("interrupt", reason=self.stop_reason)
            raise Interrupted(f"{self.stop_reason}: stopped cleanly before starting another restart")

    def _step(self, step: str, phase: str, host: str | None = None, osd: int | None = None, **data: Any) -> None:
        self.journal.step(self.run_id, step, phase, host=host, osd=osd, data=data)

    @property
    def factor(self) -> float:
        return max(self.factors) if self.factors else self.opt.burst_factor

    def _reserve(self, r: Reading) -> int:
        return self.opt.reserve if self.opt.reserve > 0 else max(16, r.limit // 10000)

    def osd_entries(self, r: Reading, osd: int, host_osds: int) -> int:
        if self.opt.osd_entries is not None:
            return self.opt.osd_entries
        if osd in r.daemon_entries:
            return max(1, r.daemon_entries[osd])
        if r.osd_role_entries is not None and host_osds > 0:
            return max(1, -(-r.osd_role_entries // host_osds))
        return DEFAULT_OSD_ENTRIES

    def predicted(self, r: Reading, osds: Sequence[int], host_osds: int) -> dict[int, int]:
        f = self.factor
        return {o: int(round(self.osd_entries(r, o, host_osds) * f)) for o in osds}

    def _host_osd_count(self, host: str) -> int:
        for h in self.plan.hosts:
            if h.host == host:
                return len(h.osds)
        return 1

    # -- the run ---------------------------------------------------------------------------------------------
    def run(self, resume: RunState | None = None) -> Result:
        t0 = self.clock()
        self.resume_state = resume
        if resume is not None:
            self.run_id = resume.run_id
            self.noout_owned = resume.noout_owned
            self.done = set(resume.done)
            self.factors = list(resume.burst_factors)
            self.journal.set_status(self.run_id, "running")
            self._step("resume", "end", done=sorted(self.done), in_flight=sorted(resume.restart_begun))
        else:
            self.run_id = self.journal.start_run(self.plan.to_json(), self.opt.journal_view())
        self.emit("plan", run_id=self.run_id, resumed=resume is not None, hosts=self.plan.to_json(),
                  done=sorted(self.done), backend=self.backend.name, burst_factor=self.factor, ceph=self.ceph.via)
        code, reason = Exit.OK, "all OSDs restarted"
        try:
            first = next((h.host for h in self.plan.hosts if any(o not in self.done for o in h.osds)), None)
            if first is not None:  # the settle window can run while noout is being set
                r0 = self.source.read(first)
                self._quiet[first] = (self.clock(), r0.drops, r0.entries)
            self._noout_begin(resumed=resume is not None)
            for hp in self.plan.hosts:
                self._roll_host(hp.host, [o for o in hp.osds if o not in self.done])
                if hp is not self.plan.hosts[-1] and self.opt.wait_clean:
                    self._wait_clean(hp.host)
            if self.opt.wait_clean:
                if not self._wait_clean(None):
                    code, reason = Exit.WARN, (f"all OSDs restarted, but PGs were not all active+clean within "
                                               f"{self.opt.clean_timeout:g} s")
        except Interrupted as e:
            code, reason = Exit.INTERRUPTED, e.message
        except CtguardError as e:
            code, reason = (e.exit_code if e.exit_code != Exit.OK else Exit.CRIT), e.message
        except Exception as e:  # noqa: BLE001 - a bug must still stop cleanly, clear noout and say why
            code, reason = Exit.CRIT, f"unexpected error: {type(e).__name__}: {e}"
        finally:
            noout_problem = self._noout_end()
        if noout_problem and code in (Exit.OK, Exit.WARN):
            code, reason = Exit.CRIT, noout_problem
        elif noout_problem:
            reason += f"; {noout_problem}"
        status = {Exit.OK: "done", Exit.WARN: "done", Exit.INTERRUPTED: "interrupted"}.get(Exit(code), "failed")
        self.journal.set_status(self.run_id, status, reason)
        res = Result(int(code), reason, self.run_id, list(self.restarted), self.clock() - t0, dict(self.waited),
                     self.factor)
        if code in (Exit.OK, Exit.WARN):
            self.emit("done", run_id=self.run_id, exit_code=int(code), reason=reason, restarted=self.restarted,
                      seconds=round(res.seconds, 2), waited={k: round(v, 2) for k, v in self.waited.items()},
                      burst_factor=round(self.factor, 3))
        else:
            self.emit("abort", run_id=self.run_id, exit_code=int(code), reason=reason, restarted=self.restarted,
                      seconds=round(res.seconds, 2), waited={k: round(v, 2) for k, v in self.waited.items()},
                      resumable=True)
        return res

    # -- noout ------------------------------------------------------------------------------------------------
    def _noout_begin(self, resumed: bool) -> None:
        if not self.opt.set_noout:
            return
        flags = self.ceph.flags()
        # a crash between journaling `noout_set begin` and its `end` may or may not have set it: it is ours
        begun = self.resume_state is not None and self.resume_state.noout_begun
        if "noout" in flags:
            if begun and not self.noout_owned:
                self.noout_owned = True
                self.journal.set_noout_owned(self.run_id, True)
            if not self.noout_owned:
                self.emit("noout", action="keep", reason="noout was already set before this run: left as found")
            return
        if resumed and not self.noout_owned and not begun:
            # the original run found noout set by someone else, who has since cleared it: not ours to set
            self.emit("noout", action="keep", reason="noout not ours (it was set before the original run)")
            return
        self._step("noout_set", "begin")
        self.ceph.set_flag("noout")
        self.noout_owned = True
        self.journal.set_noout_owned(self.run_id, True)
        self._step("noout_set", "end")
        self.emit("noout", action="set")

    def _noout_end(self) -> str | None:
        if not self.noout_owned:
            return None
        self._step("noout_clear", "begin")
        last = ""
        for attempt in range(3):
            try:
                self.ceph.unset_flag("noout")
                self._step("noout_clear", "end")
                self.journal.set_noout_owned(self.run_id, False)
                self.noout_owned = False
                self.emit("noout", action="unset")
                return None
            except CtguardError as e:
                last = e.message
                self.sleep(1.0 + attempt)
        self._step("noout_clear", "fail", error=last)
        self.emit("noout", action="unset_failed", error=last)
        return f"could not clear noout ({last}): run `ceph osd unset noout`"

    # -- one host ---------------------------------------------------------------------------------------------
    def _roll_host(self, host: str, remaining: list[int]) -> None:
        if not remaining:
            return
        n_host = self._host_osd_count(host)
        self.emit("host", host=host, osds=remaining)
        first = self._refresh_live(host, remaining)
        self.drops_baseline.setdefault(host, first.drops)
        # an OSD that a crashed run had begun restarting: finish it first
        if self.resume_state is not None:
            in_flight = [o for o in remaining if o in self.resume_state.restart_begun]
            if in_flight:
                self._resume_in_flight(host, in_flight, n_host)
                remaining = [o for o in remaining if o not in self.done]
        while remaining:
            self._check_stop()
            self._settle_gate(host)
            self._check_stop()
            ok_set = self._ok_to_stop_gate(host, remaining)
            self._check_stop()
            batch, reading = self._headroom_gate(host, ok_set, n_host)
            self._check_stop()
            self._restart_batch(host, batch, reading, n_host, restart=set(batch))
            remaining = [o for o in remaining if o not in self.done]

    def _resume_in_flight(self, host: str, osds: list[int], n_host: int) -> None:
        assert self.resume_state is not None
        dump = self.ceph.osd_dump()
        restarted, down = [], []
        for o in osds:
            info = dump.osd(o)
            before = self.resume_state.restart_begun[o]
            if o in self.resume_state.restart_ended or (info.up and info.up_from > before):
                restarted.append(o)  # started (journaled) or already back: verify only
            elif not info.up:
                down.append(o)
        self.emit("resume", host=host, restarted=restarted, down=down,
                  redo=[o for o in osds if o not in restarted and o not in down])
        if restarted or down:
            self._settle_gate(host, allow_drops_before_start=True)
            batch = restarted + down
            reading = self.source.live(host, batch)
            if down:  # killed between stop and start: it needs a start, behind the headroom gate
                _, reading = self._headroom_gate(host, down, n_host, exact=True)
            self._restart_batch(host, batch, reading, n_host, restart=set(down),
                                up_from={o: self.resume_state.restart_begun[o] for o in batch})

    # -- gates ------------------------------------------------------------------------------------------------
    def _settle_gate(self, host: str, allow_drops_before_start: bool = False) -> Reading:
        """Drops still and count not climbing for `settle` seconds. A drop after this run's first restart is
        not waited out: it aborts the run (after recovery)."""
        t0 = self.clock()
        window_start = t0
        r = self.source.read(host)
        drops0, count0 = r.drops, r.entries
        # "stopped climbing": within a host's ordinary churn (0.5 % of its entries, 16..256). The headroom
        # gate, not this one, is what keeps the next burst inside the table.
        tol = max(16, int(0.1 * DEFAULT_OSD_ENTRIES * self.factor), min(256, r.entries // 200))
        anchor = self._quiet.pop(host, None)
        if anchor is not None and r.drops == anchor[1] and r.entries <= anchor[2] + tol:
            window_start, count0 = anchor[0], anchor[2]  # still since an earlier reading: no need to wait again
        announced = False
        deadline = t0 + self.opt.gate_timeout
        while True:
            if r.drops != drops0:
                if self.started_any and not allow_drops_before_start:
                    self._on_drops(host, r, drops0, [])
                drops0, count0, window_start = r.drops, r.entries, self.clock()
            elif r.entries > count0 + tol:
                count0, window_start = r.entries, self.clock()
            elif r.entries < count0:
                count0 = r.entries
            still = self.clock() - window_start
            if still >= self.opt.settle:
                waited = self.clock() - t0
                self.waited["settle"] += waited
                self.emit("gate", gate="settle", host=host, ok=True, waited=round(waited, 2), reading=r.as_json())
                return r
            if self.clock() > deadline:
                raise Abort(f"{host}: conntrack did not settle within {self.opt.gate_timeout:g} s "
                            f"(drops {r.drops}, entries {r.entries}/{r.limit})")
            if not announced and self.clock() - t0 > self.opt.settle + 1:
                announced = True
                self.emit("wait", gate="settle", host=host, reason="drop counter or entry count still moving",
                          reading=r.as_json())
            self._check_stop()
            self.sleep(min(self.opt.poll, max(0.05, self.opt.settle - still)))
            r = self.source.read(host)

    def _ok_to_stop_gate(self, host: str, remaining: list[int]) -> list[int]:
        """`ok-to-stop FIRST --max N`; EBUSY (exit 16) is retried with exponential backoff up to the bound."""
        t0 = self.clock()
        delay, cap = self.opt.ok_to_stop_backoff
        want = len(remaining) if self.opt.max_parallel <= 0 else min(self.opt.max_parallel, len(remaining))
        attempts = 0
        last: OkToStop | None = None
        last_err = ""
        while True:
            attempts += 1
            try:
                last = self.ceph.ok_to_stop([remaining[0]], max_osds=want if want > 1 else None)
                if last.ok:
                    allowed = [o for o in remaining if o in last.osds]
                    if remaining[0] not in allowed:
                        allowed.insert(0, remaining[0])
                    waited = self.clock() - t0
                    self.waited["ok_to_stop"] += waited
                    self.emit("gate", gate="ok_to_stop", host=host, ok=True, osds=allowed, attempts=attempts,
                              waited=round(waited, 2), num_ok_pgs=last.num_ok_pgs)
                    return allowed
                last_err = last.reason or "not ok to stop"
            except CtguardError as e:  # a hung or failing `ceph`: retried like EBUSY, within the same bound
                last_err = e.message
            elapsed = self.clock() - t0
            self.emit("wait", gate="ok_to_stop", host=host, osd=remaining[0], attempt=attempts,
                      reason=last_err, retry_in=round(delay, 2),
                      bad_become_inactive=len(last.bad_become_inactive) if last else None)
            if elapsed + delay > self.opt.ok_to_stop_timeout:
                self.waited["ok_to_stop"] += elapsed
                raise Abort(f"osd.{remaining[0]}: not ok to stop after {attempts} tries in {elapsed:.0f} s "
                            f"({last_err})")
            self._check_stop()
            self.sleep(delay)
            delay = min(cap, delay * 2)

    def _headroom_gate(self, host: str, candidates: list[int], n_host: int,
                       exact: bool = False) -> tuple[list[int], Reading]:
        """The longest prefix of `candidates` whose predicted bursts fit into live free entries + reserve.
        Short: purge closing-state entries, then wait for entries to expire, up to gate_timeout."""
        t0 = self.clock()
        deadline = t0 + self.opt.gate_timeout
        last_announce = -1e9
        purged_total = 0
        live_at = -1e9
        cap = len(candidates) if self.opt.max_parallel <= 0 else min(self.opt.max_parallel, len(candidates))

        def fit(r: Reading) -> tuple[list[int], int, dict[int, int], int]:
            pred = self.predicted(r, candidates, n_host)
            reserve = self._reserve(r)
            batch: list[int] = []
            need = reserve
            for o in candidates[:cap]:
                if need + pred[o] > r.free:
                    break
                need += pred[o]
                batch.append(o)
            if exact and len(batch) < len(candidates):
                batch = []
            return batch, need, pred, reserve

        while True:
            # The cheap count first (a dump of a full table costs seconds): live entries can only be fewer,
            # so if the count fits, so do they. Per-OSD entries come from the last dump of this host.
            r = self._with_daemons(host, self.source.read(host))
            batch, need, pred, reserve = fit(r)
            if not batch and self.clock() - live_at >= self.opt.live_every:
                live_at = self.clock()
                # short: purge closing-state entries; its dump also frees expired-but-counted entries.
                # Without purge (or remotely), a plain dump frees the expired ones.
                p = self.source.purge(host) if self.opt.purge else None
                if p is not None and p.deleted > 0:
                    purged_total += p.deleted
                    self.emit("purge", host=host, why="headroom short", deleted=p.deleted,
                              count_before=p.count_before, count_after=p.count_after,
                              expired_freed=p.expired_freed)
                    # a daemon's count included the closing entries its port still names: those are gone
                    # and do not come back on its restart, so take its entries again
                    r = self._refresh_live(host, candidates)
                elif p is not None:
                    r = self._with_daemons(host, self.source.read(host))
                else:
                    r = self._refresh_live(host, candidates)
                batch, need, pred, reserve = fit(r)
            confirmed, said_no = self._confirm(host, batch, exact)
            if confirmed:
                batch = confirmed
                waited = self.clock() - t0
                self.waited["headroom"] += waited
                self.emit("gate", gate="headroom", host=host, ok=True, batch=batch, need=need, reserve=reserve,
                          predicted={f"osd.{o}": pred[o] for o in batch}, burst_factor=round(self.factor, 3),
                          waited=round(waited, 2), purged=purged_total, reading=r.as_json(),
                          **({"source_confirmed": True} if said_no is not None else {}))
                return batch, r
            first_need = reserve + pred[candidates[0]]
            now = self.clock()
            if now > deadline:
                self.waited["headroom"] += now - t0
                raise Abort(f"{host}: not enough conntrack headroom for osd.{candidates[0]} after "
                            f"{now - t0:.0f} s: need {first_need} free entries (predicted burst "
                            f"{pred[candidates[0]]} + reserve {reserve}), {r.free} free of {r.limit}")
            if now - last_announce >= 10:
                last_announce = now
                self.emit("wait", gate="headroom", host=host, osd=candidates[0], need=first_need,
                          free=r.free, waited=round(now - t0, 1),
                          reason=said_no or (f"free entries {r.free} < predicted burst {pred[candidates[0]]} + "
                                             f"reserve {reserve}: waiting for entries to expire"),
                          reading=r.as_json())
            self._check_stop()
            self.sleep(self.opt.gate_poll)

    def _confirm(self, host: str, batch: list[int], exact: bool) -> tuple[list[int], str | None]:
        """A source that answers for itself (the ctguard mgr module: `ceph ctguard ok-to-restart`) must also
        say yes: the longest prefix of `batch` it accepts ([] and its reason when none). Other sources: the
        batch as it is, reason None."""
        confirm = getattr(self.source, "confirm", None)
        if not batch or confirm is None:
            return batch, None
        reason = ""
        for k in range(len(batch), 0 if not exact else len(batch) - 1, -1):
            ok, reason = confirm(host, batch[:k])
            if ok:
                return batch[:k], ""
        return [], reason

    def _refresh_live(self, host: str, osds: Sequence[int]) -> Reading:
        r = self.source.live(host, osds)
        self._live[host] = r
        if r.expired_freed:
            self.emit("expired_freed", host=host, entries=r.expired_freed)
        return r

    def _with_daemons(self, host: str, r: Reading) -> Reading:
        base = self._live.get(host)
        if base is None or r.daemon_entries:
            return r
        return replace(r, daemon_entries=base.daemon_entries, osd_role_entries=base.osd_role_entries)

    # -- restart + verification -------------------------------------------------------------------------------
    def _sample(self, host: str, w: _Window, guard: int, batch: Sequence[int]) -> Reading:
        r = self.source.read(host)
        # entries purged in this window still belong to the burst: count them back (an over-estimate when
        # the purge also took older closing entries, which errs on the safe side)
        w.peak = max(w.peak, r.entries + w.purged)
        if r.drops != w.drops0:
            self._on_drops(host, r, w.drops0, batch)
        # short = what is left of the batch's predicted burst, plus the reserve, no longer fits
        to_come = max(0, guard - max(0, r.entries + w.purged - w.before.entries))
        if self.opt.purge and r.free < to_come + self._reserve(r) and self.clock() - w.last_purge >= 0.5:
            w.last_purge = self.clock()
            p = self.source.purge(host)
            if p is not None and p.deleted > 0:
                w.purged += p.deleted
                self.emit("purge", host=host, why="free entries below the batch's predicted burst",
                          deleted=p.deleted, count_before=p.count_before, count_after=p.count_after)
        return r

    def _restart_batch(self, host: str, batch: list[int], before: Reading, n_host: int, restart: set[int],
                       up_from: dict[int, int] | None = None) -> None:
        pred = self.predicted(before, batch, n_host)
        guard = sum(pred.values())
        if up_from is None:
            dump = self.ceph.osd_dump()
            up_from = {o: dump.osd(o).up_from for o in batch}
        w = _Window(before, before.entries, before.drops)
        self.emit("batch", host=host, osds=batch, predicted_burst=guard, free=before.free)
        todo = [o for o in batch if o in restart]
        for o in todo:
            self._step("restart", "begin", host, o, up_from=up_from[o], entries=before.entries,
                       daemon_entries=self.osd_entries(before, o, n_host))
        if todo:
            self.started_any = True
        if len(todo) == 1:
            o = todo[0]
            t_stop = self.clock()

            def stopped() -> None:
                self._step("stop", "end", host, o)
                self.emit("stop", host=host, osd=o, backend=self.backend.name)

            try:
                self.backend.restart(o, host, stopped)
            except CtguardError as e:
                self._step("restart", "fail", host, o, error=e.message)
                raise Abort(f"osd.{o}: restart failed: {e.message}") from e
            self._step("restart", "end", host, o)
            self.emit("start", host=host, osd=o, seconds=round(self.clock() - t_stop, 2))
        elif todo:
            self._restart_concurrently(host, todo)
        self._sample(host, w, guard, batch)
        self._wait_up(host, batch, up_from, w, guard)
        self._wait_pgs_active(host, batch, w, guard)
        # let the burst land (count stops climbing) before measuring it: this is also the next batch's gap.
        # After the run's last batch there is no next batch to protect: measure what was seen so far.
        last = all(o in self.done or o in batch for o in self.plan.osds)
        r = self._sample(host, w, guard, batch) if last else self._settle_after(host, w, guard, batch)
        daemon_sum = sum(self.osd_entries(before, o, n_host) for o in batch)
        burst = max(0, w.peak - before.entries)
        if daemon_sum > 0 and restart:
            f = burst / daemon_sum
            self.factors.append(max(1.0, f))
            self._step("burst", "end", host, factor=max(1.0, f), burst=burst, daemon_entries=daemon_sum)
            self.emit("burst", host=host, osds=batch, before=before.entries, peak=w.peak, purged=w.purged,
                      burst=burst, daemon_entries=daemon_sum, measured_factor=round(f, 3),
                      burst_factor=round(self.factor, 3), reading=r.as_json())
        for o in batch:
            self._step("osd", "end", host, o)
            self.done.add(o)
            self.restarted.append(o)

    def _restart_concurrently(self, host: str, todo: list[int]) -> None:
        """A batch's restarts run side by side (a `systemctl restart` waits for the old daemon to exit, seconds
        each); the journal (one SQLite connection) and the events stay in this thread."""
        t0 = self.clock()
        stopped_at: dict[int, float] = {}
        errors: dict[int, str] = {}

        def work(o: int) -> None:
            self.backend.restart(o, host, lambda: stopped_at.__setitem__(o, self.clock()))

        with ThreadPoolExecutor(max_workers=min(len(todo), 16), thread_name_prefix="restart") as ex:
            futures = {o: ex.submit(work, o) for o in todo}
            for o, fut in futures.items():
                try:
                    fut.result()
                except CtguardError as e:
                    errors[o] = e.message
        for o in todo:
            if o in stopped_at:
                self._step("stop", "end", host, o)
                self.emit("stop", host=host, osd=o, backend=self.backend.name)
            if o in errors:
                self._step("restart", "fail", host, o, error=errors[o])
            else:
                self._step("restart", "end", host, o)
                self.emit("start", host=host, osd=o, seconds=round(self.clock() - t0, 2))
        if errors:
            o, msg = next(iter(errors.items()))
            raise Abort(f"osd.{o}: restart failed: {msg}")

    def _wait_up(self, host: str, batch: list[int], up_from: dict[int, int], w: _Window, guard: int) -> None:
        t0 = self.clock()
        pending = list(batch)
        next_ceph = t0
        last_err = ""
        while pending:
            now = self.clock()
            if now >= next_ceph:
                next_ceph = now + self.opt.ceph_poll
                try:
                    dump = self.ceph.osd_dump()
                    for o in list(pending):
                        info = dump.osd(o)
                        if info.up and info.up_from > up_from[o]:
                            pending.remove(o)
                            self._step("up", "end", host, o, up_from=info.up_from)
                            self.emit("up", host=host, osd=o, seconds=round(self.clock() - t0, 2),
                                      epoch=info.up_from)
                except CtguardError as e:  # a hung `ceph` call: keep polling until the deadline
                    if e.message != last_err:
                        self.emit("ceph_error", host=host, error=e.message)
                    last_err = e.message
            if not pending:
                break
            if self.clock() - t0 > self.opt.up_timeout:
                for o in pending:
                    self._step("up", "fail", host, o)
                names = ", ".join(f"osd.{o}" for o in pending)
                raise Abort(f"{names} not up in the OSD map within {self.opt.up_timeout:g} s after restart"
                            + (f" (last ceph error: {last_err})" if last_err else ""))
            self._sample(host, w, guard, batch)
            self.sleep(self.opt.poll)

    def _wait_pgs_active(self, host: str, batch: list[int], w: _Window, guard: int,
                         timeout: float | None = None) -> None:
        """Every PG active (none peering, down, inactive, unknown, stale…) on two polls in a row: the mgr's
        view can still show the pre-restart state for a moment."""
        t0 = self.clock()
        limit = self.opt.pg_timeout if timeout is None else timeout
        streak = 0
        next_ceph = t0
        last = ""
        while True:
            now = self.clock()
            if now >= next_ceph:
                next_ceph = now + self.opt.ceph_poll
                try:
                    pgs = self.ceph.pg_stat()
                    last = pgs.short()
                    streak = streak + 1 if pgs.all_active else 0
                except CtguardError as e:
                    streak, last = 0, e.message
                if streak >= 2:
                    for o in batch:
                        self._step("pgs", "end", host, o)
                    self.emit("pgs", host=host, osds=batch, active=True, states=pgs.states,
                              seconds=round(self.clock() - t0, 2))
                    return
            if self.clock() - t0 > limit:
                raise Abort(f"PGs not all active within {limit:g} s after restarting "
                            f"{', '.join(f'osd.{o}' for o in batch)} ({last})")
            self._sample(host, w, guard, batch)
            self.sleep(self.opt.poll)

    def _settle_after(self, host: str, w: _Window, guard: int, batch: list[int]) -> Reading:
        t0 = self.clock()
        window_start = t0
        r = self._sample(host, w, guard, batch)
        count0 = r.entries
        tol = max(16, guard // 10)
        while self.clock() - window_start < self.opt.settle:
            if self.clock() - t0 > self.opt.gate_timeout:
                break
            self.sleep(self.opt.poll)
            r = self._sample(host, w, guard, batch)
            if r.entries > count0 + tol:
                count0, window_start = r.entries, self.clock()
        self.waited["settle"] += self.clock() - t0
        self._quiet[host] = (window_start, r.drops, count0)  # the next batch's settle gate starts from here
        return r

    def _on_drops(self, host: str, r: Reading, drops0: int, batch: Sequence[int]) -> None:
        """Drops mid-run: purge at once, start nothing more, let what is in flight recover, then abort."""
        new = r.drops - drops0
        self.emit("drops", host=host, new=new, reading=r.as_json())
        self._step("drops", "begin", host, new=new, entries=r.entries)
        purged = 0
        if self.opt.purge:
            p = self.source.purge(host)
            if p is not None:
                purged = p.deleted
                self.emit("purge", host=host, why="drops", deleted=p.deleted, count_before=p.count_before,
                          count_after=p.count_after)
        t0 = self.clock()
        recovered = self._recover(host, list(batch))
        self.waited["recovery"] += self.clock() - t0
        for o in batch:
            if o not in self.done:
                self._step("osd", "end", host, o, after_drops=True)
                self.done.add(o)
                self.restarted.append(o)
        state = "recovered" if recovered else "NOT recovered"
        raise Abort(f"{host}: conntrack dropped {new} packets during the run (purged {purged} closing entries); "
                    f"stopped starting restarts, {state} (OSDs in flight up, PGs active, drops still)")

    def _recover(self, host: str, batch: list[int]) -> bool:
        t0 = self.clock()
        deadline = t0 + self.opt.recovery_timeout
        pending = set(batch)
        drops0 = self.source.read(host).drops
        still_since = self.clock()
        while self.clock() < deadline:
            try:
                if pending:
                    dump = self.ceph.osd_dump()
                    pending = {o for o in pending if not dump.osd(o).up}
                pgs_ok = not pending and self.ceph.pg_stat().all_active
            except CtguardError:
                pgs_ok = False
            r = self.source.read(host)
            if r.drops != drops0:
                drops0, still_since = r.drops, self.clock()
                if self.opt.purge:
                    self.source.purge(host)
            if pgs_ok and self.clock() - still_since >= self.opt.settle:
                return True
            self.sleep(self.opt.ceph_poll)
        return False

    def _wait_clean(self, host: str | None) -> bool:
        """All PGs active+clean, in both `pg stat` (the mgr) and `-s` (the mon's digest, which lags)."""
        t0 = self.clock()
        last = ""
        while self.clock() - t0 <= self.opt.clean_timeout:
            try:
                pgs = self.ceph.pg_stat()
                last = pgs.short()
                if pgs.all_clean and self.ceph.status().pgs.all_clean:
                    self.emit("clean", host=host, seconds=round(self.clock() - t0, 2), states=pgs.states)
                    return True
            except CtguardError as e:
                last = e.message
            self.sleep(self.opt.ceph_poll)
        self.emit("wait", gate="clean", host=host, reason=f"PGs not active+clean: {last}")
        return False

    # -- dry run ----------------------------------------------------------------------------------------------
    def dry_run(self) -> dict[str, Any]:
        """The plan with every gate's current reading; changes nothing (no purge, no noout, no restart)."""
        doc: dict[str, Any] = {"plan": self.plan.to_json(), "backend": self.backend.name,
                               "burst_factor": self.factor, "ceph": self.ceph.via, "hosts": []}
        flags: list[str] = []
        try:
            flags = sorted(self.ceph.flags())
            doc["noout"] = "already set: left as found" if "noout" in flags else "will be set for the run"
        except CtguardError as e:
            doc["noout"] = f"unknown ({e.message})"
        try:
            pgs = self.ceph.pg_stat()
            doc["pgs"] = {"states": pgs.states, "num_pgs": pgs.num_pgs, "all_active": pgs.all_active,
                          "all_clean": pgs.all_clean}
        except CtguardError as e:
            doc["pgs"] = {"error": e.message}
        for hp in self.plan.hosts:
            h: dict[str, Any] = {"host": hp.host, "osds": []}
            try:
                r = self.source.live(hp.host, hp.osds)
                pred = self.predicted(r, hp.osds, len(hp.osds))
                reserve = self._reserve(r)
                h["reading"] = r.as_json()
                h["reserve"] = reserve
                fits, need = 0, reserve
                for o in hp.osds:
                    if need + pred[o] <= r.free:
                        need += pred[o]
                        fits += 1
                    else:
                        break
                h["fits_at_once"] = fits
                h["headroom_ok"] = fits > 0
                for o in hp.osds:
                    h["osds"].append({"osd": o, "entries": self.osd_entries(r, o, len(hp.osds)),
                                      "predicted_burst": pred[o], "restart": self.backend.describe(o, hp.host)})
            except CtguardError as e:
                h["reading"] = {"error": e.message}
                h["osds"] = [{"osd": o, "restart": self.backend.describe(o, hp.host)} for o in hp.osds]
            try:
                ok = self.ceph.ok_to_stop([hp.osds[0]], max_osds=len(hp.osds) if len(hp.osds) > 1 else None)
                h["ok_to_stop"] = {"ok": ok.ok, "osds": list(ok.osds), "reason": ok.reason}
            except CtguardError as e:
                h["ok_to_stop"] = {"error": e.message}
            doc["hosts"].append(h)
        return doc
