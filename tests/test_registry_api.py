"""Reading a pushed image back before signing (workers.registry_api): against the real TLS registry with htpasswd
auth, and with an injected transport for answers a real registry would not give (a lying or hostile registry)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import docker
import httpx
import pytest

from sandbox.processes import DockerDaemon, Registry
from tests.test_images import _checkout
from workers.images import build_image, push_image
from workers.registry_api import ImageMismatch, RegistryReader, RegistryReadError


def _reader(registry: Registry, registry_users: dict[str, str], user: str = "puller") -> RegistryReader:
    return RegistryReader(registry.address, username=user, password=registry_users.get(user, "wrong"),
                          ca_pem=registry.ca_path.read_text())


@pytest.mark.slow
def test_a_pushed_image_reads_back_with_its_arch_and_nothing_else_does(
        docker_daemon: DockerDaemon, registry: Registry, registry_users: dict[str, str], hello_repo: Path,
        tmp_path: Path) -> None:
    client: docker.DockerClient = docker_daemon.client()
    digests = {}
    try:
        for arch in ("amd64", "arm64"):
            context = _checkout(hello_repo, "v1.0.0", tmp_path / f"src-{arch}")
            repository = f"{registry.address}/edge/readback_{arch}"
            build_image(client, context_dir=context, dockerfile=f"Dockerfile.{arch}", tag=f"{repository}:1.0.0",
                        arch=arch)
            digests[arch] = push_image(client, repository=repository, tag="1.0.0", username="pusher",
                                       password=registry_users["pusher"])
    finally:
        client.close()
    with _reader(registry, registry_users) as reader:  # the pull-only user nodes get
        for arch, digest in digests.items():
            assert reader.image_arch(f"edge/readback_{arch}", digest)[0] == arch
        with pytest.raises(ImageMismatch, match="never pushed"):
            reader.image_arch("edge/readback_amd64", "sha256:" + "0" * 64)
        with pytest.raises(ImageMismatch, match="never pushed"):  # another repository's image
            reader.image_arch("edge/readback_amd64", digests["arm64"])
    with _reader(registry, registry_users, user="nobody") as reader, pytest.raises(RegistryReadError) as refused:
        reader.image_arch("edge/readback_amd64", digests["amd64"])
    assert "401" in str(refused.value) and "wrong" not in str(refused.value)


def _serving(routes: dict[str, bytes]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        body = routes.get(request.url.path)
        return httpx.Response(200, content=body) if body is not None else httpx.Response(404)
    return httpx.MockTransport(handle)


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def test_content_that_does_not_hash_to_the_digest_is_a_mismatch() -> None:
    honest = json.dumps({"config": {"digest": "sha256:" + "1" * 64}}).encode()
    lying = RegistryReader("registry.example", transport=_serving({f"/v2/x/manifests/{_digest(honest)}": b"{}"}))
    with pytest.raises(ImageMismatch, match="whose sha256 is"):
        lying.image_arch("x", _digest(honest))


def test_an_index_and_a_config_of_another_arch_are_told_apart() -> None:
    config = json.dumps({"architecture": "arm", "variant": "v7", "os": "linux"}).encode()
    manifest = json.dumps({"config": {"digest": _digest(config)}}).encode()
    index = json.dumps({"manifests": [{"digest": _digest(manifest)}]}).encode()
    reader = RegistryReader("registry.example", transport=_serving({
        f"/v2/x/manifests/{_digest(manifest)}": manifest, f"/v2/x/blobs/{_digest(config)}": config,
        f"/v2/x/manifests/{_digest(index)}": index}))
    assert reader.image_arch("x", _digest(manifest)) == ("arm", "v7")
    with pytest.raises(ImageMismatch, match="multi-arch index"):
        reader.image_arch("x", _digest(index))


def test_an_oversized_answer_is_refused() -> None:
    huge = b"{" + b" " * (5 << 20) + b"}"
    reader = RegistryReader("registry.example", transport=_serving({f"/v2/x/manifests/{_digest(huge)}": huge}))
    with pytest.raises(ImageMismatch, match="bytes"):
        reader.image_arch("x", _digest(huge))
