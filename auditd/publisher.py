"""Drains the store's outbox to the broker; a row is deleted only on its PUBACK.

Findings made while the broker is down wait in the outbox (on disk) and go out when it
returns; a restart loses none of them. Delivery is at least once: a row published just
before a crash is published again after it, which the retained finding topic absorbs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from auditd import logs
from auditd.mqtt import MqttLink
from auditd.store import Store

log = logs.get("auditd.publisher")


class OutboxPublisher(threading.Thread):
    def __init__(self, store: Store, link: MqttLink, *, max_in_flight: int = 50,
                 poll_s: float = 1.0, on_progress: Callable[[], None] = lambda: None) -> None:
        super().__init__(name="sensor-auditd-publisher", daemon=True)
        self._store = store
        self._link = link
        self._max_in_flight = max_in_flight
        self._poll_s = poll_s
        self._on_progress = on_progress
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()
        self.delivered = 0

    def wake(self) -> None:
        """Something was added to the outbox: publish it now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stop_requested.set()
        self._wake.set()

    def run(self) -> None:
        while not self._stop_requested.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            try:
                self.drain_once()
            except Exception as exc:
                log.error("outbox_drain_failed", error=repr(exc))
            self._on_progress()

    def drain_once(self) -> int:
        """Publish the oldest rows not yet in flight; return how many were handed to paho."""
        if not self._link.connected:
            return 0
        with self._lock:
            room = self._max_in_flight - len(self._in_flight)
            busy = set(self._in_flight)
        if room <= 0:
            return 0
        sent = 0
        for row in self._store.outbox_peek(room + len(busy)):
            if row.id in busy:
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
            try:
                if ok:
                    self._store.outbox_done([row_id])
                    self.delivered += 1
                else:
                    self._store.outbox_failed(row_id, "broker refused the publish")
            finally:
                with self._lock:
                    self._in_flight.discard(row_id)
                self._wake.set()

        return confirmed
