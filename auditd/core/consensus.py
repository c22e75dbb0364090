"""Is it the reference? Group decisions over the devices one reference instrument serves.

A single stream compared with its reference cannot tell a drifting device from a drifting
reference: both make ``device - reference`` move. A group can. When most of the devices a
reference serves move the same way, by about the same amount, from about the same time,
while still agreeing with each other, the one thing they share (the reference) is the
likelier culprit. Only device-minus-reference differences are read here, so anything the
devices share *with* the reference (the weather) cancels before it can look like a fault.

Every figure is a median or a MAD, so one broken device among the group cannot move the
decision: it is a fault of its own, not evidence against the reference.

Where the reference cannot be trusted (just judged faulty, or past its calibration due
date), ``peer_medians`` gives each device a leave-one-out median of its co-located peers
to be judged against instead, with how far that median may itself be off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from auditd import text
from auditd.core.align import align, choose_edge_phase, interval_series, time_base
from auditd.core.diagnose import strength
from auditd.core.onset import noise_variance, step_onset
from auditd.core.series import FloatArray, Series, frozen_array
from auditd.core.stats import about_one_step, confidence_z, mean_interval
from auditd.model import Tolerance, iso

MIN_DEVICES = 3
"""Fewer deviating devices than this cannot out-vote a coincidence of two device faults."""
MIN_SHARE = 2.0 / 3.0
"""The deviating, mutually agreeing devices must be at least this share of those judged:
a clear majority, so a reference is never blamed for what only half its devices show."""
MIN_PEERS = 3
"""A peer median needs three values to out-vote one broken peer (per bin, too)."""
MAD_SCALE = 1.4826
"""MAD -> standard deviation for normally distributed data."""


@dataclass(frozen=True, slots=True, eq=False)
class Grid:
    """Every device of a group and their reference on one common bin grid.

    One grid for the group (not one per device, as ``align`` makes for a single stream)
    so that bin ``i`` means the same minute for every device: a per-bin median across
    devices is only meaningful then.
    """

    t: FloatArray
    values: Mapping[str, FloatArray]
    """Device id -> binned device values (NaN where none)."""
    reference: FloatArray
    interval_s: float

    def diffs(self) -> dict[str, FloatArray]:
        """Device minus reference per bin: what the weather cannot move."""
        return {device: v - self.reference for device, v in self.values.items()}


def common_grid(devices: Mapping[str, Series], reference: Series, interval_s: float,
                start: float, end: float, reference_interval_s: float | None = None) -> Grid:
    """Bin the reference and every device over [start, end) with the same bin edges, on
    the one time base of a comparison (``align.time_base``): against a coarser reference,
    each device's kept means over the reference's intervals."""
    base = time_base(interval_s, reference, start, end, reference_interval_s)
    if base != interval_s:
        devices = {d: interval_series(s, base, interval_s, start, end)
                   for d, s in devices.items()}
        reference = interval_series(reference, base, base, start, end)
        interval_s = base
    in_window = [s.ts[(s.ts >= start) & (s.ts < end)]
                 for s in (reference, *devices.values())]
    phase = choose_edge_phase(in_window, interval_s, start)
    values: dict[str, FloatArray] = {}
    ref: FloatArray | None = None
    t: FloatArray | None = None
    for device, series in devices.items():
        aligned = align(series, reference, interval_s, start, end, edge_phase_s=phase)
        values[device] = aligned.device
        ref, t = aligned.reference, aligned.t
    if ref is None or t is None:  # no devices: the reference alone, for completeness
        aligned = align(reference, reference, interval_s, start, end, edge_phase_s=phase)
        ref, t = aligned.reference, aligned.t
    return Grid(t, values, ref, float(interval_s))


@dataclass(frozen=True, slots=True)
class ConsensusDecision:
    """What the group says about its reference."""

    reference_fault: bool
    devices: int
    """Devices with enough paired data to be judged."""
    members: tuple[str, ...]
    """Devices sharing the common deviation (within ``agree`` of it)."""
    others: tuple[str, ...]
    """Judged devices that do not share it: they keep their own diagnosis."""
    deviation: float
    """Median device-minus-reference shift of the members (NaN when undefined): the
    reference's own error is its negative."""
    spread: float
    """Scaled MAD of the members' shifts around ``deviation``."""
    onset: float | None
    """Start of the common step (None: no clear step; the shift predates the window)."""
    confidence: float
    shifts: Mapping[str, float]
    """Every judged device's shift, for the evidence and for tests."""
    level: float = math.nan
    """The members' median difference from the reference after the onset (over the
    window without one): where the step left them, which a reference that stays off keeps
    them at in later windows (``device_level``)."""
    stepped: tuple[str, ...] = ()
    """Members whose own difference shows the common step at ``onset`` beyond its own
    noise (``step_seen``): a step at one moment in *every* member's residual is evidence
    the devices cannot produce themselves, a step in their median alone is not."""

    @property
    def share(self) -> float:
        return len(self.members) / self.devices if self.devices else 0.0

    def evidence(self, reference: str, unit: str) -> str:
        since = f" since {iso(self.onset)}" if self.onset is not None else ""
        return (f"{len(self.members)} of {self.devices} devices served by {reference} moved "
                f"{text.qty(self.deviation, unit, sign=True)} against it{since} (spread "
                f"{text.qty(self.spread, unit)}) while agreeing with each other: the "
                f"reference reads {text.qty(-self.deviation, unit, sign=True)} off")


def no_decision(devices: int, shifts: Mapping[str, float]) -> ConsensusDecision:
    return ConsensusDecision(False, devices, (), tuple(sorted(shifts)), math.nan, math.nan,
                             None, 0.0, dict(shifts))


def _median_rows(stack: FloatArray, min_count: int) -> FloatArray:
    """Per-column median of the finite values, NaN where fewer than ``min_count``."""
    count = np.count_nonzero(np.isfinite(stack), axis=0)
    out = np.full(stack.shape[1], np.nan)
    enough = count >= min_count
    if enough.any():
        out[enough] = np.nanmedian(stack[:, enough], axis=0)
    return out


def common_onset(t: FloatArray, diffs: Mapping[str, FloatArray],
                 tolerance: float) -> float | None:
    """The clear step (``step_onset``) in the per-bin median of the differences, read where
    at least half the devices report: a step most devices share moves the median, a step
    of one device does not. The median's noise is measured about its best single step
    (``median_noise``), so that the step cannot count itself as noise."""
    stack = np.vstack(list(diffs.values()))
    median = _median_rows(stack, max(2, math.ceil(stack.shape[0] / 2)))
    ok = np.isfinite(median)
    return step_onset(np.asarray(t)[ok], median[ok], tolerance,
                      noise=median_noise(median[ok]))


def median_noise(median: FloatArray) -> float:
    """The long-run noise variance of one value of the devices' per-bin ``median``
    difference (finite values, in time order), read about its best single step: the two
    constants before and after the split that leaves the least squared error. This is
    the long-run variance estimated under the alternative a step search tests: read
    about one mean (``onset.noise_variance`` of the series itself) the step is part of
    what is measured, its lag-``LONG_LAG`` differences carry it and the persistence read
    off them rises (phi 0.74 read as 0.89 in a window of 72 ten-minute bins), and the
    larger the step the larger the noise it is compared with: the non-monotonic power of
    change-point tests whose long-run variance is estimated under the null (Vogelsang
    1999). Whatever the devices share besides a step (a bias that follows the hour or the
    concentration) stays in the residual and counts as noise, as before: measured from
    their disagreement with each other instead, it would cancel, and a shared wave of one
    model would look like a reference that steps."""
    x = np.asarray(median, dtype=np.float64)
    if x.size < 4:
        return noise_variance(x)
    return noise_variance(about_one_step(x))


def device_shift(t: FloatArray, diff: FloatArray, onset: float | None) -> float:
    """How far the device moved against the reference: the median after the onset minus
    the median before (a device's own old offset is not the reference's doing), or the
    window's median when there is no onset (or no data before it)."""
    ok = np.isfinite(diff)
    if onset is None:
        return float(np.median(diff[ok])) if ok.any() else math.nan
    after = ok & (t >= onset)
    before = ok & (t < onset)
    if not after.any():
        return math.nan
    level = float(np.median(diff[after]))
    return level - float(np.median(diff[before])) if before.any() else level


def step_seen(t: FloatArray, diff: FloatArray, onset: float, sign: float) -> bool:
    """Whether the device's own difference moved at ``onset`` in the direction ``sign``
    beyond its own noise: the mean after less the mean before, each with its
    autocorrelation-aware standard error (``stats.mean_interval``, about its own trend so
    that the step does not count as noise), clears zero at the one-sided 99% level: the t
    quantile for n_eff(before) + n_eff(after) - 2 degrees of freedom, the pooled count,
    because a step moves the level of one noise process, not its scale. (Welch's
    approximation would follow the shorter, noisier side down to its floor of two
    effective values, one degree of freedom and a quantile of 31: four and a half hours
    of AR(0.9) noise before a step of eight times its standard deviation would not show
    it.)

    Slowly wandering noise (AR(1) with phi 0.97 at two minutes: an hour's memory) holds a
    handful of independent values in twelve hours; the median of six such devices wanders
    by a tolerance, and a change-point search finds it a "step" every few days. Each
    device's own difference tells a step from that wander: a step of the reference moves
    every one of them beyond its noise at that moment, a chance excursion of their median
    does not."""
    ok = np.isfinite(diff)
    before, after = diff[ok & (t < onset)], diff[ok & (t >= onset)]
    if before.size < 3 or after.size < 3:
        return False
    a, b = mean_interval(after.astype(np.float64)), mean_interval(before.astype(np.float64))
    va, vb = a.se * a.se, b.se * b.se
    if not (math.isfinite(va) and math.isfinite(vb)) or not va + vb > 0.0:
        return False
    direction = math.copysign(1.0, sign)  # the deviation's sign only: its size is in units
    return direction * (a.mean - b.mean) > confidence_z(a.n_eff + b.n_eff - 1.0) \
        * math.sqrt(va + vb)


def device_level(t: FloatArray, diff: FloatArray, onset: float | None) -> float:
    """The device's median difference from the reference after ``onset`` (over the whole
    window when None): ``device_shift`` without its level before subtracted."""
    ok = np.isfinite(diff) & (t >= onset if onset is not None else True)
    return float(np.median(diff[ok])) if ok.any() else math.nan


def judge_reference(t: ArrayLike, diffs: Mapping[str, ArrayLike], tolerance: float, *,
                    min_bins: int = 3, min_share: float = MIN_SHARE,
                    min_devices: int = MIN_DEVICES,
                    anchor: float | None = None) -> ConsensusDecision:
    """Decide whether the reference behind ``diffs`` (device id -> device minus reference on
    the common grid ``t``) is at fault.

    Fault: the median shift is beyond ``tolerance`` (the bias tolerance), and at least
    ``min_devices`` devices, and ``min_share`` of those with ``min_bins`` paired bins, lie
    within ``min(tolerance, |shift| / 2)`` of it (so a healthy device at zero never counts
    as sharing a small shift).

    ``anchor``: the shift an earlier audit saw the devices step to together (its
    ``EarlierStep.deviation``), taken as the common shift instead of this window's median:
    a reference that stepped stays off by its step until repaired, and devices whose
    wandering noise spreads them too widely about their own median for the band may still
    sit, a clear majority of them, within it of where the step left them.
    """
    times = np.asarray(t, dtype=np.float64)
    arrays = {d: np.asarray(v, dtype=np.float64) for d, v in sorted(diffs.items())}
    judged = {d: v for d, v in arrays.items() if np.count_nonzero(np.isfinite(v)) >= min_bins}
    if len(judged) < min_devices:
        return no_decision(len(judged), {})
    onset = common_onset(times, judged, tolerance)
    shifts = {d: device_shift(times, v, onset) for d, v in judged.items()}
    shifts = {d: s for d, s in shifts.items() if math.isfinite(s)}
    if len(shifts) < min_devices:
        return no_decision(len(shifts), shifts)
    common = float(np.median(list(shifts.values()))) if anchor is None else anchor
    if not abs(common) > tolerance:  # the typical device has not moved: nothing is shared
        return no_decision(len(shifts), shifts)
    agree = min(tolerance, abs(common) / 2.0)
    members = tuple(d for d, s in shifts.items() if abs(s - common) <= agree)
    others = tuple(d for d in shifts if d not in members)
    member_shifts = np.array([shifts[d] for d in members])
    deviation = float(np.median(member_shifts)) if members else math.nan
    spread = (MAD_SCALE * float(np.median(np.abs(member_shifts - deviation)))
              if members else math.nan)
    share = len(members) / len(shifts)
    fault = len(members) >= min_devices and share >= min_share - 1e-9
    confidence = share * strength(abs(deviation) / tolerance) if fault else 0.0
    level = float(np.nanmedian([device_level(times, judged[d], onset) for d in members])) \
        if members else math.nan
    stepped = tuple(d for d in members if step_seen(times, judged[d], onset, deviation)) \
        if fault and onset is not None else ()
    return ConsensusDecision(fault, len(shifts), members, others, deviation, spread,
                             onset if fault else None, confidence, shifts, level, stepped)


def could_share(decision: ConsensusDecision, tolerance: float) -> bool:
    """Whether some anchor could still make ``decision``'s shifts a shared one
    (``judge_reference(anchor=)``): its members must be a clear majority within
    ``|anchor| / 2`` of an anchor beyond ``tolerance``, so more than half the shifts lie
    beyond ``tolerance / 2`` on one side, and so does their median. False saves the
    store's look for an earlier blame on every healthy group."""
    if not decision.shifts:
        return False
    return abs(float(np.median(list(decision.shifts.values())))) > tolerance / 2.0


DIURNAL_PERIOD_S = 86_400.0
"""The sun and the weather repeat daily: a bias devices share with the hour (an enclosure
warming at midday) comes back at the same hours a day later; a reference's step does not."""
RECURRENCE_DAYS = 7
"""Earlier days whose same hours are asked whether the devices made today's step then
(``recurring``). A bias that follows the hour follows what drives it, and that is not
there every day: an enclosure warms in the sun, not under cloud (the EPA month's units
read 1.5-2.4 degC warm on the afternoons of 23, 25 and 26 Aug, 1 degC on the overcast
24th), traffic's pollution rises on weekdays. One day back, one overcast day hides the
pattern and the next day's hump reads as new; a week holds every weekday once. A step
of the reference is new on every one of them: before it, the same hours showed nothing."""


def recurring_shift(earlier: Mapping[str, ArrayLike], before: Mapping[str, ArrayLike],
                    min_bins: int = 3, min_devices: int = MIN_DEVICES) -> float:
    """How far the devices had moved over the hours after a step on an earlier day
    (``earlier``, device minus reference), from their level over the hours before it that
    day (``before``): per device the median of one minus the median of the other, so that
    each device's own offset cancels as in ``device_shift`` (and, both read the same day,
    so does a slow drift of the devices over the days between); the median over devices
    with ``min_bins`` paired bins in both, NaN with fewer than ``min_devices`` of them."""
    shifts = []
    for device, then in earlier.items():
        a = np.asarray(then, dtype=np.float64)
        b = np.asarray(before.get(device, ()), dtype=np.float64)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if a.size >= min_bins and b.size >= min_bins:
            shifts.append(float(np.median(a)) - float(np.median(b)))
    return float(np.median(shifts)) if len(shifts) >= min_devices else math.nan


def recurring(shifts: Sequence[float], deviation: float) -> float:
    """Of the devices' shifts over the same hours of several earlier days
    (``recurring_shift`` each, NaN where unknown), the one furthest in the direction of
    today's ``deviation``: the devices made a step of this kind at these hours before if
    they made it on any of those days (``RECURRENCE_DAYS``). NaN when no day is known."""
    known = [s for s in shifts if math.isfinite(s)]
    if not known:
        return math.nan
    return max(known, key=lambda s: s * math.copysign(1.0, deviation))


MEDIAN_SE_FACTOR = math.sqrt(3.0)
"""The standard error of a median of k values over sd / sqrt(k). Peers' offsets are known
only to lie within their tolerance: rectangular (GUM 4.3.7), for which it is sqrt(3),
against sqrt(pi / 2) for normal values (the median of few uniform values is the less
efficient estimate; read with the normal factor, a peer median of seven devices with
offsets uniform within a tolerance lay beyond its 99 % margin in 6 % of draws)."""
REJECT_FROM = 5
"""Peers whose level is far from the others' are left out of the spread (``agreeing``)
only from this many: the MAD of three or four values is too unsteady to reject by (it
rejected a healthy peer in a quarter to a third of draws)."""


@dataclass(frozen=True, slots=True, eq=False)
class PeerMedian:
    """A device's peers' per-bin median, standing in for a reference it cannot trust, and
    how far it may itself be off the truth.

    Every peer is off by its own offset (anything up to its tolerance in a healthy fleet)
    and its own noise, so a healthy device can differ from a healthy median by more than
    its tolerance: two devices at opposite ends of it differ by twice. A failure against
    the median has to clear that (``Metrics.comparison_offset_u``; ``stated_uncertainty``
    gives the figures a verdict uses)."""

    values: FloatArray
    """Per bin (NaN where fewer than ``MIN_PEERS`` report)."""
    peers: int
    """Peers with any data."""
    offset_u: float
    """Standard uncertainty of the median's level over the window: the median's
    large-sample standard error, ``MEDIAN_SE_FACTOR`` sd / sqrt(k), from the spread of the
    k peers' levels that agree (``agreeing``: a broken peer cannot inflate it), enlarged
    by t(k - 1) / z at the confidence a failure needs: a spread read from a handful of
    peers is itself uncertain, and a margin of z such uncertainties is then the t
    interval. A peer's level is its median difference from the median of the *other*
    peers, the judged device left out as well: against a median it is part of, a level
    shrinks towards zero, and against one the judged device is part of, the levels
    narrow a healthy device's margin and widen a faulty one's. NaN where fewer than
    ``MIN_PEERS`` levels are known."""
    rms_u: float
    """Root-mean-square standard uncertainty of the median bin by bin: its level's
    (``offset_u``) and its noise's, the same standard error from the peers' scatter about
    their own levels. NaN where ``offset_u`` is."""


def peer_consensus(values: Mapping[str, FloatArray], device: str,
                   min_peers: int = MIN_PEERS) -> PeerMedian | None:
    """Leave-one-out per-bin median of the other devices' values, NaN in bins where fewer
    than ``min_peers`` report, with its uncertainty (``PeerMedian``); None when fewer than
    ``min_peers`` peers have data at all. One device's: ``peer_medians`` gives a group's
    (a device not among ``values`` is judged against all of them)."""
    if device not in values:
        values = {**values, device: np.full(_length(values), np.nan)}
    return peer_medians(values, min_peers).get(device)


def _length(values: Mapping[str, FloatArray]) -> int:
    return next((np.asarray(v).size for v in values.values()), 0)


def peer_medians(values: Mapping[str, FloatArray],
                 min_peers: int = MIN_PEERS) -> dict[str, PeerMedian]:
    """Every device's ``peer_consensus`` (those with at least ``min_peers`` peers
    reporting): its leave-one-out median, and its uncertainty from each peer's level
    against the median of the others but the device and that peer (``PeerMedian``).
    Those k^2 leave-two-out medians are read off each bin's values sorted once
    (``_Ranked``), not taken anew: 40 devices over a day of minutes, 8 ms a device
    instead of 98 (bit for bit the same figures)."""
    rows = {d: np.asarray(v, dtype=np.float64) for d, v in sorted(values.items())}
    if len({v.shape for v in rows.values()}) > 1:
        raise ValueError("peer values must share one bin grid: "
                         + ", ".join(f"{d} {v.shape}" for d, v in rows.items()))
    reporting = [d for d, v in rows.items() if np.isfinite(v).any()]
    if len(reporting) < min_peers:
        return {}
    stack = np.vstack([rows[d] for d in reporting])
    ranked = _Ranked.of(stack)
    out: dict[str, PeerMedian] = {}
    with np.errstate(all="ignore"):
        for device in rows:
            own = reporting.index(device) if device in reporting else None
            peers = [p for p in range(len(reporting)) if p != own]
            if len(peers) < min_peers:
                continue
            median = _median_rows(stack if own is None else np.delete(stack, own, axis=0),
                                  min_peers)
            ground = min(MIN_PEERS - 1, len(peers) - 1)
            levels = [level for p in peers if (level := _level(
                stack[p] - ranked.median_without(own, p, ground))) is not None]
            out[device] = PeerMedian(frozen_array(median), len(peers),
                                     *median_uncertainty(levels))
    return out


@dataclass(frozen=True, slots=True, eq=False)
class _Ranked:
    """Each bin's finite values in ascending order (NaN last), with every row's rank in
    its bin (-1 where it is NaN): the median of a bin without any two rows is then two
    lookups, not a new sort."""

    ordered: FloatArray
    ranks: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, stack: FloatArray) -> _Ranked:
        finite = np.isfinite(stack)
        order = np.argsort(np.where(finite, stack, np.inf), axis=0, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(stack.shape[0])[:, None], axis=0)
        return cls(np.take_along_axis(stack, order, axis=0), np.where(finite, ranks, -1),
                   np.count_nonzero(finite, axis=0))

    def median_without(self, a: int | None, b: int, min_count: int) -> FloatArray:
        """Per-bin median of the finite values of every row but ``a`` (None: none) and
        ``b``; NaN where fewer than ``min_count`` (and 1) remain."""
        none = np.full(self.counts.size, -1)
        ra = self.ranks[a] if a is not None else none
        rb = self.ranks[b]
        first, second = np.minimum(ra, rb), np.maximum(ra, rb)
        first, second = np.where(first < 0, second, first), np.where(first < 0, -1, second)
        remaining = self.counts - (ra >= 0) - (rb >= 0)
        cols = np.arange(self.counts.size)

        def at(position: np.ndarray) -> FloatArray:
            """The value at ``position`` among the remaining ones: the sorted index once
            the removed ranks at or below it are stepped over (lowest first)."""
            index = position.copy()
            for removed in (first, second):
                index = np.where((removed >= 0) & (index >= removed), index + 1, index)
            return self.ordered[np.clip(index, 0, self.ordered.shape[0] - 1), cols]

        out = np.full(self.counts.size, np.nan)
        enough = remaining >= max(min_count, 1)
        middle = 0.5 * (at((remaining - 1) // 2) + at(remaining // 2))
        out[enough] = middle[enough]
        return out


def _level(diff: FloatArray) -> tuple[float, float] | None:
    """A peer's level (median difference from the median of the others) and its noise
    about it (mean square); None where the two never report together."""
    diff = diff[np.isfinite(diff)]
    if not diff.size:
        return None
    level = float(np.median(diff))
    return level, float(np.mean((diff - level) ** 2))


def median_uncertainty(levels: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """``PeerMedian.offset_u`` and ``rms_u`` from the peers' (level, noise) pairs."""
    kept = agreeing(np.array([level for level, _ in levels]))
    if kept.size < MIN_PEERS:
        return math.nan, math.nan
    few = confidence_z(float(kept.size)) / confidence_z(math.inf)
    offset_u = few * MEDIAN_SE_FACTOR * float(np.std(kept, ddof=1)) / math.sqrt(kept.size)
    noise = float(np.median([n for _, n in levels]))
    noise_u = MEDIAN_SE_FACTOR * math.sqrt(noise / len(levels))
    return offset_u, math.hypot(offset_u, noise_u)


def agreeing(levels: FloatArray, k: float = 3.0) -> FloatArray:
    """``levels`` within ``k`` MAD-scaled deviations of their median, from
    ``REJECT_FROM`` levels on: the peers whose spread a standard deviation may describe.
    A standard deviation is not robust to the one broken peer, and a MAD of a handful of
    values too unsteady to be the spread itself (from seven, its 5-95 % range is 0.4-2
    times the truth); the standard deviation of those the MAD does not reject is both."""
    if levels.size < REJECT_FROM:
        return levels
    centre = float(np.median(levels))
    mad = MAD_SCALE * float(np.median(np.abs(levels - centre)))
    return levels[np.abs(levels - centre) <= k * mad] if mad > 0.0 else levels


def stated_uncertainty(peers: PeerMedian, tol: Tolerance) -> tuple[float, float]:
    """The (offset, rms) uncertainties a verdict against ``peers`` uses.

    The median's own (``PeerMedian``), where its peers cannot say (fewer than
    ``MIN_PEERS`` levels) what their tolerance alone says (each peer anywhere within it,
    rectangular, GUM 4.3.7: the median of k of them uncertain by ``MEDIAN_SE_FACTOR``
    (tol / sqrt(3)) / sqrt(k)); never none, for a median taken for an instrument fails a
    healthy device whose offset sits at one end of its tolerance beside peers at the
    other. And never more than the tolerance at the confidence a failure needs: healthy
    peers lie within it, and so does their median, however few they are (the t interval
    of three peers' spread alone is four times that spread: a unit 3 tolerances off
    passed against three peers in 37 of 40 draws)."""
    if math.isfinite(peers.offset_u) and math.isfinite(peers.rms_u):
        offset_u, rms_u = peers.offset_u, peers.rms_u
    else:
        k = math.sqrt(max(peers.peers, 1))
        offset_u, rms_u = tol.bias / k, tol.rmse / k
    z = confidence_z(math.inf)
    return min(offset_u, tol.bias / z), min(rms_u, tol.rmse / z)


REFERENCE_FLAT_SHARE = 0.25
"""A run of identical reference values over this share of the window's values (at least
``REFERENCE_FLAT_MIN`` of them) is the reference's own stuck spell."""
REFERENCE_FLAT_MIN = 6


def reference_own_signals(reference: ArrayLike, values: Mapping[str, ArrayLike],
                          tolerance: float, span: tuple[float, float] | None = None) -> str:
    """What the reference's own series says against it on the common grid (NaN where it
    has no value), beside its devices' ``values`` on the same grid: a long stuck spell.
    "" when none: the devices then have to tell its fault apart from their own. (A
    reference's gaps are no such signal: a coarser reference leaves most bins of a fine
    grid empty, and a gap biases nobody.)

    A run of one value is a stuck spell only when it is not what a healthy reference
    shows. Not at an end of the sensor's ``span`` (within ``tolerance`` of it): an
    analyser in clean air reads its floor (0 or 1 ppb of NO2) for a night, a hygrometer in
    fog its top, and the devices' readings moving meanwhile are as likely their own
    cross-sensitivity as the quantity. Elsewhere two things decide
    (``frozen_while_measurand_moved``): the quantity, as
    the devices' per-bin median sees it, moved through the run by more than one step of
    the reference's resolution (a steady clean-air night at 1 ppb, or fog at saturation,
    repeats one value in a healthy instrument of that resolution); and the devices agree
    with the reference outside the run (within ``tolerance``): a stuck spell explains a
    shared deviation only while it lasts, so one the devices show all window long is
    theirs to explain (a bias their model shares), not evidence against the reference."""
    ref = np.asarray(reference, dtype=np.float64)
    where = np.flatnonzero(np.isfinite(ref))
    finite = ref[where]
    if finite.size < REFERENCE_FLAT_MIN:
        return ""
    changes = np.flatnonzero(finite[1:] != finite[:-1])  # last index of each run
    edges = np.concatenate(([-1], changes, [finite.size - 1]))
    lengths = np.diff(edges)
    k = int(np.argmax(lengths))
    longest = int(lengths[k])
    if longest < max(REFERENCE_FLAT_MIN, REFERENCE_FLAT_SHARE * finite.size):
        return ""
    first, last = int(where[edges[k] + 1]), int(where[edges[k + 1]])
    if span is not None and min(abs(ref[first] - span[0]), abs(ref[first] - span[1])) \
            <= tolerance:
        return ""
    if not frozen_while_measurand_moved(ref, values, first, last, tolerance):
        return ""
    return f"it repeated one value for {longest} consecutive readings (stuck)"


def frozen_while_measurand_moved(reference: FloatArray, values: Mapping[str, ArrayLike],
                                 first: int, last: int, tolerance: float) -> bool:
    """Whether the reference's flat run over bins [first, last] is evidence of its own
    fault (see ``reference_own_signals``): the devices' per-bin median (where at least
    half of them report) moved through the run by more than the reference's resolution
    (its smallest non-zero step between consecutive values, as ``diagnose.reference_live``
    asks of a device's flat run), and outside the run the devices' median difference from
    the reference is within ``tolerance``."""
    if not values:
        return False
    stack = np.vstack([np.asarray(v, dtype=np.float64) for v in values.values()])
    median = _median_rows(stack, max(1, math.ceil(stack.shape[0] / 2)))
    during = median[first:last + 1]
    during = during[np.isfinite(during)]
    finite = reference[np.isfinite(reference)]
    steps = np.abs(np.diff(finite))
    steps = steps[steps > 0]
    quantum = float(steps.min()) if steps.size else 0.0
    if during.size < 2 or not float(during.std()) > quantum:
        return False  # the quantity held still too: a steady value, read at a resolution
    outside = np.ones(reference.size, dtype=bool)
    outside[first:last + 1] = False
    diff = (median - reference)[outside]
    diff = diff[np.isfinite(diff)]
    return not diff.size or abs(float(np.median(diff))) <= tolerance
