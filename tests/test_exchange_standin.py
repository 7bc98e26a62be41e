"""The Exchange stand-in must be as strict as the real Exchange 2.154.0: every rule is driven here over real HTTP
with httpx. If the stand-in were lenient, edgebot's tests against it would prove nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sandbox.exchange import ExchangeStandIn

ORG, OTHER = "acme", "other"
ALICE_PW, BOB_PW, ADMIN_PW, EVE_PW, API_KEY = "alice-pw-1", "bob-pw-2", "admin-pw-3", "eve-pw-4", "acme-api-key-5"
SID = "hello_1.0.0_amd64"

Client = Callable[..., httpx.Client]


@pytest.fixture()
def ex() -> Iterator[ExchangeStandIn]:
    with ExchangeStandIn() as standin:
        standin.add_user(ORG, "alice", ALICE_PW)
        standin.add_user(ORG, "bob", BOB_PW)
        standin.add_user(ORG, "boss", ADMIN_PW, admin=True)
        standin.add_user(OTHER, "eve", EVE_PW)
        standin.add_apikey(ORG, API_KEY, owner="alice")
        yield standin


@pytest.fixture()
def client(ex: ExchangeStandIn) -> Iterator[Client]:
    made: list[httpx.Client] = []

    def make(user: str = f"{ORG}/alice", password: str = ALICE_PW, *, auth: bool = True) -> httpx.Client:
        c = httpx.Client(base_url=ex.url + "/", auth=(user, password) if auth else None, timeout=30)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture()
def alice(client: Client) -> httpx.Client:
    return client()


def service(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "label": "hello for amd64", "description": "", "public": False, "documentation": "", "url": "hello",
        "version": "1.0.0", "arch": "amd64", "sharable": "multiple", "matchHardware": {}, "requiredServices": [],
        "userInput": [], "deployment": '{"services":{"hello":{"image":"reg.example.com:5000/edge/hello_amd64@sha256:'
        + "a" * 64 + '"}}}', "deploymentSignature": "c2lnbmF0dXJl", "clusterDeployment": "",
        "clusterDeploymentSignature": "",
    }
    body.update(overrides)
    return body


def error(response: httpx.Response, status: int, code: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "msg"}
    if code:
        assert body["code"] == code
    return body


def create(c: httpx.Client, org: str = ORG, **overrides: Any) -> httpx.Response:
    response = c.post(f"orgs/{org}/services", json=service(**overrides))
    assert response.status_code == 201, response.text
    return response


# -- auth -----------------------------------------------------------------------------------------------------------
def test_user_and_apikey_authenticate_and_apikey_acts_as_its_owner(ex: ExchangeStandIn, client: Client) -> None:
    error(client().get(f"orgs/{ORG}/services"), 404, "not-found")  # authenticated; nothing there yet
    by_key = client(f"{ORG}/apikey", API_KEY)
    assert by_key.post(f"orgs/{ORG}/services", json=service()).json() == {
        "code": "ok", "msg": f"service '{ORG}/{SID}' created"}
    stored = ex.service(ORG, SID)
    assert stored is not None and stored["owner"] == f"{ORG}/alice"
    assert ex.requests()[-1] == {"method": "POST", "path": f"/edge-exchange/v1/orgs/{ORG}/services", "status": 201,
                                 "user": f"{ORG}/alice"}


@pytest.mark.parametrize("user, password", [
    (f"{ORG}/alice", "wrong"),          # bad password
    ("alice", ALICE_PW),                # no org prefix: the username must be org/id
    (f"{OTHER}/alice", ALICE_PW),       # right password, wrong org
    (f"{ORG}/apikey", "not-a-key"),     # unknown API key
    (f"{OTHER}/apikey", API_KEY),       # a key of another org
    (f"{ORG}/nobody", ALICE_PW),
])
def test_bad_credentials_are_401(client: Client, user: str, password: str) -> None:
    body = error(client(user, password).get(f"orgs/{ORG}/services"), 401, "invalid-credentials")
    assert body["msg"] == "invalid credentials"


def test_missing_or_non_basic_auth_is_401(client: Client) -> None:
    anonymous = client(auth=False)
    error(anonymous.get(f"orgs/{ORG}/services"), 401, "invalid-credentials")
    error(anonymous.get(f"orgs/{ORG}/services", headers={"Authorization": "Bearer " + ALICE_PW}), 401)
    error(anonymous.get(f"orgs/{ORG}/services", headers={"Authorization": "Basic !!!not-base64"}), 401)
    error(anonymous.post(f"orgs/{ORG}/services", json=service()), 401)


def test_request_log_never_holds_a_password_or_key(ex: ExchangeStandIn, client: Client) -> None:
    create(client())
    client(f"{ORG}/apikey", API_KEY).get(f"orgs/{ORG}/services/{SID}")
    client(f"{ORG}/alice", "wrong-password-here").get(f"orgs/{ORG}/services")
    log = json.dumps(ex.requests())
    assert len(ex.requests()) == 3
    for secret in (ALICE_PW, API_KEY, "wrong-password-here"):
        assert secret not in log
    assert "secret" not in repr(ex)


def test_another_org_cannot_write_and_reads_only_public_services(client: Client, alice: httpx.Client) -> None:
    eve = client(f"{OTHER}/eve", EVE_PW)
    error(eve.post(f"orgs/{ORG}/services", json=service()), 403, "access-denied")
    create(alice)
    error(eve.get(f"orgs/{ORG}/services/{SID}"), 403, "access-denied")
    error(eve.put(f"orgs/{ORG}/services/{SID}", json=service()), 403)
    error(eve.put(f"orgs/{ORG}/services/{SID}/keys/k.pem", content=b"key"), 403)
    error(eve.post(f"orgs/{ORG}/business/policies/p", json={}), 403)
    error(eve.get(f"orgs/{ORG}/node-details"), 403)
    create(alice, url="shared", public=True)
    assert eve.get(f"orgs/{ORG}/services/shared_1.0.0_amd64").status_code == 200
    assert list(eve.get(f"orgs/{ORG}/services").json()["services"]) == [f"{ORG}/shared_1.0.0_amd64"]
    error(eve.get(f"orgs/{ORG}/services/shared_1.0.0_amd64/dockauths"), 403)  # tokens stay in the org


# -- services -------------------------------------------------------------------------------------------------------
def test_service_id_is_derived_from_the_body_like_formId(ex: ExchangeStandIn, alice: httpx.Client) -> None:
    create(alice, url="https://internetofthings.ibmcloud.com/services/cpu2wiotp", version="1.1.3")
    create(alice, url="reg.io:5000/my$svc!*,;/?@&~=%x", version="2")
    assert sorted(ex.services(ORG)) == ["internetofthings.ibmcloud.com-services-cpu2wiotp_1.1.3_amd64",
                                        "reg.io:5000-my-svc-----------x_2_amd64"]


def test_get_returns_the_stored_service_in_its_envelope(ex: ExchangeStandIn, alice: httpx.Client) -> None:
    error(alice.get(f"orgs/{ORG}/services/{SID}"), 404, "not-found")
    create(alice, description=None, matchHardware=None)
    one = alice.get(f"orgs/{ORG}/services/{SID}")
    assert one.status_code == 200
    assert set(one.json()) == {"services", "lastIndex"}
    record = one.json()["services"][f"{ORG}/{SID}"]
    for name, value in service().items():
        if name not in ("description", "matchHardware"):
            assert record[name] == value, name
    assert record["description"] == "hello for amd64"  # defaults to the label, like the real Exchange
    assert record["matchHardware"] == {} and record["owner"] == f"{ORG}/alice" and record["lastUpdated"]
    everything = alice.get(f"orgs/{ORG}/services")
    assert everything.status_code == 200 and list(everything.json()["services"]) == [f"{ORG}/{SID}"]
    assert alice.get(f"orgs/{ORG}/services", params={"url": "hel%"}).status_code == 200
    error(alice.get(f"orgs/{ORG}/services", params={"arch": "arm64"}), 404)
    assert ex.service(ORG, SID) == record


def test_duplicate_post_is_403_already_exists(alice: httpx.Client, client: Client) -> None:
    create(alice)
    body = error(alice.post(f"orgs/{ORG}/services", json=service(label="other")), 403, "already-exists")
    assert SID in body["msg"]
    error(client(f"{ORG}/bob", BOB_PW).post(f"orgs/{ORG}/services", json=service()), 403, "already-exists")


@pytest.mark.parametrize("overrides, fragment", [
    ({"label": None}, "label"),
    ({"url": None}, "url"),
    ({"version": None}, "version"),
    ({"arch": None}, "arch"),
    ({"sharable": None}, "sharable"),
    ({"public": None}, "public"),
    ({"public": "false"}, "public"),
    ({"label": 5}, "label"),
    ({"version": "1.0.0-beta"}, "1.0.0-beta"),
    ({"version": "1.2.3.4"}, "1.2.3.4"),
    ({"version": "1.0.0\n"}, "1.0.0"),
    ({"version": "v1"}, "v1"),
    ({"version": "١.٠"}, "version"),  # non-ASCII digits are not \d for the Exchange
    ({"arch": ""}, "arch"),
    ({"sharable": "shared"}, "shared"),
    ({"documentation": "not a url"}, "documentation"),
    ({"deployment": {"services": {}}}, "deployment"),
    ({"deploymentSignature": ""}, "not appear to be signed"),
    ({"deploymentSignature": None}, "not appear to be signed"),
    ({"clusterDeployment": "{}", "clusterDeploymentSignature": ""}, "signed"),
    ({"requiredServices": [{"url": "dep", "org": ORG, "arch": "amd64"}]}, "versionRange"),
    ({"requiredServices": [{"url": "dep", "org": ORG, "version": "1.0.0", "arch": "arm64"}]}, "arm64"),
    ({"requiredServices": [{"url": "missing", "org": ORG, "versionRange": "[1.0.0,INFINITY)", "arch": "amd64"}]},
     "does not exist"),
    ({"requiredServices": "dep"}, "requiredServices"),
])
def test_invalid_service_bodies_are_400(ex: ExchangeStandIn, alice: httpx.Client, overrides: dict[str, Any],
                                        fragment: str) -> None:
    body = error(alice.post(f"orgs/{ORG}/services", json=service(**overrides)), 400, "invalid-input")
    assert fragment in body["msg"]
    assert ex.services(ORG) == {}


def test_a_cluster_deployment_is_stored_as_sent_beside_or_without_a_device_one(ex: ExchangeStandIn,
                                                                               alice: httpx.Client) -> None:
    cluster = '{"metadata":{"namespace":""},"operatorYamlArchive":"H4sI"}'  # not parsed by the Exchange
    assert alice.post(f"orgs/{ORG}/services", json=service(clusterDeployment=cluster,
                                                           clusterDeploymentSignature="c2ln")).status_code == 201
    stored = ex.services(ORG)["hello_1.0.0_amd64"]
    assert (stored["clusterDeployment"], stored["clusterDeploymentSignature"]) == (cluster, "c2ln")
    only = service(version="1.0.1", deployment="", deploymentSignature="", clusterDeployment=cluster,
                   clusterDeploymentSignature="c2ln")
    assert alice.post(f"orgs/{ORG}/services", json=only).status_code == 201


def test_missing_public_and_malformed_bodies_are_400(alice: httpx.Client) -> None:
    without_public = service()
    del without_public["public"]
    error(alice.post(f"orgs/{ORG}/services", json=without_public), 400, "invalid-input")
    headers = {"Content-Type": "application/json"}
    error(alice.post(f"orgs/{ORG}/services", content=b'{"label": ', headers=headers), 400, "invalid-input")
    error(alice.post(f"orgs/{ORG}/services", content=b"[1, 2]", headers=headers), 400, "invalid-input")
    # a JSON body sent as text/plain is refused by the JSON unmarshaller, like akka/pekko-http does
    plain = alice.post(f"orgs/{ORG}/services", content=json.dumps(service()).encode(),
                       headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415


@pytest.mark.parametrize("version", ["1", "1.2", "1.2.3", "10.20.30"])
def test_valid_versions_are_accepted(alice: httpx.Client, version: str) -> None:
    create(alice, version=version)
    assert alice.get(f"orgs/{ORG}/services/hello_{version}_amd64").status_code == 200


def test_documentation_must_be_a_url_when_given(alice: httpx.Client) -> None:
    create(alice, documentation="https://example.com/docs/hello")
    create(alice, version="1.0.1", documentation="")


@pytest.mark.parametrize("reference, ok", [
    ({"version": "1.2.0"}, True),                       # a single version is a minimum: [1.2.0,INFINITY)
    ({"version": "1.5.0"}, False),
    ({"versionRange": "[1.0.0,INFINITY)"}, True),
    ({"versionRange": "[1.0.0,1.2.0)"}, False),         # exclusive ceiling
    ({"versionRange": "[1.0.0,1.2.0]"}, True),          # inclusive ceiling
    ({"versionRange": "(1.2.0,2.0.0)"}, False),         # exclusive floor
    ({"versionRange": "[1.2.0,1.2.0]"}, True),          # exactly that version
    ({"versionRange": "[2.0.0,3.0.0)"}, False),
    ({"versionRange": "garbage"}, False),
])
def test_required_services_must_exist_in_range(ex: ExchangeStandIn, alice: httpx.Client,
                                               reference: dict[str, str], ok: bool) -> None:
    create(alice, url="dep", version="1.2.0")
    create(alice, url="dep", version="1.2.0", arch="arm64")
    ref = {"url": "dep", "org": ORG, "arch": "amd64", **reference}
    response = alice.post(f"orgs/{ORG}/services", json=service(requiredServices=[ref]))
    if ok:
        assert response.status_code == 201, response.text
        stored = ex.service(ORG, SID)
        assert stored is not None and stored["requiredServices"] == [ref]
    else:
        assert "does not exist" in error(response, 400, "invalid-input")["msg"]


def test_required_service_must_match_org(alice: httpx.Client) -> None:
    create(alice, url="dep", version="1.2.0")
    ref = {"url": "dep", "org": OTHER, "versionRange": "[1.0.0,INFINITY)", "arch": "amd64"}
    error(alice.post(f"orgs/{ORG}/services", json=service(requiredServices=[ref])), 400)


def test_put_updates_and_keeps_the_owner(ex: ExchangeStandIn, alice: httpx.Client, client: Client) -> None:
    create(alice)
    before = ex.service(ORG, SID)
    assert before is not None
    response = alice.put(f"orgs/{ORG}/services/{SID}", json=service(label="new label"))
    assert response.status_code == 201 and response.json()["code"] == "ok"
    after = ex.service(ORG, SID)
    assert after is not None and after["label"] == "new label" and after["owner"] == f"{ORG}/alice"
    assert after["lastUpdated"] != before["lastUpdated"]
    boss = client(f"{ORG}/boss", ADMIN_PW)  # an org admin may update anyone's service
    assert boss.put(f"orgs/{ORG}/services/{SID}", json=service(label="by admin")).status_code == 201
    stored = ex.service(ORG, SID)
    assert stored is not None and stored["owner"] == f"{ORG}/alice"


def test_put_rules_missing_mismatch_and_owner(ex: ExchangeStandIn, alice: httpx.Client, client: Client) -> None:
    error(alice.put(f"orgs/{ORG}/services/{SID}", json=service()), 404, "not-found")
    create(alice)
    body = error(alice.put(f"orgs/{ORG}/services/{SID}", json=service(version="1.0.1")), 400, "invalid-input")
    assert "does not match" in body["msg"]
    bob = client(f"{ORG}/bob", BOB_PW)
    error(bob.put(f"orgs/{ORG}/services/{SID}", json=service(label="hijack")), 403, "access-denied")
    error(bob.delete(f"orgs/{ORG}/services/{SID}"), 403)
    stored = ex.service(ORG, SID)
    assert stored is not None and stored["label"] == "hello for amd64"


def test_delete_is_204_and_removes_keys_and_dockauths(ex: ExchangeStandIn, alice: httpx.Client) -> None:
    create(alice)
    alice.put(f"orgs/{ORG}/services/{SID}/keys/k.pem", content=b"key")
    alice.post(f"orgs/{ORG}/services/{SID}/dockauths", json={"registry": "r.io", "token": "t0ken"})
    response = alice.delete(f"orgs/{ORG}/services/{SID}")
    assert response.status_code == 204 and response.content == b""
    error(alice.get(f"orgs/{ORG}/services/{SID}"), 404)
    assert ex.keys(ORG, SID) == {} and ex.dockauths(ORG, SID) == []
    error(alice.delete(f"orgs/{ORG}/services/{SID}"), 404)


# -- keys -----------------------------------------------------------------------------------------------------------
PEM = b"-----BEGIN PUBLIC KEY-----\r\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\r\n-----END PUBLIC KEY-----\r\n"


def test_key_is_the_raw_body_byte_for_byte(ex: ExchangeStandIn, alice: httpx.Client) -> None:
    create(alice)
    error(alice.get(f"orgs/{ORG}/services/{SID}/keys"), 404, "not-found")
    put = alice.put(f"orgs/{ORG}/services/{SID}/keys/service.public.pem", content=PEM)  # no Content-Type, like hzn
    assert "content-type" not in {k.lower() for k in put.request.headers}
    assert put.status_code == 201 and put.json()["code"] == "ok"
    assert ex.keys(ORG, SID)["service.public.pem"].encode() == PEM
    got = alice.get(f"orgs/{ORG}/services/{SID}/keys/service.public.pem")
    assert got.status_code == 200 and got.content == PEM
    assert got.headers["content-type"].startswith("text/plain")
    # the OpenAPI file's {"key": …} wrapper is stored literally (and would break verification on the agent)
    wrapped = json.dumps({"key": PEM.decode()}).encode()
    assert alice.put(f"orgs/{ORG}/services/{SID}/keys/wrapped.pem", content=wrapped,
                     headers={"Content-Type": "application/json"}).status_code == 201
    assert ex.keys(ORG, SID)["wrapped.pem"].encode() == wrapped
    assert alice.get(f"orgs/{ORG}/services/{SID}/keys").json() == ["service.public.pem", "wrapped.pem"]
    error(alice.get(f"orgs/{ORG}/services/{SID}/keys/none.pem"), 404, "not-found")
    assert alice.delete(f"orgs/{ORG}/services/{SID}/keys/wrapped.pem").status_code == 204
    assert list(ex.keys(ORG, SID)) == ["service.public.pem"]


def test_key_put_needs_the_service_and_its_owner(ex: ExchangeStandIn, alice: httpx.Client, client: Client) -> None:
    error(alice.put(f"orgs/{ORG}/services/{SID}/keys/k.pem", content=PEM), 404, "not-found")
    create(alice)
    error(client(f"{ORG}/bob", BOB_PW).put(f"orgs/{ORG}/services/{SID}/keys/k.pem", content=PEM), 403)
    error(alice.put(f"orgs/{ORG}/services/{SID}/keys/k.pem", content=b""), 400)
    assert ex.keys(ORG, SID) == {}


# -- dockauths ------------------------------------------------------------------------------------------------------
def test_dockauths_add_dedupe_and_list(ex: ExchangeStandIn, alice: httpx.Client) -> None:
    error(alice.post(f"orgs/{ORG}/services/{SID}/dockauths", json={"registry": "r.io", "token": "t"}), 404)
    create(alice)
    error(alice.get(f"orgs/{ORG}/services/{SID}/dockauths"), 404, "not-found")
    auth = {"registry": "reg.example.com:5000", "username": "puller", "token": "pull-token-1"}
    first = alice.post(f"orgs/{ORG}/services/{SID}/dockauths", json=auth)
    assert first.status_code == 201 and first.json()["msg"] == "dockauth 1 added"
    stamp = ex.dockauths(ORG, SID)[0]["lastUpdated"]
    again = alice.post(f"orgs/{ORG}/services/{SID}/dockauths", json=auth)
    assert again.status_code == 201 and again.json()["msg"] == "dockauth resource updated"
    assert len(ex.dockauths(ORG, SID)) == 1 and ex.dockauths(ORG, SID)[0]["lastUpdated"] != stamp
    second = alice.post(f"orgs/{ORG}/services/{SID}/dockauths", json={"registry": "us.icr.io", "token": "k"})
    assert second.json()["msg"] == "dockauth 2 added"
    listed = alice.get(f"orgs/{ORG}/services/{SID}/dockauths")
    assert listed.status_code == 200
    assert [(d["dockAuthId"], d["registry"], d["username"], d["token"]) for d in listed.json()] == [
        (1, "reg.example.com:5000", "puller", "pull-token-1"), (2, "us.icr.io", "token", "k")]
    assert set(listed.json()[0]) == {"dockAuthId", "registry", "username", "token", "lastUpdated"}
    assert alice.get(f"orgs/{ORG}/services/{SID}/dockauths/2").json()["registry"] == "us.icr.io"
    assert alice.delete(f"orgs/{ORG}/services/{SID}/dockauths/2").status_code == 204
    error(alice.get(f"orgs/{ORG}/services/{SID}/dockauths/2"), 404)


@pytest.mark.parametrize("body", [{"token": "t"}, {"registry": "r.io"}, {"registry": "", "token": "t"},
                                  {"registry": "r.io", "token": 5}])
def test_dockauth_needs_registry_and_token(ex: ExchangeStandIn, alice: httpx.Client, body: dict[str, Any]) -> None:
    create(alice)
    error(alice.post(f"orgs/{ORG}/services/{SID}/dockauths", json=body), 400, "invalid-input")
    assert ex.dockauths(ORG, SID) == []


# -- deployment policies and patterns -------------------------------------------------------------------------------
def policy(version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"label": "hello everywhere", "description": "", "service": {
        "name": "hello", "org": ORG, "arch": "*",
        "serviceVersions": [{"version": version, "priority": {"priority_value": 1}, "upgradePolicy": {}}]},
        "properties": [], "constraints": ["purpose == edge"], **extra}


def pattern(version: str = "1.0.0") -> dict[str, Any]:
    return {"label": "hello pattern", "public": False, "services": [{
        "serviceUrl": "hello", "serviceOrgid": ORG, "serviceArch": "amd64",
        "serviceVersions": [{"version": version, "priority": {}, "upgradePolicy": {}}]}]}


@pytest.mark.parametrize("kind, primary, alias, envelope, make", [
    ("policies", "business/policies", "deployment/policies", "businessPolicy", policy),
    ("patterns", "patterns", "deployment/patterns", "patterns", pattern),
])
def test_policies_and_patterns_crud_with_aliases(ex: ExchangeStandIn, alice: httpx.Client, client: Client,
                                                 kind: str, primary: str, alias: str, envelope: str,
                                                 make: Callable[..., dict[str, Any]]) -> None:
    create(alice)
    create(alice, version="1.0.1")
    for path in (primary, alias):
        error(alice.get(f"orgs/{ORG}/{path}"), 404, "not-found")
    body = make()
    body["x-extra"] = {"kept": True}  # bodies are otherwise kept verbatim
    assert alice.post(f"orgs/{ORG}/{primary}/web", json=body).status_code == 201
    error(alice.post(f"orgs/{ORG}/{alias}/web", json=body), 403, "already-exists")
    listed = alice.get(f"orgs/{ORG}/{alias}")
    assert listed.status_code == 200 and list(listed.json()[envelope]) == [f"{ORG}/web"]
    one = alice.get(f"orgs/{ORG}/{primary}/web").json()[envelope][f"{ORG}/web"]
    assert one["x-extra"] == {"kept": True} and one["owner"] == f"{ORG}/alice" and one["lastUpdated"]
    assert alice.put(f"orgs/{ORG}/{alias}/web", json=make("1.0.1")).status_code == 201
    stored = getattr(ex, kind)(ORG)["web"]
    versions = stored["service"]["serviceVersions"] if kind == "policies" else stored["services"][0]["serviceVersions"]
    assert [v["version"] for v in versions] == ["1.0.1"]
    error(alice.put(f"orgs/{ORG}/{primary}/nope", json=make()), 404, "not-found")
    error(client(f"{ORG}/bob", BOB_PW).put(f"orgs/{ORG}/{primary}/web", json=make()), 403, "access-denied")
    assert alice.delete(f"orgs/{ORG}/{alias}/web").status_code == 204
    error(alice.get(f"orgs/{ORG}/{primary}/web"), 404)
    error(alice.delete(f"orgs/{ORG}/{primary}/web"), 404)


@pytest.mark.parametrize("body", [
    {"label": "x"},
    {"label": "x", "service": {"name": "hello", "org": ORG, "serviceVersions": [{"version": "1.0.0"}]}},
    {"label": "x", "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": []}},
    {"label": "x", "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": [{"priority": {}}]}},
    {"label": "x", "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": [{"version": "1.x"}]}},
    policy("9.9.9"),                                        # a version that is not published
    {**policy(), "service": {**policy()["service"], "arch": "arm64"}},  # published for amd64 only
])
def test_invalid_policies_are_400(ex: ExchangeStandIn, alice: httpx.Client, body: dict[str, Any]) -> None:
    create(alice)
    error(alice.post(f"orgs/{ORG}/business/policies/p", json=body), 400, "invalid-input")
    assert ex.policies(ORG) == {}


@pytest.mark.parametrize("body", [
    {"label": "x"},
    {"label": "x", "services": []},
    {"label": "x", "services": [{"serviceUrl": "hello", "serviceOrgid": ORG, "serviceVersions": []}]},
    {"label": "x", "services": [{"serviceUrl": "hello", "serviceOrgid": ORG, "serviceArch": "amd64",
                                 "serviceVersions": []}]},
    {"label": "x", "services": [{"serviceUrl": "hello", "serviceOrgid": ORG, "serviceArch": "amd64",
                                 "serviceVersions": [{"version": "1.0.0", "deployment_overrides": "{}"}]}]},
    pattern("2.0.0"),
])
def test_invalid_patterns_are_400(ex: ExchangeStandIn, alice: httpx.Client, body: dict[str, Any]) -> None:
    create(alice)
    error(alice.post(f"orgs/{ORG}/patterns/p", json=body), 400, "invalid-input")
    assert ex.patterns(ORG) == {}


# -- nodes ----------------------------------------------------------------------------------------------------------
def test_node_details_and_service_search(ex: ExchangeStandIn, alice: httpx.Client) -> None:
    error(alice.get(f"orgs/{ORG}/node-details"), 404, "not-found")
    query = {"orgid": ORG, "serviceURL": "hello", "serviceVersion": "1.0.0", "serviceArch": "amd64"}
    none = alice.post(f"orgs/{ORG}/search/nodes/service", json=query)
    assert none.status_code == 404 and none.json() == {"nodes": []}
    ex.add_node(ORG, "n1", "amd64", properties=[{"name": "purpose", "value": "edge"}], owner=f"{ORG}/alice")
    ex.add_node(ORG, "n2", "arm64", owner=f"{ORG}/alice")
    details = alice.get(f"orgs/{ORG}/node-details")
    assert details.status_code == 200
    assert [(n["id"], n["arch"], n["properties"]) for n in details.json()] == [
        (f"{ORG}/n1", "amd64", [{"name": "purpose", "value": "edge"}]), (f"{ORG}/n2", "arm64", [])]
    assert [n["id"] for n in alice.get(f"orgs/{ORG}/node-details", params={"arch": "arm64"}).json()] == [f"{ORG}/n2"]
    assert alice.post(f"orgs/{ORG}/search/nodes/service", json=query).status_code == 404  # registered, not running
    ex.set_node_services(ORG, "n1", [{"orgid": ORG, "serviceUrl": "hello", "version": "1.0.0", "arch": "amd64"}])
    found = alice.post(f"orgs/{ORG}/search/nodes/service", json=query)
    assert found.status_code == 201
    heartbeat = ex.nodes(ORG)[f"{ORG}/n1"]["lastHeartbeat"]
    assert found.json() == {"nodes": [[f"{ORG}/n1", heartbeat]]}
    other_version = alice.post(f"orgs/{ORG}/search/nodes/service", json={**query, "serviceVersion": "1.0.1"})
    assert other_version.status_code == 404
    error(alice.post(f"orgs/{ORG}/search/nodes/service", json={"orgid": ORG}), 400, "invalid-input")


def test_node_details_visibility_by_role_and_filters(ex: ExchangeStandIn, client: Client) -> None:
    """exchange-api route/node/Details.scala: a hub admin sees no node, an org admin every node of the org, a
    standard user only the nodes it owns. Filters arch, id, name (like), type, owner."""
    ex.add_user("root", "hubadmin", "hub-pw", admin=True)
    ex.add_node(ORG, "mine", "amd64", owner=f"{ORG}/alice")
    ex.add_node(ORG, "bobs-1", "arm64", owner=f"{ORG}/bob")
    ex.add_node(ORG, "bobs-2", "amd64", owner=f"{ORG}/bob")
    alice, bob = client(), client(f"{ORG}/bob", BOB_PW)
    boss, hub = client(f"{ORG}/boss", ADMIN_PW), client("root/hubadmin", "hub-pw")
    assert [n["id"] for n in alice.get(f"orgs/{ORG}/node-details").json()] == [f"{ORG}/mine"]
    assert [n["id"] for n in bob.get(f"orgs/{ORG}/node-details").json()] == [f"{ORG}/bobs-1", f"{ORG}/bobs-2"]
    everyone = [f"{ORG}/bobs-1", f"{ORG}/bobs-2", f"{ORG}/mine"]
    assert [n["id"] for n in boss.get(f"orgs/{ORG}/node-details").json()] == everyone
    error(hub.get(f"orgs/{ORG}/node-details"), 404, "not-found")

    def ids(**query: str) -> list[str]:
        return [n["id"] for n in boss.get(f"orgs/{ORG}/node-details", params=query).json()]

    assert ids(arch="arm%") == [f"{ORG}/bobs-1"]
    assert ids(id=f"{ORG}/bobs%") == [f"{ORG}/bobs-1", f"{ORG}/bobs-2"]
    assert ids(name="mine") == [f"{ORG}/mine"]
    assert ids(owner=f"{ORG}/bob") == [f"{ORG}/bobs-1", f"{ORG}/bobs-2"]
    assert ids(type="device") == everyone
    assert ids(node="mine") == everyone, "the server reads no `node` filter, whatever the OpenAPI document says"
    error(boss.get(f"orgs/{ORG}/node-details", params={"type": "cluster"}), 404)
    # the user's own record says whether it is an org admin (what edgebot checks before a rollout)
    me = alice.get(f"orgs/{ORG}/users/alice").json()["users"][f"{ORG}/alice"]
    assert me["admin"] is False and me["hubAdmin"] is False and "alice" not in me["password"]
    assert boss.get(f"orgs/{ORG}/users/boss").json()["users"][f"{ORG}/boss"]["admin"] is True
    error(alice.get(f"orgs/{ORG}/users/bob"), 403)
    assert boss.get(f"orgs/{ORG}/users/bob").status_code == 200


def test_patch_changes_one_attribute_and_keeps_the_others(ex: ExchangeStandIn, alice: httpx.Client) -> None:
    """exchange-api PatchBusinessPolicyRequest / PatchPatternRequest: a PATCH of ``service`` (``services``) leaves
    constraints and everything else as they are."""
    create(alice)
    create(alice, version="1.0.1")
    assert alice.post(f"orgs/{ORG}/business/policies/p", json=policy(constraints=["a == 1"])).status_code == 201
    moved = {"name": "hello", "org": ORG, "arch": "amd64", "serviceVersions": [{"version": "1.0.1"}]}
    assert alice.patch(f"orgs/{ORG}/business/policies/p", json={"service": moved}).status_code == 201
    stored = ex.policies(ORG)["p"]
    assert stored["service"] == moved and stored["constraints"] == ["a == 1"] and stored["label"] == "hello everywhere"
    missing = {**moved, "serviceVersions": [{"version": "9.9.9"}]}
    error(alice.patch(f"orgs/{ORG}/business/policies/p", json={"service": missing}), 400, "invalid-input")
    error(alice.patch(f"orgs/{ORG}/business/policies/p", json={"nothing": 1}), 400, "invalid-input")
    error(alice.patch(f"orgs/{ORG}/business/policies/nope", json={"service": moved}), 404)
    assert alice.post(f"orgs/{ORG}/patterns/w", json=pattern()).status_code == 201
    services = [{**pattern()["services"][0], "serviceVersions": [{"version": "1.0.1"}]}]
    assert alice.patch(f"orgs/{ORG}/patterns/w", json={"services": services}).status_code == 201
    assert ex.patterns(ORG)["w"]["services"] == services and ex.patterns(ORG)["w"]["label"] == pattern()["label"]


# -- routing, faults, language ----------------------------------------------------------------------------------------
def test_unknown_routes_are_404_and_wrong_methods_405(ex: ExchangeStandIn, alice: httpx.Client) -> None:
    body = error(alice.get(f"orgs/{ORG}/nonsense"), 404, "not-found")
    assert body["msg"] == "unrecognized route"
    error(alice.get(ex.url.replace("/edge-exchange/v1", "/v2") + f"/orgs/{ORG}/services"), 404, "not-found")
    wrong = alice.patch(f"orgs/{ORG}/services")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST"
    assert alice.post(f"orgs/{ORG}/node-details", json={}).status_code == 405


def test_fail_next_answers_the_injected_status_before_anything_else(ex: ExchangeStandIn, client: Client) -> None:
    alice = client()
    ex.fail_next("GET", r"/services$", 502, count=2)
    for c in (client(auth=False), alice):  # before auth, too
        body = error(c.get(f"orgs/{ORG}/services"), 502, "database-connection-error")
        assert "PSQLException" in body["msg"]
    error(alice.get(f"orgs/{ORG}/services"), 404)  # the faults are used up
    ex.fail_next("*", "/services", 504)
    error(alice.post(f"orgs/{ORG}/services", json=service()), 504, "database-timeout")
    assert ex.services(ORG) == {}  # nothing was processed
    create(alice)
    assert [r["status"] for r in ex.requests()] == [502, 502, 404, 504, 201]


def test_german_exchange_translates_codes_and_messages_but_not_statuses() -> None:
    with ExchangeStandIn(language="de") as de, \
            httpx.Client(base_url=de.url + "/", auth=(f"{ORG}/alice", ALICE_PW)) as c:
        de.add_user(ORG, "alice", ALICE_PW)
        created = c.post(f"orgs/{ORG}/services", json=service())
        assert created.status_code == 201 and created.json() == {
            "code": "OK", "msg": f"Der Service '{ORG}/{SID}' wurde erstellt"}
        assert error(c.post(f"orgs/{ORG}/services", json=service()), 403)["code"] == "Bereits_vorhanden"
        invalid = error(c.post(f"orgs/{ORG}/services", json=service(version="1.0-rc1")), 400)
        assert invalid["code"] == "Ungültige_Eingabe" and "Versionsformat" in invalid["msg"]
        assert error(c.get(f"orgs/{ORG}/services/nope"), 404)["code"] == "Nicht_gefunden"
        bad = httpx.get(de.url + f"/orgs/{ORG}/services", auth=(f"{ORG}/alice", "wrong"))
        assert error(bad, 401)["code"] == "Ungültige_Berechtigungsnachweise"
        assert c.put(f"orgs/{ORG}/services/{SID}/keys/k.pem", content=PEM).status_code == 201


def test_stop_closes_kept_alive_connections() -> None:
    standin = ExchangeStandIn().start()
    standin.add_user(ORG, "alice", ALICE_PW)
    with httpx.Client(base_url=standin.url + "/", auth=(f"{ORG}/alice", ALICE_PW)) as c:
        assert c.get(f"orgs/{ORG}/services").status_code == 404  # connection now kept alive
        standin.stop()
        with pytest.raises(httpx.TransportError):
            c.get(f"orgs/{ORG}/services")


def test_command_line_runs_it_in_the_foreground() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.exchange", "--port", "0", "--org", ORG, "--user", f"{ORG}/alice:{ALICE_PW}",
         "--apikey", f"{ORG}:{API_KEY}:alice"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/edge-exchange/v1")
        with httpx.Client(base_url=url + "/", auth=(f"{ORG}/apikey", API_KEY), timeout=30) as c:
            assert c.post(f"orgs/{ORG}/services", json=service()).status_code == 201
            assert c.get(f"orgs/{ORG}/services/{SID}").json()["services"][f"{ORG}/{SID}"]["owner"] == f"{ORG}/alice"
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_dockauth_put_replaces_one_in_place(ex: ExchangeStandIn, client: Client, alice: httpx.Client) -> None:
    """exchange-api ``route/service/dockerauth/DockerAuth.scala`` putDockerAuth: same id, new body, 201."""
    create(alice)
    alice.post(f"orgs/{ORG}/services/{SID}/dockauths", json={"registry": "r.io", "username": "sa", "token": "old-1"})
    alice.post(f"orgs/{ORG}/services/{SID}/dockauths", json={"registry": "q.io", "token": "other"})
    put = alice.put(f"orgs/{ORG}/services/{SID}/dockauths/1", json={"registry": "r.io", "username": "sa",
                                                                    "token": "new-2"})
    assert put.status_code == 201 and put.json()["msg"] == "dockauth 1 updated"
    assert [(d["dockAuthId"], d["registry"], d["username"], d["token"]) for d in ex.dockauths(ORG, SID)] == [
        (1, "r.io", "sa", "new-2"), (2, "q.io", "token", "other")]
    error(alice.put(f"orgs/{ORG}/services/{SID}/dockauths/9", json={"registry": "r.io", "token": "x"}), 404)
    error(alice.put(f"orgs/{ORG}/services/{SID}/dockauths/one", json={"registry": "r.io", "token": "x"}), 400)
    error(alice.put(f"orgs/{ORG}/services/{SID}/dockauths/1", json={"registry": "r.io"}), 400)
    bob = client(f"{ORG}/bob", BOB_PW)
    error(bob.put(f"orgs/{ORG}/services/{SID}/dockauths/1", json={"registry": "r.io", "token": "mine"}), 403)
    assert ex.dockauths(ORG, SID)[0]["token"] == "new-2"


@pytest.mark.parametrize(("status", "code"), [(403, "access-denied"), (400, "invalid-input"), (502, "")])
def test_injected_refusals_answer_as_the_real_server(ex: ExchangeStandIn, alice: httpx.Client, status: int,
                                                     code: str) -> None:
    create(alice)
    ex.fail_next("PUT", r"/keys/", status)
    error(alice.put(f"orgs/{ORG}/services/{SID}/keys/k.pem", content=b"key"), status, code)
    assert ex.keys(ORG, SID) == {}  # refused before any processing
    assert alice.put(f"orgs/{ORG}/services/{SID}/keys/k.pem", content=b"key").status_code == 201
