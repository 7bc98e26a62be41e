"""Launchers for the real parts the tests and the demo run: Redis, a private Docker Engine, a TLS registry with
htpasswd auth, network namespaces, git sources. Each starts on free ports in its own directory and stops cleanly."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from sandbox.pki import TestCA

CERTS_D = Path("/etc/docker/certs.d")
HOSTS = Path("/etc/hosts")


class StartFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: Any, timeout: float, what: str, log: Path | None = None, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.1)
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise StartFailed(f"{what} did not start within {timeout:.0f} s\n{tail}")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def busybox_path() -> str:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate):
            return candidate
    raise StartFailed("static busybox not found: install Debian's busybox-static (make system-deps)")


class RedisServer:
    def __init__(self, workdir: Path, *, appendonly: bool = False, password: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.appendonly = appendonly
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--protected-mode", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        log = self.workdir / "redis.log"
        self.proc = subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                     start_new_session=True)
        import redis

        client = redis.Redis.from_url(self.url)
        _wait(client.ping, 20, "redis-server", log, self.proc)
        return self

    def restart(self) -> None:
        _stop(self.proc)
        self.start()

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DockerDaemon:
    """A private dockerd: its own data root, exec root, pidfile and socket; no bridge, no iptables."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.workdir / "docker.sock"

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket_path}"

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.base_url, timeout=300)

    def start(self) -> DockerDaemon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "dockerd.log"
        args = ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                "--data-root", str(self.workdir / "data"), "--exec-root", str(self.workdir / "exec"),
                "--pidfile", str(self.workdir / "docker.pid"), "-H", self.base_url]
        self.proc = subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                     start_new_session=True)

        def ready() -> bool:
            client = self.client()
            try:
                return bool(client.ping())
            finally:
                client.close()

        _wait(ready, 60, "dockerd", log, self.proc)
        return self

    def stop(self) -> None:
        _stop(self.proc, timeout=20)
        self.proc = None
        subprocess.run(["umount", "-R", str(self.workdir / "data")], capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NetNamespace:
    """A network namespace reached from the root namespace over a veth pair, with a name in /etc/hosts."""

    def __init__(self, name: str, *, host_ip: str, ns_ip: str, hostname: str) -> None:
        self.name, self.host_ip, self.ns_ip, self.hostname = name, host_ip, ns_ip, hostname
        self.veth = f"v{name[:10]}h"
        self.peer = f"v{name[:10]}n"
        self.tag = f"# edgebot-test {name}"

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def _ip(self, *args: str, check: bool = True) -> None:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True)
        if check and proc.returncode:
            raise StartFailed(f"ip {' '.join(args)}: {proc.stderr.strip()}")

    def start(self) -> NetNamespace:
        self.stop()
        self._ip("netns", "add", self.name)
        self._ip("link", "add", self.veth, "type", "veth", "peer", "name", self.peer)
        self._ip("link", "set", self.peer, "netns", self.name)
        self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.veth)
        self._ip("link", "set", self.veth, "up")
        self._ip("-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.peer)
        self._ip("-n", self.name, "link", "set", self.peer, "up")
        self._ip("-n", self.name, "link", "set", "lo", "up")
        with HOSTS.open("a") as hosts:
            hosts.write(f"{self.ns_ip} {self.hostname} {self.tag}\n")
        return self

    def stop(self) -> None:
        self._ip("link", "del", self.veth, check=False)
        self._ip("netns", "del", self.name, check=False)
        if HOSTS.exists():
            lines = HOSTS.read_text().splitlines(keepends=True)
            kept = [line for line in lines if not line.rstrip().endswith(self.tag)]
            if kept != lines:
                HOSTS.write_text("".join(kept))

    def __enter__(self) -> NetNamespace:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def trust_registry_ca(address: str, ca_pem: bytes) -> Path:
    directory = CERTS_D / address
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ca.crt"
    path.write_bytes(ca_pem)
    return path


def untrust_registry_ca(address: str) -> None:
    shutil.rmtree(CERTS_D / address, ignore_errors=True)


class Registry:
    """CNCF distribution (Debian's docker-registry) with htpasswd (bcrypt) auth and TLS from a test CA."""

    MANIFEST_TYPES = ", ".join([
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ])

    def __init__(self, workdir: Path, ca: TestCA, *, users: dict[str, str], host: str = "127.0.0.1",
                 port: int | None = None, netns: NetNamespace | None = None, hostname: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.ca = ca
        self.users = dict(users)
        self.host = host
        self.port = port or free_port()
        self.netns = netns
        self.hostname = hostname or host
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.hostname}:{self.port}"

    def start(self) -> Registry:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert, key = self.ca.issue_server_cert([self.hostname, "localhost"], [self.host, "127.0.0.1"])
        (self.workdir / "cert.pem").write_bytes(cert)
        (self.workdir / "key.pem").write_bytes(key)
        (self.workdir / "key.pem").chmod(0o600)
        (self.workdir / "ca.pem").write_bytes(self.ca.cert_pem)
        lines = []
        for user, password in self.users.items():
            out = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True)
            lines.append(out.stdout.strip())
        (self.workdir / "htpasswd").write_text("\n".join(lines) + "\n")
        config = f"""version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {self.workdir / 'data'}
  delete:
    enabled: true
http:
  addr: {self.host}:{self.port}
  secret: {os.urandom(16).hex()}
  tls:
    certificate: {self.workdir / 'cert.pem'}
    key: {self.workdir / 'key.pem'}
auth:
  htpasswd:
    realm: edgebot-registry
    path: {self.workdir / 'htpasswd'}
"""
        (self.workdir / "config.yml").write_text(config)
        log = self.workdir / "registry.log"
        prefix = self.netns.exec_prefix if self.netns else []
        self.proc = subprocess.Popen([*prefix, "docker-registry", "serve", str(self.workdir / "config.yml")],
                                     stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                     start_new_session=True)

        def ready() -> bool:
            if self.netns:
                ctx = ssl.create_default_context(cafile=str(self.workdir / "ca.pem"))
                with socket.create_connection((self.host, self.port), timeout=2) as raw, \
                        ctx.wrap_socket(raw, server_hostname=self.hostname) as tls:
                    tls.sendall(f"GET /v2/ HTTP/1.0\r\nHost: {self.address}\r\n\r\n".encode())
                    return b" 401 " in tls.recv(200)
            return self._http().get("/v2/", auth=None).status_code == 401

        _wait(ready, 30, "docker-registry", log, self.proc)
        return self

    def _http(self, user: str | None = None) -> httpx.Client:
        user = user or next(iter(self.users))
        verify = ssl.create_default_context(cafile=str(self.workdir / "ca.pem"))
        return httpx.Client(base_url=f"https://{self.host}:{self.port}", verify=verify, auth=(user, self.users[user]),
                            timeout=30, headers={"Host": self.address})

    def manifest(self, repo: str, reference: str) -> tuple[str, dict[str, Any]]:
        with self._http() as http:
            response = http.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": self.MANIFEST_TYPES})
            response.raise_for_status()
            return response.headers["Docker-Content-Digest"], response.json()

    def config_blob(self, repo: str, manifest: dict[str, Any]) -> dict[str, Any]:
        with self._http() as http:
            response = http.get(f"/v2/{repo}/blobs/{manifest['config']['digest']}", follow_redirects=True)
            response.raise_for_status()
            return dict(response.json())

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _git(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "HOME": str(cwd)}
    proc = subprocess.run(["git", "-c", "user.name=edgebot tests", "-c", "user.email=tests@edgebot.invalid",
                           "-c", "init.defaultBranch=main", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise StartFailed(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _write(tree: Path, files: dict[str, bytes | str]) -> None:
    for name, content in files.items():
        path = tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)


def make_git_source(workdir: Path, files: dict[str, bytes | str], *, tag: str | None, bare: bool = True) -> Path:
    """A bare origin repository with one commit (and an annotated tag); returns the origin's path."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    origin = workdir / "origin.git"
    tree = workdir / "tree"
    _git(["init", "-q", "--bare", str(origin)], workdir)
    _git(["init", "-q", str(tree)], workdir)
    _write(tree, files)
    _git(["add", "-A"], tree)
    _git(["commit", "-q", "-m", "initial"], tree)
    _git(["remote", "add", "origin", str(origin)], tree)
    if tag:
        _git(["tag", "-a", tag, "-m", tag], tree)
    _git(["push", "-q", "origin", "HEAD:refs/heads/main", "--tags"], tree)
    return origin if bare else tree


def add_commit(repo: Path, files: dict[str, bytes | str], *, tag: str | None = None) -> str:
    """Commit ``files`` on top of the origin's main (through its work tree) and push, with an optional tag."""
    tree = Path(repo).parent / "tree"
    _write(tree, files)
    _git(["add", "-A"], tree)
    _git(["commit", "-q", "--allow-empty", "-m", f"change {tag or ''}"], tree)
    if tag:
        _git(["tag", "-f", "-a", tag, "-m", tag], tree)
    _git(["push", "-q", "-f", "origin", "HEAD:refs/heads/main", "--tags"], tree)
    return _git(["rev-parse", "HEAD"], tree)
