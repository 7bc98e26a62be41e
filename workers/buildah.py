"""Build with buildah (the ``buildah`` CLI, run with an argv list, never a shell) and push straight to the registry.

Why buildah beside the Docker Engine (docs/architecture.md, "Builders"): docker-py drives only the Engine's legacy
builder, and Debian's docker CLI has no buildx, so ``RUN --mount=type=cache|secret`` Dockerfiles (BuildKit syntax,
Docker 23's default) cannot build there. buildah builds them without a daemon, for another platform under QEMU, and
is what OpenShift's own builds run.

What works on a Debian 12 worker running as root in a container (checked with buildah 1.28): ``--storage-driver
vfs`` (overlay needs a kernel and mount that allow it: ``settings.buildah_storage_driver``), ``--isolation oci``
(``RUN`` steps in their own namespaces, ``--network none`` and the memory/CPU limits honoured; ``chroot`` works in
a pod without those privileges but shares the host network), and a store of its own under the work dir
(``--root``/``--runroot``), so nothing depends on ``/var/lib/containers``.

What the Engine path does well is kept: the build context is the one :func:`workers.images.build_context` checks
and writes (no symlink out of the checkout, no FIFO, capped Dockerfile), extracted into a fresh directory that
buildah reads; the built image's config architecture is read back and a wrong one refused with
:class:`WrongArchitecture`; a failure is a :class:`BuildFailed` / :class:`PushFailed` with a bounded, scrubbed log
tail, and pushes are classified transient or not with the Engine path's rule.

Secrets: the registry credential goes in a 0600 ``--authfile`` (``--creds`` would put it in argv, readable in
``/proc``), each build secret in a 0600 file mounted by ``--secret id=…,src=…``; all of them live in a 0700
directory removed when the command ends, and their values are scrubbed from every line kept.
"""

from __future__ import annotations

import base64
import json
import os
import re
import selectors
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workers.image_errors import is_transient
from workers.images import (
    GO_ARCH_TO_PLATFORM,
    BuildFailed,
    BuildLimits,
    BuiltImage,
    PushFailed,
    WrongArchitecture,
    build_context,
)

Credentials = Callable[[], tuple[str, str]]
"""Returns ``(username, password)`` for the registry, read when called (a rotated secret is read afresh)."""


@dataclass(frozen=True)
class BuildahOptions:
    """How this worker runs buildah (``settings.buildah_*``)."""

    storage: Path
    storage_driver: str = "vfs"
    isolation: str = "oci"
    timeout: float = 3600.0
    executable: str = "buildah"


@dataclass
class RegistryAccess:
    """What buildah needs to talk to the registry: its host, the credential, and the CA directory (``--cert-dir``,
    files ``*.crt``; None: buildah's defaults, ``/etc/containers/certs.d`` and ``/etc/docker/certs.d``)."""

    host: str
    credentials: Credentials | None = None
    cert_dir: Path | None = None
    scrub_values: list[str] = field(default_factory=list)


class BuildahBuilder:
    """Builds with ``buildah bud`` into its own store and pushes with ``buildah push`` (no daemon)."""

    name = "buildah"

    def __init__(self, options: BuildahOptions, registry: RegistryAccess) -> None:
        self.options = options
        self.registry = registry

    # -- build ---------------------------------------------------------------------------------------------------

    def build(self, *, context_dir: Path, dockerfile: str, tag: str, arch: str, root: Path,
              labels: dict[str, str] | None = None, log_lines: int = 40, limits: BuildLimits | None = None,
              build_args: dict[str, str] | None = None, secrets: dict[str, str] | None = None,
              pull: bool = False, cache: str = "", on_line: Callable[[str], None] | None = None) -> BuiltImage:
        """Build ``dockerfile`` of ``context_dir`` for ``arch`` as ``tag`` in this worker's store.

        ``secrets``: id → value, mounted by ``RUN --mount=type=secret,id=…``; never in a layer, argv or the log.
        ``cache``: a registry repository for ``--cache-from``/``--cache-to`` ("" for the local layers only).
        ``on_line``: called with every (scrubbed) output line (workers.build_log: progress and the whole log).
        Raises :class:`BuildFailed` (with the log tail) or :class:`WrongArchitecture`."""
        platform = GO_ARCH_TO_PLATFORM.get(arch)
        if platform is None:
            raise BuildFailed(f"unknown arch {arch!r}; known: {', '.join(GO_ARCH_TO_PLATFORM)}")
        limits = limits or BuildLimits()
        secrets = dict(secrets or {})
        scrub = _hidden(secrets.values())
        with _private_dir() as private:
            staging = private / "context"
            with build_context(root, context_dir, dockerfile, max_file_bytes=limits.max_file_bytes) as tar:
                _extract(tar, staging)
            argv = ["bud", "--isolation", self.options.isolation, "--platform", platform,
                    "-f", str(staging / dockerfile), "-t", tag, "--iidfile", str(private / "iid"),
                    "--layers", f"--pull={'always' if pull else 'false'}"]
            for key, value in (labels or {}).items():  # none of edgebot's own: the arch is in the config
                argv += ["--label", f"{key}={value}"]
            for name, value in (build_args or {}).items():
                argv += ["--build-arg", f"{name}={value}"]
            for secret_id, value in secrets.items():
                path = private / f"secret-{len(argv)}"
                _write_private(path, value)
                argv += ["--secret", f"id={secret_id},src={path}"]
            argv += _limits(limits, self.options.isolation)
            if cache:
                argv += ["--cache-from", cache, "--cache-to", cache]
            argv += self._registry_flags(private, scrub)
            argv.append(str(staging))
            mismatches: list[str] = []
            ok, tail = self._run(argv, log_lines, scrub, mismatches, on_line)
            if not ok:
                raise BuildFailed(_failure(tail, "the build failed"), tail)
            image_id = (private / "iid").read_text().strip()
        if mismatches:  # a base of another arch: buildah labels the result with the target platform anyway
            raise WrongArchitecture(expected=arch, actual=mismatches[0])
        actual = self.architecture(tag)
        if actual != arch:
            raise WrongArchitecture(expected=arch, actual=actual)
        if not image_id.startswith("sha256:"):
            image_id = "sha256:" + image_id
        return BuiltImage(image_id=image_id, tag=tag, architecture=actual, log_tail=tail)

    def architecture(self, tag: str) -> str:
        """The architecture in the image config of ``tag`` in this worker's store ("" if it has none)."""
        ok, out = self._run(["inspect", "--type", "image", "--format", "{{.OCIv1.Architecture}}", tag], 5, [])
        if not ok:
            raise BuildFailed(f"the build reported success but {tag} is not in buildah's store", out)
        return out[-1].strip() if out else ""

    # -- push ----------------------------------------------------------------------------------------------------

    def push(self, source: str, destination: str, *, log_lines: int = 20) -> str:
        """Push the local image ``source`` to ``docker://destination``; return the manifest digest.

        Raises :class:`PushFailed`, transient for 5xx / timeouts / refused connections (the Engine path's rule)."""
        with _private_dir() as private:
            digestfile = private / "digest"
            argv = ["push", "--digestfile", str(digestfile), *self._registry_flags(private, []),
                    source, f"docker://{destination}"]
            ok, tail = self._run(argv, log_lines, [])
            if not ok:
                message = _failure(tail, "the push failed")
                raise PushFailed(message, tail, transient=is_transient("\n".join(tail)))
            digest = digestfile.read_text().strip() if digestfile.exists() else ""
        if not digest.startswith("sha256:"):
            raise PushFailed("the push finished without reporting a digest", tail)
        return digest

    def export(self, source: str, archive: Path) -> None:
        """Write the local image ``source`` as an OCI archive (the tests scan its layers)."""
        ok, tail = self._run(["push", source, f"oci-archive:{archive}"], 20, [])
        if not ok:
            raise BuildFailed(_failure(tail, "the export failed"), tail)

    def remove(self, *images: str) -> None:
        """Remove local images (their layers stay while a cached build step uses them)."""
        self._run(["rmi", *images], 5, [])

    # -- the command ---------------------------------------------------------------------------------------------

    def _registry_flags(self, private: Path, scrub: list[str]) -> list[str]:
        flags: list[str] = []
        if self.registry.cert_dir is not None:
            flags += ["--cert-dir", str(self.registry.cert_dir)]
        if self.registry.credentials is not None:
            username, password = self.registry.credentials()
            auth = base64.b64encode(f"{username}:{password}".encode()).decode()
            authfile = private / "auth.json"
            _write_private(authfile, json.dumps({"auths": {self.registry.host: {"auth": auth}}}))
            flags += ["--authfile", str(authfile)]
            scrub += [password, auth]
            self.registry.scrub_values[:] = [password, auth]
        return flags

    def _run(self, args: Sequence[str], log_lines: int, scrub: list[str],
             mismatches: list[str] | None = None,
             on_line: Callable[[str], None] | None = None) -> tuple[bool, list[str]]:
        """Run buildah with ``args``; returns (exit code 0, the last ``log_lines`` lines, scrubbed). ``mismatches``
        collects the arch of every image buildah warned is not of the platform asked for (read from every line, not
        only the tail)."""
        storage = self.options.storage
        argv = [self.options.executable, "--root", str(storage / "root"), "--runroot", str(storage / "runroot"),
                "--storage-driver", self.options.storage_driver, *args]
        hide = [v for v in [*scrub, *self.registry.scrub_values] if v]
        tail: deque[str] = deque(maxlen=max(1, log_lines))
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(storage),
               "TMPDIR": str(storage / "tmp"), "BUILDAH_LAYERS": "true", "LC_ALL": "C.UTF-8",
               **{k: v for k, v in os.environ.items() if k.upper() in _PASSED_ENV}}
        (storage / "tmp").mkdir(parents=True, exist_ok=True)
        try:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as exc:
            return False, [f"cannot run {self.options.executable}: {exc.strerror} (install the buildah package)"]
        assert process.stdout is not None
        deadline = time.monotonic() + self.options.timeout
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            buffer = b""
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    process.kill()
                    process.wait()
                    tail.append(f"[edgebot] buildah ran longer than {self.options.timeout:.0f} s (setting "
                                "buildah_timeout) and was stopped")
                    return False, list(tail)
                if not selector.select(timeout=min(left, 1.0)):
                    continue
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                cleaned = [_clean(line, hide) for line in lines if line.strip()]
                tail.extend(cleaned)
                if on_line is not None:
                    for line in cleaned:
                        on_line(line)
                if mismatches is not None:
                    mismatches += [m.group(1) for m in map(_MISMATCH_RE.search, cleaned) if m]
            if buffer.strip():
                tail.append(_clean(buffer, hide))
                if on_line is not None:
                    on_line(tail[-1])
        process.stdout.close()
        return process.wait() == 0, list(tail)


_MISMATCH_RE = re.compile(r"image platform \(\{(\w+) \w+ .*does not match the expected platform")
"""buildah 1.28's warning for a base image of another platform (it then labels the result with the target's)."""
_PASSED_ENV = {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}
"""The worker's environment buildah gets besides its own (no REGISTRY_AUTH_FILE, no DOCKER_CONFIG: only the
authfile edgebot writes)."""
LINE_MAX = 1000
MESSAGE_MAX = 400


def _hidden(values: Iterable[str]) -> list[str]:
    """What to scrub for these secret values: each value, and each of its lines long enough to be telling (a
    multi-line secret printed by a ``RUN`` step arrives one line at a time)."""
    hide: list[str] = []
    for value in values:
        if value:
            hide.append(value)
            hide += [line.strip() for line in value.splitlines() if len(line.strip()) >= 6]
    return sorted(set(hide), key=len, reverse=True)


def _clean(line: bytes, hide: list[str]) -> str:
    text = line.decode("utf-8", "replace").rstrip()
    for value in hide:
        text = text.replace(value, "***")
    return text if len(text) <= LINE_MAX else text[:LINE_MAX] + " …"


def _failure(tail: list[str], default: str) -> str:
    """The error buildah printed (its last ``Error:`` line, cut to a readable length), else ``default``."""
    for line in reversed(tail):
        if line.startswith(("Error:", "error")):
            text = line.removeprefix("Error:").strip()
            return text if len(text) <= MESSAGE_MAX else text[:MESSAGE_MAX] + " …"
    return default


_NETWORKS = {"default": "private", "bridge": "private"}
"""The Engine's network modes (``settings.build_network_mode``) as buildah names them; none and host are the same."""


def _limits(limits: BuildLimits, isolation: str) -> list[str]:
    flags: list[str] = []
    if limits.memory > 0:
        flags += ["--memory", str(limits.memory)]
    if limits.memory_swap != 0:
        flags += ["--memory-swap", str(limits.memory_swap)]
    if limits.cpu_shares > 0:
        flags += ["--cpu-shares", str(limits.cpu_shares)]
    if limits.cpuset_cpus:
        flags += ["--cpuset-cpus", limits.cpuset_cpus]
    if limits.network_mode and isolation != "chroot":  # chroot isolation has only the host's network
        flags += ["--network", _NETWORKS.get(limits.network_mode, limits.network_mode)]
    return flags


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _extract(tar_file: object, into: Path) -> None:
    """Extract the context tar written by :func:`build_context` (symlinks stay symlinks; nothing outside ``into``)."""
    into.mkdir(mode=0o700)
    with tarfile.open(fileobj=tar_file, mode="r") as tar:  # type: ignore[call-overload]
        tar.extractall(into, filter="tar")


@contextmanager
def _private_dir() -> Iterator[Path]:
    """A 0700 directory for the authfile, secrets, digest and context of one command, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="edgebot-buildah-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def cert_dir(into: Path, *, ca_pem: str | None, certs_d: Path | None) -> Path | None:
    """A ``--cert-dir`` for the registry: the registry's configured CA (``ca_cert``: the OpenShift route's CA) and
    the ``*.crt`` the Engine path trusts in ``certs.d/<host>/``; None when there are none (buildah's defaults)."""
    found = sorted(certs_d.glob("*.crt")) if certs_d is not None and certs_d.is_dir() else []
    if not ca_pem and not found:
        return None
    into.mkdir(parents=True, exist_ok=True)
    for source in found:
        shutil.copyfile(source, into / source.name)
    if ca_pem:
        (into / "edgebot-registry-ca.crt").write_text(ca_pem if ca_pem.endswith("\n") else ca_pem + "\n")
    return into
