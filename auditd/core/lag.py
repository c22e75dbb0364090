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
correlation over the pairs present at each lag, with six FFT correlations (one batched FFT
pair) per scale, so the whole estimate is O(n log n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from scipy import fft as sfft

from auditd.core.align import Aligned
from auditd.core.series import FloatArray
from auditd.core.stats import DIRECT_LAGS, lagged_products, median, products_from_spectrum

MIN_PEAK_CORR = 0.02
"""Below this even a statistically clear peak is too weak a link to act on."""

PEAK_MARGIN_Z = 2.5
"""A peak must stand above the largest of the searched lags' noise correlations, which
for m independent lags of standard error se is about sqrt(2 ln m) * se, by this many more
standard errors: searching 6000 lags of 1 s must not turn noise into a lag. At 1.5, a
healthy barometer on a calm morning (tests/test_core.py) showed a false lag in 0.55 % of
windows, the several scales searched adding their own chances; at 2.5, 0.1 %.

Measured again on the five recorded matrices (2026-12-07, docs/evaluation.md): 2.0 found
21 more true lag windows (the misses stand just short of this hurdle: a thermometer 4
readings late at 3 minutes correlates 0.74 at its lag against a hurdle of 0.75) and put 2
false lags on healthy barometers, lowering precision's worst 5 %; 1.5 at the finest scale
alone, 4 more and 3 false. Kept at 2.5."""

MIN_IMPROVEMENT_Z = 3.0
"""A lag away from zero must beat zero lag's correlation by this many standard errors."""

MIN_OVERLAP_FRACTION = 0.5
"""Lags whose overlapping pairs drop below this share of the best overlap are ignored."""

RESOLVABLE_INTERVALS = 2.0
"""A lag is claimed only from two intervals of the series it is measured on (the coarser
of device and reference): with the device averaged to the reference's hour, a 13-minute
"lag" is a difference in the third decimal of two correlations, not a clock."""

SCALE_STEP = 4
MAX_SCALES = 5
MAX_SCALE_SHARE = 3
"""Scales stay below a third of the search range, so that even the broadest peak sits
inside it."""


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
    """Independent tries the peak competed with: usable lags times scales, over the scale
    (neighbouring lags of w-bin sums are not independent)."""
    scale: int = 1
    """Bins the changes were summed over."""
    baseline: float = 0.0
    """Median correlation over the lags searched: what any lag gets."""
    interval_s: float = 1.0
    null_factor: float = math.nan
    """Bartlett's variance factor of one lag's correlation under no common signal,
    1 + 2 sum_k rho_d(k) rho_r(k) over the two compared series' own autocorrelations
    (``null_variance_factor``); NaN: the factor of two w-bin moving sums of white noise."""
    edge_s: float = math.nan
    """The largest lag the search could compare (its range, less the lags with too few
    pairs): a peak there may be a curve still rising beyond it."""
    confirmed_before_s: float = math.nan
    """Where the lag was pointed to by the window but measured on the readings before it
    (``confirmed_lag``): the span those paired readings cover; NaN: measured on the
    window."""

    @property
    def standard_error(self) -> float:
        """Of one lag's correlation under no common signal: sqrt(factor / n), the factor
        Bartlett's (``null_factor``), or (2w^2 + 1) / 3w, two w-bin moving sums of white
        noise, where it was not measured."""
        if self.n < 3:
            return math.inf
        w = self.scale
        factor = self.null_factor if math.isfinite(self.null_factor) \
            else (2 * w * w + 1) / (3 * w)
        return math.sqrt(factor / self.n)

    @property
    def threshold(self) -> float:
        """Correlation a peak needs to be told from the noise of all the lags searched."""
        z = math.sqrt(2.0 * math.log(max(self.searched, 2))) + PEAK_MARGIN_Z
        return max(MIN_PEAK_CORR, z * self.standard_error)

    @property
    def margin_z(self) -> float:
        """Standard errors by which the peak clears the weaker of its two hurdles (the
        noise of the search, and zero lag); negative when it does not."""
        if not (math.isfinite(self.peak_corr) and math.isfinite(self.standard_error)):
            return -math.inf
        above_noise = (self.peak_corr - self.baseline - self.threshold) / self.standard_error
        if abs(self.lag_s) <= self.scale * self.interval_s:
            return above_noise
        return min(above_noise, self.beats_zero_z - MIN_IMPROVEMENT_Z)

    @property
    def below_resolution(self) -> bool:
        """Less than ``RESOLVABLE_INTERVALS`` intervals (rounded) of the series it was
        measured on: the data cannot tell it from no lag (a peak one bin off zero is as
        much the bins' phase as the clock, and a fraction of a bin refined between bins
        is a difference in the third decimal of two correlations)."""
        return abs(self.lag_s) < (RESOLVABLE_INTERVALS - 0.5) * self.interval_s

    @property
    def beats_zero_z(self) -> float:
        """Standard errors by which the peak beats zero lag's correlation (the curve's
        median where zero lag has none)."""
        if not (math.isfinite(self.peak_corr) and math.isfinite(self.standard_error)):
            return -math.inf
        zero = self.corr_at_zero if math.isfinite(self.corr_at_zero) else self.baseline
        return (self.peak_corr - zero) / self.standard_error

    @property
    def resolved(self) -> bool:
        """Whether a lag was measured at all: the peak stands out from the noise of every
        lag searched, and a peak away from zero also clearly beats zero lag (otherwise
        the data cannot tell that lag from none)."""
        return math.isfinite(self.lag_s) and self.margin_z >= 0.0

    @property
    def measured_s(self) -> float:
        """The lag as the data resolve it: NaN when not resolved, 0 when below the
        series' resolution (``below_resolution``), else ``lag_s``."""
        if not self.resolved:
            return math.nan
        return 0.0 if self.below_resolution else self.lag_s


UNDEFINED = LagEstimate(lag_s=math.nan, peak_corr=math.nan, corr_at_zero=math.nan)


def prewhitening_coefficient(x: FloatArray) -> float:
    """Lag-1 autocorrelation for prewhitening, clipped to [0, 1] (``stats.ar1_coefficient``
    is the other one: bias-corrected and bounded, for effective sample sizes).

    Clipped because a negative coefficient would sharpen noise rather than remove
    persistence, and >1 would be explosive."""
    a, b = x[1:], x[:-1]
    ok = np.isfinite(a) & np.isfinite(b)
    if np.count_nonzero(ok) < 3:
        return 0.0
    gaps = np.isnan(x)  # np.nanmean's own steps, without its checks
    mean = float(np.sum(np.where(gaps, 0.0, x))) / int(x.size - np.count_nonzero(gaps))
    a, b = a[ok] - mean, b[ok] - mean
    denom = float(np.dot(b, b))
    if denom <= 0.0:
        return 0.0
    return min(max(float(np.dot(a, b)) / denom, 0.0), 1.0)


def prewhiten(x: FloatArray, phi: float) -> FloatArray:
    """``x[t] - phi * x[t-1]``; NaN wherever either term is missing (no gap filling)."""
    out = np.full_like(x, np.nan)
    out[1:] = x[1:] - phi * x[:-1]
    return out


PrefixSums = tuple[FloatArray, "np.ndarray | None"]
"""A series' running sums of the values present and running counts of them (None when
every value is present), each with a leading 0: what ``moving_mean`` reads."""


def prefix_sums(x: FloatArray) -> PrefixSums:
    """``x``'s running sums (gaps as 0) and, when it has gaps, its running counts, along
    its last axis (a block of series: each row's are those of the row alone)."""
    n = x.shape[-1]
    ok = np.isfinite(x)
    gaps = not ok.all()
    sums = np.empty((*x.shape[:-1], n + 1))
    sums[..., 0] = 0.0
    np.cumsum(np.where(ok, x, 0.0) if gaps else x, axis=-1, out=sums[..., 1:])
    counts = None
    if gaps:
        counts = np.empty((*x.shape[:-1], n + 1), dtype=np.intp)
        counts[..., 0] = 0
        np.cumsum(ok, axis=-1, out=counts[..., 1:])
    return sums, counts


def moving_mean(x: FloatArray, width: int, *, centred: bool = False,
                prefix: PrefixSums | None = None) -> FloatArray:
    """Mean over ``width`` bins (trailing, or centred and truncated at the ends) of the
    values present, NaN unless at least half the window's bins are; the same filter on
    both streams shifts neither. ``prefix``: ``prefix_sums(x)``, for a caller that takes
    several widths of one series. ``x`` may be a block of series (the means along its
    last axis, each row's the same numbers as the row's alone: the lag search filters
    both streams at once)."""
    if width <= 1:
        return x
    n = x.shape[-1]
    sums, counts = prefix_sums(x) if prefix is None else prefix
    out = np.full(x.shape, np.nan)
    if centred:
        half = width // 2
        span = 2 * half + 1  # whole windows [i - half, i + half + 1)
        _window_means(sums, counts, slice(span, n + 1), slice(0, max(n - span + 1, 0)), span,
                      out[..., half:max(n - half, half)])
        edges = np.concatenate((np.arange(min(half, n)), np.arange(max(n - half, half), n)))
        lo = np.maximum(edges - half, 0)  # edges lie in [0, n): one bound each is enough
        hi = np.minimum(edges + half + 1, n)
        s = sums[..., hi] - sums[..., lo]
        c = hi - lo if counts is None else counts[..., hi] - counts[..., lo]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[..., edges] = np.where(2 * c >= hi - lo, s / c, np.nan)
    elif width <= n:
        _window_means(sums, counts, slice(width, n + 1), slice(0, n - width + 1), width,
                      out[..., width - 1:])
    return out


def _window_means(
    sums: FloatArray, counts: np.ndarray | None, hi: slice, lo: slice, width: int,
    out: FloatArray,
) -> None:
    """``out`` = mean of the values present in windows of ``width`` bins whose prefix-sum
    bounds are ``sums[..., hi]``, ``sums[..., lo]``; NaN where fewer than half are
    present."""
    np.subtract(sums[..., hi], sums[..., lo], out=out)
    if counts is None:
        out /= width
        return
    c = counts[..., hi] - counts[..., lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        out /= c
    out[2 * c < width] = np.nan


def high_pass(x: FloatArray, width: int) -> FloatArray:
    """``x`` minus its centred moving mean: what varies faster than ``width`` bins (along
    the last axis of a block of series, each row as alone)."""
    if width <= 2 or width >= x.shape[-1]:
        if x.ndim > 1:
            return np.array([high_pass(row, width) for row in x])
        return x - np.nanmean(x) if np.isfinite(x).any() else x
    return x - moving_mean(x, width, centred=True)


_LEFT = np.array([0, 1, 0, 2, 0, 1])
_RIGHT = np.array([3, 3, 4, 3, 5, 4])
"""Which of (mask_d, d, d^2, mask_r, r, r^2) to cross-correlate for (pairs, sum_d, sum_r,
sum_dd, sum_rr, sum_dr)."""

MAX_HOLE_WORK = 1.0
"""Gaps inside a stream are corrected for one by one (``_sums_over``) while their number
times the lags searched stays below this many times the series' length; beyond, every
masked sum is its own FFT correlation (``_fft_sums``)."""


BATCH_LENGTH = 16_384
"""Padded lengths up to this are transformed as one batch of rows (one call: at a day of
minute data the call's own overhead is a third of a transform); longer ones a row at a
time through one buffer, so that a day at 1 Hz never holds a padded copy of every row."""


def _spectra(rows: tuple[FloatArray, ...], length: int) -> np.ndarray:
    """Real FFTs of ``rows`` zero padded to ``length``: one batched transform of short
    rows, else one row at a time through one padded buffer (the same numbers either way:
    each row is its own transform)."""
    if length <= BATCH_LENGTH:
        block = np.zeros((len(rows), length))
        for i, row in enumerate(rows):
            block[i, :row.size] = row
        return np.asarray(sfft.rfft(block, axis=-1, overwrite_x=True))
    out = np.empty((len(rows), length // 2 + 1), dtype=np.complex128)
    buf = np.zeros(length)
    for i, row in enumerate(rows):
        buf[:row.size] = row
        out[i] = sfft.rfft(buf)
    return out


def _xcorr(spectrum_a: np.ndarray, spectrum_b: np.ndarray, length: int, max_lag: int
           ) -> FloatArray:
    """``c[k] = sum_t a[t] * b[t-k]`` for k = -max_lag..max_lag from the rows' spectra
    (``_spectra``), zero padded so nothing wraps, keeping only the lags searched."""
    full = sfft.irfft(spectrum_a * np.conj(spectrum_b), length)
    out = np.empty(2 * max_lag + 1)
    out[:max_lag] = full[length - max_lag:]
    out[max_lag:] = full[: max_lag + 1]
    return out


def _span(mask: np.ndarray) -> tuple[int, int, np.ndarray]:
    """First and one-past-last True of ``mask`` (a non-empty one), and the False
    positions between them: the stream's extent and the gaps inside it."""
    first = int(np.argmax(mask))
    stop = mask.size - int(np.argmax(mask[::-1]))
    holes = first + np.flatnonzero(~mask[first:stop])
    return first, stop, holes


Part = tuple[int, int, np.ndarray]
"""Rows of a block for ``_sums_over``: how many, the sign of their shift, and the gaps
inside the other stream's extent."""


def _sums_over(
    values: FloatArray, first: int, stop: int, max_lag: int, parts: tuple[Part, ...],
) -> FloatArray:
    """``sum_t v[t] * mask[t - sign*k]`` for each row v of ``values`` and each lag k in
    -max_lag..max_lag, ``mask`` the other stream's presence: its extent [first, stop) less
    its gaps. ``parts`` split the rows in order into groups of (rows, sign, gaps), each
    group against a stream of that extent (both streams of the lag search usually share
    theirs: all five sums then come from one pass). The sum over the other stream's
    extent (shifted by the lag) comes from prefix sums at the extent's two ends, less the
    terms at its gaps: O(n + gaps x lags) instead of an FFT correlation per sum. The rows
    are summed together (each row's sums are those of the row alone: numpy reduces and
    accumulates a row of a C-ordered block as it does a lone array)."""
    n = values.shape[1]
    up = np.arange(-max_lag, max_lag + 1)
    hi_sums, hi_first = _prefix_block(values, stop - max_lag, stop + max_lag, n)
    lo_sums, lo_first = _prefix_block(values, first - max_lag, first + max_lag, n)
    out = np.empty((values.shape[0], up.size))
    row = 0
    for count, sign, holes in parts:
        shift = up if sign > 0 else up[::-1]
        rows = slice(row, row + count)
        hi = np.minimum(np.maximum(shift + stop, 0), n)
        lo = np.minimum(np.maximum(shift + first, 0), n)
        np.subtract(hi_sums[rows, hi - hi_first], lo_sums[rows, lo - lo_first], out=out[rows])
        if holes.size:
            at = holes[:, None] + (shift + max_lag)[None, :]
            padded = np.zeros(n + 2 * max_lag)
            # a row at a time: a block's sum may add in another order
            for i in range(row, row + count):
                padded[max_lag:max_lag + n] = values[i]
                out[i] -= padded[at].sum(axis=0)
        row += count
    return out


def _prefix_block(v: FloatArray, low: int, high: int, n: int) -> tuple[FloatArray, int]:
    """``row[:j].sum()`` for each row of ``v`` and each j from ``low`` to ``high`` clipped
    to [0, n], and the first such j: each row summed once up to it, then accumulated only
    across the span."""
    first, last = min(max(low, 0), n), min(max(high, 0), n)
    local = np.empty((v.shape[0], last - first + 1))
    local[:, 0] = np.sum(v[:, :first], axis=1)
    np.cumsum(v[:, first:last], axis=1, out=local[:, 1:])
    local[:, 1:] += local[:, :1]
    return local, first


def lag_correlation(
    device: FloatArray, reference: FloatArray, max_lag: int
) -> tuple[np.ndarray, FloatArray, FloatArray]:
    """Pearson correlation of ``device[t]`` with ``reference[t-k]`` for every k in
    [-max_lag, max_lag] over the pairs present at that lag; returns (lags, corr, pairs).

    corr is NaN where a lag has fewer than 3 pairs or no variance.

    Of the six sums per lag a masked correlation needs, only the cross product needs an
    FFT correlation: the others multiply one stream by the other's presence, which is its
    extent less its gaps, so prefix sums and a correction per gap give them exactly. Only
    streams with very many gaps take six FFT correlations.
    """
    return _correlation(device, reference, max_lag)[:3]


class Spectra(NamedTuple):
    """What ``lag_correlation`` took of the device and reference and
    ``null_variance_factor`` can read again: the real FFTs of the centred series (gaps as
    zeros), their padded length, the centred series themselves and how many values each
    holds."""

    device: np.ndarray
    reference: np.ndarray
    length: int
    centred_device: FloatArray
    centred_reference: FloatArray
    present_device: int
    present_reference: int


Correlation = tuple[np.ndarray, FloatArray, FloatArray, "Spectra | None"]
"""(lags, corr, pairs, spectra): ``lag_correlation``'s answer and what it took."""


def _correlation(device: FloatArray, reference: FloatArray, max_lag: int) -> Correlation:
    """``lag_correlation`` and the spectra it took (None where it took none)."""
    return _correlations(((device, reference),), max_lag)[0]


def _correlations(
    series: tuple[tuple[FloatArray, FloatArray], ...], max_lag: int
) -> list[Correlation]:
    """``_correlation`` of each (device, reference) pair of ``series`` (all of one length:
    the scales of one lag search), their FFTs pooled: one forward transform of every row
    and one inverse of every product where the padded length is short (the same numbers
    as pair by pair: each row is its own transform; at a day of minute data a transform's
    call costs as much as its work)."""
    n = series[0][0].size
    max_lag = int(min(max(max_lag, 0), max(n - 1, 0)))
    lags = np.arange(-max_lag, max_lag + 1)
    length = sfft.next_fast_len(n + max_lag + 1, real=True)
    rows: list[FloatArray] = []  # every row to transform, pooled
    left: list[int] = []  # the products to transform back: rows' indices
    right: list[int] = []
    plans: list[_Plan | None] = []
    for device, reference in series:
        md = np.isfinite(device)
        mr = np.isfinite(reference)
        if n == 0 or not md.any() or not mr.any():
            plans.append(None)
            continue
        d = np.where(md, device - np.mean(device[md]), 0.0)
        r = np.where(mr, reference - np.mean(reference[mr]), 0.0)
        span_d, span_r = _span(md), _span(mr)
        base, product = len(rows), len(left)
        if (span_d[2].size + span_r[2].size) * lags.size <= MAX_HOLE_WORK * n:
            sums = _masked_sums(md, d, r, span_d, span_r, max_lag)
            rows += [d, r]
            left.append(base)
            right.append(base + 1)
            plans.append(_Plan(d, r, md, mr, base, base + 1, sums, product))
        else:
            rows += [md, d, d * d, mr, r, r * r]
            left += [base + int(a) for a in _LEFT]
            right += [base + int(b) for b in _RIGHT]
            plans.append(_Plan(d, r, md, mr, base + 1, base + 4, None, product))
    if not rows:
        return [(lags, np.full(lags.size, np.nan), np.zeros(lags.size), None) for _ in series]
    spectra = _spectra(tuple(rows), length)
    del rows
    if length <= BATCH_LENGTH:  # every inverse transform in one call, as the forward ones
        full = sfft.irfft(spectra[left] * np.conj(spectra[right]), length, axis=-1)
        xcorr = np.empty((len(left), lags.size))
        xcorr[:, :max_lag] = full[:, length - max_lag:]
        xcorr[:, max_lag:] = full[:, : max_lag + 1]
        del full
    else:
        xcorr = np.array([_xcorr(spectra[a], spectra[b], length, max_lag)
                          for a, b in zip(left, right, strict=True)])
    out: list[Correlation] = []
    for plan in plans:
        if plan is None:
            out.append((lags, np.full(lags.size, np.nan), np.zeros(lags.size), None))
            continue
        if plan.sums is not None:
            pairs, sd, sdd, sr, srr = plan.sums
            pairs = np.rint(pairs)
            sdr = xcorr[plan.product]
        else:
            sums = xcorr[plan.product:plan.product + 6]
            pairs, sd, sr, sdd, srr, sdr = (np.rint(sums[0]), sums[1], sums[2], sums[3],
                                            sums[4], sums[5])
        corr = _pearson(pairs, sd, sr, sdd, srr, sdr, plan.d, plan.r)
        spectrum_d, spectrum_r = spectra[plan.spectrum_d], spectra[plan.spectrum_r]
        if length > BATCH_LENGTH:  # copies: the block of six a gappy long window took goes
            spectrum_d, spectrum_r = spectrum_d.copy(), spectrum_r.copy()
        taken = Spectra(spectrum_d, spectrum_r, length, plan.d, plan.r,
                        int(np.count_nonzero(plan.md)), int(np.count_nonzero(plan.mr)))
        out.append((lags, corr, pairs, taken))
    return out


@dataclass(frozen=True, slots=True)
class _Plan:
    """One pair's part of ``_correlations``: its centred series and masks, where its rows'
    spectra and its products lie in the pooled transforms, and the masked sums already
    taken by prefix sums (None: all six are FFT correlations, from ``product`` on)."""

    d: FloatArray
    r: FloatArray
    md: np.ndarray
    mr: np.ndarray
    spectrum_d: int
    spectrum_r: int
    sums: FloatArray | None
    product: int


def _masked_sums(md: np.ndarray, d: FloatArray, r: FloatArray,
                 span_d: tuple[int, int, np.ndarray], span_r: tuple[int, int, np.ndarray],
                 max_lag: int) -> FloatArray:
    """(pairs, sum_d, sum_dd, sum_r, sum_rr) at every lag by prefix sums (``_sums_over``):
    each stream's values against the other's presence."""
    n = d.size
    # one extent: all five sums in one pass (a short window: a long one's five rows at once
    # would raise the memory's peak)
    shared = span_d[:2] == span_r[:2] and n <= BATCH_LENGTH
    rows = np.empty((5 if shared else 3, n))
    np.copyto(rows[0], md)
    rows[1] = d
    np.multiply(d, d, out=rows[2])
    if shared:
        rows[3] = r
        np.multiply(r, r, out=rows[4])
        return _sums_over(rows, span_r[0], span_r[1], max_lag,
                          ((3, 1, span_r[2]), (2, -1, span_d[2])))
    sums = np.empty((5, 2 * max_lag + 1))
    sums[:3] = _sums_over(rows, span_r[0], span_r[1], max_lag, ((3, 1, span_r[2]),))
    rows[1] = r
    np.multiply(r, r, out=rows[2])
    sums[3:] = _sums_over(rows[1:], span_d[0], span_d[1], max_lag, ((2, -1, span_d[2]),))
    return sums


def _pearson(pairs: FloatArray, sd: FloatArray, sr: FloatArray, sdd: FloatArray,
             srr: FloatArray, sdr: FloatArray, d: FloatArray, r: FloatArray) -> FloatArray:
    """The correlation at each lag from its six sums; NaN below 3 pairs or without
    variance, clipped to [-1, 1]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = sdr - sd * sr / pairs
        var_d = sdd - sd * sd / pairs
        var_r = srr - sr * sr / pairs
        # FFT round-off leaves ~1e-16 of the total energy where the true variance is zero.
        floor_d = 1e-10 * float(np.dot(d, d))
        floor_r = 1e-10 * float(np.dot(r, r))
        ok = (pairs >= 3) & (var_d > floor_d) & (var_r > floor_r)
        corr = np.where(ok, cov / np.sqrt(np.where(ok, var_d * var_r, 1.0)), np.nan)
    np.minimum(np.maximum(corr, -1.0, out=corr), 1.0, out=corr)  # np.clip, at less cost
    return corr


NULL_FACTOR_FLOOR = 0.25
"""The least variance factor taken: a sum of products of sample autocorrelations can
come out near 0 by chance, and a correlation's noise is never far below 1/n."""


def null_variance_factor(device: FloatArray, reference: FloatArray, scale: int,
                         spectra: Spectra | None = None) -> float:
    """Bartlett's factor for the correlation of two independent series,
    1 + 2 sum_k rho_d(k) rho_r(k), summed to 4 scale + 8 lags (gaps read as the mean).

    Why measured, not assumed: the streams are prewhitened with the reference's AR(1)
    coefficient, which turns a device's white noise into nearly its differences (lag-1
    correlation near -1/2); summed over w bins those telescope, and their correlation
    with anything is far less noisy than that of moving sums of white noise. Assumed
    white, a 45-second clock lag on 15-second indoor data stood 3.7 standard errors
    above the curve where the curve's own scatter put it at 8; a series more persistent
    than white gets a larger factor, as it should.

    ``spectra``: what ``lag_correlation`` took of the same two series (``_correlation``):
    their centred copies are not made again, and the lags beyond ``DIRECT_LAGS`` are read
    from their spectra instead of two more FFTs."""
    n = int(device.size)
    cutoff = min(4 * scale + 8, n // 4)
    if cutoff < 1:
        return math.nan
    rho = []
    own: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
    length = 0
    if spectra is not None and cutoff >= DIRECT_LAGS and spectra.length >= n + cutoff:
        own, length = (spectra.device, spectra.reference), spectra.length
    elif spectra is not None and cutoff >= DIRECT_LAGS:
        if min(spectra.present_device, spectra.present_reference) < 3:
            return math.nan
        # both FFTs in one call (each row's products are those of the row alone)
        acovs = lagged_products(np.stack((spectra.centred_device, spectra.centred_reference)),
                                cutoff)
        if not (acovs[0, 0] > 0.0 and acovs[1, 0] > 0.0):
            return math.nan
        rho = [acovs[0] / acovs[0, 0], acovs[1] / acovs[1, 0]]
        return max(1.0 + 2.0 * float(rho[0][1:] @ rho[1][1:]), NULL_FACTOR_FLOOR)
    for i, (x, spectrum) in enumerate(zip((device, reference), own, strict=True)):
        if spectra is not None:  # the same centred series, made once
            present, centred = ((spectra.present_device, spectra.centred_device) if i == 0
                                else (spectra.present_reference, spectra.centred_reference))
            if present < 3:
                return math.nan
        else:
            ok = np.isfinite(x)
            if ok.sum() < 3:
                return math.nan
            centred = np.where(ok, x - float(np.mean(x[ok])), 0.0)
        if spectrum is not None:
            acov = products_from_spectrum(spectrum, length, cutoff)
        else:
            acov = lagged_products(centred, cutoff)  # a few dozen lags: dot products
        if not acov[0] > 0.0:
            return math.nan
        rho.append(acov / acov[0])
    factor = 1.0 + 2.0 * float(rho[0][1:] @ rho[1][1:])
    return max(factor, NULL_FACTOR_FLOOR)


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
    delta = min(max(0.5 * (left - right) / curvature, -0.5), 0.5)
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
    return _curve(dev, ref, _correlation(dev, ref, max_lag), scale, n_scales, interval_s)


def _curve(dev: FloatArray, ref: FloatArray, found: Correlation, scale: int, n_scales: int,
           interval_s: float) -> _Curve:
    """``curve_at_scale`` of the streams summed over ``scale`` bins, their correlation
    taken."""
    lags, corr, pairs, spectra = found
    usable = np.isfinite(corr) & (pairs >= MIN_OVERLAP_FRACTION * pairs.max(initial=0))
    masked = np.where(usable, corr, np.nan)
    if not usable.any():
        return _Curve(lags, masked, UNDEFINED)
    best = int(np.argmax(np.where(usable, corr, -np.inf)))  # np.nanargmax, at less cost
    delta, height = _parabolic_peak(masked, best)
    zero = lags.size // 2  # the lags run from -max_lag to max_lag
    estimate = LagEstimate(
        lag_s=float((lags[best] + delta) * interval_s),
        peak_corr=float(height),
        corr_at_zero=float(masked[zero]),
        n=int(pairs[zero]),
        searched=max(1, int(np.count_nonzero(usable)) * n_scales // scale),
        scale=scale,
        baseline=median(corr[usable]),
        interval_s=interval_s,
        null_factor=null_variance_factor(dev, ref, scale, spectra),
        edge_s=float(np.max(np.abs(lags[usable]))) * interval_s,
    )
    return _Curve(lags, masked, estimate)


def _margin(est: LagEstimate) -> float:
    """How many thresholds high the peak stands (the scale-selection score)."""
    if not math.isfinite(est.peak_corr):
        return -math.inf
    return (est.peak_corr - est.baseline) / est.threshold


def refine(curves: list[_Curve], chosen: int, interval_s: float) -> tuple[float, int]:
    """Walk down from the chosen scale, each finer curve's peak sought within the coarser
    one's half-width: a broad peak says where to look, the sharp one says exactly where.
    The walk stops at the first scale whose local peak is lost in its own noise, since
    the highest of a few noise values would only move the estimate at random. Returns
    the lag and the index of the finest curve that placed it."""
    lag_s, placed = curves[chosen].estimate.lag_s, chosen
    for i in range(chosen - 1, -1, -1):
        fine, width = curves[i], curves[i + 1].estimate.scale
        centre = int(np.searchsorted(fine.lags, round(lag_s / interval_s)))
        lo, hi = max(centre - width, 0), min(centre + width + 1, fine.lags.size)
        window = fine.corr[lo:hi]
        if not np.isfinite(window).any():
            break
        best = lo + int(np.nanargmax(window))
        if fine.corr[best] - fine.estimate.baseline < fine.estimate.threshold:
            break
        delta, _ = _parabolic_peak(fine.corr, best)
        lag_s, placed = float((fine.lags[best] + delta) * interval_s), i
    return lag_s, placed


def beats_zero(curve: _Curve, lag_s: float) -> bool:
    """Does the curve's correlation at ``lag_s`` beat its correlation at zero lag by
    ``MIN_IMPROVEMENT_Z`` standard errors? A coarse scale finds a peak but cannot place
    it closer to zero than its own width, and the finer scale that places it must then
    also tell it from no lag: a healthy unit's broad peak at -4 s, placed by the 4-bin
    scale at -26 s where that scale's correlation was 0.22 against 0.17 at zero (1.3
    standard errors), is no clock error."""
    est = curve.estimate
    at = int(np.argmin(np.abs(curve.lags * est.interval_s - lag_s)))
    zero = int(np.searchsorted(curve.lags, 0))
    peak, none = curve.corr[at], curve.corr[zero]
    if not (math.isfinite(peak) and math.isfinite(none)):
        return False
    return (peak - none) / est.standard_error >= MIN_IMPROVEMENT_Z


def whitened(aligned: Aligned, max_lag: int) -> tuple[FloatArray, FloatArray]:
    """The device and the reference as the lag search correlates them, a stream at a
    time: prewhitened by the reference's AR(1) coefficient, less their moving mean over
    four times the search range (``max_lag`` bins)."""
    phi = prewhitening_coefficient(np.asarray(aligned.reference))
    width = 4 * max_lag + 1
    return (high_pass(prewhiten(np.asarray(aligned.device), phi), width),
            high_pass(prewhiten(np.asarray(aligned.reference), phi), width))


def confirmed_lag(candidate: LagEstimate, earlier: Aligned, max_lag_s: float,
                  reach_s: float) -> LagEstimate:
    """The correlation of ``earlier`` (the same two streams over a span before the window,
    on the window's time base) at the lag ``candidate`` points to, as an estimate judged by
    the same hurdles as any (``resolved``).

    Why a second look: a window whose peak stands beyond tolerance and beats zero lag, but
    not the noise of the many lags it searched, has named one lag, and readings it did not
    see can test it. Only the lags within ``reach_s`` of the candidate (the lag tolerance,
    rounded to whole bins: nearer than that, two lags are one clock error) are looked at
    there, at the candidate's scale, and the peak must clear the hurdle of the window's
    whole search (``searched`` is the candidate's), as though the earlier readings had
    searched every lag: they bring more pairs, not a lower hurdle. At the hurdle of the
    few lags looked at, ``bench/scale.py``'s 10,062 healthy minute streams had noise peaks
    confirmed in five windows of four streams over four audits, one stream twice and
    alerted: a correlation's tails at four standard errors are heavier than a normal's
    (``PEAK_MARGIN_Z``). The earlier readings are disjoint from the window, so the
    window's choice does not bias them. Unresolved (``resolved`` False) where the earlier
    span cannot tell, holds fewer pairs than the window did (a null factor read off a few
    dozen pairs is no measure of their noise), or peaks further than the reach from the
    candidate."""
    if not math.isfinite(candidate.lag_s):
        return UNDEFINED
    interval = earlier.interval_s
    max_lag = int(max(0.0, max_lag_s) // interval)
    dev, ref = whitened(earlier, max_lag)
    curve = curve_at_scale(dev, ref, max_lag, candidate.scale, 1, interval)
    if not math.isfinite(curve.estimate.lag_s) or curve.estimate.n < candidate.n:
        return UNDEFINED
    reach = max(1, round(reach_s / interval))
    centre = int(np.searchsorted(curve.lags, round(candidate.lag_s / interval)))
    lo, hi = max(centre - reach, 0), min(centre + reach + 1, curve.lags.size)
    near = curve.corr[lo:hi]
    if not np.isfinite(near).any():
        return UNDEFINED
    best = lo + int(np.nanargmax(near))
    if not _interior_peak(curve.corr, best):
        return UNDEFINED  # the flank of a peak elsewhere, or the search's edge
    delta, height = _parabolic_peak(curve.corr, best)
    lag_s = float((curve.lags[best] + delta) * interval)
    if abs(lag_s - candidate.lag_s) > reach * interval:
        return UNDEFINED  # refined beyond the reach: another peak than the candidate's
    paired = earlier.t[earlier.paired]
    found = replace(curve.estimate, lag_s=lag_s, peak_corr=height,
                    searched=candidate.searched,
                    confirmed_before_s=float(paired[-1] - paired[0]) + interval)
    # beating zero lag is asked at every distance: a lag within one scale of zero is no
    # exception here, the candidate having been placed beyond the tolerance
    return found if found.beats_zero_z >= MIN_IMPROVEMENT_Z else UNDEFINED


def _interior_peak(corr: FloatArray, i: int) -> bool:
    """Is ``corr[i]`` a peak: both its neighbours present and neither above it? At the
    edge of the lags searched the curve may only be rising towards a peak beyond them
    (and the edge lags compare the fewest pairs), or falling from one at zero."""
    if i == 0 or i + 1 >= corr.size:
        return False
    left, right = corr[i - 1], corr[i + 1]
    return bool(np.isfinite(left) and np.isfinite(right) and corr[i] >= max(left, right))


def estimate_lag(aligned: Aligned, max_lag_s: float) -> LagEstimate:
    """Lag of the device behind the reference within ±``max_lag_s``: detected at the scale
    whose peak stands highest above its noise, located at the finest scale."""
    max_lag = int(max(0.0, max_lag_s) // aligned.interval_s)
    scales = scales_for(max_lag)
    n = aligned.device.size
    if sfft.next_fast_len(n + max_lag + 1, real=True) <= BATCH_LENGTH:
        # a short window (a day of minute data): both streams filtered as one block (the
        # same numbers as ``whitened``'s, row by row), their running sums taken once for
        # every scale, the scales' FFTs pooled; the calls, not the passes, are its cost
        phi = prewhitening_coefficient(np.asarray(aligned.reference))
        width = 4 * max_lag + 1
        both = high_pass(np.stack((prewhiten(np.asarray(aligned.device), phi),
                                   prewhiten(np.asarray(aligned.reference), phi))), width)
        prefix = prefix_sums(both) if len(scales) > 1 else None
        pairs = [(dev, ref) for dev, ref in (moving_mean(both, w, prefix=prefix)
                                             for w in scales)]
        found = _correlations(tuple(pairs), max_lag)
        curves = [_curve(dev, ref, taken, w, len(scales), aligned.interval_s)
                  for (dev, ref), taken, w in zip(pairs, found, scales, strict=True)]
    else:  # a long window (1 Hz): a stream and a scale at a time, for the memory's peak
        dev, ref = whitened(aligned, max_lag)
        curves = [curve_at_scale(dev, ref, max_lag, w, len(scales), aligned.interval_s)
                  for w in scales]
    chosen = max(range(len(curves)), key=lambda i: _margin(curves[i].estimate))
    best = curves[chosen].estimate
    if chosen == 0 or not math.isfinite(best.lag_s):
        return best
    lag_s, placed = refine(curves, chosen, aligned.interval_s)
    refined = replace(best, lag_s=lag_s)
    if not refined.below_resolution and not beats_zero(curves[placed], lag_s):
        return replace(best, lag_s=0.0)  # a peak, but not told from no lag
    return refined
