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
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from auditd.catalog import Catalog
from auditd.config import TopicsConfig
from auditd.model import Finding, SensorSpec, iso
from auditd.store import OutboxMessage, Store, StreamInfo


@dataclass(frozen=True, slots=True)
class AuditTask:
    """Compare one field stream with the reference instrument co-located with it."""

    site: str
    device: str
    sensor: str
    spec: SensorSpec
    reference: str
    window_s: float


@dataclass(frozen=True, slots=True)
class AuditRun:
    at: float
    findings: tuple[Finding, ...]
    report: Mapping[str, Any]
    duration_s: float


def plan(
    streams: Sequence[StreamInfo],
    catalog: Catalog,
    announced_models: Mapping[str, str],
    window_override_s: float | None = None,
) -> list[AuditTask]:
    """Every field stream that a reference serves, and whose reference reports that sensor."""
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
        for ref in catalog.references_for(stream.site, stream.device):
            if stream.sensor in ref.sensors and (
                    stream.site, ref.id, stream.sensor) in reference_streams:
                window = window_override_s or spec.tolerance.window_s
                tasks.append(AuditTask(stream.site, stream.device, stream.sensor, spec,
                                       ref.id, window))
                break
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
        metrics=verdict.metrics.as_dict(),
        causes=tuple(verdict.causes),
        onset=verdict.onset,
        action=verdict.action,
    )


def report_for(site: str, gateway: str, at: float, findings: Sequence[Finding],
               duration_s: float) -> dict[str, Any]:
    """The summary published on the report topic after each run."""
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
    }


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


class Auditor:
    def __init__(self, store: Store, catalog: Catalog, topics: TopicsConfig, *, gateway: str,
                 window_override_s: float | None = None) -> None:
        self._store = store
        self._catalog = catalog
        self._topics = topics
        self._gateway = gateway
        self._window_override_s = window_override_s
        self.last_run: AuditRun | None = None

    def reload(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def run(self, now: float) -> AuditRun:
        from auditd import core  # scipy and friends: only once an audit needs them

        started = time.perf_counter()
        announced = {device: str(meta["model"]) for device, meta in
                     self._store.latest_meta().items() if isinstance(meta.get("model"), str)}
        tasks = plan(self._store.streams(), self._catalog, announced, self._window_override_s)
        findings = []
        for task in tasks:
            start = now - task.window_s
            device = core.Series(*self._store.read_window(task.site, task.device, task.sensor,
                                                          start, now))
            reference = core.Series(*self._store.read_window(task.site, task.reference,
                                                             task.sensor, start, now))
            verdict = core.evaluate_stream(device, reference, task.spec, start, now)
            findings.append(finding_for(task, verdict, start, now))
        duration = time.perf_counter() - started
        outbox = [OutboxMessage(self._topics.finding(f.site, self._gateway, f.device,
                                                     f.sensor or "-"),
                                _dumps(f.to_json()), qos=1, retain=True) for f in findings]
        report = {}
        for site in sorted({t.site for t in tasks}):
            site_findings = [f for f in findings if f.site == site]
            report = report_for(site, self._gateway, now, site_findings, duration)
            outbox.append(OutboxMessage(self._topics.report(site, self._gateway),
                                        _dumps(report), qos=1, retain=False))
        self._store.save_findings(findings, outbox, now=now)
        run = AuditRun(now, tuple(findings), report, duration)
        self.last_run = run
        return run
