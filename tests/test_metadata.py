"""Metadata anomalies: each rule on its own history, and through the real store, raised once."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditd.adapters.config.catalog import build_catalog, load_profiles, load_references
from auditd.adapters.store import Store
from auditd.app.auditor import AlertSettings, Auditor
from auditd.app.ingest import Ingestor
from auditd.domain.catalog import Catalog
from auditd.domain.metadata import (
    DAY,
    DeviceHistory,
    FleetView,
    MetadataPolicy,
    MetaVersion,
    anomalies,
    changes,
    changes_before,
    context_for,
    metadata_finding,
    needs_saving,
    parse_date,
)
from auditd.domain.validate import Limits
from auditd.model import EventRecord, RawMessage, iso
from auditd.topics import TopicsConfig

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 25, tzinfo=UTC).timestamp()
PROFILES = load_profiles(REPO / "device_profiles")
TH200 = PROFILES["th-200"]
GOOD_META = {"model": "th-200", "firmware": "2.3.1", "serial": "SN-1",
             "installed_at": "2026-03-01", "calibrated_at": "2026-03-01"}


def version(at: float, **data: Any) -> MetaVersion:
    return MetaVersion(data={**GOOD_META, **data}, ts=at, first_seen=at, last_seen=at,
                       site="north")


def event(when: float, type_: str, **data: Any) -> EventRecord:
    return EventRecord("north", "dev-1", when, when, type_, {"ts": when, "type": type_,
                                                             **data})


def history(*versions: MetaVersion, events: tuple[EventRecord, ...] = (),
            first: float | None = NOW - 200 * DAY, last: float | None = NOW - 60,
            **kw: Any) -> DeviceHistory:
    return DeviceHistory("dev-1", "north", versions or (version(NOW - 200 * DAY),),
                         events, first, last, 60.0, **kw)


NO_FLEET = FleetView()


def names(h: DeviceHistory, fleet: FleetView = NO_FLEET, model: str | None = "th-200",
          profile: Any = TH200) -> list[str]:
    return [a.name for a in anomalies(h, profile, model, fleet, NOW)]


# --------------------------------------------------------------------------- each rule


def test_a_healthy_history_has_no_anomaly() -> None:
    assert names(history()) == []


@pytest.mark.parametrize(("firmware", "expected"), [
    ("2.3.1", []), ("2.9.0rc1", []), ("1.9.9", ["firmware_not_allowed"]),
    ("3.0.0", ["firmware_not_allowed"]), ("two", ["metadata_invalid"])])
def test_firmware_is_checked_against_the_profiles_pep440_specifiers(
        firmware: str, expected: list[str]) -> None:
    assert names(history(version(NOW - 200 * DAY, firmware=firmware))) == expected


def test_a_downgrade_is_flagged_until_the_device_is_back_on_its_highest_version() -> None:
    v = [version(NOW - 200 * DAY, firmware="2.4.0"), version(NOW - 10 * DAY, firmware="2.3.1")]
    found = anomalies(history(*v), TH200, "th-200", FleetView(), NOW)
    assert [a.name for a in found] == ["firmware_downgrade"]
    assert found[0].key == "2.4.0->2.3.1"
    assert names(history(*v, version(NOW - DAY, firmware="2.4.0"))) == []


def test_a_rollback_that_is_announced_or_leaves_a_forbidden_version_is_no_downgrade() -> None:
    v = [version(NOW - 200 * DAY, firmware="2.4.0"), version(NOW - 10 * DAY, firmware="2.3.1")]
    rollback = (event(NOW - 10 * DAY, "firmware_update", **{"from": "2.4.0", "to": "2.3.1"}),)
    assert names(history(*v, events=rollback)) == []
    forbidden = [version(NOW - 200 * DAY, firmware="3.0.0"),
                 version(NOW - 10 * DAY, firmware="2.3.1")]
    assert names(history(*forbidden)) == []  # going back from 3.x is the remedy


def test_calibration_overdue_from_the_due_date_or_from_the_profile_interval() -> None:
    due = version(NOW - 200 * DAY, calibration_due="2026-11-01")
    assert names(history(due)) == ["calibration_overdue"]
    lapsed = version(NOW - 400 * DAY, calibrated_at="2025-10-01")  # + 365 days < NOW
    assert names(history(lapsed)) == ["calibration_overdue"]
    fresh = version(NOW - 400 * DAY, calibrated_at="2026-01-01")
    assert names(history(fresh)) == []


def test_a_calibration_event_supersedes_the_stale_due_date_in_meta() -> None:
    stale = version(NOW - 400 * DAY, calibrated_at="2025-06-01", calibration_due="2026-06-01")
    recalibrated = history(stale, events=(event(NOW - 30 * DAY, "calibration"),))
    assert names(recalibrated) == []
    assert names(history(stale)) == ["calibration_overdue"]


def test_installation_dates_that_contradict_the_clock_or_the_telemetry() -> None:
    assert names(history(version(NOW - DAY, installed_at="2027-01-01"))) == [
        "installed_in_future"]
    assert names(history(version(NOW - DAY, installed_at="2026-10-01"))) == [
        "installed_after_telemetry"]  # first reading 200 days ago
    # within the day of grace (a date without a zone) is not a contradiction
    first = parse_date("2026-10-01") - 3600
    assert names(history(version(NOW - DAY, installed_at="2026-10-01"), first=first)) == []


def test_a_serial_change_without_a_replacement_event_is_a_silent_swap() -> None:
    v = (version(NOW - 200 * DAY, serial="SN-1"), version(NOW - 5 * DAY, serial="SN-2"))
    found = anomalies(history(*v), TH200, "th-200", FleetView(), NOW)
    assert [a.name for a in found] == ["serial_changed"] and found[0].key == "SN-1->SN-2"
    announced = (event(NOW - 5 * DAY - 3600, "replacement", detail="new unit"),)
    assert names(history(*v, events=announced)) == []
    # a replacement reported days later, with its true time, still explains it
    late = (EventRecord("north", "dev-1", NOW - 5 * DAY, NOW - DAY, "replacement", {}),)
    assert names(history(*v, events=late)) == []


def test_a_model_without_profile_and_a_sensor_missing_from_the_profile() -> None:
    assert names(history(), model="th-999", profile=None) == ["model_unknown"]
    assert names(history(unknown_sensors=("co2",))) == ["sensor_not_in_profile"]


def test_silence_is_measured_in_reporting_intervals_with_a_floor() -> None:
    assert names(history(last=NOW - 20 * 60)) == []  # 20 missed minutes: a dropout
    assert names(history(last=NOW - 3 * 3600)) == ["device_silent"]
    policy = MetadataPolicy(silent_after_intervals=300, silent_min_s=60)
    found = anomalies(history(last=NOW - 3 * 3600), TH200, "th-200", FleetView(), NOW, policy)
    assert found == []  # 300 minutes not yet reached


def test_a_version_only_a_tiny_share_of_the_fleet_runs() -> None:
    fleet = FleetView({"th-200": {"2.3.1": 30, "2.2.0": 1}})
    assert names(history(version(NOW - 200 * DAY, firmware="2.2.0")), fleet) == [
        "firmware_rare"]
    assert names(history(), fleet) == []
    small = FleetView({"th-200": {"2.3.1": 3, "2.2.0": 1}})  # too few devices to say
    assert names(history(version(NOW - 200 * DAY, firmware="2.2.0")), small) == []


def test_a_malformed_date_is_metadata_invalid_not_a_crash() -> None:
    found = anomalies(history(version(NOW - DAY, calibrated_at="last tuesday")), TH200,
                      "th-200", FleetView(), NOW)
    assert [a.name for a in found] == ["metadata_invalid"]
    assert "calibrated_at" in found[0].evidence


# --------------------------------------------------------------------------- changes


def test_changes_before_an_onset_are_the_lookback_newest_first() -> None:
    h = history(version(NOW - 90 * DAY),
                version(NOW - 3 * DAY, location={"lat": 45.2, "lon": 7.6}),
                events=(event(NOW - 60 * DAY, "maintenance"), event(NOW - 2 * DAY, "cleaning"),
                        event(NOW + DAY, "calibration")))
    timeline = changes(h)
    assert [c.type for c in timeline] == ["maintenance", "relocation", "cleaning",
                                          "calibration"]
    before = changes_before(timeline, NOW)
    assert [c.type for c in before] == ["cleaning", "relocation"]  # 60 days is too far
    context = context_for(timeline, NOW, NOW - DAY)
    assert "firmware_change" not in context
    assert context["changes"][1]["from"] == GOOD_META.get("location")
    assert context["changes"][1]["to"] == {"lat": 45.2, "lon": 7.6}


def test_an_update_within_an_onsets_uncertainty_is_laid_beside_it() -> None:
    """An onset dated to within two hours says nothing about an update 76 minutes after
    the estimate: the deviation may have followed it, and the technician should see it."""
    h = history(version(NOW - 90 * DAY),
                events=(event(NOW + 76 * 60, "firmware_update", **{"from": "1.0.0",
                                                                    "to": "2.0.0"}),))
    timeline = changes(h)
    assert "firmware_change" not in context_for(timeline, NOW, NOW - DAY)
    assert context_for(timeline, NOW, NOW - DAY, onset_uncertainty_s=7116.0)[
        "firmware_change"] == {"from": "1.0.0", "to": "2.0.0", "at": iso(NOW + 76 * 60)}


@given(st.dates(min_value=date(1971, 1, 1), max_value=date(2200, 1, 1)))
def test_a_meta_date_is_utc_midnight(d: date) -> None:
    assert parse_date(d.isoformat()) == datetime(d.year, d.month, d.day,
                                                 tzinfo=UTC).timestamp()


@given(st.one_of(st.text(max_size=30), st.booleans(), st.lists(st.integers(), max_size=2),
                 st.floats(allow_nan=True)))
def test_parse_date_refuses_garbage_with_a_value_error_only(value: object) -> None:
    with contextlib.suppress(ValueError):
        parse_date(value)


# --------------------------------------------------------------------------- through the store


def ingest(store: Store, catalog: Catalog, messages: list[tuple[str, float, Any]]) -> None:
    ingestor = Ingestor(store, catalog, prefix="fleet", limits=Limits())
    ingestor.ingest([RawMessage(topic, json.dumps(payload).encode(), at)
                     for topic, at, payload in messages])


def telemetry(device: str, t: float) -> tuple[str, float, Any]:
    return (f"fleet/north/{device}/telemetry", t,
            {"ts": t, "readings": {"temperature": 20.0, "humidity": 50.0, "pressure": 1000.0}})


def meta(device: str, t: float, **data: Any) -> tuple[str, float, Any]:
    return (f"fleet/north/{device}/meta", t, {"ts": t, **GOOD_META, **data})


def test_each_anomaly_is_raised_once_and_its_end_once(tmp_path: Path) -> None:
    catalog = build_catalog(PROFILES, load_references(REPO / "references"), {})
    t0 = NOW - 30 * DAY
    with Store(tmp_path / "audit.db") as store:
        auditor = Auditor(store, catalog, TopicsConfig(), gateway="gw")
        ingest(store, catalog, [meta("th-north-01", t0, firmware="3.1.0", serial="SN-1"),
                                meta("th-north-02", t0), telemetry("th-north-01", t0 + 1),
                                telemetry("th-north-02", t0 + 1)])
        for hour in range(1, 5):  # retained meta re-delivered before each audit
            t = t0 + hour * 3600
            ingest(store, catalog, [meta("th-north-01", t, firmware="3.1.0", serial="SN-1"),
                                    meta("th-north-02", t), telemetry("th-north-01", t),
                                    telemetry("th-north-02", t)])
            auditor.run(t + 60)
        saved = [s.finding for s in store.findings.of_device("th-north-01")
                 if s.finding.kind == "metadata"]
        assert len(saved) == 1
        assert [c.cause for c in saved[0].causes] == ["firmware_not_allowed"]
        assert store.findings.of_device("th-north-02") == [], "a clean device raises nothing"
        assert len(store.devices.meta_history("th-north-01")) == 1

        # the firmware is fixed (no downgrade: 3.1.0 was never allowed) and, in the same
        # change, the unit is swapped without notice
        t = t0 + 5 * 3600
        ingest(store, catalog, [meta("th-north-01", t, firmware="2.3.1", serial="SN-9"),
                                telemetry("th-north-01", t)])
        auditor.run(t + 60)
        auditor.run(t + 3600)
        saved = [s.finding for s in store.findings.of_device("th-north-01")
                 if s.finding.kind == "metadata"]
        assert [[c.cause for c in f.causes] for f in saved] == [
            ["firmware_not_allowed"], ["serial_changed"]]

        # the replacement is reported late, with its true time: one "pass", then quiet
        ingest(store, catalog, [
            ("fleet/north/th-north-01/event", t + 7200,
             {"ts": t - 60, "type": "replacement", "detail": "unit swapped after storm"}),
            telemetry("th-north-01", t + 7200)])
        auditor.run(t + 7260)
        auditor.run(t + 9000)
        saved = [s.finding for s in store.findings.of_device("th-north-01")
                 if s.finding.kind == "metadata"]
        assert [f.status for f in saved] == ["fail", "fail", "pass"]
        assert saved[-1].causes == ()


def test_needs_saving_is_a_change_of_the_anomaly_set() -> None:
    h = history(version(NOW - 200 * DAY, firmware="1.0"))
    found = anomalies(h, TH200, "th-200", FleetView(), NOW)
    first = metadata_finding("dev-1", "north", found, NOW)
    assert needs_saving(None, found)
    assert not needs_saving(first, found)
    assert needs_saving(first, [])
    assert not needs_saving(None, [])


# --------------------------------------------------------------------------- review cases


@pytest.mark.parametrize("value", [1761004800000, 1e20, 10**400, -1e12, "1900-01-01"])
def test_a_date_in_milliseconds_or_out_of_range_is_invalid_not_a_crash(value: object) -> None:
    for key in ("installed_at", "calibrated_at", "calibration_due"):
        found = anomalies(history(version(NOW - DAY, **{key: value})), TH200, "th-200",
                          NO_FLEET, NOW)
        assert [a.name for a in found] == ["metadata_invalid"], (key, value)
        assert key in found[0].evidence


def test_a_second_silent_swap_after_a_recorded_replacement_is_flagged() -> None:
    v = (MetaVersion({**GOOD_META, "serial": "SN-1"}, NOW - 90 * DAY, NOW - 90 * DAY,
                     NOW - 60 * DAY),
         MetaVersion({**GOOD_META, "serial": "SN-2"}, NOW - 60 * DAY, NOW - 60 * DAY,
                     NOW - 2 * DAY),
         MetaVersion({**GOOD_META, "serial": "SN-3"}, NOW - DAY, NOW - DAY, NOW))
    swap = (event(NOW - 60 * DAY, "replacement"),)
    found = anomalies(history(*v, events=swap), TH200, "th-200", NO_FLEET, NOW)
    assert [(a.name, a.key) for a in found] == [("serial_changed", "SN-2->SN-3")]


def test_an_old_calibration_event_does_not_override_a_newer_due_date() -> None:
    meta = version(NOW - 400 * DAY, calibrated_at=None, calibration_due="2027-09-01")
    old_event = (event(NOW - 400 * DAY, "calibration"),)
    assert names(history(meta, events=old_event)) == []


def test_the_canary_of_a_rollout_is_not_rare_firmware() -> None:
    fleet = FleetView({"th-200": {"2.3.1": 11, "2.4.0": 1}})
    canary = history(version(NOW - DAY, firmware="2.4.0"),
                     events=(event(NOW - DAY, "firmware_update",
                                   **{"from": "2.3.1", "to": "2.4.0"}),))
    assert names(canary, fleet) == []
    assert names(history(version(NOW - DAY, firmware="2.4.0")), fleet) == ["firmware_rare"]


def test_installation_after_telemetry_of_a_replaced_unit_is_no_contradiction() -> None:
    new_unit = version(NOW - DAY, installed_at="2026-10-01")
    swap = (event(parse_date("2026-10-01"), "replacement"),)
    assert names(history(new_unit, events=swap)) == []


def test_a_devices_own_at_or_source_key_cannot_rewrite_the_change() -> None:
    h = history(events=(event(NOW - DAY, "maintenance", **{"at": "yesterday",
                                                            "source": "crew"}),))
    (change,) = changes(h)
    assert change.to_json()["source"] == "event"
    assert change.to_json()["at"] == "2026-11-24T00:00:00Z"


def test_stray_telemetry_and_hostile_meta_never_stop_an_audit(tmp_path: Path) -> None:
    catalog = build_catalog(PROFILES, load_references(REPO / "references"), {})
    t0 = NOW - DAY
    with Store(tmp_path / "audit.db") as store:
        ingest(store, catalog, [
            telemetry("stray-7", t0),  # no meta yet: quarantined as unknown_device_model
            meta("th-north-01", t0, installed_at=1761004800000, calibrated_at={"x": [1]},
                 firmware=2.4, serial=["SN"], location="up the mast"),
            telemetry("th-north-01", t0 + 1)])
        run = Auditor(store, catalog, TopicsConfig(), gateway="gw").run(t0 + 3600)
        by_device = {f.device: f for f in run.findings if f.kind == "metadata"}
        assert [c.cause for c in by_device["stray-7"].causes] == ["model_unknown"]
        assert by_device["stray-7"].site == "north"
        assert {c.cause for c in by_device["th-north-01"].causes} == {"metadata_invalid"}


def test_a_late_copy_of_a_superseded_meta_does_not_become_current(tmp_path: Path) -> None:
    catalog = build_catalog(PROFILES, load_references(REPO / "references"), {})
    t0 = NOW - DAY
    with Store(tmp_path / "audit.db") as store:
        ingest(store, catalog, [meta("th-north-01", t0, firmware="2.3.1")])
        ingest(store, catalog, [meta("th-north-01", t0 + 60, firmware="2.4.0")])
        ingest(store, catalog, [meta("th-north-01", t0 + 10, firmware="2.3.1")])  # queued
        history = store.devices.meta_history("th-north-01")
        assert [v.data["firmware"] for v in history] == ["2.3.1", "2.4.0"]
        assert store.devices.latest_meta()["th-north-01"].data["firmware"] == "2.4.0"


def test_a_device_that_announced_itself_and_never_reported_goes_silent(tmp_path: Path) -> None:
    catalog = build_catalog(PROFILES, load_references(REPO / "references"), {})
    t0 = NOW - 10 * DAY
    with Store(tmp_path / "audit.db") as store:
        ingest(store, catalog, [meta("th-north-05", t0)])
        run = Auditor(store, catalog, TopicsConfig(), gateway="gw").run(NOW)
        found = [f for f in run.findings if f.device == "th-north-05"]
        assert [c.cause for c in found[0].causes] == ["device_silent"]


# --------------------------------------------------------------------------- due dates

DATES = st.one_of(st.none(), st.integers(-800, 400).map(
    lambda days: datetime.fromtimestamp(NOW + days * DAY, tz=UTC).date().isoformat()))


@settings(max_examples=300, deadline=None)
@given(calibrated_at=DATES, calibration_due=DATES,
       event_days=st.one_of(st.none(), st.integers(-800, 0)),
       interval=st.one_of(st.none(), st.sampled_from([90.0, 180.0, 365.0])))
def test_the_reports_due_date_is_the_overdue_checks(
        calibrated_at: str | None, calibration_due: str | None, event_days: int | None,
        interval: float | None) -> None:
    """The report's due column and the ``calibration_overdue`` check are one computation:
    for any metadata, events and profile interval, the report lists a device as overdue
    exactly when the check raises, on the same date."""
    from dataclasses import replace

    from auditd.adapters.store.findings import StoredFinding
    from auditd.model import Finding
    from auditd.views.report import build

    data = {k: v for k, v in (("calibrated_at", calibrated_at),
                              ("calibration_due", calibration_due)) if v is not None}
    meta = MetaVersion(data={"model": "th-200", "firmware": "2.3.1", **data}, ts=NOW - DAY,
                       first_seen=NOW - DAY, last_seen=NOW - DAY, site="north")
    events = (event(NOW + event_days * DAY, "calibration"),) if event_days is not None else ()
    profile = replace(TH200, calibration_interval_days=interval)
    raised = [a for a in anomalies(history(meta, events=events), profile, "th-200", NO_FLEET,
                                   NOW) if a.name == "calibration_overdue"]
    finding = Finding(kind="calibration", site="north", device="dev-1", sensor="temperature",
                      status="pass", severity="none", window_start=NOW - DAY, window_end=NOW)
    catalog = Catalog(profiles={"th-200": profile}, models={"dev-*": "th-200"})
    report = build([StoredFinding(1, NOW, finding)], [], [], {"dev-1": meta}, catalog, NOW,
                   "test", events={"dev-1": events})
    overdue = [d for d in report.due if any("overdue" in w for w in d["why"])]
    assert bool(overdue) == bool(raised)
    if raised:
        assert raised[0].since is not None
        assert overdue[0]["due"] == iso(raised[0].since)


def test_one_stray_message_is_data_quality_and_a_persistent_one_opens_one_ticket(
        tmp_path: Path) -> None:
    """Issue 21: one message naming a sensor the profile lacks opened an alert and a
    ticket. Now it is a metadata finding (data quality) that opens nothing unless the
    device renews it in a second audit run; a device that keeps sending the sensor gets
    one alert, one ticket (issue 18's one policy: ``metadata_after`` runs)."""
    catalog = build_catalog(PROFILES, load_references(REPO / "references"), {})
    t0 = NOW - 30 * DAY

    def reading(device: str, t: float, extra: bool) -> tuple[str, float, Any]:
        topic, at, payload = telemetry(device, t)
        if extra:
            payload["readings"]["co2"] = 412.0
        return topic, at, payload

    with Store(tmp_path / "audit.db") as store:
        auditor = Auditor(store, catalog, TopicsConfig(), gateway="gw",
                          alerting=AlertSettings("gw", TopicsConfig(), ("file",), mqtt=False))
        for hour in range(6):
            t = t0 + hour * 3600
            ingest(store, catalog, [
                meta("th-north-01", t), meta("th-north-02", t),
                reading("th-north-01", t + 1, extra=hour == 1),  # one stray message
                reading("th-north-02", t + 1, extra=hour >= 1)])  # every message
            auditor.run(t + 60)
        stray = [s.finding for s in store.findings.of_device("th-north-01")
                 if s.finding.kind == "metadata"]
        assert [(f.status, [c.cause for c in f.causes]) for f in stray] == [
            ("fail", ["sensor_not_in_profile"]), ("pass", [])]  # counted, then over
        opened = store.alerts.select(states=("open", "acknowledged", "resolved"))
        assert [(a.device, a.cause) for a in opened] == [
            ("th-north-02", "sensor_not_in_profile")]
        assert [(t.event, t.alert_id) for t in store.tickets.requests()] == [
            ("open", opened[0].id)]
