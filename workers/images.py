"""Build images with the Docker SDK (never the docker CLI) and push them, the way edgebot's build workers do.

The push is ``skopeo copy`` by default (workers.skopeo_push: parallel gzip while uploading) or the Engine's own push
(``settings.push_tool = "engine"``). A failed build or Engine push does not raise in the SDK's streaming API: the
stream's ``error`` entries are read and turned into exceptions that carry the tail of the log. Credentials go with
each push (``X-Registry-Auth``, or skopeo's 0600 authfile), so no ``docker login`` state or
``~/.docker/config.json`` is left behind, and they are scrubbed from every message.

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

The repository is hostile until proven otherwise (docs/troubleshooting.md, "Refused build contexts"). The build
context is a tar that :func:`build_context` writes itself, not docker-py's: the context directory, the Dockerfile and
``.dockerignore`` must resolve inside the checkout (a symlink out of it is refused, naming the path), the Dockerfile
and ``.dockerignore`` must be regular files no larger than a cap (a ``.dockerignore`` symlinked to ``/dev/zero`` made
docker-py read forever), symlinks inside the context travel as symlinks and are never followed, and anything that is
not a regular file, directory or symlink (a FIFO, a device) is refused. Every ``RUN`` step then runs under
:class:`BuildLimits`: memory, memory+swap, CPU shares and CPU set, and the network mode (``none`` by default).
The legacy builder's API has no pids limit (``/build`` takes none, and an ``nproc`` ulimit does not bind root); and
CFS quota (``cpuperiod``/``cpuquota``), which the Engine API takes, is refused by docker-py's ``container_limits``.
Both can be had for the whole build daemon with ``dockerd --cgroup-parent`` (docs/configuration.md).
"""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests.exceptions
from docker.utils.build import exclude_paths

from edgebot.settings import Settings
from workers.image_errors import BuildFailed as BuildFailed
from workers.image_errors import ImageError as ImageError
from workers.image_errors import PushFailed as PushFailed
from workers.image_errors import WrongArchitecture as WrongArchitecture
from workers.image_errors import is_transient as is_transient

GO_ARCH_TO_PLATFORM = {
    "amd64": "linux/amd64",
    "arm64": "linux/arm64",
    "arm": "linux/arm/v7",
    "ppc64le": "linux/ppc64le",
    "s390x": "linux/s390x",
    "riscv64": "linux/riscv64",
}

_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64}) size:")
_PINNABLE_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
@dataclass(frozen=True)
class BuildLimits:
    """What one build may use (``settings.build_*``): applied by the Engine to every container of the build."""

    memory: int = 2 * 1024**3
    memory_swap: int = 2 * 1024**3
    cpu_shares: int = 512
    cpuset_cpus: str = ""
    network_mode: str = "none"
    max_file_bytes: int = 1024 * 1024
    """Largest Dockerfile or .dockerignore accepted."""

    @classmethod
    def from_settings(cls, settings: Settings, network_mode: str | None = None) -> BuildLimits:
        """The settings' limits; ``network_mode`` (a catalog service's ``build_network``) overrides the setting's."""
        return cls(memory=settings.build_memory, memory_swap=settings.build_memory_swap,
                   cpu_shares=settings.build_cpu_shares, cpuset_cpus=settings.build_cpuset_cpus,
                   network_mode=network_mode or settings.build_network_mode,
                   max_file_bytes=settings.build_file_max_bytes)

    def container_limits(self) -> dict[str, int | str]:
        """docker-py's ``container_limits`` (its only keys: memory, memswap, cpushares, cpusetcpus); 0/"" left out."""
        limits: dict[str, int | str] = {}
        if self.memory > 0:
            limits["memory"] = self.memory
        if self.memory_swap != 0:
            limits["memswap"] = self.memory_swap
        if self.cpu_shares > 0:
            limits["cpushares"] = self.cpu_shares
        if self.cpuset_cpus:
            limits["cpusetcpus"] = self.cpuset_cpus
        return limits


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
                labels: dict[str, str] | None = None, log_lines: int = 40, root: Path | None = None,
                limits: BuildLimits | None = None, build_args: dict[str, str] | None = None,
                pull: bool = False, on_line: Callable[[str], None] | None = None) -> BuiltImage:
    """Build ``dockerfile`` in ``context_dir`` for ``arch`` (a Go arch name) as ``tag``; check the result's arch.

    ``root``: the checkout the context must stay inside (default: ``context_dir`` itself). ``limits``: what the
    build's containers may use (default: :class:`BuildLimits`' defaults, no network). ``build_args``: the
    Dockerfile's ``ARG`` values. ``pull``: look for a newer base image (False: the Engine's own, as before).
    ``on_line``: called with every line of the build's output (workers.build_log: progress and the whole log).
    Raises :class:`BuildFailed` (with the log tail; also for a context refused by :func:`build_context`) or
    :class:`WrongArchitecture`.

    ``labels``: none by default. The legacy builder turns build-time labels into one more commit step after the
    Dockerfile's (+0.4 s per build, issue 16); the arch is checked from the image config's ``Architecture``, and the
    commit an image was built from is in the release record and the Exchange service, so edgebot adds none.
    """
    platform = GO_ARCH_TO_PLATFORM.get(arch)
    if platform is None:
        raise BuildFailed(f"unknown arch {arch!r}; known: {', '.join(GO_ARCH_TO_PLATFORM)}")
    limits = limits or BuildLimits()
    tail: deque[str] = deque(maxlen=max(1, log_lines))
    with build_context(Path(root or context_dir), Path(context_dir), dockerfile,
                       max_file_bytes=limits.max_file_bytes) as context:
        options: dict[str, Any] = {
            "fileobj": context, "custom_context": True, "dockerfile": dockerfile, "tag": tag, "platform": platform,
            "labels": labels or None, "container_limits": limits.container_limits(),
            "network_mode": limits.network_mode or None, "buildargs": build_args or None, "pull": pull,
        }
        image_id, used_cache = _build(client, tail, on_line, nocache=False, **options)
        actual = _architecture(client, tag)
        if actual != arch and used_cache:
            # the cache ignores the platform: steps built for another arch were reused. Build them afresh once.
            tail.append(f"[edgebot] image came out {actual or 'without an arch'} from cached steps; rebuilding "
                        f"for {arch} without the cache")
            context.seek(0)
            image_id, _ = _build(client, tail, on_line, nocache=True, **options)
            actual = _architecture(client, tag)
    if actual != arch:
        raise WrongArchitecture(expected=arch, actual=actual)
    return BuiltImage(image_id=image_id or _image_id(client, tag), tag=tag, architecture=actual, log_tail=list(tail))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISLNK, "symlink")):
        if test(mode):
            return name
    return "special file"


def _inside(path: Path, top: Path) -> bool:
    return path == top or top in path.parents


def _control_file(context: Path, checkout: Path, name: str, shown: str, cap: int) -> bytes:
    """The bytes of the Dockerfile or .dockerignore ``name`` (relative to ``context``), checked before it is opened:
    it must resolve inside ``checkout`` and be a regular file of at most ``cap`` bytes."""
    path = context / name
    real = Path(os.path.realpath(path))
    if not _inside(real, checkout):
        raise BuildFailed(f"{shown} is a symlink to {real}, outside the checkout: edgebot reads only files of the "
                          "repository; commit the file itself")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise BuildFailed(f"{shown} not found in the build context") from None
    if not stat.S_ISREG(st.st_mode):
        raise BuildFailed(f"{shown} is a {_kind(st.st_mode)}, not a regular file: commit a regular file")
    if st.st_size > cap:
        raise BuildFailed(f"{shown} is {st.st_size} bytes, over the {cap}-byte cap (setting build_file_max_bytes): "
                          "shrink the file")
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise BuildFailed(f"{shown} grew past the {cap}-byte cap while it was read")
    return data


@contextmanager
def build_context(checkout: Path, context_dir: Path, dockerfile: str, *,
                  max_file_bytes: int = 1024 * 1024) -> Iterator[IO[bytes]]:
    """The build context of ``context_dir`` as a tar in a temporary file, made without following a symlink.

    Refused (:class:`BuildFailed`, naming the path): a context directory that resolves outside ``checkout`` or is not
    a directory; a Dockerfile or ``.dockerignore`` that resolves outside ``checkout``, is not a regular file or is over
    ``max_file_bytes``; any entry of the context that is not a regular file, directory or symlink. ``.dockerignore``
    patterns are applied as docker-py applies them. The Dockerfile and ``.dockerignore`` go into the tar as the regular
    files just read; every other symlink goes in as a symlink, so what it points to never reaches the Engine.
    """
    top = Path(os.path.realpath(checkout))
    given = Path(context_dir)
    shown = given.relative_to(checkout).as_posix() if _inside(given, Path(checkout)) else str(given)
    real = Path(os.path.realpath(given))
    if not _inside(real, top):
        raise BuildFailed(f"the build context {shown} resolves to {real}, outside the checkout: a context directory "
                          "must be a directory of the repository, not a symlink out of it")
    if not real.is_dir():
        kind = _kind(os.stat(real).st_mode) if real.exists() else "missing path"
        raise BuildFailed(f"the build context {shown} is a {kind}, not a directory of the repository")
    prefix = "" if shown in ("", ".") else shown + "/"
    dockerfile_bytes = _control_file(real, top, dockerfile, prefix + dockerfile, max_file_bytes)
    ignore_path = real / ".dockerignore"
    ignore_bytes: bytes | None = None
    patterns: list[str] = []
    if os.path.lexists(ignore_path):
        ignore_bytes = _control_file(real, top, ".dockerignore", prefix + ".dockerignore", max_file_bytes)
        for line in ignore_bytes.decode("utf-8", "replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line)
    dockerfile_name = Path(dockerfile).as_posix().removeprefix("./")
    replaced = {dockerfile_name: dockerfile_bytes, ".dockerignore": ignore_bytes}
    with tempfile.TemporaryFile() as handle:  # on disk, like docker-py's: a context can be large
        with tarfile.open(mode="w", fileobj=handle, format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(exclude_paths(str(real), patterns, dockerfile=dockerfile_name)):
                full = os.path.join(real, name)
                st = os.lstat(full)
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    raise BuildFailed(f"{prefix}{name} is a {_kind(st.st_mode)}: a build context holds only regular "
                                      "files, directories and symlinks")
                info = tar.gettarinfo(full, arcname=name)  # lstat: a symlink stays a symlink
                if name in replaced:
                    content = replaced.pop(name)
                    if content is None:
                        continue
                    info.type, info.linkname, info.size = tarfile.REGTYPE, "", len(content)
                    tar.addfile(info, io.BytesIO(content))
                elif info.isreg():
                    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
                    with os.fdopen(fd, "rb") as source:
                        tar.addfile(info, source)
                else:
                    tar.addfile(info)
            for name, content in replaced.items():  # e.g. a Dockerfile in a directory .dockerignore excluded
                if content is not None:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = len(content), 0o644
                    tar.addfile(info, io.BytesIO(content))
        handle.seek(0)
        yield handle


def _build(client: docker.DockerClient, tail: deque[str], on_line: Callable[[str], None] | None,
           **options: Any) -> tuple[str, bool]:
    """Run one build, feeding ``tail``; returns ``(image id or "", whether any step came from the cache)``."""
    image_id, used_cache = "", False
    try:
        stream: Iterable[dict[str, Any]] = client.api.build(decode=True, rm=True, forcerm=True, **options)
        for entry in stream:
            lines = list(_lines(entry))
            tail.extend(lines)
            if on_line is not None:
                for line in lines:
                    on_line(line)
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


PUSH_TOOLS = ("skopeo", "engine")


def push_image(client: docker.DockerClient, *, repository: str, tag: str, username: str, password: str,
               settings: Settings | None = None) -> str:
    """Push ``repository:tag`` with credentials passed per call (no docker login state); return the manifest digest
    the registry stores.

    ``settings.push_tool``: ``"skopeo"`` (default, workers.skopeo_push: parallel gzip, streamed) or ``"engine"`` (the
    Docker Engine's push API). Raises :class:`PushFailed`. The tool's own error text is kept verbatim (minus the
    password), e.g. ``x509: certificate signed by unknown authority``, so the pipeline can turn it into advice.
    """
    settings = settings or Settings()
    if settings.push_tool == "skopeo":
        from workers import skopeo_push

        return skopeo_push.push(client, repository=repository, tag=tag, username=username, password=password,
                                options=skopeo_push.SkopeoOptions.from_settings(settings))
    if settings.push_tool != "engine":
        raise PushFailed(f"setting push_tool is {settings.push_tool!r}: use one of {', '.join(PUSH_TOOLS)}")
    return engine_push(client, repository=repository, tag=tag, username=username, password=password)


def engine_push(client: docker.DockerClient, *, repository: str, tag: str, username: str, password: str) -> str:
    """The Docker Engine's own push (``settings.push_tool = "engine"``, and the benchmarks' ``docker push``)."""

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
                raise PushFailed(message, list(tail), transient=is_transient(message))
            aux = entry.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
            match = _DIGEST_RE.search(str(entry.get("status") or ""))
            if match and not digest:
                digest = match.group(1)
    except docker.errors.APIError as exc:
        text = scrub(str(exc.explanation or exc))
        raise PushFailed(f"the Docker Engine refused the push: {text}", list(tail),
                         transient=is_transient(text)) from None
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


# -- the republish guard: a published version's tag never moves ----------------------------------------------------

class RepublishRefused(ImageError):
    """This build differs from the image of a version already published in the Exchange (no ``--overwrite``)."""


_TAG_CHARS_RE = re.compile(r"[^A-Za-z0-9_.-]")


def release_scoped_tag(tag: str, release_id: str) -> str:
    """``VERSION-edgebot-RELEASE``: where a build of an already published version is pushed instead of ``VERSION``
    (a Docker tag: ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``)."""
    return _TAG_CHARS_RE.sub("_", f"{tag}-edgebot-{release_id}")[:128]


def push_guarded(client: docker.DockerClient | None, *, repository: str, tag: str, published_digest: str,
                 overwrite: bool, release_id: str, push: Callable[[str], str],
                 retag: Callable[[str], None] | None = None) -> str:
    """Push the built ``repository:tag`` with ``push(tag) -> digest``, without ever moving the tag of a published
    version.

    ``published_digest``: the image digest the Exchange's published deployment of this version pins (recorded by the
    publish worker when the release was prepared; "" when the version is not published, "unpinned" when it is but
    names no digest). Not published, or ``overwrite``: the version tag is pushed (today's semantics). Published: the
    build goes to a release-scoped tag only; the same digest is the "already published" no-op, another one is
    refused here, before anything is signed, with the version tag where it was. ``retag(scoped)``: how the build
    gets the release-scoped tag (default: tagged in the Docker Engine behind ``client``; buildah pushes any local
    image to any tag, so it needs none).
    """
    if not published_digest or overwrite:
        return push(tag)
    scoped = release_scoped_tag(tag, release_id)
    if retag is not None:
        retag(scoped)
    else:
        assert client is not None, "push_guarded needs a Docker client or a retag"
        try:
            client.api.tag(f"{repository}:{tag}", repository, tag=scoped)
        except docker.errors.APIError as exc:
            raise PushFailed(f"could not tag the build as {repository}:{scoped}: {exc.explanation or exc}") from None
    digest = push(scoped)
    if published_digest.startswith("sha256:") and digest != published_digest:
        version = tag
        raise RepublishRefused(
            f"version {version} is already published in the Exchange with image {published_digest[:19]}…, and this "
            f"build is {digest[:19]}…: a published version is never replaced (nodes running it would not re-pull "
            f"it), so {repository}:{version} was left as it is and this build went only to {repository}:{scoped}. "
            "Publish a new version, or use --overwrite to replace it."
        )
    return digest

