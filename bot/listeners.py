"""Every Bolt listener of the bot: plain module-level functions that take only what Bolt injects.

``bot.app.register`` registers them, in one place, with a global middleware (:class:`AttachContext`) that puts the
app's :class:`BotContext` into Bolt's per-request ``context``; a listener reads it back with :func:`bot_context`. So a
test imports a listener and calls it with a recording ``ack``/``respond`` and a ``BoltContext`` it filled itself.

Bolt sends the HTTP response the moment ``ack()`` is called (``process_before_response=False``): a slash command
does every check and its Redis writes first, then acks with the answer; a button acks at once and answers through
``respond`` (ephemerally); a modal submission acks with the field errors or closes the modal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, BoltContext, BoltRequest, BoltResponse, Respond
from slack_bolt.middleware import Middleware
from slack_sdk import WebClient

from bot import grammar, rollout_view, verify_intake
from bot.access import AccessCheck, mention
from bot.approve import KINDS, ApprovalDesk, ClickOutcome, kind_of_action, kind_of_view
from bot.cancel import cancel_release
from bot.intake import ChannelCheck, MissingScope, NotAllowed, NotInChannel, Requester, accept_deploy, accept_publish
from bot.rollback import RollbackRefused, request_rollback
from edgebot import approval_messages, approvals, dockauth_records, fleet_messages, logs, messages
from edgebot.approvals import Kind, Refusal
from edgebot.config import Config
from edgebot.durability import NotDurable
from edgebot.errors import UsageError
from edgebot.release import Release
from edgebot.store import PublishLocked, ReleaseStore
from edgebot.thread import SLACK_FAILURES, ThreadReporter

log = logging.getLogger(__name__)

CONTEXT_KEY = "edgebot"
"""Where :class:`AttachContext` puts the :class:`BotContext` in Bolt's ``context``."""
MODAL_ERROR_CHARS = 150
"""A field error under the Reject modal's reason is cut to this many characters."""
HISTORY_SCAN = 100
"""Newest releases of a service `/edge history` reads to find the channel's own (the others are only counted)."""


@dataclass
class BotContext:
    """What the listeners work with, built once per app (``bot.app.create_app``)."""

    config: Config
    store: ReleaseStore
    channels: ChannelCheck
    access: AccessCheck
    reporter: ThreadReporter
    approvals: ApprovalDesk


class AttachContext(Middleware):
    """Global middleware: every request's Bolt ``context`` carries the app's :class:`BotContext`."""

    def __init__(self, ctx: BotContext) -> None:
        self.ctx = ctx

    def process(self, *, req: BoltRequest, resp: BoltResponse,
                next: Callable[[], BoltResponse]) -> BoltResponse | None:
        req.context[CONTEXT_KEY] = self.ctx
        return next()


def bot_context(context: BoltContext) -> BotContext:
    ctx = context.get(CONTEXT_KEY)
    if not isinstance(ctx, BotContext):
        raise RuntimeError("no BotContext in Bolt's context: register the listeners with bot.app.register")
    return ctx


# -- /edge ----------------------------------------------------------------------------------------------------------

def edge_command(ack: Ack, command: dict[str, Any], context: BoltContext) -> None:
    """Every `/edge …` command: answered ephemerally in the ack; nothing is written before every check passed."""
    ctx = bot_context(context)
    with logs.release_context():  # log lines name the release once it is known; reset for the next request
        answer = answer_command(command, ctx)
        _reply(ack, answer.message)
        if answer.then is not None:
            try:
                answer.then()
            except Exception:
                log.exception("after answering /edge: failed")


@dataclass(frozen=True)
class Answer:
    message: messages.Message
    then: Callable[[], None] | None = None
    """Work after the ack (posting a card): Slack waits for the ack only."""


def answer_command(command: dict[str, Any], ctx: BotContext) -> Answer:
    """The answer to one `/edge` command; a refusal is an answer, an unexpected failure an apology."""
    try:
        parsed = grammar.parse(command.get("text", "") or "")
    except UsageError as exc:
        return Answer(messages.usage_error(exc.problem, exc.usage))
    try:
        return _answer(parsed, command, ctx)
    except UsageError as exc:
        return Answer(messages.usage_error(exc.problem, exc.usage))
    except NotInChannel:
        return Answer(messages.not_in_channel(command.get("channel_id", "")))
    except MissingScope as missing:
        log.warning("conversations.info: the Slack app lacks the scope %s", missing.needed)
        return Answer(messages.missing_scope(missing.needed))
    except (NotAllowed, RollbackRefused) as refused:
        return Answer(messages.not_allowed(refused.permission, refused.service, refused.org,
                                           [mention(h) for h in refused.holders]))
    except PublishLocked as locked:
        return Answer(messages.publish_locked(locked.holder))
    except NotDurable as unconfirmed:
        return Answer(messages.not_durable(unconfirmed.release.release_id, wanted=unconfirmed.wanted,
                                           timeout_ms=unconfirmed.timeout_ms, withdrawn=unconfirmed.withdrawn))
    except Exception:
        log.exception("/edge %s failed", parsed.__class__.__name__)
        return Answer(messages.internal_error())


def _answer(parsed: grammar.Command, command: dict[str, Any], ctx: BotContext) -> Answer:
    user_id = command.get("user_id", "")
    match parsed:
        case grammar.HelpCommand():
            return Answer(messages.help_message(parsed.topic))
        case grammar.CancelCommand():
            return Answer(cancel_as(parsed.release_id, user_id, ctx))
        case grammar.RollbackCommand():
            outcome = request_rollback(parsed.service, user_id, config=ctx.config, store=ctx.store, access=ctx.access)
            if outcome.unconfirmed:  # written, but a failover could lose it (edgebot.durability): not "rolling back"
                st = ctx.config.settings
                return Answer(messages.rollback_unconfirmed(outcome.release.release_id, wanted=st.redis_wait_replicas,
                                                            timeout_ms=st.redis_wait_timeout_ms,
                                                            requested=outcome.needs_approval))
            if not outcome.needs_approval:
                return Answer(fleet_messages.rollback_ack(outcome.release, outcome.queued))
            release_id = outcome.release.release_id
            return Answer(approval_messages.rollback_requested(outcome.release),
                          then=lambda: ctx.reporter.rollback_card(release_id))  # posted once, repainted if asked again
        case grammar.RolloutCommand():
            return Answer(rollout_view.answer(parsed.service, parsed.version, ctx.config, ctx.store))
        case grammar.StatusCommand() | grammar.HistoryCommand():
            return Answer(_read_only(parsed, command, ctx))
        case grammar.PublishCommand():
            return Answer(_publish(parsed, command, ctx))
        case grammar.DeployCommand():
            return Answer(_deploy(parsed, command, ctx))
        case grammar.VerifyCommand():
            return Answer(verify_intake.accept_verify(parsed, command, ctx.config, ctx.store, ctx.channels))
    raise AssertionError(f"no answer for {parsed!r}")


def _requester(command: dict[str, Any]) -> Requester:
    return Requester(team_id=command.get("team_id", ""), channel_id=command.get("channel_id", ""),
                     user_id=command.get("user_id", ""))


def _publish(parsed: grammar.PublishCommand, command: dict[str, Any], ctx: BotContext) -> messages.Message:
    requester = _requester(command)
    accepted = accept_publish(parsed, requester, command.get("text", "") or "", config=ctx.config, store=ctx.store,
                              channels=ctx.channels, access=ctx.access, sealer=ctx.approvals.sealer)
    logs.set_release(accepted.duplicate_of or accepted.release.release_id)
    if accepted.duplicate_of:
        return messages.duplicate_ack(accepted.duplicate_of)
    # The root message is posted by the release's first job, not here: Slack has no idempotency key, so a bot killed
    # between chat.postMessage and recording its ts would leave a second root when the worker posted again.
    return messages.queued_ack(accepted.release)


def _deploy(parsed: grammar.DeployCommand, command: dict[str, Any], ctx: BotContext) -> messages.Message:
    """`/edge deploy`, `/edge rollback --to`: recorded and queued like a publish; the first job checks the Exchange."""
    requester = _requester(command)
    accepted = accept_deploy(parsed, requester, command.get("text", "") or "", config=ctx.config, store=ctx.store,
                             channels=ctx.channels, access=ctx.access, sealer=ctx.approvals.sealer)
    logs.set_release(accepted.duplicate_of or accepted.release.release_id)
    if accepted.duplicate_of:
        return messages.duplicate_ack(accepted.duplicate_of)
    return fleet_messages.deploy_queued_ack(accepted.release)


def _read_only(parsed: grammar.StatusCommand | grammar.HistoryCommand, command: dict[str, Any],
               ctx: BotContext) -> messages.Message:
    """`/edge status` and `/edge history`: answered from the release records, ephemerally, without queuing. Only the
    releases of the channel asking are shown (a private channel's releases stay in it); history counts the others."""
    team_id, channel_id = command.get("team_id", ""), command.get("channel_id", "")
    if isinstance(parsed, grammar.HistoryCommand):
        service = ctx.config.services.get(parsed.service)
        if service is None:
            known = ", ".join(f"`{s}`" for s in sorted(ctx.config.services))
            return messages.usage_error(f"`{parsed.service}` is not in edgebot's catalog. Known services: {known}.",
                                        messages.HISTORY_USAGE)
        recent = ctx.store.history(service.org, parsed.service, HISTORY_SCAN)
        here = [r for r in recent if _belongs(r, team_id, channel_id)]
        return messages.history_message(parsed.service, service.org, here[: parsed.limit],
                                        elsewhere=len(recent) - len(here))
    if parsed.service:
        return _service_status(parsed.service, ctx)
    if parsed.release_id:
        release = ctx.store.get(parsed.release_id)
        if release is None:
            return messages.unknown_release(parsed.release_id)
        if not _belongs(release, team_id, channel_id):
            return messages.release_elsewhere(release.release_id)
        return messages.status_detail(release, _permalink(ctx, release))
    return messages.status_list(channel_id, ctx.store.active_in_channel(team_id, channel_id))


def _service_status(name: str, ctx: BotContext) -> messages.Message:
    """`/edge status SERVICE`: the dockauth expiries the publish worker recorded (the bot has no Exchange
    credential), with the warning for those expiring within ``settings.dockauth_expiry_warning``."""
    service = ctx.config.services.get(name)
    if service is None:
        known = ", ".join(f"`{s}`" for s in sorted(ctx.config.services))
        return messages.usage_error(f"`{name}` is neither a release id (they look like `r-7f3a9c0d12e4b856`) nor a "
                                    f"service of edgebot's catalog. Known services: {known}.", messages.STATUS_USAGE)
    settings = ctx.config.settings
    records = dockauth_records.read(ctx.store.redis, settings, service.org, name)
    return fleet_messages.dockauth_status(name, service.org, records, now=time.time(),
                                    window=settings.dockauth_expiry_warning)


def _belongs(release: Release, team_id: str, channel_id: str) -> bool:
    """Whether ``release`` was requested in this channel (read commands show nothing of other channels')."""
    return release.channel_id == channel_id and (not team_id or not release.team_id or release.team_id == team_id)


def cancel_as(release_id: str, user_id: str, ctx: BotContext) -> messages.Message:
    """`/edge cancel` and the root message's Cancel button: the answer for ``user_id``; repaints the thread."""
    logs.set_release(release_id)
    release = ctx.store.get(release_id)
    if release is None:
        return messages.unknown_release(release_id)
    if user_id != release.user_id:  # the requester may always cancel their own release
        catalog = ctx.config.services.get(release.service)
        allowed, holders = ctx.access.allowed("cancel", user_id, org=release.org, service=release.service,
                                              catalog_org=catalog.org if catalog else None)
        if not allowed:
            return messages.not_allowed("cancel", release.service, release.org, [mention(h) for h in holders])
    outcome = cancel_release(ctx.store, release_id, user_id)
    if outcome is None:
        return messages.unknown_release(release_id)
    if outcome.too_late:
        return messages.cancel_too_late(outcome.release)
    if not outcome.cancelled:
        return messages.cancel_refused(outcome.release)
    for stage in outcome.release.progress_ts:  # progress messages show "cancelled" instead of a spinner
        ctx.reporter.stage(release_id, stage)
    if outcome.release.approval is not None:
        ctx.reporter.approval_card(release_id)  # the card loses its buttons
    ctx.reporter.summary(release_id)  # "cancelled by @user" in the thread, root repainted (if it exists)
    return messages.cancelled_ack(outcome.release, outcome.stopped_jobs, outcome.removed_jobs)


# -- the root message's buttons -------------------------------------------------------------------------------------

def status_click(ack: Ack, body: dict[str, Any], respond: Respond, context: BoltContext) -> None:
    ack()
    ctx = bot_context(context)
    _guarded(respond, "status", lambda: _status_of(body, ctx))


def cancel_click(ack: Ack, body: dict[str, Any], respond: Respond, context: BoltContext) -> None:
    ack()
    ctx = bot_context(context)
    release_id = str(_action(body).get("value", ""))
    user_id = _user(body)
    _guarded(respond, "cancel", lambda: cancel_as(release_id, user_id, ctx))


def _status_of(body: dict[str, Any], ctx: BotContext) -> messages.Message:
    release_id = str(_action(body).get("value", ""))
    release = ctx.store.get(release_id)
    if release is None:
        return messages.unknown_release(release_id)
    channel_id = str((body.get("channel") or {}).get("id", "") or release.channel_id)
    team_id = str((body.get("team") or {}).get("id", "") or release.team_id)
    if not _belongs(release, team_id, channel_id):
        return messages.release_elsewhere(release.release_id)
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


# -- approval cards: every kind (the button's action id or the modal's callback id says which) ----------------------

def approve_click(ack: Ack, body: dict[str, Any], respond: Respond, context: BoltContext) -> None:
    """Approve on a card: counted (or refused, with why) in one update; the card shows the new tally."""
    ack()
    ctx = bot_context(context)
    _guarded(respond, "approve", lambda: _approve(_kind(body), body, ctx, respond))


def reject_click(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient, context: BoltContext) -> None:
    """Reject on a card: the modal that asks why opens only for someone whose rejection would count."""
    ack()
    ctx = bot_context(context)
    _guarded(respond, "reject", lambda: _open_reject_modal(_kind(body), body, ctx, client))


def reject_submission(ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext) -> None:
    """The Reject modal's submission: the modal closes once the rejection is recorded, else it shows why not."""
    ctx = bot_context(context)
    kind = kind_of_view(str(view.get("callback_id", "")))
    assert kind is not None, "registered for the Reject modals of approval cards only"
    rules = KINDS[kind]
    values = (view.get("state") or {}).get("values") or {}
    field = (values.get(approval_messages.REASON_BLOCK) or {}).get(approval_messages.REASON_ACTION) or {}
    reason = " ".join(str(field.get("value") or "").split())
    if len(reason) < approval_messages.REASON_MIN_LENGTH:
        _field_error(ack, approval_messages.REASON_TOO_SHORT)
        return
    release_id, digest = approvals.parse_button_value(str(view.get("private_metadata", "")))
    with logs.release_context():
        logs.set_release(release_id)
        try:
            outcome = ctx.approvals.reject(kind, release_id, digest, _user(body),
                                           reason[: approval_messages.REASON_MAX_LENGTH])
        except Exception:
            log.exception("could not record the rejection of %s", release_id)
            _field_error(ack, messages.internal_error().text)
            return
        if outcome.refused is not None:
            _field_error(ack, _refusal(kind, outcome, release_id).text)
            _closed_by_click(kind, outcome, ctx, release_id)
            return
        if outcome.unconfirmed:  # written, but a failover could lose it (edgebot.durability): not reported as done
            st = ctx.config.settings
            _field_error(ack, approval_messages.decision_unconfirmed(
                release_id, approved=False, wanted=st.redis_wait_replicas, timeout_ms=st.redis_wait_timeout_ms).text)
        else:
            ack()
        rules.repaint(ctx.reporter, release_id)  # buttons removed, "Rejected: … — reason"
        rules.ended(ctx.reporter, release_id)


def _approve(kind: Kind, body: dict[str, Any], ctx: BotContext, respond: Respond) -> messages.Message | None:
    rules = KINDS[kind]
    release_id, digest = _clicked(body)
    logs.set_release(release_id)
    outcome = ctx.approvals.approve(kind, release_id, digest, _user(body))
    if outcome.refused is not None:
        respond_ephemeral(respond, _refusal(kind, outcome, release_id))
        _closed_by_click(kind, outcome, ctx, release_id)
        return None
    assert outcome.release is not None
    rules.repaint(ctx.reporter, release_id)  # "1 of 2: @approver", in place
    if outcome.unconfirmed:  # written, but a failover could lose it (edgebot.durability): not reported as counted
        st = ctx.config.settings
        return approval_messages.decision_unconfirmed(release_id, approved=True, wanted=st.redis_wait_replicas,
                                                      timeout_ms=st.redis_wait_timeout_ms)
    return rules.counted(outcome.release, outcome.quorum)


def _closed_by_click(kind: Kind, outcome: ClickOutcome, ctx: BotContext, release_id: str) -> None:
    """A click (or a Reject submission) that found the request past its deadline closed it: the thread says so now
    (the scheduled expiry finds nothing left to do)."""
    if outcome.release is not None and outcome.refused is Refusal.EXPIRED:
        KINDS[kind].repaint(ctx.reporter, release_id)
        KINDS[kind].ended(ctx.reporter, release_id)


def _open_reject_modal(kind: Kind, body: dict[str, Any], ctx: BotContext,
                       client: WebClient) -> messages.Message | None:
    release_id, digest = _clicked(body)
    logs.set_release(release_id)
    outcome = ctx.approvals.check_reject(kind, release_id, digest, _user(body))
    if outcome.refused is not None or outcome.release is None:
        return _refusal(kind, outcome, release_id)
    client.views_open(trigger_id=body.get("trigger_id", ""),
                      view=KINDS[kind].modal(outcome.release, str(_action(body).get("value", ""))))
    return None


def _kind(body: dict[str, Any]) -> Kind:
    kind = kind_of_action(str(_action(body).get("action_id", "")))
    assert kind is not None, "registered for the buttons of approval cards only"
    return kind


def _refusal(kind: Kind, outcome: ClickOutcome, release_id: str) -> messages.Message:
    release = outcome.release
    request = KINDS[kind].request(release) if release is not None else None
    return approval_messages.click_refused(outcome.refused or Refusal.UNKNOWN, release, release_id,
                                           approvers=request.approvers if request else [], kind=kind)


def _field_error(ack: Ack, text: str) -> None:
    ack(response_action="errors", errors={approval_messages.REASON_BLOCK: text[:MODAL_ERROR_CHARS]})


# -- helpers ----------------------------------------------------------------------------------------------------------

def _action(body: dict[str, Any]) -> dict[str, Any]:
    return dict((body.get("actions") or [{}])[0])


def _user(body: dict[str, Any]) -> str:
    return str((body.get("user") or {}).get("id", ""))


def _clicked(body: dict[str, Any]) -> tuple[str, str]:
    """(release_id, card digest) of a click on an approval button."""
    return approvals.parse_button_value(str(_action(body).get("value", "")))


def _guarded(respond: Respond, what: str, work: Callable[[], messages.Message | None]) -> None:
    """Run a button's work after the ack and answer ephemerally (when it has an answer); an unexpected failure
    becomes an apology, never silence. Log lines name the release the work sets, until it returns."""
    with logs.release_context():
        try:
            answer = work()
        except Exception:
            log.exception("%s button failed", what)
            answer = messages.internal_error()
        if answer is not None:
            respond_ephemeral(respond, answer)


def respond_ephemeral(respond: Respond, msg: messages.Message) -> None:
    respond(text=msg.text, blocks=msg.blocks or None, response_type="ephemeral", replace_original=False)


def _reply(ack: Ack, msg: messages.Message) -> None:
    if msg.blocks:
        ack(text=msg.text, blocks=msg.blocks, response_type="ephemeral")
    else:
        ack(text=msg.text, response_type="ephemeral")
