"""The sandbox's secrets in a real OpenBao, read by the workers through one least-privilege AppRole per role.

``Stack(vault=True)`` (what ``make demo`` and ``edgebot sandbox`` run) uses this instead of environment variables, so
the demo runs on a configuration shaped like production's:

* the registry push password lives at ``secret/data/edgebot/build``; the Exchange password, the signing key and the
  registry pull password at ``secret/data/edgebot/publish`` (the layout of ``deploy/vault/README.md``);
* the policies are the files shipped in ``deploy/vault/`` (``edgebot-build.hcl``, ``edgebot-publish.hcl``), each
  attached to an AppRole of the same name;
* the config's ``[vault]`` table says ``auth = "approle"`` with ``role_id``/``secret_id`` read from the environment:
  each worker process gets the pair of its own role, so a build worker cannot read the signing key;
* the Slack bot token and signing secret stay ``file:`` references (files with mode 0600 in the stack's workdir):
  the bot never talks to Vault (``bot/`` does not import Vault code, by design), and it needs exactly those two.

Nothing here prints a secret; the dev server's root token stays inside :class:`~sandbox.bao.BaoServer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sandbox.bao import BaoServer

POLICY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "vault"
BUILD_ROLE, PUBLISH_ROLE = "build", "publish"
ROLES = (BUILD_ROLE, PUBLISH_ROLE)
ROLE_ID_ENV, SECRET_ID_ENV = "EDGEBOT_VAULT_ROLE_ID", "EDGEBOT_VAULT_SECRET_ID"

VAULT_REFS = {
    "exchange_password": "vault:secret/data/edgebot/publish#exchange_password",
    "signing_key": "vault:secret/data/edgebot/publish#signing_key",
    "pull_password": "vault:secret/data/edgebot/publish#pull_password",
    "push_password": "vault:secret/data/edgebot/build#push_password",
}
"""The config's worker-side secret references (keys as :func:`sandbox.stack.write_config` names them)."""


def role_for(worker_args: Sequence[str]) -> str:
    """Which AppRole an ``edgebot worker`` with these arguments logs in with: build workers (``--arch`` only) get
    the push credential and nothing else; every other worker (publish, rollout…) gets the publish role."""
    if "--arch" in worker_args and "--publish" not in worker_args:
        return BUILD_ROLE
    return PUBLISH_ROLE


class SandboxVault:
    """An OpenBao dev server holding the sandbox's secrets, with the two worker AppRoles of ``deploy/vault/``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.server = BaoServer(self.workdir / "bao")
        self._credentials: dict[str, tuple[str, str]] = {}

    def __repr__(self) -> str:  # never a secret_id
        return f"SandboxVault({self.server!r}, roles={sorted(self._credentials)})"

    @property
    def url(self) -> str:
        return self.server.url

    def start(self, *, push_password: str, pull_password: str, exchange_password: str, signing_key_pem: str,
              slack_secrets: Mapping[str, str]) -> dict[str, str]:
        """Start the server, store the secrets, write the policies and AppRoles; returns the config's secret
        references (``vault:`` for the workers' secrets, ``file:`` for the bot's Slack secrets)."""
        self.server.start()
        self.server.put_secret("edgebot/build", {"push_password": push_password})
        self.server.put_secret("edgebot/publish", {"exchange_password": exchange_password,
                                                   "signing_key": signing_key_pem, "pull_password": pull_password})
        for role in ROLES:
            name = f"edgebot-{role}"
            self.server.write_policy(name, (POLICY_DIR / f"{name}.hcl").read_text())
            self._credentials[role] = self.server.approle(name, [name])
        refs = dict(VAULT_REFS)
        secrets_dir = self.workdir / "secrets"
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for key, value in slack_secrets.items():
            path = secrets_dir / key
            path.write_text(value + "\n")
            path.chmod(0o600)
            refs[key] = f"file:{path}"
        return refs

    def stop(self) -> None:
        self.server.stop()

    def config_table(self) -> str:
        """The ``[vault]`` table: AppRole login, role_id and secret_id from each worker's own environment."""
        return "\n".join([
            "[vault]",
            f'url = "{self.url}"',
            'auth = "approle"',
            f'role_id = "env:{ROLE_ID_ENV}"',
            f'secret_id = "env:{SECRET_ID_ENV}"',
            "cache_ttl = 60",
        ])

    def worker_env(self, env: Mapping[str, str], worker_args: Sequence[str]) -> dict[str, str]:
        """``env`` plus the AppRole credentials of the role these worker arguments run as."""
        role_id, secret_id = self._credentials[role_for(worker_args)]
        return {**env, ROLE_ID_ENV: role_id, SECRET_ID_ENV: secret_id}


__all__ = ["ROLES", "SandboxVault", "VAULT_REFS", "role_for"]
