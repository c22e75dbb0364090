"""Drift rate per model and sensor, and the calibration interval it implies. Pure.

Each stream's drift is the slope of its bias (device − reference, in the sensor's canonical
unit) over its audits (``DeviceDrift``, computed by the store), with its standard error.
A model's rate is the mean of its devices' slopes, with a 95 % Student-t interval over
devices: devices are the independent units, while one device's overlapping audit windows
are not. Only streams with ``MIN_AUDITS`` audits spanning ``MIN_SPAN_S`` count, and not
those whose verdict is their reference's fault or the step of a firmware cohort (a step is
not a drift).

The recommended interval is the time a device drifting at the rate of the fastest 5 % of
the model's devices takes to use up the bias tolerance: ``tolerance / q`` where ``q`` is the
bound of the interval farther from zero plus 1.645 between-device standard deviations of
the true rates (the observed spread less the slopes' own measurement error, so that a short
or noisy record does not pass for devices drifting apart). It
stands beside the profile's ``calibration_interval_days``; with no measurable drift, or
fewer than ``MIN_DEVICES`` devices, there is no recommendation (``None``, with why), never a
number the data cannot support. A rate measured over a week and extrapolated to a year is
exactly that; the report says over how many days it was measured.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scipy.stats import t as student_t

from auditd.fleet.analysis.facts import DAY_S, MONTH_S, Device, DeviceDrift
from auditd.model import Profile

MIN_AUDITS = 3
MIN_SPAN_S = DAY_S
MIN_DEVICES = 3
UPPER_SHARE_Z = 1.645
"""The normal quantile of the fastest 5 % of devices."""
MAX_INTERVAL_DAYS = 10 * 365.25
"""Beyond this an interval is not a recommendation but an extrapolation into nothing."""


@dataclass(frozen=True, slots=True)
class DriftRate:
    model: str
    sensor: str
    unit: str | None
    devices: int
    rate_per_month: float
    low: float
    high: float
    """95 % interval of the mean rate, units per month."""
    spread_per_month: float
    """Between-device standard deviation of the true rates (the observed spread less the
    slopes' measurement error)."""
    span_days: float
    """The median stretch of audits a device's rate is measured over."""
    tolerance: float | None
    recommended_days: float | None
    profile_days: float | None
    why: str = ""
    """Why there is no recommendation, when there is none."""


def drift_rates(drifts: Iterable[DeviceDrift], devices: Iterable[Device],
                profiles: Mapping[str, Profile],
                excluded: Iterable[tuple[str, str, str]] = ()) -> list[DriftRate]:
    """Per (model, sensor), from the streams' slopes; ``excluded``: (site, device, sensor)
    whose bias history says nothing about drift (reference faults, firmware cohorts)."""
    models = {d.key: d.model for d in devices if d.model}
    skip = set(excluded)
    groups: dict[tuple[str, str], list[DeviceDrift]] = {}
    for d in drifts:
        model = models.get((d.site, d.device))
        if (model is None or (d.site, d.device, d.sensor) in skip or d.audits < MIN_AUDITS
                or d.span_s < MIN_SPAN_S or not math.isfinite(d.slope_per_s)):
            continue
        groups.setdefault((model, d.sensor), []).append(d)
    return [_rate(model, sensor, group, profiles.get(model))
            for (model, sensor), group in sorted(groups.items())]


def _rate(model: str, sensor: str, group: list[DeviceDrift],
          profile: Profile | None) -> DriftRate:
    rates = [d.slope_per_s * MONTH_S for d in group]
    n = len(rates)
    mean = statistics.fmean(rates)
    sd = statistics.stdev(rates) if n > 1 else 0.0
    half = float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else math.inf
    # The spread of devices' true rates: the observed spread less what each slope's own
    # measurement error contributes (method of moments, floored at zero).
    noise = statistics.fmean((d.slope_se_per_s * MONTH_S) ** 2 for d in group)
    sd = math.sqrt(max(0.0, sd * sd - noise))
    spec = profile.audited(sensor) if profile else None
    tolerance = spec.tolerance.bias if spec else None
    recommended, why = _recommend(mean, half, sd, n, tolerance)
    return DriftRate(model, sensor, spec.unit if spec else None, n, mean, mean - half,
                     mean + half, sd, statistics.median(d.span_s for d in group) / DAY_S,
                     tolerance, recommended,
                     profile.calibration_interval_days if profile else None, why)


def _recommend(mean: float, half: float, sd: float, n: int,
               tolerance: float | None) -> tuple[float | None, str]:
    if tolerance is None:
        return None, "no profile for this model (pass --profiles)"
    if n < MIN_DEVICES:
        return None, f"{n} device(s) with enough audits; {MIN_DEVICES} needed"
    fast = abs(mean) + half + UPPER_SHARE_Z * sd  # units per month
    if fast <= 0:
        return None, "no measurable drift"
    days = tolerance / fast * MONTH_S / DAY_S
    if days > MAX_INTERVAL_DAYS:
        return None, "drift too slow to measure over the audits held"
    return days, ""
