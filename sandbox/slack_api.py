"""The state of a fake Slack workspace and the Web API methods the bot and workers call, without any HTTP.

Why it behaves like Slack and not like a recorder: the bot's correctness depends on Slack's refusals
(``not_in_channel`` before queueing, ``cant_update_message``, ``message_not_found``, trigger ids that expire), so each
method checks what the real one checks and answers with the same error codes. ``sandbox.slack`` puts this behind a
real HTTP server; tests inspect the results through deep copies.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from sandbox.slack_limits import MAX_VIEW_BLOCKS, BlockError, check_message, validate_blocks

Args = dict[str, Any]

# Methods that read a JSON body (Slack documents JSON for its write methods); the others only read form/query
# arguments, so JSON sent to them is ignored and their required arguments come up missing, as on Slack.
JSON_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.delete", "chat.postEphemeral", "views.open"})
TRIGGER_TTL = 3.0  # seconds: Slack's trigger_id lifetime
RESPONSE_URL_USES = 5  # a response_url takes at most five posts ...
RESPONSE_URL_TTL = 30 * 60.0  # ... within thirty minutes
VIEW_TITLE_CHARS = 24
PRIVATE_METADATA_CHARS = 3000


CONVERSATION_SCOPES = {"public": "channels:read", "private": "groups:read", "im": "im:read", "mpim": "mpim:read"}
"""The scope ``conversations.info`` needs per conversation type (https://docs.slack.dev/reference/methods/conversations.info)."""
MANIFEST = Path(__file__).resolve().parent.parent / "deploy" / "slack-app-manifest.yml"


def manifest_scopes(path: Path = MANIFEST) -> frozenset[str]:
    """The bot scopes the shipped Slack app manifest grants: the stand-in's token has exactly these."""
    return frozenset(yaml.safe_load(path.read_text())["oauth_config"]["scopes"]["bot"])


class ApiError(Exception):
    """A Slack API error answer: HTTP 200 with ``{"ok": false, "error": code}`` (plus ``extra``)."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def ts_key(ts: str) -> tuple[int, int]:
    """Sort key for Slack timestamps ("seconds.micros")."""
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


def _json_arg(args: Args, key: str, error: str) -> Any:
    """Form posts carry blocks, attachments and views as JSON strings; JSON posts carry them as values."""
    value = args.get(key)
    if isinstance(value, str):
        if value == "":
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ApiError(error) from None
    return value


def _required(args: Args, *names: str) -> None:
    missing = [n for n in names if args.get(n) in (None, "")]
    if missing:
        raise ApiError("invalid_arguments", response_metadata={"messages": [
            f"[ERROR] missing required field: {n}" for n in missing]})


def _message_body(args: Args) -> tuple[Any, Any, Any, str | None]:
    """text, blocks, attachments after Slack's message checks, and the warning (if any)."""
    text = args.get("text")
    blocks = _json_arg(args, "blocks", "invalid_blocks_format")
    attachments = _json_arg(args, "attachments", "invalid_attachments")
    try:
        warning = check_message(text, blocks, attachments)
    except BlockError as exc:
        extra = {"response_metadata": {"messages": exc.messages}} if exc.messages else {}
        raise ApiError(exc.error, **extra) from None
    return text, blocks, attachments, warning


class Workspace:
    """One team with channels, users, user groups, messages, ephemerals, opened views and interaction tokens."""

    def __init__(self, *, team_id: str, bot_user_id: str, bot_id: str = "B0EDGEBOT", team_domain: str = "edge-sandbox",
                 bot_name: str = "edgebot", scopes: Iterable[str] | None = None) -> None:
        self.lock = threading.RLock()
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.scopes: frozenset[str] = manifest_scopes() if scopes is None else frozenset(scopes)
        """The bot token's scopes (default: what deploy/slack-app-manifest.yml grants)."""
        self.channels: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, dict[str, Any]] = {}
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._ephemerals: list[dict[str, Any]] = []
        self._views: list[dict[str, Any]] = []
        self._triggers: dict[str, dict[str, Any]] = {}
        self._response_urls: dict[str, dict[str, Any]] = {}
        self._last_us = 0
        self._ids = itertools.count(1)
        self.upload_base = ""
        """Where upload URLs point (sandbox.slack sets its ``/upload/v1/`` URL when it starts)."""
        self._uploads: dict[str, dict[str, Any]] = {}
        self._files: dict[str, dict[str, Any]] = {}
        self.add_user(bot_user_id, bot_name, is_bot=True)
        self.methods: dict[str, Callable[[Args], dict[str, Any]]] = {
            "auth.test": self.auth_test,
            "conversations.info": self.conversations_info,
            "chat.postMessage": self.chat_post_message,
            "chat.update": self.chat_update,
            "chat.delete": self.chat_delete,
            "chat.postEphemeral": self.chat_post_ephemeral,
            "chat.getPermalink": self.chat_get_permalink,
            "users.info": self.users_info,
            "usergroups.users.list": self.usergroups_users_list,
            "views.open": self.views_open,
            "files.getUploadURLExternal": self.files_get_upload_url_external,
            "files.completeUploadExternal": self.files_complete_upload_external,
        }

    # -- set-up -------------------------------------------------------------------------------------------------
    def add_channel(self, channel_id: str, name: str, *, bot_member: bool = True, is_private: bool = False,
                    kind: str = "") -> None:
        """A conversation: a public channel, a private one (``is_private``), or ``kind="im"`` (a direct message with
        the bot: ids start with ``D``, always writable) or ``kind="mpim"`` (a group direct message)."""
        kind = kind or ("private" if is_private else "public")
        if kind not in CONVERSATION_SCOPES:
            raise ValueError(f"kind must be one of {sorted(CONVERSATION_SCOPES)}")
        with self.lock:
            self.channels[channel_id] = {"id": channel_id, "name": name, "kind": kind,
                                         "is_member": bot_member or kind == "im",
                                         "is_private": kind != "public", "created": int(time.time())}
            self._messages.setdefault(channel_id, [])

    def add_user(self, user_id: str, name: str, *, is_bot: bool = False) -> None:
        with self.lock:
            self.users[user_id] = {"id": user_id, "name": name, "is_bot": is_bot}

    def add_usergroup(self, usergroup_id: str, handle: str, users: list[str]) -> None:
        with self.lock:
            self.usergroups[usergroup_id] = {"id": usergroup_id, "handle": handle, "users": list(users)}

    def new_trigger_id(self, user_id: str) -> str:
        """A trigger id as Slack hands out with a command or click: usable once, for three seconds."""
        with self.lock:
            trigger = f"{next(self._ids)}.{int(time.time())}.{secrets.token_hex(16)}"
            self._triggers[trigger] = {"user": user_id, "issued": time.monotonic(), "used": False}
            return trigger

    def new_response_url_id(self, channel_id: str, user_id: str, message_ts: str | None) -> str:
        with self.lock:
            key = f"{next(self._ids)}/{secrets.token_urlsafe(18)}"
            self._response_urls[key] = {"channel": channel_id, "user": user_id, "message_ts": message_ts,
                                        "uses": 0, "issued": time.monotonic()}
            return key

    def post_user_message(self, channel_id: str, user_id: str, text: str, *, thread_ts: str | None = None) -> str:
        """A person writes in the channel (what the bot may not edit); returns its ts."""
        with self.lock:
            if channel_id not in self.channels:
                raise KeyError(f"unknown channel {channel_id}")
            return str(self._add_message(channel_id, text, None, None, thread_ts, user_id)["ts"])

    # -- inspection (deep copies) ----------------------------------------------------------------------------------
    def messages(self, channel_id: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            found = [m for m in self._messages.get(channel_id, []) if include_deleted or not m.get("deleted")]
            return copy.deepcopy(found)

    def all_messages(self) -> dict[str, list[dict[str, Any]]]:
        with self.lock:
            return {channel: self.messages(channel) for channel in self._messages}

    def thread(self, channel_id: str, thread_ts: str) -> list[dict[str, Any]]:
        with self.lock:
            msgs = self.messages(channel_id)
            root = [m for m in msgs if m["ts"] == thread_ts]
            replies = sorted((m for m in msgs if m["ts"] != thread_ts and m.get("thread_ts") == thread_ts),
                             key=lambda m: ts_key(m["ts"]))
            return root + replies

    def ephemerals(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy([e for e in self._ephemerals if channel_id is None or e["channel"] == channel_id])

    def views(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._views)

    def find_message(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        with self.lock:
            msg = self._find(channel_id, ts)
            return copy.deepcopy(msg) if msg else None

    def api_message(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        """The message as Slack shows it to apps (in API answers and in interaction payloads)."""
        with self.lock:
            msg = self._find(channel_id, ts)
            return self._api_message(msg) if msg else None

    # -- helpers ----------------------------------------------------------------------------------------------
    def _next_ts(self) -> str:
        now_us = int(time.time() * 1_000_000)
        self._last_us = max(now_us, self._last_us + 1)
        return f"{self._last_us // 1_000_000}.{self._last_us % 1_000_000:06d}"

    def _channel(self, value: Any) -> dict[str, Any]:
        """A channel by id or by (#)name, as the bot sees it: private channels it is not in do not exist."""
        key = str(value or "")
        channel = self.channels.get(key)
        if channel is None:
            name = key.removeprefix("#")
            channel = next((c for c in self.channels.values() if c["name"] == name), None)
        if channel is None or (channel["is_private"] and not channel["is_member"]):
            raise ApiError("channel_not_found")
        return channel

    def _writable_channel(self, value: Any) -> dict[str, Any]:
        channel = self._channel(value)
        if not channel["is_member"]:
            raise ApiError("not_in_channel")
        return channel

    def _find(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        for msg in self._messages.get(channel_id, []):
            if msg["ts"] == ts and not msg.get("deleted"):
                return msg
        return None

    def _api_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A message as the Web API returns it."""
        out = {"type": "message", "user": msg["user"], "text": msg["text"] or "", "ts": msg["ts"],
               "team": self.team_id}
        if msg["user"] == self.bot_user_id:
            out.update(bot_id=self.bot_id, app_id="A0EDGEAPP")
        for key in ("blocks", "attachments", "thread_ts"):
            if msg.get(key):
                out[key] = copy.deepcopy(msg[key])
        return out

    def _add_message(self, channel_id: str, text: Any, blocks: Any, attachments: Any, thread_ts: str | None,
                     user: str) -> dict[str, Any]:
        orphan = False
        if thread_ts:
            parent = self._find(channel_id, thread_ts)
            if parent is None:
                orphan = True  # Slack accepts it; tests assert the bot never does this
            elif parent.get("thread_ts") and parent["thread_ts"] != parent["ts"]:
                thread_ts = parent["thread_ts"]  # a reply's ts names the reply's thread
                parent = self._find(channel_id, thread_ts)
            if parent is not None:
                parent["thread_ts"] = parent["ts"]
                parent["reply_count"] = parent.get("reply_count", 0) + 1
        msg = {"ts": self._next_ts(), "thread_ts": thread_ts or None, "user": user, "text": text or "",
               "blocks": copy.deepcopy(blocks) or [], "attachments": copy.deepcopy(attachments) or [], "edits": [],
               "orphan": orphan}
        self._messages.setdefault(channel_id, []).append(msg)
        return msg

    def _edit(self, msg: dict[str, Any], text: Any, blocks: Any, attachments: Any) -> None:
        msg["text"] = text or ""
        msg["blocks"] = copy.deepcopy(blocks) or []
        msg["attachments"] = copy.deepcopy(attachments) or []
        msg["edits"].append({"ts": self._next_ts(), "text": msg["text"], "blocks": copy.deepcopy(msg["blocks"])})

    def _ok(self, body: dict[str, Any], warning: str | None = None) -> dict[str, Any]:
        out = {"ok": True, **body}
        if warning:
            out["warning"] = warning
            out["response_metadata"] = {"warnings": [warning]}
        return out

    # -- Web API methods --------------------------------------------------------------------------------------
    def auth_test(self, args: Args) -> dict[str, Any]:
        return self._ok({"url": f"https://{self.team_domain}.slack.com/", "team": self.team_domain,
                         "user": self.bot_name, "team_id": self.team_id, "user_id": self.bot_user_id,
                         "bot_id": self.bot_id, "is_enterprise_install": False})

    def conversations_info(self, args: Args) -> dict[str, Any]:
        _required(args, "channel")
        c = self._channel(args["channel"])
        kind = c["kind"]
        needed = CONVERSATION_SCOPES[kind]
        if needed not in self.scopes:  # Slack checks the scope of the conversation's type, not of the method alone
            raise ApiError("missing_scope", needed=needed, provided=",".join(sorted(self.scopes)))
        if kind == "im":  # an IM object has no name and no is_member (https://docs.slack.dev/reference/objects/conversation-object)
            return self._ok({"channel": {"id": c["id"], "is_im": True, "is_org_shared": False,
                                         "context_team_id": self.team_id, "user": c["name"],
                                         "is_user_deleted": False, "created": c["created"]}})
        return self._ok({"channel": {
            "id": c["id"], "name": c["name"], "name_normalized": c["name"], "is_channel": kind == "public",
            "is_group": kind == "private", "is_im": False, "is_mpim": kind == "mpim", "is_private": c["is_private"],
            "is_archived": False, "is_general": c["name"] == "general", "is_member": c["is_member"],
            "is_shared": False, "is_ext_shared": False, "is_org_shared": False, "created": c["created"],
            "context_team_id": self.team_id,
        }})

    def chat_post_message(self, args: Args) -> dict[str, Any]:
        _required(args, "channel")
        channel = self._writable_channel(args["channel"])
        text, blocks, attachments, warning = _message_body(args)
        thread_ts = args.get("thread_ts") or None
        msg = self._add_message(channel["id"], text, blocks, attachments, thread_ts, self.bot_user_id)
        return self._ok({"channel": channel["id"], "ts": msg["ts"], "message": self._api_message(msg)}, warning)

    def _own_message(self, args: Args, refusal: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(channel, message) for ``channel``+``ts``; only the bot's own messages may be changed."""
        _required(args, "channel", "ts")
        channel = self._channel(args["channel"])
        msg = self._find(channel["id"], str(args["ts"]))
        if msg is None:
            raise ApiError("message_not_found")
        if msg["user"] != self.bot_user_id:
            raise ApiError(refusal)
        return channel, msg

    def chat_update(self, args: Args) -> dict[str, Any]:
        channel, msg = self._own_message(args, "cant_update_message")
        text, blocks, attachments, warning = _message_body(args)
        self._edit(msg, text, blocks, attachments)
        return self._ok({"channel": channel["id"], "ts": msg["ts"], "text": msg["text"],
                         "message": self._api_message(msg)}, warning)

    def chat_delete(self, args: Args) -> dict[str, Any]:
        channel, msg = self._own_message(args, "cant_delete_message")
        msg["deleted"] = True
        return self._ok({"channel": channel["id"], "ts": msg["ts"]})

    def chat_post_ephemeral(self, args: Args) -> dict[str, Any]:
        _required(args, "channel", "user")
        channel = self._writable_channel(args["channel"])
        text, blocks, attachments, warning = _message_body(args)
        ts = self._next_ts()
        self._ephemerals.append({"channel": channel["id"], "user": str(args["user"]), "text": text or "",
                                 "blocks": copy.deepcopy(blocks) or [], "via": "chat.postEphemeral",
                                 "message_ts": ts, "thread_ts": args.get("thread_ts") or None})
        return self._ok({"message_ts": ts}, warning)

    def chat_get_permalink(self, args: Args) -> dict[str, Any]:
        _required(args, "channel", "message_ts")
        channel = self._channel(args["channel"])
        msg = self._find(channel["id"], str(args["message_ts"]))
        if msg is None:
            raise ApiError("message_not_found")
        link = f"https://{self.team_domain}.slack.com/archives/{channel['id']}/p{msg['ts'].replace('.', '')}"
        if msg.get("thread_ts") and msg["thread_ts"] != msg["ts"]:
            link += f"?thread_ts={msg['thread_ts']}&cid={channel['id']}"
        return self._ok({"channel": channel["id"], "permalink": link})

    def users_info(self, args: Args) -> dict[str, Any]:
        _required(args, "user")
        user = self.users.get(str(args["user"]))
        if user is None:
            raise ApiError("user_not_found")
        return self._ok({"user": {
            "id": user["id"], "team_id": self.team_id, "name": user["name"], "real_name": user["name"],
            "deleted": False, "is_bot": user["is_bot"], "is_admin": False, "tz": "Etc/UTC",
            "profile": {"display_name": user["name"], "real_name": user["name"]},
        }})

    def usergroups_users_list(self, args: Args) -> dict[str, Any]:
        _required(args, "usergroup")
        group = self.usergroups.get(str(args["usergroup"]))
        if group is None:
            raise ApiError("no_such_subteam")
        return self._ok({"users": list(group["users"])})

    def views_open(self, args: Args) -> dict[str, Any]:
        _required(args, "trigger_id", "view")
        view = _json_arg(args, "view", "invalid_arguments")
        trigger = self._triggers.get(str(args["trigger_id"]))
        if trigger is None:
            raise ApiError("invalid_trigger_id")
        if trigger["used"]:
            raise ApiError("exchanged_trigger_id")
        if time.monotonic() - trigger["issued"] > TRIGGER_TTL:
            raise ApiError("expired_trigger_id")
        problems = _view_problems(view)
        if problems:
            raise ApiError("invalid_arguments", response_metadata={"messages": problems})
        trigger["used"] = True
        opened = {"id": f"V{next(self._ids):010d}", "team_id": self.team_id, "type": view["type"],
                  "title": view["title"], "blocks": view.get("blocks", []), "close": view.get("close"),
                  "submit": view.get("submit"), "private_metadata": view.get("private_metadata", ""),
                  "callback_id": view.get("callback_id", ""), "state": {"values": {}},
                  "hash": secrets.token_hex(8), "clear_on_close": False, "notify_on_close": False,
                  "root_view_id": None, "previous_view_id": None, "app_id": "A0EDGEAPP",
                  "external_id": view.get("external_id", ""), "app_installed_team_id": self.team_id,
                  "bot_id": self.bot_id}
        opened["root_view_id"] = opened["id"]
        self._views.append({"user": trigger["user"], "trigger_id": args["trigger_id"], "view": copy.deepcopy(opened)})
        return self._ok({"view": opened})

    # -- files: the external upload flow ---------------------------------------------------------------------------
    # https://docs.slack.dev/reference/methods/files.getUploadURLExternal and …/files.completeUploadExternal:
    # get a URL for ``filename`` of ``length`` bytes, POST the bytes to it, then complete the upload, which shares the
    # file in a channel (or thread). Both methods need the ``files:write`` scope. Modelled strictly: the URL takes one
    # POST, of exactly ``length`` bytes (raw bytes; multipart is not modelled); a file id completes once, only after
    # its bytes arrived, and the file shows in the channel/thread only when the upload completes.
    def _need_scope(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ApiError("missing_scope", needed=scope, provided=",".join(sorted(self.scopes)))

    def files_get_upload_url_external(self, args: Args) -> dict[str, Any]:
        self._need_scope("files:write")
        _required(args, "filename", "length")
        try:
            length = int(str(args["length"]))
        except ValueError:
            raise ApiError("invalid_arguments", response_metadata={"messages": [
                "[ERROR] must be an integer [json-pointer:/length]"]}) from None
        if length <= 0:
            raise ApiError("missing_argument")  # Slack's answer to length 0
        file_id = f"F{next(self._ids):08d}"
        key = secrets.token_urlsafe(16)
        self._uploads[key] = {"file_id": file_id, "filename": str(args["filename"]), "length": length,
                              "state": "waiting"}
        self._files[file_id] = {"id": file_id, "name": str(args["filename"]), "length": length, "data": None,
                                "completed": False, "shares": []}
        return self._ok({"upload_url": f"{self.upload_base}{key}", "file_id": file_id})

    def upload(self, key: str, data: bytes) -> tuple[int, str]:
        """A POST of a file's bytes to its upload URL: (HTTP status, plain-text answer)."""
        with self.lock:
            ticket = self._uploads.get(key)
            if ticket is None:
                return 404, "upload_url_not_found"
            if ticket["state"] != "waiting":
                return 410, "upload_url_used"
            ticket["state"] = "used"
            if len(data) != ticket["length"]:
                return 400, f"length_mismatch: expected {ticket['length']} bytes, got {len(data)}"
            self._files[ticket["file_id"]]["data"] = bytes(data)
            return 200, f"OK - {len(data)}"

    def files_complete_upload_external(self, args: Args) -> dict[str, Any]:
        self._need_scope("files:write")
        _required(args, "files")
        files = _json_arg(args, "files", "invalid_arguments")
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) and f.get("id") for f in files):
            raise ApiError("invalid_arguments", response_metadata={"messages": [
                "[ERROR] must be a non-empty array of objects with an id [json-pointer:/files]"]})
        thread_ts = args.get("thread_ts") or None
        if thread_ts and not args.get("channel_id"):
            raise ApiError("invalid_arguments", response_metadata={"messages": [
                "[ERROR] thread_ts needs channel_id [json-pointer:/thread_ts]"]})
        found = [self._files.get(str(f["id"])) for f in files]
        if any(f is None or f["data"] is None or f["completed"] for f in found):
            raise ApiError("file_not_found")
        channel = self._writable_channel(args["channel_id"]) if args.get("channel_id") else None
        shown = []
        for entry, record in zip(files, found, strict=True):
            assert record is not None
            record["completed"] = True
            record["title"] = str(entry.get("title") or record["name"])
            shown.append({"id": record["id"], "name": record["name"], "title": record["title"],
                          "size": len(record["data"])})
        if channel is not None:
            msg = self._add_message(channel["id"], args.get("initial_comment") or "", None, None, thread_ts,
                                    self.bot_user_id)
            msg["files"] = copy.deepcopy(shown)
            for record in found:
                assert record is not None
                record["shares"].append({"channel": channel["id"], "ts": msg["ts"], "thread_ts": thread_ts})
        return self._ok({"files": shown})

    def file(self, file_id: str) -> dict[str, Any] | None:
        """A file as the workspace holds it (``data``: its bytes; ``completed``; ``shares``), for tests."""
        with self.lock:
            found = self._files.get(file_id)
            return copy.deepcopy(found) if found else None

    def files(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._files.values()))

    # -- response_url --------------------------------------------------------------------------------------------
    def respond(self, key: str, body: dict[str, Any]) -> tuple[int, str]:
        """A post to a response_url: (HTTP status, plain-text body) the way hooks.slack.com answers."""
        with self.lock:
            entry = self._response_urls.get(key)
            if entry is None:
                return 404, "no_service"
            if time.monotonic() - entry["issued"] > RESPONSE_URL_TTL:
                return 404, "expired_url"
            if entry["uses"] >= RESPONSE_URL_USES:
                return 404, "used_url"
            channel_id, message_ts = entry["channel"], entry["message_ts"]
            delete, replace = _bool(body.get("delete_original")), _bool(body.get("replace_original"))
            text, blocks, attachments = body.get("text"), body.get("blocks"), body.get("attachments")
            if not delete:
                try:
                    check_message(text, blocks, attachments)
                except BlockError as exc:
                    return 400, exc.error
            original = self._find(channel_id, message_ts) if message_ts else None
            if (delete or replace) and message_ts and original is None:
                return 404, "message_not_found"
            entry["uses"] += 1
            if delete and original is not None:
                original["deleted"] = True
            elif replace and original is not None:
                self._edit(original, text, blocks, attachments)
            elif body.get("response_type") == "in_channel":
                self._add_message(channel_id, text, blocks, attachments, body.get("thread_ts"), self.bot_user_id)
            else:
                self._ephemerals.append({"channel": channel_id, "user": entry["user"], "text": text or "",
                                         "blocks": copy.deepcopy(blocks) or [], "via": "response_url",
                                         "message_ts": self._next_ts(), "thread_ts": body.get("thread_ts"),
                                         "replace_original": replace, "delete_original": delete})
            return 200, "ok"


def _view_problems(view: Any) -> list[str]:
    """What views.open refuses in a view (answered as ``invalid_arguments`` with these messages)."""
    if not isinstance(view, dict):
        return ["[ERROR] must be an object [json-pointer:/view]"]
    problems: list[str] = []
    if view.get("type") != "modal":
        problems.append("[ERROR] must be 'modal' [json-pointer:/view/type]")
    title = view.get("title")
    if not isinstance(title, dict) or title.get("type") != "plain_text" or not isinstance(title.get("text"), str):
        problems.append("[ERROR] must provide a plain_text title [json-pointer:/view/title]")
    elif len(title["text"]) > VIEW_TITLE_CHARS:
        problems.append(f"[ERROR] must be less than {VIEW_TITLE_CHARS + 1} characters [json-pointer:/view/title/text]")
    if len(str(view.get("private_metadata", ""))) > PRIVATE_METADATA_CHARS:
        problems.append("[ERROR] must be less than 3001 characters [json-pointer:/view/private_metadata]")
    if len(str(view.get("callback_id", ""))) > 255:
        problems.append("[ERROR] must be less than 256 characters [json-pointer:/view/callback_id]")
    blocks = view.get("blocks", [])
    try:
        validate_blocks(blocks, max_blocks=MAX_VIEW_BLOCKS)
    except BlockError as exc:
        problems += exc.messages
    if isinstance(blocks, list) and any(isinstance(b, dict) and b.get("type") == "input" for b in blocks) \
            and not view.get("submit"):
        problems.append("[ERROR] must provide submit when the view has input blocks [json-pointer:/view/submit]")
    return problems
