"""Interval averages with a completeness rule: the one time base of a comparison.

When a reference reports (or averages) over a coarser interval than its device, the two
are compared on the coarser one: the device's mean over each reference interval, kept only
when complete enough (the EPA's rule: more than 75 % of the expected values). The audit's
alignment (``align.on_time_base``) and the co-location evaluation
(``domain.colocation``) both average through ``interval_means``, so live and offline
verdicts on the same data stand on the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditd.core.series import FloatArray

IntArray = np.ndarray[Any, np.dtype[np.int64]]

COMPLETENESS = 0.75
"""The EPA's rule: an average counts only with more than this share of expected values."""


@dataclass(frozen=True, slots=True, eq=False)
class Averages:
    """The kept interval averages of one stream."""

    start: FloatArray
    """Start of each kept interval, epoch seconds, ascending."""
    mean: FloatArray
    count: IntArray
    """Distinct timestamps with a value that the average is made of."""
    width_s: float
    expected: float
    """Values an interval should hold at the recording interval."""
    seen: int = 0
    """Intervals with at least one value (kept or not)."""

    def __len__(self) -> int:
        return int(self.start.size)


def recording_interval(ts: FloatArray) -> float:
    """The most common spacing of the distinct timestamps (NaN with fewer than two).

    As the EPA toolkit does: the mode, not the mean, so gaps and bursts do not change how
    many values an interval is expected to hold. Ties go to the shorter spacing.

    Timestamps already in strictly increasing order (a window read from the store) are
    their own distinct values, and spacings of a few ms steps over a narrow range are
    counted by ``np.bincount``: the same answer as sorting both, without the sorts."""
    t = np.asarray(ts, dtype=np.float64)
    if not (t.size > 1 and bool(np.all(t[1:] > t[:-1]))):  # a NaN fails it: sorted
        t = np.unique(t)
    t = t[np.isfinite(t)]
    if t.size < 2:
        return math.nan
    # np.round(steps, 3) is rint(steps * 1000) / 1000: equal and ordered as the integers
    milli = np.diff(t)
    milli *= 1000.0
    np.rint(milli, out=milli)
    low, high = float(milli.min()), float(milli.max())
    if high - low <= MODE_BY_COUNT * milli.size:
        counts = np.bincount((milli - low).astype(np.intp))
        return (low + float(np.argmax(counts))) / 1000.0
    values, counts = np.unique(milli, return_counts=True)
    return float(values[int(np.argmax(counts))]) / 1000.0


MODE_BY_COUNT = 4
"""``recording_interval`` counts spacings with ``np.bincount`` while their range in ms is
at most this many times their number (a table no larger than a few copies of them)."""


def interval_means(
    ts: FloatArray,
    values: FloatArray,
    width_s: float,
    recording_s: float | None = None,
    *,
    origin_s: float = 0.0,
    threshold: float = COMPLETENESS,
) -> Averages:
    """Averages over [origin + k·width, origin + (k+1)·width) kept by the completeness rule.

    Values that are NaN are missing. A timestamp given more than once counts once, with
    its first finite value (the store keeps the first of a redelivered reading, so a file
    and its import give the same averages). ``recording_s`` defaults to the data's own
    recording interval; an interval is kept when it holds more than ``threshold`` x
    ``width_s / recording_s`` values.
    """
    t = np.asarray(ts, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(v)
    t, v = t[ok], v[ok]
    t, first = np.unique(t, return_index=True)
    v = v[first]
    rec = recording_interval(t) if recording_s is None else float(recording_s)
    expected = width_s / rec if rec > 0 else math.nan
    empty = np.empty(0)
    if t.size == 0 or not math.isfinite(expected):
        return Averages(empty, empty.copy(), np.empty(0, dtype=np.int64), width_s, expected)
    k = np.floor((t - origin_s) / width_s).astype(np.int64)
    bins, inverse, counts = np.unique(k, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=v) / counts
    keep = counts > threshold * expected
    starts = np.asarray(bins[keep] * width_s + origin_s, dtype=np.float64)
    return Averages(starts, np.asarray(means[keep], dtype=np.float64),
                    counts[keep].astype(np.int64), width_s, expected, int(bins.size))
