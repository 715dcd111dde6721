#!/usr/bin/env python3
"""Benchmark: `ctguard diagnose` against `grep -c 'table full'` on the same generated mixed log, side by side.

The log is what a Ceph OSD host's syslog looks like when the daemons log to journald (a cephadm/containerised
or Proxmox host): mostly ordinary lines (OSD debug lines wrapped in syslog, sshd, cron, other kernel messages),
a realistic share of kernel conntrack lines (0.2 %) and messenger lossy-fault lines (0.5 %), and a few OSD
events. It is written under /tmp (default 1 GiB) and deleted at the end (--keep to keep it).

Each tool runs --repeat times, alternating, after a warm-up read (the file is in the page cache for both);
the best wall time of each is reported with its CPU time (user+sys of the child). Goal of the issue:
ctguard's throughput >= 0.25 x grep's.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_diagnose.py [--size-mb 1024] [--repeat 3] [--keep] [--shape kern]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time

from ctguard import runner

CTGUARD = [sys.executable, "-c", "from ctguard.cli import main; main()", "diagnose"]

ORDINARY = [
    "Mar {D} {H}:{M}:{S} stor-03 ceph-osd[2231]: 2024-03-{D2}T{H}:{M}:{S}.{U}+0000 7f3a2b1c0700  1 osd.{O} pg_epoch: "
    "1234 pg[2.{P}( v 1234'5678 (1200'5000,1234'5678] local-lis/les=1230/1231 n=45 ec=50/50 lis/c=1230/1230 "
    "les/c/f=1231/1231/0 sis=1230) [3,1,7] r=0 lpr=1230 crt=1234'5678 lcod 1234'5677 mlcod 1234'5677 "
    "active+clean] state<Started/Primary/Active>: publish_stats_to_osd 1234:5678",
    "Mar {D} {H}:{M}:{S} stor-03 ceph-osd[2231]: 2024-03-{D2}T{H}:{M}:{S}.{U}+0000 7f3a2b1c0700  0 "
    "log_channel(cluster) log [DBG] : 2.{P} scrub starts",
    "Mar {D} {H}:{M}:{S} stor-03 ceph-osd[2231]: 2024-03-{D2}T{H}:{M}:{S}.{U}+0000 7f3a2b1c0700  4 rocksdb: "
    "[db/compaction_job.cc:1640] [default] [JOB 12] Compacting 4@0 + 3@1 files to L1, score 1.00",
    "Mar {D} {H}:{M}:{S} stor-03 ceph-osd[2231]: 2024-03-{D2}T{H}:{M}:{S}.{U}+0000 7f3a2b1c0700  1 -- "
    "[v2:10.0.0.3:6800/2231,v1:10.0.0.3:6801/2231] <== client.4{P}1 10.0.9.{P2}:0/3{P}77 12 ==== "
    "osd_op(client.4{P}1.0:12 2.{P} 2:8c3a8e2e:::rbd_data.1:head [write 0~4096] snapc 0=[] ondisk+write e1234) v8 "
    "==== 213+0+4096 (crc 0 0 0) 0x55d1c4 con 0x55d1c8",
    "Mar {D} {H}:{M}:{S} stor-03 sshd[{PID}]: Accepted publickey for root from 10.0.0.{P2} port {PORT} ssh2: "
    "RSA SHA256:abcdefghijklmnop",
    "Mar {D} {H}:{M}:{S} stor-03 CRON[{PID}]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
    "Mar {D} {H}:{M}:{S} stor-03 kernel: [1234{M}{S}.{U}] XFS (sdb1): Ending clean mount",
    "Mar {D} {H}:{M}:{S} stor-03 ceph-osd[2231]: 2024-03-{D2}T{H}:{M}:{S}.{U}+0000 7f3a2b1c0700  0 "
    "bluestore(/var/lib/ceph/osd/ceph-{O}) _kv_sync_thread utilization: idle 9.99 of 10.00, submitted: 12",
]
# --shape kern: a kern.log (only kernel lines: ordinary driver/filesystem/network messages and 0.2 % conntrack)
KERN_ORDINARY = [
    "Mar {D} {H}:{M}:{S} stor-03 kernel: [1234{M}{S}.{U}] XFS (sdb1): Ending clean mount",
    "Mar {D} {H}:{M}:{S} stor-03 kernel: [1234{M}{S}.{U}] mlx5_core 0000:3b:00.{O}: mlx5e_ethtool_get_link_ksettings: "
    "query port ptys failed: -5",
    "Mar {D} {H}:{M}:{S} stor-03 kernel: [1234{M}{S}.{U}] IPv6: ADDRCONF(NETDEV_CHANGE): veth{P}: link becomes ready",
    "Mar {D} {H}:{M}:{S} stor-03 kernel: [1234{M}{S}.{U}] sd 0:0:{O}:0: [sd{P}] tag#{P2} FAILED Result: "
    "hostbyte=DID_OK driverbyte=DRIVER_OK cmd_age=0s",
    "Mar {D} {H}:{M}:{S} stor-03 kernel: [1234{M}{S}.{U}] audit: type=1400 audit({PID}.{U}:{P2}): apparmor=\"DENIED\" "
    "operation=\"open\" profile=\"snap.lxd\" name=\"/proc/{PID}/mounts\" pid={PID} comm=\"lxd\"",
]
KERNEL = "Mar {D} {H}:{M}:{S} stor-03 kernel: [1234{M}{S}.{U}] nf_conntrack: nf_conntrack: table full, dropping packet"
SUPPRESSED = "Mar {D} {H}:{M}:{S} stor-03 kernel: [1234{M}{S}.{U}] net_ratelimit: 49{P2} callbacks suppressed"
FAULT = ("Mar {D} {H}:{M}:{S} stor-03 ceph-osd[2231]: 2024-03-{D2}T{H}:{M}:{S}.{U}+0000 7f3a2b1c0700  2 --2- "
         "[v2:10.0.0.3:6800/2231,v1:10.0.0.3:6801/2231] >> 10.0.9.{P2}:0/3{P}77 conn(0x55d1 0x55d2 crc :-1 s=READY "
         "pgs=3 cs=0 l=1 rev1=1 rx=0 tx=0)._fault on lossy channel, failing")
EVENTS = [
    "Mar {D} {H}:{M}:{S} stor-03 ceph-osd[2231]: 2024-03-{D2}T{H}:{M}:{S}.{U}+0000 7f3a2b1c0700 -1 osd.{O} 1234 "
    "heartbeat_check: no reply from 10.0.0.5:6812 osd.1{O} since back 2024-03-{D2}T{H}:{M}:{S}.1+0000 front "
    "2024-03-{D2}T{H}:{M}:{S}.1+0000 (oldest deadline 2024-03-{D2}T{H}:{M}:{S}.2+0000)",
    "Mar {D} {H}:{M}:{S} stor-03 ceph-osd[2231]: 2024-03-{D2}T{H}:{M}:{S}.{U}+0000 7f3a2b1c0700 -1 osd.{O} 1234 "
    "get_health_metrics reporting 1{P2} slow ops, oldest is osd_op(client.4151.0:1 2.1 [write 0~4096] e31)",
]


def block(rnd: random.Random, day: int, hour: int, nbytes: int, shape: str = "syslog") -> bytes:
    out: list[str] = []
    size = 0
    while size < nbytes:
        x = rnd.random()
        if x < 0.002:
            t = KERNEL if rnd.random() < 0.9 else SUPPRESSED
        elif shape == "kern":
            t = rnd.choice(KERN_ORDINARY)
        elif x < 0.007:
            t = FAULT
        elif x < 0.0071:
            t = rnd.choice(EVENTS)
        else:
            t = rnd.choice(ORDINARY)
        line = t.format(D=f"{day:2d}", D2=f"{day:02d}", H=f"{hour:02d}", M=f"{rnd.randrange(60):02d}",
                        S=f"{rnd.randrange(60):02d}", U=f"{rnd.randrange(10**6):06d}", O=rnd.randrange(8),
                        P=f"{rnd.randrange(256):x}", P2=rnd.randrange(2, 250), PID=rnd.randrange(1000, 99999),
                        PORT=rnd.randrange(1024, 65535))
        out.append(line)
        size += len(line) + 1
    return ("\n".join(out) + "\n").encode()


def generate(path: str, size: int, shape: str = "syslog") -> None:
    rnd = random.Random(2014)
    per_hour = 16 << 20
    done = 0
    with open(path, "wb") as f:
        k = 0
        while done < size:
            b = block(rnd, 1 + k // 24, k % 24, min(per_hour, size - done), shape)
            f.write(b)
            done += len(b)
            k += 1


def timed(argv: list[str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = runner.run(argv, timeout=3600)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--shape", choices=["syslog", "kern"], default="syslog",
                    help="syslog: an OSD host's mixed syslog (the issue's benchmark); kern: a kern.log")
    ap.add_argument("--path", default=None, help="default /tmp/ctguard-bench-diagnose-SHAPE.log")
    ap.add_argument("--reuse", action="store_true", help="use the file at --path if it exists (no generation)")
    args = ap.parse_args()
    if args.path is None:
        args.path = f"/tmp/ctguard-bench-diagnose-{args.shape}.log"
    size = args.size_mb << 20
    t = time.perf_counter()
    if not (args.reuse and os.path.exists(args.path)):
        generate(args.path, size, args.shape)
    real = os.path.getsize(args.path)
    print(f"generated {real / 2**20:.0f} MiB in {time.perf_counter() - t:.0f} s: {args.path}", flush=True)
    try:
        runner.run(["grep", "-c", "table full", args.path], timeout=600)  # warm the page cache
        cmds = {
            "grep -c 'table full'": ["grep", "-c", "table full", args.path],
            "ctguard diagnose --json": [*CTGUARD, "--json", args.path],
            "ctguard diagnose --json --workers 1": [*CTGUARD, "--json", "--workers", "1", args.path],
        }
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeat):
            for name, argv in cmds.items():
                wall, cpu, out = timed(argv)
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, cpu)
                print(f"  {name:40s} {wall:7.2f} s wall {cpu:7.2f} s cpu", flush=True)
        g_wall = best["grep -c 'table full'"][0]
        print(f"\nfile: {real / 2**20:.0f} MiB, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        print("| command | best wall (s) | CPU (s) | MB/s | x grep |")
        print("|---|---|---|---|---|")
        for name, (wall, cpu) in best.items():
            print(f"| `{name}` | {wall:.2f} | {cpu:.2f} | {real / 1e6 / wall:.0f} | {g_wall / wall:.2f} |")
    finally:
        if not args.keep:
            os.unlink(args.path)


if __name__ == "__main__":
    main()
