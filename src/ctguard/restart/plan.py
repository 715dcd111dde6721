"""The restart plan: which OSDs, grouped by CRUSH host, in which order. Hosts are rolled one after another;
within a host the engine batches as the gates allow."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ctguard.ceph.parse import OsdTree
from ctguard.errors import BadInput

_OSD = re.compile(r"^(?:osd\.)?(\d+)$")


def parse_osd_names(names: Sequence[str]) -> list[int]:
    out: list[int] = []
    for n in names:
        m = _OSD.match(n.strip())
        if not m:
            raise BadInput(f"not an OSD name: {n!r} (expected osd.N)")
        i = int(m.group(1))
        if i not in out:
            out.append(i)
    return out


@dataclass(frozen=True)
class HostPlan:
    host: str
    osds: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    hosts: tuple[HostPlan, ...]

    @property
    def osds(self) -> list[int]:
        return [o for h in self.hosts for o in h.osds]

    def host_of(self, osd: int) -> str:
        for h in self.hosts:
            if osd in h.osds:
                return h.host
        raise KeyError(osd)

    def to_json(self) -> list[dict[str, Any]]:
        return [{"host": h.host, "osds": list(h.osds)} for h in self.hosts]

    @classmethod
    def from_json(cls, doc: list[dict[str, Any]]) -> Plan:
        return cls(tuple(HostPlan(str(h["host"]), tuple(int(o) for o in h["osds"])) for h in doc))


def build_plan(tree: OsdTree, osds: Sequence[int] = (), hosts: Sequence[str] = (), cluster: bool = False) -> Plan:
    """OSDs named explicitly (grouped by their CRUSH host, hosts in order of first mention), whole hosts, or
    every host of the cluster (CRUSH order)."""
    chosen: dict[str, list[int]] = {}
    if cluster:
        for h, ids in tree.hosts.items():
            if ids:
                chosen[h] = list(ids)
    for h in hosts:
        if h not in tree.hosts:
            known = ", ".join(sorted(tree.hosts)) or "none"
            raise BadInput(f"no CRUSH host {h!r} (hosts: {known})")
        chosen.setdefault(h, [])
        for o in tree.hosts[h]:
            if o not in chosen[h]:
                chosen[h].append(o)
    for o in osds:
        owner = tree.host_of(o)
        if owner is None:
            raise BadInput(f"osd.{o} is not under any CRUSH host")
        chosen.setdefault(owner, [])
        if o not in chosen[owner]:
            chosen[owner].append(o)
    plan = Plan(tuple(HostPlan(h, tuple(ids)) for h, ids in chosen.items() if ids))
    if not plan.hosts:
        raise BadInput("nothing to restart (name OSDs, --host HOST, --local or --cluster)")
    return plan
