"""One severity per finding, the same wherever a person or a script reads it.

A profile's ``impact`` weighs its faults (docs/alerts.md). The weighting is applied once,
by the audit that makes the finding, so the report, ``findings`` (the alerts), ``status``
and the finding published over MQTT (the outbox's payload, byte for byte what the broker
gets) all show the same word. Run through the real command line on a replayed fleet with
faults of several severities, once with the shipped profiles and once with every profile
weighted by 1.5.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from auditd.model import weighted

REPO = Path(__file__).resolve().parents[1]

SCENARIO = """
seed = 11
start = "2026-11-20T00:00:00Z"
duration = "10h"
hostile = 0

[[site]]
name = "north"
devices = {"th-200" = 6}

[[fault]]
cause = "offset_drift"
device = "th-north-01"
sensor = "temperature"
at = "5h"

[[fault]]
cause = "stuck"
device = "th-north-02"
sensor = "humidity"
at = "5h"

[[fault]]
cause = "noise"
device = "th-north-03"
sensor = "temperature"
at = "5h"

[[fault]]
cause = "gain_drift"
device = "th-north-04"
sensor = "temperature"
at = "5h"
"""

IMPACT = 1.5


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"{args[0]}: {result.stderr}"
    return result


def audited(tmp: Path, recording: Path, impact: float | None) -> dict[str, Any]:
    """Replay ``recording`` with profiles that open an alert at the first failing audit
    (and weigh by ``impact``); what each view then says about each failing stream."""
    profiles = tmp / "profiles"
    shutil.copytree(REPO / "device_profiles", profiles)
    for path in profiles.glob("*.toml"):
        extra = "\n[alerts]\nopen_after = 1\n" + (f"impact = {impact}\n" if impact else "")
        path.write_text(path.read_text() + extra)
    config = tmp / "config.toml"
    db = tmp / "audit.db"
    config.write_text(f'profiles_dir = "{profiles}"\nreferences_dir = "{REPO / "references"}"\n'
                      f'[store]\npath = "{db}"\n[audit]\ninterval = "1h"\nwindow = "4h"\n')
    cli("replay", str(recording), "--config", str(config), "--out", str(tmp / "f.jsonl"),
        "--store", str(db), "--tickets", str(tmp / "tickets.jsonl"))
    cli("report", "--config", str(config), "--json", str(tmp / "report.json"))
    report = json.loads((tmp / "report.json").read_text())
    alerts = json.loads(cli("findings", "--json", "--config", str(config)).stdout)
    table = cli("findings", "--config", str(config)).stdout.splitlines()
    header = table[0].split()
    column = {name: header.index(name) for name in ("SEVERITY", "DEVICE", "SENSOR")}
    rows = [line.split() for line in table[1:] if line.startswith("sa-")]
    tickets = [json.loads(line) for line in (tmp / "tickets.jsonl").read_text().splitlines()]
    status = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    with sqlite3.connect(db) as conn:
        published = [json.loads(payload) for topic, payload in conn.execute(
            "SELECT topic, payload FROM outbox ORDER BY id") if "/finding/" in topic]
    latest: dict[tuple[str, str | None], dict[str, Any]] = {}
    for finding in published:
        latest[(finding["device"], finding["sensor"])] = finding
    return {
        "report": {(f["finding"]["device"], f["finding"]["sensor"]): f["finding"]["severity"]
                   for f in report["failing"]},
        "alerts": {(a["device"], a["sensor"]): a["severity"]
                   for top in alerts for a in (top, *top["grouped"])
                   if a["state"] in ("open", "acknowledged") and not a["unconfirmed"]},
        # an alert still open on a pass that did not show health (issue 21: "unconfirmed")
        # shows the severity of its last failing finding; the report lists only failures
        "table": {(r[column["DEVICE"]], r[column["SENSOR"]]): r[column["SEVERITY"]]
                  for r in rows if (r[column["DEVICE"]], r[column["SENSOR"]]) not in {
                      (a["device"], a["sensor"]) for top in alerts
                      for a in (top, *top["grouped"]) if a["unconfirmed"]}},
        "tickets": [(t["severity"], t["finding"]["severity"]) for t in tickets
                    if t["event"] != "resolve"],
        "status": {(f["device"], f["sensor"]): f["severity"] for f in status["failing"]},
        "published": {key: f["severity"] for key, f in latest.items() if f["status"] == "fail"},
    }


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("severity")
    (tmp / "scenario.toml").write_text(SCENARIO)
    cli("simulate", "--scenario", str(tmp / "scenario.toml"), "--out", str(tmp / "rec.jsonl"))
    return tmp / "rec.jsonl"


def _agree(views: dict[str, Any]) -> None:
    failing = views["report"]
    assert failing, "the scenario's faults fail"
    assert views["status"] == failing
    assert views["published"] == failing
    for key, severity in views["alerts"].items():
        assert failing.get(key) == severity, (key, severity, failing.get(key))
    assert views["table"], "the findings table lists the open alerts"
    for key, severity in views["table"].items():
        assert failing.get(key) == severity, ("findings table", key, severity)
    assert views["tickets"], "tickets were requested"
    for ticket, finding in views["tickets"]:
        assert ticket == finding
    assert set(views["alerts"]) >= {k for k in failing if k[0].startswith("th-north-0")}


def test_a_finding_has_one_severity_in_report_alerts_status_and_mqtt(
        recording: Path, tmp_path: Path) -> None:
    plain = audited(tmp_path / "plain", recording, None)
    _agree(plain)
    heavy = audited(tmp_path / "heavy", recording, IMPACT)
    _agree(heavy)
    # The weight reaches the finding itself, once: not only its alert.
    assert set(heavy["report"]) == set(plain["report"])
    for key, severity in plain["report"].items():
        assert heavy["report"][key] == weighted(severity, IMPACT), key
    assert any(heavy["report"][k] != s for k, s in plain["report"].items()), \
        "no failing stream whose severity the weight changes: the test proves nothing"
