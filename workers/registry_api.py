"""Reading back what a build worker says it pushed: the Docker Registry HTTP API v2, read-only, from the publish worker.

Before the publish worker signs a deployment that pins ``host/path@sha256:…``, it fetches that manifest by digest
and its config blob, checks both against their own sha256 (content addressing: the registry's answer is verified, not
trusted) and reads the image's architecture. A build worker that reported a digest it never pushed, or an image of
another arch, is caught here, before anything is signed.

Auth as registries do it: anonymous first; on 401, HTTP Basic, or the Bearer token dance the ``WWW-Authenticate``
challenge names (IBM Cloud Container Registry, OpenShift). The publish worker reads with the registry's pull
credential, the one nodes get.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from typing import Any

import httpx

MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
))
MAX_MANIFEST_BYTES = 4 << 20
"""A manifest or image config larger than this is refused (a hostile registry could answer with gigabytes)."""


class RegistryReadError(RuntimeError):
    """The registry could not be read (unreachable, refused the credentials, answered an error)."""

    transient = True


class ImageMismatch(RuntimeError):
    """What the registry holds under the digest is not what the release says was pushed."""


class RegistryReader:
    def __init__(self, host: str, *, username: str = "", password: str = "", ca_pem: str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cadata=ca_pem) if ca_pem else True
        self.host = host
        self._auth = (username, password) if username else None
        self._http = httpx.Client(base_url=f"https://{host}", timeout=timeout, verify=verify, transport=transport)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def image_arch(self, path: str, digest: str) -> tuple[str, str]:
        """(architecture, variant) of the image ``path@digest``, after verifying the manifest and its config blob."""
        manifest = _json(self._verified(f"/v2/{path}/manifests/{digest}", digest, accept=MANIFEST_TYPES), digest)
        if "manifests" in manifest:
            raise ImageMismatch(f"{self.host}/{path}@{digest} is a multi-arch index, not the single-arch image "
                                "edgebot pushed")
        config = (manifest.get("config") or {}).get("digest", "")
        if not isinstance(config, str) or not config.startswith("sha256:"):
            raise ImageMismatch(f"the manifest of {self.host}/{path}@{digest} names no image config")
        image = _json(self._verified(f"/v2/{path}/blobs/{config}", config), config)
        return str(image.get("architecture", "")), str(image.get("variant", "") or "")

    def tag_digest(self, path: str, tag: str) -> str | None:
        """The digest of the manifest ``path:tag`` points at now (sha256 of the manifest bytes, as the registry
        addresses it), or None when the tag does not exist: what the republish guard must leave unchanged."""
        url = f"/v2/{path}/manifests/{tag}"
        try:
            body = self._get(url, MANIFEST_TYPES)
        except ImageMismatch as exc:
            if "has nothing at" in str(exc):
                return None
            raise
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def platform_digest(self, path: str, tag: str, arch: str) -> str:
        """The digest of the single-arch image ``path:tag`` holds for ``arch`` now: the tag's own manifest when it is
        one image (checked to be of ``arch``), or the ``linux/arch`` entry of a multi-arch index (``arm``: variant v7
        or none, as the Engine on a 32-bit arm node picks). ImageMismatch names what is missing."""
        body = self._get(f"/v2/{path}/manifests/{tag}", MANIFEST_TYPES)
        manifest = _json(body, f"{path}:{tag}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if "manifests" in manifest:
            entries = [m for m in manifest.get("manifests") or [] if isinstance(m, dict)]
            found = [m for m in entries if (m.get("platform") or {}).get("os", "linux") == "linux"
                     and (m.get("platform") or {}).get("architecture") == arch
                     and (arch != "arm" or (m.get("platform") or {}).get("variant", "v7") in ("v7", ""))]
            if not found:
                offered = sorted({f"{(m.get('platform') or {}).get('architecture')}" for m in entries})
                raise ImageMismatch(f"{self.host}/{path}:{tag} has no image for linux/{arch} (it has "
                                    f"{', '.join(offered) or 'none'})")
            digest = str(found[0].get("digest") or "")
        actual, variant = self.image_arch(path, digest)
        if actual != arch:
            raise ImageMismatch(f"{self.host}/{path}:{tag} is an image for {actual}"
                                f"{'/' + variant if variant else ''}, not {arch}")
        return digest

    # -- HTTP -------------------------------------------------------------------------------------------------------
    def _verified(self, url: str, digest: str, accept: str = "") -> bytes:
        body = self._get(url, accept)
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if actual != digest:
            raise ImageMismatch(f"{self.host} answered {url} with content whose sha256 is {actual}, not {digest}")
        return body

    def _get(self, url: str, accept: str) -> bytes:
        headers = {"Accept": accept} if accept else {}
        try:
            answer = self._send(url, headers)
            if answer.status_code == 401:
                self._login(answer.headers.get("WWW-Authenticate", ""))
                answer = self._send(url, headers)
        except httpx.HTTPError as exc:
            raise RegistryReadError(f"{self.host} could not be read: {type(exc).__name__}") from None
        if answer.status_code == 404:
            raise ImageMismatch(f"{self.host} has nothing at {url}: the reported digest was never pushed there")
        if answer.status_code != 200:
            raise RegistryReadError(f"{self.host} answered {answer.status_code} to GET {url}")
        if len(answer.content) > MAX_MANIFEST_BYTES:
            raise ImageMismatch(f"{self.host} answered GET {url} with {len(answer.content)} bytes")
        return answer.content

    def _send(self, url: str, headers: dict[str, str]) -> httpx.Response:
        if self._token:
            headers = {**headers, "Authorization": f"Bearer {self._token}"}
            return self._http.get(url, headers=headers, follow_redirects=True)
        return self._http.get(url, headers=headers, auth=self._auth, follow_redirects=True)  # type: ignore[arg-type]

    def check_login(self) -> str:
        """``edgebot config check``: GET /v2/ with this reader's credentials (Basic, or the bearer-token dance the
        registry asks for); what answered, or RegistryReadError naming who was refused."""
        user = self._auth[0] if self._auth else ""
        first = self._http.get("/v2/")
        if first.status_code == 200:
            return "answers without credentials (anonymous access)"
        challenge = first.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("bearer"):
            params = _challenge(challenge)
            token = self._http.get(params.get("realm", ""), params={"service": params.get("service", "")},
                                   auth=self._auth)  # type: ignore[arg-type]
            if token.status_code == 200:
                return f"token login as {user} ok"
            raise RegistryReadError(f"token service refused {user} ({token.status_code})")
        answer = self._http.get("/v2/", auth=self._auth)  # type: ignore[arg-type]
        if answer.status_code == 200:
            return f"login as {user} ok"
        raise RegistryReadError(f"{self.host} refused {user} ({answer.status_code})")

    def _login(self, challenge: str) -> None:
        if not challenge.lower().startswith("bearer"):
            return  # Basic: the credentials went with the request already
        params = _challenge(challenge)
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        answer = self._http.get(params.get("realm", ""), params=query, auth=self._auth)  # type: ignore[arg-type]
        if answer.status_code != 200:
            raise RegistryReadError(f"the token service of {self.host} refused the pull credential "
                                    f"({answer.status_code})")
        data = answer.json()
        self._token = str(data.get("token") or data.get("access_token") or "")


def _challenge(header: str) -> dict[str, str]:
    """The parameters of a ``WWW-Authenticate: Bearer realm="…",service="…",scope="…"`` challenge."""
    return dict(part.split("=", 1) for part in header[7:].replace('"', "").split(",") if "=" in part)


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        raise ImageMismatch(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ImageMismatch(f"{what} is not a JSON object")
    return value
