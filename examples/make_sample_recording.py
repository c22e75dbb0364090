"""Write ``sample-recording.jsonl``: a small fleet at one site with one injected fault.

Site ``north``: the reference station ``ref-north`` and three th-200 devices reporting
temperature, humidity and pressure once a minute for eight hours. ``th-north-02``'s
temperature reads 1.2 degC high from the third hour on (an offset drift); the others are
healthy, within the th-200's stated accuracy. One device reports pressure in Pa and
temperature in degF (correctly labelled: the daemon converts), and a handful of malformed
and hostile messages sit among the good ones, as they would on a real broker.

Deterministic (fixed seed): ``python examples/make_sample_recording.py`` rewrites the same
file byte for byte.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

START = 1_764_057_600  # 2025-11-25T08:00:00Z
MINUTES = 8 * 60
FAULT_DEVICE, FAULT_FROM_MIN, FAULT_OFFSET = "th-north-02", 180, 1.2


def weather(rng: random.Random) -> list[tuple[float, float, float]]:
    """A plausible morning: warming, drying, slowly falling pressure, with slow wobbles."""
    out, wander = [], 0.0
    for minute in range(MINUTES):
        wander = 0.98 * wander + rng.gauss(0, 0.05)
        hours = minute / 60
        temperature = 8.0 + 6.0 * math.sin(math.pi * hours / 16) + wander
        humidity = 82.0 - 3.5 * hours + 4 * wander
        pressure = 1013.0 - 0.25 * hours + 0.3 * wander
        out.append((temperature, humidity, pressure))
    return out


def record(topic: str, t: float, payload: object) -> str:
    return json.dumps({"topic": topic, "received_at": t, "payload": payload},
                      separators=(",", ":"))


def main() -> None:
    rng = random.Random(20261125)
    truth = weather(rng)
    devices = ["th-north-01", FAULT_DEVICE, "th-north-03"]
    lines = [
        record("fleet/north/ref-north/meta", START - 60,
               {"ts": START - 60, "model": "ref-station", "serial": "REF-0001"}),
    ]
    for i, device in enumerate(devices):
        lines.append(record(f"fleet/north/{device}/meta", START - 30 + i, {
            "ts": START - 30 + i, "model": "th-200", "firmware": "2.3.1",
            "serial": f"SN-{1000 + i}", "installed_at": "2025-03-01",
            "calibrated_at": "2025-02-20"}))
    for minute, (temperature, humidity, pressure) in enumerate(truth):
        t = START + 60 * minute
        lines.append(record("fleet/north/ref-north/telemetry", t + 1, {
            "ts": t, "readings": {
                "temperature": round(temperature + rng.gauss(0, 0.03), 3),
                "humidity": round(humidity + rng.gauss(0, 0.3), 2),
                "pressure": round(pressure + rng.gauss(0, 0.05), 2)}}))
        for i, device in enumerate(devices):
            temp = temperature + rng.gauss(0, 0.12)
            if device == FAULT_DEVICE and minute >= FAULT_FROM_MIN:
                temp += FAULT_OFFSET
            reading_t = t + 5 + i
            if device == "th-north-03":
                readings = {"temperature": {"value": round(temp * 9 / 5 + 32, 2), "unit": "degF"},
                            "humidity": {"value": round(humidity + rng.gauss(0, 1.0), 1),
                                         "unit": "percent"},
                            "pressure": {"value": round((pressure + rng.gauss(0, 0.3)) * 100),
                                         "unit": "Pa"}}
            else:
                readings = {"temperature": round(temp, 2),
                            "humidity": round(humidity + rng.gauss(0, 1.0), 1),
                            "pressure": round(pressure + rng.gauss(0, 0.3), 1)}
            lines.append(record(f"fleet/north/{device}/telemetry", reading_t + 1,
                                {"ts": reading_t, "seq": minute, "readings": readings}))
        if minute == 100:
            bad_t = t + 30
            lines += [
                record("fleet/north/th-north-01/telemetry", bad_t, "{not json"),
                record("fleet/north/../etc/telemetry", bad_t, {"ts": bad_t, "readings": {}}),
                record("fleet/north/th-north-01/telemetry", bad_t, {
                    "ts": bad_t, "readings": {"temperature": {"value": 21.0, "unit": "hPa"}}}),
                record("fleet/north/th-north-01/telemetry", bad_t, {
                    "ts": bad_t, "readings": {"temperature": {"value": 999.0, "unit": "degC"}}}),
                record("fleet/north/th-north-01/telemetry", bad_t,
                       {"readings": {"temperature": 20.0}}),
            ]
    out = Path(__file__).with_name("sample-recording.jsonl")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} ({len(lines)} messages)")


if __name__ == "__main__":
    main()
