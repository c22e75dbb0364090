"""Rejections an operator can see: rate-limited log lines, ``sensor-auditd quarantine``, and
one table of every reason, kept equal to the one registry in the code.

Through the real entry points: ``sensor-auditd run`` as a process against a private
mosquitto, ``sensor-auditd quarantine`` as a process on the store it wrote.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_proc import DaemonProcess, Publisher, telemetry, write_config
from structlog.testing import capture_logs

from auditd import reasons
from auditd.app.rejection_log import RejectionLog
from auditd.domain.validate import Reason
from auditd.model import Rejection

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=120)


def _rejected_lines(daemon: DaemonProcess) -> list[dict]:
    out = []
    for line in daemon.lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "message_rejected":
            out.append(event)
    return out


def _quarantined(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return int(conn.execute("SELECT coalesce(sum(count), 0) FROM quarantine").fetchone()[0])


@pytest.mark.broker
def test_rejections_are_logged_once_per_reason_and_device_with_counts_and_listed(
        mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    config = write_config(tmp_path / "config.toml", port=mosquitto.port, store=db,
                          extra='rejections_interval = "1h"\n[ingest]\nmax_age = "1d"\n')
    daemon = DaemonProcess(config).start()
    now = time.time()
    hot, old = 40, 3
    try:
        device = Publisher(mosquitto.port)
        meta = json.dumps({"ts": now, "model": "th-200", "firmware": "2.3.1"}).encode()
        device.publish_many(
            [("fleet/north/th-north-01/meta", meta), ("fleet/north/th-north-02/meta", meta)]
            # a string for a number every time: one device flooding one reason
            + [("fleet/north/th-north-01/telemetry",
                telemetry(now - 600 + i, {"temperature": "999"})) for i in range(hot)]
            # older than [ingest] max_age = 1d: ts_too_old; a 12 h old reading is accepted
            + [("fleet/north/th-north-02/telemetry",
                telemetry(now - 2 * 86400 + i, {"temperature": 20.0})) for i in range(old)]
            + [("fleet/north/th-north-02/telemetry",
                telemetry(now - 12 * 3600, {"temperature": 20.0}))]
            + [("fleet/north/th-north-01/telemetry", b"{not json")])
        device.close()
        deadline = time.monotonic() + 30
        while _quarantined(db) < hot + old + 1:
            assert time.monotonic() < deadline, "rejections not quarantined"
            time.sleep(0.1)
        daemon.wait_event(lambda e: e.get("event") == "message_rejected"
                          and e.get("reason") == "json_invalid", 10)
        during = _rejected_lines(daemon)
    finally:
        assert daemon.terminate() == 0
    # Within the interval: one line per (reason, device), the first rejection's.
    keys = [(e["reason"], e["device"]) for e in during]
    assert sorted(keys) == sorted({("value_invalid", "th-north-01"),
                                   ("ts_too_old", "th-north-02"),
                                   ("json_invalid", "th-north-01")})
    assert all(e["count"] == 1 and e["level"] == "warning" for e in during)
    flood = next(e for e in during if e["reason"] == "value_invalid")
    assert flood["topic"] == "fleet/north/th-north-01/telemetry"
    assert "number" in flood["detail"]
    assert "sensor-auditd quarantine --reason value_invalid --device th-north-01" in flood["hint"]
    # At shutdown the counts held back are logged: every rejection is accounted for.
    every = _rejected_lines(daemon)
    totals: dict[tuple[str, str], int] = {}
    for e in every:
        totals[(e["reason"], e["device"])] = totals.get((e["reason"], e["device"]), 0) + e["count"]
    assert totals == {("value_invalid", "th-north-01"): hot, ("ts_too_old", "th-north-02"): old,
                      ("json_invalid", "th-north-01"): 1}
    assert len(every) == 5  # the three first lines, then the two floods' counts

    listed = _cli("quarantine", "--config", str(config), "--json")
    assert listed.returncode == 0, listed.stderr
    groups = {(g["reason"], g["device"]): g for g in json.loads(listed.stdout)}
    assert set(groups) == set(totals)
    assert {k: g["count"] for k, g in groups.items()} == totals
    too_old = groups[("ts_too_old", "th-north-02")]
    assert too_old["topic"] == "fleet/north/th-north-02/telemetry"
    assert too_old["first_seen"] <= too_old["last_seen"]
    assert json.loads(too_old["sample"]["payload"])["readings"] == {"temperature": 20.0}
    assert "(limit 86400 s: [ingest] max_age)" in too_old["sample"]["detail"]
    assert groups[("json_invalid", "th-north-01")]["sample"]["payload"] == "{not json"

    one = _cli("quarantine", "--store", str(db), "--device", "th-north-0[12]", "--reason",
               "value_invalid")
    assert one.returncode == 0, one.stderr
    lines = one.stdout.splitlines()
    assert lines[0].split()[:3] == ["REASON", "DEVICE", "TOPIC"]
    rows = [line for line in lines[1:] if line.startswith("value_invalid ")]
    assert len(rows) == 1 and f" {hot} " in rows[0] and "th-north-01" in rows[0]
    assert not any("ts_too_old" in line.split()[:1] for line in lines)
    assert any(line.startswith("value_invalid: ") for line in lines)  # what it means

    typo = _cli("quarantine", "--db", str(db), "--reason", "ts_to_old")
    assert typo.returncode == 2
    assert "did you mean ts_too_old" in typo.stderr


def test_the_rejection_log_counts_what_it_holds_back_and_logs_it_when_the_interval_ends(
        ) -> None:
    clock = [1000.0]
    log = RejectionLog(60.0, clock=lambda: clock[0])

    def reject(device: str, reason: str = "value_invalid") -> Rejection:
        return Rejection(f"fleet/s/{device}/telemetry", reason, "x", b"{}", clock[0], device)

    with capture_logs() as events:
        log.note([reject("a")] * 5 + [reject("b")])
        clock[0] += 30
        log.note([reject("a")])
        log.flush()  # the interval is not over: nothing more
        clock[0] += 31
        log.flush()  # over for both: a's held-back count; b had none held back
        log.note([reject("a")])  # a new interval: logged at once
        log.note([reject("a", "ts_future")])  # another reason: a line of its own
        log.close()  # nothing held back
    assert all(e["event"] == "message_rejected" for e in events)
    assert [(e["device"], e["count"]) for e in events] == [("a", 1), ("b", 1), ("a", 5),
                                                          ("a", 1), ("a", 1)]


def test_a_flood_of_invented_devices_costs_the_log_a_bounded_number_of_lines() -> None:
    clock = [0.0]
    log = RejectionLog(60.0, clock=lambda: clock[0], max_keys=10)
    flood = [Rejection(f"fleet/s/fake-{i}/telemetry", "device_limit", "x", b"", 0.0,
                       f"fake-{i}") for i in range(1000)]
    with capture_logs() as events:
        log.note(flood)
        log.close()
    assert len(events) == 12  # ten devices, then one line for the rest, and its count
    assert sum(e["count"] for e in events) == 1000
    assert [e["device"] for e in events[10:]] == ["*", "*"]


def test_one_registry_names_every_reason_the_code_gives() -> None:
    from auditd.adapters.sources.recordings import RECORDING_INVALID
    from auditd.app.commands import COMMAND_INVALID

    assert set(Reason.ALL) <= set(reasons.REGISTRY)
    assert {RECORDING_INVALID, COMMAND_INVALID} <= set(reasons.REGISTRY)
    for name, value in vars(Reason).items():
        if name.isupper() and isinstance(value, str):
            assert value in reasons.REGISTRY, name
    for spec in reasons.REGISTRY.values():
        assert spec.meaning.endswith((".", ")")), spec.code


def test_the_operations_page_shows_the_registry_table_as_it_is() -> None:
    """docs/operations.md's table of reasons is the registry's: regenerate it with
    ``python -c 'from auditd.reasons import markdown_table; print(markdown_table())'``."""
    page = (REPO / "docs" / "operations.md").read_text()
    block = re.search(r"<!-- rejection reasons: .*?-->\n(.*?)\n<!-- end -->", page, re.S)
    assert block is not None, "the generated table's markers are missing"
    assert block.group(1).strip() == reasons.markdown_table()
    readme = (REPO / "README.md").read_text()
    assert "docs/operations.md#rejected-messages" in readme
