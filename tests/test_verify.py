"""workers/verify.py against the Exchange stand-in (real HTTP): every finding it can make without a registry (the
registry read-back is driven end to end in tests/test_svcpol_e2e.py against the real TLS registry)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from edgebot.settings import Settings
from sandbox.exchange import ExchangeStandIn
from workers.exchange import ExchangeClient
from workers.signing import PemSigner, generate_private_key_pem, sign_deployment
from workers.verify import verify_arch

ORG = "acme"
SIGNER = PemSigner(generate_private_key_pem(2048), "edgebot.public.pem")


def _ctx(*, private: str = "") -> Any:
    """A worker context whose config has a registry ``private`` (host) with a pull credential, or no registry."""
    registries = {"r": SimpleNamespace(host=private, ca_cert=None)} if private else {}
    config = SimpleNamespace(registries=registries, settings=Settings())
    secret = SimpleNamespace(reveal=lambda: "token-1")
    return SimpleNamespace(config=config, node_credentials=lambda registry: ("puller", secret) if registry else None,
                           resolver=None)


@pytest.fixture()
def exchange() -> Iterator[tuple[ExchangeStandIn, ExchangeClient, httpx.Client]]:
    with ExchangeStandIn() as ex:
        ex.add_user(ORG, "alice", "alice-pw")
        with httpx.Client(base_url=ex.url + "/", auth=(f"{ORG}/alice", "alice-pw")) as raw, \
                ExchangeClient(ex.url, ORG, "alice", "alice-pw") as client:
            yield ex, client, raw


def _publish(raw: httpx.Client, client: ExchangeClient, image: str, *, required: list[dict[str, str]] | None = None,
             sign: bool = True) -> str:
    deployment = json.dumps({"services": {"hello": {"image": image}}})
    body = {"label": "hello", "public": False, "url": "hello", "version": "1.0.0", "arch": "amd64",
            "sharable": "multiple", "deployment": deployment,
            "deploymentSignature": sign_deployment(SIGNER, deployment), "requiredServices": required or []}
    assert raw.post(f"orgs/{ORG}/services", json=body).status_code == 201, raw
    if sign:
        client.put_key(ORG, "hello_1.0.0_amd64", "edgebot.public.pem", SIGNER.public_key_pem())
    return "hello_1.0.0_amd64"


def _findings(report: Any) -> dict[str, list[tuple[bool, str]]]:
    out: dict[str, list[tuple[bool, str]]] = {}
    for check in report.checks:
        out.setdefault(check.kind, []).append((check.ok, check.detail))
    return out


def test_a_missing_service_is_the_only_finding(exchange: tuple[ExchangeStandIn, ExchangeClient, httpx.Client]) -> None:
    _, client, _ = exchange
    report = verify_arch(_ctx(), client, ORG, "hello", "1.0.0", "amd64")
    assert not report.ok and [(c.kind, c.detail) for c in report.checks] == [("service", "is not in the Exchange")]


def test_unpinned_image_missing_dockauth_policy_and_dependency_are_named(
        exchange: tuple[ExchangeStandIn, ExchangeClient, httpx.Client]) -> None:
    _, client, raw = exchange
    sid = _publish(raw, client, "reg.example.com:5000/edge/hello_amd64:1.0.0")
    expected = {"properties": [{"name": "camera", "value": True}], "constraints": []}
    private = _ctx(private="reg.example.com:5000")
    found = _findings(verify_arch(private, client, ORG, "hello", "1.0.0", "amd64", expected))
    assert found["signature"] == [(True, "")]
    assert found["image"] == [(False, "is not pinned by digest: the tag can move under nodes")]
    assert found["dockauth"] == [(False, "no dockauth for this registry: nodes cannot pull")]
    # a registry edgebot has no entry for (a public one, as far as it knows): nodes pull anonymously
    assert _findings(verify_arch(_ctx(), client, ORG, "hello", "1.0.0", "amd64"))["dockauth"] == [(True, "anonymous")]
    assert found["policy"] == [(False, "is missing")]
    client.put_service_policy(ORG, sid, {"properties": [{"name": "camera", "value": False}], "constraints": []})
    found = _findings(verify_arch(private, client, ORG, "hello", "1.0.0", "amd64", expected))
    assert found["policy"] == [(False, "differs from the source's service policy file")]
    client.add_dockauth(ORG, sid, "reg.example.com:5000", "puller", "token-1")
    assert _findings(verify_arch(private, client, ORG, "hello", "1.0.0", "amd64"))["dockauth"] == [(True, "")]


def test_a_dependency_deleted_since_is_named(exchange: tuple[ExchangeStandIn, ExchangeClient, httpx.Client]) -> None:
    ex, client, raw = exchange
    gps = {"label": "gps", "public": False, "url": "gps", "version": "1.2.0", "arch": "amd64",
           "sharable": "multiple", "deployment": "", "deploymentSignature": ""}
    assert raw.post(f"orgs/{ORG}/services", json=gps).status_code == 201
    _publish(raw, client, "reg.example.com:5000/edge/hello_amd64:1.0.0",
             required=[{"url": "gps", "org": ORG, "versionRange": "[1.0.0,2.0.0)", "arch": "amd64"}])
    found = _findings(verify_arch(_ctx(), client, ORG, "hello", "1.0.0", "amd64"))
    assert found["dependency"] == [(True, "")]
    assert raw.delete(f"orgs/{ORG}/services/gps_1.2.0_amd64").status_code == 204
    found = _findings(verify_arch(_ctx(), client, ORG, "hello", "1.0.0", "amd64"))
    assert found["dependency"] == [(False, "no version of it is in the Exchange")]


def test_a_signature_no_stored_key_verifies(exchange: tuple[ExchangeStandIn, ExchangeClient, httpx.Client]) -> None:
    _, client, raw = exchange
    sid = _publish(raw, client, "reg.invalid/edge/hello@sha256:" + "a" * 64, sign=False)  # .invalid: no DNS
    other = PemSigner(generate_private_key_pem(2048), "other.pem")
    client.put_key(ORG, sid, "other.pem", other.public_key_pem())
    found = _findings(verify_arch(_ctx(), client, ORG, "hello", "1.0.0", "amd64"))
    assert found["signature"] == [(False, "verifies with none of the 1 key(s) stored with the service: agents "
                                          "decline it without reporting an error")]
    assert found["image"][0][0] is False and "could not be read" in found["image"][0][1]  # no such registry


def test_a_cluster_deployment_is_verified_like_the_device_one_and_deploy_refuses_a_tampered_one(
        exchange: tuple[ExchangeStandIn, ExchangeClient, httpx.Client]) -> None:
    """issue 15: clusterDeploymentSignature over the exact clusterDeployment string with a stored key; its archive's
    images are checked like the deployment's (an unpinned one named); `/edge deploy` moves nothing when it fails."""
    from edgebot.errors import StepFailed
    from workers import cluster, deploy

    ex, client, raw = exchange
    image = "reg.example.com:5000/edge/hello_amd64@sha256:" + "a" * 64
    sid = _publish(raw, client, image)
    members = [cluster.Member("op.yaml", b"image: busybox:1.36\n")]
    text = cluster.go_json(cluster.cluster_object({"operatorYamlArchive": "op.tgz"}, cluster.build_archive(members),
                                                  members))
    with ex.state.lock:
        record = ex.state.services[ORG][sid]
        record["clusterDeployment"], record["clusterDeploymentSignature"] = text, sign_deployment(SIGNER, text)
    found = [(c.kind, c.ok, c.subject, c.detail) for c in verify_arch(_ctx(), client, ORG, "hello", "1.0.0",
                                                                     "amd64").checks]
    assert ("signature", True, "clusterDeployment edgebot.public.pem", "") in found
    assert ("image", False, "busybox:1.36", "is not pinned by digest: the tag can move under nodes") in found
    release = SimpleNamespace(org=ORG, version="1.0.0")
    registry = SimpleNamespace(host="reg.example.com:5000", alias="r")
    assert deploy.verify_arch(client, release, registry, "hello", "amd64") is not None  # type: ignore[arg-type]
    with ex.state.lock:
        record["clusterDeployment"] = text.replace('"namespace":""', '"namespace":"x"')
    found = [(c.kind, c.ok, c.detail) for c in verify_arch(_ctx(), client, ORG, "hello", "1.0.0", "amd64").checks]
    assert ("signature", False, "clusterDeploymentSignature verifies with none of the 1 key(s) stored with the "
            "service: agents decline it") in found
    with pytest.raises(StepFailed, match="clusterDeploymentSignature of `acme/hello_1.0.0_amd64` verifies with none"):
        deploy.verify_arch(client, release, registry, "hello", "amd64")  # type: ignore[arg-type]
