"""The bot side of issue 12, played as an attacker would: each test is an attack that worked before the fix.

A requester-chosen `--org` loosening the rules, a config without `[access]` letting everyone act, `/edge cancel` with
the fleet half moved, `<!channel>` and spoofed links in untrusted text, oversized and unsigned request bodies, a
release-id collision attaching one user's release to another's record, and read commands showing another channel's
releases. Listeners are called as Bolt calls them, on a real Redis and the Slack stand-in (see test_listeners.py).
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import redis
from rq import Queue
from slack_bolt import BoltContext, BoltRequest
from slack_sdk.signature import SignatureVerifier

from bot import listeners
from bot.access import AccessCheck
from bot.app import create_app
from bot.approve import ApprovalDesk
from bot.grammar import PublishCommand, StatusCommand, parse
from bot.intake import ChannelCheck, Requester, accept_publish
from bot.listeners import CONTEXT_KEY, BotContext
from bot.wsgi import guard
from edgebot import approval_messages, fleet_messages, messages
from edgebot.config import Config, access_problem, parse_config
from edgebot.errors import ConfigError
from edgebot.ids import RELEASE_ID_RE, new_release_id
from edgebot.jobs import PUBLISH_QUEUE, SERIALIZER, Step
from edgebot.release import PUBLISHING, QUEUED, REJECTED, ROLLING_OUT, Approval, Decision, Release
from edgebot.store import ReleaseIdTaken, ReleaseStore
from edgebot.thread import ThreadReporter, slack_client
from sandbox.slack import SlackStandIn
from tests.test_approvals import BASE_CONFIG, _card, _rollback_request
from tests.test_listeners import ALICE, CHANNEL, LEAD, OUTSIDER, REQUESTER, TEAM, TOKEN, Recorder
from tests.test_messages import _failed_build, _release, _rolled_out
from workers.config_check import access_check

OTHER_CHANNEL = "C0PRIVATE"
SEAL = {"seal_key": "env:EDGEBOT_SEAL_KEY"}
RESTRICTED: dict[str, Any] = {
    "access": {"orgs": {"acme": {"publish": [LEAD], "cancel": [LEAD]}}},
    "approvals": {"orgs": {"acme": {"approvers": [ALICE, "S0LEADS"], "required": 2},
                           "acme-staging": {"required": 0}}},
    "trust": SEAL,
}
"""`hello` (org acme) may be published by LEAD only and needs 2 approvals; `acme-staging` needs none."""


def _config(extra: dict[str, Any], **service: Any) -> Config:
    hello = {**BASE_CONFIG["services"]["hello"], **service}
    return parse_config({**BASE_CONFIG, "services": {"hello": hello}, **extra}, environ={})


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn(bot_token=TOKEN, team_id=TEAM) as standin:
        standin.add_channel(CHANNEL, "releases")
        standin.add_channel(OTHER_CHANNEL, "private")
        standin.add_usergroup("S0LEADS", "leads", [LEAD])
        yield standin


BotFactory = Callable[[Config], BoltContext]


@pytest.fixture
def make_bot(slack: SlackStandIn, redis_conn: redis.Redis) -> BotFactory:
    def build(config: Config) -> BoltContext:
        client = slack_client(TOKEN, slack.api_url)
        store = ReleaseStore(redis_conn, config.settings)

        def members(group: str) -> set[str]:
            return set(client.usergroups_users_list(usergroup=group).get("users") or [])

        ctx = BotContext(config, store, ChannelCheck(client, redis_conn, config), AccessCheck(config.access, members),
                         ThreadReporter(client, store), ApprovalDesk(store, members, config.settings))
        return BoltContext({CONTEXT_KEY: ctx})

    return build


def _edge(context: BoltContext, text: str, user_id: str = REQUESTER, channel: str = CHANNEL) -> str:
    ack = Recorder()
    listeners.edge_command(ack, {"command": "/edge", "text": text, "user_id": user_id, "team_id": TEAM,
                                 "channel_id": channel}, context)
    assert ack.only["response_type"] == "ephemeral"
    return str(ack.only["text"])


def _store(context: BoltContext) -> ReleaseStore:
    return listeners.bot_context(context).store


# -- 1. --org is limited to the orgs the catalog allows; the stricter org's rules apply -----------------------------

@pytest.mark.parametrize("org", ["acme-x", "ACME"])
def test_org_outside_the_catalog_is_refused_naming_the_allowed_orgs(make_bot: BotFactory, redis_conn: redis.Redis,
                                                                    org: str) -> None:
    """Before: `--org acme-x` (no rules) or `--org ACME` (another key) made a restricted, 2-approval service
    "anyone, no approval". Now the org must be one the catalog allows, compared exactly."""
    context = make_bot(_config(RESTRICTED))
    answer = _edge(context, f"publish hello 1.0.0 --registry icr --org {org}", user_id=OUTSIDER)
    assert f"`hello` cannot be published to org `{org}`: the catalog allows `acme` only" in answer, answer
    assert redis_conn.dbsize() == 0, "nothing recorded, nothing queued"


def test_an_allowed_second_org_keeps_the_catalog_orgs_rules(make_bot: BotFactory) -> None:
    config = _config({**RESTRICTED, "access": {"publish": ["*"], **RESTRICTED["access"]}}, orgs=["acme-staging"])
    context = make_bot(config)
    refused = _edge(context, "publish hello 1.0.0 --registry icr --org acme-staging", user_id=OUTSIDER)
    assert "You don't have the `publish` permission" in refused and "<@U0LEAD>" in refused, refused
    accepted = _edge(context, "publish hello 1.0.0 --registry icr --org acme-staging", user_id=LEAD)
    (release,) = _store(context).active_in_channel(TEAM, CHANNEL)
    assert accepted == messages.queued_ack(release).text and release.org == "acme-staging"
    # acme-staging asks for no approval, acme for 2: the stricter applies to a release of hello to either
    for org in ("acme", "acme-staging"):
        policy = config.approval_policy(org=org, service="hello", registry="icr")
        assert policy.required == 2 and set(policy.approvers) == {ALICE, "S0LEADS"}, org


def test_a_stricter_target_org_wins_over_the_catalog_org() -> None:
    config = _config({"approvals": {"orgs": {"prod": {"approvers": [ALICE, LEAD], "required": 2}}}, "trust": SEAL,
                      "access": {"publish": ["*"]}}, orgs=["prod"])
    assert config.approval_policy(org="acme", service="hello", registry="icr").required == 0
    assert config.approval_policy(org="prod", service="hello", registry="icr").required == 2


def test_catalog_orgs_must_be_org_names() -> None:
    with pytest.raises(ConfigError, match=r"services.hello.orgs must be a list of Exchange org names"):
        _config({}, orgs="acme-staging")


# -- 2. safe defaults: nobody acts unless the config says who may ----------------------------------------------------

def test_the_bot_refuses_to_start_without_access_rules_saying_what_to_add() -> None:
    config = _config({})
    problem = access_problem(config)
    assert problem is not None and "[access] names nobody who may publish 'hello' (org 'acme')" in problem
    assert 'publish = ["S0…"]' in problem and 'publish = ["*"]' in problem and "release_managers" in problem
    with pytest.raises(ConfigError) as refused:
        create_app(config)
    assert str(refused.value) == problem
    line = access_check(config)
    assert not line.ok and line.item == "access" and line.detail == f"the bot will not start: {problem}"


def test_every_org_the_service_may_go_to_needs_someone_who_may_publish() -> None:
    config = _config({"access": {"orgs": {"acme": {"publish": [LEAD]}}}}, orgs=["acme-staging"])
    assert "'hello' (org 'acme-staging')" in (access_problem(config) or "")
    assert access_problem(_config({"access": {"release_managers": [LEAD]}}, orgs=["acme-staging"])) is None


def test_config_check_reports_who_may_publish() -> None:
    line = access_check(_config({"access": {"publish": ["S0RELEASERS"], "release_managers": [LEAD]}}))
    assert line.ok and line.detail == "publish: S0RELEASERS; release managers: U0LEAD"


def test_without_a_rule_only_release_managers_act(make_bot: BotFactory) -> None:
    """Before: no [access] table meant everyone could publish, cancel and roll back."""
    context = make_bot(_config({"access": {"release_managers": ["S0LEADS"]}}))
    refused = _edge(context, "publish hello 1.0.0 --registry icr", user_id=OUTSIDER)
    assert "You don't have the `publish` permission" in refused and "<!subteam^S0LEADS>" in refused
    _edge(context, "publish hello 1.0.0 --registry icr", user_id=LEAD)
    (release,) = _store(context).active_in_channel(TEAM, CHANNEL)
    cancel = _edge(context, f"cancel {release.release_id}", user_id=OUTSIDER)
    assert "You don't have the `cancel` permission" in cancel
    assert _store(context).require(release.release_id).state == QUEUED


def test_access_approve_is_refused_at_start_up() -> None:
    """Before: `[access] approve = […]` parsed and was enforced nowhere."""
    with pytest.raises(ConfigError, match=r"access.approve is not an \[access\] permission: .*\[approvals\] approvers"):
        _config({"access": {"publish": ["*"], "approve": [ALICE]}})


# -- 3. no cancel once the fleet moves ------------------------------------------------------------------------------

@pytest.mark.parametrize("state", [PUBLISHING, ROLLING_OUT])
def test_cancel_from_publishing_on_is_refused_and_offers_the_rollback(make_bot: BotFactory, redis_conn: redis.Redis,
                                                                      state: str) -> None:
    """Before: cancel ended the release and stopped the rollout watch with the fleet half moved."""
    context = make_bot(_config({"access": {"publish": ["*"]}}))
    release = _release(state=state, ended_at=None, release_id=new_release_id(), created_at=time.time())
    _store(context).create(release)
    answer = _edge(context, f"cancel {release.release_id}")
    assert answer == messages.cancel_too_late(_store(context).require(release.release_id)).text
    assert "`/edge rollback hello`" in answer
    stored = _store(context).require(release.release_id)
    assert stored.state == state and not stored.error
    assert "cancelled" not in [e["what"] for e in stored.events]


# -- 4. untrusted text is dead text in Slack -------------------------------------------------------------------------

HOSTILE = "<!channel> see <https://evil.example|the fix> & <@U0CEO> ``` <!here>"


def _strings(message: messages.Message | dict[str, Any]) -> str:
    return json.dumps(message.as_kwargs() if isinstance(message, messages.Message) else message, ensure_ascii=False)


def _assert_dead(message: messages.Message | dict[str, Any]) -> None:
    rendered = _strings(message)
    for live in ("<!channel>", "<!here>", "<https://evil.example", "<@U0CEO>"):
        assert live not in rendered, (live, rendered)
    assert "&lt;!channel&gt;" in rendered


def test_a_build_error_cannot_ping_the_channel_or_spoof_a_link() -> None:
    release = _failed_build()
    release.error = f"build of arm64 failed: {HOSTILE}"
    release.results["arm64"].log_tail = [HOSTILE, "```", "<!everyone>"]
    release.error_detail = release.results["arm64"].log_tail
    release.arch_steps["build"]["arm64"].note = HOSTILE
    release.results["amd64"].service_id = "<!channel>_1.2.3_amd64"  # the definition's url is repository text
    for message in (messages.summary_message(release), messages.stage_message(release, "build"),
                    messages.status_detail(release)):
        _assert_dead(message)
    summary = messages.summary_message(release)
    block = next(b["text"]["text"] for b in summary.blocks if b["text"]["text"].startswith("```"))
    assert block.startswith("```") and block.endswith("```") and block[3:-3].count("```") == 0, \
        "preformatted text cannot close early"


def test_a_reject_reason_cannot_ping_the_channel() -> None:
    card = approval_messages.approval_card(_card(REJECTED, f"rejected by <@{ALICE}>: {HOSTILE}"))
    _assert_dead(card)
    assert f"<@{ALICE}>" in _strings(card), "edgebot's own mention of who rejected stays a mention"
    rollback = _rollback_request("rejected")
    assert rollback.rollback_request is not None
    rollback.rollback_request.decisions[-1].reason = HOSTILE
    _assert_dead(approval_messages.rollback_card(rollback))
    release = _release(state=REJECTED)
    release.approval = Approval(required=1, approvers=[ALICE], allow_requester=False, requested_at=0.0,
                                expires_at=1.0, covers={}, covers_digest="",
                                decisions=[Decision(ALICE, "rejected", 0.0, "", HOSTILE)])
    _assert_dead(messages.status_detail(release))


def test_node_errors_are_escaped() -> None:
    release = _rolled_out(failed=True)
    release.rollout[0].problems = [f"node-1: {HOSTILE}"]
    release.rollout[0].note = HOSTILE
    _assert_dead(fleet_messages.rollout_stage_message(release, 0))


def test_escaping_follows_slacks_rules() -> None:
    assert messages.escape("a & b < c > d") == "a &amp; b &lt; c &gt; d"
    assert messages.escape_keeping_mentions("rejected by <@U0ALICE>: <!channel> <@U0BOB>") == \
        "rejected by <@U0ALICE>: &lt;!channel&gt; &lt;@U0BOB&gt;"
    assert messages.escape_keeping_mentions("<@U0BOB> by <@U0ALICE>") == "&lt;@U0BOB&gt; by &lt;@U0ALICE&gt;"


# -- 5. oversized and unsigned requests never reach Bolt, nor the log -----------------------------------------------

SECRET = "test-signing-secret"


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.read_bytes += len(chunk)
        return chunk


def _call(app: Any, body: bytes, *, length: bool = True, signed: bool = True) -> tuple[str, bytes, CountingStream]:
    stream = CountingStream(body)
    environ: dict[str, Any] = {"REQUEST_METHOD": "POST", "PATH_INFO": "/slack/events", "wsgi.input": stream,
                               "CONTENT_TYPE": "application/x-www-form-urlencoded"}
    if length:
        environ["CONTENT_LENGTH"] = str(len(body))
    if signed:
        stamp = str(int(time.time()))
        environ["HTTP_X_SLACK_REQUEST_TIMESTAMP"] = stamp
        environ["HTTP_X_SLACK_SIGNATURE"] = SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=body)
    status: list[str] = []
    out = b"".join(app(environ, lambda s, headers: status.append(s)))
    return status[0], out, stream


def _inner(seen: list[bytes]) -> Any:
    def inner(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.append(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        start_response("200 OK", [])
        return [b"ok"]

    return inner


def test_an_oversized_body_is_refused_before_anything_reads_it() -> None:
    """Before: an unsigned 200 MB POST was read whole by Bolt."""
    seen: list[bytes] = []
    app = guard(_inner(seen), SignatureVerifier(SECRET), 1024)
    status, _, stream = _call(app, b"x" * 5000)
    assert status.startswith("413") and stream.read_bytes == 0 and seen == []
    status, _, stream = _call(app, b"x" * 5000, length=False)  # chunked: read one byte past the limit, no more
    assert status.startswith("413") and stream.read_bytes == 1025 and seen == []
    status, _, _ = _call(app, b"token=1&text=hi")
    assert status == "200 OK" and seen == [b"token=1&text=hi"], "a signed body within the limit reaches Bolt intact"


def test_an_unsigned_body_is_refused_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[bytes] = []
    app = guard(_inner(seen), SignatureVerifier(SECRET), 1024)
    with caplog.at_level(logging.DEBUG):
        status, _, _ = _call(app, b"text=SECRET-PAYLOAD", signed=False)
    assert status.startswith("401") and seen == []
    assert "SECRET-PAYLOAD" not in caplog.text and "body not logged" in caplog.text


def test_bolt_itself_no_longer_logs_an_unsigned_body(redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Before: Bolt's RequestVerification logged the whole unverified body at INFO (Socket Mode aside, any adapter
    that is not bot.wsgi would still hand it one)."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    app = create_app(_config({"access": {"publish": ["*"]}}), connection=redis_conn)
    with caplog.at_level(logging.INFO):
        response = app.dispatch(BoltRequest(body="command=/edge&text=SECRET-PAYLOAD", headers={
            "content-type": ["application/x-www-form-urlencoded"], "x-slack-request-timestamp": [str(int(time.time()))],
            "x-slack-signature": ["v0=forged"]}))
    assert response.status == 401
    assert "SECRET-PAYLOAD" not in caplog.text


# -- 6. release ids: long, and never reused ----------------------------------------------------------------------------

def test_release_ids_are_64_bit_and_valid_job_ids() -> None:
    ids = {new_release_id() for _ in range(1000)}
    assert len(ids) == 1000
    for rid in list(ids)[:20]:
        assert RELEASE_ID_RE.match(rid) and len(rid) == 18 and re.fullmatch(r"[A-Za-z0-9_-]+", Step.PREPARE.job_id(rid))
        assert parse(f"status {rid}") == StatusCommand(rid)
    assert parse("status r-7f3a9c") == StatusCommand("r-7f3a9c"), "the ids of older releases are still read"


def test_an_id_collision_fails_loudly_and_writes_nothing(redis_conn: redis.Redis) -> None:
    """Before: the SET NX result was ignored: the second release's indexes and first job were written, pointing at
    the first user's record."""
    store = ReleaseStore(redis_conn)
    first = Release(release_id="r-0000000000000001", team_id=TEAM, channel_id=CHANNEL, user_id=REQUESTER,
                    service="hello", version="1.0.0", org="acme", registry="icr", arches=["amd64"], dry_run=True)
    store.create(first)
    before = {k: redis_conn.type(k) for k in redis_conn.keys("*")}
    intruder = Release(release_id=first.release_id, team_id=TEAM, channel_id=OTHER_CHANNEL, user_id=OUTSIDER,
                       service="hello", version="9.9.9", org="acme", registry="icr", arches=["amd64"], dry_run=True)
    called: list[Any] = []
    with pytest.raises(ReleaseIdTaken):
        store.create(intruder, then=called.append)
    assert called == [] and {k: redis_conn.type(k) for k in redis_conn.keys("*")} == before
    assert store.require(first.release_id).user_id == REQUESTER
    assert store.active_in_channel(TEAM, OTHER_CHANNEL) == []


def test_intake_retries_a_taken_id_with_a_new_one(make_bot: BotFactory, redis_conn: redis.Redis) -> None:
    context = make_bot(_config({"access": {"publish": ["*"]}}))
    ctx = listeners.bot_context(context)
    taken = "r-00000000000000aa"
    ctx.store.create(Release(release_id=taken, team_id=TEAM, channel_id=OTHER_CHANNEL, user_id=OUTSIDER,
                             service="hello", version="0.0.1", org="acme", registry="icr", arches=["amd64"],
                             dry_run=True))
    ids = iter([taken, "r-00000000000000bb"])
    accepted = accept_publish(PublishCommand("hello", "1.0.0", "icr"), Requester(TEAM, CHANNEL, REQUESTER),
                              "publish hello 1.0.0 --registry icr", config=ctx.config, store=ctx.store,
                              channels=ctx.channels, access=ctx.access, new_id=lambda: next(ids))
    assert accepted.release.release_id == "r-00000000000000bb" and accepted.duplicate_of is None
    assert ctx.store.require(taken).user_id == OUTSIDER, "the other user's record is untouched"
    queued = Queue(PUBLISH_QUEUE, connection=redis_conn, serializer=SERIALIZER).job_ids
    assert queued == [Step.PREPARE.job_id("r-00000000000000bb")]
    with pytest.raises(ReleaseIdTaken):  # every try collides: loud, not silent
        accept_publish(PublishCommand("hello", "1.0.1", "icr"), Requester(TEAM, CHANNEL, REQUESTER),
                       "publish hello 1.0.1 --registry icr", config=ctx.config, store=ctx.store,
                       channels=ctx.channels, access=ctx.access, new_id=lambda: taken)


# -- 7. read commands stay in the release's channel -----------------------------------------------------------------

def test_status_and_history_show_nothing_of_another_channels_release(make_bot: BotFactory) -> None:
    """Before: `/edge status RELEASE` and `/edge history` showed a private channel's releases in any channel."""
    context = make_bot(_config({"access": {"publish": ["*"]}}))
    _edge(context, "publish hello 1.0.0 --registry icr --dry-run", channel=OTHER_CHANNEL)
    (private,) = _store(context).active_in_channel(TEAM, OTHER_CHANNEL)
    elsewhere = _edge(context, f"status {private.release_id}", user_id=OUTSIDER)
    assert elsewhere == messages.release_elsewhere(private.release_id).text and "hello" not in elsewhere
    assert "hello 1.0.0" in _edge(context, f"status {private.release_id}", channel=OTHER_CHANNEL)
    history = _edge(context, "history hello", user_id=OUTSIDER)
    assert private.release_id not in history and "1 other release(s) of `hello` were requested in other channels" \
        in history, history
    assert private.release_id in _edge(context, "history hello", channel=OTHER_CHANNEL)
    respond = Recorder()
    listeners.status_click(Recorder(), {"type": "block_actions", "user": {"id": OUTSIDER}, "team": {"id": TEAM},
                                        "channel": {"id": CHANNEL},
                                        "actions": [{"action_id": messages.STATUS_ACTION,
                                                     "value": private.release_id}]}, respond, context)
    assert respond.only["text"] == messages.release_elsewhere(private.release_id).text


def test_the_same_command_while_the_first_is_between_its_claim_and_its_record_queues_nothing(
        make_bot: BotFactory, redis_conn: redis.Redis) -> None:
    """The first of two identical commands has claimed the dedupe key but not yet written its record (a preempted
    bot thread): the second must not queue a release of its own (before: it found no record and queued one)."""
    context = make_bot(_config({"access": {"publish": ["*"]}}))
    ctx = listeners.bot_context(context)
    text = "publish hello 1.0.0 --registry icr"
    first = "r-00000000000000f1"
    assert ctx.store.claim_duplicate(ctx.store.dedupe_key(TEAM, CHANNEL, REQUESTER, text), first) is None
    accepted = accept_publish(PublishCommand("hello", "1.0.0", "icr"), Requester(TEAM, CHANNEL, REQUESTER), text,
                              config=ctx.config, store=ctx.store, channels=ctx.channels, access=ctx.access)
    assert accepted.duplicate_of == first
    assert not list(redis_conn.scan_iter("edgebot:release:*")), "no second record"
    assert Queue(PUBLISH_QUEUE, connection=redis_conn, serializer=SERIALIZER).job_ids == [], "nothing queued"


# -- --public / --private (issue 15): the public permission, sealed, on the card ---------------------------------------

def test_public_needs_its_own_permission_and_private_does_not(make_bot: BotFactory, redis_conn: redis.Redis) -> None:
    """`--public` makes a version visible to every org: publishing does not imply it (no rule: release managers)."""
    context = make_bot(_config({"access": {"publish": ["*"], "release_managers": [LEAD]}}))
    refused = _edge(context, "publish hello 1.0.0 --registry icr --public", user_id=OUTSIDER)
    assert "You don't have the `public` permission" in refused and "<@U0LEAD>" in refused, refused
    assert "without it, the definition's `public` applies" in refused
    assert redis_conn.dbsize() == 0, "nothing recorded, nothing queued"
    _edge(context, "publish hello 1.0.0 --registry icr --private --dry-run", user_id=OUTSIDER)
    _edge(context, "publish hello 1.0.1 --registry icr --public --dry-run", user_id=LEAD)  # dry runs take no lock
    public = {r.version: r.public for r in _store(context).active_in_channel(TEAM, CHANNEL)}
    assert public == {"1.0.0": False, "1.0.1": True}


def test_the_visibility_override_is_sealed_and_shown_on_the_card() -> None:
    from edgebot.seals import intake_payload

    release = Release("r1", TEAM, CHANNEL, REQUESTER, "hello", "1.0.0", "acme", "icr", ["amd64"], public=True)
    assert intake_payload(release)["public"] is True
    assert "public" not in intake_payload(Release("r2", TEAM, CHANNEL, REQUESTER, "hello", "1.0.0", "acme", "icr",
                                                  ["amd64"])), "older seals verify unchanged"
    release.result("amd64").definition = {"public": True}
    assert approval_messages.visibility_lines(release) == [
        ":globe_with_meridians: *public* (from `--public`): every org of the Exchange can see and deploy it"]
    release.public, release.result("amd64").definition = False, {"public": False}
    assert approval_messages.visibility_lines(release) == ["private (from `--private`): only org `acme` can see it"]
    release.public = None
    assert approval_messages.visibility_lines(release) == [], "private by the definition: the default, not shown"
