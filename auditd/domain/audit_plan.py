"""What one audit run decides without reading anything: which streams to compare, and
what the comparisons mean once the core has judged them.

Pure: streams, the catalog and verdicts in, tasks and findings out. ``plan`` picks the
streams a reference serves; ``finding_for`` turns a verdict into CONTRACT.md's finding;
``add_out_of_range`` folds in the readings outside the plausible range; ``report_for`` is
the run's summary; ``baseline_window`` chooses the known-good window a drift is measured
against; and the reference groups (``group_tasks``, ``group_findings``) decide what a
group of devices says about their reference. The auditor (``auditd.app.auditor``) reads
the store and calls these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from auditd import core, text
from auditd.core.causes import REGISTRY
from auditd.domain import alerts
from auditd.domain.catalog import Catalog
from auditd.domain.onsets import JUDGED_SINCE
from auditd.domain.streams import StreamCounts, is_stream_verdict
from auditd.errors import UnitError
from auditd.model import (
    Cause,
    Finding,
    Reference,
    SensorSpec,
    Severity,
    StreamInfo,
    iso,
    severity_of_exceedance,
    worst_severity,
)
from auditd.units import converter, same_dimension_units

if TYPE_CHECKING:  # auditd.core's numerics load on the first audit, not at start-up
    from auditd.core.consensus import ConsensusDecision


@dataclass(frozen=True, slots=True)
class AuditTask:
    """Compare one field stream with the reference instrument co-located with it."""

    site: str
    device: str
    sensor: str
    spec: SensorSpec
    reference: str
    window_s: float
    trusted: bool = True
    """False: ``reference`` stands beside the device but is not trusted for (or does not
    report) this sensor; it only names the co-located group whose peer median judges it."""
    first_ts: float | None = None
    """The stream's first reading the store holds: a window that began before the stream
    existed is judged from there (a unit installed an hour ago did not drop out for the
    other 23 hours of its first day's window)."""

    def judged_from(self, now: float) -> float:
        """Where the window ``now`` closes is judged from: its start, or the stream's first
        reading where that is later."""
        start = now - self.window_s
        if self.first_ts is not None and start < self.first_ts < now:
            return self.first_ts
        return start


def plan(
    streams: Sequence[StreamInfo],
    catalog: Catalog,
    announced_models: Mapping[str, str],
    window_override_s: float | None = None,
) -> list[AuditTask]:
    """Every field stream that a reference serves, and whose reference reports that sensor;
    failing that, an untrusted task under the first reference that serves the device at all,
    so that its co-located peers can stand in (``Auditor._audit_peers``)."""
    reference_streams = {(s.site, s.device, s.sensor) for s in streams
                         if catalog.is_reference(s.device)}
    tasks = []
    for stream in streams:
        if catalog.is_reference(stream.device):
            continue
        model = catalog.model_for(stream.device, announced_models.get(stream.device))
        profile = catalog.profile(model) if model else None
        spec = profile.audited(stream.sensor) if profile else None
        if spec is None:
            continue  # not a sensor of the model, or one without a tolerance to audit
        window = window_override_s or spec.tolerance.window_s
        refs = catalog.references_for(stream.site, stream.device)
        trusted = [ref for ref in refs if stream.sensor in ref.sensors
                   and (stream.site, ref.id, stream.sensor) in reference_streams]
        if trusted or refs:
            tasks.append(AuditTask(stream.site, stream.device, stream.sensor, spec,
                                   (trusted or refs)[0].id, window, trusted=bool(trusted),
                                   first_ts=stream.first_ts))
    tasks.sort(key=lambda t: (t.site, t.device, t.sensor))
    return tasks


def finding_for(task: AuditTask, verdict: Any, start: float, end: float) -> Finding:
    """The verdict as CONTRACT.md's finding. A pass says whether it is evidence of health
    (``context.health``: ``confirmed``, or ``unconfirmed`` with the metrics whose interval
    reaches beyond tolerance and which way its estimates lean, ``context.leaning``), which
    is what resolves an alert (``domain.alerts``)."""
    context: dict[str, Any] = {}
    if verdict.status == "pass":
        tol = task.spec.tolerance
        doubtful = core.unconfirmed_checks(verdict.metrics, tol)
        context = ({alerts.HEALTH: alerts.UNCONFIRMED, alerts.UNCONFIRMED: list(doubtful),
                    alerts.LEANING: ("fault" if core.estimates_beyond(verdict.metrics, tol)
                                     else "health")}
                   if doubtful else {alerts.HEALTH: "confirmed"})
    return Finding(
        kind="calibration",
        site=task.site,
        device=task.device,
        sensor=task.sensor,
        reference=task.reference,
        status=verdict.status,
        severity=verdict.severity,
        window_start=start,
        window_end=end,
        unit=task.spec.unit,
        metrics={**verdict.metrics.as_dict(),
                 **(verdict.drift.as_dict() if verdict.drift is not None else {})},
        causes=tuple(verdict.causes),
        onset=verdict.onset,
        context={**context, **({"indeterminate": dict(verdict.indeterminate)}
                               if verdict.indeterminate else {}),
                 **({JUDGED_SINCE: iso(verdict.judged_since)}
                    if verdict.judged_since is not None else {})},
        action=verdict.action,
    )


OUT_OF_RANGE = "out_of_range"
OUT_OF_RANGE_MAX_SHARE = 0.01
"""Above this share of a window's readings outside the physically plausible range, the
stream fails on ``out_of_range`` whatever its comparison with the reference says: the
values that did pass are the survivors of a sensor that reports the impossible."""


OUT_OF_RANGE_NEAR_CONFIDENCE = 0.3
"""Readings just outside the range that a calibration error explains are evidence beside
that error, not a cause ahead of it."""


def add_out_of_range(finding: Finding, rejected: int, stored: int,
                     plausible: tuple[float, float] | None, near: int = 0) -> Finding:
    """Fold the window's readings outside the plausible range into the stream's verdict.

    ``rejected``: impossible values, beyond what a calibration error can reach
    (``core.checks.plausible_bounds``; the comparison leaves them out), and readings
    quarantined as out of range by stores written before they were kept. ``near``: kept
    readings outside the range but within that reach (in the comparison, as evidence of
    the offset or gain that put them there). ``stored``: the window's stored readings,
    both kinds included. Impossible values fail the stream above
    ``OUT_OF_RANGE_MAX_SHARE``; the near ones are only named beside the verdict's causes.
    """
    bounds = f" [{plausible[0]:g}, {plausible[1]:g}] {finding.unit}" if plausible else ""
    total = max(stored, rejected + near, 1)
    share, share_near = rejected / total, near / total
    said = []
    if near:
        said.append(f"{near} of {total} readings in the window ({share_near:.1%}) were "
                    f"outside the plausible range{bounds}, within what an offset or gain "
                    f"error reaches: kept, flagged and compared with the reference")
    if rejected:
        said.append(f"{rejected} of {total} readings ({share:.1%}) were outside the "
                    f"plausible range{bounds}, beyond what a calibration error explains "
                    f"(left out of the comparison while a minority of the window)")
    confidence = (min(0.5 + share * 5, 0.99) if rejected
                  else min(OUT_OF_RANGE_NEAR_CONFIDENCE, 0.1 + share_near))
    cause = Cause(OUT_OF_RANGE, confidence, "; ".join(said))
    if share < OUT_OF_RANGE_MAX_SHARE:
        return replace(finding, causes=(*finding.causes, cause))
    severity = finding.severity if finding.status == "fail" else "major"
    own_action = _own_action(OUT_OF_RANGE, finding) or ""
    if finding.status != "fail":
        return replace(finding, status="fail", severity=severity,
                       causes=(cause, *finding.causes), action=finding.action or own_action)
    if finding.causes and finding.causes[0].cause == REFERENCE_FAULT.name:
        # the reference's drift is not what sends impossible values (``blame_reference``):
        # the device's own fault, as severe as it is without the reference's beside it
        return replace(finding, causes=(cause, *finding.causes),
                       severity=worst_severity((finding.severity, "major")),
                       action=own_action or finding.action)
    return replace(finding, causes=(*finding.causes, cause),
                   action=finding.action or own_action)


def report_for(site: str, gateway: str, at: float, findings: Sequence[Finding],
               duration_s: float, counts: StreamCounts,
               cohorts: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The summary published on the report topic after each run. ``streams`` are the
    site's field streams (``domain.streams``): ``pass + fail + insufficient_data +
    waiting``; metadata findings appear only when they are news, cohorts below."""
    metadata = [f for f in findings if f.kind == "metadata"]
    findings = [f for f in findings if is_stream_verdict(f)]
    return {
        "kind": "audit_report",
        "site": site,
        "gateway": gateway,
        "at": iso(at),
        "duration_s": round(duration_s, 3),
        "streams": counts.field,
        "pass": counts.passing,
        "fail": counts.failing,
        "insufficient_data": counts.insufficient,
        "waiting": counts.waiting,
        "failing": [
            {"device": f.device, "sensor": f.sensor, "severity": f.severity,
             "cause": f.causes[0].cause if f.causes else None}
            for f in findings if f.status == "fail"
        ],
        "metadata": [
            {"device": f.device, "status": f.status, "anomalies": [c.cause for c in f.causes]}
            for f in metadata
        ],
        "cohorts": list(cohorts),
    }


def streams_by_status(verdicts: Mapping[tuple[str, str, str], int]) -> dict[str, int]:
    """Calibration verdicts by status (pass, fail, insufficient_data)."""
    out = {"pass": 0, "fail": 0, "insufficient_data": 0}
    for (kind, status, _), n in verdicts.items():
        if kind == "calibration":
            out[status] = out.get(status, 0) + n
    return out


# --------------------------------------------------------------------------- baseline, units


def baseline_window(passing: tuple[float, float] | None, calibrated: float | None,
                    window_s: float, start: float) -> tuple[float, float] | None:
    """The known-good window the current one (from ``start``) is compared with.

    The last passing audit's window (ending by ``start``, so the two share no data), unless
    the device was calibrated since that window began: a calibration resets what "good"
    looks like, so the window after it is the baseline, once it is complete before
    ``start``; until then there is none (a pre-calibration baseline would be stale)."""
    if calibrated is not None and (passing is None or calibrated > passing[0]):
        end = calibrated + window_s
        return (calibrated, end) if end <= start else None
    return passing


@lru_cache(maxsize=64)
def unit_confusions(canonical: str) -> tuple[tuple[str, float, float], ...] | None:
    """(name, scale, offset) for each common unit X of ``canonical``'s dimension, from pint:
    a device that sends numbers in X while declaring ``canonical`` reports
    ``converter(canonical -> X)`` of the true value. ``None`` (the core's fallback table)
    if pint does not know ``canonical``."""
    try:
        out = []
        for name in same_dimension_units(canonical):
            conv = converter(canonical, name)
            out.append((name, conv.scale, conv.offset))
        return tuple(out)
    except UnitError:
        return None


# --------------------------------------------------------------------------- reference groups

PEER_LABEL = "peer_consensus"
REFERENCE_FAULT = REGISTRY["reference_fault"]


@dataclass(frozen=True, slots=True)
class TaskGroup:
    """The streams of one sensor that one reference instrument serves at one site: the
    devices that can out-vote their reference, and each other."""

    site: str
    reference: str
    sensor: str
    tasks: tuple[AuditTask, ...]

    @property
    def trusted(self) -> bool:
        """The reference is trusted for this sensor (the same for every task of a group)."""
        return all(t.trusted for t in self.tasks)

    @property
    def window_s(self) -> float:
        """The longest window of the group: the common grid covers every device's own."""
        return max(t.window_s for t in self.tasks)

    @property
    def interval_s(self) -> float:
        """The coarsest reporting interval, so every device has a value in most bins."""
        return max(t.spec.interval_s for t in self.tasks)

    @property
    def bias_tolerance(self) -> float:
        """The strictest bias tolerance among the group's models."""
        return min(t.spec.tolerance.bias for t in self.tasks)

    @property
    def min_samples(self) -> int:
        return min(t.spec.tolerance.min_samples for t in self.tasks)


def group_tasks(tasks: Sequence[AuditTask]) -> list[TaskGroup]:
    """Tasks by (site, reference, sensor), in a stable order."""
    groups: dict[tuple[str, str, str], list[AuditTask]] = {}
    for task in tasks:
        groups.setdefault((task.site, task.reference, task.sensor), []).append(task)
    return [TaskGroup(*key, tuple(sorted(ts, key=lambda t: t.device)))
            for key, ts in sorted(groups.items())]


@dataclass(frozen=True, slots=True)
class EarlierStep:
    """A reference fault an earlier audit named with a common step: its time and the
    devices' level after it (device minus reference, ``ConsensusDecision.level``)."""

    onset: float
    deviation: float
    seen: bool = True
    """The step itself was the ground: seen beyond its noise in every member. False: the
    moment of a blame granted on other grounds (two models, the reference's own signals),
    which later audits date their carried blame from but may not blame on."""


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who the group's shared deviation is blamed on, and on what grounds."""

    decision: ConsensusDecision
    """The consensus, its ``reference_fault`` kept only where the evidence separates."""
    grounds: str = ""
    """Why the reference is blamed: evidence the devices cannot produce themselves."""
    undecided: Mapping[str, Any] | None = None
    """A shared deviation that cannot be told apart from the reference's: both candidates
    and why (the members' ``context.attribution``)."""
    step: EarlierStep | None = None
    """The common step the blame rests on, as first seen (``context.step`` of the
    reference's finding): later audits compare their shift with this step, never with a
    shift an audit carried on from it, so a carried blame cannot drift away from the step
    one window at a time."""


def attribute(decision: ConsensusDecision, variants: Mapping[str, str], reference: str,
              unit: str, own_signals: str = "", earlier: EarlierStep | None = None,
              tolerance: float = math.inf, recurring: float = math.nan) -> Attribution:
    """Blame only what the evidence can separate (issue 21).

    The devices moving together against their reference is a reference fault only with
    evidence they cannot produce themselves: deviating devices of more than one model or
    hardware revision (``variants``: device -> model, and revision when announced); a
    step at one moment in every device's residual while they agree with their own past
    (the consensus's onset, seen beyond its own noise in every member's difference,
    ``ConsensusDecision.stepped``: a chance excursion of their median is not; and unless
    the devices had moved the same way, beyond ``tolerance``, over the same hours of an
    earlier day: ``recurring``, ``consensus.recurring`` over the last
    ``consensus.RECURRENCE_DAYS``, NaN when unknown; a bias they share with the hour, such
    as an enclosure warming at midday, looks like a step inside one window on every sunny
    day, while a reference that steps leaves the same hours of the days before it as
    they were; or one an
    earlier audit saw, ``earlier``, that left the devices where they are now: their level
    (``ConsensusDecision.level``) within ``min(tolerance, |that level| / 2)`` of the level
    the step left them at, the agreement ``judge_reference`` asks of its members; a
    reference that stepped stays off by its step until repaired, while a bias the devices
    share with the weather, the hour or the concentration comes back at any size, so a
    shift that merely has the step's sign, or outgrows it, is no trace of it); or the
    reference's own
    signals (``own_signals``: an overdue certificate, its own stuck spell or dropout). A
    bias shared by devices of one model is a finding about that model: the reference is
    not blamed, and the members say that both are candidates."""
    if not decision.reference_fault:
        return Attribution(decision)
    kinds = sorted({variants.get(d, "") for d in decision.members} - {""})
    grounds = []
    step = None
    if len(kinds) >= 2:
        grounds.append(f"the deviating devices are of {len(kinds)} models or revisions "
                       f"({', '.join(kinds)})")
    daily = abs(recurring) > tolerance and recurring * decision.deviation > 0
    unseen = [d for d in decision.members if d not in decision.stepped]
    if decision.onset is not None and not daily and not unseen:
        grounds.append(f"they stepped together at {iso(decision.onset)} while agreeing with "
                       f"their own past")
        step = EarlierStep(decision.onset, decision.level)
    elif earlier is not None and earlier.seen and where_it_left(decision, earlier, tolerance):
        grounds.append(f"an earlier audit saw them step together at {iso(earlier.onset)} "
                       f"to {text.qty(earlier.deviation, unit, sign=True)}")
        decision = replace(decision, onset=earlier.onset)
        step = earlier
    if own_signals:
        grounds.append(f"{reference} itself: {own_signals}")
    if grounds:
        if step is None and decision.onset is not None:
            # blamed on other grounds: the moment is still the blame's, for later audits
            # to date their carried blame from, never to blame on
            step = EarlierStep(decision.onset, decision.level, seen=False)
        elif step is None and earlier is not None \
                and where_it_left(decision, earlier, tolerance):
            decision = replace(decision, onset=earlier.onset)
            step = earlier
        return Attribution(decision, "; ".join(grounds), step=step)
    model = kinds[0] if kinds else "one model"
    if decision.onset is not None and daily:
        no_step = (f"no new common step: they moved {text.qty(recurring, unit, sign=True)} "
                   f"over the same hours of an earlier day")
    elif decision.onset is not None:
        no_step = (f"no common step: their median moved at {iso(decision.onset)}, but "
                   f"{len(unseen)} of them ({', '.join(unseen)}) not beyond their own noise")
    else:
        no_step = "no common step"
    undecided = {
        "candidates": [f"model {model}", f"reference {reference}"],
        "evidence": (f"{len(decision.members)} of {decision.devices} devices served by "
                     f"{reference}, all {model}, moved "
                     f"{text.qty(decision.deviation, unit, sign=True)} against it together: "
                     f"a bias this model shares (a cohort) or a fault of {reference}; the "
                     f"data cannot tell them apart (no second model or revision agrees, "
                     f"{no_step}, nothing from {reference} itself)"),
        "members": list(decision.members)}
    return Attribution(replace(decision, reference_fault=False, onset=None, confidence=0.0),
                       undecided=undecided)


def where_it_left(decision: ConsensusDecision, earlier: EarlierStep, tolerance: float) -> bool:
    """The devices still sit where the earlier step left them (within the tolerance and
    half the step): the same fault, carried on."""
    return abs(decision.level - earlier.deviation) <= min(tolerance,
                                                          abs(earlier.deviation) / 2.0)


def reference_overdue(ref: Reference | None, now: float) -> bool:
    """Past its calibration due date: its certificate no longer vouches for it."""
    return ref is not None and ref.calibration_due is not None and ref.calibration_due < now


def distrust(ref: Reference | None, group: TaskGroup, decision: ConsensusDecision,
             now: float) -> str:
    """Why the reference cannot serve as the comparison ("" when it can)."""
    if decision.reference_fault:
        return (f"reference {group.reference} judged faulty: {len(decision.members)} of "
                f"{decision.devices} devices moved together against it")
    if ref is not None and reference_overdue(ref, now):
        return (f"reference {group.reference} is past its calibration due date "
                f"{iso(ref.calibration_due)}")
    return ""


def overdue_note(finding: Finding, ref: Reference | None, now: float) -> Finding:
    """Too few peers to replace an overdue reference: still judged against it, but the
    finding says the reference's certificate has expired."""
    if ref is None or not reference_overdue(ref, now):
        return finding
    return replace(finding, context={**finding.context, "comparison": "reference",
                                     "reference_calibration_due": iso(ref.calibration_due)})


def on_peers(finding: Finding, why: str, peers: int) -> Finding:
    """A finding judged against the leave-one-out peer median. ``reference`` is null: the
    field names an instrument, and no instrument stood in; ``context`` says what did."""
    return replace(finding, reference=None, context={
        **finding.context, "comparison": PEER_LABEL, "why": why, "peers": peers})


def group_findings(group: TaskGroup, findings: Mapping[str, Finding],
                   peers: Mapping[str, Finding], attribution: Attribution,
                   start: float, end: float, ref: Reference | None) -> list[Finding]:
    """The group's findings after the consensus: the reference's own finding when it is at
    fault, its members blamed on it, everyone else judged against their peers where the
    reference is distrusted and enough peers exist, and the reference's verdict otherwise.
    Members of a shared deviation that cannot be attributed keep their own verdict and
    say so (``context.attribution``: both candidates)."""
    decision = attribution.decision
    out: list[Finding] = []
    if decision.reference_fault:
        out.append(reference_finding(group, decision, start, end, attribution.grounds,
                                     attribution.step))
    undecided = attribution.undecided
    for task in group.tasks:
        finding = findings[task.device]
        if decision.reference_fault and task.device in decision.members:
            out.append(blame_reference(finding, decision, group.reference,
                                       peers.get(task.device)))
        elif task.device in peers:
            out.append(peers[task.device])
        else:
            finding = overdue_note(finding, ref, end)
            if undecided is not None and task.device in undecided["members"] \
                    and finding.status == "fail":
                finding = _undecided(finding, undecided)
            out.append(finding)
    return out


def _undecided(finding: Finding, undecided: Mapping[str, Any]) -> Finding:
    """A member of a shared deviation nobody can be blamed for: its own verdict stands,
    its context names both candidates, and its top cause's evidence says so (the ticket's
    runbook shows it to the technician)."""
    causes = finding.causes
    if causes:
        top = causes[0]
        causes = (replace(top, evidence=f"{top.evidence}; {undecided['evidence']}"),
                  *causes[1:])
    return replace(finding, causes=causes,
                   context={**finding.context, "attribution": dict(undecided)})


def _severity(deviation: float, tolerance: float) -> Severity:
    """On a stream's scale (``model.severity_of_exceedance``)."""
    return severity_of_exceedance(abs(deviation) / tolerance if tolerance > 0 else math.inf)


def reference_finding(group: TaskGroup, decision: ConsensusDecision, start: float,
                      end: float, grounds: str = "", step: EarlierStep | None = None
                      ) -> Finding:
    """The reference's own finding: the group's evidence against it, and why that
    evidence separates it from a fault the devices share (``attribute``)."""
    unit = group.tasks[0].spec.unit
    evidence = decision.evidence(group.reference, unit)
    cause = Cause("reference_fault", decision.confidence,
                  f"{evidence}; {grounds}" if grounds else evidence)
    return Finding(
        kind="calibration", site=group.site, device=group.reference, sensor=group.sensor,
        status="fail", severity=_severity(decision.deviation, group.bias_tolerance),
        window_start=start, window_end=end, unit=unit, reference=None,
        metrics={"devices": decision.devices, "deviating": len(decision.members),
                 "bias": round(-decision.deviation, 6), "spread": round(decision.spread, 6)},
        causes=(cause,), onset=decision.onset,
        context={"comparison": PEER_LABEL, "members": list(decision.members),
                 "others": list(decision.others),
                 **({"step": {"onset": step.onset, "deviation": round(step.deviation, 6),
                              "seen": step.seen}}
                    if step is not None else {})},
        action=REFERENCE_FAULT.action.format(
            reference=group.reference, deviation=f"{-decision.deviation:+.3g}", unit=unit,
            deviating=len(decision.members), devices=decision.devices))


def blame_reference(finding: Finding, decision: ConsensusDecision, reference: str,
                    peer: Finding | None) -> Finding:
    """A member's finding: ``reference_fault`` first; the offset or gain it would otherwise
    be blamed for is the reference's drift seen from the device, so those go; causes of its
    own (noise, lag, ...) stay after it. A cause the device's own readings show whatever
    the reference does (``CauseSpec.device_own``: frozen, impossible values, another
    unit) stays *before* it, with its own action: a technician still has a trip to make to this
    device (a thermometer sending impossible values beside a drifting reference was told
    only "recalibrate the reference, not the device"). The peers' verdict corroborates in
    ``context``."""
    cause = Cause("reference_fault", decision.confidence, decision.evidence(reference,
                                                                            finding.unit or ""))
    kept = tuple(c for c in finding.causes if c.cause != REFERENCE_FAULT.name
                 and c.cause not in REFERENCE_FAULT.explains_away)
    first = tuple(c for c in kept if _device_own(c.cause))
    own = tuple(c for c in kept if not _device_own(c.cause))
    context: dict[str, Any] = {**finding.context, "comparison": "reference",
                               "reference_fault": reference}
    if peer is not None:
        context["peer_consensus"] = {"status": peer.status, "peers": peer.context.get("peers"),
                                     "causes": [c.cause for c in peer.causes]}
    action = _own_action(first[0].cause, finding) if first else None
    return replace(finding, status="fail", severity=finding.severity
                   if finding.severity != "none" else "minor", causes=(*first, cause, *own),
                   onset=decision.onset if decision.onset is not None else finding.onset,
                   context=context,
                   action=action or REFERENCE_FAULT.member_action.format(reference=reference))


def _device_own(cause: str) -> bool:
    entry = REGISTRY.get(cause)
    return entry is not None and entry.device_own


def _own_action(cause: str, finding: Finding) -> str | None:
    """The registry's action for a device's own cause, filled from the finding (the
    figures those templates name: sensor, unit, coverage); None if it names others."""
    coverage = finding.metrics.get("device_coverage")
    try:
        return REGISTRY[cause].action.format(
            sensor=finding.sensor, unit=finding.unit or "",
            coverage=text.percent(coverage) if isinstance(coverage, int | float) else "part")
    except (KeyError, IndexError):
        return None
