"""Secret references: the config file names where a secret lives, never the secret itself.

A reference is one of::

    env:NAME                      an environment variable of the process that needs it
    file:/path/to/file            a file's content (trailing newline stripped), e.g. a mounted Kubernetes secret
    vault:<path>#<key>            a KV v2 secret in Vault / OpenBao (resolved by a Vault-aware resolver)

Resolved values are wrapped in :class:`Secret`, whose ``repr``/``str`` never show the value, so a secret that ends up
in a log line, an exception or a job payload by mistake shows as ``Secret(env:NAME)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edgebot.errors import ConfigError, SecretUnavailable

_REF_RE = re.compile(r"^(env|file|vault):(.+)$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SecretRef:
    scheme: str
    target: str

    @classmethod
    def parse(cls, text: str, *, where: str) -> SecretRef:
        """Parse ``text`` or refuse it with a message naming ``where`` (the config key) and the accepted forms."""
        match = _REF_RE.match(text.strip()) if isinstance(text, str) else None
        if not match:
            raise ConfigError(
                f"{where}: a secret must be a reference, not a literal value. Use env:NAME, file:/path or "
                f"vault:<path>#<key> and put the value there."
            )
        scheme, target = match.group(1), match.group(2)
        if scheme == "env" and not _ENV_NAME_RE.match(target):
            raise ConfigError(f"{where}: {target!r} is not an environment variable name")
        if scheme == "vault" and ("#" not in target or target.endswith("#") or target.startswith("#")):
            raise ConfigError(f"{where}: vault references look like vault:secret/data/path#key (the #key is missing)")
        return cls(scheme, target)

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"


class Secret:
    """A resolved secret value that refuses to be printed."""

    __slots__ = ("_value", "ref")

    def __init__(self, value: str, ref: SecretRef | str) -> None:
        self._value = value
        self.ref = str(ref)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.ref})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


VaultReader = Callable[[str, str], str]
"""Reads ``(path, key)`` from Vault; plugged in by the process that is allowed to talk to Vault."""


class SecretResolver:
    """Resolves references. ``env`` and ``file`` always work; ``vault`` needs a reader for this process's role."""

    def __init__(self, environ: Mapping[str, str] | None = None, vault: VaultReader | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._vault = vault

    @property
    def vault(self) -> VaultReader | None:
        """The Vault reader of this process (None when it has no Vault access), e.g. for Transit signing."""
        return self._vault

    def invalidate(self, *refs: SecretRef | None) -> None:
        """Forget what is cached for these references, so the next :meth:`resolve` reads them afresh (after a
        service refused them: rotated credentials). ``env:`` and ``file:`` are never cached; ``vault:`` values
        are dropped from the reader's cache when it has one."""
        forget = getattr(self._vault, "invalidate", None)
        if forget is None:
            return
        for ref in refs:
            if ref is not None and ref.scheme == "vault":
                forget(ref.target.partition("#")[0])

    def resolve(self, ref: SecretRef) -> Secret:
        if ref.scheme == "env":
            value = self._environ.get(ref.target)
            if not value:
                raise SecretUnavailable(f"{ref}: environment variable {ref.target} is not set in this process")
            return Secret(value, ref)
        if ref.scheme == "file":
            try:
                value = Path(ref.target).read_text().rstrip("\n")
            except OSError as exc:
                raise SecretUnavailable(f"{ref}: cannot read the file ({exc.strerror})") from None
            if not value:
                raise SecretUnavailable(f"{ref}: the file is empty")
            return Secret(value, ref)
        if ref.scheme == "vault":
            if self._vault is None:
                raise SecretUnavailable(f"{ref}: this process has no Vault access configured ([vault] in the config)")
            path, _, key = ref.target.partition("#")
            return Secret(self._vault(path, key), ref)
        raise SecretUnavailable(f"{ref}: unknown reference scheme")
