"""``[services.X.source_auth]`` in the catalog: references only, host keys pinned for SSH, and a specific message with
the fix for every mistake (edgebot/source_auth.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edgebot.config import parse_config
from edgebot.errors import ConfigError
from edgebot.secrets import SecretRef
from edgebot.source_auth import DEFAULT_USERNAME, transport
from tests.test_config import BASE

PINNED = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
KEY = "vault:secret/data/edgebot/sources/hello#ssh_key"
TOKEN = "vault:secret/data/edgebot/sources/hello#token"


def service(source: str, auth: dict[str, Any] | None) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["services"]["hello"]["source"] = source
    if auth is not None:
        data["services"]["hello"]["source_auth"] = auth
    return data


def test_a_token_for_https_and_a_deploy_key_for_ssh() -> None:
    auth = parse_config(service("https://github.com/acme/hello.git", {"token": TOKEN})).services["hello"].source_auth
    assert auth is not None and auth.token == SecretRef("vault", "secret/data/edgebot/sources/hello#token")
    assert auth.username == DEFAULT_USERNAME == "x-access-token" and auth.ssh_key is None
    gitlab = parse_config(service("https://gitlab.com/acme/hello.git", {"token": TOKEN, "username": "oauth2"}))
    assert gitlab.services["hello"].source_auth.username == "oauth2"  # type: ignore[union-attr]
    for source in ("ssh://git@github.com/acme/hello.git", "git@github.com:acme/hello.git"):
        ssh = parse_config(service(source, {"ssh_key": KEY, "known_hosts": [PINNED]})).services["hello"].source_auth
        assert ssh is not None and ssh.ssh_key == SecretRef("vault", "secret/data/edgebot/sources/hello#ssh_key")
        assert ssh.known_hosts == (PINNED,) and ssh.where == "services.hello.source_auth"
    from_file = parse_config(service("ssh://git@github.com/acme/hello.git",
                                     {"ssh_key": KEY, "known_hosts": "file:/etc/edgebot/known_hosts"}))
    assert from_file.services["hello"].source_auth.known_hosts_file == "/etc/edgebot/known_hosts"  # type: ignore
    assert parse_config(BASE).services["hello"].source_auth is None  # a public source needs none


@pytest.mark.parametrize(("source", "auth", "fragment"), [
    ("ssh://git@github.com/acme/hello.git", {"ssh_key": KEY},
     "services.hello.source_auth.known_hosts is required with ssh_key"),
    ("ssh://git@github.com/acme/hello.git", {"ssh_key": KEY, "known_hosts": []}, "known_hosts is required"),
    ("ssh://git@github.com/acme/hello.git", None,
     "services.hello.source is an SSH URL: add [services.hello.source_auth] with ssh_key"),
    ("ssh://git@github.com/acme/hello.git", {"token": TOKEN},
     "services.hello.source_auth.token: a token works over HTTPS only, and the source is an SSH URL"),
    ("git@github.com:acme/hello.git", {"token": TOKEN}, "a token works over HTTPS only"),
    ("https://github.com/acme/hello.git", {"ssh_key": KEY, "known_hosts": [PINNED]},
     "a deploy key works over SSH only, and the source is https"),
    ("https://builder:ghp_literal@github.com/acme/hello.git", None,
     "services.hello.source has a credential in the URL (user:secret@host): remove it"),
    ("https://builder:ghp_literal@github.com/acme/hello.git", {"token": TOKEN}, "has a credential in the URL"),
    ("https://github.com/acme/hello.git", {"token": "ghp_literal"}, "a secret must be a reference, not a literal"),
    ("ssh://git@github.com/acme/hello.git", {"ssh_key": "-----BEGIN OPENSSH PRIVATE KEY-----", "known_hosts": [PINNED]},
     "a secret must be a reference"),
    ("https://github.com/acme/hello.git", {"token": TOKEN, "ssh_key": KEY}, "needs exactly one of token"),
    ("https://github.com/acme/hello.git", {}, "needs exactly one of token"),
    ("https://github.com/acme/hello.git", {"token": TOKEN, "password": "x"}, "unknown key(s) password"),
    ("https://github.com/acme/hello.git", {"token": TOKEN, "username": "a:b"}, "username must be a non-empty name"),
    ("https://github.com/acme/hello.git", {"token": TOKEN, "known_hosts": [PINNED]}, "has no use with a token"),
    ("/srv/git/hello.git", {"token": TOKEN}, "is a local path or file:// URL, which takes no credentials"),
    ("ssh://git@github.com/acme/hello.git", {"ssh_key": KEY, "known_hosts": ["github.com"]},
     "known_hosts entry 1: expected 'host keytype base64-key'"),
    ("ssh://git@github.com/acme/hello.git", {"ssh_key": KEY, "known_hosts": ["github.com ssh-ed25519 !!!"]},
     "known_hosts entry 1: expected"),
    ("ssh://git@github.com/acme/hello.git", {"ssh_key": KEY, "known_hosts": ["@cert-authority * " + PINNED]},
     "markers (@cert-authority, @revoked) are not supported"),
    ("ssh://git@github.com/acme/hello.git", {"ssh_key": KEY, "known_hosts": [PINNED], "username": "git"},
     "the SSH user belongs in the URL"),
])
def test_mistakes_are_refused_with_the_fix(source: str, auth: dict[str, Any] | None, fragment: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(service(source, auth))
    assert fragment in str(refused.value)
    assert "ghp_literal" not in str(refused.value)


@pytest.mark.parametrize(("source", "kind"), [
    ("https://github.com/a/b.git", "https"), ("http://127.0.0.1:8080/b.git", "http"),
    ("ssh://git@github.com/a/b.git", "ssh"), ("git@github.com:a/b.git", "ssh"), ("github.com:a/b.git", "ssh"),
    ("/srv/git/b.git", "local"), ("./b.git", "local"), ("file:///srv/git/b.git", "local"),
])
def test_transport(source: str, kind: str) -> None:
    assert transport(source) == kind
