"""``sensor-auditd realdata``: real co-location data through the live path, as a user
deploys on it, beside what the data themselves say.

Two data sets, each with a README in ``../shared/data`` that says where it is from and how a
user would deploy on it:

* ``epa``: the US EPA sensortoolkit month (three 1-minute units, the agency's hourly
  monitors). The units become devices, the monitors one reference device; profiles carry
  the EPA's performance targets as tolerances (``tolerance_from`` of ``colocate``'s targets)
  and 24 h windows; the recording goes through ``replay``'s pipeline with hourly audits.
  Beside each unit and pollutant's live verdict stands ``colocate``'s on the same exports,
  and whether they agree.
* ``uci``: the UCI Air Quality year. A calibration fitted on the first four weeks (log-log
  for CO, a line for NO2) turns the metal-oxide responses into hourly estimates a device
  sends; the reference analysers are the reference device; 7-day windows, daily audits.
  Per stream: the first failing window against the day the drift (the 7-day mean error or
  slope, from the data) first crosses the tolerance, the onsets given, the alerts.

Nothing here decides a verdict: the live ones are the pipeline's, the offline ones
``colocate``'s, the drift dates a plain reading of the data.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from auditd.adapters.config.catalog import load_catalog
from auditd.adapters.config.daemon import load_daemon_config
from auditd.adapters.config.targets import targets_with
from auditd.adapters.store import Store
from auditd.app import colocate as co
from auditd.app.daemon import limits_from
from auditd.app.replay import Replayer
from auditd.domain.alerts import Alert
from auditd.domain.colocation import tolerance_from
from auditd.errors import AuditdError, InputError
from auditd.model import Finding, iso
from auditd.sim.evaluate import load_findings

SHARED = (Path("..") / "shared" / "data",
          Path(__file__).resolve().parents[2].parent / "shared" / "data")
"""Where the data sets are looked for: ``../shared/data`` from the working directory, then
beside the checkout the package runs from."""

EPA_DIR = "epa-sensortoolkit"
UCI_FILE = "airquality-uci/AirQualityUCI.csv"
EPA_UNITS = ("RT01", "RT02", "RT03")
EPA_POLLUTANTS = ("no2", "o3", "pm2_5")
NAMED = ("reference_fault", "stuck", "unit_mismatch", "time_lag")
"""Causes a technician acts on very differently: the report counts every window naming one."""


class DataMissing(AuditdError):
    """The data set is not where it was looked for."""

    exit_status = 2


def default_path(kind: str) -> Path:
    """Where a checkout finds the data (``../shared/data``), or DataMissing."""
    name = EPA_DIR if kind == "epa" else UCI_FILE
    for base in SHARED:
        if (base / name).exists():
            return (base / name).resolve()
    raise DataMissing(f"no {kind} data in ../shared/data ({SHARED[1] / name} is not there "
                      f"either): give its path (`sensor-auditd realdata {kind} "
                      f"{'DIR' if kind == 'epa' else 'FILE'}`)")


# --------------------------------------------------------------------------- the live path


@dataclass(frozen=True, slots=True)
class Deployment:
    """What a user writes and what the devices send: profiles, references, the
    configuration's audit settings, and the recording's messages."""

    site: str
    profiles: Mapping[str, str]
    references: str
    audit_interval: str
    messages: Sequence[tuple[float, str, dict[str, Any]]]
    """(received_at, topic, payload), in any order."""


@dataclass(frozen=True, slots=True)
class LiveRun:
    findings: tuple[Finding, ...]
    alerts: tuple[Alert, ...]
    summary: Mapping[str, Any]


def run_live(deployment: Deployment, workdir: Path) -> LiveRun:
    """The deployment's files as a user keeps them, loaded as ``run`` loads them, its
    recording through ``replay``'s pipeline."""
    profiles = workdir / "device_profiles"
    references = workdir / "references"
    profiles.mkdir(parents=True)
    references.mkdir()
    for model, text in deployment.profiles.items():
        (profiles / f"{model}.toml").write_text(text, encoding="utf-8")
    (references / f"{deployment.site}.toml").write_text(deployment.references,
                                                        encoding="utf-8")
    config = workdir / "sensor-auditd.toml"
    config.write_text("\n".join([
        f'site = "{deployment.site}"', 'gateway = "realdata"',
        f"profiles_dir = {json.dumps(str(profiles))}",
        f"references_dir = {json.dumps(str(references))}",
        "[audit]", f'interval = "{deployment.audit_interval}"',
        "[store]", f"path = {json.dumps(str(workdir / 'store.db'))}",
        'synchronous = "normal"', ""]), encoding="utf-8")
    cfg = load_daemon_config(config)
    catalog = load_catalog(cfg)
    recording = workdir / "recording.jsonl"
    with recording.open("w", encoding="utf-8") as handle:
        for received, topic, payload in sorted(deployment.messages, key=lambda m: m[0]):
            handle.write(json.dumps({"topic": topic, "received_at": round(received, 3),
                                     "payload": payload}, separators=(",", ":")) + "\n")
    found = workdir / "findings.jsonl"
    with Store(cfg.store.path, synchronous="normal") as store, \
            found.open("w", encoding="utf-8") as out:
        summary = Replayer(cfg, catalog, store, limits_from(cfg), out).run(recording)
        alerts = store.alerts.select(states=("open", "acknowledged", "resolved"))
    return LiveRun(tuple(load_findings(found)), tuple(alerts), summary)


def _sensor_toml(name: str, quantity: str, unit: str, lo: float, hi: float,
                 interval_s: int, tolerance: Mapping[str, Any] | None) -> list[str]:
    lines = [f"[sensors.{name}]", f'quantity = "{quantity}"', f'unit = "{unit}"',
             f"range = [{lo}, {hi}]", f"interval_s = {interval_s}"]
    if tolerance is not None:
        lines.append(f"[sensors.{name}.tolerance]")
        for key, value in tolerance.items():
            lines.append(f"{key} = {json.dumps(value)}")
    return [*lines, ""]


def _dimensionless(user_forms: bool) -> str:
    return "[]" if user_forms else "dimensionless"


def _series(findings: Sequence[Finding], device: str, sensor: str) -> list[Finding]:
    return sorted((f for f in findings if f.kind == "calibration" and f.device == device
                   and f.sensor == sensor), key=lambda f: f.window_end)


def _top(f: Finding) -> str | None:
    return f.causes[0].cause if f.causes else None


def _named(run: LiveRun) -> dict[str, dict[str, int]]:
    """Windows (any stream, any rank) and alerts naming each cause of NAMED."""
    out: dict[str, dict[str, int]] = {}
    for cause in NAMED:
        windows = sum(1 for f in run.findings if f.status != "pass"
                      and any(c.cause == cause for c in f.causes))
        alerts = sum(1 for a in run.alerts if a.cause == cause)
        out[cause] = {"windows": windows, "alerts": alerts}
    return out


# --------------------------------------------------------------------------- EPA


EPA_CONDITIONS: dict[str, tuple[str | None, str, float, float, dict[str, float]]] = {
    # No EPA target exists for them; a user keeps the shipped th-200's figures.
    "temperature": ("[temperature]", "degC", -40.0, 85.0,
                    {"bias": 0.5, "gain": 0.05, "rmse": 0.8, "r2_min": 0.9}),
    "humidity": (None, "percent", 0.0, 100.0,
                 {"bias": 3.0, "gain": 0.05, "rmse": 4.0, "r2_min": 0.8}),
}


EPA_DAY = "24h"
"""The daily view: what a gateway audits to catch a drift within a day."""
EPA_MONTH = "31d"
"""The EPA's own view: its performance targets are defined over a base testing period of at
least 30 days, which is what ``colocate`` judges; one window over the whole month, audited
daily, judges the same thing through the live path."""


def epa_deployment(directory: Path, *, user_forms: bool = True, audit_interval: str = "1h",
                   window: str = EPA_DAY) -> tuple[Deployment, co.Sources]:
    """The EPA month as a user deploys it, and ``colocate``'s sources of the same files.
    ``window``: every profile's audit window."""
    ref = directory / "airnowtech_example_reference_data.csv"
    units = [directory / f"toco_toucan_{u}_raw.csv" for u in EPA_UNITS]
    for path in (ref, *units):
        if not path.is_file():
            raise InputError(str(path), "DIR", "not found: not the EPA sensortoolkit folder")
    sources = co.sources_from_files(f"burdens-creek={ref}",
                                    [f"{u}={p}" for u, p in zip(EPA_UNITS, units, strict=True)])
    targets = targets_with(None)
    site = "burdens-creek"
    sensor_lines: list[str] = []
    reference_lines: list[str] = []
    for sensor in EPA_POLLUTANTS:
        unit = sources.reference[sensor].unit
        quantity = "[mass] / [length] ** 3" if sensor.startswith("pm") \
            else _dimensionless(user_forms)
        tol = tolerance_from(targets[(sensor, "1h")], 3600.0, 86400.0)
        tolerance = {"bias": tol.bias, "gain": tol.gain, "rmse": tol.rmse,
                     "r2_min": tol.r2_min, "lag_s": 3600, "window": window,
                     "min_samples": 1080}
        # a gas range starting at 0 is what most users write
        sensor_lines += _sensor_toml(sensor, quantity, unit, 0.0, 1000.0, 60, tolerance)
        reference_lines += _sensor_toml(
            sensor, quantity, unit, 0.0, 1000.0, 3600,
            None if user_forms else {"bias": tol.bias / 4, "rmse": tol.rmse / 4,
                                     "window": window, "min_samples": 18})
    for sensor, (dimension, unit, lo, hi, figures) in EPA_CONDITIONS.items():
        q = dimension or _dimensionless(user_forms)
        tolerance = {**figures, "lag_s": 3600, "window": window, "min_samples": 1080}
        sensor_lines += _sensor_toml(sensor, q, unit, lo, hi, 60, tolerance)
        reference_lines += _sensor_toml(
            sensor, q, unit, lo, hi, 3600,
            None if user_forms else {"bias": figures["bias"] / 4,
                                     "rmse": figures["rmse"] / 4, "window": window,
                                     "min_samples": 18})
    sensors = [*EPA_POLLUTANTS, *EPA_CONDITIONS]
    profiles = {
        "toco-toucan": "\n".join(['model = "toco-toucan"', "", *sensor_lines]),
        "agency-monitor": "\n".join(['model = "agency-monitor"', "", *reference_lines]),
    }
    # the monitors' uncertainty as a user copies it from a certificate: an expanded
    # uncertainty at k = 2 (the references' default coverage factor; the figures are this
    # script's, the export states none); the audit takes half of it (``Reference.
    # standard_uncertainty``)
    references = "\n".join([
        "[[reference]]", 'id = "burdens-creek"', f'site = "{site}"', 'serves = ["RT0*"]',
        f"sensors = {json.dumps(sensors)}", 'model = "agency-monitor"',
        'certificate = "AQS-370630099"', 'calibration_due = "2030-01-01"',
        "uncertainty = {" + ", ".join(f"{s} = {u}" for s, u in
                                      (("no2", 2.0), ("o3", 2.0), ("pm2_5", 2.0),
                                       ("temperature", 0.2), ("humidity", 2.0))) + "}", ""])
    messages: list[tuple[float, str, dict[str, Any]]] = []
    first = min(float(s.ts.min()) for u in sources.units.values() for s in u.values())
    for device, model, streams, received_after in (
            [(u, "toco-toucan", sources.units[u], 1.0) for u in EPA_UNITS]
            + [("burdens-creek", "agency-monitor", sources.reference, 3600.0 + 60.0)]):
        topic = f"fleet/{site}/{device}"
        messages.append((first - 600.0, f"{topic}/meta",
                         {"ts": iso(first - 600.0), "model": model, "firmware": "1.0"}))
        for ts, readings in _rows(streams, sensors):
            # an hourly value (begin-hour stamp) is published once its hour is over
            messages.append((ts + received_after, f"{topic}/telemetry",
                             {"ts": iso(ts), "readings": readings}))
    return Deployment(site, profiles, references, audit_interval, messages), sources


def _rows(streams: Mapping[str, co.Stream],
          sensors: Sequence[str]) -> Iterator[tuple[float, dict[str, float]]]:
    rows: dict[float, dict[str, float]] = {}
    for sensor in sensors:
        stream = streams.get(sensor)
        if stream is None:
            continue
        for ts, value in zip(stream.ts.tolist(), stream.values.tolist(), strict=True):
            if math.isfinite(value):
                rows.setdefault(float(ts), {})[sensor] = round(float(value), 4)
    yield from sorted(rows.items())


def colocate_verdicts(sources: co.Sources) -> dict[tuple[str, str], dict[str, Any]]:
    """``colocate``'s verdict per unit and pollutant: fail when any judged averaging
    interval fails; the cause: its finding's first."""
    result = co.run(sources, targets_with(None))
    causes = {(f.device, f.sensor): _top(f) for f in result.findings}
    out = {}
    for unit in EPA_UNITS:
        for sensor in EPA_POLLUTANTS:
            per = result.evaluation.comparisons.get(unit, {}).get(sensor, {})
            statuses = {name: c.status for name, c in per.items() if c.status is not None}
            verdict = "fail" if "fail" in statuses.values() else (
                "pass" if statuses else None)
            out[(unit, sensor)] = {"verdict": verdict, "by_interval": statuses,
                                   "cause": causes.get((unit, sensor))}
    return out


def live_verdict(series: Sequence[Finding]) -> dict[str, Any]:
    """A month of windows in one word: ``fail`` when more judged windows fail than pass,
    ``pass`` otherwise, ``insufficient_data`` when none was judged (which never agrees
    with a verdict of ``colocate``); with the share failing, the most frequent first cause
    of the failing ones."""
    statuses = Counter(f.status for f in series)
    judged = statuses["pass"] + statuses["fail"]
    failing = [f for f in series if f.status == "fail"]
    causes = Counter(_top(f) or "(none)" for f in failing)
    return {"windows": len(series), "pass": statuses["pass"], "fail": statuses["fail"],
            "insufficient_data": statuses["insufficient_data"],
            "fail_share": round(statuses["fail"] / judged, 3) if judged else None,
            "verdict": (None if not series else "insufficient_data" if not judged
                        else "fail" if statuses["fail"] > statuses["pass"] else "pass"),
            "cause": causes.most_common(1)[0][0] if causes else None,
            "causes": dict(causes.most_common())}


def month_verdict(series: Sequence[Finding]) -> dict[str, Any]:
    """The month's one window, judged at the month's end (the last audit): its status,
    first cause and the figures ``colocate`` reports beside the targets."""
    if not series:
        return {"status": None, "cause": None}
    last = series[-1]
    m = last.metrics
    return {"status": last.status, "cause": _top(last),
            "causes": [c.cause for c in last.causes],
            "window": {"start": iso(last.window_start), "end": iso(last.window_end)},
            **{k: m.get(k) for k in ("n", "bias", "gain", "offset", "rmse", "r2")}}


def _agrees(mine: str | None, my_cause: str | None,
            theirs: Mapping[str, Any] | None) -> bool | None:
    """The same pass/fail as ``colocate`` and, when both fail, the same first cause; None
    where either has no verdict. ``insufficient_data`` never agrees."""
    if theirs is None or theirs["verdict"] is None or mine is None:
        return None
    return mine == theirs["verdict"] and (mine == "pass" or my_cause == theirs["cause"])


def run_epa(directory: Path, *, user_forms: bool = True, audit_interval: str = "1h",
            workdir: Path | None = None) -> dict[str, Any]:
    """The month through the live path twice: as a gateway audits it (24 h windows every
    ``audit_interval``: the alerts, the causes it names day by day) and in the EPA's own
    view (one window over the whole month, audited daily), whose verdict is set beside
    ``colocate``'s on the same exports and targets."""
    deployment, sources = epa_deployment(directory, user_forms=user_forms,
                                         audit_interval=audit_interval)
    whole, _ = epa_deployment(directory, user_forms=user_forms, audit_interval="24h",
                              window=EPA_MONTH)
    offline = colocate_verdicts(sources)
    with tempfile.TemporaryDirectory(prefix="realdata-epa-",
                                     dir=str(workdir) if workdir else None) as tmp:
        live = run_live(deployment, Path(tmp) / "day")
        month = run_live(whole, Path(tmp) / "month")
    rows = []
    for unit in EPA_UNITS:
        for sensor in (*EPA_POLLUTANTS, *EPA_CONDITIONS):
            mine = live_verdict(_series(live.findings, unit, sensor))
            judged = month_verdict(_series(month.findings, unit, sensor))
            theirs = offline.get((unit, sensor))
            alerts = [a for a in live.alerts if a.device == unit and a.sensor == sensor]
            rows.append({"unit": unit, "sensor": sensor, "live": mine, "month": judged,
                         "colocate": theirs,
                         "agree": _agrees(judged["status"], judged["cause"], theirs),
                         "agree_daily": _agrees(mine["verdict"], mine["cause"], theirs),
                         "alerts": len(alerts),
                         "alert_causes": sorted({a.cause or "(none)" for a in alerts})})
    reference = {sensor: live_verdict(_series(live.findings, "burdens-creek", sensor))
                 for sensor in (*EPA_POLLUTANTS, *EPA_CONDITIONS)}
    compared = [r for r in rows if r["agree"] is not None]
    return {"kind": "realdata-epa", "directory": str(directory), "user_forms": user_forms,
            "audit_interval": audit_interval, "month_window": EPA_MONTH,
            "agreement": {"compared": len(compared),
                          "agree": sum(1 for r in compared if r["agree"]),
                          "agree_daily": sum(1 for r in compared if r["agree_daily"])},
            "rows": rows, "reference_findings": reference, "named": _named(live),
            "reference_excluded_qc": dict(sources.excluded),
            "summary": {k: live.summary[k] for k in ("messages", "readings_accepted",
                                                     "readings_rejected", "audits",
                                                     "findings", "alerts")}}


def render_epa(result: Mapping[str, Any]) -> str:
    lines = [f"{'unit':<5} {'sensor':<12} {'days (fail share of judged/all, cause)':<40} "
             f"{'month (cause)':<26} {'colocate (cause)':<26} agree  alerts"]
    for r in result["rows"]:
        live, month = r["live"], r["month"]
        mine = (f"{live['verdict'] or '-'} ({_pct(live['fail_share'])} of "
                f"{live['pass'] + live['fail']}/{live['windows']}, {live['cause'] or '-'})")
        whole = f"{month['status'] or '-'} ({month['cause'] or '-'})"
        theirs = r["colocate"]
        other = "-" if theirs is None or theirs["verdict"] is None else \
            f"{theirs['verdict']} ({theirs['cause'] or '-'})"
        agree = {True: "yes", False: "NO", None: "-"}[r["agree"]]
        lines.append(f"{r['unit']:<5} {r['sensor']:<12} {mine:<40} {whole:<26} {other:<26} "
                     f"{agree:<6} {r['alerts']} {', '.join(r['alert_causes'])}")
    a = result["agreement"]
    lines.append(f"month window = colocate for {a['agree']} of {a['compared']} "
                 f"unit-pollutants (the days' majority: {a['agree_daily']})")
    lines.append("named: " + ", ".join(f"{c} {v['windows']} windows / {v['alerts']} alerts"
                                       for c, v in result["named"].items()))
    ref = result["reference_findings"]
    lines.append("reference's own windows failing: " + ", ".join(
        f"{s} {v['fail']}" for s, v in ref.items()))
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


# --------------------------------------------------------------------------- UCI


UCI_ZONE = timezone(timedelta(hours=1))
"""The README: stamps run hour by hour across both clock changes, so UTC+01:00."""
FIT_DAYS = 28
UCI_TOLERANCE = {
    # the README's figures a user would pick; rmse and r2_min: the user's own headroom
    "co": {"bias": 0.3, "gain": 0.2, "rmse": 0.8, "r2_min": 0.5},
    "no2": {"bias": 15.0, "gain": 0.35, "rmse": 40.0, "r2_min": 0.3},
}


@dataclass(frozen=True, slots=True)
class UciData:
    ts: np.ndarray
    co_gt: np.ndarray
    no2_gt: np.ndarray
    s1: np.ndarray
    s4: np.ndarray


def read_uci(path: Path) -> UciData:
    """The UCI file as its README describes it: ``;`` fields, ``,`` decimals, -200 missing,
    DD/MM/YYYY HH.MM.SS in UTC+01:00, blank ``;;;`` lines after the data."""
    ts, co_gt, no2_gt, s1, s4 = [], [], [], [], []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(str(path), "FILE", exc.strerror or str(exc)) from exc
    lines = text.splitlines()
    if not lines or not lines[0].startswith("Date;Time;CO(GT)"):
        raise InputError(str(path), "FILE", "not the UCI Air Quality file (its header "
                                            "starts Date;Time;CO(GT))")
    header = lines[0].split(";")
    col = {name: k for k, name in enumerate(header)}

    def number(cell: str) -> float:
        value = float(cell.replace(",", ".")) if cell else math.nan
        return math.nan if value == -200 else value

    for line in lines[1:]:
        cells = line.split(";")
        if not cells[0]:
            continue
        when = datetime.strptime(f"{cells[0]} {cells[1]}", "%d/%m/%Y %H.%M.%S")
        ts.append(when.replace(tzinfo=UCI_ZONE).timestamp())
        co_gt.append(number(cells[col["CO(GT)"]]))
        no2_gt.append(number(cells[col["NO2(GT)"]]))
        s1.append(number(cells[col["PT08.S1(CO)"]]))
        s4.append(number(cells[col["PT08.S4(NO2)"]]))
    return UciData(np.array(ts), np.array(co_gt), np.array(no2_gt), np.array(s1),
                   np.array(s4))


@dataclass(frozen=True, slots=True)
class Calibration:
    """The user's fit on the first weeks: CO = exp(a + b ln S1), NO2 = a + b S4."""

    co: tuple[float, float]
    no2: tuple[float, float]
    fit_end: float

    def estimates(self, data: UciData) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            co_est = np.exp(self.co[0] + self.co[1] * np.log(data.s1))
        return {"co": co_est, "no2": self.no2[0] + self.no2[1] * data.s4}


def fit_calibration(data: UciData, days: float = FIT_DAYS) -> Calibration:
    fit_end = float(data.ts[0]) + days * 86400.0
    early = data.ts < fit_end
    ok = early & (data.co_gt > 0) & (data.s1 > 0)
    b, a = np.polyfit(np.log(data.s1[ok]), np.log(data.co_gt[ok]), 1)
    ok2 = early & np.isfinite(data.no2_gt) & np.isfinite(data.s4)
    b2, a2 = np.polyfit(data.s4[ok2], data.no2_gt[ok2], 1)
    return Calibration((float(a), float(b)), (float(a2), float(b2)), fit_end)


def uci_deployment(path: Path, *, user_forms: bool = True
                   ) -> tuple[Deployment, UciData, Calibration]:
    data = read_uci(path)
    calibration = fit_calibration(data)
    estimates = calibration.estimates(data)
    site = "uci"
    quantity = "[mass] / [length] ** 3"
    units = {"co": "mg/m^3", "no2": "ug/m^3"}
    ranges = {"co": (0.0, 50.0), "no2": (0.0, 1000.0)}
    device_lines: list[str] = []
    reference_lines: list[str] = []
    for sensor in ("co", "no2"):
        lo, hi = ranges[sensor]
        tol = {**UCI_TOLERANCE[sensor], "lag_s": 7200, "window": "7d", "min_samples": 126}
        device_lines += _sensor_toml(sensor, quantity, units[sensor], lo, hi, 3600, tol)
        reference_lines += _sensor_toml(
            sensor, quantity, units[sensor], lo, hi, 3600,
            None if user_forms else {"bias": UCI_TOLERANCE[sensor]["bias"] / 4,
                                     "rmse": UCI_TOLERANCE[sensor]["rmse"] / 4,
                                     "window": "7d", "min_samples": 126})
    profiles = {"uci-multisensor": "\n".join(['model = "uci-multisensor"', "",
                                              *device_lines]),
                "uci-analyser": "\n".join(['model = "uci-analyser"', "", *reference_lines])}
    # expanded uncertainties at k = 2, as for the EPA month's monitors
    references = "\n".join([
        "[[reference]]", 'id = "uci-reference"', f'site = "{site}"',
        'serves = ["uci-device"]', 'sensors = ["co", "no2"]', 'model = "uci-analyser"',
        'certificate = "UCI-360"', 'calibration_due = "2030-01-01"',
        "uncertainty = {co = 0.1, no2 = 5.0}", ""])
    messages: list[tuple[float, str, dict[str, Any]]] = []
    first = float(data.ts[0])
    for device, model in (("uci-device", "uci-multisensor"),
                          ("uci-reference", "uci-analyser")):
        messages.append((first - 600.0, f"fleet/{site}/{device}/meta",
                         {"ts": iso(first - 600.0), "model": model, "firmware": "1.0"}))
    for k, ts in enumerate(data.ts.tolist()):
        device_readings = {s: round(float(estimates[s][k]), 4) for s in ("co", "no2")
                           if math.isfinite(estimates[s][k])}
        if device_readings:
            messages.append((ts, f"fleet/{site}/uci-device/telemetry",
                             {"ts": iso(ts), "readings": device_readings}))
        reference_readings: dict[str, Any] = {}
        for sensor, column in (("co", data.co_gt), ("no2", data.no2_gt)):
            value = float(column[k])
            # an analyser's missing hour: CONTRACT.md's outage, a null value with its unit
            reference_readings[sensor] = round(value, 4) if math.isfinite(value) \
                else {"value": None, "unit": units[sensor]}
        messages.append((ts + 0.5, f"fleet/{site}/uci-reference/telemetry",
                         {"ts": iso(ts), "readings": reference_readings}))
    return Deployment(site, profiles, references, "24h", messages), data, calibration


def drift_crossing(data: UciData, estimate: np.ndarray, truth: np.ndarray,
                   tol: Mapping[str, float], after: float,
                   window_s: float = 7 * 86400.0) -> dict[str, Any]:
    """A plain reading of the data: the first day (a daily step, like the audits) after
    ``after`` whose trailing 7-day window shows the estimate's mean error beyond the bias
    tolerance, and the first whose least-squares slope on the reference is beyond the gain
    tolerance (at least 75 % of the window's hours paired)."""
    ends = np.arange(math.ceil(after / 86400.0) * 86400.0, float(data.ts[-1]), 86400.0)
    found: dict[str, Any] = {"bias": None, "gain": None}
    for end in ends.tolist():
        m = (data.ts >= end - window_s) & (data.ts < end) & np.isfinite(estimate) \
            & np.isfinite(truth)
        if m.sum() < 0.75 * window_s / 3600.0:
            continue
        error = float(np.mean(estimate[m] - truth[m]))
        slope = float(np.polyfit(truth[m], estimate[m], 1)[0])
        if found["bias"] is None and abs(error) > tol["bias"]:
            found["bias"] = {"at": iso(end), "bias": round(error, 3)}
        if found["gain"] is None and abs(slope - 1) > tol["gain"]:
            found["gain"] = {"at": iso(end), "slope": round(slope, 3)}
        if found["bias"] and found["gain"]:
            break
    times = [v["at"] for v in found.values() if v]
    found["at"] = min(times) if times else None
    return found


def run_uci(path: Path, *, user_forms: bool = True,
            workdir: Path | None = None) -> dict[str, Any]:
    deployment, data, calibration = uci_deployment(path, user_forms=user_forms)
    estimates = calibration.estimates(data)
    with tempfile.TemporaryDirectory(prefix="realdata-uci-",
                                     dir=str(workdir) if workdir else None) as tmp:
        live = run_live(deployment, Path(tmp))
    streams = []
    for sensor, truth in (("co", data.co_gt), ("no2", data.no2_gt)):
        series = _series(live.findings, "uci-device", sensor)
        failing = [f for f in series if f.status == "fail"]
        first_fail = failing[0].window_end if failing else None
        crossing = drift_crossing(data, estimates[sensor], truth, UCI_TOLERANCE[sensor],
                                  calibration.fit_end)
        cross_t = datetime.fromisoformat(crossing["at"]).timestamp() if crossing["at"] \
            else None
        alerts = [a for a in live.alerts if a.device == "uci-device" and a.sensor == sensor]
        onsets = [f.onset for f in failing if f.onset is not None]
        in_fit = [f for f in series if f.window_end <= calibration.fit_end]
        streams.append({
            "sensor": sensor,
            "windows": len(series), "failing": len(failing),
            "fitting_weeks": {"windows": len(in_fit),
                              "failing": sum(f.status == "fail" for f in in_fit)},
            "first_failing_window_end": iso(first_fail),
            "drift_crosses_tolerance": crossing,
            "first_fail_after_crossing_days": (round((first_fail - cross_t) / 86400.0, 1)
                                               if first_fail and cross_t else None),
            "onsets_given": len(onsets),
            "onset_first": iso(min(onsets)) if onsets else None,
            "onset_median": iso(statistics.median(onsets)) if onsets else None,
            "alerts": len(alerts),
            "alert_causes": dict(Counter(a.cause or "(none)" for a in alerts)),
            "failing_causes": dict(Counter(_top(f) or "(none)" for f in failing)),
        })
    return {"kind": "realdata-uci", "file": str(path), "user_forms": user_forms,
            "calibration": {"co_ln": [round(x, 5) for x in calibration.co],
                            "no2_line": [round(x, 5) for x in calibration.no2],
                            "fit_end": iso(calibration.fit_end)},
            "streams": streams, "named": _named(live),
            "other_alerts": dict(Counter(
                f"{a.device}/{a.sensor or '-'} {a.cause or '(none)'}" for a in live.alerts
                if a.device != "uci-device")),
            "summary": {k: live.summary[k] for k in ("messages", "readings_accepted",
                                                     "readings_rejected", "nulls", "audits",
                                                     "findings", "alerts")}}


def render_uci(result: Mapping[str, Any]) -> str:
    cal = result["calibration"]
    lines = [f"calibration fitted until {cal['fit_end']}: CO = exp({cal['co_ln'][0]:.3f} + "
             f"{cal['co_ln'][1]:.3f} ln S1), NO2 = {cal['no2_line'][0]:.1f} + "
             f"{cal['no2_line'][1]:.4f} S4"]
    for s in result["streams"]:
        cross = s["drift_crosses_tolerance"]
        bias = cross["bias"]["at"] if cross["bias"] else "-"
        gain = cross["gain"]["at"] if cross["gain"] else "-"
        lines.append(
            f"{s['sensor']}: {s['failing']} of {s['windows']} windows fail "
            f"({s['fitting_weeks']['failing']} of {s['fitting_weeks']['windows']} in the "
            f"fitting weeks); first failing window ends {s['first_failing_window_end'] or '-'}"
            f", the drift crosses tolerance {cross['at'] or '-'} (bias {bias}, slope {gain};"
            f" first failure {_days(s['first_fail_after_crossing_days'])}); onsets on "
            f"{s['onsets_given']} of {s['failing']} failing windows (first "
            f"{s['onset_first'] or '-'}); {s['alerts']} alerts "
            f"{s['alert_causes'] or ''}")
    lines.append("named: " + ", ".join(f"{c} {v['windows']} windows / {v['alerts']} alerts"
                                       for c, v in result["named"].items()))
    if result["other_alerts"]:
        lines.append("other alerts: " + ", ".join(f"{k} x{v}" for k, v in
                                                   result["other_alerts"].items()))
    return "\n".join(lines)


def _days(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f} days"
