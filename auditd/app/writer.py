"""The single writer: deliveries -> validate -> transactions -> acknowledgements.

Batches are bounded by count (never more than the broker's in-flight window, or the batch
could not fill and every batch would wait out its timer) and by time. There is no linger:
the writer takes what is queued now, so under light load a message is committed as soon as
it arrives and under heavy load commits grow into group commits by themselves.

A message's failure is that message's alone (``Ingestor.commit_isolated``): a batch the
store refuses for a reason of the data's is split until the message is isolated and
quarantined, and the rest is committed. A failure of the environment's (disk full,
database locked) is retried with backoff on the same batch and nothing is acknowledged
meanwhile: the broker keeps the rest queued for us. How long the writer has held a batch
it could not commit is :meth:`BatchWriter.stalled_for`; past ``[ingest] stall_after`` the
daemon reports itself unhealthy and stops feeding the watchdog.

Counters that describe the daemon rather than a batch (broker connects, failed writes)
are handed to the writer and committed in the transaction of the next batch, or alone
within a turn when there is none: nothing acknowledged on a connection is on disk before
the connection's count is.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from auditd import logs
from auditd.adapters.sources.mqtt import Delivery
from auditd.adapters.store.readings import WriteResult
from auditd.app.ingest import Ingestor
from auditd.model import Outcome
from auditd.retry import Backoff, error_code
from auditd.text import printable

log = logs.get("auditd.app.writer")


@dataclass
class WriterStats:
    batches: int = 0
    store_failures: int = 0
    last_commit_at: float = 0.0
    last_batch_s: float = 0.0
    last_error: str = ""
    """The last failure of the environment's, for the log."""
    batch_error: str = ""
    """The failure that holds the batch in hand, if any (health and ``status``)."""


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
        retry_first_s: float = 0.2,
        retry_max_s: float = 10.0,
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
        self._retry_delay = Backoff(retry_first_s, retry_max_s).delays()
        self._counters: Counter[str] = Counter()
        self._counters_lock = threading.Lock()
        self._holding_since: float | None = None
        self._batch_len = 0
        self.stats = WriterStats()

    def stop(self) -> None:
        """Finish the batch in hand, commit and acknowledge it, then return."""
        self._stop_requested.set()

    def count(self, **deltas: int) -> None:
        """Add to persistent counters, committed with the next transaction (thread-safe)."""
        with self._counters_lock:
            self._counters.update({k: v for k, v in deltas.items() if v})

    def stalled_for(self) -> float:
        """Seconds the batch in hand has waited to be committed (0 when there is none)."""
        since = self._holding_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    @property
    def holding(self) -> int:
        """Messages in the batch in hand, not yet committed."""
        return self._batch_len if self._holding_since is not None else 0

    def run(self) -> None:
        while not self._stop_requested.is_set():
            self._on_progress()
            batch = self._take()
            if batch:
                self._commit(batch)
            elif self._counters:
                self._commit_counters_only()
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

    def _write(self, messages: int, outcomes: Sequence[Outcome]) -> WriteResult:
        """One transaction, with the counters pending now; they are cleared only once it
        has committed."""
        with self._counters_lock:
            pending = dict(self._counters)
        result = self._ingestor.commit(messages, outcomes, counters=pending or None)
        if pending:
            with self._counters_lock:
                self._counters.subtract(pending)
                self._counters = +self._counters  # drop the zeros
        return result

    def _commit(self, batch: list[Delivery]) -> None:
        started = time.perf_counter()
        self._holding_since, self._batch_len = time.monotonic(), len(batch)
        self.stats.batch_error = ""
        try:
            messages = [d.message for d in batch]
            outcomes = self._ingestor.validate(messages)
            done = self._ingestor.commit_isolated(
                messages, outcomes, on_transient=self._wait_out, commit=self._write)
        finally:
            self._holding_since = None
        if done.count < len(batch):
            log.warning("stopping_with_uncommitted_batch", batch=len(batch) - done.count)
        if done.count:
            self._ack(batch[: done.count])
        if done.count < len(batch):
            return
        self.stats.batches += 1
        self.stats.last_commit_at = time.time()
        self.stats.last_batch_s = time.perf_counter() - started
        self._on_commit()

    def _wait_out(self, exc: BaseException, attempt: int) -> bool:
        """A failure of the environment's: log it, count it, wait, and try the same again
        unless stopping. Beats while waiting, on purpose: the writer is not blocked, and a
        stall is reported by its own measure (``stalled_for``), not as a dead loop."""
        self.stats.store_failures += 1
        self.stats.last_error = self.stats.batch_error = printable(str(exc))[:500]
        self.count(store_write_failures=1)
        log.error("store_write_failed", error=self.stats.last_error, kind=type(exc).__name__,
                  code=error_code(exc), batch=self._batch_len, attempt=attempt,
                  acknowledged=False, stalled_s=round(self.stalled_for(), 1))
        self._on_progress()
        if self._stop_requested.wait(self._retry_delay(attempt)):
            return False
        self._on_progress()
        return True

    def flush_counters(self) -> None:
        """Commit the pending counters now (after :meth:`stop` and ``join``: the last
        disconnect is counted after the writer's loop has ended)."""
        if self._counters:
            self._commit_counters_only()

    def _commit_counters_only(self) -> None:
        try:
            self._write(0, [])
        except Exception as exc:  # kept pending; retried at the next turn or batch
            log.warning("counters_not_committed", error=printable(str(exc))[:200])

    def _drain_remaining(self) -> None:
        """On shutdown, commit what paho already handed over so it is acked, not redelivered,
        and the counters still pending."""
        while True:
            batch: list[Delivery] = []
            while len(batch) < self._batch_max:
                try:
                    batch.append(self._deliveries.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                break
            self._commit(batch)
        if self._counters:
            self._commit_counters_only()
