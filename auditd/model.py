"""The nouns every layer shares.

Everything here is a frozen dataclass with no behaviour beyond (de)serialisation, so that
the pure layers (``validate``, ``core``, ``audit``) and the adapters (store, MQTT, replay)
exchange values, never live objects. Times are Unix epoch seconds as ``float`` throughout
the code; they become RFC 3339 strings only at the JSON edge (``iso``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""CONTRACT.md: device ids, site names and sensor names. Use ``fullmatch``."""

MessageKind = Literal["telemetry", "meta", "event"]
FindingKind = Literal["calibration", "data_quality", "metadata"]
Status = Literal["pass", "fail", "insufficient_data"]
Severity = Literal["none", "minor", "major", "critical"]
SEVERITIES: tuple[Severity, ...] = ("none", "minor", "major", "critical")
"""Mildest first: a severity's index is its rank."""
SEVERITY_RANK: Mapping[str, int] = {name: i for i, name in enumerate(SEVERITIES)}


def worst_severity(severities: Iterable[Severity], default: Severity = "none") -> Severity:
    """The most severe of ``severities`` (``default`` when there are none)."""
    return max(severities, key=SEVERITY_RANK.__getitem__, default=default)


MAJOR_EXCEEDANCE = 2.0
CRITICAL_EXCEEDANCE = 5.0
"""How many times its tolerance a deviation must reach to be major, and to pass to be
critical."""


def severity_of_exceedance(times: float) -> Severity:
    """A deviation's severity from how many times its tolerance it is: minor below twice,
    major from twice to five times, critical beyond. The one scale for a stream's verdict
    (``core.verdict.severity_of``) and a reference's own fault (``domain.audit_plan``)."""
    if times > CRITICAL_EXCEEDANCE:
        return "critical"
    if times >= MAJOR_EXCEEDANCE:
        return "major"
    return "minor"


def weighted(severity: Severity, impact: float) -> Severity:
    """A severity weighted by a profile's ``impact`` (``AlertPolicy.impact``): rank (minor 1,
    major 2, critical 3) times impact, rounded half up, clamped to minor..critical;
    ``none`` stays ``none``. Applied once, by the audit that makes the finding
    (``app.auditor``), so that the finding, its alert, the report and ``status`` all show
    the one severity it yields."""
    rank = SEVERITY_RANK[severity]
    if rank == 0:
        return "none"
    return SEVERITIES[min(3, max(1, math.floor(rank * impact + 0.5)))]

EVENT_TYPES = (
    "maintenance",
    "calibration",
    "firmware_update",
    "relocation",
    "replacement",
    "cleaning",
)


def latest_start(onset: float, uncertainty_s: float, slack_s: float) -> float:
    """The latest moment a deviation stated to begin at ``onset`` may have begun: its
    stated uncertainty after it, or the hour's slack where that is longer (a change point
    is a few bins off either way). An update no later than this may have come first: the
    one rule by which a member follows its update (``core.cohorts.firmware_timing``) and
    a finding's changes are laid beside it (``domain.metadata.changes_before``). Here,
    in the vocabulary, because the gateway's ingest-only start-up lays changes without
    loading the core's statistics. An unbounded or negative uncertainty counts as none."""
    return onset + max(timing_uncertainty(uncertainty_s), slack_s)


def timing_uncertainty(uncertainty_s: float) -> float:
    """An onset's uncertainty as a timing may lean on it: an unbounded one (nothing placed
    the onset, as nothing places a bracket's middle) or a negative one lends nothing."""
    return uncertainty_s if math.isfinite(uncertainty_s) and uncertainty_s > 0.0 else 0.0


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> RFC 3339 UTC with a ``Z`` (milliseconds only when present)."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=UTC)
    text = dt.isoformat(timespec="milliseconds" if dt.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def from_iso(text: str | None) -> float | None:
    """The inverse of ``iso``, for what sensor-auditd itself wrote (a finding file, a stored
    finding): RFC 3339 with ``Z`` or an offset. Input from devices goes through
    ``validate.parse_timestamp``, which is stricter."""
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class Tolerance:
    """What "calibrated" means for one sensor, in its canonical unit (CONTRACT.md)."""

    bias: float
    gain: float
    rmse: float
    r2_min: float
    lag_s: float
    window_s: float
    min_samples: int


@dataclass(frozen=True, slots=True)
class MeasuredSensor:
    """What a sensor measures and how it reports: enough to validate and store its
    readings. A reference instrument's own profile needs no more (it is the yardstick, so
    there is nothing to be in tolerance of): a sensor written without a ``[tolerance]``
    table is this, and is never audited."""

    name: str
    quantity: str
    """pint dimensionality, e.g. ``[temperature]``, ``dimensionless`` or ``[]``."""
    unit: str
    """Canonical unit: storage, metrics and findings use it."""
    range: tuple[float, float]
    interval_s: float


@dataclass(frozen=True, slots=True)
class SensorSpec(MeasuredSensor):
    """A sensor with its audit contract: what "calibrated" means for it."""

    tolerance: Tolerance


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """How many audits make an alert, per device profile (``[alerts]`` in the profile).

    Defaults: with hourly audits over a 24 h window, two failing audits in a row are two
    looks at a fault that is still there an hour later, and three passing ones show that a
    repair holds before the alert closes (a flap of one or two good audits does not).
    """

    open_after: int = 2
    resolve_after: int = 3
    impact: float = 1.0
    """Weight of this model's faults: the finding's severity rank (minor 1, major 2,
    critical 3) times ``impact``, rounded, clamped to minor..critical. 1.5 turns a minor
    fault of an important instrument into a major alert; 0.5 a major fault of a spare into
    a minor one."""
    cause_after: int = 2
    """Consecutive failing audits that must name a new top cause before an open alert's
    cause follows it: the cause tracks the latest evidence without flapping between two
    readings of one fault."""
    metadata_after: int = 2
    """Audit runs a metadata anomaly must be seen in before it opens an alert (and a
    ticket), unless it matters at once (a firmware change a drift followed): one stray
    message is data quality, not a trip."""


@dataclass(frozen=True, slots=True)
class Profile:
    model: str
    sensors: Mapping[str, MeasuredSensor]
    """Every sensor of the model; those with a tolerance (``SensorSpec``) are audited."""
    allowed_firmware: tuple[str, ...] = ()
    calibration_interval_days: float | None = None
    source: str = ""
    """The file it was read from, for error messages."""
    alerts: AlertPolicy = field(default_factory=AlertPolicy)

    def audited(self, sensor: str) -> SensorSpec | None:
        """The sensor's spec if the profile gives it a tolerance (it can be audited)."""
        spec = self.sensors.get(sensor)
        return spec if isinstance(spec, SensorSpec) else None


DEFAULT_COVERAGE_FACTOR = 2.0
"""The coverage factor of a reference's stated uncertainty when its file names none: k = 2
(about 95 %), what calibration certificates state under ISO/IEC 17025 and the GUM."""


MAX_COVERAGE_FACTOR = 10.0
"""The largest coverage factor a reference may state: certificates state 2 (about 95 %)
or 3; a factor of tens is a typing error, which would shrink the reference's noise to
nothing."""


@dataclass(frozen=True, slots=True)
class Reference:
    id: str
    site: str
    serves: tuple[str, ...]
    """fnmatch globs of the device ids co-located with this instrument."""
    sensors: tuple[str, ...]
    model: str | None = None
    """Profile of the reference instrument itself (a key sensor-auditd adds)."""
    certificate: str | None = None
    calibration_due: float | None = None
    uncertainty: Mapping[str, float] = field(default_factory=dict)
    """Expanded uncertainty per sensor, as a calibration certificate states it (canonical
    unit); ``coverage_factor`` says how many standard uncertainties it spans."""
    coverage_factor: float = DEFAULT_COVERAGE_FACTOR
    source: str = ""

    def __post_init__(self) -> None:
        if not 1.0 <= self.coverage_factor <= MAX_COVERAGE_FACTOR:
            raise ValueError(f"reference {self.id}: coverage_factor must lie in "
                             f"[1, {MAX_COVERAGE_FACTOR:g}], got {self.coverage_factor!r}")

    def standard_uncertainty(self, sensor: str) -> float | None:
        """The sensor's standard uncertainty (U / k, GUM), the std of the reference's
        reading error the errors-in-variables fit needs; None where none is stated.

        A certificate's U is an interval about 95 % of values fall in (k = 2): taken as
        the std itself it overstates the reference's noise variance fourfold, and the
        Deming correction then pulls a real span error of 15 % (a CO2 unit at 0.85
        against a reference with 2 ppm of noise and U = 4 ppm) back inside tolerance."""
        expanded = self.uncertainty.get(sensor)
        return None if expanded is None else expanded / self.coverage_factor


# --------------------------------------------------------------------------- ingest


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One (site, device, sensor) stream; first/last times are epoch seconds."""

    id: int
    site: str
    device: str
    sensor: str
    unit: str
    first_ts: float | None
    last_ts: float | None
    count: int


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as it came off the wire or out of a recording."""

    topic: str
    payload: bytes
    received_at: float
    redelivered: bool = False
    """The broker's DUP flag: it sent this message before, and may have seen it committed
    (a daemon killed between its commit and its acknowledgement). The store then counts
    it only if nothing of it is stored yet (``auditd.adapters.store.readings``)."""
    packet_id: int | None = None
    """The MQTT packet identifier of a QoS 1 delivery, which a redelivery keeps: with the
    topic and payload it recognises a rejected message delivered again."""


@dataclass(frozen=True, slots=True)
class Address:
    """What a valid topic says: who sent it and what kind of message it is."""

    site: str
    device: str
    kind: MessageKind


@dataclass(frozen=True, slots=True)
class Reading:
    """One accepted value, already converted to the sensor's canonical unit.

    ``value`` is ``None`` when the device reported that it has no value (an outage).
    """

    site: str
    device: str
    sensor: str
    unit: str
    ts: float
    value: float | None
    seq: int | None = None
    out_of_range: bool = False
    """Well formed but outside the profile's plausible ``range``: kept and counted, never
    thrown away (a gas sensor's readings below 0 are the evidence of its offset)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message or a reading that was not accepted, kept in quarantine with its reason."""

    topic: str
    reason: str
    detail: str
    payload: bytes
    received_at: float
    device: str | None = None
    sensor: str | None = None


@dataclass(frozen=True, slots=True)
class MetaRecord:
    site: str
    device: str
    ts: float
    received_at: float
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EventRecord:
    site: str
    device: str
    ts: float
    received_at: float
    type: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What validating one message yields: all of it is committed in one transaction."""

    readings: tuple[Reading, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    meta: MetaRecord | None = None
    event: EventRecord | None = None
    message: RawMessage | None = None
    """The message its readings came from, for a rejection decided later (a conflicting
    duplicate found by the store names the message's topic and keeps its payload); and the
    message of any outcome whose message was redelivered."""


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True, slots=True)
class Cause:
    cause: str
    confidence: float
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return {"cause": self.cause, "confidence": round(self.confidence, 3),
                "evidence": self.evidence}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cause:
        return cls(str(data["cause"]), float(data.get("confidence") or 0.0),
                   str(data.get("evidence") or ""))


_JSON_PARTS = ("sensor", "window", "unit", "reference", "metrics", "causes", "onset", "context",
               "action")
"""The optional parts of a finding's JSON form (``Finding.from_json``)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """CONTRACT.md's finding: one verdict on one stream (or device) over one window."""

    kind: FindingKind
    site: str
    device: str
    sensor: str | None
    status: Status
    severity: Severity
    window_start: float
    window_end: float
    unit: str | None = None
    reference: str | None = None
    metrics: Mapping[str, float | int | None] = field(default_factory=dict)
    causes: tuple[Cause, ...] = ()
    onset: float | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    action: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "site": self.site,
            "device": self.device,
            "sensor": self.sensor,
            "reference": self.reference,
            "window": {"start": iso(self.window_start), "end": iso(self.window_end)},
            "status": self.status,
            "severity": self.severity,
            "unit": self.unit,
            "metrics": dict(self.metrics),
            "causes": [c.to_json() for c in self.causes],
            "onset": iso(self.onset),
            "context": dict(self.context),
            "action": self.action,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        """A finding in its published form (a finding file, the finding topic): times to
        the millisecond and confidences to three decimals, as ``to_json`` wrote them."""
        part = {name: data.get(name) for name in _JSON_PARTS}
        window = part["window"] or {}
        return cls(
            kind=data["kind"], site=str(data["site"]), device=str(data["device"]),
            sensor=part["sensor"], status=data["status"], severity=data["severity"],
            window_start=from_iso(window.get("start")) or 0.0,
            window_end=from_iso(window.get("end")) or 0.0,
            unit=part["unit"], reference=part["reference"], metrics=dict(part["metrics"] or {}),
            causes=tuple(Cause.from_json(c) for c in part["causes"] or ()),
            onset=from_iso(part["onset"]), context=dict(part["context"] or {}),
            action=str(part["action"] or ""))
