"""The breakdown child's document, the parent's source over a recorded child run, and the refresher."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctguard.errors import CannotRead
from ctguard.export.breakdown import SCHEMA, Breakdown, Refresher, child_source, from_json
from ctguard.kernel.netns import Netns
from ctguard.runner import Completed

DOC = {"schema": SCHEMA, "taken_at": 10.0, "seconds": 0.5, "count": 12, "by_state": {"ESTABLISHED": 12},
       "by_proto": {"tcp": 12}, "by_role": {"ceph-osd": 12}, "by_daemon": [{"name": "osd.0", "entries": 12}],
       "assured": 12, "expired_freed": 3}


def test_document_round_trip() -> None:
    bd = from_json(DOC)
    assert bd.by_daemon == [("osd.0", 12)] and bd.expired_freed == 3
    assert from_json({"schema": SCHEMA, **bd.to_json()}) == bd


@pytest.mark.parametrize("bad", [
    {},
    {**DOC, "by_state": {"ESTABLISHED": "many"}},
    {**DOC, "by_daemon": [{"name": 3, "entries": 1}]},
    {**DOC, "by_daemon": "osd.0"},
    {**DOC, "count": "x"},
])
def test_bad_documents_are_one_clear_error(bad: dict[str, object]) -> None:
    with pytest.raises(CannotRead):
        from_json(bad)


class Recorded:
    def __init__(self, done: Completed) -> None:
        self.done = done
        self.argv: list[str] = []

    def __call__(self, argv: Sequence[str], *, timeout: float, input: str | None = None, check: bool = False,
                 env: Mapping[str, str] | None = None) -> Completed:
        self.argv = list(argv)
        return self.done


def test_child_source_runs_the_module_in_the_namespace() -> None:
    r = Recorded(Completed(("x",), 0, json.dumps(DOC), ""))
    bd = child_source(Netns(name="n1"), "6800-7300", runner=r)()
    assert bd.count == 12
    assert r.argv[1:] == ["-m", "ctguard.export.breakdown", "--netns", "n1", "--osd-range", "6800-7300"]
    r = Recorded(Completed(("x",), 0, json.dumps(DOC), ""))
    child_source(Netns(pid=7), runner=r)()
    assert r.argv[-2:] == ["--netns-pid", "7"]


@pytest.mark.parametrize("done", [
    Completed(("x",), 3, "", "ctguard breakdown: no network namespace 'n1'\n"),
    Completed(("x",), 0, "not json", ""),
    Completed(("x",), 0, "[1, 2]", ""),
])
def test_child_failures_are_cannot_read(done: Completed) -> None:
    with pytest.raises(CannotRead):
        child_source(Netns(name="n1"), runner=Recorded(done))()


def test_refresher_runs_in_the_background_and_reports() -> None:
    ran = threading.Event()
    seen: list[tuple[Breakdown | None, str | None]] = []

    def src() -> Breakdown:
        ran.set()
        return from_json(DOC)

    now = [100.0]
    ref = Refresher(src, 3600, clock=lambda: now[0])
    ref.on_result(lambda bd, err: seen.append((bd, err)))
    assert ref.latest() == (None, None)
    ref.start()
    assert ran.wait(5)
    ref.stop(5)
    now[0] = 130.0
    bd, age = ref.latest()
    assert bd is not None and age == 30.0 and ref.expired_freed_total == 3 and ref.runs == 1
    assert seen and seen[0][1] is None
    with pytest.raises(ValueError):
        Refresher(src, 0)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                     max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(list(DOC) + ["x"]), _json, max_size=12))
def test_any_document_parses_or_is_cannot_read(doc: dict[str, object]) -> None:
    try:
        from_json(doc)
    except CannotRead:
        pass


def test_child_main_reports_a_bad_namespace_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from ctguard.export.breakdown import main

    assert main(["--netns", "no/such", "--nice", "0"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("ctguard breakdown: ") and err.count("\n") == 1
    assert main(["--osd-range", "9-1", "--nice", "0"]) == 3
