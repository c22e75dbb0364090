"""A synthetic fleet with known faults through the real replay, scored: what a team relies
on before trusting the audit with its own fleet. Plus the CSV source and the scorer."""

from __future__ import annotations

import csv
import json
import math
import random
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from auditd.adapters.config.catalog import build_catalog, load_profiles, load_references
from auditd.adapters.sources.recordings import BadLine
from auditd.domain.validate import parse_timestamp
from auditd.model import Cause, Finding, RawMessage, Status
from auditd.sim import evaluate, scenario, simulate

REPO = Path(__file__).resolve().parents[1]

SCENARIO = """
seed = 3
start = "2026-11-20T00:00:00Z"
duration = "14h"
hostile = 8

[[site]]
name = "north"
reference = "ref-north"
devices = {"th-200" = 10, "co2-ndir" = 3}

[[fault]]
cause = "offset_drift"
device = "th-north-01"
sensor = "temperature"
at = "8h"

[[fault]]
cause = "gain_drift"
device = "th-north-02"
sensor = "temperature"
at = "8h"

[[fault]]
cause = "unit_mismatch"
device = "th-north-03"
sensor = "temperature"
at = "8h"
unit = "degF"

[[fault]]
cause = "stuck"
device = "th-north-04"
sensor = "humidity"
at = "8h"

[[fault]]
cause = "noise"
device = "th-north-05"
sensor = "temperature"
at = "8h"

[[fault]]
cause = "dropout"
device = "th-north-06"
sensor = "humidity"
at = "4h"

[[fault]]
cause = "time_lag"
device = "th-north-07"
sensor = "temperature"
at = "6h"

[[fault]]
cause = "out_of_range"
device = "th-north-08"
sensor = "humidity"
at = "8h"

[[fault]]
cause = "clipping"
device = "th-north-09"
sensor = "humidity"
at = "8h"

[[fault]]
cause = "reference_fault"
device = "ref-north"
sensor = "co2"
at = "8h"

# A firmware rollout to a cohort that shifts its pressure readings.
[[fault]]
cause = "firmware_regression"
devices = ["th-north-01", "th-north-02", "th-north-03"]
sensor = "pressure"
at = "6h"
firmware = "2.4.0"

# A benign rollout: new meta versions and firmware_update events, no fault.
[[rollout]]
devices = ["th-north-05", "th-north-06"]
at = "3h"
firmware = "2.3.2"
"""

CONFIG = '[audit]\ninterval = "1h"\nwindow = "6h"\n'


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=300)


def catalog():  # type: ignore[no-untyped-def]
    return build_catalog(load_profiles(REPO / "device_profiles"),
                         load_references(REPO / "references"), {})


def test_every_injected_fault_is_found_with_its_cause_first_and_no_false_alarm(
        tmp_path: Path) -> None:
    (tmp_path / "scenario.toml").write_text(SCENARIO)
    (tmp_path / "config.toml").write_text(CONFIG)
    rec, truth, found = tmp_path / "rec.jsonl", tmp_path / "truth.json", tmp_path / "f.jsonl"
    result = cli("simulate", "--scenario", str(tmp_path / "scenario.toml"), "--out", str(rec),
                 "--truth", str(truth))
    assert result.returncode == 0, result.stderr
    result = cli("replay", str(rec), "--config", str(tmp_path / "config.toml"),
                 "--profiles", str(REPO / "device_profiles"),
                 "--references", str(REPO / "references"), "--out", str(found),
                 "--summary", str(tmp_path / "summary.json"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    rejected = summary["readings_rejected"]
    for reason in ("json_invalid", "topic_invalid", "unit_incompatible", "ts_invalid",
                   "ts_future", "payload_too_large", "sensor_unknown", "event_type_invalid"):
        assert rejected.get(reason, 0) >= 1, (reason, rejected)
    # impossible humidity values are kept, flagged and counted, not quarantined
    assert "out_of_range" not in rejected and summary["readings_out_of_range"] >= 1

    result = cli("evaluate", "--truth", str(truth), "--findings", str(found),
                 "--out", str(tmp_path / "scores.json"))
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    injected = {f["cause"] for f in json.loads(truth.read_text())["faults"]}
    assert injected == set(scenario.CAUSES)
    misses = [p for p in scores["per_fault"] if p["top"] != p["cause"]]
    assert not misses, result.stdout
    assert scores["false_alarms"] == [], result.stdout
    assert scores["healthy_streams"] >= 5
    for cause in injected:
        assert scores["by_cause"][cause]["recall"] == 1.0
        assert scores["by_cause"][cause]["precision"] == 1.0
    (blame,) = scores["reference_faults"]
    assert blame["reference_blamed"] and not blame["devices_blaming_themselves"]
    assert blame["devices_blaming_reference"] == 3
    (firmware,) = scores["firmware_regressions"]
    assert firmware == {"firmware": "2.4.0", "root_findings": ["th-200.fw-2.4.0"]}
    offset = next(p for p in scores["per_fault"] if p["cause"] == "offset_drift")
    assert offset["onset_error_s"] is not None and offset["onset_error_s"] <= 600


def test_same_seed_same_bytes_other_seed_other_fleet() -> None:
    chosen = scenario.scenario_from({
        "seed": 5, "duration": "3h", "hostile": 0,
        "site": [{"name": "north", "devices": {"th-200": 3}}],
        "fault": [{"cause": "stuck", "device": "th-north-02", "sensor": "pressure",
                   "at": "1h"}]})
    cat = catalog()
    a = simulate.generate(chosen, cat)
    b = simulate.generate(chosen, cat)
    assert [m.to_line() for m in a.messages] == [m.to_line() for m in b.messages]
    c = simulate.generate(scenario.scenario_from({
        "seed": 6, "duration": "3h", "site": [{"name": "north", "devices": {"th-200": 3}}]}),
        cat)
    assert [m.to_line() for m in a.messages[:50]] != [m.to_line() for m in c.messages[:50]]
    telemetry = [m for m in a.messages if m.topic == "fleet/north/th-north-02/telemetry"
                 and isinstance(m.payload, dict)]
    after = [m.payload["readings"]["pressure"] for m in telemetry
             if m.payload["ts"] >= chosen.start + 3600 + 60]
    before = [m.payload["readings"]["pressure"] for m in telemetry
              if m.payload["ts"] < chosen.start + 3600]
    assert len(set(after)) == 1 and len(set(before)) > 10


def test_scenario_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[site]]\nname = "north"\ndevices = {"th-200" = 2}\n'
                    '[[fault]]\ncause = "gremlins"\ndevice = "th-north-01"\n'
                    'sensor = "temperature"\nat = "1h"\n')
    result = cli("simulate", "--scenario", str(path), "--out", str(tmp_path / "x.jsonl"))
    assert result.returncode == 2
    assert "bad.toml" in result.stderr and "fault[0].cause" in result.stderr
    assert "Traceback" not in result.stderr


def test_csv_export_is_audited_like_the_recording(tmp_path: Path) -> None:
    """A historian's CSV (degF for one device, an outage, a broken row) through replay."""
    start = 1_795_132_800
    rng = random.Random(4)
    rows = [["time", "site", "device", "sensor", "value", "unit"]]
    for minute in range(180):
        t = start + 60 * minute
        stamp = f"{t}"
        truth = 10 + 3 * math.sin(minute / 40) + rng.gauss(0, 0.1)
        rows.append([stamp, "north", "ref-north", "temperature",
                     f"{truth + rng.gauss(0, 0.03):.2f}", "degC"])
        for k in (1, 2, 3):
            value = truth + (2.0 if k == 2 else 0.0) + rng.gauss(0, 0.15)
            if k == 3:
                rows.append([stamp, "north", f"th-north-0{k}", "temperature",
                             f"{value * 9 / 5 + 32:.2f}", "degF"])
            elif k == 1 and minute == 100:
                rows.append([stamp, "north", f"th-north-0{k}", "temperature", "", ""])
            else:
                rows.append([stamp, "north", f"th-north-0{k}", "temperature", f"{value:.2f}",
                             ""])
    rows.append(["not a time", "north", "th-north-01", "temperature", "1", ""])
    with (tmp_path / "export.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    (tmp_path / "config.toml").write_text('[models]\n"th-north-*" = "th-200"\n')
    result = cli("replay", str(tmp_path / "export.csv"), "--config",
                 str(tmp_path / "config.toml"), "--profiles", str(REPO / "device_profiles"),
                 "--references", str(REPO / "references"), "--out", str(tmp_path / "f.jsonl"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["readings_accepted"] == 180 * 4 - 1 + 1
    assert summary["nulls"] == 1
    assert summary["readings_rejected"] == {"recording_invalid": 1}
    last = {}
    for line in (tmp_path / "f.jsonl").read_text().splitlines():
        f = json.loads(line)
        last[f["device"]] = f
    assert last["th-north-02"]["status"] == "fail"
    assert last["th-north-02"]["causes"][0]["cause"] == "offset_drift"
    assert last["th-north-01"]["status"] == "pass"
    assert last["th-north-03"]["status"] == "pass"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.text(max_size=12), max_size=7), max_size=12))
def test_csv_source_never_raises_on_any_row(tmp_path_factory, rows) -> None:  # type: ignore[no-untyped-def]
    from auditd.adapters.sources.recordings import read_csv

    path = tmp_path_factory.mktemp("csv") / "x.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["time", "device", "sensor", "value", "unit"], *rows])
    for item in read_csv(path, prefix="fleet", site="north"):
        assert isinstance(item, RawMessage | BadLine)
        if isinstance(item, RawMessage):
            json.loads(item.payload)


def test_scores_count_a_wrong_cause_and_a_false_alarm() -> None:
    truth = {"faults": [{"device": "a", "sensor": "t", "cause": "offset_drift",
                         "onset": "2026-01-01T06:00:00Z"}],
             "streams": [{"device": d, "sensor": "t", "reference": False} for d in "abc"]}

    def finding(device: str, end: str, status: Status, cause: str | None) -> Finding:
        return Finding(kind="calibration", site="s", device=device, sensor="t", status=status,
                       severity="minor" if status == "fail" else "none",
                       window_start=parse_timestamp("2026-01-01T00:00:00Z"),
                       window_end=parse_timestamp(end),
                       causes=(Cause(cause, 0.9, ""),) if cause else ())

    right = [finding("a", "2026-01-01T08:00:00Z", "fail", "offset_drift"),
             finding("b", "2026-01-01T08:00:00Z", "pass", None)]
    scores = evaluate.score(truth, right)
    assert scores["top1_accuracy"] == 1.0 and scores["false_alarm_streams"] == 0
    wrong = [finding("a", "2026-01-01T08:00:00Z", "fail", "noise"),
             finding("a", "2026-01-01T05:00:00Z", "fail", "offset_drift"),
             finding("c", "2026-01-01T03:00:00Z", "fail", "stuck")]
    scores = evaluate.score(truth, wrong)
    assert scores["top1_accuracy"] == 0.0 and scores["detected"] == 1
    assert scores["by_cause"]["offset_drift"]["recall"] == 0.0
    assert scores["by_cause"]["noise"]["precision"] == 0.0
    assert [fa["device"] for fa in scores["false_alarms"]] == ["c"]
