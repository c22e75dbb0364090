"""What counts as text: every string that gets past the gate can be stored and re-sent.

JSON can carry things that are not Unicode text: ``"\\ud800"`` decodes to a lone
surrogate, which no UTF-8 encoder (SQLite's, the MQTT client's, the log's) will take, and
``"\\u0000"`` to a NUL, which C strings (SQLite's text functions, the sqlite3 shell,
journald) cut short. Both are refused at the edge, keys as well as values, so nothing
downstream ever sees them; the rule is here once, for the live daemon and ``replay`` alike.

Pure: no I/O. The walk is iterative, so a deeply nested document cannot exhaust the stack.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

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
