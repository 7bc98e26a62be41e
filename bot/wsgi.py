"""The bot as a WSGI application: Slack's requests on ``/slack/events``, health on ``/healthz`` and ``/readyz``,
Prometheus metrics on ``/metrics``.

Run it behind gunicorn (``edgebot serve`` does that), or ``gunicorn 'bot.wsgi:create()'`` with ``EDGEBOT_CONFIG``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.app import create_app, redis_connection
from edgebot import logs, metrics
from edgebot.config import load_config
from edgebot.secrets import SecretResolver

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
SLACK_EVENTS_PATH = "/slack/events"
"""Where Slack sends slash commands and interactions (the Slack app manifest's URLs end with it)."""


def create(config_path: str | None = None) -> WSGIApp:
    path = config_path or os.environ.get("EDGEBOT_CONFIG")
    if not path:
        raise RuntimeError("EDGEBOT_CONFIG is not set: point it at edgebot's config file")
    config = load_config(path)
    logs.configure_from(config.settings)
    resolver = SecretResolver()
    connection = redis_connection(config, resolver)
    metrics.install(connection, config.settings.key_prefix)
    registry = metrics.build_registry(connection, config.settings.key_prefix, metrics.edgebot_queues(config),
                                      fleet=config.settings.metrics_fleet)
    slack = SlackRequestHandler(create_app(config, resolver=resolver, connection=connection), path=SLACK_EVENTS_PATH)

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        route = environ.get("PATH_INFO", "")
        if route in ("/healthz", "/readyz"):
            try:
                ok = bool(connection.ping()) if route == "/readyz" else True
            except Exception:
                ok = False
            body = json.dumps({"ok": ok}).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if route == "/metrics":
            body, content_type = metrics.exposition(registry)
            start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
            return [body]
        return slack(environ, start_response)

    return application
