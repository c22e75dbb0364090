"""Tickets end to end: the daemon as a subprocess, a real broker, a real HTTP ticket system.

The daemon is SIGKILLed twice: once with the ticket request written but the ticket system
down (nothing sent), once with the request in flight (sent, not recorded as delivered).
After each restart it carries on from the store; the ticket system ends up with exactly
one ticket, and sees only one idempotency key however often it was asked.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from daemon_proc import Collector, DaemonProcess, Publisher, telemetry, write_config
from ticket_server import TicketServer

pytestmark = pytest.mark.broker


def fleet(now: float, minutes: int) -> list[tuple[str, bytes]]:
    """The reference and two th-200s; th-north-02 reads 1.5 degC high throughout."""
    rng = random.Random(3)
    items = [(f"fleet/north/{d}/meta", json.dumps(
        {"ts": now - 7200, "model": "th-200", "firmware": "2.3.1"}).encode())
        for d in ("th-north-01", "th-north-02")]
    for m in range(minutes):
        ts = now - 60 * (minutes - m)
        truth = 12 + 5 * math.sin(2 * math.pi * m / 600)
        items.append(("fleet/north/ref-north/telemetry",
                      telemetry(ts, {"temperature": truth + rng.gauss(0, 0.03)})))
        items.append(("fleet/north/th-north-01/telemetry",
                      telemetry(ts + 2, {"temperature": truth + rng.gauss(0, 0.1)})))
        items.append(("fleet/north/th-north-02/telemetry",
                      telemetry(ts + 3, {"temperature": truth + 1.5 + rng.gauss(0, 0.1)})))
    return items


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db, timeout=10) as conn:
        return conn.execute(sql).fetchall()


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_sigkill_before_and_during_sending_still_gives_exactly_one_ticket(
        mosquitto, tmp_path: Path) -> None:
    server = TicketServer()  # reserved port, not listening yet: the ticket system is down
    store = tmp_path / "state" / "audit.db"
    config = write_config(
        tmp_path / "config.toml", port=mosquitto.port, store=store, audit_interval="2s",
        first_run_delay="1s",
        extra=f'\n[tickets]\nbackoff_min = "1s"\nbackoff_max = "2s"\nmax_attempts = 1000\n'
              f'[tickets.webhook]\nurl = "{server.url}"\ntimeout = "20s"\n')
    collector = Collector(mosquitto.port, "fleet/north/audit/+/ticket")
    publisher = Publisher(mosquitto.port)
    daemon = DaemonProcess(config).start()
    try:
        publisher.publish_many(fleet(time.time(), minutes=120))
        # 1. The request is in the store (with the findings), the ticket system is down.
        wait_until(lambda: store.exists() and rows(store, "select count(*) from tickets")[0][0]
                   >= 1, 60, "no ticket request was written")
        daemon.kill()
        [(key, alert)] = rows(store, "select idempotency_key, alert_id from tickets")
        assert rows(store, "select state from ticket_deliveries") == [("pending",)]
        assert server.requests == []

        # 2. Up again, but the daemon dies while its request is in flight.
        server.hold_next = 1
        server.start()
        daemon = DaemonProcess(config).start()
        assert server.arrived.wait(30), "the restarted daemon did not send the ticket"
        daemon.kill()
        server.released.set()  # the ticket system files it; nobody hears the answer
        wait_until(lambda: len(server.tickets) == 1, 10, "the ticket system filed nothing")
        assert rows(store, "select state from ticket_deliveries") == [("pending",)]

        # 3. Restarted: the same request again, recognised by its key; then quiet.
        daemon = DaemonProcess(config).start()
        wait_until(lambda: rows(store, "select state from ticket_deliveries")
                   == [("delivered",)], 30, "the delivery was never recorded")
        audits = sum(1 for line in daemon.lines if '"audit_done"' in line)
        daemon.wait_event(lambda e: e.get("event") == "audit_done"
                          and sum(1 for line in daemon.lines if '"audit_done"' in line)
                          >= audits + 2, 30)
        mqtt = collector.wait_for(lambda topic, body: isinstance(body, dict)
                                  and body.get("idempotency_key") == key, 30)
    finally:
        publisher.close()
        if daemon.alive:
            assert daemon.terminate() == 0
        collector.close()
        server.stop()
    assert rows(store, "select idempotency_key from tickets") == [(key,)]
    assert len(server.requests) >= 2
    assert {r.key for r in server.requests} == {key}
    assert list(server.tickets) == [alert]
    [filed] = server.tickets[alert]
    assert filed["device"] == "th-north-02" and filed["cause"] == "offset_drift"
    assert filed["runbook"]["causes"][0]["actions"]
    assert mqtt["ticket_id"] == alert


# --------------------------------------------------------------------------- commands


def test_parse_commands_and_refuse_bad_ones() -> None:
    from auditd.app.commands import Ack, Expire, SilenceCommand, parse

    at = 1_764_028_800.0
    assert parse(b'{"command": "ack", "alert": "sa-12ab", "by": "ana"}', at) == Ack(
        "sa-12ab", "ana", None)
    assert parse(b'{"command": "silence", "device": "th-north-*", "for": "8h"}', at) == \
        SilenceCommand("th-north-*", None, at + 8 * 3600)
    assert parse(b'{"command": "silence", "device": "th-1", "sensor": "temperature", '
                 b'"until": "2025-11-26T00:00:00Z", "reason": "works"}', at) == \
        SilenceCommand("th-1", "temperature", at + 86400, None, "works")
    assert parse(b'{"command": "expire", "silence": 3}', at) == Expire(3)
    for bad, problem in [(b"{", "not JSON"), (b"[]", "not a JSON object"),
                         (b'{"command": "reboot"}', "'command' must be"),
                         (b'{"command": "ack"}', "'alert'"),
                         (b'{"command": "silence", "device": "x"}', "one of 'until'"),
                         (b'{"command": "silence", "device": "x", "for": "8h", "until": 1}',
                          "one of 'until'"),
                         (b'{"command": "silence", "device": "x/#", "for": "8h"}',
                          "not a device id"),
                         (b'{"command": "silence", "device": "x", "until": 5}', "before it"),
                         (b'{"command": "expire", "silence": true}', "positive integer")]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            parse(bad, at)


def test_commands_from_an_authorised_client_only(tmp_path: Path) -> None:
    """The ACL in docs/alerts.md: operators may write the command topic, nobody else."""
    from functools import partial

    import paho.mqtt.client as paho
    from brokers import Mosquitto
    from paho.mqtt.enums import CallbackAPIVersion

    from auditd.adapters.store import Store
    from auditd.adapters.store.alerts import AlertPlanner
    from auditd.domain.alerts import plan
    from auditd.domain.tickets import ticket_payload
    from auditd.model import Cause, Finding

    if shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto_passwd is needed (apt-get install mosquitto)")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "ops-console",
                    "ops-secret"], check=True, capture_output=True, timeout=30)
    # Anonymous clients (the daemon and the devices here) may read the command topic but
    # not write it; only the ops-console account may.
    (tmp_path / "acl").write_text(
        "topic readwrite fleet/+/+/telemetry\ntopic readwrite fleet/+/+/meta\n"
        "topic readwrite fleet/+/+/event\ntopic readwrite fleet/north/audit/gw-test/status\n"
        "topic read fleet/north/audit/gw-test/command\n"
        "user ops-console\ntopic write fleet/+/audit/+/command\n")
    broker = Mosquitto(tmp_path / "mosquitto", extra_config=(
        f"password_file {tmp_path / 'passwd'}\nacl_file {tmp_path / 'acl'}\n")).start()
    store = tmp_path / "state" / "audit.db"
    store.parent.mkdir()
    failing = Finding(kind="calibration", site="north", device="th-north-02",
                      sensor="temperature", status="fail", severity="major",
                      window_start=0.0, window_end=1.0, causes=(Cause("stuck", 0.9, "flat"),))
    with Store(store) as s:
        for now in (1.0, 2.0):
            s.findings.save([failing], [], now=now, alerts=AlertPlanner(
                decide=partial(plan, findings=[failing], now=now),
                render=partial(ticket_payload, gateway="gw-test")))
        [alert] = s.alerts.select()
    config = write_config(tmp_path / "config.toml", port=broker.port, store=store,
                          extra='\n[topics]\ncommands = true\n')
    daemon = DaemonProcess(config).start()
    topic = "fleet/north/audit/gw-test/command"
    clients = []
    try:
        for user in (None, "ops-console"):
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"cmd-{user}",
                                 protocol=paho.MQTTv5)
            if user:
                client.username_pw_set(user, "ops-secret")
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            clients.append(client)
        stranger, operator = clients
        stranger.publish(topic, json.dumps({"command": "silence", "device": "th-*",
                                            "for": "30d", "by": "stranger"}), qos=1
                         ).wait_for_publish(10)
        for body in ({"command": "silence", "device": "th-north-*", "for": "8h",
                      "by": "ops", "reason": "site visit"},
                     {"command": "ack", "alert": alert.id[:11], "by": "ops"},
                     {"command": "fly"}):
            operator.publish(topic, json.dumps(body), qos=1).wait_for_publish(10)
        wait_until(lambda: rows(store, "select count(*) from quarantine where reason = "
                                       "'command_invalid'")[0][0] == 1, 30,
                   "the operator's commands were not processed")
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
        assert daemon.terminate() == 0
        broker.stop()
    assert rows(store, "select device, created_by, reason from silences") == [
        ("th-north-*", "ops", "site visit")]
    assert rows(store, "select state, acked_by from alerts") == [("acknowledged", "ops")]
