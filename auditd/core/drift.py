"""Has the device-reference residual distribution moved since a known-good baseline?

An audit judges one window against fixed tolerances; a device can sit inside them and
still be walking away from where it was after its last calibration. Comparing this
window's residuals (device - reference, paired bins) with those of a baseline window
catches that walk early and gives a failing offset or noise cause a second, independent
line of evidence.

Three figures, each carried with the figure it is compared against, because a number
without its yardstick cannot be read by the crew:

- two-sample Kolmogorov-Smirnov statistic against a critical value computed from
  *effective* sample sizes. Bin residuals are strongly autocorrelated (a minute's error
  is much like the last one's), so the raw p-value of ``ks_2samp`` would call every
  window "different"; ``stats.effective_n`` (AR(1), the same effective size the bias
  interval uses) restores an honest sample size.
- Wasserstein-1 distance (in the canonical unit) against a fraction of the bias
  tolerance: how far, in physical terms, the whole distribution has moved.
- population stability index over the baseline's decile bins, with the usual 0.1
  (moderate) / 0.25 (significant) thresholds.

Drift alone never fails a stream (see ``verdict``): a baseline is only as good as the
audit that passed it, and a window of different weather changes the residuals of an
honest device too. It enriches evidence instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from auditd.core.align import Aligned, on_time_base
from auditd.core.series import FloatArray, Series
from auditd.core.stats import effective_n, median
from auditd.model import Cause

KS_ALPHA = 0.01
"""Significance of the KS test: 1% keeps false drift notes rare across a fleet."""
WASSERSTEIN_FRACTION = 0.5
"""A distribution moved by half the bias tolerance has used half the error budget."""
PSI_BINS = 10
PSI_EPSILON = 1e-4
"""Stands in for an empty bin's share, so ln(0) never appears (textbook practice)."""
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
MIN_DRIFT_SAMPLES = 20
"""Fewer paired bins on either side say nothing about a distribution."""


@dataclass(frozen=True, slots=True)
class KsResult:
    statistic: float
    critical: float
    n_eff: float
    m_eff: float

    @property
    def drifted(self) -> bool:
        return self.statistic > self.critical


@dataclass(frozen=True, slots=True)
class Drift:
    """This window's residuals against the baseline's, each figure with its limit."""

    n_baseline: int
    n_current: int
    ks_stat: float
    ks_critical: float
    wasserstein: float
    wasserstein_limit: float
    psi: float
    psi_limit: float
    shift: float
    """median(current) - median(baseline): the direction of the move, canonical unit."""

    @property
    def ks_drifted(self) -> bool:
        return self.ks_stat > self.ks_critical

    @property
    def wasserstein_drifted(self) -> bool:
        return self.wasserstein > self.wasserstein_limit

    @property
    def psi_drifted(self) -> bool:
        return self.psi > self.psi_limit

    @property
    def drifted(self) -> bool:
        """Significant (KS) *and* material (Wasserstein or PSI): a statistically clear
        move of a few hundredths of a degree is not worth the crew's time."""
        return self.ks_drifted and (self.wasserstein_drifted or self.psi_drifted)

    def as_dict(self) -> dict[str, float | int | None]:
        """Metrics keys for the finding (rounded like ``Metrics.as_dict``)."""
        values: dict[str, float | int] = {
            "drift_n_baseline": self.n_baseline, "ks_stat": self.ks_stat,
            "ks_critical": self.ks_critical, "wasserstein": self.wasserstein,
            "wasserstein_limit": self.wasserstein_limit, "psi": self.psi,
            "psi_limit": self.psi_limit, "drift_shift": self.shift,
        }
        return {k: _round(v) for k, v in values.items()}


def _round(value: float | int) -> float | int | None:
    if isinstance(value, int):
        return value
    return float(f"{value:.6g}") + 0.0 if math.isfinite(value) else None


def residuals(aligned: Aligned) -> FloatArray:
    """device - reference on the paired bins, in time order: what drift is measured on."""
    keep = aligned.paired
    return np.asarray(aligned.device)[keep] - np.asarray(aligned.reference)[keep]


def baseline_residuals(
    device: Series, reference: Series, interval_s: float, start: float, end: float,
    reference_interval_s: float | None = None,
) -> FloatArray:
    """Residuals of a baseline window, aligned exactly as an audit aligns its own (on the
    same time base: ``align.on_time_base``)."""
    return residuals(on_time_base(device, reference, interval_s, start, end,
                                  reference_interval_s=reference_interval_s))


def ks_critical(n_eff: float, m_eff: float, alpha: float = KS_ALPHA) -> float:
    """The asymptotic two-sample KS critical value c(alpha) sqrt((n + m) / (n m)),
    c(alpha) = sqrt(-ln(alpha / 2) / 2)."""
    c = math.sqrt(-math.log(alpha / 2.0) / 2.0)
    return c * math.sqrt((n_eff + m_eff) / (n_eff * m_eff))


def ks_drift(baseline: FloatArray, current: FloatArray, alpha: float = KS_ALPHA, *,
             statistic: float | None = None) -> KsResult:
    """The KS statistic (scipy's) judged against the effective-size critical value;
    ``statistic``: ``ks_statistic`` of the two, where the caller has it."""
    stat = ks_statistic(baseline, current) if statistic is None else statistic
    n_eff, m_eff = effective_n(baseline), effective_n(current)
    return KsResult(stat, ks_critical(n_eff, m_eff, alpha), n_eff, m_eff)


def ks_statistic(a: FloatArray, b: FloatArray) -> float:
    """``scipy.stats.ks_2samp(a, b).statistic`` (two-sided) by scipy's own steps, without
    its p-value: only the statistic is read, and for a day of minute data scipy's exact
    p-value took 2 ms of an audit's 3 (the same number to the bit: tests/test_core_drift.py).
    Non-empty finite arrays."""
    return _ks_of_sorted(np.sort(a), np.sort(b))


def _ks_of_sorted(a: FloatArray, b: FloatArray) -> float:
    n1, n2 = a.shape[0], b.shape[0]
    both = np.concatenate([a, b])
    diffs = np.searchsorted(a, both, side="right") / n1
    diffs -= np.searchsorted(b, both, side="right") / n2
    return _exact_as_scipy(_ks_from(diffs), n1, n2)


KS_EXACT_MAX_N = 10_000
"""``scipy.stats.ks_2samp``'s ``MAX_AUTO_N``: up to this many values a side its default
method is the exact one."""


def wasserstein(baseline: FloatArray, current: FloatArray) -> float:
    """``scipy.stats.wasserstein_distance(baseline, current)`` (unweighted) by scipy's own
    steps (``_cdf_distance`` at p = 1), without its argument checks: the same number to
    the bit. Non-empty finite arrays."""
    return _wasserstein_of_sorted(np.sort(baseline), np.sort(current))


def _ks_and_wasserstein(u: FloatArray, v: FloatArray) -> tuple[float, float]:
    """``ks_statistic`` and ``wasserstein`` of the same two samples from one pass: both
    compare the two distribution functions at every value of either sample, the one by
    their largest difference, the other by its integral. The distribution functions'
    difference at the sorted values is the same set of numbers the KS statistic takes at
    the values unsorted (its extremes do not depend on the order), and at the largest
    value it is 0, which the integral leaves out. The same numbers to the bit as each
    alone (tests/test_core_drift.py)."""
    u, v = np.sort(u), np.sort(v)
    every = np.concatenate((u, v))
    every.sort(kind="mergesort")
    deltas = np.diff(every)
    diffs = u.searchsorted(every[:-1], "right") / u.size
    diffs -= v.searchsorted(every[:-1], "right") / v.size
    statistic = _exact_as_scipy(_ks_from(diffs), u.size, v.size)
    np.abs(diffs, out=diffs)
    if hasattr(np, "vecdot"):
        return statistic, float(np.vecdot(diffs, deltas))
    return statistic, float(np.sum(diffs * deltas))


def _ks_from(diffs: FloatArray) -> float:
    """The two-sided statistic from the distribution functions' differences (a 0 among
    them, or implied: at the largest value both are 1), as scipy picks it."""
    low = min(max(-float(diffs.min(initial=0.0)), 0.0), 1.0)
    high = float(diffs.max(initial=0.0))
    return low if low > high else high


def _exact_as_scipy(d: float, n1: int, n2: int) -> float:
    """``d`` as scipy's default (exact) route reports it up to ``KS_EXACT_MAX_N`` values
    a side: the fraction it is, h / lcm(n1, n2)."""
    g = math.gcd(n1, n2)
    if max(n1, n2) <= KS_EXACT_MAX_N and n1 // g < np.iinfo(np.int32).max / (n2 // g):
        lcm = (n1 // g) * n2
        d = int(np.round(d * lcm)) * 1.0 / lcm
    return d


def _wasserstein_of_sorted(u: FloatArray, v: FloatArray) -> float:
    every = np.concatenate((u, v))  # the same values in order as scipy's of the unsorted
    every.sort(kind="mergesort")
    deltas = np.diff(every)
    u_cdf = u.searchsorted(every[:-1], "right") / u.size
    v_cdf = v.searchsorted(every[:-1], "right") / v.size
    gaps = np.abs(u_cdf - v_cdf)
    if hasattr(np, "vecdot"):  # scipy's np_vecdot: numpy 2's vecdot, else the plain sum
        return float(np.vecdot(gaps, deltas))
    return float(np.sum(gaps * deltas))


def psi(baseline: FloatArray, current: FloatArray, bins: int = PSI_BINS,
        epsilon: float = PSI_EPSILON) -> float:
    """Population stability index: sum over bins of (a - e) ln(a / e), e and a the shares
    of baseline and current in bins cut at the baseline's quantiles (open-ended outer
    bins; repeated quantiles of a quantised baseline merge their bins)."""
    qs = np.quantile(baseline, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    edges = np.unique(qs)
    expected = _shares(baseline, edges, epsilon)
    actual = _shares(current, edges, epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _shares(x: FloatArray, edges: FloatArray, epsilon: float) -> FloatArray:
    idx = np.searchsorted(edges, x, side="right")
    counts = np.bincount(idx, minlength=edges.size + 1).astype(np.float64)
    return np.maximum(counts / max(x.size, 1), epsilon)


def drift(baseline: FloatArray, current: FloatArray, bias_tolerance: float) -> Drift | None:
    """All three figures, or None when either side has fewer than ``MIN_DRIFT_SAMPLES``
    finite values."""
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    b, c = b[np.isfinite(b)], c[np.isfinite(c)]
    if b.size < MIN_DRIFT_SAMPLES or c.size < MIN_DRIFT_SAMPLES:
        return None
    statistic, distance = _ks_and_wasserstein(b, c)
    ks = ks_drift(b, c, statistic=statistic)
    return Drift(
        n_baseline=int(b.size), n_current=int(c.size),
        ks_stat=ks.statistic, ks_critical=ks.critical,
        wasserstein=distance, wasserstein_limit=WASSERSTEIN_FRACTION * bias_tolerance,
        psi=psi(b, c), psi_limit=PSI_SIGNIFICANT,
        shift=median(c) - median(b),
    )


def describe(d: Drift, unit: str) -> str:
    """One clause for a cause's evidence."""
    return (
        f"residuals moved {d.shift:+.3g} {unit} against the baseline of {d.n_baseline} bins "
        f"(KS {d.ks_stat:.3g} vs critical {d.ks_critical:.3g}, Wasserstein "
        f"{d.wasserstein:.3g} vs {d.wasserstein_limit:.3g} {unit}, PSI {d.psi:.3g} vs "
        f"{d.psi_limit:.3g})"
    )


DRIFT_SUPPORT = 0.25
"""Share of a supported cause's remaining doubt (1 - confidence) that agreeing drift
removes: a second, independent line of evidence, not a verdict of its own."""


def supports(d: Drift, cause: Cause, bias: float) -> bool:
    """Does the drift agree with the cause? An offset needs the distribution to have moved
    materially (Wasserstein beyond its limit) in the direction of the bias; noise needs the
    shape to have changed (PSI beyond its limit). Both need KS significance."""
    if not d.ks_drifted:
        return False
    if cause.cause == "offset_drift":
        return d.wasserstein_drifted and d.shift * bias > 0.0
    if cause.cause == "noise":
        return d.psi_drifted
    return False


def support(
    causes: Sequence[Cause], d: Drift | None, bias: float, unit: str
) -> tuple[Cause, ...]:
    """``causes`` with those the drift agrees with made a little more confident and their
    evidence extended by the figures; re-ranked, best first. Nothing is added: drift alone
    never names a cause."""
    if d is None:
        return tuple(causes)
    out = []
    for c in causes:
        if supports(d, c, bias):
            confidence = c.confidence + DRIFT_SUPPORT * (1.0 - c.confidence)
            c = Cause(c.cause, confidence, f"{c.evidence}; {describe(d, unit)}")
        out.append(c)
    return tuple(sorted(out, key=lambda c: -c.confidence))
