"""Registry tokens stored for nodes (issue 13): an OpenShift service-account token in a dockauth expires; the publish
worker records its expiry (never the token), the daily check warns in the service's channel once per window,
``/edge status SERVICE`` shows it, and ``edgebot dockauth refresh`` replaces it. Real Redis, the Exchange and Slack
stand-ins over HTTP (a dockauth PUT as exchange-api ``DockerAuth.scala`` answers it)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import redis
from rq import Queue
from rq.registry import ScheduledJobRegistry

from bot import listeners
from bot.grammar import StatusCommand, parse
from edgebot import dockauth_records
from edgebot.config import parse_config
from edgebot.jobs import DOCKAUTH_CHECK_OWNER, PUBLISH_QUEUE, SERIALIZER, Step
from edgebot.release import ArchResult, Release
from edgebot.secrets import SecretResolver
from sandbox.exchange import ExchangeStandIn
from sandbox.slack import SlackStandIn
from tests.redis_url import url_of
from workers import dockauths
from workers.context import WorkerContext

ORG, PW, CHANNEL, BOT_TOKEN = "acme", "edgebot-pw", "C0HELLO", "xoxb-dockauth-test"
REGISTRY = "default-route-openshift-image-registry.apps.ocp.example.com"
DAY = 86400.0


def jwt(exp: float, sub: str = "system:serviceaccount:edge:puller") -> str:
    """A token shaped like ``oc create token``'s: header.claims.signature (the signature is never checked)."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'kid': 'k'})}.{part({'exp': int(exp), 'sub': sub})}.c2lnbmF0dXJl"


OLD_EXP = int(time.time() + 3 * DAY)
OLD_TOKEN = jwt(OLD_EXP)
NEW_TOKEN = jwt(time.time() + 365 * DAY)


@pytest.fixture()
def ex() -> Iterator[ExchangeStandIn]:
    with ExchangeStandIn() as standin:
        standin.add_user(ORG, "edgebot", PW)
        with httpx.Client(base_url=standin.url + "/", auth=(f"{ORG}/edgebot", PW)) as c:
            for version in ("1.0.0", "2.0.0"):
                body = {"label": "hello", "public": False, "url": "hello", "version": version, "arch": "amd64",
                        "sharable": "multiple"}
                assert c.post(f"orgs/{ORG}/services", json=body).status_code == 201
                assert c.post(f"orgs/{ORG}/services/hello_{version}_amd64/dockauths",
                              json={"registry": REGISTRY, "username": "puller", "token": OLD_TOKEN}).status_code == 201
            policy = {"label": "prod", "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": [
                {"version": "1.0.0", "priority": {}}]}, "constraints": []}
            assert c.post(f"orgs/{ORG}/business/policies/hello-prod", json=policy).status_code == 201
        yield standin


@pytest.fixture()
def slack() -> Iterator[SlackStandIn]:
    standin = SlackStandIn(bot_token=BOT_TOKEN).start()
    standin.add_channel(CHANNEL, "hello")
    yield standin
    standin.stop()


def _ctx(ex: ExchangeStandIn, slack: SlackStandIn, redis_conn: redis.Redis, pull_token: str) -> WorkerContext:
    redis_url = url_of(redis_conn)
    config = parse_config({
        "slack": {"bot_token": "env:BOT", "signing_secret": "env:SIGNING", "api_url": slack.api_url},
        "redis": {"url": redis_url},
        "exchange": {"url": ex.url, "username": f"{ORG}/edgebot", "password": "env:EXCHANGE_PW"},
        "signing": {"private_key": "file:/nonexistent"},
        "registries": {"ocp": {"host": REGISTRY, "kind": "ocp", "namespace": "edge", "push_username": "pusher",
                               "push_password": "env:PUSH", "pull_username": "puller",
                               "pull_password": "env:PULL"}},
        "services": {"hello": {"source": "/x", "org": ORG, "arches": ["amd64"], "channel": CHANNEL,
                               "policies": ["hello-prod"]}},
    }, environ={})
    env = {"EXCHANGE_PW": PW, "BOT": BOT_TOKEN, "PULL": pull_token, "PUSH": "push-pw"}
    return WorkerContext(config, SecretResolver(environ=env))


def _published(ctx: WorkerContext, version: str = "1.0.0") -> Release:
    release = Release(release_id="r-0123456789abcdef", team_id="T0EDGE", channel_id=CHANNEL, user_id="U0REQ",
                      service="hello", version=version, org=ORG, registry="ocp", arches=["amd64"],
                      created_at=time.time(), updated_at=time.time(), command_text="")
    release.results["amd64"] = ArchResult(definition={"url": "hello"}, service_id=f"hello_{version}_amd64")
    return release


def _everything_in(redis_conn: redis.Redis) -> str:
    dump = []
    for key in redis_conn.scan_iter("*"):
        kind = redis_conn.type(key)
        value: Any = {b"hash": redis_conn.hgetall, b"string": redis_conn.get, b"zset": lambda k: redis_conn.zrange(
            k, 0, -1)}.get(kind, lambda k: b"")(key)
        dump.append(repr((key, value)))
    return "\n".join(dump)


def test_publish_records_the_expiry_never_the_token_and_schedules_the_check(
        ex: ExchangeStandIn, slack: SlackStandIn, redis_conn: redis.Redis) -> None:
    ctx = _ctx(ex, slack, redis_conn, OLD_TOKEN)
    dockauths.record_published(ctx, _published(ctx), REGISTRY, ctx.node_credentials(ctx.config.registries["ocp"]))
    [record] = dockauth_records.read(redis_conn, ctx.config.settings, ORG, "hello")
    assert (record.version, record.arch, record.registry, record.username) == ("1.0.0", "amd64", REGISTRY, "puller")
    assert record.expires_at == OLD_EXP  # the token's own exp claim (the module made it; tests may run much later)
    assert OLD_TOKEN not in _everything_in(redis_conn)
    queue = Queue(PUBLISH_QUEUE, connection=redis_conn, serializer=SERIALIZER)
    scheduled = ScheduledJobRegistry(queue=queue).get_job_ids()
    assert len(scheduled) == 1 and scheduled[0].startswith(f"{DOCKAUTH_CHECK_OWNER}-dockauth-check-")
    assert Step.CHECK_DOCKAUTHS.function.endswith(".check_dockauths")
    assert not dockauths.ensure_scheduled(redis_conn, ctx.config.settings)  # one schedule, not one per publish


def test_status_and_the_daily_check_warn_once_per_window_and_refresh_replaces_the_token(
        ex: ExchangeStandIn, slack: SlackStandIn, redis_conn: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = _ctx(ex, slack, redis_conn, OLD_TOKEN)
    dockauths.record_published(ctx, _published(ctx), REGISTRY, ctx.node_credentials(ctx.config.registries["ocp"]))

    # /edge status hello: the bot has no Exchange credential, it shows what was recorded
    assert parse("status hello") == StatusCommand(service="hello")
    bot = cast(Any, SimpleNamespace(config=ctx.config, store=SimpleNamespace(redis=redis_conn)))
    status = listeners._service_status("hello", bot)
    assert "1.0.0" in status.text and REGISTRY in status.text and ":warning:" in status.text
    assert "edgebot dockauth refresh hello --org acme" in status.text and OLD_TOKEN not in status.text
    assert "nor a service of edgebot's catalog" in listeners._service_status("nope", bot).text

    # the daily check: the deployed version (the policy pins 1.0.0, not 2.0.0) is warned about, once
    warned = dockauths.check(ctx)
    assert [(r.version, r.registry) for r in warned] == [("1.0.0", REGISTRY)]
    posts = slack.messages(CHANNEL)
    assert len(posts) == 1
    text = json.dumps(posts[0])
    for fragment in ("hello", "1.0.0", REGISTRY, "expires", "edgebot dockauth refresh hello --org acme"):
        assert fragment in text, fragment
    assert "2.0.0" not in text and OLD_TOKEN not in text
    assert dockauths.check(ctx) == [] and len(slack.messages(CHANNEL)) == 1  # once per window
    queue = Queue(PUBLISH_QUEUE, connection=redis_conn, serializer=SERIALIZER)
    assert ScheduledJobRegistry(queue=queue).get_job_ids(), "the check re-schedules itself"

    # the current pull credential is a new token: refresh replaces the deployed version's dockauth in place
    stored_before = ex.dockauths(ORG, "hello_1.0.0_amd64")
    fresh = _ctx(ex, slack, redis_conn, NEW_TOKEN)
    lines = dockauths.refresh(fresh, "hello")
    after = ex.dockauths(ORG, "hello_1.0.0_amd64")
    assert [(d["dockAuthId"], d["registry"], d["username"], d["token"]) for d in after] == [
        (stored_before[0]["dockAuthId"], REGISTRY, "puller", NEW_TOKEN)]
    assert ex.dockauths(ORG, "hello_2.0.0_amd64")[0]["token"] == OLD_TOKEN  # not deployed: left alone
    assert len(lines) == 1 and lines[0].startswith("replaced acme/hello_1.0.0_amd64 dockauth")
    assert OLD_TOKEN not in "\n".join(lines) and NEW_TOKEN not in "\n".join(lines)
    assert dockauths.refresh(fresh, "hello")[0].startswith("unchanged")
    [record] = dockauth_records.read(redis_conn, ctx.config.settings, ORG, "hello")
    assert record.expires_at is not None and record.expires_at > time.time() + 300 * DAY
    assert ":warning:" not in listeners._service_status("hello", bot).text
    assert NEW_TOKEN not in _everything_in(redis_conn) and OLD_TOKEN not in _everything_in(redis_conn)
    assert NEW_TOKEN not in capsys.readouterr().err


def test_the_refresh_command_prints_what_it_changed_and_exits_by_outcome(
        ex: ExchangeStandIn, slack: SlackStandIn, redis_conn: redis.Redis, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from edgebot.cli import main

    ctx = _ctx(ex, slack, redis_conn, OLD_TOKEN)
    dockauths.record_published(ctx, _published(ctx), REGISTRY, ctx.node_credentials(ctx.config.registries["ocp"]))
    config = tmp_path / "edgebot.toml"
    config.write_text(f"""
[slack]
bot_token = "env:BOT"
signing_secret = "env:SIGNING"
[redis]
url = "{url_of(redis_conn)}"
[exchange]
url = "{ex.url}"
username = "{ORG}/edgebot"
password = "env:EXCHANGE_PW"
[signing]
private_key = "file:/nonexistent"
[registries.ocp]
host = "{REGISTRY}"
kind = "ocp"
namespace = "edge"
push_username = "pusher"
push_password = "env:PUSH"
pull_username = "puller"
pull_password = "env:PULL"
[services.hello]
source = "/x"
org = "{ORG}"
arches = ["amd64"]
policies = ["hello-prod"]
[access]
publish = ["*"]
""")
    for name, value in {"EXCHANGE_PW": PW, "BOT": BOT_TOKEN, "PULL": NEW_TOKEN, "PUSH": "push-pw",
                        "SIGNING": "s"}.items():
        monkeypatch.setenv(name, value)
    assert main(["--config", str(config), "dockauth", "refresh", "hello"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("replaced acme/hello_1.0.0_amd64 dockauth") and "expires" in out.out
    assert NEW_TOKEN not in out.out + out.err and OLD_TOKEN not in out.out + out.err
    assert ex.dockauths(ORG, "hello_1.0.0_amd64")[0]["token"] == NEW_TOKEN
    assert main(["--config", str(config), "dockauth", "refresh", "nope"]) == 2
    assert "not in edgebot's catalog" in capsys.readouterr().err
    assert main(["--config", str(config), "dockauth", "refresh", "hello", "--org", "other"]) == 2
    assert "not published to org 'other'" in capsys.readouterr().err
