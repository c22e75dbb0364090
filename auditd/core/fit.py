"""How far a device is from its reference: the numbers a verdict is judged on.

All figures use only the paired bins, so a gap in either stream never biases them; they
are in the sensor's canonical unit. Undefined figures are NaN here and ``None`` in JSON:
a number that cannot be computed must not look like a measurement.

Besides the point figures the metrics carry their uncertainty (``core.stats``): standard
errors from an effective sample size (the series are autocorrelated, so ``n`` overstates
the evidence), a Deming gain when the reference's own noise is known (OLS then
underestimates the gain), and a Huber gain that resists outliers. The contract's keys keep
their meaning: ``gain`` and ``offset`` are always the OLS line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from auditd.core.align import Aligned
from auditd.core.lag import LagEstimate, estimate_lag
from auditd.core.series import FloatArray
from auditd.core.stats import (
    RHO_UPPER_Z,
    ar1_coefficient,
    cochrane_orcutt,
    conservative_rho,
    deming,
    effective_n,
    effective_size,
    equivalent_ar1,
    has_outliers,
    huber_line,
    interval_mean_acf,
    lag1_autocorrelation,
    mean_interval,
    slope_effective_size,
    slope_effective_size_under,
    weighted_lags,
    white_noise_bounds,
)

SIGNIFICANT_DIGITS = 6

FLAT_RELATIVE = 1e-9
"""Spread below this share of a stream's magnitude is floating-point dust, not signal."""

DEVICE_NOISE_MIN_SHARE = 0.1
"""For the Deming variance ratio the device's noise variance is the residual scatter less
the reference's stated variance, but at least this share of the scatter: a certificate
uncertainty that seems to explain all the scatter includes systematic parts, not noise,
and a ratio near 0 would let the Deming slope run away."""


@dataclass(frozen=True, slots=True)
class LineFit:
    """Ordinary least squares of device on reference (the reference is the trusted x)."""

    n: int
    gain: float
    offset: float
    r2: float
    residual_std: float
    gain_se: float
    """Standard error of the gain assuming independent residuals (optimistic; see
    ``Metrics.gain_se`` for the autocorrelation-aware one)."""


@dataclass(frozen=True, slots=True)
class Metrics:
    n: int
    """Paired bins."""
    bias: float
    """mean(device - reference)."""
    gain: float
    """OLS slope of device on reference (CONTRACT.md's ``gain``; see ``gain_deming``)."""
    offset: float
    """OLS intercept (CONTRACT.md's ``offset``)."""
    rmse: float
    nrmse: float
    """rmse / |mean(reference)|, percent."""
    r2: float
    residual_std: float
    device_std: float
    reference_std: float
    device_coverage: float
    reference_coverage: float
    lag_s: float
    """NaN when no lag could be resolved, 0 when less than two intervals of the compared
    series (``LagEstimate.measured_s``)."""
    device_nulls: int = 0
    n_eff: float = math.nan
    """Effective sample size of the difference series (lag-1 autocorrelation, AR(1)):
    how many independent samples the bias interval is worth."""
    bias_se: float = math.nan
    """Standard error of ``bias`` from ``n_eff``."""
    bias_ci_low: float = math.nan
    bias_ci_high: float = math.nan
    """bias -/+ t*bias_se, t the 99% Student quantile for n_eff - 1 degrees of freedom
    (``stats.confidence_z``): each bound is a one-sided 99% bound, together a 98%
    interval. The bias check fails only when the whole interval is beyond tolerance.
    Against the peers' median, widened by the median's own error (``comparison_offset_u``,
    ``checks.bias_margin``)."""
    gain_se: float = math.nan
    """Standard error of the OLS gain, inflated for the residuals' autocorrelation (the
    reference is smooth, so the AR(1) variance factor of the residuals applies)."""
    gain_n_eff: float = math.nan
    """Effective sample size of the residuals about the line: what ``gain_se`` stands on,
    and the degrees of freedom (less the line's two) of the gain's interval."""
    reference_noise: float = math.nan
    """The reference's white reading noise (std, canonical unit) as its own data show it,
    at its 99% upper bound (``stats.white_noise_std``, the variogram's nugget). Against a
    reference that barely moves, that noise attenuates the OLS gain towards 0 by
    noise^2 / var(reference) (regression dilution), which the gain decision allows for
    (``checks.gain_range``)."""
    gain_deming: float = math.nan
    offset_deming: float = math.nan
    """Errors-in-variables line (``stats.deming``), only when the reference's uncertainty
    is known; the gain decision then uses it instead of the OLS ``gain``."""
    gain_gls: float = math.nan
    gain_gls_se: float = math.nan
    noise_rho: float = math.nan
    """The line fitted under AR(1) noise (``stats.cochrane_orcutt``): its gain, that
    gain's standard error and the noise's AR(1) coefficient. Where the device's noise
    wanders as slowly as the reference, the OLS ``gain`` can be the wander's chance
    alignment with the reference; this gain then lies elsewhere, and the gain decision
    (``checks.gain_evidence``) fails a stream on its gain only where both agree."""
    gain_robust: float = math.nan
    offset_robust: float = math.nan
    """Huber line (``stats.huber_line``) where the OLS residuals hold outliers
    (``stats.has_outliers``), else the OLS line itself, which then estimates the same line
    with less variance: differing from ``gain``, it shows an outlier-driven fit."""
    comparison_offset_u: float = math.nan
    comparison_rms_u: float = math.nan
    """Standard uncertainties of the comparison as a stand-in for the truth, where it is no
    instrument but the median of the device's peers (``consensus.PeerMedian``): of its
    level over the window, and its root-mean-square error over the bins. Each peer is
    itself off by up to its tolerance, so a healthy device can differ from a healthy
    median by more than its own tolerance; a failure must clear that too
    (``checks.bias_margin``, ``checks.rmse_beyond_comparison``). NaN against an
    instrument, whose uncertainty is its own business (``Reference.uncertainty``)."""

    def as_dict(self) -> dict[str, float | int | None]:
        """CONTRACT.md's metrics (n, bias, gain, offset, rmse, r2, lag_s) and the rest,
        rounded to 6 significant digits, ``None`` where undefined."""
        return {f.name: _json_number(getattr(self, f.name)) for f in fields(self)}


def _json_number(value: float | int) -> float | int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    x = float(value)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}") + 0.0  # + 0.0 turns -0.0 into 0.0


def held_at(x: FloatArray, value: float) -> np.ndarray:
    """Which of ``x`` are ``value`` to round-off (``FLAT_RELATIVE`` of its size): a device
    held at one value, whose bin means need not be bit-equal."""
    return np.asarray(np.abs(x - value) <= FLAT_RELATIVE * max(abs(value), 1e-300))


def is_flat(x: FloatArray) -> bool:
    """No variation beyond round-off (a bin mean of equal values need not be bit-equal)."""
    if x.size < 2:
        return True
    hi, lo = float(np.max(x)), float(np.min(x))
    return hi - lo <= FLAT_RELATIVE * max(abs(hi), abs(lo), 1e-300)


def fit_line(device: FloatArray, reference: FloatArray) -> LineFit:
    """OLS on paired arrays (no NaN), centred first for numerical stability.

    With a flat reference the slope is undefined, and the best fit is the device's mean,
    so the residual std is the device's std. With a flat device and a moving reference,
    r2 is 0 rather than undefined: the device follows none of the reference's variation.
    """
    return _fit(device, reference, keep_residuals=False)[0]


def fit_line_consuming(device: FloatArray, reference: FloatArray) -> LineFit:
    """``fit_line`` of two arrays the caller owns and is done with: they are centred in
    place instead of copied."""
    return _fit(device, reference, keep_residuals=False, overwrite=True)[0]


def _fit(
    device: FloatArray, reference: FloatArray, *, keep_residuals: bool, overwrite: bool = False
) -> tuple[LineFit, FloatArray | None, float, float]:
    """``fit_line`` and what the metrics reuse of its work: the residuals about the line
    (when asked for and defined) and the sums of squares of both centred streams."""
    n = int(device.size)
    nan = math.nan
    if n < 2:
        return LineFit(n, nan, nan, nan, nan, nan), None, nan, nan
    dev_mean, ref_mean = float(device.mean()), float(reference.mean())
    flat_ref, flat_dev = is_flat(reference), is_flat(device)
    dd = np.subtract(device, dev_mean, out=device if overwrite else None)
    rr = np.subtract(reference, ref_mean, out=reference if overwrite else None)
    sxx, syy, sxy = float(rr @ rr), float(dd @ dd), float(dd @ rr)
    if flat_ref:
        resid = math.sqrt(syy / (n - 1))
        return LineFit(n, nan, nan, nan, resid, nan), None, sxx, syy
    gain = sxy / sxx
    offset = float(dev_mean - gain * ref_mean)
    flat = flat_dev or syy * sxx == 0.0  # or so tiny its square underflows
    r2 = 0.0 if flat else min(1.0, sxy * sxy / (sxx * syy))
    sse = max(syy - gain * sxy, 0.0)
    resid_std = math.sqrt(sse / (n - 2)) if n > 2 else nan
    gain_se = resid_std / math.sqrt(sxx) if n > 2 else nan
    residuals = None
    if keep_residuals:
        rr *= gain
        dd -= rr  # device - (gain * reference + offset), from the centred streams
        residuals = dd
    return LineFit(n, gain, offset, r2, resid_std, gain_se), residuals, sxx, syy


def paired_arrays(aligned: Aligned) -> tuple[FloatArray, FloatArray]:
    """Device and reference values of the paired bins; the arrays themselves (read-only)
    when every bin is paired."""
    return _pairs(aligned)[:2]


def _pairs(aligned: Aligned) -> tuple[FloatArray, FloatArray, bool]:
    """``paired_arrays`` and whether they are copies the caller may overwrite."""
    keep = aligned.paired
    if keep.all():
        return np.asarray(aligned.device), np.asarray(aligned.reference), False
    return np.asarray(aligned.device)[keep], np.asarray(aligned.reference)[keep], True


def _paired_difference(aligned: Aligned) -> FloatArray:
    """device - reference over the paired bins (``paired_arrays``'s difference, made
    without copies of the pairs)."""
    keep = aligned.paired
    diff = np.subtract(aligned.device, aligned.reference)
    return diff if keep.all() else diff[keep]


def compute_metrics(
    aligned: Aligned,
    lag: LagEstimate | None = None,
    *,
    reference_uncertainty: float | None = None,
    robust: bool = True,
) -> Metrics:
    """Metrics of the aligned pair. ``lag`` saves a second estimate when the caller already
    has one; otherwise the lag is searched within a quarter of the window.

    ``reference_uncertainty`` is the reference's standard uncertainty in the canonical
    unit (``Reference.standard_uncertainty``), taken as the std of its reading noise; with
    it the Deming line is fitted, without it ``gain_deming`` is NaN. ``robust=False``
    leaves the robust line out (NaN), for the diagnosis's own looks at a window, which
    never read it.
    """
    if lag is None:
        lag = estimate_lag(aligned, (aligned.end - aligned.start) / 4)
    nan = math.nan
    # the difference first, before the pairs are copied: its effective size (an FFT of
    # 1.25 n and its spectrum) is the metrics' memory peak, the pairs' copies not alive yet
    diff = _paired_difference(aligned)
    n = int(diff.size)
    rmse = float(math.sqrt(diff @ diff / n)) if n else nan
    bias = mean_interval(diff, overwrite=True)
    del diff
    dev, ref, owned = _pairs(aligned)
    ref_mean = float(ref.mean()) if n else nan
    gain_deming, offset_deming = nan, nan
    if reference_uncertainty is not None:
        line = fit_line(dev, ref)
        gain_deming, offset_deming = deming_line(dev, ref, line, reference_uncertainty)
    # the AR(1) line's errors-in-variables allowance takes the reference's noise as it is
    # (the point estimate), the least-squares one its upper bound (``checks.gain_range``)
    noise_point, ref_noise = white_noise_bounds(ref)
    gls = cochrane_orcutt(ref, dev, noise_point if n >= 8 else 0.0)
    slope_n_eff = slope_effective_size(ref, conservative_rho(gls.rho, n))
    # the fit centres copies of the pairs in place; the robust fit, rarely needed, re-pairs
    line, resid, sxx, syy = _fit(dev, ref, keep_residuals=True, overwrite=owned)
    if owned:
        del dev, ref
    low, high = bias.bounds() if n > 1 else (nan, nan)
    gain_se, gain_n_eff = effective_gain_se(
        line, resid, slope_n_eff, fine_n_eff=fine_gain_samples(aligned, line, resid))
    outliers = False
    if robust and resid is not None:
        outliers = has_outliers(resid)
    del resid
    gain_robust, offset_robust = nan, nan
    if robust and math.isfinite(line.gain):
        gain_robust, offset_robust = (line.gain, line.offset)
        if outliers:
            x, y, _ = _pairs(aligned)
            gain_robust, offset_robust = huber_line(y, x)
    return Metrics(
        n=n,
        bias=bias.mean,
        gain=line.gain,
        offset=line.offset,
        rmse=rmse,
        nrmse=100.0 * rmse / abs(ref_mean) if n and ref_mean != 0.0 else nan,
        r2=line.r2,
        residual_std=line.residual_std,
        device_std=math.sqrt(syy / (n - 1)) if n > 1 else nan,
        reference_std=math.sqrt(sxx / (n - 1)) if n > 1 else nan,
        device_coverage=aligned.device_coverage,
        reference_coverage=aligned.reference_coverage,
        lag_s=lag.measured_s,
        device_nulls=aligned.device_nulls,
        n_eff=bias.n_eff,
        bias_se=bias.se,
        bias_ci_low=low,
        bias_ci_high=high,
        gain_se=gain_se,
        gain_n_eff=gain_n_eff,
        reference_noise=ref_noise,
        gain_deming=gain_deming,
        offset_deming=offset_deming,
        gain_gls=gls.gain,
        gain_gls_se=gls.gain_se,
        noise_rho=gls.rho,
        gain_robust=gain_robust,
        offset_robust=offset_robust,
    )


def effective_gain_se(line: LineFit, residuals: FloatArray | None,
                      slope_n_eff: float = math.inf, *,
                      fine_n_eff: float = math.nan) -> tuple[float, float]:
    """The OLS gain's standard error scaled by sqrt(n / n_eff), and that n_eff.

    For a slope, the variance factor of AR(1) noise (rho_u) is Bartlett's
    1 + 2 sum rho_x(k) rho_u^k over the regressor's autocorrelations rho_x. Two readings
    are at hand and the smaller n_eff is kept: the OLS residuals' own AR(1) coefficient at
    its upper bound with rho_x taken as 1 (a sensor's reference is smooth), and
    ``slope_n_eff``, the factor with the coefficient fitted jointly with the line
    (Cochrane-Orcutt, at its upper bound) and the reference's own correlations
    (``stats.slope_effective_size``). The first is blind where the line absorbed the
    noise's slow wander (two persistent series: the residuals left look nearly white,
    lag-1 0.6 for a wander of 0.98, and three hours of minute data claimed 68 independent
    residuals); the second sees it.

    ``fine_n_eff`` (``fine_gain_samples``), where the comparison is on a coarser time base
    than the device's, stands instead of both: read off a few dozen interval residuals,
    their persistence is known only to its upper bound (24 hourly residuals with no
    correlation at all still count as 12 independent), where the device's own readings
    inside the intervals know it.
    """
    if residuals is None or not (line.n > 2 and math.isfinite(line.gain_se)):
        return math.nan, math.nan
    if math.isfinite(fine_n_eff):
        return line.gain_se * math.sqrt(line.n / fine_n_eff), fine_n_eff
    n_eff = min(effective_size(line.n, ar1_coefficient(residuals)), slope_n_eff)
    return line.gain_se * math.sqrt(line.n / n_eff), n_eff


FINE_MIN_PER_INTERVAL = 10.0
"""Device readings an interval must hold on average for ``fine_gain_samples`` to read the
noise's persistence from them. The readings inside an interval resolve the noise's memory
at the interval's own scale only when there are enough of them; with three to six a
reading (3-minute readings against 10-minute means, 10-second against 1-minute) the count
is the carried model's extrapolation, and on the three matrices it added 6 healthy
windows failing on gain for 7 true ones. From ten up (minutes against hours, 3-minute
readings against hourly means) the matrices' false windows are 5, 13 and 6 (7, 13 and 6
before the readings were asked; three came, four went) for 19 more true ones."""


FINE_MIN_SAMPLES = 20.0
"""Independent samples the device's own deviations must show for ``fine_gain_samples`` to
speak: a window shorter than about ten correlation times truncates every estimate of
persistence (``checks.MIN_GAIN_SAMPLES``), and a slow wander the line has partly absorbed
looks whiter than it is. Six hours of 3-minute readings whose noise forgets in 100
minutes showed 2-6, and one window of a healthy unit's wander, counted at 10.2, became a
"certain" gain of 2 over a calm room (the matrix's f19). At 10 the three matrices'
false-positive windows were 9, 16 and 11 (7, 13 and 6 before the readings were asked);
at 20, 7, 14 and 9, with the same faults found (both with three readings an interval
allowed, ``FINE_MIN_PER_INTERVAL``). Below it the interval residuals' upper
bound judges, as before."""


def fine_gain_samples(aligned: Aligned, line: LineFit,
                      interval_residuals: FloatArray | None) -> float:
    """Independent samples the gain of a comparison on a coarser time base stands on, read
    from the device's own readings (``Aligned.fine_device``); NaN where there are none, or
    where the intervals themselves contradict what the readings say.

    The device's deviations from the line at its own cadence, against the reference's
    interval means interpolated between the intervals' centres, carry the noise's
    persistence at a resolution the few interval residuals lack. It is read by its whole
    correlation sequence (``stats.effective_n``: a slow wander counts in full), carried to
    the intervals as the AR(1) of the same memory (``stats.equivalent_ar1``,
    ``stats.interval_mean_acf``), and weighed against the reference's own course across
    the intervals (Bartlett's factor, ``stats.slope_effective_size_under``).

    That carrying keeps the noise's memory but not its shape: white noise over a slow
    wander (0.4 degC of it over a wander that forgets in eight hours) has the memory of a
    fast AR(1) at the readings' cadence and the persistence of the wander across hours
    (interval means 0.9 correlated where the AR(1) says 0.15; a healthy unit's gain then
    scattered three times its stated error). So the intervals' residuals are asked too:
    where their lag-1 correlation (corrected for its small-sample bias) lies beyond the
    carried one by more than its one-sided 95 % sampling error, the readings' word is set
    aside and the interval residuals' upper bound judges (``effective_gain_se``).

    A day of minute readings with noise of correlation time half an hour, against hourly
    means: about 13 of 24 intervals independent, where the 24 interval residuals' own
    correlation, at its upper bound, claimed 2."""
    fine = aligned.fine_device
    if fine is None or interval_residuals is None \
            or not (math.isfinite(line.gain) and math.isfinite(line.offset)):
        return math.nan
    keep = aligned.paired
    intervals = int(np.count_nonzero(keep))
    if intervals < 4 or interval_residuals.size != intervals:
        return math.nan
    width = aligned.interval_s
    # each paired bin holds one interval mean, stamped at its interval's centre, whole
    # multiples of the width from the epoch (``averaging.interval_means``); the bin's own
    # centre may sit up to half a width from it (``align.choose_edge_phase``)
    index = np.floor(np.asarray(aligned.t)[keep] / width)
    centres = (index + 0.5) * width
    reference = np.asarray(aligned.reference)[keep]
    ts, values = fine.ts, fine.values
    if not bool(np.all(ts[1:] >= ts[:-1])):
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
    step = thinning_step(int(ts.size), int(keep.size))
    ts, values = ts[::step], values[::step]
    ok = np.isfinite(ts) & np.isfinite(values)
    ts, values = ts[ok], values[ok]
    inside = _in_intervals(ts, width, index)
    ts, values = ts[inside], values[inside]
    if ts.size * step < FINE_MIN_PER_INTERVAL * intervals:
        return math.nan
    deviation = values - line.offset - line.gain * np.interp(ts, centres, reference)
    fine_eff = effective_n(deviation)
    if not fine_eff >= FINE_MIN_SAMPLES:
        return math.nan
    phi = equivalent_ar1(int(deviation.size), fine_eff)
    per_interval = deviation.size / intervals
    whole = phi ** per_interval if math.isfinite(phi) and phi > 0.0 else 0.0
    lags = max(min(weighted_lags(whole) if whole > 0.0 else 1, intervals - 1), 1)
    acf = interval_mean_acf(phi, per_interval, lags)
    if intervals_more_persistent(interval_residuals, float(acf[1])):
        return math.nan
    return slope_effective_size_under(reference, acf)


def _in_intervals(ts: FloatArray, width: float, index: FloatArray) -> np.ndarray:
    """Which of ``ts`` fall in one of the intervals ``index`` (whole widths from the
    epoch, ascending): a lookup table over the intervals' span, not a sort of ``ts``."""
    first = float(index[0])
    table = np.zeros(int(index[-1] - first) + 1, dtype=bool)
    table[(index - first).astype(np.intp)] = True
    where = np.floor(ts / width) - first
    inside = (where >= 0) & (where < table.size)
    inside[inside] = table[where[inside].astype(np.intp)]
    return inside


FINE_MAX_PER_INTERVAL = 120
"""Readings an interval keeps for ``fine_gain_samples`` at most: of more, every k-th is
read (``thinning_step``)."""


def thinning_step(readings: int, intervals: int) -> int:
    """Read every k-th of the window's readings, k the least that leaves each of its
    intervals (paired or not) at most ``FINE_MAX_PER_INTERVAL`` of them (1: all), taken
    before anything else is done with them.

    Every k-th value of a series keeps the shape of its correlation sequence at the lags
    it keeps (an AR(1) of phi becomes one of phi^k, white noise stays white), which is all
    the carrying to the intervals reads; means of groups would not (their lag-1 is no
    longer their memory's, and the count read through it fell by half). A day of 1 Hz
    readings against hourly means is read at 30 s: the correlation sequence of 86,400
    values cost 3.6 ms a metrics call."""
    return max(math.ceil(readings / (intervals * FINE_MAX_PER_INTERVAL)), 1)


def intervals_more_persistent(residuals: FloatArray, carried_rho: float) -> bool:
    """Do the interval residuals' lag-1 correlation (bias-corrected as
    ``stats.conservative_rho`` does, not raised) exceed ``carried_rho`` by more than its
    one-sided 95 % sampling error, sqrt((1 - rho^2) / n)? NaN correlations (a constant
    series) contradict nothing."""
    n = int(residuals.size)
    r = lag1_autocorrelation(residuals)
    if not math.isfinite(r):
        return False
    if n > 8:
        r = (n * r + 1.0) / (n - 4.0)
    return r > carried_rho + RHO_UPPER_Z * math.sqrt(max(1.0 - carried_rho**2, 0.0) / n)


def short_term_noise(x: FloatArray) -> float:
    """Upper bound of white noise in ``x`` from its successive differences: var(diff)/2.

    A smooth signal adds little to successive differences, white noise adds twice its
    variance; what the signal does add only makes this an overestimate."""
    if x.size < 3:
        return math.inf
    d = np.diff(x)
    return float(math.sqrt(float(d @ d) / (2.0 * d.size)))


def deming_line(
    dev: FloatArray, ref: FloatArray, line: LineFit, reference_uncertainty: float | None
) -> tuple[float, float]:
    """Deming (gain, offset) with lambda = device noise variance / reference variance.

    The device's noise is not known, so it is taken from the OLS residual scatter. With a
    noisy reference that scatter holds gain * gain_ols * u^2 of the reference's noise
    (u the reference's uncertainty); the true gain is estimated by the method-of-moments
    correction gain_ols / (1 - u^2 / var(ref)). What remains is the device's, floored at
    ``DEVICE_NOISE_MIN_SHARE`` of the scatter. NaN when the uncertainty is unknown or not
    positive, or the OLS line itself is undefined.

    The stated uncertainty is capped by the reference's sample-to-sample noise as the data
    show it (``short_term_noise``): a certificate's uncertainty is largely systematic, and
    only the random part attenuates the slope. Taken whole, a standard uncertainty of 0.2 hPa
    turned an honest barometer's gain of 1.00 into 1.15 over a calm morning.
    """
    u = reference_uncertainty
    if u is None or not (math.isfinite(u) and u > 0.0) or not math.isfinite(line.gain):
        return math.nan, math.nan
    u = min(u, short_term_noise(ref))
    if not u > 0.0:
        return line.gain, line.offset
    scatter = line.residual_std**2
    if not math.isfinite(scatter):
        return math.nan, math.nan
    u2 = u * u
    if not u2 > 0.0:
        return line.gain, line.offset  # too small to square: no error in the reference
    reliability = max(1.0 - u2 / float(ref.var(ddof=1)), DEVICE_NOISE_MIN_SHARE)
    device_var = max(scatter - line.gain * (line.gain / reliability) * u2,
                     DEVICE_NOISE_MIN_SHARE * scatter)
    if not device_var > 0.0:
        return line.gain, line.offset  # a perfect line: both fits agree
    return deming(ref, dev, device_var / u2)
