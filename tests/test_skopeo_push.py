"""The skopeo push (workers.skopeo_push) against a private dockerd and the TLS registry with htpasswd auth.

What was pushed is read back from the registry API: the digest ``push_image`` returns must be the manifest digest the
registry stores, the manifest a Docker schema 2 one with gzip layers (what every Engine on the nodes pulls). The
credentials travel in a 0600 authfile that is gone after the push, never on skopeo's command line
(``/proc/*/cmdline`` is world-readable) nor in an error. (The verified-TLS case, a registry whose CA is only in
``certs.d``: tests/test_real_parts.py.)
"""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from edgebot.settings import Settings
from sandbox.processes import DockerDaemon, Registry
from workers import skopeo_push
from workers.images import PushFailed, build_image, credentials_refused, push_image
from workers.registry_api import RegistryReader

V2S2 = "application/vnd.docker.distribution.manifest.v2+json"
GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@pytest.fixture
def client(docker_daemon: DockerDaemon) -> Iterator[docker.DockerClient]:
    c = docker_daemon.client()
    yield c
    c.close()


def _build(client: docker.DockerClient, tmp_path: Path, repository: str, tag: str, payload: str) -> None:
    context = tmp_path / f"ctx-{tag}"
    context.mkdir()
    (context / "payload.txt").write_text(payload)
    (context / "Dockerfile").write_text('FROM amd64/busybox:1.36\nCOPY payload.txt /payload.txt\n'
                                        'CMD ["/bin/busybox", "cat", "/payload.txt"]\n')
    build_image(client, context_dir=context, dockerfile="Dockerfile", tag=f"{repository}:{tag}", arch="amd64")


class Recorder:
    """Wraps subprocess.run in workers.skopeo_push: keeps each argv and what the authfile was while skopeo ran."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []
        self.authfiles: list[tuple[Path, int, str]] = []
        self.envs: list[dict[str, str]] = []
        self.real = subprocess.run

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.argvs.append(list(argv))
        self.envs.append(dict(kwargs.get("env") or {}))
        path = Path(argv[argv.index("--dest-authfile") + 1])
        self.authfiles.append((path, stat.S_IMODE(os.stat(path).st_mode), path.read_text()))
        return self.real(argv, **kwargs)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(skopeo_push.subprocess, "run", rec)
    return rec


def test_skopeo_push_digest_is_the_registrys_manifest_digest_and_credentials_stay_off_argv(
        client: docker.DockerClient, registry: Registry, registry_users: dict[str, str], recorder: Recorder,
        tmp_path: Path) -> None:
    repository = f"{registry.address}/edge/skopeo"
    _build(client, tmp_path, repository, "1", "one\n")
    password = registry_users["pusher"]
    work = tmp_path / "work"
    work.mkdir()
    digest = push_image(client, repository=repository, tag="1", username="pusher", password=password,
                        settings=Settings(push_tool="skopeo", work_dir=str(work)))
    got, manifest = registry.manifest("edge/skopeo", "1")
    assert got == digest
    assert manifest["mediaType"] == V2S2 and {layer["mediaType"] for layer in manifest["layers"]} == {GZIP_LAYER}
    # the reader the publish step pins with and the read-back check compares with sees the same digest
    with RegistryReader(registry.address, username="puller", password=registry_users["puller"],
                        ca_pem=registry.ca_path.read_text()) as reader:
        assert reader.tag_digest("edge/skopeo", "1") == digest
        assert reader.image_arch("edge/skopeo", digest)[0] == "amd64"

    assert len(recorder.argvs) == 1 and recorder.argvs[0][0] == "skopeo"
    argv = recorder.argvs[0]
    encoded = base64.b64encode(f"pusher:{password}".encode()).decode()
    assert all(password not in arg and encoded not in arg for arg in argv)
    assert not any(arg.startswith(("--dest-creds", "--creds")) for arg in argv)
    assert argv[argv.index("--format") + 1] == "v2s2"
    # the image's export goes to the work dir, not containers/image's /var/tmp (read-only in the manifests)
    assert recorder.envs[0]["TMPDIR"] == str(work)
    assert all(password not in value and encoded not in value for value in recorder.envs[0].values())
    path, mode, content = recorder.authfiles[0]
    assert mode == 0o600 and encoded in content
    assert not path.exists() and not path.parent.exists()  # removed with its private directory


def test_second_push_of_the_same_image_uploads_no_blob(client: docker.DockerClient, registry: Registry,
                                                       registry_users: dict[str, str], tmp_path: Path) -> None:
    repository = f"{registry.address}/edge/skopeo-again"
    _build(client, tmp_path, repository, "1", "again\n")
    first = push_image(client, repository=repository, tag="1", username="pusher", password=registry_users["pusher"])
    uploads = re.compile(r'"(?:POST|PATCH|PUT) /v2/edge/skopeo-again/blobs/')
    before = len(uploads.findall(registry.log_path.read_text()))
    client.api.tag(f"{repository}:1", repository, tag="2")
    second = push_image(client, repository=repository, tag="2", username="pusher", password=registry_users["pusher"])
    assert second == first  # same image, same compressed bytes, same manifest
    assert len(uploads.findall(registry.log_path.read_text())) == before  # every blob skipped (HEAD)
    assert set(registry.tags("edge/skopeo-again")) == {"1", "2"}

    # another repository of the same registry: the layer is mounted from the first one, not uploaded again
    other = f"{registry.address}/edge/skopeo-mounted"
    client.api.tag(f"{repository}:1", other, tag="1")
    assert push_image(client, repository=other, tag="1", username="pusher",
                      password=registry_users["pusher"]) == first
    assert re.search(r'"POST /v2/edge/skopeo-mounted/blobs/uploads/\?from=edge%2Fskopeo-again&mount=sha256',
                     registry.log_path.read_text())


def test_wrong_password_is_a_permanent_refusal_without_the_password(
        client: docker.DockerClient, registry: Registry, tmp_path: Path) -> None:
    repository = f"{registry.address}/edge/skopeo-auth"
    _build(client, tmp_path, repository, "1", "auth\n")
    wrong = "Wr0ng-sk0peo-pa55word"
    with pytest.raises(PushFailed) as refused:
        push_image(client, repository=repository, tag="1", username="pusher", password=wrong,
                   settings=Settings(push_tool="skopeo"))
    error = refused.value
    assert not error.transient and credentials_refused(error), str(error)
    encoded = base64.b64encode(f"pusher:{wrong}".encode()).decode()
    for text in (str(error), repr(error), *error.log_tail):
        assert wrong not in text and encoded not in text
    assert registry.tags("edge/skopeo-auth") == []


def test_registry_down_is_transient(client: docker.DockerClient, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repository = f"127.0.0.1:{port}/edge/down"
    _build(client, tmp_path, repository, "1", "down\n")
    with pytest.raises(PushFailed) as failed:
        push_image(client, repository=repository, tag="1", username="pusher", password="down-secret",
                   settings=Settings(push_tool="skopeo"))
    assert failed.value.transient and not credentials_refused(failed.value), str(failed.value)
    assert "down-secret" not in str(failed.value)


def test_engine_push_stays_available_and_an_unknown_tool_is_named(client: docker.DockerClient, registry: Registry,
                                                                  registry_users: dict[str, str],
                                                                  tmp_path: Path) -> None:
    repository = f"{registry.address}/edge/engine"
    _build(client, tmp_path, repository, "1", "engine\n")
    digest = push_image(client, repository=repository, tag="1", username="pusher",
                        password=registry_users["pusher"], settings=Settings(push_tool="engine"))
    assert registry.manifest("edge/engine", "1")[0] == digest
    with pytest.raises(PushFailed, match="push_tool is 'crane'"):
        push_image(client, repository=repository, tag="1", username="pusher", password="x",
                   settings=Settings(push_tool="crane"))


def test_command_gives_skopeo_the_certs_d_ca_and_checks_tls_except_on_loopback(tmp_path: Path) -> None:
    (tmp_path / "reg.example:5000").mkdir()
    options = skopeo_push.SkopeoOptions(certs_dir=str(tmp_path), compress_level=1)
    common: dict[str, Any] = {"source": "s", "destination": "d", "daemon": "unix:///d.sock",
                              "authfile": tmp_path / "a", "digestfile": tmp_path / "g", "options": options}
    remote = skopeo_push.command(host="reg.example:5000", **common)
    assert remote[remote.index("--dest-cert-dir") + 1] == str(tmp_path / "reg.example:5000")
    assert "--dest-tls-verify=false" not in remote
    assert remote[remote.index("--dest-compress-level") + 1] == "1"
    no_ca = skopeo_push.command(host="other.example", **common)
    assert "--dest-cert-dir" not in no_ca and "--dest-tls-verify=false" not in no_ca  # system CAs, verified
    for loopback in ("127.0.0.1:5000", "localhost:5000", "127.3.4.5"):  # dockerd's default insecure range
        assert "--dest-tls-verify=false" in skopeo_push.command(host=loopback, **common)
    assert skopeo_push.registry_host("reg.example:5000/a/b") == "reg.example:5000"
    assert skopeo_push.registry_host("library/busybox") == "docker.io"


CHILD = """
import sys
from types import SimpleNamespace
from workers import skopeo_push
adapter = SimpleNamespace(socket_path="/nonexistent/docker.sock")
client = SimpleNamespace(api=SimpleNamespace(base_url="http+docker://localhost", _custom_adapter=adapter))
skopeo_push.push(client, repository="reg.example:5000/a/b", tag="1", username="u", password="p",
                 options=skopeo_push.SkopeoOptions())
"""


def test_skopeo_dies_with_the_work_horse_that_started_it(tmp_path: Path) -> None:
    """A killed step leaves no push running behind the resumed one (the Engine stopped a push whose client died)."""
    import signal
    import sys
    import time

    bin_dir, pid_file = tmp_path / "bin", tmp_path / "skopeo.pid"
    bin_dir.mkdir()
    fake = bin_dir / "skopeo"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    horse = subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=Path(__file__).resolve().parent.parent)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert horse.poll() is None and time.monotonic() < deadline, "the push never started skopeo"
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        horse.send_signal(signal.SIGKILL)
        horse.wait(timeout=30)
        while _alive(pid):
            assert time.monotonic() < deadline + 30, f"skopeo (pid {pid}) outlived the killed work horse"
            time.sleep(0.05)
    finally:
        if horse.poll() is None:
            horse.kill()


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status
