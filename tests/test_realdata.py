"""Real co-location data through the live path (``sensor-auditd realdata``), asserting only
what the data themselves establish (their READMEs in ../shared/data): the live verdicts
against ``colocate``'s, and the drift against the tolerance, are the measured figures that
docs/evaluation.md reports, not assertions here."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from auditd.sim import realdata

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EPA = DATA / "epa-sensortoolkit"
UCI = DATA / "airquality-uci" / "AirQualityUCI.csv"

needs_epa = pytest.mark.skipif(not EPA.is_dir(), reason=f"no EPA data at {EPA}")
needs_uci = pytest.mark.skipif(not UCI.is_file(), reason=f"no UCI data at {UCI}")


@pytest.fixture(scope="module")
def uci_run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return realdata.run_uci(UCI, user_forms=False,
                            workdir=tmp_path_factory.mktemp("uci"))


@needs_uci
@pytest.mark.slow
def test_uci_year_every_reading_is_stored_or_counted(uci_run) -> None:  # type: ignore[no-untyped-def]
    """The README's counts: 9357 hours; -200 in CO(GT) 1683 times and in NO2(GT) 1642
    times (sent as nulls); the sensors' own outages 366 hours (no estimate sent)."""
    summary = uci_run["summary"]
    assert summary["nulls"] == 1683 + 1642
    sent = 2 * (9357 - 366) + 2 * 9357  # the analysers' missing hours are sent as nulls
    assert summary["readings_accepted"] + sum(summary["readings_rejected"].values()) == sent


@needs_uci
@pytest.mark.slow
def test_uci_calibration_passes_where_it_was_fitted_and_the_co_drift_is_reported(
        uci_run) -> None:  # type: ignore[no-untyped-def]
    """The calibration was fitted on the first four weeks: no window ending in them fails.
    CO loses span within weeks (README): the drift crosses the tolerance in 2004, and the
    audit reports failing CO windows after it."""
    fit_end = datetime.fromisoformat(uci_run["calibration"]["fit_end"])
    streams = {s["sensor"]: s for s in uci_run["streams"]}
    for stream in streams.values():
        assert stream["fitting_weeks"]["windows"] >= 20
        assert stream["fitting_weeks"]["failing"] == 0, stream
    co = streams["co"]
    crossing = co["drift_crosses_tolerance"]["at"]
    assert crossing is not None and crossing.startswith("2004")
    assert datetime.fromisoformat(crossing) > fit_end
    assert co["first_failing_window_end"] is not None
    assert co["failing"] > 0


@needs_uci
def test_uci_reader_refuses_another_file(tmp_path: Path) -> None:
    other = tmp_path / "x.csv"
    other.write_text("time;value\n1;2\n")
    result = subprocess.run([sys.executable, "-m", "auditd.cli", "realdata", "uci", str(other)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "not the UCI Air Quality file" in result.stderr and "Traceback" not in result.stderr


def test_missing_data_is_a_clear_usage_error(tmp_path: Path) -> None:
    """Run from a directory with no ../shared/data and no path given: exit 2, naming what
    to give (when the checkout's own ../shared/data exists, it is found instead)."""
    if EPA.is_dir():
        assert realdata.default_path("epa") == EPA.resolve()
        return
    result = subprocess.run([sys.executable, "-m", "auditd.cli", "realdata", "epa"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "realdata epa DIR" in result.stderr


@needs_epa
@pytest.mark.slow
def test_epa_month_through_the_live_path_beside_colocate(tmp_path: Path) -> None:
    """The month as a user deploys it (audits every 6 h to keep the test short; the
    figures in docs/evaluation.md use the daemon's hourly audits). What the data establish:
    every reading the exports hold reaches the store or is counted with a reason, the
    agency's six flagged values are left out and counted, each unit and pollutant is
    audited, and colocate fails every unit's PM2.5 (R² 0.52-0.56 < 0.70, the EPA's
    published figures)."""
    deployment, sources = realdata.epa_deployment(EPA, user_forms=False,
                                                  audit_interval="6h")
    sent = sum(len(p["readings"]) for _, topic, p in deployment.messages
               if topic.endswith("/telemetry"))
    in_exports = sum(int((s.values == s.values).sum())  # not NaN
                     for streams in (*sources.units.values(), sources.reference)
                     for sensor, s in streams.items() if sensor != "dew_point")
    assert sent == in_exports
    result = realdata.run_epa(EPA, user_forms=False, audit_interval="6h", workdir=tmp_path)
    summary = result["summary"]
    assert summary["readings_accepted"] + sum(summary["readings_rejected"].values()) == sent
    assert sum(result["reference_excluded_qc"].values()) == 6
    rows = {(r["unit"], r["sensor"]): r for r in result["rows"]}
    for unit in realdata.EPA_UNITS:
        for sensor in realdata.EPA_POLLUTANTS:
            assert rows[(unit, sensor)]["live"]["windows"] > 0
        assert rows[(unit, "pm2_5")]["colocate"]["verdict"] == "fail"
    # the EPA's own view through the live path: one window over the month, judged at its
    # end; O3 is what the data settle beyond doubt (RT01 meets every target; RT02 and
    # RT03 respond at half the reference's span, slopes 0.49 and 0.37 against 0.8-1.2)
    for unit in realdata.EPA_UNITS:
        for sensor in realdata.EPA_POLLUTANTS:
            month = rows[(unit, sensor)]["month"]
            assert month["status"] in ("pass", "fail")
            start, end = (datetime.fromisoformat(month["window"][k].replace("Z", "+00:00"))
                          for k in ("start", "end"))
            assert (end - start).days >= 30
        assert rows[(unit, "o3")]["agree"] is True, rows[(unit, "o3")]
    assert rows[("RT02", "o3")]["month"]["cause"] == "gain_drift"
