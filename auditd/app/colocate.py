"""``sensor-auditd colocate``: the composition that turns exports (or the store) into
CONTRACT.md's RESULT.json.

Sources are adapters (export files through ``exports``, or the store's readings); the
arithmetic is ``colocation`` (pure); the diagnosis is the calibration core's. This module
only wires them and words the result: the RESULT.json layout, the findings, the
calibration events of ``--apply``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from auditd.adapters.sources.export_mappings import (
    ExportMapping,
    SensorUnit,
    default_sensor_units,
)
from auditd.adapters.sources.exports import Export, device_and_path, read_export
from auditd.adapters.store import Store
from auditd.core.averaging import COMPLETENESS, Averages
from auditd.domain.audit_plan import unit_confusions
from auditd.domain.calibration import correction_payload
from auditd.domain.colocation import (
    INTERVALS,
    Comparison,
    CorrectionResult,
    Diagnosis,
    Evaluation,
    Precision,
    Stream,
    Targets,
    diagnose_failure,
    error_dependence,
    evaluate,
    judge_correction,
    value_range,
)
from auditd.errors import ConfigError
from auditd.model import Cause, EventRecord, Finding, Outcome, iso

SIGNIFICANT_DIGITS = 6
CONDITIONS = ("temperature", "humidity")
"""The reference's meteorological sensors that describe the test conditions."""
DIAGNOSIS_INTERVAL = "1h"
"""Failing units are diagnosed on their 1-hour averages: the most pairs of any interval."""


@dataclass(frozen=True, slots=True)
class Options:
    site: str = "colocation"
    day_origin_s: float = 0.0
    """Start of 24-hour intervals relative to 00:00 UTC (local standard time: -offset)."""
    train_fraction: float = 0.5
    """Share of the period (by time) a correction is fit on; it is judged on the rest."""
    humidity_term: bool = False
    correct: tuple[str, ...] | None = None
    """Sensors to fit corrections for; None: every sensor that has 1-hour targets."""


@dataclass(frozen=True, slots=True, eq=False)
class Sources:
    reference_id: str
    reference: Mapping[str, Stream]
    units: Mapping[str, Mapping[str, Stream]]
    quantities: Mapping[str, str]
    """sensor -> pint dimensionality."""
    excluded: Mapping[str, int] = field(default_factory=dict)
    """Reference values left out for a QC flag, by sensor."""
    inputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """What each source was (file, mapping, rows rejected ...), for the result."""


# --------------------------------------------------------------------------- sources


def _streams(export: Export) -> dict[str, Stream]:
    return {s: Stream(c.ts, c.values, c.unit) for s, c in export.channels.items()}


def _describe(export: Export) -> dict[str, Any]:
    return {"file": export.path, "mapping": export.mapping, "serial": export.serial,
            "zone": export.zone, "rows": export.rows, "rejected": export.rejected(),
            "sensors": {s: {"unit": c.unit, "source_unit": c.source_unit,
                            "column": c.column, "values": int(c.ts.size)}
                        for s, c in export.channels.items()}}


def sources_from_files(
    reference: str,
    units: Sequence[str],
    *,
    mappings: Sequence[ExportMapping] = (),
    sensor_units: Mapping[str, SensorUnit] | None = None,
) -> Sources:
    """The reference export and each unit's (``ID=PATH`` or a bare path); ``mappings``
    (``--mapping``) are tried before the shipped ones."""
    su = default_sensor_units() if sensor_units is None else sensor_units
    ref_id, ref_path = device_and_path(reference)
    ref = read_export(ref_path, ref_id, preferred=mappings, sensor_units=su)
    exports: dict[str, Export] = {}
    for arg in units:
        device, path = device_and_path(arg)
        if device in exports or device == ref_id:
            raise ConfigError(str(path), "device", f"{device!r} is named twice")
        exports[device] = read_export(path, device, preferred=mappings, sensor_units=su)
    return Sources(
        reference_id=ref_id, reference=_streams(ref),
        units={d: _streams(e) for d, e in exports.items()},
        quantities={s: u.quantity for s, u in su.items()},
        excluded=ref.excluded(),
        inputs={"reference": _describe(ref), **{d: _describe(e) for d, e in exports.items()}},
    )


def sources_from_store(store: Store, site: str, reference: str,
                       devices: Sequence[str] = ()) -> Sources:
    """The same evaluation from what a gateway ingested (live or by ``import``):
    ``devices`` default to every other device of the site that shares a sensor with the
    reference."""
    streams = [s for s in store.readings.streams() if s.site == site]
    by_device: dict[str, list[Any]] = {}
    for s in streams:
        by_device.setdefault(s.device, []).append(s)
    if reference not in by_device:
        raise ConfigError(str(store.path), "--reference",
                          f"no device {reference!r} at site {site!r} in the store")
    ref_sensors = {s.sensor for s in by_device[reference]}
    wanted = list(devices) or sorted(d for d, ss in by_device.items()
                                     if d != reference and ref_sensors & {s.sensor for s in ss})
    for d in wanted:
        if d not in by_device:
            raise ConfigError(str(store.path), "devices",
                              f"no device {d!r} at site {site!r} in the store")

    def read(device: str) -> dict[str, Stream]:
        out = {}
        for info in by_device[device]:
            if info.first_ts is None or info.last_ts is None:
                continue
            ts, values = store.readings.read_window(site, device, info.sensor, info.first_ts,
                                                    info.last_ts + 1.0)
            out[info.sensor] = Stream(ts, values, info.unit)
        return out

    su = default_sensor_units()
    excluded = {sensor: n for (sensor, reason), n in store.quarantine.counts_of(reference).items()
                if reason == "reference_qc_flagged" and sensor is not None}
    return Sources(reference_id=reference, reference=read(reference),
                   units={d: read(d) for d in wanted},
                   quantities={s: u.quantity for s, u in su.items()}, excluded=excluded,
                   inputs={"store": {"path": str(store.path), "site": site}})


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True, eq=False)
class ColocationRun:
    evaluation: Evaluation
    diagnoses: Mapping[tuple[str, str], Diagnosis]
    findings: tuple[Finding, ...]
    corrections: Mapping[tuple[str, str], CorrectionResult]
    result: Mapping[str, Any]


def run(sources: Sources, targets: Mapping[tuple[str, str], Targets],
        options: Options = Options()) -> ColocationRun:
    """Evaluate, diagnose the failures, fit and judge corrections, word the result."""
    ev = evaluate(sources.units, sources.reference, targets,
                  day_origin_s=options.day_origin_s)
    diagnoses: dict[tuple[str, str], Diagnosis] = {}
    findings: list[Finding] = []
    for device in sorted(ev.comparisons):
        for sensor in sorted(ev.comparisons[device]):
            by_interval = ev.comparisons[device][sensor]
            if not any(c.status == "fail" for c in by_interval.values()):
                continue
            interval = (DIAGNOSIS_INTERVAL if DIAGNOSIS_INTERVAL in by_interval
                        else next(iter(by_interval)))
            quantity = sources.quantities.get(sensor, "dimensionless")
            diag = diagnose_failure(ev, device, sensor, interval, quantity,
                                    unit_confusions(ev.units[sensor]))
            diagnoses[(device, sensor)] = diag
            findings.append(_finding(ev, sources, options, device, sensor, interval, diag))
    corrections = _corrections(ev, options)
    result = _result(ev, sources, options, findings, corrections)
    return ColocationRun(ev, diagnoses, tuple(findings), corrections, result)


def _corrections(ev: Evaluation, options: Options) -> dict[tuple[str, str], CorrectionResult]:
    split = ev.start + options.train_fraction * (ev.end - ev.start)
    wanted = options.correct
    out = {}
    for device, by_sensor in ev.averages.items():
        for sensor in sorted(set(by_sensor) & set(ev.reference)):
            has_targets = (sensor, "1h") in ev.targets
            if (wanted is None and not has_targets) or (wanted is not None
                                                        and sensor not in wanted):
                continue
            humidity = by_sensor.get("humidity", {}).get("1h")
            res = judge_correction(by_sensor[sensor]["1h"], ev.reference[sensor]["1h"],
                                   humidity, ev.targets.get((sensor, "1h")), split,
                                   with_humidity=options.humidity_term)
            if res is not None:
                out[(device, sensor)] = res
    return out


def _finding(ev: Evaluation, sources: Sources, options: Options, device: str, sensor: str,
             interval: str, diag: Diagnosis) -> Finding:
    """CONTRACT.md's finding for a unit and quantity that missed a target.

    Its status is the targets' (fail); severity, causes, onset and action are the core's.
    Where the core's own checks pass the severity is ``minor`` (a target missed, nothing
    beyond the core's tolerance with confidence)."""
    verdict = diag.verdict
    by_interval = ev.comparisons[device][sensor]
    missed = {name: c.failed() for name, c in by_interval.items() if c.failed()}
    dependence = dependence_of(ev, device, sensor, interval)
    action = verdict.action
    if verdict.status != "fail":
        action = ("Missed the performance target(s) " + "; ".join(
            f"{', '.join(v)} at {k}" for k, v in missed.items())
            + ". " + ("Repeat the co-location over a wider range of concentrations before "
                      "judging R²." if diag.notes and "narrow range" in diag.notes[0]
                      else "Review the unit against the reference."))
    severity = verdict.severity if verdict.severity != "none" else "minor"
    return Finding(
        kind="calibration", site=options.site, device=device, sensor=sensor,
        reference=sources.reference_id, status="fail", severity=severity,
        window_start=ev.start, window_end=ev.end, unit=ev.units[sensor],
        metrics=verdict.metrics.as_dict(), causes=tuple(diag.causes), onset=verdict.onset,
        context={"colocation": {
            "interval": interval, "missed_targets": missed,
            "figures": comparison_json(by_interval[interval]),
            "core_status": verdict.status, "notes": list(diag.notes),
            "error_dependence": dependence}},
        action=action)


def dependence_of(ev: Evaluation, device: str, sensor: str,
                  interval: str) -> dict[str, dict[str, Any]]:
    """How the unit's error (unit - reference) moves with each other quantity the reference
    measures: the test conditions (temperature, humidity) and the other pollutants, whose
    cross-sensitivity a low-cost sensor may have (an NO2 cell that also sees O3)."""
    out = {}
    for other in sorted(ev.reference):
        if other == sensor or interval not in ev.reference[other]:
            continue
        dep = error_dependence(ev.averages[device][sensor][interval],
                               ev.reference[sensor][interval], ev.reference[other][interval])
        if dep is not None:
            out[other] = {"n": dep.n, "slope": _num(dep.slope), "r": _num(dep.r),
                          "per": ev.units[other]}
    return out


# --------------------------------------------------------------------------- --apply


def not_applicable(res: CorrectionResult, targets: Targets | None) -> str | None:
    """Why a correction must not be applied, or None.

    Lowering the held-out RMSE is not enough: where the unit's readings explain little of
    the reference's variation (R² below the target) or move against it, the least-squares
    line mostly pulls every value towards the reference's mean, and a constant is no
    calibration. Such a unit needs repair or a wider test, not a correction."""
    c = res.correction
    if not c.gain > 0:
        return (f"the fitted gain {c.gain:.3g} is not positive: the unit does not follow the "
                "reference")
    if not res.after.rmse < res.before.rmse:
        return (f"it does not lower the RMSE on the data it was not fit on "
                f"({res.before.rmse:.3g} -> {res.after.rmse:.3g})")
    r2_min = targets.r2_min if targets is not None else None
    if r2_min is not None and not res.before.r2 >= r2_min:
        return (f"the unit explains too little of the reference (R² {res.before.r2:.2f} < "
                f"{r2_min:g}) for a gain and offset to calibrate it")
    return None


def calibration_events(run: ColocationRun, site: str, now: float
                       ) -> tuple[list[EventRecord], list[dict[str, str]]]:
    """One ``calibration`` event per applicable correction (``not_applicable``), and the
    corrections left out with the reason.

    Its ``correction`` object is what the audit applies to the sensor's readings from the
    event's time on (``auditd.domain.calibration``)."""
    events = []
    skipped = []
    for (device, sensor), res in sorted(run.corrections.items()):
        why = not_applicable(res, run.evaluation.targets.get((sensor, "1h")))
        if why is not None:
            skipped.append({"device": device, "sensor": sensor, "why": why})
            continue
        c = res.correction
        data: dict[str, Any] = {
            "ts": iso(now), "type": "calibration",
            "correction": correction_payload(sensor, run.evaluation.units[sensor],
                                             _num(c.gain), _num(c.offset),
                                             _num(c.humidity_coefficient)),
            "by": "sensor-auditd colocate", "reference": run.result["reference"]["id"],
            "fit": {"start": iso(c.fit_start), "end": iso(c.fit_end), "n": c.fit_n},
            "judged": {"start": iso(res.judged_start), "end": iso(res.judged_end),
                       "rmse_before": _num(res.before.rmse),
                       "rmse_after": _num(res.after.rmse)},
        }
        events.append(EventRecord(site=site, device=device, ts=now, received_at=now,
                                  type="calibration", data=data))
    return events, skipped


def record_events(store: Store, events: Sequence[EventRecord]) -> None:
    """Commit the calibration events in one transaction, as if the devices had sent them."""
    if events:
        store.readings.write_outcomes([Outcome(event=e) for e in events])


# --------------------------------------------------------------------------- RESULT.json


def _num(x: float | int | None) -> float | int | None:
    """6 significant digits; None for an undefined figure (never NaN in JSON)."""
    if x is None:
        return None
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return int(x)
    v = float(x)
    if not math.isfinite(v):
        return None
    return float(f"{v:.{SIGNIFICANT_DIGITS}g}") + 0.0


def comparison_json(c: Comparison) -> dict[str, Any]:
    return {"n": c.n, "slope": _num(c.slope), "intercept": _num(c.intercept),
            "r2": _num(c.r2), "rmse": _num(c.rmse), "nrmse": _num(c.nrmse),
            "bias": _num(c.bias), "completeness": _num(c.completeness),
            "slope_deming": _num(c.slope_deming), "intercept_deming": _num(c.intercept_deming),
            "status": c.status, "targets": dict(c.targets)}


def precision_json(p: Precision) -> dict[str, Any]:
    return {"n": p.n, "units": p.units, "sd": _num(p.sd), "cv": _num(p.cv),
            "mean": _num(p.mean), "status": p.status, "targets": dict(p.targets)}


def _range_json(a: Averages, unit: str) -> dict[str, Any] | None:
    r = value_range(a)
    if r is None:
        return None
    return {"n": r.n, "min": _num(r.min), "max": _num(r.max), "mean": _num(r.mean),
            "unit": unit}


def targets_json(t: Targets) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("slope", "intercept"):
        value = getattr(t, key)
        if value is not None:
            out[key] = list(value)
    for key in ("r2_min", "rmse_max", "nrmse_max", "sd_max", "cv_max"):
        value = getattr(t, key)
        if value is not None:
            out[key] = value
    return out


def _result(ev: Evaluation, sources: Sources, options: Options, findings: Sequence[Finding],
            corrections: Mapping[tuple[str, str], CorrectionResult]) -> dict[str, Any]:
    status: dict[str, dict[str, str | None]] = {}
    for device, by_sensor in ev.comparisons.items():
        status[device] = {}
        for sensor, by_interval in by_sensor.items():
            verdicts = [c.status for c in by_interval.values() if c.status is not None]
            status[device][sensor] = (None if not verdicts else "fail" if "fail" in verdicts
                                      else "insufficient_data" if "insufficient_data"
                                      in verdicts else "pass")
    dependence = {device: {sensor: dependence_of(ev, device, sensor, "1h")
                           for sensor in by_sensor if sensor not in CONDITIONS}
                  for device, by_sensor in ev.comparisons.items()}
    corr_json: dict[str, dict[str, Any]] = {}
    for (device, sensor), res in sorted(corrections.items()):
        c = res.correction
        corr_json.setdefault(device, {})[sensor] = {
            "gain": _num(c.gain), "offset": _num(c.offset),
            "humidity_coefficient": _num(c.humidity_coefficient),
            "fit": {"start": iso(c.fit_start), "end": iso(c.fit_end), "n": c.fit_n},
            "judged": {"start": iso(res.judged_start), "end": iso(res.judged_end)},
            "before": comparison_json(res.before), "after": comparison_json(res.after)}
    conditions = {cond: _range_json(ev.reference[cond]["1h"], ev.units[cond])
                  for cond in CONDITIONS if cond in ev.reference}
    excluded_total = sum(sources.excluded.values())
    return {
        "period": {"start": iso(ev.start), "end": iso(ev.end)},
        "reference": {"id": sources.reference_id},
        "units": dict(ev.units),
        "averaging": {
            "intervals": {name: {"seconds": width, "origin": iso(ev.origins.get(name, 0.0))}
                          for name, width in INTERVALS.items()},
            "completeness": f"more than {COMPLETENESS:.0%} of the expected values",
        },
        "devices": {d: {s: {i: comparison_json(c) for i, c in by_i.items()}
                        for s, by_i in by_s.items()} for d, by_s in ev.comparisons.items()},
        "status": status,
        "precision": {s: {i: precision_json(p) for i, p in by_i.items()}
                      for s, by_i in ev.precision.items()},
        "targets": {f"{s}.{i}": targets_json(t) for (s, i), t in sorted(ev.targets.items())
                    if s in ev.units},
        "excluded": {"reference_qc_flagged": excluded_total,
                     "reference_qc_flagged_by_sensor": dict(sources.excluded)},
        "conditions": conditions,
        "error_dependence": dependence,
        "corrections": corr_json,
        "inputs": dict(sources.inputs),
        "findings": [f.to_json() for f in findings],
    }


def causes_text(causes: Sequence[Cause]) -> str:
    return ", ".join(f"{c.cause} ({c.confidence:.2f})" for c in causes) or "none"


def summary_table(run: ColocationRun) -> str:
    """The targets table as text, one line per unit, sensor and interval with a target."""
    ev = run.evaluation
    lines = [f"{'unit':<8}{'sensor':<8}{'avg':<5}{'N':>5}{'slope':>8}{'icpt':>8}{'R2':>6}"
             f"{'RMSE':>7}{'NRMSE%':>8}  status  failed"]
    for device, sensor, interval, c in ev.judged():
        lines.append(
            f"{device:<8}{sensor:<8}{interval:<5}{c.n:>5}{c.slope:>8.2f}"
            f"{c.intercept:>8.2f}{c.r2:>6.2f}{c.rmse:>7.2f}{c.nrmse:>8.1f}  "
            f"{c.status:<6}  {', '.join(c.failed()) or '-'}")
    for sensor, interval, p in ev.judged_precision():
        lines.append(f"precision {sensor} {interval}: N {p.n}, SD {p.sd:.2f} "
                     f"{ev.units[sensor]}, CV {p.cv:.1f} % ({p.status})")
    for f in run.findings:
        lines.append(f"finding {f.device} {f.sensor}: {f.severity}; causes "
                     f"{causes_text(f.causes)}")
    return "\n".join(lines)
