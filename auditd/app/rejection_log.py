"""Rejections in the log, rate-limited: one line per reason per device per interval.

A device that sends garbage once a second must not fill the journal, and a device that
sends it once a day must not go unseen. So the first rejection of a (reason, device) is
logged at once (``message_rejected``, with its topic and detail); the ones that follow
within ``interval_s`` are only counted, and a line with that count (``count``: the
rejections this line stands for, ``since``: when its interval began) is logged when the
interval is over, by :meth:`RejectionLog.flush` (the daemon's main loop calls it every
second) or by the next rejection after it. Nothing is lost on the way out:
:meth:`RejectionLog.close` logs what is still counted. Beyond ``MAX_KEYS`` pairs at once
(a flood of invented device ids) a reason's further devices share one line, device ``*``.

The quarantine keeps every rejection (``sensor-auditd quarantine``); this is only what a
person reading the journal sees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from auditd import logs
from auditd.model import Rejection
from auditd.text import printable

log = logs.get("auditd.app.rejections")

DEFAULT_INTERVAL_S = 60.0
DETAIL_CHARS = 300
MAX_KEYS = 200
"""(reason, device) pairs followed at once; beyond them (a flood of invented device ids)
a reason's rejections share one line, device ``*``, so that the log stays bounded too."""
MANY = "*"


@dataclass
class _Window:
    started: float
    counted: int = 0
    """Rejections since the last line."""
    topic: str = ""
    detail: str = ""


class RejectionLog:
    """Counts rejections per (reason, device) and logs at most one line per interval each.
    Thread-safe: the writer thread notes, the main loop flushes."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.time, max_keys: int = MAX_KEYS) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()

    def note(self, rejections: Iterable[Rejection]) -> None:
        """Count ``rejections`` (committed to the quarantine); log the first of each
        (reason, device) at once, and a count when its interval is over."""
        with self._lock:
            for rejection in rejections:
                now = self._clock()
                key = (rejection.reason, rejection.device or "")
                if key not in self._windows and len(self._windows) >= self.max_keys:
                    key = (rejection.reason, MANY)
                window = self._windows.get(key)
                if window is not None and now - window.started < self.interval_s:
                    window.counted += 1
                    window.topic, window.detail = rejection.topic, rejection.detail
                    continue
                if window is not None and window.counted:
                    self._emit(key, window)
                self._windows[key] = _Window(started=now)
                self._emit(key, _Window(now, 1, rejection.topic, rejection.detail))

    def flush(self, now: float | None = None) -> None:
        """Log the counts of the intervals that are over (and forget quiet keys)."""
        with self._lock:
            at = self._clock() if now is None else now
            for key, window in list(self._windows.items()):
                if at - window.started < self.interval_s:
                    continue
                if window.counted:
                    self._emit(key, window)
                del self._windows[key]

    def close(self) -> None:
        """Log every count still held (at shutdown)."""
        with self._lock:
            for key, window in self._windows.items():
                if window.counted:
                    self._emit(key, window)
            self._windows.clear()

    def _emit(self, key: tuple[str, str], window: _Window) -> None:
        reason, device = key
        log.warning("message_rejected", reason=reason, device=device or None,
                    count=window.counted, since=round(window.started, 3),
                    interval_s=self.interval_s, topic=printable(window.topic[:200]),
                    detail=printable(window.detail[:DETAIL_CHARS]),
                    hint="sensor-auditd quarantine --reason " + reason
                    + (f" --device {device}" if device and device != MANY else ""))
        window.counted = 0
