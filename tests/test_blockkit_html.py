"""The Block Kit → HTML renderer behind ``make pictures`` (pure, no browser): Slack's mrkdwn, the block types edgebot
uses, and hostile text, which must reach the page as text and never as markup."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sandbox import blockkit_html as bk
from sandbox import pictures

SNAPSHOTS = Path(__file__).parent / "snapshots"
ALL = sorted(p.stem for p in SNAPSHOTS.glob("*.json"))
NAMES = {"U0ALICE": "alice", "S0LEADS": "release-leads", "C0RELEASES": "releases"}

OUR_TAGS = {"html", "head", "meta", "title", "style", "body", "div", "span", "b", "i", "s", "code", "pre", "a", "hr"}
OUR_ATTRS = {"lang", "charset", "http-equiv", "content", "class", "role", "aria-hidden", "href"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(markup: str) -> _Tags:
    parser = _Tags()
    parser.feed(markup)
    parser.close()
    return parser


# -- mrkdwn ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "expected"), [
    ("*bold* and _italic_ and ~gone~", "<b>bold</b> and <i>italic</i> and <s>gone</s>"),
    ("image `hello_amd64` of hello_amd64_x", 'image <code class="code">hello_amd64</code> of hello_amd64_x'),
    ("`a *not bold* b`", '<code class="code">a *not bold* b</code>'),
    ("*hello `1.2.3` → icr*", '<b>hello <code class="code">1.2.3</code> → icr</b>'),
    ("2 * 3 * 4", "2 * 3 * 4"),
    (":white_check_mark: ok :no_such_emoji:", "✅ ok :no_such_emoji:"),
    ("`:x:`", '<code class="code">:x:</code>'),
    ("by <@U0ALICE>", 'by <span class="mention">@alice</span>'),
    ("by <@U0NOBODY>", 'by <span class="mention">@U0NOBODY</span>'),
    ("<!subteam^S0LEADS>", '<span class="mention">@release-leads</span>'),
    ("<!subteam^S0X|@ops>", '<span class="mention">@@ops</span>'),
    ("in <#C0RELEASES>", 'in <span class="mention">#releases</span>'),
    ("<!here>", '<span class="mention broadcast">@here</span>'),
    ("until <!date^1800001800^{date_short_pretty} {time}|2027-01-15 08:30 UTC>", "until 2027-01-15 08:30 UTC"),
    ("<https://ex.example/a?b=1&amp;c=2|the docs>", '<a href="https://ex.example/a?b=1&amp;c=2">the docs</a>'),
    ("<https://ex.example>", '<a href="https://ex.example">https://ex.example</a>'),
    ("a &lt;b&gt; &amp; c", "a &lt;b&gt; &amp; c"),
    ("&amp;lt;", "&amp;lt;"),
    ("```line 1\nline 2```\nafter", '<pre class="pre">line 1\nline 2</pre>after'),
    ("```*not bold* <@U0ALICE>```", '<pre class="pre">*not bold* &lt;@U0ALICE&gt;</pre>'),
])
def test_mrkdwn(source: str, expected: str) -> None:
    assert bk.mrkdwn(source, NAMES) == expected


@pytest.mark.parametrize("source", [
    "<script>alert(1)</script>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "<javascript:alert(1)|click>",
    '<https://ex.example/"onmouseover="alert(1)|x>',
    "<@U0ALICE|<img src=x onerror=alert(1)>>",
    "*<img src=x>*",
    "`<img src=x>`",
    "```</pre><script>x</script>```",
    ":x:<b>:x:",
    "\ue0000\ue001 `code` \ue0001\ue001",
])
def test_hostile_text_stays_text(source: str) -> None:
    out = bk.mrkdwn(source, {"U0ALICE": '<img src=x onerror="alert(1)">'})
    tags = parse(out).tags
    assert {tag for tag, _ in tags} <= {"span", "b", "i", "s", "code", "pre", "a"}
    for tag, attrs in tags:
        assert set(attrs) <= {"class", "href"}
        if tag == "a":
            assert (attrs["href"] or "").startswith(bk.LINK_SCHEMES)
    assert "<script" not in out and "<img" not in out and "\ue000" not in out


def test_plain_text_is_escaped_and_gets_emoji() -> None:
    assert bk.text_object({"type": "plain_text", "text": "<b>:x:</b>"}) == "&lt;b&gt;❌&lt;/b&gt;"
    assert bk.text_object({"type": "plain_text", "text": ":x:", "emoji": False}) == ":x:"
    assert bk.text_object(None) == ""


# -- blocks ------------------------------------------------------------------------------------------------------------

def test_the_block_types() -> None:
    assert 'class="block header"' in bk.block({"type": "header", "text": {"type": "plain_text", "text": "Hi"}})
    assert "<hr>" in bk.block({"type": "divider"})
    fields = [{"type": "mrkdwn", "text": "*a*"}, {"type": "plain_text", "text": "b"}]
    section = bk.block({"type": "section", "fields": fields,
                        "accessory": {"type": "button", "text": {"type": "plain_text", "text": "Go"}}})
    assert 'class="fields"' in section and "<b>a</b>" in section and 'role="button">Go<' in section
    context = bk.block({"type": "context", "elements": [{"type": "mrkdwn", "text": "`x`"},
                                                        {"type": "image", "image_url": "https://x", "alt_text": "i"}]})
    assert context == '<div class="block context"><span><code class="code">x</code></span></div>'
    actions = bk.block({"type": "actions", "elements": [
        {"type": "button", "style": "primary", "text": {"type": "plain_text", "text": "Approve"}},
        {"type": "button", "style": "danger", "text": {"type": "plain_text", "text": "Reject"}},
        {"type": "button", "style": "<evil>", "text": {"type": "plain_text", "text": "Status"}}]})
    assert re.findall(r'class="(btn[^"]*)"', actions) == ["btn btn-primary", "btn btn-danger", "btn"]
    assert bk.block({"type": "video<script>"}) == '<div class="block unknown">[video&lt;script&gt; block]</div>'


def test_a_message_without_blocks_shows_its_text() -> None:
    out = bk.message({"text": "*hi* <@U0ALICE>", "blocks": []}, NAMES)
    assert "<b>hi</b>" in out and "@alice" in out and 'class="name">edgebot<' in out and ">APP<" in out


def test_a_thread_page() -> None:
    msgs = [{"text": "", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"m{i}"}}]}
            for i in range(3)]
    out = bk.page(msgs, thread=True, channel="releases", times=["9:00 AM", "9:01 AM"])
    assert out.count('class="avatar"') == 3 and ">2 replies<" in out and ">#releases<" in out
    assert ">9:01 AM<" in out and ">10:42 AM<" in out
    channel = bk.page(msgs)
    assert channel.count('class="avatar"') == 1 and channel.count('class="msg compact"') == 2


# -- every snapshot ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_every_snapshot_renders_with_our_markup_only(name: str) -> None:
    """Each builder's output renders: no block left unknown, no tag or attribute the renderer did not write, every
    button and every line of text present."""
    msg = json.loads((SNAPSHOTS / f"{name}.json").read_text())
    out = bk.page([msg], pictures.NAMES, title=name)
    parsed = parse(out)
    assert "<script" not in out.lower() and 'class="block unknown"' not in out
    for tag, attrs in parsed.tags:
        assert tag in OUR_TAGS, tag
        assert set(attrs) <= OUR_ATTRS, attrs
        if tag == "a":
            assert (attrs["href"] or "").startswith(bk.LINK_SCHEMES)
    wanted = [e["text"]["text"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]
    shown = re.findall(r'role="button">([^<]*)<', out)
    assert shown == wanted
    text = "".join(parsed.text)
    for b in msg["blocks"]:
        if b["type"] == "section" and b["text"]["type"] == "mrkdwn":
            plain = re.sub(r"<[^<>]*>|:[a-z_]+:", " ", b["text"]["text"])
            for word in re.findall(r"[A-Za-z]{4,}", plain):
                assert word in text, word


@pytest.mark.parametrize("name", [n for n in ALL if "hostile" in n])
def test_hostile_snapshots_show_the_attack_as_text(name: str) -> None:
    """The HOSTILE snapshots carry ``<!channel>``, a phishing ``<https://evil…|…>`` link and stray fences, escaped by
    the builders: the page shows them as the characters they are, with no link, no broadcast and no tag."""
    msg = json.loads((SNAPSHOTS / f"{name}.json").read_text())
    out = bk.page([msg], pictures.NAMES)
    hrefs = [attrs.get("href") for tag, attrs in parse(out).tags if tag == "a"]
    assert not any("evil" in (h or "") for h in hrefs)
    assert 'class="mention broadcast"' not in out
    parsed = parse(out)
    text = "".join(parsed.text)
    for escaped in re.findall(r"&lt;[^\n]*?&gt;", json.dumps(msg["blocks"], ensure_ascii=False)):
        assert bk.slack_unescape(escaped) in text
    assert {tag for tag, _ in parsed.tags} <= OUR_TAGS


def test_pictures_use_existing_snapshots_and_the_docs_show_them() -> None:
    root = Path(__file__).parents[1]
    doc = (root / "docs" / "slack-messages.md").read_text()
    for picture in pictures.PICTURES:
        assert picture.snapshots and all((SNAPSHOTS / f"{s}.json").exists() for s in picture.snapshots)
        assert f"images/{picture.name}.png" in doc
        assert (root / "docs" / "images" / f"{picture.name}.png").stat().st_size > 10_000
    assert "docs/images/" in (root / "README.md").read_text()


def test_the_pictures_show_the_current_messages() -> None:
    """Each PNG was drawn from the HTML the snapshots render to today (its digest is recorded by ``make pictures``):
    after a wording change in a builder, the snapshot update must come with new pictures."""
    recorded = json.loads((Path(__file__).parents[1] / "docs" / "images" / pictures.SOURCES).read_text())
    stale = [p.name for p in pictures.PICTURES if recorded.get(p.name) != pictures.source_digest(p)]
    assert not stale, f"docs/images/{{{','.join(stale)}}}.png show older messages: run `make pictures`"


def test_the_measuring_script_is_the_only_one_and_allowed_by_hash() -> None:
    page = pictures.html(pictures.PICTURES[0])
    assert "<script" not in page and "script-src" not in page
    measured = pictures.measuring(page)
    assert measured.count("<script>") == 1 and "script-src 'sha256-" in measured
