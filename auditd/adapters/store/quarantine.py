"""The quarantine: every message or reading refused, with its reason, kept as evidence.

Bounded by rows and bytes (``Bounds``): a flood of one device's garbage becomes one row a
minute (the first payload and a count), and the oldest rows go beyond the cap. The
per-reason totals are counters (``Counters.rejections``), so they stay right after a purge.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from auditd import reasons
from auditd.adapters.store.counters import add_counters
from auditd.adapters.store.database import Bounds, Database
from auditd.adapters.store.schema import QUARANTINE_ROW_BYTES
from auditd.model import Outcome, RawMessage, Rejection
from auditd.text import printable

QUARANTINE_BUCKET_S: Final = 60
"""Rejections of one device, sensor and reason within one such interval share a row (the
first payload and detail, a count, the last time), so a flood costs a row a minute and the
audit can still count out-of-range readings per window to the minute."""

QUARANTINE_SHED: Final = 0.9
"""Beyond a quarantine cap, the oldest rows go until this share of it is used, so that
the cap is not enforced again at every batch."""

ISOLATED_REASONS: Final = (reasons.DUPLICATE_CONFLICT, reasons.STORE_REJECTED)
"""Rejections kept one row each, never merged: each is one reading or message of its own
(both values of a conflict, the error of a refused message)."""


@dataclass(frozen=True, slots=True)
class RejectedDevice:
    """A device seen only through quarantined messages of one reason."""

    site: str
    """The site level of its topic (``{prefix}/{site}/{device}/{kind}``), as sent."""
    sensors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Quarantined(Rejection):
    """A quarantine row: the first rejection of its kind (device, sensor, reason) within
    its minute, and how many there were (``duplicate_conflict`` and ``store_rejected`` rows
    stand for one each)."""

    count: int = 1
    last_received_at: float | None = None


def insert_rejections(conn: sqlite3.Connection, rejections: Sequence[Rejection], *,
                      merge: bool) -> Counter[str]:
    """Quarantine rows, their text made storable (``auditd.text``). With ``merge``, a
    rejection of the same device, sensor and reason within the same minute as an
    earlier one only adds to that row's count (``QUARANTINE_BUCKET_S``)."""
    if rejections:
        rows = []
        for j in rejections:
            topic, detail = printable(j.topic), printable(j.detail)
            device = printable(j.device) if j.device is not None else None
            sensor = printable(j.sensor) if j.sensor is not None else None
            payload = bytes(j.payload)
            group = None
            if merge and j.reason not in ISOLATED_REASONS and math.isfinite(j.received_at):
                bucket = math.floor(j.received_at / QUARANTINE_BUCKET_S)
                group = f"{device or ''}|{sensor or ''}|{j.reason}|{bucket}"
            # Every text the row and its indexes hold (reason and group twice: column and
            # index), so that the byte cap bounds the file, not only the payloads.
            size = (len(topic.encode()) + len(detail.encode()) + len(payload)
                    + len((device or "").encode()) + len((sensor or "").encode())
                    + 2 * len(j.reason) + 2 * len((group or "").encode())
                    + QUARANTINE_ROW_BYTES)
            rows.append((j.received_at, topic, j.reason, detail, device, sensor, payload,
                         j.received_at, group, size))
        conn.executemany(
            "INSERT INTO quarantine (received_at, topic, reason, detail, device, sensor, "
            "payload, last_received_at, grp, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (grp) WHERE grp IS NOT NULL DO UPDATE SET count = count + 1, "
            "last_received_at = max(coalesce(last_received_at, received_at), "
            "excluded.last_received_at)",
            rows,
        )
    return Counter(j.reason for j in rejections)


REJECTED_REMEMBERED: Final = 2_000
"""Digests of the latest rejected messages the store keeps (``rejected_messages``): a
message the broker redelivers after a crash was in flight, among the last few hundred."""


def message_digest(message: RawMessage) -> bytes:
    """What identifies a message when the broker delivers it again: its packet identifier
    (kept by a redelivery), topic and payload, not its reception time. Garbage repeats
    itself; its packet identifiers do not, within the ``REJECTED_REMEMBERED`` latest."""
    return hashlib.blake2b(
        f"{message.packet_id}\0{message.topic}\0".encode("utf-8", "surrogatepass")
        + message.payload, digest_size=16).digest()


def remember_rejected(conn: sqlite3.Connection, outcomes: Sequence[Outcome]) -> None:
    """Keep the digest of every message of ``outcomes`` with rejections and a packet
    identifier (the latest ``REJECTED_REMEMBERED``), so that its redelivery is recognised."""
    digests = [(message_digest(o.message),) for o in outcomes
               if o.rejections and o.message is not None and o.message.packet_id is not None]
    if not digests:
        return
    conn.executemany("INSERT OR IGNORE INTO rejected_messages (digest) VALUES (?)", digests)
    conn.execute("DELETE FROM rejected_messages WHERE id <= "
                 "(SELECT max(id) FROM rejected_messages) - ?", (REJECTED_REMEMBERED,))


def keep_bounded(conn: sqlite3.Connection, bounds: Bounds) -> int:
    """Delete the oldest quarantine rows beyond either cap, down to ``QUARANTINE_SHED``
    of it; returns how many (also counted as ``quarantine_dropped``). Rows of
    ``ISOLATED_REASONS`` go only once no other row is left to go: they hold what is kept
    nowhere else (the second value of a conflict, a message the store refused), while the
    rest is evidence of garbage that a flood of more garbage may replace."""
    rows, size = conn.execute("SELECT rows, bytes FROM quarantine_usage").fetchone()
    if rows <= bounds.quarantine_max_rows and size <= bounds.quarantine_max_bytes:
        return 0
    shed_rows = rows - int(bounds.quarantine_max_rows * QUARANTINE_SHED)
    shed_bytes = size - int(bounds.quarantine_max_bytes * QUARANTINE_SHED)
    dropped = 0
    for kept in (True, False):
        if shed_rows <= 0 and shed_bytes <= 0:
            break
        # Oldest first within the class: each row's running row count and byte total.
        chosen = conn.execute(
            "SELECT id, n, total FROM (SELECT id, row_number() OVER (ORDER BY id) AS n, "
            "sum(size) OVER (ORDER BY id) AS total FROM quarantine WHERE "
            "(reason IN (?, ?)) = ?) WHERE n >= ? AND total >= ? ORDER BY id LIMIT 1",
            (*ISOLATED_REASONS, not kept, max(shed_rows, 0), max(shed_bytes, 0))).fetchone()
        if chosen is None:  # the whole class is not enough: all of it goes
            cur = conn.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM quarantine WHERE "
                "(reason IN (?, ?)) = ?", (*ISOLATED_REASONS, not kept)).fetchone()
            n, gone = int(cur[0]), int(cur[1])
            conn.execute("DELETE FROM quarantine WHERE (reason IN (?, ?)) = ?",
                         (*ISOLATED_REASONS, not kept))
        else:
            last, n, gone = chosen
            conn.execute("DELETE FROM quarantine WHERE id <= ? AND (reason IN (?, ?)) = ?",
                         (last, *ISOLATED_REASONS, not kept))
        dropped += int(n)
        shed_rows -= int(n)
        shed_bytes -= int(gone)
    if dropped:
        add_counters(conn, {"quarantine_dropped": dropped})
    return dropped


@dataclass(frozen=True, slots=True)
class QuarantineGroup:
    """What was refused for one reason from one device on one topic: first and last seen,
    how many, and a recent one as a sample (the detail and payload of the newest row: the
    first rejection of its minute)."""

    reason: str
    device: str | None
    topic: str
    first_seen: float
    last_seen: float
    count: int
    sample_detail: str
    sample_payload: bytes


class Quarantine:
    """The quarantined messages and readings, and what they say about devices."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def groups(self, *, device: str | None = None, reason: str | None = None,
               limit: int | None = None) -> list[QuarantineGroup]:
        """The quarantine by (reason, device, topic), most recently seen first; ``device``
        is a glob (``th-north-*``), ``reason`` a code of ``auditd.reasons``. Counts are of
        the rows the quarantine still holds (its caps and retention drop the oldest; the
        totals since the store was created are ``Counters.rejections``)."""
        with self._db.read("quarantine_groups") as conn:
            rows = conn.execute(
                "SELECT g.reason, g.device, g.topic, g.first, g.last, g.n, "
                "q.detail, q.payload FROM (SELECT reason, device, topic, min(received_at) "
                "AS first, max(coalesce(last_received_at, received_at)) AS last, "
                "sum(count) AS n, max(id) AS "
                "sample FROM quarantine WHERE (?1 IS NULL OR device GLOB ?1) "
                "AND (?2 IS NULL OR reason = ?2) GROUP BY reason, device, topic) AS g "
                "JOIN quarantine AS q ON q.id = g.sample "
                "ORDER BY g.last DESC, g.reason, g.device, g.topic LIMIT ?3",
                (device, reason, -1 if limit is None else limit)).fetchall()
        return [QuarantineGroup(reason=r, device=dev, topic=t, first_seen=float(first),
                                last_seen=float(last), count=int(n), sample_detail=d,
                                sample_payload=bytes(p))
                for r, dev, t, first, last, n, d, p in rows]

    def recent(self, reason: str | None = None, limit: int = 100) -> list[Quarantined]:
        """The most recent quarantine rows (optionally of one reason), newest first."""
        with self._db.read("quarantined") as conn:
            rows = conn.execute(
                "SELECT topic, reason, detail, payload, received_at, device, sensor, count, "
                "coalesce(last_received_at, received_at) FROM quarantine "
                "WHERE (?1 IS NULL OR reason = ?1) ORDER BY id DESC LIMIT ?2",
                (reason, limit),
            ).fetchall()
        return [
            Quarantined(topic=t, reason=r, detail=d, payload=bytes(p), received_at=at,
                        device=dev, sensor=sen, count=int(n), last_received_at=last)
            for t, r, d, p, at, dev, sen, n, last in rows
        ]

    def counts_of(self, device: str) -> dict[tuple[str | None, str], int]:
        """(sensor, reason) -> quarantined rows of one device, over the whole store."""
        with self._db.read("quarantine_counts") as conn:
            rows = conn.execute(
                "SELECT sensor, reason, sum(count) FROM quarantine WHERE device = ? "
                "GROUP BY sensor, reason", (device,)).fetchall()
        return {(sensor, reason): int(n) for sensor, reason, n in rows}

    def rejected_between(self, device: str, sensor: str, start: float,
                         end: float) -> dict[str, int]:
        """Quarantined readings of one stream received in [start, end), by reason (rows
        merged within a minute count where their first arrival falls)."""
        with self._db.read("rejected_between") as conn:
            rows = conn.execute(
                "SELECT reason, sum(count) FROM quarantine WHERE device = ? AND sensor = ?"
                " AND received_at >= ? AND received_at < ? GROUP BY reason",
                (device, sensor, start, end)).fetchall()
        return {reason: int(n) for reason, n in rows}

    def rejected_devices(self, reason: str, since: float) -> dict[str, RejectedDevice]:
        """Devices with messages quarantined for ``reason`` received since ``since``: the
        site their topic named and the sensors the rejections name (none for a
        whole-message rejection)."""
        with self._db.read("rejected_devices") as conn:
            rows = conn.execute(
                "SELECT device, sensor, max(topic) FROM quarantine WHERE reason = ? "
                "AND received_at >= ? AND device IS NOT NULL GROUP BY device, sensor "
                "ORDER BY device, sensor", (reason, since)).fetchall()
        sites: dict[str, str] = {}
        sensors: dict[str, list[str]] = {}
        for device, sensor, topic in rows:
            levels = str(topic).split("/")
            sites.setdefault(device, levels[-3] if len(levels) >= 3 else "")
            names = sensors.setdefault(device, [])
            if sensor is not None:
                names.append(sensor)
        return {device: RejectedDevice(sites[device], tuple(names))
                for device, names in sensors.items()}

    def usage(self) -> tuple[int, int]:
        """(rows, bytes) of the quarantine, as its caps count them."""
        with self._db.read("quarantine_usage") as conn:
            row = conn.execute("SELECT rows, bytes FROM quarantine_usage").fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def purge(self, older_than: float, chunk: int = 5000) -> int:
        """Delete quarantined messages received before ``older_than``, in short transactions.

        The per-reason totals in :meth:`rejection_counts` are unaffected.
        """
        return self._db.purge_chunks(
            "purge_quarantine",
            "DELETE FROM quarantine WHERE id IN "
            "(SELECT id FROM quarantine WHERE received_at < ? ORDER BY id LIMIT ?)",
            older_than,
            chunk,
        )
