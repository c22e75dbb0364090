"""auditd.domain.validate: topics, timestamps, and one raw message -> readings and rejections.

Profiles are built directly from the model dataclasses. Expected values come from
``datetime``, written-out arithmetic and pint's ``Quantity.to``, never from validate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditd.domain.validate import (
    Limits,
    Reason,
    TimestampError,
    TopicError,
    parse_timestamp,
    parse_topic,
    validate_message,
)
from auditd.model import (
    EVENT_TYPES,
    Address,
    Outcome,
    Profile,
    RawMessage,
    Rejection,
    SensorSpec,
    Tolerance,
)
from auditd.units import registry

TOLERANCE = Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.9, lag_s=300, window_s=86400,
                      min_samples=60)  # fmt: skip


def sensor(name: str, quantity: str, unit: str, low: float, high: float) -> SensorSpec:
    return SensorSpec(name, quantity, unit, (low, high), 60.0, TOLERANCE)


PROFILE = Profile(
    model="th-200",
    sensors={
        spec.name: spec
        for spec in (
            sensor("temperature", "[temperature]", "degC", -40.0, 85.0),
            sensor("humidity", "dimensionless", "percent", 0.0, 100.0),
            sensor("pressure", "[pressure]", "hPa", 300.0, 1100.0),
            sensor("no2", "dimensionless", "ppb", -50.0, 2000.0),
            sensor("pm2_5", "[mass] / [length] ** 3", "ug/m^3", 0.0, 1000.0),
            sensor("battery", "[electric_potential]", "V", 0.0, 5.0),
        )
    },
)

RECEIVED = datetime(2026, 11, 24, 10, 0, 1, tzinfo=UTC).timestamp()
TS_TEXT = "2026-11-24T10:00:00Z"
TS = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC).timestamp()
TOPIC = "fleet/north/th-0042/telemetry"


def known_devices(site: str, device: str) -> Profile | None:
    return None if device == "stranger" else PROFILE


def run(
    payload: Any,
    topic: str = TOPIC,
    *,
    received_at: float = RECEIVED,
    prefix: str = "fleet",
    limits: Limits | None = None,
    profile_for: Callable[[str, str], Profile | None] = known_devices,
) -> Outcome:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return validate_message(
        RawMessage(topic, raw, received_at),
        prefix=prefix,
        profile_for=profile_for,
        limits=limits or Limits(),
    )


def telemetry(readings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"ts": TS_TEXT, **extra, "readings": readings}


def only_rejection(outcome: Outcome) -> Rejection:
    assert outcome.readings == ()
    assert outcome.meta is None and outcome.event is None
    assert len(outcome.rejections) == 1
    return outcome.rejections[0]


def pint_to(value: float, unit: str, target: str) -> float:
    ureg = registry()
    return float(ureg.Quantity(value, ureg.parse_units(unit)).to(ureg.parse_units(target)).m)


# --------------------------------------------------------------------------- accepted


def test_contract_example_is_accepted() -> None:
    outcome = run(
        {"ts": TS_TEXT, "seq": 1234,
         "readings": {"temperature": {"value": 21.43, "unit": "degC"},
                      "humidity": {"value": 40.2, "unit": "percent"},
                      "pressure": 1013.2}}
    )  # fmt: skip
    assert outcome.rejections == ()
    got = {r.sensor: r for r in outcome.readings}
    assert set(got) == {"temperature", "humidity", "pressure"}
    assert got["temperature"].value == 21.43 and got["temperature"].unit == "degC"
    assert got["humidity"].value == 40.2 and got["humidity"].unit == "percent"
    assert got["pressure"].value == 1013.2 and got["pressure"].unit == "hPa"
    for reading in outcome.readings:
        assert (reading.site, reading.device) == ("north", "th-0042")
        assert reading.ts == TS
        assert reading.seq == 1234


def test_reading_is_converted_to_the_canonical_unit() -> None:
    outcome = run(telemetry({"temperature": {"value": 70.0, "unit": "degF"},
                             "pressure": {"value": 101325, "unit": "Pa"},
                             "no2": {"value": 0.021, "unit": "ppm"},
                             "battery": {"value": 3300, "unit": "mV"},
                             "pm2_5": {"value": 12.5, "unit": "UG/M3"}}))  # fmt: skip
    assert outcome.rejections == ()
    got = {r.sensor: (r.value, r.unit) for r in outcome.readings}
    assert got["temperature"][0] == pytest.approx((70.0 - 32.0) * 5.0 / 9.0, rel=1e-12)
    assert got["pressure"] == (pytest.approx(1013.25, rel=1e-12), "hPa")
    assert got["no2"] == (pytest.approx(21.0, rel=1e-12), "ppb")
    assert got["battery"] == (pytest.approx(3.3, rel=1e-12), "V")
    assert got["pm2_5"] == (pytest.approx(12.5, rel=1e-12), "ug/m^3")


@pytest.mark.parametrize("reading", [{"value": None, "unit": "degF"}, None])
def test_null_value_is_an_outage_not_a_rejection(reading: Any) -> None:
    outcome = run(telemetry({"temperature": reading}))
    assert outcome.rejections == ()
    assert [(r.sensor, r.value) for r in outcome.readings] == [("temperature", None)]


def test_epoch_seconds_and_missing_seq() -> None:
    outcome = run({"ts": TS, "readings": {"pressure": 1000}})
    (reading,) = outcome.readings
    assert reading.ts == TS and reading.seq is None and reading.value == 1000.0


def test_range_bounds_are_inclusive() -> None:
    outcome = run(telemetry({"temperature": -40, "humidity": 100.0, "pressure": 300}))
    assert outcome.rejections == ()
    assert sorted(r.value for r in outcome.readings if r.value is not None) == [-40, 100, 300]
    assert not any(r.out_of_range for r in outcome.readings)


def test_empty_readings_is_an_empty_outcome() -> None:
    outcome = run(telemetry({}))
    assert outcome.readings == () and outcome.rejections == ()


def test_array_payload_keeps_each_elements_time_and_seq() -> None:
    later = "2026-11-24T10:00:00.5+00:00"
    outcome = run([telemetry({"pressure": 1000}, seq=1),
                   {"ts": later, "seq": 2, "readings": {"pressure": 1001}}])  # fmt: skip
    assert [(r.ts, r.seq, r.value) for r in outcome.readings] == [
        (TS, 1, 1000.0),
        (TS + 0.5, 2, 1001.0),
    ]


def test_prefix_with_slashes() -> None:
    outcome = run(telemetry({"pressure": 1000}), "acme/fleet/north/th-1/telemetry",
                  prefix="acme/fleet")  # fmt: skip
    assert [r.device for r in outcome.readings] == ["th-1"]


def test_profile_is_looked_up_by_site_and_device() -> None:
    calls: list[tuple[str, str]] = []

    def profile_for(site: str, device: str) -> Profile | None:
        calls.append((site, device))
        return PROFILE

    run(telemetry({"pressure": 1000}), "fleet/south/th-7/telemetry", profile_for=profile_for)
    assert calls == [("south", "th-7")]


# --------------------------------------------------------------------------- rejections

MESSAGE_LEVEL = [
    (Reason.TOPIC_INVALID, "fleet/north/th-0042/telemetry/x", telemetry({"pressure": 1000})),
    (Reason.PAYLOAD_TOO_LARGE, TOPIC, b" " * 65537),
    (Reason.JSON_INVALID, TOPIC, b'{"ts": '),
    (Reason.SCHEMA_INVALID, TOPIC, "a string"),
    (Reason.SCHEMA_INVALID, TOPIC, {"ts": TS_TEXT}),
    (Reason.SCHEMA_INVALID, TOPIC, {"ts": TS_TEXT, "readings": [1]}),
    (Reason.SCHEMA_INVALID, TOPIC, telemetry({}, seq=1.5)),
    (Reason.TS_INVALID, TOPIC, {"readings": {"pressure": 1000}}),
    (Reason.TS_INVALID, TOPIC, telemetry({}) | {"ts": "2026-11-24T10:00:00"}),
    (Reason.TS_FUTURE, TOPIC, telemetry({}) | {"ts": RECEIVED + 301}),
    (Reason.TS_TOO_OLD, TOPIC, telemetry({}) | {"ts": 0}),
    (Reason.UNKNOWN_DEVICE_MODEL, "fleet/north/stranger/telemetry", telemetry({})),
    (Reason.SCHEMA_INVALID, "fleet/north/stranger/meta", [1]),
    (Reason.TS_INVALID, "fleet/north/th-0042/event", {"type": "cleaning"}),
    (Reason.EVENT_TYPE_INVALID, "fleet/north/th-0042/event", {"ts": TS, "type": "reboot"}),
    (Reason.EVENT_TYPE_INVALID, "fleet/north/th-0042/event", {"ts": TS}),
    # Text that no store, log or topic can carry: a lone surrogate or a NUL, keys included.
    (Reason.TEXT_INVALID, "fleet/north/th-0042/meta",
     {"ts": TS, "model": "th-200", "firmware": "\ud800"}),
    (Reason.TEXT_INVALID, "fleet/north/th-0042/meta", {"ts": TS, "lo\udfffc": 1}),
    (Reason.TEXT_INVALID, "fleet/north/th-0042/event",
     {"ts": TS, "type": "maintenance", "detail": "\udc00 swapped"}),
    (Reason.TEXT_INVALID, "fleet/north/th-0042/event",
     {"ts": TS, "type": "cleaning", "by": ["ana", {"x": "nul\x00here"}]}),
    (Reason.TEXT_INVALID, TOPIC, telemetry({"temperature": {"value": 20, "unit": "deg\ud800"}})),
    (Reason.TEXT_INVALID, TOPIC, telemetry({"pressure\x00": 1000})),
    (Reason.JSON_INVALID, "fleet/north/th-0042/meta", b'{"ts": 1, "firmware": "\xed\xa0\x80"}'),
    # Stored and re-published as JSON: no NaN or infinity, no absurd nesting.
    (Reason.VALUE_INVALID, "fleet/north/th-0042/meta", b'{"ts": %d, "x": NaN}' % TS),
    (Reason.VALUE_INVALID, "fleet/north/th-0042/event",
     b'{"ts": %d, "type": "cleaning", "n": [1e999]}' % TS),
    (Reason.SCHEMA_INVALID, "fleet/north/th-0042/meta",
     {"ts": TS, "location": json.loads("[" * 40 + "]" * 40)}),
]

READING_LEVEL = [
    (Reason.SENSOR_UNKNOWN, "co2", 400),
    (Reason.UNIT_INVALID, "temperature", {"value": 20, "unit": "degrees of warmth"}),
    (Reason.UNIT_INVALID, "temperature", {"value": 20}),
    (Reason.UNIT_INVALID, "temperature", {"value": 20, "unit": 7}),
    (Reason.UNIT_INVALID, "temperature", {"value": 20, "unit": "K" * 65}),
    (Reason.UNIT_INVALID, "temperature", {"value": 20, "unit": "m**99"}),
    (Reason.UNIT_INCOMPATIBLE, "temperature", {"value": 20, "unit": "hPa"}),
    (Reason.UNIT_INCOMPATIBLE, "humidity", {"value": 20, "unit": "degC"}),
    (Reason.UNIT_INCOMPATIBLE, "battery", {"value": 20, "unit": "C"}),
    (Reason.VALUE_INVALID, "temperature", "21.4"),
    (Reason.VALUE_INVALID, "temperature", True),
    (Reason.VALUE_INVALID, "temperature", [21.4]),
    (Reason.VALUE_INVALID, "temperature", {"value": "21.4", "unit": "degC"}),
    (Reason.VALUE_INVALID, "temperature", {"value": False, "unit": "degC"}),
    (Reason.VALUE_INVALID, "temperature", {"unit": "degC"}),
    (Reason.VALUE_INVALID, "temperature", 10**400),
]

OUT_OF_RANGE = [
    ("temperature", 85.001, 85.001),
    ("temperature", {"value": 300, "unit": "degF"}, (300 - 32) / 1.8),
    ("pressure", {"value": 1013.25, "unit": "Pa"}, 10.1325),
    ("no2", -57.5, -57.5),
]


@pytest.mark.parametrize(("reason", "topic", "payload"), MESSAGE_LEVEL)
def test_message_level_problem_gives_one_rejection(reason: str, topic: str, payload: Any) -> None:
    rejection = only_rejection(run(payload, topic))
    assert rejection.reason == reason
    assert rejection.topic == topic
    assert rejection.detail
    assert rejection.received_at == RECEIVED
    assert rejection.sensor is None
    expected_device = None if reason == Reason.TOPIC_INVALID else topic.split("/")[2]
    assert rejection.device == expected_device


@pytest.mark.parametrize(("reason", "name", "reading"), READING_LEVEL)
def test_reading_level_problem_rejects_only_that_reading(
    reason: str, name: str, reading: Any
) -> None:
    payload = json.dumps(telemetry({name: reading, "no2": 10})).encode()
    outcome = run(payload)
    assert [(r.sensor, r.value) for r in outcome.readings] == [("no2", 10.0)]
    (rejection,) = outcome.rejections
    assert (rejection.reason, rejection.device, rejection.sensor) == (reason, "th-0042", name)
    assert rejection.payload == payload and rejection.topic == TOPIC and rejection.detail


@pytest.mark.parametrize(("name", "reading", "canonical"), OUT_OF_RANGE)
def test_well_formed_reading_outside_the_range_is_kept_and_flagged(
    name: str, reading: Any, canonical: float
) -> None:
    """A value outside the profile's plausible range is evidence (an electrochemical
    cell's zero below 0 ppb is its offset): kept in the canonical unit, flagged, no
    rejection. Readings inside the range are not flagged."""
    outcome = run(json.dumps(telemetry({name: reading, "humidity": 50})).encode())
    assert outcome.rejections == ()
    flagged = {r.sensor: (r.value, r.out_of_range) for r in outcome.readings}
    assert flagged["humidity"] == (50.0, False)
    value, out = flagged[name]
    assert out and value == pytest.approx(canonical)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
@pytest.mark.parametrize("template", [b'{"value": %s, "unit": "degF"}', b"%s"])
def test_non_finite_values_are_invalid(literal: bytes, template: bytes) -> None:
    reading = template % literal  # Python's json accepts NaN and Infinity; the gate does not
    outcome = run(b'{"ts": 1795514400, "readings": {"temperature": %s}}' % reading)
    assert outcome.readings == ()
    assert [r.reason for r in outcome.rejections] == [Reason.VALUE_INVALID]


def test_every_reason_has_an_example() -> None:
    covered = {reason for reason, *_ in MESSAGE_LEVEL} | {reason for reason, *_ in READING_LEVEL}
    assert covered == set(Reason.GATE)
    assert Reason.OUT_OF_RANGE not in Reason.GATE  # kept and flagged, no longer refused
    assert set(Reason.GATE) < set(Reason.ALL)
    assert len(set(Reason.ALL)) == len(Reason.ALL)
    assert all(isinstance(r, str) and r == r.lower() for r in Reason.ALL)


def test_unknown_sensor_with_a_hostile_name_is_not_echoed_as_a_sensor() -> None:
    outcome = run(telemetry({"../../etc/passwd": 1}))
    (rejection,) = outcome.rejections
    assert rejection.reason == Reason.SENSOR_UNKNOWN and rejection.sensor is None
    # With a NUL in it, the name is not text at all: the whole message is refused.
    (rejection,) = run(telemetry({"../../etc/passwd\x00": 1})).rejections
    assert rejection.reason == Reason.TEXT_INVALID and rejection.sensor is None


def test_several_bad_readings_each_get_a_rejection() -> None:
    outcome = run(telemetry({"temperature": "x", "humidity": 101, "nope": 1, "pressure": 999}))
    assert [(r.sensor, r.out_of_range) for r in outcome.readings] == [
        ("humidity", True), ("pressure", False)]
    assert sorted((r.sensor or "", r.reason) for r in outcome.rejections) == [
        ("nope", Reason.SENSOR_UNKNOWN),
        ("temperature", Reason.VALUE_INVALID),
    ]


def test_bad_array_element_is_rejected_alone() -> None:
    outcome = run([telemetry({"pressure": 1000}), {"readings": {}}, "junk",
                   telemetry({"pressure": 1001})])  # fmt: skip
    assert [r.value for r in outcome.readings] == [1000.0, 1001.0]
    assert [(r.reason, r.sensor) for r in outcome.rejections] == [
        (Reason.TS_INVALID, None),
        (Reason.SCHEMA_INVALID, None),
    ]
    assert "element 1" in outcome.rejections[0].detail
    assert "element 2" in outcome.rejections[1].detail


def test_batch_size_limit() -> None:
    limits = Limits(max_batch_items=3)
    item = telemetry({"pressure": 1000})
    assert len(run([item] * 3, limits=limits).readings) == 3
    assert only_rejection(run([item] * 4, limits=limits)).reason == Reason.PAYLOAD_TOO_LARGE


def test_payload_size_limit_is_checked_before_parsing() -> None:
    body = json.dumps(telemetry({"pressure": 1000})).encode()
    exact = Limits(max_payload_bytes=len(body))
    assert len(run(body, limits=exact).readings) == 1
    smaller = Limits(max_payload_bytes=len(body) - 1)
    assert only_rejection(run(body, limits=smaller)).reason == Reason.PAYLOAD_TOO_LARGE
    # not even read: a too-large message from an unknown device is refused for its size
    topic = "fleet/north/stranger/telemetry"
    assert only_rejection(run(body, topic, limits=smaller)).reason == Reason.PAYLOAD_TOO_LARGE


def test_quarantined_payload_and_topic_are_capped() -> None:
    limits = Limits(quarantine_payload_cap=16)
    payload = b"\xff" * 100
    rejection = only_rejection(run(payload, limits=limits))
    assert rejection.reason == Reason.JSON_INVALID and rejection.payload == b"\xff" * 16
    rejection = only_rejection(run(payload, "x" * 1000, limits=limits))
    assert rejection.reason == Reason.TOPIC_INVALID and len(rejection.topic) <= 16


def test_rejected_topic_is_storable_as_utf8() -> None:
    rejection = only_rejection(run(b"{}", "fleet/north/\udcff/telemetry"))
    assert rejection.reason == Reason.TOPIC_INVALID
    rejection.topic.encode("utf-8")  # a lone surrogate would raise here
    rejection.detail.encode("utf-8")


@pytest.mark.parametrize(
    "payload",
    [b"\xef\xbb\xbf{}", '{"ts": 1}'.encode("utf-16"), b"\x00", b"", b"[" * 60_000,
     b"[" * 30_000 + b"]" * 30_000, b'{"ts": 1' + b"0" * 5000 + b"}"],
    ids=["bom", "utf-16", "nul", "empty", "unclosed-nesting", "deep-nesting", "huge-int"],
)  # fmt: skip
def test_not_json_in_utf8(payload: bytes) -> None:
    assert only_rejection(run(payload)).reason == Reason.JSON_INVALID


@pytest.mark.parametrize(
    ("ts", "reason"),
    [(RECEIVED + 300, None), (RECEIVED + 300.001, Reason.TS_FUTURE),
     (RECEIVED - 10 * 365 * 86400, None), (RECEIVED - 10 * 365 * 86400 - 1, Reason.TS_TOO_OLD),
     (1e300, Reason.TS_FUTURE), (-1e300, Reason.TS_TOO_OLD), (True, Reason.TS_INVALID)],
)  # fmt: skip
def test_timestamp_window(ts: float, reason: str | None) -> None:
    outcome = run({"ts": ts, "readings": {"pressure": 1000}})
    if reason is None:
        assert [r.ts for r in outcome.readings] == [ts]
    else:
        assert only_rejection(outcome).reason == reason


@pytest.mark.parametrize("seq", [True, 1.0, "1", 2**63, -(2**63) - 1, [1]])
def test_seq_must_be_a_64_bit_integer(seq: Any) -> None:
    assert only_rejection(run(telemetry({}, seq=seq))).reason == Reason.SCHEMA_INVALID


@pytest.mark.parametrize("seq", [0, 2**63 - 1, -1])
def test_seq_in_range_is_kept(seq: int) -> None:
    (reading,) = run(telemetry({"pressure": 1000}, seq=seq)).readings
    assert reading.seq == seq


# --------------------------------------------------------------------------- meta, event


def test_meta_keeps_everything_but_ts() -> None:
    meta = {"ts": TS_TEXT, "model": "th-200", "firmware": "2.3.1",
            "location": {"lat": 45.1, "lon": 7.6, "height_m": 2.0}}  # fmt: skip
    outcome = run(meta, "fleet/north/stranger/meta")  # no profile needed
    assert outcome.readings == () and outcome.rejections == ()
    assert outcome.meta is not None
    assert (outcome.meta.site, outcome.meta.device) == ("north", "stranger")
    assert (outcome.meta.ts, outcome.meta.received_at) == (TS, RECEIVED)
    assert outcome.meta.data == {k: v for k, v in meta.items() if k != "ts"}


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_every_event_type_is_accepted(kind: str) -> None:
    event = {"ts": TS, "type": kind, "from": "2.3.1", "to": "2.4.0", "by": "ota"}
    outcome = run(event, "fleet/north/stranger/event")
    assert outcome.rejections == () and outcome.event is not None
    assert (outcome.event.device, outcome.event.type, outcome.event.ts) == ("stranger", kind, TS)
    assert outcome.event.data == {"from": "2.3.1", "to": "2.4.0", "by": "ota"}


@pytest.mark.parametrize("kind", ["Cleaning", "", None, 3, ["cleaning"]])
def test_event_type_must_be_known(kind: Any) -> None:
    outcome = run({"ts": TS, "type": kind}, "fleet/north/th-1/event")
    assert only_rejection(outcome).reason == Reason.EVENT_TYPE_INVALID


# --------------------------------------------------------------------------- topics


@pytest.mark.parametrize(
    ("topic", "prefix", "address"),
    [
        ("fleet/north/th-0042/telemetry", "fleet", Address("north", "th-0042", "telemetry")),
        ("fleet/N.1/A_b-c.9/meta", "fleet", Address("N.1", "A_b-c.9", "meta")),
        ("acme/fleet/s/d/event", "acme/fleet", Address("s", "d", "event")),
        ("s/d/event", "", Address("s", "d", "event")),
        (f"fleet/{'a' * 64}/{'b' * 64}/meta", "fleet", Address("a" * 64, "b" * 64, "meta")),
    ],
)
def test_parse_topic(topic: str, prefix: str, address: Address) -> None:
    assert parse_topic(topic, prefix) == address


HOSTILE_TOPICS = [
    "", "fleet", "fleet/", "fleet/north", "fleet/north/th-1", "fleet/north/th-1/",
    "fleet/north/th-1/telemetry/", "fleet/north/th-1/telemetry/extra", "/fleet/north/th-1/meta",
    "fleetx/north/th-1/meta", "Fleet/north/th-1/meta", "fleet/north/th-1/Telemetry",
    "fleet/north/th-1/status", "fleet//th-1/meta", "fleet/north//meta", "fleet/../th-1/meta",
    "fleet/north/../meta", "fleet/north/./meta", "fleet/north/.hidden/meta",
    "fleet/north/-th/meta", "fleet/north/_th/meta", "fleet/+/th-1/meta", "fleet/north/#",
    "fleet/north/+/meta", "fleet/north/th 1/meta", "fleet/north/th-1\x00/meta",
    "fleet/north/th%2F1/meta", "fleet/north/thé/meta", "fleet/north/th-１/meta",
    "fleet/north/th-1\n/meta", f"fleet/north/{'d' * 65}/meta", "fleet/north/th-1/meta\x00",
    "fleet/north/th;DROP/meta", "fleet\\north\\th-1\\meta", "fleet/north/\udcff/meta",
]  # fmt: skip


@pytest.mark.parametrize("topic", HOSTILE_TOPICS)
def test_hostile_topics_are_rejected(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic, "fleet")
    rejection = only_rejection(run({"ts": TS, "type": "cleaning"}, topic))
    assert rejection.reason == Reason.TOPIC_INVALID and rejection.device is None


# --------------------------------------------------------------------------- timestamps

UTC_TS = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-24T10:00:00Z", UTC_TS),
        ("2026-11-24t10:00:00z", UTC_TS),
        ("2026-11-24 10:00:00Z", UTC_TS),
        ("2026-11-24T10:00:00+00:00", UTC_TS),
        ("2026-11-24T10:00:00-00:00", UTC_TS),
        ("2026-11-24T12:00:00+02:00", UTC_TS),
        ("2026-11-24T05:30:00-04:30", UTC_TS),
        ("2026-11-25T09:59:00+23:59", UTC_TS),
        ("2026-11-24T10:00:00.5Z", UTC_TS + 0.5),
        ("2026-11-24T10:00:00.000001Z", UTC_TS + 1e-6),
        ("2026-11-24T10:00:00.123456789Z", UTC_TS + 0.123456789),
        ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC).timestamp()),
        ("1970-01-01T00:00:00Z", 0.0),
        ("1969-12-31T23:59:59Z", -1.0),
        (1764064800, 1764064800.0),
        (1764064800.25, 1764064800.25),
        (0, 0.0),
        (-1.5, -1.5),
    ],
)
def test_parse_timestamp_accepts(value: Any, expected: float) -> None:
    got = parse_timestamp(value)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-24T10:00:00",  # naive: the contract demands an offset
        "2026-11-24",
        "2026-11-24T10:00Z",
        "2026-11-24T10Z",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-24T24:00:00Z",
        "2026-11-24T10:60:00Z",
        "2026-11-24T10:00:61Z",
        "2026-11-24T10:00:00+24:00",
        "2026-11-24T10:00:00+02:60",
        "2026-11-24T10:00:00+0200",
        "2026-11-24T10:00:00+02",
        "2026-11-24T10:00:00.Z",
        "2026-11-24T10:00:00,5Z",
        "20261124T100000Z",
        "2026-W48-2T10:00:00Z",
        "٢٠٢٦-11-24T10:00:00Z",  # Arabic-Indic digits: int() would take them
        "2026-11-24T10:00:00Z ",
        " 2026-11-24T10:00:00Z",
        "0000-01-01T00:00:00Z",
        "2026-11-24T10:00:00." + "0" * 60 + "1Z",  # beyond the 64-character bound
        "1764064800",
        "",
        "now",
        True,
        False,
        None,
        float("nan"),
        float("inf"),
        float("-inf"),
        10**400,
        [],
        {},
    ],
)
def test_parse_timestamp_rejects(value: Any) -> None:
    with pytest.raises(TimestampError):
        parse_timestamp(value)
    assert issubclass(TimestampError, ValueError)


OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=OFFSETS), st.sampled_from(["T", "t", " "]))  # fmt: skip
def test_parse_timestamp_round_trips_isoformat(moment: datetime, separator: str) -> None:
    text = moment.isoformat(sep=separator)
    assert parse_timestamp(text) == pytest.approx(moment.timestamp(), abs=1e-6)
    if moment.utcoffset() == timedelta(0):
        assert parse_timestamp(text.replace("+00:00", "Z")) == pytest.approx(moment.timestamp())


# --------------------------------------------------------------------------- round trips

UNITS = {
    "temperature": ["degC", "degF", "K", "degR", "°C", "°F"],
    "humidity": ["percent", "%", "PERCENT", "dimensionless", "permille"],
    "pressure": ["hPa", "Pa", "kPa", "mbar", "bar", "psi", "inHg", "mmHg", "atm"],
    "no2": ["ppb", "PPB", "ppm", "ppt", "ppbv", "ppmv"],
    "pm2_5": ["ug/m^3", "µg/m³", "UG/M3", "ug/m3", "mg/m^3", "ng/m^3"],
    "battery": ["V", "mV", "uV", "kV"],
}


@st.composite
def compatible_readings(draw: st.DrawFn) -> dict[str, tuple[str, float]]:
    """Sensor -> (unit, value in that unit) for a value inside the sensor's range."""
    names = draw(st.lists(st.sampled_from(sorted(UNITS)), min_size=1, unique=True))
    out = {}
    for name in names:
        spec = PROFILE.sensors[name]
        low, high = spec.range
        margin = (high - low) * 1e-6
        canonical = draw(st.floats(low + margin, high - margin))
        unit = draw(st.sampled_from(UNITS[name]))
        out[name] = (unit, pint_to(canonical, spec.unit, unit))
    return out


@given(compatible_readings(), st.integers(0, 2**63 - 1) | st.none())
def test_round_trip_with_random_compatible_units(
    sent: dict[str, tuple[str, float]], seq: int | None
) -> None:
    readings = {name: {"value": value, "unit": unit} for name, (unit, value) in sent.items()}
    payload = {"ts": TS_TEXT, "readings": readings} | ({} if seq is None else {"seq": seq})
    outcome = run(payload)
    assert outcome.rejections == ()
    got = {r.sensor: r for r in outcome.readings}
    assert set(got) == set(sent)
    for name, (unit, value) in sent.items():
        spec = PROFILE.sensors[name]
        expected = pint_to(value, unit, spec.unit)
        assert got[name].unit == spec.unit and got[name].seq == seq and got[name].ts == TS
        assert got[name].value is not None
        assert math.isclose(got[name].value, expected, rel_tol=1e-9, abs_tol=1e-9)


def test_hot_path_does_not_call_pint_once_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = telemetry({"temperature": {"value": 70, "unit": "degF"},
                         "no2": {"value": 0.02, "unit": "ppm"},
                         "humidity": {"value": 40, "unit": "bogus_unit"}})  # fmt: skip
    first = run(payload)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pint was called on the hot path")

    ureg_type = type(registry())
    for name in ("parse_units", "convert", "get_dimensionality"):
        monkeypatch.setattr(ureg_type, name, forbidden)
    for _ in range(3):
        assert run(payload) == first
    assert len(first.readings) == 2 and first.rejections[0].reason == Reason.UNIT_INVALID


# --------------------------------------------------------------------------- never raises

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=80)
IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,10}", fullmatch=True)
TOPICS = ANY_TEXT | st.builds(
    lambda site, device, kind: f"fleet/{site}/{device}/{kind}",
    IDS | ANY_TEXT,
    IDS | st.just("stranger"),
    st.sampled_from(["telemetry", "meta", "event"]) | ANY_TEXT,
)
SENSOR_NAMES = st.sampled_from([*PROFILE.sensors, "co2"]) | st.text(max_size=10)
UNIT_TEXT = st.sampled_from([u for units in UNITS.values() for u in units]) | st.text(max_size=12)
READINGS = st.dictionaries(
    SENSOR_NAMES,
    JSON_VALUES | st.fixed_dictionaries({"value": JSON_VALUES, "unit": UNIT_TEXT | JSON_VALUES}),
    max_size=5,
)
TIMESTAMPS = st.sampled_from([TS_TEXT, TS, RECEIVED + 1000]) | JSON_VALUES
TELEMETRY = st.fixed_dictionaries(
    {"ts": TIMESTAMPS, "readings": READINGS}, optional={"seq": JSON_VALUES | st.integers()}
)
EVENTS = st.fixed_dictionaries(
    {"ts": TIMESTAMPS}, optional={"type": st.sampled_from(EVENT_TYPES) | JSON_VALUES}
)


def check_outcome(outcome: Outcome) -> None:
    """What every outcome satisfies, whatever came in."""
    for rejection in outcome.rejections:
        assert rejection.reason in Reason.ALL
        assert isinstance(rejection.detail, str) and rejection.detail
        assert len(rejection.payload) <= Limits().quarantine_payload_cap
        rejection.topic.encode("utf-8")
    for reading in outcome.readings:
        spec = PROFILE.sensors[reading.sensor]
        assert reading.unit == spec.unit
        assert math.isfinite(reading.ts)
        if reading.value is not None:
            assert spec.range[0] <= reading.value <= spec.range[1]
    if outcome.rejections and not outcome.readings:
        assert outcome.meta is None and outcome.event is None


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(TOPICS, st.binary(max_size=300))
def test_never_raises_on_arbitrary_bytes(topic: str, payload: bytes) -> None:
    check_outcome(run(payload, topic))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(TOPICS, JSON_VALUES)
def test_never_raises_on_arbitrary_json(topic: str, value: Any) -> None:
    check_outcome(run(json.dumps(value).encode(), topic))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["telemetry", "meta", "event"]),
    TELEMETRY | EVENTS | st.lists(TELEMETRY | JSON_VALUES, max_size=3),
)
def test_never_raises_on_almost_valid_messages(kind: str, value: Any) -> None:
    outcome = run(json.dumps(value).encode(), f"fleet/north/th-0042/{kind}")
    check_outcome(outcome)
    if kind == "telemetry":
        assert outcome.meta is None and outcome.event is None
