"""Benchmark: the idle cost of `ctguard guard --preempt` on a full 262,144-entry table with nothing to do.

Run as root from the repo root:  .venv/bin/python benchmarks/bench_guard_idle.py [--seconds 60]

Squeezes a table to the limit, so it takes /tmp/ctguard-heavy.lock for the whole run. In a fresh Testbed
namespace filled with ASSURED (ESTABLISHED) entries up to the global nf_conntrack_max (never written; 262,144
here), it runs the real CLI, `ctguard guard --apply --json`, inside that namespace and reads the guard process's
own CPU time (utime + stime of /proc/PID/stat) over a steady window, after its start-up (interpreter, first poll,
first purge and first breakdown) is over:
  A  --preempt on the full table: free 0 < reserve, nothing purgeable (its one purge at the start found nothing,
     so it backs off) - the worst idle case, polled at 10 Hz;
  B  --preempt with free entries above the reserve (the normal state of a host);
  C  without --preempt (drop counter only), for reference.
Then the cost of one reserve refresh: the breakdown child (`python -m ctguard.export.breakdown`) on the full table,
CPU time of the child, spread over the default --reserve-interval (300 s). Goal: <= 1 % of one core in all.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import subprocess
import sys
import time

from ctguard.kernel.netns import Netns
from ctguard.kernel.settings import conntrack_settings
from ctguard.lab.fill import fill
from ctguard.lab.testbed import FILL_SRC, Testbed
from ctguard.table.purge import purge

CLI = [sys.executable, "-c", "from ctguard.cli import main; main()"]
TICK = os.sysconf("SC_CLK_TCK")
RESERVE_INTERVAL = 300.0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, waited-for children) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def events(path: str) -> list[dict[str, object]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def measure(ns: str, state_dir: str, seconds: float, *args: str) -> dict[str, object]:
    log = os.path.join(state_dir, f"guard{'-'.join(args)}.jsonl")
    with open(log, "wb") as out:
        p = subprocess.Popen([*CLI, "guard", "--apply", "--json", "--netns", ns, "--state-dir", state_dir,  # noqa: S603
                              *args], stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # start-up: interpreter, first poll (and first purge when below the reserve), the first breakdown child
        time.sleep(15.0)
        c0, k0 = cpu_seconds(p.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        c1, k1 = cpu_seconds(p.pid)
        wall = time.monotonic() - t0
    finally:
        p.terminate()
        p.wait(15)
    evs = events(log)
    stop = evs[-1]
    return {"args": " ".join(args) or "(drop counter only)", "cpu_pct": round((c1 - c0) / wall * 100, 3),
            "children_cpu_s": round(k1 - k0, 3), "window_s": round(wall, 1),
            "purges": stop.get("purges"), "per_poll_us": round((c1 - c0) / (wall * 10) * 1e6, 1),
            "reserve": next((e.get("reserve") for e in evs if e["event"] == "reserve"), None)}


def breakdown_child_cpu(ns: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "ctguard.export.breakdown", "--netns", ns],  # noqa: S603
                   check=True, stdout=subprocess.DEVNULL, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0, help="steady window per case")
    a = ap.parse_args()
    state_dir = f"/tmp/ctguard-bench-guard-{os.getpid()}"  # noqa: S108 - a private scratch dir
    os.makedirs(state_dir, exist_ok=True)
    with open("/tmp/ctguard-heavy.lock", "a") as lock:  # noqa: S108
        fcntl.flock(lock, fcntl.LOCK_EX)
        with Testbed() as tb:
            ns = Netns(name=tb.srv)
            limit = conntrack_settings(ns).max
            t = time.perf_counter()
            fill("tcp-est", limit, FILL_SRC, ns)
            full = conntrack_settings(ns).count
            print(f"filled {full:,} / {limit:,} entries in {time.perf_counter() - t:.1f} s; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
            rows = [measure(tb.srv, state_dir, a.seconds, "--preempt")]
            bd = breakdown_child_cpu(tb.srv)
            # B and C: a table with 10,000 free entries (above the 2,622 reserve): flush our own namespace, refill
            tb.exec(tb.srv, ["conntrack", "-F"], check=False)
            fill("tcp-est", limit - 10_000, FILL_SRC, ns)
            rows.append(measure(tb.srv, state_dir, a.seconds, "--preempt") | {"table": f"{limit - 10_000:,}"})
            rows.append(measure(tb.srv, state_dir, a.seconds) | {"table": f"{limit - 10_000:,}"})
            purge(ns)
    print("\n| case | table | guard CPU (% of one core) | per poll | purges in run |")
    print("|---|---|---|---|---|")
    names = ["A `--preempt`, full table, nothing to purge", "B `--preempt`, free above the reserve",
             "C drop counter only"]
    for name, r in zip(names, rows, strict=True):
        print(f"| {name} | {r.get('table', f'{full:,}')} | {r['cpu_pct']:.3f} % | {r['per_poll_us']} us | "
              f"{r['purges']} |")
    print(f"\nbreakdown child for the reserve on the full table: {bd:.2f} s CPU, i.e. "
          f"{bd / RESERVE_INTERVAL * 100:.2f} % of a core at --reserve-interval {RESERVE_INTERVAL:g} s")
    print(f"A + reserve refresh: {float(rows[0]['cpu_pct']) + bd / RESERVE_INTERVAL * 100:.2f} % of one core")
    print(json.dumps({"rows": rows, "breakdown_child_cpu_s": bd, "limit": limit, "full": full,
                      "load": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
