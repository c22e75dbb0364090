"""Live ingest of the fleet service: two ``fleet run`` replicas against a floor measured in
the same run.

Usage: ``python bench/fleet_live.py [--gateways G] [--devices D] [--sensors S]
[--repeat R] [--batch-max B] [--receive-maximum M]``.

A benchmark, not a test: it prints a table and writes ``bench/results-fleet-live.json``;
it asserts nothing about speed. ``bench/README.md`` explains the method and the figures.

* **The workload is what gateways publish upstream**: per gateway, a retained device
  inventory per device, a retained finding per device and sensor, and an audit report
  (``G * (D + D*S + 1)`` messages, every one a new row in the fleet's tables).
* **Consumer throughput, not publisher speed.** The consumers' persistent sessions are
  created first (their client ids, ``clean_start=False``, the shared subscription), then
  everything is published and queued by the broker, split between the two sessions. Only
  then are the consumers started: they drain full queues as fast as they can.
* **The floor** (``bench/fleet_floor.py``): two bare paho MQTT 5 shared-subscription
  consumers, as two processes, receiving and acknowledging the same messages with the
  replicas' broker settings, and nothing else. Measured in the same run, on a fresh broker,
  alternating with the replicas (a pair per repeat); the ratio is what matters, since this
  machine is shared and its speed drifts.
* **Timed from first to last.** Replicas: the fleet's tables are polled every 20 ms; t0 is
  the first poll that sees a row, t1 the first that sees them all; rate = (rows - rows at
  t0) / (t1 - t0). Floor: each consumer reports its count every 10 ms; t0 is the first
  message either got, t1 when both had all of theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import fleet  # noqa: E402  (bench/fleet.py: server_version)
import ingest  # noqa: E402  (bench/ingest.py: publish, create_session, machine)

from tests.brokers import Mosquitto  # noqa: E402

SERVER = os.environ.get("FLEET_BENCH_SERVER", "postgresql://postgres@127.0.0.1:5432")
GROUP = "bench"
REPLICAS = ("r1", "r2")
SESSION_EXPIRY_S = 7 * 86400
POLL_S = 0.02
STALL_S = 120.0
SENSORS = ("temperature", "humidity", "pressure", "pm2_5", "co2", "no2")

Message = tuple[str, bytes]


# --------------------------------------------------------------------------- workload


def workload(gateways: int, devices: int, sensors: int) -> list[Message]:
    """What ``gateways`` gateways publish after one audit, interleaved gateway by gateway."""
    end = time.time() - 3600
    iso = ingest.rfc3339
    out: list[Message] = []
    for g in range(gateways):
        site, gw = f"site{g:04d}", f"gw{g:04d}"
        for d in range(devices):
            device = f"th-{g:04d}-{d:02d}"
            out.append((f"fleet/{site}/audit/{gw}/device/{device}", json.dumps({
                "kind": "device", "ts": iso(end), "site": site, "gateway": gw,
                "device": device, "role": "field", "model": "th-200",
                "firmware": "2.4.0" if d == 0 else "2.3.1", "hardware_rev": "B",
                "serial": f"SN-{g}-{d}", "installed_at": "2025-03-01",
                "last_seen": iso(end - 30), "status": "pass", "causes": [],
                "sensors": list(SENSORS[:sensors])}).encode()))
            for sensor in SENSORS[:sensors]:
                failing = d == 0 and sensor == "pressure"
                out.append((f"fleet/{site}/audit/{gw}/finding/{device}/{sensor}", json.dumps({
                    "kind": "calibration", "site": site, "device": device, "sensor": sensor,
                    "reference": f"ref-{site}", "unit": "hPa",
                    "window": {"start": iso(end - 86400), "end": iso(end)},
                    "status": "fail" if failing else "pass",
                    "severity": "major" if failing else "none",
                    "metrics": {"n": 1440, "bias": 2.5 if failing else 0.05, "gain": 1.0,
                                "offset": 0.0, "rmse": 0.3, "r2": 0.99, "lag_s": 0.0},
                    "causes": [{"cause": "offset_drift", "confidence": 0.93,
                                "evidence": "+2.5 hPa"}] if failing else [],
                    "onset": None, "context": {}, "action": ""}).encode()))
        out.append((f"fleet/{site}/audit/{gw}/report", json.dumps({
            "kind": "audit_report", "site": site, "gateway": gw, "at": iso(end),
            "duration_s": 0.4, "streams": devices * sensors, "pass": devices * sensors - 1,
            "fail": 1, "insufficient_data": 0, "failing": [], "metadata": [],
            "cohorts": []}).encode()))
    return out


# --------------------------------------------------------------------------- parts


@contextmanager
def database() -> Iterator[str]:
    name = f"fleet_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{SERVER}/{name}"
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def broker(directory: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(directory).start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()


def rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute("SELECT (SELECT count(*) FROM findings) + "
                               "(SELECT count(*) FROM devices) + "
                               "(SELECT count(*) FROM audit_reports)").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- measurements


def measure_replicas(messages: list[Message], tmp: Path, batch_max: int,
                     receive_maximum: int) -> dict[str, Any]:
    with database() as dsn, broker(tmp / "mosquitto-fleet") as mosq:
        config = tmp / "fleet.toml"
        config.write_text(f'group = "{GROUP}"\ndsn = "{dsn}"\nheartbeat = "5s"\n'
                          f'[broker]\nhost = "127.0.0.1"\nport = {mosq.port}\n'
                          f'receive_maximum = {receive_maximum}\n'
                          f'[ingest]\nbatch_max = {batch_max}\n'
                          f'[log]\nlevel = "warning"\nformat = "json"\n')
        shared = f"$share/{GROUP}/fleet/+/audit/#"
        for name in REPLICAS:
            ingest.create_session(mosq.port, f"sensor-auditd-fleet-{GROUP}-{name}", [shared],
                                  SESSION_EXPIRY_S)
        publish_s = ingest.publish(mosq.port, [], messages)
        # The schema is created before the clock starts: the first replica migrates it.
        subprocess.run([sys.executable, "-c", "from auditd.fleet.adapters.store import "
                        f"FleetStore; FleetStore.open({dsn!r}).close()"], check=True)
        procs = [subprocess.Popen(
            [sys.executable, "-m", "auditd.cli", "fleet", "run", "--config", str(config),
             "--replica", name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for name in REPLICAS]
        expected = len(messages)
        t0 = t1 = None
        at_t0 = 0
        last_change, last = time.monotonic(), -1
        try:
            while True:
                now_rows, now = rows(dsn), time.perf_counter()
                if now_rows and t0 is None:
                    t0, at_t0 = now, now_rows
                if now_rows >= expected:
                    t1 = now
                    break
                if now_rows != last:
                    last, last_change = now_rows, time.monotonic()
                elif time.monotonic() - last_change > STALL_S:
                    raise RuntimeError(f"replicas stalled at {now_rows}/{expected} rows")
                time.sleep(POLL_S)
        finally:
            stop(procs)
        final = rows(dsn)
        errors = [p.stderr.read() if p.stderr else "" for p in procs]
    assert t0 is not None and t1 is not None
    return {"msg_per_s": (expected - at_t0) / (t1 - t0), "seconds": t1 - t0,
            "rows": final, "expected_rows": expected, "publish_s": publish_s,
            "exact": final == expected, "stderr": [e[-2000:] for e in errors if e.strip()]}


def measure_floor(messages: list[Message], tmp: Path, receive_maximum: int) -> dict[str, Any]:
    with broker(tmp / "mosquitto-floor") as mosq:
        shared = "$share/floor/fleet/+/audit/#"
        names = [f"floor-{name}" for name in REPLICAS]
        for name in names:
            ingest.create_session(mosq.port, name, [shared], SESSION_EXPIRY_S)
        publish_s = ingest.publish(mosq.port, [], messages)
        procs = [subprocess.Popen(
            [sys.executable, str(BENCH / "fleet_floor.py"), "--port", str(mosq.port),
             "--client-id", name, "--filter", shared,
             "--receive-maximum", str(receive_maximum)],
            stdout=subprocess.PIPE, text=True) for name in names]
        series: list[list[dict[str, Any]]] = [[] for _ in procs]

        def read(i: int) -> None:
            stdout = procs[i].stdout
            assert stdout is not None
            for line in stdout:
                series[i].append(json.loads(line))

        readers = [threading.Thread(target=read, args=(i,), daemon=True)
                   for i in range(len(procs))]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + STALL_S
        try:
            while sum(s[-1]["received"] if s else 0 for s in series) < len(messages):
                if time.monotonic() > deadline:
                    raise RuntimeError("floor consumers stalled")
                time.sleep(0.05)
            time.sleep(0.1)
        finally:
            stop(procs)
    firsts = [next(p["first"] for p in s if p["first"]) for s in series]
    lasts = [next(p["t"] for p in s if p["received"] == s[-1]["received"]) for s in series]
    seconds = max(lasts) - min(firsts)
    return {"msg_per_s": len(messages) / seconds, "seconds": seconds, "publish_s": publish_s,
            "received": [s[-1]["received"] for s in series]}


def decompose(messages: list[Message], batch_max: int) -> dict[str, Any]:
    """Where a replica's CPU goes, in-process (no MQTT): the parser and the store's write,
    CPU microseconds per message of this process (PostgreSQL's own work not included)."""
    from auditd.fleet.adapters.store import FleetStore
    from auditd.fleet.upstream import parse

    started = time.process_time()
    records = [parse(topic, payload, time.time()) for topic, payload in messages]
    parse_us = (time.process_time() - started) / len(messages) * 1e6
    with database() as dsn:
        store = FleetStore.open(dsn)
        try:
            started, wall = time.process_time(), time.perf_counter()
            for first in range(0, len(records), batch_max):
                store.write([r for r in records[first:first + batch_max] if r is not None])
            write_us = (time.process_time() - started) / len(messages) * 1e6
            write_wall_us = (time.perf_counter() - wall) / len(messages) * 1e6
        finally:
            store.close()
    import psycopg as pg

    return {"parse_cpu_us": parse_us, "write_cpu_us": write_us,
            "write_wall_us": write_wall_us, "psycopg_impl": pg.pq.__impl__}


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=250)
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--sensors", type=int, default=4, choices=range(1, len(SENSORS) + 1))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-max", type=int, default=500)
    parser.add_argument("--receive-maximum", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=BENCH / "results-fleet-live.json")
    args = parser.parse_args()

    messages = workload(args.gateways, args.devices, args.sensors)
    load_before = os.getloadavg()
    started = time.time()
    pairs = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        for repeat in range(args.repeat):
            order = ("floor", "replicas") if repeat % 2 == 0 else ("replicas", "floor")
            pair: dict[str, Any] = {}
            for which in order:
                if which == "floor":
                    pair["floor"] = measure_floor(messages, tmp, args.receive_maximum)
                else:
                    pair["replicas"] = measure_replicas(messages, tmp, args.batch_max,
                                                        args.receive_maximum)
            pair["ratio"] = pair["replicas"]["msg_per_s"] / pair["floor"]["msg_per_s"]
            pair["load_avg"] = os.getloadavg()
            pairs.append(pair)
            print(f"repeat {repeat + 1}: floor {pair['floor']['msg_per_s']:,.0f} msg/s, "
                  f"replicas {pair['replicas']['msg_per_s']:,.0f} msg/s "
                  f"(rows exact: {pair['replicas']['exact']}), ratio {pair['ratio']:.2f}, "
                  f"load {pair['load_avg'][0]:.2f}", flush=True)
    inside = decompose(messages, args.batch_max)
    print(f"in-process: parse {inside['parse_cpu_us']:.0f} us/msg, write "
          f"{inside['write_cpu_us']:.0f} us/msg CPU ({inside['write_wall_us']:.0f} wall; "
          f"psycopg {inside['psycopg_impl']})", flush=True)
    summary = {
        "messages": len(messages),
        "in_process": inside,
        "floor_msg_per_s": statistics.median(p["floor"]["msg_per_s"] for p in pairs),
        "replicas_msg_per_s": statistics.median(p["replicas"]["msg_per_s"] for p in pairs),
        "ratio_median": statistics.median(p["ratio"] for p in pairs),
        "ratio_range": [min(p["ratio"] for p in pairs), max(p["ratio"] for p in pairs)],
        "all_rows_exact": all(p["replicas"]["exact"] for p in pairs),
        "goal_msg_per_s": 5000,
    }
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "took_s": round(time.time() - started, 1),
        "settings": vars(args) | {"out": str(args.out)},
        "machine": ingest.machine() | {"postgresql": fleet.server_version(),
                                       "load_avg_before": load_before,
                                       "load_avg_after": os.getloadavg()},
        "summary": summary, "pairs": pairs,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{len(messages):,} upstream messages ({args.gateways} gateways x {args.devices} "
          f"devices x {args.sensors} sensors), {len(pairs)} pairs, {result['took_s']} s")
    print("| floor msg/s | replicas msg/s | replicas/floor (min-max) | goal | rows exact |")
    print("|---|---|---|---|---|")
    print(f"| {summary['floor_msg_per_s']:,.0f} | {summary['replicas_msg_per_s']:,.0f} | "
          f"{summary['ratio_median']:.2f} ({summary['ratio_range'][0]:.2f}-"
          f"{summary['ratio_range'][1]:.2f}) | >= 5,000 msg/s | {summary['all_rows_exact']} |")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
          f"({os.cpu_count()} cores, shared)")


if __name__ == "__main__":
    main()
