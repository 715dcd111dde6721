"""Take Ceph's traffic out of conntrack while the host firewall stays closed (`ctguard notrack`).

Plain Python entry points for the lab and other callers:

    from ctguard.firewall import apply_notrack, confirm_notrack, remove_notrack
    out = apply_notrack(Netns(name="h1"), networks=["198.18.0.0/24"], state_dir=tmp)          # confirmed now
    out = apply_notrack(ns, networks=[...], rollback_after=60, state_dir=tmp)   # pending, auto-rollback
    confirm_notrack(ns, state_dir=tmp); remove_notrack(ns, state_dir=tmp)
"""

from __future__ import annotations

from collections.abc import Sequence

from ctguard.firewall import journal
from ctguard.firewall.nftrules import OPERATOR_RULE
from ctguard.firewall.spec import NotrackSpec, build_spec
from ctguard.firewall.transaction import Outcome, confirm, parse_chain_ref, recover, remove
from ctguard.firewall.transaction import apply as _apply
from ctguard.kernel.netns import Netns

__all__ = ["OPERATOR_RULE", "NotrackSpec", "Outcome", "apply_notrack", "build_spec", "confirm_notrack",
           "recover", "remove_notrack"]


def apply_notrack(
    ns: Netns,
    networks: Sequence[str],
    *,
    mon_ports: Sequence[int] | None = None,
    osd_range: tuple[int, int] | str | None = None,
    extra_ports: Sequence[str] = (),
    extra_from: Sequence[str] = (),
    backend: str = "nft",
    rollback_after: float | None = None,
    state_dir: str = journal.DEFAULT_STATE_DIR,
    insert_accept: Sequence[str] = (),
    force: bool = False,
) -> Outcome:
    """Validate, then load the exemption into `ns` in one transaction. `rollback_after=None` applies it
    confirmed; a number of seconds leaves it pending and rolls it back unless `confirm_notrack` comes in time.
    `insert_accept=["inet fw input"]` also inserts `ct state untracked accept` at the top of those chains
    of the host's own firewall (explicit consent; removed again by rollback/remove)."""
    spec = build_spec(networks, mon_ports, osd_range, extra_ports, extra_from)
    inserts = [parse_chain_ref(c) for c in insert_accept]
    return _apply(ns, spec, backend=backend, timeout=rollback_after, state_dir=state_dir, inserts=inserts,
                  force=force)


def confirm_notrack(ns: Netns, state_dir: str = journal.DEFAULT_STATE_DIR) -> Outcome:
    return confirm(ns, state_dir)


def remove_notrack(ns: Netns, state_dir: str = journal.DEFAULT_STATE_DIR, backend: str | None = None) -> Outcome:
    return remove(ns, state_dir, backend)
