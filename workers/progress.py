"""Release progress, the workers' side: move a stage (or one arch of it) and report it, end a release as failed.

Every step module moves the release through these two functions, so "running", "done", "failed" mean the same
everywhere, a write after the release ended stops the step (``ReleaseEnded``), and every write is fenced by the
step's lease. ``then`` and ``decide`` are the outbox of ``ReleaseStore.update``: what the write decided and the jobs it
enqueues land in the same MULTI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from edgebot import messages
from edgebot.release import Release, StageStatus
from edgebot.store import Updated
from workers.context import WorkerContext

T = TypeVar("T")


def set_stage(ctx: WorkerContext, release_id: str, stage: str, status: StageStatus, *, arch: str = "",
              note: str | None = None, extra: Callable[[Release], T] | None = None,
              then: Callable[[Release, T | None, Any], None] | None = None) -> Updated[T | None]:
    """Mark ``stage`` (of ``arch``) ``status`` and apply ``extra`` in the same write; repaint the stage's message.

    ``extra`` returns what it decided (``Updated.decided``), which ``then(release, decided, pipe)`` may act on in the
    same MULTI (enqueue the next step). Raises ReleaseEnded, writing nothing, when the release has ended (cancelled,
    or failed by another arch) while the step ran.
    """

    def mutate(r: Release) -> T | None:
        (r.arch_step(stage, arch) if arch else r.stage(stage)).mark(status, note)
        return extra(r) if extra is not None else None

    updated = ctx.store.update(release_id, mutate, fence=ctx.lease, active=True, then=then)
    ctx.reporter.stage(release_id, stage)
    return updated


def fail(ctx: WorkerContext, release_id: str, message: str, detail: list[str] | None = None) -> None:
    """End the release as failed: the running stage (and arch) marked failed, the summary posted once."""

    def mutate(r: Release) -> list[str]:
        return [] if r.is_final else r.mark_failed(message, detail)

    failed_stages = ctx.store.update(release_id, mutate, fence=ctx.lease).decided
    for stage in failed_stages:
        ctx.reporter.stage(release_id, stage)
    ctx.reporter.summary(release_id)


def say_resumed(ctx: WorkerContext, release_id: str, step: str, attempt: int) -> None:
    """Post in the thread that ``step`` resumed (attempt ``attempt``) and what it reuses from the attempts before."""
    release = ctx.store.require(release_id)
    reused = []
    if release.commit_sha:
        reused.append(f"commit `{release.commit_sha[:12]}`")
    reused += [f"{arch} digest `{res.digest[:19]}`" for arch, res in sorted(release.results.items()) if res.digest]
    signed = sorted(arch for arch, res in release.results.items() if res.signature)
    if signed:
        reused.append("the signature of " + ", ".join(signed))
    ctx.reporter.note(release_id, messages.resumed_message(step, attempt, reused))
