"""The judge of the evaluation matrix: a label for every audited stream-window, the scores.

Pure: the truth is what ``auditd.sim.fleets`` built (per stream, at every nominal reading
time, the true value and each deterministic part of the device's error); the findings and
alerts are what the pipeline produced. Nothing here looks at how the audit decides.

The ground-truth rule (docs/evaluation.md says it in prose), with ``MARGIN`` = 0.25:

* A window [start, end) of a stream is **must-detect** when a fault's effect inside it
  exceeds (1 + MARGIN) x its tolerance *by construction*:
  offset (step, ramp, a firmware regression's step, a model's shared bias, an offset that
  pins the device at its full scale): ``|mean(device error)|`` over the window, after
  clipping, >= 1.25 x bias tolerance; gain: ``|gain - 1|`` >= 1.25 x gain tolerance over
  at least half the window, *and* identifiable (the gain's error spread ``|gain - 1| x
  sd(true value)`` at least the device's own noise); noise: the error's rms (static offset,
  noise, extra noise) >= 1.25 x rmse tolerance; time lag: over at least half the window,
  a lag >= 1.25 x the profile's lag tolerance (one interval) *and* identifiable (the lag's
  own error ``rms(x(t) - x(t - lag))`` at least the device's noise); stuck: at least half
  the window's readings (and at least min_samples) frozen; unit mismatch: at least half the
  window's readings in the other unit; dropout: at least half the window's readings lost;
  out of range: at least 3 readings and 1 % of the window outside the profile's range.
  For a reference's own stream: its offset >= 1.25 x the bias tolerance of the devices it
  serves (cause ``reference_fault``).
* A window is **healthy** when no fault touches it, every error is inside (1 - MARGIN) x
  its tolerance by construction (the generator draws healthy streams so), fewer than a
  quarter of its readings are missing at the audit (a gap whose backlog has not arrived
  yet) and its reference is not faulty.
* Everything else is **ambiguous** (a fault inside the band, or present in less than half
  the window, or not identifiable; a gap in progress) and is excluded from precision and
  recall, counted. A window of a device whose *reference* is faulty is **served**: not
  scored for detection (blaming the reference, or saying nothing, are both right there),
  only for blame. A window with fewer expected readings than the profile's min_samples is
  **unjudgeable** (the profile asks for no verdict), counted.

Scores per fleet: finding precision and recall over stream-windows (a finding is
*flagged* when it fails, or lacks data with a cause), cause@1 over the true positives
(the finding's first cause is the injected one), onset error (hours, median over true
positives that give an onset) and onset coverage, alert precision (an alert is true when
its stream has a must-detect window or, under a faulty reference, names the reference),
every fault alerted, the reference blamed for a field fault and a field device blamed for
the reference's.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from auditd.domain.alerts import Alert
from auditd.model import Finding

MARGIN = 0.25
"""Must-detect from (1 + MARGIN) x tolerance, healthy up to (1 - MARGIN) x tolerance."""

IDENTIFIABLE = 3.0
"""A gain or lag fault is must-detect only where the window's data reveal it: its effect
beyond tolerance is this many standard errors (noise / sqrt(effective readings))."""

LabelKind = Literal["fault", "healthy", "ambiguous", "served", "unjudgeable"]


@dataclass(frozen=True, slots=True)
class ToleranceTruth:
    bias: float
    gain: float
    rmse: float
    lag_s: float
    window_s: float
    min_samples: int


@dataclass(frozen=True, eq=False)
class StreamTruth:
    """One stream's truth at each nominal reading time ``t`` (arrays of one length)."""

    site: str
    device: str
    sensor: str
    model: str
    reference: bool
    tolerance: ToleranceTruth
    t: np.ndarray
    x: np.ndarray
    """The true value (a reference's: the mean over its interval)."""
    sent: np.ndarray
    static_bias: float
    static_gain: float
    noise_std: float
    noise_phi: float
    """Lag-1 autocorrelation of the device's noise (per reading)."""
    offset: np.ndarray
    """Fault offsets added (steps, ramps, a regression's, the reference's own fault)."""
    gain_extra: np.ndarray
    stuck: np.ndarray
    lag_s: np.ndarray
    lag_effect: np.ndarray
    extra_noise: np.ndarray
    unit_mismatch: np.ndarray
    out_of_range: np.ndarray
    lost: np.ndarray
    received: np.ndarray
    onsets: Mapping[str, float]
    """cause -> the injected onset."""
    reference_stream: StreamTruth | None = None
    """The reference stream this device is audited against (None for a reference)."""
    range: tuple[float, float] = (-math.inf, math.inf)
    reference_interval_s: float = 0.0
    """The reporting interval of the reference it is audited against."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.device, self.sensor)


@dataclass(frozen=True, slots=True)
class Label:
    kind: LabelKind
    causes: frozenset[str] = frozenset()
    """The causes a right verdict may name first (must-detect windows)."""
    onset: float | None = None
    reason: str = ""
    reference_faulty: bool = False
    """The stream's reference (or, for a reference, itself) has a fault in the window."""
    onsets: Mapping[str, float] = field(default_factory=dict)
    """Each right cause's own onset, where they differ (a model's offset from the first
    reading, the firmware step on top of it from the update): a verdict's onset is scored
    against its own cause's, ``onset`` (the earliest) otherwise."""
    why: str = ""
    """Why a window is ambiguous: ``fault`` (in the band, partial, not identifiable),
    ``gap`` (readings missing at the audit) or ``healthy_noise`` (a healthy device whose
    realised error in this window is near its tolerance)."""


def _share(mask: np.ndarray) -> float:
    return float(np.mean(mask)) if len(mask) else 0.0


def label(stream: StreamTruth, start: float, end: float) -> Label:
    """The truth of ``stream`` over the audit window [start, end) (see the module)."""
    tol = stream.tolerance
    inside = (stream.t >= start) & (stream.t < end)
    n = int(inside.sum())
    if n == 0 or (not stream.reference and n < tol.min_samples):
        return Label("unjudgeable", reason=f"{n} readings expected, min_samples "
                                           f"{tol.min_samples}")
    if stream.reference:
        return _reference_label(stream, inside, start, end)
    musts: list[tuple[str, float, str]] = []
    maybes: list[str] = []

    def onset(cause: str) -> float:
        return stream.onsets.get(cause, float(stream.t[0]))

    # dropout and gaps: what was lost, or had not arrived by the audit
    missing = stream.lost[inside] | (stream.received[inside] > end)
    dropout_lost = stream.lost[inside] & (stream.t[inside] >= onset("dropout")) \
        if "dropout" in stream.onsets else np.zeros(n, dtype=bool)
    if "dropout" in stream.onsets and _share(dropout_lost) >= 0.5:
        musts.append(("dropout", onset("dropout"), "half the window lost"))
    elif _share(missing) >= 0.25:
        maybes.append(f"{_share(missing):.0%} of the readings missing at the audit")
    gap = bool(maybes)

    # the error the readings really carry (noise, clipping and rounding included) where
    # they are calibration errors at all: not lost, frozen, in another unit or impossible
    valid = inside & ~stream.lost & ~stream.stuck & ~stream.unit_mismatch \
        & ~stream.out_of_range
    error = stream.sent[valid] - stream.x[valid]
    bias = abs(float(np.mean(error))) if error.size else 0.0
    rms = float(np.sqrt(np.mean(error ** 2))) if error.size else 0.0
    offset_causes = [c for c in ("offset_drift", "firmware_regression")
                     if c in stream.onsets and onset(c) < end]
    touched = bool(np.any(stream.offset[inside] != 0))
    shared = abs(stream.static_bias) > tol.bias  # a model's bias beyond tolerance
    if bias >= (1 + MARGIN) * tol.bias and (touched or shared):
        # a model's bias beyond tolerance is each device's offset from its first reading
        # (``matrix.fault_truths``); a firmware step on top of it does not make that
        # offset wrong to name, nor date it later
        dated = {c: onset(c) for c in (offset_causes if touched else [])}
        if not dated or (shared and "offset_drift" not in dated):
            dated["offset_drift"] = float(stream.t[0])
        for cause, when in dated.items():
            musts.append((cause, when, f"offset {bias / tol.bias:.1f} x tolerance"))
    elif touched or shared:
        maybes.append(f"offset {bias / tol.bias:.2f} x tolerance")

    # how many independent readings the window holds, given the noise's autocorrelation
    phi = min(max(stream.noise_phi, 0.0), 0.999)
    n_eff = max(1.0, n * (1 - phi) / (1 + phi))
    noise_se = max(stream.noise_std, 1e-12) / math.sqrt(n_eff)
    gain_extra = stream.gain_extra[inside]
    if np.any(gain_extra != 0):
        after = gain_extra != 0
        total = (1 + stream.static_gain) * (1 + float(np.mean(gain_extra[after]))) - 1
        spread = float(np.std(stream.x[inside]))
        # identifiable: the gain beyond tolerance is 3 standard errors of a slope fitted
        # over this window's excitation (a gain the data cannot reveal is not required)
        z = (abs(total) - tol.gain) * spread / noise_se
        if _share(after) >= 0.5 and abs(total) >= (1 + MARGIN) * tol.gain and z >= IDENTIFIABLE:
            musts.append(("gain_drift", onset("gain_drift"), f"gain {total:+.3f}, z {z:.1f}"))
        else:
            maybes.append(f"gain {total:+.3f} (z {z:.1f}) in {_share(after):.0%} of the "
                          "window")

    stuck = stream.stuck[inside]
    if np.any(stuck):
        if _share(stuck) >= 0.5 and int(stuck.sum()) >= tol.min_samples:
            musts.append(("stuck", onset("stuck"), f"{_share(stuck):.0%} frozen"))
        else:
            maybes.append(f"{_share(stuck):.0%} frozen")

    extra = stream.extra_noise[inside]
    if np.any(extra != 0):
        if rms >= (1 + MARGIN) * tol.rmse:
            musts.append(("noise", onset("noise"), f"rms {rms / tol.rmse:.1f} x tolerance"))
        else:
            maybes.append(f"rms {rms / tol.rmse:.2f} x tolerance")

    lag = stream.lag_s[inside]
    if np.any(lag != 0):
        after = lag != 0
        effect = float(np.sqrt(np.mean(stream.lag_effect[inside][after] ** 2)))
        z = effect / noise_se
        worst = float(np.max(lag))
        resolvable = worst >= 2 * stream.reference_interval_s
        if _share(after) >= 0.5 and worst >= (1 + MARGIN) * tol.lag_s and resolvable \
                and z >= IDENTIFIABLE:
            musts.append(("time_lag", onset("time_lag"), f"lag {worst:.0f} s, z {z:.1f}"))
        else:
            maybes.append(f"lag {worst:.0f} s (z {z:.1f}"
                          f"{'' if resolvable else ', below the reference resolution'}) in "
                          f"{_share(after):.0%} of the window")

    unit = stream.unit_mismatch[inside]
    if np.any(unit):
        if _share(unit) >= 0.5:
            musts.append(("unit_mismatch", onset("unit_mismatch"), "in another unit"))
        else:
            maybes.append(f"{_share(unit):.0%} in another unit")

    oor = stream.out_of_range[inside]
    if np.any(oor):
        if int(oor.sum()) >= 3 and _share(oor) >= 0.01:
            musts.append(("out_of_range", onset("out_of_range"),
                          f"{int(oor.sum())} readings out of range"))
        else:
            maybes.append(f"{int(oor.sum())} readings out of range")

    own = any(when < end for when in stream.onsets.values())  # its own fault began
    ref = stream.reference_stream
    ref_faulty = ref is not None and _offset_touches(ref, start, end)
    if musts:
        return Label("fault", frozenset(c for c, _, _ in musts), min(w for _, w, _ in musts),
                     "; ".join(r for _, _, r in musts), reference_faulty=ref_faulty,
                     onsets={c: w for c, w, _ in musts})
    if ref_faulty and not own:
        assert ref is not None
        return Label("served", frozenset({"reference_fault"}),
                     ref.onsets.get("reference_fault"), "its reference is faulty",
                     reference_faulty=True)
    why = "fault" if own else "gap" if gap else "healthy_noise"
    if not own:  # a healthy device: is this window's realised error inside the band?
        if bias > (1 - MARGIN) * tol.bias:
            maybes.append(f"healthy, but its error averages {bias / tol.bias:.2f} x the "
                          "bias tolerance in this window")
        if rms > (1 - MARGIN) * tol.rmse:
            maybes.append(f"healthy, but its error's rms is {rms / tol.rmse:.2f} x the "
                          "rmse tolerance in this window")
    if maybes:
        return Label("ambiguous", reason="; ".join(maybes), reference_faulty=ref_faulty,
                     why=why)
    return Label("healthy")


def _offset_touches(stream: StreamTruth, start: float, end: float) -> bool:
    """Whether the stream's fault offset is non-zero in any reading that covers part of
    [start, end) (a coarse reference's reading covers its whole interval)."""
    step = float(stream.t[1] - stream.t[0]) if len(stream.t) > 1 else 0.0
    covering = (stream.t + step > start) & (stream.t < end)
    return bool(np.any(stream.offset[covering] != 0))


def _reference_label(stream: StreamTruth, inside: np.ndarray, start: float,
                     end: float) -> Label:
    if not _offset_touches(stream, start, end):
        return Label("healthy")
    size = abs(float(np.mean(stream.offset[inside])))
    if size >= (1 + MARGIN) * stream.tolerance.bias:
        return Label("fault", frozenset({"reference_fault"}),
                     stream.onsets.get("reference_fault"),
                     f"reference offset {size / stream.tolerance.bias:.1f} x tolerance",
                     reference_faulty=True)
    return Label("ambiguous", reason=f"reference offset {size / stream.tolerance.bias:.2f} x "
                                     "tolerance", reference_faulty=True, why="fault")


# --------------------------------------------------------------------------- scoring


def flagged(finding: Finding) -> bool:
    """A finding that says something is wrong: a failure, or too little data with a cause."""
    return finding.status == "fail" or (finding.status == "insufficient_data"
                                        and bool(finding.causes))


def _top(finding: Finding | Alert) -> str | None:
    if isinstance(finding, Alert):
        return finding.cause
    return finding.causes[0].cause if finding.causes else None


@dataclass(frozen=True, slots=True)
class FaultTruth:
    """One injected fault on one stream, for "every fault alerted"."""

    device: str
    sensor: str
    cause: str
    root: str | None = None
    """For a firmware regression: any alert naming this cause may stand for it."""


@dataclass
class FleetScore:
    name: str
    seed: int
    index: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    cause_right: int = 0
    onset_errors_h: list[float] = field(default_factory=list)
    onset_given: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    alerts_true: int = 0
    alerts_false: int = 0
    alerts_excluded: int = 0
    faults_to_alert: int = 0
    faults_alerted: int = 0
    reference_blamed_on_field: int = 0
    field_blamed_on_reference: int = 0
    healthy_streams: int = 0
    """Field streams whose every judged window is healthy or near-tolerance noise: no
    fault, no faulty reference."""
    false_alarm_streams: int = 0
    """Of those, the streams flagged in at least one window."""
    mistakes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def cause_at_1(self) -> float | None:
        return _ratio(self.cause_right, self.tp)

    @property
    def onset_error_h(self) -> float | None:
        return statistics.median(self.onset_errors_h) if self.onset_errors_h else None

    @property
    def onset_coverage(self) -> float | None:
        return _ratio(self.onset_given, self.tp)

    @property
    def alert_precision(self) -> float | None:
        return _ratio(self.alerts_true, self.alerts_true + self.alerts_false)

    @property
    def faults_alerted_share(self) -> float | None:
        return _ratio(self.faults_alerted, self.faults_to_alert)

    def metrics(self) -> dict[str, float | int | None]:
        return {name: getattr(self, name) for name in METRICS}

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "index": self.index,
                **{k: (round(v, 4) if isinstance(v, float) else v)
                   for k, v in self.metrics().items()},
                "counts": {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn,
                           "cause_right": self.cause_right, "onset_given": self.onset_given,
                           "excluded": dict(self.excluded),
                           "alerts_true": self.alerts_true, "alerts_false": self.alerts_false,
                           "alerts_excluded": self.alerts_excluded,
                           "faults_to_alert": self.faults_to_alert,
                           "faults_alerted": self.faults_alerted,
                           "healthy_streams": self.healthy_streams,
                           "false_alarm_streams": self.false_alarm_streams},
                "seconds": round(self.seconds, 1), "mistakes": self.mistakes[:40],
                **self.extra}


METRICS = ("precision", "recall", "cause_at_1", "onset_error_h", "onset_coverage",
           "alert_precision", "faults_alerted_share", "reference_blamed_on_field",
           "field_blamed_on_reference")
LOWER_IS_BETTER = frozenset({"onset_error_h", "reference_blamed_on_field",
                             "field_blamed_on_reference"})


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _fmt_t(t: float) -> str:
    from auditd.model import iso

    return iso(t) or "-"


def score(name: str, seed: int, streams: Sequence[StreamTruth], findings: Iterable[Finding],
          alerts: Iterable[Alert], faults: Iterable[FaultTruth], *,
          index: int = 0, outages: Iterable[str] = ()) -> FleetScore:
    """Score one fleet's findings and alerts against its truth (see the module);
    ``outages``: devices with a real gap in their data (not a fault)."""
    result = FleetScore(name, seed, index)
    by_key = {s.key: s for s in streams}
    found = list(findings)
    labels_of: dict[tuple[str, str], list[tuple[float, Label]]] = {}
    for f in found:
        if f.kind == "metadata" or not f.sensor:
            continue
        stream = by_key.get((f.device, f.sensor))
        if stream is None:
            continue  # a root finding (a cohort's), not an instrument's stream
        lab = label(stream, f.window_start, f.window_end)
        labels_of.setdefault(stream.key, []).append((f.window_end, lab))
        is_flagged = flagged(f)
        top = _top(f)
        where = f"{f.device}/{f.sensor} {_fmt_t(f.window_end)}"
        if top == "reference_fault" and is_flagged and not lab.reference_faulty:
            result.field_blamed_on_reference += 1
            result.mistakes.append(f"reference blamed: {where} ({lab.kind} {lab.reason})")
        if lab.kind == "served":
            result.excluded["served"] += 1
            if is_flagged and top != "reference_fault":
                result.reference_blamed_on_field += 1
                result.mistakes.append(f"field blamed for its reference: {where} said {top}")
            continue
        if lab.kind in ("ambiguous", "unjudgeable"):
            result.excluded[f"ambiguous_{lab.why}" if lab.why else lab.kind] += 1
            continue
        if lab.kind == "healthy":
            if is_flagged:
                result.fp += 1
                result.mistakes.append(f"false positive: {where} {f.status} {top}")
            else:
                result.tn += 1
            continue
        if not is_flagged:
            result.fn += 1
            result.mistakes.append(f"missed: {where} ({lab.reason}) said {f.status}")
            continue
        result.tp += 1
        if top in lab.causes:
            result.cause_right += 1
        else:
            result.mistakes.append(f"wrong cause: {where} said {top}, truth "
                                   f"{'/'.join(sorted(lab.causes))}")
        truth_onset = lab.onsets.get(top, lab.onset) if top is not None else lab.onset
        if f.onset is not None and truth_onset is not None:
            result.onset_given += 1
            result.onset_errors_h.append(abs(f.onset - truth_onset) / 3600.0)
    flagged_healthy: set[tuple[str, str]] = set()
    for f in found:
        key = (f.device, f.sensor or "")
        if key in by_key and flagged(f) \
                and label(by_key[key], f.window_start, f.window_end).kind == "healthy":
            flagged_healthy.add(key)
    for key, labels in labels_of.items():
        if by_key[key].reference:
            continue
        if all(lab.kind == "healthy" or lab.why in ("healthy_noise", "gap")
               or lab.kind == "unjudgeable" for _, lab in labels):
            result.healthy_streams += 1
            result.false_alarm_streams += key in flagged_healthy
    _score_alerts(result, by_key, labels_of, list(alerts), list(faults), frozenset(outages))
    return result


def _score_alerts(result: FleetScore, by_key: Mapping[tuple[str, str], StreamTruth],
                  labels_of: Mapping[tuple[str, str], Sequence[tuple[float, Label]]],
                  alerts: Sequence[Alert], faults: Sequence[FaultTruth],
                  outages: frozenset[str]) -> None:
    """An alert on a stream is true when a must-detect window (or, under a faulty
    reference, a served one while the alert names the reference) ends during its life
    (from opening to resolution); false when it is not and it opened on a healthy window;
    otherwise excluded."""
    regression = {f.device for f in faults if f.cause == "firmware_regression"}
    dropouts = {f.device for f in faults if f.cause == "dropout"}
    true_alerts: list[Alert] = []
    for alert in alerts:
        key = (alert.device, alert.sensor or "")
        where = f"alert {alert.device}/{alert.sensor} {alert.cause}"
        verdict: bool | None
        if alert.kind == "metadata" and alert.cause == "device_silent":
            # true for a device that lost its data; a real outage (a gap) is no false alarm
            # but no fault either
            verdict = True if alert.device in dropouts else (
                None if alert.device in outages else False)
        elif alert.kind == "metadata":
            verdict = alert.device in regression
        elif key not in by_key:  # a root: a firmware cohort's
            verdict = alert.cause == "firmware_regression" and bool(regression)
        else:
            verdict = _alert_verdict(alert, labels_of.get(key, ()))
        if verdict is None:
            result.alerts_excluded += 1
        elif verdict:
            result.alerts_true += 1
            true_alerts.append(alert)
        else:
            result.alerts_false += 1
            result.mistakes.append(f"false {where} opened {_fmt_t(alert.opened_at)}")
    causes = {a.cause for a in true_alerts}
    for fault in faults:
        key = (fault.device, fault.sensor)
        if not any(lab.kind == "fault" for _, lab in labels_of.get(key, ())):
            continue
        result.faults_to_alert += 1
        if any((a.device, a.sensor or "") == key for a in true_alerts) \
                or (fault.root is not None and fault.root in causes):
            result.faults_alerted += 1
        else:
            result.mistakes.append(f"fault never alerted: {fault.device}/{fault.sensor} "
                                   f"{fault.cause}")


def _alert_verdict(alert: Alert, labels: Sequence[tuple[float, Label]]) -> bool | None:
    until = alert.resolved_at if alert.resolved_at is not None else math.inf
    during = [lab for end, lab in labels if alert.opened_at <= end <= until]
    if any(lab.kind == "fault" for lab in during):
        return True
    if any(lab.kind == "served" for lab in during):
        return alert.cause == "reference_fault"
    opening = [lab for end, lab in labels if abs(end - alert.opened_at) < 1.0]
    if opening and all(lab.kind == "healthy" for lab in opening):
        return False
    return None


# --------------------------------------------------------------------------- the distribution


@dataclass(frozen=True, slots=True)
class Spread:
    metric: str
    n: int
    median: float | None
    worst_5pct: float | None
    """The value the worst 5 % of fleets are at or beyond: the ceil(5 % x n)-th worst."""
    worst: float | None
    worst_fleet: str | None
    worst_seed: int | None
    """The worst fleet's own seed (``matrix --seed S`` makes fleet i with S x 1000 + i)."""
    pooled: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"n": self.n, "median": _r(self.median), "worst_5pct": _r(self.worst_5pct),
                "worst": _r(self.worst), "worst_fleet": self.worst_fleet,
                "worst_seed": self.worst_seed, "pooled": _r(self.pooled)}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def distribution(scores: Sequence[FleetScore]) -> dict[str, Spread]:
    out = {}
    pooled = _pooled(scores)
    for metric in METRICS:
        values = [(v, s) for s in scores if (v := getattr(s, metric)) is not None]
        if not values:
            out[metric] = Spread(metric, 0, None, None, None, None, None, pooled.get(metric))
            continue
        worse_first = sorted(values, key=lambda p: p[0], reverse=metric in LOWER_IS_BETTER)
        k = max(1, math.ceil(0.05 * len(values)))
        worst_value, worst_fleet = worse_first[0]
        perfect = worst_value == (0 if metric in LOWER_IS_BETTER else 1)
        out[metric] = Spread(metric, len(values),
                             float(statistics.median(v for v, _ in values)),
                             float(worse_first[k - 1][0]), float(worst_value),
                             None if perfect else worst_fleet.name,
                             None if perfect else worst_fleet.seed, pooled.get(metric))
    return out


def _pooled(scores: Sequence[FleetScore]) -> dict[str, float | None]:
    tp = sum(s.tp for s in scores)
    errors = [e for s in scores for e in s.onset_errors_h]
    return {
        "precision": _ratio(tp, tp + sum(s.fp for s in scores)),
        "recall": _ratio(tp, tp + sum(s.fn for s in scores)),
        "cause_at_1": _ratio(sum(s.cause_right for s in scores), tp),
        "onset_error_h": statistics.median(errors) if errors else None,
        "onset_coverage": _ratio(sum(s.onset_given for s in scores), tp),
        "alert_precision": _ratio(sum(s.alerts_true for s in scores),
                                  sum(s.alerts_true + s.alerts_false for s in scores)),
        "faults_alerted_share": _ratio(sum(s.faults_alerted for s in scores),
                                       sum(s.faults_to_alert for s in scores)),
        "reference_blamed_on_field": float(sum(s.reference_blamed_on_field for s in scores)),
        "field_blamed_on_reference": float(sum(s.field_blamed_on_reference for s in scores)),
    }
