"""Ingest throughput of ``sensor-auditd run`` on one core, against a floor measured in the same run.

Usage: ``python bench/ingest.py [--messages N] [--repeat R] [--sync full,normal]
[--py-spy OUT.svg|OUT.txt] [--receive-maximum M] [--batch-max B]``.

A benchmark, not a test: it prints a table and writes ``bench/results-ingest.json``; it
asserts nothing about speed. ``bench/README.md`` explains the method and the figures.

Why it is built this way:

* **Consumer throughput, not publisher speed.** Each consumer's persistent session is
  created first (its client id, ``clean_start=False``, a session expiry, QoS 1
  subscriptions), then it is disconnected and all N messages are published, so the broker
  holds them queued. Only then is the consumer started: it drains a full queue as fast as
  it can, and nothing upstream of the broker can slow it down.
* **One core for the consumer.** The measured process is pinned to core 1; mosquitto, the
  publisher and this process (which polls the database) are pinned to core 0. A gateway's
  daemon gets about one core, and pinning keeps the broker from stealing the consumer's.
* **An honest floor from the same run.** ``bench/floor_consumer.py`` is the least a
  commit-then-ack paho consumer can do, with the daemon's broker settings and SQLite
  durability, on the same broker, disk and core. Absolute numbers vary between machines
  and runs; the daemon/floor ratio much less so.
* **Timed from first commit to last.** The consumer's SQLite file is polled every ~10 ms:
  t0 is the first poll that sees a committed reading, t1 the first that sees all 3N. Start-up
  (imports, catalog, connect) is excluded, and so is the batch that was already committed
  at t0: rate = (N - messages at t0) / (t1 - t0).
* **A fresh broker per measurement**, so every consumer sees the same empty broker with
  exactly its own N messages queued.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from auditd.adapters.config.daemon import DaemonConfig, load_daemon_config  # noqa: E402
from auditd.adapters.store.database import wal_pragmas  # noqa: E402
from tests.brokers import Mosquitto  # noqa: E402

SITE = "north"
MODEL = "th-200"
READINGS_PER_MESSAGE = 3
CONSUMER_CORE = 1
SERVICE_CORE = 0
POLL_S = 0.01
STALL_S = 60.0
"""Give up on a consumer that commits nothing new for this long (it is stuck or rejecting)."""
PUBLISH_WINDOW = 30_000
"""Unconfirmed publishes at most: fewer than the 65,535 message ids MQTT has."""
PUBLISH_CHUNK = 1_000
"""Packets written with one sendall."""
FOREIGN_WARN = 0.05
"""Warn when more than this share of the consumer's core went to anything but the consumer."""
RESULTS = BENCH / "results-ingest.json"

Message = tuple[str, bytes]
Popen = subprocess.Popen[bytes]


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    """What the figures depend on, so that a number is never quoted without its machine."""
    models = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    mhz = re.findall(r"^cpu MHz\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": models[0].strip() if models else platform.processor(),
        "cpu_mhz": float(mhz[0]) if mhz else None,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sqlite": sqlite3.sqlite_version,
        "paho_mqtt": paho.__version__ if hasattr(paho, "__version__") else _dist("paho-mqtt"),
        "mosquitto": (mosq.stdout.splitlines() or ["?"])[0].strip(),
        "filesystem": _filesystem(Path(tempfile.gettempdir())),
    }


def _dist(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _filesystem(path: Path) -> str:
    """The file system type of ``path``: fsync cost (synchronous=FULL) depends on it."""
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], f"{parts[2]} on {parts[0]}"
    return kind


# --------------------------------------------------------------------------- workload


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def workload(n: int, devices: int) -> tuple[list[Message], list[Message]]:
    """Retained meta per device, then N telemetry messages round-robin over the devices.

    Timestamps are 100 ms apart and end a minute ago: distinct per message (so no reading
    is a duplicate), never in the future, and well inside the daemon's age limit. Every
    value is in range and in the canonical unit or one it names, so nothing is rejected.
    """
    names = [f"th-{SITE}-{i:02d}" for i in range(devices)]
    start = time.time() - 60.0 - n * 0.1
    metas = [(f"fleet/{SITE}/{name}/meta",
              json.dumps({"ts": rfc3339(start), "model": MODEL}).encode()) for name in names]
    telemetry = []
    for i in range(n):
        body = {
            "ts": rfc3339(start + i * 0.1),
            "seq": i,
            "readings": {
                "temperature": round(15.0 + (i % 200) * 0.05, 2),
                "humidity": {"value": round(40.0 + (i % 300) * 0.1, 1), "unit": "percent"},
                "pressure": {"value": round(1000.0 + (i % 250) * 0.1, 1), "unit": "hPa"},
            },
        }
        telemetry.append((f"fleet/{SITE}/{names[i % devices]}/telemetry",
                          json.dumps(body).encode()))
    return metas, telemetry


# --------------------------------------------------------------------------- broker side


def create_session(port: int, client_id: str, filters: list[str], expiry_s: float) -> None:
    """Leave a persistent session with QoS 1 subscriptions behind, then disconnect.

    The filters are the daemon's own (telemetry, meta and event), so the retained meta
    published next is queued *ahead of* the telemetry: the daemon learns each device's
    model from the first messages it receives, as it would after a restart.
    """
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=paho.MQTTv5)
    client.on_subscribe = lambda *a: done.set()
    client.on_connect = lambda c, *a: c.subscribe([(f, 1) for f in filters])
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = int(expiry_s)
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    try:
        if not done.wait(10):
            raise RuntimeError(f"no SUBACK for session {client_id}")
    finally:
        client.disconnect()
        client.loop_stop()


def publish(port: int, metas: list[Message], telemetry: list[Message]) -> float:
    """Publish at QoS 1 and wait for every PUBACK, so all of it is queued; returns seconds.

    Prebuilt MQTT 3.1.1 packets written straight to a socket, not paho: paho's per-message
    bookkeeping (~5,000 msg/s here) made queueing 100,000 messages take longer than
    consuming them. To the broker it is the same thing: QoS 1 publishes, each PUBACKed, the
    retained meta first. Message ids cycle through 1..65535 with fewer than that unconfirmed,
    and mosquitto confirms QoS 1 in order, so no id is reused while still pending.
    """
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        connect = b"\x00\x04MQTT\x04\x02\x00\x3c" + _mqtt_string(b"bench-publisher")
        sock.sendall(b"\x10" + _varint(len(connect)) + connect)
        connack = _read_exactly(sock, 4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"publisher: CONNACK refused: {connack!r}")
        items = [(t, p, True) for t, p in metas] + [(t, p, False) for t, p in telemetry]
        acks = _Acks(sock)
        sent = 0
        for first in range(0, len(items), PUBLISH_CHUNK):
            if sent > PUBLISH_WINDOW:
                acks.wait_beyond(sent - PUBLISH_WINDOW)
            chunk = items[first:first + PUBLISH_CHUNK]
            sock.sendall(b"".join(
                _publish_packet(topic, payload, retain, (sent + i) % 65535 + 1)
                for i, (topic, payload, retain) in enumerate(chunk)))
            sent += len(chunk)
        acks.wait_beyond(sent - 1)
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    return time.perf_counter() - started


def _varint(n: int) -> bytes:
    """MQTT's variable-length integer (remaining length)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _publish_packet(topic: str, payload: bytes, retain: bool, mid: int) -> bytes:
    body = _mqtt_string(topic.encode()) + mid.to_bytes(2, "big") + payload
    return bytes([0x32 | retain]) + _varint(len(body)) + body


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            raise RuntimeError("publisher: the broker closed the connection")
        data += more
    return data


class _Acks(threading.Thread):
    """Counts the broker's PUBACKs (4 bytes each) while the main thread keeps writing."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(name="bench-pubacks", daemon=True)
        self.sock = sock
        self.count = 0
        self.error = ""
        self.changed = threading.Condition()
        self.start()

    def run(self) -> None:
        buffer = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buffer += data
                whole = len(buffer) // 4 * 4
                if any(buffer[i] != 0x40 for i in range(0, whole, 4)):
                    self.error = "a packet other than PUBACK arrived"
                    break
                with self.changed:
                    self.count += whole // 4
                    self.changed.notify_all()
                buffer = buffer[whole:]
        except OSError as exc:
            self.error = str(exc)
        with self.changed:
            self.changed.notify_all()

    def wait_beyond(self, n: int) -> None:
        """Block until more than ``n`` PUBACKs arrived; fail if the connection ended first."""
        with self.changed:
            while self.count <= n and self.is_alive():
                self.changed.wait(1.0)
        if self.count <= n:
            raise RuntimeError(f"publisher: {self.count} PUBACKs, expected {n + 1} "
                               f"({self.error or 'connection closed'})")


@contextmanager
def broker(workdir: Path) -> Iterator[Mosquitto]:
    """A private mosquitto (tests/brokers.py) on a free port, pinned to the service core."""
    mosq = Mosquitto(workdir).start()
    try:
        assert mosq.pid is not None
        pin(mosq.pid, SERVICE_CORE)
        yield mosq
    finally:
        mosq.stop()


# --------------------------------------------------------------------------- processes


def pin(pid: int, core: int) -> None:
    if (os.cpu_count() or 1) > core:
        os.sched_setaffinity(pid, {core})


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_times(core: int) -> tuple[float, float]:
    """(busy, steal) seconds of one CPU so far, from /proc/stat.

    Busy on the consumer's core minus the consumer's own CPU time is what something else
    (another tenant's tests, kernel writeback, interrupts) took from it during the window:
    the figures are only comparable when that stays small.
    """
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (
                int(x) for x in line.split()[1:9])
            tick = os.sysconf("SC_CLK_TCK")
            return (user + nice + system + irq + softirq + steal) / tick, steal / tick
    return 0.0, 0.0


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the resident set's high-water mark since the process started."""
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


def rss_breakdown_mib(pid: int) -> dict[str, float]:
    """Resident memory now, split: anonymous (heaps) vs file-backed (code, mapped libraries).

    Peak RSS moved between ~60 and ~90 MiB from run to run on the same code; the split says
    whether it was the heap (allocator, data) or the mapped libraries.
    """
    status = Path(f"/proc/{pid}/status").read_text()
    out = {}
    for key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
        match = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
        out[key] = round(int(match.group(1)) / 1024, 1) if match else float("nan")
    return out


def scipy_mapped(pid: int) -> list[str]:
    """scipy's shared objects mapped into ``pid``, relative to site-packages.

    Read from /proc/PID/maps rather than asked of the process, so the daemon needs no hook.
    numpy's wheels map ``numpy.libs/libscipy_openblas*``: that is numpy's, and not counted.
    """
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        match = _SCIPY_SO.search(line)
        if match:
            found.add(match.group(1))
    return sorted(found)


def scipy_numerics(mapped: list[str]) -> bool:
    """Whether scipy's numerics (a subpackage such as fft or special, or its OpenBLAS) are in.

    ``import scipy`` alone maps only ``_cyutility`` and ``_lib/_ccallback_c``; pint does
    that at import (``pint.compat`` probes ``HAS_SCIPY``). The audit code's scipy.fft and
    scipy.special map much more; that is what ingest must not pay for.
    """
    return any(not name.startswith(_SCIPY_BARE) for name in mapped)


_SCIPY_SO = re.compile(r"/((?:scipy|scipy\.libs)/\S*\.so)$")
_SCIPY_BARE = ("scipy/_cyutility.", "scipy/_lib/_ccallback_c.")


def start_pinned(argv: list[str], log: Path) -> Popen:
    """Start the measured process on the consumer core, from its very first instruction."""
    def on_consumer_core() -> None:
        if (os.cpu_count() or 1) > CONSUMER_CORE:
            os.sched_setaffinity(0, {CONSUMER_CORE})

    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=on_consumer_core, env=dict(os.environ))


def stop(proc: Popen, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


# --------------------------------------------------------------------------- measurement


@dataclass
class Result:
    consumer: str
    synchronous: str
    messages: int
    msg_per_s: float = 0.0
    readings_per_s: float = 0.0
    window_s: float = 0.0
    messages_at_t0: int = 0
    consumer_cpu_util: float = 0.0
    """CPU seconds / wall seconds over the window: ~1.0 means the consumer was CPU-bound."""
    cpu_us_per_msg: float = 0.0
    """The consumer's CPU time (all threads, user + system) per message in the window."""
    broker_cpu_util: float = 0.0
    foreign_util: float = 0.0
    """Busy share of the consumer's core that was not the consumer (others, kernel, steal)."""
    steal_util: float = 0.0
    peak_rss_mib: float = 0.0
    rss_at_end_mib: dict[str, float] = field(default_factory=dict)
    scipy_imported: bool = False
    """Any scipy extension mapped (``import scipy`` alone does it; pint's import does it)."""
    scipy_numerics: bool = False
    """scipy beyond its bare package (fft, special, OpenBLAS...): the audit's, not ingest's."""
    scipy_mapped: list[str] = field(default_factory=list)
    publish_s: float = 0.0
    readings_rejected: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def open_poller(db: Path, consumer: Popen) -> sqlite3.Connection:
    """A read connection, once the consumer has created its file and schema."""
    deadline = time.monotonic() + STALL_S
    while time.monotonic() < deadline:
        if consumer.poll() is not None:
            raise RuntimeError(f"consumer exited with {consumer.returncode} before writing")
        if db.exists():
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
            try:
                conn.execute("SELECT 1 FROM sqlite_master").fetchone()
                return conn
            except sqlite3.Error:
                conn.close()
        time.sleep(POLL_S)
    raise RuntimeError(f"{db} did not appear within {STALL_S} s")


def count_readings(conn: sqlite3.Connection, sql: str) -> int:
    try:
        row = conn.execute(sql).fetchone()
    except sqlite3.OperationalError:  # schema not created yet, or a busy moment
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def measure(result: Result, consumer: Popen, db: Path, sql: str, broker_pid: int,
            on_window: Callable[[int], None] | None = None) -> None:
    """Poll ``sql`` (committed readings) until all 3N are in; fill in ``result``."""
    target = result.messages * READINGS_PER_MESSAGE
    conn = open_poller(db, consumer)
    try:
        t0 = r0 = 0.0
        cpu0 = bcpu0 = 0.0
        last_change, last = time.monotonic(), -1
        while True:
            count = count_readings(conn, sql)
            now = time.perf_counter()
            if count and not t0:
                t0, r0 = now, count
                cpu0, bcpu0 = cpu_seconds(consumer.pid), cpu_seconds(broker_pid)
                busy0, steal0 = core_times(CONSUMER_CORE)
                if on_window is not None:
                    on_window(consumer.pid)
            if count >= target:
                t1 = now
                cpu1, bcpu1 = cpu_seconds(consumer.pid), cpu_seconds(broker_pid)
                busy1, steal1 = core_times(CONSUMER_CORE)
                break
            if count != last:
                last, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                raise RuntimeError(f"{result.consumer}: stuck at {count}/{target} readings")
            if consumer.poll() is not None:
                raise RuntimeError(f"{result.consumer} exited with {consumer.returncode}")
            time.sleep(POLL_S)
    finally:
        conn.close()
    window = t1 - t0
    result.messages_at_t0 = int(r0) // READINGS_PER_MESSAGE
    result.window_s = round(window, 3)
    result.msg_per_s = round((result.messages - result.messages_at_t0) / window, 1)
    result.readings_per_s = round(result.msg_per_s * READINGS_PER_MESSAGE, 1)
    result.consumer_cpu_util = round((cpu1 - cpu0) / window, 3)
    result.cpu_us_per_msg = round((cpu1 - cpu0) / (result.messages - result.messages_at_t0) * 1e6,
                                  1)
    result.broker_cpu_util = round((bcpu1 - bcpu0) / window, 3)
    result.foreign_util = round(max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / window, 3)
    result.steal_util = round((steal1 - steal0) / window, 3)
    result.peak_rss_mib = round(peak_rss_mib(consumer.pid), 1)
    result.rss_at_end_mib = rss_breakdown_mib(consumer.pid)
    result.scipy_mapped = scipy_mapped(consumer.pid)
    result.scipy_imported = bool(result.scipy_mapped)
    result.scipy_numerics = scipy_numerics(result.scipy_mapped)


@dataclass(frozen=True)
class Tuning:
    """Overrides of the daemon's defaults, to explore them; None keeps the default.

    Written into the daemon's config file; the floor reads its settings from that same
    file, so both always run with the same window, batch bound and durability.
    """

    receive_maximum: int | None = None
    batch_max: int | None = None
    wal_limit: int | None = None


def daemon_config(path: Path, *, port: int, store: Path, client_id: str, synchronous: str,
                  tuning: Tuning = Tuning()) -> Path:
    """Like tests/daemon_proc.py's write_config, with quiet logs and no audit in sight.

    Log level ``warning`` in JSON so that logging does not dominate; the first audit is a
    day away so no audit runs during the measurement. Everything else is the default
    unless ``tuning`` says otherwise.
    """
    broker_extra = f"receive_maximum = {tuning.receive_maximum}\n" if tuning.receive_maximum else ""
    ingest_extra = f"\n[ingest]\nbatch_max = {tuning.batch_max}\n" if tuning.batch_max else ""
    store_extra = f"wal_limit = {tuning.wal_limit}\n" if tuning.wal_limit else ""
    path.write_text(f"""
site = "{SITE}"
gateway = "gw-bench"
profiles_dir = "{REPO / 'device_profiles'}"
references_dir = "{REPO / 'references'}"

[broker]
host = "127.0.0.1"
port = {port}
client_id = "{client_id}"
{broker_extra}
[store]
path = "{store}"
synchronous = "{synchronous}"
{store_extra}
[audit]
interval = "24h"
first_run_delay = "24h"

[log]
level = "warning"
format = "json"
{ingest_extra}""")
    return path


def run_one(kind: str, synchronous: str, work: Path, metas: list[Message],
            telemetry: list[Message], py_spy: Path | None = None,
            tuning: Tuning = Tuning()) -> Result:
    """One consumer, one fresh broker: session, publish, consume, measure."""
    directory = work / f"{kind}-{synchronous}"
    directory.mkdir()
    result = Result(kind, synchronous, len(telemetry))
    with broker(directory / "broker") as mosq:
        config = daemon_config(directory / "bench-config.toml", port=mosq.port,
                               store=directory / "state" / "audit.db",
                               client_id=f"bench-{kind}-{synchronous}",
                               synchronous=synchronous, tuning=tuning)
        cfg = load_daemon_config(config)
        result.extra["settings"] = settings_of(cfg)
        create_session(mosq.port, cfg.broker.client_id, list(cfg.topics.subscriptions()),
                       cfg.broker.session_expiry_s)
        result.publish_s = round(publish(mosq.port, metas, telemetry), 2)
        if kind == "daemon":
            argv = [_sensor_auditd(), "run", "--config", str(config)]
            db = cfg.store.path
            sql = "SELECT value FROM counters WHERE name = 'readings_inserted'"
        else:
            db = directory / "floor.db"
            argv = floor_argv(cfg, mosq.port, db)
            sql = "SELECT readings FROM progress WHERE id = 1"
        log = directory / f"{kind}.log"
        proc = start_pinned(argv, log)
        spy: Popen | None = None

        def attach_profiler(pid: int) -> None:
            nonlocal spy
            if py_spy is not None:
                spy = subprocess.Popen(
                    ["py-spy", "record", "--pid", str(pid), "--threads", "--rate", "250",
                     "--nonblocking", "--format", _spy_format(py_spy), "-o", str(py_spy)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        try:
            measure(result, proc, Path(db), sql, mosq.pid or 0, attach_profiler)
            if kind == "daemon":
                result.readings_rejected = _rejected(Path(db))
            else:
                result.extra["mean_batch"] = _mean_batch(Path(db))
        except RuntimeError:
            print(log.read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            code = stop(proc)
            if code not in (0, -signal.SIGTERM):
                result.extra["exit_status"] = code
    return result


def settings_of(cfg: DaemonConfig) -> dict[str, Any]:
    """The settings that decide ingest speed, as the daemon will apply them."""
    return {
        "protocol": cfg.broker.protocol,
        "receive_maximum": cfg.broker.receive_maximum,
        "batch_bound": min(cfg.ingest.batch_max, cfg.broker.receive_maximum),
        "batch_max_wait_s": cfg.ingest.batch_max_wait_s,
        "synchronous": cfg.store.synchronous,
        "wal_autocheckpoint_pages": wal_pragmas(cfg.store.wal_limit)[0],
        "wal_limit_bytes": cfg.store.wal_limit,
        "log": f"{cfg.log.level}/{cfg.log.format}",
    }


def _spy_format(path: Path) -> str:
    """``.svg``: a flame graph; ``.txt``: collapsed stacks to grep; ``.json``: speedscope."""
    return {".txt": "raw", ".json": "speedscope"}.get(path.suffix, "flamegraph")


def _sensor_auditd() -> str:
    found = shutil.which("sensor-auditd")
    if found is None:
        raise RuntimeError("sensor-auditd is not installed (pip install -e .)")
    return found


def floor_argv(cfg: DaemonConfig, port: int, db: Path) -> list[str]:
    """The floor gets every setting the daemon would use, read from the same config file."""
    return [
        sys.executable, str(BENCH / "floor_consumer.py"),
        "--port", str(port), "--client-id", cfg.broker.client_id, "--db", str(db),
        "--synchronous", cfg.store.synchronous,
        "--receive-maximum", str(cfg.broker.receive_maximum),
        "--batch-max", str(min(cfg.ingest.batch_max, cfg.broker.receive_maximum)),
        "--batch-max-wait", str(cfg.ingest.batch_max_wait_s),
        "--session-expiry", str(cfg.broker.session_expiry_s),
        # The daemon's write-ahead log settings for its wal_limit (on a volume with less
        # than four times that free it would lower them; the bench's has plenty).
        "--wal-autocheckpoint", str(wal_pragmas(cfg.store.wal_limit)[0]),
        "--journal-size-limit", str(wal_pragmas(cfg.store.wal_limit)[1]),
    ]


def _mean_batch(db: Path) -> float:
    """Messages per commit of the floor: per-commit costs are what batching amortises."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        messages, batches = conn.execute(
            "SELECT messages, batches FROM progress WHERE id = 1").fetchone()
    return round(messages / max(1, batches), 1)


def _rejected(db: Path) -> int:
    """Readings the daemon refused: must be 0, or the workload (not the daemon) is wrong."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT coalesce(sum(value), 0) FROM counters "
                           "WHERE name LIKE 'rejected.%'").fetchone()
    return int(row[0])


# --------------------------------------------------------------------------- report


def summary(results: list[Result]) -> dict[str, dict[str, Any]]:
    """Per synchronous mode: medians over the repeats, and the ratio of each back-to-back pair.

    The ratio is taken pair by pair (floor and daemon measured one after the other in the
    same repeat) and then the median, because this machine's disk and CPU drift between
    minutes more than they do between neighbouring runs.
    """
    measured = [r for r in results if not r.extra.get("profiled")]
    out: dict[str, dict[str, Any]] = {}
    for sync in dict.fromkeys(r.synchronous for r in measured):
        floors = {r.extra["repeat"]: r for r in measured
                  if r.consumer == "floor" and r.synchronous == sync}
        daemons = {r.extra["repeat"]: r for r in measured
                   if r.consumer == "daemon" and r.synchronous == sync}
        pairs = sorted(set(floors) & set(daemons))
        if not pairs:
            continue
        ratios = [daemons[i].msg_per_s / floors[i].msg_per_s for i in pairs]
        ds = list(daemons.values())
        out[sync] = {
            "repeats": len(pairs),
            "floor_msg_per_s": round(_median([f.msg_per_s for f in floors.values()]), 1),
            "daemon_msg_per_s": round(_median([d.msg_per_s for d in ds]), 1),
            "ratio": round(_median(ratios), 3),
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "daemon_readings_per_s": round(_median([d.readings_per_s for d in ds]), 1),
            "floor_msg_per_s_range": _span(f.msg_per_s for f in floors.values()),
            "daemon_msg_per_s_range": _span(d.msg_per_s for d in ds),
            "daemon_cpu_util": round(_median([d.consumer_cpu_util for d in ds]), 3),
            "daemon_cpu_us_per_msg": round(_median([d.cpu_us_per_msg for d in ds]), 1),
            "floor_cpu_us_per_msg": round(_median([f.cpu_us_per_msg for f in floors.values()]),
                                          1),
            "floor_cpu_util": round(_median([f.consumer_cpu_util for f in floors.values()]), 3),
            "broker_cpu_util_max": max(r.broker_cpu_util for r in (*ds, *floors.values())),
            "consumer_core_foreign_util_max": max(r.foreign_util
                                                  for r in (*ds, *floors.values())),
            "daemon_peak_rss_mib_max": max(d.peak_rss_mib for d in ds),
            "floor_peak_rss_mib_max": max(f.peak_rss_mib for f in floors.values()),
            "daemon_scipy_imported": any(d.scipy_imported for d in ds),
            "daemon_scipy_numerics_loaded": any(d.scipy_numerics for d in ds),
            "daemon_readings_rejected": sum(d.readings_rejected or 0 for d in ds),
        }
    return out


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _span(values: Iterable[float]) -> list[float]:
    ordered = sorted(values)
    return [ordered[0], ordered[-1]]


def table(summaries: dict[str, dict[str, Any]]) -> str:
    """The compact table: medians, the pair ratio (min-max), RSS worst case, scipy."""
    lines = [
        f"{'sync':<7}{'floor msg/s':>12}{'daemon msg/s':>13}{'ratio':>7}{' (min-max)':<12}"
        f"{'readings/s':>11}{'CPU us/msg d/f':>16}{'RSS MiB':>8}{'scipy':>7}",
    ]
    for sync, s in summaries.items():
        scipy = ("yes" if s["daemon_scipy_numerics_loaded"]
                 else "bare" if s["daemon_scipy_imported"] else "no")
        lines.append(
            f"{sync:<7}{s['floor_msg_per_s']:>12,.0f}{s['daemon_msg_per_s']:>13,.0f}"
            f"{s['ratio']:>7.2f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f}) "
            f"{s['daemon_readings_per_s']:>11,.0f}"
            f"{s['daemon_cpu_us_per_msg']:>10.0f}/{s['floor_cpu_us_per_msg']:<5.0f}"
            f"{s['daemon_peak_rss_mib_max']:>8.1f}{scipy:>7}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000,
                        help="telemetry messages per consumer run (3 readings each)")
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3,
                        help="floor/daemon pairs per synchronous mode (medians are reported)")
    parser.add_argument("--sync", default="full,normal",
                        help="comma-separated SQLite synchronous modes to measure")
    parser.add_argument("--py-spy", type=Path, default=None,
                        help="afterwards, one more daemon run (first sync mode) recorded with "
                             "py-spy into this file (.svg flame graph, .txt collapsed stacks, "
                             ".json speedscope); it is kept out of the summary")
    parser.add_argument("--receive-maximum", type=int, default=None,
                        help="override the daemon's (and so the floor's) MQTT Receive Maximum")
    parser.add_argument("--batch-max", type=int, default=None,
                        help="override the daemon's (and so the floor's) ingest.batch_max")
    parser.add_argument("--wal-limit", type=int, default=None,
                        help="override the daemon's (and so the floor's) store.wal_limit, bytes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    tuning = Tuning(args.receive_maximum, args.batch_max, args.wal_limit)
    syncs = [s.strip() for s in args.sync.split(",") if s.strip()]
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 cores; the consumer shares its core", file=sys.stderr)
    pin(0, SERVICE_CORE)  # this process, its publisher and mosquitto: core 0
    started = time.perf_counter()
    metas, telemetry = workload(args.messages, args.devices)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="sensor-auditd-bench-") as tmp:
        plan = [(repeat, sync, kind) for repeat in range(args.repeat) for sync in syncs
                # alternate which goes first, so a slow drift does not favour one side
                for kind in (("floor", "daemon") if repeat % 2 == 0 else ("daemon", "floor"))]
        if args.py_spy is not None:
            plan.append((args.repeat, syncs[0], "daemon"))
        for repeat, sync, kind in plan:
            profiled = repeat == args.repeat
            work = Path(tmp) / f"r{repeat}"
            work.mkdir(exist_ok=True)
            result = run_one(kind, sync, work, metas, telemetry,
                             args.py_spy if profiled else None, tuning)
            result.extra["repeat"] = repeat
            if profiled:
                result.extra["profiled"] = str(args.py_spy)
            results.append(result)
            print(f"  #{repeat} {kind:<6} sync={sync:<6} {result.msg_per_s:>9,.0f} msg/s "
                  f"(window {result.window_s:.1f} s, cpu {result.consumer_cpu_util:.2f}, "
                  f"broker {result.broker_cpu_util:.2f}, foreign {result.foreign_util:.2f}, "
                  f"RSS {result.peak_rss_mib:.0f} MiB)"
                  + (" [py-spy]" if profiled else ""), flush=True)
    summaries = summary(results)
    report = {
        "benchmark": "ingest",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "messages": args.messages,
        "readings_per_message": READINGS_PER_MESSAGE,
        "devices": args.devices,
        "repeats": args.repeat,
        "cores": {"consumer": CONSUMER_CORE, "broker_publisher_poller": SERVICE_CORE},
        "tuning": asdict(tuning),
        "settings": {r.synchronous: r.extra["settings"] for r in results},
        "machine": machine(),
        "summary": summaries,
        "runs": [asdict(r) for r in results],
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    print(f"\n{m['nproc']} cores ({m['cpu_model']}), Python {m['python']}, SQLite {m['sqlite']}, "
          f"{m['filesystem']}; N = {args.messages:,} messages x {READINGS_PER_MESSAGE} readings "
          f"over {args.devices} devices; medians of {args.repeat}")
    first = results[0].extra["settings"]
    print(f"receive maximum {first['receive_maximum']}, batch bound {first['batch_bound']}"
          + (f" (tuned: {asdict(tuning)})" if tuning != Tuning() else " (daemon defaults)"))
    print(table(summaries))
    foreign = max((r.foreign_util for r in results), default=0.0)
    if foreign > FOREIGN_WARN:
        print(f"warning: up to {foreign:.0%} of the consumer's core went to something else "
              f"during a window (other processes, kernel writeback, steal): rerun when quiet")
    print(f"\nwritten {args.out} ({report['elapsed_s']} s)")


if __name__ == "__main__":
    main()
