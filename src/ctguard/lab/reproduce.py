"""`lab reproduce`: the 2014 incident, measured, then each remedy from the same starting point.

Method (docs/lab.md has the why):
1. `measure`: restart every OSD of the host at once with the table empty of filler: its baseline entries and
   its restart burst (peak - baseline).
2. For each scenario: reset the host (firewall and TIME_WAIT timeout back to the scenario's, `conntrack -F`
   in its namespace, wait for all OSDs up and all PGs active+clean, let the table settle), shrink its headroom
   with ASSURED filler entries from the host's own namespace up to `max - margin` (margin = half the burst:
   smaller than the burst, as in the incident; the global max is never touched), sample at 10 Hz, restart,
   observe until the cluster is clean again (or a time cap), and summarise.
Scenarios: `all-at-once` (the incident), `stagger` (one by one with a gap: the 2014 workaround),
`stagger-tw` (a gap longer than a shortened per-netns TIME_WAIT timeout), `headroom` (free entries = twice the
burst: what a larger table buys), `untracked` (Ceph ports not tracked), `ctguard-restart` (when the `restart`
capability is available), `purge` (all at once, with `ctguard.table.purge` at the first drop), `guard` (all at
once, with the real `ctguard guard --preempt --apply` running in the host's namespace).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ctguard.errors import BadInput, CommandFailed, CtguardError
from ctguard.kernel.ctdump import Entry as ctdump_Entry
from ctguard.kernel.netns import Netns, entered
from ctguard.kernel.procfs import PROC, net_path, read_text
from ctguard.kernel.settings import conntrack_count, conntrack_settings
from ctguard.kernel.stats import conntrack_stats
from ctguard.lab import config as cfg
from ctguard.lab import logs
from ctguard.lab import network as net
from ctguard.lab.clients import ClientSecond
from ctguard.lab.clients import parse as parse_client_lines
from ctguard.lab.clients import summarise as summarise_clients
from ctguard.lab.cluster import Lab, Progress, RestartEvent, _noop
from ctguard.lab.fill import fill
from ctguard.lab.sampler import Record, Sampler
from ctguard.output import rfc3339
from ctguard.runner import run

SCHEMA = 1
GUARD_EXPECT = "0 drops, 0 down"  # and client blocked time no worse than `headroom` when both were measured
TW_KEY = "net.netfilter.nf_conntrack_tcp_timeout_time_wait"



@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    all_at_once: bool = True
    gap: float = 0.0
    time_wait: int | None = None  # per-netns TIME_WAIT timeout for this run (None: the namespace default)
    headroom: float | None = 0.5  # free entries as a multiple of the burst; None: no filler
    untracked: bool = False
    purge: bool = False
    ctguard_restart: bool = False
    guard: bool = False  # `ctguard guard --preempt` runs in the host's namespace during the restart
    expect: str = ""  # "drops" | "no-drops" | "overflow<1s" | GUARD_EXPECT | "" (the lab tells the truth either way)


def scenarios(gap: float = 10.0, short_tw: int = 10) -> list[Scenario]:
    return [
        Scenario("all-at-once", "all OSDs at once (the incident)", expect="drops"),
        Scenario("stagger", f"one by one, {gap:g} s apart (2014 workaround)", all_at_once=False, gap=gap),
        Scenario("stagger-tw", f"one by one, {short_tw + 2} s apart, TIME_WAIT {short_tw} s", all_at_once=False,
                 gap=float(short_tw + 2), time_wait=short_tw),
        Scenario("headroom", "all at once, free entries = 2x burst", headroom=2.0, expect="no-drops"),
        Scenario("ctguard-restart", "ctguard restart", ctguard_restart=True, expect="no-drops"),
        Scenario("purge", "all at once, purge at the first drop", purge=True, expect="overflow<1s"),
        Scenario("guard", "all at once, ctguard guard --preempt", guard=True, expect=GUARD_EXPECT),
        # Last: when the notrack rules go again, every live Ceph connection is picked up mid-stream as a new
        # entry, some of them stuck behind the policy drop, and the next scenario started from ~1.5-1.8x the
        # baseline in every recorded run (289-365 entries instead of ~190). A run of the full list keeps the
        # other scenarios' starting points clean by ending with it.
        Scenario("untracked", "all at once, Ceph ports untracked", untracked=True, expect="no-drops"),
    ]


def restart_shortfall(restarted: int, osds: int) -> str | None:
    """Why a scenario cannot count as met although its figures look fine: "no drops" from a restart that never
    happened is no result (seen: a `ctguard restart` that waited out the whole window for headroom restarted
    nothing, dropped nothing, and the table said yes)."""
    if restarted >= osds:
        return None
    return f"only {restarted} of the host's {osds} OSDs restarted within the window"


MEASURE = Scenario("measure", "all at once, no filler (baseline and burst)", headroom=None)


@dataclass
class Result:
    name: str
    title: str
    available: bool = True
    reason: str = ""
    started: str = ""
    baseline: int = 0
    filler: int = 0
    free_before: int = 0
    margin: int | None = None
    peak: int = 0
    peak_over_baseline: float = 0.0
    burst: int = 0
    drops: int = 0
    early_drops: int = 0
    first_drop_s: float | None = None
    overflow_seconds: float = 0.0
    seconds_to_clean: float | None = None
    osds_marked_down: int = 0
    wrongly_marked_down: int = 0
    fault_lines: int = 0
    fault_lines_per_s: float = 0.0
    fault_peak_per_s: int = 0
    # the librados clients in the window from the first stop (lab/clients.py); None: the lab has no client
    client_blocked_s: float | None = None  # some op outstanding for more than 1 s
    client_worst_ms: float | None = None  # slowest op, completed or still in flight
    client_failed_ops: int | None = None  # errors + timeouts
    client_timeouts: int | None = None
    client_ops_per_s: float | None = None
    client_no_completion_s: int | None = None  # longest run of seconds with ops in flight and none completed
    client_silent_s: int | None = None  # seconds some client wrote no record (its figures are incomplete)
    slow_ops_peak: int = 0
    purges: list[dict[str, Any]] = field(default_factory=list)
    ended_by: str = ""
    window_s: float = 0.0
    expect: str = ""
    met: bool | None = None
    series: str = ""
    plot: str = ""
    errors: list[str] = field(default_factory=list)
    restarted: int = 0  # OSD starts seen in the window
    loadavg: list[float] = field(default_factory=list)  # 1-min load average at start and end (shared machine)
    # host counters over the window (end - start): conntrack invalid/insert_failed, TCP resets and failed
    # attempts (/proc/net/snmp of the host's namespace), packets the host firewall's policy dropped
    side_effects: dict[str, int] = field(default_factory=dict)


def _client_summary(res: Result, seconds: Sequence[ClientSecond], start: float, end: float,
                    names: Sequence[str]) -> None:
    """The client fields of `res` from the clients' per-second records in [start, end) (epoch seconds)."""
    if not names and not seconds:
        return
    cs = summarise_clients(seconds, start, end, names)
    res.client_blocked_s = cs.blocked_s
    res.client_worst_ms = cs.worst_ms
    res.client_failed_ops = cs.failed_ops
    res.client_timeouts = cs.timeouts
    res.client_ops_per_s = cs.ops_per_s
    res.client_no_completion_s = cs.longest_no_completion_s
    res.client_silent_s = cs.silent_s
    if cs.silent_s:
        res.errors.append(f"a librados client wrote no record for {cs.silent_s} s of the window: its blocked "
                          "time there is unknown (see log/client.N.out)")


def restart_available() -> str | None:
    """None when `ctguard restart` can be driven from here, else why not (never a made-up result)."""
    try:
        have = importlib.util.find_spec("ctguard.restart.engine") is not None and \
            importlib.util.find_spec("ctguard.cli.restart") is not None
    except ImportError:
        have = False
    if not have:
        return "ctguard restart is not in this build yet (the restart capability has not landed on main)"
    return None


def purge_available() -> str | None:
    if importlib.util.find_spec("ctguard.table.purge") is None:
        return "ctguard.table.purge is not available in this build"
    return None


class Reproducer:
    def __init__(self, lab: Lab, host: str | None = None, out_dirs: Sequence[str] = (),
                 progress: Progress = _noop, max_window: float = 150.0, plots: bool = True,
                 preroll: float = 2.0) -> None:
        self.lab = lab
        self.host = host or lab.hosts[0]
        self.ns: Netns = lab.host_netns(self.host)
        self.index = lab.host_index(self.host)
        self.out_dirs = [d for d in out_dirs if d]
        self.progress = progress
        self.max_window = max_window
        self.plots = plots
        self.preroll = preroll
        self.run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.burst = 0
        self.baseline = 0
        self.max = conntrack_settings(self.ns).max
        self.tw_default = int(net.get_sysctl(self.host, TW_KEY))
        self._notracked = False
        self._faults = logs.FaultSummary()
        self._cev = logs.ClusterEvents()
        self._clients: list[ClientSecond] = []
        self.spec = cfg.LabSpec(prefix=lab.prefix, hosts=len(lab.hosts),
                                osds_per_host=max(1, len(lab.osd_ids(self.host))), store=lab.state.store)

    # -- the whole run -------------------------------------------------------------------------------------
    def run(self, wanted: Sequence[Scenario]) -> dict[str, Any]:
        results: list[Result] = []
        self._debug_ms(True)
        try:
            m = self.scenario(MEASURE)
            results.append(m)
            self.baseline = m.baseline
            self.burst = max(1, m.burst)
            self.progress("burst", {"baseline": self.baseline, "burst": self.burst, "max": self.max})
            for sc in wanted:
                if sc.ctguard_restart and (why := restart_available()):
                    results.append(Result(sc.name, sc.title, available=False, reason=why, expect=sc.expect))
                    self.progress("skipped", {"scenario": sc.name, "reason": why})
                    continue
                if sc.purge and (why := purge_available()):
                    results.append(Result(sc.name, sc.title, available=False, reason=why, expect=sc.expect))
                    self.progress("skipped", {"scenario": sc.name, "reason": why})
                    continue
                results.append(self.scenario(sc))
            _compare_guard_to_headroom(results)
        finally:
            self._restore()
        doc = self.document(results)
        for d in self.out_dirs:
            path = os.path.join(d, self.run_id, "run.json")
            with open(path, "w") as f:
                json.dump(doc, f, indent=1)
        return doc

    def document(self, results: list[Result]) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            # the shape (pool size, pg_num, PG replicas per OSD, client rate too) from the lab's journal
            "lab": {**self.lab.state.shape, "prefix": self.lab.prefix, "hosts": len(self.lab.hosts),
                    "osds_per_host": len(self.lab.osd_ids(self.host)), "store": self.lab.state.store,
                    "clients": self.lab.state.clients},
            "host": self.host,
            "kernel": os.uname().release,
            "ceph_version": _ceph_version(),
            "max": self.max,
            "time_wait_default": self.tw_default,
            "baseline": self.baseline,
            "burst": self.burst,
            "margin": max(1, self.burst // 2),
            "scenarios": [asdict(r) for r in results],
        }

    # -- one scenario --------------------------------------------------------------------------------------
    def scenario(self, sc: Scenario) -> Result:
        res = Result(sc.name, sc.title, expect=sc.expect, started=rfc3339(), loadavg=[os.getloadavg()[0]])
        self.progress("scenario", {"scenario": sc.name, "title": sc.title})
        self._reset(sc)
        res.baseline = self._settle()
        if sc.headroom is not None:
            res.margin = max(1, int(self.burst * sc.headroom))
            res.filler = self._fill(self.max - res.margin - conntrack_count(self.ns))
        res.free_before = self.max - conntrack_count(self.ns)
        self.progress("filled", {"scenario": sc.name, "filler": res.filler, "free": res.free_before})

        files = self._log_files()
        offsets = logs.sizes(files)
        guard = _GuardProcess(self.host, self.lab.dir) if sc.guard else None
        if guard is not None:
            try:
                guard.start()  # squeezed already: it sees free < reserve at its first poll, as on a real host
            except CommandFailed as e:
                # no restart without the guard: this scenario would only repeat all-at-once
                res.errors.append(e.message)
                res.met = False
                self.progress("guard-failed", {"scenario": sc.name, "error": e.message})
                return res
            self.progress("guard", {"scenario": sc.name, "pid": guard.pid, "reserve": guard.reserve})
        purger = _Purger(self.ns) if sc.purge else None
        sampler = Sampler(self.ns, lambda a, t: self.lab.ceph_json(a, timeout=t),
                          on_drop=purger.on_drop if purger else None)
        if purger is not None:
            purger.sampler = sampler
        sampler.start()
        t0 = sampler.t0
        counters0 = self._host_counters(sampler)
        time.sleep(self.preroll)
        events: list[RestartEvent] = []

        def on_event(ev: RestartEvent) -> None:
            events.append(ev)
            sampler.add("event", event=ev.event, osd=ev.osd, pid=ev.pid)

        try:
            if sc.ctguard_restart:
                self._ctguard_restart(sampler)
            else:
                self.lab.restart_osds(self.host, all_at_once=sc.all_at_once, gap=sc.gap, on_event=on_event)
            res.ended_by = self._observe(sampler)
        finally:
            res.side_effects = _delta(counters0, self._host_counters(sampler))
            if guard is not None:
                guard.stop()
                guard.record(sampler)
            records = sampler.stop()
            if purger is not None:
                purger.join()
        res.errors = sampler.errors[:20]
        t1 = time.time()
        res.window_s = round(t1 - t0, 2)
        res.loadavg.append(os.getloadavg()[0])
        self._summarise(res, records, t0, t1, files, offsets)
        self._save(res, sc, records, t0, t1, files, offsets)
        self.progress("result", {k: getattr(res, k) for k in ("name", "peak", "drops", "overflow_seconds",
                                                               "seconds_to_clean", "osds_marked_down",
                                                               "client_blocked_s")})
        return res

    def _notrack_dir(self) -> str:
        return os.path.join(self.lab.dir, "notrack-state")

    def _untrack(self, on: bool) -> None:
        """Remedy (c) through `ctguard notrack` (ctguard.firewall): the Ceph ports of the public network
        untracked both ways, and `ct state untracked accept` inserted into the host's own input chain (an
        accept elsewhere would not stop that chain's policy drop). Journaled in the lab dir; removed again
        before the next scenario."""
        from ctguard.firewall import apply_notrack, remove_notrack

        if on:
            apply_notrack(self.ns, networks=[cfg.PUBLIC_NET], osd_range=cfg.OSD_PORTS,
                          mon_ports=list(cfg.MON_PORTS), state_dir=self._notrack_dir(),
                          insert_accept=[f"inet {self.lab.prefix}_fw input"])
            self._notracked = True
        elif self._notracked:
            remove_notrack(self.ns, state_dir=self._notrack_dir())
            self._notracked = False

    def _reset(self, sc: Scenario) -> None:
        was_untracked = self._notracked
        self._untrack(False)
        net.nft(self.host, cfg.host_firewall(self.spec))
        net.set_sysctl(self.host, TW_KEY, sc.time_wait or self.tw_default)
        self._clear()
        if was_untracked:
            # connections opened while untracked have no entry: their next packet from the peer to our
            # ephemeral port is picked up as NEW and dropped by the policy. Fresh connections fix that.
            self._fresh_connections()
        try:
            self._wait_clean(90.0)
        except CommandFailed as e:
            self.progress("heal", {"reason": e.message})
            self._fresh_connections()
            self._wait_clean(180.0)
        self._clear()  # what closed while the cluster recovered
        if sc.untracked:
            self._untrack(True)

    def _fresh_connections(self) -> None:
        """Restart the host's OSDs once so every connection of the host is tracked from its SYN."""
        self.lab.restart_osds(self.host, all_at_once=True)
        self._clear()

    def _clear(self) -> None:
        """Back to the starting point without `conntrack -F`: delete the filler (ct mark 0x1) and the entries
        of closed connections (TIME_WAIT, CLOSE), keep every live connection's entry. A full flush makes the next
        packet of each live connection a mid-stream pickup in state NEW; when that packet comes from the
        peer to our ephemeral port the policy drops it, and a connection whose host side has nothing to send
        stays stuck for minutes (measured: an OSD with slow ops blocked 550 s after a flush)."""
        from ctguard.kernel import ctdump

        run(["ip", "netns", "exec", self.host, "conntrack", "-D", "--mark", "1"], timeout=180)
        socks = run(["ip", "netns", "exec", self.host, "ss", "-Htan"], timeout=30).stdout
        victims = stale_entries(ctdump.entries(self.ns), socks)
        if victims:
            ctdump.delete(self.ns, victims)

    def _wait_clean(self, timeout: float) -> None:
        """All OSDs up and all PGs active+clean (health may still show e.g. a recent-crash warning)."""
        deadline = time.monotonic() + timeout
        reason = ""
        while time.monotonic() < deadline:
            r = self.lab.readiness(timeout=15)
            if r.num_pgs and r.num_pgs == r.expected_pgs and r.clean_pgs == r.num_pgs and r.osds_up == r.osds:
                return
            reason = r.reason
            time.sleep(1.0)
        raise CommandFailed(f"lab not clean after {timeout:g} s: {reason}")

    def _settle(self, quiet: float = 3.0, timeout: float = 30.0) -> int:
        """Wait until the host's table stops growing after the flush (live connections are picked up again
        as they send) and return that baseline."""
        deadline = time.monotonic() + timeout
        last = conntrack_count(self.ns)
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            c = conntrack_count(self.ns)
            if abs(c - last) > max(2, last // 50):
                last, stable_since = c, time.monotonic()
            elif time.monotonic() - stable_since >= quiet:
                return c
        return conntrack_count(self.ns)

    def _fill(self, n: int) -> int:
        if n <= 0:
            return 0
        r = fill("tcp-est", n, self.lab.fill_src(self.host), self.ns)
        if r.send_errors:
            raise CommandFailed(f"filler refused {r.send_errors} packets: the table is already full")
        return n

    def _observe(self, sampler: Sampler) -> str:
        """Until every OSD is up and every PG active+clean with no new drop for 3 s, and at least 10 s
        after the restart; at most max_window seconds."""
        start = time.monotonic()
        while time.monotonic() - start < self.max_window:
            time.sleep(0.5)
            if time.monotonic() - start < 10:
                continue
            c = sampler.latest("ceph")
            ct = sampler.records_since("ct", 3.0)
            if c is None or not ct:
                continue
            clean = c["num_pgs"] > 0 and c["pgs_clean"] == c["num_pgs"] and c["osds_up"] == c["osds"]
            quiet = ct[0]["drop"] == ct[-1]["drop"]
            if clean and quiet and float(c["t"]) > sampler.last_event_t() + 2:
                return "clean"
        return "time cap"

    def _ctguard_restart(self, sampler: Sampler) -> None:
        """Remedy (d): `ctguard restart --host HOST --lab PREFIX`, the real command, as a child process (its
        own journal and lock under the lab dir). Its JSON event stream goes into the series as `restart`
        records; a watcher turns OSD PID changes into the same stop/start events as the other scenarios."""
        stop = threading.Event()
        watcher = threading.Thread(target=self._watch_pids, args=(sampler, stop), daemon=True)
        watcher.start()
        argv = [sys.executable, "-c", "from ctguard.cli import main; main()", "restart", "--host", self.host,
                "--lab", self.lab.prefix, "--lab-dir", os.path.dirname(self.lab.dir),
                "--state-dir", os.path.join(self.lab.dir, "restart-state"), "--discard", "--json",
                # the lab's host is quiet: a small reserve instead of the production default (0.5 % of max,
                # 1,310 entries here, more than the squeezed headroom); and never wait past the lab's patience
                "--reserve", "8", "--gate-timeout", "300"]
        try:
            done = run(argv, timeout=900)
        finally:
            stop.set()
            watcher.join(timeout=10)
        for line in done.stdout.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and "event" in ev:
                at = None
                try:
                    at = datetime.fromisoformat(str(ev.get("ts", "")).replace("Z", "+00:00")).timestamp()
                except ValueError:
                    pass
                sampler.add("restart", at=at, **{k: v for k, v in ev.items() if k not in ("t", "kind", "at")})
        if not done.ok:
            sampler.errors.append(f"ctguard restart exited {done.returncode}: {done.first_error_line()}")

    def _watch_pids(self, sampler: Sampler, stop: threading.Event) -> None:
        ids = self.lab.osd_ids(self.host)
        last = {i: self.lab.osd_pid(i) for i in ids}
        while not stop.wait(0.1):
            for i in ids:
                pid = self.lab.osd_pid(i)
                if pid != last[i]:
                    if last[i] is not None:
                        sampler.add("event", event="stop", osd=i, pid=last[i])
                    if pid is not None:
                        sampler.add("event", event="start", osd=i, pid=pid)
                    last[i] = pid

    def _host_counters(self, sampler: Sampler) -> dict[str, int]:
        """Side-effect counters of the host: what a purged TIME_WAIT entry can cost shows up here (a late segment
        of the old connection is new to conntrack: dropped by the policy, or answered with a reset)."""
        out: dict[str, int] = {}
        try:
            st = conntrack_stats(self.ns)
            out.update(ct_invalid=st.get("invalid"), ct_insert_failed=st.get("insert_failed"))
            with entered(self.ns):
                snmp = read_text(net_path(PROC, "snmp"))
            out.update({f"tcp_{k}": v for k, v in tcp_snmp(snmp).items()})
            fw = run(["ip", "netns", "exec", self.host, "nft", "-j", "list", "chain", "inet",
                      f"{self.lab.prefix}_fw", "input"], timeout=10)
            out["fw_policy_dropped"] = policy_drops(fw.stdout)
        except CtguardError as e:
            sampler.errors.append(f"side-effect counters: {e.message}")
        return out

    # -- summary and records -------------------------------------------------------------------------------
    def _client_seconds(self, files: list[str], offsets: dict[str, int]) -> list[ClientSecond]:
        out: list[ClientSecond] = []
        for f in files:
            if f.endswith(".jsonl"):
                out += parse_client_lines(logs.read_from(f, offsets[f]), os.path.basename(f)[:-len(".jsonl")])
        return out

    def _log_files(self) -> list[str]:
        d = os.path.join(self.lab.dir, "log")
        files = [os.path.join(d, f"ceph-osd.{i}.log") for i in self.lab.osd_ids(self.host)]
        files.append(os.path.join(d, "ceph.log"))
        files += [os.path.join(d, f"client.{c}.jsonl") for c in range(self.lab.state.clients)]
        return files

    def _summarise(self, res: Result, records: list[Record], t0: float, t1: float, files: list[str],
                   offsets: dict[str, int]) -> None:
        ct = [r for r in records if r["kind"] == "ct"]
        ev = [r for r in records if r["kind"] == "event"]
        ceph = [r for r in records if r["kind"] == "ceph"]
        if ct:
            res.peak = max(int(r["count"]) for r in ct)
            res.drops = int(ct[-1]["drop"]) - int(ct[0]["drop"])
            res.early_drops = int(ct[-1]["early_drop"]) - int(ct[0]["early_drop"])
            base = res.baseline or 1
            res.peak_over_baseline = round((res.peak - res.filler) / base, 2)
            res.burst = max(0, res.peak - res.filler - res.baseline)
            drop_t = [float(b["t"]) for a, b in zip(ct, ct[1:], strict=False) if b["drop"] > a["drop"]]
            if drop_t:
                res.first_drop_s = drop_t[0]
                res.overflow_seconds = round(drop_t[-1] - drop_t[0] + 0.1, 2)
        res.restarted = sum(1 for r in ev if r["event"] == "start")
        first_stop = min((float(r["t"]) for r in ev if r["event"] == "stop"), default=self.preroll)
        last_start = max((float(r["t"]) for r in ev if r["event"] == "start"), default=first_stop)
        for r in ceph:
            if float(r["t"]) > last_start and r["num_pgs"] and r["pgs_clean"] == r["num_pgs"] \
                    and r["osds_up"] == r["osds"]:
                res.seconds_to_clean = round(float(r["t"]) - first_stop, 1)
                break
        res.purges = [{k: v for k, v in r.items() if k != "kind"} for r in records if r["kind"] == "purge"]
        res.slow_ops_peak = max((int(r["slow_ops"]) for r in ceph), default=0)
        osd_logs = [f for f in files if os.path.basename(f).startswith("ceph-osd.")]
        faults = logs.fault_lines((ln for f in osd_logs for ln in logs.read_from(f, offsets[f])), t0, t1)
        res.fault_lines = faults.total
        res.fault_peak_per_s = faults.peak_per_second
        res.fault_lines_per_s = round(faults.total / max(1.0, t1 - t0 - first_stop), 1)
        res.wrongly_marked_down = faults.wrongly_marked_down
        clog = os.path.join(self.lab.dir, "log", "ceph.log")
        cev = logs.cluster_events(logs.read_from(clog, offsets.get(clog, 0)), t0, t1)
        res.osds_marked_down = len(cev.failed)
        self._clients = self._client_seconds(files, offsets)
        _client_summary(res, self._clients, t0 + first_stop, t1,
                        [f"client.{c}" for c in range(self.lab.state.clients)])
        if res.expect == "drops":
            res.met = res.drops > 0
        elif res.expect == "no-drops":
            res.met = res.drops == 0
        elif res.expect == "overflow<1s":
            res.met = res.drops > 0 and res.overflow_seconds < 1.0
        elif res.expect == GUARD_EXPECT:
            # the guard must have run (its events are in the series), not just a lucky GC pass
            ran = any(r["kind"] == "guard" and r.get("event") == "start" for r in records)
            res.met = ran and res.drops == 0 and res.osds_marked_down == 0
        short = restart_shortfall(res.restarted, len(self.lab.osd_ids(self.host)))
        if res.met is not None and short:
            res.met, res.reason = False, short
        self._faults = faults
        self._cev = cev

    def _save(self, res: Result, sc: Scenario, records: list[Record], t0: float, t1: float, files: list[str],
              offsets: dict[str, int]) -> None:
        for d in self.out_dirs:
            rd = os.path.join(d, self.run_id)
            os.makedirs(rd, exist_ok=True)
            path = os.path.join(rd, f"{res.name}.jsonl")
            with open(path, "w") as f:
                meta = {"kind": "meta", "t": 0.0, "t0": t0, "scenario": asdict(sc), "host": self.host,
                        "netns_inode": os.stat(self.ns.path).st_ino, "max": self.max, "baseline": res.baseline,
                        "filler": res.filler, "margin": res.margin}
                f.write(json.dumps(meta) + "\n")
                for r in records:
                    f.write(json.dumps(r) + "\n")
                for sec, n in self._faults.per_second.items():
                    f.write(json.dumps({"t": float(sec), "kind": "faults", "lines": n}) + "\n")
                for t, osd in self._cev.failed:
                    f.write(json.dumps({"t": round(t, 3), "kind": "marked_down", "osd": osd}) + "\n")
                for t, osd in self._cev.boot:
                    f.write(json.dumps({"t": round(t, 3), "kind": "boot", "osd": osd}) + "\n")
                for c in self._clients:
                    if t0 - 1 < c.t <= t1:
                        f.write(json.dumps({**asdict(c), "t": round(c.t - t0, 3), "kind": "client"}) + "\n")
            with open(os.path.join(rd, f"{res.name}.log"), "w") as f:
                f.write(f"# {res.name}: cluster log lines (mon, cluster channel) in the window\n")
                f.writelines(line + "\n" for line in self._cev.lines)
                f.write(f"# {res.name}: first messenger fault lines of {self.host}'s OSDs (debug ms = 1); "
                        f"{self._faults.total} in all\n")
                f.writelines(line + "\n" for line in self._faults.sample)
            res.series = res.series or path
            if self.plots:
                from ctguard.lab.plot import plot_series_file

                png = os.path.join(rd, f"{res.name}.png")
                plot_series_file(path, png)
                res.plot = res.plot or png

    # -- lab settings --------------------------------------------------------------------------------------
    def _debug_ms(self, on: bool) -> None:
        for i in self.lab.osd_ids(self.host):
            if on:
                self.lab.ceph(["config", "set", f"osd.{i}", "debug_ms", "1"], timeout=30, check=True)
            else:
                self.lab.ceph(["config", "rm", f"osd.{i}", "debug_ms"], timeout=30)

    def _restore(self) -> None:
        steps: list[Callable[[], object]] = [
            lambda: self._untrack(False),
            lambda: net.nft(self.host, cfg.host_firewall(self.spec)),
            lambda: net.set_sysctl(self.host, TW_KEY, self.tw_default),
            self._clear,
            lambda: self._debug_ms(False),
        ]
        for step in steps:
            try:
                step()
            except CtguardError as e:
                self.progress("restore-failed", {"error": e.message})


class _Purger:
    """Remedy (e): `ctguard.table.purge.purge()` on the host at the first drop the 10 Hz sampler sees, and
    again at later drops at most once a second (what `ctguard guard` does)."""

    def __init__(self, ns: Netns) -> None:
        self.ns = ns
        self.sampler: Sampler | None = None
        self._busy = threading.Lock()
        self._last = -10.0
        self._threads: list[threading.Thread] = []

    def on_drop(self, t: float, total: int, delta: int) -> None:
        if t - self._last < 1.0 or self._busy.locked():
            return
        self._last = t
        th = threading.Thread(target=self._purge, args=(t,), daemon=True)
        self._threads.append(th)
        th.start()

    def _purge(self, t: float) -> None:
        from ctguard.table.purge import purge

        with self._busy:
            fields: dict[str, Any]
            try:
                r = purge(self.ns)
                fields = {"deleted": r.deleted, "count_before": r.count_before, "count_after": r.count_after,
                          "seconds": round(r.seconds, 3), "by_state": r.by_state, "at_drop_t": t}
            except CtguardError as e:
                fields = {"error": e.message, "at_drop_t": t}
            if self.sampler is not None:
                self.sampler.add("purge", **fields)

    def join(self) -> None:
        for th in self._threads:
            th.join(timeout=30)


class _GuardProcess:
    """`ctguard guard --preempt --apply --json` in the host's namespace: the real CLI as a child process, its
    JSON lines in a file under the lab dir (no pipe to drain), stopped by its PID with SIGTERM (it exits 0)."""

    def __init__(self, host: str, lab_dir: str) -> None:
        self.host = host
        self.state_dir = os.path.join(lab_dir, "guard-state")
        self.log = os.path.join(lab_dir, "log", f"guard-{host}.jsonl")
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.reserve: int | None = None
        self.returncode: int | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-c", "from ctguard.cli import main; main()", "guard", "--preempt", "--apply",
                "--json", "--netns", self.host, "--state-dir", self.state_dir]

    def start(self, timeout: float = 30.0) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        with open(self.log, "wb") as out, open(self.log + ".err", "wb") as err:
            self.proc = subprocess.Popen(  # noqa: S603 - argument list; long-running, so not runner.run
                self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        self.pid = self.proc.pid
        # ready = its first poll is done (the `reserve` event comes with it); a failure is one line on stderr
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.events():
                if ev.get("event") == "reserve":
                    self.reserve = int(ev.get("reserve") or 0)
                    return
            if self.proc.poll() is not None:
                with open(self.log + ".err", encoding="utf-8", errors="replace") as f:
                    msg = f.read().strip()
                raise CommandFailed(f"ctguard guard exited {self.proc.returncode}: {msg or 'no message'}")
            time.sleep(0.05)
        self.stop()
        raise CommandFailed(f"ctguard guard did not report its reserve within {timeout:g} s")

    def events(self) -> list[dict[str, Any]]:
        out = []
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(ev, dict) and "event" in ev:
                        out.append(ev)
        except OSError:
            pass
        return out

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # by its PID: our own child
        try:
            self.returncode = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait(timeout=10)

    def record(self, sampler: Sampler) -> None:
        """Its events into the series: purges as `purge` records (the plots mark them), the rest as `guard`."""
        for ev in self.events():
            at = None
            try:
                at = datetime.fromisoformat(str(ev.get("ts", "")).replace("Z", "+00:00")).timestamp()
            except ValueError:
                pass
            fields = {k: v for k, v in ev.items() if k not in ("t", "kind", "at", "ts", "netns")}
            if ev["event"] == "purge":
                fields.pop("event")
                sampler.add("purge", at=at, **fields)
            else:
                sampler.add("guard", at=at, **fields)
        if self.returncode not in (0, None):
            sampler.errors.append(f"ctguard guard exited {self.returncode}")


def tcp_snmp(text: str) -> dict[str, int]:
    """The counters of `Tcp:` in /proc/net/snmp that a purged entry can move: resets and failed attempts."""
    rows = [ln.split() for ln in text.splitlines() if ln.startswith("Tcp:")]
    if len(rows) < 2:
        return {}
    values = dict(zip(rows[0][1:], rows[1][1:], strict=False))
    names = {"OutRsts": "out_rsts", "EstabResets": "estab_resets", "AttemptFails": "attempt_fails",
             "InErrs": "in_errs", "RetransSegs": "retrans_segs"}
    out = {}
    for k, name in names.items():
        try:
            out[name] = int(values[k])
        except (KeyError, ValueError):
            continue
    return out


def policy_drops(nft_json: str) -> int:
    """Packets counted by the host firewall's `counter comment "dropped by policy"` (the rule before the input
    chain's policy drop): new connections the firewall refused, and late segments conntrack saw as new."""
    try:
        doc = json.loads(nft_json)
    except ValueError as e:
        raise CommandFailed("nft -j printed no JSON") from e
    for item in doc.get("nftables", []) if isinstance(doc, dict) else []:
        rule = item.get("rule") if isinstance(item, dict) else None
        if isinstance(rule, dict) and rule.get("comment") == "dropped by policy":
            for ex in rule.get("expr", []):
                if isinstance(ex, dict) and isinstance(ex.get("counter"), dict):
                    return int(ex["counter"].get("packets", 0))
    raise CommandFailed("the host firewall has no \"dropped by policy\" counter")


def _delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: b[k] - a[k] for k in a if k in b}


def _compare_guard_to_headroom(results: list[Result]) -> None:
    """The guard scenario also has to keep clients no worse off than the `headroom` remedy, when both were run
    and the client blocked time (`client_blocked_s`) was measured; 1 s of slack for the per-second client lines."""
    by = {r.name: r for r in results}
    g, h = by.get("guard"), by.get("headroom")
    if g is None or h is None or not g.available or g.met is not True:
        return
    gb, hb = getattr(g, "client_blocked_s", None), getattr(h, "client_blocked_s", None)
    if isinstance(gb, (int, float)) and isinstance(hb, (int, float)):
        g.met = float(gb) <= float(hb) + 1.0


def socket_pairs(ss_listing: str) -> set[tuple[str, str]]:
    """(local, peer) and (peer, local) "addr:port" pairs of `ss -Htan` lines."""
    socks: set[tuple[str, str]] = set()
    for line in ss_listing.splitlines():
        p = line.split()
        if len(p) >= 5:
            socks.add((p[3], p[4]))
            socks.add((p[4], p[3]))
    return socks


def stale_entries(entries: Sequence[ctdump_Entry], ss_listing: str) -> list[ctdump_Entry]:
    """The TCP entries to delete between scenarios: closed connections (TIME_WAIT, CLOSE) and tracked
    connections with no socket left on the host (`ss -Htan`). Those die while untracked or during an
    overflow, stay ESTABLISHED for 5 days and would creep into the next scenario's baseline. Filler entries
    (ct mark 0x1) are deleted before, by mark."""
    import socket as _socket

    socks = socket_pairs(ss_listing)
    out = []
    for e in entries:
        if e.proto != 6 or e.family != _socket.AF_INET:
            continue
        if e.state_name in ("TIME_WAIT", "CLOSE"):
            out.append(e)
            continue
        a = f"{_socket.inet_ntoa(e.src)}:{e.sport}"
        b = f"{_socket.inet_ntoa(e.dst)}:{e.dport}"
        if (a, b) not in socks:
            out.append(e)
    return out


def _ceph_version() -> str:
    try:
        return run(["ceph", "--version"], timeout=10).stdout.strip()
    except CtguardError:
        return ""


def check_scenarios(names: Sequence[str], gap: float, short_tw: int) -> list[Scenario]:
    allsc = {s.name: s for s in scenarios(gap, short_tw)}
    if not names:
        return list(allsc.values())
    bad = [n for n in names if n not in allsc]
    if bad:
        raise BadInput(f"unknown scenario {bad[0]!r} (one of {', '.join(allsc)})")
    return [allsc[n] for n in names]
