"""The smoke run per arch (edgebot.smoke) on the build worker: the catalog's command run in the image just built.

The container runs for the image's platform (``linux/arm64`` on an amd64 host runs under QEMU, through the same
binfmt_misc handler the build's ``RUN`` steps used, workers.arches), with no network (``network_mode=none``), the
``smoke_memory`` / ``smoke_pids`` limits, no new privileges, and the command as its exact entrypoint (no shell, no
``ENTRYPOINT`` prepended). At the timeout it is killed; it is always removed. Exit 0 passes and the result goes into
the build report (the approval card shows it); anything else raises :class:`~edgebot.errors.StepFailed`: the build
step fails before its push, with the last output lines in the thread.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from edgebot import messages
from edgebot.errors import StepFailed
from edgebot.settings import Settings
from edgebot.smoke import LINE_MAX, SmokeConfig, SmokeResult
from workers.images import GO_ARCH_TO_PLATFORM

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)


def run_smoke(client: docker.DockerClient, image: str, arch: str, smoke: SmokeConfig,
              settings: Settings) -> SmokeResult:
    """Run ``smoke.command`` in ``image`` for ``arch``'s platform; the exit code (None: killed at the timeout) and
    the last ``settings.smoke_log_lines`` output lines (stdout and stderr, in order)."""
    from docker.types import LogConfig  # docker is imported where it is used (workers.images does the same)

    limits: dict[str, Any] = {}
    if settings.smoke_memory > 0:
        limits.update(mem_limit=settings.smoke_memory, memswap_limit=settings.smoke_memory)
    if settings.smoke_pids > 0:
        limits["pids_limit"] = settings.smoke_pids
    container = client.containers.create(
        image, entrypoint=list(smoke.command[:1]), command=list(smoke.command[1:]),
        platform=GO_ARCH_TO_PLATFORM[arch], network_mode="none", security_opt=["no-new-privileges"],
        labels={"io.edgebot.smoke": arch}, detach=True,
        # the Engine keeps at most this much of its output: a command printing without end cannot fill the disk or
        # this worker's memory when its last lines are read
        log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}), **limits)
    code: int | None = None
    try:
        container.start()
        deadline = time.monotonic() + smoke.timeout
        try:
            status = container.wait(timeout=max(1.0, deadline - time.monotonic()))
            code = int(status.get("StatusCode", -1))
        except Exception:  # requests' ReadTimeout / ConnectionError at the timeout: kill it
            with contextlib.suppress(Exception):
                container.kill()
            code = None
        raw = container.logs(stdout=True, stderr=True, tail=max(1, settings.smoke_log_lines))
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)
    lines = [line[:LINE_MAX] for line in raw.decode(errors="replace").splitlines()]
    return SmokeResult(command=smoke.shown()[:LINE_MAX], exit_code=code,
                       tail=tuple(lines[-max(1, settings.smoke_log_lines):]), timeout=smoke.timeout)


def check(client: docker.DockerClient, image: str, arch: str, smoke: SmokeConfig | None, settings: Settings,
          *, service: str) -> dict[str, Any]:
    """The smoke run of a built image before its push: ``{}`` when none is configured, the passed result for the
    build report, or :class:`StepFailed` (what failed, the exit code, how to fix; the last lines as its detail)."""
    if smoke is None:
        return {}
    try:
        result = run_smoke(client, image, arch, smoke, settings)
    except Exception as exc:  # the Engine refused the container (bad entrypoint path, limits): a clear failure
        reason = str(getattr(exc, "explanation", "") or type(exc).__name__)[:LINE_MAX]
        raise StepFailed(messages.smoke_not_started(arch, smoke.shown()[:LINE_MAX], reason)) from None
    log.info("smoke run of %s (%s): exit %s", image, arch, result.exit_code)
    if not result.passed:
        raise StepFailed(messages.smoke_failed(service, arch, result), detail=list(result.tail) or ["(no output)"])
    return result.to_report()
