"""``sensor-auditd replay`` throughput on one core, against a parse-and-insert floor.

A benchmark, not a test: it prints a table and writes ``bench/results-replay.json``.

The recording: ``sensor-auditd simulate``'s generator, one site, the reference station and
39 th-200 devices (40 instruments) at one message a minute for four days, three readings a
message (about 230,000 messages, 690,000 readings), a few faults and hostile messages,
audited hourly over each sensor's 24 h window (96 audits of 117 streams), exactly as
``sensor-auditd replay`` runs it (``Replayer``, a fresh store with ``synchronous=normal``).

* **Floor**: a few lines a reader would write: read the file, ``json.loads`` every line,
  and bulk-insert every reading (stream, ts, value) into an SQLite table with an index on
  (stream, ts), WAL mode, ``synchronous=NORMAL``, one ``executemany`` a 1,000 lines.
* **Where the time goes**: the replay is timed as a whole, and its audits separately
  (``Auditor.run``); the rest is reading, validation and the store. ``--profile`` adds a
  cProfile of one more run, top functions by own time.

Single core: the process pins itself to one CPU and sets the BLAS/OpenMP thread counts to
1 before numpy is imported.

    python bench/replay.py                   # 4 days x 40 devices: a few minutes
    python bench/replay.py --hours 24        # a quick look
    python bench/replay.py --profile
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from auditd.adapters.config.catalog import (  # noqa: E402
    build_catalog,
    load_profiles,
    load_references,
)
from auditd.adapters.config.daemon import default_config  # noqa: E402
from auditd.adapters.store import Store  # noqa: E402
from auditd.app.daemon import limits_from  # noqa: E402
from auditd.app.replay import Replayer  # noqa: E402
from auditd.sim import scenario as sim_scenario  # noqa: E402
from auditd.sim import simulate  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results-replay.json"


def scenario(hours: float, devices: int) -> sim_scenario.Scenario:
    at = hours * 3600 * 0.6
    return sim_scenario.scenario_from({
        "seed": 2026, "start": "2026-11-20T00:00:00Z", "duration": hours * 3600,
        "hostile": 40,
        "site": [{"name": "north", "reference": "ref-north", "devices": {"th-200": devices}}],
        "fault": [
            {"cause": "offset_drift", "device": "th-north-01", "sensor": "temperature",
             "at": at},
            {"cause": "stuck", "device": "th-north-02", "sensor": "humidity", "at": at},
            {"cause": "noise", "device": "th-north-03", "sensor": "pressure", "at": at},
            {"cause": "time_lag", "device": "th-north-04", "sensor": "temperature", "at": at},
        ]}, "bench")


def catalog() -> Any:
    return build_catalog(load_profiles(REPO / "device_profiles"),
                         load_references(REPO / "references"), {})


def make_recording(path: Path, hours: float, devices: int) -> None:
    sim = simulate.generate(scenario(hours, devices), catalog())
    simulate.write_recording(sim, path, None)


def floor(path: Path, db: Path) -> tuple[float, int, int]:
    """Parse every line with json, insert every reading; returns (seconds, lines, rows)."""
    global FLOOR_CPU_S
    c0 = time.process_time()
    t0 = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE readings (stream TEXT, ts REAL, value REAL)")
    conn.execute("CREATE INDEX readings_stream_ts ON readings (stream, ts)")
    lines = rows = 0
    batch: list[tuple[str, float, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            lines += 1
            try:
                record = json.loads(line)
                payload = record["payload"]
                for sensor, value in payload["readings"].items():
                    if isinstance(value, dict):
                        value = value.get("value")
                    batch.append((f"{record['topic']}/{sensor}", payload["ts"], value))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if lines % 1000 == 0:
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO readings VALUES (?, ?, ?)", batch)
                conn.execute("COMMIT")
                rows += len(batch)
                batch.clear()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO readings VALUES (?, ?, ?)", batch)
    conn.execute("COMMIT")
    rows += len(batch)
    conn.close()
    FLOOR_CPU_S = time.process_time() - c0
    return time.perf_counter() - t0, lines, rows


FLOOR_CPU_S = 0.0
CPU: dict[str, float] = {}
"""CPU time of the floor, the replay and its audits (``time.process_time``): this shared VM's
wall clock also counts the time the process waited for its core."""


def replay(path: Path, db: Path) -> tuple[float, float, dict[str, Any]]:
    """The replay as the CLI runs it; returns (seconds, seconds in audits, summary)."""
    cfg = default_config()
    cat = catalog()
    c0 = time.process_time()
    t0 = time.perf_counter()
    with Store(db, synchronous="normal") as store, open(os.devnull, "w") as out:
        replayer = Replayer(cfg, cat, store, limits_from(cfg), out)
        audit_s = audit_cpu_s = 0.0
        run = replayer.auditor.run

        def timed(now: float) -> Any:
            nonlocal audit_s, audit_cpu_s
            a, c = time.perf_counter(), time.process_time()
            try:
                return run(now)
            finally:
                audit_s += time.perf_counter() - a
                audit_cpu_s += time.process_time() - c

        replayer.auditor.run = timed  # type: ignore[method-assign]
        summary = replayer.run(path)
        held = getattr(store.readings, "windows", None)  # absent before the held windows
        summary["held_window_reads"] = {"hits": held.hits, "misses": held.misses} \
            if held is not None else None
    CPU.update(replay=time.process_time() - c0, audits=audit_cpu_s)
    return time.perf_counter() - t0, audit_s, summary


def profile(path: Path, db: Path, top: int) -> list[dict[str, Any]]:
    prof = cProfile.Profile()
    prof.enable()
    replay(path, db)
    prof.disable()
    st = pstats.Stats(prof, stream=io.StringIO())
    total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
    return [{"function": f"{Path(f).name}:{line}({name})", "calls": v[1],
             "tottime_s": round(v[2], 3), "share": round(v[2] / total, 3),
             "cumtime_s": round(v[3], 3)} for (f, line, name), v in rows]


def machine() -> dict[str, Any]:
    models = [ln.split(":", 1)[1] for ln in Path("/proc/cpuinfo").read_text().splitlines()
              if ln.startswith("model name")] if Path("/proc/cpuinfo").exists() else []
    return {"cpu_model": models[0].strip() if models else platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hours", type=float, default=96.0)
    parser.add_argument("--devices", type=int, default=39, help="th-200 devices besides "
                        "the reference station")
    parser.add_argument("--recording", type=Path, help="reuse (or write) the recording here")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    with tempfile.TemporaryDirectory(prefix="sensor-auditd-bench-") as tmp:
        path = args.recording or Path(tmp) / "recording.jsonl"
        if not path.exists():
            t0 = time.perf_counter()
            make_recording(path, args.hours, args.devices)
            print(f"generated {path} in {time.perf_counter() - t0:.1f} s", flush=True)
        floor_s, lines, rows = floor(path, Path(tmp) / "floor.db")
        print(f"floor: {lines:,} lines, {rows:,} readings in {floor_s:.2f} s", flush=True)
        replay_s, audit_s, summary = replay(path, Path(tmp) / "replay.db")
        cpu_s = dict(CPU)  # before --profile's run replaces them
        print(f"replay: {replay_s:.2f} s, of which audits {audit_s:.2f} s", flush=True)
        hot = profile(path, Path(tmp) / "profile.db", 15) if args.profile else []
    messages = summary["messages"]
    result = {
        "recording": {"hours": args.hours, "devices": args.devices + 1, "messages": messages,
                      "readings": rows, "bytes": None},
        "floor_s": floor_s, "floor_msg_per_s": messages / floor_s,
        "replay_s": replay_s, "replay_msg_per_s": messages / replay_s,
        "ratio_to_floor": replay_s / floor_s,
        "audit_s": audit_s, "ingest_s": replay_s - audit_s,
        "ingest_ratio_to_floor": (replay_s - audit_s) / floor_s,
        "audits": summary["audits"], "findings": summary["findings"],
        "ms_per_stream_audit": 1e3 * audit_s / max(summary["findings"], 1),
        "cpu_floor_s": FLOOR_CPU_S, "cpu_replay_s": cpu_s["replay"],
        "cpu_audit_s": cpu_s["audits"], "cpu_ratio_to_floor": cpu_s["replay"] / FLOOR_CPU_S,
        "cpu_ms_per_stream_audit": 1e3 * cpu_s["audits"] / max(summary["findings"], 1),
        "summary": summary, "profile": hot, "machine": machine(), "pinned_cpu": cpu,
    }
    for key in ("floor_s", "floor_msg_per_s", "replay_s", "replay_msg_per_s",
                "ratio_to_floor", "audit_s", "ingest_s", "ingest_ratio_to_floor", "audits",
                "findings", "ms_per_stream_audit", "cpu_floor_s", "cpu_replay_s",
                "cpu_audit_s", "cpu_ratio_to_floor", "cpu_ms_per_stream_audit"):
        value = result[key]
        print(f"{key:>24} {value:,.2f}" if isinstance(value, float) else f"{key:>24} {value:,}")
    for row in hot:
        print(f"  {row['share']:6.1%}  {row['tottime_s']:8.3f} s  {row['calls']:8d}  "
              f"{row['function']}")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
