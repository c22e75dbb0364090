"""How far the device's clock (or its buffering) runs behind the reference.

Environmental signals are dominated by slow swings (the diurnal cycle) whose correlation
with a shifted copy of themselves stays near 1 for an hour: the peak of a plain
cross-correlation is too flat to locate. The reference is therefore *prewhitened* first
(an AR(1) filter fitted on the reference and applied to both streams), so what is
correlated is the unpredictable part of each change, whose correlation is sharp at the
true lag and near zero elsewhere.

Differencing also amplifies a noisy device's white noise, which can bury one-bin changes;
changes summed over w bins carry w times the shared signal against the same noise. The
search therefore runs at a few scales (w = 1, 4, 16, ...) and keeps the one whose peak
stands highest above its own noise level, trading a broader peak for a visible one.

What is left of the slow swings after prewhitening (the diurnal cycle's rate of change)
is shared at every lag and would lift the whole correlation curve; a centred moving mean
four times the search range wide is subtracted to remove it, and a peak is judged against the
curve's median, not against zero.

Gaps are not filled: a masked, normalised cross-correlation gives the exact Pearson
correlation over the pairs present at each lag, with six FFT correlations per scale, so
the whole estimate is O(n log n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import fft as sfft

from auditd.core.align import Aligned
from auditd.core.series import FloatArray

MIN_PEAK_CORR = 0.02
"""Below this even a statistically clear peak is too weak a link to act on."""

PEAK_MARGIN_Z = 1.0
"""A peak must stand above the largest of the searched lags' noise correlations, which
for m independent lags of standard error se is about sqrt(2 ln m) * se, by this many more
standard errors: searching 6000 lags of 1 s must not turn noise into a lag."""

MIN_OVERLAP_FRACTION = 0.5
"""Lags whose overlapping pairs drop below this share of the best overlap are ignored."""

SCALE_STEP = 4
MAX_SCALES = 5
MAX_SCALE_SHARE = 8
"""Scales stay below max_lag / 8 bins, so that even the broadest peak sits well inside
the search range."""


@dataclass(frozen=True, slots=True)
class LagEstimate:
    """Lag of the device behind the reference; positive means the device is late.

    The correlations are those of the prewhitened streams summed over ``scale`` bins (the
    changes, not the levels), which is why they are lower than the r of the levels.
    """

    lag_s: float
    """NaN when either stream has nothing to correlate."""
    peak_corr: float
    corr_at_zero: float
    n: int = 0
    """Pairs at zero lag."""
    searched: int = 1
    """Number of (lag, scale) pairs tried, divided by the scale: the independent tries."""
    scale: int = 1
    """Bins the changes were summed over."""
    baseline: float = 0.0
    """Median correlation over the lags searched: what any lag gets."""

    @property
    def standard_error(self) -> float:
        """Of one lag's correlation under no common signal (Bartlett's formula for two
        w-bin moving sums of white noise: (2w^2 + 1) / 3w pairs' worth of variance)."""
        if self.n < 3:
            return math.inf
        w = self.scale
        return math.sqrt((2 * w * w + 1) / (3 * w) / self.n)

    @property
    def threshold(self) -> float:
        """Correlation a peak needs to be told from the noise of all the lags searched."""
        z = math.sqrt(2.0 * math.log(max(self.searched, 2))) + PEAK_MARGIN_Z
        return max(MIN_PEAK_CORR, z * self.standard_error)

    @property
    def resolved(self) -> bool:
        """Whether the peak stands out from noise, i.e. a lag was measured at all."""
        if not (math.isfinite(self.lag_s) and math.isfinite(self.peak_corr)):
            return False
        return self.peak_corr - self.baseline >= self.threshold


UNDEFINED = LagEstimate(lag_s=math.nan, peak_corr=math.nan, corr_at_zero=math.nan)


def ar1_coefficient(x: FloatArray) -> float:
    """Lag-1 autocorrelation over consecutive bins both present, clipped to [0, 1].

    Clipped because a negative coefficient would sharpen noise rather than remove
    persistence, and >1 would be explosive."""
    a, b = x[1:], x[:-1]
    ok = np.isfinite(a) & np.isfinite(b)
    if np.count_nonzero(ok) < 3:
        return 0.0
    mean = float(np.nanmean(x))
    a, b = a[ok] - mean, b[ok] - mean
    denom = float(np.dot(b, b))
    if denom <= 0.0:
        return 0.0
    return float(np.clip(np.dot(a, b) / denom, 0.0, 1.0))


def prewhiten(x: FloatArray, phi: float) -> FloatArray:
    """``x[t] - phi * x[t-1]``; NaN wherever either term is missing (no gap filling)."""
    out = np.full_like(x, np.nan)
    out[1:] = x[1:] - phi * x[:-1]
    return out


def moving_mean(x: FloatArray, width: int, *, centred: bool = False) -> FloatArray:
    """Mean over ``width`` bins (trailing, or centred and truncated at the ends) of the
    values present, NaN unless at least half the window's bins are; the same filter on
    both streams shifts neither."""
    if width <= 1:
        return x
    n = x.size
    ok = np.isfinite(x)
    sums = np.concatenate(([0.0], np.cumsum(np.where(ok, x, 0.0))))
    counts = np.concatenate(([0], np.cumsum(ok)))
    i = np.arange(n)
    if centred:
        lo, hi = np.clip(i - width // 2, 0, n), np.clip(i + width // 2 + 1, 0, n)
    else:
        lo, hi = i - width + 1, i + 1
    valid = lo >= 0
    lo = np.maximum(lo, 0)
    s, c = sums[hi] - sums[lo], counts[hi] - counts[lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid & (2 * c >= hi - lo), s / c, np.nan)


def high_pass(x: FloatArray, width: int) -> FloatArray:
    """``x`` minus its centred moving mean: what varies faster than ``width`` bins."""
    if width <= 2 or width >= x.size:
        return x - np.nanmean(x) if np.isfinite(x).any() else x
    return x - moving_mean(x, width, centred=True)


def _xcorr(a: FloatArray, b: FloatArray, length: int, max_lag: int) -> FloatArray:
    """``c[k] = sum_t a[t] * b[t-k]`` for k = -max_lag..max_lag (zero padded, no wrap)."""
    full = sfft.irfft(sfft.rfft(a, length) * np.conj(sfft.rfft(b, length)), length)
    return np.concatenate([full[length - max_lag:], full[: max_lag + 1]])


def lag_correlation(
    device: FloatArray, reference: FloatArray, max_lag: int
) -> tuple[np.ndarray, FloatArray, FloatArray]:
    """Pearson correlation of ``device[t]`` with ``reference[t-k]`` for every k in
    [-max_lag, max_lag] over the pairs present at that lag; returns (lags, corr, pairs).

    corr is NaN where a lag has fewer than 3 pairs or no variance.
    """
    n = device.size
    max_lag = int(min(max(max_lag, 0), max(n - 1, 0)))
    lags = np.arange(-max_lag, max_lag + 1)
    md = np.isfinite(device).astype(np.float64)
    mr = np.isfinite(reference).astype(np.float64)
    if n == 0 or not md.any() or not mr.any():
        return lags, np.full(lags.size, np.nan), np.zeros(lags.size)
    d = np.where(md > 0, device - np.nanmean(device), 0.0)
    r = np.where(mr > 0, reference - np.nanmean(reference), 0.0)
    length = sfft.next_fast_len(n + max_lag + 1, real=True)
    pairs = np.rint(_xcorr(md, mr, length, max_lag))
    sd = _xcorr(d, mr, length, max_lag)
    sr = _xcorr(md, r, length, max_lag)
    sdd = _xcorr(d * d, mr, length, max_lag)
    srr = _xcorr(md, r * r, length, max_lag)
    sdr = _xcorr(d, r, length, max_lag)
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = sdr - sd * sr / pairs
        var_d = sdd - sd * sd / pairs
        var_r = srr - sr * sr / pairs
        # FFT round-off leaves ~1e-16 of the total energy where the true variance is zero.
        floor_d = 1e-10 * float(np.dot(d, d))
        floor_r = 1e-10 * float(np.dot(r, r))
        ok = (pairs >= 3) & (var_d > floor_d) & (var_r > floor_r)
        corr = np.where(ok, cov / np.sqrt(np.where(ok, var_d * var_r, 1.0)), np.nan)
    return lags, np.clip(corr, -1.0, 1.0), pairs


def _parabolic_peak(corr: FloatArray, i: int) -> tuple[float, float]:
    """Sub-sample offset and height of the vertex through the peak and its neighbours."""
    if i == 0 or i == corr.size - 1:
        return 0.0, float(corr[i])
    left, mid, right = float(corr[i - 1]), float(corr[i]), float(corr[i + 1])
    if not (math.isfinite(left) and math.isfinite(right)):
        return 0.0, mid
    curvature = left - 2.0 * mid + right
    if curvature >= 0.0:
        return 0.0, mid
    delta = float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
    return delta, min(1.0, mid - 0.25 * (left - right) * delta)


def scales_for(max_lag: int) -> tuple[int, ...]:
    out = [1]
    while len(out) < MAX_SCALES and out[-1] * SCALE_STEP * MAX_SCALE_SHARE <= max_lag:
        out.append(out[-1] * SCALE_STEP)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Curve:
    lags: np.ndarray
    corr: FloatArray
    """NaN where unusable."""
    estimate: LagEstimate


def curve_at_scale(
    device: FloatArray, reference: FloatArray, max_lag: int, scale: int, n_scales: int,
    interval_s: float,
) -> _Curve:
    """The correlation curve of the two prewhitened streams summed over ``scale`` bins,
    and its peak."""
    dev, ref = moving_mean(device, scale), moving_mean(reference, scale)
    lags, corr, pairs = lag_correlation(dev, ref, max_lag)
    usable = np.isfinite(corr) & (pairs >= MIN_OVERLAP_FRACTION * pairs.max(initial=0))
    masked = np.where(usable, corr, np.nan)
    if not usable.any():
        return _Curve(lags, masked, UNDEFINED)
    best = int(np.nanargmax(masked))
    delta, height = _parabolic_peak(masked, best)
    zero = int(np.searchsorted(lags, 0))
    estimate = LagEstimate(
        lag_s=float((lags[best] + delta) * interval_s),
        peak_corr=float(height),
        corr_at_zero=float(masked[zero]),
        n=int(pairs[zero]),
        searched=max(1, int(np.count_nonzero(usable)) * n_scales // scale),
        scale=scale,
        baseline=float(np.nanmedian(masked)),
    )
    return _Curve(lags, masked, estimate)


def _margin(est: LagEstimate) -> float:
    """How many thresholds high the peak stands (the scale-selection score)."""
    if not math.isfinite(est.peak_corr):
        return -math.inf
    return (est.peak_corr - est.baseline) / est.threshold


def refine(fine: _Curve, coarse: LagEstimate, interval_s: float) -> float:
    """The finest curve's peak within the coarse peak's half-width: a broad peak says
    where to look, the sharp one says exactly where."""
    centre = int(np.searchsorted(fine.lags, round(coarse.lag_s / interval_s)))
    lo, hi = max(centre - coarse.scale, 0), min(centre + coarse.scale + 1, fine.lags.size)
    window = fine.corr[lo:hi]
    if not np.isfinite(window).any():
        return coarse.lag_s
    best = lo + int(np.nanargmax(window))
    delta, _ = _parabolic_peak(fine.corr, best)
    return float((fine.lags[best] + delta) * interval_s)


def estimate_lag(aligned: Aligned, max_lag_s: float) -> LagEstimate:
    """Lag of the device behind the reference within ±``max_lag_s``: detected at the scale
    whose peak stands highest above its noise, located at the finest scale."""
    phi = ar1_coefficient(np.asarray(aligned.reference))
    max_lag = int(max(0.0, max_lag_s) // aligned.interval_s)
    width = 4 * max_lag + 1
    dev = high_pass(prewhiten(np.asarray(aligned.device), phi), width)
    ref = high_pass(prewhiten(np.asarray(aligned.reference), phi), width)
    scales = scales_for(max_lag)
    curves = [curve_at_scale(dev, ref, max_lag, w, len(scales), aligned.interval_s)
              for w in scales]
    best = max((c.estimate for c in curves), key=_margin)
    if best.scale == 1 or not math.isfinite(best.lag_s):
        return best
    return replace(best, lag_s=refine(curves[0], best, aligned.interval_s))
