"""JSON output conventions shared by every command: a top-level integer `schema`, RFC 3339 UTC timestamps,
and one-object-per-line event streams."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any


def rfc3339(ts: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-26T06:00:00.123Z."""
    dt = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def jsonable(obj: Any) -> Any:
    """Plain JSON types from dataclasses, tuples, mappings and enums."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "value") and hasattr(obj, "name") and not isinstance(obj, int | str):
        return obj.value
    return obj


def dumps(doc: Mapping[str, Any], schema: int) -> str:
    body = {"schema": schema}
    body.update(jsonable(doc))
    return json.dumps(body, indent=2, sort_keys=False)


def emit_event(event: str, fields: Mapping[str, Any] | None = None, stream: IO[str] | None = None) -> None:
    """One JSON object per line with `ts` and `event`; flushed, so a pipe reader sees it at once."""
    out = stream if stream is not None else sys.stdout
    rec: dict[str, Any] = {"ts": rfc3339(), "event": event}
    if fields:
        rec.update(jsonable(fields))
    out.write(json.dumps(rec, sort_keys=False) + "\n")
    out.flush()
