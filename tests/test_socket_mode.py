"""`edgebot serve --socket-mode` against the Slack stand-in's Socket Mode endpoint (a real WebSocket server): the bot
opens the connection with its app-level token, slash commands and button clicks arrive as envelopes and are acked
with the same answers the HTTP mode gives, and a disconnect asked by Slack is followed by a reconnect."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from sandbox.slack import SlackStandIn
from sandbox.stack import APP_TOKEN, BOT_TOKEN, CHANNEL_ID, CHANNEL_NAME, REQUESTER, Stack, wait_until

pytestmark = pytest.mark.slow


def _error(call: Any) -> str:
    with pytest.raises(SlackApiError) as failed:
        call()
    return str(failed.value.response["error"])


def test_connections_open_takes_only_the_app_level_token() -> None:
    with SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN) as standin:
        assert _error(lambda: WebClient(token=APP_TOKEN, base_url=standin.api_url).apps_connections_open(
            app_token=APP_TOKEN)) == "not_allowed"  # Socket Mode not enabled yet
        standin.socket_mode()
        url = WebClient(base_url=standin.api_url).apps_connections_open(app_token=APP_TOKEN)["url"]
        assert url.startswith("ws://127.0.0.1:") and "/link/?ticket=" in url
        assert _error(lambda: WebClient(base_url=standin.api_url).apps_connections_open(
            app_token=BOT_TOKEN)) == "not_allowed_token_type"
        assert _error(lambda: WebClient(token=APP_TOKEN, base_url=standin.api_url).auth_test()) == \
            "not_allowed_token_type"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("socket"), docker=docker_daemon, registry=registry)
    try:
        running.start(bot=False)  # no HTTP bot: the only way in is the Socket Mode connection
        running.start_socket_bot()
        running.wait_workers(2)
        yield running
    finally:
        running.stop()


def _command(stack: Stack, text: str, user_id: str = REQUESTER) -> dict[str, Any]:
    assert stack.slack.socket_link is not None
    fields = stack.platform().slash_command_fields(text, user_id=user_id, channel_id=CHANNEL_ID,
                                                   channel_name=CHANNEL_NAME)
    ack = stack.slack.socket_link.deliver("slash_commands", fields, accepts_response_payload=True)
    return dict(ack.get("payload") or {})


def test_slash_commands_and_buttons_over_socket_mode(stack: Stack) -> None:
    assert "publish SERVICE VERSION" in _command(stack, "help")["text"]
    refused = _command(stack, "publish nosuch 1.0.0 --registry local")
    assert refused["response_type"] == "ephemeral" and "`nosuch` is not in edgebot's catalog" in refused["text"]
    assert not stack.release_ids()

    queued = _command(stack, "publish hello 1.0.0 --registry local --dry-run")
    assert "Queued release" in queued["text"]
    (release_id,) = stack.release_ids()
    release = stack.wait_final(release_id)
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish"))

    # a button click: the envelope is acked empty, the answer goes to the response_url
    root_ts = wait_until(lambda: stack.store().require(release_id).message_ts, what="the root message")
    payload = stack.platform().block_action_payload(action_id="release_status", value=release_id,
                                                    user_id=REQUESTER, channel_id=CHANNEL_ID, message_ts=root_ts)
    assert stack.slack.socket_link is not None
    ack = stack.slack.socket_link.deliver("interactive", payload, accepts_response_payload=False)
    assert not ack.get("payload")
    wait_until(lambda: [e for e in stack.slack.ephemerals(CHANNEL_ID) if release_id in e["text"]],
               what="the status answer through the response_url")


def test_bot_reconnects_when_slack_asks(stack: Stack) -> None:
    link = stack.slack.socket_link
    assert link is not None
    before = link.connects
    link.disconnect_all("refresh_requested")
    wait_until(lambda: link.connects > before and link.connected(), timeout=60, what="the bot to reconnect")
    assert "publish SERVICE VERSION" in _command(stack, "help")["text"]
