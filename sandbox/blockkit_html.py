"""Render Block Kit messages as HTML styled like Slack's message view (pure: blocks in, an HTML page out).

The subset edgebot's builders use (``edgebot/messages.py``, ``approval_messages.py``, ``fleet_messages.py``):
``section`` (text, fields, a button accessory), ``header``, ``context``, ``divider``, ``actions`` (buttons, default,
``primary`` and ``danger``), and Slack's mrkdwn: ``*bold*``, ``_italic_``, ``~strike~``, `` `code` ``, ```` ``` ````
blocks, ``<@U…>``/``<#C…>``/``<!subteam^S…>``/``<!here>`` mentions shown as names, ``<!date^…|fallback>``,
``<url|text>`` links (http, https and mailto only), ``:emoji:`` shortcodes and the ``&lt;`` ``&gt;`` ``&amp;`` escapes.

Text in the blocks is hostile (a Dockerfile's output, a commit message, a node's error): every character of it leaves
here through :func:`html.escape`; the only markup in the page is what this module writes. ``make pictures``
(``sandbox/pictures.py``) screenshots the page with headless Chromium.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

EMOJI = {
    "white_check_mark": "✅", "x": "❌", "hourglass_flowing_sand": "⏳", "hourglass": "⌛", "white_circle": "⚪",
    "heavy_minus_sign": "➖", "inbox_tray": "📥", "outbox_tray": "📤", "hammer_and_wrench": "🛠️", "raised_hand": "✋",
    "satellite_antenna": "📡", "warning": "⚠️", "no_entry": "⛔", "octagonal_sign": "🛑",
    "leftwards_arrow_with_hook": "↩️", "globe_with_meridians": "🌐", "lock": "🔒", "mag": "🔍", "repeat": "🔁",
    "rotating_light": "🚨", "tada": "🎉", "rocket": "🚀", "eyes": "👀",
}
"""Slack shortcodes → Unicode (Slack draws its own images; Chromium draws these with the colour emoji font)."""

APP_NAME = "edgebot"
LINK_SCHEMES = ("http://", "https://", "mailto:")

_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")
_PRIVATE = re.compile("[\ue000\ue001]")
_TOKEN = re.compile(r"```(?P<pre>.*?)```\n?|`(?P<code>[^`\n]+)`|<(?P<ctl>[^<>\n]+)>", re.S)
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")
_SHORTCODE = re.compile(r":([a-z0-9_+-]+):")


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def slack_unescape(text: str) -> str:
    """Slack's three escapes back to characters (``&amp;`` last, so ``&amp;lt;`` stays the text ``&lt;``)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def emoji(text: str) -> str:
    return _SHORTCODE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)


def _control(body: str, names: Mapping[str, str]) -> str:
    """One ``<…>`` control sequence of Slack's wire format as HTML."""
    target, _, label = body.partition("|")
    if target.startswith("@"):
        return f'<span class="mention">@{_esc(names.get(target[1:], label or target[1:]))}</span>'
    if target.startswith("#"):
        return f'<span class="mention">#{_esc(names.get(target[1:], label or target[1:]))}</span>'
    if target.startswith("!subteam^"):
        ident = target.removeprefix("!subteam^")
        return f'<span class="mention">@{_esc(names.get(ident, label or ident))}</span>'
    if target in ("!here", "!channel", "!everyone"):
        return f'<span class="mention broadcast">@{_esc(target[1:])}</span>'
    if target.startswith("!date^"):
        return _esc(slack_unescape(label or target))
    if target.startswith(LINK_SCHEMES):
        href = slack_unescape(target)
        return f'<a href="{_esc(href)}">{_esc(slack_unescape(label or target))}</a>'
    return _esc(slack_unescape("<" + body + ">"))


def mrkdwn(text: str, names: Mapping[str, str] | None = None) -> str:
    """Slack mrkdwn → HTML. Whitespace is kept (the containers have ``white-space: pre-wrap``, as in Slack)."""
    names = names or {}
    text = _PRIVATE.sub("", text)
    pieces: list[str] = []

    def hold(fragment: str) -> str:
        pieces.append(fragment)
        return f"\ue000{len(pieces) - 1}\ue001"

    def token(m: re.Match[str]) -> str:
        if m.group("pre") is not None:
            return hold(f'<pre class="pre">{_esc(slack_unescape(m.group("pre").strip(chr(10))))}</pre>')
        if m.group("code") is not None:
            return hold(f'<code class="code">{_esc(slack_unescape(m.group("code")))}</code>')
        return hold(_control(m.group("ctl"), names))

    held = _TOKEN.sub(token, text)
    out = emoji(_esc(slack_unescape(held)))
    out = _BOLD.sub(r"<b>\1</b>", out)
    out = _ITALIC.sub(r"<i>\1</i>", out)
    out = _STRIKE.sub(r"<s>\1</s>", out)
    return _PLACEHOLDER.sub(lambda m: pieces[int(m.group(1))], out)


def text_object(obj: Mapping[str, Any] | None, names: Mapping[str, str] | None = None) -> str:
    """A Block Kit text object: ``mrkdwn`` formatted, ``plain_text`` escaped (with emoji unless ``emoji: false``)."""
    if not obj:
        return ""
    raw = str(obj.get("text", ""))
    if obj.get("type") == "mrkdwn":
        return mrkdwn(raw, names)
    out = _esc(raw)
    return emoji(out) if obj.get("emoji", True) else out


def button(element: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str:
    style = element.get("style")
    kind = f" btn-{style}" if style in ("primary", "danger") else ""
    label = text_object(element.get("text"), names)
    if element.get("type") != "button":
        return f'<span class="btn btn-select">{label or _esc(str(element.get("type", "?")))} ▾</span>'
    return f'<span class="btn{kind}" role="button">{label}</span>'


def block(blk: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str:
    """One block as HTML; a block type this renderer does not know shows as a visible placeholder, not nothing."""
    kind = blk.get("type")
    if kind == "section":
        parts = []
        if blk.get("text"):
            parts.append(f'<div class="text">{text_object(blk["text"], names)}</div>')
        if blk.get("fields"):
            fields = "".join(f'<div class="text">{text_object(f, names)}</div>' for f in blk["fields"])
            parts.append(f'<div class="fields">{fields}</div>')
        accessory = blk.get("accessory")
        side = f'<div class="accessory">{button(accessory, names)}</div>' if accessory else ""
        return f'<div class="block section"><div class="main">{"".join(parts)}</div>{side}</div>'
    if kind == "header":
        return f'<div class="block header">{text_object(blk.get("text"), names)}</div>'
    if kind == "context":
        items = "".join(f"<span>{text_object(e, names)}</span>" for e in blk.get("elements", [])
                        if e.get("type") in ("mrkdwn", "plain_text"))
        return f'<div class="block context">{items}</div>'
    if kind == "divider":
        return '<div class="block divider"><hr></div>'
    if kind == "actions":
        buttons = "".join(button(e, names) for e in blk.get("elements", []))
        return f'<div class="block actions">{buttons}</div>'
    return f'<div class="block unknown">[{_esc(str(kind))} block]</div>'


def message(msg: Mapping[str, Any], names: Mapping[str, str] | None = None, *, time: str = "10:42 AM",
            compact: bool = False) -> str:
    """One bot message: avatar, name with the APP badge and time, then its blocks (or its ``text`` without blocks).

    ``compact`` is Slack's look for a follow-up message from the same sender: no avatar or name, the time on hover.
    """
    blocks = msg.get("blocks") or []
    fallback = {"type": "section", "text": {"type": "mrkdwn", "text": str(msg.get("text", ""))}}
    body = "".join(block(b, names) for b in (blocks or [fallback]))
    if compact:
        return f'<div class="msg compact"><div class="gutter"></div><div class="content">{body}</div></div>'
    head = (f'<div class="head"><span class="name">{_esc(APP_NAME)}</span><span class="badge">APP</span>'
            f'<span class="time">{_esc(time)}</span></div>')
    return (f'<div class="msg"><div class="gutter"><div class="avatar" aria-hidden="true">eb</div></div>'
            f'<div class="content">{head}{body}</div></div>')


def page(messages: Sequence[Mapping[str, Any]], names: Mapping[str, str] | None = None, *, title: str = "",
         channel: str = "releases", thread: bool = False, times: Sequence[str] = (), width: int = 760) -> str:
    """A whole HTML page: a channel (``thread=False``) or a thread pane with the root first and its replies under a
    "N replies" rule (``thread=True``). The page has no script: what Chromium draws is this HTML and CSS alone."""
    def at(i: int) -> str:
        return times[i] if i < len(times) else "10:42 AM"

    rendered = []
    for i, msg in enumerate(messages):
        rendered.append(message(msg, names, time=at(i), compact=i > 0 and not thread))
        if thread and i == 0 and len(messages) > 1:
            n = len(messages) - 1
            rendered.append(f'<div class="replies"><span>{n} {"reply" if n == 1 else "replies"}</span><hr></div>')
    if thread:
        top = f'<div class="pane-head"><b>Thread</b><span>#{_esc(channel)}</span></div>'
    else:
        top = f'<div class="pane-head"><b>#{_esc(channel)}</b></div>' if title else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{_esc(title)}</title><style>{CSS.replace('WIDTH', str(width))}</style></head>"
        f'<body><div class="pane">{top}{"".join(rendered)}</div></body></html>\n'
    )


CSS = """
* { box-sizing: border-box; }
html, body { margin: 0; padding: 0; background: #ffffff; }
body { width: WIDTHpx; font-family: Lato, "Slack-Lato", "Helvetica Neue", Helvetica, "Segoe UI", Arial, sans-serif,
  "Noto Color Emoji", "Apple Color Emoji"; font-size: 15px; line-height: 1.46668; color: #1d1c1d;
  -webkit-font-smoothing: antialiased; }
.pane { padding: 4px 0 12px; }
.pane-head { display: flex; align-items: baseline; gap: 8px; padding: 10px 20px 10px; border-bottom: 1px solid #e8e8e8;
  margin-bottom: 6px; font-size: 18px; font-weight: 900; }
.pane-head span { font-size: 13px; font-weight: 400; color: #616061; }
.msg { display: flex; padding: 8px 20px; }
.msg.compact { padding-top: 2px; }
.gutter { flex: 0 0 36px; margin-right: 8px; }
.avatar { width: 36px; height: 36px; border-radius: 6px; background: linear-gradient(135deg, #1264a3, #0b4c7c);
  color: #fff; font-weight: 900; font-size: 15px; display: flex; align-items: center; justify-content: center;
  letter-spacing: 0.5px; }
.content { flex: 1 1 auto; min-width: 0; }
.head { display: flex; align-items: baseline; gap: 4px; line-height: 1.3; margin-bottom: 1px; }
.name { font-weight: 900; font-size: 15px; }
.badge { font-size: 10px; font-weight: 700; color: #616061; background: rgba(29,28,29,0.13); border-radius: 2px;
  padding: 1px 3px; margin-left: 2px; position: relative; top: -1px; }
.time { font-size: 12px; color: #616061; margin-left: 4px; }
.block { margin: 4px 0; }
.section { display: flex; gap: 12px; }
.section .main { flex: 1 1 auto; min-width: 0; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
.fields { display: grid; grid-template-columns: 1fr 1fr; gap: 8px 16px; margin-top: 4px; }
.header { font-size: 18px; font-weight: 900; white-space: pre-wrap; }
.context { display: flex; flex-wrap: wrap; gap: 4px 8px; font-size: 13px; color: #616061; line-height: 1.4;
  white-space: pre-wrap; overflow-wrap: anywhere; }
.context .code { font-size: 11px; }
.divider hr { border: 0; border-top: 1px solid #dddddd; margin: 10px 0; }
.actions { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 8px; }
b { font-weight: 900; }
.code { font-family: Monaco, Menlo, Consolas, "DejaVu Sans Mono", "Courier New", monospace; font-size: 12px;
  color: #e01e5a; background: rgba(29,28,29,0.04); border: 1px solid rgba(29,28,29,0.13); border-radius: 3px;
  padding: 2px 3px 1px; overflow-wrap: anywhere; }
.pre { font-family: Monaco, Menlo, Consolas, "DejaVu Sans Mono", "Courier New", monospace; font-size: 12px;
  line-height: 1.5; background: rgba(29,28,29,0.04); border: 1px solid rgba(29,28,29,0.13); border-radius: 4px;
  padding: 8px; margin: 4px 0; white-space: pre-wrap; overflow-wrap: anywhere; }
.mention { color: #1264a3; background: rgba(29,155,209,0.1); border-radius: 3px; padding: 0 2px; }
.mention.broadcast { color: #7c5b00; background: rgba(242,199,68,0.4); }
a { color: #1264a3; text-decoration: none; }
.btn { display: inline-flex; align-items: center; height: 28px; padding: 0 12px; border-radius: 4px; font-size: 13px;
  font-weight: 700; border: 1px solid rgba(29,28,29,0.3); background: #fff; color: #1d1c1d; white-space: nowrap; }
.btn-primary { background: #007a5a; border-color: #007a5a; color: #fff; }
.btn-danger { color: #e01e5a; }
.btn-select { font-weight: 400; }
.unknown { color: #616061; font-style: italic; }
.replies { display: flex; align-items: center; gap: 8px; padding: 6px 20px; color: #616061; font-size: 13px; }
.replies hr { flex: 1 1 auto; border: 0; border-top: 1px solid #dddddd; }
"""
