"""The TOML toolkit every configuration reader uses: one table at a time, every mistake a
``ConfigError`` naming the file, the dotted key and the problem.

A ``Table`` knows its file and key; its ``need``/``get``/``maybe`` take a converter (the
``as_*`` functions below) that turns the raw TOML value into the typed one or raises
``Invalid`` with the problem, which the table turns into the ConfigError. Unknown keys are
refused with the known ones listed: a typo in a tolerance (``rsme = 0.8``) must not
silently fall back to a default and pass every audit.

Duration values accept a number of seconds or a string such as ``"24h"``, ``"1h30m"``,
``"90s"``, ``"7d"`` (``text.parse_duration``); keys ending in ``_s`` are documented in
seconds but accept the same forms.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from auditd.errors import ConfigError, UnitError
from auditd.model import ID_PATTERN
from auditd.text import describe_value, format_duration, parse_duration, parse_size

T = TypeVar("T")


# --------------------------------------------------------------------------- reading TOML


class Invalid(ValueError):
    """A value is wrong; ``Table`` adds the file and the key to make a ConfigError."""


def dotted(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one file; unreadable files and syntax errors (with their line) are ConfigErrors."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(file, "", "no such file") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read it: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "", f"not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"TOML syntax error: {exc}") from None


@dataclass(frozen=True)
class Table:
    """One TOML table being read: knows its file and dotted key for error messages."""

    file: str
    key: str
    data: Mapping[str, Any]

    @classmethod
    def of(cls, file: str, key: str, data: object, known: Iterable[str]) -> Table:
        """Check ``data`` is a table holding only ``known`` keys (typos name the known ones)."""
        if not isinstance(data, dict):
            raise ConfigError(file, key, f"must be a table, not {describe_value(data)}")
        known = tuple(known)
        for name in data:
            if name not in known:
                raise ConfigError(file, dotted(key, name), _unknown(name, known))
        return cls(file, key, data)

    def where(self, name: str) -> str:
        return dotted(self.key, name)

    def has(self, name: str) -> bool:
        return name in self.data

    def need(self, name: str, convert: Callable[[Any], T]) -> T:
        """A required key."""
        if name not in self.data:
            raise ConfigError(self.file, self.where(name), "missing required key")
        return self._convert(name, convert)

    def get(self, name: str, convert: Callable[[Any], T], default: T) -> T:
        """An optional key with a default (the default is not converted)."""
        return self._convert(name, convert) if name in self.data else default

    def maybe(self, name: str, convert: Callable[[Any], T]) -> T | None:
        """An optional key whose absence means "not set"."""
        return self._convert(name, convert) if name in self.data else None

    def table(self, name: str, known: Iterable[str]) -> Table:
        """A sub-table; an absent one reads as empty so that every default applies."""
        return Table.of(self.file, self.where(name), self.data.get(name, {}), known)

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self.where(name), problem)

    def _convert(self, name: str, convert: Callable[[Any], T]) -> T:
        try:
            return convert(self.data[name])
        except (Invalid, UnitError) as exc:
            problem = _unit_problem(exc) if isinstance(exc, UnitError) else str(exc)
            raise ConfigError(self.file, self.where(name), problem) from None


def _unit_problem(exc: UnitError) -> str:
    """``'degC' is [temperature], not ...``: units.py's reason with the unit in front."""
    if exc.unit in exc.problem:
        return exc.problem
    joiner = " " if exc.problem.startswith("is ") else ": "
    return f"{exc.unit!r}{joiner}{exc.problem}"


def _unknown(name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key{hint}; known keys: {', '.join(known)}"


# --------------------------------------------------------------------------- converters
# Each takes the raw TOML value and returns the typed one, or raises Invalid(problem).


def as_string(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, not {describe_value(value)}")
    if not value.strip():
        raise Invalid("must not be empty")
    return value


def as_identifier(value: object) -> str:
    """CONTRACT.md's id pattern: these names end up in topics and store keys."""
    text = as_string(value)
    if not ID_PATTERN.fullmatch(text):
        raise Invalid(f"{text!r} is not a valid name: use 1-64 letters, digits, '_', '.' "
                       f"or '-', starting with a letter or digit")
    return text


def as_boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, not {describe_value(value)}")
    return value


def as_integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"must be an integer, not {describe_value(value)}")
        _check_bounds(value, low, high)
        return value

    return convert


def as_number(low: float | None = None, high: float | None = None,
            positive: bool = False) -> Callable[[Any], float]:
    """A finite number; ``positive`` makes ``low`` exclusive (``> 0`` rather than ``>= 0``)."""

    def convert(value: object) -> float:
        number = as_finite(value)
        if positive and number <= (low or 0.0):
            raise Invalid(f"must be greater than {fmt_number(low or 0.0)}, "
                          f"got {fmt_number(number)}")
        _check_bounds(number, None if positive else low, high)
        return number

    return convert


def as_finite(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"must be a number, not {describe_value(value)}")
    if not math.isfinite(value):
        raise Invalid(f"must be a finite number, not {value!r}")
    return float(value)


def _check_bounds(value: float, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise Invalid(f"must be at least {fmt_number(low)}, got {fmt_number(value)}")
    if high is not None and value > high:
        raise Invalid(f"must be at most {fmt_number(high)}, got {fmt_number(value)}")


def fmt_number(number: float) -> str:
    return f"{number:g}"


def as_duration(positive: bool = False, high: float | None = None) -> Callable[[Any], float]:
    def convert(value: object) -> float:
        try:
            seconds = parse_duration(value)  # type: ignore[arg-type]
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if positive and seconds <= 0:
            raise Invalid(f"must be longer than zero, got {value!r}")
        if high is not None and seconds > high:
            raise Invalid(f"must be at most {format_duration(high)}, got {value!r}")
        return seconds

    return convert


def as_size(low: int = 0) -> Callable[[Any], int]:
    def convert(value: object) -> int:
        try:
            size = parse_size(value)  # type: ignore[arg-type]
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if size < low:
            raise Invalid(f"must be at least {low} bytes, got {value!r}")
        return size

    return convert


def as_choice(*options: str) -> Callable[[Any], str]:
    """One of ``options``, case-insensitively, returned in lower case."""

    def convert(value: object) -> str:
        # TOML ``protocol = 5`` is an integer; accept it as the text it stands for.
        is_int = isinstance(value, int) and not isinstance(value, bool)
        text = str(value) if is_int else value if isinstance(value, str) else None
        if text is None or text.strip().lower() not in options:
            raise Invalid(f"must be one of {', '.join(repr(o) for o in options)}, "
                           f"not {describe_value(value)}")
        return text.strip().lower()

    return convert


def _array(value: object, *, allow_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise Invalid(f"must be an array, not {describe_value(value)}")
    if not value and not allow_empty:
        raise Invalid("must not be empty")
    return value


def as_items(convert: Callable[[Any], T], *, unique: bool = False,
           allow_empty: bool = False) -> Callable[[Any], tuple[T, ...]]:
    """An array whose items each pass ``convert``; errors say which item (counting from 1)."""

    def converter(value: object) -> tuple[T, ...]:
        out: list[T] = []
        for number, item in enumerate(_array(value, allow_empty=allow_empty), start=1):
            try:
                converted = convert(item)
            except Invalid as exc:
                raise Invalid(f"item {number}: {exc}") from None
            if unique and converted in out:
                raise Invalid(f"item {number}: {converted!r} is listed twice")
            out.append(converted)
        return tuple(out)

    return converter


def as_path(base: Path, *, must_exist: bool = False) -> Callable[[Any], Path]:
    """A path; relative ones are taken from the config file's directory, not the cwd."""

    def convert(value: object) -> Path:
        path = Path(as_string(value)).expanduser()
        path = path if path.is_absolute() else base / path
        if must_exist and not path.is_file():
            raise Invalid(f"{str(path)!r}: no such file")
        return path

    return convert


def as_epoch_date(value: object) -> float:
    """A TOML date (or ISO text) as epoch seconds; a bare date means UTC midnight."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) <= 10 else datetime.fromisoformat(text)
        except ValueError:
            raise Invalid(f"{value!r} is not a date such as 2027-06-01") from None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    raise Invalid(f"must be a date such as 2027-06-01, not {describe_value(value)}")


def as_specifier(value: object) -> str:
    """A PEP 440 specifier set; validated now so a typo cannot disable the firmware check."""
    text = as_string(value)
    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        raise Invalid(f"{text!r} is not a PEP 440 version specifier "
                       f"(e.g. \">=2.0,<3\" or \"==2.3.*\")") from None
    return text.strip()


def as_range(value: object) -> tuple[float, float]:
    items = _array(value)
    if len(items) != 2:
        raise Invalid(f"must be two numbers [low, high], got {len(items)} items")
    try:
        low, high = as_finite(items[0]), as_finite(items[1])
    except Invalid as exc:
        raise Invalid(f"[low, high]: {exc}") from None
    if not low < high:
        raise Invalid(f"low must be below high, got [{fmt_number(low)}, {fmt_number(high)}]")
    return low, high


def toml_files(directory: str | Path, what: str) -> Iterator[Path]:
    """The ``*.toml`` files of a directory in name order, skipping hidden/editor files."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(str(folder), "", f"no such directory (expected {what})")
    yield from sorted(p for p in folder.glob("*.toml")
                      if not p.name.startswith(".") and p.is_file())
