"""Time series of one lab host during a scenario: the conntrack table at >= 5 Hz (count, drop, early_drop),
entries by state (leaving the filler out), and Ceph's view (OSDs up, PG states, slow ops) about once a second.

Three threads, so a slow `ceph -s` never delays the table samples. The state breakdown uses a kernel-side
mark filter (`conntrack -L --mark 0/1`): the host firewall marks filler entries 0x1, so the kernel walks the
table but serialises only the ~hundreds of real entries (48 ms with 100k filler entries, measured), instead
of a 0.7 s full dump. Every record is a dict with `t` (seconds since the sampler's t0) and `kind`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ctguard.errors import CtguardError
from ctguard.kernel.netns import Netns
from ctguard.kernel.settings import conntrack_count
from ctguard.kernel.stats import conntrack_stats
from ctguard.runner import run

Record = dict[str, Any]


def parse_conntrack_states(text: str) -> dict[str, int]:
    """`conntrack -L` lines -> {TCP state or protocol name: entries}."""
    c: Counter[str] = Counter()
    for line in text.splitlines():
        p = line.split()
        if len(p) < 4:
            continue
        if p[0] == "tcp" and not p[3].startswith("src="):
            c[p[3]] += 1
        else:
            c[p[0]] += 1
    return dict(c)


def parse_ceph_status(s: dict[str, Any]) -> Record:
    osdmap = s.get("osdmap", {})
    osdmap = osdmap.get("osdmap", osdmap)
    pgmap = s.get("pgmap", {})
    checks = s.get("health", {}).get("checks", {})
    slow = 0
    for code in ("SLOW_OPS", "REQUEST_SLOW", "REQUEST_STUCK"):
        msg = str(checks.get(code, {}).get("summary", {}).get("message", ""))
        num = msg.split()[0] if msg else "0"
        slow += int(num) if num.isdigit() else (1 if msg else 0)
    states = {str(x["state_name"]): int(x["count"]) for x in pgmap.get("pgs_by_state", [])}
    return {
        "health": s.get("health", {}).get("status"),
        "checks": sorted(checks),
        "osds": int(osdmap.get("num_osds", 0)),
        "osds_up": int(osdmap.get("num_up_osds", 0)),
        "osds_in": int(osdmap.get("num_in_osds", 0)),
        "num_pgs": int(pgmap.get("num_pgs", 0)),
        "pgs_clean": states.get("active+clean", 0),
        "pg_states": states,
        "slow_ops": slow,
    }


class Sampler:
    def __init__(self, ns: Netns, ceph_json: Callable[[list[str], float], Any] | None,
                 hz: float = 10.0, states_hz: float = 2.0, ceph_period: float = 1.0,
                 on_drop: Callable[[float, int, int], None] | None = None) -> None:
        self.ns = ns
        self.ceph_json = ceph_json
        self.period = 1.0 / hz
        self.states_period = 1.0 / states_hz
        self.ceph_period = ceph_period
        self.on_drop = on_drop
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.t0 = 0.0
        self.errors: list[str] = []

    def add(self, kind: str, at: float | None = None, **fields: Any) -> None:
        """Record now, or at epoch time `at` (events reported later by another program)."""
        rec = {"t": round((time.time() if at is None else at) - self.t0, 3), "kind": kind, **fields}
        with self._lock:
            self.records.append(rec)

    def start(self) -> None:
        self.t0 = time.time()
        self._stop.clear()
        for target in (self._ct_loop, self._states_loop, self._ceph_loop):
            if target == self._ceph_loop and self.ceph_json is None:
                continue
            th = threading.Thread(target=target, daemon=True)
            th.start()
            self._threads.append(th)

    def stop(self) -> list[Record]:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=30)
        self._threads.clear()
        with self._lock:
            return sorted(self.records, key=lambda r: float(r["t"]))

    def latest(self, kind: str) -> Record | None:
        with self._lock:
            for r in reversed(self.records):
                if r["kind"] == kind:
                    return r
        return None

    def records_since(self, kind: str, seconds: float) -> list[Record]:
        """Records of `kind` from the last `seconds` seconds, oldest first."""
        cut = time.time() - self.t0 - seconds
        with self._lock:
            return [r for r in self.records if r["kind"] == kind and float(r["t"]) >= cut]

    def last_event_t(self) -> float:
        with self._lock:
            return max((float(r["t"]) for r in self.records if r["kind"] == "event"), default=0.0)

    def _ct_loop(self) -> None:
        base_drop: int | None = None
        last_drop = 0
        nxt = time.monotonic()
        while not self._stop.is_set():
            try:
                count = conntrack_count(self.ns)
                st = conntrack_stats(self.ns)
                drop, early = st.get("drop"), st.get("early_drop")
                self.add("ct", count=count, drop=drop, early_drop=early)
                if base_drop is None:
                    base_drop = last_drop = drop
                elif drop > last_drop:
                    if self.on_drop is not None:
                        self.on_drop(time.time() - self.t0, drop - base_drop, drop - last_drop)
                    last_drop = drop
            except CtguardError as e:
                self.errors.append(e.message)
            nxt += self.period
            delay = nxt - time.monotonic()
            if delay < 0:
                nxt = time.monotonic()
            self._stop.wait(max(0.0, delay))

    def _states_loop(self) -> None:
        argv = ["ip", "netns", "exec", self.ns.name or "", "conntrack", "-L", "--mark", "0/1"]
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                done = run(argv, timeout=10)
                self.add("states", by_state=parse_conntrack_states(done.stdout))
            except CtguardError as e:
                self.errors.append(e.message)
            self._stop.wait(max(0.0, self.states_period - (time.monotonic() - t)))

    def _ceph_loop(self) -> None:
        assert self.ceph_json is not None
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                self.add("ceph", **parse_ceph_status(self.ceph_json(["-s"], 10.0)))
            except CtguardError as e:
                self.errors.append(e.message)
            self._stop.wait(max(0.0, self.ceph_period - (time.monotonic() - t)))
