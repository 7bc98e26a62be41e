"""`/edge cancel RELEASE`: end a release that has not published, wherever it is.

The release is marked ``cancelled`` first (one atomic update), so every step that is still to run, or that is
running and reaches its next record write, stops without side effects (see ``workers.progress.set_stage``). Then
the release's queued jobs are removed from their queues and running ones are stopped with RQ's stop command, which
kills the work horse. From ``publishing`` on (the Exchange written, the fleet moving) a release cannot be
cancelled: stopping there would leave the Exchange and the fleet half moved, so the answer offers the rollback
command instead, and nothing changes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

from edgebot.jobs import SERIALIZER, Step, publish_args
from edgebot.release import CANCELLED, PENDING, PUBLISHING, ROLLING_OUT, RUNNING, SKIPPED, Release
from edgebot.steps import StepLedger
from edgebot.store import ReleaseStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CancelOutcome:
    release: Release
    cancelled: bool
    removed_jobs: int = 0
    stopped_jobs: int = 0
    too_late: bool = False
    """Not cancelled because it is publishing or rolling out (``cancelled`` is False): roll back instead."""


TOO_LATE = (PUBLISHING, ROLLING_OUT)
"""States from which cancelling would leave the fleet half moved."""


def release_job_ids(release: Release) -> list[str]:
    """The jobs of every step up to publish (the rollout's jobs end themselves once the release is final)."""
    rid = release.release_id
    rounds = release.approval.round if release.approval is not None else 1
    return [Step.PREPARE.job_id(rid), *(Step.BUILD.job_id(rid, arch) for arch in release.arches),
            Step.SIGN.job_id(rid), *(Step.PUBLISH.job_id(rid, *publish_args(n)) for n in range(1, rounds + 1))]


def cancel_release(store: ReleaseStore, release_id: str, user_id: str) -> CancelOutcome | None:
    """None if there is no such release; ``cancelled=False`` (and the release) if it had already ended."""

    def mutate(r: Release) -> bool:
        """Whether the release had already ended or is past the point of cancelling (nothing changes then)."""
        if r.is_final or r.state in TOO_LATE:
            return True
        r.state = CANCELLED
        r.error = f"cancelled by <@{user_id}>"
        r.event("cancelled", by=user_id)
        now = time.time()
        for step in [*r.stages.values(), *(s for per in r.arch_steps.values() for s in per.values())]:
            if step.status in (RUNNING, PENDING):
                step.status, step.note = SKIPPED, "cancelled"
                step.ended_at = now if step.started_at else None
        return False

    release = store.get(release_id)
    if release is None:
        return None
    updated = store.update(release_id, mutate)
    release = updated.release
    if updated.decided:
        return CancelOutcome(release, cancelled=False, too_late=release.state in TOO_LATE)
    removed = stopped = 0
    attempts = [e.job_id for e in StepLedger(store.redis, store.settings).entries(release_id).values()]
    for jid in dict.fromkeys([*release_job_ids(release), *attempts]):  # resumed attempts have their own ids
        try:
            job = Job.fetch(jid, connection=store.redis, serializer=SERIALIZER)
        except NoSuchJobError:
            continue
        status = job.get_status(refresh=False)
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            job.cancel()
            removed += 1
        elif status == JobStatus.STARTED:
            try:
                send_stop_job_command(store.redis, jid, serializer=SERIALIZER)
                stopped += 1
            except InvalidJobOperation:
                log.info("release %s: job %s finished before it could be stopped", release_id, jid)
    return CancelOutcome(release, cancelled=True, removed_jobs=removed, stopped_jobs=stopped)
