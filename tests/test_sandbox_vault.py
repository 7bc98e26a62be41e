"""The sandbox's Vault set-up (what `make demo` and `edgebot sandbox` run on): a real OpenBao dev server, the policies
shipped in deploy/vault/, one AppRole per worker role, and a config whose worker secrets are all vault: references."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hvac
import hvac.exceptions
import pytest

from edgebot.config import load_config
from edgebot.secrets import SecretResolver
from sandbox.sandbox_vault import ROLE_ID_ENV, SECRET_ID_ENV, SandboxVault, role_for
from sandbox.stack import write_config
from workers.vault import build_resolver

SECRETS = {"push_password": "push-pw", "pull_password": "pull-pw", "exchange_password": "exchange-pw",
           "signing_key_pem": "-----BEGIN PRIVATE KEY-----\nsandbox\n-----END PRIVATE KEY-----"}


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[SandboxVault]:
    started = SandboxVault(tmp_path / "vault")
    yield started
    started.stop()


def _login(vault: SandboxVault, role_args: list[str]) -> hvac.Client:
    env = vault.worker_env({}, role_args)
    client = hvac.Client(url=vault.url)
    client.auth.approle.login(role_id=env[ROLE_ID_ENV], secret_id=env[SECRET_ID_ENV])
    return client


def test_each_worker_role_reads_only_its_own_secrets(vault: SandboxVault, tmp_path: Path) -> None:
    refs = vault.start(slack_secrets={"bot_token": "xoxb-t", "signing_secret": "sig", "app_token": "xapp-t"}, **SECRETS)
    assert role_for(["--arch", "amd64"]) == "build" and role_for(["--publish"]) == "publish"
    build = _login(vault, ["--arch", "amd64"])
    publish = _login(vault, ["--publish"])

    def read(client: hvac.Client, path: str) -> dict[str, str]:
        answer = client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret",
                                                          raise_on_deleted_version=True)
        return dict(answer["data"]["data"])

    assert read(build, "edgebot/build") == {"push_password": "push-pw"}
    with pytest.raises(hvac.exceptions.Forbidden):
        read(build, "edgebot/publish")  # a build worker runs untrusted Dockerfiles: no signing key for it
    assert read(publish, "edgebot/publish")["signing_key"] == SECRETS["signing_key_pem"]
    with pytest.raises(hvac.exceptions.Forbidden):
        read(publish, "edgebot/build")
    # the bot's Slack secrets are files only their owner can read
    for key in ("bot_token", "signing_secret"):
        assert refs[key].startswith("file:")
        assert Path(refs[key][5:]).stat().st_mode & 0o077 == 0


def test_the_config_resolves_through_vault_for_a_worker_and_holds_no_secret(vault: SandboxVault,
                                                                            tmp_path: Path) -> None:
    refs = vault.start(slack_secrets={"bot_token": "xoxb-t", "signing_secret": "sig", "app_token": "xapp-t"}, **SECRETS)
    path = write_config(tmp_path / "edgebot.toml", redis_url="redis://127.0.0.1:1/0",
                        slack_api_url="http://127.0.0.1:9/api/", exchange_url="http://127.0.0.1:9/v1",
                        registry_address="127.0.0.1:5000", docker_url="unix:///nowhere", source="/nowhere",
                        arches=["amd64"], key_file=tmp_path / "unused.key", workdir=tmp_path, secret_refs=refs,
                        extra_toml=vault.config_table())
    text = path.read_text()
    assert "env:EDGEBOT_" not in text.replace(f"env:{ROLE_ID_ENV}", "").replace(f"env:{SECRET_ID_ENV}", "")
    assert not any(value in text for value in SECRETS.values())
    config = load_config(path)
    publish = build_resolver(config, vault.worker_env({}, ["--publish"]))
    assert publish.resolve(config.exchange.password).reveal() == "exchange-pw"
    assert publish.resolve(config.signing.private_key).reveal() == SECRETS["signing_key_pem"]
    assert publish.resolve(config.slack.bot_token).reveal() == "xoxb-t"
    registry = config.registries["local"]
    assert registry.pull_password is not None
    assert publish.resolve(registry.pull_password).reveal() == "pull-pw"
    build = build_resolver(config, vault.worker_env({}, ["--arch", "amd64"]))
    assert build.resolve(registry.push_password).reveal() == "push-pw"
    with pytest.raises(Exception, match="edgebot/publish"):
        build.resolve(config.exchange.password)
    # the bot resolves without Vault: its two Slack secrets are file: references
    bot = SecretResolver({})
    assert bot.resolve(config.slack.signing_secret).reveal() == "sig"
