"""The Slack stand-in must be as strict as Slack: driven here by the real ``slack_sdk.WebClient``, the real
``RateLimitErrorRetryHandler``, the real ``SignatureVerifier`` and a real Bolt app behind a WSGI server, all over
loopback HTTP. If the stand-in were lenient, the bot's tests against it would prove nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
from slack_bolt import Ack, App, Respond
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import Clock, SignatureVerifier

from sandbox.proc_base import wait_until
from sandbox.slack import REAL_TIER_LIMITS, SlackStandIn
from sandbox.slack_client import SlackPlatform, sign

TOKEN = "xoxb-standin-test-token"
SECRET = "standin-signing-secret"
CH, PRIVATE, NOBOT, SECRET_ROOM = "C0GENERAL", "G0PRIVATE", "C0NOBOT", "G0HIDDEN"
ALICE, BOB = "U0ALICE", "U0BOB"


def section(text: str, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id:
        block["block_id"] = block_id
    return block


@pytest.fixture()
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn(bot_token=TOKEN) as running:
        running.add_channel(CH, "general")
        running.add_channel(PRIVATE, "ops", is_private=True)
        running.add_channel(NOBOT, "random", bot_member=False)
        running.add_channel(SECRET_ROOM, "hr", bot_member=False, is_private=True)
        running.add_user(ALICE, "alice")
        running.add_user(BOB, "bob")
        running.add_usergroup("S0RELEASERS", "releasers", [ALICE, BOB])
        yield running


@pytest.fixture()
def client(standin: SlackStandIn) -> WebClient:
    return WebClient(token=TOKEN, base_url=standin.api_url)


def error_of(call: Callable[[], Any]) -> str:
    with pytest.raises(SlackApiError) as info:
        call()
    return str(info.value.response["error"])


# -- messages ------------------------------------------------------------------------------------------------------

def test_post_update_and_thread(standin: SlackStandIn, client: WebClient) -> None:
    root = client.chat_postMessage(channel=CH, text="release queued", blocks=[section("*queued*")])
    assert root["ok"] and root["channel"] == CH and root["message"]["bot_id"]
    assert root.get("warning") is None
    first = client.chat_postMessage(channel=CH, thread_ts=root["ts"], text="building")
    second = client.chat_postMessage(channel=CH, thread_ts=root["ts"], text="pushed")
    assert float(root["ts"]) < float(first["ts"]) < float(second["ts"])
    assert len({root["ts"], first["ts"], second["ts"]}) == 3
    client.chat_update(channel=CH, ts=root["ts"], text="release published", blocks=[section("*published*")])
    client.chat_update(channel=CH, ts=first["ts"], text="built")

    thread = standin.thread(CH, root["ts"])
    assert [m["ts"] for m in thread] == [root["ts"], first["ts"], second["ts"]]
    assert thread[0]["text"] == "release published" and thread[0]["blocks"][0]["text"]["text"] == "*published*"
    assert [e["text"] for e in thread[0]["edits"]] == ["release published"]
    assert thread[1]["text"] == "built" and thread[2]["edits"] == []
    assert all(m["user"] == "U0EDGEBOT" and not m["orphan"] for m in thread)
    assert thread[1]["thread_ts"] == root["ts"]
    assert len(standin.messages(CH)) == 3
    # inspection returns copies: changing them changes nothing
    thread[0]["text"] = "tampered"
    assert standin.thread(CH, root["ts"])[0]["text"] == "release published"
    link = client.chat_getPermalink(channel=CH, message_ts=first["ts"])["permalink"]
    assert CH in link and first["ts"].replace(".", "") in link and f"thread_ts={root['ts']}" in link


def test_reply_to_unknown_thread_is_flagged_orphan(standin: SlackStandIn, client: WebClient) -> None:
    client.chat_postMessage(channel=CH, thread_ts="1600000000.000001", text="lost")
    (msg,) = standin.messages(CH)
    assert msg["orphan"] is True and msg["thread_ts"] == "1600000000.000001"


def test_channel_errors(standin: SlackStandIn, client: WebClient) -> None:
    assert error_of(lambda: client.chat_postMessage(channel=NOBOT, text="hi")) == "not_in_channel"
    assert error_of(lambda: client.chat_postMessage(channel="C0NOWHERE", text="hi")) == "channel_not_found"
    assert error_of(lambda: client.conversations_info(channel="C0NOWHERE")) == "channel_not_found"
    assert error_of(lambda: client.conversations_info(channel=SECRET_ROOM)) == "channel_not_found"
    assert client.conversations_info(channel=NOBOT)["channel"]["is_member"] is False
    info = client.conversations_info(channel=PRIVATE)["channel"]
    assert (info["id"], info["name"], info["is_private"], info["is_member"]) == (PRIVATE, "ops", True, True)
    assert standin.messages(NOBOT) == []
    assert error_of(lambda: client.api_call("chat.postMessage", json={"text": "no channel"})) == "invalid_arguments"


def test_direct_messages_need_im_read_as_slack_checks_scopes_per_conversation_type() -> None:
    """The stand-in's token has exactly the scopes the shipped manifest grants; ``conversations.info`` on a DM
    needs ``im:read`` (a group DM ``mpim:read``), so a manifest without them fails here as Slack would fail."""
    from sandbox.slack_api import manifest_scopes

    assert {"im:read", "mpim:read", "channels:read", "groups:read"} <= manifest_scopes()
    with SlackStandIn(bot_token=TOKEN) as running:
        running.add_channel("D0ALICE", ALICE, kind="im")
        running.add_channel("G0TRIO", "mpdm-alice--bob--edgebot-1", kind="mpim")
        client = WebClient(token=TOKEN, base_url=running.api_url)
        dm = client.conversations_info(channel="D0ALICE")["channel"]
        assert (dm["is_im"], dm["user"], "is_member" in dm) == (True, ALICE, False)
        assert client.conversations_info(channel="G0TRIO")["channel"]["is_mpim"] is True
    with SlackStandIn(bot_token=TOKEN) as running:
        running.workspace.scopes = manifest_scopes() - {"im:read"}
        running.add_channel("D0ALICE", ALICE, kind="im")
        running.add_channel(CH, "general")
        client = WebClient(token=TOKEN, base_url=running.api_url)
        with pytest.raises(SlackApiError) as info:
            client.conversations_info(channel="D0ALICE")
        assert (info.value.response["error"], info.value.response["needed"]) == ("missing_scope", "im:read")
        assert client.conversations_info(channel=CH)["channel"]["is_channel"] is True


def test_auth_errors(standin: SlackStandIn) -> None:
    assert error_of(lambda: WebClient(token="xoxb-wrong", base_url=standin.api_url).auth_test()) == "invalid_auth"
    assert error_of(lambda: WebClient(base_url=standin.api_url).auth_test()) == "not_authed"
    good = WebClient(token=TOKEN, base_url=standin.api_url).auth_test()
    assert (good["team_id"], good["user_id"], good["bot_id"]) == ("T0EDGE", "U0EDGEBOT", "B0EDGEBOT")
    assert standin.calls("auth.test")[0] == {"method": "auth.test", "ok": False, "error": "invalid_auth", "status": 200}
    assert TOKEN not in json.dumps(standin.calls()) and TOKEN not in repr(standin)


def test_unknown_method_and_form_encoded_blocks(standin: SlackStandIn, client: WebClient) -> None:
    assert error_of(lambda: client.api_call("chat.nosuch", params={"channel": CH})) == "unknown_method"
    # blocks as a JSON string in a form post, as older clients send them
    posted = client.api_call("chat.postMessage", params={"channel": CH, "text": "form",
                                                         "blocks": json.dumps([section("from a form")])})
    assert standin.messages(CH)[0]["blocks"][0]["text"]["text"] == "from a form" and posted["ok"]
    assert error_of(lambda: client.api_call("chat.postMessage",
                                            params={"channel": CH, "blocks": "[not json"})) == "invalid_blocks_format"
    # a JSON body to a method that reads only form arguments is ignored, as on Slack
    assert error_of(lambda: client.api_call("conversations.info", json={"channel": CH})) == "invalid_arguments"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"text": "x", "blocks": [section(f"b{i}") for i in range(51)]}, "invalid_blocks"),
        ({"text": "x", "blocks": [section("y" * 3001)]}, "invalid_blocks"),
        ({"text": "x", "blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "z" * 2001}]}]},
         "invalid_blocks"),
        ({"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]},
         "invalid_blocks"),
        ({"text": "x", "blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}]},
         "invalid_blocks"),
        ({"text": "x", "blocks": [{"type": "fancy_banner"}]}, "invalid_blocks"),
        ({"text": "x", "blocks": [section("a", "same"), section("b", "same")]}, "invalid_blocks"),
        ({"text": "t" * 40_001}, "msg_too_long"),
        ({}, "no_text"),
    ],
)
def test_message_limits(standin: SlackStandIn, client: WebClient, kwargs: dict[str, Any], error: str) -> None:
    assert error_of(lambda: client.chat_postMessage(channel=CH, **kwargs)) == error
    assert standin.messages(CH) == []
    ts = client.chat_postMessage(channel=CH, text="ok")["ts"]
    assert error_of(lambda: client.chat_update(channel=CH, ts=ts, **kwargs)) == error
    assert standin.messages(CH)[0]["edits"] == []


def test_limits_at_the_boundary_are_accepted(standin: SlackStandIn, client: WebClient) -> None:
    blocks = [section("y" * 3000)] + [section(f"b{i}") for i in range(48)]
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "h" * 150}})
    client.chat_postMessage(channel=CH, text="t" * 40_000, blocks=blocks)
    assert len(standin.messages(CH)[0]["blocks"]) == 50


def test_blocks_without_text_warn(standin: SlackStandIn, client: WebClient) -> None:
    with pytest.warns(UserWarning):  # slack_sdk warns client-side too
        response = client.chat_postMessage(channel=CH, blocks=[section("no fallback")])
    assert response["warning"] == "missing_text_or_fallback_or_attachments"
    assert standin.calls("chat.postMessage")[-1]["warning"] == "missing_text_or_fallback_or_attachments"


def test_only_own_messages_can_be_updated(standin: SlackStandIn, client: WebClient) -> None:
    human_ts = standin.post_user_message(CH, ALICE, "ship it")
    assert error_of(lambda: client.chat_update(channel=CH, ts=human_ts, text="edited")) == "cant_update_message"
    assert error_of(lambda: client.chat_update(channel=CH, ts="1.000001", text="edited")) == "message_not_found"
    assert error_of(lambda: client.chat_delete(channel=CH, ts=human_ts)) == "cant_delete_message"
    assert standin.messages(CH)[0]["text"] == "ship it"


def test_ephemeral_users_and_usergroups(standin: SlackStandIn, client: WebClient) -> None:
    sent = client.chat_postEphemeral(channel=CH, user=ALICE, text="only you")
    assert sent["message_ts"]
    assert standin.ephemerals(CH) == [{"channel": CH, "user": ALICE, "text": "only you", "blocks": [],
                                       "via": "chat.postEphemeral", "message_ts": sent["message_ts"],
                                       "thread_ts": None}]
    no_user = {"channel": CH, "text": "x"}
    assert error_of(lambda: client.api_call("chat.postEphemeral", json=no_user)) == "invalid_arguments"
    assert client.users_info(user=BOB)["user"]["name"] == "bob"
    assert error_of(lambda: client.users_info(user="U0GHOST")) == "user_not_found"
    assert client.usergroups_users_list(usergroup="S0RELEASERS")["users"] == [ALICE, BOB]
    assert error_of(lambda: client.usergroups_users_list(usergroup="S0NONE")) == "no_such_subteam"


# -- rate limits ---------------------------------------------------------------------------------------------------

def test_rate_limit_answers_429_with_retry_after() -> None:
    with SlackStandIn(bot_token=TOKEN, rate_limits={"chat.update": (2, 60.0)}) as standin:
        standin.add_channel(CH, "general")
        client = WebClient(token=TOKEN, base_url=standin.api_url)
        ts = client.chat_postMessage(channel=CH, text="v0")["ts"]
        client.chat_update(channel=CH, ts=ts, text="v1")
        client.chat_update(channel=CH, ts=ts, text="v2")
        with pytest.raises(SlackApiError) as info:
            client.chat_update(channel=CH, ts=ts, text="v3")
        assert info.value.response.status_code == 429 and info.value.response["error"] == "ratelimited"
        assert 1 <= int(info.value.response.headers["Retry-After"]) <= 60
        raw = httpx.post(standin.api_url + "chat.update", headers={"Authorization": f"Bearer {TOKEN}"},
                         json={"channel": CH, "ts": ts, "text": "v4"})
        assert raw.status_code == 429 and raw.json() == {"ok": False, "error": "ratelimited"}
        assert int(raw.headers["Retry-After"]) >= 1
        assert standin.messages(CH)[0]["text"] == "v2"
        client.chat_postMessage(channel=CH, text="other methods are not limited")
        assert [c["status"] for c in standin.calls("chat.update")] == [200, 200, 429, 429]
    assert REAL_TIER_LIMITS["chat.update"] == (50, 60.0)


def test_retry_handler_succeeds_after_waiting() -> None:
    with SlackStandIn(bot_token=TOKEN, rate_limits={"chat.update": (1, 1.0)}) as standin:
        standin.add_channel(CH, "general")
        client = WebClient(token=TOKEN, base_url=standin.api_url)
        client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=3))
        ts = client.chat_postMessage(channel=CH, text="v0")["ts"]
        client.chat_update(channel=CH, ts=ts, text="v1")
        client.chat_update(channel=CH, ts=ts, text="v2")  # 429 first, then slack_sdk sleeps Retry-After and retries
        statuses = [c["status"] for c in standin.calls("chat.update")]
        assert statuses[0] == 200 and 429 in statuses and statuses[-1] == 200
        assert standin.messages(CH)[0]["text"] == "v2"


# -- response_url and views -----------------------------------------------------------------------------------------

def test_response_url_posts(standin: SlackStandIn, client: WebClient) -> None:
    url = standin.new_response_url(CH, ALICE)
    answer = httpx.post(url, json={"text": "queued", "response_type": "ephemeral"})
    assert (answer.status_code, answer.text) == (200, "ok")
    assert httpx.post(url, json={"text": "for all", "response_type": "in_channel"}).text == "ok"
    assert httpx.post(url, json={"response_type": "ephemeral"}).status_code == 400
    bad = httpx.post(url, json={"text": "x", "blocks": [section("y" * 3001)]})
    assert (bad.status_code, bad.text) == (400, "invalid_blocks")
    (eph,) = standin.ephemerals(CH)
    assert (eph["user"], eph["text"], eph["via"]) == (ALICE, "queued", "response_url")
    assert [m["text"] for m in standin.messages(CH)] == ["for all"]
    for _ in range(3):
        assert httpx.post(url, json={"text": "again"}).status_code == 200
    used = httpx.post(url, json={"text": "sixth"})
    assert (used.status_code, used.text) == (404, "used_url")
    assert httpx.post(standin.base_url + "/commands/T0EDGE/1/forged", json={"text": "x"}).status_code == 404

    # a click's response_url acts on the clicked message
    ts = client.chat_postMessage(channel=CH, text="approve?")["ts"]
    click = standin.new_response_url(CH, BOB, message_ts=ts)
    assert httpx.post(click, json={"replace_original": True, "text": "approved by bob"}).text == "ok"
    assert standin.thread(CH, ts)[0]["text"] == "approved by bob" and standin.thread(CH, ts)[0]["edits"]
    assert httpx.post(click, json={"delete_original": True}).text == "ok"
    assert standin.thread(CH, ts) == []
    assert [c["method"] for c in standin.calls()].count("response_url") == 11


def test_views_open_needs_a_fresh_trigger(standin: SlackStandIn, client: WebClient) -> None:
    view = {"type": "modal", "callback_id": "reject", "title": {"type": "plain_text", "text": "Reject"},
            "submit": {"type": "plain_text", "text": "Reject"}, "private_metadata": "rel-1",
            "blocks": [{"type": "input", "block_id": "why", "label": {"type": "plain_text", "text": "Why?"},
                        "element": {"type": "plain_text_input", "action_id": "reason"}}]}
    assert error_of(lambda: client.views_open(trigger_id="123.456.abc", view=view)) == "invalid_trigger_id"
    trigger = standin.new_trigger_id(ALICE)
    assert error_of(lambda: client.views_open(trigger_id=trigger, view={**view, "title": {
        "type": "plain_text", "text": "t" * 25}})) == "invalid_arguments"
    opened = client.views_open(trigger_id=trigger, view=view)["view"]
    assert opened["id"].startswith("V") and opened["callback_id"] == "reject"
    assert error_of(lambda: client.views_open(trigger_id=trigger, view=view)) == "exchanged_trigger_id"
    (recorded,) = standin.views()
    assert recorded["user"] == ALICE and recorded["view"]["private_metadata"] == "rel-1"
    assert error_of(lambda: client.views_open(view=view)) == "invalid_arguments"


# -- HTTP inspection and the command line ------------------------------------------------------------------------

def test_http_inspection_endpoints(standin: SlackStandIn, client: WebClient) -> None:
    base = standin.base_url + "/_standin/"
    assert httpx.post(base + "channels", json={"id": "C0NEW", "name": "new"}).json() == {"ok": True}
    assert httpx.post(base + "users", json={"id": "U0CAROL", "name": "carol"}).json()["ok"]
    root = client.chat_postMessage(channel="C0NEW", text="hello")["ts"]
    client.chat_postMessage(channel="C0NEW", text="reply", thread_ts=root)
    human = httpx.post(base + "messages", json={"channel": "C0NEW", "user": "U0CAROL", "text": "hi bot"}).json()
    client.chat_postEphemeral(channel="C0NEW", user="U0CAROL", text="psst")

    messages = httpx.get(base + "messages", params={"channel": "C0NEW"}).json()["messages"]
    assert [m["text"] for m in messages] == ["hello", "reply", "hi bot"] and messages[2]["ts"] == human["ts"]
    thread = httpx.get(base + "thread", params={"channel": "C0NEW", "ts": root}).json()["messages"]
    assert [m["text"] for m in thread] == ["hello", "reply"]
    assert httpx.get(base + "ephemerals").json()["ephemerals"][0]["text"] == "psst"
    calls = httpx.get(base + "calls", params={"method": "chat.postMessage"}).json()["calls"]
    assert [c["ok"] for c in calls] == [True, True]
    assert client.users_info(user="U0CAROL")["user"]["name"] == "carol"

    url = httpx.post(base + "response_urls", json={"channel": "C0NEW", "user": "U0CAROL"}).json()["response_url"]
    assert httpx.post(url, json={"text": "via hook"}).text == "ok"
    limits = httpx.post(base + "rate_limits", json={"method": "users.info", "count": 0, "per": 30}).json()
    assert limits["rate_limits"]["users.info"] == [0, 30.0]
    assert error_of(lambda: client.users_info(user="U0CAROL")) == "ratelimited"
    assert httpx.post(base + "channels", json={"name": "no id"}).status_code == 400
    assert httpx.get(base + "nothing").status_code == 404


def test_command_line_server(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with SlackStandIn() as probe:  # find a free port, then let it go
        port = int(probe.base_url.rsplit(":", 1)[1])
    proc = subprocess.Popen([sys.executable, "-m", "sandbox.slack", "--port", str(port), "--token", TOKEN,
                             "--channel", "C123:general", "--user", "U9:zoe"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/api/" in line
        client = WebClient(token=TOKEN, base_url=f"http://127.0.0.1:{port}/api/")
        assert client.chat_postMessage(channel="C123", text="from another process")["ok"]
        assert client.users_info(user="U9")["user"]["name"] == "zoe"
        got = httpx.get(f"http://127.0.0.1:{port}/_standin/messages", params={"channel": "C123"}).json()
        assert got["messages"][0]["text"] == "from another process"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


# -- signing and a real Bolt app ---------------------------------------------------------------------------------

def test_sign_matches_slack_algorithm() -> None:
    body, ts = b"token=x&team_id=T0EDGE&text=publish+hello+1.0.0", 1_700_000_000
    expected = "v0=" + hmac.new(b"8f742231b10e8888abcd99yyyzzz85a5",
                                b"v0:1700000000:" + body, hashlib.sha256).hexdigest()
    assert sign("8f742231b10e8888abcd99yyyzzz85a5", body, ts) == expected
    verifier = SignatureVerifier("8f742231b10e8888abcd99yyyzzz85a5", clock=_FixedClock(ts + 10))
    assert verifier.is_valid(body, str(ts), sign("8f742231b10e8888abcd99yyyzzz85a5", body, ts))
    assert not verifier.is_valid(body, str(ts), sign("another-secret", body, ts))
    assert not verifier.is_valid(body + b"x", str(ts), expected)


class _FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture()
def bolt(standin: SlackStandIn) -> Iterator[tuple[SlackPlatform, dict[str, Any]]]:
    """A minimal Bolt app (not edgebot's) served by wsgiref, talking to the stand-in."""
    seen: dict[str, Any] = {}
    app = App(token=TOKEN, signing_secret=SECRET, client=WebClient(token=TOKEN, base_url=standin.api_url))

    @app.command("/edge")
    def on_command(ack: Ack, command: dict[str, Any], respond: Respond, client: WebClient) -> None:
        seen["command"] = command
        ack(text=f"got {command['text']}", response_type="ephemeral")
        respond(text="working on it")
        seen["view"] = client.views_open(trigger_id=command["trigger_id"], view={
            "type": "modal", "callback_id": "why", "title": {"type": "plain_text", "text": "Why"},
            "blocks": [section("tell me")]})["view"]["id"]

    @app.action("approve")
    def on_approve(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        ack()
        seen["action"], seen["action_body"] = action, body
        respond(replace_original=True, text=f"approved by <@{body['user']['id']}>")

    @app.view("why")
    def on_view(ack: Ack, view: dict[str, Any], body: dict[str, Any]) -> None:
        seen["view_submission"] = (view["private_metadata"], view["state"]["values"], body["user"]["id"], view["id"])
        ack()

    handler = SlackRequestHandler(app)
    server = make_server("127.0.0.1", 0, handler, server_class=WSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    platform = SlackPlatform(f"http://127.0.0.1:{server.server_port}/slack/events", SECRET, standin)
    try:
        yield platform, seen
    finally:
        platform.close()
        server.shutdown()
        server.server_close()


def test_bolt_parses_what_the_platform_sends(standin: SlackStandIn, client: WebClient,
                                              bolt: tuple[SlackPlatform, dict[str, Any]]) -> None:
    platform, seen = bolt
    ack = platform.slash_command("publish hello 1.0.0", user_id=ALICE, channel_id=CH)
    assert ack.status_code == 200 and ack.json()["text"] == "got publish hello 1.0.0"
    command = seen["command"]
    assert (command["user_id"], command["channel_id"], command["team_id"], command["command"]) == (
        ALICE, CH, "T0EDGE", "/edge")
    assert command["user_name"] == "alice" and command["response_url"].startswith(standin.base_url)
    wait_until(lambda: standin.ephemerals(CH))
    assert standin.ephemerals(CH)[0]["text"] == "working on it"
    wait_until(lambda: standin.views() and "view" in seen)  # the listener records the id after views.open returns
    assert standin.views()[0]["view"]["id"] == seen["view"]

    root = client.chat_postMessage(channel=CH, text="approve?", blocks=[
        section("approve?"), {"type": "actions", "block_id": "gate", "elements": [
            {"type": "button", "action_id": "approve", "value": "rel-1",
             "text": {"type": "plain_text", "text": "Approve"}}]}])["ts"]
    clicked = platform.block_action(action_id="approve", value="rel-1", user_id=BOB, channel_id=CH, message_ts=root)
    assert clicked.status_code == 200
    wait_until(lambda: standin.thread(CH, root)[0]["edits"])
    assert standin.thread(CH, root)[0]["text"] == f"approved by <@{BOB}>"
    wait_until(lambda: "action_body" in seen)
    action, body = seen["action"], seen["action_body"]
    assert (action["value"], action["block_id"], action["text"]["text"]) == ("rel-1", "gate", "Approve")
    assert body["container"]["message_ts"] == root and body["message"]["blocks"][1]["block_id"] == "gate"

    values = {"reason": {"text": {"type": "plain_text_input", "value": "flaky"}}}
    submitted = platform.view_submission(callback_id="why", private_metadata="rel-1", values=values, user_id=ALICE)
    assert submitted.status_code == 200
    assert wait_until(lambda: seen.get("view_submission")) == ("rel-1", values, ALICE, seen["view"])


def test_bolt_refuses_bad_signatures_and_stale_timestamps(bolt: tuple[SlackPlatform, dict[str, Any]]) -> None:
    platform, seen = bolt
    forged = platform.slash_command("publish", user_id=ALICE, channel_id=CH, signing_secret="not-the-secret")
    stale = platform.slash_command("publish", user_id=ALICE, channel_id=CH, timestamp=int(time.time()) - 600)
    assert forged.status_code == 401 and stale.status_code == 401
    assert "command" not in seen


# -- files: the external upload flow (files.getUploadURLExternal → POST the bytes → files.completeUploadExternal) ---

def _api_error(call: Callable[[], Any]) -> str:
    with pytest.raises(SlackApiError) as info:
        call()
    return str(info.value.response["error"])


def test_an_uploaded_file_shows_in_the_thread_only_after_complete_and_through_files_upload_v2(
        standin: SlackStandIn) -> None:
    client = WebClient(token=TOKEN, base_url=standin.api_url)
    root = client.chat_postMessage(channel=CH, text="release")["ts"]
    data = b"Step 1/2 : FROM busybox\nStep 2/2 : RUN true\n"
    ticket = client.files_getUploadURLExternal(filename="hello-1.2.3-amd64-build.log", length=len(data))
    assert httpx.post(ticket["upload_url"], content=data).status_code == 200
    assert not [m for m in standin.thread(CH, root) if m.get("files")]  # uploaded, not yet shared
    client.files_completeUploadExternal(files=[{"id": ticket["file_id"], "title": "Build log"}], channel_id=CH,
                                        thread_ts=root, initial_comment="the log")
    shared = [m for m in standin.thread(CH, root) if m.get("files")]
    assert [(m["text"], m["files"][0]["id"], m["thread_ts"]) for m in shared] == [("the log", ticket["file_id"], root)]
    assert standin.workspace.file(ticket["file_id"])["data"] == data  # type: ignore[index]
    # slack_sdk's own wrapper of the same three calls works against it too
    client.files_upload_v2(content=data, filename="again.log", channel=CH, thread_ts=root, initial_comment="v2")
    assert [m["text"] for m in standin.thread(CH, root) if m.get("files")] == ["the log", "v2"]


def test_the_upload_flow_refuses_what_slack_refuses(standin: SlackStandIn) -> None:
    client = WebClient(token=TOKEN, base_url=standin.api_url)
    root = client.chat_postMessage(channel=CH, text="release")["ts"]
    # required arguments, a token
    assert _api_error(lambda: client.api_call("files.getUploadURLExternal", params={"filename": "a.log"})) \
        == "invalid_arguments"
    assert _api_error(lambda: client.files_getUploadURLExternal(filename="a.log", length=0)) == "missing_argument"
    anonymous = httpx.post(standin.api_url + "files.getUploadURLExternal", data={"filename": "a.log", "length": 3})
    assert anonymous.json()["error"] == "not_authed"
    # the byte count must be the announced length; the URL takes one POST
    ticket = client.files_getUploadURLExternal(filename="a.log", length=10)
    assert httpx.post(ticket["upload_url"], content=b"0123456789-too-long").status_code == 400
    assert httpx.post(ticket["upload_url"], content=b"0123456789").status_code == 410  # used up
    assert _api_error(lambda: client.files_completeUploadExternal(
        files=[{"id": ticket["file_id"]}], channel_id=CH, thread_ts=root)) == "file_not_found"
    # complete before the bytes arrived, and twice
    early = client.files_getUploadURLExternal(filename="b.log", length=3)
    assert _api_error(lambda: client.files_completeUploadExternal(
        files=[{"id": early["file_id"]}], channel_id=CH)) == "file_not_found"
    assert httpx.post(early["upload_url"], content=b"abc").status_code == 200
    assert _api_error(lambda: client.files_completeUploadExternal(
        files=[{"id": early["file_id"]}], channel_id=NOBOT)) == "not_in_channel"
    client.files_completeUploadExternal(files=[{"id": early["file_id"]}], channel_id=CH, thread_ts=root)
    assert _api_error(lambda: client.files_completeUploadExternal(
        files=[{"id": early["file_id"]}], channel_id=CH)) == "file_not_found"
    assert len([m for m in standin.thread(CH, root) if m.get("files")]) == 1
    # both methods need files:write (an app installed from a manifest without it)
    standin.workspace.scopes = standin.workspace.scopes - {"files:write"}
    with pytest.raises(SlackApiError) as info:
        client.files_getUploadURLExternal(filename="c.log", length=3)
    assert (info.value.response["error"], info.value.response["needed"]) == ("missing_scope", "files:write")


def test_the_shipped_manifests_grant_files_write() -> None:
    from sandbox.slack_api import manifest_scopes

    root = Path(__file__).resolve().parent.parent / "deploy"
    for name in ("slack-app-manifest.yml", "slack-app-manifest.socket-mode.yml"):
        assert "files:write" in manifest_scopes(root / name), name
