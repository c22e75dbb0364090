"""Alert lifecycle: from one verdict per audit to a few alerts a person can trust.

A finding is a verdict on one window; an alert is a fault someone has to act on. Between
the two stand three rules, all pure functions of their inputs (no store, no clock):

* **Hysteresis** (:func:`step`). Each (kind, device, sensor) stream has a :class:`Track`
  that moves ``ok -> suspect -> open -> acknowledged -> resolved``. It opens after
  ``open_after`` consecutive failing audits and resolves after ``resolve_after``
  consecutive passing ones, so a sensor that fails every other audit opens at most once
  and, once open, does not close and reopen all day. ``insufficient_data`` holds the
  state: no data is neither evidence of a fault nor of its repair.
* **Escalation, not duplication.** A failing audit of an open alert whose severity (the
  finding's own, already weighted by its profile's impact when the audit made it) rises
  above the highest it has reached escalates that alert; it never opens a second one.
* **Grouping and inhibition** (:func:`group_members`, after Alertmanager). A *root*
  finding (its top cause has a ``group`` in the cause registry, ``core.causes``, and its
  ``context.members`` names devices) takes over the alerts of the members that name the
  same cause: they are tracked, but their tickets are held back and the root's ticket
  lists them. A new root cause needs a ``group`` on its registry entry, no code here.

:func:`plan` applies all three to one audit's findings, given the tracks, alerts and
silences the store holds, and returns what to write back in the audit's transaction:
new tracks, alert records and ticket requests (see ``auditd.domain.tickets`` for their form).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any, Literal

from auditd.core.causes import REGISTRY, ROOT_CAUSES
from auditd.model import SEVERITY_RANK, AlertPolicy, Finding, Severity, Status, iso

State = Literal["ok", "suspect", "open", "acknowledged", "resolved"]
Event = Literal["open", "escalate", "resolve", "cause"]
"""``cause``: an open alert's cause followed the latest evidence (``AlertPolicy.cause_after``)."""

ACTIVE: frozenset[str] = frozenset({"open", "acknowledged"})
"""Alert states that still need someone: ``findings`` lists them."""


DEFAULT_POLICY = AlertPolicy()

CHANGE_KINDS: frozenset[str] = frozenset({"metadata"})
"""Finding kinds saved when they change, not at every audit (a metadata anomaly is saved
once, when it appears, and once more when it ends). The auditor hands the alerts each
failing one again at every later run while it stands (``plan``'s ``standing``), so that
its alert opens once it has been seen in ``AlertPolicy.metadata_after`` runs (one stray
message is data quality, not a trip), or at once when it matters (a firmware anomaly on
a device drifting after a firmware change, ``matters``); its end, saved once, resolves it."""

HEALTH = "health"
"""``context`` key of a passing calibration finding: ``confirmed`` when every judged
metric's interval lies inside tolerance, ``unconfirmed`` when the window did not fail but
did not show health either (``core.checks.unconfirmed_checks``)."""
UNCONFIRMED = "unconfirmed"
LEANING = "leaning"
"""``context`` key of an unconfirmed pass: ``fault`` when its estimates (not their
intervals) lie beyond tolerance, ``health`` otherwise."""


def confirmed(finding: Finding) -> bool:
    """Whether a finding is evidence of health: a pass not marked unconfirmed (a finding
    saved before the mark existed, a metadata end, a root no longer raised all are)."""
    return finding.status == "pass" and finding.context.get(HEALTH) != UNCONFIRMED


# --------------------------------------------------------------------------- one stream


@dataclass(frozen=True, slots=True)
class Observation:
    """What one audit says about one stream, as the lifecycle needs it."""

    at: float
    status: Status
    severity: Severity = "none"
    cause: str | None = None
    confirmed: bool = True
    """For a pass: the window showed health (every interval inside tolerance). An
    unconfirmed pass neither counts towards resolving an alert nor closes it..."""
    leaning_fault: bool = False
    """...and, before an alert opened, holds the failing streak only if its estimates lie
    beyond tolerance; one that leans towards health ends it, as a pass always did."""
    window_s: float = 0.0
    """The audited window's length: a new cause must hold over that long (new data, not
    the same data re-judged an hour later) before an open alert's cause follows it."""


@dataclass(frozen=True, slots=True)
class Track:
    """The lifecycle state of one stream between audits."""

    state: State = "ok"
    fails: int = 0
    """Consecutive failing audits (``insufficient_data`` neither counts nor breaks it)."""
    passes: int = 0
    """Consecutive passing audits while an alert is open or acknowledged."""
    since: float | None = None
    """When the current failing streak began."""
    severity: Severity = "none"
    peak: Severity = "none"
    """The highest severity the current alert has reached: escalation means above it."""
    cause: str | None = None
    """The top cause when the alert opened: it names the alert and its ticket."""
    opened_at: float | None = None
    alert: str | None = None
    """Id of the current (or last) alert."""
    pending: str | None = None
    """A top cause other than ``cause`` that the latest failing audits named..."""
    pending_count: int = 0
    """...in this many of them in a row: at ``cause_after`` the alert's cause follows..."""
    pending_since: float | None = None
    """...once they also span a window (``Observation.window_s``) since the first."""


def step(track: Track, obs: Observation, policy: AlertPolicy) -> tuple[Track, Event | None]:
    """One audit's verdict applied to one stream's track: the new track and what happened.

    Failing needs evidence of a fault, resolving evidence of health: a pass that is not
    confirmed (``Observation.confirmed``), like ``insufficient_data``, holds an open alert
    where it is, so one drift that wanders about its tolerance is one alert; before an
    alert opened it holds the failing streak only when it leans towards the fault."""
    if obs.status == "fail":
        return _on_fail(track, obs, policy)
    if obs.status == "pass" and (obs.confirmed or track.state not in ACTIVE) and not (
            track.state == "suspect" and not obs.confirmed and obs.leaning_fault):
        return _on_pass(track, policy)
    return track, None


def _on_fail(track: Track, obs: Observation, policy: AlertPolicy) -> tuple[Track, Event | None]:
    fails = track.fails + 1
    if track.state in ACTIVE:
        followed, changed = _follow_cause(track, obs, policy)
        if SEVERITY_RANK[obs.severity] > SEVERITY_RANK[track.peak]:
            return replace(followed, state="open", fails=fails, passes=0,
                           severity=obs.severity, peak=obs.severity), "escalate"
        return (replace(followed, fails=fails, passes=0, severity=obs.severity),
                "cause" if changed else None)
    since = track.since if track.state == "suspect" and track.since is not None else obs.at
    if fails >= policy.open_after:
        return Track(state="open", fails=fails, passes=0, since=since, severity=obs.severity,
                     peak=obs.severity, cause=obs.cause, opened_at=obs.at,
                     alert=track.alert), "open"
    return replace(track, state="suspect", fails=fails, passes=0, since=since,
                   severity=obs.severity, cause=obs.cause), None


def _follow_cause(track: Track, obs: Observation,
                  policy: AlertPolicy) -> tuple[Track, bool]:
    """The alert's cause after a failing audit naming ``obs.cause``, with hysteresis: a new
    top cause is taken once ``cause_after`` failing audits in a row have named it *and*
    they span the audited window (a slowly growing offset that first looked like gain
    becomes ``offset_drift`` once a whole window of new data says so); a failing audit
    with no cause, or naming the current one, changes nothing and clears the candidate.

    Why a window and not only a count: hourly audits of a day's window judge the same data
    23 times out of 24, and a cause that two of them name is the same evidence read
    twice. A unit's day and night look different (sun on the enclosure by day, scatter
    at night), and its alert's cause took turns with them: 187 changes in the EPA month."""
    cause = obs.cause
    if cause is None or cause == track.cause:
        return replace(track, pending=None, pending_count=0, pending_since=None), False
    if track.pending == cause and track.pending_since is not None:
        count, since = track.pending_count + 1, track.pending_since
    else:
        count, since = 1, obs.at
    if count >= policy.cause_after and obs.at - since >= obs.window_s:
        return replace(track, cause=cause, pending=None, pending_count=0,
                       pending_since=None), True
    return replace(track, pending=cause, pending_count=count, pending_since=since), False


def _on_pass(track: Track, policy: AlertPolicy) -> tuple[Track, Event | None]:
    if track.state in ACTIVE:
        passes = track.passes + 1
        if passes >= policy.resolve_after:
            return replace(track, state="resolved", fails=0, passes=passes, since=None,
                           severity="none"), "resolve"
        return replace(track, fails=0, passes=passes), None
    if track.state == "suspect":
        return replace(track, state="ok", fails=0, passes=0, since=None, severity="none"), None
    return replace(track, fails=0), None


def acknowledge(track: Track) -> Track:
    """An operator has taken an open alert: no reminders; an escalation reopens it."""
    return replace(track, state="acknowledged") if track.state == "open" else track


# --------------------------------------------------------------------------- grouping


@dataclass(frozen=True, slots=True, order=True)
class StreamKey:
    kind: str
    device: str
    sensor: str
    """'' when the finding is about a device, not one of its sensors."""

    @classmethod
    def of(cls, finding: Finding) -> StreamKey:
        return cls(finding.kind, finding.device, finding.sensor or "")

    def text(self) -> str:
        return f"{self.kind}/{self.device}/{self.sensor or '-'}"


def root_cause(finding: Finding) -> str | None:
    """The root cause a failing finding stands for, if it is a root (names its members)."""
    if finding.status != "fail" or not finding.causes:
        return None
    cause = finding.causes[0].cause
    rule = ROOT_CAUSES.get(cause)
    if rule is None or not isinstance(finding.context.get(rule.members_key), list):
        return None
    return cause


def members_of(finding: Finding) -> tuple[str, ...]:
    cause = root_cause(finding)
    if cause is None:
        return ()
    return tuple(str(d) for d in finding.context[ROOT_CAUSES[cause].members_key])


def group_members(findings: Sequence[Finding]) -> dict[StreamKey, StreamKey]:
    """Member stream -> its root stream, for one audit's findings.

    A member is a failing finding of a device the root lists (at the same site and of the
    same sensor where the rule says so) that names the root's cause among its own, unless
    a cause of the device's own readings comes before it (``CauseSpec.device_own``): a
    device frozen or sending impossible values beside a reference fault stays its own
    alert, with its own ticket.
    """
    roots = [f for f in findings if root_cause(f) is not None]
    out: dict[StreamKey, StreamKey] = {}
    for root in roots:
        cause = root_cause(root)
        assert cause is not None
        rule = ROOT_CAUSES[cause]
        members = set(members_of(root))
        for f in findings:
            if (f is root or f.status != "fail" or f.device not in members
                    or (rule.same_site and f.site != root.site)
                    or (rule.same_sensor and f.sensor != root.sensor)
                    or all(c.cause != cause for c in f.causes)
                    or _own_first(f, cause)):
                continue
            out.setdefault(StreamKey.of(f), StreamKey.of(root))
    return out


def _own_first(finding: Finding, root: str) -> bool:
    """A cause of the device's own readings is named before the root's cause."""
    for c in finding.causes:
        if c.cause == root:
            return False
        entry = REGISTRY.get(c.cause)
        if entry is not None and entry.device_own:
            return True
    return False


# --------------------------------------------------------------------------- silences


@dataclass(frozen=True, slots=True)
class Silence:
    """Hold back tickets for matching alerts until ``until``; the lifecycle goes on."""

    id: int
    device: str
    """An fnmatch glob of device ids (``th-north-*``), or one id."""
    sensor: str | None
    until: float
    created_at: float
    created_by: str | None = None
    reason: str | None = None

    def active(self, now: float) -> bool:
        return self.until > now

    def matches(self, device: str, sensor: str | None) -> bool:
        return fnmatchcase(device, self.device) and (self.sensor is None
                                                     or self.sensor == (sensor or ""))


def silenced(silences: Sequence[Silence], device: str, sensor: str | None,
             now: float) -> Silence | None:
    """The active silence that covers a stream, the one lasting longest."""
    hits = [s for s in silences if s.active(now) and s.matches(device, sensor)]
    return max(hits, key=lambda s: s.until, default=None)


# --------------------------------------------------------------------------- alerts


@dataclass(frozen=True, slots=True)
class CauseChange:
    """An open alert's cause following the latest evidence: its history, shown."""

    at: float
    before: str | None
    after: str | None

    def to_json(self) -> dict[str, Any]:
        return {"at": iso(self.at), "from": self.before, "to": self.after}


@dataclass(frozen=True, slots=True)
class Alert:
    """One episode of a fault on one stream, from opening to resolution."""

    id: str
    kind: str
    site: str
    device: str
    sensor: str | None
    cause: str | None
    opened_at: float
    state: State
    severity: Severity
    peak: Severity
    updated_at: float
    finding: Finding
    """The latest finding of the stream while the alert lives."""
    resolved_at: float | None = None
    group: str | None = None
    """The root stream (``StreamKey.text``) whose alert stands for this one."""
    members: tuple[str, ...] = ()
    """Devices a root alert stands for."""
    notified: bool = False
    """An ``open`` ticket was requested; until then no escalation or resolution is sent."""
    acked_at: float | None = None
    acked_by: str | None = None
    note: str | None = None
    history: tuple[CauseChange, ...] = ()
    """Every change of ``cause`` since it opened, oldest first (``cause`` is the latest)."""

    @property
    def key(self) -> StreamKey:
        return StreamKey(self.kind, self.device, self.sensor or "")

    @property
    def unconfirmed(self) -> bool:
        """Still open, but the latest audit neither failed nor showed health: the alert
        waits for evidence either way (``confirmed``)."""
        return (self.state in ACTIVE and self.finding.status == "pass"
                and not confirmed(self.finding))


def alert_id(device: str, sensor: str | None, cause: str | None, opened_at: float) -> str:
    """Deterministic id of an alert (and of its ticket): the same device, sensor, cause and
    opening time give the same id, in any process, after any restart."""
    text = f"{device}\x1f{sensor or ''}\x1f{cause or ''}\x1f{round(opened_at * 1000)}"
    return "sa-" + hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class TicketRequest:
    """An alert event to announce to the ticket sinks (``auditd.domain.tickets`` shapes it)."""

    alert: Alert
    event: Event
    at: float
    members: tuple[Mapping[str, Any], ...] = ()
    """For a root alert: each member finding's device, sensor, status and top cause."""

    @property
    def idempotency_key(self) -> str:
        """One key per request: the alert's id and the event (an escalation names the
        severity it reached, so a second escalation is not taken for a retry of the first)."""
        suffix = (f"escalate-{self.alert.peak}" if self.event == "escalate"
                  else f"cause-{len(self.alert.history)}" if self.event == "cause"
                  else self.event)
        return f"{self.alert.id}/{suffix}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the store holds before an audit's alerts are applied."""

    tracks: Mapping[StreamKey, Track] = field(default_factory=dict)
    alerts: Mapping[str, Alert] = field(default_factory=dict)
    silences: tuple[Silence, ...] = ()


@dataclass(frozen=True, slots=True)
class Changes:
    """What one audit changes: written back in the audit's transaction."""

    tracks: Mapping[StreamKey, tuple[str, Track]] = field(default_factory=dict)
    """Stream -> (site, new track)."""
    alerts: tuple[Alert, ...] = ()
    tickets: tuple[TicketRequest, ...] = ()
    events: tuple[tuple[str, Event], ...] = ()
    """(alert id, event) of every lifecycle event, announced or held back."""


PolicyFor = Callable[[Finding], AlertPolicy]


def plan(snapshot: Snapshot, findings: Sequence[Finding], now: float,
         policy_for: PolicyFor = lambda f: DEFAULT_POLICY) -> Changes:
    """One audit's findings through the lifecycle, grouping and silences.

    A ticket is requested when an alert opens, escalates or resolves, unless it is held
    back: a member of a group (its root speaks for it) or a silenced alert gets none, and
    an alert never announced gets no escalation or resolution either. An alert that was
    held back, and still fails when nothing holds it any more, is announced then, once.
    """
    implicit = _roots_gone(snapshot, findings, now)
    findings = [*findings, *implicit.values()]
    groups = group_members(findings)
    urgent = {StreamKey.of(f) for f in findings if matters(f, findings)}
    member_findings: dict[StreamKey, list[Finding]] = {}
    for f in findings:
        if StreamKey.of(f) in groups:
            member_findings.setdefault(groups[StreamKey.of(f)], []).append(f)
    tracks: dict[StreamKey, tuple[str, Track]] = {}
    alerts: list[Alert] = []
    tickets: list[TicketRequest] = []
    events: list[tuple[str, Event]] = []
    for finding in findings:
        key = StreamKey.of(finding)
        policy = policy_for(finding)
        if finding.kind in CHANGE_KINDS:
            policy = replace(policy, open_after=1 if key in urgent else policy.metadata_after,
                             resolve_after=1)
        obs = Observation(now, finding.status, finding.severity,
                          finding.causes[0].cause if finding.causes else None,
                          confirmed=finding.status != "pass" or confirmed(finding),
                          leaning_fault=finding.context.get(LEANING) == "fault",
                          window_s=max(finding.window_end - finding.window_start, 0.0))
        before = snapshot.tracks.get(key, Track())
        track, event = step(before, obs, policy)
        current = snapshot.alerts.get(track.alert) if track.alert else None
        if event == "open":
            opened_at = now if track.opened_at is None else track.opened_at
            ident = alert_id(finding.device, finding.sensor, track.cause, opened_at)
            track = replace(track, alert=ident)
            current = Alert(id=ident, kind=finding.kind, site=finding.site,
                            device=finding.device, sensor=finding.sensor, cause=track.cause,
                            opened_at=opened_at, state="open", severity=track.severity,
                            peak=track.peak, updated_at=now, finding=finding)
        tracks[key] = (finding.site, track)
        if current is None or (current.state == "resolved" and event is None):
            continue
        root = groups.get(key)
        alert = replace(
            current, state=track.state if track.state != "ok" else current.state,
            severity=track.severity if track.state in ACTIVE else current.severity,
            peak=track.peak, updated_at=now,
            finding=finding if finding.status != "insufficient_data"
            and key not in implicit else current.finding,
            resolved_at=now if event == "resolve" else current.resolved_at,
            group=root.text() if root is not None else None,
            members=members_of(finding) if root_cause(finding) else current.members)
        recaused = (event != "open" and track.state in ACTIVE and before.state in ACTIVE
                    and track.cause != current.cause)
        if recaused:
            alert = replace(alert, cause=track.cause, history=(
                *current.history, CauseChange(now, current.cause, track.cause)))
        if event is not None:
            events.append((alert.id, event))
        if recaused and event != "cause":
            events.append((alert.id, "cause"))
        held = root is not None or silenced(snapshot.silences, alert.device, alert.sensor,
                                            now) is not None
        announce: Event | None = None
        if event == "resolve":
            announce = "resolve" if alert.notified else None
        elif alert.state == "open" and not held and finding.status == "fail":
            announce = "open" if not alert.notified else "escalate" if event == "escalate" \
                else "cause" if recaused else None
        elif recaused and alert.notified and not held:
            announce = "cause"  # acknowledged: whoever took it needs the new runbook
        if announce == "open" and obs.cause is not None and obs.cause != alert.cause:
            # held back while its cause changed (a member whose root is gone): its first
            # ticket names what the evidence shows now, and the alert's history says so
            alert = replace(alert, cause=obs.cause, history=(
                *alert.history, CauseChange(now, alert.cause, obs.cause)))
            tracks[key] = (finding.site, replace(track, cause=obs.cause, pending=None,
                                                 pending_count=0))
        if announce is not None:
            alert = replace(alert, notified=True)
            tickets.append(TicketRequest(alert, announce, now, tuple(
                _member_view(m) for m in member_findings.get(key, []))))
        alerts.append(alert)
    return Changes(tracks=tracks, alerts=tuple(alerts), tickets=tuple(tickets),
                   events=tuple(events))


def matters(finding: Finding, findings: Sequence[Finding]) -> bool:
    """A metadata finding that needs no second run to open its alert: a firmware anomaly
    on a device whose calibration fails this run after a firmware change (the finding's
    ``firmware_change``, ``domain.metadata.context_for``)."""
    if finding.kind not in CHANGE_KINDS or finding.status != "fail" or not any(
            c.cause.startswith("firmware_") for c in finding.causes):
        return False
    return any(f.kind == "calibration" and f.status == "fail" and f.device == finding.device
               and "firmware_change" in f.context for f in findings)


def _roots_gone(snapshot: Snapshot, findings: Sequence[Finding],
                now: float) -> dict[StreamKey, Finding]:
    """A root that is no longer raised counts as passing.

    A root finding exists only while the group's evidence stands (a reference fault while
    its devices out-vote it; a firmware cohort while it regresses, then one ``pass``): its
    absence from an audit is the audit's word that the root is gone. Without this its
    alert could never collect the passes that resolve it."""
    seen = {StreamKey.of(f) for f in findings}
    out: dict[StreamKey, Finding] = {}
    for key, track in snapshot.tracks.items():
        alert = snapshot.alerts.get(track.alert) if track.alert else None
        if (key in seen or track.cause not in ROOT_CAUSES or alert is None
                or track.state not in ("suspect", "open", "acknowledged")):
            continue
        out[key] = Finding(kind=key.kind, site=alert.site, device=key.device,  # type: ignore[arg-type]
                           sensor=key.sensor or None, status="pass", severity="none",
                           window_start=now, window_end=now)
    return out


def _member_view(finding: Finding) -> dict[str, Any]:
    return {"device": finding.device, "sensor": finding.sensor, "status": finding.status,
            "severity": finding.severity,
            "cause": finding.causes[0].cause if finding.causes else None,
            "bias": finding.metrics.get("bias")}
