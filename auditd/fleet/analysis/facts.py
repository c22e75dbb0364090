"""What the fleet analysis is given: typed rows the store reads back (``FleetStore.facts``),
and nothing else: no connection, no clock (``now`` is a field)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from auditd.model import Profile

MONTH_S = 30.4375 * 86_400.0
"""A month as rates are quoted (units per month): a Julian year over twelve."""
DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """The latest verdict on one stream (or device, for metadata findings) at one site."""

    site: str
    gateway: str
    device: str
    sensor: str | None
    kind: str
    status: str
    severity: str
    causes: tuple[str, ...]
    reference: str | None
    bias: float | None
    onset: float | None
    window_start: float
    window_end: float
    comparison: str | None = None
    """``context.comparison`` of the finding: ``cohort`` for a gateway's own cohort
    finding, ``peer_consensus`` for a verdict against the peers."""
    evidence: str = ""
    """The first cause's evidence, as the gateway wrote it."""
    onset_uncertainty_s: float = 0.0
    """How far after ``onset`` the deviation may have begun, as the gateway stated it
    (``domain.onsets.stated_uncertainty``; read for failing verdicts)."""
    onset_dated: bool = True
    """False where ``onset`` is only a bracket's middle (``domain.onsets.is_bracketed``)."""

    @property
    def key(self) -> tuple[str, str]:
        return self.site, self.device


@dataclass(frozen=True, slots=True)
class Device:
    """The newest inventory of one device."""

    site: str
    device: str
    gateway: str
    model: str | None
    firmware: str | None
    hardware_rev: str | None
    installed_at: str | None
    calibrated_at: str | None
    calibration_due: str | None
    last_seen: float | None

    @property
    def key(self) -> tuple[str, str]:
        return self.site, self.device


@dataclass(frozen=True, slots=True)
class FirmwareSeen:
    """A device version's firmware and when the fleet first saw it (``device_versions``)."""

    site: str
    device: str
    firmware: str | None
    first_seen: float


@dataclass(frozen=True, slots=True)
class DeviceDrift:
    """One stream's bias over its audits: the least-squares slope of bias against the
    windows' midpoints (units per second), how many audits and how long they span. The
    store keeps its sums as findings arrive (``stream_drift``), so the report does not read
    every finding."""

    site: str
    device: str
    sensor: str
    slope_per_s: float
    audits: int
    span_s: float
    slope_se_per_s: float = 0.0
    """The slope's standard error from its residuals: how much of the spread between
    devices is measurement, not drift."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """The newest request of one gateway's ticket."""

    site: str
    gateway: str
    ticket_id: str
    device: str
    sensor: str | None
    cause: str | None
    severity: str
    state: str
    event: str
    opened_at: float | None
    at: float

    @property
    def open(self) -> bool:
        return self.state != "resolved" and self.event != "resolve"


@dataclass(frozen=True, slots=True)
class FleetFacts:
    """Everything one fleet report is computed from."""

    now: float
    verdicts: tuple[Verdict, ...] = ()
    devices: tuple[Device, ...] = ()
    firmware_seen: tuple[FirmwareSeen, ...] = ()
    drifts: tuple[DeviceDrift, ...] = ()
    tickets: tuple[Ticket, ...] = ()
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    """Device profiles by model (tolerances, the calibration interval); may be empty."""
    findings: Mapping[tuple[str, str, str, str], Mapping[str, Any]] = field(
        default_factory=dict)
    """The published JSON of each failing latest finding, by (site, device, kind, sensor)."""
