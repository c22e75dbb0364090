"""Verdicts that know how much evidence they have (issue 21's core side).

What a technician relies on when a ticket arrives: a healthy stream inside its profile's
envelope never fails; a gain is only blamed where the reference moved enough against the
noise to show it ("insufficient excitation" otherwise, never a failure); a flat stream is
stuck whatever the reference's range, a stream pinned at full scale is clipping; a
constant offset is bias, not gain; every failing verdict names a cause; a coarser
reference is compared on its own intervals; a lag of 2-10 intervals is found at any
interval from 10 s to 5 min. Streams are made here (a smooth signal, AR(1) device noise,
white reference noise) and judged by ``evaluate_stream``, the function the auditor calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from scipy.signal import lfilter

from auditd.core import Series, StreamVerdict, evaluate_stream, fit
from auditd.core.align import align, on_time_base
from auditd.core.averaging import interval_means
from auditd.core.checks import gain_evidence, noise_model_agrees
from auditd.core.diagnose import build_case, std_about_one_step
from auditd.core.fit import (
    Metrics,
    fine_gain_samples,
    fit_line,
    paired_arrays,
    thinning_step,
)
from auditd.core.lag import estimate_lag
from auditd.core.verdict import LatestHalfGuard, evaluate_aligned, on_interval, trend_inflation
from auditd.model import SensorSpec, Tolerance

T0 = 1_764_028_800.0  # 2025-11-25T00:00:00Z, a whole hour
HOUR = 3600.0
PROPERTY = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

BAROMETER = SensorSpec("pressure", "[pressure]", "hPa", (300.0, 1100.0), 60.0,
                       Tolerance(bias=1.0, gain=0.02, rmse=1.5, r2_min=0.9, lag_s=300.0,
                                 window_s=86400.0, min_samples=60))
HUMIDITY = SensorSpec("humidity", "dimensionless", "percent", (0.0, 100.0), 60.0,
                      Tolerance(bias=3.0, gain=0.05, rmse=4.0, r2_min=0.8, lag_s=300.0,
                                window_s=86400.0, min_samples=60))
TEMPERATURE = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), 60.0,
                         Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.9, lag_s=300.0,
                                   window_s=86400.0, min_samples=60))


def ar1(rng: np.random.Generator, n: int, sigma: float, phi: float) -> np.ndarray:
    shocks = rng.normal(0.0, sigma * math.sqrt(1.0 - phi * phi), n)
    return np.asarray(lfilter([1.0], [1.0, -phi], shocks))


def signal(rng: np.random.Generator, t: np.ndarray, level: float, swing: float,
           period_h: float) -> np.ndarray:
    """A smooth quantity: a slow cycle of ``swing`` amplitude and a little wander."""
    phase = rng.uniform(0.0, 2 * math.pi)
    wander = np.cumsum(rng.normal(0.0, 0.02 * swing, t.size)) / math.sqrt(max(t.size, 1))
    return level + swing * np.sin(2 * math.pi * (t - T0) / (period_h * HOUR) + phase) + wander


def judge(device: np.ndarray, reference: np.ndarray, t: np.ndarray, spec: SensorSpec,
          **kw: float) -> StreamVerdict:
    return evaluate_stream(Series(t + 2.0, device), Series(t, reference), spec, t[0],
                           t[-1] + spec.interval_s, **kw)  # type: ignore[arg-type]


def top(v: StreamVerdict) -> str | None:
    return v.causes[0].cause if v.causes else None


# --------------------------------------------------------------------------- excitation


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), hours=st.sampled_from([1, 6, 24]),
       ref_noise=st.floats(0.05, 1.0), dev_noise=st.floats(0.05, 0.5),
       phi=st.floats(0.0, 0.9), offset=st.floats(-0.5, 0.5))
def test_indoor_barometer_passes_or_is_indeterminate_never_gain_drift(
        seed: int, hours: int, ref_noise: float, dev_noise: float, phi: float,
        offset: float) -> None:
    """The reference wanders about 1 hPa over hours with noise of the same size: a healthy
    barometer's fitted gain is 0.7-0.8 there (the reference's noise flattens the line),
    which the data cannot tell from a span fault. It never fails on gain."""
    rng = np.random.default_rng(seed)
    t = T0 + 60.0 * np.arange(60 * hours)
    truth = signal(rng, t, 1013.0, 0.5, 6.0)
    reference = truth + rng.normal(0.0, ref_noise, t.size)
    device = truth + offset + ar1(rng, t.size, dev_noise, phi)
    v = judge(device, reference, t, BAROMETER)
    assert "gain" not in v.failed, (v.metrics.as_dict(), v.causes)
    assert "gain_drift" not in {c.cause for c in v.causes}
    assert v.severity != "critical"


def calm_noisy_humidity(rng: np.random.Generator
                        ) -> tuple[SensorSpec, np.ndarray, np.ndarray, np.ndarray]:
    """Three hours of a calm humidity (a swing of 0.3-0.6 rmse tolerances) at a 1-, 1.5-
    or 3-minute interval, read by a reference with 0.3-0.5 %RH of white noise: most of
    its short-term movement is that noise. (spec, times, truth, reference.)"""
    tol = HUMIDITY.tolerance
    swing, interval = rng.uniform(0.3, 0.6), float(rng.choice([60.0, 90.0, 180.0]))
    spec = SensorSpec("humidity", "dimensionless", "percent", (0.0, 100.0), interval,
                      Tolerance(tol.bias, tol.gain, tol.rmse, tol.r2_min,
                                max(tol.lag_s, interval), tol.window_s, 10))
    t = T0 + interval * np.arange(int(3 * HOUR / interval))
    truth = 50.0 + swing * tol.rmse * np.sin(2 * math.pi * (t - T0) / (3 * HOUR)
                                             + rng.uniform(0, 2 * math.pi))
    reference = truth + rng.normal(0.0, rng.uniform(0.3, 0.5), t.size)
    return spec, t, truth, reference


def test_a_slow_wander_beside_a_calm_noisy_reference_does_not_fail_on_gain() -> None:
    """Issue 21 (matrix fleets f27, f43, f47): a healthy hygrometer whose error wanders
    slowly (AR(1), phi 0.9-0.99 a reading, up to 60 % of the rmse tolerance) beside a
    calm reference read with 0.3-0.5 %RH of white noise, over three hours. That noise is
    most of the reference's short-term movement, so the line under AR(1) noise is
    undefined (``stats.cochrane_orcutt``), and the residuals about a slope that took the
    wander look white: gains of 1.9 on "20 independent residuals" failed as critical.
    The difference from the reference keeps the wander (``checks.calm_gain_samples``,
    asked where the residuals are persistent): at most 2 of 400 such windows (fixed
    seeds) fail on their gain; 4 did. (Counting the difference whatever the residuals
    gave 0 here and lost real span errors: see the next test.)"""
    rng = np.random.default_rng(20261206)
    tol = HUMIDITY.tolerance
    failed = undefined = 0
    for _ in range(400):
        phi, noise_share = rng.uniform(0.9, 0.99), rng.uniform(0.3, 0.6)
        spec, t, truth, reference = calm_noisy_humidity(rng)
        device = truth + ar1(rng, t.size, noise_share * tol.rmse, phi)
        v = judge(device, reference, t, spec)
        undefined += not math.isfinite(v.metrics.gain_gls)
        failed += v.status == "fail" and "gain" in v.failed
    assert undefined >= 300, undefined  # the case this is about
    assert failed <= 2, failed


def test_a_span_error_beside_a_calm_noisy_reference_is_still_found() -> None:
    """The other side of the last test (a review's finding): a real span error (gain 1.4-2.5
    or 0.3-0.6, white noise of 0.1-0.3 %RH) beside the same calm reference. Its residuals
    are white (nearly all independent), but the difference from the reference carries the
    reference's own slow course: counting the difference there hid the fault (161 of 200
    found). Asked only of persistent residuals: at least 180 of 200 (fixed seeds) fail on
    their gain (188 when written)."""
    rng = np.random.default_rng(20261207)
    caught = 0
    for _ in range(200):
        gain = rng.uniform(1.4, 2.5) if rng.uniform() < 0.5 else rng.uniform(0.3, 0.6)
        spec, t, truth, reference = calm_noisy_humidity(rng)
        device = 50.0 + gain * (truth - 50.0) + rng.normal(0.0, rng.uniform(0.1, 0.3), t.size)
        v = judge(device, reference, t, spec)
        caught += v.status == "fail" and "gain" in v.failed
    assert caught >= 180, caught


def test_an_ozone_cells_span_error_is_named_gain_not_offset() -> None:
    """A review's finding: days of hourly means of ozone cells with span errors (gain
    0.45-0.7 or 1.35-1.6, offsets within +-4 ppb, means 20-40 ppb with diurnal swings of
    10-25). Their mean difference is their span's, made through the cell's zero; a rule
    that credited it only where the zero lay within three reference stds of the mean named
    41 of 300 `offset_drift` (re-zero, where the remedy is a span calibration). The line
    must merely not pivot near the data (``diagnose.through_zero_share``): at most 3 of
    100 (fixed seeds) name the offset first, and at least 90 the gain (0 and 99 when
    written)."""
    spec = SensorSpec("o3", "dimensionless", "ppb", (0.0, 500.0), 3600.0,
                      Tolerance(bias=5.0, gain=0.2, rmse=5.0, r2_min=0.8, lag_s=3600.0,
                                window_s=86400.0, min_samples=18))
    rng = np.random.default_rng(11)
    firsts: dict[str | None, int] = {}
    for _ in range(100):
        t = T0 + 3600.0 * np.arange(24)
        hours = np.arange(24)
        level, swing = rng.uniform(20, 40), rng.uniform(10, 25)
        truth = level + swing * np.sin(2 * math.pi * (hours - rng.uniform(6, 12)) / 24)
        gain = rng.choice([rng.uniform(0.45, 0.7), rng.uniform(1.35, 1.6)])
        device = gain * truth + rng.uniform(-4, 4) + ar1(rng, 24, rng.uniform(0.5, 2.0),
                                                           rng.uniform(0.5, 0.9))
        reference = truth + rng.normal(0, rng.uniform(0.3, 1.5), 24)
        v = evaluate_stream(Series(t + 2.0, device), Series(t, reference), spec, t[0],
                            t[-1] + 3600.0)
        if v.status == "fail":
            firsts[top(v)] = firsts.get(top(v), 0) + 1
    assert firsts.get("offset_drift", 0) <= 3, firsts
    assert firsts.get("gain_drift", 0) >= 90, firsts


def test_a_healthy_units_slow_wander_beside_a_calm_reference_rarely_fails_on_gain() -> None:
    """Barometers whose error wanders slowly (AR(1), phi 0.95-0.99 per 3- or 5-minute
    reading, up to three quarters of the rmse tolerance: inside the profile's envelope)
    beside a reference that moves less than that over three hours: the two slow series
    often take the same turn and show a high r2 and a steep slope. That is chance, not
    span. Over 400 such windows (fixed seeds) at most 1.5 % fail on their gain, as
    ``bias_at_the_tolerance_edge`` bounds the bias's rate: 4 do, 10 did before the
    reference had to move more than the scatter about the line and, when calm, over ten
    independent residuals (``checks.excited``). Not none: from three hours of a wander
    this slow no estimate of persistence is reliable, which is what the rate bounds. (2
    since the slope's persistence is also read off the noise fitted with the line.)"""
    rng = np.random.default_rng(20261206)
    tol = BAROMETER.tolerance
    failed = 0
    for _ in range(400):
        phi, noise_share = rng.uniform(0.95, 0.99), rng.uniform(0.3, 0.75)
        swing, interval = rng.uniform(0.05, 0.6), float(rng.choice([180.0, 300.0]))
        spec = SensorSpec("pressure", "[pressure]", "hPa", (300.0, 1100.0), interval,
                          Tolerance(tol.bias, tol.gain, tol.rmse, 0.0,
                                    max(tol.lag_s, interval), tol.window_s, 10))
        t = T0 + interval * np.arange(int(3 * HOUR / interval))
        truth = 1008.0 + swing * tol.rmse * np.sin(2 * math.pi * (t - T0) / (3 * HOUR)
                                                   + rng.uniform(0, 2 * math.pi))
        reference = truth + rng.normal(0.0, 0.05, t.size)
        device = truth + ar1(rng, t.size, noise_share * tol.rmse, phi)
        v = judge(device, reference, t, spec)
        failed += v.status == "fail" and "gain" in v.failed
    assert failed <= 6, failed


def _hygrometer_window(rng: np.random.Generator, *, gain: float, reference_noise: float,
                       phi_3min: float, noise: float) -> StreamVerdict:
    """Three hours of a hygrometer beside a reference swinging 1-3 %RH (a 3-12 h cycle),
    read every 1, 3 or 5 minutes; the device's error wanders as AR(1) with ``phi_3min``
    per 3 minutes."""
    interval = float(rng.choice([60.0, 180.0, 300.0]))
    phi = phi_3min ** (interval / 180.0)
    spec = SensorSpec("humidity", "dimensionless", "percent", (0.0, 100.0), interval,
                      Tolerance(3.0, 0.05, 4.0, 0.8, max(300.0, interval), 3 * HOUR, 10))
    t = T0 + interval * np.arange(int(3 * HOUR / interval))
    cycle = rng.uniform(3.0, 12.0) * HOUR
    truth = 50.0 + rng.uniform(1.0, 3.0) * np.sin(
        2 * math.pi * (t - T0) / cycle + rng.uniform(0, 2 * math.pi))
    reference = truth + rng.normal(0.0, reference_noise, t.size)
    device = 50.0 + gain * (truth - 50.0) + rng.uniform(-1.5, 1.5) \
        + ar1(rng, t.size, noise, phi)
    return judge(device, reference, t, spec)


def test_a_healthy_hygrometers_wander_as_slow_as_the_air_is_not_a_span_fault() -> None:
    """Hygrometers whose error wanders with a time constant of hours (phi 0.95-0.99 per
    3 minutes, 0.5-1.5 %RH, inside the rmse tolerance of 4) beside a reference that swings
    1-3 %RH over the same hours, read with 0.05 %RH of noise: the wander runs with the
    reference as often as not, and OLS absorbs it into a gain of 0.4-0.7 or 1.4-2.0 whose
    residuals, having lost the wander, look nearly white (the matrix's f43 and f47). The
    slope's evidence is read off the noise fitted jointly with the line
    (``stats.cochrane_orcutt``, ``stats.slope_effective_size``): at most 1 % of 240
    windows fail on their gain (1 does, as before that line existed: a guard).

    Not where the reference's own reading noise is large against its swing (0.4 %RH):
    quasi-differencing then leaves mostly that noise, the AR(1) line is undefined, and
    such windows are judged as before it existed (17 of 300 such healthy windows fail on
    gain, 20 before); the test below is why."""
    rng = np.random.default_rng(7)
    failed = []
    for _ in range(240):
        v = _hygrometer_window(rng, gain=1.0, reference_noise=0.05,
                               phi_3min=rng.uniform(0.95, 0.99), noise=rng.uniform(0.5, 1.5))
        if v.status == "fail" and "gain" in v.failed:
            failed.append((round(v.metrics.gain, 2), round(v.metrics.gain_n_eff)))
    assert len(failed) <= 2, failed


def test_a_span_error_under_wandering_noise_beside_a_noisy_reference_is_still_found() -> None:
    """The other side (a reviewer's counter-example): six hours of minute data, the air
    swinging 8 %RH on a 12-hour cycle, read by a reference with 0.4 %RH of noise; a span
    error of 15 % under device noise wandering with phi 0.9 per minute. The AR(1) line
    fitted there measures the reference's noise (its gain near 0, its rho 0.99): it once
    vetoed every such gain above 1 and shrank every slope's evidence (2 of 60 found). It
    is undefined now (``stats.GLS_MAX_DILUTION``), and the faults are found as before it
    existed (56 of 120 then and now; 3 with the veto: six hours of such a wander hold few
    independent samples)."""
    rng = np.random.default_rng(1)
    spec = SensorSpec("humidity", "dimensionless", "percent", (0.0, 100.0), 60.0,
                      Tolerance(3.0, 0.05, 4.0, 0.8, 300.0, 6 * HOUR, 10))
    t = T0 + 60.0 * np.arange(int(6 * HOUR / 60.0))
    found = 0
    for i in range(120):
        span = 1.15 if i % 2 else 0.85
        truth = 50.0 + 8.0 * np.sin(2 * math.pi * (t - T0) / (12 * HOUR)
                                    + rng.uniform(0, 2 * math.pi))
        reference = truth + rng.normal(0.0, 0.4, t.size)
        device = 50.0 + span * (truth - 50.0) + ar1(rng, t.size, 0.8, 0.9)
        v = judge(device, reference, t, spec)
        found += v.status == "fail" and "gain" in v.failed
    assert found >= 50, found


def test_insufficient_excitation_is_said_and_bias_still_judged() -> None:
    """A calm first hours, gain not judgeable: the finding says so; an offset of three bias
    tolerances is still found, as offset_drift, not gain."""
    rng = np.random.default_rng(11)
    t = T0 + 60.0 * np.arange(120)
    truth = signal(rng, t, 1013.0, 0.3, 8.0)
    reference = truth + rng.normal(0.0, 0.2, t.size)
    healthy = judge(truth + ar1(rng, t.size, 0.3, 0.5), reference, t, BAROMETER)
    assert healthy.status == "pass"
    assert gain_evidence(healthy.metrics, BAROMETER.tolerance) == "indeterminate"
    (metric, why), = healthy.indeterminate
    assert metric == "gain" and "insufficient excitation" in why
    offset = judge(truth + 3.0 + ar1(rng, t.size, 0.3, 0.5), reference, t, BAROMETER)
    assert offset.status == "fail" and top(offset) == "offset_drift", offset.causes
    assert "gain_drift" not in {c.cause for c in offset.causes}


def test_a_span_fault_with_enough_excitation_is_still_gain_drift() -> None:
    """The identifiability test takes nothing from a gain the data do show: a day of
    temperature with a 20 % span error is gain_drift."""
    rng = np.random.default_rng(5)
    t = T0 + 60.0 * np.arange(1440)
    truth = signal(rng, t, 15.0, 6.0, 24.0)
    reference = truth + rng.normal(0.0, 0.05, t.size)
    device = 15.0 + (truth - 15.0) * 1.2 + ar1(rng, t.size, 0.15, 0.6)
    v = judge(device, reference, t, TEMPERATURE)
    assert v.status == "fail" and top(v) == "gain_drift", v.causes
    assert gain_evidence(v.metrics, TEMPERATURE.tolerance) == "beyond"


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), span=st.sampled_from([0.8, 0.85, 1.15, 1.2]),
       room=st.floats(18.0, 24.0), mean_difference=st.floats(-0.35, 0.35))
def test_a_span_error_about_the_rooms_own_level_is_gain_not_offset(
        seed: int, span: float, room: float, mean_difference: float) -> None:
    """A thermometer whose span is off by 15-20 % about a level near the room's (a day
    of a room swinging 1 degC): its mean difference stays inside the bias tolerance, and
    the fitted line's intercept is degrees from 0 only because 0 degC is far outside the
    data. The window fails on its gain, and the cause named first is gain_drift: the
    intercept's extrapolation is not an offset to correct (the matrix's f05 named it
    offset_drift in nine windows, lending the offset the gain's exceedance)."""
    rng = np.random.default_rng(seed)
    t = T0 + 60.0 * np.arange(1440)
    truth = signal(rng, t, room, 1.0, 24.0)
    reference = truth + rng.normal(0.0, 0.05, t.size)
    pivot = float(np.mean(truth)) - mean_difference / (span - 1.0)
    device = pivot + span * (truth - pivot) + ar1(rng, t.size, 0.05, 0.6)
    v = judge(device, reference, t, TEMPERATURE)
    assume(abs(v.metrics.bias) < 0.5 * TEMPERATURE.tolerance.bias)
    assert v.status == "fail" and top(v) == "gain_drift", (v.causes, v.metrics.as_dict())
    assert "offset_drift" not in {c.cause for c in v.causes}


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), phi=st.floats(0.5, 0.95),
       noise=st.floats(0.1, 0.6))
def test_first_hour_of_a_healthy_unit_is_never_a_critical_failure(
        seed: int, phi: float, noise: float) -> None:
    """An hour of strongly autocorrelated minute data holds a handful of independent
    samples: its gain is rarely judgeable, and a borderline estimate is never critical."""
    rng = np.random.default_rng(seed)
    t = T0 + 60.0 * np.arange(70)
    truth = signal(rng, t, 15.0, 1.0, 24.0)
    v = judge(truth + ar1(rng, t.size, noise, phi), truth + rng.normal(0, 0.05, t.size), t,
              TEMPERATURE)
    assert "gain" not in v.failed, (v.metrics.as_dict(), v.causes)
    assert v.severity in ("none", "minor"), (v.failed, v.causes)


# --------------------------------------------------------------------------- envelope


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1),
       interval=st.sampled_from([10.0, 30.0, 60.0, 120.0, 300.0]),
       hours=st.sampled_from([2, 6, 24]),
       spec=st.sampled_from([TEMPERATURE, HUMIDITY, BAROMETER]),
       bias_share=st.floats(-0.3, 0.3), gain_share=st.floats(-0.3, 0.3),
       noise_share=st.floats(0.02, 0.3), phi=st.floats(0.0, 0.9),
       swing=st.floats(0.0, 1.0))
def test_a_healthy_stream_inside_its_envelope_never_fails(
        seed: int, interval: float, hours: int, spec: SensorSpec, bias_share: float,
        gain_share: float, noise_share: float, phi: float, swing: float) -> None:
    """Offset, span error and noise all inside a third of the profile's tolerances, at any
    reporting interval, window and amount of excitation (from a flat day to a day whose
    swing is many tolerances): the verdict is never ``fail``."""
    rng = np.random.default_rng(seed)
    tol = spec.tolerance
    spec = SensorSpec(spec.name, spec.quantity, spec.unit, spec.range, interval,
                      Tolerance(tol.bias, tol.gain, tol.rmse, 0.0, max(tol.lag_s, interval),
                                tol.window_s, 10))
    t = T0 + interval * np.arange(int(hours * HOUR / interval))
    level = 1013.0 if spec.unit == "hPa" else 50.0 if spec.unit == "percent" else 15.0
    truth = signal(rng, t, level, swing * 20.0 * tol.bias, 24.0)
    reference = truth + rng.normal(0.0, 0.05 * tol.bias, t.size)
    device = (level + (truth - level) * (1.0 + gain_share * tol.gain) + bias_share * tol.bias
              + ar1(rng, t.size, noise_share * tol.rmse, phi))
    v = judge(device, reference, t, spec)
    assert v.status != "fail", (v.failed, v.causes, v.metrics.as_dict())


# --------------------------------------------------------------------------- offset, not gain


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), spec=st.sampled_from([TEMPERATURE, HUMIDITY, BAROMETER]),
       size=st.floats(2.5, 6.0), sign=st.sampled_from([-1.0, 1.0]), swing=st.floats(0.05, 1.0))
def test_a_constant_offset_beyond_tolerance_is_bias_not_gain(
        seed: int, spec: SensorSpec, size: float, sign: float, swing: float) -> None:
    rng = np.random.default_rng(seed)
    t = T0 + 60.0 * np.arange(1440)
    tol = spec.tolerance
    level = 1013.0 if spec.unit == "hPa" else 50.0 if spec.unit == "percent" else 15.0
    truth = signal(rng, t, level, swing * 10.0 * tol.bias, 24.0)
    reference = truth + rng.normal(0.0, 0.05 * tol.bias, t.size)
    device = truth + sign * size * tol.bias + ar1(rng, t.size, 0.2 * tol.rmse, 0.6)
    v = judge(device, reference, t, spec)
    assert v.status == "fail" and top(v) == "offset_drift", (v.causes, v.metrics.as_dict())


# --------------------------------------------------------------------------- stuck, clipping


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), spec=st.sampled_from([TEMPERATURE, HUMIDITY, BAROMETER]),
       swing=st.floats(0.02, 2.0), since=st.floats(0.0, 0.6))
@example(seed=176420, spec=TEMPERATURE, swing=0.02, since=0.015625)  # found by hypothesis:
# twenty noisy minutes stepped by 0.03 on a 0.01 grid, then a day of one value beside a
# reference moving 0.025 (``diagnose.device_quantum``)
def test_a_flat_stream_is_stuck_whatever_the_references_range(
        seed: int, spec: SensorSpec, swing: float, since: float) -> None:
    """Exactly one value repeated for hours in the interior of the range while the
    reference is live: stuck, even when the reference moves by less than the bias
    tolerance (a calm indoor day)."""
    rng = np.random.default_rng(seed)
    t = T0 + 60.0 * np.arange(1440)
    tol = spec.tolerance
    level = 1013.0 if spec.unit == "hPa" else 50.0 if spec.unit == "percent" else 15.0
    truth = signal(rng, t, level, swing * tol.bias, 24.0)
    reference = truth + rng.normal(0.0, 0.05 * tol.bias, t.size)
    device = np.round(truth + ar1(rng, t.size, 0.1 * tol.rmse, 0.5), 2)
    cut = int(since * t.size)
    device[cut:] = device[cut]
    v = judge(device, reference, t, spec)
    assert v.status == "fail" and top(v) == "stuck", (v.causes, v.metrics.as_dict())


def test_calm_devices_beside_a_reference_that_stepped_are_not_stuck() -> None:
    """A held-out matrix fleet: an indoor barometer reference stepped +3.8 hPa inside a
    3-hour window (its own fault). Its std over the window, 1.9 hPa, was nearly all that
    step, and calm devices agreeing with each other to 0.05 hPa (std 0.14 hPa, a hundred
    distinct values) fell under the whole-window stuck rule: "stuck", a device's own
    cause, first beside the reference fault, three false alerts. The reference's
    movement is judged about its best single step."""
    rng = np.random.default_rng(8)
    t = T0 + 90.0 * np.arange(120)
    truth = 1010.0 + np.cumsum(rng.normal(0.0, 0.015, t.size))
    reference = truth + rng.normal(0.0, 0.05, t.size) + np.where(np.arange(t.size) >= 50,
                                                                  3.8, 0.0)
    spec = SensorSpec("pressure", "[pressure]", "hPa", (300.0, 1100.0), 90.0,
                      Tolerance(bias=1.0, gain=0.02, rmse=1.5, r2_min=0.9, lag_s=300.0,
                                window_s=3 * HOUR, min_samples=20))
    for k in range(20):
        device = np.round(truth + ar1(np.random.default_rng(k), t.size, 0.1, 0.5), 3)
        v = judge(device, reference, t, spec)
        assert v.status == "fail" and "stuck" not in [c.cause for c in v.causes], v.causes
    frozen = np.full(t.size, round(float(truth[0]), 3))
    v = judge(frozen, truth + rng.normal(0.0, 0.05, t.size) + 1.5 * np.sin(
        np.arange(t.size) / 30.0), t, spec)
    assert top(v) == "stuck", v.causes  # a live reference still shows a frozen one


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=80))
def test_the_std_about_one_step_is_the_best_two_level_fit(values: list[float]) -> None:
    x = np.asarray(values)
    n, low = x.size, max(3, int(0.05 * x.size))
    if n < 2 * low:
        assert std_about_one_step(x) == pytest.approx(float(x.std()), abs=1e-9)
        return
    best = min(float(((x[:k] - x[:k].mean()) ** 2).sum() + ((x[k:] - x[k:].mean()) ** 2).sum())
               for k in range(low, n - low + 1))
    assert std_about_one_step(x) == pytest.approx(math.sqrt(best / n), rel=1e-6, abs=1e-6)


def test_saturation_at_full_scale_is_clipping_not_stuck() -> None:
    """A unit reading 15 %RH high saturates at 99.9 %RH for hours; between the spells it
    follows the reference. Clipping, with its share and the offset behind it; not stuck,
    not critical."""
    rng = np.random.default_rng(1)
    t = T0 + 60.0 * np.arange(1440)
    truth = 80.0 + 15.0 * np.sin(2 * math.pi * np.arange(t.size) / t.size)
    reference = truth + rng.normal(0.0, 0.5, t.size)
    device = np.round(np.minimum(truth + 15.0 + rng.normal(0.0, 0.8, t.size), 99.9), 1)
    v = judge(device, reference, t, HUMIDITY)
    assert v.status == "fail"
    assert [c.cause for c in v.causes][:2] == ["offset_drift", "clipping"], v.causes
    assert "stuck" not in {c.cause for c in v.causes}
    assert v.severity != "critical"
    evidence = v.causes[1].evidence
    assert "99.9 percent" in evidence and "%" in evidence and "offset" in evidence


def test_a_hygrometer_at_full_scale_in_fog_is_neither_stuck_nor_clipping() -> None:
    """Pinned at 100 %RH while the reference reads 99-100 %RH: right, not a fault."""
    rng = np.random.default_rng(8)
    t = T0 + 60.0 * np.arange(1440)
    truth = np.minimum(97.0 + 4.0 * np.sin(2 * math.pi * np.arange(t.size) / t.size), 100.0)
    reference = np.minimum(truth + rng.normal(0.0, 0.3, t.size), 100.0)
    device = np.round(np.minimum(truth + 0.5 + rng.normal(0.0, 0.5, t.size), 100.0), 1)
    v = judge(device, reference, t, HUMIDITY)
    assert v.status == "pass", (v.failed, v.causes)


@pytest.mark.parametrize("followed_before", [False, True])
def test_a_hygrometer_that_held_100_after_the_fog_lifted_is_stuck(
        followed_before: bool) -> None:
    """A humid night at 100 %RH until hour 15, then the air dries to 80 %RH; the
    hygrometer (minutes, against hourly means) reads 100.0 in the fog and stays there
    exactly for the nine hours after, as a wet sensing element does. Most of its flat
    spell was fog, where 100 is right, but for eight hours it sat 4-20 %RH above the air
    without moving: stuck (seed 2's `f59` named the offset its frozen value made, the
    spell's median being the fog's). Whether it followed the air before the fog (its own
    line then puts it at the air's 80, not at 100) or was at 100 all day."""
    rng = np.random.default_rng(9)
    t = T0 + 60.0 * np.arange(1440)
    hours = (t - T0) / HOUR
    fog_from = 8.0 if followed_before else 0.0
    air = np.where(hours < fog_from, 88.0 + 5.0 * np.sin(hours), 100.0)
    air = np.where(hours < 15.0, air, 100.0 - 20.0 * np.clip((hours - 15.0) / 3.0, 0, 1))
    truth = np.minimum(air + ar1(rng, t.size, 0.5, 0.95), 100.0)
    device = np.where(hours < fog_from,
                      np.round(truth + rng.normal(0.0, 0.3, t.size), 1), 100.0)
    reference = interval_means(t, truth, HOUR, 60.0).mean
    v = evaluate_stream(Series(t, device), Series(T0 + HOUR * np.arange(24) + HOUR / 2,
                                                  reference),
                        HUMIDITY, T0, T0 + 24 * HOUR, reference_interval_s=HOUR)
    assert v.status == "fail" and top(v) == "stuck", (v.failed, v.causes)


def test_a_unit_its_own_calibration_carries_to_full_scale_is_not_stuck() -> None:
    """The review's counter-example: a hygrometer 2.7 %RH high with a gain of 1.05 (both
    inside tolerance) sits at 100 %RH through six hours when the air is at 96.5, then
    fog. The air is off its reading by more than the tolerance in most of the spell, but
    its own line puts it at 100 there: full scale, not a frozen sensor (critical `stuck`
    before the rule asked the line)."""
    rng = np.random.default_rng(0)
    t = T0 + 60.0 * np.arange(1440)
    hours = (t - T0) / HOUR
    air = np.where(hours < 7.5, 30.0 + 66.5 * hours / 7.5, np.where(hours < 14.0, 96.5, 100.0))
    truth = np.minimum(air + ar1(rng, t.size, 0.2, 0.95), 100.0)
    device = np.round(np.minimum(truth + 4.3 + 0.049 * (truth - 96.5)
                                 + ar1(rng, t.size, 0.15, 0.8), 100.0), 1)
    reference = np.minimum(truth + rng.normal(0.0, 0.3, t.size), 100.0)
    v = judge(device, reference, t, HUMIDITY)
    assert v.status == "pass", (v.failed, v.causes)


def test_an_outage_inside_a_fog_spell_is_no_evidence_of_stuck() -> None:
    """The review's second: a healthy hygrometer at 100 %RH in fog, offline from hour 6 to
    16 while the air is at 70, back at 100 in the next fog. The flat run spans the outage
    (gaps are skipped), but the hours it said nothing are no evidence that it stayed."""
    rng = np.random.default_rng(0)
    t = T0 + 60.0 * np.arange(1440)
    hours = (t - T0) / HOUR
    air = np.where(hours < 3.0, 85.0 + 3.0 * np.sin(3.0 * hours),
                   np.where((hours >= 6.0) & (hours < 16.0), 70.0, 100.0))
    truth = np.minimum(air + ar1(rng, t.size, 0.3, 0.95), 100.0)
    reference = np.minimum(truth + rng.normal(0.0, 0.3, t.size), 100.0)
    device = np.round(np.minimum(truth + 2.0 + rng.normal(0.0, 0.2, t.size), 100.0), 1)
    online = ~((hours >= 6.0) & (hours < 16.0))
    v = evaluate_stream(Series(t[online] + 2.0, device[online]), Series(t, reference),
                        HUMIDITY, t[0], t[-1] + 60.0)
    assert v.status == "pass", (v.failed, v.causes)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), bias_share=st.floats(-0.7, 0.7),
       gain_share=st.floats(-0.5, 0.5), noise_share=st.floats(0.05, 0.4),
       phi=st.floats(0.0, 0.9), fog=st.floats(0.1, 0.9), hours=st.sampled_from([3, 6, 24]))
def test_a_healthy_hygrometer_whose_air_saturates_never_fails(
        seed: int, bias_share: float, gain_share: float, noise_share: float, phi: float,
        fog: float, hours: int) -> None:
    """The air at 100 %RH for a share ``fog`` of the window (a humid night), the device
    and the reference both capped at 100: a unit whose offset, span and noise are inside
    tolerance flattens at the top (its readings say only "at least 100"), and its line
    through every pair has a gain of 0.75. Those pairs are censored; the unit passes."""
    rng = np.random.default_rng(seed)
    tol = HUMIDITY.tolerance
    t = T0 + 60.0 * np.arange(int(hours * HOUR / 60.0))
    # a wet day: the air rises to saturation and sits there for the share ``fog``
    phase = np.linspace(0.0, 1.0, t.size)
    truth = np.minimum(88.0 + 14.0 * np.clip(phase / max(1.0 - fog, 0.05), 0.0, 1.0)
                       + ar1(rng, t.size, 1.5, 0.99), 100.0)
    reference = np.minimum(truth + rng.normal(0.0, 0.3, t.size), 100.0)
    device = np.round(np.minimum(
        94.0 + (truth - 94.0) * (1.0 + gain_share * tol.gain) + bias_share * tol.bias
        + ar1(rng, t.size, noise_share * tol.rmse, phi), 100.0), 1)
    v = judge(device, reference, t, HUMIDITY)
    assert v.status != "fail", (v.failed, v.causes, v.metrics.as_dict())


def _foggy_night(rng: np.random.Generator, hours: int, bias: float, noise: float,
                 phi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fog for a whole window: the air at 100 %RH, a reference reading it to 0.3 %RH and
    capped at 100 (99-100), and a unit with this offset and noise, capped as well."""
    t = T0 + 60.0 * np.arange(int(hours * HOUR / 60.0))
    truth = np.minimum(100.5 + ar1(rng, t.size, 0.3, 0.95), 100.0)
    reference = np.minimum(truth + rng.normal(0.0, 0.3, t.size), 100.0)
    device = np.round(np.minimum(truth + bias + ar1(rng, t.size, noise, phi), 100.0), 1)
    return t, device, reference


@pytest.mark.parametrize("offset", [-10.0, -12.0, -15.0])
def test_a_dust_sensor_held_at_0_through_its_first_hour_fails_on_what_it_shows(
        offset: float) -> None:
    """A matrix fleet's PM2.5 units, a model's shared offset below the air, read 0.0 through
    their first audited hour (twelve 5-minute bins, ten needed) while the reference read
    4.9-9 ug/m3. The bins where the reference is within the bias tolerance of 0 are left
    out (a unit at 0 there may be right), leaving too few to judge; but a unit at 0 beside
    7-9 ug/m3 is low by at least that, and a cap can only understate an error towards its
    own end. The window fails on its rmse, minor (a bound on twelve readings), its span
    indeterminate and never named."""
    spec = replace(DUST, interval_s=300.0, tolerance=replace(
        DUST.tolerance, window_s=HOUR, min_samples=10))
    t = T0 + 300.0 * np.arange(12)
    reference = np.array([4.9, 5.6, 6.2, 7.4, 8.1, 9.0, 8.6, 7.9, 7.2, 6.8, 7.7, 8.4])
    device = np.round(np.maximum(reference + offset, 0.0), 1)
    assert not device.any()  # every reading at the range's bottom
    v = judge(device, reference, t, spec)
    assert v.status == "fail" and v.failed == ("rmse",), (v.status, v.failed, v.causes)
    assert v.severity == "minor", v.severity
    assert "gain_drift" not in {c.cause for c in v.causes}, v.causes
    assert "too few pairs lie away" in dict(v.indeterminate)["gain"], v.indeterminate
    # half the offset leaves the unit reading the air above it: judged as ever
    v = judge(np.round(np.maximum(reference + offset / 4, 0.0), 1), reference, t, spec)
    assert "too few pairs lie away" not in str(dict(v.indeterminate)), v.indeterminate


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), noise_share=st.floats(1.5, 4.0),
       phi=st.floats(0.0, 0.9), hours=st.sampled_from([3, 6, 24]))
def test_a_noisy_hygrometer_in_fog_cannot_be_told_from_a_reference_off_under_its_cap(
        seed: int, noise_share: float, phi: float, hours: int) -> None:
    """A unit whose noise is 1.5-4 times the rmse tolerance through a night of fog reads
    below a saturated reference on average and jumps about; a healthy unit beside a
    reference that reads 10 %RH high and is capped at 100 does both as well, while the air
    moves under the cap (a review built it). The window cannot tell them apart, and says
    so (insufficient data) rather than fail a unit on the edge: the judgement waits for
    the hours the reference leaves the top, or the group's comparison of the units."""
    t, device, reference = _foggy_night(np.random.default_rng(seed), hours, 0.0,
                                        noise_share * HUMIDITY.tolerance.rmse, phi)
    v = judge(device, reference, t, HUMIDITY)
    assert "too few pairs lie away" not in str(dict(v.indeterminate)), (
        v.status, v.causes, v.indeterminate)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), bias_share=st.floats(-0.7, 0.7),
       noise_share=st.floats(0.05, 0.6), phi=st.floats(0.0, 0.95),
       hours=st.sampled_from([3, 6, 24]))
def test_a_healthy_hygrometer_through_a_night_of_fog_never_fails(
        seed: int, bias_share: float, noise_share: float, phi: float, hours: int) -> None:
    """The same night with a unit whose offset and noise are inside tolerance: pinned at
    100 or just below it, its readings bound no error beyond the tolerance, and the
    window stays what it was (insufficient, or a pass on what is left)."""
    tol = HUMIDITY.tolerance
    t, device, reference = _foggy_night(np.random.default_rng(seed), hours,
                                        bias_share * tol.bias, noise_share * tol.rmse, phi)
    v = judge(device, reference, t, HUMIDITY)
    assert v.status != "fail", (v.failed, v.causes, v.metrics.as_dict())


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), reads_off=st.floats(4.0, 12.0),
       wander=st.floats(1.0, 5.0), noise_share=st.floats(0.05, 0.4),
       hours=st.sampled_from([3, 6, 24]), end=st.sampled_from(["top", "bottom"]))
@example(seed=0, reads_off=10.0, wander=1.0, noise_share=0.3, hours=6, end="top")
@example(seed=0, reads_off=10.0, wander=1.0, noise_share=0.3, hours=6, end="bottom")
def test_a_reference_off_and_capped_proves_nothing_against_a_healthy_unit(
        seed: int, reads_off: float, wander: float, noise_share: float, hours: int,
        end: str) -> None:
    """Fog banks that come and go every 45 minutes (the air at 100 %RH, then some 9 below
    it and wandering), a reference reading 4-12 %RH high and capped at 100 like the air,
    beside a healthy unit; and the mirror at the bottom (dry spells at 0, a reference
    reading low, capped at 0). The unit reaches the end now and then, so most pairs are in
    the end's reach, and it reads off the reference by a margin that is the reference's.
    Counting the least errors' spread there (half of them 0, half about the margin) failed
    such a unit on "noise" (a review's counter-example); its own jumps from one reading to
    the next are small, and the end proves nothing against it. Whether the pairs away from
    the end do is the group's question: is it the reference?"""
    rng = np.random.default_rng(seed)
    n = int(hours * HOUR / 60.0)
    t = T0 + 60.0 * np.arange(n)
    at_end = np.sin(2 * math.pi * np.arange(n) / 90.0 + rng.uniform(0.0, 6.3)) > 0
    tol = HUMIDITY.tolerance
    if end == "top":
        truth = np.where(at_end, 100.0, np.minimum(91.0 + ar1(rng, n, wander, 0.95), 100.0))
        reference = np.minimum(truth + reads_off + rng.normal(0.0, 0.3, n), 100.0)
        device = np.minimum(truth + ar1(rng, n, noise_share * tol.rmse, 0.5), 100.0)
    else:
        truth = np.where(at_end, 0.0, np.maximum(9.0 + ar1(rng, n, wander, 0.95), 0.0))
        reference = np.maximum(truth - reads_off + rng.normal(0.0, 0.3, n), 0.0)
        device = np.maximum(truth + ar1(rng, n, noise_share * tol.rmse, 0.5), 0.0)
    v = judge(np.round(device, 1), reference, t, HUMIDITY)
    assert "too few pairs lie away" not in str(dict(v.indeterminate)), (
        v.status, v.causes, v.indeterminate)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), level=st.floats(-10.0, 20.0) | st.floats(80.0, 110.0),
       sigma=st.floats(0.1, 15.0), offset=st.floats(-10.0, 10.0),
       gain=st.floats(0.8, 1.2))
def test_the_error_floor_never_exceeds_the_devices_true_error(
        seed: int, level: float, sigma: float, offset: float, gain: float) -> None:
    """Where the reference reads the air exactly (capped at the range's ends as the device
    is), the floor is at most the root mean square of the device's own error before its
    cap, whatever the air, offset, span and noise, near the top or the bottom: a bound,
    never an overstatement."""
    from auditd.core.censoring import error_floor

    rng = np.random.default_rng(seed)
    n = 240
    t = T0 + 60.0 * np.arange(n)
    truth = level + ar1(rng, n, 5.0, 0.95)
    error = offset + (gain - 1.0) * (truth - 90.0) + rng.normal(0.0, sigma, n)
    lo, hi = HUMIDITY.range
    device = np.clip(truth + error, lo, hi)
    reference = np.clip(truth, lo, hi)
    aligned = align(Series(t, device), Series(t, reference), 60.0, t[0] - 30.0,
                    t[-1] + 30.0)
    assert aligned.n_paired == n  # one reading of each in every bin
    floor = error_floor(aligned, HUMIDITY)
    assert floor is not None
    assert floor.rms <= math.sqrt(float(np.mean(error ** 2))) * (1 + 1e-12)


def test_a_window_spent_at_full_scale_says_so_when_it_cannot_be_judged() -> None:
    """Fog all day but the last half hour: the hygrometer at 100 %RH with the air at 99-100
    leaves 30 pairs away from the end of its range, fewer than the 60 an audit needs. The
    window is insufficient, and says why in the pairs that count, not "only 1439 paired
    values of the 60 an audit needs"."""
    rng = np.random.default_rng(4)
    t = T0 + 60.0 * np.arange(1440)
    truth = np.full(t.size, 100.0)
    truth[-30:] = 90.0 + np.linspace(0.0, 3.0, 30)
    reference = np.minimum(truth + rng.normal(0.0, 0.3, t.size), 100.0)
    device = np.round(np.minimum(truth + 1.0 + rng.normal(0.0, 0.5, t.size), 100.0), 1)
    v = judge(device, reference, t, HUMIDITY)
    assert v.status == "insufficient_data", (v.status, v.failed, v.causes)
    assert v.action.startswith("No action on the sensor yet: 30 of its 14"), v.action
    assert "lie away from the end of its range" in v.action and "needs 60" in v.action


def test_a_hygrometer_that_clamps_at_99_9_in_fog_is_censored_as_one_at_100() -> None:
    """Many units (the EPA month's among them) saturate at 99.9 %RH, not 100: the repeated
    ceiling is the range end as far as the comparison goes. A healthy unit through a
    foggy day passes, its pinned hours censored, as one clamping at 100 does."""
    rng = np.random.default_rng(12)
    t = T0 + 60.0 * np.arange(1440)
    phase = np.linspace(0.0, 1.0, t.size)
    truth = np.minimum(88.0 + 14.0 * np.clip(phase / 0.5, 0.0, 1.0)
                       + ar1(rng, t.size, 1.5, 0.99), 100.0)
    reference = np.minimum(truth + rng.normal(0.0, 0.3, t.size), 100.0)
    device = np.round(np.minimum(truth + ar1(rng, t.size, 0.8, 0.9), 99.9), 1)
    v = judge(device, reference, t, HUMIDITY)
    assert v.status != "fail", (v.failed, v.causes, v.metrics.as_dict())
    assert v.metrics.n < 1000, v.metrics.n  # its hours at the ceiling left out


def test_clean_air_near_the_bottom_of_a_dust_sensors_range_is_not_censored() -> None:
    """A PM2.5 unit on a 0-1000 ug/m3 range reading clean air (1-6 ug/m3, never 0) beside
    a monitor reading 0-7: close to the range's end is not at it. Every pair is compared
    (the EPA month's units lost 266 of 706 hours, every one the monitor read below 6.75,
    when a quarter of the rmse tolerance of the end counted as pinned); a unit clamped
    at 0.0 still has those hours censored."""
    rng = np.random.default_rng(9)
    t = T0 + 60.0 * np.arange(1440)
    truth = 3.5 + 2.5 * np.sin(2 * math.pi * np.arange(t.size) / 1440.0)
    reference = np.maximum(truth + rng.normal(0.0, 0.3, t.size), 0.0)
    device = np.round(truth + 0.3 + rng.normal(0.0, 0.4, t.size), 1)
    assert device.min() > 0.0
    v = judge(device, reference, t, DUST)
    assert v.metrics.n >= 1430, v.metrics.n  # of 1440 minutes
    clamped = judge(np.maximum(device - 3.0, 0.0), reference, t, DUST)
    assert clamped.metrics.n < v.metrics.n - 100, clamped.metrics.n


def test_an_offset_that_pins_a_hygrometer_at_full_scale_still_fails() -> None:
    """The censoring leaves pinned readings alone where the reference is far from full
    scale: a unit 12 %RH high at 100 while the air is at 88 is an error, and evidence."""
    rng = np.random.default_rng(3)
    t = T0 + 60.0 * np.arange(720)
    truth = 86.0 + 6.0 * np.sin(2 * math.pi * np.arange(t.size) / t.size)
    reference = truth + rng.normal(0.0, 0.3, t.size)
    device = np.round(np.minimum(truth + 12.0 + rng.normal(0.0, 0.8, t.size), 100.0), 1)
    v = judge(device, reference, t, HUMIDITY)
    assert v.status == "fail" and top(v) == "offset_drift", (v.causes, v.metrics.as_dict())


def test_a_quantised_device_on_a_calm_day_is_not_stuck() -> None:
    """Integer readings of a quantity whose reference moves a fraction of a step: repeats
    are what the device's resolution makes, not a frozen sensor."""
    rng = np.random.default_rng(2)
    t = T0 + 60.0 * np.arange(1440)
    truth = 50.0 + 0.3 * np.sin(np.arange(t.size) / 100.0)
    v = judge(np.round(truth + rng.normal(0.0, 0.3, t.size)), truth + rng.normal(0, 0.1, t.size),
              t, HUMIDITY)
    assert v.status == "pass", (v.failed, v.causes)


# ----------------------------------------------------------------- every failure has a cause


def test_a_failure_no_detector_explains_says_deviation_of_unknown_cause() -> None:
    """A reference noisier than the device's rmse tolerance makes the rmse fail with no
    pattern any detector knows: the finding says so, with the metric that failed."""
    rng = np.random.default_rng(57)
    t = T0 + 60.0 * np.arange(1440)
    truth = signal(rng, t, 1013.0, 0.5, 6.0)
    v = judge(truth + ar1(rng, t.size, 0.3, 0.8), truth + rng.normal(0.0, 2.0, t.size), t,
              BAROMETER)
    assert v.status == "fail"
    assert top(v) == "unexplained", v.causes
    assert "deviation of unknown cause" in v.causes[0].evidence
    assert all(name in v.causes[0].evidence for name in v.failed)
    assert "by hand" in v.action


def test_a_failing_rmse_carried_by_an_offset_names_the_offset() -> None:
    """The first hour against a 10-minute reference: six pairs, the device 8 %RH high give
    or take 0.5. Six points leave about two effective samples, so the bias interval spans
    zero and only the rmse fails; the offset carries nearly all of it and is what the
    finding names, not "unknown cause"."""
    rng = np.random.default_rng(5)
    t = T0 + 60.0 * np.arange(60)
    truth = 60.0 + np.cumsum(rng.normal(0.0, 0.05, t.size))
    device = truth + 8.0 + ar1(rng, t.size, 0.5, 0.97)
    ref_t = t[::10]
    reference = np.asarray([truth[i:i + 10].mean() for i in range(0, t.size, 10)])
    spec = SensorSpec("humidity", "dimensionless", "percent", (0.0, 100.0), 60.0,
                      Tolerance(bias=3.0, gain=0.05, rmse=4.0, r2_min=0.8, lag_s=60.0,
                                window_s=3 * HOUR, min_samples=5))
    v = evaluate_stream(Series(t + 2.0, device), Series(ref_t, reference), spec, t[0],
                        t[-1] + 60.0, reference_interval_s=600.0)
    assert v.status == "fail" and "rmse" in v.failed, (v.failed, v.metrics.as_dict())
    assert top(v) == "offset_drift", v.causes
    assert "mean squared difference" in v.causes[0].evidence


def test_a_failing_rmse_carried_by_a_slope_names_the_gain() -> None:
    """A day of hourly means of an ozone cell reading about half the monitor (gain 0.5,
    r2 0.99): the residuals' autocorrelation over 24 points leaves two effective samples,
    so the gain's interval is unbounded and only the rmse fails; the slope carries the
    failing rmse and is what the finding names."""
    rng = np.random.default_rng(9)
    t = T0 + 3600.0 * np.arange(24)
    hours = np.arange(24)
    truth = 30.0 + 25.0 * np.sin(2 * math.pi * (hours - 9) / 24)
    device = 0.5 * truth + 6.0 + ar1(rng, t.size, 0.8, 0.8)
    spec = SensorSpec("o3", "dimensionless", "ppb", (0.0, 500.0), 3600.0,
                      Tolerance(bias=5.0, gain=0.2, rmse=5.0, r2_min=0.8, lag_s=3600.0,
                                window_s=86400.0, min_samples=18))
    v = evaluate_stream(Series(t + 2.0, device), Series(t, truth + rng.normal(0, 0.3, t.size)),
                        spec, t[0], t[-1] + 3600.0)
    assert v.status == "fail" and "gain" not in v.failed, (v.failed, v.metrics.as_dict())
    assert top(v) == "gain_drift", v.causes
    assert "mean squared difference" in v.causes[0].evidence


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), offset=st.floats(-5.0, 5.0), gain=st.floats(0.5, 1.5),
       noise=st.floats(0.05, 3.0), flat_from=st.one_of(st.none(), st.floats(0.0, 0.9)))
def test_every_failing_verdict_names_a_cause(seed: int, offset: float, gain: float,
                                             noise: float, flat_from: float | None) -> None:
    rng = np.random.default_rng(seed)
    t = T0 + 60.0 * np.arange(720)
    truth = signal(rng, t, 15.0, 4.0, 24.0)
    device = 15.0 + (truth - 15.0) * gain + offset + ar1(rng, t.size, noise, 0.5)
    if flat_from is not None:
        device[int(flat_from * t.size):] = device[int(flat_from * t.size)]
    v = judge(device, truth + rng.normal(0.0, 0.05, t.size), t, TEMPERATURE)
    if v.status == "fail":
        assert v.causes and v.causes[0].cause, v


# --------------------------------------------------------------------------- one time base


def test_a_coarser_reference_is_met_by_the_devices_means_over_its_intervals() -> None:
    """Minute device data against hourly reference values: the comparison is of the
    device's hourly means (kept with more than 75 % of the minutes), the very numbers
    ``colocate`` averages (``interval_means``), not one device minute per hour."""
    rng = np.random.default_rng(3)
    t = T0 + 60.0 * np.arange(24 * 60)
    truth = signal(rng, t, 12.0, 8.0, 24.0) + ar1(rng, t.size, 3.0, 0.9)  # PM-like
    device = truth + rng.normal(0.0, 4.0, t.size)  # minute noise the hour averages out
    device[90:120] = np.nan  # hour 1 holds 30 of 60 minutes: incomplete, not compared
    hours = T0 + HOUR * np.arange(24)
    hourly = interval_means(t, truth, HOUR, 60.0).mean
    spec = SensorSpec("pm2_5", "[mass] / [length] ** 3", "ug/m^3", (0.0, 1000.0), 60.0,
                      Tolerance(bias=2.0, gain=0.35, rmse=3.0, r2_min=0.7, lag_s=300.0,
                                window_s=86400.0, min_samples=60))
    aligned = on_time_base(Series(t, device), Series(hours, hourly), 60.0, T0, T0 + 24 * HOUR,
                           reference_interval_s=HOUR)
    assert aligned.interval_s == HOUR
    means = interval_means(t, device, HOUR, 60.0)
    assert aligned.n_paired == len(means) == 23
    paired_dev = np.asarray(aligned.device)[aligned.paired]
    np.testing.assert_allclose(np.sort(paired_dev), np.sort(means.mean))
    v = evaluate_stream(Series(t, device), Series(hours, hourly), spec, T0, T0 + 24 * HOUR,
                        reference_interval_s=HOUR)
    assert v.status == "pass", (v.failed, v.causes, v.metrics.as_dict())
    # without being told, the reference's hourly spacing is read from its data
    inferred = evaluate_stream(Series(t, device), Series(hours, hourly), spec, T0,
                               T0 + 24 * HOUR)
    assert inferred.metrics.n == v.metrics.n == 23


def _day_against_hourly_means(rng: np.random.Generator, gain: float, noise: NoiseMaker,
                              start_s: float = 0.0) -> StreamVerdict:
    """A day of minute temperatures (a diurnal swing of 2-6 degC and a little weather)
    with the device noise ``noise`` makes, against the hourly means of the air read with
    0.05 degC of noise; a static offset inside tolerance. The window starts ``start_s``
    after the hour (the audit's windows end when the schedule fires)."""
    t = T0 + 60.0 * np.arange(25 * 60)
    truth = 15.0 + rng.uniform(2.0, 6.0) * np.sin(
        2 * math.pi * (t - T0) / (24 * HOUR) + rng.uniform(0.0, 2 * math.pi)) \
        + np.cumsum(rng.normal(0.0, 0.02, t.size))
    hourly = interval_means(t, truth, HOUR, 60.0).mean + rng.normal(0.0, 0.05, 25)
    device = 15.0 + gain * (truth - 15.0) + rng.uniform(-0.3, 0.3) + noise(rng, t.size)
    return evaluate_stream(Series(t, device), Series(T0 + HOUR * np.arange(25) + HOUR / 2,
                                                     hourly),
                           TEMPERATURE, T0 + start_s, T0 + start_s + 24 * HOUR,
                           reference_interval_s=HOUR)


NoiseMaker = Callable[[np.random.Generator, int], np.ndarray]


def _persistent(phi: float) -> NoiseMaker:
    return lambda rng, n: ar1(rng, n, rng.uniform(0.2, 0.4), phi)


def _white_over_wander(rng: np.random.Generator, n: int) -> np.ndarray:
    """White noise over a wander that forgets in eight hours: the memory at the readings'
    cadence is short, the persistence across hours long."""
    return rng.normal(0.0, 0.4, n) + ar1(rng, n, 0.3, 0.998)


@pytest.mark.parametrize("start_s", [0.0, 17 * 60.0])
def test_a_span_error_against_hourly_means_is_found_under_persistent_noise(
        start_s: float) -> None:
    """A span error of 10 % (2 tolerances) under minute noise that forgets in ten minutes
    (phi 0.9), against hourly reference means. Read off the 24 hourly residuals alone,
    their persistence is known only to its upper bound (24 uncorrelated residuals count
    as 12): 18 of these 40 days failed (16 with the window starting 17 minutes after the
    hour). The device's own minutes say how persistent the noise is
    (``fit.fine_gain_samples``): 30 and 28, each minute read against its own hour."""
    rng = np.random.default_rng(5)
    found = sum("gain" in _day_against_hourly_means(rng, 1.1, _persistent(0.9),
                                                    start_s).failed
                for _ in range(40))
    assert found >= 25, found


@pytest.mark.parametrize("noise", [_persistent(0.9), _persistent(0.97), _persistent(0.995),
                                   _white_over_wander],
                         ids=["ar1-0.9", "ar1-0.97", "ar1-0.995", "white-over-wander"])
def test_the_gains_stated_error_against_hourly_means_is_its_scatter(
        noise: NoiseMaker) -> None:
    """The other side: over healthy days, the gain's stated standard error is what its
    scatter about 1 shows (their ratio under 1.35; 1.1-1.2 measured), and at most one day
    in 120 fails on gain. White noise over a slow wander is the case the readings alone
    misjudge (its interval means are 0.9 correlated where the readings' memory says 0.15,
    and the gain scattered three times its stated error): the interval residuals' own
    correlation sets it aside (``fit.intervals_more_persistent``). Not always: one of these
    120 days had a wander shaped like the day's own cycle, which the line absorbed as a
    gain of 1.13, leaving residuals as white as any (lag-1 0.2), and the AR(1) line
    agreed. No single window can tell that from a span error; none of the AR(1) days
    fails."""
    rng = np.random.default_rng(6)
    verdicts = [_day_against_hourly_means(rng, 1.0, noise) for _ in range(120)]
    gains = np.array([v.metrics.gain for v in verdicts])
    errors = np.array([v.metrics.gain_se for v in verdicts])
    assert float(np.std(gains - 1.0)) / float(np.median(errors)) < 1.35
    failed = [g for g, v in zip(gains, verdicts, strict=True) if "gain" in v.failed]
    assert len(failed) <= (1 if noise is _white_over_wander else 0), failed


def _day_whose_span_changed(rng: np.random.Generator, gain_after: float, *,
                           at_h: float = 6.0, step: float = 120.0, sigma: float = 0.1,
                           phi: float = 0.6, swing: float | None = None,
                           static_gain: float = 0.0,
                           white: float = 0.0) -> tuple[StreamVerdict, StreamVerdict]:
    """A day of ``step``-second temperatures (a diurnal swing of 2-6 degC, or ``swing``,
    and a little weather) against the hourly means of the air, the unit's span changing
    from 1 + ``static_gain`` to ``gain_after`` at ``at_h`` hours, its noise an AR(1) of
    ``sigma`` and ``phi`` plus white noise of ``white``: the verdict, and the whole
    window's alone (``latest_half=False``)."""
    t = T0 + step * np.arange(int(24 * HOUR / step))
    amplitude = rng.uniform(2.0, 6.0) if swing is None else swing
    truth = 15.0 + amplitude * np.sin(2 * math.pi * (t - T0) / (24 * HOUR)
                                      + rng.uniform(0.0, 2 * math.pi)) \
        + np.cumsum(rng.normal(0.0, 0.03, t.size))
    hourly = interval_means(t, truth, HOUR, step).mean + rng.normal(0.0, 0.05, 24)
    gain = np.where(t >= T0 + at_h * HOUR, gain_after, 1.0 + static_gain)
    device = 15.0 + gain * (truth - 15.0) + rng.uniform(-0.2, 0.2) \
        + ar1(rng, t.size, sigma, phi) + rng.normal(0.0, white, t.size)
    spec = replace(TEMPERATURE, interval_s=step)
    aligned = on_time_base(Series(t, device), Series(T0 + HOUR * np.arange(24) + HOUR / 2,
                                                     hourly),
                           step, T0, T0 + 24 * HOUR, reference_interval_s=HOUR)
    judged = on_interval(spec, aligned.interval_s)
    return (evaluate_aligned(aligned, judged),
            evaluate_aligned(aligned, judged, latest_half=False))


def test_a_span_that_changed_inside_the_window_is_judged_on_its_latest_half() -> None:
    """A thermometer whose span fell from 1 to 0.75 six hours into a day, against hourly
    means: one line across both regimes lies between them, and its residuals (one sign
    before the change, the other after) read as noise so persistent that the slope stands
    on two samples; none of these 40 days fails on its gain as a whole window. Its latest
    twelve hours, judged on their own, fail on 22 (the others are mostly half days of one
    rise or one fall, where a drift of the unit's error in time could have made the same
    slope: ``verdict.LatestHalfGuard``), each named ``gain_drift``, its figures the
    half's (``judged_since``), the change dated at the start of the first hour after the
    best split of the day into two lines (``verdict.split_lines``): 06:00 on 21 of 22,
    07:00 on one (near the day's mean the two spans read alike)."""
    rng = np.random.default_rng(0)
    days = [_day_whose_span_changed(rng, 0.75) for _ in range(40)]
    assert sum("gain" in whole.failed for _, whole in days) <= 2
    found = [v for v, _ in days if "gain" in v.failed]
    assert len(found) >= 15, len(found)
    for v in found:
        assert top(v) == "gain_drift" and "latest half" in v.causes[0].evidence, v.causes
        assert v.judged_since == T0 + 12 * HOUR and v.metrics.n == 12, v.judged_since
        assert v.onset is not None and abs(v.onset - (T0 + 6 * HOUR)) <= HOUR, v.onset
    to_the_hour = [v for v in found if abs(v.onset - (T0 + 6 * HOUR)) < HOUR / 2]
    assert len(to_the_hour) >= 0.9 * len(found), [v.onset for v in found]


def test_a_part_of_a_weighed_window_is_weighed_alike() -> None:
    """The detectors recompute a failing window's metrics over the part after a step it
    holds (``diagnose.build_case``); where the caller weighed the window's own metrics (a
    latest half's guard), the part's are weighed the same way, so that no cause reads a
    part of the window more confidently than the whole was read. Here the weighing marks
    the gain's sample count; the part after a 3 degC step carries the mark."""
    rng = np.random.default_rng(4)
    t = T0 + 60.0 * np.arange(360)
    air = 15.0 + 3.0 * np.sin(2 * math.pi * (t - T0) / (12 * HOUR))
    device = air + np.where(t >= T0 + 3 * HOUR, 3.0, 0.0) + rng.normal(0.0, 0.1, t.size)
    aligned = on_time_base(Series(t, device), Series(t, air), 60.0, T0, T0 + 6 * HOUR)
    metrics = fit.compute_metrics(aligned)

    def marked(m: fit.Metrics, part: object) -> fit.Metrics:
        return replace(m, gain_n_eff=1.5)

    lag = estimate_lag(aligned, 1800.0)
    case = build_case(TEMPERATURE, aligned, metrics, lag, weighed=marked)
    assert case.step is not None and abs(case.step - (T0 + 3 * HOUR)) <= 120.0
    assert case.fault_metrics.gain_n_eff == 1.5
    unweighed = build_case(TEMPERATURE, aligned, metrics, lag)
    assert unweighed.fault_metrics.gain_n_eff != 1.5


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), phi=st.floats(0.6, 0.9995),
       sigma=st.floats(0.05, 0.6), white=st.floats(0.0, 0.4),
       step=st.sampled_from([60.0, 120.0, 300.0]), swing=st.floats(0.3, 6.0),
       static_gain=st.floats(-0.015, 0.015))
def test_a_healthy_units_wander_is_not_a_span_change_in_its_latest_half(
        seed: int, phi: float, sigma: float, white: float, step: float, swing: float,
        static_gain: float) -> None:
    """The other side: a healthy unit (span within a third of its tolerance, noise up to
    most of its rmse budget, wandering for minutes to days, with or without white noise
    on top) against hourly means is not failed by its latest half, whatever the day's
    swing: a wander that runs with half a day's rise is the wander's, not a span's.

    Not "never": the half is a second look at the gain at the verdict's own level, and a
    review's scan of 200,000 such days (ranges like these on a grid, swings to 8 degC, the
    swing's phase also drawn) found 5 failed by it, beside 3,138 the whole window fails
    itself (its rmse, a point value, beyond tolerance by chance at noise this close to the
    budget); 32 of 115,359 where the noise is 60-75 % of the budget and persistent (phi
    0.95-0.998), beside 4,641. One of them, inside these ranges: seed 175572, phi 0.99,
    sigma 0.55, white 0.4, minute readings, swing 4, static gain -0.015 (the half's gain
    0.70, minor). What this test holds is that a typical day never is."""
    rng = np.random.default_rng(seed)
    v, _ = _day_whose_span_changed(rng, 1.0 + static_gain, at_h=0.0, step=step, sigma=sigma,
                                   phi=phi, swing=swing, static_gain=static_gain,
                                   white=white)
    assert not any("latest half" in c.evidence for c in v.causes), (v.causes,
                                                                     v.metrics.as_dict())


def test_white_noise_over_a_slow_wander_is_no_span_change_in_the_latest_half() -> None:
    """White noise (0.4 degC) over a wander that forgets in hours to a day (phi
    0.995-0.9995 a reading): the case each guard is there for. Without any guard 6 of
    134 such days whose gain was indeterminate failed on their latest half; without the
    widening for a drift in time (``verdict.trend_inflation``), 1 (a review's probe).
    Over these 80 days, none fails that way."""
    draw = np.random.default_rng(11)
    fired = []
    for i in range(80):
        phi, sigma = draw.uniform(0.995, 0.9995), draw.uniform(0.2, 0.6)
        step, swing = float(draw.choice([60.0, 120.0, 300.0])), draw.uniform(1.0, 6.0)
        static_gain = draw.uniform(-0.015, 0.015)
        v, _ = _day_whose_span_changed(np.random.default_rng(i), 1.0 + static_gain, at_h=0.0,
                                       step=step, sigma=sigma, phi=phi, swing=swing,
                                       static_gain=static_gain, white=0.4)
        if any("latest half" in c.evidence for c in v.causes):
            fired.append(i)
    assert not fired, fired


def test_a_latest_half_is_capped_by_the_days_count_and_lifted_only_from_no_freedom() -> None:
    """The half's slope claims no more independent samples than the day's residuals
    about two lines count in its share (a wander too slow for half a day to show); where
    its own dozen residuals leave it no degrees of freedom (two samples: an infinite
    interval whatever the data, as a matrix thermometer whose span fell to 0.81 read
    0.808 +- 0.005 and went unjudged), the day's count stands in for them. Between the
    two its own count stands: lifting halves of 2.5-5 samples failed healthy days. A part
    of the half is allowed the day's count in proportion to the pairs it holds."""
    rng = np.random.default_rng(2)
    t = T0 + 300.0 * np.arange(144)
    air = 15.0 + 3.0 * np.sin(2 * math.pi * (t - T0) / (24 * HOUR))
    aligned = on_time_base(Series(t, air + rng.normal(0.0, 0.1, t.size)), Series(t, air),
                           300.0, T0, T0 + 12 * HOUR)
    widen = math.sqrt(trend_inflation(aligned))
    metrics = fit.compute_metrics(aligned)
    guard = LatestHalfGuard(6.0, estimate_lag(aligned, 1800.0), metrics.n)

    def weighed(own: float) -> fit.Metrics:
        return guard.applied(replace(metrics, gain_n_eff=own), aligned)

    for own, claimed in ((40.0, 6.0), (2.0, 6.0), (3.5, 3.5)):
        assert weighed(own).gain_n_eff == claimed, own
        assert weighed(own).gain_se == pytest.approx(
            metrics.gain_se * math.sqrt(own / claimed) * widen), own
        assert weighed(own).gain_gls_se == pytest.approx(metrics.gain_gls_se * widen)
    third = guard.applied(replace(metrics, n=metrics.n // 3, gain_n_eff=10.0), aligned)
    assert third.gain_n_eff == pytest.approx(6.0 * (metrics.n // 3) / metrics.n)
    assert guard.applied(replace(metrics, n=metrics.n // 3, gain_n_eff=2.0),
                         aligned).gain_n_eff <= 2.0  # no lift beyond its share


@pytest.mark.parametrize("phi", [0.9, 0.99, 0.999])
def test_one_hertz_readings_are_read_at_the_intervals_need(
        phi: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """A day of 1 Hz readings against hourly means is read at every 30th reading
    (``fit.thinning_step``): the count is the one all 86,400 give, within 2 % where the
    noise forgets within minutes (phi 0.9, 0.99 a second), and never more where it
    remembers for a quarter of an hour (0.999: 14-17 against 18, the shorter series'
    estimate of its own persistence being the more cautious)."""
    rng = np.random.default_rng(2)
    t = T0 + np.arange(86400.0)
    truth = 15.0 + 4.0 * np.sin(2 * math.pi * (t - T0) / 86400.0 + rng.uniform(0.0, 6.0))
    hourly = interval_means(t, truth, HOUR, 1.0).mean
    aligned = on_time_base(Series(t, truth + ar1(rng, t.size, 0.3, phi)),
                           Series(T0 + HOUR * np.arange(24) + HOUR / 2, hourly), 1.0, T0,
                           T0 + 86400.0, reference_interval_s=HOUR)
    device, reference = paired_arrays(aligned)
    line = fit_line(device, reference)
    residuals = device - line.offset - line.gain * reference
    assert thinning_step(86400, 24) == 30
    thinned = fine_gain_samples(aligned, line, residuals)
    monkeypatch.setattr(fit, "FINE_MAX_PER_INTERVAL", 10**9)
    everything = fine_gain_samples(aligned, line, residuals)
    assert math.isfinite(everything)
    if phi < 0.999:
        assert thinned == pytest.approx(everything, rel=0.02)
    else:
        assert not thinned > everything


def test_a_calm_rooms_wander_is_no_span_error_on_ten_minute_means() -> None:
    """Six hours of 3-minute indoor temperatures whose noise forgets in 100 minutes (phi
    0.97 per reading), against a reference's 10-minute means in a room that moves 0.3-0.5
    degC: 3.3 readings an interval are too few to say how persistent the noise is across
    intervals (``fit.FINE_MIN_PER_INTERVAL``), and six hours hold too few of its
    correlation times (``fit.FINE_MIN_SAMPLES``): the interval residuals' upper bound
    judges, as before the readings were asked (1 of these 150 windows fails on gain, as
    then). The matrix's f19 (seeds 1-3) failed healthy units on gains of 1.5-2.0 without
    the rules."""
    rng = np.random.default_rng(8)
    step, width = 180.0, 600.0
    t = T0 + step * np.arange(int(6 * HOUR / step))
    spec = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), step,
                      Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.9, lag_s=300.0,
                                window_s=6 * HOUR, min_samples=60))
    failed = []
    for _ in range(150):
        truth = 21.0 + rng.uniform(0.3, 0.5) * np.sin(
            2 * math.pi * (t - T0) / (rng.uniform(4.0, 12.0) * HOUR) + rng.uniform(0, 6.3))
        means = interval_means(t, truth, width, step)
        reference = means.mean + rng.normal(0.0, 0.02, means.mean.size)
        device = truth + rng.uniform(-0.3, 0.3) + ar1(rng, t.size, rng.uniform(0.2, 0.35),
                                                      0.97)
        v = evaluate_stream(Series(t, device), Series(means.start + width / 2, reference),
                            spec, T0, T0 + 6 * HOUR, reference_interval_s=width)
        if "gain" in v.failed:
            failed.append((round(v.metrics.gain, 2), round(v.metrics.gain_n_eff, 1)))
    assert len(failed) <= 1, failed


def test_no_lag_below_two_intervals_of_the_coarser_series() -> None:
    """Averaged to the reference's hour, a device 13 minutes late shows no lag: a lag
    finer than two hours cannot be resolved on hourly pairs."""
    rng = np.random.default_rng(4)
    t = T0 + 60.0 * np.arange(4 * 24 * 60)
    truth = signal(rng, t, 12.0, 8.0, 24.0) + ar1(rng, t.size, 3.0, 0.99)
    late = np.interp(t - 13 * 60.0, t, truth) + rng.normal(0.0, 1.0, t.size)
    hours = T0 + HOUR * np.arange(4 * 24)
    spec = SensorSpec("pm2_5", "[mass] / [length] ** 3", "ug/m^3", (0.0, 1000.0), 60.0,
                      Tolerance(bias=2.0, gain=0.35, rmse=3.0, r2_min=0.0, lag_s=300.0,
                                window_s=4 * 86400.0, min_samples=60))
    v = evaluate_stream(Series(t, late), Series(hours, interval_means(t, truth, HOUR).mean),
                        spec, T0, t[-1] + 60.0, reference_interval_s=HOUR)
    assert "lag_s" not in v.failed and "time_lag" not in {c.cause for c in v.causes}


@pytest.mark.parametrize("interval", [10.0, 30.0, 60.0, 120.0, 300.0])
@pytest.mark.parametrize("intervals_late", [2, 3, 5, 10])
def test_a_lag_of_two_to_ten_intervals_is_found_at_any_interval(
        interval: float, intervals_late: int) -> None:
    """The device's clock runs ``intervals_late`` reporting intervals behind, its lag
    tolerance one interval: the lag is found, named, and measured to an interval."""
    rng = np.random.default_rng(int(interval) * 100 + intervals_late)
    span = 12 * HOUR
    fine = np.arange(-HOUR, span + HOUR, 10.0)
    weather = (15.0 + 5.0 * np.sin(2 * math.pi * fine / 86400.0)
               + np.cumsum(rng.normal(0.0, 0.05, fine.size)))
    t = T0 + interval * np.arange(int(span / interval))
    rel = t - T0
    reference = np.interp(rel, fine, weather) + rng.normal(0.0, 0.05, t.size)
    device = (np.interp(rel - intervals_late * interval, fine, weather)
              + ar1(rng, t.size, 0.1, 0.7))
    spec = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), interval,
                      Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.0, lag_s=interval,
                                window_s=span, min_samples=30))
    v = judge(device, reference, t, spec)
    assert top(v) == "time_lag", (v.causes, v.metrics.lag_s)
    assert abs(v.metrics.lag_s - intervals_late * interval) <= interval


def test_the_reference_groups_grid_stands_on_the_same_time_base() -> None:
    """The group's common grid (is it the reference?) compares each device's hourly means
    with the hourly reference, as each stream's own verdict does."""
    from auditd.core.consensus import common_grid

    rng = np.random.default_rng(6)
    t = T0 + 60.0 * np.arange(24 * 60)
    truth = signal(rng, t, 12.0, 8.0, 24.0)
    hours = T0 + HOUR * np.arange(24)
    hourly = interval_means(t, truth, HOUR, 60.0).mean
    devices = {f"d{i}": Series(t, truth + i + rng.normal(0.0, 2.0, t.size)) for i in range(3)}
    grid = common_grid(devices, Series(hours, hourly), 60.0, T0, T0 + 24 * HOUR)
    assert grid.interval_s == HOUR and grid.t.size == 24
    for i, diff in enumerate(grid.diffs().values()):
        assert np.isfinite(diff).sum() == 24
        assert abs(float(np.nanmean(diff)) - i) < 0.5


# ------------------------------------------------------------- lag under white noise


def _lagged_scene(rng: np.random.Generator, *, intervals: int, interval: float = 15.0,
                  hours: float = 3.0) -> float:
    """An indoor temperature with a few minutes' fluctuations (0.3 degC), a device late by
    ``intervals`` readings with white noise of 0.25 degC, a reference with 0.04: the lag
    the estimator measures (NaN: none)."""
    n = int(hours * HOUR / interval)
    t = T0 + interval * np.arange(n)
    phi = math.exp(-interval / 600.0)
    fast = ar1(rng, n, 0.3, phi)
    truth = 21.0 + 0.3 * np.sin(2 * math.pi * (t - T0) / (8 * HOUR) + rng.uniform(0, 6)) + fast
    late = np.concatenate([np.full(intervals, truth[0]), truth[: n - intervals]])
    device = late + rng.normal(0.0, 0.25, n)
    reference = truth + rng.normal(0.0, 0.04, n)
    aligned = align(Series(t + 1.0, device), Series(t, reference), interval, t[0],
                    t[-1] + interval)
    return estimate_lag(aligned, hours * HOUR / 4).measured_s


def test_a_three_reading_lag_under_white_device_noise_is_found_and_none_is_invented() -> None:
    """Prewhitening turns a device's white noise into nearly its differences, whose
    correlation with anything is far less noisy than the white-noise formula assumed: a
    45-second lag at 15-second readings stood below that formula's hurdle in half the
    windows (28 of 60 found). Judged against the scatter Bartlett's formula gives for
    the series as they are (``lag.null_variance_factor``) it is found in 59 of 60; and a
    peak the finer scale cannot tell from zero lag is no lag (``lag.beats_zero``), so 60
    healthy windows show none."""
    rng = np.random.default_rng(5)
    lagged = [_lagged_scene(rng, intervals=3) for _ in range(60)]
    healthy = [_lagged_scene(rng, intervals=0) for _ in range(60)]
    found = sum(1 for m in lagged if math.isfinite(m) and abs(m - 45.0) <= 15.0)
    invented = sum(1 for m in healthy if math.isfinite(m) and abs(m) >= 22.5)
    assert found >= 54, found
    assert invented == 0, invented


def test_healthy_streams_of_every_kind_rarely_show_a_lag() -> None:
    """Healthy pairs over the matrix's range (readings every 10 s to 5 min, windows of 3 to
    24 h, device noise white to strongly persistent, fluctuations of 2 minutes to an
    hour): a lag of a reading and a half or more is measured in at most 1 of 300
    windows (none now; 2 of 400 before the scatter was measured)."""
    rng = np.random.default_rng(11)
    invented = []
    for _ in range(300):
        interval = float(rng.choice([10.0, 15.0, 30.0, 60.0, 120.0, 300.0]))
        hours = float(rng.choice([3.0, 6.0, 24.0]))
        n = int(hours * HOUR / interval)
        t = T0 + interval * np.arange(n)
        phi = math.exp(-interval / rng.uniform(120.0, 3600.0))
        truth = np.sin(2 * math.pi * (t - T0) / (rng.uniform(6, 24) * HOUR)
                       + rng.uniform(0, 6)) + ar1(rng, n, rng.uniform(0.05, 0.5), phi)
        device = truth + ar1(rng, n, rng.uniform(0.02, 0.3),
                             float(rng.choice([0.0, 0.5, 0.9, 0.97])))
        reference = truth + rng.normal(0.0, rng.uniform(0.005, 0.1), n)
        aligned = align(Series(t + 1.0, device), Series(t, reference), interval, t[0],
                        t[-1] + interval)
        m = estimate_lag(aligned, hours * HOUR / 4).measured_s
        if math.isfinite(m) and abs(m) >= 1.5 * interval:
            invented.append((interval, hours, m))
    assert len(invented) <= 1, invented


# --------------------------------------------------------------------------- held values

DUST = SensorSpec("pm2_5", "[mass] / [length] ** 3", "ug/m^3", (0.0, 1000.0), 60.0,
                  Tolerance(bias=5.0, gain=0.35, rmse=7.0, r2_min=0.7, lag_s=300.0,
                            window_s=86400.0, min_samples=60))


def dust(rng: np.random.Generator, t: np.ndarray, level: float) -> np.ndarray:
    """Fine dust between a few and a few tens of ug/m^3: a rush-hour swing and wander."""
    return np.clip(level + 0.6 * level * np.sin(2 * math.pi * (t - T0) / (6 * HOUR))
                   + ar1(rng, t.size, 0.2 * level, 0.95), 0.5, None)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), level=st.floats(10.0, 25.0),
       since=st.just(0.0) | st.floats(0.1, 0.6), hours=st.sampled_from([3, 6, 24]))
@example(seed=183494870, level=25.0, since=0.0, hours=6)  # found by hypothesis: two 0.1
# readings split the 0.0s, and another candidate's saturation test discarded mg/m^3
def test_a_dust_sensor_sending_mg_where_ug_is_expected_is_a_unit_mismatch(
        seed: int, level: float, since: float, hours: int) -> None:
    """Firmware that reports mg/m^3 at one decimal under a ug/m^3 label sends 0.0 while the
    air holds 3 to 40 ug/m^3 (0.003 to 0.04 mg/m^3): exactly what that unit makes of the
    reference at the device's resolution, and the few 0.1 it sends when the air passes 50
    ug/m^3 are that too. Named first (a unit setting, checked remotely, not a truck to
    replace a sensor), critical; where it sent nothing but 0.0, with ``stuck`` beside it:
    a sensor that stopped at zero would send the same, and the data cannot rule it out;
    nor an offset that holds it at the range's bottom, which its evidence names.
    (A window with only a reading or two before the change shows the device's resolution
    no finer than that jump, so the reference does not count as live: ``reference_live``.)"""
    rng = np.random.default_rng(seed)
    t = T0 + 60.0 * np.arange(int(hours * HOUR / 60.0))
    truth = dust(rng, t, level)
    reference = truth + rng.normal(0.0, 0.5, t.size)
    device = np.round(truth + ar1(rng, t.size, 1.0, 0.5), 1)
    cut = int(since * t.size)
    device[cut:] = np.round(0.001 * device[cut:], 1)
    # air within the tolerance of 0 makes a reading of 0 right, whatever its unit
    assume(float(np.median(reference[cut:])) > 2.0 * DUST.tolerance.bias)
    v = judge(device, reference, t, DUST)
    assert v.status == "fail" and top(v) == "unit_mismatch", (v.causes, v.metrics.as_dict())
    assert "mg/m^3" in v.causes[0].evidence
    if not device[cut:].any():  # nothing but 0.0: a sensor stopped at zero sends that too
        assert "stuck" in [c.cause for c in v.causes], v.causes
        # and so does an offset below the air's lowest reading there, clamped at the range's
        # bottom: named beside the unit (the window cannot tell them apart)
        assert "an offset of -" in v.causes[0].evidence and "bottom of its range" in \
            v.causes[0].evidence, v.causes[0].evidence
    else:
        assert "bottom of its range" not in v.causes[0].evidence
    assert v.severity == "critical"


def test_a_noisy_cell_that_barely_follows_its_reference_is_no_unit_mix_up() -> None:
    """Issue 21 (the EPA month: an NO2 cell named `unit_mismatch` in two daily windows): a
    cell whose hourly means barely follow a calm reference (wandering noise of 10-25 ppb
    against a reference moving a few ppb) fails on its scatter; its fitted line's slope is
    noise, and now and then lands on a unit's factor (1.88: ug/m3 for ppb). A unit's line
    needs a slope told apart from 1 (``diagnose._slope_shown``): none of 300 such days
    (fixed seeds) names one; 2 did."""
    spec = SensorSpec("no2", "dimensionless", "ppb", (-50.0, 1000.0), 3600.0,
                      Tolerance(bias=5.0, gain=0.35, rmse=15.0, r2_min=0.0, lag_s=3600.0,
                                window_s=86400.0, min_samples=18))
    units = (("ug/m^3", 1.88, 0.0), ("x1000", 1000.0, 0.0), ("ppm", 0.001, 0.0))
    rng = np.random.default_rng(5)
    named = failed = 0
    for _ in range(300):
        t = T0 + 3600.0 * np.arange(24)
        truth = (10.0 + 3.0 * np.sin(2 * math.pi * np.arange(24) / 24 + rng.uniform(0, 6.3))
                 + np.cumsum(rng.normal(0, 0.5, 24)))
        device = truth + rng.uniform(-3, 3) + ar1(rng, 24, rng.uniform(10, 25),
                                                  rng.uniform(0.3, 0.8))
        v = evaluate_stream(Series(t + 2.0, device), Series(t, truth + rng.normal(0, 1, 24)),
                            spec, t[0], t[-1] + 3600.0, units=units)
        failed += v.status == "fail"
        named += any(c.cause == "unit_mismatch" for c in v.causes)
    assert failed >= 100, failed  # the windows this is about fail, on their scatter
    assert named == 0, named


def test_a_dust_sensor_frozen_at_a_reading_is_stuck_not_a_unit() -> None:
    """Frozen at the 12.3 ug/m^3 it last measured: no unit makes 12.3 of 3 to 40."""
    rng = np.random.default_rng(5)
    t = T0 + 60.0 * np.arange(360)
    truth = dust(rng, t, 12.0)
    reference = truth + rng.normal(0.0, 0.5, t.size)
    device = np.round(truth + ar1(rng, t.size, 1.0, 0.5), 1)
    device[120:] = 12.3
    v = judge(device, reference, t, DUST)
    assert top(v) == "stuck", v.causes
    assert "unit_mismatch" not in [c.cause for c in v.causes]


def test_an_offset_that_pins_a_dust_sensor_at_zero_is_not_a_unit() -> None:
    """15 ug/m^3 low, pinned at 0 whenever the air is cleaner than that and following it
    otherwise: its readings of 5 and 10 are no unit's rounding of the reference."""
    rng = np.random.default_rng(6)
    t = T0 + 60.0 * np.arange(360)
    truth = dust(rng, t, 15.0)
    reference = truth + rng.normal(0.0, 0.5, t.size)
    device = np.round(np.maximum(truth - 15.0 + ar1(rng, t.size, 1.0, 0.5), 0.0), 1)
    v = judge(device, reference, t, DUST)
    assert v.status == "fail"
    assert "unit_mismatch" not in [c.cause for c in v.causes], v.causes


def test_a_baseline_keeps_the_offset_ahead_of_the_clipping_it_causes() -> None:
    """The drift figures against a known-good window re-rank the causes by confidence; the
    offset that pins a hygrometer at full scale must stay first (it is what the technician
    corrects), the clipping it causes right after it."""
    rng = np.random.default_rng(1)
    t = T0 + 60.0 * np.arange(1440)
    truth = 80.0 + 15.0 * np.sin(2 * math.pi * np.arange(t.size) / t.size)
    reference = truth + rng.normal(0.0, 0.5, t.size)
    device = np.round(np.minimum(truth + 15.0 + rng.normal(0.0, 0.8, t.size), 99.9), 1)
    baseline = np.asarray(rng.normal(0.0, 0.8, 1440))
    v = judge(device, reference, t, HUMIDITY, baseline_residuals=baseline)  # type: ignore[arg-type]
    assert v.drift is not None
    assert [c.cause for c in v.causes][:2] == ["offset_drift", "clipping"], v.causes



def test_a_device_that_changed_a_few_times_before_holding_zero_shows_its_resolution() -> None:
    """Four 3-minute means (12.4, 9.2, 11.5, 8.0 ug/m^3) before the firmware starts
    sending mg/m^3 (0.0): their consecutive steps are 2.3 or more, yet the values lie on a
    grid of 0.9 or finer, and the reference's movement (std 1.4) is well above that: the
    held 0.0 is a flat spell to explain (here by the unit), not what a coarse device
    shows on a calm day (``device_quantum``)."""
    rng = np.random.default_rng(11)
    t = T0 + 60.0 * np.arange(180)
    coarse = t[::3]  # the reference reports every 3 minutes
    reference = 10.0 + 2.0 * np.sin(2 * math.pi * np.arange(coarse.size) / coarse.size) \
        + rng.normal(0.0, 0.1, coarse.size)
    device = np.zeros(t.size)
    device[:12] = np.repeat([12.4, 9.2, 11.5, 8.0], 3)
    v = evaluate_stream(Series(t + 2.0, device), Series(coarse, reference), DUST, t[0],
                        t[-1] + 60.0, reference_interval_s=180.0)
    assert v.status == "fail" and top(v) == "unit_mismatch", v.causes


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), level=st.floats(0.0, 25.0),
       swing=st.floats(2.0, 10.0), hours=st.sampled_from([3, 6, 12]))
def test_degf_under_a_degc_label_is_a_unit_mismatch_however_few_independent_samples(
        seed: int, level: float, swing: float, hours: int) -> None:
    """A thermometer sending degF under a degC label over a smooth day: its readings follow
    1.8 x reference + 32 within a fraction of a degree, while the difference, +30 degC or
    more, wanders with the weather so slowly that the window holds a couple of independent
    samples and the bias's interval cannot place it beyond 0.5 degC with confidence. The
    line is the evidence, not the bias's certainty: unit_mismatch, not offset_drift."""
    rng = np.random.default_rng(seed)
    t = T0 + 120.0 * np.arange(int(hours * HOUR / 120.0))
    truth = level + swing * np.sin(2 * math.pi * (t - T0) / (24 * HOUR) + rng.uniform(0, 6.3))
    reference = truth + rng.normal(0.0, 0.03, t.size)
    device = np.round(1.8 * (truth + ar1(rng, t.size, 0.4, 0.97)) + 32.0, 2)
    spec = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), 120.0,
                      TEMPERATURE.tolerance)
    v = evaluate_stream(Series(t + 2.0, device), Series(t, reference), spec, t[0],
                        t[-1] + 120.0, units=(("degF", 1.8, 32.0), ("K", 1.0, 273.15)))
    assert v.status == "fail" and top(v) == "unit_mismatch", (v.causes, v.metrics.as_dict())


def test_the_ar1_line_must_show_the_gain_beyond_its_own_error() -> None:
    """The matrix's seed-1 f19: a calm room's wander made an OLS gain of 2.03 with 11
    independent samples counted from the readings, and an AR(1) line of 1.16 +- 0.22,
    beyond the tolerance only in its point: no span error. The same window with the
    AR(1) line known to +- 0.02 is one."""
    tol = TEMPERATURE.tolerance
    wander = Metrics(n=36, bias=0.249, gain=2.033, offset=-21.4, rmse=0.4, nrmse=1.9,
                     r2=0.881, residual_std=0.29, device_std=0.84, reference_std=0.382,
                     device_coverage=1.0, reference_coverage=1.0, lag_s=0.0, n_eff=2.0,
                     gain_se=0.2286, gain_n_eff=11.3, gain_gls=1.1623, gain_gls_se=0.2221,
                     noise_rho=0.88)
    assert not noise_model_agrees(wander, tol)
    assert gain_evidence(wander, tol) == "indeterminate"
    span = replace(wander, gain_gls_se=0.02)
    assert noise_model_agrees(span, tol)
    assert gain_evidence(span, tol) == "beyond"
