"""Calibration-core throughput on one core: ``evaluate_stream`` against a numpy floor.

A benchmark, not a test: it prints a table and writes ``bench/results-core.json``.

200 streams (by default), each one day at 1 Hz of a device and its reference (86,400
readings each, jittered, a few losses), a mix of healthy and faulty devices (offset, gain,
noise, stuck, lag). Every stream goes through the whole core, as the daemon calls it:
``evaluate_stream`` (align, lag, metrics with intervals and Deming/Huber fits, checks, and
for the failing ones diagnosis, onset and action).

* **Floor**: one plain numpy pass, ``mean`` and ``var``, over the same four input arrays
  (both streams' timestamps and values). No audit can read its input in less.
* **Timing**: each stream's core and floor back to back, as CPU time of this process
  (``time.process_time``); the ratio divides the sums. Wall-clock figures are kept beside
  them: on the shared machine they also count time spent waiting for the core.
* **Memory**: tracemalloc peak while evaluating one stream, against that stream's input
  arrays (4 x 86,400 float64 = 2.76 MB); measured in a separate pass, because tracemalloc
  slows the allocation-heavy code it watches.
* **Profile**: cProfile over a subset, top functions by own time.

Single core: the process pins itself to one CPU (``os.sched_setaffinity``) and sets the
BLAS/OpenMP thread counts to 1 *before numpy is imported*: on a shared 2-CPU machine
OpenBLAS's threads made a 30,000-element dot product 50x slower than single-threaded.

    python bench/core.py                      # 200 streams: about a minute
    python bench/core.py --streams 20         # a quick look
    python bench/core.py --minute             # one day of minute data (1,440 points a stream)

``--minute`` builds the same kinds of streams at one reading a minute (the th-200's
temperature: interval 60 s, lag tolerance 300 s, at least 60 readings), as ``sensor-auditd
replay`` audits them: at 1,440 points a verdict's cost is its fixed overheads (small numpy
calls, FFT set-up, dataclasses), not passes over the data. The lag fault is ten intervals
there (beyond the 300 s tolerance). Healthy and faulty streams are reported apart: a
healthy stream's verdict is what every audit of a working fleet pays.

``--hourly-reference`` gives each stream a reference that reports hourly means (the
agency monitors of the EPA month): the comparison is on the reference's hours, and the
gain's evidence reads the device's own readings inside them (``fit.fine_gain_samples``).

``--baseline`` judges each stream as the daemon does once a stream has passed a window:
against a known-good baseline (another healthy day's residuals: the drift figures) and
with the reference's standard uncertainty (references/north.toml's 0.1 degC, an expanded
uncertainty at k = 2, so 0.05 degC: the Deming gain), the reference's interval declared.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from scipy.signal import lfilter  # noqa: E402

from auditd.core import Series, baseline_residuals, evaluate_stream  # noqa: E402
from auditd.core.averaging import interval_means  # noqa: E402
from auditd.model import SensorSpec, Tolerance  # noqa: E402

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results-core.json"
MINUTE_RESULTS = BENCH / "results-core-minute.json"
START = 1_764_028_800.0
DAY = 86_400.0
HOUR = 3_600.0
HZ = 1.0
TOL = Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.90, lag_s=30.0, window_s=DAY,
                min_samples=600)
SPEC = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), 1.0 / HZ, TOL)
MINUTE_TOL = Tolerance(bias=0.5, gain=0.05, rmse=0.8, r2_min=0.90, lag_s=300.0,
                       window_s=DAY, min_samples=60)
MINUTE_SPEC = SensorSpec("temperature", "[temperature]", "degC", (-40.0, 85.0), 60.0,
                         MINUTE_TOL)
"""``--minute``: device_profiles/th-200.toml's temperature."""
FAULTS = ("healthy", "healthy", "healthy", "offset", "gain", "noise", "stuck", "lag")
"""Round-robin: three healthy devices in eight, one of each fault."""


@dataclass(frozen=True)
class Stream:
    kind: str
    device: Series
    reference: Series
    baseline: np.ndarray | None = None
    """With ``--baseline``: a healthy day's residuals (``core.baseline_residuals``)."""

    @property
    def input_bytes(self) -> int:
        return sum(a.nbytes for a in (self.device.ts, self.device.values,
                                      self.reference.ts, self.reference.values))


def make_stream(i: int, interval_s: float = 1.0, hourly_reference: bool = False) -> Stream:
    """One day of stream ``i`` at one reading every ``interval_s``; its fault is
    ``FAULTS[i % len(FAULTS)]``. The walk's steps grow with the square root of the
    interval (the same process sampled less often), the clocks' offsets and jitter with
    the interval; the 1 Hz streams are those of earlier rounds, value for value."""
    rng = np.random.default_rng(i)
    kind = FAULTS[i % len(FAULTS)]
    n = int(DAY / interval_s)
    grid = START + np.arange(n) * interval_s
    truth = (15.0 + 6.0 * np.sin(2 * math.pi * (grid - START) / DAY + rng.uniform(0, 6.3))
             + np.cumsum(rng.normal(0.0, 0.005 * math.sqrt(interval_s), n)))
    phi = rng.uniform(0.5, 0.99)
    noise = lfilter([1.0], [1.0, -phi], rng.normal(0.0, 0.1 * math.sqrt(1 - phi * phi), n))
    value = truth + noise
    if kind == "offset":
        value = value + 1.5
    elif kind == "gain":
        value = 15.0 + 1.2 * (value - 15.0)
    elif kind == "noise":
        value = value + rng.normal(0.0, 1.5, n)
    elif kind == "stuck":
        value[n // 3:] = value[n // 3]
    elif kind == "lag":
        value = np.interp(grid - max(120.0, 10 * interval_s), grid, value)
    keep = rng.random(n) >= 0.01
    dev_t = grid + (rng.uniform(0.0, 0.5) + rng.normal(0.0, 0.05, n)) * interval_s
    ref_t = grid + (rng.uniform(0.0, 0.5) + rng.normal(0.0, 0.05, n)) * interval_s
    reference = Series(ref_t, truth + rng.normal(0.0, 0.02, n))
    if hourly_reference:
        means = interval_means(grid, truth, HOUR, interval_s)
        reference = Series(means.start + HOUR / 2, means.mean + rng.normal(0.0, 0.02, len(means)))
    return Stream(kind, Series(dev_t[keep], value[keep]), reference)


def with_baseline(s: Stream, i: int, spec: SensorSpec) -> Stream:
    """``s`` with the residuals of a healthy day of its own kind of stream (another seed)."""
    day = make_stream(8 * (i + 1000), spec.interval_s)  # FAULTS[0]: healthy
    res = baseline_residuals(day.device, day.reference, spec.interval_s, START, START + DAY)
    return Stream(s.kind, s.device, s.reference, res)


def judge(s: Stream, spec: SensorSpec) -> Any:
    """``evaluate_stream`` as the daemon calls it for this stream."""
    if s.baseline is None:
        hourly = s.reference.ts.size <= DAY / HOUR
        return evaluate_stream(s.device, s.reference, spec, START, START + DAY,
                               reference_interval_s=HOUR if hourly else None)
    return evaluate_stream(s.device, s.reference, spec, START, START + DAY,
                           baseline_residuals=s.baseline, reference_uncertainty=0.05,
                           reference_interval_s=spec.interval_s)


def floor_pass(s: Stream) -> float:
    """One mean and one variance over each input array: the least reading of the input."""
    total = 0.0
    for a in (s.device.ts, s.device.values, s.reference.ts, s.reference.values):
        total += float(np.mean(a)) + float(np.var(a))
    return total


def timed(streams: list[Stream], spec: SensorSpec
          ) -> tuple[dict[str, float], Counter[str]]:
    """Seconds of the core and of the floor, each as CPU time of this process and as wall
    time, and the verdicts by kind/status.

    CPU time is what the ratio uses: on a shared machine the wall clock also counts the
    time this process waited for the core while others ran, which lands on whichever side
    happened to be running and swings the ratio by tens of percent between runs."""
    out = dict.fromkeys(("core_cpu", "floor_cpu", "core_wall", "floor_wall",
                         "healthy_cpu", "healthy_n", "faulty_cpu", "faulty_n"), 0.0)
    verdicts: Counter[str] = Counter()
    for s in streams:
        c0, w0 = time.process_time(), time.perf_counter()
        v = judge(s, spec)
        c1, w1 = time.process_time(), time.perf_counter()
        floor_pass(s)
        c2, w2 = time.process_time(), time.perf_counter()
        out["core_cpu"] += c1 - c0
        out["floor_cpu"] += c2 - c1
        out["core_wall"] += w1 - w0
        out["floor_wall"] += w2 - w1
        side = "healthy" if s.kind == "healthy" else "faulty"
        out[f"{side}_cpu"] += c1 - c0
        out[f"{side}_n"] += 1
        top = v.causes[0].cause if v.causes else "-"
        verdicts[f"{s.kind}:{v.status}:{top}"] += 1
    return out, verdicts


def peak_memory(streams: list[Stream], spec: SensorSpec) -> float:
    """Largest tracemalloc peak of one ``evaluate_stream`` call / that stream's input."""
    worst = 0.0
    for s in streams:
        tracemalloc.start()
        judge(s, spec)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        worst = max(worst, peak / s.input_bytes)
    return worst


def profile(streams: list[Stream], spec: SensorSpec, top: int) -> list[dict[str, Any]]:
    """The functions with the most own time over ``streams``."""
    prof = cProfile.Profile()
    prof.enable()
    for s in streams:
        judge(s, spec)
    prof.disable()
    st = pstats.Stats(prof, stream=io.StringIO())
    total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
    return [{"function": f"{Path(f).name}:{line}({name})", "calls": v[1],
             "tottime_s": round(v[2], 4), "share": round(v[2] / total, 3),
             "cumtime_s": round(v[3], 4)} for (f, line, name), v in rows]


def machine() -> dict[str, Any]:
    models = [ln.split(":", 1)[1] for ln in Path("/proc/cpuinfo").read_text().splitlines()
              if ln.startswith("model name")] if Path("/proc/cpuinfo").exists() else []
    return {"cpu_model": models[0].strip() if models else platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "kernel": platform.release()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--memory-streams", type=int, default=16)
    parser.add_argument("--profile-streams", type=int, default=16)
    parser.add_argument("--minute", action="store_true",
                        help="one day of minute data (1,440 readings a stream), the "
                        "th-200's temperature tolerance")
    parser.add_argument("--hourly-reference", action="store_true",
                        help="a reference reporting hourly means (the comparison on its hours)")
    parser.add_argument("--baseline", action="store_true",
                        help="judge against a healthy day's residuals, with the reference's "
                        "uncertainty, as the daemon does after a stream's first pass")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time the streams this many times over (small streams)")
    parser.add_argument("--out", type=Path,
                        help=f"default {RESULTS.name}, {MINUTE_RESULTS.name} with --minute "
                        "(-baseline before .json with --baseline)")
    args = parser.parse_args()
    if args.out is None:
        args.out = MINUTE_RESULTS if args.minute else RESULTS
        if args.baseline:
            args.out = args.out.with_name(args.out.stem + "-baseline.json")
        if args.hourly_reference:
            args.out = args.out.with_name(args.out.stem + "-hourly.json")
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    spec = MINUTE_SPEC if args.minute else SPEC

    t0 = time.perf_counter()
    streams = [make_stream(i, spec.interval_s, args.hourly_reference)
               for i in range(args.streams)]
    if args.baseline:
        streams = [with_baseline(s, i, spec) for i, s in enumerate(streams)]
    generate_s = time.perf_counter() - t0
    judge(streams[0], spec)  # warm
    print(f"generated {len(streams)} streams in {generate_s:.1f} s", flush=True)
    times, verdicts = timed(streams * args.repeat, spec)
    print(f"timed in {times['core_wall'] + times['floor_wall']:.1f} s", flush=True)
    samples = args.repeat * sum(len(s.device) + len(s.reference) for s in streams)
    input_bytes = sum(s.input_bytes for s in streams)
    memory = peak_memory(streams[:args.memory_streams], spec)
    print("memory measured", flush=True)
    hot = profile(streams[:args.profile_streams], spec, 12)

    core_s, floor_s = times["core_cpu"], times["floor_cpu"]
    summary = {
        "streams": args.streams, "samples": samples, "input_mb": input_bytes / 1e6,
        "core_s": core_s, "core_samples_per_s": samples / core_s,
        "floor_s": floor_s, "floor_samples_per_s": samples / floor_s,
        "ratio_to_floor": core_s / floor_s,
        "ms_per_stream": 1e3 * core_s / (args.streams * args.repeat),
        "ms_per_healthy_stream": 1e3 * times["healthy_cpu"] / max(times["healthy_n"], 1),
        "ms_per_faulty_stream": 1e3 * times["faulty_cpu"] / max(times["faulty_n"], 1),
        "core_wall_s": times["core_wall"], "floor_wall_s": times["floor_wall"],
        "wall_ratio_to_floor": times["core_wall"] / times["floor_wall"],
        "peak_memory_over_input": memory,
    }
    print(f"{'streams':>24} {args.streams} x {args.repeat}, interval {spec.interval_s:g} s"
          f"   (pinned to CPU {cpu})")
    for key in ("samples", "core_s", "core_samples_per_s", "floor_s", "floor_samples_per_s",
                "ratio_to_floor", "ms_per_stream", "ms_per_healthy_stream",
                "ms_per_faulty_stream", "wall_ratio_to_floor",
                "peak_memory_over_input"):
        value = summary[key]
        print(f"{key:>24} {value:,.3f}" if isinstance(value, float) else f"{key:>24} {value:,}")
    print("\nverdicts (kind:status:top cause)")
    for k, c in sorted(verdicts.items()):
        print(f"  {c:4d}  {k}")
    print("\nown time, top functions")
    for row in hot:
        print(f"  {row['share']:6.1%}  {row['tottime_s']:8.3f} s  {row['calls']:6d}  "
              f"{row['function']}")
    args.out.write_text(json.dumps({"summary": summary, "verdicts": dict(verdicts),
                                    "profile": hot,
                                    "spec": {"interval_s": spec.interval_s,
                                             "lag_s": spec.tolerance.lag_s,
                                             "min_samples": spec.tolerance.min_samples},
                                    "repeat": args.repeat, "baseline": args.baseline,
                                    "hourly_reference": args.hourly_reference,
                                    "machine": machine()}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
