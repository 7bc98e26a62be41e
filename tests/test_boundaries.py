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
    """Importing the dispatcher loads no side at all (discovery runs in main(), through find_spec)."""
    loaded = _loaded(["edgebot.cli"])
    assert "edgebot.cli" in loaded  # the check itself works
    assert not any(m.split(".")[0] in {"docker", "slack_bolt", "bot", "workers", "sandbox"} for m in loaded)


CLI_HEAVY = ["docker", "slack_bolt", "slack_sdk", "gunicorn", "rq", "hvac", "httpx", "redis", "bot.app", "bot.wsgi",
             "workers.worker", "workers.config_check", "sandbox.console", "sandbox.stack"]


def test_cli_parser_loads_only_the_side_cli_modules() -> None:
    """Building every side's commands (what `edgebot --help` does) imports each side's small cli module and none of
    what its handlers need."""
    code = ("import contextlib, io, sys\nfrom edgebot.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    main(['--help'])\n"
            "print('\\n'.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert {"bot.cli", "workers.cli", "sandbox.cli"} <= loaded  # the check itself works
    assert not any(m == heavy or m.startswith(heavy + ".") for m in loaded for heavy in CLI_HEAVY)
