"""Instrument and agency CSV exports, read through data-driven mappings.

Co-location starts from files operators already have: a sensor's own export (wide: one row
per instant, a column per quantity, units in the header) and an agency's reference data
(long: one row per parameter and hour, units and QC codes in columns). Their layouts differ
by vendor, so a layout is data: a small TOML *mapping* (``auditd/mappings/*.toml``, keys
modelled on Telegraf's CSV parser) says where the preamble ends, which column holds the
time, in which format and zone, and which column or parameter is which CONTRACT.md sensor.
A new vendor's export needs a mapping file, not a code change.

What this module guarantees, because co-location figures are only as good as their inputs:

* times are never silently taken as UTC: the zone comes from the preamble or the mapping,
  and an export whose zone cannot be found is refused;
* every unit string (header parentheses, a ``Unit`` column) goes through the one pint
  registry (``auditd.units``); an unknown unit or one of the wrong dimension stops the
  import naming the file, the column and the string;
* a row that cannot be read is returned as a ``RowProblem`` (line, reason, text) for the
  quarantine, never an abort; a reference value with a non-zero QC code is left out and
  counted, also as a problem row, so nothing is lost.

Pure: a file's text in, arrays out. The store and the CLI are callers (``auditd.importer``).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from auditd import PACKAGE_DATA
from auditd.config import _read_toml
from auditd.errors import ConfigError, ExportError, UnitError
from auditd.model import ID_PATTERN
from auditd.text import parse_duration
from auditd.units import converter, dimensionality, parse_unit

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

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
    data = _read_toml(Path(path))
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
        _zone(zone, file, "time.zone")  # check it now, not on the first row
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
    found = [m for m in mappings if _matches(m, head)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ExportError(file, "", "no mapping recognises this export; pass --mapping FILE "
                          f"(shipped: {', '.join(m.name for m in mappings)})")
    raise ExportError(file, "", "several mappings recognise this export ("
                      f"{', '.join(m.name for m in found)}); pass --mapping FILE")


def _matches(mapping: ExportMapping, head: Sequence[str]) -> bool:
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
    data = _read_toml(SENSOR_UNITS_FILE)
    return {name: SensorUnit(t["quantity"], t["unit"]) for name, t in data.items()}


# --------------------------------------------------------------------------- time


_FAST_DIRECTIVES = {
    "%Y": r"(?P<Y>\d{4})", "%m": r"(?P<m>\d{1,2})", "%d": r"(?P<d>\d{1,2})",
    "%H": r"(?P<H>\d{1,2})", "%M": r"(?P<M>\d{1,2})", "%S": r"(?P<S>\d{1,2}(?:\.\d+)?)",
}


def parse_offset(text: str, key: str) -> int:
    """``UTC`` or ``+HH:MM``/``-HH:MM`` as seconds east of UTC (a fixed offset only)."""
    zone = _zone(text, "", key)
    if isinstance(zone, ZoneInfo):
        raise ExportError("", key, f"{text!r}: give a fixed offset such as -05:00 (local "
                          "standard time), not a zone with daylight saving")
    return zone


def _zone(zone: str, file: str, key: str) -> int | ZoneInfo:
    """A zone as a fixed offset in seconds east of UTC, or an IANA zone."""
    text = zone.strip()
    if text.upper() in ("UTC", "Z", "GMT"):
        return 0
    m = re.fullmatch(r"(?:UTC)?([+-])(\d{2}):?(\d{2})", text)
    if m:
        sign = 1 if m.group(1) == "+" else -1
        return sign * (int(m.group(2)) * 3600 + int(m.group(3)) * 60)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExportError(file, key, f"{zone!r} is not a time zone: use UTC, +HH:MM or an "
                          "IANA name such as America/New_York") from None


def _days_from_civil(y: IntArray, m: IntArray, d: IntArray) -> IntArray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return np.asarray(era * 146097 + doe - 719468, dtype=np.int64)


_MONTH_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


class TimeParser:
    """Time text in one format and zone -> epoch seconds.

    strptime costs about 10 us a call, as much as all the rest of a row. Formats made of
    %Y %m %d %H %M %S and literal text are therefore matched by one regular expression
    over the whole column at once and converted with numpy (``many``); other formats, and
    IANA zones (whose offset changes with the date), go row by row. In an IANA zone a local
    time that occurs twice (the autumn hour) is taken at its first occurrence.
    """

    def __init__(self, fmt: str, zone: int | ZoneInfo) -> None:
        self.fmt = fmt
        self.zone = zone
        pieces = re.split(r"(%.)", fmt)
        fast = all(p in _FAST_DIRECTIVES or not p.startswith("%") for p in pieces)
        self._groups = [p[1] for p in pieces if p in _FAST_DIRECTIVES]
        self._regex = (re.compile("".join(_FAST_DIRECTIVES.get(p) or re.escape(p)
                                          for p in pieces))
                       if fast and "%Y" in pieces else None)

    def one(self, text: str) -> float:
        """Epoch seconds of one time; ``ValueError`` saying what is wrong with it."""
        if self._regex is None:
            parsed = datetime.strptime(text.strip(), self.fmt)
            if parsed.tzinfo is not None:
                return parsed.timestamp()
            if isinstance(self.zone, ZoneInfo):
                return parsed.replace(tzinfo=self.zone).timestamp()
            return (parsed - datetime(1970, 1, 1)).total_seconds() - self.zone
        m = self._regex.fullmatch(text.strip())
        if m is None:
            raise ValueError(f"does not match {self.fmt!r}")
        g = m.groupdict()
        second = float(g.get("S") or 0.0)
        whole = int(second)
        local = datetime(int(g["Y"]), int(g.get("m") or 1), int(g.get("d") or 1),
                         int(g.get("H") or 0), int(g.get("M") or 0), whole)
        if isinstance(self.zone, ZoneInfo):
            return local.replace(tzinfo=self.zone).timestamp() + (second - whole)
        return (local - datetime(1970, 1, 1)).total_seconds() + second - whole - self.zone

    def many(self, texts: Sequence[str]) -> FloatArray:
        """Epoch seconds of each text, NaN where it is not a valid time (``one`` says why)."""
        n = len(texts)
        if self._regex is None or isinstance(self.zone, ZoneInfo) or n == 0:
            return np.array([self._or_nan(t) for t in texts], dtype=np.float64)
        joined = "\n".join(t.strip() for t in texts)
        line = re.compile(f"^{self._regex.pattern}$", re.MULTILINE)
        found = line.findall(joined)
        if len(found) != n or joined.count("\n") != n - 1:
            return np.array([self._or_nan(t) for t in texts], dtype=np.float64)
        if len(self._groups) == 1:
            found = [(f,) for f in found]
        col = dict(zip(self._groups, zip(*found, strict=True), strict=True))

        def ints(key: str, default: int) -> IntArray:
            return (np.fromiter(map(int, col[key]), np.int64, n) if key in col
                    else np.full(n, default, dtype=np.int64))

        y, mo, d = ints("Y", 1970), ints("m", 1), ints("d", 1)
        h, mi = ints("H", 0), ints("M", 0)
        s = np.fromiter(map(float, col["S"]), np.float64, n) if "S" in col else np.zeros(n)
        leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
        month_ok = (mo >= 1) & (mo <= 12)
        limit = _MONTH_DAYS[np.clip(mo, 0, 12)] - ((mo == 2) & ~leap)
        ok = month_ok & (d >= 1) & (d <= limit) & (h <= 23) & (mi <= 59) & (s < 61)
        t = (_days_from_civil(y, np.clip(mo, 1, 12), d) * 86400.0 + h * 3600.0 + mi * 60.0
             + s - self.zone)
        return np.where(ok, t, np.nan)

    def _or_nan(self, text: str) -> float:
        try:
            return self.one(text)
        except (ValueError, OverflowError):
            return math.nan

    def why(self, text: str) -> str:
        """Why ``text`` is not a valid time."""
        try:
            self.one(text)
        except (ValueError, OverflowError) as exc:
            return str(exc)
        return "out of range"


def parse_floats(cells: Sequence[str]) -> tuple[FloatArray, BoolArray]:
    """(values, invalid): empty cells are NaN and valid (missing); text that is not a
    finite number is NaN and invalid. ``float`` over the column in one ``fromiter`` for
    the common clean column (numpy's own string conversion is several times slower), a
    second pass only for columns with gaps or garbage."""
    n = len(cells)
    try:
        values = np.fromiter(map(float, cells), np.float64, n)
        empty = np.zeros(n, dtype=bool)
    except ValueError:
        values = np.fromiter(map(_float_or_nan, cells), np.float64, n)
        empty = np.fromiter((not c.strip() for c in cells), bool, n)
    invalid = ~empty & ~np.isfinite(values)
    values[invalid] = np.nan
    return values, invalid


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, slots=True, eq=False)
class Channel:
    """One sensor's values from an export, converted to the sensor's canonical unit."""

    sensor: str
    unit: str
    source_unit: str
    column: str
    ts: FloatArray
    values: FloatArray


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row (or a cell) left out of an import, for the quarantine."""

    line: int
    reason: str
    """``row_invalid``, ``ts_invalid``, ``value_invalid`` or ``reference_qc_flagged``."""
    detail: str
    text: str
    sensor: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Export:
    path: str
    mapping: str
    device: str
    channels: Mapping[str, Channel]
    problems: tuple[RowProblem, ...] = ()
    serial: str | None = None
    zone: str = "UTC"
    declared_interval_s: float | None = None
    rows: int = 0
    ignored_columns: tuple[str, ...] = ()
    ignored_parameters: Mapping[str, int] = field(default_factory=dict)

    def rejected(self) -> dict[str, int]:
        """Rows (or cells) left out, by reason: what the import's summary reports."""
        return dict(Counter(p.reason for p in self.problems))

    def excluded(self, reason: str = "reference_qc_flagged") -> dict[str, int]:
        """Values left out for ``reason``, by sensor."""
        counts: dict[str, int] = {}
        for p in self.problems:
            if p.reason == reason and p.sensor is not None:
                counts[p.sensor] = counts.get(p.sensor, 0) + 1
        return counts


# --------------------------------------------------------------------------- reading


def read_export(
    path: str | Path,
    device: str,
    *,
    mapping: ExportMapping | None = None,
    mappings: Sequence[ExportMapping] | None = None,
    preferred: Sequence[ExportMapping] = (),
    sensor_units: Mapping[str, SensorUnit] | None = None,
) -> Export:
    """Read one export file. ``mapping`` forces a layout; otherwise it is recognised from
    the content: among ``preferred`` (mappings the user named) when one of them matches,
    else among ``mappings`` (default: the shipped ones).

    ``sensor_units`` give the canonical unit of each sensor (default:
    ``default_sensor_units()``); a mapped sensor with no canonical unit is an error.
    """
    file = str(path)
    if not ID_PATTERN.fullmatch(device):
        raise ExportError(file, "device", f"{device!r} is not a valid device id: name it "
                          "ID=PATH with 1-64 letters, digits, '_', '.' or '-'")
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ExportError(file, "", "no such file") from None
    except OSError as exc:
        raise ExportError(file, "", f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ExportError(file, "", f"not UTF-8 text (byte {exc.start})") from None
    lines = text.splitlines(keepends=True)
    if mapping is None:
        head = [ln.rstrip("\r\n") for ln in lines[:DETECT_LINES]]
        candidates = [m for m in preferred if _matches(m, head)]
        mapping = detect_mapping(head, candidates or (
            builtin_mappings() if mappings is None else mappings), file)
    units = default_sensor_units() if sensor_units is None else sensor_units
    pre = [ln.rstrip("\r\n") for ln in lines[:mapping.skip_rows]]
    found = _preamble(mapping, pre)
    zone_text = found.get("zone") if mapping.time_zone == "preamble" else mapping.time_zone
    if zone_text is None:
        raise ExportError(file, "time.zone", "the preamble names no time zone and the mapping "
                          f"{mapping.name!r} takes it from there; set [time] zone in a mapping "
                          "(times are never assumed to be UTC)")
    zone = _zone(zone_text, file, "time zone")
    declared = mapping.interval_s
    if declared is None and "interval" in found:
        declared = _interval(found["interval"], file)
    body = lines[mapping.skip_rows:]
    reader = csv.reader(io.StringIO("".join(body)))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ExportError(file, "", f"no header row after {mapping.skip_rows} skipped "
                          "lines") from None
    parse_time = TimeParser(mapping.time_format, zone)
    first_line = mapping.skip_rows + 1  # 1-based line of the header
    common = dict(path=file, mapping=mapping.name, device=device, serial=found.get("serial"),
                  zone=zone_text, declared_interval_s=declared)
    if mapping.form == "wide":
        return _read_wide(mapping, header, reader, first_line, parse_time, units, common)
    return _read_long(mapping, header, reader, first_line, parse_time, units, common)


def _preamble(mapping: ExportMapping, lines: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, pattern in mapping.preamble.items():
        for line in lines:
            m = pattern.search(line)
            if m:
                found[key] = (m.group("value") if "value" in pattern.groupindex
                              else m.group(0)).strip()
                break
    return found


def _interval(text: str, file: str) -> float:
    """``"1 minute"`` -> 60.0, through pint (the unit of time is any pint knows)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)?\s*([A-Za-z]+)\s*", text)
    if m:
        try:
            seconds = float(m.group(1) or 1) * converter(m.group(2), "s").scale
        except UnitError:
            seconds = math.nan
        if seconds > 0:
            return seconds
    raise ExportError(file, "preamble.interval", f"{text!r} is not a duration")


def _column_index(header: Sequence[str], name: str, file: str) -> int:
    try:
        return header.index(name)
    except ValueError:
        raise ExportError(file, name, f"no such column in the header ({', '.join(header)})"
                          ) from None


def _canonical(sensor: str, units: Mapping[str, SensorUnit], file: str,
               column: str) -> SensorUnit:
    spec = units.get(sensor)
    if spec is None:
        raise ExportError(file, column, f"sensor {sensor!r} has no canonical unit (name it in a "
                          "device profile given with --profiles)")
    return spec


def _convert_unit(text: str, spec: SensorUnit, mapping: ExportMapping, file: str,
                  column: str) -> tuple[float, float]:
    """(scale, offset) from the export's unit string to the canonical unit, or stop."""
    unit = mapping.unit_spellings.get(text, text)
    try:
        parse_unit(unit)
    except UnitError as exc:
        raise ExportError(file, column, f"unit {text!r}: {exc.problem}") from None
    if parse_unit(unit).dimensionality != dimensionality(spec.quantity):
        raise ExportError(file, column, f"unit {text!r} is not a unit of {spec.quantity} "
                          f"(the quantity of {spec.unit})")
    conv = converter(unit, spec.unit)
    return conv.scale, conv.offset


_Common = dict[str, Any]


def _row_text(row: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue()


def _split_rows(reader: Any, first_line: int, width: int
                ) -> tuple[list[int], list[list[str]], list[RowProblem], int]:
    """Lines and cells of the well-formed data rows, and a problem for each other one.

    Line numbers are the file's (1-based), from the reader's physical line count, so a
    quoted cell with a line break does not shift the numbers of the rows after it."""
    base = first_line - 1  # reader.line_num counts the header as its line 1
    lines: list[int] = []
    good: list[list[str]] = []
    problems: list[RowProblem] = []
    rows = 0
    for row in reader:
        if not row:
            continue
        rows += 1
        if len(row) == width:
            lines.append(base + reader.line_num)
            good.append(row)
        else:
            problems.append(RowProblem(base + reader.line_num, "row_invalid",
                                       f"{len(row)} cells where the header has {width}",
                                       _row_text(row)))
    return lines, good, problems, rows


def _times(parse_time: TimeParser, cols: Sequence[Sequence[str]], lines: Sequence[int],
           good: Sequence[list[str]], problems: list[RowProblem],
           sensors: Sequence[str | None] | None = None) -> FloatArray:
    """Epoch seconds of each row (NaN where unreadable; those rows become problems)."""
    stamps = list(cols[0]) if len(cols) == 1 else [" ".join(p) for p in zip(*cols, strict=True)]
    t = parse_time.many(stamps)
    for i in np.flatnonzero(~np.isfinite(t)).tolist():
        problems.append(RowProblem(lines[i], "ts_invalid",
                                   f"time {stamps[i]!r}: {parse_time.why(stamps[i])}",
                                   _row_text(good[i]), None if sensors is None else sensors[i]))
    return t


def _read_wide(mapping: ExportMapping, header: list[str], reader: Any,
               first_line: int, parse_time: TimeParser,
               units: Mapping[str, SensorUnit], common: _Common) -> Export:
    file = common["path"]
    time_idx = [_column_index(header, c, file) for c in mapping.time_columns]
    columns: list[tuple[int, str, str, str, float, float]] = []
    ignored: list[str] = []
    for idx, cell in enumerate(header):
        if idx in time_idx:
            continue
        name, unit_text = cell, None
        if mapping.header_unit is not None:
            m = mapping.header_unit.fullmatch(cell)
            if m:
                name, unit_text = m.group("name").strip(), m.group("unit").strip()
        sensor = mapping.sensors.get(name)
        if sensor is None or name in mapping.ignore:
            ignored.append(cell)
            continue
        if unit_text is None:
            raise ExportError(file, cell, "the header names no unit for this column")
        spec = _canonical(sensor, units, file, cell)
        scale, offset = _convert_unit(unit_text, spec, mapping, file, cell)
        columns.append((idx, sensor, spec.unit, unit_text, scale, offset))
    if len({c[1] for c in columns}) != len(columns):
        raise ExportError(file, "columns.sensors", "two columns map to the same sensor")
    lines, good, problems, rows = _split_rows(reader, first_line, len(header))
    cols = list(zip(*good, strict=True)) if good else [() for _ in header]
    t = _times(parse_time, [cols[i] for i in time_idx], lines, good, problems)
    timed = np.isfinite(t)
    channels: dict[str, Channel] = {}
    for idx, sensor, unit, src, scale, offset in columns:
        values, invalid = parse_floats(cols[idx])
        for i in np.flatnonzero(invalid & timed).tolist():
            problems.append(RowProblem(lines[i], "value_invalid", f"column {header[idx]!r}: "
                                       f"{good[i][idx].strip()!r} is not a number",
                                       _row_text(good[i]), sensor))
        keep = timed & np.isfinite(values)
        channels[sensor] = Channel(sensor, unit, src, header[idx], t[keep],
                                   values[keep] * scale + offset)
    problems.sort(key=lambda p: p.line)
    return Export(channels=MappingProxyType(channels), problems=tuple(problems), rows=rows,
                  ignored_columns=tuple(ignored), **common)


def _read_long(mapping: ExportMapping, header: list[str], reader: Any,
               first_line: int, parse_time: TimeParser,
               units: Mapping[str, SensorUnit], common: _Common) -> Export:
    file = common["path"]
    time_idx = [_column_index(header, c, file) for c in mapping.time_columns]
    p_idx = _column_index(header, mapping.parameter_column, file)
    v_idx = _column_index(header, mapping.value_column, file)
    u_idx = _column_index(header, mapping.unit_column, file)
    q_idx = None if mapping.qc_column is None else _column_index(header, mapping.qc_column, file)
    lines, good, problems, rows = _split_rows(reader, first_line, len(header))
    ignored: dict[str, int] = {}
    mapped = []
    for i, row in enumerate(good):
        param = row[p_idx].strip()
        if param in mapping.sensors:
            mapped.append(i)
        else:
            ignored[param] = ignored.get(param, 0) + 1
    lines = [lines[i] for i in mapped]
    good = [good[i] for i in mapped]
    sensors = [mapping.sensors[row[p_idx].strip()] for row in good]
    cols = list(zip(*good, strict=True)) if good else [() for _ in header]
    t = _times(parse_time, [cols[i] for i in time_idx], lines, good, problems, sensors)
    values, invalid = parse_floats(cols[v_idx])
    scale = np.ones(len(good))
    offset = np.zeros(len(good))
    conversions: dict[tuple[str, str], tuple[float, float]] = {}
    source_units: dict[str, str] = {}
    usable = np.isfinite(t) & np.isfinite(values)
    for i in np.flatnonzero(usable).tolist():
        key = (sensors[i], good[i][u_idx].strip())
        conv = conversions.get(key)
        if conv is None:
            spec = _canonical(sensors[i], units, file, mapping.parameter_column)
            conv = conversions[key] = _convert_unit(
                key[1], spec, mapping, file, f"{mapping.unit_column} (line {lines[i]})")
            source_units.setdefault(sensors[i], key[1])
        scale[i], offset[i] = conv
    for i in np.flatnonzero(invalid & np.isfinite(t)).tolist():
        problems.append(RowProblem(lines[i], "value_invalid", f"{good[i][p_idx].strip()}: "
                                   f"{good[i][v_idx].strip()!r} is not a number",
                                   _row_text(good[i]), sensors[i]))
    if q_idx is not None:
        valid_codes = set(mapping.qc_valid)
        flagged = np.array([row[q_idx].strip() not in valid_codes for row in good], dtype=bool)
        for i in np.flatnonzero(flagged & usable).tolist():
            problems.append(RowProblem(
                lines[i], "reference_qc_flagged", f"{good[i][p_idx].strip()} at "
                f"{' '.join(good[i][j] for j in time_idx)}: QC code "
                f"{good[i][q_idx].strip()!r}", _row_text(good[i]), sensors[i]))
        usable &= ~flagged
    converted = values * scale + offset
    names = np.array(sensors, dtype=object)
    channels = {}
    for sensor in dict.fromkeys(sensors):
        keep = usable & (names == sensor)
        if keep.any():
            channels[sensor] = Channel(sensor, units[sensor].unit, source_units[sensor],
                                       mapping.value_column, t[keep], converted[keep])
    problems.sort(key=lambda p: p.line)
    return Export(channels=MappingProxyType(channels), problems=tuple(problems), rows=rows,
                  ignored_parameters=MappingProxyType(ignored), **common)


def device_and_path(arg: str) -> tuple[str, Path]:
    """CONTRACT.md's ``ID=PATH`` or a bare path (named by the file's stem)."""
    if "=" in arg:
        device, _, path = arg.partition("=")
        return device.strip(), Path(path)
    return Path(arg).stem, Path(arg)
