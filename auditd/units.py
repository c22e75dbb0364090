"""The one pint registry, and cheap converters built from it.

pint is the authority on what a unit string means, but building a ``Quantity`` costs tens
of microseconds, far too much per reading. So pint is asked once per distinct
(unit, canonical) pair, and the answer is kept as a plain ``value * scale + offset``
(conversions between the units sensors use are affine, degF to degC included; ``converter``
proves it for each pair and refuses the rest, such as dBm).

Unit strings arrive from the network, and pint evaluates them as arithmetic: ``m**9**9**9``
would keep a core busy for hours. ``parse_unit`` therefore bounds what it hands to pint
(length, characters, no powers of numbers or of powers, small exponents) before parsing.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import pint
from pint.util import UnitsContainer

from auditd import PACKAGE_DATA
from auditd.errors import UnitError

DEFINITIONS = PACKAGE_DATA / "units.txt"
"""Extra spellings (ppb, ppt, agency capitals), in pint's own definitions syntax."""

MAX_UNIT_CHARS = 64
"""Longer strings are not units; callers may reject them before touching any cache."""

MAX_EXPONENT = 8
"""Largest power of one unit accepted (m^3 is common, m^9 is not a sensor's unit)."""

_ALLOWED = re.compile(r"[A-Za-z0-9_ .*/^()%°µμ·‰Ω⁻⁰¹²³⁴⁵⁶⁷⁸⁹-]+")
# A power (``**``, ``^`` or a superscript) whose base is not a unit name: a number, a
# parenthesis or another power. Those are the only ways to make pint evaluate a huge
# integer power (9**9**9, (9**99)**99, m**9**9**9); a unit's own exponent is bounded after
# parsing instead (MAX_EXPONENT), before any conversion factor is computed.
_NAME_END = "A-Za-z_°µμΩ‰%"
_SUPERSCRIPT = "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"
_POWER_OF_NON_NAME = re.compile(
    rf"(?:^|[^{_NAME_END}{_SUPERSCRIPT}\s])\s*(?:\*\*|\^)"
    rf"|(?:^|[^{_NAME_END}{_SUPERSCRIPT}])[{_SUPERSCRIPT}]"
)

_DIMENSION_TERM = r"\[[A-Za-z_]+\](?:\s*(?:\*\*|\^)\s*-?[0-9](?:\.[0-9]+)?)?"
_DIMENSION = re.compile(
    rf"(?:1\s*/\s*)?{_DIMENSION_TERM}(?:\s*[*/]\s*{_DIMENSION_TERM})*", re.ASCII
)
"""``[mass]/[length]**3``, ``1/[time]``: dimensions with small exponents, nothing else."""

_SPAN = 1000.0
_IDENTITY_TOLERANCE = 1e-9
"""Relative tolerance for "the same conversion" and for the affinity check."""

# Units sensors and their exports commonly report in, as pint spells them. Which of them
# share a dimension with a given canonical unit, and how they convert, is pint's answer;
# this list only keeps the candidates of ``same_dimension_units`` short and familiar.
_COMMON_UNITS = (
    # temperature
    "degC", "degF", "K", "degR",
    # pressure
    "Pa", "hPa", "kPa", "mbar", "bar", "atm", "psi", "inHg", "mmHg", "torr",
    # ratios (humidity, gases)
    "percent", "permille", "ppm", "ppb", "ppt", "dimensionless",
    # mass concentration (particulate matter, gases)
    "ug/m^3", "mg/m^3", "ng/m^3", "g/m^3",
    # electrical
    "V", "mV", "uV", "kV", "A", "mA", "uA", "W", "mW", "kW", "ohm", "kohm",
    # length, speed, time, light, frequency
    "m", "cm", "mm", "km", "ft", "in",
    "m/s", "km/h", "mph", "knot", "ft/s",
    "s", "min", "h",
    "lx", "Hz",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Converter:
    """``value * scale + offset``: a pint conversion reduced to two floats."""

    scale: float
    offset: float

    def __call__(self, value: float) -> float:
        return value * self.scale + self.offset


_registry: pint.UnitRegistry | None = None
_registry_lock = threading.Lock()


def registry() -> pint.UnitRegistry:
    """The process-wide registry, built on first use.

    Lazily, because loading pint's definitions takes a noticeable fraction of a second that
    commands which never see a unit should not pay; under a lock, because units of two
    registries cannot be compared and a race would create two.
    """
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                ureg: pint.UnitRegistry = pint.UnitRegistry(
                    cache_folder=None, on_redefinition="raise"
                )
                ureg.load_definitions(DEFINITIONS)
                _registry = ureg
    return _registry


@lru_cache(maxsize=1024)
def parse_unit(text: str) -> pint.Unit:
    """The pint unit a string names; ``UnitError`` for anything pint would not take.

    Cached because the same few strings arrive millions of times. Any pint failure
    (undefined name, syntax, ``1/0``, a scaling factor) becomes a ``UnitError``, so callers
    handle one exception type whatever pint's internals raise.
    """
    _check_shape(text)
    try:
        unit = registry().parse_units(text)
    except Exception as exc:  # pint raises many unrelated types for bad input
        raise UnitError(text, _pint_problem(exc)) from None
    powers = cast("Iterable[float]", unit._units.values())  # pint parses only real numbers
    if any(abs(power) > MAX_EXPONENT for power in powers):
        raise UnitError(text, f"an exponent above {MAX_EXPONENT} is not a sensor unit")
    return unit


def _check_shape(text: str) -> None:
    """Refuse, before pint evaluates anything, strings that are not units or are traps."""
    if not text.strip():
        raise UnitError(text, "empty unit")
    if len(text) > MAX_UNIT_CHARS:
        raise UnitError(text[:MAX_UNIT_CHARS] + "...", f"longer than {MAX_UNIT_CHARS} characters")
    if not _ALLOWED.fullmatch(text):
        raise UnitError(text, "contains characters no unit uses")
    if _POWER_OF_NON_NAME.search(text):
        raise UnitError(text, "only a unit name may be raised to a power")


def _pint_problem(exc: Exception) -> str:
    if isinstance(exc, pint.UndefinedUnitError):
        return "not a unit pint knows (add a spelling to auditd/units.txt)"
    return f"cannot be parsed ({type(exc).__name__}: {exc})"[:200]


@lru_cache(maxsize=256)
def dimensionality(quantity: str) -> UnitsContainer:
    """The dimension a profile's ``quantity`` names: ``[temperature]``, ``[mass]/[length]**3``.

    ``dimensionless`` is special-cased because pint 0.25's ``get_dimensionality`` raises
    ``KeyError`` for it. Only dimension expressions are taken, not unit names, so that a
    profile cannot write ``quantity = "degC"`` and have it read as something else.
    """
    text = quantity.strip()
    if text == "dimensionless":
        return UnitsContainer()
    if len(text) > MAX_UNIT_CHARS or not _DIMENSION.fullmatch(text):
        raise UnitError(quantity, 'a quantity is a dimension such as "[temperature]"')
    try:
        dims = registry().get_dimensionality(text)
    except Exception as exc:
        raise UnitError(quantity, _pint_problem(exc)) from None
    return UnitsContainer(dims)


def check_compatible(unit: str, quantity: str) -> None:
    """Raise ``UnitError`` unless ``unit`` measures ``quantity`` (degF measures [temperature])."""
    have = parse_unit(unit).dimensionality
    want = dimensionality(quantity)
    if have != want:
        raise UnitError(unit, f"is {_show_dims(have)}, not {_show_dims(want)}")


def _show_dims(dims: UnitsContainer) -> str:
    return str(dims) if dims else "dimensionless"


@lru_cache(maxsize=1024)
def converter(unit: str, canonical: str) -> Converter:
    """The affine map pint would apply from ``unit`` to ``canonical``, built once per pair.

    pint is evaluated at 0 and at 1000 (a wide span keeps the offset's rounding out of the
    scale), then at -1000 to prove the map is affine: logarithmic units such as dBm are
    not, and are refused rather than converted wrongly.
    """
    source, target = parse_unit(unit), parse_unit(canonical)
    if source.dimensionality != target.dimensionality:
        raise UnitError(
            unit,
            f"cannot convert to {canonical!r}: {_show_dims(source.dimensionality)} is not "
            f"{_show_dims(target.dimensionality)}",
        )
    ureg = registry()
    try:
        offset = float(ureg.convert(0.0, source, target))
        scale = (float(ureg.convert(_SPAN, source, target)) - offset) / _SPAN
        probe = float(ureg.convert(-_SPAN, source, target))
    except Exception as exc:
        raise UnitError(unit, f"pint cannot convert it to {canonical!r}: {exc}"[:200]) from None
    if not all(math.isfinite(x) for x in (offset, scale, probe)) or scale == 0.0:
        raise UnitError(unit, f"conversion to {canonical!r} is not finite")
    expected = offset - _SPAN * scale
    if abs(probe - expected) > _IDENTITY_TOLERANCE * max(abs(_SPAN * scale), abs(offset)):
        raise UnitError(unit, f"conversion to {canonical!r} is not linear")
    return Converter(scale, offset)


def same_dimension_units(canonical: str) -> list[str]:
    """Common units a value reported as ``canonical`` could really have been in.

    The raw material for diagnosing unit mix-ups (degF sent as degC, Pa as hPa, a fraction
    as percent): units that convert to ``canonical`` exactly like it (mbar for hPa) are left
    out, since such a mix-up changes nothing, and so are repeats of an earlier candidate.
    """
    return list(_same_dimension_units(canonical))


@lru_cache(maxsize=128)
def _same_dimension_units(canonical: str) -> tuple[str, ...]:
    dims = parse_unit(canonical).dimensionality
    found: list[str] = []
    seen: list[Converter] = [Converter(1.0, 0.0)]
    for candidate in _COMMON_UNITS:
        if parse_unit(candidate).dimensionality != dims:
            continue
        conversion = converter(candidate, canonical)
        if any(_same(conversion, other) for other in seen):
            continue
        seen.append(conversion)
        found.append(candidate)
    return tuple(found)


def _same(a: Converter, b: Converter) -> bool:
    """Equal conversions, up to rounding: scales compared relatively, offsets (only the
    temperatures have them, tens to hundreds of units) absolutely."""
    return math.isclose(a.scale, b.scale, rel_tol=_IDENTITY_TOLERANCE) and math.isclose(
        a.offset, b.offset, rel_tol=_IDENTITY_TOLERANCE, abs_tol=_IDENTITY_TOLERANCE
    )
