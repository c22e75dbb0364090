"""Device profiles and reference entries, read and cross-checked into the catalog.

Each file is read on its own first (``load_profile``, ``load_reference_file``: one model a
file under ``device_profiles/``, ``[[reference]]`` entries under ``references/``; every unit
string parsed by pint now, so a typo fails ``check-config``, not every reading). Only then
are they checked against each other (``build_catalog``: a reference naming a model no
profile defines, a reference sensor its model lacks, a ``[models]`` glob pointing at
nothing), once at start-up and on reload, so that the pure lookups of the ``Catalog`` it
returns (``auditd.domain.catalog``), which the ingest and audit paths call per message or
per stream, never have to fail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

from auditd import units
from auditd.adapters.config.daemon import DaemonConfig
from auditd.adapters.config.toml import (
    Invalid,
    Table,
    as_duration,
    as_epoch_date,
    as_identifier,
    as_integer,
    as_items,
    as_number,
    as_range,
    as_specifier,
    as_string,
    read_toml,
    toml_files,
)
from auditd.domain.catalog import Catalog
from auditd.errors import ConfigError
from auditd.model import (
    DEFAULT_COVERAGE_FACTOR,
    ID_PATTERN,
    MAX_COVERAGE_FACTOR,
    AlertPolicy,
    MeasuredSensor,
    Profile,
    Reference,
    SensorSpec,
    Tolerance,
)
from auditd.text import describe_value, format_duration

__all__ = ["build_catalog", "load_catalog", "load_profile", "load_profiles",
           "load_reference_file", "load_references"]


# --------------------------------------------------------------------------- units

def _check_quantity(quantity: str) -> None:
    """Refuse a ``quantity`` pint does not know as a dimension (``[temprature]``)."""
    units.dimensionality(quantity)


def _check_unit(unit: str, quantity: str) -> None:
    """Refuse a unit pint cannot parse or whose dimension is not ``quantity``'s.

    Done at load time so that a profile typo fails ``check-config``, not every reading.
    """
    units.check_compatible(unit, quantity)


# --------------------------------------------------------------------------- device profiles

PROFILE_KEYS = ("model", "allowed_firmware", "calibration_interval_days", "sensors", "alerts",
                "colocation")
"""``colocation`` (performance targets of ``sensor-auditd colocate``) is read by
``auditd.adapters.config.targets.targets_with``; the daemon ignores it."""
ALERT_POLICY_KEYS = ("open_after", "resolve_after", "impact", "cause_after", "metadata_after")
SENSOR_KEYS = ("quantity", "unit", "range", "interval_s", "tolerance")
TOLERANCE_KEYS = ("bias", "gain", "rmse", "r2_min", "lag_s", "window", "min_samples")

DEFAULT_INTERVAL_S = 60.0
"""``interval_s`` when a sensor leaves it out: one reading a minute."""
DEFAULT_GAIN = 0.10
"""``|gain - 1|`` when a tolerance leaves it out: flags only clear span faults."""
DEFAULT_R2_MIN = 0.0
"""R² is not judged unless a profile asks: it depends on how much the window varies."""
DEFAULT_LAG_S = 300.0
"""Five minutes of tolerated time offset between device and reference clocks/inlets."""
DEFAULT_WINDOW_S = 86400.0
"""24 h: the averaging period of the EPA sensor targets and CONTRACT.md's example."""
DEFAULT_MIN_SAMPLES = 60
"""CONTRACT.md's figure: an hour of minute readings, so a new unit gets a first verdict."""
MIN_COMPLETENESS = 0.75
"""...capped at 75 % of the readings the window can hold (EPA's completeness criterion for
24 h averages) so that a slow sensor is not left forever without a verdict; at least 2."""


def load_profiles(directory: str | Path) -> dict[str, Profile]:
    """Every ``*.toml`` under ``directory``, one model each, keyed by model name.

    A model defined twice is refused naming both files: which one wins would otherwise
    depend on the file system's order.
    """
    profiles: dict[str, Profile] = {}
    for path in toml_files(directory, "device profiles"):
        profile = load_profile(path)
        if profile.model in profiles:
            raise ConfigError(str(path), "model", f"model {profile.model!r} is already "
                              f"defined in {profiles[profile.model].source}")
        profiles[profile.model] = profile
    return profiles


def load_profile(path: str | Path) -> Profile:
    """One device profile file (CONTRACT.md "Device profiles and references")."""
    file = str(path)
    top = Table.of(file, "", read_toml(Path(path)), PROFILE_KEYS)
    model = top.need("model", as_identifier)
    sensors = top.need("sensors", lambda v: v)
    if not isinstance(sensors, dict) or not sensors:
        raise top.fail("sensors", "must be a table with at least one [sensors.NAME] table")
    return Profile(
        model=model,
        sensors=MappingProxyType({
            _sensor_name(top, name): _sensor(Table(file, "sensors", sensors), name)
            for name in sensors
        }),
        allowed_firmware=top.get("allowed_firmware", as_items(as_specifier), ()),
        calibration_interval_days=top.maybe("calibration_interval_days",
                                            as_number(0, positive=True)),
        source=file,
        alerts=_alert_policy(top.table("alerts", ALERT_POLICY_KEYS)),
    )


def _alert_policy(table: Table) -> AlertPolicy:
    """``[alerts]`` of a profile (sensor-auditd's key): hysteresis and impact weight."""
    default = AlertPolicy()
    return AlertPolicy(
        open_after=table.get("open_after", as_integer(1, 1000), default.open_after),
        resolve_after=table.get("resolve_after", as_integer(1, 1000), default.resolve_after),
        impact=table.get("impact", as_number(0, 10, positive=True), default.impact),
        cause_after=table.get("cause_after", as_integer(1, 1000), default.cause_after),
        metadata_after=table.get("metadata_after", as_integer(1, 1000),
                                 default.metadata_after),
    )


def _sensor_name(top: Table, name: str) -> str:
    if not ID_PATTERN.fullmatch(name):
        raise top.fail(f"sensors.{name}", f"{name!r} is not a valid sensor name: use 1-64 "
                       f"letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


def _sensor(sensors: Table, name: str) -> MeasuredSensor:
    """A sensor table; without ``[tolerance]`` a sensor that is measured but not audited
    (a reference instrument's: the yardstick has no tolerance to be in)."""
    table = sensors.table(name, SENSOR_KEYS)
    quantity = table.need("quantity", _quantity)
    unit = table.need("unit", lambda v: _unit_of(v, quantity))
    plausible = table.need("range", as_range)
    interval_s = table.get("interval_s", as_duration(positive=True), DEFAULT_INTERVAL_S)
    if not table.has("tolerance"):
        return MeasuredSensor(name, quantity, unit, plausible, interval_s)
    return SensorSpec(name, quantity, unit, plausible, interval_s,
                      _tolerance(table, interval_s))


def _quantity(value: object) -> str:
    text = as_string(value).strip()
    _check_quantity(text)
    return text


def _unit_of(value: object, quantity: str) -> str:
    text = as_string(value).strip()
    _check_unit(text, quantity)
    return text


def _tolerance(sensor: Table, interval_s: float) -> Tolerance:
    """The audit contract; ``bias`` and ``rmse`` have no sensible default across units."""
    table = sensor.table("tolerance", TOLERANCE_KEYS)
    window_s = table.get("window", as_duration(positive=True), DEFAULT_WINDOW_S)
    reachable = math.ceil(MIN_COMPLETENESS * window_s / interval_s)
    min_samples = table.get("min_samples", as_integer(2),
                            max(2, min(DEFAULT_MIN_SAMPLES, reachable)))
    if min_samples > window_s / interval_s:
        # Never satisfiable: every audit would say insufficient_data (often a window typo).
        raise table.fail("min_samples", f"{min_samples} is more than the "
                         f"{math.floor(window_s / interval_s)} readings a "
                         f"{format_duration(window_s)} window holds at one every "
                         f"{format_duration(interval_s)}")
    return Tolerance(
        bias=table.need("bias", as_number(0)),
        gain=table.get("gain", as_number(0), DEFAULT_GAIN),
        rmse=table.need("rmse", as_number(0)),
        r2_min=table.get("r2_min", as_number(0, 1), DEFAULT_R2_MIN),
        lag_s=table.get("lag_s", as_duration(), DEFAULT_LAG_S),
        window_s=window_s,
        min_samples=min_samples,
    )


# --------------------------------------------------------------------------- references

REFERENCE_KEYS = ("id", "site", "serves", "sensors", "model", "certificate",
                  "calibration_due", "uncertainty", "coverage_factor")


def load_references(directory: str | Path) -> tuple[Reference, ...]:
    """Every ``[[reference]]`` in ``*.toml`` under ``directory``, in file order.

    Reference ids are global (a device id), so a duplicate is refused naming both files.
    """
    seen: dict[str, Reference] = {}
    for path in toml_files(directory, "references"):
        for index, ref in enumerate(load_reference_file(path)):
            if ref.id in seen:
                raise ConfigError(str(path), f"reference[{index}].id", f"reference "
                                  f"{ref.id!r} is already defined in {seen[ref.id].source}")
            seen[ref.id] = ref
    return tuple(seen.values())


def load_reference_file(path: str | Path) -> tuple[Reference, ...]:
    """The ``[[reference]]`` entries of one file (an empty file holds none)."""
    file = str(path)
    top = Table.of(file, "", read_toml(Path(path)), ("reference",))
    entries: object = top.get("reference", lambda v: v, [])
    if not isinstance(entries, list):
        raise top.fail("reference", "must be an array of tables: write [[reference]]")
    refs = tuple(_reference(file, f"reference[{i}]", entry) for i, entry in enumerate(entries))
    ids = [ref.id for ref in refs]
    for index, ref in enumerate(refs):
        if ids.index(ref.id) != index:
            raise ConfigError(file, f"reference[{index}].id",
                              f"reference {ref.id!r} is defined twice in this file")
    return refs


def _reference(file: str, key: str, entry: object) -> Reference:
    table = Table.of(file, key, entry, REFERENCE_KEYS)
    sensors = table.need("sensors", as_items(as_identifier, unique=True))
    return Reference(
        id=table.need("id", as_identifier),
        site=table.need("site", as_identifier),
        serves=table.need("serves", as_items(as_string, unique=True)),
        sensors=sensors,
        model=table.maybe("model", as_identifier),
        certificate=table.maybe("certificate", as_string),
        calibration_due=table.maybe("calibration_due", as_epoch_date),
        uncertainty=table.get("uncertainty", lambda v: _uncertainty(v, sensors),
                              MappingProxyType({})),
        # k of the stated uncertainty: 1 (already a standard uncertainty) or more
        coverage_factor=table.get("coverage_factor", as_number(1.0, MAX_COVERAGE_FACTOR),
                                  DEFAULT_COVERAGE_FACTOR),
        source=file,
    )


def _uncertainty(value: object, sensors: tuple[str, ...]) -> Mapping[str, float]:
    """Sensor -> expanded uncertainty in the canonical unit, only for the listed sensors."""
    if not isinstance(value, dict):
        raise Invalid(f"must be a table such as {{temperature = 0.1}}, not {describe_value(value)}")
    out: dict[str, float] = {}
    for name, number in value.items():
        if name not in sensors:
            raise Invalid(f"{name!r} is not one of this reference's sensors "
                           f"({', '.join(sensors)})")
        try:
            out[name] = as_number(0)(number)
        except Invalid as exc:
            raise Invalid(f"{name}: {exc}") from None
    return MappingProxyType(out)


# --------------------------------------------------------------------------- the catalog


def build_catalog(profiles: Mapping[str, Profile], references: Iterable[Reference],
                  models: Mapping[str, str], source: str = "",
                  unit_aliases: Mapping[str, str] | None = None) -> Catalog:
    """A Catalog whose parts agree with each other, or a ConfigError naming the culprit.

    ``source`` is the daemon config file holding ``models``, for its error messages.
    """
    refs = tuple(references)
    _check_reference_ids(refs)
    for key, ref in _keyed(refs):
        _check_reference_model(profiles, key, ref)
    known = _known_models(profiles)
    for glob, model in models.items():
        if model not in profiles:
            raise ConfigError(source or "<config>", f'models."{glob}"',
                              f"model {model!r} has no device profile ({known})")
    return Catalog(profiles=profiles, references=refs, models=models,
                   unit_aliases=unit_aliases or {})


def load_catalog(cfg: DaemonConfig) -> Catalog:
    """Read the profile and reference directories ``cfg`` names and cross-check them."""
    return build_catalog(load_profiles(cfg.profiles_dir), load_references(cfg.references_dir),
                         cfg.models, cfg.source, cfg.unit_aliases)


def _keyed(refs: tuple[Reference, ...]) -> Iterable[tuple[str, Reference]]:
    """Each reference with the ``reference[N]`` key it has inside its own file."""
    seen: dict[str, int] = {}
    for ref in refs:
        index = seen.get(ref.source, 0)
        seen[ref.source] = index + 1
        yield f"reference[{index}]", ref


def _check_reference_ids(refs: tuple[Reference, ...]) -> None:
    first: dict[str, Reference] = {}
    for key, ref in _keyed(refs):
        if ref.id in first:
            raise ConfigError(ref.source or "<references>", f"{key}.id",
                              f"reference {ref.id!r} is already defined in "
                              f"{first[ref.id].source or 'another entry'}")
        first[ref.id] = ref


def _check_reference_model(profiles: Mapping[str, Profile], key: str, ref: Reference) -> None:
    """The instrument's own profile must exist and measure every sensor it is trusted for."""
    if ref.model is None:
        return
    file = ref.source or "<references>"
    profile = profiles.get(ref.model)
    if profile is None:
        raise ConfigError(file, f"{key}.model", f"reference {ref.id!r} names model "
                          f"{ref.model!r}, which has no device profile "
                          f"({_known_models(profiles)})")
    missing = [s for s in ref.sensors if s not in profile.sensors]
    if missing:
        raise ConfigError(file, f"{key}.sensors", f"reference {ref.id!r}: model "
                          f"{ref.model!r} has no sensor {', '.join(map(repr, missing))} "
                          f"(its sensors: {', '.join(profile.sensors)})")


def _known_models(profiles: Mapping[str, Profile]) -> str:
    return f"known models: {', '.join(sorted(profiles))}" if profiles else "no profiles loaded"
