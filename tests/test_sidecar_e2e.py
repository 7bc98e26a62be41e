"""A service with a sidecar edgebot does not build, from a second private TLS registry (issue 15), end to end: the
tag is pinned per arch to the digest that registry reports (a multi-arch index), signed into the deployment, and the
sidecar's registry gets its own dockauth; nodes would pull both images with the credentials the Exchange gives them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.proc_net import Registry
from sandbox.processes import add_commit
from sandbox.registry_images import put_index
from sandbox.stack import CHANNEL_ID, ORG, Stack
from tests.conftest import REGISTRY_USERS
from workers.signing import verify_deployment

pytestmark = pytest.mark.slow

VERSIONS = ("7.2.0",)  # a version space of this module's own (the session registry is shared)
DEFINITION = (Path(__file__).parent.parent / "examples/hello/horizon/service.definition.json").read_text()


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory, test_ca: Any) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("vendor-registry"), test_ca, users=dict(REGISTRY_USERS)) as reg:
        yield reg


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any,
          vendor: Registry) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("sidecar")
    secrets = workdir / "vendor-secrets"
    secrets.mkdir(mode=0o700)
    for user, password in REGISTRY_USERS.items():
        (secrets / user).write_text(password)
        (secrets / user).chmod(0o600)
    toml = f"""[registries.vendor]
kind = "generic"
host = "{vendor.address}"
push_username = "pusher"
push_password = "file:{secrets / 'pusher'}"
pull_username = "puller"
pull_password = "file:{secrets / 'puller'}"
ca_cert = "file:{vendor.ca_path}"
"""
    with Stack(workdir, docker=docker_daemon, registry=registry, versions=VERSIONS, arches=("amd64", "arm64"),
               settings={"duplicate_window": 1}, extra_toml=toml) as running:
        running.wait_workers(3)
        yield running


def _with_sidecar(image: str) -> str:
    definition = json.loads(DEFINITION.split("\n", 3)[3])
    definition["deployment"]["services"]["agent"] = {"image": image}
    return json.dumps(definition, indent=2)


def test_a_sidecar_by_tag_is_pinned_per_arch_signed_and_gets_its_registrys_dockauth(stack: Stack,
                                                                                    vendor: Registry) -> None:
    digests = put_index(vendor, "vendor/agent", "2.1", ("amd64", "arm64"))
    sidecar = f"{vendor.address}/vendor/agent:2.1"
    add_commit(stack.source_path, {"horizon/service.definition.json": _with_sidecar(sidecar)}, tag="v7.2.0")
    release = stack.finished(stack.start_release("publish hello 7.2.0 --registry local"), timeout=240)
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish"))
    public_pem = stack.exchange.keys(ORG, "hello_7.2.0_amd64")["edgebot.public.pem"].encode()
    for arch in ("amd64", "arm64"):
        service = stack.exchange.service(ORG, f"hello_7.2.0_{arch}")
        assert service is not None, arch
        deployment = json.loads(service["deployment"])
        assert deployment["services"]["agent"]["image"] == f"{vendor.address}/vendor/agent@{digests[arch]}", arch
        assert verify_deployment(public_pem, service["deployment"], service["deploymentSignature"]), arch
        registries = {d["registry"]: d["username"] for d in stack.exchange.dockauths(ORG, f"hello_7.2.0_{arch}")}
        assert registries == {stack.registry.address: "puller", vendor.address: "puller"}, arch
        assert release.results[arch].external_pins == {"agent": f"{vendor.address}/vendor/agent@{digests[arch]}"}
    thread = json.dumps(stack.slack.thread(CHANNEL_ID, release.message_ts))
    assert REGISTRY_USERS["puller"] not in thread and REGISTRY_USERS["pusher"] not in thread
    # the read-back after publish found both images, the vendor's in its own registry, and both dockauths
    verified = ":mag: Verified in the Exchange for `amd64`, `arm64`"
    assert any(n.startswith(verified) for n in release.notes), release.notes
