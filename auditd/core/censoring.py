"""Readings at a device's full scale say only "at least this much": censored data.

A hygrometer that reads 2 %RH high shows 100 %RH whenever the air is above 98 %RH; paired
with a reference that keeps reading 98.5, 99, 99.7, the device's line flattens at the top
and a healthy unit's gain comes out 0.75 (the difference runs from +3 at 88 %RH to 0 at
100). That is the range's edge, not the device's calibration. The comparison's figures
are therefore taken on the pairs the edge cannot have touched: the pairs where the device
sits at the edge are left out, and with them every pair whose reference is as far into
the edge's reach as the pinned ones were (a selection on the reference, the regressor,
which leaves the line through the rest unbiased; leaving out only the pinned pairs would
select on the device's own noise and bias it).

Pure: an ``Aligned`` and the profile's range in, the ``Aligned`` its figures are computed
on out. The detectors still read the whole window: pinned at full scale is what the
``clipping`` cause is about.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from auditd.core.align import Aligned
from auditd.model import SensorSpec

EDGE_REACH_RMSE = 0.25
"""A device value within this share of the rmse tolerance of a range end is at it: a
reading exactly at full scale, or the mean of a reference interval most of whose readings
were (on a coarser reference the device is averaged over each of its intervals)."""


def uncensored(aligned: Aligned, spec: SensorSpec) -> Aligned:
    """``aligned`` with the pairs in a range end's reach turned unpaired (the device's
    value NaN), or ``aligned`` itself when there are none.

    In reach: the device at the end (``EDGE_REACH_RMSE``) while the reference is within
    the bias tolerance of it too (the end explains the reading: fog at a hygrometer), and
    every pair whose reference is as deep in that reach as any pinned one was (from the
    lowest such reference up, at the top end: leaving out only the pinned pairs below a
    higher level would keep the device's low readings there and drop its high ones, a
    selection on its noise that flattens the line; a stray full-scale reading cannot drag
    the level far, since a pinned pair's reference is within the bias tolerance of the
    end). A device at full scale while the reference is farther
    off keeps its pairs: that reading is an error (``clipping``, and the offset behind
    it), and evidence. An end the device reads beyond is no full scale (an
    electrochemical cell reporting -5 ppb is not pinned at 0) and censors nothing; nor
    does an end the device is not pinned at (``pinned_at``).

    A window spent mostly at the end may keep too few pairs to judge: it then has
    insufficient data, which is what it is (a gain cannot be told at the end of a range)."""
    lo, hi = spec.range
    paired = aligned.paired
    if not bool(paired.any()):
        return aligned
    device = np.asarray(aligned.device)
    reference = np.asarray(aligned.reference)
    reach = EDGE_REACH_RMSE * spec.tolerance.rmse
    explained = spec.tolerance.bias + reach
    drop = np.zeros(device.shape, dtype=bool)
    dev_p = device[paired]
    if math.isfinite(hi) and pinned_at(dev_p, hi, reach, high=True) \
            and not bool(np.any(dev_p > hi + reach)):
        pinned = paired & (device >= hi - reach) & (reference >= hi - explained)
        drop |= _edge_zone(reference, paired, pinned, high=True)
    if math.isfinite(lo) and pinned_at(dev_p, lo, reach, high=False) \
            and not bool(np.any(dev_p < lo - reach)):
        pinned = paired & (device <= lo + reach) & (reference <= lo + explained)
        drop |= _edge_zone(reference, paired, pinned, high=False)
    if not bool(np.any(drop & paired)):
        return aligned
    return replace(aligned, device=np.where(drop, np.nan, device))


END_EXACT_RELATIVE = 1e-9
"""Bins this close (relative to the value's magnitude, at least 1) hold the same value: a
mean of readings all at full scale need not be bit-equal to it."""

PINNED_MIN_BINS = 3
"""Bins a device's extreme value must fill before it is a ceiling (or floor) it is pinned
at, not one low reading."""


def pinned_at(device: np.ndarray, end: float, reach: float, *, high: bool) -> bool:
    """Is the device pinned at this range end? Saturation holds one value at the end,
    whatever the air does: the extreme the device reported, within ``reach`` of the end,
    repeated in at least ``PINNED_MIN_BINS`` bins (a hygrometer's 100.0, or the 99.9 an
    EPA unit clamps at; a dust sensor clamped to 0.0). A device whose readings only come
    close to the end is measuring there: clean air read as 0.9-5 ug/m3 on a 0-1000 range
    varies from hour to hour, and censoring it as pinned took 266 of a month's 706 hours
    (every hour the monitor read below 6.75) out of the EPA units' PM2.5."""
    if device.size == 0:
        return False
    extreme = float(device.max() if high else device.min())
    if abs(extreme - end) > reach:
        return False
    same = np.abs(device - extreme) <= END_EXACT_RELATIVE * max(abs(extreme), 1.0)
    return int(np.count_nonzero(same)) >= PINNED_MIN_BINS


def _edge_zone(reference: np.ndarray, paired: np.ndarray, pinned: np.ndarray, *,
               high: bool) -> np.ndarray:
    """The pinned pairs and every pair whose reference is at least as deep in the edge's
    reach as any pinned one's."""
    if not bool(pinned.any()):
        return pinned
    ref_pinned = reference[pinned]
    if high:
        level = float(ref_pinned.min())
        return pinned | (paired & (reference >= level))
    level = float(ref_pinned.max())
    return pinned | (paired & (reference <= level))
