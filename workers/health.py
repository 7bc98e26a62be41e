"""A worker's HTTP endpoint on ``settings.metrics_port``: ``/metrics`` (Prometheus) and ``/healthz`` (liveness).

``/healthz`` answers 200 when Redis answers a PING and this worker's registration in Redis is alive (RQ refreshes it
with every heartbeat and lets it expire ``worker_ttl`` seconds after the last one: a worker whose main loop hangs
stops heartbeating and fails the check), 503 otherwise, with a JSON body saying which part failed. Kubernetes uses it
as the liveness probe of the worker Deployments.

The server runs in a daemon thread of the worker's main process. RQ forks a work horse per job; the horse has no copy
of the thread, so the endpoint keeps answering (from the parent) while a job runs.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from prometheus_client import CollectorRegistry

from edgebot.metrics import exposition

log = logging.getLogger(__name__)


class WorkerHealth:
    """Whether this worker is fit to keep running; ``worker_key`` is RQ's key for it (set once it registered)."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection
        self.worker_key: str | None = None

    def check(self) -> dict[str, Any]:
        try:
            redis_ok = bool(self.redis.ping())
        except redis.RedisError:
            return {"ok": False, "redis": False, "registered": None}
        if self.worker_key is None:  # starting: not registered yet
            return {"ok": redis_ok, "redis": redis_ok, "registered": None}
        try:
            registered = bool(self.redis.exists(self.worker_key))
        except redis.RedisError:
            return {"ok": False, "redis": False, "registered": None}
        return {"ok": redis_ok and registered, "redis": redis_ok, "registered": registered}


def _handler(health: WorkerHealth, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?")[0]
            if path == "/metrics":
                body, content_type = exposition(registry)
                self._send(200, body, content_type)
            elif path == "/healthz":
                state = health.check()
                self._send(200 if state["ok"] else 503, json.dumps(state).encode(), "application/json")
            else:
                self._send(404, b'{"error": "not found: try /metrics or /healthz"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (scrapes are not worth a log line)
            return

    return Handler


class HealthServer:
    """``/metrics`` and ``/healthz`` on ``host:port`` in a daemon thread; ``port=0`` picks a free one (tests)."""

    def __init__(self, health: WorkerHealth, registry: CollectorRegistry, *, port: int, host: str = "0.0.0.0") -> None:
        self.health = health
        self._server = ThreadingHTTPServer((host, port), _handler(health, registry))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="edgebot-metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("worker metrics and health on port %d (/metrics, /healthz)", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_health_server(connection: redis.Redis, registry_factory: Callable[[], CollectorRegistry], *,
                        port: int) -> HealthServer | None:
    """Start the endpoint when ``port`` is set (``settings.metrics_port``); None when it is 0 (off)."""
    if port <= 0:
        return None
    return HealthServer(WorkerHealth(connection), registry_factory(), port=port).start()
