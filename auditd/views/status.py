"""``sensor-auditd status``: the daemon's state at a glance, read from its store.

For someone with a shell on the gateway and no Prometheus: the store is the one thing
that outlives the process, so the figures come from it (opened read-only, so a look never
migrates, creates or locks anything). Totals are the store's persistent counters (since
the database was created), not the running process's.

What the store cannot say (the daemon is running but stuck, the broker is unreachable
now) comes from the run-state file the daemon keeps beside it
(``auditd.adapters.runstate``), with its age, so a dead daemon is not shown as alive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from auditd.adapters.runstate import RunState, read_state
from auditd.adapters.store import Store
from auditd.adapters.store.counters import COUNTER_REJECTED_PREFIX
from auditd.domain.audit_plan import streams_by_status
from auditd.text import ago, duration


@dataclass(frozen=True, slots=True)
class Status:
    store: str
    schema_version: int
    file_bytes: int
    wal_bytes: int
    streams: int
    readings: int
    by_status: dict[str, int]
    alerts_open: dict[str, int]
    failing: list[dict[str, Any]]
    last_audit_at: float | None
    last_reading_at: float | None
    messages: int
    readings_accepted: int
    readings_duplicate: int
    rejected: dict[str, int]
    outbox_depth: int
    outbox_oldest_at: float | None
    counters: dict[str, int] = field(default_factory=dict)
    tickets: dict[str, int] = field(default_factory=dict)
    """Ticket deliveries ``pending`` and ``dead`` (dead-lettered, docs/alerts.md)."""
    quarantine_rows: int = 0
    quarantine_bytes: int = 0
    daemon: dict[str, Any] | None = None
    """The daemon's last run state (``RunState``), with ``running`` and ``age_s`` added;
    None when it never ran beside this store."""
    last_run: dict[str, Any] | None = None
    """The latest audit run (``AuditRunRecord``): its stream counts (``domain.streams``)
    and the unjudged streams with what each is waiting for; None before the first."""


def gather(store: Store, now: float) -> Status:
    """Everything ``status`` prints, from cheap queries (no scan of the readings)."""
    summary = store.summary()
    counters = store.counters.all()
    verdicts = store.findings.verdict_counts()
    depth, oldest = store.outbox.depth()
    failing = [
        {"device": f.device, "sensor": f.sensor, "severity": f.severity,
         "cause": f.causes[0].cause if f.causes else None}
        for f in (s.finding for s in store.findings.latest()) if f.status == "fail"]
    run = store.findings.last_run()
    return Status(
        store=summary.path, schema_version=summary.schema_version,
        file_bytes=summary.file_size, wal_bytes=summary.wal_size,
        streams=summary.streams, readings=summary.readings,
        by_status=streams_by_status(verdicts), alerts_open=store.alerts.open_by_severity(),
        failing=failing,
        last_audit_at=run.at if run is not None else store.findings.last_at(),
        last_reading_at=store.readings.last_reading_at(), messages=counters.get("messages", 0),
        readings_accepted=counters.get("readings_inserted", 0)
        + counters.get("readings_duplicate", 0),
        readings_duplicate=counters.get("readings_duplicate", 0),
        rejected=store.counters.rejections(), outbox_depth=depth, outbox_oldest_at=oldest,
        counters={k: v for k, v in sorted(counters.items())
                  if not k.startswith(COUNTER_REJECTED_PREFIX)},
        tickets={"pending": summary.tickets_pending, "dead": summary.tickets_dead},
        quarantine_rows=summary.quarantine, quarantine_bytes=summary.quarantine_bytes,
        daemon=_daemon(read_state(store.path), now),
        last_run=asdict(run) if run is not None else None,
    )


def _daemon(state: RunState | None, now: float) -> dict[str, Any] | None:
    if state is None:
        return None
    return {**asdict(state), "running": state.running(now), "age_s": round(state.age(now), 1)}


def as_json(status: Status) -> dict[str, Any]:
    return asdict(status)


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} ({ago(now - ts)})"


def _size(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _daemon_line(d: dict[str, Any] | None, now: float) -> str:
    if d is None:
        return "no state beside this store (never run here, or before this version)"
    if d["stopped"]:
        return f"stopped {_when(d['updated_at'], now)}"
    if not d["running"]:
        return (f"not running: last state {_when(d['updated_at'], now)} (pid {d['pid']}; "
                f"killed, or hung)")
    up = ago(now - d["started_at"]).removesuffix(" ago")
    if d["healthy"]:
        return f"running, healthy (pid {d['pid']}, up {up})"
    return f"running, UNHEALTHY (pid {d['pid']}, up {up}): " + "; ".join(d["problems"])


def _broker_line(d: dict[str, Any] | None, c: Mapping[str, int], now: float) -> str:
    history = (f"{c.get('broker_connects', 0)} connects, "
               f"{c.get('broker_disconnects', 0)} disconnects, "
               f"{c.get('broker_connect_failures', 0)} failed attempts")
    if d is None or not d["running"]:
        return history
    state = d["broker"]
    if state == "unreachable":
        state = (f"UNREACHABLE since {_when(d['broker_down_since'], now)} "
                 f"({d['broker_error'] or 'no connection'}), retrying")
    return f"{state}; {history}"


UNJUDGED_SHOWN = 20
"""Unjudged streams ``status`` lists in text (``--json`` has every one the run kept)."""


def _streams_line(status: Status, verdicts: str) -> str:
    """Streams as ``domain.streams`` defines them: as of the last audit (which knows the
    references), else only what the store holds."""
    if status.last_run is None:
        return (f"{status.streams} stored, none audited yet (latest verdicts: "
                f"{verdicts or 'none'})")
    c = status.last_run["streams"]
    return (f"{status.streams} stored; at the last audit {c['streams']} field streams: "
            f"{c['judged']} judged ({c['pass']} pass, {c['fail']} fail), {c['unjudged']} "
            f"not ({c['insufficient_data']} insufficient data, {c['waiting']} waiting); "
            f"{c['reference_streams']} of reference instruments")


def _next_audit(d: dict[str, Any] | None, now: float) -> str:
    if d is None or not d["running"]:
        return "when the daemon runs ([audit] first_run_delay after its start)"
    at = d.get("next_audit_at")
    if at is None:
        return "not scheduled"
    every = d.get("audit_interval_s")
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"{stamp} (in {duration(max(0.0, at - now))}"
            + (f"; then every {duration(every)}" if every else "") + ")")


def _bounds_line(status: Status) -> str:
    d = status.daemon
    b: dict[str, int] = d["bounds"] if d and d["running"] else {}

    def of(used: int, limit_key: str, size: bool = False) -> str:
        text = _size(used) if size else str(used)
        limit = b.get(limit_key)
        return f"{text} of {_size(limit) if size else limit}" if limit else text

    parts = [f"devices {of(b['devices'], 'max_devices')}"] if "devices" in b else []
    parts.append(f"streams {of(b.get('streams', status.streams), 'max_streams')}")
    parts.append(f"quarantine {of(status.quarantine_rows, 'max_quarantine_rows')} rows, "
                 f"{of(status.quarantine_bytes, 'max_quarantine_bytes', size=True)}")
    parts.append(f"WAL {of(status.wal_bytes, 'wal_limit', size=True)}")
    if "free_bytes" in b:
        parts.append(f"{_size(b['free_bytes'])} free")
    return ", ".join(parts)


def render(status: Status, now: float) -> str:
    """The text a person reads: one line a subject, the failing streams listed last."""
    c = status.counters
    verdicts = ", ".join(f"{n} {name}" for name, n in status.by_status.items())
    alerts = ", ".join(f"{name} {n}" for name, n in status.alerts_open.items())
    rejected = ", ".join(f"{reason} {n}" for reason, n in status.rejected.items()) or "none"
    lines = [
        f"daemon:         {_daemon_line(status.daemon, now)}",
        f"store:          {status.store} (schema {status.schema_version}, "
        f"{_size(status.file_bytes)}, WAL {_size(status.wal_bytes)})",
        f"streams:        {_streams_line(status, verdicts)}",
        f"alerts open:    {sum(status.alerts_open.values())} ({alerts})",
        f"last audit:     {_when(status.last_audit_at, now)}",
        f"next audit:     {_next_audit(status.daemon, now)}",
        f"last reading:   {_when(status.last_reading_at, now)}",
        f"messages:       {status.messages} stored; readings accepted "
        f"{status.readings_accepted} (of which redelivered {status.readings_duplicate})",
        f"rejected:       {rejected}",
        f"tickets:        {status.tickets.get('pending', 0)} deliveries pending, "
        f"{status.tickets.get('dead', 0)} dead-lettered (sensor-auditd findings, tickets)",
        f"outbox:         {status.outbox_depth} waiting"
        + (f", oldest {_when(status.outbox_oldest_at, now)}" if status.outbox_depth else ""),
        f"broker:         {_broker_line(status.daemon, c, now)}",
        f"bounds:         {_bounds_line(status)}",
        f"store failures: {c.get('store_write_failures', 0)} write transactions refused "
        "(disk full, locked); none of their messages was acknowledged",
    ]
    unjudged = status.last_run["unjudged"] if status.last_run else ()
    if unjudged:
        lines.append("waiting (not judged at the last audit, and what for):")
        lines += [f"  {u['device']}/{u['sensor']}: {u['why']}"
                  for u in unjudged[:UNJUDGED_SHOWN]]
        more = status.last_run["streams"]["unjudged"] - min(len(unjudged), UNJUDGED_SHOWN) \
            if status.last_run else 0
        if more > 0:
            lines.append(f"  ... and {more} more (status --json lists up to 200)")
    if status.failing:
        lines.append("failing:")
        lines += [f"  {f['device']}/{f['sensor'] or '-'}: {f['severity']} {f['cause'] or ''}"
                  .rstrip() for f in status.failing]
    return "\n".join(lines)
