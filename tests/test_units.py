"""auditd.units: spellings, dimensions, cached affine converters, mix-up candidates.

Expected conversions come from physics written out here and from pint's own
``Quantity.to`` (a different code path from the two-point ``Converter``), never from the
module under test.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditd.errors import UnitError
from auditd.units import (
    Converter,
    check_compatible,
    converter,
    dimensionality,
    parse_unit,
    registry,
    same_dimension_units,
)


def pint_to(value: float, unit: str, target: str) -> float:
    ureg = registry()
    return float(ureg.Quantity(value, ureg.parse_units(unit)).to(ureg.parse_units(target)).m)


# --------------------------------------------------------------------------- parse_unit

CONTRACT_UNITS = ["degC", "degF", "K", "percent", "%", "hPa", "Pa", "ppm", "ppb", "ug/m^3",
                  "V", "mV"]  # fmt: skip


@pytest.mark.parametrize("text", CONTRACT_UNITS)
def test_contract_units_parse(text: str) -> None:
    assert parse_unit(text) is not None


@pytest.mark.parametrize(
    ("spelling", "meaning", "factor"),
    [
        ("ppb", "dimensionless", 1e-9),
        ("PPB", "dimensionless", 1e-9),
        ("ppbv", "dimensionless", 1e-9),
        ("ppt", "dimensionless", 1e-12),  # parts per trillion, not pint's "picopint"
        ("PPM", "dimensionless", 1e-6),
        ("ppmv", "dimensionless", 1e-6),
        ("PERCENT", "dimensionless", 0.01),
        ("UG/M3", "kg/m^3", 1e-9),
        ("ug/m3", "kg/m^3", 1e-9),
        ("µg/m³", "kg/m^3", 1e-9),
        ("μg/m³", "kg/m^3", 1e-9),  # Greek mu as well as the micro sign
        ("°C", "degC", 1.0),
        ("°F", "degF", 1.0),
    ],
)
def test_extra_spellings_mean_what_exports_mean(spelling: str, meaning: str, factor: float) -> None:
    assert converter(spelling, meaning).scale == pytest.approx(factor, rel=1e-12)
    assert converter(spelling, meaning).offset == 0.0


def test_c_stays_coulomb() -> None:
    # Deliberate: pint's SI symbol is not redefined; agency "C" must be mapped explicitly.
    with pytest.raises(UnitError):
        check_compatible("C", "[temperature]")


@pytest.mark.parametrize(
    "text",
    ["", "   ", "1/0", "2*m", "m**nan", "notaunit", "m\x00", "[length]", "x" * 65, "deg C\n",
     "m**99", "ft**9", "percent**12", "m³³", "(m)**2", "ug/m^3; DROP TABLE"],
)  # fmt: skip
def test_bad_units_raise_unit_error(text: str) -> None:
    with pytest.raises(UnitError) as info:
        parse_unit(text)
    assert info.value.problem


HOSTILE_UNITS = [
    "m**9**9**9",
    "9**9**9",
    "m^9^9^9",
    "(((min**9)**9)**9)**9",
    "((((9)**99)**99)**99)**99",
    "m⁹ ⁹ ⁹",
    "m**(9**9**9)",
    "min**99999999",
    "dozen**99999999",
    "dozen⁹⁹⁹⁹⁹⁹⁹⁹",
    "9⁹⁹⁹⁹⁹⁹⁹",
]


def test_hostile_units_are_refused_fast() -> None:
    """pint evaluates unit strings as arithmetic; these would otherwise hang a core.

    Run in a child process so that a regression fails by timeout instead of hanging.
    """
    script = (
        "import json, sys\n"
        "from auditd.units import parse_unit, converter\n"
        "from auditd.errors import UnitError\n"
        "out = []\n"
        "for text in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        converter(text, text)\n"
        "        out.append('accepted')\n"
        "    except UnitError:\n"
        "        out.append('refused')\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(HOSTILE_UNITS)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(done.stdout) == ["refused"] * len(HOSTILE_UNITS)


@given(st.text(max_size=70) | st.text("m^*0123456789()⁹²/ ", max_size=20))
def test_parse_unit_raises_only_unit_error(text: str) -> None:
    try:
        unit = parse_unit(text)
    except UnitError as exc:
        assert exc.problem
    else:
        assert text.strip() and len(text) <= 64
        assert unit.dimensionality is not None


# --------------------------------------------------------------------------- dimensions


@pytest.mark.parametrize(
    ("quantity", "unit"),
    [
        ("[temperature]", "K"),
        ("[pressure]", "Pa"),
        ("[mass]/[length]**3", "ug/m^3"),
        ("[mass] / [length] ** 3", "ug/m^3"),
        ("[length]/[time]", "m/s"),
        ("1/[time]", "Hz"),
        ("[electric_potential]", "V"),
        ("dimensionless", "percent"),
        ("dimensionless", "ppb"),
    ],
)
def test_dimensionality_matches_a_unit_of_it(quantity: str, unit: str) -> None:
    assert dimensionality(quantity) == parse_unit(unit).dimensionality


def test_dimensionless_is_empty_and_differs_from_others() -> None:
    assert not dimensionality("dimensionless")
    assert dimensionality("dimensionless") != dimensionality("[temperature]")
    # pint's own spelling of the empty dimension (get_dimensionality("percent") prints "[]")
    assert dimensionality("[]") == dimensionality("dimensionless") == \
        parse_unit("percent").dimensionality


@pytest.mark.parametrize(
    "quantity",
    ["", "temperature", "degC", "[temprature]", "[length]*2", "[length]**9**9", "[ ]",
     "[length", "[" * 100],
)  # fmt: skip
def test_bad_quantities_raise_unit_error(quantity: str) -> None:
    with pytest.raises(UnitError):
        dimensionality(quantity)


@pytest.mark.parametrize(
    ("unit", "quantity"),
    [("degF", "[temperature]"), ("inHg", "[pressure]"), ("ppm", "dimensionless"),
     ("%", "dimensionless"), ("UG/M3", "[mass]/[length]**3"), ("mV", "[electric_potential]")],
)  # fmt: skip
def test_compatible_units_pass(unit: str, quantity: str) -> None:
    check_compatible(unit, quantity)


@pytest.mark.parametrize(
    ("unit", "quantity"),
    [("degC", "[pressure]"), ("hPa", "[temperature]"), ("percent", "[temperature]"),
     ("hPa", "dimensionless"), ("ug/m^3", "dimensionless"), ("V", "[current]"),
     ("m", "[temperature]")],
)  # fmt: skip
def test_incompatible_units_fail(unit: str, quantity: str) -> None:
    with pytest.raises(UnitError) as info:
        check_compatible(unit, quantity)
    assert info.value.unit == unit


# --------------------------------------------------------------------------- converter


@pytest.mark.parametrize(
    ("unit", "canonical", "physics"),
    [
        ("degF", "degC", lambda f: (f - 32.0) * 5.0 / 9.0),
        ("K", "degC", lambda k: k - 273.15),
        ("degC", "degF", lambda c: c * 9.0 / 5.0 + 32.0),
        ("hPa", "Pa", lambda h: h * 100.0),
        ("Pa", "hPa", lambda p: p / 100.0),
        ("mV", "V", lambda mv: mv / 1000.0),
        ("ppb", "ppm", lambda b: b / 1000.0),
        ("ppm", "ppb", lambda m: m * 1000.0),
        ("percent", "dimensionless", lambda p: p / 100.0),
        ("mg/m^3", "ug/m^3", lambda mg: mg * 1000.0),
    ],
)
@pytest.mark.parametrize("value", [-40.0, 0.0, 1.0, 21.43, 1013.25, 1e6])
def test_converter_agrees_with_physics_and_pint(
    unit: str, canonical: str, physics: Callable[[float], float], value: float
) -> None:
    got = converter(unit, canonical)(value)
    assert got == pytest.approx(physics(value), rel=1e-12, abs=1e-9)
    assert got == pytest.approx(pint_to(value, unit, canonical), rel=1e-12, abs=1e-9)


COMPATIBLE_PAIRS = [
    ("degF", "degC"), ("degR", "K"), ("K", "degF"), ("inHg", "hPa"), ("psi", "kPa"),
    ("mmHg", "hPa"), ("ppb", "ppm"), ("ppt", "percent"), ("mV", "V"), ("uV", "kV"),
    ("ng/m^3", "ug/m^3"), ("UG/M3", "mg/m^3"), ("km/h", "m/s"), ("permille", "ppm"),
]  # fmt: skip


@given(st.sampled_from(COMPATIBLE_PAIRS), st.floats(-1e9, 1e9, allow_nan=False))
def test_converter_matches_pint_quantity_to(pair: tuple[str, str], value: float) -> None:
    unit, canonical = pair
    expected = pint_to(value, unit, canonical)
    assert math.isclose(converter(unit, canonical)(value), expected, rel_tol=1e-9, abs_tol=1e-9)


def test_converter_is_built_once_per_pair() -> None:
    assert converter("degF", "degC") is converter("degF", "degC")


def test_converter_is_frozen_and_plain() -> None:
    conversion = converter("degF", "degC")
    assert isinstance(conversion.scale, float) and isinstance(conversion.offset, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        conversion.scale = 2.0  # type: ignore[misc]


def test_identity_conversion() -> None:
    assert converter("hPa", "hPa") == Converter(1.0, 0.0)


@pytest.mark.parametrize(
    ("unit", "canonical"), [("degC", "hPa"), ("ppm", "ug/m^3"), ("V", "A"), ("nonsense", "V")]
)
def test_converter_refuses_incompatible(unit: str, canonical: str) -> None:
    with pytest.raises(UnitError):
        converter(unit, canonical)


def test_converter_refuses_logarithmic_units() -> None:
    # dBm and mW share a dimension, but no scale and offset maps one onto the other.
    check_compatible("dBm", "[power]")
    with pytest.raises(UnitError, match="linear"):
        converter("dBm", "mW")


# --------------------------------------------------------------------------- candidates


@pytest.mark.parametrize(
    ("canonical", "expected"),
    [
        ("degC", {"degF", "K", "degR"}),
        ("K", {"degC", "degF"}),
        ("hPa", {"Pa", "kPa", "bar", "psi", "inHg", "mmHg"}),
        ("percent", {"ppm", "ppb", "dimensionless", "permille"}),
        ("ppb", {"ppm", "ppt", "percent"}),
        ("V", {"mV", "uV", "kV"}),
        ("ug/m^3", {"mg/m^3", "ng/m^3"}),
    ],
)
def test_same_dimension_units_has_the_usual_suspects(canonical: str, expected: set[str]) -> None:
    found = same_dimension_units(canonical)
    assert expected <= set(found)
    assert len(found) <= 12


@pytest.mark.parametrize("canonical", ["degC", "hPa", "percent", "dimensionless", "ppb", "V",
                                       "ug/m^3", "m/s", "Pa", "ppm"])  # fmt: skip
def test_same_dimension_units_are_real_distinct_alternatives(canonical: str) -> None:
    found = same_dimension_units(canonical)
    assert found, "every common canonical unit has some alternative"
    assert canonical not in found
    conversions = []
    for candidate in found:
        conversion = converter(candidate, canonical)  # parses and is compatible
        assert not (math.isclose(conversion.scale, 1.0) and math.isclose(conversion.offset, 0.0)), (
            f"{candidate} is the same unit as {canonical}"
        )
        conversions.append((round(conversion.scale, 12), round(conversion.offset, 9)))
    assert len(set(conversions)) == len(conversions)


def test_same_dimension_units_drops_aliases_of_the_canonical() -> None:
    assert "mbar" not in same_dimension_units("hPa")  # 1 mbar == 1 hPa: no mix-up possible
    for_pa = same_dimension_units("Pa")
    assert ("hPa" in for_pa) != ("mbar" in for_pa)  # one spelling of the same candidate


def test_same_dimension_units_is_deterministic_and_safe_to_mutate() -> None:
    first = same_dimension_units("degC")
    first.clear()
    assert same_dimension_units("degC") == same_dimension_units("degC") != []


def test_same_dimension_units_refuses_bad_canonical() -> None:
    with pytest.raises(UnitError):
        same_dimension_units("furlongs per fortnite")
