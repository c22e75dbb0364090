"""Running as a systemd service: the unit file, sd_notify readiness and a watchdog that is
fed only while the daemon's loops make progress.

A real datagram socket stands in for systemd's notify socket; the daemon runs in this
process (on a thread, signals left alone) against a private mosquitto, so the test can
block paho's network thread the way a stuck callback would.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from daemon_proc import Publisher, telemetry, write_config
from hypothesis import given
from hypothesis import strategies as st

from auditd.adapters.config.catalog import load_catalog
from auditd.adapters.config.daemon import load_daemon_config
from auditd.adapters.sources.mqtt import MqttLink
from auditd.adapters.store import Store
from auditd.adapters.store.schema import SCHEMA_VERSION
from auditd.app.daemon import Daemon
from auditd.app.ingest import Ingestor
from auditd.domain.validate import Limits
from auditd.retry import Backoff

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "sensor-auditd.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


# --------------------------------------------------------------------------- the unit file

needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed on this machine")


def _unit_with_real_command(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at this checkout's installed command, since
    ``verify`` checks that the binary exists (/opt/sensor-auditd is not installed here)."""
    # Beside the interpreter running the tests first: a venv's scripts are there whether or
    # not the venv is activated (`.venv/bin/python -m pytest`), then on PATH.
    beside = Path(sys.executable).with_name("sensor-auditd")
    command = str(beside) if beside.is_file() else shutil.which("sensor-auditd")
    assert command, "the package's console script is not installed"
    unit = tmp_path / "sensor-auditd.service"
    text = UNIT.read_text()
    assert "ExecStart=/opt/sensor-auditd/bin/sensor-auditd run" in text
    unit.write_text(text.replace("/opt/sensor-auditd/bin/sensor-auditd", command))
    return unit


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(_unit_with_real_command(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sensor-auditd.service" not in result.stderr, result.stderr


@needs_systemd_analyze
def test_unit_exposure_is_ok_by_systemd_analyze_security(tmp_path: Path) -> None:
    """--threshold counts in tenths of the printed level: 15 means "exposure 1.5 or less"."""
    unit = _unit_with_real_command(tmp_path)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=15", str(unit)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Overall exposure level for sensor-auditd.service" in result.stdout
    level = float(result.stdout.rsplit("sensor-auditd.service:", 1)[1].split()[0])
    assert level <= 1.5


def test_unit_declares_what_the_daemon_relies_on() -> None:
    settings = [line.strip() for line in UNIT.read_text().splitlines()
                if "=" in line and not line.lstrip().startswith("#")]
    for needed in ("Type=notify", "Restart=on-failure", "StateDirectoryMode=0700",
                   "DynamicUser=yes", "ExecReload=/bin/kill -HUP $MAINPID", "NotifyAccess=main"):
        assert needed in settings, needed
    assert any(s.startswith("WatchdogSec=") for s in settings)
    # The configuration directory stays root's (systemd chowns state and logs directories
    # to the dynamic user, never ConfigurationDirectory): others must be able to read it.
    mode = next(s.split("=", 1)[1] for s in settings
                if s.startswith("ConfigurationDirectoryMode="))
    assert int(mode, 8) & 0o005 == 0o005, mode


# --------------------------------------------------------------------------- backoff


@given(first=st.floats(0.1, 10), cap=st.floats(10, 600), attempt=st.integers(0, 200),
       seed=st.integers(0, 2**32))
def test_reconnect_delay_is_jittered_within_half_to_all_of_the_capped_exponential(
        first: float, cap: float, attempt: int, seed: int) -> None:
    delay = Backoff(first, cap).delays(random.Random(seed))(attempt)
    ceiling = min(cap, first * 2 ** min(attempt, 30))
    assert ceiling / 2 <= delay <= ceiling


def test_reconnect_delays_differ_between_gateways() -> None:
    backoff = Backoff(1, 60)  # [broker] reconnect_min_s, reconnect_max_s
    a, b = backoff.delays(random.Random(1)), backoff.delays(random.Random(2))
    assert [a(n) for n in range(6)] != [b(n) for n in range(6)]


# --------------------------------------------------------------------------- bad topics


def test_a_topic_that_is_not_utf8_is_quarantined_and_acknowledged(tmp_path: Path) -> None:
    """MQTT forbids it and mosquitto refuses to route one, so paho's own message object is
    built here as its network thread would build it from another broker's PUBLISH."""
    cfg = load_daemon_config(write_config(tmp_path / "c.toml", port=1, store=tmp_path / "s.db"))
    link = MqttLink(cfg.broker, subscriptions=["fleet/#"], status_topic="fleet/x/status")
    msg = paho.MQTTMessage(mid=7, topic=b"fleet/north/th-\xff-01/telemetry")
    msg.payload = telemetry(time.time(), {"temperature": 20.0})
    msg.qos = 1
    link._on_message(link.client, None, msg)
    delivery = link.deliveries.get_nowait()
    assert delivery.mid == 7 and link.stats.topics_not_utf8 == 1
    with Store(tmp_path / "s.db") as store:
        ingestor = Ingestor(store, load_catalog(cfg), prefix="fleet", limits=Limits())
        result = ingestor.ingest([delivery.message])
        assert dict(result.rejected) == {"topic_invalid": 1}
        [row] = store.quarantine.recent()
    assert row.reason == "topic_invalid"
    assert "\\udcff" in row.topic  # the byte is kept, escaped, for whoever investigates
    acked: list[int] = []
    link.client.ack = lambda mid, qos: acked.append(mid)  # type: ignore[method-assign]
    link._connected.set()
    link.ack([delivery])
    assert acked == [7]


# --------------------------------------------------------------------------- sd_notify


def _next_state(sock: socket.socket, timeout: float) -> str | None:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode()
    except TimeoutError:
        return None


def _wait_for(sock: socket.socket, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _next_state(sock, max(0.1, deadline - time.monotonic()))
        if state is not None and state.startswith(prefix):
            return state
    raise AssertionError(f"no {prefix!r} from the daemon within {timeout}s")


def _wait_for_broker(sock: socket.socket, state: str, timeout: float) -> str:
    """The next notification that says the broker is in ``state`` (X_BROKER=...)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = _next_state(sock, max(0.1, deadline - time.monotonic()))
        if message is not None and f"X_BROKER={state}" in message.split("\n"):
            return message
    raise AssertionError(f"the daemon never said the broker is {state!r} within {timeout}s")


def _silence(sock: socket.socket, what: str, quiet_s: float, within_s: float) -> None:
    """Wait until ``what`` has not been sent for ``quiet_s`` (it is sent every second when
    things are well), giving up after ``within_s``."""
    deadline = time.monotonic() + within_s
    last = time.monotonic()
    while time.monotonic() < deadline:
        state = _next_state(sock, 0.2)
        if state is not None and what in state:
            last = time.monotonic()
        elif time.monotonic() - last >= quiet_s:
            return
    raise AssertionError(f"{what!r} kept coming for {within_s}s")


def test_ready_after_store_then_broker_state_and_watchdog_only_while_progressing(
        mosquitto, tmp_path: Path, notify_socket: tuple[socket.socket, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # a ping every second
    monkeypatch.setenv("WATCHDOG_PID", str(__import__("os").getpid()))
    store_path = tmp_path / "state" / "audit.db"
    cfg = load_daemon_config(write_config(tmp_path / "c.toml", port=mosquitto.port,
                                          store=store_path, keepalive=2))
    daemon = Daemon(cfg, load_catalog(cfg))
    runner = threading.Thread(target=lambda: daemon.run(install_signals=False), daemon=True)
    runner.start()
    release = threading.Event()
    try:
        ready = _wait_for(sock, "READY=1", 30)
        # At READY the store is open, migrated and written to; the broker's state follows
        # on the STATUS line, and once it says connected a reading published is stored.
        assert "STATUS=ingesting; broker 127.0.0.1:" in ready
        assert daemon.store.schema_version == SCHEMA_VERSION
        if "X_BROKER=connected" not in ready.split("\n"):  # else it came with READY
            _wait_for_broker(sock, "connected", 30)
        assert daemon.link.subscribed.is_set()
        device = Publisher(mosquitto.port)
        device.publish_many([("fleet/north/ref-north/telemetry",
                              telemetry(time.time() - 5, {"temperature": 12.0}))])
        device.close()
        deadline = time.monotonic() + 20
        while daemon.store.summary().readings < 1:
            assert time.monotonic() < deadline, "a reading sent after READY was not stored"
            time.sleep(0.05)
        for _ in range(3):
            _wait_for(sock, "WATCHDOG=1", 10)

        # A PUBACK handler that never returns blocks paho's network thread: the thread is
        # alive and the socket connected, but nothing moves. The pings must stop.
        def stuck(ok: bool) -> None:
            release.wait(60)

        assert daemon.link.publish("fleet/north/audit/gw-test/probe", b"x", qos=1,
                                   retain=False, on_puback=stuck)
        limit = 1.5 * 2 + 5
        _silence(sock, "WATCHDOG=1", quiet_s=4, within_s=limit + 15)
        assert daemon.link.network_thread is not None and daemon.link.network_thread.is_alive()
        assert "network" in {s.name for s in daemon._withheld}

        release.set()  # the thread turns again: so do the pings
        _wait_for(sock, "WATCHDOG=1", limit + 10)
    finally:
        release.set()
        daemon.request_stop()
        runner.join(60)
    assert not runner.is_alive()
    assert _wait_for(sock, "STOPPING=1", 5) == "STOPPING=1"


def test_a_broker_outage_keeps_the_watchdog_fed(
        mosquitto, tmp_path: Path, notify_socket: tuple[socket.socket, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart would not bring the broker back, and repeated restarts would exhaust the
    unit's start limit: while reconnecting, the supervisor is the loop making progress."""
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    cfg = load_daemon_config(write_config(tmp_path / "c.toml", port=mosquitto.port,
                                          store=tmp_path / "s.db", keepalive=2))
    daemon = Daemon(cfg, load_catalog(cfg))
    runner = threading.Thread(target=lambda: daemon.run(install_signals=False), daemon=True)
    runner.start()
    try:
        _wait_for(sock, "READY=1", 30)
        mosquitto.stop()
        # Well past the network limit (8 s): the pings never stop for more than a beat.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            _wait_for(sock, "WATCHDOG=1", 3)
        assert not daemon.link.connected
        assert daemon.link.stats.connect_failures >= 2
        assert daemon._withheld == []
    finally:
        daemon.request_stop()
        runner.join(60)
    assert not runner.is_alive()


# --------------------------------------------------------------------------- receive maximum


def test_outbox_keeps_within_the_brokers_receive_maximum(tmp_path: Path) -> None:
    from brokers import Mosquitto

    from auditd.adapters.sinks.publisher import OutboxPublisher
    from auditd.adapters.store.outbox import OutboxMessage

    broker = Mosquitto(tmp_path / "broker", extra_config="max_inflight_messages 3\n").start()
    cfg = load_daemon_config(write_config(tmp_path / "c.toml", port=broker.port,
                                          store=tmp_path / "s.db"))
    link = MqttLink(cfg.broker, subscriptions=["fleet/north/+/telemetry"],
                    status_topic="fleet/north/audit/gw-test/status")
    try:
        with Store(tmp_path / "s.db") as store:
            store.findings.save([], [OutboxMessage(f"fleet/north/audit/gw-test/t{i}", b"{}")
                                     for i in range(10)])
            publisher = OutboxPublisher(store, link)
            link.start()
            assert link.wait_connected(20)
            assert link.send_quota == 3  # mosquitto announces max_inflight_messages
            # One place stays free for the link's own status message.
            assert publisher.drain_once() == 2
            deadline = time.monotonic() + 20
            while store.outbox.depth()[0]:
                assert time.monotonic() < deadline, "outbox did not drain"
                publisher.drain_once()
                time.sleep(0.02)
            assert publisher.delivered == 10
    finally:
        link.stop()
        broker.stop()
