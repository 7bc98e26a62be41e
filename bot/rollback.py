"""`/edge rollback SERVICE`: re-point the policies/patterns of the service's last rollout to the versions they pinned
before it. Needs the ``rollback`` permission of the service (``[access]``; where no rule names ``rollback``, the
``publish`` rule applies). The bot only checks and queues: the job (``workers.jobs.rollback_release``) does the
Exchange writes under the same per-object locks as a rollout.

Under the same approval policy as a publish (``[approvals]`` for the release's org, registry and service): when it
asks for approvals, the rollback is a *request* recorded in the release (``rollback_request``) with a card in its
thread; the approval that completes the quorum enqueues the rollback job in the same MULTI (exactly once), a Reject
or the request's expiry (a scheduled job) closes it, and the fleet stays where it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rq.exceptions import DuplicateJobError

from bot.access import AccessCheck
from bot.approve import ApprovalDesk, ClickOutcome
from edgebot import approvals
from edgebot.approvals import ApprovalPolicy
from edgebot.config import Config
from edgebot.errors import UsageError
from edgebot.jobs import Step, enqueue_step
from edgebot.messages import ROLLBACK_USAGE
from edgebot.release import ROLLED_BACK, Approval, Decision, Release
from edgebot.store import ReleaseNotFound, ReleaseStore

HISTORY_DEPTH = 25


@dataclass(frozen=True)
class RollbackOutcome:
    release: Release
    queued: bool
    """False when a rollback of this release is already queued or running (or already requested)."""
    needs_approval: bool = False
    """True: a rollback request with its card; nothing moves before the quorum."""


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
        return request_approval(store, config, release.release_id, user_id, policy)
    try:  # no record write decides this one: the job id's uniqueness makes a second /edge rollback a no-op
        enqueue_step(store.redis, config.settings, Step.ROLLBACK, release.release_id, user_id, unique=True)
    except DuplicateJobError:
        return RollbackOutcome(release, queued=False)
    return RollbackOutcome(release, queued=True)


def request_approval(store: ReleaseStore, config: Config, release_id: str, user_id: str,
                     policy: ApprovalPolicy) -> RollbackOutcome:
    """Record a rollback request (unless one is open) and schedule its expiry; the caller posts the card."""
    now = time.time()

    def ask(r: Release) -> bool:
        current = r.rollback_request
        if current is not None and current.status == "open" and now < current.expires_at:
            return False  # asked twice: the open request stands
        covered = approvals.rollback_covers(r)
        r.rollback_request = Approval(
            required=policy.required, approvers=list(policy.approvers), allow_requester=policy.allow_requester,
            requested_at=now, expires_at=now + policy.timeout_seconds, covers=covered,
            covers_digest=approvals.covers_digest(covered), kind="rollback", requested_by=user_id)
        r.event("rollback_requested", by=user_id, required=policy.required, covers=r.rollback_request.covers_digest)
        return True

    def schedule_expiry(r: Release, opened: bool, pipe: Any) -> None:
        if opened:
            enqueue_step(store.redis, config.settings, Step.EXPIRE_ROLLBACK, release_id, pipe=pipe,
                         delay=policy.timeout_seconds, tag=str(int(now)))

    updated = store.update(release_id, ask, then=schedule_expiry)
    return RollbackOutcome(updated.release, queued=updated.decided, needs_approval=True)


class RollbackDesk:
    """Counts clicks on a rollback card, like :class:`bot.approve.ApprovalDesk` does for a publish."""

    def __init__(self, desk: ApprovalDesk) -> None:
        self.desk = desk

    def _member(self, release: Release | None, user_id: str) -> bool:
        request = release.rollback_request if release else None
        return bool(request and self.desk.is_approver(user_id, request.approvers))

    def approve(self, release_id: str, card_digest: str, user_id: str) -> ClickOutcome:
        store, clock = self.desk.store, self.desk.clock
        member = self._member(store.get(release_id), user_id)

        def mutate(r: Release) -> tuple[str | None, bool]:
            refused = approvals.rollback_refusal(r, user_id, card_digest, clock(), is_approver=member)
            if refused is not None:
                r.event("rollback_approval_refused", by=user_id, reason=refused)
                _close_if_expired(r, refused)
                return refused, False
            request = r.rollback_request
            assert request is not None
            request.decisions.append(Decision(user_id=user_id, outcome="approved", at=clock(),
                                              covers_digest=request.covers_digest))
            r.event("rollback_approved", by=user_id, covers=request.covers_digest)
            if len(request.approvals()) >= request.required:
                request.quorum_at, request.status = clock(), "approved"
                return None, True
            return None, False

        def then(r: Release, decided: tuple[str | None, bool], pipe: Any) -> None:
            if decided[1]:
                assert r.rollback_request is not None
                enqueue_step(store.redis, self.desk.settings, Step.ROLLBACK, r.release_id,
                             r.rollback_request.requested_by, pipe=pipe)

        try:
            updated = store.update(release_id, mutate, then=then)
        except ReleaseNotFound:
            return ClickOutcome(None, approvals.UNKNOWN)
        refused, quorum = updated.decided
        return ClickOutcome(updated.release, refused, quorum=quorum)

    def check_reject(self, release_id: str, card_digest: str, user_id: str) -> ClickOutcome:
        release = self.desk.store.get(release_id)
        reason = approvals.rollback_refusal(release, user_id, card_digest, self.desk.clock(),
                                            is_approver=self._member(release, user_id), approving=False)
        return ClickOutcome(release, reason)

    def reject(self, release_id: str, card_digest: str, user_id: str, reason: str) -> ClickOutcome:
        store, clock = self.desk.store, self.desk.clock
        member = self._member(store.get(release_id), user_id)

        def mutate(r: Release) -> str | None:
            refused = approvals.rollback_refusal(r, user_id, card_digest, clock(), is_approver=member,
                                                 approving=False)
            if refused is not None:
                r.event("rollback_rejection_refused", by=user_id, reason=refused)
                _close_if_expired(r, refused)
                return refused
            request = r.rollback_request
            assert request is not None
            request.decisions.append(Decision(user_id=user_id, outcome="rejected", at=clock(),
                                              covers_digest=request.covers_digest, reason=reason))
            request.status = "rejected"
            r.event("rollback_rejected", by=user_id, reason=reason)
            return None

        try:
            updated = store.update(release_id, mutate)
        except ReleaseNotFound:
            return ClickOutcome(None, approvals.UNKNOWN)
        return ClickOutcome(updated.release, updated.decided)


def _close_if_expired(release: Release, refused: str) -> None:
    if refused == approvals.EXPIRED_CLICK and release.rollback_request is not None:
        release.rollback_request.status = "expired"
        release.event("rollback_request_expired")
