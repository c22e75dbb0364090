"""The store's alert, silence and ticket tables (mixed into ``auditd.store.Store``).

Kept apart from ``store.py`` so the alert adapter can grow without touching the ingest
store, but it is the same database, the same writer lock and the same transactions:

* **An audit's alerts are decided inside its transaction.** ``Store.save_findings`` calls
  :meth:`AlertTables._apply_alerts` between ``BEGIN IMMEDIATE`` and ``COMMIT``: the
  snapshot is read, ``alerts.plan`` (pure) decides, and tracks, alerts, ticket requests and
  the MQTT ticket messages are written with the findings, all or nothing. An ``ack`` from
  the command line cannot slip in between the read and the write.
* **A ticket request is written once.** ``tickets.idempotency_key`` is UNIQUE and inserted
  with ``OR IGNORE``: the same request (same alert, same event) can never be queued twice.
* **Each sink's delivery is its own row** (``ticket_deliveries``), created with the ticket
  for every sink configured at that moment, with its attempts, the time of its next try and
  its state (``pending`` -> ``delivered`` | ``dead``), so a restart resumes the back-off
  where it stood.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from auditd.domain.alerts import (
    Alert,
    Changes,
    Silence,
    Snapshot,
    StreamKey,
    TicketRequest,
    Track,
    acknowledge,
)

if TYPE_CHECKING:
    from auditd.store import OutboxMessage

ALERT_TABLES: Final = (
    # One row per audited stream: its lifecycle between audits (alerts.Track).
    """
    CREATE TABLE alert_tracks (
        kind TEXT NOT NULL,
        device TEXT NOT NULL,
        sensor TEXT NOT NULL,
        site TEXT NOT NULL,
        state TEXT NOT NULL,
        fails INTEGER NOT NULL,
        passes INTEGER NOT NULL,
        since REAL,
        severity TEXT NOT NULL,
        peak TEXT NOT NULL,
        cause TEXT,
        opened_at REAL,
        alert_id TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (kind, device, sensor)
    ) WITHOUT ROWID
    """,
    # One row per alert episode; id is alerts.alert_id (deterministic).
    """
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        site TEXT NOT NULL,
        device TEXT NOT NULL,
        sensor TEXT,
        cause TEXT,
        opened_at REAL NOT NULL,
        state TEXT NOT NULL,
        severity TEXT NOT NULL,
        peak TEXT NOT NULL,
        updated_at REAL NOT NULL,
        resolved_at REAL,
        group_key TEXT,
        members TEXT NOT NULL DEFAULT '[]',
        notified INTEGER NOT NULL DEFAULT 0,
        acked_at REAL,
        acked_by TEXT,
        note TEXT,
        finding TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    "CREATE INDEX alerts_state ON alerts (state, opened_at)",
    """
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device TEXT NOT NULL,
        sensor TEXT,
        until REAL NOT NULL,
        created_at REAL NOT NULL,
        created_by TEXT,
        reason TEXT
    )
    """,
    """
    CREATE TABLE tickets (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        idempotency_key TEXT NOT NULL UNIQUE,
        alert_id TEXT NOT NULL,
        event TEXT NOT NULL,
        created_at REAL NOT NULL,
        payload TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE ticket_deliveries (
        ticket_id INTEGER NOT NULL REFERENCES tickets(id),
        sink TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        delivered_at REAL,
        PRIMARY KEY (ticket_id, sink)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX ticket_deliveries_due ON ticket_deliveries (sink, state, ticket_id)",
)


def migration_alerts(conn: sqlite3.Connection) -> None:
    """Alerts, silences, tickets and their deliveries."""
    for statement in ALERT_TABLES:
        conn.execute(statement)


@dataclass(frozen=True, slots=True)
class AlertPlanner:
    """What ``save_findings`` needs to decide an audit's alerts inside its transaction."""

    decide: Callable[[Snapshot], Changes]
    """``alerts.plan`` with the audit's findings, time and policies bound."""
    render: Callable[[TicketRequest], dict[str, Any]]
    """A ticket request -> its JSON (``tickets.ticket_payload``)."""
    sinks: tuple[str, ...] = ()
    """Sinks that deliver from ``ticket_deliveries`` (webhook, command, file)."""
    mqtt_topic: Callable[[str], str] | None = None
    """Site -> ticket topic, when tickets also go out over MQTT through the outbox."""


@dataclass(frozen=True, slots=True)
class TicketDelivery:
    """One sink's pending delivery of one ticket request, with its attempts so far."""

    ticket_id: int
    sink: str
    idempotency_key: str
    payload: bytes
    attempts: int
    next_attempt_at: float


_ALERT_COLUMNS: Final = (
    "id, kind, site, device, sensor, cause, opened_at, state, severity, peak, updated_at, "
    "resolved_at, group_key, members, notified, acked_at, acked_by, note, finding")


def _alert_row(alert: Alert) -> tuple[Any, ...]:
    return (alert.id, alert.kind, alert.site, alert.device, alert.sensor, alert.cause,
            alert.opened_at, alert.state, alert.severity, alert.peak, alert.updated_at,
            alert.resolved_at, alert.group, json.dumps(list(alert.members)),
            int(alert.notified), alert.acked_at, alert.acked_by, alert.note,
            json.dumps(dict(alert.finding), separators=(",", ":"), ensure_ascii=False))


def _alert_of(row: Sequence[Any]) -> Alert:
    (ident, kind, site, device, sensor, cause, opened_at, state, severity, peak, updated_at,
     resolved_at, group, members, notified, acked_at, acked_by, note, finding) = row
    return Alert(id=ident, kind=kind, site=site, device=device, sensor=sensor, cause=cause,
                 opened_at=opened_at, state=state, severity=severity, peak=peak,
                 updated_at=updated_at, finding=json.loads(finding), resolved_at=resolved_at,
                 group=group, members=tuple(json.loads(members)), notified=bool(notified),
                 acked_at=acked_at, acked_by=acked_by, note=note)


def _silence_of(row: Sequence[Any]) -> Silence:
    ident, device, sensor, until, created_at, created_by, reason = row
    return Silence(id=ident, device=device, sensor=sensor, until=until, created_at=created_at,
                   created_by=created_by, reason=reason)


class AlertTables:
    """Alert, silence and ticket operations of the store (see the module docstring)."""

    if TYPE_CHECKING:
        def _write(self, what: str) -> AbstractContextManager[sqlite3.Connection]: ...
        def _read(self, what: str) -> AbstractContextManager[sqlite3.Connection]: ...

    # ----------------------------------------------------------------- in the audit's txn

    @staticmethod
    def _snapshot(conn: sqlite3.Connection, now: float) -> Snapshot:
        tracks = {
            StreamKey(kind, device, sensor): Track(
                state=state, fails=fails, passes=passes, since=since, severity=severity,
                peak=peak, cause=cause, opened_at=opened_at, alert=alert_id)
            for kind, device, sensor, state, fails, passes, since, severity, peak, cause,
            opened_at, alert_id in conn.execute(
                "SELECT kind, device, sensor, state, fails, passes, since, severity, peak, "
                "cause, opened_at, alert_id FROM alert_tracks")}
        alerts = {row[0]: _alert_of(row) for row in conn.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id IN "
            "(SELECT alert_id FROM alert_tracks WHERE alert_id IS NOT NULL)")}
        silences = tuple(_silence_of(row) for row in conn.execute(
            "SELECT id, device, sensor, until, created_at, created_by, reason FROM silences "
            "WHERE until > ?", (now,)))
        return Snapshot(tracks=tracks, alerts=alerts, silences=silences)

    def _apply_alerts(self, conn: sqlite3.Connection, planner: AlertPlanner,
                      now: float) -> tuple[Changes, list[OutboxMessage]]:
        from auditd.store import OutboxMessage

        changes = planner.decide(self._snapshot(conn, now))
        conn.executemany(
            "INSERT INTO alert_tracks (kind, device, sensor, site, state, fails, passes, "
            "since, severity, peak, cause, opened_at, alert_id, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (kind, device, sensor) DO UPDATE SET site = excluded.site, "
            "state = excluded.state, fails = excluded.fails, passes = excluded.passes, "
            "since = excluded.since, severity = excluded.severity, peak = excluded.peak, "
            "cause = excluded.cause, opened_at = excluded.opened_at, "
            "alert_id = excluded.alert_id, updated_at = excluded.updated_at",
            [(key.kind, key.device, key.sensor, site, t.state, t.fails, t.passes, t.since,
              t.severity, t.peak, t.cause, t.opened_at, t.alert, now)
             for key, (site, t) in changes.tracks.items()])
        conn.executemany(
            f"INSERT OR REPLACE INTO alerts ({_ALERT_COLUMNS}) VALUES "
            f"({', '.join('?' * 19)})", [_alert_row(a) for a in changes.alerts])
        outbox: list[OutboxMessage] = []
        for request in changes.tickets:
            body = json.dumps(planner.render(request), separators=(",", ":"),
                              ensure_ascii=False, allow_nan=False)
            cur = conn.execute(
                "INSERT OR IGNORE INTO tickets (idempotency_key, alert_id, event, created_at, "
                "payload) VALUES (?, ?, ?, ?, ?)",
                (request.idempotency_key, request.alert.id, request.event, now, body))
            if not cur.rowcount:
                continue
            conn.executemany(
                "INSERT INTO ticket_deliveries (ticket_id, sink, next_attempt_at) "
                "VALUES (?, ?, ?)", [(cur.lastrowid, sink, now) for sink in planner.sinks])
            if planner.mqtt_topic is not None:
                outbox.append(OutboxMessage(planner.mqtt_topic(request.alert.site),
                                            body.encode(), qos=1, retain=False))
        return changes, outbox

    # ----------------------------------------------------------------- alerts

    def alerts(self, *, states: Sequence[str] = ("open", "acknowledged"),
               include_members: bool = True) -> list[Alert]:
        """Alerts in ``states``, most severe first, then oldest first."""
        marks = ", ".join("?" * len(states))
        with self._read("alerts") as conn:
            rows = conn.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state IN ({marks}) "
                "ORDER BY CASE peak WHEN 'critical' THEN 0 WHEN 'major' THEN 1 "
                "WHEN 'minor' THEN 2 ELSE 3 END, opened_at, id", tuple(states)).fetchall()
        found = [_alert_of(r) for r in rows]
        return found if include_members else [a for a in found if a.group is None]

    def alert_counts(self) -> dict[str, int]:
        """Alerts by state (``open``, ``acknowledged``, ``resolved``), for status and metrics."""
        with self._read("alert_counts") as conn:
            return {state: int(n) for state, n in conn.execute(
                "SELECT state, count(*) FROM alerts GROUP BY state")}

    def find_alerts(self, prefix: str) -> list[Alert]:
        """Alerts whose id starts with ``prefix`` (people type the first few characters)."""
        with self._read("find_alerts") as conn:
            rows = conn.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE substr(id, 1, ?) = ? ORDER BY id",
                (len(prefix), prefix)).fetchall()
        return [_alert_of(r) for r in rows]

    def acknowledge(self, alert: str, *, at: float, by: str | None = None,
                    note: str | None = None) -> bool:
        """Acknowledge an open alert (and its stream's track); False if it is not open."""
        with self._write("acknowledge") as conn:
            row = conn.execute(
                "SELECT kind, device, sensor, state, fails, passes, since, severity, peak, "
                "cause, opened_at, alert_id FROM alert_tracks WHERE alert_id = ?",
                (alert,)).fetchone()
            cur = conn.execute(
                "UPDATE alerts SET state = 'acknowledged', acked_at = ?, acked_by = ?, "
                "note = ?, updated_at = ? WHERE id = ? AND state = 'open'",
                (at, by, note, at, alert))
            if not cur.rowcount:
                return False
            if row is not None:
                track = acknowledge(Track(*row[3:]))
                conn.execute("UPDATE alert_tracks SET state = ? WHERE alert_id = ?",
                             (track.state, alert))
        return True

    # ----------------------------------------------------------------- silences

    def add_silence(self, device: str, sensor: str | None, until: float, *, at: float,
                    by: str | None = None, reason: str | None = None,
                    unless_present: bool = False) -> int:
        """Add a silence; its id. ``unless_present``: an identical one (same device, sensor,
        end, author and reason) is not added again but its id returned (a redelivered MQTT
        command)."""
        with self._write("add_silence") as conn:
            if unless_present:
                row = conn.execute(
                    "SELECT id FROM silences WHERE device = ? AND sensor IS ? AND until = ? "
                    "AND created_by IS ? AND reason IS ?",
                    (device, sensor, until, by, reason)).fetchone()
                if row is not None:
                    return int(row[0])
            cur = conn.execute(
                "INSERT INTO silences (device, sensor, until, created_at, created_by, reason) "
                "VALUES (?, ?, ?, ?, ?, ?)", (device, sensor, until, at, by, reason))
            return int(cur.lastrowid or 0)

    def silences(self, *, active_at: float | None = None) -> list[Silence]:
        """Every silence, or those still active at ``active_at``, newest first."""
        with self._read("silences") as conn:
            rows = conn.execute(
                "SELECT id, device, sensor, until, created_at, created_by, reason "
                "FROM silences WHERE (?1 IS NULL OR until > ?1) ORDER BY id DESC",
                (active_at,)).fetchall()
        return [_silence_of(r) for r in rows]

    def expire_silence(self, ident: int, *, at: float) -> bool:
        """End a silence now; False if there is no such silence still active."""
        with self._write("expire_silence") as conn:
            cur = conn.execute("UPDATE silences SET until = ? WHERE id = ? AND until > ?",
                               (at, ident, at))
            return bool(cur.rowcount)

    # ----------------------------------------------------------------- tickets

    def tickets(self, *, alert: str | None = None) -> list[dict[str, Any]]:
        """Ticket requests (their JSON), oldest first."""
        with self._read("tickets") as conn:
            rows = conn.execute(
                "SELECT payload FROM tickets WHERE (?1 IS NULL OR alert_id = ?1) ORDER BY id",
                (alert,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def due_delivery(self, sink: str, now: float) -> TicketDelivery | None:
        """The oldest pending delivery of ``sink``, if its next attempt is due.

        One at a time and in order: the ``resolve`` of an alert never reaches a ticket
        system before its ``open``, and a ticket system that is down is not hammered with
        the whole queue."""
        with self._read("due_delivery") as conn:
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

    def next_delivery_at(self, sink: str) -> float | None:
        with self._read("next_delivery_at") as conn:
            row = conn.execute(
                "SELECT min(next_attempt_at) FROM ticket_deliveries WHERE sink = ? AND "
                "state = 'pending'", (sink,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def delivery_done(self, ticket_id: int, sink: str, at: float) -> None:
        with self._write("delivery_done") as conn:
            conn.execute(
                "UPDATE ticket_deliveries SET state = 'delivered', attempts = attempts + 1, "
                "delivered_at = ?, last_error = NULL WHERE ticket_id = ? AND sink = ?",
                (at, ticket_id, sink))

    def delivery_failed(self, ticket_id: int, sink: str, error: str, *, retry_at: float | None
                        ) -> None:
        """Record a failed attempt: retry at ``retry_at``, or dead-letter it (None)."""
        with self._write("delivery_failed") as conn:
            conn.execute(
                "UPDATE ticket_deliveries SET attempts = attempts + 1, last_error = ?, "
                "state = CASE WHEN ?2 IS NULL THEN 'dead' ELSE state END, "
                "next_attempt_at = coalesce(?2, next_attempt_at) "
                "WHERE ticket_id = ?3 AND sink = ?4",
                (error[:500], retry_at, ticket_id, sink))

    def retry_dead(self, *, at: float, sink: str | None = None) -> int:
        """Put dead-lettered deliveries back in the queue (after the cause was fixed)."""
        with self._write("retry_dead") as conn:
            return int(conn.execute(
                "UPDATE ticket_deliveries SET state = 'pending', attempts = 0, "
                "next_attempt_at = ? WHERE state = 'dead' AND (?2 IS NULL OR sink = ?2)",
                (at, sink)).rowcount)

    def delivery_counts(self) -> dict[str, dict[str, int]]:
        """Sink -> state -> deliveries (``pending``, ``delivered``, ``dead``)."""
        out: dict[str, dict[str, int]] = {}
        with self._read("delivery_counts") as conn:
            for sink, state, n in conn.execute(
                    "SELECT sink, state, count(*) FROM ticket_deliveries GROUP BY sink, state"):
                out.setdefault(sink, {})[state] = int(n)
        return out

    def dead_letters(self) -> Iterator[dict[str, Any]]:
        with self._read("dead_letters") as conn:
            rows = conn.execute(
                "SELECT d.sink, t.idempotency_key, d.attempts, d.last_error FROM "
                "ticket_deliveries AS d JOIN tickets AS t ON t.id = d.ticket_id "
                "WHERE d.state = 'dead' ORDER BY d.ticket_id").fetchall()
        for sink, key, attempts, error in rows:
            yield {"sink": sink, "idempotency_key": key, "attempts": attempts, "error": error}
