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


# --- the dispatcher: --version, config check's exit status, sides offered only when installed --------------------

REPO = Path(__file__).resolve().parent.parent


def run_edgebot(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
                python: tuple[str, ...] = (sys.executable,)) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGEBOT_")} if env is None else env
    return subprocess.run([*python, "-m", "edgebot.cli", *args], capture_output=True, text=True, env=clean,
                          timeout=120, cwd=cwd)


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    done = run_edgebot("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"edgebot {version('edgebot')}\n"


def test_version_falls_back_to_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata
    import tomllib

    from edgebot.cli import edgebot_version

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert edgebot_version() == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_each_side_registers_the_commands_the_dispatcher_names() -> None:
    import argparse
    import importlib

    from edgebot.cli import SIDES

    for side in SIDES:
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers()
        importlib.import_module(side.cli_module).add_commands(subparsers)
        assert tuple(subparsers.choices) == side.commands, side
        assert all(callable(sub.get_default("handler")) for sub in subparsers.choices.values()), side


# Exit 0 (every check passes) needs every service answering: tests/test_publish_e2e.py runs `config check` against
# the whole stack and asserts 0 there (test_config_check_tests_every_reference_and_connection).


@pytest.mark.parametrize("mode", [[], ["--socket-mode"]])
def test_serve_refuses_to_start_while_nobody_may_publish(tmp_path: Path, mode: list[str]) -> None:
    config = tmp_path / "edgebot.toml"
    config.write_text(CONFIG.format(exchange_password="env:X", extra=""))  # no [access]: nobody may publish
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEBOT_")}
    done = subprocess.run([sys.executable, "-m", "edgebot", "--config", str(config), "serve", "--bind",
                           "127.0.0.1:0", *mode], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("edgebot: ") and "[access]" in done.stderr and "Traceback" not in done.stderr


def test_config_check_exits_1_when_checks_fail(tmp_path: Path) -> None:
    """Several failures (Redis on a closed port, nobody behind Slack, the Exchange or the registry) are still 1, not
    their count: 2 would read as a usage error."""
    from sandbox.proc_base import free_port
    from tests.minimal_config import minimal_config

    config = tmp_path / "edgebot.toml"
    config.write_text(minimal_config(f"redis://127.0.0.1:{free_port()}/0", source="https://git.example/hello.git")
                      .replace("127.0.0.1:5000", f"127.0.0.1:{free_port()}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEBOT_")}
    env.update(SLACK_BOT_TOKEN="xoxb-test", SLACK_SIGNING_SECRET="s", EXCHANGE_PASSWORD="p", SIGNING_KEY="k",
               PUSH_PASSWORD="p")
    done = run_edgebot("--config", str(config), "config", "check", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL redis:" in done.stdout, done.stdout
    failures = done.stdout.count("\nFAIL ")
    assert failures >= 2 and f"{failures} problem(s)" in done.stdout, done.stdout


@pytest.mark.parametrize("contents", [None, "[slack\n", 'bogus = "x"\n'], ids=["missing", "not-toml", "unknown-key"])
def test_config_check_exits_2_when_the_config_cannot_be_loaded(tmp_path: Path, contents: str | None) -> None:
    config = tmp_path / "edgebot.toml"
    if contents is not None:
        config.write_text(contents)
    done = run_edgebot("--config", str(config), "config", "check")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("edgebot: ") and "Traceback" not in done.stderr
    assert "problem(s)" not in done.stdout


@pytest.mark.parametrize("args", [["config"], ["config", "frobnicate"], ["config", "check", "--bogus"]])
def test_config_check_usage_errors_exit_2(args: list[str]) -> None:
    done = run_edgebot(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "usage: edgebot" in done.stderr and "Traceback" not in done.stderr


def test_config_help_documents_the_exit_status() -> None:
    done = run_edgebot("config", "--help")
    assert done.returncode == 0, done.stderr
    assert "0  all checks passed" in done.stdout and "1  at least one check failed" in done.stdout
    assert "2  usage error, or a config that cannot be loaded" in done.stdout


@pytest.fixture
def image_like_install(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """edgebot/, bot/ and workers/ copied without sandbox/ (what deploy/Dockerfile copies), and an environment whose
    Python sees that copy and the third-party packages only: run with -S, so the editable install's .pth hook (which
    maps edgebot, bot, workers and sandbox to this checkout) never runs, and site-packages comes from PYTHONPATH."""
    import shutil
    import sysconfig

    root = tmp_path / "install"
    for package in ("edgebot", "bot", "workers"):
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEBOT_", "PYTHON"))}
    env["PYTHONPATH"] = os.pathsep.join([str(root), sysconfig.get_paths()["purelib"]])
    return root, env


def test_the_copy_without_sandbox_is_what_runs(image_like_install: tuple[Path, dict[str, str]]) -> None:
    import ast

    root, env = image_like_install
    code = ("import importlib.util, sys, edgebot.cli\n"
            "print(edgebot.cli.__file__)\nprint(importlib.util.find_spec('sandbox'))\nprint(sys.path)")
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, cwd=root,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    cli_file, sandbox_spec, path = done.stdout.splitlines()
    assert Path(cli_file).is_relative_to(root) and sandbox_spec == "None", done.stdout
    assert str(REPO) not in ast.literal_eval(path), path  # the checkout itself is not importable


def test_without_sandbox_help_does_not_offer_it(image_like_install: tuple[Path, dict[str, str]]) -> None:
    root, env = image_like_install
    done = run_edgebot("--help", cwd=root, env=env, python=(sys.executable, "-S"))
    assert done.returncode == 0, done.stderr
    assert "{serve,worker,config,dockauth,verify}" in done.stdout and "sandbox" not in done.stdout


@pytest.mark.parametrize("args", [["sandbox"], ["--config", "x.toml", "sandbox", "--arch", "amd64"]])
def test_without_sandbox_the_command_is_a_usage_error(image_like_install: tuple[Path, dict[str, str]],
                                                      args: list[str]) -> None:
    root, env = image_like_install
    done = run_edgebot(*args, cwd=root, env=env, python=(sys.executable, "-S"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "'sandbox' is not available in this installation: the sandbox package" in done.stderr
    assert "usage: edgebot" in done.stderr and "Traceback" not in done.stderr


def test_without_sandbox_the_other_commands_still_parse(image_like_install: tuple[Path, dict[str, str]]) -> None:
    root, env = image_like_install
    for args in (["serve", "--help"], ["worker", "--help"], ["config", "--help"], ["--version"]):
        done = run_edgebot(*args, cwd=root, env=env, python=(sys.executable, "-S"))
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)


def test_config_check_of_a_build_worker_says_whether_buildah_is_there(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    """Services built with buildah need it on the build worker: config check --role build says so, with the fix."""
    import copy

    from edgebot.config import parse_config
    from edgebot.secrets import SecretResolver
    from tests.test_config import BASE
    from workers.config_check import run_checks

    data = copy.deepcopy(BASE)
    data["services"]["hello"]["build"] = {"builder": "buildah"}
    config = parse_config(data)

    def buildah_line() -> str:
        lines = [str(line) for line in run_checks(config, SecretResolver({}), timeout=1, roles=["build"])]
        return next(line for line in lines if " buildah: " in line)

    assert buildah_line().startswith("OK   buildah: buildah version") and "(for hello)" in buildah_line()
    monkeypatch.setenv("PATH", str(tmp_path))  # no buildah (and no git) on this PATH
    assert buildah_line() == ("FAIL buildah: buildah is not installed on this worker: install it (Debian: apt-get "
                              "install buildah) or build these services with builder = \"engine\"")
