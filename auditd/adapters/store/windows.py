"""The audit's windows kept between audits, so that an audit reads what arrived since the
last one rather than its whole window again (issue 17: cost that grows with new data).

An hourly audit of a day's window re-reads 23 hours it read an hour ago, and its baseline
(the last passing window before it) a day it read as its window yesterday. ``WindowCache``
keeps, per stream, the rows of one contiguous span of time; a read of a window that
overlaps it fetches only the rows after the span (and before it, where the window starts
earlier) and serves the rest from memory.

What is served is exactly what a fresh read would return, never merely close to it. A
stream's ``writes`` counter (schema migration 11: one for every row inserted or deleted,
kept by the triggers and by an import that suspends them) says whether the held rows are
still the store's: since they were fetched, the store must have gained only rows at or
after the span's end, i.e. ``writes`` grew by exactly as much as the count of rows at or
after that end (inserts before the end, plus deletions anywhere, plus deletions after it
counted twice, must add up to zero). A late reading inside the span, a deletion anywhere
(retention), or an import of old data breaks the equality and the stream is fetched
afresh; so does a stream deleted and created again under the same id (its ``born``
differs). The check and the fetches share one read transaction, so they see one state of
the file.

Memory is bounded: ``budget_bytes`` over every stream (16 bytes a reading held); a stream
that does not fit is read uncached. ``end_pass`` (the auditor calls it after each run)
drops what the run did not read and trims each stream's span to the earliest instant the
run asked for, so a gateway holds one window and one baseline a stream at most.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

@dataclass(slots=True)
class _Span:
    """One stream's held rows: every row with ``lo <= ts_ms < hi`` as of ``writes``."""

    lo: int
    hi: int
    ts_ms: IntArray
    values: FloatArray
    writes: int
    """The stream's ``writes`` counter when the rows were checked."""
    born: int
    """The stream's ``born``: a stream deleted and created again (its id reused) is
    another stream, whatever its ``writes``."""
    beyond: int
    """Rows the stream held at or after ``hi`` then (a device clock ahead of the audit)."""
    asked_from: int | None = None
    """The earliest instant asked for since the last ``end_pass``; None: not read since."""

    @property
    def nbytes(self) -> int:
        return int(self.ts_ms.nbytes + self.values.nbytes)


def fetch_rows(conn: sqlite3.Connection, sid: int, lo: int, hi: int) -> tuple[IntArray,
                                                                             FloatArray]:
    """Times (epoch ms) and values (NaN for null) of the stream's rows with ``lo <= ts_ms <
    hi``, by time: one range scan of the readings' key. ``fromiter`` for the integer column
    and one ``array()`` over the values measured about twice as fast as ``np.array(rows)``
    on 100k rows."""
    rows = conn.execute(
        "SELECT ts_ms, value FROM readings WHERE stream_id = ? AND ts_ms >= ? AND ts_ms < ? "
        "ORDER BY ts_ms", (sid, lo, hi)).fetchall()
    ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    values = np.array([r[1] for r in rows], dtype=np.float64)
    return ts, values


def _count_from(conn: sqlite3.Connection, sid: int, lo: int) -> int:
    row = conn.execute("SELECT count(*) FROM readings WHERE stream_id = ? AND ts_ms >= ?",
                       (sid, lo)).fetchone()
    return int(row[0])


class WindowCache:
    """Streams' recently read rows, checked against the store's ``writes`` on every use.

    Thread-safe: the held spans are swapped under a lock; the reads themselves run on the
    caller's connection (each thread has its own)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._spans: dict[int, _Span] = {}
        self._held_bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        """Reads served from a held span (its new rows fetched)."""
        self.misses = 0
        """Reads fetched whole: nothing held, a span that no longer matches, or no room."""

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def read(self, conn: sqlite3.Connection, sid: int, lo: int, hi: int) -> tuple[IntArray,
                                                                                   FloatArray]:
        """Times (epoch ms) and values of the stream's rows with ``lo <= ts_ms < hi``."""
        with self._lock:
            held = self._spans.get(sid)
        if held is not None and hi < held.lo:
            # a window before the held span and apart from it (a baseline from before a
            # long failure): read as it is, not held, so no span grows over the gap
            self.misses += 1
            return fetch_rows(conn, sid, lo, hi)
        conn.execute("BEGIN")
        try:
            row = conn.execute("SELECT writes, born FROM streams WHERE id = ?",
                               (sid,)).fetchone()
            if row is None:  # deleted meanwhile: nothing to read, nothing to hold
                self.misses += 1
                return fetch_rows(conn, sid, lo, hi)
            writes, born = int(row[0]), int(row[1])
            span = self._extended(conn, sid, held, lo, hi, writes) \
                if held is not None and held.born == born and lo <= held.hi else None
            if span is None:
                self.misses += 1
                ts, values = fetch_rows(conn, sid, lo, hi)
                span = _Span(lo, hi, ts, values, writes, born, _count_from(conn, sid, hi))
            else:
                self.hits += 1
        finally:
            if conn.in_transaction:  # SQLite may have ended it itself after an error
                conn.execute("COMMIT")
        span.asked_from = lo if held is None or held.asked_from is None \
            else min(lo, held.asked_from)
        self._keep(sid, held, span)
        i, j = np.searchsorted(span.ts_ms, (lo, hi), side="left")
        return span.ts_ms[i:j], span.values[i:j]

    def _extended(self, conn: sqlite3.Connection, sid: int, held: _Span, lo: int, hi: int,
                  writes: int) -> _Span | None:
        """``held`` grown to cover ``[lo, hi)``, or None where the store changed under it."""
        new_hi = max(hi, held.hi)
        tail_ts, tail_values = fetch_rows(conn, sid, held.hi, new_hi)
        beyond = _count_from(conn, sid, new_hi)
        if writes - held.writes != len(tail_ts) + beyond - held.beyond:
            return None
        parts_ts, parts_values = [held.ts_ms], [held.values]
        new_lo = held.lo
        if lo < held.lo:
            head_ts, head_values = fetch_rows(conn, sid, lo, held.lo)
            parts_ts.insert(0, head_ts)
            parts_values.insert(0, head_values)
            new_lo = lo
        parts_ts.append(tail_ts)
        parts_values.append(tail_values)
        return _Span(new_lo, new_hi, np.concatenate(parts_ts), np.concatenate(parts_values),
                     writes, held.born, beyond)

    def _keep(self, sid: int, held: _Span | None, span: _Span) -> None:
        with self._lock:
            if self._spans.get(sid) is not held:
                return  # another thread replaced it meanwhile: its span is as good
            released = held.nbytes if held is not None else 0
            if self._held_bytes - released + span.nbytes > self.budget_bytes:
                if held is not None:
                    del self._spans[sid]
                    self._held_bytes -= released
                return
            self._spans[sid] = span
            self._held_bytes += span.nbytes - released

    def end_pass(self) -> None:
        """Forget the streams not read since the last pass and, of the others, the rows
        before the earliest instant asked for: the next audit asks for no earlier ones.
        Spans are replaced, never changed in place: a read on another thread may hold one."""
        with self._lock:
            for sid, span in list(self._spans.items()):
                self._held_bytes -= span.nbytes
                if span.asked_from is None:
                    del self._spans[sid]
                    continue
                cut = int(np.searchsorted(span.ts_ms, span.asked_from, side="left"))
                kept = _Span(max(span.lo, span.asked_from), span.hi, span.ts_ms[cut:].copy(),
                             span.values[cut:].copy(), span.writes, span.born, span.beyond)
                self._spans[sid] = kept
                self._held_bytes += kept.nbytes

    def forget_streams(self, sids: Iterable[int]) -> None:
        """Let go of deleted streams (``Readings.drop_empty_streams``)."""
        with self._lock:
            for sid in sids:
                span = self._spans.pop(sid, None)
                if span is not None:
                    self._held_bytes -= span.nbytes
