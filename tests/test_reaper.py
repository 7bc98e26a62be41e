"""The reaper gives up on a step that keeps dying (issue 12), against a real Redis.

No process is killed here: each test writes the ledger entry a dead holder leaves behind (an attempt number, a job id
that is in no queue) and expires its lease, which is exactly what the reaper sees after a work horse was SIGKILLed.
"""

from __future__ import annotations

import dataclasses

import pytest
import redis
from rq import Queue

from edgebot.jobs import SERIALIZER, EdgebotJob, build_queue
from edgebot.lease import lease_key
from edgebot.release import BUILDING, DONE, FAILED, FAILED_STEP, RUNNING, Release
from edgebot.settings import Settings
from edgebot.steps import LedgerStatus, StepLedger
from edgebot.store import ReleaseStore
from workers.reaper import reap

LONG_TTL = 600
SETTINGS = Settings(lease_ttl=float(LONG_TTL), publish_lock_ttl=LONG_TTL, step_retries=0)
RID = "r-000001"


def _release() -> Release:
    release = Release(release_id=RID, team_id="T1", channel_id="C1", user_id="U1", service="hello",
                      version="1.0.0", org="acme", registry="local", arches=["amd64", "arm64"])
    release.state = BUILDING
    release.stage("source").mark(DONE)
    release.stage("build").mark(RUNNING)
    release.arch_step("build", "amd64").mark(RUNNING)
    release.arch_step("build", "arm64").mark(DONE)
    return release


def _dead_build(conn: redis.Redis, settings: Settings, attempt: int) -> str:
    """The ledger as the last attempt's holder left it when it died: entry running under attempt ``attempt``'s job
    id, lease gone. Returns that job id."""
    ledger = StepLedger(conn, settings)
    base = f"{RID}-build-arch-amd64"
    job_id = base if attempt == 1 else f"{base}-a{attempt}"
    existing = ledger.entries(RID).get("build-amd64")
    if existing is None:
        claim = ledger.claim(RID, "build-amd64", job_id=base, function="workers.jobs.build_arch",
                             args=[RID, "amd64"], queue=build_queue("amd64"), holder="host:1:dead")
        assert claim.lease is not None
        existing = claim.entry
    entry = dataclasses.replace(existing, job_id=job_id, attempt=attempt)
    conn.hset(ledger.steps_key(RID, "build-amd64"), "build-amd64", entry.to_json())
    conn.delete(lease_key(settings.key_prefix, RID, "build-amd64"))  # expired: its holder stopped renewing it
    return job_id


@pytest.fixture
def reports() -> list[tuple[str, list[str]]]:
    return []


def test_the_last_allowed_attempt_dying_fails_the_release_and_ends_the_step(
        redis_conn: redis.Redis, reports: list[tuple[str, list[str]]]) -> None:
    store = ReleaseStore(redis_conn, SETTINGS)
    store.create(_release())
    _dead_build(redis_conn, SETTINGS, attempt=3)

    assert reap(redis_conn, SETTINGS, report=lambda rid, stages: reports.append((rid, stages))) == []

    release = store.require(RID)
    assert release.state == FAILED
    assert release.error.startswith("the build of amd64 was interrupted 3 times: each attempt's worker stopped "
                                    "before it finished (killed, out of memory, or its host lost), so edgebot "
                                    "stopped resuming it (setting step_max_attempts).")
    assert release.arch_step("build", "amd64").status == FAILED_STEP
    assert release.arch_step("build", "arm64").status == DONE
    assert release.stage("build").status == FAILED_STEP
    assert reports == [(RID, ["build"])]
    entry = StepLedger(redis_conn, SETTINGS).entries(RID)["build-amd64"]
    assert entry.status == LedgerStatus.DONE and entry.attempt == 3 and entry.done_at > 0
    queue = Queue(build_queue("amd64"), connection=redis_conn, job_class=EdgebotJob, serializer=SERIALIZER)
    assert queue.job_ids == []  # no attempt 4
    assert not redis_conn.exists(f"rq:job:{RID}-build-arch-amd64-a4")

    # the next pass finds nothing to do and forgets the ended release
    assert reap(redis_conn, SETTINGS, report=lambda rid, stages: reports.append((rid, stages))) == []
    assert reports == [(RID, ["build"])]
    assert StepLedger(redis_conn, SETTINGS).inflight() == []


def test_attempts_below_the_limit_are_still_resumed(redis_conn: redis.Redis,
                                                    reports: list[tuple[str, list[str]]]) -> None:
    store = ReleaseStore(redis_conn, SETTINGS)
    store.create(_release())
    _dead_build(redis_conn, SETTINGS, attempt=2)
    assert reap(redis_conn, SETTINGS, report=lambda rid, stages: reports.append((rid, stages))) == [
        f"{RID}-build-arch-amd64-a3"]
    assert store.require(RID).state == BUILDING and reports == []
    entry = StepLedger(redis_conn, SETTINGS).entries(RID)["build-amd64"]
    assert entry.status == LedgerStatus.RUNNING and entry.attempt == 3


def test_step_max_attempts_is_a_setting(redis_conn: redis.Redis, reports: list[tuple[str, list[str]]]) -> None:
    patient = Settings.load({"step_max_attempts": 5, "lease_ttl": LONG_TTL, "step_retries": 0}, environ={})
    store = ReleaseStore(redis_conn, patient)
    store.create(_release())
    _dead_build(redis_conn, patient, attempt=3)
    assert reap(redis_conn, patient, report=lambda rid, stages: reports.append((rid, stages))) == [
        f"{RID}-build-arch-amd64-a4"]
    assert store.require(RID).state == BUILDING

    _dead_build(redis_conn, patient, attempt=5)
    assert reap(redis_conn, patient, report=lambda rid, stages: reports.append((rid, stages))) == []
    assert store.require(RID).error.startswith("the build of amd64 was interrupted 5 times")


def test_a_holder_that_claims_the_step_again_keeps_it(redis_conn: redis.Redis,
                                                      reports: list[tuple[str, list[str]]]) -> None:
    """The entry is judged by the reaper and re-checked in the failing write: a live lease at that moment (RQ ran
    the same job id again, and it claimed the step) means nothing is failed."""
    store = ReleaseStore(redis_conn, SETTINGS)
    store.create(_release())
    job_id = _dead_build(redis_conn, SETTINGS, attempt=3)
    redis_conn.set(lease_key(SETTINGS.key_prefix, RID, "build-amd64"), f"99:host:2:{job_id}", px=LONG_TTL * 1000)
    assert reap(redis_conn, SETTINGS, report=lambda rid, stages: reports.append((rid, stages))) == []
    assert store.require(RID).state == BUILDING and reports == []
    assert StepLedger(redis_conn, SETTINGS).entries(RID)["build-amd64"].status == LedgerStatus.RUNNING


def test_the_messages_name_each_kind_of_step() -> None:
    from workers.reaper import give_up_message

    assert give_up_message("build-arm64", 3).startswith("the build of arm64 was interrupted 3 times: ")
    assert give_up_message("prepare", 3).startswith("the source step was interrupted 3 times")
    assert give_up_message("sign", 4).startswith("signing was interrupted 4 times")
    assert give_up_message("publish-round-2", 3).startswith("the publish of approval round 2 was interrupted")
    assert give_up_message("rollout-poll-0-7", 3).startswith("the rollout watch was interrupted")


def _dead_publish(conn: redis.Redis, settings: Settings, step: str, attempt: int) -> None:
    ledger = StepLedger(conn, settings)
    job_id = f"{RID}-{step}"
    claim = ledger.claim(RID, step, job_id=job_id, function="workers.jobs.publish_release", args=[RID],
                         queue="edgebot-publish", holder="host:1:dead")
    assert claim.lease is not None
    entry = dataclasses.replace(claim.entry, job_id=f"{job_id}-a{attempt}", attempt=attempt)
    conn.hset(ledger.steps_key(RID, step), step, entry.to_json())
    conn.delete(lease_key(settings.key_prefix, RID, step))


@pytest.mark.parametrize("step", ["publish", "publish-round-2"])
def test_giving_up_on_a_publish_undoes_what_the_release_created_before_the_thread_is_repainted(
        redis_conn: redis.Redis, step: str) -> None:
    """No half publish when the publish step's workers keep dying: the reaper's give-up runs the undo (which removes
    the services this release POSTed, workers/unpublish.py) once, before the summary is repainted."""
    store = ReleaseStore(redis_conn, SETTINGS)
    release = _release()
    release.arch_step("build", "amd64").mark(DONE)
    for stage in ("build", "push", "sign"):
        release.stage(stage).mark(DONE)
    release.stage("publish").mark(RUNNING)
    store.create(release)
    _dead_publish(redis_conn, SETTINGS, step, attempt=3)
    calls: list[str] = []

    def undo(release_id: str) -> None:
        assert store.require(release_id).state == FAILED  # decided first: no second attempt can race the undo
        calls.append(f"undo {release_id}")

    reap(redis_conn, SETTINGS, report=lambda rid, stages: calls.append(f"report {rid}"), undo=undo)
    assert calls == [f"undo {RID}", f"report {RID}"]
    reap(redis_conn, SETTINGS, report=lambda rid, stages: calls.append(f"report {rid}"), undo=undo)
    assert calls == [f"undo {RID}", f"report {RID}"], "once"


def test_giving_up_on_a_build_undoes_nothing(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn, SETTINGS)
    store.create(_release())
    _dead_build(redis_conn, SETTINGS, attempt=3)
    undone: list[str] = []
    reap(redis_conn, SETTINGS, report=lambda rid, stages: None, undo=undone.append)
    assert store.require(RID).state == FAILED and undone == []
