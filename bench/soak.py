"""Soak: a live daemon fed for a quarter of an hour by a fleet and by a hostile device, with
SIGKILLs and broker restarts along the way. Not a test (not run in CI): it prints what it
measured and writes ``bench/results-soak.json``; ``bench/README.md`` quotes the figures.

Usage: ``python bench/soak.py [--minutes 12] [--devices 300] [--period 5] [--hostile-rate 10]``

* **The fleet**: ``--devices`` devices announce their model (retained meta), then each sends
  a telemetry message of three readings every ``--period`` seconds, QoS 1, every message a
  new timestamp and values that are a known function of (device, timestamp).
* **The hostile device** sends ``--hostile-rate`` messages a second: lone surrogates in meta,
  events and keys, NUL, invalid UTF-8, NaN and infinities, numbers beyond a double, nesting
  hundreds deep, payloads over the size limit, topics that are not topics, random bytes, a
  flood of new device ids (valid readings and valid meta: the stream and device caps are
  what stop them), garbage from a new id each time (the quarantine cap is what bounds it).
  Some of it on the fleet's own device ids, so that a poison cannot hide in a corner.
* **Chaos**: the daemon is SIGKILLed and restarted at fixed points, the broker restarted
  (its persistence keeps the daemon's queued session) at others.
* **The daemon** is ``sensor-auditd run`` pinned to core 1 (``taskset -c 1``); the broker,
  the publishers and this process run on core 0. Its configuration sets every bound low
  enough to be reached within the run, and audits every two minutes (reads during ingest).

Goals, checked at the end: every valid reading stored exactly once, with its value; RSS
flat (no growth from the first third to the last) and the store's bounded parts within
their configured bounds (devices, streams, quarantine rows and bytes, write-ahead log); no
writer stall longer than ``stall_after``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from brokers import Mosquitto, free_port  # noqa: E402
from daemon_proc import DaemonProcess, write_config  # noqa: E402
from ingest import machine, pin  # noqa: E402

RESULTS = BENCH / "results-soak.json"
DAEMON_CORE, SERVICE_CORE = 1, 0

BOUNDS = {
    "max_devices": 400,
    "max_streams": 1000,
    "quarantine_max_rows": 5000,
    "quarantine_max_bytes": 2 * 2**20,
    "wal_limit": 4 * 2**20,
    "stall_after_s": 60,
}
"""Low enough that each is reached within the run: the fleet's 300 devices of 3 streams are
admitted first; the flood's new ids then fill the streams to their cap (readings) and the
devices to theirs (meta); the rest of the flood is refused."""


def value_of(device: int, ts_ms: int) -> float:
    """The temperature a fleet device sends at ``ts_ms``: checkable after the fact."""
    return round(15 + 10 * math.sin(ts_ms / 3.6e6 + device) + (ts_ms % 997) / 1000, 3)


# --------------------------------------------------------------------------- MQTT clients


class Client:
    """A device-side MQTT 5 client with a persistent session, counting PUBACKs (paho keeps
    unacknowledged QoS 1 messages and sends them again after a broker restart)."""

    def __init__(self, port: int, client_id: str) -> None:
        self.acked = 0
        self.sent = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_publish(self, *args: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            with self._lock:
                self.sent += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    client: Client
    devices: int
    period_s: float
    sent: list[tuple[int, int]] = field(default_factory=list)
    """(device, ts_ms) of every telemetry message published."""

    def announce(self) -> None:
        now = time.time()
        for d in range(self.devices):
            self.client.publish(f"fleet/north/dev-{d:03d}/meta", json.dumps(
                {"ts": now, "model": "th-200", "firmware": "2.3.1"}).encode(), retain=True)

    def run(self, stop: threading.Event) -> None:
        """One message every period_s / devices seconds, round robin."""
        gap = self.period_s / self.devices
        next_at = time.monotonic()
        d = 0
        while not stop.is_set():
            ts_ms = int(time.time() * 1000)
            payload = {"ts": ts_ms / 1000, "seq": len(self.sent), "readings": {
                "temperature": value_of(d, ts_ms),
                "humidity": {"value": 40 + d % 20, "unit": "percent"},
                "pressure": {"value": 1000 + d % 13, "unit": "hPa"}}}
            self.client.publish(f"fleet/north/dev-{d:03d}/telemetry", json.dumps(payload).encode())
            self.sent.append((d, ts_ms))
            d = (d + 1) % self.devices
            next_at += gap
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)


# --------------------------------------------------------------------------- the hostile device


def hostile_messages(rng: random.Random, fleet: int) -> list[tuple[str, str, bytes, int]]:
    """(kind, topic, payload, qos) of one round of hostility."""
    now = time.time()
    known = f"dev-{rng.randrange(fleet):03d}"
    new = f"hx-{rng.randrange(10**9)}"
    junk = f"junk-{rng.randrange(10**9)}"
    deep = "[" * 900 + "]" * 900
    return [
        ("surrogate_meta", f"fleet/north/{known}/meta",
         b'{"ts": %f, "model": "th-200", "firmware": "\\ud800"}' % now, 1),
        ("surrogate_event", f"fleet/north/{known}/event",
         b'{"ts": %f, "type": "maintenance", "detail": "\\udfff"}' % now, 1),
        ("nul_key", f"fleet/north/{known}/telemetry",
         b'{"ts": %f, "readings": {"temperature\\u0000": 1}}' % now, 1),
        ("invalid_utf8", f"fleet/north/{known}/meta",
         b'{"ts": %f, "firmware": "\xed\xa0\x80\xff"}' % now, 1),
        ("nan", f"fleet/north/{known}/telemetry",
         b'{"ts": %f, "readings": {"temperature": NaN, "humidity": Infinity}}' % now, 1),
        ("huge_number", f"fleet/north/{known}/telemetry",
         b'{"ts": %f, "readings": {"temperature": 1e999, "pressure": %s}}' % (
             now, b"9" * 400), 1),
        ("deep_nesting", f"fleet/north/{known}/meta",
         b'{"ts": %f, "location": %s}' % (now, deep.encode()), 1),
        ("nan_meta", f"fleet/north/{known}/meta", b'{"ts": %f, "serial": NaN}' % now, 1),
        ("too_large", f"fleet/north/{known}/telemetry", b"{" + b" " * 70_000 + b"}", 1),
        ("bad_topic", f"fleet/north/{junk}$/telemetry", b'{"ts": 1}', 1),
        ("random_bytes", f"fleet/north/{junk}/telemetry", rng.randbytes(rng.randrange(1, 600)), 0),
        ("new_id_flood", f"fleet/north/{new}/telemetry", json.dumps({"ts": now, "readings": {
            "temperature": 20.0, "humidity": 50, "pressure": 1000}}).encode(), 1),
        ("new_id_meta", f"fleet/north/{new}/meta",
         json.dumps({"ts": now, "model": "th-200", "serial": new}).encode(), 1),
        ("garbage_new_id", f"fleet/north/{junk}/event", b"<garbage>" * rng.randrange(1, 50), 1),
    ]


def hostile(client: Client, rate: float, fleet: int, stop: threading.Event,
            counts: dict[str, int]) -> None:
    rng = random.Random(20)
    gap = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        kind, topic, payload, qos = rng.choice(hostile_messages(rng, fleet))
        client.publish(topic, payload, qos=qos)
        counts[kind] = counts.get(kind, 0) + 1
        next_at += gap
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)


# --------------------------------------------------------------------------- sampling


def rss_mib(pid: int) -> float | None:
    try:
        match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            label = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{label}}}" if label else "")] = s.value
    return out


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class Samples:
    t: list[float] = field(default_factory=list)
    pid: list[int] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    store: list[int] = field(default_factory=list)
    wal: list[int] = field(default_factory=list)
    stalled: list[float] = field(default_factory=list)
    healthy: list[float] = field(default_factory=list)
    quarantine_rows: list[float] = field(default_factory=list)
    quarantine_bytes: list[float] = field(default_factory=list)
    devices: list[float] = field(default_factory=list)
    streams: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- the run


@dataclass
class Soak:
    args: argparse.Namespace
    work: Path
    broker: Mosquitto = field(init=False)
    daemon: DaemonProcess = field(init=False)
    config: Path = field(init=False)
    db: Path = field(init=False)
    metrics_port: int = field(default_factory=free_port)
    samples: Samples = field(default_factory=Samples)
    chaos: list[dict[str, Any]] = field(default_factory=list)
    daemons: list[DaemonProcess] = field(default_factory=list)

    def start_daemon(self, until: str = "ready") -> None:
        self.daemon = DaemonProcess(self.config)
        self.daemons.append(self.daemon)  # before it starts: cleanup must find it
        self.daemon.start(ready_timeout=60, until=until,
                          prefix=("taskset", "-c", str(DAEMON_CORE)))

    def cleanup(self) -> None:
        """Whatever happened: no daemon and no broker of this run is left running."""
        for daemon in self.daemons:
            if daemon.alive:
                daemon.kill()
        broker = getattr(self, "broker", None)
        if broker is not None:
            broker.stop()

    def setup(self) -> None:
        self.broker = Mosquitto(self.work / "broker").start()
        self.db = self.work / "state" / "audit.db"
        self.config = write_config(
            self.work / "soak.toml", port=self.broker.port, store=self.db,
            audit_interval="2m", first_run_delay="1m", keepalive=10,
            store_extra=(f"wal_limit = {BOUNDS['wal_limit']}\n"
                         f"quarantine_max_rows = {BOUNDS['quarantine_max_rows']}\n"
                         f"quarantine_max_bytes = {BOUNDS['quarantine_max_bytes']}\n"),
            extra=(f"[ingest]\nmax_devices = {BOUNDS['max_devices']}\n"
                   f"max_streams = {BOUNDS['max_streams']}\n"
                   f"stall_after = \"{BOUNDS['stall_after_s']}s\"\n"
                   f"[metrics]\nenabled = true\nport = {self.metrics_port}\n"
                   '[models]\n"dev-*" = "th-200"\n"hx-*" = "th-200"\n'))
        self.start_daemon(until="subscribed")

    def sample(self, t: float) -> None:
        pid = self.daemon.process.pid if self.daemon.process else 0
        rss = rss_mib(pid) if self.daemon.alive else None
        m = scrape(self.metrics_port) if self.daemon.alive else {}
        s = self.samples
        s.t.append(round(t, 1))
        s.pid.append(pid)
        s.rss.append(rss or float("nan"))
        s.store.append(sum(file_size(self.db.parent / f"audit.db{x}")
                           for x in ("", "-wal", "-shm")))
        s.wal.append(file_size(self.db.parent / "audit.db-wal"))
        s.stalled.append(m.get("sensor_auditd_writer_stalled_seconds", float("nan")))
        s.healthy.append(m.get("sensor_auditd_healthy", float("nan")))
        s.quarantine_rows.append(m.get("sensor_auditd_quarantine_rows", float("nan")))
        s.quarantine_bytes.append(m.get("sensor_auditd_quarantine_bytes", float("nan")))
        s.devices.append(m.get("sensor_auditd_devices", float("nan")))
        s.streams.append(m.get("sensor_auditd_streams", float("nan")))

    def kill_daemon(self, t: float) -> None:
        started = time.monotonic()
        self.daemon.kill()
        self.start_daemon()
        self.chaos.append({"at_s": round(t), "what": "SIGKILL + restart",
                           "ready_after_s": round(time.monotonic() - started, 2)})

    def restart_broker(self, t: float) -> None:
        started = time.monotonic()
        self.broker.stop()
        time.sleep(self.args.broker_down)
        self.broker.start()
        self.chaos.append({"at_s": round(t), "what": f"broker down {self.args.broker_down:g} s",
                           "back_after_s": round(time.monotonic() - started, 2)})


def check_store(db: Path, fleet: Fleet) -> dict[str, Any]:
    expected = {(f"dev-{d:03d}", ts_ms): value_of(d, ts_ms) for d, ts_ms in fleet.sent}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT s.device, r.ts_ms, r.value FROM readings r JOIN streams s ON s.id = "
            "r.stream_id WHERE s.sensor = 'temperature' AND s.device LIKE 'dev-%'").fetchall()
        per_stream = dict(conn.execute(
            "SELECT sensor, count(*) FROM readings r JOIN streams s ON s.id = r.stream_id "
            "WHERE s.device LIKE 'dev-%' GROUP BY sensor").fetchall())
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        quarantine = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM quarantine"
                                  ).fetchone()
        devices = conn.execute("SELECT count(*) FROM (SELECT device FROM streams UNION "
                               "SELECT device FROM meta_versions UNION SELECT device FROM "
                               "events)").fetchone()[0]
        streams = conn.execute("SELECT count(*) FROM streams").fetchone()[0]
    stored = {(device, ts_ms): value for device, ts_ms, value in rows}
    missing = [k for k in expected if k not in stored]
    extra = [k for k in stored if k not in expected]
    wrong = [k for k, v in expected.items() if k in stored and stored[k] != v]
    return {
        "valid_messages_sent": len(expected),
        "valid_readings_sent": 3 * len(expected),
        "readings_stored_of_fleet": sum(per_stream.values()),
        "temperature_missing": len(missing), "temperature_extra": len(extra),
        "temperature_wrong_value": len(wrong),
        "per_sensor": per_stream,
        "duplicates_absorbed": counters.get("readings_duplicate", 0),
        "devices": devices, "streams": streams,
        "quarantine_rows": quarantine[0], "quarantine_bytes": quarantine[1],
        "quarantine_dropped": counters.get("quarantine_dropped", 0),
        "rejected": {k.removeprefix("rejected."): v for k, v in sorted(counters.items())
                     if k.startswith("rejected.")},
        "broker_connects": counters.get("broker_connects", 0),
        "store_opened": counters.get("store_opened", 0),
        "store_write_failures": counters.get("store_write_failures", 0),
        "messages": counters.get("messages", 0),
    }


def _events(daemons: list[DaemonProcess], name: str) -> int:
    n = 0
    for d in daemons:
        for line in d.lines:
            if f'"event": "{name}"' in line:
                n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--period", type=float, default=5.0, help="seconds between a device's "
                        "messages")
    parser.add_argument("--hostile-rate", type=float, default=10.0, help="messages a second")
    parser.add_argument("--broker-down", type=float, default=5.0,
                        help="seconds the broker stays down at each restart")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    pin(0, SERVICE_CORE)
    duration = args.minutes * 60
    # Chaos at fixed shares of the run: kills and broker restarts, never at the same time.
    kills = [duration * f for f in (0.17, 0.42, 0.66, 0.87)]
    broker_restarts = [duration * f for f in (0.29, 0.55, 0.78)]
    with (tempfile.TemporaryDirectory(prefix="sensor-auditd-soak-") as tmp,
          contextlib.ExitStack() as stack):
        soak = Soak(args, Path(tmp))
        stack.callback(soak.cleanup)
        soak.setup()
        fleet_client = Client(soak.broker.port, "soak-fleet")
        hostile_client = Client(soak.broker.port, "soak-hostile")
        fleet = Fleet(fleet_client, args.devices, args.period)
        fleet.announce()
        time.sleep(2)  # the fleet's devices are admitted before the flood begins
        stop = threading.Event()
        hostile_counts: dict[str, int] = {}
        threads = [threading.Thread(target=fleet.run, args=(stop,), daemon=True),
                   threading.Thread(target=hostile, args=(hostile_client, args.hostile_rate,
                                                          args.devices, stop, hostile_counts),
                                    daemon=True)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        print(f"soak: {args.minutes:g} min, {args.devices} devices every {args.period:g} s, "
              f"hostile {args.hostile_rate:g}/s; store {soak.db}", flush=True)
        try:
            while (t := time.monotonic() - started) < duration:
                if kills and t >= kills[0]:
                    kills.pop(0)
                    soak.kill_daemon(t)
                    print(f"  {t:6.0f} s  SIGKILL, restarted", flush=True)
                if broker_restarts and t >= broker_restarts[0]:
                    broker_restarts.pop(0)
                    soak.restart_broker(t)
                    print(f"  {t:6.0f} s  broker restarted", flush=True)
                soak.sample(t)
                if len(soak.samples.t) % 120 == 0:
                    s = soak.samples
                    print(f"  {t:6.0f} s  RSS {s.rss[-1]:.0f} MiB, store "
                          f"{s.store[-1] / 2**20:.1f} MiB, WAL {s.wal[-1] / 2**20:.2f} MiB, "
                          f"sent {len(fleet.sent)}", flush=True)
                time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        # Everything published is acknowledged by the broker, then stored by the daemon.
        deadline = time.monotonic() + 300
        while fleet_client.acked < fleet_client.sent and time.monotonic() < deadline:
            time.sleep(0.5)
        want = 3 * len(fleet.sent)
        drain_started = time.monotonic()
        while time.monotonic() < deadline:
            with sqlite3.connect(f"file:{soak.db}?mode=ro", uri=True) as conn:
                have = conn.execute(
                    "SELECT count(*) FROM readings r JOIN streams s ON s.id = r.stream_id "
                    "WHERE s.device LIKE 'dev-%'").fetchone()[0]
            if have >= want:
                break
            soak.sample(time.monotonic() - started)
            time.sleep(0.5)
        drain_s = time.monotonic() - drain_started
        exit_status = soak.daemon.terminate(60)
        fleet_client.close()
        hostile_client.close()
        result = check_store(soak.db, fleet)
        soak.broker.stop()
        s = soak.samples
        finite = [x for x in s.rss if not math.isnan(x)]
        # Each life of the daemon (between SIGKILLs) loads the audit's numerics at its first
        # audit, so RSS is compared life against life: the peak of each, in order.
        lives: dict[int, list[float]] = {}
        for pid, rss in zip(s.pid, s.rss, strict=True):
            if not math.isnan(rss):
                lives.setdefault(pid, []).append(rss)
        life_peaks = [round(max(v), 1) for v in lives.values()]
        life_s = [round(len(v) * 0.5) for v in lives.values()]
        stalls = [x for x in s.stalled if not math.isnan(x)]
        report = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "load_average_at_end": os.getloadavg(),
            "settings": {"minutes": args.minutes, "devices": args.devices,
                         "period_s": args.period, "hostile_rate": args.hostile_rate,
                         "broker_down_s": args.broker_down, "bounds": BOUNDS,
                         "daemon_core": DAEMON_CORE},
            "chaos": soak.chaos,
            "hostile_sent": dict(sorted(hostile_counts.items())),
            "fleet": result,
            "daemon_exit_status": exit_status,
            "drain_after_end_s": round(drain_s, 1),
            "rss_mib": {"peak": round(max(finite), 1), "peak_per_life": life_peaks,
                        "life_seconds": life_s, "first": round(finite[0], 1)},
            "store_bytes_peak": max(s.store), "store_bytes_end": s.store[-1],
            "wal_bytes_peak": max(s.wal),
            "quarantine_rows_peak": max((x for x in s.quarantine_rows if not math.isnan(x)),
                                        default=None),
            "quarantine_bytes_peak": max((x for x in s.quarantine_bytes if not math.isnan(x)),
                                         default=None),
            "devices_peak": max((x for x in s.devices if not math.isnan(x)), default=None),
            "streams_peak": max((x for x in s.streams if not math.isnan(x)), default=None),
            "writer_stalled_s_peak": max(stalls, default=0.0),
            "unhealthy_samples": sum(1 for x in s.healthy if x == 0),
            "log_events": {name: _events(soak.daemons, name) for name in (
                "writer_stalled", "store_write_failed", "message_isolated", "watchdog_withheld",
                "store.checkpoint", "audit_done", "audit_failed", "metadata_unjudgeable")},
        }
        goals = {
            "every_valid_reading_once": (result["readings_stored_of_fleet"] ==
                                         result["valid_readings_sent"]
                                         and result["temperature_missing"] == 0
                                         and result["temperature_extra"] == 0
                                         and result["temperature_wrong_value"] == 0),
            "devices_within_bound": result["devices"] <= BOUNDS["max_devices"],
            "streams_within_bound": result["streams"] <= BOUNDS["max_streams"],
            "quarantine_within_bounds": (
                result["quarantine_rows"] <= BOUNDS["quarantine_max_rows"]
                and result["quarantine_bytes"] <= BOUNDS["quarantine_max_bytes"]),
            "wal_within_bound": report["wal_bytes_peak"] <= BOUNDS["wal_limit"],
            # No growth from life to life (a leak would show in the later, equally long ones).
            "rss_flat": max(life_peaks[1:], default=0) <= 1.15 * max(life_peaks[0], 1.0),
            "no_stall_beyond_limit": report["writer_stalled_s_peak"] < BOUNDS["stall_after_s"]
            and report["log_events"]["writer_stalled"] == 0,
        }
        report["goals"] = goals
        report["samples"] = {"t": s.t, "rss_mib": [None if math.isnan(x) else round(x, 1)
                                                  for x in s.rss],
                             "store_bytes": s.store, "wal_bytes": s.wal}
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("fleet", "rss_mib", "wal_bytes_peak",
                                             "store_bytes_peak", "writer_stalled_s_peak",
                                             "log_events", "chaos", "goals")}, indent=2))
    print(f"wrote {args.out}")
    if not all(goals.values()):
        sys.exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
