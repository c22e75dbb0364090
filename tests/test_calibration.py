"""A correction recorded as a calibration event is what the audit judges from then on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from auditd.adapters.config.catalog import build_catalog, load_profiles
from auditd.adapters.store import Store
from auditd.app.auditor import Auditor
from auditd.app.ingest import Ingestor
from auditd.domain.calibration import apply, corrections
from auditd.domain.validate import Limits
from auditd.model import EventRecord, RawMessage, Reference
from auditd.topics import TopicsConfig

REPO = Path(__file__).resolve().parents[1]
START = 1_764_028_800.0
DAY = 86_400.0


def _event(ts: float, correction: dict[str, object] | None, sensor: str = "pm2_5"
           ) -> EventRecord:
    data: dict[str, object] = {"type": "calibration"}
    if correction is not None:
        data["correction"] = {"sensor": sensor, **correction}
    return EventRecord("north", "d1", ts, ts, "calibration", data)


def test_each_reading_takes_the_latest_correction_at_or_before_it() -> None:
    found = corrections([
        _event(200.0, {"gain": 3.0, "offset": 0.0}),
        _event(100.0, {"gain": 2.0, "offset": 1.0}),
        _event(150.0, None),                                       # the device's own: no object
        _event(160.0, {"gain": 5.0, "offset": 0.0}, sensor="o3"),  # another sensor
        _event(170.0, {"gain": 9.0, "offset": 0.0, "humidity_coefficient": 0.1}),
    ], "pm2_5")
    assert [(c.since, c.gain) for c in found] == [(100.0, 2.0), (200.0, 3.0)]
    ts = np.array([50.0, 100.0, 199.0, 200.0, 300.0])
    got = apply(ts, np.full(5, 10.0), found)
    assert got.tolist() == [10.0, 21.0, 21.0, 30.0, 30.0]


def _catalog():  # type: ignore[no-untyped-def]
    ref = Reference(id="ref-north", site="north", serves=("th-north-*",),
                    sensors=("temperature",), model="ref-station")
    return build_catalog(load_profiles(REPO / "device_profiles"), [ref],
                         {"th-north-*": "th-200"})


def _message(device: str, t: float, body: dict[str, object], kind: str = "telemetry"
             ) -> RawMessage:
    return RawMessage(f"fleet/north/{device}/{kind}", json.dumps(body).encode(), t + 1)


def test_the_audit_judges_readings_through_an_applied_correction(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    messages = []
    for i in range(1440):
        t = START + 60 * i
        truth = 15 + 5 * math.sin(2 * math.pi * i / 1440)
        messages.append(_message("ref-north", t, {"ts": t, "readings": {
            "temperature": truth + float(rng.normal(0, 0.03))}}))
        # A unit that reads 20 % high and 1 degC low.
        messages.append(_message("th-north-01", t + 2, {"ts": t + 2, "readings": {
            "temperature": 1.2 * truth - 1.0 + float(rng.normal(0, 0.05))}}))
    with Store(tmp_path / "audit.db", synchronous="normal") as store:
        ingestor = Ingestor(store, _catalog(), prefix="fleet", limits=Limits())
        ingestor.ingest(messages)
        auditor = Auditor(store, _catalog(), TopicsConfig(), gateway="gw")
        before = [f for f in auditor.run(START + DAY).findings if f.device == "th-north-01"]
        ingestor.ingest([_message("th-north-01", START - 60, {
            "ts": START - 60, "type": "calibration", "correction": {
                "sensor": "temperature", "gain": 1 / 1.2, "offset": 1.0 / 1.2}}, "event")])
        after = [f for f in auditor.run(START + DAY).findings if f.device == "th-north-01"]
    assert before[0].status == "fail" and before[0].causes[0].cause == "gain_drift"
    assert after[0].status == "pass", after[0].to_json()
