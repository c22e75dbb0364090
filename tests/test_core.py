"""Tests of the pure calibration core (``auditd.core``).

The property tests generate a day of realistic 1-minute temperature data (a diurnal sine,
a random-walk "weather" component, AR(1) device noise, a reference sampled at other
instants and rates, jitter, gaps, nulls, duplicates and shuffled order), inject one known
fault and check that the verdict names it. The cross-checks compare the vectorised code
with slow, obvious implementations (loops, scipy.stats.linregress).

CORE_EXAMPLES=500 python -m pytest tests/test_core.py runs the properties harder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.signal import lfilter

from auditd.core import (
    Metrics,
    Series,
    StreamVerdict,
    align,
    compute_metrics,
    estimate_lag,
    evaluate_stream,
    step_onset,
    unit_candidates,
)
from auditd.core.align import Aligned, coarsen, shift_device, since
from auditd.core.causes import FINDING_CAUSES
from auditd.core.diagnose import gain_through_zero, rounded_from
from auditd.core.lag import lag_correlation
from auditd.core.units import rounded_fit
from auditd.model import SensorSpec, Tolerance

START = 1_764_028_800.0  # 2025-11-25T00:00:00Z
DAY = 86_400.0
END = START + DAY
MINUTE = 60.0
TOL = Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.90, lag_s=300.0, window_s=DAY,
                min_samples=60)
SPEC = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), MINUTE, TOL)

EXAMPLES = int(os.environ.get("CORE_EXAMPLES", "20"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
CROSS_CHECK = settings(max_examples=3 * EXAMPLES, deadline=None,
                       suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- generator


@dataclass(frozen=True)
class Scene:
    """One day at one site: the weather, the device's noise and how both are sampled."""

    seed: int
    mean: float
    amplitude: float
    walk: float
    """Random-walk weather, degC per sqrt(minute)."""
    noise: float
    """Device AR(1) noise std, degC."""
    phi: float
    ref_period: float
    jitter: float
    drop: float
    gap_h: float
    """One contiguous device outage of this many hours."""


@st.composite
def scenes(draw: st.DrawFn, noise_per_walk: float = 8.0) -> Scene:
    """``noise_per_walk`` caps the device noise at that multiple of the weather's
    one-minute step (and at 0.25 degC)."""
    walk = draw(st.floats(0.02, 0.06))
    return Scene(
        seed=draw(st.integers(0, 2**32 - 1)),
        mean=draw(st.floats(0.0, 25.0)),
        amplitude=draw(st.floats(3.0, 8.0)),
        walk=walk,
        noise=draw(st.floats(0.02, min(0.25, noise_per_walk * walk))),
        phi=draw(st.floats(0.0, 0.8)),
        ref_period=draw(st.sampled_from([20.0, 30.0, 60.0])),
        jitter=draw(st.floats(0.0, 3.0)),
        drop=draw(st.floats(0.0, 0.1)),
        gap_h=draw(st.floats(0.0, 3.0)),
    )


class Weather:
    """The true temperature at any instant: a 1-second grid, linearly interpolated."""

    def __init__(self, scene: Scene, rng: np.random.Generator) -> None:
        self.grid = np.arange(START - 7200.0, END + 3600.0, 1.0)
        walk = np.cumsum(rng.normal(0.0, scene.walk / math.sqrt(60.0), self.grid.size))
        phase = rng.uniform(0.0, 2 * math.pi)
        self.values = (scene.mean + walk - walk.mean()
                       + scene.amplitude * np.sin(2 * math.pi * (self.grid - START) / DAY + phase))

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, self.grid, self.values)


def instants(rng: np.random.Generator, period: float, jitter: float, drop: float) -> np.ndarray:
    """Reporting instants: a grid at a random phase, jittered, with random losses."""
    t = START + rng.uniform(0.0, period) + np.arange(int(DAY / period)) * period
    t = t + rng.normal(0.0, jitter, t.size)
    return t[rng.random(t.size) >= drop]


def ar1(rng: np.random.Generator, n: int, sigma: float, phi: float) -> np.ndarray:
    shocks = rng.normal(0.0, sigma * math.sqrt(1.0 - phi * phi), n)
    return np.asarray(lfilter([1.0], [1.0, -phi], shocks))


@dataclass(frozen=True)
class Fault:
    offset: float = 0.0
    gain: float = 1.0
    lag_s: float = 0.0
    noise: float = 0.0
    """Extra white noise, degC."""
    stuck_from: float | None = None
    """Fraction of the day after which the device repeats its last value."""
    step_at: float | None = None
    step: float = 0.0


def pair(scene: Scene, fault: Fault = Fault()) -> tuple[Series, Series]:
    """(device, reference) for one day of ``scene`` with ``fault`` injected."""
    rng = np.random.default_rng(scene.seed)
    truth = Weather(scene, rng)
    ref_t = instants(rng, scene.ref_period, scene.jitter, 0.02)
    reference = Series(ref_t, truth(ref_t) + rng.normal(0.0, 0.02, ref_t.size))

    t = instants(rng, MINUTE, scene.jitter, scene.drop)
    gap_start = START + rng.uniform(0.0, DAY - scene.gap_h * 3600.0)
    t = t[(t < gap_start) | (t >= gap_start + scene.gap_h * 3600.0)]
    v = fault.gain * truth(t - fault.lag_s) + fault.offset
    v = v + ar1(rng, t.size, scene.noise, scene.phi) + rng.normal(0.0, fault.noise, t.size)
    if fault.step_at is not None:
        v = np.where(t >= START + fault.step_at * DAY, v + fault.step, v)
    if fault.stuck_from is not None:
        cut = START + fault.stuck_from * DAY
        before = v[t < cut]
        v = np.where(t >= cut, before[-1] if before.size else v[0], v)
    v[rng.random(v.size) < 0.01] = np.nan  # the device said null
    dup = rng.random(t.size) < 0.01  # a buffer flushed twice
    t, v = np.concatenate([t, t[dup]]), np.concatenate([v, v[dup]])
    order = rng.permutation(t.size)  # arrival order is not time order
    return Series(t[order], v[order]), reference


def judge(scene: Scene, fault: Fault = Fault(), spec: SensorSpec = SPEC,
          units: list[tuple[str, float, float]] | None = None) -> StreamVerdict:
    device, reference = pair(scene, fault)
    verdict = evaluate_stream(device, reference, spec, START, END, units=units)
    check_shape(verdict)
    return verdict


def check_shape(v: StreamVerdict) -> None:
    """What every verdict must look like, whatever the data."""
    assert v.status in ("pass", "fail", "insufficient_data")
    assert all(c.cause in FINDING_CAUSES for c in v.causes)
    assert all(0.0 <= c.confidence <= 1.0 for c in v.causes)
    assert [c.confidence for c in v.causes] == sorted((c.confidence for c in v.causes),
                                                      reverse=True)
    assert all(c.evidence for c in v.causes)
    json.dumps(v.metrics.as_dict(), allow_nan=False)
    if v.status == "pass":
        assert v.severity == "none" and not v.causes and v.onset is None
    if v.status == "fail":
        assert v.severity in ("minor", "major", "critical") and v.action and v.failed


def top(v: StreamVerdict) -> str | None:
    return v.causes[0].cause if v.causes else None


# --------------------------------------------------------------------------- properties


@PROPERTY
@given(scenes(), st.floats(-0.1, 0.1), st.floats(0.99, 1.01))
def test_healthy_device_passes(scene: Scene, offset: float, gain: float) -> None:
    v = judge(scene, Fault(offset=offset, gain=gain))
    assert v.status == "pass", (v.failed, v.metrics)
    assert abs(v.metrics.bias - (offset + (gain - 1) * scene.mean)) < 0.15
    assert v.metrics.n >= 1000


@PROPERTY
@given(scenes(), st.floats(1.5, 5.0), st.sampled_from([-1.0, 1.0]))
def test_offset_is_offset_drift(scene: Scene, size: float, sign: float) -> None:
    v = judge(scene, Fault(offset=sign * size))
    assert v.status == "fail"
    assert top(v) == "offset_drift", v.causes
    assert abs(v.metrics.bias - sign * size) < 0.1
    assert "bias" in v.failed
    assert v.onset is None  # the offset is older than the window


@PROPERTY
@given(scenes(), st.one_of(st.floats(1.15, 1.5), st.floats(0.6, 0.85)))
def test_gain_is_gain_drift(scene: Scene, gain: float) -> None:
    v = judge(scene, Fault(gain=gain))
    assert v.status == "fail"
    assert top(v) == "gain_drift", v.causes
    assert abs(v.metrics.gain - gain) < 0.05


@PROPERTY
@given(scenes(noise_per_walk=2.0), st.floats(10.0, 30.0))
def test_late_clock_is_time_lag(scene: Scene, minutes: float) -> None:
    """A lag is seen only through the changes both streams share: the scene keeps the
    device's noise within twice the weather's one-minute step. (Beyond that a 10-minute
    lag is not reliably visible in one day: white noise of 0.12 degC against a 0.03 degC
    step hides it about half the time.)"""
    v = judge(scene, Fault(lag_s=minutes * MINUTE))
    assert v.status == "fail"
    assert top(v) == "time_lag", v.causes
    assert abs(v.metrics.lag_s - minutes * MINUTE) <= MINUTE


def observed_around(device: Series, at: float) -> tuple[float, float]:
    """The last valid device reading before ``at`` and the first at or after it: an event
    in a gap (or behind a null) can only be placed somewhere in the gap."""
    t = device.ts[np.isfinite(device.values)]
    return float(t[t < at].max(initial=START)), float(t[t >= at].min(initial=END))


@PROPERTY
@given(scenes(), st.one_of(st.just(0.0), st.floats(0.3, 0.5)))
def test_stuck_device_is_stuck(scene: Scene, stuck_from: float) -> None:
    v = judge(scene, Fault(stuck_from=stuck_from))
    assert v.status == "fail"
    assert top(v) == "stuck", v.causes
    assert v.severity == "critical"
    if stuck_from > 0:
        # the stuck value is the last real reading, so the flat spell starts there
        before, after = observed_around(pair(scene)[0], START + stuck_from * DAY)
        assert v.onset is not None
        assert before - 5 * MINUTE <= v.onset <= after + 5 * MINUTE


@PROPERTY
@given(scenes(), st.floats(1.2, 2.5))
def test_scatter_is_noise(scene: Scene, sigma: float) -> None:
    v = judge(scene, Fault(noise=sigma))
    assert v.status == "fail"
    assert top(v) == "noise", v.causes


@PROPERTY
@given(scenes(), st.floats(0.35, 0.65), st.floats(2.0, 4.0), st.sampled_from([-1.0, 1.0]))
def test_step_offset_has_onset(scene: Scene, at: float, size: float, sign: float) -> None:
    v = judge(scene, Fault(step_at=at, step=sign * size))
    assert v.status == "fail"
    assert top(v) == "offset_drift", v.causes
    _, after = observed_around(pair(scene)[0], START + at * DAY)
    assert v.onset is not None
    assert START + at * DAY - 5 * MINUTE <= v.onset <= after + 5 * MINUTE


@PROPERTY
@given(scenes(), st.integers(0, 50))
def test_too_few_samples_is_insufficient(scene: Scene, keep: int) -> None:
    """A device that sent at most 50 readings of a day the reference reported through
    fails on its coverage, as one that sent 61 (enough to judge its figures) does: fewer
    readings are not less of a dropout. A silent reference leaves the window unjudged."""
    device, reference = pair(scene)
    few = Series(device.ts[:keep], device.values[:keep])
    v = evaluate_stream(few, reference, SPEC, START, END)
    check_shape(v)
    assert v.status == "fail" and v.failed == ("coverage",)
    assert v.severity == "major"
    assert top(v) == "dropout"
    assert "device" in v.action

    silent = evaluate_stream(device, Series(reference.ts[:keep], reference.values[:keep]),
                             SPEC, START, END)
    assert silent.status == "insufficient_data"
    assert top(silent) is None and "reference" in silent.action


@PROPERTY
@given(scenes(), st.floats(-0.3, 0.3))
def test_wrong_unit_is_unit_mismatch(scene: Scene, drift: float) -> None:
    """A device sending degF: the candidates are given by hand, as pint would give them."""
    device, reference = pair(scene, Fault(offset=drift))
    in_f = Series(device.ts, device.values * 1.8 + 32.0)
    candidates = [("K", 1.0, 273.15), ("degF", 1.8, 32.0)]
    v = evaluate_stream(in_f, reference, SPEC, START, END, units=candidates)
    check_shape(v)
    assert top(v) == "unit_mismatch", v.causes
    assert "degF" in v.causes[0].evidence
    assert v.severity == "critical"
    assert not {"gain_drift", "offset_drift"} & {c.cause for c in v.causes}

    without = evaluate_stream(in_f, reference, SPEC, START, END, units=[])
    assert top(without) != "unit_mismatch"


# --------------------------------------------------------------------------- examples


def test_unit_candidates_picks_the_ratio_that_fits() -> None:
    candidates = [("Pa", 100.0, 0.0), ("kPa", 0.1, 0.0), ("inHg", 0.02953, 0.0)]
    found = unit_candidates(100.02, -3.0, (990.0, 1030.0), candidates, tolerance=5.0)
    assert [m.name for m in found] == ["Pa"]
    assert found[0].explained > 0.99
    assert unit_candidates(1.0005, 0.2, (990.0, 1030.0), candidates, tolerance=5.0) == ()
    # degC reported as K: the offset, not the gain, gives it away.
    kelvin = unit_candidates(1.0, 273.3, (5.0, 25.0), [("K", 1.0, 273.15)], tolerance=1.0)
    assert kelvin and kelvin[0].remaining == pytest.approx(0.15, abs=1e-9)


def test_span_error_around_the_mean_is_gain_drift() -> None:
    """A gain error pivoting on the day's mean has no bias at all, and is still gain."""
    scene = Scene(7, 15.0, 5.0, 0.04, 0.1, 0.5, 60.0, 1.0, 0.02, 0.0)
    device, reference = pair(scene)
    pivot = Series(device.ts, 15.0 + 1.12 * (device.values - 15.0))
    v = evaluate_stream(pivot, reference, SPEC, START, END)
    assert v.status == "fail" and v.failed == ("gain",)
    assert top(v) == "gain_drift"
    assert v.onset is None


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.floats(1.15, 1.3), st.floats(-0.45, -0.3),
       st.floats(0.4, 0.8))
@example(seed=72784, gain=1.15625, offset=-0.375, amplitude=0.4375)  # cannot tell
@example(seed=7, gain=1.2, offset=-0.46 + 0.05, amplitude=0.5)  # the f21 day: fails
def test_a_window_failing_on_its_gain_alone_names_the_gain(seed: int, gain: float,
                                                            offset: float,
                                                            amplitude: float) -> None:
    """Issue 21 (matrix fleet f21): a thermometer with an offset of -0.46 degC, inside
    its 0.5 tolerance, whose span turned 1.2 over a cold day that moved half a degree.
    The window fails on its gain alone (1.197 +- 0.038), and the offset, which no check
    fails, took four fifths of the "systematic deviation" from it: neither cause was
    named, and the technician read "unknown cause". An offset the tolerance allows is the
    unit's, not a rival explanation of a failing slope.

    Where the day moved least and the span error is smallest the window may not be able
    to tell, and says so: the gain indeterminate, never a healthy pass on its evidence.
    300 random draws over these ranges all fail on the gain; hypothesis found one that
    does not, at the ranges' corner (seed 72784, gain 1.156, amplitude 0.44: the gain
    read 1.094 +- 0.015, its interval reaching inside the 0.05 tolerance, "gain
    indeterminate, insufficient excitation")."""
    scene = Scene(seed, 5.0, amplitude, 0.02, 0.05, 0.5, 60.0, 1.0, 0.02, 0.0)
    device, reference = pair(scene)
    span = Series(device.ts, 5.0 + gain * (device.values - 5.0) + offset)
    v = evaluate_stream(span, reference, SPEC, START, END)
    if v.status == "pass":
        assert [name for name, _ in v.indeterminate] == ["gain"], (v.indeterminate,
                                                                   v.metrics)
        assert not v.causes
        return
    assert v.failed == ("gain",), (v.failed, v.metrics)
    assert top(v) == "gain_drift", v.causes


def test_a_late_device_on_a_trending_day_stays_a_lag_beside_an_offset_in_tolerance(
        ) -> None:
    """The counterpart of the rule above (a review of it): a device 7-40 minutes late on a
    day whose temperature trends, with an offset ramp inside the bias tolerance, fits a
    slope of its own; with the intercept out of the share that slope took ``time_lag``'s
    first place in 27 of 200 such windows (3 before), sending a technician to span a
    unit whose clock is wrong. Beside a lag beyond tolerance the intercept still counts:
    of 60 such windows, at most 3 name the gain first."""
    gained = lagged = 0
    for i in range(60):
        rng = np.random.default_rng(1000 + i)
        lag_s, ramp = rng.uniform(400, 2400), rng.uniform(0.3, 0.8) * rng.choice([-1, 1])
        amplitude, trend = rng.uniform(0.3, 1.0), rng.uniform(1, 4) * rng.choice([-1, 1])
        scene = Scene(20_000 + i, 10.0, amplitude, 0.02, 0.05, 0.5, 60.0, 1.0, 0.02, 0.0)
        draw = np.random.default_rng(scene.seed)
        weather = Weather(scene, draw)

        def truth(t: np.ndarray, weather: Weather = weather, trend: float = trend
                  ) -> np.ndarray:
            return weather(t) + trend * (t - START) / DAY

        ref_t = instants(draw, 60.0, 1.0, 0.02)
        reference = Series(ref_t, truth(ref_t) + draw.normal(0, 0.02, ref_t.size))
        t = instants(draw, MINUTE, 1.0, 0.02)
        values = truth(t - lag_s) + ar1(draw, t.size, 0.05, 0.5) + ramp * (t - START) / DAY
        v = evaluate_stream(Series(t, values), reference, SPEC, START, END)
        gained += top(v) == "gain_drift"
        lagged += top(v) == "time_lag"
    assert gained <= 3 and lagged >= 55, (gained, lagged)


def test_offset_on_a_narrow_range_is_not_called_gain() -> None:
    """Pressure moves a few hPa around 1013: a gain and an offset fit the day equally well,
    and the likelier offset must win unless the gain is measurably off."""
    tol = Tolerance(bias=0.5, gain=0.01, rmse=0.8, r2_min=0.9, lag_s=300.0, window_s=DAY,
                    min_samples=60)
    spec = SensorSpec("pressure", "[pressure]", "hPa", (300.0, 1100.0), MINUTE, tol)
    rng = np.random.default_rng(5)
    t = START + MINUTE * np.arange(1440) + 5.0
    p = (1013.0 + np.cumsum(rng.normal(0, 0.05, 1440))
         + 2.0 * np.sin(2 * math.pi * np.arange(1440) / 720))
    device = Series.of(t, p + 1.5 + rng.normal(0, 0.2, 1440))
    v = evaluate_stream(device, Series.of(t + 20.0, p), spec, START, END)
    assert top(v) == "offset_drift"
    in_pa = Series.of(t, 100.0 * (p + rng.normal(0, 0.2, 1440)))
    v = evaluate_stream(in_pa, Series.of(t + 20.0, p), spec, START, END,
                        units=[("Pa", 100.0, 0.0), ("kPa", 0.1, 0.0)])
    assert [c.cause for c in v.causes] == ["unit_mismatch"]


def test_step_onset_needs_a_clear_step() -> None:
    t = START + MINUTE * np.arange(600.0)
    rng = np.random.default_rng(3)
    step = np.where(np.arange(600) >= 420, 2.0, 0.0) + rng.normal(0, 0.1, 600)
    assert step_onset(t, step, 0.5) == t[420]
    assert step_onset(t, rng.normal(0, 0.1, 600), 0.5) is None  # nothing happened
    assert step_onset(t, step + 1.0, 0.5) is None  # already out of tolerance at the start


def test_metrics_json_rounds_and_marks_undefined() -> None:
    ts = START + MINUTE * (np.arange(100) + 0.5)
    device = Series.of(ts, 20.0 + np.linspace(0, 1, 100) * math.pi)
    flat = Series.of(ts, np.full(100, 20.0))
    m = compute_metrics(align(device, flat, MINUTE, START, START + 100 * MINUTE))
    d = m.as_dict()
    assert {"n", "bias", "gain", "offset", "rmse", "r2", "lag_s"} <= set(d)
    assert d["n"] == 100 and isinstance(d["n"], int)
    assert d["r2"] is None and d["gain"] is None and d["offset"] is None
    assert d["bias"] == float(f"{np.mean(np.linspace(0, 1, 100) * math.pi):.6g}")
    json.dumps(d, allow_nan=False)


def test_flat_device_has_zero_r2_against_a_moving_reference() -> None:
    ts = START + MINUTE * (np.arange(100) + 0.5)
    m = compute_metrics(align(Series.of(ts, np.full(100, 3.0)), Series.of(ts, np.sin(ts / 600)),
                              MINUTE, START, START + 100 * MINUTE))
    assert m.r2 == 0.0 and m.gain == pytest.approx(0.0, abs=1e-12)


def test_series_is_immutable_and_copies() -> None:
    ts, values = np.array([2.0, 1.0]), np.array([5.0, np.nan])
    s = Series(ts, values)
    assert ts.flags.writeable
    with pytest.raises(ValueError):
        s.values[0] = 1.0
    with pytest.raises(ValueError, match="elements"):
        Series(np.arange(3.0), np.arange(2.0))


@CROSS_CHECK
@given(st.floats(0.0, 59.9), st.floats(0.0, 59.9), st.floats(0.0, 3.0), st.integers(0, 2**32 - 1))
def test_jittered_grids_keep_one_reading_per_bin(
    dev_phase: float, ref_phase: float, jitter: float, seed: int
) -> None:
    """Readings on two 1-minute grids at any phases, with up to +-3 s of jitter, must not
    be split across bin edges: at most one bin at the window's ends may be lost."""
    rng = np.random.default_rng(seed)
    grid = START + MINUTE * np.arange(1440)
    device = Series(grid + dev_phase + rng.uniform(-jitter, jitter, grid.size),
                    rng.normal(size=grid.size))
    reference = Series(grid + ref_phase + rng.uniform(-jitter, jitter, grid.size),
                       rng.normal(size=grid.size))
    a = align(device, reference, MINUTE, START, END)
    assert a.device_coverage >= 1438 / 1440
    assert a.reference_coverage >= 1438 / 1440


# --------------------------------------------------------------------------- cross-checks


def loop_align(device: Series, reference: Series, interval: float, start: float, end: float,
               phase: float) -> tuple[list[float], list[float], int]:
    """The obvious per-reading loop ``align`` must agree with."""
    n_bins = max(0, math.ceil((end - start) / interval - 1e-9))
    out = []
    for series in (device, reference):
        sums, counts = [0.0] * n_bins, [0] * n_bins
        for t, v in zip(series.ts.tolist(), series.values.tolist(), strict=True):
            if not start <= t < end or not math.isfinite(v):
                continue
            k = min(max(math.floor((t - start - phase) / interval), 0), n_bins - 1)
            sums[k] += v
            counts[k] += 1
        out.append([s / c if c else math.nan for s, c in zip(sums, counts, strict=True)])
    nulls = sum(1 for t, v in zip(device.ts, device.values, strict=True)
                if start <= t < end and not math.isfinite(v))
    return out[0], out[1], nulls


def random_series(draw: st.DrawFn, lo: float, hi: float, interval: float) -> Series:
    n = draw(st.integers(0, 40))
    ts = [draw(st.floats(lo, hi)) for _ in range(n)]
    ts += [ts[i] for i in range(0, n, 7)]  # duplicates
    values = [draw(st.one_of(st.floats(-50, 50), st.just(math.nan))) for _ in ts]
    return Series(np.array(ts), np.array(values))


@st.composite
def align_inputs(draw: st.DrawFn) -> tuple[Series, Series, float, float, float, float]:
    interval = draw(st.sampled_from([1.0, 10.0, 60.0, 37.5]))
    start = START + draw(st.floats(0, 1000))
    end = start + draw(st.floats(0, 30)) * interval
    lo, hi = start - 2 * interval, end + 2 * interval
    phase = draw(st.floats(-0.5, 0.499)) * interval
    return (random_series(draw, lo, hi, interval), random_series(draw, lo, hi, interval),
            interval, start, end, phase)


@CROSS_CHECK
@given(align_inputs())
def test_align_matches_a_loop(args: tuple[Series, Series, float, float, float, float]) -> None:
    device, reference, interval, start, end, phase = args
    a = align(device, reference, interval, start, end, edge_phase_s=phase)
    dev, ref, nulls = loop_align(device, reference, interval, start, end, phase)
    np.testing.assert_allclose(a.device, dev, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.reference, ref, rtol=1e-12, atol=1e-12)
    expected = len(dev)
    assert a.expected_bins == expected
    assert a.device_nulls == nulls
    covered = sum(1 for x in dev if math.isfinite(x))
    assert a.device_coverage == (covered / expected if expected else 0.0)
    # the automatic phase bins the same readings, only possibly in other bins
    auto = align(device, reference, interval, start, end)
    assert np.isfinite(auto.device).any() == np.isfinite(a.device).any()


@st.composite
def regressions(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(3, 200))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ref = rng.normal(draw(st.floats(-100, 100)), draw(st.floats(0.1, 20)), n)
    slope = draw(st.one_of(st.just(0.0), st.floats(0.01, 3), st.floats(-3, -0.01)))
    noise = draw(st.one_of(st.just(0.0), st.floats(0.01, 5.0)))
    dev = slope * ref + draw(st.floats(-50, 50)) + rng.normal(0, noise, n)
    dev[rng.random(n) < 0.1] = np.nan
    return dev, ref


@CROSS_CHECK
@given(regressions())
def test_fit_matches_linregress(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    dev, ref = arrays
    ts = START + MINUTE * (np.arange(ref.size) + 0.5)
    a = align(Series.of(ts, dev), Series.of(ts, ref), MINUTE, START, START + ref.size * MINUTE,
              edge_phase_s=0.0)
    m: Metrics = compute_metrics(a)
    ok = np.isfinite(dev)
    if ok.sum() < 3:
        return
    expected = stats.linregress(ref[ok], dev[ok])
    assert m.n == ok.sum()
    assert m.gain == pytest.approx(expected.slope, rel=1e-7, abs=1e-9)
    assert m.offset == pytest.approx(expected.intercept, rel=1e-7, abs=1e-7)
    if np.ptp(dev[ok]) == 0:  # linregress says nan; a flat device tracks none of the ref
        assert m.r2 == 0.0
    else:
        assert m.r2 == pytest.approx(expected.rvalue**2, rel=1e-7, abs=1e-9)
    diff = dev[ok] - ref[ok]
    assert m.bias == pytest.approx(sum(diff.tolist()) / ok.sum(), rel=1e-9, abs=1e-9)
    assert m.rmse == pytest.approx(math.sqrt(sum((diff**2).tolist()) / ok.sum()), rel=1e-9)


def brute_correlation(d: np.ndarray, r: np.ndarray, k: int) -> float:
    """Pearson r of d[t] with r[t-k] over the pairs both present, by loops."""
    xs, ys = [], []
    for t in range(d.size):
        if 0 <= t - k < r.size and math.isfinite(d[t]) and math.isfinite(r[t - k]):
            xs.append(d[t])
            ys.append(r[t - k])
    if len(xs) < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return math.nan
    return float(np.corrcoef(xs, ys)[0, 1])


@CROSS_CHECK
@given(st.integers(0, 2**32 - 1), st.integers(10, 120), st.integers(0, 12))
def test_lag_correlation_matches_brute_force(seed: int, n: int, max_lag: int) -> None:
    rng = np.random.default_rng(seed)
    d, r = rng.normal(size=n), rng.normal(size=n)
    d[rng.random(n) < 0.15] = np.nan
    r[rng.random(n) < 0.15] = np.nan
    lags, corr, _ = lag_correlation(d, r, max_lag)
    expected = [brute_correlation(d, r, int(k)) for k in lags]
    np.testing.assert_allclose(corr, expected, atol=1e-9)


@CROSS_CHECK
@given(st.integers(0, 2**32 - 1), st.integers(-15, 15))
def test_estimate_lag_finds_a_known_shift(seed: int, shift: int) -> None:
    """A shifted random walk: the estimate agrees with a brute-force search of the
    correlation of the one-bin changes. A shift of one bin is found but not claimed: a
    lag is resolved from two intervals of the series on (``lag.RESOLVABLE_INTERVALS``)."""
    rng = np.random.default_rng(seed)
    n = 400
    walk = np.cumsum(rng.normal(size=n + 40))
    ref = walk[20:20 + n] + rng.normal(0, 0.05, n)
    dev = walk[20 - shift:20 - shift + n] + rng.normal(0, 0.05, n)
    ts = START + MINUTE * (np.arange(n) + 0.5)
    a = align(Series.of(ts, dev), Series.of(ts, ref), MINUTE, START, START + n * MINUTE)
    est = estimate_lag(a, 20 * MINUTE)
    dd, dr = np.diff(dev), np.diff(ref)
    brute = max(range(-20, 21), key=lambda k: brute_correlation(dd, dr, k))
    assert brute == shift
    assert abs(est.lag_s - brute * MINUTE) <= 0.5 * MINUTE
    assert est.resolved
    assert est.below_resolution == (abs(shift) < 2)
    assert est.peak_corr > est.corr_at_zero or shift == 0


BAROMETER = SensorSpec(
    name="pressure", quantity="[pressure]", unit="hPa", range=(300.0, 1100.0), interval_s=60.0,
    tolerance=Tolerance(bias=1.0, gain=0.02, rmse=1.5, r2_min=0.9, lag_s=300.0,
                        window_s=86400.0, min_samples=60))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_healthy_barometer_on_a_calm_morning_is_not_a_gain_fault(seed: int) -> None:
    """A reference that moves 1-2 hPa over the window cannot pin the gain to ±0.02: a
    healthy barometer with ±0.3 hPa of noise must pass, not fail on its fitted slope."""
    rng = np.random.default_rng(seed)
    t = 1_764_057_600.0 + 60.0 * np.arange(480)
    weather = 1013.0 - 0.25 * (t - t[0]) / 3600 + 0.3 * np.cumsum(rng.normal(0, 0.05, t.size))
    reference = Series(t + 1, weather + rng.normal(0, 0.05, t.size))
    device = Series(t + 5, weather + rng.normal(0, 0.3, t.size))
    verdict = evaluate_stream(device, reference, BAROMETER, t[0], t[-1] + 60)
    assert verdict.status == "pass", (verdict.metrics.as_dict(), verdict.causes)
    # A standard uncertainty of 0.2 hPa (twice what the daemon takes from a certificate's
    # U = 0.2 at k = 2) is mostly systematic: it must not inflate the Deming gain.
    certified = evaluate_stream(device, reference, BAROMETER, t[0], t[-1] + 60,
                                reference_uncertainty=0.2)
    assert certified.status == "pass", (certified.metrics.as_dict(), certified.causes)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20_000), start=st.floats(0.0, 1.0),
       misses=st.integers(0, 3))
def test_the_rounding_check_a_chunk_at_a_time_is_the_whole_one(seed: int, n: int,
                                                               start: float,
                                                               misses: int) -> None:
    """``diagnose.rounded_from`` stops at the first chunk with a reading that is no
    rounding of the unit; its answer is that of ``units.rounded_fit`` over every reading
    from ``start`` on, wherever the misses fall."""
    rng = np.random.default_rng(seed)
    reference = rng.uniform(3.0, 60.0, n)
    device = np.rint(0.001 * reference / 0.1) * 0.1  # ug/m3 sent as mg/m3 at 0.1
    device[rng.integers(0, n, misses)] += 0.5
    slack = 1.0 + 0.05 * reference
    first = int(start * (n - 1))
    whole = bool(rounded_fit(device, reference, 0.001, 0.0, 0.1, slack)[first:].all())
    assert rounded_from(device, reference, 0.001, 0.0, 0.1, slack, first) == whole


def test_a_gain_that_would_put_the_unit_far_off_at_zero_carries_no_offset() -> None:
    """Issue 21 (matrix fleet f39): a barometer 4.5 hPa low after a slow offset ramp
    through a day whose pressure fell with it; least squares fits a gain of 0.76 with an
    intercept of +240 hPa. Through the unit's zero that gain would make it 242 hPa low at
    1010 hPa, 54 times what it is: the line pivots near the data, and the gain carries
    none of the mean difference (it carried all of it, and three windows were named
    ``gain_drift``). A cell reading half its monitor over an ozone day (30 ppb, std 12)
    still has its mean difference put down to its span."""
    tol = Tolerance(bias=1.0, gain=0.02, rmse=1.5, r2_min=0.9, lag_s=120.0,
                    window_s=43200.0, min_samples=45)
    ramp = Metrics(n=359, bias=-4.546, gain=0.757, offset=239.5, rmse=4.597, nrmse=0.457,
                   r2=0.82, residual_std=0.565, device_std=1.332, reference_std=1.594,
                   device_coverage=1.0, reference_coverage=1.0, lag_s=0.0, n_eff=2.55,
                   gain_se=0.0174, gain_n_eff=40.0)
    assert gain_through_zero(ramp, tol) == 0.0
    # the same window of a unit whose span is half: 30 ppb mean, 15 ppb low, line through 0
    cell = replace(ramp, bias=-15.0, gain=0.5, offset=0.0, reference_std=12.0,
                   residual_std=1.0, r2=0.97, n_eff=20.0)
    cell_tol = replace(tol, bias=5.0, gain=0.2, rmse=15.0)
    assert gain_through_zero(cell, cell_tol) == pytest.approx(1.0)


@CROSS_CHECK
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400), gaps=st.floats(0.0, 0.6),
       bins=st.integers(-50, 50), factor=st.integers(1, 7))
def test_the_pairs_are_those_of_the_streams_after_every_change(seed: int, n: int, gaps: float,
                                                               bins: int, factor: int) -> None:
    """``Aligned.paired`` is made once and kept, read-only; a window derived from it
    (a clock shift, a fault's start, coarser bins, a replaced stream) has the pairs of its
    own streams, never those kept for the window it came from."""
    rng = np.random.default_rng(seed)
    ts = START + np.arange(n) * 60.0 + rng.uniform(0.0, 1.0, n)
    values = rng.normal(20.0, 1.0, n)
    keep_d, keep_r = rng.random(n) >= gaps, rng.random(n) >= gaps
    aligned = align(Series(ts[keep_d], values[keep_d]), Series(ts[keep_r], values[keep_r] + 0.1),
                    60.0, START, START + n * 60.0)

    def fresh(a: Aligned) -> np.ndarray:
        return np.isfinite(np.asarray(a.device)) & np.isfinite(np.asarray(a.reference))

    first = aligned.paired
    assert first is aligned.paired  # kept
    assert not first.flags.writeable
    np.testing.assert_array_equal(first, fresh(aligned))
    t_mid = float(aligned.t[aligned.t.size // 2])
    derived = (shift_device(aligned, bins), since(aligned, t_mid), coarsen(aligned, factor),
               replace(aligned, reference=np.where(rng.random(aligned.t.size) < 0.5, np.nan,
                                                   aligned.reference)))
    for other in derived:
        np.testing.assert_array_equal(other.paired, fresh(other))
        assert other.n_paired == int(np.count_nonzero(fresh(other)))
