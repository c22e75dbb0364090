"""Numbers and durations as a technician reads them in evidence and action sentences."""

from __future__ import annotations

import math

import numpy as np

_BIN_NAMES = {1.0: "seconds", 60.0: "minutes", 3600.0: "hours", 86400.0: "days"}


def num(x: float, digits: int = 3, *, sign: bool = False) -> str:
    """``x`` to ``digits`` significant digits, never in exponent form (1440, not 1.44e+03)."""
    if not math.isfinite(x):
        return "n/a"
    text = np.format_float_positional(
        float(x), precision=digits, unique=False, fractional=False, trim="-"
    )
    if sign and x >= 0:
        text = "+" + text
    return text


def qty(x: float, unit: str, digits: int = 3, *, sign: bool = False) -> str:
    return f"{num(x, digits, sign=sign)} {unit}"


def duration(seconds: float) -> str:
    s = abs(seconds)
    if not math.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{num(s, 3)} s"
    if s < 7200:
        return f"{num(s / 60, 3)} min"
    return f"{num(s / 3600, 3)} h"


def bins(count: int, interval_s: float, adjective: str = "") -> str:
    """``1440 paired minutes`` for 1-minute bins; ``96 paired 15 min bins`` otherwise."""
    words = f"{adjective} " if adjective else ""
    name = _BIN_NAMES.get(float(interval_s))
    if name is not None:
        return f"{count} {words}{name}"
    return f"{count} {words}{duration(interval_s)} bins"


def percent(fraction: float) -> str:
    return f"{num(100 * fraction, 3)}%"
