"""Export mappings: a vendor's CSV layout as data, not code.

A *mapping* (``auditd/mappings/*.toml``, keys modelled on Telegraf's CSV parser) says where
an export's preamble ends, which column holds the time, in which format and zone, and which
column or parameter is which CONTRACT.md sensor; ``detect_mapping`` recognises an export's
layout from its first lines, unambiguously or not at all. The canonical unit of each sensor
name comes from ``auditd/data/sensor_units.toml`` (``default_sensor_units``). The reader is
``auditd.adapters.sources.exports``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from auditd import PACKAGE_DATA
from auditd.adapters.config.catalog import load_profiles
from auditd.adapters.config.toml import read_toml
from auditd.adapters.sources.export_times import zone_of
from auditd.errors import ConfigError, ExportError, UnitError
from auditd.model import ID_PATTERN
from auditd.text import parse_duration
from auditd.units import parse_unit

MAPPINGS_DIR = PACKAGE_DATA / "mappings"
SENSOR_UNITS_FILE = PACKAGE_DATA / "data" / "sensor_units.toml"
DETECT_LINES = 64
"""How much of a file's head content recognition reads."""

FORMS = ("wide", "long")
MAPPING_KEYS = ("name", "form", "detect", "layout", "preamble", "time", "columns", "long",
                "unit_spellings")


# --------------------------------------------------------------------------- mappings


@dataclass(frozen=True, slots=True)
class ExportMapping:
    """One export layout, as its TOML file describes it."""

    name: str
    form: str
    source: str
    skip_rows: int
    time_columns: tuple[str, ...]
    time_format: str
    time_zone: str
    """``"preamble"``, ``"UTC"``, ``"+HH:MM"`` or an IANA zone name."""
    sensors: Mapping[str, str]
    """Wide: header name -> sensor. Long: parameter -> sensor."""
    detect_first_line: re.Pattern[str] | None = None
    detect_header: tuple[str, ...] = ()
    preamble: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    interval_s: float | None = None
    header_unit: re.Pattern[str] | None = None
    ignore: tuple[str, ...] = ()
    parameter_column: str = ""
    value_column: str = ""
    unit_column: str = ""
    qc_column: str | None = None
    qc_valid: tuple[str, ...] = ("0",)
    unit_spellings: Mapping[str, str] = field(default_factory=dict)


def builtin_mappings() -> list[ExportMapping]:
    """The mappings shipped in ``auditd/mappings``."""
    return [load_mapping(p) for p in sorted(MAPPINGS_DIR.glob("*.toml"))]


def load_mapping(path: str | Path) -> ExportMapping:
    """Read and check one mapping file; every problem is a ``ConfigError`` naming the key."""
    file = str(path)
    data = read_toml(Path(path))
    _only(file, "", data, MAPPING_KEYS)

    def table(name: str) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(file, name, "must be a table")
        return value

    def text(tab: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
        value = tab.get(key, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(file, f"{where}{key}", "must be a non-empty string")
        return value

    def pattern(value: object, key: str) -> re.Pattern[str]:
        if not isinstance(value, str):
            raise ConfigError(file, key, "must be a regular expression (string)")
        try:
            return re.compile(value)
        except re.error as exc:
            raise ConfigError(file, key, f"not a regular expression: {exc}") from None

    def names(value: object, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(file, key, "must be an array of strings")
        return tuple(value)

    def sensor_table(value: object, key: str) -> dict[str, str]:
        if not isinstance(value, dict) or not value:
            raise ConfigError(file, key, "must be a table of name = sensor")
        for name, sensor in value.items():
            if not isinstance(sensor, str) or not ID_PATTERN.fullmatch(sensor):
                raise ConfigError(file, f"{key}.{name}", f"{sensor!r} is not a sensor name")
        return dict(value)

    name = text(data, "name", "")
    form = text(data, "form", "")
    if form not in FORMS:
        raise ConfigError(file, "form", f"must be one of {', '.join(FORMS)}, not {form!r}")
    detect, layout, time_t = table("detect"), table("layout"), table("time")
    _only(file, "detect", detect, ("first_line", "header"))
    _only(file, "layout", layout, ("skip_rows",))
    _only(file, "time", time_t, ("column", "columns", "format", "zone", "interval"))
    skip = layout.get("skip_rows", 0)
    if not isinstance(skip, int) or isinstance(skip, bool) or skip < 0:
        raise ConfigError(file, "layout.skip_rows", "must be a non-negative integer")
    if "columns" in time_t:
        time_columns = names(time_t["columns"], "time.columns")
    else:
        time_columns = (text(time_t, "column", "time."),)
    interval = time_t.get("interval")
    try:
        interval_s = None if interval is None else parse_duration(interval)
    except (ValueError, TypeError) as exc:
        raise ConfigError(file, "time.interval", str(exc)) from None
    zone = text(time_t, "zone", "time.")
    if zone != "preamble":
        zone_of(zone, file, "time.zone")  # check it now, not on the first row
    preamble = {k: pattern(v, f"preamble.{k}") for k, v in table("preamble").items()}
    _only(file, "preamble", preamble, ("serial", "zone", "interval"))
    if zone == "preamble" and "zone" not in preamble:
        raise ConfigError(file, "time.zone", '"preamble" needs a preamble.zone pattern')
    spellings = table("unit_spellings")
    for key, value in spellings.items():
        if not isinstance(value, str):
            raise ConfigError(file, f"unit_spellings.{key}", "must be a unit string")
        _unit_or_config_error(value, file, f"unit_spellings.{key}")
    common = dict(
        name=name, form=form, source=file, skip_rows=skip, time_columns=time_columns,
        time_format=text(time_t, "format", "time."), time_zone=zone,
        detect_first_line=(pattern(detect["first_line"], "detect.first_line")
                           if "first_line" in detect else None),
        detect_header=names(detect.get("header", []), "detect.header"),
        preamble=MappingProxyType(preamble), interval_s=interval_s,
        unit_spellings=MappingProxyType(dict(spellings)),
    )
    if form == "wide":
        cols = table("columns")
        _only(file, "columns", cols, ("header_unit", "ignore", "sensors"))
        return ExportMapping(
            **common,  # type: ignore[arg-type]
            sensors=MappingProxyType(sensor_table(cols.get("sensors"), "columns.sensors")),
            header_unit=(pattern(cols["header_unit"], "columns.header_unit")
                         if "header_unit" in cols else None),
            ignore=names(cols.get("ignore", []), "columns.ignore"),
        )
    long = table("long")
    _only(file, "long", long, ("parameter_column", "value_column", "unit_column",
                                "qc_column", "qc_valid", "parameters"))
    return ExportMapping(
        **common,  # type: ignore[arg-type]
        sensors=MappingProxyType(sensor_table(long.get("parameters"), "long.parameters")),
        parameter_column=text(long, "parameter_column", "long."),
        value_column=text(long, "value_column", "long."),
        unit_column=text(long, "unit_column", "long."),
        qc_column=long.get("qc_column"),
        qc_valid=names(long.get("qc_valid", ["0"]), "long.qc_valid"),
    )


def _only(file: str, where: str, tab: Mapping[str, Any], known: Iterable[str]) -> None:
    allowed = set(known)
    for key in tab:
        if key not in allowed:
            dotted = f"{where}.{key}" if where else key
            raise ConfigError(file, dotted, f"unknown key (known: {', '.join(sorted(allowed))})")


def _unit_or_config_error(unit: str, file: str, key: str) -> None:
    try:
        parse_unit(unit)
    except UnitError as exc:
        raise ConfigError(file, key, str(exc)) from None


def detect_mapping(head: Sequence[str], mappings: Sequence[ExportMapping],
                   file: str) -> ExportMapping:
    """The one mapping whose ``[detect]`` rules the file's first lines satisfy.

    Recognition must be unambiguous: no match or several matches stop the import and ask
    for ``--mapping``, rather than reading a file by a guess.
    """
    found = [m for m in mappings if matches(m, head)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ExportError(file, "", "no mapping recognises this export; pass --mapping FILE "
                          f"(shipped: {', '.join(m.name for m in mappings)})")
    raise ExportError(file, "", "several mappings recognise this export ("
                      f"{', '.join(m.name for m in found)}); pass --mapping FILE")


def matches(mapping: ExportMapping, head: Sequence[str]) -> bool:
    if not (mapping.detect_first_line or mapping.detect_header):
        return False  # a mapping without rules is only used when named
    if mapping.detect_first_line is not None and not (
            head and mapping.detect_first_line.search(head[0])):
        return False
    if mapping.skip_rows >= len(head):
        return False
    header = next(csv.reader([head[mapping.skip_rows]]), [])
    names = {_header_name(mapping, h) for h in header}
    return all(name in names for name in mapping.detect_header)


def _header_name(mapping: ExportMapping, cell: str) -> str:
    cell = cell.strip()
    if mapping.header_unit is not None:
        m = mapping.header_unit.fullmatch(cell)
        if m:
            return m.group("name").strip()
    return cell


# --------------------------------------------------------------------------- sensor units


@dataclass(frozen=True, slots=True)
class SensorUnit:
    """What a sensor name measures and the canonical unit its values are stored in."""

    quantity: str
    unit: str


def default_sensor_units() -> dict[str, SensorUnit]:
    """``auditd/data/sensor_units.toml``: CONTRACT.md's sensor names and their units."""
    data = read_toml(SENSOR_UNITS_FILE)
    return {name: SensorUnit(t["quantity"], t["unit"]) for name, t in data.items()}


def sensor_units_with(profiles: Path | None) -> dict[str, SensorUnit]:
    """Canonical units: the shipped table, overridden by any profile's sensors."""
    units = default_sensor_units()
    if profiles is not None:
        for profile in load_profiles(profiles).values():
            for name, spec in profile.sensors.items():
                units[name] = SensorUnit(spec.quantity, spec.unit)
    return units
