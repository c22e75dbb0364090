"""The fleet page's drift plot and its escaping, in a real headless Chromium."""

from __future__ import annotations

import random
from pathlib import Path

from browser import console_errors, probe
from test_fleet_analysis import END, T0, drifting_fleet, eight_sites, profile

from auditd.fleet.analysis.facts import DeviceDrift, FleetFacts, Verdict
from auditd.fleet.analysis.report import build_report
from auditd.fleet.views.html import report_html


def test_drift_per_model_is_drawn_with_its_interval(tmp_path: Path) -> None:
    verdicts, devices, history = eight_sites()
    drifts, more = drifting_fleet(random.Random(4), 0.1, 0.03, n=20)
    humidity = [DeviceDrift(d.site, d.device, "humidity", d.slope_per_s / 3, d.audits,
                            d.span_s) for d in drifts]
    hostile = Verdict("s1", "gw-s1", "ref-s1", "pressure", "calibration", "fail", "major",
                      ("reference_fault",), None, 1.5, T0, T0, END, "peer_consensus",
                      "<script>document.title='owned'</script>")
    report = build_report(FleetFacts(END, (*verdicts, hostile), (*devices, *more),
                                     tuple(history), (*drifts, *humidity), (),
                                     {"th-200": profile()}))
    page = tmp_path / "fleet.html"
    page.write_text(report_html(report))
    assert console_errors(page) == []
    plots = probe(page, tmp_path / "shot.png")
    (drift,) = [p for p in plots if "drift" in p["cls"]]
    # two rows (humidity, pressure of th-200): a rate and an interval each, inside the plot
    assert drift["marks"] == 4
    assert "<script>document.title" not in page.read_text()
    assert "&lt;script&gt;" in page.read_text()
