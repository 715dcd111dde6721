"""Gated `ctguard restart` vs fixed 10 s gaps vs all at once, side by side on one lab host, in two regimes.

    sudo PYTHONPATH=src python benchmarks/bench_restart.py [--hosts 2 --osds-per-host 4] [--json out.json]

Regime "ample": the host's table as the lab leaves it. Regime "tight": the host's free entries shrunk with
ESTABLISHED filler below its measured all-at-once burst (still enough for one OSD's predicted burst).
For each strategy: noout set for the run (as an operator would), the host's OSDs restarted, then the time
until every OSD is up and every PG active+clean (makespan), the host's conntrack drops and peak entries
(10 Hz sampler). Between runs: closing entries purged, the lab clean again, the filler topped up.
Brings up its own lab (prefix ctrb + hex) and tears it down, even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

from ctguard.ceph.client import CephClient
from ctguard.kernel.netns import Netns
from ctguard.kernel.settings import conntrack_count, conntrack_settings
from ctguard.kernel.stats import conntrack_stats

CT = [sys.executable, "-c", "from ctguard.cli import main; main()"]
RESERVE = 16


@dataclass
class Run:
    regime: str
    strategy: str
    free_before: int = 0
    entries_before: int = 0
    peak_added: int = 0
    drops: int = 0
    makespan_s: float = 0.0
    exit_code: int | None = None
    waited: dict[str, float] = field(default_factory=dict)
    why_waited: str = ""  # ctguard's last headroom `wait` reason
    result: str = ""


class Sampler(threading.Thread):
    def __init__(self, ns: Netns) -> None:
        super().__init__(daemon=True)
        self.ns, self.stop_ = ns, threading.Event()
        self.peak = conntrack_count(ns)
        self.drop0 = conntrack_stats(ns).get("drop")
        self.drop = self.drop0

    def run(self) -> None:
        while not self.stop_.wait(0.1):
            self.peak = max(self.peak, conntrack_count(self.ns))
            self.drop = conntrack_stats(self.ns).get("drop")


def sh(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CT, *args], capture_output=True, text=True, timeout=timeout)


class Bench:
    def __init__(self, prefix: str, base: str, gap: float, events_dir: str | None = None) -> None:
        from ctguard.lab.cluster import Lab

        self.lab = Lab.load(prefix=prefix, base_dir=base)
        self.prefix, self.base, self.gap = prefix, base, gap
        self.ceph = CephClient(self.lab.ceph_argv(), timeout=30)
        self.host = self.lab.hosts[0]
        self.ns = self.lab.host_netns(self.host)
        self.filled = 0
        self.events_dir = events_dir

    def wait_clean(self, timeout: float = 300) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                dump = self.ceph.osd_dump()
                if all(o.up for o in dump.osds.values()) and self.ceph.pg_stat().all_clean \
                        and self.ceph.status().pgs.all_clean:
                    return time.monotonic()
            except Exception:  # noqa: BLE001 - busy cluster: ask again
                pass
            time.sleep(0.5)
        raise RuntimeError("lab not clean")

    def reset(self, free: int | None) -> None:
        from ctguard.lab.fill import fill
        from ctguard.table.purge import purge

        self.wait_clean()
        purge(self.ns)
        time.sleep(3)
        purge(self.ns)
        if free is not None:
            s = conntrack_settings(self.ns)
            n = s.max - free - s.count
            if n > 0:
                fill("tcp-est", n, self.lab.fill_src(self.host), self.ns, start=self.filled)
                self.filled += n

    def one(self, regime: str, strategy: str, free: int | None) -> Run:
        self.reset(free)
        s = conntrack_settings(self.ns)
        run = Run(regime, strategy, free_before=s.max - s.count, entries_before=s.count)
        sampler = Sampler(self.ns)
        sampler.start()
        t0 = time.monotonic()
        try:
            if strategy == "ctguard":
                with tempfile.TemporaryDirectory(prefix="ctrb-state") as st:
                    p = sh("restart", "--lab", self.prefix, "--lab-dir", self.base, "--host", self.host, "--json",
                           "--reserve", str(RESERVE), "--state-dir", st, timeout=1800)
                run.exit_code = p.returncode
                if self.events_dir:
                    with open(os.path.join(self.events_dir, f"ctguard-{regime}.jsonl"), "w") as f:
                        f.write(p.stdout)
                for line in p.stdout.splitlines():
                    ev = json.loads(line)
                    if ev["event"] in ("done", "abort"):
                        run.waited = ev.get("waited", {})
                        run.result = ev["reason"]
                    if ev["event"] == "wait" and ev.get("gate") == "headroom" and "reason" in ev:
                        run.why_waited = ev["reason"]
            else:
                self.ceph.set_flag("noout")
                try:
                    self.lab.restart_osds(self.host, all_at_once=strategy == "all-at-once", gap=self.gap)
                    self.wait_clean()
                finally:
                    self.ceph.unset_flag("noout")
            t1 = self.wait_clean()
        finally:
            sampler.stop_.set()
            sampler.join()
        run.makespan_s = round(t1 - t0, 1)
        run.peak_added = sampler.peak - run.entries_before
        run.drops = sampler.drop - sampler.drop0
        return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--osds-per-host", type=int, default=4)
    ap.add_argument("--gap", type=float, default=10.0)
    ap.add_argument("--strategies", default="all-at-once,fixed-10s,ctguard")
    ap.add_argument("--regimes", default="ample,tight")
    ap.add_argument("--json", dest="json_out", default=None)
    ap.add_argument("--events-dir", default=None, help="Keep ctguard's JSON event stream of each regime here.")
    a = ap.parse_args()
    prefix = "ctrb" + secrets.token_hex(2)
    base = tempfile.mkdtemp(prefix="ctrb-lab")
    up = sh("lab", "up", "--prefix", prefix, "--hosts", str(a.hosts), "--osds-per-host", str(a.osds_per_host),
            "--dir", base)
    runs: list[Run] = []
    try:
        if up.returncode != 0:
            print(up.stderr, file=sys.stderr)
            return 2
        b = Bench(prefix, base, a.gap, a.events_dir)
        from ctguard.restart.gates import LocalKernelSource

        strategies = a.strategies.split(",")
        burst: int | None = None
        for regime in a.regimes.split(","):
            free: int | None = None
            if regime == "tight":
                b.reset(None)
                live = LocalKernelSource(netns_of=lambda h: b.ns).live(b.host, b.lab.osd_ids(b.host))
                # one OSD's predicted burst at the start factor 2.0, plus slack: entries move by a few as
                # peers reconnect, and the ESTABLISHED filler never expires
                one = 2 * max(live.daemon_entries.values()) + RESERVE + 12
                all_at_once = burst or int(1.3 * sum(live.daemon_entries.values()))
                free = max(one, all_at_once // 2)
                print(f"tight: free {free} entries (one OSD needs {one} predicted; all at once added "
                      f"{all_at_once})", file=sys.stderr)
            for strategy in strategies:
                r = b.one(regime, strategy, free)
                if regime == "ample" and strategy == "all-at-once":
                    burst = r.peak_added
                runs.append(r)
                print(json.dumps(asdict(r)), file=sys.stderr)
    finally:
        sh("lab", "down", "--prefix", prefix, "--dir", base)
        shutil.rmtree(base, ignore_errors=True)
    print("| regime | strategy | free before | peak added | drops | makespan (s) | ctguard waited (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        w = ", ".join(f"{k} {v:g}" for k, v in r.waited.items() if v) if r.waited else ""
        print(f"| {r.regime} | {r.strategy} | {r.free_before} | {r.peak_added} | {r.drops} | {r.makespan_s} | {w} |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"schema": 1, "hosts": a.hosts, "osds_per_host": a.osds_per_host, "gap": a.gap,
                       "runs": [asdict(r) for r in runs]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
