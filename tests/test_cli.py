"""The command line as a user runs it: real subprocesses, real files, exit statuses."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from auditd.adapters.sinks import sdnotify

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample-recording.jsonl"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_check_config_accepts_the_shipped_example_laid_out_as_installed(tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "sensor-auditd"
    etc.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "sensor-auditd.toml", etc / "config.toml")
    shutil.copytree(REPO / "device_profiles", etc / "device_profiles")
    shutil.copytree(REPO / "references", etc / "references")
    result = cli("check-config", "--config", str(etc / "config.toml"))
    assert result.returncode == 0, result.stderr
    assert "th-200" in result.stdout


def test_bad_profile_is_refused_with_file_key_and_problem(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO / "device_profiles", profiles)
    text = (profiles / "th-200.toml").read_text()
    (profiles / "th-200.toml").write_text(text.replace('unit = "hPa"', 'unit = "degC"', 1))
    result = cli("check-config", "--profiles", str(profiles),
                 "--references", str(REPO / "references"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "th-200.toml" in result.stderr
    assert "sensors.pressure.unit" in result.stderr


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("run", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_config_refuses_and_says_how_to_start(tmp_path: Path) -> None:
    """No silent localhost:1883 and /var/lib/sensor-auditd: the daemon names what it needs
    and where to start from, and touches nothing (not even the working directory)."""
    result = cli("run", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.count("\n") == 0
    assert message.startswith("sensor-auditd: error: --config:")
    for how in ("examples/sensor-auditd.toml", "check-config", "systemd/sensor-auditd.service",
                "run --config /etc/sensor-auditd/config.toml", "sensor-auditd demo"):
        assert how in message
    assert list(tmp_path.iterdir()) == []
    assert result.stdout == ""


def _replay(tmp_path: Path, name: str) -> tuple[dict, list[dict], str]:
    out = tmp_path / f"{name}.jsonl"
    summary = tmp_path / f"{name}.json"
    result = cli("replay", str(SAMPLE), "--profiles", str(REPO / "device_profiles"),
                 "--references", str(REPO / "references"), "--out", str(out),
                 "--summary", str(summary))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(summary.read_text())
    text = out.read_text()
    return json.loads(summary.read_text()), [json.loads(line) for line in text.splitlines()], text


def test_replay_of_the_sample_finds_the_injected_offset_and_counts_the_rest(
        tmp_path: Path) -> None:
    summary, findings, _ = _replay(tmp_path, "a")
    assert summary["messages"] == sum(1 for line in SAMPLE.open() if line.strip())
    assert summary["readings_rejected"] == {"json_invalid": 1, "topic_invalid": 1,
                                            "ts_invalid": 1, "unit_incompatible": 1}
    assert summary["readings_out_of_range"] == 1  # kept, flagged and counted
    assert summary["findings"] == len(findings)
    last_audit = max(f["window"]["end"] for f in findings)
    final = {(f["device"], f["sensor"]): f for f in findings if f["window"]["end"] == last_audit}
    faulty = final[("th-north-02", "temperature")]
    assert faulty["status"] == "fail"
    assert faulty["causes"][0]["cause"] == "offset_drift"
    assert faulty["onset"] is not None and faulty["onset"].startswith("2025-11-25T1")
    healthy = [f for key, f in final.items() if key != ("th-north-02", "temperature")]
    assert len(healthy) == 8
    assert all(f["status"] == "pass" for f in healthy), [
        (f["device"], f["sensor"], f["causes"]) for f in healthy if f["status"] != "pass"]


def test_replay_is_identical_run_after_run(tmp_path: Path) -> None:
    _, _, first = _replay(tmp_path, "a")
    _, _, second = _replay(tmp_path, "b")
    assert first == second


def test_sd_notify_reaches_a_listening_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(5)
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert listener.recv(1024) == b"READY=1"
    assert not sdnotify.notify("READY=1", {})
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "20000000"}) == 10.0


def test_a_recording_ending_on_an_audit_tick_is_audited_once_at_that_tick(
        tmp_path: Path) -> None:
    lines = SAMPLE.read_text().splitlines()
    last = max(json.loads(line)["received_at"] for line in lines)
    tick = (int(last) // 3600 + 1) * 3600
    lines.append(json.dumps({"topic": "fleet/north/ref-north/telemetry", "received_at": tick,
                             "payload": {"ts": tick, "readings": {"temperature": 12.0}}}))
    recording = tmp_path / "on-tick.jsonl"
    recording.write_text("\n".join(lines) + "\n")
    out = tmp_path / "findings.jsonl"
    result = cli("replay", str(recording), "--profiles", str(REPO / "device_profiles"),
                 "--references", str(REPO / "references"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    keys = [(f["device"], f["sensor"], f["window"]["end"])
            for f in map(json.loads, out.read_text().splitlines())]
    assert len(keys) == len(set(keys))
    first = min(json.loads(line)["received_at"] for line in lines)
    hourly_ticks = tick // 3600 - int(first) // 3600
    assert json.loads(result.stdout)["audits"] == hourly_ticks  # no extra final audit


def test_unwritable_output_is_a_usage_error_before_any_work(tmp_path: Path) -> None:
    result = cli("replay", str(SAMPLE), "--profiles", str(REPO / "device_profiles"),
                 "--references", str(REPO / "references"),
                 "--out", str(tmp_path / "missing-dir" / "f.jsonl"))
    assert result.returncode == 2
    assert "--out" in result.stderr and "Traceback" not in result.stderr


def test_the_daemon_starts_without_the_calibration_core() -> None:
    """A gateway pays for scipy's statistics only once it audits: ingest-only start-up must
    not import the calibration core's numerics (``auditd.core``'s modules, scipy.stats,
    scipy.signal, scipy.fft), whatever module grows an import. What may load: the cause registry (a
    table the alerting reads) and the core's input values (``series``, ``align`` and its
    ``averaging``: numpy only, which the store needs anyway)."""
    probe = ("import sys, auditd.app.daemon, auditd.cli, auditd.app.replay; "
             "print(sorted(m for m in sys.modules if m in ('scipy.stats', 'scipy.signal', "
             "'scipy.fft') "
             "or (m.startswith('auditd.core.') and m not in ('auditd.core.causes', "
             "'auditd.core.series', 'auditd.core.align', 'auditd.core.averaging'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    # and the first audit does load them: the probe above would pass on a core nobody uses
    # (a verdict's lag search is FFTs; scipy.stats it no longer needs: issue 17)
    audit = ("import sys; from auditd import core; core.evaluate_stream; "
             "print('auditd.core.verdict' in sys.modules and 'scipy.fft' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", audit], capture_output=True, text=True,
                            timeout=60)
    assert loaded.stdout.strip() == "True", loaded.stderr


def _unknown_devices_recording(path: Path) -> None:
    """Four hours of a reference and of two devices no profile applies to: one that never
    says its model, one that announces a model without a profile."""
    t0 = 1764057600
    lines: list[dict] = [
        {"topic": "fleet/north/ref-north/meta", "received_at": t0,
         "payload": {"ts": t0, "model": "ref-station"}},
        {"topic": "fleet/north/vx-north-08/meta", "received_at": t0,
         "payload": {"ts": t0, "model": "vx-8", "firmware": "1.0"}}]
    for i in range(4 * 60):
        ts = t0 + 60 * i
        for device in ("ref-north", "vx-north-08", "vx-north-09"):
            lines.append({"topic": f"fleet/north/{device}/telemetry", "received_at": ts,
                          "payload": {"ts": ts, "readings": {
                              "temperature": {"value": 20.0, "unit": "degC"}}}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_devices_lists_a_device_unknown_to_the_profiles_with_its_alert_and_why(
        tmp_path: Path) -> None:
    _unknown_devices_recording(tmp_path / "rec.jsonl")
    config = tmp_path / "config.toml"
    config.write_text(f'profiles_dir = "{REPO / "device_profiles"}"\n'
                      f'references_dir = "{REPO / "references"}"\n[audit]\ninterval = "1h"\n')
    db = tmp_path / "audit.db"
    replay = cli("replay", str(tmp_path / "rec.jsonl"), "--config", str(config), "--out",
                 str(tmp_path / "f.jsonl"), "--store", str(db))
    assert replay.returncode == 0, replay.stderr
    alerts = cli("findings", "--db", str(db), "--json")
    alerted = {a["device"] for a in json.loads(alerts.stdout)}
    assert {"vx-north-08", "vx-north-09"} <= alerted

    result = cli("devices", "--config", str(config), "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["device"]: r for r in json.loads(result.stdout)}
    never = rows["vx-north-09"]  # nothing but refused telemetry and an alert
    assert never["site"] == "north" and never["open_alerts"] == 1
    assert never["unknown"].startswith("no model: no meta message announced one, and no "
                                       "[models] glob in the config matches it; 240 messages "
                                       "refused as unknown_device_model")
    assert never["last_seen"] == "2025-11-25T11:59:00Z"
    announced = rows["vx-north-08"]
    assert announced["unknown"].startswith("model 'vx-8' has no profile in profiles_dir")
    assert rows["ref-north"]["unknown"] is None

    text = cli("devices", "--config", str(config), "--db", str(db)).stdout
    assert "vx-north-09 (unknown)" in text
    assert "\nunknown to the profiles (their telemetry is refused):\n" in text
    assert f"  vx-north-09: {never['unknown']}" in text
