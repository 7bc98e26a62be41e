"""Render what the Slack stand-in holds (messages, blocks, ephemerals) as terminal text, the way a user sees it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

ButtonLabel = Callable[[dict[str, Any], dict[str, Any]], str]
"""How an element of an actions block shows: ``(block, element) -> text`` (the console numbers them)."""

EMOJI = {
    ":white_check_mark:": "✔", ":x:": "✘", ":hourglass_flowing_sand:": "⧗", ":white_circle:": "○",
    ":heavy_minus_sign:": "–", ":inbox_tray:": "📥", ":hammer_and_wrench:": "🛠", ":outbox_tray:": "📤",
    ":raised_hand:": "✋", ":satellite_antenna:": "📡", ":warning:": "⚠", ":no_entry:": "⛔", ":hourglass:": "⌛",
    ":octagonal_sign:": "🛑", ":leftwards_arrow_with_hook:": "↩",
}
_USER_RE = re.compile(r"<@([A-Z0-9]+)>")
_CHANNEL_RE = re.compile(r"<#([A-Z0-9]+)(?:\|[^>]*)?>")
_SUBTEAM_RE = re.compile(r"<!subteam\^([A-Z0-9]+)(?:\|[^>]*)?>")
_DATE_RE = re.compile(r"<!date\^\d+\^[^|>]*\|([^>]*)>")
"""``<!date^EPOCH^FORMAT|fallback>``: Slack shows it in the reader's time zone; the terminal shows the fallback."""


def mrkdwn(text: str, users: dict[str, str] | None = None) -> str:
    for code, symbol in EMOJI.items():
        text = text.replace(code, symbol)
    text = _USER_RE.sub(lambda m: "@" + (users or {}).get(m.group(1), m.group(1)), text)
    text = _DATE_RE.sub(lambda m: m.group(1), text)
    text = _SUBTEAM_RE.sub(lambda m: "@" + (users or {}).get(m.group(1), m.group(1)), text)
    text = _CHANNEL_RE.sub(lambda m: "#" + (users or {}).get(m.group(1), m.group(1)), text)
    text = text.replace("```", "").replace("*", "")
    return text


def _button(block: dict[str, Any], element: dict[str, Any]) -> str:
    return f"[ {element.get('text', {}).get('text', '?')} ]"


def block_text(block: dict[str, Any], button: ButtonLabel = _button) -> list[str]:
    kind = block.get("type")
    if kind in ("section", "header") and "text" in block:
        lines = [block["text"]["text"]]
        lines += [f["text"] for f in block.get("fields", [])]
        return lines
    if kind == "context":
        return ["  " + " ".join(e.get("text", "") for e in block.get("elements", []))]
    if kind == "actions":
        return ["  " + "  ".join(button(block, e) for e in block.get("elements", []))]
    if kind == "divider":
        return ["  ───"]
    return []


def message(msg: dict[str, Any], users: dict[str, str] | None = None, indent: str = "",
            button: ButtonLabel = _button) -> str:
    blocks = msg.get("blocks") or []
    raw = [line for b in blocks for line in block_text(b, button)] if blocks else [msg.get("text", "")]
    text = mrkdwn("\n".join(raw), users)
    edited = " (edited)" if msg.get("edits") else ""
    lines = text.splitlines() or [""]
    out = [f"{indent}{lines[0]}{edited}"] + [f"{indent}  {line}" for line in lines[1:]]
    return "\n".join(out)


def thread(messages: list[dict[str, Any]], users: dict[str, str] | None = None, button: ButtonLabel = _button) -> str:
    """Root message first, then the replies indented, as Slack's thread view shows them."""
    if not messages:
        return "(no messages)"
    root, replies = messages[0], messages[1:]
    parts = [message(root, users, button=button), "  │"]
    parts += [message(reply, users, indent="  ├ ", button=button) for reply in replies]
    return "\n".join(parts)
