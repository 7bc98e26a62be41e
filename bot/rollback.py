"""`/edge rollback SERVICE`: re-point the policies/patterns of the service's last rollout to the versions they pinned
before it. Needs the ``publish`` permission of the service (``[access]``). The bot only checks and queues: the job
(``workers.jobs.rollback_release``) does the Exchange writes under the same per-object locks as a rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

from rq import Queue
from rq.exceptions import DuplicateJobError

from bot.access import AccessCheck
from edgebot.config import Config
from edgebot.errors import UsageError
from edgebot.messages import ROLLBACK_USAGE
from edgebot.release import ROLLED_BACK, Release
from edgebot.rqjob import JOBS_MODULE, PUBLISH_QUEUE, SERIALIZER, EdgebotJob, job_id
from edgebot.store import ReleaseStore

HISTORY_DEPTH = 25


@dataclass(frozen=True)
class RollbackOutcome:
    release: Release
    queued: bool
    """False when a rollback of this release is already queued or running."""


class RollbackRefused(Exception):
    def __init__(self, permission: str, org: str, service: str, holders: tuple[str, ...]) -> None:
        super().__init__(f"{permission} {org}/{service}")
        self.permission, self.org, self.service, self.holders = permission, org, service, holders


def last_rollout(store: ReleaseStore, org: str, service: str) -> Release | None:
    """The newest release of the service that moved at least one policy/pattern and was not rolled back."""
    for release in store.history(org, service, HISTORY_DEPTH):
        if any(s.targets for s in release.rollout):
            return None if release.state == ROLLED_BACK else release
    return None


def request_rollback(service_name: str, user_id: str, *, config: Config, store: ReleaseStore,
                     access: AccessCheck) -> RollbackOutcome:
    service = config.services.get(service_name)
    if service is None:
        known = ", ".join(f"`{s}`" for s in sorted(config.services))
        raise UsageError(f"`{service_name}` is not in edgebot's catalog. Known services: {known}.", ROLLBACK_USAGE)
    allowed, holders = access.allowed("publish", user_id, org=service.org, service=service_name)
    if not allowed:
        raise RollbackRefused("publish", service.org, service_name, holders)
    release = last_rollout(store, service.org, service_name)
    if release is None:
        raise UsageError(f"`{service_name}` has no rollout to roll back (the last one was rolled back already, or "
                         "none moved a policy or pattern).", ROLLBACK_USAGE)
    queue = Queue(PUBLISH_QUEUE, connection=store.redis, job_class=EdgebotJob, serializer=SERIALIZER)
    try:
        queue.enqueue_call(f"{JOBS_MODULE}.rollback_release", args=(release.release_id, user_id),
                           job_id=job_id(release.release_id, "rollback"), timeout=config.settings.job_timeout,
                           result_ttl=config.settings.job_result_ttl, unique=True)
    except DuplicateJobError:
        return RollbackOutcome(release, queued=False)
    return RollbackOutcome(release, queued=True)
