"""The transactional outbox: MQTT messages written in the transaction that produced them
(findings, reports, tickets) and deleted on the broker's PUBACK, so a broker outage delays
them and a crash loses none."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from auditd.adapters.store.database import Database


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An MQTT message to publish once the transaction that produced it has committed."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An outbox message as stored, with the bookkeeping a publisher needs to retry it."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_at: float
    attempts: int
    last_error: str | None = None


def insert_outbox(conn: sqlite3.Connection, messages: Sequence[OutboxMessage],
                  now: float) -> None:
    """Queue ``messages`` in the caller's transaction."""
    if messages:
        conn.executemany(
            "INSERT INTO outbox (created_at, topic, payload, qos, retain) "
            "VALUES (?, ?, ?, ?, ?)",
            [(now, m.topic, bytes(m.payload), int(m.qos), int(m.retain)) for m in messages],
        )


class Outbox:
    """Messages waiting for the broker."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def peek(self, limit: int = 100) -> list[OutboxRow]:
        """The oldest pending messages, in the order they were produced."""
        with self._db.read("outbox_peek") as conn:
            rows = conn.execute(
                "SELECT id, topic, payload, qos, retain, created_at, attempts, last_error "
                "FROM outbox ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            OutboxRow(id=i, topic=t, payload=bytes(p), qos=int(q), retain=bool(r),
                      created_at=c, attempts=int(a), last_error=e)
            for i, t, p, q, r, c, a, e in rows
        ]

    def done(self, ids: Iterable[int]) -> None:
        """Forget messages the broker has acknowledged."""
        rows = [(int(i),) for i in ids]
        if rows:
            with self._db.write("outbox done") as conn:
                conn.executemany("DELETE FROM outbox WHERE id = ?", rows)

    def failed(self, id: int, error: str) -> None:
        """Record a failed publish attempt; the message stays queued."""
        with self._db.write("outbox failed") as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error, id),
            )

    def depth(self) -> tuple[int, float | None]:
        """(pending messages, created_at of the oldest) — for health checks and metrics."""
        with self._db.read("outbox_depth") as conn:
            count, oldest = conn.execute("SELECT count(*), min(created_at) FROM outbox").fetchone()
        return int(count), oldest
