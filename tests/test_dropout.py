"""A device that agrees with its reference whenever it reports, but mostly does not report."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from auditd.core import Series, evaluate_stream
from auditd.core.diagnose import DROPOUT_FAIL, DROPOUT_MAJOR
from auditd.model import SensorSpec, Tolerance

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
