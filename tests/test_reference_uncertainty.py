"""A reference's stated uncertainty is an expanded one (a certificate's U, k = 2 unless the
file says otherwise); the gain's errors-in-variables fit takes the standard uncertainty
U / k as the std of the reference's reading error.

What a technician relies on: a certificate's honest figure never talks a real span error
back inside tolerance, and never pushes a healthy unit out of it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import replaying
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import lfilter

from auditd.adapters.config.catalog import load_profiles, load_reference_file
from auditd.core import Series, evaluate_stream
from auditd.errors import ConfigError
from auditd.model import Reference

ROOT = Path(__file__).resolve().parent.parent
CO2 = load_profiles(ROOT / "device_profiles")["co2-ndir"].sensors["co2"]
# 3-minute pairs, the reference's interval, so no averaging is involved
STEP_S, DAY, SIX_HOURS = 180.0, 480, 120
T0 = 1_764_057_600.0
SPEC = replace(CO2, interval_s=STEP_S)
REFERENCE_TOML = "\n".join([
    "[[reference]]", 'id = "ref-lab"', 'site = "lab"', 'serves = ["co2-*"]',
    'sensors = ["co2"]', "uncertainty = {co2 = 4}", ""])


def reference_file(tmp_path: Path, extra: str = "") -> Reference:
    path = tmp_path / "refs.toml"
    path.write_text(REFERENCE_TOML + extra + "\n", encoding="utf-8")
    (reference,) = load_reference_file(path)
    return reference


def test_a_certificates_figure_is_read_as_expanded_at_k_2(tmp_path: Path) -> None:
    assert reference_file(tmp_path).standard_uncertainty("co2") == pytest.approx(2.0)
    assert reference_file(tmp_path, "coverage_factor = 1").standard_uncertainty("co2") \
        == pytest.approx(4.0)
    assert reference_file(tmp_path).standard_uncertainty("temperature") is None


@pytest.mark.parametrize("k", ["0.5", "0", '"two"', "20", "nan"])
def test_a_coverage_factor_outside_1_to_10_is_refused_naming_the_key(tmp_path: Path,
                                                                      k: str) -> None:
    with pytest.raises(ConfigError) as refused:
        reference_file(tmp_path, f"coverage_factor = {k}")
    assert "reference[0].coverage_factor" in str(refused.value)
    assert "refs.toml" in str(refused.value)


def test_a_reference_built_in_code_is_held_to_the_same_bound() -> None:
    with pytest.raises(ValueError, match="coverage_factor"):
        Reference(id="ref-lab", site="lab", serves=("co2-*",), sensors=("co2",),
                  uncertainty={"co2": 4.0}, coverage_factor=0.0)


def test_an_uncertainty_too_small_to_square_leaves_the_least_squares_line() -> None:
    """A stated figure over a huge factor (or a tiny one) underflows when squared: the
    reference then has no error to correct for, not a division by zero."""
    device, reference = room(1, 0.9, pairs=SIX_HOURS)
    metrics = evaluate_stream(device, reference, SPEC, T0, T0 + STEP_S * SIX_HOURS,
                              reference_uncertainty=1e-170).metrics
    assert metrics.gain_deming == pytest.approx(metrics.gain)


def room(seed: int, gain: float, pairs: int = DAY) -> tuple[Series, Series]:
    """A room's CO2 on the reference's 3-minute grid: occupancy moves it by several ppm
    from one reading to the next (an AR(1) of 12 ppm that forgets in 5 minutes, over a
    slow swing of 10 ppm), so the reference's successive differences do not cap the
    certificate's figure (``fit.deming_line``). The reference adds 2 ppm of noise (its
    certificate: U = 4 ppm at k = 2), the unit 3 ppm and its span."""
    rng = np.random.default_rng(seed)
    t = T0 + STEP_S * np.arange(pairs)
    truth = 450.0 + 10.0 * np.sin(2 * np.pi * np.arange(pairs) / pairs) \
        + lfilter([1.0], [1.0, -0.55], rng.normal(0.0, 12.0 * np.sqrt(1 - 0.55**2), pairs))
    reference = Series(t, truth + rng.normal(0.0, 2.0, pairs))
    device = Series(t + 5.0, 450.0 + gain * (truth - 450.0) + rng.normal(0.0, 3.0, pairs))
    return device, reference


def test_the_deming_gain_is_unbiased_with_the_certificates_standard_uncertainty(
        tmp_path: Path) -> None:
    """Over 120 rooms, units at spans 0.8-1.2: the Deming gain with U / k misses the true
    span by 0.05 % on average. With U taken as the std it overstated the reference's noise
    fourfold and every span by about 4 %, enough to talk a 15 % span error back inside a
    5 % tolerance (a matrix fleet's CO2 unit at 0.85 passed three 6-hour windows it now fails)."""
    u = reference_file(tmp_path).standard_uncertainty("co2")
    errors = []
    for seed in range(120):
        gain = 0.8 + 0.4 * seed / 119
        device, reference = room(seed, gain)
        metrics = evaluate_stream(device, reference, SPEC, T0, T0 + STEP_S * DAY,
                                  reference_uncertainty=u).metrics
        errors.append(metrics.gain_deming / gain - 1.0)
    assert abs(float(np.mean(errors))) < 0.01, np.mean(errors)
    assert float(np.max(np.abs(errors))) < 0.06, np.max(np.abs(errors))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_healthy_unit_beside_the_same_reference_passes(
        tmp_path_factory: pytest.TempPathFactory, seed: int) -> None:
    """The smaller correction pushes no healthy unit out: 6 hours of a unit true to span
    beside that reference pass whatever the room did."""
    reference = reference_file(tmp_path_factory.mktemp("ref"))
    device, ref = room(seed, 1.0, pairs=SIX_HOURS)
    verdict = evaluate_stream(device, ref, SPEC, T0, T0 + STEP_S * SIX_HOURS,
                              reference_uncertainty=reference.standard_uncertainty("co2"))
    assert verdict.status == "pass", (verdict.metrics.as_dict(), verdict.causes)


PROFILE = """\
model = "room-co2"
[sensors.co2]
quantity = "[]"
unit = "ppm"
range = [0.0, 5000.0]
interval_s = 180
[sensors.co2.tolerance]
bias = 45.0
gain = 0.05
rmse = 50.0
r2_min = 0.5
lag_s = 300
window = "24h"
"""


def test_the_live_audit_reads_the_certificate_at_its_coverage_factor(tmp_path: Path) -> None:
    """Through ``sensor-auditd replay``: a unit at 85 % of span beside a reference whose
    file states U = 4 ppm (k = 2) gets a Deming gain of 0.85 in its finding, not the 0.9
    that U taken as the std gives."""
    device, reference = room(7, 0.85)
    recording = replaying.record(tmp_path / "rec.jsonl", "lab", "co2",
                                 {"co2-01": device, "ref-lab": reference})
    refs = REFERENCE_TOML.replace('serves = ["co2-*"]', 'serves = ["co2-*"]\nmodel = "room-co2"')
    findings, _ = replaying.replay(
        tmp_path, recording, profiles={"room-co2.toml": PROFILE},
        references={"lab.toml": refs},
        config='[audit]\ninterval = "24h"\n\n[models]\n"co2-*" = "room-co2"\n')
    last = [f for f in findings if f["kind"] == "calibration" and f["device"] == "co2-01"][-1]
    assert last["metrics"]["n"] >= DAY - 2, last["metrics"]
    assert last["metrics"]["gain_deming"] == pytest.approx(0.85, abs=0.025), last["metrics"]
