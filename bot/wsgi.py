"""The bot as a WSGI application: Slack's requests on ``/slack/events``, health on ``/healthz`` and ``/readyz``,
Prometheus metrics on ``/metrics``.

Run it behind gunicorn (``edgebot serve`` does that), or ``gunicorn 'bot.wsgi:create()'`` with ``EDGEBOT_CONFIG``.

Before Bolt sees a request on ``/slack/events``, :func:`guard` refuses a body over ``max_request_bytes`` (413, read no
further than the limit) and one without a valid Slack signature (401): Bolt would log an unsigned body whole, and
nobody verified who sent it, so its body is never logged, only its size.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.signature import SignatureVerifier

from bot.app import create_app, redis_connection
from edgebot import logs, metrics
from edgebot.config import load_config
from edgebot.secrets import SecretResolver

log = logging.getLogger(__name__)

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
    bolt = SlackRequestHandler(create_app(config, resolver=resolver, connection=connection), path=SLACK_EVENTS_PATH)
    verifier = SignatureVerifier(resolver.resolve(config.slack.signing_secret).reveal())
    slack = guard(bolt, verifier, config.settings.max_request_bytes)

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


def _refuse(start_response: Callable[..., Any], status: str, error: str) -> Iterable[bytes]:
    body = json.dumps({"error": error}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def guard(inner: WSGIApp, verifier: SignatureVerifier, max_bytes: int) -> WSGIApp:
    """Slack's endpoint, behind a size limit and a signature check that run before anything parses the body.

    A declared ``Content-Length`` over ``max_bytes`` is refused unread; a body without one is read up to one byte past
    the limit. Only a signed body reaches ``inner`` (from memory, with its exact length).
    """

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") != "POST":
            return inner(environ, start_response)
        declared = str(environ.get("CONTENT_LENGTH") or "").strip()
        if declared and (not declared.isdigit() or int(declared) > max_bytes):
            log.info("refused a request of %s bytes on %s (the limit is %d)", declared[:20],
                     environ.get("PATH_INFO", ""), max_bytes)
            return _refuse(start_response, "413 Content Too Large", "request body too large")
        stream = environ.get("wsgi.input")
        body = stream.read(int(declared) if declared else max_bytes + 1) if stream is not None else b""
        if len(body) > max_bytes:
            log.info("refused a request of more than %d bytes on %s", max_bytes, environ.get("PATH_INFO", ""))
            return _refuse(start_response, "413 Content Too Large", "request body too large")
        headers = {"x-slack-request-timestamp": str(environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")),
                   "x-slack-signature": str(environ.get("HTTP_X_SLACK_SIGNATURE", ""))}
        if not headers["x-slack-request-timestamp"].isdigit() or not verifier.is_valid_request(body, headers):
            log.info("refused a request without a valid Slack signature: %d bytes on %s (body not logged)",
                     len(body), environ.get("PATH_INFO", ""))
            return _refuse(start_response, "401 Unauthorized", "invalid request")
        environ = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
        return inner(environ, start_response)

    return application
