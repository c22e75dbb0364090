"""How soon the first finding comes, and what each stream is waiting for, as an operator
sees it: ``sensor-auditd run`` as a process against a private mosquitto, ``status`` and
``report`` as processes on the store it wrote.

Also the one definition of a stream (``auditd.domain.streams``): the log's ``audit_done``,
``status`` and the report count the same streams.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import DaemonProcess, Publisher, telemetry, write_config

from auditd.domain.streams import count_streams, verdicts_of
from auditd.model import Finding

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=120)


def _meta(site: str, device: str, model: str, ts: float) -> tuple[str, bytes]:
    return (f"fleet/{site}/{device}/meta",
            json.dumps({"ts": ts, "model": model, "firmware": "2.3.1"}).encode())


def _minutes(site: str, device: str, end: float, n: int) -> list[tuple[str, bytes]]:
    return [(f"fleet/{site}/{device}/telemetry",
             telemetry(end - 60 * (n - i), {"temperature": 20.0 + (i % 7) / 10}))
            for i in range(n)]


def _status(config: Path) -> tuple[str, dict[str, Any]]:
    text = _cli("status", "--config", str(config))
    assert text.returncode == 0, text.stderr
    data = _cli("status", "--config", str(config), "--json")
    assert data.returncode == 0, data.stderr
    return text.stdout, json.loads(data.stdout)


def _line(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(label + ":"))


@pytest.mark.broker
def test_status_says_when_the_next_audit_runs_and_what_each_stream_is_waiting_for(
        mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db,
                          audit_interval="4s", first_run_delay="2s")
    daemon = DaemonProcess(config).start()
    now = time.time()
    device = Publisher(mosquitto.port)
    try:
        # A site no reference serves: the audit judges nothing, and says so.
        device.publish_many([_meta("south", "th-south-01", "th-200", now),
                             *_minutes("south", "th-south-01", now, 20)])
        first = daemon.wait_event(lambda e: e.get("event") == "audit_done"
                                  and e.get("waiting") == 1, 30)
        assert first["streams"] == 1 and first["judged"] == 0 and first["unjudged"] == 1
        text, data = _status(config)
        assert "never" not in _line(text, "last audit")
        assert data["last_audit_at"] is not None
        next_audit = _line(text, "next audit")
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in [\d.]+ s; then every 4 s\)",
                         next_audit), next_audit
        assert ("  th-south-01/temperature: no reference instrument serves th-south-01 at "
                "site 'south'") in text

        # Beside the reference, twenty minutes of an hour's worth: insufficient data.
        device.publish_many([_meta("north", "th-north-01", "th-200", now),
                             _meta("north", "ref-north", "ref-station", now),
                             *_minutes("north", "th-north-01", now, 20),
                             *_minutes("north", "ref-north", now, 20)])
        second = daemon.wait_event(lambda e: e.get("event") == "audit_done"
                                   and e.get("insufficient_data") == 1, 30)
        text, data = _status(config)
    finally:
        device.close()
        assert daemon.terminate() == 0
    assert second["streams"] == 2 and second["reference_streams"] == 1
    assert second["waiting"] == 1 and second["judged"] == 0
    waiting = {u["device"]: u["why"] for u in data["last_run"]["unjudged"]}
    assert set(waiting) == {"th-north-01", "th-south-01"}
    has = re.fullmatch(r"needs 60 paired points with reference ref-north in its 24 h window, "
                       r"has (\d+)", waiting["th-north-01"])
    assert has is not None and 0 < int(has.group(1)) <= 20, waiting["th-north-01"]
    assert f"  th-north-01/temperature: {waiting['th-north-01']}" in text
    streams = _line(text, "streams")
    assert ("at the last audit 2 field streams: 0 judged (0 pass, 0 fail), 2 not "
            "(1 insufficient data, 1 waiting); 1 of reference instruments") in streams

    # The report counts the same streams as the log and status.
    report = _cli("report", "--store", str(db), "--json", str(tmp_path / "r.json"),
                  "--config", str(config))
    assert report.returncode == 0, report.stderr
    sites = {s["site"]: s for s in json.loads((tmp_path / "r.json").read_text())["sites"]}
    assert sum(s["streams"] for s in sites.values()) == second["streams"]
    assert sum(s["reference_streams"] for s in sites.values()) == second["reference_streams"]
    assert sites["north"]["insufficient_data"] == 1 and sites["south"]["waiting"] == 1
    assert report.stdout.startswith("2 streams: 0 judged (0 failing), 2 not yet;")


def _finding(device: str, sensor: str | None, status: str, kind: str = "calibration",
             **context: Any) -> Finding:
    return Finding(kind=kind, site="north", device=device, sensor=sensor, status=status,
                   severity="minor" if status == "fail" else "none", window_start=0.0,
                   window_end=3600.0, context=context)


def test_a_stream_is_a_field_devices_sensor_and_cohorts_and_metadata_are_not_streams() -> None:
    stored = [("north", "th-1", "temperature"), ("north", "th-1", "humidity"),
              ("north", "th-2", "temperature"), ("north", "th-3", "temperature"),
              ("north", "ref-north", "temperature")]
    findings = [_finding("th-1", "temperature", "pass"), _finding("th-1", "humidity", "fail"),
                _finding("th-2", "temperature", "insufficient_data"),
                _finding("th-200.fw-2.4.0", "temperature", "fail", comparison="cohort"),
                _finding("th-1", None, "fail", kind="metadata")]
    counts = count_streams(stored, lambda device: device == "ref-north",
                           verdicts_of(findings))
    assert counts.as_dict() == {"streams": 4, "judged": 2, "unjudged": 2, "pass": 1, "fail": 1,
                                "insufficient_data": 1, "waiting": 1, "reference_streams": 1}
    assert counts.stored == len(stored)
