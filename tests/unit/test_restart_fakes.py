"""A fake world for restart-engine unit tests: a Ceph cluster answering through the real CephClient (a fake
runner returning the real 16.2.15 output shapes, EBUSY rc 16, hangs as runner timeouts), a conntrack table
with a restart burst of TIME_WAIT-like entries that purge can delete and that expire, and a clock that only
moves when the engine sleeps. Imported by the test_restart_*.py modules; holds a few self-checks."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ctguard.ceph.client import CephClient
from ctguard.errors import CommandFailed
from ctguard.restart.gates import PurgeInfo, Reading
from ctguard.runner import Completed


class Crash(BaseException):
    """Stands for kill -9: not an Exception, so no handler of the engine sees it."""


@dataclass
class Osd:
    id: int
    host: str
    up: bool = True
    up_from: int = 5
    boot_at: float | None = None
    up_at: float = -100.0


@dataclass
class World:
    hosts: dict[str, list[int]] = field(default_factory=lambda: {"h1": [0, 1, 2]})
    limit: int = 100_000
    base_entries: int = 1000
    osd_entries: int = 50
    true_factor: float = 1.4  # burst added at boot = osd_entries x this (TIME_WAIT-like, expires after ttl)
    ttl: float = 120.0
    boot: float = 3.0
    peer: float = 2.0
    recover: float = 2.0
    t: float = 0.0
    epoch: int = 10
    drops: int = 0
    flags: set[str] = field(default_factory=lambda: {"sortbitwise"})
    ebusy: int = 0  # answer EBUSY to this many ok-to-stop calls
    hang: Counter[str] = field(default_factory=Counter)  # "osd dump" -> how many calls hang
    never_back: set[int] = field(default_factory=set)
    extra_drops_at: dict[int, int] = field(default_factory=dict)  # osd -> drops when it boots
    max_ok: int | None = None
    dead: bool = False
    restarts: Counter[int] = field(default_factory=Counter)
    starts: Counter[int] = field(default_factory=Counter)
    calls: list[str] = field(default_factory=list)
    purges: int = 0
    osds: dict[int, Osd] = field(default_factory=dict)
    closing: list[tuple[float, int]] = field(default_factory=list)  # (expires at, entries)
    on_sleep: Callable[[World], None] | None = None

    def __post_init__(self) -> None:
        for h, ids in self.hosts.items():
            for i in ids:
                self.osds[i] = Osd(i, h)

    # -- time -----------------------------------------------------------------------------------------------
    def clock(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.check()
        self.advance(dt)
        if self.on_sleep is not None:
            self.on_sleep(self)

    def advance(self, dt: float) -> None:
        self.t += dt
        for o in self.osds.values():
            if o.boot_at is not None and self.t >= o.boot_at:
                o.boot_at = None
                self.epoch += 1
                o.up, o.up_from, o.up_at = True, self.epoch, self.t
                self.add_entries(int(self.osd_entries * self.true_factor))
                self.drops += self.extra_drops_at.pop(o.id, 0)
        self.closing = [(e, n) for e, n in self.closing if e > self.t]

    def check(self) -> None:
        if self.dead:
            raise Crash()

    # -- conntrack ------------------------------------------------------------------------------------------
    @property
    def entries(self) -> int:
        return self.base_entries + sum(n for e, n in self.closing if e > self.t)

    def add_entries(self, n: int) -> None:
        free = self.limit - self.entries
        take = max(0, min(n, free))
        if take < n:
            self.drops += n - take
        if take:
            self.closing.append((self.t + self.ttl, take))

    def reading(self, host: str) -> Reading:
        self.check()
        return Reading(host, self.entries, self.limit, self.drops, "fake", self.t,
                       {i: self.osd_entries for i in self.hosts[host]})

    # -- OSDs -----------------------------------------------------------------------------------------------
    def stop(self, osd: int) -> None:
        self.check()
        o = self.osds[osd]
        o.up = False
        self.epoch += 1
        self.restarts[osd] += 1

    def start(self, osd: int) -> None:
        self.check()
        self.starts[osd] += 1
        if osd not in self.never_back:
            self.osds[osd].boot_at = self.t + self.boot

    # -- ceph -----------------------------------------------------------------------------------------------
    def pg_states(self) -> dict[str, int]:
        if any(not o.up for o in self.osds.values()):
            return {"active+undersized+degraded": 50, "peering": 15}
        last = max(o.up_at for o in self.osds.values())
        if self.t < last + self.peer:
            return {"peering": 10, "active+clean": 55}
        if self.t < last + self.peer + self.recover:
            return {"active+recovering+degraded": 5, "active+clean": 60}
        return {"active+clean": 65}

    def runner(self, argv: Sequence[str], *, timeout: float, input: str | None = None, check: bool = False,
               env: Mapping[str, str] | None = None) -> Completed:
        self.check()
        a = list(argv)
        i = a.index("--connect-timeout")
        args = [x for x in a[i + 2:] if x not in ("-f", "json")]
        cmd = " ".join(args)
        self.calls.append(cmd)
        key = " ".join(args[:2])
        if self.hang[key] > 0:
            self.hang[key] -= 1
            self.advance(timeout)
            raise CommandFailed(f"{' '.join(a[:4])}: no answer within {timeout:g} s")

        def ok(out: str = "", err: str = "", rc: int = 0) -> Completed:
            return Completed(tuple(a), rc, out, err)

        if args[:2] == ["osd", "dump"]:
            return ok(json.dumps({
                "epoch": self.epoch, "flags": ",".join(sorted(self.flags)), "flags_set": sorted(self.flags),
                "osds": [{"osd": o.id, "up": int(o.up), "in": 1, "up_from": o.up_from, "down_at": 0,
                          "state": ["exists", "up"] if o.up else ["exists"]} for o in self.osds.values()]}))
        if args[:2] == ["osd", "tree"]:
            nodes = [{"id": -1, "name": "default", "type": "root", "children": [-(k + 2) for k in range(len(self.hosts))]}]
            for k, (h, ids) in enumerate(self.hosts.items()):
                nodes.append({"id": -(k + 2), "name": h, "type": "host", "children": list(reversed(ids))})
                nodes += [{"id": i, "name": f"osd.{i}", "type": "osd", "status": "up"} for i in ids]
            return ok(json.dumps({"nodes": nodes, "stray": []}))
        if args[:2] == ["pg", "stat"]:
            st = self.pg_states()
            return ok(json.dumps({"pg_ready": True, "pg_summary": {
                "num_pg_by_state": [{"name": k, "num": v} for k, v in st.items()], "num_pgs": 65}}))
        if args == ["-s"]:
            st = self.pg_states()
            return ok(json.dumps({"health": {"status": "HEALTH_OK", "checks": {}}, "osdmap": {
                "num_osds": len(self.osds), "num_up_osds": sum(o.up for o in self.osds.values())},
                "pgmap": {"pgs_by_state": [{"state_name": k, "count": v} for k, v in st.items()], "num_pgs": 65}}))
        if args[:2] == ["osd", "ok-to-stop"]:
            ids = [int(x) for x in args[2:] if x.isdigit()]
            mx = int(args[args.index("--max") + 1]) if "--max" in args else 1
            if "--max" in args:
                ids = ids[:1]
            if self.ebusy > 0 or any(not o.up for o in self.osds.values() if o.id not in ids):
                self.ebusy = max(0, self.ebusy - 1)
                return ok(json.dumps({"ok_to_stop": False, "osds": ids, "num_ok_pgs": 40, "num_not_ok_pgs": 25,
                                      "bad_become_inactive": ["1.0", "1.1"]}),
                          "Error EBUSY: unsafe to stop osd(s) at this time (25 PGs are or would become offline)\n",
                          16)
            host = self.osds[ids[0]].host
            if "--max" in args:
                cap = mx if self.max_ok is None else min(mx, self.max_ok)
                ids = (ids + [i for i in self.hosts[host] if i not in ids])[:cap]
            return ok(json.dumps({"ok_to_stop": True, "osds": ids, "num_ok_pgs": 65, "num_not_ok_pgs": 0}))
        if args[:2] == ["osd", "set"]:
            self.flags.add(args[2])
            return ok("", f"{args[2]} is set\n")
        if args[:2] == ["osd", "unset"]:
            self.flags.discard(args[2])
            return ok("", f"{args[2]} is unset\n")
        return ok("", f"Error EINVAL: unknown command {cmd}\n", 22)

    def ceph(self, timeout: float = 30.0) -> CephClient:
        return CephClient(["ceph"], timeout=timeout, run=self.runner)


@dataclass
class FakeSource:
    world: World

    def read(self, host: str) -> Reading:
        return self.world.reading(host)

    def live(self, host: str, osd_ids: Sequence[int]) -> Reading:
        return self.world.reading(host)

    def purge(self, host: str) -> PurgeInfo | None:
        self.world.check()
        before = self.world.entries
        self.world.closing = []
        self.world.purges += 1
        return PurgeInfo(before - self.world.entries, before, self.world.entries, 0.01)


@dataclass
class FakeBackend:
    world: World
    name: str = "fake"
    crash_between: bool = False  # crash after the stop, before the start (kill -9 mid-restart)
    on_restart: Callable[[int], None] | None = None

    def describe(self, osd: int, host: str) -> str:
        return f"fake restart osd.{osd}"

    def restart(self, osd: int, host: str, on_stopped: Callable[[], None]) -> None:
        self.world.stop(osd)
        on_stopped()
        if self.crash_between:
            self.world.dead = True
            raise Crash()
        self.world.start(osd)
        if self.on_restart is not None:
            self.on_restart(osd)


def test_world_shapes_parse_through_the_real_client() -> None:
    w = World()
    c = w.ceph()
    assert c.osd_tree().hosts == {"h1": (0, 1, 2)}
    assert c.pg_stat().all_clean
    assert c.status().pgs.all_clean
    ok = c.ok_to_stop([0], max_osds=3)
    assert ok.ok and ok.osds == (0, 1, 2)
    w.ebusy = 1
    no = c.ok_to_stop([0])
    assert not no.ok and "EBUSY" in no.reason


def test_world_burst_overflows_when_short() -> None:
    w = World(limit=1050, base_entries=1000)
    w.stop(0)
    w.start(0)
    w.advance(w.boot)
    assert w.entries == 1050 and w.drops == 70 - 50
