"""Text: what a string may hold, and how figures and durations are written in it.

What counts as text: every string that gets past the gate can be stored and re-sent.
JSON can carry things that are not Unicode text: ``"\ud800"`` decodes to a lone
surrogate, which no UTF-8 encoder (SQLite's, the MQTT client's, the log's) will take, and
``"\u0000"`` to a NUL, which C strings (SQLite's text functions, the sqlite3 shell,
journald) cut short. Both are refused at the edge, keys as well as values, so nothing
downstream ever sees them; the rule is here once, for the live daemon and ``replay`` alike.
The walk is iterative, so a deeply nested document cannot exhaust the stack.

For people: ``num``, ``qty``, ``duration``, ``bins`` and ``percent`` write the figures of
evidence sentences, actions, anomalies and the status page, so that a duration reads the
same wherever it appears. For files: ``parse_duration`` and ``parse_size`` read what a user
writes in a configuration or on the command line (``"24h"``, ``"1h30m"``, ``"16MiB"``) and
``format_duration`` writes a duration back in that form (exactly, so that an error message
quotes a value the way the user would write it).

Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import numpy as np

_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
"""NUL or any surrogate code point. ``json.loads`` joins a valid escaped pair into one
character, so a surrogate left in a decoded ``str`` is always a lone one."""


@dataclass(frozen=True, slots=True)
class TextProblem:
    """Why a decoded document is not storable: ``kind`` is ``text``, ``number`` or
    ``depth``; ``where`` is a JSON-pointer-like path (``/location/lat``)."""

    kind: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where or '/'}: {self.detail}"


def bad_char(text: str) -> str | None:
    """A description of the first lone surrogate or NUL in ``text``, or None."""
    match = _BAD_CHAR.search(text)
    if match is None:
        return None
    char = match.group()
    what = "a NUL character" if char == "\x00" else f"a lone surrogate (U+{ord(char):04X})"
    return f"{what} at character {match.start()}"


def may_hold_bad_text(payload: bytes) -> bool:
    """False when ``payload`` (valid UTF-8 JSON) cannot decode to a lone surrogate or NUL.

    Strict UTF-8 decoding already refuses encoded surrogates, and JSON forbids a raw NUL
    inside a string (and anywhere else), so both can only arrive as ``\\u`` escapes: a
    payload without the two bytes ``\\u`` needs no walk. That keeps the check off the hot
    path of ordinary telemetry.
    """
    return b"\\u" in payload


def check_document(document: Any, *, max_depth: int, finite_numbers: bool) -> TextProblem | None:
    """The first problem in a decoded JSON value, or None when every string (object keys
    included) is text, nesting is at most ``max_depth`` containers deep and, with
    ``finite_numbers``, no number is NaN or infinite (``NaN``, ``Infinity`` and ``1e999``
    parse in Python but are not JSON, and would be re-published as invalid JSON)."""
    stack: list[tuple[Any, str, int]] = [(document, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        kind = type(value)
        if kind is str:
            problem = bad_char(value)
            if problem is not None:
                return TextProblem("text", where, problem)
        elif kind is float:
            if finite_numbers and not math.isfinite(value):
                return TextProblem("number", where, f"{value!r} is not a JSON number")
        elif kind is dict or kind is list:
            if depth >= max_depth:
                return TextProblem("depth", where, f"nested more than {max_depth} levels deep")
            if kind is dict:
                for key, item in value.items():
                    problem = bad_char(key)
                    if problem is not None:
                        return TextProblem("text", f"{where}/{_show_key(key)}",
                                           f"a key holds {problem}")
                    stack.append((item, f"{where}/{_show_key(key)}", depth + 1))
            else:
                stack.extend((item, f"{where}/{i}", depth + 1) for i, item in enumerate(value))
    return None


def _show_key(key: str, limit: int = 32) -> str:
    return printable(key[:limit]) + ("..." if len(key) > limit else "")


def printable(text: str) -> str:
    """``text`` with lone surrogates and NUL escaped (``\\udc80``, ``\\x00``): what any
    store, log or topic can take. Used for what is kept as evidence of a refusal."""
    if _BAD_CHAR.search(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


# --------------------------------------------------------------------------- figures

_BIN_NAMES = {1.0: "seconds", 60.0: "minutes", 3600.0: "hours", 86400.0: "days"}


def num(x: float, digits: int = 3, *, sign: bool = False) -> str:
    """``x`` to ``digits`` significant digits, never in exponent form (1440, not 1.44e+03)."""
    if not math.isfinite(x):
        return "n/a"
    text = np.format_float_positional(
        float(x), precision=digits, unique=False, fractional=False, trim="-"
    )
    if sign and x >= 0:
        text = "+" + text
    return text


def qty(x: float, unit: str, digits: int = 3, *, sign: bool = False) -> str:
    return f"{num(x, digits, sign=sign)} {unit}"


def duration(seconds: float, digits: int = 3) -> str:
    """``90 s``, ``15 min``, ``36 h``, ``12.5 days``: the unit that keeps the number
    between 2 and 120 (hours up to two days), to ``digits`` significant digits. The sign
    is dropped: the sentence says which way ("behind", "ago")."""
    s = abs(seconds)
    if not math.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{num(s, digits)} s"
    if s < 7200:
        return f"{num(s / 60, digits)} min"
    if s < 2 * 86400:
        return f"{num(s / 3600, digits)} h"
    return f"{num(s / 86400, digits)} days"


def ago(seconds: float) -> str:
    """An age as ``sensor-auditd status`` prints it: one decimal in the largest unit
    reached (``13.6 d ago``, ``2.0 h ago``, ``45 s ago``); ``in the future`` when negative.
    Terser than ``duration``: a status line holds several."""
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit} ago"
    return f"{seconds:.0f} s ago"


def bins(count: int, interval_s: float, adjective: str = "") -> str:
    """``1440 paired minutes`` for 1-minute bins; ``96 paired 15 min bins`` otherwise."""
    words = f"{adjective} " if adjective else ""
    name = _BIN_NAMES.get(float(interval_s))
    if name is not None:
        return f"{count} {words}{name}"
    return f"{count} {words}{duration(interval_s)} bins"


def percent(fraction: float) -> str:
    return f"{num(100 * fraction, 3)}%"


# --------------------------------------------------------------------------- values in files


def describe_value(value: object) -> str:
    """``a string ('abc')``: what was found, for "must be X, not Y" messages."""
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
        (datetime, "a date-time"), (date, "a date"), (time, "a time"),
        (list, "an array"), (dict, "a table"),
    ]
    kind = next((name for t, name in kinds if isinstance(value, t)), type(value).__name__)
    if isinstance(value, list | dict):
        return kind
    shown = repr(value)
    return f"{kind} ({shown[:40]}{'...' if len(shown) > 40 else ''})"


_DURATION_UNITS: Mapping[str, float] = {
    "w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001,
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*(ms|[wdhms])")
_DURATION_TEXT = re.compile(rf"(?:\s*{_NUMBER}\s*(?:ms|[wdhms]))+\s*")
_PLAIN_NUMBER = re.compile(rf"\s*{_NUMBER}\s*")


def parse_duration(value: str | float) -> float:
    """A duration as seconds: ``"24h"``, ``"15m"``, ``"90s"``, ``"7d"``, ``"1h30m"``, ``60``.

    Units are ``w d h m s ms`` (lowercase: ``M`` would be ambiguous with months);
    components add up in any order; a bare number, or a string of one, is seconds.
    Raises ``ValueError`` with a readable reason: the caller adds the file and key.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a duration such as \"24h\" or a number of seconds, "
                         f"not {describe_value(value)}")
    seconds = _parse_duration_text(value) if isinstance(value, str) else float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"must be a finite duration, not {value!r}")
    if seconds < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return seconds


def _parse_duration_text(text: str) -> float:
    if _PLAIN_NUMBER.fullmatch(text):
        return float(text)
    if text.strip().startswith("-"):
        raise ValueError(f"must not be negative, got {text!r}")
    if not _DURATION_TEXT.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration: write a number with a unit "
                         f"(w, d, h, m, s, ms) such as \"24h\", \"1h30m\" or \"90s\"")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """A compact text that ``parse_duration`` reads back as exactly ``seconds``.

    Whole seconds become ``"1d2h3m4s"``-style text; anything fractional is written as
    plain decimal seconds (``"0.05s"``) so that the round trip is exact.
    """
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"cannot format {seconds!r} as a duration")
    if seconds != int(seconds) or seconds >= 2**53:
        return f"{format(Decimal(repr(float(seconds))), 'f')}s"
    rest = int(seconds)
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = int(_DURATION_UNITS[unit])
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# --------------------------------------------------------------------------- sizes

_SIZE_UNITS: Mapping[str, int] = {
    "": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_SIZE_TEXT = re.compile(rf"\s*({_NUMBER})\s*([A-Za-z]*)\s*")


def parse_size(value: str | int) -> int:
    """A size in bytes: ``"16MiB"``, ``"512 KiB"``, ``"2GB"``, ``65536``.

    Binary (KiB, MiB, GiB) and decimal (kB, MB, GB) units, case-insensitive; a bare
    number, or a string of one, is bytes. Raises ``ValueError`` with a readable reason.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be a size such as \"16MiB\" or a number of bytes, "
                         f"not {describe_value(value)}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE_TEXT.fullmatch(value)
        unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None:
            raise ValueError(f"{value!r} is not a size: write a number of bytes or one with "
                             f"a unit (KiB, MiB, GiB, kB, MB, GB) such as \"16MiB\"")
        size = int(float(match.group(1)) * unit)
    if size < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return size
