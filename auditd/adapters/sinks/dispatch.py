"""Delivers ticket requests from the store to the webhook, command and file sinks.

The requests were written in the audit's transaction (``adapters.store.alerts``); this thread only
moves them out, one sink at a time, each sink's queue in order, recording every attempt
before it looks at the next. A crash between sending and recording means one resend with
the same ``Idempotency-Key`` after the restart, which the receiver absorbs; a crash before
sending loses nothing. Failures back off (``retry.RetryPolicy``) and end, after
``max_attempts``, in the dead-letter state, where ``sensor-auditd tickets --retry-dead``
finds them.

The MQTT ticket topic is not a sink here: those requests go through the outbox with the
findings, and the outbox publisher delivers them.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import urllib3

from auditd import __version__, logs
from auditd.adapters.config.daemon import CommandConfig, TicketsConfig, WebhookConfig
from auditd.adapters.sinks.drain import DrainThread
from auditd.adapters.store import Store
from auditd.errors import SinkError
from auditd.retry import RetryPolicy

log = logs.get("auditd.adapters.sinks.dispatch")

KEY_HEADER = "Idempotency-Key"
KEY_ENV = "SENSOR_AUDITD_IDEMPOTENCY_KEY"
RETRYABLE_4XX = frozenset({408, 425, 429})
"""Client errors that say "later", not "never": timeout, too early, too many requests."""
ALREADY_THERE = 409
"""A receiver that already has this idempotency key may answer Conflict: delivered."""


class Sink(Protocol):
    name: str

    def deliver(self, key: str, payload: bytes) -> None:
        """Deliver or raise :class:`SinkError`."""


class WebhookSink:
    """HTTP POST with urllib3: one pooled connection, no automatic retries or redirects
    (the dispatcher owns retrying; a redirect of a POST is a configuration mistake)."""

    name = "webhook"

    def __init__(self, cfg: WebhookConfig) -> None:
        self._cfg = cfg
        self._pool = urllib3.PoolManager(num_pools=1, maxsize=1, retries=False,
                                         timeout=urllib3.Timeout(total=cfg.timeout_s))

    def _headers(self, key: str) -> dict[str, str]:
        headers = {**self._cfg.headers, "Content-Type": "application/json",
                   KEY_HEADER: key, "User-Agent": f"sensor-auditd/{__version__}"}
        if self._cfg.token_file:
            try:
                token = Path(self._cfg.token_file).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise SinkError(f"{self._cfg.token_file}: {exc.strerror or exc}") from exc
            if token and token[0].strip():
                headers["Authorization"] = f"Bearer {token[0].strip()}"
        return headers

    def deliver(self, key: str, payload: bytes) -> None:
        try:
            response = self._pool.request("POST", self._cfg.url, body=payload,
                                          headers=self._headers(key), redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            raise SinkError(f"{type(exc).__name__}: {exc}") from exc
        status = response.status
        if 200 <= status < 300 or status == ALREADY_THERE:
            return
        body = response.data[:200].decode("utf-8", "replace")
        raise SinkError(f"HTTP {status}: {body}",
                        permanent=400 <= status < 500 and status not in RETRYABLE_4XX)


class CommandSink:
    """Runs the site's script with the ticket on stdin; no shell, so nothing in a ticket can
    become a command."""

    name = "command"

    def __init__(self, cfg: CommandConfig) -> None:
        self._cfg = cfg

    def deliver(self, key: str, payload: bytes) -> None:
        try:
            done = subprocess.run(list(self._cfg.argv), input=payload, capture_output=True,
                                  timeout=self._cfg.timeout_s, check=False,
                                  env={**os.environ, KEY_ENV: key})
        except subprocess.TimeoutExpired as exc:
            raise SinkError(f"timed out after {self._cfg.timeout_s:g} s") from exc
        except OSError as exc:
            raise SinkError(f"{self._cfg.argv[0]}: {exc.strerror or exc}") from exc
        if done.returncode != 0:
            tail = done.stderr[-300:].decode("utf-8", "replace").strip()
            raise SinkError(f"exit status {done.returncode}: {tail}")


class FileSink:
    """Appends one JSON line per ticket and fsyncs before reporting it delivered."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self._path = path

    def deliver(self, key: str, payload: bytes) -> None:
        try:
            with self._path.open("ab") as handle:
                handle.write(payload.rstrip(b"\n") + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise SinkError(f"{self._path}: {exc.strerror or exc}") from exc


def sinks_from(cfg: TicketsConfig) -> list[Sink]:
    out: list[Sink] = []
    if cfg.webhook is not None:
        out.append(WebhookSink(cfg.webhook))
    if cfg.command is not None:
        out.append(CommandSink(cfg.command))
    if cfg.file is not None:
        out.append(FileSink(cfg.file))
    return out


@dataclass
class DispatchStats:
    delivered: int = 0
    failed: int = 0
    dead: int = 0


class TicketDispatcher(DrainThread):
    """The daemon's ticket thread; ``drain_once`` is also what a replay calls per audit."""

    failure_event = "ticket_dispatch_failed"

    def __init__(self, store: Store, sinks: Sequence[Sink], retry: RetryPolicy, *,
                 clock: Callable[[], float] = time.time, poll_s: float = 5.0,
                 rand: Callable[[], float] = random.random,
                 on_progress: Callable[[], None] = lambda: None) -> None:
        super().__init__("sensor-auditd-tickets", poll_s=poll_s, on_progress=on_progress)
        self._store = store
        self._sinks = list(sinks)
        self._retry = retry
        self._clock = clock
        self._rand = rand
        self.stats = DispatchStats()

    def _sleep_s(self) -> float:
        due = [t for t in (self._store.tickets.next_due_at(s.name) for s in self._sinks)
               if t is not None]
        if not due:
            return self._poll_s
        return min(self._poll_s, max(0.05, min(due) - self._clock()))

    def drain_once(self, now: float | None = None, limit: int = 100) -> int:
        """Attempt every due delivery (up to ``limit`` a sink); return how many succeeded.

        A sink stops at its first failure: its queue is ordered, and a receiver that just
        failed is not asked again before its back-off."""
        delivered = 0
        for sink in self._sinks:
            for _ in range(limit):
                if self._stop_requested.is_set():
                    return delivered
                at = self._clock() if now is None else now
                due = self._store.tickets.due(sink.name, at)
                if due is None:
                    break
                try:
                    sink.deliver(due.idempotency_key, due.payload)
                except SinkError as exc:
                    self._failed(sink.name, due.ticket_id, due.idempotency_key,
                                 due.attempts + 1, exc, at)
                    break
                self._store.tickets.delivered(due.ticket_id, sink.name, at)
                self.stats.delivered += 1
                delivered += 1
                log.info("ticket_delivered", sink=sink.name, key=due.idempotency_key,
                         attempts=due.attempts + 1)
        return delivered

    def _failed(self, sink: str, ticket_id: int, key: str, attempts: int, exc: SinkError,
                at: float) -> None:
        self.stats.failed += 1
        if exc.permanent or attempts >= self._retry.max_attempts:
            self._store.tickets.failed(ticket_id, sink, str(exc), retry_at=None)
            self.stats.dead += 1
            log.error("ticket_dead_lettered", sink=sink, key=key, attempts=attempts,
                      error=str(exc), permanent=exc.permanent)
            return
        wait = self._retry.delay(attempts, self._rand)
        self._store.tickets.failed(ticket_id, sink, str(exc), retry_at=at + wait)
        log.warning("ticket_delivery_failed", sink=sink, key=key, attempts=attempts,
                    retry_in_s=round(wait, 1), error=str(exc))
