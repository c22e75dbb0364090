"""The evaluation matrix's judge: a scorer that can fail, a ground-truth rule that does what
docs/evaluation.md says, and a small matrix through the real replay pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditd.domain.alerts import Alert
from auditd.model import Cause, Finding, Status
from auditd.sim import fleets, judge

START = 1_795_132_800.0
STEP = 60.0
N = 24 * 60  # a day of minute readings
TOL = judge.ToleranceTruth(bias=0.5, gain=0.05, rmse=0.8, lag_s=60.0, window_s=6 * 3600.0,
                           min_samples=60)


def stream(device: str, *, sensor: str = "temperature", static_bias: float = 0.0,
           offset: float = 0.0, offset_at: float | None = None, reference: bool = False,
           reference_stream: judge.StreamTruth | None = None, gain: float = 0.0,
           gain_at: float | None = None, swing: float = 5.0,
           noise_std: float = 0.1) -> judge.StreamTruth:
    """A stream whose truth is built by hand: a diurnal true value, an optional offset
    or gain fault from ``*_at`` on."""
    t = START + STEP * np.arange(N)
    x = 10.0 + swing * np.sin(2 * np.pi * np.arange(N) / N)
    zeros = np.zeros(N)
    flags = np.zeros(N, dtype=bool)
    onsets = {}
    off = zeros.copy()
    if offset_at is not None:
        off = np.where(t >= offset_at, offset, 0.0)
        onsets["reference_fault" if reference else "offset_drift"] = offset_at
    gain_extra = zeros.copy()
    if gain_at is not None:
        gain_extra = np.where(t >= gain_at, gain, 0.0)
        onsets["gain_drift"] = gain_at
    return judge.StreamTruth(
        site="north", device=device, sensor=sensor, model="ref" if reference else "m",
        reference=reference, tolerance=TOL, t=t, x=x, sent=x + off, static_bias=static_bias,
        static_gain=0.0, noise_std=noise_std, noise_phi=0.0, offset=off,
        gain_extra=gain_extra, stuck=flags,
        lag_s=zeros, lag_effect=zeros, extra_noise=zeros, unit_mismatch=flags,
        out_of_range=flags, lost=flags, received=t, onsets=onsets,
        reference_stream=reference_stream)


def finding(device: str, end_h: float, status: Status = "fail", cause: str | None = None,
            *, sensor: str = "temperature", onset: float | None = None,
            window_h: float = 6.0) -> Finding:
    end = START + end_h * 3600
    return Finding(kind="calibration", site="north", device=device, sensor=sensor,
                   status=status, severity="major" if status == "fail" else "none",
                   window_start=end - window_h * 3600, window_end=end,
                   causes=(Cause(cause, 0.9, "test"),) if cause else (), onset=onset)


def alert(device: str, cause: str, *, sensor: str = "temperature", opened_h: float = 10,
          resolved_h: float | None = None) -> Alert:
    f = finding(device, opened_h, "fail", cause, sensor=sensor)
    return Alert(id=f"a-{device}", kind="calibration", site="north", device=device,
                 sensor=sensor, cause=cause, opened_at=f.window_end,
                 state="open" if resolved_h is None else "resolved", severity="major",
                 peak="major", updated_at=f.window_end, finding=f,
                 resolved_at=None if resolved_h is None else START + resolved_h * 3600)


FAULT_AT = START + 2 * 3600  # the faulty stream's offset begins at 02:00


def fleet_streams() -> list[judge.StreamTruth]:
    ref = stream("ref-north", reference=True)
    healthy = [stream(f"h-{k}", static_bias=0.2, reference_stream=ref) for k in range(6)]
    faulty = stream("bad", offset=1.5, offset_at=FAULT_AT, reference_stream=ref)
    return [ref, *healthy, faulty]


# --------------------------------------------------------------------------- the rule


def test_the_rule_labels_offsets_by_their_effect_in_the_window() -> None:
    """An offset 3 x tolerance over the whole window must be detected; a static offset at
    half the tolerance is healthy; an offset of 1.1 x tolerance sits in the ambiguity band
    (excluded), and so does a step that covers too little of the window."""
    big = stream("d", offset=1.5, offset_at=START)
    assert judge.label(big, START + 3600, START + 7 * 3600).kind == "fault"
    assert judge.label(big, START + 3600, START + 7 * 3600).causes == {"offset_drift"}
    assert judge.label(stream("d", static_bias=0.25), START, START + 6 * 3600).kind == "healthy"
    band = stream("d", offset=0.55, offset_at=START)
    assert judge.label(band, START + 3600, START + 7 * 3600).kind == "ambiguous"
    late = stream("d", offset=1.5, offset_at=START + 5.5 * 3600)  # 1/12 of the window
    assert judge.label(late, START, START + 6 * 3600).kind == "ambiguous"
    assert judge.label(late, START, START + 5 * 3600).kind == "healthy"


def test_a_models_bias_under_a_firmware_step_is_still_an_offset_from_the_first_reading() -> None:
    """A model's bias beyond tolerance (+3 tolerances from the first reading) and a firmware
    step of -1 tolerance at 02:00 on top of it: a window over the step fails on the sum,
    and naming the offset that was there from the start is as right as naming the
    firmware: the offset dated from the first reading, the firmware from its update.
    (The rule took the step's cause alone: seed 2's f09 and f41 and seed 3's f09 and
    f57, every device of the model failing from its first audit, were scored as firmware
    regressions misnamed offset_drift.)"""
    base = stream("d", static_bias=1.5)
    step = np.where(base.t >= FAULT_AT, -0.5, 0.0)
    both = replace(base, sent=base.x + 1.5 + step, offset=step,
                   onsets={"firmware_regression": FAULT_AT})
    truth = judge.label(both, START, START + 6 * 3600)
    assert truth.kind == "fault"
    assert truth.causes == {"offset_drift", "firmware_regression"}
    assert truth.onset == base.t[0]
    # each cause scored against its own onset: the firmware's from the update
    assert truth.onsets == {"offset_drift": base.t[0], "firmware_regression": FAULT_AT}
    alone = replace(stream("d"), sent=base.x + 3 * step, offset=3 * step,
                    onsets={"firmware_regression": FAULT_AT})
    assert judge.label(alone, START + 3 * 3600, START + 9 * 3600).causes == \
        {"firmware_regression"}


def test_a_gain_error_the_reference_cannot_reveal_is_not_must_detect() -> None:
    """The same gain fault is must-detect where the quantity swings and ambiguous where it
    barely moves against the noise (an indoor barometer): never a required detection."""
    moving = stream("d", gain=0.2, gain_at=START, swing=5.0, noise_std=0.3)
    still = stream("d", gain=0.2, gain_at=START, swing=0.2, noise_std=0.3)
    assert judge.label(moving, START, START + 6 * 3600).kind == "fault"
    assert judge.label(still, START, START + 6 * 3600).kind == "ambiguous"


def test_too_few_expected_readings_is_unjudgeable() -> None:
    assert judge.label(stream("d"), START, START + 30 * 60).kind == "unjudgeable"


def test_a_device_under_a_faulty_reference_is_served_not_scored() -> None:
    ref = stream("ref-north", reference=True, offset=2.0, offset_at=START)
    device = stream("d", reference_stream=ref)
    got = judge.label(device, START, START + 6 * 3600)
    assert got.kind == "served" and got.reference_faulty
    assert judge.label(ref, START, START + 6 * 3600).causes == {"reference_fault"}


# --------------------------------------------------------------------------- the scorer


@settings(max_examples=40, deadline=None)
@given(false_positives=st.integers(0, 6), detected=st.integers(1, 4))
def test_each_false_positive_lowers_precision(false_positives: int, detected: int) -> None:
    streams = fleet_streams()
    found = [finding("bad", 4 + k, "fail", "offset_drift") for k in range(detected)]
    found += [finding(f"h-{k}", 8, "fail", "gain_drift") for k in range(false_positives)]
    found += [finding(f"h-{k}", 8, "pass") for k in range(false_positives, 6)]
    got = judge.score("f", 1, streams, found, [], [])
    assert got.tp == detected and got.fp == false_positives
    assert got.precision == pytest.approx(detected / (detected + false_positives))
    assert got.recall == 1.0
    assert (got.healthy_streams, got.false_alarm_streams) == (6, false_positives)


@settings(max_examples=40, deadline=None)
@given(missed=st.integers(0, 5), detected=st.integers(0, 5))
def test_each_missed_window_lowers_recall(missed: int, detected: int) -> None:
    """A must-detect window that passes, or lacks data without naming a cause, is missed."""
    streams = fleet_streams()
    found = [finding("bad", 8 + k, "fail", "offset_drift") for k in range(detected)]
    found += [finding("bad", 14 + k, "pass" if k % 2 else "insufficient_data")
              for k in range(missed)]
    got = judge.score("f", 1, streams, found, [], [])
    assert (got.tp, got.fn) == (detected, missed)
    if detected + missed:
        assert got.recall == pytest.approx(detected / (detected + missed))
    else:
        assert got.recall is None


def test_a_wrong_first_cause_lowers_cause_at_1_but_still_counts_as_detected() -> None:
    streams = fleet_streams()
    found = [finding("bad", 10, "fail", "offset_drift"), finding("bad", 11, "fail", "noise"),
             finding("bad", 12, "fail", "gain_drift"), finding("bad", 13, "fail", None)]
    got = judge.score("f", 1, streams, found, [], [])
    assert got.tp == 4 and got.recall == 1.0
    assert got.cause_at_1 == pytest.approx(0.25)


def test_onset_error_is_the_median_distance_to_the_injected_onset() -> None:
    streams = fleet_streams()
    found = [finding("bad", 10, "fail", "offset_drift", onset=FAULT_AT + 3600),
             finding("bad", 11, "fail", "offset_drift", onset=FAULT_AT - 3 * 3600),
             finding("bad", 12, "fail", "offset_drift", onset=FAULT_AT),
             finding("bad", 13, "fail", "offset_drift")]
    got = judge.score("f", 1, streams, found, [], [])
    assert got.onset_error_h == pytest.approx(1.0)
    assert got.onset_coverage == pytest.approx(0.75)


def test_a_reference_fault_blamed_on_a_field_device_is_counted() -> None:
    ref = stream("ref-north", reference=True, offset=2.0, offset_at=START)
    devices = [stream(f"d-{k}", reference_stream=ref) for k in range(3)]
    found = [finding("ref-north", 8, "fail", "reference_fault"),
             finding("d-0", 8, "fail", "offset_drift"),      # blamed on the device
             finding("d-1", 8, "fail", "reference_fault"),   # right
             finding("d-2", 8, "pass")]                      # says nothing: not a miss
    got = judge.score("f", 1, [ref, *devices], found, [], [])
    assert got.reference_blamed_on_field == 1
    assert got.field_blamed_on_reference == 0
    assert (got.tp, got.fp, got.fn) == (1, 0, 0)
    assert got.excluded["served"] == 3


def test_a_field_fault_blamed_on_the_reference_is_counted() -> None:
    streams = fleet_streams()
    found = [finding("bad", 10, "fail", "reference_fault"),
             finding("ref-north", 10, "fail", "reference_fault")]
    got = judge.score("f", 1, streams, found, [], [])
    assert got.field_blamed_on_reference == 2
    assert got.fp == 1  # the healthy reference failed
    assert got.cause_at_1 == 0.0


def test_alert_precision_and_every_fault_alerted() -> None:
    streams = fleet_streams()
    found = [finding("bad", 10, "fail", "offset_drift"), finding("h-0", 10, "fail", "noise"),
             finding("h-1", 10, "pass")]
    faults = [judge.FaultTruth("bad", "temperature", "offset_drift")]
    both = judge.score("f", 1, streams, found,
                       [alert("bad", "offset_drift"), alert("h-0", "noise")], faults)
    assert (both.alerts_true, both.alerts_false) == (1, 1)
    assert both.alert_precision == 0.5 and both.faults_alerted_share == 1.0
    noise_only = judge.score("f", 1, streams, found, [alert("h-0", "noise")], faults)
    assert noise_only.alert_precision == 0.0 and noise_only.faults_alerted_share == 0.0


def test_an_alert_opened_on_a_false_positive_and_resolved_before_the_fault_is_false() -> None:
    """The stream's later fault does not make an earlier false alarm true: it opened on a
    healthy window (01:00) and resolved (02:00) before the fault (from 02:00) was seen."""
    streams = fleet_streams()
    found = [finding("bad", 1, "fail", "gain_drift", window_h=1),
             finding("bad", 2, "pass", window_h=1),
             finding("bad", 10, "fail", "offset_drift")]
    faults = [judge.FaultTruth("bad", "temperature", "offset_drift")]
    early = alert("bad", "gain_drift", opened_h=1, resolved_h=2)
    got = judge.score("f", 1, streams, found, [early], faults)
    assert (got.alerts_true, got.alerts_false) == (0, 1)
    assert got.faults_alerted_share == 0.0
    later = alert("bad", "offset_drift", opened_h=10)
    both = judge.score("f", 1, streams, found, [early, later], faults)
    assert (both.alerts_true, both.alerts_false) == (1, 1)
    assert both.faults_alerted_share == 1.0


def test_the_distribution_names_the_worst_fleet_and_the_worst_five_percent() -> None:
    scores = []
    for k in range(40):
        s = judge.FleetScore(f"f{k:02d}", 1000 + k, k)
        s.tp, s.fp = 10, (k % 7 == 0) * (k // 7)  # f07: 1 FP, f14: 2 ... f35: 5
        s.onset_errors_h = [0.1 * k]
        scores.append(s)
    spread = judge.distribution(scores)
    precision = spread["precision"]
    assert precision.worst_fleet == "f35" and precision.worst == pytest.approx(10 / 15)
    # ceil(5 % of 40) = 2: the second-worst fleet's figure
    assert precision.worst_5pct == pytest.approx(10 / 14)
    assert precision.median == 1.0
    onset = spread["onset_error_h"]
    assert onset.worst_fleet == "f39" and onset.worst == pytest.approx(3.9)
    assert precision.pooled == pytest.approx(400 / (400 + sum(range(6))))


# --------------------------------------------------------------------------- fleets


def test_every_axis_of_the_issue_is_in_the_first_sixty_fleets() -> None:
    plans = [fleets.plan(i, 1) for i in range(60)]
    assert {p.interval_s for p in plans} == set(fleets.INTERVALS)
    assert min(p.interval_s for p in plans) == 10 and max(p.interval_s for p in plans) == 300
    assert {p.kind for p in plans} == set(fleets.SITE_KINDS)
    kinds = {f.kind for p in plans for f in p.faults}
    assert kinds >= set(fleets.FAULT_MENU) - {"shared_bias"}
    shared = [p.shared_bias for p in plans if p.shared_bias]
    assert any(abs(b[2]) < 1 for b in shared) and any(abs(b[2]) > 1.25 for b in shared)
    assert any(p.ref_interval_s == 3600 for p in plans)
    assert any(p.interval_s < p.ref_interval_s < 3600 for p in plans)
    assert {p.phi for p in plans} == set(fleets.PHIS)
    assert any(g.delivered for p in plans for g in p.gaps)
    assert any(not g.delivered for p in plans for g in p.gaps)
    assert any(p.rollouts for p in plans)
    lags = [f.magnitude / p.interval_s for p in plans for f in p.faults if f.cause == "time_lag"]
    assert min(lags) >= 2 and max(lags) <= 10
    assert len({p.name for p in plans}) == 60


def test_user_forms_are_what_a_user_writes() -> None:
    plan = fleets.plan(1, 1)
    users = fleets.profiles_text(plan, user_forms=True)
    assert "[sensors.temperature.tolerance]" not in users["ref-grade"]
    assert 'quantity = "[]"' in users["node-a"]
    fallback = fleets.profiles_text(plan, user_forms=False)
    assert "[sensors.temperature.tolerance]" in fallback["ref-grade"]
    assert 'quantity = "[]"' not in "".join(fallback.values())


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_a_small_matrix_runs_the_replay_pipeline_and_reruns_its_worst_fleet(
        tmp_path: Path) -> None:
    """Three short fleets (60-180 s intervals, 8 h) through replay's pipeline; every finding
    the audits published is judged, and ``--only`` reproduces a fleet's scores exactly."""
    out = tmp_path / "m.json"
    args = ["matrix", "--fleets", "6", "--only", "03", "--only", "04", "--only", "05",
            "--hours", "8", "--no-user-forms", "--out", str(out), "--quiet"]
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["fleets"] == 3
    assert "finding precision" in result.stdout and "worst fleet" in result.stdout
    for fleet in data["per_fleet"]:
        counts = fleet["counts"]
        judged = counts["tp"] + counts["fp"] + counts["fn"] + counts["tn"] \
            + sum(counts["excluded"].values())
        pipeline = fleet["pipeline"]
        assert pipeline["audits"] >= 8  # hourly audits over 8 h, the first after ~1 h
        # every calibration finding of an instrument's stream is judged, none twice
        assert 0 < judged <= pipeline["findings"]
        assert counts["tp"] + counts["fn"] > 0  # each fleet has a must-detect window
    worst = data["distribution"]["precision"]["worst_fleet"] \
        or data["per_fleet"][0]["name"]
    again = tmp_path / "again.json"
    rerun = cli("matrix", "--fleets", "6", "--only", worst, "--hours", "8",
                "--no-user-forms", "--out", str(again), "--quiet", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    before = next(f for f in data["per_fleet"] if f["name"] == worst)
    after = json.loads(again.read_text())["per_fleet"][0]
    for key in ("precision", "recall", "cause_at_1", "alert_precision", "counts", "mistakes"):
        assert after[key] == before[key], key


def test_unknown_fleet_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("matrix", "--fleets", "3", "--only", "f99", cwd=tmp_path)
    assert result.returncode == 2
    assert "--only" in result.stderr and "Traceback" not in result.stderr


def test_a_fleet_that_flags_nothing_has_no_precision_rather_than_a_perfect_one() -> None:
    """Nothing flagged is not "no false alarms out of zero = 1.0": the distribution skips
    it for precision, and recall shows the misses."""
    got = judge.score("f", 1, fleet_streams(), [finding("bad", 10, "pass")], [], [])
    assert got.precision is None and got.recall == 0.0
    spread = judge.distribution([got])
    assert spread["precision"].n == 0 and spread["recall"].worst == 0.0


def test_the_generator_builds_what_the_rule_expects(tmp_path: Path) -> None:
    """Over the first eight fleets (every kind of fault of the menu): each kind but gain
    and lag (which need excitation the site may not give) has must-detect windows, the
    streams with no fault are healthy in at least 85 % of their windows (the rest:
    autocorrelated noise near tolerance, gaps), and a shared bias beyond tolerance is
    must-detect on every device of the model."""
    from auditd.adapters.config.catalog import load_catalog
    from auditd.adapters.config.daemon import load_daemon_config
    from auditd.sim import matrix

    must: set[str] = set()
    kinds = {"healthy": 0, "other": 0}
    for index in range(8):
        plan = fleets.plan(index, 1, max_hours=24)
        cfg = load_daemon_config(matrix.write_fleet(plan, tmp_path / plan.name,
                                                    user_forms=False))
        sim = fleets.generate(plan, load_catalog(cfg))
        by_key = {s.key: s for s in sim.streams}
        ends = np.arange(plan.start + 3600, plan.start + plan.duration_s, 3600.0)
        for fault in matrix.fault_truths(plan):
            labels = [judge.label(by_key[(fault.device, fault.sensor)], e - plan.window_s, e)
                      for e in ends]
            if any(lab.kind == "fault" and fault.cause in lab.causes for lab in labels):
                must.add(fault.cause)
        for s in sim.streams:
            if s.reference or s.onsets or abs(s.static_bias) > s.tolerance.bias:
                continue
            for e in ends:
                lab = judge.label(s, e - plan.window_s, e)
                if lab.kind in ("served", "unjudgeable"):
                    continue
                kinds["healthy" if lab.kind == "healthy" else "other"] += 1
                assert lab.kind != "fault", (s.key, lab)
    assert must >= {"offset_drift", "stuck", "noise", "unit_mismatch", "dropout",
                    "reference_fault", "out_of_range", "firmware_regression"}
    assert kinds["healthy"] >= 0.85 * (kinds["healthy"] + kinds["other"]), kinds


def _matrix_file(path: Path, seed: int, user_forms: bool,
                 fleets: list[tuple[int, int, int, int]]) -> None:
    """A matrix result as ``--out`` writes it, with only what ``recorded_rate`` reads:
    per fleet (healthy streams, flagged, false alerts, true alerts)."""
    path.write_text(json.dumps({
        "kind": "matrix", "seed": seed, "user_forms": user_forms,
        "per_fleet": [{"counts": {"healthy_streams": h, "false_alarm_streams": f,
                                  "alerts_false": af, "alerts_true": at}}
                      for h, f, af, at in fleets]}), encoding="utf-8")


def test_the_demo_quotes_the_recorded_matrices_false_alarm_rate(tmp_path: Path) -> None:
    """The demo's own score is one scenario's; the rate it quotes beside it is main's
    recorded matrices', one a seed, as users write profiles. An experiment's run beside
    them, a second file of a seed, a run with the old profile forms, a real-data result
    and files that are broken or odd count for nothing (and never stop the demo)."""
    from auditd.sim.matrix import EVAL_DIR, recorded_rate

    assert recorded_rate(tmp_path) is None
    assert recorded_rate(tmp_path / "absent") is None
    _matrix_file(tmp_path / "matrix-main.json", 1, True, [(10, 1, 0, 3), (12, 0, 1, 2)])
    _matrix_file(tmp_path / "matrix-seed2-main.json", 2, True, [(20, 2, 0, 5)])
    _matrix_file(tmp_path / "matrix-seed1-main.json", 1, True, [(99, 99, 99, 99)])
    _matrix_file(tmp_path / "matrix-seed2-lagmargin.json", 2, True, [(99, 99, 99, 99)])
    _matrix_file(tmp_path / "matrix-seed6-main.json", 6, False, [(99, 99, 99, 99)])
    (tmp_path / "matrix-seed3-main.json").write_text("{", encoding="utf-8")
    (tmp_path / "matrix-seed4-main.json").write_text(
        '{"kind": "matrix", "seed": 4, "user_forms": true, "per_fleet": null}',
        encoding="utf-8")
    (tmp_path / "matrix-seed5-main.json").write_text(json.dumps({
        "kind": "matrix", "seed": 5, "user_forms": True, "per_fleet": [{"counts": {
            "healthy_streams": 1.5, "false_alarm_streams": 0, "alerts_false": 0,
            "alerts_true": 0}}]}), encoding="utf-8")
    (tmp_path / "realdata-epa-main.json").write_text('{"kind": "realdata-epa"}',
                                                     encoding="utf-8")
    rate = recorded_rate(tmp_path)
    assert rate is not None
    assert (rate.seeds, rate.fleets, rate.healthy_streams, rate.flagged_streams,
            rate.false_alerts, rate.alerts) == ((1, 2), 3, 42, 3, 1, 11)
    assert "3 of 42 healthy streams" in rate.sentence() and "1 of the 11 alerts" in \
        rate.sentence()
    # the checkout's own eval/ holds main's matrices, the README quotes their sum
    recorded = recorded_rate(EVAL_DIR)
    assert recorded is not None and {1, 2, 3, 4, 5} <= set(recorded.seeds), recorded
    readme = (EVAL_DIR.parent / "README.md").read_text(encoding="utf-8")
    assert recorded.sentence() in readme, recorded.sentence()
