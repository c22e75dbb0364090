"""Run ``sensor-auditd run`` as a real subprocess against a private broker, for tests.

The daemon is started the way systemd starts it: a config file, JSON logs on stdout.
It is waited for by a log event, never a sleep: ``ready`` (READY=1: the store is open,
whether or not the broker answers) or, by default, ``subscribed`` (the broker has granted
the subscriptions, so a message published now reaches the daemon).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]


def write_config(path: Path, *, port: int, store: Path, site: str = "north",
                 gateway: str = "gw-test", audit_interval: str = "1h",
                 first_run_delay: str = "1h", profiles: Path | None = None,
                 references: Path | None = None, client_id: str | None = None,
                 protocol: str = "5", extra: str = "", keepalive: int = 10,
                 broker_extra: str = "", store_extra: str = "") -> Path:
    client = client_id or f"sensor-auditd-{gateway}"
    path.write_text(f"""
site = "{site}"
gateway = "{gateway}"
profiles_dir = "{profiles or REPO / 'device_profiles'}"
references_dir = "{references or REPO / 'references'}"

[broker]
host = "127.0.0.1"
port = {port}
client_id = "{client}"
protocol = "{protocol}"
keepalive = {keepalive}
reconnect_min_s = 1
reconnect_max_s = 2
{broker_extra}

[store]
path = "{store}"
{store_extra}

[audit]
interval = "{audit_interval}"
first_run_delay = "{first_run_delay}"

[log]
level = "info"
format = "json"
{extra}
""")
    return path


class DaemonProcess:
    def __init__(self, config: Path, command: tuple[str, ...] = ("run",),
                 extra_args: tuple[str, ...] = ()) -> None:
        """``sensor-auditd {command} --config CONFIG {extra_args}``: the daemon by default,
        ``("fleet", "run")`` for a fleet replica."""
        self.config = config
        self.command = command
        self.extra_args = extra_args
        self.process: subprocess.Popen[str] | None = None
        self.events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.lines: list[str] = []

    def start(self, ready_timeout: float = 30.0, *, wait_ready: bool = True,
              until: str = "subscribed", env: dict[str, str] | None = None,
              prefix: tuple[str, ...] = ()) -> DaemonProcess:
        """Start it and wait for the ``until`` event (``ready`` or ``subscribed``);
        ``prefix`` goes before the command (``taskset -c 1``)."""
        environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "auditd.cli", *self.command, "--config",
             str(self.config), *self.extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
        threading.Thread(target=self._pump, daemon=True).start()
        if wait_ready:
            self.wait_event(lambda e: e.get("event") == until, ready_timeout)
        return self

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.put(event)

    def wait_event(self, match: Callable[[dict[str, Any]], bool],
                   timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                if self.process is not None and self.process.poll() is not None:
                    break
                continue
            if match(event):
                return event
        raise AssertionError("daemon event not seen; output:\n" + "".join(self.lines[-40:]))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def telemetry(ts: float, readings: dict[str, Any], seq: int | None = None) -> bytes:
    payload: dict[str, Any] = {"ts": ts, "readings": readings}
    if seq is not None:
        payload["seq"] = seq
    return json.dumps(payload).encode()


class Publisher:
    """A device-side client: QoS 1 publishes, each confirmed by the broker."""

    def __init__(self, port: int, client_id: str = "test-publisher") -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(200)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish_many(self, items: list[tuple[str, bytes]], *, retain: bool = False,
                     qos: int = 1) -> None:
        infos = [self.client.publish(topic, payload, qos=qos, retain=retain)
                 for topic, payload in items]
        for info in infos:
            info.wait_for_publish(timeout=60)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Collector:
    """Subscribes to a filter and keeps every message that arrives."""

    def __init__(self, port: int, topic_filter: str, client_id: str = "test-collector") -> None:
        self.messages: queue.SimpleQueue[tuple[str, bytes, bool]] = queue.SimpleQueue()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, m.payload, bool(m.retain)))
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic_filter, qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def wait_for(self, match: Callable[[str, Any], bool], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                topic, payload, _ = self.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                body = json.loads(payload)
            except ValueError:
                body = payload
            if match(topic, body):
                return body
        raise AssertionError("expected message not received")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
