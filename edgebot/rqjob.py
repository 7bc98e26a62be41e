"""RQ plumbing shared by the bot (which enqueues) and the workers (which run): queues, job ids, a safe job class.

RQ imports whatever function a job names. A job in Redis written by anyone who can reach Redis could name
``os.system``; :class:`EdgebotJob` refuses every function (and callback) outside edgebot's own job module before
importing anything, and all jobs use RQ's JSON serializer, so loading a job never runs code (pickle would).

Job payloads carry ids only (release id, arch): never a secret.
"""

from __future__ import annotations

import random
from typing import Any

from rq.job import Job, Retry
from rq.serializers import JSONSerializer

from edgebot.settings import Settings

JOBS_MODULE = "workers.jobs"
ALLOWED_FUNCTIONS = frozenset(
    f"{JOBS_MODULE}.{name}" for name in ("prepare_release", "build_arch", "sign_release", "publish_release",
                                           "expire_approval", "start_rollout", "poll_rollout", "rollback_release",
                                           "expire_rollback_request")
)

PUBLISH_QUEUE = "edgebot-publish"
"""Source resolution, signing and Exchange publish: the queue whose workers hold the signing key and Exchange creds."""


def build_queue(arch: str) -> str:
    """Build jobs are routed to workers of the matching arch (``edgebot worker --arch amd64``)."""
    return f"edgebot-build-{arch}"


def job_id(release_id: str, step: str, arch: str = "") -> str:
    """Deterministic ids (``r-7f3a9c-build-amd64``) so enqueuing the same step twice is refused by RQ."""
    return "-".join(p for p in (release_id, step, arch) if p)


class RefusedJob(RuntimeError):
    pass


class EdgebotJob(Job):
    """A Job that only ever resolves edgebot's own job functions."""

    @property
    def func(self) -> Any:
        name = self.func_name
        if name not in ALLOWED_FUNCTIONS or self.instance is not None:
            raise RefusedJob(f"refusing to run job {self.id}: {name!r} is not an edgebot job function")
        return super().func

    # edgebot jobs use no callbacks; never import one a raw job names (returning None makes RQ skip it).
    @property
    def success_callback(self) -> Any:
        return None

    @property
    def failure_callback(self) -> Any:
        return None

    @property
    def stopped_callback(self) -> Any:
        return None


SERIALIZER = JSONSerializer


def retry_policy(settings: Settings) -> Retry | None:
    """Exponential backoff with jitter for steps that failed transiently: base * 2**n, each ±25 %."""
    if settings.step_retries <= 0:
        return None
    intervals = [
        max(1, round(settings.retry_backoff * (2**n) * random.uniform(0.75, 1.25)))
        for n in range(settings.step_retries)
    ]
    return Retry(max=settings.step_retries, interval=intervals)


def enqueue_in_transaction(connection: Any, pipe: Any, settings: Settings, function: str, release_id: str, step: str,
                           *, description: str, retry: bool = False, extra_args: tuple[str, ...] = ()) -> None:
    """Add the job ``workers.jobs.<function>(release_id, *extra_args)`` on the publish queue to ``pipe``'s MULTI.

    Used by the bot where a record write and the job it starts must happen together or not at all (a new release and
    its first step; the approval that completes the quorum and the publish step).
    """
    from rq import Queue

    queue = Queue(PUBLISH_QUEUE, connection=connection, job_class=EdgebotJob, serializer=SERIALIZER)
    queue.enqueue_call(
        f"{JOBS_MODULE}.{function}",
        args=(release_id, *extra_args),
        job_id=job_id(release_id, step),
        timeout=settings.job_timeout,
        result_ttl=settings.job_result_ttl,
        retry=retry_policy(settings) if retry else None,
        description=description,
        pipeline=pipe,
    )
