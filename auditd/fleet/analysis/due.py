"""The due list: which devices need calibration when, and the open tickets about them,
one entry however many gateways filed it. Pure.

A device is due at the earliest of: now, if its latest reliable verdict fails (a drifting
reference is due itself, its devices are not); its ``calibration_due`` date; its
``calibrated_at`` plus the interval for its model (the fleet's recommendation where there is
one, else the profile's). Entries due within the horizon are listed, the most urgent first.

Tickets are deduplicated by (site, device, sensor, cause): two gateways auditing the same
device (a redundant pair, or one relieving another) file two tickets about one fault, and
a technician needs one trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from auditd.fleet.analysis.facts import DAY_S, Device, Ticket, Verdict
from auditd.fleet.analysis.references import is_reference_finding, unreliable
from auditd.model import SEVERITY_RANK

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class OpenTicket:
    site: str
    device: str
    sensor: str | None
    cause: str | None
    severity: str
    opened_at: float | None
    filed_by: tuple[tuple[str, str], ...]
    """(gateway, ticket id) of every gateway's ticket about this fault."""


@dataclass(frozen=True, slots=True)
class DueItem:
    site: str
    device: str
    model: str | None
    due_at: float
    reasons: tuple[str, ...]
    tickets: tuple[OpenTicket, ...] = ()

    def overdue(self, now: float) -> bool:
        return self.due_at <= now


def parse_date(text: str | None) -> float | None:
    """A date (``2026-02-20``) or an RFC 3339 time from an inventory; ``None`` if neither."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def open_tickets(tickets: Iterable[Ticket]) -> dict[Key, list[OpenTicket]]:
    """Open tickets per device, one per fault across gateways."""
    faults: dict[tuple[str, str, str | None, str | None], list[Ticket]] = {}
    for t in tickets:
        if t.open:
            faults.setdefault((t.site, t.device, t.sensor, t.cause), []).append(t)
    out: dict[Key, list[OpenTicket]] = {}
    for (site, device, sensor, cause), filed in sorted(faults.items(), key=repr):
        opened = [t.opened_at for t in filed if t.opened_at is not None]
        worst = max(filed, key=lambda t: SEVERITY_RANK.get(t.severity, 0))
        out.setdefault((site, device), []).append(OpenTicket(
            site, device, sensor, cause, worst.severity, min(opened) if opened else None,
            tuple(sorted({(t.gateway, t.ticket_id) for t in filed}))))
    return out


def due_list(devices: Iterable[Device], verdicts: Iterable[Verdict],
             tickets: Iterable[Ticket], intervals: Mapping[str, float], now: float,
             drifting: Iterable[tuple[str, str, str]] = (),
             horizon_days: float = 30.0) -> list[DueItem]:
    """``intervals``: days between calibrations per model (the recommendation, else the
    profile's)."""
    drifting = frozenset(drifting)
    reasons: dict[Key, list[tuple[float, str]]] = {}
    models: dict[Key, str | None] = {}
    for d in devices:
        models[d.key] = d.model
        due = parse_date(d.calibration_due)
        if due is not None:
            reasons.setdefault(d.key, []).append((due, f"calibration due {d.calibration_due}"))
        calibrated = parse_date(d.calibrated_at)
        interval = intervals.get(d.model or "")
        if calibrated is not None and interval is not None:
            reasons.setdefault(d.key, []).append((
                calibrated + interval * DAY_S,
                f"{interval:.0f} days since calibration on {d.calibrated_at}"))
    for v in verdicts:
        if v.kind != "calibration" or v.status != "fail" or (
                unreliable(v, drifting) and not is_reference_finding(v)):
            continue
        what = "reference drifting" if is_reference_finding(v) else (
            v.causes[0] if v.causes else "failing")
        reasons.setdefault(v.key, []).append((now, f"{v.sensor}: {what}"))
    tickets_by_device = open_tickets(tickets)
    for key in tickets_by_device:
        reasons.setdefault(key, []).append((now, "open ticket"))
    horizon = now + horizon_days * DAY_S
    out = []
    for key, found in reasons.items():
        due_at = min(t for t, _ in found)
        if due_at > horizon:
            continue
        seen: list[str] = []
        for _, text in sorted(found):
            if text not in seen:
                seen.append(text)
        out.append(DueItem(key[0], key[1], models.get(key), due_at, tuple(seen),
                           tuple(tickets_by_device.get(key, ()))))
    out.sort(key=lambda item: (item.due_at, item.site, item.device))
    return out
