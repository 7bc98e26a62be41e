"""Snapshot comparison of rendered messages (``EDGEBOT_UPDATE_SNAPSHOTS=1`` rewrites them after an intended change)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgebot.messages import MAX_BLOCKS, MAX_TEXT, Message

SNAPSHOTS = Path(__file__).parent / "snapshots"


def check_snapshot(name: str, msg: Message) -> None:
    actual = {"text": msg.text, "blocks": msg.blocks}
    path = SNAPSHOTS / f"{name}.json"
    if os.environ.get("EDGEBOT_UPDATE_SNAPSHOTS"):
        path.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n")
    assert actual == json.loads(path.read_text())
    assert len(msg.blocks) <= MAX_BLOCKS
    for block in msg.blocks:
        for element in [block.get("text") or {}, *(block.get("elements") or [])]:
            assert len(str(element.get("text", ""))) <= MAX_TEXT
