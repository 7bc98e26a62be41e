"""The steps of a release as RQ jobs: the only module that knows them all, and the one way to enqueue one.

Shared by the bot (which enqueues a release's first step, the publish at quorum, a rollback) and the workers (which
run the steps and enqueue the next). Every enqueue goes through :func:`enqueue_step`, which knows each step's job
function, queue, job id, timeout and retry rule; passing ``pipe`` adds the job to the caller's MULTI (the outbox:
``ReleaseStore.update(…, then=…)``), so the record write that decides "move on" and the job that moves on happen
together or not at all.

Job ids allow only ``[A-Za-z0-9_-]`` and are deterministic, from the release id, the step's slug and the arguments
that tell two jobs of the same step apart::

    r-7f3a9c-prepare                 r-7f3a9c-build-arch-amd64         r-7f3a9c-sign-release
    r-7f3a9c-publish-release         r-7f3a9c-publish-release-2        (approval round 2)
    r-7f3a9c-start-rollout           r-7f3a9c-rollout-poll-0-3         (stage 0, poll 3)
    r-7f3a9c-rollback                r-7f3a9c-expire-approval-1-0      r-7f3a9c-expire-rollback-1765000000
    r-7f3a9c-deploy-check            r-7f3a9c-deploy-release           r-7f3a9c-deploy-release-2
    r-7f3a9c-build-arch-amd64-a2     (a step resumed by the reaper: attempt 2)
    r-7f3a9c-build-report-amd64-3    (build report 3 of amd64, applied by a publish worker)

RQ imports whatever function a job names. A job in Redis written by anyone who can reach Redis could name
``os.system``; :class:`EdgebotJob` refuses every function (and callback) outside the steps below before importing
anything, and each queue runs only its own steps (:func:`allowed_on`). All jobs use RQ's JSON serializer, so loading
a job never runs code (pickle would). Job payloads carry ids only (release id, arch, round, stage): never a secret.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from rq import Queue
from rq.job import Job, Retry
from rq.serializers import JSONSerializer

from edgebot.redis_acl import BUILD_REPORTS_QUEUE
from edgebot.settings import Settings

JOBS_MODULE = "workers.jobs"
"""Where the job functions live (the workers' entry points)."""

PUBLISH_QUEUE = "edgebot-publish"
"""Source resolution, signing, Exchange publish, rollout: the queue whose workers hold the signing key and the
Exchange credential."""

SERIALIZER = JSONSerializer


def build_queue(arch: str) -> str:
    """Build jobs are routed to workers of the matching arch (``edgebot worker --arch amd64``)."""
    return f"edgebot-build-{arch}"


@dataclass(frozen=True)
class StepKind:
    function: str
    """The job function's name in :data:`JOBS_MODULE`."""
    slug: str
    """The job id's part after the release id."""
    id_args: int = 0
    """How many of the job's arguments after the release id are part of its id (the rest are data)."""
    retried: bool = True
    """Transient failures (registry or Exchange 5xx, timeouts) are retried with backoff (``settings.step_retries``)."""
    short: bool = False
    """A bookkeeping job (an expiry): ``settings.short_job_timeout`` instead of ``settings.job_timeout``."""
    per_arch: bool = False
    """Runs on the build queue of its first argument's arch, not on the publish queue."""
    queue: str = ""
    """Runs on this queue (not the publish queue)."""


class Step(enum.Enum):
    """Every step of a release, in pipeline order."""

    PREPARE = StepKind("prepare_release", "prepare")
    BUILD = StepKind("build_arch", "build-arch", id_args=1, per_arch=True)
    SIGN = StepKind("sign_release", "sign-release")
    EXPIRE_APPROVAL = StepKind("expire_approval", "expire-approval", retried=False, short=True)
    PUBLISH = StepKind("publish_release", "publish-release", id_args=1)
    START_ROLLOUT = StepKind("start_rollout", "start-rollout")
    POLL_ROLLOUT = StepKind("poll_rollout", "rollout-poll", id_args=2)
    ROLLBACK = StepKind("rollback_release", "rollback")
    EXPIRE_ROLLBACK = StepKind("expire_rollback_request", "expire-rollback", retried=False, short=True)
    CHECK_DEPLOY = StepKind("check_deploy", "deploy-check")
    """`/edge deploy`: read the version's services from the Exchange and verify them (no build), then the gate."""
    DEPLOY = StepKind("deploy_release", "deploy-release", id_args=1)
    """A checked (and approved) deploy, per approval round like publish: verify again, then start the rollout."""
    CHECK_DOCKAUTHS = StepKind("check_dockauths", "dockauth-check", retried=False, short=True)
    """Not a release's step: the scheduled check of the dockauths of deployed versions (``workers/dockauths.py``);
    its first argument is :data:`DOCKAUTH_CHECK_OWNER`, its tag the run's slot."""
    APPLY_BUILD_REPORT = StepKind("apply_build_report", "build-report", id_args=2, queue=BUILD_REPORTS_QUEUE)
    """A build worker's progress (arch, report number), applied to the record by a publish worker."""
    VERIFY = StepKind("verify_version", "verify", retried=False, short=True)
    """`/edge verify`: not a step of a release; its first argument is a verify id (``v-…``, from the command and the
    minute: the same command twice in a minute is one job), then service, version, org, team, channel."""

    @property
    def kind(self) -> StepKind:
        return self.value  # type: ignore[no-any-return]

    @property
    def function(self) -> str:
        return f"{JOBS_MODULE}.{self.kind.function}"

    def queue_name(self, args: tuple[str, ...]) -> str:
        if self.kind.queue:
            return self.kind.queue
        return build_queue(args[0]) if self.kind.per_arch else PUBLISH_QUEUE

    def job_id(self, release_id: str, *args: str, tag: str = "") -> str:
        """The deterministic id of this step's job (``tag`` tells apart jobs of the same step scheduled again)."""
        return "-".join(p for p in (release_id, self.kind.slug, *args[: self.kind.id_args], tag) if p)


ALLOWED_FUNCTIONS = frozenset(step.function for step in Step)
DOCKAUTH_CHECK_OWNER = "edgebot"
"""The "release id" of the scheduled dockauth check's jobs (``edgebot-dockauth-check-<slot>``)."""


def allowed_on(queue_name: str) -> frozenset[str]:
    """The job functions a job taken from ``queue_name`` may run: a build queue runs builds only, the reports queue
    applies reports only, the publish queue runs everything else. Whoever can push onto a queue (a build worker can
    push onto the build queues and the reports queue, see edgebot.redis_acl) can never make a worker of that queue
    run a step of another, such as a publish."""
    if queue_name == BUILD_REPORTS_QUEUE:
        steps = [Step.APPLY_BUILD_REPORT]
    elif queue_name.startswith(build_queue("")):
        steps = [Step.BUILD]
    elif queue_name == PUBLISH_QUEUE:
        steps = [s for s in Step if not s.kind.per_arch and not s.kind.queue]
    else:
        steps = []
    return frozenset(s.function for s in steps)


def publish_args(round_: int) -> tuple[str, ...]:
    """The publish job of approval round 1 (or of a release that needs none) has no round in its id."""
    return () if round_ <= 1 else (str(round_),)


def retry_policy(settings: Settings) -> Retry | None:
    """Exponential backoff with jitter for steps that failed transiently: base * 2**n, each ±25 %."""
    if settings.step_retries <= 0:
        return None
    intervals = [
        max(1, round(settings.retry_backoff * (2**n) * random.uniform(0.75, 1.25)))
        for n in range(settings.step_retries)
    ]
    return Retry(max=settings.step_retries, interval=intervals)


def enqueue_step(connection: Any, settings: Settings, step: Step, release_id: str, *args: str, pipe: Any = None,
                 delay: float | None = None, tag: str = "", job_id: str = "", at_front: bool = False,
                 unique: bool = False) -> str:
    """Enqueue ``step`` of ``release_id`` and return its job id.

    ``pipe``: add the job to that pipeline's MULTI instead of writing it now. ``delay``: seconds until the job runs
    (RQ's scheduler enqueues it then). ``job_id``: an explicit id (a resumed attempt's). ``unique``: refuse with
    ``rq.exceptions.DuplicateJobError`` when a job of that id exists (only without ``pipe``; with one, the caller's
    transaction decides that the step moves on exactly once).
    """
    kind = step.kind
    queue = Queue(step.queue_name(args), connection=connection, job_class=EdgebotJob, serializer=SERIALIZER)
    jid = job_id or step.job_id(release_id, *args, tag=tag)
    options: dict[str, Any] = {
        "args": (release_id, *args),
        "job_id": jid,
        "result_ttl": settings.job_result_ttl,
        "retry": retry_policy(settings) if kind.retried else None,
        "description": f"{kind.slug} {release_id} {' '.join(args)}".strip(),
        "pipeline": pipe,
    }
    timeout = settings.short_job_timeout if kind.short else settings.job_timeout
    if delay is not None:
        queue.enqueue_in(timedelta(seconds=max(0.0, delay)), step.function, job_timeout=timeout, unique=unique,
                         **options)
    else:
        queue.enqueue_call(step.function, timeout=timeout, at_front=at_front, unique=unique, **options)
    return jid


class RefusedJob(RuntimeError):
    pass


def check_queue(job: Job, queue_name: str) -> None:
    """Raise :class:`RefusedJob` unless ``job`` may run off ``queue_name`` (:func:`allowed_on`). Checked against the
    queue the worker took it from, never the job hash's own ``origin`` (whoever wrote the hash chose that)."""
    if job.func_name not in allowed_on(queue_name):
        raise RefusedJob(f"refusing to run job {job.id} from queue {queue_name}: {job.func_name!r} does not run "
                         "on that queue")


class EdgebotJob(Job):
    """A Job that only ever resolves edgebot's own job functions."""

    @property
    def func(self) -> Any:
        name = self.func_name
        if name not in ALLOWED_FUNCTIONS or self.instance is not None:
            raise RefusedJob(f"refusing to run job {self.id}: {name!r} is not an edgebot job function")
        queue_name = getattr(self, "dequeued_from", None)  # set by the worker that took it (workers.worker)
        if queue_name is not None:
            check_queue(self, queue_name)
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
