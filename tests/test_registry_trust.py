"""The private-registry scenario edgebot exists for: a registry whose TLS certificate is signed by a private CA (the
OpenShift route case). Docker skips certificate checks for registries on 127.0.0.0/8, so this registry lives in a
network namespace of its own, reached by name: without `certs.d/<host:port>/ca.crt` the push fails with x509, and
edgebot turns that into advice; with it, the push succeeds. Also: auth is enforced, and what was pushed is read back."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgebot.config import RegistryConfig
from edgebot.secrets import SecretRef
from sandbox.pki import TestCA
from sandbox.processes import (
    CERTS_D,
    HOSTS,
    DockerDaemon,
    NetNamespace,
    Registry,
    trust_registry_ca,
    untrust_registry_ca,
)
from sandbox.stack import wait_until
from workers.failures import _push_failure
from workers.images import PushFailed, build_image, push_image

HOSTNAME = "edgebot-reg.test"
PORT = 5443
ADDRESS = f"{HOSTNAME}:{PORT}"
USERS = {"pusher": "push-secret-ns"}
HELLO = Path(__file__).parent.parent / "examples" / "hello"


@pytest.fixture
def namespaced_registry(tmp_path: Path) -> Iterator[Registry]:
    untrust_registry_ca(ADDRESS)
    netns = NetNamespace("edgebotreg", host_ip="10.213.7.1", ns_ip="10.213.7.2", hostname=HOSTNAME)
    with netns:
        ca = TestCA.create("edgebot private CA")
        registry = Registry(tmp_path / "registry", ca, users=USERS, host="10.213.7.2", port=PORT, netns=netns,
                            hostname=HOSTNAME)
        with registry:
            yield registry
        untrust_registry_ca(ADDRESS)
    assert f"{HOSTNAME}" not in HOSTS.read_text()
    assert not (CERTS_D / ADDRESS).exists()


def _build(docker_daemon: DockerDaemon, tmp_path: Path, tag: str) -> None:
    context = tmp_path / "ctx"
    shutil.copytree(HELLO, context)
    client = docker_daemon.client()
    try:
        build_image(client, context_dir=context, dockerfile="Dockerfile.amd64", tag=tag, arch="amd64")
    finally:
        client.close()


def test_push_needs_the_registry_ca_in_certs_d(docker_daemon: DockerDaemon, namespaced_registry: Registry,
                                                tmp_path: Path) -> None:
    repository = f"{ADDRESS}/edge/hello_amd64"
    _build(docker_daemon, tmp_path, f"{repository}:1.0.0")
    client = docker_daemon.client()
    try:
        def refused_push() -> PushFailed:
            with pytest.raises(PushFailed) as refused:
                push_image(client, repository=repository, tag="1.0.0", username="pusher", password=USERS["pusher"])
            return refused.value

        # dockerd's Go resolver re-reads /etc/hosts at most every 5 s: wait until the new name resolves
        def resolved_refusal() -> PushFailed | None:
            error = refused_push()
            return None if "no such host" in str(error) else error

        refusal = wait_until(resolved_refusal, timeout=30, interval=1, what="dockerd to resolve the registry's name")
        assert "x509: certificate signed by unknown authority" in str(refusal)
        advice = str(_push_failure(_registry_config(), "amd64", refusal))
        assert f"/etc/docker/certs.d/{ADDRESS}/ca.crt" in advice and "every edge node" in advice

        trust_registry_ca(ADDRESS, namespaced_registry.ca.cert_pem)
        digest = push_image(client, repository=repository, tag="1.0.0", username="pusher", password=USERS["pusher"])
    finally:
        client.close()
    got, manifest = namespaced_registry.manifest("edge/hello_amd64", "1.0.0")
    assert got == digest
    assert namespaced_registry.config_blob("edge/hello_amd64", manifest)["architecture"] == "amd64"


def test_registry_enforces_auth(registry: Registry) -> None:
    base = f"https://127.0.0.1:{registry.port}/v2/"
    ca = ssl.create_default_context(cafile=str(registry.workdir / "ca.pem"))
    assert httpx.get(base, verify=ca).status_code == 401
    assert httpx.get(base, verify=ca, auth=("pusher", "wrong")).status_code == 401
    assert httpx.get(base, verify=ca, auth=("pusher", "push-secret-1")).status_code == 200


def test_wrong_push_password_is_refused_without_leaking_it(docker_daemon: DockerDaemon, registry: Registry,
                                                             tmp_path: Path) -> None:
    repository = f"{registry.address}/edge/auth-check_amd64"
    _build(docker_daemon, tmp_path, f"{repository}:1")
    client = docker_daemon.client()
    try:
        with pytest.raises(PushFailed) as refused:
            push_image(client, repository=repository, tag="1", username="pusher", password="not-the-password")
    finally:
        client.close()
    assert "not-the-password" not in str(refused.value)
    advice = str(_push_failure(_registry_config(), "amd64", refused.value))
    assert "did not accept the push credentials" in advice and "not-the-password" not in advice


def _registry_config() -> RegistryConfig:
    return RegistryConfig(alias="ocp", kind="ocp", host=ADDRESS, namespace="edge", push_username="pusher",
                          push_password=SecretRef("env", "OCP_PUSH_TOKEN"))
