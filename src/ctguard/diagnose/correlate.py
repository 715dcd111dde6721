"""From events to incidents: windows of trouble, what each host and OSD did in them, and the cause.

An incident is seeded by trouble lines (table full, suppressed, mark-downs, heartbeat failures, slow requests,
and lossy-fault storms of at least `storm_per_s` lines per second); seeds closer than `gap` seconds belong to
one incident. The window then reaches back through contiguous messenger activity (again `gap`) and takes in
the daemon restarts of the `lookback` seconds before the first seed, because a mass restart is what fills the
table (the 2014 incident: all 8 OSDs of a host restarted at once).

Why these defaults: net_ratelimit prints a burst every 5 s while drops go on (kernel-conntrack.md 2.4), TIME_WAIT
entries live 120 s (tcp_timeout_time_wait), so `gap` = 120 s keeps one story of trouble in one window; the mon
marks silent OSDs down after mon_osd_report_timeout = 900 s, so incidents can last a quarter of an hour or more.

A window can hold several overflows (a `lab reproduce` run: one per scenario, minutes apart). Each overflow is its
own incident (`_overflows`): drops closer than `drop_gap` (30 s) are one overflow, and a longer drop-free stretch
ends it once the table has settled, i.e. a restart came in between or the stretch outlasted a GC pass (`settle`,
90 s). The window is then cut between the overflows at the restarts that began the next one (`_pieces`), and
each incident gets its own drops (a cumulative counter's rises by time), restarts and mark-downs.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from ctguard.diagnose import model
from ctguard.diagnose.clock import rfc3339
from ctguard.diagnose.scan import ScanResult

SEED_KINDS = frozenset({model.TABLE_FULL, model.SUPPRESSED, model.COUNTED_DROPS, model.MARKED_DOWN, model.WRONGLY_DOWN,
                        model.HB_NO_REPLY, model.SLOW})
RESTART_KINDS = frozenset({model.OSD_START, model.MON_BOOT})
DOWN_KINDS = frozenset({model.MARKED_DOWN, model.WRONGLY_DOWN})
DROP_KINDS = frozenset({model.TABLE_FULL, model.SUPPRESSED, model.COUNTED_DROPS})

RATELIMIT_S = 5.0  # net.core.message_cost: one burst of 10 messages per 5 s (kernel-conntrack.md 2.4)
CONNTRACK_KINDS = ("conntrack-overflow-after-restart", "conntrack-overflow-reconnect-storm", "conntrack-overflow")


@dataclass(frozen=True)
class Options:
    gap: float = 120.0
    drop_gap: float = 30.0  # drop-free seconds that end an overflow, when a restart came in between (_overflows)
    settle: float = 90.0  # drop-free seconds that end an overflow in any case: a GC pass has come (_overflows)
    lookback: float = 600.0
    storm_per_s: int = 20
    same_event: float = 120.0  # boot/down lines of one daemon closer than this are one restart / one mark-down


@dataclass(frozen=True)
class Evidence:
    source: str
    line: int
    text: str

    @staticmethod
    def of(ev: model.Event) -> Evidence:
        return Evidence(ev.source, ev.line_no, ev.text)


@dataclass(frozen=True)
class Claim:
    claim: str
    evidence: list[Evidence]


@dataclass
class HostKernel:
    host: str
    first: float
    last: float
    drops_logged: int = 0
    suppressed: int = 0
    drops_counted: int = 0  # from the kernel's drop counter (lab recordings), when there is one
    peak_per_s: int = 0
    netns: list[str] = field(default_factory=list)
    lab_scenarios: list[str] = field(default_factory=list)  # `ctguard lab reproduce` scenarios the drops came from
    first_ev: model.Event | None = None
    last_ev: model.Event | None = None

    @property
    def duration(self) -> float:
        return self.last - self.first

    @property
    def drops(self) -> int:
        """The counter when there is one (exact); else logged lines + suppressed (a sign, not a count)."""
        return self.drops_counted if self.drops_counted else self.drops_logged + self.suppressed


@dataclass
class DaemonStats:
    daemon: str
    host: str
    lossy_faults: int = 0
    peak_faults_per_s: int = 0
    peers: set[str] = field(default_factory=set)
    closes: int = 0
    resets: int = 0
    heartbeat_no_reply: int = 0
    slow_max: int = 0
    first_fault: model.Event | None = None


@dataclass(frozen=True)
class Point:
    daemon: str
    host: str
    ts: float
    how: str
    ev: model.Event


@dataclass
class Incident:
    clock: str
    start: float
    end: float
    hosts: list[str]
    kernel: list[HostKernel]
    daemons: list[DaemonStats]
    restarted: list[Point]
    marked_down: list[Point]
    cause_kind: str
    cause: str
    claims: list[Claim]
    series: dict[str, dict[int, int]]  # "drops:HOST" / "faults:HOST" -> {second: count}, for the plot

    @property
    def drops_logged(self) -> int:
        return sum(k.drops_logged for k in self.kernel)

    @property
    def suppressed(self) -> int:
        return sum(k.suppressed for k in self.kernel)

    @property
    def drops_counted(self) -> int:
        return sum(k.drops_counted for k in self.kernel)

    @property
    def drops(self) -> int:
        return sum(k.drops for k in self.kernel)

    @property
    def lab_scenarios(self) -> list[str]:
        return list(dict.fromkeys(s for k in self.kernel for s in k.lab_scenarios))

    @property
    def marked_down_by_mon(self) -> list[Point]:
        """Mark-downs the monitors decided (failure reports, report timeouts) or the OSD saw as wrong; not the
        clean stops (an OSD that marked itself down is being restarted)."""
        return [p for p in self.marked_down if not p.how.startswith("marked itself")]

    @property
    def conntrack(self) -> bool:
        return self.cause_kind in CONNTRACK_KINDS


def fmt_ts(ts: float, clock: str) -> str:
    return rfc3339(ts) if clock == model.WALL else f"boot+{ts:.3f}s"


def _windows(seeds: list[float], gap: float) -> list[list[float]]:
    out: list[list[float]] = []
    for t in sorted(seeds):
        if out and t - out[-1][1] <= gap:
            out[-1][1] = t
        else:
            out.append([t, t])
    return out


def correlate(res: ScanResult, opts: Options | None = None) -> list[Incident]:
    opts = opts or Options()
    domains: dict[str, tuple[list[model.Event], list[tuple[model.BucketKey, model.Bucket]]]] = defaultdict(
        lambda: ([], []))
    for ev in res.events:
        domains[ev.clock if ev.clock == model.WALL else f"boot:{ev.source}"][0].append(ev)
    for key, b in res.buckets.items():
        ev = b.first
        domains[ev.clock if ev.clock == model.WALL else f"boot:{ev.source}"][1].append((key, b))
    incidents: list[Incident] = []
    for _dom, (events, buckets) in sorted(domains.items()):
        incidents.extend(_domain(events, buckets, opts, kernel_inputs=res.kernel_inputs))
    incidents.sort(key=lambda i: (i.clock != model.WALL, i.start))
    return incidents


def _domain(events: list[model.Event], buckets: list[tuple[model.BucketKey, model.Bucket]], opts: Options,
            kernel_inputs: int) -> list[Incident]:
    events.sort(key=lambda e: e.ts)
    # a daemon that marked itself down was stopped cleanly: part of a restart, not trouble by itself
    seeds = [e.ts for e in events if e.kind in SEED_KINDS
             and not (e.kind == model.MARKED_DOWN and e.detail.startswith("marked itself down"))]
    per_sec: dict[int, int] = defaultdict(int)
    for key, bucket in buckets:
        if key[1] == model.MS_FAULT:
            per_sec[key[4]] += bucket.count
    seeds += [float(s) for s, n in per_sec.items() if n >= opts.storm_per_s]
    if not seeds:
        return []
    activity = sorted({bk.first.ts for _, bk in buckets} | {e.ts for e in events})
    wins = _windows(seeds, opts.gap)
    for w in wins:  # reach back through contiguous activity (a storm that began before the first drop) ...
        first = w[0]
        i = bisect.bisect_left(activity, first) - 1
        # ... but no further than --lookback: a log with faults all day long would otherwise reach its start
        while i >= 0 and w[0] - activity[i] <= opts.gap and first - activity[i] <= opts.lookback:
            w[0] = activity[i]
            i -= 1
    merged: list[list[float]] = []
    for w in sorted(wins):
        if merged and w[0] <= merged[-1][1] + opts.gap:
            merged[-1][1] = max(merged[-1][1], w[1])
        else:
            merged.append(list(w))
    stories = _stories(events, opts.same_event)
    drop_evs = [e for e in events if e.kind in DROP_KINDS]
    phases = _overflows([e.ts for e in drop_evs], stories, opts,
                        [e.peer if e.kind == model.COUNTED_DROPS else "" for e in drop_evs])
    # slice by time with bisect: a month of logs can hold thousands of incidents
    ev_ts = [e.ts for e in events]
    bks_sorted = sorted(buckets, key=lambda kb: kb[0][4])
    bk_secs = [k[4] for k, _ in bks_sorted]
    seeds.sort()
    out = []
    taken = float("-inf")  # restarts up to here belong to an earlier incident
    for lo, hi, first, last in _pieces(merged, phases, stories, opts.drop_gap):
        i = bisect.bisect_left(seeds, lo)
        if not (i < len(seeds) and (seeds[i] < hi or last and seeds[i] <= hi)):
            continue  # a stretch between two stories with no trouble in it (restarts that went well)
        first_seed = seeds[i]
        drops = [e.ts for e in events[bisect.bisect_left(ev_ts, lo):bisect.bisect_right(ev_ts, hi)]
                 if e.kind in DROP_KINDS]
        first_drop = drops[0] if drops else first_seed
        upto = hi + opts.gap if last else hi
        k = bisect.bisect_right(stories, max(drops[-1] if drops else first_seed, lo))
        if drops and k < len(stories):  # a restart after the overflow begins another story
            upto = min(upto, stories[k])
        restarts = [e for e in events[bisect.bisect_right(ev_ts, max(taken, first_seed - opts.lookback)):
                                      bisect.bisect_left(ev_ts, upto)] if e.kind in RESTART_KINDS]
        restarts = _latest_restarts(restarts, first_drop)
        taken = upto
        start = min([lo] + [e.ts for e in restarts])
        end_i = bisect.bisect_right(ev_ts, hi + 1) if last else bisect.bisect_left(ev_ts, hi)
        evs = [e for e in events[bisect.bisect_left(ev_ts, start):end_i] if e.kind not in RESTART_KINDS] + restarts
        bk_lo = bisect.bisect_right(bk_secs, start - 1) if first or start < lo else bisect.bisect_left(bk_secs, lo)
        bk_hi = bisect.bisect_right(bk_secs, hi + 1) if last else bisect.bisect_left(bk_secs, hi)
        out.append(_incident(start, hi, evs, bks_sorted[bk_lo:bk_hi], opts, kernel_inputs))
    return out


def _overflows(drops: list[float], stories: list[float], opts: Options, labels: Sequence[str] = ()
               ) -> list[list[float]]:
    """[first, last] drop of each overflow. Drops closer than `drop_gap` are one overflow (while the table is
    full, refused peers retry within seconds and the kernel logs a burst every 5 s). A longer drop-free stretch
    ends it only once the table has settled: a new restart came in between (another cause), or the stretch is
    longer than `settle` (the GC worker's pass, which frees a full table, came within 82 s in every lab
    overflow, kernel-conntrack.md 6b); a shorter quiet stretch with no restart is a full table nobody knocked on.

    `labels` (parallel to `drops`): the lab scenario a counted drop belongs to, "" when unknown. Two lab
    scenarios are two experiments with the table emptied between them (the filler deleted, closed entries
    purged), so their drops never make one overflow however close they came: seen in `make demo`, stagger's
    first drop 28 s after all-at-once's last, with the reset and a restart in between."""
    groups: list[tuple[str, list[float]]] = []
    for t, lab in sorted(zip(drops, labels or [""] * len(drops), strict=True)):
        if groups and (not lab or groups[-1][0] in ("", lab)):
            if lab:
                groups[-1] = (lab, groups[-1][1])
            groups[-1][1].append(t)
        else:
            groups.append((lab, [t]))
    out: list[list[float]] = []
    for g, (_lab, ts) in enumerate(groups):
        first_of_group = True
        for p in _windows(ts, min(opts.drop_gap, opts.gap)):
            if out and not (first_of_group and g > 0):
                q = out[-1]
                i = bisect.bisect_right(stories, q[1])
                restarted = i < len(stories) and stories[i] < p[0]
                if p[0] - q[1] <= min(opts.settle, opts.gap) and not restarted:
                    q[1] = p[1]
                    first_of_group = False
                    continue
            out.append(p)
            first_of_group = False
    return out


def _pieces(merged: list[list[float]], phases: list[list[float]], stories: list[float], burst: float
            ) -> list[tuple[float, float, bool, bool]]:
    """Each trouble window, cut around the overflows it holds: (start, end, whether it starts the window,
    whether it ends it).

    An overflow (`_overflows`: drops, up to a drop-free, settled stretch) is one incident. Its story begins with
    the burst of restarts (`stories`: clean stops, process starts, boots that are not re-joins; one burst while
    they come less than `burst` seconds apart) that came last before its first drop, and goes on with its
    aftermath (mark-downs, re-joins, slow requests) until the next restart. Between two overflows with no restart in
    between, the cut is half-way from the last drop of one to the first drop of the next."""
    out: list[tuple[float, float, bool, bool]] = []
    k = 0
    for a, b in merged:
        while k < len(phases) and phases[k][1] < a:
            k += 1
        inside = []
        while k < len(phases) and phases[k][0] <= b:
            inside.append(phases[k])
            k += 1
        cuts: list[float] = []
        floor = a
        for n, p in enumerate(inside):
            i = bisect.bisect_right(stories, p[0] + 1) - 1  # the restart burst that came last before the drops
            if i >= 0 and stories[i] >= floor:
                while i > 0 and stories[i - 1] >= floor and stories[i] - stories[i - 1] <= burst:
                    i -= 1
                cuts.append(stories[i])
            nxt = inside[n + 1][0] if n + 1 < len(inside) else b
            i = bisect.bisect_right(stories, p[1])  # the first restart after the drops begins another story
            if i < len(stories) and stories[i] < nxt:
                cuts.append(stories[i])
            elif n + 1 < len(inside):
                cuts.append((p[1] + nxt) / 2)
            floor = p[1]
        bounds = [a] + sorted({c for c in cuts if a < c < b}) + [b]
        for n in range(len(bounds) - 1):
            out.append((bounds[n], bounds[n + 1], n == 0, n == len(bounds) - 2))
    return out


def _stories(events: list[model.Event], same: float) -> list[float]:
    """When restarts that begin a new story happened: process starts, and cluster-log boots that are neither
    the boot of a process start just before nor a re-join after the mon marked the daemon down."""
    starts: dict[str, list[float]] = defaultdict(list)
    downs: dict[str, list[float]] = defaultdict(list)
    out = []
    for e in events:  # (sorted by time)
        if e.kind == model.OSD_START:
            starts[e.daemon].append(e.ts)
            out.append(e.ts)
        elif e.kind in DOWN_KINDS and e.detail.startswith("marked itself"):
            out.append(e.ts)  # a clean stop: the restart begins here
        elif e.kind in DOWN_KINDS:
            downs[e.daemon].append(e.ts)
        elif e.kind == model.MON_BOOT and not any(0 <= e.ts - t <= same
                                                  for t in starts[e.daemon][-4:] + downs[e.daemon][-4:]):
            out.append(e.ts)
    return out


def _latest_restarts(restarts: list[model.Event], first_drop: float) -> list[model.Event]:
    """A daemon restarted twice before an overflow: its last restart is the one that counts (the earlier one was
    over, its daemon up again). The restart's lines (process start, then the mon's boot line) stay together:
    the last process start is the anchor, or the last boot line where the OSD logs are missing."""
    anchor: dict[str, tuple[bool, float]] = {}
    for e in restarts:
        if e.ts <= first_drop + 1:
            key = (e.kind == model.OSD_START, e.ts)
            anchor[e.daemon] = max(anchor.get(e.daemon, key), key)
    return [e for e in restarts if e.ts > first_drop + 1 or e.ts >= anchor[e.daemon][1]]


def _restarts(evs: list[model.Event], window: float) -> list[model.Event]:
    """One entry per restart: each OSD-side start (its init line, or its process line when no init line
    follows), and the cluster log's boot line only when no start of that daemon came shortly before it (the
    same restart seen from the mon)."""
    starts: dict[str, list[float]] = defaultdict(list)
    inits: dict[str, list[float]] = defaultdict(list)
    for e in evs:
        if e.kind == model.OSD_START:
            starts[e.daemon].append(e.ts)
            if not e.detail:
                inits[e.daemon].append(e.ts)
    out = []
    for e in sorted(evs, key=lambda e: e.ts):
        if e.kind == model.OSD_START:
            # "ceph version ..., process ceph-osd, pid N" opens every run of the binary (also `--mkfs`); the
            # restart is its "done with init, starting boot process" (minutes later when a FileStore journal
            # replays). A process line counts alone only when no init line follows it (other log levels, a
            # start that never finished init)
            if not (e.detail.startswith("process start, pid")
                    and any(0 <= t - e.ts <= window for t in inits[e.daemon])):
                out.append(e)
        elif not any(0 <= e.ts - t <= window for t in starts[e.daemon]):
            out.append(e)
    return out


def _incident(start: float, end: float, evs: list[model.Event], bks: list[tuple[model.BucketKey, model.Bucket]],
              opts: Options, kernel_inputs: int) -> Incident:
    evs.sort(key=lambda e: e.ts)
    clock = evs[0].clock if evs else bks[0][1].first.clock
    series: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    # kernel, per host
    kern: dict[str, HostKernel] = {}
    last_kernel: dict[str, float] = {}
    for e in evs:
        if e.kind not in (model.TABLE_FULL, model.SUPPRESSED, model.COUNTED_DROPS):
            continue
        hk = kern.get(e.host)
        if hk is None:
            hk = kern[e.host] = HostKernel(host=e.host, first=e.ts, last=e.ts)
        hk.first, hk.last = min(hk.first, e.ts), max(hk.last, e.ts)
        if e.kind in (model.TABLE_FULL, model.COUNTED_DROPS):
            if e.kind == model.TABLE_FULL:
                hk.drops_logged += 1
            else:
                hk.drops_counted += e.count
            hk.first_ev = hk.first_ev or e
            hk.last_ev = e
            if e.detail and e.detail not in hk.netns:
                hk.netns.append(e.detail)
            if e.kind == model.COUNTED_DROPS and e.peer and e.peer not in hk.lab_scenarios:
                hk.lab_scenarios.append(e.peer)
            series[f"drops:{e.host or '-'}"][int(e.ts // 1)] += e.count
        else:
            # N messages were suppressed since the previous burst: spread them over that interval
            # (net.core.message_cost = 5 s) rather than pile them on one second
            hk.suppressed += e.count
            prev = last_kernel.get(e.host, e.ts - RATELIMIT_S)
            span = list(range(int(max(prev, e.ts - RATELIMIT_S) // 1), int(e.ts // 1) + 1))
            for sec in span:
                series[f"drops:{e.host or '-'}"][sec] += e.count // len(span)
            series[f"drops:{e.host or '-'}"][span[-1]] += e.count % len(span)
        last_kernel[e.host] = e.ts
    for hk in kern.values():
        hk.peak_per_s = max(series[f"drops:{hk.host or '-'}"].values(), default=0)
    # daemons
    ds: dict[str, DaemonStats] = {}

    def stats(daemon: str, host: str) -> DaemonStats:
        d = ds.get(daemon)
        if d is None:
            d = ds[daemon] = DaemonStats(daemon=daemon, host=host)
        if host and not d.host:
            d.host = host
        return d

    fault_sec: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for key, b in bks:
        d = stats(b.first.daemon, b.first.host)
        if key[1] == model.MS_FAULT:
            d.lossy_faults += b.count
            d.peers |= b.peers
            fault_sec[d.daemon][key[4]] += b.count
            series[f"faults:{b.first.host or '-'}"][key[4]] += b.count
            if d.first_fault is None or b.first.ts < d.first_fault.ts:
                d.first_fault = b.first
        else:
            d.closes += b.count
    for name, secs in fault_sec.items():
        ds[name].peak_faults_per_s = max(secs.values())
    for e in evs:
        if e.kind == model.MS_RESET:
            stats(e.daemon, e.host).resets += 1
        elif e.kind == model.HB_NO_REPLY:
            stats(e.daemon, e.host).heartbeat_no_reply += 1
        elif e.kind == model.SLOW and e.daemon:
            d = stats(e.daemon, e.host)
            d.slow_max = max(d.slow_max, e.count)
    # restarts and mark-downs
    downs_raw = [e for e in evs if e.kind in DOWN_KINDS]
    restarted: list[Point] = []
    for e in _restarts([x for x in evs if x.kind in RESTART_KINDS], opts.same_event):
        if e.kind == model.MON_BOOT and any(
                d.daemon == e.daemon and 0 <= e.ts - d.ts <= opts.same_event
                and (d.kind == model.WRONGLY_DOWN or not d.detail.startswith("marked itself")) for d in downs_raw):
            continue  # back up after a mark-down: a re-join, not a restart
        how = "process start (OSD log)" if e.kind == model.OSD_START else "boot (cluster log)"
        restarted.append(Point(e.daemon, e.host, e.ts, how, e))
    marked: list[Point] = []
    preferred = sorted(downs_raw, key=lambda e: (e.kind != model.MARKED_DOWN, e.ts))
    seen: dict[tuple[str, bool], float] = {}
    for e in preferred:
        # a clean stop (marked itself down) and a later failure of the restarted daemon are two events
        who = (e.daemon, e.kind == model.MARKED_DOWN and e.detail.startswith("marked itself"))
        if who in seen and abs(e.ts - seen[who]) <= opts.same_event:
            continue
        seen[who] = e.ts
        how = e.detail if e.kind == model.MARKED_DOWN else "wrongly marked me down (OSD log)"
        marked.append(Point(e.daemon, e.host, e.ts, how, e))
    marked.sort(key=lambda p: p.ts)
    hosts = sorted({e.host for e in evs if e.host} | {b.first.host for _, b in bks if b.first.host})
    inc = Incident(clock=clock, start=start, end=end, hosts=hosts, kernel=sorted(kern.values(), key=lambda k: k.first),
                   daemons=sorted(ds.values(), key=lambda d: (-d.lossy_faults, d.daemon)), restarted=restarted,
                   marked_down=marked, cause_kind="", cause="", claims=[],
                   series={k: dict(v) for k, v in series.items()})
    _cause(inc, evs, opts, kernel_inputs)
    return inc


def _names(points: list[Point], limit: int = 8) -> str:
    names = sorted({p.daemon for p in points if p.daemon}, key=_osd_order)
    s = ", ".join(names[:limit])
    return s + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _osd_order(name: str) -> tuple[str, int, str]:
    head, _, num = name.partition(".")
    return (head, int(num), "") if num.isdigit() else (head, 1 << 30, name)


def _s(x: float) -> str:
    return f"{x:.0f} s" if x >= 10 else f"{x:.1f} s"


def _beacon(downs: list[Point]) -> str:
    """How many of the mark-downs were the monitors' report timeout (OSDMonitor::handle_osd_timeouts): the OSD
    sent no beacon (Luminous on) or no pg stats (before) for mon_osd_report_timeout (900 s). That is how the
    2014 incident ended: the OSDs were alive but could not reach the mon through the full table."""
    timed = [p for p in downs if p.how.startswith(("no beacon", "no pg stats"))]
    if not timed:
        return ""
    what = "beacon" if timed[0].how.startswith("no beacon") else "pg stats"
    return (f", {len(timed)} of them for no {what} (after {timed[0].how.split(' for ')[-1]}: "
            f"mon_osd_report_timeout)")


def _cause(inc: Incident, evs: list[model.Event], opts: Options, kernel_inputs: int) -> None:
    claims: list[Claim] = []

    def fmt(ts: float) -> str:
        return fmt_ts(ts, inc.clock)

    faults = sum(d.lossy_faults for d in inc.daemons)
    peers: set[str] = set().union(*(d.peers for d in inc.daemons)) if inc.daemons else set()
    fault_daemons = [d for d in inc.daemons if d.lossy_faults]
    peak = max((v for k, s in inc.series.items() if k.startswith("faults:") for v in s.values()), default=0)
    if inc.kernel:
        first = min(inc.kernel, key=lambda k: k.first)
        first_drop = min((k.first_ev.ts for k in inc.kernel if k.first_ev), default=first.first)
        last_drop = max(k.last for k in inc.kernel)
        parts = []
        for k in inc.kernel:
            nets = f" (netns {', '.join(k.netns)})" if k.netns else ""
            seen = []
            if k.drops_counted:
                seen.append(f"{k.drops_counted} drops counted by the kernel's drop counter")
            if k.drops_logged or k.suppressed:
                seen.append(f"{k.drops_logged} 'table full' lines + {k.suppressed} suppressed")
            parts.append(f"{k.host or 'unknown host'}{nets}: {_s(k.duration)}, {', '.join(seen)}, "
                         f"peak {k.peak_per_s}/s")
        ev = [Evidence.of(e) for k in inc.kernel for e in (k.first_ev, k.last_ev) if e is not None]
        caveat = (" (suppressed = net_ratelimit's count of unprinted messages; its budget is shared with other "
                  "kernel network messages, so it is an upper bound)") if inc.suppressed else ""
        claims.append(Claim(
            "the nf_conntrack table was full and the kernel dropped new connections: " + "; ".join(parts) + caveat,
            ev[:4]))
        trigger = [p for p in inc.restarted if p.ts <= first_drop + 1]
        kind = "conntrack-overflow"
        summary = [f"nf_conntrack table overflow on {', '.join(k.host or '?' for k in inc.kernel)} "
                   f"({_s(last_drop - first_drop)} of drops)"]
        if trigger:
            t0 = min(p.ts for p in trigger)
            span = max(p.ts for p in trigger) - t0
            claims.append(Claim(
                f"it started {_s(first_drop - t0)} after {len(trigger)} daemon restart(s) within {_s(span)} "
                f"({_names(trigger)}, first at {fmt(t0)}): restarted daemons reconnect to every peer at once, "
                f"and the closed connections stay in the table (TIME_WAIT, 120 s)",
                [Evidence.of(p.ev) for p in sorted(trigger, key=lambda p: p.ts)[:3]] + [
                    Evidence.of(e) for e in (first.first_ev,) if e is not None]))
            kind = CONNTRACK_KINDS[0]
            n_daemons = len({p.daemon for p in trigger if p.daemon}) or len(trigger)
            what = (f"the restart of {n_daemons} daemon(s)" if n_daemons == len(trigger)
                    else f"{len(trigger)} restarts of {n_daemons} daemon(s)")  # some daemons restarted twice
            summary.append(f"triggered by {what} ({_names(trigger, 4)}) {_s(first_drop - t0)} before")
        during = [d for d in fault_daemons if d.first_fault is not None and d.first_fault.ts <= last_drop]
        if during:
            n_during = sum(d.lossy_faults for d in during)
            claims.append(Claim(
                f"a lossy-connection reconnect loop sustained it: {n_during} 'fault on lossy channel' lines on "
                f"{', '.join(d.daemon for d in during[:6])}{f' and {len(during) - 6} more' if len(during) > 6 else ''} from {len(peers)}{'+' if len(peers) >= model.PEER_CAP else ''} "
                f"distinct peers, peak {peak}/s: a lossy connection is not retried by the messenger, the peer "
                f"opens a new one, and each new one needs a new conntrack entry",
                [Evidence.of(d.first_fault) for d in during[:3] if d.first_fault is not None]))
            if kind == "conntrack-overflow":
                kind = CONNTRACK_KINDS[1]
            summary.append(f"sustained by a lossy-client reconnect loop ({faults} faults from {len(peers)} peers)")
        # an OSD that marked itself down was stopped (a restart), the monitors did not end anything by it
        after = [p for p in inc.marked_down if p.ts >= first_drop - 1]
        downs = [p for p in after if not p.how.startswith("marked itself")]
        if downs:
            t1 = min(p.ts for p in downs)
            claims.append(Claim(
                f"it ended when the monitors marked {len(downs)} OSD(s) down ({_names(downs)}), the first "
                f"{_s(t1 - first_drop)} after the first drop ({downs[0].how}); the last 'table full' line is at "
                f"{fmt(last_drop)}", [Evidence.of(p.ev) for p in downs[:3]]))
            summary.append(f"ended when the mon marked {len(downs)} OSD(s) down {_s(t1 - first_drop)} after "
                           f"the first drop" + _beacon(downs))
        elif after:
            summary.append(f"drops stopped at {fmt(last_drop)}; the OSDs that went down meanwhile stopped cleanly "
                           f"(marked themselves down: {_names(after, 4)})")
        else:
            summary.append(f"drops stopped at {fmt(last_drop)} with no mark-down line in the inputs")
        if not trigger:
            claims.append(Claim("no daemon restart line in the inputs in the "
                                f"{_s(opts.lookback)} before the first drop: cannot tell which restart, if any, "
                                "started it (add the OSD logs or the cluster log)", []))
        inc.cause_kind, inc.cause = kind, "; ".join(summary)
    else:
        trouble = []
        if inc.marked_down:
            trouble.append(f"{len(inc.marked_down)} OSD(s) marked down ({_names(inc.marked_down, 4)})"
                           + _beacon(inc.marked_down))
            claims.append(Claim(f"OSDs marked down: {_names(inc.marked_down)}",
                                [Evidence.of(p.ev) for p in inc.marked_down[:3]]))
        if faults:
            trouble.append(f"{faults} lossy faults (peak {peak}/s)")
            claims.append(Claim(f"{faults} 'fault on lossy channel' lines from {len(peers)} peers, peak {peak}/s",
                                [Evidence.of(d.first_fault) for d in fault_daemons[:3] if d.first_fault]))
        hb = [e for e in evs if e.kind == model.HB_NO_REPLY]
        if hb:
            trouble.append(f"{len(hb)} heartbeat failures")
            claims.append(Claim(f"{len(hb)} heartbeat_check 'no reply' lines", [Evidence.of(hb[0])]))
        slow = [e for e in evs if e.kind == model.SLOW]
        if slow:
            trouble.append(f"slow requests (up to {max(e.count for e in slow)})")
            claims.append(Claim("slow/blocked requests", [Evidence.of(slow[0])]))
        if inc.restarted:
            claims.append(Claim(f"restarts: {_names(inc.restarted)}", [Evidence.of(p.ev) for p in inc.restarted[:3]]))
        what = ", ".join(trouble) or "OSD trouble"
        clean = (inc.restarted and all(p.how.startswith("marked itself down") for p in inc.marked_down)
                 and not faults and not hb)
        if clean and kernel_inputs:
            inc.cause_kind = "clean-restart"
            inc.cause = (f"{len(inc.restarted)} daemon restart(s) ({_names(inc.restarted, 4)}): stopped cleanly "
                         f"(marked themselves down) and booted again, no conntrack drop in the kernel evidence"
                         + (f"; slow requests up to {max(e.count for e in slow)} while PGs peered" if slow else ""))
        elif kernel_inputs == 0:
            inc.cause_kind = "no-kernel-log"
            inc.cause = (f"{what}; no kernel log among the inputs, so nf_conntrack overflow can be neither shown "
                         f"nor ruled out: add kern.log, `journalctl -k` or dmesg of the OSD hosts")
        else:
            inc.cause_kind = "not-conntrack"
            inc.cause = (f"{what}; no conntrack drop in the kernel evidence for this window (no 'table full' line, "
                         f"no rise of the drop counter), so the table did not overflow: look at the network, the "
                         f"disks or the load instead")
    inc.claims = claims
