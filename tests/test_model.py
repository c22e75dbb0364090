"""A finding's encodings, each the inverse of its reader.

The store keeps a finding's published JSON and what it rounds, and hands back the very
value it was given; a finding file (``replay --out``) read back gives the finding as
published, and publishing that again gives the same bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from auditd.adapters.store.encoding import finding_columns, finding_of
from auditd.model import SEVERITIES, Cause, Finding, from_iso, iso

EPOCH = st.floats(0.0, 4.1e9, allow_nan=False, allow_infinity=False)
EPOCH_MS = st.integers(0, 4_100_000_000_000).map(lambda ms: ms / 1000)
"""Times as a finding file carries them: to the millisecond."""
NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)

CAUSES = st.builds(Cause, NAME, st.floats(0.0, 1.0), st.text(max_size=60))

FINDINGS = st.builds(
    Finding,
    kind=st.sampled_from(["calibration", "data_quality", "metadata"]),
    site=NAME, device=NAME, sensor=st.none() | NAME,
    status=st.sampled_from(["pass", "fail", "insufficient_data"]),
    severity=st.sampled_from(SEVERITIES),
    window_start=EPOCH, window_end=EPOCH,
    unit=st.none() | st.sampled_from(["degC", "hPa", "ug/m^3"]),
    reference=st.none() | NAME,
    metrics=st.dictionaries(NAME, st.none() | st.integers(-10**6, 10**6)
                            | st.floats(allow_nan=False, allow_infinity=False), max_size=6),
    causes=st.lists(CAUSES, max_size=3).map(tuple),
    onset=st.none() | EPOCH,
    context=st.dictionaries(NAME, JSON_VALUE, max_size=4),
    action=st.text(max_size=80),
)


@given(FINDINGS)
def test_a_finding_the_store_reads_back_is_the_finding_saved(finding: Finding) -> None:
    published, exact = finding_columns(finding)
    assert json.loads(published) == json.loads(json.dumps(finding.to_json()))
    assert finding_of(published, exact) == finding


@given(FINDINGS, EPOCH_MS, EPOCH_MS, st.none() | EPOCH_MS)
def test_a_published_finding_read_back_publishes_the_same_json(
        finding: Finding, start: float, end: float, onset: float | None) -> None:
    finding = replace(finding, window_start=start, window_end=end, onset=onset)
    published = json.loads(json.dumps(finding.to_json()))
    again = Finding.from_json(published)
    assert again.to_json() == published
    assert (again.kind, again.device, again.sensor, again.status) == (
        finding.kind, finding.device, finding.sensor, finding.status)
    assert [c.cause for c in again.causes] == [c.cause for c in finding.causes]


@given(EPOCH)
def test_from_iso_reads_what_iso_wrote_to_the_millisecond(ts: float) -> None:
    back = from_iso(iso(ts))
    assert back is not None and math.floor(ts * 1000) / 1000 - 1e-6 <= back <= ts + 1e-6


@given(EPOCH_MS)
def test_iso_and_from_iso_are_inverse_at_the_millisecond(ts: float) -> None:
    assert from_iso(iso(ts)) == ts


@given(st.floats(0, 100), st.floats(0, 100))
def test_one_severity_scale_rises_with_the_deviation(a: float, b: float) -> None:
    """The scale the stream verdicts and a reference's own fault share: monotonic, minor
    within twice the tolerance, critical only beyond five times."""
    from auditd.model import SEVERITY_RANK, severity_of_exceedance

    low, high = sorted((a, b))
    assert SEVERITY_RANK[severity_of_exceedance(low)] <= SEVERITY_RANK[severity_of_exceedance(high)]
    assert severity_of_exceedance(1.99) == "minor"
    assert severity_of_exceedance(5.0) == "major"
    assert severity_of_exceedance(5.01) == "critical"
