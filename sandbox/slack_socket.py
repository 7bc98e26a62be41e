"""Slack's Socket Mode endpoint: a real WebSocket server the bot connects out to (``edgebot serve --socket-mode``).

The protocol, as Slack runs it: the app calls ``apps.connections.open`` with its app-level token (``xapp-…``) and
gets a single-use ``wss://…/link/?ticket=…`` URL; on connect Slack sends ``{"type": "hello", …}``; then every slash
command and interaction arrives as an envelope ``{"envelope_id", "type": "slash_commands" | "interactive",
"payload", "accepts_response_payload"}`` which the app must acknowledge within 3 seconds by sending back
``{"envelope_id", "payload"?}`` (the payload is what the HTTP response body would be). Slack asks a client to
reconnect with ``{"type": "disconnect", "reason": "refresh_requested"}``.

Here the URL is ``ws://`` on loopback (slack_sdk's built-in client speaks plain WebSocket to non-443 ports), tickets
are single use, and an envelope that is not acknowledged in time raises :class:`NoAck`, as Slack would show the user
an error.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

ACK_TIMEOUT = 3.0
"""Seconds Slack waits for an envelope's acknowledgement."""


class NoAck(TimeoutError):
    pass


class SocketModeLink:
    def __init__(self, team_id: str, *, host: str = "127.0.0.1", app_id: str = "A0EDGEAPP") -> None:
        self.team_id = team_id
        self.app_id = app_id
        self._host = host
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._tickets: set[str] = set()
        self._connections: list[ServerConnection] = []
        self._acks: dict[str, dict[str, Any]] = {}
        self._acked = threading.Condition(self._lock)
        self._next = 0
        self.connects = 0
        """How many connections were accepted (a reconnect counts again)."""

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> SocketModeLink:
        self._server = serve(self._serve_connection, self._host, 0, process_request=self._check_ticket,
                             ping_interval=None)
        self._thread = threading.Thread(target=self._server.serve_forever, name="slack-socket-mode", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.socket.getsockname()[1])

    def new_url(self) -> str:
        """What apps.connections.open returns: a single-use URL."""
        ticket = secrets.token_hex(16)
        with self._lock:
            self._tickets.add(ticket)
        return f"ws://{self._host}:{self.port}/link/?ticket={ticket}&app_id={self.app_id}"

    def connected(self) -> int:
        with self._lock:
            return len(self._connections)

    # -- the connection ---------------------------------------------------------------------------------------------
    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        with self._lock:
            valid = path == "/link/" and params.get("ticket") in self._tickets
            if valid:
                self._tickets.discard(params["ticket"])
        if valid:
            return None
        return Response(401, "Unauthorized", Headers(), b"invalid or used ticket\n")

    def _serve_connection(self, connection: ServerConnection) -> None:
        with self._lock:
            self._connections.append(connection)
            self.connects += 1
        try:
            connection.send(json.dumps({
                "type": "hello", "num_connections": len(self._connections),
                "debug_info": {"host": "applink-sandbox", "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id},
            }))
            for raw in connection:
                try:
                    message = json.loads(raw)
                except (TypeError, ValueError):
                    continue
                envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
                if envelope_id:
                    with self._acked:
                        self._acks[str(envelope_id)] = message
                        self._acked.notify_all()
        finally:
            with self._lock:
                if connection in self._connections:
                    self._connections.remove(connection)

    # -- what Slack pushes -----------------------------------------------------------------------------------------
    def deliver(self, envelope_type: str, payload: dict[str, Any], *, accepts_response_payload: bool,
                timeout: float = ACK_TIMEOUT) -> dict[str, Any]:
        """Send one envelope over a live connection; return the app's acknowledgement (``payload`` may be absent)."""
        envelope_id = secrets.token_hex(12)
        with self._lock:
            if not self._connections:
                raise ConnectionError("no app is connected over Socket Mode")
            connection = self._connections[self._next % len(self._connections)]
            self._next += 1
        connection.send(json.dumps({"envelope_id": envelope_id, "type": envelope_type, "payload": payload,
                                    "accepts_response_payload": accepts_response_payload, "retry_attempt": 0,
                                    "retry_reason": ""}))
        deadline = time.monotonic() + timeout
        with self._acked:
            while envelope_id not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NoAck(f"envelope {envelope_id} ({envelope_type}) was not acknowledged in {timeout:.0f} s")
                self._acked.wait(left)
            return self._acks.pop(envelope_id)

    def disconnect_all(self, reason: str = "refresh_requested") -> None:
        """Ask every connected client to reconnect, as Slack does a few times an hour."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.send(json.dumps({"type": "disconnect", "reason": reason,
                                        "debug_info": {"host": "applink-sandbox"}}))
