"""From a parsed `/edge publish` to a recorded, queued release — or a refusal, with nothing queued.

Order matters: every check that can refuse runs first (catalog, registry alias, arches, channel membership), then
the release record, its service's publish lock and its first job are written in one Redis MULTI (or refused with
``PublishLocked`` naming the release that holds the lock), and only then does the listener ack. A crash
after the ack cannot lose the release; a crash before it leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.access import AccessCheck
from bot.grammar import DeployCommand, PublishCommand
from edgebot import durability
from edgebot.config import Config
from edgebot.errors import UsageError
from edgebot.ids import new_release_id
from edgebot.jobs import Step, enqueue_step
from edgebot.messages import DEPLOY_USAGE, PUBLISH_USAGE, ROLLBACK_USAGE
from edgebot.release import DEPLOY, ROLLBACK_TO, Release
from edgebot.seals import Sealer, intake_payload
from edgebot.store import PublishLocked, ReleaseIdTaken, ReleaseStore

log = logging.getLogger(__name__)
HISTORY_DEPTH = 25
"""How many past releases of a service a deploy looks through for the registry its version was published to."""
ID_ATTEMPTS = 3
"""New release ids tried when one is taken (with 64 random bits, a second try is already a curiosity)."""


class NotInChannel(Exception):
    """The bot cannot post in the channel the command came from."""


class MissingScope(Exception):
    """Slack refused to describe the conversation: the app lacks the scope of its type (``needed``), e.g. ``im:read``
    for a direct message. An installation problem, not the requester's: the answer says what to add."""

    def __init__(self, needed: str) -> None:
        super().__init__(needed)
        self.needed = needed


class NotAllowed(Exception):
    """The requester lacks a permission; ``holders`` are the users and groups who have it."""

    def __init__(self, permission: str, org: str, service: str, holders: tuple[str, ...]) -> None:
        super().__init__(permission)
        self.permission, self.org, self.service, self.holders = permission, org, service, holders


@dataclass(frozen=True)
class Requester:
    team_id: str
    channel_id: str
    user_id: str


@dataclass(frozen=True)
class Accepted:
    release: Release
    duplicate_of: str | None = None


def resolve(command: PublishCommand, config: Config) -> tuple[str, list[str]]:
    """Check the command against the catalog; return (org, arches). Raises UsageError naming what is wrong."""
    service = config.services.get(command.service)
    if service is None:
        known = ", ".join(f"`{s}`" for s in sorted(config.services)) or "none"
        raise UsageError(f"`{command.service}` is not in edgebot's catalog. Known services: {known}.", PUBLISH_USAGE)
    if command.registry not in config.registries:
        known = ", ".join(f"`{r}`" for r in sorted(config.registries))
        raise UsageError(f"Unknown registry alias `{command.registry}`. Configured: {known}.", PUBLISH_USAGE)
    arches = list(command.arches or service.arches)
    unbuilt = [a for a in arches if a not in service.arches]
    if unbuilt:
        raise UsageError(
            f"`{command.service}` is not built for {', '.join(f'`{a}`' for a in unbuilt)}; "
            f"it builds {', '.join(f'`{a}`' for a in service.arches)}.",
            PUBLISH_USAGE,
        )
    if command.policies:
        configured = [t.name for stage in service.rollout for t in stage.targets]
        unknown = [p for p in command.policies if p not in configured]
        if unknown:
            known = ", ".join(f"`{n}`" for n in configured) or "none"
            raise UsageError(f"`--policy {unknown[0]}` is not one of `{command.service}`'s rollout policies or "
                             f"patterns in the catalog ({known}).", PUBLISH_USAGE)
    org = command.org or service.org
    if org not in service.allowed_orgs:  # exact names: `--org ACME` is not `acme`
        allowed = ", ".join(f"`{o}`" for o in service.allowed_orgs)
        raise UsageError(f"`{command.service}` cannot be published to org `{org}`: the catalog allows {allowed} only "
                         "(a service's `orgs` in edgebot's config lists where `--org` may send it).", PUBLISH_USAGE)
    return org, arches


class ChannelCheck:
    """Can the bot post in a channel? Asked of Slack once, positive answers cached briefly in Redis."""

    def __init__(self, client: WebClient, connection: redis.Redis, config: Config) -> None:
        self.client = client
        self.redis = connection
        self.ttl = config.settings.channel_check_ttl
        self.prefix = config.settings.key_prefix

    def require_member(self, team_id: str, channel_id: str) -> None:
        key = f"{self.prefix}:channel-ok:{team_id}:{channel_id}"
        if self.ttl > 0 and self.redis.exists(key):
            return
        try:
            info = self.client.conversations_info(channel=channel_id)
        except SlackApiError as exc:
            if exc.response.get("error") in ("channel_not_found", "not_in_channel"):
                raise NotInChannel(channel_id) from None
            if exc.response.get("error") == "missing_scope":
                raise MissingScope(str(exc.response.get("needed") or "")) from None
            raise
        channel = info.get("channel") or {}
        if not (channel.get("is_member") or channel.get("is_im")):
            raise NotInChannel(channel_id)
        if self.ttl > 0:
            self.redis.set(key, "1", ex=self.ttl)


def accept_publish(
    command: PublishCommand,
    requester: Requester,
    text: str,
    *,
    config: Config,
    store: ReleaseStore,
    channels: ChannelCheck,
    access: AccessCheck | None = None,
    sealer: Sealer | None = None,
    new_id: Callable[[], str] = new_release_id,
    attempts: int = ID_ATTEMPTS,
) -> Accepted:
    """Validate, authorize, check the channel, then record the release and enqueue its first job atomically.

    An id that is already taken is never reused: the release is accepted again under a new one (``attempts`` in
    all), and :class:`ReleaseIdTaken` propagates when every try collided.
    """
    org, arches = resolve(command, config)
    # making a version visible to every org (--public) is a permission of its own
    _admit(access, ("publish", "public") if command.public else ("publish",), requester, channels, org=org,
           service=command.service, catalog_org=config.services[command.service].org)

    def make(release_id: str) -> Release:
        return Release(
            release_id=release_id,
            team_id=requester.team_id,
            channel_id=requester.channel_id,
            user_id=requester.user_id,
            service=command.service,
            version=command.version,
            org=org,
            registry=command.registry,
            arches=arches,
            dry_run=command.dry_run,
            overwrite=command.overwrite,
            rollout_only=list(command.policies or ()),
            command_text=" ".join(text.split()),
            public=command.public,
        )

    return _record(make, Step.PREPARE, requester, config=config, store=store, sealer=sealer, new_id=new_id,
                   attempts=attempts)


def _admit(access: AccessCheck | None, permissions: tuple[str, ...], requester: Requester, channels: ChannelCheck, *,
           org: str, service: str, catalog_org: str) -> None:
    """The requester holds every one of ``permissions`` for the service (NotAllowed naming who holds the first one
    missing), and the bot can post in the channel (NotInChannel): both before anything is written."""
    for permission in permissions:
        if access is None:
            break
        allowed, holders = access.allowed(permission, requester.user_id, org=org, service=service,
                                          catalog_org=catalog_org)
        if not allowed:
            raise NotAllowed(permission, org, service, holders)
    channels.require_member(requester.team_id, requester.channel_id)


def _record(make: Callable[[str], Release], first: Step, requester: Requester, *, config: Config,
            store: ReleaseStore, sealer: Sealer | None, new_id: Callable[[], str], attempts: int) -> Accepted:
    """Seal the release ``make`` builds, then write it and its ``first`` job in one MULTI (duplicates suppressed).

    An id that is already taken is never reused: the release is made again under a new one (``attempts`` in all),
    and :class:`ReleaseIdTaken` propagates when every try collided.
    """
    release = make(new_id())
    release.event("requested", by=requester.user_id, command=release.command_text)
    if sealer is not None:  # the publish worker acts only on a request the bot sealed (edgebot.seals)
        release.intake_seal = sealer.seal("intake", intake_payload(release))
    dedupe = store.dedupe_key(requester.team_id, requester.channel_id, requester.user_id, release.command_text)
    holder = store.claim_duplicate(dedupe, release.release_id)
    if holder is not None:  # the same command, just sent: this one queues nothing, even if the first one's record
        # is not written yet (its request is between its claim and its create right now)
        return Accepted(store.get(holder) or release, duplicate_of=holder)

    def enqueue_first_job(pipe: redis.client.Pipeline) -> None:
        enqueue_step(store.redis, config.settings, first, release.release_id, pipe=pipe)

    try:
        store.create(release, then=enqueue_first_job)
    except PublishLocked:
        store.release_duplicate_claim(dedupe, release.release_id)  # the next try must not be told "just sent"
        raise
    except ReleaseIdTaken:
        store.release_duplicate_claim(dedupe, release.release_id)
        log.warning("release id %s is taken: %s", release.release_id,
                    "trying a new one" if attempts > 1 else "giving up")
        if attempts <= 1:
            raise
        return _record(make, first, requester, config=config, store=store, sealer=sealer, new_id=new_id,
                       attempts=attempts - 1)
    _require_replicas(store, release, dedupe)
    return Accepted(release)


def _require_replicas(store: ReleaseStore, release: Release, dedupe: str) -> None:
    """With ``redis_wait_replicas``: the record and its first job are on that many replicas, or the release is
    withdrawn and :class:`edgebot.durability.NotDurable` raised (never a false "queued"); free when off."""
    try:
        confirmed = durability.confirm(store.redis, store.settings, store.key(release.release_id)).confirmed
    except redis.RedisError as exc:  # the master died right after the MULTI: unknown, so treated as unconfirmed
        log.warning("release %s: WAIT failed: %s", release.release_id, type(exc).__name__)
        confirmed = False
    if confirmed:
        return
    withdrawn = durability.withdraw(store, release)
    with contextlib.suppress(redis.RedisError):  # the same command sent again is a new request, not "just sent"
        store.release_duplicate_claim(dedupe, release.release_id)
    log.warning("release %s: fewer than %d replica(s) confirmed its intake: withdrawn (%s)", release.release_id,
                store.settings.redis_wait_replicas, "confirmed" if withdrawn else "unconfirmed")
    raise durability.NotDurable(release, wanted=store.settings.redis_wait_replicas,
                                timeout_ms=store.settings.redis_wait_timeout_ms, withdrawn=withdrawn)


def deploy_permission(access: AccessCheck, command: DeployCommand, org: str) -> str:
    """``deploy`` (``rollback`` for `/edge rollback --to`); where no ``[access]`` rule names it, ``publish``."""
    wanted = ROLLBACK_TO if command.as_rollback else DEPLOY
    return wanted if access.policy.principals(wanted, org=org, service=command.service) is not None else "publish"


def resolve_deploy(command: DeployCommand, config: Config, store: ReleaseStore) -> str:
    """Check a deploy against the catalog; return the registry alias whose approval rules apply."""
    usage = ROLLBACK_USAGE if command.as_rollback else DEPLOY_USAGE
    service = config.services.get(command.service)
    if service is None:
        known = ", ".join(f"`{s}`" for s in sorted(config.services)) or "none"
        raise UsageError(f"`{command.service}` is not in edgebot's catalog. Known services: {known}.", usage)
    if not service.rollout:
        raise UsageError(f"`{command.service}` has no rollout stages in edgebot's catalog, so a deploy would move "
                         "nothing: add `[[services.NAME.rollout]]` stages naming its policies or patterns.", usage)
    if command.policies:
        configured = [t.name for stage in service.rollout for t in stage.targets]
        unknown = [p for p in command.policies if p not in configured]
        if unknown:
            known = ", ".join(f"`{n}`" for n in configured)
            raise UsageError(f"`--policy {unknown[0]}` is not one of `{command.service}`'s rollout policies or "
                             f"patterns in the catalog ({known}).", usage)
    if command.registry is not None:
        if command.registry not in config.registries:
            known = ", ".join(f"`{r}`" for r in sorted(config.registries))
            raise UsageError(f"Unknown registry alias `{command.registry}`. Configured: {known}.", usage)
        return command.registry
    if len(config.registries) == 1:
        return next(iter(config.registries))
    for release in store.history(service.org, command.service, HISTORY_DEPTH):  # where edgebot published it
        if release.version == command.version and not release.is_deploy and release.registry in config.registries:
            return release.registry
    known = ", ".join(f"`{r}`" for r in sorted(config.registries))
    raise UsageError(f"Which registry are the images of `{command.service}` {command.version} in? edgebot did not "
                     f"publish that version itself: add `--registry ALIAS` ({known}); its approval rules apply.", usage)


def accept_deploy(
    command: DeployCommand,
    requester: Requester,
    text: str,
    *,
    config: Config,
    store: ReleaseStore,
    channels: ChannelCheck,
    access: AccessCheck | None = None,
    sealer: Sealer | None = None,
    new_id: Callable[[], str] = new_release_id,
) -> Accepted:
    """`/edge deploy` (or `/edge rollback --to`): a release of a version already in the Exchange, no build. Its first
    job (workers.deploy.check) verifies the version in the Exchange; nothing moves before that and the approvals."""
    registry = resolve_deploy(command, config, store)
    service = config.services[command.service]
    org = service.org
    permission = deploy_permission(access, command, org) if access is not None else DEPLOY
    _admit(access, (permission,), requester, channels, org=org, service=command.service, catalog_org=org)

    def make(release_id: str) -> Release:
        return Release(release_id=release_id, team_id=requester.team_id, channel_id=requester.channel_id,
                       user_id=requester.user_id, service=command.service, version=command.version, org=org,
                       registry=registry, arches=list(service.arches), rollout_only=list(command.policies or ()),
                       command_text=" ".join(text.split()), kind=ROLLBACK_TO if command.as_rollback else DEPLOY)

    return _record(make, Step.CHECK_DEPLOY, requester, config=config, store=store, sealer=sealer, new_id=new_id,
                   attempts=ID_ATTEMPTS)
