"""The pure calibration core: arrays and a SensorSpec in, frozen values out.

No broker, database, clock, file or logging: everything here is a function of its
arguments, so the daemon, ``replay`` and ``colocate`` get the same answer from the same
data. One module per responsibility, each meant to grow on its own:

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
"""

from auditd.core.align import Aligned, align
from auditd.core.checks import exceedances, failed_checks
from auditd.core.diagnose import DETECTORS, Case, build_case, diagnose
from auditd.core.drift import Drift, baseline_residuals, drift, residuals
from auditd.core.fit import LineFit, Metrics, compute_metrics, fit_line
from auditd.core.lag import LagEstimate, estimate_lag
from auditd.core.onset import step_onset
from auditd.core.series import Series
from auditd.core.units import UnitCandidate, UnitMatch, default_unit_candidates, unit_candidates
from auditd.core.verdict import StreamVerdict, evaluate_aligned, evaluate_stream

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
    "compute_metrics",
    "default_unit_candidates",
    "diagnose",
    "drift",
    "estimate_lag",
    "evaluate_aligned",
    "evaluate_stream",
    "exceedances",
    "failed_checks",
    "fit_line",
    "residuals",
    "step_onset",
    "unit_candidates",
]
