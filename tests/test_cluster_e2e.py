"""A service with a device deployment and a clusterDeployment (issue 15), end to end: real bot, workers, Redis, Docker
Engine and TLS registry. The operator archive in git names the release's own image by tag and a third-party image
by tag; the Exchange ends up with a clusterDeployment whose archive names both by the digests in the registry,
signed as clusterDeploymentSignature with the service's key (verified here the way the agent verifies), and `edgebot
verify` catches a tampered clusterDeployment in the Exchange."""

from __future__ import annotations

import base64
import gzip
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.processes import add_commit
from sandbox.registry_images import put_index
from sandbox.stack import ORG, Stack
from workers import cluster
from workers.signing import fingerprint, verify_deployment

pytestmark = pytest.mark.slow

VERSIONS = ("7.3.0",)  # a version space of this module's own (the session registry is shared)
DEFINITION = (Path(__file__).parent.parent / "examples/hello/horizon/service.definition.json").read_text()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("cluster"), docker=docker_daemon, registry=registry, versions=VERSIONS,
               arches=("amd64", "arm64"), settings={"duplicate_window": 1}) as running:
        running.wait_workers(3)
        yield running


def _archive(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(text.encode()), 1700000000
            tar.addfile(info, io.BytesIO(text.encode()))
    return gzip.compress(buf.getvalue())


def _verify(stack: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgebot", "--config", str(stack.config_path), "verify", "hello",
                           "7.3.0"], capture_output=True, text=True, env=stack.env(), timeout=120)


def _amd64(done: subprocess.CompletedProcess[str]) -> str:
    assert "\namd64:\n" in done.stdout, done.stdout + done.stderr
    return done.stdout.split("\namd64:\n", 1)[1].split("\narm64:\n", 1)[0]


def test_a_cluster_service_is_published_pinned_signed_and_verified(stack: Stack, registry: Any) -> None:
    host = registry.address
    side = put_index(registry, "cluster/opside", "1.0", ("amd64", "arm64"))
    own = f"{host}/edge/hello_amd64:7.3.0"
    operator = (f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: hello-op\n  namespace: hello-ns\n"
                f"spec:\n  template:\n    spec:\n      containers:\n"
                f"        - name: op\n          image: {own}  # the release image\n"
                f"        - name: side\n          image: \"{host}/cluster/opside:1.0\"\n")
    definition = json.loads(DEFINITION.split("\n", 3)[3])
    definition["clusterDeployment"] = {"operatorYamlArchive": "../operator/hello-op.tar.gz"}
    add_commit(stack.source_path, {"horizon/service.definition.json": json.dumps(definition, indent=2),
                                   "operator/hello-op.tar.gz": _archive({"deploy/op.yaml": operator})}, tag="v7.3.0")
    both = stack.finished(stack.start_release("publish hello 7.3.0 --registry local"), timeout=240)
    assert both.state == "failed" and "not the arm64 image of this release" in both.error, both.error
    assert both.stage("build").status != "done" and stack.exchange.service(ORG, "hello_7.3.0_amd64") is None

    release = stack.finished(stack.start_release("publish hello 7.3.0 --registry local --arch amd64"), timeout=240)
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish"))
    public_pem = stack.exchange.keys(ORG, "hello_7.3.0_amd64")["edgebot.public.pem"].encode()
    pushed = f"{host}/edge/hello_amd64@{release.results['amd64'].digest}"
    for arch in ("amd64",):
        service = stack.exchange.service(ORG, f"hello_7.3.0_{arch}")
        assert service is not None, arch
        assert verify_deployment(public_pem, service["deployment"], service["deploymentSignature"]), arch
        text = service["clusterDeployment"]
        assert verify_deployment(public_pem, text, service["clusterDeploymentSignature"]), arch
        assert cluster.go_json(json.loads(text)) == text  # Go json.Marshal's bytes, as hzn signs them
        doc = json.loads(text)
        assert doc["metadata"] == {"namespace": "hello-ns"}
        members = {m.name: m.data for m in cluster.archive_of(text)}
        yaml_text = members["deploy/op.yaml"].decode()  # type: ignore[union-attr]
        assert yaml_text == operator.replace(own, pushed).replace(f"{host}/cluster/opside:1.0",
                                                                 f"{host}/cluster/opside@{side[arch]}"), arch
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(doc["operatorYamlArchive"]))) as tar:
            assert {i.mtime for i in tar} == {0}  # rebuilt deterministically
    good = _amd64(_verify(stack))  # (arm64, in the catalog, was not published)
    assert ":x:" not in good and "signature verifies with stored key `clusterDeployment edgebot.public.pem`" in good
    assert f"cluster/opside@{side['amd64']}` is pinned, in its registry, for amd64" in good, good

    seen = len(stack.exchange.requests())
    again = stack.finished(stack.start_release("publish hello 7.3.0 --registry local --arch amd64"), timeout=240)
    assert again.state == "succeeded", again.error
    assert again.results["amd64"].publish_action == "already published"  # the same bytes: a no-op
    live = stack.exchange.service(ORG, "hello_7.3.0_amd64")
    assert live is not None
    mine = again.results["amd64"]  # the live signatures (RSA-PSS is randomized) are adopted, not re-sent
    assert (mine.cluster_deployment, mine.cluster_signature) == (live["clusterDeployment"],
                                                                 live["clusterDeploymentSignature"])
    assert mine.signature_fingerprint == fingerprint(base64.b64decode(live["deploymentSignature"]))
    assert not [r for r in stack.exchange.requests()[seen:]
                if r["method"] in ("PUT", "POST") and r["path"].endswith("/services/hello_7.3.0_amd64")]

    state = stack.exchange.state
    with state.lock:  # the operator archive changed in the Exchange: its signature no longer covers it
        record = state.services[ORG]["hello_7.3.0_amd64"]
        original = record["clusterDeployment"]
        record["clusterDeployment"] = original.replace('"hello-ns"', '"other-ns"')
    try:
        tampered = _verify(stack)
    finally:
        with state.lock:
            record["clusterDeployment"] = original
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert "clusterDeploymentSignature verifies with none of the 1 key(s)" in _amd64(tampered)
