"""One sentence a field technician can act on, chosen by the top cause.

Kept apart from the diagnosis so that runbooks (a later layer) can replace the wording
without touching how causes are found.
"""

from __future__ import annotations

import math

from auditd import text
from auditd.core.align import Aligned
from auditd.core.diagnose import Case
from auditd.model import Cause, SensorSpec

REFERENCE_SILENT = 0.5
"""Below this reference coverage the shortage of data is the reference's doing."""


def action_for_failure(causes: tuple[Cause, ...], case: Case, failed: tuple[str, ...]) -> str:
    """The numbers quoted are the ones the top cause's evidence used: the fault's (after a
    clock correction, since an onset) for a calibration, the window's for clock and data."""
    spec, metrics, measured = case.spec, case.fault_metrics, case.metrics
    name, unit = spec.name, spec.unit
    if not causes:
        return (f"Review the {name} stream by hand: it is out of tolerance on "
                f"{', '.join(failed)} without a recognised pattern.")
    top = causes[0].cause
    if top == "stuck":
        return (f"Inspect the {name} sensor on site and power-cycle or replace it: it stopped "
                f"following the reference.")
    if top == "unit_mismatch":
        return (f"Check the unit the device's firmware or configuration sends for {name}: "
                f"the readings are not in {unit}.")
    if top == "time_lag":
        lag = case.lag.lag_s
        late = "behind" if math.isfinite(lag) and lag > 0 else "ahead of"
        return (f"Check the device's clock synchronisation (NTP) and its buffering: its "
                f"timestamps run {text.duration(lag)} {late} the reference.")
    if top == "offset_drift":
        return (f"Re-zero or recalibrate the {name} sensor against a transfer standard: it "
                f"reads {text.qty(metrics.bias, unit, sign=True)} off the reference.")
    if top == "gain_drift":
        return (f"Run a two-point (span) calibration of the {name} sensor: its gain against "
                f"the reference is {text.num(metrics.gain, 4)}.")
    if top == "noise":
        return (f"Check the {name} sensor's wiring, shielding, mounting and power supply: its "
                f"readings scatter {text.qty(metrics.residual_std, unit)} around the "
                f"reference.")
    if top == "dropout":
        return (f"Check the device's power and network link: it delivered {name} data for "
                f"only {text.percent(measured.device_coverage)} of the window.")
    return f"Investigate the {name} stream: {causes[0].evidence}."


def action_for_insufficient(aligned: Aligned, spec: SensorSpec, min_samples: int,
                            causes: tuple[Cause, ...]) -> str:
    if causes and causes[0].cause == "dropout":
        return (f"Check the device's power and network link: it delivered {spec.name} data "
                f"for only {text.percent(aligned.device_coverage)} of the window.")
    if aligned.reference_coverage < REFERENCE_SILENT:
        return (f"Check that the reference instrument is reporting {spec.name}: it delivered "
                f"data for only {text.percent(aligned.reference_coverage)} of the window.")
    return (f"No action on the sensor yet: only {aligned.n_paired} paired values of the "
            f"{min_samples} an audit needs.")
