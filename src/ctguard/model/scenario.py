"""A what-if scenario: the cluster, the host's table, the restart strategy — from flags or a YAML/JSON file.

File format (every key optional except where noted; unknown keys are an error, so typos do not pass):

    cluster:  {hosts: 6, osds_per_host: 8, conn_per_host: 5500 | clients_per_osd: 480 | clients: 40,
               client_rate: 3, pgs_per_osd: 100 | pg_num: 128, pool_size: 3 | ec: "4+2"}
    inventory: {osd_out: 120, osd_in: 110, local: 16, client: 5, mon_mgr: 8, other: 2000, transient: 4}
              # measured per-role entries of the host (`ctguard status --breakdown --json`): used instead
              # of the formula
    table:    {max: 65536, buckets: 16384, gc_cycle_s: 61.6, dump_every_s: null,
               timeouts: {time_wait: 120, close: 10, established: 432000, syn_sent: 120}}
    strategy: {name: all-at-once|stagger|batch|adaptive, gap_s: 10, batch: 1, target_fill: 0.8}
    ceph:     {osd_heartbeat_min_peers: 10, osd_heartbeat_grace_s: 20, mon_osd_report_timeout_s: 900, ...}
    behaviour: {downtime_s: 3, peering_base_s: 2, peering_per_pg_s: 0.01, lossy_retry_s: 0.5,
                client_active_fraction: 1.0, repeer_fraction: 0.25, ...}
    gc_phases: 6          # GC phases to sweep for the distribution of overflow durations
    purge_after_s: null   # ctguard purge this long after the first drop (what-if)
    other_entries: 0      # ASSURED entries of other services on the host (never evicted)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ctguard.errors import BadInput
from ctguard.model.ceph import (
    FITTED,
    CephOptions,
    Formula,
    HostConns,
    RestartBehaviour,
    from_inventory,
    host_conns,
)
from ctguard.model.inventory import Inventory
from ctguard.model.simulate import STRATEGIES, Strategy
from ctguard.model.table import GC_CYCLE_S, TableConfig, Timeouts


@dataclass(frozen=True)
class ClusterSpec:
    hosts: int = 6
    osds_per_host: int = 8
    conn_per_host: float | None = None
    clients_per_osd: float | None = None
    pgs_per_osd: float = 100.0  # PG replicas per OSD (pg_num x size / OSDs)
    pool_size: int = 3
    pg_num: int | None = None  # the pool's PGs: sets pgs_per_osd (pg_num x width / OSDs)
    ec: str | None = None  # erasure-coded pool "K+M": counts as size K+M
    clients: int | None = None  # client instances (librados, RBD, ...): sessions = clients x client_osds
    client_rate: float | None = None  # ops/s of each client: how busy its sessions are (the reconnect loop)
    client_ops: float | None = None  # ops/s of all clients together (`ceph -s`), when clients are not counted

    @property
    def width(self) -> int:
        from ctguard.model.ceph import pool_width

        return pool_width(self.pool_size, self.ec)

    @property
    def replicas_per_osd(self) -> float:
        if self.pg_num is not None:
            return self.pg_num * self.width / max(1, self.hosts * self.osds_per_host)
        return self.pgs_per_osd


@dataclass(frozen=True)
class Scenario:
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    table: TableConfig = field(default_factory=lambda: TableConfig(max=262144))
    strategy: Strategy = field(default_factory=Strategy)
    ceph: CephOptions = field(default_factory=CephOptions)
    behaviour: RestartBehaviour = field(default_factory=RestartBehaviour)
    gc_phases: int = 6
    purge_after_s: float | None = None
    name: str = ""
    other_entries: float = 0.0  # ASSURED entries not Ceph's (other services; the lab's filler)
    inventory: Inventory | None = None  # measured per-role entries: the host as it is, not the formula
    formula: Formula = FITTED

    def conns(self) -> HostConns:
        c = self.cluster
        if self.inventory is not None:
            return from_inventory(self.inventory, c.hosts, c.osds_per_host, pgs_per_osd=c.replicas_per_osd,
                                  pool_size=c.width, options=self.ceph, formula=self.formula)
        cpo = c.clients_per_osd
        if cpo is None and c.clients is not None and c.conn_per_host is None:
            cpo = c.clients * self.formula.client_osds
        return host_conns(c.hosts, c.osds_per_host, pgs_per_osd=c.replicas_per_osd, pool_size=c.width,
                          clients_per_osd=cpo, conn_per_host=c.conn_per_host, options=self.ceph,
                          formula=self.formula)

    def effective_behaviour(self) -> RestartBehaviour:
        """The behaviour for this cluster: the connection-race share for the pool's width (the fitted
        `race_fraction` is a width-3 pool's; narrower pools measured more, `formula.race_width_exp`), and
        the clients' activity from their op rate when it is given: a session faults (and its client re-opens
        it) at most once per op sent to a not-serving OSD, `formula.fault_per_op` times per op (fitted across
        the sweep: whether light clients loop is measured, not assumed)."""
        c, b = self.cluster, self.behaviour
        if self.formula.race_width_exp and b.race_fraction > 0:
            scale = (3.0 / max(1, c.width)) ** self.formula.race_width_exp
            b = dataclasses.replace(b, race_fraction=min(1.0, b.race_fraction * scale))
        if c.client_rate is not None:
            # one client's ops spread over the OSDs it holds sessions with
            per_session = c.client_rate / max(1.0, c.hosts * c.osds_per_host * self.formula.client_osds)
        elif c.client_ops is not None:
            # the cluster's client ops over every client session (this host's, times the hosts)
            conns = self.conns()
            sessions = conns.clients * conns.osds * c.hosts
            per_session = c.client_ops / sessions if sessions > 0 else 0.0
        else:
            return b
        active = min(1.0, per_session * b.lossy_retry_s * self.formula.fault_per_op)
        return dataclasses.replace(b, client_active_fraction=active)

    def validate(self) -> Scenario:
        c, t, s = self.cluster, self.table, self.strategy
        if c.hosts < 1 or c.osds_per_host < 1:
            raise BadInput("cluster: hosts and osds_per_host must be at least 1")
        if c.pgs_per_osd <= 0 or c.pool_size < 1:
            raise BadInput("cluster: pgs_per_osd must be > 0 and pool_size >= 1")
        if c.pg_num is not None and c.pg_num < 1:
            raise BadInput("cluster: pg_num must be >= 1")
        if c.width > c.hosts:
            raise BadInput(f"cluster: a pool of width {c.width} cannot be placed on {c.hosts} host(s) "
                           "(failure domain: host)")
        if any(v is not None and v < 0 for v in (c.clients, c.client_rate, c.client_ops)):
            raise BadInput("cluster: clients, client_rate and client_ops must be >= 0")
        if t.max < 1:
            raise BadInput("table: max must be at least 1")
        if t.buckets is not None and t.buckets < 1:
            raise BadInput("table: buckets must be at least 1")
        if t.gc_cycle_s <= 0:
            raise BadInput("table: gc_cycle_s must be > 0")
        if min(dataclasses.astuple(t.timeouts)) < 1:
            raise BadInput("table: every timeout must be at least 1 s")
        if s.name not in STRATEGIES:
            raise BadInput(f"strategy: unknown name {s.name!r} (one of {', '.join(STRATEGIES)})")
        if s.gap_s < 0 or s.batch < 0 or not 0 < s.target_fill <= 1:
            raise BadInput("strategy: gap_s >= 0, batch >= 0 and 0 < target_fill <= 1")
        if s.name == "batch" and s.batch < 1:
            raise BadInput("strategy: batch needs batch >= 1")
        b = self.behaviour
        if b.lossy_retry_s <= 0 or b.downtime_s <= 0 or b.ramp_s <= 0 or b.syn_retry_s <= 0:
            raise BadInput("behaviour: lossy_retry_s, downtime_s, ramp_s and syn_retry_s must be > 0")
        for name in ("client_active_fraction", "rst_fraction", "repeer_fraction", "lossless_active_fraction",
                     "race_fraction"):
            if not 0 <= getattr(b, name) <= 1:
                raise BadInput(f"behaviour: {name} must be between 0 and 1")
        if self.other_entries < 0:
            raise BadInput("other_entries must be >= 0")
        if not 1 <= self.gc_phases <= 64:
            raise BadInput("gc_phases must be between 1 and 64")
        self.conns()  # raises BadInput when conn_per_host is too small for the topology
        return self


def _build(cls: type[Any], data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise BadInput(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise BadInput(f"{where}: unknown key {key!r} (known: {', '.join(sorted(names))})")
        f = names[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        if value is None:
            kwargs[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise BadInput(f"{where}.{key}: expected a number or a name, got {type(value).__name__}")
        if isinstance(default, str) or key in ("name", "ec"):
            kwargs[key] = str(value)
        elif isinstance(value, str):
            raise BadInput(f"{where}.{key}: expected a number, got {value!r}")
        elif f.type in ("int", int, "int | None") and not isinstance(default, bool):
            if float(value) != int(value):
                raise BadInput(f"{where}.{key}: expected a whole number, got {value!r}")
            kwargs[key] = int(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def from_mapping(doc: Any, name: str = "") -> Scenario:
    if not isinstance(doc, Mapping):
        raise BadInput("scenario: expected a mapping at the top level")
    known = {"cluster", "table", "strategy", "ceph", "behaviour", "gc_phases", "purge_after_s", "name",
             "other_entries", "inventory"}
    for key in doc:
        if key not in known:
            raise BadInput(f"scenario: unknown key {key!r} (known: {', '.join(sorted(known))})")
    table_doc = dict(doc.get("table") or {})
    if not isinstance(doc.get("table") or {}, Mapping):
        raise BadInput("table: expected a mapping")
    timeouts = _build(Timeouts, table_doc.pop("timeouts", None), "table.timeouts")
    if "max" not in table_doc:
        raise BadInput("table: 'max' (nf_conntrack_max) is required")
    table = _build(TableConfig, table_doc, "table")
    table = dataclasses.replace(table, timeouts=timeouts)
    phases = doc.get("gc_phases", 6)
    if isinstance(phases, bool) or not isinstance(phases, int):
        raise BadInput("gc_phases: expected a whole number")
    purge = doc.get("purge_after_s")
    if purge is not None and (isinstance(purge, bool) or not isinstance(purge, int | float) or purge < 0):
        raise BadInput("purge_after_s: expected a number >= 0")
    other = doc.get("other_entries", 0)
    if isinstance(other, bool) or not isinstance(other, int | float) or other < 0:
        raise BadInput("other_entries: expected a number >= 0")
    inv_doc = doc.get("inventory")
    if inv_doc is not None and not isinstance(inv_doc, Mapping):
        raise BadInput("inventory: expected a mapping of role -> entries")
    inventory = Inventory.from_mapping(inv_doc) if inv_doc is not None else None
    return Scenario(
        inventory=inventory,
        other_entries=float(other),
        cluster=_build(ClusterSpec, doc.get("cluster"), "cluster"),
        table=table,
        strategy=_build(Strategy, doc.get("strategy"), "strategy"),
        ceph=_build(CephOptions, doc.get("ceph"), "ceph"),
        behaviour=_build(RestartBehaviour, doc.get("behaviour"), "behaviour"),
        gc_phases=phases,
        purge_after_s=purge,
        name=str(doc.get("name", name)),
    ).validate()


def load(path: str) -> Scenario:
    """A scenario file (.yaml/.yml/.json); BadInput with one line naming the file and the problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError as e:
        raise BadInput(f"{path}: no such file") from e
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror})") from e
    base = os.path.splitext(os.path.basename(path))[0]
    try:
        if path.endswith(".json"):
            doc = json.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from e
    except Exception as e:  # yaml.YAMLError and its subclasses
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BadInput(f"{path}: not valid YAML{where}: {problem}") from e
    if doc is None:
        raise BadInput(f"{path}: empty scenario file")
    try:
        return from_mapping(doc, base)
    except TypeError as e:
        raise BadInput(f"{path}: {e}") from e
    except BadInput as e:
        raise BadInput(f"{path}: {e.message}") from e


def default_table(max_entries: int, buckets: int | None = None, **timeouts: int) -> TableConfig:
    return TableConfig(max=max_entries, buckets=buckets, timeouts=Timeouts(**timeouts), gc_cycle_s=GC_CYCLE_S)
