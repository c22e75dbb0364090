"""``sensor-auditd demo``: the whole job in one command, on a fresh machine.

A broker (a private ``mosquitto`` on a free port in a temporary directory, the ``amqtt``
of the ``[broker]`` extra, or the one named with ``--broker``), the real daemon
(``sensor-auditd run`` as a subprocess, told its configuration in a file like any
install), and a simulated fleet with one fault of every cause (a reference fault and a
firmware regression on a cohort among them), published live on an accelerated clock: a
day and a half of the fleet in about a minute. The daemon audits every few seconds; a
progress line shows the fleet's clock and the latest audit. At the end the daemon is
stopped, the open alerts are printed as ``sensor-auditd findings`` shows them (the failing
streams when no alert has opened yet), the run is scored against the simulation's truth,
and the HTML calibration report is written.

Ctrl-C at any point stops the publisher, the daemon and the broker (each by its own
process id) and exits with status 130.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from auditd import PACKAGE_DATA
from auditd.adapters.config.catalog import load_catalog
from auditd.adapters.config.daemon import load_daemon_config
from auditd.adapters.store import Store
from auditd.errors import IOFailure, UsageError
from auditd.model import Finding, iso
from auditd.sim import evaluate, simulate
from auditd.sim.live import parse_broker, publish
from auditd.sim.scenario import default_scenario
from auditd.views import alerts as alert_view
from auditd.views import report

MOSQUITTO_HINT = ("no MQTT broker: install mosquitto (Debian/Ubuntu: sudo apt-get install "
                  "mosquitto; macOS: brew install mosquitto), or the pure-Python fallback "
                  "(pip install 'sensor-auditd[broker]'), or point the demo at a broker with "
                  "--broker HOST:PORT")


SETTLE_AUDITS = 2
"""Audits after the last message is sent: the daemon may still be committing the tail of
the backlog when the first one runs."""


class DemoError(IOFailure):
    """The demo cannot run here (no broker, the daemon did not start)."""


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def private_mosquitto(directory: Path) -> Iterator[tuple[str, int]]:
    """A mosquitto of our own: a free port on 127.0.0.1, files in ``directory``, stopped
    by its pid (never a broker someone else runs)."""
    binary = mosquitto_binary()
    if binary is None:
        raise DemoError(MOSQUITTO_HINT)
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(("user root\n" if os.geteuid() == 0 else "")
                    + f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    f"persistence true\npersistence_location {directory}/\n"
                    "max_queued_messages 0\n"
                    f"log_dest file {directory}/mosquitto.log\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not _listening("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = directory / "mosquitto.log"
                raise DemoError(f"mosquitto did not start: "
                                f"{log.read_text()[-500:] if log.exists() else 'no log'}")
            time.sleep(0.05)
        yield "127.0.0.1", port
    finally:
        _stop(proc)


def amqtt_available() -> bool:
    return importlib.util.find_spec("amqtt") is not None


@contextmanager
def private_amqtt(directory: Path) -> Iterator[tuple[str, int]]:
    """The pure-Python fallback (the ``[broker]`` extra): amqtt, MQTT 3.1.1 only, in its
    own process on a free port, stopped by its pid."""
    port = free_port()
    conf = directory / "amqtt.yaml"
    conf.write_text("listeners:\n  default:\n    type: tcp\n"
                    f"    bind: 127.0.0.1:{port}\n"
                    "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                    "    allow_anonymous: true\n")
    log = directory / "amqtt.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from amqtt.scripts.broker_script import main; main()",
             "-c", str(conf)], stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not _listening("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DemoError(f"amqtt did not start: {log.read_text()[-500:]}")
            time.sleep(0.1)
        yield "127.0.0.1", port
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def locate(name: str, given: Path | None) -> Path:
    """``device_profiles``/``references``: as given, else in the working directory, else
    beside the package (an editable install of a checkout)."""
    if given is not None:
        return given.resolve()
    for base in (Path.cwd(), PACKAGE_DATA.parent):
        if (base / name).is_dir():
            return (base / name).resolve()
    raise UsageError(f"no {name}/ directory here or beside the package; run the demo from "
                     f"the sensor-auditd checkout or pass the option", f"--{name.split('_')[-1]}")


def daemon_config(path: Path, *, host: str, port: int, store: Path, profiles: Path,
                  references: Path, audit_every_s: float, protocol: str = "5") -> None:
    path.write_text(
        'site = "north"\ngateway = "demo"\n'
        f"profiles_dir = {json.dumps(str(profiles))}\n"
        f"references_dir = {json.dumps(str(references))}\n"
        f'[broker]\nhost = "{host}"\nport = {port}\nprotocol = "{protocol}"\n'
        f'client_id = "sensor-auditd-demo-{os.getpid()}"\n'
        f'[audit]\ninterval = "{audit_every_s:g}s"\nfirst_run_delay = "3s"\n'
        "# The fleet's history arrives compressed (a day and a half within a minute): on\n"
        "# the wall clock every device would look silent while its backlog flushes.\n"
        'silent_min = "3d"\n'
        f"[store]\npath = {json.dumps(str(store))}\n"
        'synchronous = "normal"\n'
        '[log]\nlevel = "info"\nformat = "json"\n')


@dataclass
class Watch:
    """What the progress line shows: the latest audit report the daemon published."""

    report: dict[str, Any] | None = None
    reports: int = 0
    last_at: float = 0.0


def watch_reports(host: str, port: int, watch: Watch) -> Callable[[], None]:
    """Subscribe to the daemon's report topic (as an upstream consumer would)."""
    client = paho.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"sensor-auditd-demo-watch-{os.getpid()}")

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        try:
            watch.report = json.loads(msg.payload)
            watch.reports += 1
            watch.last_at = time.time()
        except ValueError:
            pass

    def on_connect(c: Any, *_: Any) -> None:
        c.subscribe("fleet/+/audit/+/report", qos=1)

    client.on_message = on_message
    client.on_connect = on_connect
    client.connect(host, port)
    client.loop_start()

    def stop() -> None:
        client.loop_stop()
        client.disconnect()

    return stop


def wait_ready(sock: socket.socket, proc: subprocess.Popen[Any], log: Path,
               timeout: float = 60.0) -> None:
    """Until the daemon has said READY=1 (store open) and that the broker has granted its
    subscriptions (``X_BROKER=connected``), so that the fleet published next is received."""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.5)
    ready = connected = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"the daemon exited with status {proc.returncode}:\n"
                            f"{log.read_text()[-1500:] if log.exists() else ''}")
        try:
            state = sock.recv(4096)
        except TimeoutError:
            continue
        ready = ready or b"READY=1" in state
        if b"X_BROKER=" in state:
            connected = b"X_BROKER=connected" in state
        if ready and connected:
            return
    raise DemoError(f"the daemon was not ready within {timeout:.0f} s; see {log}")


def progress_line(sent: int, total: int, fleet_t: float, watch: Watch) -> str:
    report = watch.report or {}
    audit = (f"audits {watch.reports}: {report.get('pass', 0)} pass, "
             f"{report.get('fail', 0)} fail, {report.get('insufficient_data', 0)} no data"
             if watch.report else "waiting for the first audit")
    bar = int(24 * sent / max(total, 1))
    return (f"\r[{'#' * bar}{'.' * (24 - bar)}] fleet clock {(iso(fleet_t) or '')[:16]}Z  "
            f"{sent:,}/{total:,} messages  {audit}   ")


def run_demo(*, out_dir: Path, broker: str | None, seconds: float, days: float,
             profiles: Path | None, references: Path | None, echo: Callable[[str], None],
             ) -> int:
    """The demo; returns the exit status (0, or 130 after Ctrl-C)."""
    profiles_dir, references_dir = locate("device_profiles", profiles), locate("references",
                                                                             references)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("audit.db*"):
        stale.unlink()
    stop = threading.Event()
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="sensor-auditd-demo-") as tmp_name:
        tmp = Path(tmp_name)
        with _broker(broker, tmp) as (host, port, protocol, kind):
            echo(f"broker: {host}:{port} ({kind})")
            config = out_dir / "demo.toml"
            daemon_config(config, host=host, port=port, store=(out_dir / "audit.db").resolve(),
                          profiles=profiles_dir, references=references_dir,
                          audit_every_s=max(5.0, seconds / 8), protocol=protocol)
            cfg = load_daemon_config(config)
            catalog = load_catalog(cfg)
            scenario = default_scenario(days=days)
            sim = simulate.generate(scenario, catalog)
            echo(f"fleet: site north, {len(sim.truth['devices'])} instruments, "
                 f"{len(sim.truth['faults'])} injected faults, {len(sim.messages):,} messages "
                 f"({days:g} days in about {seconds:.0f} s)")
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify_path = tmp / "notify.sock"
            notify.bind(str(notify_path))
            daemon_log = out_dir / "daemon.log"
            env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
            with daemon_log.open("w") as log_handle:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "auditd.cli", "run", "--config", str(config)],
                    stdout=log_handle, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True)
                stop_watch: Callable[[], None] | None = None
                try:
                    wait_ready(notify, proc, daemon_log)
                    echo(f"daemon: ready (pid {proc.pid}, log {daemon_log})")
                    watch = Watch()
                    stop_watch = watch_reports(host, port, watch)
                    truth_path = out_dir / "truth.json"
                    speed = (sim.messages[-1].received_at - sim.messages[0].received_at) \
                        / seconds

                    tty = sys.stdout.isatty()
                    shown = [0.0]

                    def show(sent: int, total: int, fleet_t: float) -> None:
                        now = time.monotonic()
                        if now - shown[0] < (0.25 if tty else 10.0) and sent < total:
                            return
                        shown[0] = now
                        line = progress_line(sent, total, fleet_t, watch)
                        sys.stdout.write(line if tty else line.lstrip("\r").rstrip() + "\n")
                        sys.stdout.flush()

                    publish(sim, f"{host}:{port}", speed, truth_path, cfg, progress=show,
                            stop=stop)
                    done, before = time.time(), watch.reports
                    echo("\nfleet: all messages sent; waiting for the daemon's next audits")
                    every = max(5.0, seconds / 8)
                    # The loop ends as soon as the audits are in; the deadline is only for
                    # a daemon that stopped auditing. A loaded machine (CI beside other
                    # work) takes tens of seconds an audit, so it is generous.
                    deadline = done + 6 * every + 300
                    while watch.reports - before < SETTLE_AUDITS and time.time() < deadline:
                        if proc.poll() is not None:
                            raise DemoError(f"the daemon stopped: see {daemon_log}")
                        time.sleep(0.2)
                except KeyboardInterrupt:
                    interrupted = True
                    stop.set()
                    echo("\ninterrupted: stopping the daemon and the broker")
                finally:
                    if stop_watch is not None:
                        stop_watch()
                    _stop(proc, timeout=40)
                    notify.close()
    if interrupted:
        return 130
    with Store(out_dir / "audit.db") as store:
        latest = [s.finding for s in store.findings.latest(kind="calibration")]
        history = [s.finding for s in store.findings.since(0.0)]
        data = report.collect(store, catalog, source=str(out_dir / "audit.db"))
        alerts = open_alerts(store)
    echo(alerts if alerts is not None else failing_table(latest))
    scores = evaluate.score(json.loads((out_dir / "truth.json").read_text()),
                            history)
    echo(f"scored against the simulation's truth: {scores['detected']}/{scores['faults']} "
         f"injected faults flagged, {scores['top1']} with the right cause first, "
         f"{scores['false_alarm_streams']} false alarms on {scores['healthy_streams']} "
         f"healthy streams (this one scenario)")
    from auditd.sim.matrix import recorded_rate  # the matrix's machinery: only here

    rate = recorded_rate()
    if rate is not None:
        echo(rate.sentence())
    try:
        report.write(data, html_path=out_dir / "report.html", json_path=out_dir /
                     "report.json")
        echo(f"calibration report: {(out_dir / 'report.html').resolve()}")
    except report.ReportError as exc:
        report.write(data, json_path=out_dir / "report.json")
        echo(f"{exc}\ncalibration report (JSON): {(out_dir / 'report.json').resolve()}")
    return 0


@contextmanager
def _broker(broker: str | None, tmp: Path) -> Iterator[tuple[str, int, str, str]]:
    """(host, port, MQTT protocol for the daemon, what it is): the named broker, else a
    private mosquitto, else a private amqtt (3.1.1 only), else a clear error."""
    if broker:
        host, port = parse_broker(broker)
        if not _listening(host, port, timeout=2.0):
            raise DemoError(f"no broker answers at {host}:{port}")
        yield host, port, "5", "the broker you named"
        return
    if mosquitto_binary() is not None:
        with private_mosquitto(tmp) as (host, port):
            yield host, port, "5", "a private mosquitto"
        return
    if amqtt_available():
        with private_amqtt(tmp) as (host, port):
            yield host, port, "3.1.1", "a private amqtt, the pure-Python fallback"
        return
    raise DemoError(MOSQUITTO_HINT)


def open_alerts(store: Store) -> str | None:
    """The open alerts as ``sensor-auditd findings`` shows them; None when none opened
    (a fault must fail ``open_after`` audits in a row first)."""
    now = time.time()
    alerts = store.alerts.select()
    if not alerts:
        return None
    return "\nopen alerts:\n" + alert_view.table(alerts, store.alerts.silences(active_at=now), now,
                                                 store.tickets.counts())


def failing_table(findings: list[Finding]) -> str:
    """The streams whose current verdict fails (or lacks data for a reason), worst first."""
    order = {"critical": 0, "major": 1, "minor": 2, "none": 3}
    rows = [f for f in findings if evaluate.flagged(f)]
    rows.sort(key=lambda f: (order.get(f.severity, 4), f.device, f.sensor or ""))
    if not rows:
        return "\nno failing streams"
    lines = [f"\n{len(rows)} failing streams (current verdicts):",
             f"{'severity':<9} {'device':<16} {'sensor':<12} {'cause':<20} {'since':<17} "
             f"action"]
    for f in rows:
        cause = f.causes[0].cause if f.causes else "-"
        since = (iso(f.onset) or "-")[:16]
        action = f.action[:60]
        lines.append(f"{f.severity:<9} {f.device:<16} "
                     f"{f.sensor or '-':<12} {cause:<20} {since:<17} {action}")
    return "\n".join(lines)
