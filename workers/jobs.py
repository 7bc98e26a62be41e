"""RQ entry points: the only functions a worker will run (see edgebot.rqjob.ALLOWED_FUNCTIONS).

Arguments are ids only. Each wrapper loads the worker context, runs one pipeline step and turns its failure into a
failed release — except a transient failure with retries left, which is re-raised so RQ retries the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rq import get_current_job

from edgebot import logs
from edgebot.errors import LeaseLost, ReleaseEnded, StepFailed
from workers import context, pipeline, rollout_watch

log = logging.getLogger(__name__)


def prepare_release(release_id: str) -> None:
    _run("prepare", pipeline.prepare, release_id)


def build_arch(release_id: str, arch: str) -> None:
    _run(f"build {arch}", lambda ctx, rid: pipeline.build(ctx, rid, arch), release_id)


def sign_release(release_id: str) -> None:
    _run("sign", pipeline.sign, release_id)


def publish_release(release_id: str) -> None:
    _run("publish", pipeline.publish, release_id)


def expire_approval(release_id: str) -> None:
    """Scheduled when an approval is requested: ends the release if nobody approved it in time."""
    from workers import gate

    _run("approval expiry", gate.expire, release_id)


def start_rollout(release_id: str) -> None:
    _run("rollout", rollout_watch.start, release_id, fail=rollout_watch.abort)


def poll_rollout(release_id: str, stage: int, poll: int) -> None:
    _run("rollout poll", lambda ctx, rid: rollout_watch.poll(ctx, rid, int(stage), int(poll)), release_id,
         fail=rollout_watch.abort)


Fail = Callable[[context.WorkerContext, str, str, "list[str] | None"], None]


def rollback_release(release_id: str, user_id: str) -> None:
    _run("rollback", lambda ctx, rid: rollout_watch.rollback(ctx, rid, user_id), release_id,
         fail=rollout_watch.rollback_failed)


def _run(name: str, step: Callable[[context.WorkerContext, str], None], release_id: str, *,
         fail: Fail = pipeline.fail) -> None:
    ctx = context.current()
    logs.set_release(release_id)  # every log line of this job carries the release id
    try:
        step(ctx, release_id)
    except LeaseLost:
        log.warning("release %s: %s lost its lease; stopping without writing", release_id, name)
    except ReleaseEnded as ended:
        log.info("release %s: %s stopped: %s", release_id, name, ended)
    except StepFailed as exc:
        job = get_current_job()
        if exc.transient and job is not None and (job.retries_left or 0) > 0:
            log.warning("release %s: %s failed transiently (%s); RQ will retry", release_id, name, exc)
            raise
        log.info("release %s: %s failed: %s", release_id, name, exc)
        fail(ctx, release_id, str(exc), exc.detail)
    except Exception:
        log.exception("release %s: %s crashed", release_id, name)
        fail(ctx, release_id, f"{name} failed unexpectedly; the worker log has the details", None)
    finally:
        if not ctx.reporter.flush():
            log.warning("release %s: thread updates still pending after %s", release_id, name)
        logs.set_release(None)
        ctx.release_vault_login()
