"""Eight sites, each its own gateway, and a firmware release no site can prove alone.

Site ``s1`` .. ``s8``: reference ``ref-sK`` and five th-200 devices ``th-sK-01`` .. ``-05``,
reporting once a minute for ``HOURS`` hours (the tests/rollout.py recording, one per site).
At each site one device (``-01``) updates to 2.4.0 over the air and from then on reads
pressure ``PRESSURE_OFFSET`` hPa high; another (``-02``) updates to 2.3.5 at the same time
and stays healthy; the rest stay on 2.3.1. No site holds two 2.4.0 devices, so no gateway
can call it a firmware regression. At ``DRIFTING_SITE`` the reference's temperature steps
``REFERENCE_STEP`` degC high at ``REFERENCE_STEP_H``: its gateway should blame the
reference, and the fleet should name it and trust none of its devices' temperature verdicts.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

START = 1_764_028_800.0  # 2025-11-25T00:00:00Z
HOURS = 26
SITES = [f"s{k}" for k in range(1, 9)]
DRIFTING_SITE = "s4"
REFERENCE_STEP = 1.5  # degC; the th-200's temperature bias tolerance is 0.5 degC
REFERENCE_STEP_H = 8
PRESSURE_OFFSET = 2.5  # hPa; the tolerance is 1.0 hPa
OLD, BAD, GOOD = "2.3.1", "2.4.0", "2.3.5"
REPO = Path(__file__).resolve().parents[1]


def devices(site: str) -> list[str]:
    return [f"th-{site}-{i:02d}" for i in range(1, 6)]


def regressed(site: str) -> str:
    return f"th-{site}-01"


def rollout_h(site: str) -> int:
    """The update reaches each site at its own hour (10, 11 or 12)."""
    return 10 + SITES.index(site) % 3


def firmware_at(site: str, device: str, t: float) -> str:
    if t < START + rollout_h(site) * 3600:
        return OLD
    return BAD if device == regressed(site) else GOOD if device.endswith("-02") else OLD


def _line(topic: str, t: float, payload: object) -> str:
    return json.dumps({"topic": topic, "received_at": t, "payload": payload},
                      separators=(",", ":"))


def write_site(site: str, path: Path, seed: int) -> Path:
    rng = random.Random(seed)
    names = devices(site)
    lines = [_line(f"fleet/{site}/ref-{site}/meta", START - 60,
                   {"ts": START - 60, "model": "ref-station", "serial": f"REF-{site}"})]
    rollout = START + rollout_h(site) * 3600
    wander = 0.0
    for minute in range(HOURS * 60):
        t = START + 60 * minute
        if minute % 60 == 0:
            for i, device in enumerate(names):
                lines.append(_line(f"fleet/{site}/{device}/meta", t + 0.5 + i / 100, {
                    "ts": t, "model": "th-200", "firmware": firmware_at(site, device, t),
                    "hardware_rev": "B", "serial": f"SN-{site}-{i}",
                    "installed_at": "2025-03-01", "calibrated_at": "2025-10-01",
                    "calibration_due": "2026-10-01"}))
        if t == rollout:
            for device in names[:2]:
                lines.append(_line(f"fleet/{site}/{device}/event", t + 0.2, {
                    "ts": t, "type": "firmware_update", "from": OLD,
                    "to": firmware_at(site, device, t), "by": "ota"}))
        wander = 0.98 * wander + rng.gauss(0, 0.05)
        hours = minute / 60
        temperature = 8.0 + 6.0 * math.sin(2 * math.pi * hours / 24) + wander
        humidity = 70.0 - 10.0 * math.sin(2 * math.pi * hours / 24) + 4 * wander
        pressure = 1013.0 + 3.0 * math.sin(2 * math.pi * hours / 30) + 0.3 * wander
        ref_temperature = temperature + (
            REFERENCE_STEP if site == DRIFTING_SITE and hours >= REFERENCE_STEP_H else 0.0)
        lines.append(_line(f"fleet/{site}/ref-{site}/telemetry", t + 1, {"ts": t, "readings": {
            "temperature": round(ref_temperature + rng.gauss(0, 0.03), 3),
            "humidity": round(humidity + rng.gauss(0, 0.3), 2),
            "pressure": round(pressure + rng.gauss(0, 0.05), 2)}}))
        for i, device in enumerate(names):
            p = pressure + rng.gauss(0, 0.3)
            if device == regressed(site) and t >= rollout:
                p += PRESSURE_OFFSET
            lines.append(_line(f"fleet/{site}/{device}/telemetry", t + 2 + i / 100, {
                "ts": t + 1, "readings": {
                    "temperature": round(temperature + rng.gauss(0, 0.12), 2),
                    "humidity": round(humidity + rng.gauss(0, 1.0), 1),
                    "pressure": round(p, 2)}}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_references(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for site in SITES:
        (directory / f"{site}.toml").write_text(
            f'[[reference]]\nid = "ref-{site}"\nsite = "{site}"\nserves = ["th-{site}-*"]\n'
            'sensors = ["temperature", "humidity", "pressure"]\nmodel = "ref-station"\n'
            'calibration_due = 2027-06-01\n'
            'uncertainty = {temperature = 0.1, humidity = 1.5, pressure = 0.2}\n',
            encoding="utf-8")
    return directory


def config(path: Path, site: str, references: Path, store: Path) -> Path:
    """One site's gateway: audits every 12 h (at 12 h, 24 h and the recording's end)."""
    path.write_text(f'site = "{site}"\ngateway = "gw-{site}"\n'
                    f'profiles_dir = "{REPO / "device_profiles"}"\n'
                    f'references_dir = "{references}"\n'
                    f'[audit]\ninterval = "12h"\n[store]\npath = "{store}"\n',
                    encoding="utf-8")
    return path
