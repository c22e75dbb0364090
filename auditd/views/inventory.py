"""The fleet as a person reads it: ``sensor-auditd devices`` and ``sensor-auditd history``.

``read_*`` gather from the store; ``device_rows``, ``timeline`` and the ``format_*``
functions are pure, so the tables are tested without a terminal and ``--json`` prints the
same rows a script would otherwise scrape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from auditd.adapters.store import Store
from auditd.adapters.store.findings import StoredFinding
from auditd.adapters.store.quarantine import QuarantineGroup
from auditd.domain.alerts import Alert
from auditd.domain.catalog import Catalog
from auditd.domain.metadata import MetaVersion, parse_date
from auditd.domain.run_context import COHORT
from auditd.model import EventRecord, Finding, StreamInfo, iso
from auditd.reasons import UNKNOWN_DEVICE_MODEL

EMPTY = "-"


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device: str
    site: str
    model: str | None
    firmware: str | None
    installed: str | None
    calibrated: str | None
    last_seen: str | None
    open_findings: int
    """Current verdicts (one per stream, plus metadata) that fail."""
    causes: tuple[str, ...]
    """The first cause of each open finding."""
    reference: bool
    open_alerts: int = 0
    """Alerts open or acknowledged on the device (``findings`` lists them)."""
    unknown: str | None = None
    """Why no profile applies to the device (its telemetry is refused as
    ``unknown_device_model``); None when one does."""


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: str | None
    what: str
    """``meta``, ``event`` or ``finding``."""
    detail: str


def read_devices(store: Store, catalog: Catalog) -> list[DeviceRow]:
    latest = store.devices.latest_meta()
    streams: dict[str, list[StreamInfo]] = {}
    for s in store.readings.streams():
        streams.setdefault(s.device, []).append(s)
    verdicts: dict[str, list[Finding]] = {}
    for stored in store.findings.latest():
        verdicts.setdefault(stored.finding.device, []).append(stored.finding)
    calibrations: dict[str, float] = {}
    for e in store.devices.events():
        if e.type == "calibration":
            calibrations[e.device] = max(e.ts, calibrations.get(e.device, e.ts))
    alerts: dict[str, list[Alert]] = {}
    for alert in store.alerts.select():
        if alert.finding.context.get("comparison") != COHORT:  # a cohort is no device
            alerts.setdefault(alert.device, []).append(alert)
    refused: dict[str, QuarantineGroup] = {}
    announced: dict[str, str] = {}
    for group in store.quarantine.groups(reason=UNKNOWN_DEVICE_MODEL):  # newest first
        if group.device is None:
            continue
        held = refused.get(group.device)
        refused[group.device] = group if held is None else replace(
            held, count=held.count + group.count,
            first_seen=min(held.first_seen, group.first_seen))
        model = _announced_in(group) if group.device not in announced else None
        if model is not None:
            announced[group.device] = model
    devices = sorted(set(latest) | set(streams) | {r.id for r in catalog.references}
                     | set(alerts) | set(refused))
    return device_rows(devices, latest, streams, verdicts, calibrations, catalog,
                       alerts=alerts, refused=refused, announced=announced)


def _announced_in(group: QuarantineGroup) -> str | None:
    """The model a refused meta message announced (a device the catalog does not know is
    not held, so its meta is only in the quarantine)."""
    if not group.topic.endswith("/meta"):
        return None
    try:
        document = json.loads(group.sample_payload)
    except ValueError:
        return None
    model = document.get("model") if isinstance(document, dict) else None
    return model if isinstance(model, str) and model.strip() else None


def device_rows(devices: Sequence[str], latest: Mapping[str, MetaVersion],
                streams: Mapping[str, Sequence[StreamInfo]],
                verdicts: Mapping[str, Sequence[Finding]],
                calibrations: Mapping[str, float], catalog: Catalog, *,
                alerts: Mapping[str, Sequence[Alert]] | None = None,
                refused: Mapping[str, QuarantineGroup] | None = None,
                announced: Mapping[str, str] | None = None) -> list[DeviceRow]:
    """One row per device; ``alerts`` (open ones by device) and ``refused`` (its messages
    refused as ``unknown_device_model``) add the devices nothing else knows, and
    ``announced`` the model a refused meta of such a device named."""
    alerts = alerts or {}
    refused = refused or {}
    announced = announced or {}
    rows = []
    for device in devices:
        version = latest.get(device)
        meta = version.data if version is not None else {}
        own = streams.get(device, ())
        ref = catalog.reference(device)
        model = catalog.model_for(device, version.model if version is not None
                                  else announced.get(device))
        lasts = [s.last_ts for s in own if s.last_ts is not None]
        failing = [f for f in verdicts.get(device, ()) if f.status == "fail"]
        mine = alerts.get(device, ())
        rows.append(DeviceRow(
            device=device,
            site=(version.site if version is not None else "")
            or (own[0].site if own else ref.site if ref else mine[0].site if mine
                else _topic_site(refused[device].topic) if device in refused else ""),
            model=model,
            firmware=_text(meta.get("firmware")),
            installed=_date(meta.get("installed_at")),
            calibrated=_latest_calibration(meta.get("calibrated_at"), calibrations.get(device)),
            last_seen=iso(max([*lasts, refused[device].last_seen] if device in refused
                              else lasts, default=None)),
            open_findings=len(failing),
            causes=tuple(f.causes[0].cause for f in failing if f.causes),
            reference=ref is not None,
            open_alerts=len(mine),
            unknown=_why_unknown(catalog, model, refused.get(device)),
        ))
    return rows


def _why_unknown(catalog: Catalog, model: str | None,
                 refused: QuarantineGroup | None) -> str | None:
    """Why no profile applies, and what that costs, or None when one does."""
    if model is not None and catalog.profile(model) is not None:
        return None
    why = (f"model {model!r} has no profile in profiles_dir" if model is not None
           else "no model: no meta message announced one, and no [models] glob in the "
                "config matches it")
    if refused is not None:
        why += (f"; {refused.count} messages refused as {UNKNOWN_DEVICE_MODEL}, the last "
                f"{iso(refused.last_seen)}")
    return why


def _topic_site(topic: str) -> str:
    """The site level of ``{prefix}/{site}/{device}/{kind}``."""
    levels = topic.split("/")
    return levels[-3] if len(levels) >= 3 else ""


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _date(value: object) -> str | None:
    if value is None:
        return None
    try:
        return _day(parse_date(value))
    except ValueError:
        return f"invalid: {str(value)[:20]}"


def _latest_calibration(meta_value: object, event_ts: float | None) -> str | None:
    try:
        meta_ts = parse_date(meta_value) if meta_value is not None else None
    except ValueError:
        meta_ts = None
    best = max((t for t in (meta_ts, event_ts) if t is not None), default=None)
    return _day(best) if best is not None else None


def _day(ts: float) -> str:
    return str(iso(ts))[:10]


# --------------------------------------------------------------------------- history


def read_timeline(store: Store, device: str) -> list[TimelineEntry]:
    return timeline(store.devices.meta_history(device), store.devices.events(device),
                    store.findings.of_device(device))


def timeline(versions: Sequence[MetaVersion], events: Sequence[EventRecord],
             findings: Sequence[StoredFinding]) -> list[TimelineEntry]:
    """Meta versions (what changed), events, and findings where a stream's verdict changed
    (status or first cause), in time order: the audit repeats a verdict every run, and a
    history that lists each repetition hides the changes it exists to show."""
    timed: list[tuple[float, int, TimelineEntry]] = []
    previous: Mapping[str, Any] = {}
    for i, v in enumerate(versions):
        if i == 0:
            detail = "first seen: " + _pairs(v.data)
        else:
            detail = "changed: " + _diff(previous, v.data)
        timed.append((v.first_seen, 0, TimelineEntry(iso(v.first_seen), "meta", detail)))
        previous = v.data
    for e in events:
        extra = {k: val for k, val in e.data.items() if k not in ("ts", "type")}
        timed.append((e.ts, 1, TimelineEntry(iso(e.ts), "event",
                                             f"{e.type}" + (f": {_pairs(extra)}" if extra
                                                            else ""))))
    last: dict[tuple[str, str], tuple[str, str | None]] = {}
    for stored in findings:
        f = stored.finding
        key = (f.kind, f.sensor or EMPTY)
        causes = [c.cause for c in f.causes]
        state = (f.status, causes[0] if causes else None)
        if last.get(key) == state:
            continue
        last[key] = state
        timed.append((stored.created_at, 2,
                      TimelineEntry(iso(stored.created_at), "finding",
                                    _finding_line(f, key, causes))))
    timed.sort(key=lambda x: (x[0], x[1]))
    return [entry for _, _, entry in timed]


def _finding_line(f: Finding, key: tuple[str, str], causes: list[str]) -> str:
    kind, sensor = key
    what = sensor if kind == "calibration" else kind
    text = f"{what}: {f.status}"
    if f.status == "fail":
        text += f" ({f.severity})"
    if causes:
        text += " " + ", ".join(causes)
    if f.onset is not None:
        text += f"; onset {iso(f.onset)}"
    change = f.context.get("firmware_change")
    if isinstance(change, Mapping):
        text += f"; after firmware {change.get('from')} -> {change.get('to')} at {change.get('at')}"
    return text


def _pairs(data: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_show(v)}" for k, v in sorted(data.items()))


def _diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    keys = sorted(set(before) | set(after))
    parts = [f"{k} {_show(before.get(k))} -> {_show(after.get(k))}" for k in keys
             if before.get(k) != after.get(k)]
    return ", ".join(parts) or "(no key changed)"


def _show(value: object) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return EMPTY if value is None else str(value)


# --------------------------------------------------------------------------- rendering


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table: readable over ssh, on a serial console, in a ticket."""
    cells = [[EMPTY if c is None else str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    return "\n".join(lines)


def format_devices(rows: Sequence[DeviceRow]) -> str:
    """The table, then each device no profile applies to and why."""
    headers = ("DEVICE", "SITE", "MODEL", "FIRMWARE", "INSTALLED", "CALIBRATED", "LAST SEEN",
               "OPEN", "ALERTS", "CAUSES")
    text = format_table(headers, [
        (r.device + (" (ref)" if r.reference else "") + (" (unknown)" if r.unknown else ""),
         r.site, r.model, r.firmware, r.installed, r.calibrated, r.last_seen, r.open_findings,
         r.open_alerts, ", ".join(r.causes) or None) for r in rows])
    unknown = [r for r in rows if r.unknown]
    if not unknown:
        return text
    return (text.rstrip("\n") + "\n\nunknown to the profiles (their telemetry is refused):\n"
            + "".join(f"  {r.device}: {r.unknown}\n" for r in unknown))


def format_timeline(entries: Sequence[TimelineEntry]) -> str:
    return format_table(("WHEN", "WHAT", "DETAIL"), [(e.at, e.what, e.detail) for e in entries])


def as_json(rows: Sequence[DeviceRow] | Sequence[TimelineEntry]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


__all__ = ["DeviceRow", "TimelineEntry", "as_json", "device_rows", "format_devices",
           "format_table", "format_timeline", "read_devices", "read_timeline", "timeline"]
