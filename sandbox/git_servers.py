"""Private git servers on loopback, from real parts: OpenSSH's ``sshd`` with a deploy key, and git's own smart-HTTP
CGI (``git http-backend``) behind a small threaded HTTP server that demands a token.

:class:`SshGitServer` runs ``sshd -D -e -f <config>`` on 127.0.0.1 and a free port with its own host key, config,
pid file and ``AuthorizedKeysFile`` (only the deploy key) in its directory; password and keyboard-interactive logins
are off, as on GitHub/GitLab. It serves any repository by absolute path to the user running it (root here and in CI:
``PermitRootLogin prohibit-password`` lets the key in). ``git upload-pack`` runs through the user's login shell,
as on any plain git-over-SSH host.

:class:`HttpGitServer` speaks git's real smart HTTP protocol (``info/refs?service=git-upload-pack`` then ``POST
git-upload-pack``, protocol v2 through the ``Git-Protocol`` header) through ``git http-backend`` as CGI. Every request
without ``Authorization: Basic base64(username:token)`` matching gets ``401`` with ``WWW-Authenticate: Basic``, like
GitHub/GitLab for a private repository. It records the request lines it saw (tests check no token is in a URL).
"""

from __future__ import annotations

import base64
import hmac
import os
import shutil
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sandbox.proc_base import Managed, free_port, log_tail, run, spawn, stop_process, wait_ready

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def keygen(path: Path, comment: str = "edgebot-test") -> tuple[str, str]:
    """A new ed25519 key pair at ``path`` (no passphrase): (private key text, public key line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], what="ssh-keygen")
    return path.read_text(), path.with_suffix(".pub").read_text().strip()


class SshGitServer(Managed):
    """sshd on 127.0.0.1:``port`` accepting only ``authorized_key`` (a public key line) for the current user."""

    def __init__(self, workdir: Path, authorized_key: str) -> None:
        self.workdir = Path(workdir)
        self.authorized_key = authorized_key
        self.port = free_port()
        self.user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True,
                                                             check=True).stdout.strip()
        self.host_public_key = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.workdir / "sshd.log"

    @property
    def known_hosts_line(self) -> str:
        """The server's pinned entry, as ``ssh-keyscan -p PORT 127.0.0.1`` prints it."""
        keytype, key = self.host_public_key.split()[:2]
        return f"[127.0.0.1]:{self.port} {keytype} {key}"

    def url(self, repo: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{Path(repo).resolve()}"

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o700)
        host_key = self.workdir / "ssh_host_ed25519_key"
        if not host_key.exists():
            keygen(host_key, "edgebot-test-host")
        self.host_public_key = host_key.with_suffix(".pub").read_text().strip()
        authorized = self.workdir / "authorized_keys"
        authorized.write_text(self.authorized_key.strip() + "\n")
        authorized.chmod(0o600)
        config = self.workdir / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            f"AllowUsers {self.user}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",  # the tmp directory's parents are not root-owned 0755 everywhere
            "PermitTTY no",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
            "LogLevel VERBOSE",
            "",
        ]))
        if os.geteuid() == 0:  # privilege separation directory (created by the service unit when installed)
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        run([SSHD, "-t", "-f", str(config)], what="sshd -t")
        self.proc = spawn([SSHD, "-D", "-e", "-f", str(config)], self.log)

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                return sock.recv(64).startswith(b"SSH-")

        wait_ready(listening, timeout=30, what="sshd", log=self.log, proc=self.proc)

    def log_text(self) -> str:
        return log_tail(self.log, 200)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class HttpGitServer(Managed):
    """Smart HTTP for the bare repositories under ``root`` at ``http://127.0.0.1:PORT/<name>.git``, token required."""

    def __init__(self, root: Path, *, username: str, token: str) -> None:
        self.root = Path(root).resolve()
        self.username = username
        self.token = token
        self.requests: list[str] = []
        """Each request's method and path (query included), and whether it carried valid credentials."""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def url(self, repo: Path) -> str:
        return f"http://127.0.0.1:{self.port}/{Path(repo).resolve().relative_to(self.root)}"

    def _start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._serve()

            def do_POST(self) -> None:  # noqa: N802
                self._serve()

            def _authorized(self) -> bool:
                expected = "Basic " + base64.b64encode(f"{owner.username}:{owner.token}".encode()).decode()
                return hmac.compare_digest(self.headers.get("Authorization", "").encode(), expected.encode())

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _serve(self) -> None:
                body = self._body() if self.command == "POST" else b""
                ok = self._authorized()
                owner.requests.append(f"{self.command} {self.path} {'authorized' if ok else 'refused'}")
                if not ok:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(owner.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "REMOTE_USER": owner.username,
                    "REMOTE_ADDR": "127.0.0.1",
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                }
                proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                                      timeout=120, check=False)
                head, _, payload = proc.stdout.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = proc.stdout.partition(b"\n\n")
                status, headers = 200, []
                for line in head.decode("latin-1").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="git-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
