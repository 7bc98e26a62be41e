"""The limits the real Slack Web API enforces on messages and on call rates, for the Slack stand-in.

Why a separate module: a bot that renders a 51-block message or a 3001-character section works against a lenient
fake and fails in production with ``invalid_blocks``; a reporter that edits a message on every log line works
locally and drowns in 429s against a real workspace. The stand-in applies these rules to every message-writing call
so tests see the same refusals Slack gives. Numbers are Slack's documented Block Kit and tier limits.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Documented per-method limits (requests, per seconds). chat.postMessage is "special" (about one message per second
# per channel, bursts allowed); the others are Tier 2 (20/min), Tier 3 (50/min) or Tier 4 (100/min).
REAL_TIER_LIMITS: dict[str, tuple[int, float]] = {
    "chat.postMessage": (60, 60.0),
    "chat.update": (50, 60.0),
    "chat.delete": (50, 60.0),
    "chat.postEphemeral": (100, 60.0),
    "chat.getPermalink": (100, 60.0),
    "conversations.info": (50, 60.0),
    "users.info": (100, 60.0),
    "usergroups.users.list": (20, 60.0),
    "views.open": (100, 60.0),
    "auth.test": (100, 60.0),
    "files.getUploadURLExternal": (100, 60.0),  # Tier 4
    "files.completeUploadExternal": (100, 60.0),  # Tier 4
}

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_TEXT_CHARS = 40_000
SECTION_TEXT_CHARS = 3000
SECTION_FIELD_CHARS = 2000
SECTION_MAX_FIELDS = 10
HEADER_TEXT_CHARS = 150
CONTEXT_MAX_ELEMENTS = 10
ACTIONS_MAX_ELEMENTS = 25
BUTTON_TEXT_CHARS = 75
BUTTON_VALUE_CHARS = 2000
ID_CHARS = 255
KNOWN_BLOCK_TYPES = frozenset({
    "section", "header", "context", "actions", "divider", "image", "input", "rich_text", "file", "video",
    "markdown", "context_actions", "call",
})
TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})


class BlockError(ValueError):
    """A Block Kit violation; ``error`` is Slack's error code, ``messages`` its response_metadata.messages."""

    def __init__(self, error: str, messages: list[str]) -> None:
        super().__init__(f"{error}: {'; '.join(messages)}")
        self.error = error
        self.messages = messages


@dataclass
class _Problems:
    items: list[str] = field(default_factory=list)

    def add(self, text: str, pointer: str) -> None:
        self.items.append(f"[ERROR] {text} [json-pointer:{pointer}]")


def _text_object(obj: Any, pointer: str, limit: int, problems: _Problems, *, plain_only: bool = False) -> None:
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        problems.add("must provide an object with a string text", pointer)
        return
    kind = obj.get("type")
    allowed = {"plain_text"} if plain_only else TEXT_TYPES
    if kind not in allowed:
        problems.add(f"must be one of {sorted(allowed)}", pointer + "/type")
    if len(obj["text"]) > limit:
        problems.add(f"must be less than {limit + 1} characters", pointer + "/text")
    if not obj["text"]:
        problems.add("must be more than 0 characters", pointer + "/text")


def _section(block: dict[str, Any], pointer: str, problems: _Problems) -> None:
    fields = block.get("fields")
    if "text" not in block and not fields:
        problems.add("must provide either text or fields", pointer)
    if "text" in block:
        _text_object(block["text"], pointer + "/text", SECTION_TEXT_CHARS, problems)
    if fields is not None:
        if not isinstance(fields, list) or len(fields) > SECTION_MAX_FIELDS:
            problems.add(f"must be a list of at most {SECTION_MAX_FIELDS} items", pointer + "/fields")
        else:
            for i, item in enumerate(fields):
                _text_object(item, f"{pointer}/fields/{i}", SECTION_FIELD_CHARS, problems)


def _elements(block: dict[str, Any], pointer: str, limit: int, problems: _Problems) -> list[Any]:
    elements = block.get("elements")
    if not isinstance(elements, list) or not elements:
        problems.add("must provide a non-empty list of elements", pointer + "/elements")
        return []
    if len(elements) > limit:
        problems.add(f"must be at most {limit} items", pointer + "/elements")
    return elements


def _actions(block: dict[str, Any], pointer: str, problems: _Problems) -> None:
    action_ids: set[str] = set()
    for i, element in enumerate(_elements(block, pointer, ACTIONS_MAX_ELEMENTS, problems)):
        where = f"{pointer}/elements/{i}"
        if not isinstance(element, dict) or "type" not in element:
            problems.add("must be an element object", where)
            continue
        action_id = element.get("action_id")
        if action_id is not None:
            if len(str(action_id)) > ID_CHARS:
                problems.add(f"must be less than {ID_CHARS + 1} characters", where + "/action_id")
            if action_id in action_ids:
                problems.add("action_id must be unique within the block", where + "/action_id")
            action_ids.add(str(action_id))
        if element["type"] == "button":
            _text_object(element.get("text"), where + "/text", BUTTON_TEXT_CHARS, problems, plain_only=True)
            if len(str(element.get("value", ""))) > BUTTON_VALUE_CHARS:
                problems.add(f"must be less than {BUTTON_VALUE_CHARS + 1} characters", where + "/value")


def validate_blocks(blocks: Any, *, max_blocks: int = MAX_MESSAGE_BLOCKS) -> None:
    """Raise :class:`BlockError` (``invalid_blocks``) for anything Slack's Block Kit validation refuses."""
    problems = _Problems()
    if not isinstance(blocks, list):
        raise BlockError("invalid_blocks_format", ["[ERROR] must be an array [json-pointer:/blocks]"])
    if len(blocks) > max_blocks:
        problems.add(f"no more than {max_blocks} items allowed", "/blocks")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        pointer = f"/blocks/{i}"
        if not isinstance(block, dict):
            problems.add("must be an object", pointer)
            continue
        kind = block.get("type")
        if kind not in KNOWN_BLOCK_TYPES:
            problems.add(f"unsupported type: {kind!r}", pointer + "/type")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if len(str(block_id)) > ID_CHARS:
                problems.add(f"must be less than {ID_CHARS + 1} characters", pointer + "/block_id")
            if block_id in block_ids:
                problems.add("duplicate block_id", pointer + "/block_id")
            block_ids.add(str(block_id))
        if kind == "section":
            _section(block, pointer, problems)
        elif kind == "header":
            _text_object(block.get("text"), pointer + "/text", HEADER_TEXT_CHARS, problems, plain_only=True)
        elif kind == "context":
            _elements(block, pointer, CONTEXT_MAX_ELEMENTS, problems)
        elif kind == "actions":
            _actions(block, pointer, problems)
    if problems.items:
        raise BlockError("invalid_blocks", problems.items)


def check_message(text: Any, blocks: Any, attachments: Any) -> str | None:
    """Slack's checks on a message body. Returns a warning code or None; raises :class:`BlockError` on refusal.

    Order matters and follows Slack: an empty message is ``no_text``; an over-long top-level text is
    ``msg_too_long``; bad blocks are ``invalid_blocks``; blocks without a fallback text are accepted with a warning
    (notifications and screen readers then show nothing useful).
    """
    has_text = isinstance(text, str) and text != ""
    if not has_text and not blocks and not attachments:
        raise BlockError("no_text", [])
    if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
        raise BlockError("msg_too_long", [f"[ERROR] must be less than {MAX_TEXT_CHARS + 1} characters"])
    if blocks is not None:
        validate_blocks(blocks)
    if blocks and not has_text:
        return "missing_text_or_fallback_or_attachments"
    return None


class RateLimiter:
    """Fixed-window request counts per (team, method), like Slack's per-workspace method tiers.

    ``check`` returns 0 when the call may go ahead, else the whole seconds until the window resets (at least 1):
    that is the ``Retry-After`` Slack sends with its 429.
    """

    def __init__(self, limits: dict[str, tuple[int, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = dict(limits or {})
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}
        self._clock = clock
        self._lock = threading.Lock()

    def set_limit(self, method: str, count: int | None, per: float = 60.0) -> None:
        with self._lock:
            if count is None:
                self._limits.pop(method, None)
            else:
                self._limits[method] = (int(count), float(per))
            self._windows = {k: v for k, v in self._windows.items() if k[1] != method}

    def limits(self) -> dict[str, tuple[int, float]]:
        with self._lock:
            return dict(self._limits)

    def check(self, team_id: str, method: str) -> int:
        with self._lock:
            limit = self._limits.get(method)
            if limit is None:
                return 0
            count, per = limit
            now = self._clock()
            start, used = self._windows.get((team_id, method), (now, 0))
            if now - start >= per:
                start, used = now, 0
            if used >= count:
                return max(1, math.ceil(start + per - now))
            self._windows[(team_id, method)] = (start, used + 1)
            return 0
