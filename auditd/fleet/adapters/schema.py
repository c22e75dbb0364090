"""The fleet's PostgreSQL schema, grown by appending migrations, never editing one.

``fleet_schema`` holds the version. At start (``FleetStore.open``) the service takes an
advisory lock, so that replicas starting together migrate once, applies every migration
above the database's version, each in its own transaction with the version bump, and
refuses a database whose version is newer than it knows (``SchemaError``: a newer
sensor-auditd migrated it; running an older one against it would misread it).

Keys are chosen so that writing the same message twice changes nothing (docs/fleet.md):

* ``findings``: (site, gateway, kind, device, sensor, window_end): one audit's verdict on
  one stream; ``''`` stands for "no sensor" (a metadata finding);
* ``findings_latest``: (site, device, kind, sensor): the newest of those, replaced only by
  a later window (ties: the later gateway name, so the order of arrival never matters);
* ``devices``: (site, device): the newest inventory, replaced only by a later ``as_of``;
* ``device_versions``: (site, device, attributes' hash), ``first_seen`` the earliest;
* ``gateways``: (site, gateway): state changes only on a later status of another state;
* ``audit_reports``: (site, gateway, at); ``tickets``: (site, gateway, idempotency key);
* ``rejected``: the sha256 of topic and payload;
* ``stream_drift``: (site, device, sensor); only findings new to ``findings`` add to it.
"""

from __future__ import annotations

from typing import Final

_V1: Final = (
    """
    CREATE TABLE gateways (
        site text NOT NULL,
        gateway text NOT NULL,
        state text,
        state_at double precision,
        last_heard double precision NOT NULL,
        last_report_at double precision,
        PRIMARY KEY (site, gateway)
    )
    """,
    """
    CREATE TABLE findings (
        site text NOT NULL,
        gateway text NOT NULL,
        kind text NOT NULL,
        device text NOT NULL,
        sensor text NOT NULL,
        window_end double precision NOT NULL,
        window_start double precision NOT NULL,
        status text NOT NULL,
        severity text NOT NULL,
        cause text,
        reference text,
        bias double precision,
        onset double precision,
        finding jsonb NOT NULL,
        PRIMARY KEY (site, gateway, kind, device, sensor, window_end)
    )
    """,
    "CREATE INDEX findings_model_scan ON findings (kind, sensor, device, window_end)",
    # The newest verdict per stream, what the report reads; its published JSON stays in
    # `findings` (joined by the key) rather than being stored twice.
    """
    CREATE TABLE findings_latest (
        site text NOT NULL,
        device text NOT NULL,
        kind text NOT NULL,
        sensor text NOT NULL,
        gateway text NOT NULL,
        window_end double precision NOT NULL,
        window_start double precision NOT NULL,
        status text NOT NULL,
        severity text NOT NULL,
        causes text[] NOT NULL,
        reference text,
        bias double precision,
        onset double precision,
        comparison text,
        evidence text NOT NULL,
        PRIMARY KEY (site, device, kind, sensor)
    )
    """,
    """
    CREATE TABLE devices (
        site text NOT NULL,
        device text NOT NULL,
        gateway text NOT NULL,
        as_of double precision NOT NULL,
        model text,
        firmware text,
        hardware_rev text,
        serial text,
        installed_at text,
        calibrated_at text,
        calibration_due text,
        last_seen double precision,
        causes jsonb NOT NULL DEFAULT '[]',
        extra jsonb NOT NULL DEFAULT '{}',
        PRIMARY KEY (site, device)
    )
    """,
    "CREATE INDEX devices_model ON devices (model, firmware)",
    """
    CREATE TABLE device_versions (
        site text NOT NULL,
        device text NOT NULL,
        hash text NOT NULL,
        first_seen double precision NOT NULL,
        gateway text NOT NULL,
        model text,
        firmware text,
        hardware_rev text,
        serial text,
        installed_at text,
        calibrated_at text,
        calibration_due text,
        PRIMARY KEY (site, device, hash)
    )
    """,
    """
    CREATE TABLE audit_reports (
        site text NOT NULL,
        gateway text NOT NULL,
        at double precision NOT NULL,
        streams integer NOT NULL,
        passed integer NOT NULL,
        failed integer NOT NULL,
        insufficient integer NOT NULL,
        payload jsonb NOT NULL,
        PRIMARY KEY (site, gateway, at)
    )
    """,
    """
    CREATE TABLE tickets (
        site text NOT NULL,
        gateway text NOT NULL,
        idempotency_key text NOT NULL,
        ticket_id text NOT NULL,
        event text NOT NULL,
        at double precision NOT NULL,
        device text NOT NULL,
        sensor text,
        cause text,
        severity text NOT NULL,
        state text NOT NULL,
        opened_at double precision,
        resolved_at double precision,
        payload jsonb NOT NULL,
        PRIMARY KEY (site, gateway, idempotency_key)
    )
    """,
    "CREATE INDEX tickets_ticket ON tickets (ticket_id, at)",
    """
    CREATE TABLE rejected (
        hash text PRIMARY KEY,
        received_at double precision NOT NULL,
        topic text NOT NULL,
        reason text NOT NULL,
        detail text NOT NULL,
        payload bytea NOT NULL
    )
    """,
    # Per stream, the sums a least-squares line of bias against time needs (x: the
    # window's midpoint in days from 2024-10-04), added to by every finding new to the
    # fleet: the drift rate costs one row a stream, however long the history.
    """
    CREATE TABLE stream_drift (
        site text NOT NULL,
        device text NOT NULL,
        sensor text NOT NULL,
        n bigint NOT NULL,
        sx double precision NOT NULL,
        sy double precision NOT NULL,
        sxx double precision NOT NULL,
        sxy double precision NOT NULL,
        syy double precision NOT NULL,
        first_x double precision NOT NULL,
        last_x double precision NOT NULL,
        PRIMARY KEY (site, device, sensor)
    )
    """,
    # One row per `fleet run` replica, upserted by its heartbeat (ReplicaBeat).
    """
    CREATE TABLE replicas (
        replica text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        grp text NOT NULL,
        started_at double precision NOT NULL,
        heartbeat_at double precision NOT NULL,
        messages bigint NOT NULL,
        backlog integer NOT NULL
    )
    """,
)

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (_V1,)
"""Migration ``i`` (1-based) takes the schema from version ``i - 1`` to ``i``. Append only."""

SCHEMA_VERSION: Final = len(MIGRATIONS)

VERSION_TABLE: Final = """
    CREATE TABLE IF NOT EXISTS fleet_schema (
        id integer PRIMARY KEY CHECK (id = 1),
        version integer NOT NULL,
        migrated_at timestamptz NOT NULL DEFAULT now()
    )
"""

MIGRATION_LOCK: Final = 0x5E7F1EE7
"""The advisory lock key replicas take while they check and migrate the schema."""
