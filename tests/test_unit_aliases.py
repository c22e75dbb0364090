"""A site's own unit spellings, and what an unknown unit's refusal says.

``[units] aliases`` in the daemon's configuration teaches the gate a vendor's spelling
(``"DEG F" = "degF"``) without editing the package; a bad alias is refused like any bad
configuration (file, key, problem, exit 2). A unit nobody taught it is refused with the
closest names the registry knows, in words, never with pint's exception or a path into
the installed package.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from auditd.domain.validate import Reason, validate_message
from auditd.errors import UnitError
from auditd.model import Profile, RawMessage, SensorSpec, Tolerance
from auditd.units import alias_problem, parse_unit, registry, resolve, suggestions

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample-recording.jsonl"

PINT_INTERNALS = re.compile(r"UndefinedUnitError|DefinitionSyntaxError|AssertionError|"
                            r"TokenError|Traceback|site-packages|units\.txt|auditd/")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=300)


# --------------------------------------------------------------------------- did you mean


@pytest.mark.parametrize(("typed", "meant"), [
    ("hpa", "hPa"), ("HPA", "hPa"), ("degc", "degC"), ("celcius", "celsius"),
    ("ppmm", "ppm"), ("Pascal", "pascal"), ("kelvn", "kelvin"), ("PERCNT", "PERCENT"),
])
def test_an_unknown_unit_is_refused_with_the_names_it_may_have_meant(typed: str,
                                                                     meant: str) -> None:
    with pytest.raises(UnitError) as err:
        parse_unit(typed)
    assert f"did you mean {meant!r}" in err.value.problem or \
        f"or {meant!r}" in err.value.problem, err.value.problem
    assert not PINT_INTERNALS.search(err.value.problem), err.value.problem


@pytest.mark.parametrize("text", ["1/0", "m**", "m*/s", "(m", "ug/m3x", "zzqx"])
def test_a_refusal_says_what_is_wrong_in_words(text: str) -> None:
    with pytest.raises(UnitError) as err:
        parse_unit(text)
    assert not PINT_INTERNALS.search(err.value.problem), err.value.problem


NAMES = sorted(n for n in registry() if n.isascii() and n.isalpha() and len(n) >= 3)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NAMES), st.data())
def test_suggestions_are_names_the_registry_parses(name: str, data: st.DataObject) -> None:
    """A unit name with one letter dropped or its case changed: whatever is suggested is a
    unit the gate would accept, and the original is among the suggestions when only its
    case changed."""
    cut = data.draw(st.integers(0, len(name) - 1))
    typo = data.draw(st.sampled_from([name[:cut] + name[cut + 1:], name.swapcase(),
                                      name.upper(), name.lower()]))
    assume(typo and typo != name)
    found = suggestions(typo)
    assert len(found) <= 3
    for candidate in found:
        parse_unit(candidate)
    if typo.casefold() == name.casefold():
        try:
            parse_unit(typo)
        except UnitError as exc:
            assert found, exc.problem
            assert all(c.casefold() == typo.casefold() for c in found[:1])


# --------------------------------------------------------------------------- aliases

TOLERANCE = Tolerance(bias=1.0, gain=0.1, rmse=1.0, r2_min=0.0, lag_s=300.0,
                      window_s=86400.0, min_samples=60)
TARGETS = ["degC", "degF", "K", "percent", "hPa", "Pa", "ppm", "ppb", "ug/m^3", "m/s"]
SPELLING = st.text(alphabet="abcdefgDEGFCKPa °./%", min_size=1, max_size=12)


def telemetry(unit: str, value: float) -> RawMessage:
    payload = {"ts": 1_764_057_600, "readings": {"x": {"value": value, "unit": unit}}}
    return RawMessage("fleet/north/dev-1/telemetry", json.dumps(payload).encode(),
                      1_764_057_600.0)


def judged(unit: str, canonical: str, value: float,
           aliases: dict[str, str] | None = None) -> tuple[list[float], list[str]]:
    quantity = "[temperature]" if canonical in ("degC", "degF", "K") else \
        str(parse_unit(canonical).dimensionality) or "dimensionless"
    spec = SensorSpec(name="x", quantity=quantity, unit=canonical, range=(-1e12, 1e12),
                      interval_s=60.0, tolerance=TOLERANCE)
    profile = Profile(model="m", sensors={"x": spec})
    outcome = validate_message(telemetry(unit, value), prefix="fleet",
                               profile_for=lambda site, device: profile,
                               unit_aliases=MappingProxyType(aliases or {}))
    return [r.value for r in outcome.readings], [r.reason for r in outcome.rejections]


@settings(max_examples=150, deadline=None)
@given(SPELLING, st.sampled_from(TARGETS), st.sampled_from(TARGETS),
       st.floats(-1e3, 1e3, allow_nan=False))
def test_an_accepted_alias_reads_exactly_as_its_target(
        spelling: str, target: str, canonical: str, value: float) -> None:
    """Whatever the spelling: an alias the configuration accepts makes the gate read that
    spelling exactly as it reads the target (same value or same refusal), and an alias is
    refused when the spelling is already one of pint's names for something else."""
    problem = alias_problem(spelling, target)
    try:
        single = registry().get_name(spelling)
    except Exception:
        single = ""
    if single and spelling == spelling.strip() and parse_unit(spelling) != parse_unit(target):
        assert problem is not None and "already means" in problem
    if problem is not None:
        return
    assert resolve(spelling, {spelling: target}) == target
    assert judged(spelling, canonical, value, {spelling: target}) == \
        judged(target, canonical, value)


def test_the_issue_example_and_the_traps() -> None:
    assert alias_problem("deg C", "degC") is None  # pint reads it as degree x coulomb
    assert alias_problem("DEG F", "degF") is None
    assert "already means coulomb" in (alias_problem("C", "degC") or "")
    assert "is not a unit" in (alias_problem("deg C", "degreez_C") or "")
    assert alias_problem(" deg C", "degC") is not None
    assert alias_problem("x" * 80, "degC") is not None
    readings, rejected = judged("deg C", "degC", 21.5)
    assert readings == [] and rejected == [Reason.UNIT_INCOMPATIBLE]
    assert judged("deg C", "degC", 21.5, {"deg C": "degC"}) == ([21.5], [])
    assert judged("deg C", "K", 0.0, {"deg C": "degC"}) == ([273.15], [])


def test_an_unknown_units_rejection_points_at_the_site_aliases() -> None:
    _, rejected = judged("degc", "degC", 1.0)
    assert rejected == [Reason.UNIT_INVALID]
    outcome = validate_message(telemetry("degc", 1.0), prefix="fleet", profile_for=lambda s, d:
                               Profile(model="m", sensors={"x": SensorSpec(
                                   name="x", quantity="[temperature]", unit="degC",
                                   range=(-100, 100), interval_s=60.0, tolerance=TOLERANCE)}))
    detail = outcome.rejections[0].detail
    assert "did you mean 'degC'" in detail and "[units] aliases" in detail
    assert not PINT_INTERNALS.search(detail)


# --------------------------------------------------------------------------- configuration


def config_with(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'profiles_dir = "{REPO / "device_profiles"}"\n'
                    f'references_dir = "{REPO / "references"}"\n' + body)
    return path


@pytest.mark.parametrize(("body", "key", "problem"), [
    ('[units]\naliases = {"C" = "degC"}\n', 'units.aliases."C"', "already means coulomb"),
    ('[units]\naliases = {"deg C" = "degreez"}\n', 'units.aliases."deg C"', "did you mean"),
    ('[units]\naliases = {"deg C" = 3}\n', 'units.aliases."deg C"', "unit string"),
    ('[units]\naliases = "deg C"\n', "units.aliases", "must be a table"),
    ('[units]\nalias = {"deg C" = "degC"}\n', "units.alias", "did you mean 'aliases'"),
])
def test_a_bad_alias_is_refused_with_file_key_and_problem(tmp_path: Path, body: str,
                                                          key: str, problem: str) -> None:
    config = config_with(tmp_path, body)
    result = cli("check-config", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert str(config) in result.stderr and key in result.stderr, result.stderr
    assert problem in result.stderr and "Traceback" not in result.stderr


def _recording_in_vendor_spelling(tmp_path: Path) -> Path:
    """The sample recording with th-north-03's degF written the vendor's way."""
    out = tmp_path / "vendor.jsonl"
    lines = SAMPLE.read_text().splitlines()
    out.write_text("\n".join(line.replace('"unit":"degF"', '"unit":"DEG F"')
                             if "th-north-03/telemetry" in line else line
                             for line in lines) + "\n")
    assert out.read_text().count("DEG F") > 100
    return out


def test_replay_reads_a_vendor_spelling_through_the_configured_alias(tmp_path: Path) -> None:
    recording = _recording_in_vendor_spelling(tmp_path)

    def replayed(name: str, body: str) -> tuple[dict, list[dict]]:
        config = config_with(tmp_path, body)
        out = tmp_path / f"{name}.jsonl"
        result = cli("replay", str(recording), "--config", str(config), "--out", str(out))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout), [json.loads(x) for x in out.read_text().splitlines()]

    without, _ = replayed("plain", "")
    taught, findings = replayed("taught", '[units]\naliases = {"DEG F" = "degF"}\n')
    original = cli("replay", str(SAMPLE), "--config", str(config_with(tmp_path, "")),
                   "--out", str(tmp_path / "original.jsonl"))
    assert original.returncode == 0, original.stderr
    assert without["readings_rejected"].get("unit_invalid", 0) \
        >= taught["readings_rejected"].get("unit_invalid", 0) + 100
    assert taught["readings_rejected"] == json.loads(original.stdout)["readings_rejected"]
    assert (tmp_path / "taught.jsonl").read_text() == (tmp_path / "original.jsonl").read_text()
    assert any(f["device"] == "th-north-03" for f in findings)
