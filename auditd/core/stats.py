"""Small pure statistics the metrics are judged with: honest intervals and honest lines.

Sensor series are strongly autocorrelated: the device-minus-reference difference wanders
slowly (weather the two instruments see a little differently, AR noise), so a day of
86,400 one-second samples may hold only a few hundred independent ones. An interval built
on ``n`` would be far too narrow and would raise alarms on noise, more often the more data
a window holds. Everything here therefore works with an effective sample size.

Lines: ordinary least squares treats the reference as exact; with a noisy reference it
attenuates the gain towards 0 (regression dilution). The Deming fit takes the noise of
both instruments into account when their variance ratio is known; the Huber fit resists
outliers (a spike, a wet sensor for ten minutes) that would drag a least-squares line.

All functions take finite float arrays (no NaN), are O(n), and never raise on degenerate
data: they return NaN (or the bound) where a figure cannot be defined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy.special import ndtri, stdtrit

from auditd.core.series import FloatArray

ONE_SIDED_LEVEL = 0.99
"""A metric fails only when it is beyond tolerance with 99% one-sided confidence, so at
most about 1% of windows sitting exactly at the edge fail."""
Z_ONE_SIDED_1PCT = 2.3263478740408408
"""scipy.stats.norm.ppf(0.99): the large-sample limit of ``confidence_z``."""
RHO_UPPER_Z = 1.6448536269514722
"""scipy.stats.norm.ppf(0.95): the AR(1) coefficient used is its upper 95% bound."""
RHO_MAX = 0.999
"""An AR(1) coefficient this close to 1 is a random walk within the window: n_eff is at
its floor of 2 anyway, and 1 itself would divide by zero."""

HUBER_K = 1.345
"""Huber's tuning constant: 95% efficiency against least squares under Gaussian noise."""
HUBER_MAX_ITER = 20
HUBER_RTOL = 1e-7
MAD_TO_SIGMA = 1.482602218505602
"""1 / Phi^-1(3/4): the median absolute deviation of a Gaussian times this is its sigma."""
OUTLIER_FALSE_RATE = 0.01
"""``has_outliers`` calls a window's residuals outlier-free unless one lies further out than
Gaussian residuals of that many would reach in more than 1% of windows."""


def median(x: FloatArray) -> float:
    """``np.median`` of finite values, the same number at a fraction of the cost.

    numpy's median partitions around both middle elements at once, which on a day of
    1-second residuals is seven times slower than one selection; the middle pair of an
    even count is the selected element and the largest of those below it."""
    n = int(x.size)
    if n == 0:
        return math.nan
    part = np.partition(x, n // 2)
    return _middle(part, n)


def _middle(part: FloatArray, n: int) -> float:
    hi = float(part[n // 2])
    if n % 2:
        return hi
    return (float(part[: n // 2].max()) + hi) / 2.0


def about_one_step(x: FloatArray, min_side: int = 1) -> FloatArray:
    """``x`` (in time order) less its best single step: the two constants before and after
    the split that leaves the least squared error, each side at least ``min_side`` values
    (``x`` less its mean where that leaves no split). What a series varies by besides one
    step (``consensus.median_noise``, ``diagnose.std_about_one_step``)."""
    n = int(x.size)
    residual = np.array(x, dtype=np.float64)
    if n < 2 * max(min_side, 1):
        return residual - residual.mean() if n else residual
    csum = np.cumsum(residual)
    k = np.arange(min_side, n - min_side + 1)
    left = csum[k - 1] / k
    right = (csum[-1] - csum[k - 1]) / (n - k)
    gain = k * (n - k) / n * (left - right) ** 2  # what a split at k removes from the SSE
    split = int(k[int(np.argmax(gain))])
    residual[:split] -= residual[:split].mean()
    residual[split:] -= residual[split:].mean()
    return residual


def mad(x: FloatArray, centre: float | None = None) -> float:
    """Median absolute deviation of finite ``x`` from ``centre`` (its median by default),
    with one working copy of ``x``."""
    n = int(x.size)
    if n == 0:
        return math.nan
    c = median(x) if centre is None else centre
    d = np.subtract(x, c)
    np.abs(d, out=d)
    d.partition(n // 2)
    return _middle(d, n)


def lag1_autocorrelation(x: FloatArray) -> float:
    """Lag-1 autocorrelation of ``x`` about its mean (the biased, always-|r|<=1 estimator).

    NaN for fewer than 3 values or a constant series (no variation, nothing to correlate).
    The centred values are made a chunk at a time, never a copy of the whole series.
    """
    n = x.size
    if n < 3:
        return math.nan
    m = float(x.mean())
    denom = num = 0.0
    for lo in range(0, n, _INDEX_CHUNK):
        c = x[max(lo - 1, 0):lo + _INDEX_CHUNK] - m  # with the value before the chunk
        own = c[1:] if lo else c
        denom += float(own @ own)
        num += float(c[1:] @ c[:-1])
    if not denom > 0.0:
        return math.nan
    return num / denom


def ar1_coefficient(x: FloatArray) -> float:
    """A conservative AR(1) coefficient of ``x``: its lag-1 autocorrelation, corrected for
    small-sample bias, clipped to [0, RHO_MAX] and raised to its upper 95% bound.

    The sample autocorrelation about the sample mean is biased low by about (1 + 4 rho)/n
    (Marriott & Pope 1954), which in a 30-sample window of strongly correlated data would
    make the interval too narrow exactly where it matters most; (n r + 1)/(n - 4) undoes
    it. Negative values are set to 0: a sensor's error does not oscillate sample to
    sample, and claiming more information than there are samples is never safe.

    From 30 samples rho is known only to about +-0.2, and an underestimate narrows the
    interval: the upper bound (``RHO_UPPER_Z`` standard errors, sqrt((1 - r^2)/n)) keeps
    a short window's false alarms at the level a long one has, and fades as n grows.
    """
    return conservative_rho(lag1_autocorrelation(x), int(x.size))


def conservative_rho(r: float, n: int) -> float:
    """``ar1_coefficient``'s correction of a lag-1 estimate ``r`` from ``n`` values: small-
    sample bias undone, clipped to [0, RHO_MAX], raised to its upper 95 % bound."""
    if not math.isfinite(r):
        return math.nan
    if n > 8:
        r = (n * r + 1.0) / (n - 4.0)
    r = min(max(r, 0.0), RHO_MAX)
    return min(r + RHO_UPPER_Z * math.sqrt((1.0 - r * r) / n), RHO_MAX)


def semivariance(x: FloatArray, lag: int) -> float:
    """gamma(lag) = mean((x[i + lag] - x[i])^2) / 2; NaN with too few values."""
    if x.size <= lag:
        return math.nan
    d = x[lag:] - x[:-lag]
    return float(d @ d) / (2.0 * d.size)


def white_noise_std(x: FloatArray, *, upper: bool = False) -> float:
    """The std of the white noise riding on ``x``: the nugget of its variogram.

    A signal adds to gamma(k) a part that grows with the lag k (linearly for a random
    walk, quadratically for a smooth drift, as 1 - rho^k for AR(1)); white noise adds the
    same sigma^2 at every lag. Extrapolating gamma(1), gamma(2), gamma(3) to lag 0 with a
    quadratic, 3 gamma(1) - 3 gamma(2) + gamma(3), removes a smooth or random-walk signal
    exactly and leaves (1 - rho)^3 of an AR(1)'s variance, a small overestimate. Clipped
    to [0, gamma(1)]: never more noise than the successive differences hold. NaN for fewer
    than 8 values.

    ``upper``: the estimate's one-sided 99% upper bound instead. For white noise each
    gamma(k) has a relative standard error of about sqrt(2/n), and the extrapolation's
    weights (3, 3, 1) make it sqrt(38/n) (taking the three as independent, a fair
    approximation): a day of minute data knows the noise variance to about 16%, an hour's
    to about 80%. Still never more than gamma(1)."""
    point, bound = white_noise_bounds(x)
    return bound if upper else point


def white_noise_bounds(x: FloatArray) -> tuple[float, float]:
    """``white_noise_std`` and its upper bound from one pass over the variogram (the audit
    wants both: the point for the AR(1) line's allowance, the bound for the gain's)."""
    if x.size < 8:
        return math.nan, math.nan
    g1, g2, g3 = semivariance(x, 1), semivariance(x, 2), semivariance(x, 3)
    nugget = max(3.0 * g1 - 3.0 * g2 + g3, 0.0)
    raised = nugget * (1.0 + Z_ONE_SIDED_1PCT * math.sqrt(38.0 / x.size))
    return math.sqrt(min(nugget, g1)), math.sqrt(min(raised, g1))


def effective_size(n: int, rho: float) -> float:
    """Effective sample size of the mean of n values of an AR(1) series with coefficient rho.

    var(mean) = sigma^2/n * [(1+rho)/(1-rho) - 2 rho (1 - rho^n) / (n (1-rho)^2)], the
    exact finite-n form, which tends to the textbook n(1-rho)/(1+rho) for long series.
    Bounded to [2, n] (and n when rho is undefined, e.g. a constant difference).
    """
    if n < 2:
        return float(n)
    if not math.isfinite(rho) or rho <= 0.0:
        return float(n)
    rho = min(rho, RHO_MAX)
    factor = (1.0 + rho) / (1.0 - rho) - 2.0 * rho * (1.0 - rho**n) / (n * (1.0 - rho) ** 2)
    return min(max(n / factor, 2.0), float(n))


def effective_n(x: FloatArray) -> float:
    """How many independent samples the mean of ``x`` is worth: the smaller of
    ``effective_size`` from its own (bias-corrected, upper-bound) AR(1) coefficient and
    ``sequence_effective_size``.

    The AR(1) figure reads persistence off the lag-1 correlation alone, and white noise
    added to a slow wander (a reference's reading noise in a device's difference from it)
    lowers that correlation without shortening the wander: a healthy hygrometer whose
    error wanders with a time constant of eight minutes, seen through a reference with a
    third of a unit of white noise, showed lag-1 0.88 for a true 0.97 and claimed 40
    independent samples in three hours where there are about 11, enough to make a chance
    alignment of the wander with the reference's trend a "certain" gain of 1.9. The
    initial positive sequence sums the correlations at every lag until they die out, so it
    sees the wander whatever the white noise on top; the smaller of the two is kept, so
    neither model's blind spot can claim evidence the data do not hold."""
    return min(effective_size(int(x.size), ar1_coefficient(x)), sequence_effective_size(x))


SEQUENCE_NOISE_Z = 2.0
"""Standard errors a pair of autocorrelations must clear to count as persistence."""


def sequence_effective_size(x: FloatArray) -> float:
    """n / tau of ``x`` (bounded to [2, n]), tau = 1 + 2 sum of its autocorrelations,
    summed by Geyer's (1992) initial positive sequence: pairs of consecutive
    autocorrelations while their sum stays clearly positive (``SEQUENCE_NOISE_Z``), made
    non-increasing (the standard estimator of the integrated autocorrelation time for a
    stationary series). ``n`` when
    the series is constant or too short to say.

    The sequence reads the correlations only up to its first pair that is not clearly
    positive: a few lags for a noisy difference, a few thousand for a slow wander. So
    they are computed in stages (``sequence_lags``), each only when the sequence runs on
    beyond the last: the first ``DIRECT_LAGS`` as dot products, then those to lag
    n / ``SEQUENCE_FIRST_SHARE`` (an FFT of n plus that many points), then all (one of
    2 n). The sum is the same whichever stage it ends in."""
    n = int(x.size)
    if n < 4:
        return float(n)
    # a pair of a white series' correlations is noise of std sqrt(2 / n): the sum stops at
    # the first pair that is not clearly above it (after the first, which holds rho_0 = 1),
    # or white noise would be charged for its chance positive correlations
    noise = SEQUENCE_NOISE_Z * math.sqrt(2.0 / n)
    for last in sequence_lags(n):
        rho = autocorrelations(x, last)
        if rho is None:
            return float(n)
        pairs = _pair_sums(rho)
        ended = np.flatnonzero(pairs[1:] <= noise)
        if ended.size:
            break
    kept = pairs[: ended[0] + 1] if ended.size else pairs
    if kept.size == 0:
        return float(n)
    kept = np.minimum.accumulate(kept)
    tau = -1.0 + 2.0 * float(kept.sum())
    if not tau > 0.0:
        return float(n)
    return min(max(n / tau, 2.0), float(n))


SEQUENCE_FIRST_SHARE = 4
"""``sequence_effective_size``'s second stage computes the correlations to lag n / this:
the slowest wanders in a day of 1-second differences ended their sequence before a fifth
of it."""


def sequence_lags(n: int) -> list[int]:
    """The last lags of ``sequence_effective_size``'s stages for n values, increasing, the
    last of them n - 1."""
    out: list[int] = []
    for last in (DIRECT_LAGS - 1, n // SEQUENCE_FIRST_SHARE, n - 1):
        if not out or min(last, n - 1) > out[-1]:
            out.append(min(last, n - 1))
    return out


def _pair_sums(rho: FloatArray) -> FloatArray:
    """rho_0 + rho_1, rho_2 + rho_3, ...: the sums of consecutive pairs (an odd last
    term, whose partner is not at hand, left out)."""
    m = rho.size - rho.size % 2
    return np.asarray(rho[:m].reshape(-1, 2).sum(axis=1))


DIRECT_LAGS = 32
"""Up to this many lags ``lagged_products`` takes plain dot products (some 15 us each on a
day of 1-second values); beyond, one FFT (1.5-3 ms) is cheaper."""


def autocorrelations(x: FloatArray, max_lag: int | None = None) -> FloatArray | None:
    """The sample autocorrelations of ``x`` at lags 0..``max_lag`` (all, n - 1, by
    default): the biased estimator sum_t c_t c_(t+k) / sum_t c_t^2 of the centred series
    c; None for a constant series.

    The callers need only the lags before the correlations die out or their weights
    vanish, mostly a few hundred of a day's 86,400, and ``lagged_products`` spends only
    what those cost."""
    n = int(x.size)
    last = n - 1 if max_lag is None else max(min(max_lag, n - 1), 0)
    acov = lagged_products(x, last, about=float(x.mean()))
    if not acov[0] > 0.0:
        return None
    return np.asarray(acov / acov[0])


def lagged_products(c: FloatArray, last: int, *, about: float = 0.0) -> FloatArray:
    """sum_t c_t c_(t+k) for the lags k = 0..``last`` (less than c's length), c taken
    less ``about`` (the centred series is then made only where it is read: in the padded
    buffer of the FFT, not as a copy besides it). ``c`` may be a block of series (along
    its last axis: each row's products are those of the row alone).

    Up to ``DIRECT_LAGS`` lags they are dot products; more take an FFT zero padded to
    n + last (circular correlation at that length wraps nothing into lags 0..last) and
    rounded up to scipy's ``next_fast_len``, a length of small prime factors: all of a
    day's lags (2 n - 1 = 172,799) take 172,800 points where the next power of two was
    262,144, and a few hundred lags barely more than n."""
    n = int(c.shape[-1])
    if c.ndim > 1 and last < DIRECT_LAGS:
        return np.array([lagged_products(row, last, about=about) for row in c])
    if last < DIRECT_LAGS:
        if about != 0.0:
            c = c - about
        return np.array([float(c[k:] @ c[: n - k]) for k in range(last + 1)])
    length = sfft.next_fast_len(n + last, real=True)
    padded = np.zeros((*c.shape[:-1], length))  # a block of series: one batched transform
    np.subtract(c, about, out=padded[..., :n])
    spectrum = sfft.rfft(padded, axis=-1, overwrite_x=True)
    del padded
    return products_from_spectrum(spectrum, length, last, overwrite=True)


def products_from_spectrum(spectrum: np.ndarray, length: int, last: int, *,
                           overwrite: bool = False) -> FloatArray:
    """``lagged_products`` of a series from its real FFT zero padded to ``length`` (at
    least its size plus ``last``, so nothing wraps): the same numbers as the FFT route of
    ``lagged_products`` at that length, for a caller that has the spectrum already.
    ``overwrite``: the spectrum is the caller's to spend (|X|^2 is written over it: two
    arrays fewer alive at the inverse FFT, the core's memory peak)."""
    power = np.square(spectrum.real)
    power += np.square(spectrum.imag)
    if overwrite:
        spectrum.real, spectrum.imag = power, 0.0
        del power
    else:
        spectrum = power.astype(np.complex128)
    return np.asarray(sfft.irfft(spectrum, length, axis=-1, overwrite_x=True)[..., : last + 1])


def slope_effective_size(regressor: FloatArray, noise_rho: float) -> float:
    """Independent samples an OLS slope on ``regressor`` is worth under AR(1) noise of
    coefficient ``noise_rho``: n / tau, tau = 1 + 2 sum_k rho_x(k) noise_rho^k (Bartlett's
    variance factor of a slope), rho_x the regressor's own sample autocorrelations,
    summed as Geyer's initial positive sequence (pairs of terms while their sum is
    positive, made non-increasing) so that the sample correlations' negative tail at long
    lags (a mean-centred window's correlations sum to -1/2) does not cancel the real
    persistence. Bounded to [2, n]; ``n`` where either is undefined.

    The regressor's correlations are taken as they are, not as an AR(1) of its lag-1
    value: a smooth reference read with white noise has lag-1 0.9 and keeps nearly that
    at every lag, where an AR(1) of 0.9 would have forgotten it in twenty readings.

    Only the lags whose weight noise_rho^k can still count are read (``weighted_lags``):
    the sum beyond them is below ``WEIGHT_TAIL`` whatever the correlations, where the
    full sum's own rounding is larger; a noise_rho of 0.6 reads lags 0-83 of 86,400."""
    n = int(regressor.size)
    if n < 4 or not math.isfinite(noise_rho) or noise_rho <= 0.0:
        return float(n)
    q = min(noise_rho, RHO_MAX)
    lags = weighted_lags(q)
    return slope_effective_size_under(regressor, np.power(q, np.arange(lags + 1)))


def slope_effective_size_under(regressor: FloatArray, noise_acf: FloatArray) -> float:
    """``slope_effective_size`` under noise of any autocorrelation sequence ``noise_acf``
    (lags 0, 1, ...; its first term 1): Bartlett's tau = 1 + 2 sum_k rho_x(k) noise_acf(k)
    over the lags given, summed as Geyer's initial positive sequence. Bounded to [2, n]."""
    n = int(regressor.size)
    if n < 4 or noise_acf.size < 2:
        return float(n)
    rho = autocorrelations(regressor, int(noise_acf.size) - 1)
    if rho is None:
        return float(n)
    terms = rho * noise_acf[:rho.size]
    pairs = _pair_sums(terms)
    ended = np.flatnonzero(pairs <= 0.0)
    kept = np.minimum.accumulate(pairs[: ended[0]] if ended.size else pairs)
    tau = -1.0 + 2.0 * float(kept.sum())
    if not tau > 0.0:
        return float(n)
    return min(max(n / tau, 2.0), float(n))


def interval_mean_acf(phi: float, per_interval: float, lags: int) -> FloatArray:
    """The autocorrelations, at lags 0..``lags`` intervals, of the means over consecutive
    intervals of ``per_interval`` readings of an AR(1) series of coefficient ``phi``.

    Over intervals of m readings the means of an AR(1) are no AR(1): with
    c = phi (1 - phi^m)^2 / (1 - phi)^2 and v = m (1 + phi) / (1 - phi)
    - 2 phi (1 - phi^m) / (1 - phi)^2 (m^2 times the mean's variance, in units of the
    series'), the lag-k autocorrelation is c phi^(m (k - 1)) / v: a noise whose
    correlation time is half an hour leaves hourly means 0.36 correlated at lag 1 and
    0.06 at lag 2 (minute readings, phi 0.97). Lag 0 is 1; for phi <= 0 every other lag is
    0 (white noise: independent means)."""
    out = np.zeros(max(lags, 0) + 1)
    out[0] = 1.0
    m = max(float(per_interval), 1.0)
    if not (math.isfinite(phi) and phi > 0.0) or lags < 1:
        return out
    phi = min(phi, RHO_MAX)
    whole = phi ** m
    c = phi * (1.0 - whole) ** 2 / (1.0 - phi) ** 2
    v = m * (1.0 + phi) / (1.0 - phi) - 2.0 * phi * (1.0 - whole) / (1.0 - phi) ** 2
    if not v > 0.0:
        return out
    out[1:] = (c / v) * np.power(whole, np.arange(lags, dtype=np.float64))
    return out


def equivalent_ar1(n: int, n_eff: float) -> float:
    """The AR(1) coefficient whose integrated autocorrelation time n / n_eff matches an
    effective sample size: (tau - 1) / (tau + 1), in [0, RHO_MAX]. A series whose
    persistence was read by its whole correlation sequence (``effective_n``) carried to
    another time scale as the AR(1) of the same memory."""
    if not (n > 0 and n_eff > 0.0):
        return math.nan
    tau = max(n / n_eff, 1.0)
    return min((tau - 1.0) / (tau + 1.0), RHO_MAX)


WEIGHT_TAIL = 1e-18
"""What the lags ``slope_effective_size`` leaves out may add to its sum at most: |rho| <= 1,
so that is the weights' own tail, sum_(k > K) q^k = q^(K+1) / (1 - q). A sum of at least
rho_0 = 1 rounds by 1e-16 already."""


def weighted_lags(q: float) -> int:
    """The last lag K whose weight q^K ``slope_effective_size`` needs: the smallest with
    q^(K+1) / (1 - q) <= ``WEIGHT_TAIL``, rounded up to an odd K so the last pair of
    terms is whole (0 < q < 1)."""
    k = max(math.ceil(math.log(WEIGHT_TAIL * (1.0 - q)) / math.log(q)) - 1, 1)
    return k | 1


def confidence_z(n_eff: float, one_sided: float = ONE_SIDED_LEVEL) -> float:
    """The Student-t quantile for ``n_eff - 1`` degrees of freedom at ``one_sided``.

    With a handful of effective samples the standard deviation is itself uncertain; the t
    quantile widens the interval for it and tends to ``Z_ONE_SIDED_1PCT`` as n_eff grows,
    so a short window is not judged more harshly, nor a long one more leniently.
    """
    if not n_eff > 1.0:
        return math.inf
    return float(stdtrit(n_eff - 1.0, one_sided))


@dataclass(frozen=True, slots=True)
class MeanInterval:
    """A mean with its autocorrelation-aware standard error."""

    mean: float
    se: float
    """sd / sqrt(n_eff), sd corrected for the autocorrelation's bias of the sample std."""
    n_eff: float

    def bounds(self, z: float | None = None) -> tuple[float, float]:
        """One-sided 99% bounds (t quantile for n_eff - 1 degrees of freedom by default)."""
        q = confidence_z(self.n_eff) if z is None else z
        return self.mean - q * self.se, self.mean + q * self.se


def mean_interval(x: FloatArray, *, overwrite: bool = False) -> MeanInterval:
    """Mean of ``x`` and its standard error from the effective sample size.

    The error is taken from the scatter of ``x`` about its straight-line trend in time, not
    about its mean: a device whose error ramps from 0 to 5 degC over the window is a fault,
    not evidence of wandering noise, and measuring the spread and persistence about the
    mean would make the ramp itself widen the interval until no drift could ever fail.
    The sample variance of an autocorrelated series is biased low (its terms are measured
    about a line that follows them): E[s^2] = sigma^2 (n - n/n_eff) / (n - 1), so s^2 is
    divided by that factor. With fewer than three values the error is unknown (NaN), never
    zero: so few numbers cannot show that they are beyond tolerance with confidence.

    ``overwrite`` lets the detrending happen in ``x`` itself (its caller is done with it),
    so the whole estimate needs one working array besides.
    """
    n = int(x.size)
    if n == 0:
        return MeanInterval(math.nan, math.nan, 0.0)
    mean = float(x.mean())
    if n < 3:
        return MeanInterval(mean, math.nan, float(n))
    noise = detrended(x, out=x if overwrite else None)
    n_eff = effective_n(noise)
    var = float(noise @ noise) / max(n - n / n_eff - 1.0, 1.0)
    return MeanInterval(mean, math.sqrt(var / n_eff), n_eff)


def detrended(x: FloatArray, out: FloatArray | None = None) -> FloatArray:
    """``x`` less its least-squares line over its index (what is left to call noise), in
    ``out`` (may be ``x``) when given. The index is made a chunk at a time."""
    n = x.size
    c = np.subtract(x, x.mean(), out=out)
    centre = (n - 1) / 2.0
    spread = n * (n * n - 1.0) / 12.0  # sum of (i - centre)^2, exact in floating point
    if not spread > 0.0:
        return c
    along = 0.0
    for lo in range(0, n, _INDEX_CHUNK):
        i = np.arange(lo, min(lo + _INDEX_CHUNK, n), dtype=np.float64)
        i -= centre
        along += float(i @ c[lo:lo + i.size])
    slope = along / spread
    for lo in range(0, n, _INDEX_CHUNK):
        i = np.arange(lo, min(lo + _INDEX_CHUNK, n), dtype=np.float64)
        i -= centre
        i *= slope
        c[lo:lo + i.size] -= i
    return c


_INDEX_CHUNK = 16384


def deming(x: FloatArray, y: FloatArray, variance_ratio: float) -> tuple[float, float]:
    """(slope, intercept) of the Deming (errors-in-variables) line of ``y`` on ``x``.

    ``variance_ratio`` is lambda = var(error of y) / var(error of x). As lambda grows the
    fit approaches OLS of y on x (an exact x); lambda = 1 is orthogonal regression. This
    is the maximum-likelihood line when both errors are Gaussian with that ratio, and the
    line orthogonal distance regression fits with sx, sy of that ratio (the tests check it
    against total least squares by SVD). NaN when x or y does not vary.
    """
    n = int(x.size)
    if n < 2 or not (variance_ratio > 0.0):
        return math.nan, math.nan
    mx, my = float(x.mean()), float(y.mean())
    xc, yc = x - mx, y - my
    sxx, syy, sxy = float(xc @ xc), float(yc @ yc), float(xc @ yc)
    if sxy == 0.0 or sxx == 0.0:
        return math.nan, math.nan
    lam = variance_ratio
    d = syy - lam * sxx
    root = math.hypot(d, 2.0 * math.sqrt(lam) * sxy)
    # (d + root) / (2 sxy), rewritten for d < 0 so a large lambda does not cancel
    slope = (d + root) / (2.0 * sxy) if d >= 0.0 else 2.0 * lam * sxy / (root - d)
    return slope, my - slope * mx


def huber_line(x: FloatArray, y: FloatArray, k: float = HUBER_K) -> tuple[float, float]:
    """(slope, intercept) of a Huber M-estimate line of ``y`` on ``x`` by IRLS.

    Residuals within ``k`` robust sigmas (MAD of the current residuals, re-estimated each
    pass: the first, least-squares residuals are inflated by the very outliers to resist)
    keep full weight; beyond it their weight falls as 1/|r|, so a burst of outliers moves
    the line by a bounded amount instead of dragging it. Each pass is a weighted least
    squares plus a median, O(n), in two working arrays; it stops when the slope settles
    or after ``HUBER_MAX_ITER`` passes.
    """
    n = int(x.size)
    if n < 3 or float(np.ptp(x)) == 0.0:
        return math.nan, math.nan
    r, w = np.empty(n), np.ones(n)
    centre = float(x.mean())
    slope, intercept = _weighted_line(x, y, w, centre, r)
    for _ in range(HUBER_MAX_ITER):
        np.multiply(x, slope, out=r)
        r += intercept
        np.subtract(y, r, out=r)
        np.copyto(w, r)  # w is free until the weights: the medians' working copy
        w.partition(n // 2)
        np.subtract(r, _middle(w, n), out=w)
        np.abs(w, out=w)
        w.partition(n // 2)
        scale = MAD_TO_SIGMA * _middle(w, n)
        if not scale > 0.0:
            break  # most points on the line: it is the answer
        cut = k * scale
        np.abs(r, out=w)
        np.maximum(w, cut, out=w)
        np.divide(cut, w, out=w)
        new_slope, new_intercept = _weighted_line(x, y, w, centre, r)  # r is done with
        done = abs(new_slope - slope) <= HUBER_RTOL * max(abs(slope), 1e-12)
        slope, intercept = new_slope, new_intercept
        if done:
            break
    return slope, intercept


def outlier_z(n: int, false_rate: float = OUTLIER_FALSE_RATE) -> float:
    """Robust z beyond which a residual is an outlier among ``n`` Gaussian ones: the
    two-sided Bonferroni bound, so all ``n`` stay inside it with probability 1 - rate."""
    return float(ndtri(1.0 - false_rate / (2.0 * max(n, 1))))


def has_outliers(residuals: FloatArray) -> bool:
    """Whether least-squares ``residuals`` hold an outlier: one further from their median
    than ``outlier_z(n)`` robust sigmas (MAD), which Gaussian residuals, autocorrelated or
    not, reach in under 1% of windows.

    The metrics fit the Huber line only then. Without outliers both fits estimate the same
    line and least squares does so with the smaller variance, so the IRLS passes (a median
    each, on a day of 1-second data most of an audit's time) would buy nothing; with one,
    the Huber fit is computed in full. A perfect fit (MAD 0) has none to resist either.
    """
    n = int(residuals.size)
    if n < 3:
        return False
    centre = median(residuals)
    scale = MAD_TO_SIGMA * mad(residuals, centre)
    if not scale > 0.0:
        return False
    reach = max(float(residuals.max()) - centre, centre - float(residuals.min()))
    return reach > outlier_z(n) * scale


def _weighted_line(
    x: FloatArray, y: FloatArray, w: FloatArray, centre: float, scratch: FloatArray
) -> tuple[float, float]:
    """Weighted least squares line, its sums taken about ``centre`` (near the mean of
    ``x``) for stability; ``scratch`` holds w * (x - centre)."""
    np.subtract(x, centre, out=scratch)
    scratch *= w
    sw = float(w.sum())
    s1 = float(scratch.sum())  # sum w (x - centre)
    my = float(w @ y) / sw
    sxx = float(scratch @ x) - centre * s1 - s1 * s1 / sw
    if not sxx > 0.0:
        return math.nan, math.nan
    slope = (float(scratch @ y) - s1 * my) / sxx
    mx = centre + s1 / sw
    return slope, my - slope * mx


GLS_MAX_DILUTION = 0.5
"""The share of the quasi-differenced reference's variance its white noise may hold before
the AR(1) line is no measurement of the device (``cochrane_orcutt``); as ``MAX_DILUTION``
for the least-squares gain."""

GLS_MAX_ITER = 20
"""Cochrane-Orcutt passes; the AR coefficient settles in a handful on sensor data."""


@dataclass(frozen=True, slots=True)
class GlsLine:
    """A line fitted under AR(1) noise (``cochrane_orcutt``)."""

    gain: float
    offset: float
    gain_se: float
    """From the quasi-differenced regression, whose errors are close to white."""
    rho: float
    """The noise's AR(1) coefficient, estimated jointly with the line."""


def cochrane_orcutt(x: FloatArray, y: FloatArray,
                    x_noise: float = 0.0) -> GlsLine:
    """The line of ``y`` on ``x`` fitted as if the noise were AR(1) (iterated
    Cochrane-Orcutt): estimate rho from the residuals, regress y_t - rho y_{t-1} on
    x_t - rho x_{t-1}, re-estimate rho from the new line's residuals, until it settles.

    Why: when the noise wanders as slowly as the reference (two persistent series), OLS
    absorbs the part of the wander that happens to run with the reference into its slope
    (spurious regression, Granger & Newbold 1974), and its residuals, having lost that
    part, look nearly white: the line looks certain. Quasi-differencing takes the slow
    part out of both series, so the slope rests on their short-term co-movement, which a
    wander cannot fake. A real gain error acts at every time scale and leaves the two
    estimates alike; a slope the wander made leaves them apart (a healthy hygrometer read
    every 3 minutes: OLS 1.45, this 0.83). NaN fields where the line is undefined.

    ``x_noise``: the white noise of ``x`` (std). Quasi-differencing keeps all of it
    ((1 + rho^2) of its variance) while taking most of a smooth reference's signal out, so
    the slope is attenuated by that share of var(x_t - rho x_{t-1}) (errors in
    variables): the gain is corrected by it, and where it is more than
    ``GLS_MAX_DILUTION`` the line is undefined (NaN gain and rho): it would measure the
    reference's noise, not the device (a span error of 1.15 over a reference with
    0.4 %RH of reading noise came out near 0, with a rho of 0.99 from the residuals that
    then carried the device's whole signal)."""
    n = int(x.size)
    nan = math.nan
    if n < 5 or float(np.ptp(x)) == 0.0:
        return GlsLine(nan, nan, nan, nan)
    mx, my = float(x.mean()), float(y.mean())
    moments = _PairMoments.of(x, y, mx, my)
    ols = moments.ols
    rho, se, gain = 0.0, nan, ols
    for _ in range(GLS_MAX_ITER):
        new_rho = moments.residual_rho(gain - ols)
        sxx, sxu, suu = moments.quasi_differenced(new_rho)
        if not sxx > 0.0:
            return GlsLine(nan, nan, nan, new_rho)
        gain = ols + sxu / sxx
        se = math.sqrt(max(suu - sxu * sxu / sxx, 0.0) / max(n - 4, 1) / sxx)
        settled = abs(new_rho - rho) < 1e-4
        rho = new_rho
        if settled:
            break
    if x_noise > 0.0:
        dilution = (1.0 + rho * rho) * x_noise * x_noise / (sxx / max(n - 2, 1))
        if dilution > GLS_MAX_DILUTION:
            return GlsLine(nan, nan, nan, nan)
        gain /= 1.0 - dilution
        se /= 1.0 - dilution
    return GlsLine(gain, my - gain * mx, se, rho)


@dataclass(frozen=True, slots=True)
class _PairMoments:
    """What every Cochrane-Orcutt pass needs of the centred regressor ``a`` and the
    least-squares residuals ``u``, summed once (``of``), so that a pass costs a few
    multiplications instead of six passes over the pairs.

    A line of gain ``ols + delta`` leaves the residuals u - delta a, and the pass's
    regression is of u's quasi-differences on a's (y's are u's plus ``ols`` times a's), so
    every sum a pass takes is a quadratic in delta or in rho over these. They are taken
    in first differences (d_t = a_t - a_(t-1)) and lagged values rather than as lag-0
    and lag-1 products: a_t - rho a_(t-1) = d_t + (1 - rho) a_(t-1), and with rho near 1
    on a smooth reference the products' form would be the small difference of large
    sums, here it is a sum of terms of its own size."""

    # aa, uu, ua: products over all n values; dd_*: of the first differences d_a, d_u;
    # da_a0 and the like: of a difference with the value before it (t = 1..n-1);
    # sum_a0, sum_u0: the sums of those earlier values; ols: u's line on a
    n: int
    ols: float
    aa: float
    uu: float
    ua: float
    dd_a: float
    dd_au: float
    dd_u: float
    da_a0: float
    du_u0: float
    da_u0: float
    du_a0: float
    sum_a0: float
    sum_u0: float
    a_first: float
    a_last: float
    u_first: float
    u_last: float

    @classmethod
    def of(cls, x: FloatArray, y: FloatArray, mx: float, my: float) -> _PairMoments:
        """The sums of a = x - ``mx`` and of u, the residuals of y - ``my`` about its
        least-squares line on a, made ``_INDEX_CHUNK`` pairs at a time (two passes: the
        line, then the sums), so that no copy of the whole series is ever made: this
        was the audit's memory peak (a, u and both their differences at once)."""
        n = int(x.size)
        aa = au = 0.0
        for lo in range(0, n, _INDEX_CHUNK):
            a = x[lo:lo + _INDEX_CHUNK] - mx
            u = y[lo:lo + _INDEX_CHUNK] - my
            aa += float(a @ a)
            au += float(a @ u)
        ols = au / aa
        sums = np.zeros(11)  # uu, ua, dd_a, dd_au, dd_u, da_a0, du_u0, da_u0, du_a0, sum_a0, sum_u0
        a_first = u_first = math.nan
        for lo in range(0, n, _INDEX_CHUNK):
            # this chunk's pairs and the one before it: its differences start at the chunk
            a = x[max(lo - 1, 0):lo + _INDEX_CHUNK] - mx
            u = y[max(lo - 1, 0):lo + _INDEX_CHUNK] - my
            a_ols = a * ols
            u -= a_ols  # the least-squares residuals
            del a_ols
            own_a, own_u = (a[1:], u[1:]) if lo else (a, u)
            da, du = np.diff(a), np.diff(u)
            a0, u0 = a[:-1], u[:-1]
            sums += (float(own_u @ own_u), float(own_u @ own_a), float(da @ da),
                     float(da @ du), float(du @ du), float(da @ a0), float(du @ u0),
                     float(da @ u0), float(du @ a0), float(a0.sum()), float(u0.sum()))
            if not lo:
                a_first, u_first = float(a[0]), float(u[0])
        a_last, u_last = float(a[-1]), float(u[-1])
        uu, ua, dd_a, dd_au, dd_u, da_a0, du_u0, da_u0, du_a0, sum_a0, sum_u0 = (
            float(v) for v in sums)
        return cls(
            n=n, ols=ols, aa=aa, uu=uu, ua=ua, dd_a=dd_a, dd_au=dd_au, dd_u=dd_u,
            da_a0=da_a0, du_u0=du_u0, da_u0=da_u0, du_a0=du_a0, sum_a0=sum_a0,
            sum_u0=sum_u0, a_first=a_first, a_last=a_last, u_first=u_first, u_last=u_last,
        )

    def residual_rho(self, delta: float) -> float:
        """The lag-1 autocorrelation of the residuals e = u - delta a, clipped to
        [0, ``RHO_MAX``] (0 when they are all zero), as 1 - (sum of squared successive
        differences + e_0^2 + e_(n-1)^2) / (2 sum e^2): the same number as
        sum e_t e_(t-1) / sum e^2, and accurate near 1 where the persistence is."""
        ee = self.uu - 2.0 * delta * self.ua + delta * delta * self.aa
        if not ee > 0.0:
            return 0.0
        steps = self.dd_u - 2.0 * delta * self.dd_au + delta * delta * self.dd_a
        first = self.u_first - delta * self.a_first
        last = self.u_last - delta * self.a_last
        r = 1.0 - (steps + first * first + last * last) / (2.0 * ee)
        return min(max(r, 0.0), RHO_MAX)

    def quasi_differenced(self, rho: float) -> tuple[float, float, float]:
        """(sxx, sxu, suu): the centred sums of squares and products of
        x_t - rho x_(t-1) and u_t - rho u_(t-1) over the n - 1 pairs."""
        s, m = 1.0 - rho, self.n - 1
        a0a0 = self.aa - self.a_last * self.a_last
        u0u0 = self.uu - self.u_last * self.u_last
        a0u0 = self.ua - self.a_last * self.u_last
        xx = self.dd_a + 2.0 * s * self.da_a0 + s * s * a0a0
        uu = self.dd_u + 2.0 * s * self.du_u0 + s * s * u0u0
        xu = self.dd_au + s * (self.da_u0 + self.du_a0) + s * s * a0u0
        sx = self.a_last - self.a_first + s * self.sum_a0
        su = self.u_last - self.u_first + s * self.sum_u0
        return xx - sx * sx / m, xu - sx * su / m, uu - su * su / m
