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
from dataclasses import dataclass

import numpy as np

from auditd.core.series import FloatArray

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
REGIME_CHUNK = 2048
"""Splits evaluated at a time by ``regime_sse``."""
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
    """Prefix sums that give any segment's constant or straight-line SSE in O(1)."""

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
        self.t, self.tt, self.x, self.xx, self.tx = self.pre

    def line_sse(self, s: np.ndarray | slice, e: int) -> np.ndarray:
        """SSE of the least-squares line through [s, e) (vectorised over ``s``: an index
        array, or a slice of starts)."""
        if isinstance(s, slice):
            n = np.subtract(e, np.arange(s.start, s.stop, dtype=np.float64))
            at_s = self.pre[:, s]
        else:
            n = np.subtract(e, s, dtype=np.float64)
            at_s = self.pre.take(s, axis=1)
        st, stt, sx, sxx, stx = self.pre[:, e, None] - at_s
        vt = stt - st * st / n
        cov = stx - st * sx / n
        cov *= cov
        # cov^2 / vt where the times vary, 0 where they do not
        explained = np.divide(cov, vt, out=np.zeros_like(cov), where=vt > 0)
        sse = sxx - sx * sx / n
        sse -= explained
        return np.maximum(sse, 0.0, out=sse)

    def line(self, s: int, e: int) -> tuple[float, float]:
        """(intercept, slope) of the least-squares line through [s, e)."""
        n = float(e - s)
        st, sx = self.t[e] - self.t[s], self.x[e] - self.x[s]
        vt = (self.tt[e] - self.tt[s]) - st * st / n
        slope = ((self.tx[e] - self.tx[s]) - st * sx / n) / vt if vt > 0 else 0.0
        return float(sx / n - slope * st / n), float(slope)

    def const_sse(self, s: int, e: int) -> float:
        n = float(e - s)
        sx = self.x[e] - self.x[s]
        return float(max((self.xx[e] - self.xx[s]) - sx * sx / n, 0.0))


def min_segment(n: int) -> int:
    return max(MIN_SEGMENT_BINS, int(MIN_SEGMENT_FRACTION * n))


def noise_variance(x: FloatArray) -> float:
    """The long-run noise variance, robustly: what a segment mean really scatters by.

    First differences' MAD gives 2 sigma^2 (1 - phi) for AR(1) noise, differences
    ``LONG_LAG`` apart give about 2 sigma^2; their ratio estimates phi, and the long-run
    variance sigma^2 (1 + phi) / (1 - phi) follows. White-noise variance alone would let
    slowly wandering noise (phi 0.8) cut a healthy day into dozens of segments. MADs keep a
    step or a ramp from inflating the estimate."""
    if x.size < 2 * LONG_LAG:
        return 0.0
    short = _mad_var(np.diff(x)) / 2.0
    long = _mad_var(x[LONG_LAG:] - x[:-LONG_LAG]) / 2.0
    if not long > 0.0:
        return short
    phi = float(np.clip(1.0 - short / long, 0.0, MAX_PHI))
    return long * (1.0 + phi) / (1.0 - phi)


def _mad_var(d: FloatArray) -> float:
    return (MAD_TO_STD * float(np.median(np.abs(d - np.median(d))))) ** 2


def pelt(t: FloatArray, x: FloatArray, penalty: float, min_size: int) -> list[int]:
    """Change points (first index of each segment after the first) of the piecewise-linear
    segmentation minimising SSE + ``penalty`` per segment, segments at least ``min_size``."""
    n = int(x.size)
    if n < 2 * min_size:
        return []
    sums = _Sums(t, x)
    best = np.full(n + 1, np.inf)
    best[0] = -penalty
    last = np.zeros(n + 1, dtype=np.intp)
    ready = np.zeros(0, dtype=np.intp)
    for e in range(min_size, n + 1):
        # a start s becomes usable once a segment [s, e) would be long enough
        if math.isfinite(best[e - min_size]):
            ready = np.append(ready, e - min_size)
        if not ready.size:
            continue
        cost = best[ready] + sums.line_sse(ready, e)
        i = int(np.argmin(cost))
        best[e], last[e] = float(cost[i] + penalty), int(ready[i])
        # PELT pruning: a start that cannot beat the optimum now never will (SSE costs
        # only grow as a segment lengthens).
        ready = ready[cost <= best[e]]
    points, e = [], n
    while e > 0:
        e = int(last[e])
        if e > 0:
            points.append(e)
    return sorted(points)


def regimes(sums: _Sums, t: FloatArray, k: int, sst: float) -> Split:
    """The healthy-then-faulty model with the fault beginning at ``k``."""
    n = int(t.size)
    before = float((sums.x[k] - sums.x[0]) / k)
    a, b = sums.line(k, n)
    ends = (a + b * float(t[k]), a + b * float(t[-1]))
    after = max(ends, key=lambda v: abs(v - before))
    sse = sums.const_sse(0, k) + float(sums.line_sse(slice(k, k + 1), n)[0])
    explained = 1.0 - sse / sst if sst > 0.0 else 0.0
    return Split(k, before, after, explained, sse)


def onset_split(
    t: FloatArray, diff: FloatArray, tolerance: float, rival_sse: float = math.inf
) -> Split | None:
    """The clearest healthy-then-faulty split among PELT's change points, or None."""
    n = int(diff.size)
    m = min_segment(n)
    if n < 2 * m:
        return None
    # Centre and scale time so the prefix sums stay well conditioned over a day of epochs.
    tn = (t - t[0]) / max(float(t[-1] - t[0]), 1e-9)
    x = diff - float(np.median(diff))
    sst = float(np.sum((x - x.mean()) ** 2))
    shift = float(np.median(diff))
    points = coarse_pelt(tn, x, m)
    sums = _Sums(tn, x)
    del x  # the prefix sums hold all that is needed of it
    every = regime_sse(sums, n, m)
    best: Split | None = None
    for i, k in enumerate(points):
        k = refine(every, m, points[i - 1] if i else 0, points[i + 1] if i + 1 < len(points)
                   else n)
        s = regimes(sums, tn, k, sst)
        before, after = s.before + shift, s.after + shift
        if abs(before) > tolerance or abs(after - before) < tolerance:
            continue
        if s.explained < MIN_EXPLAINED or s.sse >= rival_sse:
            continue
        if best is None or s.sse < best.sse:
            best = Split(k, before, after, s.explained, s.sse)
    return best


def coarse_pelt(t: FloatArray, x: FloatArray, min_size: int) -> list[int]:
    """PELT's change points of ``x``, run on block means when the series is longer than
    ``PELT_MAX_POINTS`` (a day of 1-second bins): the Python loop stays short, and the
    onset's position is refined at full resolution afterwards (``refine``)."""
    n = int(x.size)
    block = max(1, math.ceil(n / PELT_MAX_POINTS))
    if block > 1:
        cut = (n // block) * block
        t = t[:cut].reshape(-1, block).mean(axis=1)
        x = x[:cut].reshape(-1, block).mean(axis=1)
    penalty = PENALTY_PARAMS * math.log(x.size) * max(noise_variance(x), 1e-12)
    return [p * block for p in pelt(t, x, penalty, max(3, min_size // block))]


def regime_sse(sums: _Sums, n: int, m: int) -> FloatArray:
    """SSE of the healthy-then-faulty model for every k in [m, n - m] (index k - m)."""
    out = np.empty(max(n - 2 * m + 1, 0))
    for lo in range(m, n - m + 1, REGIME_CHUNK):
        # in chunks of splits: the same numbers, a small working set instead of a few
        # arrays of the whole series
        k = slice(lo, min(lo + REGIME_CHUNK, n - m + 1))
        sx = sums.x[k]
        before = sx * sx
        before /= np.arange(k.start, k.stop)
        np.subtract(sums.xx[k], before, out=before)
        np.maximum(before, 0.0, out=before)
        before += sums.line_sse(k, n)
        out[k.start - m:k.stop - m] = before
    return out


def refine(every: FloatArray, m: int, lo: int, hi: int) -> int:
    """The best healthy-then-faulty split between two neighbouring change points: PELT's
    position is optimal for its own piecewise model, not for this two-regime one (a ramp
    in wandering noise is often cut a little late)."""
    a, b = max(lo + 1, m), min(hi - 1, m + every.size - 1)
    if b < a:
        return max(min(lo, m + every.size - 1), m)
    return a + int(np.argmin(every[a - m:b - m + 1]))


def step_onset(
    t: FloatArray, diff: FloatArray, tolerance: float, rival_sse: float = math.inf
) -> float | None:
    """Time of the first bin of the faulty regime in ``diff`` (device - reference, paired
    bins only, in time order), or None: see the module docstring for what counts as clear.
    ``rival_sse`` is the squared error of another explanation for the whole window."""
    split = onset_split(t, diff, tolerance, rival_sse)
    return None if split is None else float(t[split.index])
