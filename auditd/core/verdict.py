"""One stream, one window, one verdict: the composition of align, lag, fit, diagnose,
onset and action. Nothing is measured here; this module only decides and words."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from auditd import text
from auditd.core.actions import (
    action_for_dropout,
    action_for_failure,
    action_for_insufficient,
    unexplained,
)
from auditd.core.align import Aligned, coarsen, latest, on_time_base
from auditd.core.causes import of_kind
from auditd.core.censoring import error_floor, uncensored
from auditd.core.checks import (
    bias_margin,
    evidenced_exceedances,
    excitation_note,
    failed_checks,
    gain_evidence,
    plausible_bounds,
    ratio,
    rmse_beyond_comparison,
    rmse_exceedance,
    rmse_lower_bound,
)
from auditd.core.diagnose import (
    DROPOUT_FAIL,
    DROPOUT_MAJOR,
    EXPLAIN_MIN_CONFIDENCE,
    LINE_MIN_PAIRS,
    Case,
    LineBefore,
    behind_clipping,
    build_case,
    diagnose,
    dropout_cause,
    dropout_share,
    lag_beyond_tolerance,
    longest_flat_run,
    pinned_whole_at_end,
    rounded_unit,
    stuck_run_needed,
    stuck_spell,
)
from auditd.core.drift import Drift, drift, residuals, support
from auditd.core.fit import Metrics, compute_metrics, fit_line, held_at
from auditd.core.lag import LagEstimate, confirmed_lag, estimate_lag
from auditd.core.onset import two_line_split
from auditd.core.series import FloatArray, Series
from auditd.core.stats import ar1_coefficient, effective_size
from auditd.core.units import UnitCandidate, default_unit_candidates
from auditd.model import (
    Cause,
    SensorSpec,
    Severity,
    Status,
    Tolerance,
    iso,
    severity_of_exceedance,
)

LAG_SEARCH_TOLERANCES = 10.0
LAG_SEARCH_MIN_BINS = 20
LAG_SEARCH_MAX_SHARE = 0.25
"""The lag search spans ten lag tolerances (at least twenty bins, so that a lag of ten
intervals lies well inside it, not at its edge) but at most a quarter of
the window, so that every lag tried still has three quarters of the data to compare."""

CRITICAL_CAUSES = frozenset(c.name for c in of_kind("calibration", "data_quality")
                            if c.severity == "critical")
"""A device that cannot be trusted at all, however small its numbers look."""


@dataclass(frozen=True, slots=True)
class StreamVerdict:
    status: Status
    severity: Severity
    metrics: Metrics
    causes: tuple[Cause, ...]
    onset: float | None
    action: str
    failed: tuple[str, ...] = ()
    """Metrics out of tolerance, worst first; ``coverage`` when only the device's
    dropouts fail the window."""
    drift: Drift | None = None
    """Residuals against the baseline's (``core.drift``), when a baseline was given.
    Informational: it never changes ``status``, it only supports offset and noise causes."""
    indeterminate: tuple[tuple[str, str], ...] = ()
    """(metric, why) for the metrics this window cannot judge either way (``gain``:
    insufficient excitation, ``checks.gain_evidence``). They neither fail nor pass the
    stream; the other metrics are judged as usual."""
    judged_since: float | None = None
    """Where the span the metrics describe begins, when it is only the window's latest
    part (a span or a clock lag that changed inside the window: ``_gain_changed_lately``,
    ``_lag_began_lately``); None: the whole window."""
    lag_candidate: LagEstimate | None = None
    """The window's lag search points to a lag beyond tolerance that it cannot tell from
    the noise of its search (``is_lag_candidate``): the caller may test that lag on the
    readings before the window (``confirm_lag``) and judge the window again with what
    they show (``evaluate_stream``'s ``lag``). None: nothing to confirm."""
    pinned_at_end: float | None = None
    """The value the device held at an end of its range to the window's end, in all but
    too few of its bins to fit a line (``diagnose.pinned_whole_at_end``), with the
    reference off it, where the window named it stopped there (``stuck``, or a wrong unit
    rounded to it): the window cannot tell that from saturation, which the device's
    calibration before the window can (``line_before``, ``evaluate_stream``'s ``before``).
    None: nothing to ask of the readings before."""


LAG_STEPS_PER_TOLERANCE = 10
"""The lag is searched on bins no finer than a tenth of its tolerance (then refined
between bins): finer bins cost work in proportion and change no verdict."""


def lag_coarsening(spec: SensorSpec, interval_s: float) -> int:
    return max(1, int(spec.tolerance.lag_s / LAG_STEPS_PER_TOLERANCE // interval_s))


def lag_search_s(spec: SensorSpec, span_s: float) -> float:
    wanted = max(LAG_SEARCH_TOLERANCES * spec.tolerance.lag_s,
                 LAG_SEARCH_MIN_BINS * spec.interval_s)
    return min(wanted, LAG_SEARCH_MAX_SHARE * span_s)


def severity_of(metrics: Metrics, spec: SensorSpec, causes: Sequence[Cause]) -> Severity:
    """minor < 2x, major 2-5x, critical > 5x tolerance or a device that cannot be trusted at
    all (stuck, wrong unit) however small the numbers happen to look.

    Severity follows the evidence: the distances are those the window shows with
    confidence (``checks.evidenced_exceedances``: bias, gain and rmse at their confidence
    bounds), and a critical cause counts only when it is itself likelier than not
    (``EXPLAIN_MIN_CONFIDENCE``)."""
    if any(c.cause in CRITICAL_CAUSES and c.confidence >= EXPLAIN_MIN_CONFIDENCE
           for c in causes):
        return "critical"
    return severity_of_exceedance(max(evidenced_exceedances(metrics, spec.tolerance).values(),
                                      default=0.0))


def onset_of(case: Case, top: str) -> float | None:
    """The start of the deviation the top cause names, where v1 can estimate it."""
    if top == "stuck" or (top == "unit_mismatch" and rounded_unit(case) is not None):
        run = stuck_spell(case)
        first = int(np.argmax(case.aligned.paired)) if case.aligned.n_paired else 0
        if run is None or run.first <= first:
            return None  # stuck since before the window began
        return float(case.aligned.t[run.first])
    if top in ("offset_drift", "gain_drift"):
        return case.step
    return None


def window_lag(aligned: Aligned, spec: SensorSpec) -> LagEstimate:
    """The lag search of one window, as every verdict makes it (``lag_coarsening``,
    ``lag_search_s``)."""
    return estimate_lag(coarsen(aligned, lag_coarsening(spec, aligned.interval_s)),
                        lag_search_s(spec, aligned.end - aligned.start))


LAG_CONFIRM_WINDOWS = 3
"""How many windows' length of readings before the window a candidate lag is tested on
(``confirm_lag``): a clock error or a buffering delay is a property of the device that
stays from one window to the next, and three windows of readings the window did not see
test its one lag with three times its pairs."""


LAG_CONFIRM_MAX_S = 3600.0
"""Only a lag shorter than an hour is confirmed on the readings before the window: minutes
are the time scale of a clock, a buffer or a sensor's response; hours are that of the
day's other processes, whose phases a sensor with a cross-sensitivity follows as steadily
as a clock error. The EPA month's two electrochemical NO2 units "lead" their monitor by
4.6 h, the same in both, over every three days before a window (their cells answer ozone
and temperature too), while their O3, PM2.5 and weather sensors on the same clock show no
lag. A lag of hours must be resolved by a window alone."""


CANDIDATE_BEATS_ZERO_Z = 2.0
"""Standard errors by which a window's peak must beat zero lag to be a candidate worth
testing on the readings before it (``is_lag_candidate``); a lag the window resolves alone
must beat zero by ``lag.MIN_IMPROVEMENT_Z``. The candidate only chooses which lag to test:
the readings before it are held to the whole search's hurdle and must beat zero lag by
``MIN_IMPROVEMENT_Z`` themselves (``lag.confirmed_lag``), so a lower bar here costs reads,
not false lags. A CO2 unit 40 minutes late at 5-minute readings in 3 h windows (36 pairs)
beats zero lag by 2.1-2.9 standard errors in most windows, which the readings before then
confirm with margin: at the window's own bar of 3 its lag was never alerted (seed 2
``f20``)."""


def is_lag_candidate(lag: LagEstimate, tol: Tolerance) -> bool:
    """Does the window's lag search point to a lag it cannot resolve alone, and that the
    readings before it may confirm: a peak beyond the tolerance (and the series'
    resolution), shorter than ``LAG_CONFIRM_MAX_S``, not at the last lag searched (half a
    bin in from it at least: at the edge the curve may still be rising), that beats zero
    lag by ``CANDIDATE_BEATS_ZERO_Z`` standard errors but not the noise of every lag
    searched?"""
    return (math.isfinite(lag.lag_s) and not lag.resolved and not lag.below_resolution
            and tol.lag_s < abs(lag.lag_s) < LAG_CONFIRM_MAX_S
            and abs(lag.lag_s) <= lag.edge_s - 0.5 * lag.interval_s
            and lag.beats_zero_z >= CANDIDATE_BEATS_ZERO_Z)


def confirmation_start(start: float, end: float) -> float:
    """Where the readings a candidate lag of the window [start, end) is tested on begin
    (they end where the window begins)."""
    return start - LAG_CONFIRM_WINDOWS * (end - start)


def confirm_lag(candidate: LagEstimate, device: Series, reference: Series, spec: SensorSpec,
                start: float, end: float, *, window_s: float,
                reference_interval_s: float | None = None) -> LagEstimate | None:
    """The lag ``candidate`` (``StreamVerdict.lag_candidate``) as the two streams' readings
    over [start, end), before the window, show it (``lag.confirmed_lag``), where they
    resolve it beyond tolerance; None where they do not. The readings are put on the
    window's time base and searched over the window's range (``window_s`` long): the same
    lags at the same scale, within the lag tolerance of the candidate rounded to whole bins
    (one bin where a bin is wider)."""
    aligned, judged_spec = compared(device, reference, spec, start, end,
                                    reference_interval_s=reference_interval_s)
    earlier = coarsen(uncensored(aligned, judged_spec),
                      lag_coarsening(judged_spec, aligned.interval_s))
    if earlier.interval_s != candidate.interval_s:
        return None  # another time base than the window's: not the same lags
    found = confirmed_lag(candidate, earlier, lag_search_s(judged_spec, window_s),
                          judged_spec.tolerance.lag_s)
    return found if lag_beyond_tolerance(found, judged_spec.tolerance) else None


def detector_causes(aligned: Aligned, spec: SensorSpec, metrics: Metrics,
                    units: Sequence[UnitCandidate] | None = None) -> tuple[Cause, ...]:
    """What the cause detectors read of a window whether or not its checks fail, ranked.

    For a caller that judges by targets of its own (co-location's EPA targets) and wants
    the core's reading of a miss its tolerance does not call a failure. ``units`` as for
    ``evaluate_stream``."""
    case = build_case(spec, aligned, metrics, window_lag(aligned, spec),
                      default_unit_candidates(spec.unit) if units is None else units)
    return diagnose(case)


def evaluate_aligned(
    aligned: Aligned,
    spec: SensorSpec,
    units: Sequence[UnitCandidate] | None = None,
    *,
    baseline_residuals: FloatArray | None = None,
    reference_uncertainty: float | None = None,
    comparison_offset_u: float = math.nan,
    comparison_rms_u: float = math.nan,
    latest_half: bool = True,
    guard: LatestHalfGuard | None = None,
    lag: LagEstimate | None = None,
    before: LineBefore | None = None,
) -> StreamVerdict:
    """The verdict for streams already on a common time base.

    ``reference_uncertainty`` (``Reference.standard_uncertainty``, canonical unit) adds the
    Deming gain, which the gain decision then uses (``fit.compute_metrics``).

    ``comparison_offset_u``, ``comparison_rms_u``: where the comparison is the device's
    peers' median, how far it may itself be off the truth (``consensus.PeerMedian``); a
    failure must clear that as well (``Metrics.comparison_offset_u``).

    ``baseline_residuals`` (device - reference of a known-good window, ``drift.residuals``)
    adds the drift figures to the verdict.

    ``latest_half``: where the whole window cannot judge the gain, its latest half is
    asked too (``LATEST_SHARE``, ``_gain_changed_lately``), its gain's evidence weighed
    by ``guard``; where it passes, its latest half is searched for a clock lag that began
    inside it (``_lag_began_lately``).

    ``lag``: the window's lag where it was decided beyond the window (``confirm_lag``) or
    by its latest half's own search; None: searched in it, and a lag it points to but
    cannot resolve alone is returned as ``StreamVerdict.lag_candidate`` (also beside a
    latest half's lag: where the readings before the window confirm the window's
    candidate, the lag did not begin inside it, and the whole window is judged with it).

    ``before``: the device's line over the readings before the window (``line_before``),
    where the window was pinned whole at a range end (``StreamVerdict.pinned_at_end``);
    None: a window so pinned is returned with that value marked."""
    judged = uncensored(aligned, spec)  # figures and lag; the detectors read it all
    decided = guard.lag if guard is not None else lag
    used = window_lag(judged, spec) if decided is None else decided
    verdict = _verdict(aligned, judged, spec, units, used, baseline_residuals,
                       reference_uncertainty, comparison_offset_u, comparison_rms_u,
                       latest_half, guard, before)
    if decided is None and verdict.status != "insufficient_data" \
            and is_lag_candidate(used, spec.tolerance):
        verdict = replace(verdict, lag_candidate=used)
    if before is None and names_a_stop(verdict):
        verdict = replace(verdict, pinned_at_end=pinned_whole_at_end(aligned, spec))
    return verdict


def names_a_stop(verdict: StreamVerdict) -> bool:
    """Does the failing verdict name the device stopped at one value first: ``stuck``, or
    a wrong unit rounded to one value (the evidence of both is a held value)?"""
    return (verdict.status == "fail" and bool(verdict.causes)
            and verdict.causes[0].cause in ("stuck", "unit_mismatch"))


def _verdict(
    aligned: Aligned, judged: Aligned, spec: SensorSpec,
    units: Sequence[UnitCandidate] | None, lag: LagEstimate,
    baseline_residuals: FloatArray | None, reference_uncertainty: float | None,
    comparison_offset_u: float, comparison_rms_u: float, latest_half: bool,
    guard: LatestHalfGuard | None, before: LineBefore | None = None,
) -> StreamVerdict:
    """``evaluate_aligned`` with the lag decided: the window's own, one confirmed before it
    (``confirm_lag``), or for a latest half the whole window's (its gain judged again) or
    the half's own (a lag found in it)."""
    tol = spec.tolerance
    figures = (None if baseline_residuals is None
               else drift(baseline_residuals, residuals(aligned), tol.bias))
    metrics = compute_metrics(judged, lag=lag, reference_uncertainty=reference_uncertainty)
    if guard is not None:
        metrics = guard.applied(metrics, judged)
    if not (math.isnan(comparison_offset_u) and math.isnan(comparison_rms_u)):
        metrics = against_uncertain_comparison(metrics, comparison_offset_u, comparison_rms_u)
    if metrics.n < max(tol.min_samples, 3):
        silent = _dropout_failure(aligned, spec, metrics, figures)
        if silent is not None:
            return silent
        hidden = _beyond_the_edge(aligned, judged, spec, units, lag, figures, Comparison(
            reference_uncertainty, comparison_offset_u, comparison_rms_u), before)
        if hidden is not None:
            return hidden
        drop = dropout_cause(aligned, tol.min_samples)
        why: tuple[Cause, ...] = (drop,) if drop is not None else ()
        return StreamVerdict("insufficient_data", "none", metrics, why, None,
                             action_for_insufficient(aligned, spec, tol.min_samples, why,
                                                     judged),
                             drift=figures)
    failed = failed_checks(metrics, tol)
    unsure = indeterminate_metrics(metrics, spec)
    units = default_unit_candidates(spec.unit) if units is None else units
    if not failed:
        flat = _flat_alone(aligned, spec, metrics, lag, units, before)
        if flat is None:
            verdict = replace(_pass_or_dropout(aligned, spec, metrics, figures),
                              indeterminate=unsure)
            if latest_half and verdict.status == "pass":
                comparison = Comparison(reference_uncertainty, comparison_offset_u,
                                        comparison_rms_u, baseline_residuals)
                # the half's gain where the window could not judge it, then its lag
                lately = (_gain_changed_lately(aligned, spec, units, lag, comparison)
                          if unsure else None)
                if lately is None:
                    lately = _lag_began_lately(aligned, judged, spec, units, lag, comparison)
                if lately is not None:
                    return lately
            return verdict
        case, causes = flat
        failed = (FLAT_OUTPUT,)
    else:
        case = build_case(spec, aligned, metrics, lag, units,
                          weighed=guard.applied if guard is not None else None, before=before)
        causes = diagnose(case)
    # drift support re-ranks by confidence; the offset or gain that carries a device to
    # full scale stays ahead of the clipping it causes (``behind_clipping``)
    causes = behind_clipping(case, support(causes, figures, metrics.bias, spec.unit))
    if not causes:
        causes = (unexplained(failed, metrics, spec),)
    onset = onset_of(case, causes[0].cause)
    if onset is not None and not math.isfinite(onset):
        onset = None
    return StreamVerdict("fail", severity_of(metrics, spec, causes), metrics, causes, onset,
                         action_for_failure(causes, case, failed), failed, figures, unsure)


@dataclass(frozen=True, slots=True)
class LatestHalfGuard:
    """How the gain of a window's latest half is weighed when it is judged on its own
    (``_gain_changed_lately``): on no more independent samples than the whole window's
    split residuals count in its share (``samples``, ``SplitLines.latest_samples``), and
    with its standard errors widened by what a drift of the device's error in time could
    also explain (``trend_inflation``). The clock lag is the whole window's (``lag``): a
    lag is the device's, and half the window holds half the evidence for it (the search is
    also most of a verdict's cost).

    The split's count caps the half's own, which cannot show a wander too slow for half a
    window. It stands in for it only where the half's own count leaves the slope no
    degrees of freedom (``NO_FREEDOM``): twelve hourly residuals know their persistence
    only to an upper bound, and at two samples the slope's interval is infinite whatever
    the data; a thermometer whose span fell to 0.81 went unjudged at 0.808 +- 0.005 with
    residuals of 0.04 degC, though the day's 24 residuals about two lines counted 12
    independent. Not above that: the split is searched for the best fit, its residuals
    look whiter than a slow wander is: over 90,000 healthy days of a review's scan, lifting
    every half to the split's count failed 8 more on gain (halves of 2-5 samples), lifting
    only from no freedom 1.

    A part of the half (``diagnose.build_case``'s part after a step) is allowed the
    split's count in proportion to the paired bins it holds of the half's ``pairs``."""

    samples: float
    lag: LagEstimate
    pairs: int = 0
    """The half's paired bins; 0: every part is allowed the whole count."""

    def allowed(self, pairs: int) -> float:
        """The independent samples ``pairs`` of the half's paired bins may claim."""
        if self.pairs <= 0:
            return self.samples
        return self.samples * min(1.0, pairs / self.pairs)

    def applied(self, metrics: Metrics, aligned: Aligned) -> Metrics:
        se, gls_se, n_eff = metrics.gain_se, metrics.gain_gls_se, metrics.gain_n_eff
        allowed = self.allowed(metrics.n)
        if n_eff > allowed or (n_eff <= NO_FREEDOM < allowed):
            se *= math.sqrt(n_eff / allowed)
            n_eff = allowed
        widen = math.sqrt(trend_inflation(aligned))
        return replace(metrics, gain_n_eff=n_eff, gain_se=se * widen,
                       gain_gls_se=gls_se * widen)


NO_FREEDOM = 2.0
"""Independent samples that leave a slope no degrees of freedom (its two parameters take
them: ``checks.gain_z`` is infinite), the least ``stats.effective_size`` gives."""


def trend_inflation(aligned: Aligned) -> float:
    """The variance inflation of a gain when a straight drift in time is a rival
    explanation, 1 / (1 - r^2) of the reference on time over the paired bins (infinite
    for a reference that is a straight line in time).

    Over half a day the reference is often mostly one rise or one fall (the morning's
    warming, the evening's humidity), and a unit whose error wanders over hours can run
    with it: a hygrometer's error went from -3.5 to +0.1 %RH over twelve hours while the
    air rose from 58 to 80 %RH, and its hourly means fitted a gain of 1.19 with residuals
    of 0.4 %RH. The gain is evidenced only by the part of the reference's variation that
    is not a trend in time, and its standard error is widened accordingly (a real span
    error acts at every turn of the reference, and keeps its evidence)."""
    keep = aligned.paired
    t, reference = np.asarray(aligned.t)[keep], np.asarray(aligned.reference)[keep]
    if t.size < 3 or not (np.ptp(t) > 0.0 and np.ptp(reference) > 0.0):
        return math.inf
    r = float(np.corrcoef(t, reference)[0, 1])
    if not math.isfinite(r) or abs(r) >= 1.0:
        return math.inf
    return 1.0 / (1.0 - r * r)


LATEST_SHARE = 0.5
"""The share of a window (its latest bins) judged again on its own where the whole window
left the gain indeterminate (``_gain_changed_lately``) or passed without a lag beyond
tolerance (``_lag_began_lately``)."""


@dataclass(frozen=True, slots=True)
class Comparison:
    """What a window was compared with, beyond the reference's values: passed on unchanged
    when a part of the window is judged again (``_gain_changed_lately``,
    ``_lag_began_lately``)."""

    reference_uncertainty: float | None = None
    offset_u: float = math.nan
    rms_u: float = math.nan
    baseline_residuals: FloatArray | None = None


def _gain_changed_lately(aligned: Aligned, spec: SensorSpec, units: Sequence[UnitCandidate],
                         lag: LagEstimate, comparison: Comparison) -> StreamVerdict | None:
    """The latest half of a passing window failing on its gain, or None.

    A gain that changed inside the window leaves one line fitted across two regimes: its
    slope lies between them, and its residuals, which follow the signal with one sign
    before the change and the other after, read as a noise so persistent that the slope
    stands on two independent samples (a thermometer whose span fell to 0.73 at midnight:
    over the 24 h window ending at 20:00 next day, gain 0.85 +- 0.06 "on 2 samples",
    residual std 0.35 degC; over its last twelve hours alone, 0.73 +- 0.003 with a
    residual std of 0.04). So where the whole window passes but cannot judge the gain, the
    latest half is judged as a window of its own (``min_samples`` in proportion, the
    whole window's lag, its gain weighed by ``LatestHalfGuard``), and a failure there on
    the gain is the window's verdict: the device as it is now is out of tolerance. Its
    figures are the half's (``StreamVerdict.judged_since``), its drift figures the whole
    window's against the baseline.

    One fixed half, not a searched change point: a split chosen for the best fit would
    pick, in a healthy unit's wander, the tail whose slope differs most, and judge it as
    if it had not been chosen. The half is one more test, made only where the window
    could not tell."""
    tail = latest(aligned, LATEST_SHARE)
    tol = spec.tolerance
    if tail is aligned or not _may_fail_on_gain(tail, tol, math.inf):
        return None
    split = split_lines(aligned, tail.start)
    if split is None or not split.latest_samples > 2.0 \
            or not _may_fail_on_gain(tail, tol, split.latest_samples):
        return None
    verdict = evaluate_aligned(tail, _half_spec(spec, tail, aligned), units,
                               reference_uncertainty=comparison.reference_uncertainty,
                               comparison_offset_u=comparison.offset_u,
                               comparison_rms_u=comparison.rms_u, latest_half=False,
                               guard=LatestHalfGuard(split.latest_samples, lag,
                                                    tail.n_paired))
    if verdict.status != "fail" or "gain" not in verdict.failed \
            or verdict.causes[0].cause != "gain_drift":
        return None
    onset = verdict.onset if verdict.onset is not None else split.at
    return _as_window_verdict(verdict, aligned, tail, spec, comparison, onset,
                              "the whole window's line straddles a change")


def _lag_began_lately(aligned: Aligned, judged: Aligned, spec: SensorSpec,
                      units: Sequence[UnitCandidate], lag: LagEstimate,
                      comparison: Comparison) -> StreamVerdict | None:
    """The latest half of a passing window failing on a clock lag, or None.

    A lag that began inside the window leaves the window's correlation of changes split
    between two peaks: at zero over the part before, at the lag over the part after. While
    the part before holds the greater share of the window's movement, the search places
    the window at zero (a CO2 unit five minutes late from 12:46, in the 6 h window ending
    16:00: zero lag over the whole window; over its latest half, wholly late, 300 s
    beating zero by eight standard errors). So the latest half, all of it after such a
    change wherever the lag holds for most of the window, is searched on its own, and a
    lag it resolves beyond tolerance, by the same hurdles as any window's
    (``lag.LagEstimate.resolved``), is the window's verdict where the half, judged with
    that lag, names it first. Its figures are the half's (``StreamVerdict.judged_since``).

    Not where the window's own search resolves a lag beyond tolerance (it fails on it),
    and not for a half (no half of a half). One search more a passing window; its hurdle
    was set for one search a window at a false lag in about 0.1 % of them
    (``lag.PEAK_MARGIN_Z``), and the half is one more try."""
    tol = spec.tolerance
    if lag_beyond_tolerance(lag, tol):
        return None
    tail = latest(judged, LATEST_SHARE)
    if tail is judged or tail.n_paired < max(tol.min_samples * LATEST_SHARE, MIN_COARSE_PAIRS):
        return None
    found = window_lag(tail, spec)
    if not lag_beyond_tolerance(found, tol):
        return None
    whole_tail = latest(aligned, LATEST_SHARE)
    verdict = evaluate_aligned(whole_tail, _half_spec(spec, whole_tail, aligned), units,
                               reference_uncertainty=comparison.reference_uncertainty,
                               comparison_offset_u=comparison.offset_u,
                               comparison_rms_u=comparison.rms_u, latest_half=False,
                               lag=found)
    if verdict.status != "fail" or "lag_s" not in verdict.failed \
            or verdict.causes[0].cause != "time_lag":
        return None
    return _as_window_verdict(verdict, aligned, whole_tail, spec, comparison, verdict.onset,
                              "the whole window's search did not resolve it")


def _half_spec(spec: SensorSpec, tail: Aligned, aligned: Aligned) -> SensorSpec:
    """``spec`` for a window's latest part judged on its own: ``min_samples`` in
    proportion to the bins it holds."""
    tol = spec.tolerance
    share = tail.t.size / max(aligned.t.size, 1)
    return replace(spec, tolerance=replace(
        tol, min_samples=max(MIN_COARSE_PAIRS, math.ceil(tol.min_samples * share))))


def _as_window_verdict(verdict: StreamVerdict, aligned: Aligned, tail: Aligned,
                       spec: SensorSpec, comparison: Comparison, onset: float | None,
                       why: str) -> StreamVerdict:
    """A latest half's failing verdict as the window's: its first cause says over what
    span it was found and why the whole window did not show it, its drift figures are the
    whole window's against the baseline."""
    top = verdict.causes[0]
    said = replace(top, evidence=f"over the window's latest half, since {iso(tail.start)} "
                                 f"({why}): {top.evidence}")
    figures = (None if comparison.baseline_residuals is None
               else drift(comparison.baseline_residuals, residuals(aligned),
                          spec.tolerance.bias))
    return replace(verdict, causes=(said, *verdict.causes[1:]), onset=onset, drift=figures,
                   judged_since=tail.start)


SCREEN_Z = 2.0
"""Standard errors the screen (``_may_fail_on_gain``) asks of the half's least-squares
gain, where the verdict asks at least ``checks.GAIN_Z`` of its decision gain: the screen
only spares the full judgement of halves that could not fail, and may let through more."""


def _may_fail_on_gain(tail: Aligned, tol: Tolerance, samples: float) -> bool:
    """Could the half fail on its gain at all? Its least-squares gain beyond the
    tolerance by ``SCREEN_Z`` of the standard error the guard would give it
    (``LatestHalfGuard``): a line and a correlation, where the full judgement of the half
    costs as much again as the window's. Of 111 probe days whose gain was indeterminate
    (a calm barometer, a thermometer against hourly means), 105 halves stopped here."""
    keep = tail.paired
    device, reference = np.asarray(tail.device)[keep], np.asarray(tail.reference)[keep]
    if device.size < 3:
        return False
    line = fit_line(device, reference)
    if not (math.isfinite(line.gain) and math.isfinite(line.gain_se)):
        return False
    se = line.gain_se * math.sqrt(device.size / min(samples, float(device.size)))
    se *= math.sqrt(trend_inflation(tail))
    return abs(line.gain - 1.0) - SCREEN_Z * se > tol.gain


@dataclass(frozen=True, slots=True)
class SplitLines:
    """Two least-squares lines over a window, split where they fit best (``split_lines``)."""

    at: float
    """Start of the first bin after the split: where the relation changed, if it did."""
    latest_samples: float
    """The independent samples the window's latest half may claim for its gain: the
    (conservative) AR(1) effective size of both lines' residuals over the whole window, in
    the latest half's share.

    A gain that changed inside the window leaves those residuals as white as the noise,
    for the two lines took the change; a unit's slow wander leaves them about as
    persistent as it is, for one split cannot take a wander of many turns, and the few
    samples that allows are then what the latest half's slope stands on. The half alone
    could not tell: half a window is too short for its own residuals to show a wander of
    hours (``checks.MIN_GAIN_SAMPLES``). The split is searched only to read the noise and
    date the change; the gain is judged on the fixed half."""


def split_lines(aligned: Aligned, latest_from: float) -> SplitLines | None:
    """``SplitLines`` of the window's paired bins, the samples counted for the part from
    ``latest_from`` on; None with fewer than ``2 * SPLIT_MIN_PAIRS`` pairs."""
    keep = aligned.paired
    device, reference = np.asarray(aligned.device)[keep], np.asarray(aligned.reference)[keep]
    t = np.asarray(aligned.t)[keep]
    n = int(device.size)
    k = two_line_split(reference, device, SPLIT_MIN_PAIRS)
    if k is None:
        return None
    parts = []
    for lo, hi in ((0, k), (k, n)):
        line = fit_line(device[lo:hi], reference[lo:hi])
        parts.append(device[lo:hi] - line.offset - line.gain * reference[lo:hi])
    residual = np.concatenate(parts)
    if not bool(np.all(np.isfinite(residual))):
        return None  # a part whose reference stood still has no line: nothing to count
    eff = effective_size(n, ar1_coefficient(residual))
    later = int(np.count_nonzero(t >= latest_from))
    return SplitLines(float(t[k]) - aligned.interval_s / 2.0, eff * later / n)


SPLIT_MIN_PAIRS = 4
"""Pairs each side of a split must hold for its line (``split_lines``)."""


FLAT_OUTPUT = "flat_output"
"""The pseudo-check a window fails when the device froze (``stuck``) or saturated
(``clipping``) although its figures are inside tolerance: a frozen value that happens to
sit near the reference still follows nothing."""


def _flat_alone(aligned: Aligned, spec: SensorSpec, metrics: Metrics, lag: LagEstimate,
                units: Sequence[UnitCandidate], before: LineBefore | None = None
                ) -> tuple[Case, tuple[Cause, ...]] | None:
    """A window within tolerance whose device repeated one value for a long spell while
    the reference was live: the case and its causes when they name ``stuck`` or
    ``clipping`` first, else None. The case is built only when such a spell exists."""
    run = longest_flat_run(aligned)
    tol = spec.tolerance
    if run is None or run.paired < stuck_run_needed(tol, aligned.n_paired):
        return None
    case = build_case(spec, aligned, metrics, lag, units, before=before)
    causes = diagnose(case)
    if not causes or not (causes[0].cause in ("stuck", "clipping") or (
            causes[0].cause == "unit_mismatch" and rounded_unit(case) is not None)):
        return None
    return case, causes


def indeterminate_metrics(metrics: Metrics, spec: SensorSpec) -> tuple[tuple[str, str], ...]:
    """The metrics this window holds too little evidence to judge either way."""
    if gain_evidence(metrics, spec.tolerance) == "indeterminate":
        return (("gain", excitation_note(metrics, spec.tolerance)),)
    return ()


def _pass_or_dropout(aligned: Aligned, spec: SensorSpec, metrics: Metrics,
                     figures: Drift | None) -> StreamVerdict:
    """A window whose figures are in tolerance still fails when the device was missing for
    most of it: what it did send agrees, but a device that is silent half the time leaves
    half the decisions built on its data without any (``DROPOUT_FAIL``)."""
    failing = _dropout_failure(aligned, spec, metrics, figures)
    if failing is None:
        return StreamVerdict("pass", "none", metrics, (), None, "", drift=figures)
    return failing


def _dropout_failure(aligned: Aligned, spec: SensorSpec, metrics: Metrics,
                     figures: Drift | None) -> StreamVerdict | None:
    """The window failing on the device's coverage alone (``DROPOUT_FAIL`` of the
    reference's bins without it), or None. Whether what it did send is enough to judge
    (a pass otherwise) or not (insufficient data otherwise): a device silent for most of a
    window in which the reference reported is a fault the window shows either way, and
    one that sent nothing at all shows it most."""
    drop = dropout_cause(aligned, spec.tolerance.min_samples)
    if drop is None or dropout_share(aligned) < DROPOUT_FAIL:
        return None
    severity: Severity = "major" if dropout_share(aligned) >= DROPOUT_MAJOR else "minor"
    action = action_for_dropout(aligned, spec)
    return StreamVerdict("fail", severity, metrics, (drop,), None, action, ("coverage",),
                         figures)


CAPPED_SPAN = frozenset({"gain_drift"})
"""What a window's figures cannot support where the device's readings are capped at a
range's end (``_beyond_the_edge``): its span (a line through capped readings flattens)."""


def _beyond_the_edge(aligned: Aligned, judged: Aligned, spec: SensorSpec,
                     units: Sequence[UnitCandidate] | None, lag: LagEstimate,
                     figures: Drift | None, comparison: Comparison,
                     before: LineBefore | None = None) -> StreamVerdict | None:
    """The window failing on what its censored pairs still show, or None: where
    ``censoring.uncensored`` left too few pairs to judge (``judged``) but the readings
    prove an rmse beyond the tolerance (``censoring.ErrorFloor.rms``, where the error points
    towards the end the device is capped at, which the cap can only understate), and the
    rmse over every pair, which the finding reports as failing, is beyond it too.

    Censoring keeps a line through the range's end unbiased; it is no reason to call a
    window that shows a fault "insufficient data". A dust sensor held at 0.0 through its
    first hour while the reference reads 5-9 ug/m3 leaves too few pairs away from the
    range's end, yet it is low by at least what it shows (a matrix fleet's four units with
    a model's shared offset lost that window). The figures are every pair's, the detectors
    read them, and the span, which a line through capped readings flattens, is
    indeterminate (``CAPPED_SPAN``). Against a peers' median the proof must clear the
    median's own error, as an rmse must (``checks.rmse_beyond_comparison``). The severity
    is the proof's alone, at the lower bound its independent samples allow (as an rmse's),
    whatever the causes: a window that would have been insufficient is failed on a bound,
    and one just past the tolerance is minor (those dust units are named a wrong unit or a
    stopped sensor, as the data allow, but not critical on eleven readings)."""
    tol = spec.tolerance
    if judged is aligned or aligned.n_paired < max(tol.min_samples, 3):
        return None
    floor = error_floor(aligned, spec)
    if floor is None or not floor.offset_supported:
        return None
    metrics = compute_metrics(aligned, lag=lag,
                              reference_uncertainty=comparison.reference_uncertainty)
    if not (math.isnan(comparison.offset_u) and math.isnan(comparison.rms_u)):
        metrics = against_uncertain_comparison(metrics, comparison.offset_u, comparison.rms_u)
    proven = rmse_beyond_comparison(floor.rms, metrics)  # a peers' median errs too
    if not (proven > tol.rmse and rmse_exceedance(metrics, tol) > 1.0):
        return None
    case = build_case(spec, aligned, metrics, lag,
                      default_unit_candidates(spec.unit) if units is None else units,
                      before=before)
    causes = tuple(c for c in diagnose(case) if c.cause not in CAPPED_SPAN) \
        or (unexplained(("rmse",), metrics, spec),)
    why = (f"too few pairs lie away from the range's end, where the device's readings are "
           f"capped, to judge it; its readings put the rmse at "
           f"{text.qty(floor.rms, spec.unit)} or more")
    # as the rmse's own severity: at the bound its few independent samples allow
    shown = proven * rmse_lower_bound(metrics) / metrics.rmse if metrics.rmse > 0.0 else proven
    return StreamVerdict("fail", severity_of_exceedance(ratio(shown, tol.rmse)), metrics,
                         causes, onset_of(case, causes[0].cause),
                         action_for_failure(causes, case, ("rmse",)), ("rmse",), figures,
                         (("gain", why),))


def against_uncertain_comparison(metrics: Metrics, offset_u: float, rms_u: float) -> Metrics:
    """``metrics`` judged against a comparison off the truth by ``offset_u`` and ``rms_u``
    (``Metrics.comparison_offset_u``), the bias interval widened to the margin it must
    clear (``checks.bias_margin``): the interval a finding states is the one it was
    judged by."""
    judged = replace(metrics, comparison_offset_u=offset_u, comparison_rms_u=rms_u)
    margin = bias_margin(judged)
    return replace(judged, bias_ci_low=judged.bias - margin, bias_ci_high=judged.bias + margin)


def evaluate_stream(
    device: Series,
    reference: Series,
    spec: SensorSpec,
    start: float,
    end: float,
    *,
    units: Sequence[UnitCandidate] | None = None,
    baseline_residuals: FloatArray | None = None,
    reference_uncertainty: float | None = None,
    reference_interval_s: float | None = None,
    comparison_offset_u: float = math.nan,
    comparison_rms_u: float = math.nan,
    latest_half: bool = True,
    lag: LagEstimate | None = None,
    before: LineBefore | None = None,
) -> StreamVerdict:
    """Judge ``device`` against ``reference`` over [start, end) by ``spec``'s tolerance.

    ``units`` are the (name, scale, offset) unit confusions to test a failure against;
    ``None`` uses a small built-in table for ``spec.unit``, ``()`` tests none.
    ``baseline_residuals`` are a known-good window's device - reference differences
    (``drift.baseline_residuals``); given, the verdict carries drift figures against them.
    ``reference_uncertainty`` is the reference's stated standard uncertainty for this
    sensor (``Reference.standard_uncertainty``); given, the gain is judged on the Deming fit.
    ``reference_interval_s`` is the interval the reference reports (or averages) at, from
    its profile; ``None`` takes it from its data. A coarser reference is compared with the
    device's means over its intervals (``align.on_time_base``). ``comparison_offset_u``,
    ``comparison_rms_u``, ``latest_half``, ``lag`` and ``before``: see
    ``evaluate_aligned``.
    """
    aligned, judged_spec = compared(device, reference, spec, start, end,
                                    reference_interval_s=reference_interval_s)
    return evaluate_aligned(aligned, judged_spec, units,
                            baseline_residuals=baseline_residuals,
                            reference_uncertainty=reference_uncertainty,
                            comparison_offset_u=comparison_offset_u,
                            comparison_rms_u=comparison_rms_u, latest_half=latest_half,
                            lag=lag, before=before)


def compared(device: Series, reference: Series, spec: SensorSpec, start: float, end: float,
             *, reference_interval_s: float | None = None) -> tuple[Aligned, SensorSpec]:
    """The two streams over [start, end) as every comparison sees them: the device's
    impossible values set aside (``within_reach``), on the comparison's time base
    (``align.on_time_base``), and ``spec`` on that base's interval (``on_interval``). A
    window, the readings a lag is confirmed on and those a device's calibration before a
    window is read from are put side by side the same way."""
    aligned = on_time_base(within_reach(device, spec), reference, spec.interval_s, start, end,
                           reference_interval_s=reference_interval_s)
    return aligned, on_interval(spec, aligned.interval_s)


def line_before(device: Series, reference: Series, spec: SensorSpec, start: float,
                end: float, pinned: float, *, reference_interval_s: float | None = None,
                window_s: float | None = None) -> LineBefore | None:
    """The device's calibration over [start, end), before a window it held ``pinned``
    through (``StreamVerdict.pinned_at_end``), on the comparison's time base: its line on
    the reference from the paired bins off that value (NaN figures with fewer such bins
    than the profile asks of a window, ``min_samples``, and three), and the paired bins of
    the last ``window_s`` (a third of the span by default: a window's length) before it
    last left the value, those at it included (``diagnose.censored_before``). None where
    neither can be had: fewer than three bins off the value, or no line (a reference
    that stood still).

    A hygrometer reading 15 %RH high sits at 99.9 through a wet day and night: its window
    holds nothing but 99.9, which a sensor stopped there would send too. Its readings of
    the days before, off 99.9, follow the reference 15 high, and that line carries it to
    99.9 wherever the reference was in the window (saturation, ``clipping``); a sensor that
    stopped at full scale has a line that does not (``stuck`` stands)."""
    aligned, judged_spec = compared(device, reference, spec, start, end,
                                    reference_interval_s=reference_interval_s)
    paired = np.asarray(aligned.paired)
    dev, ref = np.asarray(aligned.device)[paired], np.asarray(aligned.reference)[paired]
    t = np.asarray(aligned.t)[paired]
    off = ~held_at(dev, pinned)
    count = int(np.count_nonzero(off))
    if count < LINE_MIN_PAIRS:
        return None
    last = float(t[np.flatnonzero(off)[-1]])
    reach = (end - start) / LAG_CONFIRM_WINDOWS if window_s is None else window_s
    latest = (t > last - reach) & (t <= last)
    nan = math.nan
    line = fit_line(dev[off], ref[off]) if count >= judged_spec.tolerance.min_samples \
        else None
    if line is not None and not (math.isfinite(line.gain)
                                 and math.isfinite(line.residual_std)):
        return None
    diff = dev[off] - ref[off]
    return LineBefore(
        *((line.gain, line.offset, line.residual_std, line.r2, float(np.mean(diff)),
           float(np.std(diff)), line.gain_se) if line is not None else (nan,) * 7),
        count, float(t[off][-1] - t[off][0]),
        latest_device=dev[latest], latest_reference=ref[latest],
        latest_span_s=float(t[latest][-1] - t[latest][0]) + aligned.interval_s)


SPIKES_MAX_SHARE = 0.5
"""Impossible values are left out of a comparison only while they are a minority of the
window: a device whose readings are mostly beyond the range is not spiking, it is
reporting something else (another unit: the comparison is what can tell)."""


def within_reach(device: Series, spec: SensorSpec) -> Series:
    """The device's readings a comparison may use: all but impossible values, those beyond
    ``checks.plausible_bounds``, while they are fewer than ``SPIKES_MAX_SHARE`` of the
    readings (nulls stay: they are the device's own outages)."""
    low, high = plausible_bounds(spec)
    v = device.values
    keep = ~((v < low) | (v > high))
    if bool(keep.all()) or np.count_nonzero(~keep) >= SPIKES_MAX_SHARE * keep.size:
        return device
    return Series(device.ts[keep], v[keep])


MIN_COARSE_PAIRS = 3
"""On a coarser time base, ``min_samples`` (counted in the device's readings) is scaled to
the coarser intervals, and for a window's latest half (``_gain_changed_lately``) to its
share, but a line needs at least three pairs."""


def on_interval(spec: SensorSpec, interval_s: float) -> SensorSpec:
    """``spec`` as a comparison at ``interval_s`` sees it: the interval, and ``min_samples``
    scaled from the device's readings to intervals of that width."""
    if interval_s == spec.interval_s:
        return spec
    tol = spec.tolerance
    scaled = on_interval_samples(tol.min_samples, spec.interval_s, interval_s)
    return replace(spec, interval_s=interval_s, tolerance=replace(tol, min_samples=scaled))


def on_interval_samples(min_samples: int, own_interval_s: float, interval_s: float) -> int:
    """``min_samples`` readings at ``own_interval_s`` as intervals of ``interval_s`` (at
    least ``MIN_COARSE_PAIRS``; unchanged on the device's own interval). The reference
    group's vote takes the same count on its grid."""
    if interval_s <= own_interval_s:
        return min_samples
    return max(MIN_COARSE_PAIRS, math.ceil(min_samples * own_interval_s / interval_s))
