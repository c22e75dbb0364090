"""Configuration, profiles, references and the catalog.

The failure cases are what ``sensor-auditd check-config`` promises: every mistake names
the file, the dotted key and what is wrong. Each case starts from a valid file and changes
one thing, and asserts that the change was really made, so a case cannot pass vacuously.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditd.adapters.config import catalog as profiles_config
from auditd.adapters.config import daemon as config
from auditd.adapters.config.catalog import (
    build_catalog,
    load_catalog,
    load_profiles,
    load_references,
)
from auditd.adapters.config.daemon import (
    BrokerConfig,
    DaemonConfig,
    default_config,
    load_daemon_config,
)
from auditd.domain.audit_plan import plan
from auditd.domain.catalog import Catalog
from auditd.domain.validate import validate_message
from auditd.errors import ConfigError
from auditd.model import ID_PATTERN, RawMessage, Reference, StreamInfo
from auditd.text import format_duration, parse_duration, parse_size
from auditd.topics import TopicsConfig

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "device_profiles"
REFERENCES = REPO / "references"
EXAMPLE = REPO / "examples" / "sensor-auditd.toml"

PROFILE = """\
model = "th-test"
allowed_firmware = [">=2.0,<3"]
calibration_interval_days = 365

[sensors.temperature]
quantity = "[temperature]"
unit = "degC"
range = [-40.0, 85.0]
interval_s = 60

[sensors.temperature.tolerance]
bias = 0.5
gain = 0.05
rmse = 0.8
r2_min = 0.90
lag_s = 300
window = "24h"
min_samples = 60

[sensors.pressure]
quantity = "[pressure]"
unit = "hPa"
range = [300.0, 1100.0]

[sensors.pressure.tolerance]
bias = 1.0
rmse = 1.5
"""

REFERENCE = """\
[[reference]]
id = "ref-test"
site = "north"
serves = ["th-north-*"]
sensors = ["temperature", "pressure"]
model = "th-test"
certificate = "CAL-1"
calibration_due = 2027-06-01
uncertainty = {temperature = 0.1, pressure = 0.2}
"""

DAEMON = """\
site = "north"
gateway = "gw1"

[broker]
host = "broker.example"
port = 1883

[audit]
interval = "1h"
"""


def edit(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced; fails loudly if ``old`` is not there."""
    assert old in text, f"test setup: {old!r} not in the template"
    return text.replace(old, new, 1)


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def expect_error(call: object, file: Path | str, key: str, *fragments: str) -> ConfigError:
    """Run ``call``; it must raise a ConfigError naming ``file``, ``key`` and ``fragments``."""
    assert callable(call)
    with pytest.raises(ConfigError) as info:
        call()
    err = info.value
    assert err.file == str(file)
    assert err.key == key
    for fragment in fragments:
        assert fragment in err.problem, f"{fragment!r} not in {err.problem!r}"
    assert str(err).startswith(f"{file}: {key}: " if key else f"{file}: ")
    return err


# --------------------------------------------------------------------------- shipped files


def test_shipped_profiles_load_with_their_documented_figures() -> None:
    profiles = load_profiles(PROFILES)
    assert set(profiles) == {"th-200", "pm-25", "co2-ndir", "ref-station"}

    th = profiles["th-200"]
    assert set(th.sensors) == {"temperature", "humidity", "pressure"}
    assert th.sensors["temperature"].unit == "degC"
    assert th.sensors["temperature"].range == (-40.0, 85.0)
    assert th.sensors["humidity"].tolerance.bias == 3.0
    assert th.sensors["pressure"].tolerance.bias == 1.0
    assert th.allowed_firmware == (">=2.0,<3",)
    assert th.source == str(PROFILES / "th-200.toml")

    pm = profiles["pm-25"].sensors["pm2_5"]  # EPA/600/R-20/280 targets
    assert (pm.unit, pm.quantity) == ("ug/m^3", "[mass] / [length] ** 3")
    tol = pm.tolerance
    assert (tol.gain, tol.bias, tol.rmse, tol.r2_min, tol.window_s) == (0.35, 5.0, 7.0, 0.70,
                                                                        86400.0)
    assert set(profiles["pm-25"].sensors) == {"pm1", "pm2_5", "pm10"}

    co2 = profiles["co2-ndir"].sensors["co2"]
    assert co2.unit == "ppm"
    assert co2.tolerance.bias == 45.0

    ref = profiles["ref-station"]
    assert set(ref.sensors) == {"temperature", "humidity", "pressure", "pm2_5", "co2"}


def test_shipped_references_load_and_agree_with_the_profiles() -> None:
    refs = load_references(REFERENCES)
    assert [r.id for r in refs] == ["ref-north"]
    ref = refs[0]
    assert ref.site == "north"
    assert ref.serves == ("th-north-*", "pm-north-*", "co2-north-*")
    assert ref.model == "ref-station"
    assert ref.certificate == "CAL-2026-0142"
    assert ref.calibration_due == datetime(2027, 6, 1, tzinfo=UTC).timestamp()
    assert ref.uncertainty["temperature"] == 0.1
    catalog = build_catalog(load_profiles(PROFILES), refs, {"th-*": "th-200"}, "cfg.toml")
    assert catalog.references_for("north", "pm-north-07") == (ref,)


def test_example_config_loads_with_every_default() -> None:
    cfg = load_daemon_config(EXAMPLE)
    here = EXAMPLE.parent
    expected = default_config(gateway=cfg.gateway, profiles_dir=here / "device_profiles",
                              references_dir=here / "references", source=str(EXAMPLE))
    assert cfg == expected


def test_example_config_defaults_are_true(tmp_path: Path) -> None:
    """Uncommenting every ``# key = value`` line of the example changes nothing."""
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = re.sub(r"(?m)^# ([a-z_]+ = .*)$", r"\1", text)
    assert uncommented.count("\n") == text.count("\n")
    assert len(re.findall(r"(?m)^[a-z_]+ = ", uncommented)) >= 25
    path = write(tmp_path, "config.toml", uncommented)
    cfg = load_daemon_config(path)
    plain = load_daemon_config(write(tmp_path, "plain.toml", text))
    assert cfg == replace(plain, source=str(path))


def test_example_config_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    tables = {
        "": config.DAEMON_KEYS, "broker": config.BROKER_KEYS, "broker.tls": config.TLS_KEYS,
        "ingest": config.INGEST_KEYS, "audit": config.AUDIT_KEYS, "store": config.STORE_KEYS,
        "topics": config.TOPICS_KEYS, "log": config.LOG_KEYS, "metrics": config.METRICS_KEYS,
        "tickets": config.TICKETS_KEYS, "tickets.webhook": config.WEBHOOK_KEYS,
        "tickets.command": config.COMMAND_KEYS, "tickets.file": config.FILE_SINK_KEYS,
        "units": config.UNITS_KEYS,
    }
    for table, keys in tables.items():
        if table:
            assert re.search(rf"(?m)^#? ?\[{re.escape(table)}\]$", text), table
        for key in keys:
            if f"{table}.{key}".lstrip(".") in tables or key == "models":  # checked as tables
                continue
            assert re.search(rf"(?m)^# (e\.g\. )?{key} = ", text), f"{table}.{key}"
    assert re.search(r"(?m)^\[models\]$", text)


# --------------------------------------------------------------------------- profile errors

PROFILE_ERRORS = [
    pytest.param('unit = "degC"', 'unit = "degCC"', "sensors.temperature.unit",
                 ("degCC", "not a unit"), id="bad-unit-string"),
    pytest.param('unit = "degC"', 'unit = "hPa"', "sensors.temperature.unit",
                 ("hPa", "[temperature]"), id="unit-of-wrong-dimension"),
    pytest.param('quantity = "[temperature]"', 'quantity = "[temprature]"',
                 "sensors.temperature.quantity", ("[temprature]",), id="bad-quantity"),
    pytest.param('quantity = "[temperature]"', 'quantity = "degC"',
                 "sensors.temperature.quantity", ("dimension",), id="quantity-is-a-unit"),
    pytest.param("rmse = 0.8", "rsme = 0.8", "sensors.temperature.tolerance.rsme",
                 ("unknown key", "did you mean 'rmse'", "bias, gain, rmse, r2_min, lag_s, "
                  "window, min_samples"), id="unknown-tolerance-key"),
    pytest.param("interval_s = 60", "interval_s = 60\ncolour = 1", "sensors.temperature.colour",
                 ("unknown key", "quantity, unit, range, interval_s, tolerance"),
                 id="unknown-sensor-key"),
    pytest.param("calibration_interval_days = 365", "calibration_interval = 365",
                 "calibration_interval", ("did you mean 'calibration_interval_days'",),
                 id="unknown-top-key"),
    pytest.param('window = "24h"', 'window = "24 hours"', "sensors.temperature.tolerance.window",
                 ("not a duration",), id="bad-duration"),
    pytest.param('window = "24h"', 'window = "0s"', "sensors.temperature.tolerance.window",
                 ("longer than zero",), id="zero-window"),
    pytest.param("r2_min = 0.90", "r2_min = 1.2", "sensors.temperature.tolerance.r2_min",
                 ("at most 1", "1.2"), id="r2-above-one"),
    pytest.param("r2_min = 0.90", "r2_min = -0.1", "sensors.temperature.tolerance.r2_min",
                 ("at least 0",), id="r2-below-zero"),
    pytest.param("bias = 0.5", "bias = -0.5", "sensors.temperature.tolerance.bias",
                 ("at least 0",), id="negative-bias"),
    pytest.param("bias = 0.5", 'bias = "0.5"', "sensors.temperature.tolerance.bias",
                 ("must be a number", "a string"), id="bias-as-string"),
    pytest.param("bias = 0.5", "bias = true", "sensors.temperature.tolerance.bias",
                 ("must be a number", "a boolean"), id="bias-as-boolean"),
    pytest.param("min_samples = 60", "min_samples = 1", "sensors.temperature.tolerance.min_samples",
                 ("at least 2",), id="min-samples-one"),
    pytest.param("min_samples = 60", "min_samples = 60.5",
                 "sensors.temperature.tolerance.min_samples", ("integer",), id="min-samples-float"),
    pytest.param('window = "24h"', 'window = "24m"', "sensors.temperature.tolerance.min_samples",
                 ("60 is more than the 24 readings a 24m window holds at one every 1m",),
                 id="min-samples-unreachable"),
    pytest.param('[">=2.0,<3"]', '[">=2.0,<<3"]', "allowed_firmware",
                 ("item 1", "PEP 440"), id="bad-firmware-specifier"),
    pytest.param('[">=2.0,<3"]', '">=2.0,<3"', "allowed_firmware", ("array",),
                 id="firmware-not-a-list"),
    pytest.param("range = [-40.0, 85.0]", "range = [85.0, -40.0]", "sensors.temperature.range",
                 ("low must be below high",), id="range-reversed"),
    pytest.param("range = [-40.0, 85.0]", "range = [-40.0]", "sensors.temperature.range",
                 ("two numbers",), id="range-one-number"),
    pytest.param("range = [-40.0, 85.0]", 'range = [-40.0, "85"]', "sensors.temperature.range",
                 ("a number",), id="range-not-numbers"),
    pytest.param('unit = "degC"\n', "", "sensors.temperature.unit", ("missing required key",),
                 id="missing-unit"),
    pytest.param("rmse = 1.5\n", "", "sensors.pressure.tolerance.rmse",
                 ("missing required key",), id="missing-rmse"),
    pytest.param('model = "th-test"\n', "", "model", ("missing required key",),
                 id="missing-model"),
    pytest.param('model = "th-test"', 'model = "th test"', "model", ("not a valid name",),
                 id="model-not-an-id"),
    pytest.param("[sensors.temperature]", "[sensors.'temp/x']", "sensors.temp/x",
                 ("not a valid sensor name",), id="sensor-name-not-an-id"),
    pytest.param('quantity = "[temperature]"', 'quantity = "[]"', "sensors.temperature.unit",
                 ("degC", "dimensionless"), id="temperature-unit-for-a-ratio"),
    pytest.param("calibration_interval_days = 365", "calibration_interval_days = 0",
                 "calibration_interval_days", ("greater than 0",), id="zero-calibration-interval"),
]


@pytest.mark.parametrize(("old", "new", "key", "fragments"), PROFILE_ERRORS)
def test_profile_errors_name_file_key_and_problem(tmp_path: Path, old: str, new: str, key: str,
                                                  fragments: tuple[str, ...]) -> None:
    path = write(tmp_path / "profiles", "th-test.toml", edit(PROFILE, old, new))
    expect_error(lambda: load_profiles(tmp_path / "profiles"), path, key, *fragments)


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "profiles", "th-test.toml", edit(PROFILE, "bias = 0.5", "bias 0.5"))
    err = expect_error(lambda: load_profiles(tmp_path / "profiles"), path, "", "TOML syntax")
    line = PROFILE.splitlines().index("bias = 0.5") + 1
    assert f"line {line}" in err.problem


def test_sensors_must_not_be_empty(tmp_path: Path) -> None:
    path = write(tmp_path / "p", "x.toml", 'model = "x"\nsensors = {}\n')
    expect_error(lambda: load_profiles(tmp_path / "p"), path, "sensors", "at least one")


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    path = folder / "x.toml"
    path.write_bytes(b'model = "\xff"\n')
    expect_error(lambda: load_profiles(folder), path, "", "UTF-8")


def test_duplicate_model_names_both_files(tmp_path: Path) -> None:
    first = write(tmp_path / "p", "a.toml", PROFILE)
    second = write(tmp_path / "p", "b.toml", PROFILE)
    expect_error(lambda: load_profiles(tmp_path / "p"), second, "model", "'th-test'", str(first))


def test_missing_profile_directory(tmp_path: Path) -> None:
    expect_error(lambda: load_profiles(tmp_path / "nope"), tmp_path / "nope", "",
                 "no such directory")


def test_hidden_and_other_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "p", "th-test.toml", PROFILE)
    write(tmp_path / "p", ".#th-test.toml", "not toml at all [")
    write(tmp_path / "p", "README.md", "# profiles")
    assert list(load_profiles(tmp_path / "p")) == ["th-test"]


def test_profile_defaults(tmp_path: Path) -> None:
    """Left-out keys take the documented defaults; min_samples is capped by window/interval."""
    write(tmp_path / "p", "x.toml", edit(PROFILE, 'window = "24h"\n', ""))
    profile = load_profiles(tmp_path / "p")["th-test"]
    assert profile.calibration_interval_days == 365
    pressure = profile.sensors["pressure"]
    assert pressure.interval_s == profiles_config.DEFAULT_INTERVAL_S == 60
    tol = pressure.tolerance
    assert tol.gain == profiles_config.DEFAULT_GAIN
    assert tol.r2_min == profiles_config.DEFAULT_R2_MIN
    assert tol.lag_s == profiles_config.DEFAULT_LAG_S
    assert tol.window_s == 86400
    assert tol.min_samples == profiles_config.DEFAULT_MIN_SAMPLES == 60
    assert profile.sensors["temperature"].tolerance.window_s == 86400
    minimal = 'model = "m"\n[sensors.t]\nquantity = "[temperature]"\nunit = "K"\n' \
              'range = [0, 400]\ninterval_s = "10m"\n[sensors.t.tolerance]\nbias = 1\n' \
              'rmse = 2\nwindow = "1h"\n'
    write(tmp_path / "q", "m.toml", minimal)
    only = load_profiles(tmp_path / "q")["m"]
    assert only.allowed_firmware == ()
    assert only.calibration_interval_days is None
    assert only.sensors["t"].range == (0.0, 400.0)
    assert only.sensors["t"].interval_s == 600
    assert only.sensors["t"].tolerance.min_samples == 5  # ceil(0.75 * 3600 / 600)


def test_profile_accepts_every_contract_unit_spelling(tmp_path: Path) -> None:
    body = "".join(
        f'[sensors.s{i}]\nquantity = "{q}"\nunit = "{u}"\nrange = [0, 1]\n'
        f"[sensors.s{i}.tolerance]\nbias = 1\nrmse = 1\n"
        for i, (q, u) in enumerate([("[temperature]", "degF"), ("dimensionless", "ppb"),
                                    ("[mass] / [length] ** 3", "ug/m^3"),
                                    ("[pressure]", "Pa"), ("[electric_potential]", "mV")]))
    write(tmp_path / "p", "x.toml", 'model = "x"\n' + body)
    assert len(load_profiles(tmp_path / "p")["x"].sensors) == 5


REFERENCE_MODEL = """\
model = "ref-station"

[sensors.temperature]
quantity = "[temperature]"
unit = "degC"
range = [-40.0, 85.0]

[sensors.pressure]
quantity = "[pressure]"
unit = "hPa"
range = [300.0, 1100.0]
"""


def test_reference_profile_needs_no_tolerance(tmp_path: Path) -> None:
    """A reference instrument is the yardstick: its model's profile names what it measures
    and how it reports, with no tolerance tables, and the catalog takes it; its sensors
    are validated like any device's and never audited."""
    write(tmp_path / "p", "th-test.toml", PROFILE)
    write(tmp_path / "p", "ref-station.toml", REFERENCE_MODEL)
    write(tmp_path / "r", "north.toml", edit(REFERENCE, 'model = "th-test"',
                                              'model = "ref-station"'))
    profiles = load_profiles(tmp_path / "p")
    catalog = build_catalog(profiles, load_references(tmp_path / "r"), {"th-north-*": "th-test"})
    station = catalog.profile("ref-station")
    assert station is not None and station.audited("temperature") is None
    assert station.sensors["pressure"].unit == "hPa"
    ingest = validate_message(
        RawMessage("fleet/north/ref-test/telemetry",
                   b'{"ts": 1764064800, "readings": {"temperature": 21.4, "pressure": 1013.2}}',
                   1764064801.0),
        prefix="fleet", profile_for=lambda _site, device: catalog.profile(
            catalog.model_for(device) or ""))
    assert sorted(r.sensor for r in ingest.readings) == ["pressure", "temperature"]
    assert not ingest.rejections
    streams = [StreamInfo(i, "north", device, sensor, "degC", 0.0, 1.0, 10)
               for i, (device, sensor) in enumerate([("ref-test", "temperature"),
                                                     ("th-north-1", "temperature")])]
    (task,) = plan(streams, catalog, {})
    assert (task.device, task.reference, task.trusted) == ("th-north-1", "ref-test", True)


def test_field_sensor_without_tolerance_is_stored_but_not_audited(tmp_path: Path) -> None:
    write(tmp_path / "p", "th-test.toml",
          edit(PROFILE, "[sensors.pressure.tolerance]\nbias = 1.0\nrmse = 1.5\n", ""))
    write(tmp_path / "r", "north.toml", REFERENCE)
    catalog = build_catalog(load_profiles(tmp_path / "p"), load_references(tmp_path / "r"),
                            {"th-north-*": "th-test"})
    streams = [StreamInfo(i, "north", device, sensor, "", 0.0, 1.0, 10)
               for i, (device, sensor) in enumerate(
                   [(d, s) for d in ("ref-test", "th-north-1")
                    for s in ("temperature", "pressure")])]
    assert [(t.device, t.sensor) for t in plan(streams, catalog, {})] == [
        ("th-north-1", "temperature")]


@pytest.mark.parametrize("quantity", ["[]", "dimensionless"])
def test_dimensionless_in_both_spellings(tmp_path: Path, quantity: str) -> None:
    """``[]`` is how pint writes the empty dimension (``get_dimensionality("percent")``)."""
    write(tmp_path / "p", "h.toml", edit(PROFILE, 'quantity = "[temperature]"\nunit = "degC"',
                                         f'quantity = "{quantity}"\nunit = "percent"'))
    spec = load_profiles(tmp_path / "p")["th-test"].sensors["temperature"]
    assert (spec.quantity, spec.unit) == (quantity, "percent")


# --------------------------------------------------------------------------- reference errors

REFERENCE_ERRORS = [
    pytest.param('id = "ref-test"\n', "", "reference[0].id", ("missing required key",),
                 id="missing-id"),
    pytest.param('serves = ["th-north-*"]', 'serve = ["th-north-*"]', "reference[0].serve",
                 ("did you mean 'serves'",), id="unknown-key"),
    pytest.param('serves = ["th-north-*"]', "serves = []", "reference[0].serves",
                 ("must not be empty",), id="serves-empty"),
    pytest.param('site = "north"', 'site = "north/x"', "reference[0].site",
                 ("not a valid name",), id="site-not-an-id"),
    pytest.param("calibration_due = 2027-06-01", 'calibration_due = "next year"',
                 "reference[0].calibration_due", ("not a date",), id="bad-date"),
    pytest.param("pressure = 0.2}", "humidity = 0.2}", "reference[0].uncertainty",
                 ("'humidity'", "temperature, pressure"), id="uncertainty-for-unlisted-sensor"),
    pytest.param("pressure = 0.2}", "pressure = -0.2}", "reference[0].uncertainty",
                 ("pressure", "at least 0"), id="negative-uncertainty"),
    pytest.param('sensors = ["temperature", "pressure"]',
                 'sensors = ["temperature", "temperature"]', "reference[0].sensors",
                 ("listed twice",), id="duplicate-sensor"),
    pytest.param("[[reference]]", "[reference]", "reference", ("[[reference]]",),
                 id="single-table"),
]


@pytest.mark.parametrize(("old", "new", "key", "fragments"), REFERENCE_ERRORS)
def test_reference_errors_name_file_key_and_problem(tmp_path: Path, old: str, new: str,
                                                    key: str, fragments: tuple[str, ...]) -> None:
    path = write(tmp_path / "refs", "north.toml", edit(REFERENCE, old, new))
    expect_error(lambda: load_references(tmp_path / "refs"), path, key, *fragments)


def test_reference_date_forms(tmp_path: Path) -> None:
    midnight = datetime(2027, 6, 1, tzinfo=UTC).timestamp()
    for form, expected in [('"2027-06-01"', midnight), ("2027-06-01", midnight),
                           ("2027-06-01T02:00:00+02:00", midnight),
                           ("2027-06-01T00:00:00", midnight)]:
        write(tmp_path / form.strip('"')[:13], "r.toml",
              edit(REFERENCE, "calibration_due = 2027-06-01", f"calibration_due = {form}"))
        (ref,) = load_references(tmp_path / form.strip('"')[:13])
        assert ref.calibration_due == expected, form


def test_duplicate_reference_id_names_both_files(tmp_path: Path) -> None:
    first = write(tmp_path / "refs", "a.toml", REFERENCE)
    second = write(tmp_path / "refs", "b.toml", REFERENCE)
    expect_error(lambda: load_references(tmp_path / "refs"), second, "reference[0].id",
                 "'ref-test'", str(first))


def test_duplicate_reference_id_in_one_file(tmp_path: Path) -> None:
    path = write(tmp_path / "refs", "a.toml", REFERENCE + "\n" + REFERENCE)
    expect_error(lambda: load_references(tmp_path / "refs"), path, "reference[1].id", "twice")


def test_reference_with_unknown_model(tmp_path: Path) -> None:
    write(tmp_path / "p", "th-test.toml", PROFILE)
    path = write(tmp_path / "refs", "north.toml",
                 edit(REFERENCE, 'model = "th-test"', 'model = "ref-nope"'))
    profiles, refs = load_profiles(tmp_path / "p"), load_references(tmp_path / "refs")
    expect_error(lambda: build_catalog(profiles, refs, {}, "cfg.toml"), path,
                 "reference[0].model", "'ref-nope'", "known models: th-test")


def test_reference_sensor_missing_from_its_model(tmp_path: Path) -> None:
    write(tmp_path / "p", "th-test.toml", PROFILE)
    path = write(tmp_path / "refs", "north.toml",
                 REFERENCE + edit(edit(REFERENCE, "ref-test", "ref-two"),
                                  '["temperature", "pressure"]', '["temperature", "co2"]')
                 .replace("pressure = 0.2", "co2 = 5"))
    profiles, refs = load_profiles(tmp_path / "p"), load_references(tmp_path / "refs")
    expect_error(lambda: build_catalog(profiles, refs, {}, "cfg.toml"), path,
                 "reference[1].sensors", "'co2'", "temperature, pressure")


def test_models_glob_naming_unknown_model(tmp_path: Path) -> None:
    write(tmp_path / "p", "th-test.toml", PROFILE)
    profiles = load_profiles(tmp_path / "p")
    expect_error(lambda: build_catalog(profiles, (), {"th-*": "th-test", "pm-*": "pm-25"},
                                       "cfg.toml"),
                 "cfg.toml", 'models."pm-*"', "'pm-25'", "known models: th-test")


# --------------------------------------------------------------------------- daemon config

DAEMON_ERRORS = [
    pytest.param('host = "broker.example"', 'hots = "broker.example"', "broker.hots",
                 ("did you mean 'host'", "known keys: host, port"), id="unknown-broker-key"),
    pytest.param('site = "north"', 'site = "north"\nsites = 1', "sites",
                 ("did you mean 'site'",), id="unknown-top-key"),
    pytest.param('interval = "1h"', 'interval = "an hour"', "audit.interval",
                 ("not a duration",), id="bad-duration"),
    pytest.param('interval = "1h"', 'interval = "0m"', "audit.interval",
                 ("longer than zero",), id="zero-interval"),
    pytest.param("port = 1883", "port = 70000", "broker.port", ("at most 65535",),
                 id="port-out-of-range"),
    pytest.param("port = 1883", 'port = "1883"', "broker.port", ("integer", "a string"),
                 id="port-as-string"),
    pytest.param('site = "north"', 'site = "north site"', "site", ("not a valid name",),
                 id="site-not-an-id"),
    pytest.param('gateway = "gw1"', 'gateway = "-gw"', "gateway", ("not a valid name",),
                 id="gateway-not-an-id"),
    pytest.param("port = 1883", 'port = 1883\nprotocol = "4"', "broker.protocol",
                 ("'5', '3.1.1'",), id="bad-protocol"),
    pytest.param("port = 1883", "port = 1883\nreconnect_min_s = 10\nreconnect_max_s = 5",
                 "broker.reconnect_max_s", ("at least reconnect_min_s",), id="backoff-reversed"),
    pytest.param("port = 1883", 'port = 1883\nsession_expiry = "200y"', "broker.session_expiry",
                 ("not a duration",), id="bad-session-expiry"),
    pytest.param("port = 1883", 'port = 1883\npassword_file = "nope.txt"',
                 "broker.password_file", ("no such file",), id="password-file-missing"),
    pytest.param("port = 1883", "port = 1883\n[broker.tls]\nverify = false", "broker.tls.verify",
                 ("known keys: ca_file, cert_file, key_file, insecure",), id="unknown-tls-key"),
    pytest.param("[audit]", '[store]\nsynchronous = "off"\n[audit]', "store.synchronous",
                 ("'full', 'normal'",), id="bad-synchronous"),
    pytest.param("[audit]", '[topics]\nprefix = "fleet/#"\n[audit]', "topics.prefix",
                 ("not a topic prefix",), id="wildcard-prefix"),
    pytest.param("[audit]", '[log]\nlevel = "loud"\n[audit]', "log.level",
                 ("'debug'",), id="bad-log-level"),
    pytest.param("[audit]", '[models]\n"th-*" = "th 200"\n[audit]', "models",
                 ('"th-*"', "not a valid name"), id="bad-model-name"),
    pytest.param("[audit]", '[ingest]\nbatch_max = 0\n[audit]', "ingest.batch_max",
                 ("at least 1",), id="batch-max-zero"),
    pytest.param('site = "north"', 'site = "north"\nbroker = 5', "", ("TOML syntax",),
                 id="toml-redefinition"),
    pytest.param('site = "north"', 'site = "north"\nlog = 5', "log", ("must be a table",),
                 id="table-as-number"),
    pytest.param('site = "north"', "site = north", "", ("TOML syntax", "line 1"),
                 id="toml-syntax"),
]


@pytest.mark.parametrize(("old", "new", "key", "fragments"), DAEMON_ERRORS)
def test_daemon_config_errors_name_file_key_and_problem(tmp_path: Path, old: str, new: str,
                                                        key: str,
                                                        fragments: tuple[str, ...]) -> None:
    path = write(tmp_path, "config.toml", edit(DAEMON, old, new))
    expect_error(lambda: load_daemon_config(path), path, key, *fragments)


def test_missing_config_file(tmp_path: Path) -> None:
    expect_error(lambda: load_daemon_config(tmp_path / "none.toml"), tmp_path / "none.toml", "",
                 "no such file")


def test_tls_key_needs_cert(tmp_path: Path) -> None:
    write(tmp_path, "client.key", "key")
    path = write(tmp_path, "config.toml", DAEMON + '[broker.tls]\nkey_file = "client.key"\n')
    expect_error(lambda: load_daemon_config(path), path, "broker.tls.key_file", "cert_file")


def test_defaults() -> None:
    cfg = default_config()
    assert cfg.site == "site"
    assert ID_PATTERN.fullmatch(cfg.gateway)
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.protocol) == ("localhost", 1883, "5")
    assert cfg.broker.client_id == f"sensor-auditd-{cfg.gateway}"
    assert cfg.broker.session_expiry_s == 7 * 86400
    assert cfg.broker.tls is None and cfg.broker.username is None
    assert (cfg.broker.keepalive, cfg.broker.receive_maximum) == (60, 100)
    assert (cfg.broker.reconnect_min_s, cfg.broker.reconnect_max_s) == (1, 60)
    assert (cfg.ingest.batch_max, cfg.ingest.batch_max_wait_s) == (100, 0.05)
    assert cfg.ingest.max_payload_bytes == 65536
    assert (cfg.ingest.max_future_skew_s, cfg.ingest.quarantine_payload_cap) == (300, 4096)
    assert (cfg.audit.interval_s, cfg.audit.window_s, cfg.audit.first_run_delay_s) == \
        (3600, None, 60)
    assert cfg.store.path == Path("/var/lib/sensor-auditd/audit.db")
    assert (cfg.store.synchronous, cfg.store.retention_days) == ("full", 90)
    assert (cfg.store.quarantine_retention_days, cfg.store.retention_interval_s) == (30, 3600)
    assert cfg.store.findings_retention_days == 90
    assert (cfg.ingest.max_devices, cfg.ingest.max_streams, cfg.ingest.stall_after_s) == (
        5000, 50_000, 300)
    assert (cfg.store.wal_limit, cfg.store.quarantine_max_rows,
            cfg.store.quarantine_max_bytes) == (16 * 2**20, 50_000, 32 * 2**20)
    assert cfg.store.window_cache == 64 * 2**20
    assert cfg.topics.prefix == "fleet"
    assert (cfg.log.level, cfg.log.format) == ("info", "auto")
    assert dict(cfg.models) == {}
    assert default_config(gateway="gw9").broker.client_id == "sensor-auditd-gw9"
    explicit = default_config(gateway="gw9", broker=BrokerConfig(client_id="mine"))
    assert explicit.broker.client_id == "mine"


def test_default_config_validates_ids() -> None:
    expect_error(lambda: default_config(site="a/b"), "<default config>", "site",
                 "not a valid name")


def test_loaded_config_values_and_relative_paths(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    write(etc, "pw", "s3cret\n")
    write(etc / "tls", "ca.pem", "ca")
    path = write(etc, "config.toml", """\
site = "north"
gateway = "gw1"

[broker]
username = "auditd"
password_file = "pw"
protocol = "3.1.1"
session_expiry = "1d12h"

[broker.tls]
ca_file = "tls/ca.pem"

[store]
path = "data/audit.db"
synchronous = "NORMAL"

[log]
format = "json"

[models]
"th-north-9*" = "th-200b"
"th-*" = "th-200"
""")
    cfg = load_daemon_config(path)
    assert (cfg.site, cfg.gateway, cfg.source) == ("north", "gw1", str(path))
    assert cfg.broker.port == 8883  # TLS on and no port given
    assert cfg.broker.protocol == "3.1.1"
    assert cfg.broker.session_expiry_s == 36 * 3600
    assert cfg.broker.client_id == "sensor-auditd-gw1"
    assert cfg.broker.tls is not None and cfg.broker.tls.ca_file == str(etc / "tls" / "ca.pem")
    assert cfg.broker.password_file == str(etc / "pw")
    assert cfg.store.path == etc / "data" / "audit.db"
    assert cfg.store.synchronous == "normal"
    assert cfg.profiles_dir == etc / "device_profiles"
    assert cfg.references_dir == etc / "references"
    assert list(cfg.models.items()) == [("th-north-9*", "th-200b"), ("th-*", "th-200")]
    assert "s3cret" not in repr(cfg)


def test_default_gateway_is_a_valid_id(monkeypatch: pytest.MonkeyPatch) -> None:
    for host, expected in [("edge-01.example.org", "edge-01"), ("My Laptop", "My-Laptop"),
                           ("___", "gateway"), ("", "gateway"), ("x" * 80, "x" * 64)]:
        monkeypatch.setattr(config.socket, "gethostname", lambda h=host: h)
        assert config.default_gateway() == expected
        assert ID_PATTERN.fullmatch(config.default_gateway())


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "seconds"), [
    ("24h", 86400), ("15m", 900), ("90s", 90), ("7d", 604800), ("1h30m", 5400),
    ("2w", 1209600), ("50ms", 0.05), ("1.5h", 5400), (" 1h 30m ", 5400), ("90", 90),
    ("0.25", 0.25), (60, 60), (0.05, 0.05), (0, 0), ("0s", 0),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "size"), [
    ("16MiB", 16 * 2**20), ("512 KiB", 512 * 1024), ("2GB", 2 * 10**9), ("1.5mib", 1572864),
    ("65536", 65536), (65536, 65536), ("10kB", 10_000), ("7 b", 7)])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "MiB", "16 MiBs", "-1", "-1KiB", "1e3", True, None, 1.5,
                                 [1]])
def test_parse_size_refuses(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("table", "line", "key", "fragment"), [
    ("store", 'wal_limit = "16 megabytes"', "store.wal_limit", "not a size"),
    ("store", 'wal_limit = "100KiB"', "store.wal_limit", "at least 524288 bytes"),
    ("store", "quarantine_max_rows = 0", "store.quarantine_max_rows", "at least 1"),
    ("store", 'quarantine_max_bytes = "1KiB"', "store.quarantine_max_bytes", "at least"),
    ("store", 'window_cache = "lots"', "store.window_cache", "not a size"),
    ("ingest", "max_devices = 0", "ingest.max_devices", "at least 1"),
    ("ingest", 'max_streams = "many"', "ingest.max_streams", "must be an integer"),
    ("ingest", 'stall_after = "0s"', "ingest.stall_after", "longer than zero"),
])
def test_bounds_are_refused_naming_the_key(tmp_path: Path, table: str, line: str, key: str,
                                           fragment: str) -> None:
    path = write(tmp_path, "config.toml", f"[{table}]\n{line}\n")
    expect_error(lambda: load_daemon_config(path), path, key, fragment)


@pytest.mark.parametrize("bad", ["", " ", "h", "5x", "24 hours", "-5s", "-5", "1h-30m",
                                 "1.2.3s", "5M", "inf", "nan", True, None, [1],
                                 float("nan"), float("inf"), -1])
def test_parse_duration_refuses(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)  # type: ignore[arg-type]


@given(st.integers(0, 10**4), st.integers(0, 10**4), st.integers(0, 10**4),
       st.integers(0, 10**6))
def test_duration_components_add_up(days: int, hours: int, minutes: int, seconds: int) -> None:
    text = f"{days}d{hours}h{minutes}m{seconds}s"
    assert parse_duration(text) == days * 86400 + hours * 3600 + minutes * 60 + seconds


@given(st.one_of(st.integers(0, 10**12),
                 st.floats(0, 1e12, allow_nan=False, allow_infinity=False)))
def test_format_duration_round_trips(seconds: float) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert isinstance(seconds, float) or re.fullmatch(r"(\d+[dhms])+", text)


def test_format_duration_examples() -> None:
    assert format_duration(5400) == "1h30m"
    assert format_duration(0) == "0s"
    assert format_duration(604800) == "7d"
    assert format_duration(0.05) == "0.05s"


# --------------------------------------------------------------------------- topics


def test_topics_follow_the_contract() -> None:
    topics = TopicsConfig()
    assert topics.subscriptions() == ("fleet/+/+/telemetry", "fleet/+/+/meta", "fleet/+/+/event")
    assert topics.finding("north", "gw1", "th-0042", "temperature") == \
        "fleet/north/audit/gw1/finding/th-0042/temperature"
    assert topics.report("north", "gw1") == "fleet/north/audit/gw1/report"
    assert topics.ticket("north", "gw1") == "fleet/north/audit/gw1/ticket"
    assert topics.status("north", "gw1") == "fleet/north/audit/gw1/status"
    assert TopicsConfig(prefix="acme/fleet").status("s", "g") == "acme/fleet/s/audit/g/status"


@pytest.mark.parametrize("level", ["a/b", "+", "#", "", "x\0"])
def test_topics_refuse_levels_that_change_the_shape(level: str) -> None:
    with pytest.raises(ValueError):
        TopicsConfig().finding("north", "gw1", level, "temperature")


# --------------------------------------------------------------------------- catalog


def ref(id: str, site: str, serves: tuple[str, ...], model: str | None = "ref-station",
        sensors: tuple[str, ...] = ("temperature",)) -> Reference:
    return Reference(id=id, site=site, serves=serves, sensors=sensors, model=model)


@pytest.fixture
def catalog() -> Catalog:
    refs = (
        ref("ref-north", "north", ("th-north-*", "pm-north-*", "ref-*")),
        ref("ref-north-2", "north", ("th-north-1?",), model=None),
        ref("ref-south", "south", ("th-*",)),
    )
    models = {"th-north-9*": "co2-ndir", "th-*": "th-200", "pm-*": "pm-25"}
    return build_catalog(load_profiles(PROFILES), refs, models, "cfg.toml")


def test_model_for_precedence(catalog: Catalog) -> None:
    # announced model first, even over a matching glob, and even without a profile
    assert catalog.model_for("th-north-01", "th-300") == "th-300"
    assert catalog.profile("th-300") is None
    assert catalog.model_for("ref-north", "pm-25") == "pm-25"
    # then the model of a reference entry with this id
    assert catalog.model_for("ref-north") == "ref-station"
    assert catalog.model_for("ref-north", "") == "ref-station"
    # a reference without a model falls through to the globs (none match here)
    assert catalog.model_for("ref-north-2") is None
    # then the first matching glob, in order
    assert catalog.model_for("th-north-901") == "co2-ndir"
    assert catalog.model_for("th-north-01") == "th-200"
    assert catalog.model_for("pm-south-3", None) == "pm-25"
    assert catalog.model_for("co2-x") is None
    assert catalog.model_for("TH-north-01") is None  # ids are case-sensitive


def test_profile_lookup(catalog: Catalog) -> None:
    profile = catalog.profile("th-200")
    assert profile is not None and profile.model == "th-200"
    assert catalog.profile("nope") is None


def test_references_for(catalog: Catalog) -> None:
    north = [r.id for r in catalog.references_for("north", "th-north-12")]
    assert north == ["ref-north", "ref-north-2"]
    assert [r.id for r in catalog.references_for("north", "th-north-01")] == ["ref-north"]
    assert [r.id for r in catalog.references_for("south", "th-north-01")] == ["ref-south"]
    assert catalog.references_for("east", "th-north-01") == ()
    assert catalog.references_for("north", "co2-north-1") == ()
    # a reference is not its own reference, though "ref-*" matches its id
    assert [r.id for r in catalog.references_for("north", "ref-north")] == []
    assert [r.id for r in catalog.references_for("north", "ref-north-2")] == ["ref-north"]


def test_is_reference(catalog: Catalog) -> None:
    assert catalog.is_reference("ref-north")
    assert catalog.is_reference("ref-south")
    assert not catalog.is_reference("th-north-01")
    assert not catalog.is_reference("ref-north-3")
    found = catalog.reference("ref-south")
    assert found is not None and found.site == "south"


def test_catalog_is_immutable(catalog: Catalog) -> None:
    with pytest.raises(TypeError):
        catalog.models["x-*"] = "th-200"  # type: ignore[index]
    with pytest.raises(TypeError):
        catalog.profiles["x"] = catalog.profiles["th-200"]  # type: ignore[index]


def test_build_catalog_refuses_duplicate_reference_ids() -> None:
    twice = (ref("ref-a", "north", ("x",)), replace(ref("ref-a", "south", ("y",)), source="b"))
    expect_error(lambda: build_catalog(load_profiles(PROFILES), twice, {}, "cfg.toml"), "b",
                 "reference[0].id", "'ref-a'")


def test_load_catalog_from_config(tmp_path: Path) -> None:
    cfg = default_config(profiles_dir=PROFILES, references_dir=REFERENCES,
                         models={"th-*": "th-200"})
    catalog = load_catalog(cfg)
    assert set(catalog.profiles) == {"th-200", "pm-25", "co2-ndir", "ref-station"}
    assert catalog.model_for("th-north-01") == "th-200"
    assert catalog.is_reference("ref-north")
    bad = replace(cfg, models={"th-*": "th-999"}, source=str(tmp_path / "c.toml"))
    expect_error(lambda: load_catalog(bad), tmp_path / "c.toml", 'models."th-*"', "'th-999'")


def test_daemon_config_is_frozen() -> None:
    cfg: DaemonConfig = default_config()
    with pytest.raises(AttributeError):
        cfg.site = "x"  # type: ignore[misc]
