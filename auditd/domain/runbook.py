"""The runbook a ticket carries: what is probably wrong, why we think so, what to do.

Written for the technician who drives to the site, not for a statistician: each probable
cause, best first, with the evidence sentence the audit wrote and the concrete steps that
fix it (each cause's ``steps`` in the registry, ``core.causes``, made specific with the
device's figures). The finding's own ``action`` (``core/actions.py``'s sentence for the top cause)
leads the top cause's steps.

Pure: a finding in, a :class:`Runbook` out, so a ticket built now and one rebuilt from the
store later say the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from auditd.core.causes import FALLBACK_STEP
from auditd.core.causes import spec as cause_spec
from auditd.model import Finding, iso

METRICS_SHOWN = ("n", "bias", "gain", "offset", "rmse", "r2", "lag_s", "devices", "deviating",
                 "spread")


@dataclass(frozen=True, slots=True)
class Step:
    cause: str
    confidence: float | None
    evidence: str
    actions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"cause": self.cause, "confidence": self.confidence, "evidence": self.evidence,
                "actions": list(self.actions)}


@dataclass(frozen=True, slots=True)
class Runbook:
    title: str
    summary: str
    causes: tuple[Step, ...]
    evidence: Mapping[str, Any]
    members: tuple[Mapping[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "summary": self.summary,
                "causes": [c.to_json() for c in self.causes], "evidence": dict(self.evidence),
                "members": [dict(m) for m in self.members], "text": self.text()}

    def text(self) -> str:
        """The runbook as plain text, for a ticket system's description field."""
        lines = [self.title, "", self.summary, ""]
        for i, step in enumerate(self.causes, start=1):
            conf = f" (confidence {step.confidence:.0%})" if step.confidence is not None else ""
            lines.append(f"{i}. Probable cause: {step.cause}{conf}")
            lines.append(f"   Evidence: {step.evidence}")
            lines.extend(f"   - {action}" for action in step.actions)
        if self.members:
            lines += ["", f"Devices affected ({len(self.members)}):"]
            lines.extend(f"   - {m.get('device')} {m.get('sensor') or ''}".rstrip()
                         for m in self.members)
        return "\n".join(lines) + "\n"


def _num(value: Any, unit: str = "", sign: bool = False) -> str:
    if not isinstance(value, int | float):
        return "unknown"
    text = f"{value:+.3g}" if sign else f"{value:.4g}"
    return f"{text} {unit}".rstrip()


def _firmware(context: Mapping[str, Any]) -> str | None:
    """The firmware version a finding's context names: a regression's cohort (the root's
    ``cohort``, a member's ``firmware_regression``), else the change before the onset."""
    for key, field in (("cohort", "version"), ("firmware_regression", "version"),
                       ("firmware_change", "to")):
        part = context.get(key)
        if isinstance(part, Mapping) and isinstance(part.get(field), str):
            return str(part[field])
    firmware = context.get("firmware")
    return firmware if isinstance(firmware, str) else None


def _fields(finding: Finding, evidence: str) -> dict[str, str]:
    """The values the step templates may quote, always all present."""
    context, metrics = finding.context, finding.metrics
    unit = finding.unit or ""
    firmware = _firmware(context)
    named = context.get("reference_fault")
    reference = named if isinstance(named, str) else None
    if reference is None and any(c.cause == "reference_fault" for c in finding.causes):
        reference = finding.reference or finding.device
    lag = metrics.get("lag_s")
    return {
        "device": finding.device,
        "sensor": finding.sensor or "device",
        "unit": unit or "its canonical unit",
        "reference": str(reference or finding.reference or "the reference instrument"),
        "bias": _num(metrics.get("bias"), unit, sign=True),
        "gain": _num(metrics.get("gain")),
        "lag": f"{lag:+.0f} s" if isinstance(lag, int | float) else "unknown",
        "firmware": firmware or "(the version named in the evidence)",
        "firmware_text": f" (now {firmware})" if firmware else "",
        "evidence": evidence,
    }


def steps_for(cause: str, finding: Finding, evidence: str) -> tuple[str, ...]:
    """The registry's steps for ``cause`` (``core.causes``), with the finding's figures."""
    fields = _fields(finding, evidence)
    entry = cause_spec(cause)
    templates = entry.steps if entry is not None and entry.steps else (FALLBACK_STEP,)
    return tuple(template.format_map(fields) for template in templates)


def build(finding: Finding, members: Sequence[Mapping[str, Any]] = ()) -> Runbook:
    """The runbook for a finding, and the members it stands for. Its figures are the
    published finding's (confidences to three decimals, times in RFC 3339)."""
    own = finding.action.strip()
    steps = []
    for index, cause in enumerate(finding.causes):
        actions = steps_for(cause.cause, finding, cause.evidence)
        if index == 0 and own and own not in actions:
            actions = (own, *actions)
        steps.append(Step(cause.cause, round(cause.confidence, 3), cause.evidence, actions))
    device, sensor = finding.device, finding.sensor
    top = steps[0].cause if steps else "no recognised cause"
    title = (f"{device} {sensor or ''}: {top} ({finding.severity})").replace("  ", " ")
    if members:
        title += f", {len(members)} devices affected"
    summary = finding.action or (
        f"{device} {sensor or ''} failed its audit without a recognised cause: review it by "
        "hand.")
    metrics = finding.metrics
    facts = {
        "window": {"start": iso(finding.window_start), "end": iso(finding.window_end)},
        "onset": iso(finding.onset),
        "reference": finding.reference,
        "unit": finding.unit,
        "metrics": {k: metrics[k] for k in METRICS_SHOWN if k in metrics},
    }
    return Runbook(title, summary, tuple(steps), facts, tuple(members))
