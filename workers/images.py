"""Build and push images with the Docker SDK (never the docker CLI), the way edgebot's build workers do.

A failed build or push does not raise in the SDK's streaming API: the stream's ``error`` entries are read and turned
into exceptions that carry the tail of the log. Credentials go with each push (``X-Registry-Auth``), so no
``docker login`` state or ``~/.docker/config.json`` is left behind, and they are scrubbed from every message.

What the classic builder (Docker Engine 20.10, Debian's docker.io, on an amd64 host) does with ``platform`` —
checked on this machine, and the reason every build is verified before it may be pushed:

* ``FROM scratch`` with ``platform=linux/arm64`` (or ``linux/arm/v7``) and a cold cache gives an image whose
  ``Architecture`` is ``arm64`` (``arm`` + ``Variant v7``): the engine only labels it; nothing is emulated, so
  ``COPY`` works and a ``RUN`` runs whatever binary is there on the host's CPU (a foreign binary needs qemu, which
  this machine does not have, and fails with "exec format error").
* The build cache ignores the platform. Once a step was built for one arch, a build of the same steps for another
  arch reuses it, and the image comes out with the first arch (arm64 first, then amd64 → "amd64" image says arm64).
  Build-time labels do not help: the engine appends them as a last ``LABEL`` step, after the reused ones.
* ``FROM <local image>`` with another ``platform`` silently uses the local image (``pull=False``): the result has
  the base image's arch, whatever was asked for.

So :func:`build_image` compares the image's ``Architecture`` with the target; when it differs and the build reused
cached steps, it rebuilds once with ``nocache`` (that fixes the first kind), and if the arch is still wrong (the
base image's arch) it raises :class:`WrongArchitecture`. Per-arch base images (``FROM amd64/…`` / ``FROM arm64v8/…``)
keep the arches' caches apart from the start, which is what the sample service does.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

GO_ARCH_TO_PLATFORM = {
    "amd64": "linux/amd64",
    "arm64": "linux/arm64",
    "arm": "linux/arm/v7",
    "ppc64le": "linux/ppc64le",
    "s390x": "linux/s390x",
    "riscv64": "linux/riscv64",
}
ARCH_LABEL = "io.edgebot.arch"

_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64}) size:")
_PINNABLE_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# worth a retry: the registry or the network had a bad moment; 401/403/x509/unknown host are not
_TRANSIENT_RE = re.compile(
    r"HTTP status: 5\d\d|\b50[0-4]\b|\b429\b|too many requests|timeout|timed out|connection refused"
    r"|connection reset|broken pipe|unexpected EOF|: EOF\b|service unavailable|bad gateway|temporar",
    re.IGNORECASE,
)


class ImageError(Exception):
    """Base class of build and push failures; messages never contain credentials."""


@dataclass
class BuildFailed(ImageError):
    """The Dockerfile did not build; ``log_tail`` holds the last lines of the build output (the user's clue)."""

    message: str
    log_tail: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


@dataclass
class WrongArchitecture(ImageError):
    """The built image is for another arch than the target (base image of another arch, even without cache)."""

    expected: str
    actual: str

    def __str__(self) -> str:
        return f"the built image is for {self.actual or 'an unknown arch'}, not {self.expected}"


@dataclass
class PushFailed(ImageError):
    """The registry (or the way to it) refused the push. ``transient``: 5xx, timeouts, refused connections."""

    message: str
    log_tail: list[str] = field(default_factory=list)
    transient: bool = False

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class BuiltImage:
    image_id: str
    tag: str
    architecture: str
    log_tail: list[str]


def _lines(entry: dict[str, Any]) -> Iterator[str]:
    for key in ("stream", "status", "error"):
        value = entry.get(key)
        if isinstance(value, str):
            for line in value.splitlines():
                if line.strip():
                    yield line.rstrip()


def _error_text(entry: dict[str, Any]) -> str | None:
    if "error" not in entry and "errorDetail" not in entry:
        return None
    detail = entry.get("errorDetail")
    message = detail.get("message") if isinstance(detail, dict) else None
    return str(message or entry.get("error") or "unknown error").strip()


def build_image(client: docker.DockerClient, *, context_dir: Path, dockerfile: str, tag: str, arch: str,
                labels: dict[str, str] | None = None, log_lines: int = 40) -> BuiltImage:
    """Build ``dockerfile`` in ``context_dir`` for ``arch`` (a Go arch name) as ``tag``; check the result's arch.

    Raises :class:`BuildFailed` (with the log tail) or :class:`WrongArchitecture`.
    """
    platform = GO_ARCH_TO_PLATFORM.get(arch)
    if platform is None:
        raise BuildFailed(f"unknown arch {arch!r}; known: {', '.join(GO_ARCH_TO_PLATFORM)}")
    if not (Path(context_dir) / dockerfile).is_file():
        raise BuildFailed(f"{dockerfile} not found in the build context")
    all_labels = {**(labels or {}), ARCH_LABEL: arch}
    tail: deque[str] = deque(maxlen=max(1, log_lines))
    image_id, used_cache = _build(client, tail, path=str(context_dir), dockerfile=dockerfile, tag=tag,
                                  platform=platform, labels=all_labels, nocache=False)
    actual = _architecture(client, tag)
    if actual != arch and used_cache:
        # the cache ignores the platform: steps built for another arch were reused. Build them afresh once.
        tail.append(f"[edgebot] image came out {actual or 'without an arch'} from cached steps; rebuilding "
                    f"for {arch} without the cache")
        image_id, _ = _build(client, tail, path=str(context_dir), dockerfile=dockerfile, tag=tag,
                             platform=platform, labels=all_labels, nocache=True)
        actual = _architecture(client, tag)
    if actual != arch:
        raise WrongArchitecture(expected=arch, actual=actual)
    return BuiltImage(image_id=image_id or _image_id(client, tag), tag=tag, architecture=actual, log_tail=list(tail))


def _build(client: docker.DockerClient, tail: deque[str], **options: Any) -> tuple[str, bool]:
    """Run one build, feeding ``tail``; returns ``(image id or "", whether any step came from the cache)``."""
    image_id, used_cache = "", False
    try:
        stream: Iterable[dict[str, Any]] = client.api.build(decode=True, rm=True, forcerm=True, pull=False,
                                                            **options)
        for entry in stream:
            lines = list(_lines(entry))
            tail.extend(lines)
            used_cache = used_cache or any(line.strip() == "---> Using cache" for line in lines)
            error = _error_text(entry)
            if error is not None:
                raise BuildFailed(error, list(tail))
            aux = entry.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
    except docker.errors.APIError as exc:
        raise BuildFailed(f"the Docker Engine refused the build: {exc.explanation or exc}", list(tail)) from None
    except requests.exceptions.RequestException as exc:
        raise BuildFailed(f"lost the Docker Engine during the build: {type(exc).__name__}", list(tail)) from None
    return image_id, used_cache


def _inspect(client: docker.DockerClient, tag: str) -> dict[str, Any]:
    try:
        return dict(client.api.inspect_image(tag))
    except docker.errors.ImageNotFound:
        raise BuildFailed(f"the build reported success but {tag} is not in the Docker Engine") from None


def _architecture(client: docker.DockerClient, tag: str) -> str:
    return str(_inspect(client, tag).get("Architecture") or "")


def _image_id(client: docker.DockerClient, tag: str) -> str:
    return str(_inspect(client, tag)["Id"])


def push_image(client: docker.DockerClient, *, repository: str, tag: str, username: str, password: str) -> str:
    """Push ``repository:tag`` with credentials passed per call (no docker login state); return the digest.

    Raises :class:`PushFailed`. Docker's own error text is kept verbatim (minus the password), e.g.
    ``x509: certificate signed by unknown authority``, so the pipeline can turn it into advice.
    """

    def scrub(text: str) -> str:
        return text.replace(password, "***") if password else text

    tail: deque[str] = deque(maxlen=20)
    digest = ""
    try:
        stream: Iterable[dict[str, Any]] = client.api.push(
            repository, tag=tag, stream=True, decode=True,
            auth_config={"username": username, "password": password})
        for entry in stream:
            tail.extend(scrub(line) for line in _lines(entry))
            error = _error_text(entry)
            if error is not None:
                message = scrub(error)
                raise PushFailed(message, list(tail), transient=bool(_TRANSIENT_RE.search(message)))
            aux = entry.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
            match = _DIGEST_RE.search(str(entry.get("status") or ""))
            if match and not digest:
                digest = match.group(1)
    except docker.errors.APIError as exc:
        text = scrub(str(exc.explanation or exc))
        raise PushFailed(f"the Docker Engine refused the push: {text}", list(tail),
                         transient=bool(_TRANSIENT_RE.search(text))) from None
    except requests.exceptions.RequestException as exc:
        raise PushFailed(f"lost the Docker Engine during the push: {type(exc).__name__}", list(tail),
                         transient=True) from None
    if not digest:
        raise PushFailed("the push finished without reporting a digest", list(tail))
    return digest


_REFUSED_RE = re.compile(r"unauthorized|authentication required|\bdenied\b|\b401\b|\b403\b|forbidden",
                         re.IGNORECASE)


def credentials_refused(exc: Exception) -> bool:
    """Did the registry refuse the push credentials (401/403)? Then re-reading a rotated secret may cure it."""
    return isinstance(exc, PushFailed) and not exc.transient and bool(_REFUSED_RE.search(exc.message))


def pinned_reference(repository: str, digest: str) -> str:
    """``host[:port]/path@sha256:…``, what the signed deployment names; a tag or digest on ``repository`` is dropped."""
    if not _PINNABLE_DIGEST_RE.match(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    name = repository.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:  # a tag, not a registry port (that one is before the first slash)
        last[-1] = last[-1].split(":", 1)[0]
        name = "/".join(last)
    return f"{name}@{digest}"
