"""Reading instrument and agency exports through the shipped mappings, and importing them."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from auditd.adapters.config.targets import load_targets
from auditd.adapters.sources.export_mappings import load_mapping
from auditd.adapters.sources.export_times import TimeParser
from auditd.adapters.sources.exports import read_export
from auditd.adapters.store import Store
from auditd.app.colocate import Options, run, sources_from_files, sources_from_store
from auditd.app.importer import import_file
from auditd.cli import main
from auditd.errors import ConfigError, ExportError

EPA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "epa-sensortoolkit"
REFERENCE = EPA / "airnowtech_example_reference_data.csv"
RT01 = EPA / "toco_toucan_RT01_raw.csv"


def excerpt(src: Path, dst: Path, rows: int, extra: list[str] | None = None,
            header: str | None = None) -> Path:
    """The first ``rows`` data rows of a real export (preamble and header kept), with the
    byte-order mark, plus ``extra`` lines."""
    text = src.read_bytes().decode("utf-8-sig")
    lines = text.splitlines()
    head = 7 if src.name.startswith("toco") else 1
    body = lines[:head]
    if header is not None:
        body[head - 1] = header
    out = body + lines[head:head + rows] + (extra or [])
    dst.write_bytes(("\ufeff" + "\r\n".join(out) + "\r\n").encode("utf-8"))
    return dst


def test_instrument_export_times_are_local_from_the_preamble_and_units_from_the_header(
        tmp_path: Path) -> None:
    e = read_export(excerpt(RT01, tmp_path / "rt.csv", 3), "RT01")
    assert e.mapping == "instrument-wide" and e.zone == "-05:00"
    assert e.serial == "Ramphastos Toco 01" and e.declared_interval_s == 60.0
    pm = e.channels["pm2_5"]
    assert (pm.unit, pm.source_unit) == ("ug/m^3", "µg/m³")
    # 8/1/2019 7:11 at UTC-05:00 is 12:11 UTC.
    assert pm.ts[0] == 1_564_661_460.0
    assert pm.values.tolist() == [5.4, 5.5, 5.3]
    # The first row's NO2 and O3 cells are empty: missing, not zero and not an error.
    assert e.channels["no2"].ts.size == 2 and not e.problems
    assert "Inlet" in e.ignored_columns


def test_agency_export_converts_its_spellings_and_leaves_flagged_values_out() -> None:
    e = read_export(REFERENCE, "ref")
    assert e.mapping == "airnowtech"
    assert e.channels["temperature"].source_unit == "C"  # the agency's Celsius
    assert e.channels["pm2_5"].source_unit == "UG/M3"
    flagged = [p for p in e.problems if p.reason == "reference_qc_flagged"]
    assert len(flagged) == 6
    assert all(p.text.endswith(",9") for p in flagged)
    # None of the four flagged PM2.5 hours of 8/19 (10.1 ug/m3, 12:00-15:00 UTC) is kept.
    pm = e.channels["pm2_5"]
    t = 1_566_216_000.0  # 2019-08-19T12:00:00Z
    assert not np.isin(t + 3600.0 * np.arange(4), pm.ts).any()


def test_garbage_lines_are_problems_with_file_line_and_reason_never_an_abort(
        tmp_path: Path) -> None:
    path = excerpt(RT01, tmp_path / "rt.csv", 5, extra=[
        "not a row at all",
        "8/1/2019 25:99,1,2,3,4,5,6,Sample",
        "8/1/2019 7:20,1,2,lots,4,5,6,Sample",
        "8/1/2019 7:21,1,2,7.5,4,5,6,Sample",
    ])
    e = read_export(path, "RT01")
    reasons = [(p.line, p.reason) for p in e.problems]
    assert reasons == [(13, "row_invalid"), (14, "ts_invalid"), (15, "value_invalid")]
    assert e.problems[2].sensor == "pm2_5" and "'lots'" in e.problems[2].detail
    # The bad PM2.5 cell costs that cell only: the row's other values and later rows stay.
    assert e.channels["pm2_5"].values.tolist() == [5.4, 5.5, 5.3, 5.4, 5.6, 7.5]
    assert e.channels["no2"].ts.size == 6


def test_an_unknown_unit_stops_the_import_naming_file_column_and_string(
        tmp_path: Path) -> None:
    path = excerpt(RT01, tmp_path / "rt.csv", 2, header=(
        "Time,NO2 (ppb),O3 (ppb),PM2.5 (furlongs/fortnight³),TEMP (°C),RH (%),DP (°C),Inlet"))
    with pytest.raises(ExportError) as err:
        read_export(path, "RT01")
    assert err.value.file == str(path)
    assert err.value.key == "PM2.5 (furlongs/fortnight³)"
    assert "furlongs/fortnight³" in err.value.problem


def test_a_unit_of_the_wrong_dimension_stops_the_import(tmp_path: Path) -> None:
    path = excerpt(RT01, tmp_path / "rt.csv", 2, header=(
        "Time,NO2 (ppb),O3 (ppb),PM2.5 (µg/m³),TEMP (hPa),RH (%),DP (°C),Inlet"))
    with pytest.raises(ExportError) as err:
        read_export(path, "RT01")
    assert err.value.key == "TEMP (hPa)" and "'hPa'" in err.value.problem


def test_a_zone_that_cannot_be_found_is_an_error_not_utc(tmp_path: Path) -> None:
    text = RT01.read_bytes().decode("utf-8-sig").splitlines()
    text[3] = "Eastern Time (US & Canada)"  # the offset is gone from the preamble
    path = tmp_path / "rt.csv"
    path.write_text("\n".join(text[:12]) + "\n", encoding="utf-8")
    with pytest.raises(ExportError, match="never assumed to be UTC"):
        read_export(path, "RT01")


def test_an_unrecognised_export_asks_for_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("when,what\n2019-08-01 00:00,1\n", encoding="utf-8")
    with pytest.raises(ExportError, match="--mapping"):
        read_export(path, "x")


def test_a_new_vendor_needs_a_mapping_file_not_code(tmp_path: Path) -> None:
    mapping = tmp_path / "vendor.toml"
    mapping.write_text("""
name = "vendor"
form = "wide"
[detect]
header = ["when", "pm25"]
[time]
column = "when"
format = "%Y-%m-%d %H:%M"
zone = "+01:00"
[columns]
header_unit = '^(?P<name>[^\\[]*)\\[(?P<unit>[^\\]]*)\\]$'
[columns.sensors]
pm25 = "pm2_5"
""", encoding="utf-8")
    path = tmp_path / "vendor.csv"
    path.write_text("when,pm25[ug/m3]\n2019-08-01 01:00,4.5\n", encoding="utf-8")
    e = read_export(path, "v1", preferred=[load_mapping(mapping)])
    assert e.channels["pm2_5"].ts.tolist() == [1_564_617_600.0]  # 00:00 UTC


def test_a_mapping_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    mapping = tmp_path / "bad.toml"
    mapping.write_text('name = "x"\nform = "wide"\ncolour = "red"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_mapping(mapping)
    assert err.value.key == "colour"


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=__import__("datetime").datetime(1971, 1, 1),
                    max_value=__import__("datetime").datetime(2099, 12, 31)),
       st.integers(-12, 14))
def test_fast_time_parsing_agrees_with_strptime(moment, hours: int) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    moment = moment.replace(second=0, microsecond=0)
    text = f"{moment.month}/{moment.day}/{moment.year} {moment.hour}:{moment.minute:02d}"
    parser = TimeParser("%m/%d/%Y %H:%M", hours * 3600)
    expected = moment.replace(tzinfo=dt.timezone(dt.timedelta(hours=hours))).timestamp()
    assert parser.many([text, text]).tolist() == [expected, expected]
    assert parser.one(text) == expected


def test_impossible_dates_are_not_times() -> None:
    parser = TimeParser("%m/%d/%Y %H:%M", 0)
    got = parser.many(["2/29/2019 0:00", "2/29/2020 0:00", "13/1/2019 0:00"])
    assert math.isnan(got[0]) and math.isfinite(got[1]) and math.isnan(got[2])


# --------------------------------------------------------------------------- import


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("store") / "audit.db"
    with Store(db, synchronous="normal") as store:
        import_file(store, REFERENCE, "ref", "burdens", 1.0)
        for i in (1, 2, 3):
            import_file(store, EPA / f"toco_toucan_RT0{i}_raw.csv", f"RT0{i}", "burdens", 1.0)
    return db


def test_importing_the_same_file_twice_stores_nothing_twice(imported: Path) -> None:
    conn = sqlite3.connect(imported)
    before = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("readings", "quarantine", "imports")]
    with Store(imported) as store:
        again = import_file(store, REFERENCE, "ref", "burdens", 2.0)
    after = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
             for t in ("readings", "quarantine", "imports")]
    conn.close()
    assert again.already and before == after


def test_flagged_reference_values_are_quarantined_with_file_and_line(imported: Path) -> None:
    with Store(imported) as store:
        rows = store.quarantine.recent("reference_qc_flagged")
    assert len(rows) == 6
    assert all(str(REFERENCE) in r.detail and r.device == "ref" for r in rows)


def test_the_store_gives_the_same_evaluation_as_the_files(imported: Path) -> None:
    targets = load_targets()
    with Store(imported) as store:
        from_store = run(sources_from_store(store, "burdens", "ref"), targets, Options())
    from_files = run(sources_from_files(
        f"ref={REFERENCE}", [f"RT0{i}={EPA / f'toco_toucan_RT0{i}_raw.csv'}" for i in (1, 2, 3)]),
        targets, Options())
    for key in ("devices", "precision", "excluded", "status"):
        assert from_store.result[key] == from_files.result[key]


def test_colocate_apply_records_calibration_events(imported: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    res = CliRunner().invoke(main, [
        "colocate", "--from-store", "--store", str(imported), "--site", "burdens",
        "--reference", "ref", "--out", str(out), "--correct", "o3", "--correct", "no2",
        "--apply", "RT02"])
    assert res.exit_code == 0, res.output
    body = json.loads(out.read_text())
    with Store(imported) as store:
        events = store.devices.events("RT02")
    # O3 follows the reference at the wrong gain: corrected. NO2 does not follow it at all
    # (R² 0.07): a line fitted to it would only pull its readings to the reference's mean.
    assert [e.type for e in events] == ["calibration"]
    assert [(s["sensor"], "explains too little" in s["why"] or "not positive" in s["why"])
            for s in body["not_applied"]] == [("no2", True)]
    applied = events[0].data["correction"]
    corr = body["corrections"]["RT02"]["o3"]
    assert (applied["sensor"], applied["gain"], applied["offset"]) == (
        "o3", corr["gain"], corr["offset"])
    assert corr["after"]["rmse"] < corr["before"]["rmse"]


def test_colocate_command_writes_the_result(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    res = CliRunner().invoke(main, [
        "colocate", "--reference", str(REFERENCE), "--out", str(out),
        f"RT01={RT01}"])
    assert res.exit_code == 0, res.output
    body = json.loads(out.read_text())
    assert body["devices"]["RT01"]["pm2_5"]["1h"]["n"] == 706
    assert "RT01    pm2_5   1h     706" in res.output


def test_colocate_bad_unit_exits_2_naming_file_and_column(tmp_path: Path) -> None:
    path = excerpt(RT01, tmp_path / "rt.csv", 2, header=(
        "Time,NO2 (ppb),O3 (ppb),PM2.5 (bananas),TEMP (°C),RH (%),DP (°C),Inlet"))
    res = CliRunner().invoke(main, ["colocate", "--reference", str(REFERENCE), "--out",
                                    str(tmp_path / "r.json"), str(path)])
    assert res.exit_code == 2
    assert str(path) in res.output and "PM2.5 (bananas)" in res.output


def test_an_import_keeps_the_streams_totals_and_the_store_its_trigger(tmp_path: Path) -> None:
    from auditd.model import Outcome, Reading

    with Store(tmp_path / "a.db", synchronous="normal") as store:
        import_file(store, excerpt(RT01, tmp_path / "rt.csv", 4), "RT01", "s", 1.0)
        info = {s.sensor: s for s in store.readings.streams()}["pm2_5"]
        assert (info.count, info.first_ts, info.last_ts) == (4, 1_564_661_460.0,
                                                             1_564_661_640.0)
        # A reading ingested later is still counted by the trigger the import suspended.
        store.readings.write_outcomes([Outcome(readings=(
            Reading("s", "RT01", "pm2_5", "ug/m^3", 1_564_661_700.0, 5.0),))])
        info = {s.sensor: s for s in store.readings.streams()}["pm2_5"]
        assert (info.count, info.last_ts) == (5, 1_564_661_700.0)
