"""The fleet report as JSON (CONTRACT.md's ``cohorts`` shape, and the rest) and as text."""

from __future__ import annotations

from typing import Any

from auditd.fleet.analysis.cohorts import FleetCohort
from auditd.fleet.analysis.drift import DriftRate
from auditd.fleet.analysis.due import DueItem, OpenTicket
from auditd.fleet.analysis.references import ReferenceHealth
from auditd.fleet.analysis.report import FleetReport, OpenFinding
from auditd.model import iso


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else float(f"{x:.{digits}g}")


def cohort_json(c: FleetCohort) -> dict[str, Any]:
    """CONTRACT.md: model, firmware, sensor, cause, members (device ids), sites; and how it
    was decided."""
    return {
        "model": c.model, "firmware": c.firmware, "sensor": c.sensor, "cause": c.cause,
        "members": [device for _, device in c.members], "sites": list(c.sites),
        "attribute": c.attribute, "value": c.value,
        "member_sites": [{"site": s, "device": d} for s, d in c.members],
        "healthy": [{"site": s, "device": d} for s, d in c.healthy],
        "failing": len(c.members), "size": len(c.members) + len(c.healthy),
        "rest_failing": c.rest_failing, "rest_size": c.rest_size,
        "p": _round(c.p), "p_adjusted": _round(c.p_adjusted), "correction": c.correction,
        "firmware_regression": c.regression,
        "firmware_change": None if c.change is None else {
            "from": c.change.from_version, "to": c.change.to_version,
            "first": iso(c.change.first), "last": iso(c.change.last),
            "following": c.change.following},
    }


def reference_json(r: ReferenceHealth) -> dict[str, Any]:
    return {"site": r.site, "gateway": r.gateway, "reference": r.reference,
            "sensor": r.sensor, "state": r.state, "devices": list(r.devices),
            "unreliable": list(r.unreliable), "bias": _round(r.bias),
            "onset": iso(r.onset), "evidence": r.evidence}


def drift_json(d: DriftRate) -> dict[str, Any]:
    return {"model": d.model, "sensor": d.sensor, "unit": d.unit, "devices": d.devices,
            "rate_per_month": _round(d.rate_per_month),
            "interval_95": [_round(d.low), _round(d.high)],
            "spread_per_month": _round(d.spread_per_month),
            "measured_over_days": _round(d.span_days, 3), "tolerance": d.tolerance,
            "recommended_interval_days": None if d.recommended_days is None
            else round(d.recommended_days),
            "profile_interval_days": d.profile_days,
            "no_recommendation": d.why or None}


def _ticket_json(t: OpenTicket) -> dict[str, Any]:
    return {"sensor": t.sensor, "cause": t.cause, "severity": t.severity,
            "opened_at": iso(t.opened_at),
            "filed_by": [{"gateway": g, "ticket_id": i} for g, i in t.filed_by]}


def due_json(item: DueItem, now: float) -> dict[str, Any]:
    return {"site": item.site, "device": item.device, "model": item.model,
            "due": iso(item.due_at), "overdue": item.overdue(now),
            "reasons": list(item.reasons),
            "tickets": [_ticket_json(t) for t in item.tickets]}


def open_finding_json(o: OpenFinding) -> dict[str, Any]:
    v = o.verdict
    return {"site": v.site, "gateway": v.gateway, "device": v.device, "sensor": v.sensor,
            "kind": v.kind, "severity": v.severity, "causes": list(v.causes),
            "reference": v.reference, "unreliable": o.unreliable,
            "window_end": iso(v.window_end), "finding": dict(o.finding)}


def report_json(report: FleetReport) -> dict[str, Any]:
    return {
        "kind": "fleet_report",
        "generated_at": iso(report.generated_at),
        "alpha": report.options.alpha, "correction": report.options.correction,
        "gateways": report.gateways, "sites": report.sites, "devices": report.devices,
        "cohorts": [cohort_json(c) for c in report.cohorts],
        "references": [reference_json(r) for r in report.references],
        "drift": [drift_json(d) for d in report.drift],
        "due": [due_json(i, report.generated_at) for i in report.due],
        "open_findings": [open_finding_json(o) for o in report.open_findings],
    }


def report_text(report: FleetReport) -> str:
    """What ``fleet report`` prints: the headline of each section."""
    lines = [f"fleet: {report.gateways} gateways at {report.sites} sites, "
             f"{report.devices} devices"]
    lines.append(f"cohorts failing across sites: {len(report.cohorts)}")
    for c in report.cohorts:
        change = (f", after {c.change.from_version} -> {c.change.to_version}"
                  if c.change and c.change.from_version else "")
        lines.append(f"  {c.model} {c.attribute} {c.value}: {c.sensor} {c.cause} on "
                     f"{len(c.members)} devices at {len(c.sites)} sites "
                     f"(p = {c.p_adjusted:.2g} after {c.correction}){change}")
    drifting = [r for r in report.references if r.state == "drifting"]
    lines.append(f"references drifting: {len(drifting)}")
    lines.extend(f"  {r.site}/{r.reference} {r.sensor}: {len(r.unreliable)} devices' "
                 f"verdicts unreliable" for r in drifting)
    lines.append("drift per model:")
    for d in report.drift:
        rec = (f"recommend {d.recommended_days:.0f} d" if d.recommended_days is not None
               else f"no recommendation ({d.why})")
        lines.append(f"  {d.model} {d.sensor}: {d.rate_per_month:+.3g} {d.unit or ''}/month "
                     f"[{d.low:+.3g}, {d.high:+.3g}] over {d.devices} devices; {rec}; "
                     f"profile {d.profile_days or '-'} d")
    overdue = sum(1 for i in report.due if i.overdue(report.generated_at))
    lines.append(f"due within {report.options.horizon_days:g} days: {len(report.due)} "
                 f"({overdue} now)")
    return "\n".join(lines)
