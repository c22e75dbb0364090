"""One audit run: plan which streams to compare, read their windows, let the core judge.

``plan`` is pure (streams + catalog -> tasks). ``Auditor.run`` is the thin adapter that
reads the store, calls ``auditd.core`` and writes findings and their outbox messages in one
transaction. The daemon's scheduler and ``replay``'s recording clock both call
``Auditor.run(now)``; nothing here knows which clock it is.

``auditd.core`` (numpy + scipy) is imported on the first audit, not at start-up, so the
ingest path of a gateway never pays scipy's memory.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from auditd import logs
from auditd.app.alerting import AlertSettings, planner_for
from auditd.config import AuditConfig, TopicsConfig
from auditd.core.causes import REGISTRY
from auditd.domain import run_context
from auditd.domain.catalog import Catalog
from auditd.domain.metadata import (
    DEFAULT_POLICY,
    DeviceHistory,
    FleetView,
    MetadataPolicy,
    MetaVersion,
)
from auditd.errors import UnitError
from auditd.model import Cause, Finding, Reference, SensorSpec, Severity, iso
from auditd.store import OutboxMessage, Store, StreamInfo
from auditd.units import converter, same_dimension_units

log = logs.get("auditd.app.auditor")

if TYPE_CHECKING:  # scipy is imported on the first audit, not at start-up
    from auditd.core import Series
    from auditd.core.consensus import ConsensusDecision
    from auditd.core.series import FloatArray


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


@dataclass(frozen=True, slots=True)
class AuditRun:
    at: float
    findings: tuple[Finding, ...]
    report: Mapping[str, Any]
    duration_s: float
    alerts: Any = None
    """``alerts.Changes`` of this run, when the auditor has alerting on."""


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
        spec = profile.sensors.get(stream.sensor) if profile else None
        if spec is None:
            continue
        window = window_override_s or spec.tolerance.window_s
        refs = catalog.references_for(stream.site, stream.device)
        trusted = [ref for ref in refs if stream.sensor in ref.sensors
                   and (stream.site, ref.id, stream.sensor) in reference_streams]
        if trusted or refs:
            tasks.append(AuditTask(stream.site, stream.device, stream.sensor, spec,
                                   (trusted or refs)[0].id, window, trusted=bool(trusted)))
    tasks.sort(key=lambda t: (t.site, t.device, t.sensor))
    return tasks


def finding_for(task: AuditTask, verdict: Any, start: float, end: float) -> Finding:
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
        action=verdict.action,
    )


OUT_OF_RANGE = "out_of_range"
OUT_OF_RANGE_MAX_SHARE = 0.01
"""Above this share of a window's readings outside the physically plausible range, the
stream fails on ``out_of_range`` whatever its comparison with the reference says: the
values that did pass are the survivors of a sensor that reports the impossible."""


def add_out_of_range(finding: Finding, rejected: int, stored: int,
                     plausible: tuple[float, float] | None) -> Finding:
    """Fold the readings ingest quarantined as out of range into the stream's verdict.

    Validation drops impossible values before they reach the store, so the comparison with
    the reference never sees them; the cause lives here, where both counts are known.
    """
    share = rejected / max(rejected + stored, 1)
    bounds = f" [{plausible[0]:g}, {plausible[1]:g}] {finding.unit}" if plausible else ""
    cause = Cause(
        OUT_OF_RANGE, min(0.5 + share * 5, 0.99),
        f"{rejected} of {rejected + stored} readings in the window ({share:.1%}) were outside"
        f" the plausible range{bounds} and were quarantined")
    if share < OUT_OF_RANGE_MAX_SHARE:
        return replace(finding, causes=(*finding.causes, cause))
    severity = finding.severity if finding.status == "fail" else "major"
    action = finding.action or ("Inspect the sensor and its wiring: it reports physically "
                                "impossible values; replace it if they persist.")
    return replace(finding, status="fail", severity=severity,
                   causes=(cause, *finding.causes) if finding.status != "fail"
                   else (*finding.causes, cause), action=action)


def report_for(site: str, gateway: str, at: float, findings: Sequence[Finding],
               duration_s: float, cohorts: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The summary published on the report topic after each run. Counts are of calibration
    findings (one per stream); metadata findings appear only when they are news."""
    metadata = [f for f in findings if f.kind == "metadata"]
    findings = [f for f in findings if f.kind != "metadata"
                and f.context.get("comparison") != run_context.COHORT]  # cohorts: listed below
    by_status = Counter(f.status for f in findings)
    return {
        "kind": "audit_report",
        "site": site,
        "gateway": gateway,
        "at": iso(at),
        "duration_s": round(duration_s, 3),
        "streams": len(findings),
        "pass": by_status.get("pass", 0),
        "fail": by_status.get("fail", 0),
        "insufficient_data": by_status.get("insufficient_data", 0),
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


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


class Auditor:
    def __init__(self, store: Store, catalog: Catalog, topics: TopicsConfig, *, gateway: str,
                 window_override_s: float | None = None,
                 policy: MetadataPolicy = DEFAULT_POLICY, cohort_alpha: float = 0.05,
                 alerting: AlertSettings | None = None) -> None:
        self._store = store
        self._alerting = alerting
        self._catalog = catalog
        self._topics = topics
        self._gateway = gateway
        self._window_override_s = window_override_s
        self._policy = policy
        self._cohort_alpha = cohort_alpha
        self.last_run: AuditRun | None = None
        self._next_catalog: Catalog | None = None

    def reload(self, catalog: Catalog) -> None:
        """Takes effect at the next run: one run never mixes two configurations."""
        self._next_catalog = catalog

    def run(self, now: float) -> AuditRun:
        if self._next_catalog is not None:
            self._catalog, self._next_catalog = self._next_catalog, None
        started = time.perf_counter()
        announced = {device: str(meta["model"]) for device, meta in
                     self._store.latest_meta().items() if isinstance(meta.get("model"), str)}
        tasks = plan(self._store.streams(), self._catalog, announced, self._window_override_s)
        findings = []
        for group in group_tasks(tasks):
            findings.extend(self._audit_group(group, now))
        findings = [self._with_out_of_range(f, announced) for f in findings]
        findings, cohorts = self._fleet_findings(findings, announced, now)
        findings.sort(key=lambda f: (f.site, f.device, f.sensor or "", f.kind))
        duration = time.perf_counter() - started
        outbox = [OutboxMessage(self._topics.finding(f.site, self._gateway, f.device,
                                                     f.sensor or "-"),
                                _dumps(f.to_json()), qos=1, retain=True) for f in findings]
        report = {}
        for site in sorted({t.site for t in tasks}):
            site_findings = [f for f in findings if f.site == site]
            report = report_for(site, self._gateway, now, site_findings, duration,
                                [c for c in cohorts if site in c["sites"]])
            outbox.append(OutboxMessage(self._topics.report(site, self._gateway),
                                        _dumps(report), qos=1, retain=False))
        planner = (planner_for(self._alerting, self._catalog, announced, findings, now)
                   if self._alerting is not None else None)
        changes = self._store.save_findings(findings, outbox, now=now, alerts=planner)
        run = AuditRun(now, tuple(findings), report, duration, changes)
        self.last_run = run
        return run

    def _fleet_findings(self, findings: list[Finding], announced: Mapping[str, str],
                        now: float) -> tuple[list[Finding], list[dict[str, Any]]]:
        """The run's findings with what only the whole fleet shows: the changes before each
        deviation, the cohorts failing together, and the metadata anomalies that are news.

        A defect here must not cost the fleet its calibration verdicts: if this step fails,
        the run's findings go out without it and the error is logged with its traceback."""
        try:
            histories = read_histories(self._store, self._catalog, announced, now,
                                       self._policy)
            models = {device: self._catalog.model_for(device, announced.get(device))
                      for device in histories}
            with_changes = run_context.with_context(findings, histories, self._policy)
            roots = [f for f in self._store.latest_findings(kind="calibration")
                     if f.get("context", {}).get("comparison") == run_context.COHORT]
            outcome = run_context.apply_cohorts(with_changes, histories, models, self._cohort_alpha,
                                          self._policy, now=now, previous_roots=roots)
            previous = {f["device"]: f for f in self._store.latest_findings(kind="metadata")}
            firmware = FleetView.of((models.get(d), h.latest.get("firmware"))
                                    for d, h in histories.items()
                                    if not self._catalog.is_reference(d))
            metadata = run_context.metadata_findings(histories, self._catalog, models, previous,
                                               now, firmware, self._policy)
        except Exception:
            log.exception("audit.fleet_step_failed")
            return findings, []
        return [*outcome.findings, *metadata], list(outcome.cohorts)

    def _with_out_of_range(self, finding: Finding, announced: Mapping[str, str]) -> Finding:
        if finding.sensor is None or finding.device == finding.reference:
            return finding
        rejected = self._store.rejected_between(finding.device, finding.sensor,
                                                finding.window_start, finding.window_end)
        out = rejected.get(OUT_OF_RANGE, 0)
        if not out:
            return finding
        stored = self._store.count_between(finding.site, finding.device, finding.sensor,
                                           finding.window_start, finding.window_end)
        model = self._catalog.model_for(finding.device, announced.get(finding.device))
        profile = self._catalog.profile(model) if model else None
        spec = profile.sensors.get(finding.sensor) if profile else None
        return add_out_of_range(finding, out, stored, spec.range if spec else None)

    # ----------------------------------------------------------------- one reference group

    def _audit_group(self, group: TaskGroup, now: float) -> list[Finding]:
        """Judge every stream of ``group`` against the reference, ask the group whether the
        reference itself is at fault, and re-judge against the peers where it cannot be
        trusted (see ``group_findings``)."""
        from auditd import core  # scipy and friends: only once an audit needs them
        from auditd.core import consensus

        if not group.trusted:
            return self._audit_peers(group, now)
        start = now - group.window_s
        reference = self._read(group.site, group.reference, group.sensor, start, now)
        devices = {t.device: self._read(t.site, t.device, t.sensor, start, now)
                   for t in group.tasks}
        findings = {t.device: finding_for(t, self._judge(t, devices[t.device], reference, now,
                                                         baseline=True),
                                          now - t.window_s, now) for t in group.tasks}
        if len(group.tasks) < consensus.MIN_DEVICES:
            return [overdue_note(f, self._catalog.reference(group.reference), now)
                    for f in findings.values()]
        grid = consensus.common_grid(devices, reference, group.interval_s, start, now)
        decision = consensus.judge_reference(grid.t, grid.diffs(), group.bias_tolerance,
                                             min_bins=group.min_samples)
        why = distrust(self._catalog.reference(group.reference), group, decision, now)
        peers: dict[str, Finding] = {}
        for task in group.tasks if why else ():
            built = consensus.peer_consensus(grid.values, task.device)
            if built is not None:
                verdict = self._judge(task, devices[task.device], core.Series(grid.t, built[0]),
                                      now)
                peers[task.device] = on_peers(finding_for(task, verdict, now - task.window_s,
                                                          now), why, built[1])
        return group_findings(group, findings, peers, decision, start, now,
                              self._catalog.reference(group.reference))

    def _audit_peers(self, group: TaskGroup, now: float) -> list[Finding]:
        """No trusted reference for this sensor: each device against its peers' median, or
        no finding at all where fewer than three peers report (as before: nothing to judge
        against is not a verdict)."""
        from auditd import core
        from auditd.core import consensus

        start = now - group.window_s
        devices = {t.device: self._read(t.site, t.device, t.sensor, start, now)
                   for t in group.tasks}
        grid = consensus.common_grid(devices, core.Series.of([], []), group.interval_s, start,
                                     now)
        why = f"reference {group.reference} is not trusted for {group.sensor} or does not report it"
        out = []
        for task in group.tasks:
            built = consensus.peer_consensus(grid.values, task.device)
            if built is not None:
                verdict = self._judge(task, devices[task.device], core.Series(grid.t, built[0]),
                                      now)
                out.append(on_peers(finding_for(task, verdict, now - task.window_s, now), why,
                                    built[1]))
        return out

    def _read(self, site: str, device: str, sensor: str, start: float, end: float) -> Series:
        """A window as the audit judges it: through the corrections recorded as calibration
        events of the device (``auditd.calibration``; the store keeps the raw readings)."""
        from auditd import core
        from auditd.domain.calibration import apply, corrections

        ts, values = self._store.read_window(site, device, sensor, start, end)
        found = corrections(self._store.events(device), sensor)
        return core.Series(ts, apply(ts, values, found) if found else values)

    def _judge(self, task: AuditTask, device: Series, comparison: Series, now: float, *,
               baseline: bool = False) -> Any:
        """The one place a stream is judged: against its reference or its peers' median.

        ``baseline``: also compare the residuals with a known-good window's (only against
        the reference: residuals against the peers' median are a different quantity)."""
        from auditd import core

        start = now - task.window_s
        return core.evaluate_stream(
            device, comparison, task.spec, start, now, units=unit_confusions(task.spec.unit),
            baseline_residuals=self._baseline_residuals(task, start) if baseline else None,
            reference_uncertainty=self._uncertainty(task) if baseline else None)

    def _uncertainty(self, task: AuditTask) -> float | None:
        """The reference's stated uncertainty for the sensor: it makes the gain a Deming fit."""
        reference = self._catalog.reference(task.reference)
        return reference.uncertainty.get(task.sensor) if reference else None

    def _baseline_residuals(self, task: AuditTask, start: float) -> FloatArray | None:
        """The device - reference residuals of the stream's baseline window, if it has one."""
        from auditd import core

        window = baseline_window(
            self._store.last_passing_window("calibration", task.device, task.sensor,
                                            before=start),
            last_calibration(self._store, task.device, start), task.window_s, start)
        if window is None:
            return None
        b0, b1 = window
        return core.baseline_residuals(self._read(task.site, task.device, task.sensor, b0, b1),
                                       self._read(task.site, task.reference, task.sensor, b0,
                                                  b1),
                                       task.spec.interval_s, b0, b1)


# --------------------------------------------------------------------------- histories


def metadata_policy(cfg: AuditConfig) -> MetadataPolicy:
    """The metadata checks' thresholds from the daemon config's [audit] table."""
    return MetadataPolicy(silent_after_intervals=cfg.silent_after_intervals,
                          silent_min_s=cfg.silent_min_s,
                          context_lookback_s=cfg.context_lookback_s)


def read_histories(store: Store, catalog: Catalog, announced: Mapping[str, str], now: float,
                   policy: MetadataPolicy) -> dict[str, DeviceHistory]:
    """Every device the store knows of (by its meta, events, telemetry or quarantined
    telemetry), with what ``auditd.metadata`` needs to judge it."""
    streams: dict[str, list[StreamInfo]] = {}
    for stream in store.streams():
        streams.setdefault(stream.device, []).append(stream)
    events: dict[str, list[Any]] = {}
    for event in store.events():
        events.setdefault(event.device, []).append(event)
    since = now - policy.context_lookback_s
    unknown_sensors = store.rejected_devices("sensor_unknown", since)
    unknown_model = store.rejected_devices("unknown_device_model", since)
    latest = store.latest_meta()
    devices = sorted(set(streams) | set(latest) | set(events) | set(unknown_model))
    out = {}
    for device in devices:
        own = streams.get(device, [])
        model = catalog.model_for(device, announced.get(device))
        profile = catalog.profile(model) if model else None
        intervals = [profile.sensors[s.sensor].interval_s for s in own
                     if profile is not None and s.sensor in profile.sensors]
        if not intervals and profile is not None:  # announced itself, never reported
            intervals = [spec.interval_s for spec in profile.sensors.values()]
        versions = tuple(MetaVersion.from_view(v) for v in store.meta_history(device)) \
            if device in latest else ()
        firsts = [s.first_ts for s in own if s.first_ts is not None]
        lasts = [s.last_ts for s in own if s.last_ts is not None]
        site = (versions[-1].site if versions else own[0].site if own
                else events[device][-1].site if device in events
                else unknown_model[device].site if device in unknown_model else "")
        rejected = unknown_sensors.get(device)
        out[device] = DeviceHistory(
            device=device, site=site, versions=versions,
            events=tuple(events.get(device, ())),
            first_telemetry=min(firsts, default=None), last_telemetry=max(lasts, default=None),
            interval_s=min(intervals, default=None),
            unknown_sensors=rejected.sensors if rejected is not None else (),
            model_rejected=device in unknown_model)
    return out


# --------------------------------------------------------------------------- baseline, units


def last_calibration(store: Store, device: str, before: float) -> float | None:
    """Time of the device's latest ``calibration`` event before ``before``."""
    times = [e.ts for e in store.events(device) if e.type == "calibration" and e.ts < before]
    return max(times, default=None)


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
                   peers: Mapping[str, Finding], decision: ConsensusDecision,
                   start: float, end: float, ref: Reference | None) -> list[Finding]:
    """The group's findings after the consensus: the reference's own finding when it is at
    fault, its members blamed on it, everyone else judged against their peers where the
    reference is distrusted and enough peers exist, and the reference's verdict otherwise."""
    out: list[Finding] = []
    if decision.reference_fault:
        out.append(reference_finding(group, decision, start, end))
    for task in group.tasks:
        finding = findings[task.device]
        if decision.reference_fault and task.device in decision.members:
            out.append(blame_reference(finding, decision, group.reference,
                                       peers.get(task.device)))
        elif task.device in peers:
            out.append(peers[task.device])
        else:
            out.append(overdue_note(finding, ref, end))
    return out


def _severity(deviation: float, tolerance: float) -> Severity:
    """As a stream's: minor below twice the tolerance, major to five times, then critical."""
    times = abs(deviation) / tolerance if tolerance > 0 else math.inf
    return "critical" if times > 5.0 else "major" if times >= 2.0 else "minor"


def reference_finding(group: TaskGroup, decision: ConsensusDecision, start: float,
                      end: float) -> Finding:
    """The reference's own finding: the group's evidence against it."""
    unit = group.tasks[0].spec.unit
    cause = Cause("reference_fault", decision.confidence,
                  decision.evidence(group.reference, unit))
    return Finding(
        kind="calibration", site=group.site, device=group.reference, sensor=group.sensor,
        status="fail", severity=_severity(decision.deviation, group.bias_tolerance),
        window_start=start, window_end=end, unit=unit, reference=None,
        metrics={"devices": decision.devices, "deviating": len(decision.members),
                 "bias": round(-decision.deviation, 6), "spread": round(decision.spread, 6)},
        causes=(cause,), onset=decision.onset,
        context={"comparison": PEER_LABEL, "members": list(decision.members),
                 "others": list(decision.others)},
        action=REFERENCE_FAULT.action.format(
            reference=group.reference, deviation=f"{-decision.deviation:+.3g}", unit=unit,
            deviating=len(decision.members), devices=decision.devices))


def blame_reference(finding: Finding, decision: ConsensusDecision, reference: str,
                    peer: Finding | None) -> Finding:
    """A member's finding: ``reference_fault`` first; the offset or gain it would otherwise
    be blamed for is the reference's drift seen from the device, so those go; causes of its
    own (noise, lag, dropout, ...) stay after it. The peers' verdict corroborates in
    ``context``."""
    cause = Cause("reference_fault", decision.confidence, decision.evidence(reference,
                                                                            finding.unit or ""))
    own = tuple(c for c in finding.causes if c.cause != REFERENCE_FAULT.name
                and c.cause not in REFERENCE_FAULT.explains_away)
    context: dict[str, Any] = {**finding.context, "comparison": "reference",
                               "reference_fault": reference}
    if peer is not None:
        context["peer_consensus"] = {"status": peer.status, "peers": peer.context.get("peers"),
                                     "causes": [c.cause for c in peer.causes]}
    return replace(finding, status="fail", severity=finding.severity
                   if finding.severity != "none" else "minor", causes=(cause, *own),
                   onset=decision.onset if decision.onset is not None else finding.onset,
                   context=context,
                   action=REFERENCE_FAULT.member_action.format(reference=reference))
