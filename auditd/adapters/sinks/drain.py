"""The loop both sinks run: drain what committed transactions left, wait, repeat.

The outbox publisher and the ticket dispatcher each own one such thread. A commit that
adds work wakes it (``wake``) so nothing waits for the next poll; otherwise it polls.
Every turn reports progress (the systemd watchdog is fed from it), and a failed drain is
logged and retried at the next turn: the thread must outlive a bad day of the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from auditd import logs

log = logs.get("auditd.adapters.sinks")


class DrainThread(threading.Thread):
    failure_event = "drain_failed"
    """The log event of a failed turn (each sink names its own)."""

    def __init__(self, name: str, *, poll_s: float,
                 on_progress: Callable[[], None] = lambda: None) -> None:
        super().__init__(name=name, daemon=True)
        self._poll_s = poll_s
        self._on_progress = on_progress
        self._wake = threading.Event()
        self._stop_requested = threading.Event()

    def wake(self) -> None:
        """New work was committed: look now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stop_requested.set()
        self._wake.set()

    def run(self) -> None:
        while not self._stop_requested.is_set():
            try:
                self.drain_once()
            except Exception as exc:
                log.error(self.failure_event, error=repr(exc))
            self._on_progress()
            self._wake.wait(self._sleep_s())
            self._wake.clear()
        self._finish()

    def drain_once(self) -> int:
        """Move out what is due; return how much went."""
        raise NotImplementedError

    def _sleep_s(self) -> float:
        """How long to wait for a wake-up before the next turn."""
        return self._poll_s

    def _finish(self) -> None:
        """After the last turn, before the thread ends."""
