"""A firmware rollout replayed through the live pipeline: the cohort verdict, the change laid
beside the deviation, and the ``devices`` and ``history`` commands an operator reads."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rollout

from auditd.adapters.store import Store
from auditd.domain.metadata import DeviceHistory, changes, firmware_since


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The rollout recording replayed once for the whole module (about ten seconds)."""
    tmp = tmp_path_factory.mktemp("rollout")
    recording = rollout.write(tmp / "rollout.jsonl")
    cfg = rollout.config(tmp / "config.toml", tmp / "store.db")
    result = cli("replay", str(recording), "--config", str(cfg), "--out",
                 str(tmp / "findings.jsonl"), "--store", str(tmp / "store.db"))
    assert result.returncode == 0, result.stderr
    findings = [json.loads(line) for line in (tmp / "findings.jsonl").read_text().splitlines()]
    yield {"tmp": tmp, "config": cfg, "summary": json.loads(result.stdout),
           "findings": findings}


def final_audit(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last = max(f["window"]["end"] for f in findings if f["kind"] == "calibration")
    return [f for f in findings if f["kind"] == "calibration" and f["window"]["end"] == last]


def test_the_regressed_version_is_named_first_on_exactly_its_devices(
        replayed: dict[str, Any]) -> None:
    final = final_audit(replayed["findings"])
    failing = {(f["device"], f["sensor"]): f for f in final if f["status"] == "fail"}
    members = {(d, "pressure") for d in rollout.REGRESSED}
    assert set(failing) - {("th-200.fw-2.4.0", "pressure")} == members
    for key in members:
        f = failing[key]
        assert f["causes"][0]["cause"] == "firmware_regression"
        assert "2.4.0" in f["causes"][0]["evidence"]
        assert f["context"]["firmware_regression"]["version"] == rollout.BAD
        assert f["context"]["firmware_regression"]["affected"] == len(rollout.REGRESSED)
        assert f["context"]["firmware_change"] == {
            "from": rollout.OLD, "to": rollout.BAD, "at": "2025-11-25T12:00:00Z"}
    for device in rollout.BYSTANDERS:  # updated at the same moment, healthy: not blamed
        f = next(f for f in final if f["device"] == device and f["sensor"] == "pressure")
        assert f["status"] == "pass"
        assert all(c["cause"] != "firmware_regression" for c in f["causes"])


def test_the_cohort_gets_one_root_finding_listing_its_members(
        replayed: dict[str, Any]) -> None:
    roots = [f for f in final_audit(replayed["findings"]) if f["device"] == "th-200.fw-2.4.0"]
    assert len(roots) == 1
    root = roots[0]
    assert root["causes"][0]["cause"] == "firmware_regression"
    assert root["context"]["cohort"] == {"attribute": "firmware", "model": "th-200",
                                         "version": rollout.BAD}
    assert root["context"]["members"] == sorted(rollout.REGRESSED)
    assert root["metrics"]["deviating"] == len(rollout.REGRESSED)
    assert root["metrics"]["others_deviating"] == 0
    rollout_at = rollout.START + rollout.ROLLOUT_H * 3600
    onset = root["onset"]
    assert onset is not None and onset.startswith("2025-11-25T1")  # within the hour of 12:00
    assert abs(_epoch(onset) - rollout_at) <= 600


def test_retained_meta_redelivered_every_hour_is_one_version_per_firmware(
        replayed: dict[str, Any]) -> None:
    summary = replayed["summary"]
    # 13 first versions (12 devices + the reference) and 6 updates, out of 13 x 26 metas.
    assert summary["meta_versions"] == 13 + len(rollout.REGRESSED) + len(rollout.BYSTANDERS)
    with Store(replayed["tmp"] / "store.db") as store:
        assert len(store.devices.meta_history("th-north-07")) == 1
        assert [v.data["firmware"] for v in store.devices.meta_history("th-north-01")] == [
            rollout.OLD, rollout.BAD]


def test_the_update_is_one_change_whether_announced_by_event_and_meta(
        replayed: dict[str, Any]) -> None:
    with Store(replayed["tmp"] / "store.db") as store:
        history = DeviceHistory(
            "th-north-01", "north",
            tuple(store.devices.meta_history("th-north-01")),
            tuple(store.devices.events("th-north-01")))
    timeline = changes(history)
    assert [(c.type, c.source) for c in timeline] == [("firmware_update", "event")]
    assert firmware_since(history) == rollout.START + rollout.ROLLOUT_H * 3600


def test_history_shows_meta_event_and_the_finding_that_followed(
        replayed: dict[str, Any]) -> None:
    result = cli("history", "th-north-02", "--config", str(replayed["config"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["WHEN", "WHAT", "DETAIL"]
    kinds = [line.split()[1] for line in lines[1:]]
    assert kinds.index("event") < max(i for i, k in enumerate(kinds) if k == "finding")
    assert any("firmware 2.3.1 -> 2.4.0" in line and "meta" in line for line in lines)
    failing = [line for line in lines if "pressure: fail" in line]
    assert len(failing) == 1, "a repeated verdict is not repeated in the history"
    assert "firmware_regression" in failing[0]
    assert "after firmware 2.3.1 -> 2.4.0" in failing[0]


def test_devices_lists_the_fleet_with_open_findings(replayed: dict[str, Any]) -> None:
    result = cli("devices", "--config", str(replayed["config"]), "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["device"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {*rollout.DEVICES, "ref-north"}
    assert rows["ref-north"]["reference"] is True
    for device in rollout.DEVICES:
        row = rows[device]
        assert row["model"] == "th-200"
        assert row["firmware"] == rollout.firmware_at(device, rollout.START + 86_400)
        assert row["installed"] == "2025-03-01"
        assert row["open_findings"] == (1 if device in rollout.REGRESSED else 0)
    table = cli("devices", "--config", str(replayed["config"]))
    assert table.returncode == 0
    assert "th-north-01" in table.stdout and "firmware_regression" in table.stdout


def test_history_of_an_unknown_device_or_store_is_a_clear_usage_error(
        replayed: dict[str, Any], tmp_path: Path) -> None:
    result = cli("history", "nobody", "--config", str(replayed["config"]))
    assert result.returncode == 2 and "nobody" in result.stderr
    result = cli("devices", "--db", str(tmp_path / "missing.db"))
    assert result.returncode == 2 and "missing.db" in result.stderr
    assert not (tmp_path / "missing.db").exists()


def _epoch(text: str) -> float:
    from auditd.domain.validate import parse_timestamp

    return parse_timestamp(text)


def test_looking_never_writes_the_store(replayed: dict[str, Any]) -> None:
    db = replayed["tmp"] / "store.db"
    before = (db.stat().st_size, db.stat().st_mtime_ns)
    for command in (("devices",), ("history", "th-north-01"), ("status",)):
        assert cli(*command, "--config", str(replayed["config"])).returncode == 0
    assert (db.stat().st_size, db.stat().st_mtime_ns) == before
    wal = db.with_name("store.db-wal")  # SQLite's reader sidecar may appear, empty
    assert not wal.exists() or wal.stat().st_size == 0
