"""Alerts and silences, in the same database as the findings and decided in the same
transaction (``Findings.save``): the snapshot is read, ``domain.alerts.plan`` (pure)
decides, and tracks, alerts, ticket requests and the MQTT ticket messages are written with
the findings, all or nothing. An ``ack`` from the command line cannot slip in between the
read and the write. A ticket request is written once: its idempotency key is UNIQUE and
inserted with ``OR IGNORE``, so the same request can never be queued twice; each sink's
delivery is its own row (``adapters.store.tickets``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from auditd.adapters.store.database import Database
from auditd.adapters.store.encoding import finding_columns, finding_of
from auditd.adapters.store.outbox import OutboxMessage
from auditd.domain.alerts import (
    Alert,
    CauseChange,
    Changes,
    Silence,
    Snapshot,
    StreamKey,
    TicketRequest,
    Track,
    acknowledge,
)
from auditd.model import SEVERITIES


@dataclass(frozen=True, slots=True)
class AlertPlanner:
    """What ``Findings.save`` needs to decide an audit's alerts inside its transaction."""

    decide: Callable[[Snapshot], Changes]
    """``alerts.plan`` with the audit's findings, time and policies bound."""
    render: Callable[[TicketRequest], dict[str, Any]]
    """A ticket request -> its JSON (``tickets.ticket_payload``)."""
    sinks: tuple[str, ...] = ()
    """Sinks that deliver from ``ticket_deliveries`` (webhook, command, file)."""
    mqtt_topic: Callable[[str], str] | None = None
    """Site -> ticket topic, when tickets also go out over MQTT through the outbox."""


_ALERT_COLUMNS: Final = (
    "id, kind, site, device, sensor, cause, opened_at, state, severity, peak, updated_at, "
    "resolved_at, group_key, members, notified, acked_at, acked_by, note, history, finding, "
    "finding_exact")


_TRACK_COLUMNS: Final = ("state, fails, passes, since, severity, peak, cause, opened_at, "
                         "alert_id, pending, pending_count, pending_since")
"""``alerts.Track``'s fields, in its order."""


def _alert_row(alert: Alert) -> tuple[Any, ...]:
    return (alert.id, alert.kind, alert.site, alert.device, alert.sensor, alert.cause,
            alert.opened_at, alert.state, alert.severity, alert.peak, alert.updated_at,
            alert.resolved_at, alert.group, json.dumps(list(alert.members)),
            int(alert.notified), alert.acked_at, alert.acked_by, alert.note,
            json.dumps([[c.at, c.before, c.after] for c in alert.history]),
            *finding_columns(alert.finding))


def _alert_of(row: Sequence[Any]) -> Alert:
    (ident, kind, site, device, sensor, cause, opened_at, state, severity, peak, updated_at,
     resolved_at, group, members, notified, acked_at, acked_by, note, history, finding,
     exact) = row
    return Alert(id=ident, kind=kind, site=site, device=device, sensor=sensor, cause=cause,
                 opened_at=opened_at, state=state, severity=severity, peak=peak,
                 updated_at=updated_at, finding=finding_of(finding, exact),
                 resolved_at=resolved_at, group=group, members=tuple(json.loads(members)),
                 notified=bool(notified), acked_at=acked_at, acked_by=acked_by, note=note,
                 history=tuple(CauseChange(float(at), before, after)
                               for at, before, after in json.loads(history or "[]")))


def _silence_of(row: Sequence[Any]) -> Silence:
    ident, device, sensor, until, created_at, created_by, reason = row
    return Silence(id=ident, device=device, sensor=sensor, until=until, created_at=created_at,
                   created_by=created_by, reason=reason)


def snapshot(conn: sqlite3.Connection, now: float) -> Snapshot:
    tracks = {StreamKey(*row[:3]): Track(*row[3:]) for row in conn.execute(
        f"SELECT kind, device, sensor, {_TRACK_COLUMNS} FROM alert_tracks")}
    alerts = {row[0]: _alert_of(row) for row in conn.execute(
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id IN "
        "(SELECT alert_id FROM alert_tracks WHERE alert_id IS NOT NULL)")}
    silences = tuple(_silence_of(row) for row in conn.execute(
        "SELECT id, device, sensor, until, created_at, created_by, reason FROM silences "
        "WHERE until > ?", (now,)))
    return Snapshot(tracks=tracks, alerts=alerts, silences=silences)


def apply_alerts(conn: sqlite3.Connection, planner: AlertPlanner,
                 now: float) -> tuple[Changes, list[OutboxMessage]]:
    changes = planner.decide(snapshot(conn, now))
    conn.executemany(
        f"INSERT INTO alert_tracks (kind, device, sensor, site, {_TRACK_COLUMNS}, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, device, sensor) DO UPDATE SET site = excluded.site, "
        "state = excluded.state, fails = excluded.fails, passes = excluded.passes, "
        "since = excluded.since, severity = excluded.severity, peak = excluded.peak, "
        "cause = excluded.cause, opened_at = excluded.opened_at, "
        "alert_id = excluded.alert_id, pending = excluded.pending, "
        "pending_count = excluded.pending_count, pending_since = excluded.pending_since, "
        "updated_at = excluded.updated_at",
        [(key.kind, key.device, key.sensor, site, t.state, t.fails, t.passes, t.since,
          t.severity, t.peak, t.cause, t.opened_at, t.alert, t.pending, t.pending_count,
          t.pending_since, now)
         for key, (site, t) in changes.tracks.items()])
    conn.executemany(
        f"INSERT OR REPLACE INTO alerts ({_ALERT_COLUMNS}) VALUES "
        f"({', '.join('?' * 21)})", [_alert_row(a) for a in changes.alerts])
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


class Alerts:
    """Alerts and silences, as typed values."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def select(self, *, states: Sequence[str] = ("open", "acknowledged"),
               include_members: bool = True) -> list[Alert]:
        """Alerts in ``states``, most severe (now: their latest finding's severity) first,
        then oldest first."""
        marks = ", ".join("?" * len(states))
        with self._db.read("alerts") as conn:
            rows = conn.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state IN ({marks}) "
                "ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'major' THEN 1 "
                "WHEN 'minor' THEN 2 ELSE 3 END, opened_at, id", tuple(states)).fetchall()
        found = [_alert_of(r) for r in rows]
        return found if include_members else [a for a in found if a.group is None]

    def counts(self) -> dict[str, int]:
        """Alerts by state (``open``, ``acknowledged``, ``resolved``), for status and metrics."""
        with self._db.read("alert_counts") as conn:
            return {state: int(n) for state, n in conn.execute(
                "SELECT state, count(*) FROM alerts GROUP BY state")}

    def open_by_severity(self) -> dict[str, int]:
        """Alerts still open or acknowledged (not resolved), by current severity; an alert
        that stands for a group counts once, its members not again."""
        out: dict[str, int] = {name: 0 for name in SEVERITIES[1:]}
        for alert in self.select(include_members=False):
            out[alert.severity] = out.get(alert.severity, 0) + 1
        return out

    def find(self, prefix: str) -> list[Alert]:
        """Alerts whose id starts with ``prefix`` (people type the first few characters)."""
        with self._db.read("find_alerts") as conn:
            rows = conn.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE substr(id, 1, ?) = ? ORDER BY id",
                (len(prefix), prefix)).fetchall()
        return [_alert_of(r) for r in rows]

    def acknowledge(self, alert: str, *, at: float, by: str | None = None,
                    note: str | None = None) -> bool:
        """Acknowledge an open alert (and its stream's track); False if it is not open."""
        with self._db.write("acknowledge") as conn:
            row = conn.execute(
                f"SELECT kind, device, sensor, {_TRACK_COLUMNS} FROM alert_tracks "
                "WHERE alert_id = ?", (alert,)).fetchone()
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

    def add_silence(self, device: str, sensor: str | None, until: float, *, at: float,
                    by: str | None = None, reason: str | None = None,
                    unless_present: bool = False) -> int:
        """Add a silence; its id. ``unless_present``: an identical one (same device, sensor,
        end, author and reason) is not added again but its id returned (a redelivered MQTT
        command)."""
        with self._db.write("add_silence") as conn:
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
        with self._db.read("silences") as conn:
            rows = conn.execute(
                "SELECT id, device, sensor, until, created_at, created_by, reason "
                "FROM silences WHERE (?1 IS NULL OR until > ?1) ORDER BY id DESC",
                (active_at,)).fetchall()
        return [_silence_of(r) for r in rows]

    def expire_silence(self, ident: int, *, at: float) -> bool:
        """End a silence now; False if there is no such silence still active."""
        with self._db.write("expire_silence") as conn:
            cur = conn.execute("UPDATE silences SET until = ? WHERE id = ? AND until > ?",
                               (at, ident, at))
            return bool(cur.rowcount)
