"""A maintenance ticket request: its JSON form and how its delivery is retried. Pure.

Every sink (MQTT ticket topic, webhook, command hook, file) receives the same JSON object:

* ``ticket_id``: the alert's deterministic id (device, sensor, cause, opening time), the
  same in every request about that alert: a ticket system files them under one ticket;
* ``idempotency_key``: ``{ticket_id}/{event}`` (``open``, ``escalate-major``,
  ``escalate-critical``, ``resolve``), the same on every retry of one request, so a retry
  or a restart never opens a second ticket (the webhook also sends it in the
  ``Idempotency-Key`` header);
* ``event``, the alert's state and severity, the members of a grouped alert, the finding
  it came from, and the ``runbook`` (``auditd.runbook``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
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
        "severity": alert.peak if request.event != "resolve" else alert.severity,
        "state": alert.state,
        "opened_at": iso(alert.opened_at),
        "resolved_at": iso(alert.resolved_at),
        "title": book.title if request.event != "resolve" else f"Resolved: {book.title}",
        "members": [dict(m) for m in request.members],
        "runbook": book.to_json(),
        "finding": alert.finding.to_json(),
    }


def backoff_s(attempts: int, base_s: float, cap_s: float,
              rand: Callable[[], float] = random.random) -> float:
    """Wait before attempt ``attempts + 1``: exponential from ``base_s``, capped at ``cap_s``,
    with "equal jitter" (half fixed, half random) so that gateways retrying against one
    ticket system after its outage do not all come back in the same second, while each
    still waits at least half the nominal delay."""
    nominal = min(cap_s, base_s * 2.0 ** max(attempts - 1, 0))
    return nominal / 2 + rand() * nominal / 2
