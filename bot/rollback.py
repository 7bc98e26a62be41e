"""`/edge rollback SERVICE`: re-point the policies/patterns of the service's last rollout to the versions they pinned
before it. Needs the ``rollback`` permission of the service (``[access]``; where no rule names ``rollback``, the
``publish`` rule applies). The bot only checks and queues: the job (``workers.jobs.rollback_release``) does the
Exchange writes under the same per-object locks as a rollout.

Under the same approval policy as a publish (``[approvals]`` for the release's org, registry and service): when it
asks for approvals, the rollback is a *request* recorded in the release (``rollback_request``) with a card in its
thread. The clicks on that card are counted by the approval desk (``bot.approve``, kind ``rollback``) like a publish's:
the approval that completes the quorum enqueues the rollback job in the same MULTI (exactly once), a Reject or the
request's expiry (a scheduled job) closes it, and the fleet stays where it is.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import redis
from rq.exceptions import DuplicateJobError

from bot.access import AccessCheck
from edgebot import approvals, durability
from edgebot.approvals import ApprovalPolicy, Kind
from edgebot.config import Config
from edgebot.errors import UsageError
from edgebot.jobs import Step, enqueue_step
from edgebot.messages import ROLLBACK_USAGE
from edgebot.release import ROLLED_BACK, Approval, Release, RequestStatus
from edgebot.store import ReleaseStore

HISTORY_DEPTH = 25


@dataclass(frozen=True)
class RollbackOutcome:
    release: Release
    queued: bool
    """False when a rollback of this release is already queued or running (or already requested)."""
    needs_approval: bool = False
    """True: a rollback request with its card; nothing moves before the quorum."""
    unconfirmed: bool = False
    """Written, but fewer than ``redis_wait_replicas`` replicas confirmed it (edgebot.durability)."""


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
    permission = "rollback" if access.policy.principals("rollback", org=service.org, service=service_name) is not None \
        else "publish"
    allowed, holders = access.allowed(permission, user_id, org=service.org, service=service_name)
    if not allowed:
        raise RollbackRefused(permission, service.org, service_name, holders)
    release = last_rollout(store, service.org, service_name)
    if release is None:
        raise UsageError(f"`{service_name}` has no rollout to roll back (the last one was rolled back already, or "
                         "none moved a policy or pattern).", ROLLBACK_USAGE)
    policy = config.approval_policy(org=release.org, service=release.service, registry=release.registry)
    if policy.needed:
        outcome = request_approval(store, config, release.release_id, user_id, policy)
    else:
        try:  # no record write decides this one: the job id's uniqueness makes a second /edge rollback a no-op
            enqueue_step(store.redis, config.settings, Step.ROLLBACK, release.release_id, user_id, unique=True)
        except DuplicateJobError:
            return RollbackOutcome(release, queued=False)
        outcome = RollbackOutcome(release, queued=True)
    if outcome.queued and not _confirmed(store, release.release_id):
        return dataclasses.replace(outcome, unconfirmed=True)
    return outcome


def _confirmed(store: ReleaseStore, release_id: str) -> bool:
    """What was just written (the rollback job, or the request) is on ``redis_wait_replicas`` replicas."""
    try:
        return durability.confirm(store.redis, store.settings, store.key(release_id)).confirmed
    except redis.RedisError:
        return False


def request_approval(store: ReleaseStore, config: Config, release_id: str, user_id: str,
                     policy: ApprovalPolicy) -> RollbackOutcome:
    """Record a rollback request (unless one is open) and schedule its expiry; the caller posts the card."""
    now = time.time()

    def ask(r: Release) -> bool:
        current = r.rollback_request
        if current is not None and current.status == RequestStatus.OPEN and now < current.expires_at:
            return False  # asked twice: the open request stands
        covered = approvals.rollback_covers(r)
        r.rollback_request = Approval(
            required=policy.required, approvers=list(policy.approvers), allow_requester=policy.allow_requester,
            requested_at=now, expires_at=now + policy.timeout_seconds, covers=covered,
            covers_digest=approvals.covers_digest(covered), kind=Kind.ROLLBACK, requested_by=user_id)
        r.event("rollback_requested", by=user_id, required=policy.required, covers=r.rollback_request.covers_digest)
        return True

    def schedule_expiry(r: Release, opened: bool, pipe: Any) -> None:
        if opened:
            enqueue_step(store.redis, config.settings, Step.EXPIRE_ROLLBACK, release_id, pipe=pipe,
                         delay=policy.timeout_seconds, tag=str(int(now)))

    updated = store.update(release_id, ask, then=schedule_expiry)
    return RollbackOutcome(updated.release, queued=updated.decided, needs_approval=True)
