"""A hostile repository cannot hurt the build worker (issue 12): the build context, the Dockerfile and .dockerignore
stay inside the checkout, and every build runs with memory, CPU and network limits.

The repositories are real git repositories made here (symlinks committed as git stores them), checked out by
edgebot's own ``workers.source.checkout`` exactly as the build step does; builds go to the private dockerd.
"""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox.processes import DockerDaemon
from workers.images import BuildFailed, BuildLimits, build_context, build_image
from workers.source import checkout

GIT_ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "Mallory",
           "GIT_AUTHOR_EMAIL": "m@example.com", "GIT_COMMITTER_NAME": "Mallory", "GIT_COMMITTER_EMAIL": "m@example.com"}
BASE = "FROM amd64/busybox:1.36\n"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True,
                          check=True).stdout.strip()


def hostile_checkout(tmp_path: Path, files: dict[str, str], symlinks: dict[str, str]) -> Path:
    """Commit ``files`` and ``symlinks`` (name → target, committed as git symlinks) to a bare origin, then check the
    commit out the way the build step does. Returns the checkout."""
    work = tmp_path / "work"
    work.mkdir()
    _git(work, "init", "-q", "-b", "main")
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    for name, target in symlinks.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, work / name)
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "hostile")
    bare = tmp_path / "origin.git"
    _git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    sha = _git(work, "rev-parse", "HEAD")
    tree = checkout(str(bare), sha, tmp_path / "checkout", tmp_path / "cache")
    for name in symlinks:
        assert (tree / name).is_symlink(), name  # git really stored a symlink
    return tree


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside every checkout, holding a secret and a Dockerfile that would happily copy it."""
    secret_dir = tmp_path / "outside"
    secret_dir.mkdir()
    (secret_dir / "secret.txt").write_text(f"SECRET-{uuid.uuid4().hex}\n")
    (secret_dir / "Dockerfile.amd64").write_text(BASE + "COPY . /stolen/\n")
    return secret_dir


@pytest.fixture
def client(docker_daemon: DockerDaemon) -> Iterator[docker.DockerClient]:
    c = docker_daemon.client()
    yield c
    c.close()


def _members(tree: Path, context: str, dockerfile: str) -> dict[str, tarfile.TarInfo]:
    with build_context(tree, tree / context, dockerfile) as handle, tarfile.open(fileobj=handle) as tar:
        return {m.name: m for m in tar.getmembers()}


def _image_bytes(client: docker.DockerClient, tag: str) -> bytes:
    return b"".join(client.images.get(tag).save(named=False))


# -- the context directory, the Dockerfile, .dockerignore -------------------------------------------------------------

def test_a_context_directory_that_is_a_symlink_out_of_the_checkout_is_refused(
        client: docker.DockerClient, tmp_path: Path, outside: Path) -> None:
    tree = hostile_checkout(tmp_path, {"README": "hi\n"}, {"ctx": str(outside)})
    tag = f"edgebot-test/hostile-ctx:{uuid.uuid4().hex[:8]}"
    with pytest.raises(BuildFailed) as refused:
        build_image(client, context_dir=tree / "ctx", dockerfile="Dockerfile.amd64", tag=tag, arch="amd64",
                    root=tree)
    assert str(refused.value) == (f"the build context ctx resolves to {outside}, outside the checkout: a context "
                                  "directory must be a directory of the repository, not a symlink out of it")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(tag)  # nothing was built, so nothing of outside/ reached the Engine


def test_a_dockerignore_symlinked_to_dev_zero_is_refused_before_it_is_read(
        client: docker.DockerClient, tmp_path: Path) -> None:
    # docker-py would read /dev/zero until the worker runs out of memory, before the build even starts
    tree = hostile_checkout(tmp_path, {"Dockerfile.amd64": BASE}, {".dockerignore": "/dev/zero"})
    with pytest.raises(BuildFailed) as refused:
        build_image(client, context_dir=tree, dockerfile="Dockerfile.amd64", tag="edgebot-test/zero:1", arch="amd64",
                    root=tree)
    assert str(refused.value) == (".dockerignore is a symlink to /dev/zero, outside the checkout: edgebot reads only "
                                  "files of the repository; commit the file itself")


def test_a_dockerfile_symlinked_out_of_the_checkout_or_to_a_directory_is_refused(tmp_path: Path,
                                                                                   outside: Path) -> None:
    tree = hostile_checkout(tmp_path, {"sub/x": "x\n"},
                            {"Dockerfile.amd64": str(outside / "Dockerfile.amd64"), "Dockerfile.arm64": "sub"})
    with pytest.raises(BuildFailed, match=rf"^Dockerfile.amd64 is a symlink to {outside}/Dockerfile.amd64, outside "
                                          "the checkout"):
        _members(tree, ".", "Dockerfile.amd64")
    with pytest.raises(BuildFailed, match=r"^Dockerfile.arm64 is a directory, not a regular file"):
        _members(tree, ".", "Dockerfile.arm64")


def test_oversized_dockerfile_and_dockerignore_are_refused(tmp_path: Path) -> None:
    tree = hostile_checkout(tmp_path, {"app/Dockerfile": BASE + "#" * 5000 + "\n", "app/.dockerignore": "x\n" * 3000,
                                       "small/Dockerfile": BASE, "small/.dockerignore": "x\n" * 3000}, {})
    with pytest.raises(BuildFailed, match=r"^app/Dockerfile is 5025 bytes, over the 4096-byte cap \(setting "
                                          r"build_file_max_bytes\): shrink the file$"):
        build_context(tree, tree / "app", "Dockerfile", max_file_bytes=4096).__enter__()
    with pytest.raises(BuildFailed, match=r"^small/.dockerignore is 6000 bytes, over the 4096-byte cap"):
        build_context(tree, tree / "small", "Dockerfile", max_file_bytes=4096).__enter__()


def test_fifos_and_devices_in_the_context_are_refused_by_name(tmp_path: Path) -> None:
    # git cannot commit a FIFO; a checkout that has one was tampered with on the worker, which must not hang on it
    tree = hostile_checkout(tmp_path, {"Dockerfile": BASE, "data/keep": "k\n"}, {})
    os.mkfifo(tree / "data" / "pipe")
    with pytest.raises(BuildFailed, match=r"^data/pipe is a FIFO: a build context holds only regular files, "
                                          "directories and symlinks$"):
        _members(tree, ".", "Dockerfile")
    os.unlink(tree / "data" / "pipe")
    os.mkfifo(tree / ".dockerignore")
    with pytest.raises(BuildFailed, match=r"^.dockerignore is a FIFO, not a regular file"):
        _members(tree, ".", "Dockerfile")


def test_a_file_outside_the_checkout_never_reaches_the_build_context(
        client: docker.DockerClient, tmp_path: Path, outside: Path) -> None:
    """Symlinks inside the context (to a file and to a directory outside it) travel as symlinks: the tar the Engine
    gets holds no byte of what they point to, and neither does the image that copies the whole context."""
    secret = (outside / "secret.txt").read_bytes().strip()
    tree = hostile_checkout(
        tmp_path,
        {"Dockerfile.amd64": BASE + "COPY . /all/\n", ".dockerignore": "ignored\n", "ignored": "x\n",
         "index.html": "ok\n"},
        {"leak": str(outside / "secret.txt"), "leakdir": str(outside), "rel": "../../outside/secret.txt"},
    )
    members = _members(tree, ".", "Dockerfile.amd64")
    assert members["leak"].issym() and members["leak"].linkname == str(outside / "secret.txt")
    assert members["leakdir"].issym() and not any(name.startswith("leakdir/") for name in members)
    assert members["rel"].issym()
    assert "ignored" not in members and members["index.html"].isreg()
    with build_context(tree, tree, "Dockerfile.amd64") as handle:
        assert secret not in handle.read()

    tag = f"edgebot-test/hostile-leak:{uuid.uuid4().hex[:8]}"
    built = build_image(client, context_dir=tree, dockerfile="Dockerfile.amd64", tag=tag, arch="amd64", root=tree)
    assert built.architecture == "amd64"
    assert secret not in _image_bytes(client, tag)
    listing = client.containers.run(tag, ["/bin/busybox", "ls", "-l", "/all/"], network_mode="none", remove=True)
    assert b"leak -> " + str(outside / "secret.txt").encode() in listing  # the link itself, dangling in the image


def test_the_hello_sample_builds_the_same_from_edgebots_own_context(client: docker.DockerClient,
                                                                    hello_repo: Path, tmp_path: Path) -> None:
    """The tar edgebot makes is what docker-py would send for an honest repository: same layers, same cache."""
    sha = _git(hello_repo, "rev-parse", "v1.0.0^{commit}")
    tree = checkout(str(hello_repo), sha, tmp_path / "checkout", tmp_path / "cache")
    first = build_image(client, context_dir=tree, dockerfile="Dockerfile.amd64", tag="edgebot-test/hello-ctx:1",
                        arch="amd64", root=tree)
    again = build_image(client, context_dir=tree, dockerfile="Dockerfile.amd64", tag="edgebot-test/hello-ctx:2",
                        arch="amd64", root=tree)
    assert again.image_id == first.image_id  # a rebuild of the same commit hits the cache
    out = client.containers.run(first.tag, ["/bin/busybox", "cat", "/www/index.html"], network_mode="none",
                                remove=True)
    assert out == (tree / "index.html").read_bytes()


# -- limits ---------------------------------------------------------------------------------------------------------

PROBE = (
    'RUN ["/bin/busybox", "sh", "-c", "echo probe-{nonce}; '
    'echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); '
    'echo memsw=$(cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null || echo n/a); '
    'echo shares=$(cat /sys/fs/cgroup/cpu/cpu.shares); '
    'echo cpus=$(cat /sys/fs/cgroup/cpuset/cpuset.cpus); '
    'echo nets=$(ls /sys/class/net | tr \\"\\\\n\\" \\" \\")"]\n'
)


def _probe(client: docker.DockerClient, tmp_path: Path, limits: BuildLimits | None) -> dict[str, str]:
    """What a RUN step of the build sees of its limits, plus ``networks``: the networks the Engine connected the
    build's containers to (its own events, so the mode is the one edgebot asked for, not a guess from inside)."""
    tree = hostile_checkout(tmp_path, {"Dockerfile": BASE + PROBE.format(nonce=uuid.uuid4().hex)}, {})
    since = int(time.time()) - 1
    built = build_image(client, context_dir=tree, dockerfile="Dockerfile", tag="edgebot-test/limits:1", arch="amd64",
                        root=tree, limits=limits, log_lines=200)
    until = int(time.time()) + 1
    events = client.events(since=since, until=until, decode=True, filters={"type": "network", "event": "connect"})
    # only this build's containers: the window (whole seconds) may also hold the end of the previous test's build
    ours = tuple(m.group(1) for line in built.log_tail if (m := re.search(r"Running in ([0-9a-f]{12})", line)))
    assert ours, built.log_tail
    values = {"networks": " ".join(sorted({e["Actor"]["Attributes"].get("name", "") for e in events
                                           if e["Actor"]["Attributes"].get("container", "").startswith(ours)}))}
    for line in built.log_tail:
        key, sep, value = line.strip().partition("=")
        if sep and key in {"mem", "memsw", "shares", "cpus", "nets"}:
            values[key] = value.strip()
    return values


def test_builds_run_without_network_and_with_the_default_limits(client: docker.DockerClient, tmp_path: Path) -> None:
    seen = _probe(client, tmp_path, None)
    assert seen["nets"] == "lo"  # network_mode "none": a RUN step reaches nothing
    assert seen["networks"] == "none"
    assert seen["mem"] == str(2 * 1024**3)
    assert seen["memsw"] in (str(2 * 1024**3), "n/a")  # n/a: the kernel does not account swap
    assert seen["shares"] == "512"


def test_build_limits_come_from_settings(client: docker.DockerClient, tmp_path: Path) -> None:
    from edgebot.settings import Settings

    settings = Settings.load({"build_memory": 256 * 1024**2, "build_memory_swap": 256 * 1024**2,
                              "build_cpu_shares": 256, "build_cpuset_cpus": "0", "build_network_mode": "host"},
                             environ={})
    limits = BuildLimits.from_settings(settings)
    assert limits == BuildLimits(memory=256 * 1024**2, memory_swap=256 * 1024**2, cpu_shares=256, cpuset_cpus="0",
                                 network_mode="host", max_file_bytes=settings.build_file_max_bytes)
    seen = _probe(client, tmp_path, limits)
    assert seen["mem"] == str(256 * 1024**2)
    assert seen["shares"] == "256" and seen["cpus"] == "0"
    assert seen["networks"] == "host" and seen["nets"] != "lo"  # the host's interfaces: what the setting asked for


def test_a_build_that_needs_more_memory_than_its_limit_fails(client: docker.DockerClient, tmp_path: Path) -> None:
    # 64 MiB limit, no swap; the RUN holds 200 MB in a shell variable: the kernel kills it, the build fails
    hog = ('RUN ["/bin/busybox", "sh", "-c", "x=$(/bin/busybox head -c 200000000 /dev/zero | /bin/busybox tr '
           '\\"\\\\0\\" x); echo ${#x}"]\n')
    nonce = f'RUN ["/bin/busybox", "echo", "{uuid.uuid4().hex}"]\n'
    tree = hostile_checkout(tmp_path, {"Dockerfile": BASE + nonce + hog}, {})
    limits = BuildLimits(memory=64 * 1024**2, memory_swap=64 * 1024**2)
    with pytest.raises(BuildFailed) as failed:
        build_image(client, context_dir=tree, dockerfile="Dockerfile", tag="edgebot-test/hog:1", arch="amd64",
                    root=tree, limits=limits)
    assert "returned a non-zero code: 137" in str(failed.value)  # SIGKILL by the OOM killer
