"""A window spent wholly at a range end, told apart on the readings before it.

A hygrometer reading 15 %RH high sits at 99.9 %RH through a wet day and night: a 24 h
window of it holds nothing but 99.9 while the reference moves between 86 and 96, which is
what a sensor stopped at full scale would send too. The window alone cannot tell them
apart (the line that would carry the device to full scale is fitted off the pinned value,
and it holds nothing off it), so such a window marks the value
(``StreamVerdict.pinned_at_end``), and the audit reads the device's line over the readings
before it (``verdict.line_before``). Where that line carries the device to the pinned value
wherever the reference was, the window is saturation (``clipping``, behind the offset that
causes it), not a stop; where it does not, ``stuck`` stands. What a user relies on: a
saturated unit is not sent a "replace" ticket, and a stopped one still is. The EPA month
(``../shared/data/epa-sensortoolkit``) showed the first: RT01's hygrometer, 15-20 %RH high,
at 99.9 for 34 hours.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import replaying
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.signal import lfilter

from auditd.core.diagnose import LineBefore
from auditd.core.series import Series
from auditd.core.verdict import (
    StreamVerdict,
    confirmation_start,
    evaluate_stream,
    line_before,
)
from auditd.model import SensorSpec, Tolerance

START = 1_764_028_800.0  # 2025-11-25T00:00:00Z
DAY = 86_400.0
HOUR = 3_600.0
INTERVAL = 60.0
WINDOW = DAY
FULL_SCALE = 99.9
TOL = Tolerance(bias=3.0, gain=0.05, rmse=5.0, r2_min=0.8, lag_s=300.0, window_s=WINDOW,
                min_samples=180)
SPEC = SensorSpec("humidity", "[]", "percent", (0.0, 100.0), INTERVAL, TOL)
WET_FROM = START + 2 * DAY
"""Two dry days (the air at 45-75 %RH), then two wet ones (86-96 %RH)."""
END = START + 4 * DAY
WINDOW_START = END - WINDOW

PROPERTY = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def humidity(seed: int, t: np.ndarray) -> np.ndarray:
    """The air's relative humidity: a diurnal swing and a slow wander about 60 %RH while
    dry, about 91 %RH once wet."""
    rng = np.random.default_rng(seed)
    wander = lfilter([1.0], [1.0, -0.999], rng.normal(0.0, 0.1, t.size))
    day = np.sin(2 * math.pi * (t - START) / DAY)
    dry = 60.0 + 12.0 * day + wander
    wet = 91.0 + 4.0 * day + 0.3 * wander
    return np.where(t < WET_FROM, dry, wet)


def streams(seed: int, offset: float, noise: float = 0.5, *,
            stops_at: float | None = None) -> tuple[Series, Series]:
    """Four days of the reference and of a device ``offset`` %RH high with AR(1) noise of
    ``noise`` %RH, reading at most ``FULL_SCALE`` (and at least 0); from ``stops_at`` on
    the device repeats ``FULL_SCALE`` whatever the air does (it froze there)."""
    rng = np.random.default_rng(seed + 1000)
    t = START + np.arange(int((END - START) / INTERVAL)) * INTERVAL + 7.0
    truth = humidity(seed, t)
    phi = 0.9
    shocks = rng.normal(0.0, noise * math.sqrt(1 - phi * phi), t.size)
    device = np.clip(truth + offset + lfilter([1.0], [1.0, -phi], shocks), 0.0, FULL_SCALE)
    if stops_at is not None:
        device = np.where(t >= stops_at, FULL_SCALE, device)
    reference = truth + rng.normal(0.0, 0.3, t.size)
    return Series.of(t, np.round(device, 1)), Series.of(t + 3.0, np.round(reference, 1))


def judged(device: Series, reference: Series, *, history: bool,
           spec: SensorSpec = SPEC, reference_interval_s: float | None = None
           ) -> StreamVerdict:
    """The verdict on the last window, asking the readings before it where the window is
    pinned whole at a range end, as a live audit does (``Auditor._judge``)."""
    judge = partial(evaluate_stream, device, reference, spec, WINDOW_START, END,
                    reference_interval_s=reference_interval_s)
    alone = judge()
    if not history or alone.pinned_at_end is None:
        return alone
    begin = confirmation_start(WINDOW_START, END)
    before = line_before(device, reference, spec, begin, WINDOW_START, alone.pinned_at_end,
                         reference_interval_s=reference_interval_s)
    return alone if before is None else judge(before=before)


def causes(verdict: StreamVerdict) -> list[str]:
    return [c.cause for c in verdict.causes]


def test_a_window_pinned_whole_at_full_scale_is_marked_and_alone_cannot_tell() -> None:
    """The saturated unit's last window holds only 99.9: on its own the window names a
    stop, and marks the value for the readings before it to decide."""
    device, reference = streams(1, 15.0)
    window = device.values[device.ts >= WINDOW_START]
    assert np.all(window == FULL_SCALE)
    alone = judged(device, reference, history=False)
    assert alone.status == "fail"
    assert causes(alone)[0] == "stuck"
    assert alone.pinned_at_end == FULL_SCALE


def test_a_unit_saturated_by_its_offset_is_clipping_not_stuck() -> None:
    """The readings before the window, off 99.9, follow the air 15 %RH high: that carries
    the unit to full scale wherever the reference was in the window. The window names the
    offset and the clipping it causes, says why, and is not critical (no "replace")."""
    for seed in range(5):
        device, reference = streams(seed, 15.0)
        verdict = judged(device, reference, history=True)
        named = causes(verdict)
        assert verdict.status == "fail", named
        assert named[:2] == ["offset_drift", "clipping"], named
        assert "stuck" not in named and "unit_mismatch" not in named, named
        # the severity is what this window shows with confidence, at full scale
        assert verdict.severity != "critical", (verdict.severity, named)
        offset, clip = verdict.causes[0], verdict.causes[1]
        assert "saturated, not stopped" in clip.evidence, clip.evidence
        assert "before the window" in clip.evidence, clip.evidence
        # the offset is stated as the readings before show it, not only as the window
        # held at full scale understates it
        assert "can only understate it" in offset.evidence, offset.evidence


def test_against_hourly_means_the_same() -> None:
    """The reference reporting hourly means (the device averaged over each hour: an hour
    of 99.9 is 99.89999999999996, or 99.89999999999999 where four readings are missing):
    the saturated unit is clipping, the frozen one stuck."""
    for seed in range(3):
        device, air = streams(seed, 15.0)
        # four readings of the window's first hour lost: its mean of 99.9 is
        # 99.89999999999999, the last hour's 99.89999999999996
        first_hour = (device.ts >= WINDOW_START) & (device.ts < WINDOW_START + HOUR)
        kept = ~(first_hour & (np.arange(device.ts.size) % 15 == 0))
        device = Series.of(device.ts[kept], device.values[kept])
        hours = np.floor(air.ts / HOUR)
        starts = np.unique(hours)
        means = np.array([air.values[hours == h].mean() for h in starts])
        reference = Series.of(starts * HOUR, np.round(means, 1))
        verdict = judged(device, reference, history=True, reference_interval_s=HOUR)
        assert verdict.pinned_at_end is None and "clipping" in causes(verdict), \
            causes(verdict)
        frozen, _ = streams(seed, 1.0, stops_at=WET_FROM)
        assert causes(judged(frozen, reference, history=True, reference_interval_s=HOUR)
                      )[0] == "stuck"


def test_a_unit_that_stopped_at_full_scale_is_still_stuck() -> None:
    """A unit within tolerance before the window froze at 99.9 as the wet spell began:
    its line before the window puts it at 86-96 in the window, not at 99.9. ``stuck``
    stands, critical, whatever the readings before say."""
    for seed in range(5):
        device, reference = streams(seed, 1.0, stops_at=WET_FROM)
        assert line_before(device, reference, SPEC, confirmation_start(WINDOW_START, END),
                           WINDOW_START, FULL_SCALE) is not None
        verdict = judged(device, reference, history=True)
        assert verdict.status == "fail"
        assert causes(verdict)[0] == "stuck", causes(verdict)
        assert verdict.severity == "critical"


DUST_TOL = Tolerance(bias=5.0, gain=0.35, rmse=7.0, r2_min=0.7, lag_s=300.0,
                     window_s=WINDOW, min_samples=180)
DUST = SensorSpec("pm2_5", "[mass] / [length] ** 3", "ug/m^3", (0.0, 1000.0), INTERVAL,
                  DUST_TOL)


def test_a_noisy_unit_within_tolerance_is_not_saturated_by_its_noise() -> None:
    """A dust sensor with 10 ug/m3 of noise over clean air (6-10 ug/m3), calibrated
    within tolerance (its readings off 0.0 average 2-3 ug/m3 high: the noise below 0 was
    clipped), starts sending mg/m3 at one decimal, 0.0, as the last window begins. Its readings
    before, read with two stds of noise, would "reach" 0.0 at every reference in the
    window; but a calibration within the bias tolerance cannot hold a unit at 0 while the
    air is farther off than that, so the window is not called saturation."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        t = START + np.arange(int((END - START) / INTERVAL)) * INTERVAL + 7.0
        clean = 8.0 + 2.0 * np.sin(2 * math.pi * (t - START) / DAY) \
            + lfilter([1.0], [1.0, -0.99], rng.normal(0.0, 0.1, t.size))
        device = np.clip(clean + rng.normal(0.0, 10.0, t.size), 0.0, None)
        device = np.where(t >= WINDOW_START, 0.0, device)  # its mg/m3, at one decimal
        reference = clean + rng.normal(0.0, 0.3, t.size)
        dev = Series.of(t, np.round(device, 1))
        ref = Series.of(t + 3.0, np.round(reference, 1))
        alone = evaluate_stream(dev, ref, DUST, WINDOW_START, END)
        assert alone.pinned_at_end == 0.0, causes(alone)
        before = line_before(dev, ref, DUST, confirmation_start(WINDOW_START, END),
                             WINDOW_START, 0.0)
        assert before is not None and abs(before.bias) < DUST_TOL.bias, before
        window = reference[t >= WINDOW_START]
        # read with two stds of noise, the difference would "reach" 0.0 throughout
        assert np.mean(window + before.bias - 2 * before.difference_std <= 0.0) >= 0.9
        verdict = evaluate_stream(dev, ref, DUST, WINDOW_START, END, before=before)
        assert causes(verdict)[0] in ("unit_mismatch", "stuck"), causes(verdict)
        assert "clipping" not in causes(verdict), causes(verdict)


def test_a_slope_the_reference_did_not_carry_is_no_calibration() -> None:
    """A line fitted before the window over a reference that carried less than half the
    device's variation (r2 0.43: the last 90 minutes of a dust unit before its unit
    changed, slope 2.9, offset -21 ug/m3) would put it at 0.0 wherever the air is below
    7.4 ug/m3; its mean difference, +3.7, would not. A line like it (offset -30: well
    below 0.0 over air at 6-7) is no calibration where the reference carried less than
    half the device's variation, and the window at 0.0 is not called saturation on it;
    the same line over a reference that carried the device (r2 0.6) is, and it is."""
    t = WINDOW_START + 7.0 + np.arange(int(WINDOW / INTERVAL)) * INTERVAL
    air = 6.5 + 0.5 * np.sin(2 * math.pi * t / (6 * HOUR))
    device, reference = Series.of(t, np.zeros(t.size)), Series.of(t + 3.0, np.round(air, 1))
    shaky = LineBefore(gain=2.885, offset=-30.0, residual_std=5.6, r2=0.43, bias=3.67,
                       difference_std=6.2, gain_se=0.61, pairs=31, span_s=5400.0)
    named = causes(evaluate_stream(device, reference, DUST, WINDOW_START, END,
                                   before=shaky))
    assert "clipping" not in named, named
    carried = LineBefore(gain=2.885, offset=-30.0, residual_std=5.6, r2=0.6, bias=3.67,
                         difference_std=6.2, gain_se=0.61, pairs=31, span_s=5400.0)
    assert "clipping" in causes(evaluate_stream(device, reference, DUST, WINDOW_START, END,
                                                before=carried))


def test_a_noisy_unit_beyond_tolerance_that_stopped_is_still_stuck() -> None:
    """8 %RH high with 3 %RH of noise, frozen at 99.9 as the wet spell began: its line
    plus two stds touches 99.9 in nearly every bin of the window, but a working unit with
    that calibration would read 99.9 in only about half of them. A whole day at it is a
    stop."""
    for seed in range(4):
        device, reference = streams(seed, 8.0, 3.0, stops_at=WET_FROM)
        verdict = judged(device, reference, history=True)
        assert causes(verdict)[0] == "stuck", causes(verdict)
        assert verdict.severity == "critical"


def test_a_dust_unit_held_at_zero_by_its_offset_is_not_a_wrong_unit() -> None:
    """A dust sensor 15 ug/m3 low reads 0.0 through a day of clean air (6-10 ug/m3), as a
    unit sending mg/m3 at one decimal would; the days before, off 0.0, show the offset
    that holds it there. The window names the offset and the clipping, not the unit (whose
    runbook says not to recalibrate), and is not critical."""
    for seed in range(4):
        rng = np.random.default_rng(seed)
        t = START + np.arange(int((END - START) / INTERVAL)) * INTERVAL + 7.0
        dirty = np.where(t < WINDOW_START, 30.0, 8.0) \
            + 2.0 * np.sin(2 * math.pi * (t - START) / DAY)
        device = np.clip(dirty - 15.0 + rng.normal(0.0, 1.0, t.size), 0.0, None)
        reference = dirty + rng.normal(0.0, 0.3, t.size)
        dev = Series.of(t, np.round(device, 1))
        ref = Series.of(t + 3.0, np.round(reference, 1))
        verdict = judged(dev, ref, history=True, spec=DUST)
        named = causes(verdict)
        assert named[:2] == ["offset_drift", "clipping"], named
        assert "unit_mismatch" not in named and "stuck" not in named, named
        assert verdict.severity != "critical", (verdict.severity, named)


def first_minutes(series: Series, values: tuple[float, ...]) -> Series:
    """``series`` with its first readings in the last window set to ``values``."""
    out = series.values.copy()
    first = int(np.searchsorted(series.ts, WINDOW_START))
    out[first:first + len(values)] = values
    return Series.of(series.ts, out)


def test_a_few_readings_off_the_end_are_no_line_either() -> None:
    """Frozen at 99.9, or saturated there, three readings into the window (two paired
    minutes, with three distinct values the device's resolution is read from): two
    minutes off the end fit no line, so the readings before the window decide, as for a
    window held there whole (before, an in-tolerance unit frozen there was named
    clipping)."""
    for seed in range(3):
        frozen, reference = streams(seed, 1.0, stops_at=WET_FROM)
        verdict = judged(first_minutes(frozen, (91.0, 92.5, 93.4)), reference, history=True)
        assert causes(verdict)[0] == "stuck", causes(verdict)
        saturated, reference = streams(seed, 15.0)
        verdict = judged(first_minutes(saturated, (97.0, 98.5, 99.2)), reference,
                         history=True)
        assert "clipping" in causes(verdict) and "stuck" not in causes(verdict), \
            causes(verdict)


def test_a_mean_difference_is_not_carried_across_a_span_error() -> None:
    """A dust unit with a span of 0.5 over calm air at 28-32 ug/m3 (its line does not
    speak: r2 about 0.3) reads 15 low there; carried as a mean difference to the
    window's air at 6-10, that would hold it at 0.0, where its span puts it at about 4.
    It starts sending mg/m3 (0.0): the unit is named, not saturation (a review's
    counter-example)."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        t = START + np.arange(int((END - START) / INTERVAL)) * INTERVAL + 7.0
        air = np.where(t < WINDOW_START, 30.0, 8.0) \
            + 2.0 * np.sin(2 * math.pi * (t - START) / DAY)
        device = np.clip(0.5 * air + rng.normal(0.0, 1.0, t.size), 0.0, None)
        device = np.where(t >= WINDOW_START, 0.0, device)
        dev = Series.of(t, np.round(device, 1))
        ref = Series.of(t + 3.0, np.round(air + rng.normal(0.0, 0.3, t.size), 1))
        verdict = judged(dev, ref, history=True, spec=DUST)
        assert "clipping" not in causes(verdict), causes(verdict)
        assert causes(verdict)[0] in ("unit_mismatch", "stuck"), causes(verdict)


def test_the_figures_from_before_are_stated_once_beside_a_baseline() -> None:
    """With a baseline's residuals (as the live audit judges), the causes are ranked
    twice; the offset's figures from before the window are stated once."""
    device, reference = streams(1, 15.0)
    rng = np.random.default_rng(1)
    begin = confirmation_start(WINDOW_START, END)
    before = line_before(device, reference, SPEC, begin, WINDOW_START, FULL_SCALE)
    verdict = evaluate_stream(device, reference, SPEC, WINDOW_START, END, before=before,
                              baseline_residuals=rng.normal(0.0, 0.5, 1440))
    offset = next(c for c in verdict.causes if c.cause == "offset_drift")
    assert offset.evidence.count("can only understate it") == 1, offset.evidence


def test_no_readings_before_the_window_leave_it_as_it_was() -> None:
    """A unit installed as the wet spell began has nothing before the window off 99.9
    (fewer paired bins than ``min_samples``): no line, and the window stands as alone."""
    device, reference = streams(2, 15.0)
    late = device.ts >= WET_FROM
    new = Series.of(device.ts[late], device.values[late])
    assert line_before(new, reference, SPEC, confirmation_start(WINDOW_START, END),
                       WINDOW_START, FULL_SCALE) is None
    assert causes(judged(new, reference, history=True))[0] == "stuck"


def test_the_line_before_is_the_devices_own_calibration() -> None:
    """``line_before`` fits the paired bins off the pinned value: the offset the dry days
    show (15 %RH), to within the noise, over the three windows' length before."""
    device, reference = streams(3, 15.0)
    begin = confirmation_start(WINDOW_START, END)
    before = line_before(device, reference, SPEC, begin, WINDOW_START, FULL_SCALE)
    assert isinstance(before, LineBefore)
    assert abs(before.bias - 15.0) < 1.0, before
    assert abs(before.gain - 1.0) < 0.05, before
    assert before.span_s > 1.5 * DAY, before


@PROPERTY
@given(seed=st.integers(0, 10_000), offset=st.floats(12.0, 25.0),
       noise=st.floats(0.2, 1.2))
def test_saturation_by_an_offset_is_never_called_stuck(seed: int, offset: float,
                                                       noise: float) -> None:
    """Whatever the offset that carries the unit past full scale through the wet days and
    whatever its noise: never ``stuck``, never critical."""
    device, reference = streams(seed, offset, noise)
    verdict = judged(device, reference, history=True)
    assert "stuck" not in causes(verdict), causes(verdict)
    assert verdict.severity != "critical", (verdict.severity, causes(verdict))


@PROPERTY
@given(seed=st.integers(0, 10_000), offset=st.floats(-2.0, 2.0),
       noise=st.floats(0.2, 1.2))
def test_a_calibrated_unit_frozen_at_full_scale_is_always_stuck(seed: int, offset: float,
                                                                noise: float) -> None:
    """Whatever a unit's calibration inside tolerance and its noise, frozen at 99.9 while
    the air sits at 86-96 it is stuck."""
    device, reference = streams(seed, offset, noise, stops_at=WET_FROM)
    assert causes(judged(device, reference, history=True))[0] == "stuck"


# --------------------------------------------------------------------------- live path

DEVICE_PROFILE = """\
model = "hygro"
[sensors.humidity]
quantity = "[]"
unit = "percent"
range = [0.0, 100.0]
interval_s = 60
[sensors.humidity.tolerance]
bias = 3.0
gain = 0.05
rmse = 5.0
r2_min = 0.8
lag_s = 300
window = "24h"
min_samples = 180
"""

REFERENCE = """\
[[reference]]
id = "ref-rh"
site = "north"
serves = ["rh-*"]
sensors = ["humidity"]
model = "hygro"
"""

CONFIG = '[audit]\ninterval = "6h"\n\n[models]\n"rh-*" = "hygro"\n'


def test_the_live_audit_calls_a_saturated_unit_clipping(tmp_path: Path) -> None:
    """Through ``sensor-auditd replay``: the unit 15 %RH high is never named stuck, and
    its windows spent wholly at 99.9 name clipping from the days before; the unit that
    froze at 99.9 beside it is named stuck."""
    saturated, reference = streams(4, 15.0)
    frozen, _ = streams(4, 1.0, stops_at=WET_FROM)
    recording = replaying.record(tmp_path / "rec.jsonl", "north", "humidity", {
        "rh-wet": saturated, "rh-frozen": frozen, "ref-rh": reference})
    findings, _ = replaying.replay(tmp_path, recording,
                                   profiles={"hygro.toml": DEVICE_PROFILE},
                                   references={"north.toml": REFERENCE}, config=CONFIG)
    calibration = [f for f in findings if f["kind"] == "calibration"]

    def named(device: str) -> list[list[str]]:
        return [[c["cause"] for c in f["causes"]] for f in calibration
                if f["device"] == device and f["status"] == "fail"]

    wet = named("rh-wet")
    assert wet and not any("stuck" in c for c in wet), wet
    frozen_whole = [[c["cause"] for c in f["causes"]] for f in calibration
                    if f["device"] == "rh-frozen" and f["status"] == "fail"
                    and f["window"]["start"] >= "2025-11-27T00:00:00Z"]
    assert frozen_whole and all(c[0] == "stuck" for c in frozen_whole), frozen_whole
    from_before = [c["evidence"] for f in calibration if f["device"] == "rh-wet"
                   for c in f["causes"] if c["cause"] == "clipping"
                   and "before the window" in c["evidence"]]
    assert from_before, wet


def dust_streams(seed: int, offset: float, *, changed_unit: bool = False,
                 noise: float = 2.0, glitches: int = 0) -> tuple[Series, Series]:
    """Four days of clean air (8-20 ug/m3, calmer on the last day: 7-11) as a reference
    reports it and as a dust unit ``offset`` ug/m3 off it reports it, with AR(1) noise of
    ``noise``, at one decimal and never below 0.0; ``changed_unit``: from the last
    window's start it sends mg/m3 (0.0 at one decimal); ``glitches`` readings of 0.1 in
    the middle of the last window."""
    rng = np.random.default_rng(seed)
    t = START + np.arange(int((END - START) / INTERVAL)) * INTERVAL + 7.0
    day = np.sin(2 * math.pi * (t - START) / DAY)
    wander = lfilter([1.0], [1.0, -0.999], rng.normal(0.0, 0.05, t.size))
    clean = np.where(t < WINDOW_START, 14.0 + 6.0 * day, 9.0 + 2.0 * day) + wander
    shocks = rng.normal(0.0, noise * math.sqrt(1 - 0.81), t.size)
    device = np.clip(clean + offset + lfilter([1.0], [1.0, -0.9], shocks), 0.0, None)
    if changed_unit:
        device = np.where(t >= WINDOW_START, 0.0, device)
    middle = int(np.searchsorted(t, WINDOW_START + WINDOW / 2))
    device[middle:middle + 2 * glitches:2] = 0.1
    reference = clean + rng.normal(0.0, 0.3, t.size)
    return Series.of(t, np.round(device, 1)), Series.of(t + 3.0, np.round(reference, 1))


def test_an_offset_that_held_the_unit_at_zero_before_is_counted_in_full() -> None:
    """A dust unit reading 20 ug/m3 low sat at 0.0 for most of the three days before
    its window (it left it only at the air's afternoon peaks) and for all of the window.
    Its readings off 0.0 are its highest excursions: a mean difference of -17 to -18 on
    a slope of 0.2-0.4, which carries no calibration. Counted as "at 0.0 or below", the
    held ones give back the offset that holds it there (``censored_before``: a slope of
    0.8-1.25, a mean difference of -19 to -21), with which a working unit would read 0.0
    throughout: the offset is named first, then clipping, not a wrong unit, in every
    seed; and so where it left 0.0 for a reading or two at its resolution in the window
    (fewer than a line needs)."""
    for seed in range(6):
        device, reference = dust_streams(seed, -20.0, glitches=seed % 3)
        verdict = judged(device, reference, history=True, spec=DUST)
        assert verdict.status == "fail"
        assert causes(verdict)[:2] == ["offset_drift", "clipping"], causes(verdict)
        clip = next(c for c in verdict.causes if c.cause == "clipping")
        assert "counted as at or beyond it" in clip.evidence, clip.evidence
        read = float(clip.evidence.split("it read ")[1].split(" ")[0])
        assert -23.0 < read < -17.0, clip.evidence


def test_a_unit_that_changed_after_its_calibration_is_not_excused_as_saturation() -> None:
    """Dust units 0, 3 or 8 ug/m3 low that start sending mg/m3 (0.0) as the window
    begins: their latest readings before, counted with the censored ones, put a working
    unit nowhere near 0.0 over the window's air, so the window stays a wrong unit or a
    stop."""
    for offset in (0.0, -3.0, -8.0):
        for seed in range(4):
            device, reference = dust_streams(seed, offset, changed_unit=True)
            verdict = judged(device, reference, history=True, spec=DUST)
            assert causes(verdict)[0] in ("unit_mismatch", "stuck"), (offset, causes(verdict))
            assert "clipping" not in causes(verdict), (offset, causes(verdict))


def test_a_stop_is_not_excused_by_what_slipped_out_of_it() -> None:
    """Two stops whose latest readings off the end a censored fit could take for an
    offset (a review's counter-examples, both once called saturation, minor): a dust
    unit that sends mg/m3 for four days (0.0 at one decimal, 0.1-0.4 through an
    afternoon's smoke plume, a "line" of slope 0.001), and a hygrometer within tolerance
    frozen at 99.9 as the wet spell began, three true readings slipping out between its
    watchdog's resets. Both stay a wrong unit or a stop."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        t = START + np.arange(int((END - START) / INTERVAL)) * INTERVAL + 7.0
        plume = 300.0 * np.clip(1 - np.abs(t - START - 2.5 * DAY - 1200.0) / 1200.0, 0, None)
        clean = 14.0 + 6.0 * np.sin(2 * math.pi * (t - START) / DAY) + plume
        sent = np.round(np.clip(clean + rng.normal(0.0, 1.0, t.size), 0.0, None) / 1000, 1)
        dust = judged(Series.of(t, sent), Series.of(t + 3.0, np.round(clean, 1)),
                      history=True, spec=DUST)
        assert causes(dust)[0] in ("unit_mismatch", "stuck"), causes(dust)
        assert "clipping" not in causes(dust), causes(dust)

        device, reference = streams(seed, 0.0, stops_at=WET_FROM)
        values, ts = device.values.copy(), device.ts
        truth = humidity(seed, ts)
        slipped = np.sort(rng.choice(np.flatnonzero(
            (ts >= WET_FROM + 600) & (ts < WINDOW_START - 600)), 3, replace=False))
        values[slipped] = np.round(truth[slipped] + rng.normal(0.0, 0.5, 3), 1)
        frozen = judged(Series.of(ts, values), reference, history=True)
        assert causes(frozen)[0] == "stuck", causes(frozen)
