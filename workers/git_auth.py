"""git with a private source's credentials: never in argv, never in a file git keeps, never in a message.

HTTPS token: handed to git through its environment as configuration (``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/
``GIT_CONFIG_VALUE_n``, git ≥ 2.31): ``http.<scheme://host/>.extraHeader = Authorization: Basic …``, scoped to the
source's host, and ``credential.helper`` emptied so no helper is asked or told. Chosen over a ``GIT_ASKPASS`` script
because nothing is written to disk and no extra program runs: a child's environment is readable only by its own uid
(``/proc/<pid>/environ`` is mode 0400), the uid that holds the token anyway, while argv is world-readable (``ps``).
The header is not saved in the mirror's config (``git config`` never writes environment configuration), and curl
drops an ``Authorization`` header on a redirect to another host.

SSH deploy key: written to a 0600 file in a fresh 0700 temporary directory, beside a known_hosts file of exactly the
catalog's pinned keys, both deleted when the git command ends. ``GIT_SSH_COMMAND`` runs ssh with ``-F /dev/null``
(no user config), ``BatchMode=yes`` (never a prompt), ``StrictHostKeyChecking=yes`` with only that known_hosts file
(no trust-on-first-use, no global file), ``IdentitiesOnly=yes`` and ``IdentityAgent=none`` (only the deploy key).
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from edgebot.config import ServiceConfig
from edgebot.errors import SecretUnavailable
from edgebot.secrets import SecretResolver
from edgebot.source_auth import SourceAuth, transport

SSH_CONNECT_TIMEOUT = 30
"""Seconds ssh waits for the TCP connection to a git server."""


@dataclass(frozen=True)
class GitAuth:
    """A service's source credentials and the resolver that reads them, only when git needs the network."""

    auth: SourceAuth
    resolver: SecretResolver = field(repr=False)

    def forget(self) -> None:
        """Drop cached values (the server refused them: they may have been rotated in Vault)."""
        self.resolver.invalidate(*self.auth.refs)


def git_auth_for(service: ServiceConfig, resolver: SecretResolver) -> GitAuth | None:
    """The credentials to fetch ``service``'s source with, or None for a public source."""
    return GitAuth(service.source_auth, resolver) if service.source_auth is not None else None


@dataclass
class GitCredentials:
    """What one git command gets: environment variables, and the strings to scrub from anything it prints."""

    env: dict[str, str]
    scrub: tuple[str, ...]


@contextmanager
def credentials(auth: GitAuth | None, source: str) -> Iterator[GitCredentials]:
    """The environment for git commands that reach ``source``; temporary files are removed on exit."""
    if auth is None:
        yield GitCredentials({}, ())
        return
    if auth.auth.token is not None:
        token = auth.resolver.resolve(auth.auth.token).reveal()
        basic = base64.b64encode(f"{auth.auth.username}:{token}".encode()).decode("ascii")
        yield GitCredentials(_config_env({f"http.{_scope(source)}.extraHeader": f"Authorization: Basic {basic}",
                                          "credential.helper": ""}),
                             (token, basic))
        return
    assert auth.auth.ssh_key is not None
    key = auth.resolver.resolve(auth.auth.ssh_key).reveal()
    hosts = _known_hosts(auth.auth)
    tmp = Path(tempfile.mkdtemp(prefix="edgebot-ssh-"))  # 0700
    try:
        key_file, hosts_file = tmp / "deploy_key", tmp / "known_hosts"
        _write_private(key_file, key.replace("\r\n", "\n").strip("\n") + "\n")
        _write_private(hosts_file, hosts)
        command = shlex.join([
            "ssh", "-F", "/dev/null", "-i", str(key_file),
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={hosts_file}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
            "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT}", "-o", "LogLevel=ERROR",
        ])
        yield GitCredentials({"GIT_SSH_COMMAND": command, "GIT_SSH_VARIANT": "ssh", "SSH_ASKPASS_REQUIRE": "never"},
                             tuple(line for line in key.splitlines() if len(line) > 16))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _config_env(values: dict[str, str]) -> dict[str, str]:
    env = {"GIT_CONFIG_COUNT": str(len(values))}
    for number, (key, value) in enumerate(values.items()):
        env[f"GIT_CONFIG_KEY_{number}"] = key
        env[f"GIT_CONFIG_VALUE_{number}"] = value
    return env


def _scope(source: str) -> str:
    """``scheme://host[:port]/``: the header goes to the source's server only."""
    parts = urlsplit(source)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return f"{parts.scheme.lower()}://{netloc}/"


def _known_hosts(auth: SourceAuth) -> str:
    if auth.known_hosts_file:
        try:
            return Path(auth.known_hosts_file).read_text()
        except OSError as exc:  # reported like an unreadable file: secret (failures.translated)
            raise SecretUnavailable(f"{auth.where}.known_hosts: cannot read {auth.known_hosts_file} "
                                    f"({exc.strerror})") from None
    return "\n".join(auth.known_hosts) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def ssh_host(source: str) -> str:
    """The host as known_hosts names it: ``host``, or ``[host]:port`` for a port other than 22."""
    if "://" in source:
        parts = urlsplit(source)
        host = parts.hostname or "?"
        return f"[{host}]:{parts.port}" if parts.port and parts.port != 22 else host
    return source.split("@", 1)[-1].split(":", 1)[0]


# -- what a user reads when the server says no --------------------------------------------------------------------

def refusal(auth: GitAuth | None, source: str, stderr: str) -> str | None:
    """The message for a git failure caused by the credentials or the pinned host keys, or None."""
    lowered = stderr.lower()
    if auth is None:
        return None
    config = auth.auth
    if transport(source) == "ssh":
        host = ssh_host(source)
        if ("host key verification failed" in lowered or "host key is known for" in lowered
                or "remote host identification has changed" in lowered):
            port = host.rpartition("]:")[2] if host.startswith("[") else ""
            name = host[1:].partition("]")[0] if host.startswith("[") else host
            scan = f"ssh-keyscan {'-p ' + port + ' ' if port else ''}{name}"
            return (f"the host key of {host} is not the one pinned in {config.where}.known_hosts: nothing was "
                    f"fetched. Get the server's current key out of band (`{scan}`, its fingerprint compared with "
                    "the one the git host publishes) and update known_hosts; if the key did not change, someone "
                    "may be intercepting the connection")
        if "load key" in lowered or "invalid format" in lowered or "no such identity" in lowered:
            return (f"{config.where}.ssh_key ({config.ssh_key}) is not a private key ssh can use: store the whole "
                    "OpenSSH private key file, without a passphrase")
        if "permission denied" in lowered:
            return (f"the git server at {host} refused the deploy key from {config.where}.ssh_key "
                    f"({config.ssh_key}): check that the key at that reference is the private half of a deploy "
                    "key with read access to this repository")
        if "ssh: not found" in lowered or "cannot run ssh" in lowered:
            return "ssh is not installed on this worker: install openssh-client"
        return None
    if ("authentication failed" in lowered or "terminal prompts disabled" in lowered
            or "could not read username" in lowered or "could not read password" in lowered
            or "returned error: 401" in lowered or "returned error: 403" in lowered):
        return (f"the git server refused the token from {config.where}.token ({config.token}, user "
                f"{config.username}): check that the token at that reference is valid, not expired, and may read "
                "this repository")
    return None
