"""Registry kinds: IBM Cloud Container Registry defaults, OpenShift checks (route CA trusted by the Docker Engine,
service-account token expiry), and the CA step for real: a registry in a network namespace that the private Docker
Engine refuses with x509 until the worker installs the route's CA in ``/etc/docker/certs.d/<host:port>/ca.crt``."""

from __future__ import annotations

import base64
import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from edgebot.config import RegistryConfig, parse_config
from edgebot.errors import ConfigError, StepFailed
from edgebot.secrets import Secret, SecretRef, SecretResolver
from sandbox.pki import TestCA
from sandbox.processes import CERTS_D, DockerDaemon, NetNamespace, Registry, untrust_registry_ca
from workers.builders import push_with_fresh_credentials
from workers.context import WorkerContext
from workers.images import PushFailed, build_image
from workers.registries import before_push, ensure_docker_trusts, jwt_expiry, node_token_notes, token_expiry_note

BASE: dict[str, Any] = {
    "slack": {"bot_token": "env:SLACK_BOT_TOKEN", "signing_secret": "env:SLACK_SIGNING_SECRET"},
    "redis": {"url": "redis://127.0.0.1:1/0"},
    "exchange": {"url": "https://hub.example/edge-exchange/v1", "username": "acme/edgebot", "password": "env:EX"},
    "signing": {"private_key": "env:KEY"},
    "services": {"hello": {"source": "https://git.example/hello.git", "org": "acme", "arches": ["amd64"]}},
}
DAY = 86400.0


def config_with(registry: dict[str, Any], settings: dict[str, Any] | None = None, docker_url: str = "") -> Any:
    data = copy.deepcopy(BASE)
    data["registries"] = {"reg": registry}
    if settings:
        data["settings"] = settings
    if docker_url:
        data["docker"] = {"url": docker_url}
    return parse_config(data, environ={})


def service_account_jwt(exp: float | None, *, sub: str | None = "system:serviceaccount:edge:pusher") -> str:
    """Shaped like `oc create token` output (only the claims matter: nothing here verifies the signature)."""
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()

    claims: dict[str, Any] = {"sub": sub} if sub else {}
    if exp is not None:
        claims["exp"] = int(exp)
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


# -- configuration -----------------------------------------------------------------------------------------------------


def test_icr_defaults_the_user_to_iamapikey() -> None:
    registry = config_with({"kind": "icr", "host": "us.icr.io", "namespace": "edge", "push_password": "env:ICR_KEY",
                            "pull_password": "env:ICR_READER_KEY"}).registries["reg"]
    assert (registry.push_username, registry.pull_username) == ("iamapikey", "iamapikey")
    assert registry.node_credentials() == ("iamapikey", SecretRef("env", "ICR_READER_KEY"))
    private = config_with({"kind": "icr", "host": "private.de.icr.io", "namespace": "edge",
                           "push_password": "env:K"}).registries["reg"]
    assert private.pull_username is None and private.node_credentials() is None


def test_ocp_takes_a_plain_ca_path_as_a_file_reference() -> None:
    registry = config_with({"kind": "ocp", "host": "default-route-openshift-image-registry.apps.c1.example.com",
                            "namespace": "edge", "push_username": "edgebot-pusher", "push_password": "env:SA_TOKEN",
                            "ca_cert": "/etc/edgebot/ocp-ingress-ca.crt"}).registries["reg"]
    assert registry.ca_cert == SecretRef("file", "/etc/edgebot/ocp-ingress-ca.crt")


@pytest.mark.parametrize(("table", "expected"), [
    ({"kind": "icr", "host": "registry.example.com", "namespace": "edge", "push_password": "env:K"},
     "reg.host must be an IBM Cloud Container Registry host such as us.icr.io"),
    ({"kind": "icr", "host": "us.icr.io", "push_password": "env:K"}, "namespace is required for kind = \"icr\""),
    ({"kind": "ocp", "host": "r.apps.example.com", "push_username": "sa", "push_password": "env:T"},
     "namespace is required for kind = \"ocp\": the OpenShift project"),
    ({"kind": "ocp", "host": "r.apps.example.com", "namespace": "edge", "push_password": "env:T"},
     "push_username is required for kind = \"ocp\": the name of a service account of project edge"),
    ({"kind": "ocp", "host": "r", "namespace": "edge", "push_username": "sa", "push_password": "env:T",
      "ca_cert": "ca.crt"}, "reg.ca_cert: a secret must be a reference"),
    ({"kind": "generic", "host": "r", "push_password": "env:T"}, "push_username is required"),
])
def test_registry_mistakes_name_the_key(table: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_with(table)
    assert expected in str(info.value)


# -- service-account tokens ------------------------------------------------------------------------------------------

OCP = RegistryConfig(alias="ocp", kind="ocp", host="route.apps.example.com", namespace="edge",
                     push_username="edgebot-pusher", push_password=SecretRef("vault", "edgebot/build#ocp_token"),
                     pull_username="edgebot-puller", pull_password=SecretRef("vault", "edgebot/publish#ocp_pull"))


def test_jwt_expiry_is_read_without_verifying() -> None:
    assert jwt_expiry(service_account_jwt(1_900_000_000)) == 1_900_000_000
    assert jwt_expiry(service_account_jwt(None)) is None  # a legacy service-account token: no exp
    assert jwt_expiry("not-a-jwt") is None and jwt_expiry("a.b.c") is None and jwt_expiry("a.!!!.c") is None


def test_token_close_to_expiry_gets_a_note_naming_the_reference() -> None:
    now = 1_800_000_000.0
    soon = Secret(service_account_jwt(now + 2 * DAY), OCP.push_password)
    note = token_expiry_note(OCP, "edgebot-pusher", soon, OCP.push_password, role="push", window=7 * DAY, now=now)
    assert note is not None
    assert note.startswith(":warning: the OpenShift service-account token of `ocp` (edgebot-pusher, from "
                           "vault:edgebot/build#ocp_token) expires in 2 days")
    assert "oc create token edgebot-pusher -n edge" in note and soon.reveal() not in note
    assert token_expiry_note(OCP, "u", Secret(service_account_jwt(now + 30 * DAY), "x"), OCP.push_password,
                             role="push", window=7 * DAY, now=now) is None
    expired = token_expiry_note(OCP, "u", Secret(service_account_jwt(now - 60), "x"), OCP.push_password,
                                role="push", window=7 * DAY, now=now)
    assert expired is not None and " expired (" in expired
    pull = node_token_notes(OCP, ("edgebot-puller", Secret(service_account_jwt(now + 3 * 3600), "x")),
                            window=DAY, now=now)
    assert len(pull) == 1 and "expires in 3 hours" in pull[0] and "nodes pull with it" in pull[0]
    assert "from vault:edgebot/publish#ocp_pull" in pull[0]
    generic = RegistryConfig(alias="g", kind="generic", host="h", namespace="n", push_username="u",
                             push_password=SecretRef("env", "P"))
    assert node_token_notes(generic, ("u", Secret(service_account_jwt(now), "x")), window=DAY, now=now) == []


# -- the route's CA --------------------------------------------------------------------------------------------------


def ocp_registry(host: str, ca_ref: SecretRef | None) -> RegistryConfig:
    return RegistryConfig(alias="ocp", kind="ocp", host=host, namespace="edge", push_username="pusher",
                          push_password=SecretRef("env", "OCP_TOKEN"), ca_cert=ca_ref)


def test_ca_installed_checked_or_refused_with_the_exact_file(tmp_path: Path) -> None:
    ca, other = TestCA.create("cluster ingress CA"), TestCA.create("some other CA")
    registry = ocp_registry("route.apps.example.com:443", SecretRef("file", "/etc/edgebot/ocp-ca.crt"))
    certs = tmp_path / "certs.d"
    target = certs / "route.apps.example.com:443" / "ca.crt"
    ca_pem = ca.cert_pem.decode()

    with pytest.raises(StepFailed) as refused:
        ensure_docker_trusts(registry, ca_pem, docker_url=None, certs_dir=certs, install=False)
    assert str(refused.value) == (
        "the Docker Engine of this worker does not trust route.apps.example.com:443's CA: install the CA from "
        f"file:/etc/edgebot/ocp-ca.crt as {target} on the build host (as root: `install -D -m 0644 <the CA file> "
        f"{target}`), and the same file on every edge node that pulls from route.apps.example.com:443 "
        "(settings.install_registry_ca is off, so edgebot does not install it itself)")
    assert not target.exists()

    assert ensure_docker_trusts(registry, ca_pem, docker_url="unix:///run/docker.sock", certs_dir=certs,
                                install=True) == f"installed {target}"
    assert target.read_bytes() == ca.cert_pem and oct(target.stat().st_mode & 0o777) == "0o644"
    assert ensure_docker_trusts(registry, ca_pem, docker_url=None, certs_dir=certs, install=False) == \
        f"{target} trusts the route's CA"

    target.write_bytes(other.cert_pem)  # an admin's file for another CA is never overwritten
    with pytest.raises(StepFailed, match=f"{target} does not hold the CA from file:/etc/edgebot/ocp-ca.crt"):
        ensure_docker_trusts(registry, ca_pem, docker_url=None, certs_dir=certs, install=True)
    target.write_bytes(other.cert_pem + ca.cert_pem)  # a bundle holding it is fine
    assert "trusts the route's CA" in ensure_docker_trusts(registry, ca_pem, docker_url=None, certs_dir=certs,
                                                           install=False)

    assert ensure_docker_trusts(registry, ca_pem, docker_url="tcp://builder:2376", certs_dir=tmp_path / "none",
                                install=True).startswith("remote Docker Engine")
    with pytest.raises(StepFailed, match="holds no PEM certificate"):
        ensure_docker_trusts(registry, "-----BEGIN NOTHING-----", docker_url=None, certs_dir=certs, install=True)


NS_HOSTNAME, NS_PORT = "edgebot-ocp.test", 5443
NS_HOST_IP, NS_IP = "10.213.9.1", "10.213.9.2"


def test_ocp_route_ca_is_installed_for_the_docker_engine_and_the_push_works(docker_daemon: DockerDaemon,
                                                                            tmp_path: Path) -> None:
    """The whole OpenShift pre-push path with real parts: a TLS registry with htpasswd auth in a network namespace
    (Docker checks its certificate, unlike on loopback) whose password is a service-account JWT expiring tomorrow."""
    address = f"{NS_HOSTNAME}:{NS_PORT}"
    untrust_registry_ca(address)
    ca = TestCA.create("openshift ingress CA (netns)")
    ca_file = tmp_path / "ingress-ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    token = service_account_jwt(time.time() + DAY, sub=None)
    assert len(token) < 72, "bcrypt (htpasswd -B) uses the first 72 bytes only"
    repository = f"{address}/edge/hello_amd64"
    table = {"kind": "ocp", "host": address, "namespace": "edge", "push_username": "pusher",
             "push_password": "env:OCP_TOKEN", "ca_cert": str(ca_file)}
    netns = NetNamespace("edgebotoc", host_ip=NS_HOST_IP, ns_ip=NS_IP, hostname=NS_HOSTNAME)
    client = docker_daemon.client()

    def context(install: bool) -> WorkerContext:
        config = config_with(table, {"install_registry_ca": install}, docker_url=docker_daemon.base_url)
        return WorkerContext(config, SecretResolver({"OCP_TOKEN": token}))

    try:
        build_dir = tmp_path / "ctx"
        build_dir.mkdir()
        (build_dir / "Dockerfile").write_text('FROM amd64/busybox:1.36\nCMD ["/bin/busybox", "true"]\n')
        build_image(client, context_dir=build_dir, dockerfile="Dockerfile", tag=f"{repository}:1.0.0", arch="amd64")
        with netns, Registry(tmp_path / "reg", ca, users={"pusher": token}, host=NS_IP, port=NS_PORT, netns=netns,
                             hostname=NS_HOSTNAME) as reg:
            refusing = context(install=False)
            registry = refusing.config.registries["reg"]
            with pytest.raises(StepFailed) as refused:
                before_push(refusing, registry)
            assert f"install the CA from file:{ca_file} as {CERTS_D / address / 'ca.crt'} on the build host" \
                in str(refused.value)

            # without the CA the Engine really refuses the route (dockerd needs a few seconds to see the new
            # /etc/hosts line: wait for the TLS answer, the one that counts)
            errors: list[str] = []

            def x509_refusal() -> bool:
                try:
                    push_with_fresh_credentials(refusing, client, registry, repository, "1.0.0")
                except PushFailed as exc:
                    errors.append(str(exc))
                    return "x509" in errors[-1]
                raise AssertionError("pushed without trusting the CA")

            from sandbox.proc_base import wait_until

            wait_until(x509_refusal, timeout=40, interval=0.5, what="Docker to refuse the route's certificate")
            assert token not in errors[-1]

            installing = context(install=True)
            notes = before_push(installing, registry)
            assert (CERTS_D / address / "ca.crt").read_bytes() == ca.cert_pem
            assert len(notes) == 1 and "expires in 24 hours" in notes[0] and "from env:OCP_TOKEN" in notes[0]
            assert token not in notes[0]
            digest = push_with_fresh_credentials(installing, client, registry, repository, "1.0.0")
            assert reg.manifest("edge/hello_amd64", "1.0.0")[0] == digest
            assert before_push(installing, registry) == notes  # already trusted: nothing written again
    finally:
        untrust_registry_ca(address)
        client.close()
    assert not (CERTS_D / address).exists() and not netns.exists()


def test_config_check_reports_the_route_ca_and_token_expiry(tmp_path: Path) -> None:
    from workers.config_check import run_checks

    ca = TestCA.create("cluster ingress CA (config check)")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    certs = tmp_path / "certs.d"
    table = {"kind": "ocp", "host": "route.invalid:443", "namespace": "edge", "push_username": "pusher",
             "push_password": "env:PUSH_TOKEN", "pull_username": "puller", "pull_password": "env:PULL_TOKEN",
             "ca_cert": str(ca_file)}
    environ = {"PUSH_TOKEN": service_account_jwt(time.time() + 2 * DAY),
               "PULL_TOKEN": service_account_jwt(time.time() - 60)}

    def lines(install: bool) -> dict[str, Any]:
        config = config_with(table, {"docker_certs_dir": str(certs), "install_registry_ca": install})
        return {line.item: line for line in run_checks(config, SecretResolver(environ), timeout=2)}

    first = lines(install=True)
    assert first["registry reg route CA"].ok
    assert first["registry reg route CA"].detail == (f"{certs}/route.invalid:443/ca.crt is not there yet: build "
                                                    "workers install it before their first push")
    push = first["registry reg push token (env:PUSH_TOKEN)"]
    assert push.ok and "(in 2.0 days) — renew it soon" in push.detail
    pull = first["registry reg pull token (env:PULL_TOKEN)"]
    assert not pull.ok and pull.detail.startswith("the service-account token from env:PULL_TOKEN expired at ")
    assert not any(v in str(line) for line in first.values() for v in environ.values())

    refused = lines(install=False)["registry reg route CA"]
    assert not refused.ok and f"as {certs}/route.invalid:443/ca.crt on the build host" in refused.detail
    (certs / "route.invalid:443").mkdir(parents=True)
    (certs / "route.invalid:443" / "ca.crt").write_bytes(ca.cert_pem)
    assert lines(install=False)["registry reg route CA"].detail.endswith("trusts the route's CA")
    assert not (certs / "route.invalid:443" / ".ca.crt.edgebot-tmp").exists()
