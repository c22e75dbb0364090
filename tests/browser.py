"""Real headless Chromium for the fleet's HTML pages: load a page, and probe what it drew
(every ``svg.plot`` with its box and the ``.datum`` marks drawn inside it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

PROBE = """<script>
const plots = [...document.querySelectorAll('svg.plot')].map(svg => {
  const box = svg.getBoundingClientRect();
  const marks = [...svg.querySelectorAll('.datum')].filter(m => {
    const r = m.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.left >= box.left && r.right <= box.right
      && r.top >= box.top && r.bottom <= box.bottom;
  });
  return {cls: svg.getAttribute('class'), marks: marks.length,
          rect: [box.left, box.top, box.width, box.height]};
});
document.body.setAttribute('data-probe', JSON.stringify(plots));
</script></body>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed; .ci/run installs it with apt-get")
    return found


def browse(page: Path, *extra: str, window: str = "1200,1600") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--force-device-scale-factor=1", f"--window-size={window}", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=5000", *extra, page.as_uri()],
        capture_output=True, text=True, timeout=120)


def console_errors(page: Path) -> list[str]:
    """The page's console output when loaded (an empty list: nothing went wrong)."""
    loaded = browse(page)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    return [ln for ln in loaded.stderr.splitlines() if ":CONSOLE" in ln]


def probe(page: Path, screenshot: Path) -> list[dict[str, Any]]:
    """What the page drew: per plot its class, the marks inside it and its box."""
    probed = page.with_name(page.stem + ".probed.html")
    probed.write_text(page.read_text().replace("</body>", PROBE))
    dump = browse(probed, "--dump-dom", "--screenshot=" + str(screenshot))
    match = re.search(r'data-probe="([^"]*)"', dump.stdout)
    assert match, dump.stdout[-500:]
    plots: list[dict[str, Any]] = json.loads(match.group(1).replace("&quot;", '"'))
    return plots
