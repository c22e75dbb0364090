"""The tolerance comparison: how many tolerances away each metric is.

A ratio rather than a boolean, because severity and cause confidence both grow with the
distance beyond tolerance, and a ratio of 1 is the contract's boundary.
"""

from __future__ import annotations

import math
from typing import Literal

from scipy.special import chdtri, stdtrit

from auditd.core.fit import Metrics
from auditd.core.stats import ONE_SIDED_LEVEL, Z_ONE_SIDED_1PCT, confidence_z
from auditd.model import SensorSpec, Tolerance

OUT_OF_RANGE_REACH = 3.0
"""Tolerances beyond the profile's plausible range that a calibration error and the
device's scatter can carry a well-formed reading (an electrochemical cell's zero a few ppb
below 0, its one-minute readings scattered around it): such readings are evidence and stay
in the comparison; farther out they are impossible values, which no offset, gain or noise
explains, and are left out of it (``plausible_bounds``)."""


def plausible_bounds(spec: SensorSpec) -> tuple[float, float]:
    """The values a comparison takes: the profile's range widened each side by
    ``OUT_OF_RANGE_REACH`` bias tolerances (the offset a fault the comparison names can
    reach) plus as many rmse tolerances (the scatter about that offset: a reading is the
    true value, the device's offset and its noise, and a 3-sigma excursion of noise at the
    tolerated rmse is a reading every healthy device makes). The EPA month's NO2 cells, a
    few ppb low, read 8 % of their one-minute values more than 3 bias tolerances (15 ppb)
    below 0, wandering there with their signal: well formed, evidence of the offset, not
    impossible values to fail the stream on ahead of it. A value half a span beyond the
    range (a fault the matrix injects, a 999 degC glitch) is out of every such reach."""
    low, high = spec.range
    reach = OUT_OF_RANGE_REACH * (spec.tolerance.bias + spec.tolerance.rmse)
    return low - reach, high + reach


def ratio(excess: float, limit: float) -> float:
    """``excess / limit``; a zero limit makes any excess infinitely far out."""
    if limit > 0.0:
        return excess / limit
    return math.inf if excess > 0.0 else 0.0


def r2_judgeable(reference_std: float, tol: Tolerance) -> bool:
    """Whether r2 can say anything about this window.

    r2 compares the device's scatter with the reference's own variation: over a window in
    which the reference hardly moved, a device whose noise is inside the rmse tolerance
    would still miss r2_min. r2 is judged only when the reference varied enough that such
    a device could reach r2_min: std(ref) >= rmse * sqrt(r2_min / (1 - r2_min)).
    """
    if not math.isfinite(reference_std):
        return False
    if tol.r2_min >= 1.0:
        return True
    if tol.r2_min <= 0.0:
        return reference_std > 0.0
    return reference_std >= tol.rmse * math.sqrt(tol.r2_min / (1.0 - tol.r2_min))


CONFIDENCE_Z = Z_ONE_SIDED_1PCT
"""How many (autocorrelation-aware) standard errors a metric must clear beyond its
tolerance before it counts: 99% one-sided, so a device sitting exactly at the edge fails
about 1% of the time whatever the window's length, and a real deviation is caught more
surely the more data there is."""

GAIN_Z = 3.0
"""Standard errors the gain's deviation must clear: wider than ``CONFIDENCE_Z`` because
the OLS gain is also biased towards 0 by the reference's noise (regression dilution, a
factor var(noise)/var(reference)) which its standard error does not cover. Over a calm
barometer morning (reference std 0.3 hPa, noise 0.05 hPa) that bias is 2.5%, beyond a
2% tolerance on its own. The Deming gain removes it when the reference's uncertainty is
known, but one margin for both keeps the decision simple and conservative."""


def decision_gain(metrics: Metrics) -> float:
    """The gain a decision is made on: Deming when the reference's uncertainty was known
    (OLS underestimates the gain against a noisy reference), the OLS gain otherwise."""
    return metrics.gain_deming if math.isfinite(metrics.gain_deming) else metrics.gain


def gain_uncertainty(metrics: Metrics) -> float:
    """Standard error of the decision gain: ``Metrics.gain_se`` (effective sample size).

    Over a window in which the reference barely moved (a barometer through a calm morning)
    the slope is poorly determined, and a point estimate a few hundredths from 1 is noise,
    not a gain fault. The Deming gain is given the OLS gain's error: both are judged on the
    same scatter about the same reference range. Infinite where undefined, so an unknown
    error never lets a deviation through as certain.
    """
    if metrics.n < 3 or not (metrics.reference_std > 0.0):
        return math.inf
    se = metrics.gain_se
    return se if math.isfinite(se) else math.inf


GainEvidence = Literal["beyond", "within", "indeterminate", "undefined"]


def gain_z(metrics: Metrics) -> float:
    """Standard errors the gain's interval spans each side: the 99% one-sided Student t
    quantile for the residuals' effective sample size less the line's two parameters, and
    never fewer than ``GAIN_Z``. A first hour of strongly autocorrelated data holds a
    handful of independent residuals, and three standard errors of a slope fitted to five
    points are no evidence at all."""
    df = metrics.gain_n_eff - 2.0
    if not df > 0.0:
        return math.inf
    return max(GAIN_Z, float(stdtrit(df, ONE_SIDED_LEVEL)))


def gain_range(metrics: Metrics) -> tuple[float, float]:
    """The gains the window's point estimates allow: the decision gain, and the OLS gain
    undone of the attenuation the reference's own noise can cause.

    Against a reference that moves little compared with its noise (an indoor barometer
    whose reference wanders 1 hPa over hours with 0.2 hPa of noise), OLS estimates
    gain x var(signal) / (var(signal) + noise^2): a healthy unit shows 0.75. The data
    cannot tell that from a span fault, so the decision takes the gain closest to 1 in
    [g, g / (1 - noise^2 / var(reference))] (and the Deming gain, where the reference's
    uncertainty is stated) as the least deviation, the farthest as the most."""
    gains = [g for g in (metrics.gain, decision_gain(metrics)) if math.isfinite(g)]
    if not gains:
        return math.nan, math.nan
    noise, spread = metrics.reference_noise, metrics.reference_std
    if math.isfinite(noise) and spread > 0.0 and math.isfinite(metrics.gain):
        dilution = (noise / spread) ** 2
        if dilution > MAX_DILUTION:
            # no upper bound: only a gain above 1 even before the correction is evidence
            return min(gains), math.inf
        gains.append(metrics.gain / (1.0 - dilution))
    return min(gains), max(gains)


MAX_DILUTION = 0.5
"""Where the reference's noise may be more than half its variance over the window, its
own movement is mostly noise and the correction g / (1 - dilution) is itself unknown
(the error of the noise estimate is magnified by 1 / (1 - dilution)): the gain is then
open-ended upwards, which leaves only a gain already beyond tolerance above 1 decidable."""


def gain_deviation(metrics: Metrics) -> tuple[float, float]:
    """(least, most) |gain - 1| over ``gain_range``: 0 when the range holds 1."""
    lo, hi = gain_range(metrics)
    if not math.isfinite(lo):
        return math.nan, math.nan
    least = 0.0 if lo <= 1.0 <= hi else min(abs(lo - 1.0), abs(hi - 1.0))
    return least, max(abs(lo - 1.0), abs(hi - 1.0))  # inf when open-ended


MIN_EXCITATION_R2 = 0.5
"""The excitation test, the reference's variance against the residual variance: a slope is
judged only where the reference's variation, carried through the line, is at least the
scatter about it (gain^2 var(ref) >= var(residual), i.e. r2 >= 1/2). Below that the slope
is set by whatever else moves the device: over a first hour, a slow wander of the device's
noise that happens to run with (or against) the reference's trend gives gains of 1.4 or
-1 with standard errors that its residuals, having absorbed that wander, understate."""


MIN_GAIN_SAMPLES = 10.0
"""Independent residuals (``Metrics.gain_n_eff``) a slope needs before it is judged over a
window whose reference moved no more than the device may wander on its own (its std below
the rmse tolerance, the wander a healthy unit's profile allows). Both together make the
spurious regression of persistent series: two slow series that happen to move together
give a high r2 and a tight-looking slope whatever their relation, and every estimate of
persistence from a window shorter than about ten of its correlation times truncates it
(``stats.effective_n``), so a window that shows fewer than ten independent samples holds
fewer still. An indoor barometer whose reference moved 0.26 hPa over three hours, beside a
unit whose allowed wander took the same turn, showed a gain of 3.6 with r2 0.88 on 7.5
"independent" residuals and failed as certain. A reference that moved by more than the
wander carries a slope the wander cannot fake, whatever the count (24 hourly pairs of a
day's temperature)."""


def excited(metrics: Metrics, tol: Tolerance) -> bool:
    """The excitation test: may the gain be judged at all? The reference carries the
    device's variation (``MIN_EXCITATION_R2``); and where it moved less than the device
    may wander on its own (its std below the rmse tolerance: calm), it moved by itself
    more than the scatter about the line (a high r2 from a steep fitted slope over a calm
    reference is the slope describing the device's own wander), over enough independent
    samples (``MIN_GAIN_SAMPLES``, ``calm_gain_samples``). Not over a reference that
    moved more than that: a unit sending mV where V is expected has a slope of 1000 and a
    scatter 1000 times the reference's noise, and its slope is as plain as any."""
    if not metrics.r2 >= MIN_EXCITATION_R2:
        return False
    if not calm(metrics, tol):
        return True
    return (metrics.reference_std >= metrics.residual_std
            and not calm_gain_samples(metrics) < MIN_GAIN_SAMPLES)


def calm(metrics: Metrics, tol: Tolerance) -> bool:
    """The reference moved less than a healthy device may wander on its own (its std
    below the rmse tolerance): a slope there may be the wander's (``excited``)."""
    return metrics.reference_std < tol.rmse


def calm_gain_samples(metrics: Metrics) -> float:
    """The independent samples a slope over a calm reference stands on: ``gain_n_eff``,
    or, where the line under AR(1) noise is undefined (the reference's white noise is
    most of its short-term movement, ``stats.cochrane_orcutt``) and the residuals
    themselves are persistent (fewer than ``PERSISTENT_RESIDUALS`` of them independent),
    the smaller of that and the difference's own ``n_eff``.

    ``gain_n_eff`` sees a wander the line absorbed only through that AR(1) line's
    persistence; without it, it rests on the residuals, which look whiter than the wander
    once the slope has taken part of it (a healthy hygrometer beside a calm reference with
    0.35 %RH of noise: gain 1.88 on "19.6 of 120 independent residuals", the difference
    from the reference, before any line, holding 6.9). The difference is asked only of
    persistent residuals: a real span error puts the reference's own slow course into the
    difference whatever the noise (a span of 2 with white noise: residuals 107 of 120
    independent, the difference 3.8), and where the AR(1) line is defined it is not asked
    at all (a day of hourly indoor temperatures, gain 1.36: 2 of 24)."""
    if math.isfinite(metrics.gain_gls) or not (
            metrics.gain_n_eff < PERSISTENT_RESIDUALS * metrics.n):
        return metrics.gain_n_eff
    return min(metrics.gain_n_eff, metrics.n_eff)


PERSISTENT_RESIDUALS = 0.25
"""Share of the residuals that must count as independent (``gain_n_eff / n``) for them to
be taken as the noise's whole story over a calm reference (``calm_gain_samples``): white
noise about a real slope keeps most of them; a slow wander, even after the slope took part
of it, keeps far fewer (0.16 in the case above)."""


def gain_evidence(metrics: Metrics, tol: Tolerance) -> GainEvidence:
    """What this window can say about the gain (ISO 14253-1's decision rule).

    ``beyond``: the whole interval (``gain_z`` standard errors each side of the decision
    gain) lies beyond the tolerance; ``within``: it lies inside it (a conformity claim);
    ``indeterminate``: neither, because the reference did not move enough against the
    scatter over this window's effective sample size, or not enough to carry the device's
    variation at all (``MIN_EXCITATION_R2``) (insufficient excitation: an indoor
    barometer through a calm day, the first hour of a new unit); ``undefined``: no slope
    at all (a flat reference). Only ``beyond`` may fail a stream on its gain or name
    ``gain_drift``; bias, stuck and noise are judged whatever the gain's evidence."""
    least, most = gain_deviation(metrics)
    if not math.isfinite(least):
        return "undefined"
    se = gain_uncertainty(metrics)
    if not (math.isfinite(se) and excited(metrics, tol)):
        return "indeterminate"
    z = gain_z(metrics)
    if least - z * se > tol.gain:
        return "beyond" if noise_model_agrees(metrics, tol) else "indeterminate"
    if most + z * se <= tol.gain:
        return "within"
    return "indeterminate"


def noise_model_agrees(metrics: Metrics, tol: Tolerance) -> bool:
    """Does the line fitted under AR(1) noise (``Metrics.gain_gls``) put the gain beyond
    the tolerance on the same side as the decision gain? A gain error acts at every time
    scale, so both lines see it; a slope made by the device's slow wander running with
    the reference's (spurious regression) is not in the short-term co-movement the AR(1)
    line rests on, and it lands elsewhere, often across 1. The AR(1) gain comes already
    corrected for the reference's noise in its own, quasi-differenced terms
    (``stats.cochrane_orcutt``); the least-squares range's allowance (``gain_range``) is
    also offered it, which can only widen the agreement. The AR(1) line must show the
    gain beyond the tolerance by its own interval (``gain_z`` of its standard error,
    ``Metrics.gain_gls_se``): a calm room's wander made an OLS gain of 2.0 and an AR(1)
    gain of 1.16 +- 0.22, which agreed in sign and nothing else, once the interval
    residuals were no longer the only witness of the noise's persistence
    (``fit.fine_gain_samples``). True where the AR(1) line is undefined: absence of a
    second opinion is no evidence against the first."""
    gls = metrics.gain_gls
    if not math.isfinite(gls):
        return True
    lo, hi = gain_range(metrics)
    gains = [gls]
    noise, spread = metrics.reference_noise, metrics.reference_std
    if math.isfinite(noise) and spread > 0.0:
        dilution = (noise / spread) ** 2
        gains.append(gls / (1.0 - dilution) if dilution <= MAX_DILUTION
                     else math.copysign(math.inf, gls))
    width = gain_z(metrics) * metrics.gain_gls_se if math.isfinite(metrics.gain_gls_se) \
        else 0.0
    if lo > 1.0:
        return max(gains) - width - 1.0 > tol.gain
    if hi < 1.0:
        return 1.0 - min(gains) - width > tol.gain
    return True


def excitation_note(metrics: Metrics, tol: Tolerance) -> str:
    """Why the gain could not be judged, in the figures that decide it."""
    (lo, hi), se = gain_range(metrics), gain_uncertainty(metrics)
    width = gain_z(metrics) * se
    shown = (_num(lo) if lo == hi else f"{_num(lo)} to {_num(hi)}" if math.isfinite(hi)
             else f"{_num(lo)} or more (the reference's variation is mostly its own noise)")
    return (f"gain indeterminate, insufficient excitation: {shown} ± {_num(width)} "
            f"against a tolerance of ±{_num(tol.gain)}; the reference varied with std "
            f"{_num(metrics.reference_std)} (its own noise {_num(metrics.reference_noise)}) "
            f"against a residual scatter of {_num(metrics.residual_std)} (r2 "
            f"{_num(metrics.r2)}) over about {_num(_excitation_samples(metrics, tol))} "
            f"independent samples")


def _excitation_samples(metrics: Metrics, tol: Tolerance) -> float:
    """The independent samples the excitation test counted: over a calm reference,
    ``calm_gain_samples``."""
    return calm_gain_samples(metrics) if calm(metrics, tol) else metrics.gain_n_eff


def _num(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "undefined"


def beyond(estimate: float, se: float, limit: float, z: float = CONFIDENCE_Z) -> float:
    """Distance in tolerances of the part of ``estimate`` that clears ``z`` standard
    errors: > 1 only when the value is beyond ``limit`` with confidence. An undefined
    error leaves nothing that clears it."""
    margin = z * se if math.isfinite(se) else math.inf
    return ratio(max(0.0, estimate - margin), limit)


def comparison_margin(u: float) -> float:
    """How far the comparison itself may be off the truth, with the confidence a failure
    needs (``CONFIDENCE_Z`` standard uncertainties); 0 against an instrument (NaN ``u``)."""
    return CONFIDENCE_Z * u if u > 0.0 else 0.0  # NaN > 0 is False; inf stays inf


def bias_margin(metrics: Metrics) -> float:
    """What the bias must clear before it shows beyond tolerance, or within it: its own
    interval (the t quantile of its effective sample size times its standard error,
    infinite where either is undefined), combined in quadrature with the comparison's
    (``comparison_margin``: a peer median is off the truth by its peers' own spread)."""
    z, se = confidence_z(metrics.n_eff), metrics.bias_se
    own = z * se if math.isfinite(se) else math.inf
    extra = comparison_margin(metrics.comparison_offset_u)
    if extra == 0.0 or math.isnan(own):
        return own
    return math.hypot(own, extra)


def rmse_beyond_comparison(rmse: float, metrics: Metrics) -> float:
    """The least the device's own rmse can be, given an rmse against the comparison: by the
    triangle inequality, that rmse less the comparison's own root-mean-square error off the
    truth (``comparison_margin`` of ``comparison_rms_u``). The rmse itself against an
    instrument."""
    extra = comparison_margin(metrics.comparison_rms_u)
    return max(0.0, rmse - extra) if extra > 0.0 else rmse


def rmse_exceedance(metrics: Metrics, tol: Tolerance) -> float:
    """The rmse's distance in tolerances (> 1 fails), as ``exceedances`` has it: 0 where
    the rmse is undefined (no paired data), less the comparison's own error
    (``rmse_beyond_comparison``)."""
    if not math.isfinite(metrics.rmse):
        return 0.0
    return ratio(rmse_beyond_comparison(metrics.rmse, metrics), tol.rmse)


def exceedances(metrics: Metrics, tol: Tolerance) -> dict[str, float]:
    """Metric name -> distance in tolerances (> 1 fails) for every metric defined here.

    Bias and gain are taken after a margin of standard errors from their effective sample
    size (bias: the t quantile ``stats.confidence_z``; gain: ``GAIN_Z``): they fail only
    when the window shows them beyond tolerance with confidence, so a short, flat or
    slowly wandering window cannot raise an alarm on its own noise, and a long one is not
    judged more harshly than a short one.

    The gain is left out where the window cannot judge it at all (``excited``), or
    where the line fitted under AR(1) noise does not put it beyond tolerance on the same
    side (``noise_model_agrees``: the slope may be the device's wander).

    rmse, r2 and the lag are compared as point values. The rmse describes this window's
    error as it happened: an interval from the autocorrelation of the squared difference
    would treat a fault's structure (half a day stuck, a diurnal gain error) as a random
    fluctuation and excuse it, so no sound interval is applied. r2 is only judged where it
    can be met; the lag estimator has its own significance hurdles.
    """
    out: dict[str, float] = {}
    if math.isfinite(metrics.bias):
        out["bias"] = ratio(max(0.0, abs(metrics.bias) - bias_margin(metrics)), tol.bias)
    least, _ = gain_deviation(metrics)
    if math.isfinite(least) and excited(metrics, tol) and noise_model_agrees(metrics, tol):
        out["gain"] = beyond(least, gain_uncertainty(metrics), tol.gain, gain_z(metrics))
    if math.isfinite(metrics.rmse):
        out["rmse"] = rmse_exceedance(metrics, tol)
    if math.isfinite(metrics.r2) and r2_judgeable(metrics.reference_std, tol):
        out["r2"] = ratio(1.0 - metrics.r2, 1.0 - tol.r2_min) if tol.r2_min < 1.0 else (
            math.inf if metrics.r2 < 1.0 else 0.0)
    if math.isfinite(metrics.lag_s):
        out["lag_s"] = ratio(abs(metrics.lag_s), tol.lag_s)
    return out


def rmse_lower_bound(metrics: Metrics) -> float:
    """The rmse's 99% one-sided lower bound from the difference's effective sample size:
    rmse * sqrt(df / chi2_0.99(df)), df = n_eff - 1 (the scatter of a handful of
    independent samples may be far larger than the sensor's). The rmse itself, undefined
    or not, where n_eff is."""
    df = metrics.n_eff - 1.0
    if not (math.isfinite(metrics.rmse) and df > 0.0):
        return metrics.rmse
    return metrics.rmse * math.sqrt(df / float(chdtri(df, 1.0 - ONE_SIDED_LEVEL)))


def evidenced_exceedances(metrics: Metrics, tol: Tolerance) -> dict[str, float]:
    """``exceedances`` with the rmse at its lower bound too: how far beyond tolerance the
    window *shows* each metric to be, which is what severity follows. A borderline
    estimate from the first hour's few independent samples is minor, whatever its point
    value."""
    out = exceedances(metrics, tol)
    if "rmse" in out:
        out["rmse"] = ratio(rmse_beyond_comparison(rmse_lower_bound(metrics), metrics),
                            tol.rmse)
    return out


def failed_checks(metrics: Metrics, tol: Tolerance) -> tuple[str, ...]:
    """Names of the metrics out of tolerance, worst first."""
    ex = exceedances(metrics, tol)
    return tuple(sorted((k for k, v in ex.items() if v > 1.0), key=lambda k: -ex[k]))


def unconfirmed_checks(metrics: Metrics, tol: Tolerance) -> tuple[str, ...]:
    """Names of the metrics a passing window does *not* show inside tolerance.

    Failing needs a metric beyond tolerance with confidence (``exceedances``); health
    needs the mirror image: the whole interval inside it. Bias: its interval
    (``bias ± t·se``, the same quantile as the failing side) within ``±tol.bias``; gain:
    its interval within ``tol.gain`` (``gain_evidence`` is ``within``) where the window
    can judge it at all (``excited``: over a window in which the reference hardly moved it
    cannot, either way, and is left out);
    rmse, r2 (where judgeable) and lag as point values, as they fail (against the peers'
    median too: the rmse against it is the device's own and the median's error together,
    sqrt(rmse^2 + u^2) in expectation, already above the device's own). A window between the
    two (not failing, not confirmed) is what keeps an open alert open, marked unconfirmed
    (``domain.alerts``): the mere weakening of the evidence of a fault is not its repair.
    """
    out: list[str] = []
    if not math.isfinite(metrics.bias):
        out.append("bias")
    else:
        margin = bias_margin(metrics)
        if not abs(metrics.bias) + margin <= tol.bias:
            out.append("bias")
    if excited(metrics, tol) and gain_evidence(metrics, tol) not in ("within", "undefined"):
        out.append("gain")
    if math.isfinite(metrics.rmse) and metrics.rmse > tol.rmse:
        out.append("rmse")
    if math.isfinite(metrics.r2) and r2_judgeable(metrics.reference_std, tol) \
            and tol.r2_min < 1.0 and (1.0 - metrics.r2) > (1.0 - tol.r2_min):
        out.append("r2")
    if math.isfinite(metrics.lag_s) and abs(metrics.lag_s) > tol.lag_s:
        out.append("lag_s")
    return tuple(out)


def estimates_beyond(metrics: Metrics, tol: Tolerance) -> bool:
    """Whether a window's point estimate of the bias or the gain lies beyond tolerance
    (without the confidence a failure needs): an unconfirmed pass that leans towards the
    fault, which holds a failing streak, where one that leans towards health ends it.
    Against the peers' median, the bias beyond what the median's own error may make of it
    (``comparison_margin``)."""
    gain = decision_gain(metrics)
    bias = abs(metrics.bias) - comparison_margin(metrics.comparison_offset_u)
    return ((math.isfinite(bias) and bias > tol.bias)
            or (math.isfinite(gain) and math.isfinite(gain_uncertainty(metrics))
                and abs(gain - 1.0) > tol.gain))
