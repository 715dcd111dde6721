"""The lab's layout as pure values: namespace names, addresses, directories and the ceph.conf text.

Every lab is named by a prefix (default `cl`): its namespaces are `<prefix>-sw` (the bridge), `<prefix>-mon`
(mon + mgr + every `ceph` CLI call), `<prefix>-h1..N` (OSD hosts; the namespace name is also the hostname and
the CRUSH host bucket), `<prefix>-cli` (librados clients) and `<prefix>-sink` (where each host's filler
packets to 198.19.0.0/16 are discarded). Labs are isolated L2 islands, so two labs with different prefixes can
use the same addresses. Only 198.18.0.0/15 is used. The ceph.conf follows the measured recipe of
shared/reference/ceph-lab.md (its pitfalls 1-8 are each answered by a line below).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

from ctguard.errors import BadInput

DEFAULT_PREFIX = "cl"
DEFAULT_BASE = "/var/lib/ctguard/lab"
PUBLIC_NET = "198.18.0.0/24"
MON_IP = "198.18.0.1"
CLIENT_IP = "198.18.0.2"
FILL_NET = "198.19.0.0/16"
# Ceph's ports: mon v2/v1 and the OSD/mgr bind range (ms_bind_port_min/max; ctguard's PortRoles default).
MON_PORTS = (3300, 6789)
OSD_PORTS = (6800, 7568)
# each OSD host's `ctguard exporter` (lab/mgrmod.py), read by the ctguard mgr module from the mon namespace
EXPORTER_PORT = 9477
STORES = ("memstore", "bluestore")
POOL = "labpool"
DEFAULT_CLIENT_RATE = 40.0  # ops/s of one librados client (workload.py's default)
MAX_CLIENTS = 64
MAX_PG_NUM = 4096
# `mon max pg per osd` below: the mon refuses a pool that would put more PG replicas on an OSD
MON_MAX_PG_PER_OSD = 1000

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix):
        raise BadInput(f"bad lab prefix {prefix!r}: 1-12 lower-case letters or digits, starting with a letter")
    return prefix


def lab_dir(prefix: str, base_dir: str | None = None) -> str:
    return os.path.join(base_dir or DEFAULT_BASE, check_prefix(prefix))


def host_name(prefix: str, i: int) -> str:
    """The i-th OSD host (1-based): namespace name = hostname = CRUSH host."""
    return f"{prefix}-h{i}"


def host_ip(i: int) -> str:
    return f"198.18.0.{10 + i}"


def fill_src(i: int) -> str:
    """The host's own address on its sink link: filler packets leave from it (198.18.(100+i).1/24)."""
    return f"198.18.{100 + i}.1"


def fill_gw(i: int) -> str:
    return f"198.18.{100 + i}.2"


def pg_num_for(pgs_per_osd: float, osds: int, pool_size: int) -> int:
    """The power-of-two pg_num whose PG replicas per OSD (pg_num x size / OSDs) come nearest to `pgs_per_osd`
    (nearest on a log scale, as the autoscaler rounds; Pacific warns POOL_PG_NUM_NOT_POWER_OF_TWO otherwise)."""
    if pgs_per_osd <= 0 or osds < 1 or pool_size < 1:
        raise BadInput(f"--pgs-per-osd must be > 0, not {pgs_per_osd:g}")
    exact = pgs_per_osd * osds / pool_size
    return int(min(MAX_PG_NUM, max(1, 2 ** round(math.log2(max(1.0, exact))))))


@dataclass(frozen=True)
class LabSpec:
    """A lab's shape. `size`, `pgs` and `pgs_per_osd` are what the user asked for (None: the default);
    `pool_size` and `pg_num` are what the lab creates."""

    prefix: str = DEFAULT_PREFIX
    hosts: int = 3
    osds_per_host: int = 4
    store: str = "memstore"
    clients: int = 1
    base_dir: str | None = None
    size: int | None = None  # --pool-size (default: min(3, hosts))
    pgs: int | None = None  # --pg-num
    pgs_per_osd: float | None = None  # --pgs-per-osd: PG replicas per OSD, turned into a power-of-two pg_num
    client_rate: float = DEFAULT_CLIENT_RATE  # --client-rate: ops/s of each client

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if not 1 <= self.hosts <= 8:
            raise BadInput(f"--hosts must be 1..8, not {self.hosts}")
        if not 1 <= self.osds_per_host <= 12:
            raise BadInput(f"--osds-per-host must be 1..12, not {self.osds_per_host}")
        if self.store not in STORES:
            raise BadInput(f"--store must be one of {', '.join(STORES)}, not {self.store!r}")
        if not 0 <= self.clients <= MAX_CLIENTS:
            raise BadInput(f"--clients must be 0..{MAX_CLIENTS}, not {self.clients}")
        if not 0 < self.client_rate <= 1000:
            raise BadInput(f"--client-rate must be > 0 and <= 1000 ops/s, not {self.client_rate:g}")
        if self.size is not None and not 1 <= self.size <= min(self.hosts, 10):
            # CRUSH places each copy on another host (chooseleaf type 1): more copies than hosts never go clean
            raise BadInput(f"--pool-size must be 1..{min(self.hosts, 10)} (at most one copy per host, "
                           f"{self.hosts} hosts), not {self.size}")
        if self.pgs is not None and self.pgs_per_osd is not None:
            raise BadInput("give --pg-num or --pgs-per-osd, not both")
        if self.pgs is not None and not (1 <= self.pgs <= MAX_PG_NUM and self.pgs & (self.pgs - 1) == 0):
            raise BadInput(f"--pg-num must be a power of two in 1..{MAX_PG_NUM} (Pacific warns "
                           f"POOL_PG_NUM_NOT_POWER_OF_TWO otherwise), not {self.pgs}")
        if self.pgs_per_osd is not None and self.pgs_per_osd <= 0:
            raise BadInput(f"--pgs-per-osd must be > 0, not {self.pgs_per_osd:g}")
        # the lab's pool plus the mgr's one-PG device_health_metrics pool
        per_osd = (self.pg_num + 1) * self.pool_size / self.osds
        if per_osd > MON_MAX_PG_PER_OSD:
            raise BadInput(f"{self.pg_num} PGs x size {self.pool_size} on {self.osds} OSDs is {per_osd:.0f} PG "
                           f"replicas per OSD, more than the lab's mon max pg per osd ({MON_MAX_PG_PER_OSD})")

    @property
    def dir(self) -> str:
        return lab_dir(self.prefix, self.base_dir)

    @property
    def conf(self) -> str:
        return os.path.join(self.dir, "ceph.conf")

    @property
    def sw_ns(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def mon_ns(self) -> str:
        return f"{self.prefix}-mon"

    @property
    def client_ns(self) -> str:
        return f"{self.prefix}-cli"

    @property
    def sink_ns(self) -> str:
        return f"{self.prefix}-sink"

    @property
    def host_names(self) -> list[str]:
        return [host_name(self.prefix, i) for i in range(1, self.hosts + 1)]

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of the lab, in creation order."""
        return [self.sw_ns, self.mon_ns, self.client_ns, self.sink_ns, *self.host_names]

    @property
    def osds(self) -> int:
        return self.hosts * self.osds_per_host

    @property
    def pool_size(self) -> int:
        if self.size is not None:
            return self.size
        # replication across hosts (chooseleaf type 1): never more copies than hosts
        return min(3, self.hosts)

    @property
    def min_size(self) -> int:
        return 2 if self.pool_size >= 3 else 1

    @property
    def pg_num(self) -> int:
        if self.pgs is not None:
            return self.pgs
        if self.pgs_per_osd is not None:
            return pg_num_for(self.pgs_per_osd, self.osds, self.pool_size)
        return 64 if self.osds >= 8 else 32

    @property
    def pg_replicas_per_osd(self) -> float:
        """PG replicas of the lab's pool per OSD: pg_num x size / OSDs (what `ceph osd df` shows as PGS)."""
        return round(self.pg_num * self.pool_size / self.osds, 1)

    def shape(self) -> dict[str, Any]:
        """The shape as recorded in state.json, run.json and the sweep's records."""
        return {"hosts": self.hosts, "osds_per_host": self.osds_per_host, "pool_size": self.pool_size,
                "pg_num": self.pg_num, "pg_replicas_per_osd": self.pg_replicas_per_osd, "clients": self.clients,
                "client_rate": self.client_rate, "store": self.store}


def ceph_conf(spec: LabSpec, fsid: str) -> str:
    d = spec.dir
    size = spec.pool_size
    min_size = spec.min_size
    store = (
        "osd objectstore = memstore\n"
        "memstore device bytes = 1073741824\n"
        if spec.store == "memstore"
        else "osd objectstore = bluestore\n"
        "bluestore block create = true\n"
        "bluestore block size = 4294967296\n"
    )
    return f"""# Written by `ctguard lab up` for lab {spec.prefix!r}; removed by `ctguard lab down`.
[global]
fsid = {fsid}
mon initial members = a
mon host = [v2:{MON_IP}:3300,v1:{MON_IP}:6789]
public network = {PUBLIC_NET}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
# 16.2.15 warns AUTH_INSECURE_GLOBAL_ID_RECLAIM_ALLOWED otherwise
auth allow insecure global id reclaim = false
ms bind ipv4 = true
ms bind ipv6 = false
run dir = {d}/run
keyring = {d}/$cluster.$name.keyring
osd pool default size = {size}
osd pool default min size = {min_size}
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 1
mon allow pool delete = true
# --pool-size 1 is a shape a user may have
mon allow pool size one = true
mon warn on pool no redundancy = false
# the root fs may be fuller than the default 30 % warn threshold on a shared machine
mon data avail warn = 2
mon data avail crit = 1
mon max pg per osd = 1000
# read by the mon when it creates the MgrMap: must be in [global]
mgr initial modules = iostat
# health and `ceph -s` come from the mon's copy of the mgr digest: refresh it every second, not every 5 s
mon mgr digest period = 1
mgr stats period = 1
# clients (rados, ceph CLI) must never hang a lab run
client mount timeout = 30
rados osd op timeout = 30
rados mon op timeout = 30

[mon]
mon data = {d}/mon/$cluster-$id
mon cluster log file = {d}/log/$cluster.log
pid file = {d}/run/$cluster-$name.pid
log file = {d}/log/$cluster-$name.log

[mgr]
mgr data = {d}/mgr/$cluster-$id
pid file = {d}/run/$cluster-$name.pid
log file = {d}/log/$cluster-$name.log

[osd]
osd data = {d}/osd/$cluster-$id
keyring = {d}/osd/$cluster-$id/keyring
pid file = {d}/run/$cluster-$name.pid
log file = {d}/log/$cluster-$name.log
{store}# memstore saves its in-RAM store only on a clean umount; fast shutdown _exit()s before it
osd fast shutdown = false
osd memory target = 939524096
"""


def host_firewall(spec: LabSpec) -> str:
    """The OSD host's stateful firewall (loaded before its daemons start, pitfall 13): policy drop on input,
    established/related accepted, the Ceph ports open, and the filler's spoofed replies dropped so the local
    stack never answers them (which would change the filler entries' state). The output chain marks filler
    entries (ct mark 0x1) so the sampler can leave them out of its state breakdown with a kernel-side filter,
    and the reset can delete exactly them. The text replaces the table atomically (one nft transaction)."""
    lo, hi = OSD_PORTS
    ports = f"{{ {', '.join(str(p) for p in MON_PORTS)}, {lo}-{hi} }}"
    fw = f"{spec.prefix}_fw"
    return f"""table inet {fw} {{}}
delete table inet {fw}
table inet {fw} {{
  chain input {{
    type filter hook input priority filter; policy drop;
    ip saddr {FILL_NET} drop
    ct state established,related accept
    iif "lo" accept
    ip protocol icmp accept
    tcp dport {ports} accept
    tcp dport {EXPORTER_PORT} ip saddr {MON_IP} accept
    counter comment "dropped by policy"
  }}
  chain output {{
    type filter hook output priority filter; policy accept;
    ip daddr {FILL_NET} ct mark set 0x1
  }}
}}
"""
