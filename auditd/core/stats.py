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
from scipy.special import stdtrit

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


def lag1_autocorrelation(x: FloatArray) -> float:
    """Lag-1 autocorrelation of ``x`` about its mean (the biased, always-|r|<=1 estimator).

    NaN for fewer than 3 values or a constant series (no variation, nothing to correlate).
    """
    if x.size < 3:
        return math.nan
    c = x - x.mean()
    denom = float(c @ c)
    if not denom > 0.0:
        return math.nan
    return float(c[1:] @ c[:-1]) / denom


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
    r = lag1_autocorrelation(x)
    n = int(x.size)
    if not math.isfinite(r):
        return math.nan
    if n > 8:
        r = (n * r + 1.0) / (n - 4.0)
    r = min(max(r, 0.0), RHO_MAX)
    return min(r + RHO_UPPER_Z * math.sqrt((1.0 - r * r) / n), RHO_MAX)


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
    """``effective_size`` of ``x`` from its own (bias-corrected) AR(1) coefficient."""
    return effective_size(int(x.size), ar1_coefficient(x))


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


def mean_interval(x: FloatArray) -> MeanInterval:
    """Mean of ``x`` and its standard error from the effective sample size.

    The error is taken from the scatter of ``x`` about its straight-line trend in time, not
    about its mean: a device whose error ramps from 0 to 5 degC over the window is a fault,
    not evidence of wandering noise, and measuring the spread and persistence about the
    mean would make the ramp itself widen the interval until no drift could ever fail.
    The sample variance of an autocorrelated series is biased low (its terms are measured
    about a line that follows them): E[s^2] = sigma^2 (n - n/n_eff) / (n - 1), so s^2 is
    divided by that factor. With fewer than three values the error is unknown (NaN), never
    zero: so few numbers cannot show that they are beyond tolerance with confidence.
    """
    n = int(x.size)
    if n == 0:
        return MeanInterval(math.nan, math.nan, 0.0)
    mean = float(x.mean())
    if n < 3:
        return MeanInterval(mean, math.nan, float(n))
    noise = detrended(x)
    n_eff = effective_n(noise)
    var = float(noise @ noise) / max(n - n / n_eff - 1.0, 1.0)
    return MeanInterval(mean, math.sqrt(var / n_eff), n_eff)


def detrended(x: FloatArray) -> FloatArray:
    """``x`` less its least-squares line over its index (what is left to call noise)."""
    i = np.arange(x.size, dtype=np.float64)
    i -= i.mean()
    c = x - x.mean()
    return np.asarray(c - i * (float(i @ c) / float(i @ i)), dtype=np.float64)


def deming(x: FloatArray, y: FloatArray, variance_ratio: float) -> tuple[float, float]:
    """(slope, intercept) of the Deming (errors-in-variables) line of ``y`` on ``x``.

    ``variance_ratio`` is lambda = var(error of y) / var(error of x). As lambda grows the
    fit approaches OLS of y on x (an exact x); lambda = 1 is orthogonal regression. This
    is the maximum-likelihood line when both errors are Gaussian with that ratio, and the
    same line scipy.odr fits with sx, sy of that ratio. NaN when x or y does not vary.
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
    squares plus a median, O(n); it stops when the slope settles or after
    ``HUBER_MAX_ITER`` passes.
    """
    n = int(x.size)
    if n < 3 or float(np.ptp(x)) == 0.0:
        return math.nan, math.nan
    slope, intercept = _weighted_line(x, y, np.ones(n))
    for _ in range(HUBER_MAX_ITER):
        r = y - (slope * x + intercept)
        scale = MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r))))
        if not scale > 0.0:
            break  # most points on the line: it is the answer
        cut = k * scale
        w = cut / np.maximum(np.abs(r), cut)
        new_slope, new_intercept = _weighted_line(x, y, w)
        done = abs(new_slope - slope) <= HUBER_RTOL * max(abs(slope), 1e-12)
        slope, intercept = new_slope, new_intercept
        if done:
            break
    return slope, intercept


def _weighted_line(x: FloatArray, y: FloatArray, w: FloatArray) -> tuple[float, float]:
    """Weighted least squares line, centred on the weighted means for stability."""
    sw = float(w.sum())
    mx, my = float(w @ x) / sw, float(w @ y) / sw
    xc = x - mx
    wxc = w * xc
    sxx = float(wxc @ xc)
    if not sxx > 0.0:
        return math.nan, math.nan
    slope = float(wxc @ (y - my)) / sxx
    return slope, my - slope * mx
