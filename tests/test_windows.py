"""The audit's held windows (``adapters.store.windows``): whatever the store went through
since a stream was last read (late readings inside the held span, readings from another
process, retention's deletions, an import of old data), a held read returns exactly what a
fresh read of the file returns. A verdict made from held rows is the verdict of the file."""

from __future__ import annotations

import gc
import math
import sqlite3
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditd.adapters.store import Store, windows
from auditd.adapters.store import database as store_mod
from auditd.adapters.store.database import Bounds
from auditd.adapters.store.readings import ImportRecord
from auditd.model import Outcome, Reading

T0 = 1_764_064_800.0
STREAM = ("north", "th-0001", "temperature")
OTHER = ("north", "th-0002", "temperature")


def written(*points: tuple[int, float | None], stream: tuple[str, str, str] = STREAM
            ) -> list[Outcome]:
    """Readings at ``T0 + s`` seconds of one stream."""
    return [Outcome(readings=tuple(
        Reading(site=stream[0], device=stream[1], sensor=stream[2], unit="degC",
                ts=T0 + s, value=v) for s, v in points))]


def imported(store: Store, tag: int, points: list[tuple[int, float | None]]) -> None:
    record = ImportRecord(sha256=f"{tag:064x}", path=f"export-{tag}.csv", site=STREAM[0],
                          device=STREAM[1], mapping="test", imported_at=T0)
    ts = np.array([T0 + s for s, _ in points], dtype=np.float64)
    values = np.array([math.nan if v is None else v for _, v in points], dtype=np.float64)
    store.readings.write_import(record, [(STREAM[2], "degC", ts, values)], [])


def same_arrays(held: tuple[np.ndarray, np.ndarray],
                fresh: tuple[np.ndarray, np.ndarray]) -> None:
    """Equal to the bit, NaN where NaN."""
    assert held[0].tobytes() == fresh[0].tobytes()
    assert held[1].tobytes() == fresh[1].tobytes()


seconds = st.integers(min_value=0, max_value=120)
"""A narrow span of time, so that writes land inside, before and after held spans."""
values = st.one_of(st.none(), st.floats(-50, 50, allow_nan=False))
points = st.lists(st.tuples(seconds, values), min_size=1, max_size=12)
operation = st.one_of(
    st.tuples(st.just("write"), points),
    st.tuples(st.just("write elsewhere"), points),
    st.tuples(st.just("write other"), points),
    st.tuples(st.just("drop")),
    st.tuples(st.just("import"), points),
    st.tuples(st.just("purge"), seconds),
    st.tuples(st.just("read"), seconds, st.integers(0, 150)),
    st.tuples(st.just("read"), seconds, st.integers(0, 150)),
    st.tuples(st.just("end pass")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(operation, min_size=1, max_size=25))
def test_a_held_read_is_a_fresh_read_whatever_the_store_went_through(
        steps: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp, \
            Store(Path(tmp) / "a.db", synchronous="off") as store:
        imports = 0
        for step in steps:
            kind = step[0]
            if kind == "write":
                store.readings.write_outcomes(written(*step[1]))
            elif kind == "write elsewhere":
                # another process, as `sensor-auditd import` is: it opens the file, writes
                # and closes (a process kept open across the daemon's retention would hold
                # the ids of streams retention deleted, and its writes would be refused)
                with Store(Path(tmp) / "a.db", synchronous="off") as elsewhere:
                    elsewhere.readings.write_outcomes(written(*step[1]))
            elif kind == "write other":
                store.readings.write_outcomes(written(*step[1], stream=OTHER))
            elif kind == "drop":
                # the daemon's retention takes every reading, then the emptied streams;
                # SQLite may give a deleted stream's id to the next one made (another
                # process doing it: test_a_stream_created_again_under_...)
                store.readings.purge(T0 + 10_000)
                store.readings.drop_empty_streams()
            elif kind == "import":
                imports += 1
                imported(store, imports, step[1])
            elif kind == "purge":
                store.readings.purge(T0 + step[1])
            elif kind == "end pass":
                store.readings.windows.end_pass()
            else:
                start, end = T0 + step[1], T0 + step[1] + step[2]
                for stream in (STREAM, OTHER):
                    same_arrays(store.readings.read_window(*stream, start, end, held=True),
                                store.readings.read_window(*stream, start, end))
                bounds = [(-10.0, 10.0), (0.0, 0.0), (-math.inf, math.inf)]
                stored, outside = store.readings.count_in_window(*STREAM, start, end, bounds)
                assert stored == len(store.readings.read_window(*STREAM, start, end)[0])
                assert outside == tuple(  # as the file itself counts them (NULL: no side)
                    store.readings.count_outside(*STREAM, start, end, low, high)
                    for low, high in bounds)


def test_an_audit_reads_only_what_arrived_since_the_last(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """The point of holding windows: an hourly audit of a day fetches the hour's rows."""
    with Store(tmp_path / "a.db", synchronous="off") as store:
        store.readings.write_outcomes(written(*[(60 * m, float(m)) for m in range(24 * 60)]))
        store.readings.read_window(*STREAM, T0, T0 + 86400, held=True)
        store.readings.windows.end_pass()
        store.readings.write_outcomes(written(*[(86400 + 60 * m, 1.0) for m in range(60)]))
        fetched: list[int] = []
        fetch = windows.fetch_rows

        def counted(conn: sqlite3.Connection, sid: int, lo: int, hi: int
                    ) -> tuple[np.ndarray, np.ndarray]:
            rows = fetch(conn, sid, lo, hi)
            fetched.append(len(rows[0]))
            return rows

        monkeypatch.setattr(windows, "fetch_rows", counted)
        ts, _ = store.readings.read_window(*STREAM, T0 + 3600, T0 + 90000, held=True)
        assert len(ts) == 24 * 60
        assert fetched == [60]  # the new hour, not the day
        assert store.readings.windows.hits == 1


def test_a_late_reading_inside_the_held_span_is_read(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db", synchronous="off") as store:
        store.readings.write_outcomes(written((0, 1.0), (120, 3.0)))
        store.readings.read_window(*STREAM, T0, T0 + 300, held=True)
        store.readings.write_outcomes(written((60, 2.0)))  # a device's buffered reading
        _, values = store.readings.read_window(*STREAM, T0, T0 + 300, held=True)
        assert values.tolist() == [1.0, 2.0, 3.0]


def test_the_held_windows_stay_within_their_budget(tmp_path: Path) -> None:
    budget = 100 * 16  # a hundred readings
    with Store(tmp_path / "a.db", synchronous="off", bounds=Bounds(window_cache=budget)) \
            as store:
        for device in ("a", "b", "c"):
            store.readings.write_outcomes([Outcome(readings=tuple(
                Reading(site="north", device=device, sensor="t", unit="degC", ts=T0 + s,
                        value=1.0) for s in range(60)))])
        for device in ("a", "b", "c"):
            ts, _ = store.readings.read_window("north", device, "t", T0, T0 + 60, held=True)
            assert len(ts) == 60  # read whole where it does not fit, never cut short
        assert store.readings.windows.held_bytes <= budget
        store.readings.windows.end_pass()
        store.readings.read_window("north", "b", "t", T0, T0 + 60, held=True)
        store.readings.windows.end_pass()  # "a" was not read in this pass: let go
        assert store.readings.windows.held_bytes == 0


def test_a_stream_created_again_under_a_deleted_ones_id_is_another_stream(
        tmp_path: Path) -> None:
    """Retention deletes an emptied stream; SQLite gives its id to the next stream made.
    Rows held of the first are never served as the second's, even when the second's
    counts happen to match (here: deleted by another process, as a second store)."""
    path = tmp_path / "a.db"
    with Store(path, synchronous="off") as store, Store(path, synchronous="off") as other:
        store.readings.write_outcomes(written((0, 1.0), (60, 2.0), (120, 3.0)))
        store.readings.read_window(*STREAM, T0, T0 + 300, held=True)
        store.readings.windows.end_pass()
        other.readings.purge(T0 + 1000)
        other.readings.drop_empty_streams()
        other.readings.write_outcomes(written((10, 7.0), (20, 8.0), (30, 9.0)))
        same_arrays(store.readings.read_window(*STREAM, T0, T0 + 300, held=True),
                    store.readings.read_window(*STREAM, T0, T0 + 300))
        _, values = store.readings.read_window(*STREAM, T0, T0 + 300, held=True)
        assert values.tolist() == [7.0, 8.0, 9.0]


def test_readings_stamped_ahead_of_the_window_are_not_held(tmp_path: Path) -> None:
    """A device whose clock runs ahead stores readings after the audit's ``now``: they
    are counted, not kept, so the budget bounds what is held."""
    with Store(tmp_path / "a.db", synchronous="off") as store:
        store.readings.write_outcomes(written(*[(s, 1.0) for s in range(60)]))
        store.readings.write_outcomes(written(*[(3600 + s, 1.0) for s in range(20_000)]))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            store.readings.read_window(*STREAM, T0, T0 + 60, held=True)
            gc.collect()
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert store.readings.windows.held_bytes == 60 * 16
        assert kept < 20_000 * 8  # far less than the ahead rows' times alone


def test_a_store_from_before_the_writes_counter_is_migrated(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    path = tmp_path / "a.db"
    shipped = store_mod.MIGRATIONS
    before_writes = [m.__name__ for m in shipped].index("_migration_stream_writes")
    monkeypatch.setattr(store_mod, "MIGRATIONS", shipped[:before_writes])
    with Store(path) as old:
        old.readings.write_outcomes(written((0, 1.0), (120, 3.0)))
    monkeypatch.setattr(store_mod, "MIGRATIONS", shipped)
    with Store(path) as store:
        store.readings.read_window(*STREAM, T0, T0 + 300, held=True)
        store.readings.write_outcomes(written((60, 2.0)))
        _, values = store.readings.read_window(*STREAM, T0, T0 + 300, held=True)
        assert values.tolist() == [1.0, 2.0, 3.0]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT n, writes FROM streams").fetchall() == [(3, 1)]
    conn.close()
