"""Co-location throughput on one core: import + evaluation of the EPA's month-long exports
against a floor measured in the same run.

A benchmark, not a test: it prints a table and writes ``bench/results-colocate.json``.

Input: the three month-long 1-minute instrument exports and the hourly AirNowTech export
of ``../shared/data/epa-sensortoolkit`` (about 129,000 rows, 780,000 values).

* **Floor**: the standard ``csv`` module reads the same four files (preamble skipped),
  converts every non-empty numeric cell with ``float`` and bulk-inserts
  ``(stream, row, value)`` with ``executemany`` into an SQLite table indexed by its
  primary key, in WAL mode, ``synchronous=NORMAL``, one transaction per file. No time
  parsing, no units, no checks: the least any importer must do.
* **import + evaluate** (the gateway path): ``sensor-auditd import`` of the four files into
  a fresh store (``auditd.app.importer.import_file``: mapping recognition, time zones, pint
  units, quarantine, one transaction per file), then ``colocate --from-store``'s work
  (``sources_from_store`` + ``colocate.run``: averaging, metrics, precision, diagnosis of
  every failing unit by the calibration core, corrections).
* **colocate from files**: ``sources_from_files`` + ``colocate.run``, no store.

Each repeat measures the floor and both paths back to back, alternating the order; the
table gives medians and the median of the per-repeat ratios. Single core: the process pins
itself to one CPU and sets the BLAS thread counts to 1 before numpy is imported.

    python bench/colocate.py               # 5 repeats: about two minutes on a quiet machine
    python bench/colocate.py --repeat 1    # a quick look
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

BENCH = Path(__file__).resolve().parent
DATA = BENCH.parent.parent / "shared" / "data" / "epa-sensortoolkit"
RESULTS = BENCH / "results-colocate.json"
REFERENCE = DATA / "airnowtech_example_reference_data.csv"
UNITS = {f"RT0{i}": DATA / f"toco_toucan_RT0{i}_raw.csv" for i in (1, 2, 3)}
SITE = "burdens"


def floor(db: Path) -> int:
    """csv -> float -> executemany into an indexed WAL table; returns values inserted."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE vals (stream INTEGER NOT NULL, row INTEGER NOT NULL, "
                 "value REAL, PRIMARY KEY (stream, row)) WITHOUT ROWID")
    total = 0
    stream = 0
    for path, skip in [(REFERENCE, 1), *((p, 7) for p in UNITS.values())]:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            for _ in range(skip):
                next(reader)
            rows = []
            for i, row in enumerate(reader):
                for j, cell in enumerate(row):
                    if not cell:
                        continue
                    try:
                        value = float(cell)
                    except ValueError:
                        continue
                    rows.append((stream + j, i, value))
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO vals (stream, row, value) VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")
        total += len(rows)
        stream += 100
    conn.close()
    return total


def import_and_evaluate(db: Path) -> dict[str, Any]:
    from auditd.adapters.config.targets import load_targets
    from auditd.adapters.store import Store
    from auditd.app.colocate import Options, run, sources_from_store
    from auditd.app.importer import import_file

    with Store(db, synchronous="normal") as store:
        stored = import_file(store, REFERENCE, "ref", SITE, 0.0).record.readings
        for device, path in UNITS.items():
            stored += import_file(store, path, device, SITE, 0.0).record.readings
        result = run(sources_from_store(store, SITE, "ref"), load_targets(), Options())
    return {"readings": stored, "findings": len(result.findings)}


def colocate_files(_db: Path) -> dict[str, Any]:
    from auditd.adapters.config.targets import load_targets
    from auditd.app.colocate import Options, run, sources_from_files

    result = run(sources_from_files(f"ref={REFERENCE}", [f"{d}={p}" for d, p in UNITS.items()]),
                 load_targets(), Options())
    return {"findings": len(result.findings)}


def timed(fn: Callable[[Path], Any]) -> tuple[float, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-colocate-") as tmp:
        t0 = time.perf_counter()
        out = fn(Path(tmp) / "bench.db")
        return time.perf_counter() - t0, out


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_avg": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=None,
                        help="CPU to pin to (default: the last one)")
    args = parser.parse_args()
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    # Warm-up: imports (pint, scipy) and the page cache are not what is measured.
    timed(colocate_files)
    runs = []
    for i in range(args.repeat):
        order = [("floor", floor), ("import_evaluate", import_and_evaluate),
                 ("colocate_files", colocate_files)]
        if i % 2:
            order.reverse()
        got = {name: timed(fn) for name, fn in order}
        runs.append({name: {"seconds": sec, "out": out} for name, (sec, out) in got.items()})
        print(f"repeat {i + 1}: " + ", ".join(f"{n} {v['seconds']:.2f} s"
                                              for n, v in runs[-1].items()), flush=True)
    med = {n: statistics.median(r[n]["seconds"] for r in runs)
           for n in ("floor", "import_evaluate", "colocate_files")}
    ratios = {n: [r[n]["seconds"] / r["floor"]["seconds"] for r in runs]
              for n in ("import_evaluate", "colocate_files")}
    values = runs[0]["floor"]["out"]
    summary = {
        "floor_s": med["floor"], "floor_values": values,
        "import_evaluate_s": med["import_evaluate"],
        "colocate_files_s": med["colocate_files"],
        "import_evaluate_ratio": statistics.median(ratios["import_evaluate"]),
        "import_evaluate_ratio_range": [min(ratios["import_evaluate"]),
                                        max(ratios["import_evaluate"])],
        "colocate_files_ratio": statistics.median(ratios["colocate_files"]),
        "colocate_files_ratio_range": [min(ratios["colocate_files"]),
                                       max(ratios["colocate_files"])],
        "readings_stored": runs[0]["import_evaluate"]["out"]["readings"],
    }
    print()
    print(f"{'path':<34}{'median s':>10}{'ratio':>8}  range")
    print(f"{'floor (csv + executemany, WAL)':<34}{med['floor']:>10.2f}{1.0:>8.2f}")
    for name, label in (("import_evaluate", "import + evaluate (store)"),
                        ("colocate_files", "colocate from files")):
        lo, hi = summary[f"{name}_ratio_range"]
        print(f"{label:<34}{med[name]:>10.2f}{summary[f'{name}_ratio']:>8.2f}  "
              f"{lo:.2f}-{hi:.2f}")
    RESULTS.write_text(json.dumps({"machine": machine(), "pinned_cpu": cpu,
                                   "repeats": args.repeat, "summary": summary, "runs": runs},
                                  indent=2) + "\n")
    print(f"\nwritten {RESULTS}")


if __name__ == "__main__":
    main()
