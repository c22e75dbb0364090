"""Recordings for ``replay``: what the live pipeline would have received, from a file.

Two forms. A JSON Lines recording (CONTRACT.md: one MQTT message a line, with the time it
was received) is read as it was recorded. A CSV file is a historian's export of readings.

Fleets keep history in historians that export rows of ``time, device, sensor, value,
unit``; a team wants to audit that history with today's rules although it never went
through MQTT. Each group of consecutive rows of one device at one time becomes one
telemetry message in CONTRACT.md's form (``{"ts", "readings": {sensor: {"value", "unit"}}}``)
on that device's telemetry topic, received at its own time, so validation, units, the
store and the audits are exactly the replay's and the daemon's.

Header (first row, case-insensitive): ``time`` (or ``ts``/``timestamp``), ``device``,
``sensor``, ``value``, and optionally ``unit`` (empty: the profile's unit) and ``site``
(default: the configuration's ``site``). An empty value or ``null``/``nan`` is an outage
(``value: null``). A row that is not a reading (wrong column count, bad time) is
quarantined as ``recording_invalid`` with its line number, never fatal.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from auditd import reasons
from auditd.domain.validate import parse_timestamp
from auditd.errors import RecordingError
from auditd.model import RawMessage

RECORDING_INVALID = reasons.RECORDING_INVALID
"""A line of the recording that is not a recorded message at all (quarantined, counted)."""

LATEST_TIME: Final = 253_402_300_799.0
"""9999-12-31T23:59:59Z: a reception time beyond it (or before the epoch) is no time a
recording was made, and no date could print it."""


def reception_time(value: object) -> float:
    """A recorded ``received_at`` (or a historian's time) as epoch seconds between the epoch
    and the year 9999; ``ValueError`` says why not. It drives the replay's clock and its
    audits, so a line cannot move that clock where no date reaches."""
    ts = parse_timestamp(value)
    if not 0.0 <= ts <= LATEST_TIME:
        raise ValueError(f"received_at {ts:.6g} is not between 1970 and 9999")
    return ts


@dataclass(frozen=True, slots=True)
class BadLine:
    line_no: int
    problem: str
    text: str
    received_at: float | None


def parse_line(line: str, line_no: int) -> RawMessage | BadLine:
    """One JSON Lines record -> the message as it arrived (a JSON string payload is raw)."""
    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        topic = record["topic"]
        if not isinstance(topic, str):
            raise ValueError("topic is not a string")
        received_at = reception_time(record["received_at"])
        payload = record.get("payload")
        # A string is the raw text as it arrived; one holding a lone surrogate (a "\\ud800"
        # escape in the recording) stands for bytes that are not UTF-8, which is what the
        # gate sees from a live device sending them (json_invalid), so keep them as such.
        raw = (payload.encode("utf-8", "surrogatepass") if isinstance(payload, str)
               else json.dumps(payload).encode())
        return RawMessage(topic, raw, received_at)
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        return BadLine(line_no, problem[:300], line, None)
    except RecursionError:  # JSON nested deeper than the parser recurses
        return BadLine(line_no, "not JSON: nested too deeply", line, None)


def read_recording(path: Path) -> Iterator[RawMessage | BadLine]:
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RecordingError(str(path), exc.strerror or str(exc)) from exc
    with handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                yield parse_line(line, line_no)


def read_messages(path: Path, *, prefix: str, site: str) -> Iterator[RawMessage | BadLine]:
    """The messages of a recording, or of a historian's CSV export (a ``.csv`` file)."""
    if path.suffix.lower() == ".csv":
        return read_csv(path, prefix=prefix, site=site)
    return read_recording(path)

TIME_NAMES = ("time", "ts", "timestamp")
NULLS = frozenset({"", "null", "nan", "none", "na"})


def _columns(header: list[str], path: Path) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    out = {}
    for want, aliases in (("time", TIME_NAMES), ("device", ("device",)),
                          ("sensor", ("sensor",)), ("value", ("value",))):
        found = next((names.index(a) for a in aliases if a in names), None)
        if found is None:
            raise RecordingError(str(path), f"CSV header has no {want!r} column "
                                 f"(found: {', '.join(names) or 'nothing'})")
        out[want] = found
    for optional in ("unit", "site"):
        if optional in names:
            out[optional] = names.index(optional)
    return out


def _value(text: str) -> float | str | None:
    if text.strip().lower() in NULLS:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def read_csv(path: Path, *, prefix: str, site: str) -> Iterator[RawMessage | BadLine]:
    """The CSV's readings as telemetry messages, in file order."""
    try:
        handle = path.open(encoding="utf-8", errors="replace", newline="")
    except OSError as exc:
        raise RecordingError(str(path), exc.strerror or str(exc)) from exc
    with handle:
        rows = csv.reader(handle)
        try:
            header = next(rows)
        except StopIteration:
            return
        cols = _columns(header, path)
        width = max(cols.values()) + 1
        group: tuple[str, str, str] | None = None
        readings: dict[str, Any] = {}
        when = 0.0
        for row in rows:
            line_no = rows.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < width:
                yield BadLine(line_no, f"{len(row)} columns, expected {width}", ",".join(row), None)
                continue
            try:
                ts = reception_time(_number_or_text(row[cols["time"]]))
            except ValueError as exc:
                yield BadLine(line_no, f"time: {exc}", ",".join(row), None)
                continue
            device = row[cols["device"]].strip()
            where = row[cols["site"]].strip() if "site" in cols else site
            key = (where, device, row[cols["time"]].strip())
            if group is not None and key != group:
                yield _message(prefix, group, readings, when)
                readings = {}
            group, when = key, ts
            unit = row[cols["unit"]].strip() if "unit" in cols else ""
            value = _value(row[cols["value"]])
            readings[row[cols["sensor"]].strip()] = (
                {"value": value, "unit": unit} if unit else value)
        if group is not None:
            yield _message(prefix, group, readings, when)


def _number_or_text(text: str) -> str | float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return text


def _message(prefix: str, group: tuple[str, str, str], readings: dict[str, Any],
             ts: float) -> RawMessage:
    site, device, _ = group
    payload = json.dumps({"ts": ts, "readings": readings}, separators=(",", ":"))
    return RawMessage(f"{prefix}/{site}/{device}/telemetry", payload.encode(), ts)
