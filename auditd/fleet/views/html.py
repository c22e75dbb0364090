"""The fleet report as one self-contained web page: tables, and plots drawn as inline SVG
(no plotting library on the report's path, nothing fetched from the network).

Plots: each cohort's timeline (a row per failing member: the window its verdict covers,
the firmware change and the onset of its deviation), and the drift rate of each model and
sensor with its 95 % interval, beside the recommended and the profile's calibration
interval. Every text is escaped: device ids and evidence come from the gateways.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from auditd.fleet.analysis.cohorts import FleetCohort
from auditd.fleet.analysis.drift import DriftRate
from auditd.fleet.analysis.report import FleetReport
from auditd.model import iso

WIDTH = 760
ROW = 22
LEFT = 170
RIGHT = 20
BLUE, ORANGE, GREY, RED = "#1f77b4", "#ff7f0e", "#c7c7c7", "#d62728"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;
font-size:.9em;text-align:left;vertical-align:top}th{background:#f4f4f4}
.bad{color:#b00}.muted{color:#777}svg.plot{display:block;margin:.5em 0;background:#fff}
"""


def _t(x: object) -> str:
    return escape(str(x), quote=True)


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    body = "".join("<tr>" + "".join(f"<td>{_t(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return ("<table><tr>" + "".join(f"<th>{_t(h)}</th>" for h in head) + "</tr>" + body
            + "</table>")


def _x(value: float, low: float, high: float) -> float:
    span = high - low or 1.0
    return LEFT + (value - low) / span * (WIDTH - LEFT - RIGHT)


def cohort_timeline(cohort: FleetCohort) -> str:
    """One row per failing member: its verdict's window (grey), the firmware change
    (orange diamond), the onset of its deviation (blue dot)."""
    times = [t for m in cohort.timeline
             for t in (m.changed_at, m.onset, m.window_start, m.window_end) if t is not None]
    low, high = min(times), max(times)
    height = ROW * len(cohort.timeline) + 40
    parts = [f'<svg class="plot timeline" role="img" width="{WIDTH}" height="{height}" '
             f'aria-label="timeline of {_t(cohort.model)} {_t(cohort.value)}">']
    for i, m in enumerate(cohort.timeline):
        y = 20 + i * ROW
        parts.append(f'<text x="4" y="{y + 4}" font-size="12">{_t(m.site)}/{_t(m.device)}'
                     "</text>")
        parts.append(f'<line x1="{_x(m.window_start, low, high):.1f}" y1="{y}" '
                     f'x2="{_x(m.window_end, low, high):.1f}" y2="{y}" stroke="{GREY}" '
                     'stroke-width="8"/>')
        if m.changed_at is not None:
            cx = _x(m.changed_at, low, high)
            parts.append(f'<path class="datum change" d="M{cx:.1f} {y - 7} l7 7 l-7 7 l-7 -7z"'
                         f' fill="{ORANGE}"><title>changed {_t(iso(m.changed_at))}</title>'
                         "</path>")
        if m.onset is not None:
            parts.append(f'<circle class="datum onset" cx="{_x(m.onset, low, high):.1f}" '
                         f'cy="{y}" r="4" fill="{BLUE}" stroke="#fff">'
                         f"<title>onset {_t(iso(m.onset))}</title></circle>")
    base = height - 12
    parts.append(f'<text x="{LEFT}" y="{base}" font-size="11">{_t(iso(low))}</text>')
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{base}" font-size="11" text-anchor="end">'
                 f"{_t(iso(high))}</text></svg>")
    return "".join(parts)


def drift_plot(rates: Sequence[DriftRate]) -> str:
    """Each model and sensor's mean drift, as a share of its bias tolerance per month (so
    sensors of different units share one axis), with its 95 % interval."""
    rows = [(r, r.tolerance or 1.0) for r in rates]
    extent = max((max(abs(r.low), abs(r.high)) / tol for r, tol in rows
                  if abs(r.low) != float("inf")), default=0.0) or 1.0
    height = ROW * len(rows) + 50
    parts = [f'<svg class="plot drift" role="img" width="{WIDTH}" height="{height}" '
             'aria-label="drift per model">']
    zero = _x(0.0, -extent, extent)
    parts.append(f'<line x1="{zero:.1f}" y1="8" x2="{zero:.1f}" y2="{height - 30}" '
                 'stroke="#999" stroke-dasharray="3 3"/>')
    def at(value: float) -> str:
        return f"{_x(value, -extent, extent):.1f}"

    for i, (r, tol) in enumerate(rows):
        y = 20 + i * ROW
        label = f"{r.model} {r.sensor}"
        parts.append(f'<text x="4" y="{y + 4}" font-size="12">{_t(label)}</text>')
        if abs(r.low) != float("inf"):
            left, right = float(at(r.low / tol)), float(at(r.high / tol))
            parts.append(f'<rect class="datum interval" x="{left:.1f}" y="{y - 1}" '
                         f'width="{max(right - left, 1.0):.1f}" height="2" fill="{BLUE}">'
                         f"<title>95 % interval [{r.low:+.3g}, {r.high:+.3g}]</title></rect>")
        parts.append(f'<circle class="datum rate" cx="{at(r.rate_per_month / tol)}" '
                     f'cy="{y}" r="5" fill="{BLUE}"><title>{r.rate_per_month:+.3g} '
                     f"{_t(r.unit or '')}/month</title></circle>")
    parts.append(f'<text x="{WIDTH / 2:.0f}" y="{height - 10}" font-size="11" '
                 'text-anchor="middle">drift per month, as a share of the bias tolerance '
                 f"(axis ±{extent:.2g})</text></svg>")
    return "".join(parts)


def _cohorts(report: FleetReport) -> str:
    if not report.cohorts:
        return "<p>No cohort fails beyond chance across sites.</p>"
    out = []
    for c in report.cohorts:
        change = ""
        if c.change is not None:
            change = (f"; changed from {_t(c.change.from_version)} to "
                      f"{_t(c.change.to_version)} between {_t(iso(c.change.first))} and "
                      f"{_t(iso(c.change.last))}, {c.change.following} of "
                      f"{len(c.members)} deviating after it")
        out.append(
            f"<h3>{_t(c.model)} {_t(c.attribute)} {_t(c.value)}: {_t(c.sensor)} "
            f"{_t(c.cause)}</h3><p>{len(c.members)} of {len(c.members) + len(c.healthy)} "
            f"devices at {len(c.sites)} sites ({_t(', '.join(c.sites))}) against "
            f"{c.rest_failing} of {c.rest_size} others; p = {c.p:.2g}, {c.p_adjusted:.2g} "
            f"after {_t(c.correction)}{change}.</p>" + cohort_timeline(c))
    return "".join(out)


def report_html(report: FleetReport) -> str:
    references = [r for r in report.references if r.state == "drifting"]
    healthy = len(report.references) - len(references)
    sections = [
        f"<h1>Fleet report</h1><p>{report.gateways} gateways at {report.sites} sites, "
        f"{report.devices} devices; generated {_t(iso(report.generated_at))}.</p>",
        "<h2>Cohorts failing across sites</h2>", _cohorts(report),
        "<h2>Reference health</h2>",
        _table(("site", "reference", "sensor", "state", "reads off by", "since",
                "unreliable verdicts", "evidence"),
               ((r.site, r.reference, r.sensor, r.state,
                 "" if r.bias is None else f"{r.bias:+.3g}", iso(r.onset) or "",
                 ", ".join(r.unreliable), r.evidence) for r in references))
        + f"<p class=muted>{healthy} reference/sensor pairs healthy.</p>",
        "<h2>Drift per model</h2>",
        drift_plot(report.drift) + _table(
            ("model", "sensor", "devices", "rate /month", "95 % interval",
             "recommended interval", "profile's interval"),
               ((d.model, d.sensor, d.devices, f"{d.rate_per_month:+.3g} {d.unit or ''}",
                 f"[{d.low:+.3g}, {d.high:+.3g}]",
                 f"{d.recommended_days:.0f} d" if d.recommended_days is not None
                 else d.why, f"{d.profile_days:g} d" if d.profile_days else "-")
                for d in report.drift)) if report.drift else
        "<p>No stream has enough audits to measure a drift rate yet.</p>",
        f"<h2>Due within {report.options.horizon_days:g} days</h2>",
        _table(("due", "site", "device", "model", "why", "open tickets"),
               ((iso(i.due_at), i.site, i.device, i.model or "", "; ".join(i.reasons),
                 "; ".join(f"{t.sensor} {t.cause} ({', '.join(g for g, _ in t.filed_by)})"
                           for t in i.tickets)) for i in report.due)),
        "<h2>Open findings</h2>",
        _table(("site", "gateway", "device", "sensor", "severity", "causes", "reliable"),
               ((o.verdict.site, o.verdict.gateway, o.verdict.device, o.verdict.sensor or "",
                 o.verdict.severity, ", ".join(o.verdict.causes),
                 "no: the reference's fault" if o.unreliable else "yes")
                for o in report.open_findings)),
    ]
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<title>sensor-auditd fleet report</title>"
            f"<style>{_STYLE}</style></head><body>" + "".join(sections) + "</body></html>\n")
