"""Cohorts across sites: devices sharing a model and firmware (or hardware revision, or
installation month) that fail the same way at several sites. Pure.

No single gateway can see such a cohort when each of its sites holds one member; the fleet
can. For every model and sensor, the population is the devices whose latest verdict on that
sensor is reliable (``references.unreliable``: not their reference's fault) and either
passes or fails; for every failure mode in it (the first cause that names a mechanism:
``offset_drift``, ``noise``, ...), each cohort of the population is tested against the rest
of the model's fleet with Fisher's exact test (``core.cohorts.tested_cohorts``, the one
definition the gateways use too). All the p-values of every model, sensor and mode are then
corrected together (Holm by default, Benjamini-Hochberg on request), so a fleet of
thousands of devices and hundreds of firmware versions does not produce chance cohorts.

A significant cohort is reported when its failing members are at two sites or more (one
site's cohort is its gateway's to report) and when it is not the same failures as a more
significant cohort under another attribute: tested again without that cohort's members, it
must still be significant (eight devices that share firmware 2.4.0 and also an installation
month are one finding, named by its most significant attribute). Beside a
firmware cohort stands the change that preceded it: the version its members ran before, and
when they changed.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from auditd.core.cohorts import (
    ALPHA,
    FIRMWARE,
    MIN_COHORT,
    Cohort,
    Correction,
    Member,
    bh_adjusted,
    firmware_timing,
    fisher_p,
    holm_adjusted,
)
from auditd.fleet.analysis.facts import Device, FirmwareSeen, Verdict
from auditd.fleet.analysis.references import unreliable

ATTRIBUTES = (FIRMWARE, "hardware_rev", "installed")
"""What fleet cohorts are formed on (all within one model); not the site, which is a
gateway's business, and not the model, which is the population."""
ATTRIBUTIONS = frozenset({"firmware_regression", "cohort_outlier"})
"""Causes that say who is to blame, not how the device fails: skipped when naming the mode."""
MIN_SITES = 2
SLACK_S = 3600.0
"""An onset this long before a member's update still follows it (as the gateways judge)."""

Key = tuple[str, str]
"""(site, device): device ids are unique within a site."""


@dataclass(frozen=True, slots=True)
class FirmwareChange:
    """The change that preceded a firmware cohort: the version most members ran before, and
    the span of the times they changed."""

    from_version: str | None
    to_version: str
    first: float
    last: float
    following: int
    """Failing members whose deviation began after their update."""


@dataclass(frozen=True, slots=True)
class MemberTimeline:
    """One failing member on the cohort's timeline: when it changed to the cohort's
    firmware, when its deviation began, and the window its verdict covers."""

    site: str
    device: str
    changed_at: float | None
    onset: float | None
    window_start: float
    window_end: float


@dataclass(frozen=True, slots=True)
class FleetCohort:
    model: str
    sensor: str
    cause: str
    attribute: str
    value: str
    """The attribute's value without the model (``2.4.0``, ``B``, ``2025-03``)."""
    members: tuple[Key, ...]
    """The failing members."""
    healthy: tuple[Key, ...]
    rest_failing: int
    rest_size: int
    p: float
    p_adjusted: float
    correction: Correction
    change: FirmwareChange | None = None
    regression: bool = False
    """A firmware cohort whose timing agrees (``core.cohorts.Cohort.regression``)."""
    timeline: tuple[MemberTimeline, ...] = ()

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(sorted({site for site, _ in self.members}))

    @property
    def firmware(self) -> str | None:
        return self.value if self.attribute == FIRMWARE else None


def failure_mode(v: Verdict) -> str | None:
    """How a failing verdict fails: its first cause that names a mechanism."""
    if v.status != "fail":
        return None
    for cause in v.causes:
        if cause not in ATTRIBUTIONS:
            return cause
    return v.causes[0] if v.causes else "unexplained"


def _installed(device: Device) -> str | None:
    return device.installed_at[:7] if device.installed_at else None


def firmware_history(seen: Iterable[FirmwareSeen]) -> dict[Key, list[FirmwareSeen]]:
    out: dict[Key, list[FirmwareSeen]] = {}
    for s in seen:
        out.setdefault((s.site, s.device), []).append(s)
    for versions in out.values():
        versions.sort(key=lambda s: s.first_seen)
    return out


def last_change(history: Sequence[FirmwareSeen], current: str | None
                ) -> tuple[str | None, float | None]:
    """(the firmware before ``current``, when ``current`` was first seen after it); (None,
    first seen) when the device never ran anything else; (None, None) when unknown."""
    since: float | None = None
    for s in reversed(history):
        if s.firmware is None:
            continue
        if s.firmware != current:
            return s.firmware, since
        since = s.first_seen
    return None, since


def population(verdicts: Iterable[Verdict], devices: Mapping[Key, Device],
               drifting: Iterable[tuple[str, str, str]] = ()
               ) -> dict[tuple[str, str], list[tuple[Verdict, Device]]]:
    """(model, sensor) -> the reliable, decided calibration verdicts of its devices."""
    drifting = frozenset(drifting)
    out: dict[tuple[str, str], list[tuple[Verdict, Device]]] = {}
    for v in verdicts:
        device = devices.get(v.key)
        if (v.kind != "calibration" or v.sensor is None or v.comparison == "cohort"
                or v.status not in ("pass", "fail") or device is None or not device.model
                or unreliable(v, drifting)):
            continue
        out.setdefault((device.model, v.sensor), []).append((v, device))
    return out


@dataclass(frozen=True, slots=True)
class _Tried:
    """One cohort tested: counts only, until it proves significant."""

    model: str
    sensor: str
    mode: str
    attribute: str
    value: str
    failing: int
    size: int
    failing_total: int
    total: int
    p: float


def _attributes(d: Device) -> dict[str, str]:
    model = d.model or ""
    installed = _installed(d)
    out = {}
    if d.firmware:
        out[FIRMWARE] = f"{model} {d.firmware}"
    if d.hardware_rev:
        out["hardware_rev"] = f"{model} {d.hardware_rev}"
    if installed:
        out["installed"] = f"{model} {installed}"
    return out


def fleet_cohorts(verdicts: Iterable[Verdict], devices: Iterable[Device],
                  firmware_seen: Iterable[FirmwareSeen],
                  drifting: Iterable[tuple[str, str, str]] = (), *, alpha: float = ALPHA,
                  correction: Correction = "holm") -> list[FleetCohort]:
    """The cross-site cohorts, most significant first.

    Counted, not enumerated: a fleet of 40,000 devices is a few counters per model and
    sensor; members are listed only for the cohorts that turn out significant."""
    by_key = {d.key: d for d in devices}
    history = firmware_history(firmware_seen)
    pops = population(verdicts, by_key, drifting)
    tried: list[_Tried] = []
    per_device = {key: _attributes(d) for key, d in by_key.items() if d.model}
    for (model, sensor), pop in sorted(pops.items()):
        attributes = [per_device[d.key] for _, d in pop]
        modes = [failure_mode(v) for v, _ in pop]
        sizes = Counter(item for a in attributes for item in a.items())
        for mode, failing_total in sorted(Counter(m for m in modes if m).items()):
            fails = Counter(item for a, m in zip(attributes, modes, strict=True) if m == mode
                            for item in a.items())
            for (attribute, value), size in sorted(sizes.items()):
                if size < MIN_COHORT or size == len(pop):
                    continue
                failing = fails.get((attribute, value), 0)
                rest_failing = failing_total - failing
                p = fisher_p(failing, size - failing, rest_failing,
                             len(pop) - size - rest_failing)
                tried.append(_Tried(model, sensor, mode, attribute, value, failing, size,
                                    failing_total, len(pop), p))
    if not tried:
        return []
    order = sorted(range(len(tried)), key=lambda i: tried[i].p)
    sorted_p = [tried[i].p for i in order]
    adjusted = holm_adjusted(sorted_p) if correction == "holm" else bh_adjusted(sorted_p)
    out: list[FleetCohort] = []
    for rank, i in enumerate(order):
        t = tried[i]
        if adjusted[rank] > alpha:
            break  # adjusted p-values are monotone in this order
        if t.failing < MIN_COHORT:
            continue
        pop = pops[(t.model, t.sensor)]
        cohort = _cohort(t, pop, history)
        found = _fleet_cohort(t.model, t.sensor, t.mode, cohort, adjusted[rank], correction,
                              pop, history)
        if len(found.sites) < MIN_SITES or _explained(found, t, adjusted[rank], out, pop,
                                                      alpha):
            continue
        out.append(found)
    return out


def _member(v: Verdict, d: Device, mode: str,
            history: Mapping[Key, Sequence[FirmwareSeen]]) -> Member:
    _, since = last_change(history.get(d.key, ()), d.firmware)
    return Member(f"{d.site}/{d.device}", failure_mode(v) == mode, v.onset, v.window_start,
                  _attributes(d), since, onset_uncertainty_s=v.onset_uncertainty_s,
                  onset_dated=v.onset_dated)


def _key(member: str) -> Key:
    site, _, device = member.partition("/")
    return site, device


def _cohort(t: _Tried, pop: Sequence[tuple[Verdict, Device]],
            history: Mapping[Key, Sequence[FirmwareSeen]]) -> Cohort:
    """The tested cohort with its members, and for a firmware, their timing."""
    group = [_member(v, d, t.mode, history) for v, d in pop
             if _attributes(d).get(t.attribute) == t.value]
    following, exonerating = (firmware_timing(group, SLACK_S) if t.attribute == FIRMWARE
                              else ((), ()))
    rest_failing = t.failing_total - t.failing
    return Cohort(t.attribute, t.value, tuple(sorted(m.device for m in group if m.failed)),
                  tuple(sorted(m.device for m in group if not m.failed)), rest_failing,
                  t.total - t.size - rest_failing, t.p, t.p, following, exonerating)


def _explained(found: FleetCohort, t: _Tried, p_adjusted: float,
               reported: Sequence[FleetCohort], pop: Sequence[tuple[Verdict, Device]],
               alpha: float) -> bool:
    """A cohort whose failures a more significant one (same model, sensor and mode) already
    accounts for: tested again without that cohort's members (with the same correction
    factor), it is no longer significant. Eight devices that share firmware 2.4.0 and also
    an installation month are one finding, named by its most significant attribute."""
    same = [r for r in reported if (r.model, r.sensor, r.cause) == (found.model, found.sensor,
                                                                    found.cause)]
    if not same:
        return False
    taken = {key for r in same for key in r.members}
    if set(found.members) <= taken:
        return True
    inside = [failure_mode(v) == t.mode for v, d in pop if v.key not in taken
              and _attributes(d).get(t.attribute) == t.value]
    outside = [failure_mode(v) == t.mode for v, d in pop if v.key not in taken
               and _attributes(d).get(t.attribute) != t.value]
    p = fisher_p(sum(inside), len(inside) - sum(inside), sum(outside),
                 len(outside) - sum(outside))
    factor = p_adjusted / t.p if t.p > 0 else 1.0
    return p * factor > alpha


def _fleet_cohort(model: str, sensor: str, mode: str, cohort: Cohort, p_adjusted: float,
                  correction: Correction, pop: Sequence[tuple[Verdict, Device]],
                  history: Mapping[Key, Sequence[FirmwareSeen]]) -> FleetCohort:
    value = cohort.value.removeprefix(f"{model} ")
    members = tuple(_key(m) for m in cohort.failing)
    verdicts = {v.key: v for v, _ in pop}
    devices = {d.key: d for _, d in pop}
    change = None
    timeline = []
    befores, times = [], []
    for key in members:
        before, at = last_change(history.get(key, ()), devices[key].firmware)
        if cohort.attribute == FIRMWARE and before is not None and at is not None:
            befores.append(before)
            times.append(at)
        v = verdicts[key]
        timeline.append(MemberTimeline(key[0], key[1], at, v.onset, v.window_start,
                                       v.window_end))
    if times:
        change = FirmwareChange(statistics.mode(befores), value, min(times), max(times),
                                len(cohort.following))
    return FleetCohort(model, sensor, mode, cohort.attribute, value, members,
                       tuple(_key(m) for m in cohort.healthy), cohort.rest_failing,
                       cohort.rest_failing + cohort.rest_healthy, cohort.p, p_adjusted,
                       correction, change, cohort.regression, tuple(timeline))


