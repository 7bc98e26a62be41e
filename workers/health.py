"""A worker's HTTP endpoint on ``settings.metrics_port``: ``/metrics`` (Prometheus) and ``/healthz`` (liveness).

``/healthz`` answers 200 when Redis answers a PING and this worker's registration in Redis is alive (RQ refreshes it
with every heartbeat and lets it expire ``worker_ttl`` seconds after the last one: a worker whose main loop hangs
stops heartbeating and fails the check), 503 otherwise, with a JSON body saying which part failed. Kubernetes uses it
as the liveness probe of the worker Deployments.

``/metrics`` has this worker's own job counts (:class:`WorkerCollector`) and, unless ``settings.metrics_fleet`` is
off, the fleet-wide series of :mod:`edgebot.metrics`.

The server runs in a daemon thread of the worker's main process. RQ forks a work horse per job; the horse has no copy
of the thread, so the endpoint keeps answering (from the parent) while a job runs.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgebot import metrics
from edgebot.config import Config
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


class WorkerCollector(Collector):
    """This worker's own job counts, read from its RQ registration (RQ keeps them there, so jobs that ran in forked
    work horses are counted): jobs by outcome since the worker started, time spent in jobs, busy or idle."""

    def __init__(self, health: WorkerHealth) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        if self.health.worker_key is None:
            return
        try:
            raw = self.health.redis.hgetall(self.health.worker_key)
        except redis.RedisError:
            return
        data = {_text(k): _text(v) for k, v in raw.items()}  # type: ignore[union-attr]
        jobs = CounterMetricFamily("edgebot_worker_jobs", "Jobs this worker ran since it started, by outcome",
                                   labels=["outcome"])
        jobs.add_metric(["succeeded"], int(data.get("successful_job_count") or 0))
        jobs.add_metric(["failed"], int(data.get("failed_job_count") or 0))
        yield jobs
        yield CounterMetricFamily("edgebot_worker_working_seconds", "Seconds this worker spent running jobs",
                                  value=float(data.get("total_working_time") or 0.0))
        yield GaugeMetricFamily("edgebot_worker_busy", "1 while this worker runs a job",
                                value=1 if data.get("state") == "busy" else 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def start_health_server(connection: redis.Redis, config: Config, *, port: int) -> HealthServer | None:
    """Start the endpoint when ``port`` is set (``settings.metrics_port``); None when it is 0 (off)."""
    if port <= 0:
        return None
    health = WorkerHealth(connection)
    registry = metrics.build_registry(connection, config.settings.key_prefix, metrics.edgebot_queues(config),
                                      fleet=config.settings.metrics_fleet, extra=[WorkerCollector(health)])
    return HealthServer(health, registry, port=port).start()
