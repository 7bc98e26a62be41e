"""Build and push images with the Docker SDK (never the docker CLI), the way edgebot's build workers do.

The classic builder can reuse a cached layer built for another platform, so every build is checked: the image's
``Architecture`` must be the target arch before it may be pushed. A failed build or push does not raise in the SDK's
streaming API: the stream's ``error`` entries are read and turned into exceptions that carry the log tail.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

GO_ARCH_TO_PLATFORM = {
    "amd64": "linux/amd64",
    "arm64": "linux/arm64",
    "arm": "linux/arm/v7",
    "ppc64le": "linux/ppc64le",
    "s390x": "linux/s390x",
    "riscv64": "linux/riscv64",
}
_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64}) size:")
_TRANSIENT_RE = re.compile(r"\b5\d\d\b|timeout|timed out|connection refused|connection reset|EOF|unavailable", re.I)


class ImageError(Exception):
    """Base class; messages never contain credentials."""


@dataclass
class BuildFailed(ImageError):
    message: str
    log_tail: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


@dataclass
class WrongArchitecture(ImageError):
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"the built image is for {self.actual}, not {self.expected}"


@dataclass
class PushFailed(ImageError):
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


def _lines(entry: dict[str, Any]) -> Iterable[str]:
    for key in ("stream", "status", "error"):
        value = entry.get(key)
        if isinstance(value, str):
            for line in value.splitlines():
                if line.strip():
                    yield line.rstrip()


def build_image(client: docker.DockerClient, *, context_dir: Path, dockerfile: str, tag: str, arch: str,
                labels: dict[str, str] | None = None, log_lines: int = 40) -> BuiltImage:
    platform = GO_ARCH_TO_PLATFORM.get(arch)
    if platform is None:
        raise BuildFailed(f"unknown arch {arch!r}")
    if not (Path(context_dir) / dockerfile).is_file():
        raise BuildFailed(f"{dockerfile} not found in the build context")
    tail: deque[str] = deque(maxlen=max(1, log_lines))
    image_id = ""
    try:
        stream = client.api.build(path=str(context_dir), dockerfile=dockerfile, tag=tag, platform=platform,
                                  decode=True, rm=True, forcerm=True, pull=False,
                                  labels={**(labels or {}), "io.edgebot.arch": arch})
        for entry in stream:
            tail.extend(_lines(entry))
            if "error" in entry or "errorDetail" in entry:
                detail = entry.get("errorDetail", {}).get("message") or entry.get("error") or "build failed"
                raise BuildFailed(str(detail).strip(), list(tail))
            aux = entry.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = aux["ID"]
    except docker.errors.APIError as exc:
        raise BuildFailed(f"the Docker Engine refused the build: {exc.explanation or exc}", list(tail)) from None
    inspected = client.api.inspect_image(tag)
    image_id = image_id or inspected["Id"]
    actual = inspected.get("Architecture", "")
    if actual != arch:
        raise WrongArchitecture(expected=arch, actual=actual)
    return BuiltImage(image_id=image_id, tag=tag, architecture=actual, log_tail=list(tail))


def push_image(client: docker.DockerClient, *, repository: str, tag: str, username: str, password: str) -> str:
    """Push ``repository:tag`` with credentials passed per call (no docker login state); return the digest."""
    tail: deque[str] = deque(maxlen=20)
    digest = ""
    try:
        stream = client.api.push(repository, tag=tag, stream=True, decode=True,
                                 auth_config={"username": username, "password": password})
        for entry in stream:
            tail.extend(line.replace(password, "***") for line in _lines(entry))
            if "error" in entry or "errorDetail" in entry:
                detail = str(entry.get("errorDetail", {}).get("message") or entry.get("error")).replace(password, "***")
                raise PushFailed(detail.strip(), list(tail), transient=bool(_TRANSIENT_RE.search(detail)))
            aux = entry.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = aux["Digest"]
            match = _DIGEST_RE.search(entry.get("status", "") or "")
            if match and not digest:
                digest = match.group(1)
    except docker.errors.APIError as exc:
        text = str(exc.explanation or exc).replace(password, "***")
        raise PushFailed(f"the Docker Engine refused the push: {text}", list(tail),
                         transient=bool(_TRANSIENT_RE.search(text))) from None
    if not digest:
        raise PushFailed("the push finished without reporting a digest", list(tail))
    return digest


def pinned_reference(repository: str, digest: str) -> str:
    return f"{repository}@{digest}"
