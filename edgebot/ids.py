"""Names and identifiers shared by the bot and the workers: release ids, arch names, versions, Exchange ids."""

from __future__ import annotations

import re
import secrets

GO_ARCHES = ("amd64", "arm", "arm64", "ppc64le", "s390x", "riscv64")
"""Open Horizon arch names are Go's GOARCH values (not Debian's ppc64el/armhf)."""

VERSION_RE = re.compile(r"^\d+(\.\d+){0,2}$")
"""The only versions the Exchange accepts (utility/Version.scala): 1, 1.2 or 1.2.3, no suffixes."""

RELEASE_ID_RE = re.compile(r"^r-(?:[0-9a-f]{16}|[0-9a-f]{6})$")
"""``r-`` and 16 hex digits (64 random bits); the 6-digit ids of older releases are still read."""

_SANITIZE_RE = re.compile(r"[$!*,;/?@&~=%]")
_SCHEME_RE = re.compile(r"^[A-Za-z0-9+.-]*?://")


def new_release_id() -> str:
    """``r-`` and 64 random bits in hex (``r-7f3a9c0d12e4b856``): collisions are negligible, and
    :meth:`edgebot.store.ReleaseStore.create` refuses one anyway. Valid in RQ job ids (``[A-Za-z0-9_-]``)."""
    return "r-" + secrets.token_hex(8)


def exchange_service_id(url: str, version: str, arch: str) -> str:
    """The Exchange's id for a service, computed exactly like anax's FormExchangeId and the Exchange's formId."""
    stripped = _SCHEME_RE.sub("", url, count=1)
    return f"{_SANITIZE_RE.sub('-', stripped)}_{version}_{arch}"


def image_repository(host: str, namespace: str, image_base: str, arch: str) -> str:
    """``host/ns/base_arch``: one repository per arch, the arch a suffix of the name (hzn's convention)."""
    parts = [host.rstrip("/")]
    if namespace:
        parts.append(namespace.strip("/"))
    parts.append(f"{image_base}_{arch}")
    return "/".join(parts)


def docker_image_base(host: str, namespace: str, image_base: str) -> str:
    """The value of ``DOCKER_IMAGE_BASE`` for a definition: ``host/ns/base`` (the arch is appended by the file)."""
    return image_repository(host, namespace, image_base, "x")[: -len("_x")]
