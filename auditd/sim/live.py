"""Publish a simulated fleet live over MQTT on an accelerated clock (an adapter).

The fleet is moved in time so that its last message is due exactly when the accelerated
clock catches up with the wall clock: every message is in the past when it is sent (the
daemon refuses readings from its future), and the daemon sees the fleet's history arrive
``speed`` times faster than it happened, like gateways flushing their buffers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from auditd.adapters.config.daemon import DaemonConfig
from auditd.errors import IOFailure, UsageError
from auditd.sim.simulate import Simulation, paced, shift_to

Progress = Callable[[int, int, float], None]
"""(messages sent, messages in all, simulated time of the last one)."""


def parse_broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"expected HOST:PORT, got {text!r}", "--mqtt")
    return host, int(port)


def live(sim: Simulation, speed: float, now: float) -> Simulation:
    """The simulation moved so that it ends when a run started at ``now`` catches up."""
    times = [m.received_at for m in sim.messages]
    span = (max(times) - min(times)) if times else 0.0
    return shift_to(sim, now + span / speed)


def publish(sim: Simulation, broker: str, speed: float, truth_path: Path | None,
            cfg: DaemonConfig, *, progress: Progress | None = None,
            stop: threading.Event | None = None) -> int:
    """Send every message at QoS 1 at its accelerated time; returns how many were sent.

    The truth (with the shifted times) is written first, so a run stopped early can still
    be scored against what was sent."""
    if speed <= 0:
        raise UsageError("must be positive", "--speed")
    host, port = parse_broker(broker)
    sim = live(sim, speed, time.time())
    if truth_path is not None:
        truth_path.write_text(json.dumps(sim.truth, indent=2) + "\n", encoding="utf-8")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="sensor-auditd-simulator",
                         protocol=paho.MQTTv311)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise IOFailure(f"cannot reach the broker at {host}:{port}: {exc}") from exc
    client.loop_start()
    sent = 0
    total = len(sim.messages)
    try:
        pending = []
        for message in paced(sim.messages, speed, time.time, time.sleep):
            if stop is not None and stop.is_set():
                break
            pending.append(client.publish(message.topic, message.raw(), qos=1,
                                          retain=message.retain))
            sent += 1
            if len(pending) >= 100:
                for info in pending:
                    info.wait_for_publish(timeout=30)
                pending.clear()
            if progress is not None and sent % 200 == 0:
                progress(sent, total, message.received_at)
        for info in pending:
            info.wait_for_publish(timeout=30)
        if progress is not None and sim.messages:
            progress(sent, total, sim.messages[min(sent, total) - 1].received_at)
    finally:
        client.loop_stop()
        client.disconnect()
    return sent
