"""``sensor-auditd fleet run``: one replica of the live consumer.

Every replica subscribes to ``$share/{group}/{prefix}/+/audit/#`` (an MQTT 5 shared
subscription, CONTRACT.md): the broker hands each upstream message to one replica of the
group, so N replicas split the load with no coordination of their own. A replica

* takes what paho has queued (at most ``batch_max``, itself at most the Receive Maximum it
  announced, so a batch can always fill; no linger: group commits grow with the load),
* parses each message (``auditd.fleet.upstream.parse``: a record, a ``Rejected`` with its
  reason, or nothing for a topic that is not the fleet's),
* writes the batch in ONE transaction (``FleetSink.write``; the store's keys make a
  redelivered message change nothing), and only then
* acknowledges the batch (paho ``manual_ack``: a replica killed before its commit leaves
  the messages unacknowledged in its session, and the broker sends them again).

A message is never fatal. One the parser cannot use is stored as ``Rejected`` (reason,
detail, payload) in the same transaction as the rest; one the database refuses for its
content is isolated by splitting the batch and stored as ``Rejected`` too. A failure of the
database's own (unreachable, restarting) is retried on the same batch with backoff and
nothing is acknowledged meanwhile: the broker keeps the rest for us.

A heartbeat row per replica (what it committed, what it holds) is what ``fleet status``
shows; the gateways' ``status`` topic (``offline`` is their MQTT will) is stored like any
other upstream message.

Sessions: each replica connects with its own stable client id and a persistent session.
A replica killed mid-batch keeps its unacknowledged messages in its session, and gets them
again when it comes back (systemd restarts it); with a clean session the broker would drop
them. A replica stopped on purpose (SIGTERM) first leaves the shared subscription, commits
and acknowledges what it holds, then disconnects: the others take the whole stream.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol

from auditd import health, logs
from auditd.adapters.sinks import sdnotify
from auditd.adapters.sources.mqtt import Delivery, MqttLink
from auditd.fleet.adapters.config import FleetConfig, default_replica, load_fleet_config
from auditd.fleet.adapters.store import FleetStore
from auditd.fleet.records import Rejected, ReplicaBeat, Upstream, WriteCounts
from auditd.fleet.upstream import parse
from auditd.retry import Backoff, is_transient
from auditd.text import printable

log = logs.get("auditd.fleet.live")


class FleetSink(Protocol):
    """What the consumer needs of the fleet's store (``FleetStore``)."""

    def write(self, records: Iterable[Upstream]) -> WriteCounts: ...

    def heartbeat(self, beat: ReplicaBeat) -> None: ...


@dataclass
class LiveStats:
    batches: int = 0
    messages: int = 0
    """Messages committed (and then acknowledged) since the replica started."""
    rejected: int = 0
    ignored: int = 0
    """Messages under the prefix that are not the fleet's (a gateway's command topic)."""
    store_failures: int = 0
    last_error: str = ""
    last_commit_at: float = 0.0


def refused(delivery: Delivery, exc: BaseException) -> Rejected:
    """A message the database would not take for its content: kept with the reason."""
    message = delivery.message
    return Rejected(message.topic, "store_refused", printable(str(exc))[:500],
                    message.payload, message.received_at)


class LiveWriter(threading.Thread):
    """The replica's one writer: deliveries -> parse -> one transaction -> acknowledgements,
    and the replica's heartbeat between batches."""

    def __init__(self, deliveries: queue.SimpleQueue[Delivery], sink: FleetSink,
                 ack: Callable[[list[Delivery]], None], *, prefix: str, batch_max: int,
                 beat: Callable[[int, int], ReplicaBeat], heartbeat_s: float,
                 retry_max_s: float = 30.0, on_progress: Callable[[], None] = lambda: None,
                 ) -> None:
        super().__init__(name="sensor-auditd-fleet-writer", daemon=True)
        self._deliveries = deliveries
        self._sink = sink
        self._ack = ack
        self._prefix = prefix
        self._batch_max = max(1, batch_max)
        self._beat = beat
        self._heartbeat_s = heartbeat_s
        self._next_beat = 0.0
        self._retry_delay = Backoff(0.2, retry_max_s).delays()
        self._on_progress = on_progress
        self._stop_requested = threading.Event()
        self._holding = 0
        self._holding_since: float | None = None
        self.stats = LiveStats()

    def stop(self) -> None:
        """Finish the batch in hand (commit, acknowledge), commit what is queued, return."""
        self._stop_requested.set()

    @property
    def holding(self) -> int:
        return self._holding

    def stalled_for(self) -> float:
        since = self._holding_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    def run(self) -> None:
        while not self._stop_requested.is_set():
            self._on_progress()
            batch = self._take(timeout=0.2)
            if batch:
                self._commit(batch)
            self._maybe_beat()
        while batch := self._take(timeout=0):
            if not self._commit(batch):
                break
        self._maybe_beat(force=True)

    def _take(self, timeout: float) -> list[Delivery]:
        """Block briefly for the first delivery, then take whatever else is queued now."""
        try:
            first = (self._deliveries.get(timeout=timeout) if timeout
                     else self._deliveries.get_nowait())
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self._batch_max:
            try:
                batch.append(self._deliveries.get_nowait())
            except queue.Empty:
                time.sleep(0)  # let paho's thread hand over what it is reading
                try:
                    batch.append(self._deliveries.get_nowait())
                except queue.Empty:
                    break
        return batch

    def _commit(self, batch: list[Delivery]) -> bool:
        """Write the batch, then acknowledge it; False when stopping before it committed."""
        self._holding, self._holding_since = len(batch), time.monotonic()
        try:
            records: list[tuple[Delivery, Upstream]] = []
            for delivery in batch:
                m = delivery.message
                record = parse(m.topic, m.payload, m.received_at, self._prefix)
                if record is None:
                    self.stats.ignored += 1
                else:
                    records.append((delivery, record))
            if not self._write_isolating(records):
                log.warning("stopping_with_uncommitted_batch", batch=len(batch))
                return False
        finally:
            self._holding, self._holding_since = 0, None
        self._ack(batch)
        self.stats.batches += 1
        self.stats.messages += len(batch)
        self.stats.rejected += sum(isinstance(r, Rejected) for _, r in records)  # parser's
        self.stats.last_commit_at = time.time()
        return True

    def _write_isolating(self, records: Sequence[tuple[Delivery, Upstream]]) -> bool:
        """Write ``records`` in one transaction; a refusal for their content splits them
        until the message is alone, which is then stored as ``Rejected``. False when asked
        to stop while the database is away."""
        if not records:  # nothing the fleet keeps (a gateway's command topic): ack only
            return True
        attempt = 0
        while True:
            try:
                self._sink.write([record for _, record in records])
                return True
            except Exception as exc:
                if is_transient(exc):
                    if not self._wait_out(exc, attempt):
                        return False
                    attempt += 1
                    continue
                if len(records) == 1:
                    delivery, record = records[0]
                    if isinstance(record, Rejected):
                        # Even its quarantine row is refused: say so loudly, drop it.
                        log.error("message_dropped", topic=printable(record.topic)[:200],
                                  error=printable(str(exc))[:300])
                        return True
                    log.warning("message_refused", topic=printable(record_topic(delivery)),
                                error=printable(str(exc))[:300])
                    self.stats.rejected += 1
                    return self._write_isolating([(delivery, refused(delivery, exc))])
                middle = len(records) // 2
                return (self._write_isolating(records[:middle])
                        and self._write_isolating(records[middle:]))

    def _wait_out(self, exc: BaseException, attempt: int) -> bool:
        self.stats.store_failures += 1
        self.stats.last_error = printable(str(exc))[:500]
        log.error("fleet_write_failed", error=self.stats.last_error, kind=type(exc).__name__,
                  batch=self._holding, attempt=attempt, acknowledged=False)
        self._on_progress()
        if self._stop_requested.wait(self._retry_delay(attempt)):
            return False
        self._on_progress()
        return True

    def _maybe_beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_beat:
            return
        self._next_beat = now + self._heartbeat_s
        try:
            self._sink.heartbeat(self._beat(self.stats.messages,
                                            self._deliveries.qsize() + self._holding))
        except Exception as exc:  # a missed beat is shown by its age; the data goes on
            log.warning("heartbeat_failed", error=printable(str(exc))[:300])


def record_topic(delivery: Delivery) -> str:
    return delivery.message.topic[:200]


class Replica:
    """One ``fleet run`` process: the link, the writer, signals, systemd."""

    def __init__(self, cfg: FleetConfig, sink: FleetSink, *, replica: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.replica = replica
        self.sink = sink
        self.clock = clock
        self.started_at = clock()
        self._stop = threading.Event()
        self._writer_beat = health.Heartbeat()
        self.link = MqttLink(cfg.broker, subscriptions=(cfg.subscription,), status_topic=None,
                             clock=clock)
        self.writer = LiveWriter(
            self.link.deliveries, sink, self.link.ack, prefix=cfg.prefix,
            batch_max=min(cfg.ingest.batch_max, cfg.broker.receive_maximum),
            beat=self._beat, heartbeat_s=cfg.heartbeat_s, retry_max_s=cfg.ingest.retry_max_s,
            on_progress=self._writer_beat.beat)
        self._status_line = ""

    def _beat(self, messages: int, backlog: int) -> ReplicaBeat:
        return ReplicaBeat(replica=self.replica, host=socket.gethostname(), pid=os.getpid(),
                           group=self.cfg.group, started_at=self.started_at, at=self.clock(),
                           messages=messages, backlog=backlog)

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def _install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self._stop.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _problems(self) -> list[str]:
        problems = health.stale(
            {"writer": self._writer_beat.age(), "network": self.link.heartbeat.age()},
            {"writer": health.WRITER_LIMIT_S,
             "network": health.network_limit_s(self.cfg.broker.keepalive)})
        out = [f"{p.name} loop has not turned for {p.age_s:.0f} s" for p in problems]
        if not self.writer.is_alive():
            out.append("writer thread has stopped")
        return out

    def _show_state(self, first: str = "") -> None:
        where = f"{self.cfg.broker.host}:{self.cfg.broker.port}"
        broker = (f"broker {where} connected" if self.link.connected
                  else f"broker {where} unreachable ({self.link.stats.last_error or 'connecting'})")
        problems = self._problems()
        line = (f"UNHEALTHY: {problems[0]}; " if problems else "") + (
            f"{self.writer.stats.messages} messages committed; {broker}")
        if line != self._status_line or first:
            sdnotify.notify(f"{first}STATUS={line[:400]}")
            self._status_line = line

    def run(self, *, install_signals: bool = True) -> int:
        if install_signals:
            self._install_signals()
        log.info("fleet_starting", replica=self.replica, group=self.cfg.group,
                 subscription=self.cfg.subscription, client_id=self.cfg.broker.client_id,
                 broker=f"{self.cfg.broker.host}:{self.cfg.broker.port}")
        self.writer.start()
        self.link.start()
        watchdog = sdnotify.watchdog_interval_s()
        self._show_state("READY=1\n")
        log.info("ready", replica=self.replica)
        try:
            while not self._stop.wait(min(1.0, watchdog or 1.0)):
                if watchdog and not self._problems():
                    sdnotify.notify("WATCHDOG=1")
                self._show_state()
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        """Leave the group first, so nothing new is sent to us; commit and acknowledge what
        we hold; then disconnect (the session stays: anything still unacknowledged in it
        comes back to this replica when it returns)."""
        sdnotify.notify("STOPPING=1")
        log.info("stopping", replica=self.replica)
        # What the broker sent before its UNSUBACK is read (and queued) before it.
        self.link.unsubscribe(timeout=5.0)
        self.writer.stop()
        self.writer.join(timeout=60)
        self.link.stop()
        log.info("stopped", replica=self.replica, messages=self.writer.stats.messages,
                 rejected=self.writer.stats.rejected, batches=self.writer.stats.batches)


def run_replica(config_path: Path, replica: str | None = None) -> int:
    """``fleet run``: read the file (exit 2 naming file, key and problem), open the database
    (exit 2 naming host and port if it cannot be reached; the schema is created or migrated),
    and consume until SIGTERM."""
    name = replica or default_replica()
    cfg = load_fleet_config(config_path).for_replica(name)
    logs.configure(cfg.log.level, cfg.log.format)
    store = FleetStore.open(cfg.dsn)
    try:
        return Replica(cfg, store, replica=name).run()
    finally:
        store.close()
