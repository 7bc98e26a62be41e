"""What a Slack client shows of one channel, as it changes: new and edited messages, buttons, ephemerals, modals.

The console and the scripted demo poll the Slack stand-in (which holds exactly what the bot and the workers sent to
the Web API) through a :class:`ChannelView`. Each poll returns only what changed since the last one, rendered as
terminal text; buttons of Block Kit ``actions`` blocks get numbers that stay the same while the message is edited,
so ``click N`` means the same button for as long as it is on the message.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from sandbox import render
from sandbox.slack import SlackStandIn

_RELEASE_RE = re.compile(r"\br-(?:[0-9a-f]{16}|[0-9a-f]{6})\b")


@dataclass(frozen=True)
class Button:
    number: int
    channel_id: str
    message_ts: str
    block_id: str
    action_id: str
    value: str
    label: str
    thread_ts: str
    confirm: str = ""
    """The confirmation dialog Slack shows before sending the click (title and text), if the button has one."""


@dataclass(frozen=True)
class Change:
    """One message that appeared (``new``), was edited (``edited``) or deleted, rendered."""

    kind: str
    thread_label: str
    is_root: bool
    text: str


class ChannelView:
    """Polls the stand-in for one channel; thread-safe (the console polls from a thread and clicks from another)."""

    def __init__(self, slack: SlackStandIn, channel_id: str, channel_name: str, names: dict[str, str]) -> None:
        self.slack = slack
        self.channel_id = channel_id
        self.channel_name = channel_name
        self.names = names
        self._lock = threading.RLock()
        self._shown: dict[str, str] = {}  # ts -> rendered text last shown
        self._where: dict[str, tuple[str, bool]] = {}  # ts -> (thread label, is root), for a later deletion
        self._buttons: dict[tuple[str, str], Button] = {}  # (message_ts, action_id) -> button
        self._live: set[tuple[str, str]] = set()  # buttons on the messages as they are now
        self._seen_ephemerals: set[int] = set()
        self._seen_views: set[str] = set()

    # -- messages ---------------------------------------------------------------------------------------------
    def poll(self) -> list[Change]:
        """Messages that are new, edited or gone since the last poll, in posting order."""
        with self._lock:
            messages = self.slack.messages(self.channel_id)
            roots = {m["ts"]: m for m in messages if _is_root(m)}
            changes: list[Change] = []
            live: set[tuple[str, str]] = set()
            for msg in messages:
                self._number_buttons(msg)
                live.update((msg["ts"], action_id) for action_id in _action_ids(msg))
                text = render.message(msg, self.names, button=self._label_for(msg))
                before = self._shown.get(msg["ts"])
                if before == text:
                    continue
                self._shown[msg["ts"]] = text
                label = self.thread_label(roots.get(msg.get("thread_ts") or msg["ts"]))
                self._where[msg["ts"]] = (label, _is_root(msg))
                changes.append(Change("new" if before is None else "edited", label, _is_root(msg), text))
            present = {m["ts"] for m in messages}
            for ts in [t for t in self._shown if t not in present]:
                del self._shown[ts]
                label, is_root = self._where.pop(ts, ("?", False))
                changes.append(Change("deleted", label, is_root, "(message deleted)"))
            self._live = live
            return changes

    def thread_label(self, root: dict[str, Any] | None) -> str:
        """The release id a thread is about (from its root message), else the root's ts."""
        if root is None:
            return "?"
        found = _RELEASE_RE.search(root.get("text") or "")
        return found.group(0) if found else str(root["ts"])

    def roots(self) -> list[dict[str, Any]]:
        return [m for m in self.slack.messages(self.channel_id) if _is_root(m)]

    def find_root(self, release_id: str | None = None) -> dict[str, Any] | None:
        """The root message of ``release_id``'s thread, or the latest root when no id is given."""
        roots = self.roots()
        if release_id:
            roots = [r for r in roots if self.thread_label(r) == release_id]
        return roots[-1] if roots else None

    def render_thread(self, root_ts: str) -> str:
        with self._lock:
            thread = self.slack.thread(self.channel_id, root_ts)
            for msg in thread:
                self._number_buttons(msg)
            label = self.thread_label(thread[0]) if thread else "?"
            body = render.thread(thread, self.names, button=lambda b, e: self._numbered(thread, b, e))
            return f"#{self.channel_name} · thread {label}\n{body}"

    # -- buttons ----------------------------------------------------------------------------------------------
    def _number_buttons(self, msg: dict[str, Any]) -> None:
        for block in msg.get("blocks") or []:
            if block.get("type") != "actions":
                continue
            for element in block.get("elements") or []:
                action_id = element.get("action_id")
                if element.get("type") != "button" or not action_id or (msg["ts"], action_id) in self._buttons:
                    continue
                label = (element.get("text") or {}).get("text", action_id)
                dialog = element.get("confirm") or {}
                confirm = " ".join(str((dialog.get(k) or {}).get("text", "")) for k in ("title", "text")).strip()
                self._buttons[(msg["ts"], action_id)] = Button(
                    number=len(self._buttons) + 1, channel_id=self.channel_id, message_ts=msg["ts"],
                    block_id=block.get("block_id", ""), action_id=action_id, value=str(element.get("value", "")),
                    label=label, thread_ts=msg.get("thread_ts") or msg["ts"], confirm=confirm)

    def _label_for(self, msg: dict[str, Any]) -> render.ButtonLabel:
        return lambda block, element: self._numbered([msg], block, element)

    def _numbered(self, messages: list[dict[str, Any]], block: dict[str, Any], element: dict[str, Any]) -> str:
        label = (element.get("text") or {}).get("text", "?")
        for msg in messages:
            button = self._buttons.get((msg["ts"], element.get("action_id", "")))
            if button is not None and block in (msg.get("blocks") or []):
                return f"[{button.number}: {label}]"
        return f"[ {label} ]"

    def button(self, number: int) -> tuple[Button | None, bool]:
        """(the button numbered ``number``, whether it is still on its message)."""
        with self._lock:
            self.poll_buttons()
            for key, button in self._buttons.items():
                if button.number == number:
                    return button, key in self._live
            return None, False

    def buttons(self) -> list[Button]:
        """Every button on the channel's messages as they are now, by number."""
        with self._lock:
            self.poll_buttons()
            return sorted((self._buttons[k] for k in self._live), key=lambda b: b.number)

    def latest_button(self, prefix: str, release_id: str | None = None) -> Button | None:
        """The newest live button whose action_id starts with ``prefix`` (in ``release_id``'s thread if given)."""
        with self._lock:
            roots = {m["ts"]: m for m in self.roots()}
            for button in reversed(self.buttons()):
                if not button.action_id.startswith(prefix):
                    continue
                if release_id is None or self.thread_label(roots.get(button.thread_ts)) == release_id:
                    return button
            return None

    def poll_buttons(self) -> None:
        """Refresh which buttons are on the messages now, without marking any message as shown."""
        with self._lock:
            live: set[tuple[str, str]] = set()
            for msg in self.slack.messages(self.channel_id):
                self._number_buttons(msg)
                live.update((msg["ts"], action_id) for action_id in _action_ids(msg))
            self._live = live

    # -- what only one user sees --------------------------------------------------------------------------------
    def ephemerals_for(self, user_id: str) -> list[str]:
        """Ephemeral messages for ``user_id`` not shown yet (chat.postEphemeral and response_url posts)."""
        out: list[str] = []
        with self._lock:
            for index, eph in enumerate(self.slack.ephemerals(self.channel_id)):
                if index in self._seen_ephemerals or eph.get("user") != user_id:
                    continue
                self._seen_ephemerals.add(index)
                out.append(render.message(eph, self.names))
            return out

    def new_views_for(self, user_id: str) -> list[dict[str, Any]]:
        """Modals opened for ``user_id`` (views.open) since the last call."""
        out: list[dict[str, Any]] = []
        with self._lock:
            for entry in self.slack.views():
                view = entry["view"]
                if entry["user"] != user_id or view["id"] in self._seen_views:
                    continue
                self._seen_views.add(view["id"])
                out.append(view)
            return out


def format_change(change: Change, channel_name: str) -> str:
    """``+`` new, ``~`` edited in place, ``-`` deleted; roots as ``#channel``, replies under their release id."""
    marker = {"new": "+", "edited": "~", "deleted": "-"}[change.kind]
    where = f"#{channel_name}" if change.is_root else f"{change.thread_label} ├"
    prefix = f"{marker} {where:<12} "
    lines = change.text.splitlines() or [""]
    return "\n".join([prefix + lines[0], *(" " * len(prefix) + line for line in lines[1:])])


def render_view(view: dict[str, Any], names: dict[str, str]) -> str:
    """A modal as text: its title, its blocks, and each input's label."""
    lines = [f"┌─ modal: {(view.get('title') or {}).get('text', '')}"]
    for block in view.get("blocks") or []:
        if block.get("type") == "input":
            label = (block.get("label") or {}).get("text", "")
            optional = " (optional)" if block.get("optional") else ""
            lines.append(f"│ ▭ {label}{optional}")
        else:
            lines += [f"│ {line}" for line in render.mrkdwn("\n".join(render.block_text(block)), names).splitlines()]
    submit = (view.get("submit") or {}).get("text", "Submit")
    lines.append(f"└─ [{submit}]  [{(view.get('close') or {}).get('text', 'Cancel')}]")
    return "\n".join(lines)


def view_inputs(view: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(block_id, action_id, element type) of each input of a modal, in order."""
    found = []
    for block in view.get("blocks") or []:
        element = block.get("element") or {}
        if block.get("type") == "input" and element.get("action_id"):
            found.append((str(block.get("block_id", "")), str(element["action_id"]), str(element.get("type", ""))))
    return found


def _is_root(msg: dict[str, Any]) -> bool:
    return not msg.get("thread_ts") or msg.get("thread_ts") == msg.get("ts")


def _action_ids(msg: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in msg.get("blocks") or [] if b.get("type") == "actions"
            for e in b.get("elements") or [] if e.get("type") == "button" and e.get("action_id")]


def has_actions(msg: dict[str, Any], prefix: str) -> bool:
    """Whether the message carries a button whose action_id starts with ``prefix``."""
    return any(a.startswith(prefix) for a in _action_ids(msg))
