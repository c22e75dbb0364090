"""One audit run: plan which streams to compare, read their windows, let the core judge.

``Auditor.run`` is the thin adapter around the pure plan (``auditd.domain.audit_plan``): it
reads the store, calls ``auditd.core``, and writes findings, their outbox messages and the
run's alerts (decided by ``domain.alerts.plan`` with the policies and sinks wired here) in
one transaction. The daemon's scheduler and ``replay``'s recording clock both call
``Auditor.run(now)``; nothing here knows which clock it is.

``auditd.core``'s numerics (numpy + scipy) load on the first audit, not at start-up (the
package loads them on first use), so the ingest path of a gateway never pays scipy's
memory.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from auditd import core, logs
from auditd.adapters.config.daemon import AuditConfig, DaemonConfig
from auditd.adapters.store import Store
from auditd.adapters.store.alerts import AlertPlanner
from auditd.adapters.store.findings import AuditRunRecord
from auditd.adapters.store.inventory import InventoryMessage
from auditd.adapters.store.outbox import OutboxMessage
from auditd.core.series import Series
from auditd.domain import alerts, inventory, onsets, run_context, tickets
from auditd.domain.audit_plan import (
    OUT_OF_RANGE,
    AuditTask,
    EarlierStep,
    TaskGroup,
    add_out_of_range,
    attribute,
    baseline_window,
    distrust,
    finding_for,
    group_findings,
    group_tasks,
    on_peers,
    overdue_note,
    plan,
    reference_overdue,
    report_for,
    unit_confusions,
)
from auditd.domain.calibration import apply, corrections
from auditd.domain.catalog import Catalog
from auditd.domain.metadata import (
    DEFAULT_POLICY,
    DeviceHistory,
    FleetView,
    MetadataPolicy,
)
from auditd.domain.streams import (
    StreamCounts,
    Unjudged,
    count_streams,
    counts_by_site,
    verdicts_of,
    waiting_reasons,
)
from auditd.model import AlertPolicy, Finding, SensorSpec, StreamInfo, weighted
from auditd.topics import TopicsConfig

log = logs.get("auditd.app.auditor")

if TYPE_CHECKING:
    from auditd.core.series import FloatArray


@dataclass(frozen=True, slots=True)
class AuditRun:
    at: float
    findings: tuple[Finding, ...]
    report: Mapping[str, Any]
    duration_s: float
    alerts: Any = None
    """``alerts.Changes`` of this run, when the auditor has alerting on."""
    streams: StreamCounts = field(default_factory=StreamCounts)
    """The run's streams (``domain.streams``): what the log and ``status`` count."""
    unjudged: tuple[Unjudged, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertSettings:
    gateway: str
    topics: TopicsConfig
    sinks: tuple[str, ...] = ()
    mqtt: bool = True

    @classmethod
    def of(cls, cfg: DaemonConfig, *, sinks: Sequence[str] | None = None,
           mqtt: bool | None = None) -> AlertSettings:
        return cls(cfg.gateway, cfg.topics,
                   tuple(cfg.tickets.sinks() if sinks is None else sinks),
                   cfg.tickets.mqtt if mqtt is None else mqtt)


def policy_for(catalog: Catalog, announced: Mapping[str, str], finding: Finding) -> AlertPolicy:
    """The ``[alerts]`` of the finding's device profile, or the defaults."""
    model = catalog.model_for(finding.device, announced.get(finding.device))
    profile = catalog.profile(model) if model else None
    return profile.alerts if profile is not None else alerts.DEFAULT_POLICY


def planner_for(settings: AlertSettings, catalog: Catalog, announced: Mapping[str, str],
                findings: Sequence[Finding], now: float) -> AlertPlanner:
    def topic(site: str) -> str:
        return settings.topics.ticket(site, settings.gateway)

    return AlertPlanner(
        decide=partial(_decide, findings=tuple(findings), now=now, catalog=catalog,
                       announced=dict(announced)),
        render=partial(tickets.ticket_payload, gateway=settings.gateway),
        sinks=settings.sinks,
        mqtt_topic=topic if settings.mqtt else None)


def _decide(snapshot: alerts.Snapshot, *, findings: tuple[Finding, ...], now: float,
            catalog: Catalog, announced: Mapping[str, str]) -> alerts.Changes:
    return alerts.plan(snapshot, findings, now, partial(policy_for, catalog, announced))


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
        announced = {device: version.model for device, version in
                     self._store.devices.latest_meta().items() if version.model is not None}
        streams = self._store.readings.streams()
        tasks = plan(streams, self._catalog, announced, self._window_override_s)
        variants = self._variants(announced)
        findings = []
        for group in group_tasks(tasks):
            findings.extend(self._audit_group(group, now, variants))
        findings = [self._weighed(self._with_out_of_range(f, announced), announced)
                    for f in findings]
        specs = {(t.device, t.sensor): t.spec for t in tasks}
        firsts = {(t.device, t.sensor): t.first_ts for t in tasks}
        findings = [self._dated(f, specs, now, firsts.get((f.device, f.sensor or "")))
                    for f in findings]
        histories = self._histories(announced, now)
        findings, cohorts, standing = self._fleet_findings(findings, histories, announced, now)
        findings.sort(key=lambda f: (f.site, f.device, f.sensor or "", f.kind))
        duration = time.perf_counter() - started
        outbox = [OutboxMessage(self._topics.finding(f.site, self._gateway, f.device,
                                                     f.sensor or "-"),
                                _dumps(f.to_json()), qos=1, retain=True) for f in findings]
        stored = [(s.site, s.device, s.sensor) for s in streams]
        verdicts = verdicts_of(findings)
        by_site = counts_by_site(stored, self._catalog.is_reference, verdicts)
        report = {}
        for site in sorted({t.site for t in tasks}):
            site_findings = [f for f in findings if f.site == site]
            report = report_for(site, self._gateway, now, site_findings, duration,
                                by_site[site], [c for c in cohorts if site in c["sites"]])
            outbox.append(OutboxMessage(self._topics.report(site, self._gateway),
                                        _dumps(report), qos=1, retain=False))
        planner = (planner_for(self._alerting, self._catalog, announced,
                               [*findings, *standing], now)
                   if self._alerting is not None else None)
        counts = count_streams(stored, self._catalog.is_reference, verdicts)
        unjudged = waiting_reasons(stored, self._catalog, announced, verdicts,
                                   {(t.site, t.device, t.sensor): t.reference for t in tasks})
        record = AuditRunRecord(now, duration, len(findings), counts.as_dict(),
                                tuple(u.as_dict() for u in unjudged))
        inventories = (self._inventory(histories, streams, findings, announced, now)
                       if self._topics.inventory else [])
        changes = self._store.findings.save(findings, outbox, now=now, alerts=planner,
                                            run=record, inventory=inventories)
        run = AuditRun(now, tuple(findings), report, duration, changes, counts,
                       tuple(unjudged))
        self._store.readings.windows.end_pass()
        self.last_run = run
        return run

    def _histories(self, announced: Mapping[str, str], now: float) -> dict[str, DeviceHistory]:
        """Every device's history, for the fleet step and the inventory; none (logged) if
        reading them fails, which must not cost the run its calibration verdicts."""
        try:
            return read_histories(self._store, self._catalog, announced, now, self._policy,
                                  self._previous_audit())
        except Exception:
            log.exception("audit.histories_failed")
            return {}

    def _inventory(self, histories: Mapping[str, DeviceHistory], streams: Sequence[StreamInfo],
                   findings: Sequence[Finding], announced: Mapping[str, str],
                   now: float) -> list[InventoryMessage]:
        """The devices' inventories that changed since they were last queued
        (``auditd.domain.inventory``): the fleet's view of what each device is. A defect
        here costs the run its inventory (logged), never its verdicts."""
        try:
            return self._changed_inventory(histories, streams, findings, announced, now)
        except Exception:
            log.exception("audit.inventory_failed")
            return []

    def _changed_inventory(self, histories: Mapping[str, DeviceHistory],
                           streams: Sequence[StreamInfo], findings: Sequence[Finding],
                           announced: Mapping[str, str], now: float) -> list[InventoryMessage]:
        sensors: dict[str, list[str]] = {}
        for stream in streams:
            sensors.setdefault(stream.device, []).append(stream.sensor)
        verdicts: dict[str, list[Finding]] = {}
        for finding in findings:
            verdicts.setdefault(finding.device, []).append(finding)
        published = self._store.inventory.published()
        out = []
        for device, history in sorted(histories.items()):
            if not history.site:
                continue
            try:  # one device's odd metadata costs that device's inventory, not the rest's
                inv = inventory.inventory_of(
                    history, at=now, gateway=self._gateway,
                    model=self._catalog.model_for(device, announced.get(device)),
                    role="reference" if self._catalog.is_reference(device) else "field",
                    sensors=sensors.get(device, ()), findings=verdicts.get(device, ()))
                topic = self._topics.device(inv.site, self._gateway, device)
                if inventory.due(inv, published.get(topic), self._topics.inventory_refresh_s):
                    out.append(InventoryMessage(topic, device, _dumps(inv.to_json()),
                                                inv.content_hash(), inv.last_seen))
            except (ValueError, TypeError) as exc:
                log.warning("audit.inventory_skipped", device=device, error=str(exc)[:200])
        return out

    def _fleet_findings(self, findings: list[Finding], histories: Mapping[str, DeviceHistory],
                        announced: Mapping[str, str],
                        now: float
                        ) -> tuple[list[Finding], list[dict[str, Any]], list[Finding]]:
        """The run's findings with what only the whole fleet shows: the changes before each
        deviation, the cohorts failing together, and the metadata anomalies that are news;
        then the metadata findings that still stand (failing, unchanged: not saved again)
        for the alerts, which open on an anomaly seen in ``metadata_after`` runs.

        A defect here must not cost the fleet its calibration verdicts: if this step fails,
        the run's findings go out without it and the error is logged with its traceback."""
        try:
            models = {device: self._catalog.model_for(device, announced.get(device))
                      for device in histories}
            with_changes = run_context.with_context(findings, histories, self._policy)
            roots = [s.finding for s in self._store.findings.latest(kind="calibration")
                     if s.finding.context.get("comparison") == run_context.COHORT]
            outcome = run_context.apply_cohorts(with_changes, histories, models, self._cohort_alpha,
                                                self._policy, now=now, previous_roots=roots)
            previous = {s.finding.device: s.finding
                        for s in self._store.findings.latest(kind="metadata")}
            firmware = FleetView.of((models.get(d), h.latest.get("firmware"))
                                    for d, h in histories.items()
                                    if not self._catalog.is_reference(d))
            metadata = [self._weighed(f, announced) for f in run_context.metadata_findings(
                histories, self._catalog, models, previous, now, firmware, self._policy)]
        except Exception:
            log.exception("audit.fleet_step_failed")
            return findings, [], []
        news = {f.device for f in metadata}
        standing = [f for device, f in previous.items()
                    if f.status == "fail" and device not in news]
        return [*outcome.findings, *metadata], list(outcome.cohorts), standing

    def _previous_audit(self) -> float | None:
        """When the audit before this one ran (this process's, or the store's last)."""
        return self.last_run.at if self.last_run is not None else self._store.findings.last_at()

    def _weighed(self, finding: Finding, announced: Mapping[str, str]) -> Finding:
        """The finding at its final severity: weighted by its device profile's ``impact``.

        The one place a severity is decided after the core's: what is saved, published,
        reported, listed by ``findings`` and counted by ``status`` is this severity, and
        the alert takes it as it is. Each finding passes here once, before the fleet step
        (a cohort's root takes the worst of its members' weighted severities)."""
        impact = policy_for(self._catalog, announced, finding).impact
        if impact == 1.0:
            return finding
        return replace(finding, severity=weighted(finding.severity, impact))

    def _dated(self, finding: Finding, specs: Mapping[tuple[str, str], SensorSpec],
               now: float, first_reading: float | None = None) -> Finding:
        """A failing finding with its fault's onset, from the stream's earlier findings
        back to the look-back (``domain.onsets``); ``first_reading``: the stream's first
        reading the store holds, before which no fault of it began."""
        spec = specs.get((finding.device, finding.sensor or ""))
        if finding.status != "fail" or finding.kind != "calibration" or spec is None:
            return finding
        history = [s.finding for s in self._store.findings.of_stream(
            "calibration", finding.device, spec.name,
            since=now - self._policy.context_lookback_s)]
        return onsets.dated(finding, history, spec.tolerance, spec.interval_s,
                            first_reading=first_reading)

    def _with_out_of_range(self, finding: Finding, announced: Mapping[str, str]) -> Finding:
        """The window's readings outside the plausible range, as evidence in the finding:
        kept ones by their values (``readings.count_in_window``: beyond the reach of a
        calibration error, and within it), and those quarantined by stores written before
        ingest kept them."""
        if finding.sensor is None or finding.device == finding.reference:
            return finding
        site, device, sensor = finding.site, finding.device, finding.sensor
        start, end = finding.window_start, finding.window_end
        rejected = self._store.quarantine.rejected_between(device, sensor, start, end)
        quarantined = rejected.get(OUT_OF_RANGE, 0)
        model = self._catalog.model_for(device, announced.get(device))
        profile = self._catalog.profile(model) if model else None
        spec = profile.audited(sensor) if profile else None
        bounds = [core.checks.plausible_bounds(spec), spec.range] if spec is not None else []
        stored, outside = self._store.readings.count_in_window(site, device, sensor, start,
                                                               end, bounds)
        impossible, near = (outside[0], outside[1] - outside[0]) if outside else (0, 0)
        if not (quarantined or impossible or near):
            return finding
        return add_out_of_range(finding, quarantined + impossible, stored + quarantined,
                                spec.range if spec else None, near)

    # ----------------------------------------------------------------- one reference group

    def _variants(self, announced: Mapping[str, str]) -> dict[str, str]:
        """Device -> its model, and hardware revision where its meta announces one: what
        tells devices apart that could share a bias (``audit_plan.attribute``)."""
        out = {}
        for device, version in self._store.devices.latest_meta().items():
            model = self._catalog.model_for(device, announced.get(device)) or "?"
            rev = version.data.get("hardware_rev")
            out[device] = model if rev is None else f"{model} rev {rev}"
        return out

    def _earlier_step(self, group: TaskGroup, now: float) -> EarlierStep | None:
        """The common step of the reference fault the previous audit of this group named
        for this reference and sensor, within the metadata look-back: the step as first
        seen (``context.step``), not the shift of an audit that carried it on. Not past an
        audit of the group since that saw its devices share a shift and could not put it on
        the reference (their findings name both candidates, ``context.attribution``): that
        audit found the reference away from where the step left it, and the step is not
        taken up again days later by devices that happen to sit near its level. (An audit
        whose vote did not pass, short of data or of agreeing devices, says nothing
        either way and leaves the step standing.)"""
        since = max((s.finding.window_end for t in group.tasks
                     for s in self._store.findings.latest(kind="calibration", device=t.device)
                     if s.finding.sensor == group.sensor
                     and "attribution" in s.finding.context), default=-math.inf)
        for stored in self._store.findings.latest(kind="calibration", device=group.reference):
            f = stored.finding
            if (f.sensor == group.sensor and f.status == "fail" and f.onset is not None
                    and f.causes and f.causes[0].cause == "reference_fault"
                    and f.onset >= now - self._policy.context_lookback_s
                    and f.window_end >= since):
                step = f.context.get("step")
                if isinstance(step, Mapping) and isinstance(step.get("onset"), int | float) \
                        and isinstance(step.get("deviation"), int | float):
                    # stores written before a step could be only a moment hold ground steps
                    return EarlierStep(float(step["onset"]), float(step["deviation"]),
                                       seen=bool(step.get("seen", True)))
                return None  # blamed on other grounds and no moment: nothing to carry on
        return None

    def _audit_group(self, group: TaskGroup, now: float,
                     variants: Mapping[str, str]) -> list[Finding]:
        """Judge every stream of ``group`` against the reference, ask the group whether the
        reference itself is at fault (and whether the evidence can tell that apart from a
        bias the devices share, ``attribute``), and re-judge against the peers where it
        cannot be trusted (see ``group_findings``)."""
        if not group.trusted:
            return self._audit_peers(group, now)
        start = now - group.window_s
        reference = self._read(group.site, group.reference, group.sensor, start, now)
        devices = {t.device: self._read(t.site, t.device, t.sensor, start, now)
                   for t in group.tasks}
        findings = {t.device: finding_for(t, self._judge(t, devices[t.device], reference, now),
                                          now - t.window_s, now) for t in group.tasks}
        if len(group.tasks) < core.consensus.MIN_DEVICES:
            return [overdue_note(f, self._catalog.reference(group.reference), now)
                    for f in findings.values()]
        # the group is asked about the readings each comparison used: a device's
        # impossible values would make it disagree with every peer in the bins they hit
        grid = core.consensus.common_grid(
            {t.device: core.verdict.within_reach(devices[t.device], t.spec)
             for t in group.tasks},
            reference, group.interval_s, start, now, self._reference_interval(group.tasks[0]))
        min_bins = core.on_interval_samples(group.min_samples, group.interval_s,
                                            grid.interval_s)
        decision = core.consensus.judge_reference(grid.t, grid.diffs(), group.bias_tolerance,
                                                  min_bins=min_bins)
        # read from the store only where a blame can rest on it
        earlier = self._earlier_step(group, now) if decision.reference_fault or \
            core.consensus.could_share(decision, group.bias_tolerance) else None
        if not decision.reference_fault and earlier is not None:
            # the devices may still sit where an earlier audit's blame found them: the
            # agreement is asked about that level, the grounds again (``attribute``)
            carried = core.consensus.judge_reference(
                grid.t, grid.diffs(), group.bias_tolerance, min_bins=min_bins,
                anchor=earlier.deviation)
            decision = carried if carried.reference_fault else decision
        ref = self._catalog.reference(group.reference)
        own = core.consensus.reference_own_signals(grid.reference, grid.values,
                                                   group.bias_tolerance,
                                                   group.tasks[0].spec.range) \
            if decision.reference_fault else ""
        if reference_overdue(ref, now):
            own = "; ".join(filter(None, (own, "its calibration is overdue")))
        attribution = attribute(
            decision, {t.device: variants.get(t.device)
                       or self._catalog.model_for(t.device, None) or "" for t in group.tasks},
            group.reference, group.tasks[0].spec.unit, own,
            earlier if decision.reference_fault else None,
            group.bias_tolerance,
            self._recurring(group, decision.onset, decision.deviation, start, now)
            if decision.reference_fault and decision.onset is not None else math.nan)
        decision = attribution.decision
        why = distrust(ref, group, decision, now)
        peers: dict[str, Finding] = {}
        medians = core.consensus.peer_medians(grid.values) if why else {}
        for task in group.tasks if why else ():
            built = medians.get(task.device)
            if built is not None:
                verdict = self._judge_on_peers(task, devices[task.device], grid.t, built, now)
                peers[task.device] = on_peers(finding_for(task, verdict, now - task.window_s,
                                                          now), why, built.peers)
        return group_findings(group, findings, peers, attribution, start, now, ref)

    def _recurring(self, group: TaskGroup, onset: float, deviation: float, start: float,
                   now: float) -> float:
        """The devices' shift over the hours after ``onset`` on each of the
        ``RECURRENCE_DAYS`` days before, from their level before it that day
        (``consensus.recurring_shift``), the one furthest in the direction of today's
        ``deviation`` (``consensus.recurring``): whether the step is the hour's, come
        back, or new (``attribute``'s ``recurring``)."""
        day = core.consensus.DIURNAL_PERIOD_S
        shifts = []
        for k in range(1, core.consensus.RECURRENCE_DAYS + 1):
            begin, split, end = start - k * day, onset - k * day, now - k * day
            reference = self._read(group.site, group.reference, group.sensor, begin, end)
            devices = {t.device: self._read(t.site, t.device, t.sensor, begin, end)
                       for t in group.tasks}
            grid = core.consensus.common_grid(devices, reference, group.interval_s, begin,
                                              end, self._reference_interval(group.tasks[0]))
            after = grid.t >= split
            diffs = grid.diffs()
            shifts.append(core.consensus.recurring_shift(
                {d: v[after] for d, v in diffs.items()},
                {d: v[~after] for d, v in diffs.items()}))
        return core.consensus.recurring(shifts, deviation)

    def _audit_peers(self, group: TaskGroup, now: float) -> list[Finding]:
        """No trusted reference for this sensor: each device against its peers' median, or
        no finding at all where fewer than three peers report (as before: nothing to judge
        against is not a verdict)."""
        start = now - group.window_s
        devices = {t.device: self._read(t.site, t.device, t.sensor, start, now)
                   for t in group.tasks}
        grid = core.consensus.common_grid(devices, Series.of([], []), group.interval_s, start,
                                          now)
        why = f"reference {group.reference} is not trusted for {group.sensor} or does not report it"
        out = []
        medians = core.consensus.peer_medians(grid.values)
        for task in group.tasks:
            built = medians.get(task.device)
            if built is not None:
                verdict = self._judge_on_peers(task, devices[task.device], grid.t, built, now)
                out.append(on_peers(finding_for(task, verdict, now - task.window_s, now), why,
                                    built.peers))
        return out

    def _read(self, site: str, device: str, sensor: str, start: float, end: float, *,
              held: bool = True) -> Series:
        """A window as the audit judges it: through the corrections recorded as calibration
        events of the device (``auditd.domain.calibration``; the store keeps the raw readings).
        ``held``: through the window cache (``Readings.read_window``)."""
        ts, values = self._store.readings.read_window(site, device, sensor, start, end,
                                                      held=held)
        found = corrections(self._store.devices.events(device), sensor)
        return Series(ts, apply(ts, values, found) if found else values)

    def _judge(self, task: AuditTask, device: Series, reference: Series, now: float) -> Any:
        """The one place a stream is judged against its reference (against its peers'
        median: ``_judge_on_peers``), with the residuals of a known-good window beside
        this one's, and the reference's stated uncertainty and interval; a lag the window
        points to is tested on the readings before it (``core.confirm_lag``), and so is a
        window the device spent wholly at a range end (``core.line_before``)."""
        start, judged = now - task.window_s, task.judged_from(now)
        judge = partial(
            core.evaluate_stream, device, reference, task.spec, judged, now,
            units=unit_confusions(task.spec.unit),
            baseline_residuals=self._baseline_residuals(task, start),
            reference_uncertainty=self._uncertainty(task),
            reference_interval_s=self._reference_interval(task))
        verdict = judge()
        if verdict.lag_candidate is None and verdict.pinned_at_end is None:
            return verdict
        # what the window points to but cannot resolve alone, tested on the readings
        # before it (read past the window cache, which holds windows)
        begin = core.confirmation_start(judged, now)
        earlier_device, earlier_reference = (
            self._read(task.site, task.device, task.sensor, begin, judged, held=False),
            self._read(task.site, task.reference, task.sensor, begin, judged, held=False))
        lag = None if verdict.lag_candidate is None else core.confirm_lag(
            verdict.lag_candidate, earlier_device, earlier_reference, task.spec, begin,
            judged, window_s=now - judged, reference_interval_s=self._reference_interval(task))
        if lag is not None:
            verdict = judge(lag=lag)
        if verdict.pinned_at_end is not None:
            before = core.line_before(earlier_device, earlier_reference, task.spec, begin,
                                      judged, verdict.pinned_at_end, window_s=now - judged,
                                      reference_interval_s=self._reference_interval(task))
            if before is not None:
                verdict = judge(lag=lag, before=before)
        return verdict

    def _judge_on_peers(self, task: AuditTask, device: Series, t: FloatArray,
                        peers: core.consensus.PeerMedian, now: float) -> Any:
        """``_judge`` against the peers' median on the bins ``t``, with the median's own
        uncertainty (``PeerMedian``): a failure must clear the peers' spread as well. No
        baseline: residuals against the peers' median are a different quantity."""
        offset_u, rms_u = core.consensus.stated_uncertainty(peers, task.spec.tolerance)
        return core.evaluate_stream(
            device, Series(t, peers.values), task.spec, task.judged_from(now), now,
            units=unit_confusions(task.spec.unit), comparison_offset_u=offset_u,
            comparison_rms_u=rms_u)

    def _reference_interval(self, task: AuditTask) -> float | None:
        """The interval the reference reports the sensor at, from its own profile (a
        reference whose model is not named: from its data, ``core.align.time_base``)."""
        reference = self._catalog.reference(task.reference)
        profile = (self._catalog.profile(reference.model)
                   if reference is not None and reference.model else None)
        sensor = profile.sensors.get(task.sensor) if profile is not None else None
        return sensor.interval_s if sensor is not None else None

    def _uncertainty(self, task: AuditTask) -> float | None:
        """The reference's standard uncertainty for the sensor (its stated expanded
        uncertainty over its coverage factor): it makes the gain a Deming fit."""
        reference = self._catalog.reference(task.reference)
        return reference.standard_uncertainty(task.sensor) if reference else None

    def _baseline_residuals(self, task: AuditTask, start: float) -> FloatArray | None:
        """The device - reference residuals of the stream's baseline window, if it has one."""
        window = baseline_window(
            self._store.findings.last_passing_window("calibration", task.device, task.sensor,
                                                     before=start),
            last_calibration(self._store, task.device, start), task.window_s, start)
        if window is None:
            return None
        b0, b1 = window
        return core.baseline_residuals(self._read(task.site, task.device, task.sensor, b0, b1),
                                       self._read(task.site, task.reference, task.sensor, b0,
                                                  b1),
                                       task.spec.interval_s, b0, b1,
                                       self._reference_interval(task))


# --------------------------------------------------------------------------- histories


def metadata_policy(cfg: AuditConfig) -> MetadataPolicy:
    """The metadata checks' thresholds from the daemon config's [audit] table."""
    return MetadataPolicy(silent_after_intervals=cfg.silent_after_intervals,
                          silent_min_s=cfg.silent_min_s,
                          context_lookback_s=cfg.context_lookback_s)


def read_histories(store: Store, catalog: Catalog, announced: Mapping[str, str], now: float,
                   policy: MetadataPolicy,
                   previous_audit: float | None = None) -> dict[str, DeviceHistory]:
    """Every device the store knows of (by its meta, events, telemetry or quarantined
    telemetry), with what ``auditd.domain.metadata`` needs to judge it.

    The anomalies a message makes by being refused (a sensor its profile lacks, telemetry
    of an unknown model) are judged on the messages since ``previous_audit`` (the look-back
    before the first audit): so the anomaly stands at the next run only when the device
    renews it, and one stray message is seen in one run, never the two that open an
    alert (``AlertPolicy.metadata_after``)."""
    streams: dict[str, list[StreamInfo]] = {}
    for stream in store.readings.streams():
        streams.setdefault(stream.device, []).append(stream)
    events: dict[str, list[Any]] = {}
    for event in store.devices.events():
        events.setdefault(event.device, []).append(event)
    since = now - policy.context_lookback_s
    recent = since if previous_audit is None else max(since, previous_audit)
    unknown_sensors = store.quarantine.rejected_devices("sensor_unknown", recent)
    unknown_model = store.quarantine.rejected_devices("unknown_device_model", since)
    model_rejected = set(store.quarantine.rejected_devices("unknown_device_model", recent))
    latest = store.devices.latest_meta()
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
        versions = tuple(store.devices.meta_history(device)) if device in latest else ()
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
            model_rejected=device in model_rejected)
    return out



def last_calibration(store: Store, device: str, before: float) -> float | None:
    """Time of the device's latest ``calibration`` event before ``before``."""
    times = [e.ts for e in store.devices.events(device)
             if e.type == "calibration" and e.ts < before]
    return max(times, default=None)
