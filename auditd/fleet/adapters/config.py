"""``fleet run``'s configuration: one TOML file, refused with file, key and problem.

The broker is reached exactly as a gateway reaches it (``[broker]``, the same keys, TLS and
password file, read by the gateway's own ``broker_config``); what is the fleet's own is the
shared subscription's group, the database and the batching. Relative paths are taken from
the file's directory. ``examples/fleet.toml`` lists every key with its default.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

from auditd.adapters.config.daemon import (
    BROKER_KEYS,
    LOG_KEYS,
    BrokerConfig,
    LogConfig,
    broker_config,
    log_config,
    topic_prefix,
)
from auditd.adapters.config.toml import (
    Invalid,
    Table,
    as_duration,
    as_identifier,
    as_integer,
    as_string,
    read_toml,
)
from auditd.errors import UsageError
from auditd.model import ID_PATTERN

FLEET_KEYS = ("group", "dsn", "prefix", "heartbeat", "broker", "ingest", "log")
INGEST_KEYS = ("batch_max", "retry_max")
DSN_ENV = "SENSOR_AUDITD_DSN"


@dataclass(frozen=True, slots=True)
class FleetIngest:
    batch_max: int = 500
    """Messages committed in one transaction at most (and at most the Receive Maximum)."""
    retry_max_s: float = 30.0
    """Longest wait between attempts at a batch the database refused for its own reasons."""


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """Everything one ``fleet run`` replica needs; every replica of a group reads the same."""

    dsn: str
    group: str = "sensor-auditd-fleet"
    prefix: str = "fleet"
    heartbeat_s: float = 5.0
    broker: BrokerConfig = field(default_factory=lambda: BrokerConfig(receive_maximum=1000))
    ingest: FleetIngest = field(default_factory=FleetIngest)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = ""

    def for_replica(self, replica: str) -> FleetConfig:
        """This replica's copy: its own MQTT client id (``{client_id}-{replica}``), stable
        across its restarts, so that the broker keeps its session, and what was sent to it
        and not acknowledged waits for it rather than being lost."""
        if not ID_PATTERN.fullmatch(replica):
            raise UsageError(f"{replica!r} is not a valid name: use 1-64 letters, digits, "
                             "'_', '.' or '-'", option="--replica")
        base = self.broker.client_id or f"sensor-auditd-fleet-{self.group}"
        return replace(self, broker=replace(self.broker, client_id=f"{base}-{replica}"))

    @property
    def subscription(self) -> str:
        """CONTRACT.md's shared subscription to every gateway's upstream topics."""
        return f"$share/{self.group}/{self.prefix}/+/audit/#"


def default_replica() -> str:
    """This host's short name: one replica per host unless told otherwise."""
    name = socket.gethostname().split(".", 1)[0]
    return name if ID_PATTERN.fullmatch(name) else "replica"


def load_fleet_config(path: str | Path, environ: dict[str, str] | None = None) -> FleetConfig:
    """Read and check the file; ``dsn`` may instead come from ``SENSOR_AUDITD_DSN``."""
    env = os.environ if environ is None else environ
    file = str(path)
    base = Path(path).absolute().parent
    top = Table.of(file, "", read_toml(Path(path)), FLEET_KEYS)
    dsn = top.maybe("dsn", _dsn) or env.get(DSN_ENV, "").strip()
    if not dsn:
        raise top.fail("dsn", f"missing: set dsn in the file or {DSN_ENV} in the environment")
    broker_table = top.table("broker", BROKER_KEYS)
    broker = broker_config(broker_table, base)
    if broker.protocol != "5":
        raise broker_table.fail("protocol", "must be \"5\": shared subscriptions, which let "
                                "replicas split the load, are MQTT 5")
    if not broker_table.has("receive_maximum"):
        broker = replace(broker, receive_maximum=1000)
    ingest = top.table("ingest", INGEST_KEYS)
    batch_max = ingest.get("batch_max", as_integer(1, 65535), 500)
    if batch_max > broker.receive_maximum:
        raise ingest.fail("batch_max", f"must be at most broker.receive_maximum "
                          f"({broker.receive_maximum}): the broker never has more unacknowledged "
                          f"messages in flight to us, so a larger batch could not fill")
    return FleetConfig(
        dsn=dsn,
        group=top.get("group", as_identifier, "sensor-auditd-fleet"),
        prefix=top.get("prefix", topic_prefix, "fleet"),
        heartbeat_s=top.get("heartbeat", as_duration(positive=True), 5.0),
        broker=broker,
        ingest=FleetIngest(batch_max=batch_max,
                           retry_max_s=ingest.get("retry_max", as_duration(positive=True), 30.0)),
        log=log_config(top.table("log", LOG_KEYS)),
        source=file,
    )


def _dsn(value: object) -> str:
    text = as_string(value).strip()
    if not (text.startswith(("postgresql://", "postgres://")) or "=" in text):
        raise Invalid("is not a PostgreSQL connection string: use postgresql://user@host:port/db "
                      "or key=value pairs")
    return cast(str, text)
