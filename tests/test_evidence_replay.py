"""Issue 21's core changes through the live pipeline: a recording replayed by
``sensor-auditd replay`` (validation, store, audits on the recording's clock).

A gas unit whose zero sits 12 ppb below the reference's reports negative NO2 for hours
each night; its reference is an agency monitor reporting hourly averages, whose model
profile has no tolerance tables (a reference needs none). What a user relies on: the
negative readings are kept and counted, not quarantined; the device is compared by its
hourly means (not one minute per hour); the verdict is the offset, with the readings
outside the range named as evidence beside it; no lag, stuck or clipping is claimed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import replaying

START = 1_764_028_800  # 2025-11-25T00:00:00Z
HOURS = 30

DEVICE_PROFILE = """\
model = "ec-no2"
[sensors.no2]
quantity = "[]"
unit = "ppb"
range = [0.0, 2000.0]
interval_s = 60
[sensors.no2.tolerance]
bias = 5.0
gain = 0.35
rmse = 15.0
window = "24h"
"""

REFERENCE_PROFILE = """\
model = "agency-no2"
[sensors.no2]
quantity = "[]"
unit = "ppb"
range = [-5.0, 2000.0]
interval_s = 3600
"""

REFERENCE = """\
[[reference]]
id = "monitor"
site = "north"
serves = ["ec-*"]
sensors = ["no2"]
model = "agency-no2"
"""

CONFIG = '[audit]\ninterval = "1h"\n\n[models]\n"ec-*" = "ec-no2"\n'


def recording(path: Path, offset: float) -> None:
    rng = np.random.default_rng(7)
    minutes = np.arange(HOURS * 60)
    truth = 14.0 + 10.0 * np.sin(2 * math.pi * (minutes / 60.0 - 8.0) / 24.0)
    truth = truth + np.cumsum(rng.normal(0.0, 0.03, minutes.size))
    lines = []
    for m in minutes:
        ts = START + 60 * int(m)
        value = float(truth[m] + offset + rng.normal(0.0, 2.0))
        lines.append({"topic": "fleet/north/ec-01/telemetry", "received_at": ts + 1,
                      "payload": {"ts": ts, "readings": {"no2": round(value, 2)}}})
        if m % 60 == 59:  # the monitor reports the hour's mean when it ends, stamped at its start
            hour = int(m) // 60
            mean = float(truth[hour * 60:(hour + 1) * 60].mean())
            lines.append({"topic": "fleet/north/monitor/telemetry", "received_at": ts + 30,
                          "payload": {"ts": START + 3600 * hour,
                                      "readings": {"no2": round(mean, 1)}}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def replay(tmp_path: Path, offset: float) -> tuple[list[dict], dict]:
    recording(tmp_path / "rec.jsonl", offset)
    findings, summary = replaying.replay(
        tmp_path, tmp_path / "rec.jsonl",
        profiles={"ec-no2.toml": DEVICE_PROFILE, "agency-no2.toml": REFERENCE_PROFILE},
        references={"north.toml": REFERENCE}, config=CONFIG)
    return ([f for f in findings if f["kind"] == "calibration" and f["device"] == "ec-01"],
            summary)


def test_negative_readings_are_the_evidence_of_the_offset(tmp_path: Path) -> None:
    findings, summary = replay(tmp_path, offset=-12.0)
    assert "out_of_range" not in summary["readings_rejected"]
    assert summary["readings_out_of_range"] > 100
    last = findings[-1]
    assert last["status"] == "fail"
    causes = [c["cause"] for c in last["causes"]]
    assert causes[0] == "offset_drift", last["causes"]
    assert "out_of_range" in causes and "kept" in last["causes"][causes.index(
        "out_of_range")]["evidence"]
    assert not {"time_lag", "stuck", "clipping", "reference_fault"} & set(causes)
    # compared on the monitor's hours: about one pair an hour, not one minute an hour
    assert 20 <= last["metrics"]["n"] <= 24
    assert abs(last["metrics"]["bias"] + 12.0) < 3.0


def test_a_healthy_unit_against_an_hourly_monitor_passes(tmp_path: Path) -> None:
    findings, _ = replay(tmp_path, offset=0.5)
    assert findings and all(f["status"] != "fail" for f in findings), [
        (f["status"], f["causes"], f["metrics"]) for f in findings if f["status"] == "fail"]
