"""The floor of ``bench/fleet_live.py``: a bare paho MQTT 5 shared-subscription consumer.

It does what no fleet replica can do without -- receive each upstream message on the
shared subscription with the replica's broker settings (MQTT 5, persistent session,
``manual_ack=True``, the same Receive Maximum) and acknowledge it -- and nothing else: no
parsing, no database. Two of these, as two processes, receive the same messages the two
replicas receive in the same run; their messages per second bound what any paho-based
replica could reach on this broker and this machine.

It prints one JSON line per 50 ms with its count, and the time of its first message.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--filter", required=True)
    parser.add_argument("--receive-maximum", type=int, default=1000)
    parser.add_argument("--session-expiry", type=int, default=7 * 86400)
    args = parser.parse_args()

    stop = threading.Event()
    received = 0
    first: float | None = None
    lock = threading.Lock()

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        nonlocal received, first
        with lock:
            if first is None:
                first = time.time()
            received += 1
        client.ack(msg.mid, msg.qos)

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id,
                         protocol=paho.MQTTv5, manual_ack=True)
    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe([(args.filter, 1)])
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = args.session_expiry
    props.ReceiveMaximum = args.receive_maximum
    client.connect("127.0.0.1", args.port, clean_start=False, properties=props)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    client.loop_start()
    while not stop.wait(0.05):
        with lock:
            line = {"t": time.time(), "received": received, "first": first}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
