"""The composition root of ``sensor-auditd run``: configuration -> adapters -> loop.

Threads: paho's network thread (receives, queues), the batch writer (validates, commits,
acknowledges), the outbox publisher, and APScheduler's worker (audits, retention). The main
thread only handles signals, the systemd watchdog and shutdown.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, cast

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from auditd import health, logs, sdnotify
from auditd.alerting import AlertSettings
from auditd.audit import Auditor, metadata_policy
from auditd.catalog import Catalog, load_catalog
from auditd.config import DaemonConfig
from auditd.dispatch import RetryPolicy, TicketDispatcher, sinks_from
from auditd.errors import AuditdError, ConfigError
from auditd.ingest import Ingestor
from auditd.mqtt import MqttLink
from auditd.publisher import OutboxPublisher
from auditd.store import Store
from auditd.validate import Limits
from auditd.writer import BatchWriter

log = logs.get("auditd.daemon")


def limits_from(cfg: DaemonConfig) -> Limits:
    return Limits(
        max_payload_bytes=cfg.ingest.max_payload_bytes,
        max_future_skew_s=cfg.ingest.max_future_skew_s,
        quarantine_payload_cap=cfg.ingest.quarantine_payload_cap,
    )


class Daemon:
    def __init__(self, cfg: DaemonConfig, catalog: Catalog,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.clock = clock
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._writer_beat = health.Heartbeat()
        self._publisher_beat = health.Heartbeat()
        self._withheld: list[health.Stale] = []
        self.metrics: Any = None
        """``auditd.metrics.Metrics`` when ``[metrics] enabled``; imported only then."""
        self._store_view: dict[str, Any] = {"outbox": (0, None), "streams": 0, "verdicts": {},
                                            "alerts": {}, "tickets": {}}
        self._store_view_at = 0.0
        self._persisted: dict[str, int] = {}

    # ------------------------------------------------------------------ signals

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        self._reload.set()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self._on_sighup)

    # ------------------------------------------------------------------ jobs

    def _audit_job(self) -> None:
        try:
            run = self.auditor.run(self.clock())
        except Exception as exc:
            log.error("audit_failed", error=repr(exc))
            return
        self.publisher.wake()
        self.dispatcher.wake()
        if self.metrics is not None:
            self.metrics.audit_seconds.observe(run.duration_s)
            self.metrics.last_audit.set(time.time())
        report = run.report
        log.info("audit_done", streams=len(run.findings), fail=report.get("fail", 0),
                 insufficient_data=report.get("insufficient_data", 0),
                 duration_s=round(run.duration_s, 3))

    def _retention_job(self) -> None:
        now = self.clock()
        try:
            readings = self.store.purge_readings(now - self.cfg.store.retention_days * 86400)
            rejects = self.store.purge_quarantine(
                now - self.cfg.store.quarantine_retention_days * 86400)
        except AuditdError as exc:
            log.error("retention_failed", error=str(exc))
            return
        if readings or rejects:
            log.info("retention_done", readings_deleted=readings, quarantine_deleted=rejects)

    def _reload_catalog(self) -> None:
        self._reload.clear()
        try:
            catalog = load_catalog(self.cfg)
        except AuditdError as exc:
            log.error("reload_refused", error=str(exc), kept="previous configuration")
            return
        self.catalog = catalog
        self.ingestor.reload(catalog)
        self.auditor.reload(catalog)
        log.info("reloaded", profiles=len(catalog.profiles), references=len(catalog.references))

    # ------------------------------------------------------------------ life cycle

    def _build(self) -> None:
        cfg = self.cfg
        self.store = Store(cfg.store.path, synchronous=cfg.store.synchronous)
        self.ingestor = Ingestor(self.store, self.catalog, prefix=cfg.topics.prefix,
                                 limits=limits_from(cfg))
        commands = ((cfg.topics.command(cfg.site, cfg.gateway),) if cfg.topics.commands
                    else ())
        self.link = MqttLink(cfg.broker, subscriptions=(*cfg.topics.subscriptions(), *commands),
                             status_topic=cfg.topics.status(cfg.site, cfg.gateway),
                             clock=self.clock)
        self.writer = BatchWriter(
            self.link.deliveries, self._commands_or(self.ingestor), self.link.ack,
            batch_max=min(cfg.ingest.batch_max, cfg.broker.receive_maximum),
            batch_max_wait_s=cfg.ingest.batch_max_wait_s,
            on_progress=self._writer_beat.beat,
            on_commit=self._on_commit,
        )
        self.publisher = OutboxPublisher(self.store, self.link,
                                         on_progress=self._publisher_beat.beat)
        self.auditor = Auditor(self.store, self.catalog, cfg.topics, gateway=cfg.gateway,
                               window_override_s=cfg.audit.window_s,
                               policy=metadata_policy(cfg.audit),
                               cohort_alpha=cfg.audit.cohort_alpha,
                               alerting=AlertSettings.of(cfg))
        self.dispatcher = TicketDispatcher(self.store, sinks_from(cfg.tickets),
                                           RetryPolicy.of(cfg.tickets), clock=self.clock)
        if cfg.metrics.enabled:
            self._start_metrics()
        self.scheduler = BackgroundScheduler(timezone=UTC)
        first = datetime.now(UTC) + timedelta(seconds=cfg.audit.first_run_delay_s)
        self.scheduler.add_job(self._audit_job, IntervalTrigger(seconds=cfg.audit.interval_s),
                               next_run_time=first, max_instances=1, coalesce=True,
                               id="audit")
        self.scheduler.add_job(self._retention_job,
                               IntervalTrigger(seconds=cfg.store.retention_interval_s),
                               max_instances=1, coalesce=True, id="retention")

    def _commands_or(self, ingestor: Ingestor) -> Ingestor:
        """The writer's ingestor: with ``[topics] commands`` on, one that applies the command
        topic's messages (``auditd.commands``) and passes the rest on."""
        if not self.cfg.topics.commands:
            return ingestor
        from auditd.commands import CommandRouter

        return cast(Ingestor, CommandRouter(ingestor, self.store, self.cfg.topics.command(
            self.cfg.site, self.cfg.gateway)))

    # ------------------------------------------------------------------ health, metrics

    def _start_metrics(self) -> None:
        from auditd.metrics import Metrics

        self.metrics = Metrics(self._snapshot)
        try:
            self.metrics.serve(self.cfg.metrics.bind, self.cfg.metrics.port)
        except OSError as exc:
            raise ConfigError(self.cfg.source or "<default config>", "metrics.port",
                              f"cannot listen on {self.cfg.metrics.bind}:"
                              f"{self.cfg.metrics.port}: {exc.strerror or exc}") from exc
        log.info("metrics_listening", bind=self.cfg.metrics.bind, port=self.metrics.port)

    def _on_commit(self) -> None:
        if self.metrics is not None:
            self.metrics.batch_seconds.observe(self.writer.stats.last_batch_s)

    def _snapshot(self) -> Any:
        """For a scrape: live counters plus the store's figures as of the last refresh (the
        scrape's thread never opens a database connection of its own)."""
        from auditd.metrics import Snapshot

        totals, link, view = self.ingestor.totals, self.link.stats, self._store_view
        depth, oldest = view["outbox"]
        return Snapshot(
            messages_received=link.received, messages_committed=totals.messages,
            readings_accepted=totals.readings_accepted,
            readings_duplicate=totals.readings_duplicate, rejected=dict(totals.rejected),
            store_write_failures=self.writer.stats.store_failures,
            broker_connected=self.link.connected, broker_connects=link.connects,
            broker_disconnects=link.disconnects,
            broker_connect_failures=link.connect_failures, outbox_depth=depth,
            outbox_oldest_age_s=None if oldest is None else max(0.0, self.clock() - oldest),
            streams=view["streams"], verdicts=view["verdicts"], alerts_open=view["alerts"],
            healthy=not self._withheld, tickets=view["tickets"])

    def _refresh_store_view(self) -> None:
        """Every few seconds on the main thread: what metrics read from the store."""
        if self.metrics is None or time.monotonic() - self._store_view_at < 5.0:
            return
        self._store_view_at = time.monotonic()
        try:
            from auditd.status import alerts_open

            self._store_view = {"outbox": self.store.outbox_depth(),
                                "streams": len(self.store.streams()),
                                "verdicts": self.store.verdict_counts(),
                                "alerts": alerts_open(self.store),
                                "tickets": self.store.delivery_counts()}
        except AuditdError as exc:
            log.warning("metrics_store_read_failed", error=str(exc))

    def _persist_counters(self) -> None:
        """Connection and store-failure totals into the store's counters, for ``status``.
        A full disk refuses this too; the difference is kept and written later."""
        now = {"broker_connects": self.link.stats.connects,
               "broker_disconnects": self.link.stats.disconnects,
               "broker_connect_failures": self.link.stats.connect_failures,
               "store_write_failures": self.writer.stats.store_failures}
        deltas = {k: v - self._persisted.get(k, 0) for k, v in now.items()}
        if not any(deltas.values()):
            return
        try:
            self.store.incr_counters(**deltas)
        except AuditdError:
            return
        self._persisted = now

    def _healthy(self) -> bool:
        """Loops that turn, not merely threads that exist: a blocked thread is still alive.

        The network's heartbeat is paho's thread while connected and the reconnecting
        supervisor otherwise, so a broker outage (the broker's problem, which a restart
        would not fix) keeps the watchdog fed while a stalled network thread does not.
        """
        problems = health.stale(
            {"writer": self._writer_beat.age(), "publisher": self._publisher_beat.age(),
             "network": self.link.heartbeat.age()},
            {"writer": health.WRITER_LIMIT_S, "publisher": health.PUBLISHER_LIMIT_S,
             "network": health.network_limit_s(self.cfg.broker.keepalive)})
        dead = [name for name, thread in (("writer", self.writer),
                                          ("publisher", self.publisher),
                                          ("tickets", self.dispatcher),
                                          ("network", self.link.network_thread))
                if thread is not None and not thread.is_alive()
                and not (name == "network" and not self.link.connected)]
        problems += [health.Stale(name, -1.0, 0.0) for name in dead]
        if problems != self._withheld:
            if problems:
                log.error("watchdog_withheld", loops=[
                    {"loop": p.name, "age_s": p.age_s, "limit_s": p.limit_s} for p in problems])
            else:
                log.info("watchdog_resumed")
            self._withheld = problems
        return not problems

    def run(self, *, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`request_stop`); ``install_signals=False`` lets
        a test drive it from a thread that is not the main one."""
        if install_signals:
            self._install_signals()
        self._build()
        log.info("starting", site=self.cfg.site, gateway=self.cfg.gateway,
                 store=str(self.cfg.store.path), broker=f"{self.cfg.broker.host}:"
                 f"{self.cfg.broker.port}", profiles=len(self.catalog.profiles),
                 references=len(self.catalog.references))
        self.writer.start()
        self.publisher.start()
        self.dispatcher.start()
        self.link.start()
        ready = False
        watchdog = sdnotify.watchdog_interval_s()
        self.scheduler.start()
        try:
            while not self._stop.wait(min(1.0, watchdog or 1.0)):
                if not ready and self.link.subscribed.is_set():
                    ready = True
                    sdnotify.notify("READY=1\nSTATUS=ingesting")
                    log.info("ready")
                if self._reload.is_set():
                    self._reload_catalog()
                healthy = self._healthy()
                if watchdog and healthy:
                    sdnotify.notify("WATCHDOG=1")
                self._persist_counters()
                self._refresh_store_view()
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        sdnotify.notify("STOPPING=1")
        log.info("stopping")
        self.scheduler.shutdown(wait=True)
        self.writer.stop()
        self.writer.join(timeout=30)
        self.publisher.stop()
        self.publisher.join(timeout=5)
        self.dispatcher.stop()
        self.dispatcher.join(timeout=5)
        self.link.stop()
        self._persist_counters()
        if self.metrics is not None:
            self.metrics.close()
        self.store.close()
        log.info("stopped", **self.ingestor.totals_dict())
