"""Validate a batch of raw messages and commit everything it carries, one message's failure
being that message's alone.

This is the seam between the pure validation and the store, shared by every source: the
MQTT adapter (which acknowledges a batch only after it is committed), ``replay`` and CSV
import. It knows nothing of the broker, so the live daemon and a replay cannot differ.

Two things are decided here because they need what the gateway already holds, not just
the message:

* **Admission.** A message from a device the gateway holds nothing of yet is refused
  (``device_limit``) once ``Limits.max_devices`` devices are held, and a reading that would
  start a new stream once ``Limits.max_streams`` streams exist, or in one more site than
  ``Limits.max_sites_per_device`` for its device (``stream_limit``): a
  flood of invented ids costs a quarantine row each, never memory or store without bound.
  Known devices and streams are never affected.
* **Fault isolation** (:meth:`Ingestor.commit_isolated`). A batch is one transaction. If
  it fails for a reason of the data's (``auditd.retry``), the batch is split in halves,
  and so on, until the message the store cannot take is alone; it is then quarantined
  (``store_rejected``, with the error) and the rest is committed. A failure of the
  environment's (disk full, locked) is retried as it is, and nothing is given up.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from auditd import logs
from auditd.adapters.store import Store
from auditd.adapters.store.readings import WriteResult
from auditd.domain.catalog import Catalog
from auditd.domain.validate import Limits, Reason, TopicError, parse_topic, validate_message
from auditd.errors import StoreError
from auditd.model import Outcome, Profile, RawMessage, Rejection
from auditd.retry import error_code, is_transient
from auditd.text import printable

log = logs.get("auditd.app.ingest")

DETAIL_MAX = 300
"""Characters of an exception's text kept in a ``store_rejected`` detail."""

OnTransient = Callable[[BaseException, int], bool]
"""Called with the error and the attempt number (from 0) when a commit failed for a
reason of the environment's; returns True to try the same commit again (after waiting as
long as it sees fit), False to give up (the rest stays uncommitted)."""

Commit = Callable[[int, Sequence[Outcome]], WriteResult]


@dataclass(frozen=True, slots=True)
class Committed:
    """What :meth:`Ingestor.commit_isolated` got done."""

    count: int
    """Messages committed, from the first of the batch: only these may be acknowledged."""
    result: WriteResult


@dataclass
class IngestTotals:
    """Running totals since start, for the replay summary, ``status`` and metrics."""

    messages: int = 0
    readings_accepted: int = 0
    readings_duplicate: int = 0
    nulls: int = 0
    out_of_range: int = 0
    """Readings kept although outside their profile's plausible range."""
    rejected: Counter[str] = field(default_factory=Counter)
    meta_versions: int = 0
    events: int = 0
    isolated: int = 0
    """Messages quarantined as ``store_rejected`` after isolating them from their batch."""
    history_trimmed: Counter[str] = field(default_factory=Counter)
    """Meta versions and events deleted to keep each device within its caps."""

    def add(self, messages: int, result: WriteResult) -> None:
        self.messages += messages
        self.readings_accepted += result.readings_inserted + result.readings_duplicate
        self.readings_duplicate += result.readings_duplicate
        self.nulls += result.nulls
        self.out_of_range += result.out_of_range
        self.rejected.update(result.rejected)
        self.meta_versions += result.meta_versions_added
        self.events += result.events_added
        self.history_trimmed.update({"meta_versions": result.meta_versions_trimmed,
                                     "events": result.events_trimmed})

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "readings_accepted": self.readings_accepted,
            "readings_duplicate": self.readings_duplicate,
            "nulls": self.nulls,
            "readings_out_of_range": self.out_of_range,
            "readings_rejected": dict(sorted(self.rejected.items())),
            "meta_versions": self.meta_versions,
            "events": self.events,
        }


class Ingestor:
    """Owns the device directory (announced models, admitted devices and streams) and the
    validate -> store step."""

    def __init__(self, store: Store, catalog: Catalog, *, prefix: str, limits: Limits,
                 on_rejected: Callable[[Sequence[Rejection]], None] | None = None) -> None:
        self._store = store
        self._on_rejected = on_rejected
        """Told what each commit quarantined (the daemon's rate-limited rejection log)."""
        self._catalog = catalog
        self._prefix = prefix
        self._limits = limits
        self._generation = -1
        self._announced: dict[str, str] = {}
        self._devices: set[str] = set()
        self._streams: set[tuple[str, str, str]] = set()
        self._sites: dict[str, set[str]] = {}
        """Device -> the sites it holds streams in."""
        self._load_directory()
        self.totals = IngestTotals()

    def _load_directory(self) -> None:
        """What the store holds: devices, streams and announced models. Read at start and
        again after retention forgot devices (``Store.directory_generation``), in the
        writer's thread, between batches."""
        self._generation = self._store.directory_generation
        self._announced = {device: version.model
                           for device, version in self._store.devices.latest_meta().items()
                           if version.model is not None}
        self._devices = self._store.readings.known_devices()
        self._streams = self._store.readings.stream_keys()
        self._sites = {}
        for site, device, _ in self._streams:
            self._sites.setdefault(device, set()).add(site)

    def reload(self, catalog: Catalog) -> None:
        """Swap in new profiles and references; the next batch is validated against them."""
        self._catalog = catalog

    @property
    def devices(self) -> int:
        """Devices admitted (an upper bound of those the store holds: a message admitted and
        then quarantined by the store still counts until the next start)."""
        return len(self._devices)

    @property
    def streams(self) -> int:
        return len(self._streams)

    def profile_for(self, site: str, device: str) -> Profile | None:
        model = self._catalog.model_for(device, self._announced.get(device))
        return self._catalog.profile(model) if model else None

    def validate(self, messages: Sequence[RawMessage]) -> list[Outcome]:
        """Validate and admit in arrival order, one outcome per message; a meta message
        names the model for the ones after it."""
        if self._store.directory_generation != self._generation:
            self._load_directory()
        outcomes = []
        for message in messages:
            outcome = self._admit(message, validate_message(
                message, prefix=self._prefix, profile_for=self.profile_for,
                limits=self._limits, unit_aliases=self._catalog.unit_aliases))
            if outcome.meta is not None:
                model = outcome.meta.data.get("model")
                if isinstance(model, str):
                    self._announced[outcome.meta.device] = model
            if outcome.message is None and message.packet_id is not None and (
                    message.redelivered or outcome.rejections):
                outcome = replace(outcome, message=message)  # to recognise a redelivery
            outcomes.append(outcome)
        return outcomes

    def _admit(self, message: RawMessage, outcome: Outcome) -> Outcome:
        """Refuse what would add a device or a stream beyond the limits. Only a device the
        catalog knows (a ``[models]`` glob, a reference entry or an announced model with a
        profile) takes a place, and only if something of it is stored (a reading within the
        stream cap, a meta or an event), so a flood of ids no profile covers, or one refused
        stream by stream, does not use up the devices."""
        record = (outcome.readings[0] if outcome.readings
                  else outcome.meta if outcome.meta is not None else outcome.event)
        if record is None:
            return outcome  # nothing to store: rejections only
        device = record.device
        new_device = device not in self._devices
        if new_device:
            announced = outcome.meta.data.get("model") if outcome.meta is not None else None
            if not self._catalog_knows(device, announced):
                shown = f" (model {printable(announced[:100])!r})" if isinstance(
                    announced, str) else ""
                return Outcome(rejections=(self._refusal(
                    message, Reason.UNKNOWN_DEVICE_MODEL, device, None,
                    f"no device profile is known for {record.site}/{device}{shown}: a "
                    f"device is held only once the catalog knows it"),))
            if len(self._devices) >= self._limits.max_devices:
                return Outcome(rejections=(self._refusal(
                    message, Reason.DEVICE_LIMIT, device, None,
                    f"the gateway holds {len(self._devices)} devices, the limit "
                    f"(ingest.max_devices); {device!r} is new"),))
        refused: list[Rejection] = []
        kept = []
        for reading in outcome.readings:
            key = (reading.site, reading.device, reading.sensor)
            if key not in self._streams:
                sites = self._sites.get(device, set())
                if len(self._streams) >= self._limits.max_streams:
                    refused.append(self._refusal(
                        message, Reason.STREAM_LIMIT, device, reading.sensor,
                        f"the gateway holds {len(self._streams)} streams, the limit "
                        f"(ingest.max_streams); {reading.sensor!r} of {device!r} is new"))
                    continue
                if reading.site not in sites and len(sites) >= self._limits.max_sites_per_device:
                    refused.append(self._refusal(
                        message, Reason.STREAM_LIMIT, device, reading.sensor,
                        f"{device!r} holds streams in {len(sites)} sites, the limit "
                        f"(ingest.max_sites_per_device); site {reading.site!r} is new"))
                    continue
                self._sites.setdefault(device, set()).add(reading.site)
                self._streams.add(key)
            kept.append(reading)
        if new_device and (kept or outcome.meta is not None or outcome.event is not None):
            self._devices.add(device)
        if not refused:
            return outcome
        return Outcome(readings=tuple(kept), rejections=(*outcome.rejections, *refused),
                       meta=outcome.meta, event=outcome.event, message=outcome.message)

    def _catalog_knows(self, device: str, announced: object) -> bool:
        """A profile applies to ``device`` by a ``[models]`` glob or a reference entry, or
        by the model it announces (now or before)."""
        for model in (self._catalog.model_for(device),
                      announced if isinstance(announced, str) else None,
                      self._announced.get(device)):
            if model and self._catalog.profile(model.strip()) is not None:
                return True
        return False

    def _refusal(self, message: RawMessage, reason: str, device: str, sensor: str | None,
                 detail: str) -> Rejection:
        return Rejection(message.topic, reason, detail,
                         message.payload[: self._limits.quarantine_payload_cap],
                         message.received_at, device, sensor)

    def commit(self, messages: int, outcomes: Sequence[Outcome], *,
               counters: Mapping[str, int] | None = None) -> WriteResult:
        """One transaction (with ``counters`` added to the persistent ones in it); raises
        and leaves nothing behind when it fails."""
        result = self._store.readings.write_outcomes(outcomes, counters=counters)
        self.totals.add(messages, result)
        if result.rejections and self._on_rejected is not None:
            self._on_rejected(result.rejections)
        return result

    def commit_isolated(self, messages: Sequence[RawMessage], outcomes: Sequence[Outcome], *,
                        on_transient: OnTransient | None = None,
                        commit: Commit | None = None) -> Committed:
        """Commit the outcomes of ``messages`` (one each, in order), isolating any message
        the store refuses for a reason of its own: it is quarantined as ``store_rejected``
        and the others are committed, in as few transactions as the failures allow.

        Returns how many messages, from the first, are committed (stored or quarantined):
        all of them unless ``on_transient`` gave up, and then a prefix, since the batch is
        worked through in order. Only those may be acknowledged. Without ``on_transient`` an
        error of the environment's is raised. ``commit`` replaces :meth:`commit` (the
        command router applies its commands first).
        """
        if len(messages) != len(outcomes):
            raise ValueError("one outcome per message")
        write = commit or self.commit
        work = list(outcomes)
        replaced: dict[int, int] = {}  # index -> times its outcome was replaced
        pending: deque[tuple[int, int]] = deque([(0, len(work))] if work else [])
        total = WriteResult()
        attempt = 0
        while pending:
            lo, hi = pending[0]
            try:
                total = total.plus(write(hi - lo, work[lo:hi]))
            except Exception as exc:
                if hi - lo == 1 and replaced.get(lo, 0) >= 2:
                    # Not even a bare quarantine row goes in: not the message's doing.
                    exc = StoreError(f"the store refuses a bare quarantine row: {exc}",
                                     transient=True, code=error_code(exc))
                if is_transient(exc):
                    if on_transient is None:
                        raise exc from None
                    if not on_transient(exc, attempt):
                        return Committed(lo, total)
                    attempt += 1
                    continue
                attempt = 0
                if hi - lo > 1:
                    mid = (lo + hi) // 2
                    pending[0] = (mid, hi)
                    pending.appendleft((lo, mid))
                    continue
                work[lo] = self._quarantine_instead(messages[lo], exc, replaced.get(lo, 0))
                replaced[lo] = replaced.get(lo, 0) + 1
                continue
            pending.popleft()
            attempt = 0
        return Committed(len(work), total)

    def _quarantine_instead(self, message: RawMessage, exc: BaseException,
                            tried: int) -> Outcome:
        """The quarantine row that stands for a message the store refused; should that be
        refused too, a bare one (no topic, no payload)."""
        root = exc.__cause__ if isinstance(exc, StoreError) and exc.__cause__ else exc
        code = error_code(exc)
        detail = printable(f"{type(root).__name__}{f' ({code})' if code else ''}: "
                           f"{root}")[:DETAIL_MAX]
        if tried:
            return Outcome(rejections=(Rejection(
                "", Reason.STORE_REJECTED, detail, b"", message.received_at),))
        self.totals.isolated += 1
        log.error("message_isolated", topic=printable(message.topic[:200]), error=detail,
                  quarantined=True)
        try:
            device: str | None = parse_topic(message.topic, self._prefix).device
        except TopicError:
            device = None
        return Outcome(rejections=(Rejection(
            printable(message.topic[: self._limits.quarantine_payload_cap]),
            Reason.STORE_REJECTED, detail,
            message.payload[: self._limits.quarantine_payload_cap],
            message.received_at, device),))

    def totals_dict(self) -> dict[str, object]:
        return self.totals.as_dict()

    def ingest(self, messages: Sequence[RawMessage]) -> WriteResult:
        """Validate and commit ``messages``, isolating what the store refuses; an error of
        the environment's is raised (no retry). Returns what the commits changed."""
        return self.commit_isolated(messages, self.validate(messages)).result
