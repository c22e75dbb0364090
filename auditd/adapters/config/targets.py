"""Co-location performance targets, read from TOML: the EPA's defaults and the profiles'.

``auditd/data/epa_targets.toml`` holds the US EPA's base-testing targets; a device profile
may set its own under ``[colocation.<sensor>.<interval>]`` (``targets_with``). Every
problem is a ConfigError naming the file and the key. The targets themselves, and how a
comparison is judged against them, are ``auditd.domain.colocation``'s.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from auditd import PACKAGE_DATA
from auditd.adapters.config.catalog import load_profiles
from auditd.domain.colocation import INTERVALS, Targets
from auditd.errors import ConfigError

TARGETS_FILE = PACKAGE_DATA / "data" / "epa_targets.toml"
TARGET_KEYS = ("slope", "intercept", "r2_min", "rmse_max", "nrmse_max", "sd_max", "cv_max")


def load_targets(path: str | Path = TARGETS_FILE) -> dict[tuple[str, str], Targets]:
    """``{(sensor, interval): Targets}`` from a targets file (``auditd/data/epa_targets.toml``)."""
    file = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"TOML syntax error: {exc}") from None
    return parse_targets(data, file, "")


def parse_targets(data: Mapping[str, Any], file: str, prefix: str) -> dict[tuple[str, str],
                                                                          Targets]:
    """Targets from ``{sensor: {interval: {key: value}}}``, every problem a ConfigError."""
    out: dict[tuple[str, str], Targets] = {}
    for sensor, by_interval in data.items():
        if not isinstance(by_interval, dict):
            raise ConfigError(file, f"{prefix}{sensor}", "must be a table of intervals")
        for interval, table in by_interval.items():
            key = f"{prefix}{sensor}.{interval}"
            if interval not in INTERVALS:
                raise ConfigError(file, key, f"interval must be one of {', '.join(INTERVALS)}")
            if not isinstance(table, dict):
                raise ConfigError(file, key, "must be a table")
            out[(sensor, interval)] = _targets(table, file, key)
    return out


def _targets(table: Mapping[str, Any], file: str, key: str) -> Targets:
    for name in table:
        if name not in TARGET_KEYS:
            raise ConfigError(file, f"{key}.{name}",
                              f"unknown key (known: {', '.join(TARGET_KEYS)})")

    def number(name: str) -> float | None:
        value = table.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ConfigError(file, f"{key}.{name}", "must be a finite number")
        return float(value)

    def bounds(name: str) -> tuple[float, float] | None:
        value = table.get(name)
        if value is None:
            return None
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool)
                           for v in value) or value[0] > value[1]):
            raise ConfigError(file, f"{key}.{name}", "must be [low, high] with low <= high")
        return float(value[0]), float(value[1])

    return Targets(slope=bounds("slope"), intercept=bounds("intercept"),
                   r2_min=number("r2_min"), rmse_max=number("rmse_max"),
                   nrmse_max=number("nrmse_max"), sd_max=number("sd_max"),
                   cv_max=number("cv_max"), source=file)


def targets_with(profiles: Path | None) -> dict[tuple[str, str], Targets]:
    """The EPA's default targets, replaced per (sensor, interval) by profiles that set
    ``[colocation.<sensor>.<interval>]``. Two profiles that disagree are refused."""
    targets = load_targets()
    if profiles is None:
        return targets
    set_by: dict[tuple[str, str], tuple[str, Targets]] = {}
    for profile in load_profiles(profiles).values():
        data = tomllib.loads(Path(profile.source).read_text(encoding="utf-8"))
        table = data.get("colocation")
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ConfigError(profile.source, "colocation", "must be a table")
        for key, value in parse_targets(table, profile.source, "colocation.").items():
            earlier = set_by.get(key)
            if earlier is not None and _same_targets(earlier[1], value) is False:
                raise ConfigError(profile.source, f"colocation.{key[0]}.{key[1]}",
                                  f"differs from the targets {earlier[0]} sets")
            set_by[key] = (profile.source, value)
            targets[key] = value
    return targets


def _same_targets(a: Targets, b: Targets) -> bool:
    return (a.slope, a.intercept, a.r2_min, a.rmse_max, a.nrmse_max, a.sd_max, a.cv_max) == (
        b.slope, b.intercept, b.r2_min, b.rmse_max, b.nrmse_max, b.sd_max, b.cv_max)
