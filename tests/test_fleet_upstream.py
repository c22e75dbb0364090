"""Upstream messages -> fleet records: what a gateway publishes parses back to the values
it published; anything else is rejected with a reason, never an exception."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from auditd.fleet.records import (
    AuditReport,
    FleetFinding,
    GatewayStatus,
    Inventory,
    Origin,
    Rejected,
    TicketEvent,
)
from auditd.fleet.upstream import parse
from auditd.model import Cause, Finding
from auditd.topics import TopicsConfig

T0 = 1_764_028_800.0
TOPICS = TopicsConfig()
NORTH = Origin("north", "gw-1")


def published(f: Finding) -> bytes:
    return json.dumps(f.to_json()).encode()


FINDING = Finding(kind="calibration", site="north", device="th-north-01", sensor="pressure",
                  status="fail", severity="major", window_start=T0, window_end=T0 + 86_400,
                  unit="hPa", reference="ref-north", metrics={"n": 1440, "bias": 2.5},
                  causes=(Cause("offset_drift", 0.93, "+2.5 hPa"),), onset=T0 + 3600.5,
                  context={"firmware_change": {"from": "2.3.1", "to": "2.4.0"}})


def test_a_published_finding_parses_to_the_finding_published() -> None:
    topic = TOPICS.finding("north", "gw-1", "th-north-01", "pressure")
    record = parse(topic, published(FINDING), T0)
    assert record == FleetFinding(NORTH, Finding.from_json(FINDING.to_json()))


def test_a_metadata_finding_on_the_dash_sensor_topic() -> None:
    meta = Finding(kind="metadata", site="north", device="th-north-01", sensor=None,
                   status="fail", severity="minor", window_start=T0, window_end=T0 + 60,
                   causes=(Cause("firmware_downgrade", 0.9, "2.4.0 -> 2.3.1"),))
    record = parse(TOPICS.finding("north", "gw-1", "th-north-01", "-"), published(meta), T0)
    assert isinstance(record, FleetFinding) and record.finding.sensor is None


def test_a_finding_for_another_device_than_its_topic_is_rejected() -> None:
    topic = TOPICS.finding("north", "gw-1", "th-north-02", "pressure")
    record = parse(topic, published(FINDING), T0)
    assert isinstance(record, Rejected) and record.reason == "bad_finding"


def test_inventory_keeps_the_attributes_and_the_rest() -> None:
    payload = {"ts": "2025-11-25T00:00:00Z", "model": "th-200", "firmware": "2.4.0",
               "hardware_rev": "B", "last_seen": T0 - 5, "causes": ["offset_drift"],
               "location": {"lat": 45.1}}
    record = parse("fleet/north/audit/gw-1/device/th-north-01", json.dumps(payload).encode(),
                   T0 + 9)
    assert record == Inventory(NORTH, "th-north-01", T0, model="th-200", firmware="2.4.0",
                               hardware_rev="B", last_seen=T0 - 5, causes=("offset_drift",),
                               extra={"location": {"lat": 45.1}})


def test_status_as_text_takes_the_time_received_and_as_json_its_own() -> None:
    topic = TOPICS.status("north", "gw-1")
    assert parse(topic, b"offline", T0) == GatewayStatus(NORTH, "offline", T0)
    stated = json.dumps({"state": "online", "ts": T0 - 30}).encode()
    assert parse(topic, stated, T0) == GatewayStatus(NORTH, "online", T0 - 30)
    assert isinstance(parse(topic, b"sleeping", T0), Rejected)


def test_report_and_ticket() -> None:
    report = {"kind": "audit_report", "site": "north", "gateway": "gw-1",
              "at": "2025-11-26T00:00:00Z", "streams": 36, "pass": 32, "fail": 4,
              "insufficient_data": 0}
    record = parse(TOPICS.report("north", "gw-1"), json.dumps(report).encode(), T0)
    assert isinstance(record, AuditReport)
    assert (record.at, record.streams, record.failed) == (T0 + 86_400, 36, 4)
    ticket = {"kind": "ticket", "ticket_id": "a1", "idempotency_key": "a1/open",
              "event": "open", "at": T0, "device": "th-north-01", "sensor": "pressure",
              "cause": "offset_drift", "severity": "major", "state": "open",
              "opened_at": T0, "resolved_at": None}
    record = parse(TOPICS.ticket("north", "gw-1"), json.dumps(ticket).encode(), T0)
    assert isinstance(record, TicketEvent) and record.idempotency_key == "a1/open"


def test_the_gateway_command_topic_is_not_the_fleets() -> None:
    assert parse(TOPICS.command("north", "gw-1"), b'{"ack": "x"}', T0) is None


def test_bad_topics_and_payloads_are_rejected_with_a_reason() -> None:
    cases = {
        ("fleet/north/audit/gw 1/status", b"online"): "bad_topic",
        ("fleet/north/audit/gw-1/finding/th-01", b"{}"): "bad_topic",
        ("other/north/audit/gw-1/status", b"online"): "bad_topic",
        ("fleet/north/audit/gw-1/report", b"{not json"): "bad_json",
        ("fleet/north/audit/gw-1/report", b"[1]"): "bad_payload",
        ("fleet/north/audit/gw-1/report", b'{"at": "yesterday"}'): "bad_timestamp",
        ("fleet/north/audit/gw-1/device/th-01", b'{"ts": 1, "model": "a\\u0000b"}'):
            "bad_payload",
        ("fleet/north/audit/gw-1/finding/th-01/t", b'{"kind": "calibration"}'):
            "bad_finding",
        ("fleet/north/audit/gw-1/finding/th-north-01/pressure",
         published(FINDING).replace(b'"+2.5 hPa"', b'"+2.5\\u0000hPa"')): "bad_payload",
        ("fleet/north/audit/gw-1/finding/th-north-01/pressure",
         json.dumps(FINDING.to_json()).encode("utf-16")): "bad_json",
    }
    for (topic, payload), reason in cases.items():
        record = parse(topic, payload, T0)
        assert isinstance(record, Rejected), topic
        assert (record.reason, record.topic, record.payload) == (reason, topic, payload)


@given(st.text(max_size=80), st.binary(max_size=300))
def test_parse_never_raises(topic: str, payload: bytes) -> None:
    parse(topic, payload, T0)


@given(st.sampled_from(["finding/d1/temperature", "device/d1", "report", "ticket", "status"]),
       st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=6)))
def test_any_json_on_a_fleet_topic_parses_or_is_rejected(kind: str, document: object) -> None:
    record = parse(f"fleet/north/audit/gw-1/{kind}", json.dumps(document).encode(), T0)
    assert record is not None


_VALUES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) \
    | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=4), st.integers(),
                                                            max_size=2)


@given(st.fixed_dictionaries({}, optional={
    key: _VALUES for key in ("kind", "site", "device", "sensor", "status", "severity",
                             "window", "metrics", "causes", "onset", "reference", "context")}))
def test_finding_shaped_garbage_is_rejected_not_raised(document: dict[str, object]) -> None:
    document = {"kind": "calibration", "site": "north", "device": "d1", "status": "pass",
                "severity": "none", "window": {"end": "2025-11-25T00:00:00Z"}, **document}
    record = parse("fleet/north/audit/gw-1/finding/d1/temperature",
                   json.dumps(document).encode(), T0)
    assert isinstance(record, FleetFinding | Rejected)


@given(st.sampled_from([published(FINDING), b"{", b'{"kind": "calibration"}',
                        published(FINDING).replace(b"north", b"south")]),
       st.sampled_from(["th-north-01", "th north"]))
def test_the_imports_shortcut_parses_as_the_topic_does(payload: bytes, device: str) -> None:
    from auditd.fleet.upstream import parse_finding

    topic = f"fleet/north/audit/gw-1/finding/{device}/pressure"
    assert parse_finding(NORTH, device, "pressure", payload, T0) == parse(topic, payload, T0)
