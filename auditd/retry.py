"""When to try again, and how long to wait: one answer for every loop that retries.

How long is :class:`Backoff` (and, for ticket deliveries, :class:`RetryPolicy`, which also
says when to give up). Whether to retry a failed write at all depends on whose fault it is,
and the two kinds of cause call for opposite responses:

* **The environment's** (the disk is full, another process holds the lock, an I/O error,
  the file became read-only): nothing is wrong with the data, so the very same write is
  retried with backoff and nothing is acknowledged meanwhile; the broker keeps the rest.
* **The message's** (a value the store cannot take: a constraint, a string or blob too
  big, a type or an encoding the driver refuses): retrying would fail for ever and hold
  back every message behind it, so the batch is split until the message is isolated,
  and that message is quarantined (``auditd.app.ingest``).

The decision is made on SQLite's result code (``sqlite3.Error.sqlite_errorcode``, Python
3.11+), never on the text of a message, which changes between SQLite versions and locales.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
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


# --------------------------------------------------------------------------- how long to wait


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off with "equal jitter": retry ``n`` (from 0) waits between half and
    all of ``min(cap_s, first_s * 2**n)``.

    The one back-off of every loop that retries: the MQTT reconnects, the batch writer's
    commit, the outbox's refused publishes and the ticket deliveries. Never zero, so a
    refusal is not retried in a tight loop; never in step, so gateways restarted together
    (or coming back to one ticket system after its outage) do not all return in the same
    second, while each still waits at least half the nominal delay.
    """

    first_s: float
    cap_s: float

    def nominal(self, attempt: int) -> float:
        """The ceiling of retry ``attempt``'s wait."""
        return min(self.cap_s, self.first_s * 2.0 ** min(max(attempt, 0), 60))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before retry ``attempt`` (0 for the first); ``rand`` draws from [0, 1)."""
        ceiling = self.nominal(attempt)
        return ceiling / 2 + rand() * ceiling / 2

    def delays(self, rng: random.Random | None = None) -> Callable[[int], float]:
        """``delay`` drawing from its own generator (seeded, in tests)."""
        draw = (rng or random.Random()).random
        return lambda attempt: self.delay(attempt, draw)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a ticket delivery is tried before it is dead-lettered, and how far apart
    (``[tickets]`` ``max_attempts``, ``backoff_min``, ``backoff_max``)."""

    max_attempts: int = 12
    backoff_min_s: float = 10.0
    backoff_max_s: float = 1800.0

    def delay(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        """The wait after ``attempts`` failed attempts (1 or more): ``backoff_min`` doubling
        to ``backoff_max``."""
        return Backoff(self.backoff_min_s, self.backoff_max_s).delay(attempts - 1, rand)
