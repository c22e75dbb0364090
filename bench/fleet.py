"""Fleet import throughput and report time, against a floor measured in the same run.

A benchmark, not a test: it prints a table and writes ``bench/results-fleet.json``.

Workload: ``--gateways`` gateway stores (default 1,000), each with ``--devices`` th-200-like
devices (40) of ``--sensors`` sensors (4), ``--days`` days (7) of calibration findings at
``--audits-per-day`` audits (1), as the daemon writes them (``findings`` with their published
JSON, ``findings_latest``, ``meta_versions``, ``streams``, a few tickets): 1,000 x 40 x 4 x 7
= 1.12 million findings and 40,000 devices. Five per cent of the devices updated their
firmware during the week (two meta versions), one per cent fail; every stream drifts at its
own rate, so the drift section has something to measure.

* **import**: ``sensor-auditd fleet import``'s work (``auditd.fleet.app.import_stores``: read
  each store, parse every record as a live message is parsed, COPY into staging, upsert into
  the fleet's tables), into a fresh database.
* **floor**: a bare psycopg COPY of the same rows into the same tables of another fresh
  database: the rows the import ended with (read back from its tables, not timed), COPYed
  table by table in one transaction each. No SQLite, no parsing, no keys checked: the least
  any importer must do.
* **report**: ``fleet report``'s work on the imported fleet (read the facts, analyse, render
  JSON and HTML).

The ratio is floor time / import time (1.0 would be "as fast as a bare COPY"). The process
runs on one core (pinned) where the OS allows; the PostgreSQL server is another process and
uses what the machine gives it. Generated stores are kept in ``--workdir`` and reused.

    python bench/fleet.py                          # the full fleet: ~10 min on a quiet machine
    python bench/fleet.py --gateways 100 --repeat 1    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from auditd import logs  # noqa: E402
from auditd.adapters.store.database import Database  # noqa: E402
from auditd.fleet.adapters.gateway_store import GatewayFile  # noqa: E402
from auditd.fleet.adapters.schema import MIGRATIONS  # noqa: E402
from auditd.fleet.adapters.store import FleetStore, migrate  # noqa: E402
from auditd.fleet.app import fleet_report, import_stores  # noqa: E402
from auditd.fleet.views.html import report_html  # noqa: E402
from auditd.fleet.views.report import report_json  # noqa: E402
from auditd.model import Cause, Finding  # noqa: E402

RESULTS = BENCH / "results-fleet.json"
JSONB_OID = 3802
SERVER = os.environ.get("FLEET_BENCH_SERVER", "postgresql://postgres@127.0.0.1:5432")
T0 = 1_764_028_800.0
DAY = 86_400.0
SENSORS = ("temperature", "humidity", "pressure", "co2")
UNITS = {"temperature": "degC", "humidity": "percent", "pressure": "hPa", "co2": "ppm"}
TABLES = ("gateways", "findings", "findings_latest", "devices", "device_versions",
          "tickets")


def _finding(site: str, device: str, sensor: str, end: float, bias: float,
             failed: bool) -> Finding:
    causes = (Cause("offset_drift", 0.91, f"bias {bias:+.3g} {UNITS[sensor]} over 24 h"),
              ) if failed else ()
    return Finding(
        kind="calibration", site=site, device=device, sensor=sensor,
        status="fail" if failed else "pass", severity="major" if failed else "none",
        window_start=end - DAY, window_end=end, unit=UNITS[sensor], reference=f"ref-{site}",
        metrics={"n": 1440, "bias": round(bias, 4), "gain": 1.002, "offset": round(bias, 4),
                 "rmse": round(abs(bias) + 0.2, 4), "r2": 0.991, "lag_s": 0.0},
        causes=causes, onset=end - 40_000 if failed else None,
        context={"comparison": "reference"},
        action="Recalibrate the sensor against the reference." if failed else "")


def generate(workdir: Path, gateways: int, devices: int, sensors: int, days: int,
             audits_per_day: int, seed: int = 1) -> list[Path]:
    """The gateway stores, written as the daemon's store holds them."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    audits = [T0 + (k + 1) * DAY / audits_per_day for k in range(days * audits_per_day)]
    for g in range(gateways):
        site = f"site{g:04d}"
        path = workdir / f"gw-{site}.db"
        paths.append(path)
        if path.exists():
            continue
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        db = Database(tmp, synchronous="off")
        with db.write("bench") as conn:
            for d in range(devices):
                device = f"dev-{site}-{d:02d}"
                updated = rng.random() < 0.05
                failing = rng.random() < 0.01
                meta = {"model": "th-400", "firmware": "2.3.1", "hardware_rev": "AB"[d % 2],
                        "installed_at": f"2025-{1 + d % 12:02d}-01",
                        "calibrated_at": "2025-10-01", "calibration_due": "2026-10-01"}
                conn.execute("INSERT INTO meta_versions (device, site, first_seen, last_seen,"
                             " ts, data, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (device, site, T0 - 30 * DAY, T0, T0 - 30 * DAY,
                              json.dumps(meta), uuid.uuid4().hex))
                if updated:
                    meta = {**meta, "firmware": "2.4.0"}
                    at = T0 + rng.uniform(0, days) * DAY
                    conn.execute("INSERT INTO meta_versions (device, site, first_seen, "
                                 "last_seen, ts, data, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (device, site, at, at, at, json.dumps(meta),
                                  uuid.uuid4().hex))
                for sensor in SENSORS[:sensors]:
                    rate = rng.gauss(0.01, 0.01) / 30.0  # units a day
                    start = rng.gauss(0, 0.1)
                    conn.execute(
                        "INSERT INTO streams (site, device, sensor, unit, first_ts_ms, "
                        "last_ts_ms, n) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (site, device, sensor, UNITS[sensor], int(T0 * 1000),
                         int(audits[-1] * 1000), 1440 * days))
                    last = 0
                    for end in audits:
                        bias = start + rate * (end - T0) / DAY + rng.gauss(0, 0.02)
                        f = _finding(site, device, sensor, end, bias,
                                     failing and end == audits[-1])
                        cur = conn.execute(
                            "INSERT INTO findings (created_at, kind, site, device, sensor, "
                            "status, severity, window_start, window_end, json) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (end, f.kind, site, device, sensor, f.status, f.severity,
                             f.window_start, f.window_end,
                             json.dumps(f.to_json(), separators=(",", ":"))))
                        last = cur.lastrowid or 0
                    conn.execute("INSERT INTO findings_latest (kind, device, sensor, "
                                 "finding_id) VALUES ('calibration', ?, ?, ?)",
                                 (device, sensor, last))
        db.close()
        tmp.rename(path)
    return paths


def _fresh(name: str) -> str:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{SERVER}/{name}"


def _drop(name: str) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure_import(paths: list[Path]) -> tuple[float, str, str]:
    name = f"fleet_bench_import_{uuid.uuid4().hex[:8]}"
    dsn = _fresh(name)
    with FleetStore.open(dsn) as store:
        started = time.perf_counter()
        import_stores(store, [GatewayFile.from_argument(str(p)) for p in paths])
        elapsed = time.perf_counter() - started
    return elapsed, dsn, name


def measure_floor(source_dsn: str) -> tuple[float, int]:
    """COPY the imported rows into the same tables of a fresh database."""
    rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    with psycopg.connect(source_dsn) as src:
        for table in TABLES:
            cur = src.execute(f"SELECT * FROM {table}")
            columns = [c.name for c in cur.description or ()]
            jsonb = [c.type_code == JSONB_OID for c in cur.description or ()]
            rows[table] = (columns, [tuple(Jsonb(v) if is_json else v
                                           for v, is_json in zip(row, jsonb, strict=True))
                                     for row in cur.fetchall()])
    name = f"fleet_bench_floor_{uuid.uuid4().hex[:8]}"
    dsn = _fresh(name)
    try:
        with psycopg.connect(dsn) as conn:
            migrate(conn)
            started = time.perf_counter()
            for table, (columns, data) in rows.items():
                with conn.transaction(), conn.cursor() as cur, cur.copy(
                        f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in data:
                        copy.write_row(row)
            elapsed = time.perf_counter() - started
    finally:
        _drop(name)
    return elapsed, sum(len(data) for _, data in rows.values())


def measure_report(dsn: str) -> tuple[float, dict[str, Any]]:
    with FleetStore.open(dsn) as store:
        started = time.perf_counter()
        report = fleet_report(store, T0 + 8 * DAY, BENCH.parent / "device_profiles")
        document = report_json(report)
        html = report_html(report)
        elapsed = time.perf_counter() - started
    return elapsed, {"cohorts": len(document["cohorts"]), "due": len(document["due"]),
                     "drift": document["drift"], "html_bytes": len(html)}


def _pin() -> str:
    try:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
        return f"pinned to CPU {max(os.sched_getaffinity(0))}"
    except (AttributeError, OSError):
        return "not pinned"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--sensors", type=int, default=4, choices=range(1, 5))
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--audits-per-day", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sensor-auditd-fleet-bench"))
    args = parser.parse_args()
    logs.configure("warning", "auto", stream=sys.stderr)  # not a line per store migrated
    pinned = _pin()
    workdir = args.workdir / (f"g{args.gateways}-d{args.devices}-s{args.sensors}-"
                              f"{args.days}d-{args.audits_per_day}")
    started = time.perf_counter()
    paths = generate(workdir, args.gateways, args.devices, args.sensors, args.days,
                     args.audits_per_day)
    print(f"{len(paths)} gateway stores ready in {time.perf_counter() - started:.0f} s "
          f"({workdir})", flush=True)
    runs = []
    for k in range(args.repeat):
        load_before = os.getloadavg()
        imported_s, dsn, name = measure_import(paths)
        try:
            floor_s, rows = measure_floor(dsn)
            report_s, summary = measure_report(dsn)
        finally:
            _drop(name)
        run = {"import_s": imported_s, "floor_s": floor_s, "ratio": floor_s / imported_s,
               "rows": rows, "report_s": report_s, "report": summary,
               "load_before": load_before, "load_after": os.getloadavg()}
        runs.append(run)
        print(f"run {k + 1}: import {imported_s:.1f} s, floor {floor_s:.1f} s "
              f"(ratio {run['ratio']:.2f}), {rows} rows, report {report_s:.1f} s, "
              f"load {load_before[0]:.1f} -> {run['load_after'][0]:.1f}", flush=True)
    result = {
        "settings": vars(args) | {"workdir": str(args.workdir)},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "pinned": pinned,
                    "postgres": server_version()},
        "runs": runs,
        "median": {key: statistics.median(r[key] for r in runs)
                   for key in ("import_s", "floor_s", "ratio", "report_s")},
        "schema_migrations": len(MIGRATIONS),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    m = result["median"]
    print(f"median of {len(runs)}: import {m['import_s']:.1f} s, floor {m['floor_s']:.1f} s, "
          f"ratio {m['ratio']:.2f} (goal >= 0.5), report {m['report_s']:.1f} s "
          f"(goal < 10 s); written to {RESULTS}")


def server_version() -> str:
    """The PostgreSQL server's version (bench/fleet_live.py records it too)."""
    with psycopg.connect(f"{SERVER}/postgres") as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


if __name__ == "__main__":
    main()
