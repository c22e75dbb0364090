"""The daemon's configuration: one TOML file, every key with a default.

``load_daemon_config`` reads and checks it (``check-config``, a refused reload) and returns
a frozen ``DaemonConfig``; ``default_config`` is the built-in defaults, which run on a
laptop against ``localhost:1883``. ``examples/sensor-auditd.toml`` lists every key with its
default and a comment. Relative paths in the file are taken from its directory.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

from auditd import units
from auditd.adapters.config.toml import (
    Invalid,
    Table,
    as_boolean,
    as_choice,
    as_duration,
    as_identifier,
    as_integer,
    as_items,
    as_number,
    as_path,
    as_size,
    as_string,
    fmt_number,
    read_toml,
)
from auditd.errors import ConfigError
from auditd.logs import LogFormat
from auditd.model import ID_PATTERN
from auditd.retry import RetryPolicy
from auditd.text import describe_value, format_duration
from auditd.topics import TopicsConfig

MqttProtocol = Literal["5", "3.1.1"]
Synchronous = Literal["full", "normal"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


# --------------------------------------------------------------------------- daemon config

DAEMON_KEYS = ("site", "gateway", "profiles_dir", "references_dir", "broker", "ingest",
               "audit", "store", "topics", "log", "models", "metrics",
               "tickets", "units")
UNITS_KEYS = ("aliases",)
TICKETS_KEYS = ("mqtt", "max_attempts", "backoff_min", "backoff_max", "webhook", "command",
                "file")
WEBHOOK_KEYS = ("url", "timeout", "token_file", "headers")
COMMAND_KEYS = ("argv", "timeout")
FILE_SINK_KEYS = ("path",)
BROKER_KEYS = ("host", "port", "client_id", "keepalive", "protocol", "session_expiry",
               "username", "password_file", "reconnect_min_s", "reconnect_max_s",
               "receive_maximum", "tls")
TLS_KEYS = ("ca_file", "cert_file", "key_file", "insecure")
INGEST_KEYS = ("batch_max", "batch_max_wait_s", "max_payload_bytes", "max_future_skew_s",
               "max_age", "quarantine_payload_cap", "max_devices", "max_streams",
               "max_sites_per_device", "stall_after")
AUDIT_KEYS = ("interval", "window", "first_run_delay", "context_lookback",
              "silent_after_intervals", "silent_min", "cohort_alpha")
STORE_KEYS = ("path", "synchronous", "retention_days", "quarantine_retention_days",
              "findings_retention_days",
              "retention_interval", "wal_limit", "quarantine_max_rows", "quarantine_max_bytes",
              "meta_versions_per_device", "events_per_device", "window_cache")
TOPICS_KEYS = ("prefix", "commands", "inventory", "inventory_refresh")
LOG_KEYS = ("level", "format", "rejections_interval")
METRICS_KEYS = ("enabled", "bind", "port")

MQTT_MAX_SESSION_EXPIRY_S = 0xFFFFFFFF
"""MQTT 5's Session Expiry Interval is a four-byte integer of seconds."""
MQTT_MAX_PACKET = 268_435_455
"""The largest MQTT packet the variable-length header can describe."""


def default_gateway() -> str:
    """This host's short name, squeezed into the id pattern (it appears in topics)."""
    name = socket.gethostname().split(".", 1)[0]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", name).lstrip("_-")[:64]
    return name if ID_PATTERN.fullmatch(name) else "gateway"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Present (``[broker.tls]``) means TLS is on; ``ca_file`` None = system CA store."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    """Skip the broker host name check (test brokers only; the chain is still verified)."""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """How to reach the MQTT broker.

    The password is never held here: only ``password_file``, which the MQTT adapter reads
    at connect time, so a rotated password needs no restart and no repr or log shows it.
    """

    host: str = "localhost"
    port: int = 1883
    client_id: str = ""
    """Empty until ``DaemonConfig`` fills in ``sensor-auditd-{gateway}``: a stable id is what
    makes the broker keep our persistent session (and queued messages) across restarts.
    Once filled in it is kept, also by ``dataclasses.replace(cfg, gateway=...)``."""
    keepalive: int = 60
    protocol: MqttProtocol = "5"
    session_expiry_s: float = 7 * 86400.0
    tls: TlsConfig | None = None
    username: str | None = None
    password_file: str | None = None
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    receive_maximum: int = 100


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Limits on what one message may cost, and how readings are batched into the store."""

    batch_max: int = 100
    batch_max_wait_s: float = 0.05
    max_payload_bytes: int = 65536
    max_future_skew_s: float = 300.0
    max_age_s: float = 3650 * 86400.0
    """Readings older than this when received are ``ts_too_old`` (a clock reset to the
    epoch); ten years by default, so that a device flushing a long outage's buffer is not
    refused."""
    quarantine_payload_cap: int = 4096
    max_devices: int = 5000
    """Devices the gateway keeps data of; a new one beyond it is quarantined
    (``device_limit``)."""
    max_streams: int = 50_000
    """(site, device, sensor) streams; a reading starting one more is ``stream_limit``."""
    max_sites_per_device: int = 8
    """Sites (the topic's site level) one device may hold streams in: one id sent under
    many sites cannot take every stream's place (``stream_limit``)."""
    stall_after_s: float = 300.0
    """A writer that has committed nothing for this long while it holds messages makes the
    daemon unhealthy (metrics, ``status``, the systemd watchdog no longer fed)."""


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """When audits run; ``window_s`` None means each sensor's ``tolerance.window``."""

    interval_s: float = 3600.0
    window_s: float | None = None
    first_run_delay_s: float = 60.0
    """Lets retained meta arrive and the broker's queued backlog drain before judging."""
    context_lookback_s: float = 30 * 86400.0
    """How far before a deviation's onset a firmware update, relocation... is named."""
    silent_after_intervals: float = 30.0
    silent_min_s: float = 3600.0
    """A device is silent after this many reporting intervals, and never before this."""
    cohort_alpha: float = 0.05
    """Family-wise significance of the cohort tests (Holm-corrected)."""


DEFAULT_STORE_PATH = Path("/var/lib/sensor-auditd/audit.db")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: Path = DEFAULT_STORE_PATH
    synchronous: Synchronous = "full"
    """SQLite's ``PRAGMA synchronous``: ``full`` survives power loss, which matters because
    a message is acknowledged to the broker only once committed."""
    retention_days: float = 90.0
    quarantine_retention_days: float = 30.0
    findings_retention_days: float = 90.0
    """Findings older than this are deleted (each stream's current verdict is kept)."""
    retention_interval_s: float = 3600.0
    wal_limit: int = 16 * 1024 * 1024
    """The write-ahead log's size limit (a quarter of the free space at most)."""
    quarantine_max_rows: int = 50_000
    quarantine_max_bytes: int = 32 * 1024 * 1024
    meta_versions_per_device: int = 100
    """A device's meta history beyond it is thinned to what the metadata rules read."""
    events_per_device: int = 1000
    """A device's events beyond it lose the oldest (save the latest of each kind)."""
    window_cache: int = 64 * 1024 * 1024
    """Memory the audit keeps of its windows between runs, so that it reads only what
    arrived since (``adapters.store.windows``); 0 reads every window whole."""



@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """POST each ticket's JSON to ``url`` (``Idempotency-Key`` header)."""

    url: str
    timeout_s: float = 10.0
    token_file: str | None = None
    """First line sent as ``Authorization: Bearer ...``; read at each delivery."""
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class CommandConfig:
    """Run ``argv`` with the ticket's JSON on stdin; exit status 0 means delivered."""

    argv: tuple[str, ...]
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class TicketsConfig:
    """Where ticket requests go; every sink is optional (``[tickets]``)."""

    mqtt: bool = True
    """Publish on the ticket topic (CONTRACT.md) through the outbox, at QoS 1."""
    max_attempts: int = 12
    """Failed deliveries to a webhook or command before the request is dead-lettered."""
    backoff_min_s: float = 10.0
    backoff_max_s: float = 1800.0
    webhook: WebhookConfig | None = None
    command: CommandConfig | None = None
    file: Path | None = None
    """Append each ticket's JSON as one line (fsync'd): an audit trail, or a replay's."""

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_min_s, self.backoff_max_s)

    def sinks(self) -> tuple[str, ...]:
        """Names of the configured sinks that deliver from the ticket queue."""
        return tuple(name for name, on in (("webhook", self.webhook), ("command", self.command),
                                           ("file", self.file)) if on is not None)


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: LogLevel = "info"
    format: LogFormat = "auto"
    """``auto``: a readable console on a terminal, JSON lines otherwise (journald)."""
    rejections_interval_s: float = 60.0
    """At most one ``message_rejected`` line per reason and device in this interval, with
    the count of the ones it stands for (``auditd.app.rejection_log``)."""


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The Prometheus endpoint: off unless asked for, and on loopback unless told otherwise
    (it needs no secret to read, so exposing it is a deliberate choice)."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything ``sensor-auditd run`` needs; defaults run on a laptop against localhost."""

    site: str = "site"
    gateway: str = field(default_factory=default_gateway)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tickets: TicketsConfig = field(default_factory=TicketsConfig)
    profiles_dir: Path = Path("device_profiles")
    references_dir: Path = Path("references")
    models: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Device-id glob -> model, first match wins, for devices whose meta names no model."""
    unit_aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """``[units] aliases``: the site's own unit spellings -> the pint unit each means."""
    source: str = ""
    """The file it was read from ("" for ``default_config``), for error messages."""

    def __post_init__(self) -> None:
        where = self.source or "<default config>"
        for name in ("site", "gateway"):
            value = getattr(self, name)
            if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
                raise ConfigError(where, name, f"{value!r} is not a valid name: use 1-64 "
                                  f"letters, digits, '_', '.' or '-'")
        if not self.broker.client_id:
            object.__setattr__(self, "broker", replace(
                self.broker, client_id=f"sensor-auditd-{self.gateway}"))
        object.__setattr__(self, "profiles_dir", Path(self.profiles_dir))
        object.__setattr__(self, "references_dir", Path(self.references_dir))
        object.__setattr__(self, "models", MappingProxyType(dict(self.models)))
        object.__setattr__(self, "unit_aliases", MappingProxyType(dict(self.unit_aliases)))


def default_config(**overrides: Any) -> DaemonConfig:
    """The built-in defaults with some fields replaced (tests, ``replay`` without a file)."""
    return DaemonConfig(**overrides)


def load_daemon_config(path: str | Path) -> DaemonConfig:
    """Read and validate the daemon's TOML file (e.g. ``/etc/sensor-auditd/config.toml``).

    Relative paths in it (profiles, references, store, TLS files, password file) are taken
    from the file's directory, so the daemon does not depend on its working directory.
    """
    file = str(path)
    base = Path(path).absolute().parent
    top = Table.of(file, "", read_toml(Path(path)), DAEMON_KEYS)
    gateway = top.get("gateway", as_identifier, "") or default_gateway()
    return DaemonConfig(
        site=top.get("site", as_identifier, "site"),
        gateway=gateway,
        broker=broker_config(top.table("broker", BROKER_KEYS), base),
        ingest=_ingest(top.table("ingest", INGEST_KEYS)),
        audit=_audit(top.table("audit", AUDIT_KEYS)),
        store=_store(top.table("store", STORE_KEYS), base),
        topics=_topics(top.table("topics", TOPICS_KEYS)),
        log=log_config(top.table("log", LOG_KEYS)),
        metrics=_metrics(top.table("metrics", METRICS_KEYS)),
        tickets=_tickets(top.table("tickets", TICKETS_KEYS), base),
        profiles_dir=top.get("profiles_dir", as_path(base), base / "device_profiles"),
        references_dir=top.get("references_dir", as_path(base), base / "references"),
        models=top.get("models", _models, MappingProxyType({})),
        unit_aliases=_unit_aliases(top.table("units", UNITS_KEYS)),
        source=file,
    )


def broker_config(table: Table, base: Path) -> BrokerConfig:
    tls = _tls(table.table("tls", TLS_KEYS), base) if table.has("tls") else None
    username = table.maybe("username", as_string)
    password_file = table.maybe("password_file", as_path(base, must_exist=True))
    if password_file is not None and username is None:
        raise table.fail("password_file", "needs broker.username as well")
    reconnect_min_s = table.get("reconnect_min_s", as_duration(positive=True), 1.0)
    reconnect_max_s = table.get("reconnect_max_s", as_duration(positive=True), 60.0)
    if reconnect_min_s < 1:
        raise table.fail("reconnect_min_s", "must be at least 1 s (paho counts whole seconds)")
    if reconnect_max_s < reconnect_min_s:
        raise table.fail("reconnect_max_s", f"must be at least reconnect_min_s "
                         f"({fmt_number(reconnect_min_s)} s), got {fmt_number(reconnect_max_s)}")
    return BrokerConfig(
        host=table.get("host", _host, "localhost"),
        port=table.get("port", as_integer(1, 65535), 8883 if tls else 1883),
        client_id=table.get("client_id", _client_id, ""),
        keepalive=table.get("keepalive", as_integer(0, 65535), 60),
        protocol=cast(MqttProtocol, table.get("protocol", as_choice("5", "3.1.1"), "5")),
        session_expiry_s=table.get("session_expiry",
                                   as_duration(high=MQTT_MAX_SESSION_EXPIRY_S), 7 * 86400.0),
        tls=tls,
        username=username,
        password_file=str(password_file) if password_file else None,
        reconnect_min_s=reconnect_min_s,
        reconnect_max_s=reconnect_max_s,
        receive_maximum=table.get("receive_maximum", as_integer(1, 65535), 100),
    )


def _tls(table: Table, base: Path) -> TlsConfig:
    files = {name: table.maybe(name, as_path(base, must_exist=True))
             for name in ("ca_file", "cert_file", "key_file")}
    if files["key_file"] is not None and files["cert_file"] is None:
        raise table.fail("key_file", "needs broker.tls.cert_file as well")
    return TlsConfig(
        ca_file=str(files["ca_file"]) if files["ca_file"] else None,
        cert_file=str(files["cert_file"]) if files["cert_file"] else None,
        key_file=str(files["key_file"]) if files["key_file"] else None,
        insecure=table.get("insecure", as_boolean, False),
    )


def _host(value: object) -> str:
    text = as_string(value).strip()
    if any(c.isspace() for c in text) or "/" in text:
        raise Invalid(f"{text!r} is not a host name or address")
    return text


def _client_id(value: object) -> str:
    text = as_string(value)
    if len(text.encode("utf-8")) > 65535:
        raise Invalid("must be at most 65535 bytes (MQTT string limit)")
    return text


def _ingest(table: Table) -> IngestConfig:
    return IngestConfig(
        batch_max=table.get("batch_max", as_integer(1), 100),
        batch_max_wait_s=table.get("batch_max_wait_s", as_duration(), 0.05),
        max_payload_bytes=table.get("max_payload_bytes", as_integer(1, MQTT_MAX_PACKET), 65536),
        max_future_skew_s=table.get("max_future_skew_s", as_duration(), 300.0),
        max_age_s=table.get("max_age", as_duration(positive=True), 3650 * 86400.0),
        quarantine_payload_cap=table.get("quarantine_payload_cap", as_integer(0), 4096),
        max_devices=table.get("max_devices", as_integer(1), 5000),
        max_streams=table.get("max_streams", as_integer(1), 50_000),
        max_sites_per_device=table.get("max_sites_per_device", as_integer(1), 8),
        stall_after_s=table.get("stall_after", as_duration(positive=True), 300.0),
    )


def _audit(table: Table) -> AuditConfig:
    return AuditConfig(
        interval_s=table.get("interval", as_duration(positive=True), 3600.0),
        window_s=table.maybe("window", as_duration(positive=True)),
        first_run_delay_s=table.get("first_run_delay", as_duration(), 60.0),
        context_lookback_s=table.get("context_lookback", as_duration(positive=True),
                                     30 * 86400.0),
        silent_after_intervals=table.get("silent_after_intervals",
                                         as_number(1, positive=True), 30.0),
        silent_min_s=table.get("silent_min", as_duration(), 3600.0),
        cohort_alpha=table.get("cohort_alpha", as_number(0, 0.5, positive=True), 0.05),
    )


def _store(table: Table, base: Path) -> StoreConfig:
    return StoreConfig(
        path=table.get("path", as_path(base), DEFAULT_STORE_PATH),
        synchronous=cast(Synchronous, table.get("synchronous", as_choice("full", "normal"),
                                                "full")),
        retention_days=table.get("retention_days", as_number(0, positive=True), 90.0),
        quarantine_retention_days=table.get("quarantine_retention_days",
                                            as_number(0, positive=True), 30.0),
        findings_retention_days=table.get("findings_retention_days",
                                          as_number(0, positive=True), 90.0),
        retention_interval_s=table.get("retention_interval", as_duration(positive=True), 3600.0),
        wal_limit=table.get("wal_limit", as_size(512 * 1024), 16 * 1024 * 1024),
        quarantine_max_rows=table.get("quarantine_max_rows", as_integer(1), 50_000),
        quarantine_max_bytes=table.get("quarantine_max_bytes", as_size(64 * 1024),
                                       32 * 1024 * 1024),
        meta_versions_per_device=table.get("meta_versions_per_device", as_integer(4), 100),
        events_per_device=table.get("events_per_device", as_integer(10), 1000),
        window_cache=table.get("window_cache", as_size(0), 64 * 1024 * 1024),
    )


def _topics(table: Table) -> TopicsConfig:
    return TopicsConfig(prefix=table.get("prefix", topic_prefix, "fleet"),
                        commands=table.get("commands", as_boolean, False),
                        inventory=table.get("inventory", as_boolean, True),
                        inventory_refresh_s=table.get("inventory_refresh",
                                                      as_duration(positive=True), 3600.0))


def _tickets(table: Table, base: Path) -> TicketsConfig:
    backoff_min = table.get("backoff_min", as_duration(positive=True), 10.0)
    backoff_max = table.get("backoff_max", as_duration(positive=True), 1800.0)
    if backoff_max < backoff_min:
        raise table.fail("backoff_max", f"must be at least backoff_min "
                         f"({format_duration(backoff_min)}), got {format_duration(backoff_max)}")
    webhook = command = None
    if table.has("webhook"):
        hook = table.table("webhook", WEBHOOK_KEYS)
        token = hook.maybe("token_file", as_path(base, must_exist=True))
        webhook = WebhookConfig(url=hook.need("url", _http_url),
                                timeout_s=hook.get("timeout", as_duration(positive=True), 10.0),
                                token_file=str(token) if token else None,
                                headers=hook.get("headers", _headers, MappingProxyType({})))
    if table.has("command"):
        cmd = table.table("command", COMMAND_KEYS)
        command = CommandConfig(argv=cmd.need("argv", as_items(as_string)),
                                timeout_s=cmd.get("timeout", as_duration(positive=True), 30.0))
    file = None
    if table.has("file"):
        file = table.table("file", FILE_SINK_KEYS).need("path", as_path(base))
    return TicketsConfig(
        mqtt=table.get("mqtt", as_boolean, True),
        max_attempts=table.get("max_attempts", as_integer(1, 1000), 12),
        backoff_min_s=backoff_min, backoff_max_s=backoff_max,
        webhook=webhook, command=command, file=file)


def _http_url(value: object) -> str:
    text = as_string(value).strip()
    scheme, _, rest = text.partition("://")
    if scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise Invalid(f"{text!r} is not an http:// or https:// URL")
    return text


def _headers(value: object) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise Invalid(f"must be a table such as {{X-Source = \"gw-1\"}}, "
                      f"not {describe_value(value)}")
    out: dict[str, str] = {}
    for name, text in value.items():
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
            raise Invalid(f"{name!r} is not an HTTP header name")
        if name.lower() in ("idempotency-key", "content-type", "authorization"):
            raise Invalid(f"{name!r} is set by sensor-auditd itself")
        try:
            out[name] = as_string(text)
        except Invalid as exc:
            raise Invalid(f"{name}: {exc}") from None
    return MappingProxyType(out)


def log_config(table: Table) -> LogConfig:
    return LogConfig(
        level=cast(LogLevel, table.get(
            "level", as_choice("debug", "info", "warning", "error", "critical"), "info")),
        format=cast(LogFormat, table.get("format", as_choice("auto", "json", "console"), "auto")),
        rejections_interval_s=table.get("rejections_interval", as_duration(positive=True), 60.0),
    )


def _metrics(table: Table) -> MetricsConfig:
    return MetricsConfig(
        enabled=table.get("enabled", as_boolean, False),
        bind=table.get("bind", _host, "127.0.0.1"),
        port=table.get("port", as_integer(1, 65535), 9464),
    )


def topic_prefix(value: object) -> str:
    """One or more topic levels with no wildcard: the daemon subscribes below it."""
    text = as_string(value)
    levels = text.split("/")
    if any(not level or any(c in level for c in "+#\0") for level in levels):
        raise Invalid(f"{text!r} is not a topic prefix: use levels such as \"fleet\" or "
                       f"\"acme/fleet\", without '+', '#', or empty levels")
    return text


def _unit_aliases(table: Table) -> Mapping[str, str]:
    """``[units] aliases = {"deg C" = "degC"}``: each spelling checked on its own, so a
    bad one is refused naming it (``units.aliases."deg C"``)."""
    raw: object = table.get("aliases", lambda v: v, {})
    if not isinstance(raw, dict):
        raise table.fail("aliases", f'must be a table such as {{"deg C" = "degC"}}, '
                         f"not {describe_value(raw)}")
    out: dict[str, str] = {}
    for spelling, target in raw.items():
        key = f'aliases."{spelling}"'
        if not isinstance(target, str):
            raise table.fail(key, f"must be a unit string such as \"degC\", "
                             f"not {describe_value(target)}")
        problem = units.alias_problem(spelling, target)
        if problem is not None:
            raise table.fail(key, problem)
        out[spelling] = target
    return MappingProxyType(out)


def _models(value: object) -> Mapping[str, str]:
    """``[models]``: quoted device-id globs -> model name, kept in file order."""
    if not isinstance(value, dict):
        raise Invalid(f"must be a table such as {{\"th-north-*\" = \"th-200\"}}, "
                       f"not {describe_value(value)}")
    out: dict[str, str] = {}
    for glob, model in value.items():
        if not glob.strip():
            raise Invalid("a device glob must not be empty")
        try:
            out[glob] = as_identifier(model)
        except Invalid as exc:
            raise Invalid(f"\"{glob}\": {exc}") from None
    return MappingProxyType(out)
