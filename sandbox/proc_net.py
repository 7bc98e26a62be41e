"""The private-registry parts: a TLS registry with htpasswd auth, a network namespace to put it in, and Docker's
``certs.d`` trust step.

Docker treats every registry on 127.0.0.0/8 as insecure and skips its certificate checks, so a loopback registry
cannot show the CA step the IEAM guide asks for. A registry in a network namespace, reached over a veth pair by a
name in ``/etc/hosts``, is checked like a remote one: Docker refuses it with ``x509: certificate signed by unknown
authority`` until ``/etc/docker/certs.d/<host:port>/ca.crt`` holds the CA.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx

from sandbox.pki import TestCA
from sandbox.proc_base import Managed, StartFailed, free_port, run, spawn, stop_process, wait_ready

CERTS_D = Path("/etc/docker/certs.d")
HOSTS = Path("/etc/hosts")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,9}$")


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise StartFailed(f"{what} needs root (network namespaces, /etc/hosts, /etc/docker/certs.d)")


class NetNamespace(Managed):
    """A network namespace reached from the root namespace over a veth pair, with its name in ``/etc/hosts``.

    ``start`` first removes whatever a crashed run with the same ``name`` left (namespace, veth, hosts line), so a
    name can be reused safely; ``stop`` removes exactly what ``start`` made. The hosts line is tagged with a comment
    naming the namespace, and only lines with that tag are ever removed.

    Give a hostname the same ``ns_ip`` everywhere: dockerd's resolver caches /etc/hosts for up to 5 s, and a stale
    address whose veth is gone is no longer local — the default route would carry a push there off the machine.
    """

    def __init__(self, name: str, *, host_ip: str, ns_ip: str, hostname: str) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"namespace name {name!r}: 1-10 chars of [a-z0-9-] (veth names derive from it)")
        host, peer = ipaddress.ip_address(host_ip), ipaddress.ip_address(ns_ip)
        if not (host.is_private and peer.is_private) or host.is_loopback or peer.is_loopback or host == peer:
            raise ValueError("host_ip and ns_ip must be two different private, non-loopback addresses")
        self.name, self.host_ip, self.ns_ip, self.hostname = name, host_ip, ns_ip, hostname
        self.prefix = self._prefix_len(host, peer)
        self.veth = f"v{name}h"  # host side, stays in the root namespace
        self.peer = f"v{name}n"  # moved into the namespace
        self.tag = f"# edgebot-test netns={name}"
        self.started = False

    @staticmethod
    def _prefix_len(a: ipaddress.IPv4Address | ipaddress.IPv6Address,
                    b: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
        """The longest prefix (at most /30) whose network holds both addresses: the smallest link that works."""
        for length in range(30, 7, -1):
            if ipaddress.ip_network(f"{a}/{length}", strict=False) == ipaddress.ip_network(f"{b}/{length}",
                                                                                          strict=False):
                return length
        raise ValueError(f"{a} and {b} are too far apart for one link")

    def __repr__(self) -> str:
        return f"NetNamespace({self.name!r}, {self.hostname}={self.ns_ip}, host side {self.host_ip})"

    @property
    def exec_prefix(self) -> list[str]:
        """Prepend to a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    @property
    def hosts_line(self) -> str:
        return f"{self.ns_ip} {self.hostname} {self.tag}"

    def exists(self) -> bool:
        return self.name in run(["ip", "netns", "list"], check=False).stdout.split()

    def _start(self) -> None:
        _require_root("NetNamespace")
        self._cleanup()  # leftovers of a crashed run with the same name
        self.started = True
        run(["ip", "netns", "add", self.name])
        run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.peer])
        run(["ip", "link", "set", self.peer, "netns", self.name])
        run(["ip", "addr", "add", f"{self.host_ip}/{self.prefix}", "dev", self.veth])
        run(["ip", "link", "set", self.veth, "up"])
        run(["ip", "-n", self.name, "addr", "add", f"{self.ns_ip}/{self.prefix}", "dev", self.peer])
        run(["ip", "-n", self.name, "link", "set", self.peer, "up"])
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        text = HOSTS.read_text() if HOSTS.exists() else ""
        with HOSTS.open("a") as hosts:  # appended in place: /etc/hosts may be a bind mount
            hosts.write(("" if not text or text.endswith("\n") else "\n") + self.hosts_line + "\n")

    def _cleanup(self) -> None:
        run(["ip", "link", "del", self.veth], check=False)  # deleting one end removes the pair
        run(["ip", "netns", "del", self.name], check=False)
        if HOSTS.exists():
            lines = HOSTS.read_text().splitlines(keepends=True)
            kept = [line for line in lines if not line.rstrip().endswith(self.tag)]
            if kept != lines:
                HOSTS.write_text("".join(kept))

    def stop(self) -> None:
        if self.started:
            self._cleanup()
            self.started = False


def trust_registry_ca(address: str, ca_pem: bytes) -> Path:
    """Make the root Docker Engine(s) of this host trust ``ca_pem`` for the registry at ``address`` (host:port).

    This is the IEAM guide's step for a registry with a private CA; dockerd reads ``certs.d`` on every connection,
    so no restart is needed.
    """
    _require_root("trust_registry_ca")
    directory = _certs_dir(address)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ca.crt"
    path.write_bytes(ca_pem)
    return path


def untrust_registry_ca(address: str) -> None:
    """Remove ``certs.d/<address>`` (and nothing else); absent is fine."""
    shutil.rmtree(_certs_dir(address), ignore_errors=True)


def _certs_dir(address: str) -> Path:
    if not address or "/" in address or address.startswith("."):
        raise ValueError(f"not a registry host[:port]: {address!r}")
    return CERTS_D / address


class Registry(Managed):
    """CNCF distribution (Debian's ``docker-registry``) with htpasswd (bcrypt) auth and TLS from a test CA.

    Debian's default config does not start, so a complete one is written. The certificate covers ``hostname``,
    ``localhost``, ``host`` and 127.0.0.1. The read-back helpers talk to the registry API directly with basic auth
    over TLS verified against the CA, as a check that is independent of Docker.
    """

    MANIFEST_TYPES = ", ".join([
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ])

    def __init__(self, workdir: Path, ca: TestCA, *, users: dict[str, str], host: str = "127.0.0.1",
                 port: int | None = None, netns: NetNamespace | None = None, hostname: str | None = None) -> None:
        if not users:
            raise ValueError("a registry needs at least one user")
        self.workdir = Path(workdir)
        self.ca = ca
        self.users = dict(users)
        self.host = host
        self.port = port or free_port()
        self.netns = netns
        self.hostname = hostname or host
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:  # users' passwords stay out
        return f"Registry({self.address}, users={sorted(self.users)}, netns={self.netns.name if self.netns else None})"

    @property
    def address(self) -> str:
        """``host:port`` as Docker image names, ``certs.d`` and Open Horizon dockauths spell it."""
        return f"{self.hostname}:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.workdir / "ca.pem"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca.write_cert(self.ca_path)
        cert, key = self.ca.write_server_cert(self.workdir, [self.hostname, "localhost"], [self.host, "127.0.0.1"])
        (self.workdir / "htpasswd").write_text("".join(self._htpasswd(u, p) for u, p in self.users.items()))
        config = self.workdir / "config.yml"
        config.write_text(f"""version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {self.workdir / 'data'}
  delete:
    enabled: true
http:
  addr: {self.host}:{self.port}
  secret: {os.urandom(16).hex()}
  tls:
    certificate: {cert}
    key: {key}
auth:
  htpasswd:
    realm: edgebot-registry
    path: {self.workdir / 'htpasswd'}
""")
        config.chmod(0o600)
        prefix = self.netns.exec_prefix if self.netns else []
        self.proc = spawn([*prefix, "docker-registry", "serve", str(config)], self.log_path)

        def answers_401() -> bool:
            with self._http(auth=False) as http:
                return http.get("/v2/").status_code == 401

        wait_ready(answers_401, timeout=60, what=f"docker-registry at {self.address}", log=self.log_path,
                   proc=self.proc, interval=0.2)

    @staticmethod
    def _htpasswd(user: str, password: str) -> str:
        # bcrypt is the only hash distribution accepts; the password goes on the command line of a short-lived
        # local process (htpasswd -i would read it from stdin but cannot be combined with -n)
        out = run(["htpasswd", "-Bbn", user, password], what=f"htpasswd for {user}")
        return out.stdout.strip() + "\n"

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def set_password(self, user: str, password: str) -> None:
        """Rotate (or add) a user's password: rewrite the htpasswd file and restart the registry on the same
        address with the same storage (distribution 2.8 reads htpasswd once, at start)."""
        self.users[user] = password
        self.stop()
        self.start()

    def _http(self, user: str | None = None, *, auth: bool = True) -> httpx.Client:
        verify = ssl.create_default_context(cafile=str(self.ca_path))
        credentials: tuple[str, str] | None = None
        if auth:
            name = user or next(iter(self.users))
            credentials = (name, self.users[name])
        # connect to the IP (the certificate covers it), say the registry's own name in Host
        return httpx.Client(base_url=f"https://{self.host}:{self.port}", verify=verify, auth=credentials,
                            timeout=30, headers={"Host": self.address}, trust_env=False)

    def manifest(self, repo: str, reference: str, *, user: str | None = None) -> tuple[str, dict[str, Any]]:
        """``(digest, manifest)`` of ``repo:reference``; raises ``httpx.HTTPStatusError`` if it is not there."""
        with self._http(user) as http:
            response = http.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": self.MANIFEST_TYPES})
            response.raise_for_status()
            return response.headers["Docker-Content-Digest"], dict(response.json())

    def config_blob(self, repo: str, manifest: dict[str, Any], *, user: str | None = None) -> dict[str, Any]:
        """The image config a manifest points to (has ``architecture`` and ``os``)."""
        with self._http(user) as http:
            response = http.get(f"/v2/{repo}/blobs/{manifest['config']['digest']}", follow_redirects=True)
            response.raise_for_status()
            return dict(response.json())

    def tags(self, repo: str, *, user: str | None = None) -> list[str]:
        with self._http(user) as http:
            response = http.get(f"/v2/{repo}/tags/list")
            if response.status_code == 404:
                return []
            response.raise_for_status()
            return list(response.json().get("tags") or [])
