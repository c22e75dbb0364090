"""The daemon's one MQTT connection (paho-mqtt 2.x): telemetry in, findings out.

One client for both directions keeps one stable client id, one persistent session and one
last will. What matters for "no reading lost":

* QoS 1 subscriptions on a persistent session (MQTT 5 ``clean_start=False`` with a session
  expiry of days, or 3.1.1 ``clean_session=False``): the broker keeps what arrives while
  the daemon is down.
* ``manual_ack=True``: paho sends no PUBACK by itself; the batch writer acknowledges a
  message only after its readings are committed. An acknowledgement is sent only on the
  connection the message arrived on; after a reconnect the broker redelivers it and the
  store's idempotent keys absorb the repeat.
* ``on_message`` never raises: an exception there ends paho's network thread while
  ``is_connected()`` still answers True. It only appends to a queue.
* Reconnects are ours, not paho's: paho's own loop doubles its delay without jitter (a
  fleet of gateways would reconnect in lockstep after a broker restart) and swallows the
  reason a connection failed (a wrong CA would look like an unreachable host). A
  supervisor thread connects, logs the exact error, waits a jittered backoff and starts
  paho's network thread for one connection at a time (``reconnect_on_failure=False``).
"""

from __future__ import annotations

import logging
import queue
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from auditd import logs
from auditd.adapters.config.daemon import BrokerConfig
from auditd.errors import ConfigError
from auditd.health import Heartbeat
from auditd.model import RawMessage
from auditd.retry import Backoff

log = logs.get("auditd.adapters.sources.mqtt")


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message waiting to be committed, with what is needed to acknowledge it."""

    message: RawMessage
    mid: int
    qos: int
    generation: int
    """The connection it arrived on: a PUBACK on a later connection would be wrong."""


@dataclass
class LinkStats:
    connects: int = 0
    disconnects: int = 0
    received: int = 0
    acked: int = 0
    acks_skipped: int = 0
    published: int = 0
    puback: int = 0
    publish_refused: int = 0
    connect_failures: int = 0
    topics_not_utf8: int = 0
    dropped_qos0: int = 0
    """QoS 0 messages dropped because the writer held ``QOS0_QUEUE_LIMIT`` deliveries."""
    last_error: str = ""
    down_since: float | None = None
    """When the broker was last lost (or the link started), while not connected."""


QOS0_QUEUE_LIMIT = 10_000
"""Deliveries queued for the writer beyond which a QoS 0 message is dropped (counted).
QoS 1 deliveries are bounded by the Receive Maximum the broker honours; QoS 0 ones are
not, and a writer waiting for a full disk must not turn a QoS 0 flood into memory."""


def _read_password(cfg: BrokerConfig) -> str | None:
    if not cfg.password_file:
        return None
    try:
        return Path(cfg.password_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(str(cfg.password_file), "broker.password_file", str(exc)) from exc


class _PahoProgress(logging.Logger):
    """paho's logger: every line its network thread logs (a packet in or out, a PINGREQ at
    least every keepalive) proves that thread is turning; its warnings reach our log.

    ``Logger.log`` is called with the format and arguments unformatted, so a line that
    is only a heartbeat costs one call, not a string.
    """

    def __init__(self, link: MqttLink) -> None:
        super().__init__("paho", logging.DEBUG)
        self._link = link

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if threading.current_thread() is self._link.network_thread:
            self._link.heartbeat.beat()
        if level >= logging.WARNING:
            try:
                text = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):
                text = str(msg)
            log.warning("paho", message=text)


class MqttLink:
    """Owns the paho client; the writer and the publisher talk to the broker through it."""

    def __init__(
        self,
        cfg: BrokerConfig,
        *,
        subscriptions: Sequence[str],
        status_topic: str | None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_count: Callable[[str], None] = lambda name: None,
    ) -> None:
        self._cfg = cfg
        self._on_count = on_count
        self._subscriptions: Sequence[str] = subscriptions
        self._subscribed_topics = tuple(subscriptions)
        self._status_topic = status_topic
        self._clock = clock
        self.deliveries: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self.subscribed = threading.Event()
        self.stats = LinkStats(down_since=clock())
        self._generation = 0
        self._connected = threading.Event()
        self._pending_sub_mid: int | None = None
        self._unsubscribed = threading.Event()
        self._pending_unsub_mid: int | None = None
        self._puback_handlers: dict[int, Callable[[bool], None]] = {}
        self._early_pubacks: dict[int, bool] = {}
        self._refusals: dict[int, str] = {}
        self._lock = threading.Lock()
        self._life = threading.Lock()
        self._stopping = threading.Event()
        self._lost = threading.Event()
        self._delay = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s).delays(rng)
        self._supervisor: threading.Thread | None = None
        self._connack_ok = False
        self.network_thread: threading.Thread | None = None
        """paho's thread for the current connection (recorded by ``on_connect``)."""
        self.heartbeat = Heartbeat()
        """Turns of paho's network thread, or of the supervisor while there is no connection."""
        self.send_quota = 65535
        """The broker's Receive Maximum from CONNACK: QoS 1 publishes it takes unacknowledged
        (the status message included)."""
        self.client = self._build_client()

    # ------------------------------------------------------------------ set-up

    @property
    def is_v5(self) -> bool:
        return self._cfg.protocol == "5"

    def _build_client(self) -> paho.Client:
        cfg = self._cfg
        protocol = paho.MQTTv5 if self.is_v5 else paho.MQTTv311
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            clean_session=None if self.is_v5 else False,
            protocol=protocol,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        client.enable_logger(_PahoProgress(self))
        client.max_inflight_messages_set(max(1, cfg.receive_maximum))
        client.max_queued_messages_set(0)
        if cfg.tls is not None:
            try:
                client.tls_set(
                    ca_certs=cfg.tls.ca_file,
                    certfile=cfg.tls.cert_file,
                    keyfile=cfg.tls.key_file,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(str(cfg.tls.ca_file or cfg.tls.cert_file or ""),
                                  "broker.tls", f"unusable TLS files: {exc}") from exc
            client.tls_insecure_set(bool(cfg.tls.insecure))
        if cfg.username:
            client.username_pw_set(cfg.username, _read_password(cfg))
        if self._status_topic is not None:
            client.will_set(self._status_topic, b"offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        return client

    def _connect_properties(self) -> Properties | None:
        if not self.is_v5:
            return None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self._cfg.session_expiry_s)
        # The broker never has more unacknowledged messages in flight to us than this, so a
        # batch bounded by it can always fill.
        props.ReceiveMaximum = max(1, min(65535, self._cfg.receive_maximum))
        return props

    def start(self) -> None:
        """Start the supervisor, which connects (and reconnects) in the background."""
        kwargs: dict[str, Any] = {
            "host": self._cfg.host,
            "port": self._cfg.port,
            "keepalive": self._cfg.keepalive,
        }
        if self.is_v5:
            kwargs["clean_start"] = False
            kwargs["properties"] = self._connect_properties()
        self.client.connect_async(**kwargs)  # stores the parameters; no network yet
        self._supervisor = threading.Thread(target=self._supervise,
                                            name="sensor-auditd-mqtt-supervisor", daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        """Connect, run paho's loop for that one connection, back off with jitter, repeat."""
        attempt = 0
        while not self._stopping.is_set():
            self.heartbeat.beat()
            try:
                with self._life:
                    if self._stopping.is_set():
                        return
                    self._lost.clear()
                    if self._cfg.username:  # a rotated password needs no restart
                        self.client.username_pw_set(self._cfg.username, _read_password(self._cfg))
                    self.client.reconnect()
                    self.client.loop_start()
            except (OSError, ValueError, ConfigError) as exc:
                wait = self._delay(attempt)
                attempt += 1
                self._connect_failed(exc, attempt, wait)
                self._pause(wait)
                continue
            while not self._stopping.is_set() and not self._lost.wait(0.5):
                pass
            if self._stopping.is_set():
                return
            with self._life:
                self.client.loop_stop()
            if self._connack_ok:  # a connection that got its CONNACK resets the backoff
                self._connack_ok = False
                attempt = 0
            wait = self._delay(attempt)
            attempt += 1
            log.info("broker_reconnect_scheduled", retry_in_s=round(wait, 2), attempt=attempt)
            self._pause(wait)

    def _count(self, name: str) -> None:
        """A persistent counter's event, handed to whoever commits them (the writer)."""
        try:
            self._on_count(name)
        except Exception as exc:  # never let bookkeeping break the link
            log.error("count_failed", counter=name, error=repr(exc))

    def _connect_failed(self, exc: BaseException, attempt: int, wait: float) -> None:
        self.stats.connect_failures += 1
        self._count("broker_connect_failures")
        reason = describe_connect_error(exc)
        self.stats.last_error = reason
        (log.error if isinstance(exc, ssl.SSLError | ConfigError) else log.warning)(
            "broker_connect_failed", host=self._cfg.host, port=self._cfg.port, error=reason,
            attempt=attempt, retry_in_s=round(wait, 2))

    def _pause(self, seconds: float) -> None:
        """Wait out a backoff, beating: a supervisor waiting on purpose is making progress."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            self.heartbeat.beat()
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping.wait(min(left, 1.0)):
                break

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` (retained), wait for its PUBACK, then disconnect."""
        self._stopping.set()
        if self._connected.is_set() and self._status_topic is not None:
            done = threading.Event()
            info = self.client.publish(self._status_topic, b"offline", qos=1, retain=True)
            self._track(info.mid, lambda ok: done.set())
            done.wait(timeout)
        with self._life:
            self.client.disconnect()
            self.client.loop_stop()
        if self._supervisor is not None:
            self._supervisor.join(timeout)

    # ------------------------------------------------------------------ callbacks

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        self.network_thread = threading.current_thread()
        self.heartbeat.beat()
        if rc.is_failure:
            self.stats.last_error = f"connect refused: {rc}"
            log.error("broker_refused", reason=str(rc), host=self._cfg.host, port=self._cfg.port,
                      hint=refusal_hint(str(rc), self._cfg.username))
            return
        self._connack_ok = True
        quota = getattr(props, "ReceiveMaximum", None) if self.is_v5 else None
        # paho ignores the broker's Receive Maximum (and cannot change its window while
        # connected), so the publisher keeps within it; more is a protocol error.
        self.send_quota = int(quota) if quota else 65535
        with self._lock:
            self._generation += 1
            self.stats.connects += 1
        self.stats.down_since = None
        self._count("broker_connects")
        self._connected.set()
        log.info("broker_connected", host=self._cfg.host, port=self._cfg.port,
                 session_present=bool(getattr(flags, "session_present", False)),
                 receive_maximum=self.send_quota)
        if self._subscriptions:
            _, mid = client.subscribe([(topic, 1) for topic in self._subscriptions])
            self._pending_sub_mid = mid
        if self._status_topic is not None:
            info = client.publish(self._status_topic, b"online", qos=1, retain=True)
            self._track(info.mid, lambda ok: None)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self.stats.last_error = "connect failed"
        log.warning("broker_unreachable", host=self._cfg.host, port=self._cfg.port)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self.subscribed.clear()
        if was_connected:
            self.stats.disconnects += 1
            self.stats.down_since = self._clock()
            self.stats.last_error = f"disconnected: {rc}"
            self._count("broker_disconnects")
        self._lost.set()
        (log.warning if rc.is_failure else log.info)("broker_disconnected", reason=str(rc))

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, rcs: Any,
                      props: Any = None) -> None:
        failures = [str(rc) for rc in rcs if rc.is_failure]
        if failures:
            self.stats.last_error = f"subscription refused: {failures}"
            log.error("subscription_refused", topics=self._subscriptions, reasons=failures)
            return
        if mid == self._pending_sub_mid:
            self.subscribed.set()
            log.info("subscribed", topics=self._subscriptions)

    def _on_unsubscribe(self, client: paho.Client, userdata: Any, mid: int, rcs: Any,
                        props: Any = None) -> None:
        if mid == self._pending_unsub_mid:
            self._unsubscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            self.stats.received += 1
            if msg.qos == 0 and self.deliveries.qsize() >= QOS0_QUEUE_LIMIT:
                self.stats.dropped_qos0 += 1
                return
            self.deliveries.put(
                Delivery(RawMessage(self._topic_of(msg), bytes(msg.payload), self._clock(),
                                    bool(msg.dup), msg.mid if msg.qos else None),
                         msg.mid, msg.qos, self._generation)
            )
        except Exception as exc:
            log.error("on_message_failed", error=repr(exc))

    def _topic_of(self, msg: paho.MQTTMessage) -> str:
        """The topic as text; invalid UTF-8 (which MQTT forbids) keeps its bytes as lone
        surrogates, which no topic level can match, so the validator quarantines it as
        ``topic_invalid`` (escaped for storage) and the writer acknowledges it. Refusing
        to queue it instead would hold its slot of the receive window until a reconnect
        and have the broker redeliver it for ever."""
        try:
            return msg.topic
        except UnicodeDecodeError:
            self.stats.topics_not_utf8 += 1
            raw = bytes(getattr(msg, "_topic", b""))
            log.warning("topic_not_utf8", topic=raw[:200].decode("utf-8", "backslashreplace"))
            return raw.decode("utf-8", "surrogateescape")

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, rc: Any,
                    props: Any = None) -> None:
        ok = not rc.is_failure
        with self._lock:
            if not ok:
                self._refusals[mid] = str(rc)
            handler = self._puback_handlers.pop(mid, None)
            if handler is None:
                self._early_pubacks[mid] = ok
        self.stats.puback += 1
        if handler is not None:
            self._run_handler(handler, ok)

    @staticmethod
    def _run_handler(handler: Callable[[bool], None], ok: bool) -> None:
        try:
            handler(ok)
        except Exception as exc:
            log.error("puback_handler_failed", error=repr(exc))

    def _track(self, mid: int, handler: Callable[[bool], None]) -> None:
        """Attach a PUBACK handler after ``publish`` returned.

        paho calls ``on_publish`` while holding its own message lock, so ``publish`` must not
        be called under ours; a PUBACK that beats the registration waits in
        ``_early_pubacks``.
        """
        with self._lock:
            early = self._early_pubacks.pop(mid, None)
            if early is None:
                self._puback_handlers[mid] = handler
        if early is not None:
            self._run_handler(handler, early)

    # ------------------------------------------------------------------ operations

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and self.client.is_connected()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def unsubscribe(self, timeout: float) -> bool:
        """Leave the subscriptions (a replica leaving its shared subscription: the broker
        sends it nothing more, so what it holds can be committed and acknowledged before it
        disconnects); True once the broker confirmed. Reconnects do not resubscribe after."""
        self._subscriptions = ()
        if not self._connected.is_set():
            return False
        topics = list(self._subscribed_topics)
        if not topics:
            return True
        self._unsubscribed.clear()
        _, mid = self.client.unsubscribe(topics)
        self._pending_unsub_mid = mid
        return self._unsubscribed.wait(timeout)

    def ack(self, deliveries: list[Delivery]) -> None:
        """PUBACK what is committed, but only on the connection it arrived on."""
        generation = self._generation
        for delivery in deliveries:
            if delivery.qos == 0:
                continue
            if delivery.generation != generation or not self._connected.is_set():
                self.stats.acks_skipped += 1
                continue
            self.client.ack(delivery.mid, delivery.qos)
            self.stats.acked += 1

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool,
                on_puback: Callable[[bool], None]) -> bool:
        """Publish; ``on_puback`` runs on paho's thread when the broker confirms."""
        if not self._connected.is_set():
            return False
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        # NO_CONN means the socket closed under us: paho keeps a QoS > 0 message and sends
        # it on reconnect, so it is handed over and its PUBACK must still find its handler.
        handed_over = info.rc == paho.MQTT_ERR_SUCCESS or (
            qos > 0 and info.rc == paho.MQTT_ERR_NO_CONN)
        if not handed_over:
            return False
        if qos == 0:
            on_puback(True)
        else:
            self._track(info.mid, self._logging_refusal(topic, info.mid, on_puback))
        self.stats.published += 1
        return True

    def _logging_refusal(self, topic: str, mid: int,
                         on_puback: Callable[[bool], None]) -> Callable[[bool], None]:
        """A refused publish (MQTT 5 PUBACK reason, e.g. an ACL) is logged with its topic."""

        def confirmed(ok: bool) -> None:
            if not ok:
                with self._lock:
                    reason = self._refusals.pop(mid, "refused")
                self.stats.publish_refused += 1
                log.error("publish_refused", topic=topic, reason=reason,
                          hint="the broker's ACL may not let this user write the topic")
            on_puback(ok)

        return confirmed


def refusal_hint(reason: str, username: str | None) -> str:
    """What to check when the broker refuses the CONNECT (mosquitto says "Not authorized"
    for a wrong password as well as for an unknown user)."""
    text = reason.lower()
    if "password" in text or "authori" in text:
        if username:
            return (f"the broker refused user {username!r}: check broker.username and the "
                    "password in broker.password_file against the broker's password file")
        return "the broker wants credentials: set broker.username and broker.password_file"
    if "identifier" in text:
        return "the broker refused the client id: set broker.client_id"
    return "see the broker's log"


def describe_connect_error(exc: BaseException) -> str:
    """One line an operator can act on: the TLS verdict, refused, unreachable, timeout."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on this port?)"
    if isinstance(exc, TimeoutError):
        return "connection timed out"
    return f"{type(exc).__name__}: {exc}"
