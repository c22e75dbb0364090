"""``sensor-auditd replay``: a recording through the live pipeline on the recording's clock.

The same ``Ingestor`` (validate + store) and the same ``Auditor`` as the daemon; only the
adapters differ: a file instead of the broker, the recording's ``received_at`` instead of
the wall clock, and a findings file instead of the outbox publisher.

Audits fall on multiples of the audit interval since the Unix epoch (hourly audits at the
top of each hour), whenever the recording's clock crosses one, and once more at the last
message, so that a recording shorter than one interval still gets a verdict. Batches are
cut at the same size as the live writer's, and always at an audit, so an audit sees exactly
the readings received before it. The same input gives the same findings, run after run.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import IO, Any

from auditd.adapters.config.daemon import DaemonConfig
from auditd.adapters.sinks.dispatch import FileSink, TicketDispatcher
from auditd.adapters.sources.recordings import RECORDING_INVALID, BadLine, read_messages
from auditd.adapters.store import Store
from auditd.app.auditor import AlertSettings, Auditor, AuditRun, metadata_policy
from auditd.app.ingest import Ingestor
from auditd.domain.catalog import Catalog
from auditd.domain.validate import Limits
from auditd.model import Outcome, RawMessage, Rejection
from auditd.retry import RetryPolicy

MAX_CLOCK_JUMP_S = 366 * 86400.0
"""A line received more than this after the recording's clock (the latest ``received_at``
so far) is refused as ``recording_invalid``: the clock drives an audit at every interval
it crosses, so one line of a mistyped year would hold the replay for hours of empty
audits (or for ever, at a time a float cannot step). A recording with a gap longer than a
year is two recordings."""


def _quarantine(bad: BadLine, path: Path, now: float,
                cap: int) -> tuple[RawMessage, Outcome]:
    """The line as a message (so that the store could refuse it like any other) and its
    rejection."""
    raw = RawMessage("", bad.text.encode("utf-8", "surrogatepass")[:cap], now)
    return raw, Outcome(rejections=(Rejection(
        topic="", reason=RECORDING_INVALID, detail=f"{path.name}:{bad.line_no}: {bad.problem}",
        payload=raw.payload, received_at=now),))


class Replayer:
    def __init__(self, cfg: DaemonConfig, catalog: Catalog, store: Store, limits: Limits,
                 findings_out: IO[str], tickets_out: Path | None = None) -> None:
        self.cfg = cfg
        self.ingestor = Ingestor(store, catalog, prefix=cfg.topics.prefix, limits=limits)
        sink = FileSink(tickets_out) if tickets_out is not None else None
        self.auditor = Auditor(store, catalog, cfg.topics, gateway=cfg.gateway,
                               window_override_s=cfg.audit.window_s,
                               policy=metadata_policy(cfg.audit),
                               cohort_alpha=cfg.audit.cohort_alpha,
                               alerting=AlertSettings.of(cfg, sinks=(sink.name,) if sink else (),
                                                         mqtt=False))
        self._tickets = (TicketDispatcher(store, [sink], RetryPolicy(max_attempts=1))
                         if sink is not None else None)
        self.alert_events: Counter[str] = Counter()
        self._out = findings_out
        self._limits = limits
        self._batch_max = min(cfg.ingest.batch_max, cfg.broker.receive_maximum)
        self.lines = 0
        self.audits = 0
        self.findings: Counter[str] = Counter()
        self.first: float | None = None
        self.last: float | None = None
        self.last_audit_at: float | None = None

    def _next_tick(self, t: float) -> float:
        interval = self.cfg.audit.interval_s
        return (math.floor(t / interval) + 1) * interval

    def _audit(self, at: float) -> None:
        run: AuditRun = self.auditor.run(at)
        self.audits += 1
        self.last_audit_at = at
        for finding in run.findings:
            self._out.write(json.dumps(finding.to_json(), separators=(",", ":")) + "\n")
            self.findings[finding.status] += 1
        if run.alerts is not None:
            self.alert_events.update(event for _, event in run.alerts.events)
            self.alert_events.update({"tickets": len(run.alerts.tickets)})
        if self._tickets is not None:
            self._tickets.drain_once(now=at)

    def run(self, path: Path) -> dict[str, Any]:
        batch: list[RawMessage] = []
        pending: list[tuple[RawMessage, Outcome]] = []
        next_tick: float | None = None
        clock = 0.0

        def flush() -> None:
            """What the live writer does with a batch: what the store refuses for a reason of
            its own is isolated and quarantined; a full disk or a lock is raised."""
            if batch or pending:
                self.ingestor.commit_isolated(
                    [*(raw for raw, _ in pending), *batch],
                    [*(outcome for _, outcome in pending), *self.ingestor.validate(batch)])
                batch.clear()
                pending.clear()

        for item in read_messages(path, prefix=self.cfg.topics.prefix, site=self.cfg.site):
            self.lines += 1
            if isinstance(item, BadLine):
                pending.append(_quarantine(item, path, clock, self._limits.quarantine_payload_cap))
                continue
            if self.first is not None and item.received_at > clock + MAX_CLOCK_JUMP_S:
                pending.append(_quarantine(BadLine(
                    self.lines, f"received_at is {(item.received_at - clock) / 86400:.0f} "
                    f"days after the line before; a recording jumps at most "
                    f"{MAX_CLOCK_JUMP_S / 86400:.0f}", item.topic, item.received_at),
                    path, clock, self._limits.quarantine_payload_cap))
                continue
            clock = max(clock, item.received_at)
            if self.first is None:
                self.first = clock
                next_tick = self._next_tick(clock)
            while next_tick is not None and clock >= next_tick:
                flush()
                self._audit(next_tick)
                next_tick += self.cfg.audit.interval_s
            batch.append(item)
            if len(batch) >= self._batch_max:
                flush()
        flush()
        if self.first is not None:
            self.last = clock
            if self.last_audit_at is None or clock > self.last_audit_at:
                self._audit(clock)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        return {
            **self.ingestor.totals.as_dict(),
            "messages": self.lines,  # lines read, a bad one included
            "audits": self.audits,
            "findings": sum(self.findings.values()),
            "findings_by_status": dict(sorted(self.findings.items())),
            "alerts": {"opened": self.alert_events["open"],
                       "escalated": self.alert_events["escalate"],
                       "resolved": self.alert_events["resolve"],
                       "cause_changed": self.alert_events["cause"],
                       "tickets": self.alert_events["tickets"]},
        }
