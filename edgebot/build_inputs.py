"""A service's build inputs, the catalog's ``[services.X.build]`` table: which builder, build args, build secrets,
base-image refresh and the registry-backed layer cache (docs/configuration.md, "Build inputs").

Parsed here, at config load, so a wrong table is refused before any release starts: a secret or a registry cache
asked of the Engine builder (docker-py drives the legacy builder, which has neither) is a config error that says to
set ``builder = "buildah"``. Secrets are references (``vault:path#key``, ``env:``, ``file:``), never values; the
build worker reads them when it builds, like the registry push credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgebot.errors import ConfigError, refuse_unknown_keys
from edgebot.secrets import SecretRef

BUILDERS = ("engine", "buildah")
PLACEHOLDERS = ("version", "arch", "commit")
_ARG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SECRET_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
_CACHE_REPO_RE = re.compile(r"^[a-z0-9][a-z0-9.:_-]*(/[a-z0-9][a-z0-9._-]*)+$")


@dataclass(frozen=True)
class BuildConfig:
    """``[services.X.build]``; the defaults are what edgebot did before the table existed."""

    builder: str = "engine"
    args: tuple[tuple[str, str], ...] = ()
    """``(NAME, template)``: the template's ``{version}``, ``{arch}`` and ``{commit}`` are filled in per build."""
    secrets: tuple[tuple[str, SecretRef], ...] = ()
    """``(id, reference)``: mounted by ``RUN --mount=type=secret,id=…`` (buildah only)."""
    pull: bool = False
    """True: look for a newer base image at every build; False: use the one the worker has, pull it if missing."""
    cache: str | bool = False
    """A registry repository for the layer cache (buildah only); True: ``<image repository>-cache``."""

    def build_args(self, *, version: str, arch: str, commit: str) -> dict[str, str]:
        """The build args of one build, placeholders filled in."""
        values = {"version": version, "arch": arch, "commit": commit}
        return {name: _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template) for name, template in self.args}

    def cache_repository(self, image_repository: str) -> str:
        """The repository the layer cache goes to for images of ``image_repository``; "" for none."""
        if self.cache is True:
            return f"{image_repository}-cache"
        return self.cache or ""


def parse_build(where: str, table: Any) -> BuildConfig:
    """The ``build`` table at ``where`` (e.g. ``services.hello.build``), or :class:`ConfigError` with the fix."""
    if table is None:
        return BuildConfig()
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    refuse_unknown_keys(table, f"[{where}]", {"builder", "args", "secrets", "pull", "cache"})
    builder = table.get("builder", "engine")
    if builder not in BUILDERS:
        raise ConfigError(f"{where}.builder must be one of {', '.join(repr(b) for b in BUILDERS)}, got {builder!r}")
    pull = table.get("pull", False)
    if not isinstance(pull, bool):
        raise ConfigError(f"{where}.pull must be true or false (without quotes), got {pull!r}")
    config = BuildConfig(builder=builder, args=_args(where, table.get("args", {})),
                         secrets=_secrets(where, table.get("secrets", {})), pull=pull,
                         cache=_cache(where, table.get("cache", False)))
    if builder == "engine" and config.secrets:
        raise ConfigError(f"{where}.secrets needs builder = \"buildah\": the Docker Engine builder edgebot drives "
                          "(docker-py, the legacy builder) cannot mount build secrets, and a secret passed any other "
                          f"way would end up in an image layer. Set builder = \"buildah\" in [{where}].")
    if builder == "engine" and config.cache:
        raise ConfigError(f"{where}.cache (a registry-backed layer cache) needs builder = \"buildah\": the Docker "
                          f"Engine builder caches layers only on its own host. Set builder = \"buildah\" in [{where}] "
                          "or remove cache.")
    return config


def _args(where: str, table: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}.args must be a table such as {{ VERSION = \"{{version}}\" }}")
    args = []
    for name, template in table.items():
        if not _ARG_NAME_RE.match(name):
            raise ConfigError(f"{where}.args: {name!r} is not a build arg name (letters, digits and _, not starting "
                              "with a digit)")
        if not isinstance(template, str):
            raise ConfigError(f"{where}.args.{name} must be a string (a literal, or one with {{version}}, {{arch}} "
                              f"or {{commit}}), got {template!r}")
        for placeholder in _PLACEHOLDER_RE.findall(template):
            if placeholder not in PLACEHOLDERS:
                raise ConfigError(f"{where}.args.{name}: {{{placeholder}}} is not a placeholder; known: "
                                  + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
        args.append((name, template))
    return tuple(args)


def _secrets(where: str, table: Any) -> tuple[tuple[str, SecretRef], ...]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}.secrets must be a table such as {{ npmrc = \"vault:secret/data/edgebot/build/"
                          "npm#npmrc\" }")
    secrets = []
    for secret_id, ref in table.items():
        if not _SECRET_ID_RE.match(secret_id):
            raise ConfigError(f"{where}.secrets: {secret_id!r} is not a secret id (letters, digits, '.', '_' and "
                              "'-', as in RUN --mount=type=secret,id=…)")
        secrets.append((secret_id, SecretRef.parse(ref, where=f"{where}.secrets.{secret_id}")))
    return tuple(secrets)


def _cache(where: str, value: Any) -> str | bool:
    if isinstance(value, bool):
        return value
    if not isinstance(value, str) or not _CACHE_REPO_RE.match(value) or "@" in value:
        raise ConfigError(f"{where}.cache must be true, false or a registry repository such as "
                          f"\"registry.example.com:5000/edge/hello-cache\" (no tag), got {value!r}")
    return value
