"""`edgebot serve` and `edgebot worker` refuse, at start-up and before anything listens or connects, a config file
that holds a literal secret: the message names the key and says how to reference the value instead, and never echoes
the value. Run as real subprocesses of the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LITERAL = "hunter2-literal-exchange-password"
VAULT_TOKEN = "s.AbCdEf0123456789AbCdEf01"

CONFIG = """
[slack]
bot_token = "env:EDGEBOT_SLACK_BOT_TOKEN"
signing_secret = "env:EDGEBOT_SLACK_SIGNING_SECRET"

[redis]
url = "redis://127.0.0.1:1/0"

[exchange]
url = "https://hub.example/edge-exchange/v1"
username = "acme/edgebot"
password = "{exchange_password}"

[signing]
private_key = "file:/etc/edgebot/signing.pem"

[registries.icr]
kind = "icr"
host = "us.icr.io"
namespace = "edge"
push_password = "env:ICR_PUSH_KEY"

[services.hello]
source = "https://git.example/hello.git"
org = "acme"
arches = ["amd64"]
{extra}
"""

REFUSAL = ("edgebot: exchange.password: a secret must be a reference, not a literal value. Use env:NAME, file:/path "
           "or vault:<path>#<key> and put the value there.")


def run_cli(tmp_path: Path, *args: str, exchange_password: str = LITERAL,
            extra: str = "") -> subprocess.CompletedProcess[str]:
    config = tmp_path / "edgebot.toml"
    config.write_text(CONFIG.format(exchange_password=exchange_password, extra=extra))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEBOT_")}
    return subprocess.run([sys.executable, "-m", "edgebot", "--config", str(config), *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=Path(__file__).resolve().parent.parent)


@pytest.mark.parametrize("command", [
    ["serve", "--bind", "127.0.0.1:0"],
    ["serve", "--socket-mode"],
    ["worker", "--publish"],
    ["worker", "--arch", "amd64"],
    ["config", "check"],
])
def test_literal_secret_refused_at_start_up(tmp_path: Path, command: list[str]) -> None:
    done = run_cli(tmp_path, *command)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == REFUSAL
    assert LITERAL not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_worker_refuses_a_literal_vault_token(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "worker", "--publish", exchange_password="vault:secret/data/edgebot/publish#exchange",
                   extra=f'\n[vault]\nurl = "http://127.0.0.1:1"\ntoken = "{VAULT_TOKEN}"\n')
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == ("edgebot: vault.token: a secret must be a reference, not a literal value. Use "
                                   "env:NAME, file:/path or vault:<path>#<key> and put the value there.")
    assert VAULT_TOKEN not in done.stdout + done.stderr


@pytest.mark.parametrize("mode", [[], ["--socket-mode"]])
def test_serve_refuses_a_vault_reference_for_a_slack_secret_before_starting(tmp_path: Path, mode: list[str]) -> None:
    config = tmp_path / "edgebot.toml"
    config.write_text(CONFIG.format(exchange_password="env:X", extra="").replace(
        'signing_secret = "env:EDGEBOT_SLACK_SIGNING_SECRET"', 'signing_secret = "vault:secret/data/edgebot/bot#sig"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEBOT_")}
    done = subprocess.run([sys.executable, "-m", "edgebot", "--config", str(config), "serve", "--bind",
                           "127.0.0.1:0", *mode], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("edgebot: slack.signing_secret is a vault: reference, but the bot holds no Vault")
    assert "Traceback" not in done.stderr


def test_the_bot_refuses_a_vault_reference_for_a_slack_secret() -> None:
    from bot.app import create_app
    from edgebot.config import parse_config
    from edgebot.errors import ConfigError

    config = parse_config({
        "slack": {"bot_token": "vault:secret/data/edgebot/bot#token", "signing_secret": "env:S"},
        "redis": {"url": "redis://127.0.0.1:1/0"},
        "exchange": {"url": "https://hub/edge-exchange/v1", "username": "acme/u", "password": "env:P"},
        "signing": {"private_key": "env:K"},
        "registries": {"local": {"host": "h", "push_username": "u", "push_password": "env:P"}},
        "services": {"hello": {"source": "s", "org": "acme", "arches": ["amd64"]}},
    }, environ={})
    with pytest.raises(ConfigError, match="slack.bot_token is a vault: reference, but the bot holds no Vault client"):
        create_app(config)
