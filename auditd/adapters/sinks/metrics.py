"""The Prometheus endpoint (prometheus-client), off unless ``[metrics] enabled = true``.

Counters and gauges are read from the daemon's live objects when Prometheus scrapes (a
custom collector), so the hot path pays nothing for them; only the two durations are
observed as they happen. The registry is our own, not prometheus-client's global one, so
two daemons in one test process cannot mix their numbers, and the library's process
metrics are left out (node_exporter and systemd already report those on a gateway).

prometheus-client is imported here only, and this module only when metrics are enabled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from auditd.domain.audit_plan import streams_by_status

PREFIX = "sensor_auditd"

BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""A write batch: a millisecond on an idle SSD, seconds on a busy SD card or a lock."""
AUDIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
"""An audit run: well under a second for a few streams, minutes for a large site."""


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """What the daemon knows right now, gathered at scrape time."""

    messages_received: int
    messages_committed: int
    readings_accepted: int
    readings_duplicate: int
    rejected: Mapping[str, int]
    store_write_failures: int
    broker_connected: bool
    broker_connects: int
    broker_disconnects: int
    broker_connect_failures: int
    outbox_depth: int
    outbox_oldest_age_s: float | None
    streams: int
    verdicts: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    """(kind, status, severity) -> current verdicts, from the store."""
    alerts_open: Mapping[str, int] = field(default_factory=dict)
    """Open or acknowledged alerts by severity, from the store."""
    healthy: bool = True
    tickets: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Ticket deliveries: sink -> state (pending, delivered, dead) -> count, from the store."""
    writer_stalled_s: float = 0.0
    """How long the writer has held a batch it could not commit (0 when it holds none)."""
    writer_holding: int = 0
    messages_dropped: int = 0
    """QoS 0 messages dropped while the writer's queue was full."""
    broker_down_s: float = 0.0
    devices: int = 0
    quarantine_rows: int = 0
    quarantine_bytes: int = 0
    wal_bytes: int = 0
    free_bytes: int = 0
    store_checkpoints: int = 0
    meta_versions: int = 0
    events: int = 0
    history_trimmed: Mapping[str, int] = field(default_factory=dict)
    """Meta versions and events deleted to keep a device within its caps, since start."""
    limits: Mapping[str, int] = field(default_factory=dict)
    """Each bounded resource's limit: devices, streams, quarantine_rows, quarantine_bytes,
    wal_bytes, meta_versions_per_device, events_per_device."""


def families(snap: LiveFigures) -> list[Metric]:
    """The scrape-time metrics of one snapshot (pure: a snapshot in, families out)."""

    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)

    rejected = CounterMetricFamily(f"{PREFIX}_rejected", "Messages or readings quarantined, "
                                   "by reason.", labels=["reason"])
    for reason, n in sorted(snap.rejected.items()):
        rejected.add_metric([reason], n)
    by_status = GaugeMetricFamily(f"{PREFIX}_streams_by_status", "Streams by their current "
                                  "calibration verdict.", labels=["status"])
    for status, n in streams_by_status(snap.verdicts).items():
        by_status.add_metric([status], n)
    alerts = GaugeMetricFamily(f"{PREFIX}_alerts_open", "Alerts open or acknowledged (not "
                               "resolved), by severity.", labels=["severity"])
    for severity, n in snap.alerts_open.items():
        alerts.add_metric([severity], n)
    tickets = GaugeMetricFamily(f"{PREFIX}_ticket_deliveries", "Ticket requests by sink and "
                                "delivery state (dead: dead-lettered, see `sensor-auditd "
                                "tickets`).", labels=["sink", "state"])
    for sink, states in sorted(snap.tickets.items()):
        for state in ("pending", "delivered", "dead"):
            tickets.add_metric([sink, state], states.get(state, 0))
    limits = GaugeMetricFamily(f"{PREFIX}_limit", "The configured bound of each resource "
                               "(compare with devices, streams, quarantine_rows, "
                               "quarantine_bytes, store_wal_bytes; meta_versions_per_device "
                               "and events_per_device bound each device's history).",
                               labels=["resource"])
    trimmed = CounterMetricFamily(f"{PREFIX}_history_trimmed", "Meta versions and events "
                                  "deleted to keep a device within store."
                                  "meta_versions_per_device and store.events_per_device.",
                                  labels=["kind"])
    for kind in ("meta_versions", "events"):
        trimmed.add_metric([kind], snap.history_trimmed.get(kind, 0))
    for resource, bound in sorted(snap.limits.items()):
        limits.add_metric([resource], bound)
    out: list[Metric] = [
        counter("messages_received", "MQTT messages delivered by the broker.",
                snap.messages_received),
        counter("messages_committed", "Messages validated and committed to the store.",
                snap.messages_committed),
        counter("readings_accepted", "Readings accepted into the store (redeliveries "
                "included).", snap.readings_accepted),
        counter("readings_duplicate", "Accepted readings that were already stored "
                "(broker redeliveries).", snap.readings_duplicate),
        rejected,
        counter("store_write_failures", "Failed write transactions (disk full, database "
                "locked); their messages were not acknowledged.", snap.store_write_failures),
        gauge("broker_connected", "1 while connected to the broker.", int(snap.broker_connected)),
        counter("broker_connects", "Connections the broker accepted.", snap.broker_connects),
        counter("broker_disconnects", "Connections lost or closed.", snap.broker_disconnects),
        counter("broker_connect_failures", "Connection attempts that failed (unreachable, "
                "TLS, refused).", snap.broker_connect_failures),
        gauge("outbox_depth", "Findings and reports waiting to be published.",
              snap.outbox_depth),
        gauge("outbox_oldest_age_seconds", "Age of the oldest waiting outbox message.",
              snap.outbox_oldest_age_s or 0.0),
        gauge("streams", "Streams in the store.", snap.streams),
        by_status,
        alerts,
        tickets,
        gauge("healthy", "1 while every loop makes progress and the writer commits (what "
              "feeds the systemd watchdog).", int(snap.healthy)),
        gauge("writer_stalled_seconds", "How long the writer has held messages it could not "
              "commit (0 when it holds none); past ingest.stall_after the daemon is unhealthy.",
              snap.writer_stalled_s),
        gauge("writer_pending_messages", "Messages the writer holds, not yet committed nor "
              "acknowledged.", snap.writer_holding),
        counter("messages_dropped", "QoS 0 messages dropped while the writer's queue was full "
                "(QoS 1 messages are never dropped: the broker keeps them).",
                snap.messages_dropped),
        gauge("broker_down_seconds", "How long the broker has been unreachable (0 while "
              "connected).", snap.broker_down_s),
        gauge("devices", "Devices the gateway holds data of (ingest.max_devices bounds it).",
              snap.devices),
        gauge("quarantine_rows", "Rows in the quarantine (store.quarantine_max_rows bounds "
              "it).", snap.quarantine_rows),
        gauge("quarantine_bytes", "Bytes of the quarantine's rows (store.quarantine_max_bytes "
              "bounds it).", snap.quarantine_bytes),
        gauge("store_wal_bytes", "Size of the store's write-ahead log.", snap.wal_bytes),
        gauge("store_free_bytes", "Free space on the store's volume.", snap.free_bytes),
        counter("store_checkpoints", "Checkpoints that emptied the write-ahead log because it "
                "passed its limit or the volume was full.", snap.store_checkpoints),
        gauge("meta_versions", "Meta versions held over every device.", snap.meta_versions),
        gauge("events", "Events held over every device.", snap.events),
        trimmed,
        limits,
    ]
    return out


class _Live(Collector):
    def __init__(self, snapshot: Callable[[], LiveFigures]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from families(self._snapshot())


class MetricsServer:
    """The registry, the two duration histograms, the last-audit gauge and the server."""

    def __init__(self, snapshot: Callable[[], LiveFigures]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.batch_seconds = Histogram(
            f"{PREFIX}_batch_seconds", "Validating and committing one batch of messages.",
            buckets=BATCH_BUCKETS, registry=self.registry)
        self.audit_seconds = Histogram(
            f"{PREFIX}_audit_seconds", "One audit run over every stream.",
            buckets=AUDIT_BUCKETS, registry=self.registry)
        self.last_audit = Gauge(
            f"{PREFIX}_last_audit_success_timestamp_seconds",
            "When the last audit run finished without error (Unix time).",
            registry=self.registry)
        self.registry.register(_Live(snapshot))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def serve(self, bind: str, port: int) -> None:
        """Start the HTTP endpoint on its own thread; OSError if the address is taken."""
        self._server, self._thread = start_http_server(port, addr=bind, registry=self.registry)

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
