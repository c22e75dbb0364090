"""``fleet status``: gateways and when each was last heard from, replicas, the backlog."""

from __future__ import annotations

from typing import Any

from auditd.fleet.adapters.store import FleetStatus
from auditd.model import iso
from auditd.text import ago

REPLICA_STALE_S = 60.0
"""A replica silent this long is shown as gone (it beats every few seconds)."""


def status_json(status: FleetStatus, now: float) -> dict[str, Any]:
    return {
        "gateways": [{"site": g.site, "gateway": g.gateway, "state": g.state,
                      "state_since": iso(g.state_at), "last_heard": iso(g.last_heard),
                      "last_report": iso(g.last_report_at), "devices": g.devices,
                      "failing": g.failing} for g in status.gateways],
        "replicas": [{"replica": r.replica, "host": r.host, "pid": r.pid, "group": r.group,
                      "started_at": iso(r.started_at), "heartbeat_at": iso(r.at),
                      "alive": now - r.at <= REPLICA_STALE_S, "messages": r.messages,
                      "backlog": r.backlog} for r in status.replicas],
        "backlog": sum(r.backlog for r in status.replicas if now - r.at <= REPLICA_STALE_S),
        "rejected": status.rejected, "findings": status.findings,
        "devices": status.devices,
    }


def status_text(status: FleetStatus, now: float) -> str:
    lines = [f"{len(status.gateways)} gateways, {status.devices} devices, "
             f"{status.findings} findings stored"]
    for g in status.gateways:
        state = g.state or "state unknown"
        lines.append(f"  {g.site}/{g.gateway}: {state}, last heard {ago(now - g.last_heard)}"
                     f", {g.devices} devices, {g.failing} failing")
    live = [r for r in status.replicas if now - r.at <= REPLICA_STALE_S]
    lines.append(f"replicas: {len(live)} alive of {len(status.replicas)} known; backlog "
                 f"{sum(r.backlog for r in live)} messages")
    for r in status.replicas:
        alive = "alive" if r in live else "gone"
        lines.append(f"  {r.replica} ({r.host} pid {r.pid}, group {r.group}): {alive}, "
                     f"heartbeat {ago(now - r.at)}, {r.messages} messages, "
                     f"backlog {r.backlog}")
    total = sum(status.rejected.values())
    reasons = ", ".join(f"{k} {v}" for k, v in status.rejected.items())
    lines.append(f"rejected upstream messages: {total}" + (f" ({reasons})" if total else ""))
    return "\n".join(lines)
