"""Finding a few fixed strings ("needles") in a big buffer at once: the hot loop of `diagnose`.

One `bytes.find` pass per needle costs about what `grep -c` costs for the whole job (0.45-0.6 ns/byte here), and
a syslog needs 7 needles. `Search` instead makes one pass for all of them with numpy (which matplotlib brings):

* The buffer is read as native 32-bit words at offsets 0, 4, 8, ... Any occurrence of a needle of 7 bytes or
  more puts one of four known 4-grams of the needle on such a word: for a 7-byte window of the needle starting
  at `a`, the aligned word lies at needle offset a, a+1, a+2 or a+3. These 4-grams ("keys") go into a 64 Ki
  entry table by a multiplicative hash; the pass is multiply, shift, table lookup, `flatnonzero` on 64 Ki-word
  blocks that stay in cache (0.4 ns/byte measured, whatever the number of needles).
* The few words that hit the table are checked exactly against the keys (a dict), then each survivor against
  its needle at the one position the key implies (`startswith`). Nothing is missed and nothing is invented:
  `test_diagnose_needles` holds this equal to `bytes.find` on planted and random buffers.
* Which 7-byte window of a needle is used is picked from a sample of the input (its first 64 KiB): the one whose
  4-grams are rarest there, so ordinary text rarely reaches the exact checks.

Needles shorter than 7 bytes, and hosts without numpy, get one `bytes.find` pass each.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

WINDOW = 7  # bytes of a needle that hold one aligned 4-byte word wherever the needle starts
BLOCK_WORDS = 1 << 16  # 256 KiB of input per numpy step: in cache for the four operations
_MULT = 0x9E3779B1  # Knuth's multiplicative hash constant (2^32 / golden ratio)
_TABLE_BITS = 16

_NP: list[Any] = []


def numpy_or_none() -> Any:
    """numpy, imported on first use (0.2 s); None where it is absent."""
    if not _NP:
        try:
            import numpy

            _NP.append(numpy)
        except ImportError:  # pragma: no cover - matplotlib depends on numpy; a bare install may lack it
            _NP.append(None)
    return _NP[0]


def _gram_counts(sample: bytes, np: Any) -> dict[int, int]:
    """How often each 4-gram (as a native word) occurs in the sample, at any offset."""
    if len(sample) < 4:
        return {}
    grams = np.concatenate([np.frombuffer(sample[k:k + (len(sample) - k) // 4 * 4], dtype=np.uint32)
                            for k in range(4)])
    values, counts = np.unique(grams, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def _window(needle: bytes, counts: dict[int, int]) -> int:
    """The start of the needle's 7-byte window whose four 4-grams are rarest in the sample (first one on ties)."""
    order = sys.byteorder
    best, best_cost = 0, -1
    for a in range(len(needle) - WINDOW + 1):
        cost = sum(counts.get(int.from_bytes(needle[a + j:a + j + 4], order), 0) for j in range(4))
        if best_cost < 0 or cost < best_cost:
            best, best_cost = a, cost
    return best


class Search:
    """All occurrences of several needles in buf[:end], for buffers whose offset 0 is where the data begins.

    Picklable (plain bytes, ints and numpy arrays), so a worker process gets it as it is."""

    def __init__(self, needles: Iterable[bytes], sample: bytes = b"", *, use_numpy: bool = True) -> None:
        self.needles: tuple[bytes, ...] = tuple(dict.fromkeys(n for n in needles if n))
        np: Any = numpy_or_none() if use_numpy else None
        hashed = [n for n in self.needles if len(n) >= WINDOW] if np is not None else []
        self.short: tuple[bytes, ...] = tuple(n for n in self.needles if n not in hashed)
        # key (aligned 4-gram as a native word) -> [(needle, offset of the key in the needle)]
        self.keys: dict[int, list[tuple[bytes, int]]] = {}
        self._np = bool(hashed)
        self.table: Any = None
        if not hashed:
            return
        counts = _gram_counts(sample[:64 << 10], np)
        for nd in hashed:
            a = _window(nd, counts)
            for j in range(4):
                key = int.from_bytes(nd[a + j:a + j + 4], sys.byteorder)
                self.keys.setdefault(key, []).append((nd, a + j))
        keys = np.array(sorted(self.keys), dtype=np.uint32)
        self.table = np.zeros(1 << _TABLE_BITS, dtype=bool)
        self.table[(keys * np.uint32(_MULT)) >> np.uint32(32 - _TABLE_BITS)] = True

    @property
    def hashed(self) -> bool:
        return self._np

    def find(self, buf: bytes | bytearray, end: int) -> list[tuple[int, bytes]]:
        """(offset, needle) of occurrences in buf[:end]: every one for the hashed needles, at least the first in
        each line for the others (a line with a needle is all the caller needs)."""
        out: list[tuple[int, bytes]] = []
        find = buf.find
        for nd in self.short:
            i = find(nd, 0, end)
            while i != -1:
                out.append((i, nd))
                e = find(b"\n", i, end)
                i = find(nd, e, end) if e != -1 else -1
        if self._np:
            self._find_hashed(buf, end, out)
        return out

    def _find_hashed(self, buf: bytes | bytearray, end: int, out: list[tuple[int, bytes]]) -> None:
        np = numpy_or_none()
        nwords = end >> 2
        if not nwords:
            return
        words = np.frombuffer(memoryview(buf)[:nwords * 4], dtype=np.uint32)
        mult, shift = np.uint32(_MULT), np.uint32(32 - _TABLE_BITS)
        n = min(BLOCK_WORDS, nwords)
        hashes = np.empty(n, dtype=np.uint32)
        hits = np.empty(n, dtype=bool)
        startswith, keys, table = buf.startswith, self.keys, self.table
        for lo in range(0, nwords, BLOCK_WORDS):
            w = words[lo:lo + BLOCK_WORDS]
            h, m = hashes[:len(w)], hits[:len(w)]
            np.multiply(w, mult, out=h)
            np.right_shift(h, shift, out=h)
            np.take(table, h, out=m, mode="clip")  # (in range by construction; no checks)
            if not m.any():
                continue
            idx = np.flatnonzero(m)
            # a few dozen hits per block: a dict lookup each is cheaper than numpy's isin
            for k, word in zip((idx + lo).tolist(), w[idx].tolist(), strict=True):
                for nd, off in keys.get(word, ()):
                    p = 4 * k - off
                    if p >= 0 and p + len(nd) <= end and startswith(nd, p):
                        out.append((p, nd))
