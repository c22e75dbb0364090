"""Readings: every stream's values, keyed by (stream, timestamp), and what ingest and
imports write with them.

``write_outcomes`` commits one validated batch in one transaction: its readings, its
rejections (to the quarantine), meta versions and events, and the counters that count
them, so totals and data never disagree. At-least-once delivery is made idempotent here:
a reading stored already is a duplicate (counted, not stored again) when its value is the
same, and a ``duplicate_conflict`` rejection naming both values when it is not.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from auditd import reasons
from auditd.adapters.store.counters import COUNTER_REJECTED_PREFIX, add_counters
from auditd.adapters.store.database import Database
from auditd.adapters.store.devices import (
    event_is_stored,
    insert_events,
    meta_is_current,
    upsert_meta,
)
from auditd.adapters.store.devices import keep_bounded as keep_history_bounded
from auditd.adapters.store.encoding import iso_ms, ms_at_or_after, ms_or_none
from auditd.adapters.store.quarantine import (
    insert_rejections,
    keep_bounded,
    message_digest,
    remember_rejected,
)
from auditd.adapters.store.schema import INSERT_TRIGGER
from auditd.adapters.store.windows import WindowCache, fetch_rows
from auditd.model import Outcome, Reading, Rejection, StreamInfo

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one ``Readings.write_outcomes`` batch changed.

    ``nulls`` counts the readings of the batch whose value was ``None`` (an outage the
    device reported), duplicates included, because it describes what ingest saw.
    """

    readings_inserted: int = 0
    readings_duplicate: int = 0
    nulls: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
    meta_versions_added: int = 0
    events_added: int = 0
    quarantine_dropped: int = 0
    """Oldest quarantine rows deleted to keep within ``Bounds``."""
    rejections: tuple[Rejection, ...] = ()
    """What was quarantined, as committed (``duplicate_conflict`` found here included),
    for the rejection log (``auditd.app.rejection_log``)."""
    out_of_range: int = 0
    """Readings of the batch outside their profile's plausible range, kept (duplicates
    included, as ``nulls``: what ingest saw)."""
    meta_versions_trimmed: int = 0
    events_trimmed: int = 0
    """Meta versions and events deleted to keep each device within ``Bounds``."""
    redelivered: int = 0
    """Messages the broker redelivered that were committed already (left out, uncounted)."""

    def plus(self, other: WriteResult) -> WriteResult:
        """Both batches' changes (a batch committed in parts, ``auditd.app.ingest``)."""
        rejected = Counter(self.rejected)
        rejected.update(other.rejected)
        return WriteResult(
            self.readings_inserted + other.readings_inserted,
            self.readings_duplicate + other.readings_duplicate,
            self.nulls + other.nulls, dict(rejected),
            self.meta_versions_added + other.meta_versions_added,
            self.events_added + other.events_added,
            self.quarantine_dropped + other.quarantine_dropped,
            (*self.rejections, *other.rejections),
            self.out_of_range + other.out_of_range,
            self.meta_versions_trimmed + other.meta_versions_trimmed,
            self.events_trimmed + other.events_trimmed,
            self.redelivered + other.redelivered)


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """One export file brought into the store (``sensor-auditd import``)."""

    sha256: str
    path: str
    site: str
    device: str
    mapping: str
    imported_at: float
    readings: int = 0
    """Readings newly stored by this import."""
    quarantined: int = 0


class Readings:
    """The readings tables (``streams``, ``readings``, ``imports``)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        with db.read("load streams") as conn:
            rows = conn.execute("SELECT site, device, sensor, id FROM streams").fetchall()
        self._stream_ids: dict[tuple[str, str, str], int] = {
            (site, device, sensor): sid for site, device, sensor, sid in rows}
        """Stream ids of this process's committed writes (and of the file at start): the
        hot path resolves a reading's stream without a query."""
        self.windows = WindowCache(db.bounds.window_cache)
        """The audit's windows held between audits (``read_window(held=True)``)."""

    def write_outcomes(
        self,
        outcomes: Sequence[Outcome],
        *,
        counters: Mapping[str, int] | None = None,
    ) -> WriteResult:
        """Commit one batch of validated messages in a single transaction.

        Also adds to the persistent counters (``messages``, ``readings_inserted``,
        ``readings_duplicate``, ``readings_null``, ``readings_rejected``,
        ``rejected.<reason>``, ``meta_versions``, ``events``) plus any extra ``counters``
        the caller passes, in the same transaction, so totals and data never disagree.

        A reading whose stream and timestamp are stored already is a duplicate when its
        value is the same (a redelivery: counted, nothing stored) and a
        ``duplicate_conflict`` rejection naming both values when it is not (the stored
        value is kept). Rejections go to the bounded quarantine (:class:`Bounds`).

        Raises :class:`StoreError` after a rollback on any SQLite error (``transient``
        says whether to retry the batch as is, which is idempotent, or to isolate the
        message the store cannot take, ``auditd.app.ingest``); an error raised while encoding
        a value (``UnicodeEncodeError``...) is raised as it is, after the rollback.
        """
        new_streams: dict[tuple[str, str, str], int] = {}
        with self._db.write("write_outcomes") as conn:
            # A message the broker redelivers after a crash may be committed already: it
            # is then left out (its readings would only be duplicates, its rejections and
            # the message itself must not be counted twice).
            repeated = self._committed_before(conn, outcomes)
            if repeated:
                outcomes = [o for i, o in enumerate(outcomes) if i not in repeated]
            remember_rejected(conn, outcomes)
            result = self._write(conn, outcomes, new_streams, len(repeated), counters)
        # Only now that the ids are committed may the hot path trust them.
        self._stream_ids.update(new_streams)
        return result

    def _write(self, conn: sqlite3.Connection, outcomes: Sequence[Outcome],
               new_streams: dict[tuple[str, str, str], int], repeated: int,
               counters: Mapping[str, int] | None) -> WriteResult:
        readings: list[Reading] = []
        origins: list[Outcome] = []
        for outcome in outcomes:
            if outcome.readings:
                readings.extend(outcome.readings)
                origins.extend([outcome] * len(outcome.readings))
        rejections = [j for o in outcomes for j in o.rejections]
        metas = [o.meta for o in outcomes if o.meta is not None]
        events = [o.event for o in outcomes if o.event is not None]
        rows, nulls = self._reading_rows(conn, readings, new_streams)
        inserted = self._insert_readings(conn, rows)
        conflicts = (self._conflicts(conn, rows, readings, origins)
                     if inserted < len(rows) else [])
        rejected = insert_rejections(conn, [*rejections, *conflicts], merge=True)
        dropped = keep_bounded(conn, self._db.bounds) if rejected else 0
        meta_added = 0
        grown: set[str] = set()
        for meta in metas:
            if upsert_meta(conn, meta):
                meta_added += 1
                grown.add(meta.device)
        events_added = insert_events(conn, events)
        trimmed = (keep_history_bounded(
            conn, self._db.bounds, meta_of=sorted(grown),
            events_of=sorted({e.device for e in events}) if events_added else ())
            if grown or events_added else (0, 0))
        result = WriteResult(
            readings_inserted=inserted,
            readings_duplicate=len(rows) - inserted - len(conflicts),
            nulls=nulls,
            rejected=dict(rejected),
            meta_versions_added=meta_added,
            events_added=events_added,
            quarantine_dropped=dropped,
            rejections=(*rejections, *conflicts),
            meta_versions_trimmed=trimmed[0],
            events_trimmed=trimmed[1],
            out_of_range=sum(1 for r in readings if r.out_of_range),
            redelivered=repeated,
        )
        add_counters(conn, self._batch_counters(len(outcomes), result))
        if counters:
            add_counters(conn, counters)
        return result

    def _committed_before(self, conn: sqlite3.Connection,
                          outcomes: Sequence[Outcome]) -> set[int]:
        """Indices of the redelivered outcomes whose message is committed already: one with
        rejections whose digest the store holds (``rejected_messages``), one whose readings
        are all stored with the same values, a meta that is the device's current version,
        an event stored already. Only redelivered messages are looked at: a few after a
        crash, nothing on the hot path."""
        out: set[int] = set()
        for i, o in enumerate(outcomes):
            if o.message is None or not o.message.redelivered:
                continue
            if o.rejections:
                seen = o.message.packet_id is not None and conn.execute(
                    "SELECT 1 FROM rejected_messages WHERE digest = ?",
                    (message_digest(o.message),)).fetchone() is not None
            elif o.readings:
                seen = all(self._stored(conn, r) for r in o.readings)
            elif o.meta is not None:
                seen = meta_is_current(conn, o.meta)
            elif o.event is not None:
                seen = event_is_stored(conn, o.event)
            else:
                seen = False
            if seen:
                out.add(i)
        return out

    def _stored(self, conn: sqlite3.Connection, r: Reading) -> bool:
        sid = self._stream_id(conn, r.site, r.device, r.sensor)
        if sid is None:
            return False
        value = None if r.value is None or r.value != r.value else r.value
        return conn.execute(
            "SELECT 1 FROM readings WHERE stream_id = ? AND ts_ms = ? AND value IS ?",
            (sid, round(r.ts * 1000), value)).fetchone() is not None

    def _reading_rows(
        self,
        conn: sqlite3.Connection,
        readings: Sequence[Reading],
        new_streams: dict[tuple[str, str, str], int],
    ) -> tuple[list[tuple[int, int, float | None, int | None]], int]:
        """Reading -> (stream_id, ts_ms, value, seq) rows, resolving ids from the cache."""
        ids = self._stream_ids
        rows: list[tuple[int, int, float | None, int | None]] = []
        append = rows.append
        nulls = 0
        for r in readings:
            key = (r.site, r.device, r.sensor)
            sid = ids.get(key)
            if sid is None:
                sid = new_streams.get(key)
                if sid is None:
                    sid = new_streams[key] = self._create_stream(conn, r)
            value = r.value
            if value is None or value != value:  # SQLite would store NaN as NULL anyway
                value = None
                nulls += 1
            append((sid, round(r.ts * 1000), value, r.seq))
        return rows, nulls

    @staticmethod
    def _create_stream(conn: sqlite3.Connection, r: Reading) -> int:
        # ON CONFLICT DO NOTHING + SELECT: another process may have created it meanwhile.
        conn.execute(
            "INSERT INTO streams (site, device, sensor, unit) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (site, device, sensor) DO NOTHING",
            (r.site, r.device, r.sensor, r.unit),
        )
        row = conn.execute(
            "SELECT id FROM streams WHERE site = ? AND device = ? AND sensor = ?",
            (r.site, r.device, r.sensor),
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _insert_readings(
        conn: sqlite3.Connection, rows: Sequence[tuple[int, int, float | None, int | None]]
    ) -> int:
        if not rows:
            return 0
        cur = conn.executemany(
            "INSERT OR IGNORE INTO readings (stream_id, ts_ms, value, seq) VALUES (?, ?, ?, ?)",
            rows,
        )
        return int(cur.rowcount)

    def _conflicts(self, conn: sqlite3.Connection,
                   rows: Sequence[tuple[int, int, float | None, int | None]],
                   readings: Sequence[Reading], origins: Sequence[Outcome]) -> list[Rejection]:
        """The rows not inserted whose stored value differs: conflicting duplicates. Only
        run when some row was not inserted (a redelivery), so ingest pays nothing for it.
        A message's payload is kept with its first conflict only (a flushed buffer of a
        thousand conflicting readings is not a thousand copies of it)."""
        out = []
        with_payload: set[int] = set()  # messages whose payload one conflict row holds
        for (sid, ts_ms, value, _), reading, origin in zip(rows, readings, origins,
                                                           strict=True):
            found = conn.execute("SELECT value FROM readings WHERE stream_id = ? AND ts_ms = ?",
                                 (sid, ts_ms)).fetchone()
            if found is None or found[0] == value or (found[0] is None and value is None):
                continue  # inserted just now, or the same value again
            message = origin.message
            first = message is not None and id(message) not in with_payload
            if first:
                with_payload.add(id(message))
            out.append(Rejection(
                topic=message.topic if message else f"{reading.site}/{reading.device}",
                reason=reasons.DUPLICATE_CONFLICT,
                detail=(f"{reading.sensor} at {iso_ms(ts_ms)}: stored {found[0]!r}, this "
                        f"message says {value!r} ({reading.unit}); the stored value is kept"),
                payload=message.payload[: self._db.bounds.payload_cap]
                if message is not None and first else b"",
                received_at=message.received_at if message else self._db.clock(),
                device=reading.device, sensor=reading.sensor))
        return out

    @staticmethod
    def _batch_counters(messages: int, result: WriteResult) -> dict[str, int]:
        deltas = {
            "messages": messages,
            "readings_inserted": result.readings_inserted,
            "readings_duplicate": result.readings_duplicate,
            "readings_null": result.nulls,
            "readings_out_of_range": result.out_of_range,
            "readings_rejected": sum(result.rejected.values()),
            "meta_versions": result.meta_versions_added,
            "events": result.events_added,
            "messages_redelivered": result.redelivered,
        }
        for reason, n in result.rejected.items():
            deltas[COUNTER_REJECTED_PREFIX + reason] = n
        return deltas

    def write_import(
        self,
        record: ImportRecord,
        series: Sequence[tuple[str, str, FloatArray, FloatArray]],
        rejections: Sequence[Rejection],
    ) -> ImportRecord | None:
        """Commit one imported file in a single transaction, unless it was imported before.

        ``series`` are (sensor, canonical unit, epoch seconds, values) arrays of the
        record's device; ``rejections`` go to the quarantine. Returns the earlier import's
        record (and writes nothing) when a file with the same content hash is already in;
        ``None`` after a new import. Readings already stored (same stream and time) are
        kept as they are, as for a redelivered MQTT message.
        """
        with self._db.write("write_import") as conn:
            row = conn.execute(
                "SELECT sha256, path, site, device, mapping, imported_at, readings, "
                "quarantined FROM imports WHERE sha256 = ?", (record.sha256,)).fetchone()
            if row is not None:
                return ImportRecord(*row)
            new_streams: dict[tuple[str, str, str], int] = {}
            inserted = 0
            # The per-row trigger that keeps streams.n/first/last doubles the cost of a bulk
            # insert; inside this one transaction (which holds the write lock, so no other
            # writer can insert meanwhile) it is dropped, the stream's totals are updated
            # once per stream, and the very same trigger is created again before COMMIT.
            # Readers never see the schema without it: DDL is transactional in SQLite.
            trigger = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?",
                (INSERT_TRIGGER,)).fetchone()
            if trigger is not None:
                conn.execute(f"DROP TRIGGER {INSERT_TRIGGER}")
            for sensor, unit, ts, values in series:
                if len(ts) == 0:
                    continue
                probe = Reading(record.site, record.device, sensor, unit, 0.0, None)
                key = (record.site, record.device, sensor)
                sid = self._stream_ids.get(key) or new_streams.get(key)
                if sid is None:
                    sid = new_streams[key] = self._create_stream(conn, probe)
                ms = np.round(np.asarray(ts, dtype=np.float64) * 1000.0).astype(np.int64)
                vals = [None if v != v else v for v in np.asarray(values).tolist()]
                n = self._insert_readings(
                    conn, list(zip([sid] * len(vals), ms.tolist(), vals, [None] * len(vals),
                                   strict=True)))
                inserted += n
                if trigger is not None and n:
                    # Rows ignored as already stored lie within first/last already, so the
                    # extremes of all the attempted times are the right bounds.
                    lo, hi = int(ms.min()), int(ms.max())
                    conn.execute(
                        "UPDATE streams SET n = n + ?, writes = writes + ?, first_ts_ms = "
                        "min(coalesce(first_ts_ms, ?), ?), last_ts_ms = max(coalesce("
                        "last_ts_ms, ?), ?) WHERE id = ?",
                        (n, n, lo, lo, hi, hi, sid))
            if trigger is not None:
                conn.execute(trigger[0])
            rejected = insert_rejections(conn, rejections, merge=False)
            if rejected:
                keep_bounded(conn, self._db.bounds)
            conn.execute(
                "INSERT INTO imports (sha256, path, site, device, mapping, imported_at, "
                "readings, quarantined) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record.sha256, record.path, record.site, record.device, record.mapping,
                 record.imported_at, inserted, len(rejections)))
            deltas = {"readings_inserted": inserted, "imports": 1,
                      "readings_rejected": sum(rejected.values())}
            for reason, n in rejected.items():
                deltas[COUNTER_REJECTED_PREFIX + reason] = n
            add_counters(conn, deltas)
        self._stream_ids.update(new_streams)
        return None

    def imports(self) -> list[ImportRecord]:
        """Every imported file, oldest first."""
        with self._db.read("imports") as conn:
            rows = conn.execute(
                "SELECT sha256, path, site, device, mapping, imported_at, readings, "
                "quarantined FROM imports ORDER BY imported_at, path").fetchall()
        return [ImportRecord(*row) for row in rows]

    def _stream_id(
        self, conn: sqlite3.Connection, site: str, device: str, sensor: str
    ) -> int | None:
        sid = self._stream_ids.get((site, device, sensor))
        if sid is not None:
            return sid
        # Written by another process, or not (yet) in this one's cache.
        row = conn.execute(
            "SELECT id FROM streams WHERE site = ? AND device = ? AND sensor = ?",
            (site, device, sensor),
        ).fetchone()
        return None if row is None else int(row[0])

    def read_window(
        self, site: str, device: str, sensor: str, start: float, end: float, *,
        held: bool = False,
    ) -> tuple[FloatArray, FloatArray]:
        """Timestamps (epoch s) and values (NaN for null) with ``start <= ts < end``, by time.

        One range scan of the readings' primary key; the arrays are built from the
        fetched rows (``windows.fetch_rows``). ``held``: from
        the rows kept since the last read of the stream and those stored since
        (``self.windows``, what the audit asks for), the same arrays to the bit.
        """
        empty = np.empty(0, dtype=np.float64)
        lo, hi = ms_at_or_after(start), ms_at_or_after(end)
        if hi <= lo:
            return empty, empty.copy()
        with self._db.read("read_window") as conn:
            sid = self._stream_id(conn, site, device, sensor)
            if sid is None:
                return empty, empty.copy()
            if held and self.windows.budget_bytes > 0:
                ts_ms, values = self.windows.read(conn, sid, lo, hi)
                return ts_ms / 1000.0, values.copy()
            ts_ms, values = fetch_rows(conn, sid, lo, hi)
        return ts_ms / 1000.0, values

    def count_in_window(self, site: str, device: str, sensor: str, start: float, end: float,
                        bounds: Sequence[tuple[float, float]] = ()) -> tuple[int,
                                                                             tuple[int, ...]]:
        """The stored readings of one stream with start <= ts < end (nulls included), and
        how many of them lie outside each ``(low, high)`` of ``bounds`` (what ingest kept
        flagged as out of range, judged by today's range; a null is outside nothing): one
        held read (``read_window(held=True)``) for them all."""
        values = self.read_window(site, device, sensor, start, end, held=True)[1]
        return len(values), tuple(int(np.count_nonzero((values < low) | (values > high)))
                                  for low, high in bounds)

    def count_outside(self, site: str, device: str, sensor: str, start: float, end: float,
                      low: float, high: float) -> int:
        """Stored readings of one stream with start <= ts < end whose value lies outside
        [low, high], counted by the file itself."""
        with self._db.read("count_outside") as conn:
            sid = self._stream_id(conn, site, device, sensor)
            if sid is None:
                return 0
            row = conn.execute(
                "SELECT count(*) FROM readings WHERE stream_id = ? AND ts_ms >= ? AND ts_ms < ? "
                "AND (value < ? OR value > ?)",
                (sid, ms_at_or_after(start), ms_at_or_after(end), low, high)).fetchone()
        return int(row[0])

    def streams(self) -> list[StreamInfo]:
        """Every stream with its time span and reading count (kept by triggers: no scan)."""
        with self._db.read("streams") as conn:
            rows = conn.execute(
                "SELECT id, site, device, sensor, unit, first_ts_ms, last_ts_ms, n "
                "FROM streams ORDER BY site, device, sensor"
            ).fetchall()
        return [
            StreamInfo(id=sid, site=site, device=device, sensor=sensor, unit=unit,
                       first_ts=ms_or_none(first), last_ts=ms_or_none(last), count=int(n))
            for sid, site, device, sensor, unit, first, last, n in rows
        ]

    def stream_keys(self) -> set[tuple[str, str, str]]:
        """Every (site, device, sensor) stream held (ingest admits new ones up to a cap)."""
        with self._db.read("stream_keys") as conn:
            return {(site, device, sensor) for site, device, sensor in
                    conn.execute("SELECT site, device, sensor FROM streams")}

    def known_devices(self) -> set[str]:
        """Every device the store holds anything of: readings, meta or events."""
        with self._db.read("known_devices") as conn:
            return {device for (device,) in conn.execute(
                "SELECT device FROM streams UNION SELECT device FROM meta_versions "
                "UNION SELECT device FROM events")}

    def last_reading_at(self) -> float | None:
        """The newest reading's timestamp over every stream (kept by the insert trigger)."""
        with self._db.read("last_reading_at") as conn:
            row = conn.execute("SELECT max(last_ts_ms) FROM streams").fetchone()
        return ms_or_none(row[0])

    def purge(self, older_than: float, chunk: int = 5000) -> int:
        """Delete raw readings with ``ts < older_than``; returns how many.

        Works stream by stream in chunks of at most ``chunk`` rows, each its own short
        transaction, so the ingest writer waits at most one chunk for the lock.
        """
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        cutoff = ms_at_or_after(older_than)
        with self._db.read("purge_readings") as conn:
            sids = [row[0] for row in conn.execute(
                "SELECT id FROM streams WHERE first_ts_ms < ?", (cutoff,))]
        return sum(self._purge_stream(sid, cutoff, chunk) for sid in sids)

    def drop_empty_streams(self) -> int:
        """Delete the streams retention left without a reading, so that their places
        (``[ingest] max_streams``) and, with nothing else of them, their devices' come back;
        returns how many. The stream-id cache forgets them in the same transaction (a
        reading that arrives later creates its stream again)."""
        with self._db.write("drop_empty_streams") as conn:
            rows = conn.execute(
                "SELECT id, site, device, sensor FROM streams WHERE n = 0 AND NOT EXISTS "
                "(SELECT 1 FROM readings WHERE stream_id = streams.id)").fetchall()
            if not rows:
                return 0
            conn.executemany("DELETE FROM streams WHERE id = ?", [(r[0],) for r in rows])
            for _, site, device, sensor in rows:
                self._stream_ids.pop((site, device, sensor), None)
        self.windows.forget_streams(r[0] for r in rows)
        self._db.directory_generation += 1
        return len(rows)

    def _purge_stream(self, sid: int, cutoff: int, chunk: int) -> int:
        deleted = 0
        while True:
            with self._db.write("purge_readings") as conn:
                bound_row = conn.execute(
                    "SELECT ts_ms FROM readings WHERE stream_id = ? AND ts_ms < ? "
                    "ORDER BY ts_ms LIMIT 1 OFFSET ?",
                    (sid, cutoff, chunk),
                ).fetchone()
                bound = cutoff if bound_row is None else int(bound_row[0])
                cur = conn.execute(
                    "DELETE FROM readings WHERE stream_id = ? AND ts_ms < ?", (sid, bound)
                )
                deleted += cur.rowcount
                # The delete trigger keeps n; the span is recomputed from the key (cheap).
                conn.execute(
                    "UPDATE streams SET "
                    "first_ts_ms = (SELECT min(ts_ms) FROM readings WHERE stream_id = ?1), "
                    "last_ts_ms = (SELECT max(ts_ms) FROM readings WHERE stream_id = ?1) "
                    "WHERE id = ?1",
                    (sid,),
                )
            if bound == cutoff:
                return deleted
