"""RQ entry points: the only functions a worker will run, one per step of edgebot.jobs.Step.

Arguments are ids only. Each wrapper claims its step in the step ledger (edgebot.steps), which grants the step's
lease (edgebot.lease) atomically; a keeper thread renews the lease while the step runs, and every record write and
external side effect of the step is fenced by it. A job that cannot claim its step — another live process holds the
lease, a newer attempt superseded it, or it already finished — does nothing. A step that returns is marked done in
the ledger; one that fails turns into a failed release, except a transient failure with retries left, which is
re-raised so RQ retries the job (the ledger entry stays running, so the same job id claims it again).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable

from rq import get_current_job

from edgebot import logs
from edgebot.errors import LeaseLost, ReleaseEnded, StepFailed
from edgebot.lease import LeaseKeeper
from edgebot.steps import StepLedger
from workers import build_report, context, deploy, dockauths, gate, pipeline, progress, rollout_watch, unpublish

log = logging.getLogger(__name__)


def prepare_release(release_id: str) -> None:
    _run("prepare", pipeline.prepare, release_id)


def build_arch(release_id: str, arch: str) -> None:
    """On a build worker: reports through Redis (workers.build_report), its failure too."""
    _run(f"build-{arch}", lambda ctx, rid: pipeline.build(ctx, rid, arch), release_id,
         fail=build_report.fail_build(arch))


def apply_build_report(release_id: str, arch: str, seq: str) -> None:
    """On a publish worker: report ``seq`` of the arch's build (each report is a step of its own; a later apply
    finds an earlier report already superseded)."""
    _run("apply", lambda ctx, rid: pipeline.apply_build_report(ctx, rid, arch), release_id, per_job=True)


def sign_release(release_id: str) -> None:
    _run("sign", pipeline.sign, release_id)


def publish_release(release_id: str, round_: str = "1") -> None:
    """Each approval round's publish is a step of its own (``publish``, ``publish-round-2`` …): a round that found the
    release changed ends, and the next round's quorum enqueues the next round's publish."""
    number = int(round_)
    _run(_publish_step(number), lambda ctx, rid: pipeline.publish(ctx, rid, number), release_id,
         fail=unpublish.publish_failed)  # no half publish: undo what this release created, say what is left


def _publish_step(round_: int) -> str:
    return "publish" if round_ <= 1 else f"publish-round-{round_}"


def expire_approval(release_id: str) -> None:
    """Scheduled when an approval is requested: ends the release if nobody approved it in time."""
    _run("expire", gate.expire, release_id, per_job=True)


def expire_rollback_request(release_id: str) -> None:
    """Scheduled by the bot with a rollback request that needs approval: closes it if nobody approved in time."""
    _run("expire-rollback", gate.expire_rollback, release_id, per_job=True, fail=_keep_release)


def start_rollout(release_id: str) -> None:
    _run("rollout", rollout_watch.start, release_id, fail=rollout_watch.abort)


def poll_rollout(release_id: str, stage: int, poll: int) -> None:
    _run(f"rollout-poll-{stage}-{poll}", lambda ctx, rid: rollout_watch.poll(ctx, rid, int(stage), int(poll)),
         release_id, fail=rollout_watch.abort)


def rollback_release(release_id: str, user_id: str) -> None:
    _run("rollback", lambda ctx, rid: rollout_watch.rollback(ctx, rid, user_id), release_id,
         fail=rollout_watch.rollback_failed, per_job=True)


def check_deploy(release_id: str) -> None:
    """`/edge deploy`: the version's services read from the Exchange and verified, then the approval gate."""
    _run("deploy-check", deploy.check, release_id)


def deploy_release(release_id: str, round_: str = "1") -> None:
    """A checked (and approved) deploy: verified again, then the rollout; one step per approval round."""
    number = int(round_)
    _run("deploy" if number <= 1 else f"deploy-round-{number}", lambda ctx, rid: deploy.go(ctx, rid, number),
         release_id)


def check_dockauths(owner: str) -> None:
    """The scheduled check of the dockauths of deployed versions (``workers/dockauths.py``); not a release's step:
    ``owner`` is ``edgebot.jobs.DOCKAUTH_CHECK_OWNER``. It schedules its next run itself."""
    dockauths.check(context.current())


Fail = Callable[[context.WorkerContext, str, str, "list[str] | None"], None]


def _keep_release(ctx: context.WorkerContext, release_id: str, message: str, detail: list[str] | None) -> None:
    """For jobs whose failure must not end the release (it already shipped): the log has it, nothing else."""
    log.error("release %s: %s", release_id, message)


def _run(name: str, step: Callable[[context.WorkerContext, str], None], release_id: str, *,
         fail: Fail = progress.fail, per_job: bool = False) -> None:
    """Claim step ``name`` of the release and run it under its lease. ``per_job``: every job of this kind is a step
    of its own (an expiry per approval round, a rollback each time one is asked), named after the job id."""
    ctx = context.current()
    job = get_current_job()
    if job is None:
        raise RuntimeError(f"{name} of {release_id} must run as an RQ job (it claims its step by job id)")
    if per_job:  # named after the job's base id: a resumed attempt (…-a2) continues the same step
        name = f"{name}-{re.sub(r'-a[0-9]+$', '', job.id).removeprefix(release_id + '-')}"
    logs.set_release(release_id)  # every log line of this job carries the release id
    ledger = StepLedger(ctx.redis, ctx.config.settings)
    claim = ledger.claim(release_id, name, job_id=job.id, function=job.func_name or "", args=[str(a) for a in job.args],
                         queue=job.origin, holder=f"{socket.gethostname()}:{os.getpid()}:{job.id}")
    if claim.lease is None:
        log.info("release %s: %s not run by job %s: %s (job %s, attempt %s)", release_id, name, job.id,
                 claim.outcome, claim.entry.job_id, claim.entry.attempt)
        return
    settings = ctx.config.settings
    finished = retrying = False
    keeper = LeaseKeeper(claim.lease, settings.lease_renew_interval)
    with keeper as lease:
        ctx.lease = lease
        try:
            if claim.entry.attempt > 1:
                _say_resumed(ctx, release_id, name, claim.entry.attempt)
            step(ctx, release_id)
            finished = True
        except LeaseLost as lost:
            log.warning("release %s: %s lost its lease; stopping without writing (%s)", release_id, name, lost)
        except ReleaseEnded as ended:
            log.info("release %s: %s stopped: %s", release_id, name, ended)
            finished = True
        except StepFailed as exc:
            if exc.transient and (job.retries_left or 0) > 0:
                log.warning("release %s: %s failed transiently (%s); RQ will retry", release_id, name, exc)
                retrying = True
                raise
            log.info("release %s: %s failed: %s", release_id, name, exc)
            finished = _fail(ctx, fail, release_id, str(exc), exc.detail)
        except Exception:
            log.exception("release %s: %s crashed", release_id, name)
            finished = _fail(ctx, fail, release_id, f"{name} failed unexpectedly; the worker log has the details")
        finally:
            if finished:
                keeper.stop()  # before the lease is freed, so no renewal finds it gone and logs "lost"
                if not ledger.complete(release_id, name, lease):
                    log.warning("release %s: %s finished after its lease was lost", release_id, name)
            ctx.lease = None
            if ctx.reports_to_slack and not ctx.reporter.flush():
                log.warning("release %s: thread updates still pending after %s", release_id, name)
            keeper.stop()
            if retrying:
                ledger.release_for_retry(release_id, name, lease)
            else:
                lease.release()
            logs.set_release(None)
            ctx.release_vault_login()


def _fail(ctx: context.WorkerContext, fail: Fail, release_id: str, message: str,
          detail: list[str] | None = None) -> bool:
    try:
        fail(ctx, release_id, message, detail)
    except LeaseLost:
        log.warning("release %s: lost the lease before recording the failure (%s)", release_id, message)
        return False
    return True


def _say_resumed(ctx: context.WorkerContext, release_id: str, step: str, attempt: int) -> None:
    """In the thread when the process can reach Slack; a build worker reports it (its apply job says it)."""
    if ctx.reports_to_slack:
        progress.say_resumed(ctx, release_id, step, attempt)
    elif step.startswith("build-"):
        build_report.write(ctx, release_id, step.removeprefix("build-"),
                           lambda report: setattr(report, "resumed", max(report.resumed, attempt)))


def verify_version(verify_id: str, service: str, version: str, org: str, team_id: str, channel_id: str) -> None:
    """`/edge verify` (issue 15): read the version back from the Exchange and post the report in the channel. It
    changes nothing, so it claims no step and holds no lease; the job id makes a repeated command one job."""
    from workers import verify_job

    verify_job.run(context.current(), verify_id, service, version, org, team_id, channel_id)
