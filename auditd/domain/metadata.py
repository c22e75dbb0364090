"""What a device's metadata history says: its changes, and the anomalies in it.

Pure: a device's meta versions, events and telemetry span in, a timeline of changes and a
list of anomalies out. The audit (``auditd.app.auditor``) reads the store, calls these, turns
anomalies into ``kind: "metadata"`` findings and lays the changes beside a calibration
finding's onset. No store, clock or broker here; ``now`` is always an argument.

Why the anomalies matter, and the rules that find them, are in ``docs/metadata.md``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import pairwise
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from auditd.core.causes import ANOMALIES
from auditd.core.causes import spec as cause_spec
from auditd.model import (
    Cause,
    EventRecord,
    Finding,
    Profile,
    Reference,
    Severity,
    iso,
    latest_start,
    worst_severity,
)
from auditd.text import duration

DAY = 86_400.0

# The anomaly vocabulary (CONTRACT.md names five; docs/metadata.md the rest): the names
# the checks below raise. What each one is, its severity and its action are its entry in
# the cause registry (``auditd.core.causes``).
FIRMWARE_NOT_ALLOWED = "firmware_not_allowed"
FIRMWARE_DOWNGRADE = "firmware_downgrade"
CALIBRATION_OVERDUE = "calibration_overdue"
METADATA_INVALID = "metadata_invalid"
COHORT_OUTLIER = "cohort_outlier"
INSTALLED_IN_FUTURE = "installed_in_future"
INSTALLED_AFTER_TELEMETRY = "installed_after_telemetry"
SERIAL_CHANGED = "serial_changed"
MODEL_UNKNOWN = "model_unknown"
SENSOR_NOT_IN_PROFILE = "sensor_not_in_profile"
DEVICE_SILENT = "device_silent"
FIRMWARE_RARE = "firmware_rare"

_RANK = {name: i for i, name in enumerate(ANOMALIES)}
"""A finding lists its anomalies in the registry's order (most consequential first)."""

TRACKED_KEYS = ("model", "firmware", "hardware_rev", "serial", "location")
"""Meta keys whose change is a change worth laying beside a deviation."""

_CHANGE_TYPES = {"firmware": "firmware_update", "location": "relocation",
                 "serial": "replacement", "model": "model_change",
                 "hardware_rev": "hardware_change"}


@dataclass(frozen=True, slots=True)
class MetadataPolicy:
    """The thresholds of the metadata checks ([audit] in the daemon config)."""

    silent_after_intervals: float = 30.0
    """A device is silent after this many of its reporting intervals without a reading..."""
    silent_min_s: float = 3600.0
    """...and never before this long: a 1 Hz sensor missing 30 s is a dropout, not silence."""
    grace_s: float = DAY
    """Dates in metadata are often days without a zone: this much slack before a date
    contradicts telemetry or the clock."""
    rare_firmware_share: float = 0.05
    rare_firmware_min_fleet: int = 10
    """A version is rare when at most this share of at least this many devices of the
    model run it (or it is the only one of ten or more that does)."""
    context_lookback_s: float = 30 * DAY
    """How far before a deviation's onset a change is still named beside it."""
    onset_slack_s: float = 3600.0
    """A change this long after the estimated onset still 'precedes' it: change-point
    estimates land within a few bins of the true step, on either side."""


DEFAULT_POLICY = MetadataPolicy()


# --------------------------------------------------------------------------- history


@dataclass(frozen=True, slots=True)
class MetaVersion:
    """One version of a device's metadata, as the store keeps it."""

    data: Mapping[str, Any]
    """The device's keys (``ts`` excluded: it changes every message)."""
    ts: float
    first_seen: float
    last_seen: float
    site: str = ""

    @property
    def model(self) -> str | None:
        """The model the device announces, when it names one (as text)."""
        model = self.data.get("model")
        return model if isinstance(model, str) else None


@dataclass(frozen=True, slots=True)
class Change:
    """Something that happened to a device: an event it reported, or a meta key that changed."""

    at: float
    type: str
    """An event type (CONTRACT.md), or ``firmware_update``/``relocation``/``replacement``/
    ``model_change``/``hardware_change`` inferred from a changed meta key."""
    source: str
    """``event`` or ``meta``."""
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The event's own keys, then ours: a device's ``at`` or ``source`` key cannot
        overwrite the time and origin the audit established."""
        return {**self.detail, "type": self.type, "at": iso(self.at), "source": self.source}


@dataclass(frozen=True, slots=True)
class DeviceHistory:
    """Everything the metadata checks need to know about one device."""

    device: str
    site: str
    versions: tuple[MetaVersion, ...] = ()
    """Oldest first."""
    events: tuple[EventRecord, ...] = ()
    """In time order."""
    first_telemetry: float | None = None
    last_telemetry: float | None = None
    interval_s: float | None = None
    """The shortest reporting interval among the device's profiled sensors."""
    unknown_sensors: tuple[str, ...] = ()
    """Sensors it sent that its profile lacks (quarantined as ``sensor_unknown``)."""
    model_rejected: bool = False
    """Telemetry of it was quarantined as ``unknown_device_model``."""

    @property
    def latest(self) -> Mapping[str, Any]:
        return self.versions[-1].data if self.versions else {}


# --------------------------------------------------------------------------- bounded history

HISTORY_SHED = 0.9
"""Beyond a device's cap its history is thinned to this share of it, so that the next
versions or events do not thin it again one by one."""


@dataclass(frozen=True, slots=True)
class Thinning:
    """Which of a device's meta versions go, and what the ones that stay absorb."""

    drop: tuple[int, ...] = ()
    """Indices (oldest first) of the versions to delete."""
    last_seen: Mapping[int, float] = field(default_factory=dict)
    """Kept version -> its ``last_seen`` stretched over the dropped versions after it that
    carried the same tracked keys (the serial check reads when the old unit was last seen)."""


def _tracked(version: MetaVersion) -> tuple[object, ...]:
    return tuple(_comparable(version.data.get(key)) for key in TRACKED_KEYS)


def thin_versions(versions: Sequence[MetaVersion], cap: int) -> Thinning:
    """What to delete of a device's meta versions (oldest first) when they are more than
    ``cap``: a device whose meta carries an uptime or a jittering GPS position makes a
    version of every message, and must not grow the store for ever.

    Kept, so that every rule of this module reads the same history: the first version (the
    device announced itself), the latest quarter of the cap, and every version where a
    tracked key (``TRACKED_KEYS``) changed. A version that only repeats its predecessor's
    tracked keys goes first, its ``last_seen`` passed to the one kept before it. Should the
    changes alone still be too many (a position that jitters is a ``location`` change every
    time), the oldest changes of ``location`` only go next, then the oldest of the others,
    down to ``HISTORY_SHED`` of the cap."""
    n = len(versions)
    if n <= cap:
        return Thinning()
    latest = max(1, cap // 4)
    protected = {0, *range(max(1, n - latest), n)}
    dropped: set[int] = set()
    location_only: list[int] = []
    others: list[int] = []
    for i in range(1, n):
        if i in protected:
            continue
        differing = [key for key, old, new in zip(
            TRACKED_KEYS, _tracked(versions[i - 1]), _tracked(versions[i]), strict=True)
            if old != new]
        if not differing:
            dropped.add(i)
        elif differing == ["location"]:
            location_only.append(i)
        else:
            others.append(i)
    target = max(len(protected), int(cap * HISTORY_SHED))
    for i in (*location_only, *others):
        if n - len(dropped) <= target:
            break
        dropped.add(i)
    last_seen: dict[int, float] = {}
    keeper = 0
    for i in range(1, n):
        if i not in dropped:
            keeper = i
        elif _tracked(versions[i]) == _tracked(versions[keeper]):
            seen = max(last_seen.get(keeper, versions[keeper].last_seen), versions[i].last_seen)
            if seen > versions[keeper].last_seen:
                last_seen[keeper] = seen
    return Thinning(tuple(sorted(dropped)), last_seen)


def events_to_drop(events: Sequence[EventRecord], cap: int) -> tuple[int, ...]:
    """Indices of a device's events (in time order) to delete when they are more than
    ``cap``: the oldest, down to ``HISTORY_SHED`` of the cap, but never the latest event of
    each type nor the latest calibration correcting each sensor (the calibration check and
    the corrections applied to readings read those)."""
    n = len(events)
    if n <= cap:
        return ()
    needed: dict[tuple[str, object], int] = {}
    for i, event in enumerate(events):
        needed[(event.type, None)] = i
        correction = event.data.get("correction")
        if event.type == "calibration" and isinstance(correction, Mapping):
            needed[(event.type, _comparable(correction.get("sensor")))] = i
    keep = set(needed.values())
    excess = n - max(len(keep), int(cap * HISTORY_SHED))
    drop = [i for i in range(n) if i not in keep][:max(0, excess)]
    return tuple(drop)


def changes(history: DeviceHistory) -> list[Change]:
    """The device's timeline of changes, oldest first: its events, and each tracked meta
    key that changed between versions. A meta change that an event already reports (same
    kind, within a day) is left out: the event says more (who, how)."""
    out = [Change(e.ts, e.type, "event", _event_detail(e)) for e in history.events]
    reported: dict[str, list[float]] = {}
    for change in out:
        reported.setdefault(change.type, []).append(change.at)
    for times in reported.values():
        times.sort()
    for before, after in pairwise(history.versions):
        for key in TRACKED_KEYS:
            old, new = before.data.get(key), after.data.get(key)
            if old == new or new is None:
                continue
            kind = _CHANGE_TYPES[key]
            if _near(reported.get(kind, []), after.first_seen, DAY):
                continue
            out.append(Change(after.first_seen, kind, "meta", {"key": key, "from": old,
                                                                 "to": new}))
    out.sort(key=lambda c: c.at)
    return out


def _near(sorted_times: Sequence[float], moment: float, within: float) -> bool:
    i = bisect_left(sorted_times, moment - within)
    return i < len(sorted_times) and sorted_times[i] <= moment + within


def _event_detail(event: EventRecord) -> dict[str, Any]:
    return {k: v for k, v in event.data.items() if k not in ("ts", "type")}


def changes_before(timeline: Sequence[Change], moment: float,
                   policy: MetadataPolicy = DEFAULT_POLICY,
                   uncertainty_s: float = 0.0) -> list[Change]:
    """The changes in the look-back before ``moment`` (a deviation's onset), newest first,
    and those up to the onset's slack after it, or up to its ``uncertainty_s`` where that is
    longer (an onset known to two hours may have followed an update made after it)."""
    lo = moment - policy.context_lookback_s
    hi = latest_start(moment, uncertainty_s, policy.onset_slack_s)
    return sorted((c for c in timeline if lo <= c.at <= hi), key=lambda c: -c.at)


def firmware_since(history: DeviceHistory) -> float | None:
    """When the device started running its current firmware: the first meta version that
    announced it, or the firmware_update event that installed it, whichever is earlier."""
    current = history.latest.get("firmware")
    if current is None:
        return None
    since: float | None = None
    for version in reversed(history.versions):
        if version.data.get("firmware") != current:
            break
        since = version.first_seen
    for event in history.events:
        if event.type == "firmware_update" and str(event.data.get("to")) == str(current):
            since = event.ts if since is None else min(since, event.ts)
    return since


def firmware_changed(history: DeviceHistory) -> bool:
    """Whether the device's current firmware replaced another that the store saw (an
    earlier meta version with a different firmware, or a firmware_update event to it)."""
    current = history.latest.get("firmware")
    if current is None:
        return False
    if any(v.data.get("firmware") not in (None, current) for v in history.versions):
        return True
    return any(e.type == "firmware_update" and str(e.data.get("to")) == str(current)
               for e in history.events)


def context_for(timeline: Sequence[Change], onset: float | None, window_start: float,
                policy: MetadataPolicy = DEFAULT_POLICY, *,
                onset_uncertainty_s: float = 0.0) -> dict[str, Any]:
    """A failing finding's ``context``: the changes that preceded its onset (or, with no
    onset, its window), within the onset's stated uncertainty, and the latest firmware
    change among them as CONTRACT.md's ``firmware_change``."""
    preceding = changes_before(timeline, onset if onset is not None else window_start,
                               policy, onset_uncertainty_s if onset is not None else 0.0)
    if not preceding:
        return {}
    out: dict[str, Any] = {"changes": [c.to_json() for c in preceding]}
    firmware = next((c for c in preceding if c.type == "firmware_update"), None)
    if firmware is not None:
        out["firmware_change"] = {"from": firmware.detail.get("from"),
                                  "to": firmware.detail.get("to"), "at": iso(firmware.at)}
    return out


# --------------------------------------------------------------------------- anomalies


@dataclass(frozen=True, slots=True)
class Anomaly:
    name: str
    evidence: str
    key: str = ""
    """What makes it the same anomaly at the next audit (a version, a serial pair...): an
    anomaly whose name and key are unchanged is not raised again."""
    since: float | None = None

    @property
    def severity(self) -> Severity:
        entry = cause_spec(self.name)
        return entry.severity if entry is not None and entry.severity else "minor"


@dataclass(frozen=True, slots=True)
class FleetView:
    """What the checks compare one device with: the firmware the rest of its model runs."""

    firmware_by_model: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, devices: Iterable[tuple[str | None, object]]) -> FleetView:
        """From each device's (model, firmware); devices missing either are not counted."""
        counts: dict[str, Counter[str]] = {}
        for model, firmware in devices:
            if model and firmware is not None:
                counts.setdefault(model, Counter())[str(firmware)] += 1
        return cls({m: dict(c) for m, c in counts.items()})


def anomalies(history: DeviceHistory, profile: Profile | None, model: str | None,
              fleet: FleetView, now: float,
              policy: MetadataPolicy = DEFAULT_POLICY) -> list[Anomaly]:
    """Every anomaly in one device's metadata history at ``now``, ranked."""
    found: list[Anomaly] = []
    found += _model_checks(history, profile, model)
    found += _firmware_checks(history, profile, model, fleet, policy)
    found += _serial_checks(history, policy)
    found += _calibration_checks(history, profile, now)
    found += _installation_checks(history, now, policy)
    found += _silence_checks(history, profile, now, policy)
    found.sort(key=lambda a: (_RANK.get(a.name, len(_RANK)), a.key))
    return found


def reference_anomalies(ref: Reference, now: float) -> list[Anomaly]:
    """A reference instrument's certificate, from its entry in references/."""
    if ref.calibration_due is None or ref.calibration_due >= now:
        return []
    return [Anomaly(CALIBRATION_OVERDUE,
                    f"reference {ref.id} was due for calibration on "
                    f"{_day(ref.calibration_due)} (certificate {ref.certificate or 'unknown'}), "
                    f"{duration(now - ref.calibration_due)} ago; its devices are judged "
                    f"against their peers where enough of them report",
                    key=f"due {_day(ref.calibration_due)}", since=ref.calibration_due)]


def _model_checks(history: DeviceHistory, profile: Profile | None,
                  model: str | None) -> list[Anomaly]:
    out = []
    if profile is None and (model is not None or history.model_rejected):
        named = f"model {model!r}" if model else "no model"
        out.append(Anomaly(MODEL_UNKNOWN,
                           f"{history.device} announces {named}, for which no device "
                           f"profile is loaded: its telemetry cannot be validated or audited",
                           key=model or ""))
    if profile is not None and history.unknown_sensors:
        names = ", ".join(history.unknown_sensors)
        out.append(Anomaly(SENSOR_NOT_IN_PROFILE,
                           f"{history.device} sends {names}, which profile {profile.model!r} "
                           f"does not have (sensors: {', '.join(profile.sensors)}); those "
                           f"readings are quarantined", key=names))
    return out


def _firmware_checks(history: DeviceHistory, profile: Profile | None, model: str | None,
                     fleet: FleetView, policy: MetadataPolicy) -> list[Anomaly]:
    current = history.latest.get("firmware")
    if current is None:
        return []
    text = str(current)
    try:
        version = Version(text)
    except InvalidVersion:
        return [Anomaly(METADATA_INVALID, f"firmware {text!r} is not a PEP 440 version, so "
                        f"the profile's allowed_firmware cannot be checked",
                        key=f"firmware={text}")]
    out = []
    allowed = _allowed(profile.allowed_firmware) if profile is not None else None
    vetted = bool(allowed) and any(s.contains(version, prereleases=True)
                                   for s in allowed or ())
    if profile is not None and allowed and not vetted:
        out.append(Anomaly(FIRMWARE_NOT_ALLOWED,
                           f"firmware {text} is outside profile {profile.model!r}'s "
                           f"allowed_firmware {', '.join(profile.allowed_firmware)}",
                           key=text, since=firmware_since(history)))
    highest = _highest_earlier(history, version, allowed)
    if highest is not None and not _announced(history, text):
        out.append(Anomaly(FIRMWARE_DOWNGRADE,
                           f"firmware went back to {text} after running {highest}, with no "
                           f"firmware_update event announcing it",
                           key=f"{highest}->{text}", since=firmware_since(history)))
    # The canary of a rollout runs a vetted version that an update event installed: rare
    # today, the fleet's version tomorrow.
    rare = None if vetted and _announced(history, text) else _rare(model, text, fleet, policy)
    if rare is not None:
        out.append(rare)
    return out


def _allowed(specifiers: Sequence[str]) -> list[SpecifierSet] | None:
    """The profile's specifier strings, each a vetted range: a version is allowed when any
    one admits it (``[">=2.0,<3", "==3.1.*"]`` is two ranges, not their intersection).
    None if one cannot be parsed (config loading refuses those; this is belt and braces)."""
    try:
        return [SpecifierSet(s) for s in specifiers]
    except InvalidSpecifier:
        return None


def _highest_earlier(history: DeviceHistory, current: Version,
                     allowed: Sequence[SpecifierSet] | None) -> Version | None:
    """The highest firmware the device ran before, if higher than ``current``. Versions the
    profile does not allow are left out: going back from one of those is the remedy."""
    seen: list[Version] = []
    earlier = [v.data.get("firmware") for v in history.versions[:-1]]
    earlier += [e.data.get("from") for e in history.events if e.type == "firmware_update"]
    for fw in earlier:
        try:
            seen.append(Version(str(fw))) if fw is not None else None
        except InvalidVersion:
            continue
    if allowed:
        seen = [v for v in seen if any(s.contains(v, prereleases=True) for s in allowed)]
    higher = [v for v in seen if v > current]
    return max(higher) if higher else None


def _announced(history: DeviceHistory, firmware: str) -> bool:
    """A firmware_update event installed this version: a deliberate, recorded rollback."""
    return any(e.type == "firmware_update" and str(e.data.get("to")) == firmware
               for e in history.events)


def _rare(model: str | None, firmware: str, fleet: FleetView,
          policy: MetadataPolicy) -> Anomaly | None:
    counts = fleet.firmware_by_model.get(model, {}) if model else {}
    total = sum(counts.values())
    running = counts.get(firmware, 0)
    if total < policy.rare_firmware_min_fleet or running == 0:
        return None
    if running / total > policy.rare_firmware_share and running > 1:
        return None
    common = max(counts, key=lambda k: counts[k])
    return Anomaly(FIRMWARE_RARE,
                   f"only {running} of {total} {model} devices run firmware {firmware} "
                   f"(most run {common}: {counts[common]})", key=firmware)


def _comparable(value: object) -> object:
    """A meta value as something hashable: a device may send an object or a list where a
    string belongs, and must not stop the audit of every other device by doing so."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _serial_checks(history: DeviceHistory, policy: MetadataPolicy) -> list[Anomaly]:
    """A serial change with no replacement event to explain it. Each event explains one
    change: the first one after it (a replacement last year does not excuse today's swap).
    The old unit was last seen at ``before.last_seen``; an event reported from about then
    on, however late it arrives, explains the change."""
    out = []
    replacements = sorted(e.ts for e in history.events if e.type == "replacement")
    used: set[int] = set()
    seen_serials: set[object] = set()
    for before, after in pairwise(history.versions):
        old, new = _comparable(before.data.get("serial")), _comparable(after.data.get("serial"))
        seen_serials.add(old)
        if old is None or new is None or old == new:
            continue
        lo = before.last_seen - policy.grace_s
        match = next((i for i, ts in enumerate(replacements) if ts >= lo and i not in used),
                     None)
        if match is not None:
            used.add(match)
            continue
        if new in seen_serials:
            continue  # back to a serial seen before: reported when it first changed
        out.append(Anomaly(SERIAL_CHANGED,
                           f"serial changed from {old} to {new} (first seen "
                           f"{iso(after.first_seen)}) with no replacement event: the unit may "
                           f"have been swapped silently, and its calibration is not the "
                           f"old unit's", key=f"{old}->{new}", since=after.first_seen))
    return out


@dataclass(frozen=True, slots=True)
class CalibrationDue:
    """When a device's calibration falls due, and what says so."""

    due: float
    basis: str
    """The source of the date, for a person: ``calibration_due``, ``calibrated_at 2026-02-20
    + 365 days``, ``calibration event 2026-06-01 + 365 days``."""
    last_calibrated: float | None


def calibration_due(meta: Mapping[str, Any], events: Iterable[EventRecord],
                    profile: Profile | None,
                    problems: list[Anomaly] | None = None) -> CalibrationDue | None:
    """A device's calibration due date from its metadata, its events and its profile; the
    one computation behind the ``calibration_overdue`` check and the report's due column.

    The meta's own due date is its ``calibration_due`` (a lab may set one shorter than the
    profile's interval), else its ``calibrated_at`` plus the profile's
    ``calibration_interval_days``; a ``calibration`` event newer than the meta's
    ``calibrated_at`` is a recalibration the meta has not caught up with, due after the
    interval. The later due date wins: each source can only lag the truth. A newer event
    on a profile without an interval leaves the due date unknown (None) rather than a
    stale one. Malformed dates are appended to ``problems`` as ``metadata_invalid``."""
    problems = [] if problems is None else problems
    calibrated_at = _date_key(meta, "calibrated_at", problems)
    due_at = _date_key(meta, "calibration_due", problems)
    last_event = max((e.ts for e in events if e.type == "calibration"), default=None)
    interval = (profile.calibration_interval_days * DAY
                if profile is not None and profile.calibration_interval_days else None)
    sources: list[tuple[float, str]] = []
    if due_at is not None:
        sources.append((due_at, "calibration_due"))
    elif calibrated_at is not None and interval:
        sources.append((calibrated_at + interval, f"calibrated_at {_day(calibrated_at)} + "
                        f"{interval / DAY:g} days"))
    if last_event is not None and (calibrated_at is None or last_event > calibrated_at + DAY):
        if not interval:
            return None
        sources.append((last_event + interval, f"calibration event {_day(last_event)} + "
                        f"{interval / DAY:g} days"))
    if not sources:
        return None
    due, basis = max(sources)
    last = max((t for t in (calibrated_at, last_event) if t is not None), default=None)
    return CalibrationDue(due, basis, last)


def _calibration_checks(history: DeviceHistory, profile: Profile | None,
                        now: float) -> list[Anomaly]:
    """Overdue when the due date (``calibration_due``, every source considered) is past."""
    problems: list[Anomaly] = []
    found = calibration_due(history.latest, history.events, profile, problems)
    if found is None or found.due >= now:
        return problems
    last = found.last_calibrated
    problems.append(Anomaly(CALIBRATION_OVERDUE,
                            f"calibration was due {_day(found.due)} ({found.basis}), "
                            f"{duration(now - found.due)} ago"
                            + (f"; last calibrated {_day(last)}" if last else ""),
                            key=f"due {_day(found.due)}", since=found.due))
    return problems


def _installation_checks(history: DeviceHistory, now: float,
                         policy: MetadataPolicy) -> list[Anomaly]:
    problems: list[Anomaly] = []
    installed = _date_key(history.latest, "installed_at", problems)
    if installed is None:
        return problems
    if installed > now + policy.grace_s:
        problems.append(Anomaly(INSTALLED_IN_FUTURE,
                                f"installed_at {_day(installed)} is in the future",
                                key=_day(installed)))
    # Telemetry before a recorded replacement or relocation belongs to the previous unit
    # or place, so it cannot contradict this installation date.
    elif (history.first_telemetry is not None
          and installed > history.first_telemetry + policy.grace_s
          and not any(e.type in ("replacement", "relocation")
                      and e.ts <= installed + policy.grace_s for e in history.events)):
        problems.append(Anomaly(INSTALLED_AFTER_TELEMETRY,
                                f"installed_at {_day(installed)} is after its first reading "
                                f"({iso(history.first_telemetry)})", key=_day(installed)))
    return problems


def _silence_checks(history: DeviceHistory, profile: Profile | None, now: float,
                    policy: MetadataPolicy) -> list[Anomaly]:
    if profile is None or history.interval_s is None:
        return []
    last = history.last_telemetry
    if last is None:
        if not history.versions:
            return []
        last = history.versions[0].first_seen  # announced itself, never reported
    limit = max(policy.silent_after_intervals * history.interval_s, policy.silent_min_s)
    quiet = now - last
    if quiet <= limit:
        return []
    return [Anomaly(DEVICE_SILENT,
                    f"no reading for {duration(quiet)} (last {iso(last)}); it reports every "
                    f"{history.interval_s:g} s, and silence beyond {duration(limit)} is "
                    f"flagged", key=f"since {iso(last)}", since=last)]


def _date_key(meta: Mapping[str, Any], key: str, problems: list[Anomaly]) -> float | None:
    """A date-valued meta key as epoch seconds; a malformed one becomes metadata_invalid."""
    value = meta.get(key)
    if value is None:
        return None
    try:
        return parse_date(value)
    except ValueError as exc:
        problems.append(Anomaly(METADATA_INVALID, f"{key}: {exc}", key=f"{key}={value!r}"))
        return None


_EPOCH_MS_LIKELY = 1e11
"""Epoch seconds beyond this are past the year 5138: a value in milliseconds, not a date."""


def parse_date(value: object) -> float:
    """A meta date: ``2025-03-01`` (UTC midnight), RFC 3339 text, or epoch seconds."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a date")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("epoch seconds must be finite")
        if value > _EPOCH_MS_LIKELY:
            raise ValueError(f"{value!r} is too large for epoch seconds (milliseconds?)")
        if value < 0:
            raise ValueError(f"{value!r} is before 1970")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a date such as 2025-03-01, not {type(value).__name__}")
    text = value.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            moment = datetime(d.year, d.month, d.day, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a date such as 2025-03-01") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ts = moment.timestamp()
    if ts < 0:
        raise ValueError(f"{text[:40]!r} is before 1970")
    return ts


def _day(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).date().isoformat() if ts is not None else "?"


# --------------------------------------------------------------------------- findings


def identity(found: Sequence[Anomaly]) -> list[list[str]]:
    """What a metadata finding stands for: (name, key) pairs, in order. Two audits whose
    identities are equal raise nothing new."""
    return [[a.name, a.key] for a in found]


def metadata_finding(device: str, site: str, found: Sequence[Anomaly], now: float) -> Finding:
    """One device's metadata verdict: ``fail`` with each anomaly a cause, or ``pass`` (the
    anomalies are gone)."""
    severity = worst_severity(a.severity for a in found)
    since = min((a.since for a in found if a.since is not None), default=None)
    return Finding(
        kind="metadata", site=site, device=device, sensor=None,
        status="fail" if found else "pass", severity=severity,
        window_start=now, window_end=now,
        causes=tuple(Cause(a.name, 1.0, a.evidence) for a in found),
        onset=since,
        context={"anomalies": identity(found)},
        action=" ".join(dict.fromkeys(entry.action for a in found
                                      if (entry := cause_spec(a.name)) and entry.action)),
    )


def needs_saving(previous: Finding | None, found: Sequence[Anomaly]) -> bool:
    """Whether this audit's metadata verdict on a device is news: the first anomaly, a
    changed set of anomalies, or their end. A clean device with no history says nothing."""
    if previous is None:
        return bool(found)
    before = previous.context.get("anomalies", [])
    return [list(x) for x in before] != identity(found)
