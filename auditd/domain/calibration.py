"""Corrections recorded as calibration events, applied to a device's readings.

``sensor-auditd colocate --apply`` records a correction fitted against a reference as a
``calibration`` event of the device, with a ``correction`` object for one sensor. From the
event's time on, the audit judges that sensor's readings as corrected
(``offset + gain x raw``): the store keeps what the device sent, the correction is applied
where the readings are read for judging, so a wrong correction can be superseded by a newer
event without rewriting history.

Only events carrying a ``correction`` object are applied: a device that reports its own
calibration sends readings that are already corrected. A correction with a humidity term
needs the device's humidity at each instant and is not applied here (it stays on record).

Pure: events and arrays in, arrays out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditd.model import EventRecord

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True, slots=True)
class LinearCorrection:
    since: float
    """Epoch seconds from which it applies (the event's time)."""
    gain: float
    offset: float


def correction_payload(sensor: str, unit: str, gain: float | int | None,
                       offset: float | int | None,
                       humidity_coefficient: float | int | None) -> dict[str, Any]:
    """The ``correction`` object of a calibration event (the form ``corrections`` reads)."""
    out: dict[str, Any] = {"sensor": sensor, "unit": unit, "gain": gain, "offset": offset,
                           "form": "corrected = offset + gain * raw"}
    if humidity_coefficient is not None:
        out["humidity_coefficient"] = humidity_coefficient
        out["form"] += " + humidity_coefficient * humidity"
    return out


def corrections(events: Iterable[EventRecord], sensor: str) -> list[LinearCorrection]:
    """The applicable corrections of one sensor, oldest first."""
    out = []
    for e in events:
        if e.type != "calibration":
            continue
        c = e.data.get("correction")
        if not isinstance(c, Mapping) or c.get("sensor") != sensor:
            continue
        if c.get("humidity_coefficient") is not None:
            continue
        gain: Any = c.get("gain")
        offset: Any = c.get("offset")
        if not (_finite(gain) and _finite(offset)) or gain == 0:
            continue
        out.append(LinearCorrection(float(e.ts), float(gain), float(offset)))
    out.sort(key=lambda c: c.since)
    return out


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def apply(ts: FloatArray, values: FloatArray,
          found: Iterable[LinearCorrection]) -> FloatArray:
    """``values`` with each reading corrected by the latest correction at or before its
    time; readings before the first correction are returned as they are."""
    cs = list(found)
    if not cs:
        return values
    out = np.array(values, dtype=np.float64, copy=True)
    since = np.array([c.since for c in cs])
    which = np.searchsorted(since, ts, side="right") - 1
    for i, c in enumerate(cs):
        sel = which == i
        out[sel] = c.offset + c.gain * out[sel]
    return out
