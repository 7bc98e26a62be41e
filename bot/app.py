"""The Bolt app: listeners are plain functions, registered in one place (:func:`register`).

Bolt sends the HTTP response the moment ``ack()`` is called (``process_before_response=False``), so a listener
does every check and the Redis writes first, then acks with the answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import grammar
from bot.access import AccessCheck, mention, parse_access
from bot.cancel import cancel_release
from bot.intake import ChannelCheck, NotAllowed, NotInChannel, Requester, accept_publish
from edgebot import messages
from edgebot.config import Config
from edgebot.errors import UsageError
from edgebot.secrets import SecretResolver
from edgebot.store import PublishLocked, ReleaseStore
from edgebot.thread import ThreadReporter, slack_client

log = logging.getLogger(__name__)


@dataclass
class BotContext:
    config: Config
    store: ReleaseStore
    channels: ChannelCheck
    access: AccessCheck
    reporter: ThreadReporter


def create_app(config: Config, *, resolver: SecretResolver | None = None,
               connection: redis.Redis | None = None) -> App:
    """Build the Bolt app. The bot resolves only the Slack secrets (least privilege)."""
    resolver = resolver or SecretResolver()
    token = resolver.resolve(config.slack.bot_token).reveal()
    signing_secret = resolver.resolve(config.slack.signing_secret).reveal()
    client = slack_client(token, config.slack.api_url)
    connection = connection or redis_connection(config, resolver)
    store = ReleaseStore(connection, config.settings)
    app = App(client=client, signing_secret=signing_secret, process_before_response=False,
              token_verification_enabled=False)
    access = AccessCheck(parse_access(config.extra.get("access")), lambda group: _group_members(client, group))
    register(app, BotContext(config, store, ChannelCheck(client, connection, config), access,
                             ThreadReporter(client, store)))
    return app


def _group_members(client: WebClient, usergroup: str) -> set[str]:
    try:
        return set(client.usergroups_users_list(usergroup=usergroup).get("users") or [])
    except SlackApiError as exc:
        log.warning("cannot read user group %s: %s", usergroup, exc.response.get("error"))
        return set()


def redis_connection(config: Config, resolver: SecretResolver) -> redis.Redis:
    password = resolver.resolve(config.redis_password).reveal() if config.redis_password else None
    return redis.Redis.from_url(config.redis_url, password=password, socket_timeout=5, socket_connect_timeout=5)


def register(app: App, ctx: BotContext) -> None:
    """Every listener of the bot, in one place."""

    def on_edge(ack: Ack, command: dict[str, Any], client: WebClient) -> None:
        handle_edge_command(ack, command, ctx)

    app.command("/edge")(on_edge)


def handle_edge_command(ack: Ack, command: dict[str, Any], ctx: BotContext) -> None:
    text = command.get("text", "") or ""
    try:
        parsed = grammar.parse(text)
    except UsageError as exc:
        _reply(ack, messages.usage_error(exc.problem, exc.usage))
        return
    if isinstance(parsed, grammar.HelpCommand):
        _reply(ack, messages.help_message(parsed.topic))
        return
    if isinstance(parsed, grammar.CancelCommand):
        try:
            handle_cancel(ack, parsed, command, ctx)
        except Exception:
            log.exception("/edge cancel failed")
            _reply(ack, messages.internal_error())
        return
    if isinstance(parsed, grammar.StatusCommand | grammar.HistoryCommand):
        try:
            _reply(ack, _read_only(parsed, command, ctx))
        except Exception:
            log.exception("/edge %s failed", parsed.__class__.__name__)
            _reply(ack, messages.internal_error())
        return
    requester = Requester(
        team_id=command.get("team_id", ""), channel_id=command.get("channel_id", ""), user_id=command.get("user_id", "")
    )
    assert isinstance(parsed, grammar.PublishCommand)
    try:
        accepted = accept_publish(parsed, requester, text, config=ctx.config, store=ctx.store, channels=ctx.channels,
                                  access=ctx.access)
    except UsageError as exc:
        _reply(ack, messages.usage_error(exc.problem, exc.usage))
        return
    except NotInChannel:
        _reply(ack, messages.not_in_channel(requester.channel_id))
        return
    except NotAllowed as refused:
        _reply(ack, messages.not_allowed(refused.permission, refused.service, refused.org,
                                         [mention(h) for h in refused.holders]))
        return
    except PublishLocked as locked:
        _reply(ack, messages.publish_locked(locked.holder))
        return
    except Exception:
        log.exception("could not accept /edge %s", parsed.__class__.__name__)
        _reply(ack, messages.internal_error())
        return
    if accepted.duplicate_of:
        _reply(ack, messages.duplicate_ack(accepted.duplicate_of))
        return
    # The root message is posted by the release's first job, not here: Slack has no idempotency key, so a bot killed
    # between chat.postMessage and recording its ts would leave a second root when the worker posted again.
    _reply(ack, messages.queued_ack(accepted.release))


def handle_cancel(ack: Ack, parsed: grammar.CancelCommand, command: dict[str, Any], ctx: BotContext) -> None:
    release = ctx.store.get(parsed.release_id)
    if release is None:
        _reply(ack, messages.unknown_release(parsed.release_id))
        return
    user_id = command.get("user_id", "")
    if user_id != release.user_id:  # the requester may always cancel their own release
        allowed, holders = ctx.access.allowed("cancel", user_id, org=release.org, service=release.service)
        if not allowed:
            _reply(ack, messages.not_allowed("cancel", release.service, release.org, [mention(h) for h in holders]))
            return
    outcome = cancel_release(ctx.store, parsed.release_id, user_id)
    if outcome is None:
        _reply(ack, messages.unknown_release(parsed.release_id))
        return
    if not outcome.cancelled:
        _reply(ack, messages.cancel_refused(outcome.release))
        return
    _reply(ack, messages.cancelled_ack(outcome.release, outcome.stopped_jobs, outcome.removed_jobs))
    for stage in outcome.release.progress_ts:  # progress messages show "cancelled" instead of a spinner
        ctx.reporter.stage(parsed.release_id, stage)
    ctx.reporter.summary(parsed.release_id)  # "cancelled by @user" in the thread, root repainted (if it exists)


def _read_only(parsed: grammar.StatusCommand | grammar.HistoryCommand, command: dict[str, Any],
               ctx: BotContext) -> messages.Message:
    """`/edge status` and `/edge history`: answered from the release records, ephemerally, without queuing."""
    if isinstance(parsed, grammar.HistoryCommand):
        service = ctx.config.services.get(parsed.service)
        if service is None:
            known = ", ".join(f"`{s}`" for s in sorted(ctx.config.services))
            return messages.usage_error(f"`{parsed.service}` is not in edgebot's catalog. Known services: {known}.",
                                        messages.HISTORY_USAGE)
        return messages.history_message(parsed.service, service.org,
                                        ctx.store.history(service.org, parsed.service, parsed.limit))
    if parsed.release_id:
        release = ctx.store.get(parsed.release_id)
        return messages.status_detail(release) if release else messages.unknown_release(parsed.release_id)
    channel_id = command.get("channel_id", "")
    return messages.status_list(channel_id, ctx.store.active_in_channel(command.get("team_id", ""), channel_id))


def _reply(ack: Ack, msg: messages.Message) -> None:
    if msg.blocks:
        ack(text=msg.text, blocks=msg.blocks, response_type="ephemeral")
    else:
        ack(text=msg.text, response_type="ephemeral")
