"""Readings quarantined as out of range become a cause in the stream's verdict.

Through the real validator, the real store and the real Auditor: the impossible values
never reach the comparison with the reference, so the audit must count them from the
quarantine or a sensor spitting 999 degC now and then would pass.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from auditd.adapters.config.catalog import build_catalog, load_profiles
from auditd.adapters.store import Store
from auditd.app.auditor import Auditor
from auditd.app.ingest import Ingestor
from auditd.domain.validate import Limits
from auditd.model import RawMessage, Reference
from auditd.topics import TopicsConfig

REPO = Path(__file__).resolve().parents[1]
START = 1_764_028_800.0
DAY = 86_400.0


def _catalog():
    ref = Reference(id="ref-north", site="north", serves=("th-north-*",),
                    sensors=("temperature",), model="ref-station")
    return build_catalog(load_profiles(REPO / "device_profiles"), [ref],
                         {"th-north-*": "th-200"})


def _message(device: str, t: float, value: float) -> RawMessage:
    body = {"ts": t, "readings": {"temperature": value}}
    return RawMessage(f"fleet/north/{device}/telemetry", json.dumps(body).encode(), t + 1)


def _audit(tmp_path: Path, impossible_every: int) -> dict[str, object]:
    rng = np.random.default_rng(3)
    messages = []
    for i in range(1440):
        t = START + 60 * i
        truth = 10 + 5 * math.sin(2 * math.pi * i / 1440) + 0.001 * i
        messages.append(_message("ref-north", t, truth + float(rng.normal(0, 0.03))))
        glitch = impossible_every and i % impossible_every == 0
        value = 999.0 if glitch else truth + float(rng.normal(0, 0.1))
        messages.append(_message("th-north-01", t + 2, value))
    with Store(tmp_path / "audit.db", synchronous="normal") as store:
        ingestor = Ingestor(store, _catalog(), prefix="fleet", limits=Limits())
        ingestor.ingest(messages)
        run = Auditor(store, _catalog(), TopicsConfig(), gateway="gw").run(START + DAY + 60)
    [finding] = [f for f in run.findings if f.device == "th-north-01"]
    return finding.to_json()


@pytest.mark.parametrize(("every", "status", "first"), [
    (0, "pass", None),
    (500, "pass", "out_of_range"),   # 3 of 1440: recorded as a cause, below the 1 % share
    (20, "fail", "out_of_range"),    # 72 of 1440 (5 %): the stream fails on it
])
def test_out_of_range_readings_are_counted_into_the_verdict(
        tmp_path: Path, every: int, status: str, first: str | None) -> None:
    finding = _audit(tmp_path, every)
    assert finding["status"] == status
    causes = [c["cause"] for c in finding["causes"]]
    if first is None:
        assert "out_of_range" not in causes
    elif status == "fail":
        assert causes[0] == first
        assert "[-40, 85] degC" in finding["causes"][0]["evidence"]
    else:
        assert "out_of_range" in causes
