"""``sensor-auditd matrix``: many varied fleets through the live pipeline, scored as a
distribution.

Each fleet (``auditd.sim.fleets``) is written as its owner would write it (profiles,
references, a daemon configuration in a temporary directory), loaded the way ``run`` and
``replay`` load theirs, and its recording goes through the same ``Replayer`` as
``sensor-auditd replay``: validation, the SQLite store, audits on the schedule, alerts and
tickets. The findings and alerts are then judged stream-window by stream-window
(``auditd.sim.judge``). What is reported is the distribution over fleets: the median, the
worst 5 % and the worst fleet of every metric, named so that ``--only NAME`` reruns it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditd import logs
from auditd.adapters.config.catalog import load_catalog
from auditd.adapters.config.daemon import load_daemon_config
from auditd.adapters.store import Store
from auditd.app.daemon import limits_from
from auditd.app.replay import Replayer
from auditd.errors import AuditdError, IOFailure, UsageError
from auditd.sim import fleets, judge
from auditd.sim.evaluate import load_findings


class ProfilesRefused(IOFailure):
    """The fleet's profiles, written as a user writes them, were refused by this release."""


@dataclass(frozen=True, slots=True)
class MatrixOptions:
    fleets: int = 60
    seed: int = 1
    jobs: int = 1
    user_forms: bool = True
    only: tuple[str, ...] = ()
    """Fleet names (or indices such as ``07``) to run alone."""
    max_hours: float | None = None
    """Shorten every fleet to at most this long (a quick look, not the matrix)."""


def fault_truths(plan: fleets.FleetPlan) -> list[judge.FaultTruth]:
    """The faults "every fault alerted" asks about: each injected one on each device, and a
    model's shared bias beyond tolerance on each device of the model."""
    out = []
    for fp in plan.faults:
        for dev in fp.devices:
            out.append(judge.FaultTruth(dev, fp.sensor, fp.cause,
                                        root=fp.cause if fp.cause == "firmware_regression"
                                        else None))
    if plan.shared_bias is not None and abs(plan.shared_bias[2]) >= 1 + judge.MARGIN:
        model, sensor, _ = plan.shared_bias
        out.extend(judge.FaultTruth(dev, sensor, "offset_drift")
                   for dev, m in plan.device_ids() if m == model)
    return out


def write_fleet(plan: fleets.FleetPlan, directory: Path, *, user_forms: bool) -> Path:
    """The fleet's files as a user keeps them; returns the daemon configuration's path."""
    profiles = directory / "device_profiles"
    references = directory / "references"
    profiles.mkdir(parents=True, exist_ok=True)
    references.mkdir(parents=True, exist_ok=True)
    for model, text in fleets.profiles_text(plan, user_forms=user_forms).items():
        (profiles / f"{model}.toml").write_text(text, encoding="utf-8")
    (references / f"{plan.site}.toml").write_text(fleets.references_text(plan),
                                                  encoding="utf-8")
    config = directory / "sensor-auditd.toml"
    config.write_text(fleets.config_text(plan, profiles_dir=str(profiles),
                                         references_dir=str(references),
                                         store=str(directory / "store.db")), encoding="utf-8")
    return config


def run_fleet(plan: fleets.FleetPlan, *, user_forms: bool = True,
              workdir: Path | None = None) -> judge.FleetScore:
    """One fleet through ``replay``'s pipeline, judged."""
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"matrix-{plan.name}-",
                                     dir=str(workdir) if workdir else None) as tmp:
        directory = Path(tmp)
        config = write_fleet(plan, directory, user_forms=user_forms)
        cfg = load_daemon_config(config)
        try:
            catalog = load_catalog(cfg)
        except AuditdError as exc:
            raise ProfilesRefused(
                f"{plan.name}: profiles written as a user writes them were refused: {exc} "
                "(--no-user-forms measures with forms this release accepts)"
                if user_forms else f"{plan.name}: {exc}") from exc
        sim = fleets.generate(plan, catalog)
        recording = directory / "recording.jsonl"
        with recording.open("w", encoding="utf-8") as handle:
            for message in sim.messages:
                handle.write(message.to_line() + "\n")
        found = directory / "findings.jsonl"
        tickets = directory / "tickets.jsonl"
        with Store(cfg.store.path, synchronous="normal") as store, \
                found.open("w", encoding="utf-8") as out:
            summary = Replayer(cfg, catalog, store, limits_from(cfg), out,
                               tickets_out=tickets).run(recording)
            alerts = store.alerts.select(states=("open", "acknowledged", "resolved"))
        findings = load_findings(found)
        ticket_count = sum(1 for line in tickets.read_text().splitlines() if line.strip()) \
            if tickets.exists() else 0
    result = judge.score(plan.name, plan.seed, sim.streams, findings, alerts,
                         fault_truths(plan), index=plan.index,
                         outages={g.device for g in plan.gaps})
    result.seconds = time.perf_counter() - began
    result.extra = {
        "fleet": {"kind": plan.kind, "interval_s": plan.interval_s,
                  "reference_interval_s": plan.ref_interval_s,
                  "hours": plan.duration_s / 3600, "window_h": plan.window_s / 3600,
                  "noise_phi": plan.phi, "models": dict(plan.models),
                  "faults": [f"{f.kind}:{f.cause}@{'+'.join(f.devices)}/{f.sensor}"
                             for f in plan.faults],
                  "shared_bias": list(plan.shared_bias) if plan.shared_bias else None,
                  "gaps": len(plan.gaps), "rollouts": len(plan.rollouts)},
        "pipeline": {"messages": summary["messages"], "audits": summary["audits"],
                     "findings": summary["findings"], "alerts": len(alerts),
                     "tickets": ticket_count},
    }
    return result


def check_forms(plan: fleets.FleetPlan, *, user_forms: bool) -> None:
    """Refuse early (before any fleet runs) when this release refuses the fleet's profiles."""
    with tempfile.TemporaryDirectory(prefix="matrix-check-") as tmp:
        cfg = load_daemon_config(write_fleet(plan, Path(tmp), user_forms=user_forms))
        try:
            load_catalog(cfg)
        except AuditdError as exc:
            raise ProfilesRefused(
                f"profiles written as a user writes them were refused: {exc} "
                "(--no-user-forms measures with forms this release accepts)"
                if user_forms else str(exc)) from exc


def _run_one(args: tuple[int, int, bool, float | None]) -> judge.FleetScore:
    index, seed, user_forms, max_hours = args
    logs.configure("warning", "auto", stream=sys.stderr)
    return run_fleet(fleets.plan(index, seed, max_hours), user_forms=user_forms)


def _named(plan: fleets.FleetPlan, wanted: str) -> bool:
    return plan.name == wanted or plan.name.startswith(f"f{wanted.lstrip('f')}-")


def selected(options: MatrixOptions) -> list[fleets.FleetPlan]:
    plans = [fleets.plan(i, options.seed, options.max_hours) for i in range(options.fleets)]
    if options.only:
        plans = [p for p in plans if any(_named(p, w) for w in options.only)]
    return plans


def run_matrix(options: MatrixOptions,
               progress: Callable[[judge.FleetScore], None] | None = None) -> dict[str, Any]:
    """Every selected fleet, ``options.jobs`` at a time; the distribution and each score."""
    plans = selected(options)
    if not plans:
        raise UsageError(f"no fleet named {', '.join(options.only)} among the first "
                         f"{options.fleets}", "--only")
    began = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    check_forms(plans[0], user_forms=options.user_forms)
    args = [(p.index, options.seed, options.user_forms, options.max_hours) for p in plans]
    scores: list[judge.FleetScore] = []
    if options.jobs <= 1 or len(plans) == 1:
        for a in args:
            scores.append(_run_one(a))
            if progress:
                progress(scores[-1])
    else:
        with ProcessPoolExecutor(max_workers=options.jobs) as pool:
            for result in pool.map(_run_one, args):
                scores.append(result)
                if progress:
                    progress(result)
    wall = time.perf_counter() - began
    spread = judge.distribution(scores)
    excluded: Counter[str] = Counter()
    for s in scores:
        excluded.update(s.excluded)
    return {
        "kind": "matrix", "seed": options.seed, "fleets": len(scores),
        "max_hours": options.max_hours,
        "user_forms": options.user_forms, "jobs": options.jobs,
        "wall_s": round(wall, 1),
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(),
                    "python": platform.python_version(), "load_avg_at_start": load_at_start,
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "rule": {"margin": judge.MARGIN,
                 "must_detect": f"effect >= {1 + judge.MARGIN:g} x tolerance",
                 "healthy": f"every error <= {1 - judge.MARGIN:g} x tolerance"},
        "streams": {"healthy": sum(s.healthy_streams for s in scores),
                    "false_alarm": sum(s.false_alarm_streams for s in scores)},
        "windows": {"tp": sum(s.tp for s in scores), "fp": sum(s.fp for s in scores),
                    "fn": sum(s.fn for s in scores), "tn": sum(s.tn for s in scores),
                    "excluded": dict(sorted(excluded.items()))},
        "distribution": {k: v.as_json() for k, v in spread.items()},
        "per_fleet": [s.as_json() for s in scores],
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


LABELS = {"precision": "finding precision", "recall": "finding recall",
          "cause_at_1": "cause@1", "onset_error_h": "onset error (h, median)",
          "onset_coverage": "onset given (share of TP)", "alert_precision": "alert precision",
          "faults_alerted_share": "faults alerted (share)",
          "reference_blamed_on_field": "ref. fault blamed on field (windows)",
          "field_blamed_on_reference": "field fault blamed on ref. (windows)"}


def render(result: dict[str, Any]) -> str:
    """The distribution as a table for a terminal."""
    load = result["machine"]["load_avg_at_start"][0]
    lines = [f"{result['fleets']} fleets (seed {result['seed']}, "
             f"{'user forms' if result['user_forms'] else 'fallback forms (--no-user-forms)'}"
             f", {result['jobs']} jobs) in {result['wall_s']:.0f} s (load average "
             f"{load:g} at the start on {result['machine']['cpus']} CPUs)",
             f"stream-windows: {result['windows']['tp']} TP, {result['windows']['fp']} FP, "
             f"{result['windows']['fn']} FN, {result['windows']['tn']} TN; excluded "
             + ", ".join(f"{k} {v}" for k, v in result["windows"]["excluded"].items()),
             f"healthy field streams: {result['streams']['healthy']}, flagged in at least one "
             f"window: {result['streams']['false_alarm']}",
             "",
             f"{'metric':<38} {'median':>8} {'worst 5%':>9} {'worst':>8} {'pooled':>8}  "
             "worst fleet"]
    for metric, row in result["distribution"].items():
        lines.append(f"{LABELS.get(metric, metric):<38} {_f(row['median']):>8} "
                     f"{_f(row['worst_5pct']):>9} {_f(row['worst']):>8} "
                     f"{_f(row['pooled']):>8}  {row['worst_fleet'] or '-'}")
    lines.append("")
    hours = f" --hours {result['max_hours']:g}" if result.get("max_hours") else ""
    lines.append(f"rerun one: sensor-auditd matrix --seed {result['seed']} --only NAME"
                 f"{hours}{'' if result['user_forms'] else ' --no-user-forms'}")
    return "\n".join(lines)


def _f(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def render_fleet(score: dict[str, Any]) -> str:
    """One fleet's line for the progress output."""
    def f(key: str) -> str:
        return _f(score.get(key))

    return (f"{score['name']:<24} P {f('precision')} R {f('recall')} cause@1 "
            f"{f('cause_at_1')} onset {f('onset_error_h')} h alertP "
            f"{f('alert_precision')} alerted {f('faults_alerted_share')} "
            f"({score['seconds']:.0f} s)")


def write_json(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


EVAL_DIR = Path(__file__).resolve().parents[2] / "eval"
"""Where a checkout keeps the matrices run on main (``--out eval/matrix-*.json``)."""

RECORDED_NAME = re.compile(r"matrix-(?:seed\d+-)?main\.json")
"""The names main's matrices are recorded under (``matrix-main.json`` for seed 1,
``matrix-seed2-main.json``...): an experiment's run beside them is not main's."""

COUNTED = ("healthy_streams", "false_alarm_streams", "alerts_false", "alerts_true")


@dataclass(frozen=True, slots=True)
class RecordedRate:
    """The false-alarm rate main's recorded matrices show, summed over their seeds: the
    figure to quote beside one scenario's. Every change is measured on these seeds, so it
    is a rate on fleets like them, not a promise for a fleet of yours."""

    seeds: tuple[int, ...]
    fleets: int
    healthy_streams: int
    flagged_streams: int
    """Healthy streams failed in at least one window."""
    false_alerts: int
    alerts: int
    """Alerts the judge scored (true or false; those it could not attribute left out)."""

    def sentence(self) -> str:
        seeds = ", ".join(str(s) for s in self.seeds)
        return (f"over the recorded evaluation matrices ({self.fleets} fleet"
                f"{'' if self.fleets == 1 else 's'}, seeds {seeds}; the changes are measured "
                f"on them): {self.flagged_streams} of {self.healthy_streams:,} healthy "
                f"streams failed in at least one window and {self.false_alerts} of the "
                f"{self.alerts:,} alerts scored were false (docs/evaluation.md)")


def recorded_rate(directory: Path = EVAL_DIR) -> RecordedRate | None:
    """The ``RecordedRate`` of main's matrices in ``directory`` (``RECORDED_NAME``, written
    with the profiles as users write them, one a seed), or None where there are none (an
    installed package holds no eval/). A file that is not such a matrix is passed over."""
    by_seed: dict[int, list[dict[str, int]]] = {}
    try:
        names = sorted(directory.iterdir()) if directory.is_dir() else []
    except OSError:  # unreadable: the demo goes on without the recorded line
        names = []
    for path in (p for p in names if RECORDED_NAME.fullmatch(p.name)):
        counts = _recorded_counts(path)
        if counts is not None:
            by_seed.setdefault(counts[0], counts[1])
    if not by_seed:
        return None
    fleets = [c for seed in sorted(by_seed) for c in by_seed[seed]]
    return RecordedRate(
        seeds=tuple(sorted(by_seed)), fleets=len(fleets),
        healthy_streams=sum(c["healthy_streams"] for c in fleets),
        flagged_streams=sum(c["false_alarm_streams"] for c in fleets),
        false_alerts=sum(c["alerts_false"] for c in fleets),
        alerts=sum(c["alerts_true"] + c["alerts_false"] for c in fleets))


def _recorded_counts(path: Path) -> tuple[int, list[dict[str, int]]] | None:
    """(seed, each fleet's ``COUNTED`` figures) of one recorded matrix, or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(data, dict) and data.get("kind") == "matrix"
                and data.get("user_forms") is True and type(data.get("seed")) is int):
            return None
        fleets = [{k: fleet["counts"][k] for k in COUNTED} for fleet in data["per_fleet"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not fleets or not all(type(v) is int and v >= 0 for c in fleets for v in c.values()):
        return None
    return data["seed"], fleets
