"""``sensor-auditd quarantine``: what was refused, why, from whom, and a sample of it.

One line per (reason, device, topic): first and last seen, how many, and the latest
refused payload as a sample, so that "why does this device's data not show up?" is
answered without SQL. ``--json`` gives the same with the whole sample payload. Each reason
is explained by the one registry (``auditd.reasons``), also under the table.
"""

from __future__ import annotations

import base64
import difflib
from collections.abc import Sequence
from typing import Any

from auditd.adapters.store.quarantine import QuarantineGroup
from auditd.errors import UsageError
from auditd.model import iso
from auditd.reasons import REGISTRY
from auditd.text import printable

SAMPLE_CHARS = 60
"""Characters of the sample payload in the table (``--json`` has all of it)."""


def check_reason(reason: str | None) -> None:
    """A reason the registry does not know is a typo: refused with the closest codes."""
    if reason is None or reason in REGISTRY:
        return
    close = difflib.get_close_matches(reason, list(REGISTRY), n=3)
    hint = (f"did you mean {', '.join(close)}?" if close
            else f"one of {', '.join(REGISTRY)}")
    raise UsageError(f"unknown rejection reason {reason!r}: {hint}", "--reason")


def payload_text(payload: bytes) -> str:
    """The payload as text when it is UTF-8, else with the bad bytes escaped (``\\xed``)."""
    return printable(payload.decode("utf-8", "backslashreplace"))


def as_json(groups: Sequence[QuarantineGroup]) -> list[dict[str, Any]]:
    return [{"reason": g.reason, "device": g.device, "topic": g.topic,
             "first_seen": iso(g.first_seen), "last_seen": iso(g.last_seen), "count": g.count,
             "sample": {"detail": g.sample_detail, "payload": payload_text(g.sample_payload),
                        "payload_base64": base64.b64encode(g.sample_payload).decode("ascii")},
             "meaning": REGISTRY[g.reason].meaning if g.reason in REGISTRY else None}
            for g in groups]


def _stamp(ts: float) -> str:
    return (iso(ts) or "")[:19].replace("T", " ")


def _sample(group: QuarantineGroup) -> str:
    text = payload_text(group.sample_payload).replace("\n", "\\n")
    return text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 3] + "..."


def table(groups: Sequence[QuarantineGroup]) -> str:
    """A fixed-width table, then each reason that appears with what it means."""
    if not groups:
        return "Nothing quarantined (matching these filters).\n"
    header = ("REASON", "DEVICE", "TOPIC", "FIRST SEEN", "LAST SEEN", "COUNT", "SAMPLE")
    rows = [(g.reason, g.device or "-", printable(g.topic) or "-", _stamp(g.first_seen),
             _stamp(g.last_seen), str(g.count), _sample(g)) for g in groups]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
             + "  " + row[-1] for row in (header, *rows)]
    lines.append("")
    for reason in sorted({g.reason for g in groups}):
        spec = REGISTRY.get(reason)
        if spec is not None:
            limit = f" Limit: {spec.limit}." if spec.limit else ""
            lines.append(f"{reason}: {spec.meaning}{limit}")
    lines.append("(latest detail of each: --json; every reason: docs/operations.md)")
    return "\n".join(lines) + "\n"
