"""When did the deviation begin?

Version 1 is a single least-squares split of the device-reference difference into two
constant segments: the split that minimises the summed squared error is the step's most
likely position. It answers only when the split is unambiguous (the device was inside
tolerance before, clearly outside after, and the step explains most of the variation),
because an onset invented for a deviation older than the window is worse than none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from auditd.core.series import FloatArray

MIN_SEGMENT_FRACTION = 0.02
MIN_SEGMENT_BINS = 5
MIN_EXPLAINED = 0.5
"""Share of the difference's variance the step must explain to count as a clear split."""


@dataclass(frozen=True, slots=True)
class Split:
    index: int
    """First element of the second segment."""
    before: float
    after: float
    explained: float
    """1 - SSE(two segments) / SSE(one mean)."""
    sse: float


def best_split(x: FloatArray) -> Split | None:
    """The two-segment mean split of ``x`` with the least squared error, O(n) by cumsums."""
    n = int(x.size)
    m = max(MIN_SEGMENT_BINS, int(MIN_SEGMENT_FRACTION * n))
    if n < 2 * m:
        return None
    csum = np.cumsum(x)
    total = float(csum[-1])
    k = np.arange(m, n - m + 1)
    left = csum[k - 1]
    right = total - left
    # SSE = sum(x^2) - left^2/k - right^2/(n-k): maximise the subtracted part.
    gain = left * left / k + right * right / (n - k)
    i = int(np.argmax(gain))
    idx = int(k[i])
    sst = float(np.sum((x - total / n) ** 2))
    sse = sst - (float(gain[i]) - total * total / n)
    explained = 1.0 - sse / sst if sst > 0.0 else 0.0
    return Split(idx, float(left[i] / idx), float(right[i] / (n - idx)), explained, max(sse, 0.0))


def step_onset(
    t: FloatArray, diff: FloatArray, tolerance: float, rival_sse: float = math.inf
) -> float | None:
    """Time of the first bin after a clear step in ``diff`` (device - reference, paired
    bins only, in time order), or None.

    Clear: inside ``tolerance`` before, a jump of at least ``tolerance``, the step explains
    ``MIN_EXPLAINED`` of the variance, and it fits better than ``rival_sse``, the squared
    error of another explanation for the whole window (a gain error makes the difference
    follow the signal, which a split would mistake for a step at dusk).
    """
    split = best_split(diff)
    if split is None:
        return None
    jump = abs(split.after - split.before)
    if abs(split.before) > tolerance or jump < tolerance or split.explained < MIN_EXPLAINED:
        return None
    if split.sse >= rival_sse:
        return None
    return float(t[split.index])
