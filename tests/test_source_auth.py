"""Private sources against real git servers on loopback: OpenSSH's sshd with a deploy key (host key pinned) and git's
smart-HTTP CGI behind a server that demands a token (sandbox/git_servers.py). The credentials reach git through its
environment only: never argv, never the mirror's config, never a message."""

from __future__ import annotations

import base64
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgebot.secrets import SecretRef, SecretResolver
from edgebot.source_auth import SourceAuth
from sandbox.git_servers import HttpGitServer, SshGitServer, keygen
from sandbox.processes import add_commit, make_git_source
from workers import source as source_module
from workers.git_auth import GitAuth
from workers.source import SourceError, checkout, ls_remote, read_file_at, resolve_ref

TOKEN = "ghp_s3cr3tT0kenValue0123456789abcdef"
FILES = {"horizon/service.definition.json": '{"version": "1"}\n', "Dockerfile.amd64": "FROM scratch\n"}
WHERE = "services.private.source_auth"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_git_source(tmp_path_factory.mktemp("repos") / "private", FILES, tag="v1.0.0")


@pytest.fixture(scope="module")
def deploy_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return keygen(tmp_path_factory.mktemp("keys") / "deploy")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory, deploy_key: tuple[str, str]) -> Iterator[SshGitServer]:
    with SshGitServer(tmp_path_factory.mktemp("sshd"), deploy_key[1]) as server:
        yield server


@pytest.fixture(scope="module")
def http_git(repo: Path) -> Iterator[HttpGitServer]:
    with HttpGitServer(repo.parent, username="x-access-token", token=TOKEN) as server:
        yield server


@pytest.fixture
def argv(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """Every git command line (and environment) workers.source runs."""
    seen: list[tuple[list[str], dict[str, str]]] = []
    real = subprocess.run

    def recording(cmd: list[str], *args: Any, **kwargs: Any) -> Any:
        seen.append((list(cmd), dict(kwargs.get("env") or {})))
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(source_module.subprocess, "run", recording)
    return seen


@pytest.fixture
def private_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Where the worker's temporary files go (the deploy key's among them), to check they are gone after."""
    where = tmp_path / "worker-tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


def ssh_auth(key: str, known_hosts: tuple[str, ...]) -> GitAuth:
    return GitAuth(SourceAuth(where=WHERE, ssh_key=SecretRef("env", "DEPLOY_KEY"), known_hosts=known_hosts),
                   SecretResolver(environ={"DEPLOY_KEY": key}))


def token_auth(token: str) -> GitAuth:
    return GitAuth(SourceAuth(where=WHERE, token=SecretRef("env", "GIT_TOKEN")),
                   SecretResolver(environ={"GIT_TOKEN": token}))


def key_body(key: str) -> list[str]:
    return [line for line in key.splitlines() if line and not line.startswith("-----")]


def test_ssh_deploy_key_resolves_reads_and_checks_out(sshd: SshGitServer, repo: Path, deploy_key: tuple[str, str],
                                                      tmp_path: Path, argv: list[Any], private_tmp: Path) -> None:
    key = deploy_key[0]
    auth = ssh_auth(key, (sshd.known_hosts_line,))
    url = sshd.url(repo)
    cache = tmp_path / "cache"
    sha = resolve_ref(url, "v1.0.0", cache, auth=auth)
    assert sha == subprocess.run(["git", "--git-dir", str(repo), "rev-parse", "v1.0.0^{commit}"], capture_output=True,
                                 text=True, check=True).stdout.strip()
    assert read_file_at(url, sha, "horizon/service.definition.json", cache, auth=auth) == '{"version": "1"}\n'
    newer = add_commit(repo, {"Dockerfile.amd64": "FROM scratch\nLABEL v=2\n"})
    tree = checkout(url, newer, tmp_path / "tree", tmp_path / "fresh-cache", auth=auth)  # fetched with the key
    assert (tree / "Dockerfile.amd64").read_text() == "FROM scratch\nLABEL v=2\n"
    assert "refs/heads/main" in ls_remote(url, auth=auth)
    # the key was never on a command line nor in a file git keeps; its temporary copy is gone
    body = key_body(key)
    assert argv and not any(part in " ".join(cmd) for cmd, _ in argv for part in body)
    ssh_commands = [env["GIT_SSH_COMMAND"] for _, env in argv if "GIT_SSH_COMMAND" in env]
    assert ssh_commands and all("BatchMode=yes" in c and "StrictHostKeyChecking=yes" in c for c in ssh_commands)
    assert not any(part in c for c in ssh_commands for part in body)
    for mirror in [*cache.glob("*.git"), *(tmp_path / "fresh-cache").glob("*.git"), tree / ".git"]:
        assert not any(part in (mirror / "config").read_text() for part in body)
    assert list(private_tmp.iterdir()) == []


def test_a_wrong_host_key_is_refused_with_a_clear_message(sshd: SshGitServer, repo: Path,
                                                          deploy_key: tuple[str, str], tmp_path: Path,
                                                          private_tmp: Path) -> None:
    _, other = keygen(tmp_path / "impostor")
    keytype, key = other.split()[:2]
    for pinned in (f"[127.0.0.1]:{sshd.port} {keytype} {key}",  # the host, another key: a mismatch
                   sshd.known_hosts_line.replace("[127.0.0.1]", "[git.example.com]")):  # this host unknown
        with pytest.raises(SourceError) as refused:
            resolve_ref(sshd.url(repo), "v1.0.0", tmp_path / "cache", auth=ssh_auth(deploy_key[0], (pinned,)))
        message = str(refused.value)
        assert f"the host key of [127.0.0.1]:{sshd.port} is not the one pinned in {WHERE}.known_hosts" in message
        assert f"ssh-keyscan -p {sshd.port} 127.0.0.1" in message
        assert refused.value.transient is False
        assert not any(part in message for part in key_body(deploy_key[0]))
    assert list(private_tmp.iterdir()) == []


def test_an_unknown_deploy_key_is_refused_naming_its_reference(sshd: SshGitServer, repo: Path,
                                                                tmp_path: Path) -> None:
    stranger, _ = keygen(tmp_path / "stranger")
    with pytest.raises(SourceError) as refused:
        resolve_ref(sshd.url(repo), "v1.0.0", tmp_path / "cache", auth=ssh_auth(stranger, (sshd.known_hosts_line,)))
    message = str(refused.value)
    assert f"refused the deploy key from {WHERE}.ssh_key (env:DEPLOY_KEY)" in message
    assert refused.value.transient is False
    assert not any(part in message for part in key_body(stranger))


def test_https_token_resolves_reads_and_checks_out(http_git: HttpGitServer, repo: Path, tmp_path: Path,
                                                   argv: list[Any]) -> None:
    url = http_git.url(repo)
    cache = tmp_path / "cache"
    auth = token_auth(TOKEN)
    sha = resolve_ref(url, "v1.0.0", cache, auth=auth)
    assert read_file_at(url, sha, "horizon/service.definition.json", cache, auth=auth) == '{"version": "1"}\n'
    tree = checkout(url, sha, tmp_path / "tree", tmp_path / "fresh-cache", auth=auth)
    assert (tree / "Dockerfile.amd64").exists()
    assert any(r.startswith("POST ") and r.endswith(" authorized") for r in http_git.requests)  # real smart HTTP
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert not any(TOKEN in r or basic in r for r in http_git.requests)  # never in a URL
    assert argv and not any(TOKEN in part or basic in part for cmd, _ in argv for part in cmd)
    for config in [*cache.glob("*.git/config"), *(tmp_path / "fresh-cache").glob("*.git/config"),
                   tree / ".git" / "config"]:
        text = config.read_text()
        assert TOKEN not in text and basic not in text and "extraheader" not in text.lower()


def test_without_the_token_a_private_source_is_refused(http_git: HttpGitServer, repo: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError) as refused:
        resolve_ref(http_git.url(repo), "v1.0.0", tmp_path / "cache")
    assert "source_auth" in str(refused.value) and refused.value.transient is False


def test_a_wrong_token_is_refused_naming_its_reference_never_its_value(http_git: HttpGitServer, repo: Path,
                                                                        tmp_path: Path) -> None:
    wrong = "ghp_wr0ngT0kenValue0123456789abcdef"
    with pytest.raises(SourceError) as refused:
        resolve_ref(http_git.url(repo), "v1.0.0", tmp_path / "cache", auth=token_auth(wrong))
    message = str(refused.value)
    assert f"the git server refused the token from {WHERE}.token (env:GIT_TOKEN, user x-access-token)" in message
    basic = base64.b64encode(f"x-access-token:{wrong}".encode()).decode()
    assert wrong not in message and basic not in message
    assert refused.value.transient is False


def test_a_rotated_token_is_read_again_once(http_git: HttpGitServer, repo: Path, tmp_path: Path) -> None:
    """The resolver's cached value was refused: the worker forgets it and reads the reference again."""
    values = iter(["ghp_stale", TOKEN])
    forgotten: list[str] = []

    class Rotating(SecretResolver):
        def resolve(self, ref: SecretRef) -> Any:
            from edgebot.secrets import Secret

            return Secret(next(values), ref)

        def invalidate(self, *refs: SecretRef | None) -> None:
            forgotten.extend(str(r) for r in refs)

    auth = GitAuth(SourceAuth(where=WHERE, token=SecretRef("vault", "secret/data/src#token")), Rotating())
    assert resolve_ref(http_git.url(repo), "v1.0.0", tmp_path / "cache", auth=auth)
    assert forgotten == ["vault:secret/data/src#token"]
