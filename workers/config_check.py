"""`edgebot config check`: resolve every reference and test every connection, one line per item.

A user runs it first on a new install. Each line is ``OK`` or ``FAIL`` with the exact reason; a secret's value is
never printed, only its reference. Exit status of `edgebot config check`: 0 all checks passed, 1 some failed, 2 a
usage error or a config that cannot be loaded.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from edgebot.config import Config, RegistryConfig, ServiceConfig, access_problem
from edgebot.secrets import Secret, SecretRef, SecretResolver


@dataclass(frozen=True)
class CheckLine:
    ok: bool
    item: str
    detail: str

    def __str__(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.item}: {self.detail}"


ROLES = ("bot", "build", "publish")
"""What each process needs (docs/production.md): the bot Slack and the access rules; a build worker the Docker
Engine, git and the push credentials; the publish worker Slack, the Exchange, signing, the seal key and the pull
credentials. Redis for all, each as its own ACL user."""


def role_references(config: Config, role: str) -> list[tuple[str, SecretRef]]:
    """(config key, reference) of every secret a process of ``role`` reads: what ``config check --role`` resolves and
    what the role's Vault policy must allow (deploy/vault/; tests/test_example_config.py holds the two together)."""
    refs: list[tuple[str, SecretRef]] = []
    if role in ("bot", "publish"):
        refs.append(("slack.bot_token", config.slack.bot_token))
    if role == "bot":
        refs.append(("slack.signing_secret", config.slack.signing_secret))
    if role in ("bot", "publish") and config.seal_key is not None:
        refs.append(("trust.seal_key", config.seal_key))
    if role == "publish":
        refs.append(("exchange.password", config.exchange.password))
        if config.audit is not None and config.audit.auth_header is not None:
            refs.append(("audit.auth_header", config.audit.auth_header))
        if config.signing.private_key is not None:
            refs.append(("signing.private_key", config.signing.private_key))
    for alias, registry in config.registries.items():
        if role == "build":
            refs.append((f"registries.{alias}.push_password", registry.push_password))
        if role == "publish" and registry.pull_password:
            refs.append((f"registries.{alias}.pull_password", registry.pull_password))
    for name, service in config.services.items():
        auth = service.source_auth
        if role in ("build", "publish") and auth is not None:  # both fetch the source
            refs += [(f"services.{name}.source_auth.{key}", ref) for key, ref in (("token", auth.token),
                                                                                  ("ssh_key", auth.ssh_key)) if ref]
        if role == "build":
            refs += [(f"services.{name}.build.secrets.{sid}", ref) for sid, ref in service.build.secrets]
    return refs


def run_checks(config: Config, resolver: SecretResolver, *, timeout: float = 10.0,
               roles: Iterable[str] = ROLES) -> Iterator[CheckLine]:
    """One line per reference and connection that a process of one of ``roles`` needs (default: every role)."""
    wanted = set(roles)
    unknown = wanted - set(ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}: choose from {', '.join(ROLES)}")
    bot, build, publish = ("bot" in wanted), ("build" in wanted), ("publish" in wanted)

    def secret(ref: SecretRef) -> Secret:
        return resolver.resolve(ref)

    def check(item: str, probe: Callable[[], str]) -> CheckLine:
        try:
            return CheckLine(True, item, probe())
        except Exception as exc:  # every failure becomes one readable line
            return CheckLine(False, item, _reason(exc))

    refs = list(dict.fromkeys(ref for role in ROLES if role in wanted for ref in role_references(config, role)))
    for where, ref in refs:
        yield check(f"{where} ({ref})", lambda ref=ref: (secret(ref), "resolved")[1])  # type: ignore[misc]
    if bot:
        yield access_check(config)

    def redis_probe() -> str:
        from edgebot import redis_conn

        password = secret(config.redis_password).reveal() if config.redis_password else None
        conn = redis_conn.from_config(config, password, socket_timeout=timeout, socket_connect_timeout=timeout)
        conn.ping()  # through the sentinels, for a redis+sentinel:// URL: the master they name answers
        wanted = config.settings.redis_wait_replicas
        if wanted > 0:  # every acknowledgement would be refused: say so now (edgebot.durability)
            replicas = int(conn.info("replication").get("connected_slaves", 0))
            if replicas < wanted:
                raise RuntimeError(f"redis_wait_replicas is {wanted} but the master has {replicas} replica(s) "
                                   "connected: every release would be answered \"not queued\"")
            return f"{redis_conn.safe_url(config.redis_url)} answers PING, {replicas} replica(s) connected"
        return f"{redis_conn.safe_url(config.redis_url)} answers PING"

    yield check("redis", redis_probe)
    if build:
        yield from _build_checks(config, resolver, check)
    if bot or publish:
        yield check("slack", lambda: _slack_probe(config, secret, timeout))
    if publish:
        yield from _publish_checks(config, resolver, secret, check, timeout)
        if config.audit is not None:
            from workers.audit_ship import sink_problem

            yield check("audit sink", lambda: sink_problem(config.audit))  # type: ignore[arg-type]
    if build or publish:
        yield from _registry_checks(config, secret, check, timeout, push=build, pull=publish)


def _tool_version(tool: str, otherwise: str) -> str:
    """``TOOL --version`` of a program a build worker runs; RuntimeError with the fix when it is not installed."""
    import subprocess

    try:
        done = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30, check=True)
    except FileNotFoundError:
        raise RuntimeError(f"{tool} is not installed on this worker: install it (Debian: apt-get install {tool}) "
                           f"{otherwise}") from None
    return done.stdout.strip()


def _slack_probe(config: Config, secret: Callable[[SecretRef], Secret], timeout: float) -> str:
    from slack_sdk import WebClient

    client = WebClient(token=secret(config.slack.bot_token).reveal(), base_url=config.slack.api_url,
                       timeout=int(timeout))
    answer = client.auth_test()
    return f"auth.test ok: bot {answer.get('user')} in team {answer.get('team')} ({answer.get('team_id')})"


def _publish_checks(config: Config, resolver: SecretResolver, secret: Callable[[SecretRef], Secret],
                    check: Callable[[str, Callable[[], str]], CheckLine], timeout: float) -> Iterator[CheckLine]:
    """The publish worker's: signing, the Exchange (an authenticated read), the fleet view of every rollout org."""
    def signing_probe() -> str:
        from workers.context import signer_for
        from workers.signing import public_key_fingerprint, sign_deployment

        signer = signer_for(config, resolver)
        sign_deployment(signer, '{"services":{}}')
        return (f"signs and verifies ({config.signing.source}); public key "
                f"{public_key_fingerprint(signer.public_key_pem())[:23]}…")

    yield check(f"signing key {config.signing.key_name}", signing_probe)

    def exchange_probe() -> str:
        # an authenticated read that must exist: the user itself (exchange-api route/user/User.scala, GET
        # orgs/{org}/users/{username}: 200 for the user or an admin of its org). A 404 is never success: with a
        # base URL missing /v1 every path is "not found", and the org's empty service list answers 404 too.
        org = config.exchange.username.split("/", 1)[0] if "/" in config.exchange.username else \
            next(iter(config.services.values())).org
        user = config.exchange.username if "/" in config.exchange.username else f"{org}/{config.exchange.username}"
        name = user.split("/", 1)[1]
        verify = config.exchange.ca_cert or True
        with httpx.Client(timeout=timeout, verify=_verify(verify)) as http:
            response = http.get(f"{config.exchange.url}/orgs/{org}/users/{name}",
                                auth=(user, secret(config.exchange.password).reveal()))
        if response.status_code == 200:
            return f"{config.exchange.url} authenticates {user}"
        if response.status_code == 401:
            raise RuntimeError(f"{config.exchange.url} refused the credentials of {user} (401)")
        if response.status_code == 404:
            raise RuntimeError(f"GET {config.exchange.url}/orgs/{org}/users/{name} answered 404: exchange.url must be "
                               "the Exchange API base (it ends in /v1, e.g. https://HOST/edge-exchange/v1) and the "
                               f"user {user} must exist")
        raise RuntimeError(f"{config.exchange.url} answered {response.status_code} to GET orgs/{org}/users/{name}")

    yield check("exchange", exchange_probe)

    for org in sorted({svc.org for svc in config.services.values() if svc.rollout}):
        def fleet_probe(org: str = org) -> str:
            from workers.exchange import ExchangeClient, fleet_visibility_problem

            with ExchangeClient(config.exchange.url, org, config.exchange.username,
                                secret(config.exchange.password).reveal(), timeout=timeout,
                                verify=config.exchange.ca_cert or True) as client:
                problem = fleet_visibility_problem(client, org)
            if problem:
                raise RuntimeError(f"rollouts will be refused: {problem}")
            return f"{client.user} is an admin of {org}: node-details shows every node of the org"

        yield check(f"exchange fleet view ({org})", fleet_probe)



def _build_checks(config: Config, resolver: SecretResolver,
                  check: Callable[[str, Callable[[], str]], CheckLine]) -> Iterator[CheckLine]:
    """A build worker's: the Docker Engine it builds with, and git access to every catalog source."""
    def engine() -> str:
        import docker

        client = docker.DockerClient(base_url=config.docker_url) if config.docker_url else docker.from_env()
        try:
            client.ping()
            version = client.version()
        finally:
            client.close()
        return f"Docker Engine {version.get('Version')} ({version.get('Os')}/{version.get('Arch')}) answers"

    yield check(f"docker engine ({config.docker_url or 'DOCKER_HOST or the default socket'})", engine)
    if config.settings.push_tool == "skopeo":
        yield check("skopeo (settings.push_tool)",
                    lambda: _tool_version("skopeo", 'or set push_tool = "engine"') or "answers")

    def arch_list() -> str:
        from pathlib import Path

        from workers.arches import BINFMT_DIR, detect, handler_problem

        found = detect(config.docker_url)
        served = {s.arch for s in found}
        missing = [f"not {a} ({handler_problem(Path(BINFMT_DIR), a)})" for a in ("arm64", "arm", "amd64")
                   if a not in served]
        return "builds " + "; ".join([*(s.line() for s in found), *missing])

    yield check("build arches (native, and through QEMU binfmt_misc)", arch_list)
    buildah_services = sorted(name for name, service in config.services.items() if service.build.builder == "buildah")
    if buildah_services:
        otherwise = 'or build these services with builder = "engine"'
        yield check("buildah", lambda: f"{_tool_version('buildah', otherwise)} (for {', '.join(buildah_services)})")
    for name, service in sorted(config.services.items()):

        def git(service: ServiceConfig = service) -> str:
            from workers.git_auth import git_auth_for
            from workers.source import ls_remote

            listed = ls_remote(service.source, auth=git_auth_for(service, resolver))  # SourceError: the message
            private = " with its source_auth credentials" if service.source_auth else ""
            return f"{len(listed.splitlines())} ref(s) readable{private}"

        yield check(f"git source of {name}", git)


def _registry_checks(config: Config, secret: Callable[[SecretRef], Secret],
                     check: Callable[[str, Callable[[], str]], CheckLine], timeout: float, *, push: bool,
                     pull: bool) -> Iterator[CheckLine]:
    for alias, registry in config.registries.items():
        ca = registry.ca_cert
        logins = [("push", registry.push_username, registry.push_password)] if push else []
        if pull and registry.pull_username and registry.pull_password:
            logins.append(("pull", registry.pull_username, registry.pull_password))
        for kind, username, password_ref in logins:

            def login(host: str = registry.host, username: str = username, ref: SecretRef = password_ref,
                      ca: SecretRef | None = ca) -> str:
                return _registry_login(host, username, secret(ref), timeout, secret(ca).reveal() if ca else None)

            yield check(f"registry {alias} {kind} ({registry.host})", login)

        if registry.kind == "ocp":
            yield from _ocp_checks(config, registry, secret, check)


def access_check(config: Config) -> CheckLine:
    """``[access]`` as the bot reads it: the bot refuses to start while nobody may publish a catalog service."""
    problem = access_problem(config)
    if problem is not None:
        return CheckLine(False, "access", f"the bot will not start: {problem}")
    policy = config.access
    publish = sorted({p for rules in policy.rules.values() for p in rules.get("publish", ())})
    return CheckLine(True, "access", f"publish: {', '.join(publish) or 'release managers only'}; release managers: "
                     f"{', '.join(policy.release_managers) or 'none'}")


def _ocp_checks(config: Config, registry: RegistryConfig, secret: Callable[[SecretRef], Secret],
                check: Callable[[str, Callable[[], str]], CheckLine]) -> Iterator[CheckLine]:
    """OpenShift: the route's CA as the local Docker Engine sees it (never installed from here), token expiry."""
    from workers.registries import certs_d_path, ensure_docker_trusts, jwt_expiry

    settings = config.settings
    if registry.ca_cert is not None:
        ca_ref = registry.ca_cert

        def trust() -> str:
            target = certs_d_path(Path(settings.docker_certs_dir), registry.host)
            if settings.install_registry_ca and not target.exists():
                return f"{target} is not there yet: build workers install it before their first push"
            return ensure_docker_trusts(registry, secret(ca_ref).reveal(), docker_url=config.docker_url,
                                        certs_dir=Path(settings.docker_certs_dir), install=False)

        yield check(f"registry {registry.alias} route CA", trust)
    tokens = [("push", registry.push_password)]
    if registry.pull_password is not None:
        tokens.append(("pull", registry.pull_password))
    for kind, ref in tokens:

        def expiry(ref: SecretRef = ref) -> str:
            exp = jwt_expiry(secret(ref).reveal())
            if exp is None:
                return "the token has no expiry (exp)"
            left = exp - time.time()
            when = dt.datetime.fromtimestamp(exp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            if left <= 0:
                raise RuntimeError(f"the service-account token from {ref} expired at {when}")
            soon = " — renew it soon" if left <= settings.token_expiry_warning else ""
            return f"the token expires {when} (in {left / 86400:.1f} days){soon}"

        yield check(f"registry {registry.alias} {kind} token ({ref})", expiry)


def _registry_login(host: str, username: str, password: Secret, timeout: float, ca_pem: str | None) -> str:
    from workers.registry_api import RegistryReader

    with RegistryReader(host, username=username, password=password.reveal(), ca_pem=ca_pem,
                        timeout=timeout) as reader:
        return reader.check_login()


def _verify(value: str | bool) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=value) if isinstance(value, str) else value


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({text})"
    return text[:300]
