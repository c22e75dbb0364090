"""The calibration report from a real store, opened in a real headless chromium."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import browser
import pytest
from browser import chromium

REPO = Path(__file__).resolve().parents[1]

SCENARIO = """
seed = 8
start = "2026-11-20T00:00:00Z"
duration = "10h"
hostile = 0

[[site]]
name = "north"
devices = {"th-200" = 4}

[[rollout]]
devices = ["th-north-01"]
at = "4h"
firmware = "2.4.0"

[[fault]]
cause = "offset_drift"
device = "th-north-01"
sensor = "temperature"
at = "6h"

[[fault]]
cause = "stuck"
device = "th-north-02"
sensor = "humidity"
at = "6h"
"""

PROBE = """<script>addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.dataset.probe = JSON.stringify({
    total: imgs.length,
    drawn: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    rects: imgs.map(i => { const r = i.getBoundingClientRect();
                           return [r.left, r.top, r.width, r.height]; })});
});</script></body>"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=300)


def browse(page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The gateway report is a long page: a taller window than browser.browse's default."""
    return browser.browse(page, *extra, window="1200,2000")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "scenario.toml").write_text(SCENARIO)
    (tmp / "config.toml").write_text('[audit]\ninterval = "1h"\nwindow = "6h"\n')
    result = cli("simulate", "--scenario", str(tmp / "scenario.toml"),
                 "--out", str(tmp / "rec.jsonl"))
    assert result.returncode == 0, result.stderr
    result = cli("replay", str(tmp / "rec.jsonl"), "--config", str(tmp / "config.toml"),
                 "--profiles", str(REPO / "device_profiles"),
                 "--references", str(REPO / "references"), "--out", str(tmp / "f.jsonl"),
                 "--store", str(tmp / "audit.db"))
    assert result.returncode == 0, result.stderr
    return tmp / "audit.db"


def test_report_json_and_csv_say_what_fails_and_why(store: Path, tmp_path: Path) -> None:
    result = cli("report", "--store", str(store), "--json", str(tmp_path / "r.json"),
                 "--csv", str(tmp_path / "r.csv"), "--profiles", str(REPO / "device_profiles"),
                 "--references", str(REPO / "references"))
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    with (tmp_path / "r.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    (site,) = data["sites"]
    assert site["site"] == "north" and site["streams"] == len(rows) == 12
    assert site["fail"] == sum(r["status"] == "fail" for r in rows)
    failing = {(f["finding"]["device"], f["finding"]["sensor"]): f for f in data["failing"]}
    offset = failing[("th-north-01", "temperature")]
    assert offset["finding"]["causes"][0]["cause"] == "offset_drift"
    assert failing[("th-north-02", "humidity")]["finding"]["causes"][0]["cause"] == "stuck"
    timeline = offset["timeline"]
    assert any(r["what"] == "firmware_update" and "2.4.0" in r["detail"] for r in timeline)
    assert any(r["what"] == "metadata" and "firmware: 2.3.1 -> 2.4.0" in r["detail"]
               for r in timeline)
    assert any(d["device"] == "th-north-01" for d in data["due_for_calibration"])


def test_html_report_loads_without_errors_and_shows_its_plots(store: Path,
                                                              tmp_path: Path) -> None:
    from matplotlib.image import imread

    page = tmp_path / "report.html"
    result = cli("report", "--store", str(store), "--html", str(page))
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text), "not self-contained"
    plots = text.count("src='data:image/png;base64,")

    loaded = browse(page, "--screenshot=" + str(tmp_path / "shot.png"))
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    console = [ln for ln in loaded.stderr.splitlines() if ":CONSOLE" in ln]
    assert console == []

    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", PROBE))
    dump = browse(probed, "--dump-dom", "--screenshot=" + str(tmp_path / "probed.png"))
    match = re.search(r'data-probe="([^"]*)"', dump.stdout)
    assert match, dump.stdout[-500:]
    probe = json.loads(match.group(1).replace("&quot;", '"'))
    assert probe["total"] == plots >= 2
    assert probe["drawn"] == probe["total"]

    shot = imread(str(tmp_path / "probed.png"))[..., :3]
    left, top, width, height = (int(v) for v in probe["rects"][0])
    assert top + height <= shot.shape[0], "first plot below the screenshot"
    region = shot[top:top + height, left:left + width]
    ink = (region.min(axis=2) < 0.9).mean()
    blue = (abs(region - [31 / 255, 119 / 255, 180 / 255]).max(axis=2) < 0.08).sum()
    assert ink > 0.03, "the plot region is blank"
    assert blue > 200, "no data drawn in matplotlib's colour in the plot region"


def test_demo_runs_the_fleet_live_and_leaves_a_report(tmp_path: Path) -> None:
    """The README's first command, shortened: a private broker, the daemon, a live fleet."""
    from brokers import mosquitto_binary

    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; .ci/run installs it with apt-get")
    result = subprocess.run(
        [sys.executable, "-m", "auditd.cli", "demo", "--seconds", "8", "--days", "1.2",
         "--out", str(tmp_path / "demo")], capture_output=True, text=True, timeout=600,
        cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "(a private mosquitto)" in result.stdout
    assert "open alerts:" in result.stdout
    for cause in ("unit_mismatch", "reference_fault", "firmware_regression"):
        assert cause in result.stdout
    assert "scored against the simulation's truth" in result.stdout
    page = tmp_path / "demo" / "report.html"
    assert f"calibration report: {page}" in result.stdout
    assert page.read_text().count("data:image/png;base64,") >= 5


LAPTOP = """<script>addEventListener('load', () => {
  const imgs = [...document.images];
  const body = getComputedStyle(document.body);
  document.body.dataset.probe = JSON.stringify({
    viewport: innerWidth,
    column: document.body.clientWidth - parseFloat(body.paddingLeft)
            - parseFloat(body.paddingRight),
    plots: imgs.map(i => [i.getBoundingClientRect().width, i.naturalWidth])});
});</script></body>"""


def test_plots_are_as_wide_as_the_page_on_a_laptop_screen(store: Path, tmp_path: Path) -> None:
    """At 1366 px (a common laptop width) each plot fills the page's text column (inside
    its stream's box), over 1000 px, drawn at least that wide (shrunk, never enlarged, so
    it stays sharp). Before, a figure was 880 px whose scatter panel was some 250 px."""
    page = tmp_path / "report.html"
    result = cli("report", "--store", str(store), "--html", str(page))
    assert result.returncode == 0, result.stderr
    probed = tmp_path / "laptop.html"
    probed.write_text(page.read_text().replace("</body>", LAPTOP))
    dump = subprocess.run(
        [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--window-size=1366,768", "--virtual-time-budget=5000",
         "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'data-probe="([^"]*)"', dump.stdout)
    assert match, dump.stdout[-500:] + dump.stderr[-1000:]
    probe = json.loads(match.group(1).replace("&quot;", '"'))
    assert probe["viewport"] == 1366
    assert len(probe["plots"]) >= 2
    for shown, drawn in probe["plots"]:
        assert shown >= 1000, probe
        assert shown >= 0.95 * probe["column"], probe  # the column, less the box's padding
        assert drawn >= shown, probe


def test_the_due_column_has_the_devices_due_date_from_their_metadata(store: Path,
                                                                     tmp_path: Path) -> None:
    """Every device listed as due carries its calibration due date: the one its metadata
    published (the simulated fleet announces ``calibration_due``)."""
    result = cli("report", "--store", str(store), "--json", str(tmp_path / "r.json"),
                 "--html", str(tmp_path / "r.html"))
    assert result.returncode == 0, result.stderr
    published: dict[str, str] = {}
    for line in (store.parent / "rec.jsonl").read_text().splitlines():
        message = json.loads(line)
        if message["topic"].endswith("/meta") and "calibration_due" in message["payload"]:
            published[message["topic"].split("/")[2]] = message["payload"]["calibration_due"]
    due = json.loads((tmp_path / "r.json").read_text())["due_for_calibration"]
    assert due
    for entry in due:
        assert entry["due"] is not None and entry["due"].startswith(published[entry["device"]])
        assert entry["due_basis"] == "calibration_due"
    html_text = (tmp_path / "r.html").read_text()
    section = html_text.split("Due for calibration", 1)[1].split("<h2>", 1)[0]
    assert "<td>-</td>" not in section and published[due[0]["device"]] in section
