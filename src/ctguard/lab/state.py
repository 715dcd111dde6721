"""The lab's journal: `<lab dir>/state.json` lists everything `lab up` made, written *before* each thing is
made, so `lab down` can undo a crashed or killed `up` from it (and from /proc and the namespace names)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ctguard.errors import CannotRead
from ctguard.statefile import read_json, write_json

SCHEMA = 1


@dataclass
class HostState:
    name: str
    ip: str
    fill_src: str
    osds: list[int] = field(default_factory=list)


@dataclass
class LabState:
    prefix: str
    dir: str
    conf: str
    store: str = "memstore"
    phase: str = "creating"  # creating -> up (-> down removes the file with the dir)
    fsid: str = ""
    created: str = ""
    sw_ns: str = ""
    mon_ns: str = ""
    client_ns: str = ""
    sink_ns: str = ""
    namespaces: list[str] = field(default_factory=list)
    hosts: list[HostState] = field(default_factory=list)
    daemons: dict[str, int] = field(default_factory=dict)  # "osd.3" -> PID, "client.0" -> PID
    pool: str = ""
    clients: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    # hosts, osds_per_host, pool_size, pg_num, pg_replicas_per_osd, clients, client_rate, store
    # (LabSpec.shape(); empty in the journal of a lab made before shapes were recorded)
    shape: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return os.path.join(self.dir, "state.json")

    def host(self, name: str) -> HostState:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "prefix": self.prefix,
            "dir": self.dir,
            "conf": self.conf,
            "store": self.store,
            "phase": self.phase,
            "fsid": self.fsid,
            "created": self.created,
            "sw_ns": self.sw_ns,
            "mon_ns": self.mon_ns,
            "client_ns": self.client_ns,
            "sink_ns": self.sink_ns,
            "namespaces": list(self.namespaces),
            "hosts": [{"name": h.name, "ip": h.ip, "fill_src": h.fill_src, "osds": list(h.osds)}
                      for h in self.hosts],
            "daemons": dict(self.daemons),
            "pool": self.pool,
            "clients": self.clients,
            "timings": dict(self.timings),
            "shape": dict(self.shape),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LabState:
        try:
            hosts = [HostState(str(h["name"]), str(h["ip"]), str(h["fill_src"]), [int(i) for i in h["osds"]])
                     for h in doc.get("hosts", [])]
            return cls(
                prefix=str(doc["prefix"]), dir=str(doc["dir"]), conf=str(doc["conf"]),
                store=str(doc.get("store", "memstore")), phase=str(doc.get("phase", "creating")),
                fsid=str(doc.get("fsid", "")), created=str(doc.get("created", "")),
                sw_ns=str(doc.get("sw_ns", "")), mon_ns=str(doc.get("mon_ns", "")),
                client_ns=str(doc.get("client_ns", "")), sink_ns=str(doc.get("sink_ns", "")),
                namespaces=[str(n) for n in doc.get("namespaces", [])], hosts=hosts,
                daemons={str(k): int(v) for k, v in doc.get("daemons", {}).items()},
                pool=str(doc.get("pool", "")), clients=int(doc.get("clients", 0)),
                timings={str(k): float(v) for k, v in doc.get("timings", {}).items()},
                shape=dict(doc.get("shape", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CannotRead(f"lab state: unexpected content ({e})") from e

    def save(self) -> None:
        """Atomic replace: a crash leaves the old or the new journal, never half of one."""
        write_json(self.path, self.to_json(), durable=True, indent=1)


def load_state(lab_dir: str) -> LabState | None:
    doc = read_json(os.path.join(lab_dir, "state.json"), "lab state")
    return None if doc is None else LabState.from_json(doc)
