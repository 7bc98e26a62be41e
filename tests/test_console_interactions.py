"""What the console sends when someone clicks a button or submits a modal, as a real Bolt app receives it.

A small Bolt app behind a real WSGI server (the same Bolt request parsing, signature check and listener matching the
bot uses) has an Approve/Reject card's listeners: Approve records the click, Reject opens a modal through the Slack
stand-in's ``views.open``, and the modal's submission is checked like a form. The console, given the stand-in and a
signed :class:`SlackPlatform`, is driven line by line as a person types; the assertions are on the payloads Bolt
handed to the listeners and on what the console printed.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from slack_bolt import Ack, App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from edgebot.thread import slack_client
from sandbox.console import Console
from sandbox.identities import add_people
from sandbox.proc_base import wait_until
from sandbox.slack import SlackStandIn
from sandbox.slack_client import SlackPlatform
from sandbox.stack import CHANNEL_ID, CHANNEL_NAME, TEAM_ID

TOKEN, SECRET = "xoxb-console-test", "console-test-signing-secret"
RELEASE = "r-abc123"


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return


@dataclass
class Received:
    clicks: list[dict[str, Any]] = field(default_factory=list)
    submissions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Setup:
    slack: SlackStandIn
    client: WebClient
    console: Console
    out: io.StringIO
    received: Received
    card_ts: str


def _card_blocks(with_buttons: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"✋ approve release `{RELEASE}`?"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "open until "
                                          "<!date^1800001800^{date_short_pretty} {time}|2027-01-15 08:30 UTC>"}]},
    ]
    if with_buttons:
        blocks.append({"type": "actions", "block_id": f"approval-{RELEASE}", "elements": [
            {"type": "button", "action_id": "approve", "value": RELEASE, "style": "primary",
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": "reject", "value": RELEASE, "style": "danger",
             "text": {"type": "plain_text", "text": "Reject"},
             "confirm": {"title": {"type": "plain_text", "text": "Reject?"},
                         "text": {"type": "mrkdwn", "text": "Nothing of <@U0REQUESTER>'s release is published."},
                         "confirm": {"type": "plain_text", "text": "Reject"},
                         "deny": {"type": "plain_text", "text": "Back"}}},
        ]})
    return blocks


def _bolt_app(client: WebClient, received: Received) -> App:
    app = App(client=client, signing_secret=SECRET, process_before_response=False, token_verification_enabled=False)

    @app.action("approve")
    def on_approve(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        received.clicks.append(body)

    @app.action("reject")
    def on_reject(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        received.clicks.append(body)
        if body["user"]["id"] == "U0REQUESTER":
            client.chat_postEphemeral(channel=body["channel"]["id"], user=body["user"]["id"],
                                      text="You requested this release: cancel it instead.")
            return
        client.views_open(trigger_id=body["trigger_id"], view={
            "type": "modal", "callback_id": "reject_reason", "private_metadata": body["actions"][0]["value"],
            "title": {"type": "plain_text", "text": "Reject release"},
            "submit": {"type": "plain_text", "text": "Reject"}, "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [{"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why?"},
                        "element": {"type": "plain_text_input", "action_id": "reason_text"}}],
        })

    @app.view("reject_reason")
    def on_reason(ack: Ack, body: dict[str, Any]) -> None:
        reason = body["view"]["state"]["values"]["reason"]["reason_text"]["value"]
        if len(reason) < 5:
            ack(response_action="errors", errors={"reason": "Say in a few words why"})
            return
        ack()
        received.submissions.append(body)

    return app


@pytest.fixture
def setup() -> Iterator[Setup]:
    slack = SlackStandIn(bot_token=TOKEN, team_id=TEAM_ID).start()
    slack.add_channel(CHANNEL_ID, CHANNEL_NAME, bot_member=True)
    add_people(slack)
    client = slack_client(TOKEN, slack.api_url)
    received = Received()
    handler = SlackRequestHandler(_bolt_app(client, received), path="/slack/events")
    server = make_server("127.0.0.1", 0, handler, server_class=WSGIServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    platform = SlackPlatform(f"http://127.0.0.1:{server.server_port}/slack/events", SECRET, slack, team_id=TEAM_ID)
    card_ts = client.chat_postMessage(channel=CHANNEL_ID, text=f"approve release {RELEASE}?",
                                      blocks=_card_blocks(True))["ts"]
    out = io.StringIO()
    try:
        yield Setup(slack, client, Console(slack, platform, out), out, received, card_ts)
    finally:
        platform.close()
        server.shutdown()
        server.server_close()
        slack.stop()


def test_a_click_is_a_signed_block_actions_payload_shaped_like_slacks(setup: Setup) -> None:
    setup.console.refresh()
    assert re.search(r"\+ #releases\s+✋ approve release `r-abc123`\?\n\s+open until 2027-01-15 08:30 UTC\n"
                     r"\s+\[1: Approve\]  \[2: Reject\]", setup.out.getvalue())
    setup.console.handle("/as approver1")
    setup.console.handle("click 1")
    (click,) = wait_until(lambda: setup.received.clicks, timeout=30, what="Bolt to run the approve listener")
    assert "» @approver1 clicks [Approve]" in setup.out.getvalue()
    assert click["type"] == "block_actions"
    assert click["user"]["id"] == "U0APPROVER" and click["user"]["name"] == "approver1"
    assert click["team"]["id"] == TEAM_ID and click["channel"]["id"] == CHANNEL_ID
    assert click["container"] == {"type": "message", "message_ts": setup.card_ts, "channel_id": CHANNEL_ID,
                                  "is_ephemeral": False}
    assert click["message"]["ts"] == setup.card_ts and click["message"]["blocks"][-1]["type"] == "actions"
    (action,) = click["actions"]
    assert (action["action_id"], action["block_id"], action["value"], action["type"]) == (
        "approve", f"approval-{RELEASE}", RELEASE, "button")
    assert click["response_url"].startswith(setup.slack.base_url + "/actions/") and click["trigger_id"]


def test_reject_opens_the_modal_and_submits_the_reason_as_a_view_submission(setup: Setup) -> None:
    setup.console.handle("/as approver2")
    setup.console.handle("reject no")  # too short: the listener answers with a field error, the modal stays open
    wait_until(lambda: "the modal stays open: reason: Say in a few words why" in setup.out.getvalue(), timeout=30,
               what="the field error")
    assert "┌─ modal: Reject release\n│ ▭ Why?" in setup.out.getvalue()
    assert "» @approver2 clicks [Reject]\n  confirmed: Reject? Nothing of @requester's release is published." \
        in setup.out.getvalue()
    assert setup.received.clicks[0]["user"]["id"] == "U0APPROVER2"
    assert setup.received.clicks[0]["actions"][0]["action_id"] == "reject"
    setup.console.handle("submit wrong base image, use 1.0.1")
    (submission,) = wait_until(lambda: setup.received.submissions, timeout=30, what="the view_submission listener")
    assert submission["type"] == "view_submission" and submission["user"]["id"] == "U0APPROVER2"
    view = submission["view"]
    assert view["callback_id"] == "reject_reason" and view["private_metadata"] == RELEASE
    assert view["state"]["values"] == {"reason": {"reason_text": {"type": "plain_text_input",
                                                                  "value": "wrong base image, use 1.0.1"}}}
    assert view["id"] == setup.slack.views()[-1]["view"]["id"], "the view Slack opened is the one submitted"
    assert "modal closed" in setup.out.getvalue()


def test_buttons_removed_by_an_edit_cannot_be_clicked(setup: Setup) -> None:
    setup.console.refresh()
    setup.client.chat_update(channel=CHANNEL_ID, ts=setup.card_ts, text="approved", blocks=_card_blocks(False))
    setup.console.refresh()
    assert re.search(r"~ #releases\s+✋ approve release `r-abc123`\? \(edited\)", setup.out.getvalue())
    setup.console.handle("click 2")
    assert "button 2 (Reject) is no longer on its message: the message was updated" in setup.out.getvalue()
    setup.console.handle("approve")
    assert "no Approve button right now" in setup.out.getvalue()
    setup.console.handle("click x")
    assert "click takes a button number" in setup.out.getvalue()
    assert setup.received.clicks == []


def test_ephemerals_show_to_the_user_they_are_for_when_that_user_is_at_the_keyboard(setup: Setup) -> None:
    setup.client.chat_postEphemeral(channel=CHANNEL_ID, user="U0APPROVER2", text="only for <@U0APPROVER2>")
    setup.console.refresh()
    assert "only for" not in setup.out.getvalue(), "@requester is at the keyboard"
    setup.console.handle("/as approver2")
    assert "you are now @approver2" in setup.out.getvalue()
    assert "(only visible to you)\n  only for @approver2" in setup.out.getvalue()
    setup.console.handle("/as nobody")
    assert "no user `nobody` in the sandbox workspace" in setup.out.getvalue()
    setup.console.handle("/deploy hello")
    assert "/deploy is not a command of this workspace's apps: edgebot's is /edge" in setup.out.getvalue()
    setup.console.handle("frobnicate")
    assert "unknown command `frobnicate`: type `help` for the list" in setup.out.getvalue()


def test_a_deleted_message_is_shown_as_gone_where_it_was(setup: Setup) -> None:
    reply_ts = setup.client.chat_postMessage(channel=CHANNEL_ID, thread_ts=setup.card_ts, text="a reply")["ts"]
    setup.console.refresh()
    assert re.search(r"\+ r-abc123 ├\s+a reply", setup.out.getvalue())
    setup.client.chat_delete(channel=CHANNEL_ID, ts=reply_ts)
    setup.console.refresh()
    assert re.search(r"- r-abc123 ├\s+\(message deleted\)", setup.out.getvalue())


def test_a_reject_click_answered_without_a_modal_submits_nothing(setup: Setup) -> None:
    setup.console.handle("reject not my release after all")  # as @requester: the listener answers ephemerally
    out = setup.out.getvalue()
    assert "(only visible to you)\n  You requested this release: cancel it instead." in out
    assert "no modal opened: the bot answered instead; nothing submitted" in out
    assert setup.received.submissions == [] and setup.slack.views() == []
