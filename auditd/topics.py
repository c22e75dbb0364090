"""CONTRACT.md's topic layout, under a configurable prefix: one definition of every topic
the daemon subscribes to or publishes on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from auditd.model import ID_PATTERN, MessageKind

UpstreamKind = Literal["finding", "report", "ticket", "status", "device", "command"]

_UPSTREAM_SHAPES: dict[str, int] = {"finding": 2, "device": 1, "report": 0, "ticket": 0,
                                    "status": 0, "command": 0}
"""Each upstream kind and how many levels follow it (device, sensor)."""


class TopicError(ValueError):
    """A topic outside the layout; its message says which level and why."""


@dataclass(frozen=True, slots=True)
class UpstreamTopic:
    """Where an upstream message (a gateway's, CONTRACT.md) came from and what it is."""

    site: str
    gateway: str
    kind: UpstreamKind
    device: str | None = None
    sensor: str | None = None
    """``None`` for a finding without a sensor (published as ``-``)."""


@dataclass(frozen=True, slots=True)
class TopicsConfig:
    """CONTRACT.md's topic layout under a configurable prefix."""

    prefix: str = "fleet"
    commands: bool = False
    """Subscribe to the command topic (``ack``/``silence`` over MQTT, ``auditd.app.commands``);
    off unless the broker's ACL restricts who may write it."""
    inventory: bool = True
    """Publish each device's inventory (retained, ``device/{device}``) for the fleet."""
    inventory_refresh_s: float = 3600.0
    """An inventory whose only change is ``last_seen`` is published again once that has
    moved this far: the fleet sees a device is alive without a message per reading."""

    def subscriptions(self) -> tuple[str, ...]:
        """The filters the daemon subscribes to: every site and device, three kinds."""
        return tuple(self.subscription(kind) for kind in ("telemetry", "meta", "event"))

    def subscription(self, kind: MessageKind) -> str:
        return f"{self.prefix}/+/+/{kind}"

    def finding(self, site: str, gateway: str, device: str, sensor: str) -> str:
        return self._out(site, gateway, "finding", device, sensor)

    def report(self, site: str, gateway: str) -> str:
        return self._out(site, gateway, "report")

    def ticket(self, site: str, gateway: str) -> str:
        return self._out(site, gateway, "ticket")

    def status(self, site: str, gateway: str) -> str:
        return self._out(site, gateway, "status")

    def device(self, site: str, gateway: str, device: str) -> str:
        """The device's retained inventory (``auditd.domain.inventory``)."""
        return self._out(site, gateway, "device", device)

    def upstream(self, group: str) -> str:
        """The fleet's MQTT 5 shared subscription to every gateway's upstream topics."""
        return f"$share/{group}/{self.prefix}/+/audit/#"

    def command(self, site: str, gateway: str) -> str:
        return self._out(site, gateway, "command")

    def _out(self, site: str, gateway: str, *rest: str) -> str:
        """Refuse levels that would change the topic's shape (``/``, wildcards, empty)."""
        levels = (site, "audit", gateway, *rest)
        for level in levels:
            if not level or any(c in level for c in "/+#\0"):
                raise ValueError(f"{level!r} cannot be a topic level")
        return "/".join((self.prefix, *levels))


def parse_upstream(topic: str, prefix: str = "fleet") -> UpstreamTopic:
    """``{prefix}/{site}/audit/{gateway}/{kind}[/{device}[/{sensor}]]`` -> its parts, or
    ``TopicError`` naming what does not fit. Names must match CONTRACT.md's pattern: they
    become keys in the fleet's tables."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise TopicError(f"not under the prefix {prefix!r}")
    levels = topic[len(head):].split("/")
    if len(levels) < 4 or levels[1] != "audit":
        raise TopicError("not {site}/audit/{gateway}/{kind}")
    site, _, gateway, kind, *rest = levels
    if kind not in _UPSTREAM_SHAPES:
        raise TopicError(f"unknown kind {printable_level(kind)!r}")
    if len(rest) != _UPSTREAM_SHAPES[kind]:
        raise TopicError(f"{kind} takes {_UPSTREAM_SHAPES[kind]} more level(s), got {len(rest)}")
    for name, value in (("site", site), ("gateway", gateway), *zip(("device", "sensor"), rest,
                                                                   strict=False)):
        if not ID_PATTERN.fullmatch(value) and not (name == "sensor" and value == "-"):
            raise TopicError(f"{name} {printable_level(value)!r} is not a valid name")
    device = rest[0] if rest else None
    sensor = rest[1] if len(rest) > 1 and rest[1] != "-" else None
    return UpstreamTopic(site, gateway, kind, device, sensor)  # type: ignore[arg-type]


def printable_level(level: str, limit: int = 64) -> str:
    """A topic level as a log or a reason may show it: escaped, bounded."""
    return level[:limit].encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
