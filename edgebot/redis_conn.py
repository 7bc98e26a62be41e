"""The one place a Redis client is made from edgebot's config: a single node or a Sentinel-managed master.

URL forms (``[redis] url``; the password is never in it — it comes from ``[redis] password``, a secret reference):

``redis://HOST:PORT/DB``, ``rediss://HOST:PORT/DB``
    one node, as redis-py's ``Redis.from_url`` reads it.
``redis+sentinel://HOST1:PORT1,HOST2:PORT2,.../MASTER_NAME[?db=N][&sentinel_auth=none|same]``
    Redis Sentinel (redis-py ``redis.sentinel.Sentinel(...).master_for(MASTER_NAME)``): the sentinels are asked which
    node is the master, every connection goes to it, and after a failover (a dead master: ``ConnectionError``; a
    demoted one: ``ReadOnlyError``, which redis-py turns into a ``ConnectionError``) the next retry asks the sentinels
    again. ``db`` defaults to 0. ``sentinel_auth=same`` logs in to the sentinels with the data nodes' username and
    password too (sentinels with the same ACL users); the default ``none`` talks to password-less sentinels.

The data nodes are logged in to as ``[redis] username`` with ``[redis] password``, in both forms. A URL with a
password in it is refused for the sentinel form (it would end up in process listings and logs); :func:`safe_url`
is how a URL is shown anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection


class RedisSettings(Protocol):
    """What :func:`from_config` reads of an ``edgebot.config.Config`` (no import of it: config imports this module)."""

    @property
    def redis_url(self) -> str: ...

    @property
    def redis_username(self) -> str | None: ...

class MasterFollowingConnection(SentinelManagedConnection):
    """redis-py's Sentinel connection, asking the sentinels for the master on *every* reconnect.

    redis-py 8.1 asks them only in ``connect()``; a command retried after a connection error reconnects through
    ``send_packed_command`` → ``connect_check_health``, which reuses the address the connection had — the dead
    master's — until the retries run out (seen in tests/test_sentinel_e2e.py: a job failed after 60 s of
    "connection refused" from the old master while the new one had been answering for most of them)."""

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if getattr(self, "_sock", None) is None and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()  # MasterNotFoundError: retried
        super().connect_check_health(  # type: ignore[misc]  # (redis-py 8's method; older stubs lack it)
            check_health=check_health, retry_socket_connect=retry_socket_connect)


SENTINEL_SCHEME = "redis+sentinel"
PLAIN_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_AUTH = ("none", "same")
SENTINEL_TIMEOUT = 5.0
"""Seconds at most for one sentinel's answer (which node is the master)."""


class RedisUrlError(ValueError):
    """``[redis] url`` cannot be used; the text says why (and never contains a password)."""


@dataclass(frozen=True)
class SentinelAddress:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    sentinel_auth: str = "none"


def safe_url(url: str) -> str:
    """``url`` with any userinfo (a password) replaced by ``***``: what logs and messages may show."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def parse_sentinel_url(url: str) -> SentinelAddress | None:
    """The sentinel address of a ``redis+sentinel://`` URL; None for a single-node URL; RedisUrlError if unusable."""
    scheme = url.partition("://")[0].lower()
    if scheme in PLAIN_SCHEMES:
        return None
    shown = safe_url(url)
    if scheme != SENTINEL_SCHEME:
        raise RedisUrlError(f"redis.url {shown!r}: the scheme must be redis://, rediss:// or {SENTINEL_SCHEME}://")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise RedisUrlError(f"redis.url {shown!r}: no credentials in a {SENTINEL_SCHEME}:// URL — the data nodes' "
                            "login is [redis] username/password (sentinel_auth=same uses it for the sentinels too)")
    sentinels: list[tuple[str, int]] = []
    for hostport in parts.netloc.split(","):
        host, colon, port = hostport.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RedisUrlError(f"redis.url {shown!r}: every sentinel is HOST:PORT (e.g. 10.0.0.5:26379), "
                                f"not {hostport.strip()!r}")
        sentinels.append((host.strip("[]"), int(port)))
    master = unquote(parts.path.strip("/"))
    if not master or "/" in master:
        raise RedisUrlError(f"redis.url {shown!r}: the path is the master's name as the sentinels know it "
                            f"({SENTINEL_SCHEME}://HOST:PORT,HOST:PORT/MASTER_NAME)")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"db", "sentinel_auth"})
    if unknown:
        raise RedisUrlError(f"redis.url {shown!r}: unknown parameter {unknown[0]!r} (known: db, sentinel_auth)")
    db_text = query.get("db", ["0"])[-1]
    if not db_text.isdigit():
        raise RedisUrlError(f"redis.url {shown!r}: db must be a number, got {db_text!r}")
    auth = query.get("sentinel_auth", ["none"])[-1]
    if auth not in SENTINEL_AUTH:
        raise RedisUrlError(f"redis.url {shown!r}: sentinel_auth is none or same, got {auth!r}")
    return SentinelAddress(tuple(sentinels), master, int(db_text), auth)


def check_url(url: str) -> str:
    """``url`` if edgebot can connect with it (config parsing); RedisUrlError naming the problem otherwise."""
    parse_sentinel_url(url)
    return url


def retry_for(seconds: float, cap: float) -> Retry:
    """Retry connection errors (a restart, a failover) with capped exponential backoff for about ``seconds``."""
    cap = max(0.01, cap)
    return Retry(ExponentialBackoff(cap=cap, base=0.05), max(1, int(seconds / cap) + 4))


def connect(url: str, *, username: str | None, password: str | None, socket_timeout: float | None = None,
            socket_connect_timeout: float | None = None, retry: Retry | None = None) -> redis.Redis:
    """A client for ``url`` (see the module doc). With ``retry``, ConnectionError, TimeoutError and (a demoted
    master) ReadOnlyError are retried; without it redis-py's default applies, as for ``Redis.from_url``."""
    options: dict[str, Any] = {"username": username, "password": password, "socket_timeout": socket_timeout,
                                  "socket_connect_timeout": socket_connect_timeout}
    if retry is not None:
        options["retry"] = retry
        options["retry_on_error"] = [redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError]
    address = parse_sentinel_url(url)
    if address is None:
        return redis.Redis.from_url(url, **options)

    # a sentinel that does not answer is skipped for the next one: never wait on it as long as on a data command
    sentinel_kwargs: dict[str, object] = {"socket_timeout": min(socket_timeout or SENTINEL_TIMEOUT, SENTINEL_TIMEOUT),
                                          "socket_connect_timeout": min(socket_connect_timeout or SENTINEL_TIMEOUT,
                                                                        SENTINEL_TIMEOUT)}
    if address.sentinel_auth == "same":
        sentinel_kwargs.update(username=username, password=password)
    sentinel = Sentinel(list(address.sentinels), sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(address.master, db=address.db, connection_class=MasterFollowingConnection, **options)


def from_config(config: RedisSettings, password: str | None, *, socket_timeout: float | None = None,
                socket_connect_timeout: float | None = None, retry: Retry | None = None) -> redis.Redis:
    """:func:`connect` with ``config``'s URL and username."""
    return connect(config.redis_url, username=config.redis_username, password=password,
                   socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout, retry=retry)


__all__ = ["RedisUrlError", "SentinelAddress", "check_url", "connect", "from_config", "parse_sentinel_url",
           "retry_for", "safe_url"]
