"""A small ticket system for tests: a real HTTP server on a free port, in a thread.

It behaves like a ticketing API with idempotency keys: a POST whose ``Idempotency-Key``
it has already seen creates nothing new (answers 200 again); one with a new key files the
body under its ``ticket_id`` (creating the ticket on ``open``, updating it otherwise).
``fail_next`` makes it answer 503 to the next requests; ``hold_next`` makes it keep the
next request waiting until released (to kill a client mid-request). Not started, it is a
ticket system that is down: connections are refused.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from brokers import free_port


@dataclass
class Received:
    key: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class TicketServer:
    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    tickets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """ticket_id -> the distinct requests filed under it, in arrival order."""
    seen: set[str] = field(default_factory=set)
    fail_next: int = 0
    fail_status: int = 503
    hold_next: int = 0
    released: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tickets"

    def start(self) -> TicketServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                key = self.headers.get("Idempotency-Key", "")
                status = owner._handle(Received(key, body, dict(self.headers)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _handle(self, request: Received) -> int:
        with self._lock:
            self.requests.append(request)
            hold = self.hold_next > 0
            if hold:
                self.hold_next -= 1
        self.arrived.set()
        if hold:
            self.released.wait(60)
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status
            if request.key in self.seen:
                return 200
            self.seen.add(request.key)
            self.tickets.setdefault(request.body["ticket_id"], []).append(request.body)
            return 201

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
