"""Text: what a string may hold, and how figures are written in it.

What counts as text: every string that gets past the gate can be stored and re-sent.
JSON can carry things that are not Unicode text: ``"\\ud800"`` decodes to a lone
surrogate, which no UTF-8 encoder (SQLite's, the MQTT client's, the log's) will take, and
``"\\u0000"`` to a NUL, which C strings (SQLite's text functions, the sqlite3 shell,
journald) cut short. Both are refused at the edge, keys as well as values, so nothing
downstream ever sees them; the rule is here once, for the live daemon and ``replay`` alike.
The walk is iterative, so a deeply nested document cannot exhaust the stack.

Numbers and durations as a technician reads them: ``num``, ``qty``, ``duration``, ``bins``
and ``percent`` write the figures of evidence and action sentences.

Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
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


def duration(seconds: float) -> str:
    s = abs(seconds)
    if not math.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{num(s, 3)} s"
    if s < 7200:
        return f"{num(s / 60, 3)} min"
    return f"{num(s / 3600, 3)} h"


def bins(count: int, interval_s: float, adjective: str = "") -> str:
    """``1440 paired minutes`` for 1-minute bins; ``96 paired 15 min bins`` otherwise."""
    words = f"{adjective} " if adjective else ""
    name = _BIN_NAMES.get(float(interval_s))
    if name is not None:
        return f"{count} {words}{name}"
    return f"{count} {words}{duration(interval_s)} bins"


def percent(fraction: float) -> str:
    return f"{num(100 * fraction, 3)}%"
