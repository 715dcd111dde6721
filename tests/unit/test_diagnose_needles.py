"""The hashed multi-needle search finds exactly what one `bytes.find` pass per needle finds."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctguard.diagnose import needles, scan

SYSLOG = needles.Search((*scan.KERNEL_NEEDLES, *scan.DAEMON_NEEDLES, *scan.MON_NEEDLES))


def by_find(buf: bytes, end: int, nds: tuple[bytes, ...]) -> set[tuple[int, bytes]]:
    out = set()
    for nd in nds:
        i = buf.find(nd, 0, end)
        while i != -1:
            out.add((i, nd))
            i = buf.find(nd, i + 1, end)
    return out


def lines_with(buf: bytes, end: int, found: list[tuple[int, bytes]] | set[tuple[int, bytes]]) -> set[int]:
    return {buf.rfind(b"\n", 0, i) + 1 for i, _ in found}


def test_every_needle_at_every_alignment_and_at_both_ends() -> None:
    assert SYSLOG.hashed and SYSLOG.short == (b" boot",)
    hashed = [n for n in SYSLOG.needles if len(n) >= needles.WINDOW]
    for nd in hashed:
        for lead in range(9):
            for trail in range(5):
                buf = b"x" * lead + nd + b"y" * trail
                got = set(SYSLOG.find(buf, len(buf)))
                assert (lead, nd) in got, (nd, lead, trail)
                assert got == by_find(buf, len(buf), hashed)
                cut = len(buf) - trail - 1  # the needle's last byte outside buf[:end]: not found
                assert (lead, nd) not in SYSLOG.find(buf, cut)


def test_planted_needles_in_log_text_are_all_found() -> None:
    rnd = random.Random(8)
    ordinary = [b"Mar  1 10:00:00 h ceph-osd[1]: 7f 1 osd.3 pg_epoch: 12 pg[2.1( v 1'2 ] active+clean",
                b"Mar  1 10:00:00 h sshd[9]: Accepted publickey for root from 198.18.0.9 port 4 ssh2",
                b"Mar  1 10:00:00 h kernel: [1.2] XFS (sdb1): Ending clean mount"]
    parts = []
    for _ in range(20000):
        x = rnd.random()
        if x < 0.02:
            parts.append(b"pre " + rnd.choice(SYSLOG.needles) + b" post")
        else:
            parts.append(rnd.choice(ordinary))
    buf = b"\n".join(parts) + b"\n"
    got = SYSLOG.find(buf, len(buf))
    want = by_find(buf, len(buf), SYSLOG.needles)
    hashed = {x for x in want if len(x[1]) >= needles.WINDOW}
    assert hashed <= set(got) <= want  # every hashed occurrence; the short needle at least once a line
    assert lines_with(buf, len(buf), got) == lines_with(buf, len(buf), want)


def test_without_numpy_the_find_loop_gives_the_same_lines() -> None:
    plain = needles.Search(SYSLOG.needles, use_numpy=False)
    assert not plain.hashed
    buf = b"a, dropping packet b lossy channel\nslow requests\n  boot x boot\n" * 3
    assert lines_with(buf, len(buf), plain.find(buf, len(buf))) == lines_with(buf, len(buf), SYSLOG.find(buf, len(buf)))


def test_the_window_avoids_grams_common_in_the_sample() -> None:
    nd = b"lossy channel"
    common = needles.Search((nd,), b"lossy lossy lossy lossy lossy lossy " * 50)
    offsets = sorted(off for pairs in common.keys.values() for _, off in pairs)
    assert offsets == [3, 4, 5, 6]  # "sy c" .. "chan": "loss", "ossy", "ssy " are everywhere in the sample


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(SYSLOG.needles),
                          st.sampled_from([b"slow ", b"lossy chann", b", dropping", b"\n"])), max_size=40),
       st.integers(0, 8))
def test_fuzzed_buffers_match_find(parts: list[bytes], trim: int) -> None:
    buf = b"".join(parts)
    end = max(0, len(buf) - trim)
    got = SYSLOG.find(buf, end)
    want = by_find(buf, end, SYSLOG.needles)
    assert {x for x in want if len(x[1]) >= needles.WINDOW} <= set(got) <= want
    assert lines_with(buf, end, got) == lines_with(buf, end, want)
