"""The fleet replica's writer on its own, with a stand-in for the database: when it
acknowledges, what it does with a message the database refuses, and with a database that
is away. (Against the real PostgreSQL and mosquitto: test_fleet_live.py.)"""

from __future__ import annotations

import json
import queue
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import pytest

from auditd.adapters.sources.mqtt import Delivery
from auditd.errors import StoreError, UsageError
from auditd.fleet.adapters.config import FLEET_KEYS, INGEST_KEYS, load_fleet_config
from auditd.fleet.live import LiveWriter
from auditd.fleet.records import FleetFinding, Rejected, ReplicaBeat, Upstream, WriteCounts
from auditd.model import RawMessage

END = "2026-11-25T00:00:00Z"


def finding_message(device: str, mid: int) -> Delivery:
    body = {"kind": "calibration", "site": "north", "device": device, "sensor": "pressure",
            "window": {"start": "2026-11-24T00:00:00Z", "end": END}, "status": "pass",
            "severity": "none", "metrics": {}, "causes": [], "context": {}}
    topic = f"fleet/north/audit/gw/finding/{device}/pressure"
    return Delivery(RawMessage(topic, json.dumps(body).encode(), 1.0), mid, 1, 1)


class Database:
    """Stores what it is given, refusing any batch holding a finding of ``poison`` (for
    its content) and failing the first ``outages`` writes (for its own reasons)."""

    def __init__(self, poison: str = "", outages: int = 0) -> None:
        self.rows: list[Upstream] = []
        self.poison = poison
        self.outages = outages
        self.attempts = 0
        self.beats: list[ReplicaBeat] = []

    def write(self, records: Iterable[Upstream]) -> WriteCounts:
        batch = list(records)
        self.attempts += 1
        if self.outages:
            self.outages -= 1
            raise StoreError("connection refused")
        if any(isinstance(r, FleetFinding) and r.finding.device == self.poison for r in batch):
            raise StoreError("value too long", transient=False)
        self.rows.extend(batch)
        return WriteCounts(findings=len(batch))

    def heartbeat(self, beat: ReplicaBeat) -> None:
        self.beats.append(beat)


def writer(db: Database, deliveries: list[Delivery], acked: list[int]) -> LiveWriter:
    q: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
    for d in deliveries:
        q.put(d)

    def ack(batch: list[Delivery]) -> None:
        stored = {r.finding.device for r in db.rows if isinstance(r, FleetFinding)} | {
            r.topic.split("/")[5] for r in db.rows if isinstance(r, Rejected)}
        for d in batch:
            assert d.message.topic.split("/")[5] in stored, "acknowledged before committed"
        acked.extend(d.mid for d in batch)

    def beat(messages: int, backlog: int) -> ReplicaBeat:
        return ReplicaBeat("r1", "host", 1, "g", 0.0, time.time(), messages, backlog)

    return LiveWriter(q, db, ack, prefix="fleet", batch_max=100, beat=beat, heartbeat_s=0.05,
                      retry_max_s=0.05)


def run_until(w: LiveWriter, done: Callable[[], bool], timeout: float = 10.0) -> None:
    w.start()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop()
    w.join(10)


def test_a_message_the_database_refuses_is_kept_as_rejected_and_the_rest_committed() -> None:
    db = Database(poison="th-07")
    messages = [finding_message(f"th-{i:02d}", i) for i in range(20)]
    acked: list[int] = []
    w = writer(db, messages, acked)
    run_until(w, lambda: len(acked) == 20)
    assert sorted(acked) == list(range(20))
    stored = sorted(r.finding.device for r in db.rows if isinstance(r, FleetFinding))
    assert stored == [f"th-{i:02d}" for i in range(20) if i != 7]
    (rejected,) = [r for r in db.rows if isinstance(r, Rejected)]
    assert rejected.reason == "store_refused" and "value too long" in rejected.detail
    assert rejected.payload == messages[7].message.payload
    assert w.stats.rejected == 1 and w.stats.messages == 20


def test_a_database_away_is_waited_out_with_nothing_acknowledged_meanwhile() -> None:
    db = Database(outages=3)
    acked: list[int] = []
    w = writer(db, [finding_message(f"th-{i:02d}", i) for i in range(5)], acked)
    run_until(w, lambda: len(acked) == 5)
    assert sorted(acked) == list(range(5)) and db.attempts == 4
    assert w.stats.store_failures == 3
    assert db.beats and db.beats[-1].messages == 5 and db.beats[-1].backlog == 0


def test_stopping_while_the_database_is_away_acknowledges_nothing() -> None:
    db = Database(outages=10_000)
    acked: list[int] = []
    w = writer(db, [finding_message("th-01", 1)], acked)
    run_until(w, lambda: db.attempts >= 3, timeout=5)
    assert not w.is_alive()
    assert acked == [] and db.rows == [], "the broker keeps it: redelivered to a replica"


# --------------------------------------------------------------------------- the config file

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fleet.toml"


def test_the_example_fleet_config_states_the_defaults(tmp_path: Path) -> None:
    """Uncommenting every ``# key = value`` line of examples/fleet.toml changes nothing but
    the DSN it names, and the defaults are a working replica's."""
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = re.sub(r"(?m)^# ([a-z_0-9]+ = .*)$", r"\1", text)
    assert len(re.findall(r"(?m)^[a-z_0-9]+ = ", uncommented)) >= 9
    (tmp_path / "a.toml").write_text(uncommented, encoding="utf-8")
    (tmp_path / "b.toml").write_text(text, encoding="utf-8")
    cfg = load_fleet_config(tmp_path / "a.toml", environ={})
    plain = load_fleet_config(tmp_path / "b.toml", environ={"SENSOR_AUDITD_DSN": cfg.dsn})
    assert cfg == replace(plain, source=str(tmp_path / "a.toml"))
    assert cfg.subscription == "$share/sensor-auditd-fleet/fleet/+/audit/#"
    assert cfg.broker.protocol == "5" and cfg.ingest.batch_max <= cfg.broker.receive_maximum
    for key in (*FLEET_KEYS, *INGEST_KEYS):
        assert re.search(rf"(?m)^(# )?\[?{key}\]?( =|$)", text), f"{key} not in the example"


def test_each_replica_has_its_own_stable_client_id(tmp_path: Path) -> None:
    (tmp_path / "f.toml").write_text('dsn = "postgresql://f@db/fleet"\ngroup = "g1"\n')
    cfg = load_fleet_config(tmp_path / "f.toml", environ={})
    one, two = cfg.for_replica("1"), cfg.for_replica("2")
    assert one.broker.client_id == "sensor-auditd-fleet-g1-1"
    assert {one.broker.client_id, two.broker.client_id, cfg.for_replica("1").broker.client_id
            } == {"sensor-auditd-fleet-g1-1", "sensor-auditd-fleet-g1-2"}
    with pytest.raises(UsageError, match="--replica"):
        cfg.for_replica("a/b")
