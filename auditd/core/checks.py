"""The tolerance comparison: how many tolerances away each metric is.

A ratio rather than a boolean, because severity and cause confidence both grow with the
distance beyond tolerance, and a ratio of 1 is the contract's boundary.
"""

from __future__ import annotations

import math

from auditd.core.fit import Metrics
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


GAIN_Z = 3.0
"""How many standard errors of the fitted gain a deviation must clear before it counts."""


def gain_uncertainty(metrics: Metrics) -> float:
    """Standard error of the OLS gain: residual scatter over the reference's spread.

    Over a window in which the reference barely moved (a barometer through a calm morning)
    the slope is poorly determined, and a point estimate a few hundredths from 1 is noise,
    not a gain fault. Independent residuals are assumed, which understates the error of
    autocorrelated series; the effective-sample-size treatment will replace it.
    """
    if metrics.n < 3 or not (metrics.reference_std > 0.0):
        return math.inf
    return metrics.residual_std / (metrics.reference_std * math.sqrt(metrics.n - 2))


def exceedances(metrics: Metrics, tol: Tolerance) -> dict[str, float]:
    """Metric name -> distance in tolerances (> 1 fails) for every metric defined here.

    The gain's distance is taken after ``GAIN_Z`` standard errors: it fails only when the
    window shows it beyond tolerance with confidence, so a short or flat window cannot
    raise a gain alarm on its own noise.
    """
    out: dict[str, float] = {}
    if math.isfinite(metrics.bias):
        out["bias"] = ratio(abs(metrics.bias), tol.bias)
    if math.isfinite(metrics.gain):
        margin = GAIN_Z * gain_uncertainty(metrics)
        out["gain"] = ratio(max(0.0, abs(metrics.gain - 1.0) - margin), tol.gain)
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
