"""A fault's onset across audits: every failing finding of it dated, carried from the first
estimate and refined, and a drift of months dated where it crossed its tolerance.

The crossing and the combination are property-tested as pure functions; the episode logic
on findings; then the real ``Store`` and ``Auditor`` audit ten days of a slow drift every
six hours, with alerting on.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditd.adapters.config.catalog import build_catalog, load_profiles
from auditd.adapters.store import Store
from auditd.app.auditor import AlertSettings, Auditor
from auditd.core import onset as core_onset
from auditd.core.onset import combined_onset, crossing_onset
from auditd.domain import onsets
from auditd.model import Cause, Finding, Outcome, Reading, Reference, Tolerance, from_iso, iso
from auditd.topics import TopicsConfig

REPO = Path(__file__).resolve().parents[1]
START = 1_764_028_800.0  # 2025-11-25T00:00:00Z
HOUR = 3600.0
DAY = 86_400.0
TOL = Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.9, lag_s=300, window_s=DAY,
                min_samples=60)


# --------------------------------------------------------------------------- pure


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 100.0), min_size=2, max_size=40, unique=True),
       st.floats(1.0, 99.0), st.floats(0.01, 5.0))
def test_a_linear_drift_is_dated_where_it_crossed_its_tolerance(
        offsets: list[float], crossing: float, slope: float) -> None:
    """Windows' estimates of a linear drift (in tolerances, 1 at ``crossing``) put the
    onset at the crossing exactly, whatever the audits' spacing, and say how far apart
    the two windows around it were."""
    times = sorted(START + o * HOUR for o in offsets)
    at = START + crossing * HOUR
    ratios = [1.0 + slope * (t - at) / HOUR for t in times]  # linear, sign and all
    found = crossing_onset(times, ratios, before=times[-1])
    below = [t for t in times if t < at]
    if not below or below[-1] == times[-1]:
        assert found is None  # never seen healthy, or not beyond tolerance yet
        return
    assert found is not None
    assert math.isclose(found.at, at, abs_tol=1e-3)
    after = min(t for t in times if t >= at)
    assert math.isclose(found.uncertainty_s, (after - below[-1]) / 2)


def test_the_crossing_is_the_last_one_before_the_fault_was_first_seen() -> None:
    """A drift that wandered back under its tolerance once, before it failed for good, is
    dated by its last crossing before the first failing window; later wanderings (after
    it) do not move the date."""
    times = [START + i * DAY for i in range(8)]
    ratios = [0.2, 1.2, 0.8, 1.4, 1.6, 0.9, 1.8, 2.0]
    found = crossing_onset(times, ratios, before=times[3])
    assert found is not None
    assert math.isclose(found.at, START + (2 + 1 / 3) * DAY)  # 0.8 -> 1.4: a third of a day


def test_window_estimates_combine_by_their_median() -> None:
    assert combined_onset([], 60.0) is None
    one = combined_onset([START + 100.0], 60.0)
    assert one is not None and one.at == START + 100.0 and one.uncertainty_s == 60.0
    many = combined_onset([START, START + 120.0, START + 60.0, START + 6 * HOUR], 60.0)
    assert many is not None and many.at == START + 90.0
    assert many.uncertainty_s > 60.0


def failing(at: float, bias: float, onset: float | None = None,
            status: str = "fail", health: str | None = None) -> Finding:
    context = {"health": health} if health else {}
    return Finding(kind="calibration", site="north", device="th-north-01",
                   sensor="temperature", status=status,  # type: ignore[arg-type]
                   severity="major" if status == "fail" else "none",
                   window_start=at - DAY, window_end=at, unit="degC", reference="ref-north",
                   metrics={"bias": bias},
                   causes=(Cause("offset_drift", 0.9, "e"),) if status == "fail" else (),
                   onset=onset, context=context)


def test_every_failing_finding_of_one_fault_carries_its_onset() -> None:
    """The first estimate dates the fault; later windows without a change point of their
    own carry it; a later window that sees the change refines it; a confirmed pass ends
    the episode, so a new fault is dated afresh."""
    step = START + 10 * HOUR
    first = onsets.dated(failing(START + DAY, 1.0, onset=step), [], TOL, 60.0)
    assert first.onset == step and first.context[onsets.ONSET]["method"] == "window"
    second = onsets.dated(failing(START + 2 * DAY, 1.5), [first], TOL, 60.0)
    assert second.onset == step  # no change point in its window: the first one's
    assert second.context[onsets.ONSET]["window"] is None
    third = onsets.dated(failing(START + 25 * HOUR, 1.0, onset=step + 120.0),
                         [first, second], TOL, 60.0)
    assert third.onset == step + 60.0  # median of the two windows' estimates
    healed = failing(START + 4 * DAY, 0.1, status="pass", health="confirmed")
    doubtful = failing(START + 3 * DAY, 0.45, status="pass", health="unconfirmed")
    again = onsets.dated(failing(START + 5 * DAY, 1.2), [first, second, doubtful], TOL, 60.0)
    assert again.onset == step  # an unconfirmed pass does not end the fault
    anew = onsets.dated(failing(START + 5 * DAY, 1.2), [first, second, healed], TOL, 60.0)
    assert anew.onset is not None and anew.onset > healed.window_end - DAY
    assert anew.context[onsets.ONSET]["method"] == "drift_start"


def test_a_fault_dated_by_its_group_is_left_alone() -> None:
    blamed = replace(failing(START + DAY, 1.0, onset=START),
                     causes=(Cause("reference_fault", 0.9, "e"),))
    assert onsets.dated(blamed, [], TOL, 60.0) == blamed


def test_windows_blamed_on_their_firmware_stay_in_the_offsets_episode() -> None:
    """A step's first windows were put down to a firmware cohort (``firmware_regression``
    first, the offset behind it): a later window naming the offset alone is the same
    fault, dated with those windows' change points, not by a fresh guess of its own."""
    step = START + 10 * HOUR
    blamed = replace(failing(START + DAY, 1.0, onset=step),
                     causes=(Cause("firmware_regression", 0.99, "cohort"),
                             Cause("offset_drift", 0.9, "e")))
    later = onsets.dated(failing(START + 2 * DAY, 1.0, onset=step - 5 * HOUR), [blamed],
                         TOL, 60.0)
    assert later.onset == step - 2.5 * HOUR  # the median of both windows' change points
    alone = onsets.dated(failing(START + 2 * DAY, 1.0, onset=step - 5 * HOUR), [], TOL, 60.0)
    assert alone.onset == step - 5 * HOUR


# --------------------------------------------------------------------------- through the store


def test_a_drift_with_no_healthy_stretch_in_any_window_is_dated_at_every_audit(
        tmp_path: Path) -> None:
    """Ten days of minute temperatures; from day 3 the device drifts 0.25 degC a day, so it
    crosses its 0.5 degC tolerance on day 5 and no 24-hour window ever holds a change
    point (the drift adds half a tolerance a day). Audited every six hours: every failing
    finding is dated near the drift's start, with the crossing beside it (no finding had
    an onset before), and the fault is one alert."""
    rng = np.random.default_rng(11)
    ts = START + np.arange(10 * 1440) * 60.0 + 1.0
    weather = 10.0 + 5.0 * np.sin(2 * math.pi * (ts - START) / DAY)
    began = START + 3 * DAY
    device = weather + 0.25 * np.clip(ts - began, 0, None) / DAY + rng.normal(0.0, 0.1, ts.size)
    readings = tuple(
        Reading("north", name, "temperature", "degC", float(t), float(v))
        for name, values in (("ref-north", weather + rng.normal(0.0, 0.03, ts.size)),
                             ("th-north-01", device))
        for t, v in zip(ts, values, strict=True))
    ref = Reference(id="ref-north", site="north", serves=("th-north-*",),
                    sensors=("temperature",), model="ref-station")
    catalog = build_catalog(load_profiles(REPO / "device_profiles"), [ref],
                            {"th-north-*": "th-200"})
    crossed = START + 5 * DAY
    with Store(tmp_path / "audit.db") as store:
        store.readings.write_outcomes([Outcome(readings=readings)])
        auditor = Auditor(store, catalog, TopicsConfig(), gateway="gw",
                          alerting=AlertSettings("gw", TopicsConfig(), ("file",), mqtt=False))
        for k in range(4, 41):
            auditor.run(START + k * 6 * HOUR)
        found = [s.finding for s in store.findings.of_device("th-north-01")
                 if s.finding.kind == "calibration"]
        failed = [f for f in found if f.status == "fail"]
        assert len(failed) >= 10, [(iso(f.window_end), f.status) for f in found]
        assert all(f.onset is not None for f in failed)
        errors = [abs(f.onset - began) / HOUR for f in failed if f.onset is not None]
        assert max(errors) <= 12.0, errors
        assert float(np.median(errors)) <= 6.0, errors
        assert {f.context[onsets.ONSET]["method"] for f in failed} <= {"drift_start", "carried"}
        crossings = [from_iso(f.context[onsets.ONSET].get("crossed_tolerance")) for f in failed]
        assert all(c is not None and abs(c - crossed) <= 6 * HOUR for c in crossings[:1])
        alerts = store.alerts.select(states=("open", "acknowledged", "resolved"))
        assert [(a.device, a.state) for a in alerts] == [("th-north-01", "open")]


def test_a_windows_means_onset_is_refined_as_later_audits_see_more_of_the_fault() -> None:
    """Seed 2's f46: six-hour windows audited every four hours, a firmware step seen first
    by one window, every pass before it unconfirmed (wandering noise), so the episode has
    no known start and later audits carried the first fit of the windows' means, +-14
    hours, for good. Each later audit now fits the history again: the stated onset with
    its uncertainty reaches the step at every audit, and the last is narrower than the
    first."""
    step, size, width = START + 3 * DAY + 5 * HOUR, 3.0 * TOL.bias, 6 * HOUR
    rng = np.random.default_rng(7)
    history: list[Finding] = []
    stated: list[float] = []
    for k in range(2, 30):
        end = START + DAY + k * 4 * HOUR
        value = size * float(np.clip((end - step) / width, 0.0, 1.0)) \
            + float(rng.normal(0.0, 0.2 * TOL.bias))
        healthy = abs(value) < TOL.bias
        made = replace(failing(end, value, status="pass" if healthy else "fail",
                               health="unconfirmed" if healthy else None),
                       window_start=end - width)
        if healthy:
            history.append(made)
            continue
        found = onsets.dated(made, history, TOL, 60.0)
        record = found.context[onsets.ONSET]
        assert record["method"] == "drift_start", record
        stated.append(record["uncertainty_s"])
        assert found.onset is not None and step <= found.onset + stated[-1] + HOUR
        history.append(found)
    assert len(stated) >= 8
    assert stated[-1] < stated[0], stated


def test_a_step_is_not_dated_by_the_windows_means() -> None:
    """A unit mix-up is a step: the windows' means cross the tolerance up to half a window
    before it, so with no change point it is not dated by them: it is bracketed between
    the middle of the last healthy window and the end of the first failing one, with half
    that interval as its uncertainty."""
    healthy = [failing(START + h * HOUR, 0.1, status="pass", health="confirmed")
               for h in (24, 30, 36)]
    step = replace(failing(START + 2 * DAY, 30.0), causes=(Cause("unit_mismatch", 0.9, "e"),))
    found = onsets.dated(step, healthy, TOL, 60.0)
    low, high = START + 24 * HOUR, START + 48 * HOUR  # middle of [12 h, 36 h]; the failure
    assert found.context[onsets.ONSET]["method"] == "bracket"
    assert found.onset == (low + high) / 2
    assert found.context[onsets.ONSET]["uncertainty_s"] == (high - low) / 2
    drift = failing(START + 2 * DAY, 1.5)
    assert onsets.dated(drift, healthy, TOL, 60.0).context[onsets.ONSET]["method"] \
        == "drift_start"


def test_a_fault_there_from_the_start_is_bracketed_from_the_first_reading() -> None:
    """The first audit's 24-hour window reaches 23 hours before the unit's first reading:
    a fault there from the start began with its data, not a day earlier."""
    installed = START + 23 * HOUR
    first = replace(failing(START + DAY, 30.0), causes=(Cause("unit_mismatch", 0.9, "e"),))
    found = onsets.dated(first, [], TOL, 60.0, first_reading=installed)
    assert found.onset == (installed + START + DAY) / 2
    later = onsets.dated(replace(failing(START + DAY + 6 * HOUR, 30.0),
                                 causes=(Cause("unit_mismatch", 0.9, "e"),)),
                         [found], TOL, 60.0, first_reading=installed)
    assert later.onset == found.onset and later.context[onsets.ONSET]["method"] == "carried"
    # a bracket is no date: it lends no uncertainty to the firmware timing, carried or not
    assert found.context[onsets.ONSET]["uncertainty_s"] == HOUR / 2
    assert onsets.onset_uncertainty(found) == 0.0 == onsets.onset_uncertainty(later)
    stepped = onsets.dated(failing(START + DAY, 1.0, onset=START + 10 * HOUR), [], TOL, 60.0)
    assert onsets.onset_uncertainty(stepped) == stepped.context[onsets.ONSET]["uncertainty_s"]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(30.0, 150.0),
       st.sampled_from([0.0, 0.5, 3.0, 12.0, 48.0, 120.0]), st.floats(1.5, 4.0),
       st.sampled_from([1.0, 3.0, 6.0]), st.sampled_from([6.0, 24.0]))
def test_a_step_or_a_ramp_is_dated_where_it_began_from_the_windows_means(
        seed: int, began_h: float, ramp_h: float, size: float, gap_h: float,
        window_h: float) -> None:
    """Audits every ``gap_h`` hours, each the mean of the last ``window_h`` hours of a
    deviation that steps or ramps (over ``ramp_h``) to ``size`` tolerances from
    ``began_h``, plus a little noise: the start is found within a few hours (a line
    through the means would put a step half a window early)."""
    rng = np.random.default_rng(seed)
    minutes = np.arange(0.0, (began_h + ramp_h + 4 * window_h) * 60.0)
    truth_h = np.clip((minutes / 60.0 - began_h) / ramp_h, 0, 1) if ramp_h > 0 \
        else (minutes / 60.0 >= began_h).astype(float)
    deviation = size * TOL.bias * truth_h
    ends = np.arange(window_h, minutes[-1] / 60.0, gap_h)
    values = [float(deviation[int((e - window_h) * 60):int(e * 60)].mean())
              + rng.normal(0.0, 0.02 * TOL.bias) for e in ends]
    starts = START + (ends - window_h) * HOUR
    stops = START + ends * HOUR
    first_fail = next(float(e) for e, v in zip(stops, values, strict=True)
                      if v >= 1.2 * TOL.bias) - window_h * HOUR / 2
    found = core_onset.drift_start(starts.tolist(), stops.tolist(), values, TOL.bias,
                                   first_fail)
    assert found is not None
    truth = START + began_h * HOUR
    # through a window's mean a step and a ramp of an eighth of a window look alike
    assert abs(found.began.at - truth) <= max(gap_h, window_h / 8, 0.1 * ramp_h) * HOUR, (
        (found.began.at - truth) / HOUR)


def test_a_steps_stated_interval_covers_it_when_the_windows_means_are_noisy() -> None:
    """Seed 2's f20: three-hour windows audited every four hours, so an hour between two
    windows is seen by neither, and a firmware step of -3 tolerances landing in it, the
    window before a little low by chance. The start was stated to +-24 minutes (the onsets
    within 5 % of the best fit's squared error) and put 90 minutes before the update, so
    the firmware timing said the deviation came first. The stated uncertainty (how far
    after the stated onset the values still allow it to have begun, at 95 %) reaches the
    step in at least 85 of 100 such histories (fixed seeds; 90 when written, 45 with the
    5 % rule), without stretching over the history: at most 8 hours in the median (1.4
    when written)."""
    rng = np.random.default_rng(20261206)
    covered, widths = 0, []
    for _ in range(100):
        ends = np.arange(3.0, 60.0, 4.0)  # hours; windows [end - 3, end)
        began = rng.uniform(30.0, 45.0)
        size = -3.0 * TOL.bias
        values = [size * float(np.clip((e - began) / 3.0, 0.0, 1.0))
                  + rng.normal(0.0, 0.15 * TOL.bias) for e in ends]
        starts, stops = START + (ends - 3.0) * HOUR, START + ends * HOUR
        first_fail = next(float(b) for b, v in zip(stops, values, strict=True)
                          if abs(v) >= TOL.bias) - 1.5 * HOUR
        found = core_onset.drift_start(starts.tolist(), stops.tolist(), values, TOL.bias,
                                       first_fail)
        assert found is not None
        u = found.began.uncertainty_s
        covered += START + began * HOUR <= found.began.at + u
        widths.append(u / HOUR)
    assert covered >= 85, covered
    assert float(np.median(widths)) <= 8.0, np.median(widths)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(10, 600), step=st.floats(0.0, 3.0),
       chunk=st.sampled_from([1, 3, 16, 4096]), block=st.integers(1, 9))
def test_every_splits_sse_is_the_two_fits_over_the_series(seed: int, n: int, step: float,
                                                          chunk: int, block: int) -> None:
    """The healthy-then-faulty SSE of every split, from running sums made a chunk at a time
    (chunks of a few points here stand for a day's 86,400 in chunks of 4,080), is the SSE
    of the mean before the split plus that of the least-squares line after it, fitted
    directly; the running sums before any split are the direct sums."""
    rng = np.random.default_rng(seed)
    t = 1.7e9 + np.cumsum(rng.uniform(0.5, 90.0, n))
    diff = np.cumsum(rng.normal(0.0, 0.05, n)) + rng.normal(0.0, 0.3, n)
    diff[rng.integers(0, n):] += step
    shift = float(np.median(diff))
    m = core_onset.min_segment(n)
    with mock.patch.object(core_onset, "REGIME_CHUNK", chunk):
        chunks = core_onset._Chunks(t, diff, shift, block)
        every, _ = chunks.regime_sse(m, core_onset._Clear(chunks.sst, shift, 0.5, math.inf))
        tn = (t - t[0]) / max(t[-1] - t[0], 1e-9)
        x = diff - shift
        scale = float(x @ x) + 1.0
        for k in range(m, n - m + 1):
            before = float(np.sum((x[:k] - x[:k].mean()) ** 2))
            a, b = tn[k:], x[k:]
            ac = a - a.mean()
            slope = float(ac @ (b - b.mean()) / (ac @ ac)) if float(ac @ ac) > 0 else 0.0
            after = float(np.sum((b - b.mean() - slope * ac) ** 2))
            assert every[k - m] == pytest.approx(before + after, abs=1e-9 * scale)
            direct = (tn[:k].sum(), tn[:k] @ tn[:k], x[:k].sum(), x[:k] @ x[:k], tn[:k] @ x[:k])
            np.testing.assert_allclose(chunks.sums_at(k), direct, rtol=1e-9,
                                       atol=1e-9 * (scale + k))


def test_a_finding_judged_on_its_windows_latest_half_is_dated_by_that_half() -> None:
    """A window whose gain only its latest half could judge (``core.StreamVerdict.
    judged_since``) publishes the half's figures: the finding says where they begin
    (``context.judged_since``, written by ``audit_plan.finding_for``), and the dating
    across windows reads its figure as the mean over that half, not over the whole
    window (``onsets.judged_start``); a stated start outside the window is the window's."""
    from auditd.core import StreamVerdict
    from auditd.core.fit import Metrics
    from auditd.domain.audit_plan import AuditTask, finding_for
    from auditd.model import SensorSpec

    spec = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), 60.0, TOL)
    task = AuditTask("north", "th-north-01", "temperature", spec, "ref-north", DAY)
    half = START + 12 * HOUR
    metrics = Metrics(n=12, bias=0.1, gain=0.75, offset=0.0, rmse=1.0, nrmse=5.0, r2=0.99,
                      residual_std=0.1, device_std=2.0, reference_std=2.5,
                      device_coverage=1.0, reference_coverage=1.0, lag_s=0.0)
    verdict = StreamVerdict("fail", "minor", metrics,
                            (Cause("gain_drift", 0.9, "over the window's latest half"),),
                            None, "recalibrate", ("gain",), judged_since=half)
    found = finding_for(task, verdict, START, START + DAY)
    assert found.context[onsets.JUDGED_SINCE] == iso(half)
    assert onsets.judged_start(found) == half
    whole = replace(verdict, judged_since=None)
    assert onsets.JUDGED_SINCE not in finding_for(task, whole, START, START + DAY).context
    assert onsets.judged_start(finding_for(task, whole, START, START + DAY)) == START
    early = replace(found, context={onsets.JUDGED_SINCE: iso(START - DAY)})
    assert onsets.judged_start(early) == START


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(8, 120), level=st.floats(-1e5, 1e5),
       flat=st.integers(0, 20), min_size=st.integers(2, 6))
def test_the_two_line_split_is_the_one_two_direct_fits_find(seed: int, n: int, level: float,
                                                            flat: int, min_size: int) -> None:
    """``two_line_split`` (prefix sums, every split at once) picks the split whose two
    least-squares lines of y on x, fitted directly, leave the least summed squared error,
    also at large levels (the sums are centred) and where x stands still for a while (a
    segment whose x is constant is its mean); None below two segments' worth of points."""
    rng = np.random.default_rng(seed)
    x = level + np.cumsum(rng.normal(0.0, 1.0, n))
    x[:min(flat, n)] = x[min(flat, n) - 1] if flat else x[:0]
    y = x * rng.uniform(0.5, 1.5) + rng.normal(0.0, 1.0, n)
    y[n // 2:] += (x[n // 2:] - x.mean()) * rng.uniform(-0.5, 0.5)
    k = core_onset.two_line_split(x, y, min_size)
    if n < 2 * min_size:
        assert k is None
        return

    def sse(a: np.ndarray, b: np.ndarray) -> float:
        if np.ptp(a) == 0.0:
            return float(np.sum((b - b.mean()) ** 2))
        fitted = np.polyval(np.polyfit(a - a.mean(), b, 1), a - a.mean())
        return float(np.sum((b - fitted) ** 2))

    direct = [sse(x[:j], y[:j]) + sse(x[j:], y[j:]) for j in range(min_size, n - min_size + 1)]
    assert k is not None and min_size <= k <= n - min_size
    assert direct[k - min_size] <= min(direct) + 1e-6 * (1.0 + min(direct)), (k, direct)
