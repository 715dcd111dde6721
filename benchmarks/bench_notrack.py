"""notrack side by side with the plain stateful firewall it complements (run as root):

    PYTHONPATH=src python benchmarks/bench_notrack.py [--connects 300]

1. Steady state (table not full): N sequential new connections cli -> srv:6800 echoing 4 bytes, with the
   host's stateful firewall only (peer) and with `ctguard notrack` applied: connect latency p50/p99 and the
   conntrack entries they leave behind.
2. Table full of ASSURED entries: share of new OSD connections that succeed (0.5 s timeout), both ways.
3. Cost of the safety machinery: `apply_notrack` (inspect + nft -c + snapshot + journal + load) and
   `remove_notrack`, against a bare `nft -f` of the same script.
Only 198.18.0.0/15, only namespaces made here (ctn… prefix), everything deleted at the end.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctguard.firewall import apply_notrack, remove_notrack
from ctguard.firewall.nftrules import load_script
from ctguard.firewall.spec import build_spec
from ctguard.kernel.netns import Netns
from ctguard.lab.fill import fill
from ctguard.lab.testbed import FILL_SRC, SRV_IP, Testbed, host_firewall

HOST_FW = host_firewall()
PEER = Path(__file__).resolve().parent.parent / "tests" / "integration" / "netpeer.py"
CLIENT = """
import socket, sys, time
addr, port, n, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ok, lat = 0, []
for _ in range(n):
    s = socket.socket(); s.settimeout(timeout); t = time.perf_counter()
    try:
        s.connect((addr, port)); s.sendall(b"ping"); s.recv(4); ok += 1; lat.append(time.perf_counter() - t)
    except OSError:
        pass
    s.close()
print(ok, " ".join(f"{x:.6f}" for x in lat))
"""


def connects(tb: Testbed, n: int, timeout: float) -> tuple[int, list[float]]:
    out = tb.exec(tb.cli, [sys.executable, "-c", CLIENT, SRV_IP, "6800", str(n), str(timeout)],
                  timeout=n * timeout + 60).stdout.split()
    return int(out[0]), [float(x) for x in out[1:]]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000 if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connects", type=int, default=300)
    args = ap.parse_args()
    state = tempfile.mkdtemp(prefix="ctn-bench-")
    with Testbed(prefix="ctn" + secrets.token_hex(3), rules=HOST_FW) as tb:
        ns = Netns(name=tb.srv)
        ready = Path(state) / "srv.ready"
        tb.spawn(tb.srv, [sys.executable, str(PEER), str(ready), "serve", SRV_IP, "6800"])
        while not ready.exists():
            time.sleep(0.05)
        nets = ["198.18.0.0/24"]
        print(f"1. steady state, {args.connects} sequential connects to :6800")
        for label in ("stateful firewall only", "ctguard notrack applied"):
            if label.startswith("ctguard"):
                apply_notrack(ns, nets, state_dir=state, insert_accept=["inet tb input"])
            tb.exec(tb.srv, ["conntrack", "-F"], check=False)
            c0 = tb.count()
            ok, lat = connects(tb, args.connects, 2.0)
            print(f"   {label:26s} ok {ok}/{args.connects}  p50 {pct(lat, .5):.3f} ms  p99 {pct(lat, .99):.3f} ms"
                  f"  conntrack entries left {tb.count() - c0}")
        remove_notrack(ns, state_dir=state)
        limit = int(tb.exec(tb.srv, ["sysctl", "-n", "net.netfilter.nf_conntrack_max"]).stdout)
        t = time.perf_counter()
        fill("tcp-est", limit + 2000, FILL_SRC, ns)
        print(f"2. table full ({tb.count()}/{limit}, filled in {time.perf_counter() - t:.1f} s), 50 connects, 0.5 s timeout")
        for label in ("stateful firewall only", "ctguard notrack applied"):
            if label.startswith("ctguard"):
                apply_notrack(ns, nets, state_dir=state, insert_accept=["inet tb input"])
            ok, lat = connects(tb, 50, 0.5)
            print(f"   {label:26s} ok {ok}/50" + (f"  p50 {pct(lat, .5):.3f} ms" if lat else ""))
        remove_notrack(ns, state_dir=state)
        print("3. load/unload time, 10 rounds each (median)")
        script = load_script(build_spec(nets))
        plain = []
        for _ in range(10):
            t = time.perf_counter()
            tb.exec(tb.srv, ["nft", "-f", "-"], input=script)
            plain.append(time.perf_counter() - t)
            tb.exec(tb.srv, ["nft", "delete", "table", "inet", "ctguard"])
        ours_a, ours_r = [], []
        for _ in range(10):
            t = time.perf_counter()
            apply_notrack(ns, nets, state_dir=state, insert_accept=["inet tb input"])
            ours_a.append(time.perf_counter() - t)
            t = time.perf_counter()
            remove_notrack(ns, state_dir=state)
            ours_r.append(time.perf_counter() - t)
        print(f"   bare `nft -f` of the same table          {statistics.median(plain) * 1000:7.1f} ms")
        print(f"   apply_notrack (inspect, nft -c, snapshot, journal, load)  {statistics.median(ours_a) * 1000:7.1f} ms")
        print(f"   remove_notrack (find, delete, compare)   {statistics.median(ours_r) * 1000:7.1f} ms")
    subprocess.run(["rm", "-rf", state], check=False)


if __name__ == "__main__":
    main()
