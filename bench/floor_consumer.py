"""The floor: the least work any paho-based, commit-then-ack consumer can do per message.

``bench/ingest.py`` runs this as its own process, pinned to the same core the daemon gets,
against the same broker settings (MQTT 5, persistent session, ``manual_ack=True``, the
daemon's Receive Maximum) and the same SQLite durability (WAL, the daemon's
``synchronous``, checkpoint pragmas). It keeps only what the daemon's guarantee cannot do
without -- parse JSON, insert the readings idempotently, commit, then acknowledge -- and
drops everything that makes the daemon a product: no validation, no units, no stream ids,
no quarantine, no logging. Its messages per second therefore bound what the daemon could
reach with this client library, this broker and this disk; the daemon/floor ratio is the
share of the achievable throughput the daemon actually gets.

Progress is one row in ``progress`` updated inside each batch's transaction (as the
daemon's ``counters`` are), so the benchmark can poll it cheaply instead of counting rows.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import threading
import time
from collections import deque
from datetime import datetime
from types import FrameType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

SCHEMA = (
    # The daemon's row shape (int stream id, int epoch ms, real, int), so that both write
    # the same bytes per reading: text keys would make the floor pay more disk, not less.
    "CREATE TABLE IF NOT EXISTS readings (stream INTEGER NOT NULL, ts INTEGER NOT NULL,"
    " value REAL, seq INTEGER, PRIMARY KEY (stream, ts)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS progress (id INTEGER PRIMARY KEY, messages INTEGER NOT NULL,"
    " readings INTEGER NOT NULL, batches INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO progress (id, messages, readings, batches) VALUES (1, 0, 0, 0)",
)
INSERT = "INSERT OR IGNORE INTO readings (stream, ts, value, seq) VALUES (?, ?, ?, ?)"
PROGRESS = ("UPDATE progress SET messages = messages + ?, readings = readings + ?,"
            " batches = batches + 1 WHERE id = 1")

Item = tuple[str, bytes | bytearray, int, int]
"""(topic, payload, mid, qos) as taken from paho's message in ``on_message``."""


def open_db(path: str, synchronous: str, autocheckpoint: int,
            size_limit: int) -> sqlite3.Connection:
    """One writer connection with the daemon's pragmas, so the disk costs the same."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL").fetchone()
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute(f"PRAGMA journal_size_limit = {int(size_limit)}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {int(autocheckpoint)}")
    for statement in SCHEMA:
        conn.execute(statement)
    return conn


def rows_of(topic: str, payload: bytes | bytearray,
            streams: dict[str, int]) -> list[tuple[int, int, Any, Any]]:
    """json.loads and flatten to (stream id, epoch ms, value, seq); nothing is checked.

    Stream ids come from an in-memory dict (no streams table); ``ts`` goes through the C
    ``datetime.fromisoformat``, the cheapest RFC 3339 parse the standard library has. A
    reading's value is the bare number or its ``value`` key, whatever the unit says.
    """
    doc = json.loads(payload)
    readings = doc.get("readings") if type(doc) is dict else None
    if not readings:
        return []
    device = topic.split("/", 3)[2]
    ts = round(datetime.fromisoformat(doc["ts"]).timestamp() * 1000)
    seq = doc.get("seq")
    rows = []
    for name, raw in readings.items():
        key = f"{device}/{name}"
        sid = streams.get(key)
        if sid is None:
            sid = streams[key] = len(streams) + 1
        rows.append((sid, ts, raw.get("value") if type(raw) is dict else raw, seq))
    return rows


class FloorConsumer:
    """paho network thread -> deque -> one writer thread: batch, commit, then PUBACK."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.queue: deque[Item] = deque()
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.db = open_db(args.db, args.synchronous, args.wal_autocheckpoint,
                          args.journal_size_limit)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id,
                                  protocol=paho.MQTTv5, manual_ack=True)
        self.client.max_inflight_messages_set(args.receive_maximum)
        self.client.max_queued_messages_set(0)
        self.client.on_message = self.on_message

    def on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        """Only append: the network thread must never wait for the disk."""
        self.queue.append((msg.topic, msg.payload, msg.mid, msg.qos))
        if len(self.queue) == 1:
            self.wake.set()

    def take(self) -> list[Item]:
        """The daemon's batching policy (``BatchWriter._take``), so batches are as large.

        Take what is queued; when the queue runs dry before the bound, yield the GIL once
        (``sleep(0)``: paho's thread usually has more messages decoded by then) and take
        again, unless ``batch_max_wait_s`` has passed since the batch began. Without that
        yield the floor commits smaller batches than the daemon and, with 120 interleaved
        streams rewriting their tail pages on every commit, ends up slower than the daemon
        at ``synchronous=NORMAL``: no longer a floor.
        """
        batch: list[Item] = []
        queue, batch_max = self.queue, self.args.batch_max
        deadline = time.monotonic() + self.args.batch_max_wait
        while len(batch) < batch_max:
            if queue:
                batch.append(queue.popleft())
                continue
            if not batch or time.monotonic() >= deadline:
                break
            time.sleep(0)
            if not queue:
                break
        return batch

    def write_loop(self) -> None:
        """Take a batch, commit it, then acknowledge it: the daemon's guarantee, nothing more."""
        db, ack = self.db, self.client.ack
        streams: dict[str, int] = {}
        while not self.stop.is_set():
            self.wake.clear()
            batch = self.take()
            if not batch:
                self.wake.wait(0.2)
                continue
            rows = [row for topic, payload, _, _ in batch
                    for row in rows_of(topic, payload, streams)]
            db.execute("BEGIN IMMEDIATE")
            db.executemany(INSERT, rows)
            db.execute(PROGRESS, (len(batch), len(rows)))
            db.execute("COMMIT")
            for _, _, mid, qos in batch:
                if qos:
                    ack(mid, qos)

    def run(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self.args.session_expiry)
        props.ReceiveMaximum = self.args.receive_maximum
        writer = threading.Thread(target=self.write_loop, name="floor-writer", daemon=True)
        writer.start()
        self.client.connect(self.args.host, self.args.port, keepalive=60, clean_start=False,
                            properties=props)
        self.client.loop_start()
        self.stop.wait()
        writer.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()
        self.db.close()

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()
        self.wake.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full")
    parser.add_argument("--receive-maximum", type=int, default=100)
    parser.add_argument("--batch-max", type=int, default=100)
    parser.add_argument("--batch-max-wait", type=float, default=0.05)
    parser.add_argument("--session-expiry", type=float, default=7 * 86400.0)
    parser.add_argument("--wal-autocheckpoint", type=int, default=1000)
    parser.add_argument("--journal-size-limit", type=int, default=-1)
    consumer = FloorConsumer(parser.parse_args())
    signal.signal(signal.SIGTERM, consumer.request_stop)
    signal.signal(signal.SIGINT, consumer.request_stop)
    consumer.run()


if __name__ == "__main__":
    main()
