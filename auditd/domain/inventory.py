"""The device inventory a gateway publishes for the fleet (CONTRACT.md, "Fleet").

One retained message per device on ``{prefix}/{site}/audit/{gateway}/device/{device}``:
what the device is (model, firmware, hardware revision, install data), when it was last
heard, and what its current verdicts blame. The fleet learns from it the model and firmware
of devices it has no finding for, so that a cohort is tested against the whole model's
fleet and not only against the devices that failed.

The inventory is published when it changes, not on every audit: ``last_seen`` moves with
every reading, so a change of it alone counts once it has moved ``refresh_s`` since the
published one. Pure: histories and findings in, payloads out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from auditd.domain.metadata import DeviceHistory
from auditd.model import Finding, iso

Role = Literal["field", "reference"]

IDENTITY_KEYS = ("model", "firmware", "hardware_rev", "serial", "installed_at",
                 "calibrated_at", "calibration_due")
"""The meta keys the inventory lifts to its top level (as text): what a fleet groups
devices by (model, firmware, hardware revision, install date) and what it schedules by."""


@dataclass(frozen=True, slots=True)
class DeviceInventory:
    """One device as its gateway knows it."""

    at: float
    """When the gateway took it (the audit's time): the payload's ``ts``."""
    site: str
    gateway: str
    device: str
    role: Role
    model: str | None
    """The model the gateway audits it as: announced in its meta, else its reference
    entry's, else the first ``[models]`` glob (``Catalog.model_for``)."""
    identity: Mapping[str, str | None]
    """``IDENTITY_KEYS`` but ``model``, as the device's current meta states them."""
    meta: Mapping[str, Any]
    """The device's whole current meta (without ``ts``): install batch, location, ..."""
    firmware_since: float | None
    """When the current firmware was first seen (the meta version that introduced it)."""
    sensors: tuple[str, ...]
    first_seen: float | None
    last_seen: float | None
    status: str | None
    """The worst status among the device's verdicts of the last audit (``fail`` before
    ``insufficient_data`` before ``pass``); None when it had none."""
    causes: tuple[str, ...]
    """Causes named by its failing verdicts of the last audit, sorted."""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "device", "ts": iso(self.at), "site": self.site, "gateway": self.gateway,
            "device": self.device, "role": self.role, "model": self.model,
            **{key: self.identity.get(key) for key in IDENTITY_KEYS if key != "model"},
            "firmware_since": iso(self.firmware_since),
            "sensors": list(self.sensors),
            "first_seen": iso(self.first_seen), "last_seen": iso(self.last_seen),
            "status": self.status, "causes": list(self.causes),
            "meta": dict(self.meta),
        }

    def content_hash(self) -> str:
        """Everything but ``ts`` and ``last_seen``: what makes a new version worth
        publishing."""
        content = self.to_json()
        del content["ts"], content["last_seen"]
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Published:
    """What was last queued for a device's inventory topic."""

    content_hash: str
    last_seen: float | None


_STATUS_RANK = {"fail": 3, "insufficient_data": 2, "pass": 1}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def firmware_since(history: DeviceHistory) -> float | None:
    """First seen of the oldest meta version in the run of versions ending with the
    current one that all state the current firmware."""
    if not history.versions:
        return None
    current = history.versions[-1].data.get("firmware")
    if current is None:
        return None
    since = history.versions[-1].first_seen
    for version in reversed(history.versions):
        if version.data.get("firmware") != current:
            break
        since = version.first_seen
    return since


def inventory_of(history: DeviceHistory, *, at: float, gateway: str, model: str | None,
                 role: Role, sensors: Iterable[str],
                 findings: Sequence[Finding]) -> DeviceInventory:
    """The device's inventory from its history and its verdicts of the last audit (only
    its own are read)."""
    latest = history.latest
    own = [f for f in findings if f.device == history.device]
    statuses = [f.status for f in own if f.status in _STATUS_RANK]
    status = max(statuses, key=_STATUS_RANK.__getitem__, default=None)
    causes = sorted({c.cause for f in own if f.status == "fail" for c in f.causes})
    first = [v.first_seen for v in history.versions]
    if history.first_telemetry is not None:
        first.append(history.first_telemetry)
    last = [v.last_seen for v in history.versions[-1:]]
    if history.last_telemetry is not None:
        last.append(history.last_telemetry)
    return DeviceInventory(
        at=at, site=history.site, gateway=gateway, device=history.device, role=role, model=model,
        identity={key: _text(latest.get(key)) for key in IDENTITY_KEYS if key != "model"},
        meta={k: v for k, v in latest.items() if k != "ts"},
        firmware_since=firmware_since(history), sensors=tuple(sorted(set(sensors))),
        first_seen=min(first, default=None), last_seen=max(last, default=None),
        status=status, causes=tuple(causes))


def due(current: DeviceInventory, published: Published | None, refresh_s: float) -> bool:
    """Whether ``current`` should be published: never published, changed, or last heard
    ``refresh_s`` or more after the published ``last_seen``."""
    if published is None or published.content_hash != current.content_hash():
        return True
    if current.last_seen is None:
        return False
    if published.last_seen is None:
        return True
    return current.last_seen - published.last_seen >= refresh_s


def updates(inventories: Iterable[DeviceInventory], published: Mapping[str, Published],
            refresh_s: float) -> list[DeviceInventory]:
    """The inventories worth publishing now, by device."""
    return sorted((inv for inv in inventories
                   if due(inv, published.get(inv.device), refresh_s)),
                  key=lambda inv: (inv.site, inv.device))
