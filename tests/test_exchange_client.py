"""edgebot's Exchange client and publish sequence, against the real stand-in server over loopback HTTP (English and
German: the client must behave the same, since it branches on status codes only)."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.exchange import ExchangeStandIn
from workers.exchange import (
    ExchangeAuthError,
    ExchangeClient,
    ExchangeError,
    ExchangeForbidden,
    ExchangeInvalid,
    ExchangeNotFound,
    ExchangeUnavailable,
    PublishOutcome,
    ServiceExistsDifferent,
    publish_service,
    service_id,
)

ORG = "acme"
PASSWORD, API_KEY, EVE_PASSWORD = "alice-secret-pw", "acme-apikey-secret", "eve-secret-pw"
REGISTRY = "reg.example.com:5000"
PULL = (REGISTRY, "puller", "pull-token-secret")
SID = "reg.example.com-hello_1.0.0_amd64"


@pytest.fixture(scope="module")
def public_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(params=["en", "de"])
def ex(request: pytest.FixtureRequest) -> Iterator[ExchangeStandIn]:
    with ExchangeStandIn(language=request.param) as standin:
        standin.add_user(ORG, "alice", PASSWORD)
        standin.add_user("other", "eve", EVE_PASSWORD)
        standin.add_apikey(ORG, API_KEY, owner="alice")
        yield standin


@pytest.fixture()
def client(ex: ExchangeStandIn) -> Iterator[ExchangeClient]:
    with ExchangeClient(ex.url, ORG, "alice", PASSWORD, timeout=30) as c:
        yield c


def body(**overrides: Any) -> dict[str, Any]:
    """What ``ServiceDefinition.exchange_body`` builds: a signed deployment string and hzn's fields."""
    digest = "sha256:" + "b" * 64
    data: dict[str, Any] = {
        "label": "hello for amd64", "description": "", "public": False, "documentation": "",
        "url": "https://reg.example.com/hello", "version": "1.0.0", "arch": "amd64", "sharable": "multiple",
        "matchHardware": None, "requiredServices": None, "userInput": [
            {"name": "GREETING", "label": "", "type": "string", "defaultValue": "hi"}],
        "deployment": '{"services":{"hello":{"image":"' + f"{REGISTRY}/edge/hello_amd64@{digest}" + '"}}}',
        "deploymentSignature": "c2lnbmF0dXJlLTE=", "clusterDeployment": "", "clusterDeploymentSignature": "",
    }
    data.update(overrides)
    return data


def writes(ex: ExchangeStandIn, since: int = 0) -> list[tuple[str, str, int]]:
    return [(r["method"], r["path"].split("/v1/", 1)[1], r["status"]) for r in ex.requests()[since:]
            if r["method"] in ("POST", "PUT", "DELETE", "PATCH")]


def publish(client: ExchangeClient, pem: bytes, **kwargs: Any) -> PublishOutcome:
    kwargs.setdefault("dockauths", [PULL])
    return publish_service(client, ORG, kwargs.pop("service", body()), key_name="edgebot.public.pem",
                           public_key_pem=pem, **kwargs)


def test_service_id_matches_the_exchange_rule() -> None:
    assert service_id("https://internetofthings.ibmcloud.com/services/cpu2wiotp", "1.1.3", "amd64") == \
        "internetofthings.ibmcloud.com-services-cpu2wiotp_1.1.3_amd64"
    assert service_id("ibm.helloworld", "1.0.0", "arm64") == "ibm.helloworld_1.0.0_arm64"
    assert service_id("host:5000/a$b", "1", "s390x") == "host:5000-a-b_1_s390x"


def test_first_publish_creates_everything(ex: ExchangeStandIn, client: ExchangeClient, public_pem: bytes) -> None:
    outcome = publish(client, public_pem)
    assert outcome == PublishOutcome(SID, "created")
    assert writes(ex) == [("POST", f"orgs/{ORG}/services", 201),
                          ("PUT", f"orgs/{ORG}/services/{SID}/keys/edgebot.public.pem", 201),
                          ("POST", f"orgs/{ORG}/services/{SID}/dockauths", 201)]
    stored = ex.service(ORG, SID)
    assert stored is not None and stored["owner"] == f"{ORG}/alice"
    assert stored["deployment"] == body()["deployment"] and stored["deploymentSignature"] == "c2lnbmF0dXJlLTE="
    assert ex.keys(ORG, SID)["edgebot.public.pem"].encode() == public_pem  # raw PEM, byte for byte
    assert [(d["registry"], d["username"], d["token"]) for d in ex.dockauths(ORG, SID)] == [PULL]
    assert client.get_key(ORG, SID, "edgebot.public.pem") == public_pem.decode()
    assert client.list_keys(ORG, SID) == ["edgebot.public.pem"]
    assert client.list_dockauths(ORG, SID)[0]["registry"] == REGISTRY  # host[:port] exactly, no scheme


def test_identical_publish_is_unchanged_without_any_write(ex: ExchangeStandIn, client: ExchangeClient,
                                                          public_pem: bytes) -> None:
    publish(client, public_pem)
    before = len(ex.requests())
    assert publish(client, public_pem) == PublishOutcome(SID, "unchanged")
    assert writes(ex, before) == []
    assert [r["method"] for r in ex.requests()[before:]] == ["GET", "GET", "GET"]  # service, key, dockauths


def test_different_content_is_refused_without_overwrite(ex: ExchangeStandIn, client: ExchangeClient,
                                                        public_pem: bytes) -> None:
    publish(client, public_pem)
    before = len(ex.requests())
    changed = body(deployment=body()["deployment"].replace("b" * 64, "c" * 64), deploymentSignature="b3RoZXI=")
    with pytest.raises(ServiceExistsDifferent) as caught:
        publish(client, public_pem, service=changed)
    text = str(caught.value)
    assert f"{ORG}/{SID}" in text and "deployment, deploymentSignature" in text
    assert "new version" in text and "--overwrite" in text
    assert writes(ex, before) == []
    stored = ex.service(ORG, SID)
    assert stored is not None and stored["deployment"] == body()["deployment"]


def test_overwrite_puts_the_new_content(ex: ExchangeStandIn, client: ExchangeClient, public_pem: bytes) -> None:
    publish(client, public_pem)
    before = len(ex.requests())
    changed = body(label="hello, relabelled")
    assert publish(client, public_pem, service=changed, overwrite=True) == PublishOutcome(SID, "updated")
    assert writes(ex, before) == [("PUT", f"orgs/{ORG}/services/{SID}", 201)]
    stored = ex.service(ORG, SID)
    assert stored is not None and stored["label"] == "hello, relabelled" and stored["owner"] == f"{ORG}/alice"


def test_changed_key_and_new_dockauth_are_written_once(ex: ExchangeStandIn, client: ExchangeClient,
                                                       public_pem: bytes) -> None:
    publish(client, public_pem)
    other_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    icr = ("us.icr.io", "iamapikey", "icr-key-secret")
    before = len(ex.requests())
    assert publish(client, other_pem, dockauths=[PULL, icr]).action == "unchanged"
    assert writes(ex, before) == [("PUT", f"orgs/{ORG}/services/{SID}/keys/edgebot.public.pem", 201),
                                  ("POST", f"orgs/{ORG}/services/{SID}/dockauths", 201)]
    assert ex.keys(ORG, SID)["edgebot.public.pem"].encode() == other_pem
    assert [d["registry"] for d in ex.dockauths(ORG, SID)] == [REGISTRY, "us.icr.io"]


def test_created_meanwhile_post_403_is_treated_as_existing(ex: ExchangeStandIn, client: ExchangeClient,
                                                           public_pem: bytes) -> None:
    """Someone published between our GET (404) and our POST (403 already exists): re-GET and compare."""
    with ExchangeClient(ex.url, ORG, "apikey", API_KEY) as other:
        other.create_service(ORG, body())
    ex.fail_next("GET", rf"/services/{SID}$", 404)  # our GET ran before their POST
    before = len(ex.requests())
    assert publish(client, public_pem) == PublishOutcome(SID, "unchanged")
    assert [(r["method"], r["status"]) for r in ex.requests()[before:before + 3]] == [
        ("GET", 404), ("POST", 403), ("GET", 200)]


def test_forbidden_is_raised_when_the_service_is_not_there(ex: ExchangeStandIn, public_pem: bytes) -> None:
    with ExchangeClient(ex.url, "other", "eve", EVE_PASSWORD) as eve, pytest.raises(ExchangeForbidden) as caught:
        publish(eve, public_pem)
    assert caught.value.status == 403 and not caught.value.transient
    assert ex.services(ORG) == {}


def test_apikey_username_authenticates_as_its_owner(ex: ExchangeStandIn, public_pem: bytes) -> None:
    with ExchangeClient(ex.url, ORG, "apikey", API_KEY) as by_key:
        assert publish(by_key, public_pem).action == "created"
    assert ex.requests()[0]["user"] == f"{ORG}/alice"
    with ExchangeClient(ex.url, "ignored", f"{ORG}/alice", PASSWORD) as qualified:  # "org/user" is used as is
        assert qualified.get_service(ORG, SID) is not None


def test_bad_credentials_raise_auth_error_without_the_password(ex: ExchangeStandIn, public_pem: bytes) -> None:
    for user, password in (("alice", "wrong-password-value"), ("apikey", "unknown-key-value")):
        with ExchangeClient(ex.url, ORG, user, password) as bad, pytest.raises(ExchangeAuthError) as caught:
            publish(bad, public_pem)
        exc = caught.value
        assert exc.status == 401 and not exc.transient and exc.method == "GET"
        assert password not in str(exc) and password not in repr(exc) and password not in repr(bad)
        assert isinstance(exc, ExchangeError)


def test_server_errors_are_transient(ex: ExchangeStandIn, client: ExchangeClient, public_pem: bytes) -> None:
    ex.fail_next("POST", r"/services$", 502)
    with pytest.raises(ExchangeUnavailable) as caught:
        publish(client, public_pem)
    assert caught.value.transient and caught.value.status == 502 and caught.value.method == "POST"
    assert ex.services(ORG) == {}
    assert publish(client, public_pem).action == "created"  # the retry succeeds


def test_invalid_body_keeps_the_server_message(ex: ExchangeStandIn, client: ExchangeClient, public_pem: bytes) -> None:
    with pytest.raises(ExchangeInvalid) as caught:
        publish(client, public_pem, service=body(version="1.0.0-rc1"))
    assert caught.value.status == 400 and "1.0.0-rc1" in str(caught.value)
    unsigned = body(version="1.0.1", deploymentSignature="")
    with pytest.raises(ExchangeInvalid) as caught:
        publish(client, public_pem, service=unsigned)
    assert "sign" in str(caught.value)  # "not signed" / "nicht signiert": shown to the user as the server said it


def test_missing_things_read_as_none_or_empty(client: ExchangeClient) -> None:
    assert client.get_service(ORG, SID) is None
    assert client.list_keys(ORG, SID) == []
    assert client.get_key(ORG, SID, "edgebot.public.pem") is None
    assert client.list_dockauths(ORG, SID) == []


def test_refused_connection_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with ExchangeClient(f"http://127.0.0.1:{port}/v1", ORG, "alice", PASSWORD) as c, \
                pytest.raises(ExchangeUnavailable) as caught:
            c.get_service(ORG, SID)
    assert caught.value.transient and caught.value.status is None and PASSWORD not in str(caught.value)


def test_stopped_standin_is_unavailable(ex: ExchangeStandIn, client: ExchangeClient) -> None:
    assert client.get_service(ORG, SID) is None
    ex.stop()
    with pytest.raises(ExchangeUnavailable):
        client.get_service(ORG, SID)


def test_unanswered_request_times_out_as_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)  # accepts into the backlog, never answers
        with ExchangeClient(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", ORG, "alice", PASSWORD,
                            timeout=0.5) as c, pytest.raises(ExchangeUnavailable) as caught:
            c.get_service(ORG, SID)
    assert caught.value.transient and "in time" in str(caught.value)


def echo_transport(status: int, msg: Callable[[httpx.Request], str]) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, json={"code": "x", "msg": msg(request)}))


@pytest.mark.parametrize("status, kind", [(400, ExchangeInvalid), (403, ExchangeForbidden), (502, ExchangeUnavailable)])
def test_secrets_echoed_by_a_server_are_masked(status: int, kind: type[ExchangeError]) -> None:
    """A proxy or server that echoes the request must not leak the password or a dockauth token through us."""
    transport = echo_transport(status, lambda r: f"bad request {r.headers.get('Authorization')} {r.content!r}")
    with ExchangeClient("http://exchange.invalid/v1", ORG, "alice", PASSWORD, transport=transport) as c, \
            pytest.raises(kind) as caught:
        c.add_dockauth(ORG, SID, REGISTRY, "puller", "token-that-must-not-leak")
    assert "token-that-must-not-leak" not in str(caught.value)
    assert base64.b64encode(f"{ORG}/alice:{PASSWORD}".encode()).decode() not in str(caught.value)
    assert "***" in str(caught.value) and caught.value.path.endswith("/dockauths")
    transport = echo_transport(status, lambda r: f"no such user with password {PASSWORD}")
    with ExchangeClient("http://exchange.invalid/v1", ORG, "alice", PASSWORD, transport=transport) as c, \
            pytest.raises(kind) as caught:
        c.create_service(ORG, body())
    assert PASSWORD not in str(caught.value)


def test_non_json_success_is_an_error_not_a_crash() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>login</html>"))
    with ExchangeClient("http://exchange.invalid/v1", ORG, "alice", PASSWORD, transport=transport) as c, \
            pytest.raises(ExchangeError) as caught:
        c.get_service(ORG, SID)
    assert "not JSON" in str(caught.value) and not caught.value.transient


def test_a_rotated_password_is_read_again_once_on_401(ex: ExchangeStandIn) -> None:
    ex.add_user(ORG, "alice", "alice-rotated-pw")  # the password changed after the worker read it
    reads: list[str] = []

    def current() -> str:
        reads.append("read")
        return "alice-rotated-pw"

    with ExchangeClient(ex.url, ORG, "alice", PASSWORD, timeout=30, refresh_password=current) as rotated:
        assert rotated.get_service(ORG, SID) is None  # 401, re-read, retried: 404 → None
        assert rotated.get_service(ORG, SID) is None
    assert reads == ["read"]
    statuses = [r["status"] for r in ex.requests() if r["path"].endswith(SID)]
    assert statuses == [401, 404, 404]

    wrong = ExchangeClient(ex.url, ORG, "alice", "still-wrong-1", timeout=30, refresh_password=lambda: "still-wrong-2")
    with wrong, pytest.raises(ExchangeAuthError) as info:
        wrong.get_service(ORG, SID)
    assert "still-wrong" not in str(info.value) and "(401)" in str(info.value)


def test_fleet_visibility_needs_an_org_admin(ex: ExchangeStandIn, client: ExchangeClient) -> None:
    """node-details shows a standard user only its own nodes: the rollout watch refuses anything but an org admin,
    read from the user's own record (also through an API key, and for a user of another org)."""
    from workers.exchange import fleet_visibility_problem

    problem = fleet_visibility_problem(client, ORG)
    assert "acme/alice is a standard user of org acme" in problem and "admin role of org acme" in problem
    with ExchangeClient(ex.url, ORG, "apikey", API_KEY, timeout=30) as keyed:
        assert "standard user" in fleet_visibility_problem(keyed, ORG)
    with ExchangeClient(ex.url, "other", "eve", EVE_PASSWORD, timeout=30) as eve:
        assert "belongs to org other" in fleet_visibility_problem(eve, ORG)
    ex.add_user(ORG, "alice", PASSWORD, admin=True)
    assert fleet_visibility_problem(client, ORG) == ""
    with ExchangeClient(ex.url, ORG, "apikey", API_KEY, timeout=30) as keyed:
        assert fleet_visibility_problem(keyed, ORG) == ""


def test_patch_changes_only_the_named_attribute(ex: ExchangeStandIn, client: ExchangeClient) -> None:
    client.create_service(ORG, body())
    client.create_service(ORG, body(version="1.0.1", deploymentSignature="c2lnbmF0dXJlLTI="))
    url = "https://reg.example.com/hello"
    service = {"name": url, "org": ORG, "arch": "amd64", "serviceVersions": [{"version": "1.0.0"}]}
    policy: dict[str, Any] = {"label": "p", "constraints": ["a == 1"], "service": service}
    client.create_deployment_object("policy", ORG, "p", policy)
    with ex.state.lock:  # a human edits the constraints after edgebot's read
        ex.state.policies[ORG]["p"]["constraints"] = ["a == 2"]
    client.patch_deployment_object("policy", ORG, "p", "service", {**policy["service"],
                                                                   "serviceVersions": [{"version": "1.0.1"}]})
    stored = client.get_deployment_object("policy", ORG, "p") or {}
    assert stored["constraints"] == ["a == 2"] and stored["service"]["serviceVersions"] == [{"version": "1.0.1"}]
    with pytest.raises(ExchangeInvalid):
        client.patch_deployment_object("policy", ORG, "p", "service", {**policy["service"],
                                                                       "serviceVersions": [{"version": "9.0.0"}]})


def test_rollout_diagnosis_names_what_the_agent_would_refuse(ex: ExchangeStandIn, client: ExchangeClient,
                                                             public_pem: bytes) -> None:
    """workers.rollout_watch._causes checks what an agent checks, since the agent reports none of it."""
    from workers.rollout_watch import _causes

    url = "https://reg.example.com/hello"
    assert "is not published for arm64" in _causes(client, ORG, url, "1.0.0", "arm64")[0]
    client.create_service(ORG, body())  # a signature no stored key verifies, and no dockauth
    causes = _causes(client, ORG, url, "1.0.0", "amd64")
    assert "verifies with none of the 0 key(s) stored with the service" in causes[0]
    assert f"no dockauth of {SID} has registry {REGISTRY}" in causes[1]
    client.put_key(ORG, SID, "k.pem", public_pem)
    client.add_dockauth(ORG, SID, *PULL)
    causes = _causes(client, ORG, url, "1.0.0", "amd64")
    assert len(causes) == 1 and "verifies with none of the 1 key(s)" in causes[0]


def test_before_write_is_told_before_the_post_and_the_overwrite_put(ex: ExchangeStandIn, client: ExchangeClient,
                                                                    public_pem: bytes) -> None:
    seen: list[tuple[str, bool]] = []

    def note(what: str) -> None:
        seen.append((what, ex.service(ORG, SID) is not None))

    publish(client, public_pem, before_write=note)
    publish(client, public_pem, before_write=note)  # unchanged: nothing written, nothing told
    publish(client, public_pem, service=body(label="changed"), overwrite=True, before_write=note)
    assert seen == [("create", False), ("overwrite", True)]


def test_delete_service_and_update_dockauth(ex: ExchangeStandIn, client: ExchangeClient, public_pem: bytes) -> None:
    publish(client, public_pem)
    auth_id = client.list_dockauths(ORG, SID)[0]["dockAuthId"]
    client.update_dockauth(ORG, SID, auth_id, REGISTRY, "puller", "fresh-token-9")
    assert [(d["dockAuthId"], d["token"]) for d in ex.dockauths(ORG, SID)] == [(auth_id, "fresh-token-9")]
    with pytest.raises(ExchangeNotFound) as missing:
        client.update_dockauth(ORG, SID, auth_id + 5, REGISTRY, "puller", "fresh-token-9")
    assert "fresh-token-9" not in str(missing.value)
    assert client.delete_service(ORG, SID) is True
    assert ex.service(ORG, SID) is None and ex.keys(ORG, SID) == {} and ex.dockauths(ORG, SID) == []
    assert client.delete_service(ORG, SID) is False


def test_exchange_clients_of_a_process_share_one_tls_context(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CA bundle is loaded once per process (and CA file), not per publish job: clients share the context."""
    import ssl

    from sandbox.pki import TestCA
    from workers import exchange

    ca_file = tmp_path / "ca.pem"
    TestCA.create("exchange CA").write_cert(ca_file)
    exchange.tls_context.cache_clear()
    loads: list[object] = []
    real = ssl.create_default_context
    monkeypatch.setattr(exchange.ssl, "create_default_context",
                        lambda *a, **k: loads.append(k.get("cafile")) or real(*a, **k))
    clients = [ExchangeClient("http://127.0.0.1:1", "myorg", "u", "p", verify=v)
               for v in (True, True, str(ca_file), str(ca_file))]
    try:
        contexts = [c._http._transport._pool._ssl_context for c in clients]  # type: ignore[attr-defined]
        assert contexts[0] is contexts[1] and contexts[2] is contexts[3] and contexts[0] is not contexts[2]
        assert sorted(map(str, loads)) == sorted([str(ca_file), exchange.certifi.where()])
        assert contexts[2].get_ca_certs() and contexts[2].verify_mode == ssl.CERT_REQUIRED
    finally:
        for c in clients:
            c.close()
        exchange.tls_context.cache_clear()
