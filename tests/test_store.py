"""The SQLite adapter against real database files (never mocks).

What matters most here is what the rest of the daemon relies on without checking:
redelivery never duplicates, a failed batch leaves nothing behind, and reads are exact
about time bounds and nulls.
"""

from __future__ import annotations

import math
import os
import sqlite3
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from auditd.adapters.config.daemon import StoreConfig
from auditd.adapters.store import Store
from auditd.adapters.store import database as store_mod
from auditd.adapters.store.findings import last_passing_sql
from auditd.adapters.store.outbox import OutboxMessage
from auditd.adapters.store.readings import WriteResult
from auditd.adapters.store.schema import SCHEMA_VERSION
from auditd.app.daemon import apply_retention
from auditd.errors import StoreError
from auditd.model import (
    Cause,
    EventRecord,
    Finding,
    MetaRecord,
    Outcome,
    Reading,
    Rejection,
)

T0 = 1_764_064_800.0  # 2025-11-25T10:00:00Z


# --------------------------------------------------------------------------- helpers


def reading(
    ts: float,
    value: float | None = 1.0,
    *,
    device: str = "th-0001",
    sensor: str = "temperature",
    site: str = "north",
    seq: int | None = None,
) -> Reading:
    return Reading(site=site, device=device, sensor=sensor, unit="degC", ts=ts, value=value,
                   seq=seq)


def readings_outcome(*readings: Reading) -> Outcome:
    return Outcome(readings=tuple(readings))


def meta(data: Mapping[str, Any], *, received_at: float, device: str = "th-0001") -> Outcome:
    return Outcome(meta=MetaRecord(site="north", device=device, ts=received_at,
                                   received_at=received_at, data=data))


def event(type_: str, ts: float, *, received_at: float, device: str = "th-0001",
          **data: object) -> Outcome:
    return Outcome(event=EventRecord(site="north", device=device, ts=ts, received_at=received_at,
                                     type=type_, data={"ts": ts, "type": type_, **data}))


def rejection(reason: str, received_at: float = T0) -> Rejection:
    return Rejection(topic="fleet/north/th-0001/telemetry", reason=reason, detail="why",
                     payload=b"{not json", received_at=received_at, device="th-0001")


def finding(device: str = "th-0001", sensor: str | None = "temperature", *,
            kind: str = "calibration", status: str = "pass") -> Finding:
    return Finding(kind=kind, site="north", device=device, sensor=sensor,  # type: ignore[arg-type]
                   status=status, severity="none", window_start=T0,  # type: ignore[arg-type]
                   window_end=T0 + 86400, unit="degC", reference="ref-north",
                   metrics={"n": 10, "bias": 0.1},
                   causes=(Cause("offset_drift", 0.5, "mean difference"),))


def table_counts(path: Path) -> dict[str, int]:
    """Row counts straight from the file, through a connection the store does not own."""
    conn = sqlite3.connect(path)
    try:
        db = Database(conn, recursive_triggers=False, execute_plugins=False)
        return {name: db.table(name).count for name in db.table_names()}
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "audit.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store(db_path, clock=lambda: T0) as s:
        yield s


# --------------------------------------------------------------------------- opening


def test_creates_missing_state_dir_private(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "audit.db"
    with Store(path):
        pass
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.exists()


def test_existing_state_dir_keeps_its_mode(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    os.chmod(state, 0o750)
    with Store(state / "audit.db"):
        pass
    assert stat.S_IMODE(state.stat().st_mode) == 0o750


def test_state_dir_that_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="state directory"):
        Store(blocker / "audit.db")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write to any directory")
def test_unwritable_state_dir_is_a_clear_store_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o500)
    try:
        with pytest.raises(StoreError, match="not writable"):
            Store(state / "audit.db")
    finally:
        os.chmod(state, 0o700)


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    path.write_bytes(b"this is not an SQLite database, just some text " * 100)
    with pytest.raises(StoreError, match=str(path)):
        Store(path)


def test_invalid_synchronous_is_refused(db_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        Store(db_path, synchronous="sometimes")


@pytest.mark.parametrize(("mode", "level"), [("full", 2), ("normal", 1), ("FULL", 2)])
def test_pragmas_of_the_writer(db_path: Path, mode: str, level: int) -> None:
    with Store(db_path, synchronous=mode) as s:
        w = s._db._writer
        assert w.execute("PRAGMA synchronous").fetchone()[0] == level
        assert w.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert w.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert w.execute("PRAGMA busy_timeout").fetchone()[0] > 0


# --------------------------------------------------------------------------- migrations


def test_migrates_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    path.touch()  # zero bytes: what a pre-created file looks like
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    db = Database(conn, recursive_triggers=False, execute_plugins=False)
    assert {"streams", "readings", "quarantine", "meta_versions", "events", "findings",
            "outbox", "counters"} <= set(db.table_names())
    assert db.table("readings").pks == ["stream_id", "ts_ms"]
    assert "WITHOUT ROWID" in (db.table("readings").schema or "")
    assert any(i.columns == ["reason"] for i in db.table("quarantine").indexes)
    assert any(i.columns == ["device", "sensor", "created_at"]
               for i in db.table("findings").indexes)
    assert "AUTOINCREMENT" in (db.table("outbox").schema or "")
    conn.close()


def test_reopen_keeps_data_and_stream_ids(db_path: Path) -> None:
    with Store(db_path) as s:
        s.readings.write_outcomes([readings_outcome(reading(T0, 1.0))])
        first_id = s.readings.streams()[0].id
    with Store(db_path) as s:
        assert s.schema_version == SCHEMA_VERSION
        result = s.readings.write_outcomes(
            [readings_outcome(reading(T0, 1.0), reading(T0 + 60, 2.0))])
        assert (result.readings_inserted, result.readings_duplicate) == (1, 1)
        [info] = s.readings.streams()
        assert (info.id, info.count) == (first_id, 2)
        assert s.counters.all()["messages"] == 2


def test_later_migrations_run_in_order_from_the_stored_version(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(db_path) as s:
        s.readings.write_outcomes([readings_outcome(reading(T0, 1.0))])
    applied: list[int] = []
    shipped = len(store_mod.MIGRATIONS)

    def migration_a(conn: sqlite3.Connection) -> None:
        applied.append(shipped + 1)
        conn.execute("ALTER TABLE streams ADD COLUMN note TEXT")

    def migration_b(conn: sqlite3.Connection) -> None:
        applied.append(shipped + 2)
        conn.execute("UPDATE streams SET note = 'migrated'")

    monkeypatch.setattr(store_mod, "MIGRATIONS", (*store_mod.MIGRATIONS, migration_a, migration_b))
    with Store(db_path) as s:
        assert s.schema_version == shipped + 2
        assert s.readings.streams()[0].count == 1
    with Store(db_path):
        pass  # nothing left to apply
    assert applied == [shipped + 1, shipped + 2]
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT note FROM streams").fetchall() == [("migrated",)]
    conn.close()


def test_failed_migration_leaves_the_previous_version(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(db_path):
        pass

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE streams ADD COLUMN half_done TEXT")
        conn.execute("THIS IS NOT SQL")

    monkeypatch.setattr(store_mod, "MIGRATIONS", (*store_mod.MIGRATIONS, broken))
    with pytest.raises(StoreError, match=f"migration to schema version {SCHEMA_VERSION + 1}"):
        Store(db_path)
    monkeypatch.undo()
    with Store(db_path) as s:
        assert s.schema_version == SCHEMA_VERSION
        cols = [row[1] for row in s._db._writer.execute("PRAGMA table_info(streams)")]
        assert "half_done" not in cols


def test_a_finding_saved_before_schema_5_comes_back_as_published(db_path: Path) -> None:
    """Rows from before the exact column hold only the published JSON (times to the
    millisecond, confidences to three decimals): they are read as that JSON says."""
    odd = replace(finding(), window_start=T0 + 0.0004, causes=(Cause("offset_drift", 0.12345,
                                                                     "mean difference"),))
    with Store(db_path) as s:
        s.findings.save([odd], [], now=T0)
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE findings SET exact = NULL")
    conn.close()
    with Store(db_path) as s:
        [stored] = s.findings.latest()
    assert stored.finding == Finding.from_json(odd.to_json()) != odd
    assert stored.finding.causes[0].confidence == 0.123


def test_newer_schema_is_refused(db_path: Path) -> None:
    with Store(db_path):
        pass
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(db_path)


# --------------------------------------------------------------------------- readings


def test_redelivered_readings_do_not_duplicate(store: Store) -> None:
    batch = [readings_outcome(reading(T0 + i * 60, float(i), seq=i)) for i in range(10)]
    first = store.readings.write_outcomes(batch)
    again = store.readings.write_outcomes(batch)
    assert (first.readings_inserted, first.readings_duplicate) == (10, 0)
    assert (again.readings_inserted, again.readings_duplicate) == (0, 10)
    [info] = store.readings.streams()
    assert info.count == 10
    assert (info.first_ts, info.last_ts) == (T0, T0 + 540)


def test_redelivery_keeps_the_first_value(store: Store) -> None:
    store.readings.write_outcomes([readings_outcome(reading(T0, 1.0))])
    store.readings.write_outcomes([readings_outcome(reading(T0, 99.0))])
    _, values = store.readings.read_window("north", "th-0001", "temperature", T0, T0 + 1)
    assert values.tolist() == [1.0]


def test_timestamps_are_kept_to_the_millisecond(store: Store) -> None:
    # 0.0004 s apart round to the same millisecond: the same reading, redelivered.
    result = store.readings.write_outcomes([readings_outcome(
        reading(T0 + 0.1234), reading(T0 + 0.1238), reading(T0 + 0.1236))])
    assert (result.readings_inserted, result.readings_duplicate) == (2, 1)
    ts, _ = store.readings.read_window("north", "th-0001", "temperature", T0, T0 + 1)
    assert ts.tolist() == [T0 + 0.123, T0 + 0.124]


def test_nulls_are_counted_and_read_back_as_nan(store: Store) -> None:
    result = store.readings.write_outcomes([
        readings_outcome(reading(T0, None), reading(T0 + 60, 2.0), reading(T0 + 120, math.nan))
    ])
    assert (result.readings_inserted, result.nulls) == (3, 2)
    ts, values = store.readings.read_window("north", "th-0001", "temperature", T0, T0 + 3600)
    assert ts.dtype == values.dtype == np.float64
    assert np.isnan(values[0]) and values[1] == 2.0 and np.isnan(values[2])
    assert store.counters.all()["readings_null"] == 2


def test_read_window_sorts_and_applies_half_open_bounds(store: Store) -> None:
    times = [T0 + 300, T0, T0 + 120, T0 + 60, T0 + 240, T0 + 180]
    store.readings.write_outcomes([readings_outcome(*[reading(t, t - T0) for t in times])])
    ts, values = store.readings.read_window("north", "th-0001", "temperature", T0 + 60, T0 + 240)
    assert ts.tolist() == [T0 + 60, T0 + 120, T0 + 180]  # start included, end excluded
    assert values.tolist() == [60.0, 120.0, 180.0]
    everything, _ = store.readings.read_window("north", "th-0001", "temperature",
                                               -math.inf, math.inf)
    assert everything.tolist() == sorted(times)


def test_read_window_of_unknown_stream_or_empty_range(store: Store) -> None:
    store.readings.write_outcomes([readings_outcome(reading(T0))])
    for args in [("north", "th-9999", "temperature", T0 - 1, T0 + 1),
                 ("south", "th-0001", "temperature", T0 - 1, T0 + 1),
                 ("north", "th-0001", "temperature", T0 + 1, T0 - 1),
                 ("north", "th-0001", "temperature", T0 + 1, T0 + 2)]:
        ts, values = store.readings.read_window(*args)
        assert ts.shape == values.shape == (0,)
        assert ts.dtype == np.float64


def test_read_window_sees_streams_written_by_another_store(db_path: Path) -> None:
    with Store(db_path) as reader_store, Store(db_path) as writer_store:
        writer_store.readings.write_outcomes([readings_outcome(reading(T0, 5.0))])
        _, values = reader_store.readings.read_window("north", "th-0001", "temperature", T0, T0 + 1)
        assert values.tolist() == [5.0]


def test_streams_reports_span_and_count_per_stream(store: Store) -> None:
    store.readings.write_outcomes([
        readings_outcome(reading(T0, sensor="temperature"), reading(T0, sensor="humidity")),
        readings_outcome(reading(T0 + 60, sensor="temperature"), reading(T0 + 60, device="b")),
    ])
    infos = {(i.device, i.sensor): i for i in store.readings.streams()}
    assert set(infos) == {("th-0001", "temperature"), ("th-0001", "humidity"), ("b", "temperature")}
    temp = infos[("th-0001", "temperature")]
    assert (temp.count, temp.first_ts, temp.last_ts, temp.unit) == (2, T0, T0 + 60, "degC")
    assert infos[("th-0001", "humidity")].count == 1


ts_ms = st.integers(min_value=0, max_value=3_000)
batch_strategy = st.lists(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["t", "h"]), ts_ms,
                       st.one_of(st.none(), st.floats(-1e6, 1e6))),
             max_size=30),
    min_size=1, max_size=4,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batch_strategy)
def test_any_batches_with_duplicates_store_each_key_once(
    batches: list[list[tuple[str, str, int, float | None]]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "a.db",
                                                     synchronous="off") as s:
        seen: dict[tuple[str, str, int], float | None] = {}
        for batch in batches:
            outcomes = [readings_outcome(reading(T0 + ms / 1000, v, device=d, sensor=n))
                        for d, n, ms, v in batch]
            result = s.readings.write_outcomes(outcomes)
            new: dict[tuple[str, str, int], float | None] = {}
            same = conflicting = 0
            for d, n, ms, v in batch:
                key = (d, n, ms)
                if key not in seen and key not in new:
                    new[key] = v
                elif {**seen, **new}[key] == v:
                    same += 1  # a redelivery: counted, stored once
                else:
                    conflicting += 1  # another value for a stored key: quarantined
            assert result.readings_inserted == len(new)
            assert result.readings_duplicate == same
            assert dict(result.rejected) == ({"duplicate_conflict": conflicting}
                                             if conflicting else {})
            seen.update(new)
        assert sum(i.count for i in s.readings.streams()) == len(seen)
        for info in s.readings.streams():
            expected = sorted((ms, v) for (d, n, ms), v in seen.items()
                              if (d, n) == (info.device, info.sensor))
            ts, values = s.readings.read_window("north", info.device, info.sensor, T0, T0 + 10)
            assert ts.tolist() == [T0 + ms / 1000 for ms, _ in expected]
            assert [None if math.isnan(x) else x for x in values.tolist()] == [
                v for _, v in expected]
            assert (info.first_ts, info.last_ts) == (ts[0], ts[-1])


@settings(max_examples=60, deadline=None)
@given(stamps=st.lists(st.floats(T0 - 10, T0 + 10, allow_nan=False), min_size=1, max_size=40),
       lo=st.floats(T0 - 11, T0 + 11, allow_nan=False),
       width=st.floats(0, 25, allow_nan=False))
def test_read_window_bounds_are_exact_at_millisecond_edges(
    stamps: list[float], lo: float, width: float
) -> None:
    # Bounds drawn close to stored timestamps are where ceil(t * 1000) would go wrong.
    hi = lo + width
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "a.db",
                                                     synchronous="off") as s:
        s.readings.write_outcomes([readings_outcome(*[reading(t) for t in stamps])])
        stored = sorted({round(t * 1000) / 1000 for t in stamps})
        for start, end in [(lo, hi), (stored[0], stored[-1]), (stored[0], math.nextafter(
                stored[-1], math.inf))]:
            ts, _ = s.readings.read_window("north", "th-0001", "temperature", start, end)
            assert ts.tolist() == [t for t in stored if start <= t < end]


# --------------------------------------------------------------------------- quarantine


def test_rejections_are_quarantined_and_counted(store: Store) -> None:
    result = store.readings.write_outcomes([
        Outcome(rejections=(rejection("bad_json"),)),
        Outcome(readings=(reading(T0),), rejections=(rejection("unit_mismatch"),
                                                     rejection("bad_json"))),
    ])
    assert dict(result.rejected) == {"bad_json": 2, "unit_mismatch": 1}
    assert store.counters.rejections() == {"bad_json": 2, "unit_mismatch": 1}
    [latest] = store.quarantine.recent(reason="unit_mismatch")
    assert latest.payload == b"{not json" and latest.device == "th-0001"
    # The same device and reason within a minute: one row, the first payload, a count.
    assert sorted((q.reason, q.count) for q in store.quarantine.recent()) == [
        ("bad_json", 2), ("unit_mismatch", 1)]
    assert store.counters.all()["readings_rejected"] == 3


def test_purge_quarantine_in_chunks_keeps_the_totals(store: Store) -> None:
    store.readings.write_outcomes([Outcome(rejections=tuple(rejection("bad_json", T0 + 60 * i)
                                                            for i in range(25)))])
    assert store.quarantine.purge(T0 + 60 * 20, chunk=7) == 20
    assert len(store.quarantine.recent(limit=100)) == 5
    assert store.counters.rejections() == {"bad_json": 25}


# --------------------------------------------------------------------------- meta, events


def test_retained_meta_redelivered_is_not_a_new_version(store: Store) -> None:
    data = {"ts": "2026-11-24T10:00:00Z", "model": "th-200", "firmware": "2.3.1",
            "location": {"lat": 45.1, "lon": 7.6}}
    first = store.readings.write_outcomes([meta(data, received_at=T0)])
    # Reconnect: the broker re-sends the retained message; keys in another order, new ts.
    reordered = {"location": {"lon": 7.6, "lat": 45.1}, "firmware": "2.3.1", "model": "th-200",
                 "ts": "2026-11-25T10:00:00Z"}
    again = store.readings.write_outcomes([meta(reordered, received_at=T0 + 3600)])
    assert (first.meta_versions_added, again.meta_versions_added) == (1, 0)
    [version] = store.devices.meta_history("th-0001")
    assert (version.first_seen, version.last_seen) == (T0, T0 + 3600)
    assert store.devices.latest_meta()["th-0001"].data["firmware"] == "2.3.1"


def test_a_changed_key_is_a_new_version(store: Store) -> None:
    base = {"model": "th-200", "firmware": "2.3.1"}
    store.readings.write_outcomes([meta(base, received_at=T0)])
    store.readings.write_outcomes([meta({**base, "firmware": "2.4.0"}, received_at=T0 + 60)])
    store.readings.write_outcomes([meta({**base, "firmware": "2.4.0"}, received_at=T0 + 120)])
    store.readings.write_outcomes([meta(base, received_at=T0 + 180)])  # a downgrade is history too
    history = store.devices.meta_history("th-0001")
    assert [v.data["firmware"] for v in history] == ["2.3.1", "2.4.0", "2.3.1"]
    assert [v.first_seen for v in history] == [T0, T0 + 60, T0 + 180]
    latest = store.devices.latest_meta()["th-0001"]
    assert (latest.data["firmware"], latest.site, latest.first_seen) == ("2.3.1", "north",
                                                                         T0 + 180)
    assert store.devices.meta_history("nobody") == []


def test_meta_of_several_devices_in_one_batch(store: Store) -> None:
    result = store.readings.write_outcomes([
        meta({"model": "a"}, received_at=T0, device="d1"),
        meta({"model": "b"}, received_at=T0, device="d2"),
        meta({"model": "a"}, received_at=T0 + 1, device="d1"),
        meta({"model": "c"}, received_at=T0 + 2, device="d1"),
    ])
    assert result.meta_versions_added == 3
    assert {d: m.model for d, m in store.devices.latest_meta().items()} == {"d1": "c", "d2": "b"}


def test_events_are_idempotent_and_filterable(store: Store) -> None:
    fw = event("firmware_update", T0, received_at=T0 + 1, **{"from": "2.3.1", "to": "2.4.0"})
    first = store.readings.write_outcomes([fw, fw])
    redelivered = event("firmware_update", T0, received_at=T0 + 99,
                        **{"from": "2.3.1", "to": "2.4.0"})
    again = store.readings.write_outcomes([redelivered])
    other = store.readings.write_outcomes([
        event("cleaning", T0 + 3600, received_at=T0 + 3600),
        event("cleaning", T0 + 7200, received_at=T0 + 7200, device="th-0002"),
    ])
    assert (first.events_added, again.events_added, other.events_added) == (1, 0, 2)
    assert [e.type for e in store.devices.events()] == ["firmware_update", "cleaning", "cleaning"]
    assert [e.ts for e in store.devices.events(device="th-0001", since=T0 + 1)] == [T0 + 3600]
    [fw_back] = store.devices.events(device="th-0001", since=T0 - 1)[:1]
    assert fw_back.data["to"] == "2.4.0" and fw_back.received_at == T0 + 1


# --------------------------------------------------------------------------- atomicity


def full_batch(n_devices: int = 40) -> list[Outcome]:
    """Enough new streams and rows to need many new pages, plus every other kind."""
    outcomes = [readings_outcome(*[reading(T0 + j, float(j), device=f"new-{i}")
                                   for j in range(100)]) for i in range(n_devices)]
    outcomes.append(Outcome(rejections=(rejection("bad_json"),)))
    outcomes.append(meta({"model": "th-200"}, received_at=T0, device="new-0"))
    outcomes.append(event("maintenance", T0, received_at=T0, device="new-0"))
    return outcomes


def test_disk_full_mid_batch_leaves_nothing_and_recovers(store: Store, db_path: Path) -> None:
    store.readings.write_outcomes(
        [readings_outcome(reading(T0)), meta({"model": "x"}, received_at=T0)])
    before = table_counts(db_path)
    counters_before = store.counters.all()
    pages = store._db._writer.execute("PRAGMA page_count").fetchone()[0]
    store._db._writer.execute(f"PRAGMA max_page_count = {pages + 2}")  # a nearly full disk

    with pytest.raises(StoreError, match="SQLITE_FULL"):
        store.readings.write_outcomes(full_batch())
    assert table_counts(db_path) == before
    assert store.counters.all() == counters_before
    assert [s.device for s in store.readings.streams()] == ["th-0001"]

    store._db._writer.execute("PRAGMA max_page_count = 1073741823")  # space freed
    result = store.readings.write_outcomes(full_batch())  # the caller's retry of the same batch
    assert (result.readings_inserted, result.meta_versions_added, result.events_added) == (
        4000, 1, 1)
    assert len(store.readings.streams()) == 41
    _, values = store.readings.read_window("north", "new-39", "temperature", T0, T0 + 100)
    assert values.tolist() == [float(j) for j in range(100)]


def test_read_only_database_is_a_store_error_and_recovers(store: Store, db_path: Path) -> None:
    before = table_counts(db_path)
    store._db._writer.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreError, match="readonly"):
        store.readings.write_outcomes(full_batch(2))
    assert table_counts(db_path) == before
    store._db._writer.execute("PRAGMA query_only = OFF")
    assert store.readings.write_outcomes(full_batch(2)).readings_inserted == 200


def test_locked_database_is_a_store_error(db_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_MS", 50)
    with Store(db_path) as s:
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(StoreError, match="locked"):
                s.readings.write_outcomes([readings_outcome(reading(T0))])
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert s.readings.write_outcomes([readings_outcome(reading(T0))]).readings_inserted == 1


def test_non_sqlite_errors_roll_back_and_propagate(store: Store, db_path: Path) -> None:
    before = table_counts(db_path)
    bad = Outcome(readings=(reading(T0), reading(math.inf)))  # a bug upstream
    with pytest.raises(OverflowError):
        store.readings.write_outcomes([bad])
    assert table_counts(db_path) == before
    assert store.readings.streams() == []
    assert store.readings.write_outcomes([readings_outcome(reading(T0))]).readings_inserted == 1


def test_counters_commit_with_the_batch(store: Store) -> None:
    store.readings.write_outcomes([readings_outcome(reading(T0), reading(T0 + 1, None))],
                                  counters={"batches": 1})
    store.readings.write_outcomes([readings_outcome(reading(T0))], counters={"batches": 1})
    store.counters.add(reconnects=2, **{"custom.name": 5})
    counters = store.counters.all()
    assert counters["batches"] == 2
    assert counters["messages"] == 2
    assert counters["readings_inserted"] == 2
    assert counters["readings_duplicate"] == 1
    assert counters["readings_null"] == 1
    assert (counters["reconnects"], counters["custom.name"]) == (2, 5)


def test_empty_batch_is_harmless(store: Store) -> None:
    assert store.readings.write_outcomes([]) == WriteResult()


# --------------------------------------------------------------------------- findings, outbox


def test_save_findings_and_outbox_then_drain_in_order(store: Store) -> None:
    messages = [OutboxMessage(f"fleet/north/audit/gw/finding/th-0001/s{i}", f"{i}".encode(),
                              retain=True) for i in range(5)]
    store.findings.save([finding()], messages[:3])
    store.findings.save([], messages[3:], now=T0 + 60)
    assert store.outbox.depth() == (5, T0)
    rows = store.outbox.peek(10)
    assert [r.payload for r in rows] == [b"0", b"1", b"2", b"3", b"4"]
    assert rows[0].retain is True and rows[0].qos == 1 and rows[0].attempts == 0
    assert [r.created_at for r in rows] == [T0, T0, T0, T0 + 60, T0 + 60]

    store.outbox.failed(rows[0].id, "broker refused the publish")
    store.outbox.failed(rows[0].id, "timeout")
    store.outbox.done([rows[1].id, rows[2].id])
    rows = store.outbox.peek(2)
    assert [r.payload for r in rows] == [b"0", b"3"]
    assert (rows[0].attempts, rows[0].last_error) == (2, "timeout")
    store.outbox.done(r.id for r in store.outbox.peek(10))
    store.outbox.done([])
    assert store.outbox.depth() == (0, None)


def test_outbox_ids_are_never_reused(store: Store) -> None:
    store.findings.save([], [OutboxMessage("t", b"a")])
    [row] = store.outbox.peek(1)
    store.outbox.done([row.id])
    store.findings.save([], [OutboxMessage("t", b"b")])
    assert store.outbox.peek(1)[0].id > row.id


def test_save_findings_is_all_or_nothing(store: Store, db_path: Path) -> None:
    broken = OutboxMessage("t", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.findings.save([finding()], [OutboxMessage("t", b"ok"), broken])
    assert store.findings.latest() == [] and store.outbox.depth() == (0, None)
    assert table_counts(db_path)["findings"] == 0


def test_latest_findings_per_kind_device_sensor(store: Store) -> None:
    store.findings.save([finding(status="pass"), finding("th-0002"),
                         finding(sensor=None, kind="metadata")], [], now=T0)
    store.findings.save([finding(status="fail")], [], now=T0 + 3600)
    latest = store.findings.latest()
    assert [(s.finding.kind, s.finding.device, s.finding.sensor, s.finding.status)
            for s in latest] == [
        ("metadata", "th-0001", None, "pass"),
        ("calibration", "th-0001", "temperature", "fail"),
        ("calibration", "th-0002", "temperature", "pass"),
    ]
    assert latest[1].created_at == T0 + 3600
    assert latest[1].finding.causes[0].cause == "offset_drift"
    assert latest[1].finding == finding(status="fail")  # the same typed value comes back
    assert latest[1].to_json()["created_at"] == T0 + 3600
    assert [f.finding.device for f in store.findings.latest(device="th-0002")] == ["th-0002"]
    assert len(store.findings.latest(kind="metadata")) == 1
    assert len(store.findings.since(T0)) == 4
    assert [f.finding.status for f in store.findings.since(T0 + 1)] == ["fail"]


def test_purge_findings_keeps_current_verdicts(store: Store) -> None:
    store.findings.save([finding(status="pass"), finding("th-0002")], [], now=T0)
    store.findings.save([finding(status="fail")], [], now=T0 + 3600)
    assert store.findings.purge(T0 + 7200, chunk=1) == 1
    assert len(store.findings.latest()) == 2
    assert len(store.findings.since(0)) == 2


# --------------------------------------------------------------------------- retention


def test_purge_readings_in_chunks(store: Store) -> None:
    for device in ("a", "b", "c"):
        store.readings.write_outcomes([readings_outcome(*[reading(T0 + i, device=device)
                                                          for i in range(1000)])])
    transactions: list[str] = []
    store._db._writer.set_trace_callback(
        lambda sql: transactions.append(sql) if sql.startswith("BEGIN") else None)
    deleted = store.readings.purge(T0 + 600, chunk=100)
    store._db._writer.set_trace_callback(None)
    assert deleted == 3 * 600
    assert len(transactions) >= 3 * 6  # at most `chunk` rows per transaction
    for info in store.readings.streams():
        assert (info.count, info.first_ts, info.last_ts) == (400, T0 + 600, T0 + 999)
    ts, _ = store.readings.read_window("north", "a", "temperature", 0, math.inf)
    assert ts[0] == T0 + 600 and len(ts) == 400
    assert store.summary().readings == 1200


def test_purge_everything_empties_the_span(store: Store) -> None:
    store.readings.write_outcomes([readings_outcome(*[reading(T0 + i) for i in range(10)])])
    assert store.readings.purge(T0 + 100) == 10
    [info] = store.readings.streams()
    assert (info.count, info.first_ts, info.last_ts) == (0, None, None)
    assert store.readings.purge(T0 + 100) == 0
    # A late redelivery of a purged reading is stored again: the stream is still usable.
    assert store.readings.write_outcomes([readings_outcome(reading(T0))]).readings_inserted == 1
    assert store.readings.streams()[0].count == 1


# --------------------------------------------------------------------------- concurrency


def test_audit_reads_while_ingest_writes(store: Store) -> None:
    """A reader thread never waits for the writer nor sees a half-written batch."""
    batches = 150
    per_batch = 20
    errors: list[BaseException] = []
    done = threading.Event()

    def ingest() -> None:
        try:
            for b in range(batches):
                store.readings.write_outcomes([readings_outcome(*[
                    reading(T0 + b * per_batch + i, float(b)) for i in range(per_batch)])])
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=ingest)
    writer.start()
    seen: list[int] = []
    while not done.is_set() or not seen:
        ts, _ = store.readings.read_window("north", "th-0001", "temperature", 0, math.inf)
        assert len(ts) % per_batch == 0  # whole batches only
        assert np.all(np.diff(ts) > 0)
        seen.append(len(ts))
    writer.join()
    assert not errors
    assert seen == sorted(seen)
    ts, _ = store.readings.read_window("north", "th-0001", "temperature", 0, math.inf)
    assert len(ts) == batches * per_batch


def test_readers_on_many_threads(store: Store) -> None:
    store.readings.write_outcomes([readings_outcome(*[reading(T0 + i) for i in range(100)])])
    results: list[int] = []

    def read() -> None:
        ts, _ = store.readings.read_window("north", "th-0001", "temperature", T0, T0 + 50)
        results.append(len(ts))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [50] * 8
    assert len(store._db._readers) >= 8


# --------------------------------------------------------------------------- overview, lifecycle


def test_summary(store: Store, db_path: Path) -> None:
    store.readings.write_outcomes([readings_outcome(reading(T0), reading(T0, sensor="h")),
                                   Outcome(rejections=(rejection("bad_json"),))])
    store.findings.save([finding()], [OutboxMessage("t", b"x")])
    summary = store.summary()
    assert {k: getattr(summary, k) for k in ("streams", "readings", "quarantine", "findings",
                                             "outbox", "schema_version", "journal_mode")} == {
        "streams": 2, "readings": 2, "quarantine": 1, "findings": 1, "outbox": 1,
        "schema_version": SCHEMA_VERSION, "journal_mode": "wal"}
    assert summary.file_size > 0 and summary.path == str(db_path)


def test_closed_store_refuses_work(db_path: Path) -> None:
    s = Store(db_path)
    s.readings.write_outcomes([readings_outcome(reading(T0))])
    s.readings.streams()  # opens this thread's reader
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.readings.write_outcomes([readings_outcome(reading(T0 + 1))])
    with pytest.raises(StoreError, match="closed"):
        s.readings.streams()


def test_acknowledged_batch_survives_reopen_without_close(db_path: Path) -> None:
    """What returned from write_outcomes is in the file, even if the process dies now."""
    s = Store(db_path)
    s.readings.write_outcomes([readings_outcome(*[reading(T0 + i) for i in range(10)])])
    # No close(): read the file through a fresh, independent connection.
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 10
    conn.close()
    s.close()


def test_retention_deletes_findings_past_their_own_retention_keeping_current_verdicts(
        store: Store) -> None:
    """An hourly audit adds a finding a stream an hour; nothing else ever deletes them.
    Past ``findings_retention_days`` they go, save each stream's current verdict (a stream
    that has said nothing since keeps its last word)."""
    day = 86400.0
    store.findings.save([finding(status="pass"), finding("th-0002")], [], now=T0)
    store.findings.save([finding(status="fail")], [], now=T0 + 40 * day)
    done = apply_retention(store, StoreConfig(findings_retention_days=30.0), T0 + 50 * day)
    assert done.findings == 1
    kept = sorted((f.finding.device, f.finding.status, f.created_at)
                  for f in store.findings.since(0))
    assert kept == [("th-0001", "fail", T0 + 40 * day), ("th-0002", "pass", T0)]
    assert len(store.findings.latest()) == 2


def test_the_baseline_asked_every_audit_is_one_index_descent(db_path: Path,
                                                              store: Store) -> None:
    """``last_passing_window`` runs for every stream on every audit: it must read one range
    of ``findings_passing``, never the stream's whole history sorted (issue 17: before the
    index, its cost grew by one row a stream with every hourly audit)."""
    store.findings.save([finding(status="pass"), finding(status="fail")], [], now=T0)
    assert store.findings.last_passing_window("calibration", "th-0001", "temperature",
                                              before=T0 + 86400) == (T0, T0 + 86400)
    assert store.findings.last_passing_window("calibration", "th-0001", "temperature",
                                              before=T0) is None
    conn = sqlite3.connect(db_path)
    try:
        for before, args in ((True, ("c", "d", "s", 1.0)), (False, ("c", "d", "s"))):
            plan = " ".join(row[3] for row in conn.execute(
                "EXPLAIN QUERY PLAN " + last_passing_sql(before), args))
            assert "USING INDEX findings_passing" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        conn.close()
