"""Since when? The onset of a fault across the audits that see it.

One window's change point (``core.onset.step_onset``) dates a fault only when the window
holds a healthy stretch before it: the first failing audit of a step, rarely a later one,
never a drift of months. Here the stream's earlier findings (read from the store by the
auditor) date every failing finding of one fault, its *episode*: the findings since the
stream last showed health (a confirmed pass, ``domain.alerts.confirmed``).

In order of evidence:

1. **Window estimates.** Every change point the episode's windows that name the same top
   cause found, and this one's: their median (``core.onset.combined_onset``). The first
   estimate stands alone; each later audit that sees the same change refines it.
2. **Carried.** The episode began before the history read: the latest onset it was
   given is kept.
3. **Across the windows** (``DRIFTS``: offset and gain faults). No window saw a change
   point: the audits' own estimates (each window's bias, or gain error) crossed the
   tolerance between two windows; the step or ramp whose mean over each window fits them
   best says where the deviation began (``core.onset.drift_start``). The onset is the
   start (VERDICTS.md: "a slow ramp's onset is where the ramp starts"), and the crossing
   is stated beside it (``crossed_tolerance``).

4. **Bracketed.** Nothing above dates it: between the last moment the stream showed
   health and the end of its first failing window (``bracketed``), so that every failing
   finding of a fault has a date, with an uncertainty that says how loose it is.

Each dated finding says how (``context.onset_estimate``: ``method``, ``uncertainty_s``,
and this window's own change point as ``window``). Pure: findings in, findings out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from auditd import core
from auditd.domain.alerts import confirmed
from auditd.model import Finding, Tolerance, from_iso, iso, timing_uncertainty

ONSET = "onset_estimate"
"""``context`` key: how the finding's onset was estimated."""
DATED_ELSEWHERE = frozenset({"reference_fault", "firmware_regression"})
"""Top causes whose onset is the group's (the reference's common step, the update)."""
JUDGED_SINCE = "judged_since"
"""``context`` key: where the span a finding's metrics describe begins, when that is only
its window's latest part (``core.StreamVerdict.judged_since``: a span or a clock lag that
changed inside the window); the finding's window stays the audit's."""
DRIFTS = frozenset({"offset_drift", "gain_drift"})
"""Top causes dated across windows: the figure they are about (the bias, the gain) is what
each window estimates. Other faults (a unit mix-up, noise, a lag, a stuck spell) are dated
by change points alone."""


def onset_uncertainty(finding: Finding) -> float:
    """How far the finding's onset may lie from where it is stated (``ONSET``'s
    ``uncertainty_s``): a firmware change this far after the stated onset may still have
    come before the deviation. 0 where none is stated, and for a bracket (``bracketed``,
    or carried from one): nothing in the data dated that fault, and half a window of
    "uncertainty" would let any update inside the first failing window look as if the
    deviation followed it."""
    return stated_uncertainty(finding.context)


def stated_uncertainty(context: Mapping[str, Any]) -> float:
    """``onset_uncertainty`` from a finding's ``context`` (as published: the fleet reads
    it back from the finding's JSON)."""
    recorded = context.get(ONSET)
    if not isinstance(recorded, dict) or _is_bracket(recorded):
        return 0.0
    value = recorded.get("uncertainty_s")
    return timing_uncertainty(float(value)) if isinstance(value, int | float) else 0.0


def bracketed_only(finding: Finding) -> bool:
    """Whether the finding's onset is a bracket (``bracketed``, or carried from one): the
    middle of what the audits know, not a date the data gave."""
    return is_bracketed(finding.context)


def is_bracketed(context: Mapping[str, Any]) -> bool:
    """``bracketed_only`` from a finding's ``context``."""
    return _is_bracket(context.get(ONSET))


def _is_bracket(recorded: object) -> bool:
    return isinstance(recorded, dict) and (recorded.get("method") == "bracket"
                                           or bool(recorded.get("bracket")))


def window_estimate(finding: Finding) -> float | None:
    """The change point the finding's own window found (a finding saved before onsets were
    carried has only that one, as its ``onset``)."""
    recorded = finding.context.get(ONSET)
    if isinstance(recorded, dict):
        return from_iso(recorded.get("window"))
    return finding.onset


def episode(history: Sequence[Finding]) -> tuple[list[Finding], bool]:
    """The findings since the stream last showed health, and whether that moment is in
    ``history`` (False: the episode began before the history read, or the stream has
    never shown health)."""
    last = max((i for i, f in enumerate(history) if confirmed(f)), default=-1)
    return [f for f in history[last + 1:] if f.status in ("pass", "fail")], last >= 0


def _figure(finding: Finding, gain: bool) -> float:
    """The window's estimate of the fault's figure: its bias, or its gain error (NaN
    where none)."""
    m = finding.metrics
    if gain:
        value = m.get("gain_deming") if isinstance(m.get("gain_deming"), float) else m.get("gain")
        return float(value) - 1.0 if isinstance(value, int | float) else math.nan
    bias = m.get("bias")
    return float(bias) if isinstance(bias, int | float) else math.nan


def stream_cause(finding: Finding) -> str | None:
    """The stream's own top cause: a group's attribution put before it (a firmware
    cohort's ``firmware_regression``, named after this module dated the finding) is set
    aside, so that the windows of one offset before and after its cohort was recognised
    stay one episode, dated together."""
    own = [c.cause for c in finding.causes if c.cause not in DATED_ELSEWHERE]
    if own:
        return own[0]
    return finding.causes[0].cause if finding.causes else None


def judged_start(f: Finding) -> float:
    """Where the span ``f``'s figures describe begins: its window's start, or the later
    ``JUDGED_SINCE``."""
    since = f.context.get(JUDGED_SINCE)
    began = from_iso(since) if isinstance(since, str) else None
    return max(began, f.window_start) if began is not None else f.window_start


def _midpoint(f: Finding) -> float:
    return (judged_start(f) + f.window_end) / 2.0


def dated(finding: Finding, history: Sequence[Finding], tol: Tolerance,
          resolution_s: float, *, first_reading: float | None = None) -> Finding:
    """``finding`` (this audit's, on one stream) with the onset of its fault from the
    stream's ``history`` (its earlier findings, oldest first) and the way it was found.
    Only failing calibration findings are dated; a group's own onset is left alone."""
    if (finding.kind != "calibration" or finding.status != "fail"
            or (finding.causes and finding.causes[0].cause in DATED_ELSEWHERE)):
        return finding
    own = finding.onset
    top = finding.causes[0].cause if finding.causes else None
    earlier, began_inside = episode(history)
    same = [f for f in earlier if f.status == "fail"
            and stream_cause(f) == top]  # the same fault: an onset of another is not its
    estimates = [e for f in same if (e := window_estimate(f)) is not None]
    combined = core.onset.combined_onset([*estimates, *([own] if own is not None else [])],
                                         resolution_s)
    if combined is not None:
        return _with(finding, combined.at, "window", combined.uncertainty_s, own)
    carried = next((f for f in reversed(same) if f.onset is not None), None)
    if carried is not None and not began_inside:
        refined = _refined(finding, carried, earlier, history, tol, own) \
            if top in DRIFTS else None
        return refined if refined is not None else _carry(finding, carried, own)
    if top not in DRIFTS:
        return _carry(finding, carried, own) if carried is not None \
            else bracketed(finding, history, first_reading)
    drift = _drift(finding, earlier, history, tol, top == "gain_drift")
    if drift is not None:
        return _drifted(finding, drift, own)
    if carried is not None:
        return _carry(finding, carried, own)
    return bracketed(finding, history, first_reading)


def _drift(finding: Finding, earlier: Sequence[Finding], history: Sequence[Finding],
           tol: Tolerance, gain: bool) -> core.onset.DriftDate | None:
    """``core.onset.drift_start`` over the audits' own estimates of the fault's figure."""
    limit = tol.gain if gain else tol.bias
    points = [f for f in history if f.status in ("pass", "fail")] + [finding]
    # the first failing window that shows the figure beyond tolerance: where the crossing
    # must have happened by (a window failing first on noise, say, does not)
    first_fail = next((f for f in [*earlier, finding] if f.status == "fail"
                       and abs(_figure(f, gain)) >= limit), finding)
    return core.onset.drift_start([judged_start(f) for f in points],
                                  [f.window_end for f in points],
                                  [_figure(f, gain) for f in points], limit,
                                  _midpoint(first_fail))


def _drifted(finding: Finding, drift: core.onset.DriftDate, own: float | None) -> Finding:
    """The finding dated by ``drift``; where the fit could not place its start (too few
    windows: an infinite uncertainty) the start is kept as a bracket's middle is, no date
    (``bracketed_only``), so that no firmware timing rests on it."""
    dated_ = _with(finding, drift.began.at, "drift_start", drift.began.uncertainty_s, own)
    record = {**dated_.context[ONSET], "crossed_tolerance": iso(drift.crossed.at)}
    if not math.isfinite(drift.began.uncertainty_s):
        record["bracket"] = True
    return replace(dated_, context={**dated_.context, ONSET: record})


def _refined(finding: Finding, carried: Finding, earlier: Sequence[Finding],
             history: Sequence[Finding], tol: Tolerance, own: float | None) -> Finding | None:
    """A carried onset fitted again from the windows' means over the history as it now
    stands, where that history still reaches a window before the carried onset: the
    first failing audit of a step sees one or two windows after it (a barometer's
    firmware step was dated to +-14 hours there, and every later audit carried that),
    each later one more, and a fresh fit over all of them is the better statement (a
    review: kept only where narrower, the last interval covered the step in 36 of 40
    histories, a fresh fit in 40). None where the history no longer reaches before it,
    or the fit finds no crossing."""
    if carried.onset is None or not history:
        return None
    width = finding.window_end - finding.window_start
    if history[0].window_start > carried.onset - width:
        return None
    top = finding.causes[0].cause if finding.causes else None
    drift = _drift(finding, earlier, history, tol, top == "gain_drift")
    return _drifted(finding, drift, own) if drift is not None else None


def bracketed(finding: Finding, history: Sequence[Finding],
              first_reading: float | None = None) -> Finding:
    """The onset where nothing in the data dates it (no change point in any window, none
    carried, no drift to fit): between the last moment the stream showed health and the
    end of the first window that failed, its middle, with half the interval as its
    uncertainty (``method: bracket``).

    A window passes while less than about half of it is faulty, so the last confirmed
    healthy window says the fault began after its middle; with no such window in the
    history read, after the first failing window's start, and never before the stream's
    ``first_reading`` (a first audit's window reaches back before the unit was installed:
    a fault there from the start began with its data). That is what the audits know,
    and a technician can use it ("between 02:00 and 05:00"): an empty onset tells him
    nothing. Later findings of the episode carry it."""
    earlier, _ = episode(history)
    first_fail = next((f for f in [*earlier, finding] if f.status == "fail"), finding)
    healthy = [f for f in history if confirmed(f) and f.window_end <= first_fail.window_end]
    if healthy:
        last = healthy[-1]
        low = (last.window_start + last.window_end) / 2.0
    else:
        low = first_fail.window_start
    if first_reading is not None:
        low = max(low, first_reading)
    high = first_fail.window_end
    if not high > low:
        return finding
    return _with(finding, (low + high) / 2.0, "bracket", (high - low) / 2.0, finding.onset)


def _with(finding: Finding, at: float, method: str, uncertainty_s: float | None,
          own: float | None) -> Finding:
    record: dict[str, Any] = {
        "method": method, "window": iso(own),
        "uncertainty_s": round(uncertainty_s, 1) if uncertainty_s is not None
        and math.isfinite(uncertainty_s) else None}
    return replace(finding, onset=at, context={**finding.context, ONSET: record})


def _carry(finding: Finding, carried: Finding, own: float | None) -> Finding:
    before = carried.context.get(ONSET)
    uncertainty = before.get("uncertainty_s") if isinstance(before, dict) else None
    assert carried.onset is not None
    out = _with(finding, carried.onset, "carried",
                float(uncertainty) if isinstance(uncertainty, int | float) else None, own)
    if _is_bracket(before):
        # a bracket stays one when carried: ``onset_uncertainty`` reads it
        out = replace(out, context={**out.context, ONSET: {**out.context[ONSET],
                                                           "bracket": True}})
    return out
