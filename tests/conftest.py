from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

from brokers import Mosquitto, mosquitto_binary

# The statistical property tests assert that rare events (a healthy window failing, a
# cohort looking significant by chance) do not happen over their draws; their measured
# rates are far below 1 %, but a fresh random seed on every CI run would still turn such a
# rate into a flaky build. .ci/run therefore draws the same examples every time
# (HYPOTHESIS_PROFILE=reproducible: a red build is reproducible and means the code changed),
# while a plain local `pytest` draws fresh ones, to keep looking for trouble.
settings.register_profile("reproducible", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "explore"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private broker for one test, stopped by its pid afterwards."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; .ci/run installs it with apt-get")
    broker = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET: (socket, its path)."""
    # A short directory: AF_UNIX paths are limited to 108 bytes.
    directory = tempfile.mkdtemp(prefix="sa-notify-", dir="/tmp")
    path = str(Path(directory) / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def fleet_dsn() -> Iterator[str]:
    """A PostgreSQL database of the test's own (tests/postgres.py), dropped afterwards."""
    from postgres import scratch_database  # psycopg: the dev extra installs it

    with scratch_database() as dsn:
        yield dsn
