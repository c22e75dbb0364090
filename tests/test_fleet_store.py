"""The fleet's PostgreSQL store against a real PostgreSQL (a database per test): schema
migrations, the one write and its keys (a replayed message changes nothing, in any order),
all-or-nothing batches, and the errors a user sees for a bad DSN or a newer schema."""

from __future__ import annotations

import random
import socket
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from auditd.errors import DatabaseError, SchemaError, StoreError
from auditd.fleet.adapters.schema import SCHEMA_VERSION
from auditd.fleet.adapters.store import FleetStore
from auditd.fleet.records import (
    AuditReport,
    FleetFinding,
    GatewayStatus,
    Inventory,
    Origin,
    Rejected,
    ReplicaBeat,
    TicketEvent,
    Upstream,
)
from auditd.model import Cause, Finding

T0 = 1_764_028_800.0
DAY = 86_400.0
NORTH = Origin("north", "gw-north")
SOUTH = Origin("south", "gw-south")
TABLES = ("gateways", "findings", "findings_latest", "devices", "device_versions",
          "audit_reports", "tickets", "rejected")


def finding(device: str, end: float, *, site: str = "north", failed: bool = False,
            bias: float = 0.1) -> Finding:
    return Finding(kind="calibration", site=site, device=device, sensor="temperature",
                   status="fail" if failed else "pass",
                   severity="major" if failed else "none", window_start=end - DAY,
                   window_end=end, unit="degC", reference=f"ref-{site}",
                   metrics={"n": 1440, "bias": bias},
                   causes=(Cause("offset_drift", 0.9, "+1.2 degC"),) if failed else ())


def inventory(device: str, as_of: float, firmware: str = "2.3.1",
              origin: Origin = NORTH) -> Inventory:
    return Inventory(origin, device, as_of, model="th-200", firmware=firmware,
                     hardware_rev="B", last_seen=as_of, causes=())


def batch() -> list[Upstream]:
    return [
        FleetFinding(NORTH, finding("th-north-01", T0 + DAY, failed=True, bias=1.2)),
        FleetFinding(NORTH, finding("th-north-02", T0 + DAY)),
        FleetFinding(SOUTH, finding("th-south-01", T0 + DAY, site="south")),
        inventory("th-north-01", T0 + 100),
        inventory("th-north-01", T0 + 200, firmware="2.4.0"),
        inventory("th-south-01", T0 + 100, origin=SOUTH),
        GatewayStatus(NORTH, "online", T0),
        AuditReport(NORTH, T0 + DAY, 2, 1, 1, 0, {"kind": "audit_report"}),
        TicketEvent(NORTH, "alert-1", "alert-1/open", "open", T0 + DAY, "th-north-01",
                    "temperature", "offset_drift", "major", "open", T0 + DAY, None,
                    {"kind": "ticket"}),
        Rejected("fleet/north/audit/gw-north/report", "bad_json", "Expecting value",
                 b"{not json", T0),
    ]


def dump(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every fleet table, sorted: what "changes nothing" is checked against."""
    with psycopg.connect(dsn) as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in TABLES}


@pytest.fixture
def store(fleet_dsn: str) -> Any:
    with FleetStore.open(fleet_dsn) as s:
        yield s


def test_open_creates_the_schema_at_the_current_version(fleet_dsn: str) -> None:
    with FleetStore.open(fleet_dsn) as s:
        assert s.schema_version() == SCHEMA_VERSION
    with FleetStore.open(fleet_dsn) as s:  # a second start migrates nothing, loses nothing
        assert s.schema_version() == SCHEMA_VERSION


def test_a_newer_schema_is_refused_with_a_clear_error(fleet_dsn: str) -> None:
    FleetStore.open(fleet_dsn).close()
    with psycopg.connect(fleet_dsn) as conn:
        conn.execute("UPDATE fleet_schema SET version = version + 1")
    with pytest.raises(SchemaError) as caught:
        FleetStore.open(fleet_dsn)
    assert caught.value.exit_status == 2
    assert f"version {SCHEMA_VERSION + 1}" in str(caught.value)
    assert "upgrade sensor-auditd" in str(caught.value)


def test_an_unreachable_database_names_host_and_port() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DatabaseError) as caught:
        FleetStore.open(f"postgresql://postgres:secret@127.0.0.1:{port}/fleet")
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "secret" not in message
    assert caught.value.exit_status == 2


def test_a_batch_is_stored_and_a_replayed_batch_changes_nothing(
        store: FleetStore, fleet_dsn: str) -> None:
    first = store.write(batch())
    assert (first.findings, first.tickets, first.reports, first.rejected) == (3, 1, 1, 1)
    assert first.versions == 3  # th-north-01 on two firmwares, th-south-01
    before = dump(fleet_dsn)
    again = store.write(batch())
    assert again.total == 0
    assert dump(fleet_dsn) == before


def test_the_order_of_arrival_does_not_matter(fleet_dsn: str) -> None:
    """Replicas commit in any order: one record per batch, shuffled, must end where one
    batch in order ends."""
    with scratch_twin(fleet_dsn) as other:
        with FleetStore.open(fleet_dsn) as s:
            s.write(batch())
        records = batch()
        random.Random(3).shuffle(records)
        with FleetStore.open(other) as s:
            for record in records:
                s.write([record])
        assert dump(other) == dump(fleet_dsn)


def test_old_findings_in_a_batch_of_new_ones_are_stored_and_counted_once(
        store: FleetStore, fleet_dsn: str) -> None:
    """A finding already stored, redelivered among new ones (a replica's redelivery, an
    import run again after more audits), is neither stored again nor added again to its
    stream's drift sums; the new ones are."""
    old = FleetFinding(NORTH, finding("th-north-01", T0 + DAY, bias=0.1))
    new = [FleetFinding(NORTH, finding("th-north-01", T0 + k * DAY, bias=0.1 * k))
           for k in (2, 3)]
    assert store.write([old]).findings == 1
    assert store.write([new[0], old, new[1]]).findings == 2
    assert store.write([old, *new]).findings == 0
    with psycopg.connect(fleet_dsn) as conn:
        row = conn.execute("SELECT n, sy FROM stream_drift").fetchall()
        stored = conn.execute("SELECT count(*) FROM findings").fetchone()
    assert len(row) == 1 and row[0][0] == 3 and row[0][1] == pytest.approx(0.6)
    assert stored == (3,)


def test_a_batch_staged_ahead_is_stored_as_the_records_themselves(fleet_dsn: str) -> None:
    """``fleet import`` formats its batches ahead (``FleetStore.stage``): the rows must be
    the ones ``write`` makes of the records."""
    with scratch_twin(fleet_dsn) as other:
        with FleetStore.open(fleet_dsn) as s:
            direct = s.write(batch())
        with FleetStore.open(other) as s:
            staged = s.write(s.stage(batch()))
            assert s.write(s.stage(batch())).total == 0
        assert staged == direct
        assert dump(other) == dump(fleet_dsn)


def scratch_twin(dsn: str) -> Any:
    from postgres import scratch_database
    return scratch_database("fleet_twin")


def test_what_is_current_is_the_newest_not_the_last_written(
        store: FleetStore, fleet_dsn: str) -> None:
    store.write([FleetFinding(NORTH, finding("th-north-01", T0 + 2 * DAY, failed=True)),
                 inventory("th-north-01", T0 + 500, firmware="2.4.0")])
    store.write([FleetFinding(NORTH, finding("th-north-01", T0 + DAY)),
                 inventory("th-north-01", T0 + 100, firmware="2.3.1")])
    with psycopg.connect(fleet_dsn) as conn:
        latest = conn.execute("SELECT window_end, status FROM findings_latest").fetchall()
        device = conn.execute("SELECT firmware FROM devices").fetchall()
        versions = conn.execute("SELECT firmware, first_seen FROM device_versions "
                                "ORDER BY first_seen").fetchall()
        history = conn.execute("SELECT count(*) FROM findings").fetchone()
    assert latest == [(T0 + 2 * DAY, "fail")]
    assert device == [("2.4.0",)]
    assert versions == [("2.3.1", T0 + 100), ("2.4.0", T0 + 500)]
    assert history == (2,)


def test_a_version_keeps_the_time_it_was_first_seen(store: FleetStore, fleet_dsn: str) -> None:
    store.write([inventory("th-north-01", T0 + 900, firmware="2.4.0")])
    store.write([inventory("th-north-01", T0 + 300, firmware="2.4.0")])  # late, earlier
    store.write([inventory("th-north-01", T0 + 1200, firmware="2.4.0")])
    with psycopg.connect(fleet_dsn) as conn:
        assert conn.execute("SELECT first_seen FROM device_versions").fetchall() == [
            (T0 + 300,)]
        assert conn.execute("SELECT as_of FROM devices").fetchall() == [(T0 + 1200,)]


def test_a_late_status_does_not_undo_a_newer_one(store: FleetStore, fleet_dsn: str) -> None:
    store.write([GatewayStatus(NORTH, "offline", T0 + 600)])
    store.write([GatewayStatus(NORTH, "online", T0 + 60)])  # delivered late
    store.write([GatewayStatus(NORTH, "offline", T0 + 900)])  # the will again: no change
    with psycopg.connect(fleet_dsn) as conn:
        assert conn.execute("SELECT state, state_at, last_heard FROM gateways").fetchall() \
            == [("offline", T0 + 600, T0 + 900)]
    store.write([GatewayStatus(NORTH, "online", T0 + 1000)])
    with psycopg.connect(fleet_dsn) as conn:
        assert conn.execute("SELECT state, state_at FROM gateways").fetchall() == [
            ("online", T0 + 1000)]


def test_a_batch_the_database_refuses_is_stored_not_at_all(
        store: FleetStore, fleet_dsn: str) -> None:
    bad = replace(inventory("th-north-09", T0), model="th\x00200")  # text cannot hold NUL
    with pytest.raises(StoreError) as caught:
        store.write([*batch(), bad])
    assert caught.value.transient is False  # the data's fault: isolate it, do not retry
    assert all(rows == [] for rows in dump(fleet_dsn).values())
    assert store.write(batch()).findings == 3  # the connection is usable afterwards


def test_replica_heartbeats_are_one_row_per_replica(store: FleetStore, fleet_dsn: str) -> None:
    beat = ReplicaBeat("r1", "host-a", 100, "fleet", T0, T0 + 5, 10, 2)
    store.heartbeat(beat)
    store.heartbeat(replace(beat, at=T0 + 10, messages=25, backlog=0))
    store.heartbeat(ReplicaBeat("r2", "host-b", 200, "fleet", T0, T0 + 7, 3, 1))
    with psycopg.connect(fleet_dsn) as conn:
        rows = conn.execute("SELECT replica, heartbeat_at, messages, backlog FROM replicas "
                            "ORDER BY replica").fetchall()
    assert rows == [("r1", T0 + 10, 25, 0), ("r2", T0 + 7, 3, 1)]


def test_drift_sums_give_each_streams_slope_once_however_often_it_is_written(
        store: FleetStore) -> None:
    """Bias rising 0.1 a day over ten daily audits (with a wobble): the slope and its
    error from the sums kept at write time, unchanged by replaying some findings, and
    without the findings that blame the reference."""
    from auditd.fleet.adapters.store import read_facts

    wobble = [0.02, -0.01, 0.0, 0.015, -0.02, 0.01, -0.005, 0.0, 0.01, -0.015]
    history = [FleetFinding(NORTH, finding("th-north-01", T0 + k * DAY,
                                           bias=0.5 + 0.1 * k + wobble[k]))
               for k in range(10)]
    blamed = FleetFinding(NORTH, replace(
        finding("th-north-01", T0 + 11 * DAY, failed=True, bias=9.0),
        causes=(Cause("reference_fault", 0.9, "the reference moved"),)))
    store.write(history[:6])
    store.write([*history[3:], blamed])  # three again, four new, one the reference's
    (drift,) = read_facts(store, T0 + 12 * DAY, {}).drifts
    days = [k + 0.5 for k in range(10)]  # window midpoints, days from T0
    mean_x = sum(days) / 10
    sxx = sum((x - mean_x) ** 2 for x in days)
    biases = [0.5 + 0.1 * k + wobble[k] for k in range(10)]
    mean_y = sum(biases) / 10
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(days, biases, strict=True)) / sxx
    assert drift.audits == 10
    assert drift.span_s == pytest.approx(9 * DAY)
    assert drift.slope_per_s * DAY == pytest.approx(slope, rel=1e-9)
    residuals = [y - mean_y - slope * (x - mean_x) for x, y in zip(days, biases, strict=True)]
    se = (sum(r * r for r in residuals) / 8 / sxx) ** 0.5
    assert drift.slope_se_per_s * DAY == pytest.approx(se, rel=1e-6)
