"""Cohorts: is one group of devices failing more than chance allows, and is it its firmware?

Pure: one sensor's verdicts with each device's attributes in, the cohorts whose failure
rate is significantly higher than the rest's out. A cohort is every device sharing one
value of one attribute (a firmware version of a model, a hardware revision, an
installation month, a site). Each cohort is compared with the rest of the population by
Fisher's exact test (one-sided: more failures), and the p-values of all cohorts tried are
corrected together by Holm's step-down method, because trying twenty cohorts makes one of
them look "significant" at 5 % by chance.

A significant firmware cohort is a ``firmware_regression`` only when the timing agrees:
its failing members' onsets follow their update, and no healthy device has run that
version for a whole window without failing (a fault that the same firmware does not
produce on a sibling is not the firmware's). See docs/metadata.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from scipy.stats import fisher_exact

from auditd.model import latest_start, timing_uncertainty

ALPHA = 0.05
Correction = Literal["holm", "bh"]
CORRECTIONS: dict[str, str] = {"holm": "Holm's correction",
                               "bh": "the Benjamini-Hochberg correction"}
FIRMWARE = "firmware"
ATTRIBUTES = ("model", FIRMWARE, "hardware_rev", "installed", "site")
"""The attributes cohorts are formed on, in the order they are reported."""
MIN_COHORT = 2
"""A cohort of one device is that device's own finding, not a pattern."""
FOLLOWING_SHARE = 2 / 3


@dataclass(frozen=True, slots=True)
class Member:
    """One audited stream, with what the device it belongs to was running."""

    device: str
    failed: bool
    onset: float | None
    window_start: float
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Attribute -> value; a firmware or hardware value already names its model
    (``th-200 2.4.0``), since versions of different models are different things."""
    firmware_since: float | None = None
    """When the device started running its current firmware."""
    updated: bool = False
    """The current firmware replaced another one (a roll-out the store saw), so that
    ``firmware_since`` is the moment of a change, not merely the device's first message."""
    observed: tuple[float, float] | None = None
    """The span over which the device's onset could have been found (its first telemetry
    to the end of the window): what the timing test takes as chance's range."""
    onset_uncertainty_s: float = 0.0
    """How far after ``onset`` the deviation may have begun (the estimate's stated
    uncertainty): an onset known to two hours does not show a deviation began before an
    update one hour after it."""
    onset_dated: bool = True
    """False where ``onset`` is only the middle of a bracket (nothing in the data dated
    the fault): it says nothing about how close the deviation came to the update."""

    @property
    def stated_uncertainty(self) -> float:
        """``onset_uncertainty_s`` as the timing reads it (``model.timing_uncertainty``)."""
        return timing_uncertainty(self.onset_uncertainty_s)


@dataclass(frozen=True, slots=True)
class Cohort:
    attribute: str
    value: str
    failing: tuple[str, ...]
    healthy: tuple[str, ...]
    rest_failing: int
    rest_healthy: int
    p: float
    p_adjusted: float
    following: tuple[str, ...] = ()
    """Failing members whose deviation began after they got this firmware."""
    exonerating: tuple[str, ...] = ()
    """Healthy members that have run this firmware for a whole window."""
    correction: Correction = "holm"
    """How ``p_adjusted`` was corrected for the cohorts tried with it."""
    p_timing: float = 1.0
    """A firmware cohort's timing test (``timing_p``): the chance that as many failing
    members began deviating within the slack of their own update by accident."""

    @property
    def regression(self) -> bool:
        """The failures are this firmware's: a firmware cohort, the timing agrees, and no
        long-running healthy member contradicts it."""
        return (self.attribute == FIRMWARE and not self.exonerating
                and len(self.following) >= max(MIN_COHORT,
                                               FOLLOWING_SHARE * len(self.failing)))

    @property
    def size(self) -> int:
        return len(self.failing) + len(self.healthy)

    def evidence(self, sensor: str) -> str:
        rest = self.rest_failing + self.rest_healthy
        text = (f"{len(self.failing)} of {self.size} devices with {self.attribute} "
                f"{self.value} fail {sensor}, against {self.rest_failing} of {rest} others "
                f"(Fisher's exact test p = {self.p:.2g}, {self.p_adjusted:.2g} after "
                f"{CORRECTIONS[self.correction]} for the cohorts tried)")
        if self.attribute == FIRMWARE and self.following:
            text += (f"; {len(self.following)} of them started deviating after updating to "
                     f"it")
        if self.p_timing < 1.0:
            text += (f"; chance alone would make their deviations start this close to "
                     f"their updates with p = {self.p_timing:.2g}")
        return text


def significant_cohorts(members: Sequence[Member], alpha: float = ALPHA,
                        slack_s: float = 3600.0, *, timing: bool = False) -> list[Cohort]:
    """The cohorts of one sensor's population that fail significantly more than the rest,
    most significant first. ``slack_s``: an onset this long before the update still
    "follows" it (change-point estimates are a few bins off either way).

    ``timing``: a firmware cohort may also be significant by its timing (``timing_p``):
    at one gateway a cohort of three devices among seven can never fail significantly
    *more often* than the rest (Fisher's p is at best 1/35), but three devices that each
    began deviating within the hour of their own update, out of a day each could have
    begun in, is not chance. The cohort's p is then the smaller of the two tests, doubled
    (Bonferroni over the two), before the correction over every cohort tried."""
    tried = tested_cohorts(members, slack_s)
    if timing:
        tried = [_with_timing(c, members, slack_s) for c in tried]
    return adjusted_cohorts(tried, alpha)


def _with_timing(cohort: Cohort, members: Sequence[Member], slack_s: float) -> Cohort:
    if cohort.attribute != FIRMWARE:
        return cohort
    group = [m for m in members if m.attributes.get(FIRMWARE) == cohort.value]
    p_timing = timing_p(group, slack_s)
    if p_timing >= 1.0:
        return cohort
    p = min(1.0, 2.0 * min(cohort.p, p_timing))
    return replace(cohort, p=p, p_adjusted=p, p_timing=p_timing)


TIMING_FLOOR_S = 1.0
"""The closest an onset is taken to be to its update: an exact hit would make the chance 0."""


def timing_p(group: Sequence[Member], slack_s: float) -> float:
    """The chance that the cohort's updated, failing members began deviating as close to
    their own updates as they did if their deviations had nothing to do with them.

    Under that null each onset falls anywhere in the span it could have been found in, so
    within a distance t of its update with probability at most 2 t / span; the members are
    independent, and the count of those within t has the Poisson-binomial tail. Two
    distances are tried: ``slack_s`` (a regression need not show the minute the update
    lands: a reboot, a first measurement cycle; and an onset's stated uncertainty
    understates a ramp's), and the members' own distances (the k-th closest, for every k
    of at least ``MIN_COHORT``): three onsets within two minutes of their updates in six
    hours of history happen by chance about once in a million, where the hour's slack
    alone says once in thirty. An onset stated to +-u (``Member.onset_uncertainty_s``)
    is within t of its update when its interval is, which chance does with probability
    2 (t + u) / span: a step between two audit windows, dated to an hour, still counts
    at its update, and pays for the hour in the chance. A bracket's middle is no date
    (``Member.onset_dated``) and is left out: every member audited on the same windows
    gets the same middle, and a roll-out near it looked like a coincidence to the
    second (a review: 595 of 1,000 fleets of independent failures named a regression).
    The smallest tail is multiplied by the number of distances tried (Bonferroni), so
    choosing the distance after seeing the data costs what it should. 1 when fewer than
    ``MIN_COHORT`` members can be tested or fewer than that coincide."""
    spans: list[float] = []
    distances: list[float] = []
    slacks: list[float] = []
    for m in group:
        if not (m.failed and m.updated and m.onset is not None and m.onset_dated
                and m.firmware_since is not None and m.observed is not None):
            continue
        span = m.observed[1] - m.observed[0]
        if not span > 0.0:
            continue
        spans.append(span)
        # an onset known to +-u is "within t" of its update when its interval is: by
        # chance with probability 2 (t + u) / span
        slacks.append(m.stated_uncertainty)
        distances.append(max(abs(m.onset - m.firmware_since) - slacks[-1], TIMING_FLOOR_S))
    if len(spans) < MIN_COHORT:
        return 1.0
    tried = sorted({slack_s, *(d for d in sorted(distances)[MIN_COHORT - 1:] if d < slack_s)})
    best = 1.0
    for within in tried:
        hits = sum(d <= within for d in distances)
        if hits < MIN_COHORT:
            continue
        chances = [min(1.0, 2.0 * (within + u) / span) for span, u in zip(spans, slacks,
                                                                          strict=True)]
        best = min(best, poisson_binomial_tail(chances, hits))
    return min(1.0, best * len(tried))


def poisson_binomial_tail(chances: Sequence[float], k: int) -> float:
    """P(at least ``k`` successes) of independent trials with these chances."""
    dist = [1.0]  # dist[j] = P(j successes so far)
    for q in chances:
        nxt = [0.0] * (len(dist) + 1)
        for j, pj in enumerate(dist):
            nxt[j] += pj * (1.0 - q)
            nxt[j + 1] += pj * q
        dist = nxt
    return float(min(1.0, sum(dist[k:])))


def adjusted_cohorts(tried: Sequence[Cohort], alpha: float = ALPHA,
                     method: Correction = "holm") -> list[Cohort]:
    """Of the cohorts ``tried`` (possibly over several populations: the fleet tests every
    model, sensor and failure mode together), those significant after correcting all their
    p-values together, most significant first, with their adjusted p-values.

    ``holm`` controls the chance of even one false cohort (family-wise); ``bh``
    (Benjamini-Hochberg) the expected share of false ones among those reported, which
    keeps more power when thousands of cohorts are tried."""
    if not tried:
        return []
    order = sorted(range(len(tried)), key=lambda i: tried[i].p)
    sorted_p = [tried[i].p for i in order]
    adjusted = holm_adjusted(sorted_p) if method == "holm" else bh_adjusted(sorted_p)
    out = []
    for rank, i in enumerate(order):
        cohort = tried[i]
        if adjusted[rank] <= alpha and cohort.failing:
            out.append(replace(cohort, p_adjusted=adjusted[rank], correction=method))
    return out


def tested_cohorts(members: Sequence[Member], slack_s: float = 3600.0,
                   attributes: Sequence[str] = ATTRIBUTES) -> list[Cohort]:
    """Every cohort worth a test, with its raw p-value: at least two members, not the whole
    population."""
    out = []
    total_failing = sum(m.failed for m in members)
    for attribute in attributes:
        groups: dict[str, list[Member]] = {}
        for m in members:
            value = m.attributes.get(attribute)
            if value:
                groups.setdefault(value, []).append(m)
        for value, group in sorted(groups.items()):
            if len(group) < MIN_COHORT or len(group) == len(members):
                continue
            failing = tuple(sorted(m.device for m in group if m.failed))
            healthy = tuple(sorted(m.device for m in group if not m.failed))
            rest_failing = total_failing - len(failing)
            rest_healthy = len(members) - len(group) - rest_failing
            p = fisher_p(len(failing), len(healthy), rest_failing, rest_healthy)
            following, exonerating = (firmware_timing(group, slack_s)
                                      if attribute == FIRMWARE else ((), ()))
            out.append(Cohort(attribute, value, failing, healthy, rest_failing, rest_healthy,
                              p, p, following, exonerating))
    return out


def fisher_p(failing: int, healthy: int, rest_failing: int, rest_healthy: int) -> float:
    """One-sided Fisher's exact test: does the cohort fail more often than the rest?"""
    if failing == 0:
        return 1.0
    table = [[failing, healthy], [rest_failing, rest_healthy]]
    return float(fisher_exact(table, alternative="greater").pvalue)


def firmware_timing(group: Sequence[Member], slack_s: float) -> tuple[tuple[str, ...], ...]:
    """(failing members whose deviation follows their update: its onset no earlier than
    the update less ``slack_s``, or less its stated uncertainty where that is longer, the
    rule ``metadata.changes_before`` lays changes beside a finding by; healthy members
    that ran the version a whole window). A failing member with no onset in its
    window has deviated since before the window began: that does not contradict an update
    before the window."""
    following = tuple(sorted(
        m.device for m in group if m.failed and m.firmware_since is not None
        and (latest_start(m.onset, m.onset_uncertainty_s, slack_s) >= m.firmware_since
             if m.onset is not None
             else m.firmware_since <= m.window_start)))
    exonerating = tuple(sorted(
        m.device for m in group if not m.failed and m.firmware_since is not None
        and m.firmware_since <= m.window_start))
    return following, exonerating


def holm_adjusted(sorted_p: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values for p-values given in ascending order (monotone, capped at 1)."""
    m = len(sorted_p)
    out, running = [], 0.0
    for k, p in enumerate(sorted_p):
        running = max(running, min(1.0, (m - k) * p))
        out.append(running)
    return out


def bh_adjusted(sorted_p: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg-adjusted p-values (q-values) for p-values in ascending order:
    ``min over j >= k of m p_j / j``, capped at 1."""
    m = len(sorted_p)
    out = [0.0] * m
    running = 1.0
    for k in range(m - 1, -1, -1):
        running = min(running, m * sorted_p[k] / (k + 1))
        out[k] = running
    return out


_NOT_ID = re.compile(r"[^A-Za-z0-9_.-]+")


def cohort_id(model: str, version: str) -> str:
    """A finding's ``device`` for a firmware cohort, within CONTRACT.md's id pattern (a
    PEP 440 local version's ``+`` would be a wildcard in a topic)."""
    text = _NOT_ID.sub("_", f"{model}.fw-{version}").lstrip("_.-") or "cohort"
    return text[:64]
