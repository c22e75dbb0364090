"""A database of its own for each test, on the PostgreSQL at 127.0.0.1:5432 (user postgres,
trust; .ci/run starts the cluster when it is not running): created by the fixture, dropped
afterwards, whatever the test did to it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

SERVER = os.environ.get("FLEET_TEST_SERVER", "postgresql://postgres@127.0.0.1:5432")


def _admin() -> psycopg.Connection:
    return psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=5)


@contextmanager
def scratch_database(prefix: str = "fleet_test") -> Iterator[str]:
    """The DSN of a new, empty database, dropped (with any sessions left on it) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{SERVER}/{name}"
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
