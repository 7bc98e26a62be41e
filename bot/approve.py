"""The approval desk: every click on an approval card, whatever the card approves (a publish, a rollback).

Slack never retries a click, so the duplicates are real people: one approver double-clicking, two approvers
clicking in the same instant. Every decision is one WATCH/MULTI update of the release record; the update that
completes the quorum also enqueues what was approved (the publish job, the rollback job) in the same MULTI, so
exactly one click moves the release on however many arrive at once. A click that does not count changes nothing but
the audit trail (and closes a request whose deadline passed), and its author is told why (:class:`Refusal`).

What differs between kinds of approval is data, in :data:`KINDS` (one :class:`KindRules` per
:class:`~edgebot.approvals.Kind`): which request of the release the card shows, who asked it (four-eyes), what
quorum, a rejection and a late click do to the record, which job quorum enqueues, and how the card looks and is
answered in Slack. A third kind is one more member of ``Kind`` and one more entry here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from edgebot import approval_messages, approvals, durability
from edgebot.approvals import Kind, Refusal
from edgebot.jobs import Step, enqueue_step, publish_args
from edgebot.messages import Message
from edgebot.release import (
    AWAITING_APPROVAL,
    PUBLISHING,
    REJECTED,
    ROLLED_BACK,
    Approval,
    Decision,
    Release,
    RequestStatus,
)
from edgebot.seals import Sealer, decision_payload
from edgebot.settings import Settings
from edgebot.store import ReleaseNotFound, ReleaseStore
from edgebot.thread import ThreadReporter

GroupMembers = Callable[[str], set[str]]


@dataclass(frozen=True)
class KindRules:
    """Everything the desk and the bot's listeners need to know about one kind of approval."""

    # -- the record
    request: Callable[[Release], Approval | None]
    """Which request of the release a card of this kind shows."""
    requester: Callable[[Release], str]
    """Who asked: their own click does not count unless the policy allows it (four-eyes)."""
    closed: Callable[[Release], Refusal | None]
    """Why no click can count on the request now (no open request with a card, quorum reached, request over), or
    None while it is open."""
    granted: Callable[[Release], None]
    """What quorum does to the record (besides ``quorum_at``)."""
    next_step: Callable[[Release, Approval], tuple[Step, tuple[str, ...]]]
    """The job quorum enqueues (step and arguments after the release id), in the MULTI of the deciding click."""
    rejected: Callable[[Release, str, str], None]
    """What a rejection by (user, reason) does to the record (besides the decision): the request is over."""
    expired: Callable[[Release], None]
    """What a click after the deadline does to the record: the request is over at once, without waiting for the
    scheduled expiry job."""
    events: str
    """Prefix of the audit events (``approved``, ``quorum``, ``rejected``, ``approval_refused`` …)."""
    # -- Slack
    approve_action: str
    reject_action: str
    reject_callback: str
    """The action ids of the card's buttons and the callback id of its Reject modal."""
    counted: Callable[[Release, bool], Message]
    """The answer to an approval that counted (and whether it completed the quorum)."""
    modal: Callable[[Release, str], dict[str, Any]]
    """The Reject modal, given the card's button value."""
    repaint: Callable[[ThreadReporter, str], None]
    """The thread after a decision: the card (tally, outcome, buttons removed) and whatever shows its state."""
    ended: Callable[[ThreadReporter, str], None]
    """What else the thread says once a rejection or a late click ended the request."""


# -- publish: the gate between signing and the Exchange -------------------------------------------------------------

def _publish_closed(release: Release) -> Refusal | None:
    approval = release.approval
    if release.is_final:
        return Refusal.ENDED
    if approval is not None and approval.quorum_at is not None and release.state != AWAITING_APPROVAL:
        return Refusal.QUORUM_REACHED
    if release.state != AWAITING_APPROVAL or approval is None or not approval.card_ts:
        return Refusal.NOT_WAITING
    return None


def _publish_granted(release: Release) -> None:
    release.state = PUBLISHING


def _publish_rejected(release: Release, user_id: str, reason: str) -> None:
    release.state = REJECTED
    outcome = "Nothing moved" if release.is_deploy else "The images stay in the registry; nothing was published"
    release.error = f"rejected by <@{user_id}>: {reason}. {outcome}"


def _publish_next(release: Release, request: Approval) -> tuple[Step, tuple[str, ...]]:
    """Each round's publish is a step of its own; a deploy (a version already in the Exchange) has its own step that
    verifies it again and starts the rollout."""
    return (Step.DEPLOY if release.is_deploy else Step.PUBLISH), publish_args(request.round)


def _publish_repaint(reporter: ThreadReporter, release_id: str) -> None:
    reporter.approval_card(release_id)
    reporter.refresh_root(release_id)  # the state shown at the top of the thread follows the card


def _publish_ended(reporter: ThreadReporter, release_id: str) -> None:
    reporter.summary(release_id)  # rejected or expired: the summary mentions the requester, root repainted


# -- rollback: `/edge rollback` of a release that rolled out --------------------------------------------------------

def _rollback_closed(release: Release) -> Refusal | None:
    request = release.rollback_request
    if request is None or not request.card_ts:
        return Refusal.NOT_WAITING
    if release.state == ROLLED_BACK:
        return Refusal.ENDED
    if request.status == RequestStatus.APPROVED:
        return Refusal.QUORUM_REACHED
    if request.status != RequestStatus.OPEN:  # rejected or expired
        return Refusal.ENDED
    return None


def _rollback_granted(release: Release) -> None:
    assert release.rollback_request is not None
    release.rollback_request.status = RequestStatus.APPROVED


def _rollback_rejected(release: Release, user_id: str, reason: str) -> None:
    assert release.rollback_request is not None
    release.rollback_request.status = RequestStatus.REJECTED


def _nothing_more(reporter: ThreadReporter, release_id: str) -> None:
    """A closed rollback request leaves the release as it was: its card says it all."""


KINDS: dict[Kind, KindRules] = {
    Kind.PUBLISH: KindRules(
        request=lambda r: r.approval,
        requester=lambda r: r.user_id,
        closed=_publish_closed,
        granted=_publish_granted,
        next_step=_publish_next,
        rejected=_publish_rejected,
        expired=approvals.mark_expired,
        events="",
        approve_action=approval_messages.APPROVE_ACTION,
        reject_action=approval_messages.REJECT_ACTION,
        reject_callback=approval_messages.REJECT_CALLBACK,
        counted=approval_messages.approval_counted,
        modal=lambda r, value: approval_messages.reject_modal(r, value, kind=Kind.PUBLISH),
        repaint=_publish_repaint,
        ended=_publish_ended,
    ),
    Kind.ROLLBACK: KindRules(
        request=lambda r: r.rollback_request,
        requester=lambda r: r.rollback_request.requested_by if r.rollback_request else "",
        closed=_rollback_closed,
        granted=_rollback_granted,
        next_step=lambda r, request: (Step.ROLLBACK, (request.requested_by,)),
        rejected=_rollback_rejected,
        expired=approvals.mark_rollback_expired,
        events="rollback_",
        approve_action=approval_messages.APPROVE_ROLLBACK_ACTION,
        reject_action=approval_messages.REJECT_ROLLBACK_ACTION,
        reject_callback=approval_messages.REJECT_ROLLBACK_CALLBACK,
        counted=approval_messages.rollback_counted,
        modal=lambda r, value: approval_messages.reject_modal(r, value, kind=Kind.ROLLBACK),
        repaint=lambda reporter, release_id: reporter.rollback_card(release_id),
        ended=_nothing_more,
    ),
}


def kind_of_action(action_id: str) -> Kind | None:
    """The kind of card whose Approve or Reject button has this action id."""
    return next((k for k, rules in KINDS.items() if action_id in (rules.approve_action, rules.reject_action)), None)


def kind_of_view(callback_id: str) -> Kind | None:
    """The kind of card whose Reject modal has this callback id."""
    return next((k for k, rules in KINDS.items() if callback_id == rules.reject_callback), None)


def refusal(kind: Kind, release: Release | None, user_id: str, card_digest: str, now: float, *, is_approver: bool,
            approving: bool = True) -> Refusal | None:
    """Why a click by ``user_id`` on a ``kind`` card showing ``card_digest`` does not count, or None when it does.

    ``is_approver`` is the caller's membership check (user groups resolved at click time); ``approving`` is False
    for a Reject (which may follow the same person's approval).
    """
    if release is None:
        return Refusal.UNKNOWN
    rules = KINDS[kind]
    closed = rules.closed(release)
    if closed is not None:
        return closed
    request = rules.request(release)
    assert request is not None, "an open request exists"
    if now >= request.expires_at:
        return Refusal.EXPIRED
    if not card_digest or not request.covers_digest.startswith(card_digest):
        return Refusal.OUTDATED
    if user_id == rules.requester(release) and not request.allow_requester:
        return Refusal.REQUESTER
    if not is_approver:
        return Refusal.NOT_APPROVER
    if approving and request.approved_by(user_id):
        return Refusal.ALREADY
    return None


@dataclass(frozen=True)
class ClickOutcome:
    release: Release | None
    refused: Refusal | None = None
    """Why the click did not count, or None."""
    quorum: bool = False
    """This click completed the quorum and enqueued what was approved."""
    unconfirmed: bool = False
    """The decision is written but fewer than ``redis_wait_replicas`` replicas confirmed it (edgebot.durability)."""


class ApprovalDesk:
    """Counts the clicks on every approval card: one WATCH/MULTI update per decision."""

    def __init__(self, store: ReleaseStore, members_of: GroupMembers, settings: Settings,
                 clock: Callable[[], float] = time.time, sealer: Sealer | None = None) -> None:
        self.store = store
        self._members_of = members_of
        self.settings = settings
        self.clock = clock
        self.sealer = sealer
        """Seals each decision for the publish worker, which counts only sealed approvals (edgebot.seals)."""

    def approver_via(self, user_id: str, approvers: list[str]) -> str | None:
        """The approver entry ``user_id`` qualifies through: their own id, or a user group they belong to (resolved
        now, not cached, so a membership change in Slack applies at once); None when they are no approver."""
        if user_id in approvers:
            return user_id
        return next((group for group in approvers if group.startswith("S") and user_id in self._members_of(group)),
                    None)

    def is_approver(self, user_id: str, approvers: list[str]) -> bool:
        return self.approver_via(user_id, approvers) is not None

    def _member(self, kind: Kind, release: Release | None, user_id: str) -> str | None:
        """Read before the update (a user group is a Slack call, never made inside a WATCH)."""
        request = KINDS[kind].request(release) if release is not None else None
        return self.approver_via(user_id, request.approvers) if request else None

    def _decide(self, kind: Kind, release: Release, request: Approval, decision: Decision) -> Decision:
        if self.sealer is not None:
            decision.seal = self.sealer.seal("decision", decision_payload(release.release_id, kind.value,
                                                                          request.round, decision))
        return decision

    def _refused(self, kind: Kind, release: Release, user_id: str, card_digest: str, *, member: str | None,
                 approving: bool) -> Refusal | None:
        """Inside an update: why the click does not count; the audit event, and a late click ends the request."""
        rules = KINDS[kind]
        refused = refusal(kind, release, user_id, card_digest, self.clock(), is_approver=bool(member),
                          approving=approving)
        if refused is not None:
            what = "approval_refused" if approving else "rejection_refused"
            release.event(f"{rules.events}{what}", by=user_id, reason=refused)
            if refused is Refusal.EXPIRED:
                rules.expired(release)
        return refused

    def approve(self, kind: Kind, release_id: str, card_digest: str, user_id: str) -> ClickOutcome:
        rules = KINDS[kind]
        member = self._member(kind, self.store.get(release_id), user_id)

        def mutate(r: Release) -> tuple[Refusal | None, bool]:
            """(why the click does not count, or None; whether it completed the quorum)"""
            refused = self._refused(kind, r, user_id, card_digest, member=member, approving=True)
            if refused is not None:
                return refused, False
            request = rules.request(r)
            assert request is not None
            request.decisions.append(self._decide(kind, r, request, Decision(
                user_id=user_id, outcome="approved", at=self.clock(), covers_digest=request.covers_digest,
                via=member or "")))
            r.event(f"{rules.events}approved", by=user_id, covers=request.covers_digest, round=request.round)
            if len(request.approvals()) < request.required:
                return None, False
            request.quorum_at = self.clock()
            rules.granted(r)
            r.event(f"{rules.events}quorum", approvers=[d.user_id for d in request.approvals()])
            return None, True

        def then(r: Release, decided: tuple[Refusal | None, bool], pipe: Any) -> None:
            if decided[1]:  # exactly once: in the MULTI of the click that completed the quorum
                request = rules.request(r)
                assert request is not None
                step, args = rules.next_step(r, request)
                enqueue_step(self.store.redis, self.settings, step, r.release_id, *args, pipe=pipe)

        try:
            updated = self.store.update(release_id, mutate, then=then)
        except ReleaseNotFound:
            return ClickOutcome(None, Refusal.UNKNOWN)
        refused, quorum = updated.decided
        return ClickOutcome(updated.release, refused, quorum=quorum,
                            unconfirmed=refused is None and not self._confirmed(release_id))

    def check_reject(self, kind: Kind, release_id: str, card_digest: str, user_id: str) -> ClickOutcome:
        """Whether ``user_id`` may reject (the Reject button opens the modal only if so); writes nothing."""
        release = self.store.get(release_id)
        reason = refusal(kind, release, user_id, card_digest, self.clock(),
                         is_approver=self._member(kind, release, user_id) is not None, approving=False)
        return ClickOutcome(release, reason)

    def reject(self, kind: Kind, release_id: str, card_digest: str, user_id: str, reason: str) -> ClickOutcome:
        rules = KINDS[kind]
        member = self._member(kind, self.store.get(release_id), user_id)

        def mutate(r: Release) -> Refusal | None:
            refused = self._refused(kind, r, user_id, card_digest, member=member, approving=False)
            if refused is not None:
                return refused
            request = rules.request(r)
            assert request is not None
            request.decisions.append(self._decide(kind, r, request, Decision(
                user_id=user_id, outcome="rejected", at=self.clock(), covers_digest=request.covers_digest,
                reason=reason, via=member or "")))
            rules.rejected(r, user_id, reason)
            r.event(f"{rules.events}rejected", by=user_id, reason=reason, covers=request.covers_digest)
            return None

        try:
            updated = self.store.update(release_id, mutate)
        except ReleaseNotFound:
            return ClickOutcome(None, Refusal.UNKNOWN)
        return ClickOutcome(updated.release, updated.decided,
                            unconfirmed=updated.decided is None and not self._confirmed(release_id))

    def _confirmed(self, release_id: str) -> bool:
        """The decision just written is on ``redis_wait_replicas`` replicas (always, when that is 0)."""
        try:
            return durability.confirm(self.store.redis, self.settings, self.store.key(release_id)).confirmed
        except redis.RedisError:
            return False
