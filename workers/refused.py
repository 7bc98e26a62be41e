"""A job refused because it names a step that does not run on its queue: evidence that something other than edgebot
wrote it (a build worker's Redis user can push onto the build queues and the reports queue, and nothing else).

RQ fails the job (the job class refuses to resolve its function, see edgebot.jobs.EdgebotJob); a publish worker that
took it also fails the release the job names, if there is one and it is still active, with a security alert in its
thread, since the build worker that forged the job may have forged its reports too. A build worker only logs it: it
can neither write the record nor reach Slack.
"""

from __future__ import annotations

import logging
import re

from rq.job import Job

from edgebot.release import Release
from workers import context
from workers.trust import SecurityCheckFailed

log = logging.getLogger(__name__)

RELEASE_ID = re.compile(r"r-[0-9a-f]{6,64}")


def alert(job: Job, queue_name: str) -> None:
    """Fail the release a refused job names (best effort: the refusal itself never depends on this)."""
    try:
        ctx = context.current()
        args = job.args
        release_id = args[0] if args and isinstance(args[0], str) and RELEASE_ID.fullmatch(args[0]) else None
        if release_id is None or not ctx.reports_to_slack:
            return
        problem = (f"a job on queue {queue_name} named {str(job.func_name)[:80]!r} for this release; that queue runs "
                   "no such step, so the job was refused")
        message = str(SecurityCheckFailed(problem))

        def mutate(r: Release) -> list[str]:
            return [] if r.is_final else r.mark_failed(message, refused_job=job.id)

        failed = ctx.store.update(release_id, mutate).decided
        if failed is None:
            return
        for stage in failed:
            ctx.reporter.stage(release_id, stage)
        ctx.reporter.summary(release_id)
        ctx.reporter.flush()
    except Exception as exc:  # the record may be gone, Redis or Slack down: the job is refused all the same
        log.warning("refused job %s: could not alert its release: %s", job.id, type(exc).__name__)
