"""Recorded-output helpers shared by the notrack unit tests."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from ctguard.runner import Completed

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "notrack")


def _read(name: str) -> str:
    with open(os.path.join(FIX, name), encoding="utf-8") as f:
        return f.read()


def _items(name: str) -> list[dict[str, object]]:
    return json.loads(_read(name))["nftables"]  # type: ignore[no-any-return]


class FakeRunner:
    """Answers by the command (after any `ip netns exec NAME` prefix); records the calls."""

    def __init__(self, answers: Mapping[tuple[str, ...], str | tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    def __call__(self, argv: Sequence[str], *, timeout: float, input: str | None = None, check: bool = False,
                 env: Mapping[str, str] | None = None) -> Completed:
        a = tuple(argv)
        if a[:3] == ("ip", "netns", "exec"):
            a = a[4:]
        self.calls.append((a, input))
        ans = self.answers.get(a, (1, "", f"Error: unexpected command {' '.join(a)}"))
        if isinstance(ans, str):
            return Completed(tuple(argv), 0, ans, "")
        return Completed(tuple(argv), *ans)
