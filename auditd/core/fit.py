"""How far a device is from its reference: the numbers a verdict is judged on.

All figures use only the paired bins, so a gap in either stream never biases them; they
are in the sensor's canonical unit. Undefined figures are NaN here and ``None`` in JSON:
a number that cannot be computed must not look like a measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from auditd.core.align import Aligned
from auditd.core.lag import LagEstimate, estimate_lag
from auditd.core.series import FloatArray

SIGNIFICANT_DIGITS = 6

FLAT_RELATIVE = 1e-9
"""Spread below this share of a stream's magnitude is floating-point dust, not signal."""


@dataclass(frozen=True, slots=True)
class LineFit:
    """Ordinary least squares of device on reference (the reference is the trusted x)."""

    n: int
    gain: float
    offset: float
    r2: float
    residual_std: float
    gain_se: float
    """Standard error of the gain assuming independent residuals (optimistic)."""


@dataclass(frozen=True, slots=True)
class Metrics:
    n: int
    """Paired bins."""
    bias: float
    """mean(device - reference)."""
    gain: float
    offset: float
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
    """NaN when no lag could be resolved (see ``LagEstimate.resolved``)."""
    device_nulls: int = 0

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


def is_flat(x: FloatArray) -> bool:
    """No variation beyond round-off (a bin mean of equal values need not be bit-equal)."""
    if x.size < 2:
        return True
    spread = float(np.max(x) - np.min(x))
    return spread <= FLAT_RELATIVE * max(float(np.max(np.abs(x))), 1e-300)


def fit_line(device: FloatArray, reference: FloatArray) -> LineFit:
    """OLS on paired arrays (no NaN), centred first for numerical stability.

    With a flat reference the slope is undefined, and the best fit is the device's mean,
    so the residual std is the device's std. With a flat device and a moving reference,
    r2 is 0 rather than undefined: the device follows none of the reference's variation.
    """
    n = int(device.size)
    nan = math.nan
    if n < 2:
        return LineFit(n, nan, nan, nan, nan, nan)
    dd = device - device.mean()
    rr = reference - reference.mean()
    sxx, syy, sxy = float(rr @ rr), float(dd @ dd), float(dd @ rr)
    if is_flat(reference):
        resid = math.sqrt(syy / (n - 1))
        return LineFit(n, nan, nan, nan, resid, nan)
    gain = sxy / sxx
    offset = float(device.mean() - gain * reference.mean())
    flat = is_flat(device) or syy * sxx == 0.0  # or so tiny its square underflows
    r2 = 0.0 if flat else min(1.0, sxy * sxy / (sxx * syy))
    sse = max(syy - gain * sxy, 0.0)
    resid = math.sqrt(sse / (n - 2)) if n > 2 else nan
    gain_se = resid / math.sqrt(sxx) if n > 2 else nan
    return LineFit(n, gain, offset, r2, resid, gain_se)


def paired_arrays(aligned: Aligned) -> tuple[FloatArray, FloatArray]:
    keep = aligned.paired
    return np.asarray(aligned.device)[keep], np.asarray(aligned.reference)[keep]


def compute_metrics(aligned: Aligned, lag: LagEstimate | None = None) -> Metrics:
    """Metrics of the aligned pair. ``lag`` saves a second estimate when the caller already
    has one; otherwise the lag is searched within a quarter of the window."""
    if lag is None:
        lag = estimate_lag(aligned, (aligned.end - aligned.start) / 4)
    dev, ref = paired_arrays(aligned)
    n = int(dev.size)
    line = fit_line(dev, ref)
    nan = math.nan
    diff = dev - ref
    ref_mean = float(ref.mean()) if n else nan
    rmse = float(math.sqrt(diff @ diff / n)) if n else nan
    return Metrics(
        n=n,
        bias=float(diff.mean()) if n else nan,
        gain=line.gain,
        offset=line.offset,
        rmse=rmse,
        nrmse=100.0 * rmse / abs(ref_mean) if n and ref_mean != 0.0 else nan,
        r2=line.r2,
        residual_std=line.residual_std,
        device_std=float(dev.std(ddof=1)) if n > 1 else nan,
        reference_std=float(ref.std(ddof=1)) if n > 1 else nan,
        device_coverage=aligned.device_coverage,
        reference_coverage=aligned.reference_coverage,
        lag_s=lag.lag_s if lag.resolved else nan,
        device_nulls=aligned.device_nulls,
    )
