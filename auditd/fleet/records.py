"""What the fleet stores: one frozen value per kind of upstream message.

Every value names the gateway it came from (``Origin``) and carries the times its content
states, never the time the fleet happened to receive it where the content has one, so that
a message delivered twice, or replayed from a recording, or imported from a gateway's store
after it was also received live, is the same value and its store keys are the same
(``auditd.fleet.adapters.store``).

Times are Unix epoch seconds as ``float``, as everywhere in sensor-auditd.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from auditd.model import Finding

GatewayState = Literal["online", "offline"]


@dataclass(frozen=True, slots=True)
class Origin:
    """Who published a message: the site and the gateway's name (the topic's levels)."""

    site: str
    gateway: str


@dataclass(frozen=True, slots=True)
class FleetFinding:
    """A gateway's finding (CONTRACT.md's form), as published on its finding topic or saved
    in its store. Keyed in the fleet by origin, kind, device, sensor and window end."""

    origin: Origin
    finding: Finding
    published: str | None = field(default=None, compare=False)
    """The JSON text it was published as, when it came as text (a message, a store's
    row): stored as it is instead of being written out again. Not part of its value."""


@dataclass(frozen=True, slots=True)
class Inventory:
    """One device as its gateway knows it: the retained device inventory topic
    (``fleet/{site}/audit/{gateway}/device/{device}``) or a meta version of a gateway store.

    ``as_of`` is the time the content is true at (the payload's ``ts``; for an imported meta
    version, when the gateway first saw it). The attributes (model .. calibration_due) make
    a device's version history: a change of any of them is a new version, first seen at
    ``as_of``; ``last_seen`` and ``causes`` are the device's current state only.
    """

    origin: Origin
    device: str
    as_of: float
    model: str | None = None
    firmware: str | None = None
    hardware_rev: str | None = None
    serial: str | None = None
    installed_at: str | None = None
    calibrated_at: str | None = None
    calibration_due: str | None = None
    last_seen: float | None = None
    causes: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys the fleet does not interpret, kept as they came."""

    def attributes(self) -> dict[str, str | None]:
        """The versioned attributes: what makes a new version when it changes."""
        return {"model": self.model, "firmware": self.firmware,
                "hardware_rev": self.hardware_rev, "serial": self.serial,
                "installed_at": self.installed_at, "calibrated_at": self.calibrated_at,
                "calibration_due": self.calibration_due}


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """``online`` / ``offline`` (the retained status topic; ``offline`` is the MQTT will).
    ``at``: the payload's time when it has one, else when the message was received."""

    origin: Origin
    state: GatewayState
    at: float


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The summary of one audit run (the report topic): when, and how many streams passed,
    failed or could not be judged."""

    origin: Origin
    at: float
    streams: int
    passed: int
    failed: int
    insufficient: int
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TicketEvent:
    """One ticket request of a gateway (``auditd.domain.tickets``): keyed by its
    idempotency key, so a retried request is one row."""

    origin: Origin
    ticket_id: str
    idempotency_key: str
    event: str
    at: float
    device: str
    sensor: str | None
    cause: str | None
    severity: str
    state: str
    opened_at: float | None
    resolved_at: float | None
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An upstream message the fleet could not use, kept with its reason (counted, shown
    by ``fleet status``). Keyed by topic and payload: the same bad message twice is one
    row."""

    topic: str
    reason: str
    detail: str
    payload: bytes
    received_at: float


Upstream = FleetFinding | Inventory | GatewayStatus | AuditReport | TicketEvent | Rejected
"""Anything one upstream message becomes (``auditd.fleet.upstream.parse``)."""


@dataclass(frozen=True, slots=True)
class ReplicaBeat:
    """A ``fleet run`` replica saying it is alive: what it has done and what waits."""

    replica: str
    host: str
    pid: int
    group: str
    started_at: float
    at: float
    messages: int
    """Messages committed since the replica started."""
    backlog: int
    """Messages received and not yet committed (so not yet acknowledged)."""


@dataclass(frozen=True, slots=True)
class WriteCounts:
    """What one ``FleetStore.write`` changed: rows new or updated, per kind. A batch
    replayed a second time counts all zeros."""

    findings: int = 0
    inventory: int = 0
    versions: int = 0
    statuses: int = 0
    reports: int = 0
    tickets: int = 0
    rejected: int = 0

    @property
    def total(self) -> int:
        return (self.findings + self.inventory + self.versions + self.statuses + self.reports
                + self.tickets + self.rejected)
