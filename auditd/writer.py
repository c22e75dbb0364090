"""The single writer: deliveries -> validate -> one transaction -> acknowledgements.

Batches are bounded by count (never more than the broker's in-flight window, or the batch
could not fill and every batch would wait out its timer) and by time. There is no linger:
the writer takes what is queued now, so under light load a message is committed as soon as
it arrives and under heavy load commits grow into group commits by themselves.

A failed commit (disk full, database locked) is retried with backoff on the same batch and
nothing is acknowledged meanwhile: the broker keeps the rest queued for us.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from auditd import logs
from auditd.ingest import Ingestor
from auditd.mqtt import Delivery, backoff_delays

log = logs.get("auditd.writer")


@dataclass
class WriterStats:
    batches: int = 0
    store_failures: int = 0
    last_commit_at: float = 0.0
    last_batch_s: float = 0.0


class BatchWriter(threading.Thread):
    def __init__(
        self,
        deliveries: queue.SimpleQueue[Delivery],
        ingestor: Ingestor,
        ack: Callable[[list[Delivery]], None],
        *,
        batch_max: int,
        batch_max_wait_s: float,
        on_commit: Callable[[], None] = lambda: None,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name="sensor-auditd-writer", daemon=True)
        self._deliveries = deliveries
        self._ingestor = ingestor
        self._ack = ack
        self._batch_max = max(1, batch_max)
        self._wait_s = batch_max_wait_s
        self._on_commit = on_commit
        self._on_progress = on_progress
        self._stop_requested = threading.Event()
        self._idle = threading.Event()
        self._retry_delay = backoff_delays(0.2, 10.0)
        self.stats = WriterStats()

    def stop(self) -> None:
        """Finish the batch in hand, commit and acknowledge it, then return."""
        self._stop_requested.set()

    def run(self) -> None:
        while not self._stop_requested.is_set():
            self._on_progress()
            batch = self._take()
            if batch:
                self._commit(batch)
        self._drain_remaining()

    def _take(self) -> list[Delivery]:
        """Block briefly for the first delivery, then take whatever else is already queued."""
        try:
            first = self._deliveries.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self._wait_s
        while len(batch) < self._batch_max:
            try:
                batch.append(self._deliveries.get_nowait())
            except queue.Empty:
                if time.monotonic() >= deadline:
                    break
                # Let paho's thread run once; more deliveries are usually on their way.
                time.sleep(0)
                try:
                    batch.append(self._deliveries.get_nowait())
                except queue.Empty:
                    break
        return batch

    def _commit(self, batch: list[Delivery]) -> None:
        started = time.perf_counter()
        outcomes = self._ingestor.validate([d.message for d in batch])
        attempt = 0
        while True:
            try:
                self._ingestor.commit(len(batch), outcomes)
                break
            except Exception as exc:
                self.stats.store_failures += 1
                log.error("store_write_failed", error=str(exc), kind=type(exc).__name__,
                          batch=len(batch), attempt=attempt, acknowledged=False)
                self._on_progress()  # retrying on purpose: a restart would not free the disk
                if self._stop_requested.wait(self._retry_delay(attempt)):
                    log.warning("stopping_with_uncommitted_batch", batch=len(batch))
                    return
                self._on_progress()
                attempt += 1
        self._ack(batch)
        self.stats.batches += 1
        self.stats.last_commit_at = time.time()
        self.stats.last_batch_s = time.perf_counter() - started
        self._on_commit()

    def _drain_remaining(self) -> None:
        """On shutdown, commit what paho already handed over so it is acked, not redelivered."""
        while True:
            batch: list[Delivery] = []
            while len(batch) < self._batch_max:
                try:
                    batch.append(self._deliveries.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                return
            self._commit(batch)
