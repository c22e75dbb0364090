"""The fleet's offline commands: ``fleet import``, ``fleet report``, ``fleet status``. The
only place that joins the fleet's adapters (PostgreSQL, gateway stores, profiles) to its
analysis and views; ``sensor-auditd fleet`` (``auditd.cli``) calls these."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Full, Queue
from typing import Any, TypeVar

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

IMPORT_BATCH = 10_000
"""Records per transaction of an import: small stores share one, a busy gateway's store is
written in a few (each idempotent, so an interrupted import is simply run again)."""


@dataclass(frozen=True, slots=True)
class StoreRead:
    """One gateway store as the import read it."""

    path: str
    gateway: str
    records: int
    rejected: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "gateway": self.gateway, "records": self.records,
                "rejected": self.rejected}


@dataclass(frozen=True, slots=True)
class ImportResult:
    stores: tuple[StoreRead, ...]
    written: WriteCounts
    """What was new: all zero when every store had been imported before."""

    def to_json(self) -> dict[str, Any]:
        w = self.written
        return {"imports": [s.to_json() for s in self.stores],
                "new": {"findings": w.findings, "devices": w.inventory,
                        "versions": w.versions, "tickets": w.tickets,
                        "rejected": w.rejected}}


_DONE = object()
_Prepared = TypeVar("_Prepared")


def _read_ahead(sources: Sequence[GatewayFile], batch: int,
                prepare: Callable[[list[Upstream]], _Prepared]
                ) -> Iterator[tuple[_Prepared, list[StoreRead]]]:
    """The stores' records in batches of about ``batch`` (small stores share one), read,
    parsed and ``prepare``d (formatted for COPY) by a thread of its own while the caller
    writes the previous batch: the database works while Python parses, and the caller's
    turn is only the database's work. At most two batches wait; an error in the reader is
    raised here, in order. With each batch, the stores it completed."""
    queue: Queue[object] = Queue(maxsize=2)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.5)
                return True
            except Full:
                continue
        return False

    def read() -> None:
        try:
            pending: list[Upstream] = []
            done: list[StoreRead] = []
            for source in sources:
                records = rejected = 0
                for record in read_gateway_store(source):
                    records += 1
                    rejected += isinstance(record, Rejected)
                    pending.append(record)
                    if len(pending) >= batch:
                        if not hand_over((prepare(pending), done)):
                            return
                        pending, done = [], []
                done.append(StoreRead(str(source.path), source.gateway, records, rejected))
            if (pending or done) and not hand_over((prepare(pending), done)):
                return
        except BaseException as exc:  # handed to the caller, raised there
            hand_over(exc)
            return
        hand_over(_DONE)

    reader = threading.Thread(target=read, name="fleet-import-reader", daemon=True)
    reader.start()
    try:
        while (item := queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]  # (records, stores), put by read()
    finally:
        stop.set()
        reader.join()


def import_stores(store: FleetStore, sources: Sequence[GatewayFile],
                  batch: int = IMPORT_BATCH) -> ImportResult:
    """The gateway stores into the fleet, a batch a transaction; importing them again
    writes nothing new. An interrupted import leaves whole batches: run it again."""
    total: dict[str, int] = {}
    read: list[StoreRead] = []
    for staged, done in _read_ahead(sources, batch, store.stage):
        counts = store.write(staged, durable=False)
        for name in WriteCounts.__dataclass_fields__:
            total[name] = total.get(name, 0) + getattr(counts, name)
        read.extend(done)
    return ImportResult(tuple(read), WriteCounts(**total))


def fleet_report(store: FleetStore, now: float, profiles_dir: Path | None,
                 options: ReportOptions = DEFAULT_OPTIONS) -> FleetReport:
    profiles: Mapping[str, Profile] = load_profiles(profiles_dir) if profiles_dir else {}
    return build_report(read_facts(store, now, profiles), options)


def fleet_status(store: FleetStore) -> FleetStatus:
    return read_status(store)
