"""The co-location section of the calibration report (``sensor-auditd colocate --html``).

Per unit and quantity: the scatter of its averages against the reference with the 1:1
line and the fitted line, the time series of both, and the targets table with each verdict
marked. Plots are inline SVG, so the file is one self-contained page.

matplotlib is an optional extra (``pip install 'sensor-auditd[report]'``): it is imported
here, on first use, and only through ``matplotlib.figure.Figure`` (no pyplot, no global
backend state). Without it ``--html`` stops before any work with a message saying how to
install it; the JSON result never needs it.
"""

from __future__ import annotations

import html
import io
import math
from typing import Any

import numpy as np

from auditd.app.colocate import ColocationRun, causes_text
from auditd.domain.colocation import paired
from auditd.errors import UsageError
from auditd.model import iso

PLOTTED_INTERVAL = "1h"
INSTALL_HINT = "pip install 'sensor-auditd[report]' (matplotlib)"


def require_matplotlib() -> None:
    """Stop with a clear error (exit 2) when the optional plotting library is missing."""
    try:
        import matplotlib  # noqa: F401  (an optional extra: is it installed?)
    except ImportError:
        raise UsageError(f"needs matplotlib, which is not installed: {INSTALL_HINT}",
                         "--html") from None


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _scatter(x: np.ndarray, y: np.ndarray, slope: float, intercept: float, unit: str,
             title: str) -> str:
    from matplotlib.figure import Figure  # an optional extra: imported only to draw

    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot()
    ax.scatter(x, y, s=6, alpha=0.5, color="#1f77b4", label="1-hour averages")
    hi = float(max(np.max(x), np.max(y), 1e-9)) * 1.05
    lo = float(min(np.min(x), np.min(y), 0.0))
    ax.plot([lo, hi], [lo, hi], color="#444", lw=1, ls="--", label="1:1")
    if math.isfinite(slope) and math.isfinite(intercept):
        ax.plot([lo, hi], [intercept + slope * lo, intercept + slope * hi], color="#d62728",
                lw=1.5, label=f"OLS y = {slope:.2f}x {intercept:+.2f}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"reference ({unit})")
    ax.set_ylabel(f"sensor ({unit})")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return _svg(fig)


def _series(t_ref: np.ndarray, ref: np.ndarray, t_dev: np.ndarray, dev: np.ndarray,
            unit: str, title: str) -> str:
    from matplotlib.figure import Figure  # an optional extra: imported only to draw

    fig = Figure(figsize=(7.5, 2.8))
    ax = fig.add_subplot()
    ax.plot((t_ref - t_ref.min()) / 86400.0 if t_ref.size else t_ref, ref, lw=0.8,
            color="#444", label="reference")
    origin = t_ref.min() if t_ref.size else 0.0
    ax.plot((t_dev - origin) / 86400.0, dev, lw=0.8, color="#1f77b4", label="sensor")
    ax.set_xlabel(f"days since {iso(float(origin))}")
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    return _svg(fig)


def _fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "–"


def _mark(verdict: str | None) -> str:
    if verdict is None:
        return '<td class="none">–</td>'
    sign = "✔" if verdict == "pass" else "✘" if verdict == "fail" else "?"
    return f'<td class="{html.escape(verdict)}">{sign} {html.escape(verdict)}</td>'


def render_section(run: ColocationRun) -> str:
    """The ``<section>`` the calibration report embeds."""
    ev = run.evaluation
    e = html.escape
    out = ['<section id="colocation" class="colocation">',
           "<h2>Co-location against the reference</h2>",
           f"<p>Reference <code>{e(str(run.result['reference']['id']))}</code>, "
           f"{e(str(iso(ev.start)))} to {e(str(iso(ev.end)))}. Averages kept only with more "
           "than 75 % of the expected values; targets: US EPA base testing unless a "
           "profile sets its own.</p>",
           "<table class=\"targets\"><thead><tr><th>unit</th><th>quantity</th>"
           "<th>interval</th><th>N</th><th>slope</th><th>intercept</th><th>R²</th>"
           "<th>RMSE</th><th>NRMSE %</th><th>slope</th><th>intercept</th><th>R²</th>"
           "<th>RMSE</th><th>status</th></tr></thead><tbody>"]
    for device, sensor, interval, c in ev.judged():
        out.append(
            f"<tr><td>{e(device)}</td><td>{e(sensor)} ({e(ev.units[sensor])})</td>"
            f"<td>{e(interval)}</td><td>{c.n}</td><td>{_fmt(c.slope)}</td>"
            f"<td>{_fmt(c.intercept)}</td><td>{_fmt(c.r2)}</td><td>{_fmt(c.rmse)}</td>"
            f"<td>{_fmt(c.nrmse, 1)}</td>"
            + "".join(_mark(c.targets.get(k)) for k in ("slope", "intercept", "r2", "rmse"))
            + _mark(c.status) + "</tr>")
    out.append("</tbody></table>")
    out.append('<table class="precision"><thead><tr><th>quantity</th><th>interval</th>'
               "<th>N</th><th>SD</th><th>CV %</th><th>precision</th></tr></thead><tbody>")
    for sensor, interval, p in ev.judged_precision():
        out.append(f"<tr><td>{e(sensor)}</td><td>{e(interval)}</td><td>{p.n}</td>"
                   f"<td>{_fmt(p.sd)}</td><td>{_fmt(p.cv, 1)}</td>{_mark(p.status)}</tr>")
    out.append("</tbody></table>")
    if run.findings:
        out.append('<ul class="findings">')
        for f in run.findings:
            out.append(f"<li><b>{e(f.device)} {e(str(f.sensor))}</b> ({e(f.severity)}): causes "
                       f"{e(causes_text(f.causes))}. {e(f.action)}</li>")
        out.append("</ul>")
    for device in sorted(ev.comparisons):
        for sensor in sorted(ev.comparisons[device]):
            by_interval = ev.comparisons[device][sensor]
            shown = by_interval.get(PLOTTED_INTERVAL)
            if shown is None or shown.status is None:
                continue
            a = ev.averages[device][sensor][PLOTTED_INTERVAL]
            r = ev.reference[sensor][PLOTTED_INTERVAL]
            _, y, x = paired(a, r)
            if x.size == 0:
                continue
            unit = ev.units[sensor]
            title = f"{device} {sensor}, 1-hour averages"
            out.append(f'<div class="unit" id="{e(device)}-{e(sensor)}"><h3>{e(title)}</h3>')
            out.append(_scatter(x, y, shown.slope, shown.intercept, unit, title))
            out.append(_series(r.start, r.mean, a.start, a.mean, unit, title))
            out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
td.pass { color: #176b2c; background: #e6f4ea; }
td.fail { color: #a50e0e; background: #fce8e6; }
td.insufficient_data { background: #fef7e0; }
div.unit svg { display: inline-block; vertical-align: top; }
"""


def render(run: ColocationRun) -> str:
    """A self-contained page holding the section."""
    require_matplotlib()
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>sensor-auditd co-location</title>"
            f"<style>{STYLE}</style></head><body>\n{render_section(run)}\n</body></html>\n")
