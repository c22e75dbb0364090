"""Times in exports: a column of text in one format and zone -> epoch seconds.

Times are never silently taken as UTC: the zone is a fixed offset or an IANA zone, from the
export's preamble or its mapping. Most formats are parsed for a whole column at once
(``TimeParser.many``); see the class for why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from auditd.errors import ExportError

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]

# --------------------------------------------------------------------------- time


_FAST_DIRECTIVES = {
    "%Y": r"(?P<Y>\d{4})", "%m": r"(?P<m>\d{1,2})", "%d": r"(?P<d>\d{1,2})",
    "%H": r"(?P<H>\d{1,2})", "%M": r"(?P<M>\d{1,2})", "%S": r"(?P<S>\d{1,2}(?:\.\d+)?)",
}


def parse_offset(text: str, key: str) -> int:
    """``UTC`` or ``+HH:MM``/``-HH:MM`` as seconds east of UTC (a fixed offset only)."""
    zone = zone_of(text, "", key)
    if isinstance(zone, ZoneInfo):
        raise ExportError("", key, f"{text!r}: give a fixed offset such as -05:00 (local "
                          "standard time), not a zone with daylight saving")
    return zone


def zone_of(zone: str, file: str, key: str) -> int | ZoneInfo:
    """A zone as a fixed offset in seconds east of UTC, or an IANA zone."""
    text = zone.strip()
    if text.upper() in ("UTC", "Z", "GMT"):
        return 0
    m = re.fullmatch(r"(?:UTC)?([+-])(\d{2}):?(\d{2})", text)
    if m:
        sign = 1 if m.group(1) == "+" else -1
        return sign * (int(m.group(2)) * 3600 + int(m.group(3)) * 60)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExportError(file, key, f"{zone!r} is not a time zone: use UTC, +HH:MM or an "
                          "IANA name such as America/New_York") from None


def _days_from_civil(y: IntArray, m: IntArray, d: IntArray) -> IntArray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return np.asarray(era * 146097 + doe - 719468, dtype=np.int64)


_MONTH_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


class TimeParser:
    """Time text in one format and zone -> epoch seconds.

    strptime costs about 10 us a call, as much as all the rest of a row. Formats made of
    %Y %m %d %H %M %S and literal text are therefore matched by one regular expression
    over the whole column at once and converted with numpy (``many``); other formats, and
    IANA zones (whose offset changes with the date), go row by row. In an IANA zone a local
    time that occurs twice (the autumn hour) is taken at its first occurrence.
    """

    def __init__(self, fmt: str, zone: int | ZoneInfo) -> None:
        self.fmt = fmt
        self.zone = zone
        pieces = re.split(r"(%.)", fmt)
        fast = all(p in _FAST_DIRECTIVES or not p.startswith("%") for p in pieces)
        self._groups = [p[1] for p in pieces if p in _FAST_DIRECTIVES]
        self._regex = (re.compile("".join(_FAST_DIRECTIVES.get(p) or re.escape(p)
                                          for p in pieces))
                       if fast and "%Y" in pieces else None)

    def one(self, text: str) -> float:
        """Epoch seconds of one time; ``ValueError`` saying what is wrong with it."""
        if self._regex is None:
            parsed = datetime.strptime(text.strip(), self.fmt)
            if parsed.tzinfo is not None:
                return parsed.timestamp()
            if isinstance(self.zone, ZoneInfo):
                return parsed.replace(tzinfo=self.zone).timestamp()
            return (parsed - datetime(1970, 1, 1)).total_seconds() - self.zone
        m = self._regex.fullmatch(text.strip())
        if m is None:
            raise ValueError(f"does not match {self.fmt!r}")
        g = m.groupdict()
        second = float(g.get("S") or 0.0)
        whole = int(second)
        local = datetime(int(g["Y"]), int(g.get("m") or 1), int(g.get("d") or 1),
                         int(g.get("H") or 0), int(g.get("M") or 0), whole)
        if isinstance(self.zone, ZoneInfo):
            return local.replace(tzinfo=self.zone).timestamp() + (second - whole)
        return (local - datetime(1970, 1, 1)).total_seconds() + second - whole - self.zone

    def many(self, texts: Sequence[str]) -> FloatArray:
        """Epoch seconds of each text, NaN where it is not a valid time (``one`` says why)."""
        n = len(texts)
        if self._regex is None or isinstance(self.zone, ZoneInfo) or n == 0:
            return np.array([self._or_nan(t) for t in texts], dtype=np.float64)
        joined = "\n".join(t.strip() for t in texts)
        line = re.compile(f"^{self._regex.pattern}$", re.MULTILINE)
        found = line.findall(joined)
        if len(found) != n or joined.count("\n") != n - 1:
            return np.array([self._or_nan(t) for t in texts], dtype=np.float64)
        if len(self._groups) == 1:
            found = [(f,) for f in found]
        col = dict(zip(self._groups, zip(*found, strict=True), strict=True))

        def ints(key: str, default: int) -> IntArray:
            return (np.fromiter(map(int, col[key]), np.int64, n) if key in col
                    else np.full(n, default, dtype=np.int64))

        y, mo, d = ints("Y", 1970), ints("m", 1), ints("d", 1)
        h, mi = ints("H", 0), ints("M", 0)
        s = np.fromiter(map(float, col["S"]), np.float64, n) if "S" in col else np.zeros(n)
        leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
        month_ok = (mo >= 1) & (mo <= 12)
        limit = _MONTH_DAYS[np.clip(mo, 0, 12)] - ((mo == 2) & ~leap)
        ok = month_ok & (d >= 1) & (d <= limit) & (h <= 23) & (mi <= 59) & (s < 61)
        t = (_days_from_civil(y, np.clip(mo, 1, 12), d) * 86400.0 + h * 3600.0 + mi * 60.0
             + s - self.zone)
        return np.where(ok, t, np.nan)

    def _or_nan(self, text: str) -> float:
        try:
            return self.one(text)
        except (ValueError, OverflowError):
            return math.nan

    def why(self, text: str) -> str:
        """Why ``text`` is not a valid time."""
        try:
            self.one(text)
        except (ValueError, OverflowError) as exc:
            return str(exc)
        return "out of range"
