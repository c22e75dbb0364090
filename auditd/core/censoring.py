"""Readings at a device's full scale say only "at least this much": censored data.

A hygrometer that reads 2 %RH high shows 100 %RH whenever the air is above 98 %RH; paired
with a reference that keeps reading 98.5, 99, 99.7, the device's line flattens at the top
and a healthy unit's gain comes out 0.75 (the difference runs from +3 at 88 %RH to 0 at
100). That is the range's edge, not the device's calibration. The comparison's figures
are therefore taken on the pairs the edge cannot have touched: the pairs where the device
sits at the edge are left out, and with them every pair whose reference is as far into
the edge's reach as the pinned ones were (a selection on the reference, the regressor,
which leaves the line through the rest unbiased; leaving out only the pinned pairs would
select on the device's own noise and bias it).

Pure: an ``Aligned`` and the profile's range in, the ``Aligned`` its figures are computed
on out. The detectors still read the whole window: pinned at full scale is what the
``clipping`` cause is about.

Where the readings at the end are themselves the evidence (a window the device spent at
its end, asked of the readings before it), they are not left out but counted as "at the
end or beyond": ``censored_normal`` and ``censored_line``, Tobit maximum-likelihood fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import OptimizeResult, minimize
from scipy.special import log_ndtr

from auditd.core.align import Aligned
from auditd.core.fit import fit_line
from auditd.core.series import FloatArray
from auditd.model import SensorSpec

EDGE_REACH_RMSE = 0.25
"""A device value within this share of the rmse tolerance of a range end is at it: a
reading exactly at full scale, or the mean of a reference interval most of whose readings
were (on a coarser reference the device is averaged over each of its intervals)."""


def uncensored(aligned: Aligned, spec: SensorSpec) -> Aligned:
    """``aligned`` with the pairs in a range end's reach turned unpaired (the device's
    value NaN), or ``aligned`` itself when there are none.

    In reach: the device at the end (``EDGE_REACH_RMSE``) while the reference is within
    the bias tolerance of it too (the end explains the reading: fog at a hygrometer), and
    every pair whose reference is as deep in that reach as any pinned one was (from the
    lowest such reference up, at the top end: leaving out only the pinned pairs below a
    higher level would keep the device's low readings there and drop its high ones, a
    selection on its noise that flattens the line; a stray full-scale reading cannot drag
    the level far, since a pinned pair's reference is within the bias tolerance of the
    end). A device at full scale while the reference is farther
    off keeps its pairs: that reading is an error (``clipping``, and the offset behind
    it), and evidence. An end the device reads beyond is no full scale (an
    electrochemical cell reporting -5 ppb is not pinned at 0) and censors nothing; nor
    does an end the device is not pinned at (``pinned_at``).

    A window spent mostly at the end may keep too few pairs to judge: it then has
    insufficient data, which is what it is (a gain cannot be told at the end of a range)."""
    top, bottom = edge_zones(aligned, spec)
    drop = top | bottom
    if not bool(np.any(drop)):
        return aligned
    return replace(aligned, device=np.where(drop, np.nan, np.asarray(aligned.device)))


def edge_zones(aligned: Aligned, spec: SensorSpec) -> tuple[np.ndarray, np.ndarray]:
    """The paired bins ``uncensored`` leaves out at the range's top and at its bottom
    (boolean masks over the bins; both empty where the device is pinned at neither end)."""
    lo, hi = spec.range
    paired = aligned.paired
    none = np.zeros(paired.shape, dtype=bool)
    if not bool(paired.any()):
        return none, none
    device = np.asarray(aligned.device)
    reference = np.asarray(aligned.reference)
    reach = edge_reach(spec)
    explained = spec.tolerance.bias + reach
    top, bottom = none, none
    dev_p = device[paired]
    if math.isfinite(hi) and pinned_at(dev_p, hi, reach, high=True) \
            and not bool(np.any(dev_p > hi + reach)):
        pinned = paired & (device >= hi - reach) & (reference >= hi - explained)
        top = _edge_zone(reference, paired, pinned, high=True)
    if math.isfinite(lo) and pinned_at(dev_p, lo, reach, high=False) \
            and not bool(np.any(dev_p < lo - reach)):
        pinned = paired & (device <= lo + reach) & (reference <= lo + explained)
        bottom = _edge_zone(reference, paired, pinned, high=False)
    return top & paired, bottom & paired


def edge_reach(spec: SensorSpec) -> float:
    """How near a range's end a reading counts as at it (``EDGE_REACH_RMSE`` of the rmse
    tolerance): one definition for the zones and for the least errors read in them."""
    return EDGE_REACH_RMSE * spec.tolerance.rmse


@dataclass(frozen=True, slots=True)
class ErrorFloor:
    """What a window's readings prove of the device's error whatever the range's ends hide
    (``error_floor``): per pair, the least error the readings allow.

    Near the top of the range the truth is at least what the reference reads (a reference
    at 100 %RH in fog says only "100 or more"), so a device reading below the reference
    there is wrong by at least the difference; a device pinned at the top may be right
    (its least error is 0); the bottom mirrors it; away from the edge zones the error is
    the difference itself."""

    rms: float
    """The root mean square of the least errors: never above the device's true rmse where
    the reference reads the truth (each least error lies between 0 and the error)."""
    mean: float
    """The least errors' mean, signed."""
    capped: int
    """+1 where the device is capped at the range's top, -1 at its bottom, 0 at neither
    (or both)."""

    @property
    def offset_supported(self) -> bool:
        """Whether the least errors' mean points towards the end the device is capped at.
        A cap can only understate an error towards its own end: a dust sensor held at 0
        beside 5-9 ug/m3 is low by at least what it shows. The other way, the cap pulls
        the mean by itself: a noisy unit capped at 100 %RH reads low on average with no
        offset at all, and a reference reading 10 %RH high, itself capped at 100, puts a
        healthy unit below it by a margin that is the reference's; nothing in the window
        tells those apart (not the unit's jumps either: under a capped reference the air
        may move as much as a noisy unit jumps)."""
        return self.capped != 0 and self.mean * self.capped > 0.0


def error_floor(aligned: Aligned, spec: SensorSpec) -> ErrorFloor | None:
    """The window's ``ErrorFloor``; None without a pair."""
    paired = aligned.paired
    if not bool(paired.any()):
        return None
    top, bottom = edge_zones(aligned, spec)
    lo, hi = spec.range
    reach = edge_reach(spec)
    device = np.asarray(aligned.device)
    difference = device - np.asarray(aligned.reference)
    below = np.where(device < hi - reach, np.minimum(difference, 0.0), 0.0)
    above = np.where(device > lo + reach, np.maximum(difference, 0.0), 0.0)
    least = np.where(top, below, np.where(bottom, above, difference))[paired]
    capped = (1 if top.any() else 0) - (1 if bottom.any() else 0)
    return ErrorFloor(rms=float(math.sqrt(float(least @ least) / least.size)),
                      mean=float(least.mean()), capped=capped)


END_EXACT_RELATIVE = 1e-9
"""Bins this close (relative to the value's magnitude, at least 1) hold the same value: a
mean of readings all at full scale need not be bit-equal to it."""

PINNED_MIN_BINS = 3
"""Bins a device's extreme value must fill before it is a ceiling (or floor) it is pinned
at, not one low reading."""


def pinned_at(device: np.ndarray, end: float, reach: float, *, high: bool) -> bool:
    """Is the device pinned at this range end? Saturation holds one value at the end,
    whatever the air does: the extreme the device reported, within ``reach`` of the end,
    repeated in at least ``PINNED_MIN_BINS`` bins (a hygrometer's 100.0, or the 99.9 an
    EPA unit clamps at; a dust sensor clamped to 0.0). A device whose readings only come
    close to the end is measuring there: clean air read as 0.9-5 ug/m3 on a 0-1000 range
    varies from hour to hour, and censoring it as pinned took 266 of a month's 706 hours
    (every hour the monitor read below 6.75) out of the EPA units' PM2.5."""
    if device.size == 0:
        return False
    extreme = float(device.max() if high else device.min())
    if abs(extreme - end) > reach:
        return False
    same = np.abs(device - extreme) <= END_EXACT_RELATIVE * max(abs(extreme), 1.0)
    return int(np.count_nonzero(same)) >= PINNED_MIN_BINS


def _edge_zone(reference: np.ndarray, paired: np.ndarray, pinned: np.ndarray, *,
               high: bool) -> np.ndarray:
    """The pinned pairs and every pair whose reference is at least as deep in the edge's
    reach as any pinned one's."""
    if not bool(pinned.any()):
        return pinned
    ref_pinned = reference[pinned]
    if high:
        level = float(ref_pinned.min())
        return pinned | (paired & (reference >= level))
    level = float(ref_pinned.max())
    return pinned | (paired & (reference <= level))


# --------------------------------------------------------------------------- censored fits


def _mills(w: FloatArray, log_cdf: FloatArray) -> FloatArray:
    """pdf(w) / cdf(w) of the standard normal, from cdf's logarithm: about -w far into
    the lower tail, where both underflow."""
    log_pdf = -0.5 * w * w - 0.5 * math.log(2.0 * math.pi)
    return np.exp(np.minimum(log_pdf - log_cdf, 700.0))


def _converged(fit: OptimizeResult, scale: int) -> bool:
    """Whether a likelihood fit stopped at a minimum: reported so, or stopped for the
    rounding of a sum of ``scale`` terms with its gradient near zero."""
    gradient = np.asarray(fit.jac, dtype=np.float64)
    return bool(fit.success) or bool(np.all(np.isfinite(gradient))
                                     and float(np.max(np.abs(gradient))) < 1e-4 * scale)


Objective = Callable[[FloatArray], tuple[float, FloatArray]]

LOG_STD_REACH = 12.0
"""How far (in e-folds, a factor of about 160,000) a censored fit's std may move from the
spread of the values seen in full: a bound that keeps the search's steps finite."""


def _tobit(seen: FloatArray, y: FloatArray, held: FloatArray, limits: FloatArray, *,
           upper: bool, start: FloatArray, spread: float) -> tuple[FloatArray, Objective] | None:
    """Maximum likelihood of y = X beta + e, e normal of std s, where the rows ``seen``
    of X go with the values ``y`` seen in full and the rows ``held`` with values known
    only to lie at or beyond their ``limits`` (at or above with ``upper``). Returns
    (beta..., log s) and the negative log-likelihood with its gradient, or None where the
    search does not end at a finite minimum. ``start``: beta's first guess; ``spread``:
    the std of the values seen, the first guess of s and the centre of its bounds."""
    sign = -1.0 if upper else 1.0  # a held value lies at sign * (value - limit) <= 0
    observed = int(y.size)

    def negative_log_likelihood(p: FloatArray) -> tuple[float, FloatArray]:
        beta, log_std = p[:-1], float(p[-1])
        std = math.exp(log_std)
        z = (y - seen @ beta) / std
        w = sign * (limits - held @ beta) / std
        log_cdf = log_ndtr(w)
        ratio = _mills(w, log_cdf)
        value = float(0.5 * (z @ z) + observed * log_std - log_cdf.sum())
        d_beta = (-(seen.T @ z) + sign * (held.T @ ratio)) / std
        return value, np.append(d_beta, observed - z @ z + ratio @ w)

    centre = math.log(spread)
    bounds = [(None, None)] * int(start.size) + [(centre - LOG_STD_REACH,
                                                  centre + LOG_STD_REACH)]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # steps too far
        fit = minimize(negative_log_likelihood, np.append(start, centre), jac=True,
                       method="L-BFGS-B", bounds=bounds)
    found = np.asarray(fit.x, dtype=np.float64)
    if not (_converged(fit, observed + int(limits.size)) and np.all(np.isfinite(found))):
        return None
    return found, negative_log_likelihood


@dataclass(frozen=True, slots=True)
class CensoredNormal:
    """A normal sample's mean and std fitted with some of its values known only to lie
    at or beyond a limit (``censored_normal``)."""

    mean: float
    std: float
    observed: int
    censored: int


CENSORED_MIN_OBSERVED = 3
"""Values seen in full that a censored fit needs: a std from fewer is no measure."""


def censored_normal(values: FloatArray, limits: FloatArray, censored: np.ndarray, *,
                    upper: bool) -> CensoredNormal | None:
    """Maximum-likelihood mean and std (Tobit) of a normal sample in which ``censored``
    values are known only to lie at or beyond their ``limits`` (at or above them with
    ``upper``, at or below them without; a censored value's own entry is not read).

    Why: a sensor held at the end of its range reports the end, not what it would read.
    Dropping those readings keeps only its excursions away from the end and understates
    the error that holds it there (a dust unit 20 ug/m3 low over air at 8-20 sits at 0.0
    most of the time, and its readings off it, at the air's peaks, differ from the air by
    -17 to -18). Counting each as "at the end or beyond" keeps their weight.

    None with fewer than ``CENSORED_MIN_OBSERVED`` values seen in full or no spread among
    them, or where the fit does not converge to finite figures."""
    seen = ~censored
    observed = int(np.count_nonzero(seen))
    if observed < CENSORED_MIN_OBSERVED:
        return None
    x = values[seen]
    spread = float(np.std(x))
    if not spread > 0.0:
        return None
    held = int(censored.size) - observed
    fitted = _tobit(np.ones((observed, 1)), x, np.ones((held, 1)), limits[censored],
                    upper=upper, start=np.array([float(np.mean(x))]), spread=spread)
    if fitted is None:
        return None
    (mean, log_std), _ = fitted
    return CensoredNormal(float(mean), math.exp(float(log_std)), observed, held)


@dataclass(frozen=True, slots=True)
class CensoredLine:
    """A line y = offset + gain x fitted with some y known only to lie at or beyond a
    limit (``censored_line``)."""

    gain: float
    offset: float
    std: float
    """Of the residuals, the censored ones' included."""
    gain_se: float
    """From the likelihood's curvature, as for white noise (if anything too small)."""
    r2: float
    """The share of y's variance the line carries: gain^2 var(x) / (that + std^2)."""
    observed: int
    censored: int


def censored_line(x: FloatArray, y: FloatArray, censored: np.ndarray, limit: float, *,
                  upper: bool) -> CensoredLine | None:
    """Maximum-likelihood line of ``y`` on ``x`` with Gaussian residuals (a Tobit
    regression), the ``censored`` y known only to lie at or beyond ``limit`` (at or above
    with ``upper``). Its slope is that of the readings off the limit corrected for what
    the limit hid: dropping them flattens or steepens it by which levels of ``x`` the
    device reached the limit at. None as ``censored_normal``, or where ``x`` does not
    vary among the values seen in full."""
    seen = ~censored
    observed = int(np.count_nonzero(seen))
    if observed < CENSORED_MIN_OBSERVED:
        return None
    line = fit_line(y[seen], x[seen])
    if not (math.isfinite(line.gain) and line.residual_std > 0.0):
        return None  # x or the values seen do not vary: no line, or no std to read
    centre = float(np.mean(x))  # the offset at the mean, nearly independent of the slope
    held = int(censored.size) - observed
    fitted = _tobit(np.column_stack((np.ones(observed), x[seen] - centre)), y[seen],
                    np.column_stack((np.ones(held), x[censored] - centre)),
                    np.full(held, limit), upper=upper,
                    start=np.array([line.offset + line.gain * centre, line.gain]),
                    spread=line.residual_std)
    if fitted is None:
        return None
    found, objective = fitted
    level, gain, std = float(found[0]), float(found[1]), math.exp(float(found[2]))
    x_spread = float(np.std(x)) or 1.0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        gain_se = _gain_se(objective, found, 1e-4 * np.array([std, std / x_spread, 1.0]))
    carried = gain * gain * float(np.var(x))
    return CensoredLine(gain, level - gain * centre, std, gain_se,
                        carried / (carried + std * std), observed, held)


def _gain_se(objective: Objective, at: FloatArray, steps: FloatArray) -> float:
    """The standard error of the second parameter at the minimum ``at``: the inverse of
    the curvature (central differences of the analytic gradient, each parameter stepped
    by its ``steps``, a small share of its own scale), NaN where singular."""
    k = at.size
    hessian = np.empty((k, k))
    for i in range(k):
        h = float(steps[i])
        up, down = at.copy(), at.copy()
        up[i] += h
        down[i] -= h
        hessian[:, i] = (objective(up)[1] - objective(down)[1]) / (2.0 * h)
    hessian = 0.5 * (hessian + hessian.T)
    if not np.all(np.isfinite(hessian)):
        return math.nan
    try:
        variance = float(np.linalg.inv(hessian)[1, 1])
    except np.linalg.LinAlgError:
        return math.nan
    return math.sqrt(variance) if variance > 0.0 else math.nan
