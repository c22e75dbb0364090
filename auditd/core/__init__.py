"""The pure calibration core: arrays and a SensorSpec in, frozen values out.

No broker, database, clock, file or logging: everything here is a function of its
arguments, so the daemon, ``replay`` and ``colocate`` get the same answer from the same
data. One module per responsibility, each meant to grow on its own:

- ``causes``    the one cause registry (pure data: what each cause is and what to do)
- ``series``    the input value (``Series``)
- ``align``     both streams on one time base (``align``, ``Aligned``)
- ``lag``       prewhitened FFT cross-correlation (``estimate_lag``, ``LagEstimate``)
- ``fit``       OLS and the metrics (``compute_metrics``, ``Metrics``)
- ``checks``    metrics against the tolerance
- ``units``     unit-confusion candidates (``unit_candidates``)
- ``diagnose``  small cause detectors, ranked
- ``onset``     when a deviation began (change points)
- ``drift``     residuals against a known-good baseline (``drift``, ``Drift``)
- ``actions``   the technician's sentence
- ``verdict``   the composition (``evaluate_stream``, ``StreamVerdict``)
- ``cohorts``, ``consensus``  what a group of streams shows that one cannot

The names below are loaded on first use (PEP 562): a gateway that only ingests imports
``auditd.core.causes`` (a table) with the alerting, and pays for numpy and scipy only when
its first audit asks for a verdict. The functions ``diagnose.diagnose`` and ``drift.drift``
are not among them: their names are their modules' (``from auditd.core.drift import
drift``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Bound now, not on first use: ``align`` is also the name of its module, which the import
# system would otherwise leave in its place once anything imported ``auditd.core.align``.
# Both need numpy only, which the store has loaded anyway.
from auditd.core.align import Aligned, align
from auditd.core.series import Series

if TYPE_CHECKING:
    from auditd.core import cohorts, consensus, onset
    from auditd.core.checks import (
        estimates_beyond,
        exceedances,
        failed_checks,
        unconfirmed_checks,
    )
    from auditd.core.diagnose import DETECTORS, Case, build_case
    from auditd.core.drift import Drift, baseline_residuals, residuals
    from auditd.core.fit import LineFit, Metrics, compute_metrics, fit_line
    from auditd.core.lag import LagEstimate, estimate_lag
    from auditd.core.onset import step_onset
    from auditd.core.units import (
        UnitCandidate,
        UnitMatch,
        default_unit_candidates,
        unit_candidates,
    )
    from auditd.core.verdict import (
        StreamVerdict,
        confirm_lag,
        confirmation_start,
        detector_causes,
        evaluate_aligned,
        evaluate_stream,
        line_before,
        on_interval_samples,
        window_lag,
    )

_HOME = {
    "exceedances": "checks", "failed_checks": "checks", "unconfirmed_checks": "checks",
    "estimates_beyond": "checks",
    "DETECTORS": "diagnose", "Case": "diagnose", "build_case": "diagnose",
    "Drift": "drift", "baseline_residuals": "drift", "residuals": "drift",
    "LineFit": "fit", "Metrics": "fit", "compute_metrics": "fit", "fit_line": "fit",
    "LagEstimate": "lag", "estimate_lag": "lag",
    "step_onset": "onset",
    "UnitCandidate": "units", "UnitMatch": "units", "default_unit_candidates": "units",
    "unit_candidates": "units",
    "StreamVerdict": "verdict", "detector_causes": "verdict", "evaluate_aligned": "verdict",
    "evaluate_stream": "verdict", "window_lag": "verdict", "on_interval_samples": "verdict",
    "confirm_lag": "verdict", "confirmation_start": "verdict", "line_before": "verdict",
}

__all__ = [
    "DETECTORS",
    "Aligned",
    "Case",
    "Drift",
    "LagEstimate",
    "LineFit",
    "Metrics",
    "Series",
    "StreamVerdict",
    "UnitCandidate",
    "UnitMatch",
    "align",
    "baseline_residuals",
    "build_case",
    "cohorts",
    "compute_metrics",
    "confirm_lag",
    "confirmation_start",
    "consensus",
    "default_unit_candidates",
    "detector_causes",
    "estimate_lag",
    "estimates_beyond",
    "evaluate_aligned",
    "evaluate_stream",
    "exceedances",
    "failed_checks",
    "fit_line",
    "line_before",
    "on_interval_samples",
    "onset",
    "residuals",
    "step_onset",
    "unconfirmed_checks",
    "unit_candidates",
    "window_lag",
]


_LAZY_MODULES = frozenset({"checks", "cohorts", "consensus", "onset"})
"""Submodules reachable as ``core.consensus`` before anything imported them: what a group
of streams shows (reference faults, firmware cohorts) and a fault's onset across audits,
loaded with the first audit too, and the tolerance checks (``core.checks.plausible_bounds``)."""


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"auditd.core.{name}")
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'auditd.core' has no attribute {name!r}")
    return getattr(importlib.import_module(f"auditd.core.{home}"), name)
