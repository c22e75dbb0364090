"""Glue between an audit and the alert lifecycle: which policy, which sinks, which topic.

The auditor hands its findings here; what comes back is the ``AlertPlanner`` the store runs
inside the audit's transaction (``store_alerts``). Nothing here decides anything: the
lifecycle is ``alerts.plan``, the ticket's form is ``tickets.ticket_payload``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from auditd.config import DaemonConfig, TopicsConfig
from auditd.domain import alerts, tickets
from auditd.domain.catalog import Catalog
from auditd.model import AlertPolicy, Finding
from auditd.store_alerts import AlertPlanner


@dataclass(frozen=True, slots=True)
class AlertSettings:
    gateway: str
    topics: TopicsConfig
    sinks: tuple[str, ...] = ()
    mqtt: bool = True

    @classmethod
    def of(cls, cfg: DaemonConfig, *, sinks: Sequence[str] | None = None,
           mqtt: bool | None = None) -> AlertSettings:
        return cls(cfg.gateway, cfg.topics,
                   tuple(cfg.tickets.sinks() if sinks is None else sinks),
                   cfg.tickets.mqtt if mqtt is None else mqtt)


def policy_for(catalog: Catalog, announced: Mapping[str, str], finding: Finding) -> AlertPolicy:
    """The ``[alerts]`` of the finding's device profile, or the defaults."""
    model = catalog.model_for(finding.device, announced.get(finding.device))
    profile = catalog.profile(model) if model else None
    return profile.alerts if profile is not None else alerts.DEFAULT_POLICY


def planner_for(settings: AlertSettings, catalog: Catalog, announced: Mapping[str, str],
                findings: Sequence[Finding], now: float) -> AlertPlanner:
    def topic(site: str) -> str:
        return settings.topics.ticket(site, settings.gateway)

    return AlertPlanner(
        decide=partial(_decide, findings=tuple(findings), now=now, catalog=catalog,
                       announced=dict(announced)),
        render=partial(tickets.ticket_payload, gateway=settings.gateway),
        sinks=settings.sinks,
        mqtt_topic=topic if settings.mqtt else None)


def _decide(snapshot: alerts.Snapshot, *, findings: tuple[Finding, ...], now: float,
            catalog: Catalog, announced: Mapping[str, str]) -> alerts.Changes:
    return alerts.plan(snapshot, findings, now, partial(policy_for, catalog, announced))
