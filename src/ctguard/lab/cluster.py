"""A real Ceph 16.2.15 cluster in network namespaces: bring it up, drive it, tear it down.

The Python API other capabilities build on (keep these names):

    lab = Lab.load(prefix="cl")            # CtguardError if there is no such lab
    lab.hosts                              # ["cl-h1", ...]: namespace = hostname = CRUSH host
    lab.host_netns("cl-h1")                # Netns(name="cl-h1")
    lab.osd_ids("cl-h1")                   # [0, 1, 2, 3]
    lab.ceph_argv()                        # ["ip", "netns", "exec", "cl-mon", "ceph", "-c", conf]
    lab.stop_osd(3); lab.start_osd(3); lab.osd_pid(3)
    lab.restart_osds("cl-h1", all_at_once=True, gap=0.0)

The recipe and its timings are in shared/reference/ceph-lab.md; each pitfall it lists is answered here or in
config.py. Daemons are started in the foreground as processes we know by PID (procs.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctguard.errors import BadInput, CannotRead, CommandFailed, CtguardError, NeedsPrivilege
from ctguard.kernel.netns import Netns
from ctguard.lab import config as cfg
from ctguard.lab import network as net
from ctguard.lab import procs
from ctguard.lab.state import HostState, LabState, load_state
from ctguard.output import rfc3339
from ctguard.runner import Completed, run

Progress = Callable[[str, dict[str, Any]], None]

REQUIRED_TOOLS = ("ip", "nft", "conntrack", "unshare", "ceph", "ceph-mon", "ceph-mgr", "ceph-osd",
                  "ceph-authtool", "monmaptool", "rados")
WORKLOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workload.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-rados lives there, not in a virtualenv


def _noop(step: str, fields: dict[str, Any]) -> None:
    pass


def check_prerequisites() -> None:
    """Root and the Debian packages; a clear one-line error naming what is missing."""
    if os.geteuid() != 0:
        raise NeedsPrivilege("the lab needs root (network namespaces, nftables, ctnetlink)")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if not os.path.exists(SYSTEM_PYTHON):
        missing.append(SYSTEM_PYTHON)
    else:
        # python3-rados is a Debian package of the system python
        if not os.path.exists("/usr/lib/python3/dist-packages/rados.cpython-311-x86_64-linux-gnu.so") and \
                not any(n.startswith("rados") for n in _listdir("/usr/lib/python3/dist-packages")):
            missing.append("python3-rados")
    if missing:
        raise CannotRead(
            "the lab needs " + ", ".join(missing)
            + " (Debian: apt-get install ceph-mon ceph-mgr ceph-osd ceph-common python3-rados nftables "
            "conntrack iproute2 util-linux; or run scripts/setup.sh)"
        )


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


@dataclass(frozen=True)
class RestartEvent:
    t: float  # time.time()
    event: str  # "stop" | "stopped" | "start"
    osd: int
    pid: int | None = None


@dataclass
class Readiness:
    ready: bool
    health: str = ""
    num_pgs: int = 0
    expected_pgs: int = 0
    clean_pgs: int = 0
    osds_up: int = 0
    osds: int = 0
    pg_states: dict[str, int] = field(default_factory=dict)
    reason: str = ""


class Lab:
    def __init__(self, state: LabState) -> None:
        self.state = state
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, prefix: str = cfg.DEFAULT_PREFIX, base_dir: str | None = None) -> Lab:
        d = cfg.lab_dir(prefix, base_dir)
        st = load_state(d)
        if st is None:
            raise BadInput(f"no lab {prefix!r} (no {d}/state.json): run `ctguard lab up --prefix {prefix}`")
        if st.phase != "up":
            raise BadInput(f"lab {prefix!r} is not up (phase {st.phase!r}): run `ctguard lab down` and `lab up`")
        return cls(st)

    # -- the API -------------------------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return self.state.prefix

    @property
    def conf(self) -> str:
        return self.state.conf

    @property
    def dir(self) -> str:
        return self.state.dir

    @property
    def hosts(self) -> list[str]:
        return [h.name for h in self.state.hosts]

    def host_netns(self, host: str) -> Netns:
        self._host(host)
        return Netns(name=host)

    def host_index(self, host: str) -> int:
        for i, h in enumerate(self.state.hosts, 1):
            if h.name == host:
                return i
        raise BadInput(f"no host {host!r} in lab {self.prefix!r} (hosts: {', '.join(self.hosts)})")

    def _host(self, host: str) -> HostState:
        return self.state.hosts[self.host_index(host) - 1]

    def fill_src(self, host: str) -> str:
        return self._host(host).fill_src

    def osd_ids(self, host: str) -> list[int]:
        return list(self._host(host).osds)

    def all_osds(self) -> list[int]:
        return sorted(i for h in self.state.hosts for i in h.osds)

    def osd_host(self, osd: int) -> str:
        for h in self.state.hosts:
            if osd in h.osds:
                return h.name
        raise BadInput(f"no osd.{osd} in lab {self.prefix!r}")

    def ceph_argv(self) -> list[str]:
        return ["ip", "netns", "exec", self.state.mon_ns, "ceph", "-c", self.conf]

    def ceph(self, args: Sequence[str], timeout: float = 30, check: bool = False,
             input: str | None = None) -> Completed:
        # --connect-timeout: a CLI call must never outlive its own timeout waiting for a mon
        return run([*self.ceph_argv(), "--connect-timeout", str(max(1, int(timeout) - 1)), *args],
                   timeout=timeout, check=check, input=input)

    def ceph_json(self, args: Sequence[str], timeout: float = 30) -> Any:
        done = self.ceph([*args, "-f", "json"], timeout=timeout, check=True)
        try:
            return json.loads(done.stdout)
        except ValueError as e:
            raise CannotRead(f"ceph {' '.join(args)}: not JSON ({done.stdout[:60]!r})") from e

    def osd_argv(self, osd: int) -> list[str]:
        host = self.osd_host(osd)
        return ["ceph-osd", "-f", "-c", self.conf, "-i", str(osd), "--crush-location",
                f"root=default host={host}"]

    def osd_pid(self, osd: int) -> int | None:
        """The live PID of osd.N: from our record if that process still is this lab's osd.N, else by
        scanning /proc (another process, e.g. `ctguard restart`, may have started it)."""
        pid = self.state.daemons.get(f"osd.{osd}")
        if pid is not None and procs.alive(pid) and self._is_osd(pid, osd):
            return pid
        for p in procs.scan(self.conf):
            if self._is_osd(p, osd):
                return p
        return None

    def _is_osd(self, pid: int, osd: int) -> bool:
        argv = procs.cmdline(pid)
        if not argv or os.path.basename(argv[0]) != "ceph-osd" or self.conf not in argv:
            return False
        try:
            return argv[argv.index("-i") + 1] == str(osd)
        except (ValueError, IndexError):
            return False

    def stop_osd(self, osd: int, sig: int = signal.SIGTERM, wait: bool = True, timeout: float = 60.0) -> int | None:
        """Signal osd.N (checked by its command line) and by default wait until it has exited. Returns the
        PID signalled, None if it was not running."""
        pid = self.osd_pid(osd)
        if pid is None:
            return None
        procs.signal_pid(pid, sig)
        if wait:
            left = procs.wait_gone([pid], timeout)
            if left:
                procs.signal_pid(pid, signal.SIGKILL)
                procs.wait_gone([pid], 10.0)
        return pid

    def start_osd(self, osd: int) -> int:
        """Start osd.N in its host's namespace (hostname = host). Refuses a second copy."""
        running = self.osd_pid(osd)
        if running is not None:
            raise BadInput(f"osd.{osd} is already running (pid {running})")
        host = self.osd_host(osd)
        pid = procs.spawn(host, host, self.osd_argv(osd), os.path.join(self.dir, "log", f"osd.{osd}.out"))
        with self._lock:
            fresh = load_state(self.dir)  # another process may have recorded other daemons meanwhile
            if fresh is not None:
                self.state.daemons.update({k: v for k, v in fresh.daemons.items() if k != f"osd.{osd}"})
            self.state.daemons[f"osd.{osd}"] = pid
            self.state.save()
        return pid

    def restart_osds(self, host: str, all_at_once: bool = True, gap: float = 0.0, sig: int = signal.SIGTERM,
                     on_event: Callable[[RestartEvent], None] | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> list[RestartEvent]:
        """Restart every OSD of `host`: all at once (signal all, wait for all to exit, start all: what
        `systemctl restart ceph-osd.target` does), or one by one with `gap` seconds between one start and
        the next stop (the incident's workaround)."""
        events: list[RestartEvent] = []

        def note(ev: RestartEvent) -> None:
            events.append(ev)
            if on_event is not None:
                on_event(ev)

        ids = self.osd_ids(host)
        if all_at_once:
            pids = {i: self.osd_pid(i) for i in ids}
            for i, p in pids.items():
                if p is not None:
                    procs.signal_pid(p, sig)
                    note(RestartEvent(time.time(), "stop", i, p))
            live = [p for p in pids.values() if p is not None]
            left = procs.wait_gone(live, 60.0)
            for p in left:
                procs.signal_pid(p, signal.SIGKILL)
            procs.wait_gone(left, 10.0)
            for i in ids:
                note(RestartEvent(time.time(), "stopped", i, pids[i]))
            for i in ids:
                note(RestartEvent(time.time(), "start", i, self.start_osd(i)))
        else:
            for n, i in enumerate(ids):
                if n and gap > 0:
                    sleep(gap)
                note(RestartEvent(time.time(), "stop", i, self.osd_pid(i)))
                old = self.stop_osd(i, sig)
                note(RestartEvent(time.time(), "stopped", i, old))
                note(RestartEvent(time.time(), "start", i, self.start_osd(i)))
        return events

    # -- cluster state -------------------------------------------------------------------------------------
    def readiness(self, timeout: float = 20) -> Readiness:
        """HEALTH_OK with every PG active+clean, checked three ways because health and `ceph -s` lag the
        mgr (ceph-lab.md pitfall 1): pools' pg_num total = `pg stat` num_pgs, all active+clean in both
        `pg stat` and `ceph -s`, and health OK."""
        r = Readiness(False)
        try:
            pools = self.ceph_json(["osd", "pool", "ls", "detail"], timeout)
            r.expected_pgs = sum(int(p.get("pg_num", 0)) for p in pools)
            pg = self.ceph_json(["pg", "stat"], timeout)
            s = self.ceph_json(["-s"], timeout)
        except CtguardError as e:
            r.reason = e.message
            return r
        summ = pg.get("pg_summary", pg)
        r.num_pgs = int(summ.get("num_pgs", 0))
        r.pg_states = {str(x["name"]): int(x["num"]) for x in summ.get("num_pg_by_state", [])}
        r.clean_pgs = r.pg_states.get("active+clean", 0)
        r.health = str(s.get("health", {}).get("status", ""))
        osdmap = s.get("osdmap", {})
        osdmap = osdmap.get("osdmap", osdmap)  # older releases nest it
        r.osds = int(osdmap.get("num_osds", 0))
        r.osds_up = int(osdmap.get("num_up_osds", 0))
        s_clean = sum(int(x["count"]) for x in s.get("pgmap", {}).get("pgs_by_state", [])
                      if x.get("state_name") == "active+clean")
        if r.expected_pgs == 0 or r.num_pgs != r.expected_pgs:
            r.reason = f"pg stat shows {r.num_pgs} of {r.expected_pgs} PGs"
        elif r.clean_pgs != r.num_pgs or s_clean != r.num_pgs:
            r.reason = f"{r.clean_pgs}/{r.num_pgs} PGs active+clean (ceph -s: {s_clean})"
        elif r.osds_up != r.osds:
            r.reason = f"{r.osds_up}/{r.osds} OSDs up"
        elif r.health != "HEALTH_OK":
            r.reason = f"health {r.health}"
        else:
            r.ready = True
        return r

    def wait_ready(self, timeout: float = 120, allow_flags: bool = False,
                   progress: Progress = _noop) -> Readiness:
        deadline = time.monotonic() + timeout
        last = Readiness(False, reason="not checked")
        while time.monotonic() < deadline:
            last = self.readiness()
            if last.ready or (allow_flags and not last.reason.startswith(("pg stat", "0/")) and
                              last.reason.startswith("health") and last.clean_pgs == last.num_pgs):
                return last
            progress("waiting", {"reason": last.reason})
            time.sleep(0.5)
        raise CommandFailed(f"lab {self.prefix!r} not ready after {timeout:g} s: {last.reason}")


# -- up ------------------------------------------------------------------------------------------------------
def up(spec: cfg.LabSpec, progress: Progress = _noop, ready_timeout: float = 180) -> Lab:
    """Build the lab. Journaled: every namespace is written to state.json before it is made, every daemon
    right after it is started, so `down` can undo a crash at any point."""
    check_prerequisites()
    t0 = time.monotonic()
    d = spec.dir
    if os.path.exists(d):
        raise BadInput(f"lab {spec.prefix!r} already exists ({d}): `ctguard lab down --prefix {spec.prefix}` first")
    taken = [n for n in net.list_netns() if n in spec.namespaces]
    if taken:
        raise BadInput(f"namespaces {', '.join(taken)} already exist: `ctguard lab down --prefix {spec.prefix}` "
                       "or pick another --prefix")
    for sub in ("mon", "mgr", "osd", "run", "log", "runs"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    os.chmod(d, 0o700)  # keyrings live here
    st = LabState(prefix=spec.prefix, dir=d, conf=spec.conf, store=spec.store, fsid=str(uuid.uuid4()),
                  created=rfc3339(), sw_ns=spec.sw_ns, mon_ns=spec.mon_ns, client_ns=spec.client_ns,
                  sink_ns=spec.sink_ns, namespaces=list(spec.namespaces), pool=cfg.POOL, clients=spec.clients,
                  shape=spec.shape(), hosts=[HostState(h, cfg.host_ip(i), cfg.fill_src(i)) for i, h in enumerate(spec.host_names, 1)])
    st.save()
    lab = Lab(st)

    def mark(step: str, **fields: Any) -> None:
        st.timings[step] = round(time.monotonic() - t0, 3)
        st.save()
        progress(step, {"t": st.timings[step], **fields})

    # network
    for ns in spec.namespaces:
        net.add_netns(ns)
    net.make_switch(spec.sw_ns)
    net.attach(spec.sw_ns, spec.mon_ns, "vmon", cfg.MON_IP)
    net.attach(spec.sw_ns, spec.client_ns, "vcli", cfg.CLIENT_IP)
    for i, h in enumerate(spec.host_names, 1):
        net.attach(spec.sw_ns, h, f"vh{i}", cfg.host_ip(i))
        net.attach_sink(spec.sink_ns, h, i)
        # the stateful host firewall goes in before any daemon: loading it onto live connections drops a
        # few packets of connections picked up mid-stream (ceph-lab.md pitfall 13)
        net.nft(h, cfg.host_firewall(spec))
    mark("network", namespaces=len(spec.namespaces))

    # keys, monmap, mon
    with open(spec.conf, "w") as f:
        f.write(cfg.ceph_conf(spec, st.fsid))
    monkr = os.path.join(d, "ceph.mon.a.keyring")
    adminkr = os.path.join(d, "ceph.client.admin.keyring")
    run(["ceph-authtool", "--create-keyring", monkr, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"],
        timeout=30, check=True)
    run(["ceph-authtool", "--create-keyring", adminkr, "--gen-key", "-n", "client.admin",
         "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mds", "allow *", "--cap", "mgr", "allow *"],
        timeout=30, check=True)
    run(["ceph-authtool", monkr, "--import-keyring", adminkr], timeout=30, check=True)
    monmap = os.path.join(d, "monmap")
    run(["monmaptool", "--create", "--fsid", st.fsid, "--addv", "a",
         f"[v2:{cfg.MON_IP}:3300,v1:{cfg.MON_IP}:6789]", monmap], timeout=30, check=True)
    # mkfs must run in the namespace too: it looks for an address in the public network (pitfall 11)
    run(procs.daemon_argv(spec.mon_ns, spec.mon_ns, ["ceph-mon", "-c", spec.conf, "--mkfs", "-i", "a",
                                                    "--monmap", monmap, "--keyring", monkr]),
        timeout=60, check=True)
    st.daemons["mon.a"] = procs.spawn(spec.mon_ns, spec.mon_ns, ["ceph-mon", "-f", "-c", spec.conf, "-i", "a"],
                                      os.path.join(d, "log", "mon.a.out"))
    st.save()
    _until(lambda: lab.ceph(["mon", "stat"], timeout=10).ok, 60, "the mon did not answer")
    mark("mon")

    # mgr
    mgrdir = os.path.join(d, "mgr", "ceph-x")
    os.makedirs(mgrdir, exist_ok=True)
    mgrkr = os.path.join(mgrdir, "keyring")
    from ctguard.lab import mgrmod  # the ctguard mgr module: its module dir, read by the mgr at start-up

    mgrmod.prepare(lab)
    lab.ceph(["auth", "get-or-create", "mgr.x", "mon", "allow profile mgr", "osd", "allow *", "mds", "allow *",
              "-o", mgrkr], check=True)
    st.daemons["mgr.x"] = procs.spawn(spec.mon_ns, spec.mon_ns,
                                      ["ceph-mgr", "-f", "-c", spec.conf, "-i", "x", "--keyring", mgrkr],
                                      os.path.join(d, "log", "mgr.x.out"))
    st.save()
    mark("mgr")

    # OSD ids come from the mon one at a time (pitfall 16); mkfs and start run in parallel
    uuids: dict[int, str] = {}
    for hs in st.hosts:
        for _ in range(spec.osds_per_host):
            u = str(uuid.uuid4())
            key = run(["ceph-authtool", "--gen-print-key"], timeout=30, check=True).stdout.strip()
            out = lab.ceph(["osd", "new", u, "-i", "-"], input=json.dumps({"cephx_secret": key}), check=True)
            osd = int(out.stdout.strip())
            osddir = os.path.join(d, "osd", f"ceph-{osd}")
            os.makedirs(osddir, exist_ok=True)
            run(["ceph-authtool", "--create-keyring", os.path.join(osddir, "keyring"), "--name", f"osd.{osd}",
                 "--add-key", key], timeout=30, check=True)
            hs.osds.append(osd)
            uuids[osd] = u
    st.save()
    mark("osd_ids", osds=len(uuids))
    # the pool now, so PGs are created while the OSDs boot
    lab.ceph(["osd", "pool", "create", cfg.POOL, str(spec.pg_num), str(spec.pg_num), "replicated"], check=True)
    # the conf's defaults already say so; set explicitly so the pool is the asked shape whatever the defaults
    lab.ceph(["osd", "pool", "set", cfg.POOL, "size", str(spec.pool_size), "--yes-i-really-mean-it"], check=True)
    lab.ceph(["osd", "pool", "set", cfg.POOL, "min_size", str(spec.min_size)], check=True)
    lab.ceph(["osd", "pool", "application", "enable", cfg.POOL, "rados"], check=True)

    errors: list[str] = []

    def mkfs_and_start(osd: int) -> None:
        host = lab.osd_host(osd)
        done = run(procs.daemon_argv(host, host, ["ceph-osd", "-c", spec.conf, "-i", str(osd), "--mkfs",
                                                  "--osd-uuid", uuids[osd]]), timeout=180)
        if not done.ok:
            errors.append(f"osd.{osd} mkfs: {done.first_error_line()}")
            return
        pid = procs.spawn(host, host, lab.osd_argv(osd), os.path.join(d, "log", f"osd.{osd}.out"))
        with lab._lock:
            st.daemons[f"osd.{osd}"] = pid
            st.save()

    threads = [threading.Thread(target=mkfs_and_start, args=(o,)) for o in uuids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise CommandFailed(errors[0])
    mark("osds_started")

    start_clients(lab, spec.clients, spec.client_rate)
    mark("clients", clients=spec.clients, rate=spec.client_rate)
    # peering many PGs on a 2-core machine takes longer: a minute more per 1,000 PG replicas
    r = lab.wait_ready(ready_timeout + 60 * spec.pg_num * spec.pool_size / 1000, progress=progress)
    mgrmod.start(lab, progress)  # an exporter per host; the module enabled and reading every host
    st.phase = "up"
    mark("ready", pgs=r.num_pgs, osds=r.osds)
    return lab


def start_clients(lab: Lab, n: int, rate: float = cfg.DEFAULT_CLIENT_RATE) -> None:
    st = lab.state
    for c in range(n):
        log = os.path.join(lab.dir, "log", f"client.{c}.jsonl")
        st.daemons[f"client.{c}"] = procs.spawn(
            st.client_ns, st.client_ns,
            [SYSTEM_PYTHON, WORKLOAD, "--conf", lab.conf, "--pool", st.pool or cfg.POOL, "--name", str(c),
             "--log", log, "--rate", f"{rate:g}"],
            os.path.join(lab.dir, "log", f"client.{c}.out"))
    st.save()


def _until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except CtguardError:
            pass
        time.sleep(0.2)
    raise CommandFailed(f"{what} within {timeout:g} s")


# -- down ----------------------------------------------------------------------------------------------------
@dataclass
class DownResult:
    prefix: str
    killed: list[int] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    removed_dir: str | None = None
    left: list[str] = field(default_factory=list)


def _pid_files(run_dir: str) -> list[int]:
    """PIDs from the daemons' own pid files (`pid file = $run_dir/$cluster-$name.pid`)."""
    out = []
    for name in _listdir(run_dir):
        if name.endswith(".pid"):
            try:
                with open(os.path.join(run_dir, name)) as f:
                    out.append(int(f.read().strip()))
            except (OSError, ValueError):
                pass
    return out


def lab_namespaces(prefix: str, names: Sequence[str]) -> list[str]:
    """This lab's namespaces among `names`: its fixed ones and `<prefix>-h<N>`."""
    fixed = {f"{prefix}-{s}" for s in ("sw", "mon", "cli", "sink")}
    out = []
    for n in names:
        if n in fixed:
            out.append(n)
        elif n.startswith(f"{prefix}-h") and n[len(prefix) + 2:].isdigit():
            out.append(n)
    return out


def down(prefix: str = cfg.DEFAULT_PREFIX, base_dir: str | None = None, progress: Progress = _noop) -> DownResult:
    """Remove everything of lab `prefix`: processes (recorded PIDs, plus a /proc scan for anything whose
    argv names this lab's ceph.conf or that lives in one of its namespaces), namespaces by name, the lab
    dir. Works after a crashed or killed `up`, and when there is nothing left (then it does nothing)."""
    if os.geteuid() != 0:
        raise NeedsPrivilege("`lab down` needs root (network namespaces)")
    d = cfg.lab_dir(prefix, base_dir)
    conf = os.path.join(d, "ceph.conf")
    res = DownResult(prefix)
    try:
        st = load_state(d)
    except CannotRead:
        st = None
    names = set(net.list_netns())
    ours = set(lab_namespaces(prefix, sorted(names)))
    if st is not None:
        ours |= {n for n in st.namespaces if n in names}
    inodes = []
    for n in ours:
        try:
            inodes.append(os.stat(os.path.join("/run/netns", n)).st_ino)
        except OSError:
            pass
    pids = set(procs.scan(conf, inodes))
    recorded = list(st.daemons.values()) if st is not None else []
    recorded += _pid_files(os.path.join(d, "run"))
    pids |= {p for p in recorded if procs.alive(p) and procs.belongs(p, conf)}
    # SIGKILL: a memstore OSD saving its store on SIGTERM can take many seconds (pitfall 15)
    res.killed = sorted(pids)
    for p in res.killed:
        procs.signal_pid(p, signal.SIGKILL)
    left = procs.wait_gone(res.killed, 20.0)
    if left:
        res.left += [f"pid {p}" for p in left]
    progress("killed", {"pids": res.killed})
    for n in sorted(ours):
        if net.del_netns(n):
            res.namespaces.append(n)
        else:
            res.left.append(f"netns {n}")
    progress("namespaces", {"deleted": res.namespaces})
    if os.path.isdir(d):
        shutil.rmtree(d, ignore_errors=True)
        if os.path.exists(d):
            res.left.append(d)
        else:
            res.removed_dir = d
    return res
