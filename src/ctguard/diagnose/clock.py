"""Timestamps of every log shape we read, to Unix seconds.

Syslog (`Aug  6 15:23:48`) has no year and no zone, old Ceph logs (`2014-08-06 15:22:35.348175`) and
`dmesg -T` have no zone: `--year` and `--tz` fill those in (default: UTC, and the current year unless that
puts the line in the future). Parsing goes through a per-second cache, because a storm has thousands of lines
in the same second and `datetime` is the slow part.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ctguard.errors import BadInput

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}

# 2026-11-26T06:08:44.066+0000, 2014-08-06 15:22:35.348175, 2024-03-05T10:12:13,123456+00:00, ...Z
ISO_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?(Z|[+-]\d\d:?\d\d)?")
_OFFSET_RE = re.compile(r"^(?:UTC)?([+-])(\d\d):?(\d\d)$")


def parse_tz(spec: str | None) -> tzinfo:
    """`UTC` (default), `local`, an IANA name (`Europe/Berlin`) or a fixed offset (`+02:00`)."""
    if spec is None or spec.upper() in ("UTC", "Z", "GMT"):
        return UTC
    if spec.lower() == "local":
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else UTC
    m = _OFFSET_RE.match(spec)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        return timezone(sign * timedelta(hours=int(m.group(2)), minutes=int(m.group(3))))
    try:
        return ZoneInfo(spec)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise BadInput(f"unknown time zone {spec!r} (use UTC, local, +HH:MM or a name like Europe/Berlin)") from e


def _frac(digits: str | None) -> float:
    return float("0." + digits) if digits else 0.0


class Clock:
    """Converts the timestamp fields of one run; `year`/`tz` apply to timestamps that lack them."""

    def __init__(self, year: int | None = None, tz: tzinfo | None = None, now: float | None = None) -> None:
        self.year = year
        self.tz = tz if tz is not None else UTC
        self.now = time.time() if now is None else now
        self._now_year = datetime.fromtimestamp(self.now, UTC).year
        self._cache: dict[tuple[object, ...], float] = {}

    def _naive(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> float:
        key = (y, mo, d, h, mi, s)
        hit = self._cache.get(key)
        if hit is None:
            if self.tz is UTC:
                hit = float(calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)))
            else:
                hit = datetime(y, mo, d, h, mi, s, tzinfo=self.tz).timestamp()
            self._cache[key] = hit
        return hit

    def iso(self, m: re.Match[str]) -> float:
        """A match of ISO_RE; raises ValueError on an impossible date."""
        y, mo, d, h, mi, s, off = m.group(1, 2, 3, 4, 5, 6, 8)
        key = (y, mo, d, h, mi if off is None else "", off)  # an explicit offset: one entry per hour will do
        base = self._cache.get(key)
        if base is None:
            yi, moi, di, hi, m0 = int(y), int(mo), int(d), int(h), int(mi)
            if not (1 <= moi <= 12 and 1 <= di <= 31 and hi < 24 and m0 < 60):
                raise ValueError("bad date")
            if off is None:  # the zone's offset can change at any minute (DST): cache per minute
                base = self._naive(yi, moi, di, hi, m0, 0) - m0 * 60
            else:
                base = float(calendar.timegm((yi, moi, di, hi, 0, 0, 0, 0, 0)))
                if off != "Z":
                    sign = -1 if off[0] == "-" else 1
                    base -= sign * (int(off[1:3]) * 3600 + int(off[-2:]) * 60)
            self._cache[key] = base
        mii, si = int(mi), int(s)
        if mii > 59 or si > 60:
            raise ValueError("bad date")
        frac = m.group(7)
        ts = base + mii * 60 + si
        return ts + float("0." + frac) if frac else ts

    def syslog(self, mon: str, day: int, hms: str, frac: str | None = None) -> float:
        """`Aug  6 15:23:48`: the year is --year, else the current one unless that is in the future."""
        mo = MONTHS[mon]
        h, mi, s = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
        if self.year is not None:
            return self._naive(self.year, mo, day, h, mi, s) + _frac(frac)
        ts = self._naive(self._now_year, mo, day, h, mi, s)
        if ts > self.now + 2 * 86400:  # a December log read in January
            ts = self._naive(self._now_year - 1, mo, day, h, mi, s)
        return ts + _frac(frac)

    def ctime(self, mon: str, day: int, hms: str, year: int) -> float:
        """`dmesg -T`: `Thu Nov 26 06:05:51 2026` (local time of the host that printed it)."""
        return self._naive(year, MONTHS[mon], day, int(hms[0:2]), int(hms[3:5]), int(hms[6:8]))


def rfc3339(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
