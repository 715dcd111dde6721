"""Benchmark: `lab up` of a 3 x 4 memstore cluster to HEALTH_OK with all PGs active+clean, and `lab down`.

Run as root from the repo root:  .venv/bin/python benchmarks/bench_lab_up.py [--repeat R] [--hosts H] [--osds K]

Target <= 30 s (issue: lab). Peer: the shell recipe of shared/reference/ceph-lab.md §3 (multi_host.sh), measured
11.27-11.49 s on this VM with about one free core. Each repeat uses its own prefix and a temporary lab dir,
prints the per-step times from the lab's journal and the 1-minute load average (other jobs share the machine).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time

from ctguard.lab.cluster import down, up
from ctguard.lab.config import LabSpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--osds", type=int, default=4)
    args = ap.parse_args()
    ups: list[float] = []
    downs: list[float] = []
    print("| run | load avg | network | mon | mgr | osd ids | osds started | ready (= lab up) | lab down |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i in range(args.repeat):
        prefix = "ctb" + secrets.token_hex(2)
        with tempfile.TemporaryDirectory() as base:
            load = os.getloadavg()[0]
            t = time.monotonic()
            try:
                lab = up(LabSpec(prefix=prefix, hosts=args.hosts, osds_per_host=args.osds, base_dir=base))
                ups.append(time.monotonic() - t)
                tm = lab.state.timings
            finally:
                t = time.monotonic()
                down(prefix, base)
                downs.append(time.monotonic() - t)
            print(f"| {i + 1} | {load:.1f} | {tm['network']:.2f} | {tm['mon']:.2f} | {tm['mgr']:.2f} | "
                  f"{tm['osd_ids']:.2f} | {tm['osds_started']:.2f} | **{ups[-1]:.1f} s** | {downs[-1]:.1f} s |")
    print(f"\nlab up median {statistics.median(ups):.1f} s, lab down median {statistics.median(downs):.1f} s "
          f"({args.hosts} x {args.osds} memstore)")


if __name__ == "__main__":
    main()
