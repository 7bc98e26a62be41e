"""``vault:<path>#<key>`` secret references, read from Vault / OpenBao KV v2 by the workers that are allowed to.

The config file's ``[vault]`` table says where Vault is and how this process logs in; :func:`build_resolver` plugs a
:class:`VaultReader` into :class:`edgebot.secrets.SecretResolver`, so every ``vault:`` reference of the config (the
Exchange password, the signing key, registry tokens) is read at run time and never written anywhere else.

Paths. ``path`` is what stands between ``vault:`` and ``#``. Both spellings are accepted:

* ``secret/data/edgebot/exchange`` — the full KV v2 API path: ``<mount>/data/`` is stripped;
* ``edgebot/exchange`` — relative to the configured mount (``mount``, default ``secret``).

Only the ``<mount>/data/`` prefix is stripped; anything else is taken as relative to the mount.

Login is lazy (first read) and kept alive: a renewable token is renewed (``renew-self``) once less than a third of its
TTL is left, and AppRole / Kubernetes log in again when renewal is refused, the TTL ran out, or Vault says the token
is no longer valid. Values are cached per path for ``cache_ttl`` seconds (a bounded LRU), so a release's steps do not
each hit Vault; :meth:`VaultReader.invalidate` forgets them early, e.g. after a registry refused a rotated password.

Every failure is a :class:`~edgebot.errors.SecretUnavailable` whose message names the reference and the cause in
plain words and never contains a token, a secret_id or a value. Causes a retry may cure (Vault sealed, unreachable,
temporarily unavailable) say "sealed", "unreachable" or "unavailable": the pipeline retries those.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions as hvac_errors
import requests

from edgebot.config import Config
from edgebot.errors import ConfigError, SecretUnavailable
from edgebot.secrets import Secret, SecretRef, SecretResolver

log = logging.getLogger(__name__)
T = TypeVar("T")

AUTH_METHODS = ("token", "approle", "kubernetes")
DEFAULT_JWT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
MAX_CACHED_PATHS = 256
"""Distinct secret paths kept in memory at once (least recently used dropped first)."""
RENEW_WHEN_LEFT = 1 / 3
"""Renew the token once less than this fraction of its TTL is left."""

_KNOWN_KEYS = {"url", "mount", "namespace", "ca_cert", "auth", "auth_mount", "token", "role_id", "secret_id",
               "role", "jwt_path", "cache_ttl", "timeout"}
_ONLY_FOR = {"token": "token", "role_id": "approle", "secret_id": "approle", "role": "kubernetes",
             "jwt_path": "kubernetes"}


@dataclass(frozen=True)
class VaultSettings:
    """The ``[vault]`` table, checked. Credentials are references (env/file), never values."""

    url: str
    mount: str = "secret"
    namespace: str | None = None
    """Vault Enterprise / OpenBao namespace, sent as ``X-Vault-Namespace``."""
    ca_cert: str | None = None
    """CA file that signed Vault's TLS certificate (default: the system trust store)."""
    auth: str = "token"
    token: SecretRef | None = None
    role_id: SecretRef | None = None
    secret_id: SecretRef | None = None
    role: str | None = None
    jwt_path: str = DEFAULT_JWT_PATH
    auth_mount: str | None = None
    """Where the AppRole / Kubernetes auth method is mounted (default: ``approle`` / ``kubernetes``)."""
    cache_ttl: float = 300.0
    timeout: float = 10.0

    @property
    def login_mount(self) -> str:
        return self.auth_mount or self.auth


def parse_vault_settings(table: Mapping[str, Any]) -> VaultSettings:
    """Check the ``[vault]`` table; every mistake is a :class:`ConfigError` naming the key."""
    if not isinstance(table, Mapping):
        raise ConfigError("[vault] must be a table")
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in [vault]; known: {', '.join(sorted(_KNOWN_KEYS))}")
    url = _text(table, "url", required=True).rstrip("/")
    if not re.match(r"^https?://[^/\s]+$", url):
        raise ConfigError("vault.url must be the Vault address, scheme and host[:port] only, e.g. "
                          "https://vault.example.com:8200")
    auth = _text(table, "auth", default="token")
    if auth not in AUTH_METHODS:
        raise ConfigError(f"vault.auth must be one of {', '.join(AUTH_METHODS)}, got {auth!r}")
    for key, method in _ONLY_FOR.items():
        if key in table and auth != method:
            raise ConfigError(f"vault.{key} is only used with auth = \"{method}\" (auth is \"{auth}\")")
    if "auth_mount" in table and auth == "token":
        raise ConfigError("vault.auth_mount is only used with auth = \"approle\" or \"kubernetes\"")
    required = {"token": ("token",), "approle": ("role_id", "secret_id"), "kubernetes": ("role",)}[auth]
    for key in required:
        if key not in table:
            raise ConfigError(f"vault.{key} is required with auth = \"{auth}\"")
    mount = _text(table, "mount", default="secret").strip("/")
    if not mount:
        raise ConfigError("vault.mount must name the KV v2 mount, e.g. \"secret\"")
    namespace = _text(table, "namespace", default="").strip("/") or None
    auth_mount = _text(table, "auth_mount", default="").strip("/") or None
    return VaultSettings(
        url=url,
        mount=mount,
        namespace=namespace,
        ca_cert=_text(table, "ca_cert", default="") or None,
        auth=auth,
        token=_credential(table, "token"),
        role_id=_credential(table, "role_id"),
        secret_id=_credential(table, "secret_id"),
        role=_text(table, "role", default="") or None,
        jwt_path=_text(table, "jwt_path", default=DEFAULT_JWT_PATH),
        auth_mount=auth_mount,
        cache_ttl=_seconds(table, "cache_ttl", 300.0, allow_zero=True),
        timeout=_seconds(table, "timeout", 10.0, allow_zero=False),
    )


def _text(table: Mapping[str, Any], key: str, *, default: str = "", required: bool = False) -> str:
    if key not in table:
        if required:
            raise ConfigError(f"vault.{key} is required")
        return default
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"vault.{key} must be a non-empty string")
    return value.strip()


def _credential(table: Mapping[str, Any], key: str) -> SecretRef | None:
    """A login credential: a reference like every secret, and not ``vault:`` (Vault cannot hold its own key)."""
    if key not in table:
        return None
    ref = SecretRef.parse(table[key], where=f"vault.{key}")  # a literal value is refused here, without echoing it
    if ref.scheme == "vault":
        raise ConfigError(f"vault.{key}: the credential Vault is logged in with cannot itself come from Vault; "
                          "use env:NAME or file:/path")
    return ref


def _seconds(table: Mapping[str, Any], key: str, default: float, *, allow_zero: bool) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ConfigError(f"vault.{key} must be a number of seconds, {bound}")
    return float(value)


class VaultReader:
    """Reads ``(path, key)`` from KV v2; the ``vault`` callable of :class:`~edgebot.secrets.SecretResolver`.

    Thread-safe (one lock: reads are rare and cached). ``environ`` is where ``env:`` credential references are looked
    up; ``clock`` (monotonic seconds) drives the cache and token lifetimes, so tests can move time without sleeping.
    """

    def __init__(self, settings: VaultSettings, *, environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._credentials = SecretResolver(environ)  # env: and file: only; vault: refused by parse_vault_settings
        self._clock = clock
        self._lock = threading.RLock()
        self._client: hvac.Client | None = None
        self._logged_in = False
        self._expires_at: float | None = None  # clock time the token runs out; None: it does not expire
        self._lease = 0.0  # the token's full TTL, as granted at the last login or renewal
        self._renewable = False
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._login_pid: int | None = None  # the process that created the current token

    def __repr__(self) -> str:
        return f"VaultReader({self.settings.url}, auth={self.settings.auth})"

    # -- public ---------------------------------------------------------------------------------------------------

    def __call__(self, path: str, key: str) -> str:
        ref = f"vault:{path}#{key}"
        relative = self.relative_path(path)
        if relative is None:
            raise SecretUnavailable(f"{ref}: {path!r} is not a KV v2 secret path (use <mount>/data/<path> or a path "
                                    f"relative to the mount {self.settings.mount!r})")
        api_path = f"{self.settings.mount}/data/{relative}"
        with self._lock:
            data = self._cached(relative)
            if data is None:
                data = self._fetch(relative, ref, api_path)
                if self.settings.cache_ttl > 0:
                    self._cache[relative] = (self._clock(), data)
                    while len(self._cache) > MAX_CACHED_PATHS:
                        self._cache.popitem(last=False)
            else:
                self._keep_alive(ref)
        if key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise SecretUnavailable(f"{ref}: no key '{key}' at {api_path} (keys there: {keys})")
        value = data[key]
        if not isinstance(value, str) or not value:
            what = "empty" if value == "" else f"not a string but a {type(value).__name__}"
            raise SecretUnavailable(f"{ref}: the value of key '{key}' at {api_path} is {what}")
        return value

    def login(self) -> None:
        """Log in now (normally lazy). ``edgebot worker`` does it once at start: RQ forks a work horse per job, and
        horses that inherit a live token need no login of their own."""
        with self._lock:
            self._authenticated(f"vault login at {self.settings.url}")

    def release(self) -> None:
        """End of a job: revoke the token *this process* created by logging in (AppRole / Kubernetes), so a login per
        job does not leave a live token per job behind. A token inherited from the parent process, or the
        configured one of ``auth = "token"``, is left alone. Never raises."""
        with self._lock:
            if not self._logged_in or self.settings.auth == "token" or self._login_pid != os.getpid():
                return
            client = self._client
            try:
                if client is not None:
                    client.auth.token.revoke_self()
            except Exception as exc:  # it expires on its own anyway
                log.info("could not revoke this job's Vault token (%s); it expires with its TTL", type(exc).__name__)
            self._forget_token()
            self._cache.clear()

    def invalidate(self, path: str | None = None) -> None:
        """Forget cached values: of one path (either spelling), or all of them. The next read goes to Vault."""
        with self._lock:
            if path is None:
                self._cache.clear()
                return
            relative = self.relative_path(path)
            if relative is not None:
                self._cache.pop(relative, None)

    def relative_path(self, path: str) -> str | None:
        """``path`` relative to the mount (``<mount>/data/`` stripped), or None if it is not a usable path."""
        text = path.strip().strip("/")
        prefix = f"{self.settings.mount}/data/"
        if text.startswith(prefix):
            text = text[len(prefix):]
        if not text or any(part in ("", ".", "..") for part in text.split("/")):
            return None
        return text

    # -- cache ----------------------------------------------------------------------------------------------------

    def _cached(self, relative: str) -> dict[str, Any] | None:
        entry = self._cache.get(relative)
        if entry is None:
            return None
        fetched_at, data = entry
        if self._clock() - fetched_at >= self.settings.cache_ttl:
            del self._cache[relative]
            return None
        self._cache.move_to_end(relative)
        return data

    # -- reading --------------------------------------------------------------------------------------------------

    def _fetch(self, relative: str, ref: str, api_path: str) -> dict[str, Any]:
        return self.call(ref, lambda client: self._read(client, relative), api_path=api_path)

    def call(self, ref: str, operation: Callable[[hvac.Client], T], *, api_path: str, action: str = "read",
             missing: str | None = None) -> T:
        """Run ``operation`` with a logged-in client, the way every read does: log in lazily, renew a low token,
        log in again and retry once when Vault no longer accepts the token. Failures become
        :class:`SecretUnavailable` naming ``ref``; a policy refusal says the role may not ``action`` ``api_path``;
        ``missing`` replaces the text for a 404 (e.g. "no Transit key …")."""
        with self._lock:
            client = self._authenticated(ref)
            try:
                return operation(client)
            except (hvac_errors.Forbidden, hvac_errors.Unauthorized):
                if not self._token_is_dead(client, ref):
                    raise SecretUnavailable(f"{ref}: permission denied: the role may not {action} {api_path}") from None
            except Exception as exc:
                raise self._failure(ref, exc, api_path=api_path, missing=missing) from None
            # Vault no longer accepts our token (revoked, expired early): log in again and retry once
            log.info("Vault at %s no longer accepts this worker's token; logging in again", self.settings.url)
            self._forget_token()
            client = self._authenticated(ref)
            try:
                return operation(client)
            except (hvac_errors.Forbidden, hvac_errors.Unauthorized):
                raise SecretUnavailable(f"{ref}: permission denied: the role may not {action} {api_path}") from None
            except Exception as exc:
                raise self._failure(ref, exc, api_path=api_path, missing=missing) from None

    def _read(self, client: hvac.Client, relative: str) -> dict[str, Any]:
        response = client.secrets.kv.v2.read_secret_version(path=relative, mount_point=self.settings.mount,
                                                            raise_on_deleted_version=True)
        data = (response.get("data") or {}).get("data")
        if not isinstance(data, dict):
            raise hvac_errors.InvalidPath()
        return data

    def _token_is_dead(self, client: hvac.Client, ref: str) -> bool:
        """After a 403: is it our token (dead) or the policy (alive token, path not allowed)?"""
        try:
            client.auth.token.lookup_self()
        except (hvac_errors.Forbidden, hvac_errors.Unauthorized):
            return True
        except Exception as exc:
            raise self._failure(ref, exc) from None
        return False

    # -- the token ------------------------------------------------------------------------------------------------

    def _authenticated(self, ref: str) -> hvac.Client:
        """The client with a usable token: logs in lazily, renews a token that is running low, replaces an
        expired one."""
        client = self._client_for(ref)
        if not self._logged_in:
            self._login(client, ref)
        elif self._expires_at is not None:
            left = self._expires_at - self._clock()
            if left <= 0:
                log.info("the Vault token of this worker expired; logging in again")
                self._forget_token()
                self._login(client, ref)
            elif self._renewable and left < self._lease * RENEW_WHEN_LEFT:
                self._renew(client, ref)
        return client

    def _keep_alive(self, ref: str) -> None:
        """On a cache hit: renew a low token, but a renewal problem must not fail a read that needs no Vault."""
        if not self._logged_in or self._client is None or self._expires_at is None or not self._renewable:
            return
        left = self._expires_at - self._clock()
        if 0 < left < self._lease * RENEW_WHEN_LEFT:
            try:
                self._renew(self._client, ref)
            except SecretUnavailable as exc:
                log.warning("could not renew the Vault token (will retry on the next read): %s", exc)

    def _client_for(self, ref: str) -> hvac.Client:
        if self._client is None:
            verify: str | bool = True
            if self.settings.ca_cert:
                if not Path(self.settings.ca_cert).is_file():
                    raise SecretUnavailable(f"{ref}: vault.ca_cert {self.settings.ca_cert} is not a readable file")
                verify = self.settings.ca_cert
            # token="" keeps hvac from picking up VAULT_TOKEN or ~/.vault-token behind our back
            self._client = hvac.Client(url=self.settings.url, token="", verify=verify,
                                       timeout=self.settings.timeout, namespace=self.settings.namespace)
        return self._client

    def _login(self, client: hvac.Client, ref: str) -> None:
        settings = self.settings
        try:
            if settings.auth == "token":
                assert settings.token is not None
                client.token = self._credential(settings.token, ref).reveal()
                data = client.auth.token.lookup_self()["data"]
                ttl = float(data.get("ttl") or 0)
                lease = float(data.get("period") or data.get("creation_ttl") or ttl)
                renewable = bool(data.get("renewable"))
            else:
                if settings.auth == "approle":
                    assert settings.role_id is not None and settings.secret_id is not None
                    auth = client.auth.approle.login(role_id=self._credential(settings.role_id, ref).reveal(),
                                                     secret_id=self._credential(settings.secret_id, ref).reveal(),
                                                     mount_point=settings.login_mount)["auth"]
                else:
                    auth = client.auth.kubernetes.login(role=settings.role, jwt=self._service_account_jwt(ref),
                                                        mount_point=settings.login_mount)["auth"]
                ttl = lease = float(auth.get("lease_duration") or 0)
                renewable = bool(auth.get("renewable"))
        except SecretUnavailable:
            client.token = ""
            raise
        except Exception as exc:
            client.token = ""
            raise self._failure(ref, exc, during="login") from None
        self._logged_in = True
        self._login_pid = os.getpid()
        self._set_lease(ttl, lease, renewable)
        log.info("logged in to Vault at %s with %s auth (token TTL %s, renewable: %s)", settings.url, settings.auth,
                 f"{ttl:.0f} s" if ttl else "none", renewable)

    def _renew(self, client: hvac.Client, ref: str) -> None:
        try:
            auth = client.auth.token.renew_self()["auth"]
        except (requests.exceptions.RequestException, hvac_errors.VaultDown, hvac_errors.InternalServerError,
                hvac_errors.BadGateway, hvac_errors.RateLimitExceeded) as exc:
            raise self._failure(ref, exc, during="renew") from None
        except hvac_errors.VaultError:
            log.info("Vault at %s refused to renew this worker's token; logging in again", self.settings.url)
            self._forget_token()
            self._login(client, ref)
            return
        ttl = float(auth.get("lease_duration") or 0)
        self._set_lease(ttl, ttl, bool(auth.get("renewable")))
        log.info("renewed the Vault token (TTL now %.0f s)", ttl)

    def _set_lease(self, ttl: float, lease: float, renewable: bool) -> None:
        self._expires_at = self._clock() + ttl if ttl > 0 else None
        self._lease = lease if lease > 0 else ttl
        self._renewable = renewable and ttl > 0

    def _forget_token(self) -> None:
        self._logged_in = False
        self._expires_at = None
        if self._client is not None:
            self._client.token = ""

    def _credential(self, source: SecretRef, ref: str) -> Secret:
        try:
            return self._credentials.resolve(source)
        except SecretUnavailable as exc:
            raise SecretUnavailable(f"{ref}: cannot log in to Vault: {exc}") from None

    def _service_account_jwt(self, ref: str) -> str:
        """Read at every login: kubelet rotates projected service-account tokens."""
        try:
            jwt = Path(self.settings.jwt_path).read_text().strip()
        except OSError as exc:
            raise SecretUnavailable(f"{ref}: cannot read the Kubernetes service-account token "
                                    f"{self.settings.jwt_path} ({exc.strerror})") from None
        if not jwt:
            raise SecretUnavailable(f"{ref}: the Kubernetes service-account token {self.settings.jwt_path} is empty")
        return jwt

    # -- errors ---------------------------------------------------------------------------------------------------

    def _failure(self, ref: str, exc: BaseException, *, api_path: str = "", during: str = "read",
                 missing: str | None = None) -> SecretUnavailable:
        """One plain sentence per cause. Built from the exception's type and status only: hvac's own text may
        carry request details, so it is never copied into the message."""
        if missing and isinstance(exc, hvac_errors.InvalidPath):
            return SecretUnavailable(f"{ref}: {missing}")
        return SecretUnavailable(f"{ref}: {self._cause(exc, api_path=api_path, during=during)}")

    def _cause(self, exc: BaseException, *, api_path: str, during: str) -> str:
        url, settings = self.settings.url, self.settings
        if isinstance(exc, requests.exceptions.SSLError):
            trust = (f"against vault.ca_cert {settings.ca_cert}" if settings.ca_cert
                     else "(set vault.ca_cert to the CA that signed it)")
            return f"cannot verify the TLS certificate of Vault at {url} {trust}"
        if isinstance(exc, requests.exceptions.Timeout):
            return f"Vault at {url} is unreachable: no answer within {settings.timeout:g} s"
        if isinstance(exc, requests.exceptions.ConnectionError):
            text = str(exc).lower()
            reason = ("connection refused" if "refused" in text
                      else "host name not found" if "resolve" in text or "name or service" in text
                      else "connection failed")
            return f"Vault at {url} is unreachable (cannot reach it: {reason})"
        if isinstance(exc, hvac_errors.VaultDown):
            if any("sealed" in str(e).lower() for e in (exc.errors or [])) or "sealed" in str(exc).lower():
                return f"Vault at {url} is sealed (an operator must unseal it)"
            return f"Vault at {url} is unavailable (503: standby or maintenance)"
        if isinstance(exc, hvac_errors.RateLimitExceeded):
            return f"Vault at {url} is rate limiting this worker (429); unavailable for now"
        if isinstance(exc, hvac_errors.InternalServerError | hvac_errors.BadGateway):
            return f"Vault at {url} failed with a server error; unavailable for now"
        if isinstance(exc, hvac_errors.VaultNotInitialized):
            return f"Vault at {url} is not initialized"
        if during == "login" and isinstance(exc, hvac_errors.InvalidPath):
            return f"no {settings.auth} auth method is enabled at auth/{settings.login_mount} on Vault at {url}"
        if during == "login" and isinstance(exc, hvac_errors.VaultError):
            return self._login_rejected()
        if isinstance(exc, hvac_errors.Forbidden | hvac_errors.Unauthorized):
            if api_path:
                return f"permission denied: the role may not read {api_path}"
            return f"Vault at {url} does not accept this worker's token any more"
        if isinstance(exc, hvac_errors.InvalidPath):
            return f"no secret at {api_path} (it does not exist, or its latest version is deleted)"
        if isinstance(exc, hvac_errors.VaultError):
            return f"Vault at {url} refused the {during} ({type(exc).__name__})"
        if isinstance(exc, OSError):
            return f"cannot talk to Vault at {url}: {exc.strerror or type(exc).__name__}"
        return f"unexpected error talking to Vault at {url} ({type(exc).__name__})"

    def _login_rejected(self) -> str:
        s = self.settings
        if s.auth == "token":
            return f"Vault at {s.url} rejected the token from {s.token} (expired, revoked or wrong)"
        if s.auth == "approle":
            return (f"Vault at {s.url} rejected the AppRole login with the role_id from {s.role_id} and the "
                    f"secret_id from {s.secret_id} (wrong, expired or used-up secret_id)")
        return (f"Vault at {s.url} rejected the Kubernetes login as role '{s.role}' with the service-account token "
                f"{s.jwt_path} (no such role, or this service account is not bound to it)")


ROLE_ENV = "EDGEBOT_VAULT_ROLE"
"""Overrides ``vault.role``: one config file (a Kubernetes ConfigMap) for every worker, each Deployment logging in
with its own role (``edgebot-build``, ``edgebot-publish``)."""


def vault_settings(config: Config, environ: Mapping[str, str] | None = None) -> VaultSettings | None:
    """The ``[vault]`` table of ``config``, checked, with ``$EDGEBOT_VAULT_ROLE`` applied; None without ``[vault]``."""
    table = config.extra.get("vault")
    if table is None:
        return None
    role = (os.environ if environ is None else environ).get(ROLE_ENV, "").strip()
    if role and isinstance(table, Mapping):
        table = {**table, "role": role}
    return parse_vault_settings(table)


def build_resolver(config: Config, environ: Mapping[str, str] | None = None) -> SecretResolver:
    """The resolver a worker uses: Vault-aware when the config has a ``[vault]`` table, env/file only otherwise."""
    settings = vault_settings(config, environ)
    if settings is None:
        return SecretResolver(environ)
    return SecretResolver(environ, vault=VaultReader(settings, environ=environ))
