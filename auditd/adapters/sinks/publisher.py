"""Drains the store's outbox to the broker; a row is deleted only on its PUBACK.

Findings made while the broker is down wait in the outbox (on disk) and go out when it
returns; a restart loses none of them. Delivery is at least once: a row published just
before a crash is published again after it, which the retained finding topic absorbs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from auditd import logs
from auditd.adapters.sinks.drain import DrainThread
from auditd.adapters.sources.mqtt import MqttLink
from auditd.adapters.store import Store
from auditd.retry import Backoff

log = logs.get("auditd.adapters.sinks.publisher")


REFUSED = Backoff(2.0, 300.0)
"""How long a row the broker refused (an ACL, a quota) waits before it is offered again:
that will not change in a millisecond."""


class OutboxPublisher(DrainThread):
    failure_event = "outbox_drain_failed"

    def __init__(self, store: Store, link: MqttLink, *, max_in_flight: int = 50,
                 poll_s: float = 1.0, on_progress: Callable[[], None] = lambda: None) -> None:
        super().__init__("sensor-auditd-publisher", poll_s=poll_s, on_progress=on_progress)
        self._store = store
        self._link = link
        self._max_in_flight = max_in_flight
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()
        self._confirmations: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._retry_at: dict[int, float] = {}
        self._attempts: dict[int, int] = {}
        self.delivered = 0

    def _finish(self) -> None:
        try:
            self._settle()  # what the broker confirmed before the stop is not sent again
        except Exception as exc:
            log.error("outbox_settle_failed", error=repr(exc))

    def _settle(self) -> None:
        """Record the broker's answers here, not on paho's thread: a store write there would
        hold paho's locks (and stall telemetry) for the length of an fsync."""
        done: list[int] = []
        while True:
            try:
                row_id, ok = self._confirmations.get_nowait()
            except queue.Empty:
                break
            if ok:
                done.append(row_id)
                self._retry_at.pop(row_id, None)
                self._attempts.pop(row_id, None)
                continue
            self._store.outbox.failed(row_id, "broker refused the publish")
            attempts = self._attempts.get(row_id, 0) + 1
            self._attempts[row_id] = attempts
            self._retry_at[row_id] = time.monotonic() + REFUSED.delay(attempts - 1)
            with self._lock:
                self._in_flight.discard(row_id)
        if done:
            self._store.outbox.done(done)
            self.delivered += len(done)
            with self._lock:
                self._in_flight.difference_update(done)

    def drain_once(self) -> int:
        """Publish the oldest rows not yet in flight; return how many were handed to paho."""
        self._settle()
        if not self._link.connected:
            return 0
        # The broker's Receive Maximum (CONNACK) bounds what it accepts unacknowledged; one
        # of it stays free for the link's own status message.
        window = max(1, min(self._max_in_flight, self._link.send_quota - 1))
        with self._lock:
            room = window - len(self._in_flight)
            busy = set(self._in_flight)
        if room <= 0:
            return 0
        sent = 0
        now = time.monotonic()
        waiting = {i for i, at in self._retry_at.items() if at > now}
        for row in self._store.outbox.peek(room + len(busy) + len(waiting)):
            if row.id in busy or row.id in waiting:
                continue
            with self._lock:
                self._in_flight.add(row.id)
            ok = self._link.publish(row.topic, row.payload, qos=row.qos, retain=row.retain,
                                    on_puback=self._confirmation(row.id))
            if not ok:
                with self._lock:
                    self._in_flight.discard(row.id)
                break
            sent += 1
            if sent >= room:
                break
        return sent

    def _confirmation(self, row_id: int) -> Callable[[bool], None]:
        def confirmed(ok: bool) -> None:
            self._confirmations.put((row_id, ok))
            if ok:
                self._wake.set()

        return confirmed
