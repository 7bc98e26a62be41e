"""A stand-in for the Slack Web API: a real HTTP server on loopback that ``slack_sdk.WebClient`` talks to unchanged.

Why a server and not a mock: the bot and the workers build their ``WebClient`` from a configured ``api_url``, and
Bolt's ``respond()`` posts to whatever ``response_url`` Slack handed out. Pointing both at this server exercises the
real request encoding (JSON for write methods, form-encoded for the rest, the ``Authorization: Bearer`` token), the
real error answers (HTTP 200 with ``ok: false``), Block Kit limits and 429 rate limiting with ``Retry-After``.

Run it alone for the demo console: ``python -m sandbox.slack --port 8790 --token xoxb-… --channel C123:general``.
Another process reads what it holds through ``GET /_standin/messages?channel=…``, ``/_standin/thread``,
``/_standin/ephemerals``, ``/_standin/calls`` and ``/_standin/views``, and sets it up through ``POST
/_standin/channels``, ``/_standin/users``, ``/_standin/usergroups``, ``/_standin/response_urls``,
``/_standin/trigger_ids`` and ``/_standin/rate_limits``, and posts as a person through ``POST /_standin/messages``.
"""

from __future__ import annotations

import argparse
import copy
import hmac
import json
import logging
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sandbox.slack_api import JSON_METHODS, ApiError, Workspace
from sandbox.slack_limits import REAL_TIER_LIMITS, RateLimiter
from sandbox.slack_socket import SocketModeLink

__all__ = ["REAL_TIER_LIMITS", "SlackStandIn", "main"]

log = logging.getLogger(__name__)
MAX_BODY = 10 * 1024 * 1024


class SlackStandIn:
    """The Slack Web API of one workspace, plus the response_url hooks and HTTP inspection endpoints."""

    def __init__(self, *, bot_token: str = "xoxb-test-token", team_id: str = "T0EDGE", bot_user_id: str = "U0EDGEBOT",
                 host: str = "127.0.0.1", port: int = 0, rate_limits: dict[str, tuple[int, float]] | None = None,
                 team_domain: str = "edge-sandbox", app_token: str = "xapp-sandbox-app-token") -> None:
        self._token = bot_token
        self._app_token = app_token
        self.socket_link: SocketModeLink | None = None
        """Socket Mode's WebSocket endpoint, once :meth:`socket_mode` started it."""
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.workspace = Workspace(team_id=team_id, bot_user_id=bot_user_id, team_domain=team_domain)
        self.limiter = RateLimiter(rate_limits)
        self._calls: list[dict[str, Any]] = []
        self._exchanges: list[dict[str, Any]] = []  # every call's full arguments and answer, for redaction scans
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.api_url = ""

    def __repr__(self) -> str:  # never the token
        return f"SlackStandIn(team_id={self.team_id!r}, base_url={self.base_url!r})"

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> SlackStandIn:
        if self._server is not None:
            return self
        standin = self

        class Handler(_Handler):
            owner = standin

        server = ThreadingHTTPServer((self._host, self._port), Handler)
        server.daemon_threads = True
        self._server = server
        port = server.server_address[1]
        self.base_url = f"http://{self._host}:{port}"
        self.api_url = self.base_url + "/api/"
        self.workspace.upload_base = self.base_url + "/upload/v1/"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="slack-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.socket_link is not None:
            self.socket_link.stop()
            self.socket_link = None
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- set-up -------------------------------------------------------------------------------------------------
    def add_channel(self, channel_id: str, name: str, *, bot_member: bool = True, is_private: bool = False,
                    kind: str = "") -> None:
        self.workspace.add_channel(channel_id, name, bot_member=bot_member, is_private=is_private, kind=kind)

    def add_user(self, user_id: str, name: str) -> None:
        self.workspace.add_user(user_id, name)

    def add_usergroup(self, usergroup_id: str, handle: str, users: list[str]) -> None:
        self.workspace.add_usergroup(usergroup_id, handle, users)

    def post_user_message(self, channel_id: str, user_id: str, text: str, *, thread_ts: str | None = None) -> str:
        """A person (not the bot) writes in ``channel_id``; returns the message ts."""
        return self.workspace.post_user_message(channel_id, user_id, text, thread_ts=thread_ts)

    def set_rate_limit(self, method: str, count: int | None, per: float = 60.0) -> None:
        """Limit ``method`` to ``count`` calls per ``per`` seconds (``None`` removes the limit)."""
        self.limiter.set_limit(method, count, per)

    def new_response_url(self, channel_id: str, user_id: str, *, message_ts: str | None = None) -> str:
        """A response_url for a slash command, or for a click on message ``message_ts`` (then replace_original
        and delete_original act on that message). Like Slack's: five posts within thirty minutes."""
        kind = "actions" if message_ts else "commands"
        key = self.workspace.new_response_url_id(channel_id, user_id, message_ts)
        return f"{self.base_url}/{kind}/{self.team_id}/{key}"

    def new_trigger_id(self, user_id: str) -> str:
        """A trigger_id for ``views.open``: usable once, for three seconds, like Slack's."""
        return self.workspace.new_trigger_id(user_id)

    # -- inspection (deep copies) ---------------------------------------------------------------------------------
    def messages(self, channel_id: str) -> list[dict[str, Any]]:
        """Every message of the channel (roots and replies) in posting order: ts, thread_ts, user, text, blocks,
        attachments, edits (one entry per chat.update), orphan (a reply whose thread_ts named no message)."""
        return self.workspace.messages(channel_id)

    def thread(self, channel_id: str, thread_ts: str) -> list[dict[str, Any]]:
        return self.workspace.thread(channel_id, thread_ts)

    def ephemerals(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        return self.workspace.ephemerals(channel_id)

    def views(self) -> list[dict[str, Any]]:
        return self.workspace.views()

    def find_message(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        return self.workspace.find_message(channel_id, ts)

    def api_message(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        """The message as Slack puts it in API answers and interaction payloads (type, user, bot_id, …)."""
        return self.workspace.api_message(channel_id, ts)

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        with self.workspace.lock:
            return copy.deepcopy([c for c in self._calls if method is None or c["method"] == method])

    def exchanges(self) -> list[dict[str, Any]]:
        """Every Web API call and response_url post in full: ``{"method", "args", "response"}`` (the token that
        authenticated the call is not part of ``args``)."""
        with self.workspace.lock:
            return copy.deepcopy(self._exchanges)

    # -- request handling (called by the HTTP handler) -------------------------------------------------------------
    def _record(self, method: str, status: int, body: dict[str, Any], args: dict[str, Any]) -> None:
        entry: dict[str, Any] = {"method": method, "ok": bool(body.get("ok")), "error": body.get("error"),
                                 "status": status}
        if body.get("warning"):
            entry["warning"] = body["warning"]
        for key in ("channel", "ts", "thread_ts"):
            if isinstance(args.get(key), str):
                entry[key] = args[key]
        with self.workspace.lock:
            self._calls.append(entry)

    def _authenticate(self, header: str | None, args: dict[str, Any], *, app_level: bool = False) -> None:
        """The bot token for Web API methods; the app-level token (``xapp-``) only for apps.connections.open."""
        token = ""
        if header:
            scheme, _, value = header.partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else ""
        token = token or str(args.pop("token", "") or "")
        args.pop("token", None)
        if not token:
            raise ApiError("not_authed")
        expected, other = (self._app_token, self._token) if app_level else (self._token, self._app_token)
        if hmac.compare_digest(token.encode(), other.encode()):
            raise ApiError("not_allowed_token_type")
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise ApiError("invalid_auth")

    # -- Socket Mode -----------------------------------------------------------------------------------------------
    def socket_mode(self) -> SocketModeLink:
        """Enable Socket Mode: apps.connections.open then hands out URLs of a real WebSocket endpoint."""
        if self.socket_link is None:
            self.socket_link = SocketModeLink(self.team_id, host=self._host).start()
        return self.socket_link

    def _connections_open(self, args: dict[str, Any], authorization: str | None) -> dict[str, Any]:
        self._authenticate(authorization, args, app_level=True)
        if self.socket_link is None:
            raise ApiError("not_allowed", detail="Socket Mode is not enabled for this app")
        return {"ok": True, "url": self.socket_link.new_url()}

    def handle_api(self, method: str, args: dict[str, Any], authorization: str | None) -> tuple[int, dict[str, Any],
                                                                                                 dict[str, str]]:
        """One Web API call: (HTTP status, JSON body, extra headers)."""
        status, headers = 200, dict[str, str]()
        if method == "apps.connections.open":
            try:
                body = self._connections_open(args, authorization)
            except ApiError as exc:
                body = {"ok": False, "error": exc.error, **exc.extra}
            self._record(method, status, body, {})
            return status, body, headers
        try:
            handler = self.workspace.methods.get(method)
            if handler is None:
                raise ApiError("unknown_method", req_method=method)
            self._authenticate(authorization, args)
            retry_after = self.limiter.check(self.team_id, method)
            if retry_after:
                status, headers = 429, {"Retry-After": str(retry_after)}
                raise ApiError("ratelimited")
            with self.workspace.lock:
                body = handler(args)
        except ApiError as exc:
            body = {"ok": False, "error": exc.error, **exc.extra}
        except Exception:  # a bug in the stand-in: answer like Slack's internal error, log without arguments
            log.exception("slack stand-in: %s failed", method)
            body = {"ok": False, "error": "fatal_error"}
        self._record(method, status, body, args)
        with self.workspace.lock:
            self._exchanges.append(copy.deepcopy({"method": method, "args": args, "response": body}))
        return status, body, headers

    def handle_response_url(self, key: str, body: dict[str, Any]) -> tuple[int, str]:
        status, text = self.workspace.respond(key, body)
        self._record("response_url", status, {"ok": status == 200, "error": None if status == 200 else text}, {})
        with self.workspace.lock:
            self._exchanges.append(copy.deepcopy({"method": "response_url", "args": body, "response": text}))
        return status, text

    def handle_upload(self, key: str, data: bytes) -> tuple[int, str]:
        """A POST to an upload URL of files.getUploadURLExternal (no token: the URL is the credential)."""
        status, text = self.workspace.upload(key, data)
        self._record("upload", status, {"ok": status == 200, "error": None if status == 200 else text}, {})
        return status, text

    def files(self) -> list[dict[str, Any]]:
        """Every file of the workspace: ``id``, ``name``, ``title``, ``data`` (bytes), ``completed``, ``shares``."""
        return self.workspace.files()

    def handle_control(self, verb: str, path: str, query: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        """The ``/_standin/…`` endpoints for another process (the demo console)."""
        ws = self.workspace
        if verb == "GET":
            if path == "messages":
                channel = query.get("channel")
                return 200, {"ok": True, "messages": ws.messages(channel) if channel else ws.all_messages()}
            if path == "thread" and query.get("channel") and query.get("ts"):
                return 200, {"ok": True, "messages": ws.thread(query["channel"], query["ts"])}
            if path == "ephemerals":
                return 200, {"ok": True, "ephemerals": ws.ephemerals(query.get("channel"))}
            if path == "calls":
                return 200, {"ok": True, "calls": self.calls(query.get("method"))}
            if path == "views":
                return 200, {"ok": True, "views": ws.views()}
            if path == "channels":
                with ws.lock:
                    return 200, {"ok": True, "channels": copy.deepcopy(list(ws.channels.values()))}
            return 404, {"ok": False, "error": "not_found"}
        try:
            if path == "channels":
                self.add_channel(str(body["id"]), str(body["name"]), bot_member=bool(body.get("bot_member", True)),
                                 is_private=bool(body.get("is_private", False)), kind=str(body.get("kind") or ""))
                return 200, {"ok": True}
            if path == "users":
                self.add_user(str(body["id"]), str(body["name"]))
                return 200, {"ok": True}
            if path == "usergroups":
                self.add_usergroup(str(body["id"]), str(body["handle"]), [str(u) for u in body["users"]])
                return 200, {"ok": True}
            if path == "response_urls":
                url = self.new_response_url(str(body["channel"]), str(body["user"]), message_ts=body.get("message_ts"))
                return 200, {"ok": True, "response_url": url}
            if path == "messages":
                ts = self.post_user_message(str(body["channel"]), str(body["user"]), str(body["text"]),
                                            thread_ts=body.get("thread_ts"))
                return 200, {"ok": True, "ts": ts}
            if path == "trigger_ids":
                return 200, {"ok": True, "trigger_id": self.new_trigger_id(str(body["user"]))}
            if path == "rate_limits":
                count = body.get("count")
                self.set_rate_limit(str(body["method"]), None if count is None else int(count),
                                    float(body.get("per", 60.0)))
                return 200, {"ok": True, "rate_limits": {k: list(v) for k, v in self.limiter.limits().items()}}
        except (KeyError, TypeError, ValueError) as exc:
            return 400, {"ok": False, "error": "invalid_arguments", "detail": f"missing or bad field: {exc}"}
        return 404, {"ok": False, "error": "not_found"}


class _Handler(BaseHTTPRequestHandler):
    owner: SlackStandIn
    server_version = "slack-standin/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("slack stand-in: " + format, *args)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), "application/json; charset=utf-8", headers)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("POST")

    def _dispatch(self, verb: str) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            raw = self._body()
        except ValueError:
            self._json(413, {"ok": False, "error": "request_too_large"})
            return
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        parts = url.path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            self._api(parts[1], query, raw, content_type)
        elif parts[0] in ("commands", "actions") and len(parts) == 4 and verb == "POST":
            self._response_url("/".join(parts[2:]), raw, content_type)
        elif parts[:2] == ["upload", "v1"] and len(parts) == 3 and verb == "POST":
            status, text = self.owner.handle_upload(parts[2], raw)
            self._send(status, text.encode(), "text/plain; charset=utf-8")
        elif parts[0] == "_standin" and len(parts) == 2:
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                self._json(400, {"ok": False, "error": "invalid_json"})
                return
            status, answer = self.owner.handle_control(verb, parts[1], query, body if isinstance(body, dict) else {})
            self._json(status, answer)
        else:
            self._json(404, {"ok": False, "error": "not_found"})

    def _api(self, method: str, query: dict[str, str], raw: bytes, content_type: str) -> None:
        args: dict[str, Any] = dict(query)
        if content_type == "application/json":
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                self._json(200, {"ok": False, "error": "invalid_json"})
                return
            if isinstance(body, dict) and method in JSON_METHODS:
                body.pop("token", None)  # Slack reads the token of a JSON post only from the header
                args.update(body)
        elif raw:
            args.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        status, body, headers = self.owner.handle_api(method, args, self.headers.get("Authorization"))
        self._json(status, body, headers)

    def _response_url(self, key: str, raw: bytes, content_type: str) -> None:
        try:
            if content_type == "application/json" or raw.startswith(b"{"):
                body = json.loads(raw or b"{}")
            else:  # Slack also takes payload=<json> form posts on hooks
                body = json.loads(dict(parse_qsl(raw.decode())).get("payload", "{}"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._send(400, b"invalid_payload", "text/plain; charset=utf-8")
            return
        if not isinstance(body, dict):
            self._send(400, b"invalid_payload", "text/plain; charset=utf-8")
            return
        status, text = self.owner.handle_response_url(key, body)
        self._send(status, text.encode(), "text/plain; charset=utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Slack Web API stand-in in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="xoxb-test-token", help="the bot token clients must present")
    parser.add_argument("--team", default="T0EDGE")
    parser.add_argument("--channel", action="append", default=[], metavar="ID:NAME",
                        help="a channel the bot is in (repeatable); ID:NAME:private for a private one")
    parser.add_argument("--user", action="append", default=[], metavar="ID:NAME", help="a user (repeatable)")
    parser.add_argument("--real-limits", action="store_true", help="enforce Slack's documented method rate limits")
    args = parser.parse_args(argv)
    standin = SlackStandIn(bot_token=args.token, team_id=args.team, host=args.host, port=args.port,
                           rate_limits=REAL_TIER_LIMITS if args.real_limits else None)
    standin.start()
    for spec in args.channel:
        channel_id, _, rest = spec.partition(":")
        name, _, flag = rest.partition(":")
        standin.add_channel(channel_id, name or channel_id.lower(), is_private=flag == "private")
    for spec in args.user:
        user_id, _, name = spec.partition(":")
        standin.add_user(user_id, name or user_id.lower())
    stop = threading.Event()

    def stop_on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, stop_on_signal)
    print(f"slack stand-in: api_url {standin.api_url}", flush=True)
    stop.wait()
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
