"""The SQLite store: the only package that knows there is a database.

Its public surface is repositories of typed rows, one per table group, sharing one
``Database`` (one writer connection, a reader per thread, one transaction at a time):

========================  =============================================================
``store.readings``        streams and readings; the ingest batch (with its rejections,
                          meta and events), imports, windows for the audit, retention
``store.quarantine``      what was refused and why, bounded by rows and bytes
``store.devices``         metadata versions and events (``MetaVersion``, ``EventRecord``)
``store.findings``        verdicts (``StoredFinding``): saving an audit's findings with
                          their outbox messages and its alerts, in one transaction
``store.outbox``          messages waiting for the broker's PUBACK
``store.inventory``       the device inventory last queued per topic (for the fleet)
``store.alerts``          alerts and silences (``Alert``, ``Silence``)
``store.tickets``         ticket requests and each sink's delivery of them
``store.counters``        totals since the database was created
========================  =============================================================

A finding goes in as a typed value and comes back as the same value; so do alerts,
silences, tickets and meta versions. No caller sees a row or a JSON blob. The schema is
``schema.py`` (append-only migrations), the connections and the write-ahead log's bounds
``database.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Unpack

from sqlite_utils import Database as SqliteUtils

from auditd.adapters.store.alerts import Alerts
from auditd.adapters.store.counters import Counters, add_counters
from auditd.adapters.store.database import Bounds, Database, Options, Space
from auditd.adapters.store.devices import Devices
from auditd.adapters.store.findings import Findings
from auditd.adapters.store.inventory import Inventory
from auditd.adapters.store.outbox import Outbox
from auditd.adapters.store.quarantine import Quarantine
from auditd.adapters.store.readings import Readings
from auditd.adapters.store.tickets import Tickets


@dataclass(frozen=True, slots=True)
class StoreSummary:
    """Sizes and counts for ``status`` and the health metrics; all cheap queries."""

    path: str
    schema_version: int
    journal_mode: str
    synchronous: str
    streams: int
    readings: int
    quarantine: int
    meta_versions: int
    events: int
    findings: int
    outbox: int
    alerts_open: int
    tickets_pending: int
    tickets_dead: int
    file_size: int
    wal_size: int
    quarantine_bytes: int


class Store:
    """The daemon's database, as its repositories. Use as a context manager or call
    :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str], **options: Unpack[Options]) -> None:
        """Open (creating and migrating as needed) the database at ``path``; ``options``
        as :class:`Database` takes them.

        ``read_only`` opens an existing file for looking only (``sensor-auditd status``):
        nothing is created or migrated, and every write fails with ``StoreError``.
        Otherwise a first write is made at once, so that a read-only file, directory or
        file system fails here, naming the path, and not at the first batch.
        """
        self._db = Database(path, **options)
        read_only = options.get("read_only", False)
        try:
            if not read_only:
                with self._db.write("the start-up write check") as conn:
                    add_counters(conn, {"store_opened": 1})
            self.readings = Readings(self._db)
        except BaseException:
            self._db.close()
            raise
        self.quarantine = Quarantine(self._db)
        self.devices = Devices(self._db)
        self.findings = Findings(self._db)
        self.outbox = Outbox(self._db)
        self.inventory = Inventory(self._db)
        self.alerts = Alerts(self._db)
        self.tickets = Tickets(self._db)
        self.counters = Counters(self._db)

    @property
    def path(self) -> Path:
        return self._db.path

    @property
    def schema_version(self) -> int:
        return self._db.schema_version

    @property
    def space(self) -> Space:
        """Free space on the volume at start and the write-ahead log limit that fits it."""
        return self._db.space

    @property
    def directory_generation(self) -> int:
        """Moves on whenever retention forgets streams or devices (``Readings.
        drop_empty_streams``, ``Devices.forget_idle``)."""
        return self._db.directory_generation

    @property
    def checkpoints(self) -> int:
        """``TRUNCATE`` checkpoints that emptied the write-ahead log (size or SQLITE_FULL)."""
        return self._db.checkpoints

    def free_bytes(self) -> int:
        return self._db.free_bytes()

    def wal_bytes(self) -> int:
        return self._db.wal_bytes()

    def close(self) -> None:
        """Close every connection. Idempotent."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def summary(self) -> StoreSummary:
        """Sizes and counts for ``status`` output and health metrics; all cheap queries."""
        with self._db.read("summary") as conn:
            tables = SqliteUtils(conn, recursive_triggers=False, execute_plugins=False)
            streams, readings = conn.execute(
                "SELECT count(*), coalesce(sum(n), 0) FROM streams").fetchone()
            counts = {name: tables.table(name).count
                      for name in ("quarantine", "meta_versions", "events", "findings", "outbox")}
            alerts_open, tickets_pending, tickets_dead = conn.execute(
                "SELECT (SELECT count(*) FROM alerts WHERE state IN ('open', 'acknowledged') "
                "AND group_key IS NULL), "
                "(SELECT count(*) FROM ticket_deliveries WHERE state = 'pending'), "
                "(SELECT count(*) FROM ticket_deliveries WHERE state = 'dead')").fetchone()
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
            usage = conn.execute("SELECT rows, bytes FROM quarantine_usage").fetchone()
        path = self._db.path
        wal = Path(f"{path}-wal")
        return StoreSummary(
            path=str(path), schema_version=version, journal_mode=journal,
            synchronous=self._db.synchronous, streams=int(streams), readings=int(readings),
            quarantine=counts["quarantine"], meta_versions=counts["meta_versions"],
            events=counts["events"], findings=counts["findings"], outbox=counts["outbox"],
            alerts_open=int(alerts_open), tickets_pending=int(tickets_pending),
            tickets_dead=int(tickets_dead),
            file_size=path.stat().st_size if path.exists() else 0,
            wal_size=wal.stat().st_size if wal.exists() else 0,
            quarantine_bytes=int(usage[1]) if usage else 0)


__all__ = ["Bounds", "Store", "StoreSummary"]
