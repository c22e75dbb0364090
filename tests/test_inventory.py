"""The device inventory a gateway publishes for the fleet: what goes out, and when.

Through the real store and the real auditor: an inventory is queued when it changes, not at
every audit, and a version still waiting for the broker is replaced by a newer one, so an
outage of any length delivers each device's current inventory once.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from auditd.adapters.config.catalog import build_catalog, load_profiles, load_references
from auditd.adapters.store import Store
from auditd.app.auditor import Auditor
from auditd.app.ingest import Ingestor
from auditd.domain.catalog import Catalog
from auditd.domain.inventory import DeviceInventory, Published, due
from auditd.domain.validate import Limits
from auditd.model import RawMessage
from auditd.topics import TopicsConfig

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 25, tzinfo=UTC).timestamp()
HOUR = 3600.0
META = {"model": "th-200", "firmware": "2.3.1", "hardware_rev": "B", "serial": "SN-1",
        "installed_at": "2026-03-01", "batch": "2026-W09"}


def catalog() -> Catalog:
    return build_catalog(load_profiles(REPO / "device_profiles"),
                         load_references(REPO / "references"), {})


def ingest(store: Store, cat: Catalog, messages: list[tuple[str, float, Any]]) -> None:
    Ingestor(store, cat, prefix="fleet", limits=Limits()).ingest(
        [RawMessage(topic, json.dumps(payload).encode(), at) for topic, at, payload in messages])


def telemetry(device: str, t: float) -> tuple[str, float, Any]:
    return (f"fleet/north/{device}/telemetry", t,
            {"ts": t, "readings": {"temperature": 20.0, "humidity": 50.0}})


def meta(device: str, t: float, **data: Any) -> tuple[str, float, Any]:
    return (f"fleet/north/{device}/meta", t, {"ts": t, **META, **data})


def pending(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Inventory messages waiting in the outbox, by topic (asserting they are retained)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in store.outbox.peek(10_000):
        if "/device/" in row.topic:
            assert row.retain and row.qos == 1, row
            out.setdefault(row.topic, []).append(json.loads(row.payload))
    return out


def deliver_all(store: Store) -> None:
    """What the publisher does on the broker's PUBACKs."""
    store.outbox.done(row.id for row in store.outbox.peek(10_000))


TOPIC = "fleet/north/audit/gw/device/th-north-01"


def test_every_known_device_is_described_once_with_what_the_fleet_groups_by(
        tmp_path: Path) -> None:
    cat = catalog()
    with Store(tmp_path / "audit.db") as store:
        ingest(store, cat, [meta("th-north-01", NOW - 2 * HOUR),
                            telemetry("th-north-01", NOW - HOUR),
                            telemetry("ref-north", NOW - HOUR + 5),
                            meta("th-north-02", NOW - 2 * HOUR, firmware="2.4.0")])
        Auditor(store, cat, TopicsConfig(), gateway="gw").run(NOW)
        queued = pending(store)
        assert sorted(queued) == [f"fleet/north/audit/gw/device/{d}"
                                  for d in ("ref-north", "th-north-01", "th-north-02")]
        (dev,) = queued[TOPIC]
        assert dev["kind"] == "device" and dev["role"] == "field"
        assert dev["ts"] == "2026-11-25T00:00:00Z", "taken at the audit's time"
        assert (dev["site"], dev["gateway"], dev["device"]) == ("north", "gw", "th-north-01")
        assert (dev["model"], dev["firmware"], dev["hardware_rev"], dev["installed_at"]) == (
            "th-200", "2.3.1", "B", "2026-03-01")
        assert dev["meta"]["batch"] == "2026-W09", "keys the contract does not name pass on"
        assert dev["sensors"] == ["humidity", "temperature"]
        assert dev["last_seen"] == "2026-11-24T23:00:00Z"
        assert dev["firmware_since"] == "2026-11-24T22:00:00Z"
        (ref,) = queued["fleet/north/audit/gw/device/ref-north"]
        assert ref["role"] == "reference" and ref["model"] == "ref-station", (
            "a reference without meta still has its reference entry's model")
        (silent,) = queued["fleet/north/audit/gw/device/th-north-02"]
        assert silent["firmware"] == "2.4.0" and silent["sensors"] == [], (
            "a device that never reported is in the inventory: the fleet must know it")


def test_an_unchanged_inventory_is_not_published_again(tmp_path: Path) -> None:
    cat = catalog()
    with Store(tmp_path / "audit.db") as store:
        auditor = Auditor(store, cat, TopicsConfig(inventory_refresh_s=HOUR), gateway="gw")
        ingest(store, cat, [meta("th-north-01", NOW), telemetry("th-north-01", NOW)])
        auditor.run(NOW + 60)
        deliver_all(store)
        for minute in range(2, 50, 10):  # telemetry keeps coming, last_seen moves < 1 h
            ingest(store, cat, [telemetry("th-north-01", NOW + minute * 60)])
            auditor.run(NOW + minute * 60 + 30)
            assert pending(store) == {}, f"republished at minute {minute}"
        ingest(store, cat, [telemetry("th-north-01", NOW + HOUR)])
        auditor.run(NOW + HOUR + 30)
        (again,) = pending(store)[TOPIC]
        assert again["last_seen"] == "2026-11-25T01:00:00Z", (
            "last_seen moved by the refresh step: sent again so the fleet sees it alive")


def test_an_outage_delivers_the_current_version_once(tmp_path: Path) -> None:
    """The broker is away for many audits while the firmware changes twice: the outbox holds
    one message for the device, the newest, however many audits ran."""
    cat = catalog()
    with Store(tmp_path / "audit.db") as store:
        auditor = Auditor(store, cat, TopicsConfig(), gateway="gw")
        ingest(store, cat, [meta("th-north-01", NOW), telemetry("th-north-01", NOW)])
        auditor.run(NOW + 60)
        deliver_all(store)  # then the broker goes away: nothing is delivered from here
        for n, firmware in enumerate(("2.4.0", "2.4.0", "2.4.1", "2.4.1", "2.4.1")):
            t = NOW + (n + 1) * 600
            ingest(store, cat, [meta("th-north-01", t, firmware=firmware),
                                telemetry("th-north-01", t), telemetry("ref-north", t)])
            auditor.run(t + 60)
            (waiting,) = pending(store)[TOPIC]
            assert waiting["firmware"] == firmware
        reports = [r for r in store.outbox.peek(10_000) if r.topic.endswith("/report")]
        assert len(reports) == 5, "other messages are not coalesced: only inventory"


def test_inventory_off_publishes_none(tmp_path: Path) -> None:
    cat = catalog()
    with Store(tmp_path / "audit.db") as store:
        ingest(store, cat, [meta("th-north-01", NOW), telemetry("th-north-01", NOW)])
        Auditor(store, cat, TopicsConfig(inventory=False), gateway="gw").run(NOW + 60)
        assert pending(store) == {}


BASE = DeviceInventory(at=NOW, site="north", gateway="gw", device="d", role="field", model="th-200",
                       identity={"firmware": "2.3.1"}, meta={"firmware": "2.3.1"},
                       firmware_since=NOW, sensors=("temperature",), first_seen=NOW,
                       last_seen=NOW, status="pass", causes=())


@given(moved=st.integers(0, 36_000), refresh=st.integers(1, 18_000),
       firmware=st.sampled_from(["2.3.1", "2.4.0"]),
       causes=st.sampled_from([(), ("offset_drift",)]))
def test_due_is_a_change_of_content_or_last_seen_moved_by_the_refresh(
        moved: int, refresh: int, firmware: str, causes: tuple[str, ...]) -> None:
    now = replace(BASE, identity={"firmware": firmware}, causes=causes,
                  last_seen=NOW + moved, at=NOW + moved + 60)
    published = Published(BASE.content_hash(), BASE.last_seen)
    changed = firmware != "2.3.1" or causes != ()
    assert due(now, published, refresh) == (changed or moved >= refresh)
    assert due(now, None, refresh)
