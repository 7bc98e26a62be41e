"""Counting approval clicks: who may, whether it counts, and the publish job enqueued exactly once at quorum.

Slack never retries a click, so the duplicates are real people: one approver double-clicking, two approvers
clicking in the same instant. Every decision is one WATCH/MULTI update of the release record; the update that
completes the quorum also enqueues the publish job in the same MULTI, so exactly one click starts publish however
many arrive at once. A click that does not count changes nothing but the audit trail, and its author is told why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgebot import approvals
from edgebot.jobs import Step, enqueue_step, publish_args
from edgebot.release import AWAITING_APPROVAL, PUBLISHING, REJECTED, Decision, Release
from edgebot.settings import Settings
from edgebot.store import ReleaseNotFound, ReleaseStore

GroupMembers = Callable[[str], set[str]]


@dataclass(frozen=True)
class ClickOutcome:
    release: Release | None
    refused: str | None = None
    """Why the click did not count (an ``edgebot.approvals`` constant), or None."""
    quorum: bool = False
    """This click completed the quorum and enqueued publish."""


class ApprovalDesk:
    def __init__(self, store: ReleaseStore, members_of: GroupMembers, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._members_of = members_of
        self.settings = settings
        self.clock = clock

    def is_approver(self, user_id: str, approvers: list[str]) -> bool:
        """Users by id; user groups resolved now (not cached), so a membership change in Slack applies at once."""
        if user_id in approvers:
            return True
        return any(user_id in self._members_of(group) for group in approvers if group.startswith("S"))

    def _membership(self, release: Release | None, user_id: str) -> bool:
        return bool(release and release.approval and self.is_approver(user_id, release.approval.approvers))

    def approve(self, release_id: str, card_digest: str, user_id: str) -> ClickOutcome:
        release = self.store.get(release_id)
        member = self._membership(release, user_id)

        def mutate(r: Release) -> tuple[str | None, bool]:
            """(why the click does not count, or None; whether it completed the quorum)"""
            refused = approvals.refusal(r, user_id, card_digest, self.clock(), is_approver=member)
            if refused is not None:
                r.event("approval_refused", by=user_id, reason=refused)
                _expire_in_place(r, refused)
                return refused, False
            assert r.approval is not None
            r.approval.decisions.append(Decision(user_id=user_id, outcome="approved", at=self.clock(),
                                                 covers_digest=r.approval.covers_digest))
            r.event("approved", by=user_id, covers=r.approval.covers_digest, round=r.approval.round)
            if len(r.approval.approvals()) >= r.approval.required:
                r.approval.quorum_at = self.clock()
                r.state = PUBLISHING
                r.event("quorum", approvers=[d.user_id for d in r.approval.approvals()])
                return None, True
            return None, False

        def then(r: Release, decided: tuple[str | None, bool], pipe: Any) -> None:
            if decided[1]:  # this round's publish, exactly once: in the MULTI of the click that completed the quorum
                assert r.approval is not None
                enqueue_step(self.store.redis, self.settings, Step.PUBLISH, r.release_id,
                             *publish_args(r.approval.round), pipe=pipe)

        try:
            updated = self.store.update(release_id, mutate, then=then)
        except ReleaseNotFound:
            return ClickOutcome(None, approvals.UNKNOWN)
        refused, quorum = updated.decided
        return ClickOutcome(updated.release, refused, quorum=quorum)

    def check_reject(self, release_id: str, card_digest: str, user_id: str) -> ClickOutcome:
        """Whether ``user_id`` may reject (the Reject button opens the modal only if so); writes nothing."""
        release = self.store.get(release_id)
        reason = approvals.refusal(release, user_id, card_digest, self.clock(),
                                   is_approver=self._membership(release, user_id), approving=False)
        return ClickOutcome(release, reason)

    def reject(self, release_id: str, card_digest: str, user_id: str, reason: str) -> ClickOutcome:
        release = self.store.get(release_id)
        member = self._membership(release, user_id)

        def mutate(r: Release) -> str | None:
            refused = approvals.refusal(r, user_id, card_digest, self.clock(), is_approver=member, approving=False)
            if refused is not None:
                r.event("rejection_refused", by=user_id, reason=refused)
                _expire_in_place(r, refused)
                return refused
            assert r.approval is not None
            r.approval.decisions.append(Decision(user_id=user_id, outcome="rejected", at=self.clock(),
                                                 covers_digest=r.approval.covers_digest, reason=reason))
            r.state = REJECTED
            r.error = f"rejected by <@{user_id}>: {reason}. The images stay in the registry; nothing was published"
            r.event("rejected", by=user_id, reason=reason, covers=r.approval.covers_digest)
            return None

        try:
            updated = self.store.update(release_id, mutate)
        except ReleaseNotFound:
            return ClickOutcome(None, approvals.UNKNOWN)
        return ClickOutcome(updated.release, updated.decided)


def _expire_in_place(release: Release, refused: str) -> None:
    """A click after the deadline ends the request at once, even if the scheduled expiry has not run yet."""
    if refused == approvals.EXPIRED_CLICK and release.state == AWAITING_APPROVAL and release.approval is not None:
        approvals.mark_expired(release)
