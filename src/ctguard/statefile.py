"""Small JSON state files (journals, last samples, guard state): atomic writes, forgiving reads.

A crash or a concurrent reader sees the old file or the new one, never half of one: write to a temporary
file in the same directory, fsync it (and the directory, for journals that must survive a power loss),
then rename over the old one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

from ctguard.errors import CannotRead


def write_json(path: str, doc: Any, *, durable: bool = False, indent: int | None = None,
               sort_keys: bool = False) -> None:
    """Atomically replace `path` with `doc` as JSON. `durable`: fsync the file and its directory."""
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=indent, sort_keys=sort_keys)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            dfd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: str, what: str) -> dict[str, Any] | None:
    """The JSON object in `path`; None when there is no such file; CannotRead (naming `what`) when it is
    unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CannotRead(f"{path}: unreadable {what} ({e})") from e
    if not isinstance(doc, dict):
        raise CannotRead(f"{path}: unreadable {what} (not an object)")
    return doc
