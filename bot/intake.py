"""From a parsed `/edge publish` to a recorded, queued release — or a refusal, with nothing queued.

Order matters: every check that can refuse runs first (catalog, registry alias, arches, channel membership), then
the release record, its service's publish lock and its first job are written in one Redis MULTI (or refused with
``PublishLocked`` naming the release that holds the lock), and only then does the listener ack. A crash
after the ack cannot lose the release; a crash before it leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.access import AccessCheck
from bot.grammar import PublishCommand
from edgebot.config import Config
from edgebot.errors import UsageError
from edgebot.ids import new_release_id
from edgebot.jobs import Step, enqueue_step
from edgebot.messages import PUBLISH_USAGE
from edgebot.release import Release
from edgebot.seals import Sealer, intake_payload
from edgebot.store import PublishLocked, ReleaseIdTaken, ReleaseStore

log = logging.getLogger(__name__)
ID_ATTEMPTS = 3
"""New release ids tried when one is taken (with 64 random bits, a second try is already a curiosity)."""


class NotInChannel(Exception):
    """The bot cannot post in the channel the command came from."""


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
    if access is not None:
        allowed, holders = access.allowed("publish", requester.user_id, org=org, service=command.service,
                                          catalog_org=config.services[command.service].org)
        if not allowed:
            raise NotAllowed("publish", org, command.service, holders)
    channels.require_member(requester.team_id, requester.channel_id)
    release = Release(
        release_id=new_id(),
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
    )
    release.event("requested", by=requester.user_id, command=release.command_text)
    if sealer is not None:  # the publish worker acts only on a request the bot sealed (edgebot.seals)
        release.intake_seal = sealer.seal("intake", intake_payload(release))
    dedupe = store.dedupe_key(requester.team_id, requester.channel_id, requester.user_id, release.command_text)
    holder = store.claim_duplicate(dedupe, release.release_id)
    if holder is not None:  # the same command, just sent: this one queues nothing, even if the first one's record
        # is not written yet (its request is between its claim and its create right now)
        return Accepted(store.get(holder) or release, duplicate_of=holder)

    def enqueue_first_job(pipe: redis.client.Pipeline) -> None:
        enqueue_step(store.redis, config.settings, Step.PREPARE, release.release_id, pipe=pipe)

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
        return accept_publish(command, requester, text, config=config, store=store, channels=channels, access=access,
                              sealer=sealer, new_id=new_id, attempts=attempts - 1)
    return Accepted(release)
