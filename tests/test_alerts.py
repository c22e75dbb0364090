"""Alert lifecycle, grouping, silences and ticket requests.

The lifecycle (``alerts.step``) is property-tested over generated audit sequences; the plan
of one audit and its transaction run against a real SQLite store; the grouped reference
fault runs the real auditor over a day of readings from twenty devices.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from auditd.adapters.config.catalog import build_catalog, load_profiles
from auditd.adapters.store import Store
from auditd.adapters.store.alerts import AlertPlanner
from auditd.app.auditor import AlertSettings, Auditor
from auditd.cli import main
from auditd.core import causes
from auditd.domain import alerts
from auditd.domain.alerts import (
    DEFAULT_POLICY,
    Observation,
    Silence,
    Snapshot,
    StreamKey,
    Track,
    alert_id,
    group_members,
    plan,
    step,
)
from auditd.domain.tickets import ticket_payload
from auditd.model import (
    SEVERITY_RANK,
    AlertPolicy,
    Cause,
    Finding,
    Outcome,
    Reading,
    Reference,
    weighted,
)
from auditd.topics import TopicsConfig
from auditd.views.alerts import as_json, table

REPO = Path(__file__).resolve().parents[1]
T0 = 1_764_028_800.0  # 2025-11-25T00:00:00Z
HOUR = 3600.0
DAY = 86_400.0

STATUSES = st.sampled_from(["fail", "pass", "insufficient_data"])
SEVERITY = st.sampled_from(["minor", "major", "critical"])


def run_track(statuses: list[tuple[str, str]], policy: AlertPolicy, cause: str = "offset_drift"
              ) -> list[tuple[Track, str | None]]:
    """``doubt_fault``/``doubt_health``: a pass whose window did not show health (an
    interval reaches beyond tolerance), its estimates beyond tolerance or inside it."""
    track, out = Track(), []
    for i, (status, severity) in enumerate(statuses):
        doubt = status.startswith("doubt")
        obs = Observation(T0 + i * HOUR, "pass" if doubt else status,  # type: ignore[arg-type]
                          severity if status == "fail" else "none", cause,
                          confirmed=not doubt, leaning_fault=status == "doubt_fault")
        track, event = step(track, obs, policy)
        out.append((track, event))
    return out


# --------------------------------------------------------------------------- pure lifecycle


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(STATUSES, SEVERITY), max_size=80), st.integers(1, 5),
       st.integers(1, 5))
def test_hysteresis_opens_after_k_fails_and_resolves_after_m_passes(
        sequence: list[tuple[str, str]], k: int, m: int) -> None:
    policy = AlertPolicy(open_after=k, resolve_after=m)
    history = run_track(sequence, policy)
    active = False
    fails = passes = 0  # consecutive, insufficient_data neither counts nor breaks
    for (status, _), (track, event) in zip(sequence, history, strict=True):
        if status == "fail":
            fails, passes = fails + 1, 0
        elif status == "pass":
            fails, passes = 0, passes + 1
        if event == "open":
            assert not active, "a second alert opened while one was open"
            assert status == "fail" and fails >= k
            active = True
        elif event == "resolve":
            assert active and status == "pass" and passes == m
            active = False
        elif event == "escalate":
            assert active and status == "fail"
        else:
            # Nothing happened: either not enough evidence to open, or not enough to resolve.
            assert not (not active and status == "fail" and fails == k)
            assert not (active and status == "pass" and passes == m)
        assert (track.state in ("open", "acknowledged")) == active


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["fail", "pass", "insufficient_data", "doubt_fault",
                                           "doubt_health"]), SEVERITY), max_size=80),
       st.integers(1, 5), st.integers(1, 5))
def test_a_pass_that_does_not_show_health_never_resolves_an_alert(
        sequence: list[tuple[str, str]], k: int, m: int) -> None:
    """Resolving needs evidence of health, failing evidence of a fault: a pass in between
    (not failing, an interval not inside tolerance) never resolves or changes an open
    alert, and one whose estimates lean to the fault changes nothing wherever it falls.
    So one drift that wanders about its tolerance is one alert, not one per excursion
    (the UCI year's loss of span was 8 alerts on one stream, issue 21)."""
    policy = AlertPolicy(open_after=k, resolve_after=m)
    full = run_track(sequence, policy)
    kept = [i for i, (status, _) in enumerate(sequence) if status != "doubt_fault"]
    without = run_track([sequence[i] for i in kept], policy)
    assert [e for _, e in full if e] == [e for _, e in without if e]
    for i, (status, _) in enumerate(sequence):
        before = full[i - 1][0] if i else Track()
        if status.startswith("doubt"):
            assert full[i][1] is None
            if before.state in ("open", "acknowledged") or status == "doubt_fault":
                assert full[i][0] == before


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(STATUSES, SEVERITY), max_size=60), st.integers(1, 4))
def test_escalation_only_on_a_new_peak_and_never_a_second_alert(
        sequence: list[tuple[str, str]], k: int) -> None:
    history = run_track(sequence, AlertPolicy(open_after=k))
    peak = 0
    alerts_opened = 0
    for (status, severity), (track, event) in zip(sequence, history, strict=True):
        if event == "open":
            alerts_opened += 1
            peak = SEVERITY_RANK[severity]
        elif event == "escalate":
            assert SEVERITY_RANK[severity] > peak
            peak = SEVERITY_RANK[severity]
        elif track.state == "open" and status == "fail":
            assert SEVERITY_RANK[severity] <= peak
        assert SEVERITY_RANK[track.peak] == peak or track.state not in ("open",)
    resolves = sum(e == "resolve" for _, e in history)
    assert alerts_opened - resolves in (0, 1)


@given(st.integers(2, 6), st.integers(2, 6), st.booleans())
def test_a_flapping_stream_opens_at_most_once_and_does_not_close(k: int, m: int,
                                                                 start_open: bool) -> None:
    """Failing every other audit: never K fails in a row, never M passes in a row."""
    policy = AlertPolicy(open_after=k, resolve_after=m)
    prefix = [("fail", "major")] * k if start_open else []
    flaps = [("fail", "major") if i % 2 == 0 else ("pass", "none") for i in range(24)]
    events = [e for _, e in run_track(prefix + flaps, policy) if e]
    assert events == (["open"] if start_open else [])


@given(st.sampled_from(["minor", "major", "critical"]), st.floats(0.05, 5.0),
       st.floats(0.05, 5.0))
def test_impact_weight_is_monotonic_and_one_is_neutral(severity: str, a: float,
                                                       b: float) -> None:
    low, high = sorted((a, b))
    assert weighted(severity, 1.0) == severity  # type: ignore[arg-type]
    assert SEVERITY_RANK[weighted(severity, low)] <= SEVERITY_RANK[weighted(severity, high)]  # type: ignore[arg-type]
    assert weighted("none", high) == "none"


def test_alert_id_is_deterministic_and_names_what_opened() -> None:
    a = alert_id("th-1", "temperature", "offset_drift", T0)
    assert a == alert_id("th-1", "temperature", "offset_drift", T0)
    assert re.fullmatch(r"sa-[0-9a-f]{20}", a)
    assert len({a, alert_id("th-1", "temperature", "offset_drift", T0 + HOUR),
                alert_id("th-1", "humidity", "offset_drift", T0),
                alert_id("th-1", "temperature", "gain_drift", T0),
                alert_id("th-2", "temperature", "offset_drift", T0)}) == 5


# --------------------------------------------------------------------------- plan


def finding(device: str, status: str = "fail", *, cause: str = "offset_drift",
            severity: str = "major", sensor: str = "temperature", members: list[str] | None = None,
            extra_causes: tuple[str, ...] = (), window_s: float = DAY) -> Finding:
    causes = (Cause(cause, 0.9, f"{cause} evidence"),
              *(Cause(c, 0.5, f"{c} evidence") for c in extra_causes)) if status == "fail" else ()
    context = {"members": members} if members is not None else {}
    if cause == "reference_fault" and members is None and status == "fail":
        context = {"reference_fault": "ref-north"}
    return Finding(kind="calibration", site="north", device=device, sensor=sensor,
                   status=status, severity=severity if status == "fail" else "none",  # type: ignore[arg-type]
                   window_start=T0 - window_s, window_end=T0, unit="degC",
                   reference="ref-north", metrics={"bias": 1.2}, causes=causes,
                   context=context, action="Re-zero the sensor.")


def audits(snapshot: Snapshot, rounds: list[list[Finding]], start: float = T0,
           policy: AlertPolicy = DEFAULT_POLICY) -> tuple[Snapshot, list[alerts.Changes]]:
    """Apply rounds of findings as the store would, carrying the state between them."""
    out = []
    tracks, known, silences = dict(snapshot.tracks), dict(snapshot.alerts), snapshot.silences
    for i, round_ in enumerate(rounds):
        changes = plan(Snapshot(tracks, known, silences), round_, start + i * HOUR,
                       lambda f: policy)
        tracks.update({k: t for k, (_, t) in changes.tracks.items()})
        known.update({a.id: a for a in changes.alerts})
        out.append(changes)
    return Snapshot(tracks, known, silences), out


def test_a_root_groups_its_members_under_one_ticket() -> None:
    members = [f"th-{i:02d}" for i in range(20)]
    round_ = [finding("ref-north", cause="reference_fault", members=members),
              *(finding(d, cause="reference_fault", severity="minor") for d in members),
              finding("th-99", cause="offset_drift")]  # not named by the root: its own alert
    _, changes = audits(Snapshot(), [round_, round_, round_])
    tickets = [t for c in changes for t in c.tickets]
    assert sorted((t.alert.device, t.event) for t in tickets) == [
        ("ref-north", "open"), ("th-99", "open")]
    root = next(t for t in tickets if t.alert.device == "ref-north")
    assert [m["device"] for m in root.members] == members
    opened = [a for c in changes for a in c.alerts if a.state == "open"]
    assert {a.group for a in opened if a.device in members} == {
        "calibration/ref-north/temperature"}


def test_a_root_no_longer_raised_resolves_after_m_audits() -> None:
    """A reference fault's finding exists only while the devices out-vote the reference;
    once it is recalibrated there is no root finding at all: that absence is the pass."""
    members = ["th-01", "th-02", "th-03"]
    faulty = [finding("ref-north", cause="reference_fault", members=members),
              *(finding(d, cause="reference_fault") for d in members)]
    fixed = [finding(d, status="pass") for d in members]
    _, changes = audits(Snapshot(), [faulty, faulty, fixed, fixed, fixed, fixed])
    assert [(i, t.alert.device, t.event) for i, c in enumerate(changes) for t in c.tickets] \
        == [(1, "ref-north", "open"), (4, "ref-north", "resolve")]
    resolved = changes[4].tickets[0]
    assert resolved.alert.finding.causes[0].cause == "reference_fault"  # its evidence


def test_a_member_failing_for_its_own_reason_is_not_grouped() -> None:
    grouping = group_members([
        finding("ref-north", cause="reference_fault", members=["th-01", "th-02", "th-03"]),
        finding("th-01", cause="reference_fault"),
        finding("th-02", cause="offset_drift"),  # named, but blamed on something else
        finding("th-03", cause="reference_fault", sensor="humidity"),  # other sensor
    ])
    assert grouping == {StreamKey("calibration", "th-01", "temperature"):
                        StreamKey("calibration", "ref-north", "temperature")}


def test_a_member_whose_own_readings_are_at_fault_keeps_its_own_alert() -> None:
    """Impossible values or a frozen output beside a reference fault: the root's alert does
    not speak for that device; its own alert (and ticket) sends someone to it."""
    root = finding("ref-north", cause="reference_fault", members=["th-01", "th-02", "th-03"])
    spared = finding("th-01", cause="reference_fault", extra_causes=("noise",))
    broken = finding("th-02", cause="out_of_range", extra_causes=("reference_fault",))
    frozen = finding("th-03", cause="stuck", extra_causes=("reference_fault",))
    assert group_members([root, spared, broken, frozen]) == {
        StreamKey.of(spared): StreamKey.of(root)}


def test_a_firmware_cohort_groups_its_members_across_sites() -> None:
    """Shaped as ``fleet._regression_root`` makes them: the root is the cohort, at the site
    most members are at; members name ``firmware_regression`` first, wherever they are."""
    root = replace(finding("th-200@2.4.0", cause="firmware_regression"),
                   context={"cohort": {"attribute": "firmware", "model": "th-200",
                                       "version": "2.4.0"}, "members": ["th-01", "th-02"]})
    here = finding("th-01", cause="firmware_regression", extra_causes=("offset_drift",))
    there = replace(finding("th-02", cause="firmware_regression"), site="south")
    assert group_members([root, here, there]) == {
        StreamKey.of(here): StreamKey.of(root), StreamKey.of(there): StreamKey.of(root)}
    body = ticket_payload(plan(Snapshot(tracks={StreamKey.of(root): Track(
        state="suspect", fails=1)}), [root, here, there], T0).tickets[0], "gw")
    assert body["device"] == "th-200@2.4.0" and len(body["members"]) == 2
    assert any("Roll back firmware 2.4.0" in a for a in body["runbook"]["causes"][0]["actions"])


def test_a_new_root_cause_groups_by_its_table_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(alerts.ROOT_CAUSES, "stuck", causes.GroupRule(  # type: ignore[index]
        members_key="devices", same_sensor=False))
    root = replace(finding("gw-power", cause="stuck", sensor="supply"),
                   context={"devices": ["th-02"]})
    member = finding("th-02", cause="offset_drift", extra_causes=("stuck",))
    assert group_members([root, member]) == {StreamKey.of(member): StreamKey.of(root)}


def test_member_held_back_is_announced_once_its_root_is_gone() -> None:
    root = finding("ref-north", cause="reference_fault", members=["th-01"])
    member = finding("th-01", cause="reference_fault")
    alone = finding("th-01", cause="offset_drift")
    _, changes = audits(Snapshot(), [[root, member], [root, member], [alone], [alone]])
    tickets = [(t.alert.device, t.event) for c in changes for t in c.tickets]
    assert tickets == [("ref-north", "open"), ("th-01", "open")]
    assert changes[2].tickets[0].alert.device == "th-01"


def test_escalation_resolution_and_silence() -> None:
    s1 = [finding("th-01", severity="minor")]
    s2 = [finding("th-01", severity="critical")]
    ok = [finding("th-01", status="pass")]
    _, changes = audits(Snapshot(), [s1, s1, s2, s2, s1, ok, ok, ok, ok])
    events = [(t.event, t.idempotency_key.rsplit("/", 1)[1]) for c in changes for t in c.tickets]
    assert events == [("open", "open"), ("escalate", "escalate-critical"),
                      ("resolve", "resolve")]
    # Silenced from the start: tracked, no ticket, and nothing to resolve afterwards.
    hush = alerts.Silence(1, "th-*", None, T0 + 10 * HOUR, T0)
    _, changes = audits(Snapshot(silences=(hush,)), [s1, s1, s2, ok, ok, ok])
    assert [t for c in changes for t in c.tickets] == []
    assert [e for c in changes for _, e in c.events] == ["open", "escalate", "resolve"]
    # A silence that ends while the alert is still open: announced once, then.
    short = alerts.Silence(2, "th-01", "temperature", T0 + 2.5 * HOUR, T0)
    _, changes = audits(Snapshot(silences=(short,)), [s1, s1, s1, s1, s1])
    assert [(i, t.event) for i, c in enumerate(changes) for t in c.tickets] == [(3, "open")]


def test_metadata_anomaly_opens_once_it_persists_over_two_runs() -> None:
    """One policy for every kind (issue 18): an anomaly is saved once when it appears and
    once when it ends; the auditor hands the standing finding to the alerts at every run
    in between, and the alert opens once it has been seen in ``metadata_after`` runs. (It
    used to open at the first sighting: one stray message made a ticket, issue 21.)"""
    overdue = replace(finding("th-01", cause="calibration_overdue"), kind="metadata",
                      sensor=None)
    fixed = replace(finding("th-01", status="pass"), kind="metadata", sensor=None)
    policy = AlertPolicy(open_after=3, resolve_after=3)  # calibration's; metadata_after 2
    _, changes = audits(Snapshot(), [[overdue], [overdue], [overdue], [fixed]], policy=policy)
    assert [(i, t.alert.device, t.alert.sensor, t.event) for i, c in enumerate(changes)
            for t in c.tickets] == [(1, "th-01", None, "open"), (3, "th-01", None, "resolve")]
    assert any("Calibrate th-01" in a for a in ticket_payload(
        changes[1].tickets[0], "gw")["runbook"]["causes"][0]["actions"])
    # seen in one run only (one stray message), then gone: no alert, no ticket
    stray = replace(overdue, causes=(Cause("sensor_not_in_profile", 1.0, "sends co2"),))
    _, changes = audits(Snapshot(), [[stray], [fixed], [], []], policy=policy)
    assert [t for c in changes for t in c.tickets] == []
    assert [e for c in changes for _, e in c.events] == []
    # configurable: metadata_after = 1 is the old "at once"
    _, changes = audits(Snapshot(), [[stray]], policy=AlertPolicy(metadata_after=1))
    assert [t.event for c in changes for t in c.tickets] == ["open"]


def test_a_firmware_anomaly_with_a_drift_after_the_change_opens_at_once() -> None:
    """It matters: the device drifts after a firmware change and runs firmware its
    profile does not allow. The same anomaly beside a drift that no firmware change
    preceded waits for its second run."""
    rogue = replace(finding("th-01", cause="firmware_not_allowed"), kind="metadata",
                    sensor=None)
    drift = replace(finding("th-01", cause="offset_drift"),
                    context={"firmware_change": {"from": "1.0", "to": "9.9"}})
    _, changes = audits(Snapshot(), [[rogue, drift]])
    assert [(t.alert.kind, t.event) for c in changes for t in c.tickets] == [
        ("metadata", "open")]
    _, changes = audits(Snapshot(), [[rogue, finding("th-01", cause="offset_drift")]])
    assert [t for c in changes for t in c.tickets] == []


def test_ticket_payload_carries_the_runbook_and_the_keys() -> None:
    _, changes = audits(Snapshot(), [[finding("th-01", cause="unit_mismatch",
                                              extra_causes=("noise",))]] * 2)
    [request] = changes[1].tickets
    body = ticket_payload(request, "gw-1")
    assert body["ticket_id"] == request.alert.id
    assert body["idempotency_key"] == f"{request.alert.id}/open"
    assert [c["cause"] for c in body["runbook"]["causes"]] == ["unit_mismatch", "noise"]
    first = body["runbook"]["causes"][0]["actions"]
    assert first[0] == "Re-zero the sensor."  # the finding's own action leads
    assert any("do NOT recalibrate" in a for a in first)
    assert "1. Probable cause: unit_mismatch" in body["runbook"]["text"]
    json.dumps(body, allow_nan=False)


# --------------------------------------------------------------------------- store


def save_rounds(store: Store, rounds: list[list[Finding]], start: float,
                policy: AlertPolicy = DEFAULT_POLICY, sinks: tuple[str, ...] = ("file",)
                ) -> list[alerts.Changes]:
    out = []
    for i, round_ in enumerate(rounds):
        now = start + i * HOUR
        planner = AlertPlanner(decide=partial(plan, findings=round_, now=now,
                                              policy_for=lambda f: policy),
                               render=partial(ticket_payload, gateway="gw"), sinks=sinks,
                               mqtt_topic=lambda site: f"fleet/{site}/audit/gw/ticket")
        changes = store.findings.save(round_, [], now=now, alerts=planner)
        assert changes is not None
        out.append(changes)
    return out


def test_a_flapping_stream_over_a_day_of_audits_opens_at_most_one_alert(tmp_path: Path) -> None:
    flapping = [[finding("th-01", status="fail" if h % 2 == 0 else "pass")] for h in range(24)]
    # The same stream, already failing twice before it starts to flap.
    late = [[finding("th-02")], *[[finding("th-02", status="fail" if h % 2 else "pass")]
                                  for h in range(24)]]
    with Store(tmp_path / "a.db") as store:
        save_rounds(store, flapping, T0)
        save_rounds(store, [[finding("th-02")], *late], T0 + 2 * DAY)
        by_device: dict[str, int] = {}
        for alert in store.alerts.select(states=("open", "acknowledged", "resolved")):
            by_device[alert.device] = by_device.get(alert.device, 0) + 1
        assert by_device == {"th-02": 1}
        assert len(store.tickets.requests()) == 1
        assert store.summary().alerts_open == 1


def test_the_transaction_keeps_one_request_per_event_and_a_delivery_per_sink(
        tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        save_rounds(store, [[finding("th-01")]] * 3, T0, sinks=("webhook", "file"))
        [ticket] = store.tickets.requests()
        assert ticket.event == "open"
        assert store.tickets.counts() == {"webhook": {"pending": 1}, "file": {"pending": 1}}
        [outbox] = store.outbox.peek()
        assert outbox.topic == "fleet/north/audit/gw/ticket"
        assert json.loads(outbox.payload)["idempotency_key"] == ticket.idempotency_key


def test_acknowledged_alerts_stay_quiet_until_they_escalate(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        save_rounds(store, [[finding("th-01", severity="minor")]] * 2, T0)
        [alert] = store.alerts.select()
        assert store.alerts.acknowledge(alert.id, at=T0 + 2 * HOUR, by="ana")
        assert not store.alerts.acknowledge(alert.id, at=T0 + 2 * HOUR)  # already acknowledged
        save_rounds(store, [[finding("th-01", severity="minor")]] * 3, T0 + 3 * HOUR)
        assert [a.state for a in store.alerts.select()] == ["acknowledged"]
        assert len(store.tickets.requests()) == 1
        save_rounds(store, [[finding("th-01", severity="critical")]], T0 + 6 * HOUR)
        [again] = store.alerts.select()
        assert (again.id, again.state, again.peak) == (alert.id, "open", "critical")
        assert [t.event for t in store.tickets.requests()] == ["open", "escalate"]


def test_an_alert_shows_its_latest_findings_severity_and_says_what_it_peaked_at(
        tmp_path: Path) -> None:
    """One severity per finding: after a fault peaked at critical and came back to minor,
    the alert, its table row and a later ticket say minor, as the finding does; the table
    notes the peak instead of showing it as the severity."""
    from auditd.views import alerts as alert_view

    with Store(tmp_path / "a.db") as store:
        rounds = [[finding("th-01", severity=s)] for s in ("minor", "minor", "critical", "minor")]
        save_rounds(store, rounds, T0)
        [alert] = store.alerts.select()
        assert (alert.severity, alert.peak) == ("minor", "critical")
        assert alert.finding.severity == alert.severity
        text = alert_view.table([alert], [], T0 + 5 * HOUR)
        header, row = text.splitlines()[:2]
        cells = dict(zip(header.split()[:6], row.split()[:6], strict=True))
        assert cells["SEVERITY"] == "minor"
        assert "was critical" in row
        payloads = [t.payload for t in store.tickets.requests()]
        assert [(p["event"], p["severity"], p["finding"]["severity"]) for p in payloads] == [
            ("open", "minor", "minor"), ("escalate", "critical", "critical")]


def test_alerts_tickets_and_silences_come_back_from_the_store_as_they_went_in(
        tmp_path: Path) -> None:
    """The store keeps typed values: what an audit decided is what a later read returns,
    field for field (the finding inside an alert included)."""
    rounds = [[finding("th-01", severity="minor")]] * 2 + [[finding("th-01", severity="critical")]]
    rounds += [[finding("th-01", status="pass")]] * 3
    with Store(tmp_path / "a.db") as store:
        silence = store.alerts.add_silence("th-02*", None, T0 + DAY, at=T0, by="ana",
                                           reason="maintenance")
        changes = save_rounds(store, rounds, T0, sinks=("webhook",))
        last = {a.id: a for c in changes for a in c.alerts}
        stored = store.alerts.select(states=("open", "acknowledged", "resolved"))
        assert last and {a.id: a for a in stored} == last
        assert stored[0].finding == rounds[-1][0]
        requests = [t for c in changes for t in c.tickets]
        assert [(t.event, t.idempotency_key) for t in requests] == [
            (r.event, r.idempotency_key) for r in store.tickets.requests()]
        assert [t.payload for t in store.tickets.requests()] == [
            json.loads(json.dumps(ticket_payload(t, "gw"))) for t in requests]
        assert store.alerts.silences() == [
            Silence(silence, "th-02*", None, T0 + DAY, T0, "ana", "maintenance")]


# --------------------------------------------------------------------------- a real fault


FLEET = [f"th-north-{i:02d}" for i in range(1, 21)]


def reference_fault_store(path: Path) -> tuple[Store, Auditor]:
    """Twenty th-200s and their reference, which reads 1.5 degC high from noon on day 1."""
    rng = np.random.default_rng(11)
    ts = T0 + np.arange(1440 + 120) * 60.0 + 2.0
    weather = (8.0 + 5.0 * np.sin(2 * math.pi * (ts - T0) / DAY - 1.0)
               + np.cumsum(rng.normal(0.0, 0.03, ts.size)))
    streams = {"ref-north": weather + np.where(ts >= T0 + DAY / 2, 1.5, 0.0)}
    for device in FLEET:
        streams[device] = weather + rng.normal(0.0, 0.08, ts.size) + rng.uniform(-0.1, 0.1)
    readings = tuple(Reading("north", device, "temperature", "degC", float(t), float(v))
                     for device, values in streams.items()
                     for t, v in zip(ts, values, strict=True))
    ref = Reference(id="ref-north", site="north", serves=("th-north-*",),
                    sensors=("temperature",), model="ref-station", calibration_due=T0 + 400 * DAY)
    catalog = build_catalog(load_profiles(REPO / "device_profiles"), [ref],
                            {"th-north-*": "th-200"})
    store = Store(path)
    store.readings.write_outcomes([Outcome(readings=readings)])
    auditor = Auditor(store, catalog, TopicsConfig(), gateway="gw",
                      alerting=AlertSettings("gw", TopicsConfig(), ("file",), mqtt=True))
    return store, auditor


def test_a_reference_fault_over_twenty_devices_is_one_grouped_alert(tmp_path: Path) -> None:
    store, auditor = reference_fault_store(tmp_path / "audit.db")
    with store:
        for hour in range(2):
            auditor.run(T0 + DAY + hour * HOUR)
        top = store.alerts.select(include_members=False)
        assert [(a.device, a.cause) for a in top] == [("ref-north", "reference_fault")]
        assert sorted(top[0].members) == FLEET
        [ticket] = store.tickets.requests()
        assert ticket.payload["device"] == "ref-north"
        assert sorted(m["device"] for m in ticket.payload["members"]) == FLEET
        assert any("Recalibrate ref-north" in a
                   for a in ticket.payload["runbook"]["causes"][0]["actions"])
        assert store.summary().alerts_open == 1
    result = CliRunner().invoke(main, ["findings", "--store", str(tmp_path / "audit.db")])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("sa-")]
    assert len(rows) == 1 and "ref-north" in rows[0] and "20 devices" in rows[0]
    assert "th-north-17" in result.output  # members listed under their root
    as_json = json.loads(CliRunner().invoke(
        main, ["findings", "--json", "--store", str(tmp_path / "audit.db")]).output)
    assert [a["device"] for a in as_json] == ["ref-north"]
    assert sorted(m["device"] for m in as_json[0]["grouped"]) == FLEET


# --------------------------------------------------------------------------- configuration


def test_profiles_may_set_the_policy_and_need_not(tmp_path: Path) -> None:
    from auditd.adapters.config.catalog import load_profile
    from auditd.errors import ConfigError

    base = (REPO / "device_profiles" / "th-200.toml").read_text()
    assert load_profile(REPO / "device_profiles" / "th-200.toml").alerts == AlertPolicy()
    custom = tmp_path / "custom.toml"
    custom.write_text(base.replace('model = "th-200"', 'model = "th-custom"')
                      + "\n[alerts]\nopen_after = 4\nresolve_after = 6\nimpact = 1.5\n")
    assert load_profile(custom).alerts == AlertPolicy(4, 6, 1.5)
    custom.write_text(base + "\n[alerts]\nopen_afer = 4\n")
    with pytest.raises(ConfigError) as err:
        load_profile(custom)
    assert (err.value.file, err.value.key) == (str(custom), "alerts.open_afer")
    assert "did you mean 'open_after'" in err.value.problem
    custom.write_text(base + "\n[alerts]\nresolve_after = 0\n")
    with pytest.raises(ConfigError, match=re.escape("alerts.resolve_after: must be at least 1")):
        load_profile(custom)


def test_ticket_sinks_are_configured_and_typos_refused(tmp_path: Path) -> None:
    from auditd.adapters.config.daemon import load_daemon_config
    from auditd.errors import ConfigError

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text(
        '[tickets]\nmqtt = false\nmax_attempts = 5\nbackoff_min = "2s"\nbackoff_max = "1m"\n'
        '[tickets.webhook]\nurl = "https://tickets.example/api"\ntoken_file = "token"\n'
        'headers = {X-Source = "gw-1"}\n'
        '[tickets.command]\nargv = ["/usr/local/bin/open-ticket", "--queue", "sensors"]\n'
        '[tickets.file]\npath = "tickets.jsonl"\n')
    tickets = load_daemon_config(cfg_file).tickets
    assert (tickets.mqtt, tickets.max_attempts, tickets.backoff_min_s,
            tickets.backoff_max_s) == (False, 5, 2.0, 60.0)
    assert tickets.webhook is not None and tickets.webhook.token_file == str(token)
    assert tickets.sinks() == ("webhook", "command", "file")
    assert tickets.file == tmp_path / "tickets.jsonl"
    for text, key in [('[tickets]\nretries = 3\n', "tickets.retries"),
                      ('[tickets.webhook]\nurl = "ftp://x"\n', "tickets.webhook.url"),
                      ('[tickets.webhook]\nurl = "http://x"\nheaders = {Idempotency-Key = "a"}\n',
                       "tickets.webhook.headers"),
                      ('[tickets]\nbackoff_min = "1m"\nbackoff_max = "1s"\n',
                       "tickets.backoff_max")]:
        cfg_file.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_daemon_config(cfg_file)
        assert (err.value.file, err.value.key) == (str(cfg_file), key), err.value


def _pass(device: str, health: str = "confirmed") -> Finding:
    return replace(finding(device, status="pass"), context={alerts.HEALTH: health})


def test_a_wandering_drift_is_one_alert_marked_unconfirmed_between_failures() -> None:
    fail, doubtful, healthy = finding("th-01"), _pass("th-01", "unconfirmed"), _pass("th-01")
    rounds = [[fail], [fail], [doubtful], [doubtful], [doubtful], [fail], [doubtful],
              [doubtful], [doubtful], [healthy], [healthy], [healthy]]
    snapshot, changes = audits(Snapshot(), rounds)
    assert [(i, e) for i, c in enumerate(changes) for _, e in c.events] == [
        (1, "open"), (11, "resolve")]
    marks = [c.alerts[0].unconfirmed for c in changes[1:11]]
    assert marks == [False, True, True, True, False, True, True, True, False, False]
    [alert] = snapshot.alerts.values()
    assert alert.state == "resolved" and not alert.unconfirmed


def test_the_cause_follows_the_latest_evidence_without_flapping() -> None:
    """A slowly growing offset first read as gain becomes offset_drift once two failing
    audits in a row (``cause_after``) say so over a whole window of new data (3 h here);
    the change is kept in the alert's history and announced on the same ticket; two
    causes taking turns never move it."""
    gain, offset = (finding("th-01", cause=c, window_s=3 * HOUR)
                    for c in ("gain_drift", "offset_drift"))
    snapshot, changes = audits(Snapshot(), [[gain], [gain], [offset], [gain], [offset],
                                            [gain], [offset], [offset], [offset], [offset]])
    [alert] = snapshot.alerts.values()
    assert alert.cause == "offset_drift"
    assert [(c.before, c.after, c.at) for c in alert.history] == [
        ("gain_drift", "offset_drift", T0 + 9 * HOUR)]
    tickets = [t for c in changes for t in c.tickets]
    assert [(t.event, t.alert.cause) for t in tickets] == [
        ("open", "gain_drift"), ("cause", "offset_drift")]
    assert tickets[1].alert.id == tickets[0].alert.id  # the same ticket, updated
    assert tickets[1].idempotency_key == f"{alert.id}/cause-1"
    body = ticket_payload(tickets[1], "gw")
    assert body["cause"] == "offset_drift"
    assert body["cause_history"] == [{"at": "2025-11-25T09:00:00Z", "from": "gain_drift",
                                      "to": "offset_drift"}]


def test_a_cause_that_takes_turns_with_the_day_does_not_move_the_alert() -> None:
    """Hourly audits of a day's window: a unit named gain_drift by day and noise by night
    (runs of nine and fifteen audits) judges the same data 23 times out of 24, and its
    alert keeps the cause it opened with; a cause named for a whole day of new data is
    followed. Before the window counted, every run of two moved it (187 changes of cause
    in the EPA month)."""
    gain, noisy = (finding("th-01", cause=c) for c in ("gain_drift", "noise"))
    day_and_night = ([gain] * 9 + [noisy] * 15) * 3
    snapshot, _ = audits(Snapshot(), [[f] for f in day_and_night])
    [alert] = snapshot.alerts.values()
    assert (alert.cause, alert.history) == ("gain_drift", ())
    snapshot, _ = audits(Snapshot(), [[f] for f in [gain] * 3 + [noisy] * 25])
    [alert] = snapshot.alerts.values()
    assert [(c.before, c.after, c.at) for c in alert.history] == [
        ("gain_drift", "noise", T0 + 27 * HOUR)]


def test_findings_shows_the_cause_history_and_an_unconfirmed_alert() -> None:
    gain, offset = (finding("th-01", cause=c, window_s=HOUR)
                    for c in ("gain_drift", "offset_drift"))
    doubtful = _pass("th-01", "unconfirmed")
    snapshot, _ = audits(Snapshot(), [[gain], [gain], [offset], [offset], [doubtful]])
    shown = list(snapshot.alerts.values())
    text = table(shown, (), T0 + 5 * HOUR)
    assert "offset_drift (was gain_drift)" in text
    assert "unconfirmed" in text
    [view] = as_json(shown, (), T0 + 5 * HOUR)
    assert view["unconfirmed"] is True and view["cause"] == "offset_drift"
    assert [c["from"] for c in view["cause_history"]] == ["gain_drift"]


def test_before_an_alert_opens_a_doubtful_pass_holds_the_streak_only_leaning_to_the_fault(
        ) -> None:
    fail = finding("th-01")
    towards_fault = replace(_pass("th-01", "unconfirmed"),
                            context={alerts.HEALTH: "unconfirmed", alerts.LEANING: "fault"})
    towards_health = replace(towards_fault, context={alerts.HEALTH: "unconfirmed",
                                                     alerts.LEANING: "health"})
    _, changes = audits(Snapshot(), [[fail], [towards_fault], [fail]])
    assert [(i, e) for i, c in enumerate(changes) for _, e in c.events] == [(2, "open")]
    _, changes = audits(Snapshot(), [[fail], [towards_health], [fail]])
    assert [e for c in changes for _, e in c.events] == []


def test_the_cause_and_an_unconfirmed_wait_survive_the_store_between_audits(
        tmp_path: Path) -> None:
    """Through the real store: the candidate cause and its count are kept between audits
    (schemas 9 and 10), so the cause follows on the second audit naming it, four hours
    after the first (a 3-hour window); an acknowledged alert hears of the change too;
    unconfirmed passes keep it open; the history reads back."""
    gain, offset = (finding("th-01", cause=c, window_s=3 * HOUR)
                    for c in ("gain_drift", "offset_drift"))
    doubtful = _pass("th-01", "unconfirmed")
    with Store(tmp_path / "a.db") as store:
        save_rounds(store, [[gain], [gain]], T0)
        [alert] = store.alerts.select()
        assert store.alerts.acknowledge(alert.id, at=T0 + 2 * HOUR, by="ana")
        save_rounds(store, [[offset], [doubtful], [doubtful], [doubtful], [offset]],
                    T0 + 3 * HOUR)
        [again] = store.alerts.select()
        assert (again.id, again.state, again.cause) == (alert.id, "acknowledged",
                                                        "offset_drift")
        assert [(c.before, c.after, c.at) for c in again.history] == [
            ("gain_drift", "offset_drift", T0 + 7 * HOUR)]
        assert [t.event for t in store.tickets.requests()] == ["open", "cause"]
        assert store.tickets.requests()[1].payload["cause_history"][0]["to"] == "offset_drift"
