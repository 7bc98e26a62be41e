"""What Slack's platform sends to the bot: signed slash commands, button clicks and modal submissions.

Why it matters: the bot must be tested through the same door Slack uses — a form-encoded POST to its request URL,
signed with the app's signing secret (``v0=`` HMAC-SHA256 of ``v0:{timestamp}:{body}``) — so Bolt's signature check,
body parsing and ack timing are all exercised. The payload shapes follow Slack's documented slash command,
``block_actions`` and ``view_submission`` payloads. With a :class:`~sandbox.slack.SlackStandIn`, the response_url and
trigger_id it hands out are real ones of the stand-in, so ``respond()`` and ``views.open`` work end to end.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import time
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import httpx

from sandbox.slack import SlackStandIn

API_APP_ID = "A0EDGEAPP"
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"


def sign(signing_secret: str, body: bytes, timestamp: int) -> str:
    """Slack's request signature: ``v0=`` + hex HMAC-SHA256 over ``v0:{timestamp}:{body}``."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


class SlackPlatform:
    """Plays Slack towards the bot at ``bot_url`` (e.g. ``http://127.0.0.1:PORT/slack/events``)."""

    def __init__(self, bot_url: str, signing_secret: str, standin: SlackStandIn | None = None, *,
                 team_id: str = "T0EDGE", team_domain: str = "edge-sandbox", http: httpx.Client | None = None) -> None:
        self.bot_url = bot_url
        self._signing_secret = signing_secret
        self.standin = standin
        self.team_id = team_id
        self.team_domain = team_domain
        self._own_http = http is None
        self.http = http if http is not None else httpx.Client(timeout=30.0)

    def __repr__(self) -> str:  # never the signing secret
        return f"SlackPlatform(bot_url={self.bot_url!r}, team_id={self.team_id!r})"

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def __enter__(self) -> SlackPlatform:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- what Slack sends -----------------------------------------------------------------------------------------
    def slash_command_fields(self, text: str, *, user_id: str, channel_id: str, command: str = "/edge",
                             channel_name: str = "general", user_name: str | None = None) -> dict[str, str]:
        """The fields Slack sends for ``{command} {text}`` typed in ``channel_id`` (a form post, or a Socket Mode
        envelope's payload)."""
        return {
            "token": "sandbox-verification-token",  # deprecated verification token; Bolt ignores it
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name or self._user_name(user_id),
            "command": command,
            "text": text,
            "api_app_id": API_APP_ID,
            "is_enterprise_install": "false",
            "response_url": self._response_url(channel_id, user_id, None),
            "trigger_id": self._trigger_id(user_id),
        }

    def slash_command(self, text: str, *, user_id: str, channel_id: str, command: str = "/edge",
                      channel_name: str = "general", user_name: str | None = None, timestamp: int | None = None,
                      signing_secret: str | None = None) -> httpx.Response:
        """A user typed ``{command} {text}`` in ``channel_id``: the form Slack posts to the request URL."""
        fields = self.slash_command_fields(text, user_id=user_id, channel_id=channel_id, command=command,
                                           channel_name=channel_name, user_name=user_name)
        return self._post(urlencode(fields).encode(), timestamp, signing_secret)

    def signed_slash_command(self, text: str, *, user_id: str, channel_id: str, command: str = "/edge",
                             channel_name: str = "general") -> httpx.Request:
        """The signed request of :meth:`slash_command`, built but not sent (``self.http.send(request)`` sends it):
        benchmarks sign before their timed window opens."""
        fields = self.slash_command_fields(text, user_id=user_id, channel_id=channel_id, command=command,
                                           channel_name=channel_name)
        return self._request(urlencode(fields).encode(), None, None)

    def block_action_payload(self, *, action_id: str, value: str, user_id: str, channel_id: str, message_ts: str,
                             block_id: str | None = None, message: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``block_actions`` payload of a click on button ``action_id`` of message ``message_ts``.

        Without ``message``, the message is read from the stand-in as it is now (Slack sends the current message),
        and the button's block_id and label are taken from it; ``block_id`` overrides (default "b").
        """
        if message is None and self.standin is not None:
            message = self.standin.api_message(channel_id, message_ts)
        message = copy.deepcopy(message) if message is not None else {"type": "message", "ts": message_ts, "text": ""}
        message.setdefault("type", "message")
        message.setdefault("ts", message_ts)
        found_block, label = _find_button(message, action_id)
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": block_id or found_block or "b",
            "text": {"type": "plain_text", "text": label or action_id, "emoji": True},
            "value": value,
            "type": "button",
            "action_ts": f"{time.time():.6f}",
        }
        return {
            "type": "block_actions",
            "user": {"id": user_id, "username": self._user_name(user_id), "name": self._user_name(user_id),
                     "team_id": self.team_id},
            "api_app_id": API_APP_ID,
            "token": "sandbox-verification-token",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id,
                          "is_ephemeral": False},
            "trigger_id": self._trigger_id(user_id),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": self._channel_name(channel_id)},
            "message": message,
            "state": {"values": {}},
            "response_url": self._response_url(channel_id, user_id, message_ts),
            "actions": [action],
        }

    def signed_block_action(self, payload: dict[str, Any]) -> httpx.Request:
        """The signed request of a :meth:`block_action_payload`, built but not sent (benchmarks sign first)."""
        return self._request(urlencode({"payload": json.dumps(payload)}).encode(), None, None)

    def block_action(self, *, action_id: str, value: str, user_id: str, channel_id: str, message_ts: str,
                     block_id: str | None = None, message: dict[str, Any] | None = None,
                     timestamp: int | None = None, signing_secret: str | None = None) -> httpx.Response:
        """A click on a button: ``payload=<json>`` of type block_actions posted to the request URL."""
        payload = self.block_action_payload(action_id=action_id, value=value, user_id=user_id, channel_id=channel_id,
                                            message_ts=message_ts, block_id=block_id, message=message)
        return self._post(urlencode({"payload": json.dumps(payload)}).encode(), timestamp, signing_secret)

    def view_submission(self, *, callback_id: str, private_metadata: str, values: dict[str, Any], user_id: str,
                        timestamp: int | None = None, signing_secret: str | None = None) -> httpx.Response:
        """The user pressed Submit on a modal; ``values`` is ``view.state.values``
        (``{block_id: {action_id: {"type": "plain_text_input", "value": "…"}}}``).

        If the stand-in recorded a view with this callback_id opened for this user, its id, title and blocks are
        sent, as Slack sends the view that was open.
        """
        opened: dict[str, Any] = {}
        if self.standin is not None:
            for entry in reversed(self.standin.views()):
                if entry["user"] == user_id and entry["view"].get("callback_id") == callback_id:
                    opened = entry["view"]
                    break
        view_id = opened.get("id") or "V" + secrets.token_hex(5).upper()
        view = {
            "id": view_id,
            "team_id": self.team_id,
            "type": "modal",
            "title": opened.get("title") or {"type": "plain_text", "text": "edgebot"},
            "blocks": opened.get("blocks") or [],
            "close": opened.get("close"),
            "submit": opened.get("submit") or {"type": "plain_text", "text": "Submit"},
            "private_metadata": private_metadata,
            "callback_id": callback_id,
            "state": {"values": copy.deepcopy(values)},
            "hash": opened.get("hash") or secrets.token_hex(8),
            "clear_on_close": False,
            "notify_on_close": False,
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": API_APP_ID,
            "external_id": "",
            "app_installed_team_id": self.team_id,
            "bot_id": opened.get("bot_id") or "B0EDGEBOT",
        }
        payload: dict[str, Any] = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": {"id": user_id, "username": self._user_name(user_id), "name": self._user_name(user_id),
                     "team_id": self.team_id},
            "api_app_id": API_APP_ID,
            "token": "sandbox-verification-token",
            "trigger_id": self._trigger_id(user_id),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        return self._post(urlencode({"payload": json.dumps(payload)}).encode(), timestamp, signing_secret)

    # -- helpers ----------------------------------------------------------------------------------------------
    def _post(self, body: bytes, timestamp: int | None, signing_secret: str | None) -> httpx.Response:
        return self.http.send(self._request(body, timestamp, signing_secret))

    def _request(self, body: bytes, timestamp: int | None, signing_secret: str | None) -> httpx.Request:
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": USER_AGENT,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": sign(signing_secret or self._signing_secret, body, ts),
        }
        return self.http.build_request("POST", self.bot_url, content=body, headers=headers)

    def _response_url(self, channel_id: str, user_id: str, message_ts: str | None) -> str:
        if self.standin is not None:
            return self.standin.new_response_url(channel_id, user_id, message_ts=message_ts)
        kind = "actions" if message_ts else "commands"  # goes nowhere: no stand-in to receive it
        return f"http://127.0.0.1:9/{kind}/{self.team_id}/0/{secrets.token_urlsafe(18)}"

    def _trigger_id(self, user_id: str) -> str:
        if self.standin is not None:
            return self.standin.new_trigger_id(user_id)
        return f"{secrets.randbelow(10**10)}.{int(time.time())}.{secrets.token_hex(16)}"

    def _user_name(self, user_id: str) -> str:
        if self.standin is not None:
            with self.standin.workspace.lock:
                user = self.standin.workspace.users.get(user_id)
            if user is not None:
                return str(user["name"])
        return user_id.lower()

    def _channel_name(self, channel_id: str) -> str:
        if self.standin is not None:
            with self.standin.workspace.lock:
                channel = self.standin.workspace.channels.get(channel_id)
            if channel is not None:
                return str(channel["name"])
        return channel_id.lower()


def _find_button(message: dict[str, Any], action_id: str) -> tuple[str | None, str | None]:
    """(block_id, label) of the element ``action_id`` in the message's blocks, if it is there."""
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                text = element.get("text")
                return block.get("block_id"), text.get("text") if isinstance(text, dict) else None
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("action_id") == action_id:
            text = accessory.get("text")
            return block.get("block_id"), text.get("text") if isinstance(text, dict) else None
    return None, None
