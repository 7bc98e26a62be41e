"""The Exchange stand-in's state and routes: services, keys, dockauths, deployment policies, patterns, nodes.

Each handler receives an authenticated :class:`Call` and answers a :class:`Reply`, or raises ``ApiError``. The whole
state sits behind one lock (handlers run with it held), so concurrent requests see the serial order a database gives.
Access rules, simple but never lenient: a user reads and writes only its own org (public services of other orgs can
be read, as in the real Exchange); updates and deletes need the owner or an admin of the org; users of the ``root``
org (hub admins) may do anything.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sandbox.exchange_rules import (
    ApiError,
    ServiceRow,
    bad_input,
    form_id,
    not_found,
    validate_pattern,
    validate_policy,
    validate_service,
)

JSON = "application/json"


def now() -> str:
    """``ApiTime.nowUTC``-like timestamps; microseconds keep successive updates distinguishable."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1_000_000:06d}Z[UTC]"


@dataclass(frozen=True)
class Identity:
    user: str  # "org/name"; for an API key, its owner
    admin: bool

    @property
    def org(self) -> str:
        return self.user.split("/", 1)[0]

    @property
    def hub_admin(self) -> bool:
        return self.org == "root"


@dataclass
class Call:
    method: str
    params: dict[str, str]
    query: dict[str, str]
    body: bytes
    content_type: str
    who: Identity

    def json(self) -> dict[str, Any]:
        """The body as the JSON object a Scala case class would be read from (415 / 400 like the real server)."""
        if self.content_type.split(";", 1)[0].strip().lower() != JSON:
            raise ApiError(415, "invalid-input", "unsupported.media.type")
        try:
            body = json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise bad_input("error.parsing.input.json", str(exc).split(":", 1)[0]) from None
        if not isinstance(body, dict):
            raise bad_input("error.parsing.input.json", "the body must be a JSON object")
        return body


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON value; str for text/plain; None for no body
    content_type: str = JSON
    message: tuple[str, tuple[object, ...]] | None = None  # (key, args) of an ``{"code":"ok","msg":…}`` answer


def ok(status: int, key: str, *args: object) -> Reply:
    """A ``{"code":"ok","msg":…}`` answer; the HTTP layer translates both parts."""
    return Reply(status, message=(key, args))


@dataclass
class ExchangeState:
    lock: threading.RLock = field(default_factory=threading.RLock)
    orgs: set[str] = field(default_factory=set)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # "org/user" -> {password, admin}
    apikeys: dict[tuple[str, str], str] = field(default_factory=dict)  # (org, key) -> "org/user"
    services: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # org -> id -> record
    keys: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # (org, id) -> name -> raw text
    dockauths: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    policies: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # org -> name -> record
    patterns: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    nodes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # org -> "org/node" -> details
    service_policies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (org, id) -> policy
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 0
    """Bumped by every successful write, so the simulated agents (``sandbox/fleet.py``) notice changes."""
    delays: list[dict[str, Any]] = field(default_factory=list)

    def service_rows(self) -> Iterator[ServiceRow]:
        for org, table in self.services.items():
            for record in table.values():
                yield org, record["url"], record["version"], record["arch"]


# -- access -------------------------------------------------------------------------------------------------------
def _denied(who: Identity, what: str) -> ApiError:
    return ApiError(403, "access-denied", "access.denied.no.auth", who.user, what)


def _org_access(state: ExchangeState, who: Identity, org: str, what: str) -> None:
    if who.org != org and not who.hub_admin:
        raise _denied(who, what)
    if org not in state.orgs:
        raise not_found("org.not.found", org)


def _may_change(who: Identity, org: str, record: dict[str, Any], what: str) -> None:
    if record.get("owner") != who.user and not (who.admin and who.org == org) and not who.hub_admin:
        raise _denied(who, what)


def _wildcard(pattern: str, value: str) -> bool:
    """The Exchange's ``like`` filters: ``%`` matches anything."""
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("%")), value) is not None


# -- services -----------------------------------------------------------------------------------------------------
def services_list(state: ExchangeState, c: Call) -> Reply:
    org = c.params["org"]
    foreign = c.who.org != org and not c.who.hub_admin
    if org not in state.orgs:
        raise _denied(c.who, f"READ services in {org}") if foreign else not_found("org.not.found", org)
    table = state.services.get(org, {})
    found = {}
    for sid, record in table.items():
        if foreign and not record["public"]:
            continue
        if any(not _wildcard(c.query[k], str(record[k])) for k in ("url", "version", "arch", "owner") if k in c.query):
            continue
        if "public" in c.query and str(record["public"]).lower() != c.query["public"].lower():
            continue
        found[f"{org}/{sid}"] = copy.deepcopy(record)
    if not found:
        raise not_found()
    return Reply(200, {"services": found, "lastIndex": 0})


def service_post(state: ExchangeState, c: Call) -> Reply:
    org = c.params["org"]
    _org_access(state, c.who, org, f"CREATE services in {org}")
    record = validate_service(c.json(), org, None, state.service_rows)
    sid = form_id(record["url"], record["version"], record["arch"])
    table = state.services.setdefault(org, {})
    if sid in table:
        raise ApiError(403, "already-exists", "service.already.exists", f"{org}/{sid}")
    table[sid] = {"owner": c.who.user, **record, "lastUpdated": now()}
    return ok(201, "service.created", f"{org}/{sid}")


def _service(state: ExchangeState, c: Call, *, write: str = "") -> tuple[str, str, dict[str, Any]]:
    """The addressed service, after the access check: reads of other orgs' public services are allowed."""
    org, sid = c.params["org"], c.params["service"]
    if write or c.who.org == org or c.who.hub_admin:
        _org_access(state, c.who, org, f"{write or 'READ'} service {org}/{sid}")
        record = state.services.get(org, {}).get(sid)
        if record is None:
            raise not_found("service.not.found", f"{org}/{sid}")
        if write:
            _may_change(c.who, org, record, f"{write} service {org}/{sid}")
        return org, sid, record
    record = state.services.get(org, {}).get(sid)
    if record is None or not record["public"]:
        raise _denied(c.who, f"READ service {org}/{sid}")
    return org, sid, record


def service_get(state: ExchangeState, c: Call) -> Reply:
    org, sid, record = _service(state, c)
    if "attribute" in c.query:
        name = c.query["attribute"]
        if name not in record:
            raise bad_input("invalid.input.message", f"service attribute name '{name}' is not an attribute")
        return Reply(200, {"attribute": name, "value": copy.deepcopy(record[name])})
    return Reply(200, {"services": {f"{org}/{sid}": copy.deepcopy(record)}, "lastIndex": 0})


def service_put(state: ExchangeState, c: Call) -> Reply:
    org, sid, current = _service(state, c, write="UPDATE")
    record = validate_service(c.json(), org, sid, state.service_rows)
    state.services[org][sid] = {"owner": current["owner"], **record, "lastUpdated": now()}
    return ok(201, "service.updated")


def service_delete(state: ExchangeState, c: Call) -> Reply:
    """204, or 404 when it does not exist; the keys, dockauths and service policy go with it (exchange-api
    ``route/service/Service.scala`` deleteService, and the ``onDelete=ForeignKeyAction.Cascade`` foreign keys of
    ``table/service/key/ServiceKeys.scala``, ``dockerauth/ServiceDockAuths.scala``,
    ``policy/ServicePolicies.scala``)."""
    org, sid, _ = _service(state, c, write="DELETE")
    del state.services[org][sid]
    state.keys.pop((org, sid), None)
    state.dockauths.pop((org, sid), None)
    state.service_policies.pop((org, sid), None)  # its policy cascades (sandbox/exchange_service_policy.py)
    return Reply(204)


# -- keys ---------------------------------------------------------------------------------------------------------
def keys_list(state: ExchangeState, c: Call) -> Reply:
    org, sid, _ = _service(state, c)
    names = sorted(state.keys.get((org, sid), {}))
    if not names:
        raise not_found("no.service.keys.found", f"{org}/{sid}")
    return Reply(200, names)


def keys_delete(state: ExchangeState, c: Call) -> Reply:
    org, sid, _ = _service(state, c, write="DELETE")
    if not state.keys.pop((org, sid), None):
        raise not_found("no.service.keys.found", f"{org}/{sid}")
    return Reply(204)


def key_get(state: ExchangeState, c: Call) -> Reply:
    org, sid, _ = _service(state, c)
    text = state.keys.get((org, sid), {}).get(c.params["key"])
    if text is None:
        raise not_found("service.key.not.found", c.params["key"], f"{org}/{sid}")
    return Reply(200, text, "text/plain; charset=UTF-8")


def key_put(state: ExchangeState, c: Call) -> Reply:
    """The raw request body is the key (``extractRawBodyAsStr``), whatever the Content-Type: a JSON wrapper stays."""
    org, sid, _ = _service(state, c, write="UPDATE")
    text = c.body.decode("utf-8", errors="replace")
    if not text.strip():
        raise bad_input("key.must.not.be.empty")
    state.keys.setdefault((org, sid), {})[c.params["key"]] = text
    return ok(201, "key.added.or.updated")


def key_delete(state: ExchangeState, c: Call) -> Reply:
    org, sid, _ = _service(state, c, write="DELETE")
    if state.keys.get((org, sid), {}).pop(c.params["key"], None) is None:
        raise not_found("service.key.not.found", c.params["key"], f"{org}/{sid}")
    return Reply(204)


# -- dockauths ----------------------------------------------------------------------------------------------------
def _own_service(state: ExchangeState, c: Call, write: str = "") -> tuple[str, str, list[dict[str, Any]]]:
    """Dockauths hold registry tokens: only the service's org reads them, whatever ``public`` says."""
    org, sid = c.params["org"], c.params["service"]
    _org_access(state, c.who, org, f"{write or 'READ'} dockauths of {org}/{sid}")
    org, sid, _ = _service(state, c, write=write)
    return org, sid, state.dockauths.setdefault((org, sid), [])


def dockauths_list(state: ExchangeState, c: Call) -> Reply:
    org, sid, auths = _own_service(state, c)
    if not auths:
        raise not_found("no.dockauths.found.for.service", f"{org}/{sid}")
    return Reply(200, copy.deepcopy(auths))


def _dockauth_body(c: Call) -> tuple[str, str, str]:
    """(registry, username, token) of a POST or PUT body (exchange-api ``PostPutServiceDockAuthRequest.scala``:
    registry and token required, username defaulting to "token")."""
    body = c.json()
    registry, token, username = body.get("registry"), body.get("token"), body.get("username")
    if not isinstance(registry, str) or not registry or not isinstance(token, str) or not token:
        raise bad_input("dockauth.fields.required")
    if username is not None and not isinstance(username, str):
        raise bad_input("error.parsing.input.json", "username must be a string")
    return registry, username or "token", token


def dockauth_post(state: ExchangeState, c: Call) -> Reply:
    _, _, auths = _own_service(state, c, "UPDATE")
    registry, username, token = _dockauth_body(c)
    for auth in auths:
        if (auth["registry"], auth["username"], auth["token"]) == (registry, username, token):
            auth["lastUpdated"] = now()
            return ok(201, "dockauth.resource.updated")
    auth_id = max((a["dockAuthId"] for a in auths), default=0) + 1
    auths.append({"dockAuthId": auth_id, "registry": registry, "username": username, "token": token,
                  "lastUpdated": now()})
    return ok(201, "dockauth.num.added", auth_id)


def dockauths_delete(state: ExchangeState, c: Call) -> Reply:
    org, sid, auths = _own_service(state, c, "DELETE")
    if not auths:
        raise not_found("no.dockauths.found.for.service", f"{org}/{sid}")
    auths.clear()
    return Reply(204)


def _dockauth_index(c: Call, auths: list[dict[str, Any]]) -> int:
    raw = c.params["dockauth"]
    if not raw.isdigit():
        raise bad_input("dockauth.must.be.int", raw)
    for index, auth in enumerate(auths):
        if auth["dockAuthId"] == int(raw):
            return index
    raise not_found("dockauth.not.found", raw)


def dockauth_get(state: ExchangeState, c: Call) -> Reply:
    _, _, auths = _own_service(state, c)
    return Reply(200, copy.deepcopy(auths[_dockauth_index(c, auths)]))


def dockauth_put(state: ExchangeState, c: Call) -> Reply:
    """Replace dockauth ``{dockauthid}`` in place (exchange-api ``route/service/dockerauth/DockerAuth.scala``
    putDockerAuth): the body is the POST's (``PostPutServiceDockAuthRequest.scala``: registry, token, username
    defaulting to "token"), the id and its place stay, ``lastUpdated`` is now; 201 ``dockauth.updated``; 404 for an
    unknown id; 400 for an id that is not an integer. Only the owner (or an admin) may change it."""
    _, _, auths = _own_service(state, c, "UPDATE")
    index = _dockauth_index(c, auths)
    registry, username, token = _dockauth_body(c)
    auth_id = auths[index]["dockAuthId"]
    auths[index] = {"dockAuthId": auth_id, "registry": registry, "username": username, "token": token,
                    "lastUpdated": now()}
    return ok(201, "dockauth.updated", auth_id)


def dockauth_delete(state: ExchangeState, c: Call) -> Reply:
    _, _, auths = _own_service(state, c, "DELETE")
    del auths[_dockauth_index(c, auths)]
    return Reply(204)


# -- deployment policies and patterns -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Kind:
    table: str  # ExchangeState attribute
    patchable: tuple[str, ...]
    """Attributes a PATCH may carry, in the order the real server looks for them (exchange-api
    ``PatchBusinessPolicyRequest`` / ``PatchPatternRequest``: the first one given is applied, the rest ignored)."""
    envelope: str  # key of the GET answer
    validate: Callable[[dict[str, Any], Callable[[], Iterator[ServiceRow]]], dict[str, Any]]
    created: str
    exists: str
    updated: str
    missing: str
    deleted: str


POLICY = _Kind("policies", ("label", "description", "properties", "constraints", "userInput", "secretBinding",
                            "service"), "businessPolicy", validate_policy, "buspol.created", "buspol.already.exists",
               "buspol.updated", "business.policy.not.found", "business.policy.deleted")
PATTERN = _Kind("patterns", ("label", "description", "public", "services", "userInput", "secretBinding",
                             "agreementProtocols"), "patterns", validate_pattern,
                "pattern.created", "pattern.already.exists",
                "pattern.updated", "pattern.id.not.found", "pattern.deleted")


def objects_handler(kind: _Kind) -> Callable[[ExchangeState, Call], Reply]:
    """Whole-object CRUD (no ETags: a writer reads, modifies and PUTs the whole object)."""

    def handle(state: ExchangeState, c: Call) -> Reply:
        org, name = c.params["org"], c.params.get("name")
        verb = {"GET": "READ", "POST": "CREATE", "PUT": "UPDATE", "PATCH": "UPDATE", "DELETE": "DELETE"}[c.method]
        _org_access(state, c.who, org, f"{verb} {kind.table} in {org}")
        table: dict[str, dict[str, Any]] = getattr(state, kind.table).setdefault(org, {})
        if name is None:  # the collection: GET only
            if not table:
                raise not_found()
            return Reply(200, {kind.envelope: {f"{org}/{k}": copy.deepcopy(v) for k, v in table.items()},
                               "lastIndex": 0})
        current = table.get(name)
        if c.method == "POST":
            body = kind.validate(c.json(), state.service_rows)
            if current is not None:
                raise ApiError(403, "already-exists", kind.exists, f"{org}/{name}")
            stamp = now()
            table[name] = {**copy.deepcopy(body), "owner": c.who.user, "created": stamp, "lastUpdated": stamp}
            return ok(201, kind.created, f"{org}/{name}")
        if current is None:
            raise not_found(kind.missing, f"{org}/{name}")
        if c.method == "GET":
            return Reply(200, {kind.envelope: {f"{org}/{name}": copy.deepcopy(current)}, "lastIndex": 0})
        _may_change(c.who, org, current, f"{verb} {org}/{name}")
        if c.method == "PUT":
            body = kind.validate(c.json(), state.service_rows)
            table[name] = {**copy.deepcopy(body), "owner": current["owner"], "created": current["created"],
                           "lastUpdated": now()}
            return ok(201, kind.updated)
        if c.method == "PATCH":
            return _patch(state, c, kind, table, name, current)
        del table[name]
        return Reply(204)

    return handle


def _patch(state: ExchangeState, c: Call, kind: _Kind, table: dict[str, dict[str, Any]], name: str,
           current: dict[str, Any]) -> Reply:
    """One attribute, the others untouched (exchange-api ``PatchBusinessPolicyRequest.scala``,
    ``PatchPatternRequest.scala``): what ``hzn exchange deployment updatepolicy`` sends. The changed object is
    validated as a whole, like a PUT (service references must exist)."""
    body = c.json()
    attribute = next((a for a in kind.patchable if body.get(a) is not None), None)
    if attribute is None:
        raise bad_input("invalid.input.message", f"specify one of: {', '.join(kind.patchable)}")
    merged = {k: copy.deepcopy(v) for k, v in current.items() if k not in ("owner", "created", "lastUpdated")}
    merged[attribute] = copy.deepcopy(body[attribute])
    kind.validate(merged, state.service_rows)
    current[attribute] = merged[attribute]
    current["lastUpdated"] = now()
    return ok(201, kind.updated)


# -- users --------------------------------------------------------------------------------------------------------
def user_get(state: ExchangeState, c: Call) -> Reply:
    """``GET orgs/{org}/users/{user}``: the user itself, an admin of its org or a hub admin (exchange-api
    ``route/user``); the password is never returned."""
    org, name = c.params["org"], c.params["user"]
    who = c.who.user if name in ("apikey", "iamapikey") and c.who.org == org else f"{org}/{name}"
    # (``iamapikey``/``apikey``: the record of the user the key belongs to, as exchange-api answers for IAM keys)
    if c.who.user != who and not (c.who.admin and c.who.org == org) and not c.who.hub_admin:
        raise _denied(c.who, f"READ user {who}")
    record = state.users.get(who)
    if record is None:
        raise not_found("user.not.found", who)
    hub_admin = org == "root" and bool(record["admin"])
    return Reply(200, {"users": {who: {"password": "********", "admin": bool(record["admin"]),
                                       "hubAdmin": hub_admin, "email": "", "lastUpdated": now(),
                                       "updatedBy": who}}, "lastIndex": 0})


# -- nodes --------------------------------------------------------------------------------------------------------
def node_details(state: ExchangeState, c: Call) -> Reply:
    """Who sees what, as exchange-api ``route/node/Details.scala`` filters (its ``filterIf`` chain): a hub admin
    sees no node; an org admin the org's nodes; a standard user only the nodes it owns. Query filters ``arch``,
    ``id``, ``name`` (SQL ``like``, ``%`` a wildcard), ``type`` and ``owner`` (``like`` only when it holds ``%``);
    the ``node`` filter the OpenAPI document names is not read by the server. Nothing visible: 404."""
    org = c.params["org"]
    _org_access(state, c.who, org, f"READ nodes in {org}")
    q = c.query

    def visible(n: dict[str, Any]) -> bool:
        if c.who.hub_admin:
            return False
        return c.who.admin or n.get("owner") == c.who.user

    def wanted(n: dict[str, Any]) -> bool:
        owner = q.get("owner")
        node_type = (q.get("type") or "").lower()
        return (("arch" not in q or _wildcard(q["arch"], n["arch"]))
                and ("id" not in q or _wildcard(q["id"], n["id"]))
                and ("name" not in q or _wildcard(q["name"], n["name"]))
                and (not node_type or n.get("nodeType") in (node_type, node_type.replace("device", "")))
                and (owner is None or (_wildcard(owner, n.get("owner") or "") if "%" in owner
                                       else owner == n.get("owner"))))

    nodes = [n for n in state.nodes.get(org, {}).values() if visible(n) and wanted(n)]
    if not nodes:
        raise not_found()
    return Reply(200, copy.deepcopy(sorted(nodes, key=lambda n: n["id"])))


def nodes_search_service(state: ExchangeState, c: Call) -> Reply:
    """Nodes whose ``runningServices`` hold ``|orgid/serviceURL_version_arch|`` (the raw url, not the id)."""
    org = c.params["org"]
    _org_access(state, c.who, org, f"READ nodes in {org}")
    body = c.json()
    fields = [body.get(k) for k in ("orgid", "serviceURL", "serviceVersion", "serviceArch")]
    if not all(isinstance(value, str) for value in fields):
        raise bad_input("search.fields.required")
    wanted = "|{}/{}_{}_{}|".format(*fields)
    found = [[n["id"], n.get("lastHeartbeat")] for n in state.nodes.get(org, {}).values()
             if wanted in n.get("runningServices", "")]
    return Reply(201, {"nodes": found}) if found else Reply(404, {"nodes": []})


# -- the route table ----------------------------------------------------------------------------------------------
Handler = Callable[[ExchangeState, Call], Reply]
_policy, _pattern = objects_handler(POLICY), objects_handler(PATTERN)
_SVC = ("orgs", "{org}", "services", "{service}")
_OBJECT_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ROUTES: list[tuple[tuple[str, ...], dict[str, Handler]]] = [
    (("orgs", "{org}", "services"), {"GET": services_list, "POST": service_post}),
    (_SVC, {"GET": service_get, "PUT": service_put, "DELETE": service_delete}),
    ((*_SVC, "keys"), {"GET": keys_list, "DELETE": keys_delete}),
    ((*_SVC, "keys", "{key}"), {"GET": key_get, "PUT": key_put, "DELETE": key_delete}),
    ((*_SVC, "dockauths"), {"GET": dockauths_list, "POST": dockauth_post, "DELETE": dockauths_delete}),
    ((*_SVC, "dockauths", "{dockauth}"), {"GET": dockauth_get, "PUT": dockauth_put, "DELETE": dockauth_delete}),
    (("orgs", "{org}", "business", "policies"), {"GET": _policy}),
    (("orgs", "{org}", "deployment", "policies"), {"GET": _policy}),
    (("orgs", "{org}", "business", "policies", "{name}"), dict.fromkeys(_OBJECT_METHODS, _policy)),
    (("orgs", "{org}", "deployment", "policies", "{name}"), dict.fromkeys(_OBJECT_METHODS, _policy)),
    (("orgs", "{org}", "patterns"), {"GET": _pattern}),
    (("orgs", "{org}", "deployment", "patterns"), {"GET": _pattern}),
    (("orgs", "{org}", "patterns", "{name}"), dict.fromkeys(_OBJECT_METHODS, _pattern)),
    (("orgs", "{org}", "deployment", "patterns", "{name}"), dict.fromkeys(_OBJECT_METHODS, _pattern)),
    (("orgs", "{org}", "node-details"), {"GET": node_details}),
    (("orgs", "{org}", "users", "{user}"), {"GET": user_get}),
    (("orgs", "{org}", "search", "nodes", "service"), {"POST": nodes_search_service}),
]


def match(segments: list[str]) -> tuple[dict[str, Handler], dict[str, str]] | None:
    """The route's handlers by method and the path parameters, or None (404 "unrecognized route")."""
    for pattern, handlers in ROUTES:
        if len(pattern) != len(segments):
            continue
        params: dict[str, str] = {}
        for want, got in zip(pattern, segments, strict=True):
            if want.startswith("{"):
                if not got:
                    break
                params[want[1:-1]] = got
            elif want != got:
                break
        else:
            return handlers, params
    return None
