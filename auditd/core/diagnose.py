"""Why a stream fails: a list of small detectors, each reading one ``Case`` and returning a
``Cause`` or nothing, ranked by confidence.

Three rules keep the list honest. A time lag is undone before the systematic and noise
detectors look, so a late clock is not also reported as gain drift and noise. A clear step
in the difference restricts them to the data after it, so a shift at noon is not mistaken
for a gain (the day's warming would otherwise correlate with it). And some causes explain
others away: a stuck device has a gain of 0 and a huge bias, a device in degF has a gain
of 1.8, yet neither needs a recalibration.

Confidence is ``strength(distance beyond tolerance)`` times the share of the deviation a
cause accounts for: 0.5 at the tolerance (a borderline value may be a fluctuation), 0.85 at
twice it, approaching 0.97; a calibration cause is further weighted by how certain the
data are that its metric is really beyond tolerance rather than pushed there by noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar, cast

import numpy as np
from scipy.special import ndtr

from auditd import text
from auditd.core.align import Aligned, shift_device, since
from auditd.core.causes import EXPLAINS_AWAY
from auditd.core.censoring import censored_line, censored_normal
from auditd.core.checks import (
    MIN_EXCITATION_R2,
    exceedances,
    excited,
    gain_deviation,
    gain_evidence,
    ratio,
    rmse_beyond_comparison,
    rmse_exceedance,
)
from auditd.core.fit import (
    FLAT_RELATIVE,
    LineFit,
    Metrics,
    compute_metrics,
    fit_line,
    fit_line_consuming,
    held_at,
    is_flat,
)
from auditd.core.lag import UNDEFINED, LagEstimate
from auditd.core.onset import step_onset
from auditd.core.series import FloatArray
from auditd.core.stats import about_one_step, median
from auditd.core.units import (
    UnitCandidate,
    reading_step,
    rounded_fit,
    unit_candidates,
)
from auditd.model import Cause, SensorSpec, Tolerance, iso

MIN_CONFIDENCE = 0.15
"""Causes weaker than this are not worth a technician's attention."""

STUCK_STD_RATIO = 0.1
"""A device showing less than this share of the reference's variation is nearly constant."""
STUCK_FEW_VALUES = 3
STUCK_FEW_VALUES_STD_RATIO = 0.5
STUCK_RUN_SHARE = 0.25
"""An exactly repeated value over this share of the paired bins is a stuck spell."""

GAIN_T_MIN = 5.0
"""The gain's difference from 1 must be this many (optimistic) standard errors before
any of the mean bias is put down to it; a narrow reference range (pressure around
1013 hPa) cannot otherwise tell a gain from an offset, and an offset is the likelier."""

NOISE_BESIDES_SYSTEMATIC = 0.7
"""Scatter next to a (certain) systematic error is less certain: part of it may be a
drift the straight line does not model."""

MIN_SHARE = 0.2
UNIT_SLACK = 3.0
"""A unit candidate may leave this many tolerances of deviation (a device can be in the
wrong unit and a little off as well)."""
DROPOUT_MIN = 0.2
"""Device missing in this share of the bins where the reference had data, and of the
expected bins."""
DROPOUT_MIN_REFERENCE_BINS = 20
"""A share of fewer reference bins than this says nothing about the device, unless they
are as many as the audit itself needs to judge the stream (``dropout_cause``)."""


@dataclass(frozen=True, slots=True)
class FlatRun:
    first: int
    last: int
    """Bin indices (inclusive) of the longest spell of one exactly repeated device value."""
    paired: int


@dataclass(frozen=True, slots=True)
class LineBefore:
    """The device's calibration as the readings before a window show it: its line on the
    reference over the paired bins off the value it is pinned at in the window
    (``verdict.line_before``). What a window spent wholly at a range end cannot show
    itself: whether the device's own offset or gain carries it there (saturation,
    ``clipping``) or it stopped there (``stuck``)."""

    gain: float
    offset: float
    residual_std: float
    r2: float
    bias: float
    """mean(device - reference) over those bins."""
    difference_std: float
    """std(device - reference) over those bins."""
    gain_se: float
    """The slope's standard error (least squares, white noise: if anything too small)."""
    pairs: int
    span_s: float
    """From the first to the last of those bins. The figures above are NaN where fewer
    bins than a window asks were off the value (the device spent the span mostly there):
    then only the latest readings below speak."""
    latest_device: FloatArray = field(default_factory=lambda: np.empty(0), compare=False,
                                      repr=False)
    """The paired bins of the last window's length before the device last left the value,
    those held at it included (``censored_before``)..."""
    latest_reference: FloatArray = field(default_factory=lambda: np.empty(0), compare=False,
                                         repr=False)
    latest_span_s: float = math.nan
    """...their reference, and the span they cover."""


@dataclass(frozen=True, slots=True)
class CensoredBefore:
    """The device's calibration over the latest readings before a window it held at a
    range end, those held at the end counted as at or beyond it (``censored_before``)."""

    gain: float
    """The censored line's where it speaks, else 1 (``censored_before``)."""
    offset: float
    """The censored line's intercept, or the censored mean of device - reference."""
    std: float
    bias: float
    """The mean difference it implies over those bins."""
    pairs: int
    held: int
    """Of ``pairs``, at the end."""
    span_s: float


@dataclass(frozen=True, slots=True)
class ReferenceSpread:
    """What the detectors read of the reference values paired with the fault."""

    n: int
    low: float
    high: float
    mean: float
    std: float

    @classmethod
    def of(cls, ref: FloatArray) -> ReferenceSpread:
        if not ref.size:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        return cls(int(ref.size), float(ref.min()), float(ref.max()), float(ref.mean()),
                   _std(ref))


def _std(x: FloatArray, scratch: FloatArray | None = None) -> float:
    """``x.std()`` (the same number: same mean, same pairwise sum of squares) with its
    working array in ``scratch`` when given."""
    c = np.subtract(x, x.mean(), out=scratch)
    np.multiply(c, c, out=c)
    return float(math.sqrt(float(c.sum()) / x.size))


@dataclass(frozen=True, slots=True)
class Case:
    """Everything the detectors read, computed once."""

    spec: SensorSpec
    aligned: Aligned
    metrics: Metrics
    lag: LagEstimate
    lag_found: bool
    """A lag beyond tolerance that clearly beats zero lag."""
    corrected: Aligned
    """``aligned`` with such a lag undone (the same object when none was found)."""
    step: float | None
    """Start of a clear step in the corrected difference (``onset.step_onset``)."""
    fault: Aligned
    """``corrected`` from ``step`` on: gain, offset and noise are judged where the fault
    is, not diluted by (or confounded with) the healthy stretch before it."""
    fault_metrics: Metrics
    line: LineFit
    """Fit of the fault's pairs."""
    flat_run: FlatRun | None
    units: tuple[UnitCandidate, ...]
    fault_reference: ReferenceSpread | None = None
    """The reference over the fault's pairs, read once for every detector that needs it
    (``None``: computed on demand)."""
    before: LineBefore | None = None
    """The device's line over the readings before the window, where the caller read them
    for a window pinned whole at a range end (``Clip.from_before``); None otherwise."""
    memo: dict[str, object] = field(default_factory=dict, init=False, repr=False,
                                     compare=False)
    """What several detectors and the verdict ask of the case, kept the first time
    (``once``): ``stuck``, ``unit_mismatch``, ``clipping`` and the onset all read the
    stuck spell and the rounded unit, each a sort and a few passes over the window."""

    @property
    def reference_spread(self) -> ReferenceSpread:
        if self.fault_reference is not None:
            return self.fault_reference
        return ReferenceSpread.of(_paired(self.fault)[1])

    @property
    def tol(self) -> Tolerance:
        return self.spec.tolerance


Detector = Callable[[Case], Cause | None]

_T = TypeVar("_T")


def once(case: Case, name: str, compute: Callable[[Case], _T]) -> _T:
    """``compute(case)``, computed the first time ``name`` is asked of the case (its
    fields are frozen, so the answer cannot change)."""
    if name not in case.memo:
        case.memo[name] = compute(case)
    return cast(_T, case.memo[name])


def strength(distance: float) -> float:
    """Confidence that a deviation ``distance`` tolerances out is real and matters."""
    if not distance > 0.0:
        return 0.0
    if distance < 1.0:
        return 0.5 * distance
    return 0.97 - 0.47 / (distance * distance)


def lag_beyond_tolerance(lag: LagEstimate, tol: Tolerance) -> bool:
    return lag.resolved and not lag.below_resolution and abs(lag.lag_s) > tol.lag_s


def longest_flat_run(aligned: Aligned) -> FlatRun | None:
    """The longest spell in which every device value equals the one before (gaps skipped:
    a stuck device that also drops out is still stuck)."""
    finite = np.isfinite(aligned.device)
    v = np.asarray(aligned.device)[finite]
    if v.size < 2:
        return None
    limit = FLAT_RELATIVE * max(float(np.max(v)), -float(np.min(v)), 1e-300)
    step = np.diff(v)
    del v
    np.abs(step, out=step)
    same = step <= limit
    del step
    if not same.any():
        return None
    edges = np.diff(np.concatenate(([0], same.astype(np.int8), [0])))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    k = int(np.argmax(stops - starts))
    idx = np.flatnonzero(finite)
    first, last = int(idx[starts[k]]), int(idx[stops[k]])
    paired = int(np.count_nonzero(aligned.paired[first:last + 1]))
    return FlatRun(first, last, paired)


def build_case(
    spec: SensorSpec,
    aligned: Aligned,
    metrics: Metrics,
    lag: LagEstimate,
    units: Sequence[UnitCandidate] = (),
    weighed: Callable[[Metrics, Aligned], Metrics] | None = None,
    before: LineBefore | None = None,
) -> Case:
    """The failing window as the detectors read it: shifted by a lag beyond tolerance,
    and cut to the part after a step it holds, with its metrics recomputed there.
    ``weighed``: how the caller weighed the window's own metrics (a window's latest half:
    ``verdict.LatestHalfGuard.applied``), applied to the recomputed ones alike, so that
    no cause reads a part of the window more confidently than its whole was read.
    ``before``: ``Case.before``."""
    found = lag_beyond_tolerance(lag, spec.tolerance)
    corrected = shift_device(aligned, round(lag.lag_s / aligned.interval_s)) if found else aligned
    cm = _recomputed(corrected, weighed) if found else metrics
    dev, ref = _paired(corrected)
    diff = np.subtract(dev, ref)
    line = fit_line_consuming(dev, ref)  # copies, not needed any more
    del dev, ref
    rival = (line.n - 2) * line.residual_std**2 if math.isfinite(line.residual_std) else math.inf
    step = step_onset(np.asarray(corrected.t)[corrected.paired], diff,
                      spec.tolerance.bias, rival)
    del diff
    fault, fm = corrected, cm
    if step is not None:
        fault = since(corrected, step)
        fm = _recomputed(fault, weighed)
        line = fit_line_consuming(*_paired(fault))
    _, ref = _paired(fault)
    spread = ReferenceSpread.of(ref)
    del ref
    if fm is not metrics:  # the comparison is as uncertain over any part of the window
        fm = replace(fm, comparison_offset_u=metrics.comparison_offset_u,
                     comparison_rms_u=metrics.comparison_rms_u)
    return Case(spec, aligned, metrics, lag, found, corrected, step, fault, fm, line,
                longest_flat_run(aligned), tuple(units), spread, before)


def _recomputed(part: Aligned, weighed: Callable[[Metrics, Aligned], Metrics] | None
                ) -> Metrics:
    found = compute_metrics(part, lag=UNDEFINED, robust=False)
    return weighed(found, part) if weighed is not None else found


def _paired(aligned: Aligned) -> tuple[FloatArray, FloatArray]:
    keep = aligned.paired
    return np.asarray(aligned.device)[keep], np.asarray(aligned.reference)[keep]


def _distinct(x: FloatArray) -> int:
    scale = FLAT_RELATIVE * max(float(np.max(np.abs(x))), 1e-300)
    return int(np.unique(np.rint(x / scale)).size) if x.size else 0


def _since(case: Case) -> str:
    return f" since {iso(case.step)}" if case.step is not None else ""


def _run_reference_std(aligned: Aligned, run: FlatRun) -> float:
    ref = np.asarray(aligned.reference)[run.first:run.last + 1]
    ref = ref[np.isfinite(ref)]
    return float(ref.std()) if ref.size > 1 else 0.0


def device_quantum(aligned: Aligned) -> float:
    """The device's resolution as its data show it: the smallest gap between two distinct
    values it reported in the window (0 when it never changed). Its values lie on a grid
    no coarser than that; consecutive steps alone say less: a noisy unit's twenty readings
    before it froze stepped by 0.03 or more on a 0.01 grid, and that "resolution" made a
    reference moving 0.025 look still enough to excuse a day of one repeated value
    (13.85, 10.83, 12.95 and then 0.0 show a grid of 0.9 or finer, not 2.1)."""
    v = np.asarray(aligned.device)[np.isfinite(aligned.device)]
    if v.size < 2:
        return 0.0
    gaps = np.diff(np.unique(v))
    limit = FLAT_RELATIVE * max(float(np.max(np.abs(v))), 1e-300)
    gaps = gaps[gaps > limit]
    return float(gaps.min()) if gaps.size else 0.0


def reference_live(aligned: Aligned, run: FlatRun) -> bool:
    """The reference kept moving through the device's flat run, by more than one step of
    the device's resolution (so a healthy device of that resolution would have changed at
    least once), whatever the size of that movement against the tolerances: a sensor that
    repeats one value exactly for hours while the reference is live has stopped."""
    ref = np.asarray(aligned.reference)[run.first:run.last + 1]
    ref = ref[np.isfinite(ref)]
    if ref.size < 2 or is_flat(ref):
        return False
    return float(ref.std()) > device_quantum(aligned)


def stuck_spell(case: Case) -> FlatRun | None:
    """The longest flat run, if it is long enough (``STUCK_RUN_SHARE`` of the pairs and
    ``min_samples``) and the reference was live during it (``reference_live``)."""
    return once(case, "stuck_spell", _stuck_spell)


def _stuck_spell(case: Case) -> FlatRun | None:
    run = case.flat_run
    if run is None or run.paired < stuck_run_needed(case.tol, case.aligned.n_paired):
        return None
    if not reference_live(case.aligned, run):
        return None
    return run


def stuck_run_needed(tol: Tolerance, paired: int) -> float:
    """Paired bins a flat spell must hold to be stuck: ``min_samples`` and
    ``STUCK_RUN_SHARE`` of the window's ``paired`` bins."""
    return max(tol.min_samples, STUCK_RUN_SHARE * paired)


EDGE_SHARE = 0.005
"""A flat value within this share of the profile's span of one of its ends is pinned at
that end (a humidity sensor saturating at 99.9 %RH of a 0-100 range)."""


CLIP_AGREEMENT = 0.9
"""Share of a pinned spell in which the device's own line (fitted off the spell) puts it
at or beyond the pinned value, within two residual stds, for the spell to be saturation:
a sensor frozen at the day's peak sees the reference fall away for most of its spell."""


@dataclass(frozen=True, slots=True)
class Clip:
    """The device pinned at one value at the top or bottom of what it reports."""

    value: float
    high: bool
    share: float
    """Paired bins at that value / paired bins."""
    gain: float
    offset: float
    """Device-on-reference line of the paired bins off the pinned value: what carries the
    device to full scale."""
    bias: float = math.nan
    """mean(device - reference) off the pinned value."""
    from_before: LineBefore | None = None
    """Where the window holds too little off the pinned value: the readings before it,
    whose line gave ``gain``, ``offset`` and ``bias``..."""
    expected: float = math.nan
    """...and the share of the pinned bins in which it would put a working unit at or
    beyond the value (``_clip_before``)..."""
    censored: CensoredBefore | None = None
    """...where it was the latest readings' censored calibration that put it there."""


def clip_of(case: Case) -> Clip | None:
    """The device pinned at its window's maximum (or minimum): that value repeated exactly
    in at least ``CLIP_MIN_SHARE`` of the pairs, in spells of ``CLIP_MIN_SPELL`` on average
    (the spells a saturating sensor breaks into as its noise dips below full scale), and
    either at an end of the profile's range or where the device's own calibration (its
    line fitted off the pinned value) carries it while the reference stays inside the
    range. Stronger of the two ends when both qualify. Found once a case (``once``):
    ``stuck``, ``clipping`` and ``behind_clipping`` each ask, each a copy of the pairs and
    passes over them."""
    return once(case, "clip", _clip_of)


def _clip_of(case: Case) -> Clip | None:
    dev, ref = _paired(case.aligned)
    if dev.size < 3:
        return None
    found = [c for c in (_clip_at(case, dev, ref, True), _clip_at(case, dev, ref, False))
             if c is not None]
    return max(found, key=lambda c: c.share) if found else None


CLIP_INTERIOR_MIN_SPELLS = 2
"""Saturation inside the profile's range (a sensor capped at 95 %RH) shows as a level the
device returns to whenever its input crosses it; one unbroken stretch at a value, with the
reference on one side of it throughout, looks the same as a sensor frozen there, and
frozen is what it is taken for (the simpler fault, and the one whose action is right
either way: look at the unit). At a range end one stretch suffices: that is full scale."""

CLIP_MIN_SHARE = 0.05
CLIP_MIN_SPELL = 3.0
"""Pinned in at least 5 % of the pairs, three pairs a spell on average: a healthy sensor's
extreme value is a moment, a saturating one's is hours."""


def pinned_off_reference(value: float, ref: FloatArray, bias_tol: float) -> bool:
    """Whether the reference, while the device sat at ``value``, was off that value by
    more than the bias tolerance (median over the pinned pairs), either way: a hygrometer
    at 100 %RH while the air is at 99.5 %RH is right, not clipping; at 100 while the air
    is at 88 it is pinned there by its own error, and a sensor capped at 95 while the air
    is at 99 saturates below the truth."""
    if not ref.size:
        return False
    return abs(float(np.median(value - ref))) > bias_tol


def _clip_at(case: Case, dev: FloatArray, ref: FloatArray, high: bool) -> Clip | None:
    value = float(dev.max() if high else dev.min())
    pinned = held_at(dev, value)
    count = int(np.count_nonzero(pinned))
    if count < CLIP_MIN_SHARE * dev.size:
        return None
    if pinned.all():
        return _clip_before(case, value)
    spells = int(np.count_nonzero(np.diff(pinned.astype(np.int8)) == 1)) + int(pinned[0])
    if count < CLIP_MIN_SPELL * max(spells, 1):
        return None
    if not pinned_off_reference(value, ref[pinned], case.tol.bias):
        return None  # at full scale where the reference is too: a healthy reading
    at_edge = at_range_end(value, case.spec, high=high)
    free = ~pinned
    entered_for_good = spells == 1 and bool(pinned[-1])
    if at_edge and np.count_nonzero(free) < LINE_MIN_PAIRS:
        # too few readings off the end for the line that would carry it there: as a
        # window held there whole, the readings before it decide; where it left the end
        # for a reading or two in between and they do not explain it, the window's own
        # figures are read as before
        before = _clip_before(case, value)
        if before is not None or entered_for_good:
            return before
    line = fit_line(dev[free], ref[free]) if np.count_nonzero(free) >= LINE_MIN_PAIRS \
        else None
    gain, offset = (line.gain, line.offset) if line is not None else (math.nan, math.nan)
    sloped = line is not None and math.isfinite(gain) and gain > 0.0
    bias = float(np.mean(dev[free] - ref[free])) if free.any() else math.nan
    if not at_edge:
        if spells < CLIP_INTERIOR_MIN_SPELLS:
            return None  # one frozen stretch inside the range: stuck (``stuck``)
        if not sloped:
            return None
    if line is not None and (not at_edge or entered_for_good):
        # where the device would read: at or beyond the pinned value (within its own
        # scatter) nearly all the time, or the value is a frozen one, not a full scale.
        # At a range end, a device that leaves the end shows saturation by doing so; one
        # entered once and never left, while the device's own readings before it put it
        # well inside the range where the reference then was, is a change (a unit that
        # rounds to 0, a sensor that stopped), not full scale. Where the slope off the
        # end says nothing (not positive: a few pairs of noise), the offset alone
        # carries it.
        g, o, spread = ((gain, offset, line.residual_std) if sloped else
                        (1.0, bias, float(np.std(dev[free] - ref[free]))))
        reach = g * ref[pinned] + o + (2.0 if high else -2.0) * spread
        beyond = reach >= value if high else reach <= value
        if float(np.mean(beyond)) < CLIP_AGREEMENT:
            return None
    return Clip(value, high, count / dev.size, gain, offset, bias)


def same_value(a: float, b: float) -> bool:
    """One held value, to the rounding a mean of equal readings leaves (an hour of 99.9
    %RH averages to 99.89999999999992): within ``FLAT_RELATIVE`` of its size."""
    return abs(a - b) <= FLAT_RELATIVE * max(abs(a), abs(b), 1e-300)


def at_range_end(value: float, spec: SensorSpec, *, high: bool) -> bool:
    """Is ``value`` at the top (``high``) or bottom end of the profile's range, within
    ``EDGE_SHARE`` of its span?"""
    lo, hi = spec.range
    span = hi - lo
    if not math.isfinite(span):
        return False
    return value >= hi - EDGE_SHARE * span if high else value <= lo + EDGE_SHARE * span


LINE_MIN_PAIRS = 3
"""Pairs off a pinned value a line through them needs (``_clip_at``, ``pinned_whole_at_end``)."""


def pinned_whole_at_end(aligned: Aligned, spec: SensorSpec) -> float | None:
    """The value the device held in all but fewer than ``LINE_MIN_PAIRS`` of the window's
    paired bins, where it is the window's extreme at that end of the profile's range and
    the reference was off it (``pinned_off_reference``); None otherwise. Such a window
    cannot tell saturation from a stop by itself: the line that would carry the device
    there is fitted off the pinned value, and the window holds too little off it. The
    readings before the window can (``Case.before``): ``_clip_at`` asks them where it was
    held there whole, or entered the end once and held it to the window's end (one that
    leaves and comes back shows saturation by doing so)."""
    dev, ref = _paired(aligned)
    if dev.size < LINE_MIN_PAIRS:
        return None
    for value, high in ((float(dev.max()), True), (float(dev.min()), False)):
        pinned = held_at(dev, value)
        if (at_range_end(value, spec, high=high)
                and np.count_nonzero(~pinned) < LINE_MIN_PAIRS
                and pinned_off_reference(value, ref[pinned], spec.tolerance.bias)):
            return value
    return None


BEFORE_SLOPE_Z = 3.0
"""Standard errors within which the slope before the window must hold 1 for its mean
difference to stand for its calibration at other levels (``before_model``)."""


def before_model(before: LineBefore) -> tuple[float, float, float] | None:
    """(gain, offset, noise std) the readings before the window give the device: their
    line where it speaks (``before_sloped``); else their mean difference (gain 1, the
    difference's std), but only where their slope is 1 within ``BEFORE_SLOPE_Z``
    standard errors; else None, no calibration to carry (and None where too few readings
    were off the pinned value to fit either). A dust unit with a span of 0.5
    over calm air at 30 ug/m3 (r2 0.32: the line does not speak) shows a mean difference
    of -15 there, which carried to air at 8 would put it at 0.0, where its span puts it
    at 4 (a review's counter-example: its unit had changed, and it read 0.0)."""
    if not math.isfinite(before.bias):
        return None
    if before_sloped(before):
        return before.gain, before.offset, before.residual_std
    if math.isfinite(before.gain) and math.isfinite(before.gain_se) \
            and abs(before.gain - 1.0) > BEFORE_SLOPE_Z * before.gain_se:
        return None
    return 1.0, before.bias, before.difference_std


CENSORED_GAIN_TOLERANCES = 2.0
"""The latest readings' censored line is carried only with a slope within this many gain
tolerances of 1: what it excuses is an offset that held the unit at the end. A slope far
from 1 read off a span mostly at the end is the end's doing, not a calibration: a dust unit
sending mg/m3 (0.0 at one decimal, 0.1 through a smoke plume) fits a "line" of slope
0.0014 with r2 0.67, and a hygrometer frozen at 99.9 with three true readings between its
watchdog's resets one of 1.39 (a review's counter-examples, both excused as saturation
until this)."""


def censored_before(before: LineBefore, value: float, high: bool,
                    tol: Tolerance) -> CensoredBefore | None:
    """The device's calibration over the last window's length before it last left
    ``value`` (``LineBefore.latest_device``), its bins held at the value counted as at or
    beyond it (censored fits, ``censoring.censored_line`` and ``censoring.censored_normal``),
    chosen as ``before_model`` chooses: the line where it speaks, else the mean
    difference where the line's slope is 1 within its error; None otherwise, or where too
    few bins were off the value.

    Why the latest readings, and why censored: the readings off the value over three
    windows select the device's excursions away from the end (at low air only its upward
    noise gets off 0.0) and average an offset that may have been moving. A dust unit 20
    ug/m3 low over air at 8-20 is off 0.0 only at the afternoon peaks: a mean difference
    of -17 to -18 there, on a slope of 0.2-0.4 that no calibration is carried across; the
    censored fit of its last day gives a slope of 0.8-1.25 and a mean difference of -19
    to -21 (``tests/test_saturation_history.py``). Not with a slope far from 1
    (``CENSORED_GAIN_TOLERANCES``): a unit that changed its unit or stopped after a good
    calibration is not excused by the shape of its stop."""
    dev, ref = before.latest_device, before.latest_reference
    if dev.size == 0:
        return None
    held = held_at(dev, value)
    line = censored_line(ref, dev, held, value, upper=high)
    if line is None or abs(line.gain - 1.0) > CENSORED_GAIN_TOLERANCES * tol.gain:
        return None
    if line.r2 >= MIN_EXCITATION_R2:
        gain, offset, spread = line.gain, line.offset, line.std
    elif math.isfinite(line.gain_se) and abs(line.gain - 1.0) <= BEFORE_SLOPE_Z * line.gain_se:
        level = censored_normal(dev - ref, value - ref, held, upper=high)
        if level is None:
            return None
        gain, offset, spread = 1.0, level.mean, level.std
    else:
        return None
    return CensoredBefore(gain, offset, spread, offset + (gain - 1.0) * float(np.mean(ref)),
                          int(dev.size), int(np.count_nonzero(held)), before.latest_span_s)


def before_sloped(before: LineBefore) -> bool:
    """Does the line before the window speak (a positive slope over a reference that
    carried the device's variation, ``MIN_EXCITATION_R2``), or only its mean difference?"""
    return math.isfinite(before.gain) and before.gain > 0.0 \
        and before.r2 >= MIN_EXCITATION_R2


def _clip_before(case: Case, value: float) -> Clip | None:
    """A window held at a range end (``pinned_whole_at_end``), as the readings before it
    explain it (``Case.before``): saturation where a working unit with that calibration
    and noise would read at or beyond the pinned value in ``CLIP_AGREEMENT`` of its
    pinned bins (the mean, over them, of the chance that its line plus Gaussian noise of
    its residual std reaches the value), else None (a sensor that stopped there:
    ``stuck``). Saturation happens where the readings before could not show the device
    (at those levels it was pinned), so the calibration is carried beyond the levels it
    was measured at: only a line, or a mean difference where the slope is one within its
    error (``before_model``). Held there the whole window is
    what the device did; a calibration that would put it there half the time (8 %RH high
    with 3 %RH of noise over air at 86-96 %RH) does not explain it, though its line plus
    two stds touches 99.9 in nearly every bin (a review's counter-example, which that
    looser reach excused as saturation). The line speaks only where the reference carried
    the device's variation there (``MIN_EXCITATION_R2``), else the mean difference does,
    with the difference's std as its noise: a dust sensor's last 90 minutes before its
    unit changed, 31 noisy bins over a calm reference, fitted a slope of 2.9 that "carried"
    it to 0.0 (seed 5's ``f23``), where its mean difference, +3.7 ug/m3, carries it
    nowhere near.

    Where the readings off the value over the three windows do not carry it there, the
    latest window's length before the device last left it may, fitted with its bins at
    the value counted as at or beyond it (``censored_before``): an offset that ramped
    towards the end, or that held the device there most of the time, is understated by
    the readings that got away from it."""
    before = case.before
    if before is None or pinned_whole_at_end(case.aligned, case.spec) is None:
        return None
    dev, ref = _paired(case.aligned)
    ref = ref[held_at(dev, value)]
    high = at_range_end(value, case.spec, high=True)
    pinned_share = ref.size / max(case.aligned.n_paired, 1)
    model = before_model(before)
    if model is not None:
        expected = _expected_share(ref, value, high, *model)
        if expected >= CLIP_AGREEMENT:
            return Clip(value, high, pinned_share, before.gain, before.offset, before.bias,
                        before, expected)
    latest = censored_before(before, value, high, case.tol)
    if latest is None:
        return None
    expected = _expected_share(ref, value, high, latest.gain, latest.offset, latest.std)
    if expected < CLIP_AGREEMENT:
        return None
    return Clip(value, high, pinned_share, latest.gain, latest.offset, latest.bias, before,
                expected, latest)


def _expected_share(ref: FloatArray, value: float, high: bool, gain: float, offset: float,
                    spread: float) -> float:
    """The mean, over the references ``ref``, of the chance that a working unit of that
    calibration and Gaussian noise of std ``spread`` reads at or beyond ``value``."""
    gap = (gain * ref + offset - value) * (1.0 if high else -1.0)
    chance = ndtr(gap / spread) if spread > 0.0 else (gap >= 0.0).astype(np.float64)
    return float(np.mean(chance))


UNIT_ROUNDED_CONFIDENCE = 0.6
"""A held value that a unit candidate makes of the reference at the device's resolution:
named first and critical (above ``EXPLAIN_MIN_CONFIDENCE``), but short of the certainty a
line through the converted reference earns, since the same readings are what a sensor
stopped at that value would send."""

STUCK_BESIDE_UNIT = 0.4
"""``stuck`` named as the alternative beside such a unit: below ``EXPLAIN_MIN_CONFIDENCE``,
so that it hides neither the unit nor anything else."""


@dataclass(frozen=True, slots=True)
class RoundedUnit:
    """A flat spell, and every reading from some pair before it to the window's end, that
    a wrong unit explains at the device's resolution."""

    run: FlatRun
    value: float
    name: str
    scale: float
    offset: float
    step: float
    """The step the readings show (device's unit; ``units.reading_step``)."""
    first: int
    """Index (in the paired data) of the first pair the unit explains from on."""
    others: tuple[str, ...]
    """Further candidates that fit as well (coarser confusions of the same kind)."""


def rounded_unit(case: Case) -> RoundedUnit | None:
    """The device's long flat spell (``stuck_spell``), held while the reference is off it
    beyond the bias tolerance, and every reading from it (or from earlier) to the
    window's end, as a unit candidate makes them of the reference rounded at the step the
    readings show (``units.reading_step``: capped at the bias tolerance when they show
    none, since a device reporting in coarser steps would fail its audit by its rounding
    alone, and its firmware keeps its number format whatever unit it sends), give or take
    the tolerance; and not saturation: the readings before that stretch, where there are
    any, do not carry the device to the held value by their own line (``_carried``).

    A PM2.5 sensor sending mg/m^3 at one decimal holds 0.0 while the reference moves
    between 3 and 35 ug/m^3, and reads 0.1 when it passes 50: no line shows the factor
    0.001, but those readings are exactly what that unit makes of the reference, whereas
    a sensor frozen in place holds a value it was reading, and a sensor pinned at the
    bottom by its offset reads 5 or 10 when the air rises above that offset. What the data
    cannot rule out is a sensor that stopped at zero: ``stuck`` names it beside the unit.
    At that resolution a unit 1000 times too large and one a million times too large both
    read 0: the first in the caller's order is named (pint's common units; the fallback
    table's named units before its bare decimal factors), the others beside it."""
    return once(case, "rounded_unit", _rounded_unit)


def _rounded_unit(case: Case) -> RoundedUnit | None:
    if not case.units:
        return None
    run = stuck_spell(case)
    if run is None:
        return None
    tol = case.tol
    paired = np.asarray(case.aligned.paired)
    device = np.asarray(case.aligned.device)[paired]
    reference = np.asarray(case.aligned.reference)[paired]
    start = int(np.count_nonzero(paired[:run.first]))
    stop = start + run.paired
    value = float(case.aligned.device[run.first])
    if not pinned_off_reference(value, reference[start:stop], tol.bias):
        return None
    step = reading_step(value, device[start:], tol.bias)
    if not step > 0.0:
        return None
    slack = tol.bias + tol.gain * np.abs(reference)
    found: list[tuple[str, float, float, int]] = []
    for name, scale, shift in case.units:
        if scale == 0.0 or not math.isfinite(scale):
            continue
        if not rounded_from(device, reference, scale, shift, step, slack, start):
            continue  # the spell itself, or a reading after it, is no rounding of the unit
        misses = np.flatnonzero(~rounded_fit(device[:start], reference[:start], scale, shift,
                                             step, slack[:start]))
        first = int(misses[-1]) + 1 if misses.size else 0
        if _carried(device[:first], reference[:first], reference[first:][
                held_at(device[first:], value)],
                value, high=bool(np.median(reference[start:stop]) < value)):
            # its own line carries it there: saturation (``clipping``), for this candidate;
            # another may explain those readings too (found by hypothesis: x0.1 read the
            # 0.1s before the spell as a unit's readings carried to 0, and returning here
            # lost mg/m^3, which explains every reading)
            continue
        found.append((name, scale, shift, first))
    if not found:
        return None
    name, scale, shift, first = found[0]
    return RoundedUnit(run, value, name, scale, shift, step, first,
                       tuple(f[0] for f in found[1:]))


ROUNDING_CHUNK = 4096
"""Readings ``rounded_from`` converts at a time."""


def rounded_from(device: FloatArray, reference: FloatArray, scale: float, shift: float,
                  step: float, slack: FloatArray, start: int) -> bool:
    """Whether every reading from ``start`` on is the reference in that unit, rounded
    (``rounded_fit``), looked at a chunk at a time: a unit that does not make the held
    value of the reference misses in the spell's first readings, and the rest of the day
    need not be converted for each candidate unit."""
    for lo in range(start, device.size, ROUNDING_CHUNK):
        hi = lo + ROUNDING_CHUNK
        if not rounded_fit(device[lo:hi], reference[lo:hi], scale, shift, step,
                           slack[lo:hi]).all():
            return False
    return True


def _carried(dev: FloatArray, ref: FloatArray, ref_held: FloatArray, value: float, *,
             high: bool) -> bool:
    """Whether the device's line through ``dev`` on ``ref`` (the offset alone where the
    slope is not positive) puts it at or beyond ``value`` (within two residual stds) for
    ``CLIP_AGREEMENT`` of the references ``ref_held`` it held the value at: saturation."""
    if dev.size < 3 or not ref_held.size:
        return False
    return float(np.mean(_reaches(dev, ref, ref_held, value, high=high))) >= CLIP_AGREEMENT


def _reaches(dev: FloatArray, ref: FloatArray, ref_at: FloatArray, value: float, *,
             high: bool) -> np.ndarray:
    """Where the device's line through ``dev`` on ``ref`` (the offset alone where the
    slope is not positive) puts it at or beyond ``value`` (within two residual stds) at
    each of the references ``ref_at``."""
    line = fit_line(dev, ref)
    if math.isfinite(line.gain) and line.gain > 0.0:
        gain, offset, spread = line.gain, line.offset, line.residual_std
    else:
        diff = dev - ref
        gain, offset, spread = 1.0, float(np.mean(diff)), float(np.std(diff))
    reach = gain * ref_at + offset + (2.0 if high else -2.0) * spread
    return np.asarray(reach >= value if high else reach <= value)


# --------------------------------------------------------------------------- detectors


def _saturated_in_tolerance(case: Case, run: FlatRun) -> bool:
    """A flat spell at an end of the profile's range (within ``EDGE_SHARE`` of its span)
    while the reference stays within the bias tolerance of it: a sensor at its full scale
    because what it measures is there (a hygrometer at 100 %RH in fog), neither stuck nor
    clipping. Anywhere else a flat spell is in the range's interior.

    Not where the reference left the end by more than the tolerance, while the device
    stayed and its own line (fitted off the pinned value) would not have carried it there,
    in as many paired bins as a stuck spell must last (``stuck_run_needed``): a
    hygrometer that reached 100 %RH in a foggy night and held it, exactly, for ten hours
    after the air dried to 80 has stopped, though most of its spell was fog (seed 2's
    `f59`: the spell's median was the fog's, and three windows named the offset its
    frozen value made). A unit 2.7 %RH high with a gain of 1.05, both inside tolerance,
    at 100 while the air sits at 96.5 is carried there by its calibration; bins where the
    device said nothing (an outage inside the spell) are no evidence either way (both
    from a review)."""
    value = float(case.aligned.device[run.first])
    high = at_range_end(value, case.spec, high=True)
    low = at_range_end(value, case.spec, high=False)
    if not (high or low):
        return False
    spell = slice(run.first, run.last + 1)
    ref = np.asarray(case.aligned.reference)[spell][np.asarray(case.aligned.paired)[spell]]
    left = np.abs(value - ref) > case.tol.bias
    if left.any():
        dev_all, ref_all = _paired(case.aligned)
        free = ~held_at(dev_all, value)
        if np.count_nonzero(free) >= 3:
            left &= ~_reaches(dev_all[free], ref_all[free], ref, value, high=high)
    if np.count_nonzero(left) >= stuck_run_needed(case.tol, case.aligned.n_paired):
        return False
    return not pinned_off_reference(value, ref, case.tol.bias)


def stuck(case: Case) -> Cause | None:
    """Device (nearly) constant, over the window or a long spell, in the interior of what
    it reports, while the reference is live (``reference_live``: moving by more than the
    device's resolution). A flat spell at the device's extreme is ``clipping``. A held
    value that a wrong unit makes of the reference (``rounded_unit``) is named second,
    as the alternative the data cannot rule out (``STUCK_BESIDE_UNIT``)."""
    unit = rounded_unit(case)
    found = _stuck(case, clipping_named=unit is None)
    if found is None or unit is None:
        return found
    return Cause("stuck", min(found.confidence, STUCK_BESIDE_UNIT),
                 f"{found.evidence}; or a wrong unit rounded to that value (see "
                 f"unit_mismatch): if the unit setting is right, the sensor stopped")


def _stuck(case: Case, *, clipping_named: bool = True) -> Cause | None:
    unit = case.spec.unit
    run = stuck_spell(case)
    if run is not None and _saturated_in_tolerance(case, run):
        return None
    clip = clip_of(case) if clipping_named else None
    if run is not None and clip is not None \
            and same_value(float(case.aligned.device[run.first]), clip.value):
        return None
    dev, ref = _paired(case.aligned)
    if dev.size < 3:
        return None
    ref_lo, ref_hi = float(ref.min()), float(ref.max())
    moving = std_about_one_step(ref)
    ref_std = _std(ref, ref)
    del ref
    if not ref_std > max(device_quantum(case.aligned), 0.0) or is_flat(
            np.asarray(case.aligned.reference)[case.aligned.paired]):
        return None
    dev_std = _std(dev, np.empty_like(dev))
    std_ratio = dev_std / moving if moving > 0.0 else math.inf
    distinct = _distinct(dev) if std_ratio <= STUCK_FEW_VALUES_STD_RATIO else None
    whole = std_ratio <= STUCK_STD_RATIO or (
        distinct is not None and distinct <= STUCK_FEW_VALUES)
    confidence = 0.97 - 0.5 * std_ratio if whole else 0.0
    share = run.paired / dev.size if run is not None else 0.0
    if run is not None and 0.6 + 0.37 * share > confidence:
        evidence = (
            f"device repeated {text.qty(float(case.aligned.device[run.first]), unit)} "
            f"exactly for {text.bins(run.paired, case.aligned.interval_s, 'paired')} "
            f"({text.percent(share)} of the paired data) while the reference moved with "
            f"std {text.qty(_run_reference_std(case.aligned, run), unit)}"
        )
        return Cause("stuck", 0.6 + 0.37 * share, evidence)
    if confidence <= 0.0:
        return None
    distinct = _distinct(dev) if distinct is None else distinct
    evidence = (
        f"device held {text.qty(median(dev), unit)} (std {text.qty(dev_std, unit)}, "
        f"{distinct} distinct value{'s' if distinct != 1 else ''}) over "
        f"{text.bins(dev.size, case.aligned.interval_s, 'paired')} while the reference ranged "
        f"{text.num(ref_lo)} to {text.qty(ref_hi, unit)} "
        f"(std {text.qty(ref_std, unit)})"
    )
    return Cause("stuck", confidence, evidence)


STEP_MIN_SHARE = 0.05
"""The shorter side of ``std_about_one_step``'s split holds at least this share of the
values (and 3)."""


def std_about_one_step(x: FloatArray) -> float:
    """The std of ``x`` (in time order) about its best single step: two constant levels,
    split where they fit best. What the reference's movement is worth as evidence that a
    calm device stopped: a reference that stepped by 3.8 hPa inside the window (its own
    fault) has a std of 1.9 hPa, nearly all of it the step, and three of seven barometers
    that agreed with each other to 0.05 hPa, calm as the room, fell under the whole-window
    stuck rule (a held-out matrix fleet, three false alerts). A live reference's course
    over the window is not one step: its std about one stays of its order."""
    if not x.size:
        return 0.0
    residual = about_one_step(x, max(3, int(STEP_MIN_SHARE * x.size)))
    return float(math.sqrt(float(residual @ residual) / x.size))


def clipping(case: Case) -> Cause | None:
    """The device pinned at its top (or bottom) value for a long spell while the reference
    stays inside the range: saturation, named with its share and with the calibration that
    carries the device there (between the spells it follows the reference)."""
    clip = clip_of(case)
    if clip is None:
        return None
    found = rounded_unit(case)
    if found is not None and same_value(found.value, clip.value) and clip.from_before is None:
        return None  # the readings are what a wrong unit makes of the reference
    unit = case.spec.unit
    side = "top" if clip.high else "bottom"
    behind = ""
    if clip.censored is not None:
        latest = clip.censored
        slope = f" with gain {text.num(latest.gain, 4)}" if latest.gain != 1.0 else ""
        behind = (f"; over the {text.bins(latest.pairs, case.aligned.interval_s, 'paired')} "
                  f"of the {text.duration(latest.span_s)} before it last left that value "
                  f"({latest.held} of them at it, counted as at or beyond it), it read "
                  f"{text.qty(latest.bias, unit, sign=True)} off the reference{slope} "
                  f"(std {text.qty(latest.std, unit)}), with which a working unit would "
                  f"read {text.qty(clip.value, unit)} in {text.percent(clip.expected)} of "
                  f"these bins: saturated, not stopped")
    elif clip.from_before is not None:
        before = clip.from_before
        carried = (f"it followed the reference with gain {text.num(before.gain, 4)} and "
                   f"offset {text.qty(before.offset, unit, sign=True)} (a mean difference "
                   f"of {text.qty(before.bias, unit, sign=True)})"
                   if before_sloped(before) else
                   f"it read {text.qty(before.bias, unit, sign=True)} off the reference on "
                   f"average (std {text.qty(before.difference_std, unit)})")
        behind = (f"; over {text.bins(before.pairs, case.aligned.interval_s, 'paired')} in "
                  f"the {text.duration(before.span_s)} before the window, off that value, "
                  f"{carried}, with which a working unit would read "
                  f"{text.qty(clip.value, unit)} in {text.percent(clip.expected)} of these "
                  f"bins: saturated, not stopped")
    elif math.isfinite(clip.gain):
        behind = (f"; off the pinned value it follows the reference with gain "
                  f"{text.num(clip.gain, 4)} and offset {text.qty(clip.offset, unit, sign=True)}"
                  f", which carries it to {text.qty(clip.value, unit)} where the reference is "
                  f"still inside the range")
    evidence = (f"device pinned at {text.qty(clip.value, unit)}, the {side} of what it "
                f"reports, for {text.percent(clip.share)} of the paired data{behind}")
    return Cause("clipping", 0.6 + 0.37 * min(1.0, 4.0 * clip.share), evidence)


def time_lag(case: Case) -> Cause | None:
    if not case.lag_found:
        return None
    lag, tol = case.lag, case.tol
    zero = lag.corr_at_zero if math.isfinite(lag.corr_at_zero) else 0.0
    # a peak just over its hurdles is close to a coin toss; two standard errors clear of
    # them it is as sure as the data can make it
    clarity = min(1.0, 0.5 + 0.25 * lag.margin_z)
    confidence = strength(ratio(abs(lag.lag_s), tol.lag_s)) * clarity
    direction = "lags" if lag.lag_s > 0 else "leads"
    before = lag.confirmed_before_s
    over = (f" over the {text.duration(before)} before the window, which pointed to it but "
            "alone could not tell it from noise" if math.isfinite(before) else "")
    evidence = (
        f"device {direction} the reference by {text.duration(lag.lag_s)} (correlation of "
        f"changes {text.num(lag.peak_corr, 2)} at that lag vs {text.num(zero, 2)} at zero"
        f"{over}); tolerance ±{text.duration(tol.lag_s)}"
    )
    return Cause("time_lag", confidence, evidence)


def _systematic_distance(m: Metrics, tol: Tolerance) -> float:
    ex = exceedances(m, tol)
    return max(ex.get("bias", 0.0), ex.get("gain", 0.0))


def _beyond(value: float, limit: float, se: float) -> float:
    """Probability that |true value| exceeds ``limit`` given the estimate and its error."""
    if not (math.isfinite(value) and math.isfinite(se)):
        return 0.0
    if se <= 0.0:
        return 1.0 if abs(value) > limit else 0.0
    return 0.5 * (1.0 + math.erf((abs(value) - limit) / (se * math.sqrt(2.0))))


def systematic_certainty(case: Case) -> float:
    """How sure the data are that bias or gain is really out of tolerance, not pushed out
    by noise: a gain of 1.07 from a device with 2 degC of scatter may be 1.0.

    The bias's standard error assumes independent residuals, so this is optimistic for
    slowly wandering noise; the gain counts only where the window shows it beyond
    tolerance (``checks.gain_evidence``), with its effective-sample-size error."""
    m, tol = case.fault_metrics, case.tol
    sure = 0.0
    if m.n > 2 and math.isfinite(m.rmse) and math.isfinite(m.bias):
        diff_std = math.sqrt(max(m.rmse**2 - m.bias**2, 0.0) * m.n / (m.n - 1))
        sure = _beyond(m.bias, tol.bias, diff_std / math.sqrt(m.n))
    if gain_evidence(m, tol) != "beyond":
        return sure
    return max(sure, _beyond(m.gain - 1.0, tol.gain, m.gain_se))


def gain_share(case: Case) -> float:
    """Share of the systematic deviation carried by the slope rather than the intercept.

    The slope's part is what varies across the reference's range (|gain-1| * std(ref)),
    plus whatever of the mean bias a line through the unit's zero explains, the latter
    only when the gain is measurably different from 1 (``GAIN_T_MIN``). The intercept's
    part competes only while the mean difference is beyond the bias tolerance: an offset
    the tolerance allows is the unit's own, not a rival explanation of a failing slope (a
    thermometer 0.46 degC low, inside 0.5, with a span of 1.2 over a day that moved half
    a degree was given "unknown cause", the offset holding four fifths of the share).
    Not beside a lag beyond tolerance: a late device on a trending day fits a slope of its
    own, which would then take ``time_lag``'s place (a review counted 27 of 200 such
    windows named ``gain_drift``, 3 before).
    """
    m, line, ref = case.fault_metrics, case.line, case.reference_spread
    bias = abs(m.bias)
    if not math.isfinite(line.gain) or ref.n < 3 or gain_evidence(m, case.tol) != "beyond":
        return 0.0  # a gain the window cannot show beyond tolerance carries nothing
    slope = line.gain - 1.0
    varying = abs(slope) * ref.std
    t = abs(slope) / line.gain_se if line.gain_se > 0 else math.inf
    through_zero = 0.0
    if t >= GAIN_T_MIN and bias > 0.0:
        through_zero = through_zero_share(line.gain, ref.mean, m.bias)
    gain_part = math.hypot(varying, through_zero * bias)
    offset_part = (1.0 - through_zero) * bias \
        if bias > case.tol.bias or case.lag_found else 0.0
    total = gain_part + offset_part
    return gain_part / total if total > 0.0 else 0.0


OFFSET_CARRIES_RMSE = 0.5
"""Share of the mean squared difference a constant offset must account for (bias^2 /
rmse^2) before a window failing on its rmse alone is put down to that offset."""

OFFSET_FROM_RMSE_WEIGHT = 0.5
"""Confidence of such an offset relative to one the window shows beyond tolerance with
confidence: below ``EXPLAIN_MIN_CONFIDENCE``, so that it hides no other cause."""


def offset_behind_rmse(m: Metrics, tol: Tolerance) -> float:
    """Confidence that a window failing on its rmse, with a bias not beyond tolerance
    *with confidence*, fails because of a constant offset: the point bias beyond tolerance
    and carrying most of the mean squared difference (``OFFSET_CARRIES_RMSE``).

    Over a first hour of a coarse reference (six pairs, the difference +8 %RH give or take
    0.5) the autocorrelation estimate of six points leaves two effective samples, and a
    bias interval of ±16: the rmse fails, as it should, and the only thing the data say
    about it is the offset. Naming nothing ("unknown cause") would hide exactly that."""
    if not (math.isfinite(m.bias) and math.isfinite(m.rmse) and m.rmse > 0.0):
        return 0.0
    if rmse_exceedance(m, tol) <= 1.0 or abs(m.bias) <= tol.bias:
        return 0.0
    own = (1.0 - gain_through_zero(m, tol)) * m.bias
    carried = (own / m.rmse) ** 2
    if carried < OFFSET_CARRIES_RMSE or abs(own) <= tol.bias:
        return 0.0
    return OFFSET_FROM_RMSE_WEIGHT * carried * strength(ratio(abs(own), tol.bias))


def gain_through_zero(m: Metrics, tol: Tolerance) -> float:
    """The share of the mean difference a material slope accounts for by itself, through
    the unit's zero ((gain - 1) x mean reference / bias, in [0, 1]), where the window can
    judge a slope (``checks.excited``) and its least deviation is beyond tolerance; 0
    otherwise. A cell reading half the monitor is 15 ppb low at 30 ppb because of its
    span: that mean difference is the gain's, not an offset's.

    Only where that share is believable (``through_zero_share``)."""
    if not (excited(m, tol) and math.isfinite(m.bias) and m.bias != 0.0):
        return 0.0
    least, _ = gain_deviation(m)
    if not (math.isfinite(least) and least > tol.gain and math.isfinite(m.gain)
            and m.gain != 1.0):
        return 0.0
    # the OLS line passes through the means: offset = mean(dev) - gain mean(ref), and
    # mean(dev) = mean(ref) + bias
    mean_reference = (m.offset - m.bias) / (1.0 - m.gain)
    return through_zero_share(m.gain, mean_reference, m.bias)


def through_zero_share(gain: float, mean_reference: float, bias: float) -> float:
    """The share of the mean difference ``bias`` a slope ``gain`` makes through the unit's
    zero at the window's mean reference: (gain - 1) x mean / bias, in [0, 1], and 0 where
    that slope would make more than ``ZERO_PIVOT_RATIO`` times the observed difference (the
    intercept then cancels most of it: the line pivots near the data, not about zero).

    A span error of a gas sensor is a slope through its zero (an ozone cell at half its
    monitor's reading is 15 ppb low at 30 ppb: ratio 1). A barometer 4.5 hPa low after a
    slow offset ramp through a falling day fitted a gain of 0.76 with an intercept of
    +240 hPa: through zero that slope would be 242 hPa low, 54 times what it is, and it
    was credited with the whole 4.5 (three windows named ``gain_drift``). A unit
    calibrated at its operating point, whose span error pivots there, is the same case."""
    if not (math.isfinite(gain) and math.isfinite(mean_reference) and math.isfinite(bias)
            and bias != 0.0):
        return 0.0
    ratio_ = (gain - 1.0) * mean_reference / bias
    if ratio_ > ZERO_PIVOT_RATIO:
        return 0.0
    return float(np.clip(ratio_, 0.0, 1.0))


ZERO_PIVOT_RATIO = 5.0
"""How many times the observed mean difference a slope may make through the unit's zero
and still be credited with it (``through_zero_share``). The EPA units' thermometers
(gain 1.09-1.11, intercepts near -1 degC, sun and self-heating) make 2-3 times their mean
difference through zero and an ozone cell with a few ppb of offset 1-2 times: credited,
as before. A line whose intercept cancels all but a fiftieth (the barometer, 54 times)
pivots near the data."""


def offset_drift(case: Case) -> Cause | None:
    """A constant offset, named on the bias's own evidence: a window that fails on its
    gain alone, its mean difference inside tolerance, has no offset to name, however far
    the fitted line's intercept lies from 0 (a span error of 0.81 on a 21 degC room is
    +4 degC at 0 degC, an extrapolation, not a fault of its own)."""
    m, tol, unit = case.fault_metrics, case.tol, case.spec.unit
    distance = exceedances(m, tol).get("bias", 0.0)
    share = 1.0 - gain_share(case)
    if share < MIN_SHARE:
        return None
    if distance <= 1.0:
        behind_rmse = offset_behind_rmse(m, tol)
        if behind_rmse <= 0.0:
            return None
        return Cause("offset_drift", behind_rmse, _offset_evidence(case)
                     + f"; it carries {text.percent((m.bias / m.rmse) ** 2)} of the mean "
                       f"squared difference behind the failing rmse "
                       f"{text.qty(m.rmse, unit)}, though this window's "
                       f"{text.num(m.n_eff)} independent samples cannot place the bias "
                       f"beyond tolerance with confidence")
    return Cause("offset_drift", share * strength(distance) * systematic_certainty(case),
                 _offset_evidence(case))


def _offset_evidence(case: Case) -> str:
    m, tol, unit = case.fault_metrics, case.tol, case.spec.unit
    # a device that held one value has no slope: its fitted gain is rounding dust
    shown = 0.0 if m.r2 == 0.0 else m.gain
    gain = f" with gain {text.num(shown, 4)}" if math.isfinite(m.gain) else ""
    return (
        f"mean device-reference difference {text.qty(m.bias, unit, sign=True)} over "
        f"{text.bins(m.n, case.aligned.interval_s, 'paired')}{_since(case)}{gain}; "
        f"tolerance ±{text.qty(tol.bias, unit)}"
    )


def gain_behind_rmse(m: Metrics, tol: Tolerance) -> float:
    """Confidence that a window failing on its rmse, with a gain the window cannot place
    beyond tolerance *with confidence*, fails because of that gain: a slope the window
    can judge at all (``checks.excited``), its least deviation from 1 beyond tolerance,
    and the variation it puts into the difference, (gain - 1)^2 var(reference), carrying
    most of the mean squared difference (``OFFSET_CARRIES_RMSE``), as
    ``offset_behind_rmse`` asks of an offset.

    A day of hourly means of an ozone cell reading half of the agency's monitor (gain 0.5
    with r2 0.995) leaves its residuals two effective samples by their autocorrelation,
    so the gain's interval is unbounded; the rmse fails, and what the data say about it
    is the slope, not "unknown cause". The line fitted under AR(1) noise is not asked
    here (``checks.noise_model_agrees``): over a day of hourly means it rests on 23
    quasi-differences and disagrees often enough that the EPA units' thermometers (gain
    1.1, sun and self-heating) fell to "unknown cause" in a tenth of their windows, and
    one NO2 cell's windows to a unit mix-up the data do not show."""
    if not (math.isfinite(m.rmse) and m.rmse > 0.0 and excited(m, tol)):
        return 0.0
    if rmse_exceedance(m, tol) <= 1.0:
        return 0.0
    least, _ = gain_deviation(m)
    if not (math.isfinite(least) and least > tol.gain and math.isfinite(m.reference_std)):
        return 0.0
    carried = gain_carried(m, tol, least)
    if carried < OFFSET_CARRIES_RMSE:
        return 0.0
    return OFFSET_FROM_RMSE_WEIGHT * carried * strength(ratio(least, tol.gain))


def gain_carried(m: Metrics, tol: Tolerance, least: float) -> float:
    """Share of the mean squared difference a slope of ``least`` deviation carries: the
    variation it puts across the reference's range and the part of the mean difference
    it makes through the unit's zero (``gain_through_zero``)."""
    through = gain_through_zero(m, tol) * m.bias
    return min(1.0, ((least * m.reference_std) ** 2 + through**2) / m.rmse**2)


def gain_drift(case: Case) -> Cause | None:
    m, tol, unit = case.fault_metrics, case.tol, case.spec.unit
    if gain_evidence(m, tol) != "beyond":
        behind = gain_behind_rmse(m, tol)
        if behind <= 0.0:
            return None
        least, _ = gain_deviation(m)
        return Cause("gain_drift", behind, _gain_evidence(case) + (
            f"; it carries {text.percent(gain_carried(m, tol, least))}"
            f" of the mean squared difference behind the failing rmse "
            f"{text.qty(m.rmse, unit)}, though this window's {text.num(m.gain_n_eff)} "
            f"independent residuals cannot place the gain beyond tolerance with confidence"))
    distance = _systematic_distance(m, tol)
    share = gain_share(case)
    if distance <= 1.0 or share < MIN_SHARE:
        return None
    return Cause("gain_drift", share * strength(distance) * systematic_certainty(case),
                 _gain_evidence(case))


def _gain_evidence(case: Case) -> str:
    m, tol, unit = case.fault_metrics, case.tol, case.spec.unit
    lo, hi = case.reference_spread.low, case.reference_spread.high
    dev_lo, dev_hi = ((m.gain - 1.0) * x + m.offset for x in (lo, hi))
    return (
        f"gain {text.num(m.gain, 4)}{_since(case)} (offset "
        f"{text.qty(m.offset, unit, sign=True)}): the "
        f"difference runs from {text.qty(dev_lo, unit, sign=True)} at "
        f"{text.qty(lo, unit)} to {text.qty(dev_hi, unit, sign=True)} at "
        f"{text.qty(hi, unit)}; tolerance ±{text.num(tol.gain)}"
    )


def unit_mismatch(case: Case) -> Cause | None:
    """The readings follow a unit candidate's line through the reference
    (``units.unit_candidates``), or, held at one value, are what a candidate makes of the
    reference at the device's resolution (``rounded_unit``).

    The line is asked of a window whose bias or gain is beyond tolerance with confidence,
    and of one failing its rmse: a thermometer in degF over a smooth day is +37 degC off
    with a difference that wanders with the weather, leaving two independent samples and
    a bias interval too wide to place it beyond 0.5 degC, yet its line is 1.73 x reference
    + 32.3 over 3.9 to 11.4 degC. That match is the evidence (it must still leave at most
    ``UNIT_SLACK`` tolerances and remove ``MIN_EXPLAINED`` of the deviation, and the
    slope of a pure factor must be told apart from 1 at all, ``_slope_shown``); the
    bias's certainty is not."""
    m, tol, unit = case.fault_metrics, case.tol, case.spec.unit
    if not case.units:
        return None
    failing = _systematic_distance(m, tol) > 1.0 or rmse_exceedance(m, tol) > 1.0
    if not failing or not math.isfinite(m.gain):
        return _unit_rounded_cause(case)
    lo, hi = case.reference_spread.low, case.reference_spread.high
    allowed = UNIT_SLACK * (tol.bias + tol.gain * max(abs(lo), abs(hi)))
    matches = [c for c in unit_candidates(m.gain, m.offset, (lo, hi), case.units, allowed)
               if c.offset != 0.0 or _slope_shown(m)]
    if not matches:
        return _unit_rounded_cause(case)
    best = matches[0]
    shift = f" {text.qty(best.offset, unit, sign=True)}" if best.offset else ""
    evidence = (
        f"readings follow {text.num(best.scale, 4)} x reference{shift} "
        f"({best.name} where {unit} is expected) "
        f"within {text.qty(best.remaining, unit)} over {text.num(lo)} to {text.qty(hi, unit)};"
        f" fitted gain {text.num(m.gain, 4)}, offset {text.qty(m.offset, unit, sign=True)}"
    )
    return Cause("unit_mismatch", 0.95 * best.explained, evidence)


def _slope_shown(m: Metrics) -> bool:
    """Is the fitted slope told apart from 1 by its (autocorrelation-aware) standard error
    (``GAIN_T_MIN`` of them)? A unit that is a pure factor (ug/m3 for ppb, 1.88) has no
    other evidence than the slope, and a slope the data leave open matches a factor by
    chance: an NO2 cell whose hourly means barely followed a calm reference fitted a
    slope near 1.9 with an error as large and was named "ug/m3 for ppb" in two of the EPA
    month's windows. A unit with an offset (degF: +32) shows itself in the offset too,
    and is not asked this."""
    se = m.gain_se
    return math.isfinite(se) and abs(m.gain - 1.0) > GAIN_T_MIN * se


def _unit_rounded_cause(case: Case) -> Cause | None:
    found = rounded_unit(case)
    if found is None:
        return None
    clip = clip_of(case)
    if clip is not None and clip.from_before is not None and same_value(clip.value, found.value):
        return None  # the device's own calibration before the window puts it there
    unit = case.spec.unit
    paired = np.asarray(case.aligned.paired)
    device = np.asarray(case.aligned.device)[paired][found.first:]
    ref = np.asarray(case.aligned.reference)[paired][found.first:]
    lo, hi = float(ref.min()), float(ref.max())
    shift = f" {text.num(found.offset, 4, sign=True)}" if found.offset else ""
    others = f" (as would {', '.join(found.others)})" if found.others else ""
    held = int(np.count_nonzero(device == found.value))
    rest = device.size - held
    besides = ("" if not rest else ", and its other reading is that too" if rest == 1
               else f", and its {rest} other readings are that too")
    evidence = (
        f"device held {text.qty(found.value, unit)} in {held} of "
        f"{text.bins(device.size, case.aligned.interval_s, 'paired')} while the reference "
        f"ranged {text.num(lo)} to {text.qty(hi, unit)}: {text.num(found.scale, 4)} x "
        f"reference{shift} ({found.name} where {unit} is expected) is "
        f"{text.num(found.scale * lo + found.offset, 3)} to "
        f"{text.num(found.scale * hi + found.offset, 3)}, which a device reporting in steps "
        f"of {text.num(found.step, 3)} sends as {text.num(found.value)}{besides}{others}; a "
        f"sensor stopped at that value would send the same"
        f"{_pinned_by_offset(case, found, rest, lo, hi)}"
    )
    return Cause("unit_mismatch", UNIT_ROUNDED_CONFIDENCE, evidence)


def _pinned_by_offset(case: Case, found: RoundedUnit, rest: int, lo: float, hi: float) -> str:
    """The third reading of a device that held a range end and nothing else while the
    reference moved between ``lo`` and ``hi``: an offset that carries it beyond the end
    at every reference value, which the end then clamps (a dust sensor's offset of -17
    ug/m3 in clean air reads 0.0, as mg/m3 at one decimal does). Named in the evidence,
    not ranked: the window cannot tell it from the unit, and the windows before, where
    the offset may show pinning the device more and more, are not this window's."""
    bottom, top = case.spec.range
    unit = case.spec.unit
    if rest:
        return ""  # readings off the held value: what the unit makes of the air, no clamp
    if found.value == bottom:
        return (f", and so would an offset of {text.qty(bottom - hi, unit, sign=True)} or "
                f"lower, which holds it at the bottom of its range")
    if found.value == top:
        return (f", and so would an offset of {text.qty(top - lo, unit, sign=True)} or "
                f"higher, which holds it at the top of its range")
    return ""


def noise(case: Case) -> Cause | None:
    """Scatter about the fitted line beyond the rmse tolerance (or ruining r2): a fault of
    its own, since fixing any offset or gain would still leave the rmse out."""
    m, tol, unit = case.fault_metrics, case.tol, case.spec.unit
    resid = m.residual_std
    if not (math.isfinite(resid) and math.isfinite(m.rmse) and m.rmse > 0.0):
        return None
    ex = exceedances(m, tol)
    distance = max(ratio(rmse_beyond_comparison(resid, m), tol.rmse), ex.get("r2", 0.0))
    if distance <= 1.0:
        return None
    systematic_ok = ex.get("bias", 0.0) <= 1.0 and ex.get("gain", 0.0) <= 1.0
    evidence = (
        f"scatter about the device-on-reference line {text.qty(resid, unit)} (residual std, "
        f"r2 {text.num(m.r2)}) {'while' if systematic_ok else 'besides'} bias "
        f"{text.qty(m.bias, unit, sign=True)} and gain {text.num(m.gain, 4)}; rmse tolerance "
        f"{text.qty(tol.rmse, unit)}"
    )
    weight = 1.0 - (1.0 - NOISE_BESIDES_SYSTEMATIC) * systematic_certainty(case)
    return Cause("noise", weight * strength(distance), evidence)


DROPOUT_FAIL = 0.5
"""Missing in at least half the bins where the reference reported: the stream fails on
``dropout`` even when what the device did send agrees with the reference."""
DROPOUT_MAJOR = 0.8


def dropout_share(aligned: Aligned) -> float:
    """The share of the reference's bins in which the device had no value."""
    ref_bins = int(np.count_nonzero(np.isfinite(aligned.reference)))
    return 1.0 - aligned.n_paired / ref_bins if ref_bins else 0.0


def dropout_cause(aligned: Aligned, min_samples: int | None = None) -> Cause | None:
    """Device silent (or null) in many bins where the reference had data.

    The reference's bins must be ``DROPOUT_MIN_REFERENCE_BINS``, or at least the
    ``min_samples`` an audit of the stream needs on this grid: three hours against a
    10-minute reference are 18 bins, and a device absent from all 18 is as surely silent
    as a verdict on 18 pairs is sure (it said "no action yet: 0 paired values")."""
    ref_bins = int(np.count_nonzero(np.isfinite(aligned.reference)))
    needed = DROPOUT_MIN_REFERENCE_BINS
    if min_samples is not None:
        needed = min(needed, max(min_samples, 3))
    if ref_bins < needed:
        return None
    missing = 1.0 - aligned.n_paired / ref_bins
    if missing < DROPOUT_MIN or aligned.device_coverage > 1.0 - DROPOUT_MIN:
        return None
    dev_bins = int(np.count_nonzero(np.isfinite(aligned.device)))
    interval = aligned.interval_s
    evidence = (
        f"device values in {dev_bins} of {text.bins(aligned.expected_bins, interval, 'expected')}"
        f" ({text.percent(aligned.device_coverage)}) while the reference had {ref_bins}; "
        f"{aligned.device_nulls} device readings were null"
    )
    return Cause("dropout", min(0.9, missing), evidence)


def dropout(case: Case) -> Cause | None:
    return dropout_cause(case.aligned, case.tol.min_samples)


DETECTORS: tuple[Detector, ...] = (
    stuck, clipping, unit_mismatch, time_lag, offset_drift, gain_drift, noise, dropout,
)

EXPLAIN_MIN_CONFIDENCE = 0.5
"""A cause hides those it explains away (``causes.EXPLAINS_AWAY``) from this confidence."""


def rank(causes: Sequence[Cause]) -> tuple[Cause, ...]:
    """Drop the causes a confident stronger explanation accounts for; best first."""
    hidden: set[str] = set()
    for c in causes:
        if c.confidence >= EXPLAIN_MIN_CONFIDENCE:
            hidden |= EXPLAINS_AWAY.get(c.cause, frozenset())
    kept = [c for c in causes if c.cause not in hidden and c.confidence >= MIN_CONFIDENCE]
    return tuple(sorted(kept, key=lambda c: -c.confidence))


def diagnose(case: Case, detectors: Sequence[Detector] = DETECTORS) -> tuple[Cause, ...]:
    return behind_clipping(case, rank([c for detect in detectors
                                       if (c := detect(case)) is not None]))


def behind_clipping(case: Case, causes: tuple[Cause, ...]) -> tuple[Cause, ...]:
    """Clipping is the symptom of the calibration error that carries a device to full
    scale: where the readings off the pinned value are themselves off the reference
    beyond tolerance (an offset, or a gain), that error comes first (it is what the
    technician corrects), clipping right after it with its share. A device that saturates
    while reading right elsewhere (its full scale set too low) is clipping first."""
    if not causes or causes[0].cause != "clipping":
        return causes
    clip = clip_of(case)
    if clip is None:
        return causes
    tol = case.tol
    wanted = []
    if abs(clip.bias) > tol.bias:
        wanted.append("offset_drift")
    if math.isfinite(clip.gain) and abs(clip.gain - 1.0) > tol.gain:
        wanted.append("gain_drift")
    behind = next((c for c in causes if c.cause in wanted), None)
    if behind is None and _pinned_beyond_reference(case, clip):
        behind = next((c for c in causes if c.cause in ("offset_drift", "gain_drift")), None)
    if behind is None:
        return causes
    figures = _before_figures(clip, case) if clip.from_before is not None else ""
    if figures and figures not in behind.evidence:  # ``behind_clipping`` runs twice
        behind = replace(behind, evidence=f"{behind.evidence}; {figures}")
    return (behind, *(c for c in causes if c.cause != behind.cause))


def _before_figures(clip: Clip, case: Case) -> str:
    """What the readings before a window held at a range end show of the error that holds
    it there: the window's own figures, at the end, can only understate it."""
    before = clip.from_before
    assert before is not None
    unit = case.spec.unit
    side = "top" if clip.high else "bottom"
    if clip.censored is not None:
        return (f"held at the {side} of its range, this window can only understate it: in "
                f"the {text.duration(clip.censored.span_s)} before it last left "
                f"{text.qty(clip.value, unit)}, its readings there counted as at or beyond "
                f"it, the mean difference was {text.qty(clip.censored.bias, unit, sign=True)}")
    slope = f" (gain {text.num(before.gain, 4)})" if before_sloped(before) else ""
    return (f"held at the {side} of its range, this window can only understate it: before "
            f"the window, off {text.qty(clip.value, unit)}, the mean difference was "
            f"{text.qty(before.bias, unit, sign=True)}{slope}")


def _pinned_beyond_reference(case: Case, clip: Clip) -> bool:
    """The device sat at its end on the far side of the reference (above it at the top,
    below it at the bottom): something carried it past the truth towards that end, and a
    sensor cannot read past the truth on its own. Where the offset or gain detector names
    that error (on the fault's pairs, since the onset) while the readings off the pinned
    value dilute it (the healthy hour before the onset is off the pinned value too), that
    error is still what the technician corrects. A sensor capped short of the truth (the
    reference beyond its pinned value) saturates on its own: clipping stays first."""
    dev, ref = _paired(case.aligned)
    pinned = held_at(dev, clip.value)
    if not pinned.any():
        return False
    median_gap = float(np.median(clip.value - ref[pinned]))
    return median_gap > 0.0 if clip.high else median_gap < 0.0
