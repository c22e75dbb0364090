"""What the gateway last queued on each device's inventory topic, so that an inventory is
published when it changes and once: not again at every audit, and not once per audit that
ran while the broker was away.

A new version of a device's inventory replaces a version still waiting in the outbox for
the same (retained) topic: the broker would keep only the last one anyway, and the fleet
needs only the current one. Both happen in the audit's transaction (``Findings.save``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from auditd.adapters.store.database import Database
from auditd.domain.inventory import Published


@dataclass(frozen=True, slots=True)
class InventoryMessage:
    """One device's inventory, ready for the outbox."""

    topic: str
    device: str
    payload: bytes
    content_hash: str
    last_seen: float | None


def queue_inventory(conn: sqlite3.Connection, messages: Sequence[InventoryMessage],
                    now: float) -> None:
    """In the caller's transaction: drop what is still pending for each topic, queue the new
    version (retained, QoS 1) and remember it as published."""
    for m in messages:
        conn.execute("DELETE FROM outbox WHERE topic = ?", (m.topic,))
        conn.execute(
            "INSERT INTO outbox (created_at, topic, payload, qos, retain) VALUES (?, ?, ?, 1, 1)",
            (now, m.topic, bytes(m.payload)))
        conn.execute(
            "INSERT INTO inventory_published (topic, device, hash, last_seen, queued_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (topic) DO UPDATE SET hash = excluded.hash, "
            "last_seen = excluded.last_seen, queued_at = excluded.queued_at",
            (m.topic, m.device, m.content_hash, m.last_seen, now))


class Inventory:
    """The inventory versions queued so far, by topic."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def published(self) -> dict[str, Published]:
        with self._db.read("inventory_published") as conn:
            rows = conn.execute(
                "SELECT topic, hash, last_seen FROM inventory_published").fetchall()
        return {topic: Published(digest, last_seen) for topic, digest, last_seen in rows}
