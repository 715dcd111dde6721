"""Growth, time-to-full, restart headroom and the label cap: pure functions."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctguard.export.trend import (
    Sample,
    SampleWindow,
    cap_labels,
    growth_per_second,
    restart_headroom,
    seconds_to_full,
)


def test_growth_is_the_least_squares_slope() -> None:
    pts = [Sample(float(t), 1000 + 50 * t) for t in range(10)]
    assert growth_per_second(pts) == 50.0
    # one outlier moves a slope less than it would move last-minus-first
    pts[-1] = Sample(9.0, 0)
    g = growth_per_second(pts)
    assert g is not None and g > (pts[-1].count - pts[0].count) / 9


def test_growth_needs_two_samples_spanning_min_span() -> None:
    assert growth_per_second([]) is None
    assert growth_per_second([Sample(0, 5)]) is None
    assert growth_per_second([Sample(0, 5), Sample(0.001, 50)]) is None  # a millisecond says nothing
    assert growth_per_second([Sample(0, 5), Sample(1, 50)]) == 45


def test_window_drops_old_samples_and_late_ones() -> None:
    w = SampleWindow(window=10)
    for t in range(30):
        w.add(float(t), t * 2)
    assert [s.t for s in w.samples()][0] == 19.0
    w.add(5.0, 999)  # older than the newest: ignored
    assert w.samples()[-1].t == 29.0
    assert w.growth_per_second() == 2.0


def test_seconds_to_full() -> None:
    assert seconds_to_full(900, 1000, 10.0) == 10.0
    assert seconds_to_full(1000, 1000, 10.0) == 0.0
    assert seconds_to_full(1200, 1000, None) == 0.0  # above the limit (it was lowered): full
    assert math.isinf(seconds_to_full(900, 1000, 0.0))
    assert math.isinf(seconds_to_full(900, 1000, -5.0))
    assert math.isinf(seconds_to_full(900, 1000, None))


def test_headroom_uses_the_busiest_osd_only() -> None:
    h = restart_headroom(9000, 10000, [("osd.1", 300), ("osd.12", 450), ("mon.a", 5000), ("sshd", 9)], 2.0)
    assert (h.daemon, h.daemon_entries, h.burst, h.free, h.headroom) == ("osd.12", 450, 900, 1000, 100)
    assert not h.would_overflow
    h = restart_headroom(9500, 10000, [("osd.1", 300)], 2.0)
    assert h.headroom == -100 and h.would_overflow
    none = restart_headroom(10, 100, [("mon.a", 50)], 2.0)
    assert none.daemon is None and none.burst == 0 and none.headroom == 90


def test_cap_labels_keeps_top_and_folds_the_rest() -> None:
    vals = [(f"osd.{i}", i) for i in range(100)]
    capped = cap_labels(vals, 5)
    assert capped[:5] == [("osd.99", 99), ("osd.98", 98), ("osd.97", 97), ("osd.96", 96), ("osd.95", 95)]
    assert capped[5] == ("other", sum(range(95)))
    assert cap_labels([("a", 1), ("b", 2)], 5) == [("b", 2), ("a", 1)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "other", "osd.1", "osd.2", "x"]),
                          st.integers(min_value=0, max_value=10**6)), max_size=40),
       st.integers(min_value=0, max_value=10))
def test_cap_labels_is_bounded_and_preserves_the_total(vals: list[tuple[str, int]], top: int) -> None:
    capped = cap_labels(vals, top)
    assert len(capped) <= top + 1
    assert sum(v for _, v in capped) == sum(v for _, v in vals)
    names = [k for k, _ in capped]
    assert len(names) == len(set(names))
