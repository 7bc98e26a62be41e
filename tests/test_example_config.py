"""examples/edgebot.toml against the shipped Vault policies (deploy/vault/) on a real OpenBao server: each worker role
reads exactly the vault: references the example gives it (what ``config check --role`` resolves) and none of the
other roles' — the example and the policies cannot drift apart (issue 17)."""

from __future__ import annotations

import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

from edgebot.config import parse_config
from edgebot.errors import SecretUnavailable
from edgebot.secrets import SecretRef
from sandbox.sandbox_vault import SandboxVault
from workers.config_check import ROLES, role_references
from workers.vault import build_resolver

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "edgebot.toml"
WORKER_ARGS = {"build": ["--arch", "amd64"], "publish": ["--publish"]}


def test_the_example_is_complete() -> None:
    config = parse_config(tomllib.loads(EXAMPLE.read_text()))
    assert {"icr", "ocp"} <= set(config.registries), "both seed registries"
    assert [stage.name for stage in config.services["hello"].rollout] == ["canary", "fleet"]
    assert config.access.principals("publish", org="acme", service="hello")
    assert config.approval_policy(org="acme", service="hello", registry="ocp").required == 2
    assert config.seal_key is not None


def test_each_role_reads_exactly_the_vault_paths_the_example_gives_it(tmp_path: Path) -> None:
    vault = SandboxVault(tmp_path / "vault")
    vault.start(push_password="p", pull_password="q", exchange_password="x", signing_key_pem="k", slack_secrets={})
    try:
        data = tomllib.loads(EXAMPLE.read_text())
        data["vault"] = tomllib.loads(vault.config_table())["vault"]  # this OpenBao instead of vault.example.com
        config = parse_config(data)
        wanted: dict[str, set[SecretRef]] = {
            role: {ref for _, ref in role_references(config, role) if ref.scheme == "vault"} for role in ROLES}
        assert not wanted["bot"], "the bot never talks to Vault"
        assert wanted["build"] and wanted["publish"]
        stored: dict[str, dict[str, str]] = defaultdict(dict)
        for ref in set().union(*wanted.values()):
            path, key = ref.target.split("#", 1)
            assert path.startswith("secret/data/"), ref
            stored[path.removeprefix("secret/data/")][key] = f"value of {ref.target}"
        for path, values in stored.items():
            vault.server.put_secret(path, values)
        everything = set().union(*wanted.values())
        for role, args in WORKER_ARGS.items():
            resolver = build_resolver(config, vault.worker_env({}, args))
            for ref in wanted[role]:
                assert resolver.resolve(ref).reveal() == f"value of {ref.target}", (role, ref)
            for ref in everything - wanted[role]:
                with pytest.raises(SecretUnavailable):
                    resolver.resolve(ref)
    finally:
        vault.stop()
