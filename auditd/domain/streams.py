"""What a "stream" is, and which are judged: one definition for the log, ``status``, the
report topic and the calibration report.

A **stream** is one sensor of one device at one site: the (site, device, sensor) series
the store keeps readings of, the unit ``[ingest] max_streams`` counts.

- A **field stream** belongs to a device that is not a reference instrument: the audit
  judges field streams, and only them.
- A field stream is **judged** when its latest calibration verdict is ``pass`` or ``fail``,
  and **unjudged** otherwise: ``insufficient_data`` (a verdict that says what is missing),
  or **waiting** (no verdict yet: no reference serves it, too few peers, no profile; the
  audit says which, ``waiting_reasons``).
- A **reference stream** belongs to a reference instrument: the yardstick, never judged.
- A cohort finding (``firmware_regression``: a group of devices) and a metadata finding (a
  device) are findings, not streams, and are counted as findings.

Pure: keys, verdicts and the catalog in, counts and reasons out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from auditd.domain import run_context
from auditd.domain.catalog import Catalog
from auditd.model import Finding
from auditd.text import duration

StreamKey = tuple[str, str, str]
"""(site, device, sensor)."""


@dataclass(frozen=True, slots=True)
class StreamCounts:
    """Streams as the module's docstring defines them."""

    field: int = 0
    passing: int = 0
    failing: int = 0
    insufficient: int = 0
    waiting: int = 0
    reference: int = 0

    @property
    def judged(self) -> int:
        return self.passing + self.failing

    @property
    def unjudged(self) -> int:
        return self.insufficient + self.waiting

    @property
    def stored(self) -> int:
        return self.field + self.reference

    def as_dict(self) -> dict[str, int]:
        return {"streams": self.field, "judged": self.judged, "unjudged": self.unjudged,
                "pass": self.passing, "fail": self.failing,
                "insufficient_data": self.insufficient, "waiting": self.waiting,
                "reference_streams": self.reference}


def is_stream_verdict(finding: Finding) -> bool:
    """A calibration finding on one stream (not a cohort's, not a device's metadata)."""
    return (finding.kind == "calibration" and finding.sensor is not None
            and finding.context.get("comparison") != run_context.COHORT)


def verdicts_of(findings: Iterable[Finding]) -> dict[StreamKey, Finding]:
    """The stream verdicts among ``findings``, by stream (the last one wins)."""
    return {(f.site, f.device, f.sensor or ""): f for f in findings if is_stream_verdict(f)}


def count_streams(stored: Iterable[StreamKey], is_reference: Callable[[str], bool],
                  verdicts: Mapping[StreamKey, Finding]) -> StreamCounts:
    """Count ``stored`` streams (and any stream a verdict names) by the definition above."""
    keys = set(stored) | set(verdicts)
    reference = {k for k in keys if is_reference(k[1])}
    statuses = [verdicts[k].status if k in verdicts else None for k in keys - reference]
    return StreamCounts(field=len(statuses), passing=statuses.count("pass"),
                        failing=statuses.count("fail"),
                        insufficient=statuses.count("insufficient_data"),
                        waiting=statuses.count(None), reference=len(reference))


def counts_by_site(stored: Iterable[StreamKey], is_reference: Callable[[str], bool],
                   verdicts: Mapping[StreamKey, Finding]) -> dict[str, StreamCounts]:
    """:func:`count_streams` for each site."""
    keys = set(stored) | set(verdicts)
    return {site: count_streams([k for k in keys if k[0] == site], is_reference,
                                {k: v for k, v in verdicts.items() if k[0] == site})
            for site in sorted({k[0] for k in keys})}


@dataclass(frozen=True, slots=True)
class Unjudged:
    """A field stream without a pass or fail verdict, and what it is waiting for."""

    site: str
    device: str
    sensor: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return {"site": self.site, "device": self.device, "sensor": self.sensor,
                "why": self.why}


def waiting_reasons(stored: Iterable[StreamKey], catalog: Catalog,
                    announced: Mapping[str, str], verdicts: Mapping[StreamKey, Finding],
                    planned: Mapping[StreamKey, str]) -> list[Unjudged]:
    """For every unjudged field stream, what it needs before it can be judged.

    ``planned``: the streams the audit compared, with the reference that served each
    (``audit_plan.plan``'s tasks); a planned stream without a verdict had too few peers."""
    out = []
    for key in sorted(set(stored) | set(verdicts)):
        site, device, sensor = key
        verdict = verdicts.get(key)
        if catalog.is_reference(device) or (verdict is not None
                                            and verdict.status in ("pass", "fail")):
            continue
        if verdict is not None:
            why = _insufficient(verdict, catalog, announced)
        elif key in planned:
            why = (f"reference {planned[key]} does not report {sensor} (or is not trusted "
                   f"for it), and fewer than 3 co-located devices report {sensor} to judge "
                   "it against their median")
        else:
            why = _unplanned(site, device, sensor, catalog, announced)
        out.append(Unjudged(site, device, sensor, why))
    return out


def _spec_min_samples(catalog: Catalog, device: str, sensor: str,
                      announced: Mapping[str, str]) -> tuple[int, float] | None:
    model = catalog.model_for(device, announced.get(device))
    profile = catalog.profile(model) if model else None
    spec = profile.audited(sensor) if profile else None
    if spec is None:
        return None
    return spec.tolerance.min_samples, spec.tolerance.window_s


def _insufficient(verdict: Finding, catalog: Catalog, announced: Mapping[str, str]) -> str:
    n = verdict.metrics.get("n")
    against = (f"reference {verdict.reference}" if verdict.reference
               else "the median of its peers")
    needs = _spec_min_samples(catalog, verdict.device, verdict.sensor or "", announced)
    window = duration(verdict.window_end - verdict.window_start)
    if needs is not None and isinstance(n, int | float) and n < max(needs[0], 3):
        return (f"needs {max(needs[0], 3)} paired points with {against} in its {window} "
                f"window, has {int(n)}")
    return verdict.action or f"insufficient data against {against} in its {window} window"


def _unplanned(site: str, device: str, sensor: str, catalog: Catalog,
               announced: Mapping[str, str]) -> str:
    model = catalog.model_for(device, announced.get(device))
    if model is None:
        return "no model known (no meta with a model, no [models] glob in the config)"
    if catalog.profile(model) is None:
        return f"no profile for its model {model!r} in profiles_dir"
    if _spec_min_samples(catalog, device, sensor, announced) is None:
        return f"profile {model!r} has no sensor {sensor!r}"
    return (f"no reference instrument serves {device} at site {site!r} (an entry in "
            "references_dir with this site, and a 'serves' glob that matches the device)")
