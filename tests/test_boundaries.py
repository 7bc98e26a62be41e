"""The two process types stay lean and their boundary visible: the bot never loads docker (nor the Exchange
client, nor Vault), the workers never load slack_bolt, and neither loads the sandbox stand-ins."""

from __future__ import annotations

import subprocess
import sys

import pytest

BOT_MODULES = ["bot.app", "bot.wsgi", "bot.grammar", "bot.intake"]
WORKER_MODULES = ["workers.jobs", "workers.pipeline", "workers.worker", "workers.images", "workers.exchange",
                  "workers.signing", "workers.source", "workers.definition"]


def _loaded(modules: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("forbidden", ["docker", "workers", "hvac", "sandbox"])
def test_bot_does_not_import(forbidden: str) -> None:
    loaded = _loaded(BOT_MODULES)
    assert "slack_bolt" in loaded  # the check itself works
    assert not any(m == forbidden or m.startswith(forbidden + ".") for m in loaded)


@pytest.mark.parametrize("forbidden", ["slack_bolt", "bot", "sandbox"])
def test_workers_do_not_import(forbidden: str) -> None:
    loaded = _loaded(WORKER_MODULES)
    assert "docker" in loaded
    assert not any(m == forbidden or m.startswith(forbidden + ".") for m in loaded)


def test_cli_imports_neither_side() -> None:
    loaded = _loaded(["edgebot.cli"])
    assert not any(m.split(".")[0] in {"docker", "slack_bolt", "bot", "workers"} for m in loaded)
