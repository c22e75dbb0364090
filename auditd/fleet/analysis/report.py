"""The fleet report: cohorts, reference health, drift rates and intervals, the due list and
the open findings, from one ``FleetFacts``. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auditd.core.cohorts import ALPHA, Correction
from auditd.fleet.analysis.cohorts import FleetCohort, fleet_cohorts
from auditd.fleet.analysis.drift import DriftRate, drift_rates
from auditd.fleet.analysis.due import DueItem, due_list
from auditd.fleet.analysis.facts import FleetFacts, Verdict
from auditd.fleet.analysis.references import (
    ReferenceHealth,
    drifting_keys,
    reference_health,
    unreliable,
)


@dataclass(frozen=True, slots=True)
class OpenFinding:
    """A failing latest finding, with whether its verdict can be trusted."""

    verdict: Verdict
    unreliable: bool
    finding: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ReportOptions:
    alpha: float = ALPHA
    correction: Correction = "holm"
    horizon_days: float = 30.0


DEFAULT_OPTIONS = ReportOptions()


@dataclass(frozen=True, slots=True)
class FleetReport:
    generated_at: float
    options: ReportOptions
    gateways: int
    sites: int
    devices: int
    cohorts: tuple[FleetCohort, ...]
    references: tuple[ReferenceHealth, ...]
    drift: tuple[DriftRate, ...]
    due: tuple[DueItem, ...]
    open_findings: tuple[OpenFinding, ...]


def build_report(facts: FleetFacts, options: ReportOptions = DEFAULT_OPTIONS) -> FleetReport:
    health = reference_health(facts.verdicts)
    drifting = drifting_keys(health)
    cohorts = fleet_cohorts(facts.verdicts, facts.devices, facts.firmware_seen, drifting,
                            alpha=options.alpha, correction=options.correction)
    excluded = {(v.site, v.device, v.sensor or "") for v in facts.verdicts
                if unreliable(v, drifting)}
    excluded |= {(site, device, c.sensor) for c in cohorts for site, device in c.members}
    rates = drift_rates(facts.drifts, facts.devices, facts.profiles, excluded)
    intervals: dict[str, float] = {}
    for model, profile in facts.profiles.items():
        if profile.calibration_interval_days:
            intervals[model] = profile.calibration_interval_days
    for rate in rates:  # the shortest recommendation of a model's sensors, where measured
        if rate.recommended_days is not None:
            intervals[rate.model] = min(rate.recommended_days,
                                        intervals.get(rate.model, rate.recommended_days))
    due = due_list(facts.devices, facts.verdicts, facts.tickets, intervals, facts.now,
                   drifting, options.horizon_days)
    open_findings = tuple(
        OpenFinding(v, unreliable(v, drifting),
                    facts.findings.get((v.site, v.device, v.kind, v.sensor or ""), {}))
        for v in sorted(facts.verdicts, key=lambda v: (v.site, v.device, v.sensor or ""))
        if v.status == "fail")
    return FleetReport(
        facts.now, options, len({(d.site, d.gateway) for d in facts.devices}
                                | {(v.site, v.gateway) for v in facts.verdicts}),
        len({d.site for d in facts.devices} | {v.site for v in facts.verdicts}),
        len(facts.devices), tuple(cohorts), tuple(health), tuple(rates), tuple(due),
        open_findings)
