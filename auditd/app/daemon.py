"""The composition root of ``sensor-auditd run``: configuration -> adapters -> loop.

Threads: paho's network thread (receives, queues), the batch writer (validates, commits,
acknowledges), the outbox publisher, and APScheduler's worker (audits, retention). The main
thread only handles signals, the systemd watchdog, the state it shows (systemd's STATUS
line, the run-state file ``status`` reads, metrics) and shutdown.

Start-up order is what systemd sees: the store is opened and written to first (a store
that cannot be written ends the start with exit 1, naming the path); ``READY=1`` follows
at once, whether or not the broker answers, since the broker's messages wait for us and a
start that waited for them would be killed by ``TimeoutStartSec`` and restarted in a loop.
The broker's state is on the STATUS line instead ("broker unreachable (...), retrying").
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from auditd import health, logs
from auditd.adapters.config.catalog import load_catalog
from auditd.adapters.config.daemon import DaemonConfig, StoreConfig
from auditd.adapters.runstate import RunState, RunStateFile
from auditd.adapters.sinks import sdnotify
from auditd.adapters.sinks.dispatch import TicketDispatcher, sinks_from
from auditd.adapters.sinks.publisher import OutboxPublisher
from auditd.adapters.sources.mqtt import MqttLink
from auditd.adapters.store import Store
from auditd.adapters.store.database import Bounds
from auditd.app.auditor import AlertSettings, Auditor, metadata_policy
from auditd.app.commands import CommandRouter
from auditd.app.ingest import Ingestor
from auditd.app.rejection_log import RejectionLog
from auditd.app.writer import BatchWriter
from auditd.domain.catalog import Catalog
from auditd.domain.validate import Limits
from auditd.errors import AuditdError, ConfigError
from auditd.model import iso

if TYPE_CHECKING:  # prometheus-client is imported only when [metrics] enabled
    from auditd.adapters.sinks.metrics import LiveFigures, MetricsServer

log = logs.get("auditd.app.daemon")


START_WITHOUT_CONFIG = (
    "the daemon needs its configuration file (run --config FILE): it publishes under its "
    "site and gateway, keeps its store and reads its profiles where that file says, and no "
    "built-in guess of those is safe to publish or write under. To start: copy "
    "examples/sensor-auditd.toml (every key with its default) to "
    "/etc/sensor-auditd/config.toml, set site, gateway and [broker], check it with "
    "`sensor-auditd check-config --config /etc/sensor-auditd/config.toml`, and start the "
    "unit systemd/sensor-auditd.service, which runs `sensor-auditd run --config "
    "/etc/sensor-auditd/config.toml` (docs/operations.md); to try it without set-up: "
    "`sensor-auditd demo`")
"""Why ``run`` without ``--config`` is refused, and how to start (exit 2)."""


def limits_from(cfg: DaemonConfig) -> Limits:
    return Limits(
        max_payload_bytes=cfg.ingest.max_payload_bytes,
        max_future_skew_s=cfg.ingest.max_future_skew_s,
        max_age_s=cfg.ingest.max_age_s,
        quarantine_payload_cap=cfg.ingest.quarantine_payload_cap,
        max_devices=cfg.ingest.max_devices,
        max_streams=cfg.ingest.max_streams,
        max_sites_per_device=cfg.ingest.max_sites_per_device,
    )


def bounds_from(cfg: DaemonConfig) -> Bounds:
    return Bounds(
        wal_limit=cfg.store.wal_limit,
        quarantine_max_rows=cfg.store.quarantine_max_rows,
        quarantine_max_bytes=cfg.store.quarantine_max_bytes,
        payload_cap=cfg.ingest.quarantine_payload_cap,
        meta_versions_per_device=cfg.store.meta_versions_per_device,
        events_per_device=cfg.store.events_per_device,
        window_cache=cfg.store.window_cache,
    )


@dataclass(frozen=True, slots=True)
class Retained:
    """What one pass of retention deleted."""

    readings: int
    quarantine: int
    streams: int
    findings: int
    forgotten: tuple[str, ...]


def apply_retention(store: Store, cfg: StoreConfig, now: float) -> Retained:
    """Readings and quarantine rows past their retention; then the streams left empty and
    the devices with nothing left and nothing said within ``retention_days``, whose places
    under the device and stream caps come back; and findings past
    ``findings_retention_days``, every stream's current verdict kept (a gateway audited
    hourly adds one a stream an hour, ~1 KB each: at 10,000 streams 0.3 GB a day that
    nothing deleted)."""
    cutoff = now - cfg.retention_days * 86400
    readings = store.readings.purge(cutoff)
    rejects = store.quarantine.purge(now - cfg.quarantine_retention_days * 86400)
    streams = store.readings.drop_empty_streams()
    forgotten = store.devices.forget_idle(cutoff)
    findings = store.findings.purge(now - cfg.findings_retention_days * 86400)
    return Retained(readings, rejects, streams, findings, tuple(forgotten))


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
        self.metrics: MetricsServer | None = None
        """The Prometheus endpoint when ``[metrics] enabled``; its module is imported only then."""
        self._store_view: dict[str, Any] = {"outbox": (0, None), "streams": 0, "verdicts": {},
                                            "alerts": {}, "tickets": {}, "quarantine": (0, 0)}
        self._store_view_at = 0.0
        self._started_at = clock()
        self._status_line = ""
        self._broker_logged = ""
        self._runstate: RunStateFile | None = None
        self._stalled_logged = False

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
        # Streams as domain.streams defines them, as status and the report count them;
        # findings (cohorts and metadata included) are another count.
        log.info("audit_done", **run.streams.as_dict(), findings=len(run.findings),
                 duration_s=round(run.duration_s, 3))

    def _retention_job(self) -> None:
        """What the store holds past its retention (``apply_retention``), logged."""
        try:
            done = apply_retention(self.store, self.cfg.store, self.clock())
        except AuditdError as exc:
            log.error("retention_failed", error=str(exc))
            return
        if done.readings or done.quarantine or done.streams or done.findings:
            log.info("retention_done", readings_deleted=done.readings,
                     quarantine_deleted=done.quarantine, streams_deleted=done.streams,
                     findings_deleted=done.findings)
        if done.forgotten:
            log.info("devices_forgotten", count=len(done.forgotten),
                     devices=done.forgotten[:20])

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
        self.store = Store(cfg.store.path, synchronous=cfg.store.synchronous,
                           bounds=bounds_from(cfg))
        self.rejections = RejectionLog(cfg.log.rejections_interval_s, clock=self.clock)
        self.ingestor = Ingestor(self.store, self.catalog, prefix=cfg.topics.prefix,
                                 limits=limits_from(cfg), on_rejected=self.rejections.note)
        commands = ((cfg.topics.command(cfg.site, cfg.gateway),) if cfg.topics.commands
                    else ())
        self.link = MqttLink(cfg.broker, subscriptions=(*cfg.topics.subscriptions(), *commands),
                             status_topic=cfg.topics.status(cfg.site, cfg.gateway),
                             clock=self.clock, on_count=lambda name: self.writer.count(
                                 **{name: 1}))
        self.writer = BatchWriter(
            self.link.deliveries, self._commands_or(self.ingestor), self.link.ack,
            batch_max=min(cfg.ingest.batch_max, cfg.broker.receive_maximum),
            batch_max_wait_s=cfg.ingest.batch_max_wait_s,
            on_progress=self._writer_beat.beat,
            on_commit=self._on_commit,
        )
        self._runstate = RunStateFile(cfg.store.path)
        self.publisher = OutboxPublisher(self.store, self.link,
                                         on_progress=self._publisher_beat.beat)
        self.auditor = Auditor(self.store, self.catalog, cfg.topics, gateway=cfg.gateway,
                               window_override_s=cfg.audit.window_s,
                               policy=metadata_policy(cfg.audit),
                               cohort_alpha=cfg.audit.cohort_alpha,
                               alerting=AlertSettings.of(cfg))
        self.dispatcher = TicketDispatcher(self.store, sinks_from(cfg.tickets),
                                           cfg.tickets.retry, clock=self.clock)
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
        topic's messages (``auditd.app.commands``) and passes the rest on."""
        if not self.cfg.topics.commands:
            return ingestor
        return cast(Ingestor, CommandRouter(ingestor, self.store, self.cfg.topics.command(
            self.cfg.site, self.cfg.gateway)))

    # ------------------------------------------------------------------ health, metrics

    def _start_metrics(self) -> None:
        from auditd.adapters.sinks.metrics import MetricsServer  # only when enabled

        self.metrics = metrics = MetricsServer(self._snapshot)
        try:
            metrics.serve(self.cfg.metrics.bind, self.cfg.metrics.port)
        except OSError as exc:
            raise ConfigError(self.cfg.source or "<default config>", "metrics.port",
                              f"cannot listen on {self.cfg.metrics.bind}:"
                              f"{self.cfg.metrics.port}: {exc.strerror or exc}") from exc
        log.info("metrics_listening", bind=self.cfg.metrics.bind, port=metrics.port)

    def _on_commit(self) -> None:
        if self.metrics is not None:
            self.metrics.batch_seconds.observe(self.writer.stats.last_batch_s)

    def _snapshot(self) -> LiveFigures:
        """For a scrape: live counters plus the store's figures as of the last refresh (the
        scrape's thread never opens a database connection of its own)."""
        from auditd.adapters.sinks.metrics import LiveFigures  # a scrape: metrics are enabled

        totals, link, view = self.ingestor.totals, self.link.stats, self._store_view
        depth, oldest = view["outbox"]
        rows, size = view["quarantine"]
        store_cfg = self.cfg.store
        return LiveFigures(
            messages_received=link.received, messages_committed=totals.messages,
            readings_accepted=totals.readings_accepted,
            readings_duplicate=totals.readings_duplicate, rejected=dict(totals.rejected),
            store_write_failures=self.writer.stats.store_failures,
            broker_connected=self.link.connected, broker_connects=link.connects,
            broker_disconnects=link.disconnects,
            broker_connect_failures=link.connect_failures, outbox_depth=depth,
            outbox_oldest_age_s=None if oldest is None else max(0.0, self.clock() - oldest),
            streams=view["streams"], verdicts=view["verdicts"], alerts_open=view["alerts"],
            healthy=not self._withheld, tickets=view["tickets"],
            writer_stalled_s=self.writer.stalled_for(), writer_holding=self.writer.holding,
            messages_dropped=link.dropped_qos0,
            broker_down_s=self._broker_down_s(),
            devices=self.ingestor.devices,
            quarantine_rows=rows, quarantine_bytes=size,
            wal_bytes=view.get("wal_bytes", 0), free_bytes=view.get("free_bytes", 0),
            store_checkpoints=self.store.checkpoints,
            meta_versions=view.get("history", (0, 0))[0], events=view.get("history", (0, 0))[1],
            history_trimmed=dict(totals.history_trimmed),
            limits={"devices": self.cfg.ingest.max_devices,
                    "streams": self.cfg.ingest.max_streams,
                    "quarantine_rows": store_cfg.quarantine_max_rows,
                    "quarantine_bytes": store_cfg.quarantine_max_bytes,
                    "wal_bytes": self.store.space.wal_limit,
                    "meta_versions_per_device": store_cfg.meta_versions_per_device,
                    "events_per_device": store_cfg.events_per_device})

    def _broker_down_s(self) -> float:
        since = self.link.stats.down_since
        return 0.0 if since is None or self.link.connected else max(0.0, self.clock() - since)

    def _refresh_store_view(self) -> None:
        """Every few seconds on the main thread: what metrics and the run-state file read
        from the store."""
        if time.monotonic() - self._store_view_at < 5.0:
            return
        self._store_view_at = time.monotonic()
        view = dict(self._store_view)
        view["wal_bytes"] = self.store.wal_bytes()
        try:
            view["free_bytes"] = self.store.free_bytes()
        except OSError:
            view["free_bytes"] = 0
        try:
            view["quarantine"] = self.store.quarantine.usage()
            view["streams"] = self.ingestor.streams
            if self.metrics is not None:
                view.update(outbox=self.store.outbox.depth(),
                            history=self.store.devices.sizes(),
                            verdicts=self.store.findings.verdict_counts(),
                            alerts=self.store.alerts.open_by_severity(),
                            tickets=self.store.tickets.counts())
        except AuditdError as exc:
            log.warning("metrics_store_read_failed", error=str(exc))
        self._store_view = view

    def _healthy(self) -> bool:
        """Loops that turn, and a writer that commits: a blocked thread is still alive, and
        a writer retrying a full disk still turns.

        The network's heartbeat is paho's thread while connected and the reconnecting
        supervisor otherwise, so a broker outage (the broker's problem, which a restart
        would not fix) keeps the watchdog fed while a stalled network thread does not. A
        writer that has held messages without committing any for ``[ingest] stall_after``
        is a stall: it is never silent, and the watchdog may act on it.
        """
        problems = health.stale(
            {"writer": self._writer_beat.age(), "publisher": self._publisher_beat.age(),
             "network": self.link.heartbeat.age(), "commit": self.writer.stalled_for()},
            {"writer": health.WRITER_LIMIT_S, "publisher": health.PUBLISHER_LIMIT_S,
             "network": health.network_limit_s(self.cfg.broker.keepalive),
             "commit": self.cfg.ingest.stall_after_s})
        dead = [name for name, thread in (("writer", self.writer),
                                          ("publisher", self.publisher),
                                          ("tickets", self.dispatcher),
                                          ("network", self.link.network_thread))
                if thread is not None and not thread.is_alive()
                and not (name == "network" and not self.link.connected)]
        problems += [health.Stale(name, -1.0, 0.0) for name in dead]
        stalled = any(p.name == "commit" for p in problems)
        if stalled and not self._stalled_logged:
            log.error("writer_stalled", stalled_s=round(self.writer.stalled_for(), 1),
                      limit_s=self.cfg.ingest.stall_after_s, holding=self.writer.holding,
                      error=self.writer.stats.batch_error,
                      hint="nothing is acknowledged meanwhile; see store_write_failed")
        elif not stalled and self._stalled_logged:
            log.info("writer_recovered")
        self._stalled_logged = stalled
        if problems != self._withheld:
            if problems:
                log.error("watchdog_withheld", loops=[
                    {"loop": p.name, "age_s": p.age_s, "limit_s": p.limit_s} for p in problems])
            else:
                log.info("watchdog_resumed")
            self._withheld = problems
        return not problems

    def _problems(self) -> tuple[str, ...]:
        """The reasons the daemon is unhealthy, as a person reads them."""
        out = []
        for p in self._withheld:
            if p.name == "commit":
                since = datetime.fromtimestamp(self.clock() - p.age_s, UTC)
                why = (self.writer.stats.batch_error
                       or "its first write has not returned yet (a lock? a slow disk?)")
                out.append(f"writer stalled: nothing committed since {since:%H:%M:%S}Z "
                           f"(limit {p.limit_s:g} s), {self.writer.holding} messages held: "
                           f"{why}")
            elif p.age_s < 0:
                out.append(f"{p.name} thread has stopped")
            else:
                out.append(f"{p.name} loop has not turned for {p.age_s:.0f} s "
                           f"(limit {p.limit_s:g} s)")
        return tuple(out)

    def _broker_state(self) -> tuple[str, str]:
        """(state, text) of the broker connection for STATUS and the run-state file."""
        link = self.link
        where = f"{self.cfg.broker.host}:{self.cfg.broker.port}"
        if link.connected:
            if link.subscribed.is_set():
                return "connected", f"broker {where} connected"
            return "subscribing", f"broker {where} connected, subscribing"
        if link.stats.connect_failures or link.stats.disconnects:
            error = link.stats.last_error or "no connection"
            return "unreachable", f"broker {where} unreachable ({error}), retrying"
        return "connecting", f"broker {where} connecting"

    def _show_state(self, notify_first: str = "") -> None:
        """systemd's STATUS line (when it changes, or with ``notify_first``, e.g. READY=1,
        in front) and the run-state file (every turn)."""
        broker, broker_text = self._broker_state()
        if broker != self._broker_logged:
            # The broker's state as the STATUS line says it, once per change: the log
            # reads "broker ... unreachable (...), retrying" as systemctl status does.
            (log.warning if broker == "unreachable" else log.info)(
                "broker_state", state=broker, status=broker_text)
            self._broker_logged = broker
        problems = self._problems()
        health_text = f"UNHEALTHY: {problems[0]}" if problems else "ingesting"
        line = f"{health_text}; {broker_text}"
        if line != self._status_line or notify_first:
            # X_BROKER (sd_notify(3): custom variables start with X_) is for programs.
            sdnotify.notify(f"{notify_first}STATUS={line[:400]}\nX_BROKER={broker}")
            self._status_line = line
        if self._runstate is None:
            return
        rows, size = self._store_view["quarantine"]
        store_cfg = self.cfg.store
        last = self.writer.stats.last_commit_at
        self._runstate.write(RunState(
            pid=os.getpid(), started_at=self._started_at, updated_at=self.clock(),
            healthy=not problems, problems=problems, broker=broker,
            broker_error=self.link.stats.last_error if broker == "unreachable" else "",
            broker_down_since=self.link.stats.down_since if broker != "connected" else None,
            writer_holding=self.writer.holding,
            writer_stalled_s=round(self.writer.stalled_for(), 1),
            writer_error=self.writer.stats.batch_error if self.writer.holding else "",
            last_commit_at=last or None,
            next_audit_at=self._next_audit_at(), audit_interval_s=self.cfg.audit.interval_s,
            bounds={"devices": self.ingestor.devices,
                    "max_devices": self.cfg.ingest.max_devices,
                    "streams": self.ingestor.streams, "max_streams": self.cfg.ingest.max_streams,
                    "quarantine_rows": rows, "max_quarantine_rows": store_cfg.quarantine_max_rows,
                    "quarantine_bytes": size,
                    "max_quarantine_bytes": store_cfg.quarantine_max_bytes,
                    "wal_bytes": self._store_view.get("wal_bytes", 0),
                    "wal_limit": self.store.space.wal_limit,
                    "free_bytes": self._store_view.get("free_bytes", 0)}))

    def _next_audit_at(self) -> float | None:
        job = self.scheduler.get_job("audit")
        when = job.next_run_time if job is not None else None
        return when.timestamp() if when is not None else None

    def run(self, *, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`request_stop`); ``install_signals=False`` lets
        a test drive it from a thread that is not the main one."""
        if install_signals:
            self._install_signals()
        self._build()
        log.info("starting", site=self.cfg.site, gateway=self.cfg.gateway,
                 store=str(self.cfg.store.path), broker=f"{self.cfg.broker.host}:"
                 f"{self.cfg.broker.port}", profiles=len(self.catalog.profiles),
                 references=len(self.catalog.references),
                 wal_limit=self.store.space.wal_limit, free_bytes=self.store.space.free)
        self.writer.start()
        self.publisher.start()
        self.dispatcher.start()
        self.link.start()
        watchdog = sdnotify.watchdog_interval_s()
        self.scheduler.start()
        # The store is open and writable, every loop is running: ready, broker or not.
        self._refresh_store_view()
        self._show_state("READY=1\n")
        log.info("ready", broker=self._broker_state()[1], first_audit=iso(self._next_audit_at()),
                 audit_interval_s=self.cfg.audit.interval_s)
        try:
            while not self._stop.wait(min(1.0, watchdog or 1.0)):
                if self._reload.is_set():
                    self._reload_catalog()
                healthy = self._healthy()
                if watchdog and healthy:
                    sdnotify.notify("WATCHDOG=1")
                self._refresh_store_view()
                self._show_state()
                self.rejections.flush()
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
        self.writer.flush_counters()
        self.rejections.close()
        if self.metrics is not None:
            self.metrics.close()
        if self._runstate is not None:
            self._runstate.write(RunState(pid=os.getpid(), started_at=self._started_at,
                                          updated_at=self.clock(), stopped=True))
            self._runstate.close()
        self.store.close()
        log.info("stopped", **self.ingestor.totals_dict())
