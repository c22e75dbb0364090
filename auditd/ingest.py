"""Validate a batch of raw messages and commit everything it carries in one transaction.

This is the seam between the pure validation and the store, shared by every source: the
MQTT adapter (which acknowledges a batch only after ``ingest`` returns), ``replay`` and
CSV import. It knows nothing of the broker, so the live daemon and a replay cannot differ.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from auditd.catalog import Catalog
from auditd.model import Outcome, Profile, RawMessage
from auditd.store import Store, WriteResult
from auditd.validate import Limits, validate_message


@dataclass
class IngestTotals:
    """Running totals since start, for the replay summary, ``status`` and metrics."""

    messages: int = 0
    readings_accepted: int = 0
    readings_duplicate: int = 0
    nulls: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    meta_versions: int = 0
    events: int = 0

    def add(self, messages: int, result: WriteResult) -> None:
        self.messages += messages
        self.readings_accepted += result.readings_inserted + result.readings_duplicate
        self.readings_duplicate += result.readings_duplicate
        self.nulls += result.nulls
        self.rejected.update(result.rejected)
        self.meta_versions += result.meta_versions_added
        self.events += result.events_added

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "readings_accepted": self.readings_accepted,
            "readings_duplicate": self.readings_duplicate,
            "nulls": self.nulls,
            "readings_rejected": dict(sorted(self.rejected.items())),
            "meta_versions": self.meta_versions,
            "events": self.events,
        }


class Ingestor:
    """Owns the device directory (announced models) and the validate -> store step."""

    def __init__(self, store: Store, catalog: Catalog, *, prefix: str, limits: Limits) -> None:
        self._store = store
        self._catalog = catalog
        self._prefix = prefix
        self._limits = limits
        self._announced: dict[str, str] = {
            device: str(meta["model"])
            for device, meta in store.latest_meta().items()
            if isinstance(meta.get("model"), str)
        }
        self.totals = IngestTotals()

    def reload(self, catalog: Catalog) -> None:
        """Swap in new profiles and references; the next batch is validated against them."""
        self._catalog = catalog

    def profile_for(self, site: str, device: str) -> Profile | None:
        model = self._catalog.model_for(device, self._announced.get(device))
        return self._catalog.profile(model) if model else None

    def validate(self, messages: Sequence[RawMessage]) -> list[Outcome]:
        """Validate in arrival order; a meta message names the model for the ones after it."""
        outcomes = []
        for message in messages:
            outcome = validate_message(
                message, prefix=self._prefix, profile_for=self.profile_for, limits=self._limits
            )
            if outcome.meta is not None:
                model = outcome.meta.data.get("model")
                if isinstance(model, str):
                    self._announced[outcome.meta.device] = model
            outcomes.append(outcome)
        return outcomes

    def commit(self, messages: int, outcomes: Sequence[Outcome]) -> WriteResult:
        """One transaction; raises StoreError and leaves nothing behind when it fails."""
        result = self._store.write_outcomes(outcomes)
        self.totals.add(messages, result)
        return result

    def totals_dict(self) -> dict[str, object]:
        return self.totals.as_dict()

    def ingest(self, messages: Sequence[RawMessage]) -> WriteResult:
        return self.commit(len(messages), self.validate(messages))
