"""Nothing a device sends can stop ingest: the real Ingestor into a real SQLite store.

Property tests draw arbitrary JSON documents for each topic kind (lone surrogates and NUL
in values and keys, NaN and infinities, huge numbers, deep nesting, invalid UTF-8 bytes) and
check that no exception escapes, that every message is stored or quarantined with a reason,
and that a valid message sent after it is stored. The other tests pin down fault isolation
(a message the store itself refuses, with a real SQLite constraint), the classification of
errors, conflicting duplicates, the device and stream caps and the bounded quarantine.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from auditd.adapters.config.catalog import load_catalog
from auditd.adapters.config.daemon import default_config
from auditd.adapters.store import Store
from auditd.adapters.store.database import Bounds
from auditd.adapters.store.quarantine import QUARANTINE_BUCKET_S
from auditd.app.auditor import read_histories
from auditd.app.ingest import Ingestor
from auditd.domain.calibration import corrections
from auditd.domain.catalog import Catalog
from auditd.domain.metadata import DEFAULT_POLICY, FleetView, anomalies, changes, context_for
from auditd.domain.validate import Limits, Reason
from auditd.errors import StoreError
from auditd.model import EVENT_TYPES, RawMessage
from auditd.retry import error_code, is_transient

REPO = Path(__file__).resolve().parents[1]
NOW = 1_796_000_000.0  # 2026-11-29
MODELS = {"hx-*": "th-200", "th-*": "th-200"}


def _catalog() -> Catalog:
    return load_catalog(default_config(profiles_dir=REPO / "device_profiles",
                                       references_dir=REPO / "references", models=MODELS))


CATALOG = _catalog()
_ids = itertools.count()


def _device() -> str:
    return f"hx-{next(_ids)}"


def _telemetry(device: str, ts: float, value: float = 21.5) -> RawMessage:
    return RawMessage(f"fleet/north/{device}/telemetry",
                      json.dumps({"ts": ts, "readings": {"temperature": value}}).encode(), ts + 1)


# --------------------------------------------------------------------------- strategies

HOSTILE_CHARS = st.one_of(
    st.characters(codec=None, categories=None),
    st.integers(0xD800, 0xDFFF).map(chr),  # hypothesis never draws surrogates by itself
    st.sampled_from(["\x00", "\ufeff", "\u2028", "\U0001f600"]),
)
HOSTILE_TEXT = st.text(HOSTILE_CHARS, max_size=12)
NUMBERS = st.one_of(
    st.floats(),  # NaN and infinities included
    st.integers(),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.sampled_from([10**400, -(10**300), 2**63, -(2**63) - 1, 1e308, 5e-324]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | HOSTILE_TEXT,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(HOSTILE_TEXT, children, max_size=4)),
    max_leaves=16,
)
DEEP = st.integers(30, 120).map(lambda n: json.loads("[" * n + "1" + "]" * n))
ANY_JSON = JSON_VALUES | DEEP
VALID_TS = st.sampled_from([NOW, NOW - 3600, "2026-11-29T00:00:00Z"])
TS = st.one_of(VALID_TS, VALID_TS, VALID_TS, ANY_JSON)  # mostly past the time check
SENSORS = st.sampled_from(["temperature", "humidity", "pressure", "co2"]) | HOSTILE_TEXT
UNITS = st.sampled_from(["degC", "degF", "K", "percent", "hPa"]) | HOSTILE_TEXT | ANY_JSON
READING = ANY_JSON | st.fixed_dictionaries({"value": ANY_JSON, "unit": UNITS})
TELEMETRY = st.fixed_dictionaries(
    {"ts": TS, "readings": st.dictionaries(SENSORS, READING, max_size=4) | ANY_JSON},
    optional={"seq": NUMBERS | ANY_JSON})
META = st.builds(lambda base, extra: {**extra, **base},
                 st.fixed_dictionaries({"ts": TS}, optional={
                     "model": st.just("th-200") | ANY_JSON, "firmware": HOSTILE_TEXT | ANY_JSON}),
                 st.dictionaries(HOSTILE_TEXT, ANY_JSON, max_size=4))
EVENT = st.builds(lambda base, extra: {**extra, **base},
                  st.fixed_dictionaries({"ts": TS, "type": st.sampled_from(EVENT_TYPES) | ANY_JSON},
                                        optional={"detail": HOSTILE_TEXT | ANY_JSON}),
                  st.dictionaries(HOSTILE_TEXT, ANY_JSON, max_size=4))
DOCUMENTS = {
    "telemetry": st.one_of(TELEMETRY, TELEMETRY, st.lists(TELEMETRY | ANY_JSON, max_size=3),
                           ANY_JSON),
    "meta": st.one_of(META, META, META, ANY_JSON),
    "event": st.one_of(EVENT, EVENT, EVENT, ANY_JSON),
}
ENCODINGS = st.sampled_from(["ascii-escapes", "ascii-escapes", "utf-8", "surrogatepass"])


def _encode(document: Any, encoding: str) -> bytes:
    """JSON text as a device could send it: escaped (``\\ud800``), raw UTF-8, or raw bytes
    that are not UTF-8 at all (a surrogate encoded as if it were a character)."""
    try:
        text = json.dumps(document, ensure_ascii=encoding == "ascii-escapes")
    except (ValueError, RecursionError):
        return b"[1"
    return text.encode("utf-8", "surrogatepass" if encoding != "ascii-escapes" else "strict")


# --------------------------------------------------------------------------- the property


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Ingestor]]:
    """One store for all examples (each example uses devices of its own)."""
    store = Store(tmp_path_factory.mktemp("hostile") / "audit.db", synchronous="off")
    yield store, Ingestor(store, CATALOG, prefix="fleet", limits=Limits())
    store.close()


def _quarantined_reasons(store: Store, device: str) -> dict[str, int]:
    return {reason: n for (_, reason), n in store.quarantine.counts_of(device).items()}


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(kind=st.sampled_from(["telemetry", "meta", "event"]), data=st.data(),
       encoding=ENCODINGS)
def test_any_document_is_stored_or_quarantined_and_the_next_message_is_stored(
        shared: tuple[Store, Ingestor], kind: str, data: st.DataObject, encoding: str) -> None:
    store, ingestor = shared
    document = data.draw(DOCUMENTS[kind], label="document")
    hostile_device, next_device = _device(), _device()
    hostile = RawMessage(f"fleet/north/{hostile_device}/{kind}", _encode(document, encoding),
                         NOW)
    valid = _telemetry(next_device, NOW - 60)
    before = store.counters.all()

    outcomes = ingestor.validate([hostile, valid])
    done = ingestor.commit_isolated([hostile, valid], outcomes)  # nothing escapes

    assert done.count == 2
    after = store.counters.all()
    assert after["messages"] - before.get("messages", 0) == 2
    outcome = outcomes[0]
    for reason in {r.reason for r in outcome.rejections} or {"accepted"}:
        event(f"{kind}: {reason}")
    quarantined = _quarantined_reasons(store, hostile_device)
    for rejection in outcome.rejections:
        assert rejection.reason in Reason.ALL
        assert quarantined.get(rejection.reason, 0) >= 1, (rejection, quarantined)
    for reading in outcome.readings:
        ts, values = store.readings.read_window("north", hostile_device, reading.sensor, reading.ts,
                                                reading.ts + 0.001)
        assert len(ts) == 1
        assert (math.isnan(values[0]) if reading.value is None else values[0] == reading.value)
    if outcome.meta is not None:
        assert hostile_device in store.devices.latest_meta()
        json.dumps(store.devices.latest_meta()[hostile_device].data,  # re-publishable
                   allow_nan=False)
    if outcome.event is not None:
        [stored] = store.devices.events(hostile_device)
        json.dumps(stored.data, allow_nan=False)
    if not (outcome.rejections or outcome.readings or outcome.meta or outcome.event):
        # Nothing to store and nothing wrong: telemetry with no readings in it.
        assert kind == "telemetry" and not quarantined
    # The message after it is stored, whatever came before.
    ts, values = store.readings.read_window("north", next_device, "temperature", NOW - 60, NOW)
    assert values.tolist() == [21.5]


# --------------------------------------------------------------------------- fault isolation


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "audit.db", synchronous="off") as s:
        yield s


def _poison_the_store(path: Path, device: str) -> None:
    """A rule the store enforces on content, as a CHECK constraint would: meta of
    ``device`` is refused with SQLITE_CONSTRAINT_TRIGGER, a real SQLite error."""
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TRIGGER poison BEFORE INSERT ON meta_versions "
                     f"WHEN NEW.device = '{device}' BEGIN SELECT RAISE(ABORT, 'poisoned'); END")


def _meta(device: str, ts: float = NOW, **data: Any) -> RawMessage:
    return RawMessage(f"fleet/north/{device}/meta",
                      json.dumps({"ts": ts, "model": "th-200", **data}).encode(), ts)


def test_a_message_the_store_refuses_is_isolated_quarantined_and_the_rest_committed(
        store: Store) -> None:
    _poison_the_store(store.path, "hx-poison")
    ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits())
    calls: list[int] = []

    def counting(messages: int, outcomes: Any) -> Any:
        calls.append(messages)
        return ingestor.commit(messages, outcomes)

    batch = [_telemetry(f"hx-a{i}", NOW - i) for i in range(40)]
    batch.insert(23, _meta("hx-poison"))
    done = ingestor.commit_isolated(batch, ingestor.validate(batch), commit=counting)

    assert done.count == len(batch)
    assert sum(1 for i in range(40) if store.readings.read_window(
        "north", f"hx-a{i}", "temperature", NOW - 100, NOW + 1)[0].size) == 40
    [row] = store.quarantine.recent(Reason.STORE_REJECTED)
    assert row.device == "hx-poison" and row.topic == "fleet/north/hx-poison/meta"
    assert "IntegrityError" in row.detail and "poisoned" in row.detail
    assert "SQLITE_CONSTRAINT_TRIGGER" in row.detail
    assert row.payload == batch[23].payload  # kept, not lost
    assert store.counters.rejections() == {Reason.STORE_REJECTED: 1}
    assert ingestor.totals.isolated == 1
    # Bisection, not one transaction per message: 41 messages take a handful of tries.
    assert len(calls) <= 2 * math.ceil(math.log2(41)) + 2, calls


def test_an_error_of_the_environment_is_retried_as_is_and_nothing_is_given_up(
        store: Store) -> None:
    ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits())
    batch = [_telemetry(f"hx-b{i}", NOW - i) for i in range(10)]
    outcomes = ingestor.validate(batch)
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    seen: list[BaseException] = []

    def give_up(exc: BaseException, attempt: int) -> bool:
        seen.append(exc)
        return False

    store._db._writer.execute("PRAGMA busy_timeout = 50")
    try:
        done = ingestor.commit_isolated(batch, outcomes, on_transient=give_up)
        assert done.count == 0  # nothing may be acknowledged
        [error] = seen
        assert isinstance(error, StoreError) and error.transient
        assert error.code == "SQLITE_BUSY"
        assert store.counters.all() == {"store_opened": 1}  # nothing of the batch
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    def retry_once(exc: BaseException, attempt: int) -> bool:
        return attempt < 1

    assert ingestor.commit_isolated(batch, outcomes, on_transient=retry_once).count == 10
    assert store.counters.rejections() == {}


def test_errors_are_classified_by_sqlite_result_code_not_by_text(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None, timeout=0.05)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL)")
    errors: dict[str, BaseException] = {}
    for name, sql, args in [("notnull", "INSERT INTO t VALUES (1, NULL)", ()),
                            ("overflow", "INSERT INTO t VALUES (?, 'x')", (2**70,)),
                            ("surrogate", "INSERT INTO t VALUES (2, ?)", ("\ud800",)),
                            ("binding", "INSERT INTO t VALUES (3, ?)", ({},))]:
        try:
            conn.execute(sql, args)
        except Exception as exc:
            errors[name] = exc
    other = sqlite3.connect(tmp_path / "x.db", isolation_level=None, timeout=0.05)
    other.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        errors["busy"] = exc
    other.execute("ROLLBACK")
    assert error_code(errors["notnull"]) == "SQLITE_CONSTRAINT_NOTNULL"
    assert error_code(errors["busy"]) == "SQLITE_BUSY"
    assert not any(is_transient(errors[n]) for n in ("notnull", "overflow", "surrogate",
                                                     "binding"))
    assert is_transient(errors["busy"])
    assert is_transient(MemoryError())
    assert is_transient(StoreError("full", transient=True))
    assert not is_transient(StoreError("too big", transient=False))


# --------------------------------------------------------------------------- duplicates


def test_a_redelivery_is_a_duplicate_and_another_value_is_a_quarantined_conflict(
        store: Store) -> None:
    ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits())
    first = _telemetry("hx-dup", NOW - 60, 20.25)
    ingestor.ingest([first])
    again = ingestor.ingest([first])  # the broker's redelivery
    assert (again.readings_inserted, again.readings_duplicate, dict(again.rejected)) == (
        0, 1, {})
    other = RawMessage(first.topic, first.payload.replace(b"20.25", b"22.75"), NOW + 5)
    conflict = ingestor.ingest([other])
    assert (conflict.readings_inserted, conflict.readings_duplicate) == (0, 0)
    assert dict(conflict.rejected) == {Reason.DUPLICATE_CONFLICT: 1}
    _, values = store.readings.read_window("north", "hx-dup", "temperature", NOW - 61, NOW)
    assert values.tolist() == [20.25]  # the first value stays
    [row] = store.quarantine.recent(Reason.DUPLICATE_CONFLICT)
    assert "20.25" in row.detail and "22.75" in row.detail  # both values
    assert (row.device, row.sensor, row.topic) == ("hx-dup", "temperature", first.topic)
    assert row.payload == other.payload
    assert store.counters.all()["readings_duplicate"] == 1


# --------------------------------------------------------------------------- bounds


def test_new_devices_and_streams_beyond_the_caps_are_quarantined_known_ones_unaffected(
        tmp_path: Path) -> None:
    limits = Limits(max_devices=3, max_streams=4)
    with Store(tmp_path / "a.db", synchronous="off") as store:
        ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=limits)
        ingestor.ingest([_telemetry(f"hx-k{i}", NOW - 100) for i in range(3)])
        late = [_telemetry(f"hx-new{i}", NOW - 90) for i in range(5)]
        result = ingestor.ingest([*late, _meta("hx-new9"), _telemetry("hx-k0", NOW - 80)])
        assert dict(result.rejected) == {Reason.DEVICE_LIMIT: 6}
        assert result.readings_inserted == 1  # the known device goes on
        # A fourth stream fits, a fifth does not; the known streams go on.
        two = RawMessage("fleet/north/hx-k1/telemetry", json.dumps(
            {"ts": NOW - 70, "readings": {"temperature": 20, "humidity": 40,
                                          "pressure": 1000}}).encode(), NOW)
        result = ingestor.ingest([two])
        assert result.readings_inserted == 2 and dict(result.rejected) == {
            Reason.STREAM_LIMIT: 1}
        assert len(store.readings.streams()) == 4
        assert ingestor.streams == 4 and ingestor.devices == 3
        [row] = store.quarantine.recent(Reason.STREAM_LIMIT)
        assert row.device == "hx-k1" and row.sensor in ("humidity", "pressure")
    # A new device whose every reading the stream cap refuses takes no device's place.
    with Store(tmp_path / "b.db", synchronous="off") as store:
        ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits(max_devices=2,
                                                                          max_streams=1))
        result = ingestor.ingest([_telemetry("hx-s1", NOW - 100), _telemetry("hx-s2", NOW - 90),
                                  _meta("hx-s3")])
        assert dict(result.rejected) == {Reason.STREAM_LIMIT: 1}
        assert ingestor.devices == 2 and store.readings.known_devices() == {"hx-s1", "hx-s3"}
    # After a restart the caps count what the store holds.
    with Store(tmp_path / "a.db", synchronous="off") as store:
        ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=limits)
        assert (ingestor.devices, ingestor.streams) == (3, 4)
        result = ingestor.ingest([_telemetry("hx-other", NOW - 60)])
        assert dict(result.rejected) == {Reason.DEVICE_LIMIT: 1}


def _garbage(device: str, at: float, size: int = 200) -> RawMessage:
    return RawMessage(f"fleet/north/{device}/telemetry", b"{" + b"x" * size, at)


def test_a_flood_of_one_device_is_one_quarantine_row_a_minute_with_its_count(
        store: Store) -> None:
    ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits())
    start = math.floor(NOW / QUARANTINE_BUCKET_S) * QUARANTINE_BUCKET_S
    flood = [_garbage("hx-noisy", start + i * 0.1) for i in range(1200)]  # 10/s for 2 min
    for i in range(0, len(flood), 100):
        ingestor.ingest(flood[i:i + 100])
    rows = store.quarantine.recent(Reason.JSON_INVALID)
    assert [r.count for r in rows] == [600, 600]
    assert all(r.payload == flood[0].payload for r in rows)  # each row's first payload
    assert store.counters.rejections() == {Reason.JSON_INVALID: 1200}
    assert store.quarantine.rejected_between("hx-noisy", None, start, start + 60) == {}  # type: ignore[arg-type]


def test_the_quarantine_keeps_within_its_row_and_byte_caps_dropping_the_oldest(
        tmp_path: Path) -> None:
    bounds = Bounds(quarantine_max_rows=200, quarantine_max_bytes=64 * 1024)
    with Store(tmp_path / "q.db", synchronous="off", bounds=bounds) as store:
        ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits(max_devices=10**6))
        # A flood of invented ids, each its own row: rows cap first.
        for chunk in range(10):
            ingestor.ingest([_garbage(f"hx-f{chunk}-{i}", NOW + chunk, size=50)
                             for i in range(100)])
            rows, size = store.quarantine.usage()
            assert rows <= 200 and size <= 64 * 1024
        newest = store.quarantine.recent(limit=1)[0]
        assert newest.device == "hx-f9-99"
        assert store.counters.rejections() == {Reason.JSON_INVALID: 1000}  # totals kept
        dropped = store.counters.all()["quarantine_dropped"]
        assert dropped >= 800
        # Large payloads: the byte cap binds before the row cap.
        ingestor.ingest([_garbage(f"hx-big{i}", NOW + 20, size=4000) for i in range(40)])
        rows, size = store.quarantine.usage()
        assert size <= 64 * 1024 and rows < 40
        # The usage the caps are checked against is exact, through deletes too.
        with sqlite3.connect(store.path) as conn:
            exact = conn.execute("SELECT count(*), sum(size) FROM quarantine").fetchone()
        assert (rows, size) == exact


def test_the_write_ahead_log_is_emptied_once_past_its_limit(tmp_path: Path) -> None:
    limit = 512 * 1024
    with Store(tmp_path / "w.db", synchronous="off", bounds=Bounds(wal_limit=limit)) as store:
        ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits())
        # Alone, SQLite's own checkpoints (at half the limit) keep the log within it.
        for batch in range(40):
            ingestor.ingest([_telemetry(f"hx-w{i}", NOW - batch * 60 - i) for i in range(50)])
            assert store.wal_bytes() <= limit
        # A long reader (an audit) keeps them from resetting it, so it grows past the limit.
        reader = sqlite3.connect(store.path)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM readings").fetchone()
        for batch in range(40, 80):
            ingestor.ingest([_telemetry(f"hx-w{i}", NOW - batch * 60 - i) for i in range(50)])
        assert store.wal_bytes() > limit
        reader.execute("COMMIT")
        reader.close()
        # The first commit that looks (at most once a second) empties it at once.
        store._db._wal_checked_at = 0.0
        ingestor.ingest([_telemetry("hx-w-last", NOW)])
        assert store.checkpoints == 1
        assert store.wal_bytes() == 0
        _, values = store.readings.read_window("north", "hx-w-last", "temperature",
                                               NOW - 1, NOW + 1)
        assert values.tolist() == [21.5]


# --------------------------------------------------------------------------- the audit

META_VALUES = JSON_VALUES | st.sampled_from(
    ["2.3.1", "2.4.0", "th-200", "pm-25", "2025-01-01", "2027-01-01", "B", "SN-1",
     {"lat": 45.1, "lon": 7.6}])
META_KEYS = ("model", "firmware", "hardware_rev", "serial", "installed_at", "calibrated_at",
             "calibration_due", "location")
HOSTILE_META = st.fixed_dictionaries({}, optional={k: META_VALUES for k in META_KEYS})
HOSTILE_EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(EVENT_TYPES)},
    optional={k: META_VALUES for k in ("from", "to", "by", "detail", "location")})


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(metas=st.lists(HOSTILE_META, min_size=1, max_size=4),
       events=st.lists(HOSTILE_EVENT, max_size=3))
def test_metadata_checks_judge_whatever_meta_and_events_were_stored(
        metas: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """What passed the gate may still be of a shape no check expects (a serial that is an
    object, a date that is a list): each check must judge it or call it invalid, since a
    check that raises loses the metadata findings of every device of the run."""
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "m.db",
                                                     synchronous="off") as store:
        ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits())
        t = NOW - 30 * 86400
        messages = []
        for i, data in enumerate(metas):
            messages.append(RawMessage("fleet/north/th-north-01/meta", json.dumps(
                {**data, "ts": t + i * 86400}).encode(), t + i * 86400))
        for i, data in enumerate(events):
            messages.append(RawMessage("fleet/north/th-north-01/event", json.dumps(
                {**data, "ts": t + i * 43200 + 600}).encode(), t + i * 43200 + 600))
        messages.append(_telemetry("th-north-01", NOW - 3600))
        ingestor.ingest(messages)
        histories = read_histories(store, CATALOG, {}, NOW, DEFAULT_POLICY)
        firmware = FleetView.of((None, h.latest.get("firmware")) for h in histories.values())
        for history in histories.values():
            found = anomalies(history, CATALOG.profile("th-200"), "th-200", firmware, NOW)
            timeline = changes(history)
            context = context_for(timeline, NOW - 86400, NOW - 2 * 86400)
            json.dumps([a.evidence for a in found], allow_nan=False)
            json.dumps(context, allow_nan=False, default=str)


# --------------------------------------------------------------------------- bounded history


def _judged(store: Store, device: str) -> tuple[list[tuple[str, str]], list[str], list[Any]]:
    """What the audit reads of ``device``: its changes other than relocations (kind and
    time), its anomalies, and the corrections of its temperature."""
    history = read_histories(store, CATALOG, {}, NOW, DEFAULT_POLICY)[device]
    found = anomalies(history, CATALOG.profile("th-200"), "th-200", FleetView(), NOW)
    return ([(c.type, str(c.detail.get("to"))) for c in changes(history)
             if c.type != "relocation"],
            [f"{a.name} {a.key} {a.since}" for a in found],
            corrections(history.events, "temperature"))


def test_a_device_whose_meta_jitters_keeps_a_bounded_history_with_every_change_the_rules_read(
        tmp_path: Path) -> None:
    """A meta with an uptime and a GPS position that wanders by metres is a new version at
    every message. The store keeps at most the cap per device, and what the metadata rules
    read (firmware changes, a silent serial swap and its time) is what the whole history
    says."""
    messages = []
    t0 = NOW - 20 * 86400
    for i in range(1500):
        firmware = "2.4.0" if i < 500 else "2.5.0" if i < 1000 else "2.4.0"  # a downgrade
        serial = "SN-1" if i < 700 else "SN-2"
        messages.append(_meta("hx-gps", t0 + i * 600, firmware=firmware, serial=serial,
                              uptime_s=i * 600,
                              location={"lat": 45.1 + (i % 7) * 1e-5, "lon": 7.6}))
    messages.append(_telemetry("hx-gps", NOW - 60))
    bounded = Bounds(meta_versions_per_device=40)
    with Store(tmp_path / "bounded.db", synchronous="off", bounds=bounded) as store, \
            Store(tmp_path / "whole.db", synchronous="off",
                  bounds=Bounds(meta_versions_per_device=10**6)) as whole:
        for target in (store, whole):
            ingestor = Ingestor(target, CATALOG, prefix="fleet", limits=Limits())
            for i in range(0, len(messages), 50):
                ingestor.ingest(messages[i:i + 50])
        assert len(whole.devices.meta_history("hx-gps")) == 1500
        kept = store.devices.meta_history("hx-gps")
        assert len(kept) <= 40
        assert kept[-1].data["uptime_s"] == 1499 * 600  # the current version is the latest
        assert kept[0].first_seen == whole.devices.meta_history("hx-gps")[0].first_seen
        assert _judged(store, "hx-gps")[:2] == _judged(whole, "hx-gps")[:2]
        assert {"firmware_downgrade", "serial_changed"} <= {
            line.split()[0] for line in _judged(store, "hx-gps")[1]}
        assert store.counters.all()["meta_versions_trimmed"] == 1500 - len(kept)
        assert store.summary().meta_versions == len(kept)


def test_a_flood_of_events_keeps_a_bounded_history_with_the_events_the_rules_read(
        tmp_path: Path) -> None:
    t0 = NOW - 30 * 86400
    messages = [
        RawMessage("fleet/north/hx-ev/event", json.dumps(
            {"ts": t0, "type": "calibration", "by": "lab",
             "correction": {"sensor": "temperature", "gain": 1.0, "offset": -0.5}}).encode(),
            t0),
        RawMessage("fleet/north/hx-ev/event", json.dumps(
            {"ts": t0 + 60, "type": "firmware_update", "from": "2.3.0", "to": "2.4.0"}
        ).encode(), t0 + 60),
        *(RawMessage("fleet/north/hx-ev/event", json.dumps(
            {"ts": t0 + 120 + i, "type": "maintenance", "note": f"visit {i}"}).encode(),
            t0 + 120 + i) for i in range(3000)),
        _meta("hx-ev", NOW - 3600, firmware="2.4.0"),
        _telemetry("hx-ev", NOW - 60),
    ]
    with Store(tmp_path / "bounded.db", synchronous="off",
               bounds=Bounds(events_per_device=100)) as store, \
            Store(tmp_path / "whole.db", synchronous="off") as whole:
        for target in (store, whole):
            ingestor = Ingestor(target, CATALOG, prefix="fleet", limits=Limits())
            for i in range(0, len(messages), 100):
                ingestor.ingest(messages[i:i + 100])
        kept = store.devices.events("hx-ev")
        assert len(kept) <= 100
        assert kept[-1].data["note"] == "visit 2999"
        changed, found, applied = _judged(store, "hx-ev")
        assert ([c for c in changed if c[0] != "maintenance"], found, applied) == (
            [c for c in _judged(whole, "hx-ev")[0] if c[0] != "maintenance"],
            *_judged(whole, "hx-ev")[1:])
        assert applied  # the calibration's correction is still applied
        assert store.counters.all()["events_trimmed"] == 3002 - len(kept)


def test_one_message_of_thousands_of_bad_readings_costs_a_few_quarantine_rows_one_payload(
        store: Store) -> None:
    """A 64 KB telemetry message naming 5000 sensors its profile lacks was 5000 quarantine
    rows with a copy of the payload each (21 MB: two such messages emptied the default
    quarantine of everything else). Every reading is still counted; the first sensors are
    still named, for the sensor_not_in_profile check."""
    ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits())
    readings = {f"s{i:05d}": 1 for i in range(5000)}
    payload = json.dumps({"ts": NOW, "readings": {**readings, "temperature": 21.5}}).encode()
    result = ingestor.ingest([RawMessage("fleet/north/hx-wide/telemetry", payload, NOW + 1)])
    assert result.readings_inserted == 1
    assert dict(result.rejected) == {Reason.SENSOR_UNKNOWN: 5000}
    assert store.counters.rejections() == {Reason.SENSOR_UNKNOWN: 5000}
    rows, size = store.quarantine.usage()
    assert rows <= 20 and size <= 2 * len(payload[:4096]) + 20 * 400
    assert sum(r.count for r in store.quarantine.recent(limit=100)) == 5000
    named = store.quarantine.rejected_devices(Reason.SENSOR_UNKNOWN, NOW - 60)["hx-wide"]
    assert named.sensors[:2] == ("s00000", "s00001")


def test_a_conflicting_duplicate_outlives_a_flood_of_garbage_in_the_quarantine(
        tmp_path: Path) -> None:
    """The second value of a conflict is nowhere else: a flood of garbage must push out the
    garbage before it; and conflicts of a flushed buffer keep one copy of their payload."""
    bounds = Bounds(quarantine_max_rows=100, quarantine_max_bytes=64 * 1024)
    with Store(tmp_path / "c.db", synchronous="off", bounds=bounds) as store:
        ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits(max_devices=10**6))
        stored = [{"ts": NOW - 600 + i, "readings": {"temperature": 20.0}} for i in range(50)]
        ingestor.ingest([RawMessage("fleet/north/hx-c/telemetry", json.dumps(stored).encode(),
                                    NOW)])
        again = [{**item, "readings": {"temperature": 25.0}} for item in stored]
        payload = json.dumps(again).encode()
        result = ingestor.ingest([RawMessage("fleet/north/hx-c/telemetry", payload, NOW + 1)])
        assert dict(result.rejected) == {Reason.DUPLICATE_CONFLICT: 50}
        conflicts = store.quarantine.recent(Reason.DUPLICATE_CONFLICT)
        assert sum(len(r.payload) for r in conflicts) == len(payload)  # one copy
        for chunk in range(20):
            ingestor.ingest([_garbage(f"hx-g{chunk}-{i}", NOW + 2 + chunk, size=300)
                             for i in range(50)])
        rows, size = store.quarantine.usage()
        assert rows <= 100 and size <= 64 * 1024
        kept = store.quarantine.recent(Reason.DUPLICATE_CONFLICT)
        assert len(kept) == 50 and all("25.0" in r.detail for r in kept)


def test_one_device_sent_under_invented_sites_cannot_take_every_stream_place(
        store: Store) -> None:
    """Streams are (site, device, sensor): one known id under 300 site names took all 500
    places of max_streams, and a real new device was refused."""
    ingestor = Ingestor(store, CATALOG, prefix="fleet",
                        limits=Limits(max_streams=500, max_sites_per_device=2))
    reading = json.dumps({"ts": NOW, "readings": {"temperature": 1, "humidity": 50}}).encode()
    result = ingestor.ingest([RawMessage(f"fleet/site{i}/hx-roam/telemetry", reading, NOW + 1)
                              for i in range(300)])
    assert result.readings_inserted == 4 and dict(result.rejected) == {
        Reason.STREAM_LIMIT: 596}
    [row, *_] = store.quarantine.recent(Reason.STREAM_LIMIT)
    assert "max_sites_per_device" in row.detail
    fresh = ingestor.ingest([_telemetry("hx-real", NOW)])
    assert fresh.readings_inserted == 1 and not fresh.rejected
    # Its known sites go on.
    again = ingestor.ingest([RawMessage("fleet/site1/hx-roam/telemetry", json.dumps(
        {"ts": NOW + 5, "readings": {"temperature": 2}}).encode(), NOW + 6)])
    assert again.readings_inserted == 1


def test_a_message_redelivered_after_its_commit_is_counted_once(store: Store) -> None:
    """A daemon killed between a commit and its acknowledgements gets the batch again from
    the broker, flagged DUP. Garbage was quarantined and counted twice (1030 rejections for
    1000 garbage messages across five SIGKILLs); now each message counts once, while a DUP
    message that never made it in, or a new message equal to an old one, still counts."""
    ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits())
    garbage = _garbage("hx-r", NOW)
    reading = _telemetry("hx-r", NOW - 10)
    meta = _meta("hx-r", NOW - 5, firmware="2.4.0")
    event = RawMessage("fleet/north/hx-r/event", json.dumps(
        {"ts": NOW - 4, "type": "maintenance"}).encode(), NOW)
    mixed = RawMessage("fleet/north/hx-r/telemetry", json.dumps(
        {"ts": NOW - 3, "readings": {"temperature": 20.0, "bogus": 1}}).encode(), NOW)
    first = [RawMessage(m.topic, m.payload, m.received_at, packet_id=i + 1)
             for i, m in enumerate([garbage, reading, meta, event, mixed])]
    ingestor.ingest(first)
    before = store.counters.all()
    again = [RawMessage(m.topic, m.payload, m.received_at + 1, redelivered=True,
                        packet_id=m.packet_id) for m in first]
    result = ingestor.ingest(again)
    assert result.redelivered == 5 and not result.rejected
    after = store.counters.all()
    assert {k: after[k] for k in before} == before  # nothing counted twice
    assert after["messages_redelivered"] == 5
    assert sum(r.count for r in store.quarantine.recent(limit=100)) == 2
    # A DUP message never committed, and the same garbage sent again (another packet, or
    # a redelivery of another packet), are new.
    unseen = RawMessage("fleet/north/hx-r/telemetry", b"{other", NOW + 2, redelivered=True,
                        packet_id=7)
    same = RawMessage(garbage.topic, garbage.payload, NOW + 3, packet_id=8)
    same_again = RawMessage(garbage.topic, garbage.payload, NOW + 3, redelivered=True,
                            packet_id=9)
    result = ingestor.ingest([unseen, same, same_again])
    assert dict(result.rejected) == {Reason.JSON_INVALID: 3}
    assert store.counters.rejections()[Reason.JSON_INVALID] == 4


def test_only_a_device_the_catalog_knows_is_held(store: Store) -> None:
    """Meta and events of an id no glob or reference covers, announcing a model without a
    profile (or none), are refused; a device a glob covers that announces a model without
    a profile is held as before, so its telemetry is refused for that model (the model
    it announces wins over the glob) and model_unknown can name it."""
    ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits())
    result = ingestor.ingest([
        RawMessage("fleet/north/zz-1/meta", json.dumps({"ts": NOW, "model": "th-999"}).encode(),
                   NOW),
        RawMessage("fleet/north/zz-2/event", json.dumps(
            {"ts": NOW, "type": "maintenance"}).encode(), NOW),
        RawMessage("fleet/north/zz-3/meta", json.dumps({"ts": NOW, "model": "th-200"}).encode(),
                   NOW),
        _meta("hx-variant", NOW, model="th-999"),
        _telemetry("hx-variant", NOW),
    ])
    assert dict(result.rejected) == {Reason.UNKNOWN_DEVICE_MODEL: 3}
    assert store.readings.known_devices() == {"zz-3", "hx-variant"}
    assert ingestor.devices == 2
    [row] = [r for r in store.quarantine.recent(Reason.UNKNOWN_DEVICE_MODEL)
             if r.device == "hx-variant"]
    assert "hx-variant" in row.detail


def test_the_quarantine_byte_cap_bounds_the_file_not_only_the_payloads(
        tmp_path: Path) -> None:
    """Garbage with long site, device and sensor names: the cap counted topic, detail and
    payload only, and the quarantine took 2.4 times its cap on disk."""
    cap = 1024 * 1024
    path = tmp_path / "q.db"
    with Store(path, synchronous="off",
               bounds=Bounds(quarantine_max_bytes=cap, quarantine_max_rows=10**6)) as store:
        ingestor = Ingestor(store, CATALOG, prefix="fleet", limits=Limits(max_devices=10**6))
        empty = path.stat().st_size
        for k in range(100):  # batches of the daemon's batch_max
            ingestor.ingest([RawMessage(
                f"fleet/{'s' * 60}{k}/hx-{'d' * 55}{k:02d}{i:04d}/telemetry", json.dumps(
                    {"ts": NOW, "readings": {f"z{'q' * 60}{j}": 1 for j in range(3)}}).encode(),
                NOW + k) for i in range(100)])
        assert store.quarantine.usage()[1] <= cap
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert path.stat().st_size - empty <= 1.5 * cap
