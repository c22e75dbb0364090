"""The fleet's PostgreSQL store (psycopg 3, psycopg_pool): open, migrate, write, read.

One write path for everything: ``FleetStore.write`` takes a batch of records (what
``auditd.fleet.upstream.parse`` makes of live messages, or what the import reads from a
gateway's store), copies them with COPY into per-connection staging tables and moves them
into the fleet's tables with ``INSERT ... SELECT ... ON CONFLICT``, all in ONE transaction
(new findings by a plain ``INSERT`` first, in a savepoint: ``_Stage.all_new``).
A live consumer acknowledges its messages after ``write`` returns; a crash before that
rolls the whole batch back and the broker redelivers it. The keys (``schema``) make a
redelivered, replayed or re-imported record change nothing, whatever order records arrive
in, so any number of replicas can write side by side.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.copy import Buffer, Copy, Writer
from psycopg_pool import ConnectionPool, PoolTimeout

from auditd.domain.onsets import is_bracketed, stated_uncertainty
from auditd.errors import DatabaseError, SchemaError, StoreError
from auditd.fleet.adapters.schema import (
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    VERSION_TABLE,
)
from auditd.fleet.analysis.facts import (
    Device,
    DeviceDrift,
    FirmwareSeen,
    FleetFacts,
    Ticket,
    Verdict,
)
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
    WriteCounts,
)
from auditd.model import Finding, Profile

CONNECT_TIMEOUT_S: Final = 10
DSN_ENV: Final = "SENSOR_AUDITD_DSN"


def where(dsn: str) -> str:
    """``host:port`` (or the socket directory) the DSN points at, for messages: never the
    password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable DSN)"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    return f"{host}:{port}"


def _connect(dsn: str) -> psycopg.Connection[Any]:
    """A connection, or ``DatabaseError`` naming host and port."""
    try:
        return psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.ProgrammingError as exc:
        raise DatabaseError("(DSN)", f"the DSN cannot be parsed: {exc}") from None
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(where(dsn), f"cannot connect: {first}") from None


def migrate(conn: psycopg.Connection[Any], where_: str = "") -> int:
    """Bring the schema up to ``SCHEMA_VERSION``; refuse a newer one. Returns the version
    found before. Replicas starting together serialise on an advisory lock."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(VERSION_TABLE)
        row = conn.execute("SELECT version FROM fleet_schema WHERE id = 1").fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise SchemaError(where_ or "the database",
                              f"its fleet schema is version {found}, newer than the "
                              f"{SCHEMA_VERSION} this sensor-auditd knows: upgrade "
                              f"sensor-auditd (an older one would misread it)")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
        conn.execute("INSERT INTO fleet_schema (id, version) VALUES (1, %s) "
                     "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
                     "migrated_at = now()", (SCHEMA_VERSION,))
    return found


# --------------------------------------------------------------------------- staging

@dataclass(frozen=True, slots=True)
class _Stage:
    """One staging table: the target's columns, copied into, then moved."""

    name: str
    columns: tuple[str, ...]
    moves: tuple[str, ...]
    """Statements moving the staged rows into the fleet's tables (each counted)."""
    counts_as: tuple[str, ...] = field(default=())
    """The ``WriteCounts`` field each move adds its row count to."""
    all_new: str = ""
    """The first move as a plain ``INSERT`` (no ``ON CONFLICT``), tried first in a
    savepoint. When every staged row is new to the fleet (a first import, live traffic) it
    does what the first move does -- every row inserted, and counted, exactly once -- without
    ON CONFLICT's speculative insertion (an index probe and a confirmation record per row:
    about half the move's time). A unique violation (a redelivered, replayed or re-imported
    record) rolls back to the savepoint and the first move runs as written."""


_FINDING_COLUMNS: Final = ("site", "gateway", "kind", "device", "sensor", "window_end",
                           "window_start", "status", "severity", "cause", "reference",
                           "bias", "onset", "finding")
_LATEST_COLUMNS: Final = ("site", "device", "kind", "sensor", "gateway", "window_end",
                          "window_start", "status", "severity", "causes", "reference", "bias",
                          "onset", "comparison", "evidence")
_STAGED_FINDING_COLUMNS: Final = (*_FINDING_COLUMNS, "causes", "comparison", "evidence")
_ATTRIBUTES: Final = ("model", "firmware", "hardware_rev", "serial", "installed_at",
                      "calibrated_at", "calibration_due")
_DEVICE_COLUMNS: Final = ("site", "device", "gateway", "as_of", *_ATTRIBUTES, "last_seen",
                          "causes", "extra")
_VERSION_COLUMNS: Final = ("site", "device", "hash", "first_seen", "gateway", *_ATTRIBUTES)


def _cols(columns: Sequence[str]) -> str:
    return ", ".join(columns)


def _set(columns: Sequence[str]) -> str:
    return ", ".join(f"{c} = excluded.{c}" for c in columns)


_DRIFT_X: Final = "(window_start + window_end) / 2 / 86400.0 - 20000"
"""A finding's time in the drift sums: its window's midpoint in days from 2024-10-04, so
that the sums of squares stay small enough for double precision over years of audits."""


def _all_new(stage: _Stage) -> _Stage:
    """``stage`` with ``all_new``: its first move without ``ON CONFLICT DO NOTHING``."""
    plain = stage.moves[0].replace(" ON CONFLICT DO NOTHING ", " ", 1)
    if plain == stage.moves[0]:
        raise ValueError(f"{stage.name}: its first move has no ON CONFLICT DO NOTHING")
    return _Stage(stage.name, stage.columns, stage.moves, stage.counts_as, plain)


_STAGES: Final = (
    _all_new(_Stage(
        "stage_findings", _STAGED_FINDING_COLUMNS,
        (f"WITH inserted AS (INSERT INTO findings ({_cols(_FINDING_COLUMNS)}) "
         f"SELECT {_cols(_FINDING_COLUMNS)} FROM stage_findings "
         "ON CONFLICT DO NOTHING "
         f"RETURNING site, device, sensor, kind, status, cause, bias, {_DRIFT_X} AS x), "
         # Only findings new to the fleet add to their stream's drift sums: exactly once.
         "drift AS (INSERT INTO stream_drift AS d (site, device, sensor, n, sx, sy, sxx, sxy, "
         "syy, first_x, last_x) SELECT site, device, sensor, count(*), sum(x), sum(bias), "
         "sum(x * x), sum(x * bias), sum(bias * bias), min(x), max(x) FROM inserted "
         "WHERE kind = 'calibration' AND sensor <> '' AND bias IS NOT NULL "
         "AND status <> 'insufficient_data' AND cause IS DISTINCT FROM 'reference_fault' "
         "GROUP BY site, device, sensor "
         "ON CONFLICT (site, device, sensor) DO UPDATE SET n = d.n + excluded.n, "
         "sx = d.sx + excluded.sx, sy = d.sy + excluded.sy, sxx = d.sxx + excluded.sxx, "
         "sxy = d.sxy + excluded.sxy, syy = d.syy + excluded.syy, "
         "first_x = LEAST(d.first_x, excluded.first_x), "
         "last_x = GREATEST(d.last_x, excluded.last_x) RETURNING 1) "
         "SELECT count(*) FROM inserted",
         f"INSERT INTO findings_latest ({_cols(_LATEST_COLUMNS)}) "
         f"SELECT DISTINCT ON (site, device, kind, sensor) {_cols(_LATEST_COLUMNS)} "
         "FROM stage_findings "
         "ORDER BY site, device, kind, sensor, window_end DESC, gateway DESC "
         "ON CONFLICT (site, device, kind, sensor) DO UPDATE SET "
         f"{_set(_LATEST_COLUMNS[4:])} "
         "WHERE (excluded.window_end, excluded.gateway) > "
         "(findings_latest.window_end, findings_latest.gateway)"),
        ("findings", ""))),
    _Stage(
        "stage_devices", _DEVICE_COLUMNS,
        (f"INSERT INTO devices ({_cols(_DEVICE_COLUMNS)}) "
         f"SELECT DISTINCT ON (site, device) {_cols(_DEVICE_COLUMNS)} FROM stage_devices "
         "ORDER BY site, device, as_of DESC, gateway DESC "
         f"ON CONFLICT (site, device) DO UPDATE SET {_set(_DEVICE_COLUMNS[2:])} "
         "WHERE (excluded.as_of, excluded.gateway) > (devices.as_of, devices.gateway)",),
        ("inventory",)),
    _Stage(
        "stage_versions", _VERSION_COLUMNS,
        (f"INSERT INTO device_versions ({_cols(_VERSION_COLUMNS)}) "
         f"SELECT DISTINCT ON (site, device, hash) {_cols(_VERSION_COLUMNS)} "
         "FROM stage_versions ORDER BY site, device, hash, first_seen, gateway "
         "ON CONFLICT (site, device, hash) DO UPDATE SET first_seen = excluded.first_seen, "
         "gateway = excluded.gateway "
         "WHERE excluded.first_seen < device_versions.first_seen",),
        ("versions",)),
    _Stage(
        "stage_reports", ("site", "gateway", "at", "streams", "passed", "failed",
                          "insufficient", "payload"),
        ("INSERT INTO audit_reports SELECT * FROM stage_reports ON CONFLICT DO NOTHING",),
        ("reports",)),
    _Stage(
        "stage_tickets", ("site", "gateway", "idempotency_key", "ticket_id", "event", "at",
                          "device", "sensor", "cause", "severity", "state", "opened_at",
                          "resolved_at", "payload"),
        ("INSERT INTO tickets SELECT * FROM stage_tickets ON CONFLICT DO NOTHING",),
        ("tickets",)),
    _Stage(
        "stage_rejected", ("hash", "received_at", "topic", "reason", "detail", "payload"),
        ("INSERT INTO rejected SELECT DISTINCT ON (hash) * FROM stage_rejected "
         "ON CONFLICT DO NOTHING",),
        ("rejected",)),
    # Every record says its gateway was heard from at the time its content states; the
    # latest of them wins, and a status changes the state only when it is newer and other.
    _Stage(
        "stage_heard", ("site", "gateway", "heard", "state", "state_at", "report_at"),
        ("INSERT INTO gateways (site, gateway, last_heard, last_report_at) "
         "SELECT site, gateway, max(heard), max(report_at) FROM stage_heard "
         "GROUP BY site, gateway "
         "ON CONFLICT (site, gateway) DO UPDATE SET "
         "last_heard = GREATEST(gateways.last_heard, excluded.last_heard), "
         "last_report_at = GREATEST(gateways.last_report_at, excluded.last_report_at) "
         "WHERE excluded.last_heard > gateways.last_heard "
         "OR excluded.last_report_at > coalesce(gateways.last_report_at, '-Infinity')",
         "UPDATE gateways g SET state = s.state, state_at = s.state_at "
         "FROM (SELECT DISTINCT ON (site, gateway) site, gateway, state, state_at "
         "      FROM stage_heard WHERE state IS NOT NULL "
         "      ORDER BY site, gateway, state_at DESC, state) s "
         "WHERE g.site = s.site AND g.gateway = s.gateway "
         "AND g.state IS DISTINCT FROM s.state "
         "AND s.state_at > coalesce(g.state_at, '-Infinity')"),
        ("", "statuses")),
)



def _create_stages(conn: psycopg.Connection[Any]) -> None:
    """Per-connection staging tables, emptied at each commit (the pool's ``configure``)."""
    with conn.transaction():
        for stage in _STAGES:
            if stage.name == "stage_findings":
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS stage_findings "
                             "(LIKE findings, causes text[], comparison text, evidence text) "
                             "ON COMMIT DELETE ROWS")
                continue
            source = {"stage_devices": "devices",
                      "stage_versions": "device_versions", "stage_reports": "audit_reports",
                      "stage_tickets": "tickets", "stage_rejected": "rejected"}.get(stage.name)
            if source:
                conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage.name} "
                             f"(LIKE {source} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
            else:
                conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage.name} "
                             "(site text, gateway text, heard double precision, state text, "
                             "state_at double precision, report_at double precision) "
                             "ON COMMIT DELETE ROWS")


# --------------------------------------------------------------------------- rows

def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=True,
                      default=str)


def version_hash(item: Inventory) -> str:
    """The content key of a device version: its attributes, canonically."""
    return hashlib.sha256(_dumps(item.attributes()).encode()).hexdigest()[:32]


_NUMBER: Final = (int, float)
"""``isinstance``'s tuple form of ``int | float``: the same test, no union built per row."""


def finding_row(origin: Origin, f: Finding, published: str | None = None
                ) -> tuple[Any, ...]:
    """A finding as the fleet stores it: from its published form only, so a finding
    received live and the same finding imported from the gateway's store are one row
    (``jsonb`` keeps the content, not the text's spacing or key order)."""
    bias = f.metrics.get("bias")
    comparison = f.context.get("comparison")
    return (origin.site, origin.gateway, f.kind, f.device, f.sensor or "", f.window_end,
            f.window_start, f.status, f.severity, f.causes[0].cause if f.causes else None,
            f.reference, float(bias) if isinstance(bias, _NUMBER) else None, f.onset,
            published if published is not None else _dumps(f.to_json()),
            [c.cause for c in f.causes], comparison if isinstance(comparison, str) else None,
            f.causes[0].evidence if f.causes else "")


@dataclass(frozen=True, slots=True)
class StagedBatch:
    """A batch of records as COPY data (text format), by staging table: what
    ``FleetStore.stage`` makes and ``FleetStore.write`` sends."""

    data: dict[str, bytes]


class _Collect(Writer):
    """A COPY writer that keeps the formatted data instead of sending it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: Buffer) -> None:
        self.chunks.append(bytes(data))


@dataclass(slots=True)
class _Rows:
    by_stage: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    def add(self, stage: str, row: tuple[Any, ...]) -> None:
        self.by_stage.setdefault(stage, []).append(row)


def _rows(records: Iterable[Upstream]) -> _Rows:
    """The staging rows of a batch. Every record says its gateway was heard from; those
    that carry no state are reduced here to one row per gateway: the latest time heard
    and the latest report (what the move takes the ``max`` of anyway), instead of a row per
    record: a batch of 10,000 findings from a few gateways stages a few rows, not 10,000."""
    rows = _Rows()
    findings = rows.by_stage.setdefault("stage_findings", [])
    heard_at: dict[tuple[str, str], tuple[float, float | None]] = {}
    for r in records:
        report_at: float | None = None
        if isinstance(r, FleetFinding):
            findings.append(finding_row(r.origin, r.finding, r.published))
            heard = r.finding.window_end
        elif isinstance(r, Inventory):
            o = r.origin
            rows.add("stage_devices", (o.site, r.device, o.gateway, r.as_of,
                                       *r.attributes().values(), r.last_seen,
                                       _dumps(list(r.causes)), _dumps(dict(r.extra))))
            rows.add("stage_versions", (o.site, r.device, version_hash(r), r.as_of,
                                        o.gateway, *r.attributes().values()))
            heard = r.as_of
        elif isinstance(r, AuditReport):
            o = r.origin
            rows.add("stage_reports", (o.site, o.gateway, r.at, r.streams, r.passed,
                                       r.failed, r.insufficient, _dumps(dict(r.payload))))
            heard = report_at = r.at
        elif isinstance(r, TicketEvent):
            o = r.origin
            rows.add("stage_tickets", (o.site, o.gateway, r.idempotency_key, r.ticket_id,
                                       r.event, r.at, r.device, r.sensor, r.cause,
                                       r.severity, r.state, r.opened_at, r.resolved_at,
                                       _dumps(dict(r.payload))))
            heard = r.at
        elif isinstance(r, GatewayStatus):
            o = r.origin
            rows.add("stage_heard", (o.site, o.gateway, r.at, r.state, r.at, None))
            continue
        elif isinstance(r, Rejected):
            digest = hashlib.sha256(r.topic.encode("utf-8", "replace") + b"\0"
                                    + r.payload).hexdigest()
            rows.add("stage_rejected", (digest, r.received_at, r.topic, r.reason,
                                        r.detail, r.payload))
            continue
        else:  # pragma: no cover - the union is closed
            raise TypeError(f"not an upstream record: {type(r).__name__}")
        key = (r.origin.site, r.origin.gateway)
        before = heard_at.get(key)
        if before is None:
            heard_at[key] = (heard, report_at)
            continue
        last_heard, last_report = before
        if heard > last_heard or (report_at is not None
                                  and (last_report is None or report_at > last_report)):
            heard_at[key] = (max(heard, last_heard),
                             last_report if report_at is None else report_at
                             if last_report is None else max(report_at, last_report))
    for (site, gateway), (last_heard, last_report) in heard_at.items():
        rows.add("stage_heard", (site, gateway, last_heard, None, None, last_report))
    return rows


# --------------------------------------------------------------------------- the store

class FleetStore:
    """The fleet's tables behind a connection pool. ``open`` checks and migrates the
    schema; ``write`` is the one write; the read methods serve the report and status."""

    def __init__(self, dsn: str, pool: ConnectionPool[Any]) -> None:
        self._dsn = dsn
        self._pool = pool

    @classmethod
    def open(cls, dsn: str, *, max_connections: int = 4, migrate_schema: bool = True
             ) -> FleetStore:
        """Connect (``DatabaseError`` naming host and port if it cannot), check the schema
        (``SchemaError`` if newer) and migrate it, then open the pool."""
        with _connect(dsn) as conn:
            if migrate_schema:
                migrate(conn, where(dsn))
            else:
                check_version(conn, where(dsn))
        pool: ConnectionPool[Any] = ConnectionPool(
            dsn, min_size=1, max_size=max_connections, open=False,
            configure=_create_stages, kwargs={"connect_timeout": CONNECT_TIMEOUT_S},
            name="fleet")
        try:
            pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            pool.close()
            raise DatabaseError(where(dsn), "cannot connect (the pool timed out)") from None
        return cls(dsn, pool)

    @property
    def where(self) -> str:
        return where(self._dsn)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> FleetStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, its failures as ``StoreError`` (transient: retry)."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreError(f"fleet database at {self.where}: no connection: {exc}") from exc
        except psycopg.OperationalError as exc:
            raise StoreError(f"fleet database at {self.where}: {exc}") from exc
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise StoreError(f"fleet database at {self.where} refused a value: {exc}",
                             transient=False, code=exc.sqlstate) from exc

    def stage(self, records: Iterable[Upstream]) -> StagedBatch:
        """A batch of records turned into the COPY data ``write`` sends, without writing
        it: what a reader thread does while the database works on the previous batch
        (``fleet import``), so that the writer's turn is only the database's work.

        Formatted by psycopg's own COPY formatter on one of the pool's connections (its
        adapters and encoding), exactly as ``write`` would format the records."""
        rows = _rows(records)
        data: dict[str, bytes] = {}
        with self.connection() as conn, conn.cursor() as cur:
            for stage in _STAGES:
                staged = rows.by_stage.get(stage.name)
                if not staged:
                    continue
                collected = _Collect()
                with Copy(cur, binary=False, writer=collected) as copy:
                    for row in staged:
                        copy.write_row(row)
                data[stage.name] = b"".join(collected.chunks)
        return StagedBatch(data)

    def write(self, records: Iterable[Upstream] | StagedBatch, *, durable: bool = True
              ) -> WriteCounts:
        """Store a batch of upstream records (or a batch ``stage`` made of them) in one
        transaction: all of it or nothing. Writing a record already stored changes nothing
        (``WriteCounts`` all zero).

        ``durable=False`` lets the commit return before its WAL is flushed
        (``synchronous_commit = off`` for this transaction): a database crash may then lose
        the last commits, never half of one. Only for a writer that can simply run again
        (the import); the live consumer acknowledges on return and keeps the default."""
        rows = records.data if isinstance(records, StagedBatch) else _rows(records).by_stage
        counts: dict[str, int] = {}
        with self.connection() as conn, conn.transaction():
            if not durable:
                conn.execute("SET LOCAL synchronous_commit = off")
            for stage in _STAGES:
                staged = rows.get(stage.name)
                if not staged:
                    continue
                query = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(stage.name),
                    sql.SQL(", ").join(map(sql.Identifier, stage.columns)))
                with conn.cursor() as cur:
                    with cur.copy(query) as copy:
                        if isinstance(staged, bytes):
                            copy.write(staged)
                        else:
                            for row in staged:
                                copy.write_row(row)
                    for k, (statement, name) in enumerate(
                            zip(stage.moves, stage.counts_as, strict=True)):
                        if k == 0 and stage.all_new:
                            _execute_all_new(conn, cur, stage.all_new, statement)
                        else:
                            cur.execute(statement)
                        if not name:
                            continue
                        if cur.description is not None:  # the statement counts itself
                            counted = cur.fetchone()
                            done = int(counted[0]) if counted else 0
                        else:
                            done = max(cur.rowcount, 0)
                        counts[name] = counts.get(name, 0) + done
        return WriteCounts(**counts)

    def heartbeat(self, beat: ReplicaBeat) -> None:
        """A ``fleet run`` replica is alive (``fleet status`` lists it)."""
        with self.connection() as conn:
            conn.execute(
                "INSERT INTO replicas (replica, host, pid, grp, started_at, heartbeat_at, "
                "messages, backlog) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (replica) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
                "grp = excluded.grp, started_at = excluded.started_at, "
                "heartbeat_at = excluded.heartbeat_at, messages = excluded.messages, "
                "backlog = excluded.backlog",
                (beat.replica, beat.host, beat.pid, beat.group, beat.started_at, beat.at,
                 beat.messages, beat.backlog))

    def schema_version(self) -> int:
        with self.connection() as conn:
            row = conn.execute("SELECT version FROM fleet_schema WHERE id = 1").fetchone()
            return int(row[0]) if row else 0


def _execute_all_new(conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any], all_new: str,
                     statement: str) -> None:
    """``all_new`` in a savepoint; on a unique violation, ``statement`` instead (see
    ``_Stage.all_new``). Either leaves its result on ``cur``."""
    try:
        with conn.transaction():
            cur.execute(all_new)
        return
    except psycopg.errors.UniqueViolation:
        pass
    cur.execute(statement)


def check_version(conn: psycopg.Connection[Any], where_: str) -> int:
    """The schema's version, refusing a newer one or a database never migrated."""
    with conn.transaction():
        exists = conn.execute("SELECT to_regclass('fleet_schema')").fetchone()
        if not exists or exists[0] is None:
            raise SchemaError(where_, "no fleet schema: run `sensor-auditd fleet import` or "
                              "`fleet run` once to create it")
        row = conn.execute("SELECT version FROM fleet_schema WHERE id = 1").fetchone()
    found = int(row[0]) if row else 0
    if found > SCHEMA_VERSION:
        raise SchemaError(where_, f"its fleet schema is version {found}, newer than the "
                          f"{SCHEMA_VERSION} this sensor-auditd knows: upgrade sensor-auditd")
    return found


# --------------------------------------------------------------------------- reads

_VERDICTS: Final = """
    SELECT site, gateway, device, NULLIF(sensor, ''), kind, status, severity, causes,
           reference, bias, onset, window_start, window_end, comparison, evidence
    FROM findings_latest
"""
_FAILING_JSON: Final = """
    SELECT l.site, l.device, l.kind, l.sensor, f.finding
    FROM findings_latest l
    JOIN findings f ON f.site = l.site AND f.gateway = l.gateway AND f.kind = l.kind
         AND f.device = l.device AND f.sensor = l.sensor AND f.window_end = l.window_end
    WHERE l.status = 'fail'
"""
# One stream's bias against time (the windows' midpoints, in days): slope, audits, span,
# and the slope's standard error from the residuals, from the sums `write` keeps, so the
# report reads one row a stream however long the history.
_DRIFTS: Final = """
    SELECT site, device, sensor, sxy_c / sxx_c / 86400.0, n, (last_x - first_x) * 86400.0,
           sqrt(GREATEST(syy_c - sxy_c * sxy_c / sxx_c, 0) / (n - 2) / sxx_c) / 86400.0
    FROM (SELECT site, device, sensor, n, first_x, last_x,
                 sxx - sx * sx / n AS sxx_c, sxy - sx * sy / n AS sxy_c,
                 syy - sy * sy / n AS syy_c
          FROM stream_drift WHERE n >= 3) AS centred
    WHERE sxx_c > 0
"""
_TICKETS: Final = """
    SELECT DISTINCT ON (site, gateway, ticket_id) site, gateway, ticket_id, device, sensor,
           cause, severity, state, event, opened_at, at
    FROM tickets ORDER BY site, gateway, ticket_id, at DESC, idempotency_key DESC
"""


@dataclass(frozen=True, slots=True)
class GatewayRow:
    site: str
    gateway: str
    state: str | None
    state_at: float | None
    last_heard: float
    last_report_at: float | None
    devices: int
    failing: int


@dataclass(frozen=True, slots=True)
class FleetStatus:
    gateways: tuple[GatewayRow, ...]
    replicas: tuple[ReplicaBeat, ...]
    rejected: dict[str, int]
    """Rejected upstream messages by reason."""
    findings: int
    devices: int


def with_onset_statement(v: Verdict, published: Mapping[str, Any] | None) -> Verdict:
    """``v`` with how its gateway stated its onset (uncertainty, or only a bracket), read
    from the finding's published ``context``, as the gateway's own cohort test reads it."""
    context = published.get("context") if isinstance(published, Mapping) else None
    if not isinstance(context, Mapping):
        return v
    return replace(v, onset_uncertainty_s=stated_uncertainty(context),
                   onset_dated=not is_bracketed(context))


def read_facts(store: FleetStore, now: float, profiles: Mapping[str, Profile]) -> FleetFacts:
    """Everything the fleet report is computed from, in one read-only snapshot."""
    with store.connection() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        verdicts = [Verdict(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(r[7]), r[8],
                            r[9], r[10], r[11], r[12], r[13], r[14])
                    for r in conn.execute(_VERDICTS)]
        findings = {(r[0], r[1], r[2], r[3]): r[4] for r in conn.execute(_FAILING_JSON)}
        verdicts = [with_onset_statement(v, findings.get((v.site, v.device, v.kind,
                                                          v.sensor or "")))
                    for v in verdicts]
        devices = [Device(*row) for row in conn.execute(
            "SELECT site, device, gateway, model, firmware, hardware_rev, installed_at, "
            "calibrated_at, calibration_due, last_seen FROM devices")]
        seen = [FirmwareSeen(*row) for row in conn.execute(
            "SELECT site, device, firmware, first_seen FROM device_versions")]
        drifts = [DeviceDrift(r[0], r[1], r[2], r[3], r[4], r[5], r[6] or 0.0)
                  for r in conn.execute(_DRIFTS)]
        tickets = [Ticket(*row) for row in conn.execute(_TICKETS)]
    return FleetFacts(now, tuple(verdicts), tuple(devices), tuple(seen), tuple(drifts),
                      tuple(tickets), dict(profiles), findings)


def read_status(store: FleetStore) -> FleetStatus:
    with store.connection() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        gateways = tuple(GatewayRow(*row) for row in conn.execute(
            "SELECT g.site, g.gateway, g.state, g.state_at, g.last_heard, g.last_report_at, "
            "  (SELECT count(*) FROM devices d WHERE d.site = g.site "
            "     AND d.gateway = g.gateway), "
            "  (SELECT count(*) FROM findings_latest f WHERE f.site = g.site "
            "     AND f.gateway = g.gateway AND f.status = 'fail') "
            "FROM gateways g ORDER BY g.site, g.gateway"))
        replicas = tuple(ReplicaBeat(*row) for row in conn.execute(
            "SELECT replica, host, pid, grp, started_at, heartbeat_at, messages, backlog "
            "FROM replicas ORDER BY replica"))
        rejected = dict(conn.execute(
            "SELECT reason, count(*) FROM rejected GROUP BY reason ORDER BY reason"
        ).fetchall())
        counts = conn.execute("SELECT (SELECT count(*) FROM findings), "
                              "(SELECT count(*) FROM devices)").fetchone()
    assert counts is not None
    return FleetStatus(gateways, replicas, rejected, counts[0], counts[1])
