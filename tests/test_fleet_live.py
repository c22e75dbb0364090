"""``sensor-auditd fleet run``: replicas on a real mosquitto and a real PostgreSQL (a database
of each test's own), started as processes the way systemd starts them.

What a fleet operator relies on: every upstream message a gateway publishes ends in the
tables exactly once whatever happens to a replica; a message the fleet cannot use is
kept with its reason and never stops it; a gateway that drops off is shown offline; a bad
configuration or an unreachable database is refused with exit 2, naming what to fix.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fleet_sites
import paho.mqtt.client as paho
import psycopg
import pytest
from brokers import free_port
from daemon_proc import DaemonProcess, Publisher
from paho.mqtt.enums import CallbackAPIVersion

from auditd.model import from_iso

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def fleet_config(path: Path, *, port: int, dsn: str | None, group: str = "fleet-test",
                 extra: str = "", broker_extra: str = "") -> Path:
    dsn_line = f'dsn = "{dsn}"\n' if dsn else ""
    path.write_text(f"""group = "{group}"
{dsn_line}heartbeat = "1s"
{extra}
[broker]
host = "127.0.0.1"
port = {port}
keepalive = 10
reconnect_min_s = 1
reconnect_max_s = 2
{broker_extra}

[log]
level = "info"
format = "json"
""")
    return path


def replica(config: Path, name: str) -> DaemonProcess:
    return DaemonProcess(config, command=("fleet", "run"), extra_args=("--replica", name))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(sql).fetchall())


def count(dsn: str, table: str) -> int:
    return int(query(dsn, f"SELECT count(*) FROM {table}")[0][0])


def wait_until(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def finding(site: str, gateway: str, device: str, sensor: str, end: float,
            status: str = "pass") -> tuple[str, bytes]:
    body = {"kind": "calibration", "site": site, "device": device, "sensor": sensor,
            "reference": f"ref-{site}", "unit": "hPa",
            "window": {"start": _iso(end - 86400), "end": _iso(end)},
            "status": status, "severity": "major" if status == "fail" else "none",
            "metrics": {"n": 1440, "bias": 2.5 if status == "fail" else 0.1},
            "causes": [{"cause": "offset_drift", "confidence": 0.9, "evidence": "+2.5 hPa"}]
            if status == "fail" else [], "onset": None, "context": {}, "action": ""}
    return (f"fleet/{site}/audit/{gateway}/finding/{device}/{sensor}",
            json.dumps(body).encode())


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# --------------------------------------------------------------------------- refusals


def test_a_bad_config_is_refused_with_file_key_and_problem(tmp_path: Path) -> None:
    config = fleet_config(tmp_path / "fleet.toml", port=1, dsn="postgresql://x@127.0.0.1/db",
                          broker_extra='protocol = "3.1.1"')
    result = cli("fleet", "run", "--config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr and "broker.protocol" in result.stderr
    assert "MQTT 5" in result.stderr and "Traceback" not in result.stderr

    config = fleet_config(tmp_path / "fleet.toml", port=1, dsn=None, extra='grup = "x"')
    result = cli("fleet", "run", "--config", str(config))
    assert result.returncode == 2 and "grup" in result.stderr and "group" in result.stderr

    config = fleet_config(tmp_path / "fleet.toml", port=1, dsn=None)
    result = cli("fleet", "run", "--config", str(config), env={"SENSOR_AUDITD_DSN": ""})
    assert result.returncode == 2
    assert "dsn" in result.stderr and "SENSOR_AUDITD_DSN" in result.stderr

    config = fleet_config(tmp_path / "fleet.toml", port=1, dsn="postgresql://x@127.0.0.1/db",
                          extra="[ingest]\nbatch_max = 5000")
    result = cli("fleet", "run", "--config", str(config))
    assert result.returncode == 2 and "ingest.batch_max" in result.stderr
    assert "receive_maximum" in result.stderr


def test_an_unreachable_database_is_exit_2_naming_host_and_port(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = fleet_config(tmp_path / "fleet.toml", port=1, dsn=None)
    result = cli("fleet", "run", "--config", str(config), "--replica", "r1",
                 env={"SENSOR_AUDITD_DSN": f"postgresql://postgres@127.0.0.1:{port}/fleet"})
    assert result.returncode == 2, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- systemd

UNIT = REPO / "systemd" / "sensor-auditd-fleet@.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed on this machine")
def test_the_replica_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    """An instance of the template, pointed at this checkout's command (``verify`` checks
    that the binary exists), verifies cleanly and is as confined as the gateway's unit."""
    command = shutil.which("sensor-auditd")
    assert command, "the package's console script is not installed"
    text = UNIT.read_text()
    assert ("ExecStart=/opt/sensor-auditd/bin/sensor-auditd fleet run --config "
            "/etc/sensor-auditd/fleet.toml --replica %i") in text
    unit = tmp_path / "sensor-auditd-fleet@1.service"
    unit.write_text(text.replace("/opt/sensor-auditd/bin/sensor-auditd", command))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true",
                               "--threshold=15", str(unit)], capture_output=True, text=True,
                              timeout=60)
    assert security.returncode == 0, security.stdout + security.stderr
    settings = {line.strip() for line in text.splitlines() if "=" in line
                and not line.lstrip().startswith("#")}
    assert {"Type=notify", "Restart=always", "NotifyAccess=main"} <= settings
    assert any(s.startswith("WatchdogSec=") for s in settings)


@pytest.mark.broker
def test_a_replica_tells_systemd_it_is_ready_and_alive(
        mosquitto, fleet_dsn: str, tmp_path: Path,
        notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    sock.settimeout(1.0)
    config = fleet_config(tmp_path / "fleet.toml", port=mosquitto.port, dsn=fleet_dsn)
    proc = replica(config, "r1").start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                any("READY=1" in m for m in seen) and sum("WATCHDOG=1" in m for m in seen) >= 2
                and any("broker 127.0.0.1" in m and "connected" in m for m in seen)):
            try:
                seen.append(sock.recv(4096).decode())
            except TimeoutError:
                continue
    finally:
        assert proc.terminate() == 0
    assert any(m.startswith("READY=1") for m in seen), seen
    assert sum("WATCHDOG=1" in m for m in seen) >= 2, seen
    assert any("connected" in m for m in seen if "STATUS=" in m), seen


# --------------------------------------------------------------------------- one replica


@pytest.mark.broker
def test_a_replica_stores_every_kind_and_keeps_what_it_cannot_use(
        mosquitto, fleet_dsn: str, tmp_path: Path) -> None:
    config = fleet_config(tmp_path / "fleet.toml", port=mosquitto.port, dsn=fleet_dsn)
    proc = replica(config, "r1").start()
    gateway = Publisher(mosquitto.port)
    end = 1_764_115_200.0
    inventory = {"kind": "device", "ts": _iso(end), "site": "north", "gateway": "gw-n",
                 "device": "th-north-01", "role": "field", "model": "th-200",
                 "firmware": "2.4.0", "hardware_rev": "B", "installed_at": "2026-03-01",
                 "last_seen": _iso(end - 30), "causes": ["offset_drift"], "sensors": []}
    report = {"kind": "audit_report", "site": "north", "gateway": "gw-n", "at": _iso(end),
              "streams": 3, "pass": 2, "fail": 1, "insufficient_data": 0}
    try:
        gateway.publish_many([
            finding("north", "gw-n", "th-north-01", "pressure", end, "fail"),
            ("fleet/north/audit/gw-n/device/th-north-01", json.dumps(inventory).encode()),
            ("fleet/north/audit/gw-n/report", json.dumps(report).encode()),
            ("fleet/north/audit/gw-n/status", b"online"),
            # what the fleet cannot use: kept with a reason, the rest goes on
            ("fleet/north/audit/gw-n/finding/th-north-02/pressure", b"{not json"),
            (finding("north", "gw-n", "th-north-09", "pressure", end)[0],  # topic != payload
             finding("north", "gw-n", "th-north-03", "pressure", end)[1]),
            ("fleet/north/audit/gw-n/status", b"maybe"),
            ("fleet/north/audit/gw-n/device/th-north-04", json.dumps([1, 2]).encode()),
            # a gateway's command topic is not the fleet's: neither stored nor rejected
            ("fleet/north/audit/gw-n/command", b'{"ack": "x"}'),
        ])
        wait_until(lambda: count(fleet_dsn, "rejected") == 4 and count(fleet_dsn, "findings")
                   == 1, "messages not stored", 30)
        wait_until(lambda: bool(query(fleet_dsn, "SELECT messages FROM replicas WHERE "
                                      "replica = 'r1' AND messages >= 9")),
                   "heartbeat not written", 15)
    finally:
        gateway.close()
        assert proc.terminate() == 0
    (row,) = query(fleet_dsn, "SELECT device, sensor, status, cause FROM findings")
    assert row == ("th-north-01", "pressure", "fail", "offset_drift")
    (dev,) = query(fleet_dsn, "SELECT device, model, firmware, hardware_rev, installed_at "
                              "FROM devices")
    assert dev == ("th-north-01", "th-200", "2.4.0", "B", "2026-03-01")
    assert count(fleet_dsn, "audit_reports") == 1
    assert query(fleet_dsn, "SELECT site, gateway, state FROM gateways") == [
        ("north", "gw-n", "online")]
    reasons = sorted(r for (r,) in query(fleet_dsn, "SELECT reason FROM rejected"))
    assert reasons == ["bad_finding", "bad_json", "bad_payload", "bad_status"]
    assert query(fleet_dsn, "SELECT payload FROM rejected WHERE reason = 'bad_json'") == [
        (b"{not json",)], "the payload is kept as it came"
    (beat,) = query(fleet_dsn, "SELECT replica, grp, pid, backlog FROM replicas")
    assert beat[:2] == ("r1", "fleet-test") and beat[3] == 0


@pytest.mark.broker
def test_a_gateway_that_drops_off_is_shown_offline_by_its_will(
        mosquitto, fleet_dsn: str, tmp_path: Path) -> None:
    config = fleet_config(tmp_path / "fleet.toml", port=mosquitto.port, dsn=fleet_dsn)
    proc = replica(config, "r1").start()
    status = "fleet/east/audit/gw-e/status"
    gateway = paho.Client(CallbackAPIVersion.VERSION2, client_id="gw-e", protocol=paho.MQTTv5)
    gateway.will_set(status, b"offline", qos=1, retain=True)
    gateway.connect("127.0.0.1", mosquitto.port, keepalive=5)
    gateway.loop_start()
    try:
        gateway.publish(status, b"online", qos=1, retain=True).wait_for_publish(10)
        wait_until(lambda: query(fleet_dsn, "SELECT state FROM gateways") == [("online",)],
                   "online not stored", 20)
        gateway.loop_stop()
        gateway.socket().close()  # the gateway dies: no DISCONNECT, the broker sends its will
        wait_until(lambda: query(fleet_dsn, "SELECT state FROM gateways") == [("offline",)],
                   "the will did not mark the gateway offline", 30)
        shown = cli("fleet", "status", "--dsn", fleet_dsn)
        assert shown.returncode == 0, shown.stderr
        assert "east/gw-e: offline" in shown.stdout
        assert "r1 (" in shown.stdout and "alive" in shown.stdout, "the replica is listed"
    finally:
        assert proc.terminate() == 0


# --------------------------------------------------------------------------- many replicas


@pytest.mark.broker
@pytest.mark.slow
def test_a_replica_stopped_with_sigterm_leaves_nothing_behind(
        mosquitto, fleet_dsn: str, tmp_path: Path) -> None:
    """A replica taken out on purpose leaves the shared subscription before it goes: what
    is published afterwards is stored by the others, with no restart of the one stopped."""
    config = fleet_config(tmp_path / "fleet.toml", port=mosquitto.port, dsn=fleet_dsn)
    first, second = replica(config, "r1").start(), replica(config, "r2").start()
    gateway = Publisher(mosquitto.port)
    end = 1_764_115_200.0
    try:
        gateway.publish_many([finding("north", "gw-n", f"th-{i:03d}", "pressure", end)
                              for i in range(200)])
        assert first.terminate() == 0
        gateway.publish_many([finding("north", "gw-n", f"th-{i:03d}", "pressure", end)
                              for i in range(200, 400)])
        wait_until(lambda: count(fleet_dsn, "findings") == 400,
                   f"stored {count(fleet_dsn, 'findings')} of 400 with r1 stopped", 30)
    finally:
        gateway.close()
        assert second.terminate() == 0
    stopped = [json.loads(line) for line in first.lines if '"stopped"' in line]
    assert stopped and stopped[-1]["messages"] > 0, "r1 had a share before it left"


# --------------------------------------------------------------------------- acceptance

LOAD_PER_GATEWAY = 2500
"""Synthetic findings each gateway publishes besides its site's own messages: the load
under which a replica is killed."""


def replay_site(site: str, directory: Path, references: Path, seed: int) -> Path:
    """The site's recording through ``sensor-auditd replay --store`` as its own gateway: the
    store's outbox then holds everything that gateway would have published upstream."""
    directory.mkdir(parents=True, exist_ok=True)
    recording = fleet_sites.write_site(site, directory / "recording.jsonl", seed)
    store = directory / "store.db"
    config = fleet_sites.config(directory / "config.toml", site, references, store)
    result = cli("replay", str(recording), "--config", str(config), "--out",
                 str(directory / "findings.jsonl"), "--store", str(store))
    assert result.returncode == 0, result.stderr
    return store


def upstream_messages(store: Path) -> list[tuple[str, bytes, bool]]:
    """(topic, payload, retain) of every message in a gateway's outbox, in order."""
    with sqlite3.connect(store) as conn:
        rows = conn.execute("SELECT topic, payload, retain FROM outbox ORDER BY id").fetchall()
    return [(topic, bytes(payload), bool(retain)) for topic, payload, retain in rows]


@pytest.fixture(scope="module")
def eight_sites(tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, list[tuple[str, bytes, bool]]]:
    """Each site of tests/fleet_sites.py replayed as its own gateway (two at a time: about a
    minute): what each gateway would have published upstream, in order."""
    tmp = tmp_path_factory.mktemp("eight")
    references = fleet_sites.write_references(tmp / "references")
    with ThreadPoolExecutor(max_workers=2) as pool:
        stores = list(pool.map(lambda item: replay_site(item[1], tmp / item[1], references,
                                                        seed=item[0]),
                               enumerate(fleet_sites.SITES)))
    return {site: upstream_messages(store) for site, store in zip(fleet_sites.SITES, stores,
                                                                 strict=True)}


def _key(topic: str, payload: bytes) -> tuple[str, str, str, str, float]:
    body = json.loads(payload)
    levels = topic.split("/")
    return (levels[1], levels[3], body["device"], body["sensor"] or "",
            round(from_iso(body["window"]["end"]) or 0.0, 3))


@pytest.mark.broker
@pytest.mark.slow
def test_eight_gateways_two_replicas_one_killed_midway_nothing_lost_nothing_twice(
        mosquitto, fleet_dsn: str, tmp_path: Path,
        eight_sites: dict[str, list[tuple[str, bytes, bool]]]) -> None:
    config = fleet_config(tmp_path / "fleet.toml", port=mosquitto.port, dsn=fleet_dsn)
    replicas = {name: replica(config, name).start() for name in ("r1", "r2")}
    plan: dict[str, list[tuple[str, bytes, bool]]] = {}
    for index, (site, messages) in enumerate(sorted(eight_sites.items())):
        gw = f"gw-{site}"
        load = [(*finding(site, gw, f"load-{i % 50:02d}", "pressure",
                          1_700_000_000.0 + 60 * i), False)
                for i in range(LOAD_PER_GATEWAY)]
        # the site's own messages spread through the load, a status first, one bad message
        mixed: list[tuple[str, bytes, bool]] = [(f"fleet/{site}/audit/{gw}/status",
                                                 b"online", True)]
        step = max(1, len(load) // max(1, len(messages)))
        for i, message in enumerate(messages):
            mixed.extend(load[i * step:(i + 1) * step])
            mixed.append(message)
        mixed.extend(load[len(messages) * step:])
        mixed.insert(len(mixed) // 2, (f"fleet/{site}/audit/{gw}/report",
                                       f"not a report {index}".encode(), False))
        plan[site] = mixed
    findings = {_key(t, p) for m in plan.values() for t, p, _ in m if "/finding/" in t}
    reports = sum(1 for m in plan.values() for t, p, _ in m
                  if t.endswith("/report") and p.startswith(b"{"))
    total = sum(len(m) for m in plan.values())

    def publish(site: str) -> None:
        client = Publisher(mosquitto.port, client_id=f"gateway-{site}")
        try:
            infos = [client.client.publish(topic, payload, qos=1, retain=retain)
                     for topic, payload, retain in plan[site]]
            for info in infos:  # every one confirmed by the broker (PUBACK)
                info.wait_for_publish(timeout=120)
        finally:
            client.close()

    publishers = [threading.Thread(target=publish, args=(site,)) for site in plan]
    started = time.monotonic()
    for thread in publishers:
        thread.start()
    try:
        wait_until(lambda: count(fleet_dsn, "findings") >= len(findings) // 3,
                   "no progress before the kill", 120)
        at_kill = count(fleet_dsn, "findings")
        replicas["r1"].kill()  # SIGKILL, mid-batch under load
        assert at_kill < len(findings) * 0.9, "the kill came too late to prove anything"
        time.sleep(2.0)  # systemd's RestartSec
        replicas["r1"] = replica(config, "r1").start()
        for thread in publishers:
            thread.join(180)
        wait_until(lambda: count(fleet_dsn, "findings") >= len(findings),
                   f"findings stored: {count(fleet_dsn, 'findings')} of {len(findings)}", 180)
        wait_until(lambda: count(fleet_dsn, "audit_reports") >= reports
                   and count(fleet_dsn, "rejected") >= 8, "reports or rejections missing", 60)
        elapsed = time.monotonic() - started
        time.sleep(2.0)  # anything late (a redelivery) would land now
    finally:
        for proc in replicas.values():
            if proc.alive:
                assert proc.terminate() == 0
    stored = {(site, gw, device, sensor, round(end, 3)) for site, gw, device, sensor, end
              in query(fleet_dsn, "SELECT site, gateway, device, sensor, window_end "
                                  "FROM findings")}
    assert count(fleet_dsn, "findings") == len(findings), "each published finding once"
    assert stored == findings
    assert count(fleet_dsn, "audit_reports") == reports
    assert count(fleet_dsn, "rejected") == 8
    assert sorted(query(fleet_dsn, "SELECT site, gateway, state FROM gateways")) == [
        (site, f"gw-{site}", "online") for site in sorted(plan)]
    devices = {(site, device): (firmware, causes) for site, device, firmware, causes in query(
        fleet_dsn, "SELECT site, device, firmware, causes FROM devices")}
    names = {site: fleet_sites.devices(site) for site in plan}
    assert set(devices) == {(site, d) for site in plan for d in [*names[site], f"ref-{site}"]}, (
        "every device is known, failing or not")
    for site in plan:
        firmware, causes = devices[(site, fleet_sites.regressed(site))]
        assert firmware == "2.4.0" and "offset_drift" in causes
        assert devices[(site, names[site][1])][0] == "2.3.5"
        for device in names[site][2:]:
            assert devices[(site, device)][0] == "2.3.1"
            if site != fleet_sites.DRIFTING_SITE:
                assert devices[(site, device)][1] == []

    # The fleet's view of it: one cohort, the release, across all eight sites.
    out = tmp_path / "report.json"
    result = cli("fleet", "report", "--dsn", fleet_dsn, "--json", str(out),
                 "--profiles", str(REPO / "device_profiles"))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    (cohort,) = report["cohorts"]
    assert (cohort["model"], cohort["firmware"]) == ("th-200", "2.4.0")
    assert sorted(cohort["members"]) == sorted(fleet_sites.regressed(s) for s in plan)
    assert sorted(cohort["sites"]) == sorted(plan)
    drifting = {(r["site"], r["reference"]) for r in report["references"]
                if r["state"] == "drifting"}
    assert drifting == {(fleet_sites.DRIFTING_SITE, f"ref-{fleet_sites.DRIFTING_SITE}")}
    committed = sum(json.loads(line)["messages"] for proc in replicas.values()
                    for line in proc.lines if '"stopped"' in line)
    print(f"\n{total} upstream messages from 8 gateways in {elapsed:.1f} s through 2 replicas, "
          f"r1 SIGKILLed at {at_kill}/{len(findings)} findings stored and restarted; "
          f"{len(findings)} findings, {reports} reports, 8 rejected stored once each; "
          f"r2 (whole run) and the restarted r1 committed {committed} messages, redeliveries "
          f"of what r1 held when killed included")
