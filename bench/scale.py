"""Hourly audits of 10,000 streams on one core: the share of that core they take.

A benchmark, not a test: it prints a table and writes ``bench/results-scale.json``.

Issue 17 asks that a gateway with 10,000 streams, audited hourly, spend under 10 % of one
core on its audits. This builds such a gateway's store and times the audits it would run:

* **The fleet**: ``--sites`` sites (86 by default), each a ``ref-station`` reference and
  39 ``th-200`` units measuring temperature, humidity and pressure once a minute: 117
  device streams a site, 10,062 in all, each judged over its 24 h window against its
  site's reference, with its baseline (the last passing window before it, a day earlier).
  Healthy units: a static offset inside tolerance, their own noise (AR(1)), the weather
  shared with their reference. This is the cost the goal is about; a failing stream also
  costs its diagnosis, and a few in 10,000 do not change the hour's total.
* **The store**: the two days before the first measured audit go straight into the
  store's ``readings`` table through its own triggers (the stream counters the held
  windows rely on are kept); every later hour arrives through the daemon's own write
  (``Readings.write_outcomes``, 300 readings a transaction). No device sends meta.
* **The audits**: ``Auditor.run`` built and called as the daemon's hourly job does
  (findings, alert tracks and outbox stored, the default config's alert settings). One
  at the end of day 1 (each stream's first window: it makes the baselines), one at the
  end of day 2 (the day-2 windows read from SQLite; the baselines are day 1's, held where
  the cache has room), then ``--hours`` hourly audits, each after that hour's readings
  were written. The hourly ones are the figure: CPU seconds (``time.process_time``) over
  3,600 s is the share of one core. A new gateway's: each stream holds a handful of
  findings (their baseline query is one index descent however many it holds,
  ``tests/test_store.py``).
* **Single core**: the process pins itself to one CPU, BLAS threads 1.

    python bench/scale.py                       # 10,062 streams: ~15 min, 1 GB of disk
    python bench/scale.py --sites 9             # a quick look (1,053 streams)
    python bench/scale.py --window-cache 1GiB   # every stream's windows held in memory
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from auditd import logs  # noqa: E402
from auditd.adapters.config.catalog import build_catalog, load_profiles  # noqa: E402
from auditd.adapters.config.daemon import default_config  # noqa: E402
from auditd.adapters.store import Store  # noqa: E402
from auditd.adapters.store.database import Bounds  # noqa: E402
from auditd.app.auditor import AlertSettings, Auditor, metadata_policy  # noqa: E402
from auditd.model import Outcome, Reading, Reference  # noqa: E402
from auditd.text import parse_size  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results-scale.json"

START = 1_795_000_000.0 - 1_795_000_000.0 % 86_400  # a UTC midnight in 2026
MINUTE = 60.0
DAY = 86_400.0
DEVICES_PER_SITE = 39
SENSORS = {  # canonical unit, level, diurnal swing, device noise sd, healthy offset bound
    "temperature": ("degC", 12.0, 5.0, 0.15, 0.3),
    "humidity": ("percent", 60.0, 15.0, 1.0, 2.0),
    "pressure": ("hPa", 1010.0, 3.0, 0.2, 0.6),
}


def site_name(i: int) -> str:
    return f"s{i:03d}"


def catalog(sites: int) -> Any:
    """The ``th-200`` and ``ref-station`` profiles of the repository, one reference a site."""
    refs = [Reference(id=f"ref-{site_name(i)}", site=site_name(i),
                      serves=(f"th-{site_name(i)}-*",), sensors=tuple(SENSORS),
                      model="ref-station", calibration_due=START + 365 * DAY,
                      uncertainty={"temperature": 0.1, "humidity": 1.5, "pressure": 0.2})
            for i in range(sites)]
    return build_catalog(load_profiles(REPO / "device_profiles"), refs, {"th-*": "th-200"})


class Fleet:
    """Every stream's readings at any minute, reproducibly: the weather of each site (a
    diurnal cycle plus a slow random walk), the reference on it with its own small noise,
    each unit on it with its offset and AR(1) noise."""

    def __init__(self, sites: int, seed: int = 17) -> None:
        rng = np.random.default_rng(seed)
        self.sites = sites
        self.phase = rng.uniform(0, 2 * np.pi, sites)
        self.offsets = {s: rng.uniform(-1, 1, (sites, DEVICES_PER_SITE)) * SENSORS[s][4]
                        for s in SENSORS}
        self.seed = seed

    def block(self, i: int, sensor: str, t0: float, minutes: int) -> np.ndarray:
        """(1 + devices) x minutes values of site ``i``'s ``sensor`` from ``t0``: row 0 is
        the reference."""
        _, level, swing, noise, _ = SENSORS[sensor]
        rng = np.random.default_rng([self.seed, i, list(SENSORS).index(sensor), int(t0)])
        t = t0 + np.arange(minutes) * MINUTE
        weather = level + swing * np.sin(2 * np.pi * t / DAY + self.phase[i]) \
            + np.cumsum(rng.normal(0, swing / 400, minutes))
        out = np.empty((1 + DEVICES_PER_SITE, minutes))
        out[0] = weather + rng.normal(0, noise / 4, minutes)
        phi = 0.8
        eps = rng.normal(0, noise * np.sqrt(1 - phi * phi), (DEVICES_PER_SITE, minutes))
        ar = np.empty_like(eps)
        ar[:, 0] = eps[:, 0] / np.sqrt(1 - phi * phi)
        for k in range(1, minutes):
            ar[:, k] = phi * ar[:, k - 1] + eps[:, k]
        out[1:] = weather + self.offsets[sensor][i][:, None] + ar
        return out


def devices(i: int) -> list[str]:
    return [f"ref-{site_name(i)}"] + [f"th-{site_name(i)}-{k + 1:02d}"
                                      for k in range(DEVICES_PER_SITE)]


def readings(fleet: Fleet, t0: float, minutes: int,
             sites: Sequence[int] | None = None) -> list[Reading]:
    out: list[Reading] = []
    for i in range(fleet.sites) if sites is None else sites:
        names = devices(i)
        for sensor, (unit, *_rest) in SENSORS.items():
            block = fleet.block(i, sensor, t0, minutes)
            for row, device in enumerate(names):
                out.extend(Reading(site_name(i), device, sensor, unit, t0 + k * MINUTE + 2.0,
                                   float(block[row, k])) for k in range(minutes))
    return out


def write_history(db: Path, fleet: Fleet, t0: float, minutes: int) -> int:
    """The store's streams from one reading each through the store, then ``minutes`` of
    rows each straight into ``readings`` (its triggers keep the stream counters)."""
    with Store(db, synchronous="normal") as store:
        store.readings.write_outcomes([Outcome(readings=tuple(readings(fleet, t0, 1)))])
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    ids = {(site, device, sensor): sid for sid, site, device, sensor in
           conn.execute("SELECT id, site, device, sensor FROM streams")}
    rows = 0
    for i in range(fleet.sites):
        conn.execute("BEGIN")
        for sensor in SENSORS:
            block = fleet.block(i, sensor, t0 + MINUTE, minutes - 1)
            ts = (t0 + MINUTE * np.arange(1, minutes) + 2.0) * 1000
            for row, device in enumerate(devices(i)):
                sid = ids[(site_name(i), device, sensor)]
                conn.executemany("INSERT INTO readings (stream_id, ts_ms, value) VALUES (?,?,?)",
                                 zip([sid] * ts.size, ts.astype(np.int64).tolist(),
                                     block[row].tolist(), strict=True))
                rows += ts.size
        conn.execute("COMMIT")
    conn.close()
    return rows + fleet.sites * len(SENSORS) * (1 + DEVICES_PER_SITE)


def write_hour(store: Store, fleet: Fleet, t0: float) -> None:
    """An hour of readings as the daemon writes them: batches of 100 messages' readings,
    a site at a time (so that the bench's own objects do not count in the audit's RSS)."""
    step = 300
    for i in range(fleet.sites):
        batch = readings(fleet, t0, 60, sites=(i,))
        for k in range(0, len(batch), step):
            store.readings.write_outcomes([Outcome(readings=tuple(batch[k:k + step]))])


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def timed_audit(auditor: Auditor, now: float) -> dict[str, Any]:
    """One audit's CPU and wall time, and its memory: the resident set before it and the
    peak during it (``/proc/self/clear_refs`` resets the peak first; Linux)."""
    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    rss_before = _status_kib("VmRSS")
    c0, t0 = time.process_time(), time.perf_counter()
    run = auditor.run(now)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    statuses: dict[str, int] = {}
    for f in run.findings:
        statuses[f.status] = statuses.get(f.status, 0) + 1
    events: dict[str, int] = {}
    for _, event in run.alerts.events if run.alerts is not None else ():
        events[event] = events.get(event, 0) + 1
    return {"at": now, "cpu_s": cpu, "wall_s": wall, "findings": len(run.findings),
            "statuses": statuses, "alert_events": events,
            "tickets": len(run.alerts.tickets) if run.alerts is not None else 0,
            "rss_before_mib": rss_before / 1024,
            "rss_peak_mib": _status_kib("VmHWM") / 1024}


def machine() -> dict[str, Any]:
    models = [ln.split(":", 1)[1] for ln in Path("/proc/cpuinfo").read_text().splitlines()
              if ln.startswith("model name")] if Path("/proc/cpuinfo").exists() else []
    return {"cpu_model": models[0].strip() if models else platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "sqlite": sqlite3.sqlite_version,
            "kernel": platform.release()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", type=int, default=86)
    parser.add_argument("--hours", type=int, default=3, help="steady-state hourly audits")
    parser.add_argument("--window-cache", type=parse_size, default=None,
                        help="[store] window_cache, as the config writes it (default: 64MiB)")
    parser.add_argument("--dir", type=Path, help="keep the store here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logs.configure("warning", "auto", stream=sys.stderr)
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    fleet = Fleet(args.sites)
    cat = catalog(args.sites)
    with tempfile.TemporaryDirectory(prefix="sensor-auditd-scale-") as tmp:
        db = (args.dir or Path(tmp)) / "scale.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        for old in db.parent.glob("scale.db*"):
            old.unlink()
        t0 = time.perf_counter()
        rows = write_history(db, fleet, START, 2 * 1440)
        print(f"history: {rows:,} readings in {time.perf_counter() - t0:.0f} s", flush=True)
        options: dict[str, Any] = {"synchronous": "normal"}
        if args.window_cache is not None:
            options["bounds"] = Bounds(window_cache=args.window_cache)
        with Store(db, **options) as store:
            cfg = default_config()  # the daemon's Auditor, built as the daemon builds it
            auditor = Auditor(store, cat, cfg.topics, gateway=cfg.gateway,
                              window_override_s=cfg.audit.window_s,
                              policy=metadata_policy(cfg.audit),
                              cohort_alpha=cfg.audit.cohort_alpha,
                              alerting=AlertSettings.of(cfg))
            first = timed_audit(auditor, START + DAY)
            print(f"day 1's audit (first windows): {first['cpu_s']:.1f} s CPU", flush=True)
            cold = timed_audit(auditor, START + 2 * DAY)
            print(f"day 2's audit (its windows from SQLite): {cold['cpu_s']:.1f} s CPU", flush=True)
            hourly = []
            for h in range(args.hours):
                write_hour(store, fleet, START + 2 * DAY + h * 3600)
                hourly.append(timed_audit(auditor, START + 2 * DAY + (h + 1) * 3600))
                print(f"hour {h + 1}: {hourly[-1]['cpu_s']:.1f} s CPU, "
                      f"{hourly[-1]['wall_s']:.1f} s wall, RSS "
                      f"{hourly[-1]['rss_before_mib']:.0f} -> peak "
                      f"{hourly[-1]['rss_peak_mib']:.0f} MiB", flush=True)
            held = store.readings.windows
            cache = {"hits": held.hits, "misses": held.misses,
                     "budget_bytes": (args.window_cache if args.window_cache is not None
                                      else Bounds().window_cache)}
        db_bytes = sum(p.stat().st_size for p in db.parent.glob("scale.db*"))
    streams = args.sites * DEVICES_PER_SITE * len(SENSORS)
    cpu_s = statistics.median(h["cpu_s"] for h in hourly)
    result = {
        "streams": streams, "sites": args.sites, "history_readings": rows,
        "store_bytes": db_bytes, "first_audit": first, "cold_audit": cold, "hourly": hourly,
        "hourly_cpu_s_median": cpu_s, "core_share": cpu_s / 3600.0,
        "cpu_ms_per_stream": 1e3 * cpu_s / streams, "window_cache": cache,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "audit_rss_mib": {"before": statistics.median(h["rss_before_mib"] for h in hourly),
                          "peak": statistics.median(h["rss_peak_mib"] for h in hourly)},
        "machine": machine(), "pinned_cpu": cpu,
    }
    print(f"{streams:,} streams: {cpu_s:.1f} s CPU an hourly audit (median of "
          f"{len(hourly)}), {100 * result['core_share']:.2f} % of one core "
          f"({result['cpu_ms_per_stream']:.2f} ms a stream); held windows {cache}; "
          f"an hourly audit's RSS {result['audit_rss_mib']['before']:.0f} -> peak "
          f"{result['audit_rss_mib']['peak']:.0f} MiB")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
