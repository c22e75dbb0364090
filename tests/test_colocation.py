"""Co-location on the EPA's real data set, and the arithmetic under it.

The agreement test's expected values are the EPA sensortoolkit's own published figures for
this data set (../shared/data/epa-sensortoolkit/README.md), an independent implementation:
they are copied from there, never from this code's output.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from auditd.adapters.config.targets import load_targets
from auditd.app.colocate import Options, run, sources_from_files
from auditd.core.averaging import Averages, interval_means, recording_interval
from auditd.domain.colocation import (
    Targets,
    compare,
    precision,
    precision_of,
)

EPA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "epa-sensortoolkit"
REFERENCE = EPA / "airnowtech_example_reference_data.csv"
UNITS = [f"RT0{i}={EPA / f'toco_toucan_RT0{i}_raw.csv'}" for i in (1, 2, 3)]

# The EPA toolkit's published table (README.md): PM2.5 against the T640X, flagged values
# left out, days in UTC. unit, interval -> (R², slope, intercept, RMSE, N)
PUBLISHED = {
    ("RT01", "1h"): (0.52, 0.82, -1.66, 3.53, 706),
    ("RT02", "1h"): (0.55, 0.82, -1.73, 3.52, 708),
    ("RT03", "1h"): (0.56, 0.75, -1.67, 3.94, 708),
    ("RT01", "24h"): (0.62, 0.86, -2.06, 3.30, 29),
    ("RT02", "24h"): (0.66, 0.92, -2.50, 3.30, 29),
    ("RT03", "24h"): (0.58, 0.84, -2.39, 3.81, 29),
}
PUBLISHED_CV_1H = 13.0


@pytest.fixture(scope="module")
def epa_run():  # type: ignore[no-untyped-def]
    return run(sources_from_files(str(REFERENCE), UNITS), load_targets(), Options())


@pytest.mark.parametrize(("unit", "interval"), sorted(PUBLISHED))
def test_pm25_agrees_with_the_epa_toolkits_published_figures(epa_run, unit: str,
                                                             interval: str) -> None:
    r2, slope, intercept, rmse, n = PUBLISHED[(unit, interval)]
    c = epa_run.evaluation.comparisons[unit]["pm2_5"][interval]
    assert c.n == n
    assert round(c.r2, 2) == r2
    assert round(c.slope, 2) == slope
    assert round(c.intercept, 2) == intercept
    assert round(c.rmse, 2) == rmse


def test_pm25_inter_sensor_cv_is_the_published_13_percent(epa_run) -> None:
    assert round(epa_run.evaluation.precision["pm2_5"]["1h"].cv, 1) == PUBLISHED_CV_1H


def test_flagged_reference_values_are_left_out_and_counted(epa_run) -> None:
    # README: QC code 9 marks four PM2.5 hours, one O3 and one NO2 hour.
    assert epa_run.result["excluded"]["reference_qc_flagged"] == 6
    assert epa_run.result["excluded"]["reference_qc_flagged_by_sensor"] == {
        "pm2_5": 4, "o3": 1, "no2": 1}


def test_result_has_the_contracts_form_and_a_finding_per_failing_unit(epa_run) -> None:
    result = epa_run.result
    assert result["period"]["start"] == "2019-08-01T12:11:00Z"  # 7:11 at UTC-05:00
    first = result["devices"]["RT01"]["pm2_5"]["1h"]
    assert {"n", "slope", "intercept", "r2", "rmse", "nrmse", "completeness", "status",
            "targets"} <= set(first)
    assert first["status"] == "fail" and first["targets"]["r2"] == "fail"
    assert first["targets"]["slope"] == "pass"
    assert set(result["precision"]["pm2_5"]["1h"]) >= {"n", "sd", "cv"}
    failing = {(d, s) for d, by_s in result["devices"].items() for s, by_i in by_s.items()
               if any(v["status"] == "fail" for v in by_i.values())}
    found = {(f["device"], f["sensor"]) for f in result["findings"]}
    assert found == failing
    vocabulary = {"offset_drift", "gain_drift", "unit_mismatch", "stuck", "noise", "dropout",
                  "time_lag", "out_of_range", "reference_fault", "firmware_regression"}
    for f in result["findings"]:
        assert f["kind"] == "calibration" and f["status"] == "fail"
        assert {c["cause"] for c in f["causes"]} <= vocabulary


def test_a_unit_with_a_low_ozone_gain_is_diagnosed_as_gain_drift(epa_run) -> None:
    # RT03's O3 follows the reference closely (R² 0.97) at a slope far below 1: the
    # signature of a lost span, which a two-point calibration fixes.
    c = epa_run.evaluation.comparisons["RT03"]["o3"]["1h"]
    assert c.r2 > 0.9 and c.slope < 0.5
    causes = [x.cause for x in epa_run.diagnoses[("RT03", "o3")].causes]
    assert causes[0] == "gain_drift"


def test_correction_is_judged_only_on_data_it_was_not_fit_on(epa_run) -> None:
    res = epa_run.corrections[("RT01", "o3")]
    assert res.judged_start >= res.correction.fit_end
    both = epa_run.evaluation.comparisons["RT01"]["o3"]["1h"].n
    assert res.correction.fit_n + res.before.n == both
    assert res.after.rmse < res.before.rmse


# --------------------------------------------------------------------------- averaging


@st.composite
def minute_data(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A few hours of minute data with gaps, NaNs, and repeated timestamps."""
    minutes = draw(st.lists(st.integers(0, 4 * 60 - 1), min_size=1, max_size=400))
    values = draw(st.lists(st.one_of(st.floats(-50, 500, allow_nan=False), st.just(math.nan)),
                           min_size=len(minutes), max_size=len(minutes)))
    base = 1_564_660_800.0  # 2019-08-01T12:00:00Z
    return base + 60.0 * np.array(minutes, dtype=float), np.array(values, dtype=float)


@settings(max_examples=200, deadline=None)
@given(minute_data())
def test_hourly_average_keeps_an_hour_only_with_more_than_45_distinct_minutes(
        data: tuple[np.ndarray, np.ndarray]) -> None:
    ts, values = data
    got = interval_means(ts, values, 3600.0, 60.0)
    first: dict[float, float] = {}
    for t, v in zip(ts.tolist(), values.tolist(), strict=True):
        if math.isfinite(v) and t not in first:
            first[t] = v
    hours: dict[float, list[float]] = {}
    for t, v in first.items():
        hours.setdefault(math.floor(t / 3600.0) * 3600.0, []).append(v)
    kept = {h: vs for h, vs in hours.items() if len(vs) > 45}
    assert got.start.tolist() == sorted(kept)
    for start, mean, count in zip(got.start, got.mean, got.count, strict=True):
        assert count == len(kept[start])
        assert mean == pytest.approx(sum(kept[start]) / len(kept[start]), rel=1e-12, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=30, max_size=200))
def test_recording_interval_is_the_most_common_spacing(gaps: list[int]) -> None:
    # Mostly one-minute steps, with longer gaps mixed in: the mode is the minute.
    steps = [60.0 * (1 + g) if i % 3 == 0 else 60.0 for i, g in enumerate(gaps)]
    ts = np.cumsum([0.0, *steps])
    assert recording_interval(np.concatenate([ts, ts[:5]])) == 60.0


def sorted_recording_interval(ts: np.ndarray) -> float:
    """The mode of the distinct timestamps' spacings rounded to the ms, as the EPA toolkit
    takes it: both sorted by ``np.unique``, ties to the shorter spacing."""
    t = np.unique(np.asarray(ts, dtype=np.float64))
    t = t[np.isfinite(t)]
    if t.size < 2:
        return math.nan
    values, counts = np.unique(np.round(np.diff(t), 3), return_counts=True)
    return float(values[int(np.argmax(counts))])


@settings(max_examples=300, deadline=None)
@given(start=st.floats(-1e9, 2e9), steps=st.lists(
    st.one_of(st.floats(0.0, 2.0), st.sampled_from([0.0, 0.001, 0.0015, 1.0, 60.0, 86_400.0]),
              st.floats(0.0, 1e7)), min_size=0, max_size=300),
       order=st.sampled_from(["sorted", "shuffled", "repeats", "nan"]), seed=st.integers(0, 99))
def test_recording_interval_counts_as_the_sorts_do(start: float, steps: list[float], order: str,
                                                   seed: int) -> None:
    """Counting the spacings (``np.bincount``) of timestamps taken as they come when they
    are in order gives the mode both sorts give, to the bit, jittered or not, with ties,
    gaps of days and NaN."""
    ts = start + np.cumsum(np.asarray(steps, dtype=np.float64))
    rng = np.random.default_rng(seed)
    if order == "shuffled":
        ts = rng.permutation(ts)
    elif order == "repeats" and ts.size:
        ts = np.concatenate([ts, ts[: rng.integers(1, ts.size + 1)]])
    elif order == "nan" and ts.size:
        ts[rng.integers(0, ts.size)] = np.nan
    found, expected = recording_interval(ts), sorted_recording_interval(ts)
    assert found == expected or (math.isnan(found) and math.isnan(expected))


def test_expected_count_comes_from_the_datas_own_interval() -> None:
    # Data every 2 minutes: 30 expected an hour, so 23 values (> 22.5) keep the hour.
    t0 = 1_564_660_800.0
    ts = t0 + 120.0 * np.arange(23)
    got = interval_means(ts, np.ones(23), 3600.0)
    assert got.expected == 30.0 and len(got) == 1
    assert len(interval_means(ts[:22], np.ones(22), 3600.0)) == 0


def test_24_hour_intervals_follow_the_day_origin() -> None:
    # 05:00 UTC is midnight in UTC-05:00 local standard time.
    t0 = 1_564_617_600.0  # 2019-08-01T00:00:00Z
    ts = t0 + 3600.0 * np.arange(48)
    utc = interval_means(ts, np.ones(48), 86400.0, 3600.0)
    lst = interval_means(ts, np.ones(48), 86400.0, 3600.0, origin_s=5 * 3600.0)
    assert utc.start.tolist() == [t0, t0 + 86400.0]
    # Local days: 5 hours of July 31 (dropped: not more than 18), a full August 1, and
    # 19 hours of August 2 (kept: more than 18 of 24).
    assert lst.start.tolist() == [t0 + 5 * 3600.0, t0 + 5 * 3600.0 + 86400.0]
    assert lst.count.tolist() == [24, 19]


# --------------------------------------------------------------------------- fits, precision


def _avg(start: np.ndarray, mean: np.ndarray) -> Averages:
    return Averages(start.astype(float), mean.astype(float), np.ones(start.size, dtype=np.int64),
                    3600.0, 60.0, int(start.size))


@settings(max_examples=100, deadline=None)
@given(st.integers(3, 60), st.floats(0.1, 3.0), st.floats(-10, 10), st.integers(0, 2**31))
def test_ols_figures_match_scipy_linregress(n: int, gain: float, offset: float,
                                            seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 50, n)
    y = gain * x + offset + rng.normal(0, 2, n)
    starts = 3600.0 * np.arange(n)
    c = compare(_avg(starts, y), _avg(starts, x), None, n)
    ref = stats.linregress(x, y)
    assert c.slope == pytest.approx(ref.slope, rel=1e-9, abs=1e-9)
    assert c.intercept == pytest.approx(ref.intercept, rel=1e-9, abs=1e-7)
    assert c.r2 == pytest.approx(ref.rvalue**2, rel=1e-9, abs=1e-12)
    assert c.rmse == pytest.approx(math.sqrt(np.mean((y - x) ** 2)), rel=1e-12)


def test_precision_on_a_worked_example() -> None:
    # Two intervals, three units: (9, 10, 11) about 10 and (18, 20, 22) about 20.
    # Squared deviations 1+0+1 + 4+0+4 = 10 over N*M - 1 = 5: SD = sqrt(2).
    # Mean of all six = 15: CV = 100 * sqrt(2) / 15 = 9.428 %.
    x = np.array([[9.0, 10.0, 11.0], [18.0, 20.0, 22.0]])
    sd, cv, mean = precision_of(x)
    assert sd == pytest.approx(math.sqrt(2.0))
    assert cv == pytest.approx(100 * math.sqrt(2.0) / 15.0)
    assert mean == 15.0


def test_precision_uses_only_intervals_where_every_unit_reports() -> None:
    a = _avg(np.array([0.0, 3600.0, 7200.0]), np.array([9.0, 18.0, 100.0]))
    b = _avg(np.array([0.0, 3600.0]), np.array([10.0, 20.0]))
    c = _avg(np.array([0.0, 3600.0, 7200.0]), np.array([11.0, 22.0, 300.0]))
    p = precision([a, b, c], Targets(sd_max=5.0, cv_max=30.0))
    assert p.n == 2 and p.sd == pytest.approx(math.sqrt(2.0))
    assert p.status == "pass"


def test_html_section_marks_every_verdict_or_says_how_to_get_matplotlib(epa_run) -> None:
    from html.parser import HTMLParser

    from auditd.errors import UsageError
    from auditd.views.colocation import render

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="matplotlib"):
            render(epa_run)
        return

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.classes: list[str] = []
            self.svgs = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "td":
                self.classes.append(dict(attrs).get("class") or "")
            self.svgs += tag == "svg"

    page = render(epa_run)
    cells = Cells()
    cells.feed(page)
    judged = [(d, s, i) for d, by_s in epa_run.result["devices"].items()
              for s, by_i in by_s.items() for i, v in by_i.items() if v["status"]]
    # Four target verdicts and a status per judged row, each marked pass or fail.
    assert cells.classes.count("pass") + cells.classes.count("fail") >= 5 * len(judged)
    # A scatter and a time series per unit and judged quantity.
    assert cells.svgs == 2 * len({(d, s) for d, s, _ in judged})
