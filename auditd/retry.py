"""When to try again, and how long to wait: one answer for every loop that retries.

A failed write has one of two kinds of cause, and they call for opposite responses:

* **The environment's** (the disk is full, another process holds the lock, an I/O error,
  the file became read-only): nothing is wrong with the data, so the very same write is
  retried with backoff and nothing is acknowledged meanwhile; the broker keeps the rest.
* **The message's** (a value the store cannot take: a constraint, a string or blob too
  big, a type or an encoding the driver refuses): retrying would fail for ever and hold
  back every message behind it, so the batch is split until the message is isolated,
  and that message is quarantined (``auditd.ingest``).

The decision is made on SQLite's result code (``sqlite3.Error.sqlite_errorcode``, Python
3.11+), never on the text of a message, which changes between SQLite versions and locales.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from typing import Final

# SQLite's primary result codes (https://www.sqlite.org/rescode.html); an extended code
# carries its primary one in the low byte.
_TOOBIG: Final = 18
_CONSTRAINT: Final = 19
_MISMATCH: Final = 20
_RANGE: Final = 25

DATA_CODES: Final = frozenset({_TOOBIG, _CONSTRAINT, _MISMATCH, _RANGE})
"""Primary codes that only the data of the statement can cause. Every other code (BUSY,
LOCKED, FULL, IOERR, READONLY, NOMEM, CANTOPEN, CORRUPT, a generic ERROR from a damaged
schema...) is the environment's: the same statement may succeed later, and in any case
blaming the message would quarantine good data."""


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is the environment's fault and the same write should be retried;
    False when it is the data's (the message must be isolated and quarantined).

    An error that says it is transient (``StoreError.transient``) is believed. An SQLite
    error is judged by its result code. Without a code, ``MemoryError`` is the
    environment's; anything else raised while binding or encoding a value
    (``UnicodeEncodeError``, ``OverflowError``, ``sqlite3.ProgrammingError`` "Error binding
    parameter", ``RecursionError``, a ``TypeError``) is the data's.
    """
    flagged = getattr(exc, "transient", None)
    if isinstance(flagged, bool):
        return flagged
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:  # raised by the driver itself: a value it cannot bind
            return False
        return (int(code) & 0xFF) not in DATA_CODES
    return isinstance(exc, MemoryError)


def error_code(exc: BaseException) -> str | None:
    """SQLite's name for the error (``SQLITE_FULL``, ``SQLITE_CONSTRAINT_NOTNULL``), if any."""
    name = getattr(exc, "sqlite_errorname", None)
    if name is None and exc.__cause__ is not None:
        name = getattr(exc.__cause__, "sqlite_errorname", None)
    return str(name) if name else None


def backoff_delays(first: float, cap: float,
                   rng: random.Random | None = None) -> Callable[[int], float]:
    """Exponential backoff with full jitter: attempt n waits up to min(cap, first * 2**n)."""
    draw = rng or random.Random()

    def delay(attempt: int) -> float:
        return draw.uniform(0, min(cap, first * (2 ** min(max(attempt, 0), 20))))

    return delay
