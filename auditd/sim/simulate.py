"""A synthetic fleet with known faults: scenario (data) -> recorded messages + truth.

Before a team trusts an audit it wants to watch it catch faults whose truth is known. This
module turns a *scenario* (TOML or JSON: sites, devices of the shipped profiles, faults at
chosen times and magnitudes, firmware rollouts, hostile messages) into the messages a real
fleet would send, and a *truth* record of what was injected, so that ``evaluate`` can
score the findings of a replay or of the live daemon against it.

Pure: ``generate(scenario, catalog)`` (the scenario: ``auditd.sim.scenario``) is a function
of its inputs (a seeded numpy generator; the same scenario gives the same messages byte for
byte). Writing a replay file
and publishing over MQTT are thin adapters at the bottom (``write_recording``,
``publish_live``).

Signals: one "true" atmosphere per site (diurnal cycles, a weather process, autocorrelated
wander); the reference reads it with its certificate's small noise, each device with a
small calibration error well inside its tolerance and AR(1) noise, so that a healthy
device passes. Faults change a device's (or the reference's) readings from their onset on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from auditd.domain.catalog import Catalog
from auditd.domain.validate import parse_timestamp
from auditd.errors import ConfigError
from auditd.model import MeasuredSensor, Profile, SensorSpec, iso
from auditd.sim.scenario import Fault, Scenario
from auditd.units import converter

DEFAULT_MAGNITUDE_TOL = {"offset_drift": 3.0, "firmware_regression": 3.0,
                         "reference_fault": 3.0, "noise": 2.5}
"""Magnitudes left out of a fault, in tolerances of the sensor (bias or rmse)."""

DEFAULT_MAGNITUDE = {"gain_drift": 0.25, "unit_mismatch": 0.0, "stuck": 0.0, "dropout": 0.99,
                     "time_lag": 1800.0, "out_of_range": 0.05, "clipping": 0.3}
"""Other defaults: gain error (fraction), dropout share, lag (s), share out of range, share
of the readings after the onset pinned at full scale."""

MODEL_PREFIX = {"th-200": "th", "pm-25": "pm", "co2-ndir": "co2"}
"""Device ids are ``{prefix}-{site}-{nn}``, the shape the shipped references' globs serve."""


@dataclass(frozen=True, slots=True)
class Message:
    """One recorded MQTT message; ``payload`` is JSON-able, or ``str`` for raw text."""

    topic: str
    received_at: float
    payload: Any
    retain: bool = False

    def raw(self) -> bytes:
        if isinstance(self.payload, str):
            return self.payload.encode()
        return json.dumps(self.payload, separators=(",", ":")).encode()

    def to_line(self) -> str:
        return json.dumps({"topic": self.topic, "received_at": round(self.received_at, 3),
                           "payload": self.payload}, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Simulation:
    messages: tuple[Message, ...]
    truth: Mapping[str, Any]
    references: tuple[Mapping[str, Any], ...]


# --------------------------------------------------------------------------- the atmosphere


def _ar1(rng: np.random.Generator, n: int, phi: float, std: float) -> np.ndarray:
    """A stationary AR(1) series with the given lag-1 correlation and standard deviation."""
    from scipy.signal import lfilter  # scipy on the first simulation, not at CLI start

    eps = rng.normal(0.0, std * math.sqrt(1 - phi * phi), n)
    eps[0] = rng.normal(0.0, std)
    return np.asarray(lfilter([1.0], [1.0, -phi], eps))


def atmosphere(rng: np.random.Generator, t: np.ndarray) -> dict[str, np.ndarray]:
    """The true values of every shipped quantity at one site at the times ``t``."""
    n = len(t)
    hours = (t % 86400.0) / 3600.0
    day = np.sin(2 * np.pi * (hours - 9.0) / 24.0)
    weather = _ar1(rng, n, 0.9995, 2.5)
    temperature = 9.0 + 5.0 * day + weather + _ar1(rng, n, 0.98, 0.15)
    humidity = np.clip(68.0 - 3.0 * (temperature - 9.0) + _ar1(rng, n, 0.999, 4.0), 8, 99)
    pressure = (1012.0 + _ar1(rng, n, 0.9999, 6.0) + 0.6 * np.sin(4 * np.pi * hours / 24.0)
                + _ar1(rng, n, 0.99, 0.1))
    traffic = np.exp(-((hours - 8.0) ** 2) / 3.0) + np.exp(-((hours - 18.0) ** 2) / 4.0)
    co2 = 425.0 + 70.0 * traffic + _ar1(rng, n, 0.999, 25.0) + _ar1(rng, n, 0.9, 4.0)
    pm2_5 = np.clip(9.0 + 8.0 * traffic + 5.0 * np.exp(_ar1(rng, n, 0.9995, 0.6)) - 5.0, 1, None)
    return {"temperature": temperature, "humidity": humidity, "pressure": pressure,
            "co2": co2, "pm2_5": pm2_5, "pm1": 0.72 * pm2_5, "pm10": 1.7 * pm2_5 + 3.0}


REFERENCE_NOISE = {"temperature": 0.03, "humidity": 0.3, "pressure": 0.05, "co2": 2.0,
                   "pm2_5": 0.5}
DECIMALS = {"temperature": 2, "humidity": 1, "pressure": 2, "co2": 0, "pm2_5": 1, "pm1": 1,
            "pm10": 1}


# --------------------------------------------------------------------------- faults


def _magnitude(fault: Fault, spec: MeasuredSensor) -> float:
    if fault.magnitude is not None:
        return fault.magnitude
    if not isinstance(spec, SensorSpec):
        # A default magnitude is in tolerances; a sensor without one (a reference's
        # own profile) must be given its fault's magnitude.
        raise ValueError(f"{fault.cause} on {spec.name}: no magnitude and no tolerance "
                         "to derive one from")
    if fault.cause == "noise":
        return DEFAULT_MAGNITUDE_TOL["noise"] * spec.tolerance.rmse
    if fault.cause in DEFAULT_MAGNITUDE_TOL:
        return DEFAULT_MAGNITUDE_TOL[fault.cause] * spec.tolerance.bias
    return DEFAULT_MAGNITUDE[fault.cause]


def _resolved(fault: Fault, known: Mapping[str, Device], devices: Sequence[Device]) -> Fault:
    """The fault with its magnitude filled in: a reference's fault in tolerances of the
    devices it serves (the reference's own tolerance is far tighter than theirs)."""
    if fault.magnitude is not None:
        return fault
    spec = _audited(known[fault.devices[0]].profile, fault.sensor)
    if fault.cause == "reference_fault":
        site = known[fault.devices[0]].site
        served = [own.tolerance.bias for d in devices
                  if d.site == site and d.id not in fault.devices
                  and (own := d.profile.audited(fault.sensor)) is not None]
        if served:
            return replace(fault, magnitude=DEFAULT_MAGNITUDE_TOL["reference_fault"]
                           * max(served))
    return replace(fault, magnitude=_magnitude(fault, spec))


def apply_fault(fault: Fault, spec: MeasuredSensor, t: np.ndarray, values: np.ndarray,
                onset: float, rng: np.random.Generator,
                site_mean: float) -> tuple[np.ndarray, np.ndarray]:
    """(values, kept): the stream as the faulty instrument reports it, and which of its
    readings it sends at all (a dropout sends fewer)."""
    after = t >= onset
    out = values.copy()
    kept = np.ones(len(t), dtype=bool)
    size = _magnitude(fault, spec)
    ramp = np.clip((t - onset) / fault.ramp_s, 0, 1) if fault.ramp_s > 0 else after
    if fault.cause in ("offset_drift", "reference_fault", "firmware_regression"):
        out = out + size * ramp * after
    elif fault.cause == "gain_drift":
        pivot = site_mean if fault.pivot is None else fault.pivot
        out = np.where(after, pivot + (out - pivot) * (1 + size * ramp), out)
    elif fault.cause == "unit_mismatch":
        conv = converter(spec.unit, fault.unit or _mismatch_unit(spec))
        out = np.where(after, out * conv.scale + conv.offset, out)
    elif fault.cause == "stuck":
        first = int(np.argmax(after)) if after.any() else len(t) - 1
        out = np.where(after, out[first], out)
    elif fault.cause == "noise":
        out = out + after * rng.normal(0, size, len(t))
    elif fault.cause == "dropout":
        kept = ~(after & (rng.random(len(t)) < size))
    elif fault.cause == "time_lag":
        step = float(np.median(np.diff(t))) if len(t) > 1 else 60.0
        shift = max(1, round(size / step))
        lagged = np.concatenate([np.full(shift, out[0]), out[:-shift]])
        out = np.where(after, lagged, out)
    elif fault.cause == "clipping" and after.any():
        # the device saturates: its full scale is where the top share of its readings were
        full_scale = float(np.quantile(out[after], 1.0 - size))
        out = np.where(after, np.minimum(out, full_scale), out)
    elif fault.cause == "out_of_range":
        lo, hi = spec.range
        bad = after & (rng.random(len(t)) < size)
        out = np.where(bad, hi + 0.5 * (hi - lo), out)
    return out, kept


def _mismatch_unit(spec: MeasuredSensor) -> str:
    return {"degC": "degF", "hPa": "kPa", "percent": "dimensionless", "ppm": "ppb",
            "ug/m^3": "mg/m^3"}.get(spec.unit, spec.unit)


# --------------------------------------------------------------------------- the fleet


@dataclass(frozen=True, slots=True)
class Device:
    site: str
    id: str
    model: str
    profile: Profile
    offset_s: int


def fleet(scenario: Scenario, catalog: Catalog) -> list[Device]:
    """Every instrument of the scenario, references first, in a fixed order."""
    out = []
    for site in scenario.sites:
        ref = catalog.reference(site.reference)
        ref_model = (ref.model if ref and ref.model else "ref-station")
        out.append(Device(site.name, site.reference, ref_model, _profile(catalog, ref_model,
                                                                          scenario), 1))
        for model, count in sorted(site.devices.items()):
            prefix = MODEL_PREFIX.get(model, model.split("-")[0])
            for k in range(1, count + 1):
                out.append(Device(site.name, f"{prefix}-{site.name}-{k:02d}", model,
                                  _profile(catalog, model, scenario), 3 + (7 * k) % 50))
    return out


def _audited(profile: Profile, sensor: str) -> SensorSpec:
    """The sensor's spec with its tolerance, which the simulator sizes noise and faults
    by (the shipped profiles give every sensor one, the reference station's too)."""
    spec = profile.audited(sensor)
    if spec is None:
        raise ConfigError(profile.source or profile.model, f"sensors.{sensor}.tolerance",
                          "the simulator sizes noise and faults by the tolerance: give "
                          "this sensor one")
    return spec


def _profile(catalog: Catalog, model: str, scenario: Scenario) -> Profile:
    profile = catalog.profile(model)
    if profile is None:
        raise ConfigError(scenario.source, "site.devices",
                          f"no device profile for model {model!r} "
                          f"(known: {', '.join(sorted(catalog.profiles))})")
    return profile


def references_for(scenario: Scenario, catalog: Catalog) -> tuple[Mapping[str, Any], ...]:
    """Reference entries (CONTRACT.md form) for sites the catalog does not know yet, so that
    a scenario with new sites can be replayed with ``--references`` pointing at them."""
    out = []
    for site in scenario.sites:
        if catalog.reference(site.reference) is not None:
            continue
        sensors = sorted(_profile(catalog, "ref-station", scenario).sensors)
        out.append({"id": site.reference, "site": site.name, "model": "ref-station",
                    "serves": [f"{p}-{site.name}-*" for p in sorted(set(MODEL_PREFIX.values()))],
                    "sensors": sensors, "certificate": f"SIM-{site.name}",
                    "calibration_due": "2030-01-01",
                    "uncertainty": {s: 2 * REFERENCE_NOISE.get(s, 0.1) for s in sensors}})
    return tuple(out)


def generate(scenario: Scenario, catalog: Catalog) -> Simulation:
    """The scenario's messages in arrival order and the truth of what was injected."""
    devices = fleet(scenario, catalog)
    known = {d.id: d for d in devices}
    for i, fault in enumerate(scenario.faults):
        for dev_id in fault.devices:
            if dev_id not in known:
                raise ConfigError(scenario.source, f"fault[{i}].devices",
                                  f"{dev_id!r} is not in the fleet "
                                  f"({', '.join(sorted(known))})")
            if fault.sensor not in known[dev_id].profile.sensors:
                raise ConfigError(scenario.source, f"fault[{i}].sensor",
                                  f"{known[dev_id].model} has no sensor {fault.sensor!r}")
    scenario = replace(scenario, faults=tuple(_resolved(f, known, devices)
                                              for f in scenario.faults))
    root = np.random.SeedSequence(scenario.seed)
    site_seeds = dict(zip([s.name for s in scenario.sites],
                          root.spawn(len(scenario.sites)), strict=True))
    messages: list[Message] = []
    streams: list[dict[str, Any]] = []
    faults_truth: list[dict[str, Any]] = []
    firmware: dict[str, str] = {d.id: scenario.firmware.get(d.model, "1.0.0") for d in devices}
    end = scenario.start + scenario.duration_s
    for site in scenario.sites:
        seed = site_seeds[site.name]
        site_rng = np.random.default_rng(seed)
        t = np.arange(scenario.start, end, 60.0)
        air = atmosphere(site_rng, t)
        members = [d for d in devices if d.site == site.name]
        dev_seeds = seed.spawn(len(members))
        for dev, dseed in zip(members, dev_seeds, strict=True):
            rng = np.random.default_rng(dseed)
            is_ref = dev.id == site.reference
            messages.append(_meta(dev, scenario.start - 120 + dev.offset_s,
                                  firmware[dev.id], rng))
            columns: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
            for sensor in sorted(dev.profile.sensors):
                if sensor not in air:
                    continue
                spec = _audited(dev.profile, sensor)
                step = max(60.0, spec.interval_s)
                idx = np.arange(0, len(t), int(step // 60))
                ts = t[idx] + dev.offset_s
                true = air[sensor][idx]
                if is_ref:
                    noise = REFERENCE_NOISE.get(sensor, 0.01 * spec.tolerance.bias)
                    values = true + rng.normal(0, noise, len(idx))
                else:
                    bias = rng.uniform(-0.2, 0.2) * spec.tolerance.bias
                    gain = 1 + rng.uniform(-0.2, 0.2) * spec.tolerance.gain
                    mean = float(np.mean(air[sensor]))
                    values = (mean + (true - mean) * gain + bias
                              + _ar1(rng, len(idx), 0.7, 0.2 * spec.tolerance.rmse))
                values = np.clip(values, *spec.range)  # a healthy sensor saturates
                kept = np.ones(len(idx), dtype=bool)
                for fault in scenario.faults:
                    if dev.id in fault.devices and fault.sensor == sensor:
                        onset = scenario.start + fault.at_s
                        values, k = apply_fault(fault, spec, ts, values, onset, rng,
                                                float(np.mean(air[sensor])))
                        kept &= k
                columns[sensor] = (ts, values, kept)
                streams.append({"site": site.name, "device": dev.id, "sensor": sensor,
                                "model": dev.model, "reference": is_ref})
            messages.extend(_telemetry(dev, columns, scenario, rng))
    for fault in scenario.faults:
        onset = scenario.start + fault.at_s
        if fault.cause == "firmware_regression":
            version = fault.firmware or _bump(firmware[fault.devices[0]])
            messages.extend(_rollout(known, fault.devices, onset, version, firmware))
        for dev_id in fault.devices:
            spec = _audited(known[dev_id].profile, fault.sensor)
            entry: dict[str, Any] = {
                "site": known[dev_id].site, "device": dev_id, "sensor": fault.sensor,
                "cause": fault.cause, "onset": iso(onset), "magnitude": _magnitude(fault, spec),
                "unit": spec.unit}
            if fault.cause == "firmware_regression":
                entry["firmware"] = firmware[dev_id]
            if fault.cause == "unit_mismatch":
                entry["sent_in"] = fault.unit or _mismatch_unit(spec)
            if fault.cause == "reference_fault":
                entry["served"] = sorted(
                    d.id for d in devices if d.site == known[dev_id].site and d.id != dev_id
                    and fault.sensor in d.profile.sensors)
            faults_truth.append(entry)
    for rollout in scenario.rollouts:
        messages.extend(_rollout(known, rollout.devices, scenario.start + rollout.at_s,
                                 rollout.firmware, firmware))
    rng = np.random.default_rng(root.spawn(1)[0])
    hostile = list(_hostile(scenario, devices, rng))
    messages.extend(hostile)
    messages.sort(key=lambda m: (m.received_at, m.topic))
    truth = {
        "kind": "simulation_truth", "seed": scenario.seed, "scenario": scenario.source,
        "start": iso(scenario.start), "end": iso(end),
        "devices": [{"site": d.site, "device": d.id, "model": d.model,
                     "reference": d.id in {s.reference for s in scenario.sites}}
                    for d in devices],
        "streams": streams, "faults": faults_truth,
        "rollouts": [{"devices": list(r.devices), "at": iso(scenario.start + r.at_s),
                      "firmware": r.firmware} for r in scenario.rollouts],
        "hostile": len(hostile), "messages": len(messages),
    }
    return Simulation(tuple(messages), truth, references_for(scenario, catalog))


def _bump(version: str) -> str:
    parts = version.split(".")
    parts[-1] = str(int(parts[-1]) + 1) if parts[-1].isdigit() else parts[-1] + "1"
    return ".".join(parts)


def _meta(dev: Device, at: float, firmware: str, rng: np.random.Generator) -> Message:
    serial = f"SN-{dev.id.upper()}"
    payload = {"ts": iso(at), "model": dev.model, "firmware": firmware, "hardware_rev": "B",
               "serial": serial, "installed_at": "2025-03-01", "calibrated_at": "2026-02-20",
               "calibration_due": "2027-02-20",
               "location": {"lat": round(45.0 + rng.uniform(-1e-3, 1e-3), 5),
                            "lon": round(7.6 + rng.uniform(-1e-3, 1e-3), 5), "height_m": 2.0}}
    return Message(f"fleet/{dev.site}/{dev.id}/meta", at + 0.5, payload, retain=True)


def _rollout(known: Mapping[str, Device], devices: Sequence[str], at: float, version: str,
             firmware: dict[str, str]) -> Iterator[Message]:
    """The messages an OTA rollout leaves: an event and a new meta version per device."""
    for k, dev_id in enumerate(devices):
        dev = known[dev_id]
        when = at + 5 * k
        old, firmware[dev_id] = firmware[dev_id], version
        yield Message(f"fleet/{dev.site}/{dev_id}/event", when + 0.5,
                      {"ts": iso(when), "type": "firmware_update", "from": old, "to": version,
                       "by": "ota", "detail": "simulated rollout"})
        yield Message(f"fleet/{dev.site}/{dev_id}/meta", when + 60.5,
                      {"ts": iso(when + 60), "model": dev.model, "firmware": version,
                       "hardware_rev": "B", "serial": f"SN-{dev_id.upper()}",
                       "installed_at": "2025-03-01", "calibrated_at": "2026-02-20",
                       "calibration_due": "2027-02-20"}, retain=True)


def _telemetry(dev: Device, columns: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
               scenario: Scenario, rng: np.random.Generator) -> Iterator[Message]:
    """One message per reporting time with every sensor due then (bare numbers in the
    profile's unit, as most firmwares send; the unit-mismatch fault keeps the label)."""
    rows: dict[float, dict[str, Any]] = {}
    for sensor, (ts, values, kept) in columns.items():
        places = DECIMALS.get(sensor, 3)
        for when, value, keep in zip(ts.tolist(), values.tolist(), kept.tolist(), strict=True):
            if keep:
                rows.setdefault(when, {})[sensor] = round(value, places)
    topic = f"fleet/{dev.site}/{dev.id}/telemetry"
    delays = rng.uniform(0.2, 2.0, len(rows))
    for seq, ((when, readings), delay) in enumerate(zip(sorted(rows.items()), delays,
                                                       strict=True)):
        yield Message(topic, when + float(delay),
                      {"ts": int(when), "seq": seq, "readings": readings})


def _hostile(scenario: Scenario, devices: Sequence[Device],
             rng: np.random.Generator) -> Iterator[Message]:
    """What a real broker carries besides good data: broken JSON, path tricks in topics,
    wrong dimensions, missing or absurd timestamps, oversize payloads, unknown sensors."""
    field_devices = [d for d in devices if d.model in MODEL_PREFIX] or list(devices)
    for k in range(scenario.hostile):
        dev = field_devices[int(rng.integers(len(field_devices)))]
        at = scenario.start + float(rng.uniform(0, scenario.duration_s))
        base = f"fleet/{dev.site}/{dev.id}"
        sensor = sorted(dev.profile.sensors)[0]
        kind = k % 8
        if kind == 0:
            yield Message(f"{base}/telemetry", at, '{"ts": 1, "readings": {')
        elif kind == 1:
            yield Message(f"fleet/{dev.site}/../../etc/passwd/telemetry", at,
                          {"ts": int(at), "readings": {sensor: 1.0}})
        elif kind == 2:
            yield Message(f"{base}/telemetry", at,
                          {"ts": int(at), "readings": {sensor: {"value": 1.0, "unit": "V"}}})
        elif kind == 3:
            yield Message(f"{base}/telemetry", at, {"readings": {sensor: 1.0}})
        elif kind == 4:
            yield Message(f"{base}/telemetry", at, {"ts": int(at) + 86400 * 30,
                                                   "readings": {sensor: 1.0}})
        elif kind == 5:
            yield Message(f"{base}/telemetry", at, "x" * 70_000)
        elif kind == 6:
            yield Message(f"{base}/telemetry", at,
                          {"ts": int(at), "readings": {"'; DROP TABLE readings;--": 1.0}})
        else:
            yield Message(f"{base}/event", at, {"ts": int(at), "type": "exorcism"})


# --------------------------------------------------------------------------- adapters


def write_recording(sim: Simulation, out: Path, truth: Path | None) -> None:
    """The replay file (CONTRACT.md JSON Lines) and, if asked, the truth (JSON)."""
    with out.open("w", encoding="utf-8") as handle:
        for message in sim.messages:
            handle.write(message.to_line() + "\n")
    if truth is not None:
        truth.write_text(json.dumps(sim.truth, indent=2) + "\n", encoding="utf-8")


def write_references(sim: Simulation, directory: Path) -> list[Path]:
    """``references/<site>.toml`` for the scenario's sites the catalog lacked."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for entry in sim.references:
        lines = ["[[reference]]"]
        for key, value in entry.items():
            if isinstance(value, Mapping):
                inner = ", ".join(f"{k} = {v!r}" for k, v in value.items())
                lines.append(f"{key} = {{{inner}}}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        path = directory / f"{entry['site']}.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out.append(path)
    return out


def shift_to(sim: Simulation, end: float) -> Simulation:
    """The same fleet moved in time so that its last message arrives at ``end`` (a live
    run's messages must not be in the daemon's future)."""
    last = max((m.received_at for m in sim.messages), default=end)
    delta = end - last
    return Simulation(tuple(_shift(m, delta) for m in sim.messages),
                      _shift_truth(sim.truth, delta), sim.references)


def _shift(message: Message, delta: float) -> Message:
    payload = message.payload
    if isinstance(payload, dict) and "ts" in payload:
        ts = payload["ts"]
        payload = {**payload, "ts": int(ts + delta) if isinstance(ts, int | float)
                   else iso(parse_timestamp(ts) + delta)}
    return Message(message.topic, message.received_at + delta, payload, message.retain)


def _shift_truth(truth: Mapping[str, Any], delta: float) -> dict[str, Any]:
    def at(value: str) -> str | None:
        return iso(parse_timestamp(value) + delta)

    out = dict(truth)
    out["start"], out["end"] = at(truth["start"]), at(truth["end"])
    out["faults"] = [{**f, "onset": at(f["onset"])} for f in truth["faults"]]
    out["rollouts"] = [{**r, "at": at(r["at"])} for r in truth["rollouts"]]
    return out


def paced(messages: Iterable[Message], speed: float, clock: Any, sleep: Any,
          ) -> Iterator[Message]:
    """Yield each message when its (accelerated) time comes: ``speed`` simulated seconds
    pass per wall second, starting at the first message."""
    begin: float | None = None
    wall0 = clock()
    for message in messages:
        if begin is None:
            begin = message.received_at
        due = wall0 + (message.received_at - begin) / speed
        wait = due - clock()
        if wait > 0:
            sleep(wait)
        yield message
