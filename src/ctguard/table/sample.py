"""The last reading of a namespace's counters, kept in the state dir so the next `status` can tell whether
drops rose since (a monitoring check runs once per interval and must compare with its previous run)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from ctguard.statefile import write_json

DEFAULT_STATE_DIR = "/var/lib/ctguard"


@dataclass(frozen=True)
class Sample:
    ts: float
    inode: int
    drop: int


def _path(state_dir: str, label: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
    return os.path.join(state_dir, "status", f"{safe}.json")


def load(state_dir: str, label: str, inode: int) -> Sample | None:
    """The previous sample of this namespace, or None (none yet, unreadable, or the namespace was
    recreated since: its inode differs, so its counters restarted from zero)."""
    try:
        with open(_path(state_dir, label), encoding="utf-8") as f:
            d = json.load(f)
        s = Sample(float(d["ts"]), int(d["inode"]), int(d["drop"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return s if s.inode == inode else None


def save(state_dir: str, label: str, sample: Sample) -> bool:
    """Write atomically (rename); False when the state dir is not writable (not root): not an error."""
    try:
        write_json(_path(state_dir, label), {"ts": sample.ts, "inode": sample.inode, "drop": sample.drop})
        return True
    except OSError:
        return False
