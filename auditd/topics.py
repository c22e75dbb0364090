"""CONTRACT.md's topic layout, under a configurable prefix: one definition of every topic
the daemon subscribes to or publishes on."""

from __future__ import annotations

from dataclasses import dataclass

from auditd.model import MessageKind


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

