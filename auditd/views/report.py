"""The calibration report: what a store says about the fleet, for people who would rather
look than read.

Three layers, one direction:

* ``collect(store, catalog)`` (adapter) reads the current verdict of every stream, the
  readings behind each failing one, and its devices' metadata versions and events;
* ``build(...)`` (pure) turns that into the report's data: the fleet and site summary
  (pass / fail / insufficient data, what is due for calibration) and one entry per failing
  stream; ``to_json`` and ``csv_rows`` are that data as files;
* ``render_html(report)`` draws each failing stream (scatter against its comparison,
  residual over time with the onset and the metadata changes marked) with matplotlib into
  one self-contained HTML page (figures are inline base64 PNG; no script, no external
  resource). matplotlib is the optional ``[report]`` extra, imported only here and only
  for ``--html``, so a gateway need not carry it.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from auditd.adapters.store import Store
from auditd.adapters.store.findings import StoredFinding
from auditd.core import Series, align
from auditd.core.causes import spec as cause_spec
from auditd.domain.catalog import Catalog
from auditd.domain.metadata import CalibrationDue, MetaVersion, calibration_due
from auditd.domain.streams import StreamKey, counts_by_site, is_stream_verdict, verdicts_of
from auditd.domain.validate import parse_timestamp
from auditd.errors import AuditdError
from auditd.model import EventRecord, Finding, SensorSpec, iso

DUE_SOON_DAYS = 30.0
"""A device whose calibration falls due within this many days is listed as due."""


class ReportError(AuditdError):
    """The report cannot be made here (an optional dependency is missing, an empty store)."""


@dataclass(frozen=True, slots=True)
class StreamData:
    """A failing stream with what explains it: its aligned readings and its history."""

    stored: StoredFinding
    t: np.ndarray
    device: np.ndarray
    comparison: np.ndarray
    comparison_label: str
    bias_tolerance: float | None
    meta: tuple[MetaVersion, ...] = ()
    events: tuple[EventRecord, ...] = ()

    @property
    def finding(self) -> Finding:
        return self.stored.finding


@dataclass(frozen=True, slots=True)
class Report:
    at: float
    source: str
    sites: tuple[Mapping[str, Any], ...]
    due: tuple[Mapping[str, Any], ...]
    findings: tuple[StoredFinding, ...]
    failing: tuple[StreamData, ...]
    other: tuple[StoredFinding, ...] = field(default=())


# --------------------------------------------------------------------------- collect


def collect(store: Store, catalog: Catalog, *, source: str = "") -> Report:
    """Read what the report needs from ``store`` (adapter; everything after is pure)."""
    latest = store.findings.latest()
    if not latest:
        raise ReportError(f"{source or store.path}: the store holds no findings yet "
                          "(run an audit or a replay first)")
    calibration = [s for s in latest if s.finding.kind == "calibration"]
    other = [s for s in latest if s.finding.kind != "calibration"]
    at = max(s.finding.window_end for s in latest)
    meta = store.devices.latest_meta()
    failing = []
    for stored in calibration:
        f = stored.finding
        if f.status != "fail" or not f.sensor:
            continue
        start, end = f.window_start, f.window_end
        spec = _spec(catalog, f.device, f.sensor, meta)
        interval = spec.interval_s if spec is not None else 60.0
        window = store.readings.read_window
        device = Series(*window(f.site, f.device, f.sensor, start, end))
        members = [str(m) for m in f.context.get("members") or ()]
        if f.reference:
            comparison = Series(*window(f.site, f.reference, f.sensor, start, end))
            label = f"reference {f.reference}"
        elif members:
            aligned_members = [align(Series(*window(f.site, m, f.sensor, start, end)),
                                     device, interval, start, end).device for m in members]
            stacked = np.vstack(aligned_members)
            grid = align(device, device, interval, start, end)
            with np.errstate(all="ignore"):
                med = np.nanmedian(stacked, axis=0) if stacked.size else grid.device
            comparison = Series(grid.t, med)
            label = f"median of {len(members)} devices it serves"
        else:
            comparison = Series.of([], [])
            label = "its peers"
        aligned = align(device, comparison, interval, start, end)
        failing.append(StreamData(
            stored=stored, t=aligned.t, device=aligned.device, comparison=aligned.reference,
            comparison_label=label,
            bias_tolerance=spec.tolerance.bias if spec is not None else None,
            meta=tuple(store.devices.meta_history(f.device)),
            events=tuple(store.devices.events(f.device))))
    keys = [(s.site, s.device, s.sensor) for s in store.readings.streams()]
    events = {device: tuple(store.devices.events(device))
              for device in sorted({s.finding.device for s in calibration})}
    return build(calibration, other, failing, meta, catalog, at, source or str(store.path),
                 stored=keys, events=events)


def _spec(catalog: Catalog, device: str, sensor: str,
          meta: Mapping[str, MetaVersion]) -> SensorSpec | None:
    version = meta.get(device)
    model = catalog.model_for(device, version.model if version is not None else None)
    profile = catalog.profile(model) if model else None
    return profile.audited(sensor) if profile else None


# --------------------------------------------------------------------------- build (pure)


def build(calibration: Sequence[StoredFinding], other: Sequence[StoredFinding],
          failing: Sequence[StreamData], meta: Mapping[str, MetaVersion],
          catalog: Catalog, at: float, source: str,
          stored: Sequence[StreamKey] = (),
          events: Mapping[str, Sequence[EventRecord]] | None = None) -> Report:
    """The report's data: summaries first, then the failing streams, worst first. A
    site's streams are its field streams as ``domain.streams`` defines them (the log and
    ``status`` count the same): judged, insufficient data, and ``waiting`` for a verdict."""
    findings = [s.finding for s in calibration]
    verdicts = verdicts_of(findings)
    sites = []
    for site, counts in counts_by_site(stored, catalog.is_reference, verdicts).items():
        devices = {k[1] for k in (*stored, *verdicts)
                   if k[0] == site and not catalog.is_reference(k[1])}
        sites.append({"site": site, "devices": len(devices), **counts.as_dict()})
    order = {"critical": 0, "major": 1, "minor": 2}
    ranked = sorted(failing, key=lambda s: (order.get(s.finding.severity, 3), s.finding.site,
                                            s.finding.device, s.finding.sensor or ""))
    return Report(at=at, source=source, sites=tuple(sites),
                  due=tuple(due_for_calibration(findings, meta, catalog, at, events or {})),
                  findings=tuple(calibration), failing=tuple(ranked), other=tuple(other))


def summary_line(report: Report) -> str:
    """One line for the terminal, counting streams as the log and ``status`` do."""
    total = {key: sum(site[key] for site in report.sites)
             for key in ("streams", "judged", "fail", "unjudged")}
    cohorts = sum(1 for s in report.failing if not is_stream_verdict(s.finding))
    return (f"{total['streams']} streams: {total['judged']} judged ({total['fail']} "
            f"failing), {total['unjudged']} not yet"
            + (f"; {cohorts} failing cohorts" if cohorts else "")
            + f"; {len(report.due)} devices due for calibration")


def due_for_calibration(calibration: Sequence[Finding], meta: Mapping[str, MetaVersion],
                        catalog: Catalog, at: float,
                        events: Mapping[str, Sequence[EventRecord]]) -> list[dict[str, Any]]:
    """Devices to recalibrate: failing on a cause a calibration fixes, or past (or within
    ``DUE_SOON_DAYS`` of) their calibration due date. Every device listed carries that due
    date when one is known, computed as the ``calibration_overdue`` check computes it
    (``domain.metadata.calibration_due``: metadata's ``calibration_due``, else
    ``calibrated_at`` plus the profile's ``calibration_interval_days``, a later
    calibration event superseding both)."""
    out: dict[str, dict[str, Any]] = {}

    def entry(device: str, site: str) -> dict[str, Any]:
        return out.setdefault(device, {"site": site, "device": device, "why": [], "due": None,
                                       "due_basis": None})

    for f in calibration:
        top = cause_spec(f.causes[0].cause) if f.causes else None
        if f.status == "fail" and top is not None and top.recalibration_fixes:
            entry(f.device, f.site)["why"].append(f"{f.sensor}: {f.causes[0].cause}")
    devices = {f.device: f.site for f in calibration}
    for device, site in devices.items():
        found = _due(meta.get(device), events.get(device, ()), catalog, device)
        if found is None:
            continue
        days = (found.due - at) / 86400.0
        if days <= DUE_SOON_DAYS:
            entry(device, site)["why"].append(
                f"calibration overdue by {-days:.0f} days" if days < 0
                else f"calibration due in {days:.0f} days")
        if device in out:
            out[device]["due"] = iso(found.due)
            out[device]["due_basis"] = found.basis
    return sorted(out.values(), key=lambda e: (e["site"], e["device"]))


def _due(version: MetaVersion | None, events: Sequence[EventRecord], catalog: Catalog,
         device: str) -> CalibrationDue | None:
    model = catalog.model_for(device, version.model if version is not None else None)
    profile = catalog.profile(model) if model else None
    return calibration_due(version.data if version is not None else {}, events, profile)


def meta_timeline(stream: StreamData) -> list[dict[str, Any]]:
    """Metadata versions (what changed) and events of the stream's device, in time order."""
    rows: list[dict[str, Any]] = []
    previous: Mapping[str, Any] = {}
    for version in stream.meta:
        changed = [f"{k}: {previous.get(k)!s} -> {v!s}" if previous else f"{k}: {v!s}"
                   for k, v in version.data.items()
                   if previous.get(k) != v and not isinstance(v, dict)]
        rows.append({"at": iso(version.first_seen), "what": "metadata",
                     "detail": "; ".join(changed) or "(no change)"})
        previous = version.data
    for event in stream.events:
        data = dict(event.data)
        detail = ", ".join(f"{k} {data[k]}" for k in ("from", "to", "by", "detail") if k in data)
        rows.append({"at": iso(event.ts), "what": event.type, "detail": detail})
    rows.sort(key=lambda r: r["at"] or "")
    return rows


def to_json(report: Report) -> dict[str, Any]:
    """The report without its figures, for machines."""
    return {
        "kind": "calibration_report", "at": iso(report.at), "source": report.source,
        "sites": list(report.sites), "due_for_calibration": list(report.due),
        "failing": [{"finding": s.stored.to_json(), "compared_with": s.comparison_label,
                     "timeline": meta_timeline(s)} for s in report.failing],
        "streams": [s.to_json() for s in report.findings],
        "other_findings": [s.to_json() for s in report.other],
    }


CSV_FIELDS = ("site", "device", "sensor", "status", "severity", "cause", "confidence", "unit",
              "n", "bias", "gain", "rmse", "r2", "lag_s", "onset", "window_start",
              "window_end", "action")


def csv_rows(report: Report) -> list[dict[str, Any]]:
    """One row per stream's current calibration verdict."""
    rows = []
    for f in (s.finding for s in report.findings):
        top = f.causes[0] if f.causes else None
        rows.append({
            "site": f.site, "device": f.device, "sensor": f.sensor, "status": f.status,
            "severity": f.severity, "cause": top.cause if top else "",
            "confidence": round(top.confidence, 3) if top else "", "unit": f.unit,
            **{k: f.metrics.get(k) for k in ("n", "bias", "gain", "rmse", "r2", "lag_s")},
            "onset": iso(f.onset) or "", "window_start": iso(f.window_start),
            "window_end": iso(f.window_end), "action": f.action})
    return rows


def write_csv(report: Report, handle: IO[str]) -> None:
    writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(csv_rows(report))


# --------------------------------------------------------------------------- HTML


def _pyplot() -> Any:
    """matplotlib, an optional extra, imported on the first plot only."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ReportError("the HTML report draws its plots with matplotlib, an optional "
                          "extra: pip install 'sensor-auditd[report]' (or use --json/--csv)"
                          ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


FIGURE_INCHES = (12.0, 4.8)
FIGURE_DPI = 110
"""1320 x 528 px, shown at the page's text width (1100 px on a laptop's 1366 px screen,
scaled down, never up): the scatter panel about 400 px wide, tick labels about 11 px.
The figure used to be 880 px with 7-point text, a 250 px scatter nobody could read."""


def figure(stream: StreamData) -> str:
    """Scatter against the comparison and residual over time, as a base64 PNG."""
    plt = _pyplot()
    f = stream.finding
    unit = f.unit or ""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=FIGURE_INCHES, dpi=FIGURE_DPI,
                                   gridspec_kw={"width_ratios": [1, 1.7]})
    paired = np.isfinite(stream.device) & np.isfinite(stream.comparison)
    x, y = stream.comparison[paired], stream.device[paired]
    if x.size:
        ax1.scatter(x, y, s=4, alpha=0.5, color="#1f77b4", label="readings")
        both = np.concatenate([x, y])
        lo, hi = float(np.min(both)), float(np.max(both))
        pad = 0.05 * (hi - lo) or 1.0
        ax1.set_xlim(lo - pad, hi + pad)
        ax1.set_ylim(lo - pad, hi + pad)
        ax1.plot([lo, hi], [lo, hi], color="#444", lw=1, ls="--", label="1:1")
        gain, offset = f.metrics.get("gain"), f.metrics.get("offset")
        if isinstance(gain, int | float) and isinstance(offset, int | float) \
                and math.isfinite(gain) and math.isfinite(offset):
            ax1.plot([lo, hi], [gain * lo + offset, gain * hi + offset], color="#d62728",
                     lw=1.2, label=f"fit {gain:.3g}x{offset:+.3g}")
        ax1.legend(fontsize=8.5, loc="upper left")
    else:
        ax1.text(0.5, 0.5, "no paired readings", ha="center", va="center",
                 transform=ax1.transAxes)
    ax1.set_xlabel(f"{stream.comparison_label} [{unit}]", fontsize=10)
    ax1.set_ylabel(f"{f.device} [{unit}]", fontsize=10)
    ax1.set_title("device against comparison", fontsize=11)
    hours = (stream.t - stream.t[0]) / 3600.0 if stream.t.size else stream.t
    residual = stream.device - stream.comparison
    if stream.t.size:
        ax2.plot(hours, residual, lw=0.8, color="#1f77b4", label="device - comparison")
    tol = stream.bias_tolerance
    if tol is not None:
        ax2.axhspan(-tol, tol, color="#2ca02c", alpha=0.12, label=f"±{tol:g} {unit} tolerance")
    start = stream.t[0] if stream.t.size else 0.0
    if f.onset is not None and stream.t.size:
        ax2.axvline((f.onset - start) / 3600.0, color="#d62728", lw=1.5,
                    label=f"onset {iso(f.onset)}")
    for row in meta_timeline(stream):
        t = parse_timestamp(row["at"])
        if stream.t.size and stream.t[0] <= t <= stream.t[-1] and row["what"] != "metadata":
            ax2.axvline((t - start) / 3600.0, color="#9467bd", lw=1, ls=":",
                        label=row["what"])
    ax2.set_xlabel(f"hours since {iso(float(start))}", fontsize=10)
    ax2.set_ylabel(f"residual [{unit}]", fontsize=10)
    ax2.set_title("residual over the window", fontsize=11)
    ax2.legend(fontsize=8.5, loc="upper left")
    for ax in (ax1, ax2):
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;font-size:13px}th{background:#f4f4f4}.fail{color:#b00020;font-weight:600}
.pass{color:#1b7f2a}.insufficient_data{color:#8a6d00}.stream{border:1px solid #ddd;
border-radius:6px;padding:.6em 1em;margin:1.2em 0}.sev{padding:1px 6px;border-radius:4px;
color:#fff;font-size:12px}.critical{background:#b00020}.major{background:#d9480f}
.minor{background:#9c6500}img{width:100%;max-width:1320px;height:auto}
.runbook{background:#f6f8fa;padding:.5em .8em;border-left:4px solid #6c757d}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def render_html(report: Report) -> str:
    """The whole report as one self-contained HTML page."""
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<title>Calibration report {_e(iso(report.at))}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Calibration report</h1><p>State at {_e(iso(report.at))}, from "
             f"<code>{_e(report.source)}</code>; generated "
             f"{_e(datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ'))}.</p>",
             "<h2>Fleet</h2><table><tr><th>site</th><th>devices</th><th>streams</th>"
             "<th>pass</th><th>fail</th><th>insufficient data</th><th>waiting</th></tr>"]
    for site in report.sites:
        parts.append(f"<tr><td>{_e(site['site'])}</td><td>{site['devices']}</td>"
                     f"<td>{site['streams']}</td><td class=pass>{site['pass']}</td>"
                     f"<td class=fail>{site['fail']}</td>"
                     f"<td class=insufficient_data>{site['insufficient_data']}</td>"
                     f"<td>{site['waiting']}</td></tr>")
    parts.append("</table><h2>Due for calibration</h2>")
    if report.due:
        parts.append("<table><tr><th>site</th><th>device</th><th>why</th><th>due</th>"
                     "<th>from</th></tr>")
        for d in report.due:
            parts.append(f"<tr><td>{_e(d['site'])}</td><td>{_e(d['device'])}</td>"
                         f"<td>{_e('; '.join(d['why']))}</td>"
                         f"<td>{_e((d['due'] or '')[:10] or 'unknown')}</td>"
                         f"<td>{_e(d['due_basis'] or 'no calibration date in its metadata')}"
                         f"</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>Nothing is due.</p>")
    parts.append(f"<h2>Failing streams ({len(report.failing)})</h2>")
    if report.failing:
        parts.append("<table><tr><th>severity</th><th>device</th><th>sensor</th>"
                     "<th>cause</th><th>since</th></tr>")
        for stream in report.failing:
            f = stream.finding
            parts.append(f"<tr><td><span class='sev {_e(f.severity)}'>"
                         f"{_e(f.severity)}</span></td><td><a href='#{_anchor(f)}'>"
                         f"{_e(f.device)}</a></td><td>{_e(f.sensor)}</td>"
                         f"<td>{_e(_top(f))}</td><td>{_e(iso(f.onset) or '-')}</td></tr>")
        parts.append("</table>")
    for stream in report.failing:
        parts.append(_stream_html(stream))
    if report.other:
        parts.append("<h2>Other findings</h2><table><tr><th>kind</th><th>device</th>"
                     "<th>status</th><th>cause</th><th>action</th></tr>")
        for f in (s.finding for s in report.other):
            parts.append(f"<tr><td>{_e(f.kind)}</td><td>{_e(f.device)}</td>"
                         f"<td class={_e(f.status)}>{_e(f.status)}</td>"
                         f"<td>{_e(_top(f))}</td><td>{_e(f.action)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


def _top(f: Finding) -> str:
    return f.causes[0].cause if f.causes else "-"


def _anchor(f: Finding) -> str:
    return html.escape(f"s-{f.device}-{f.sensor}", quote=True)


def _stream_html(s: StreamData) -> str:
    f = s.finding
    m = f.metrics
    unit = f.unit or ""
    figures = ", ".join(f"{k} {m[k]:.4g}" for k in ("n", "bias", "gain", "rmse", "r2", "lag_s")
                        if isinstance(m.get(k), int | float))
    causes = "".join(f"<li><b>{_e(c.cause)}</b> ({round(c.confidence, 3):.2f}): "
                     f"{_e(c.evidence)}</li>" for c in f.causes)
    timeline = meta_timeline(s)
    rows = "".join(f"<tr><td>{_e(r['at'])}</td><td>{_e(r['what'])}</td>"
                   f"<td>{_e(r['detail'])}</td></tr>" for r in timeline)
    if np.isfinite(s.device).any():
        plot = (f"<img alt='{_e(f.device)} {_e(f.sensor)} against "
                f"{_e(s.comparison_label)}' src='data:image/png;base64,{figure(s)}'>")
    else:  # a cohort's root finding: the members carry the readings
        members = ", ".join(str(m) for m in f.context.get("members") or ())
        plot = f"<p>No readings of its own; see its members: {_e(members or '-')}.</p>"
    return (f"<div class=stream id='{_anchor(f)}'><h3>{_e(f.device)} / {_e(f.sensor)} "
            f"<span class='sev {_e(f.severity)}'>{_e(f.severity)}</span></h3>"
            f"<p>Site {_e(f.site)}, compared with {_e(s.comparison_label)}, window "
            f"{_e(iso(f.window_start))} to {_e(iso(f.window_end))}; {_e(figures)} "
            f"({_e(unit)}); onset {_e(iso(f.onset) or 'not estimated')}.</p>"
            f"<ul>{causes}</ul>{plot}"
            f"<h4>Metadata timeline</h4>"
            + (f"<table><tr><th>at</th><th>what</th><th>detail</th></tr>{rows}</table>"
               if rows else "<p>No metadata or events recorded.</p>")
            + f"<h4>Runbook</h4><p class=runbook>{_e(f.action or '-')}</p></div>")


def write(report: Report, *, html_path: Path | None = None, json_path: Path | None = None,
          csv_path: Path | None = None) -> None:
    """Write the requested forms (matplotlib is needed for ``html_path`` only)."""
    if html_path is not None:
        html_path.write_text(render_html(report), encoding="utf-8")
    if json_path is not None:
        json_path.write_text(json.dumps(to_json(report), indent=2) + "\n", encoding="utf-8")
    if csv_path is not None:
        with csv_path.open("w", encoding="utf-8", newline="") as handle:
            write_csv(report, handle)
