"""A device that agrees with its reference whenever it reports, but mostly does not report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from auditd.adapters.config.catalog import build_catalog, load_profiles
from auditd.adapters.store import Store
from auditd.app.auditor import AlertSettings, Auditor
from auditd.core import Series, evaluate_stream
from auditd.core.diagnose import DROPOUT_FAIL, DROPOUT_MAJOR
from auditd.model import Outcome, Reading, Reference, SensorSpec, Tolerance
from auditd.topics import TopicsConfig

REPO = Path(__file__).resolve().parents[1]

T0 = 1_764_028_800.0
MINUTES = 24 * 60
TOL = Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.9, lag_s=300.0, window_s=86_400.0,
                min_samples=60)
SPEC = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), 60.0, TOL)


def day(seed: int, missing: float) -> tuple[Series, Series]:
    """A healthy device over a day at 1/min, silent in ``missing`` of the minutes, in
    outages of an hour (a flaky link, not scattered single losses)."""
    rng = np.random.default_rng(seed)
    t = T0 + 60.0 * np.arange(MINUTES)
    truth = 15.0 + 6.0 * np.sin(2 * np.pi * np.arange(MINUTES) / MINUTES)
    hours = rng.permutation(24)[:round(24 * missing)]
    silent = np.isin(np.arange(MINUTES) // 60, hours)
    device = Series(t[~silent] + 5, (truth + rng.normal(0, 0.1, MINUTES))[~silent])
    return device, Series(t + 1, truth + rng.normal(0, 0.03, MINUTES))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([13, 16, 19, 21]))
def test_mostly_silent_fails_on_dropout_with_its_coverage(seed: int, silent_hours: int) -> None:
    device, reference = day(seed, silent_hours / 24)
    verdict = evaluate_stream(device, reference, SPEC, T0, T0 + 86_400)
    assert verdict.status == "fail"
    assert [c.cause for c in verdict.causes] == ["dropout"]
    assert verdict.failed == ("coverage",)
    share = silent_hours / 24
    assert verdict.severity == ("major" if share >= DROPOUT_MAJOR else "minor")
    coverage = verdict.metrics.device_coverage
    assert abs(coverage - (1 - share)) < 0.01
    assert f"{100 * coverage:.1f}%" in verdict.action  # the coverage it delivered


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([0, 3, 7, 11]))
def test_a_device_missing_less_than_half_passes(seed: int, silent_hours: int) -> None:
    assert silent_hours / 24 < DROPOUT_FAIL
    device, reference = day(seed, silent_hours / 24)
    verdict = evaluate_stream(device, reference, SPEC, T0, T0 + 86_400)
    assert verdict.status == "pass", verdict.causes


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([0, 1, 3]))
def test_a_device_all_but_silent_against_a_coarse_reference_fails_on_dropout(
        seed: int, kept: int) -> None:
    """Three hours against a 10-minute reference (18 bins: fewer than the 20 a share of
    reference bins otherwise needs, but more than the 5 an audit of them needs); the
    device sent ``kept`` readings, too few to judge its figures. That is not "no action
    yet": it is a device that went silent while the reference kept reporting."""
    rng = np.random.default_rng(seed)
    t = T0 + 60.0 * np.arange(180)
    truth = 15.0 + np.sin(np.arange(180) / 30.0)
    reference = Series(T0 + 600.0 * np.arange(18),
                       np.asarray([truth[i:i + 10].mean() for i in range(0, 180, 10)]))
    picks = np.sort(rng.choice(180, size=kept, replace=False))
    device = Series(t[picks] + 5, truth[picks] + rng.normal(0, 0.1, kept))
    spec = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), 60.0,
                      Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.9, lag_s=60.0,
                                window_s=3 * 3600.0, min_samples=45))
    verdict = evaluate_stream(device, reference, spec, T0, T0 + 3 * 3600,
                              reference_interval_s=600.0)
    assert verdict.status == "fail", (verdict.status, verdict.causes, verdict.action)
    assert [c.cause for c in verdict.causes] == ["dropout"]
    assert verdict.severity == "major"


def test_a_unit_installed_within_the_window_has_not_dropped_out(tmp_path: Path) -> None:
    """The reference has reported for two days; a new unit's first reading is 30 minutes
    before the audit of a 24-hour window. The window is judged from its first reading:
    too little data yet (insufficient), not 98 % of the day missing. A unit that did
    report all day and then went silent is a dropout."""
    start = T0
    now = start + 2 * 86_400
    ts = start + 60.0 * np.arange(2 * MINUTES) + 1.0
    truth = 15.0 + 6.0 * np.sin(2 * np.pi * (ts - start) / 86_400)
    rng = np.random.default_rng(2)
    new = ts >= now - 30 * 60
    gone = ts < now - 20 * 3600
    readings = [Reading("north", "ref-north", "temperature", "degC", float(t), float(v))
                for t, v in zip(ts, truth + rng.normal(0, 0.03, ts.size), strict=True)]
    for name, keep in (("th-north-01", new), ("th-north-02", gone)):
        readings += [Reading("north", name, "temperature", "degC", float(t) + 4, float(v))
                     for t, v in zip(ts[keep], (truth + rng.normal(0, 0.1, ts.size))[keep],
                                     strict=True)]
    ref = Reference(id="ref-north", site="north", serves=("th-north-*",),
                    sensors=("temperature",), model="ref-station")
    catalog = build_catalog(load_profiles(REPO / "device_profiles"), [ref],
                            {"th-north-*": "th-200"})
    with Store(tmp_path / "audit.db") as store:
        store.readings.write_outcomes([Outcome(readings=tuple(readings))])
        auditor = Auditor(store, catalog, TopicsConfig(), gateway="gw",
                          alerting=AlertSettings("gw", TopicsConfig(), ("file",), mqtt=False))
        auditor.run(now)
        latest = {s.finding.device: s.finding for s in store.findings.latest()
                  if s.finding.kind == "calibration"}
    assert latest["th-north-01"].status == "insufficient_data", latest["th-north-01"]
    assert latest["th-north-02"].status == "fail"
    assert [c.cause for c in latest["th-north-02"].causes] == ["dropout"]
