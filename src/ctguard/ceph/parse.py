"""Parsers of the real `ceph … -f json` output shapes (Ceph 16.2.15, samples in shared/reference/ceph-output).

Pure functions from text to frozen dataclasses; they never run anything. Two shapes to keep apart:
`pg stat` names PG states `name`/`num` (pg_summary.num_pg_by_state) while `-s` names them `state_name`/`count`
(pgmap.pgs_by_state). Unknown or malformed output raises CannotRead with the command named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ctguard.errors import CannotRead

# PG state words that mean "not serving I/O": a PG showing any of these is not active for our purposes.
# (src/osd/osd_types.cc pg_state_string; "unknown" is the mgr's placeholder before it has stats.)
NOT_ACTIVE_WORDS = frozenset(
    {"peering", "down", "inactive", "unknown", "stale", "incomplete", "activating", "creating", "peered"}
)


def _load(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        head = text.strip().splitlines()[0][:80] if text.strip() else "(empty)"
        raise CannotRead(f"{what}: not JSON ({head!r})") from e


def _obj(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise CannotRead(f"{what}: expected a JSON object, got {type(doc).__name__}")
    return doc


@dataclass(frozen=True)
class OsdInfo:
    id: int
    up: bool
    in_: bool
    up_from: int
    down_at: int


@dataclass(frozen=True)
class OsdDump:
    epoch: int
    flags: frozenset[str]
    osds: dict[int, OsdInfo]

    def osd(self, osd_id: int) -> OsdInfo:
        try:
            return self.osds[osd_id]
        except KeyError as e:
            raise CannotRead(f"osd.{osd_id} is not in the OSD map") from e


def parse_osd_dump(text: str) -> OsdDump:
    what = "ceph osd dump"
    d = _obj(_load(text, what), what)
    try:
        flags_set = d.get("flags_set")
        if isinstance(flags_set, list):
            flags = frozenset(str(f) for f in flags_set)
        else:
            flags = frozenset(f for f in str(d.get("flags", "")).split(",") if f)
        osds: dict[int, OsdInfo] = {}
        for o in d["osds"]:
            i = int(o["osd"])
            osds[i] = OsdInfo(i, bool(int(o["up"])), bool(int(o["in"])), int(o.get("up_from", 0)),
                              int(o.get("down_at", 0)))
        return OsdDump(int(d["epoch"]), flags, osds)
    except (KeyError, TypeError, ValueError) as e:
        raise CannotRead(f"{what}: unexpected shape ({e!r})") from e


@dataclass(frozen=True)
class PgSummary:
    """PG states as `{state: count}` plus the total, from either `pg stat` or `-s`."""

    states: dict[str, int]
    num_pgs: int
    source: str

    @property
    def not_active(self) -> dict[str, int]:
        """States that are not serving I/O: every state must contain `active` and none of the bad words."""
        bad: dict[str, int] = {}
        for state, n in self.states.items():
            words = set(state.split("+"))
            if "active" not in words or words & NOT_ACTIVE_WORDS:
                bad[state] = n
        counted = sum(self.states.values())
        if counted < self.num_pgs:  # PGs the summary does not account for: treat as unknown
            bad["unknown"] = bad.get("unknown", 0) + self.num_pgs - counted
        return bad

    @property
    def all_active(self) -> bool:
        return self.num_pgs > 0 and not self.not_active

    @property
    def all_clean(self) -> bool:
        return self.num_pgs > 0 and self.states.get("active+clean", 0) == self.num_pgs

    def short(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in sorted(self.states.items(), key=lambda kv: -kv[1])) or "no PGs"


def parse_pg_stat(text: str) -> PgSummary:
    """`ceph pg stat -f json`: {"pg_summary": {"num_pg_by_state": [{"name", "num"}], "num_pgs"}} (served by the mgr)."""
    what = "ceph pg stat"
    d = _obj(_load(text, what), what)
    try:
        s = d["pg_summary"]
        states = {str(x["name"]): int(x["num"]) for x in s.get("num_pg_by_state", [])}
        return PgSummary(states, int(s["num_pgs"]), "pg stat")
    except (KeyError, TypeError, ValueError) as e:
        raise CannotRead(f"{what}: unexpected shape ({e!r})") from e


@dataclass(frozen=True)
class ClusterStatus:
    health: str
    checks: tuple[str, ...]
    num_osds: int
    num_up_osds: int
    pgs: PgSummary


def parse_status(text: str) -> ClusterStatus:
    """`ceph -s -f json`: health{status,checks}, osdmap{num_osds,num_up_osds}, pgmap{pgs_by_state[{state_name,count}]}."""
    what = "ceph -s"
    d = _obj(_load(text, what), what)
    try:
        pgmap = d["pgmap"]
        states = {str(x["state_name"]): int(x["count"]) for x in pgmap.get("pgs_by_state", [])}
        osdmap = d["osdmap"]
        osdmap = osdmap.get("osdmap", osdmap)  # pre-Pacific nests osdmap.osdmap
        health = d["health"]
        return ClusterStatus(
            str(health.get("status", "UNKNOWN")),
            tuple(sorted(health.get("checks", {}))),
            int(osdmap["num_osds"]),
            int(osdmap["num_up_osds"]),
            PgSummary(states, int(pgmap["num_pgs"]), "-s"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CannotRead(f"{what}: unexpected shape ({e!r})") from e


@dataclass(frozen=True)
class OkToStop:
    ok: bool
    osds: tuple[int, ...]
    num_ok_pgs: int = 0
    num_not_ok_pgs: int = 0
    bad_become_inactive: tuple[str, ...] = ()
    reason: str = ""


def parse_ok_to_stop(stdout: str, stderr: str, returncode: int) -> OkToStop:
    """`ceph osd ok-to-stop IDS [--max N]` prints JSON on stdout even without -f json; when the answer is no it
    also prints `Error EBUSY: …` on stderr and exits 16 (EBUSY). Measured on 16.2.15 (ceph-lab.md §4)."""
    what = "ceph osd ok-to-stop"
    reason = ""
    for line in stderr.splitlines():
        if line.startswith("Error"):
            reason = line.strip()
            break
    if not stdout.strip():
        raise CannotRead(f"{what}: no JSON on stdout (rc {returncode}: {reason or stderr.strip()[:120]})")
    d = _obj(_load(stdout, what), what)
    try:
        ok = bool(d["ok_to_stop"]) and returncode == 0
        return OkToStop(
            ok,
            tuple(int(i) for i in d.get("osds", [])),
            int(d.get("num_ok_pgs", 0)),
            int(d.get("num_not_ok_pgs", 0)),
            tuple(str(p) for p in d.get("bad_become_inactive", [])),
            reason,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CannotRead(f"{what}: unexpected shape ({e!r})") from e


@dataclass(frozen=True)
class OsdTree:
    """CRUSH hosts and their OSDs from `ceph osd tree -f json` (nodes with type host and children ids)."""

    hosts: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def host_of(self, osd_id: int) -> str | None:
        for h, ids in self.hosts.items():
            if osd_id in ids:
                return h
        return None


def parse_osd_tree(text: str) -> OsdTree:
    what = "ceph osd tree"
    d = _obj(_load(text, what), what)
    try:
        hosts: dict[str, tuple[int, ...]] = {}
        for n in d["nodes"]:
            if n.get("type") == "host":
                hosts[str(n["name"])] = tuple(sorted(int(c) for c in n.get("children", []) if int(c) >= 0))
        return OsdTree(hosts)
    except (KeyError, TypeError, ValueError) as e:
        raise CannotRead(f"{what}: unexpected shape ({e!r})") from e
