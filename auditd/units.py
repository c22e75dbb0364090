"""The one pint registry, and cheap converters built from it.

pint is the authority on what a unit string means, but building a ``Quantity`` costs tens
of microseconds, far too much per reading. So pint is asked once per distinct
(unit, canonical) pair, and the answer is kept as a plain ``value * scale + offset``
(conversions between the units sensors use are affine, degF to degC included; ``converter``
proves it for each pair and refuses the rest, such as dBm).

A site whose devices spell a unit their own way (a vendor's ``"deg C"``) names the
spelling in its configuration (``[units] aliases``, checked by ``alias_problem``); the
gate looks a reported unit up there first (``resolve``), so nothing in the package needs
editing. A name pint does not know is refused with the closest names it does know
(``suggestions``), never with pint's own exception text.

Unit strings arrive from the network, and pint evaluates them as arithmetic: ``m**9**9**9``
would keep a core busy for hours. ``parse_unit`` therefore bounds what it hands to pint
(length, characters, no powers of numbers or of powers, small exponents) before parsing.
"""

from __future__ import annotations

import difflib
import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
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


ALIAS_HINT = "a site adds its own spellings under [units] aliases in its configuration"
"""Said where a device's unit is refused (``domain.validate``), not for a profile's unit,
which must be pint's own."""


def _pint_problem(exc: Exception) -> str:
    """What was wrong, in words: pint's exception types and texts are its internals."""
    if isinstance(exc, pint.UndefinedUnitError):
        names = [str(n) for n in (exc.unit_names if isinstance(exc.unit_names, tuple | list)
                                  else (exc.unit_names,))]
        unknown = ", ".join(repr(n) for n in names) or "a name"
        close = [c for n in names for c in suggestions(n)]
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"{unknown} is not a unit name{hint}"
    if isinstance(exc, ZeroDivisionError):
        return "divides by zero"
    return ("is not a unit expression (unit names joined by '*', '/' and small powers, "
            "such as ug/m^3)")


MAX_SUGGESTIONS = 3


def suggestions(name: str) -> list[str]:
    """Unit names pint knows that ``name`` may have meant: the same letters in another
    case first (``hpa`` -> ``hPa``), then names one edit away, a letter missing, added or
    changed (``kelvn``, ``ppmm``, ``celcius``), closest first by ``difflib``'s ratio.

    Looked up in an index of each name with one letter deleted (the symmetric-deletion
    method), not by comparing with all thousand names: a refusal is on the gate's path,
    and a flood of made-up units must cost about what pint's own refusal does."""
    if len(name) > MAX_UNIT_CHARS:
        return []
    key = name.casefold()
    folded, index = _folded_names(), _deletion_index()
    same_case = list(folded.get(key, ()))
    near = {k for variant in _deletions(key) for k in index.get(variant, ())} - {key}
    ranked = sorted(near, key=lambda k: (-difflib.SequenceMatcher(None, key, k).ratio(), k))
    out = same_case + [n for k in ranked for n in folded[k]]
    names = _known_names()
    return [n for n in dict.fromkeys(out) if n != name and n in names
            and not n.startswith(("Δ", "delta_")) and _ALLOWED.fullmatch(n)][:MAX_SUGGESTIONS]


def _deletions(key: str) -> set[str]:
    """``key`` and every string with one of its characters deleted."""
    return {key, *(key[:i] + key[i + 1:] for i in range(len(key)))}


@lru_cache(maxsize=1)
def _deletion_index() -> Mapping[str, tuple[str, ...]]:
    """Each case-folded name under itself and under each one-deletion variant: two names
    one edit apart share a variant."""
    out: dict[str, list[str]] = {}
    for key in _folded_names():
        for variant in _deletions(key):
            out.setdefault(variant, []).append(key)
    return {variant: tuple(keys) for variant, keys in out.items()}


@lru_cache(maxsize=1)
def _known_names() -> frozenset[str]:
    """Every unit name and alias of the registry, and the common prefixed units (``hPa``
    is a prefix and a name to pint, not an entry of its own)."""
    return frozenset(registry()) | frozenset(_COMMON_UNITS)


@lru_cache(maxsize=1)
def _folded_names() -> Mapping[str, tuple[str, ...]]:
    """Case-folded name -> the registry's spellings of it, the common units first."""
    out: dict[str, list[str]] = {}
    for name in (*_COMMON_UNITS, *sorted(registry())):
        spellings = out.setdefault(name.casefold(), [])
        if name not in spellings:
            spellings.append(name)
    return {key: tuple(value) for key, value in out.items()}


# --------------------------------------------------------------------------- site spellings

UnitAliases = Mapping[str, str]
"""A site's own unit spellings -> the pint expression each means (``"deg C" -> "degC"``)."""

NO_ALIASES: UnitAliases = MappingProxyType({})


def resolve(unit: str, aliases: UnitAliases) -> str:
    """The unit a reported string means: the site's alias for it, or itself."""
    return aliases.get(unit, unit) if aliases else unit


def alias_problem(spelling: str, target: str) -> str | None:
    """Why ``spelling = target`` cannot be a site alias, or None when it can.

    The target must be a unit pint parses (an alias of an alias is not followed). The
    spelling must look like a unit (the same characters and length the gate accepts) and
    must not change what a single unit name pint already knows means: ``"C" = "degC"``
    would turn every coulomb into a Celsius, which is the kind of silent redefinition the
    package's own definitions refuse (``units.txt``). A spelling pint reads as a product
    of names (``"deg C"``: degree times coulomb) is the vendor's own, and may be aliased.
    """
    if not spelling.strip() or spelling != spelling.strip():
        return "the spelling must be non-empty, without leading or trailing spaces"
    if len(spelling) > MAX_UNIT_CHARS or not _ALLOWED.fullmatch(spelling):
        return (f"the spelling is not a unit string the gate accepts (at most "
                f"{MAX_UNIT_CHARS} characters, letters, digits, spaces and . * / ^ ( ) % "
                f"and unit symbols)")
    try:
        meaning = parse_unit(target)
    except UnitError as exc:
        return f"the target {target!r} is not a unit: {exc.problem}"
    try:
        existing = registry().get_name(spelling)
    except Exception:  # not a single name pint knows: the site's own spelling
        return None
    if existing and parse_unit(spelling) != meaning:
        return (f"{spelling!r} already means {existing} to pint; an alias may not change "
                f"what a unit name means (map the devices' field instead)")
    return None


DIMENSIONLESS = frozenset({"dimensionless", "[]"})
"""The spellings of the empty dimension (a ratio: percent, ppm)."""


@lru_cache(maxsize=256)
def dimensionality(quantity: str) -> UnitsContainer:
    """The dimension a profile's ``quantity`` names: ``[temperature]``, ``[mass]/[length]**3``.

    ``dimensionless`` is special-cased because pint 0.25's ``get_dimensionality`` raises
    ``KeyError`` for it; ``[]`` is how pint itself writes that dimension (what
    ``get_dimensionality`` returns for a ratio), so it is taken too. Only dimension
    expressions are taken, not unit names, so that a profile cannot write
    ``quantity = "degC"`` and have it read as something else.
    """
    text = quantity.strip()
    if text in DIMENSIONLESS:
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
    except Exception:
        raise UnitError(unit, f"cannot be converted to {canonical!r}") from None
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
