"""The device inventory through the real daemon and a real mosquitto: published when it
changes, once, across a broker outage during which the audits went on."""

from __future__ import annotations

import json
import queue
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from daemon_proc import DaemonProcess, Publisher, telemetry, write_config
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEVICES = ("th-north-01", "th-north-02")


class SessionCollector:
    """A fleet-side subscriber with a persistent session: what is published while it (or
    the broker) is away is queued for it, so every message reaches it and can be counted."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.messages: queue.SimpleQueue[tuple[str, dict[str, Any], bool]] = queue.SimpleQueue()
        self.seen: list[tuple[str, dict[str, Any], bool]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="fleet-collector",
                                  protocol=paho.MQTTv5)
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, json.loads(m.payload), bool(m.retain)))
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.subscribe(topic_filter, qos=1)
        self.client.loop_start()

    def collect(self, until: float) -> None:
        while time.monotonic() < until:
            try:
                self.seen.append(self.messages.get(timeout=0.1))
            except queue.Empty:
                continue

    def wait(self, count_by_topic: dict[str, int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = Counter(topic for topic, _, _ in self.seen)
            if all(counts[t] >= n for t, n in count_by_topic.items()):
                return
            self.collect(time.monotonic() + 0.2)
        raise AssertionError(f"inventory not received: {Counter(t for t, _, _ in self.seen)}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _topic(device: str) -> str:
    return f"fleet/north/audit/gw-test/device/{device}"


def _meta(device: str, ts: float, firmware: str) -> tuple[str, bytes]:
    return (f"fleet/north/{device}/meta", json.dumps({
        "ts": ts, "model": "th-200", "firmware": firmware, "hardware_rev": "B",
        "installed_at": "2026-03-01"}).encode())


def _count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(sql).fetchone()[0])


def _wait(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _audits(daemon: DaemonProcess, n: int, timeout: float = 60) -> None:
    for _ in range(n):
        daemon.wait_event(lambda e: e.get("event") == "audit_done", timeout)


def test_inventory_goes_out_once_per_change_across_a_broker_outage(
        mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    # The first audit waits 15 s: the outage begins before it, so every audit of the first
    # inventory runs while the broker is away.
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db,
                          audit_interval="1s", first_run_delay="15s", keepalive=5)
    collector = SessionCollector(mosquitto.port, "fleet/+/audit/+/device/#")
    daemon = DaemonProcess(config).start()
    device = Publisher(mosquitto.port)
    now = time.time()
    try:
        device.publish_many([_meta(d, now - 60, "2.3.1") for d in DEVICES], retain=True)
        device.publish_many([(f"fleet/north/{d}/telemetry",
                              telemetry(now - 30, {"temperature": 20.0})) for d in DEVICES])
        _wait(lambda: _count(db, "SELECT count(*) FROM meta_versions") == 2, "meta not stored",
              20)
        device.close()
        mosquitto.stop()
        assert not any('"audit_done"' in line for line in daemon.lines), (
            "an audit ran before the outage began; the test would prove nothing")
        _audits(daemon, 4)  # audits during the outage: each finds the inventory queued
        pending = [_count(db, f"SELECT count(*) FROM outbox WHERE topic = '{_topic(d)}'")
                   for d in DEVICES]
        assert pending == [1, 1], "one message per device waits, however many audits ran"

        mosquitto.start()
        collector.wait({_topic(d): 1 for d in DEVICES}, 30)
        _wait(lambda: _count(db, "SELECT count(*) FROM outbox") == 0, "outbox not drained", 30)
        _audits(daemon, 3)  # unchanged: nothing more goes out
        collector.collect(time.monotonic() + 1.0)
        assert Counter(t for t, _, _ in collector.seen) == {_topic(d): 1 for d in DEVICES}
        first = {t: body for t, body, _ in collector.seen}
        body = first[_topic("th-north-01")]
        assert (body["model"], body["firmware"], body["hardware_rev"], body["installed_at"],
                body["site"], body["gateway"]) == ("th-200", "2.3.1", "B", "2026-03-01",
                                                   "north", "gw-test")

        device = Publisher(mosquitto.port, client_id="test-publisher-2")
        device.publish_many([_meta("th-north-01", time.time(), "2.4.0")], retain=True)
        collector.wait({_topic("th-north-01"): 2}, 30)
        _audits(daemon, 3)
        collector.collect(time.monotonic() + 1.0)
    finally:
        device.close()
        collector.close()
        assert daemon.terminate() == 0
    assert Counter(t for t, _, _ in collector.seen) == {_topic("th-north-01"): 2,
                                                        _topic("th-north-02"): 1}
    last = [body for t, body, _ in collector.seen if t == _topic("th-north-01")][-1]
    assert last["firmware"] == "2.4.0"
    retained = [r for t, _, r in collector.seen]
    assert not any(retained), "live deliveries to a subscribed session, none replayed"
