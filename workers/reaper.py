"""Crash recovery that does not wait for RQ: resume steps whose holder died, take over a dead scheduler.

RQ 3.0 on its own notices a dead worker's job only when the job's execution heartbeat expires (the worker's
``job_monitoring_interval`` + 60 s, i.e. 90 s by default) and some worker's maintenance pass (every 10 minutes by
default) runs ``StartedJobRegistry.cleanup``, which then fails the job with AbandonedJobError or retries it under the
*same* id. A dead scheduler's lock lives ``interval + 60`` s and is only re-acquired at a maintenance pass.

edgebot's reaper runs in every worker's loop, every ``settings.reaper_interval`` seconds (workers.worker):

* :func:`reap`: for each release in the step ledger's in-flight set, every step still ``running`` whose lease has
  expired (its holder died: work horse and worker SIGKILLed, host gone) and whose job is not waiting in a queue
  (queued, scheduled for a retry, deferred) is re-enqueued as a new attempt, atomically with the ledger entry
  naming the new job id (WATCH on the entry and the lease). Several workers may reap at once; one wins, the others'
  transactions abort. The old job, if RQ ever re-runs it, finds itself superseded and does nothing.
* A step that keeps dying is not resumed for ever: once its attempt ``settings.step_max_attempts`` has lost its holder
  too, the reaper fails the release with a message naming the step and the attempts ("the build of amd64 was
  interrupted 3 times: …") and marks the ledger entry done, in the same MULTI as the release write (WATCH on the
  record, the entry and the lease), then repaints the thread when this process can reach Slack.
* :func:`break_dead_scheduler_locks`: a scheduler lock whose holder has not heartbeat for
  ``settings.scheduler_stale_after`` seconds is deleted (compare-and-delete), so this worker's scheduler can take it
  at once instead of after RQ's 61-second lock TTL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, SCHEDULER_LOCKING_KEY_TEMPLATE
from rq.utils import utcparse

from edgebot.errors import LeaseLost
from edgebot.jobs import SERIALIZER, EdgebotJob, Step, enqueue_step
from edgebot.lease import Lease, lease_key
from edgebot.release import Release
from edgebot.settings import Settings
from edgebot.steps import LedgerStatus, StepEntry, StepLedger, is_build_step
from edgebot.store import ReleaseNotFound, ReleaseStore

log = logging.getLogger(__name__)

# KEYS[1] scheduler lock; ARGV[1] the stale holder -> 1 deleted
BREAK_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


Report = Callable[[str, list[str]], None]
"""``report(release_id, failed_stages)``: repaint the thread of a release the reaper failed."""
Undo = Callable[[str], None]
"""``undo(release_id)``: after giving up on a publish step, remove what the release created in the Exchange."""


def reap(connection: redis.Redis, settings: Settings, report: Report | None = None,
         undo: Undo | None = None) -> list[str]:
    """Resume every step whose holder died; return the new job ids. A step whose last allowed attempt
    (``settings.step_max_attempts``) died too fails its release instead; for a publish step ``undo`` (default:
    ``workers.unpublish`` with this worker's context) then removes what the release created in the Exchange, as a
    publish job's own failure does; ``report`` (default: this worker's thread reporter) repaints the thread."""
    store = ReleaseStore(connection, settings)
    ledger = StepLedger(connection, settings)
    resumed: list[str] = []
    for release_id in ledger.inflight():
        release = store.get(release_id)
        if release is None or release.is_final:
            ledger.forget_if_idle(release_id, release_final=True)
            continue
        entries = ledger.entries(release_id)
        if not any(e.status == LedgerStatus.RUNNING for e in entries.values()):
            ledger.forget_if_idle(release_id, release_final=False)
            continue
        for entry in entries.values():
            if entry.status != LedgerStatus.RUNNING or ledger.lease_holder(release_id, entry.step) is not None:
                continue
            if entry.released_at and time.time() - entry.released_at < settings.lease_ttl:
                continue  # handed back for an RQ retry a moment ago: RQ is scheduling it
            if _waiting_in_queue(connection, entry.job_id):
                continue
            if entry.attempt >= settings.step_max_attempts:
                failed = _give_up(store, ledger, release_id, entry)
                if failed is not None:
                    log.error("release %s: %s", release_id, give_up_message(entry.step, entry.attempt))
                    if _is_publish(entry.step):  # no half publish, also when its workers kept dying
                        (undo or _undo_with_worker_context)(release_id)
                    (report or _report_with_worker_context)(release_id, failed)
                continue
            new_id = _resume(connection, ledger, settings, release_id, entry)
            if new_id is None:
                continue
            resumed.append(new_id)
            log.warning("release %s: %s lost its holder (job %s); resumed as %s", release_id, entry.step,
                        entry.job_id, new_id)
            _record_resume(store, release_id, entry)
    return resumed


def _waiting_in_queue(connection: redis.Redis, job_id: str) -> bool:
    """Is the job really waiting to run — its status *and* its place (queue, scheduled or deferred registry)?

    RQ 3.0's ``Job.retry`` writes the SCHEDULED status at once but adds the job to the ScheduledJobRegistry in the
    caller's pipeline: a worker SIGKILLed between the two leaves a job that says "scheduled" and that no scheduler
    will ever run. Trusting the status alone would leave such a step stuck for good.
    """
    try:
        job = EdgebotJob.fetch(job_id, connection=connection, serializer=SERIALIZER)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    queue = Queue(job.origin, connection=connection, job_class=EdgebotJob, serializer=SERIALIZER)
    if status == JobStatus.QUEUED:
        return any(connection.lpos(key, job_id) is not None for key in (queue.key, queue.intermediate_queue_key))
    if status == JobStatus.SCHEDULED:
        return job_id in ScheduledJobRegistry(queue=queue)
    if status == JobStatus.DEFERRED:
        return job_id in DeferredJobRegistry(queue=queue)
    return False


def _resume(connection: redis.Redis, ledger: StepLedger, settings: Settings, release_id: str,
            entry: StepEntry) -> str | None:
    steps_key = ledger.steps_key(release_id, entry.step)
    lease = lease_key(settings.key_prefix, release_id, entry.step)
    step = next((s for s in Step if s.function == entry.function), None)
    if step is None or not entry.args or entry.args[0] != release_id or not _consistent(step, entry):
        log.error("release %s: step %s names job function %r with args %r, which is not that edgebot step (a "
                  "forged ledger entry?); not resumed", release_id, entry.step, entry.function, entry.args)
        return None
    with connection.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(steps_key, lease)
            raw = pipe.hget(steps_key, entry.step)
            if raw is None or pipe.exists(lease):
                return None
            current = StepEntry.from_json(raw)  # type: ignore[arg-type]
            if current.status != LedgerStatus.RUNNING or current.job_id != entry.job_id:
                return None
            nxt = dataclasses.replace(current, job_id=current.next_attempt_id(), attempt=current.attempt + 1)
            pipe.multi()
            pipe.hset(steps_key, entry.step, nxt.to_json())
            # at the front: it was already running, so it goes before steps that have not started yet
            enqueue_step(connection, settings, step, release_id, *nxt.args[1:], pipe=pipe, job_id=nxt.job_id,
                         at_front=True)
            pipe.execute()
            return nxt.job_id
        except redis.WatchError:
            return None


def _consistent(step: Step, entry: StepEntry) -> bool:
    """A build step's entry (which a build worker's Redis user can write) resumes only its own build: the entry of
    ``build-<arch>`` must name the build function with that arch, and only a build entry may name it."""
    if is_build_step(entry.step) or step is Step.BUILD:
        return step is Step.BUILD and entry.args[1:] == [entry.step.removeprefix("build-")]
    return True


def step_words(step: str) -> str:
    """A ledger step name as the thread says it: ``build-amd64`` → "the build of amd64"."""
    kind, _, rest = step.partition("-")
    if kind == "build" and rest:
        return f"the build of {rest}"
    if step == "prepare":
        return "the source step"
    if step == "sign":
        return "signing"
    if kind == "publish":
        return "the publish" + (f" of approval round {step.rsplit('-', 1)[-1]}" if rest else "")
    if step == "rollout":
        return "the start of the rollout"
    if step.startswith("rollout-poll"):
        return "the rollout watch"
    if step.startswith("apply-build-report-"):
        return "applying the build report of " + step.removeprefix("apply-build-report-").rsplit("-", 1)[0]
    return f"the {kind} step"


def give_up_message(step: str, attempts: int) -> str:
    return (f"{step_words(step)} was interrupted {attempts} times: each attempt's worker stopped before it finished "
            "(killed, out of memory, or its host lost), so edgebot stopped resuming it (setting step_max_attempts). "
            "Check that worker's log and its limits (build_memory for a build), then publish again.")


class _EntryUnchanged(Lease):
    """A fence for ``ReleaseStore.update``: holds while the ledger entry is still the one the reaper judged (running,
    under the same job id) and nobody holds its lease; the entry and the lease are watched in the update's
    transaction, so a holder or another reaper that moves first makes this write retry and then give up."""

    def __init__(self, ledger: StepLedger, release_id: str, entry: StepEntry) -> None:
        super().__init__(ledger.redis, lease_key(ledger.prefix, release_id, entry.step), 0, "reaper", 0.0)
        self.steps_key = ledger.steps_key(release_id, entry.step)
        self.entry = entry
        self.current: StepEntry | None = None

    def verify_watched(self, pipe: Any) -> None:
        pipe.watch(self.steps_key, self.key)
        raw = pipe.hget(self.steps_key, self.entry.step)
        current = StepEntry.from_json(raw) if raw is not None else None
        if (current is None or pipe.exists(self.key) or current.status != LedgerStatus.RUNNING
                or current.job_id != self.entry.job_id):
            raise LeaseLost(f"{self.entry.step} of {self.steps_key} moved on before the reaper gave up on it")
        self.current = current


def _give_up(store: ReleaseStore, ledger: StepLedger, release_id: str, entry: StepEntry) -> list[str] | None:
    """Fail the release for good and mark the entry done, in one MULTI; the stages marked failed (None: nothing
    written, because the entry moved on or the release had already ended)."""
    guard = _EntryUnchanged(ledger, release_id, entry)
    message = give_up_message(entry.step, entry.attempt)

    def mutate(r: Release) -> list[str] | None:
        if r.is_final:
            return None
        return r.mark_failed(message, step=entry.step, attempts=entry.attempt, job=entry.job_id)

    def then(r: Release, failed: list[str] | None, pipe: Any) -> None:
        if failed is not None and guard.current is not None:
            done = dataclasses.replace(guard.current, status=LedgerStatus.DONE, done_at=time.time())
            pipe.hset(guard.steps_key, entry.step, done.to_json())

    try:
        return store.update(release_id, mutate, fence=guard, then=then).decided
    except (LeaseLost, ReleaseNotFound):
        return None


def _is_publish(step: str) -> bool:
    return step == "publish" or step.startswith("publish-round-")


def _undo_with_worker_context(release_id: str) -> None:
    """Undo through this worker's context (the reaper runs in publish workers, which hold the Exchange client); never
    raises: the release is failed either way, and the summary says what could not be checked."""
    try:
        from workers import context, unpublish

        unpublish.undo_after_give_up(context.current(), release_id)
    except Exception as exc:
        log.warning("release %s: failed by the reaper, but what it created in the Exchange could not be checked: %s",
                    release_id, exc)


def _report_with_worker_context(release_id: str, failed: list[str]) -> None:
    """Repaint the failed stages and post the summary through this worker's thread reporter (best effort: a worker
    without Slack access leaves the thread to the next process that has it; the record is failed either way)."""
    try:
        from workers import context

        reporter = context.current().reporter
        for stage in failed:
            reporter.stage(release_id, stage)
        reporter.summary(release_id)
        reporter.flush()
    except Exception as exc:  # never let the thread stop the reaper
        log.warning("release %s: failed by the reaper, but the thread could not be updated: %s", release_id, exc)


def _record_resume(store: ReleaseStore, release_id: str, entry: StepEntry) -> None:
    from edgebot import messages

    def note(r: object) -> None:
        from edgebot.release import Release

        assert isinstance(r, Release)
        r.event("resumed", step=entry.step, attempt=entry.attempt + 1, after_job=entry.job_id)
        r.notes.append(messages.resumed_note(entry.step, entry.attempt + 1))

    with contextlib.suppress(ReleaseNotFound):
        store.update(release_id, note)


def break_dead_scheduler_locks(connection: redis.Redis, queue_names: list[str], stale_after: float) -> list[str]:
    """Delete the scheduler locks of ``queue_names`` whose holder stopped heart-beating; return the queues freed."""
    freed: list[str] = []
    now = time.time()
    for name in queue_names:
        lock = SCHEDULER_LOCKING_KEY_TEMPLATE % name
        raw = connection.get(lock)
        if raw is None:
            continue
        holder = raw.decode() if isinstance(raw, bytes) else str(raw)
        beat = connection.hget(SCHEDULER_KEY_TEMPLATE % holder, "last_heartbeat")
        last = _parse_utc(beat) if beat is not None else None
        if last is not None and now - last < stale_after:
            continue
        if beat is None and _lock_age(connection, lock) < stale_after:
            continue  # a scheduler that has just taken the lock registers its heartbeat a moment later
        if connection.eval(BREAK_LOCK, 1, lock, holder):
            log.warning("scheduler %s stopped heart-beating; freed its lock on %s", holder, name)
            freed.append(name)
    return freed


def _parse_utc(value: bytes | str) -> float | None:
    try:
        return utcparse(value.decode() if isinstance(value, bytes) else value).timestamp()
    except ValueError:
        return None


def _lock_age(connection: redis.Redis, lock: str) -> float:
    """Seconds since the lock was (re)set, from its remaining TTL (RQ sets it for ``interval + 60`` = 61 s)."""
    ttl = connection.ttl(lock)
    return 61.0 - float(ttl) if isinstance(ttl, int) and ttl >= 0 else 0.0
