"""``ack`` and ``silence`` over MQTT: the command topic, for operators without a shell.

``{prefix}/{site}/audit/{gateway}/command`` (subscribed only when ``[topics] commands =
true``; restrict who may write it with the broker's ACL, docs/alerts.md). Payloads:

* ``{"command": "ack", "alert": "sa-1f2e...", "by": "ana", "note": "on site Tuesday"}``
* ``{"command": "silence", "device": "th-north-*", "sensor": "temperature",
  "until": "2026-12-01T08:00:00Z" | "for": "8h", "by": "...", "reason": "..."}``
* ``{"command": "expire", "silence": 3}``

:func:`parse` is pure; :class:`CommandRouter` sits in front of the ingestor in the batch
writer, so a command is applied before its message is acknowledged, exactly like a
reading is committed first. A broker's redelivery applies it again harmlessly: an ack is
idempotent, and a silence identical to one that exists is not added twice. A malformed
command is quarantined with reason ``command_invalid``, never fatal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from auditd import logs, reasons
from auditd.adapters.store import Store
from auditd.adapters.store.readings import WriteResult
from auditd.app.ingest import Ingestor
from auditd.domain.validate import parse_timestamp
from auditd.model import ID_PATTERN, Outcome, RawMessage, Rejection
from auditd.retry import is_transient
from auditd.text import check_document, parse_duration, printable

log = logs.get("auditd.app.commands")

COMMAND_INVALID = reasons.COMMAND_INVALID
TEXT_MAX = 500


@dataclass(frozen=True, slots=True)
class Ack:
    alert: str
    by: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class SilenceCommand:
    device: str
    sensor: str | None
    until: float
    by: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Expire:
    silence: int


Command = Ack | SilenceCommand | Expire


def _text(body: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > TEXT_MAX:
        raise ValueError(f"{key!r} must be a non-empty string of at most {TEXT_MAX} characters")
    return value.strip()


def parse(payload: bytes, received_at: float) -> Command:
    """One command message -> the command, or ``ValueError`` saying what is wrong."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}"[:200]) from None
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    problem = check_document(body, max_depth=8, finite_numbers=True)
    if problem is not None:
        raise ValueError(f"not storable text: {problem}")
    kind = body.get("command")
    if kind == "ack":
        alert = _text(body, "alert", required=True)
        assert alert is not None
        return Ack(alert, _text(body, "by"), _text(body, "note"))
    if kind == "silence":
        device = _text(body, "device", required=True)
        assert device is not None
        if not ID_PATTERN.fullmatch(device.replace("*", "x").replace("?", "x")):
            raise ValueError(f"device {device!r} is not a device id or glob")
        sensor = _text(body, "sensor")
        if ("until" in body) == ("for" in body):
            raise ValueError("give one of 'until' (RFC 3339) or 'for' (a duration)")
        if "for" in body:
            until = received_at + parse_duration(body["for"])
        else:
            until = parse_timestamp(body["until"])
        if until <= received_at:
            raise ValueError("the silence would end before it begins")
        return SilenceCommand(device, sensor, until, _text(body, "by"), _text(body, "reason"))
    if kind == "expire":
        ident = body.get("silence")
        if isinstance(ident, bool) or not isinstance(ident, int) or ident < 1:
            raise ValueError("'silence' must be a silence id (a positive integer)")
        return Expire(ident)
    raise ValueError(f"'command' must be 'ack', 'silence' or 'expire', not {kind!r}")


class CommandRouter:
    """The batch writer's ingestor, with the command topic taken out of the stream."""

    def __init__(self, ingestor: Ingestor, store: Store, topic: str) -> None:
        self._ingestor = ingestor
        self._store = store
        self._topic = topic
        self._pending: list[tuple[Command, float]] = []

    def validate(self, messages: Sequence[RawMessage]) -> list[Outcome]:
        """One outcome per message, in order (the writer acknowledges by position): an
        empty one for a command, which is applied at the commit."""
        ordinary = iter(self._ingestor.validate(
            [m for m in messages if m.topic != self._topic]))
        out: list[Outcome] = []
        for message in messages:
            if message.topic != self._topic:
                out.append(next(ordinary))
                continue
            try:
                self._pending.append((parse(message.payload, message.received_at),
                                      message.received_at))
                out.append(Outcome())
            except ValueError as exc:
                out.append(Outcome(rejections=(Rejection(
                    message.topic, COMMAND_INVALID, str(exc), message.payload[:4096],
                    message.received_at),)))
                log.warning("command_refused", problem=str(exc))
        return out

    def commit(self, messages: int, outcomes: Sequence[Outcome], *,
               counters: Mapping[str, int] | None = None) -> WriteResult:
        """Commands first (each idempotent, so a retried batch repeats them harmlessly),
        then the batch's readings in their one transaction."""
        while self._pending:
            command, at = self._pending[0]
            try:
                self._apply(command, at)
            except Exception as exc:
                if is_transient(exc):
                    raise  # kept: the retried batch applies it again
                # Not the batch's fault: a command the store refuses is dropped, loudly,
                # rather than failing every part of the batch it came with.
                log.error("command_failed", command=type(command).__name__,
                          error=printable(str(exc))[:200])
            self._pending.pop(0)
        return self._ingestor.commit(messages, outcomes, counters=counters)

    def _apply(self, command: Command, at: float) -> None:
        if isinstance(command, Ack):
            hits = self._store.alerts.find(command.alert)
            done = len(hits) == 1 and self._store.alerts.acknowledge(
                hits[0].id, at=at, by=command.by, note=command.note)
            log.info("command_ack", alert=command.alert, by=command.by, applied=done,
                     matches=len(hits))
        elif isinstance(command, SilenceCommand):
            ident = self._store.alerts.add_silence(command.device, command.sensor, command.until,
                                                   at=at, by=command.by, reason=command.reason,
                                                   unless_present=True)
            log.info("command_silence", device=command.device, sensor=command.sensor,
                     until=command.until, by=command.by, silence=ident)
        else:
            done = self._store.alerts.expire_silence(command.silence, at=at)
            log.info("command_expire", silence=command.silence, applied=done)

    def __getattr__(self, name: str) -> Any:
        """Everything else (totals, reload, ...) is the ingestor's."""
        return getattr(self._ingestor, name)
