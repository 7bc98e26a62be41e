"""The approval gate between sign and publish (the worker's side; the bot counts the clicks, see bot/approve.py).

- :func:`request` runs when every arch is signed and the release's approval policy needs approvals: it records what
  the approval covers (deployment hashes, digests, fingerprints, target policies) and what publishing will do in the
  Exchange, schedules the expiry in the same MULTI, and posts the card in the thread. A deploy (workers/deploy.py)
  asks through it too, once its versions were verified in the Exchange (``approvals.deploy_covers``).
- :func:`recheck` runs first thing in publish: the quorum must be there and cover exactly what the record now holds;
  if anything differs, nothing is published and the next round of approval is asked for, in one write (the note,
  the new round, its expiry). That round's quorum enqueues that round's publish (bot/approve.py).
- :func:`expire` is the scheduled job that ends a request nobody answered in time (no incoming request needed; any
  worker running the RQ scheduler runs it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from edgebot import approval_messages, approvals
from edgebot.errors import StepFailed
from edgebot.jobs import Step, enqueue_step
from edgebot.release import AWAITING_APPROVAL, Approval, Release, RequestStatus
from workers import trust
from workers.context import WorkerContext
from workers.exchange import service_id
from workers.rollout import stages_of
from workers.service_policy import same_policy

log = logging.getLogger(__name__)


def targets(ctx: WorkerContext, release: Release) -> list[str]:
    """The deployment policies and patterns the release will move (``policy:name``), from the catalog or --policy."""
    service = ctx.config.services[release.service]
    return [f"{t.kind}:{t.name}" for stage in stages_of(service, release) for t in stage.targets]


def exchange_changes(ctx: WorkerContext, release: Release) -> dict[str, str]:
    """Per arch, what publishing will do in the Exchange. Refuses early what publish would refuse anyway."""
    changes: dict[str, str] = {}
    client = ctx.exchange(release.org)
    try:
        for arch in release.arches:
            res = release.result(arch)
            sid = service_id(res.definition["url"], release.version, arch)
            live = client.get_service(release.org, sid)
            if live is None:
                changes[arch] = f"new service `{sid}`"
            elif (live.get("deployment") == res.deployment
                  and str(live.get("clusterDeployment") or "") == res.cluster_deployment):
                changes[arch] = f"no change: `{sid}` is already published with this deployment"
                if res.service_policy and not same_policy(client.get_service_policy(release.org, sid),
                                                          res.service_policy):
                    changes[arch] = (f"`{sid}` is already published with this deployment; *its service policy "
                                     "changes* (below)")
            elif release.overwrite:
                changes[arch] = f":warning: overwrites the published `{sid}` (--overwrite)"
            else:
                raise StepFailed(f"{release.org}/{sid} is already published with a different deployment. Nodes "
                                 "running it would not re-pull it: publish a new version, or use --overwrite to "
                                 "replace it.")
    finally:
        client.close()
    return changes


def request(ctx: WorkerContext, release_id: str, *, invalidated: str = "") -> None:
    """Ask for approval under the release's policy: record the request (a new round when one existed), schedule its
    expiry in the same MULTI, post the card. Asked again with the same coverage (a re-run sign), it changes nothing.

    ``invalidated``: the digest of the approval that publish found outdated (noted in the same write).
    """
    release = ctx.store.require(release_id)
    policy = ctx.config.approval_policy(org=release.org, service=release.service, registry=release.registry)
    changes = {} if release.is_deploy else exchange_changes(ctx, release)  # a deploy changes no service
    covered = approvals.covers_of(release, targets(ctx, release))
    digest = approvals.covers_digest(covered)
    now = time.time()

    def ask(r: Release) -> Approval | None:
        if r.approval is not None and r.approval.covers_digest == digest:
            return None  # a retried sign step: the request (and its expiry) already exist
        if invalidated:
            r.notes.append(approval_messages.asked_again(r))
            r.event("approval_invalidated", covers=invalidated, now=digest)
        round_ = 1
        superseded: list[str] = []
        if r.approval is not None:
            r.approval_history.append(r.approval)
            round_ = r.approval.round + 1
            superseded = [*r.approval.superseded_cards, *([r.approval.card_ts] if r.approval.card_ts else [])]
        r.approval = Approval(required=policy.required, approvers=list(policy.approvers),
                              allow_requester=policy.allow_requester, requested_at=now,
                              expires_at=now + policy.timeout_seconds, covers=covered, covers_digest=digest,
                              exchange_changes=changes, round=round_, superseded_cards=superseded)
        r.state = AWAITING_APPROVAL
        r.event("approval_requested", round=round_, required=policy.required, approvers=list(policy.approvers),
                covers=digest, expires_at=r.approval.expires_at)
        return r.approval

    def schedule(r: Release, asked: Approval | None, pipe: Any) -> None:
        if asked is not None:
            schedule_expiry(ctx, release_id, asked, pipe=pipe)

    ctx.store.update(release_id, ask, active=True, then=schedule)
    ctx.reporter.refresh_root(release_id)
    ctx.reporter.approval_card(release_id)


def schedule_expiry(ctx: WorkerContext, release_id: str, approval: Approval, *, attempt: int = 0,
                    pipe: Any = None) -> None:
    """One delayed job per round (and per re-check), run by whichever worker runs the RQ scheduler."""
    enqueue_step(ctx.redis, ctx.config.settings, Step.EXPIRE_APPROVAL, release_id, pipe=pipe,
                 delay=approval.expires_at - time.time(), tag=f"{approval.round}-{attempt}")


def recheck(ctx: WorkerContext, release: Release) -> bool:
    """Before publishing: True when the release verifies (workers.trust) and, where the policy of this worker's config
    asks for approval, sealed approvals of enough approvers cover exactly what it would publish now.

    False when something changed since the approval: the next round was asked for and nothing may be published.
    Raises SecurityCheckFailed when the record holds what this worker cannot verify (a forged quorum, say).
    """
    sealer = ctx.sealer()
    if release.dry_run:
        trust.check_intake(sealer, release)
        return True
    trust.check_release(sealer, release)
    policy = ctx.config.approval_policy(org=release.org, service=release.service, registry=release.registry)
    if not policy.needed:  # under this worker's config, nothing to verify (a dry run, or a policy relaxed since)
        return True
    approval = release.approval
    if approval is None or approval.quorum_at is None:
        raise StepFailed("publish refused: this release has no approval (the approval policy asks for "
                         f"{policy.required}); it must be approved in its thread first")
    digest = approvals.covers_digest(approvals.covers(release, targets(ctx, release)))
    if digest != approval.covers_digest:
        log.warning("release %s changed since it was approved; asking again", release.release_id)
        request(ctx, release.release_id, invalidated=approval.covers_digest)
        return False
    trust.check_approvals(sealer, release, approval, policy, digest)
    return True


def expire(ctx: WorkerContext, release_id: str) -> None:
    """End a release whose approval request ran out; re-schedule itself if the request was renewed."""
    release = ctx.store.get(release_id)
    if release is None or release.is_final or release.state != AWAITING_APPROVAL or release.approval is None:
        return
    early = ctx.config.settings.scheduler_early_tolerance
    if time.time() < release.approval.expires_at - early:  # the scheduler ran it a little early
        schedule_expiry(ctx, release_id, release.approval, attempt=int(time.time()))
        return

    def mutate(r: Release) -> bool:
        if (r.is_final or r.state != AWAITING_APPROVAL or r.approval is None
                or time.time() < r.approval.expires_at - early):
            return False
        approvals.mark_expired(r)
        return True

    if ctx.store.update(release_id, mutate).decided:
        ctx.reporter.approval_card(release_id)
        ctx.reporter.summary(release_id)


def expire_rollback(ctx: WorkerContext, release_id: str) -> None:
    """Close a rollback request nobody approved in time (scheduled by the bot when it recorded the request)."""
    early = ctx.config.settings.scheduler_early_tolerance

    def mutate(r: Release) -> bool:
        request = r.rollback_request
        if request is None or request.status != RequestStatus.OPEN or time.time() < request.expires_at - early:
            return False
        request.status = RequestStatus.EXPIRED
        r.event("rollback_request_expired", approvals=len(request.approvals()), required=request.required)
        return True

    if ctx.store.get(release_id) is None:
        return
    if ctx.store.update(release_id, mutate).decided:
        ctx.reporter.rollback_card(release_id)
