"""A private source's credentials in the catalog: ``[services.X.source_auth]``, parsed and checked.

Only references live in the config (edgebot.secrets): a token for HTTPS, or a deploy key for SSH with the server's
host keys pinned (``known_hosts``; there is no trust-on-first-use). The workers use them (workers/git_auth.py); the
bot never reads a source, it only loads the catalog, which is why the parsing sits on the shared side::

    [services.hello.source_auth]          # HTTPS
    token = "vault:secret/data/edgebot/sources/hello#token"
    username = "x-access-token"           # optional; GitLab deploy tokens: the token's username

    [services.hello.source_auth]          # SSH
    ssh_key = "vault:secret/data/edgebot/sources/hello#ssh_key"
    known_hosts = ["github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"]
    # or known_hosts = "file:/etc/edgebot/known_hosts"
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from edgebot.errors import ConfigError, refuse_unknown_keys
from edgebot.secrets import SecretRef

DEFAULT_USERNAME = "x-access-token"
"""The HTTPS username sent with a token when the catalog names none: GitHub's for app and fine-grained tokens (any
non-empty name works with a GitHub personal token); GitLab accepts it with personal, project and group access tokens
(``oauth2`` is GitLab's for OAuth tokens); a GitLab deploy token needs its own username, Bitbucket ``x-token-auth``."""

_KNOWN_HOST = re.compile(r"^(?P<hosts>\S+)\s+(?P<type>(?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+)\s+(?P<key>[A-Za-z0-9+/=]+)"
                         r"(?:\s+.*)?$")
_SCP_LIKE = re.compile(r"^(?:[^/@:\s]+@)?[^/:\s]+:(?!//)")


@dataclass(frozen=True)
class SourceAuth:
    """One service's source credentials: ``token`` (HTTPS) or ``ssh_key`` with pinned ``known_hosts``."""

    where: str
    """The config key, ``services.X.source_auth``, for messages."""
    token: SecretRef | None = None
    username: str = DEFAULT_USERNAME
    ssh_key: SecretRef | None = None
    known_hosts: tuple[str, ...] = ()
    """``known_hosts`` lines (``host keytype base64``)."""
    known_hosts_file: str = ""
    """Or a file of them (``known_hosts = "file:/path"``), read by the worker when it connects."""

    @property
    def refs(self) -> tuple[SecretRef, ...]:
        return tuple(ref for ref in (self.token, self.ssh_key) if ref is not None)


def transport(source: str) -> str:
    """``https``, ``http``, ``ssh`` or ``local`` (a path or file:// URL) for a service's ``source``."""
    if "://" in source:
        scheme = source.split("://", 1)[0].lower()
        if scheme in ("ssh", "git+ssh", "ssh+git"):
            return "ssh"
        if scheme in ("http", "https"):
            return scheme
        return "local" if scheme == "file" else scheme
    if _SCP_LIKE.match(source) and not source.startswith(("/", ".", "~")):
        return "ssh"
    return "local"


def check_source_url(where: str, source: str) -> None:
    """Refuse a password or token written into an HTTP(S) source URL: it would sit in the config and in the
    mirror's config on every worker. The reference belongs in ``source_auth.token``."""
    if transport(source) not in ("http", "https"):
        return
    try:
        parts = urlsplit(source)
    except ValueError:
        raise ConfigError(f"{where}.source is not a valid URL") from None
    if parts.password is not None:
        raise ConfigError(
            f"{where}.source has a credential in the URL (user:secret@host): remove it and put a reference to the "
            f"token in [{where}.source_auth] token = \"vault:<path>#<key>\" (username = \"{parts.username}\")"
        )


def parse_source_auth(where: str, table: Any, source: str) -> SourceAuth | None:
    """``[services.X.source_auth]`` for a service whose ``source`` is given, or None when the table is absent.

    An ``ssh`` source must have one (a deploy key and pinned host keys: a worker never trusts a host key it first
    sees, and never prompts)."""
    check_source_url(where, source)
    kind = transport(source)
    here = f"{where}.source_auth"
    if table is None:
        if kind == "ssh":
            raise ConfigError(
                f"{where}.source is an SSH URL: add [{here}] with ssh_key = \"vault:<path>#<key>\" (a deploy key) "
                f"and known_hosts = [\"host ssh-ed25519 AAAA…\"] (the server's host keys, checked out of band), "
                "or use an https:// source"
            )
        return None
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{here}] must be a table")
    refuse_unknown_keys(table, f"[{here}]", {"token", "username", "ssh_key", "known_hosts"})
    if kind == "local":
        raise ConfigError(f"[{here}]: {where}.source is a local path or file:// URL, which takes no credentials: "
                          "remove the table")
    if ("token" in table) == ("ssh_key" in table):
        raise ConfigError(f"[{here}] needs exactly one of token (an https:// source) or ssh_key (an ssh:// or "
                          "git@host:path source)")
    if "token" in table:
        return _token_auth(here, table, kind)
    return _ssh_auth(here, table, kind)


def _token_auth(here: str, table: Mapping[str, Any], kind: str) -> SourceAuth:
    if kind == "ssh":
        raise ConfigError(f"{here}.token: a token works over HTTPS only, and the source is an SSH URL: use "
                          "ssh_key with known_hosts, or change the source to its https:// URL")
    if "known_hosts" in table:
        raise ConfigError(f"{here}.known_hosts pins SSH host keys and has no use with a token: remove it")
    username = table.get("username", DEFAULT_USERNAME)
    if not isinstance(username, str) or not username or ":" in username or any(c.isspace() for c in username):
        raise ConfigError(f"{here}.username must be a non-empty name without ':' or spaces (default "
                          f"{DEFAULT_USERNAME!r})")
    token = SecretRef.parse(table["token"], where=f"{here}.token")
    return SourceAuth(where=here, token=token, username=username)


def _ssh_auth(here: str, table: Mapping[str, Any], kind: str) -> SourceAuth:
    if kind != "ssh":
        raise ConfigError(f"{here}.ssh_key: a deploy key works over SSH only, and the source is {kind}: use token, "
                          "or change the source to its ssh:// URL")
    if "username" in table:
        raise ConfigError(f"{here}.username is for tokens: the SSH user belongs in the URL (ssh://git@host/…)")
    key = SecretRef.parse(table["ssh_key"], where=f"{here}.ssh_key")
    hosts = table.get("known_hosts")
    fix = (f"{here}.known_hosts is required with ssh_key: the server's host keys, e.g. [\"github.com ssh-ed25519 "
           "AAAA…\"] (from `ssh-keyscan -t ed25519 HOST`, compared with the fingerprints the git host publishes), "
           "or \"file:/path\" to a known_hosts file; a worker never trusts a host key it first sees")
    if isinstance(hosts, str) and hosts.startswith("file:/"):
        return SourceAuth(where=here, ssh_key=key, known_hosts_file=hosts.removeprefix("file:"))
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(fix)
    for number, line in enumerate(hosts, 1):
        problem = known_hosts_problem(line)
        if problem:
            raise ConfigError(f"{here}.known_hosts entry {number}: {problem}")
    return SourceAuth(where=here, ssh_key=key, known_hosts=tuple(h.strip() for h in hosts))


def known_hosts_problem(line: str) -> str | None:
    """Why ``line`` is not a usable known_hosts entry (``host[,host…] keytype base64``), or None."""
    text = line.strip()
    if not text or "\n" in text or "\r" in text:
        return "one entry per list item, not empty"
    if text.startswith("@"):
        return "markers (@cert-authority, @revoked) are not supported: list the host's keys"
    match = _KNOWN_HOST.match(text)
    if not match:
        return "expected 'host keytype base64-key' as `ssh-keyscan` prints it (e.g. 'github.com ssh-ed25519 AAAA…')"
    try:
        base64.b64decode(match.group("key"), validate=True)
    except (binascii.Error, ValueError):
        return "the key is not valid base64"
    return None
