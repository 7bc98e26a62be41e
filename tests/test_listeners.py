"""The bot's listeners, imported and called as Bolt calls them: a recording ``ack``/``respond``, a ``BoltContext``
carrying a BotContext built on a real Redis, and a real WebClient pointed at the Slack stand-in (for the card repaints,
user groups and ``views.open``). What counts is read back from Redis, RQ's queue and the stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from rq import Queue
from slack_bolt import App, BoltContext, BoltRequest
from slack_sdk import WebClient

from bot import listeners
from bot.access import AccessCheck
from bot.app import register
from bot.approve import KINDS, ApprovalDesk, kind_of_action, kind_of_view
from bot.intake import ChannelCheck
from bot.listeners import CONTEXT_KEY, BotContext
from edgebot import approval_messages, approvals, logs, messages
from edgebot.approvals import Kind, Refusal
from edgebot.config import parse_config
from edgebot.jobs import PUBLISH_QUEUE, SERIALIZER, Step, publish_args
from edgebot.release import AWAITING_APPROVAL, EXPIRED, PUBLISHING, REJECTED, Release
from edgebot.store import ReleaseStore
from edgebot.thread import ThreadReporter, slack_client
from sandbox.slack import SlackStandIn
from tests.test_approvals import BASE_CONFIG, _rollback_request, _waiting
from tests.test_messages import T0

TOKEN = "xoxb-listeners-test"
TEAM, CHANNEL = "T0EDGE", "C0RELEASES"
ALICE, LEAD, OUTSIDER, REQUESTER, ONCALL = "U0ALICE", "U0LEAD", "U0MALLORY", "U0REQUESTER", "U0ONCALL"
NOW = T0 + 60


@dataclass
class Recorder:
    """A fake ``ack`` or ``respond``: records the keyword arguments of every call."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    @property
    def only(self) -> dict[str, Any]:
        assert len(self.calls) == 1, self.calls
        return self.calls[0]


@dataclass
class Bot:
    ctx: BotContext
    context: BoltContext
    client: WebClient
    slack: SlackStandIn
    redis: redis.Redis
    clock: list[float]


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn(bot_token=TOKEN, team_id=TEAM) as standin:
        standin.add_channel(CHANNEL, "releases")
        standin.add_usergroup("S0LEADS", "leads", [LEAD])
        yield standin


@pytest.fixture
def bot(slack: SlackStandIn, redis_conn: redis.Redis) -> Bot:
    config = parse_config({**BASE_CONFIG, "approvals": {"approvers": [ALICE, "S0LEADS"], "required": 2},
                           "trust": {"seal_key": "env:EDGEBOT_SEAL_KEY"}, "access": {"publish": ["*"]}}, environ={})
    client = slack_client(TOKEN, slack.api_url)
    store = ReleaseStore(redis_conn, config.settings)
    clock = [NOW]

    def members(group: str) -> set[str]:
        return set(client.usergroups_users_list(usergroup=group).get("users") or [])

    desk = ApprovalDesk(store, members, config.settings, clock=lambda: clock[0])
    ctx = BotContext(config, store, ChannelCheck(client, redis_conn, config), AccessCheck(config.access, members),
                     ThreadReporter(client, store), desk)
    return Bot(ctx, BoltContext({CONTEXT_KEY: ctx}), client, slack, redis_conn, clock)


def _in_thread(bot: Bot, release: Release, kind: Kind = Kind.PUBLISH) -> Release:
    """Record ``release`` with a real root message and card in the stand-in (so repaints have something to edit)."""
    release.message_ts = bot.client.chat_postMessage(channel=CHANNEL, text="root")["ts"]
    request = KINDS[kind].request(release)
    assert request is not None
    request.card_ts = bot.client.chat_postMessage(channel=CHANNEL, thread_ts=release.message_ts, text="card")["ts"]
    bot.ctx.store.create(release)
    return release


def _value(release: Release, kind: Kind) -> str:
    return approvals.button_value(release) if kind is Kind.PUBLISH else approvals.rollback_button_value(release)


def _click(bot: Bot, action_id: str, value: str, user_id: str) -> dict[str, Any]:
    return {"type": "block_actions", "user": {"id": user_id}, "trigger_id": bot.slack.new_trigger_id(user_id),
            "actions": [{"action_id": action_id, "value": value}]}


def _submission(callback_id: str, value: str, reason: str, user_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    view = {"callback_id": callback_id, "private_metadata": value, "state": {"values": {
        approval_messages.REASON_BLOCK: {approval_messages.REASON_ACTION: {"type": "plain_text_input",
                                                                           "value": reason}}}}}
    return {"type": "view_submission", "user": {"id": user_id}, "view": view}, view


def _command(text: str, user_id: str = REQUESTER) -> dict[str, Any]:
    return {"command": "/edge", "text": text, "user_id": user_id, "team_id": TEAM, "channel_id": CHANNEL}


def _queued(bot: Bot) -> list[Any]:
    return Queue(PUBLISH_QUEUE, connection=bot.redis, serializer=SERIALIZER).get_jobs()


# -- /edge ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("topic", ["", "publish"])
def test_edge_help_answers_ephemerally(bot: Bot, topic: str) -> None:
    ack = Recorder()
    listeners.edge_command(ack, _command(f"help {topic}".strip()), bot.context)
    expected = messages.help_message(topic or None)
    assert ack.only == {"text": expected.text, "blocks": expected.blocks, "response_type": "ephemeral"}
    assert bot.redis.dbsize() == 0


@pytest.mark.parametrize(("text", "problem"), [
    ("publish nosuch 1.0.0 --registry icr", "`nosuch` is not in edgebot's catalog. Known services: `hello`."),
    ("publish hello 1.0.0 --registry nowhere", "`nowhere`"),
    ("publish hello 1.0.0", "--registry"),
    ("frobnicate", "frobnicate"),
    ("rollback nosuch", "`nosuch` is not in edgebot's catalog"),
])
def test_a_usage_error_names_the_problem_and_writes_nothing(bot: Bot, text: str, problem: str) -> None:
    ack = Recorder()
    listeners.edge_command(ack, _command(text), bot.context)
    answer = ack.only
    assert answer["response_type"] == "ephemeral"
    assert problem in answer["text"] and "Usage" in answer["text"], answer["text"]
    assert bot.redis.dbsize() == 0, "nothing recorded, nothing queued"
    assert bot.slack.calls() == [], "not even a channel check"


def test_a_publish_is_recorded_and_queued_before_the_ack(bot: Bot) -> None:
    ack = Recorder()
    listeners.edge_command(ack, _command("publish hello 1.0.0 --registry icr"), bot.context)
    (release,) = bot.ctx.store.active_in_channel(TEAM, CHANNEL)
    assert ack.only["text"] == messages.queued_ack(release).text
    assert [j.id for j in _queued(bot)] == [Step.PREPARE.job_id(release.release_id)]


def test_a_publish_from_a_direct_message_is_accepted_with_the_manifests_scopes(bot: Bot) -> None:
    bot.slack.add_channel("D0REQUESTER", REQUESTER, kind="im")
    ack = Recorder()
    listeners.edge_command(ack, {**_command("publish hello 1.0.0 --registry icr"), "channel_id": "D0REQUESTER"},
                           bot.context)
    (release,) = bot.ctx.store.active_in_channel(TEAM, "D0REQUESTER")
    assert ack.only["text"] == messages.queued_ack(release).text


def test_a_missing_slack_scope_is_named_and_nothing_is_queued(bot: Bot) -> None:
    bot.slack.workspace.scopes = bot.slack.workspace.scopes - {"im:read"}
    bot.slack.add_channel("D0REQUESTER", REQUESTER, kind="im")
    ack = Recorder()
    listeners.edge_command(ack, {**_command("publish hello 1.0.0 --registry icr"), "channel_id": "D0REQUESTER"},
                           bot.context)
    assert ack.only["text"] == messages.missing_scope("im:read").text
    assert "`im:read`" in ack.only["text"]
    assert bot.ctx.store.active_in_channel(TEAM, "D0REQUESTER") == [] and _queued(bot) == []


# -- approval cards ---------------------------------------------------------------------------------------------------

def test_an_approve_click_by_a_non_approver_is_refused_and_counts_nothing(bot: Bot) -> None:
    release = _in_thread(bot, _waiting())
    ack, respond = Recorder(), Recorder()
    listeners.approve_click(ack, _click(bot, approval_messages.APPROVE_ACTION, _value(release, Kind.PUBLISH),
                                        OUTSIDER), respond, bot.context)
    assert ack.only == {}
    expected = approval_messages.click_refused(Refusal.NOT_APPROVER, release, release.release_id,
                                               approvers=[ALICE, "S0LEADS"])
    assert respond.only == {"text": expected.text, "blocks": None, "response_type": "ephemeral",
                            "replace_original": False}
    assert expected.text.startswith("You are not an approver for") and "<!subteam^S0LEADS>" in expected.text
    stored = bot.ctx.store.require(release.release_id)
    assert stored.state == AWAITING_APPROVAL and stored.approval is not None and stored.approval.decisions == []
    assert stored.events[-1] == {**stored.events[-1], "what": "approval_refused", "by": OUTSIDER,
                                 "reason": "not_approver"}
    assert _queued(bot) == [] and bot.slack.calls("chat.update") == []


def test_the_click_that_completes_the_quorum_enqueues_publish_in_the_same_write(bot: Bot) -> None:
    release = _in_thread(bot, _waiting())
    value = _value(release, Kind.PUBLISH)
    answers = []
    for user in (ALICE, ALICE, LEAD):  # a double click, then a member of S0LEADS (resolved through Slack)
        respond = Recorder()
        listeners.approve_click(Recorder(), _click(bot, approval_messages.APPROVE_ACTION, value, user), respond,
                                bot.context)
        answers.append(respond.only["text"])
    assert "counts: 1 of 2" in answers[0] and "already approved" in answers[1]
    assert "being published now" in answers[2]
    stored = bot.ctx.store.require(release.release_id)
    assert stored.state == PUBLISHING and stored.approval is not None and stored.approval.quorum_at == NOW
    assert [j.id for j in _queued(bot)] == [Step.PUBLISH.job_id(release.release_id, *publish_args(1))]
    card = bot.slack.api_message(CHANNEL, release.approval.card_ts)  # type: ignore[union-attr]
    assert card is not None and "Approved" in card["text"] and "actions" not in [b["type"] for b in card["blocks"]]


def test_a_rollback_card_has_the_same_desk_its_own_requester_and_its_own_job(bot: Bot) -> None:
    release = _in_thread(bot, _rollback_request(), Kind.ROLLBACK)
    value = _value(release, Kind.ROLLBACK)
    respond = Recorder()
    listeners.approve_click(Recorder(), _click(bot, approval_messages.APPROVE_ROLLBACK_ACTION, value, ONCALL),
                            respond, bot.context)
    assert respond.only["text"].startswith("You requested"), "four-eyes: who asked the rollback may not approve it"
    respond = Recorder()
    listeners.approve_click(Recorder(), _click(bot, approval_messages.APPROVE_ROLLBACK_ACTION, value, LEAD),
                            respond, bot.context)
    assert respond.only["text"].startswith("Rollback approved (1 of 1: <@U0LEAD>)")
    stored = bot.ctx.store.require(release.release_id)
    assert stored.rollback_request is not None and stored.rollback_request.status == "approved"
    (job,) = _queued(bot)
    assert job.id == Step.ROLLBACK.job_id(release.release_id) and job.args == [release.release_id, ONCALL]
    assert [e["what"] for e in stored.events][-3:] == ["rollback_approval_refused", "rollback_approved",
                                                       "rollback_quorum"]


@pytest.mark.parametrize("kind", list(Kind))
def test_reject_opens_the_modal_of_its_kind_only_for_who_may_reject(bot: Bot, kind: Kind) -> None:
    release = _in_thread(bot, _waiting() if kind is Kind.PUBLISH else _rollback_request(), kind)
    rules, value = KINDS[kind], _value(release, kind)
    respond = Recorder()
    listeners.reject_click(Recorder(), _click(bot, rules.reject_action, value, OUTSIDER), respond, bot.client,
                           bot.context)
    assert "not an approver" in respond.only["text"] and bot.slack.views() == []
    respond = Recorder()
    listeners.reject_click(Recorder(), _click(bot, rules.reject_action, value, LEAD), respond, bot.client,
                           bot.context)
    assert respond.calls == []
    (opened,) = bot.slack.views()
    assert opened["view"]["callback_id"] == rules.reject_callback and opened["view"]["private_metadata"] == value


def test_a_reject_submission_with_a_too_short_reason_keeps_the_modal_open(bot: Bot) -> None:
    release = _in_thread(bot, _waiting())
    ack = Recorder()
    body, view = _submission(approval_messages.REJECT_CALLBACK, _value(release, Kind.PUBLISH), " no ", ALICE)
    listeners.reject_submission(ack, body, view, bot.context)
    assert ack.only == {"response_action": "errors",
                        "errors": {approval_messages.REASON_BLOCK: "Say why, in a few words."}}
    stored = bot.ctx.store.require(release.release_id)
    assert stored.state == AWAITING_APPROVAL and stored.approval is not None and stored.approval.decisions == []


def test_a_reject_submission_records_the_rejection_and_closes_the_modal(bot: Bot) -> None:
    release = _in_thread(bot, _waiting())
    ack = Recorder()
    body, view = _submission(approval_messages.REJECT_CALLBACK, _value(release, Kind.PUBLISH),
                             "CVE-2026-1234   in the base image", LEAD)
    listeners.reject_submission(ack, body, view, bot.context)
    assert ack.only == {}
    stored = bot.ctx.store.require(release.release_id)
    assert stored.state == REJECTED and "CVE-2026-1234 in the base image" in stored.error
    assert stored.summary_ts, "the requester is told in the thread"
    ack = Recorder()  # a second submission (another approver's modal) finds the request over
    listeners.reject_submission(ack, *_submission(approval_messages.REJECT_CALLBACK, _value(release, Kind.PUBLISH),
                                                  "me too", ALICE), bot.context)
    assert ack.only["response_action"] == "errors"
    assert "already ended (rejected)" in ack.only["errors"][approval_messages.REASON_BLOCK]


@pytest.mark.parametrize("kind", list(Kind))
def test_a_click_after_the_deadline_closes_the_request_at_once(bot: Bot, kind: Kind) -> None:
    release = _in_thread(bot, _waiting() if kind is Kind.PUBLISH else _rollback_request(), kind)
    request = KINDS[kind].request(release)
    assert request is not None
    bot.clock[0] = request.expires_at + 1  # the scheduled expiry job has not run yet
    respond = Recorder()
    listeners.approve_click(Recorder(), _click(bot, KINDS[kind].approve_action, _value(release, kind), ALICE),
                            respond, bot.context)
    assert "expired; your click did not count" in respond.only["text"]
    stored = bot.ctx.store.require(release.release_id)
    if kind is Kind.PUBLISH:
        assert stored.state == EXPIRED and stored.summary_ts
    else:
        assert stored.rollback_request is not None and stored.rollback_request.status == "expired"
    card = bot.slack.api_message(CHANNEL, request.card_ts)
    assert card is not None and "actions" not in [b["type"] for b in card["blocks"]], "the card lost its buttons"
    respond = Recorder()  # the next click is told the request is over
    listeners.approve_click(Recorder(), _click(bot, KINDS[kind].approve_action, _value(release, kind), LEAD),
                            respond, bot.context)
    ended = ("already ended (expired)" if kind is Kind.PUBLISH
             else "was expired; your click did not count. Ask again with /edge rollback.")
    assert ended in respond.only["text"]


def test_every_kind_has_its_own_buttons_and_modal() -> None:
    assert set(KINDS) == set(Kind)
    ids = [i for rules in KINDS.values() for i in (rules.approve_action, rules.reject_action, rules.reject_callback)]
    assert len(set(ids)) == len(ids)
    for kind, rules in KINDS.items():
        assert kind_of_action(rules.approve_action) is kind and kind_of_action(rules.reject_action) is kind
        assert kind_of_view(rules.reject_callback) is kind
    assert kind_of_action(messages.CANCEL_ACTION) is None


# -- the root message's buttons ---------------------------------------------------------------------------------------

def test_status_and_cancel_buttons_answer_ephemerally(bot: Bot) -> None:
    release = _in_thread(bot, _waiting())
    respond = Recorder()
    listeners.status_click(Recorder(), _click(bot, messages.STATUS_ACTION, release.release_id, OUTSIDER), respond,
                           bot.context)
    assert "waiting for approval" in respond.only["text"]
    respond = Recorder()
    listeners.cancel_click(Recorder(), _click(bot, messages.CANCEL_ACTION, release.release_id, REQUESTER), respond,
                           bot.context)
    assert respond.only["text"].startswith(f"Cancelled `{release.release_id}`")
    assert bot.ctx.store.require(release.release_id).state == "cancelled"
    assert logs.release_id_var.get() is None, "Bolt's worker thread does not keep the release id for the next request"


# -- registration -----------------------------------------------------------------------------------------------------

def test_a_listener_called_without_the_context_says_what_is_missing() -> None:
    with pytest.raises(RuntimeError, match="bot.app.register"):
        listeners.edge_command(Recorder(), _command("help"), BoltContext())


def test_register_wires_the_listeners_and_hands_them_the_context(bot: Bot) -> None:
    """Through Bolt's own dispatch: the middleware puts the BotContext in place, the command listener answers."""
    app = App(client=bot.client, signing_secret="unused", process_before_response=False,
              token_verification_enabled=False, request_verification_enabled=False)
    register(app, bot.ctx)
    body = urlencode({**_command("help"), "response_url": f"{bot.slack.base_url}/commands/x", "trigger_id": "t"})
    response = app.dispatch(BoltRequest(body=body, headers={"content-type": ["application/x-www-form-urlencoded"]}))
    assert response.status == 200, response.body
    assert json.loads(response.body) == {"text": messages.help_message(None).text,
                                         "blocks": messages.help_message(None).blocks, "response_type": "ephemeral"}
