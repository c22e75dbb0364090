"""The fleet, offline: eight sites each replayed as its own gateway (tests/fleet_sites.py),
their stores imported into a real PostgreSQL, and the report a fleet operator reads:
exactly the one cohort no site could see, the drifting reference named, the page drawn in a
real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import fleet_sites
import psycopg
import pytest
from browser import console_errors, probe
from postgres import scratch_database

pytestmark = pytest.mark.slow


def cli(*args: str, dsn: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SENSOR_AUDITD_DSN", None)
    if dsn is not None:
        env["SENSOR_AUDITD_DSN"] = dsn
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The eight sites replayed, each by its own gateway into its own store (about a
    minute: eight replays of a day of minute readings)."""
    tmp = tmp_path_factory.mktemp("sites")
    references = fleet_sites.write_references(tmp / "references")
    out = []
    for k, site in enumerate(fleet_sites.SITES):
        store = tmp / f"gw-{site}.db"
        recording = fleet_sites.write_site(site, tmp / f"{site}.jsonl", seed=100 + k)
        cfg = fleet_sites.config(tmp / f"{site}.toml", site, references, store)
        result = cli("replay", str(recording), "--config", str(cfg), "--out",
                     str(tmp / f"{site}.findings.jsonl"), "--store", str(store))
        assert result.returncode == 0, result.stderr
        out.append(store)
    return out


@pytest.fixture(scope="module")
def imported(stores: list[Path]) -> Iterator[dict[str, Any]]:
    with scratch_database("fleet_offline") as dsn:
        result = cli("fleet", "import", "--dsn", dsn, *map(str, stores))
        assert result.returncode == 0, result.stderr
        yield {"dsn": dsn, "first": json.loads(result.stdout)}


TABLES = ("gateways", "findings", "findings_latest", "devices", "device_versions",
          "audit_reports", "tickets", "rejected")


def dump(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in TABLES}


def test_each_store_is_imported_under_its_gateway(imported: dict[str, Any]) -> None:
    imports = imported["first"]["imports"]
    assert [i["gateway"] for i in imports] == [f"gw-{s}" for s in fleet_sites.SITES]
    assert all(i["rejected"] == 0 and i["records"] > 0 for i in imports)
    new = imported["first"]["new"]
    assert new["devices"] == 8 * 6  # five and the reference at each site
    assert new["findings"] > 0 and new["rejected"] == 0
    with psycopg.connect(imported["dsn"]) as conn:
        per_gateway = conn.execute("SELECT gateway, count(DISTINCT device) FROM findings "
                                   "WHERE device LIKE 'th-%' GROUP BY gateway "
                                   "ORDER BY gateway").fetchall()
    assert per_gateway == [(f"gw-{s}", 5) for s in fleet_sites.SITES]


def test_importing_the_same_stores_again_changes_nothing(
        imported: dict[str, Any], stores: list[Path]) -> None:
    before = dump(imported["dsn"])
    result = cli("fleet", "import", *(f"gw-{p.stem[3:]}={p}" for p in stores),
                 dsn=imported["dsn"])  # DSN from the environment, names given explicitly
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout)
    assert set(again["new"].values()) == {0}, again["new"]
    assert [i["records"] for i in again["imports"]] == [
        i["records"] for i in imported["first"]["imports"]]
    assert dump(imported["dsn"]) == before


@pytest.fixture(scope="module")
def report(imported: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("report")
    result = cli("fleet", "report", "--dsn", imported["dsn"], "--json", str(tmp / "r.json"),
                 "--html", str(tmp / "r.html"), "--profiles",
                 str(fleet_sites.REPO / "device_profiles"))
    assert result.returncode == 0, result.stderr
    return {"json": json.loads((tmp / "r.json").read_text()), "html": tmp / "r.html",
            "stdout": result.stdout}


def test_exactly_one_cohort_the_release_on_all_eight_devices(report: dict[str, Any]) -> None:
    (cohort,) = report["json"]["cohorts"]
    assert (cohort["model"], cohort["firmware"]) == ("th-200", fleet_sites.BAD)
    assert (cohort["sensor"], cohort["cause"]) == ("pressure", "offset_drift")
    assert sorted(cohort["members"]) == sorted(fleet_sites.regressed(s)
                                               for s in fleet_sites.SITES)
    assert cohort["sites"] == fleet_sites.SITES
    assert cohort["firmware_change"]["from"] == fleet_sites.OLD
    assert cohort["firmware_change"]["following"] == 8
    assert cohort["p_adjusted"] <= 0.05 and cohort["correction"] == "holm"


def test_the_drifting_reference_is_named_and_its_devices_not_blamed(
        report: dict[str, Any]) -> None:
    data = report["json"]
    drifting = [r for r in data["references"] if r["state"] == "drifting"]
    assert [(r["site"], r["reference"], r["sensor"]) for r in drifting] == [
        (fleet_sites.DRIFTING_SITE, f"ref-{fleet_sites.DRIFTING_SITE}", "temperature")]
    site_devices = fleet_sites.devices(fleet_sites.DRIFTING_SITE)
    assert drifting[0]["unreliable"] == site_devices
    assert drifting[0]["bias"] == pytest.approx(fleet_sites.REFERENCE_STEP, abs=0.2)
    # every open finding is listed with its site, the reference's own fault among them
    opened = {(f["site"], f["device"], f["sensor"]): f for f in data["open_findings"]}
    own = opened[(fleet_sites.DRIFTING_SITE, f"ref-{fleet_sites.DRIFTING_SITE}",
                  "temperature")]
    assert own["causes"][0] == "reference_fault" and not own["unreliable"]
    for device in site_devices:
        assert opened[(fleet_sites.DRIFTING_SITE, device, "temperature")]["unreliable"]
    # the reference is due, its devices are not for what it did to them
    due = {(i["site"], i["device"]): i for i in data["due"]}
    assert "temperature: reference drifting" in due[
        (fleet_sites.DRIFTING_SITE, f"ref-{fleet_sites.DRIFTING_SITE}")]["reasons"]
    for device in site_devices:
        reasons = due.get((fleet_sites.DRIFTING_SITE, device), {}).get("reasons", [])
        assert not any(r.startswith("temperature") for r in reasons)


def test_open_tickets_are_on_the_due_list(report: dict[str, Any]) -> None:
    due = {(i["site"], i["device"]): i for i in report["json"]["due"]}
    for site in fleet_sites.SITES:
        item = due[(site, fleet_sites.regressed(site))]
        assert "pressure: offset_drift" in item["reasons"]
        (ticket,) = item["tickets"]
        assert ticket["filed_by"][0]["gateway"] == f"gw-{site}"


def test_the_page_draws_the_cohort_timeline_in_a_real_browser(
        report: dict[str, Any], tmp_path: Path) -> None:
    from matplotlib.image import imread

    text = report["html"].read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text), "not self-contained"
    assert console_errors(report["html"]) == []
    plots = probe(report["html"], tmp_path / "shot.png")
    timelines = [p for p in plots if "timeline" in p["cls"]]
    assert len(timelines) == 1
    # eight members: a firmware change and an onset each, drawn inside the plot
    assert timelines[0]["marks"] == 16
    shot = imread(str(tmp_path / "shot.png"))[..., :3]
    left, top, width, height = (int(v) for v in timelines[0]["rect"])
    region = shot[top:top + height, left:left + width]
    orange = (abs(region - [1.0, 127 / 255, 14 / 255]).max(axis=2) < 0.1).sum()
    assert orange > 8 * 10, "the firmware changes are not drawn"
    assert "ref-s4" in text and "th-200 firmware 2.4.0" in text


def test_status_lists_every_gateway(imported: dict[str, Any]) -> None:
    result = cli("fleet", "status", "--json", dsn=imported["dsn"])
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert [g["gateway"] for g in status["gateways"]] == [f"gw-{s}" for s in
                                                          fleet_sites.SITES]
    assert all(g["devices"] == 6 for g in status["gateways"])
    text = cli("fleet", "status", dsn=imported["dsn"])
    assert "8 gateways" in text.stdout and "s4/gw-s4" in text.stdout


def test_a_store_of_an_older_schema_imports_unmigrated(
        stores: list[Path], tmp_path: Path) -> None:
    """A schema-1 store (before alerts and tickets, before findings.exact): the same
    findings and devices, and the file is not touched."""
    old = tmp_path / "gw-s1.db"
    shutil.copy(stores[0], old)
    # Closed here, not when the garbage collector gets to it: closing the last connection
    # checkpoints the WAL into the file, which would change it after ``before`` is read.
    with closing(sqlite3.connect(old)) as conn, conn:
        for trigger in ("quarantine_after_insert", "quarantine_after_delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        for table in ("ticket_deliveries", "tickets", "alerts", "alert_tracks", "silences",
                      "imports", "quarantine_usage"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute("ALTER TABLE findings DROP COLUMN exact")
        conn.execute("PRAGMA user_version = 1")
    before = old.read_bytes()
    with scratch_database("fleet_old") as dsn:
        result = cli("fleet", "import", "--dsn", dsn, str(old))
        assert result.returncode == 0, result.stderr
        new = json.loads(result.stdout)["new"]
        with closing(sqlite3.connect(stores[0])) as conn:
            findings = conn.execute("SELECT count(*) FROM findings").fetchone()[0]
        assert new["findings"] == findings and new["tickets"] == 0
        assert new["devices"] == 6
    assert old.read_bytes() == before


def test_an_unreachable_database_is_exit_2_naming_host_and_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli("fleet", "report", dsn=f"postgresql://postgres@127.0.0.1:{port}/fleet")
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
    result = cli("fleet", "status")
    assert result.returncode == 2 and "--dsn" in result.stderr


def test_a_gateway_store_that_is_not_one_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "notes.db"
    bad.write_text("not a database")
    with scratch_database("fleet_bad") as dsn:
        result = cli("fleet", "import", "--dsn", dsn, str(bad))
        assert result.returncode == 2 and str(bad) in result.stderr
        assert "Traceback" not in result.stderr
