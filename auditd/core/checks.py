"""The tolerance comparison: how many tolerances away each metric is.

A ratio rather than a boolean, because severity and cause confidence both grow with the
distance beyond tolerance, and a ratio of 1 is the contract's boundary.
"""

from __future__ import annotations

import math

from auditd.core.fit import Metrics
from auditd.core.stats import Z_ONE_SIDED_1PCT, confidence_z
from auditd.model import Tolerance


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


def beyond(estimate: float, se: float, limit: float, z: float = CONFIDENCE_Z) -> float:
    """Distance in tolerances of the part of ``estimate`` that clears ``z`` standard
    errors: > 1 only when the value is beyond ``limit`` with confidence. An undefined
    error leaves nothing that clears it."""
    margin = z * se if math.isfinite(se) else math.inf
    return ratio(max(0.0, estimate - margin), limit)


def exceedances(metrics: Metrics, tol: Tolerance) -> dict[str, float]:
    """Metric name -> distance in tolerances (> 1 fails) for every metric defined here.

    Bias and gain are taken after a margin of standard errors from their effective sample
    size (bias: the t quantile ``stats.confidence_z``; gain: ``GAIN_Z``): they fail only
    when the window shows them beyond tolerance with confidence, so a short, flat or
    slowly wandering window cannot raise an alarm on its own noise, and a long one is not
    judged more harshly than a short one.

    rmse, r2 and the lag are compared as point values. The rmse describes this window's
    error as it happened: an interval from the autocorrelation of the squared difference
    would treat a fault's structure (half a day stuck, a diurnal gain error) as a random
    fluctuation and excuse it, so no sound interval is applied. r2 is only judged where it
    can be met; the lag estimator has its own significance hurdles.
    """
    out: dict[str, float] = {}
    if math.isfinite(metrics.bias):
        out["bias"] = beyond(abs(metrics.bias), metrics.bias_se, tol.bias,
                             confidence_z(metrics.n_eff))
    gain = decision_gain(metrics)
    if math.isfinite(gain):
        out["gain"] = beyond(abs(gain - 1.0), gain_uncertainty(metrics), tol.gain, GAIN_Z)
    if math.isfinite(metrics.rmse):
        out["rmse"] = ratio(metrics.rmse, tol.rmse)
    if math.isfinite(metrics.r2) and r2_judgeable(metrics.reference_std, tol):
        out["r2"] = ratio(1.0 - metrics.r2, 1.0 - tol.r2_min) if tol.r2_min < 1.0 else (
            math.inf if metrics.r2 < 1.0 else 0.0)
    if math.isfinite(metrics.lag_s):
        out["lag_s"] = ratio(abs(metrics.lag_s), tol.lag_s)
    return out


def failed_checks(metrics: Metrics, tol: Tolerance) -> tuple[str, ...]:
    """Names of the metrics out of tolerance, worst first."""
    ex = exceedances(metrics, tol)
    return tuple(sorted((k for k, v in ex.items() if v > 1.0), key=lambda k: -ex[k]))
