"""requiredServices checked against the Exchange (stand-in, real HTTP) before anything is built: version ranges as
anax ``semanticversion/version.go`` reads them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from edgebot.constraints import version_in_range as in_range
from edgebot.errors import StepFailed
from sandbox.exchange import ExchangeStandIn
from workers.definition import ServiceDefinition
from workers.dependencies import check
from workers.exchange import ExchangeClient

ORG = "acme"


@pytest.mark.parametrize(("version", "spec", "inside"), [
    ("1.0.0", "[1.0.0,2.0.0)", True), ("2.0.0", "[1.0.0,2.0.0)", False), ("2.0.0", "[1.0.0,2.0.0]", True),
    ("1.0.0", "(1.0.0,2.0.0)", False), ("1.5", "[1.0.0,2.0.0)", True), ("3.0.0", "1.2.0", True),
    ("1.1.9", "1.2.0", False), ("9.0.0", "[1.0.0,INFINITY)", True), ("1.0.0", "[1.0.0, 2.0.0)", False),
])
def test_ranges_like_anax_semanticversion(version: str, spec: str, inside: bool) -> None:
    assert in_range(version, spec) is inside


def _definition(arch: str, *deps: dict[str, str]) -> ServiceDefinition:
    raw = {"url": "app", "requiredServices": list(deps), "deployment": {"services": {}}}
    return ServiceDefinition(raw=raw, org=ORG, url="app", version="1.0.0", arch=arch, deployment={"services": {}})


@pytest.fixture()
def client() -> Iterator[ExchangeClient]:
    with ExchangeStandIn() as ex:
        ex.add_user(ORG, "alice", "alice-pw")
        with httpx.Client(base_url=ex.url + "/", auth=(f"{ORG}/alice", "alice-pw")) as c:
            for version in ("1.0.0", "1.4.2"):
                body = {"label": "gps", "public": False, "url": "gps", "version": version, "arch": "amd64",
                        "sharable": "multiple", "deployment": "", "deploymentSignature": ""}
                assert c.post(f"orgs/{ORG}/services", json=body).status_code == 201
        with ExchangeClient(ex.url, ORG, "alice", "alice-pw") as exchange:
            yield exchange


def test_a_dependency_in_range_passes(client: ExchangeClient) -> None:
    dep = {"url": "gps", "org": ORG, "versionRange": "[1.4.0,2.0.0)", "arch": "amd64"}
    check(client, {"amd64": _definition("amd64", dep)}, org=ORG, service="app", version="1.0.0")
    check(client, {"amd64": _definition("amd64", {"url": "gps", "org": ORG, "version": "1.0.0"})}, org=ORG,
          service="app", version="1.0.0")  # a bare version is "at least", the arch the service's


@pytest.mark.parametrize(("dep", "arch", "words"), [
    ({"url": "gps", "org": ORG, "versionRange": "[2.0.0,3.0.0)", "arch": "amd64"}, "amd64",
     ["`acme/gps` (amd64) in `[2.0.0,3.0.0)`", "only `1.0.0`, `1.4.2`, none in range"]),
    ({"url": "gps", "org": ORG, "versionRange": "1.0.0", "arch": "arm64"}, "arm64",
     ["`acme/gps` (arm64) in `1.0.0`", "no version of it is in the Exchange"]),
    ({"url": "radio", "org": ORG, "versionRange": "1.0.0"}, "amd64", ["`acme/radio` (amd64)", "no version"]),
    ({"url": "gps", "org": "other", "versionRange": "1.0.0"}, "amd64", ["`other/gps`", "may not read it"]),
    ({"url": "gps", "org": ORG, "versionRange": "[1.0.0,"}, "amd64", ["is not one anax reads"]),
])
def test_a_missing_dependency_is_refused_with_what_to_publish_first(client: ExchangeClient, dep: dict[str, str],
                                                                    arch: str, words: list[str]) -> None:
    with pytest.raises(StepFailed) as caught:
        check(client, {arch: _definition(arch, dep)}, org=ORG, service="app", version="1.0.0")
    text = str(caught.value)
    for word in [*words, "publish it first", "Nothing was built", "publish app 1.0.0 again"]:
        assert word in text, (word, text)
