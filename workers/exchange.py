"""edgebot's Horizon Exchange client (httpx) and the publish sequence `hzn exchange service publish` performs.

    ExchangeError                 status, method, path; ``transient`` says whether a retry may help
    ├── ExchangeAuthError         401: bad credentials
    ├── ExchangeForbidden         403: not the owner, other org, or (on POST) already exists
    ├── ExchangeNotFound          404 where a resource must exist
    ├── ExchangeInvalid           400: the server's message says what is wrong (shown to the user)
    ├── ExchangeUnavailable       5xx, timeouts, refused connections (transient)
    └── ServiceExistsDifferent    the version is published with other content and --overwrite was not given

Branches on HTTP status codes only: the Exchange translates both ``code`` and ``msg`` (a German hub answers
``Bereits_vorhanden``). Credentials never appear in exception messages or reprs: the password and the dockauth
tokens are masked even in text the server echoes back.
"""

from __future__ import annotations

import base64
import functools
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import certifi
import httpx

from edgebot import metrics
from edgebot.ids import exchange_service_id

COMPARED_FIELDS = ("label", "description", "public", "documentation", "url", "version", "arch", "sharable",
                   "matchHardware", "requiredServices", "userInput", "deployment", "deploymentSignature",
                   "clusterDeployment", "clusterDeploymentSignature")
"""The fields of a service body that decide whether an already published version is the same one."""


def service_id(url: str, version: str, arch: str) -> str:
    """The Exchange's id for a service (anax FormExchangeId / exchange-api formId): ``<sanitized url>_<ver>_<arch>``."""
    return exchange_service_id(url, version, arch)


class ExchangeError(Exception):
    transient = False

    def __init__(self, message: str, *, status: int | None = None, method: str = "", path: str = "") -> None:
        super().__init__(message)
        self.status, self.method, self.path = status, method, path


class ExchangeAuthError(ExchangeError):
    pass


class ExchangeForbidden(ExchangeError):
    pass


class ExchangeNotFound(ExchangeError):
    pass


class ExchangeInvalid(ExchangeError):
    """400. ``str(exc)`` is the server's own message (it says which field is wrong), masked of secrets."""


class ExchangeUnavailable(ExchangeError):
    transient = True


class ServiceExistsDifferent(ExchangeError):
    pass


@dataclass(frozen=True)
class PublishOutcome:
    service_id: str
    action: str  # created | updated | unchanged


@functools.lru_cache(maxsize=8)
def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The TLS context of Exchange clients, built once per process (and per CA file): loading a CA bundle cost every
    publish job ~40–130 ms, also for a plain-http Exchange (httpx builds its default context whatever the scheme).
    Publish workers build it before RQ forks its work horses (workers.worker._preload), which inherit it. ``None``:
    certifi's bundle, what httpx's ``verify=True`` trusts. A CA file replaced on disk is read at the next start."""
    return ssl.create_default_context(cafile=ca_file or certifi.where())


class ExchangeClient:
    """One Exchange user (``org/user:password`` or ``org/apikey:KEY``) over one httpx connection pool."""

    def __init__(
        self, base_url: str, org: str, username: str, password: str, *,
        transport: httpx.BaseTransport | None = None, timeout: float = 30.0,
        verify: bool | str | ssl.SSLContext = True, refresh_password: Callable[[], str] | None = None,
        before_write: Callable[[str], None] | None = None,
    ) -> None:
        """``refresh_password``: called once, on the first 401, for the current password (re-read from where it
        lives: it may have been rotated); the refused request is then sent again with it. ``before_write(what)``
        runs before every request that changes something (the step's lease check); it raises to stop the request
        from being sent."""
        if not username:
            raise ValueError("the Exchange user name is empty")
        user = username if "/" in username else f"{org}/{username}"
        if isinstance(verify, str) or verify is True:  # a CA bundle path, or the default: one context per process
            verify = tls_context(verify if isinstance(verify, str) else None)
        hooks: dict[str, list[Callable[[httpx.Request], None]]] = {}
        if before_write is not None:
            def fence(request: httpx.Request) -> None:
                if request.method not in ("GET", "HEAD", "OPTIONS"):
                    before_write(f"{request.method} {request.url.path}")

            hooks["request"] = [fence]
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/", auth=(user, password), timeout=timeout,
                                  verify=verify, transport=transport, headers={"Accept": "application/json"},
                                  event_hooks=hooks)
        self._secrets: tuple[str, ...] = ()
        self._remember(user, password)
        self._refresh_password = refresh_password
        self.user = user

    def _remember(self, user: str, password: str) -> None:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._secrets = (*self._secrets, password, basic)  # masked in any text the server echoes back

    def __repr__(self) -> str:
        return f"ExchangeClient({self._http.base_url}, user={self.user})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ExchangeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, ok: tuple[int, ...], missing_ok: bool = False,
              secrets: Iterable[str] = (), **kwargs: Any) -> httpx.Response | None:
        """One request; the answer if its status is in ``ok`` (None for a 404 when ``missing_ok``), else raise.

        Every failed call is counted (``edgebot_call_errors_total{system="exchange"}``), whichever step made it.
        """
        try:
            return self._call_once(method, path, ok=ok, missing_ok=missing_ok, secrets=secrets, **kwargs)
        except ExchangeError as exc:
            metrics.call_error("exchange", metrics.exchange_route(method, path), str(exc.status or "unreachable"))
            raise

    def _call_once(self, method: str, path: str, *, ok: tuple[int, ...], missing_ok: bool,
                   secrets: Iterable[str], **kwargs: Any) -> httpx.Response | None:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ExchangeUnavailable(f"the Exchange did not answer {method} {path} in time", method=method,
                                      path=path) from None
        except httpx.TransportError as exc:
            raise ExchangeUnavailable(f"cannot reach the Exchange at {self._http.base_url} ({type(exc).__name__})",
                                      method=method, path=path) from None
        status = response.status_code
        if status == 401 and self._refresh_password is not None:
            refresh, self._refresh_password = self._refresh_password, None  # once per client
            password = refresh()
            self._remember(self.user, password)
            self._http.auth = httpx.BasicAuth(self.user, password)
            return self._call_once(method, path, ok=ok, missing_ok=missing_ok, secrets=secrets, **kwargs)
        if status in ok:
            return response
        if status == 404 and missing_ok:
            return None
        text = _mask(_server_message(response), (*self._secrets, *secrets))
        where = f"{method} {path}"
        args: dict[str, Any] = {"status": status, "method": method, "path": path}
        if status == 401:
            raise ExchangeAuthError(f"the Exchange refused the credentials of {self.user} (401) on {where}", **args)
        if status == 403:
            raise ExchangeForbidden(f"the Exchange answered 403 to {where}: {text}", **args)
        if status == 404:
            raise ExchangeNotFound(f"the Exchange answered 404 to {where}: {text}", **args)
        if status == 400:
            raise ExchangeInvalid(text or f"the Exchange answered 400 to {where}", **args)
        if status >= 500 or status in (408, 429):
            raise ExchangeUnavailable(f"the Exchange answered {status} to {where}: {text}", **args)
        raise ExchangeError(f"unexpected {status} from the Exchange on {where}: {text}", **args)

    @staticmethod
    def _json(response: httpx.Response, method: str, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ExchangeError(f"the Exchange answered {method} {path} with a body that is not JSON "
                                f"({response.headers.get('Content-Type', 'no content type')})",
                                status=response.status_code, method=method, path=path) from None

    @staticmethod
    def _svc(org: str, sid: str = "") -> str:
        path = f"orgs/{quote(org, safe='')}/services"
        return f"{path}/{quote(sid, safe='')}" if sid else path

    # -- services -------------------------------------------------------------------------------------------------
    def get_service(self, org: str, service_id: str) -> dict[str, Any] | None:
        """The stored service (``owner``, ``lastUpdated`` and the body fields), or None when it does not exist."""
        path = self._svc(org, service_id)
        response = self._call("GET", path, ok=(200,), missing_ok=True)
        if response is None:
            return None
        body = self._json(response, "GET", path)
        services = body.get("services") if isinstance(body, dict) else None
        if not isinstance(services, dict):
            raise ExchangeError(f"the Exchange answered GET {path} without a services map", status=200,
                                method="GET", path=path)
        found = services.get(f"{org}/{service_id}") or next(iter(services.values()), None)
        return dict(found) if isinstance(found, dict) else None

    def create_service(self, org: str, body: dict[str, Any]) -> None:
        self._call("POST", self._svc(org), ok=(201,), json=body)

    def update_service(self, org: str, service_id: str, body: dict[str, Any]) -> None:
        self._call("PUT", self._svc(org, service_id), ok=(201,), json=body)

    def delete_service(self, org: str, service_id: str) -> bool:
        """Remove the service with its keys, dockauths and service policy (204; exchange-api
        ``route/service/Service.scala`` deleteService, the child tables cascade on delete); False when it was already
        gone (404)."""
        return self._call("DELETE", self._svc(org, service_id), ok=(200, 204), missing_ok=True) is not None

    # -- keys -----------------------------------------------------------------------------------------------------
    def list_keys(self, org: str, service_id: str) -> list[str]:
        path = self._svc(org, service_id) + "/keys"
        response = self._call("GET", path, ok=(200,), missing_ok=True)
        return [] if response is None else [str(name) for name in self._json(response, "GET", path)]

    def get_key(self, org: str, service_id: str, name: str) -> str | None:
        """The key text exactly as stored (what agents download and verify with), or None."""
        path = f"{self._svc(org, service_id)}/keys/{quote(name, safe='')}"
        response = self._call("GET", path, ok=(200,), missing_ok=True)
        return None if response is None else response.content.decode("utf-8", errors="replace")

    def put_key(self, org: str, service_id: str, name: str, pem: bytes) -> None:
        """The raw PEM as the body (what hzn sends and agents read back), not the JSON the OpenAPI file shows."""
        self._call("PUT", f"{self._svc(org, service_id)}/keys/{quote(name, safe='')}", ok=(201,), content=pem,
                   headers={"Content-Type": "text/plain"})

    # -- dockauths ------------------------------------------------------------------------------------------------
    def list_dockauths(self, org: str, service_id: str) -> list[dict[str, Any]]:
        path = self._svc(org, service_id) + "/dockauths"
        response = self._call("GET", path, ok=(200,), missing_ok=True)
        return [] if response is None else [dict(d) for d in self._json(response, "GET", path)]

    def add_dockauth(self, org: str, service_id: str, registry: str, username: str, token: str) -> None:
        """``registry`` must be exactly the image's ``host[:port]``: agents use an auth only on an exact match."""
        self._call("POST", self._svc(org, service_id) + "/dockauths", ok=(201,), secrets=(token,),
                   json={"registry": registry, "username": username, "token": token})

    def update_dockauth(self, org: str, service_id: str, dockauth_id: int, registry: str, username: str,
                        token: str) -> None:
        """Replace dockauth ``dockauth_id`` in place: ``PUT …/dockauths/{dockauthid}`` with the POST's body, 201
        (exchange-api ``route/service/dockerauth/DockerAuth.scala`` putDockerAuth); 404 when the id is gone."""
        self._call("PUT", f"{self._svc(org, service_id)}/dockauths/{int(dockauth_id)}", ok=(201,), secrets=(token,),
                   json={"registry": registry, "username": username, "token": token})

    # -- deployment policies and patterns (rollout) -------------------------------------------------------------
    @staticmethod
    def _deployment_path(kind: str, org: str, name: str) -> str:
        collection = {"policy": "business/policies", "pattern": "patterns"}[kind]
        return f"orgs/{quote(org, safe='')}/{collection}/{quote(name, safe='')}"

    def get_deployment_object(self, kind: str, org: str, name: str) -> dict[str, Any] | None:
        """A deployment policy (``kind="policy"``) or pattern as stored, or None when it does not exist."""
        path = self._deployment_path(kind, org, name)
        response = self._call("GET", path, ok=(200,), missing_ok=True)
        if response is None:
            return None
        body = self._json(response, "GET", path)
        envelope = body.get("businessPolicy" if kind == "policy" else "patterns") if isinstance(body, dict) else None
        found = envelope.get(f"{org}/{name}") if isinstance(envelope, dict) else None
        if not isinstance(found, dict):
            raise ExchangeError(f"the Exchange answered GET {path} without {org}/{name}", status=200, method="GET",
                                path=path)
        return dict(found)

    def put_deployment_object(self, kind: str, org: str, name: str, body: dict[str, Any]) -> None:
        """Replace the whole object (the Exchange has no ETags: serialize writers around re-read → PUT → verify)."""
        self._call("PUT", self._deployment_path(kind, org, name), ok=(201,), json=body)

    def patch_deployment_object(self, kind: str, org: str, name: str, attribute: str, value: Any) -> None:
        """Change one top-level attribute (``service`` of a policy, ``services`` of a pattern) and nothing else, as
        ``hzn exchange deployment updatepolicy`` does (exchange-api ``PatchBusinessPolicyRequest.scala``): a
        human's concurrent edit of constraints, userInput or secretBinding survives."""
        self._call("PATCH", self._deployment_path(kind, org, name), ok=(201,), json={attribute: value})

    def create_deployment_object(self, kind: str, org: str, name: str, body: dict[str, Any]) -> None:
        self._call("POST", self._deployment_path(kind, org, name), ok=(201,), json=body)

    def delete_deployment_object(self, kind: str, org: str, name: str) -> None:
        """Remove the object (a 404 is fine: it is gone either way)."""
        self._call("DELETE", self._deployment_path(kind, org, name), ok=(200, 204), missing_ok=True)

    def get_user(self, org: str, name: str) -> dict[str, Any] | None:
        """``GET orgs/{org}/users/{name}``: the user's record (``admin``, ``hubAdmin``, …), None when it does not
        exist. A user may always read its own record."""
        path = f"orgs/{quote(org, safe='')}/users/{quote(name, safe='')}"
        response = self._call("GET", path, ok=(200,), missing_ok=True)
        if response is None:
            return None
        body = self._json(response, "GET", path)
        users = body.get("users") if isinstance(body, dict) else None
        found = (users.get(f"{org}/{name}") or next(iter(users.values()), None)) if isinstance(users, dict) else None
        return dict(found) if isinstance(found, dict) else None

    def node_details_raw(self, org: str) -> bytes:
        """``GET orgs/{org}/node-details``: every node of the org with its status, in one call (JSON array bytes;
        ``[]`` when the org has no node)."""
        path = f"orgs/{quote(org, safe='')}/node-details"
        response = self._call("GET", path, ok=(200,), missing_ok=True)
        return b"[]" if response is None else response.content

    # -- service policy (exchange-api route/service/Policy.scala) ---------------------------------------------------
    def get_service_policy(self, org: str, service_id: str) -> dict[str, Any] | None:
        """``GET orgs/{org}/services/{id}/policy``: ``label``, ``description``, ``properties``, ``constraints``,
        ``lastUpdated``; None when the service has no policy (404)."""
        path = self._svc(org, service_id) + "/policy"
        response = self._call("GET", path, ok=(200,), missing_ok=True)
        if response is None:
            return None
        body = self._json(response, "GET", path)
        return dict(body) if isinstance(body, dict) else None

    def put_service_policy(self, org: str, service_id: str, body: dict[str, Any]) -> None:
        """Add or replace the policy (201), as ``hzn exchange service addpolicy`` / ``publish -p`` do."""
        self._call("PUT", self._svc(org, service_id) + "/policy", ok=(201,), json=body)

    def delete_service_policy(self, org: str, service_id: str) -> None:
        """Remove the policy (204; a 404 is fine: it is gone either way, as ``hzn … removepolicy`` accepts)."""
        self._call("DELETE", self._svc(org, service_id) + "/policy", ok=(200, 204), missing_ok=True)

    def list_services(self, org: str, **filters: str) -> dict[str, dict[str, Any]]:
        """``GET orgs/{org}/services`` with the Exchange's filters (``url``, ``arch``, ``version``…): "org/id" ->
        service; {} when none matches (the Exchange answers 404 then)."""
        path = self._svc(org)
        response = self._call("GET", path, ok=(200,), missing_ok=True, params=filters)
        if response is None:
            return {}
        body = self._json(response, "GET", path)
        services = body.get("services") if isinstance(body, dict) else None
        return {str(k): dict(v) for k, v in services.items() if isinstance(v, dict)} if isinstance(services,
                                                                                                    dict) else {}


def _server_message(response: httpx.Response) -> str:
    """The ``msg`` of an error body, for people; never used to decide anything (it is translated)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("msg", ""))[:500] if isinstance(body, dict) else ""


def _mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def publish_service(client: ExchangeClient, org: str, body: dict[str, Any], *, key_name: str, public_key_pem: bytes,
                    dockauths: list[tuple[str, str, str]], overwrite: bool = False,
                    before_write: Callable[[str], None] | None = None) -> PublishOutcome:
    """What ``hzn exchange service publish`` does, made safe to repeat.

    GET the service → POST on 404. On 200: nothing to write if every field edgebot sends equals what is stored;
    otherwise refuse (nodes already running that version would never re-pull it) unless ``overwrite``, then PUT.
    Then the public key (skipped if the identical text is stored) and each dockauth (skipped if present).
    ``before_write("create" | "overwrite")`` runs before the service POST or PUT (the caller records what it is about
    to do, so that a failure later, or a retry, knows whether the service was this caller's creation).
    """
    sid = service_id(body["url"], body["version"], body["arch"])
    existing = client.get_service(org, sid)
    action = "unchanged"
    if existing is None:
        try:
            if before_write is not None:
                before_write("create")
            client.create_service(org, body)
            action = "created"
        except ExchangeForbidden:
            existing = client.get_service(org, sid)  # created meanwhile by someone else? otherwise a real 403
            if existing is None:
                raise
    if existing is not None:
        differing = [f for f in COMPARED_FIELDS if f in body and _norm(existing.get(f)) != _norm(body[f])]
        if differing and not overwrite:
            raise ServiceExistsDifferent(
                f"{org}/{sid} is already published with different content ({', '.join(differing)}). Nodes running "
                "it would not re-pull it: publish a new version, or use --overwrite to replace it.",
                method="GET", path=client._svc(org, sid),
            )
        if differing:
            if before_write is not None:
                before_write("overwrite")
            client.update_service(org, sid, body)
            action = "updated"
    if client.get_key(org, sid, key_name) != public_key_pem.decode("utf-8"):
        client.put_key(org, sid, key_name, public_key_pem)
    present = {(d.get("registry"), d.get("username") or "token", d.get("token"))
               for d in client.list_dockauths(org, sid)}
    for registry, username, token in dockauths:
        if (registry, username or "token", token) not in present:
            client.add_dockauth(org, sid, registry, username, token)
            present.add((registry, username or "token", token))
    return PublishOutcome(sid, action)


def _norm(value: Any) -> Any:
    """The Exchange stores absent optional fields as ""/[]/{}; treat those, and null, as the same value."""
    return None if value in ("", [], {}, None) else value


def fleet_visibility_problem(client: ExchangeClient, org: str) -> str:
    """Why this identity cannot watch a rollout in ``org`` ("" when it can).

    node-details shows a standard user only the nodes it owns and a hub admin none (exchange-api
    ``route/node/Details.scala``): an answer with few or no nodes would look like a small, healthy fleet. Only an
    admin of ``org`` sees every node of it, so that is what a rollout needs; the user's own record says whether it is
    one (a user may always read it)."""
    user_org, _, name = client.user.partition("/")
    need = (f"give the Exchange user {client.user} the admin role of org {org} (hzn exchange user setadmin), or "
            f"configure an admin of {org} (or an API key of one) as [exchange] username")
    if user_org != org:
        return (f"the Exchange user {client.user} belongs to org {user_org}, and node-details shows it no node of "
                f"org {org}: {need}")
    try:
        record = client.get_user(org, name)
    except ExchangeForbidden:
        record = None
    if record is None:
        return f"the Exchange does not let {client.user} read its own user record, so its role is unknown: {need}"
    if record.get("hubAdmin") and not record.get("admin"):
        return f"{client.user} is a hub admin, and node-details shows a hub admin no node: {need}"
    if not record.get("admin"):
        return (f"{client.user} is a standard user of org {org}: node-details shows it only the nodes it "
                f"registered, not the fleet, so a rollout cannot be watched: {need}")
    return ""
