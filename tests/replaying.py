"""A recording through ``sensor-auditd replay`` as a user runs it: profiles, references and
a config written to a temporary directory, the command run as a process (the daemon's
pipeline on the recording's clock, a real SQLite store), its findings and summary read
back."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from auditd.core.series import Series


def replay(tmp_path: Path, recording: Path, *, profiles: dict[str, str],
           references: dict[str, str], config: str) -> tuple[list[dict[str, Any]],
                                                          dict[str, Any]]:
    """Every finding ``replay`` published for ``recording``, and its summary.
    ``profiles`` and ``references``: file name -> TOML text."""
    for folder, files in (("profiles", profiles), ("references", references)):
        (tmp_path / folder).mkdir(exist_ok=True)
        for name, text in files.items():
            (tmp_path / folder / name).write_text(text)
    (tmp_path / "config.toml").write_text(config)
    result = subprocess.run(
        [sys.executable, "-m", "auditd.cli", "replay", str(recording),
         "--config", str(tmp_path / "config.toml"), "--profiles", str(tmp_path / "profiles"),
         "--references", str(tmp_path / "references"), "--out", str(tmp_path / "f.jsonl"),
         "--summary", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    findings = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    return findings, json.loads((tmp_path / "s.json").read_text())


def record(path: Path, site: str, sensor: str, devices: Mapping[str, Series], *,
           digits: int | None = None) -> Path:
    """A recording of each device's ``sensor`` readings, one telemetry message a reading,
    received a second after it was taken, in time order (``digits``: rounded as a device
    would send them)."""
    lines: list[tuple[float, str]] = []
    for device, series in devices.items():
        for ts, value in zip(series.ts.tolist(), series.values.tolist(), strict=True):
            sent = value if digits is None else round(value, digits)
            lines.append((ts + 1.0, json.dumps({
                "topic": f"fleet/{site}/{device}/telemetry", "received_at": ts + 1.0,
                "payload": {"ts": ts, "readings": {sensor: sent}}})))
    lines.sort()
    path.write_text("".join(line + "\n" for _, line in lines))
    return path
