"""The status verdict: OK / WARN / CRIT with the reasons, from readings only.

CRIT: the table dropped packets since the last sample (the `drop` counter rose: every drop is a refused
new connection), or it is >= 95 % full. WARN: >= 75 % full, or the table could not absorb a whole-host
restart of the local Ceph daemons: a restart turns each of their entries into a TIME_WAIT entry (120 s by
default) while the daemons open a new set, so the table briefly needs about twice their entries (measured
in the lab: 2.2-2.4x the host's baseline for all at once, shared/reference/ceph-lab.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass

OK, WARN, CRIT = "OK", "WARN", "CRIT"
_RANK = {OK: 0, WARN: 1, CRIT: 2}


@dataclass(frozen=True)
class Thresholds:
    warn_fill: float = 0.75
    crit_fill: float = 0.95
    burst_factor: float = 2.0  # the new set of entries a restart adds, as a multiple of the daemons' entries


@dataclass(frozen=True)
class Verdict:
    level: str
    reasons: tuple[str, ...]


def verdict(
    count: int,
    limit: int,
    drop_delta: int | None,
    ceph_entries: int | None,
    th: Thresholds | None = None,
    tracking: bool | None = True,
) -> Verdict:
    th = th or Thresholds()
    level = OK
    reasons: list[str] = []

    def raise_to(lv: str, why: str) -> None:
        nonlocal level
        if _RANK[lv] > _RANK[level]:
            level = lv
        reasons.append(why)

    if tracking is False:
        return Verdict(OK, ("no connection tracking here, nothing to overflow (no rule uses conntrack)",))
    fill = count / limit if limit > 0 else 0.0
    if drop_delta is not None and drop_delta > 0:
        raise_to(CRIT, f"{drop_delta} packets dropped since the last sample (table full)")
    if fill >= th.crit_fill:
        raise_to(CRIT, f"table {fill:.0%} full ({count}/{limit})")
    elif fill >= th.warn_fill:
        raise_to(WARN, f"table {fill:.0%} full ({count}/{limit})")
    if ceph_entries is not None and ceph_entries > 0:
        burst = int(ceph_entries * (th.burst_factor - 1.0))
        free = max(0, limit - count)
        if burst > free:
            raise_to(WARN, f"a whole-host restart of the local Ceph daemons would add ~{burst} entries "
                           f"but only {free} are free")
    return Verdict(level, tuple(reasons))
