"""End to end: a service whose source is a private repository served by a real sshd on loopback, published through
the real bot and worker processes with a deploy key from a ``file:`` reference and the server's host key pinned in
the catalog; a service pinning the wrong host key fails in prepare with the fix in its thread, nothing built; the
deploy key is in no Slack message, Redis value or log."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgebot.release import Release
from sandbox.git_servers import SshGitServer, keygen
from sandbox.processes import make_git_source
from sandbox.stack import CHANNEL_ID, ORG, Stack, hello_files, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("private-source")
    key, public = keygen(workdir / "keys" / "deploy_key")
    (workdir / "keys" / "deploy_key").chmod(0o600)
    _, impostor = keygen(workdir / "keys" / "impostor")
    repo = make_git_source(workdir / "repo", hello_files(), tag="v1.0.0")
    with SshGitServer(workdir / "sshd", public) as sshd:
        keytype, wrong = impostor.split()[:2]
        head = subprocess.run(["git", "--git-dir", str(repo), "rev-parse", "v1.0.0^{commit}"], capture_output=True,
                              text=True, check=True).stdout.strip()
        yield {"key": key, "key_file": workdir / "keys" / "deploy_key", "url": sshd.url(repo), "sshd": sshd,
               "commit": head,
               "pinned": sshd.known_hosts_line, "wrong": f"[127.0.0.1]:{sshd.port} {keytype} {wrong}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any,
          private: dict[str, Any]) -> Iterator[Stack]:
    toml = "\n".join(
        line
        for name, pinned in (("hello-private", private["pinned"]), ("hello-impostor", private["wrong"]))
        for line in (
            f"[services.{name}]", f'source = "{private["url"]}"', f'org = "{ORG}"', 'arches = ["amd64"]',
            f'image_base = "{name}"', "",
            f"[services.{name}.source_auth]", f'ssh_key = "file:{private["key_file"]}"',
            f"known_hosts = [{json.dumps(pinned)}]", "",
        )
    )
    with Stack(tmp_path_factory.mktemp("stack"), docker=docker_daemon, registry=registry, extra_toml=toml) as running:
        running.wait_workers(2)
        yield running


def _publish(stack: Stack, text: str) -> Release:
    before = set(stack.release_ids())
    response = stack.command(text)
    assert response.status_code == 200, response.text
    new = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, what="a new release record")
    return stack.wait_final(new.pop())


def test_a_private_ssh_source_is_published_with_its_deploy_key(stack: Stack, private: dict[str, Any]) -> None:
    release = _publish(stack, "publish hello-private 1.0.0 --registry local")
    assert release.state == "succeeded", (release.error, release.error_detail, stack.log_tail("worker-publish"),
                                          private["sshd"].log_text())
    digest, manifest = stack.registry.manifest("edge/hello-private_amd64", "1.0.0")  # type: ignore[union-attr]
    assert digest == release.results["amd64"].digest
    assert release.commit_sha == private["commit"]  # resolved (and built) from the private repository's tag
    assert "Accepted publickey" in private["sshd"].log_text()  # the deploy key, over SSH, did it

    impostor = _publish(stack, "publish hello-impostor 1.0.0 --registry local")
    assert impostor.state == "failed"
    assert not impostor.commit_sha and not any(r.image_id for r in impostor.results.values())
    thread = json.dumps(stack.slack.thread(CHANNEL_ID, impostor.message_ts))
    port = private["sshd"].port
    assert (f"the host key of [127.0.0.1]:{port} is not the one pinned in "
            "services.hello-impostor.source_auth.known_hosts") in thread
    assert f"ssh-keyscan -p {port} 127.0.0.1" in thread

    body = [line for line in private["key"].splitlines() if line and not line.startswith("-----")]
    places = {
        "slack": json.dumps(stack.slack.messages(CHANNEL_ID)) + json.dumps(stack.slack.ephemerals()),
        "redis": "".join(repr(k) + repr(stack.redis().dump(k)) for k in stack.redis().scan_iter()),
        "logs": "".join(stack.log_tail(name, 100_000) for name in ("bot", "worker-publish", "worker-build-amd64")),
    }
    for where, text in places.items():
        assert not any(part in text for part in body), f"the deploy key leaked into {where}"
    for mirror_config in Path(stack.workdir / "cache").glob("*.git/config"):
        assert not any(part in mirror_config.read_text() for part in body)
