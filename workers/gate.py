"""The approval gate between sign and publish (the worker's side; the bot counts the clicks, see bot/approve.py).

- :func:`request` runs when every arch is signed: if the release's approval policy needs approvals, it records what
  the approval covers (deployment hashes, digests, fingerprints, target policies), what publishing will do in the
  Exchange, posts the card in the thread and schedules the expiry; otherwise it enqueues publish at once.
- :func:`recheck` runs first thing in publish: the quorum must be there and cover exactly what the record now holds;
  if anything differs, nothing is published and a new round of approval is asked for.
- :func:`expire` is the scheduled job that ends a request nobody answered in time (no incoming request needed; any
  worker running the RQ scheduler runs it).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from rq import Queue

from edgebot import approval_messages, approvals
from edgebot.errors import ReleaseEnded, StepFailed
from edgebot.release import AWAITING_APPROVAL, Approval, Release
from edgebot.rqjob import JOBS_MODULE, PUBLISH_QUEUE, SERIALIZER, EdgebotJob, job_id
from workers.context import WorkerContext

log = logging.getLogger(__name__)
EARLY_TOLERANCE = 1.0
"""Seconds: RQ's scheduler enqueues a delayed job when its second is due, possibly a fraction early."""


def targets(ctx: WorkerContext, release: Release) -> list[str]:
    """The deployment policies and patterns the release will move (``policy:name``), from the catalog or --policy."""
    from workers.rollout_watch import stages_of

    service = ctx.config.services[release.service]
    return [f"{t.kind}:{t.name}" for stage in stages_of(service, release) for t in stage.targets]


def exchange_changes(ctx: WorkerContext, release: Release) -> dict[str, str]:
    """Per arch, what publishing will do in the Exchange. Refuses early what publish would refuse anyway."""
    from workers.exchange import service_id

    changes: dict[str, str] = {}
    client = ctx.exchange(release.org)
    try:
        for arch in release.arches:
            res = release.result(arch)
            sid = service_id(res.definition["url"], release.version, arch)
            live = client.get_service(release.org, sid)
            if live is None:
                changes[arch] = f"new service `{sid}`"
            elif live.get("deployment") == res.deployment:
                changes[arch] = f"no change: `{sid}` is already published with this deployment"
            elif release.overwrite:
                changes[arch] = f":warning: overwrites the published `{sid}` (--overwrite)"
            else:
                raise StepFailed(f"{release.org}/{sid} is already published with a different deployment. Nodes "
                                 "running it would not re-pull it: publish a new version, or use --overwrite to "
                                 "replace it.")
    finally:
        client.close()
    return changes


def request(ctx: WorkerContext, release_id: str) -> bool:
    """Ask for approval if the policy needs it (True), else leave the release to be published now (False)."""
    release = ctx.store.require(release_id)
    policy = ctx.config.approval_policy(org=release.org, service=release.service, registry=release.registry)
    if release.dry_run or not policy.needed:
        return False
    changes = exchange_changes(ctx, release)
    covered = approvals.covers(release, targets(ctx, release))
    now = time.time()

    def ask(r: Release) -> None:
        if r.is_final:
            raise ReleaseEnded(f"release {release_id} is {r.state}")
        if r.approval is not None and r.approval.covers_digest == approvals.covers_digest(covered):
            return  # a retried sign step: the request (and its card) already exist
        round_ = 1
        superseded: list[str] = []
        if r.approval is not None:
            r.approval_history.append(r.approval)
            round_ = r.approval.round + 1
            superseded = [*r.approval.superseded_cards, *([r.approval.card_ts] if r.approval.card_ts else [])]
        r.approval = Approval(required=policy.required, approvers=list(policy.approvers),
                              allow_requester=policy.allow_requester, requested_at=now,
                              expires_at=now + policy.timeout_seconds, covers=covered,
                              covers_digest=approvals.covers_digest(covered), exchange_changes=changes,
                              round=round_, superseded_cards=superseded)
        r.state = AWAITING_APPROVAL
        r.event("approval_requested", round=round_, required=policy.required, approvers=list(policy.approvers),
                covers=r.approval.covers_digest, expires_at=r.approval.expires_at)

    release = ctx.store.update(release_id, ask)
    assert release.approval is not None
    ctx.reporter.refresh_root(release_id)
    ctx.reporter.approval_card(release_id)
    schedule_expiry(ctx, release_id, release.approval)
    return True


def schedule_expiry(ctx: WorkerContext, release_id: str, approval: Approval, attempt: int = 0) -> None:
    """One delayed job per round (and per re-check), run by whichever worker runs the RQ scheduler."""
    queue = Queue(PUBLISH_QUEUE, connection=ctx.redis, job_class=EdgebotJob, serializer=SERIALIZER)
    delay = max(0.0, approval.expires_at - time.time())
    queue.enqueue_in(
        timedelta(seconds=delay),
        f"{JOBS_MODULE}.expire_approval",
        args=(release_id,),
        job_id=job_id(release_id, f"expire-approval-{approval.round}-{attempt}"),
        result_ttl=ctx.config.settings.job_result_ttl,
        job_timeout=60,
    )


def recheck(ctx: WorkerContext, release: Release) -> bool:
    """Before publishing: True when the quorum covers exactly what the record holds now.

    False when something changed since the approval: a new round was asked for and nothing may be published.
    """
    policy = ctx.config.approval_policy(org=release.org, service=release.service, registry=release.registry)
    if release.dry_run or (not policy.needed and release.approval is None):
        return True
    approval = release.approval
    if approval is None or approval.quorum_at is None or len(approval.approvals()) < approval.required:
        raise StepFailed("publish refused: this release has no approval (the approval policy asks for "
                         f"{policy.required}); it must be approved in its thread first")
    now_covered = approvals.covers(release, targets(ctx, release))
    if approvals.covers_digest(now_covered) == approval.covers_digest:
        return True
    log.warning("release %s changed since it was approved; asking again", release.release_id)

    def note(r: Release) -> None:
        r.notes.append(approval_messages.asked_again(r))
        r.event("approval_invalidated", covers=approval.covers_digest, now=approvals.covers_digest(now_covered))

    ctx.store.update(release.release_id, note)
    request(ctx, release.release_id)
    return False


def expire(ctx: WorkerContext, release_id: str) -> None:
    """End a release whose approval request ran out; re-schedule itself if the request was renewed."""
    release = ctx.store.get(release_id)
    if release is None or release.is_final or release.state != AWAITING_APPROVAL or release.approval is None:
        return
    if time.time() < release.approval.expires_at - EARLY_TOLERANCE:  # the scheduler ran it a little early
        schedule_expiry(ctx, release_id, release.approval, attempt=int(time.time()))
        return
    ended: list[bool] = []

    def mutate(r: Release) -> None:
        ended.clear()
        if (r.is_final or r.state != AWAITING_APPROVAL or r.approval is None
                or time.time() < r.approval.expires_at - EARLY_TOLERANCE):
            return
        approvals.mark_expired(r)
        ended.append(True)

    ctx.store.update(release_id, mutate)
    if ended:
        ctx.reporter.approval_card(release_id)
        ctx.reporter.summary(release_id)


def expire_rollback(ctx: WorkerContext, release_id: str) -> None:
    """Close a rollback request nobody approved in time (scheduled by the bot when it recorded the request)."""
    closed: list[bool] = []

    def mutate(r: Release) -> None:
        closed.clear()
        request = r.rollback_request
        if request is None or request.status != "open" or time.time() < request.expires_at - EARLY_TOLERANCE:
            return
        request.status = "expired"
        r.event("rollback_request_expired", approvals=len(request.approvals()), required=request.required)
        closed.append(True)

    if ctx.store.get(release_id) is None:
        return
    ctx.store.update(release_id, mutate)
    if closed:
        ctx.reporter.rollback_card(release_id)
