"""The ctguard mgr module in the lab: installed into the lab's own module directory before the mgr starts,
enabled once the cluster is up, fed by one `ctguard exporter` per OSD host namespace.

    prepare(lab)       # before ceph-mgr starts: <lab dir>/mgr-modules (links to Ceph's modules + ours) and
                       # `ceph config set mgr mgr_module_path` (the mgr reads it from the mon at start-up)
    start(lab)         # exporters on 198.18.0.1N:9477, module options, `mgr module enable ctguard`, first reading
    start_exporter(lab, host) / stop_exporter(lab, host) / exporter_pid(lab, host)
    checks(lab)        # the module's CTGUARD_* health checks with their detail lines

Ceph's /usr/share/ceph/mgr is never written. The exporters are lab processes (PIDs in state.json, inside the
host namespaces), so `lab down` removes them with everything else.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from ctguard.errors import CommandFailed, CtguardError
from ctguard.lab import config as cfg
from ctguard.lab import procs
from ctguard.lab.cluster import Lab, Progress, _noop
from ctguard.mgr.install import CEPH_MGR_DIR, apply_install, plan_install

CHECK_PREFIX = "CTGUARD_"
# short cycles so a lab run sees a check rise within seconds; the drop window short enough for a test to
# watch CTGUARD_CONNTRACK_DROPS clear again
LAB_OPTIONS = {"interval": "2", "timeout": "2", "drops_window": "30"}



def modules_dir(lab: Lab) -> str:
    return os.path.join(lab.dir, "mgr-modules")


def prepare(lab: Lab, ceph_dir: str = CEPH_MGR_DIR) -> None:
    plan = plan_install(modules_dir(lab), ceph_dir=ceph_dir)
    apply_install(plan)
    lab.ceph(["config", "set", "mgr", "mgr_module_path", plan.path], check=True)


def exporter_argv(lab: Lab, host: str) -> list[str]:
    ip = lab.state.host(host).ip
    return [sys.executable, "-m", "ctguard", "exporter", "--listen", f"{ip}:{cfg.EXPORTER_PORT}",
            "--breakdown-interval", "30", "--state-dir", os.path.join(lab.dir, "exporter", host),
            "--osd-range", f"{cfg.OSD_PORTS[0]}-{cfg.OSD_PORTS[1]}"]


def exporter_pid(lab: Lab, host: str) -> int | None:
    pid = lab.state.daemons.get(f"exporter.{host}")
    if pid is not None and procs.alive(pid) and "exporter" in procs.cmdline(pid):
        return pid
    return None


def start_exporter(lab: Lab, host: str) -> int:
    running = exporter_pid(lab, host)
    if running is not None:
        return running
    os.makedirs(os.path.join(lab.dir, "exporter", host), exist_ok=True)
    pid = procs.spawn(host, host, exporter_argv(lab, host), os.path.join(lab.dir, "log", f"exporter.{host}.out"))
    lab.state.daemons[f"exporter.{host}"] = pid
    lab.state.save()
    return pid


def stop_exporter(lab: Lab, host: str) -> int | None:
    pid = exporter_pid(lab, host)
    if pid is not None:
        procs.stop([pid], None, timeout=10.0)
    return pid


def start(lab: Lab, progress: Progress = _noop, timeout: float = 90.0) -> None:
    """Exporters, options, enable; then wait until the module has read every host (its status names each
    host as up) so a lab that is "up" already has a working health source."""
    for h in lab.hosts:
        start_exporter(lab, h)
    for k, v in LAB_OPTIONS.items():
        lab.ceph(["config", "set", "mgr", f"mgr/ctguard/{k}", v], check=True)
    deadline = time.monotonic() + timeout
    last = ""
    # a fresh mgr may not have probed its module directory yet: retry the enable until it takes
    while True:
        done = lab.ceph(["mgr", "module", "enable", "ctguard"], timeout=30)
        if done.ok:
            break
        last = done.first_error_line()
        if time.monotonic() > deadline:
            raise CommandFailed(f"ceph mgr module enable ctguard: {last}")
        time.sleep(1.0)
    while time.monotonic() < deadline:
        try:
            doc = status(lab, timeout=10)
            up = [h["host"] for h in doc.get("hosts", []) if h.get("up")]
            if sorted(up) == sorted(lab.hosts):
                progress("mgr_module", {"hosts": len(up)})
                return
            last = f"module reads {len(up)}/{len(lab.hosts)} hosts"
        except CtguardError as e:
            last = e.message
        time.sleep(1.0)
    raise CommandFailed(f"the ctguard mgr module did not read every host within {timeout:g} s: {last}")


def status(lab: Lab, timeout: float = 15) -> dict[str, Any]:
    """`ceph ctguard status -f json`."""
    doc = lab.ceph_json(["ctguard", "status"], timeout=timeout)
    if not isinstance(doc, dict):
        raise CommandFailed("ceph ctguard status: not a JSON object")
    return doc


def ok_to_restart(lab: Lab, osds: list[int], timeout: float = 15) -> tuple[int, dict[str, Any]]:
    """`ceph ctguard ok-to-restart osd.N ...`: (return code, JSON answer)."""
    done = lab.ceph(["ctguard", "ok-to-restart", *(f"osd.{o}" for o in osds)], timeout=timeout)
    try:
        doc = json.loads(done.stdout) if done.stdout.strip() else {}
    except ValueError as e:
        raise CommandFailed(f"ceph ctguard ok-to-restart: not JSON ({done.stdout[:60]!r})") from e
    return done.returncode, doc


def checks(lab: Lab, timeout: float = 15) -> dict[str, dict[str, Any]]:
    """The module's checks from `ceph health detail -f json`: {CODE: {severity, summary, detail: [lines]}}."""
    doc = lab.ceph_json(["health", "detail"], timeout=timeout)
    out: dict[str, dict[str, Any]] = {}
    for code, c in (doc.get("checks") or {}).items():
        if not str(code).startswith(CHECK_PREFIX):
            continue
        out[str(code)] = {"severity": c.get("severity"),
                          "summary": (c.get("summary") or {}).get("message", ""),
                          "detail": [str(d.get("message", "")) for d in c.get("detail") or []]}
    return out


def wait_checks(lab: Lab, pred: Callable[[dict[str, dict[str, Any]]], bool], timeout: float,
                sleep: Callable[[float], None] = time.sleep) -> tuple[bool, dict[str, dict[str, Any]], float]:
    """Poll the module's checks until `pred` holds: (held?, the last checks, seconds waited)."""
    t0 = time.monotonic()
    last: dict[str, dict[str, Any]] = {}
    while True:
        try:
            last = checks(lab)
        except CtguardError:
            last = {}
        if pred(last):
            return True, last, time.monotonic() - t0
        if time.monotonic() - t0 >= timeout:
            return False, last, time.monotonic() - t0
        sleep(1.0)


def fill_to_free(lab: Lab, host: str, free: int) -> int:
    """Fill `host`'s table (ESTABLISHED filler, ct mark 1) until at most `free` entries are left; returns the
    count. Entries of the host's own closed connections keep expiring meanwhile, so it tops up a few times,
    each round with peers the earlier rounds did not use (a packet of an existing tuple adds nothing)."""
    from ctguard.kernel.settings import conntrack_settings
    from ctguard.lab.fill import fill

    ns = lab.host_netns(host)
    s = conntrack_settings(ns)
    # peers (198.19.x.y, port) are numbered; a random start far apart from earlier calls' ranges (fill.peer()
    # numbers ~3.6e9 of them) keeps every round's tuples new
    start = random.randrange(0, 3_000_000_000)
    for _ in range(4):
        n = s.max - s.count - free
        if n <= 0:
            break
        fill("tcp-est", n, lab.fill_src(host), ns, start=start)
        start += n
        s = conntrack_settings(ns)
    return s.count


def demo(lab: Lab, host: str, show: Callable[[str, str], None], timeout: float = 60.0) -> bool:
    """`make demo`'s step: fill `host`'s table to its last few entries, show `ceph health detail` naming it and
    `ok-to-restart` saying no, delete the filler, show both clear. `show(title, text)` prints each step.
    True when every check rose and cleared as it should."""
    from ctguard.kernel.settings import conntrack_settings
    from ctguard.runner import run

    ns = lab.host_netns(host)
    osd = lab.osd_ids(host)[0]
    margin = 20  # fewer free entries than one OSD's restart burst
    fill_to_free(lab, host, margin)
    now = conntrack_settings(ns)
    show(f"filled {host}'s conntrack table: {now.count:,}/{now.max:,} entries", "")
    ok = True
    try:
        rose, _c, took = wait_checks(lab, lambda c: any(
            line.startswith(f"host {host}:") for line in c.get("CTGUARD_CONNTRACK_NEARFULL", {}).get("detail", [])),
            timeout)
        ok &= rose
        # what expired meanwhile, filled again; then one module cycle, so the figures shown are the full table's
        fill_to_free(lab, host, margin)
        time.sleep(float(LAB_OPTIONS["interval"]) + 1.5)
        show(f"ceph health detail (NEARFULL {'raised after' if rose else 'NOT raised within'} {took:.0f} s)",
             lab.ceph(["health", "detail"], timeout=15).stdout)
        done = lab.ceph(["ctguard", "ok-to-restart", f"osd.{osd}"], timeout=15)
        ok &= done.returncode == 16
        show(f"ceph ctguard ok-to-restart osd.{osd} -> exit {done.returncode}", done.stdout + done.stderr)
    finally:
        run(["ip", "netns", "exec", host, "conntrack", "-D", "--mark", "1"], timeout=180)
    # Both conntrack checks must go: NEARFULL as soon as the module reads the emptied table, DROPS once the
    # drops of the full table (live traffic that met it: client and mgr reconnects) leave its window. Seen in
    # `make demo`: 36 drops while full kept CTGUARD_CONNTRACK_DROPS, and ok-to-restart's "no", for 30 s more.
    limit = timeout + float(LAB_OPTIONS["drops_window"])
    cleared, _c, took = wait_checks(lab, lambda c: not any(k.startswith("CTGUARD_CONNTRACK_") for k in c), limit)
    ok &= cleared
    show(f"filler deleted: ceph health detail ({'cleared after' if cleared else 'NOT cleared within'} {took:.0f} s)",
         lab.ceph(["health", "detail"], timeout=15).stdout)
    done = lab.ceph(["ctguard", "ok-to-restart", f"osd.{osd}"], timeout=15)
    ok &= done.returncode == 0
    show(f"ceph ctguard ok-to-restart osd.{osd} -> exit {done.returncode}", done.stdout + done.stderr)
    return ok
