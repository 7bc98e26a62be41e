"""edgebot's Horizon Exchange client (httpx) and the publish sequence `hzn exchange service publish` performs.

    ExchangeError                 status, method, path; ``transient`` says whether a retry may help
    ├── ExchangeAuthError         401: bad credentials
    ├── ExchangeForbidden         403: not the owner, other org, or (on POST) already exists
    ├── ExchangeNotFound          404 where a resource must exist
    ├── ExchangeInvalid           400: the server's message says what is wrong (shown to the user)
    ├── ExchangeUnavailable       5xx, timeouts, refused connections (transient)
    └── ServiceExistsDifferent    the version is published with other content and --overwrite was not given

Branches on HTTP status codes only: the Exchange translates its ``code``/``msg`` text. Credentials never appear in
exception messages or reprs.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

_SANITIZE_RE = re.compile(r"[$!*,;/?@&~=%]")
_SCHEME_RE = re.compile(r"^[A-Za-z0-9+.-]*?://")
COMPARED_FIELDS = ("label", "description", "public", "documentation", "url", "version", "arch", "sharable",
                   "matchHardware", "requiredServices", "userInput", "deployment", "deploymentSignature",
                   "clusterDeployment", "clusterDeploymentSignature")


def service_id(url: str, version: str, arch: str) -> str:
    """The Exchange's id for a service (anax FormExchangeId / exchange-api formId)."""
    return f"{_SANITIZE_RE.sub('-', _SCHEME_RE.sub('', url, count=1))}_{version}_{arch}"


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
    pass


class ExchangeUnavailable(ExchangeError):
    transient = True


class ServiceExistsDifferent(ExchangeError):
    pass


@dataclass(frozen=True)
class PublishOutcome:
    service_id: str
    action: str  # created | updated | unchanged


class ExchangeClient:
    def __init__(
        self, base_url: str, org: str, username: str, password: str, *,
        transport: httpx.BaseTransport | None = None, timeout: float = 30.0, verify: bool | str | ssl.SSLContext = True,
    ) -> None:
        user = username if "/" in username else f"{org}/{username}"
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/", auth=(user, password), timeout=timeout,
                                  verify=verify, transport=transport, headers={"Accept": "application/json"})
        self.user = user

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
              **kwargs: Any) -> httpx.Response | None:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ExchangeUnavailable(f"the Exchange did not answer {method} {path} in time", method=method,
                                      path=path) from None
        except httpx.TransportError as exc:
            raise ExchangeUnavailable(f"cannot reach the Exchange at {self._http.base_url} ({type(exc).__name__})",
                                      method=method, path=path) from None
        status = response.status_code
        if status in ok:
            return response
        if status == 404 and missing_ok:
            return None
        text = _server_message(response)
        where = f"{method} {path}"
        if status == 401:
            raise ExchangeAuthError(f"the Exchange refused the credentials of {self.user} (401) on {where}",
                                    status=status, method=method, path=path)
        if status == 403:
            raise ExchangeForbidden(f"the Exchange answered 403 to {where}: {text}", status=status, method=method,
                                    path=path)
        if status == 404:
            raise ExchangeNotFound(f"the Exchange answered 404 to {where}: {text}", status=status, method=method,
                                   path=path)
        if status == 400:
            raise ExchangeInvalid(text or f"400 on {where}", status=status, method=method, path=path)
        if status >= 500 or status in (408, 429):
            raise ExchangeUnavailable(f"the Exchange answered {status} to {where}: {text}", status=status,
                                      method=method, path=path)
        raise ExchangeError(f"unexpected {status} from the Exchange on {where}: {text}", status=status, method=method,
                            path=path)

    @staticmethod
    def _svc(org: str, sid: str = "") -> str:
        path = f"orgs/{quote(org, safe='')}/services"
        return f"{path}/{quote(sid, safe='')}" if sid else path

    # -- services -------------------------------------------------------------------------------------------------
    def get_service(self, org: str, sid: str) -> dict[str, Any] | None:
        response = self._call("GET", self._svc(org, sid), ok=(200,), missing_ok=True)
        if response is None:
            return None
        services = response.json().get("services", {})
        return dict(services.get(f"{org}/{sid}") or next(iter(services.values()), {})) or None

    def create_service(self, org: str, body: dict[str, Any]) -> None:
        self._call("POST", self._svc(org), ok=(201,), json=body)

    def update_service(self, org: str, sid: str, body: dict[str, Any]) -> None:
        self._call("PUT", self._svc(org, sid), ok=(201,), json=body)

    def list_keys(self, org: str, sid: str) -> list[str]:
        response = self._call("GET", self._svc(org, sid) + "/keys", ok=(200,), missing_ok=True)
        return [] if response is None else list(response.json())

    def get_key(self, org: str, sid: str, name: str) -> str | None:
        response = self._call("GET", f"{self._svc(org, sid)}/keys/{quote(name, safe='')}", ok=(200,), missing_ok=True)
        return None if response is None else response.text

    def put_key(self, org: str, sid: str, name: str, pem: bytes) -> None:
        """The raw PEM as the body (what hzn sends and agents read back), not the JSON the OpenAPI file shows."""
        self._call("PUT", f"{self._svc(org, sid)}/keys/{quote(name, safe='')}", ok=(201,), content=pem,
                   headers={"Content-Type": "text/plain"})

    def list_dockauths(self, org: str, sid: str) -> list[dict[str, Any]]:
        response = self._call("GET", self._svc(org, sid) + "/dockauths", ok=(200,), missing_ok=True)
        return [] if response is None else list(response.json())

    def add_dockauth(self, org: str, sid: str, registry: str, username: str, token: str) -> None:
        self._call("POST", self._svc(org, sid) + "/dockauths", ok=(201,),
                   json={"registry": registry, "username": username, "token": token})


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("msg", "")) if isinstance(body, dict) else ""


def publish_service(client: ExchangeClient, org: str, body: dict[str, Any], *, key_name: str, public_key_pem: bytes,
                    dockauths: list[tuple[str, str, str]], overwrite: bool = False) -> PublishOutcome:
    """GET → POST on 404; on 200 a no-op if identical, else refuse (or PUT with ``overwrite``); then key, dockauths."""
    sid = service_id(body["url"], body["version"], body["arch"])
    existing = client.get_service(org, sid)
    action = "unchanged"
    if existing is None:
        try:
            client.create_service(org, body)
            action = "created"
        except ExchangeForbidden:
            existing = client.get_service(org, sid)  # created meanwhile? else a real 403
            if existing is None:
                raise
    if existing is not None:
        differing = [f for f in COMPARED_FIELDS if f in body and _norm(existing.get(f)) != _norm(body[f])]
        if differing and not overwrite:
            raise ServiceExistsDifferent(
                f"{org}/{sid} is already published with different content ({', '.join(differing)}). Nodes running "
                "it would not re-pull: publish a new version, or add --overwrite to replace it.",
                method="GET", path=client._svc(org, sid),
            )
        if differing:
            client.update_service(org, sid, body)
            action = "updated"
    if client.get_key(org, sid, key_name) != public_key_pem.decode():
        client.put_key(org, sid, key_name, public_key_pem)
    present = {(d.get("registry"), d.get("username"), d.get("token")) for d in client.list_dockauths(org, sid)}
    for registry, username, token in dockauths:
        if (registry, username, token) not in present:
            client.add_dockauth(org, sid, registry, username, token)
    return PublishOutcome(sid, action)


def _norm(value: Any) -> Any:
    return None if value in ("", [], {}, None) else value
