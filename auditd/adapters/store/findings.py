"""Findings: every verdict an audit saved, the latest one per stream, and the transaction
that saves an audit's findings with their outbox messages and its alerts.

A finding goes in as a typed value and comes back as the same value (``StoredFinding``):
the store keeps its published JSON (``Finding.to_json``, what the finding topic carried
and what other tools read) and, beside it, exactly what that JSON rounds
(``encoding.finding_columns``). Findings saved before schema 5 are read as published.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from auditd.adapters.store.alerts import AlertPlanner, apply_alerts
from auditd.adapters.store.database import Database
from auditd.adapters.store.encoding import finding_columns, finding_of
from auditd.adapters.store.inventory import InventoryMessage, queue_inventory
from auditd.adapters.store.outbox import OutboxMessage, insert_outbox
from auditd.domain.alerts import Changes
from auditd.model import Finding


@dataclass(frozen=True, slots=True)
class StoredFinding:
    """A finding as the store holds it: the value, its row id and when it was saved."""

    id: int
    created_at: float
    finding: Finding

    def to_json(self) -> dict[str, Any]:
        """The finding's published JSON plus the store's ``id`` and ``created_at``."""
        return {**self.finding.to_json(), "id": self.id, "created_at": self.created_at}


AUDIT_RUNS_KEPT = 100
"""Audit runs kept (``audit_runs``): the newest; each is one small row."""

UNJUDGED_KEPT = 200
"""Unjudged streams a run's row lists (the count is exact; a fleet of thousands keeps the
row small)."""


@dataclass(frozen=True, slots=True)
class AuditRunRecord:
    """One audit run as ``status`` reads it: when, how long, how many findings, the
    streams it counted (``domain.streams.StreamCounts.as_dict``) and the unjudged ones with
    what each is waiting for (``Unjudged.as_dict``, at most ``UNJUDGED_KEPT``)."""

    at: float
    duration_s: float
    findings: int
    streams: dict[str, int]
    unjudged: tuple[dict[str, str], ...] = ()


def _stored(published: str, exact: str | None, finding_id: int,
            created_at: float) -> StoredFinding:
    return StoredFinding(int(finding_id), float(created_at), finding_of(published, exact))


def _insert_finding(conn: sqlite3.Connection, f: Finding, now: float) -> None:
    cur = conn.execute(
        "INSERT INTO findings (created_at, kind, site, device, sensor, status, severity, "
        "window_start, window_end, json, exact) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (now, f.kind, f.site, f.device, f.sensor, f.status, f.severity, f.window_start,
         f.window_end, *finding_columns(f)),
    )
    conn.execute(
        "INSERT INTO findings_latest (kind, device, sensor, finding_id) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (kind, device, sensor) DO UPDATE SET finding_id = excluded.finding_id",
        (f.kind, f.device, f.sensor or "", cur.lastrowid),
    )


def _insert_run(conn: sqlite3.Connection, run: AuditRunRecord) -> None:
    cur = conn.execute(
        "INSERT INTO audit_runs (at, duration_s, findings, streams, unjudged) "
        "VALUES (?, ?, ?, ?, ?)",
        (run.at, run.duration_s, run.findings, json.dumps(run.streams),
         json.dumps(list(run.unjudged[:UNJUDGED_KEPT]), ensure_ascii=False)))
    conn.execute("DELETE FROM audit_runs WHERE id <= ?",
                 (int(cur.lastrowid or 0) - AUDIT_RUNS_KEPT,))


def last_passing_sql(before: bool) -> str:
    """``Findings.last_passing_window``'s query (with a bound on the window's end or
    not): one descent of the ``findings_passing`` index, a range on window_end whose rowid
    order breaks ties, so its cost stays put as a stream's history grows."""
    since = "AND window_end <= ? " if before else ""
    return ("SELECT window_start, window_end FROM findings "
            "WHERE kind = ? AND device = ? AND sensor = ? AND status = 'pass' "
            f"{since}ORDER BY window_end DESC, id DESC LIMIT 1")


class Findings:
    """Saved verdicts, as typed values."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def save(
        self,
        findings: Sequence[Finding],
        outbox: Sequence[OutboxMessage],
        *,
        now: float | None = None,
        alerts: AlertPlanner | None = None,
        run: AuditRunRecord | None = None,
        inventory: Sequence[InventoryMessage] = (),
    ) -> Changes | None:
        """Store findings and the messages announcing them in one transaction.

        The transactional outbox: either both are durable or neither is, so a crash can
        never publish a finding that was not recorded, nor record one never published.
        ``now`` (default: the store's clock) stamps both; an audit passes its own time so
        a replay's findings carry the recording's time, not the wall clock's. ``alerts``
        decides the audit's alerts and ticket requests in the same transaction
        (``adapters.store.alerts``); what it changed is returned. ``run`` records the audit
        run itself, even one that judged nothing. ``inventory``: the devices' inventories
        that changed (``adapters.store.inventory``), queued with them.
        """
        if now is None:
            now = self._db.clock()
        changes = None
        with self._db.write("save_findings") as conn:
            for finding in findings:
                _insert_finding(conn, finding, now)
            if alerts is not None:
                changes, tickets = apply_alerts(conn, alerts, now)
                outbox = [*outbox, *tickets]
            insert_outbox(conn, outbox, now)
            if run is not None:
                _insert_run(conn, run)
            queue_inventory(conn, inventory, now)
        return changes

    def last_run(self) -> AuditRunRecord | None:
        """The latest audit run recorded (None before the first, or in a store whose audits
        ran before schema 6: then ``last_at`` is the best answer)."""
        with self._db.read("last_audit_run") as conn:
            row = conn.execute("SELECT at, duration_s, findings, streams, unjudged FROM "
                               "audit_runs ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return AuditRunRecord(float(row[0]), float(row[1]), int(row[2]), json.loads(row[3]),
                              tuple(json.loads(row[4])))

    def latest(
        self, *, kind: str | None = None, site: str | None = None, device: str | None = None
    ) -> list[StoredFinding]:
        """The current verdict per (kind, device, sensor), optionally filtered, by device."""
        with self._db.read("latest_findings") as conn:
            rows = conn.execute(
                "SELECT f.json, f.exact, f.id, f.created_at FROM findings_latest AS l "
                "JOIN findings AS f ON f.id = l.finding_id "
                "WHERE (?1 IS NULL OR l.kind = ?1) AND (?2 IS NULL OR f.site = ?2) "
                "AND (?3 IS NULL OR l.device = ?3) "
                "ORDER BY l.device, l.sensor, l.kind",
                (kind, site, device),
            ).fetchall()
        return [_stored(*row) for row in rows]

    def of_device(self, device: str) -> list[StoredFinding]:
        """Every stored finding on ``device`` (all kinds and sensors), oldest first."""
        with self._db.read("findings_of") as conn:
            rows = conn.execute(
                "SELECT json, exact, id, created_at FROM findings WHERE device = ? "
                "ORDER BY created_at, id", (device,)).fetchall()
        return [_stored(*row) for row in rows]

    def of_stream(self, kind: str, device: str, sensor: str, *,
                  since: float) -> list[StoredFinding]:
        """One stream's findings whose window ended at or after ``since``, oldest first:
        the history an onset looks back through."""
        with self._db.read("findings_of_stream") as conn:
            rows = conn.execute(
                "SELECT json, exact, id, created_at FROM findings WHERE kind = ? AND "
                "device = ? AND sensor = ? AND window_end >= ? ORDER BY window_end, id",
                (kind, device, sensor, since)).fetchall()
        return [_stored(*row) for row in rows]

    def since(self, ts: float) -> list[StoredFinding]:
        """Every finding created at or after ``ts``, in the order they were saved."""
        with self._db.read("findings_since") as conn:
            rows = conn.execute(
                "SELECT json, exact, id, created_at FROM findings WHERE created_at >= ? "
                "ORDER BY id", (ts,),
            ).fetchall()
        return [_stored(*row) for row in rows]

    def last_passing_window(
        self, kind: str, device: str, sensor: str, *, before: float | None = None
    ) -> tuple[float, float] | None:
        """(start, end) of the latest passing finding's window for one stream, ending at or
        before ``before`` when given: the known-good baseline a drift check compares with
        (ending before the current window, so that the two do not share data)."""
        args = (kind, device, sensor) if before is None else (kind, device, sensor, before)
        with self._db.read("last_passing_window") as conn:
            row = conn.execute(last_passing_sql(before is not None), args).fetchone()
        return None if row is None else (float(row[0]), float(row[1]))

    def verdict_counts(self) -> dict[tuple[str, str, str], int]:
        """Current verdicts counted by (kind, status, severity): streams by status and what
        is failing at which severity, one row per stream however long the history."""
        with self._db.read("verdict_counts") as conn:
            rows = conn.execute(
                "SELECT f.kind, f.status, f.severity, count(*) FROM findings_latest AS l "
                "JOIN findings AS f ON f.id = l.finding_id GROUP BY 1, 2, 3").fetchall()
        return {(kind, status, severity): int(n) for kind, status, severity, n in rows}

    def last_at(self) -> float | None:
        """When the latest finding was saved: the last audit that produced one."""
        with self._db.read("last_finding_at") as conn:
            row = conn.execute("SELECT max(created_at) FROM findings").fetchone()
        return None if row[0] is None else float(row[0])

    def purge(self, older_than: float, chunk: int = 5000) -> int:
        """Delete findings created before ``older_than``, keeping every current verdict."""
        return self._db.purge_chunks(
            "purge_findings",
            "DELETE FROM findings WHERE id IN (SELECT id FROM findings WHERE created_at < ? "
            "AND id NOT IN (SELECT finding_id FROM findings_latest) ORDER BY id LIMIT ?)",
            older_than,
            chunk,
        )
