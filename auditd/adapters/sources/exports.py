"""Instrument and agency CSV exports, read through data-driven mappings.

Co-location starts from files operators already have: a sensor's own export (wide: one row
per instant, a column per quantity, units in the header) and an agency's reference data
(long: one row per parameter and hour, units and QC codes in columns). Their layouts differ
by vendor, so a layout is data: a *mapping* (``export_mappings``) says where the preamble
ends, which column holds the time, in which format and zone (``export_times``), and which
column or parameter is which CONTRACT.md sensor. A new vendor's export needs a mapping
file, not a code change.

What this module guarantees, because co-location figures are only as good as their inputs:

* times are never silently taken as UTC: the zone comes from the preamble or the mapping,
  and an export whose zone cannot be found is refused;
* every unit string (header parentheses, a ``Unit`` column) goes through the one pint
  registry (``auditd.units``); an unknown unit or one of the wrong dimension stops the
  import naming the file, the column and the string;
* a row that cannot be read is returned as a ``RowProblem`` (line, reason, text) for the
  quarantine, never an abort; a reference value with a non-zero QC code is left out and
  counted, also as a problem row, so nothing is lost.

Pure but for reading the file: a file's text in, arrays out. The store and the CLI are
callers (``auditd.app.importer``, ``auditd.app.colocate``).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from auditd import reasons
from auditd.adapters.sources.export_mappings import (
    DETECT_LINES,
    ExportMapping,
    SensorUnit,
    builtin_mappings,
    default_sensor_units,
    detect_mapping,
    matches,
)
from auditd.adapters.sources.export_times import TimeParser, zone_of
from auditd.errors import ExportError, UnitError
from auditd.model import ID_PATTERN
from auditd.units import converter, dimensionality, parse_unit

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

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
        candidates = [m for m in preferred if matches(m, head)]
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
    zone = zone_of(zone_text, file, "time zone")
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
            problems.append(RowProblem(base + reader.line_num, reasons.ROW_INVALID,
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
        problems.append(RowProblem(lines[i], reasons.TS_INVALID,
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
            problems.append(RowProblem(lines[i], reasons.VALUE_INVALID, f"column {header[idx]!r}: "
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
        problems.append(RowProblem(lines[i], reasons.VALUE_INVALID, f"{good[i][p_idx].strip()}: "
                                   f"{good[i][v_idx].strip()!r} is not a number",
                                   _row_text(good[i]), sensors[i]))
    if q_idx is not None:
        valid_codes = set(mapping.qc_valid)
        flagged = np.array([row[q_idx].strip() not in valid_codes for row in good], dtype=bool)
        for i in np.flatnonzero(flagged & usable).tolist():
            problems.append(RowProblem(
                lines[i], reasons.REFERENCE_QC_FLAGGED, f"{good[i][p_idx].strip()} at "
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
