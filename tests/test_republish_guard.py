"""The republish guard at the push (workers.images.push_guarded), against the private dockerd and the TLS registry:
a build of an already published version never moves the version's tag. The tag is read back through the registry
API (workers.registry_api.RegistryReader.tag_digest), with the pull-only user nodes get."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox.processes import DockerDaemon, Registry
from tests.test_images import _checkout
from workers.images import RepublishRefused, build_image, push_guarded, push_image, release_scoped_tag
from workers.registry_api import RegistryReader

pytestmark = pytest.mark.slow


@pytest.fixture
def client(docker_daemon: DockerDaemon) -> Iterator[docker.DockerClient]:
    c = docker_daemon.client()
    yield c
    c.close()


def test_a_published_version_s_tag_never_moves(client: docker.DockerClient, registry: Registry,
                                               registry_users: dict[str, str], hello_repo: Path,
                                               tmp_path: Path) -> None:
    repository = f"{registry.address}/edge/guard_amd64"
    context = _checkout(hello_repo, "v1.0.0", tmp_path / "src")

    def build(label: str) -> None:
        build_image(client, context_dir=context, dockerfile="Dockerfile.amd64", tag=f"{repository}:2.0.0",
                    arch="amd64", labels={"org.opencontainers.image.revision": label})

    def push(tag: str) -> str:
        return push_image(client, repository=repository, tag=tag, username="pusher",
                          password=registry_users["pusher"])

    def tag_digest(tag: str) -> str | None:
        with RegistryReader(registry.address, username="puller", password=registry_users["puller"],
                            ca_pem=registry.ca_path.read_text()) as reader:
            return reader.tag_digest("edge/guard_amd64", tag)

    build("first")
    assert tag_digest("2.0.0") is None
    published = push_guarded(client, repository=repository, tag="2.0.0", published_digest="", overwrite=False,
                             release_id="r1", push=push)  # not published yet: the version tag, as today
    assert tag_digest("2.0.0") == published

    # the same content again: the "already published" no-op, pushed only to the release-scoped tag
    assert push_guarded(client, repository=repository, tag="2.0.0", published_digest=published, overwrite=False,
                        release_id="r2", push=push) == published
    assert tag_digest(release_scoped_tag("2.0.0", "r2")) == published

    build("second")  # other content under the same version
    with pytest.raises(RepublishRefused) as refused:
        push_guarded(client, repository=repository, tag="2.0.0", published_digest=published, overwrite=False,
                     release_id="r3", push=push)
    assert "already published" in str(refused.value) and "--overwrite" in str(refused.value)
    assert tag_digest("2.0.0") == published, "the published tag moved"
    assert tag_digest(release_scoped_tag("2.0.0", "r3")) not in (None, published)

    moved = push_guarded(client, repository=repository, tag="2.0.0", published_digest=published, overwrite=True,
                         release_id="r4", push=push)  # --overwrite keeps today's semantics
    assert moved != published and tag_digest("2.0.0") == moved


def test_release_scoped_tags_are_valid_docker_tags() -> None:
    assert release_scoped_tag("1.0.0", "r-abc123") == "1.0.0-edgebot-r-abc123"
    assert len(release_scoped_tag("1." + "9" * 200, "x")) == 128
    assert release_scoped_tag("1.0.0+meta", "r/1") == "1.0.0_meta-edgebot-r_1"
