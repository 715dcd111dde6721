"""Benchmark: `ctguard status` on a full table, side by side with `conntrack -L` and a raw netlink dump.

Run as root from the repo root:  .venv/bin/python benchmarks/bench_status.py [--entries N] [--repeat R]

Fills a fresh namespace with N ASSURED (ESTABLISHED) entries (default: the global nf_conntrack_max, 262,144
here), then times, in the same run and interleaved: `conntrack -L > /dev/null` in the namespace; a raw
ctnetlink dump that only receives the bytes; the breakdown in-process (`read_breakdown`, what the exporter
and restart gates call) and as the command `ctguard status --breakdown --json` (including interpreter start);
and counters-only `table_status` in-process and as a command. Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Callable

from common import timed

from ctguard.kernel import ctdump, netns
from ctguard.kernel import nfnetlink as nl
from ctguard.kernel.settings import conntrack_settings
from ctguard.lab.fill import fill
from ctguard.lab.testbed import FILL_SRC, Testbed
from ctguard.table.status import read_breakdown, table_status

CTGUARD = [sys.executable, "-c", "from ctguard.cli import main; main()"]


def raw_dump(ns: netns.Netns) -> int:
    with netns.entered(ns):
        s = nl.open_socket()
    try:
        s.send(ctdump.dump_request())
        n = 0
        for buf in nl.recv_buffers(s, "dump"):
            n += len(buf)
            # NLMSG_DONE (20 bytes) closes the last buffer of the dump
            if len(buf) >= 20 and buf[-20:-16] == b"\x14\x00\x00\x00" and buf[-16] == nl.NLMSG_DONE:
                return n
    finally:
        s.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    with Testbed() as tb:
        ns = tb.ns()
        n = a.entries or conntrack_settings(ns).max
        f = fill("tcp-est", n, FILL_SRC, ns)
        count = conntrack_settings(ns).count
        print(f"filled {count:,} entries in {f.seconds:.1f} s", file=sys.stderr)
        cases: dict[str, Callable[[], object]] = {
            "conntrack -L > /dev/null": lambda: subprocess.run(
                ["ip", "netns", "exec", tb.srv, "conntrack", "-L"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, check=True),
            "raw netlink dump (receive only)": lambda: raw_dump(ns),
            "breakdown, in-process (read_breakdown)": lambda: read_breakdown(ns),
            "`ctguard status --breakdown --json` (command)": lambda: subprocess.run(
                CTGUARD + ["status", "--netns", tb.srv, "--breakdown", "--json", "--state-dir", "/tmp/ctg-bench"],
                stdout=subprocess.DEVNULL, check=False),
            "counters-only status, in-process": lambda: table_status(ns, state_dir="/tmp/ctg-bench"),
            "`ctguard status --json` (command)": lambda: subprocess.run(
                CTGUARD + ["status", "--netns", tb.srv, "--json", "--state-dir", "/tmp/ctg-bench"],
                stdout=subprocess.DEVNULL, check=False),
            "python interpreter start + `import ctguard.cli` (for reference)": lambda: subprocess.run(
                [sys.executable, "-c", "import ctguard.cli"], check=True),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(a.repeat):
            for k, fn in cases.items():
                times[k].append(timed(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        ct = med["conntrack -L > /dev/null"]
        raw = med["raw netlink dump (receive only)"]
        print(f"\n{count:,} ASSURED entries, median of {a.repeat} interleaved runs\n")
        print("| what | median | vs `conntrack -L` | vs raw dump |")
        print("|---|---|---|---|")
        for k, v in med.items():
            unit = f"{v * 1000:.1f} ms" if v < 1 else f"{v:.3f} s"
            print(f"| {k} | {unit} | {ct / v:.2f}x faster | {v / raw:.2f}x the time |")


if __name__ == "__main__":
    main()
