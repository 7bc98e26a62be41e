"""A Horizon Exchange stand-in (server 2.154.0 behaviour) as a real HTTP server on loopback.

As strict as the real one where edgebot can trip: Basic auth ``org/user:pw`` and ``org/apikey:KEY``; 201 on every
write (PUT included); 403 on a duplicate POST and on writes by a non-owner or another org; 404 for empty lists; the
service-id check on PUT; required fields, the version pattern, ``sharable`` values, a signed non-empty deployment,
``requiredServices`` that must exist for the same arch; key bodies stored raw (a JSON wrapper is stored literally and
breaks verification). ``code``/``msg`` can be translated (``language="de"``) so clients that branch on text break.
Facts and sources: ../shared/reference/openhorizon-facts.md.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

VERSION_RE = re.compile(r"^\d+(\.\d+){0,2}$")
SHARABLE = ("exclusive", "single", "singleton", "multiple")
_SANITIZE_RE = re.compile(r"[$!*,;/?@&~=%]")
_SCHEME_RE = re.compile(r"^[A-Za-z0-9+.-]*?://")
_USER_RE = re.compile(r"^(\S*?)/(\S*)$")

MESSAGES = {
    "en": {"ok": "ok", "invalid-credentials": "invalid-credentials", "access-denied": "access-denied",
           "already-exists": "already-exists", "invalid-input": "invalid-input", "not-found": "not-found",
           "internal_error": "internal_error"},
    "de": {"ok": "ok", "invalid-credentials": "Ungueltige_Anmeldedaten", "access-denied": "Zugriff_verweigert",
           "already-exists": "Bereits_vorhanden", "invalid-input": "Ungueltige_Eingabe", "not-found": "Nicht_gefunden",
           "internal_error": "Interner_Fehler"},
}


def form_id(url: str, version: str, arch: str) -> str:
    return f"{_SANITIZE_RE.sub('-', _SCHEME_RE.sub('', url, count=1))}_{version}_{arch}"


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = [int(p) for p in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def in_range(version: str, spec: str) -> bool:
    """Open Horizon version ranges: ``1.2.3`` means [1.2.3, INFINITY); ``[a,b)`` / ``(a,b]`` bounds."""
    spec = spec.strip()
    if not spec or not VERSION_RE.match(version):
        return False
    if spec[0] not in "[(":
        return _version_tuple(version) >= _version_tuple(spec) if VERSION_RE.match(spec) else False
    low, _, high = spec[1:-1].partition(",")
    v = _version_tuple(version)
    lo_ok = v >= _version_tuple(low) if spec[0] == "[" else v > _version_tuple(low)
    if high.strip().upper() == "INFINITY":
        return lo_ok
    return lo_ok and (v <= _version_tuple(high) if spec[-1] == "]" else v < _version_tuple(high))


class ApiError(Exception):
    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.orgs: set[str] = set()
        self.users: dict[str, dict[str, Any]] = {}  # "org/user" -> {password, admin}
        self.apikeys: dict[tuple[str, str], str] = {}  # (org, key) -> "org/user"
        self.services: dict[str, dict[str, dict[str, Any]]] = {}
        self.keys: dict[tuple[str, str], dict[str, str]] = {}
        self.dockauths: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.policies: dict[str, dict[str, dict[str, Any]]] = {}
        self.patterns: dict[str, dict[str, dict[str, Any]]] = {}
        self.nodes: dict[str, dict[str, dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class ExchangeStandIn:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, base_path: str = "/edge-exchange/v1",
                 language: str = "en") -> None:
        self.host, self.port, self.base_path, self.language = host, port, base_path.rstrip("/"), language
        self.state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.base_path}"

    def start(self) -> ExchangeStandIn:
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="exchange-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ExchangeStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- set-up and inspection --------------------------------------------------------------------------------------
    def add_org(self, org: str) -> None:
        with self.state.lock:
            self.state.orgs.add(org)

    def add_user(self, org: str, username: str, password: str, *, admin: bool = False) -> None:
        with self.state.lock:
            self.state.orgs.add(org)
            self.state.users[f"{org}/{username}"] = {"password": password, "admin": admin}

    def add_apikey(self, org: str, key: str, *, owner: str) -> None:
        with self.state.lock:
            self.state.apikeys[(org, key)] = f"{org}/{owner}"

    def add_node(self, org: str, node_id: str, arch: str, *, pattern: str = "",
                 properties: list[dict[str, Any]] | None = None) -> None:
        with self.state.lock:
            self.state.nodes.setdefault(org, {})[f"{org}/{node_id}"] = {
                "id": f"{org}/{node_id}", "orgid": org, "arch": arch, "name": node_id, "nodeType": "device",
                "owner": "", "pattern": pattern, "lastHeartbeat": _now(), "registeredServices": [],
                "runningServices": "|", "services": [], "connectivity": {}, "errors": [],
                "properties": properties or [], "constraints": [], "softwareVersions": {},
            }

    def service(self, org: str, sid: str) -> dict[str, Any] | None:
        with self.state.lock:
            found = self.state.services.get(org, {}).get(sid)
            return copy.deepcopy(found)

    def services(self, org: str) -> dict[str, dict[str, Any]]:
        with self.state.lock:
            return copy.deepcopy(self.state.services.get(org, {}))

    def keys(self, org: str, sid: str) -> dict[str, str]:
        with self.state.lock:
            return dict(self.state.keys.get((org, sid), {}))

    def dockauths(self, org: str, sid: str) -> list[dict[str, Any]]:
        with self.state.lock:
            return copy.deepcopy(self.state.dockauths.get((org, sid), []))

    def requests(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return copy.deepcopy(self.state.requests)

    def fail_next(self, method: str, path_regex: str, status: int, count: int = 1) -> None:
        with self.state.lock:
            self.state.faults.append({"method": method.upper(), "re": re.compile(path_regex), "status": status,
                                      "count": count})

    def msg(self, code: str) -> str:
        return MESSAGES.get(self.language, MESSAGES["en"]).get(code, code)


class _Handler(BaseHTTPRequestHandler):
    owner: ExchangeStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    # -- plumbing --
    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str) and content_type.startswith("text"):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str, msg: str) -> None:
        self._send(status, {"code": self.owner.msg(code), "msg": msg})

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        state = self.owner.state
        user = ""
        status = 500
        try:
            if not path.startswith(self.owner.base_path + "/"):
                raise ApiError(404, "not-found", "unrecognized route")
            route = [unquote(p) for p in path[len(self.owner.base_path) + 1:].split("/") if p]
            with state.lock:
                for fault in state.faults:
                    if fault["count"] > 0 and fault["method"] == method and fault["re"].search(path):
                        fault["count"] -= 1
                        raise ApiError(fault["status"], "internal_error", "database-connection-error (injected)")
            user, admin = self._authenticate()
            status, body, ctype = self._route(method, route, raw, user, admin)
            self._send(status, body, ctype)
        except ApiError as exc:
            status = exc.status
            self._error(exc.status, exc.code, exc.msg)
        except Exception as exc:  # a stand-in bug must show up as a 500, loudly
            status = 500
            self._error(500, "internal_error", f"stand-in error: {type(exc).__name__}: {exc}")
        with state.lock:
            state.requests.append({"method": method, "path": path, "status": status, "user": user})

    def _authenticate(self) -> tuple[str, bool]:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            raise ApiError(401, "invalid-credentials", "invalid credentials")
        try:
            username, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            raise ApiError(401, "invalid-credentials", "invalid credentials") from None
        match = _USER_RE.match(username)
        if not match:
            raise ApiError(401, "invalid-credentials", "invalid credentials")
        org, name = match.groups()
        state = self.owner.state
        with state.lock:
            if name == "apikey":
                owner = state.apikeys.get((org, password))
                if owner is None:
                    raise ApiError(401, "invalid-credentials", "invalid credentials")
                return owner, bool(state.users.get(owner, {}).get("admin"))
            record = state.users.get(f"{org}/{name}")
            if record is None or record["password"] != password:
                raise ApiError(401, "invalid-credentials", "invalid credentials")
            return f"{org}/{name}", bool(record["admin"])

    @staticmethod
    def _json(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise ApiError(400, "invalid-input", "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid-input", "the request body must be a JSON object")
        return body

    def _route(self, method: str, route: list[str], raw: bytes, user: str,
               admin: bool) -> tuple[int, Any, str]:
        if len(route) < 2 or route[0] != "orgs":
            raise ApiError(404, "not-found", "unrecognized route")
        org, rest = route[1], route[2:]
        user_org = user.split("/", 1)[0]
        if org not in self.owner.state.orgs:
            raise ApiError(404 if method == "GET" else 403, "not-found", f"org '{org}' not found")
        if user_org != org and user_org != "root":
            raise ApiError(403, "access-denied", f"access denied: {user} may not access org {org}")
        if rest[:1] == ["services"]:
            return _Services(self.owner, org, user, admin).handle(method, rest[1:], raw)
        if rest[:2] in (["business", "policies"], ["deployment", "policies"]):
            return _Objects(self.owner, org, user, "policies", "businessPolicy").handle(method, rest[2:], raw)
        if rest[:1] == ["patterns"] or rest[:2] == ["deployment", "patterns"]:
            tail = rest[1:] if rest[0] == "patterns" else rest[2:]
            return _Objects(self.owner, org, user, "patterns", "patterns").handle(method, tail, raw)
        if rest == ["node-details"] and method == "GET":
            with self.owner.state.lock:
                nodes = list(self.owner.state.nodes.get(org, {}).values())
            if not nodes:
                raise ApiError(404, "not-found", "not found")
            return 200, copy.deepcopy(nodes), "application/json"
        if rest == ["search", "nodes", "service"] and method == "POST":
            body = self._json(raw)
            wanted = f"|{body.get('orgid')}/{body.get('serviceURL')}_{body.get('serviceVersion')}_" \
                     f"{body.get('serviceArch')}|"
            with self.owner.state.lock:
                found = [[n["id"], n.get("lastHeartbeat")] for n in self.owner.state.nodes.get(org, {}).values()
                         if wanted in n.get("runningServices", "")]
            return (201, {"nodes": found}, "application/json") if found else (404, {"nodes": []}, "application/json")
        raise ApiError(404, "not-found", "unrecognized route")


def _ok(msg: str) -> dict[str, str]:
    return {"code": "ok", "msg": msg}


class _Services:
    def __init__(self, owner: ExchangeStandIn, org: str, user: str, admin: bool) -> None:
        self.owner, self.org, self.user, self.admin = owner, org, user, admin
        self.state = owner.state

    def handle(self, method: str, rest: list[str], raw: bytes) -> tuple[int, Any, str]:
        s = self.state
        with s.lock:
            table = s.services.setdefault(self.org, {})
            if not rest:
                if method == "GET":
                    if not table:
                        raise ApiError(404, "not-found", "not found")
                    return 200, {"services": {f"{self.org}/{k}": v for k, v in table.items()}, "lastIndex": 0}, \
                        "application/json"
                if method == "POST":
                    body = self._validate(_Handler._json(raw))
                    sid = form_id(body["url"], body["version"], body["arch"])
                    if sid in table:
                        raise ApiError(403, "already-exists", f"service '{self.org}/{sid}' already exists")
                    table[sid] = {**body, "owner": self.user, "lastUpdated": _now()}
                    return 201, _ok(f"service '{self.org}/{sid}' created"), "application/json"
                raise ApiError(405, "invalid-input", "method not allowed")
            sid = rest[0]
            current = table.get(sid)
            if len(rest) == 1:
                if method == "GET":
                    if current is None:
                        raise ApiError(404, "not-found", f"service '{self.org}/{sid}' not found")
                    return 200, {"services": {f"{self.org}/{sid}": current}, "lastIndex": 0}, "application/json"
                if method == "PUT":
                    if current is None:
                        raise ApiError(404, "not-found", f"service '{self.org}/{sid}' not found")
                    self._owner_only(current)
                    body = self._validate(_Handler._json(raw))
                    if form_id(body["url"], body["version"], body["arch"]) != sid:
                        raise ApiError(400, "invalid-input", "the service id specified in the URL does not match "
                                                             "the url, version, and arch in the body")
                    table[sid] = {**body, "owner": current["owner"], "lastUpdated": _now()}
                    return 201, _ok(f"service '{self.org}/{sid}' updated"), "application/json"
                if method == "DELETE":
                    if current is None:
                        raise ApiError(404, "not-found", f"service '{self.org}/{sid}' not found")
                    self._owner_only(current)
                    del table[sid]
                    s.keys.pop((self.org, sid), None)
                    s.dockauths.pop((self.org, sid), None)
                    return 204, b"", "application/json"
                raise ApiError(405, "invalid-input", "method not allowed")
            if current is None:
                raise ApiError(404, "not-found", f"service '{self.org}/{sid}' not found")
            if rest[1] == "keys":
                return self._keys(method, sid, current, rest[2:], raw)
            if rest[1] == "dockauths" and len(rest) == 2:
                return self._dockauths(method, sid, current, raw)
            raise ApiError(404, "not-found", "unrecognized route")

    def _owner_only(self, current: dict[str, Any]) -> None:
        if current["owner"] != self.user and not self.admin:
            raise ApiError(403, "access-denied", f"access denied: {self.user} does not own this service")

    def _keys(self, method: str, sid: str, current: dict[str, Any], rest: list[str],
              raw: bytes) -> tuple[int, Any, str]:
        keys = self.state.keys.setdefault((self.org, sid), {})
        if not rest and method == "GET":
            if not keys:
                raise ApiError(404, "not-found", "not found")
            return 200, sorted(keys), "application/json"
        if not rest and method == "DELETE":
            self._owner_only(current)
            keys.clear()
            return 204, b"", "application/json"
        if len(rest) != 1:
            raise ApiError(404, "not-found", "unrecognized route")
        name = rest[0]
        if method == "GET":
            if name not in keys:
                raise ApiError(404, "not-found", "not found")
            return 200, keys[name], "text/plain"
        if method == "PUT":
            self._owner_only(current)
            if not raw:
                raise ApiError(400, "invalid-input", "the key body is empty")
            keys[name] = raw.decode("utf-8", errors="replace")  # stored verbatim, whatever the content type
            return 201, _ok("key added or updated"), "application/json"
        if method == "DELETE":
            self._owner_only(current)
            if keys.pop(name, None) is None:
                raise ApiError(404, "not-found", "not found")
            return 204, b"", "application/json"
        raise ApiError(405, "invalid-input", "method not allowed")

    def _dockauths(self, method: str, sid: str, current: dict[str, Any], raw: bytes) -> tuple[int, Any, str]:
        auths = self.state.dockauths.setdefault((self.org, sid), [])
        if method == "GET":
            if not auths:
                raise ApiError(404, "not-found", "not found")
            return 200, copy.deepcopy(auths), "application/json"
        if method == "POST":
            self._owner_only(current)
            body = _Handler._json(raw)
            registry, token = body.get("registry"), body.get("token")
            if not isinstance(registry, str) or not registry or not isinstance(token, str) or not token:
                raise ApiError(400, "invalid-input", "registry and token are required")
            username = body.get("username") or "token"
            for auth in auths:
                if (auth["registry"], auth["username"], auth["token"]) == (registry, username, token):
                    auth["lastUpdated"] = _now()
                    return 201, _ok("dockauth resource updated"), "application/json"
            auth_id = max((a["dockAuthId"] for a in auths), default=0) + 1
            auths.append({"dockAuthId": auth_id, "registry": registry, "username": username, "token": token,
                          "lastUpdated": _now()})
            return 201, _ok(f"dockauth {auth_id} added"), "application/json"
        raise ApiError(405, "invalid-input", "method not allowed")

    def _validate(self, body: dict[str, Any]) -> dict[str, Any]:
        def bad(msg: str) -> ApiError:
            return ApiError(400, "invalid-input", msg)

        for name in ("label", "url", "version", "arch", "sharable"):
            if body.get(name) is None:
                raise bad(f"invalid input: {name} is required")
        if not isinstance(body.get("public"), bool):
            raise bad("invalid input: public must be a boolean")
        if not isinstance(body["version"], str) or not VERSION_RE.match(body["version"]):
            raise bad(f"version '{body['version']}' is not valid")
        if not isinstance(body["arch"], str) or not body["arch"]:
            raise bad("arch must not be empty")
        if body["sharable"] not in SHARABLE:
            raise bad(f"sharable must be one of {', '.join(SHARABLE)}")
        doc = body.get("documentation") or ""
        if doc and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$", doc):
            raise bad(f"documentation '{doc}' is not a valid URL")
        for field_name in ("deployment", "clusterDeployment"):
            value = body.get(field_name)
            if value is not None and not isinstance(value, str):
                raise bad(f"invalid input: {field_name} must be a string")
            signature = body.get(field_name + "Signature") or ""
            if value and not signature:
                raise bad("this service definition is not signed.")
        required = body.get("requiredServices") or []
        if not isinstance(required, list):
            raise bad("requiredServices must be a list")
        for dep in required:
            if not isinstance(dep, dict) or not (dep.get("version") or dep.get("versionRange")):
                raise bad("each requiredServices entry needs version or versionRange")
            if dep.get("arch") != body["arch"]:
                raise bad(f"required service {dep.get('url')} arch {dep.get('arch')} differs from {body['arch']}")
            dep_org = dep.get("org") or self.org
            spec = str(dep.get("versionRange") or dep.get("version"))
            found = any(s.get("url") == dep.get("url") and s.get("arch") == dep["arch"] and
                        in_range(s.get("version", ""), spec)
                        for s in self.state.services.get(dep_org, {}).values())
            if not found:
                raise bad(f"the following required service does not exist in the exchange: "
                          f"{dep_org}/{dep.get('url')} {spec} {dep['arch']}")
        return body


class _Objects:
    """Deployment policies (``business/policies``) and patterns: whole-object CRUD, no ETags."""

    def __init__(self, owner: ExchangeStandIn, org: str, user: str, kind: str, envelope: str) -> None:
        self.owner, self.org, self.user, self.kind, self.envelope = owner, org, user, kind, envelope

    def handle(self, method: str, rest: list[str], raw: bytes) -> tuple[int, Any, str]:
        state = self.owner.state
        with state.lock:
            table = getattr(state, self.kind).setdefault(self.org, {})
            if not rest and method == "GET":
                if not table:
                    raise ApiError(404, "not-found", "not found")
                return 200, {self.envelope: {f"{self.org}/{k}": v for k, v in table.items()}, "lastIndex": 0}, \
                    "application/json"
            if len(rest) != 1:
                raise ApiError(404, "not-found", "unrecognized route")
            name = rest[0]
            if method == "GET":
                if name not in table:
                    raise ApiError(404, "not-found", "not found")
                return 200, {self.envelope: {f"{self.org}/{name}": table[name]}, "lastIndex": 0}, "application/json"
            if method in ("POST", "PUT"):
                body = self._validate(_Handler._json(raw))
                if method == "POST" and name in table:
                    raise ApiError(403, "already-exists", f"'{self.org}/{name}' already exists")
                if method == "PUT" and name not in table:
                    raise ApiError(404, "not-found", f"'{self.org}/{name}' not found")
                owner = table.get(name, {}).get("owner", self.user)
                table[name] = {**body, "owner": owner, "lastUpdated": _now()}
                return 201, _ok(f"'{self.org}/{name}' {'created' if method == 'POST' else 'updated'}"), \
                    "application/json"
            if method == "DELETE":
                if table.pop(name, None) is None:
                    raise ApiError(404, "not-found", "not found")
                return 204, b"", "application/json"
            raise ApiError(405, "invalid-input", "method not allowed")

    def _validate(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.kind == "policies":
            service = body.get("service")
            if not isinstance(service, dict) or not all(k in service for k in ("name", "org", "arch",
                                                                              "serviceVersions")):
                raise ApiError(400, "invalid-input", "service with name, org, arch and serviceVersions is required")
            versions = service["serviceVersions"]
        else:
            services = body.get("services")
            if not isinstance(services, list) or not services:
                raise ApiError(400, "invalid-input", "services is required")
            for entry in services:
                if not all(k in entry for k in ("serviceUrl", "serviceOrgid", "serviceArch", "serviceVersions")):
                    raise ApiError(400, "invalid-input",
                                   "each service needs serviceUrl, serviceOrgid, serviceArch and serviceVersions")
            versions = [v for entry in services for v in entry["serviceVersions"]]
        if not isinstance(versions, list) or not all(isinstance(v, dict) and v.get("version") for v in versions):
            raise ApiError(400, "invalid-input", "serviceVersions entries need a version")
        return body


def main() -> None:
    parser = argparse.ArgumentParser(description="Horizon Exchange stand-in")
    parser.add_argument("--port", type=int, default=3090)
    parser.add_argument("--org", action="append", default=[])
    parser.add_argument("--user", action="append", default=[], help="ORG/USER:PASSWORD")
    parser.add_argument("--apikey", action="append", default=[], help="ORG:KEY:OWNER")
    args = parser.parse_args()
    standin = ExchangeStandIn(port=args.port)
    for org in args.org:
        standin.add_org(org)
    for spec in args.user:
        who, _, password = spec.partition(":")
        org, _, name = who.partition("/")
        standin.add_user(org, name, password)
    for spec in args.apikey:
        org, key, owner = spec.split(":", 2)
        standin.add_apikey(org, key, owner=owner)
    standin.start()
    print(standin.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        standin.stop()


if __name__ == "__main__":
    main()
