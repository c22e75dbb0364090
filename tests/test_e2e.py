"""The daemon end to end: a real mosquitto, the daemon as a subprocess, a real SQLite file.

A device and its reference publish over MQTT; the daemon ingests, audits on its schedule
and publishes findings upstream, where a subscriber reads them like an upstream consumer.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
import time
from pathlib import Path

import pytest
from daemon_proc import Collector, DaemonProcess, Publisher, telemetry, write_config

pytestmark = pytest.mark.broker

MODEL_META = {"model": "th-200", "firmware": "2.3.1"}


def _meta(device: str, now: float) -> tuple[str, bytes]:
    return (f"fleet/north/{device}/meta", json.dumps({"ts": now - 7200, **MODEL_META}).encode())


def _fleet(now: float, minutes: int, offset: float, seed: int = 7) -> list[tuple[str, bytes]]:
    """The reference and two th-200s over ``minutes``; th-north-02 reads ``offset`` high."""
    rng = random.Random(seed)
    items = []
    for m in range(minutes):
        ts = now - 60 * (minutes - m)
        truth = 12 + 5 * math.sin(2 * math.pi * m / 600) + 0.01 * m
        items.append(("fleet/north/ref-north/telemetry",
                      telemetry(ts, {"temperature": truth + rng.gauss(0, 0.03)})))
        items.append(("fleet/north/th-north-01/telemetry",
                      telemetry(ts + 2, {"temperature": truth + rng.gauss(0, 0.1)}, seq=m)))
        items.append(("fleet/north/th-north-02/telemetry",
                      telemetry(ts + 3, {"temperature": {
                          "value": (truth + offset + rng.gauss(0, 0.1)) * 9 / 5 + 32,
                          "unit": "degF"}}, seq=m)))
    return items


def _count(db: Path, sql: str, *params: object) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


def test_offset_is_found_and_published_upstream(mosquitto, tmp_path: Path) -> None:
    store = tmp_path / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=store,
                          audit_interval="4s", first_run_delay="2s")
    collector = Collector(mosquitto.port, "fleet/north/audit/#")
    daemon = DaemonProcess(config).start()
    publisher = Publisher(mosquitto.port)
    try:
        now = time.time()
        publisher.publish_many([_meta(d, now) for d in ("th-north-01", "th-north-02")],
                               retain=True)
        publisher.publish_many(_fleet(now, minutes=180, offset=1.5))

        def final(device: str):
            return collector.wait_for(
                lambda topic, body: topic.endswith(f"/finding/{device}/temperature")
                and isinstance(body, dict) and body["metrics"].get("n", 0) >= 170, 60)

        bad, good = final("th-north-02"), final("th-north-01")
        assert bad["status"] == "fail"
        assert bad["unit"] == "degC"
        assert bad["reference"] == "ref-north"
        assert abs(bad["metrics"]["bias"] - 1.5) < 0.05, bad["metrics"]
        assert bad["causes"][0]["cause"] == "offset_drift"
        assert good["status"] == "pass", good
        assert abs(good["metrics"]["bias"]) < 0.1
        report = collector.wait_for(lambda topic, body: topic.endswith("/report")
                                    and isinstance(body, dict) and body.get("fail") == 1, 30)
        assert report["failing"][0]["device"] == "th-north-02"
    finally:
        publisher.close()
        status = daemon.terminate()
        collector.close()
    assert status == 0
    assert any('"stopped"' in line for line in daemon.lines)


def test_sigkill_during_burst_loses_and_duplicates_nothing(mosquitto, tmp_path: Path) -> None:
    store = tmp_path / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=store)
    daemon = DaemonProcess(config).start()
    publisher = Publisher(mosquitto.port)
    now = time.time()
    publisher.publish_many([_meta("th-north-01", now)], retain=True)
    messages = 10000
    burst = [("fleet/north/th-north-01/telemetry",
              telemetry(now - 3 * messages + 3 * i, {"temperature": 20 + (i % 50) / 10,
                                                     "humidity": 40.0, "pressure": 1000.0},
                        seq=i))
             for i in range(messages)]
    infos = [publisher.client.publish(t, p, qos=1) for t, p in burst]
    deadline = time.monotonic() + 30
    while _count(store, "select count(*) from readings") < 900:
        assert time.monotonic() < deadline, "daemon ingested nothing"
        time.sleep(0.01)
    daemon.kill()
    stored_at_kill = _count(store, "select count(*) from readings")
    for info in infos:
        info.wait_for_publish(timeout=60)
    publisher.close()

    restarted = DaemonProcess(config).start()
    try:
        deadline = time.monotonic() + 60
        while _count(store, "select count(*) from readings") < 3 * messages:
            assert time.monotonic() < deadline, "readings missing after restart"
            time.sleep(0.05)
        time.sleep(1.0)  # anything redelivered twice would land now
    finally:
        assert restarted.terminate() == 0
    total = _count(store, "select count(*) from readings")
    distinct = _count(store, "select count(distinct stream_id || ':' || ts_ms) from readings")
    assert stored_at_kill < 3 * messages, "the kill came too late to test anything"
    assert total == distinct == 3 * messages
    print(f"crash test: {stored_at_kill} of {3 * messages} readings stored at SIGKILL, "
          f"{total} after restart, {total - distinct} duplicates")


def test_bad_input_is_quarantined_and_the_daemon_keeps_going(mosquitto, tmp_path: Path) -> None:
    """Also the MQTT 3.1.1 path: persistent session by clean_session=False, manual acks."""
    store = tmp_path / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=store,
                          protocol="3.1.1")
    daemon = DaemonProcess(config).start()
    publisher = Publisher(mosquitto.port)
    now = time.time()
    good_topic = "fleet/north/th-north-01/telemetry"
    bad = [
        (good_topic, b"{not json", "json_invalid"),
        (good_topic, b"x" * 70_000, "payload_too_large"),
        (good_topic, telemetry(now, {"temperature": {"value": 20, "unit": "hPa"}}),
         "unit_incompatible"),
        (good_topic, telemetry(now, {"temperature": {"value": 20, "unit": "zorkmids"}}),
         "unit_invalid"),
        # well formed, outside the range: kept and flagged, not quarantined
        (good_topic, telemetry(now, {"temperature": 500.0}), None),
        (good_topic, json.dumps({"readings": {"temperature": 1}}).encode(), "ts_invalid"),
        (good_topic, telemetry(now + 86400, {"temperature": 20.0}), "ts_future"),
        ("fleet/north/bad$device/telemetry", telemetry(now, {"temperature": 20.0}),
         "topic_invalid"),
        ("fleet/north/th-north-01/telemetry/extra", telemetry(now, {"temperature": 1.0}),
         None),  # not matched by the subscription at all
    ]
    try:
        publisher.publish_many([_meta("th-north-01", now)], retain=True)
        items = []
        for i in range(200):
            items.append((good_topic, telemetry(now - 2000 + i, {"temperature": 20.0 + i / 100})))
            if i % 20 == 10:
                topic, payload, _ = bad[(i // 20) % len(bad)]
                items.append((topic, payload))
        for topic, payload, _ in bad:
            items.append((topic, payload))
        publisher.publish_many(items)
        expected_reasons = {reason for _, _, reason in bad if reason}
        deadline = time.monotonic() + 30
        while True:
            with sqlite3.connect(store) as conn:
                readings = conn.execute("select count(*) from readings").fetchone()[0]
                reasons = {r for (r,) in conn.execute("select distinct reason from quarantine")}
            if readings == 201 and expected_reasons <= reasons:
                break
            assert time.monotonic() < deadline, (readings, reasons)
            time.sleep(0.1)
        assert daemon.alive
        assert reasons == expected_reasons
        with sqlite3.connect(store) as conn:
            assert conn.execute("select count(*) from readings where value = 500").fetchone() \
                == (1,)
        with sqlite3.connect(store) as conn:
            rows = conn.execute("select topic, reason, length(payload) from quarantine").fetchall()
        assert all(length <= 4096 for _, _, length in rows)
        assert any(topic == "fleet/north/bad$device/telemetry" for topic, _, _ in rows)
    finally:
        publisher.close()
        assert daemon.terminate() == 0


def test_a_publish_the_broker_refuses_backs_off_and_stays_in_the_outbox(tmp_path: Path) -> None:
    """An ACL that forbids the finding topic (a common set-up mistake): the refused rows stay
    queued for when the ACL is fixed, retried with backoff, not in a tight loop."""
    from brokers import Mosquitto

    acl = tmp_path / "acl"
    acl.write_text("".join(f"topic readwrite {t}\n" for t in (
        "fleet/+/+/telemetry", "fleet/+/+/meta", "fleet/+/+/event",
        "fleet/north/audit/+/status", "fleet/north/audit/+/report")))
    broker = Mosquitto(tmp_path / "mosquitto", extra_config=f"acl_file {acl}\n").start()
    store = tmp_path / "state" / "audit.db"
    config = write_config(tmp_path / "config.toml", port=broker.port, store=store,
                          audit_interval="1h", first_run_delay="2s")
    daemon = DaemonProcess(config).start()
    publisher = Publisher(broker.port)
    try:
        now = time.time()
        publisher.publish_many([_meta("th-north-01", now)], retain=True)
        publisher.publish_many([item for item in _fleet(now, minutes=120, offset=0.0)
                                if "th-north-02" not in item[0]])
        deadline = time.monotonic() + 30
        while _count(store, "select count(*) from findings") == 0:
            assert time.monotonic() < deadline, "no audit ran"
            time.sleep(0.2)
        # the first refused attempt (on a loaded machine it may lag the audit's commit),
        # then 5 s of watching
        first = "select coalesce(max(attempts), 0) from outbox where topic like '%/finding/%'"
        while _count(store, first) == 0:
            assert time.monotonic() < deadline + 30, "no publish was attempted"
            time.sleep(0.2)
        time.sleep(5)
        attempts = _count(store, first)
        queued = _count(store, "select count(*) from outbox where topic like '%/finding/%'")
        assert daemon.alive
    finally:
        publisher.close()
        assert daemon.terminate() == 0
        broker.stop()
    assert queued >= 1, "the refused finding must stay in the outbox"
    # Backoff of 2 s, then 4 s: within the 5 s watched, at most three attempts.
    assert 1 <= attempts <= 3, attempts
