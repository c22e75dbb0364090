"""A scenario: the fleet to simulate, and the faults, rollouts and hostile messages in it.

Data, not code: a TOML (or JSON) file names sites, how many devices of each shipped model
stand at each, faults at chosen times and magnitudes, firmware rollouts and the number of
hostile messages; ``default_scenario`` is the demo's fleet. ``scenario_from`` checks a
parsed file and names the key of every problem. The generator is ``auditd.sim.simulate``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditd.core.causes import FINDING_CAUSES
from auditd.domain.validate import parse_timestamp
from auditd.errors import ConfigError
from auditd.text import parse_duration

CAUSES = tuple(c for c in FINDING_CAUSES if c != "unexplained")
"""What a scenario can inject: every finding cause but "deviation of unknown cause"."""
"""CONTRACT.md's cause vocabulary (the cause registry's): every one can be injected."""


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    reference: str
    devices: Mapping[str, int]
    """model -> how many devices of it."""
    latitude: float = 45.0


@dataclass(frozen=True, slots=True)
class Fault:
    cause: str
    devices: tuple[str, ...]
    sensor: str
    at_s: float
    """Seconds after the scenario's start."""
    magnitude: float | None = None
    ramp_s: float = 0.0
    unit: str | None = None
    """``unit_mismatch``: the unit the numbers really are in (labelled as canonical)."""
    firmware: str | None = None
    """``firmware_regression``: the version rolled out to ``devices`` at ``at_s``."""
    pivot: float | None = None
    """``gain_drift``: the value the span error turns about (default: the site's mean)."""


@dataclass(frozen=True, slots=True)
class Rollout:
    """A firmware update with no regression: a metadata change the audit must not blame."""

    devices: tuple[str, ...]
    at_s: float
    firmware: str


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int
    start: float
    duration_s: float
    sites: tuple[Site, ...]
    faults: tuple[Fault, ...] = ()
    rollouts: tuple[Rollout, ...] = ()
    hostile: int = 12
    """How many malformed or hostile messages to mix in."""
    firmware: Mapping[str, str] = field(default_factory=dict)
    """model -> the firmware the fleet starts on."""
    source: str = ""


# --------------------------------------------------------------------------- scenario files


DEFAULT_FIRMWARE = {"th-200": "2.3.1", "pm-25": "1.6.0", "co2-ndir": "3.2.0",
                    "ref-station": "5.1"}


def default_scenario(*, seed: int = 1, days: float = 1.5, start: float | None = None) -> Scenario:
    """The demo's fleet: one site, 10 th-200 and 3 co2-ndir; one fault of every per-stream
    cause, a reference fault (the station's CO2), a firmware 2.4.0 rolled out to three
    th-200 that shifts their pressure, and a benign rollout of 2.3.2 to two others."""
    duration = days * 86400.0
    begin = start if start is not None else 1_795_132_800.0  # 2026-11-20T00:00:00Z
    at = duration * 0.6
    faults = (
        Fault("offset_drift", ("th-north-01",), "temperature", at),
        Fault("gain_drift", ("th-north-02",), "temperature", at),
        Fault("unit_mismatch", ("th-north-03",), "temperature", at, unit="degF"),
        Fault("stuck", ("th-north-04",), "humidity", at),
        Fault("noise", ("th-north-05",), "temperature", at),
        Fault("dropout", ("th-north-06",), "humidity", duration * 0.1),
        Fault("time_lag", ("th-north-07",), "temperature", at),
        Fault("out_of_range", ("th-north-08",), "humidity", at),
        Fault("reference_fault", ("ref-north",), "co2", at),
        Fault("firmware_regression", ("th-north-01", "th-north-02", "th-north-03"),
              "pressure", duration * 0.5, firmware="2.4.0"),
    )
    return Scenario(seed=seed, start=begin, duration_s=duration,
                    sites=(Site("north", "ref-north", {"th-200": 10, "co2-ndir": 3}),),
                    faults=faults,
                    rollouts=(Rollout(("th-north-05", "th-north-06"), duration * 0.3,
                                      "2.3.2"),),
                    hostile=12, firmware=dict(DEFAULT_FIRMWARE), source="(built-in)")


def load_scenario(path: Path) -> Scenario:
    """A scenario file (TOML, or JSON by its ``.json`` suffix) -> Scenario; errors name
    the file and the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "-", exc.strerror or str(exc)) from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), "-", f"not valid {path.suffix[1:] or 'TOML'}: {exc}") \
            from exc
    return scenario_from(data, str(path))


def _seconds(value: Any, file: str, key: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(file, key, f"not a duration: {value!r}") from exc
    raise ConfigError(file, key, f"not a duration: {value!r}")


def scenario_from(data: Mapping[str, Any], file: str = "<scenario>") -> Scenario:
    """Validate a parsed scenario mapping; every problem names its key."""
    try:
        start_raw = data.get("start", 1_795_132_800)
        start = parse_timestamp(start_raw)
    except ValueError as exc:
        raise ConfigError(file, "start", f"not a timestamp: {exc}") from exc
    sites = []
    for i, raw in enumerate(data.get("site", data.get("sites", ()))):
        key = f"site[{i}]"
        if not isinstance(raw, Mapping) or "name" not in raw:
            raise ConfigError(file, key, "needs a name")
        devices = raw.get("devices", {})
        if not isinstance(devices, Mapping) or not all(
                isinstance(n, int) and n >= 0 for n in devices.values()):
            raise ConfigError(file, f"{key}.devices", "must map a model to a count")
        sites.append(Site(str(raw["name"]), str(raw.get("reference", f"ref-{raw['name']}")),
                          dict(devices), float(raw.get("latitude", 45.0))))
    if not sites:
        raise ConfigError(file, "site", "a scenario needs at least one [[site]]")
    faults = []
    for i, raw in enumerate(data.get("fault", data.get("faults", ()))):
        key = f"fault[{i}]"
        cause = raw.get("cause")
        if cause not in CAUSES:
            raise ConfigError(file, f"{key}.cause", f"{cause!r} is not one of {', '.join(CAUSES)}")
        devices = raw.get("devices", [raw["device"]] if "device" in raw else [])
        if not devices or "sensor" not in raw or "at" not in raw:
            raise ConfigError(file, key, "needs device (or devices), sensor and at")
        faults.append(Fault(
            cause, tuple(str(d) for d in devices), str(raw["sensor"]),
            _seconds(raw["at"], file, f"{key}.at"),
            float(raw["magnitude"]) if "magnitude" in raw else None,
            _seconds(raw.get("ramp", 0), file, f"{key}.ramp"),
            raw.get("unit"), raw.get("firmware"),
            float(raw["pivot"]) if "pivot" in raw else None))
    rollouts = [Rollout(tuple(r["devices"]), _seconds(r["at"], file, f"rollout[{i}].at"),
                        str(r["firmware"]))
                for i, r in enumerate(data.get("rollout", data.get("rollouts", ())))]
    return Scenario(
        seed=int(data.get("seed", 1)), start=start,
        duration_s=_seconds(data.get("duration", "1d"), file, "duration"),
        sites=tuple(sites), faults=tuple(faults), rollouts=tuple(rollouts),
        hostile=int(data.get("hostile", 12)),
        firmware={**DEFAULT_FIRMWARE, **data.get("firmware", {})}, source=file)
