"""The simulated agents of the Exchange stand-in, driven over real HTTP: they follow their pattern or matching policy,
verify the deployment signature like the agent (and decline silently when it fails), need a dockauth and a trusted
CA, report "not started" while they pull, fall back to priority 2, ignore a policy the agbot would refuse, and restart
every agreement of a pattern when the pattern changes. ``alice`` is an org admin (node-details shows her every node
of the org; a standard user sees only its own nodes)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.exchange import ExchangeStandIn
from sandbox.fleet import constraints_match, registry_host
from sandbox.proc_base import wait_until
from workers.signing import PemSigner, generate_private_key_pem, sign_deployment

ORG, PW = "acme", "alice-pw"
REGISTRY = "registry.example:5000"


@pytest.fixture(scope="module")
def signer() -> PemSigner:
    return PemSigner(generate_private_key_pem(2048), "edgebot.public.pem")


@pytest.fixture()
def ex() -> Iterator[ExchangeStandIn]:
    standin = ExchangeStandIn()
    standin.fleet.apply_delay = 0.1
    standin.fleet.heartbeat_interval = 0.2
    with standin:
        standin.add_user(ORG, "alice", PW, admin=True)
        yield standin


@pytest.fixture()
def alice(ex: ExchangeStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ex.url + "/", auth=(f"{ORG}/alice", PW), timeout=30) as client:
        yield client


def publish(c: httpx.Client, signer: PemSigner, version: str, arch: str = "amd64", *, dockauth: bool = True,
            tamper: bool = False) -> None:
    deployment = json.dumps({"services": {"hello": {"image": f"{REGISTRY}/edge/hello_{arch}@sha256:{'b' * 64}",
                                                    "env": [f"V={version}"]}}}, sort_keys=True, separators=(",", ":"))
    signature = sign_deployment(signer, deployment)
    body = {"label": "hello", "description": "", "public": False, "documentation": "", "url": "hello",
            "version": version, "arch": arch, "sharable": "multiple", "matchHardware": {}, "requiredServices": [],
            "userInput": [], "deployment": deployment.replace("V=", "V=x") if tamper else deployment,
            "deploymentSignature": signature, "clusterDeployment": "", "clusterDeploymentSignature": ""}
    sid = f"hello_{version}_{arch}"
    assert c.post(f"orgs/{ORG}/services", json=body).status_code == 201
    key = c.put(f"orgs/{ORG}/services/{sid}/keys/edgebot.public.pem", content=signer.public_key_pem(),
                headers={"Content-Type": "text/plain"})
    assert key.status_code == 201
    if dockauth:
        auth = {"registry": REGISTRY, "username": "puller", "token": "pull-token"}
        assert c.post(f"orgs/{ORG}/services/{sid}/dockauths", json=auth).status_code == 201


def versions(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"version": v, "priority": {"priority_value": p, "retries": 1, "retry_durations": 60}} for v, p in pairs]


def put_policy(c: httpx.Client, name: str, serviceVersions: list[dict[str, Any]], *, method: str = "put",  # noqa: N803
               constraints: list[str] | None = None) -> None:
    body = {"label": name, "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": serviceVersions},
            "properties": [], "constraints": constraints or ["group == canary"]}
    response = getattr(c, method)(f"orgs/{ORG}/business/policies/{name}", json=body)
    assert response.status_code == 201, response.text


def canary(ex: ExchangeStandIn, name: str, **options: Any) -> str:
    return ex.fleet.add_node(ORG, name, "amd64", properties=[{"name": "group", "value": "canary"}], **options)


def test_policy_nodes_follow_their_policy_and_fall_back(ex: ExchangeStandIn, alice: httpx.Client,
                                                        signer: PemSigner) -> None:
    publish(alice, signer, "1.0.0")
    publish(alice, signer, "1.1.0")
    good, bad = canary(ex, "n1"), canary(ex, "n2")
    other = ex.fleet.add_node(ORG, "n3", "amd64", properties=[{"name": "group", "value": "fleet"}])
    put_policy(alice, "hello-canary", versions(("1.0.0", 1)), method="post")
    wait_until(lambda: ex.fleet.running(good) == ex.fleet.running(bad) == {"hello": "1.0.0"}, timeout=20,
               what="both canaries to run 1.0.0")
    assert ex.fleet.running(other) == {}
    ex.fleet.set_failing(bad, ["1.1.0"])
    put_policy(alice, "hello-canary", versions(("1.1.0", 1), ("1.0.0", 2)))
    wait_until(lambda: ex.fleet.running(good) == {"hello": "1.1.0"}, timeout=20, what="n1 on 1.1.0")
    wait_until(lambda: ex.fleet.errors(bad), timeout=20, what="n2 to report its error")
    assert ex.fleet.running(bad) == {"hello": "1.0.0"}, "the priority-2 version runs where the first fails"
    assert "exited with status 1" in ex.fleet.errors(bad)[0]
    details = {n["id"]: n for n in alice.get(f"orgs/{ORG}/node-details").json()}
    assert details[good]["runningServices"] == f"|{ORG}/hello_1.1.0_amd64|"
    assert details[good]["services"][0]["containerStatus"][0]["state"] == "running"
    assert details[bad]["errors"][0]["workload"] == {"url": "hello", "org": ORG, "version": "1.1.0", "arch": "amd64"}
    assert details[bad]["errors"][0]["event_code"] == "error_start_container"
    assert details[bad]["registeredServices"] == [{"url": f"{ORG}/hello", "numAgreements": 1,
                                                   "configState": "active", "policy": "", "properties": []}]


def test_agent_refusals_name_the_cause(ex: ExchangeStandIn, alice: httpx.Client, signer: PemSigner) -> None:
    publish(alice, signer, "1.0.0")
    publish(alice, signer, "2.0.0", tamper=True)
    publish(alice, signer, "3.0.0", dockauth=False)
    untrusting = canary(ex, "no-ca", trusts_ca=False)
    plain = canary(ex, "plain")
    local_creds = canary(ex, "local-creds", credentials=[REGISTRY])
    put_policy(alice, "hello-canary", versions(("1.0.0", 1)), method="post")
    wait_until(lambda: ex.fleet.running(plain) == {"hello": "1.0.0"}, timeout=20, what="plain on 1.0.0")
    put_policy(alice, "hello-canary", versions(("2.0.0", 1)))
    # a signature the agent cannot verify is logged and the agreement declined: no error, the node stays on 1.0.0
    wait_until(lambda: ex.fleet.running(local_creds) == {"hello": "1.0.0"} and ex.nodes(ORG)[plain]["lastUpdated"]
               != ex.nodes(ORG)[plain]["lastHeartbeat"], timeout=20, what="a heartbeat after the refusal")
    time.sleep(0.5)
    assert ex.fleet.running(plain) == {"hello": "1.0.0"} and ex.fleet.errors(plain) == []
    put_policy(alice, "hello-canary", versions(("3.0.0", 1), ("1.0.0", 2)))
    wait_until(lambda: ex.fleet.errors(plain), timeout=20, what="plain to fall back")
    assert ex.fleet.running(plain) == {"hello": "1.0.0"}
    assert "no basic auth credentials" in ex.fleet.errors(plain)[0] and REGISTRY in ex.fleet.errors(plain)[0]
    wait_until(lambda: ex.fleet.running(local_creds) == {"hello": "3.0.0"}, timeout=20, what="local creds to pull")
    wait_until(lambda: len(ex.fleet.errors(untrusting)) == 2, timeout=20, what="both versions refused")
    assert {e["event_code"] for e in ex.nodes(ORG)[untrusting]["errors"]} == {"error_image_load"}
    assert all("x509: certificate signed by unknown authority" in e for e in ex.fleet.errors(untrusting))
    assert ex.fleet.running(untrusting) == {}
    ex.fleet.set_trusts_ca(untrusting, True)
    wait_until(lambda: ex.fleet.running(untrusting) == {"hello": "1.0.0"}, timeout=20, what="the CA to be trusted")


def test_pattern_nodes_and_offline_nodes(ex: ExchangeStandIn, alice: httpx.Client, signer: PemSigner) -> None:
    publish(alice, signer, "1.0.0")
    publish(alice, signer, "1.0.0", "arm64")
    amd = ex.fleet.add_node(ORG, "p1", "amd64", pattern=f"{ORG}/web")
    arm = ex.fleet.add_node(ORG, "p2", "arm64", pattern=f"{ORG}/web")
    asleep = ex.fleet.add_node(ORG, "p3", "amd64", pattern=f"{ORG}/web")
    ex.fleet.set_online(asleep, False)
    beat = ex.nodes(ORG)[asleep]["lastHeartbeat"]
    body: dict[str, Any] = {"label": "web", "public": False, "services": [
        {"serviceUrl": "hello", "serviceOrgid": ORG, "serviceArch": arch, "serviceVersions": versions(("1.0.0", 1))}
        for arch in ("amd64", "arm64")]}
    assert alice.post(f"orgs/{ORG}/patterns/web", json=body).status_code == 201
    wait_until(lambda: ex.fleet.running(amd) == ex.fleet.running(arm) == {"hello": "1.0.0"}, timeout=20,
               what="pattern nodes to run 1.0.0")
    wait_until(lambda: ex.nodes(ORG)[amd]["lastHeartbeat"] != ex.nodes(ORG)[amd]["lastUpdated"], timeout=20,
               what="a heartbeat")
    assert ex.fleet.running(asleep) == {} and ex.nodes(ORG)[asleep]["lastHeartbeat"] == beat
    ex.fleet.set_online(asleep, True)
    wait_until(lambda: ex.fleet.running(asleep) == {"hello": "1.0.0"}, timeout=20, what="the node back online")


@pytest.mark.parametrize(("constraints", "expected"), [
    (["group == canary"], True),
    (['group == "canary" && tier == 1'], True),
    (["group == fleet OR tier == 1"], True),
    (["group == fleet", "tier == 1"], False),
    (["group != canary"], False),
    (["missing == x"], False),
    (["nonsense"], False),
])
def test_constraints(constraints: list[str], expected: bool) -> None:
    props: list[dict[str, Any]] = [{"name": "group", "value": "canary"}, {"name": "tier", "value": 1}]
    assert constraints_match(constraints, props) is expected


def test_the_agbot_places_the_service_only_where_both_directions_hold(ex: ExchangeStandIn, alice: httpx.Client,
                                                                       signer: PemSigner) -> None:
    """anax compcheck/policy_check_test.go Test_policyCompatible_with_Pols, played by the stand-in's agbot: the
    deployment policy's constraints against the node's properties, and the node's constraints against the policy's
    properties merged with the service policy's (anax compcheck CheckPolicyCompatiblility, Are_Compatible)."""
    from sandbox.fleet import policy_compatible

    publish(alice, signer, "1.0.0")
    body = {"label": "bp", "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": versions(
        ("1.0.0", 1))}, "properties": [{"name": "prop1", "value": "val1"}, {"name": "prop2", "value": "val2"}],
        "constraints": ["prop3 == val3", 'prop4 == "some value"']}
    service_policy = {"properties": [{"name": "prop5", "value": "val5"}, {"name": "prop6", "value": "val6"}],
                      "constraints": ['prop4 == "some value"']}
    node_constraints = ["prop1 == val1", "prop5 == val5"]
    good = ex.fleet.add_node(ORG, "good", "amd64", properties=[{"name": "prop3", "value": "val3"}, {
        "name": "prop4", "value": "some value"}], constraints=node_constraints)
    other = ex.fleet.add_node(ORG, "other", "amd64", properties=[{"name": "prop3", "value": "val3"}, {
        "name": "prop4", "value": "some other value"}], constraints=node_constraints)
    assert alice.post(f"orgs/{ORG}/business/policies/bp", json=body).status_code == 201
    time.sleep(1.0)  # several agent cycles: without the service policy, nobody offers prop5
    assert ex.fleet.running(good) == {} and ex.fleet.running(other) == {}
    # hzn exchange service addpolicy: PUT orgs/{org}/services/{id}/policy, as edgebot reads it back
    from workers.exchange import ExchangeClient

    with ExchangeClient(ex.url, ORG, "alice", PW, timeout=30) as client:
        assert client.get_service_policy(ORG, "hello_1.0.0_amd64") is None
        assert alice.put(f"orgs/{ORG}/services/hello_1.0.0_amd64/policy", json=service_policy).status_code == 201
        stored = client.get_service_policy(ORG, "hello_1.0.0_amd64")
    assert stored is not None and stored["constraints"] == service_policy["constraints"]
    assert stored["properties"] == service_policy["properties"]
    wait_until(lambda: ex.fleet.running(good) == {"hello": "1.0.0"}, timeout=20, what="the compatible node")
    assert ex.fleet.running(other) == {}
    details = ex.nodes(ORG)
    assert details[good]["constraints"] == node_constraints  # node-details shows the node policy's constraints
    assert policy_compatible(body, details[good], svc_org=ORG, url="hello", version="1.0.0", arch="amd64",
                             service_policy=service_policy)
    # hzn policy update on the node: its constraints now refuse the policy; the agreement ends
    ex.fleet.set_node_policy(good, constraints=["prop2 == nope"])
    wait_until(lambda: ex.fleet.running(good) == {}, timeout=20, what="the node to drop the refused policy")


def test_registry_host() -> None:
    assert registry_host("registry.example:5000/edge/x@sha256:ab") == "registry.example:5000"
    assert registry_host("library/busybox") == "docker.io"
    assert registry_host("localhost/x") == "localhost"


def test_new_containers_are_not_started_while_they_pull(ex: ExchangeStandIn, alice: httpx.Client,
                                                        signer: PemSigner) -> None:
    publish(alice, signer, "1.0.0")
    slow = canary(ex, "slow")
    ex.fleet.set_pull_time(slow, 1.5)
    put_policy(alice, "hello-canary", versions(("1.0.0", 1)), method="post")
    wait_until(lambda: ex.fleet.container_states(slow) == {"hello": ["not started"]}, timeout=20,
               what="the pull to start")
    beat = ex.nodes(ORG)[slow]["lastHeartbeat"]
    wait_until(lambda: ex.nodes(ORG)[slow]["lastHeartbeat"] != beat, timeout=5, what="a heartbeat while pulling")
    assert ex.fleet.container_states(slow) == {"hello": ["not started"]}
    wait_until(lambda: ex.fleet.container_states(slow) == {"hello": ["running"]}, timeout=20, what="the pull")


def test_a_policy_the_agbot_refuses_moves_nothing(ex: ExchangeStandIn, alice: httpx.Client,
                                                  signer: PemSigner) -> None:
    publish(alice, signer, "1.0.0")
    publish(alice, signer, "1.1.0")
    node = canary(ex, "n1")
    put_policy(alice, "hello-canary", versions(("1.0.0", 1)), method="post")
    wait_until(lambda: ex.fleet.running(node) == {"hello": "1.0.0"}, timeout=20, what="n1 on 1.0.0")
    # priority_value 1 without retries: the Exchange stores it, the agbot (ServiceRef.Validate) drops the policy
    put_policy(alice, "hello-canary", [{"version": "1.1.0", "priority": {"priority_value": 1}}])
    assert ex.policies(ORG)["hello-canary"]["service"]["serviceVersions"][0]["version"] == "1.1.0"
    time.sleep(1.0)
    assert ex.fleet.running(node) == {"hello": "1.0.0"} and ex.fleet.errors(node) == []
    put_policy(alice, "hello-canary", [{"version": "1.1.0"}])  # no priority at all is valid
    wait_until(lambda: ex.fleet.running(node) == {"hello": "1.1.0"}, timeout=20, what="n1 on 1.1.0")


def test_a_pattern_change_restarts_every_node_of_the_pattern_once(ex: ExchangeStandIn, alice: httpx.Client,
                                                                  signer: PemSigner) -> None:
    publish(alice, signer, "1.0.0")
    publish(alice, signer, "1.1.0")
    nodes = [ex.fleet.add_node(ORG, f"p{i}", "amd64", pattern=f"{ORG}/web") for i in (1, 2)]
    body: dict[str, Any] = {"label": "web", "public": False, "services": [
        {"serviceUrl": "hello", "serviceOrgid": ORG, "serviceArch": "amd64",
         "serviceVersions": versions(("1.0.0", 1))}]}
    assert alice.post(f"orgs/{ORG}/patterns/web", json=body).status_code == 201
    wait_until(lambda: all(ex.fleet.running(n) == {"hello": "1.0.0"} for n in nodes), timeout=20, what="1.0.0")
    agreements = {n: ex.nodes(ORG)[n]["services"][0]["agreementId"] for n in nodes}
    # a change that leaves the version alone (a label) is no agreement change; PATCH of services is
    assert alice.patch(f"orgs/{ORG}/patterns/web", json={"label": "web 2"}).status_code == 201
    time.sleep(0.5)
    assert all(ex.fleet.restarts(n) == 0 for n in nodes)
    services = [{**body["services"][0], "serviceVersions": versions(("1.0.0", 1), ("1.1.0", 2))}]
    assert alice.patch(f"orgs/{ORG}/patterns/web", json={"services": services}).status_code == 201
    wait_until(lambda: all(ex.fleet.restarts(n) == 1 for n in nodes), timeout=20, what="every node to restart")
    assert all(ex.fleet.running(n) == {"hello": "1.0.0"} for n in nodes), "same version, restarted"
    assert all(ex.nodes(ORG)[n]["services"][0]["agreementId"] != agreements[n] for n in nodes)
    time.sleep(0.5)
    assert all(ex.fleet.restarts(n) == 1 for n in nodes), "once per change"
