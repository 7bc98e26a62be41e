"""End to end with ``builder = "buildah"``: a signed slash command to the real bot, the real publish and build worker
processes, the TLS + htpasswd registry, Redis; stand-ins only for Slack and the Exchange.

The service's Dockerfile uses BuildKit syntax (``RUN --mount=type=cache`` and ``--mount=type=secret``: the
Engine's legacy builder refuses both), a build arg from ``{version}`` and a build secret the build worker reads from
OpenBao with the build role's policy as shipped in deploy/vault/. What was pushed is read back from the registry; the
secret's value is in no layer, no Slack message, no Redis key or value, and no worker's log.
"""

from __future__ import annotations

import gzip
import io
import json
import secrets
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgebot.release import Release
from sandbox.processes import add_commit, busybox_path
from sandbox.stack import CHANNEL_ID, ORG, Stack

pytestmark = pytest.mark.slow

TOKEN = "bud-token-" + secrets.token_hex(12)
DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
ARG VERSION=unset
RUN --mount=type=cache,target=/cache ["/bin/busybox", "sh", "-c", \
"/bin/busybox mkdir -p /etc && /bin/busybox echo $VERSION > /etc/version"]
RUN --mount=type=secret,id=token ["/bin/busybox", "sh", "-c", \
"/bin/busybox cat /run/secrets/token; /bin/busybox wc -c < /run/secrets/token > /etc/token_len"]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    source = workdir / "sources" / "origin.git"  # where Stack puts the sample service's repository
    catalog = f"""\
[services.hello-bud]
source = "{source}"
org = "{ORG}"
arches = ["amd64"]
image_base = "hello"
dockerfile = "Dockerfile.bud"

[services.hello-bud.build]
builder = "buildah"
args = {{ VERSION = "{{version}}-{{arch}}" }}
secrets = {{ token = "vault:secret/data/edgebot/build/hello-bud#token" }}
cache = true
"""
    with Stack(workdir, docker=docker_daemon, registry=registry, versions=("1.0.0",), extra_toml=catalog,
               vault=True) as running:
        assert running.source_path == source and running.vault is not None
        # where deploy/vault/edgebot-build.hcl lets the build role read build secrets (the sandbox loads that file)
        running.vault.server.put_secret("edgebot/build/hello-bud", {"token": TOKEN})
        add_commit(source, {"Dockerfile.bud": DOCKERFILE, "busybox": Path(busybox_path()).read_bytes()})
        (source.parent / "tree" / "busybox").chmod(0o755)  # committed as an executable
        add_commit(source, {}, tag="v2.0.0")
        running.wait_workers(2)
        yield running


def _publish(stack: Stack, text: str) -> Release:
    release_id = stack.start_release(text)
    return stack.finished(release_id)


def test_buildkit_dockerfile_with_a_secret_is_published_through_buildah(stack: Stack) -> None:
    release = _publish(stack, "publish hello-bud 2.0.0 --registry local")
    assert release.state == "succeeded", (release.error, release.error_detail, stack.log_tail("worker-build-amd64"))
    result = release.results["amd64"]
    assert stack.registry is not None
    digest, manifest = stack.registry.manifest("edge/hello_amd64", "2.0.0")
    assert digest == result.digest and result.pinned_image.endswith(f"@{digest}")
    config = stack.registry.config_blob("edge/hello_amd64", manifest)
    assert config["architecture"] == "amd64"
    labels = config["config"].get("Labels") or {}
    assert not any(k.startswith(("io.edgebot.", "org.opencontainers.")) for k in labels), labels  # edgebot adds none
    history = json.dumps(config.get("history", []))
    assert "--mount=type=secret" in history and "--mount=type=cache" in history, "built from the BuildKit syntax"
    assert TOKEN not in json.dumps(config)
    files: dict[str, bytes] = {}
    with stack.registry._http() as http:  # every layer as the registry serves it to nodes
        for layer in manifest["layers"]:
            blob = http.get(f"/v2/edge/hello_amd64/blobs/{layer['digest']}", follow_redirects=True).content
            data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
            assert TOKEN.encode() not in data, "the build secret is in an image layer"
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member in tar.getmembers():
                    handle = tar.extractfile(member) if member.isfile() else None
                    if handle is not None:
                        files[member.name.lstrip("./")] = handle.read()
    assert files["etc/token_len"].strip() == str(len(TOKEN)).encode(), "the secret was mounted for the RUN step"
    assert files["etc/version"] == b"2.0.0-amd64\n", "the build arg reached the build"
    # the layer cache went to the registry, for the next worker
    assert stack.registry.tags("edge/hello_amd64-cache"), "no layer cache in the registry"
    service = stack.exchange.service(ORG, "hello_2.0.0_amd64")
    assert service is not None and json.loads(service["deployment"])["services"]["hello"]["image"] == \
        result.pinned_image

    places = {
        "slack": json.dumps(stack.slack.messages(CHANNEL_ID)) + json.dumps(stack.slack.ephemerals()),
        "redis": "".join(repr(k) + repr(stack.redis().dump(k)) for k in stack.redis().scan_iter()),
        "logs": "".join(stack.log_tail(name, 100_000) for name in ("bot", "worker-publish", "worker-build-amd64")),
    }
    for where, text in places.items():
        assert TOKEN not in text, f"the build secret leaked into {where}"
