"""The errors of building and pushing images, shared by the build and push paths (workers.images, workers.buildah,
workers.skopeo_push); messages never contain credentials."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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


def is_transient(message: str) -> bool:
    """Is a push failure worth a retry (5xx, 429, timeouts, refused or reset connections)? 401/403/x509 are not."""
    return bool(_TRANSIENT_RE.search(message))
