"""One sentence a field technician can act on, chosen by the top cause.

The wording is the cause registry's (``core.causes``: ``action``); this module only fills
in the figures the top cause's evidence used: the fault's (after a clock correction, since
an onset) for a calibration, the window's for clock and data.
"""

from __future__ import annotations

import math

from auditd import text
from auditd.core.align import Aligned
from auditd.core.causes import spec as cause_spec
from auditd.core.diagnose import Case
from auditd.core.fit import Metrics
from auditd.model import Cause, SensorSpec

REFERENCE_SILENT = 0.5
"""Below this reference coverage the shortage of data is the reference's doing."""


def action_for_failure(causes: tuple[Cause, ...], case: Case, failed: tuple[str, ...]) -> str:
    spec = case.spec
    top = causes[0] if causes else unexplained(failed, case.metrics, spec)
    entry = cause_spec(top.cause)
    if entry is None or not entry.action:
        return f"Investigate the {spec.name} stream: {top.evidence}."
    metrics, lag = case.fault_metrics, case.lag.lag_s
    return entry.action.format_map({
        "sensor": spec.name,
        "unit": spec.unit,
        "bias": text.qty(metrics.bias, spec.unit, sign=True),
        "gain": text.num(metrics.gain, 4),
        "scatter": text.qty(metrics.residual_std, spec.unit),
        "lag": text.duration(lag),
        "late": "behind" if math.isfinite(lag) and lag > 0 else "ahead of",
        "coverage": text.percent(case.metrics.device_coverage),
        "failed": ", ".join(failed),
    })


UNEXPLAINED_CONFIDENCE = 0.5
"""Not a claim about what happened: that the deviation is real is the failed checks'
business, and which cause it has is unknown."""


def unexplained(failed: tuple[str, ...], metrics: Metrics, spec: SensorSpec) -> Cause:
    """The cause of a failing window no detector explains: "deviation of unknown cause",
    with the metrics that failed and their values, so that a finding or alert never fails
    without naming something a technician can read."""
    shown = ", ".join(f"{name} {_figure(metrics, name, spec.unit)}" for name in failed)
    return Cause("unexplained", UNEXPLAINED_CONFIDENCE,
                 f"deviation of unknown cause: out of tolerance on {shown or 'its checks'}")


def _figure(metrics: Metrics, name: str, unit: str) -> str:
    value = getattr(metrics, name, math.nan)
    if name in ("bias", "rmse"):
        return text.qty(value, unit, sign=name == "bias")
    if name == "lag_s":
        return text.duration(value) if math.isfinite(value) else "undefined"
    return text.num(value, 4)


def action_for_dropout(aligned: Aligned, spec: SensorSpec) -> str:
    """The ``dropout`` sentence from the window's coverage (no case is built for it)."""
    entry = cause_spec("dropout")
    assert entry is not None
    return entry.action.format_map({"sensor": spec.name,
                                    "coverage": text.percent(aligned.device_coverage)})


def action_for_insufficient(aligned: Aligned, spec: SensorSpec, min_samples: int,
                            causes: tuple[Cause, ...], judged: Aligned | None = None) -> str:
    """Why a window could not be judged, and what (if anything) to do. ``judged``: the
    pairs the figures were computed on, when readings at a range end were left out
    (``core.censoring``)."""
    if causes and causes[0].cause == "dropout":
        return action_for_dropout(aligned, spec)
    if judged is not None and judged is not aligned and judged.n_paired < aligned.n_paired:
        low, high = spec.range
        return (f"No action on the sensor yet: {judged.n_paired} of its "
                f"{aligned.n_paired} paired values lie away from the end of its range "
                f"({text.num(low)} to {text.qty(high, spec.unit)}), where a reading says only "
                f"'at least this'; an audit needs {min_samples}.")
    if aligned.reference_coverage < REFERENCE_SILENT:
        return (f"Check that the reference instrument is reporting {spec.name}: it delivered "
                f"data for only {text.percent(aligned.reference_coverage)} of the window.")
    return (f"No action on the sensor yet: only {aligned.n_paired} paired values of the "
            f"{min_samples} an audit needs.")
