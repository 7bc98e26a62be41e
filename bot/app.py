"""The Bolt app: listeners are plain functions, registered in one place (:func:`register`).

Bolt sends the HTTP response the moment ``ack()`` is called (``process_before_response=False``), so a listener
does every check and the Redis writes first, then acks with the answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import grammar, rollout_view
from bot.access import AccessCheck, mention, parse_access
from bot.approval_handlers import Gate, handle_approve, handle_reject_click, handle_reject_submission, respond_ephemeral
from bot.approve import ApprovalDesk
from bot.cancel import cancel_release
from bot.intake import ChannelCheck, NotAllowed, NotInChannel, Requester, accept_publish
from bot.rollback import RollbackDesk, RollbackRefused, request_rollback
from edgebot import approval_messages, logs, messages
from edgebot.config import Config
from edgebot.errors import ConfigError, UsageError
from edgebot.ratelimit import SlackRateLimiter
from edgebot.release import Release
from edgebot.secrets import SecretResolver
from edgebot.store import PublishLocked, ReleaseStore
from edgebot.thread import SLACK_FAILURES, ThreadReporter, slack_client

log = logging.getLogger(__name__)


@dataclass
class BotContext:
    config: Config
    store: ReleaseStore
    channels: ChannelCheck
    access: AccessCheck
    reporter: ThreadReporter
    approvals: ApprovalDesk


def create_app(config: Config, *, resolver: SecretResolver | None = None,
               connection: redis.Redis | None = None) -> App:
    """Build the Bolt app. The bot resolves only the Slack secrets (least privilege)."""
    check_slack_references(config)
    resolver = resolver or SecretResolver()
    token = resolver.resolve(config.slack.bot_token).reveal()
    signing_secret = resolver.resolve(config.slack.signing_secret).reveal()
    client = slack_client(token, config.slack.api_url)
    connection = connection or redis_connection(config, resolver)
    store = ReleaseStore(connection, config.settings)
    app = App(client=client, signing_secret=signing_secret, process_before_response=False,
              token_verification_enabled=False)
    access = AccessCheck(parse_access(config.extra.get("access")), lambda group: _group_members(client, group))
    st = config.settings
    limiter = SlackRateLimiter(connection, burst=st.slack_burst, prefix=st.key_prefix, per_minute={
        "chat.update": st.slack_update_per_minute, "chat.postMessage": st.slack_post_per_minute})
    desk = ApprovalDesk(store, lambda group: _group_members(client, group), st)
    register(app, BotContext(config, store, ChannelCheck(client, connection, config), access,
                             ThreadReporter(client, store, limiter=limiter), desk))
    return app


def check_slack_references(config: Config) -> None:
    """The bot holds no Vault client (only workers talk to Vault): refuse a vault: reference under [slack] with what
    to do instead, at start-up rather than when the first request arrives."""
    for name, ref in (("bot_token", config.slack.bot_token), ("signing_secret", config.slack.signing_secret),
                      ("app_token", config.slack.app_token)):
        if ref is not None and ref.scheme == "vault":
            raise ConfigError(
                f"slack.{name} is a vault: reference, but the bot holds no Vault client (only workers talk to Vault): "
                "give it as a file: reference to a file that Vault Agent, the Vault CSI provider or a Kubernetes "
                "Secret keeps up to date, or as an env: reference (docs/production.md, section 2)")


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
        with logs.release_context():  # log lines name the release once it is known; reset for the next request
            handle_edge_command(ack, command, ctx)

    def publish_repaint(release_id: str) -> None:
        ctx.reporter.approval_card(release_id)
        ctx.reporter.refresh_root(release_id)  # the state shown at the top of the thread follows the card

    def publish_ended(release_id: str) -> None:
        ctx.reporter.summary(release_id)  # rejected or expired: the summary mentions the requester, root repainted

    rollback_desk = RollbackDesk(ctx.approvals)
    gates = {
        "publish": Gate(approve=ctx.approvals.approve, check_reject=ctx.approvals.check_reject,
                        reject=ctx.approvals.reject, request_of=lambda r: r.approval,
                        repaint=publish_repaint,
                        ended=publish_ended, counted=approval_messages.approval_counted),
        "rollback": Gate(approve=rollback_desk.approve, check_reject=rollback_desk.check_reject,
                         reject=rollback_desk.reject, request_of=lambda r: r.rollback_request,
                         repaint=ctx.reporter.rollback_card, ended=lambda rid: None,
                         counted=approval_messages.rollback_counted, rollback=True),
    }

    def approve_listener(gate: Gate) -> Any:
        def on_approve(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
            ack()
            with logs.release_context():
                _guarded(respond, "approve", lambda: handle_approve(gate, body, respond))
        return on_approve

    def reject_listener(gate: Gate) -> Any:
        def on_reject(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
            ack()
            with logs.release_context():
                _guarded(respond, "reject", lambda: handle_reject_click(gate, body, respond, client))
        return on_reject

    def submit_listener(gate: Gate) -> Any:
        def on_reject_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
            with logs.release_context():
                handle_reject_submission(gate, ack, body, view)
        return on_reject_submit

    def on_status_button(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        _guarded(respond, "status", lambda: _respond(respond, _status_of(body, ctx)))

    def on_cancel_button(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        release_id = (body.get("actions") or [{}])[0].get("value", "")
        user_id = (body.get("user") or {}).get("id", "")
        _guarded(respond, "cancel", lambda: _respond(respond, cancel_as(release_id, user_id, ctx)))

    app.command("/edge")(on_edge)
    for gate, (approve_id, reject_id, callback_id) in (
        (gates["publish"], (approval_messages.APPROVE_ACTION, approval_messages.REJECT_ACTION,
                            approval_messages.REJECT_CALLBACK)),
        (gates["rollback"], (approval_messages.APPROVE_ROLLBACK_ACTION, approval_messages.REJECT_ROLLBACK_ACTION,
                             approval_messages.REJECT_ROLLBACK_CALLBACK)),
    ):
        app.action(approve_id)(approve_listener(gate))
        app.action(reject_id)(reject_listener(gate))
        app.view(callback_id)(submit_listener(gate))
    app.action(messages.STATUS_ACTION)(on_status_button)
    app.action(messages.CANCEL_ACTION)(on_cancel_button)


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
    if isinstance(parsed, grammar.RollbackCommand):
        try:
            outcome = request_rollback(parsed.service, command.get("user_id", ""), config=ctx.config, store=ctx.store,
                                       access=ctx.access)
            if outcome.needs_approval:
                _reply(ack, approval_messages.rollback_requested(outcome.release))
                ctx.reporter.rollback_card(outcome.release.release_id)  # posted once, repainted if asked again
            else:
                _reply(ack, messages.rollback_ack(outcome.release, outcome.queued))
        except UsageError as exc:
            _reply(ack, messages.usage_error(exc.problem, exc.usage))
        except RollbackRefused as refused:
            _reply(ack, messages.not_allowed(refused.permission, refused.service, refused.org,
                                             [mention(h) for h in refused.holders]))
        except Exception:
            log.exception("/edge rollback failed")
            _reply(ack, messages.internal_error())
        return
    if isinstance(parsed, grammar.RolloutCommand):
        try:
            _reply(ack, rollout_view.answer(parsed.service, parsed.version, ctx.config, ctx.store))
        except Exception:
            log.exception("/edge rollout failed")
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
    logs.set_release(accepted.duplicate_of or accepted.release.release_id)
    if accepted.duplicate_of:
        _reply(ack, messages.duplicate_ack(accepted.duplicate_of))
        return
    # The root message is posted by the release's first job, not here: Slack has no idempotency key, so a bot killed
    # between chat.postMessage and recording its ts would leave a second root when the worker posted again.
    _reply(ack, messages.queued_ack(accepted.release))


def handle_cancel(ack: Ack, parsed: grammar.CancelCommand, command: dict[str, Any], ctx: BotContext) -> None:
    _reply(ack, cancel_as(parsed.release_id, command.get("user_id", ""), ctx))


def cancel_as(release_id: str, user_id: str, ctx: BotContext) -> messages.Message:
    """`/edge cancel` and the root message's Cancel button: the answer for ``user_id``; repaints the thread."""
    logs.set_release(release_id)
    release = ctx.store.get(release_id)
    if release is None:
        return messages.unknown_release(release_id)
    if user_id != release.user_id:  # the requester may always cancel their own release
        allowed, holders = ctx.access.allowed("cancel", user_id, org=release.org, service=release.service)
        if not allowed:
            return messages.not_allowed("cancel", release.service, release.org, [mention(h) for h in holders])
    outcome = cancel_release(ctx.store, release_id, user_id)
    if outcome is None:
        return messages.unknown_release(release_id)
    if not outcome.cancelled:
        return messages.cancel_refused(outcome.release)
    for stage in outcome.release.progress_ts:  # progress messages show "cancelled" instead of a spinner
        ctx.reporter.stage(release_id, stage)
    if outcome.release.approval is not None:
        ctx.reporter.approval_card(release_id)  # the card loses its buttons
    ctx.reporter.summary(release_id)  # "cancelled by @user" in the thread, root repainted (if it exists)
    return messages.cancelled_ack(outcome.release, outcome.stopped_jobs, outcome.removed_jobs)


def _status_of(body: dict[str, Any], ctx: BotContext) -> messages.Message:
    release_id = str((body.get("actions") or [{}])[0].get("value", ""))
    release = ctx.store.get(release_id)
    if release is None:
        return messages.unknown_release(release_id)
    return messages.status_detail(release, _permalink(ctx, release))


def _permalink(ctx: BotContext, release: Release) -> str:
    """The thread's link, from Slack (``chat.getPermalink``); "" when there is no thread yet or Slack is down."""
    if not release.message_ts:
        return ""
    try:
        answer = ctx.reporter.client.chat_getPermalink(channel=release.channel_id, message_ts=release.message_ts)
    except SLACK_FAILURES as exc:
        log.info("no permalink for %s: %s", release.release_id, exc)
        return ""
    return str(answer.get("permalink") or "")


def _guarded(respond: Respond, what: str, work: Any) -> None:
    """Run a button's work after the ack; an unexpected failure becomes an ephemeral apology, never silence."""
    try:
        work()
    except Exception:
        log.exception("%s button failed", what)
        _respond(respond, messages.internal_error())


_respond = respond_ephemeral


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
        return (messages.status_detail(release, _permalink(ctx, release)) if release
                else messages.unknown_release(parsed.release_id))
    channel_id = command.get("channel_id", "")
    return messages.status_list(channel_id, ctx.store.active_in_channel(command.get("team_id", ""), channel_id))


def _reply(ack: Ack, msg: messages.Message) -> None:
    if msg.blocks:
        ack(text=msg.text, blocks=msg.blocks, response_type="ephemeral")
    else:
        ack(text=msg.text, response_type="ephemeral")
