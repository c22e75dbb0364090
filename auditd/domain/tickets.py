"""A maintenance ticket request: its JSON form and how its delivery is retried. Pure.

Every sink (MQTT ticket topic, webhook, command hook, file) receives the same JSON object:

* ``ticket_id``: the alert's deterministic id (device, sensor, cause, opening time), the
  same in every request about that alert: a ticket system files them under one ticket;
* ``idempotency_key``: ``{ticket_id}/{event}`` (``open``, ``escalate-major``,
  ``escalate-critical``, ``cause-N`` for the N-th change of cause, ``resolve``), the
  same on every retry of one request, so a retry or a restart never opens a second
  ticket (the webhook also sends it in the ``Idempotency-Key`` header);
* ``event`` (``open``, ``escalate``, ``cause``: the alert's cause followed the latest
  evidence, ``resolve``), ``cause_history`` (each change of the cause), the alert's state
  and severity, the members of a grouped alert, the finding
  it came from, and the ``runbook`` (``auditd.domain.runbook``).
"""

from __future__ import annotations

from typing import Any

from auditd.domain import runbook
from auditd.domain.alerts import TicketRequest
from auditd.model import iso

TICKET_KIND = "ticket"


def ticket_payload(request: TicketRequest, gateway: str) -> dict[str, Any]:
    alert = request.alert
    book = runbook.build(alert.finding, request.members)
    return {
        "kind": TICKET_KIND,
        "ticket_id": alert.id,
        "idempotency_key": request.idempotency_key,
        "event": request.event,
        "at": iso(request.at),
        "site": alert.site,
        "gateway": gateway,
        "device": alert.device,
        "sensor": alert.sensor,
        "cause": alert.cause,
        "cause_history": [c.to_json() for c in alert.history],
        "severity": alert.severity,
        "state": alert.state,
        "opened_at": iso(alert.opened_at),
        "resolved_at": iso(alert.resolved_at),
        "title": book.title if request.event != "resolve" else f"Resolved: {book.title}",
        "members": [dict(m) for m in request.members],
        "runbook": book.to_json(),
        "finding": alert.finding.to_json(),
    }
