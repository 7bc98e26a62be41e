"""Service policies (issue 15): the file read and checked like ``hzn exchange service publish -p`` (anax
``externalpolicy``), the body it PUTs (checked against the Exchange's OpenAPI document), the Exchange stand-in's
``GET/PUT/DELETE …/services/{id}/policy`` over real HTTP, and the simulated agbot's merge of the service policy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.exchange import ExchangeStandIn
from sandbox.exchange_routes import ExchangeState
from sandbox.exchange_rules import form_id
from sandbox.exchange_service_policy import stored_policy
from sandbox.fleet import policy_compatible
from workers.exchange import ExchangeClient
from workers.service_policy import ServicePolicyError, exchange_body, read_policy, same_policy

ORG, SID = "acme", "hello_1.0.0_amd64"
FILE = "horizon/service.policy.json"
OPENAPI = Path("/work/shared/reference/openapi-3-developer.json")


def _read(policy: Any) -> dict[str, Any]:
    return read_policy(json.dumps(policy), file_name=FILE)


def test_a_valid_policy_is_read_and_normalized() -> None:
    policy = _read({"label": "hello", "properties": [
        {"name": "purpose", "value": "camera"}, {"name": "model", "value": "2.1.0", "type": "version"},
        {"name": "fps", "value": 30, "type": "int"}, {"name": "openhorizon.allowPrivileged", "value": "false"}],
        "constraints": ["openhorizon.memory >= 512 && site in \"a,b\""], "extra": "ignored like Go's Unmarshal"})
    assert policy["constraints"] == ["openhorizon.memory >= 512 && site in \"a,b\""]
    assert {"name": "openhorizon.allowPrivileged", "value": False} in policy["properties"]  # string → boolean


@pytest.mark.parametrize(("policy", "problem"), [
    ({"properties": [{"name": "a", "value": 1, "type": "integer"}]}, "invalid property type integer"),
    ({"properties": [{"name": "a", "value": 1.5, "type": "int"}]}, "is not an integer type"),
    ({"properties": [{"name": "a", "value": "x", "type": "boolean"}]}, "expected type boolean"),
    ({"properties": [{"name": "a", "value": "01.2", "type": "version"}]}, "not a valid verion string"),
    ({"properties": [{"name": "", "value": "x"}]}, "must include a name and a value"),
    ({"properties": [{"name": "a", "value": None}]}, "must include a name and a value"),
    ({"properties": [{"name": "a", "value": {"x": 1}}]}, "invalid value type"),
    ({"properties": [{"name": "openhorizon.allowPrivileged", "value": "yes"}]}, "must have a boolean value"),
    ({"constraints": ["NOT purpose == camera"]}, "has no NOT"),
    ({"constraints": ["purpose == "]}, "cannot read constraint 'purpose == '"),
    ({"constraints": "purpose == camera"}, "constraints must be a list"),
    ("[1, 2]", "must be a JSON object"),
])
def test_an_invalid_policy_is_refused_naming_the_file_and_the_problem(policy: Any, problem: str) -> None:
    text = policy if isinstance(policy, str) else json.dumps(policy)
    with pytest.raises(ServicePolicyError) as caught:
        read_policy(text, file_name=FILE)
    assert str(caught.value).startswith(FILE) and problem in str(caught.value), str(caught.value)


def test_not_json_is_refused() -> None:
    with pytest.raises(ServicePolicyError, match="service.policy.json: not valid JSON"):
        read_policy("{properties: []}", file_name=FILE)


def test_the_body_has_the_built_in_service_properties_and_fits_the_openapi_schema() -> None:
    policy = _read({"label": "l", "properties": [{"name": "openhorizon.service.version", "value": "9.9.9"},
                                                  {"name": "purpose", "value": "camera"}], "constraints": ["a == b"]})
    body = exchange_body(policy, url="hello", org=ORG, version="1.0.0", arch="arm64")
    props = {p["name"]: p["value"] for p in body["properties"]}
    assert props == {"purpose": "camera", "openhorizon.service.url": "hello", "openhorizon.service.name": "hello",
                     "openhorizon.service.org": ORG, "openhorizon.service.version": "1.0.0",
                     "openhorizon.service.arch": "arm64"}  # hzn's built-ins replace what the file says
    schemas = json.loads(OPENAPI.read_text())["components"]["schemas"]
    request, prop = schemas["PutServicePolicyRequest"], schemas["OneProperty"]
    assert set(body) <= set(request["properties"])
    assert all(isinstance(body[k], list) for k in ("properties", "constraints"))
    for p in body["properties"]:
        assert set(prop["required"]) <= set(p) and set(p) <= set(prop["properties"])


@pytest.fixture()
def ex() -> Iterator[ExchangeStandIn]:
    with ExchangeStandIn() as standin:
        standin.add_user(ORG, "alice", "alice-pw")
        standin.add_user(ORG, "bob", "bob-pw")
        standin.add_user("other", "eve", "eve-pw")
        yield standin


def _service(ex: ExchangeStandIn, version: str = "1.0.0", public: bool = False) -> str:
    body = {"label": "hello", "public": public, "url": "hello", "version": version, "arch": "amd64",
            "sharable": "multiple", "deployment": '{"services":{"hello":{"image":"r.example.com/h@sha256:' + "a" * 64
            + '"}}}', "deploymentSignature": "c2ln"}
    with httpx.Client(base_url=ex.url + "/", auth=(f"{ORG}/alice", "alice-pw")) as c:
        assert c.post(f"orgs/{ORG}/services", json=body).status_code == 201
    return f"hello_{version}_amd64"


def test_standin_policy_routes_like_the_exchange(ex: ExchangeStandIn) -> None:
    sid = _service(ex)
    alice = ExchangeClient(ex.url, ORG, "alice", "alice-pw")
    assert alice.get_service_policy(ORG, sid) is None  # no row: 404 not.found
    body = exchange_body(_read({"label": "cam", "properties": [{"name": "purpose", "value": "camera"}],
                                "constraints": ["site == x"]}),
                         url="hello", org=ORG, version="1.0.0", arch="amd64")
    alice.put_service_policy(ORG, sid, body)
    stored = alice.get_service_policy(ORG, sid)
    assert stored is not None and stored["description"] == "cam" and stored["lastUpdated"]  # description = label
    assert same_policy(stored, body)
    with httpx.Client(base_url=ex.url + "/", auth=(f"{ORG}/alice", "alice-pw")) as c:
        path = f"orgs/{ORG}/services/{sid}/policy"
        bad_type = c.put(path, json={"properties": [{"name": "a", "value": 1, "type": "integer"}]})
        assert bad_type.status_code == 400 and "properties.type" in bad_type.json()["msg"]
        assert c.put(path, json={"constraints": "a == b"}).status_code == 400
        assert c.put(path, content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
        # the Exchange never parses constraints: the agbot refuses them later, so edgebot must check them first
        assert c.put(path, json={"constraints": ["NOT a == b"]}).status_code == 201
        assert c.put(f"orgs/{ORG}/services/nope_1.0.0_amd64/policy", json={}).status_code == 404
    with httpx.Client(base_url=ex.url + "/", auth=(f"{ORG}/bob", "bob-pw")) as c:  # not the owner
        assert c.put(f"orgs/{ORG}/services/{sid}/policy", json={}).status_code == 403
        assert c.get(f"orgs/{ORG}/services/{sid}/policy").status_code == 200
    with httpx.Client(base_url=ex.url + "/", auth=("other/eve", "eve-pw")) as c:  # another org, private service
        assert c.get(f"orgs/{ORG}/services/{sid}/policy").status_code == 403
    alice.delete_service_policy(ORG, sid)
    assert alice.get_service_policy(ORG, sid) is None
    with httpx.Client(base_url=ex.url + "/", auth=(f"{ORG}/alice", "alice-pw")) as c:
        assert c.delete(f"orgs/{ORG}/services/{sid}/policy").status_code == 404
        alice.put_service_policy(ORG, sid, body)
        assert c.delete(f"orgs/{ORG}/services/{sid}").status_code == 204  # the row cascades with the service
    assert stored_policy(ex.state, ORG, sid) is None
    alice.close()


def fitting_versions(state: ExchangeState, policy: dict[str, Any], arch: str, node: dict[str, Any],
                     versions: tuple[str, ...]) -> tuple[str, ...]:
    """The versions the fleet stand-in's agbot would propose to ``node`` under ``policy`` (sandbox/fleet.py)."""
    svc = policy["service"]
    return tuple(v for v in versions if policy_compatible(
        policy, node, svc_org=svc["org"], url=svc["name"], version=v, arch=arch,
        service_policy=state.service_policies.get((svc["org"], form_id(svc["name"], v, arch)))))


def test_the_agbot_merges_each_versions_service_policy(ex: ExchangeStandIn) -> None:
    """agreementworker.go: the deployment policy merged with the version's service policy (and its built-ins), checked
    both directions against the node: the merged constraints against the node's properties, the node's constraints
    against the merged properties."""
    for version in ("1.0.0", "1.0.1"):
        _service(ex, version)
    alice = ExchangeClient(ex.url, ORG, "alice", "alice-pw")
    policy = _read({"properties": [{"name": "camera", "value": True}], "constraints": ["gpu == true"]})
    alice.put_service_policy(ORG, "hello_1.0.1_amd64", exchange_body(policy, url="hello", org=ORG, version="1.0.1",
                                                                     arch="amd64"))
    alice.close()
    deployment = {"service": {"name": "hello", "org": ORG, "arch": "*"}, "constraints": ["site == berlin"]}
    wants_camera = {"properties": [{"name": "gpu", "value": True}, {"name": "site", "value": "berlin"}],
                    "constraints": ["camera == true"]}
    no_gpu = {"properties": [{"name": "site", "value": "berlin"}], "constraints": []}
    wants_old = {"properties": [{"name": "gpu", "value": True}, {"name": "site", "value": "berlin"}],
                 "constraints": ["openhorizon.service.version == 1.0.0"]}
    elsewhere = {"properties": [{"name": "gpu", "value": True}, {"name": "site", "value": "paris"}],
                 "constraints": ["camera == true"]}
    with ex.state.lock:
        # only 1.0.1 has the service policy that says camera == true: the node's constraint needs it
        assert fitting_versions(ex.state, deployment, "amd64", wants_camera, ("1.0.1", "1.0.0")) == ("1.0.1",)
        # 1.0.1's policy asks for a GPU this node lacks; 1.0.0 has no policy
        assert fitting_versions(ex.state, deployment, "amd64", no_gpu, ("1.0.1", "1.0.0")) == ("1.0.0",)
        # the built-in service properties are there for node constraints
        assert fitting_versions(ex.state, deployment, "amd64", wants_old, ("1.0.1", "1.0.0")) == ("1.0.0",)
        # the deployment policy's own constraints still apply
        assert fitting_versions(ex.state, deployment, "amd64", elsewhere, ("1.0.1", "1.0.0")) == ()


def test_the_policy_is_sealed_with_the_definitions() -> None:
    """A policy changed in Redis after prepare (more properties, a looser constraint) fails the publish worker's
    seal check; a release without a policy keeps the seal it always had."""
    from edgebot.release import Release
    from edgebot.seals import Sealer, source_payload
    from workers.trust import SecurityCheckFailed, check_source, seal_source

    sealer = Sealer(b"k" * 32)
    release = Release(release_id="r-1", team_id="T", channel_id="C", user_id="U", service="hello", version="1.0.0",
                      org=ORG, registry="local", arches=["amd64"], commit_sha="a" * 40)
    release.result("amd64").definition = {"url": "hello"}
    without = dict(source_payload(release))
    assert "service_policies" not in without  # unchanged for releases that have none
    release.result("amd64").service_policy = {"properties": [], "constraints": ["gpu == true"]}
    seal_source(sealer, release)
    check_source(sealer, release)
    release.result("amd64").service_policy["constraints"] = []
    with pytest.raises(SecurityCheckFailed):
        check_source(sealer, release)


def test_same_policy_reads_the_exchange_answer_as_the_exchange_writes_it() -> None:
    body = {"label": "cam", "properties": [{"name": "fps", "value": 30, "type": "int"}, {"name": "a", "value": "x"}],
            "constraints": ["gpu == true"]}
    stored = {"label": "cam", "description": "cam", "lastUpdated": "now", "constraints": ["gpu == true"],
              "properties": [{"name": "a", "value": "x", "type": None}, {"name": "fps", "value": 30.0, "type": "int"}]}
    assert same_policy(stored, body)
    assert not same_policy({**stored, "constraints": []}, body)
    assert not same_policy({**stored, "description": "other"}, body)
    assert not same_policy({**stored, "properties": [{"name": "a", "value": "x"}]}, body)
    assert not same_policy(None, body)
