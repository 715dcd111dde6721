"""Benchmark: `ctguard simulate` what-ifs (issue 6 goals: one host's scenario <= 0.5 s; a rolling restart of
1,000 hosts x 24 OSDs <= 10 s). No peer does this (anchors-features.md §8 item 7); the reference point is
the research note's measured event-loop speed (simpy 0.2 M events/s, heapq 0.6 M events/s: a per-connection
event simulation of one 24-OSD host's ~12 k connection churns would take ~0.1 s, a 1,000-host fleet minutes).

    PYTHONPATH=src python benchmarks/bench_simulate.py
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from ctguard.model import whatif  # noqa: E402
from ctguard.model.scenario import ClusterSpec, Scenario, load  # noqa: E402
from ctguard.model.simulate import Strategy  # noqa: E402
from ctguard.model.table import TableConfig  # noqa: E402

FIX = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "scenarios")


def timed(label: str, fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times, cpu = [], []
    out = None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    best, med = min(times), statistics.median(times)
    # wall and CPU time: other jobs share this 2-CPU machine, so wall time includes waiting for a CPU
    print(f"{label:72s} wall best {best:7.3f} s median {med:7.3f} s, CPU {min(cpu):7.3f} s   {summary(out)}")
    return best


def summary(out: object) -> str:
    if isinstance(out, whatif.WhatIf):
        return f"verdict {out.verdict}, peak {out.headline.peak_entries:,.0f}"
    if isinstance(out, whatif.FleetResult):
        return f"verdict {out.to_json()['verdict']}, worst peak {out.worst_peak:,.0f}, overflowing {out.overflowing_hosts}"
    return ""


def main() -> None:
    print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    seed = load(os.path.join(FIX, "seed-2014.yaml"))
    lab = load(os.path.join(FIX, "lab-3x4.json"))
    timed("one host: lab 3x4, all at once, 6 GC phases", lambda: whatif.run(lab))
    timed("one host: seed 8 OSDs, stagger 10 s, 6 GC phases", lambda: whatif.run(
        dataclasses.replace(seed, strategy=Strategy("stagger", gap_s=10))))
    timed("one host: seed 8 OSDs, all at once (900 s reconnect loop), 6 GC phases",
          lambda: whatif.run(seed))
    timed("one host: 24 OSDs x 300 clients, stagger 10 s, 6 GC phases", lambda: whatif.run(Scenario(
        cluster=ClusterSpec(1000, 24, clients_per_osd=300), table=TableConfig(262144),
        strategy=Strategy("stagger", gap_s=10)).validate()))
    fleet = Scenario(cluster=ClusterSpec(1000, 24, clients_per_osd=300), table=TableConfig(262144),
                     strategy=Strategy("stagger", gap_s=10)).validate()
    timed("fleet: 1,000 hosts x 24 OSDs, rolling, one OSD every 10 s (identical hosts memoised)",
          lambda: whatif.run_fleet(fleet))
    timed("fleet: same, every host simulated (memo off)", lambda: whatif.run_fleet(fleet, memo=False), repeat=1)
    timed("fleet: 1,000 hosts x 24 OSDs, rolling, batches of 4 every 20 s (memo off)", lambda: whatif.run_fleet(
        dataclasses.replace(fleet, strategy=Strategy("batch", gap_s=20, batch=4)), memo=False), repeat=1)


if __name__ == "__main__":
    main()
