"""Launchers for the real parts the tests and the demo run: Redis, a private Docker Engine, a TLS registry with
htpasswd auth, network namespaces, git sources.

Each part starts on a free port in its own directory (its log stays there), waits until it really answers, and
stops cleanly, also after it was SIGKILLed by a crash test. Nothing here touches a daemon or a config that the
machine already has: the Docker Engine is a private ``dockerd`` with its own data root, exec root, pidfile and
socket; git runs without any global config. The registry parts live in ``sandbox/proc_net.py`` and are re-exported
here, so callers import everything from this module.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Literal

import docker
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from edgebot import redis_acl
from sandbox.proc_base import Managed, StartFailed, free_port, run, spawn, stop_process, wait_ready
from sandbox.proc_net import CERTS_D, HOSTS, NetNamespace, Registry, trust_registry_ca, untrust_registry_ca

__all__ = [
    "CERTS_D", "HOSTS", "DockerDaemon", "NetNamespace", "RedisServer", "Registry", "StartFailed", "add_commit",
    "busybox_path", "free_port", "make_git_source", "trust_registry_ca", "untrust_registry_ca",
]

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
MAX_UNIX_SOCKET_PATH = 100  # sun_path is 108 bytes; leave room


def _is_static_elf(path: Path) -> bool:
    """True for an ELF file without a PT_INTERP program header (no dynamic loader needed: runs ``FROM scratch``)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only: the busybox of this (amd64/arm64) host
        return False
    order: Literal["little", "big"] = "little" if data[5] == 1 else "big"
    phoff = int.from_bytes(data[0x20:0x28], order)
    phentsize = int.from_bytes(data[0x36:0x38], order)
    phnum = int.from_bytes(data[0x38:0x3A], order)
    for i in range(phnum):
        start = phoff + i * phentsize
        if int.from_bytes(data[start:start + 4], order) == 3:  # PT_INTERP
            return False
    return True


def busybox_path() -> str:
    """The static busybox binary images are made of (nothing can be pulled from Docker Hub here)."""
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file():
            if not _is_static_elf(path):
                raise StartFailed(f"{candidate} is dynamically linked and cannot run in a FROM scratch image: "
                                  "install Debian's busybox-static (scripts/install-system-deps.sh)")
            return candidate
    raise StartFailed("static busybox not found: install Debian's busybox-static (scripts/install-system-deps.sh)")


# -- Redis --------------------------------------------------------------------------------------------------------


class RedisServer(Managed):
    """``redis-server`` on 127.0.0.1 and a free port, its data (and AOF) in ``workdir``, with ACLs on, as in
    production: one user per edgebot role (edgebot.redis_acl, passwords from :meth:`role_password`) and the
    ``default`` user as the administrator (``password``, generated when not given), which :attr:`url` logs in as
    (the tests' own inspection connection). Nothing can connect without a password.

    Passwords go into a 0600 config file rather than the command line. With ``appendonly`` every
    write is fsynced (``appendfsync always``), so a key written before a SIGKILL is there after :meth:`restart`.
    """

    def __init__(self, workdir: Path, *, appendonly: bool = False, password: str | None = None,
                 port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.appendonly = appendonly
        self.password = password or secrets.token_hex(16)
        self._role_passwords = {role: secrets.token_hex(16) for role in redis_acl.ROLES}
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def role_password(self, role: str) -> str:
        """The password of ``role``'s ACL user (``edgebot.redis_acl.username(role)``)."""
        return self._role_passwords[role]

    def role_client(self, role: str) -> redis.Redis:
        """A connection as ``role``'s ACL user (what a process of that role can do, and no more)."""
        return redis.Redis.from_url(self.plain_url, username=redis_acl.username(role),
                                    password=self.role_password(role), retry=Retry(NoBackoff(), 0))

    @property
    def plain_url(self) -> str:
        """The address without credentials: what a config file holds (the password is a reference)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def __repr__(self) -> str:
        return f"RedisServer(127.0.0.1:{self.port}, appendonly={self.appendonly}, auth={bool(self.password)})"

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "redis.conf"
        lines = [
            f"port {self.port}", "bind 127.0.0.1", f'dir "{self.workdir}"', 'save ""', "protected-mode no",
            f"appendonly {'yes' if self.appendonly else 'no'}", "appendfsync always", 'dbfilename "dump.rdb"',
        ]
        lines += redis_acl.acl_file(self._role_passwords, admin_password=self.password).splitlines()
        lines += self._extra_conf()
        conf.touch(mode=0o600, exist_ok=True)
        conf.chmod(0o600)
        conf.write_text("\n".join(lines) + "\n")
        self.proc = spawn(["redis-server", str(conf)], self.log_path)

        def pong() -> bool:
            with redis.Redis.from_url(self.url, socket_timeout=2, retry=Retry(NoBackoff(), 0)) as client:
                return bool(client.ping())

        wait_ready(pong, timeout=30, what=f"redis-server on port {self.port}", log=self.log_path, proc=self.proc)

    def _extra_conf(self) -> list[str]:
        """More ``redis.conf`` lines (a replica's, see sandbox.sentinel)."""
        return []

    def restart(self) -> None:
        """Stop (gracefully, unless it already died) and start again on the same port with the same data dir."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown save. :meth:`restart` brings it back."""
        stop_process(self.proc, sig=signal.SIGKILL)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


# -- Docker Engine ------------------------------------------------------------------------------------------------


class DockerDaemon(Managed):
    """A private ``dockerd``: its own data root, exec root, pidfile and socket; no bridge, no iptables.

    It never collides with the machine's daemon or with another test run. ``workdir`` must be short (a directory
    under /tmp): the socket path has to fit in a Unix socket address. The log stays in ``workdir``; ``stop``
    removes the data and exec roots (image layers) after unmounting anything left under them.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"DockerDaemon({self.base_url})"

    @property
    def socket_path(self) -> Path:
        return self.workdir / "docker.sock"

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dockerd.log"

    def client(self, *, timeout: int = 300) -> docker.DockerClient:
        """A new SDK client for this daemon; the caller closes it."""
        return docker.DockerClient(base_url=self.base_url, timeout=timeout)

    def _start(self) -> None:
        if len(str(self.socket_path)) > MAX_UNIX_SOCKET_PATH:
            raise StartFailed(f"socket path too long for a Unix socket: {self.socket_path} (use a dir under /tmp)")
        pid = _read_pid(self.workdir / "docker.pid")
        if pid and _alive(pid):
            raise StartFailed(f"a dockerd (pid {pid}) already runs in {self.workdir}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        args = ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                "--data-root", str(self.workdir / "data"), "--exec-root", str(self.workdir / "exec"),
                "--pidfile", str(self.workdir / "docker.pid"), "-H", self.base_url]
        # SIGTERM when the test run dies: dockerd then stops its containerd and unmounts on its own
        self.proc = spawn(args, self.log_path, death_signal=signal.SIGTERM)

        def pings() -> bool:
            client = self.client(timeout=5)
            try:
                return bool(client.ping())
            finally:
                client.close()

        wait_ready(pings, timeout=90, what="dockerd", log=self.log_path, proc=self.proc, interval=0.2)

    def stop(self) -> None:
        if self.proc is None:  # not started by this object: its files are not ours to remove
            return
        stop_process(self.proc, timeout=30)
        self.proc = None
        _remove_tree(self.workdir / "data")
        _remove_tree(self.workdir / "exec")
        self.socket_path.unlink(missing_ok=True)

    @classmethod
    def sweep_stale(cls, parent: Path = Path("/tmp"), prefix: str = "edgebot-dk-") -> list[Path]:
        """Remove ``<parent>/<prefix><pid>…`` dirs left by crashed runs: owner pid and dockerd both gone.

        A dir whose owner or whose dockerd still runs is left alone (it may be another run's).
        """
        removed = []
        for path in parent.glob(f"{prefix}*"):
            match = re.match(rf"{re.escape(prefix)}(\d+)", path.name)
            if not (match and path.is_dir()):
                continue
            dockerd_pid = _read_pid(path / "docker.pid")
            if _alive(int(match.group(1))) or (dockerd_pid and _alive(dockerd_pid)):
                continue
            _remove_tree(path)
            removed.append(path)
        return removed


def _read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_tree(path: Path) -> None:
    """``rm -rf`` that first lazily unmounts every mount below ``path`` (overlay layers, netns files)."""
    if not path.exists():
        return
    root = os.path.realpath(path)
    mounts = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].replace("\\040", " ")
            if point == root or point.startswith(root + "/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        run(["umount", "-l", point], check=False)
    shutil.rmtree(path, ignore_errors=True)


# -- git sources --------------------------------------------------------------------------------------------------


def _git(args: list[str], cwd: Path) -> str:
    """git with a fixed identity and no system or global config (never touches the user's ~/.gitconfig)."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(["git", "-c", "user.name=edgebot tests", "-c", "user.email=tests@edgebot.invalid",
                           "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false",
                           *args], cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise StartFailed(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _write(tree: Path, files: dict[str, bytes | str]) -> None:
    for name, content in files.items():
        path = tree / name
        if not path.resolve().is_relative_to(tree.resolve()):
            raise ValueError(f"file name outside the repository: {name!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)


def make_git_source(workdir: Path, files: dict[str, bytes | str], *, tag: str | None, bare: bool = True) -> Path:
    """A repository with one commit of ``files`` on ``main`` and, with ``tag``, an annotated tag on it.

    Lays out ``workdir/origin.git`` (bare) and ``workdir/tree`` (its clone, where :func:`add_commit` works). Returns
    the bare origin (what a service's ``source`` points to), or the work tree with ``bare=False``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    origin, tree = workdir / "origin.git", workdir / "tree"
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
    """Commit ``files`` on top of ``main`` and push it (and ``tag``, moved if it exists); returns the new SHA.

    ``repo`` is what :func:`make_git_source` returned (the origin or the work tree).
    """
    tree = Path(repo).parent / "tree"
    if not (tree / ".git").is_dir():
        raise ValueError(f"{repo} was not made by make_git_source (no work tree beside it)")
    _write(tree, files)
    _git(["add", "-A"], tree)
    _git(["commit", "-q", "--allow-empty", "-m", f"change {tag or ''}".strip()], tree)
    if tag:
        _git(["tag", "-f", "-a", tag, "-m", tag], tree)
    _git(["push", "-q", "-f", "origin", "HEAD:refs/heads/main", "--tags"], tree)
    return _git(["rev-parse", "HEAD"], tree)
