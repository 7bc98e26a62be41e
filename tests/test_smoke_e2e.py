"""Cross-arch builds and the smoke run end to end (issue 14): real bot, real RQ workers, Redis, dockerd and registry;
stand-ins for Slack and the Exchange. The only arm64 build worker is an amd64 one started with ``--arch auto``: it
serves arm64 through QEMU (workers.arches), runs the arm64 Dockerfile's ``RUN`` step under it, and runs the catalog's
smoke command in the arm64 image before the push."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.processes import add_commit
from sandbox.stack import CHANNEL_ID, Stack, wait_until

pytestmark = pytest.mark.slow

HELLO = Path(__file__).parent.parent / "examples" / "hello"
SMOKE = """
[approvals]
approvers = ["U0APPROVER"]
required = 0
[approvals.services.hello-smoke]
required = 1

[services.hello-smoke.smoke]
command = ["/bin/busybox", "sh", "-c",
           "echo built on $(/bin/busybox cat /built-on); echo runs on $(/bin/busybox uname -m)"]
timeout = 120

[services.hello-smokebad.smoke]
command = ["/bin/busybox", "sh", "-c", "echo self-test: widget missing on $(/bin/busybox uname -m); exit 7"]
timeout = 120
"""


def _dockerfile(arch: str) -> str:
    """The sample service's Dockerfile plus a RUN step, which on arm64 runs aarch64 code here (QEMU)."""
    lines = (HELLO / f"Dockerfile.{arch}").read_text().splitlines()
    return "\n".join([lines[1], 'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox uname -m > /built-on"]',
                      *lines[2:]]) + "\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("smoke"), docker=docker_daemon, registry=registry, versions=("14.0.0",),
               arches=("amd64",), extra_services={"hello-smoke": ["amd64", "arm64"], "hello-smokebad": ["arm64"]},
               extra_toml=SMOKE) as running:
        files = {f"Dockerfile.{a}": _dockerfile(a) for a in ("amd64", "arm64")}
        add_commit(running.source_path, files, tag="v14.0.1")
        add_commit(running.source_path, {"index.html": "bad\n"}, tag="v14.0.2")
        running.start_worker("build-auto", "--arch", "auto")
        running.wait_workers(3)
        yield running


def test_the_auto_worker_serves_arm64_through_qemu(stack: Stack) -> None:
    wait_until(lambda: "arm64: QEMU via binfmt handler qemu-aarch64" in stack.log_tail("worker-build-auto"),
               timeout=30, what="the worker's list of arches")
    assert "amd64: native" in stack.log_tail("worker-build-auto")


def test_a_passing_smoke_run_is_on_the_card_next_to_the_digest(stack: Stack) -> None:
    release_id = stack.start_release("publish hello-smoke 14.0.1 --registry local")
    store = stack.store()

    def carded() -> Any:
        release = store.require(release_id)
        assert not release.is_final, (release.state, release.error, stack.log_tail("worker-build-auto"))
        return release if release.approval is not None and release.approval.card_ts else None

    release = wait_until(carded, timeout=300, interval=0.5, what="the approval card")
    card = json.dumps(stack.slack.api_message(CHANNEL_ID, release.approval.card_ts), ensure_ascii=False)
    arm = release.results["arm64"]
    assert arm.pinned_image in card and ":white_check_mark:" in card
    assert "built on aarch64" in arm.smoke["tail"] and "runs on aarch64" in arm.smoke["tail"]
    assert "built on aarch64" in card and "runs on x86_64" in card
    # what was pushed is an arm64 image (the registry's own word)
    digest, manifest = stack.registry.manifest("edge/hello_arm64", "14.0.1")  # type: ignore[union-attr]
    assert digest == arm.digest
    assert stack.registry.config_blob("edge/hello_arm64", manifest)["architecture"] == "arm64"  # type: ignore[union-attr]


def test_a_failing_smoke_run_stops_the_release_before_the_push(stack: Stack) -> None:
    release_id = stack.start_release("publish hello-smokebad 14.0.2 --registry local")
    final = stack.finished(release_id)
    assert final.state == "failed"
    assert "the smoke run of the arm64 image failed, so it was not pushed" in final.error
    assert "exited with code 7" in final.error and "[services.hello-smokebad.smoke]" in final.error
    thread = json.dumps(stack.slack.thread(CHANNEL_ID, final.message_ts), ensure_ascii=False)
    assert "self-test: widget missing on aarch64" in thread and "exited with code 7" in thread
    assert not final.results["arm64"].digest
    tags = stack.registry.tags("edge/hello_arm64")  # type: ignore[union-attr]
    assert not [t for t in tags if t.startswith("14.0.2")], tags  # nothing pushed, under any tag


def test_config_check_of_a_build_worker_lists_its_arches(stack: Stack) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "edgebot", "--config", str(stack.build_config_path), "config",
                           "check", "--role", "build"], capture_output=True, text=True, env=stack.env("build"),
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = [x for x in done.stdout.splitlines() if "build arches" in x]
    assert line.startswith("OK") and "amd64: native" in line and "arm64: QEMU via binfmt handler qemu-aarch64" in line
