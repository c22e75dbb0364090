"""Fleet-level reasoning over one audit run: what changed before each deviation, which
cohorts fail together, and which devices' metadata is anomalous.

Pure: the run's calibration findings and each device's history in, findings out. The
``Auditor`` reads the histories from the store (``auditd.app.auditor.read_histories``) and
calls these after every stream has been judged, because each of them needs the whole
fleet's verdicts or the whole fleet's metadata, not one stream's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from auditd import core, logs
from auditd.core.causes import REGISTRY
from auditd.domain.catalog import Catalog
from auditd.domain.metadata import (
    DEFAULT_POLICY,
    METADATA_INVALID,
    Anomaly,
    Change,
    DeviceHistory,
    FleetView,
    MetadataPolicy,
    anomalies,
    changes,
    context_for,
    firmware_changed,
    firmware_since,
    metadata_finding,
    needs_saving,
    parse_date,
    reference_anomalies,
)
from auditd.domain.onsets import bracketed_only, onset_uncertainty
from auditd.model import Cause, Finding, Profile, worst_severity

if TYPE_CHECKING:  # auditd.core (and scipy.stats) loads on the first audit, not at start-up
    from auditd.core.cohorts import Cohort

log = logs.get("auditd.domain.run_context")

FIRMWARE_REGRESSION = "firmware_regression"
FIRMWARE = "firmware"
"""The cohort attribute of a firmware version (``auditd.core.cohorts.FIRMWARE``)."""
COHORT = "cohort"
"""``context.comparison`` of a cohort's root finding: it judges a group, not a stream."""
REGRESSION = REGISTRY[FIRMWARE_REGRESSION]


# --------------------------------------------------------------------------- context


def with_context(findings: Sequence[Finding], histories: Mapping[str, DeviceHistory],
                 policy: MetadataPolicy = DEFAULT_POLICY) -> list[Finding]:
    """Each failing calibration finding with the changes that preceded its onset."""
    out = []
    timelines: dict[str, list[Change]] = {}
    for f in findings:
        history = histories.get(f.device)
        if f.kind != "calibration" or f.status != "fail" or history is None:
            out.append(f)
            continue
        if f.device not in timelines:
            timelines[f.device] = changes(history)
        extra = context_for(timelines[f.device], f.onset, f.window_start, policy,
                            onset_uncertainty_s=onset_uncertainty(f))
        out.append(replace(f, context={**f.context, **extra}) if extra else f)
    return out


# --------------------------------------------------------------------------- cohorts


_StreamKey = tuple[str, str, str | None]


@dataclass(frozen=True, slots=True)
class CohortOutcome:
    findings: tuple[Finding, ...]
    cohorts: tuple[dict[str, Any], ...]
    """For the run's report: every significant cohort, per sensor."""


def attributes(history: DeviceHistory | None, model: str | None, site: str) -> dict[str, str]:
    """The cohort attributes of one device (firmware and hardware named with their model:
    version 2.4.0 of one model has nothing to do with 2.4.0 of another)."""
    meta = history.latest if history is not None else {}
    out = {"site": site}
    if model:
        out["model"] = model
    if meta.get("firmware") is not None:
        out[FIRMWARE] = f"{model or '?'} {meta['firmware']}"
    if meta.get("hardware_rev") is not None:
        out["hardware_rev"] = f"{model or '?'} rev {meta['hardware_rev']}"
    installed = meta.get("installed_at")
    if installed is not None:
        with suppress(ValueError):  # reported as metadata_invalid by the anomaly checks
            out["installed"] = datetime.fromtimestamp(parse_date(installed),
                                                      tz=UTC).strftime("%Y-%m")
    return out


def apply_cohorts(findings: Sequence[Finding], histories: Mapping[str, DeviceHistory],
                  models: Mapping[str, str | None], alpha: float = 0.05,
                  policy: MetadataPolicy = DEFAULT_POLICY, *, now: float,
                  previous_roots: Sequence[Finding] = ()) -> CohortOutcome:
    """Test every sensor's cohorts; name ``firmware_regression`` first on the members of a
    regressed firmware cohort and add the cohort's own finding (the root its members'
    alerts group under); note other significant cohorts in their failing members' context.
    A root that failed before (``previous_roots``, as stored) and is not raised again gets
    a ``pass``, so its retained finding and its alert clear.

    Streams already explained by their reference's fault are left out of the population:
    their deviation is the reference's, and would make every cohort at that site look bad.
    """
    by_sensor: dict[str, list[tuple[Finding, core.cohorts.Member]]] = {}
    for f in findings:
        if (f.kind != "calibration" or f.sensor is None or f.status not in ("pass", "fail")
                or f.device not in models or _explained_by_reference(f)):
            continue
        history = histories.get(f.device)
        member = core.cohorts.Member(
            f.device, f.status == "fail", f.onset, f.window_start,
            attributes(history, models[f.device], f.site),
            firmware_since(history) if history is not None else None,
            updated=history is not None and firmware_changed(history),
            observed=(history.first_telemetry, f.window_end)
            if history is not None and history.first_telemetry is not None else None,
            onset_uncertainty_s=onset_uncertainty(f), onset_dated=not bracketed_only(f))
        by_sensor.setdefault(f.sensor, []).append((f, member))

    def key(f: Finding) -> _StreamKey:
        return (f.site, f.device, f.sensor)

    updated: dict[_StreamKey, Finding] = {key(f): f for f in findings}
    roots: list[Finding] = []
    report: list[dict[str, Any]] = []
    for sensor, pairs in sorted(by_sensor.items()):
        cohorts = core.cohorts.significant_cohorts([m for _, m in pairs], alpha,
                                                   policy.onset_slack_s, timing=True)
        for cohort in cohorts:
            members = [f for f, m in pairs if m.device in cohort.failing]
            report.append(_cohort_json(sensor, cohort, members))
            if cohort.regression:
                root = _regression_root(sensor, cohort, members)
                roots.append(root)
                for f in members:
                    if f.device in cohort.following:
                        updated[key(f)] = _blame_firmware(updated[key(f)], cohort, sensor,
                                                          root)
            else:
                for f in members:
                    current = updated[key(f)]
                    noted = [*current.context.get("cohorts", []),
                             _cohort_json(sensor, cohort, members)]
                    updated[key(f)] = replace(current, context={**current.context,
                                                                "cohorts": noted})
    raised = {(r.device, r.sensor) for r in roots}
    cleared = [_cleared_root(p, now) for p in previous_roots
               if p.status == "fail" and (p.device, p.sensor) not in raised]
    out = [updated[key(f)] for f in findings]
    return CohortOutcome(tuple(out + roots + cleared), tuple(report))


def _cleared_root(previous: Finding, now: float) -> Finding:
    """A regressed cohort no longer regressed (rolled back, fixed, or its members gone)."""
    return Finding(
        kind="calibration", site=previous.site, device=previous.device,
        sensor=previous.sensor, status="pass", severity="none", window_start=now,
        window_end=now, unit=previous.unit, reference=None,
        context={"comparison": COHORT, "cohort": previous.context.get("cohort"),
                 "members": [], "cleared": previous.context.get("members", [])},
        action="")


def _explained_by_reference(f: Finding) -> bool:
    return bool(f.causes) and f.causes[0].cause == "reference_fault"


def _cohort_json(sensor: str, cohort: Cohort, members: Sequence[Finding]) -> dict[str, Any]:
    return {"sensor": sensor, "attribute": cohort.attribute, "value": cohort.value,
            "sites": sorted({f.site for f in members}),
            "failing": list(cohort.failing), "healthy": list(cohort.healthy),
            "others_failing": cohort.rest_failing,
            "others_healthy": cohort.rest_healthy, "p": round(cohort.p, 6),
            "p_adjusted": round(cohort.p_adjusted, 6),
            FIRMWARE_REGRESSION: cohort.regression}


def _split_firmware(value: str) -> tuple[str, str]:
    model, _, version = value.rpartition(" ")
    return model, version


def _regression_root(sensor: str, cohort: Cohort, members: Sequence[Finding]) -> Finding:
    """The cohort's own finding: the one alert its members group under."""
    model, version = _split_firmware(cohort.value)
    affected = [f for f in members if f.device in cohort.following]
    sites = [f.site for f in affected]
    severity = worst_severity((f.severity for f in affected), default="major")
    onsets = [f.onset for f in affected if f.onset is not None]
    unit = affected[0].unit if affected else None
    return Finding(
        kind="calibration", site=max(set(sites), key=sites.count),
        device=core.cohorts.cohort_id(model, version),
        sensor=sensor, status="fail", severity=severity,
        window_start=min(f.window_start for f in affected),
        window_end=max(f.window_end for f in affected), unit=unit, reference=None,
        metrics={"devices": cohort.size, "deviating": len(affected),
                 "others": cohort.rest_failing + cohort.rest_healthy,
                 "others_deviating": cohort.rest_failing, "p": round(cohort.p_adjusted, 6)},
        causes=(Cause(FIRMWARE_REGRESSION, round(1.0 - cohort.p_adjusted, 4),
                      cohort.evidence(sensor)),),
        onset=min(onsets) if onsets else None,
        context={"comparison": COHORT, "cohort": {"attribute": FIRMWARE, "model": model,
                                                    "version": version},
                 "members": list(cohort.following),
                 "others": sorted(set(cohort.failing) - set(cohort.following))},
        action=REGRESSION.action.format(model=model, version=version),
    )


def _blame_firmware(f: Finding, cohort: Cohort, sensor: str, root: Finding) -> Finding:
    model, version = _split_firmware(cohort.value)
    cause = Cause(FIRMWARE_REGRESSION, round(1.0 - cohort.p_adjusted, 4),
                  cohort.evidence(sensor))
    return replace(f, causes=(cause, *f.causes), context={
        **f.context, FIRMWARE_REGRESSION: {
            "model": model, "version": version, "root": root.device,
            "affected": len(cohort.following),
            "unaffected": cohort.rest_healthy + len(cohort.healthy)}},
        action=(f"{REGRESSION.member_action.format(version=version)} {f.action}").strip())


# --------------------------------------------------------------------------- metadata


def metadata_findings(histories: Mapping[str, DeviceHistory], catalog: Catalog,
                      models: Mapping[str, str | None],
                      previous: Mapping[str, Finding], now: float,
                      firmware: FleetView,
                      policy: MetadataPolicy = DEFAULT_POLICY) -> list[Finding]:
    """The metadata findings worth saving this run: a device's first anomalies, a change in
    them, or their end. ``previous``: device -> its latest metadata finding."""
    out = []
    devices = sorted(set(histories) | {ref.id for ref in catalog.references})
    for device in devices:
        history = histories.get(device) or DeviceHistory(device, _ref_site(catalog, device))
        model = models.get(device)
        profile = catalog.profile(model) if model else None
        found = _judged(history, profile, model, firmware, now, policy)
        ref = catalog.reference(device)
        if ref is not None:
            certificate = reference_anomalies(ref, now)
            if certificate:
                found = [a for a in found if a.name != certificate[0].name] + certificate
        site = history.site or _ref_site(catalog, device)
        if site and needs_saving(previous.get(device), found):
            out.append(metadata_finding(device, site, found, now))
    return out


def _judged(history: DeviceHistory, profile: Profile | None, model: str | None,
            firmware: FleetView, now: float, policy: MetadataPolicy) -> list[Anomaly]:
    """The device's anomalies; metadata its checks cannot judge (a value of a shape no
    check expects) is that device's ``metadata_invalid``, never the end of every other
    device's findings."""
    try:
        return anomalies(history, profile, model, firmware, now, policy)
    except Exception as exc:
        log.error("metadata_unjudgeable", device=history.device, error=repr(exc)[:300])
        return [Anomaly(METADATA_INVALID, f"its metadata could not be judged "
                        f"({type(exc).__name__}): fix the device's meta payload",
                        key="unjudgeable")]


def _ref_site(catalog: Catalog, device: str) -> str:
    ref = catalog.reference(device)
    return ref.site if ref is not None else ""
