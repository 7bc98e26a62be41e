"""A private source's credential in Vault: the shipped policies (deploy/vault/) let both worker roles read
``secret/data/edgebot/sources/*`` (publish workers read the definitions, build workers check out), and a worker
resolves the catalog's ``vault:`` reference through its own role on a real OpenBao server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebot.config import load_config
from sandbox.sandbox_vault import SandboxVault
from sandbox.stack import write_config
from workers.git_auth import git_auth_for
from workers.vault import build_resolver

SECRETS = {"push_password": "push-pw", "pull_password": "pull-pw", "exchange_password": "exchange-pw",
           "signing_key_pem": "-----BEGIN PRIVATE KEY-----\nsandbox\n-----END PRIVATE KEY-----"}
KNOWN = "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[SandboxVault]:
    started = SandboxVault(tmp_path / "vault")
    yield started
    started.stop()


def test_both_worker_roles_read_a_private_sources_key_from_vault(vault: SandboxVault, tmp_path: Path) -> None:
    refs = vault.start(slack_secrets={"bot_token": "xoxb-t", "signing_secret": "sig", "app_token": "xapp-t"}, **SECRETS)
    vault.server.put_secret("edgebot/sources/private", {"ssh_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nk\n"})
    private = ("[services.private]\nsource = \"ssh://git@git.example.com/acme/private.git\"\norg = \"acme\"\n"
               "arches = [\"amd64\"]\n[services.private.source_auth]\n"
               "ssh_key = \"vault:secret/data/edgebot/sources/private#ssh_key\"\n"
               f"known_hosts = [\"{KNOWN}\"]\n")
    path = write_config(tmp_path / "edgebot.toml", redis_url="redis://127.0.0.1:1/0",
                        slack_api_url="http://127.0.0.1:9/api/", exchange_url="http://127.0.0.1:9/v1",
                        registry_address="127.0.0.1:5000", docker_url="unix:///nowhere", source="/nowhere",
                        arches=["amd64"], key_file=tmp_path / "unused.key", workdir=tmp_path, secret_refs=refs,
                        extra_toml=vault.config_table() + "\n" + private)
    config = load_config(path)
    service = config.services["private"]
    assert service.source_auth is not None and service.source_auth.ssh_key is not None
    for role_args in (["--publish"], ["--arch", "amd64"]):
        auth = git_auth_for(service, build_resolver(config, vault.worker_env({}, role_args)))
        assert auth is not None
        assert auth.resolver.resolve(service.source_auth.ssh_key).reveal().startswith("-----BEGIN OPENSSH")
