"""The group decision: is it the devices or their reference? And the peer-consensus fallback.

The pure tests drive ``auditd.core.consensus`` with generated device-minus-reference
differences; the integration tests run the real ``Store`` and ``Auditor`` over a day of
minute readings from six devices and their reference.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from auditd.adapters.config.catalog import build_catalog, load_profiles
from auditd.adapters.store import Store
from auditd.app.auditor import Auditor
from auditd.core import Series, StreamVerdict, evaluate_stream
from auditd.core.checks import comparison_margin
from auditd.core.consensus import (
    MIN_DEVICES,
    MIN_SHARE,
    _Ranked,
    common_grid,
    common_onset,
    could_share,
    judge_reference,
    peer_consensus,
    recurring_shift,
    reference_own_signals,
    stated_uncertainty,
    step_seen,
)
from auditd.domain.audit_plan import EarlierStep, attribute, blame_reference
from auditd.domain.catalog import Catalog
from auditd.model import (
    Cause,
    Finding,
    MetaRecord,
    Outcome,
    Reading,
    Reference,
    SensorSpec,
    Tolerance,
)
from auditd.topics import TopicsConfig

REPO = Path(__file__).resolve().parents[1]
START = 1_764_028_800.0  # 2025-11-25T00:00:00Z
DAY = 86_400.0
MINUTE = 60.0
T = START + (np.arange(1440) + 0.5) * MINUTE
TOLERANCE = 0.5

EXAMPLES = int(os.environ.get("CORE_EXAMPLES", "20"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def differences(rng: np.random.Generator, n: int, noise: float) -> dict[str, np.ndarray]:
    """``n`` healthy devices: a small own offset each plus noise, a few missing bins."""
    out = {}
    for i in range(n):
        d = rng.uniform(-0.15, 0.15) + rng.normal(0.0, noise, T.size)
        d[rng.random(T.size) < 0.05] = np.nan
        out[f"dev-{i:02d}"] = d
    return out


# --------------------------------------------------------------------------- pure


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.integers(3, 10), st.data(), st.floats(1.5, 4.0),
       st.sampled_from([-1.0, 1.0]), st.floats(0.3, 0.7), st.floats(0.02, 0.2))
def test_k_of_n_sharing_a_shift_blames_the_reference_iff_a_clear_majority(
        seed: int, n: int, data: st.DataObject, size: float, sign: float, at: float,
        noise: float) -> None:
    k = data.draw(st.integers(0, n), label="k")
    rng = np.random.default_rng(seed)
    diffs = differences(rng, n, noise)
    onset = START + at * DAY
    members = sorted(rng.choice(sorted(diffs), size=k, replace=False).tolist())
    for device in members:
        diffs[device] = np.where(onset <= T, diffs[device] + sign * size, diffs[device])
    decision = judge_reference(T, diffs, TOLERANCE)
    expected = k >= MIN_DEVICES and k / n >= MIN_SHARE - 1e-9
    assert decision.reference_fault == expected, (k, n, decision)
    if expected:
        assert sorted(decision.members) == members
        assert decision.devices == n
        assert abs(decision.deviation - sign * size) < 0.2
        assert decision.spread < 0.3
        assert decision.onset is not None and abs(decision.onset - onset) <= 5 * MINUTE
        assert 0.0 < decision.confidence <= 1.0
        assert "devices served by ref" in decision.evidence("ref", "degC")
    else:
        assert decision.confidence == 0.0


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.integers(3, 10), st.floats(1.5, 4.0),
       st.floats(0.2, 0.8))
def test_one_faulty_device_among_healthy_ones_is_its_own_fault(
        seed: int, n: int, size: float, at: float) -> None:
    rng = np.random.default_rng(seed)
    diffs = differences(rng, n, 0.1)
    diffs["dev-00"] = np.where(START + at * DAY <= T, diffs["dev-00"] + size, diffs["dev-00"])
    decision = judge_reference(T, diffs, TOLERANCE)
    assert not decision.reference_fault
    assert "dev-00" in decision.others


def test_devices_that_still_sit_where_an_earlier_blame_found_them_are_judged_against_it(
) -> None:
    """Seed 3's f34: seven PM2.5 units of two models 11-21 ug/m3 below a reference that
    an earlier audit blamed at -17 (both models agreeing); in a later three-hour window
    their wandering noise split them 4 to 3 about their own median (-14), so the band of
    one tolerance held too few, and the reference's fault went on every device. Asked
    about the level the earlier blame found, six of seven are within it; a reference
    repaired since (the devices back near zero) is not blamed on that anchor."""
    shifts = [-21.2, -12.4, -13.9, -21.0, -19.3, -14.1, -11.3]
    rng = np.random.default_rng(5)
    diffs = {f"dev-{i}": s + rng.normal(0.0, 0.3, T.size) for i, s in enumerate(shifts)}
    tolerance = 5.0
    alone = judge_reference(T, diffs, tolerance)
    assert not alone.reference_fault
    anchored = judge_reference(T, diffs, tolerance, anchor=-17.2)
    assert anchored.reference_fault and len(anchored.members) == 6
    assert "dev-6" in anchored.others
    repaired = {d: v - np.median(v) + rng.uniform(-2, 2) for d, v in diffs.items()}
    assert not judge_reference(T, repaired, tolerance, anchor=-17.2).reference_fault


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.integers(3, 9), st.floats(-6.0, 6.0))
def test_a_group_no_anchor_could_blame_is_never_looked_up(seed: int, n: int,
                                                         anchor: float) -> None:
    """``could_share`` spares the store's look for an earlier blame; it may only ever say
    yes where an anchor could make the group's shifts a fault (devices scattered over
    -4 to 4 tolerances around shifts of either sign)."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-3.0, 3.0) * TOLERANCE
    diffs = {f"dev-{i}": centre + rng.uniform(-1.5, 1.5) * TOLERANCE
             + rng.normal(0.0, 0.05, T.size) for i in range(n)}
    plain = judge_reference(T, diffs, TOLERANCE)
    anchored = judge_reference(T, diffs, TOLERANCE, anchor=anchor * TOLERANCE)
    if anchored.reference_fault:
        assert could_share(plain, TOLERANCE)


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.integers(3, 10))
def test_devices_that_disagree_with_each_other_do_not_blame_the_reference(
        seed: int, n: int) -> None:
    """Every device off, but each its own way (sizes 1.2 apart, own onsets): no consensus."""
    rng = np.random.default_rng(seed)
    diffs = differences(rng, n, 0.1)
    sizes = rng.permutation(1.0 + 1.2 * np.arange(n)) * rng.choice([-1.0, 1.0], n)
    for (device, d), size in zip(sorted(diffs.items()), sizes, strict=True):
        diffs[device] = np.where(START + rng.uniform(0.2, 0.8) * DAY <= T, d + size, d)
    assert not judge_reference(T, diffs, TOLERANCE).reference_fault


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.floats(5.0, 15.0), st.sampled_from([-1.0, 1.0]))
def test_a_big_weather_swing_shared_with_the_reference_is_not_a_fault(
        seed: int, swing: float, sign: float) -> None:
    """A front passing: every device *and* the reference jump by ``swing``."""
    rng = np.random.default_rng(seed)
    ts = START + np.arange(1440) * MINUTE + 5.0
    weather = 10.0 + 4.0 * np.sin(2 * math.pi * (ts - START) / DAY)
    weather = weather + np.where(ts >= START + 0.5 * DAY, sign * swing, 0.0)
    reference = Series.of(ts, weather)
    devices = {f"dev-{i}": Series.of(ts + rng.uniform(-3, 3), weather + rng.normal(0, 0.1, ts.size))
               for i in range(6)}
    grid = common_grid(devices, reference, MINUTE, START, START + DAY)
    decision = judge_reference(grid.t, grid.diffs(), TOLERANCE)
    assert not decision.reference_fault
    assert all(abs(s) < 0.3 for s in decision.shifts.values())


def test_too_few_devices_decide_nothing() -> None:
    rng = np.random.default_rng(1)
    diffs = {d: v - 2.0 for d, v in differences(rng, 2, 0.1).items()}
    decision = judge_reference(T, diffs, TOLERANCE)
    assert not decision.reference_fault and decision.members == ()


def test_peer_consensus_leaves_the_device_out_and_needs_three_peers() -> None:
    values = {"a": np.array([1.0, 1.0, np.nan]), "b": np.array([2.0, 2.0, 2.0]),
              "c": np.array([3.0, 3.0, 3.0]), "d": np.array([100.0, 4.0, 4.0])}
    built = peer_consensus(values, "b")
    assert built is not None
    assert built.peers == 3
    assert built.values[0] == 3.0 and built.values[1] == 3.0
    assert math.isnan(built.values[2])  # only two peers report in the last bin
    assert peer_consensus({k: values[k] for k in "abc"}, "a") is None


@settings(max_examples=200, deadline=None)
@given(data=st.data(), rows=st.integers(2, 9), bins=st.integers(1, 12))
def test_a_bins_median_without_two_rows_is_read_off_its_sorted_values(
        data: st.DataObject, rows: int, bins: int) -> None:
    """``_Ranked.median_without`` (the k^2 leave-two-out medians of ``peer_medians``) is
    the median of what is left, NaN and ties included, as numpy takes it."""
    cell = st.one_of(st.just(math.nan), st.integers(-3, 3).map(float),
                     st.floats(-1e3, 1e3, allow_nan=False))
    stack = np.array(data.draw(st.lists(st.lists(cell, min_size=bins, max_size=bins),
                                        min_size=rows, max_size=rows)))
    a = data.draw(st.one_of(st.none(), st.integers(0, rows - 1)))
    b = data.draw(st.integers(0, rows - 1).filter(lambda r: r != a))
    min_count = data.draw(st.integers(0, 3))
    kept = np.delete(stack, [r for r in (a, b) if r is not None], axis=0)
    with np.errstate(all="ignore"):
        count = np.count_nonzero(np.isfinite(kept), axis=0)
        expected = np.full(bins, np.nan)
        enough = count >= max(min_count, 1)
        if enough.any():
            expected[enough] = np.nanmedian(kept[:, enough], axis=0)
    got = _Ranked.of(stack).median_without(a, b, min_count)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0.0, equal_nan=True)


def test_peer_median_uncertainty_covers_its_error_from_the_truth() -> None:
    """Peers each off by their own offset (uniform within a tolerance of 5) and their own
    noise, with and without a broken peer reading zero (another unit): over many draws
    the median's actual error from the truth lies beyond the margin a failure must clear
    (``stated_uncertainty``, ``checks.comparison_margin``; nominally 1 %) in few draws,
    and the margin never exceeds the tolerance (healthy peers lie within it, and so does
    their median) and, with many peers, stays below it."""
    tol = Tolerance(bias=5.0, gain=0.35, rmse=7.0, r2_min=0.7, lag_s=300.0,
                    window_s=86400.0, min_samples=10)
    rng = np.random.default_rng(7)
    truth = 20.0 + 5.0 * np.sin(np.linspace(0, 6, 144))
    for healthy, noise, broken in ((4, 1.0, True), (4, 1.0, False), (7, 1.0, True),
                                   (7, 3.0, True), (12, 1.0, True)):
        errors, offset_margin, rms_margin = [], [], []
        for _ in range(200):
            values = {f"p{i}": truth + rng.uniform(-5, 5) + rng.normal(0, noise, truth.size)
                      for i in range(healthy + 1)}
            if broken:
                values["broken"] = np.zeros(truth.size)
            built = peer_consensus(values, "p0")
            assert built is not None and built.peers == healthy + broken
            offset_u, rms_u = stated_uncertainty(built, tol)
            errors.append(abs(float(np.median(built.values - truth))))
            offset_margin.append(comparison_margin(offset_u))
            rms_margin.append(comparison_margin(rms_u))
        error = np.array(errors)
        assert np.mean(error > np.array(offset_margin)) <= 0.05
        assert np.mean(error > np.array(rms_margin)) <= 0.05
        assert max(offset_margin) <= tol.bias + 1e-9 and max(rms_margin) <= tol.rmse + 1e-9
        if healthy >= 12:
            assert np.median(offset_margin) < 0.9 * tol.bias


PEER_SPEC = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), 60.0,
                       Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.9, lag_s=300.0,
                                 window_s=86400.0, min_samples=60))


def peers_and_device(seed: int, device_offset: float | None, *, devices: int = 8,
                     noise: float = 0.2) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A day of minute readings from ``devices`` thermometers of one site: each off by its
    own offset, uniform within 0.9 of the 0.5 degC tolerance (``device_offset`` for the
    judged one, ``dev``, when given) and its own white ``noise``."""
    rng = np.random.default_rng(seed)
    t = 1_764_028_800.0 + 60.0 * np.arange(1440)
    truth = 12.0 + 6.0 * np.sin(2 * math.pi * np.arange(1440) / 1440 + rng.uniform(0, 6))
    offsets = rng.uniform(-0.45, 0.45, devices)
    if device_offset is not None:
        offsets[0] = device_offset
    names = ["dev"] + [f"peer{i}" for i in range(1, devices)]
    return t, {name: truth + offsets[i] + rng.normal(0.0, noise, t.size)
               for i, name in enumerate(names)}


def judged_on_peers(t: np.ndarray, values: dict[str, np.ndarray], *,
                    with_uncertainty: bool = True) -> StreamVerdict:
    """As ``Auditor._judge_on_peers`` judges: against the median with its stated
    uncertainty (``stated_uncertainty``)."""
    built = peer_consensus(values, "dev")
    assert built is not None
    offset_u, rms_u = stated_uncertainty(built, PEER_SPEC.tolerance)
    extra = {"comparison_offset_u": offset_u, "comparison_rms_u": rms_u} \
        if with_uncertainty else {}
    return evaluate_stream(Series(t, values["dev"]), Series(t, built.values), PEER_SPEC,
                           float(t[0]), float(t[-1]) + 60.0, **extra)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), devices=st.sampled_from([4, 5, 6, 8]),
       noise=st.floats(0.1, 0.6))
@example(seed=12, devices=8, noise=0.2)
@example(seed=63, devices=6, noise=0.3)  # failed when the levels' ground held the device
def test_a_healthy_device_never_fails_against_its_healthy_peers(seed: int, devices: int,
                                                                noise: float) -> None:
    """Thermometers each within their tolerance, with noise up to three quarters of
    their rmse budget: two at opposite ends of the tolerance differ by nearly twice it,
    and against the median of the others a healthy unit was failed as offset_drift
    (seed 12, below; before the median had an uncertainty, 9 of seeds 0-149 failed so
    at 8 devices, 18 of 60 at 4 devices with noise 0.6). The median's own uncertainty is
    what they may differ by."""
    t, values = peers_and_device(seed, None, devices=devices, noise=noise)
    assert judged_on_peers(t, values).status != "fail"


def test_without_the_medians_uncertainty_a_healthy_device_fails() -> None:
    """What the property above guards against: the same day judged as though the peers'
    median were an instrument."""
    t, values = peers_and_device(12, None)
    assert judged_on_peers(t, values, with_uncertainty=False).status == "fail"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), sign=st.sampled_from([-1.0, 1.0]),
       devices=st.sampled_from([4, 6, 8]))
def test_a_device_three_tolerances_off_still_fails_against_its_peers(
        seed: int, sign: float, devices: int) -> None:
    """However few the peers: healthy ones lie within their tolerance and so does their
    median, so the margin never exceeds the tolerance (``stated_uncertainty``). At two
    tolerances against three peers it is a coin toss (24-26 of 40 draws found)."""
    t, values = peers_and_device(seed, sign * 1.5, devices=devices)
    verdict = judged_on_peers(t, values)
    assert verdict.status == "fail" and verdict.causes[0].cause == "offset_drift"


def shared_bias(rng: np.random.Generator, n: int, offset: float, noise: float,
                signal: np.ndarray) -> dict[str, np.ndarray]:
    """Devices of one design sharing a bias through the whole window: a common offset,
    each its own small gain error on the signal (errors that meet at low values), noise."""
    out = {}
    for i in range(n):
        gain_error = rng.uniform(-0.03, 0.03)
        out[f"dev-{i:02d}"] = (offset + gain_error * signal + rng.uniform(-0.1, 0.1)
                               + rng.normal(0.0, noise, T.size))
    return out


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.integers(3, 10), st.floats(1.5, 8.0),
       st.sampled_from([-1.0, 1.0]), st.floats(0.02, 0.2))
def test_one_models_shared_offset_never_blames_the_reference(
        seed: int, n: int, times: float, sign: float, noise: float) -> None:
    """Issue 21, item 8: a bias every device of one model shares (their enclosure, their
    sensing element) is a finding about that model. The devices cannot out-vote their
    reference on it: they say so, and name both candidates."""
    rng = np.random.default_rng(seed)
    signal = 5.0 * np.sin(2 * math.pi * (T - START) / DAY)
    diffs = shared_bias(rng, n, sign * times * TOLERANCE, noise, signal)
    decision = judge_reference(T, diffs, TOLERANCE)
    attribution = attribute(decision, dict.fromkeys(diffs, "th-200"), "ref-north", "degC")
    assert decision.reference_fault  # the vote alone would have blamed the reference
    assert not attribution.decision.reference_fault
    assert attribution.undecided is not None
    assert attribution.undecided["candidates"] == ["model th-200", "reference ref-north"]
    assert "cannot tell" in attribution.undecided["evidence"]


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.integers(2, 5), st.integers(2, 5), st.floats(2.0, 8.0),
       st.sampled_from([-1.0, 1.0]), st.floats(0.02, 0.1), st.floats(0.3, 0.7),
       st.booleans())
def test_a_reference_fault_seen_by_two_models_is_named(
        seed: int, a: int, b: int, times: float, sign: float, noise: float, at: float,
        step: bool) -> None:
    """The positive case: the reference reads off (from a step at ``at`` of the day, or
    all day) and devices of two models agree against it: that the devices cannot do
    themselves, so the reference is named, with the grounds in its evidence."""
    rng = np.random.default_rng(seed)
    shift = sign * times * TOLERANCE
    moved = np.where(START + at * DAY <= T, shift, 0.0) if step else np.full(T.size, shift)
    diffs = {f"dev-{i:02d}": d + moved
             for i, d in enumerate(differences(rng, a + b, noise).values())}
    variants = {d: "th-200" if i < a else "th-300" for i, d in enumerate(sorted(diffs))}
    attribution = attribute(judge_reference(T, diffs, TOLERANCE), variants, "ref-north",
                            "degC")
    assert attribution.decision.reference_fault
    assert "2 models or revisions (th-200, th-300)" in attribution.grounds
    if step:
        assert attribution.decision.onset is not None
        assert abs(attribution.decision.onset - (START + at * DAY)) <= 10 * MINUTE


def test_a_second_model_with_a_broken_device_of_its_own_still_names_the_reference() -> None:
    """Two models agreeing name the reference though one unit of the second model has a
    fault of its own that puts it back near the reference: a reference read 1 degC low
    (two tolerances) by four node-a and three node-b units. A rule that asked each model
    to agree as a model, or no unit of it to sit at the reference, lost true reference
    faults this way (docs/evaluation.md, seed 2's ``f13``: a node-b unit clipping at the
    range's end read as the reference did)."""
    rng = np.random.default_rng(11)
    diffs = {d: v + 1.0 for d, v in differences(rng, 7, 0.05).items()}
    diffs["dev-06"] = diffs["dev-06"] - 1.0
    variants = {d: "node-a" if i < 4 else "node-b" for i, d in enumerate(sorted(diffs))}
    decision = judge_reference(T, diffs, TOLERANCE)
    assert decision.reference_fault and "dev-06" not in decision.members
    named = attribute(decision, variants, "ref-s46", "degC")
    assert named.decision.reference_fault
    assert "2 models or revisions (node-a, node-b)" in named.grounds


def test_one_model_stepping_together_or_a_stuck_reference_is_the_references_fault() -> None:
    """The other separating evidence: a step at one moment in every device's residual
    (now, or seen by an earlier audit in the same direction), or the reference's own
    stuck spell; an earlier step the other way does not count."""
    rng = np.random.default_rng(3)
    diffs = {d: v + np.where(T >= START + DAY / 2, 1.5, 0.0)
             for d, v in differences(rng, 6, 0.05).items()}
    one_model = dict.fromkeys(diffs, "th-200")
    stepped = attribute(judge_reference(T, diffs, TOLERANCE), one_model, "ref-north", "degC")
    assert stepped.decision.reference_fault and "stepped together" in stepped.grounds
    all_day = {d: v + 1.5 for d, v in differences(rng, 6, 0.05).items()}
    decision = judge_reference(T, all_day, TOLERANCE)
    assert decision.reference_fault and decision.onset is None
    assert not attribute(decision, one_model, "ref-north", "degC").decision.reference_fault
    earlier = attribute(decision, one_model, "ref-north", "degC",
                        earlier=EarlierStep(START - DAY / 3, 1.4))
    assert earlier.decision.reference_fault and earlier.decision.onset == START - DAY / 3
    opposite = attribute(decision, one_model, "ref-north", "degC",
                         earlier=EarlierStep(START - DAY / 3, -1.4))
    assert not opposite.decision.reference_fault
    truth = np.linspace(0.0, 5.0, 1440)
    flat = np.r_[truth[:1000], np.full(440, truth[999])]
    signals = reference_own_signals(flat, {d: truth for d in "abc"}, TOLERANCE)
    assert "stuck" in signals
    assert reference_own_signals(truth, {d: truth for d in "abc"}, TOLERANCE) == ""
    assert attribute(decision, one_model, "ref-north", "degC", signals).decision.reference_fault


def wander(rng: np.random.Generator, n: int, phi: float, std: float) -> np.ndarray:
    """A stationary AR(1) series (the simulator's ``_ar1``): a device's slowly wandering
    error."""
    eps = rng.normal(0.0, std * math.sqrt(1.0 - phi * phi), n)
    out = np.empty(n)
    out[0] = eps[0] / math.sqrt(1.0 - phi * phi)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + eps[i]
    return out


def test_one_models_wander_stepping_only_in_its_median_is_not_the_references_fault() -> None:
    """f39-outdoor-120s (issue 21): six healthy devices of one model whose errors wander
    (AR(1), phi 0.97 at two minutes, about a tolerance) hold a handful of independent
    values in twelve hours; by chance their median "steps" by more than a tolerance. No
    device's own difference moved beyond its noise at that moment, so nothing the devices
    cannot produce themselves is left: both candidates are named, the reference is not
    blamed. (Seed 1815 is one of 15 such windows in 3000 tried; none of the 15 had the
    step in every member.)"""
    rng = np.random.default_rng(1815)
    t = START + np.arange(360) * 120.0
    diffs = {f"dev-{i:02d}": rng.uniform(-0.3, 0.3) + wander(rng, t.size, 0.97, 1.0)
             for i in range(6)}
    decision = judge_reference(t, diffs, 1.0)
    assert decision.reference_fault and decision.onset is not None  # the vote alone blames
    assert set(decision.stepped) < set(decision.members)
    attribution = attribute(decision, dict.fromkeys(diffs, "node-a"), "ref-s39", "hPa")
    assert not attribution.decision.reference_fault
    assert attribution.undecided is not None
    assert "not beyond their own noise" in attribution.undecided["evidence"]


def test_a_blame_on_other_grounds_keeps_its_moment_for_the_audits_that_carry_it() -> None:
    """The same median "step" (seed 1815) among devices of two models: the reference is
    blamed on the models' agreement, not on the step (not every member's own difference
    shows it), and the blame's moment is still recorded (``Attribution.step``): the next
    audits, whose windows hold no step, date their carried blame from it. Without it the
    f40 fleet's members were blamed with no onset in 80 findings."""
    rng = np.random.default_rng(1815)
    t = START + np.arange(360) * 120.0
    diffs = {f"dev-{i:02d}": rng.uniform(-0.3, 0.3) + wander(rng, t.size, 0.97, 1.0)
             for i in range(6)}
    decision = judge_reference(t, diffs, 1.0)
    two_models = {d: ("node-a" if i % 2 else "node-b") for i, d in enumerate(diffs)}
    attribution = attribute(decision, two_models, "ref-s40", "hPa")
    assert attribution.decision.reference_fault
    assert "stepped together" not in attribution.grounds
    moment = attribution.step
    assert moment is not None and moment.onset == decision.onset and not moment.seen
    # a later window of the same two models, no step of its own: dated from the moment
    calm = replace(decision, onset=None)
    later = attribute(calm, two_models, "ref-s40", "hPa", earlier=moment, tolerance=1.0)
    assert later.decision.reference_fault and later.decision.onset == moment.onset
    # one model: the moment of a blame on other grounds is no ground of its own
    one_model = dict.fromkeys(diffs, "node-a")
    alone = attribute(calm, one_model, "ref-s40", "hPa", earlier=moment, tolerance=1.0)
    assert not alone.decision.reference_fault
    assert "earlier audit" not in alone.grounds


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.integers(4, 8), st.floats(2.0, 4.0),
       st.sampled_from([-1.0, 1.0]), st.floats(0.3, 0.7), st.floats(0.1, 0.3))
def test_one_model_stepping_together_in_wandering_noise_is_the_references_fault(
        seed: int, n: int, times: float, sign: float, at: float, noise: float) -> None:
    """The positive side of the rule above: a reference step of a few tolerances moves
    every device's own difference beyond its wandering noise (AR(1), phi 0.9) at one
    moment, and a group of one model names the reference on that ground."""
    rng = np.random.default_rng(seed)
    t = START + np.arange(360) * 120.0
    step = np.where(t >= t[0] + at * (t[-1] - t[0]), sign * times, 0.0)
    diffs = {f"dev-{i:02d}": rng.uniform(-0.2, 0.2) + wander(rng, t.size, 0.9, noise) + step
             for i in range(n)}
    decision = judge_reference(t, diffs, 1.0)
    attribution = attribute(decision, dict.fromkeys(diffs, "node-a"), "ref-x", "hPa")
    assert attribution.decision.reference_fault, decision
    assert "stepped together" in attribution.grounds
    assert set(decision.stepped) == set(decision.members)


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.integers(6, 8), st.floats(2.7, 3.0),
       st.integers(36, 45), st.floats(0.3, 0.4))
@example(seed=21, n=7, times=2.7, at=41, noise=0.4)
def test_a_common_step_is_found_in_a_short_window_of_wandering_noise(
        seed: int, n: int, times: float, at: int, noise: float) -> None:
    """f34-air-300s (issue 21): twelve hours of ten-minute bins, a reference step of 2.7
    tolerances, devices' errors wandering (AR(1), phi 0.8 a bin). The median's noise read
    off the median about one mean counts the step as persistence, and a step that large
    went unfound (the window's median then lay on the larger side of it, and no reference
    fault was seen); read about the best single step (``median_noise``), it is found.
    (The example is one the old estimate missed, as it missed about one window in a
    hundred of these; the new one missed one in 1500 of a slightly noisier range.)"""
    rng = np.random.default_rng(seed)
    t = START + np.arange(72) * 600.0
    diffs = {f"dev-{i:02d}": rng.uniform(-0.3, 0.3) + wander(rng, t.size, 0.8, noise)
             + np.where(np.arange(t.size) >= at, times, 0.0) for i in range(n)}
    onset = common_onset(t, diffs, 1.0)
    assert onset is not None and abs(onset - t[at]) <= 3 * 600.0, onset


HOURS = START + (np.arange(24) + 0.5) * 3600.0


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.integers(8, 10), st.integers(7, 10),
       st.floats(2.0, 6.0), st.sampled_from([-1.0, 1.0]))
def test_a_repeated_reference_value_is_stuck_only_if_the_quantity_moved_and_all_else_agrees(
        seed: int, spell: int, start: int, times: float, sign: float) -> None:
    """Issue 21 (the EPA month): an agency monitor reporting whole ppb repeats 1 ppb through
    a clean night, and fog holds humidity at one value; neither is a stuck instrument, and
    neither is evidence against it for a shift its devices (one model) show all day. A
    reference frozen while its devices watched the quantity move, and agreeing with them
    outside that spell, is stuck."""
    rng = np.random.default_rng(seed)
    rising = 10.0 + 10.0 * np.sin(2 * math.pi * (HOURS - START) / DAY)
    first, last = start, min(start + spell, 24) - 1
    steady = rising.copy()
    steady[first:last + 1] = rising[first]  # a still night
    reported = np.round(steady)  # whole units: the night repeats one value
    shift = sign * times * TOLERANCE

    def devices(truth: np.ndarray, offset: float) -> dict[str, np.ndarray]:
        return {f"dev-{i}": truth + offset + rng.normal(0.0, 0.05, truth.size)
                for i in range(3)}

    one_model = dict.fromkeys(devices(steady, 0.0), "th-200")
    # a still quantity read at the reference's resolution, devices of one model all off
    still = devices(steady, shift)
    decision = judge_reference(HOURS, {d: v - reported for d, v in still.items()}, TOLERANCE)
    signals = reference_own_signals(reported, still, TOLERANCE)
    assert signals == ""
    assert not attribute(decision, one_model, "ref-north", "degC",
                         signals).decision.reference_fault
    # frozen while the quantity moved, but the devices are off all day: theirs to explain
    frozen = np.round(rising)
    frozen[first:last + 1] = frozen[first]
    moving = devices(rising, shift)
    assert reference_own_signals(frozen, moving, TOLERANCE) == ""
    # frozen while the quantity moved, the devices agreeing with it outside the spell
    assert "stuck" in reference_own_signals(frozen, devices(rising, 0.0), TOLERANCE)


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.floats(2.0, 8.0), st.floats(0.1, 3.0),
       st.sampled_from([-1.0, 1.0]))
def test_an_earlier_step_is_evidence_only_for_a_shift_of_its_size(
        seed: int, times: float, ratio: float, sign: float) -> None:
    """A reference that stepped stays off by its step until repaired; a bias one model's
    devices share with the hour or the weather (the EPA month's temperature) comes back at
    any size with the same sign. An earlier audit's step blames the reference for today's
    shift only when that shift is the step's, within the agreement the consensus asks of
    its members (``min(tolerance, |step| / 2)``)."""
    rng = np.random.default_rng(seed)
    now = sign * times * TOLERANCE
    diffs = {d: v + now for d, v in differences(rng, 3, 0.05).items()}
    decision = judge_reference(T, diffs, TOLERANCE)
    assert decision.reference_fault and decision.onset is None
    step = now * ratio
    attribution = attribute(decision, dict.fromkeys(diffs, "th-200"), "ref-north", "degC",
                            earlier=EarlierStep(START - DAY / 3, step), tolerance=TOLERANCE)
    same = abs(decision.deviation - step) <= min(TOLERANCE, abs(step) / 2)
    assert attribution.decision.reference_fault == same
    if not same:
        assert attribution.undecided is not None
    else:
        assert attribution.step == EarlierStep(START - DAY / 3, step)


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.floats(0.3, 0.7), st.floats(2.0, 6.0),
       st.sampled_from([-1.0, 1.0]), st.floats(-3.0, 3.0))
def test_a_step_the_devices_made_at_the_same_hours_a_day_earlier_is_not_the_references(
        seed: int, at: float, times: float, sign: float, earlier: float) -> None:
    """A step "at one moment in every device's residual while they keep agreeing with their
    own past": devices of one model that moved the same way over the same hours a day
    earlier (``recurring``, in tolerances) show a bias they share with the hour, not a
    reference that stepped. The EPA month's units, warm by 0.4 degC on the day's median,
    read 1-2.5 degC warm every afternoon, and a day's window took that for a step at 12:30.
    A day earlier unchanged (or unknown, or the other way) leaves the step as evidence."""
    rng = np.random.default_rng(seed)
    diffs = {d: v + np.where(START + at * DAY <= T, sign * times * TOLERANCE, 0.0)
             for d, v in differences(rng, 3, 0.05).items()}
    decision = judge_reference(T, diffs, TOLERANCE)
    assert decision.reference_fault and decision.onset is not None
    one_model = dict.fromkeys(diffs, "th-200")
    recurring = sign * earlier * TOLERANCE
    attribution = attribute(decision, one_model, "ref-north", "degC", tolerance=TOLERANCE,
                            recurring=recurring)
    daily = abs(recurring) > TOLERANCE and earlier > 0
    assert attribution.decision.reference_fault == (not daily)
    if daily:
        assert attribution.undecided is not None
        assert "over the same hours of an earlier day" in attribution.undecided["evidence"]
    assert attribute(decision, one_model, "ref-north", "degC",
                     tolerance=TOLERANCE).decision.reference_fault  # nothing known


def test_recurring_shift_cancels_each_devices_own_offset() -> None:
    """Each device's level a day earlier is read from its own level before the step, so
    devices with offsets of their own (the EPA month's O3 cells, 10 ppb apart) that did
    not move a day earlier give no recurring shift, and ones that all moved give it."""
    rng = np.random.default_rng(2)
    own = {f"dev-{i}": off for i, off in enumerate((-9.0, -3.0, 2.0))}
    before = {d: off + rng.normal(0.0, 0.1, 12) for d, off in own.items()}
    still = {d: off + rng.normal(0.0, 0.1, 10) for d, off in own.items()}
    moved = {d: off + 1.5 + rng.normal(0.0, 0.1, 10) for d, off in own.items()}
    assert abs(recurring_shift(still, before)) < 0.1
    assert recurring_shift(moved, before) == pytest.approx(1.5, abs=0.1)
    assert math.isnan(recurring_shift({"a": still["dev-0"]}, before))


def test_a_carried_step_stays_anchored_to_the_step_first_seen() -> None:
    """Each audit passes on the step its blame rests on as first seen (``Attribution.step``,
    kept in the reference finding's ``context.step``), so a shift creeping away from it
    window by window (one model's shared bias following the weather) is not carried along:
    the EPA month carried a 2.5 degC step of one afternoon, through shifts of 0.9 and less,
    over a week of hourly audits."""
    rng = np.random.default_rng(11)
    base = differences(rng, 3, 0.05)
    stepped = {d: v + np.where(T >= START + DAY / 2, 5.0 * TOLERANCE, 0.0)
               for d, v in base.items()}
    one_model = dict.fromkeys(base, "th-200")
    first = attribute(judge_reference(T, stepped, TOLERANCE), one_model, "ref-north", "degC",
                      tolerance=TOLERANCE)
    assert first.decision.reference_fault and first.step is not None
    carried, blamed = first.step, []
    for k in range(1, 12):  # the shared shift creeps down by 0.4 tolerance an audit
        level = (5.0 - 0.4 * k) * TOLERANCE
        decision = judge_reference(T, {d: v + level for d, v in base.items()}, TOLERANCE)
        attribution = attribute(decision, one_model, "ref-north", "degC", earlier=carried,
                                tolerance=TOLERANCE)
        blamed.append(attribution.decision.reference_fault)
        if attribution.step is not None:
            assert attribution.step == first.step  # never the carried shift
            carried = attribution.step
    # within min(tolerance, |step| / 2) = 1 tolerance of the 5-tolerance step: two audits
    assert blamed == [True, True] + [False] * 9


def test_a_carried_step_compares_where_the_devices_are_with_where_it_left_them() -> None:
    """A step is carried by the level it left the devices at, not by its size: devices
    0.9 tolerance warm that step by 2.3 tolerances sit at 3.2; a later day with them at
    1.3 all day is not that step (the EPA month's 1.1 degC afternoon "step" from 0.45 degC
    was carried by days at 0.67)."""
    rng = np.random.default_rng(4)
    base = differences(rng, 3, 0.05)
    stepped = {d: v + TOLERANCE * np.where(T >= START + DAY / 2, 3.2, 0.9)
               for d, v in base.items()}
    one_model = dict.fromkeys(base, "th-200")
    first = attribute(judge_reference(T, stepped, TOLERANCE), one_model, "ref-north", "degC",
                      tolerance=TOLERANCE)
    assert first.step is not None
    assert first.step.deviation == pytest.approx(3.2 * TOLERANCE, abs=0.2 * TOLERANCE)
    later = judge_reference(T, {d: v + 1.3 * TOLERANCE for d, v in base.items()}, TOLERANCE)
    assert later.reference_fault  # the vote alone
    assert not attribute(later, one_model, "ref-north", "degC", earlier=first.step,
                         tolerance=TOLERANCE).decision.reference_fault
    same = judge_reference(T, {d: v + 3.0 * TOLERANCE for d, v in base.items()}, TOLERANCE)
    assert attribute(same, one_model, "ref-north", "degC", earlier=first.step,
                     tolerance=TOLERANCE).decision.reference_fault


def test_a_reference_flat_at_an_end_of_its_span_is_not_stuck() -> None:
    """Clean air reads an analyser's floor for a night (the EPA monitor's 0-2 ppb NO2 for
    7-11 hours while the low-cost cells wandered by 20 ppb): within a tolerance of its
    span's ends a flat run is no evidence against the reference; the same run mid-span
    is."""
    truth = 30.0 + 20.0 * np.sin(2 * math.pi * (HOURS - START) / DAY)
    devices = {d: truth for d in "abc"}  # agreeing with the reference outside its run
    for level, stuck in ((1.0, False), (35.0, True)):
        frozen = truth.copy()
        frozen[9:18] = level
        signals = reference_own_signals(frozen, devices, 5.0, (0.0, 1000.0))
        assert ("stuck" in signals) == stuck
        assert "stuck" in reference_own_signals(frozen, devices, 5.0)  # no span given


# --------------------------------------------------------------------------- integration

DEVICES = [f"th-north-{i:02d}" for i in range(1, 7)]


def catalog(due: float | None = START + 365 * DAY,
            sensors: tuple[str, ...] = ("temperature",)) -> Catalog:
    ref = Reference(id="ref-north", site="north", serves=("th-north-*",),
                    sensors=sensors, model="ref-station", calibration_due=due)
    return build_catalog(load_profiles(REPO / "device_profiles"), [ref],
                         {"th-north-*": "th-200"})


def audit(tmp_path: Path, cat: Catalog, *, reference_step: float = 0.0,
          weather_step: float = 0.0, device_offsets: dict[str, float] | None = None,
          seed: int = 7, reference_offset: float = 0.0,
          revisions: dict[str, str] | None = None,
          impossible_every: dict[str, int] | None = None,
          static_offsets: dict[str, float] | None = None) -> list[Finding]:
    """A day of minute temperatures from six devices and their reference, then one audit.

    ``reference_step`` is added to the reference alone from noon, ``reference_offset`` to
    it all day (a bias the devices share looks the same), ``weather_step`` to everyone from
    15:00, ``device_offsets`` to one device each from 08:00; ``revisions``: device ->
    the hardware revision its meta announces; ``impossible_every``: device -> every how
    many readings it sends 500 degC (a broken element), from 08:00; ``static_offsets``:
    device -> an offset it reads with all day (in place of its small random one).
    """
    rng = np.random.default_rng(seed)
    ts = START + np.arange(1440) * MINUTE + 2.0
    weather = (8.0 + 5.0 * np.sin(2 * math.pi * (ts - START) / DAY - 1.0)
               + np.cumsum(rng.normal(0.0, 0.03, ts.size))
               + np.where(ts >= START + 15 * 3600, weather_step, 0.0))
    streams = {"ref-north": weather + np.where(ts >= START + DAY / 2, reference_step, 0.0)
               + reference_offset}
    for device in DEVICES:
        own = (device_offsets or {}).get(device, 0.0)
        static = rng.uniform(-0.1, 0.1)
        static = (static_offsets or {}).get(device, static)
        streams[device] = (weather + rng.normal(0.0, 0.08, ts.size) + static
                           + np.where(ts >= START + 8 * 3600, own, 0.0))
        every = (impossible_every or {}).get(device)
        if every:
            broken = (ts >= START + 8 * 3600) & (np.arange(ts.size) % every == 0)
            streams[device] = np.where(broken, 500.0, streams[device])
    readings = tuple(Reading("north", device, "temperature", "degC", float(t), float(v))
                     for device, values in streams.items() for t, v in zip(ts, values, strict=True))
    metas = [Outcome(meta=MetaRecord("north", device, START, START,
                                     {"model": "th-200", "hardware_rev": rev}))
             for device, rev in (revisions or {}).items()]
    with Store(tmp_path / "audit.db") as store:
        store.readings.write_outcomes([Outcome(readings=readings), *metas])
        run = Auditor(store, cat, TopicsConfig(), gateway="gw").run(START + DAY)
    return list(run.findings)


def by_device(findings: list[Finding]) -> dict[str, Finding]:
    """The run's calibration findings by device (metadata findings are tested apart)."""
    return {f.device: f for f in findings if f.kind == "calibration"}


def test_a_drifting_reference_is_blamed_once_and_its_devices_spared(tmp_path: Path) -> None:
    found = by_device(audit(tmp_path, catalog(), reference_step=1.5))
    assert sorted(found) == sorted([*DEVICES, "ref-north"])
    ref = found["ref-north"]
    assert ref.status == "fail" and ref.causes[0].cause == "reference_fault"
    assert "6 of 6 devices" in ref.causes[0].evidence
    assert ref.metrics["bias"] == pytest.approx(1.5, abs=0.1)
    assert ref.onset is not None and abs(ref.onset - (START + DAY / 2)) <= 5 * MINUTE
    # the step as first seen, for later audits to compare their shift with
    assert ref.context["step"] == {"onset": ref.onset,
                                   "deviation": pytest.approx(-1.5, abs=0.1), "seen": True}
    for device in DEVICES:
        f = found[device]
        assert f.causes[0].cause == "reference_fault", f.causes
        assert f.reference == "ref-north"
        assert "reference" in f.action and "not this device" in f.action
        assert f.context["peer_consensus"]["status"] == "pass"


def test_a_device_deviating_differently_keeps_its_own_diagnosis(tmp_path: Path) -> None:
    found = by_device(audit(tmp_path, catalog(), reference_step=1.5,
                            device_offsets={"th-north-03": 3.0}))
    assert found["ref-north"].causes[0].cause == "reference_fault"
    odd = found["th-north-03"]
    assert odd.causes[0].cause == "offset_drift"
    assert odd.context["comparison"] == "peer_consensus" and odd.reference is None
    assert odd.metrics["bias"] == pytest.approx(3.0 * 16 / 24, abs=0.3)
    assert all(found[d].causes[0].cause == "reference_fault"
               for d in DEVICES if d != "th-north-03")


def test_a_device_sending_impossible_values_beside_a_drifting_reference_is_still_visited(
        tmp_path: Path) -> None:
    """Issue 21 (matrix fleets f24, f40): a thermometer sends 500 degC every 20 minutes
    while the reference steps. The reference's drift accounts for the shared shift, not
    for impossible values: the device's own fault comes first, with its own action (a trip
    to the device), and the reference fault after it; the other devices are spared."""
    found = by_device(audit(tmp_path, catalog(), reference_step=1.5,
                            impossible_every={"th-north-02": 20}))
    assert found["ref-north"].causes[0].cause == "reference_fault"
    broken = found["th-north-02"]
    assert [c.cause for c in broken.causes][:2] == ["out_of_range", "reference_fault"]
    assert "impossible values" in broken.action and "not this device" not in broken.action
    assert broken.severity in ("major", "critical")  # as severe as without the reference's
    for device in DEVICES:
        if device != "th-north-02":
            assert found[device].causes[0].cause == "reference_fault", found[device].causes
            assert "not this device" in found[device].action


def test_a_device_in_another_unit_beside_a_drifting_reference_keeps_its_own_cause() -> None:
    """Matrix seed 3, f34: a PM2.5 unit sending mg/m3 (0 at its resolution) beside a
    reference reading 17 ug/m3 high sits with the group's shift and is a member of the
    reference's fault, yet its unit is its own: ``unit_mismatch`` comes first, with its own
    action, ahead of both the reference's fault and the frozen value a wrong unit rounds
    to (which came first before, being the only cause of the device's own)."""
    rng = np.random.default_rng(3)
    diffs = differences(rng, 6, 0.05)
    for device in diffs:
        diffs[device] = diffs[device] - 4 * TOLERANCE
    decision = judge_reference(T, diffs, TOLERANCE)
    assert decision.reference_fault and "dev-00" in decision.members
    own = Finding("calibration", "north", "dev-00", "pm2_5", "fail", "critical", START,
                  START + DAY, unit="ug/m^3", reference="ref-north",
                  causes=(Cause("unit_mismatch", 0.6, "held 0: mg/m^3 rounds to 0"),
                          Cause("stuck", 0.4, "held 0"),
                          Cause("offset_drift", 0.3, "-2 ug/m^3")))
    blamed = blame_reference(own, decision, "ref-north", None)
    assert [c.cause for c in blamed.causes] == ["unit_mismatch", "stuck", "reference_fault"]
    assert "unit" in blamed.action and "not this device" not in blamed.action


def test_one_faulty_device_is_not_the_references_fault(tmp_path: Path) -> None:
    found = by_device(audit(tmp_path, catalog(), device_offsets={"th-north-02": 2.0}))
    assert "ref-north" not in found
    assert found["th-north-02"].causes[0].cause == "offset_drift"
    assert all(found[d].status == "pass" for d in DEVICES if d != "th-north-02")


def test_a_big_weather_swing_is_nobodys_fault(tmp_path: Path) -> None:
    found = by_device(audit(tmp_path, catalog(), weather_step=-12.0))
    assert "ref-north" not in found
    assert all(f.status == "pass" for f in found.values()), [
        (f.device, f.causes) for f in found.values()]


def test_an_overdue_reference_gives_way_to_the_peer_consensus(tmp_path: Path) -> None:
    run = audit(tmp_path, catalog(due=START - 30 * DAY), device_offsets={"th-north-05": 2.0})
    found = by_device(run)
    assert "ref-north" not in found
    certificate = [f for f in run if f.kind == "metadata" and f.device == "ref-north"]
    assert [c.cause for c in certificate[0].causes] == ["calibration_overdue"]
    for device in DEVICES:
        f = found[device]
        assert f.reference is None
        assert f.context["comparison"] == "peer_consensus"
        assert f.context["peers"] == 5
        assert "past its calibration due date" in f.context["why"]
    assert found["th-north-05"].causes[0].cause == "offset_drift"
    assert all(found[d].status == "pass" for d in DEVICES if d != "th-north-05")


def test_healthy_units_at_both_ends_of_their_tolerance_pass_against_their_peers(
        tmp_path: Path) -> None:
    """Six thermometers within their 0.5 degC tolerance, one at -0.45 and most of the
    others well above zero: against its peers' median it reads 0.75 low, beyond its
    tolerance, though it meets it. The median is no instrument: it states how far it may
    itself be off (``metrics.comparison_offset_u``), and the unit passes."""
    offsets = dict(zip(DEVICES, (-0.45, 0.45, 0.3, -0.1, 0.4, 0.2), strict=True))
    found = by_device(audit(tmp_path, catalog(due=START - 30 * DAY), static_offsets=offsets))
    judged = found["th-north-01"]
    assert judged.context["comparison"] == "peer_consensus"
    assert judged.metrics["bias"] is not None and judged.metrics["bias"] < -0.5
    assert judged.status == "pass"
    for device in DEVICES:
        assert found[device].metrics["comparison_offset_u"] > 0.0
        assert found[device].metrics["comparison_rms_u"] > 0.0


def test_a_sensor_without_a_trusted_reference_is_judged_by_its_peers(tmp_path: Path) -> None:
    """The reference stands beside the devices but is trusted for humidity only: its
    temperature (drifting, here) is never used; the peers' median is."""
    found = by_device(audit(tmp_path, catalog(sensors=("humidity",)), reference_step=3.0,
                            device_offsets={"th-north-01": -2.0}))
    assert sorted(found) == DEVICES
    for f in found.values():
        assert f.reference is None
        assert f.context["comparison"] == "peer_consensus" and f.context["peers"] == 5
        assert "not trusted for temperature" in f.context["why"]
    assert found["th-north-01"].causes[0].cause == "offset_drift"
    assert all(found[d].status == "pass" for d in DEVICES if d != "th-north-01")


def test_a_bias_one_model_shares_names_both_candidates_not_the_reference(
        tmp_path: Path) -> None:
    """All six devices are th-200 and read 1.5 degC high all day (or their reference reads
    1.5 low: from these data alone, nobody can tell). No reference fault, no reference
    alert: each device keeps its own verdict, and says who else could be at fault."""
    found = by_device(audit(tmp_path, catalog(), reference_offset=-1.5))
    assert "ref-north" not in found
    for device in DEVICES:
        f = found[device]
        assert f.status == "fail" and f.causes[0].cause != "reference_fault", f.causes
        assert f.context["attribution"]["candidates"] == ["model th-200",
                                                          "reference ref-north"]
        assert "or a fault of ref-north" in f.causes[0].evidence


def test_the_same_offset_across_two_hardware_revisions_is_the_references(
        tmp_path: Path) -> None:
    revisions = {d: "A" if i < 3 else "B" for i, d in enumerate(DEVICES)}
    found = by_device(audit(tmp_path, catalog(), reference_offset=-1.5, revisions=revisions))
    ref = found["ref-north"]
    assert ref.status == "fail" and ref.causes[0].cause == "reference_fault"
    assert "th-200 rev A, th-200 rev B" in ref.causes[0].evidence
    assert all(found[d].causes[0].cause == "reference_fault" for d in DEVICES)


def test_a_step_is_not_taken_up_again_after_an_audit_that_did_not_blame_the_reference(
        tmp_path: Path) -> None:
    """A reference that stepped is found off by every audit after. Its step on day 0 is
    named; on day 1 the six devices (one model) share a smaller shift, which nobody can
    put on the reference; on day 2 they sit all day where the step had left them: that
    is no step (none in the window), and the day-0 step is no evidence any more (the EPA
    month's temperature step of 08-25 was taken up again on 08-30 after four days of
    audits at another level)."""
    rng = np.random.default_rng(9)
    ts = START + np.arange(3 * 1440) * MINUTE + 2.0
    weather = 8.0 + 5.0 * np.sin(2 * math.pi * (ts - START) / DAY - 1.0)
    day0_step = (ts >= START + DAY / 2) & (ts < START + DAY)
    day1 = (ts >= START + DAY) & (ts < START + 2 * DAY)
    day2 = ts >= START + 2 * DAY
    streams = {"ref-north": weather - np.where(day0_step, 1.5, 0.0)}
    for device in DEVICES:
        streams[device] = (weather + rng.normal(0.0, 0.08, ts.size) + rng.uniform(-0.1, 0.1)
                           + np.where(day2, 1.5, np.where(day1, 0.8, 0.0)))
    readings = tuple(Reading("north", device, "temperature", "degC", float(t), float(v))
                     for device, values in streams.items()
                     for t, v in zip(ts, values, strict=True))
    with Store(tmp_path / "audit.db") as store:
        store.readings.write_outcomes([Outcome(readings=readings)])
        auditor = Auditor(store, catalog(), TopicsConfig(), gateway="gw")
        runs = [by_device(list(auditor.run(START + k * DAY).findings)) for k in (1, 2, 3)]
    assert runs[0]["ref-north"].causes[0].cause == "reference_fault"
    assert "ref-north" not in runs[1]  # day 1: a shift nobody can put on it
    assert all("attribution" in runs[1][d].context for d in DEVICES)
    assert "ref-north" not in runs[2]
    for device in DEVICES:
        f = runs[2][device]
        assert f.status == "fail" and f.causes[0].cause != "reference_fault", f.causes
        assert f.context["attribution"]["candidates"] == ["model th-200", "reference ref-north"]


@PROPERTY
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.01, 0.1, 1.0, 50.0, 400.0]))
def test_whether_a_member_stepped_does_not_depend_on_the_sensors_unit(
        seed: int, scale: float) -> None:
    """A step of 2.5 of its noise's standard deviations in AR(0.9) noise is seen (or not)
    the same in degC, ppm or ppb: the test takes the deviation's sign, not its size
    (multiplying by it once passed nearly anything in ppm and nearly nothing in 0.1 s
    of a unit)."""
    rng = np.random.default_rng(seed)
    t = START + np.arange(360) * 120.0
    diff = wander(rng, t.size, 0.9, 1.0) + np.where(t >= t[180], 2.5, 0.0)
    base = step_seen(t, diff, float(t[180]), 1.0)
    assert step_seen(t, diff * scale, float(t[180]), 2.5 * scale) == base


def four_days(tmp_path: Path, humps: tuple[float, float, float, float],
              reference_step: float = 0.0) -> dict[str, Finding]:
    """Four days of minute temperatures from six th-200 devices and their reference, one
    audit at 15:00 on the last day (its 24-hour window from 15:00 the day before): the
    devices read ``humps[k]`` warm from 11:00 to 17:00 on day k (an enclosure in the sun),
    the reference reads ``reference_step`` off from 11:00 on the last day on."""
    rng = np.random.default_rng(21)
    ts = START + np.arange(4 * 1440) * MINUTE + 2.0
    weather = 8.0 + 5.0 * np.sin(2 * math.pi * (ts - START) / DAY - 1.0)
    hour = (ts - START) % DAY / 3600.0
    hump = np.where((hour >= 11) & (hour < 17),
                    np.asarray(humps)[((ts - START) // DAY).astype(int)], 0.0)
    streams = {"ref-north": weather + np.where(ts >= START + 3 * DAY + 11 * 3600,
                                               reference_step, 0.0)}
    for device in DEVICES:
        streams[device] = (weather + hump + rng.normal(0.0, 0.08, ts.size)
                           + rng.uniform(-0.1, 0.1))
    readings = tuple(Reading("north", device, "temperature", "degC", float(t), float(v))
                     for device, values in streams.items()
                     for t, v in zip(ts, values, strict=True))
    with Store(tmp_path / "audit.db") as store:
        store.readings.write_outcomes([Outcome(readings=readings)])
        run = Auditor(store, catalog(), TopicsConfig(), gateway="gw").run(
            START + 3 * DAY + 15 * 3600)
    return by_device(list(run.findings))


def test_a_daily_hump_missing_on_the_day_before_is_still_the_hours_not_the_references(
        tmp_path: Path) -> None:
    """One model's afternoon hump (1.5 degC, three tolerances) on days 0, 1 and 3, not on
    the overcast day 2: the last day's window sees a step at 11:00 in every device. The
    day before shows nothing at those hours, the day before that the same hump: a bias
    the devices share with the hour, so nobody can tell it from the reference (the EPA
    month's units: 24 Aug's smaller hump made 25 Aug's read as the reference's step)."""
    found = four_days(tmp_path, (1.5, 1.5, 0.0, 1.5))
    assert "ref-north" not in found
    for device in DEVICES:
        f = found[device]
        assert f.reference == "ref-north"
        assert all(c.cause != "reference_fault" for c in f.causes), f.causes


def test_a_reference_step_after_days_of_a_small_hump_is_still_the_references(
        tmp_path: Path) -> None:
    """The same devices with an afternoon hump inside tolerance every day, and the
    reference stepping 1.5 degC down at 11:00 on the last day: no earlier day moved like
    that at those hours, so the step is the reference's."""
    found = four_days(tmp_path, (0.3, 0.3, 0.3, 0.3), reference_step=-1.5)
    ref = found["ref-north"]
    assert ref.status == "fail" and ref.causes[0].cause == "reference_fault", ref.causes
    assert ref.onset is not None and abs(ref.onset - (START + 3 * DAY + 11 * 3600)) <= 600
    assert all(found[d].causes[0].cause == "reference_fault" for d in DEVICES)
