"""A small librados client for the lab: keeps sessions open to the OSDs like a production client does, with
a steady trickle of 4 KiB writes and reads over a fixed set of objects (so memstore never fills up:
ceph-lab.md pitfall 3), and logs one JSON line per second: ops done, errors, worst latency.

Runs under the system python3 (Debian's python3-rados), standalone: it imports nothing from ctguard.
    python3 workload.py --conf LAB/ceph.conf --pool labpool --name 0 --log LAB/log/client.0.jsonl
Every librados call is bounded by `rados osd op timeout` / `rados mon op timeout` from the lab's ceph.conf,
so a stalled cluster shows up as errors and latency here, never as a hung client.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conf", required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--name", default="0")
    ap.add_argument("--log", required=True)
    ap.add_argument("--objects", type=int, default=64)
    ap.add_argument("--rate", type=float, default=40.0, help="operations per second")
    args = ap.parse_args(argv)

    import rados

    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    cluster = rados.Rados(conffile=args.conf, conf={"rados_osd_op_timeout": "30", "rados_mon_op_timeout": "30"})
    cluster.connect(timeout=30)
    ioctx = cluster.open_ioctx(args.pool)
    payload = b"x" * 4096
    names = [f"lab-client{args.name}-obj{i}" for i in range(args.objects)]
    period = 1.0 / args.rate
    with open(args.log, "a", buffering=1) as log:
        i = 0
        sec = int(time.time())
        ops = errors = 0
        worst = 0.0
        while not stop:
            t = time.monotonic()
            name = names[(i // 2) % len(names)]
            try:
                if i % 2 == 0:
                    ioctx.write_full(name, payload)
                else:  # read back what was just written
                    ioctx.read(name, 4096)
                ops += 1
            except rados.Error:
                errors += 1
            dt = time.monotonic() - t
            worst = max(worst, dt)
            i += 1
            now = int(time.time())
            if now != sec:
                log.write(json.dumps({"t": sec, "ops": ops, "errors": errors, "worst_ms": round(worst * 1000, 1)})
                          + "\n")
                sec, ops, errors, worst = now, 0, 0, 0.0
            rest = period - (time.monotonic() - t)
            if rest > 0:
                time.sleep(rest)
    ioctx.close()
    cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
