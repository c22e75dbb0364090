"""One raw MQTT message in, readings and rejections out: the daemon's only gate.

Pure (no I/O, no clock: "now" is the message's ``received_at``) so that the live daemon and
``replay`` judge a message identically, and so that it can be tested with arbitrary bytes.
It never raises for any topic or payload: every problem becomes a ``Rejection`` with a
reason from ``Reason`` (``auditd.reasons``), kept in quarantine and counted, because a
message that crashed the gate would be redelivered forever. (Exceptions raised by the
injected ``profile_for`` do propagate: a store that cannot answer now is not the
message's fault.)

It runs once per message, tens of thousands of times a second, so units are resolved
through caches (pint is consulted once per distinct unit string and sensor), regexes are
compiled at import, and exceptions are only raised on the rejection path.

Why one file of some 640 lines: it is the gate, read top to bottom. Every refusal reason
(``Reason``: the codes of ``auditd.reasons``, which says what each promises the operator)
is raised beside its check, so that a reviewer can see that each byte of a message meets
exactly one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from auditd import reasons
from auditd.errors import UnitError
from auditd.model import (
    EVENT_TYPES,
    ID_PATTERN,
    Address,
    EventRecord,
    MeasuredSensor,
    MessageKind,
    MetaRecord,
    Outcome,
    Profile,
    RawMessage,
    Reading,
    Rejection,
)
from auditd.text import TextProblem, check_document, may_hold_bad_text, printable
from auditd.units import (
    ALIAS_HINT,
    MAX_UNIT_CHARS,
    NO_ALIASES,
    Converter,
    UnitAliases,
    converter,
    dimensionality,
    parse_unit,
    resolve,
)


class Reason:
    """Why a message or one of its readings was not accepted: the codes of the one registry
    (``auditd.reasons``, which says what each means, where it is decided and which key
    changes its limit), under the names the gate below uses."""

    TOPIC_INVALID = reasons.TOPIC_INVALID
    PAYLOAD_TOO_LARGE = reasons.PAYLOAD_TOO_LARGE
    JSON_INVALID = reasons.JSON_INVALID
    TEXT_INVALID = reasons.TEXT_INVALID
    SCHEMA_INVALID = reasons.SCHEMA_INVALID
    TS_INVALID = reasons.TS_INVALID
    TS_FUTURE = reasons.TS_FUTURE
    TS_TOO_OLD = reasons.TS_TOO_OLD
    UNKNOWN_DEVICE_MODEL = reasons.UNKNOWN_DEVICE_MODEL
    SENSOR_UNKNOWN = reasons.SENSOR_UNKNOWN
    UNIT_INVALID = reasons.UNIT_INVALID
    UNIT_INCOMPATIBLE = reasons.UNIT_INCOMPATIBLE
    VALUE_INVALID = reasons.VALUE_INVALID
    OUT_OF_RANGE = reasons.OUT_OF_RANGE
    EVENT_TYPE_INVALID = reasons.EVENT_TYPE_INVALID
    DEVICE_LIMIT = reasons.DEVICE_LIMIT
    STREAM_LIMIT = reasons.STREAM_LIMIT
    DUPLICATE_CONFLICT = reasons.DUPLICATE_CONFLICT
    STORE_REJECTED = reasons.STORE_REJECTED

    GATE = reasons.GATE_REASONS
    """The reasons ``validate_message`` gives."""

    ALL = reasons.INGEST_REASONS
    """Every reason of live ingest, e.g. to report zero counts for the ones that did not
    occur (``replay`` adds ``recording_invalid``, the command topic ``command_invalid``)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep one hostile or broken device from exhausting memory, disk or time."""

    max_payload_bytes: int = 65536
    max_future_skew_s: float = 300.0
    max_age_s: float = 3650 * 86400.0
    """Absurdly old on purpose: a device flushing a long outage's buffer is legitimate."""
    quarantine_payload_cap: int = 4096
    """Bytes of a rejected payload (and of a rejected topic) kept as evidence."""
    max_batch_items: int = 1000
    max_depth: int = 32
    """Containers nested in a meta or event payload (stored and re-published as JSON)."""
    max_devices: int = 5000
    """Devices the gateway keeps anything of (readings, meta, events); a message from a new
    one beyond it is refused as ``device_limit`` (``auditd.app.ingest``)."""
    max_streams: int = 50_000
    """(site, device, sensor) streams; a reading that would start one more is refused as
    ``stream_limit``."""
    max_sites_per_device: int = 8
    """Sites one device may hold streams in; a reading that would start a stream of it in
    one more site is refused as ``stream_limit``, so that one id sent under invented site
    names cannot take every place of ``max_streams``."""


DEFAULT_LIMITS = Limits()


class TopicError(ValueError):
    """A topic that does not name a site, a device and a message kind."""


class TimestampError(ValueError):
    """A timestamp that is neither RFC 3339 with an offset nor finite epoch seconds."""


class _Problem(Exception):
    """A rejection on its way up to the level that knows what it rejects."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- topics

_KINDS: dict[str, MessageKind] = {"telemetry": "telemetry", "meta": "meta", "event": "event"}


@lru_cache(maxsize=8192)
def parse_topic(topic: str, prefix: str) -> Address:
    """Split ``{prefix}/{site}/{device}/{kind}``; ``TopicError`` says what is wrong.

    Cached: a fleet sends on a few hundred topics over and over, and the bench showed the
    split and the id checks among the larger costs per message. Rejected topics raise, so
    they are never cached and cannot crowd the cache out.

    The prefix may contain slashes (``acme/fleet``). Site and device must fullmatch
    ``ID_PATTERN`` because they end up in SQL parameters, file names and outgoing topics.
    """
    head = f"{prefix}/" if prefix else ""
    if not topic.startswith(head):
        raise TopicError(f"does not start with {head!r}")
    levels = topic[len(head) :].split("/")
    if len(levels) != 3:
        raise TopicError(f"expected {head}<site>/<device>/<kind>, not {len(levels)} levels")
    site, device, kind_text = levels
    if not ID_PATTERN.fullmatch(site):
        raise TopicError(f"site {_show(site)} is not a valid id")
    if not ID_PATTERN.fullmatch(device):
        raise TopicError(f"device {_show(device)} is not a valid id")
    kind = _KINDS.get(kind_text)
    if kind is None:
        raise TopicError(f"kind {_show(kind_text)} is not one of {', '.join(_KINDS)}")
    return Address(site, device, kind)


# --------------------------------------------------------------------------- timestamps

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_MAX_TIMESTAMP_CHARS = 64


def parse_timestamp(value: object) -> float:
    """Epoch seconds from RFC 3339 text with an offset (or ``Z``) or from a JSON number.

    Stricter than ``datetime.fromisoformat`` on purpose: no naive times (the zone would be
    guessed), no ISO 8601 week dates or basic format, no booleans (``true`` is 1 in
    Python), no NaN or infinities. A leap second (``:60``) counts as the next second.
    """
    if isinstance(value, bool):
        raise TimestampError("a boolean is not a time")
    if isinstance(value, int | float):
        try:
            ts = float(value)
        except OverflowError:
            raise TimestampError("epoch seconds too large") from None
        if not math.isfinite(ts):
            raise TimestampError("epoch seconds must be finite")
        return ts
    if isinstance(value, str):
        return _parse_rfc3339(value)
    raise TimestampError(f"expected RFC 3339 text or epoch seconds, not {_json_type(value)}")


def _parse_rfc3339(text: str) -> float:
    match = _RFC3339.fullmatch(text) if len(text) <= _MAX_TIMESTAMP_CHARS else None
    if match is None:
        raise TimestampError(f"{_show(text)} is not RFC 3339 with an offset or Z")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    leap = second == "60"
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute),
            59 if leap else int(second), tzinfo=UTC,
        )  # fmt: skip
    except ValueError as exc:
        raise TimestampError(f"{_show(text)}: {exc}") from None
    ts = moment.timestamp() + leap
    if fraction:
        ts += float(fraction)
    if sign:
        if int(off_h) > 23 or int(off_m) > 59:
            raise TimestampError(f"{_show(text)}: offset out of range")
        offset = int(off_h) * 3600 + int(off_m) * 60
        ts += -offset if sign == "+" else offset
    return ts


# --------------------------------------------------------------------------- messages


def validate_message(
    msg: RawMessage,
    *,
    prefix: str,
    profile_for: Callable[[str, str], Profile | None],
    limits: Limits = DEFAULT_LIMITS,
    unit_aliases: UnitAliases = NO_ALIASES,
) -> Outcome:
    """Judge one message: what to store, what to quarantine and why. Never raises.

    ``unit_aliases`` are the site's own unit spellings (``[units] aliases``): a reading's
    unit is looked up there before pint reads it.

    Problems with the message as a whole (topic, size, JSON, shape, time, unknown model)
    give exactly one rejection and nothing else. Problems with one reading reject that
    reading only; the others are kept. In a telemetry array each element is judged on its
    own, so one broken element of a flushed buffer does not discard the rest.
    """
    try:
        address = parse_topic(msg.topic, prefix)
    except TopicError as exc:
        topic = printable(msg.topic[: limits.quarantine_payload_cap])
        return _refused(msg, limits, Reason.TOPIC_INVALID, str(exc), topic=topic)
    try:
        if len(msg.payload) > limits.max_payload_bytes:
            raise _Problem(
                Reason.PAYLOAD_TOO_LARGE,
                f"{len(msg.payload)} bytes, more than {limits.max_payload_bytes}",
            )
        if address.kind == "telemetry":
            return _telemetry(msg, address, profile_for, limits, unit_aliases)
        document = _load_json(msg.payload)
        _check_text(document, limits, msg.payload, meta_or_event=True)
        if address.kind == "meta":
            return Outcome(meta=_meta(document, address, msg.received_at, limits))
        return Outcome(event=_event(document, address, msg.received_at, limits))
    except _Problem as problem:
        return _refused(msg, limits, problem.reason, problem.detail, device=address.device)


def _refused(
    msg: RawMessage,
    limits: Limits,
    reason: str,
    detail: str,
    *,
    topic: str | None = None,
    device: str | None = None,
    sensor: str | None = None,
) -> Outcome:
    rejection = Rejection(
        msg.topic if topic is None else topic,
        reason,
        detail,
        msg.payload[: limits.quarantine_payload_cap],
        msg.received_at,
        device,
        sensor,
    )
    return Outcome(rejections=(rejection,))


def _load_json(payload: bytes) -> Any:
    """Decode as UTF-8 explicitly: ``json.loads(bytes)`` would also guess UTF-16 and -32."""
    try:
        return json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _Problem(Reason.JSON_INVALID, f"not UTF-8 at byte {exc.start}") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise _Problem(Reason.JSON_INVALID, f"not JSON: {exc}"[:200]) from None


_TEXT_REASONS = {"text": Reason.TEXT_INVALID, "number": Reason.VALUE_INVALID,
                 "depth": Reason.SCHEMA_INVALID}


def _check_text(document: Any, limits: Limits, payload: bytes, *, meta_or_event: bool) -> None:
    """Every string storable, keys included (``auditd.text``); for meta and events, which
    are stored and re-published as JSON, also no non-finite number and bounded nesting.
    Telemetry keeps only checked numbers, so its walk runs only when an escape is there."""
    if not meta_or_event and not may_hold_bad_text(payload):
        return
    problem: TextProblem | None = check_document(
        document, max_depth=limits.max_depth if meta_or_event else 1 << 30,
        finite_numbers=meta_or_event)
    if problem is not None:
        raise _Problem(_TEXT_REASONS[problem.kind], str(problem))


def _object(document: Any, what: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise _Problem(
            Reason.SCHEMA_INVALID, f"a {what} message is a JSON object, not {_json_type(document)}"
        )
    return document


def _timestamp(document: dict[str, Any], received_at: float, limits: Limits) -> float:
    if "ts" not in document:
        raise _Problem(Reason.TS_INVALID, '"ts" is missing')
    try:
        ts = parse_timestamp(document["ts"])
    except TimestampError as exc:
        raise _Problem(Reason.TS_INVALID, str(exc)) from None
    if ts > received_at + limits.max_future_skew_s:
        raise _Problem(Reason.TS_FUTURE, f"ts is {ts - received_at:.6g} s after reception "
                       f"(limit {limits.max_future_skew_s:g} s: [ingest] max_future_skew_s)")
    if ts < received_at - limits.max_age_s:
        raise _Problem(Reason.TS_TOO_OLD, f"ts is {received_at - ts:.6g} s before reception "
                       f"(limit {limits.max_age_s:g} s: [ingest] max_age)")
    return ts


def _meta(document: Any, address: Address, received_at: float, limits: Limits) -> MetaRecord:
    meta = _object(document, "meta")
    ts = _timestamp(meta, received_at, limits)
    data = {key: value for key, value in meta.items() if key != "ts"}
    return MetaRecord(address.site, address.device, ts, received_at, data)


def _event(document: Any, address: Address, received_at: float, limits: Limits) -> EventRecord:
    event = _object(document, "event")
    ts = _timestamp(event, received_at, limits)
    kind = event.get("type")
    if kind not in EVENT_TYPES:
        raise _Problem(
            Reason.EVENT_TYPE_INVALID,
            f"type {_show(kind)} is not one of {', '.join(EVENT_TYPES)}",
        )
    data = {key: value for key, value in event.items() if key != "ts" and key != "type"}
    return EventRecord(address.site, address.device, ts, received_at, kind, data)


# --------------------------------------------------------------------------- telemetry


def _telemetry(
    msg: RawMessage,
    address: Address,
    profile_for: Callable[[str, str], Profile | None],
    limits: Limits,
    aliases: UnitAliases,
) -> Outcome:
    profile = profile_for(address.site, address.device)
    if profile is None:
        raise _Problem(
            Reason.UNKNOWN_DEVICE_MODEL,
            f"no device profile is known for {address.site}/{address.device}",
        )
    document = _load_json(msg.payload)
    batch = _Batch(msg, address, profile.sensors, limits, aliases)
    if not isinstance(document, list):
        _check_text(document, limits, msg.payload, meta_or_event=False)
        batch.add(document)  # its problems are the message's: they propagate
        return batch.outcome()
    if len(document) > limits.max_batch_items:
        raise _Problem(
            Reason.PAYLOAD_TOO_LARGE,
            f"an array of {len(document)} messages, more than {limits.max_batch_items}",
        )
    for index, item in enumerate(document):
        try:
            _check_text(item, limits, msg.payload, meta_or_event=False)
            batch.add(item)
        except _Problem as problem:
            batch.reject(problem.reason, f"element {index}: {problem.detail}", None)
    return batch.outcome()


NAMED_REJECTIONS = 16
"""Distinct sensors of one message whose rejected readings keep their sensor in the
quarantine (a row each per minute, and ``rejected_between`` counts them per stream); the
rejected readings of any further sensor of the message share one row per reason."""


class _Batch:
    """The readings and rejections of one telemetry message, as they are found."""

    __slots__ = ("address", "aliases", "limits", "msg", "named", "payload", "readings",
                 "rejections", "sensors")

    def __init__(
        self,
        msg: RawMessage,
        address: Address,
        sensors: Mapping[str, MeasuredSensor],
        limits: Limits,
        aliases: UnitAliases = NO_ALIASES,
    ) -> None:
        self.msg = msg
        self.aliases = aliases
        self.address = address
        self.sensors = sensors
        self.limits = limits
        self.payload = msg.payload[: limits.quarantine_payload_cap]  # shared by rejections
        self.readings: list[Reading] = []
        self.rejections: list[Rejection] = []
        self.named: set[str] = set()

    def add(self, item: Any) -> None:
        """Judge one telemetry object; message-level problems raise ``_Problem``."""
        document = _object(item, "telemetry")
        ts = _timestamp(document, self.msg.received_at, self.limits)
        seq = _seq(document)
        readings = document.get("readings")
        if not isinstance(readings, dict):
            raise _Problem(
                Reason.SCHEMA_INVALID,
                f'"readings" must be an object of sensor -> reading, not {_json_type(readings)}',
            )
        site, device = self.address.site, self.address.device
        for name, raw in readings.items():
            spec = self.sensors.get(name)
            if spec is None:
                sensor = name if ID_PATTERN.fullmatch(name) else None
                self.reject(
                    Reason.SENSOR_UNKNOWN, f"no sensor {_show(name)} in the profile", sensor
                )
                continue
            try:
                value = _reading_value(raw, spec, self.aliases)
            except _Problem as problem:
                self.reject(problem.reason, problem.detail, name)
                continue
            self.readings.append(Reading(site, device, name, spec.unit, ts, value, seq,
                                         value is not None and not _in_range(value, spec)))

    def reject(self, reason: str, detail: str, sensor: str | None) -> None:
        """One reading refused. Each is counted, but a message's payload is kept with its
        first rejection only, and only the first ``NAMED_REJECTIONS`` name their sensor:
        the rest share one quarantine row (per device, reason and minute), so that a
        message naming thousands of sensors costs a few rows, not one with a copy of the
        payload for each."""
        first = not self.rejections
        if sensor is not None and sensor not in self.named:
            if len(self.named) >= NAMED_REJECTIONS:
                sensor = None
            else:
                self.named.add(sensor)
        self.rejections.append(
            Rejection(
                self.msg.topic,
                reason,
                detail,
                self.payload if first else b"",
                self.msg.received_at,
                self.address.device,
                sensor,
            )
        )

    def outcome(self) -> Outcome:
        return Outcome(readings=tuple(self.readings), rejections=tuple(self.rejections),
                       message=self.msg if self.readings else None)


_SEQ_MIN, _SEQ_MAX = -(2**63), 2**63 - 1  # what an SQLite INTEGER holds


def _seq(document: dict[str, Any]) -> int | None:
    seq = document.get("seq")
    if seq is None:
        return None
    if type(seq) is not int or not _SEQ_MIN <= seq <= _SEQ_MAX:
        raise _Problem(Reason.SCHEMA_INVALID, f'"seq" must be a 64-bit integer, not {_show(seq)}')
    return seq


def _reading_value(raw: Any, spec: MeasuredSensor,
                   aliases: UnitAliases = NO_ALIASES) -> float | None:
    """The reading in the canonical unit, ``None`` for a reported outage.

    A bare number is in the canonical unit; a bare ``null`` is accepted as an outage too
    (more than CONTRACT.md promises, and just as unambiguous).
    """
    kind = type(raw)
    if kind is float or kind is int:
        return _finite(raw)
    if raw is None:
        return None
    if kind is not dict:
        raise _Problem(
            Reason.VALUE_INVALID,
            f'a reading is a number, null or {{"value", "unit"}}, not {_json_type(raw)}',
        )
    unit = raw.get("unit")
    if not isinstance(unit, str):
        problem = '"unit" is missing' if unit is None else '"unit" must be a string'
        raise _Problem(Reason.UNIT_INVALID, problem)
    if "value" not in raw:
        raise _Problem(Reason.VALUE_INVALID, '"value" is missing')
    convert = None if unit == spec.unit else _conversion(unit, spec, aliases)
    value = raw["value"]
    if value is None:
        return None
    number = _finite(value)
    return number if convert is None else convert(number)


def _finite(value: Any) -> float:
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return value
        raise _Problem(Reason.VALUE_INVALID, f"value {value!r} is not finite")
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            raise _Problem(Reason.VALUE_INVALID, "value too large for a float") from None
    raise _Problem(Reason.VALUE_INVALID, f"value must be a number, not {_json_type(value)}")


def _in_range(value: float, spec: MeasuredSensor) -> bool:
    """Inside the sensor's physically plausible range (inclusive bounds)."""
    low, high = spec.range
    return low <= value <= high


def _conversion(unit: str, spec: MeasuredSensor, aliases: UnitAliases) -> Converter:
    if len(unit) > MAX_UNIT_CHARS:  # before the cache, which would keep the string
        raise _Problem(Reason.UNIT_INVALID, f"unit longer than {MAX_UNIT_CHARS} characters")
    meant = resolve(unit, aliases)
    plan = _unit_plan(meant, spec.quantity, spec.unit)
    if isinstance(plan, Converter):
        return plan
    reason, detail = plan
    if meant != unit:
        detail = f"{detail} ({_show(unit)} by the site's [units] aliases)"
    raise _Problem(reason, detail)


@lru_cache(maxsize=4096)
def _unit_plan(unit: str, quantity: str, canonical: str) -> Converter | tuple[str, str]:
    """How to convert ``unit`` for a sensor, or why not: failures are cached as well,
    so a device repeating a bad unit costs a dictionary lookup, not a pint parse."""
    try:
        parsed = parse_unit(unit)
    except UnitError as exc:
        return Reason.UNIT_INVALID, f"unit {_show(unit)}: {exc.problem} ({ALIAS_HINT})"
    try:
        if parsed.dimensionality != dimensionality(quantity):
            return (
                Reason.UNIT_INCOMPATIBLE,
                f"unit {_show(unit)} does not measure {quantity} (canonical {canonical})",
            )
        return converter(unit, canonical)
    except UnitError as exc:
        return Reason.UNIT_INCOMPATIBLE, f"unit {_show(unit)}: {exc.problem}"


# --------------------------------------------------------------------------- details


def _show(value: object, limit: int = 48) -> str:
    """A short, printable rendering of untrusted input for a detail message.

    Containers are only named, never ``repr``-ed: a deeply nested one would recurse.
    """
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if value is None or isinstance(value, bool | int | float):
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "..."
    return _json_type(value)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
