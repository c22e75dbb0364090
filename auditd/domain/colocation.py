"""Co-location evaluation: units beside a reference monitor, judged the EPA's way.

The arithmetic follows the US EPA's performance-target reports and their toolkit
(sensortoolkit), so that its published figures can be reproduced:

* **Averages** over 1-hour and 24-hour intervals are kept only where *more than* 75 % of
  the expected values are present, the expected count coming from the data's own
  recording interval (the most common spacing of its timestamps): more than 45 of 60
  minute values, more than 18 of 24 hourly values. A 24-hour sensor average is taken over
  its recorded values (1440 expected at one a minute), not over its hourly averages.
  Intervals start at whole multiples of their width from ``origin_s`` (UTC by default).
* **Per unit**: ordinary least squares of sensor (y) on reference (x) over the intervals
  both have, its slope, intercept and R², RMSE = sqrt(mean((sensor - reference)²)),
  NRMSE = RMSE / mean(reference) in percent.
* **Precision** across units: over the intervals where *every* unit has an average,
  SD = sqrt(sum((x_ij - mean_i)²) / (N·M - 1)) and CV = SD / mean(x) in percent.

Pure: arrays in, frozen values out. The calibration core is asked for the diagnosis
(``diagnose``); files, the store and the CLI are callers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from auditd.core.align import align
from auditd.core.averaging import Averages, interval_means
from auditd.core.checks import r2_judgeable
from auditd.core.fit import fit_line
from auditd.core.series import Series
from auditd.core.stats import deming
from auditd.core.verdict import StreamVerdict, detector_causes, evaluate_stream
from auditd.model import Cause, SensorSpec, Tolerance

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

INTERVALS: Mapping[str, float] = {"1h": 3600.0, "24h": 86400.0}

DEMING_VARIANCE_RATIO = 1.0
"""The errors-in-variables line beside OLS is orthogonal regression (equal error
variances): where it differs much from the OLS slope, the data do not pin the slope down."""


# --------------------------------------------------------------------------- averaging


def paired(a: Averages, b: Averages) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(starts, a, b) over the intervals both have."""
    common, ia, ib = np.intersect1d(a.start, b.start, assume_unique=True, return_indices=True)
    return common, a.mean[ia], b.mean[ib]


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class Targets:
    """Performance targets of one sensor at one averaging interval (canonical unit)."""

    slope: tuple[float, float] | None = None
    intercept: tuple[float, float] | None = None
    r2_min: float | None = None
    rmse_max: float | None = None
    nrmse_max: float | None = None
    """The RMSE target is met when RMSE <= rmse_max *or* NRMSE <= nrmse_max."""
    sd_max: float | None = None
    cv_max: float | None = None
    """The precision target is met when SD <= sd_max *or* CV <= cv_max."""
    source: str = ""


TargetTable = Mapping[tuple[str, str], Targets]


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True, slots=True)
class Comparison:
    """One unit, one sensor, one interval against the reference."""

    n: int
    slope: float
    intercept: float
    r2: float
    rmse: float
    nrmse: float
    bias: float
    completeness: float
    """Kept averages of the unit / intervals of the test period."""
    slope_deming: float
    intercept_deming: float
    targets: Mapping[str, str] = field(default_factory=dict)
    """Metric -> "pass" / "fail" (only metrics with a target)."""
    status: str | None = None
    """``pass``, ``fail``, ``insufficient_data``, or None when no target applies."""

    def failed(self) -> list[str]:
        return [k for k, v in self.targets.items() if v == "fail"]


MIN_PAIRS = 3
"""Fewer paired averages than this and there is no line to judge (as the EPA toolkit)."""


def compare(sensor: Averages, reference: Averages, targets: Targets | None,
            intervals_in_period: int) -> Comparison:
    """The EPA's figures of one unit against the reference, judged by ``targets``."""
    _, y, x = paired(sensor, reference)
    n = int(x.size)
    nan = math.nan
    completeness = len(sensor) / intervals_in_period if intervals_in_period else nan
    if n < MIN_PAIRS:
        return Comparison(n, nan, nan, nan, nan, nan, nan, completeness, nan, nan,
                          status="insufficient_data" if targets is not None else None)
    line = fit_line(y, x)
    diff = y - x
    rmse = float(math.sqrt(float(diff @ diff) / n))
    ref_mean = float(x.mean())
    nrmse = 100.0 * rmse / ref_mean if ref_mean > 0 else nan
    slope_d, intercept_d = deming(x, y, DEMING_VARIANCE_RATIO)
    verdicts = judge(targets, line.gain, line.offset, line.r2, rmse, nrmse)
    status = None if targets is None else ("fail" if "fail" in verdicts.values() else "pass")
    return Comparison(n, line.gain, line.offset, line.r2, rmse, nrmse, float(diff.mean()),
                      completeness, slope_d, intercept_d, verdicts, status)


def judge(targets: Targets | None, slope: float, intercept: float, r2: float, rmse: float,
          nrmse: float) -> dict[str, str]:
    """Pass or fail of each metric that has a target (NaN never passes)."""
    if targets is None:
        return {}
    out: dict[str, str] = {}

    def verdict(ok: bool) -> str:
        return "pass" if ok else "fail"

    if targets.slope is not None:
        out["slope"] = verdict(targets.slope[0] <= slope <= targets.slope[1])
    if targets.intercept is not None:
        out["intercept"] = verdict(targets.intercept[0] <= intercept <= targets.intercept[1])
    if targets.r2_min is not None:
        out["r2"] = verdict(r2 >= targets.r2_min)
    if targets.rmse_max is not None or targets.nrmse_max is not None:
        out["rmse"] = verdict(
            (targets.rmse_max is not None and rmse <= targets.rmse_max)
            or (targets.nrmse_max is not None and nrmse <= targets.nrmse_max))
    return out


@dataclass(frozen=True, slots=True)
class Precision:
    """Inter-sensor precision of one sensor at one interval."""

    n: int
    """Intervals where every unit has an average."""
    units: int
    sd: float
    cv: float
    mean: float
    targets: Mapping[str, str] = field(default_factory=dict)
    status: str | None = None


def precision(units: Sequence[Averages], targets: Targets | None) -> Precision:
    """SD and CV over the intervals where every unit reports (the EPA's formula)."""
    nan = math.nan
    m = len(units)
    if m < 2:
        return Precision(0, m, nan, nan, nan, status=None)
    common = units[0].start
    for u in units[1:]:
        common = np.intersect1d(common, u.start, assume_unique=True)
    n = int(common.size)
    if n == 0 or n * m < 2:
        return Precision(n, m, nan, nan, nan,
                         status="insufficient_data" if targets is not None else None)
    x = np.column_stack([u.mean[np.searchsorted(u.start, common)] for u in units])
    sd, cv, mean = precision_of(x)
    verdicts: dict[str, str] = {}
    if targets is not None and (targets.sd_max is not None or targets.cv_max is not None):
        ok = ((targets.sd_max is not None and sd <= targets.sd_max)
              or (targets.cv_max is not None and cv <= targets.cv_max))
        verdicts["precision"] = "pass" if ok else "fail"
    status = verdicts.get("precision")
    return Precision(n, m, sd, cv, mean, verdicts, status)


def precision_of(x: FloatArray) -> tuple[float, float, float]:
    """(SD, CV %, mean) of an N x M array of concurrent averages (rows: intervals)."""
    centred = x - x.mean(axis=1, keepdims=True)
    sd = float(math.sqrt(float(np.sum(centred * centred)) / (x.size - 1)))
    mean = float(x.mean())
    return sd, (100.0 * sd / mean if mean > 0 else math.nan), mean


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True, slots=True)
class Range:
    n: int
    min: float
    max: float
    mean: float


def value_range(a: Averages) -> Range | None:
    if len(a) == 0:
        return None
    return Range(len(a), float(a.mean.min()), float(a.mean.max()), float(a.mean.mean()))


@dataclass(frozen=True, slots=True)
class Dependence:
    """How the error (sensor - reference) moves with a condition: OLS slope and r."""

    n: int
    slope: float
    """Change of the error per unit of the condition."""
    r: float


def error_dependence(sensor: Averages, reference: Averages,
                     condition: Averages) -> Dependence | None:
    starts, y, x = paired(sensor, reference)
    common, ia, ic = np.intersect1d(starts, condition.start, assume_unique=True,
                                    return_indices=True)
    if common.size < MIN_PAIRS:
        return None
    err = (y - x)[ia]
    c = condition.mean[ic]
    line = fit_line(err, c)
    r = math.copysign(math.sqrt(line.r2), line.gain) if math.isfinite(line.r2) else math.nan
    return Dependence(int(common.size), line.gain, r)


# --------------------------------------------------------------------------- correction


@dataclass(frozen=True, slots=True)
class Correction:
    """corrected = offset + gain x raw (+ humidity_coefficient x RH), the form of the EPA's
    nationwide PM2.5 correction: the reference regressed on the sensor, so the corrected
    value is the best prediction of the reference from what the sensor says."""

    gain: float
    offset: float
    humidity_coefficient: float | None
    fit_start: float
    fit_end: float
    fit_n: int

    def apply(self, raw: FloatArray, humidity: FloatArray | None = None) -> FloatArray:
        out = self.offset + self.gain * raw
        if self.humidity_coefficient is not None:
            if humidity is None:
                raise ValueError("this correction needs the humidity")
            out = out + self.humidity_coefficient * humidity
        return np.asarray(out, dtype=np.float64)


def fit_correction(raw: FloatArray, reference: FloatArray, humidity: FloatArray | None,
                   fit_start: float, fit_end: float) -> Correction | None:
    """Least squares of reference on [1, raw(, humidity)]; None with too few points."""
    n = int(raw.size)
    cols = [np.ones(n), raw] + ([humidity] if humidity is not None else [])
    if n < len(cols) + 2:
        return None
    design = np.column_stack(cols)
    coef, *_ = np.linalg.lstsq(design, reference, rcond=None)
    return Correction(float(coef[1]), float(coef[0]),
                      float(coef[2]) if humidity is not None else None, fit_start, fit_end, n)


@dataclass(frozen=True, slots=True)
class CorrectionResult:
    correction: Correction
    before: Comparison
    after: Comparison
    judged_start: float
    judged_end: float


def judge_correction(
    sensor: Averages, reference: Averages, humidity: Averages | None, targets: Targets | None,
    split: float, *, with_humidity: bool = False,
) -> CorrectionResult | None:
    """Fit on the averages before ``split``, judge on those from ``split`` on.

    Never judged on the data it was fit on: the metrics before and after are both over the
    later part only. With ``with_humidity`` only intervals that also have the unit's own
    humidity average are used (the correction must run on what the unit itself reports).
    """
    starts, y, x = paired(sensor, reference)
    h = None
    if with_humidity:
        if humidity is None:
            return None
        starts, ih, ip = np.intersect1d(humidity.start, starts, assume_unique=True,
                                        return_indices=True)
        h, y, x = humidity.mean[ih], y[ip], x[ip]
    train, test = starts < split, starts >= split
    if not (train.any() and test.any()):
        return None
    corr = fit_correction(y[train], x[train], None if h is None else h[train],
                          float(starts[train][0]), float(starts[train][-1] + sensor.width_s))
    if corr is None or int(test.sum()) < MIN_PAIRS:
        return None
    corrected = corr.apply(y[test], None if h is None else h[test])
    ref_test = _as_averages(starts[test], x[test], reference.width_s)
    n_test = int(test.sum())
    before = compare(_as_averages(starts[test], y[test], sensor.width_s), ref_test, targets, n_test)
    after = compare(_as_averages(starts[test], corrected, sensor.width_s), ref_test, targets,
                    n_test)
    return CorrectionResult(corr, before, after, float(starts[test][0]),
                            float(starts[test][-1] + sensor.width_s))


def _as_averages(start: FloatArray, mean: FloatArray, width: float) -> Averages:
    return Averages(np.asarray(start, dtype=np.float64), np.asarray(mean, dtype=np.float64),
                    np.ones(start.size, dtype=np.int64), width, 1.0, int(start.size))


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True, eq=False)
class Stream:
    """One unit's (or the reference's) values of one sensor, canonical unit."""

    ts: FloatArray
    values: FloatArray
    unit: str


@dataclass(frozen=True, slots=True, eq=False)
class Evaluation:
    start: float
    end: float
    """First and last timestamp of the units' data."""
    averages: Mapping[str, Mapping[str, Mapping[str, Averages]]]
    """device -> sensor -> interval -> averages ("reference" is not a device key)."""
    reference: Mapping[str, Mapping[str, Averages]]
    comparisons: Mapping[str, Mapping[str, Mapping[str, Comparison]]]
    precision: Mapping[str, Mapping[str, Precision]]
    units: Mapping[str, str]
    """sensor -> canonical unit."""
    origins: Mapping[str, float]
    targets: TargetTable

    def judged(self) -> Iterator[tuple[str, str, str, Comparison]]:
        """(device, sensor, interval, comparison) of every comparison a target judged, by
        device and sensor: the rows of the targets table."""
        for device in sorted(self.comparisons):
            for sensor in sorted(self.comparisons[device]):
                for interval, c in self.comparisons[device][sensor].items():
                    if c.status is not None:
                        yield device, sensor, interval, c

    def judged_precision(self) -> Iterator[tuple[str, str, Precision]]:
        """(sensor, interval, precision) of every precision a target judged, by sensor."""
        for sensor in sorted(self.precision):
            for interval, p in self.precision[sensor].items():
                if p.status is not None:
                    yield sensor, interval, p


def evaluate(
    units: Mapping[str, Mapping[str, Stream]],
    reference: Mapping[str, Stream],
    targets: TargetTable,
    *,
    intervals: Mapping[str, float] = INTERVALS,
    day_origin_s: float = 0.0,
) -> Evaluation:
    """Every sensor the reference and at least one unit both report, at every interval.

    ``day_origin_s`` moves the start of 24-hour intervals from 00:00 UTC (e.g. +18000 for
    days in UTC-05:00 local standard time); shorter intervals start on whole UTC hours.
    """
    sensors = sorted({s for streams in units.values() for s in streams} & set(reference))
    all_ts = [st.ts for streams in units.values() for st in streams.values() if st.ts.size]
    start = min(float(t.min()) for t in all_ts) if all_ts else math.nan
    end = max(float(t.max()) for t in all_ts) if all_ts else math.nan
    origins = {name: (day_origin_s if width >= 86400.0 else 0.0)
               for name, width in intervals.items()}
    ref_avg = {s: {name: interval_means(reference[s].ts, reference[s].values, width,
                                        origin_s=origins[name])
                   for name, width in intervals.items()} for s in reference}
    avgs: dict[str, dict[str, dict[str, Averages]]] = {}
    comps: dict[str, dict[str, dict[str, Comparison]]] = {}
    for device, streams in units.items():
        avgs[device] = {s: {name: interval_means(st.ts, st.values, width,
                                                 origin_s=origins[name])
                            for name, width in intervals.items()}
                        for s, st in streams.items()}
        comps[device] = {}
        for s in sensors:
            if s not in streams:
                continue
            comps[device][s] = {
                name: compare(avgs[device][s][name], ref_avg[s][name],
                              targets.get((s, name)),
                              intervals_between(start, end, width, origins[name]))
                for name, width in intervals.items()}
    prec = {s: {name: precision([avgs[d][s][name] for d in units if s in avgs[d]],
                                targets.get((s, name)))
                for name in intervals} for s in sensors}
    unit_of = {s: reference[s].unit for s in reference}
    return Evaluation(start, end, avgs, ref_avg, comps, prec, unit_of, origins, targets)


def intervals_between(start: float, end: float, width: float, origin: float) -> int:
    """Intervals of ``width`` (from ``origin``) that [start, end] touches."""
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        return 0
    return int(math.floor((end - origin) / width) - math.floor((start - origin) / width)) + 1


# --------------------------------------------------------------------------- diagnosis


def tolerance_from(targets: Targets, width_s: float, span_s: float) -> Tolerance:
    """The calibration core's tolerance for the EPA's targets at one interval.

    The core judges a mean difference (bias) where the EPA judges an intercept; the
    intercept's half-range is taken as the bias tolerance, the slope's as the gain's. A lag
    of more than one averaging interval is what the core may call a time lag."""
    inf = math.inf
    return Tolerance(
        bias=max(abs(b) for b in targets.intercept) if targets.intercept else inf,
        gain=(targets.slope[1] - targets.slope[0]) / 2 if targets.slope else inf,
        rmse=targets.rmse_max if targets.rmse_max is not None else inf,
        r2_min=targets.r2_min if targets.r2_min is not None else 0.0,
        lag_s=width_s,
        window_s=max(span_s, width_s),
        min_samples=MIN_PAIRS,
    )


def diagnose(
    ev: Evaluation,
    device: str,
    sensor: str,
    interval: str,
    quantity: str,
    unit_candidates: Sequence[tuple[str, float, float]] | None = None,
) -> StreamVerdict:
    """The calibration core's verdict and ranked causes for one unit's averages.

    The core sees the interval averages (the same data the targets were judged on) on the
    interval's grid, with the targets turned into its tolerance (``tolerance_from``), and
    judges all of them: a campaign's verdict is over the whole campaign, never its latest
    half (``latest_half=False``)."""
    targets = ev.targets.get((sensor, interval)) or Targets()
    width = INTERVALS[interval]
    origin = ev.origins.get(interval, 0.0)
    start = math.floor((ev.start - origin) / width) * width + origin
    end = (math.floor((ev.end - origin) / width) + 1) * width + origin
    spec = SensorSpec(sensor, quantity, ev.units[sensor], (-math.inf, math.inf), width,
                      tolerance_from(targets, width, end - start))
    a = ev.averages[device][sensor][interval]
    r = ev.reference[sensor][interval]
    return evaluate_stream(Series.of(a.start, a.mean), Series.of(r.start, r.mean), spec,
                           start, end, units=unit_candidates, latest_half=False)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What the calibration core says about a unit that missed a target."""

    verdict: StreamVerdict
    causes: tuple[Cause, ...]
    """The core's ranked causes; where its own checks pass (its bias and gain need
    confidence beyond their standard errors, and it judges R² only over a reference that
    varied enough), the causes its detectors read from the same data."""
    notes: tuple[str, ...] = ()


def diagnose_failure(
    ev: Evaluation,
    device: str,
    sensor: str,
    interval: str,
    quantity: str,
    unit_candidates: Sequence[tuple[str, float, float]] | None = None,
) -> Diagnosis:
    """``diagnose`` plus the detectors' reading where the core's tolerance checks pass."""
    targets = ev.targets.get((sensor, interval)) or Targets()
    verdict = diagnose(ev, device, sensor, interval, quantity, unit_candidates)
    notes: list[str] = []
    comparison = ev.comparisons[device][sensor][interval]
    tol = tolerance_from(targets, INTERVALS[interval], ev.end - ev.start)
    m = verdict.metrics
    if ("r2" in comparison.failed() and targets.r2_min is not None
            and not r2_judgeable(m.reference_std, tol)):
        need = tol.rmse * math.sqrt(tol.r2_min / (1.0 - tol.r2_min))
        notes.append(
            f"the reference varied little (std {m.reference_std:.3g} {ev.units[sensor]} over "
            f"{m.n} averages; R\u00b2 >= {targets.r2_min:g} is reachable by a unit within the "
            f"RMSE target only from a std of {need:.3g}): the R\u00b2 verdict reflects the "
            "narrow range of the test as much as the unit")
    if verdict.status != "pass" or verdict.causes:
        return Diagnosis(verdict, verdict.causes, tuple(notes))
    width = INTERVALS[interval]
    origin = ev.origins.get(interval, 0.0)
    start = math.floor((ev.start - origin) / width) * width + origin
    end = (math.floor((ev.end - origin) / width) + 1) * width + origin
    spec = SensorSpec(sensor, quantity, ev.units[sensor], (-math.inf, math.inf), width, tol)
    a = ev.averages[device][sensor][interval]
    r = ev.reference[sensor][interval]
    aligned = align(Series.of(a.start, a.mean), Series.of(r.start, r.mean), width, start, end)
    causes = detector_causes(aligned, spec, m, unit_candidates)
    notes.append("the core's own checks pass (bias and gain within tolerance beyond their "
                 "standard errors); causes are its detectors' reading of the same averages")
    return Diagnosis(verdict, causes, tuple(notes))
