"""A recorded fleet with a firmware rollout: the scenario the cohort analysis exists for.

Site ``north``: reference ``ref-north`` and twelve th-200 devices on firmware 2.3.1,
reporting temperature, humidity and pressure once a minute for ``HOURS`` hours. At
``ROLLOUT_H`` four devices (``REGRESSED``) update to 2.4.0 over the air and from then on
read pressure ``PRESSURE_OFFSET`` hPa high; at the same time two others (``BYSTANDERS``)
update to 2.3.5 and stay healthy. Every update is announced twice, as a real device does:
a ``firmware_update`` event and a new retained meta (re-sent every hour, unchanged).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

START = 1_764_028_800.0  # 2025-11-25T00:00:00Z
HOURS = 26
ROLLOUT_H = 12
PRESSURE_OFFSET = 2.5  # hPa; the th-200's pressure bias tolerance is 1.0 hPa
DEVICES = [f"th-north-{i:02d}" for i in range(1, 13)]
REGRESSED = DEVICES[:4]
BYSTANDERS = DEVICES[4:6]
OLD, BAD, GOOD = "2.3.1", "2.4.0", "2.3.5"


def _line(topic: str, t: float, payload: object) -> str:
    return json.dumps({"topic": topic, "received_at": t, "payload": payload},
                      separators=(",", ":"))


def firmware_at(device: str, t: float) -> str:
    if t < START + ROLLOUT_H * 3600:
        return OLD
    return BAD if device in REGRESSED else GOOD if device in BYSTANDERS else OLD


def write(path: Path, seed: int = 7) -> Path:
    updates = {device: BAD for device in REGRESSED} | {device: GOOD for device in BYSTANDERS}
    return write_site(path, site="north", devices=DEVICES, rollout=START + ROLLOUT_H * 3600,
                      updates=updates, ref_serial="REF-1",
                      serial=lambda i: f"SN-{1000 + i}", seed=seed)


def write_site(path: Path, *, site: str, devices: Sequence[str], rollout: float,
               updates: Mapping[str, str], ref_serial: str, serial: Callable[[int], str],
               seed: int, reference_step: tuple[float, float] | None = None) -> Path:
    """One site's recording: its reference and ``devices`` once a minute for ``HOURS``
    hours over a shared weather; at ``rollout`` the devices in ``updates`` (in its order)
    update to their version, announced by an event and by the hourly retained meta, and
    those updated to ``BAD`` read pressure ``PRESSURE_OFFSET`` high from then on.
    ``reference_step``: (from when, by how much) the reference's temperature reads high.
    tests/fleet_sites.py writes its eight sites with it."""
    rng = random.Random(seed)

    def firmware(device: str, t: float) -> str:
        return updates.get(device, OLD) if t >= rollout else OLD

    lines = [_line(f"fleet/{site}/ref-{site}/meta", START - 60,
                   {"ts": START - 60, "model": "ref-station", "serial": ref_serial})]
    wander = 0.0
    for minute in range(HOURS * 60):
        t = START + 60 * minute
        if minute % 60 == 0:  # retained meta re-delivered every hour: not a new version
            for i, device in enumerate(devices):
                lines.append(_line(f"fleet/{site}/{device}/meta", t + 0.5 + i / 100, {
                    "ts": t, "model": "th-200", "firmware": firmware(device, t),
                    "hardware_rev": "B", "serial": serial(i), "installed_at": "2025-03-01",
                    "calibrated_at": "2025-10-01", "calibration_due": "2026-10-01"}))
        if t == rollout:
            for device, version in updates.items():
                lines.append(_line(f"fleet/{site}/{device}/event", t + 0.2, {
                    "ts": t, "type": "firmware_update", "from": OLD, "to": version,
                    "by": "ota"}))
        wander = 0.98 * wander + rng.gauss(0, 0.05)
        hours = minute / 60
        temperature = 8.0 + 6.0 * math.sin(2 * math.pi * hours / 24) + wander
        humidity = 70.0 - 10.0 * math.sin(2 * math.pi * hours / 24) + 4 * wander
        pressure = 1013.0 + 3.0 * math.sin(2 * math.pi * hours / 30) + 0.3 * wander
        ref_temperature = temperature + (
            reference_step[1] if reference_step is not None and t >= reference_step[0]
            else 0.0)
        lines.append(_line(f"fleet/{site}/ref-{site}/telemetry", t + 1, {"ts": t, "readings": {
            "temperature": round(ref_temperature + rng.gauss(0, 0.03), 3),
            "humidity": round(humidity + rng.gauss(0, 0.3), 2),
            "pressure": round(pressure + rng.gauss(0, 0.05), 2)}}))
        for i, device in enumerate(devices):
            p = pressure + rng.gauss(0, 0.3)
            if updates.get(device) == BAD and t >= rollout:
                p += PRESSURE_OFFSET
            lines.append(_line(f"fleet/{site}/{device}/telemetry", t + 2 + i / 100, {
                "ts": t + 1, "readings": {
                    "temperature": round(temperature + rng.gauss(0, 0.12), 2),
                    "humidity": round(humidity + rng.gauss(0, 1.0), 1),
                    "pressure": round(p, 2)}}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


REPO = Path(__file__).resolve().parents[1]


def config(path: Path, store: Path) -> Path:
    """A daemon config auditing every 12 h (a 26 h recording: audits at 12 h, 24 h, end)."""
    path.write_text(f'site = "north"\ngateway = "gw"\n'
                    f'profiles_dir = "{REPO / "device_profiles"}"\n'
                    f'references_dir = "{REPO / "references"}"\n'
                    f'[audit]\ninterval = "12h"\n[store]\npath = "{store}"\n',
                    encoding="utf-8")
    return path
