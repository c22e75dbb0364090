"""The broker's and the disk's bad days, with real parts: a mosquitto restarted under load,
a database filled to the last byte of a real (tmpfs) filesystem, a database locked by
another process, and a SIGHUP with a broken profile. Nothing acknowledged is ever lost.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from daemon_proc import DaemonProcess, telemetry, write_config
from disks import fill, tmpfs
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.broker


def _count(db: Path, sql: str) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return int(conn.execute(sql).fetchone()[0])


def _wait(predicate, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _events(daemon: DaemonProcess, name: str) -> list[dict]:
    out = []
    for line in daemon.lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == name:
            out.append(event)
    return out


class Device:
    """A device-side client that keeps publishing through a broker outage (paho keeps
    QoS 1 messages and sends them again once it reconnects)."""

    def __init__(self, port: int, client_id: str = "device-load") -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def announce(self, start: float) -> None:
        """th-north-01 says it is a th-200 (ref-north's model comes from the references)."""
        self.client.publish("fleet/north/th-north-01/meta", json.dumps(
            {"ts": start, "model": "th-200"}).encode(), qos=1, retain=True).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _reading(i: int, start: float) -> tuple[str, bytes]:
    device = "ref-north" if i % 2 == 0 else "th-north-01"
    return (f"fleet/north/{device}/telemetry",
            telemetry(start + i // 2, {"temperature": 12 + (i % 100) / 50}))


# --------------------------------------------------------------------------- broker outage


def test_broker_restart_under_load_loses_nothing_and_reconnects_with_jitter(
        mosquitto, tmp_path: Path) -> None:
    """QoS 1 readings keep coming while the broker is down for 10 s (a longer outage only
    means more of the same reconnect attempts, capped at reconnect_max_s = 2 s here)."""
    db = tmp_path / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db,
                          audit_interval="2s", first_run_delay="1s", keepalive=5)
    daemon = DaemonProcess(config).start()
    device = Device(mosquitto.port)
    total, rate = 2000, 100.0
    start = time.time() - 3600
    device.announce(start)
    publishing = threading.Thread(target=lambda: [
        (device.client.publish(*_reading(i, start), qos=1), time.sleep(1 / rate))
        for i in range(total)], daemon=True)
    outbox_during: list[int] = []
    try:
        publishing.start()
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") > 200, "no ingest", 30)
        mosquitto.stop()
        outage_started = time.monotonic()
        while time.monotonic() - outage_started < 10:
            time.sleep(1)
            outbox_during.append(_count(db, "SELECT count(*) FROM outbox"))
        mosquitto.start()
        publishing.join(60)
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") >= total,
              "readings missing after the broker returned", 40)
        _wait(lambda: _count(db, "SELECT count(*) FROM outbox") == 0, "outbox not drained", 30)
    finally:
        device.close()
        assert daemon.terminate() == 0
    assert _count(db, "SELECT count(*) FROM readings") == total  # each once
    assert max(outbox_during) > 0  # audits went on during the outage, their output waited
    failed = _events(daemon, "broker_connect_failed")
    delays = [e["retry_in_s"] for e in failed]
    assert len(failed) >= 3, failed
    assert all(0.5 <= d <= 2.0 for d in delays), delays  # min 1 s doubling to max 2 s, jittered
    assert len(set(delays)) > 1, delays
    assert all("refused" in e["error"] for e in failed)
    counters = dict(sqlite3.connect(db).execute("SELECT name, value FROM counters").fetchall())
    print(f"\noutage: {total} readings sent, {_count(db, 'SELECT count(*) FROM readings')} "
          f"stored, {counters.get('readings_duplicate', 0)} redelivered duplicates absorbed, "
          f"{len(failed)} failed reconnect attempts (delays {delays}), outbox peak "
          f"{max(outbox_during)} drained to 0")


# --------------------------------------------------------------------------- disk full


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a real ENOSPC, not a simulated one."""
    with tmpfs(tmp_path / "small", "3m") as mount_point:
        yield mount_point


FULL_BATCH = 600
"""Readings sent at a time onto a full volume, until a write fails."""


def test_disk_full_stops_acknowledging_counts_it_and_recovers_without_loss(
        mosquitto, tmp_path: Path, tiny_filesystem: Path) -> None:
    db = tiny_filesystem / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db)
    daemon = DaemonProcess(config).start()
    device = Device(mosquitto.port)
    start = time.time() - 3600
    device.announce(start)
    first, second = 200, 0
    try:
        for i in range(first):
            device.client.publish(*_reading(i, start), qos=1)
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") >= first, "no ingest", 30)
        filler = fill(tiny_filesystem)
        # Readings until the store needs a block the volume no longer has: how many still
        # fit in the space its write-ahead log holds depends on where its last checkpoint
        # left it (once, all of a fixed 600 did, and no write failed).
        while not _events(daemon, "store_write_failed"):
            assert second < 10 * FULL_BATCH, "the store never ran out of space"
            infos = [device.client.publish(*_reading(first + second + i, start), qos=1)
                     for i in range(FULL_BATCH)]
            for info in infos:
                info.wait_for_publish(30)  # the broker has them all
            second += FULL_BATCH
            with contextlib.suppress(AssertionError):
                _wait(lambda: bool(_events(daemon, "store_write_failed")), "", 10)
        failure = daemon.wait_event(lambda e: e.get("event") == "store_write_failed", 30)
        assert failure["acknowledged"] is False and "full" in failure["error"].lower()
        stored_while_full = _count(db, "SELECT count(*) FROM readings")
        assert stored_while_full < first + second
        # Killed while the disk is full: only what was committed had been acknowledged,
        # so the broker still holds the rest for the daemon's session.
        daemon.kill()
        filler.unlink()
        restarted = DaemonProcess(config).start()
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") >= first + second,
              "readings lost across the full disk", 60)
        # And the same without a restart: full, then space returns, the writer recovers.
        # (The write-ahead log is reused in place once allocated, so a few hundred readings
        # still fit on a full volume: it takes more for the store to need a new block.)
        filler = fill(tiny_filesystem)
        more = 3000
        third = [device.client.publish(*_reading(first + second + i, start), qos=1)
                 for i in range(more)]
        for info in third:
            info.wait_for_publish(30)
        restarted.wait_event(lambda e: e.get("event") == "store_write_failed", 60)
        filler.unlink()
        total = first + second + more
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") >= total,
              "the writer did not recover when space returned", 60)
    finally:
        device.close()
    assert restarted.terminate() == 0
    assert _count(db, "SELECT count(*) FROM readings") == total
    failures = len(_events(daemon, "store_write_failed")) + len(
        _events(restarted, "store_write_failed"))
    counters = dict(sqlite3.connect(db).execute("SELECT name, value FROM counters").fetchall())
    assert counters["store_write_failures"] >= len(_events(restarted, "store_write_failed"))
    print(f"\ndisk full: {total} readings sent, {stored_while_full} stored when the disk "
          f"filled, {failures} failed write transactions logged (none acknowledged), "
          f"{total} stored after space returned; counters.store_write_failures="
          f"{counters['store_write_failures']}")


def test_a_database_locked_by_another_process_delays_but_never_loses(
        mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db)
    daemon = DaemonProcess(config).start()
    device = Device(mosquitto.port)
    start = time.time() - 3600
    device.announce(start)
    _wait(lambda: _count(db, "SELECT count(*) FROM meta_versions") == 1, "no meta", 20)
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # e.g. an operator's sqlite3 shell mid-write
        for i in range(100):
            device.client.publish(*_reading(i, start), qos=1)
        failure = daemon.wait_event(lambda e: e.get("event") == "store_write_failed", 30)
        assert failure["acknowledged"] is False and "locked" in failure["error"]
        assert _count(db, "SELECT count(*) FROM readings") == 0
        locker.execute("ROLLBACK")
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") >= 100,
              "readings lost behind the lock", 40)
    finally:
        locker.close()
        device.close()
        assert daemon.terminate() == 0
    assert _count(db, "SELECT count(*) FROM readings") == 100


# --------------------------------------------------------------------------- SIGHUP


def test_sighup_refuses_a_bad_profile_keeps_the_old_one_and_drops_nothing(
        mosquitto, tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO / "device_profiles", profiles)
    db = tmp_path / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db,
                          profiles=profiles)
    daemon = DaemonProcess(config).start()
    device = Device(mosquitto.port)
    start = time.time() - 3600
    device.announce(start)
    try:
        for i in range(100):
            device.client.publish(*_reading(i, start), qos=1)
        good = (profiles / "th-200.toml").read_text()
        (profiles / "th-200.toml").write_text(good.replace('unit = "degC"', 'unit = "degCC"', 1))
        assert daemon.process is not None
        daemon.process.send_signal(1)  # SIGHUP
        refused = daemon.wait_event(lambda e: e.get("event") == "reload_refused", 20)
        assert "th-200.toml" in refused["error"] and "degCC" in refused["error"]
        for i in range(100, 200):
            device.client.publish(*_reading(i, start), qos=1)
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") >= 200, "dropped", 30)
        # The old th-200 profile is still in force: its readings are accepted, not
        # rejected as an unknown model.
        assert _count(db, "SELECT count(*) FROM quarantine") == 0
        (profiles / "th-200.toml").write_text(good)
        daemon.process.send_signal(1)
        daemon.wait_event(lambda e: e.get("event") == "reloaded", 20)
    finally:
        device.close()
        assert daemon.terminate() == 0
    assert _count(db, "SELECT count(*) FROM readings") == 200
