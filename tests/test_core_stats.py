"""Evidence that the calibration core's statistics are honest (``auditd.core.stats``).

Three kinds of test. Textbook checks of the effective sample size against the AR(1)
formulas and simulation. Cross-checks of each line fit against an independent
implementation (total least squares by SVD for Deming, scipy.stats.linregress for OLS,
theilslopes for the robust fit). And the decision's error rates, counted over thousands
of random windows with a fixed seed: a device whose true bias sits exactly at the
tolerance's edge must fail less than 1% of the time whatever the window's length and
autocorrelation, and one 1.5 tolerances out must still be caught.

The windows are like ``test_core``'s: a diurnal sine plus random-walk weather seen by both
instruments, AR(1) device noise and a little white reference noise, on a 1-minute grid.
"""

from __future__ import annotations

import json
import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import fft as sfft
from scipy import stats
from scipy.signal import lfilter

from auditd.core import Series, censoring, evaluate_stream
from auditd.core import stats as core_stats
from auditd.core.align import Aligned
from auditd.core.checks import failed_checks
from auditd.core.fit import compute_metrics, fit_line
from auditd.core.lag import (
    NULL_FACTOR_FLOOR,
    UNDEFINED,
    _correlation,
    _correlations,
    _span,
    _spectra,
    _sums_over,
    high_pass,
    moving_mean,
    null_variance_factor,
    prefix_sums,
)
from auditd.core.stats import (
    DIRECT_LAGS,
    RHO_MAX,
    Z_ONE_SIDED_1PCT,
    ar1_coefficient,
    autocorrelations,
    cochrane_orcutt,
    confidence_z,
    deming,
    effective_n,
    effective_size,
    equivalent_ar1,
    huber_line,
    interval_mean_acf,
    lag1_autocorrelation,
    mean_interval,
    sequence_effective_size,
    slope_effective_size,
    slope_effective_size_under,
)
from auditd.model import SensorSpec, Tolerance

MINUTE = 60.0
DAY_BINS = 1440
TOL = Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.90, lag_s=300.0, window_s=86400.0,
                min_samples=20)
CROSS = settings(max_examples=60, deadline=None)


# --------------------------------------------------------------------------- generator


def ar1(rng: np.random.Generator, n: int, sigma: float, phi: float) -> np.ndarray:
    """Stationary AR(1) with marginal std ``sigma`` (the first value drawn from it too)."""
    shocks = rng.normal(0.0, sigma * math.sqrt(1.0 - phi * phi), n)
    shocks[0] = rng.normal(0.0, sigma)
    return np.asarray(lfilter([1.0], [1.0, -phi], shocks))


def window(rng: np.random.Generator, n: int, *, bias: float = 0.0, gain: float = 1.0,
           sigma: float = 0.25, phi: float = 0.5, ref_noise: float = 0.02) -> Aligned:
    """n one-minute bins of device and reference, already aligned."""
    t = np.arange(n) * MINUTE
    phase = rng.uniform(0.0, 2.0 * math.pi)
    truth = (15.0 + 5.0 * np.sin(2.0 * math.pi * t / 86400.0 + phase)
             + np.cumsum(rng.normal(0.0, 0.04, n)))
    device = gain * truth + bias + ar1(rng, n, sigma, phi)
    reference = truth + rng.normal(0.0, ref_noise, n)
    return Aligned(t, device, reference, MINUTE, 0.0, n * MINUTE, 0.0, 1.0, 1.0, 0, 0)


def fails(aligned: Aligned, reference_uncertainty: float | None = None) -> bool:
    m = compute_metrics(aligned, lag=UNDEFINED, reference_uncertainty=reference_uncertainty)
    return bool(failed_checks(m, TOL))


def fail_rate(seed: int, draws: int, n: int, bias: float, phi_max: float) -> float:
    """Share of ``draws`` random windows that fail, noise std in [0.05, 0.25] degC and
    AR(1) coefficient in [0, phi_max]."""
    rng = np.random.default_rng(seed)
    failed = 0
    for _ in range(draws):
        a = window(rng, n, bias=bias, sigma=rng.uniform(0.05, 0.25),
                   phi=rng.uniform(0.0, phi_max))
        failed += fails(a)
    return failed / draws


def binomial_slack(p: float, draws: int) -> float:
    """One-sided 99% sampling slack of an observed rate around ``p``."""
    return Z_ONE_SIDED_1PCT * math.sqrt(p * (1.0 - p) / draws)


# --------------------------------------------------------------------------- n_eff


def test_effective_size_is_the_textbook_ar1_formula() -> None:
    """n(1-rho)/(1+rho) for long series; the exact finite-n sum for short ones."""
    assert effective_size(1_000_000, 0.5) == pytest.approx(1_000_000 / 3, rel=1e-5)
    assert effective_size(10_000, 0.6) == pytest.approx(10_000 * 0.4 / 1.6, rel=1e-3)
    n, rho = 50, 0.7
    k = np.arange(1, n)
    factor = 1.0 + 2.0 * float(np.sum((1.0 - k / n) * rho**k))
    assert effective_size(n, rho) == pytest.approx(n / factor, rel=1e-12)
    assert effective_size(100, 0.0) == 100.0
    assert effective_size(100, math.nan) == 100.0
    assert effective_size(100, 0.9999) == 2.0  # bounded below


def test_lag1_estimate_and_variance_of_the_mean_match_simulation() -> None:
    """A long AR(1) gives back its coefficient; and over many short series the spread of
    the mean is what the effective sample size says it is."""
    rng = np.random.default_rng(11)
    x = ar1(rng, 200_000, 1.0, 0.6)
    assert lag1_autocorrelation(x) == pytest.approx(0.6, abs=0.01)
    means = np.array([ar1(rng, 500, 1.0, 0.7).mean() for _ in range(4000)])
    assert means.var() == pytest.approx(1.0 / effective_size(500, 0.7), rel=0.08)


def test_interval_is_wider_than_the_naive_one_for_autocorrelated_data() -> None:
    rng = np.random.default_rng(2)
    x = ar1(rng, 1440, 0.25, 0.8)
    iv = mean_interval(x)
    naive = x.std(ddof=1) / math.sqrt(x.size)
    assert iv.se > 2.5 * naive  # sqrt((1+0.8)/(1-0.8)) = 3
    assert 1440 * 0.2 / 1.8 * 0.6 < iv.n_eff < 1440 * 0.2 / 1.8 * 1.3
    assert ar1_coefficient(x) > lag1_autocorrelation(x)  # bias-corrected, upper bound
    lo, hi = iv.bounds()
    assert lo < iv.mean < hi


def test_confidence_z_tends_to_the_normal_quantile() -> None:
    assert confidence_z(1e7) == pytest.approx(Z_ONE_SIDED_1PCT, rel=1e-4)
    assert confidence_z(5.0) == pytest.approx(stats.t.ppf(0.99, 4.0), rel=1e-9)
    assert confidence_z(1.0) == math.inf


# --------------------------------------------------------------------------- cross-checks


@st.composite
def errors_in_variables(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(x, y, sx, sy): a line through noisy x and noisy y."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(20, 300))
    truth = rng.normal(draw(st.floats(-50, 50)), draw(st.floats(1.0, 20.0)), n)
    sx, sy = draw(st.floats(0.05, 3.0)), draw(st.floats(0.05, 3.0))
    slope = draw(st.floats(0.3, 3.0)) * draw(st.sampled_from([-1.0, 1.0]))
    x = truth + rng.normal(0.0, sx, n)
    y = slope * truth + draw(st.floats(-20, 20)) + rng.normal(0.0, sy, n)
    return x, y, sx, sy


def total_least_squares(x: np.ndarray, y: np.ndarray, variance_ratio: float
                        ) -> tuple[float, float, float]:
    """(slope, intercept, conditioning) of the errors-in-variables line by SVD.

    An implementation independent of ``deming``'s closed form: x is rescaled by
    sqrt(lambda) so both axes carry errors of the same variance, and the line is then the
    orthogonal (total least squares) one, whose normal is the right singular vector of the
    centred data with the smallest singular value. ``conditioning`` is the ratio of the two
    singular values: near 1 the data do not pin a direction and no method can."""
    scale = math.sqrt(variance_ratio)
    mx, my = float(x.mean()), float(y.mean())
    data = np.column_stack([(x - mx) * scale, y - my])
    _, singular, vt = np.linalg.svd(data, full_matrices=False)
    normal_x, normal_y = vt[-1]
    slope = -normal_x / normal_y * scale
    return float(slope), my - float(slope) * mx, float(singular[0] / singular[1])


def test_total_least_squares_recovers_an_exact_line() -> None:
    """The oracle itself: on points exactly on a line it returns that line."""
    x = np.linspace(-3.0, 7.0, 50)
    for ratio in (0.01, 1.0, 100.0):
        slope, intercept, _ = total_least_squares(x, -1.7 * x + 4.2, ratio)
        assert slope == pytest.approx(-1.7, rel=1e-12)
        assert intercept == pytest.approx(4.2, rel=1e-12)


@CROSS
@given(errors_in_variables())
def test_deming_matches_total_least_squares(
        data: tuple[np.ndarray, np.ndarray, float, float]) -> None:
    """With lambda = sy^2 / sx^2 the Deming fit minimises the same weighted distances as
    total least squares on the rescaled data (what ODR with per-axis deviations fits)."""
    x, y, sx, sy = data
    ratio = sy * sy / (sx * sx)
    slope, intercept = deming(x, y, ratio)
    tls_slope, tls_intercept, conditioning = total_least_squares(x, y, ratio)

    def distance(b: float, a: float) -> float:
        return float(np.sum((y - a - b * x) ** 2 / (sy * sy + b * b * sx * sx)))

    # Both are the exact minimiser: neither finds a smaller weighted distance than the other.
    assert distance(slope, intercept) == pytest.approx(distance(tls_slope, tls_intercept),
                                                       rel=1e-9, abs=1e-12)
    # Where the data pin the direction, the parameters agree to rounding.
    if conditioning > 1.01:
        assert slope == pytest.approx(tls_slope, rel=1e-7, abs=1e-9)
        assert intercept == pytest.approx(tls_intercept, rel=1e-7,
                                          abs=1e-7 * (1 + np.abs(y).max()))


def test_deming_tends_to_ols_for_an_exact_reference() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(10, 3, 500)
    y = 1.2 * x + rng.normal(0, 0.5, 500)
    assert deming(x, y, 1e12)[0] == pytest.approx(stats.linregress(x, y).slope, rel=1e-9)


@CROSS
@given(st.integers(0, 2**32 - 1), st.integers(5, 400), st.floats(0.01, 5.0))
def test_ols_and_its_iid_error_match_linregress(seed: int, n: int, noise: float) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.normal(20.0, 4.0, n)
    dev = 1.03 * ref - 0.4 + rng.normal(0.0, noise, n)
    line, expected = fit_line(dev, ref), stats.linregress(ref, dev)
    assert line.gain == pytest.approx(expected.slope, rel=1e-9)
    assert line.offset == pytest.approx(expected.intercept, rel=1e-9, abs=1e-9)
    assert line.gain_se == pytest.approx(expected.stderr, rel=1e-7)


@CROSS
@given(st.integers(0, 2**32 - 1), st.integers(40, 80), st.floats(0.0, 0.1))
def test_huber_agrees_with_theil_sen_and_resists_outliers(
    seed: int, n: int, outlier_share: float
) -> None:
    """On small data with gross outliers both robust slopes stay near the truth (and so
    near each other) where least squares is dragged away.

    Up to 10% outliers in 40+ points: Huber's influence is bounded but not zero, and with
    20 points of which 3 are one-sided outliers at the ends of the range hypothesis found
    it dragged to 0.76 where Theil-Sen (29% breakdown) held 1.09. A window of sensor data
    has thousands of points; a redescending estimator is the remedy if that ever matters.
    """
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0.0, 30.0, n))
    y = 1.1 * x + 2.0 + rng.normal(0.0, 0.3, n)
    bad = rng.random(n) < outlier_share
    y[bad] += rng.uniform(15.0, 40.0, int(bad.sum()))
    slope, intercept = huber_line(x, y)
    theil = stats.theilslopes(y, x)
    assert slope == pytest.approx(theil.slope, abs=0.08)
    assert slope == pytest.approx(1.1, abs=0.1)
    assert intercept == pytest.approx(2.0, abs=2.0)


def test_huber_on_clean_data_is_close_to_ols() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(0, 5, 2000)
    y = 0.9 * x + 1.0 + rng.normal(0, 0.5, 2000)
    assert huber_line(x, y)[0] == pytest.approx(stats.linregress(x, y).slope, abs=0.005)


# --------------------------------------------------------------------------- decisions


def test_bias_at_the_tolerance_edge_fails_under_one_percent() -> None:
    """3000 healthy day-long windows whose true bias is exactly the tolerance."""
    rate = fail_rate(seed=101, draws=3000, n=DAY_BINS, bias=TOL.bias, phi_max=0.9)
    assert rate < 0.01, rate


def test_the_naive_interval_would_fire_false_alarms() -> None:
    """The same edge windows judged with an iid standard error: the test above has teeth."""
    rng = np.random.default_rng(102)
    fired, draws = 0, 1000
    for _ in range(draws):
        diff = window(rng, DAY_BINS, bias=TOL.bias, phi=0.8)
        d = diff.device - diff.reference
        fired += abs(d.mean()) - Z_ONE_SIDED_1PCT * d.std(ddof=1) / math.sqrt(d.size) > TOL.bias
    assert fired / draws > 0.05


def test_one_and_a_half_tolerances_are_caught() -> None:
    rate = fail_rate(seed=103, draws=500, n=DAY_BINS, bias=1.5 * TOL.bias, phi_max=0.9)
    assert rate >= 0.95, rate


def test_false_alarms_at_the_edge_do_not_grow_with_the_window() -> None:
    """30 samples and 30,000 are judged fairly: at the edge neither fails more than 1%
    (up to sampling slack), and the long window not more often than the short one."""
    short = fail_rate(seed=104, draws=3000, n=30, bias=TOL.bias, phi_max=0.5)
    long = fail_rate(seed=105, draws=200, n=30_000, bias=TOL.bias, phi_max=0.5)
    assert short < 0.01 + binomial_slack(0.01, 3000), short
    assert long < 0.01 + binomial_slack(0.01, 200), long
    assert long <= short + binomial_slack(max(short, 0.01), 200), (short, long)


def test_deming_gain_decides_against_a_noisy_reference() -> None:
    """A perfect-gain device against a reference with 1.5 degC of noise: OLS sees a gain
    near 0.85; given the reference's uncertainty, the Deming gain is 1 and passes it.
    Without it, the reference's noise as its own data show it (the variogram's nugget)
    undoes the attenuation: the gain is not failed either."""
    rng = np.random.default_rng(6)
    a = window(rng, DAY_BINS, sigma=0.2, phi=0.3, ref_noise=1.5)
    m = compute_metrics(a, lag=UNDEFINED, reference_uncertainty=1.5)
    assert m.gain < 0.95 and abs(m.gain_deming - 1.0) < 0.03
    assert "gain" not in failed_checks(m, TOL)
    unstated = compute_metrics(a, lag=UNDEFINED)
    assert unstated.gain < 0.95 and 1.2 < unstated.reference_noise < 2.0
    assert "gain" not in failed_checks(unstated, TOL)


def test_evaluate_stream_takes_the_reference_uncertainty_and_reports_intervals() -> None:
    rng = np.random.default_rng(8)
    a = window(rng, DAY_BINS, bias=0.2)
    ts = 1_764_028_800.0 + a.t + 30.0
    spec = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), MINUTE, TOL)
    v = evaluate_stream(Series.of(ts, a.device), Series.of(ts, a.reference), spec,
                        1_764_028_800.0, 1_764_028_800.0 + DAY_BINS * MINUTE,
                        reference_uncertainty=0.1)
    d = v.metrics.as_dict()
    json.dumps(d, allow_nan=False)
    for key in ("n_eff", "bias_se", "bias_ci_low", "bias_ci_high", "gain_se", "gain_deming",
                "offset_deming", "gain_robust", "offset_robust"):
        assert isinstance(d[key], float), key
    assert d["bias_ci_low"] < 0.2 < d["bias_ci_high"]  # type: ignore[operator]
    assert v.status == "pass"


# ------------------------------------------------- a slow wander under white noise


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), phi=st.floats(0.85, 0.97),
       white=st.floats(0.2, 0.6), n=st.sampled_from([1440, 2880]))
def test_white_noise_on_a_slow_wander_does_not_inflate_the_effective_size(
        seed: int, phi: float, white: float, n: int) -> None:
    """An AR(1) wander (the device's error) plus white noise (the reference's readings) of
    ``white`` times the wander's std: the mean's effective size is
    n (s_a^2 + s_w^2) / (s_a^2 (1 + phi) / (1 - phi) + s_w^2). The white noise lowers the
    lag-1 correlation without shortening the wander; the estimate must not claim more
    than half as many again (AR(1) alone claims 2.7 times as many at phi 0.95). Over a
    day of minutes, at least 20 of the wander's time constants: over fewer, every
    estimator of persistence truncates it (this one claims up to twice the truth over
    360 samples at phi 0.97), which ``GAIN_Z`` and the t quantile's floor are there for."""
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(41):  # one series' estimate scatters; their median is the estimator's
        # (over 15 the median's own scatter crossed the bound: 1.51 x at phi 0.97, white
        # 0.25, where 41 series put the estimator at 1.23 x, at most 1.49 x over 40 seeds)
        wander = lfilter([1.0], [1.0, -phi], rng.normal(0.0, math.sqrt(1 - phi * phi), n))
        found.append(effective_n(wander + rng.normal(0.0, white, n)))
    true = n * (1 + white**2) / ((1 + phi) / (1 - phi) + white**2)
    assert float(np.median(found)) <= 1.5 * true, (np.median(found), true)


def test_the_sequence_estimate_of_white_noise_is_its_length() -> None:
    x = np.random.default_rng(4).normal(0.0, 1.0, 2000)
    assert sequence_effective_size(x) > 1500
    assert sequence_effective_size(np.ones(50)) == 50.0


# ------------------------------------------------------- a line under AR(1) noise


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), gain=st.floats(0.5, 2.0), phi=st.floats(0.0, 0.8))
def test_the_ar1_line_finds_a_real_gain_as_ols_does(seed: int, gain: float,
                                                    phi: float) -> None:
    """A gain error acts at every time scale: over a reference that moves at short scales
    too, the line fitted under AR(1) noise finds the same gain as OLS (within a few of
    its standard errors), which is why their agreement may be asked of a failing gain."""
    rng = np.random.default_rng(seed)
    n = 720
    x = np.cumsum(rng.normal(0.0, 1.0, n))  # a random walk: moves at every scale
    noise = lfilter([1.0], [1.0, -phi], rng.normal(0.0, 0.5, n))
    line = cochrane_orcutt(x, 3.0 + gain * x + noise)
    assert abs(line.gain - gain) < 5 * line.gain_se + 0.01, line
    assert 0.0 <= line.rho < 0.95


def test_the_ar1_line_does_not_take_a_slow_wander_for_a_slope() -> None:
    """Two unrelated persistent series (a device's wander, a reference's swing) often show
    a steep OLS slope; the AR(1) line, resting on their short-term co-movement, does not:
    over 200 pairs its gain stays near 0 where OLS scatters far, and the noise's
    coefficient it fits is near the wander's own."""
    rng = np.random.default_rng(3)
    ols, ar1_line, rhos = [], [], []
    for _ in range(200):
        x = lfilter([1.0], [1.0, -0.98], rng.normal(0.0, 1.0, 180))
        y = lfilter([1.0], [1.0, -0.98], rng.normal(0.0, 1.0, 180))
        ols.append(fit_line(y, x).gain)
        line = cochrane_orcutt(x, y)
        ar1_line.append(line.gain)
        rhos.append(line.rho)
    assert np.std(ar1_line) < 0.3 * np.std(ols), (np.std(ar1_line), np.std(ols))
    assert float(np.median(rhos)) > 0.85


def test_a_slopes_effective_size_follows_the_regressors_persistence() -> None:
    """Bartlett's factor: against a white regressor a slope keeps all its samples whatever
    the noise's persistence; against a smooth one, persistent noise leaves few."""
    rng = np.random.default_rng(8)
    n = 360
    white = rng.normal(0.0, 1.0, n)
    smooth = np.sin(2 * math.pi * np.arange(n) / 720) + rng.normal(0.0, 0.1, n)
    assert slope_effective_size(white, 0.95) > 0.8 * n
    assert slope_effective_size(smooth, 0.0) == n
    assert slope_effective_size(smooth, 0.5) > slope_effective_size(smooth, 0.95)
    assert slope_effective_size(smooth, 0.99) < 0.1 * n
    assert slope_effective_size(np.ones(50), 0.9) == 50.0


# ------------------------------------- fast routines against straightforward references
#
# ``autocorrelations`` computes only the lags asked for, ``sequence_effective_size`` and
# ``slope_effective_size`` ask only for those they read: the figures must be those of the
# textbook sums over every lag, to rounding.


def direct_autocorrelations(x: np.ndarray) -> np.ndarray | None:
    """sum_t c_t c_(t+k) / sum_t c_t^2 for every lag k, one product at a time."""
    c = x - x.mean()
    acov = np.correlate(c, c, mode="full")[c.size - 1:]
    return None if not acov[0] > 0.0 else acov / acov[0]


def reference_sequence_size(x: np.ndarray) -> float:
    """Geyer's initial positive sequence over every lag's direct correlation."""
    n = x.size
    rho = direct_autocorrelations(x)
    if rho is None:
        return float(n)
    pairs = rho[: n - n % 2].reshape(-1, 2).sum(axis=1)
    ended = np.flatnonzero(pairs[1:] <= 2.0 * math.sqrt(2.0 / n))
    kept = np.minimum.accumulate(pairs[: ended[0] + 1] if ended.size else pairs)
    tau = -1.0 + 2.0 * float(kept.sum())
    return min(max(n / tau, 2.0), float(n)) if tau > 0.0 else float(n)


def reference_slope_size(x: np.ndarray, q: float) -> float:
    """Bartlett's factor with the weight q^k of every lag, summed as Geyer's sequence."""
    n = x.size
    rho = direct_autocorrelations(x)
    if rho is None:
        return float(n)
    terms = rho * q ** np.arange(n, dtype=np.float64)
    pairs = terms[: n - n % 2].reshape(-1, 2).sum(axis=1)
    ended = np.flatnonzero(pairs <= 0.0)
    kept = np.minimum.accumulate(pairs[: ended[0]] if ended.size else pairs)
    tau = -1.0 + 2.0 * float(kept.sum())
    return min(max(n / tau, 2.0), float(n)) if tau > 0.0 else float(n)


def sensor_like(seed: int, n: int, phi: float, white: float, level: float) -> np.ndarray:
    """An AR(1) wander of coefficient ``phi`` plus white noise, around ``level`` (a random
    walk at phi 1), with a slow sine: a difference series or a reference."""
    rng = np.random.default_rng(seed)
    wander = np.asarray(lfilter([1.0], [1.0, -phi], rng.normal(0.0, 1.0, n)))
    sine = np.sin(2.0 * math.pi * np.arange(n) / rng.uniform(50.0, 5000.0))
    return level + wander + sine + rng.normal(0.0, white, n)


@CROSS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 3000), rows=st.integers(1, 3),
       last=st.integers(0, 400))
def test_lagged_products_of_a_block_are_each_rows(seed: int, n: int, rows: int,
                                                  last: int) -> None:
    """``stats.lagged_products`` of a block of series (one batched FFT) gives each row
    bit for bit what the row gives alone."""
    block = np.random.default_rng(seed).normal(0.0, 2.0, (rows, n))
    last = min(last, n - 1)
    found = core_stats.lagged_products(block, last)
    for i in range(rows):
        assert np.array_equal(found[i], core_stats.lagged_products(block[i].copy(), last))


@CROSS
@given(values=st.lists(st.integers(-10**6, 10**6), min_size=1, max_size=400),
       max_lag=st.one_of(st.none(), st.integers(0, 500)))
def test_autocorrelations_are_the_direct_sums(values: list[int], max_lag: int | None) -> None:
    """Every lag asked for, whether by dot products or by the shortened FFT, is the sum
    taken one product at a time; a constant series has none."""
    x = np.asarray(values, dtype=np.float64) / 1000.0
    found = autocorrelations(x, max_lag)
    expected = direct_autocorrelations(x)
    if expected is None:
        assert found is None
        return
    assert found is not None
    last = x.size - 1 if max_lag is None else min(max_lag, x.size - 1)
    assert found.size == last + 1
    np.testing.assert_allclose(found, expected[: last + 1], rtol=0.0, atol=1e-12)


@CROSS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(4, 3000),
       phi=st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999, 1.0]), white=st.floats(0.0, 2.0),
       level=st.floats(-50.0, 1000.0))
def test_the_sequence_size_is_that_of_every_lag(seed: int, n: int, phi: float, white: float,
                                                level: float) -> None:
    """The sequence read from the first lags, or from all when it runs on (a random walk's
    does), is the one summed over every lag's direct correlation."""
    x = sensor_like(seed, n, phi, white, level)
    assert sequence_effective_size(x) == pytest.approx(reference_sequence_size(x), rel=1e-9)


@CROSS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(4, 3000),
       phi=st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]), white=st.floats(0.0, 2.0),
       q=st.floats(1e-6, 0.9999))
def test_the_slope_size_is_that_of_every_weight(seed: int, n: int, phi: float, white: float,
                                               q: float) -> None:
    """Leaving out the lags whose weight q^k cannot count changes nothing beyond rounding
    (q above ``RHO_MAX`` is taken as ``RHO_MAX`` by both)."""
    x = sensor_like(seed, n, phi, white, 20.0)
    expected = reference_slope_size(x, min(q, RHO_MAX))
    assert slope_effective_size(x, q) == pytest.approx(expected, rel=1e-9)


def reference_cochrane_orcutt(x: np.ndarray, y: np.ndarray,
                              x_noise: float) -> tuple[float, float, float, float]:
    """Iterated Cochrane-Orcutt as the textbook does it: each pass forms the residuals and
    the quasi-differenced series and regresses one on the other (with the dilution
    correction of ``cochrane_orcutt``'s docstring); (gain, offset, gain_se, rho)."""
    n = x.size
    gain = float(np.polyfit(x, y, 1)[0])
    rho, se, sxx = 0.0, math.nan, math.nan
    for _ in range(20):
        resid = y - y.mean() - gain * (x - x.mean())
        new_rho = min(max(float(resid[1:] @ resid[:-1]) / float(resid @ resid), 0.0), 0.999)
        xs = x[1:] - new_rho * x[:-1]
        ys = y[1:] - new_rho * y[:-1]
        xs, ys = xs - xs.mean(), ys - ys.mean()
        sxx = float(xs @ xs)
        gain = float(xs @ ys) / sxx
        e = ys - gain * xs
        se = math.sqrt(float(e @ e) / (n - 4) / sxx)
        settled = abs(new_rho - rho) < 1e-4
        rho = new_rho
        if settled:
            break
    dilution = (1.0 + rho * rho) * x_noise**2 / (sxx / (n - 2))
    if dilution > 0.5:
        return math.nan, math.nan, math.nan, math.nan
    gain /= 1.0 - dilution
    return gain, float(y.mean()) - gain * float(x.mean()), se / (1.0 - dilution), rho


@CROSS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(8, 3000),
       phi_x=st.sampled_from([0.0, 0.9, 0.999, 1.0]), phi_u=st.floats(0.0, 0.999),
       gain=st.floats(0.5, 2.0), level=st.floats(-50.0, 1000.0),
       x_noise=st.sampled_from([0.0, 0.01, 0.3]), chunk=st.sampled_from([2, 7, 100, 16384]))
def test_the_ar1_line_is_the_textbooks(seed: int, n: int, phi_x: float, phi_u: float,
                                       gain: float, level: float, x_noise: float,
                                       chunk: int) -> None:
    """The passes computed from sums taken once, a chunk of pairs at a time (chunks of a
    few pairs here stand for a day's 86,400 in chunks of 16,384), give the line, its error
    and the noise's coefficient of the passes over the series (the offset to the rounding
    of the means it is the difference of)."""
    x = sensor_like(seed, n, phi_x, 0.1, level)
    noise = sensor_like(seed + 1, n, phi_u, 0.05, 0.0)
    y = 1.0 + gain * x + 0.3 * noise
    with mock.patch.object(core_stats, "_INDEX_CHUNK", chunk):
        line = cochrane_orcutt(x, y, x_noise)
    g, offset, se, rho = reference_cochrane_orcutt(x, y, x_noise)
    if math.isnan(g):
        assert math.isnan(line.gain) and math.isnan(line.rho)
        return
    assert line.gain == pytest.approx(g, rel=1e-9)
    assert line.gain_se == pytest.approx(se, rel=1e-9)
    assert line.rho == pytest.approx(rho, rel=1e-9, abs=1e-12)
    assert line.offset == pytest.approx(offset, abs=1e-9 * (1.0 + abs(float(y.mean()))))


@CROSS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(8, 3000), scale=st.sampled_from([1, 4, 16]),
       phi=st.sampled_from([0.0, 0.9, 0.99]), gaps=st.floats(0.0, 0.3),
       max_lag=st.integers(0, 400))
def test_the_lag_nulls_factor_is_that_of_the_direct_sums(seed: int, n: int, scale: int,
                                                         phi: float, gaps: float,
                                                         max_lag: int) -> None:
    """Bartlett's factor of the lag search (``lag.null_variance_factor``) from dot products,
    a short FFT or the spectra the cross-correlation took (``lag._correlation``, gappy or
    not) is the one from direct sums, gaps read as the series' mean."""
    rng = np.random.default_rng(seed)
    device = sensor_like(seed, n, phi, 0.5, 20.0)
    reference = sensor_like(seed + 1, n, phi, 0.1, 20.0)
    for x in (device, reference):
        x[rng.random(n) < gaps] = np.nan
    cutoff = min(4 * scale + 8, n // 4)
    rho = []
    for x in (device, reference):
        ok = np.isfinite(x)
        c = np.where(ok, x - x[ok].mean(), 0.0) if ok.sum() >= 3 else np.zeros(n)
        acov = np.correlate(c, c, mode="full")[n - 1: n + cutoff]
        rho.append(acov / acov[0] if acov[0] > 0.0 else None)
    found = null_variance_factor(device, reference, scale)
    taken = _correlation(device, reference, max_lag)[3]
    shared = null_variance_factor(device, reference, scale, taken)
    if taken is not None and not (cutoff >= DIRECT_LAGS and taken.length >= n + cutoff):
        # the centred series taken from the correlation, the FFTs of both in one call: bit
        # for bit the factor from scratch
        assert shared == found or (math.isnan(shared) and math.isnan(found))
    if rho[0] is None or rho[1] is None:
        assert math.isnan(found) and math.isnan(shared)
        return
    expected = max(1.0 + 2.0 * float(rho[0][1:] @ rho[1][1:]), NULL_FACTOR_FLOOR)
    assert found == pytest.approx(expected, rel=1e-9)
    assert shared == pytest.approx(expected, rel=1e-9)


@CROSS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 2000), gaps=st.floats(0.0, 0.5),
          edge=st.integers(0, 40), max_lag=st.integers(0, 300))
def test_the_lag_searchs_masked_sums_are_the_direct_sums(seed: int, n: int, gaps: float,
                                                         edge: int, max_lag: int) -> None:
    """``lag._sums_over``, its rows summed together (in groups of either shift), gives each
    row's sum over the other stream's presence at every lag as a sum taken one product at
    a time does, and bit for bit what the row gives summed alone; ``lag._spectra`` gives
    short rows' spectra in one batched transform as scipy gives each."""
    rng = np.random.default_rng(seed)
    max_lag = min(max_lag, n - 1)
    values = rng.normal(0.0, 3.0, (3, n))
    present = rng.random(n) >= gaps
    present[: min(edge, n - 1)] = False  # the other stream starts late
    present[-1] = True
    first, stop, holes = _span(present)
    both = _sums_over(values, first, stop, max_lag, ((2, 1, holes), (1, -1, holes[::2])))
    for sign in (1, -1):
        found = _sums_over(values, first, stop, max_lag, ((3, sign, holes),))
        for i, v in enumerate(values):
            alone = _sums_over(v[None, :].copy(), first, stop, max_lag, ((1, sign, holes),))[0]
            assert np.array_equal(found[i], alone)
            if (i < 2) == (sign > 0):  # a row of two groups in one block: as alone
                other = alone if i < 2 else _sums_over(
                    v[None, :].copy(), first, stop, max_lag, ((1, sign, holes[::2]),))[0]
                assert np.array_equal(both[i], other)
            for j, k in enumerate(range(-max_lag, max_lag + 1)):
                t = np.arange(n)
                other = t - sign * k
                inside = (other >= 0) & (other < n)
                direct = math.fsum(v[t[inside]] * present[other[inside]])
                assert found[i, j] == pytest.approx(direct, abs=1e-9 * (1.0 + np.abs(v).sum()))
    length = n + max_lag + 1
    batched = _spectra(tuple(values), length)  # short rows: one batched transform
    assert np.array_equal(batched, np.array([sfft.rfft(v, length) for v in values]))


@CROSS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 600), gaps=st.floats(0.0, 0.6),
       width=st.integers(1, 80), centred=st.booleans())
def test_moving_means_from_shared_prefix_sums_are_the_same(seed: int, n: int, gaps: float,
                                                           width: int, centred: bool) -> None:
    """The lag search filters both streams as one block and takes their running sums once
    for all its scales (``lag.prefix_sums``): each row's moving means, and its high-pass,
    are bit for bit those of the row alone, taken from scratch, whether or not the other
    row has gaps."""
    rng = np.random.default_rng(seed)
    x = rng.normal(10.0, 2.0, n)
    x[rng.random(n) < gaps] = np.nan
    shared = moving_mean(x, width, centred=centred, prefix=prefix_sums(x))
    alone = moving_mean(x, width, centred=centred)
    assert np.array_equal(shared, alone, equal_nan=True)
    block = np.stack((x, rng.normal(0.0, 1.0, n)))
    for row in (0, 1):
        assert np.array_equal(moving_mean(block, width, centred=centred)[row],
                              moving_mean(block[row].copy(), width, centred=centred),
                              equal_nan=True)
        assert np.array_equal(high_pass(block, width)[row], high_pass(block[row].copy(), width),
                              equal_nan=True)


@CROSS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 1500), gaps=st.floats(0.0, 0.4),
       max_lag=st.integers(0, 120), scales=st.integers(1, 4))
def test_the_scales_pooled_correlations_are_each_scales_own(seed: int, n: int, gaps: float,
                                                            max_lag: int, scales: int) -> None:
    """The lag search transforms every scale's rows in one batch (``lag._correlations``):
    each scale's correlations, pairs and spectra are bit for bit those it gets alone,
    whichever route (prefix sums or six FFT correlations) its gaps send it down."""
    rng = np.random.default_rng(seed)
    pairs = []
    for w in range(scales):
        device, reference = rng.normal(0.0, 1.0, n), rng.normal(0.0, 1.0, n)
        device[rng.random(n) < gaps * w / max(scales - 1, 1)] = np.nan
        reference[rng.random(n) < gaps / 4] = np.nan
        pairs.append((moving_mean(device, 1 + 3 * w), reference))
    pooled = _correlations(tuple(pairs), max_lag)
    for (device, reference), found in zip(pairs, pooled, strict=True):
        alone = _correlation(device, reference, max_lag)
        for a, b in zip(found[:3], alone[:3], strict=True):
            assert np.array_equal(a, b, equal_nan=True)
        if alone[3] is None:
            assert found[3] is None
            continue
        assert found[3] is not None
        assert np.array_equal(found[3].device, alone[3].device)
        assert np.array_equal(found[3].reference, alone[3].reference)


@CROSS
@given(phi=st.floats(0.0, 0.995), m=st.integers(1, 40), lags=st.integers(1, 8))
def test_interval_means_of_an_ar1_correlate_as_their_covariance_matrix_says(
        phi: float, m: int, lags: int) -> None:
    """The correlations of interval means, as ``fit.fine_gain_samples`` carries a device's
    noise to a coarser reference's intervals, are those of the AR(1)'s own covariance
    matrix averaged block by block (no formula shared)."""
    size = m * (lags + 1)
    k = np.arange(size)
    cov = phi ** np.abs(k[:, None] - k[None, :]).astype(np.float64)
    block = k // m
    first = block == 0
    means = [float(cov[np.ix_(first, block == j)].mean()) for j in range(lags + 1)]
    expected = np.asarray(means) / means[0]
    np.testing.assert_allclose(interval_mean_acf(phi, m, lags), expected, rtol=1e-9,
                               atol=1e-12)


@CROSS
@given(n=st.integers(100, 100_000), share=st.floats(0.01, 1.0))
def test_the_equivalent_ar1_inverts_the_textbook_size(n: int, share: float) -> None:
    """``equivalent_ar1`` is the coefficient whose textbook effective size
    n (1 - phi) / (1 + phi) is the one it was given (clipped at ``RHO_MAX``)."""
    n_eff = share * n
    phi = equivalent_ar1(n, n_eff)
    assert 0.0 <= phi <= RHO_MAX
    if phi < RHO_MAX:
        assert n * (1.0 - phi) / (1.0 + phi) == pytest.approx(n_eff, rel=1e-9)


def test_the_equivalent_ar1_of_a_simulated_series_is_its_coefficient() -> None:
    """Read back from a long simulated AR(1) through ``effective_n`` (its whole
    correlation sequence), the equivalent coefficient is the one simulated, to within the
    estimate's error (a conservative reading may only raise it)."""
    rng = np.random.default_rng(12)
    for phi in (0.5, 0.9, 0.97):
        x = np.asarray(lfilter([1.0], [1.0, -phi], rng.normal(0.0, 1.0, 200_000)))
        back = equivalent_ar1(x.size, effective_n(x))
        assert phi - 0.01 <= back <= phi + 0.02, (phi, back)


def reference_slope_size_under(x: np.ndarray, acf: np.ndarray) -> float:
    """Bartlett's factor over the lags ``acf`` gives, from every lag's direct
    autocorrelation, summed as Geyer's sequence (``reference_slope_size``'s rule)."""
    n = x.size
    rho = direct_autocorrelations(x)
    if rho is None:
        return float(n)
    lags = min(acf.size, n)
    terms = rho[:lags] * acf[:lags]
    pairs = terms[: lags - lags % 2].reshape(-1, 2).sum(axis=1)
    ended = np.flatnonzero(pairs <= 0.0)
    kept = np.minimum.accumulate(pairs[: ended[0]] if ended.size else pairs)
    tau = -1.0 + 2.0 * float(kept.sum())
    return min(max(n / tau, 2.0), float(n)) if tau > 0.0 else float(n)


@CROSS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(4, 2000),
       phi=st.sampled_from([0.0, 0.5, 0.9, 0.99]), lag1=st.floats(0.0, 1.0),
       decay=st.floats(0.0, 0.999), lags=st.integers(1, 60))
def test_the_slope_size_under_any_noise_sequence_is_bartletts(
        seed: int, n: int, phi: float, lag1: float, decay: float, lags: int) -> None:
    """``slope_effective_size_under`` for noise correlated as interval means are (lag 1
    anything, then a geometric decay: no AR(1)) is Bartlett's factor summed from every
    lag's direct correlation."""
    x = sensor_like(seed, n, phi, 0.3, 20.0)
    acf = np.concatenate(([1.0], lag1 * decay ** np.arange(lags, dtype=np.float64)))
    assert slope_effective_size_under(x, acf) == \
        pytest.approx(reference_slope_size_under(x, acf), rel=1e-9)


# --------------------------------------------------------------------------- censored fits


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), mean=st.floats(-20.0, 20.0),
       std=st.floats(0.5, 8.0), upper=st.booleans())
def test_a_censored_normal_recovers_what_the_limit_hid(seed: int, mean: float, std: float,
                                                       upper: bool) -> None:
    """800 normal values, those beyond a limit at 0 known only to lie there (a dust unit
    at 0.0, a hygrometer at full scale): the censored fit's mean is within five of its
    own standard errors of the truth wherever enough of them were seen in full, and
    none is given where fewer than three were. Dropping the censored values instead
    gives the mean of what got away, wrong by more than that wherever a third are cut."""
    rng = np.random.default_rng(seed)
    x = rng.normal(mean, std, 800)
    hidden = x >= 0.0 if upper else x <= 0.0
    values = np.where(hidden, 0.0, x)
    fit = censoring.censored_normal(values, np.zeros(x.size), hidden, upper=upper)
    seen = int(np.count_nonzero(~hidden))
    if seen < censoring.CENSORED_MIN_OBSERVED:
        assert fit is None
        return
    assert fit is not None and fit.observed == seen and fit.censored == x.size - seen
    # the mean of a sample cut at z standard deviations is known to about
    # std / sqrt(seen) times a factor that grows as the cut deepens; 200 seen or more
    # keep it under 3
    if seen >= 200:
        assert abs(fit.mean - mean) <= 5 * 3 * std / math.sqrt(seen), (fit, mean, std)
        assert abs(fit.std - std) <= 0.3 * std, (fit, std)
        if 0.33 <= hidden.mean() <= 0.9:
            dropped = float(np.mean(x[~hidden]))
            assert abs(dropped - mean) > abs(fit.mean - mean), (dropped, fit, mean)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), gain=st.floats(0.4, 1.6),
       offset=st.floats(-25.0, 5.0))
def test_a_censored_line_is_least_squares_where_nothing_is_hidden_and_unbiased_where_it_is(
        seed: int, gain: float, offset: float) -> None:
    """A dust unit's line on clean air (8-20 ug/m3) with 2 ug/m3 of noise, its readings
    at or below 0 reported as 0.0: where none were, the censored line is the least-squares
    line; where many were, its slope stays within five of its standard errors of the
    truth, where the line through the readings off 0.0 alone may not."""
    rng = np.random.default_rng(seed)
    ref = 14.0 + 6.0 * np.sin(np.linspace(0.0, 12.0, 600)) + rng.normal(0.0, 1.0, 600)
    dev = offset + gain * ref + rng.normal(0.0, 2.0, 600)
    hidden = dev <= 0.0
    fit = censoring.censored_line(ref, np.where(hidden, 0.0, dev), hidden, 0.0,
                                   upper=False)
    if int(np.count_nonzero(~hidden)) < censoring.CENSORED_MIN_OBSERVED:
        assert fit is None
        return
    assert fit is not None
    if not hidden.any():
        plain = stats.linregress(ref, dev)
        assert fit.gain == pytest.approx(plain.slope, abs=1e-4)
        assert fit.offset == pytest.approx(plain.intercept, abs=1e-3)
    elif np.count_nonzero(~hidden) >= 100:
        assert abs(fit.gain - gain) <= 5 * fit.gain_se, (fit, gain)
