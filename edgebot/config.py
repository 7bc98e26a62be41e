"""The config file (TOML): Slack, Redis, Exchange, signing, registries by alias and the service catalog.

Slack input only ever *selects* entries of this file (a catalog service, a registry alias); it never names a
repository, a path, a host or an image. Every secret is a reference (see :mod:`edgebot.secrets`); a literal secret is
refused at start-up. The full reference is ``docs/configuration.md``; ``examples/edgebot.toml`` is a complete file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebot.approvals import ApprovalPolicy, ApprovalRules, check_reachable, parse_approvals, scoped_tables
from edgebot.audit import AuditConfig, parse_audit
from edgebot.build_inputs import BuildConfig, parse_build
from edgebot.errors import ConfigError, refuse_unknown_keys
from edgebot.ids import GO_ARCHES
from edgebot.redis_conn import RedisUrlError, check_url
from edgebot.secrets import SecretRef
from edgebot.settings import Settings
from edgebot.smoke import SmokeConfig, parse_smoke
from edgebot.source_auth import SourceAuth, parse_source_auth

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
REGISTRY_KINDS = ("generic", "icr", "ocp")
_ICR_HOST_RE = re.compile(r"^(private\.)?([a-z0-9-]+\.)?icr\.io$")
ICR_USERNAME = "iamapikey"
_TRANSIT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ORG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class SlackConfig:
    bot_token: SecretRef
    signing_secret: SecretRef
    app_token: SecretRef | None = None
    api_url: str = "https://slack.com/api/"


@dataclass(frozen=True)
class ExchangeConfig:
    url: str
    username: str
    password: SecretRef
    ca_cert: str | None = None


@dataclass(frozen=True)
class SigningConfig:
    """Exactly one signing backend: a PEM private key (a reference), or a Vault Transit key (the key stays in Vault)."""

    private_key: SecretRef | None = None
    key_name: str = "edgebot.public.pem"
    transit_key: str | None = None
    """Name of an RSA key in Vault's Transit engine; signing goes through Vault (``[vault]`` is then required)."""
    transit_mount: str = "transit"

    @property
    def source(self) -> str:
        """Where the key lives, for messages: the reference or ``vault-transit:<mount>/<key>``."""
        if self.transit_key:
            return f"vault-transit:{self.transit_mount}/{self.transit_key}"
        return str(self.private_key)


@dataclass(frozen=True)
class RegistryConfig:
    alias: str
    kind: str
    host: str
    namespace: str
    push_username: str
    push_password: SecretRef
    pull_username: str | None = None
    pull_password: SecretRef | None = None
    reuse_push_credentials_for_nodes: bool = False
    ca_cert: SecretRef | None = None

    def node_credentials(self) -> tuple[str, SecretRef] | None:
        """What nodes get as the Exchange dockauth: the pull credential, or the push one when explicitly allowed."""
        if self.pull_username and self.pull_password:
            return self.pull_username, self.pull_password
        if self.reuse_push_credentials_for_nodes:
            return self.push_username, self.push_password
        return None


@dataclass(frozen=True)
class RolloutTarget:
    """One deployment policy or pattern that deploys a catalog service."""

    kind: str  # "policy" | "pattern"
    name: str

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class RolloutStageConfig:
    """One stage of a service's rollout: the objects moved together, and (optionally) its own thresholds."""

    name: str
    targets: tuple[RolloutTarget, ...]
    healthy_share: float | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    source: str
    org: str
    arches: tuple[str, ...]
    image_base: str
    ref: str = "v{version}"
    horizon_dir: str = "horizon"
    dockerfile: str = "Dockerfile.{arch}"
    context: str = "."
    rollout: tuple[RolloutStageConfig, ...] = ()
    """Ordered stages; empty: publishing does not move any node (see docs/configuration.md, "Rollout")."""
    orgs: tuple[str, ...] = ()
    """The Exchange orgs ``--org`` may choose (the catalog's ``orgs``); ``org`` is always one of them."""
    channel: str = ""
    """The Slack channel id for warnings about the service outside a release (expiring dockauths); empty: the channel
    of its latest release."""
    service_policy: str = "service.policy.json"
    """The service policy file, relative to ``horizon_dir`` (``hzn … publish -p``); published when it exists."""
    pin: bool = True
    """Pin images edgebot does not build to the digest their registry reports at release time; False keeps their tags
    (``hzn … publish -I``)."""
    build: BuildConfig = BuildConfig()
    """``[services.X.build]``: builder, build args, build secrets, pull, registry cache (edgebot.build_inputs)."""
    source_auth: SourceAuth | None = None
    """Credentials of a private source (``[services.X.source_auth]``, edgebot/source_auth.py); None: public."""
    smoke: SmokeConfig | None = None
    """``[services.X.smoke]``: a command run in each built image, for its platform, before the push (edgebot.smoke)."""

    @property
    def allowed_orgs(self) -> tuple[str, ...]:
        """``org`` first, then the other orgs the catalog allows; names compared exactly (case-sensitive)."""
        return tuple(dict.fromkeys((self.org, *self.orgs)))

    def ref_for(self, version: str) -> str:
        return self.ref.replace("{version}", version)

    def dockerfile_for(self, arch: str) -> str:
        return self.dockerfile.replace("{arch}", arch)


@dataclass(frozen=True)
class Config:
    slack: SlackConfig
    redis_url: str
    exchange: ExchangeConfig
    signing: SigningConfig
    registries: dict[str, RegistryConfig]
    services: dict[str, ServiceConfig]
    settings: Settings
    docker_url: str | None = None
    redis_password: SecretRef | None = None
    redis_username: str | None = None
    """``[redis] username`` (or ``EDGEBOT_REDIS_USERNAME``): the Redis ACL user of this process's role
    (edgebot.redis_acl); None: the ``default`` user (``requirepass``)."""
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    approvals: ApprovalRules = field(default_factory=lambda: ApprovalRules({}))
    """Who must approve what (``[approvals]``); empty: nothing needs approval."""
    seal_key: SecretRef | None = None
    """``[trust] seal_key``: seals the bot's decisions and the publish worker's reads (edgebot.seals)."""

    audit: AuditConfig | None = None
    """``[audit]``: where publish workers ship the audit trail (edgebot.audit); None: kept in Redis only."""
    access: AccessPolicy = field(default_factory=lambda: AccessPolicy())
    """Who may publish, cancel and roll back (``[access]``); the bot refuses to start while it names nobody who may
    publish a catalog service (:func:`access_problem`)."""

    def approval_policy(self, *, org: str, service: str, registry: str) -> ApprovalPolicy:
        """The policy for a release of ``service`` to ``org``: the stricter of the target org's and the catalog org's
        (more approvals required, then four-eyes; on a tie the catalog org's), so ``--org`` never loosens it."""
        target = self.approvals.policy_for(org=org, service=service, registry=registry)
        catalog = self.services.get(service)
        if catalog is None or catalog.org == org:
            return target
        own = self.approvals.policy_for(org=catalog.org, service=service, registry=registry)
        return max((own, target), key=lambda p: (p.required, not p.allow_requester))


def _redis_url(url: str) -> str:
    """A redis://, rediss:// or redis+sentinel:// URL edgebot can use (edgebot.redis_conn)."""
    try:
        return check_url(url)
    except RedisUrlError as exc:
        raise ConfigError(str(exc)) from None


def _redis_username(redis: Mapping[str, Any], environ: Mapping[str, str] | None) -> str | None:
    """``EDGEBOT_REDIS_USERNAME`` wins over ``[redis] username``: one config file for every role, and each process's
    environment names its role's user (deploy/ sets it per Deployment, the sandbox per process)."""
    env = os.environ if environ is None else environ
    name = env.get("EDGEBOT_REDIS_USERNAME") or redis.get("username")
    if name is None:
        return None
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise ConfigError("redis.username must be a Redis ACL user name (letters, digits, '_', '.', '-'), "
                          "e.g. \"edgebot-build\"")
    return name


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and check the whole file; every problem is a :class:`ConfigError` that names the key."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return parse_config(data, path=str(path), environ=environ)


def parse_config(data: Mapping[str, Any], *, path: str = "", environ: Mapping[str, str] | None = None) -> Config:
    _known(data, "", {"slack", "redis", "exchange", "signing", "registries", "services", "settings", "docker",
                      "vault", "access", "approvals", "rollout", "trust", "audit"})
    slack = _table(data, "slack")
    _known(slack, "slack", {"bot_token", "signing_secret", "app_token", "api_url"})
    redis = _table(data, "redis")
    _known(redis, "redis", {"url", "password", "username"})
    exchange = _table(data, "exchange")
    _known(exchange, "exchange", {"url", "username", "password", "ca_cert"})
    signing = _table(data, "signing")
    _known(signing, "signing", {"private_key", "key_name", "transit_key", "transit_mount"})
    docker = data.get("docker", {})
    _known(docker, "docker", {"url"})
    registries = {alias: _registry(alias, table) for alias, table in _table(data, "registries").items()}
    services = {name: _service(name, table) for name, table in _table(data, "services").items()}
    if not registries:
        raise ConfigError("[registries] is empty: define at least one registry alias, e.g. [registries.icr]")
    if not services:
        raise ConfigError("[services] is empty: define at least one catalog service, e.g. [services.hello]")
    try:
        settings = Settings.load(data.get("settings"), environ)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _check_rollout_settings(settings)
    approval_rules = parse_approvals(data.get("approvals"))
    check_reachable(approval_rules, services={name: (svc.org, set(registries)) for name, svc in services.items()})
    for name, svc in services.items():  # every org --org may choose
        for org in svc.orgs:
            check_reachable(approval_rules, services={name: (org, set(registries))})
    access = parse_access(data.get("access"))
    seal_key = _seal_key(data.get("trust"), approval_rules, services, registries)
    exchange_url = _str(exchange, "exchange.url").rstrip("/")
    if not re.match(r"^https?://", exchange_url):
        raise ConfigError("exchange.url must be the Exchange base URL including /v1, e.g. https://hub/edge-exchange/v1")
    return Config(
        slack=SlackConfig(
            bot_token=_ref(slack, "bot_token", "slack"),
            signing_secret=_ref(slack, "signing_secret", "slack"),
            app_token=_ref(slack, "app_token", "slack") if "app_token" in slack else None,
            api_url=_api_url(slack.get("api_url", "https://slack.com/api/")),
        ),
        redis_url=_redis_url(_str(redis, "redis.url")),
        redis_password=_ref(redis, "password", "redis") if "password" in redis else None,
        redis_username=_redis_username(redis, environ),
        exchange=ExchangeConfig(
            url=exchange_url,
            username=_str(exchange, "exchange.username"),
            password=_ref(exchange, "password", "exchange"),
            ca_cert=exchange.get("ca_cert"),
        ),
        signing=_signing(signing, has_vault="vault" in data),
        registries=registries,
        services=services,
        settings=settings,
        docker_url=docker.get("url"),
        path=path,
        extra={k: data[k] for k in ("vault", "access", "approvals", "rollout") if k in data},
        approvals=approval_rules,
        access=access,
        seal_key=seal_key,
        audit=parse_audit(data.get("audit")),
    )


def _seal_key(table: Any, rules: ApprovalRules, services: Mapping[str, ServiceConfig],
              registries: Mapping[str, RegistryConfig]) -> SecretRef | None:
    """``[trust] seal_key``: the HMAC key with which the bot seals what it decided (the request, each approval) and
    the publish worker seals what it read from git; required as soon as anything needs approval, because the publish
    worker then verifies every approval it acts on (edgebot.seals)."""
    table = table or {}
    _known(table, "trust", {"seal_key"})
    if "seal_key" in table:
        return _ref(table, "seal_key", "trust")
    needed = [name for name, svc in services.items() for alias in registries
              if rules.policy_for(org=svc.org, service=name, registry=alias).needed]
    if needed:
        raise ConfigError(f"[approvals] makes {needed[0]!r} need approval, so the publish worker must be able to "
                          "verify approvals: add [trust] seal_key = \"env:EDGEBOT_SEAL_KEY\" (or a file: reference), "
                          "a random secret of at least 32 bytes held by the bot and the publish workers only (never "
                          "the build workers), e.g. `openssl rand -hex 32`")
    return None


def _signing(table: Mapping[str, Any], *, has_vault: bool) -> SigningConfig:
    """``private_key`` (a reference) or ``transit_key`` (+ ``transit_mount``), never both."""
    key_name = table.get("key_name", "edgebot.public.pem")
    if not isinstance(key_name, str) or not key_name.strip():
        raise ConfigError("signing.key_name must be a non-empty string, e.g. \"edgebot.public.pem\"")
    if "transit_key" not in table:
        if "transit_mount" in table:
            raise ConfigError("signing.transit_mount is only used with signing.transit_key")
        return SigningConfig(private_key=_ref(table, "private_key", "signing"), key_name=key_name)
    if "private_key" in table:
        raise ConfigError("[signing] has both private_key and transit_key: choose one. transit_key signs in Vault "
                          "(the private key never leaves it); private_key reads a PEM key into the worker")
    key, mount = table.get("transit_key"), table.get("transit_mount", "transit")
    if not isinstance(key, str) or not _TRANSIT_NAME_RE.match(key):
        raise ConfigError("signing.transit_key must be the name of a Transit key, e.g. \"edgebot-signing\" "
                          "(letters, digits, '.', '_' and '-'; the mount goes in signing.transit_mount)")
    if not isinstance(mount, str) or not mount.strip("/") or " " in mount:
        raise ConfigError("signing.transit_mount must be the path the Transit engine is mounted at, e.g. \"transit\"")
    if not has_vault:
        raise ConfigError("signing.transit_key signs through Vault's Transit engine: add a [vault] table saying "
                          "where Vault is and how the publish worker logs in")
    return SigningConfig(key_name=key_name, transit_key=key, transit_mount=mount.strip("/"))


def _registry(alias: str, table: Any) -> RegistryConfig:
    where = f"registries.{alias}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    if not _NAME_RE.match(alias):
        raise ConfigError(f"[{where}]: aliases are lower-case letters, digits, '.', '_' and '-'")
    _known(table, where, {"kind", "host", "namespace", "push_username", "push_password", "pull_username",
                          "pull_password", "reuse_push_credentials_for_nodes", "ca_cert"})
    kind = table.get("kind", "generic")
    if kind not in REGISTRY_KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(REGISTRY_KINDS)}")
    host = _str(table, f"{where}.host")
    if "://" in host or "/" in host:
        raise ConfigError(f"{where}.host is host[:port] only (no scheme, no path): got {host!r}")
    namespace = str(table.get("namespace", "")).strip("/")
    push_user, pull_user, pull_pw = table.get("push_username"), table.get("pull_username"), table.get("pull_password")
    if kind == "icr":
        if not _ICR_HOST_RE.match(host):
            raise ConfigError(f"{where}.host must be an IBM Cloud Container Registry host such as us.icr.io, "
                              f"de.icr.io or icr.io (got {host!r}); use kind = \"generic\" for other registries")
        push_user = push_user or ICR_USERNAME  # the password is an IBM Cloud API key
        pull_user = pull_user or (ICR_USERNAME if pull_pw else None)
    if kind in ("icr", "ocp") and not namespace:
        what = "the ICR namespace" if kind == "icr" else "the OpenShift project the images live in"
        raise ConfigError(f"{where}.namespace is required for kind = \"{kind}\": {what}")
    if kind == "ocp" and not push_user:
        raise ConfigError(f"{where}.push_username is required for kind = \"ocp\": the name of a service account of "
                          f"project {namespace} with the edit role (its token is push_password)")
    if bool(pull_user) != bool(pull_pw):
        raise ConfigError(f"{where}: set both pull_username and pull_password, or neither")
    ca = table.get("ca_cert")
    if isinstance(ca, str) and ca.startswith("/"):  # a CA is not a secret: a plain path is a file reference
        ca = f"file:{ca}"
    return RegistryConfig(
        alias=alias,
        kind=kind,
        host=host,
        namespace=namespace,
        push_username=_str({"push_username": push_user}, f"{where}.push_username"),
        push_password=_ref(table, "push_password", where),
        pull_username=pull_user,
        pull_password=_ref(table, "pull_password", where) if pull_pw else None,
        reuse_push_credentials_for_nodes=_flag(table, f"{where}.reuse_push_credentials_for_nodes"),
        ca_cert=_ref({"ca_cert": ca}, "ca_cert", where) if ca is not None else None,
    )


def _service(name: str, table: Any) -> ServiceConfig:
    where = f"services.{name}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    if not _NAME_RE.match(name):
        raise ConfigError(f"[{where}]: service names are lower-case letters, digits, '.', '_' and '-'")
    _known(table, where, {"source", "org", "arches", "image_base", "ref", "horizon_dir", "dockerfile", "context",
                          "policies", "patterns", "rollout", "orgs", "channel", "service_policy", "pin", "build",
                          "source_auth", "smoke"})
    arches = table.get("arches")
    if not isinstance(arches, list) or not arches or not all(isinstance(a, str) for a in arches):
        raise ConfigError(f"{where}.arches must be a non-empty list such as [\"amd64\", \"arm64\"]")
    for arch in arches:
        if arch not in GO_ARCHES:
            raise ConfigError(f"{where}.arches: {arch!r} is not an Open Horizon arch ({', '.join(GO_ARCHES)})")
    ref = table.get("ref", "v{version}")
    if "{version}" not in ref:
        raise ConfigError(f"{where}.ref must contain {{version}}, e.g. \"v{{version}}\"")
    dockerfile = table.get("dockerfile", "Dockerfile.{arch}")
    for key in ("horizon_dir", "dockerfile", "context", "service_policy"):
        value = str(table.get(key, "."))
        if value.startswith("/") or ".." in Path(value).parts:
            raise ConfigError(f"{where}.{key} must be a path inside the source repository")
    source = _str(table, f"{where}.source")
    build = parse_build(f"{where}.build", table.get("build"))
    smoke = parse_smoke(table.get("smoke"), f"{where}.smoke")
    if smoke is not None and build.builder != "engine":
        raise ConfigError(f"[{where}.smoke] needs the Engine builder (the image is run in the Docker Engine), but "
                          f"{where}.build.builder is {build.builder!r}: remove the smoke table or build with "
                          "builder = \"engine\"")
    return ServiceConfig(
        name=name,
        source=source,
        org=_str(table, f"{where}.org"),
        arches=tuple(arches),
        image_base=table.get("image_base", name),
        ref=ref,
        horizon_dir=table.get("horizon_dir", "horizon"),
        dockerfile=dockerfile,
        context=table.get("context", "."),
        rollout=_rollout(where, table),
        orgs=_orgs(where, table),
        channel=_channel(where, table),
        service_policy=str(table.get("service_policy", "service.policy.json")),
        pin=_flag(table, f"{where}.pin", True),
        build=build,
        source_auth=parse_source_auth(where, table.get("source_auth"), source),
        smoke=smoke,
    )


def _channel(where: str, table: Mapping[str, Any]) -> str:
    value = table.get("channel", "")
    if not isinstance(value, str) or (value and not re.fullmatch(r"[CG][A-Z0-9]{2,}", value)):
        raise ConfigError(f"{where}.channel must be a Slack channel id such as \"C0RELEASES\" (not its #name)")
    return value


def _orgs(where: str, table: Mapping[str, Any]) -> tuple[str, ...]:
    """``orgs``: the other Exchange orgs ``--org`` may publish the service to (default: none, only ``org``)."""
    orgs = table.get("orgs", [])
    if not isinstance(orgs, list) or not all(isinstance(o, str) and _ORG_RE.match(o) for o in orgs):
        raise ConfigError(f"{where}.orgs must be a list of Exchange org names, e.g. [\"acme-staging\"]: the orgs "
                          "`--org` may publish this service to besides its own org")
    return tuple(orgs)


def _check_rollout_settings(settings: Settings) -> None:
    """Values the agreement bot would refuse: the priority-1 and priority-2 entries edgebot writes carry
    ``rollout_fallback_retries`` and ``rollout_fallback_retry_durations``, and anax ``ServiceRef.Validate`` drops a
    policy whose non-zero ``priority_value`` has zero ``retries`` or ``retry_durations`` (the Exchange stores it, no
    node moves, nobody is told)."""
    for name in ("rollout_fallback_retries", "rollout_fallback_retry_durations"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"[settings] {name} = {getattr(settings, name)}: must be at least 1; the agbot drops a "
                              "deployment policy whose priority has zero retries or retry_durations, so no node would "
                              "move (e.g. rollout_fallback_retries = 2, rollout_fallback_retry_durations = 3600)")
    if settings.rollout_pull_grace < 0:
        raise ConfigError("[settings] rollout_pull_grace must be 0 or more seconds")


def _rollout(where: str, table: Mapping[str, Any]) -> tuple[RolloutStageConfig, ...]:
    """``policies``/``patterns`` on the service (one stage, "fleet"), or ``[[services.X.rollout]]`` stages."""
    if "rollout" in table and ("policies" in table or "patterns" in table):
        raise ConfigError(f"[{where}]: give either policies/patterns (one stage) or [[{where}.rollout]] stages")
    stages_table = table.get("rollout")
    if stages_table is None:
        if "policies" not in table and "patterns" not in table:
            return ()
        stages_table = [{"stage": "fleet", **{k: table[k] for k in ("policies", "patterns") if k in table}}]
    if not isinstance(stages_table, list) or not all(isinstance(s, Mapping) for s in stages_table):
        raise ConfigError(f"{where}.rollout must be an array of tables: [[{where}.rollout]]")
    stages: list[RolloutStageConfig] = []
    seen: set[RolloutTarget] = set()
    for index, stage in enumerate(stages_table, 1):
        here = f"{where}.rollout[{index}]"
        _known(stage, here, {"stage", "policies", "patterns", "healthy_share", "timeout"})
        name = stage.get("stage", f"stage-{index}")
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in {s.name for s in stages}:
            raise ConfigError(f"{here}.stage must be a unique lower-case name such as \"canary\"")
        targets: list[RolloutTarget] = []
        for key, kind in (("policies", "policy"), ("patterns", "pattern")):
            names = stage.get(key, [])
            if not isinstance(names, list) or not all(isinstance(n, str) and n and "/" not in n for n in names):
                raise ConfigError(f"{here}.{key} must be a list of {kind} names (without the org)")
            for target in (RolloutTarget(kind, n) for n in names):
                if target in seen:
                    raise ConfigError(f"{here}: {target.label} is already in an earlier stage")
                seen.add(target)
                targets.append(target)
        if not targets:
            raise ConfigError(f"{here} names no policies and no patterns")
        share = stage.get("healthy_share")
        if share is not None and (not isinstance(share, int | float) or not 0 < share <= 1):
            raise ConfigError(f"{here}.healthy_share must be a number in (0, 1], e.g. 0.9")
        timeout = stage.get("timeout")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise ConfigError(f"{here}.timeout must be a positive number of seconds")
        stages.append(RolloutStageConfig(name, tuple(targets), None if share is None else float(share),
                                         None if timeout is None else float(timeout)))
    return tuple(stages)


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{key}] is missing from the config file")
    return value


def _flag(table: Mapping[str, Any], dotted: str, default: bool = False) -> bool:
    """A boolean key: TOML ``true``/``false`` only (``"flase"`` or ``"false"`` in quotes is an error, not a value)."""
    value = table.get(dotted.rsplit(".", 1)[-1], default)
    if not isinstance(value, bool):
        raise ConfigError(f"{dotted} must be true or false (without quotes), got {value!r}")
    return value


def _str(table: Mapping[str, Any], dotted: str) -> str:
    value = table.get(dotted.rsplit(".", 1)[-1])
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{dotted} is required (a non-empty string)")
    return value


def _ref(table: Mapping[str, Any], key: str, where: str) -> SecretRef:
    value = table.get(key)
    if value is None:
        raise ConfigError(f"{where}.{key} is required (env:NAME, file:/path or vault:<path>#<key>)")
    return SecretRef.parse(value, where=f"{where}.{key}")


def _known(table: Any, where: str, keys: set[str]) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    refuse_unknown_keys(table, f"[{where}]" if where else "the top level", keys)


def _api_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"


# -- [access]: who may publish, cancel and roll back -------------------------------------------------------------

ACCESS_PERMISSIONS = ("publish", "cancel", "rollback", "deploy", "public")
EVERYONE = "*"
"""As the only principal of a rule (``publish = ["*"]``): everyone in a channel the bot is in, on purpose."""
_PRINCIPAL_RE = re.compile(r"^[UWS][A-Z0-9]{2,}$")


@dataclass(frozen=True)
class AccessPolicy:
    """``[access]``: the most specific rule naming a permission wins (service, then org, then global); with none, only
    the ``release_managers`` hold it (nobody, when none are listed). Orgs and services are compared exactly."""

    rules: dict[tuple[str, str], dict[str, tuple[str, ...]]] = field(default_factory=dict)
    """(scope, name) -> permission -> principals; scope is "global", "org" or "service"."""
    release_managers: tuple[str, ...] = ()

    def principals(self, permission: str, *, org: str, service: str) -> tuple[str, ...] | None:
        """The most specific rule's principals, or None when no rule names the permission."""
        for key in (("service", service), ("org", org), ("global", "")):
            granted = self.rules.get(key, {}).get(permission)
            if granted is not None:
                return granted
        return None

    def holders(self, permission: str, *, org: str, service: str) -> tuple[str, ...]:
        """Who holds the permission: the most specific rule, else the release managers (never everyone by default)."""
        granted = self.principals(permission, org=org, service=service)
        return self.release_managers if granted is None else granted


def parse_access(table: Mapping[str, Any] | None) -> AccessPolicy:
    """Validate ``[access]``; every key it accepts is enforced by the bot, anything else is refused here."""
    rules: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {}
    if not table:
        return AccessPolicy(rules)

    def principals(where: str, value: Any, *, everyone: bool) -> tuple[str, ...]:
        ok = isinstance(value, list) and all(isinstance(p, str) and (_PRINCIPAL_RE.match(p) or (everyone and p ==
                                                                                               EVERYONE))
                                             for p in value)
        if not ok:
            raise ConfigError(f"{where} must be a list of Slack user ids (U…) and user group ids (S…)"
                              + (', or ["*"] for everyone' if everyone else ""))
        if EVERYONE in value and len(value) > 1:
            raise ConfigError(f'{where}: "*" (everyone) stands alone; drop the other ids or the "*"')
        return tuple(value)

    def grants(where: str, body: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for permission, value in body.items():
            if permission == "approve":
                raise ConfigError(f"{where}.approve is not an [access] permission: who may approve is set by "
                                  "[approvals] approvers (globally, per org, registry or service); move these ids "
                                  "there")
            if permission not in ACCESS_PERMISSIONS:
                raise ConfigError(f"{where}: unknown permission {permission!r}; known: "
                                  f"{', '.join(ACCESS_PERMISSIONS)}")
            out[permission] = principals(f"{where}.{permission}", value, everyone=True)
        return out

    top = {k: v for k, v in table.items() if k not in ("orgs", "services", "release_managers")}
    rules[("global", "")] = grants("access", top)
    managers = principals("access.release_managers", table.get("release_managers", []), everyone=False)
    for scoped, where, body in scoped_tables(table, "access", (("org", "orgs"), ("service", "services"))):
        rules[scoped] = grants(where, body)
    return AccessPolicy(rules, managers)


def access_problem(config: Config) -> str | None:
    """Why the bot must not start with this ``[access]``, naming what to add; None when every catalog service (to each
    org ``--org`` may choose) has someone who may publish it. `edgebot config check` reports the same."""
    for name, service in sorted(config.services.items()):
        for org in service.allowed_orgs:
            if not config.access.holders("publish", org=org, service=name):
                return (f"[access] names nobody who may publish {name!r} (org {org!r}), so nobody could: add "
                        '[access] publish = ["S0…"] (the Slack user and user group ids who may publish), or '
                        'release_managers = ["U0…"] (they hold every permission no rule names), or, to let everyone '
                        'in the bot\'s channels publish on purpose, publish = ["*"]')
    return None
