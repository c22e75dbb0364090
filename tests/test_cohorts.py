"""Cohorts: Fisher's exact test with Holm's correction, and when a cohort is its firmware's."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditd.core.cohorts import (
    Member,
    bh_adjusted,
    cohort_id,
    holm_adjusted,
    significant_cohorts,
)
from auditd.model import ID_PATTERN

T0 = 1_764_028_800.0
UPDATE = T0 + 12 * 3600
WINDOW_START = T0


def fleet(bad: int = 4, bystanders: int = 2, old: int = 6, *, onset: float | None = UPDATE + 60,
          bystander_since: float = UPDATE) -> list[Member]:
    """``bad`` devices updated to 2.4.0 at UPDATE and failing from ``onset``; ``bystanders``
    updated to 2.3.5 at ``bystander_since``, healthy; ``old`` on 2.3.1 since long ago."""
    out = []
    for i in range(bad):
        out.append(Member(f"bad-{i}", True, onset, WINDOW_START,
                          {"model": "th-200", "firmware": "th-200 2.4.0", "site": "north"},
                          UPDATE))
    for i in range(bystanders):
        out.append(Member(f"by-{i}", False, None, WINDOW_START,
                          {"model": "th-200", "firmware": "th-200 2.3.5", "site": "north"},
                          bystander_since))
    for i in range(old):
        out.append(Member(f"old-{i}", False, None, WINDOW_START,
                          {"model": "th-200", "firmware": "th-200 2.3.1", "site": "north"},
                          T0 - 90 * 86_400))
    return out


def test_holm_matches_the_worked_example() -> None:
    # p = 0.01, 0.03, 0.04 of three tests: 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert holm_adjusted([0.01, 0.03, 0.04]) == [0.03, 0.06, 0.06]
    assert holm_adjusted([0.5, 0.9]) == [1.0, 1.0]


def test_benjamini_hochberg_matches_the_worked_example() -> None:
    # m = 4: 4 x 0.01 / 1 = 0.04; 4 x 0.02 / 2 = 0.04; 4 x 0.03 / 3 = 0.04; 4 x 0.5 / 4 = 0.5
    assert bh_adjusted([0.01, 0.02, 0.03, 0.5]) == pytest.approx([0.04, 0.04, 0.04, 0.5])
    # step-up: a later, smaller ratio carries back (4 x 0.04 / 3 = 0.053 < 4 x 0.03 / 2)
    assert bh_adjusted([0.001, 0.03, 0.04, 0.9]) == pytest.approx(
        [0.004, 4 * 0.04 / 3, 4 * 0.04 / 3, 0.9])


def test_four_of_four_against_none_of_eight_is_a_firmware_regression() -> None:
    found = significant_cohorts(fleet())
    assert [(c.attribute, c.value) for c in found] == [("firmware", "th-200 2.4.0")]
    cohort = found[0]
    # hypergeometric: all four failures land in the four-device cohort, 1 / C(12, 4)
    assert math.isclose(cohort.p, 1 / math.comb(12, 4), rel_tol=1e-9)
    # Holm's first step: times the cohorts tried, the three firmware versions; model and
    # site take in every device, so they are not tried and do not dilute the test
    assert math.isclose(cohort.p_adjusted, 3 * cohort.p, rel_tol=1e-12)
    assert cohort.regression
    assert cohort.following == ("bad-0", "bad-1", "bad-2", "bad-3")
    assert "4 of 4 devices with firmware th-200 2.4.0" in cohort.evidence("pressure")


def test_deviations_that_began_before_the_update_are_not_the_firmwares() -> None:
    found = significant_cohorts(fleet(onset=UPDATE - 6 * 3600))
    assert found and not found[0].regression and found[0].following == ()


def test_a_healthy_device_that_ran_the_version_a_whole_window_exonerates_it() -> None:
    members = fleet(bad=5, old=8)
    members.append(Member("veteran", False, None, WINDOW_START,
                          {"model": "th-200", "firmware": "th-200 2.4.0", "site": "north"},
                          WINDOW_START - 86_400))
    found = significant_cohorts(members)
    assert found and found[0].value == "th-200 2.4.0"
    assert found[0].exonerating == ("veteran",)
    assert not found[0].regression


def test_too_small_a_fleet_is_not_significant() -> None:
    # 2 of 2 against 0 of 2: p = 1/6, nothing a fleet manager should act on
    assert significant_cohorts(fleet(bad=2, bystanders=0, old=2)) == []


def test_independent_failures_rarely_make_any_cohort_significant() -> None:
    """Family-wise error: failures that have nothing to do with the attributes should
    produce a significant cohort in at most about alpha of fleets (Fisher's test is
    conservative, so fewer)."""
    rng = random.Random(4)
    runs, false = 1000, 0
    for _ in range(runs):
        n = rng.randint(12, 60)
        versions = [f"m {v}" for v in ("1.0", "1.1", "1.2", "2.0", "2.1")[:rng.randint(2, 5)]]
        revs = ["A", "B", "C"][:rng.randint(1, 3)]
        rate = rng.uniform(0.05, 0.4)
        members = [Member(f"d{i}", rng.random() < rate, T0 + 3600, WINDOW_START,
                          {"model": "m", "firmware": rng.choice(versions),
                           "hardware_rev": rng.choice(revs), "site": rng.choice("xy")},
                          T0) for i in range(n)]
        false += bool(significant_cohorts(members))
    assert false / runs <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs), false


@settings(max_examples=50, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(3, 6), st.integers(0, 4),
       st.integers(4, 12))
def test_the_verdict_does_not_depend_on_the_order_of_the_streams(
        rnd: random.Random, bad: int, bystanders: int, old: int) -> None:
    members = fleet(bad, bystanders, old)
    shuffled = members[:]
    rnd.shuffle(shuffled)
    assert significant_cohorts(shuffled) == significant_cohorts(members)


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=40))
def test_a_cohort_id_is_always_a_valid_device_id(model: str, version: str) -> None:
    assert ID_PATTERN.fullmatch(cohort_id(model, version))
