"""Ticket requests and their deliveries: each request written once (idempotency key),
each sink's delivery its own row with its attempts, the time of its next try and its state
(``pending`` -> ``delivered`` | ``dead``), so a restart resumes the back-off where it
stood."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auditd.adapters.store.database import Database


@dataclass(frozen=True, slots=True)
class TicketDelivery:
    """One sink's pending delivery of one ticket request, with its attempts so far."""

    ticket_id: int
    sink: str
    idempotency_key: str
    payload: bytes
    attempts: int
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class TicketRecord:
    """A ticket request as stored: the JSON every sink receives, with its keys."""

    id: int
    idempotency_key: str
    alert_id: str
    event: str
    created_at: float
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery given up on (``sensor-auditd tickets --retry-dead`` queues it again)."""

    sink: str
    idempotency_key: str
    attempts: int
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {"sink": self.sink, "idempotency_key": self.idempotency_key,
                "attempts": self.attempts, "error": self.error}


class Tickets:
    """Ticket requests and their deliveries to each sink."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def requests(self, *, alert: str | None = None) -> list[TicketRecord]:
        """Ticket requests, oldest first."""
        with self._db.read("tickets") as conn:
            rows = conn.execute(
                "SELECT id, idempotency_key, alert_id, event, created_at, payload FROM tickets "
                "WHERE (?1 IS NULL OR alert_id = ?1) ORDER BY id", (alert,)).fetchall()
        return [TicketRecord(int(i), key, alert_id, event, float(at), json.loads(payload))
                for i, key, alert_id, event, at, payload in rows]

    def due(self, sink: str, now: float) -> TicketDelivery | None:
        """The oldest pending delivery of ``sink``, if its next attempt is due.

        One at a time and in order: the ``resolve`` of an alert never reaches a ticket
        system before its ``open``, and a ticket system that is down is not hammered with
        the whole queue."""
        with self._db.read("due_delivery") as conn:
            row = conn.execute(
                "SELECT d.ticket_id, d.sink, t.idempotency_key, t.payload, d.attempts, "
                "d.next_attempt_at FROM ticket_deliveries AS d JOIN tickets AS t "
                "ON t.id = d.ticket_id WHERE d.sink = ? AND d.state = 'pending' "
                "ORDER BY d.ticket_id LIMIT 1", (sink,)).fetchone()
        if row is None or row[5] > now:
            return None
        ticket_id, name, key, payload, attempts, next_at = row
        return TicketDelivery(ticket_id, name, key, payload.encode(), int(attempts),
                              float(next_at))

    def next_due_at(self, sink: str) -> float | None:
        with self._db.read("next_delivery_at") as conn:
            row = conn.execute(
                "SELECT min(next_attempt_at) FROM ticket_deliveries WHERE sink = ? AND "
                "state = 'pending'", (sink,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def delivered(self, ticket_id: int, sink: str, at: float) -> None:
        with self._db.write("delivery_done") as conn:
            conn.execute(
                "UPDATE ticket_deliveries SET state = 'delivered', attempts = attempts + 1, "
                "delivered_at = ?, last_error = NULL WHERE ticket_id = ? AND sink = ?",
                (at, ticket_id, sink))

    def failed(self, ticket_id: int, sink: str, error: str, *, retry_at: float | None
                        ) -> None:
        """Record a failed attempt: retry at ``retry_at``, or dead-letter it (None)."""
        with self._db.write("delivery_failed") as conn:
            conn.execute(
                "UPDATE ticket_deliveries SET attempts = attempts + 1, last_error = ?, "
                "state = CASE WHEN ?2 IS NULL THEN 'dead' ELSE state END, "
                "next_attempt_at = coalesce(?2, next_attempt_at) "
                "WHERE ticket_id = ?3 AND sink = ?4",
                (error[:500], retry_at, ticket_id, sink))

    def retry_dead(self, *, at: float, sink: str | None = None) -> int:
        """Put dead-lettered deliveries back in the queue (after the cause was fixed)."""
        with self._db.write("retry_dead") as conn:
            return int(conn.execute(
                "UPDATE ticket_deliveries SET state = 'pending', attempts = 0, "
                "next_attempt_at = ? WHERE state = 'dead' AND (?2 IS NULL OR sink = ?2)",
                (at, sink)).rowcount)

    def counts(self) -> dict[str, dict[str, int]]:
        """Sink -> state -> deliveries (``pending``, ``delivered``, ``dead``)."""
        out: dict[str, dict[str, int]] = {}
        with self._db.read("delivery_counts") as conn:
            for sink, state, n in conn.execute(
                    "SELECT sink, state, count(*) FROM ticket_deliveries GROUP BY sink, state"):
                out.setdefault(sink, {})[state] = int(n)
        return out

    def dead_letters(self) -> list[DeadLetter]:
        with self._db.read("dead_letters") as conn:
            rows = conn.execute(
                "SELECT d.sink, t.idempotency_key, d.attempts, d.last_error FROM "
                "ticket_deliveries AS d JOIN tickets AS t ON t.id = d.ticket_id "
                "WHERE d.state = 'dead' ORDER BY d.ticket_id").fetchall()
        return [DeadLetter(sink, key, int(attempts), error)
                for sink, key, attempts, error in rows]
