"""Drift against a baseline, change-point onset, pint-derived unit confusions, and the
audit's baseline plumbing.

Cross-checks: KS and Wasserstein against scipy.stats; PSI against the textbook formula
worked by hand in the test. Onsets are checked on synthetic residual series with
autocorrelated (AR(1)) noise, the kind a real device-reference difference has.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.signal import lfilter

from auditd.adapters.store import Store
from auditd.core import Series, evaluate_stream, step_onset
from auditd.core.drift import (
    PSI_SIGNIFICANT,
    WASSERSTEIN_FRACTION,
    _ks_and_wasserstein,
    drift,
    ks_critical,
    ks_drift,
    ks_statistic,
    psi,
    wasserstein,
)
from auditd.core.stats import effective_n
from auditd.core.units import default_unit_candidates
from auditd.domain.audit_plan import baseline_window, unit_confusions
from auditd.model import Finding, SensorSpec, Status, Tolerance

START = 1_764_028_800.0
DAY = 86_400.0
END = START + DAY
MINUTE = 60.0
TOL = Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.90, lag_s=300.0, window_s=DAY,
                min_samples=60)
SPEC = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), MINUTE, TOL)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ar1(rng: np.random.Generator, n: int, sigma: float, phi: float) -> np.ndarray:
    shocks = rng.normal(0.0, sigma * math.sqrt(1.0 - phi * phi), n)
    return np.asarray(lfilter([1.0], [1.0, -phi], shocks))


# --------------------------------------------------------------------------- drift figures


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.floats(-1.0, 1.0), st.floats(0.5, 2.0))
def test_ks_and_wasserstein_match_scipy(seed: int, shift: float, scale: float) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, 500), rng.normal(shift, scale, 300)
    ks = ks_drift(a, b)
    assert ks.statistic == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
    assert wasserstein(a, b) == pytest.approx(stats.wasserstein_distance(a, b), abs=1e-12)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 2000), m=st.integers(1, 2000),
       shift=st.floats(-1.0, 1.0), quantum=st.sampled_from([0.0, 0.01, 0.5]))
def test_ks_statistic_and_wasserstein_are_scipys_to_the_bit(seed: int, n: int, m: int,
                                                            shift: float,
                                                            quantum: float) -> None:
    """The drift figures taken by scipy's own steps without its p-value and checks
    (``drift.ks_statistic``, ``drift.wasserstein``) are scipy's numbers exactly, ties of
    quantised readings (many equal values) included."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, n), rng.normal(shift, 1.3, m)
    if quantum:
        a, b = np.round(a / quantum) * quantum, np.round(b / quantum) * quantum
    assert ks_statistic(a, b) == float(stats.ks_2samp(a, b).statistic)
    assert wasserstein(a, b) == float(stats.wasserstein_distance(a, b))
    # drift() takes both from one pass over the two distribution functions
    assert _ks_and_wasserstein(a, b) == (ks_statistic(a, b), wasserstein(a, b))


@pytest.mark.parametrize(("n", "m"), [(10_000, 9_999), (10_001, 300), (86_400, 1_200)])
def test_ks_statistic_is_scipys_on_either_side_of_its_exact_route(n: int, m: int) -> None:
    """Up to 10,000 values a side scipy reports the exact fraction, beyond it the plain
    difference of the two distribution functions: ``drift.ks_statistic`` follows it."""
    rng = np.random.default_rng(n + m)
    a, b = rng.normal(0, 1, n), rng.normal(0.1, 1.1, m)
    assert ks_statistic(a, b) == float(stats.ks_2samp(a, b).statistic)


def test_independent_samples_keep_nearly_their_size() -> None:
    """White samples (the drift test's effective sizes): the median keeps more than 80 %
    of its size, and at most 1 % fall below 60 %. Not every sample: the size is read off
    the sample's own correlations at their upper bound, and a white sample of 300 shows
    chance correlations that charge it (0.45 % of them, on fixed seeds, below 60 %); a
    property test asserting it of each sample failed one draw in a few hundred."""
    rng = np.random.default_rng(7)
    sizes = np.array([effective_n(rng.normal(0.0, 1.0, 300)) for _ in range(2000)])
    assert float(np.median(sizes)) > 0.8 * 300
    assert float(np.mean(sizes < 0.6 * 300)) <= 0.01


def test_ks_critical_is_the_textbook_value() -> None:
    # c(0.05) = 1.358, the familiar two-sample constant
    assert ks_critical(100, 100, alpha=0.05) == pytest.approx(1.358 * math.sqrt(2 / 100),
                                                              rel=1e-3)


def test_effective_size_of_ar1_noise() -> None:
    x = ar1(np.random.default_rng(1), 20_000, 1.0, 0.8)
    assert effective_n(x) == pytest.approx(20_000 * 0.2 / 1.8, rel=0.15)


def test_autocorrelated_residuals_of_one_process_are_not_drift() -> None:
    """The raw KS p-value calls wandering noise "different" most of the time; judged with
    effective sizes it rarely does."""
    raw = flagged = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        a, b = ar1(rng, 1440, 0.2, 0.95), ar1(rng, 1440, 0.2, 0.95)
        raw += stats.ks_2samp(a, b).pvalue < 0.01
        flagged += ks_drift(a, b).statistic > ks_drift(a, b).critical
    assert flagged <= 2 < raw


def test_psi_matches_a_hand_worked_example() -> None:
    """Baseline 0..99: deciles put ten values in each bin (expected share 0.1). The current
    sample puts 20, 20, 10, 10, 10, 10, 10, 10, 0, 0 values (of 100) in the ten bins:
    PSI = sum((a - e) ln(a / e)) with a = 0.2 twice, 0.1 six times and epsilon twice."""
    baseline = np.arange(100.0)
    counts = [20, 20, 10, 10, 10, 10, 10, 10, 0, 0]
    current = np.concatenate([np.full(c, 5.0 + 10.0 * i) for i, c in enumerate(counts)])
    eps = 1e-4
    by_hand = 2 * (0.2 - 0.1) * math.log(0.2 / 0.1) + 2 * (eps - 0.1) * math.log(eps / 0.1)
    assert psi(baseline, current, epsilon=eps) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand > PSI_SIGNIFICANT
    assert psi(baseline, baseline) == pytest.approx(0.0, abs=1e-12)


def test_drift_carries_its_limits_and_needs_samples() -> None:
    rng = np.random.default_rng(4)
    base, moved = rng.normal(0, 0.2, 1000), rng.normal(0.6, 0.2, 1000)
    d = drift(base, moved, bias_tolerance=0.5)
    assert d is not None and d.drifted
    assert d.wasserstein_limit == WASSERSTEIN_FRACTION * 0.5 and d.psi_limit == PSI_SIGNIFICANT
    assert d.wasserstein == pytest.approx(0.6, abs=0.05) and d.shift == pytest.approx(0.6, abs=0.05)
    assert set(d.as_dict()) >= {"ks_stat", "ks_critical", "wasserstein", "wasserstein_limit",
                                "psi", "psi_limit"}
    assert drift(base[:10], moved, 0.5) is None
    same = drift(base, rng.normal(0, 0.2, 1000), 0.5)
    assert same is not None and not same.drifted


# --------------------------------------------------------------------------- verdict


def day(seed: int, offset: float = 0.0, start: float = START) -> tuple[Series, Series]:
    """(device, reference) over one day from ``start``: a diurnal sine and wandering noise."""
    rng = np.random.default_rng(seed)
    t = start + MINUTE * np.arange(1440) + 7.0
    truth = 15.0 + 6.0 * np.sin(2 * math.pi * np.arange(1440) / 1440) + np.cumsum(
        rng.normal(0, 0.03, 1440))
    device = truth + offset + ar1(rng, 1440, 0.15, 0.5)
    return Series.of(t, device), Series.of(t + 20.0, truth + rng.normal(0, 0.02, 1440))


def baseline_of(seed: int) -> np.ndarray:
    from auditd.core import baseline_residuals

    dev, ref = day(seed, start=START - DAY)
    return baseline_residuals(dev, ref, MINUTE, START - DAY, START)


def test_offset_with_a_baseline_is_supported_by_drift() -> None:
    dev, ref = day(1, offset=1.5)
    plain = evaluate_stream(dev, ref, SPEC, START, END)
    v = evaluate_stream(dev, ref, SPEC, START, END, baseline_residuals=baseline_of(2))
    assert v.status == "fail" and v.causes[0].cause == "offset_drift"
    assert v.drift is not None and v.drift.drifted
    assert "Wasserstein" in v.causes[0].evidence
    assert v.causes[0].confidence > plain.causes[0].confidence
    assert plain.drift is None


def test_drift_alone_does_not_fail_a_stream() -> None:
    """A move of 0.3 degC against a 0.5 tolerance is drift worth recording, not a failure."""
    dev, ref = day(3, offset=0.3)
    v = evaluate_stream(dev, ref, SPEC, START, END, baseline_residuals=baseline_of(4))
    assert v.status == "pass" and not v.causes
    assert v.drift is not None and v.drift.wasserstein_drifted
    healthy = evaluate_stream(*day(5), SPEC, START, END, baseline_residuals=baseline_of(6))
    assert healthy.status == "pass" and healthy.drift is not None
    assert not healthy.drift.drifted


# --------------------------------------------------------------------------- onset


T = START + MINUTE * np.arange(1440.0)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.floats(0.25, 0.75), st.floats(1.0, 3.0),
       st.sampled_from([-1.0, 1.0]), st.floats(0.0, 0.8))
def test_step_onset_within_a_few_bins(seed: int, at: float, size: float, sign: float,
                                      phi: float) -> None:
    k = int(at * 1440)
    x = np.where(np.arange(1440) >= k, sign * size, 0.0) + ar1(
        np.random.default_rng(seed), 1440, 0.15, phi)
    onset = step_onset(T, x, 0.5)
    assert onset is not None
    assert abs(onset - T[k]) <= 3 * MINUTE


HOURS = START + 3600.0 * np.arange(24.0)


def test_steps_in_a_day_of_hourly_pairs_are_dated_more_often_than_not_and_never_wrongly(
        ) -> None:
    """Issue 21 (matrix fleet f26): a barometer stepped 3.5 hPa at the twelfth of a day's
    24 hourly pairs (scatter 0.7, tolerance 1). The noise scale, read from differences ten
    pairs apart, had most of them across the step: a "noise" 6.5 times the scatter, no
    change point, and the window named noise and "unknown cause" for a plain offset step.
    Measured over 2,400 steps of 3-6 tolerances after 8-16 healthy hours, in noise of
    0.4-0.6 tolerance (AR(1), phi up to 0.5): 1,725 of 2,400 dated within an hour (72 %;
    was 33 % with the lag fixed at ten), none wrongly; the rest get no onset, which near
    the noise is the honest answer. Here a fixed-seed 400: at least 60 % dated, none
    wrongly."""
    rng = np.random.default_rng(20261206)
    dated = wrong = 0
    for _ in range(400):
        at, size = int(rng.integers(8, 17)), rng.uniform(3.0, 6.0)
        x = np.where(np.arange(24) >= at, rng.choice([-1.0, 1.0]) * size * 0.5, 0.0) + ar1(
            rng, 24, rng.uniform(0.2, 0.3), rng.uniform(0.0, 0.5))
        onset = step_onset(HOURS, x, 0.5)
        if onset is not None:
            dated += abs(onset - HOURS[at]) <= 3600.0
            wrong += abs(onset - HOURS[at]) > 3600.0
    assert wrong == 0
    assert dated >= 240, dated


RAMP_RISE = 2.0
"""The ramp climbs four tolerances by the end of the window."""
RAMP_ERROR_TOLERANCES = 0.75


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.floats(0.2, 0.6), st.sampled_from([-1.0, 1.0]),
       st.floats(0.0, 0.8))
def test_ramp_onset_within_a_stated_climb(seed: int, at: float, sign: float,
                                          phi: float) -> None:
    """Stated error: the onset lies within the time the ramp takes to climb 0.75 of a bias
    tolerance (0.375 degC; 2.5-4 hours at these slopes). Measured over 1000 such ramps:
    median 0.16, 99th percentile 0.46, worst 0.54 tolerance of climb; the error is
    early rather than late, from slowly wandering noise (phi near 0.8) that starts the
    climb in the noise before the ramp does. No method can place a ramp's start much more
    closely than where it rises out of the noise."""
    k = int(at * 1440)
    slope = RAMP_RISE / (1440 - k)
    x = sign * slope * np.clip(np.arange(1440) - k, 0, None) + ar1(
        np.random.default_rng(seed), 1440, 0.15, phi)
    onset = step_onset(T, x, 0.5)
    assert onset is not None
    assert abs(onset - T[k]) <= (RAMP_ERROR_TOLERANCES * 0.5 / slope) * MINUTE


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.floats(0.3, 0.7), st.floats(0.0, 0.8))
def test_no_onset_for_a_device_off_before_the_window(seed: int, at: float, phi: float) -> None:
    noise = ar1(np.random.default_rng(seed), 1440, 0.15, phi)
    assert step_onset(T, noise + 1.5, 0.5) is None  # a constant offset
    k = int(at * 1440)
    worse = 1.5 + np.where(np.arange(1440) >= k, 1.5, 0.0) + noise  # off, then worse
    assert step_onset(T, worse, 0.5) is None
    assert step_onset(T, noise, 0.5) is None  # nothing happened


def test_ramp_fault_in_a_case_has_its_onset() -> None:
    """A ramp of 4 degC over the last 17 hours, through alignment, lag and the rival gain
    line of ``build_case`` (what the verdict's onset and the fault window come from): the
    onset is the ramp's start, not the moment it crossed the tolerance."""
    from auditd.core import align, build_case, compute_metrics, estimate_lag

    dev, ref = day(8)
    k, rise = 400, 4.0
    ramp = rise * np.clip(np.arange(1440) - k, 0, None) / (1440 - k)
    aligned = align(Series(dev.ts, dev.values + ramp), ref, MINUTE, START, END)
    lag = estimate_lag(aligned, 3000.0)
    case = build_case(SPEC, aligned, compute_metrics(aligned, lag=lag), lag)
    assert case.step is not None
    climb_s = RAMP_ERROR_TOLERANCES * 0.5 / (rise / (1440 - k)) * MINUTE
    assert abs(case.step - (START + k * MINUTE)) <= climb_s


# --------------------------------------------------------------------------- units from pint


CONFUSIONS = [
    # canonical, what the device really sends, truth over the day, tolerance bias, gain
    ("degC", "degF", (15.0, 6.0), 0.5, 0.05),
    ("hPa", "Pa", (1013.0, 3.0), 0.5, 0.01),
    ("V", "mV", (2.5, 1.5), 0.01, 0.01),
    ("ppm", "ppb", (450.0, 60.0), 5.0, 0.05),
]


@pytest.mark.parametrize(("canonical", "sent", "truth", "bias", "gain"), CONFUSIONS)
def test_pint_candidates_find_the_unit_sent(canonical: str, sent: str,
                                            truth: tuple[float, float], bias: float,
                                            gain: float) -> None:
    candidates = unit_confusions(canonical)
    assert candidates is not None and sent in [name for name, _, _ in candidates]
    tol = Tolerance(bias=bias, gain=gain, rmse=2 * bias, r2_min=0.9, lag_s=300.0,
                    window_s=DAY, min_samples=60)
    spec = SensorSpec("x", "[x]", canonical, (-1e9, 1e9), MINUTE, tol)
    rng = np.random.default_rng(11)
    mean, amplitude = truth
    true = mean + amplitude * np.sin(2 * math.pi * np.arange(1440) / 1440)
    _, scale, offset = next(c for c in candidates if c[0] == sent)
    device = scale * (true + rng.normal(0, 0.2 * bias, 1440)) + offset
    v = evaluate_stream(Series(T + 5.0, device), Series(T + 20.0, true), spec, START, END,
                        units=candidates)
    assert v.causes and v.causes[0].cause == "unit_mismatch", v.causes
    assert f"({sent} where {canonical}" in v.causes[0].evidence


def test_pint_candidates_match_the_fallback_table_where_both_exist() -> None:
    pint_c = {name: (s, o) for name, s, o in unit_confusions("degC") or ()}
    for name, scale, offset in default_unit_candidates("degC"):
        if name in pint_c:
            assert pint_c[name] == pytest.approx((scale, offset), rel=1e-6, abs=1e-6)
    assert unit_confusions("not-a-unit") is None


# --------------------------------------------------------------------------- baseline plumbing


def test_baseline_window_prefers_a_later_calibration() -> None:
    w = DAY
    assert baseline_window(None, None, w, START) is None
    assert baseline_window((START - 2 * w, START - w), None, w, START) == (START - 2 * w,
                                                                          START - w)
    # calibrated after the passing window: the day after the calibration is the baseline
    cal = START - 3 * w + 3600.0
    assert baseline_window((START - 4 * w, START - 3 * w), cal, w, START) == (cal, cal + w)
    # calibrated too recently for a complete window: no baseline rather than a stale one
    assert baseline_window((START - 4 * w, START - 3 * w), START - 3600.0, w, START) is None
    # calibrated before the passing window began: the passing window stands
    assert baseline_window((START - 2 * w, START - w), START - 5 * w, w, START) == (
        START - 2 * w, START - w)


def test_store_last_passing_window(tmp_path: Path) -> None:
    def finding(status: Status, start: float, sensor: str = "temperature") -> Finding:
        return Finding(kind="calibration", site="north", device="th-1", sensor=sensor,
                       status=status, severity="none" if status == "pass" else "major",
                       window_start=start, window_end=start + DAY)

    with Store(tmp_path / "s.db") as store:
        store.findings.save([finding("pass", START - 3 * DAY), finding("pass", START - 2 * DAY),
                             finding("fail", START - DAY), finding("pass", START - DAY, "rh")],
                            [], now=START)
        got = store.findings.last_passing_window("calibration", "th-1", "temperature")
        assert got == (START - 2 * DAY, START - DAY)
        assert store.findings.last_passing_window("calibration", "th-1", "temperature",
                                                  before=START - 1.5 * DAY) == (START - 3 * DAY,
                                                                                START - 2 * DAY)
        assert store.findings.last_passing_window("calibration", "th-2", "temperature") is None
        assert store.findings.last_passing_window(
            "calibration", "th-1'; DROP TABLE findings; --", "temperature") is None


def test_audit_passes_the_last_passing_window_as_baseline(tmp_path: Path) -> None:
    """Two days of one device beside its reference; the device gains +1.5 degC on day 2.
    The day-1 audit passes and becomes the baseline of the day-2 audit, whose offset
    finding then carries the drift figures."""
    from auditd.adapters.config.catalog import build_catalog, load_profiles
    from auditd.app.auditor import Auditor
    from auditd.model import Outcome, Reading, Reference
    from auditd.topics import TopicsConfig

    repo = Path(__file__).resolve().parents[1]
    ref = Reference(id="ref-north", site="north", serves=("th-north-*",),
                    sensors=("temperature",), model="ref-station")
    cat = build_catalog(load_profiles(repo / "device_profiles"), [ref],
                        {"th-north-*": "th-200"})
    rng = np.random.default_rng(12)
    ts = START + np.arange(2 * 1440) * MINUTE + 2.0
    weather = (8.0 + 5.0 * np.sin(2 * math.pi * (ts - START) / DAY)
               + np.cumsum(rng.normal(0.0, 0.03, ts.size)))
    device = weather + rng.normal(0.0, 0.08, ts.size) + np.where(ts >= START + DAY, 1.5, 0.0)
    readings = tuple(Reading("north", name, "temperature", "degC", float(t), float(v))
                     for name, values in (("ref-north", weather), ("th-north-01", device))
                     for t, v in zip(ts, values, strict=True))
    with Store(tmp_path / "audit.db") as store:
        store.readings.write_outcomes([Outcome(readings=readings)])
        auditor = Auditor(store, cat, TopicsConfig(), gateway="gw")
        first = auditor.run(START + DAY).findings
        second = auditor.run(START + 2 * DAY).findings
    assert [f.status for f in first] == ["pass"]
    assert first[0].metrics.get("ks_stat") is None  # no earlier window to compare with
    (found,) = second
    assert found.status == "fail" and found.causes[0].cause == "offset_drift"
    assert found.metrics["wasserstein"] == pytest.approx(1.5, abs=0.1)
    assert found.metrics["wasserstein_limit"] == pytest.approx(0.5 * 0.5)
    assert "Wasserstein" in found.causes[0].evidence
