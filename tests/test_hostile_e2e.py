"""Nothing a device sends can stop the gateway, through the real entry points: ``sensor-auditd
run`` as a process against a private mosquitto, and ``sensor-auditd replay``.

Poison messages (the lone surrogate that used to stop ingest for good, a NUL, invalid UTF-8,
a message the store itself refuses), a store that cannot be written, a broker that is down
at start, a writer that cannot commit, the device, stream and quarantine caps, counters
across SIGKILLs, and a write-ahead log on a volume of a few MiB.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import free_port
from daemon_proc import DaemonProcess, Publisher, telemetry, write_config
from disks import fill, tmpfs
from prometheus_client.parser import text_string_to_metric_families

from auditd.adapters.store import Store

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[1]
ROOT = os.geteuid() == 0


def _count(db: Path, sql: str, *params: object) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


# Waits end as soon as what they wait for is there; the ceiling only stops a test that
# would wait for ever. On a loaded 2-core CI machine a daemon's turn can take many seconds,
# so each ceiling is at least SLOW_MACHINE_S: no test here asserts speed.
SLOW_MACHINE_S = 90.0


def _wait(predicate: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + max(timeout, SLOW_MACHINE_S)
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _reasons(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=30) as conn:
        return {r: int(n) for r, n in conn.execute(
            "SELECT reason, sum(count) FROM quarantine GROUP BY reason")}


def _counters(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=30) as conn:
        return {k: int(v) for k, v in conn.execute("SELECT name, value FROM counters")}


def _events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    out = []
    for line in daemon.lines:
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == name:
                out.append(event)
    return out


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def _status(config: Path) -> dict[str, Any]:
    result = _cli("status", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _meta(device: str, ts: float, **extra: Any) -> tuple[str, bytes]:
    return (f"fleet/north/{device}/meta",
            json.dumps({"ts": ts, "model": "th-200", "firmware": "2.3.1", **extra}).encode())


def _readings(device: str, start: float, n: int) -> list[tuple[str, bytes]]:
    return [(f"fleet/north/{device}/telemetry", telemetry(start + i, {"temperature": 20 + i / 100}))
            for i in range(n)]


def _poison_meta_in_store(db: Path, device: str) -> None:
    """A content rule the store enforces (like a CHECK constraint): it refuses ``device``'s
    meta with a real SQLite error (SQLITE_CONSTRAINT_TRIGGER), which no gate can foresee."""
    Store(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TRIGGER poison BEFORE INSERT ON meta_versions WHEN NEW.device = "
                     f"'{device}' BEGIN SELECT RAISE(ABORT, 'refused by the store'); END")


# The 60-byte message: valid JSON whose firmware is a lone surrogate.
POISON_META = b'{"ts": %d, "model": "th-200", "firmware": "\\ud800"}'
POISON_EVENT = b'{"ts": %d, "type": "maintenance", "detail": "\\udc00 swapped"}'
NUL_KEY = b'{"ts": %d, "readings": {"temperature\\u0000": 1}}'
NOT_UTF8 = b'{"ts": %d, "model": "th-200", "firmware": "\xed\xa0\x80"}'


# --------------------------------------------------------------------------- poison, live


def test_poison_messages_are_quarantined_acknowledged_and_ingest_goes_on(
        mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "state" / "audit.db"
    _poison_meta_in_store(db, "th-north-09")
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db,
                          extra='[models]\n"th-north-*" = "th-200"\n')
    daemon = DaemonProcess(config).start()
    device = Publisher(mosquitto.port)
    now = int(time.time())
    poison = [
        ("fleet/north/th-north-01/meta", POISON_META % now),
        ("fleet/north/th-north-01/event", POISON_EVENT % now),
        ("fleet/north/th-north-01/telemetry", NUL_KEY % now),
        ("fleet/north/th-north-02/meta", NOT_UTF8 % now),
        _meta("th-north-09", now),  # passes the gate; the store refuses it
    ]
    try:
        # Poison first, then good readings behind it, in the same batches.
        device.publish_many([*poison, *_readings("th-north-01", now - 3000, 300)])
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") == 300,
              "readings behind the poison were not stored", 30)
        _wait(lambda: sum(_reasons(db).values()) >= 5, "poison not quarantined", 20)
        assert _reasons(db) == {"text_invalid": 3, "json_invalid": 1, "store_rejected": 1}
        [isolated] = _events(daemon, "message_isolated")
        assert "SQLITE_CONSTRAINT_TRIGGER" in isolated["error"]
        assert not _events(daemon, "store_write_failed")  # never mistaken for a full disk
        assert not _events(daemon, "watchdog_withheld")
        with sqlite3.connect(db) as conn:
            detail, payload = conn.execute(
                "SELECT detail, payload FROM quarantine WHERE reason = 'store_rejected'"
            ).fetchone()
        assert "refused by the store" in detail and json.loads(payload)["model"] == "th-200"
        messages = _counters(db)["messages"]
    finally:
        device.close()
        assert daemon.terminate() == 0
    # Everything was acknowledged: a restart gets nothing redelivered, so no stall resumes.
    again = DaemonProcess(config).start()
    try:
        time.sleep(3)
        assert _counters(db)["messages"] == messages
        assert sum(_reasons(db).values()) == 5
    finally:
        assert again.terminate() == 0


# --------------------------------------------------------------------------- poison, replay


def test_replay_quarantines_the_poison_and_finishes_with_its_summary(tmp_path: Path) -> None:
    db = tmp_path / "replay.db"
    _poison_meta_in_store(db, "th-north-09")
    now = 1_796_000_000
    lines = [
        {"topic": "fleet/north/th-north-01/meta", "received_at": now,
         "payload": {"ts": now, "model": "th-200", "firmware": "\ud800"}},
        {"topic": "fleet/north/th-north-01/event", "received_at": now + 1,
         "payload": {"ts": now, "type": "maintenance", "detail": "\udc00"}},
        {"topic": "fleet/north/th-north-01/meta", "received_at": now + 2,
         "payload": (NOT_UTF8 % now).decode("utf-8", "surrogatepass")},
        {"topic": "fleet/north/th-north-09/meta", "received_at": now + 3,
         "payload": {"ts": now, "model": "th-200"}},
        *({"topic": "fleet/north/th-north-01/telemetry", "received_at": now + 10 + i,
           "payload": {"ts": now + 10 + i, "readings": {"temperature": 20.5}}}
          for i in range(50)),
    ]
    recording = tmp_path / "poison.jsonl"
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = tmp_path / "replay.toml"
    config.write_text(f'profiles_dir = "{REPO / "device_profiles"}"\n'
                      f'references_dir = "{REPO / "references"}"\n'
                      '[models]\n"th-north-*" = "th-200"\n')
    result = _cli("replay", str(recording), "--config", str(config), "--store", str(db),
                  "--out", str(tmp_path / "findings.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    assert summary["messages"] == len(lines)
    assert summary["readings_accepted"] == 50
    assert summary["readings_rejected"] == {"text_invalid": 2, "json_invalid": 1,
                                            "store_rejected": 1}


def test_replay_of_poison_lines_finishes_with_its_summary_never_a_traceback(
        tmp_path: Path) -> None:
    """Lines that are not recorded messages at all (invalid UTF-8, NUL, not JSON, nesting
    deeper than Python recurses, a number of 5000 digits, a time no calendar holds or a
    jump of years) and messages a device could send (a lone surrogate in the topic or the
    payload, a 10 MB payload, an infinite ``ts``): each is counted under its reason and the
    valid lines around them are stored."""
    now = 1_796_000_000
    telemetry = '{"topic": "fleet/north/th-north-01/telemetry", "received_at": %d, ' \
                '"payload": {"ts": %d, "readings": {"temperature": 20.5}}}'
    lines: list[bytes] = [
        b'{"topic": "fleet/north/th-north-01/meta", "received_at": %d, '
        b'"payload": {"ts": %d, "model": "th-200"}}' % (now, now),
        (telemetry % (now + 1, now + 1)).encode(),
        # messages, judged by the gate
        b'{"topic": "fleet/north/th-north-01/meta", "received_at": %d, '
        b'"payload": {"ts": %d, "firmware": "\\ud800"}}' % (now + 2, now + 2),
        b'{"topic": "fleet/north/th\\ud800/meta", "received_at": %d, "payload": "x"}' % now,
        b'{"topic": "fleet/north/th-north-01/event", "received_at": %d, '
        b'"payload": {"ts": %d, "type": "maintenance", "note": "a\\u0000b"}}' % (now, now),
        b'{"topic": "fleet/north/th-north-01/telemetry", "received_at": %d, '
        b'"payload": {"ts": 1e400, "readings": {"temperature": 1}}}' % now,
        b'{"topic": "fleet/north/th-north-01/telemetry", "received_at": %d, "payload": "'
        % now + b"A" * (10 * 1024 * 1024) + b'"}',
        # lines that are no recorded message
        b'{"topic": "fleet/\x00north/th-north-01/event", "received_at": 1}',
        b"\xff\xfe\xc3\x28 not UTF-8 \xed\xa0\x80",
        b"not JSON at all",
        b'{"topic": "t", "received_at": 5, "payload": ' + b"[" * 100_000 + b"]" * 100_000
        + b"}",
        b"[" * 100_000,
        b'{"topic": "fleet/north/th-north-01/telemetry", "received_at": 1e300, '
        b'"payload": {}}',
        b'{"topic": "fleet/north/th-north-01/telemetry", "received_at": -1e18, '
        b'"payload": {}}',
        b'{"topic": "fleet/north/th-north-01/telemetry", "received_at": 1' + b"0" * 5000
        + b', "payload": {}}',
        (telemetry % (now + 400 * 86400, now + 400 * 86400)).encode(),  # a jump of years
        (telemetry % (now + 7, now + 7)).encode(),
    ]
    recording = tmp_path / "poison.jsonl"
    recording.write_bytes(b"\n".join(lines) + b"\n")
    config = tmp_path / "replay.toml"
    config.write_text(f'profiles_dir = "{REPO / "device_profiles"}"\n'
                      f'references_dir = "{REPO / "references"}"\n'
                      '[models]\n"th-north-*" = "th-200"\n')
    db = tmp_path / "replay.db"
    result = _cli("replay", str(recording), "--config", str(config), "--store", str(db),
                  "--out", str(tmp_path / "findings.jsonl"), timeout=300)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["messages"] == len(lines)
    assert summary["readings_accepted"] == 2
    assert summary["readings_rejected"] == {
        "text_invalid": 2, "topic_invalid": 1, "ts_invalid": 1, "payload_too_large": 1,
        "recording_invalid": 9}
    assert _count(db, "SELECT count(*) FROM readings") == 2
    assert sum(_reasons(db).values()) == 14


# --------------------------------------------------------------------------- store not writable


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """``path`` (a file or a directory) read-only for the daemon: a read-only bind mount as
    root (root ignores permission bits), the permission bits otherwise."""
    if not ROOT:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(stat.S_IMODE(mode))
        return
    for args in (["mount", "--bind", str(path), str(path)],
                 ["mount", "-o", "remount,bind,ro", str(path)]):
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
            pytest.skip(f"a read-only bind mount is not permitted here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], capture_output=True, timeout=30)


@pytest.mark.parametrize("what", ["file", "directory"])
def test_a_store_that_cannot_be_written_fails_the_start_naming_the_path(
        mosquitto, tmp_path: Path, what: str) -> None:
    state = tmp_path / "state"
    db = state / "audit.db"
    Store(db).close()
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db)
    with _read_only(db if what == "file" else state):
        result = _cli("run", "--config", str(config), timeout=SLOW_MACHINE_S)
    assert result.returncode == 1, result.stdout + result.stderr  # it stops, it does not wait
    assert str(state) in result.stderr
    assert "Traceback" not in result.stderr
    assert any(word in result.stderr.lower() for word in ("readonly", "read-only",
                                                          "not writable")), result.stderr
    assert '"event": "ready"' not in result.stdout


# --------------------------------------------------------------------------- broker down at start


def _notifications(sock: socket.socket, until: Callable[[str], bool],
                   timeout: float) -> str:
    deadline = time.monotonic() + max(timeout, SLOW_MACHINE_S)
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            break
        if until(message):
            return message
    raise AssertionError("the daemon did not notify what was expected in time")


def test_ready_with_the_broker_down_then_connects_and_ingests_when_it_comes(
        mosquitto, tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    mosquitto.stop()
    db = tmp_path / "state" / "audit.db"
    port = free_port()
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db,
                          extra=f"[metrics]\nenabled = true\nport = {port}\n")
    started = time.monotonic()
    daemon = DaemonProcess(config).start(until="ready", env={"NOTIFY_SOCKET": path})
    try:
        # The broker stays down until the test starts it below: READY=1 arriving at all
        # shows the daemon does not wait for it (systemd's TimeoutStartSec is 120 s).
        ready = _notifications(sock, lambda m: "READY=1" in m, SLOW_MACHINE_S)
        assert time.monotonic() - started < 120
        assert "X_BROKER=" in ready
        unreachable = ready if "X_BROKER=unreachable" in ready else _notifications(
            sock, lambda m: "X_BROKER=unreachable" in m, 15)
        assert f"broker 127.0.0.1:{mosquitto.port} unreachable (connection refused" in \
            unreachable
        text = _cli("status", "--config", str(config))
        assert "running, healthy" in text.stdout
        assert "UNREACHABLE since" in text.stdout and "retrying" in text.stdout
        assert _status(config)["daemon"]["broker"] == "unreachable"
        # The log says it as the STATUS line does, and each failed attempt says when the
        # next one is.
        _wait(lambda: any(e["state"] == "unreachable" for e in _events(daemon, "broker_state")),
              "no broker_state unreachable in the log", 15)
        state = next(e for e in _events(daemon, "broker_state") if e["state"] == "unreachable")
        assert state["level"] == "warning"
        assert state["status"].startswith(f"broker 127.0.0.1:{mosquitto.port} unreachable "
                                          "(connection refused")
        assert state["status"].endswith("), retrying")
        failed = _events(daemon, "broker_connect_failed")
        assert failed and all(e["retry_in_s"] > 0 for e in failed)
        down = _scrape(port)
        assert down[("sensor_auditd_broker_connected", ())] == 0
        assert down[("sensor_auditd_broker_down_seconds", ())] > 0
        assert down[("sensor_auditd_broker_connect_failures_total", ())] >= 1
        assert down[("sensor_auditd_healthy", ())] == 1  # an outage is not the daemon's fault

        mosquitto.start()
        _notifications(sock, lambda m: "X_BROKER=connected" in m, 20)
        device = Publisher(mosquitto.port)
        device.publish_many([_meta("th-north-01", time.time()),
                             *_readings("th-north-01", time.time() - 500, 100)])
        device.close()
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") == 100, "no ingest", 20)
        assert _status(config)["daemon"]["broker"] == "connected"
        _wait(lambda: _events(daemon, "broker_state")[-1]["state"] == "connected",
              "the log did not say the broker is connected", 10)
        up = _scrape(port)
        assert up[("sensor_auditd_broker_connected", ())] == 1
        assert up[("sensor_auditd_broker_down_seconds", ())] == 0
    finally:
        assert daemon.terminate() == 0
    assert _events(daemon, "broker_connect_failed")


# --------------------------------------------------------------------------- a stalled writer


def test_a_writer_that_cannot_commit_turns_health_to_zero_and_says_why(
        mosquitto, tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    port = free_port()
    db = tmp_path / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db,
                          extra=f'[ingest]\nstall_after = "3s"\n'
                                f"[metrics]\nenabled = true\nport = {port}\n")
    daemon = DaemonProcess(config).start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    device = Publisher(mosquitto.port)
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        device.publish_many([_meta("th-north-01", time.time())])
        _wait(lambda: _count(db, "SELECT count(*) FROM meta_versions") == 1, "no meta", 20)
        locker.execute("BEGIN IMMEDIATE")  # another process holds the store
        device.publish_many(_readings("th-north-01", time.time() - 100, 10))
        daemon.wait_event(lambda e: e.get("event") == "writer_stalled", 30)
        # The log line and the gauge are set by the same check, one after the other: wait
        # for the gauge rather than race the scrape against it.
        _wait(lambda: _scrape(port)[("sensor_auditd_healthy", ())] == 0,
              "health did not turn 0", 30)
        metrics = _scrape(port)
        assert metrics[("sensor_auditd_writer_stalled_seconds", ())] >= 3
        assert metrics[("sensor_auditd_writer_pending_messages", ())] >= 1
        unhealthy = _notifications(
            sock, lambda m: "STATUS=UNHEALTHY" in m and "locked" in m, 15)
        assert "writer stalled: nothing committed since" in unhealthy
        # The watchdog is no longer fed.
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                sock.settimeout(0.5)
                assert "WATCHDOG=1" not in sock.recv(4096).decode()
        text = _cli("status", "--config", str(config)).stdout
        assert "UNHEALTHY" in text and "writer stalled" in text and "locked" in text
        assert _count(db, "SELECT count(*) FROM readings") == 0  # nothing acknowledged

        locker.execute("ROLLBACK")
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") == 10, "no recovery", 30)
        _notifications(sock, lambda m: "WATCHDOG=1" in m, 10)
        assert _scrape(port)[("sensor_auditd_healthy", ())] == 1
        daemon.wait_event(lambda e: e.get("event") == "writer_recovered", 10)
    finally:
        locker.close()
        device.close()
        assert daemon.terminate() == 0


# --------------------------------------------------------------------------- caps


def test_device_stream_and_quarantine_caps_hold_against_a_flood(
        mosquitto, tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "state" / "audit.db"
    config = write_config(
        tmp_path / "config.toml", port=mosquitto.port, store=db,
        store_extra='quarantine_max_rows = 60\nquarantine_max_bytes = "64KiB"\n',
        extra='[models]\n"th-*" = "th-200"\n'
              "[ingest]\nmax_devices = 3\nmax_streams = 4\n"
              f"[metrics]\nenabled = true\nport = {port}\n")
    daemon = DaemonProcess(config).start()
    device = Publisher(mosquitto.port)
    now = time.time()
    try:
        device.publish_many([m for d in ("th-a", "th-b", "th-c")
                             for m in _readings(d, now - 1000, 20)])
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") == 60, "no ingest", 20)
        flood = [(f"fleet/north/th-new{i}/telemetry", telemetry(now - 500, {"temperature": 20}))
                 for i in range(300)]
        flood += [(f"fleet/north/th-junk{i}/telemetry", b"{" + b"x" * 900) for i in range(300)]
        # A fourth stream fits, a fifth does not.
        more = [("fleet/north/th-a/telemetry", telemetry(now - 400, {
            "temperature": 21, "humidity": 40, "pressure": 1000}))]
        device.publish_many([*flood, *more, *_readings("th-b", now - 300, 20)])
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") == 60 + 1 + 1 + 20,
              "known devices' readings not stored during the flood", 30)
        _wait(lambda: _counters(db).get("messages", 0) >= 60 + 600 + 1 + 20, "flood", 30)
        counters = _counters(db)
        assert counters["rejected.device_limit"] == 300
        assert counters["rejected.stream_limit"] == 1
        assert counters["rejected.json_invalid"] == 300
        rows, size = _count(db, "SELECT count(*) FROM quarantine"), _count(
            db, "SELECT sum(size) FROM quarantine")
        assert rows <= 60 and size <= 64 * 1024
        assert counters["quarantine_dropped"] >= 600 - 60
        assert _count(db, "SELECT count(*) FROM streams") == 4
        time.sleep(5.5)  # the gauges' store figures refresh every 5 s
        metrics = _scrape(port)
        assert metrics[("sensor_auditd_devices", ())] == 3
        assert metrics[("sensor_auditd_limit", (("resource", "devices"),))] == 3
        assert metrics[("sensor_auditd_limit", (("resource", "streams"),))] == 4
        assert metrics[("sensor_auditd_quarantine_rows", ())] == rows
        assert metrics[("sensor_auditd_limit", (("resource", "quarantine_rows"),))] == 60
        assert metrics[("sensor_auditd_rejected_total", (("reason", "device_limit"),))] == 300
        status = _status(config)
        assert status["daemon"]["bounds"]["devices"] == 3
        assert status["daemon"]["bounds"]["max_streams"] == 4
        text = _cli("status", "--config", str(config)).stdout
        assert "devices 3 of 3, streams 4 of 4, quarantine" in text
    finally:
        device.close()
        assert daemon.terminate() == 0


def test_device_places_go_to_catalog_devices_only_and_come_back_when_their_data_age_out(
        mosquitto, tmp_path: Path) -> None:
    """A flood of ids no profile covers (meta and events of ids no glob matches, announcing
    a model without a profile or none) takes no place under max_devices; and once a
    device's data have aged out, its place is free again for a real new device."""
    db = tmp_path / "state" / "audit.db"
    config = write_config(
        tmp_path / "config.toml", port=mosquitto.port, store=db,
        store_extra='retention_days = 0.0002\nretention_interval = "1s"\n',  # 17 s
        extra='[models]\n"th-*" = "th-200"\n[ingest]\nmax_devices = 2\n')
    daemon = DaemonProcess(config).start()
    device = Publisher(mosquitto.port)
    now = time.time()
    try:
        strays = [(f"fleet/north/zz-stray{i}/meta", json.dumps(
                       {"ts": now, "model": "zz-9"}).encode()) for i in range(20)]
        strays += [(f"fleet/north/zz-stray{i}/event", json.dumps(
                        {"ts": now, "type": "maintenance"}).encode()) for i in range(20)]
        strays += [_meta(f"zz-odd{i}", now, model="th-999") for i in range(20)]
        device.publish_many([*strays, _meta("th-a", now), *_readings("th-a", now - 5, 1),
                             *_readings("th-b", now - 5, 1)])
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") == 2, "no ingest", 20)
        _wait(lambda: _counters(db).get("messages", 0) >= 63, "strays not judged", 20)
        counters = _counters(db)
        assert counters["rejected.unknown_device_model"] == 60
        assert "rejected.device_limit" not in counters
        assert _count(db, "SELECT count(*) FROM meta_versions") == 1  # th-a's
        assert _count(db, "SELECT count(*) FROM events") == 0
        device.publish_many(_readings("th-c", time.time(), 1))
        _wait(lambda: _counters(db).get("rejected.device_limit", 0) == 1, "th-c admitted", 20)
        # th-a's and th-b's readings age out; their places come back.
        _wait(lambda: _count(db, "SELECT count(*) FROM streams") == 0
              and _count(db, "SELECT count(*) FROM meta_versions") == 0, "no ageing out", 60)
        device.publish_many(_readings("th-c", time.time(), 1))
        _wait(lambda: _count(db, "SELECT count(*) FROM streams WHERE device = 'th-c'") == 1,
              "a freed place was not given to th-c", 20)
        assert _counters(db)["rejected.device_limit"] == 1
        assert [e["devices"] for e in _events(daemon, "devices_forgotten")] == [["th-a"]]
    finally:
        device.close()
        assert daemon.terminate() == 0


# --------------------------------------------------------------------------- counters, SIGKILL


def test_broker_connects_survive_sigkill(mosquitto, tmp_path: Path) -> None:
    """The issue read 2 after 6 starts: each connect is committed with the first batch of
    that connection, or alone within a turn of the writer."""
    db = tmp_path / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db)
    device = Publisher(mosquitto.port)
    starts = 5
    try:
        for n in range(starts):
            daemon = DaemonProcess(config).start()
            device.publish_many(_readings("ref-north", time.time() - 1000 + 10 * n, 1))
            _wait(lambda n=n: _count(db, "SELECT count(*) FROM readings") == n + 1,
                  "not stored", 20)
            daemon.kill()
    finally:
        device.close()
    assert _counters(db)["broker_connects"] == starts
    assert _counters(db)["store_opened"] == starts


def test_counters_tell_the_truth_across_sigkills_under_a_flood(mosquitto, tmp_path: Path) -> None:
    """Five SIGKILLs while valid readings and repetitive garbage pour in: the broker
    redelivers what was in flight (DUP), some of it committed already. Every reading is
    stored once, and the counters count each message once: they read 1030 rejections for
    1000 garbage messages, and 11333 messages for 11000, before redeliveries were
    recognised."""
    db = tmp_path / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db,
                          extra='[models]\n"th-*" = "th-200"\n')
    device = Publisher(mosquitto.port)
    start = time.time() - 3000
    valid = garbage = 0
    daemon = DaemonProcess(config).start()
    try:
        for kill in range(5):
            items: list[tuple[str, bytes]] = []
            for i in range(2000):
                items.append((f"fleet/north/th-k{i % 20}/telemetry", telemetry(
                    start + kill * 100 + i // 20, {"temperature": 20 + i % 7})))
                if i % 10 == 0:
                    items.append((f"fleet/north/th-k{i % 20}/telemetry", b"{garbage"))
            valid, garbage = valid + 2000, garbage + 200
            sender = threading.Thread(target=device.publish_many, args=(items,))
            sender.start()
            _wait(lambda v=valid: _count(db, "SELECT count(*) FROM readings") > v - 1800,
                  "no ingest", 30)
            daemon.kill()
            sender.join()
            daemon = DaemonProcess(config).start()
        _wait(lambda: _counters(db).get("messages", 0) >= valid + garbage
              and _count(db, "SELECT count(*) FROM readings") == valid, "not drained", 60)
        time.sleep(1)  # anything counted twice would show now
        counters = _counters(db)
        assert _count(db, "SELECT count(*) FROM readings") == valid
        assert counters["readings_inserted"] == valid
        assert counters["messages"] == valid + garbage
        assert counters["rejected.json_invalid"] == garbage
        assert _reasons(db) == {"json_invalid": garbage}
    finally:
        device.close()
        assert daemon.terminate() == 0


# --------------------------------------------------------------------------- a small volume


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 5 MiB tmpfs: the issue's volume, where the old write-ahead log alone filled it."""
    with tmpfs(tmp_path / "small", "5m", skip_if_refused=True) as mount_point:
        yield mount_point


def test_the_write_ahead_log_fits_a_small_volume_and_recovers_from_a_full_one(
        mosquitto, tmp_path: Path, small_volume: Path) -> None:
    db = small_volume / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db)
    daemon = DaemonProcess(config).start()
    [low] = _events(daemon, "store.low_space")
    [starting] = _events(daemon, "starting")
    limit = starting["wal_limit"]
    assert limit <= 5 * 2**20 // 4 and low["needed_bytes"] > low["free_bytes"]
    device = Publisher(mosquitto.port)
    devices = [f"th-north-{i:02d}" for i in range(1, 21)]
    start = time.time() - 86400
    try:
        device.publish_many([_meta(d, start) for d in devices])
        wal = db.parent / "audit.db-wal"
        sizes: list[int] = []

        def stored(n: int) -> bool:
            sizes.append(wal.stat().st_size if wal.exists() else 0)
            return _count(db, "SELECT count(*) FROM readings") == n

        sent = 0
        for block in range(6):  # 12,000 readings of 20 streams: a few MB through the log
            device.publish_many([m for d in devices for m in _readings(
                d, start + block * 100, 100)])
            sent += 100 * len(devices)
            _wait(lambda n=sent: stored(n), "readings not stored on the small volume", 60)
        peak = max(sizes)
        assert not _events(daemon, "store_write_failed")
        assert peak <= limit * 1.25, (peak, limit)
        # Full to the last byte: writes fail, nothing is acknowledged; space returns, it
        # recovers by itself.
        filler = fill(small_volume)
        device.publish_many([m for d in devices for m in _readings(d, start + 5000, 150)])
        daemon.wait_event(lambda e: e.get("event") == "store_write_failed", 60)
        tried = _events(daemon, "store.checkpoint") + _events(daemon, "store.checkpoint_failed")
        assert tried, [e.get("event") for e in map(json.loads, daemon.lines[-30:])]
        assert all(e["why"] == "SQLITE_FULL" for e in tried)  # and tried again at each
        filler.unlink()
        _wait(lambda: _count(db, "SELECT count(*) FROM readings") == sent + 3000,
              "the store did not recover when space returned", 90)
    finally:
        device.close()
        assert daemon.terminate() == 0
