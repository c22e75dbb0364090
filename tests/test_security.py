"""TLS, a password and an ACL against a real mosquitto, with certificates made here by
openssl: each mistake is a clear error, nothing is lost or stored wrongly, and the
password never shows in a log line or the process's command line."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from brokers import Mosquitto
from daemon_proc import DaemonProcess, telemetry, write_config
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.broker

PASSWORD = "s3cret-Pa55-do-not-log"
DEVICE_PASSWORD = "device-Pa55"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", cwd=directory)


def _signed(directory: Path, name: str, ca: str, san: str | None) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
             cwd=directory)
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", str(ext),
             cwd=directory)


@dataclass
class Pki:
    directory: Path

    def __getitem__(self, name: str) -> Path:
        return self.directory / name


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("openssl and mosquitto_passwd are needed (apt-get install openssl mosquitto)")
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other-ca")
    _signed(d, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    _signed(d, "client", "ca", None)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "sensor-auditd",
                    PASSWORD], check=True, capture_output=True, timeout=30)
    subprocess.run(["mosquitto_passwd", "-b", str(d / "passwd"), "device", DEVICE_PASSWORD],
                   check=True, capture_output=True, timeout=30)
    (d / "acl").write_text(
        "user sensor-auditd\n"
        "topic read fleet/+/+/telemetry\n"
        "topic read fleet/+/+/meta\n"
        "topic read fleet/+/+/event\n"
        "topic write fleet/north/audit/gw-test/status\n"
        "topic write fleet/north/audit/gw-test/report\n"
        "user device\n"
        "topic readwrite fleet/#\n")
    return Pki(d)


class TlsMosquitto(Mosquitto):
    """TLS only, client certificates required, a password file and an ACL."""

    pki: Pki

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        p = self.pki
        conf.write_text(
            ("user root\n" if os.geteuid() == 0 else "")
            + f"listener {self.port} 127.0.0.1\n"
            f"cafile {p['ca.pem']}\ncertfile {p['server.pem']}\nkeyfile {p['server.key']}\n"
            "require_certificate true\n"
            "allow_anonymous false\n"
            f"password_file {p['passwd']}\nacl_file {p['acl']}\n"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            "autosave_interval 1\nmax_queued_messages 0\n"
            f"log_dest file {self.directory}/mosquitto.log\n"
            "log_type error\nlog_type warning\nlog_type notice\n")
        return conf

    def start(self, timeout: float = 10.0) -> Mosquitto:
        # The plain TCP probe of the base class works for a TLS listener too.
        return super().start(timeout)


@pytest.fixture
def tls_broker(pki: Pki, tmp_path: Path):
    broker = TlsMosquitto(tmp_path / "broker")
    broker.pki = pki
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _config(tmp_path: Path, broker: Mosquitto, pki: Pki, *, ca: str = "ca.pem",
            password_file: Path | None = None, name: str = "config.toml") -> Path:
    secret = password_file or tmp_path / "mqtt-password"
    if password_file is None:
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
    broker_extra = (f'username = "sensor-auditd"\npassword_file = "{secret}"\n'
                    f'[broker.tls]\nca_file = "{pki[ca]}"\ncert_file = "{pki["client.pem"]}"\n'
                    f'key_file = "{pki["client.key"]}"\n')
    return write_config(tmp_path / name, port=broker.port, store=tmp_path / "state" / "audit.db",
                        broker_extra=broker_extra)


class Device:
    """A device publishing over the same TLS listener with its own account."""

    def __init__(self, port: int, pki: Pki) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="device-1",
                                  protocol=paho.MQTTv5)
        self.client.tls_set(ca_certs=str(pki["ca.pem"]), certfile=str(pki["client.pem"]),
                            keyfile=str(pki["client.key"]), cert_reqs=ssl.CERT_REQUIRED)
        self.client.username_pw_set("device", DEVICE_PASSWORD)
        self.received: list[str] = []
        self.client.on_message = lambda c, u, m: self.received.append(m.topic)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, n: int, start: float) -> None:
        infos = [self.client.publish("fleet/north/ref-north/telemetry",
                                     telemetry(start + i, {"temperature": 10 + i / 100}), qos=1)
                 for i in range(n)]
        for info in infos:
            info.wait_for_publish(30)
            assert info.rc == paho.MQTT_ERR_SUCCESS

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _readings(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])


def _wait_readings(db: Path, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _readings(db) < n:
        assert time.monotonic() < deadline, f"{_readings(db)} of {n} readings stored"
        time.sleep(0.1)


def _events(daemon: DaemonProcess) -> list[dict]:
    out = []
    for line in daemon.lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _assert_no_secret(daemon: DaemonProcess) -> None:
    text = "".join(daemon.lines)
    assert PASSWORD not in text
    assert PASSWORD[:10] not in text


def test_tls_with_password_stores_and_nothing_secret_is_logged(
        tls_broker: TlsMosquitto, pki: Pki, tmp_path: Path) -> None:
    db = tmp_path / "state" / "audit.db"
    daemon = DaemonProcess(_config(tmp_path, tls_broker, pki)).start()
    device = Device(tls_broker.port, pki)
    try:
        assert daemon.process is not None
        cmdline = Path(f"/proc/{daemon.process.pid}/cmdline").read_bytes()
        assert PASSWORD.encode() not in cmdline
        device.send(50, time.time() - 100)
        _wait_readings(db, 50)
    finally:
        device.close()
        assert daemon.terminate() == 0
    _assert_no_secret(daemon)
    assert (db.parent.stat().st_mode & 0o777) == 0o700  # the state directory is private
    assert (tls_broker.directory / "mosquitto.log").exists()


def test_wrong_password_is_refused_clearly_and_a_fixed_file_recovers_without_loss(
        tls_broker: TlsMosquitto, pki: Pki, tmp_path: Path) -> None:
    db = tmp_path / "state" / "audit.db"
    # A first good run creates the persistent session the broker queues for.
    good = _config(tmp_path, tls_broker, pki)
    first = DaemonProcess(good).start()
    assert first.terminate() == 0
    device = Device(tls_broker.port, pki)
    device.send(40, time.time() - 100)  # queued by the broker while the daemon is away

    secret = tmp_path / "rotated-password"
    secret.write_text("not-the-password\n")
    bad = _config(tmp_path, tls_broker, pki, password_file=secret, name="bad.toml")
    daemon = DaemonProcess(bad).start(wait_ready=False)  # never ready: the broker refuses us
    try:
        daemon.wait_event(lambda e: e.get("event") == "broker_refused", 60)
        refused = [e for e in _events(daemon) if e.get("event") == "broker_refused"]
        assert refused, daemon.lines[-10:]
        # mosquitto answers "Not authorized" (MQTT 5 reason 0x87) for a wrong password.
        assert refused[0]["reason"] in ("Not authorized", "Bad user name or password")
        assert "broker.password_file" in refused[0]["hint"]
        assert refused[0]["level"] == "error"
        assert daemon.alive and _readings(db) == 0
        # The password file is read at every connect: fixing it needs no restart.
        secret.write_text(PASSWORD + "\n")
        _wait_readings(db, 40)
        device.send(10, time.time() - 50)
        _wait_readings(db, 50)
    finally:
        device.close()
        if daemon.alive:
            assert daemon.terminate() == 0
    _assert_no_secret(daemon)
    assert _readings(db) == 50


def test_wrong_ca_is_a_clear_tls_error_and_nothing_is_lost(
        tls_broker: TlsMosquitto, pki: Pki, tmp_path: Path) -> None:
    db = tmp_path / "state" / "audit.db"
    first = DaemonProcess(_config(tmp_path, tls_broker, pki)).start()
    assert first.terminate() == 0
    device = Device(tls_broker.port, pki)
    device.send(30, time.time() - 100)

    daemon = DaemonProcess(_config(tmp_path, tls_broker, pki, ca="other-ca.pem",
                                   name="wrong-ca.toml")).start(wait_ready=False)
    daemon.wait_event(lambda e: e.get("event") == "broker_connect_failed", 60)
    assert daemon.terminate() == 0
    failures = [e for e in _events(daemon) if e.get("event") == "broker_connect_failed"]
    assert failures, daemon.lines[-10:]
    assert failures[0]["level"] == "error"
    assert "TLS certificate verification failed" in failures[0]["error"]
    assert "certificate" in failures[0]["error"]
    assert _readings(db) == 0

    fixed = DaemonProcess(_config(tmp_path, tls_broker, pki, name="fixed.toml")).start()
    try:
        _wait_readings(db, 30)
    finally:
        device.close()
        assert fixed.terminate() == 0
    assert _readings(db) == 30


def test_a_topic_the_acl_denies_is_a_clear_error_and_nothing_is_lost(
        tls_broker: TlsMosquitto, pki: Pki, tmp_path: Path) -> None:
    """The ACL lets the daemon write its status and report but not findings: each refused
    finding is logged with its topic and stays in the outbox; the readings are stored.

    (mosquitto grants a subscription its ACL denies and then delivers nothing, so a denied
    read cannot be told from a quiet fleet; docs/operations.md says so.)"""
    db = tmp_path / "state" / "audit.db"
    config = _config(tmp_path, tls_broker, pki)
    text = config.read_text().replace('interval = "1h"', 'interval = "2s"').replace(
        'first_run_delay = "1h"', 'first_run_delay = "1s"')
    config.write_text(text)
    daemon = DaemonProcess(config).start()
    device = Device(tls_broker.port, pki)
    device.client.subscribe("fleet/north/audit/#", qos=1)
    try:
        now = time.time()
        device.client.publish("fleet/north/th-north-01/meta", json.dumps(
            {"ts": now - 600, "model": "th-200", "firmware": "2.3.1"}).encode(),
            qos=1).wait_for_publish(10)
        infos = [device.client.publish(f"fleet/north/{dev}/telemetry", telemetry(
            now - 300 + i, {"temperature": 12.0 + i / 100}), qos=1)
            for i in range(20) for dev in ("ref-north", "th-north-01")]
        for info in infos:
            info.wait_for_publish(10)
        refused = daemon.wait_event(lambda e: e.get("event") == "publish_refused", 30)
        assert "/finding/th-north-01/" in refused["topic"]
        assert refused["reason"] == "Not authorized" and refused["level"] == "error"
        _wait_readings(db, 40)
        deadline = time.monotonic() + 20
        while not any(t.endswith("/report") for t in device.received):
            assert time.monotonic() < deadline, device.received
            time.sleep(0.1)
    finally:
        device.close()
        assert daemon.terminate() == 0
    assert not any("/finding/" in t for t in device.received)
    with sqlite3.connect(db) as conn:
        waiting = conn.execute("SELECT topic, attempts FROM outbox").fetchall()
        assert conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0
    assert any("/finding/th-north-01/temperature" in t and a >= 1 for t, a in waiting), waiting
    assert _readings(db) == 40
    _assert_no_secret(daemon)
