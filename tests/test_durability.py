"""Redis URLs (edgebot.redis_conn) and the replica confirmation before an acknowledgement (edgebot.durability).

The WAIT tests run on the single-node test Redis, which has no replica: with ``redis_wait_replicas = 1`` every WAIT
comes back short, which is exactly the "fewer replicas confirmed" case; a cluster with real replicas is exercised
in tests/test_sentinel_e2e.py.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
import redis
from rq import Queue
from slack_bolt import BoltContext

from bot import listeners
from bot.access import AccessCheck
from bot.approve import ApprovalDesk
from bot.intake import ChannelCheck
from bot.listeners import CONTEXT_KEY, BotContext
from edgebot import approval_messages, durability, messages, redis_conn
from edgebot.approvals import Kind
from edgebot.config import parse_config
from edgebot.errors import ConfigError
from edgebot.jobs import PUBLISH_QUEUE, SERIALIZER
from edgebot.release import AWAITING_APPROVAL, CANCELLED
from edgebot.store import ReleaseStore
from edgebot.thread import ThreadReporter, slack_client
from sandbox.slack import SlackStandIn
from tests.redis_url import url_of
from tests.snapshot import check_snapshot
from tests.test_approvals import BASE_CONFIG, _waiting
from tests.test_listeners import (
    ALICE,
    CHANNEL,
    LEAD,
    REQUESTER,
    TEAM,
    TOKEN,
    Recorder,
    _click,
    _in_thread,
    _value,
    slack,
)
from tests.test_messages import _rolled_out

__all__ = ["slack"]  # the fixture, imported for pytest

# -- URLs -------------------------------------------------------------------------------------------------------------


def test_a_single_node_url_is_used_as_before() -> None:
    assert redis_conn.parse_sentinel_url("redis://127.0.0.1:6379/0") is None
    assert redis_conn.parse_sentinel_url("rediss://redis.example:6380/2") is None


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_db() -> None:
    address = redis_conn.parse_sentinel_url("redis+sentinel://10.0.0.5:26379,s2.example:26380/edgebot?db=3")
    assert address == redis_conn.SentinelAddress((("10.0.0.5", 26379), ("s2.example", 26380)), "edgebot", 3, "none")
    same = redis_conn.parse_sentinel_url("redis+sentinel://10.0.0.5:26379/edgebot?sentinel_auth=same")
    assert same is not None and same.db == 0 and same.sentinel_auth == "same"


@pytest.mark.parametrize(("url", "says"), [
    ("redis+sentinel://u:hunter2secret@10.0.0.5:26379/edgebot", "no credentials"),
    ("redis+sentinel://:hunter2secret@10.0.0.5:26379/edgebot", "no credentials"),
    ("redis+sentinel://10.0.0.5/edgebot", "HOST:PORT"),
    ("redis+sentinel://10.0.0.5:99999/edgebot", "HOST:PORT"),
    ("redis+sentinel://10.0.0.5:26379/", "master's name"),
    ("redis+sentinel://10.0.0.5:26379/edgebot?db=x", "db must be a number"),
    ("redis+sentinel://10.0.0.5:26379/edgebot?sentinel_auth=yes", "sentinel_auth is none or same"),
    ("redis+sentinel://10.0.0.5:26379/edgebot?password=hunter2secret", "unknown parameter"),
    ("http://10.0.0.5:6379/0", "scheme"),
])
def test_an_unusable_url_is_refused_at_config_time_without_its_password(url: str, says: str) -> None:
    data: dict[str, Any] = {**BASE_CONFIG, "redis": {"url": url}}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ={})
    assert "redis.url" in str(caught.value) and says in str(caught.value)
    assert "hunter2secret" not in str(caught.value).replace("password=hunter2secret", "")  # only a query echo
    assert "hunter2secret" not in redis_conn.safe_url(url.replace("?password=hunter2secret", ""))


def test_safe_url_hides_userinfo() -> None:
    assert redis_conn.safe_url("redis://:pw@127.0.0.1:6379/0") == "redis://***@127.0.0.1:6379/0"
    assert redis_conn.safe_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# -- WAIT before "queued" ----------------------------------------------------------------------------------------------

def _context(slack: SlackStandIn, redis_conn: redis.Redis, *, required: int = 2, **settings: Any) -> BotContext:
    config = parse_config({**BASE_CONFIG, "access": {"publish": ["*"]},
                           "approvals": {"approvers": [ALICE, "S0LEADS"], "required": required},
                           "trust": {"seal_key": "env:EDGEBOT_SEAL_KEY"},
                           "settings": settings}, environ={"EDGEBOT_SEAL_KEY": "k" * 32})
    client = slack_client(TOKEN, slack.api_url)
    store = ReleaseStore(redis_conn, config.settings)

    def members(group: str) -> set[str]:
        return set(client.usergroups_users_list(usergroup=group).get("users") or [])

    return BotContext(config, store, ChannelCheck(client, redis_conn, config), AccessCheck(config.access, members),
                      ThreadReporter(client, store), ApprovalDesk(store, members, config.settings))


def _publish(ctx: BotContext, text: str = "publish hello 1.0.0 --registry icr") -> str:
    """The ephemeral answer to ``/edge TEXT``."""
    ack = Recorder()
    listeners.edge_command(ack, {"command": "/edge", "text": text, "user_id": REQUESTER, "team_id": TEAM,
                                 "channel_id": CHANNEL}, BoltContext({CONTEXT_KEY: ctx}))
    assert ack.only["response_type"] == "ephemeral"
    return str(ack.only["text"])


def _released(ctx: BotContext) -> list[Any]:
    return ctx.store.history("acme", "hello", 10)


def test_an_intake_no_replica_confirms_is_withdrawn_and_never_called_queued(slack: SlackStandIn,
                                                                            redis_conn: redis.Redis) -> None:
    """Before: the bot answered "Queued" as soon as the master had the MULTI; a failover then lost the release."""
    ctx = _context(slack, redis_conn, redis_wait_replicas=1, redis_wait_timeout_ms=50)
    answer = _publish(ctx)
    records = [r for r in _released(ctx) if r is not None]
    assert len(records) == 1
    release = records[0]
    assert answer == messages.not_durable(release.release_id, wanted=1, timeout_ms=50, withdrawn=False).text
    assert answer.startswith(":warning: Not queued") and "Queued release" not in answer
    # its first job (workers.pipeline.prepare, workers.deploy.check) returns at once on a final record: nothing runs
    assert release.state == CANCELLED and release.is_final
    assert release.events[-1]["what"] == durability.UNCONFIRMED_EVENT
    assert ctx.store.publish_lock_holder(release.org, release.service) is None  # the next try is not "locked"
    again = _publish(ctx)  # the same command again is a new request, not "you just sent this"
    assert again.startswith(":warning: Not queued") and messages.duplicate_ack(release.release_id).text != again


def test_a_lost_record_counts_as_withdrawn(redis_conn: redis.Redis) -> None:
    """The record is not on the master that answers the WAIT (a failover between the MULTI and the WAIT): it went
    with the old master, its job with it; never confirmed, and certainly withdrawn."""
    settings = dataclasses.replace(_settings(), redis_wait_replicas=1, redis_wait_timeout_ms=10)
    store = ReleaseStore(redis_conn, settings)
    assert not durability.confirm(redis_conn, settings, store.key("r-nothere")).present
    assert durability.withdraw(store, _waiting()) is True


def _settings() -> Any:
    return parse_config(BASE_CONFIG, environ={}).settings


def test_when_off_nothing_is_asked_and_the_ack_is_as_before(slack: SlackStandIn, redis_conn: redis.Redis) -> None:
    ctx = _context(slack, redis_conn)
    answer = _publish(ctx)
    assert answer.startswith("Queued release")
    assert redis_conn.exists(durability.marker_key(ctx.config.settings)) == 0  # no WAIT round trip at all
    assert len(Queue(PUBLISH_QUEUE, connection=redis_conn, serializer=SERIALIZER).get_jobs()) == 1


def test_an_unconfirmed_approval_is_not_reported_as_counted(slack: SlackStandIn, redis_conn: redis.Redis) -> None:
    ctx = _context(slack, redis_conn, redis_wait_replicas=1, redis_wait_timeout_ms=50)

    class Holder:
        pass

    bot = Holder()
    bot.ctx, bot.client, bot.slack = ctx, ctx.reporter.client, slack  # type: ignore[attr-defined]
    release = _in_thread(bot, _waiting())  # type: ignore[arg-type]
    respond = Recorder()
    listeners.approve_click(Recorder(), _click(bot, approval_messages.APPROVE_ACTION,  # type: ignore[arg-type]
                                               _value(release, Kind.PUBLISH), LEAD), respond,
                            BoltContext({CONTEXT_KEY: ctx}))
    expected = approval_messages.decision_unconfirmed(release.release_id, approved=True, wanted=1, timeout_ms=50)
    assert respond.only["text"] == expected.text
    stored = ctx.store.require(release.release_id)
    assert stored.state == AWAITING_APPROVAL and stored.approval is not None
    assert [d.user_id for d in stored.approval.decisions] == [LEAD]  # written; the approver is told it may be lost


@pytest.mark.parametrize("withdrawn", [True, False])
def test_not_durable_snapshot(withdrawn: bool) -> None:
    check_snapshot(f"not_durable_{'withdrawn' if withdrawn else 'unsure'}",
                   messages.not_durable("r-7f3a9c0d12e4b856", wanted=1, timeout_ms=1000, withdrawn=withdrawn))


@pytest.mark.parametrize("approved", [True, False])
def test_decision_unconfirmed_snapshot(approved: bool) -> None:
    check_snapshot(f"decision_unconfirmed_{'approved' if approved else 'rejected'}",
                   approval_messages.decision_unconfirmed("r-7f3a9c0d12e4b856", approved=approved, wanted=1,
                                                          timeout_ms=1000))


@pytest.mark.parametrize("required", [0, 2])
def test_an_unconfirmed_rollback_is_not_reported_as_under_way(slack: SlackStandIn, redis_conn: redis.Redis,
                                                              required: int) -> None:
    """Before: "Rolling back …" (or "requested") as soon as the master had the job or the request."""
    ctx = _context(slack, redis_conn, required=required, redis_wait_replicas=1, redis_wait_timeout_ms=50)
    release = _rolled_out()
    release.release_id, release.created_at = "r-0123456789abcdef", time.time()
    ctx.store.create(release)
    answer = _publish(ctx, "rollback hello")
    assert answer == messages.rollback_unconfirmed(release.release_id, wanted=1, timeout_ms=50,
                                                   requested=required > 0).text


def test_rollback_unconfirmed_snapshot() -> None:
    check_snapshot("rollback_unconfirmed", messages.rollback_unconfirmed("r-7f3a9c0d12e4b856", wanted=1,
                                                                         timeout_ms=1000, requested=False))


def test_config_check_says_when_the_master_has_fewer_replicas_than_waited_for(redis_conn: redis.Redis) -> None:
    from edgebot.secrets import SecretResolver
    from workers.config_check import run_checks

    def redis_line(wanted: int) -> Any:
        config = parse_config({**BASE_CONFIG, "redis": {"url": url_of(redis_conn)},
                               "settings": {"redis_wait_replicas": wanted}}, environ={})
        return next(line for line in run_checks(config, SecretResolver({}), timeout=2, roles=("publish",))
                    if line.item == "redis")

    refused = redis_line(1)
    assert not refused.ok and "redis_wait_replicas is 1 but the master has 0 replica(s)" in refused.detail
    assert redis_line(0).ok
