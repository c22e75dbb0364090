"""The fleet's offline commands: ``fleet import``, ``fleet report``, ``fleet status``. The
only place that joins the fleet's adapters (PostgreSQL, gateway stores, profiles) to its
analysis and views; ``sensor-auditd fleet`` (``auditd.cli``) calls these."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditd.adapters.config.catalog import load_profiles
from auditd.fleet.adapters.gateway_store import GatewayFile, read_gateway_store
from auditd.fleet.adapters.store import FleetStatus, FleetStore, read_facts, read_status
from auditd.fleet.analysis.report import (
    DEFAULT_OPTIONS,
    FleetReport,
    ReportOptions,
    build_report,
)
from auditd.fleet.records import Rejected, Upstream, WriteCounts
from auditd.model import Profile

IMPORT_BATCH = 50_000
"""Records per transaction of an import: a store of a busy gateway is written in a few
transactions (each idempotent, so an interrupted import is simply run again)."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    path: str
    gateway: str
    records: int
    rejected: int
    written: WriteCounts

    def to_json(self) -> dict[str, Any]:
        w = self.written
        return {"path": self.path, "gateway": self.gateway, "records": self.records,
                "rejected": self.rejected,
                "new": {"findings": w.findings, "devices": w.inventory,
                        "versions": w.versions, "tickets": w.tickets,
                        "rejected": w.rejected}}


def _batches(records: Iterable[Upstream], size: int) -> Iterable[list[Upstream]]:
    iterator = iter(records)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def import_stores(store: FleetStore, sources: Sequence[GatewayFile],
                  batch: int = IMPORT_BATCH) -> list[ImportResult]:
    """Each gateway store into the fleet; importing one twice writes nothing new."""
    results = []
    for source in sources:
        records = rejected = 0
        total: dict[str, int] = {}
        for chunk in _batches(read_gateway_store(source), batch):
            records += len(chunk)
            rejected += sum(isinstance(r, Rejected) for r in chunk)
            counts = store.write(chunk)
            for name in WriteCounts.__dataclass_fields__:
                total[name] = total.get(name, 0) + getattr(counts, name)
        results.append(ImportResult(str(source.path), source.gateway, records, rejected,
                                    WriteCounts(**total)))
    return results


def fleet_report(store: FleetStore, now: float, profiles_dir: Path | None,
                 options: ReportOptions = DEFAULT_OPTIONS) -> FleetReport:
    profiles: Mapping[str, Profile] = load_profiles(profiles_dir) if profiles_dir else {}
    return build_report(read_facts(store, now, profiles), options)


def fleet_status(store: FleetStore) -> FleetStatus:
    return read_status(store)
