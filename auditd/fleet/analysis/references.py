"""Reference health across the fleet: which reference instruments drift, and whose verdicts
that makes unreliable. Pure.

A gateway that finds most devices beside one reference deviating alike blames the
reference (``core/consensus.py``): it publishes a finding on the reference itself (cause
``reference_fault``) and puts ``reference_fault`` first on the devices' findings. The fleet
names each such reference, and marks the verdicts of the devices it serves on that sensor as
unreliable: they say more about the reference than about the device, so they are neither
counted in a cohort, nor in a drift rate, nor put on the due list.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from auditd.fleet.analysis.facts import Verdict

REFERENCE_FAULT = "reference_fault"


@dataclass(frozen=True, slots=True)
class ReferenceHealth:
    """One reference and sensor as the fleet sees it."""

    site: str
    gateway: str
    reference: str
    sensor: str
    state: str
    """``drifting`` (its gateway judged it faulty) or ``ok``."""
    devices: tuple[str, ...]
    """The field devices compared with it on this sensor."""
    unreliable: tuple[str, ...] = ()
    """Of them, those whose verdict is the reference's fault rather than theirs."""
    bias: float | None = None
    onset: float | None = None
    evidence: str = ""


def is_reference_finding(v: Verdict) -> bool:
    """The gateway's finding on a reference itself (its device is the reference)."""
    return bool(v.causes) and v.causes[0] == REFERENCE_FAULT and (
        v.reference is None or v.reference == v.device)


def unreliable(v: Verdict, drifting: AbstractSet[tuple[str, str, str]] = frozenset()
               ) -> bool:
    """A field device's verdict that its reference's fault explains: the gateway said so
    (``reference_fault`` among its causes), or it was judged against a reference the fleet
    knows is drifting on that sensor (``drifting``: ``drifting_keys``)."""
    if REFERENCE_FAULT in v.causes:
        return not is_reference_finding(v)
    return v.reference is not None and (v.site, v.reference, v.sensor or "") in drifting


def reference_health(verdicts: Iterable[Verdict]) -> list[ReferenceHealth]:
    """Every reference the latest calibration verdicts were judged against, per sensor,
    drifting ones first."""
    verdicts = [v for v in verdicts if v.kind == "calibration"]
    faulty = {(v.site, v.device, v.sensor or ""): v for v in verdicts
              if is_reference_finding(v) and v.status == "fail"}
    served: dict[tuple[str, str, str], list[Verdict]] = {}
    for v in verdicts:
        if v.reference and not is_reference_finding(v):
            served.setdefault((v.site, v.reference, v.sensor or ""), []).append(v)
    out = []
    for key in sorted(set(served) | set(faulty)):
        site, reference, sensor = key
        devices = served.get(key, [])
        own = faulty.get(key)
        state = "drifting" if own is not None else "ok"
        gateway = own.gateway if own else devices[0].gateway
        marked = tuple(sorted(v.device for v in devices
                              if REFERENCE_FAULT in v.causes or own is not None))
        out.append(ReferenceHealth(
            site, gateway, reference, sensor, state, tuple(sorted(v.device for v in devices)),
            marked if own is not None or marked else (),
            own.bias if own else None, own.onset if own else None,
            own.evidence if own else ""))
    out.sort(key=lambda r: (r.state != "drifting", r.site, r.reference, r.sensor))
    return out


def drifting_keys(health: Iterable[ReferenceHealth]) -> set[tuple[str, str, str]]:
    """(site, reference, sensor) of every drifting reference."""
    return {(r.site, r.reference, r.sensor) for r in health if r.state == "drifting"}
