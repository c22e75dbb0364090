"""Configuration: the daemon's TOML file, device profiles and reference entries.

Everything a user writes by hand is read here, and every mistake in it becomes one
``ConfigError(file, key, problem)`` naming the file, the dotted key and what is wrong, so
that ``sensor-auditd check-config`` and a refused reload print one actionable line instead
of a traceback. Unknown keys are refused with the known ones listed: a typo in a tolerance
(``rsme = 0.8``) must not silently fall back to a default and pass every audit.

The values returned are frozen dataclasses (``model.Profile``, ``model.Reference`` and the
``*Config`` classes below), so the rest of the daemon never sees raw TOML.

Duration values (``window``, ``session_expiry``, ...) accept a number of seconds or a
string such as ``"24h"``, ``"1h30m"``, ``"90s"``, ``"7d"`` (see ``parse_duration``); keys
ending in ``_s`` are documented in seconds but accept the same forms.
"""

from __future__ import annotations

import difflib
import math
import re
import socket
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar, cast

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from auditd import units
from auditd.errors import ConfigError, UnitError
from auditd.model import (
    ID_PATTERN,
    AlertPolicy,
    MessageKind,
    Profile,
    Reference,
    SensorSpec,
    Tolerance,
)
from auditd.text import describe_value as _describe
from auditd.text import format_duration, parse_duration, parse_size

__all__ = [
    "AUDIT_KEYS",
    "BROKER_KEYS",
    "DAEMON_KEYS",
    "INGEST_KEYS",
    "LOG_KEYS",
    "METRICS_KEYS",
    "PROFILE_KEYS",
    "REFERENCE_KEYS",
    "SENSOR_KEYS",
    "STORE_KEYS",
    "TICKETS_KEYS",
    "TLS_KEYS",
    "TOLERANCE_KEYS",
    "TOPICS_KEYS",
    "AuditConfig",
    "BrokerConfig",
    "DaemonConfig",
    "IngestConfig",
    "LogConfig",
    "MetricsConfig",
    "StoreConfig",
    "TlsConfig",
    "TopicsConfig",
    "default_config",
    "default_gateway",
    "load_daemon_config",
    "load_profile",
    "load_profiles",
    "load_reference_file",
    "load_references",
]

T = TypeVar("T")

MqttProtocol = Literal["5", "3.1.1"]
Synchronous = Literal["full", "normal"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["auto", "json", "console"]

# --------------------------------------------------------------------------- units

def _check_quantity(quantity: str) -> None:
    """Refuse a ``quantity`` pint does not know as a dimension (``[temprature]``)."""
    units.dimensionality(quantity)


def _check_unit(unit: str, quantity: str) -> None:
    """Refuse a unit pint cannot parse or whose dimension is not ``quantity``'s.

    Done at load time so that a profile typo fails ``check-config``, not every reading.
    """
    units.check_compatible(unit, quantity)


# --------------------------------------------------------------------------- reading TOML


class _Invalid(ValueError):
    """A value is wrong; ``_Table`` adds the file and the key to make a ConfigError."""


def _dotted(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _read_toml(path: Path) -> dict[str, Any]:
    """Parse one file; unreadable files and syntax errors (with their line) are ConfigErrors."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(file, "", "no such file") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read it: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "", f"not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"TOML syntax error: {exc}") from None


@dataclass(frozen=True)
class _Table:
    """One TOML table being read: knows its file and dotted key for error messages."""

    file: str
    key: str
    data: Mapping[str, Any]

    @classmethod
    def of(cls, file: str, key: str, data: object, known: Iterable[str]) -> _Table:
        """Check ``data`` is a table holding only ``known`` keys (typos name the known ones)."""
        if not isinstance(data, dict):
            raise ConfigError(file, key, f"must be a table, not {_describe(data)}")
        known = tuple(known)
        for name in data:
            if name not in known:
                raise ConfigError(file, _dotted(key, name), _unknown(name, known))
        return cls(file, key, data)

    def where(self, name: str) -> str:
        return _dotted(self.key, name)

    def has(self, name: str) -> bool:
        return name in self.data

    def need(self, name: str, convert: Callable[[Any], T]) -> T:
        """A required key."""
        if name not in self.data:
            raise ConfigError(self.file, self.where(name), "missing required key")
        return self._convert(name, convert)

    def get(self, name: str, convert: Callable[[Any], T], default: T) -> T:
        """An optional key with a default (the default is not converted)."""
        return self._convert(name, convert) if name in self.data else default

    def maybe(self, name: str, convert: Callable[[Any], T]) -> T | None:
        """An optional key whose absence means "not set"."""
        return self._convert(name, convert) if name in self.data else None

    def table(self, name: str, known: Iterable[str]) -> _Table:
        """A sub-table; an absent one reads as empty so that every default applies."""
        return _Table.of(self.file, self.where(name), self.data.get(name, {}), known)

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self.where(name), problem)

    def _convert(self, name: str, convert: Callable[[Any], T]) -> T:
        try:
            return convert(self.data[name])
        except (_Invalid, UnitError) as exc:
            problem = _unit_problem(exc) if isinstance(exc, UnitError) else str(exc)
            raise ConfigError(self.file, self.where(name), problem) from None


def _unit_problem(exc: UnitError) -> str:
    """``'degC' is [temperature], not ...``: units.py's reason with the unit in front."""
    if exc.unit in exc.problem:
        return exc.problem
    joiner = " " if exc.problem.startswith("is ") else ": "
    return f"{exc.unit!r}{joiner}{exc.problem}"


def _unknown(name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key{hint}; known keys: {', '.join(known)}"


# --------------------------------------------------------------------------- converters
# Each takes the raw TOML value and returns the typed one, or raises _Invalid(problem).


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, not {_describe(value)}")
    if not value.strip():
        raise _Invalid("must not be empty")
    return value


def _identifier(value: object) -> str:
    """CONTRACT.md's id pattern: these names end up in topics and store keys."""
    text = _string(value)
    if not ID_PATTERN.fullmatch(text):
        raise _Invalid(f"{text!r} is not a valid name: use 1-64 letters, digits, '_', '.' "
                       f"or '-', starting with a letter or digit")
    return text


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, not {_describe(value)}")
    return value


def _integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be an integer, not {_describe(value)}")
        _check_bounds(value, low, high)
        return value

    return convert


def _number(low: float | None = None, high: float | None = None,
            positive: bool = False) -> Callable[[Any], float]:
    """A finite number; ``positive`` makes ``low`` exclusive (``> 0`` rather than ``>= 0``)."""

    def convert(value: object) -> float:
        number = _finite(value)
        if positive and number <= (low or 0.0):
            raise _Invalid(f"must be greater than {_fmt(low or 0.0)}, got {_fmt(number)}")
        _check_bounds(number, None if positive else low, high)
        return number

    return convert


def _finite(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"must be a number, not {_describe(value)}")
    if not math.isfinite(value):
        raise _Invalid(f"must be a finite number, not {value!r}")
    return float(value)


def _check_bounds(value: float, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise _Invalid(f"must be at least {_fmt(low)}, got {_fmt(value)}")
    if high is not None and value > high:
        raise _Invalid(f"must be at most {_fmt(high)}, got {_fmt(value)}")


def _fmt(number: float) -> str:
    return f"{number:g}"


def _duration(positive: bool = False, high: float | None = None) -> Callable[[Any], float]:
    def convert(value: object) -> float:
        try:
            seconds = parse_duration(value)  # type: ignore[arg-type]
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        if positive and seconds <= 0:
            raise _Invalid(f"must be longer than zero, got {value!r}")
        if high is not None and seconds > high:
            raise _Invalid(f"must be at most {format_duration(high)}, got {value!r}")
        return seconds

    return convert


def _size(low: int = 0) -> Callable[[Any], int]:
    def convert(value: object) -> int:
        try:
            size = parse_size(value)  # type: ignore[arg-type]
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        if size < low:
            raise _Invalid(f"must be at least {low} bytes, got {value!r}")
        return size

    return convert


def _choice(*options: str) -> Callable[[Any], str]:
    """One of ``options``, case-insensitively, returned in lower case."""

    def convert(value: object) -> str:
        # TOML ``protocol = 5`` is an integer; accept it as the text it stands for.
        is_int = isinstance(value, int) and not isinstance(value, bool)
        text = str(value) if is_int else value if isinstance(value, str) else None
        if text is None or text.strip().lower() not in options:
            raise _Invalid(f"must be one of {', '.join(repr(o) for o in options)}, "
                           f"not {_describe(value)}")
        return text.strip().lower()

    return convert


def _array(value: object, *, allow_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(f"must be an array, not {_describe(value)}")
    if not value and not allow_empty:
        raise _Invalid("must not be empty")
    return value


def _items(convert: Callable[[Any], T], *, unique: bool = False,
           allow_empty: bool = False) -> Callable[[Any], tuple[T, ...]]:
    """An array whose items each pass ``convert``; errors say which item (counting from 1)."""

    def converter(value: object) -> tuple[T, ...]:
        out: list[T] = []
        for number, item in enumerate(_array(value, allow_empty=allow_empty), start=1):
            try:
                converted = convert(item)
            except _Invalid as exc:
                raise _Invalid(f"item {number}: {exc}") from None
            if unique and converted in out:
                raise _Invalid(f"item {number}: {converted!r} is listed twice")
            out.append(converted)
        return tuple(out)

    return converter


def _path(base: Path, *, must_exist: bool = False) -> Callable[[Any], Path]:
    """A path; relative ones are taken from the config file's directory, not the cwd."""

    def convert(value: object) -> Path:
        path = Path(_string(value)).expanduser()
        path = path if path.is_absolute() else base / path
        if must_exist and not path.is_file():
            raise _Invalid(f"{str(path)!r}: no such file")
        return path

    return convert


def _epoch_date(value: object) -> float:
    """A TOML date (or ISO text) as epoch seconds; a bare date means UTC midnight."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) <= 10 else datetime.fromisoformat(text)
        except ValueError:
            raise _Invalid(f"{value!r} is not a date such as 2027-06-01") from None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    raise _Invalid(f"must be a date such as 2027-06-01, not {_describe(value)}")


def _specifier(value: object) -> str:
    """A PEP 440 specifier set; validated now so a typo cannot disable the firmware check."""
    text = _string(value)
    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        raise _Invalid(f"{text!r} is not a PEP 440 version specifier "
                       f"(e.g. \">=2.0,<3\" or \"==2.3.*\")") from None
    return text.strip()


def _range(value: object) -> tuple[float, float]:
    items = _array(value)
    if len(items) != 2:
        raise _Invalid(f"must be two numbers [low, high], got {len(items)} items")
    try:
        low, high = _finite(items[0]), _finite(items[1])
    except _Invalid as exc:
        raise _Invalid(f"[low, high]: {exc}") from None
    if not low < high:
        raise _Invalid(f"low must be below high, got [{_fmt(low)}, {_fmt(high)}]")
    return low, high


# --------------------------------------------------------------------------- device profiles

PROFILE_KEYS = ("model", "allowed_firmware", "calibration_interval_days", "sensors", "alerts",
                "colocation")
"""``colocation`` (performance targets of ``sensor-auditd colocate``) is read by
``auditd.adapters.config.targets.targets_with``; the daemon ignores it."""
ALERT_POLICY_KEYS = ("open_after", "resolve_after", "impact")
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
    for path in _toml_files(directory, "device profiles"):
        profile = load_profile(path)
        if profile.model in profiles:
            raise ConfigError(str(path), "model", f"model {profile.model!r} is already "
                              f"defined in {profiles[profile.model].source}")
        profiles[profile.model] = profile
    return profiles


def load_profile(path: str | Path) -> Profile:
    """One device profile file (CONTRACT.md "Device profiles and references")."""
    file = str(path)
    top = _Table.of(file, "", _read_toml(Path(path)), PROFILE_KEYS)
    model = top.need("model", _identifier)
    sensors = top.need("sensors", lambda v: v)
    if not isinstance(sensors, dict) or not sensors:
        raise top.fail("sensors", "must be a table with at least one [sensors.NAME] table")
    return Profile(
        model=model,
        sensors=MappingProxyType({
            _sensor_name(top, name): _sensor(_Table(file, "sensors", sensors), name)
            for name in sensors
        }),
        allowed_firmware=top.get("allowed_firmware", _items(_specifier), ()),
        calibration_interval_days=top.maybe("calibration_interval_days",
                                            _number(0, positive=True)),
        source=file,
        alerts=_alert_policy(top.table("alerts", ALERT_POLICY_KEYS)),
    )


def _alert_policy(table: _Table) -> AlertPolicy:
    """``[alerts]`` of a profile (sensor-auditd's key): hysteresis and impact weight."""
    default = AlertPolicy()
    return AlertPolicy(
        open_after=table.get("open_after", _integer(1, 1000), default.open_after),
        resolve_after=table.get("resolve_after", _integer(1, 1000), default.resolve_after),
        impact=table.get("impact", _number(0, 10, positive=True), default.impact),
    )


def _sensor_name(top: _Table, name: str) -> str:
    if not ID_PATTERN.fullmatch(name):
        raise top.fail(f"sensors.{name}", f"{name!r} is not a valid sensor name: use 1-64 "
                       f"letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


def _sensor(sensors: _Table, name: str) -> SensorSpec:
    table = sensors.table(name, SENSOR_KEYS)
    quantity = table.need("quantity", _quantity)
    interval_s = table.get("interval_s", _duration(positive=True), DEFAULT_INTERVAL_S)
    return SensorSpec(
        name=name,
        quantity=quantity,
        unit=table.need("unit", lambda v: _unit_of(v, quantity)),
        range=table.need("range", _range),
        interval_s=interval_s,
        tolerance=_tolerance(table, interval_s),
    )


def _quantity(value: object) -> str:
    text = _string(value).strip()
    _check_quantity(text)
    return text


def _unit_of(value: object, quantity: str) -> str:
    text = _string(value).strip()
    _check_unit(text, quantity)
    return text


def _tolerance(sensor: _Table, interval_s: float) -> Tolerance:
    """The audit contract; ``bias`` and ``rmse`` have no sensible default across units."""
    if not sensor.has("tolerance"):
        raise sensor.fail("tolerance", "missing required table (at least bias and rmse)")
    table = sensor.table("tolerance", TOLERANCE_KEYS)
    window_s = table.get("window", _duration(positive=True), DEFAULT_WINDOW_S)
    reachable = math.ceil(MIN_COMPLETENESS * window_s / interval_s)
    min_samples = table.get("min_samples", _integer(2),
                            max(2, min(DEFAULT_MIN_SAMPLES, reachable)))
    if min_samples > window_s / interval_s:
        # Never satisfiable: every audit would say insufficient_data (often a window typo).
        raise table.fail("min_samples", f"{min_samples} is more than the "
                         f"{math.floor(window_s / interval_s)} readings a "
                         f"{format_duration(window_s)} window holds at one every "
                         f"{format_duration(interval_s)}")
    return Tolerance(
        bias=table.need("bias", _number(0)),
        gain=table.get("gain", _number(0), DEFAULT_GAIN),
        rmse=table.need("rmse", _number(0)),
        r2_min=table.get("r2_min", _number(0, 1), DEFAULT_R2_MIN),
        lag_s=table.get("lag_s", _duration(), DEFAULT_LAG_S),
        window_s=window_s,
        min_samples=min_samples,
    )


# --------------------------------------------------------------------------- references

REFERENCE_KEYS = ("id", "site", "serves", "sensors", "model", "certificate",
                  "calibration_due", "uncertainty")


def load_references(directory: str | Path) -> tuple[Reference, ...]:
    """Every ``[[reference]]`` in ``*.toml`` under ``directory``, in file order.

    Reference ids are global (a device id), so a duplicate is refused naming both files.
    """
    seen: dict[str, Reference] = {}
    for path in _toml_files(directory, "references"):
        for index, ref in enumerate(load_reference_file(path)):
            if ref.id in seen:
                raise ConfigError(str(path), f"reference[{index}].id", f"reference "
                                  f"{ref.id!r} is already defined in {seen[ref.id].source}")
            seen[ref.id] = ref
    return tuple(seen.values())


def load_reference_file(path: str | Path) -> tuple[Reference, ...]:
    """The ``[[reference]]`` entries of one file (an empty file holds none)."""
    file = str(path)
    top = _Table.of(file, "", _read_toml(Path(path)), ("reference",))
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
    table = _Table.of(file, key, entry, REFERENCE_KEYS)
    sensors = table.need("sensors", _items(_identifier, unique=True))
    return Reference(
        id=table.need("id", _identifier),
        site=table.need("site", _identifier),
        serves=table.need("serves", _items(_string, unique=True)),
        sensors=sensors,
        model=table.maybe("model", _identifier),
        certificate=table.maybe("certificate", _string),
        calibration_due=table.maybe("calibration_due", _epoch_date),
        uncertainty=table.get("uncertainty", lambda v: _uncertainty(v, sensors),
                              MappingProxyType({})),
        source=file,
    )


def _uncertainty(value: object, sensors: tuple[str, ...]) -> Mapping[str, float]:
    """Sensor -> expanded uncertainty in the canonical unit, only for the listed sensors."""
    if not isinstance(value, dict):
        raise _Invalid(f"must be a table such as {{temperature = 0.1}}, not {_describe(value)}")
    out: dict[str, float] = {}
    for name, number in value.items():
        if name not in sensors:
            raise _Invalid(f"{name!r} is not one of this reference's sensors "
                           f"({', '.join(sensors)})")
        try:
            out[name] = _number(0)(number)
        except _Invalid as exc:
            raise _Invalid(f"{name}: {exc}") from None
    return MappingProxyType(out)


def _toml_files(directory: str | Path, what: str) -> Iterator[Path]:
    """The ``*.toml`` files of a directory in name order, skipping hidden/editor files."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(str(folder), "", f"no such directory (expected {what})")
    yield from sorted(p for p in folder.glob("*.toml")
                      if not p.name.startswith(".") and p.is_file())


# --------------------------------------------------------------------------- daemon config

DAEMON_KEYS = ("site", "gateway", "profiles_dir", "references_dir", "broker", "ingest",
               "audit", "store", "topics", "log", "models", "metrics",
               "tickets")
TICKETS_KEYS = ("mqtt", "max_attempts", "backoff_min", "backoff_max", "webhook", "command",
                "file")
WEBHOOK_KEYS = ("url", "timeout", "token_file", "headers")
COMMAND_KEYS = ("argv", "timeout")
FILE_SINK_KEYS = ("path",)
BROKER_KEYS = ("host", "port", "client_id", "keepalive", "protocol", "session_expiry",
               "username", "password_file", "reconnect_min_s", "reconnect_max_s",
               "receive_maximum", "tls")
TLS_KEYS = ("ca_file", "cert_file", "key_file", "insecure")
INGEST_KEYS = ("batch_max", "batch_max_wait_s", "max_payload_bytes", "max_future_skew_s",
               "quarantine_payload_cap", "max_devices", "max_streams", "stall_after")
AUDIT_KEYS = ("interval", "window", "first_run_delay", "context_lookback",
              "silent_after_intervals", "silent_min", "cohort_alpha")
STORE_KEYS = ("path", "synchronous", "retention_days", "quarantine_retention_days",
              "retention_interval", "wal_limit", "quarantine_max_rows", "quarantine_max_bytes")
TOPICS_KEYS = ("prefix", "commands")
LOG_KEYS = ("level", "format")
METRICS_KEYS = ("enabled", "bind", "port")

MQTT_MAX_SESSION_EXPIRY_S = 0xFFFFFFFF
"""MQTT 5's Session Expiry Interval is a four-byte integer of seconds."""
MQTT_MAX_PACKET = 268_435_455
"""The largest MQTT packet the variable-length header can describe."""


def default_gateway() -> str:
    """This host's short name, squeezed into the id pattern (it appears in topics)."""
    name = socket.gethostname().split(".", 1)[0]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", name).lstrip("_-")[:64]
    return name if ID_PATTERN.fullmatch(name) else "gateway"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Present (``[broker.tls]``) means TLS is on; ``ca_file`` None = system CA store."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    """Skip the broker host name check (test brokers only; the chain is still verified)."""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """How to reach the MQTT broker.

    The password is never held here: only ``password_file``, which the MQTT adapter reads
    at connect time, so a rotated password needs no restart and no repr or log shows it.
    """

    host: str = "localhost"
    port: int = 1883
    client_id: str = ""
    """Empty until ``DaemonConfig`` fills in ``sensor-auditd-{gateway}``: a stable id is what
    makes the broker keep our persistent session (and queued messages) across restarts.
    Once filled in it is kept, also by ``dataclasses.replace(cfg, gateway=...)``."""
    keepalive: int = 60
    protocol: MqttProtocol = "5"
    session_expiry_s: float = 7 * 86400.0
    tls: TlsConfig | None = None
    username: str | None = None
    password_file: str | None = None
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    receive_maximum: int = 100


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Limits on what one message may cost, and how readings are batched into the store."""

    batch_max: int = 100
    batch_max_wait_s: float = 0.05
    max_payload_bytes: int = 65536
    max_future_skew_s: float = 300.0
    quarantine_payload_cap: int = 4096
    max_devices: int = 5000
    """Devices the gateway keeps data of; a new one beyond it is quarantined
    (``device_limit``)."""
    max_streams: int = 50_000
    """(site, device, sensor) streams; a reading starting one more is ``stream_limit``."""
    stall_after_s: float = 300.0
    """A writer that has committed nothing for this long while it holds messages makes the
    daemon unhealthy (metrics, ``status``, the systemd watchdog no longer fed)."""


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """When audits run; ``window_s`` None means each sensor's ``tolerance.window``."""

    interval_s: float = 3600.0
    window_s: float | None = None
    first_run_delay_s: float = 60.0
    """Lets retained meta arrive and the broker's queued backlog drain before judging."""
    context_lookback_s: float = 30 * 86400.0
    """How far before a deviation's onset a firmware update, relocation... is named."""
    silent_after_intervals: float = 30.0
    silent_min_s: float = 3600.0
    """A device is silent after this many reporting intervals, and never before this."""
    cohort_alpha: float = 0.05
    """Family-wise significance of the cohort tests (Holm-corrected)."""


DEFAULT_STORE_PATH = Path("/var/lib/sensor-auditd/audit.db")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: Path = DEFAULT_STORE_PATH
    synchronous: Synchronous = "full"
    """SQLite's ``PRAGMA synchronous``: ``full`` survives power loss, which matters because
    a message is acknowledged to the broker only once committed."""
    retention_days: float = 90.0
    quarantine_retention_days: float = 30.0
    retention_interval_s: float = 3600.0
    wal_limit: int = 16 * 1024 * 1024
    """The write-ahead log's size limit (a quarter of the free space at most)."""
    quarantine_max_rows: int = 50_000
    quarantine_max_bytes: int = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TopicsConfig:
    """CONTRACT.md's topic layout under a configurable prefix."""

    prefix: str = "fleet"
    commands: bool = False
    """Subscribe to the command topic (``ack``/``silence`` over MQTT, ``auditd.commands``);
    off unless the broker's ACL restricts who may write it."""

    def subscriptions(self) -> tuple[str, ...]:
        """The filters the daemon subscribes to: every site and device, three kinds."""
        return tuple(self.subscription(kind) for kind in ("telemetry", "meta", "event"))

    def subscription(self, kind: MessageKind) -> str:
        return f"{self.prefix}/+/+/{kind}"

    def finding(self, site: str, gateway: str, device: str, sensor: str) -> str:
        return self._out(site, gateway, "finding", device, sensor)

    def report(self, site: str, gateway: str) -> str:
        return self._out(site, gateway, "report")

    def ticket(self, site: str, gateway: str) -> str:
        return self._out(site, gateway, "ticket")

    def status(self, site: str, gateway: str) -> str:
        return self._out(site, gateway, "status")

    def command(self, site: str, gateway: str) -> str:
        return self._out(site, gateway, "command")

    def _out(self, site: str, gateway: str, *rest: str) -> str:
        """Refuse levels that would change the topic's shape (``/``, wildcards, empty)."""
        levels = (site, "audit", gateway, *rest)
        for level in levels:
            if not level or any(c in level for c in "/+#\0"):
                raise ValueError(f"{level!r} cannot be a topic level")
        return "/".join((self.prefix, *levels))


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """POST each ticket's JSON to ``url`` (``Idempotency-Key`` header)."""

    url: str
    timeout_s: float = 10.0
    token_file: str | None = None
    """First line sent as ``Authorization: Bearer ...``; read at each delivery."""
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class CommandConfig:
    """Run ``argv`` with the ticket's JSON on stdin; exit status 0 means delivered."""

    argv: tuple[str, ...]
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class TicketsConfig:
    """Where ticket requests go; every sink is optional (``[tickets]``)."""

    mqtt: bool = True
    """Publish on the ticket topic (CONTRACT.md) through the outbox, at QoS 1."""
    max_attempts: int = 12
    """Failed deliveries to a webhook or command before the request is dead-lettered."""
    backoff_min_s: float = 10.0
    backoff_max_s: float = 1800.0
    webhook: WebhookConfig | None = None
    command: CommandConfig | None = None
    file: Path | None = None
    """Append each ticket's JSON as one line (fsync'd): an audit trail, or a replay's."""

    def sinks(self) -> tuple[str, ...]:
        """Names of the configured sinks that deliver from the ticket queue."""
        return tuple(name for name, on in (("webhook", self.webhook), ("command", self.command),
                                           ("file", self.file)) if on is not None)


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: LogLevel = "info"
    format: LogFormat = "auto"
    """``auto``: a readable console on a terminal, JSON lines otherwise (journald)."""


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The Prometheus endpoint: off unless asked for, and on loopback unless told otherwise
    (it needs no secret to read, so exposing it is a deliberate choice)."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything ``sensor-auditd run`` needs; defaults run on a laptop against localhost."""

    site: str = "site"
    gateway: str = field(default_factory=default_gateway)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tickets: TicketsConfig = field(default_factory=TicketsConfig)
    profiles_dir: Path = Path("device_profiles")
    references_dir: Path = Path("references")
    models: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Device-id glob -> model, first match wins, for devices whose meta names no model."""
    source: str = ""
    """The file it was read from ("" for ``default_config``), for error messages."""

    def __post_init__(self) -> None:
        where = self.source or "<default config>"
        for name in ("site", "gateway"):
            value = getattr(self, name)
            if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
                raise ConfigError(where, name, f"{value!r} is not a valid name: use 1-64 "
                                  f"letters, digits, '_', '.' or '-'")
        if not self.broker.client_id:
            object.__setattr__(self, "broker", replace(
                self.broker, client_id=f"sensor-auditd-{self.gateway}"))
        object.__setattr__(self, "profiles_dir", Path(self.profiles_dir))
        object.__setattr__(self, "references_dir", Path(self.references_dir))
        object.__setattr__(self, "models", MappingProxyType(dict(self.models)))


def default_config(**overrides: Any) -> DaemonConfig:
    """The built-in defaults with some fields replaced (tests, ``replay`` without a file)."""
    return DaemonConfig(**overrides)


def load_daemon_config(path: str | Path) -> DaemonConfig:
    """Read and validate the daemon's TOML file (e.g. ``/etc/sensor-auditd/config.toml``).

    Relative paths in it (profiles, references, store, TLS files, password file) are taken
    from the file's directory, so the daemon does not depend on its working directory.
    """
    file = str(path)
    base = Path(path).absolute().parent
    top = _Table.of(file, "", _read_toml(Path(path)), DAEMON_KEYS)
    gateway = top.get("gateway", _identifier, "") or default_gateway()
    return DaemonConfig(
        site=top.get("site", _identifier, "site"),
        gateway=gateway,
        broker=_broker(top.table("broker", BROKER_KEYS), base),
        ingest=_ingest(top.table("ingest", INGEST_KEYS)),
        audit=_audit(top.table("audit", AUDIT_KEYS)),
        store=_store(top.table("store", STORE_KEYS), base),
        topics=_topics(top.table("topics", TOPICS_KEYS)),
        log=_log(top.table("log", LOG_KEYS)),
        metrics=_metrics(top.table("metrics", METRICS_KEYS)),
        tickets=_tickets(top.table("tickets", TICKETS_KEYS), base),
        profiles_dir=top.get("profiles_dir", _path(base), base / "device_profiles"),
        references_dir=top.get("references_dir", _path(base), base / "references"),
        models=top.get("models", _models, MappingProxyType({})),
        source=file,
    )


def _broker(table: _Table, base: Path) -> BrokerConfig:
    tls = _tls(table.table("tls", TLS_KEYS), base) if table.has("tls") else None
    username = table.maybe("username", _string)
    password_file = table.maybe("password_file", _path(base, must_exist=True))
    if password_file is not None and username is None:
        raise table.fail("password_file", "needs broker.username as well")
    reconnect_min_s = table.get("reconnect_min_s", _duration(positive=True), 1.0)
    reconnect_max_s = table.get("reconnect_max_s", _duration(positive=True), 60.0)
    if reconnect_min_s < 1:
        raise table.fail("reconnect_min_s", "must be at least 1 s (paho counts whole seconds)")
    if reconnect_max_s < reconnect_min_s:
        raise table.fail("reconnect_max_s", f"must be at least reconnect_min_s "
                         f"({_fmt(reconnect_min_s)} s), got {_fmt(reconnect_max_s)}")
    return BrokerConfig(
        host=table.get("host", _host, "localhost"),
        port=table.get("port", _integer(1, 65535), 8883 if tls else 1883),
        client_id=table.get("client_id", _client_id, ""),
        keepalive=table.get("keepalive", _integer(0, 65535), 60),
        protocol=cast(MqttProtocol, table.get("protocol", _choice("5", "3.1.1"), "5")),
        session_expiry_s=table.get("session_expiry",
                                   _duration(high=MQTT_MAX_SESSION_EXPIRY_S), 7 * 86400.0),
        tls=tls,
        username=username,
        password_file=str(password_file) if password_file else None,
        reconnect_min_s=reconnect_min_s,
        reconnect_max_s=reconnect_max_s,
        receive_maximum=table.get("receive_maximum", _integer(1, 65535), 100),
    )


def _tls(table: _Table, base: Path) -> TlsConfig:
    files = {name: table.maybe(name, _path(base, must_exist=True))
             for name in ("ca_file", "cert_file", "key_file")}
    if files["key_file"] is not None and files["cert_file"] is None:
        raise table.fail("key_file", "needs broker.tls.cert_file as well")
    return TlsConfig(
        ca_file=str(files["ca_file"]) if files["ca_file"] else None,
        cert_file=str(files["cert_file"]) if files["cert_file"] else None,
        key_file=str(files["key_file"]) if files["key_file"] else None,
        insecure=table.get("insecure", _boolean, False),
    )


def _host(value: object) -> str:
    text = _string(value).strip()
    if any(c.isspace() for c in text) or "/" in text:
        raise _Invalid(f"{text!r} is not a host name or address")
    return text


def _client_id(value: object) -> str:
    text = _string(value)
    if len(text.encode("utf-8")) > 65535:
        raise _Invalid("must be at most 65535 bytes (MQTT string limit)")
    return text


def _ingest(table: _Table) -> IngestConfig:
    return IngestConfig(
        batch_max=table.get("batch_max", _integer(1), 100),
        batch_max_wait_s=table.get("batch_max_wait_s", _duration(), 0.05),
        max_payload_bytes=table.get("max_payload_bytes", _integer(1, MQTT_MAX_PACKET), 65536),
        max_future_skew_s=table.get("max_future_skew_s", _duration(), 300.0),
        quarantine_payload_cap=table.get("quarantine_payload_cap", _integer(0), 4096),
        max_devices=table.get("max_devices", _integer(1), 5000),
        max_streams=table.get("max_streams", _integer(1), 50_000),
        stall_after_s=table.get("stall_after", _duration(positive=True), 300.0),
    )


def _audit(table: _Table) -> AuditConfig:
    return AuditConfig(
        interval_s=table.get("interval", _duration(positive=True), 3600.0),
        window_s=table.maybe("window", _duration(positive=True)),
        first_run_delay_s=table.get("first_run_delay", _duration(), 60.0),
        context_lookback_s=table.get("context_lookback", _duration(positive=True),
                                     30 * 86400.0),
        silent_after_intervals=table.get("silent_after_intervals",
                                         _number(1, positive=True), 30.0),
        silent_min_s=table.get("silent_min", _duration(), 3600.0),
        cohort_alpha=table.get("cohort_alpha", _number(0, 0.5, positive=True), 0.05),
    )


def _store(table: _Table, base: Path) -> StoreConfig:
    return StoreConfig(
        path=table.get("path", _path(base), DEFAULT_STORE_PATH),
        synchronous=cast(Synchronous, table.get("synchronous", _choice("full", "normal"),
                                                "full")),
        retention_days=table.get("retention_days", _number(0, positive=True), 90.0),
        quarantine_retention_days=table.get("quarantine_retention_days",
                                            _number(0, positive=True), 30.0),
        retention_interval_s=table.get("retention_interval", _duration(positive=True), 3600.0),
        wal_limit=table.get("wal_limit", _size(512 * 1024), 16 * 1024 * 1024),
        quarantine_max_rows=table.get("quarantine_max_rows", _integer(1), 50_000),
        quarantine_max_bytes=table.get("quarantine_max_bytes", _size(64 * 1024),
                                       32 * 1024 * 1024),
    )


def _topics(table: _Table) -> TopicsConfig:
    return TopicsConfig(prefix=table.get("prefix", _topic_prefix, "fleet"),
                        commands=table.get("commands", _boolean, False))


def _tickets(table: _Table, base: Path) -> TicketsConfig:
    backoff_min = table.get("backoff_min", _duration(positive=True), 10.0)
    backoff_max = table.get("backoff_max", _duration(positive=True), 1800.0)
    if backoff_max < backoff_min:
        raise table.fail("backoff_max", f"must be at least backoff_min "
                         f"({format_duration(backoff_min)}), got {format_duration(backoff_max)}")
    webhook = command = None
    if table.has("webhook"):
        hook = table.table("webhook", WEBHOOK_KEYS)
        token = hook.maybe("token_file", _path(base, must_exist=True))
        webhook = WebhookConfig(url=hook.need("url", _http_url),
                                timeout_s=hook.get("timeout", _duration(positive=True), 10.0),
                                token_file=str(token) if token else None,
                                headers=hook.get("headers", _headers, MappingProxyType({})))
    if table.has("command"):
        cmd = table.table("command", COMMAND_KEYS)
        command = CommandConfig(argv=cmd.need("argv", _items(_string)),
                                timeout_s=cmd.get("timeout", _duration(positive=True), 30.0))
    file = None
    if table.has("file"):
        file = table.table("file", FILE_SINK_KEYS).need("path", _path(base))
    return TicketsConfig(
        mqtt=table.get("mqtt", _boolean, True),
        max_attempts=table.get("max_attempts", _integer(1, 1000), 12),
        backoff_min_s=backoff_min, backoff_max_s=backoff_max,
        webhook=webhook, command=command, file=file)


def _http_url(value: object) -> str:
    text = _string(value).strip()
    scheme, _, rest = text.partition("://")
    if scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise _Invalid(f"{text!r} is not an http:// or https:// URL")
    return text


def _headers(value: object) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise _Invalid(f"must be a table such as {{X-Source = \"gw-1\"}}, not {_describe(value)}")
    out: dict[str, str] = {}
    for name, text in value.items():
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
            raise _Invalid(f"{name!r} is not an HTTP header name")
        if name.lower() in ("idempotency-key", "content-type", "authorization"):
            raise _Invalid(f"{name!r} is set by sensor-auditd itself")
        try:
            out[name] = _string(text)
        except _Invalid as exc:
            raise _Invalid(f"{name}: {exc}") from None
    return MappingProxyType(out)


def _log(table: _Table) -> LogConfig:
    return LogConfig(
        level=cast(LogLevel, table.get(
            "level", _choice("debug", "info", "warning", "error", "critical"), "info")),
        format=cast(LogFormat, table.get("format", _choice("auto", "json", "console"), "auto")),
    )


def _metrics(table: _Table) -> MetricsConfig:
    return MetricsConfig(
        enabled=table.get("enabled", _boolean, False),
        bind=table.get("bind", _host, "127.0.0.1"),
        port=table.get("port", _integer(1, 65535), 9464),
    )


def _topic_prefix(value: object) -> str:
    """One or more topic levels with no wildcard: the daemon subscribes below it."""
    text = _string(value)
    levels = text.split("/")
    if any(not level or any(c in level for c in "+#\0") for level in levels):
        raise _Invalid(f"{text!r} is not a topic prefix: use levels such as \"fleet\" or "
                       f"\"acme/fleet\", without '+', '#', or empty levels")
    return text


def _models(value: object) -> Mapping[str, str]:
    """``[models]``: quoted device-id globs -> model name, kept in file order."""
    if not isinstance(value, dict):
        raise _Invalid(f"must be a table such as {{\"th-north-*\" = \"th-200\"}}, "
                       f"not {_describe(value)}")
    out: dict[str, str] = {}
    for glob, model in value.items():
        if not glob.strip():
            raise _Invalid("a device glob must not be empty")
        try:
            out[glob] = _identifier(model)
        except _Invalid as exc:
            raise _Invalid(f"\"{glob}\": {exc}") from None
    return MappingProxyType(out)
