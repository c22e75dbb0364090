"""One upstream message (a gateway's finding, device inventory, status, report or ticket)
-> one typed record, or a ``Rejected`` with its reason. Pure; never raises on bad input.

The topics are CONTRACT.md's, under the configured prefix::

    {prefix}/{site}/audit/{gateway}/finding/{device}/{sensor}
    {prefix}/{site}/audit/{gateway}/device/{device}
    {prefix}/{site}/audit/{gateway}/status
    {prefix}/{site}/audit/{gateway}/report
    {prefix}/{site}/audit/{gateway}/ticket

Other topics under ``audit/{gateway}/`` (the gateway's command topic) are not the fleet's
and parse to ``None``: ignored, not rejected. Site, gateway and device levels must match
CONTRACT.md's id pattern; the topic's site and device must be the payload's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from auditd.domain.validate import TimestampError, parse_timestamp
from auditd.fleet.records import (
    AuditReport,
    FleetFinding,
    GatewayStatus,
    Inventory,
    Origin,
    Rejected,
    TicketEvent,
    Upstream,
)
from auditd.model import ID_PATTERN, SEVERITIES, Finding

MAX_PAYLOAD = 1 << 20
"""A gateway's largest message is a report of a big site; a megabyte is far beyond it."""

MAX_TEXT = 4096
"""Longest attribute text (a firmware version, a serial) the fleet keeps."""

_NUMBER_OR_NONE = (int, float, type(None))
_SCALAR = (str, int, float)
"""Type tuples for ``isinstance``: the same test as ``int | float | None``, without
building the union object on every call (millions of metrics in an import)."""

_INVENTORY_KEYS = ("ts", "model", "firmware", "hardware_rev", "serial", "installed_at",
                   "calibrated_at", "calibration_due", "last_seen", "causes", "device", "site")


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse(topic: str, payload: bytes, received_at: float,
          prefix: str = "fleet") -> Upstream | None:
    """The record ``payload`` on ``topic`` stands for; ``Rejected`` (with a reason a person
    can act on) when it cannot be used; ``None`` when the topic is not one the fleet
    reads."""
    try:
        return _parse(topic, payload, received_at, prefix)
    except _Bad as bad:
        return Rejected(topic, bad.reason, bad.detail, payload, received_at)


def _parse(topic: str, payload: bytes, received_at: float, prefix: str) -> Upstream | None:
    levels = topic.split("/")
    head = prefix.split("/")
    if levels[:len(head)] != head or len(levels) < len(head) + 4:
        raise _Bad("bad_topic", f"not {prefix}/{{site}}/audit/{{gateway}}/...")
    site, audit, gateway, kind, *rest = levels[len(head):]
    if audit != "audit":
        raise _Bad("bad_topic", f"not {prefix}/{{site}}/audit/{{gateway}}/...")
    for name, value in (("site", site), ("gateway", gateway)):
        _check_id(name, value)
    origin = Origin(site, gateway)
    if kind == "status" and not rest:
        return _status(origin, payload, received_at)
    if len(payload) > MAX_PAYLOAD:
        raise _Bad("too_large", f"{len(payload)} bytes, more than {MAX_PAYLOAD}")
    if kind == "finding" and len(rest) == 2:
        return _fleet_finding(origin, rest[0], payload)
    if kind == "device" and len(rest) == 1:
        return _inventory(origin, rest[0], _object(payload))
    if kind == "report" and not rest:
        return _report(origin, _object(payload))
    if kind == "ticket" and not rest:
        return _ticket(origin, _object(payload))
    if kind in ("finding", "device", "report", "ticket"):
        raise _Bad("bad_topic", f"unexpected levels after {kind!r}")
    return None


def parse_finding(origin: Origin, device: str, sensor: str, payload: bytes,
                  received_at: float, prefix: str = "fleet") -> FleetFinding | Rejected:
    """``parse`` of a message on ``origin``'s finding topic for ``device`` and ``sensor``,
    without writing the topic out and splitting it again (the import's many findings)."""
    try:
        _check_id("site", origin.site)
        _check_id("gateway", origin.gateway)
        if len(payload) > MAX_PAYLOAD:
            raise _Bad("too_large", f"{len(payload)} bytes, more than {MAX_PAYLOAD}")
        return _fleet_finding(origin, device, payload)
    except _Bad as bad:
        topic = "/".join((prefix, origin.site, "audit", origin.gateway, "finding", device,
                          sensor))
        return Rejected(topic, bad.reason, bad.detail, payload, received_at)


def _fleet_finding(origin: Origin, device: str, payload: bytes) -> FleetFinding:
    try:
        text = payload.decode()
    except UnicodeDecodeError as exc:
        raise _Bad("bad_json", f"not UTF-8: {exc}") from None
    return FleetFinding(origin, _finding(origin, device, _object(payload)), text)


def _check_id(name: str, value: str) -> None:
    if not ID_PATTERN.fullmatch(value):
        raise _Bad("bad_topic", f"{name} {value[:70]!r} is not a valid id")


def _object(payload: bytes) -> Mapping[str, Any]:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Bad("bad_json", str(exc)[:200]) from None
    if not isinstance(data, dict):
        raise _Bad("bad_payload", f"expected a JSON object, got {type(data).__name__}")
    if b"\\u0000" in payload and _holds_nul(data):
        raise _Bad("bad_payload", "a NUL character in a text (PostgreSQL cannot store it)")
    return data


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _time(data: Mapping[str, Any], key: str, *, required: bool = False) -> float | None:
    value = data.get(key)
    if value is None:
        if required:
            raise _Bad("bad_payload", f"{key}: missing")
        return None
    try:
        return parse_timestamp(value)
    except TimestampError as exc:
        raise _Bad("bad_timestamp", f"{key}: {exc}") from None


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, _SCALAR) or isinstance(value, bool):
        raise _Bad("bad_payload", f"{key}: expected text, got {type(value).__name__}")
    text = str(value)
    if "\0" in text or len(text) > MAX_TEXT:
        raise _Bad("bad_payload", f"{key}: a NUL character, or longer than {MAX_TEXT}")
    return text


def _status(origin: Origin, payload: bytes, received_at: float) -> GatewayStatus:
    """``online``/``offline`` as plain text (what gateways publish), or a JSON object with
    ``state`` (or ``status``) and optionally ``ts``."""
    text = payload.decode("utf-8", "replace").strip()
    at = received_at
    if text.startswith("{"):
        data = _object(payload)
        text = str(data.get("state") or data.get("status") or "")
        stated = _time(data, "ts")
        at = received_at if stated is None else stated
    if text not in ("online", "offline"):
        raise _Bad("bad_status", f"{text[:40]!r} is neither online nor offline")
    return GatewayStatus(origin, "online" if text == "online" else "offline", at)


def _finding(origin: Origin, device: str, data: Mapping[str, Any]) -> Finding:
    _check_id("device", device)
    try:
        finding = Finding.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _Bad("bad_finding", f"not a finding: {exc!s}"[:200]) from None
    _check_finding_types(finding)
    if finding.site != origin.site or finding.device != device:
        raise _Bad("bad_finding", f"payload names {finding.site}/{finding.device}, the "
                   f"topic {origin.site}/{device}")
    if finding.kind not in ("calibration", "data_quality", "metadata") or finding.status \
            not in ("pass", "fail", "insufficient_data") or finding.severity not in SEVERITIES:
        raise _Bad("bad_finding", f"kind {finding.kind!r}, status {finding.status!r} or "
                   f"severity {finding.severity!r} unknown"[:200])
    if not finding.window_end:
        raise _Bad("bad_finding", "window.end missing")
    return finding


def _check_finding_types(f: Finding) -> None:
    """What ``Finding.from_json`` takes as it comes and the fleet's columns need typed."""
    for name in ("sensor", "reference", "unit"):
        value = getattr(f, name)
        if value is not None and not (isinstance(value, str) and "\0" not in value):
            raise _Bad("bad_finding", f"{name}: expected text")
    for v in f.metrics.values():
        if not isinstance(v, _NUMBER_OR_NONE):
            raise _Bad("bad_finding", "metrics: expected numbers")
    if "\0" in f.device or "\0" in f.site:
        raise _Bad("bad_finding", "a NUL character in site or device")


def _inventory(origin: Origin, device: str, data: Mapping[str, Any]) -> Inventory:
    _check_id("device", device)
    if data.get("device", device) != device or data.get("site", origin.site) != origin.site:
        raise _Bad("bad_inventory", "payload names another device or site than the topic")
    causes = data.get("causes") or []
    if not isinstance(causes, list) or not all(isinstance(c, str) for c in causes):
        raise _Bad("bad_inventory", "causes: expected a list of cause names")
    as_of = _time(data, "ts", required=True)
    assert as_of is not None
    return Inventory(
        origin, device, as_of, model=_text(data, "model"), firmware=_text(data, "firmware"),
        hardware_rev=_text(data, "hardware_rev"), serial=_text(data, "serial"),
        installed_at=_text(data, "installed_at"), calibrated_at=_text(data, "calibrated_at"),
        calibration_due=_text(data, "calibration_due"), last_seen=_time(data, "last_seen"),
        causes=tuple(causes),
        extra={k: v for k, v in data.items() if k not in _INVENTORY_KEYS})


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Bad("bad_report", f"{key}: expected a count")
    return value


def _report(origin: Origin, data: Mapping[str, Any]) -> AuditReport:
    at = _time(data, "at", required=True)
    assert at is not None
    return AuditReport(origin, at, _count(data, "streams"), _count(data, "pass"),
                       _count(data, "fail"), _count(data, "insufficient_data"), dict(data))


def _ticket(origin: Origin, data: Mapping[str, Any]) -> TicketEvent:
    ticket_id, key, device = (_text(data, k) for k in ("ticket_id", "idempotency_key",
                                                         "device"))
    event = _text(data, "event")
    at = _time(data, "at", required=True)
    if not (ticket_id and key and device and event) or at is None:
        raise _Bad("bad_ticket", "ticket_id, idempotency_key, device, event and at are "
                   "required")
    return TicketEvent(
        origin, ticket_id, key, event, at, device, _text(data, "sensor"),
        _text(data, "cause"), _text(data, "severity") or "none",
        _text(data, "state") or "open", _time(data, "opened_at"),
        _time(data, "resolved_at"), dict(data))
