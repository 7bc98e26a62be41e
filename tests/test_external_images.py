"""Images edgebot does not build, pinned at release time against a real TLS registry with auth (issue 15)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from edgebot.errors import StepFailed
from edgebot.settings import Settings
from sandbox.proc_net import Registry
from sandbox.registry_images import put_image, put_index
from tests.conftest import REGISTRY_USERS
from workers import external_images
from workers.definition import ServiceDefinition
from workers.registry_api import ImageMismatch, RegistryReader


def _reader(registry: Registry) -> RegistryReader:
    return RegistryReader(registry.address, username="puller", password=REGISTRY_USERS["puller"],
                          ca_pem=registry.ca_path.read_text())


def _ctx(registry: Registry, *, configured: bool = True) -> Any:
    entry = SimpleNamespace(host=registry.address, ca_cert="file:ca", alias="vendor")
    secret = SimpleNamespace(reveal=lambda: REGISTRY_USERS["puller"])
    ca = SimpleNamespace(reveal=lambda: registry.ca_path.read_text())
    return SimpleNamespace(config=SimpleNamespace(registries={"vendor": entry} if configured else {},
                                                  settings=Settings()),
                           node_credentials=lambda r: ("puller", secret) if r is not None else None,
                           resolver=SimpleNamespace(resolve=lambda ref: ca))


def _definition(arch: str, image: str) -> ServiceDefinition:
    deployment = {"services": {"hello": {"image": f"us.icr.io/edge/hello_{arch}:1.0.0"}, "side": {"image": image}}}
    return ServiceDefinition(raw={"deployment": deployment}, org="acme", url="hello", version="1.0.0", arch=arch,
                             deployment=deployment, built={"hello": f"us.icr.io/edge/hello_{arch}:1.0.0"},
                             external={"side": image})


def test_a_multi_arch_tag_pins_each_arch_to_its_own_image(registry: Registry) -> None:
    digests = put_index(registry, "vendor/agent", "2.1", ("amd64", "arm64", "arm"))
    with _reader(registry) as reader:
        for arch in ("amd64", "arm64", "arm"):
            assert reader.platform_digest("vendor/agent", "2.1", arch) == digests[arch]
        with pytest.raises(ImageMismatch, match="has no image for linux/s390x"):
            reader.platform_digest("vendor/agent", "2.1", "s390x")
    image = f"{registry.address}/vendor/agent:2.1"
    pins = external_images.pin(_ctx(registry), {a: _definition(a, image) for a in ("amd64", "arm64")},
                               service="hello")
    assert pins == {arch: {"side": f"{registry.address}/vendor/agent@{digests[arch]}"} for arch in ("amd64", "arm64")}


def test_a_single_arch_tag_of_another_arch_or_a_missing_tag_stops_with_what_to_do(registry: Registry) -> None:
    put_image(registry, "vendor/amd64-only", "1.0", "amd64")
    definitions = {"arm64": _definition("arm64", f"{registry.address}/vendor/amd64-only:1.0")}
    with pytest.raises(StepFailed) as wrong:
        external_images.pin(_ctx(registry), definitions, service="hello")
    assert "is an image for amd64, not arm64" in str(wrong.value) and "Push the image (for arm64)" in str(wrong.value)
    definitions = {"amd64": _definition("amd64", f"{registry.address}/vendor/amd64-only:9.9")}
    with pytest.raises(StepFailed) as missing:
        external_images.pin(_ctx(registry), definitions, service="hello")
    assert "the tag `9.9` does not exist there" in str(missing.value)
    assert "`pin = false` in the catalog keeps tags" in str(missing.value)


def test_pin_false_keeps_tags_and_reads_no_registry(registry: Registry) -> None:
    definitions = {"amd64": _definition("amd64", "unreachable.invalid:5000/vendor/x:1")}
    assert external_images.pin(_ctx(registry), definitions, service="hello", pin_tags=False) == {"amd64": {}}


def test_a_private_registry_without_an_entry_is_refused_naming_the_fix(registry: Registry) -> None:
    put_image(registry, "vendor/private", "1.0", "amd64")
    definitions = {"amd64": _definition("amd64", f"{registry.address}/vendor/private:1.0")}
    with pytest.raises(StepFailed) as refused:  # anonymous: the registry answers 401, edgebot has no credential
        external_images.pin(_ctx(registry, configured=False), definitions, service="hello")
    assert f"no [registries] entry has host `{registry.address}`" in str(refused.value)
    assert REGISTRY_USERS["puller"] not in str(refused.value)


def test_dockauths_for_every_other_configured_registry_and_a_note_for_anonymous_ones(registry: Registry) -> None:
    release_registry = SimpleNamespace(host="us.icr.io")
    definitions = [_definition("amd64", f"{registry.address}/vendor/agent@sha256:{'a' * 64}"),
                   _definition("arm64", "docker.io/library/redis:7")]
    found, notes = external_images.node_dockauths(_ctx(registry), definitions, release_registry)  # type: ignore[arg-type]
    assert found == [(registry.address, "puller", REGISTRY_USERS["puller"])]
    assert notes == ["Nodes pull the images from `docker.io` anonymously: edgebot has no pull credential for "
                     "them (add a `[registries]` entry with that `host` and pull_username/pull_password if one is "
                     "private)."]
