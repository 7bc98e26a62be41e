"""A Horizon Exchange stand-in (server 2.154.0 behaviour): a real HTTP server on loopback that httpx (or hzn) talks to.

As strict as the real one where edgebot can trip: HTTP Basic ``org/user:pw`` and ``org/apikey:KEY`` only; 201 on
every write (PUT included); 403 on a duplicate POST and on writes by a non-owner or by another org; 404 for empty
lists; the service-id check on PUT; required fields, the version pattern, ``sharable`` values, a signed non-empty
deployment, ``requiredServices`` that must exist for the same arch; policies and patterns that pin only published
versions; keys stored as the raw request body (a JSON wrapper is stored literally, and breaks verification); 415 for
a JSON route called without ``Content-Type: application/json``. ``code`` *and* ``msg`` are translated with
``language="de"``, so a client that branches on text breaks here as it would on a German hub. ``fail_next`` injects
the 502/504 database errors the real server answers, for retry tests.

Rules and messages: ``sandbox/exchange_rules.py``; routes and state: ``sandbox/exchange_routes.py``; sources in
``/work/shared/reference/openhorizon-facts.md``. Run alone (demo):
``python -m sandbox.exchange --port 3090 --org myorg --user myorg/alice:pw [--apikey myorg:KEY:alice]``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copy
import hmac
import json
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from sandbox import exchange_service_policy  # noqa: F401 - registers the service policy routes
from sandbox.exchange_routes import Call, ExchangeState, Identity, Reply, match, now
from sandbox.exchange_rules import ApiError, api_type, form_id, translate
from sandbox.fleet import Fleet

__all__ = ["ExchangeStandIn", "form_id", "main"]

_USER_RE = re.compile(r"(\S*?)/(\S*)")  # ExchangeApiApp: ^(\S*?)/(\S*)$, org before the first slash
_RESERVED_USERS = ("apikey", "iamapikey", "iamtoken")
MAX_BODY = 10 * 1024 * 1024


class ExchangeStandIn:
    """One Exchange: its orgs, users and API keys (set up by the test), and what clients stored through HTTP."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, base_path: str = "/edge-exchange/v1",
                 language: str = "en") -> None:
        if language not in ("en", "de"):
            raise ValueError("language must be 'en' or 'de'")
        self.host, self.port, self.language = host, port, language
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.state = ExchangeState()
        self.fleet = Fleet(self.state)
        """Simulated agent nodes (``sandbox/fleet.py``); its timer thread runs while the stand-in runs."""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()

    def __repr__(self) -> str:  # never a password
        return f"ExchangeStandIn(url={self.url!r}, language={self.language!r})"

    @property
    def url(self) -> str:
        """The base URL clients are configured with (``HZN_EXCHANGE_URL``): includes ``/v1``, no trailing slash."""
        return f"http://{self.host}:{self.port}{self.base_path}"

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> ExchangeStandIn:
        if self._server is not None:
            return self
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="exchange-standin", daemon=True)
        self._thread.start()
        self.fleet.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop kept-alive connections, so clients then see a refused or reset connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self.fleet.stop()
        server.shutdown()
        server.server_close()
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ExchangeStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- set-up ---------------------------------------------------------------------------------------------------
    def add_org(self, org: str) -> None:
        if not org or "/" in org:
            raise ValueError("an org id is non-empty and has no '/'")
        with self.state.lock:
            self.state.orgs.add(org)

    def add_user(self, org: str, username: str, password: str, *, admin: bool = False) -> None:
        if not username or "/" in username or ":" in username or username in _RESERVED_USERS:
            raise ValueError(f"{username!r} cannot be a user name (reserved, or has '/' or ':')")
        self.add_org(org)
        with self.state.lock:
            self.state.users[f"{org}/{username}"] = {"password": password, "admin": admin}

    def add_apikey(self, org: str, key: str, *, owner: str) -> None:
        """An API key of ``org`` acting as ``owner`` (a user of that org): ``org/apikey:KEY`` in Basic auth."""
        with self.state.lock:
            if f"{org}/{owner}" not in self.state.users:
                raise ValueError(f"add the user {org}/{owner} before its API key")
            self.state.apikeys[(org, key)] = f"{org}/{owner}"

    def add_node(self, org: str, node_id: str, arch: str, *, pattern: str = "",
                 properties: list[dict[str, Any]] | None = None, owner: str = "") -> None:
        """A node as ``GET orgs/{org}/node-details`` shows it (minimal: registered, no agreements, nothing running).
        ``owner`` (``org/user``) is the user that registered it: only that user, an org admin or the node itself sees
        it in node-details."""
        self.add_org(org)
        with self.state.lock:
            self.state.nodes.setdefault(org, {})[f"{org}/{node_id}"] = {
                "id": f"{org}/{node_id}", "orgid": org, "arch": arch, "name": node_id, "nodeType": "device",
                "owner": owner, "pattern": pattern, "lastHeartbeat": now(), "lastUpdated": now(),
                "registeredServices": [], "runningServices": "", "services": [], "connectivity": {}, "errors": [],
                "properties": copy.deepcopy(properties or []), "constraints": [], "softwareVersions": {},
                "heartbeatIntervals": {"minInterval": 10, "maxInterval": 120, "intervalAdjustment": 10},
                "clusterNamespace": None, "isNamespaceScoped": False, "publicKey": "", "token": "********",
                "userInput": [], "ha_group": None,
            }

    def set_node_services(self, org: str, node_id: str, services: list[dict[str, Any]]) -> None:
        """What the node's agent last reported in its status (``PUT …/nodes/{n}/status``).

        Each entry: ``{"orgid","serviceUrl","version","arch"}`` (+ optional ``agreementId``, ``containerStatus``,
        ``configState``). ``runningServices`` is built from them like ``PutNodeStatusRequest`` does.
        """
        with self.state.lock:
            node = self.state.nodes[org][f"{org}/{node_id}"]
            entries = [{"agreementId": "", "containerStatus": [], "operatorStatus": None, "configState": "active",
                        **copy.deepcopy(s)} for s in services]
            node["services"] = entries
            node["runningServices"] = (
                "|" + "|".join(f"{s['orgid']}/{s['serviceUrl']}_{s['version']}_{s['arch']}" for s in entries) + "|"
                if entries else "")
            node["lastHeartbeat"] = node["lastUpdated"] = now()

    def fail_next(self, method: str, path_regex: str, status: int, count: int = 1) -> None:
        """The next ``count`` requests whose method matches (``*``: any) and whose path (from ``/``, e.g.
        ``/edge-exchange/v1/orgs/o/services``) matches ``path_regex`` (re.search) answer ``status`` before any
        processing: 502 a database connection error, 504 a database timeout, 400/401/403/404 the ``code`` the real
        server's ApiRespType gives that status (``invalid-input``, ``invalid-credentials``, ``access-denied``,
        ``not-found``: exchange-api ``ApiResponse.scala``), anything else an internal error. A permanent refusal of
        one write (a key PUT answered 403) is what a real server does when, e.g., the user lost its role mid-run."""
        with self.state.lock:
            self.state.faults.append({"method": method.upper(), "re": re.compile(path_regex), "status": status,
                                      "count": count})

    def before_next(self, method: str, path_regex: str, action: Callable[[], None]) -> None:
        """Run ``action`` (in the request's thread) when the next request matching ``method`` and ``path_regex``
        arrives, before it is authenticated: e.g. an admin rotating a password while a client is mid-run."""
        with self.state.lock:
            self.state.faults.append({"method": method.upper(), "re": re.compile(path_regex), "action": action,
                                      "count": 1})

    def delay_next(self, method: str, path_regex: str, seconds: float, count: int = 1) -> None:
        """The next ``count`` matching requests wait ``seconds`` before being processed (outside the state lock),
        then are processed normally: a slow Exchange, or — if the client dies meanwhile — a write that happened
        although its caller never saw the answer."""
        with self.state.lock:
            self.state.delays.append({"method": method.upper(), "re": re.compile(path_regex), "seconds": seconds,
                                      "count": count, "taken": 0})

    def delayed_requests(self) -> int:
        """How many requests have been held back by :meth:`delay_next` so far (answered or still waiting)."""
        with self.state.lock:
            return sum(d["taken"] for d in self.state.delays)

    # -- inspection (deep copies) ---------------------------------------------------------------------------------
    def service(self, org: str, service_id: str) -> dict[str, Any] | None:
        with self.state.lock:
            return copy.deepcopy(self.state.services.get(org, {}).get(service_id))

    def services(self, org: str) -> dict[str, dict[str, Any]]:
        with self.state.lock:
            return copy.deepcopy(self.state.services.get(org, {}))

    def keys(self, org: str, service_id: str) -> dict[str, str]:
        """Key name -> the raw text stored (exactly the request body the client sent)."""
        with self.state.lock:
            return dict(self.state.keys.get((org, service_id), {}))

    def dockauths(self, org: str, service_id: str) -> list[dict[str, Any]]:
        with self.state.lock:
            return copy.deepcopy(self.state.dockauths.get((org, service_id), []))

    def policies(self, org: str) -> dict[str, dict[str, Any]]:
        with self.state.lock:
            return copy.deepcopy(self.state.policies.get(org, {}))

    def patterns(self, org: str) -> dict[str, dict[str, Any]]:
        with self.state.lock:
            return copy.deepcopy(self.state.patterns.get(org, {}))

    def nodes(self, org: str) -> dict[str, dict[str, Any]]:
        with self.state.lock:
            return copy.deepcopy(self.state.nodes.get(org, {}))

    def requests(self) -> list[dict[str, Any]]:
        """Every request answered: ``{"method","path","status","user"}`` (``user`` is who it acted as, or "")."""
        with self.state.lock:
            return copy.deepcopy(self.state.requests)

    # -- used by the handler --------------------------------------------------------------------------------------
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


class _Handler(BaseHTTPRequestHandler):
    owner: ExchangeStandIn
    protocol_version = "HTTP/1.1"  # keep-alive, like the real server behind its route
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stalls
    timeout = 120  # an idle kept-alive connection is dropped eventually

    def setup(self) -> None:
        super().setup()
        self.owner._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet; requests() has the record
        pass

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # -- one request ----------------------------------------------------------------------------------------------
    def _handle(self) -> None:
        method, standin, state = self.command, self.owner, self.owner.state
        split = urlsplit(self.path)
        path, user = split.path, ""
        try:
            body = self._body()
            with state.lock:
                delay = self._take_delay(method, path)
            if delay:
                time.sleep(delay)
            with state.lock:
                self._inject_fault(method, path)
            prefix = standin.base_path + "/"
            if not path.startswith(prefix):
                raise ApiError(404, "not-found", "unrecognized.route")
            found = match([unquote(p) for p in path[len(prefix):].rstrip("/").split("/")])
            if found is None:
                raise ApiError(404, "not-found", "unrecognized.route")
            handlers, params = found
            if method not in handlers:
                allowed = ", ".join(sorted(handlers))
                raise ApiError(405, "invalid-input", "method.not.allowed", allowed, headers={"Allow": allowed})
            who = self._authenticate()
            user = who.user
            call = Call(method, params, dict(parse_qsl(split.query)), body, self.headers.get("Content-Type", ""), who)
            with state.lock:
                reply = handlers[method](state, call)
                if method != "GET" and reply.status < 300:
                    state.generation += 1
        except ApiError as exc:
            reply = Reply(exc.status, {"code": api_type(standin.language, exc.code),
                                       "msg": translate(standin.language, exc.key, *exc.args_)})
            self._respond(method, path, user, reply, exc.headers)
            return
        except Exception as exc:  # a stand-in bug must show up loudly, as a 500
            reply = Reply(500, {"code": api_type(standin.language, "internal_error"),
                                "msg": translate(standin.language, "internal.error", type(exc).__name__)})
        if reply.message is not None:
            key, args = reply.message
            reply.body = {"code": api_type(standin.language, "ok"), "msg": translate(standin.language, key, *args)}
        self._respond(method, path, user, reply, {})

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if sum(map(len, chunks)) > MAX_BODY:
                    self.close_connection = True
                    raise ApiError(413, "invalid-input", "invalid.input.message", "the body is too large")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, "invalid-input", "invalid.input.message", "the body is too large")
        return self.rfile.read(length) if length > 0 else b""

    def _take_delay(self, method: str, path: str) -> float:
        for delay in self.owner.state.delays:
            if delay["count"] > 0 and delay["method"] in ("*", method) and delay["re"].search(path):
                delay["count"] -= 1
                delay["taken"] += 1
                return float(delay["seconds"])
        return 0.0

    def _inject_fault(self, method: str, path: str) -> None:
        for fault in self.owner.state.faults:
            if fault["count"] > 0 and fault["method"] in ("*", method) and fault["re"].search(path):
                fault["count"] -= 1
                if "action" in fault:
                    fault["action"]()
                    continue
                status = fault["status"]
                code = {502: "database-connection-error", 504: "database-timeout", 400: "invalid-input",
                        401: "invalid-credentials", 403: "access-denied",
                        404: "not-found"}.get(status, "internal_error")
                if status in (400, 401, 403, 404):
                    raise ApiError(status, code, "invalid.input.message", "refused (injected)")
                raise ApiError(status, code, "db.threw.exception", "org.postgresql.util.PSQLException (injected)")

    def _authenticate(self) -> Identity:
        """HTTP Basic only; ``org/user:password`` or ``org/apikey:KEY``. Every failure is the same 401."""
        denied = ApiError(401, "invalid-credentials", "invalid.credentials")
        scheme, _, encoded = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise denied
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise denied from None
        username, sep, password = decoded.partition(":")
        found = _USER_RE.fullmatch(username)
        if not sep or found is None:
            raise denied
        org, name = found.groups()
        state = self.owner.state
        with state.lock:
            if name == "apikey":
                owner = state.apikeys.get((org, password))
                record = state.users.get(owner or "")
                if owner is None or record is None:
                    raise denied
                return Identity(owner, bool(record["admin"]))
            record = state.users.get(f"{org}/{name}")
            if record is None or not hmac.compare_digest(record["password"].encode(), password.encode()):
                raise denied
            return Identity(f"{org}/{name}", bool(record["admin"]))

    def _respond(self, method: str, path: str, user: str, reply: Reply, headers: dict[str, str]) -> None:
        if reply.body is None:
            data = b""
        elif isinstance(reply.body, str) and not reply.content_type.startswith("application/json"):
            data = reply.body.encode("utf-8")
        else:
            data = json.dumps(reply.body, ensure_ascii=False).encode("utf-8")
        with self.owner.state.lock:  # recorded before the answer leaves, so a test that got it also sees the record
            self.owner.state.requests.append({"method": method, "path": path, "status": reply.status, "user": user})
        self.send_response(reply.status)
        if reply.status != 204:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if data:
            self.wfile.write(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.exchange", description="Horizon Exchange stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3090)
    parser.add_argument("--base-path", default="/edge-exchange/v1")
    parser.add_argument("--language", choices=("en", "de"), default="en")
    parser.add_argument("--org", action="append", default=[], help="an org (repeatable)")
    parser.add_argument("--user", action="append", default=[], help="ORG/USER:PASSWORD (repeatable)")
    parser.add_argument("--admin", action="append", default=[], help="ORG/USER:PASSWORD of an org admin")
    parser.add_argument("--apikey", action="append", default=[], help="ORG:KEY:OWNER (repeatable)")
    args = parser.parse_args(argv)
    standin = ExchangeStandIn(host=args.host, port=args.port, base_path=args.base_path, language=args.language)
    try:
        for org in args.org:
            standin.add_org(org)
        for spec, admin in [(s, False) for s in args.user] + [(s, True) for s in args.admin]:
            who, sep, password = spec.partition(":")
            org, slash, name = who.partition("/")
            if not (sep and slash and org and name):
                parser.error(f"--user/--admin takes ORG/USER:PASSWORD, got {who!r}…")
            standin.add_user(org, name, password, admin=admin)
        for spec in args.apikey:
            parts = spec.split(":")
            if len(parts) < 3:
                parser.error("--apikey takes ORG:KEY:OWNER")
            standin.add_apikey(parts[0], ":".join(parts[1:-1]), owner=parts[-1])
    except ValueError as exc:
        parser.error(str(exc))
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    standin.start()
    print(standin.url, flush=True)
    stopped.wait()
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
