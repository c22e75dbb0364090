"""What devices said about themselves: every version of their metadata, and their events.

Bounded per device (``Bounds.meta_versions_per_device``, ``Bounds.events_per_device``):
beyond either cap the history is thinned to what the metadata rules read, and what went
is counted (``meta_versions_trimmed``, ``events_trimmed``).

Idempotent under redelivery: meta versions are compared by content (without ``ts``: a
retained message re-sent with a new ``ts`` is the same version), events are keyed by
(device, ts, type, content hash).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from auditd.adapters.store.counters import add_counters
from auditd.adapters.store.database import Bounds, Database
from auditd.adapters.store.encoding import canonical_json, content_hash
from auditd.domain.metadata import MetaVersion, events_to_drop, thin_versions
from auditd.model import EventRecord, MetaRecord


def meta_content(data: Mapping[str, Any]) -> dict[str, Any]:
    """Meta without ``ts``: a retained message re-sent with a new ``ts`` is the same version."""
    return {k: v for k, v in data.items() if k != "ts"}


def upsert_meta(conn: sqlite3.Connection, meta: MetaRecord) -> int:
    """Add a version only if the content (without ``ts``) differs from the latest one.

    Returns 1 if a version was added, 0 if the device's latest version was merely
    seen again (its ``last_seen`` moves forward).
    """
    content = meta_content(meta.data)
    digest = content_hash(content)
    latest = conn.execute(
        "SELECT id, hash, ts FROM meta_versions WHERE device = ? ORDER BY id DESC LIMIT 1",
        (meta.device,),
    ).fetchone()
    if latest is not None and latest[1] == digest:
        conn.execute(
            "UPDATE meta_versions SET last_seen = max(last_seen, ?) WHERE id = ?",
            (meta.received_at, latest[0]),
        )
        return 0
    if latest is not None and meta.ts < latest[2] and conn.execute(
            "SELECT 1 FROM meta_versions WHERE device = ? AND hash = ? LIMIT 1",
            (meta.device, digest)).fetchone():
        # An older message of a version already superseded (a queued retained meta
        # delivered late): history already has it, and it must not become current.
        return 0
    conn.execute(
        "INSERT INTO meta_versions (device, site, first_seen, last_seen, ts, data, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (meta.device, meta.site, meta.received_at, meta.received_at, meta.ts,
         canonical_json(content), digest),
    )
    return 1


def meta_is_current(conn: sqlite3.Connection, meta: MetaRecord) -> bool:
    """The device's current version has this content already (a redelivery changes
    nothing)."""
    latest = conn.execute(
        "SELECT hash FROM meta_versions WHERE device = ? ORDER BY id DESC LIMIT 1",
        (meta.device,)).fetchone()
    return latest is not None and latest[0] == content_hash(meta_content(meta.data))


def event_is_stored(conn: sqlite3.Connection, event: EventRecord) -> bool:
    return conn.execute(
        "SELECT 1 FROM events WHERE device = ? AND ts = ? AND type = ? AND hash = ?",
        (event.device, event.ts, event.type, _event_hash(event))).fetchone() is not None


def _event_hash(event: EventRecord) -> str:
    return hashlib.sha256(canonical_json(event.data).encode()).hexdigest()


def insert_events(conn: sqlite3.Connection, events: Sequence[EventRecord]) -> int:
    if not events:
        return 0
    rows = []
    for e in events:
        text = canonical_json(e.data)
        digest = _event_hash(e)
        rows.append((e.device, e.site, e.ts, e.received_at, e.type, text, digest))
    cur = conn.executemany(
        "INSERT OR IGNORE INTO events (device, site, ts, received_at, type, data, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return int(cur.rowcount)


def keep_bounded(conn: sqlite3.Connection, bounds: Bounds, *, meta_of: Iterable[str] = (),
                 events_of: Iterable[str] = ()) -> tuple[int, int]:
    """Thin the meta versions of the devices ``meta_of`` and the events of ``events_of``
    (those that just gained some) to their caps per device, keeping the history the
    metadata rules read (``auditd.domain.metadata.thin_versions``, ``events_to_drop``).
    Returns (versions, events) deleted. A device within its caps costs one count."""
    versions_dropped = 0
    for device in meta_of:
        (n,) = conn.execute("SELECT count(*) FROM meta_versions WHERE device = ?",
                            (device,)).fetchone()
        if n <= bounds.meta_versions_per_device:
            continue
        rows = conn.execute(
            "SELECT id, data, site, ts, first_seen, last_seen FROM meta_versions "
            "WHERE device = ? ORDER BY id", (device,)).fetchall()
        thinning = thin_versions([_version(*row[1:]) for row in rows],
                                 bounds.meta_versions_per_device)
        conn.executemany("UPDATE meta_versions SET last_seen = ? WHERE id = ?",
                         [(seen, rows[i][0]) for i, seen in thinning.last_seen.items()])
        conn.executemany("DELETE FROM meta_versions WHERE id = ?",
                         [(rows[i][0],) for i in thinning.drop])
        versions_dropped += len(thinning.drop)
    events_dropped = 0
    for device in events_of:
        (n,) = conn.execute("SELECT count(*) FROM events WHERE device = ?",
                            (device,)).fetchone()
        if n <= bounds.events_per_device:
            continue
        rows = conn.execute(
            "SELECT id, site, ts, received_at, type, data FROM events WHERE device = ? "
            "ORDER BY ts, id", (device,)).fetchall()
        drop = events_to_drop([EventRecord(site=site, device=device, ts=ts,
                                           received_at=received_at, type=type_,
                                           data=json.loads(data))
                               for _, site, ts, received_at, type_, data in rows],
                              bounds.events_per_device)
        conn.executemany("DELETE FROM events WHERE id = ?", [(rows[i][0],) for i in drop])
        events_dropped += len(drop)
    if versions_dropped or events_dropped:
        add_counters(conn, {"meta_versions_trimmed": versions_dropped,
                            "events_trimmed": events_dropped})
    return versions_dropped, events_dropped


def _version(data: str, site: str, ts: float, first_seen: float,
             last_seen: float) -> MetaVersion:
    return MetaVersion(data=json.loads(data), ts=ts, first_seen=first_seen, last_seen=last_seen,
                       site=site)


class Devices:
    """Devices' metadata versions and events, as typed values."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def forget_idle(self, older_than: float) -> list[str]:
        """Delete the meta versions and events of every device that has no stream left
        (retention took its readings) and has said nothing since ``older_than``: its place
        under ``[ingest] max_devices`` comes back. Returns those devices."""
        with self._db.write("forget_idle_devices") as conn:
            devices = [device for (device,) in conn.execute(
                "SELECT device FROM (SELECT device, max(last_seen) AS seen FROM meta_versions "
                "GROUP BY device UNION ALL SELECT device, max(received_at) FROM events "
                "GROUP BY device) GROUP BY device HAVING max(seen) < ? AND device NOT IN "
                "(SELECT device FROM streams)", (older_than,))]
            for device in devices:
                conn.execute("DELETE FROM meta_versions WHERE device = ?", (device,))
                conn.execute("DELETE FROM events WHERE device = ?", (device,))
        if devices:
            self._db.directory_generation += 1
        return devices

    def sizes(self) -> tuple[int, int]:
        """(meta versions, events) held, over every device (for the metrics' gauges)."""
        with self._db.read("history_sizes") as conn:
            versions, events = conn.execute(
                "SELECT (SELECT count(*) FROM meta_versions), (SELECT count(*) FROM events)"
            ).fetchone()
        return int(versions), int(events)

    def latest_meta(self) -> dict[str, MetaVersion]:
        """Device -> its current metadata version."""
        with self._db.read("latest_meta") as conn:
            rows = conn.execute(
                "SELECT device, data, site, ts, first_seen, last_seen FROM meta_versions "
                "WHERE id IN (SELECT max(id) FROM meta_versions GROUP BY device)"
            ).fetchall()
        return {device: _version(*rest) for device, *rest in rows}

    def meta_history(self, device: str) -> list[MetaVersion]:
        """Every metadata version of ``device``, oldest first."""
        with self._db.read("meta_history") as conn:
            rows = conn.execute(
                "SELECT data, site, ts, first_seen, last_seen FROM meta_versions "
                "WHERE device = ? ORDER BY id",
                (device,),
            ).fetchall()
        return [_version(*row) for row in rows]

    def events(self, device: str | None = None, since: float | None = None) -> list[EventRecord]:
        """Events (optionally of one device, with ``ts >= since``), in time order."""
        with self._db.read("events") as conn:
            rows = conn.execute(
                "SELECT site, device, ts, received_at, type, data FROM events "
                "WHERE (?1 IS NULL OR device = ?1) AND (?2 IS NULL OR ts >= ?2) "
                "ORDER BY ts, id",
                (device, since),
            ).fetchall()
        return [
            EventRecord(site=site, device=dev, ts=ts, received_at=received_at, type=type_,
                        data=json.loads(data))
            for site, dev, ts, received_at, type_, data in rows
        ]
