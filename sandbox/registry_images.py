"""Images written straight into a test registry through the Registry API (no Engine): a third-party image of one arch,
and a multi-arch index over several, as vendors publish them. Blobs are uploaded monolithically
(``POST /v2/<repo>/blobs/uploads/`` then ``PUT …?digest=``), manifests last (distribution's API spec)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from typing import Any

import httpx

from sandbox.proc_net import Registry

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_INDEX = "application/vnd.docker.distribution.manifest.list.v2+json"
_VARIANTS = {"arm": "v7", "arm64": "v8"}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(text: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("etc/vendor-release")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _put_blob(registry: Registry, repo: str, data: bytes) -> str:
    digest = _digest(data)
    with registry._http() as http:
        if http.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
            return digest
        start = http.post(f"/v2/{repo}/blobs/uploads/")
        start.raise_for_status()
        location = httpx.URL(start.headers["Location"]).copy_merge_params({"digest": digest})  # keeps its _state
        done = http.put(location, content=data, headers={"Content-Type": "application/octet-stream"})
        done.raise_for_status()
    return digest


def _put_manifest(registry: Registry, repo: str, tag: str, body: dict[str, Any], media_type: str) -> str:
    data = json.dumps(body, sort_keys=True).encode()
    with registry._http() as http:
        http.put(f"/v2/{repo}/manifests/{tag}", content=data, headers={"Content-Type": media_type}).raise_for_status()
    return _digest(data)


def put_image(registry: Registry, repo: str, tag: str, arch: str, *, content: str = "") -> str:
    """A one-layer image of ``arch`` at ``repo:tag``; its manifest digest."""
    layer = _layer(content or f"vendor image {repo}:{tag} for {arch}\n")
    diff_id = _digest(gzip.decompress(layer))
    config = {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]},
              "config": {"Cmd": ["/bin/true"]}}
    if arch in _VARIANTS:
        config["variant"] = _VARIANTS[arch]
    config_data = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config_data),
                   "digest": _put_blob(registry, repo, config_data)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer),
                    "digest": _put_blob(registry, repo, layer)}],
    }
    return _put_manifest(registry, repo, tag, manifest, DOCKER_MANIFEST)


def put_index(registry: Registry, repo: str, tag: str, arches: tuple[str, ...]) -> dict[str, str]:
    """One image per arch (each also at ``tag-<arch>``) and a manifest list over them at ``repo:tag``;
    arch -> manifest digest, and "index" -> the list's digest."""
    digests = {arch: put_image(registry, repo, f"{tag}-{arch}", arch) for arch in arches}
    entries = []
    with registry._http() as http:
        for arch, digest in digests.items():
            size = len(http.get(f"/v2/{repo}/manifests/{digest}", headers={"Accept": DOCKER_MANIFEST}).content)
            platform = {"architecture": arch, "os": "linux", **({"variant": _VARIANTS[arch]} if arch in _VARIANTS
                                                                 else {})}
            entries.append({"mediaType": DOCKER_MANIFEST, "size": size, "digest": digest, "platform": platform})
    index = {"schemaVersion": 2, "mediaType": DOCKER_INDEX, "manifests": entries}
    return {**digests, "index": _put_manifest(registry, repo, tag, index, DOCKER_INDEX)}
