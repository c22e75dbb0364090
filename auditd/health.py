"""Liveness by progress, not by existence: what the systemd watchdog is fed from.

A thread that is alive but blocked (a callback waiting on a lock, a hung fsync) keeps
``is_alive()`` true for ever. Each loop therefore stamps a :class:`Heartbeat` as it turns,
and the daemon pings the watchdog only while every stamp is younger than that loop's limit;
when one goes stale, systemd's ``WatchdogSec`` runs out and it restarts the service.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


class Heartbeat:
    """The monotonic time a loop last turned; ``beat`` is one float store (cheap, lock-free)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.at = clock()

    def beat(self) -> None:
        self.at = self._clock()

    def age(self) -> float:
        return self._clock() - self.at


@dataclass(frozen=True, slots=True)
class Stale:
    """A loop that has not turned within its limit."""

    name: str
    age_s: float
    limit_s: float


WRITER_LIMIT_S = 30.0
"""The writer turns every 0.2 s idle; a commit may wait out SQLite's 5 s busy timeout and a
retry at most 10 s of backoff, each followed by a beat."""
PUBLISHER_LIMIT_S = 30.0
"""The publisher turns at least once a second."""


def network_limit_s(keepalive: int) -> float | None:
    """paho's thread sends a PINGREQ after ``keepalive`` idle seconds, so even an idle link
    shows a turn that often; None (not checked) when keepalive is off."""
    return 1.5 * keepalive + 5.0 if keepalive > 0 else None


def stale(ages: Mapping[str, float], limits: Mapping[str, float | None]) -> list[Stale]:
    """The loops whose last turn is older than their limit (a None limit is never stale)."""
    out = []
    for name, age in ages.items():
        limit = limits.get(name)
        if limit is not None and age > limit:
            out.append(Stale(name, round(age, 1), limit))
    return out
