"""Health for people and for Prometheus: the metrics endpoint of a running daemon and
``sensor-auditd status`` on its store afterwards, both checked against what was sent."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from brokers import free_port
from daemon_proc import Collector, DaemonProcess, Publisher, write_config
from prometheus_client.parser import text_string_to_metric_families
from test_e2e import _fleet, _meta

from auditd.adapters.config.daemon import default_config

pytestmark = pytest.mark.broker


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_metrics_endpoint_and_status_report_what_happened(mosquitto, tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=store,
                          audit_interval="3s", first_run_delay="2s",
                          extra=f"[metrics]\nenabled = true\nport = {port}\n")
    collector = Collector(mosquitto.port, "fleet/north/audit/#")
    daemon = DaemonProcess(config).start()
    device = Publisher(mosquitto.port)
    try:
        listening = [json.loads(line) for line in daemon.lines if "metrics_listening" in line]
        assert [e["port"] for e in listening] == [port]
        now = time.time()
        device.publish_many([_meta(d, now) for d in ("th-north-01", "th-north-02")], retain=True)
        fleet = _fleet(now, minutes=120, offset=1.5)
        device.publish_many([*fleet, ("fleet/north/th-north-01/telemetry", b"{not json")])
        sent = len(fleet) + 3
        collector.wait_for(lambda topic, body: topic.endswith("/finding/th-north-02/temperature")
                           and isinstance(body, dict) and body["metrics"].get("n", 0) >= 110, 60)
        deadline = time.monotonic() + 30
        while True:
            m = _scrape(port)
            alerts = sum(v for (name, _), v in m.items() if name == "sensor_auditd_alerts_open")
            done = (m[("sensor_auditd_messages_committed_total", ())] >= sent
                    and m[("sensor_auditd_streams_by_status", (("status", "fail"),))] >= 1
                    and alerts >= 1 and m[("sensor_auditd_outbox_depth", ())] == 0)
            if done:
                break
            assert time.monotonic() < deadline, m
            time.sleep(0.5)
        assert m[("sensor_auditd_messages_received_total", ())] >= sent
        assert m[("sensor_auditd_rejected_total", (("reason", "json_invalid"),))] == 1
        assert m[("sensor_auditd_readings_accepted_total", ())] == len(fleet)
        assert m[("sensor_auditd_broker_connected", ())] == 1
        assert m[("sensor_auditd_broker_connects_total", ())] == 1
        assert m[("sensor_auditd_streams_by_status", (("status", "pass"),))] >= 1
        assert alerts == 1  # th-north-02's offset, once its failures reached open_after
        assert m[("sensor_auditd_audit_seconds_count", ())] >= 1
        assert m[("sensor_auditd_batch_seconds_count", ())] >= 1
        assert m[("sensor_auditd_last_audit_success_timestamp_seconds", ())] > now - 60
        assert m[("sensor_auditd_healthy", ())] == 1
        assert m[("sensor_auditd_store_write_failures_total", ())] == 0
    finally:
        device.close()
        collector.close()
        assert daemon.terminate() == 0

    result = _cli("status", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["messages"] == sent
    assert status["readings_accepted"] == len(fleet)
    assert status["rejected"] == {"json_invalid": 1}
    assert status["by_status"]["fail"] == 1 and status["by_status"]["pass"] >= 1
    assert sum(status["alerts_open"].values()) == 1
    assert [f["device"] for f in status["failing"]] == ["th-north-02"]
    assert status["outbox_depth"] == 0
    assert status["counters"]["broker_connects"] == 1
    assert status["counters"]["broker_disconnects"] == 1  # the clean stop
    assert status["last_audit_at"] is not None

    text = _cli("status", "--store", str(store))
    assert text.returncode == 0, text.stderr
    assert f"{sent} stored" in text.stdout
    assert "json_invalid 1" in text.stdout
    assert "th-north-02/temperature" in text.stdout


def test_metrics_are_off_by_default_and_a_taken_port_is_a_config_error(
        mosquitto, tmp_path: Path) -> None:
    assert default_config().metrics.enabled is False
    assert default_config().metrics.bind == "127.0.0.1"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "config.toml", port=mosquitto.port,
                              store=tmp_path / "s.db",
                              extra=f"[metrics]\nenabled = true\nport = {port}\n")
        result = _cli("run", "--config", str(config))
    assert result.returncode == 2
    assert "metrics.port" in result.stderr and "Traceback" not in result.stderr


def test_status_without_a_store_is_a_usage_error(tmp_path: Path) -> None:
    result = _cli("status", "--store", str(tmp_path / "none.db"))
    assert result.returncode == 2
    assert "no database here" in result.stderr
    assert not (tmp_path / "none.db").exists()
