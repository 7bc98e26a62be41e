"""The smoke run per arch (edgebot.smoke, workers/smoke_run.py): the catalog table, the bounds on what a build worker
reports, and real runs on the private dockerd — arm64 under QEMU, a failure, a timeout, no network, always removed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from edgebot.errors import ConfigError, StepFailed
from edgebot.settings import Settings
from edgebot.smoke import LINE_MAX, SmokeConfig, bounded, parse_smoke
from sandbox.processes import DockerDaemon
from workers.images import build_image
from workers.smoke_run import check, run_smoke


def test_the_catalog_table_is_checked_with_messages_that_name_the_fix() -> None:
    assert parse_smoke(None, "services.hello.smoke") is None
    got = parse_smoke({"command": ["/bin/app", "--self-test"], "timeout": 5}, "services.hello.smoke")
    assert got == SmokeConfig(("/bin/app", "--self-test"), 5.0)
    for table, problem in (({"command": "/bin/app --self-test"}, "must be a non-empty list of strings"),
                           ({"command": []}, "must be a non-empty list"),
                           ({"command": ["/bin/app"], "timeout": 0}, "timeout must be a number of seconds"),
                           ({"command": ["/bin/app"], "timeout": True}, "timeout must be a number"),
                           ({"command": ["/bin/app"], "network": "host"}, "unknown key(s) network"),
                           ("yes", "must be a table")):
        with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            parse_smoke(table, "services.hello.smoke")


def test_a_build_workers_smoke_claim_is_bounded_and_typed() -> None:
    huge = {"command": "x" * 10_000, "exit_code": 0, "tail": ["y" * 10_000] * 10_000, "timeout": 30}
    result = bounded(huge, 15)
    assert result is not None and len(result.tail) == 15 and all(len(t) <= LINE_MAX for t in result.tail)
    assert len(result.command) <= LINE_MAX
    assert bounded({"exit_code": "0", "tail": []}, 15) is None  # not an int: not shown as a pass
    assert bounded({"exit_code": True}, 15) is None
    assert bounded("passed", 15) is None and bounded({}, 15) is None
    assert bounded({"exit_code": 2**80}, 15).exit_code == 2**31  # type: ignore[union-attr]


@pytest.fixture
def client(docker_daemon: DockerDaemon) -> Iterator[docker.DockerClient]:
    c = docker_daemon.client()
    yield c
    c.close()


def _image(client: docker.DockerClient, tmp_path: Path, arch: str) -> str:
    base = {"amd64": "amd64/busybox:1.36", "arm64": "arm64v8/busybox:1.36"}[arch]
    context = tmp_path / f"ctx-{arch}"
    context.mkdir()
    (context / "Dockerfile").write_text(f'FROM {base}\nENTRYPOINT ["/bin/busybox", "false"]\n')
    (context / "nonce").write_text(os.urandom(8).hex())
    return build_image(client, context_dir=context, dockerfile="Dockerfile", tag=f"edgebot-test/smoke-{arch}:1",
                       arch=arch).tag


def _smoke_containers(client: docker.DockerClient) -> list[object]:
    return list(client.containers.list(all=True, filters={"label": "io.edgebot.smoke"}))


def test_an_arm64_image_passes_its_smoke_run_under_qemu(client: docker.DockerClient, tmp_path: Path) -> None:
    image = _image(client, tmp_path, "arm64")
    # the command is the exact entrypoint: the image's ENTRYPOINT (false) is not prepended
    smoke = SmokeConfig(("/bin/busybox", "sh", "-c", "echo self-test; /bin/busybox uname -m"), 60)
    report = check(client, image, "arm64", smoke, Settings(), service="hello")
    assert report["exit_code"] == 0 and report["tail"] == ["self-test", "aarch64"]
    assert check(client, image, "arm64", None, Settings(), service="hello") == {}  # none configured: nothing runs
    assert _smoke_containers(client) == []


def test_a_failing_smoke_run_is_a_step_failure_with_its_last_lines(client: docker.DockerClient,
                                                                   tmp_path: Path) -> None:
    image = _image(client, tmp_path, "amd64")
    script = "for i in $(seq 1 40); do echo line $i; done; exit 7"
    with pytest.raises(StepFailed) as failed:
        check(client, image, "amd64", SmokeConfig(("/bin/busybox", "sh", "-c", script), 60),
              Settings(smoke_log_lines=5), service="hello")
    assert "exited with code 7" in str(failed.value) and "[services.hello.smoke]" in str(failed.value)
    assert failed.value.detail == ["line 36", "line 37", "line 38", "line 39", "line 40"]
    with pytest.raises(StepFailed) as on_stderr:  # stderr is output too
        check(client, image, "amd64", SmokeConfig(("/bin/busybox", "sh", "-c", "echo widget missing >&2; exit 3"), 60),
              Settings(), service="hello")
    assert "exited with code 3" in str(on_stderr.value) and on_stderr.value.detail == ["widget missing"]
    with pytest.raises(StepFailed, match="could not start"):  # no such program in the image
        check(client, image, "amd64", SmokeConfig(("/bin/no-such-app",), 60), Settings(), service="hello")
    assert _smoke_containers(client) == []


def test_a_smoke_run_has_no_network_and_is_killed_at_its_timeout(client: docker.DockerClient,
                                                                 tmp_path: Path) -> None:
    image = _image(client, tmp_path, "amd64")
    net = run_smoke(client, image, "amd64", SmokeConfig(("/bin/busybox", "ls", "/sys/class/net"), 60), Settings())
    assert (net.exit_code, net.tail) == (0, ("lo",))  # loopback only
    slow = run_smoke(client, image, "amd64", SmokeConfig(("/bin/busybox", "sh", "-c", "echo started; sleep 600"), 3),
                     Settings())
    assert slow.exit_code is None and set(slow.tail) <= {"started"}  # killed, not waited for
    # the limits, as the container's cgroup says them (v2 file names, else v1's)
    read = ("cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; "
            "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
    limited = run_smoke(client, image, "amd64", SmokeConfig(("/bin/busybox", "sh", "-c", read), 60),
                        Settings(smoke_pids=99, smoke_memory=64 * 1024**2))
    assert limited.tail == ("99", str(64 * 1024**2))
    assert _smoke_containers(client) == []


def test_a_flood_of_output_reaches_the_report_bounded(client: docker.DockerClient, tmp_path: Path) -> None:
    image = _image(client, tmp_path, "amd64")
    flood = "/bin/busybox tr -d '\\n' < /dev/zero | /bin/busybox head -c 8000000; echo; echo the end; exit 1"
    with pytest.raises(StepFailed) as failed:
        check(client, image, "amd64", SmokeConfig(("/bin/busybox", "sh", "-c", flood), 120), Settings(),
              service="hello")
    detail = failed.value.detail
    assert len(detail) <= Settings().smoke_log_lines and all(len(line) <= LINE_MAX for line in detail)
    assert detail[-1] == "the end"
    assert _smoke_containers(client) == []
