"""Is the device's error really a wrong unit?

A device sending degF where degC is expected looks like a gain of 1.8 with an offset of
32; one sending Pa instead of hPa, like a gain of 100. Calling that "gain drift" would send
a technician to recalibrate a healthy sensor. The candidates are data passed in by the
caller: the audit derives them from pint (``auditd.domain.audit_plan.unit_confusions``), so
every unit pint knows is covered without a table here. ``default_unit_candidates`` is a small
hand-written fallback for callers that pass none (``evaluate_stream(units=None)``, tests,
``colocate``); it also tries bare decimal factors, which pint has no name for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

UnitCandidate = tuple[str, float, float]
"""(name, scale, offset): the device would report ``scale * true + offset`` if it used the
unit ``name`` while the profile expects the canonical one."""

MIN_EXPLAINED = 0.9
"""A candidate must remove at least this share of the deviation to be called a unit error."""


@dataclass(frozen=True, slots=True)
class UnitMatch:
    name: str
    scale: float
    offset: float
    remaining: float
    """Worst deviation left over the reference's range once the candidate is undone
    (canonical unit)."""
    explained: float
    """Share of the worst deviation the candidate removes."""


def line_deviation(slope: float, intercept: float, lo: float, hi: float) -> float:
    """Largest |slope * x + intercept| over [lo, hi]: a line's extreme is at an end."""
    return max(abs(slope * lo + intercept), abs(slope * hi + intercept))


def unit_candidates(
    gain: float,
    offset: float,
    ref_range: tuple[float, float],
    candidates: Iterable[UnitCandidate],
    tolerance: float,
) -> tuple[UnitMatch, ...]:
    """Candidates that explain the fitted line ``device = gain * ref + offset``, best first.

    The comparison is made over the range the reference actually covered, because an
    intercept extrapolated far from the data says little; a match must leave at most
    ``tolerance`` of deviation there and remove ``MIN_EXPLAINED`` of it.
    """
    lo, hi = ref_range
    original = line_deviation(gain - 1.0, offset, lo, hi)
    if not original > 0.0:
        return ()
    matches = []
    for name, scale, shift in candidates:
        if scale == 0.0:
            continue
        remaining = line_deviation(gain - scale, offset - shift, lo, hi) / abs(scale)
        explained = 1.0 - remaining / original
        if remaining <= tolerance and explained >= MIN_EXPLAINED:
            matches.append(UnitMatch(name, scale, shift, remaining, explained))
    return tuple(sorted(matches, key=lambda m: m.remaining))


_NAMED: Mapping[str, tuple[UnitCandidate, ...]] = {
    "degC": (("degF", 1.8, 32.0), ("K", 1.0, 273.15)),
    "K": (("degC", 1.0, -273.15), ("degF", 1.8, -459.67)),
    "degF": (("degC", 5 / 9, -160 / 9), ("K", 5 / 9, 255.372222)),
    "hPa": (("Pa", 100.0, 0.0), ("kPa", 0.1, 0.0), ("mmHg", 0.750062, 0.0),
            ("inHg", 0.0295300, 0.0)),
    "Pa": (("hPa", 0.01, 0.0), ("kPa", 0.001, 0.0)),
    "kPa": (("hPa", 10.0, 0.0), ("Pa", 1000.0, 0.0)),
    "percent": (("fraction", 0.01, 0.0), ("permille", 10.0, 0.0)),
    "ppm": (("ppb", 1000.0, 0.0), ("percent", 1e-4, 0.0)),
    "ppb": (("ppm", 0.001, 0.0), ("ppt", 1000.0, 0.0)),
    "V": (("mV", 1000.0, 0.0),),
    "mV": (("V", 0.001, 0.0),),
    "ug/m^3": (("mg/m^3", 0.001, 0.0),),
}

_DECIMAL: tuple[UnitCandidate, ...] = tuple(
    (f"x{scale:g} (a decimal prefix)", scale, 0.0)
    for scale in (10.0, 100.0, 1000.0, 1e6, 0.1, 0.01, 0.001, 1e-6)
)


def default_unit_candidates(unit: str) -> tuple[UnitCandidate, ...]:
    """Common confusions for ``unit`` plus bare decimal-prefix factors, named ones first.

    A stand-in until the caller passes pint-derived candidates."""
    named = _NAMED.get(unit, ())
    taken = {(scale, shift) for _, scale, shift in named}
    return named + tuple(c for c in _DECIMAL if (c[1], c[2]) not in taken)


ON_GRID = 1e-3
"""A reading within this share of a step of a whole number of steps lies on the grid."""


def reading_step(value: float, readings: np.ndarray, max_step: float) -> float:
    """The step the readings are reported at, as they show it: the smallest gap between
    their distinct values when every reading lies on that grid through ``value``; for
    readings that are all ``value``, the coarsest step no larger than ``max_step`` of which
    ``value`` is a whole multiple (``max_step`` for 0, the zero of every unit that only
    scales: a rounded tiny number is 0 at any resolution). 0.0 when the readings lie on
    no grid (means over a coarser reference's intervals): their rounding cannot be told."""
    distinct = np.unique(readings[np.isfinite(readings)])
    if distinct.size <= 1:
        if value == 0.0:
            return max_step
        return abs(value) / max(1, math.ceil(abs(value) / max_step))
    step = float(np.min(np.diff(distinct)))
    units = (distinct - value) / step
    if not bool(np.all(np.abs(units - np.rint(units)) <= ON_GRID)):
        return 0.0
    return step


def rounded_fit(readings: np.ndarray, reference: np.ndarray, scale: float, offset: float,
                step: float, slack: np.ndarray | float) -> np.ndarray:
    """Per pair: the reading is the reference converted by (``scale``, ``offset``) and
    rounded at ``step``, give or take ``slack`` (canonical unit, converted here: a device
    can be in the wrong unit and a little off as well)."""
    converted = scale * reference + offset
    return np.asarray(np.abs(readings - converted) < 0.5 * step + abs(scale) * slack)
