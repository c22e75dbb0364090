"""Persistent totals (``counters``): they survive restarts and purges, and are written in
the same transaction as the data they count, so totals and data never disagree."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Final

from auditd.adapters.store.database import Database

COUNTER_REJECTED_PREFIX: Final = "rejected."
"""Persistent per-reason rejection totals live in ``counters`` under this prefix."""


def add_counters(conn: sqlite3.Connection, deltas: Mapping[str, int]) -> None:
    rows = [(name, int(delta)) for name, delta in deltas.items() if delta]
    if rows:
        conn.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            rows,
        )


class Counters:
    """Totals since the database was created."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, **deltas: int) -> None:
        """Add to persistent totals (they survive restarts and purges).

        Names that are not identifiers can be passed as ``**{"rejected.x": 1}``.
        """
        with self._db.write("add counters") as conn:
            add_counters(conn, deltas)

    def all(self) -> dict[str, int]:
        with self._db.read("counters") as conn:
            return {name: int(v) for name, v in conn.execute("SELECT name, value FROM counters")}

    def rejections(self) -> dict[str, int]:
        """Total rejections per reason since the database was created.

        Read from the persistent counters, not from ``quarantine``, so the totals stay
        right after :meth:`purge_quarantine` has dropped the old rows.
        """
        prefix = COUNTER_REJECTED_PREFIX
        with self._db.read("rejection_counts") as conn:
            rows = conn.execute(
                "SELECT name, value FROM counters WHERE name >= ? AND name < ? ORDER BY name",
                (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)),
            ).fetchall()
        return {name[len(prefix):]: int(v) for name, v in rows if v}
