"""The store's schema: every table, grown by appending migrations, never editing one.

The file's version is ``PRAGMA user_version``; migration ``i`` (1-based) takes it from
``i - 1`` to ``i`` in one transaction (``Database``). A file from a newer sensor-auditd is
refused rather than damaged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final

Migration = Callable[[sqlite3.Connection], None]

INSERT_TRIGGER: Final = "readings_after_insert"
"""The trigger that keeps a stream's count and time span; an import suspends it."""

QUARANTINE_ROW_BYTES: Final = 100
"""What a quarantine row costs beyond its topic, detail and payload (keys, index entries)."""


_SCHEMA_V1: Final = (
    # Streams get a small integer id so a reading row is (int, int, real, int): the
    # readings table is by far the largest and this keeps it compact. first/last/n are
    # kept up to date by triggers so listing streams never scans readings.
    """
    CREATE TABLE streams (
        id INTEGER PRIMARY KEY,
        site TEXT NOT NULL,
        device TEXT NOT NULL,
        sensor TEXT NOT NULL,
        unit TEXT NOT NULL,
        first_ts_ms INTEGER,
        last_ts_ms INTEGER,
        n INTEGER NOT NULL DEFAULT 0,
        UNIQUE (site, device, sensor)
    )
    """,
    # WITHOUT ROWID: the primary key is the clustering key, so a window read is one
    # range scan and a redelivered reading is ignored by the key itself.
    """
    CREATE TABLE readings (
        stream_id INTEGER NOT NULL REFERENCES streams(id),
        ts_ms INTEGER NOT NULL,
        value REAL,
        seq INTEGER,
        PRIMARY KEY (stream_id, ts_ms)
    ) WITHOUT ROWID
    """,
    # INSERT OR IGNORE does not fire the insert trigger for an ignored row, so n counts
    # distinct readings exactly, duplicates never.
    """
    CREATE TRIGGER readings_after_insert AFTER INSERT ON readings BEGIN
        UPDATE streams SET
            n = n + 1,
            first_ts_ms = min(coalesce(first_ts_ms, NEW.ts_ms), NEW.ts_ms),
            last_ts_ms = max(coalesce(last_ts_ms, NEW.ts_ms), NEW.ts_ms)
        WHERE id = NEW.stream_id;
    END
    """,
    """
    CREATE TRIGGER readings_after_delete AFTER DELETE ON readings BEGIN
        UPDATE streams SET n = n - 1 WHERE id = OLD.stream_id;
    END
    """,
    """
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        received_at REAL NOT NULL,
        topic TEXT NOT NULL,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        device TEXT,
        sensor TEXT,
        payload BLOB NOT NULL
    )
    """,
    "CREATE INDEX quarantine_reason ON quarantine (reason)",
    "CREATE INDEX quarantine_received_at ON quarantine (received_at)",
    """
    CREATE TABLE meta_versions (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        site TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        ts REAL NOT NULL,
        data TEXT NOT NULL,
        hash TEXT NOT NULL
    )
    """,
    "CREATE INDEX meta_versions_device ON meta_versions (device, id)",
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        site TEXT NOT NULL,
        ts REAL NOT NULL,
        received_at REAL NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        hash TEXT NOT NULL,
        UNIQUE (device, ts, type, hash)
    )
    """,
    "CREATE INDEX events_ts ON events (ts)",
    """
    CREATE TABLE findings (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        kind TEXT NOT NULL,
        site TEXT NOT NULL,
        device TEXT NOT NULL,
        sensor TEXT,
        status TEXT NOT NULL,
        severity TEXT NOT NULL,
        window_start REAL NOT NULL,
        window_end REAL NOT NULL,
        json TEXT NOT NULL
    )
    """,
    "CREATE INDEX findings_stream ON findings (device, sensor, created_at)",
    "CREATE INDEX findings_created_at ON findings (created_at)",
    # The latest finding per (kind, device, sensor), so that "current verdicts" costs one
    # row per stream however long the history grows. '' stands for "no sensor" because a
    # primary key column cannot usefully be NULL.
    """
    CREATE TABLE findings_latest (
        kind TEXT NOT NULL,
        device TEXT NOT NULL,
        sensor TEXT NOT NULL,
        finding_id INTEGER NOT NULL REFERENCES findings(id),
        PRIMARY KEY (kind, device, sensor)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX findings_latest_finding ON findings_latest (finding_id)",
    # AUTOINCREMENT: ids are never reused, so a publisher that remembers "done up to id N"
    # can never confuse a new message with an old one.
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL DEFAULT 1,
        retain INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    )
    """,
    """
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID
    """,
)


def _migration_1(conn: sqlite3.Connection) -> None:
    """The initial schema.

    Written as SQL rather than through sqlite-utils' ``create_table``: it needs
    ``WITHOUT ROWID``, composite ``UNIQUE`` constraints, ``AUTOINCREMENT`` and triggers,
    and sqlite-utils' writers commit on their own, which would split the migration.
    """
    for statement in _SCHEMA_V1:
        conn.execute(statement)


def migration_alerts(conn: sqlite3.Connection) -> None:
    """Alerts, silences, tickets and their deliveries."""
    for statement in ALERT_TABLES:
        conn.execute(statement)


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


def _migration_imports(conn: sqlite3.Connection) -> None:
    """Imported export files, by content hash: importing the same file twice stores nothing
    twice (its readings are keyed anyway; this also keeps its quarantined rows single)."""
    conn.execute(
        """
        CREATE TABLE imports (
            sha256 TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            mapping TEXT NOT NULL,
            imported_at REAL NOT NULL,
            readings INTEGER NOT NULL,
            quarantined INTEGER NOT NULL
        ) WITHOUT ROWID
        """
    )


def _migration_bounded_quarantine(conn: sqlite3.Connection) -> None:
    """Quarantine rows that merge (``grp``: device, sensor, reason and minute), with their
    count, last arrival and size; ``quarantine_usage`` keeps the totals the caps are
    checked against, exact through every insert and delete (retention included)."""
    for statement in (
        "ALTER TABLE quarantine ADD COLUMN count INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE quarantine ADD COLUMN last_received_at REAL",
        "ALTER TABLE quarantine ADD COLUMN grp TEXT",
        "ALTER TABLE quarantine ADD COLUMN size INTEGER NOT NULL DEFAULT 0",
        f"UPDATE quarantine SET size = length(CAST(topic AS BLOB)) + "
        f"length(CAST(detail AS BLOB)) + length(payload) + {QUARANTINE_ROW_BYTES:d}",
        "CREATE UNIQUE INDEX quarantine_grp ON quarantine (grp) WHERE grp IS NOT NULL",
        """
        CREATE TABLE quarantine_usage (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            rows INTEGER NOT NULL,
            bytes INTEGER NOT NULL
        )
        """,
        "INSERT INTO quarantine_usage (id, rows, bytes) "
        "SELECT 1, count(*), coalesce(sum(size), 0) FROM quarantine",
        """
        CREATE TRIGGER quarantine_after_insert AFTER INSERT ON quarantine BEGIN
            UPDATE quarantine_usage SET rows = rows + 1, bytes = bytes + NEW.size;
        END
        """,
        """
        CREATE TRIGGER quarantine_after_delete AFTER DELETE ON quarantine BEGIN
            UPDATE quarantine_usage SET rows = rows - 1, bytes = bytes - OLD.size;
        END
        """,
    ):
        conn.execute(statement)


def _migration_exact_findings(conn: sqlite3.Connection) -> None:
    """Beside each stored finding's published JSON, exactly what that JSON rounds (window,
    onset, confidences: ``encoding.finding_columns``), and the same for the finding an
    alert carries: what goes in as a typed value comes back as the same value. Rows
    written before have none; they are read as they were published."""
    conn.execute("ALTER TABLE findings ADD COLUMN exact TEXT")
    conn.execute("ALTER TABLE alerts ADD COLUMN finding_exact TEXT")


def _migration_audit_runs(conn: sqlite3.Connection) -> None:
    """Each audit run, saved with its findings: when it ran, the streams it counted
    (``domain.streams``) and what each unjudged one is waiting for, so that ``status``
    knows the last audit even when it judged nothing. The newest ``AUDIT_RUNS_KEPT`` stay."""
    conn.execute(
        """
        CREATE TABLE audit_runs (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            duration_s REAL NOT NULL,
            findings INTEGER NOT NULL,
            streams TEXT NOT NULL,
            unjudged TEXT NOT NULL
        )
        """
    )


def _migration_inventory(conn: sqlite3.Connection) -> None:
    """The device inventory last queued per topic (``store.inventory``), and the outbox by
    topic, so that a newer inventory replaces one still waiting for the broker."""
    conn.execute(
        """
        CREATE TABLE inventory_published (
            topic TEXT PRIMARY KEY,
            device TEXT NOT NULL,
            hash TEXT NOT NULL,
            last_seen REAL,
            queued_at REAL NOT NULL
        ) WITHOUT ROWID
        """
    )
    conn.execute("CREATE INDEX outbox_topic ON outbox (topic)")


def _migration_rejected_messages(conn: sqlite3.Connection) -> None:
    """Digests of the latest rejected messages, so that one the broker redelivers after a
    crash (between its commit and its acknowledgement) is not quarantined and counted
    twice (``quarantine.remember_rejected``)."""
    conn.execute("CREATE TABLE rejected_messages (id INTEGER PRIMARY KEY, "
                 "digest BLOB NOT NULL UNIQUE)")


def _migration_alert_causes(conn: sqlite3.Connection) -> None:
    """An open alert's cause follows the latest evidence (``domain.alerts``): the track
    keeps the candidate cause and how many failing audits in a row named it, the alert
    every change of its cause. Rows written before have none."""
    conn.execute("ALTER TABLE alert_tracks ADD COLUMN pending TEXT")
    conn.execute("ALTER TABLE alert_tracks ADD COLUMN pending_count INTEGER NOT NULL "
                 "DEFAULT 0")
    conn.execute("ALTER TABLE alerts ADD COLUMN history TEXT NOT NULL DEFAULT '[]'")


def _migration_cause_hold(conn: sqlite3.Connection) -> None:
    """When the candidate cause was first named (``alerts.Track.pending_since``): the
    alert's cause follows it only once it held over a whole window. Rows written before
    have none, and their candidate starts afresh."""
    conn.execute("ALTER TABLE alert_tracks ADD COLUMN pending_since REAL")


def _migration_stream_writes(conn: sqlite3.Connection) -> None:
    """A stream's ``writes``: one for every reading row inserted or deleted, which tells
    the audit's held windows (``windows.WindowCache``) whether the rows they hold are
    still the store's. Counted from 0 at this migration: only its changes are read. And
    its ``born``: a number no stream had before (``stream_births``' AUTOINCREMENT never
    gives an id twice, emptied as the table is), so that a stream deleted by retention
    and created again under the same id is not taken for the one whose rows are held (0
    for the streams this migration finds)."""
    conn.execute("ALTER TABLE streams ADD COLUMN writes INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE streams ADD COLUMN born INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE TABLE stream_births (id INTEGER PRIMARY KEY AUTOINCREMENT)")
    conn.execute("""
    CREATE TRIGGER streams_after_insert AFTER INSERT ON streams BEGIN
        INSERT INTO stream_births (id) VALUES (NULL);
        UPDATE streams SET born = (SELECT max(id) FROM stream_births) WHERE id = NEW.id;
        DELETE FROM stream_births;
    END
    """)
    conn.execute(f"DROP TRIGGER {INSERT_TRIGGER}")
    conn.execute(f"""
    CREATE TRIGGER {INSERT_TRIGGER} AFTER INSERT ON readings BEGIN
        UPDATE streams SET
            n = n + 1,
            writes = writes + 1,
            first_ts_ms = min(coalesce(first_ts_ms, NEW.ts_ms), NEW.ts_ms),
            last_ts_ms = max(coalesce(last_ts_ms, NEW.ts_ms), NEW.ts_ms)
        WHERE id = NEW.stream_id;
    END
    """)
    conn.execute("DROP TRIGGER readings_after_delete")
    conn.execute("""
    CREATE TRIGGER readings_after_delete AFTER DELETE ON readings BEGIN
        UPDATE streams SET n = n - 1, writes = writes + 1 WHERE id = OLD.stream_id;
    END
    """)


def _migration_passing_findings(conn: sqlite3.Connection) -> None:
    """Each stream's passing findings in the order of their windows' ends: the audit asks
    every stream's baseline (``Findings.last_passing_window``) on every run, and through
    ``findings_stream`` that visited and sorted every finding the stream ever had, a cost
    that grew by one row a stream with every hourly audit (issue 17). Partial: failing
    findings are never asked for here."""
    conn.execute("CREATE INDEX findings_passing ON findings (kind, device, sensor, window_end)"
                 " WHERE status = 'pass'")


MIGRATIONS: Final[tuple[Migration, ...]] = (
    _migration_1, migration_alerts, _migration_imports, _migration_bounded_quarantine,
    _migration_exact_findings, _migration_audit_runs, _migration_inventory,
    _migration_rejected_messages,
    _migration_alert_causes, _migration_cause_hold, _migration_stream_writes,
    _migration_passing_findings)
"""Migration ``i`` (1-based) takes the schema from version ``i - 1`` to ``i``. Append only."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
