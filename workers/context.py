"""What a worker process needs to run steps: config, Redis, the release store, the thread reporter, and clients.

Built once per process from ``EDGEBOT_CONFIG`` (the work horse inherits it on fork). Clients that hold credentials
are created per step from references resolved at run time, never from a job payload.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

import redis

from edgebot.config import Config, RegistryConfig, load_config
from edgebot.errors import SecretUnavailable
from edgebot.ratelimit import SlackRateLimiter
from edgebot.seals import Sealer
from edgebot.secrets import Secret, SecretRef, SecretResolver
from edgebot.store import ReleaseStore
from edgebot.thread import ThreadReporter, slack_client

if TYPE_CHECKING:
    import docker

    from edgebot.lease import Lease
    from workers.exchange import ExchangeClient
    from workers.signing import Signer

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class WorkerContext:
    config: Config
    resolver: SecretResolver = field(default_factory=SecretResolver)
    lease: Lease | None = None
    """The lease of the step this process is running (set by workers.jobs); fences writes and side effects."""
    reports_to_slack: bool = True
    """False in a build-only worker (workers.worker): it holds no Slack token, its Redis user may not write release
    records, and it reports through Redis instead (workers.build_report); one role talks to Slack."""

    def check_lease(self, what: str) -> None:
        """Raise LeaseLost unless this process still holds its step's lease (no-op outside a step)."""
        if self.lease is not None:
            self.lease.check(what)

    @cached_property
    def redis(self) -> redis.Redis:
        password = self.resolver.resolve(self.config.redis_password).reveal() if self.config.redis_password else None
        return resilient_redis(self.config, password, socket_timeout=self.config.settings.worker_redis_timeout)

    @cached_property
    def store(self) -> ReleaseStore:
        return ReleaseStore(self.redis, self.config.settings)

    @cached_property
    def reporter(self) -> ThreadReporter:
        if not self.reports_to_slack:
            raise RuntimeError("a build worker has no Slack access: it reports through Redis (workers.build_report)")
        token = self.resolver.resolve(self.config.slack.bot_token).reveal()
        st = self.config.settings
        limiter = SlackRateLimiter(self.redis, burst=st.slack_burst, prefix=st.key_prefix, per_minute={
            "chat.update": st.slack_update_per_minute, "chat.postMessage": st.slack_post_per_minute,
            # a build log file is a post in the thread (workers.build_log): its two calls count like posts
            "files.getUploadURLExternal": st.slack_post_per_minute,
            "files.completeUploadExternal": st.slack_post_per_minute})
        return ThreadReporter(slack_client(token, self.config.slack.api_url, st), self.store, background=True,
                              limiter=limiter)

    def docker(self) -> docker.DockerClient:
        import docker

        if self.config.docker_url:
            return docker.DockerClient(base_url=self.config.docker_url, timeout=self.config.settings.docker_timeout)
        # DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, as the docker CLI reads them (a remote engine over TLS);
        # the local socket when DOCKER_HOST is unset.
        return docker.from_env(timeout=self.config.settings.docker_timeout)

    def exchange(self, org: str) -> ExchangeClient:
        """Exchange client; ``exchange.username`` is ``org/user`` (or ``org/apikey``), or a bare user of ``org``."""
        from workers.exchange import ExchangeClient

        ex = self.config.exchange
        password = self.resolver.resolve(ex.password).reveal()
        verify: bool | str = ex.ca_cert or True

        def reread() -> str:  # the Exchange answered 401: the password may have been rotated
            log.warning("the Exchange refused the credentials of %s; reading %s again and retrying once",
                        ex.username, ex.password)
            self.resolver.invalidate(ex.password)
            return self.resolver.resolve(ex.password).reveal()

        return ExchangeClient(ex.url, org, ex.username, password, timeout=self.config.settings.exchange_timeout,
                              verify=verify, refresh_password=reread, before_write=self.check_lease)

    def with_fresh_credentials(self, call: Callable[[], T], refs: Iterable[SecretRef | None], *,
                               refused: Callable[[Exception], bool], what: str) -> T:
        """Run ``call`` (which resolves the secrets it needs); when ``refused(exc)`` says the service refused the
        credentials (401/403), forget the cached ``refs`` and run it once more with freshly read values, so a
        credential rotated in Vault works without a restart. A second refusal is raised as is."""
        refs = list(refs)
        try:
            return call()
        except Exception as exc:
            if not refused(exc):
                raise
        log.warning("%s refused the credentials from %s; reading them again and retrying once", what,
                    ", ".join(str(r) for r in refs if r is not None))
        self.resolver.invalidate(*refs)
        return call()

    def signer(self) -> Signer:
        """The configured signer: a Vault Transit key (signs in Vault) or a PEM private key read through its reference.

        Raises :class:`~edgebot.errors.SecretUnavailable` (key or Vault unavailable) or
        :class:`~workers.signing.SigningError` (a key agents would not accept)."""
        return signer_for(self.config, self.resolver)

    def sealer(self) -> Sealer | None:
        """The seal key's HMAC (``[trust] seal_key``), read through its reference each time, like the signing key;
        None when the config has none (then nothing needs approval, see edgebot.config)."""
        if self.config.seal_key is None:
            return None
        return Sealer.from_secret(self.resolver.resolve(self.config.seal_key).reveal())

    def release_vault_login(self) -> None:
        """At the end of a job: revoke the Vault token this process logged in for (see VaultReader.release)."""
        release = getattr(self.resolver.vault, "release", None)
        if release is not None:
            release()

    def push_credentials(self, registry: RegistryConfig) -> tuple[str, Secret]:
        return registry.push_username, self.resolver.resolve(registry.push_password)

    def node_credentials(self, registry: RegistryConfig) -> tuple[str, Secret] | None:
        creds = registry.node_credentials()
        if creds is None:
            return None
        return creds[0], self.resolver.resolve(creds[1])


def signer_for(config: Config, resolver: SecretResolver) -> Signer:
    signing = config.signing
    if signing.transit_key:
        from workers.transit import TransitSigner
        from workers.vault import VaultReader

        reader = resolver.vault
        if not isinstance(reader, VaultReader):
            raise SecretUnavailable(f"{signing.source}: this process has no Vault access configured ([vault] in the "
                                    "config)")
        return TransitSigner(reader, signing.transit_key, signing.key_name, mount=signing.transit_mount)
    from workers.signing import PemSigner

    assert signing.private_key is not None  # parse_config requires one of the two
    return PemSigner(resolver.resolve(signing.private_key).reveal().encode(), signing.key_name)


def resilient_redis(config: Config, password: str | None, socket_timeout: float | None = None) -> redis.Redis:
    """A connection that rides out a Redis restart: connection errors are retried with capped exponential backoff
    for ``settings.redis_reconnect_for`` seconds (AOF keeps the data; workers and steps just wait for it)."""
    from edgebot import redis_conn

    st = config.settings
    return redis_conn.from_config(config, password, socket_timeout=socket_timeout,
                                  retry=redis_conn.retry_for(st.redis_reconnect_for, st.redis_backoff_cap))


_CONTEXT: WorkerContext | None = None


def current() -> WorkerContext:
    """The process-wide context, loaded from ``$EDGEBOT_CONFIG`` on first use."""
    global _CONTEXT
    if _CONTEXT is None:
        path = os.environ.get("EDGEBOT_CONFIG")
        if not path:
            raise RuntimeError("EDGEBOT_CONFIG is not set: point it at edgebot's config file")
        from workers.vault import build_resolver

        config = load_config(path)
        _CONTEXT = WorkerContext(config, build_resolver(config))
    return _CONTEXT
