"""Push an image from the Docker Engine to a registry with ``skopeo copy`` (Debian's skopeo, containers/image).

The Engine's own push compresses each layer with one single-threaded gzip stream (64–71 % of a 200 MiB publish,
issue 16). ``skopeo copy docker-daemon:REPO:TAG docker://REPO:TAG`` reads the image out of the Engine (its
``/images/get`` export, uncompressed layers), compresses the layers in parallel (pgzip) while uploading them, skips
the blobs its blob-info cache knows the registry already has (HEAD, or a cross-repository mount on the same
registry), pushes every blob by digest and the manifest last. ``--format v2s2``: a Docker schema 2 manifest with
gzip layers, what every Docker Engine on the nodes can pull. The digest is the one the registry stores for that
manifest (``--digestfile``: skopeo writes the digest of the manifest bytes it PUT).

What the Engine's push did for edgebot and this one keeps:

* credentials per push, never on a command line (``/proc/*/cmdline`` is world-readable): a 0600 ``--dest-authfile``
  in a private temporary directory, removed when skopeo exits; no ``docker login`` state is written anywhere;
* the registry CA the Engine trusts: ``settings.docker_certs_dir/<host[:port]>/`` (where the sandbox and
  :func:`workers.registries.before_push` put it) is skopeo's ``--dest-cert-dir`` when it exists. A registry on
  127.0.0.0/8 or ``localhost`` is one dockerd treats as insecure (its default ``insecure-registries``) and was
  pushed to without a certificate check: skopeo gets ``--dest-tls-verify=false`` for those only, as dockerd does;
* errors: skopeo's last lines become :class:`~workers.images.PushFailed` with the same transient (5xx, timeouts,
  refused connections) vs. permanent (401/403, x509) classification, the credentials scrubbed from every line, and a
  bounded log tail.

The push leaves from the worker's host, not the Engine's: with a remote Engine (``tcp://``) the image travels to the
worker first. ``settings.push_tool = "engine"`` keeps the Engine's own push for that case.
"""

from __future__ import annotations

import base64
import ctypes
import ipaddress
import json
import os
import signal
import subprocess
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import docker

    from edgebot.settings import Settings

SKOPEO = "skopeo"
PR_SET_PDEATHSIG = 1
try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it
except (OSError, AttributeError):  # not Linux/glibc
    _prctl = None
DEFAULT_DAEMON = "unix:///var/run/docker.sock"
COMPRESS_FORMATS = ("gzip", "zstd")


@dataclass(frozen=True)
class SkopeoOptions:
    """What a skopeo push takes from the settings (``settings.push_*``, ``docker_certs_dir``, ``docker_timeout``)."""

    compress_format: str = "gzip"
    compress_level: int = 0
    retry_times: int = 0
    certs_dir: str = "/etc/docker/certs.d"
    timeout: float = 600.0
    big_files_dir: str = ""
    """skopeo's ``TMPDIR``: a ``docker-daemon:`` source is copied whole into a temporary file there first (the image's
    uncompressed size); containers/image's default, ``/var/tmp``, is read-only in the manifests. "": inherited."""

    @classmethod
    def from_settings(cls, settings: Settings) -> SkopeoOptions:
        return cls(compress_format=settings.push_compress_format, compress_level=settings.push_compress_level,
                   retry_times=settings.push_retry_times, certs_dir=settings.docker_certs_dir,
                   timeout=settings.docker_timeout, big_files_dir=settings.work_dir)


def registry_host(repository: str) -> str:
    """``host[:port]`` of ``host[:port]/path`` (a name without a registry part is Docker Hub's)."""
    first, slash, _ = repository.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def insecure_by_default(host: str) -> bool:
    """Does dockerd push to ``host`` without checking its certificate (its default insecure range 127.0.0.0/8)?"""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def daemon_host(client: docker.DockerClient) -> str:
    """The Engine ``client`` talks to, as skopeo's ``--src-daemon-host`` spells it."""
    api = client.api
    base = str(getattr(api, "base_url", "") or "")
    if base.startswith(("http+docker://", "http+unix://")):
        adapter = getattr(api, "_custom_adapter", None)
        path = getattr(adapter, "socket_path", "")
        return f"unix://{path}" if path else DEFAULT_DAEMON
    if base.startswith(("http://", "https://")):
        return "tcp://" + base.split("://", 1)[1].rstrip("/")
    return os.environ.get("DOCKER_HOST") or DEFAULT_DAEMON


def _dies_with_us() -> Any:
    """``preexec_fn``: skopeo is killed when the work horse that started it dies (a killed step must not leave a
    push running behind the resumed one, as the Engine's push stopped when its client went away). PDEATHSIG follows
    the forking *thread*: set only from the main thread, which runs the job."""
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl = _prctl

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


def authfile_json(host: str, username: str, password: str) -> str:
    """containers-auth.json(5) with one registry's credentials."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": token}}})


def command(*, source: str, destination: str, daemon: str, authfile: Path, digestfile: Path,
            options: SkopeoOptions, host: str, daemon_cert_dir: str | None = None) -> list[str]:
    """The argv of one push. Holds paths and names only, never a credential."""
    argv = [SKOPEO, "--command-timeout", f"{int(max(1, options.timeout))}s", "copy",
            "--src-daemon-host", daemon, "--dest-authfile", str(authfile), "--digestfile", str(digestfile),
            "--format", "v2s2", "--dest-compress-format", options.compress_format]
    if daemon_cert_dir:
        argv += ["--src-cert-dir", daemon_cert_dir]
    if options.compress_level > 0:
        argv += ["--dest-compress-level", str(options.compress_level)]
    if options.retry_times > 0:
        argv += ["--retry-times", str(options.retry_times)]
    cert_dir = Path(options.certs_dir) / host
    if insecure_by_default(host):
        argv.append("--dest-tls-verify=false")
    elif cert_dir.is_dir():
        argv += ["--dest-cert-dir", str(cert_dir)]
    argv += [f"docker-daemon:{source}", f"docker://{destination}"]
    return argv


def push(client: docker.DockerClient, *, repository: str, tag: str, username: str, password: str,
         options: SkopeoOptions, log_lines: int = 20) -> str:
    """``skopeo copy`` of the Engine's ``repository:tag`` to the registry's ``repository:tag``; returns the manifest
    digest the registry stores. Raises :class:`~workers.images.PushFailed` (scrubbed, classified)."""
    from workers.image_errors import PushFailed, is_transient

    secrets = [s for s in (password, base64.b64encode(f"{username}:{password}".encode()).decode()) if s]

    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    if options.compress_format not in COMPRESS_FORMATS:
        raise PushFailed(f"setting push_compress_format is {options.compress_format!r}: use one of "
                         f"{', '.join(COMPRESS_FORMATS)}")
    host = registry_host(repository)
    reference = f"{repository}:{tag}"
    daemon = daemon_host(client)
    daemon_cert_dir = os.environ.get("DOCKER_CERT_PATH") if daemon.startswith("tcp://") else None
    tail: deque[str] = deque(maxlen=max(1, log_lines))
    with tempfile.TemporaryDirectory(prefix="edgebot-push-") as private:  # 0700: the authfile is readable by us only
        authfile, digestfile = Path(private) / "auth.json", Path(private) / "digest"
        fd = os.open(authfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(authfile_json(host, username, password))
        argv = command(source=reference, destination=reference, daemon=daemon, authfile=authfile,
                       digestfile=digestfile, options=options, host=host, daemon_cert_dir=daemon_cert_dir)
        env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG")}
        env["HOME"] = env.get("HOME") or private  # the blob-info cache lives under $HOME (or /var/lib as root)
        if options.big_files_dir and os.path.isdir(options.big_files_dir):
            env["TMPDIR"] = options.big_files_dir
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                                  timeout=options.timeout + 30, check=False, preexec_fn=_dies_with_us())
        except FileNotFoundError:
            raise PushFailed("skopeo is not installed on this build worker (Debian package skopeo): install it, or "
                             "set push_tool = \"engine\"") from None
        except subprocess.TimeoutExpired:
            raise PushFailed(f"skopeo did not finish the push of {reference} within {options.timeout:.0f} s "
                             "(setting docker_timeout)", list(tail), transient=True) from None
        tail.extend(scrub(line.rstrip()) for line in (done.stdout + done.stderr).splitlines() if line.strip())
        digest = digestfile.read_text().strip() if digestfile.exists() else ""
    if done.returncode != 0:
        message = _last_error(list(tail)) or f"skopeo exited with status {done.returncode}"
        raise PushFailed(message, list(tail), transient=is_transient(message))
    if not digest.startswith("sha256:"):
        raise PushFailed("the push finished without reporting a digest", list(tail))
    return digest


def _last_error(lines: list[str]) -> str:
    """skopeo's fatal line (``time=… level=fatal msg="…"``), or its last line."""
    for line in reversed(lines):
        if "level=fatal" in line or "level=error" in line:
            _, found, message = line.partition('msg="')
            return message.rstrip('"').replace('\\"', '"') if found else line
    return lines[-1] if lines else ""
