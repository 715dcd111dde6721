"""Ceph's connections as one host's conntrack table sees them, and what an OSD restart does to them.

Defaults and sources (ceph/ceph src/common/options/global.yaml.in@001c8347, src/ceph_osd.cc policies,
OSD::maybe_update_heartbeat_peers; summarised in anchors-features.md §0 and §4.7):

* Heartbeats: every OSD pings the peers of the PGs it is primary for, the next and previous up OSD and one
  OSD per other host, filled up to ``osd_heartbeat_min_peers`` (10) (`heartbeat_peers`). Each OSD opens its
  own front and back connection to each peer, so a heartbeat pair costs 4 TCP connections (both ends
  initiate), every ``osd_heartbeat_interval`` (6 s).
* OSD<->OSD replication: one ``lossless_peer`` session per pair of OSDs that share PGs. A faulted lossless
  session reconnects with backoff ``ms_initial_backoff`` 0.2 s doubling to ``ms_max_backoff`` 15 s.
* One session to a monitor and one to the active mgr per OSD.
* Clients: one lossy session per client instance per OSD it talks to. A lossy session that faults is not
  retried by the messenger: the client opens a *new* connection (new 4-tuple, new conntrack entry) at once on
  the next operation (ProtocolV1::fault / ProtocolV2::_fault "on lossy channel, failing"). Clients dominate
  the count (5-6 k per 8-OSD host in the 2014 incident).
* A local connection (both ends on the host) costs one entry, not two (kernel-conntrack.md §1).

How many entries each kind costs (`Formula`) is fitted across the lab sweep (data/lab/sweep/, 20 shapes of
4-24 OSDs); the lab's 3 x 4 host (ceph-lab.md §4, 64 PGs, one client) measured ~180-198 entries, the fitted
formula gives 179 (tested). A host's measured inventory (`from_inventory`) replaces the formula altogether.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from ctguard.errors import BadInput
from ctguard.model.inventory import Inventory

HB_CONNS_PER_PAIR = 4  # front + back, each end initiates its own


@dataclass(frozen=True)
class CephOptions:
    """Ceph option values the model uses (defaults as shipped)."""

    osd_heartbeat_min_peers: int = 10
    osd_heartbeat_interval_s: float = 6.0
    osd_heartbeat_grace_s: float = 20.0
    mon_osd_report_timeout_s: float = 900.0  # 15 min: the incident's "blocked for 15 minutes"
    ms_initial_backoff_s: float = 0.2
    ms_max_backoff_s: float = 15.0
    # "shutdown the OSD if status flipping more than max_markdown_count times in recent max_markdown_period
    # seconds" (src/common/config_opts.h): 5 in 600 s; 0 = no limit (assumption for the 2014 firefly OSDs)
    osd_max_markdown_count: int = 5
    osd_max_markdown_period_s: float = 600.0


@dataclass(frozen=True)
class Formula:
    """The constants of the shape -> inventory formula (what a host holds when nobody measured it).

    The structure is Ceph's (module docstring); the constants are fitted across the lab sweep
    (`calibrate.fit_formula`, data/lab/sweep/) and a unit test checks that these values are what the fit
    gives, so they are never tuned by hand to one shape. Defaults are the theory: 4 entries per heartbeat
    peer, 1 per PG peer, 4 per local pair, one mon and one mgr session per OSD, one session per client per
    OSD of the host."""

    hb_conns: float = 4.0  # entries per remote heartbeat peer of an OSD
    peer_conns: float = 1.0  # entries per remote PG peer (cluster messenger session)
    local_per_pair: float = 4.0  # entries per pair of OSDs on the host
    mon_mgr: float = 2.0  # entries per OSD: its mon and mgr sessions
    client_osds: float = 1.0  # sessions of one client with one OSD of the host (share of OSDs it talks to)
    # faults per op a client sends to a not-serving OSD (each fault: one more TIME_WAIT entry, the loop);
    # with --client-rate, a session's loop runs at min(1/lossy_retry_s, rate per session x this)
    fault_per_op: float = 1.0
    # at every restart step the host's OSDs that stay up re-open this share of their OSD<->OSD sessions
    # (RestartBehaviour.repeer_fraction's default)
    repeer_fraction: float = 0.25
    # share of a restarted OSD's OSD<->OSD sessions opened from both ends at once when it comes back: msgr2
    # keeps one (lossless_peer connection race), the other closes into TIME_WAIT
    race_fraction: float = 0.0
    # how the race share grows as the pool narrows: x (3 / width) ** this (0: not at all). Empirical: the
    # sweep's size-2 pools burst 2.32-2.41x with one client against 2.11-2.32x for size 3
    race_width_exp: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in dataclasses.asdict(self).items()}


# Fitted across the lab sweep by calibrate.fit_formula (least squares over every shape's measured inventory);
# tests/unit/test_simulate_calibration.py refits and checks these numbers. Theory until the sweep is in.
FITTED = Formula(hb_conns=4.1294, peer_conns=0.9652, local_per_pair=3.4409, mon_mgr=2.0, client_osds=0.9345, fault_per_op=0.0, repeer_fraction=0.3, race_fraction=0.1, race_width_exp=2.0)


@dataclass(frozen=True)
class RestartBehaviour:
    """How a restarted OSD behaves; measured in the lab unless marked as an assumption.

    * downtime_s: kill to new process bound (lab 2.0-5.9 s, ceph-lab.md §4).
    * ramp_s: the new sessions open within ~1 s of binding (lab: +90 then +90 within ~1 s).
    * peering: kill to all PGs active+clean was 7.8-9.4 s for 4 OSDs (64 PGs) at once, i.e. ~2.5 s after
      binding; the model takes peering_base_s + peering_per_pg_s x PGs of the host peering at once, so a
      whole host of 8 x 100 PGs takes longer than one OSD (assumption: peering work scales with PGs).
    * lossy_retry_s / client_active_fraction: while an OSD is not serving (down or peering) every client
      with I/O in flight faults on it and re-opens a new session at once (assumption from the incident's
      "re-connect in rapid succession"; an idle client re-opens only on its next operation, so the lab's
      one mostly idle client barely feeds this loop).
    * lossless_active_fraction: share of lossless OSD<->OSD sessions that have messages queued and so
      reconnect with backoff while the peer is down (a lossless_peer session with nothing to send goes to
      STANDBY and waits); the lab saw only ~+36 entries during a whole-host downtime.
    * rst_fraction: old sessions that end in CLOSE (reset) instead of TIME_WAIT (lab r2: 23 of 236).
    * repeer_fraction: at every restart step, the other OSDs of the host that stay up re-open this share of
      their OSD<->OSD sessions (new osdmap epochs: heartbeat peer sets rebuilt, PG intervals change).
      Calibrated: it is what makes one-by-one with 5 s gaps peak at 2.65x baseline against 2.2-2.4x for
      all at once in the lab.
    """

    downtime_s: float = 3.0
    ramp_s: float = 1.0
    peering_base_s: float = 2.0
    peering_per_pg_s: float = 0.01
    lossy_retry_s: float = 0.5
    client_active_fraction: float = 1.0
    rst_fraction: float = 0.1
    lossless_active_fraction: float = 0.25
    repeer_fraction: float = FITTED.repeer_fraction
    race_fraction: float = FITTED.race_fraction
    syn_retry_s: float = 1.0  # a dropped SYN is retried after 1 s (tcp_syn_linear_timeouts, §3)
    reassert_s: float = 4.0  # marked down -> booted again once its messages pass (lab: drops end 62 s, boot 66 s)

    def peering_s(self, pgs: float) -> float:
        return self.peering_base_s + self.peering_per_pg_s * pgs


@dataclass(frozen=True)
class HostConns:
    """The connections of one host, per OSD (averages) — what its conntrack table holds in steady state."""

    osds: int
    pg_peers: float  # lossless OSD<->OSD sessions per OSD (peers on other hosts)
    hb_remote: float  # heartbeat peers per OSD on other hosts
    hb_local_pairs: int  # heartbeat pairs between the host's own OSDs (next/previous OSD by id)
    clients: float  # lossy client sessions per OSD
    mon: float = 1
    mgr: float = 1
    pgs_per_osd: float = 100.0
    local_per_pair: float = HB_CONNS_PER_PAIR  # entries per local pair (measured: the host's local entries)
    hb_conns: float = HB_CONNS_PER_PAIR  # entries per remote heartbeat peer
    source: str = "formula"  # formula | measured | scaled (a measurement below the formula)
    mesh_scale: float = 1.0  # measured mesh / the formula's (scaled: < 1)
    note: str = ""  # what the model did with the measurement, said to the user
    cluster_osds: int = 0  # OSDs in the cluster (0: unknown, taken as many)

    @property
    def infra_per_osd(self) -> float:
        """Entries of one OSD's sessions with other hosts, without clients."""
        return self.hb_conns * self.hb_remote + self.pg_peers + self.mon + self.mgr

    @property
    def osd_osd_per_osd(self) -> float:
        return self.hb_conns * self.hb_remote + self.pg_peers

    @property
    def per_osd(self) -> float:
        return self.infra_per_osd + self.clients

    @property
    def local_conns(self) -> float:
        return self.local_per_pair * self.hb_local_pairs

    @property
    def baseline(self) -> float:
        return self.osds * self.per_osd + self.local_conns

    def local_pairs(self) -> list[tuple[int, int]]:
        """The host's OSD pairs with local connections: every pair (the sweep measured ~4 entries per pair
        of OSDs on a host, 2.5-5 on 2 to 6 OSDs per host), up to hb_local_pairs of them."""
        pairs = list(itertools.combinations(range(self.osds), 2))
        return pairs[:max(0, self.hb_local_pairs)]

    def as_dict(self) -> dict[str, object]:
        return {
            "osds": self.osds,
            "baseline_entries": round(self.baseline, 1),
            "source": self.source,
            "mesh_scale": round(self.mesh_scale, 3),
            "note": self.note or None,
            "per_osd": {
                "heartbeat": round(self.hb_conns * self.hb_remote, 1),
                "osd_peers": round(self.pg_peers, 1),
                "mon": round(self.mon, 2),
                "mgr": round(self.mgr, 2),
                "clients": round(self.clients, 1),
            },
            "local_osd_osd": round(self.local_conns, 1),
        }


def distinct_peers(slots: float, candidates: int) -> float:
    """Expected number of distinct OSDs hit by `slots` PG replica slots spread over `candidates` OSDs."""
    if candidates <= 0:
        return 0.0
    return float(candidates * (1.0 - (1.0 - 1.0 / candidates) ** slots))


def pool_width(size: int | None = None, ec: str | None = None) -> int:
    """Replicas (or chunks) per PG: the pool size, or k+m of an erasure-coded pool ("4+2")."""
    if ec is not None:
        try:
            k_s, m_s = str(ec).replace(",", "+").split("+", 1)
            k, m = int(k_s), int(m_s)
        except ValueError as e:
            raise BadInput(f"bad erasure code {ec!r} (expected K+M, e.g. 4+2)") from e
        if k < 1 or m < 0:
            raise BadInput(f"bad erasure code {ec!r}: k >= 1 and m >= 0")
        return k + m
    return 3 if size is None else size


def heartbeat_peers(hosts: int, osds_per_host: int, pgs_per_osd: float, pool_size: int,
                    opts: CephOptions) -> tuple[float, float]:
    """Heartbeat peers an OSD pings (remote, local), as OSD::maybe_update_heartbeat_peers picks them
    (ceph/ceph src/osd/OSD.cc): the peers of the PGs it is primary for (PeeringState::update_heartbeat_peers
    returns early on a replica), the next and previous up OSD, one OSD per other host
    (OSDMap::get_random_up_osds_by_subtree, subtree "host"), then filled to osd_heartbeat_min_peers by walking
    the next OSD ids, which are the host's own first (ids are consecutive per host)."""
    n = osds_per_host
    remote = (hosts - 1) * n
    if remote <= 0:
        return 0.0, float(min(n - 1, opts.osd_heartbeat_min_peers))
    primary_slots = pgs_per_osd / max(1, pool_size) * (pool_size - 1)
    p = distinct_peers(primary_slots, remote)
    k = min(float(remote), hosts - 1 + 1.0)  # one per other host, and the previous OSD
    union = p + k - p * k / remote
    local = float(min(1, n - 1))  # the next OSD
    fill = max(0.0, opts.osd_heartbeat_min_peers - union - local)
    add_local = min(float(n - 1) - local, fill)
    add_remote = min(remote - union, fill - add_local)
    return union + add_remote, local + add_local


def _mesh(hosts: int, osds_per_host: int, pgs_per_osd: float, pool_size: int,
          opts: CephOptions) -> tuple[float, float, int]:
    """PG peers and heartbeat peers per OSD on other hosts, and the host's local pairs. Heartbeat
    connections are directed (the pinging OSD opens front and back), but over a cluster every OSD is pinged
    as often as it pings, so 2 x (out + in) = 4 x its remote heartbeat peers."""
    remote = (hosts - 1) * osds_per_host
    slots = pgs_per_osd * (pool_size - 1)
    pg_peers = distinct_peers(slots, remote)
    hb_remote, _ = heartbeat_peers(hosts, osds_per_host, pgs_per_osd, pool_size, opts)
    # local entries grow with every pair of the host's OSDs, not with neighbours only (sweep: 5 entries on
    # 2 OSDs, 15-32 on 4-5, 63 on 6)
    return pg_peers, hb_remote, osds_per_host * (osds_per_host - 1) // 2


def host_conns(
    hosts: int,
    osds_per_host: int,
    *,
    pgs_per_osd: float = 100.0,
    pool_size: int = 3,
    clients_per_osd: float | None = None,
    conn_per_host: float | None = None,
    options: CephOptions | None = None,
    formula: Formula | None = None,
) -> HostConns:
    """The inventory of one host of a cluster of `hosts` x `osds_per_host` (failure domain: host).

    Give either the clients per OSD or the measured entries per host (then clients = the rest). A measured
    count below what the formula gives the OSDs among themselves is not refused: the formula's constants
    are averages, a real host may hold fewer (fewer PG peers, heartbeat peers shared); the mesh is scaled
    down to the measurement, no clients are assumed, and `note` says so (simulate: WARN)."""
    opts = options or CephOptions()
    f = formula or FITTED
    if hosts < 1 or osds_per_host < 1:
        raise BadInput("need at least one host and one OSD per host")
    if pool_size < 1:
        raise BadInput("pool size must be at least 1")
    pg_peers, hb_remote, pairs = _mesh(hosts, osds_per_host, pgs_per_osd, pool_size, opts)
    base = HostConns(osds_per_host, pg_peers * f.peer_conns, hb_remote, pairs, 0.0, mon=f.mon_mgr / 2,
                     mgr=f.mon_mgr / 2, pgs_per_osd=pgs_per_osd, local_per_pair=f.local_per_pair,
                     hb_conns=f.hb_conns, cluster_osds=hosts * osds_per_host)
    if clients_per_osd is not None and conn_per_host is not None:
        raise BadInput("give either clients per OSD or connections per host, not both")
    if conn_per_host is not None:
        if conn_per_host < base.baseline:
            s = conn_per_host / base.baseline
            return dataclasses.replace(
                base, pg_peers=base.pg_peers * s, hb_remote=base.hb_remote * s, mon=base.mon * s,
                mgr=base.mgr * s, local_per_pair=base.local_per_pair * s, source="scaled", mesh_scale=s,
                note=(f"{conn_per_host:g} entries per host is fewer than the {base.baseline:.1f} the formula "
                      f"gives {hosts} hosts x {osds_per_host} OSDs among themselves: the OSD mesh is scaled "
                      f"to the measurement (x{s:.2f}), no clients assumed"))
        clients = (conn_per_host - base.baseline) / osds_per_host
    else:
        clients = 0.0 if clients_per_osd is None else clients_per_osd
    if clients < 0:
        raise BadInput("clients per OSD cannot be negative")
    return dataclasses.replace(base, clients=clients)


def from_inventory(inv: Inventory, hosts: int, osds_per_host: int, *, pgs_per_osd: float = 100.0,
                   pool_size: int = 3, options: CephOptions | None = None,
                   formula: Formula | None = None) -> HostConns:
    """The host as measured (`status --breakdown`, a lab record): OSD<->OSD sessions with other hosts split
    between heartbeats and PG peers in the formula's proportion (the split decides only how a down OSD's
    peers knock: heartbeats every 6 s, lossless peers with backoff), local, client and mon/mgr entries as
    counted. Entries that are not Ceph's or already closing are not here: they are `Inventory.held`."""
    if osds_per_host < 1:
        raise BadInput("need at least one OSD on the host")
    f = formula or FITTED
    opts = options or CephOptions()
    pg_peers, hb_remote, pairs = _mesh(max(1, hosts), osds_per_host, pgs_per_osd, pool_size, opts)
    n = osds_per_host
    mesh = inv.osd_osd / n
    f_hb, f_pg = f.hb_conns * hb_remote, f.peer_conns * pg_peers
    share = f_hb / (f_hb + f_pg) if f_hb + f_pg > 0 else 0.0
    hb = mesh * share / f.hb_conns if f.hb_conns > 0 else 0.0
    peers = mesh * (1 - share)
    local = float(inv.local)
    per_pair = local / pairs if pairs else 0.0
    mon = inv.mon_mgr / n + (0.0 if pairs else local / n)  # one OSD: its local entries churn with it
    formula_mesh = n * (f_hb + f_pg) + pairs * f.local_per_pair
    measured_mesh = inv.osd_osd + local
    return HostConns(n, peers, hb, pairs, inv.client / n, mon=mon, mgr=0.0, pgs_per_osd=pgs_per_osd,
                     local_per_pair=per_pair, hb_conns=f.hb_conns, source="measured",
                     cluster_osds=max(1, hosts) * n,
                     mesh_scale=measured_mesh / formula_mesh if formula_mesh > 0 else 1.0)


def backoff_attempts(window_s: float, options: CephOptions) -> int:
    """Reconnect attempts a lossless peer makes while the other end is down for window_s."""
    t, wait, n = 0.0, options.ms_initial_backoff_s, 0
    while t + wait <= window_s:
        t += wait
        n += 1
        wait = min(wait * 2, options.ms_max_backoff_s)
    return n
