"""How values are written to SQLite and read back: times as integer milliseconds, JSON
as canonical text (so equal content hashes equal), nothing else clever."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from auditd.model import Finding, iso

MS_LIMIT: Final = 2**62
"""Stand-in for an infinite time bound, in milliseconds (fits a SQLite INTEGER)."""


def canonical_json(data: Mapping[str, Any]) -> str:
    """Stable JSON text, so equal content always hashes equal (key order is irrelevant)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def content_hash(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def ms_at_or_after(t: float) -> int:
    """Smallest integer ``m`` with ``m / 1000 >= t``.

    Computed in the float domain the caller sees (``ts_ms / 1000``) rather than as
    ``ceil(t * 1000)``, whose rounding can drop or add a reading at a window edge.
    Infinite bounds are allowed ("everything up to now") and clamped.
    """
    if math.isnan(t):
        raise ValueError("time bound is NaN")
    if abs(t) >= MS_LIMIT / 1000:  # infinite, or beyond any representable reading
        return MS_LIMIT if t > 0 else -MS_LIMIT
    m = math.ceil(t * 1000.0)
    while (m - 1) / 1000.0 >= t:
        m -= 1
    while m / 1000.0 < t:
        m += 1
    return m


def ms_or_none(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000.0


def iso_ms(ts_ms: int) -> str:
    ts = ts_ms / 1000.0
    return iso(ts) or str(ts) if abs(ts) < 2.5e11 else f"{ts_ms} ms"


def finding_columns(finding: Finding) -> tuple[str, str]:
    """A finding as the store writes it: its published JSON, and exactly what that JSON
    rounds (the window and the onset to the millisecond, confidences to three decimals)."""
    published = json.dumps(finding.to_json(), separators=(",", ":"), ensure_ascii=False)
    exact = json.dumps([finding.window_start, finding.window_end, finding.onset,
                        [c.confidence for c in finding.causes]])
    return published, exact


def finding_of(published: str, exact: str | None) -> Finding:
    """The inverse of ``finding_columns``: the very value saved. A finding saved before
    schema 5 has no exact part and comes back as it was published."""
    finding = Finding.from_json(json.loads(published))
    if exact is None:
        return finding
    start, end, onset, confidences = json.loads(exact)
    causes = tuple(replace(c, confidence=x)
                   for c, x in zip(finding.causes, confidences, strict=True))
    return replace(finding, window_start=start, window_end=end, onset=onset, causes=causes)
