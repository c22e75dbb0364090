"""Put a device stream and its reference on one time base.

Devices and reference instruments report at their own rates, with jitter, gaps, repeats
and out-of-order flushes; every later step (fit, lag, diagnosis) wants two arrays whose
i-th elements describe the same stretch of time. Binning by the profile's reporting
interval gives that, in O(n) with ``np.bincount``, without sorting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from auditd.core.averaging import interval_means, recording_interval
from auditd.core.series import BoolArray, FloatArray, Series, freeze

PHASE_BUCKETS = 24
"""Resolution of the edge-phase search: 1/24 of an interval (2.5 s at 1 minute)."""

PHASE_PREFERENCE = 0.05
"""Keep the plain grid (edges at ``start + k*interval``) unless another phase keeps at
least this fraction more of a stream's readings away from the bin edges."""


@dataclass(frozen=True, slots=True, eq=False)
class Aligned:
    """Both streams on a common grid of bins; NaN where a stream has no value in a bin."""

    t: FloatArray
    """Centre time of each bin (epoch seconds)."""
    device: FloatArray
    reference: FloatArray
    interval_s: float
    start: float
    end: float
    edge_phase_s: float
    """Where bin edges sit relative to ``start`` (see ``choose_edge_phase``)."""
    device_coverage: float
    """Bins with a device value / expected bins."""
    reference_coverage: float
    device_nulls: int
    """Device readings in the window that said ``null`` (NaN)."""
    reference_nulls: int
    fine_device: Series | None = None
    """The device's own readings in the window (time-ordered when the store's were), kept
    where the comparison is on a coarser time base than the device's: the readings inside
    each interval say how persistent the device's noise is at its own cadence, which a
    day of 24 hourly means can hardly tell (``fit.fine_gain_samples``). None on the
    device's own base, and after any change that moves the device's values between bins
    (``shift_device``, ``coarsen``)."""
    _paired: BoolArray | None = field(default=None, init=False, repr=False, compare=False)
    """``paired``, made on first use (a copy made by ``dataclasses.replace`` starts
    without it: its streams may differ)."""

    @property
    def expected_bins(self) -> int:
        return int(self.t.size)

    @property
    def paired(self) -> BoolArray:
        """Bins where both streams have a value: the only ones a comparison may use.
        Read-only, and made once: the audit of a window asks for it a dozen times, each
        two passes over both streams."""
        if self._paired is None:
            keep = np.isfinite(self.device)
            keep &= np.isfinite(self.reference)
            keep.setflags(write=False)
            object.__setattr__(self, "_paired", keep)
            return keep
        return self._paired

    @property
    def n_paired(self) -> int:
        return int(np.count_nonzero(self.paired))


def bin_count(interval_s: float, start: float, end: float) -> int:
    """Expected bins in [start, end); a hair of slack so 86400/60 is 1440, not 1441."""
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise ValueError(f"interval_s must be a positive number, got {interval_s!r}")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError("start and end must be finite epoch seconds")
    if end <= start:
        return 0
    return max(1, math.ceil((end - start) / interval_s - 1e-9))


def _phase_weight(b: int) -> FloatArray:
    """How badly an edge at bucket e (row) cuts readings at bucket p (column): 1 at the
    edge, falling linearly to 0 a quarter of an interval away (circular)."""
    centres = np.arange(b) + 0.5
    edges = np.arange(b)[:, None]
    dist = np.abs((centres[None, :] - edges + b / 2) % b - b / 2)
    weight = np.clip(1.0 - dist / (b / 4), 0.0, None)
    weight.setflags(write=False)
    return weight


_PHASE_WEIGHT = _phase_weight(PHASE_BUCKETS)
"""Made once: the same for every window."""


def choose_edge_phase(streams: Sequence[FloatArray], interval_s: float, start: float) -> float:
    """Offset of the bin edges from ``start`` that keeps readings away from the edges.

    Devices report on a grid with jitter (10:00:00.3, 10:00:59.8, ...). Edges placed on that
    grid would split the readings between neighbouring bins at random, halving coverage
    and doubling up bins; the edges must sit between the reporting instants of *both*
    streams. Each stream's phase histogram counts with equal weight, so a 1 Hz reference
    (uniform phase) does not outvote a 1-minute device. Returns seconds in [-i/2, i/2):
    with readings at phase p the best edge is p - i/2, which then puts the reading at
    ``start + p + k*i`` in bin k.
    """
    b = PHASE_BUCKETS
    weight = _PHASE_WEIGHT
    cost = np.zeros(b)
    for ts in streams:
        if ts.size == 0:
            continue
        phase = ts - start
        phase /= interval_s
        phase -= np.floor(phase)  # the fraction, as % 1.0 gives it, at a thirtieth of the cost
        phase *= b
        bucket = phase.astype(np.intp)
        del phase
        np.minimum(bucket, b - 1, out=bucket)
        cost += weight @ (np.bincount(bucket, minlength=b) / ts.size)
    best = int(np.argmin(cost))
    if cost[0] <= cost[best] + PHASE_PREFERENCE:
        best = 0
    frac = best / b
    return (frac - 1.0 if frac >= 0.5 else frac) * interval_s


def bin_means(
    ts: FloatArray, values: FloatArray, index: np.ndarray, n_bins: int
) -> FloatArray:
    """Mean of the finite values per bin (NaN for none), duplicates and order irrelevant."""
    ok = np.isfinite(values)
    if not ok.all():
        index, values = index[ok], values[ok]
    if index.size and bool(np.all(index[1:] > index[:-1])):
        # a time-ordered stream with at most one reading per bin (the usual case): each
        # bin's mean is its one value, placed without summing and counting
        out = np.full(n_bins, np.nan)
        out[index] = values
        return out
    counts = np.bincount(index, minlength=n_bins)
    # float even for no values at all (bincount then returns integers)
    sums = np.bincount(index, weights=values, minlength=n_bins).astype(np.float64, copy=False)
    with np.errstate(invalid="ignore"):
        np.divide(sums, counts, out=sums)  # 0 / 0: NaN for the bins without a value
    return sums


def _in_window(series: Series, start: float, end: float) -> tuple[FloatArray, FloatArray]:
    keep = np.isfinite(series.ts)
    keep &= series.ts >= start
    keep &= series.ts < end
    if not keep.size:
        return series.ts, series.values
    first = int(np.argmax(keep))
    last = keep.size - int(np.argmax(keep[::-1]))
    if keep[first] and np.count_nonzero(keep) == last - first:
        # one run of readings (a time-ordered stream): views, not copies
        return series.ts[first:last], series.values[first:last]
    return series.ts[keep], series.values[keep]


def _bin_index(
    ts: FloatArray, start: float, interval_s: float, phase_s: float, n_bins: int
) -> np.ndarray:
    """Bin of each timestamp; readings in the partial bins at either end of the window join
    the nearest whole bin rather than being dropped."""
    raw = ts - start
    raw -= phase_s
    raw /= interval_s
    np.floor(raw, out=raw)
    np.clip(raw, 0, max(n_bins - 1, 0), out=raw)
    return raw.astype(np.intp)


def align(
    device: Series,
    reference: Series,
    interval_s: float,
    start: float,
    end: float,
    *,
    edge_phase_s: float | None = None,
) -> Aligned:
    """Bin both streams over [start, end) by ``interval_s``, each bin the mean of a stream's
    finite values.

    ``edge_phase_s`` fixes where the bin edges sit (seconds after ``start``, in
    [-interval/2, interval/2)); ``None`` picks it from the data (``choose_edge_phase``).
    """
    n_bins = bin_count(interval_s, start, end)
    dev_ts, dev_v = _in_window(device, start, end)
    ref_ts, ref_v = _in_window(reference, start, end)
    if edge_phase_s is None:
        edge_phase_s = choose_edge_phase([dev_ts, ref_ts], interval_s, start)
    elif not -interval_s / 2 <= edge_phase_s < interval_s / 2:
        raise ValueError(f"edge_phase_s must lie in [-interval/2, interval/2), got {edge_phase_s}")
    dev = bin_means(dev_ts, dev_v, _bin_index(dev_ts, start, interval_s, edge_phase_s, n_bins),
                    n_bins)
    ref = bin_means(ref_ts, ref_v, _bin_index(ref_ts, start, interval_s, edge_phase_s, n_bins),
                    n_bins)
    t = np.arange(n_bins, dtype=np.float64)
    t += 0.5
    t *= interval_s
    t += start + edge_phase_s
    return Aligned(
        t=freeze(t),
        device=freeze(dev),
        reference=freeze(ref),
        interval_s=float(interval_s),
        start=float(start),
        end=float(end),
        edge_phase_s=float(edge_phase_s),
        device_coverage=_coverage(dev),
        reference_coverage=_coverage(ref),
        device_nulls=int(np.count_nonzero(~np.isfinite(dev_v))),
        reference_nulls=int(np.count_nonzero(~np.isfinite(ref_v))),
    )


COARSER = 1.5
"""A reference interval at least this many device intervals long is a coarser time base:
the device is compared by its means over the reference's intervals."""


def time_base(device_interval_s: float, reference: Series, start: float, end: float,
              reference_interval_s: float | None = None) -> float:
    """The interval a comparison is made at: the device's, or the reference's where that is
    coarser (declared by its profile, else its most common spacing in the window)."""
    coarse = reference_interval_s
    if coarse is None:
        ts, _ = _in_window(reference, start, end)
        coarse = recording_interval(ts)
    if not (math.isfinite(coarse) and coarse >= COARSER * device_interval_s):
        return float(device_interval_s)
    return float(coarse)


def on_time_base(
    device: Series,
    reference: Series,
    device_interval_s: float,
    start: float,
    end: float,
    *,
    reference_interval_s: float | None = None,
) -> Aligned:
    """Both streams on one time base (``time_base``): ``align`` at the device's interval,
    or, against a coarser reference, each stream's means over the reference's intervals,
    kept by the completeness rule (``averaging.interval_means``, the EPA's 75 %, intervals
    at whole multiples of the width from the epoch: exactly as ``colocate`` averages).
    One device minute is never paired with an hourly reference value."""
    base = time_base(device_interval_s, reference, start, end, reference_interval_s)
    if base == device_interval_s:
        return align(device, reference, device_interval_s, start, end)
    dev_ts, dev_v = _in_window(device, start, end)
    _, ref_v = _in_window(reference, start, end)
    aligned = align(interval_series(device, base, device_interval_s, start, end),
                    interval_series(reference, base, base, start, end), base, start, end)
    return replace(aligned, device_nulls=int(np.count_nonzero(~np.isfinite(dev_v))),
                   reference_nulls=int(np.count_nonzero(~np.isfinite(ref_v))),
                   fine_device=Series(dev_ts, dev_v))


def interval_series(series: Series, width_s: float, declared_s: float, start: float,
                    end: float) -> Series:
    """``series``'s kept means over [k·width, (k+1)·width) within [start, end)
    (``averaging.interval_means``, the completeness rule against its recording interval, or
    ``declared_s`` when the window holds too few readings to tell), each stamped at its
    interval's centre."""
    ts, values = _in_window(series, start, end)
    means = interval_means(ts, values, width_s, _recording(ts, declared_s))
    return Series(means.start + width_s / 2.0, means.mean)


def _recording(ts: FloatArray, declared: float) -> float:
    """A stream's recording interval as ``colocate`` takes it (the data's most common
    spacing), or the declared one where the window holds too few readings to tell."""
    own = recording_interval(ts)
    return own if math.isfinite(own) else declared


def _coverage(binned: FloatArray) -> float:
    return float(np.count_nonzero(np.isfinite(binned)) / binned.size) if binned.size else 0.0


def shift_device(aligned: Aligned, bins: int) -> Aligned:
    """Move the device's values ``bins`` bins earlier (a device late by ``bins`` lines up).

    Coverage figures keep describing the data as received; only the pairing changes, which
    is all a diagnosis after a clock correction needs.
    """
    if bins == 0:
        return aligned
    moved = np.full_like(aligned.device, np.nan)
    if abs(bins) < moved.size:
        if bins > 0:
            moved[:-bins] = aligned.device[bins:]
        else:
            moved[-bins:] = aligned.device[:bins]
    return replace(aligned, device=freeze(moved), fine_device=None)


def since(aligned: Aligned, t0: float) -> Aligned:
    """Only the pairs from ``t0`` on: what a fault that began at ``t0`` looks like."""
    moved = np.where(np.asarray(aligned.t) >= t0, aligned.device, np.nan)
    return replace(aligned, device=freeze(moved))


def latest(aligned: Aligned, share: float) -> Aligned:
    """The window's last ``share`` of its bins as a window of its own (its start at the
    first bin kept, coverage counted over those bins): what the device has been doing
    lately, judged as if the audit had asked only about that. The device's own readings
    (``fine_device``) are kept from the same start; the null counts are the window's (an
    upper bound: the readings that said ``null`` are not stamped in the figures)."""
    n = int(aligned.t.size)
    first = min(max(n - math.ceil(share * n), 0), n)
    if first == 0:
        return aligned
    start = float(aligned.t[first]) - aligned.interval_s / 2.0
    fine = aligned.fine_device
    if fine is not None:
        keep = np.asarray(fine.ts) >= start
        fine = Series(np.asarray(fine.ts)[keep], np.asarray(fine.values)[keep])
    device, reference = aligned.device[first:], aligned.reference[first:]
    return replace(aligned, t=aligned.t[first:], device=device, reference=reference,
                   start=max(start, aligned.start), device_coverage=_coverage(device),
                   reference_coverage=_coverage(reference), fine_device=fine)


def coarsen(aligned: Aligned, factor: int) -> Aligned:
    """The same streams on bins ``factor`` times wider (means of the finite values).

    For questions that need less resolution than the data have: the clock lag is judged
    against a tolerance of minutes, so a day of 1 Hz bins searched lag by lag at 1 s would
    spend thirty times the work for a precision the verdict never uses. Trailing bins that
    do not fill a wide bin are dropped.
    """
    if factor <= 1:
        return aligned
    n = (aligned.t.size // factor) * factor
    if n == 0:
        return aligned
    return replace(aligned, t=block_sums(aligned.t, factor, n) / factor,
                   device=block_mean(aligned.device, factor, n),
                   reference=block_mean(aligned.reference, factor, n),
                   interval_s=aligned.interval_s * factor, fine_device=None)


def block_sums(x: FloatArray, factor: int, n: int) -> FloatArray:
    """Sums of ``x[:n]`` over consecutive blocks of ``factor``, added a column at a time:
    a reduction over a short inner axis is a slow loop in numpy, a strided add is not."""
    blocks = x[:n].reshape(-1, factor)
    total = blocks[:, 0].copy()
    for j in range(1, factor):
        total += blocks[:, j]
    return total


def block_mean(x: FloatArray, factor: int, n: int) -> FloatArray:
    """Means of the finite values of ``x[:n]`` over blocks of ``factor``, NaN for none."""
    ok = np.isfinite(x[:n])
    if ok.all():
        return block_sums(x, factor, n) / factor
    count = block_sums(ok.astype(np.float64), factor, n)
    total = block_sums(np.where(ok, x[:n], 0.0), factor, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
