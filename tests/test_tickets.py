"""Ticket delivery against real receivers: an HTTP server, a script, a file, a replay.

The ticket system is a real HTTP server in a thread (``ticket_server.py``) that honours
idempotency keys the way a ticketing API does; the store is a real SQLite file; time for
the back-off is passed to ``drain_once`` so no test waits for it.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from ticket_server import TicketServer

from auditd.adapters.config.daemon import CommandConfig, WebhookConfig
from auditd.adapters.sinks.dispatch import (
    CommandSink,
    FileSink,
    TicketDispatcher,
    WebhookSink,
)
from auditd.adapters.store import Store
from auditd.adapters.store.alerts import AlertPlanner
from auditd.cli import main
from auditd.domain.alerts import plan
from auditd.domain.tickets import ticket_payload
from auditd.model import Cause, Finding
from auditd.retry import RetryPolicy

T0 = 1_764_028_800.0
HOUR = 3600.0


def failing(device: str) -> Finding:
    return Finding(kind="calibration", site="north", device=device, sensor="temperature",
                   status="fail", severity="major", window_start=T0 - 86400, window_end=T0,
                   unit="degC", reference="ref-north", metrics={"bias": 1.3},
                   causes=(Cause("offset_drift", 0.9, "reads 1.3 degC high"),),
                   action="Re-zero or recalibrate the temperature sensor.")


def open_alerts(store: Store, devices: list[str], sinks: tuple[str, ...]) -> None:
    """Two failing audits of each device: one alert (and one ticket request) each."""
    for i in range(2):
        now = T0 + i * HOUR
        round_ = [failing(d) for d in devices]
        store.findings.save(round_, [], now=now, alerts=AlertPlanner(
            decide=partial(plan, findings=round_, now=now),
            render=partial(ticket_payload, gateway="gw"), sinks=sinks))


@given(st.integers(1, 40), st.floats(0.1, 60), st.floats(1, 4000), st.floats(0, 1))
def test_backoff_doubles_within_its_cap_and_jitters_in_the_upper_half(
        attempts: int, base: float, cap: float, r: float) -> None:
    policy = RetryPolicy(backoff_min_s=base, backoff_max_s=cap)
    wait = policy.delay(attempts, lambda: r)
    nominal = min(cap, base * 2 ** (attempts - 1))
    assert nominal / 2 <= wait <= nominal
    assert policy.delay(attempts + 1, lambda: r) >= wait or nominal == cap


def test_webhook_down_then_up_gets_exactly_one_ticket_per_alert(tmp_path: Path) -> None:
    server = TicketServer()  # not started: connection refused
    devices = ["th-north-01", "th-north-02", "th-north-03"]
    with Store(tmp_path / "a.db") as store:
        open_alerts(store, devices, ("webhook",))
        dispatcher = TicketDispatcher(store, [WebhookSink(WebhookConfig(server.url, 5.0))],
                                      RetryPolicy(max_attempts=10, backoff_min_s=10,
                                                  backoff_max_s=600),
                                      rand=random.Random(1).random)
        now = T0 + 2 * HOUR
        assert dispatcher.drain_once(now=now) == 0  # down: one attempt, then back off
        assert dispatcher.drain_once(now=now + 1) == 0  # not due yet: no second attempt
        server.start()
        server.fail_next = 2  # up, but failing for two more attempts
        try:
            delivered = 0
            for step in range(1, 30):
                delivered += dispatcher.drain_once(now=now + step * 700)
            assert delivered == 3
            assert sorted(server.tickets) == sorted(a.id for a in store.alerts.select())
            for ticket_id, filed in server.tickets.items():
                [body] = filed
                assert body["ticket_id"] == ticket_id and body["event"] == "open"
                assert body["runbook"]["causes"][0]["cause"] == "offset_drift"
                assert body["runbook"]["causes"][0]["actions"]
            assert all(r.headers["Idempotency-Key"] == r.body["idempotency_key"]
                       for r in server.requests)
            assert len(server.requests) == 3 + 2  # each once, plus the two 503s
            assert store.tickets.counts() == {"webhook": {"delivered": 3}}
            assert dispatcher.drain_once(now=now + 10 * HOUR) == 0  # nothing sent twice
            assert len(server.requests) == 5
        finally:
            server.stop()


def test_a_webhook_that_keeps_failing_is_dead_lettered_and_can_be_retried(
        tmp_path: Path) -> None:
    server = TicketServer().start()
    server.fail_next = 10**6
    db = tmp_path / "a.db"
    try:
        with Store(db) as store:
            open_alerts(store, ["th-north-01"], ("webhook",))
            dispatcher = TicketDispatcher(store, [WebhookSink(WebhookConfig(server.url, 5.0))],
                                          RetryPolicy(max_attempts=4, backoff_min_s=1,
                                                      backoff_max_s=8))
            for step in range(20):
                dispatcher.drain_once(now=T0 + 2 * HOUR + step * 10)
            assert len(server.requests) == 4
            assert store.tickets.counts() == {"webhook": {"dead": 1}}
            assert store.summary().tickets_dead == 1
        out = CliRunner().invoke(main, ["findings", "--store", str(db)]).output
        assert "1 dead-lettered" in out
        out = CliRunner().invoke(main, ["tickets", "--store", str(db)]).output
        assert "webhook: 1 dead" in out and "HTTP 503" in out
        out = CliRunner().invoke(main, ["status", "--db", str(db)]).output
        assert "0 deliveries pending, 1 dead-lettered" in out, out
        assert "1 deliveries queued again" in CliRunner().invoke(
            main, ["tickets", "--retry-dead", "--store", str(db)]).output
        server.fail_next = 0
        with Store(db) as store:
            dispatcher = TicketDispatcher(store, [WebhookSink(WebhookConfig(server.url, 5.0))],
                                          RetryPolicy())
            assert dispatcher.drain_once(now=math.inf) == 1
            assert len(server.tickets) == 1
    finally:
        server.stop()


def test_dead_letters_are_a_metric(tmp_path: Path) -> None:
    from prometheus_client.core import GaugeMetricFamily

    from auditd.adapters.sinks.metrics import LiveFigures, families

    snap = LiveFigures(messages_received=0, messages_committed=0, readings_accepted=0,
                    readings_duplicate=0, rejected={}, store_write_failures=0,
                    broker_connected=True, broker_connects=1, broker_disconnects=0,
                    broker_connect_failures=0, outbox_depth=0, outbox_oldest_age_s=None,
                    streams=0, tickets={"webhook": {"dead": 2, "delivered": 5}})
    [family] = [f for f in families(snap) if f.name == "sensor_auditd_ticket_deliveries"]
    assert isinstance(family, GaugeMetricFamily)
    assert {(s.labels["sink"], s.labels["state"]): s.value for s in family.samples} == {
        ("webhook", "pending"): 0, ("webhook", "delivered"): 5, ("webhook", "dead"): 2}


def test_a_refused_request_is_dead_lettered_at_once(tmp_path: Path) -> None:
    server = TicketServer(fail_next=1, fail_status=400).start()
    try:
        with Store(tmp_path / "a.db") as store:
            open_alerts(store, ["th-north-01", "th-north-02"], ("webhook",))
            dispatcher = TicketDispatcher(store, [WebhookSink(WebhookConfig(server.url, 5.0))],
                                          RetryPolicy(max_attempts=10))
            assert dispatcher.drain_once(now=T0 + 3 * HOUR) == 0  # the first is refused
            assert dispatcher.drain_once(now=T0 + 3 * HOUR) == 1  # the queue moves on
            assert store.tickets.counts() == {"webhook": {"dead": 1, "delivered": 1}}
    finally:
        server.stop()


def test_the_command_hook_gets_the_ticket_on_stdin_and_its_key(tmp_path: Path) -> None:
    script = tmp_path / "open-ticket.py"
    script.write_text(
        "import json, os, pathlib, sys\n"
        "marker = pathlib.Path(sys.argv[1]) / 'failed-once'\n"
        "if not marker.exists():\n"
        "    marker.touch(); print('ticket system busy', file=sys.stderr); sys.exit(3)\n"
        "body = json.load(sys.stdin)\n"
        "assert body['idempotency_key'] == os.environ['SENSOR_AUDITD_IDEMPOTENCY_KEY']\n"
        "with open(pathlib.Path(sys.argv[1]) / 'filed.jsonl', 'a') as f:\n"
        "    f.write(json.dumps(body) + '\\n')\n")
    sink = CommandSink(CommandConfig((sys.executable, str(script), str(tmp_path)), 30.0))
    with Store(tmp_path / "a.db") as store:
        open_alerts(store, ["th-north-01"], ("command",))
        dispatcher = TicketDispatcher(store, [sink], RetryPolicy(backoff_min_s=5))
        assert dispatcher.drain_once(now=T0 + 2 * HOUR) == 0
        [row] = sqlite3.connect(tmp_path / "a.db").execute(
            "SELECT attempts, last_error FROM ticket_deliveries").fetchall()
        assert row == (1, "exit status 3: ticket system busy")
        assert dispatcher.drain_once(now=T0 + 3 * HOUR) == 1
    [filed] = [json.loads(x) for x in (tmp_path / "filed.jsonl").read_text().splitlines()]
    assert filed["device"] == "th-north-01" and filed["runbook"]["text"]


def test_the_file_sink_appends_one_line_per_request(tmp_path: Path) -> None:
    out = tmp_path / "tickets.jsonl"
    with Store(tmp_path / "a.db") as store:
        open_alerts(store, ["th-north-01", "th-north-02"], ("file",))
        TicketDispatcher(store, [FileSink(out)], RetryPolicy()).drain_once(now=T0 + 2 * HOUR)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [t["device"] for t in lines] == ["th-north-01", "th-north-02"]


# --------------------------------------------------------------------------- replay


def reference_fault_recording(path: Path, devices: int = 8, hours: int = 8,
                              step_at_h: float = 3.0, step: float = 1.5) -> Path:
    """A reference station whose temperature reads ``step`` high from ``step_at_h`` on,
    beside ``devices`` healthy th-200s, one reading a minute each (as the sample is made)."""
    rng = random.Random(5)
    start = 1_764_057_600  # 2025-11-25T08:00:00Z
    names = [f"th-north-{i:02d}" for i in range(1, devices + 1)]
    lines = [json.dumps({"topic": "fleet/north/ref-north/meta", "received_at": start - 60,
                         "payload": {"ts": start - 60, "model": "ref-station"}})]
    lines += [json.dumps({"topic": f"fleet/north/{d}/meta", "received_at": start - 30,
                          "payload": {"ts": start - 30, "model": "th-200",
                                      "firmware": "2.3.1"}}) for d in names]
    offsets = {d: rng.uniform(-0.1, 0.1) for d in names}
    wander = 0.0
    for minute in range(hours * 60):
        t = start + 60 * minute
        wander = 0.98 * wander + rng.gauss(0, 0.05)
        truth = 8.0 + 6.0 * math.sin(math.pi * minute / 960) + wander
        ref = truth + rng.gauss(0, 0.03) + (step if minute >= step_at_h * 60 else 0.0)
        lines.append(json.dumps({"topic": "fleet/north/ref-north/telemetry",
                                 "received_at": t + 1,
                                 "payload": {"ts": t, "readings": {"temperature": round(ref, 3)}}}))
        for d in names:
            lines.append(json.dumps({"topic": f"fleet/north/{d}/telemetry", "received_at": t + 2,
                                     "payload": {"ts": t + 1, "readings": {"temperature": round(
                                         truth + offsets[d] + rng.gauss(0, 0.1), 2)}}}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One replay of a reference fault over eight devices, with its store and tickets."""
    tmp = tmp_path_factory.mktemp("replay")
    recording = reference_fault_recording(tmp / "rec.jsonl")
    refs = tmp / "references"
    refs.mkdir()
    (refs / "north.toml").write_text(
        '[[reference]]\nid = "ref-north"\nsite = "north"\nserves = ["th-north-*"]\n'
        'sensors = ["temperature"]\nmodel = "ref-station"\ncalibration_due = "2027-06-01"\n')
    repo = Path(__file__).resolve().parents[1]
    for name in ("a", "b"):
        done = subprocess.run(
            [sys.executable, "-m", "auditd.cli", "replay", str(recording), "--profiles",
             str(repo / "device_profiles"), "--references", str(refs), "--out",
             str(tmp / f"{name}.findings.jsonl"), "--store", str(tmp / f"{name}.db"),
             "--tickets", str(tmp / f"{name}.tickets.jsonl")],
            capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    return tmp


def test_a_replayed_reference_fault_raises_one_grouped_ticket(replayed: Path) -> None:
    tickets = [json.loads(x) for x in (replayed / "a.tickets.jsonl").read_text().splitlines()]
    assert [(t["device"], t["cause"], t["event"]) for t in tickets] == [
        ("ref-north", "reference_fault", "open")]
    assert sorted(m["device"] for m in tickets[0]["members"]) == [
        f"th-north-{i:02d}" for i in range(1, 9)]
    assert (replayed / "a.tickets.jsonl").read_bytes() == \
        (replayed / "b.tickets.jsonl").read_bytes()  # the same recording, the same tickets
    result = CliRunner().invoke(main, ["findings", "--store", str(replayed / "a.db")])
    rows = [line for line in result.output.splitlines() if line.startswith("sa-")]
    assert len(rows) == 1 and "ref-north" in rows[0] and "8 devices" in rows[0], result.output
    assert rows[0].split()[0] == tickets[0]["ticket_id"][:11]
