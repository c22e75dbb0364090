"""Score findings against the truth of a simulation: did the audit catch what was injected?

Pure: ``score(truth, findings)`` is a function of ``simulate``'s truth JSON and findings
(typed, as ``load_findings`` reads them from the JSON Lines of ``replay``, or as the store
holds them). Findings over
a run come from many audits; a stream is judged by its *verdict*: its latest flagged
finding (failed, or ``insufficient_data`` with a cause such as ``dropout``), because an
audit keeps re-judging the same fault and the latest one has seen the most of it; no
verdict when it was never flagged.

What the scores mean:

* **recall** of a cause: the faults of that cause whose stream's verdict names it first;
  **detected**: the stream failed at all after the onset (whatever cause it named).
* **precision** of a cause: of the streams whose verdict names the cause first, the share
  whose truth is that cause (a device served by a faulty reference has the truth
  ``reference_fault`` too: blaming the reference is the right answer for it).
* **top-1 accuracy**: all faults, the verdict's first cause is the injected one.
* **onset error**: |estimated - injected| onset, from the first failing finding after the
  onset that estimates one.
* **false alarms**: healthy streams (no fault, not under a faulty reference) flagged in
  any audit (failed, or lacked data with a cause).
* **firmware regressions**: for each firmware that regressed, the cohort's root finding
  (``context.cohort.version``), if one named ``firmware_regression``; a root finding is not
  an instrument's stream, so it never counts in precision.
* **reference blame**: a reference fault is blamed on the reference when the reference's
  own finding fails with ``reference_fault`` and every device it serves for that sensor
  that failed names ``reference_fault`` first.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from auditd.domain.validate import parse_timestamp
from auditd.errors import ConfigError
from auditd.model import Finding

Key = tuple[str, str]


def load_truth(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), "--truth", exc.strerror or str(exc)) from exc
    except ValueError as exc:
        raise ConfigError(str(path), "--truth", f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or "faults" not in data or "streams" not in data:
        raise ConfigError(str(path), "--truth", "not a truth file of `sensor-auditd simulate`")
    return data


def load_findings(path: Path) -> list[Finding]:
    """A findings file (CONTRACT.md's form, one JSON object a line) as typed findings."""
    out = []
    try:
        with path.open(encoding="utf-8") as handle:
            for n, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        out.append(Finding.from_json(json.loads(line)))
                    except (ValueError, KeyError, TypeError) as exc:
                        raise ConfigError(str(path), f"line {n}",
                                          f"not a finding: {exc!r}") from exc
    except OSError as exc:
        raise ConfigError(str(path), "--findings", exc.strerror or str(exc)) from exc
    return out


def _top(finding: Finding) -> str | None:
    return finding.causes[0].cause if finding.causes else None


def _history(findings: Iterable[Finding]) -> dict[Key, list[Finding]]:
    """Calibration findings per (device, sensor), in window-end order."""
    out: dict[Key, list[Finding]] = defaultdict(list)
    for f in findings:
        if f.kind != "calibration" or not f.sensor:
            continue
        out[(f.device, f.sensor)].append(f)
    for items in out.values():
        items.sort(key=lambda f: f.window_end)
    return out


def flagged(finding: Finding) -> bool:
    """A finding that says something is wrong: a failure, or too little data with a cause
    (a device gone silent is ``insufficient_data`` with ``dropout``, not a failure)."""
    return finding.status == "fail" or (finding.status == "insufficient_data"
                                        and bool(finding.causes))


def _verdict(items: Sequence[Finding], after: float | None = None) -> Finding | None:
    failing = [f for f in items if flagged(f) and (after is None or f.window_end > after)]
    return failing[-1] if failing else None


def _cohort_version(finding: Finding) -> object:
    cohort = finding.context.get("cohort")
    return cohort.get("version") if isinstance(cohort, Mapping) else None


def score(truth: Mapping[str, Any], findings: Sequence[Finding]) -> dict[str, Any]:
    """The evaluation of ``findings`` against ``truth`` (see the module docstring)."""
    history = _history(findings)
    expected: dict[Key, str] = {}
    onsets: dict[Key, float] = {}
    faults = list(truth["faults"])
    reference_faults = []
    for fault in faults:
        key = (fault["device"], fault["sensor"])
        expected[key] = fault["cause"]
        onsets[key] = parse_timestamp(fault["onset"])
        if fault["cause"] == "reference_fault":
            reference_faults.append(fault)
            for served in fault.get("served", ()):
                skey = (served, fault["sensor"])
                expected.setdefault(skey, "reference_fault")
                onsets.setdefault(skey, onsets[key])
    field_streams = [(s["device"], s["sensor"]) for s in truth["streams"] if not s["reference"]]
    healthy = [k for k in field_streams if k not in expected]

    per_fault = []
    for fault in faults:
        key = (fault["device"], fault["sensor"])
        onset = onsets[key]
        items = history.get(key, [])
        verdict = _verdict(items, after=onset)
        estimated = next((f.onset for f in items if flagged(f)
                          and f.window_end > onset and f.onset is not None), None)
        first = next((f.window_end for f in items if flagged(f) and f.window_end > onset),
                     None)
        causes = [c.cause for c in verdict.causes] if verdict is not None else []
        per_fault.append({
            "device": key[0], "sensor": key[1], "cause": fault["cause"],
            "detected": verdict is not None,
            "top": causes[0] if causes else None,
            "ranked": fault["cause"] in causes,
            "causes": causes,
            "onset_error_s": None if estimated is None else round(abs(estimated - onset), 1),
            "delay_s": None if first is None else round(first - onset, 1),
        })

    predicted: dict[Key, str] = {}
    instruments = {d["device"] for d in truth.get("devices", ())} or None
    for key, items in history.items():
        if instruments is not None and key[0] not in instruments:
            continue  # a root finding (a firmware cohort's), not an instrument's stream
        verdict = _verdict(items)
        top = _top(verdict) if verdict else None
        if top is not None:
            predicted[key] = top
    causes = sorted({f["cause"] for f in faults} | set(predicted.values()))
    by_cause: dict[str, dict[str, Any]] = {}
    for cause in causes:
        mine = [p for p in per_fault if p["cause"] == cause]
        said = [k for k, c in predicted.items() if c == cause]
        right = [k for k in said if expected.get(k) == cause]
        by_cause[cause] = {
            "faults": len(mine),
            "found": sum(p["top"] == cause for p in mine),
            "recall": _ratio(sum(p["top"] == cause for p in mine), len(mine)),
            "predicted": len(said),
            "precision": _ratio(len(right), len(said)),
        }

    false_alarms = []
    for key in healthy:
        failing = [f for f in history.get(key, []) if flagged(f)]
        if failing:
            false_alarms.append({"device": key[0], "sensor": key[1], "findings": len(failing),
                                 "causes": sorted({_top(f) or "-" for f in failing})})

    blame = []
    for fault in reference_faults:
        ref_items = history.get((fault["device"], fault["sensor"]), [])
        ref_verdict = _verdict(ref_items, after=onsets[(fault["device"], fault["sensor"])])
        served_tops = {}
        for served in fault.get("served", ()):
            v = _verdict(history.get((served, fault["sensor"]), []),
                         after=onsets[(fault["device"], fault["sensor"])])
            if v is not None:
                served_tops[served] = _top(v)
        blame.append({
            "reference": fault["device"], "sensor": fault["sensor"],
            "reference_blamed": ref_verdict is not None and _top(ref_verdict) == "reference_fault",
            "devices_blaming_reference": sum(t == "reference_fault" for t in served_tops.values()),
            "devices_blaming_themselves": sorted(d for d, t in served_tops.items()
                                                 if t != "reference_fault"),
        })

    firmware: list[dict[str, Any]] = []
    for fault in faults:
        if fault["cause"] == "firmware_regression" and fault.get("firmware") not in {
                f["firmware"] for f in firmware}:
            roots = sorted({f.device for f in findings
                            if _cohort_version(f) == fault.get("firmware")
                            and _top(f) == "firmware_regression"})
            firmware.append({"firmware": fault.get("firmware"), "root_findings": roots})

    errors = [p["onset_error_s"] for p in per_fault if p["onset_error_s"] is not None]
    top1 = sum(p["top"] == p["cause"] for p in per_fault)
    return {
        "kind": "evaluation",
        "faults": len(per_fault),
        "detected": sum(p["detected"] for p in per_fault),
        "top1": top1,
        "top1_accuracy": _ratio(top1, len(per_fault)),
        "healthy_streams": len(healthy),
        "false_alarm_streams": len(false_alarms),
        "onset_error_s": {"n": len(errors),
                          "median": statistics.median(errors) if errors else None,
                          "max": max(errors) if errors else None},
        "by_cause": by_cause,
        "reference_faults": blame,
        "firmware_regressions": firmware,
        "per_fault": per_fault,
        "false_alarms": false_alarms,
    }


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 3) if b else None


def render(scores: Mapping[str, Any]) -> str:
    """The scores as a short text table for a terminal."""
    lines = [
        f"faults injected {scores['faults']}, detected {scores['detected']}, cause first "
        f"{scores['top1']} (top-1 accuracy {_pct(scores['top1_accuracy'])})",
        f"healthy streams {scores['healthy_streams']}, false alarms "
        f"{scores['false_alarm_streams']}",
        f"onset error: median {_secs(scores['onset_error_s']['median'])}, max "
        f"{_secs(scores['onset_error_s']['max'])} over {scores['onset_error_s']['n']} estimates",
        "",
        f"{'cause':<20} {'faults':>6} {'found':>6} {'recall':>7} {'said':>5} {'precision':>9}",
    ]
    for cause, row in scores["by_cause"].items():
        lines.append(f"{cause:<20} {row['faults']:>6} {row['found']:>6} "
                     f"{_pct(row['recall']):>7} {row['predicted']:>5} "
                     f"{_pct(row['precision']):>9}")
    lines.append("")
    for p in scores["per_fault"]:
        mark = "ok " if p["top"] == p["cause"] else ("~  " if p["detected"] else "MISS")
        lines.append(f"{mark:<4} {p['device']}/{p['sensor']}: injected {p['cause']}, said "
                     f"{p['top'] or '-'}; onset error {_secs(p['onset_error_s'])}, "
                     f"found after {_secs(p['delay_s'])}")
    for b in scores["reference_faults"]:
        lines.append(f"reference {b['reference']}/{b['sensor']}: blamed "
                     f"{'yes' if b['reference_blamed'] else 'NO'}; devices blaming it "
                     f"{b['devices_blaming_reference']}, blaming themselves "
                     f"{', '.join(b['devices_blaming_themselves']) or 'none'}")
    for fw in scores.get("firmware_regressions", ()):
        lines.append(f"firmware {fw['firmware']}: root finding "
                     f"{', '.join(fw['root_findings']) or 'NONE'}")
    for fa in scores["false_alarms"]:
        lines.append(f"FALSE ALARM {fa['device']}/{fa['sensor']}: {fa['findings']} failing "
                     f"findings ({', '.join(fa['causes'])})")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _secs(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 60:.0f} min" if x >= 120 else f"{x:.0f} s"
