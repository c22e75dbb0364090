"""Issue 21 end to end: a simulated fleet recorded, then replayed through the real CLI
(the same Ingestor, Auditor and store as the daemon), with the ticket file sink.

A slow offset drift (three days to three tolerances) is one alert and one ticket, dated on
every failing finding; a stray message naming a sensor the profile lacks is a metadata
finding and nothing more.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from auditd.model import Finding, from_iso

REPO = Path(__file__).resolve().parents[1]

SCENARIO = """
seed = 21
start = "2026-11-20T00:00:00Z"
duration = "4d"
hostile = 0

[[site]]
name = "north"
reference = "ref-north"
devices = {"th-200" = 6}

[[fault]]
cause = "offset_drift"
device = "th-north-01"
sensor = "temperature"
at = "12h"
ramp = "3d"
"""

CONFIG = '[audit]\ninterval = "3h"\nwindow = "24h"\n'


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=900)


def test_a_slow_drift_is_one_dated_alert_and_a_stray_message_no_ticket(tmp_path: Path) -> None:
    (tmp_path / "scenario.toml").write_text(SCENARIO)
    (tmp_path / "config.toml").write_text(CONFIG)
    rec, truth = tmp_path / "rec.jsonl", tmp_path / "truth.json"
    result = cli("simulate", "--scenario", str(tmp_path / "scenario.toml"), "--out", str(rec),
                 "--truth", str(truth))
    assert result.returncode == 0, result.stderr
    lines = rec.read_text().splitlines()
    start = from_iso("2026-11-20T00:00:00Z")
    assert start is not None
    stray_at = start + 2 * 86_400 + 30
    stray = {"topic": "fleet/north/th-north-02/telemetry", "received_at": stray_at,
             "payload": {"ts": stray_at, "readings": {"co2": 412.0}}}
    lines.append(json.dumps(stray))
    lines.sort(key=lambda line: json.loads(line)["received_at"])
    rec.write_text("\n".join(lines) + "\n")

    found, tickets = tmp_path / "findings.jsonl", tmp_path / "tickets.jsonl"
    result = cli("replay", str(rec), "--config", str(tmp_path / "config.toml"),
                 "--profiles", str(REPO / "device_profiles"),
                 "--references", str(REPO / "references"), "--out", str(found),
                 "--tickets", str(tickets))
    assert result.returncode == 0, result.stderr
    findings = [Finding.from_json(json.loads(x)) for x in found.read_text().splitlines()]
    sent = [json.loads(x) for x in tickets.read_text().splitlines()] if tickets.exists() else []

    # the drift: one alert (updated as it grows), never resolved and reopened
    drift = [t for t in sent if (t["device"], t["sensor"]) == ("th-north-01", "temperature")]
    assert [t["event"] for t in drift if t["event"] in ("open", "resolve")] == ["open"], drift
    assert len({t["ticket_id"] for t in drift}) == 1
    failing = [f for f in findings if (f.device, f.sensor, f.kind, f.status)
               == ("th-north-01", "temperature", "calibration", "fail")]
    assert len(failing) >= 5
    onset = start + 12 * 3600
    crossed = onset + 86_400  # a third of the three-day ramp: one tolerance
    assert all(f.onset is not None and onset - 6 * 3600 <= f.onset <= crossed + 6 * 3600
               for f in failing), [(f.window_end, f.onset) for f in failing]

    # the stray message: a metadata finding (data quality), no alert, no ticket
    metadata = [f for f in findings if f.kind == "metadata" and f.device == "th-north-02"]
    assert [c.cause for f in metadata for c in f.causes] == ["sensor_not_in_profile"]
    assert not [t for t in sent if t["device"] == "th-north-02"], sent
    # and no ticket on a healthy stream, nor on the reference
    assert {t["device"] for t in sent} <= {"th-north-01"}, sent
