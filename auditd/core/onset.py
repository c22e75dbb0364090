"""When did the deviation begin?

Version 2 segments the device-reference difference (paired bins, time order) by change-
point detection, then asks of each change point whether the deviation *began* there.

1. PELT (pruned exact linear time; Killick, Fearnhead & Eckley 2012) splits the series
   into segments, each a straight line in time, minimising the summed squared error plus a
   BIC-like penalty per segment (``PENALTY_PARAMS`` x ln n x the noise variance). Lines
   rather than constants, because a fault is a step (a knock, a firmware change) *or* a
   ramp (fouling, a drifting electrochemical cell): a constant-mean segmentation cuts a ramp
   into a staircase whose first stair starts late. Pruning keeps it near O(n) in practice.
   The noise variance comes from the first differences' MAD, which autocorrelated noise
   underestimates; the result is extra change points, harmless because step 2 filters them.
2. A change point k is an onset if the "healthy, then faulty" model (a constant before k,
   a line after it) is clear: the constant is inside tolerance, the line reaches at least
   one tolerance away from it, the model explains ``MIN_EXPLAINED`` of the variance and
   fits better than the caller's rival explanation (a gain error makes the difference
   follow the signal, which a segmentation would mistake for a fault beginning at dusk).
   Of the clear ones, the best fitting wins.

It answers only when that is unambiguous, because an onset invented for a deviation older
than the window is worse than none: a device off since before the window has no healthy
first segment and gets no onset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import fdtri

from auditd.core.series import FloatArray
from auditd.core.stats import mad, median

MIN_SEGMENT_FRACTION = 0.02
MIN_SEGMENT_BINS = 5
MIN_EXPLAINED = 0.5
"""Share of the difference's variance the healthy-then-faulty model must explain."""
PENALTY_PARAMS = 3.0
"""Parameters a new segment costs (intercept, slope, its position): BIC's k ln n sigma^2."""
MAD_TO_STD = 1.4826
PELT_MAX_POINTS = 720
"""Longer series are segmented on block means (see ``coarse_pelt``): PELT costs up to
n² without pruning, and 720 points (two-minute blocks of a day) keep it to milliseconds;
``refine`` puts the onset back at full resolution."""
REGIME_CHUNK = 4096
"""Points read at a time by ``_Chunks`` (rounded to whole PELT blocks)."""
LONG_LAG = 10
MAX_PHI = 0.95
"""Noise scale estimation: see ``noise_variance``."""


@dataclass(frozen=True, slots=True)
class Split:
    index: int
    """First element of the faulty regime."""
    before: float
    """Mean of the healthy regime."""
    after: float
    """The faulty line's value furthest from ``before`` (at one end of the regime)."""
    explained: float
    """1 - SSE(regimes) / SSE(one mean)."""
    sse: float


class _Sums:
    """Prefix sums that give any segment's straight-line SSE in O(1)."""

    def __init__(self, t: FloatArray, x: FloatArray) -> None:
        # one (5, n + 1) block, so that one subtraction gives a segment's five sums
        self.pre = np.empty((5, x.size + 1))
        self.pre[:, 0] = 0.0
        np.cumsum(t, out=self.pre[0, 1:])
        np.cumsum(x, out=self.pre[2, 1:])
        for row, (a, b) in ((1, (t, t)), (3, (x, x)), (4, (t, x))):
            # the products, summed where they are written: no temporary of the series' size
            dest = self.pre[row, 1:]
            np.cumsum(np.multiply(a, b, out=dest), out=dest)

    def block_sse(self, s: np.ndarray, e: np.ndarray) -> np.ndarray:
        """SSE of the least-squares line through every segment [s[i], e[j]) at once, as
        an (s, e) array."""
        sums = self.pre.take(e, axis=1)[:, None, :] - self.pre.take(s, axis=1)[:, :, None]
        return _line_sse(sums, np.subtract.outer(e, s).T.astype(np.float64))


def min_segment(n: int) -> int:
    return max(MIN_SEGMENT_BINS, int(MIN_SEGMENT_FRACTION * n))


def noise_variance(x: FloatArray) -> float:
    """The long-run noise variance, robustly: what a segment mean really scatters by.

    First differences' MAD gives 2 sigma^2 (1 - phi) for AR(1) noise, differences
    ``LONG_LAG`` apart give about 2 sigma^2; their ratio estimates phi, and the long-run
    variance sigma^2 (1 + phi) / (1 - phi) follows. White-noise variance alone would let
    slowly wandering noise (phi 0.8) cut a healthy day into dozens of segments. MADs keep a
    step or a ramp from inflating the estimate, as long as fewer than half the differences
    straddle it: the lag is at most a sixth of the series (``long_lag``). A day of hourly
    pairs with a 3.5 hPa step at its twelfth hour had 10 of its 14 lag-10 differences
    across the step, a "noise" variance of 20.6 for a scatter of 0.7 (6.5 times it in
    std), and no onset."""
    lag = long_lag(int(x.size))
    if lag < 1 or x.size < 2 * lag:
        return 0.0
    short = _mad_var(np.diff(x)) / 2.0
    long = _mad_var(x[lag:] - x[:-lag]) / 2.0
    if not long > 0.0:
        return short
    phi = float(np.clip(1.0 - short / long, 0.0, MAX_PHI))
    return long * (1.0 + phi) / (1.0 - phi)


def long_lag(n: int) -> int:
    """``LONG_LAG``, or a sixth of a shorter series (a step is then straddled by at most
    a fifth of the lagged differences, which leaves their median alone); 0 below 12
    values, as below 20 before: series of 12-19 values now get a noise scale where they
    had none (a review measured, at 18 values, onsets invented in healthy series 30 -> 7
    of 400, steps dated 400 -> 256 of 400: fewer answers, fewer wrong ones)."""
    return min(LONG_LAG, n // 6) if n >= 12 else 0


def _mad_var(d: FloatArray) -> float:
    return (MAD_TO_STD * mad(d)) ** 2


def pelt(t: FloatArray, x: FloatArray, penalty: float, min_size: int) -> list[int]:
    """Change points (first index of each segment after the first) of the piecewise-linear
    segmentation minimising SSE + ``penalty`` per segment, segments at least ``min_size``.

    The segment ends are taken ``min_size`` at a time: every start a segment ending in
    such a block may use lies before the block, so its optimal cost is already known and
    the block's costs are one (starts x ends) array operation instead of a Python step per
    end."""
    n = int(x.size)
    if n < 2 * min_size:
        return []
    sums = _Sums(t, x)
    best = np.full(n + 1, np.inf)
    best[0] = -penalty
    last = np.zeros(n + 1, dtype=np.intp)
    ready = np.zeros(0, dtype=np.intp)
    for e0 in range(min_size, n + 1, min_size):
        ends = np.arange(e0, min(e0 + min_size, n + 1))
        # starts become usable once a segment to the block's ends would be long enough
        fresh = np.arange(e0 - min_size, ends[-1] - min_size + 1)
        ready = np.concatenate((ready, fresh[np.isfinite(best[fresh])]))
        if not ready.size:
            continue
        cost = sums.block_sse(ready, ends)
        cost += best[ready, None]
        short = ends[None, :] - ready[:, None] < min_size
        cost[short] = np.inf
        i = np.argmin(cost, axis=0)
        low = cost[i, np.arange(ends.size)]
        best[ends] = low + penalty
        last[ends] = np.where(np.isfinite(low), ready[i], 0)
        # PELT pruning: a start that cannot beat the optimum now never will (SSE costs
        # only grow as a segment lengthens).
        beaten = cost > best[ends]
        beaten &= ~short
        ready = ready[~beaten.any(axis=1)]
    points, e = [], n
    while e > 0:
        e = int(last[e])
        if e > 0:
            points.append(e)
    return sorted(points)


class _Chunks:
    """The normalised times and the shifted difference of a long series, read a chunk at a
    time: the running sums ``_Sums`` keeps for a whole series (five arrays of its size)
    are made chunk by chunk, so the working memory is a few chunks, not the series five
    times over. Reading it is two passes: totals (and PELT's block means) first, then the
    split SSEs, which need the totals."""

    def __init__(self, t: FloatArray, diff: FloatArray, shift: float, block: int) -> None:
        self.t, self.diff, self.shift, self.n = t, diff, shift, int(diff.size)
        self.t0 = float(t[0])
        self.span = max(float(t[-1] - t[0]), 1e-9)
        self.size = block * max(1, REGIME_CHUNK // block)
        cut = (self.n // block) * block
        self.total = np.zeros(5)
        t_blocks, x_blocks = [], []
        for lo in range(0, self.n, self.size):
            tn, x = self.chunk(lo, min(lo + self.size, self.n))
            self.total += (tn.sum(), tn @ tn, x.sum(), x @ x, tn @ x)
            whole = (min(lo + self.size, cut) - lo) // block * block
            if whole > 0:
                t_blocks.append(tn[:whole].reshape(-1, block).mean(axis=1))
                x_blocks.append(x[:whole].reshape(-1, block).mean(axis=1))
        self.block_t = np.concatenate(t_blocks) if t_blocks else np.zeros(0)
        self.block_x = np.concatenate(x_blocks) if x_blocks else np.zeros(0)
        self.carry = np.zeros((5, len(range(0, self.n, self.size))))
        """The five running sums at the start of each chunk (set by ``regime_sse``)."""

    def chunk(self, lo: int, hi: int) -> tuple[FloatArray, FloatArray]:
        """Normalised time (0 to 1: prefix sums over a day of epochs stay well
        conditioned) and difference less its median, for indices [lo, hi)."""
        tn = self.t[lo:hi] - self.t0
        tn /= self.span
        return tn, self.diff[lo:hi] - self.shift

    def prefix(self, lo: int, hi: int, carry: FloatArray) -> FloatArray:
        """The five running sums (t, t^2, x, x^2, t x) before each index of [lo, hi] as a
        (5, hi - lo + 1) array, starting from ``carry`` (the sums before ``lo``)."""
        pre = np.empty((5, hi - lo + 1))
        pre[:, 0] = carry
        run = pre[:, 1:]  # the five series written in place, then summed along each row
        tn, x = run[0], run[2]
        np.subtract(self.t[lo:hi], self.t0, out=tn)
        tn /= self.span
        np.subtract(self.diff[lo:hi], self.shift, out=x)
        np.multiply(tn, tn, out=run[1])
        np.multiply(x, x, out=run[3])
        np.multiply(tn, x, out=run[4])
        np.cumsum(run, axis=1, out=run)
        run += carry[:, None]
        return pre

    @property
    def sst(self) -> float:
        """Squared deviation of the difference about its mean."""
        return max(float(self.total[3] - self.total[2] ** 2 / self.n), 0.0)

    def regime_sse(self, m: int, clear: _Clear) -> tuple[FloatArray, bool]:
        """SSE of the healthy-then-faulty model for every split k in [m, n - m] (index
        k - m), and whether any split passes ``clear``."""
        n = self.n
        sse = np.empty(max(n - 2 * m + 1, 0))
        carry = np.zeros(5)
        any_clear = False
        for i, lo in enumerate(range(0, n, self.size)):
            hi = min(lo + self.size, n)
            self.carry[:, i] = carry
            pre = self.prefix(lo, hi, carry)
            carry = pre[:, -1].copy()
            k0, k1 = max(lo, m), min(hi, n - m + 1)
            if k1 <= k0:
                continue
            at = pre[:, k0 - lo:k1 - lo]
            k = np.arange(k0, k1, dtype=np.float64)
            out = sse[k0 - m:k1 - m]
            # the constant before k ...
            np.multiply(at[2], at[2], out=out)
            out /= k
            np.subtract(at[3], out, out=out)
            np.maximum(out, 0.0, out=out)
            # ... and the line from k on
            out += _line_sse(self.total[:, None] - at, n - k)
            any_clear = any_clear or clear.any(out, at[2] / k)
        return sse, any_clear

    def sums_at(self, k: int) -> FloatArray:
        """The five running sums before index ``k``, as ``regime_sse`` had them."""
        i = k // self.size
        lo = i * self.size
        return self.prefix(lo, k, self.carry[:, i])[:, -1]

    def time(self, i: int) -> float:
        return (float(self.t[i]) - self.t0) / self.span


def _line_sse(sums: np.ndarray, n: FloatArray) -> FloatArray:
    """SSE of the least-squares lines whose five sums (t, t^2, x, x^2, t x) over ``n``
    points are the columns of ``sums``."""
    st, stt, sx, sxx, stx = sums
    vt = stt - st * st / n
    cov = stx - st * sx / n
    cov *= cov
    explained = np.divide(cov, vt, out=np.zeros_like(cov), where=vt > 0)
    sse = sxx - sx * sx / n
    sse -= explained
    return np.maximum(sse, 0.0, out=sse)


def two_line_split(x: FloatArray, y: FloatArray, min_size: int) -> int | None:
    """The index k that splits (x, y), in order, into the two least-squares lines of y on
    x of least summed SSE, each of at least ``min_size`` points (``_Sums``, every split in
    one pass; centred first, so that the sums' cancellation stays small); None with fewer
    than ``2 * min_size`` points."""
    n = int(x.size)
    if n < 2 * max(min_size, 1):
        return None
    pre = _Sums(x - np.mean(x), y - np.mean(y)).pre
    ks = np.arange(min_size, n - min_size + 1)
    total = _line_sse(pre[:, ks] - pre[:, :1], ks.astype(np.float64)) \
        + _line_sse(pre[:, n:] - pre[:, ks], (n - ks).astype(np.float64))
    return int(ks[int(np.argmin(total))])


def regimes(chunks: _Chunks, sse: FloatArray, m: int, k: int, sst: float) -> Split:
    """The healthy-then-faulty model with the fault beginning at ``k``."""
    n = chunks.n
    sx = chunks.sums_at(k)[2]
    before = float(sx / k)
    tt, stt_all, xx, _, tx = chunks.total - chunks.sums_at(k)
    rest = float(n - k)
    vt = stt_all - tt * tt / rest
    slope = float((tx - tt * xx / rest) / vt) if vt > 0 else 0.0
    a = float(xx / rest - slope * tt / rest)
    ends = (a + slope * chunks.time(k), a + slope * chunks.time(n - 1))
    after = max(ends, key=lambda v: abs(v - before))
    total = float(sse[k - m])
    explained = 1.0 - total / sst if sst > 0.0 else 0.0
    return Split(k, before, after, explained, total)


def onset_split(
    t: FloatArray, diff: FloatArray, tolerance: float, rival_sse: float = math.inf,
    noise: float | None = None
) -> Split | None:
    """The clearest healthy-then-faulty split among PELT's change points, or None.
    ``noise``: see ``step_onset``."""
    n = int(diff.size)
    m = min_segment(n)
    if n < 2 * m:
        return None
    shift = median(diff)
    chunks = _Chunks(t, diff, shift, max(1, math.ceil(n / PELT_MAX_POINTS)))
    sst = chunks.sst
    every, any_clear = chunks.regime_sse(m, _Clear(sst, shift, tolerance, rival_sse))
    if not any_clear:
        return None
    points = coarse_pelt(chunks.block_t, chunks.block_x, m, max(1, math.ceil(n / PELT_MAX_POINTS)),
                         noise)
    best: Split | None = None
    for i, k in enumerate(points):
        k = refine(every, m, points[i - 1] if i else 0, points[i + 1] if i + 1 < len(points)
                   else n)
        s = regimes(chunks, every, m, k, sst)
        before_k, after_k = s.before + shift, s.after + shift
        if abs(before_k) > tolerance or abs(after_k - before_k) < tolerance:
            continue
        if s.explained < MIN_EXPLAINED or s.sse >= rival_sse:
            continue
        if best is None or s.sse < best.sse:
            best = Split(k, before_k, after_k, s.explained, s.sse)
    return best


@dataclass(frozen=True, slots=True)
class _Clear:
    """The tests ``onset_split`` puts to PELT's (refined) change points that need no
    line: inside tolerance before the split, enough variance explained, better than the
    rival. Where no split at all passes them, no change point can be an onset, and the
    segmentation is skipped; the margins only keep rounding from skipping a split that
    would pass."""

    sst: float
    shift: float
    tolerance: float
    rival_sse: float

    def any(self, sse: FloatArray, before: FloatArray) -> bool:
        """Whether any split with these SSEs and (shifted) means before it passes."""
        if not self.sst > 0.0:
            return False
        slack = 1.0 + 1e-9
        ok = sse <= (1.0 - MIN_EXPLAINED) * self.sst * slack
        ok &= sse <= self.rival_sse * slack
        before += self.shift
        np.abs(before, out=before)
        ok &= before <= self.tolerance * slack + 1e-12
        return bool(ok.any())


def coarse_pelt(t: FloatArray, x: FloatArray, min_size: int, block: int,
                noise: float | None = None) -> list[int]:
    """PELT's change points of a series given as the means ``t``, ``x`` of its blocks of
    ``block`` points (``PELT_MAX_POINTS`` of them for a day of 1-second bins): the
    segmentation stays cheap, and the onset's position is refined at full resolution
    afterwards (``refine``). ``noise``: the long-run noise variance of one point when the
    caller knows it (``step_onset``); a block mean's is that over ``block``."""
    variance = noise_variance(x) if noise is None or not math.isfinite(noise) \
        else noise / block
    penalty = PENALTY_PARAMS * math.log(max(x.size, 2)) * max(variance, 1e-12)
    return [p * block for p in pelt(t, x, penalty, max(3, min_size // block))]


def refine(every: FloatArray, m: int, lo: int, hi: int) -> int:
    """The best healthy-then-faulty split between two neighbouring change points: PELT's
    position is optimal for its own piecewise model, not for this two-regime one (a ramp
    in wandering noise is often cut a little late)."""
    a, b = max(lo + 1, m), min(hi - 1, m + every.size - 1)
    if b < a:
        return max(min(lo, m + every.size - 1), m)
    return a + int(np.argmin(every[a - m:b - m + 1]))


def step_onset(
    t: FloatArray, diff: FloatArray, tolerance: float, rival_sse: float = math.inf,
    noise: float | None = None
) -> float | None:
    """Time of the first bin of the faulty regime in ``diff`` (device - reference, paired
    bins only, in time order), or None: see the module docstring for what counts as clear.
    ``rival_sse`` is the squared error of another explanation for the whole window.

    ``noise``: the long-run variance of the noise on one value of ``diff``, when the
    caller measured it so that a step cannot count as noise (``consensus.median_noise``:
    about the best single step). Read off ``diff`` about one mean (``noise_variance``),
    its lag-``LONG_LAG`` differences carry the step, which raises the persistence
    estimate and with it the penalty: in a window of 72 ten-minute bins a step of 2.7
    tolerances in wandering noise found no change point at all."""
    split = onset_split(t, diff, tolerance, rival_sse, noise)
    return None if split is None else float(t[split.index])


# --------------------------------------------------------------------------- across audits


@dataclass(frozen=True, slots=True)
class Dated:
    """An onset and how far it may be off (seconds, one standard deviation or half the
    interval it is known to lie in)."""

    at: float
    uncertainty_s: float


def combined_onset(estimates: Sequence[float], resolution_s: float) -> Dated | None:
    """One onset from the window estimates of one fault's successive audits: their median
    (one audit's change point a few bins off moves it little), uncertain by their spread
    (scaled MAD) but never less than ``resolution_s``. The first estimate stands alone;
    each later audit that sees the same change refines it."""
    values = np.asarray([e for e in estimates if math.isfinite(e)], dtype=np.float64)
    if values.size == 0:
        return None
    middle = float(np.median(values))
    spread = MAD_TO_STD * float(np.median(np.abs(values - middle)))
    return Dated(middle, max(spread, resolution_s))


def crossing_onset(times: Sequence[float] | FloatArray, ratios: Sequence[float] | FloatArray,
                   before: float) -> Dated | None:
    """When a slow deviation crossed its tolerance, from the audits' own estimates.

    ``times``: each audit window's midpoint, in time order; ``ratios``: that window's
    estimate in tolerances (|bias| / tolerance, say; NaN where none). A drift of months
    has no healthy stretch inside any one window, so no change point; but the audits that
    still passed saw it below tolerance. The onset is the latest crossing from below 1 to
    1 or more at or before ``before`` (the first failing window of the fault), linearly
    interpolated between the two windows around it (a window's mean of a linear drift is
    its value at the midpoint), uncertain by half their distance. None when no window at
    or before ``before`` was below tolerance: nothing says when it began."""
    t = np.asarray(times, dtype=np.float64)
    r = np.asarray(ratios, dtype=np.float64)
    keep = np.isfinite(t) & np.isfinite(r) & (t <= before)
    t, r = t[keep], r[keep]
    below = np.flatnonzero(r < 1.0)
    if below.size == 0 or below[-1] == t.size - 1:
        return None
    i = int(below[-1])
    t0, t1, r0, r1 = float(t[i]), float(t[i + 1]), float(r[i]), float(r[i + 1])
    at = t0 + (t1 - t0) * (1.0 - r0) / (r1 - r0) if r1 > r0 else t1
    return Dated(at, (t1 - t0) / 2.0)


ONSET_STEPS = 240
"""Candidate onsets tried between the oldest window's start and the tolerance crossing
(plus half a window)."""
RAMP_LENGTHS = 40
"""Ramp durations tried besides a step: geometrically from an eighth of a window to the
whole history."""
DRIFT_PARAMETERS = 4
"""What ``drift_start`` fits to the windows' values: a level, an amplitude, an onset and a
ramp length."""


@dataclass(frozen=True, slots=True)
class DriftDate:
    """When a deviation began (the start of the step or ramp whose windowed means fit the
    audits' estimates best) and when it crossed its tolerance."""

    began: Dated
    crossed: Dated


def onset_allowance(best_sse: float, windows: int, independent: float) -> float:
    """How much more squared error than the best an onset may leave and still fit as well
    at 95 %: F(1, dof) x the residual variance per window (the best fit's squared error over
    its degrees of freedom), scaled by how many windows each independent one is counted in
    (``windows / independent``, where ``independent`` is the history's length in windows).
    Infinite where the fit leaves no degree of freedom: nothing places the onset."""
    dof = windows - DRIFT_PARAMETERS
    if dof < 1 or not independent > 0.0:
        return math.inf
    repeats = max(1.0, windows / independent)
    # F(1, dof) rather than its chi2(1) limit: the residual variance is itself estimated
    # from the few windows there are (161 at one degree of freedom, 4.96 at ten)
    return float(fdtri(1.0, dof, 0.95)) * best_sse / dof * repeats


def _ramp_integral(t: FloatArray, onset: FloatArray | float, ramp: float) -> FloatArray:
    """The integral from -inf to ``t`` of a ramp from 0 at ``onset`` to 1 over ``ramp``
    seconds (a step when 0), then flat."""
    x = np.clip(t - onset, 0.0, None)
    if ramp <= 0.0:
        return x
    inside = np.minimum(x, ramp)
    return inside * inside / (2.0 * ramp) + np.clip(x - ramp, 0.0, None)


def drift_start(starts: Sequence[float], ends: Sequence[float], values: Sequence[float],
                tolerance: float, before: float) -> DriftDate | None:
    """When a deviation began, from the audits' own estimates of it: each window's mean
    (``values``, signed, in the figure's unit, over [start, end)). A drift of months has no
    healthy stretch inside any window, so no window has a change point; across windows it
    does.

    The crossing is ``crossing_onset`` of the values at the windows' midpoints, in
    tolerances (None: no window at or before ``before``, the first failing window, was
    inside tolerance). The start is the onset of the deviation, a level plus an amplitude
    times a ramp of some length (0: a step), whose mean over each window fits the windows'
    values best (least squares; onsets on a grid up to half a window past the crossing,
    ramp lengths from an eighth of a window to the whole history): a window's mean smears
    a step over a whole window and a ramp's start by half of one, which a line through the
    means would read as an earlier start.

    Uncertain by the onsets the values cannot tell apart from the best at 95 % (a profile
    likelihood interval, Hinkley 1970): those whose squared error exceeds the best by at
    most F(1, dof) times the residual variance, that variance counted over the windows that
    do not overlap (overlapping windows repeat one another's noise); stated as how far
    after the best its latest end lies, at least the grid's step and an eighth of a
    window; infinite where the fit leaves no degree of freedom (a start, not a date). A
    firmware step that landed between two audit windows, one of them a little low by
    chance, was dated 90 minutes before the update to +-24 minutes (the onsets within 5 %
    of the best squared error), which said it began before the update it came from."""
    a = np.asarray(starts, dtype=np.float64)
    b = np.asarray(ends, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b) & np.isfinite(v) & (b > a)
    a, b, v = a[keep], b[keep], v[keep]
    if a.size < 3 or not tolerance > 0:
        return None
    mid = (a + b) / 2.0
    order = np.argsort(mid, kind="stable")
    a, b, v, mid = a[order], b[order], v[order], mid[order]
    sign = 1.0 if v[-1] >= 0 else -1.0
    crossed = crossing_onset(mid, sign * v / tolerance, before)
    if crossed is None:
        return None
    width = b - a
    window = float(np.median(width))
    # a step's crossing (at the windows' midpoints) comes up to half a window before it,
    # and it began by the end of the first window that shows it (``before`` is that
    # window's middle): where audits leave hours between windows, the later bound
    lo, hi = float(a[0]), max(crossed.at, before) + window / 2.0
    onsets = np.linspace(lo, hi, ONSET_STEPS + 1)
    step = max(float(onsets[1] - onsets[0]), 1.0)
    span = max(float(b[-1] - a[0]), window)
    ramps = [0.0, *np.geomspace(window / 8.0, span, RAMP_LENGTHS)]
    vc = v - v.mean()
    vv = float(vc @ vc)
    best_sse, onset = math.inf, math.nan
    sse_by_onset = np.full(onsets.size, math.inf)
    for ramp in ramps:
        # each column: the ramp's mean over every window, for one candidate onset
        shape = (_ramp_integral(b[:, None], onsets[None, :], ramp)
                 - _ramp_integral(a[:, None], onsets[None, :], ramp)) / width[:, None]
        sc = shape - shape.mean(axis=0)
        var = np.einsum("ij,ij->j", sc, sc)
        cov = sc.T @ vc
        ok = (var > 0) & (sign * cov > 0)  # the deviation's own direction
        sse = np.where(ok, vv - np.divide(cov * cov, var, out=np.zeros_like(var),
                                           where=var > 0), math.inf)
        sse_by_onset = np.minimum(sse_by_onset, sse)
        k = int(np.argmin(sse))
        if sse[k] < best_sse:
            best_sse, onset = float(sse[k]), float(onsets[k])
    if not math.isfinite(best_sse):
        return DriftDate(crossed, crossed)
    allowance = onset_allowance(best_sse, a.size, span / window)
    if not math.isfinite(allowance):  # nothing places it: a start, not a date
        return DriftDate(Dated(onset, math.inf), crossed)
    near = onsets[sse_by_onset <= best_sse + allowance + 1e-12]
    # how far after the best the deviation may have begun: what an update that came
    # later than the stated onset is weighed against (longer ramps that fit as well all
    # begin earlier, which says nothing about whether it followed an update)
    spread = float(near.max()) - onset if near.size else 0.0
    # a step and the shortest ramp tried (an eighth of a window) look alike through a
    # window's mean: the start is known no better than that
    return DriftDate(Dated(onset, max(spread, step, window / 8.0)), crossed)
