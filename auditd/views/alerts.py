"""What ``sensor-auditd findings`` prints: open alerts at a glance, or JSON for scripts. Pure.

One row per alert that needs someone (open or acknowledged), most severe first; a grouped
alert (a root such as a reference fault) is one row naming how many devices it stands for,
with its members listed beneath it, not as rows of their own.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from auditd.domain.alerts import Alert, Silence, silenced
from auditd.domain.validate import parse_timestamp
from auditd.model import SEVERITY_RANK, iso
from auditd.text import parse_duration

COLUMNS = ("ALERT", "STATE", "SEVERITY", "DEVICE", "SENSOR", "CAUSE", "OPENED", "NOTE")
SHORT_ID = 11
"""Characters of an alert id shown (``sa-`` and 8 hex digits); ``ack`` takes a prefix."""


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M")


def grouped(alerts: Sequence[Alert]) -> list[tuple[Alert, list[Alert]]]:
    """Root and standalone alerts, each with the member alerts grouped under it.

    A member whose root has no active alert (the root is still only suspect) is shown on
    its own: nothing else would show it.
    """
    by_key = {a.key.text(): a for a in alerts}
    members: dict[str, list[Alert]] = {}
    top: list[Alert] = []
    for alert in alerts:
        if alert.group is not None and alert.group in by_key:
            members.setdefault(alert.group, []).append(alert)
        else:
            top.append(alert)
    return [(a, sorted(members.get(a.key.text(), []), key=lambda m: (m.device, m.sensor or "")))
            for a in top]


def _note(alert: Alert, members: Sequence[Alert], silences: Sequence[Silence],
          now: float) -> str:
    parts = []
    if SEVERITY_RANK[alert.peak] > SEVERITY_RANK[alert.severity]:
        parts.append(f"was {alert.peak}")
    if alert.unconfirmed:
        parts.append("unconfirmed: the latest audit passed without showing health")
    count = len(alert.members) or len(members)
    if count:
        parts.append(f"{count} devices")
    if alert.state == "acknowledged" and alert.acked_by:
        parts.append(f"ack by {alert.acked_by}")
    hold = silenced(silences, alert.device, alert.sensor, now)
    if hold is not None:
        parts.append(f"silenced until {_when(hold.until)}")
    if not alert.notified and hold is None:
        parts.append("no ticket yet")
    return ", ".join(parts)


def _cause(alert: Alert) -> str:
    """The alert's cause, and the one it opened with when the evidence has moved it."""
    cause = alert.cause or "-"
    if alert.history and alert.history[0].before != alert.cause:
        cause += f" (was {alert.history[0].before or '-'})"
    return cause


def table(alerts: Sequence[Alert], silences: Sequence[Silence], now: float,
          deliveries: Mapping[str, Mapping[str, int]] | None = None) -> str:
    """The human view: an aligned table, members wrapped under their root, and a footer."""
    groups = grouped(alerts)
    rows = [COLUMNS]
    extra: dict[int, list[str]] = {}
    for alert, members in groups:
        rows.append((alert.id[:SHORT_ID], alert.state, alert.severity, alert.device,
                     alert.sensor or "-", _cause(alert), _when(alert.opened_at),
                     _note(alert, members, silences, now)))
        names = [m.device for m in members] or list(alert.members)
        if names:
            extra[len(rows) - 1] = textwrap.wrap("members: " + ", ".join(names), 88,
                                          break_on_hyphens=False)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip())
        lines.extend("    " + text for text in extra.get(index, []))
    if len(rows) == 1:
        lines = ["No open alerts."]
    grouped_count = sum(len(m) for _, m in groups)
    footer = f"{len(groups)} alert{'s' if len(groups) != 1 else ''} open"
    if grouped_count:
        footer += (f" ({grouped_count} more grouped under "
                   f"{'it' if len(groups) == 1 else 'them'})")
    if deliveries is not None:
        pending = sum(s.get("pending", 0) for s in deliveries.values())
        dead = sum(s.get("dead", 0) for s in deliveries.values())
        footer += f"; tickets: {pending} pending, {dead} dead-lettered"
    return "\n".join([*lines, "", footer]) + "\n"


def as_json(alerts: Sequence[Alert], silences: Sequence[Silence], now: float) -> list[dict[str,
                                                                                          Any]]:
    """The script view: one object per top-level alert, members nested."""
    return [_alert_json(alert, silences, now) | {
        "grouped": [_alert_json(m, silences, now) for m in members]}
        for alert, members in grouped(alerts)]


def _alert_json(alert: Alert, silences: Sequence[Silence], now: float) -> dict[str, Any]:
    hold = silenced(silences, alert.device, alert.sensor, now)
    return {
        "id": alert.id, "state": alert.state, "severity": alert.severity, "peak": alert.peak,
        "kind": alert.kind, "site": alert.site, "device": alert.device,
        "sensor": alert.sensor, "cause": alert.cause, "opened_at": iso(alert.opened_at),
        "updated_at": iso(alert.updated_at), "group": alert.group,
        "members": list(alert.members), "notified": alert.notified,
        "unconfirmed": alert.unconfirmed,
        "cause_history": [c.to_json() for c in alert.history],
        "acked_at": iso(alert.acked_at), "acked_by": alert.acked_by, "note": alert.note,
        "silenced_until": iso(hold.until) if hold else None,
        "finding": alert.finding.to_json(),
    }


def silence_table(silences: Sequence[Silence], now: float) -> str:
    if not silences:
        return "No silences.\n"
    rows = [("ID", "DEVICE", "SENSOR", "UNTIL", "ACTIVE", "BY", "REASON")]
    rows += [(str(s.id), s.device, s.sensor or "*", _when(s.until),
              "yes" if s.active(now) else "no", s.created_by or "-", s.reason or "")
             for s in silences]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows) + "\n"


def parse_until(until: str | None, duration: str | None, now: float) -> float:
    """``--until`` (RFC 3339, or a date meaning its UTC midnight) or ``--for`` (a duration
    from ``now``) as epoch seconds; a time already past is refused."""
    if duration is not None:
        end = now + parse_duration(duration)
    elif until is not None:
        text = until.strip()
        end = parse_timestamp(text + "T00:00:00Z" if len(text) == 10 else text)
    else:
        raise ValueError("give an end time or a duration")
    if end <= now:
        raise ValueError(f"{iso(end)} is not in the future")
    return end
