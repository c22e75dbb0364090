"""The evaluation matrix's fleets: a seed -> a varied fleet, its files and its truth.

``plan(index, seed)`` draws one fleet's design (``FleetPlan``): the reporting interval
(10 s to 5 min), the reference's interval (the devices', a few times coarser, or hourly),
the kind of site (outdoor weather, an indoor room whose barometer moves about as much as
its noise, an air-quality site, a humid site whose hygrometers clip at 100 %RH), how
autocorrelated and how large the healthy devices' noise is (anywhere in the profile's
envelope), their static offsets (inside tolerance), a bias shared by one model, firmware
cohorts, gaps with their backlog delivered in a burst, and two to four faults from a menu
that cycles so that sixty fleets cover every kind. Each axis is a deterministic function
of the index so that the matrix covers all of them; the figures within an axis come from
the seed.

``profiles_text``/``references_text``/``config_text`` write the fleet as a user writes it
(``user_forms``: a reference model's profile without tolerance tables, ``quantity =
"[]"`` for a dimensionless quantity; without: forms every release accepts).
``generate(plan, catalog)`` is pure (a seeded numpy generator): the messages the fleet
sends and, per stream, the *truth*: the true values and every deterministic part of the
device's error at each nominal reading time, which ``auditd.sim.judge`` turns into a
label per audit window.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from auditd.domain.catalog import Catalog
from auditd.errors import ConfigError
from auditd.sim import simulate
from auditd.sim.judge import StreamTruth, ToleranceTruth
from auditd.sim.scenario import Fault, Scenario

DAY0 = 1_795_132_800.0
"""2026-11-20T00:00:00Z; a fleet starts 3 s past the hour one hour before its first audit,
so that the first audit sees about an hour of data (audits fall on multiples of the audit
interval since the epoch)."""

INTERVALS = (10, 15, 30, 60, 120, 180, 300)
SITE_KINDS = ("outdoor", "indoor", "air", "humid")
PHIS = (0.0, 0.6, 0.9, 0.97)
FAULT_MENU = ("offset_step", "gain", "stuck", "noise", "time_lag", "offset_ramp",
              "unit_mismatch", "dropout", "reference_fault", "clipping", "out_of_range",
              "shared_bias", "firmware_regression", "time_lag", "stuck", "gain")
"""The fault kinds, in the order fleets take them (three consecutive ones per fleet, the
next fleet starting three further on): every kind recurs every few fleets."""

SENSORS = {
    "outdoor": ("temperature", "humidity", "pressure"),
    "indoor": ("temperature", "humidity", "pressure"),
    "air": ("pm2_5", "co2"),
    "humid": ("temperature", "humidity"),
}


@dataclass(frozen=True, slots=True)
class QuantitySpec:
    """A sensor as the fleet's profiles declare it (canonical unit, tolerances)."""

    quantity: str
    unit: str
    range: tuple[float, float]
    bias: float
    gain: float
    rmse: float
    r2_min: float
    decimals: int
    mismatch_unit: str
    ref_noise: float


QUANTITIES = {
    "temperature": QuantitySpec("[temperature]", "degC", (-40.0, 85.0), 0.5, 0.05, 0.8, 0.9,
                                2, "degF", 0.03),
    "humidity": QuantitySpec("[]", "percent", (0.0, 100.0), 3.0, 0.05, 4.0, 0.8, 1,
                             "dimensionless", 0.3),
    "pressure": QuantitySpec("[pressure]", "hPa", (300.0, 1100.0), 1.0, 0.02, 1.5, 0.9, 2,
                             "kPa", 0.05),
    "pm2_5": QuantitySpec("[mass] / [length] ** 3", "ug/m^3", (0.0, 1000.0), 5.0, 0.35, 7.0,
                          0.7, 1, "mg/m^3", 0.5),
    "co2": QuantitySpec("[]", "ppm", (0.0, 10000.0), 45.0, 0.05, 50.0, 0.7, 0, "ppb", 2.0),
}

MARGIN = 0.25
"""The ground truth's margin (``auditd.sim.judge``): healthy streams are built with every
error at most (1 - MARGIN) of its tolerance."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    kind: str
    """A FAULT_MENU entry."""
    cause: str
    """The cause a right verdict names first (CONTRACT.md's vocabulary)."""
    devices: tuple[str, ...]
    sensor: str
    at_s: float
    magnitude: float
    ramp_s: float = 0.0
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    device: str
    at_s: float
    length_s: float
    delivered: bool
    """True: the device buffered and sent its backlog in a burst when the link came back;
    False: the readings were lost."""


@dataclass(frozen=True, slots=True)
class FleetPlan:
    name: str
    index: int
    seed: int
    site: str
    kind: str
    interval_s: int
    ref_interval_s: int
    duration_s: float
    window_s: float
    audit_interval_s: float
    start: float
    phi: float
    noise_level: tuple[float, float]
    """Healthy noise drawn in this share of the envelope left after bias and gain."""
    offset_level: float
    """Healthy static offsets drawn up to this share of the bias tolerance."""
    models: Mapping[str, int]
    faults: tuple[FaultPlan, ...] = ()
    shared_bias: tuple[str, str, float] | None = None
    """(model, sensor, bias in tolerances) shared by every device of the model, from the
    start (a design bias: inside tolerance is healthy, beyond is each device's offset)."""
    gaps: tuple[Gap, ...] = ()
    rollouts: tuple[tuple[tuple[str, ...], float, str], ...] = ()
    """Benign firmware roll-outs: (devices, at_s, version)."""
    hostile: int = 8

    @property
    def reference(self) -> str:
        return f"ref-{self.site}"

    def device_ids(self) -> list[tuple[str, str]]:
        """(device id, model) of the field devices, in a fixed order."""
        out: list[tuple[str, str]] = []
        for model, count in sorted(self.models.items()):
            out.extend((f"{model[-1]}x-{self.site}-{k:02d}", model) for k in range(1, count + 1))
        return out


def _duration(interval_s: int) -> float:
    """Long enough for several windows, short enough that a fleet replays in seconds:
    about 2 600 readings a device, 8 h to 4 days, whole hours."""
    return float(min(max(round(2600 * interval_s / 3600), 8), 96) * 3600)


def plan(index: int, seed: int = 1, max_hours: float | None = None) -> FleetPlan:
    """The index-th fleet of the matrix drawn with ``seed`` (``max_hours``: shorter, for a
    quick look; the same design otherwise)."""
    fleet_seed = seed * 1000 + index
    rng = np.random.default_rng(fleet_seed)
    interval = INTERVALS[index % len(INTERVALS)]
    kind = SITE_KINDS[(index + index // len(INTERVALS)) % len(SITE_KINDS)]
    duration = _duration(interval)
    if max_hours is not None:
        duration = min(duration, max(2.0, round(max_hours)) * 3600.0)
    kinds = [FAULT_MENU[(3 * index + k) % len(FAULT_MENU)] for k in range(3)]
    if index % 4 == 3:
        kinds = kinds[:2]
    ref_mode = ("same", "coarse", "hourly")[index % 3]
    if ref_mode == "hourly" and (interval < 60 or duration < 36 * 3600):
        ref_mode = "coarse"
    if "time_lag" in kinds:  # a lag of 2-10 intervals is resolvable against a reference
        ref_mode = "same"    # of the same interval only (elsewhere: healthy lags tested)
    ref_interval = {"same": interval, "coarse": min(interval * 6, 600),
                    "hourly": 3600}[ref_mode]
    if ref_mode == "hourly":
        window = 24 * 3600.0
    else:
        choices = [w for w in (3, 6, 12, 24) if w * 3600 <= duration / 2.5] or [3]
        window = float(choices[int(rng.integers(len(choices)))] * 3600)
    # about 24 audits a fleet (whole hours): the audits are most of a fleet's cost
    audit_interval = float(max(1, round(duration / 86400.0)) * 3600)
    two_models = "reference_fault" in kinds or "shared_bias" in kinds or index % 2 == 0
    models = ({"node-a": 4, "node-b": 3} if two_models else {"node-a": 6})
    name = f"f{index:02d}-{kind}-{interval}s"
    base = FleetPlan(
        name=name, index=index, seed=fleet_seed, site=f"s{index:02d}", kind=kind,
        interval_s=interval, ref_interval_s=ref_interval, duration_s=duration,
        window_s=window, audit_interval_s=audit_interval,
        start=DAY0 + audit_interval - 3600.0 + 3.0,
        phi=PHIS[index % len(PHIS)],
        noise_level=((0.2, 0.6), (0.5, 1.0))[(index // 2) % 2],
        offset_level=(0.3, 0.7)[(index // 3) % 2], models=models)
    devices = base.device_ids()
    faults: list[FaultPlan] = []
    used: set[str] = set()
    shared = None
    for fault_kind in kinds:
        made = _fault(fault_kind, base, devices, used, rng)
        if isinstance(made, tuple):
            shared = made
        else:
            faults.extend(made)
    if shared is None and index % 5 == 1:  # a shared bias inside tolerance: healthy
        sensor = SENSORS[kind][int(rng.integers(len(SENSORS[kind])))]
        shared = ("node-a", sensor, float(rng.uniform(0.5, 0.7)) * _sign(rng))
    free = [d for d, _ in devices if d not in used]
    gaps = []
    if index % 3 == 0 and free:
        dev = free[-1]
        used.add(dev)
        gaps.append(Gap(dev, duration * float(rng.uniform(0.3, 0.6)),
                        float(rng.uniform(1, 3)) * 3600, delivered=True))
        gaps.append(Gap(dev, duration * float(rng.uniform(0.7, 0.85)),
                        float(rng.uniform(0.3, 0.6)) * 3600, delivered=False))
    rollouts = []
    free = [d for d, _ in devices if d not in used]
    if index % 4 == 2 and len(free) >= 2:
        rollouts.append((tuple(free[:2]), duration * 0.4, "1.1.0"))
    return replace(base, faults=tuple(faults), shared_bias=shared, gaps=tuple(gaps),
                   rollouts=tuple(rollouts))


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _pick(devices: Sequence[tuple[str, str]], used: set[str], rng: np.random.Generator,
          model: str | None = None) -> str:
    free = [d for d, m in devices if d not in used and (model is None or m == model)]
    if not free:
        free = [d for d, m in devices if model is None or m == model]
    dev = free[int(rng.integers(len(free)))]
    used.add(dev)
    return dev


def _fault(kind: str, fleet: FleetPlan, devices: Sequence[tuple[str, str]], used: set[str],
           rng: np.random.Generator) -> list[FaultPlan] | tuple[str, str, float]:
    sensors = SENSORS[fleet.kind]
    duration = fleet.duration_s
    at = duration * float(rng.uniform(0.35, 0.6))
    sensor = sensors[int(rng.integers(len(sensors)))]
    q = QUANTITIES[sensor]
    if kind == "offset_step":
        return [FaultPlan(kind, "offset_drift", (_pick(devices, used, rng),), sensor, at,
                          float(rng.uniform(2.0, 4.0)) * q.bias * _sign(rng))]
    if kind == "offset_ramp":
        at = duration * float(rng.uniform(0.15, 0.3))
        return [FaultPlan(kind, "offset_drift", (_pick(devices, used, rng),), sensor, at,
                          float(rng.uniform(3.0, 5.0)) * q.bias * _sign(rng),
                          ramp_s=(duration - at) * float(rng.uniform(0.5, 0.8)))]
    if kind == "gain":
        swing = "co2" if fleet.kind == "air" else "temperature"
        size = float(rng.uniform(3.0, 6.0)) * QUANTITIES[swing].gain
        return [FaultPlan(kind, "gain_drift", (_pick(devices, used, rng),), swing, at,
                          min(size, 0.9) * _sign(rng))]
    if kind == "stuck":
        return [FaultPlan(kind, "stuck", (_pick(devices, used, rng),), sensor, at, 0.0)]
    if kind == "noise":
        return [FaultPlan(kind, "noise", (_pick(devices, used, rng),), sensor, at,
                          float(rng.uniform(2.0, 3.0)) * q.rmse)]
    if kind == "time_lag":
        swing = "co2" if fleet.kind == "air" else "temperature"
        lag = int(rng.integers(2, 11)) * fleet.interval_s
        return [FaultPlan(kind, "time_lag", (_pick(devices, used, rng),), swing, at,
                          float(lag))]
    if kind == "unit_mismatch":
        target = "pm2_5" if fleet.kind == "air" else "temperature"
        return [FaultPlan(kind, "unit_mismatch", (_pick(devices, used, rng),), target, at,
                          0.0, unit=QUANTITIES[target].mismatch_unit)]
    if kind == "dropout":
        return [FaultPlan(kind, "dropout", (_pick(devices, used, rng),), sensor,
                          duration * float(rng.uniform(0.2, 0.4)), 0.97)]
    if kind == "out_of_range":
        return [FaultPlan(kind, "out_of_range", (_pick(devices, used, rng),), sensor, at,
                          float(rng.uniform(0.03, 0.15)))]
    if kind == "clipping":
        if fleet.kind == "air":  # a negative offset pinned at zero at low concentrations
            return [FaultPlan(kind, "offset_drift", (_pick(devices, used, rng),), "pm2_5", at,
                              -float(rng.uniform(2.0, 3.0)) * QUANTITIES["pm2_5"].bias)]
        return [FaultPlan(kind, "offset_drift", (_pick(devices, used, rng),), "humidity", at,
                          float(rng.uniform(3.0, 5.0)) * QUANTITIES["humidity"].bias)]
    if kind == "reference_fault":
        return [FaultPlan(kind, "reference_fault", (fleet.reference,), sensor, at,
                          float(rng.uniform(2.5, 4.0)) * q.bias * _sign(rng))]
    if kind == "shared_bias":
        # beyond tolerance: a model's design bias, each device's offset (never the reference)
        return ("node-a", sensor, float(rng.uniform(2.0, 3.5)) * _sign(rng))
    if kind == "firmware_regression":
        cohort = tuple(_pick(devices, used, rng, model="node-a") for _ in range(3))
        return [FaultPlan(kind, "firmware_regression", tuple(dict.fromkeys(cohort)), sensor,
                          at, float(rng.uniform(2.5, 4.0)) * q.bias * _sign(rng))]
    raise ValueError(f"unknown fault kind {kind!r}")


# --------------------------------------------------------------------------- the files


def _toml_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def profiles_text(fleet: FleetPlan, *, user_forms: bool = True) -> dict[str, str]:
    """model -> its profile (TOML), as the fleet's owner writes it."""
    out = {}
    sensors = SENSORS[fleet.kind]
    window_h = f"{fleet.window_s / 3600:g}h"
    min_samples = max(10, int(0.75 * 3600 / fleet.interval_s))
    for model in sorted(fleet.models):
        lines = [f'model = "{model}"', 'allowed_firmware = [">=1.0,<3"]',
                 "calibration_interval_days = 365", ""]
        for sensor in sensors:
            q = QUANTITIES[sensor]
            lines += [f"[sensors.{sensor}]", *_sensor_lines(q, fleet.interval_s, user_forms),
                      f"[sensors.{sensor}.tolerance]", f"bias = {q.bias}", f"gain = {q.gain}",
                      f"rmse = {q.rmse}", f"r2_min = {q.r2_min}",
                      f"lag_s = {fleet.interval_s}", f'window = "{window_h}"',
                      f"min_samples = {min_samples}", ""]
        out[model] = "\n".join(lines)
    ref = ['model = "ref-grade"', ""]
    for sensor in sensors:
        q = QUANTITIES[sensor]
        ref += [f"[sensors.{sensor}]", *_sensor_lines(q, fleet.ref_interval_s, user_forms)]
        if not user_forms:  # what older releases demand of every profile
            ref += [f"[sensors.{sensor}.tolerance]", f"bias = {q.bias / 4:g}",
                    f"gain = {q.gain / 2:g}", f"rmse = {q.rmse / 4:g}",
                    f'window = "{window_h}"', "min_samples = 3"]
        ref.append("")
    out["ref-grade"] = "\n".join(ref)
    return out


def _sensor_lines(q: QuantitySpec, interval_s: int, user_forms: bool) -> list[str]:
    quantity = q.quantity if user_forms or q.quantity != "[]" else "dimensionless"
    return [f'quantity = "{quantity}"', f'unit = "{q.unit}"',
            f"range = [{q.range[0]}, {q.range[1]}]", f"interval_s = {interval_s}"]


def references_text(fleet: FleetPlan) -> str:
    sensors = SENSORS[fleet.kind]
    uncertainty = ", ".join(f"{s} = {2 * QUANTITIES[s].ref_noise:g}" for s in sensors)
    globs = sorted({f"{m[-1]}x-{fleet.site}-*" for m in fleet.models})
    return "\n".join([
        "[[reference]]", f'id = "{fleet.reference}"', f'site = "{fleet.site}"',
        f"serves = {_toml_list(globs)}", f"sensors = {_toml_list(sensors)}",
        'model = "ref-grade"', f'certificate = "SIM-{fleet.name}"',
        'calibration_due = "2030-01-01"', f"uncertainty = {{{uncertainty}}}", ""])


def config_text(fleet: FleetPlan, *, profiles_dir: str, references_dir: str,
                store: str) -> str:
    return "\n".join([
        f'site = "{fleet.site}"', 'gateway = "matrix"',
        f"profiles_dir = {_json(profiles_dir)}", f"references_dir = {_json(references_dir)}",
        "[audit]", f'interval = "{fleet.audit_interval_s / 3600:g}h"',
        "[store]", f"path = {_json(store)}", 'synchronous = "normal"', ""])


def _json(text: str) -> str:
    return json.dumps(text)


# --------------------------------------------------------------------------- the signals


def _phi(step_s: float, tau_s: float) -> float:
    return math.exp(-step_s / tau_s)


def truth_signals(fleet: FleetPlan, rng: np.random.Generator,
                  t: np.ndarray) -> dict[str, np.ndarray]:
    """The true value of each of the site's quantities at the times ``t`` (a regular grid)."""
    ar1 = simulate._ar1
    step = float(t[1] - t[0]) if len(t) > 1 else 60.0
    n = len(t)
    hours = (t % 86400.0) / 3600.0
    day = np.sin(2 * np.pi * (hours - 9.0) / 24.0)
    fast_t = ar1(rng, n, _phi(step, 240.0), 0.25)  # sun and cloud: minutes
    weather = ar1(rng, n, _phi(step, 2e5), 2.5)
    out: dict[str, np.ndarray] = {}
    if fleet.kind == "indoor":
        out["temperature"] = 21.0 + 0.8 * day + ar1(rng, n, _phi(step, 7200.0), 0.4) \
            + 0.5 * fast_t
        out["humidity"] = np.clip(45.0 + ar1(rng, n, _phi(step, 4e4), 5.0)
                                  - 2.0 * (out["temperature"] - 21.0), 5, 100)
        # a room barometer: about 1 hPa over hours, the size of a healthy unit's noise
        out["pressure"] = 1008.0 + ar1(rng, n, _phi(step, 3e4), 0.5) \
            + 0.3 * np.sin(4 * np.pi * hours / 24.0)
        return out
    temperature = 9.0 + 5.0 * day + weather + fast_t
    out["temperature"] = temperature
    base_rh = 88.0 if fleet.kind == "humid" else 68.0
    out["humidity"] = np.clip(base_rh - 3.0 * (temperature - 9.0)
                              + ar1(rng, n, _phi(step, 4e4), 4.0), 8, 100)
    out["pressure"] = 1012.0 + ar1(rng, n, _phi(step, 3e5), 6.0) \
        + 0.6 * np.sin(4 * np.pi * hours / 24.0) + ar1(rng, n, _phi(step, 600.0), 0.1)
    traffic = np.exp(-((hours - 8.0) ** 2) / 3.0) + np.exp(-((hours - 18.0) ** 2) / 4.0)
    out["co2"] = 425.0 + 70.0 * traffic + ar1(rng, n, _phi(step, 4e4), 25.0) \
        + ar1(rng, n, _phi(step, 300.0), 15.0)
    out["pm2_5"] = np.clip(4.0 + 8.0 * traffic + 5.0 * np.exp(ar1(rng, n, _phi(step, 4e4), 0.6))
                           + ar1(rng, n, _phi(step, 300.0), 1.5), 0.5, None)
    return out


@dataclass(frozen=True, slots=True)
class FleetSimulation:
    messages: tuple[simulate.Message, ...]
    streams: tuple[StreamTruth, ...]
    plan: FleetPlan
    """The plan the fleet came from (its faults and who they hit)."""


def _as_fault(fp: FaultPlan) -> Fault:
    cause = {"offset_drift": "offset_drift", "firmware_regression": "offset_drift",
             "reference_fault": "offset_drift"}.get(fp.cause, fp.cause)
    return Fault(cause, fp.devices, fp.sensor, fp.at_s, fp.magnitude, fp.ramp_s, fp.unit)


def generate(fleet: FleetPlan, catalog: Catalog) -> FleetSimulation:
    """The fleet's messages (arrival order) and its per-stream truth."""
    rng = np.random.default_rng(fleet.seed)
    start, end = fleet.start, fleet.start + fleet.duration_s
    grid = np.arange(start, end, float(fleet.interval_s))
    air = truth_signals(fleet, rng, grid)
    sensors = SENSORS[fleet.kind]
    ids = [(fleet.reference, "ref-grade"), *fleet.device_ids()]
    devices = []
    for k, (dev_id, model) in enumerate(ids):
        profile = catalog.profile(model)
        if profile is None:
            raise ConfigError(fleet.name, "models", f"no profile for {model!r}")
        # sampling instants a little apart (at most a fifth of an interval): well inside
        # a lag tolerance of one interval
        spread = max(1, int(0.2 * fleet.interval_s))
        devices.append(simulate.Device(fleet.site, dev_id, model, profile, (7 * k) % spread))
    known = {d.id: d for d in devices}
    messages: list[simulate.Message] = []
    streams: list[StreamTruth] = []
    firmware = {d.id: "1.0.0" for d in devices}
    ref_truth: dict[str, StreamTruth] = {}
    for dev in devices:
        drng = np.random.default_rng([fleet.seed, len(streams), 7])
        is_ref = dev.id == fleet.reference
        messages.append(simulate._meta(dev, start - 120 + dev.offset_s, firmware[dev.id], drng))
        columns = {}
        for sensor in sensors:
            q = QUANTITIES[sensor]
            stream = _stream(fleet, dev, sensor, q, is_ref, grid, air[sensor], drng,
                             ref_truth.get(sensor))
            streams.append(stream)
            if is_ref:
                ref_truth[sensor] = stream
            columns[sensor] = (stream.t + dev.offset_s, stream.sent, ~stream.lost)
        dev_messages = list(simulate._telemetry(dev, columns, None, drng))  # type: ignore[arg-type]
        messages.extend(_delivered(dev_messages, fleet, dev.id))
    for fp in fleet.faults:
        if fp.cause == "firmware_regression":
            messages.extend(simulate._rollout(known, fp.devices, start + fp.at_s - 120,
                                              "2.0.0", firmware))
    for devs, at, version in fleet.rollouts:
        messages.extend(simulate._rollout(known, devs, start + at, version, firmware))
    scenario = Scenario(seed=fleet.seed, start=start, duration_s=fleet.duration_s,
                        sites=(), hostile=fleet.hostile)
    messages.extend(simulate._hostile(scenario, devices[1:], np.random.default_rng(
        [fleet.seed, 99])))
    messages.sort(key=lambda m: (m.received_at, m.topic))
    return FleetSimulation(tuple(messages), tuple(streams), fleet)


def _delivered(messages: list[simulate.Message], fleet: FleetPlan,
               dev_id: str) -> list[simulate.Message]:
    """Readings taken during a delivered gap arrive together when the link is back."""
    out: list[simulate.Message] = []
    for m in messages:
        received = m.received_at
        ts = m.payload["ts"] if isinstance(m.payload, dict) else None
        for gap in fleet.gaps:
            if gap.device == dev_id and gap.delivered and ts is not None \
                    and fleet.start + gap.at_s <= ts < fleet.start + gap.at_s + gap.length_s:
                received = fleet.start + gap.at_s + gap.length_s + 5.0 + 0.001 * len(out)
        out.append(m if received == m.received_at else replace(m, received_at=received))
    return out


def _stream(fleet: FleetPlan, dev: simulate.Device, sensor: str, q: QuantitySpec,
            is_ref: bool, grid: np.ndarray, true_fine: np.ndarray, rng: np.random.Generator,
            reference: StreamTruth | None) -> StreamTruth:
    """One stream's readings and the truth of every deterministic part of its error."""
    step = fleet.ref_interval_s if is_ref else fleet.interval_s
    every = max(1, round(step / fleet.interval_s))
    idx = np.arange(0, len(grid), every)
    t = grid[idx]
    if every > 1:  # an averaging instrument: the mean over its interval, labelled at its start
        sums = np.add.reduceat(true_fine, idx)
        counts = np.diff(np.append(idx, len(grid)))
        x = sums / counts
    else:
        x = true_fine[idx].copy()
    n = len(t)
    tol = ToleranceTruth(q.bias, q.gain, q.rmse, float(fleet.interval_s), fleet.window_s,
                         max(10, int(0.75 * 3600 / fleet.interval_s)))
    offset = np.zeros(n)
    gain_extra = np.zeros(n)
    if is_ref:
        static_bias, static_gain, noise_std = 0.0, 0.0, q.ref_noise
        noise = rng.normal(0.0, noise_std, n)
    else:
        static_bias = float(rng.uniform(-1, 1)) * fleet.offset_level * q.bias
        static_gain = float(rng.uniform(-0.5, 0.5)) * q.gain
        if fleet.shared_bias is not None and fleet.shared_bias[0] == dev.model \
                and fleet.shared_bias[1] == sensor:
            static_bias = fleet.shared_bias[2] * q.bias
        spread = float(np.std(x))
        room = ((1 - MARGIN) * q.rmse) ** 2 - min(static_bias, (1 - MARGIN) * q.bias) ** 2 \
            - (static_gain * spread) ** 2
        envelope = math.sqrt(max(room, (0.05 * q.rmse) ** 2))
        noise_std = float(rng.uniform(*fleet.noise_level)) * envelope
        noise = simulate._ar1(rng, n, fleet.phi, noise_std) if fleet.phi > 0 \
            else rng.normal(0.0, noise_std, n)
    mean = float(np.mean(x))
    clean = mean + (x - mean) * (1 + static_gain) + static_bias
    values = clean + noise
    faults = [fp for fp in fleet.faults if dev.id in fp.devices and fp.sensor == sensor]
    stuck = np.zeros(n, dtype=bool)
    lag = np.zeros(n)
    lag_effect = np.zeros(n)
    extra_noise = np.zeros(n)
    unit = np.zeros(n, dtype=bool)
    oor = np.zeros(n, dtype=bool)
    lost = np.zeros(n, dtype=bool)
    onset_of = {}
    for fp in faults:
        onset = fleet.start + fp.at_s
        onset_of[fp.cause] = onset
        after = t >= onset
        ramp = np.clip((t - onset) / fp.ramp_s, 0, 1) * after if fp.ramp_s > 0 \
            else after.astype(float)
        spec = dev.profile.sensors[sensor]
        if fp.cause in ("offset_drift", "firmware_regression", "reference_fault"):
            offset += fp.magnitude * ramp
            values = values + fp.magnitude * ramp
        elif fp.cause == "gain_drift":
            gain_extra += fp.magnitude * ramp
            values = np.where(after, mean + (values - mean) * (1 + fp.magnitude * ramp), values)
        elif fp.cause == "time_lag":
            shift = max(1, round(fp.magnitude / step))
            lagged_x = np.concatenate([np.full(shift, x[0]), x[:-shift]])
            lag_effect = np.where(after, x - lagged_x, lag_effect)
            lag = np.where(after, shift * step, lag)
            values, _ = simulate.apply_fault(_as_fault(fp), spec, t, values, onset, rng, mean)
        elif fp.cause == "noise":
            extra_noise = np.where(after, fp.magnitude, extra_noise)
            values, _ = simulate.apply_fault(_as_fault(fp), spec, t, values, onset, rng, mean)
        elif fp.cause == "stuck":
            stuck |= after
            values, _ = simulate.apply_fault(_as_fault(fp), spec, t, values, onset, rng, mean)
    lo, hi = q.range
    values = np.clip(values, lo, hi)  # a device saturates at its full scale
    for fp in faults:
        onset = fleet.start + fp.at_s
        after = t >= onset
        spec = dev.profile.sensors[sensor]
        if fp.cause == "unit_mismatch":
            unit |= after
            values, _ = simulate.apply_fault(_as_fault(fp), spec, t, values, onset, rng, mean)
        elif fp.cause == "out_of_range":
            before = values.copy()
            values, _ = simulate.apply_fault(_as_fault(fp), spec, t, values, onset, rng, mean)
            oor |= values != before
        elif fp.cause == "dropout":
            _, kept = simulate.apply_fault(_as_fault(fp), spec, t, values, onset, rng, mean)
            lost |= ~kept
    received = t + dev.offset_s + 1.0
    for gap in fleet.gaps:
        if gap.device == dev.id:
            begin = fleet.start + gap.at_s
            inside = (t >= begin) & (t < begin + gap.length_s)
            if gap.delivered:
                received = np.where(inside, begin + gap.length_s + 5.0, received)
            else:
                lost |= inside
    places = q.decimals
    return StreamTruth(
        site=fleet.site, device=dev.id, sensor=sensor, model=dev.model, reference=is_ref,
        tolerance=tol, t=t, x=x, sent=np.round(values, places), static_bias=static_bias,
        static_gain=static_gain, noise_std=noise_std,
        noise_phi=0.0 if is_ref else fleet.phi, offset=offset, gain_extra=gain_extra,
        stuck=stuck, lag_s=lag, lag_effect=lag_effect, extra_noise=extra_noise,
        unit_mismatch=unit, out_of_range=oor, lost=lost, received=received,
        onsets=onset_of, reference_stream=reference, range=q.range,
        reference_interval_s=float(fleet.ref_interval_s))
