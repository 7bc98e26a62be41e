"""Image build and push through the Docker SDK against a private dockerd and a TLS registry with htpasswd auth.

What was pushed is read back from the registry API (not from Docker): the manifest's digest must be the one
``push_image`` returned, and the image config's architecture the target arch.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox.processes import DockerDaemon, Registry, busybox_path
from workers.images import (
    GO_ARCH_TO_PLATFORM,
    BuildFailed,
    PushFailed,
    WrongArchitecture,
    build_image,
    pinned_reference,
    push_image,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def client(docker_daemon: DockerDaemon) -> Iterator[docker.DockerClient]:
    c = docker_daemon.client()
    yield c
    c.close()


def _checkout(repo: Path, ref: str, into: Path) -> Path:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    subprocess.run(["git", "clone", "-q", "--branch", ref, str(repo), str(into)], check=True, env=env,
                   capture_output=True)
    return into


def _context(tmp_path: Path, dockerfile: str, *, busybox: bool = False, extra: dict[str, str] | None = None) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    if busybox:
        shutil.copy(busybox_path(), context / "busybox")
    for name, text in (extra or {}).items():
        (context / name).write_text(text)
    return context


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_hello_is_built_pushed_and_read_back_from_the_registry(
        arch: str, client: docker.DockerClient, registry: Registry, registry_users: dict[str, str],
        hello_repo: Path, tmp_path: Path) -> None:
    context = _checkout(hello_repo, "v1.0.0", tmp_path / "src")
    repository = f"{registry.address}/edge/hello_{arch}"
    built = build_image(client, context_dir=context, dockerfile=f"Dockerfile.{arch}", tag=f"{repository}:1.0.0",
                        arch=arch)
    assert built.architecture == arch and built.image_id.startswith("sha256:")
    assert any("Successfully tagged" in line for line in built.log_tail)
    # edgebot adds no step of its own (build-time labels are one more commit step in the legacy builder): the
    # build runs exactly the Dockerfile's instructions, and the image carries only the labels the Dockerfile sets
    instructions = [line for line in (context / f"Dockerfile.{arch}").read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    steps = {line.split(":", 1)[0].strip() for line in built.log_tail if line.startswith("Step ")}
    assert steps and all(step.endswith(f"/{len(instructions)}") for step in steps), steps
    assert not (client.api.inspect_image(built.tag)["Config"].get("Labels") or {})

    digest = push_image(client, repository=repository, tag="1.0.0", username="pusher",
                        password=registry_users["pusher"])
    got, manifest = registry.manifest(f"edge/hello_{arch}", "1.0.0")
    assert got == digest
    config = registry.config_blob(f"edge/hello_{arch}", manifest)
    assert (config["architecture"], config["os"]) == (arch, "linux")
    # by digest too, and readable with the pull-only user the edge nodes get
    assert registry.manifest(f"edge/hello_{arch}", digest, user="puller")[0] == digest
    assert pinned_reference(repository, digest) == f"{repository}@{digest}"


def test_arm64_image_with_a_run_step_is_built_here_under_qemu_pushed_and_runs_aarch64_code(
        client: docker.DockerClient, registry: Registry, registry_users: dict[str, str], tmp_path: Path) -> None:
    # the sandbox's arm64v8/busybox holds Debian's aarch64 busybox (sandbox/base_images.py): the RUN step runs aarch64
    # code on this amd64 host through the qemu-aarch64 binfmt handler (scripts/install-system-deps.sh enables it)
    context = _context(tmp_path, 'FROM arm64v8/busybox:1.36\n'
                                 'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox uname -m > /built-on"]\n'
                                 'CMD ["/bin/busybox", "cat", "/built-on"]\n')
    repository = f"{registry.address}/edge/qemu_arm64"
    built = build_image(client, context_dir=context, dockerfile="Dockerfile", tag=f"{repository}:1.0.0", arch="arm64")
    assert built.architecture == "arm64"
    digest = push_image(client, repository=repository, tag="1.0.0", username="pusher",
                        password=registry_users["pusher"])
    got, manifest = registry.manifest("edge/qemu_arm64", "1.0.0")
    assert got == digest
    assert registry.config_blob("edge/qemu_arm64", manifest)["architecture"] == "arm64"
    for command in (None, ["/bin/busybox", "uname", "-m"]):  # what the RUN step saw, and a run of the image now
        out = client.containers.run(built.tag, command, platform="linux/arm64", network_mode="none", remove=True)
        assert out.decode().strip() == "aarch64"


def test_failing_run_step_is_build_failed_with_the_output_in_the_tail(client: docker.DockerClient,
                                                                      tmp_path: Path) -> None:
    # FROM scratch with the static busybox: a RUN step works even though dockerd runs with --bridge=none
    context = _context(tmp_path, "FROM scratch\nCOPY busybox /bin/busybox\n"
                                 'RUN ["/bin/busybox", "sh", "-c", "echo compiling widget-42; exit 3"]\n', busybox=True)
    with pytest.raises(BuildFailed) as failed:
        build_image(client, context_dir=context, dockerfile="Dockerfile", tag="edgebot-test/fails:1", arch="amd64")
    assert "compiling widget-42" in failed.value.log_tail
    assert "returned a non-zero code: 3" in str(failed.value)


def test_build_args_reach_the_engine_build(client: docker.DockerClient, tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM scratch\nCOPY busybox /bin/busybox\nARG VERSION\nARG GREETING=unset\n"
                                 'RUN ["/bin/busybox", "sh", "-c", "echo \\"$GREETING $VERSION\\" > /args"]\n',
                       busybox=True)
    build_image(client, context_dir=context, dockerfile="Dockerfile", tag="edgebot-test/args:1", arch="amd64",
                build_args={"VERSION": "1.2.3-amd64", "GREETING": "hello"})
    out = client.containers.run("edgebot-test/args:1", ["/bin/busybox", "cat", "/args"], remove=True,
                                network_mode="none")
    assert out == b"hello 1.2.3-amd64\n"


def test_missing_dockerfile_and_unknown_arch_are_build_failures(client: docker.DockerClient, tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM scratch\n")
    with pytest.raises(BuildFailed, match="Dockerfile.mips not found"):
        build_image(client, context_dir=context, dockerfile="Dockerfile.mips", tag="x:1", arch="amd64")
    with pytest.raises(BuildFailed, match="unknown arch 'mips'"):
        build_image(client, context_dir=context, dockerfile="Dockerfile", tag="x:1", arch="mips")


def test_wrong_password_is_push_failed_without_the_password(client: docker.DockerClient, registry: Registry,
                                                            tmp_path: Path) -> None:
    repository = f"{registry.address}/edge/auth-check"
    context = _context(tmp_path, 'FROM amd64/busybox:1.36\nCMD ["/bin/busybox", "true"]\n')
    build_image(client, context_dir=context, dockerfile="Dockerfile", tag=f"{repository}:1", arch="amd64")
    wrong = "Wr0ng-pa55word-xyz"
    with pytest.raises(PushFailed) as refused:
        push_image(client, repository=repository, tag="1", username="pusher", password=wrong)
    error = refused.value
    assert "unauthorized" in str(error).lower() or "authentication required" in str(error).lower()
    assert not error.transient
    assert wrong not in str(error) and wrong not in repr(error) and all(wrong not in line for line in error.log_tail)
    assert registry.tags("edge/auth-check") == []


def test_unreachable_registry_is_a_transient_push_failure(client: docker.DockerClient, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    repository = f"127.0.0.1:{port}/edge/nowhere"
    context = _context(tmp_path, 'FROM amd64/busybox:1.36\nCMD ["/bin/busybox", "true"]\n')
    build_image(client, context_dir=context, dockerfile="Dockerfile", tag=f"{repository}:1", arch="amd64")
    with pytest.raises(PushFailed) as failed:
        push_image(client, repository=repository, tag="1", username="pusher", password="irrelevant-secret")
    assert failed.value.transient, str(failed.value)
    assert "connection refused" in str(failed.value)


def test_base_image_of_another_arch_is_wrong_architecture(client: docker.DockerClient, tmp_path: Path) -> None:
    # Asked for linux/arm64, the classic builder silently uses the local amd64 base image (pull=False): the result
    # says amd64. A rebuild without the cache cannot fix that, so build_image refuses the image.
    context = _context(tmp_path, 'FROM amd64/busybox:1.36\nCMD ["/bin/busybox", "true"]\n')
    with pytest.raises(WrongArchitecture) as wrong:
        build_image(client, context_dir=context, dockerfile="Dockerfile", tag="edgebot-test/wrong:1", arch="arm64")
    assert (wrong.value.expected, wrong.value.actual) == ("arm64", "amd64")
    assert "amd64, not arm64" in str(wrong.value)


def test_steps_cached_for_another_arch_are_rebuilt_for_the_target(client: docker.DockerClient,
                                                                  tmp_path: Path) -> None:
    # FROM scratch for arm64 on this amd64 host gives an image that says arm64 (the engine only labels it)...
    context = _context(tmp_path, "FROM scratch\nCOPY unique /unique\nCOPY busybox /bin/busybox\n", busybox=True,
                       extra={"unique": os.urandom(16).hex()})  # no step of this build is in any cache yet
    arm = build_image(client, context_dir=context, dockerfile="Dockerfile", tag="edgebot-test/cache:arm64",
                      arch="arm64")
    assert arm.architecture == "arm64"
    # ...and the engine's cache ignores the platform: a plain amd64 build of the same steps reuses them
    stream = client.api.build(path=str(context), tag="edgebot-test/cache:raw", platform=GO_ARCH_TO_PLATFORM["amd64"],
                              decode=True, rm=True, pull=False)
    entries = list(stream)  # read to the end: any() would stop early, before the image is tagged
    assert any("Using cache" in str(entry.get("stream")) for entry in entries)
    assert client.api.inspect_image("edgebot-test/cache:raw")["Architecture"] == "arm64"
    # build_image notices, rebuilds without the cache, and gets a real amd64 image
    amd = build_image(client, context_dir=context, dockerfile="Dockerfile", tag="edgebot-test/cache:amd64",
                      arch="amd64")
    assert amd.architecture == "amd64"
    assert client.api.inspect_image("edgebot-test/cache:amd64")["Architecture"] == "amd64"
    assert any("rebuilding for amd64 without the cache" in line for line in amd.log_tail)


def test_pinned_reference_drops_the_tag_and_keeps_the_port() -> None:
    assert pinned_reference("reg.example.com:5000/edge/hello_amd64", DIGEST) == \
        f"reg.example.com:5000/edge/hello_amd64@{DIGEST}"
    assert pinned_reference("us.icr.io/ns/hello_arm64:1.2.3", DIGEST) == f"us.icr.io/ns/hello_arm64@{DIGEST}"
    assert pinned_reference(f"host:443/a/b@{'sha256:' + 'cd' * 32}", DIGEST) == f"host:443/a/b@{DIGEST}"
    with pytest.raises(ValueError):
        pinned_reference("host/a/b", "sha256:short")


def test_every_go_arch_has_a_platform() -> None:
    assert set(GO_ARCH_TO_PLATFORM) == {"amd64", "arm64", "arm", "ppc64le", "s390x", "riscv64"}
    assert all(p.startswith("linux/") for p in GO_ARCH_TO_PLATFORM.values())
    assert GO_ARCH_TO_PLATFORM["arm"] == "linux/arm/v7"
