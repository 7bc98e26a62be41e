"""Leases, fencing, the step ledger, the publish lock and the reaper against a real Redis (no worker processes).

Nothing here races the clock: every lease and lock lives :data:`LONG_TTL` (far longer than any stall of a loaded
machine), and an expiry is forced when a test needs one (:func:`_expire`: the key's TTL cut to a millisecond, which
Redis then expires as it would after the full TTL). Renewal is shown by the keeper restoring a TTL that was cut down,
not by outliving a short TTL.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis
from rq import Queue
from rq.job import JobStatus

from edgebot.errors import LeaseLost
from edgebot.jobs import SERIALIZER, EdgebotJob
from edgebot.lease import LeaseKeeper, acquire, lease_key
from edgebot.release import CANCELLED, FAILED, Release
from edgebot.settings import Settings
from edgebot.steps import StepLedger
from edgebot.store import PublishLocked, ReleaseStore
from sandbox.proc_base import wait_until
from workers.reaper import break_dead_scheduler_locks, reap

LONG_TTL = 600
"""Seconds every lease, lock and fence counter of these tests lives unless a test expires it on purpose."""
RENEW_INTERVAL = 0.05
"""The keeper's tick in these tests (its minimum): renewals are observed, never raced."""
SETTINGS = Settings(lease_ttl=float(LONG_TTL), lease_renew_interval=RENEW_INTERVAL, publish_lock_ttl=LONG_TTL,
                    step_retries=0)
WAIT = 30.0
"""Seconds a test waits for something that must happen (a renewal, an expiry it forced) before it fails."""


def _expire(connection: redis.Redis, key: str) -> None:
    """Make ``key`` expire now, as it would at the end of its TTL (a dead or frozen holder's lease)."""
    assert connection.pexpire(key, 1), f"{key} does not exist"
    wait_until(lambda: not connection.exists(key), timeout=WAIT, interval=0.01, what=f"{key} to expire")


def _release(release_id: str = "r-000001", **extra: object) -> Release:
    release = Release(release_id=release_id, team_id="T1", channel_id="C1", user_id="U1", service="hello",
                      version="1.0.0", org="acme", registry="local", arches=["amd64"])
    for key, value in extra.items():
        setattr(release, key, value)
    return release


def test_tokens_increase_and_a_held_lease_is_refused(redis_conn: redis.Redis) -> None:
    first = acquire(redis_conn, "edgebot", "r-1", "sign", "a", ttl=LONG_TTL, counter_ttl=LONG_TTL)
    assert first is not None
    assert acquire(redis_conn, "edgebot", "r-1", "sign", "b", ttl=LONG_TTL, counter_ttl=LONG_TTL) is None
    _expire(redis_conn, first.key)
    second = acquire(redis_conn, "edgebot", "r-1", "sign", "a", ttl=LONG_TTL, counter_ttl=LONG_TTL)
    assert second is not None and second.token > first.token, "same holder, later lease: a larger token"
    with pytest.raises(LeaseLost):
        first.check("a late write")
    second.check("a current write")
    assert second.release() and not redis_conn.exists(second.key)


def test_keeper_renews_the_lease_and_a_lost_lease_blocks_record_writes(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn, SETTINGS)
    store.create(_release())
    lease = acquire(redis_conn, "edgebot", "r-000001", "build-amd64", "horse", ttl=LONG_TTL, counter_ttl=LONG_TTL)
    assert lease is not None
    cut_ms = lease.ttl_ms // 4  # far below the full TTL a renewal restores
    with LeaseKeeper(lease, RENEW_INTERVAL):
        for round_ in range(3):  # each time the TTL is cut down, a renewal puts the whole TTL back
            assert redis_conn.pexpire(lease.key, cut_ms)
            wait_until(lambda: redis_conn.pttl(lease.key) > cut_ms, timeout=WAIT, interval=0.01,
                       what=f"renewal {round_ + 1} to restore the TTL")
            store.update("r-000001", lambda r: r.notes.append("tick"), fence=lease)
    assert not lease.lost and redis_conn.get(lease.key) == lease.value.encode()
    assert store.require("r-000001").notes == ["tick"] * 3
    redis_conn.pexpire(lease.key, cut_ms)
    time.sleep(10 * RENEW_INTERVAL)  # the keeper stopped with its block: nothing renews any more
    assert 0 < redis_conn.pttl(lease.key) <= cut_ms
    redis_conn.delete(lease.key)  # as if it had expired while its holder was frozen
    before = store.require("r-000001")
    with pytest.raises(LeaseLost):
        store.update("r-000001", lambda r: r.notes.append("late"), fence=lease)
    assert store.require("r-000001").notes == before.notes, "nothing was written"


def test_keeper_that_finds_its_lease_gone_marks_it_lost(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn, SETTINGS)
    store.create(_release())
    lease = acquire(redis_conn, "edgebot", "r-000001", "sign", "horse", ttl=LONG_TTL, counter_ttl=LONG_TTL)
    assert lease is not None
    with LeaseKeeper(lease, RENEW_INTERVAL):
        redis_conn.delete(lease.key)  # expired while the keeper was paused (a frozen VM): DEL, so no renewal can race
        wait_until(lambda: lease.lost, timeout=WAIT, interval=0.01, what="the keeper to notice the lease is gone")
        other = acquire(redis_conn, "edgebot", "r-000001", "sign", "new", ttl=LONG_TTL, counter_ttl=LONG_TTL)
        assert other is not None and other.token > lease.token
    assert redis_conn.get(lease.key) == other.value.encode(), "the lost keeper renewed nothing of the new lease"
    with pytest.raises(LeaseLost):
        store.update("r-000001", lambda r: r.notes.append("late"), fence=lease)
    assert not lease.release(), "nor can it release the new holder's lease"
    assert redis_conn.get(lease.key) == other.value.encode()


def test_a_lease_taken_over_mid_transaction_aborts_the_write(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn, SETTINGS)
    store.create(_release())
    lease = acquire(redis_conn, "edgebot", "r-000001", "sign", "old", ttl=LONG_TTL, counter_ttl=LONG_TTL)
    assert lease is not None
    other = redis.Redis(connection_pool=redis_conn.connection_pool)

    def mutate(r: Release) -> None:  # between the fence check and EXEC, a new attempt takes the lease
        other.set(lease.key, f"{lease.token + 1}:new", ex=LONG_TTL)
        r.notes.append("late")

    with pytest.raises(LeaseLost):
        store.update("r-000001", mutate, fence=lease)
    assert "late" not in store.require("r-000001").notes


def test_claim_outcomes(redis_conn: redis.Redis) -> None:
    ledger = StepLedger(redis_conn, SETTINGS)
    kwargs = {"function": "workers.jobs.sign_release", "args": ["r-1"], "queue": "edgebot-publish"}
    first = ledger.claim("r-1", "sign", job_id="r-1-sign-release", holder="h1", **kwargs)  # type: ignore[arg-type]
    assert first.outcome == "claimed" and first.lease is not None and first.entry.attempt == 1
    again = ledger.claim("r-1", "sign", job_id="r-1-sign-release", holder="h2", **kwargs)  # type: ignore[arg-type]
    assert again.outcome == "held" and again.lease is None
    other = ledger.claim("r-1", "sign", job_id="r-1-sign-release-a2", holder="h3", **kwargs)  # type: ignore[arg-type]
    assert other.outcome == "superseded"
    assert ledger.complete("r-1", "sign", first.lease)
    done = ledger.claim("r-1", "sign", job_id="r-1-sign-release", holder="h4", **kwargs)  # type: ignore[arg-type]
    assert done.outcome == "done" and not redis_conn.exists(lease_key("edgebot", "r-1", "sign"))


def test_one_publish_per_service_and_the_lock_ends_with_the_release(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn, SETTINGS)
    store.create(_release("r-000001"))
    with pytest.raises(PublishLocked) as refused:
        store.create(_release("r-000002"))
    assert refused.value.holder.release_id == "r-000001"
    assert store.get("r-000002") is None, "nothing of the refused release was written"
    store.create(_release("r-000003", dry_run=True))  # a dry run publishes nothing and takes no lock
    store.create(_release("r-000004", service="other"))
    assert store.publish_lock_holder("acme", "hello") == "r-000001"

    def cancel(r: Release) -> None:
        r.state = CANCELLED

    store.update("r-000001", cancel)
    assert store.publish_lock_holder("acme", "hello") is None, "freed in the update that ended the release"
    store.create(_release("r-000005"))
    assert store.publish_lock_holder("acme", "hello") == "r-000005"


def test_an_abandoned_release_lock_expires_on_its_own(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn, SETTINGS)
    store.create(_release("r-000001"))
    lock = store.publish_lock_key("acme", "hello")
    assert 0 < redis_conn.ttl(lock) <= SETTINGS.publish_lock_ttl, "the lock has a TTL: it cannot outlive it"
    redis_conn.expire(lock, SETTINGS.publish_lock_ttl // 4)
    store.update("r-000001", lambda r: r.notes.append("alive"))  # each update refreshes the lock
    assert redis_conn.ttl(lock) > SETTINGS.publish_lock_ttl // 4
    _expire(redis_conn, lock)  # the release was abandoned: no update refreshed the lock for its whole TTL
    assert store.publish_lock_holder("acme", "hello") is None
    store.create(_release("r-000002"))
    assert store.publish_lock_holder("acme", "hello") == "r-000002"


def test_concurrent_requests_for_one_service_publish_one(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn, SETTINGS)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def request(n: int) -> None:
        mine = ReleaseStore(redis.Redis(connection_pool=redis_conn.connection_pool), SETTINGS)
        barrier.wait()
        try:
            mine.create(_release(f"r-00001{n}"))
            outcomes.append("created")
        except PublishLocked:
            outcomes.append("locked")

    threads = [threading.Thread(target=request, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] + ["locked"] * 7
    assert len([k for k in redis_conn.scan_iter("edgebot:release:*")]) == 1
    assert store.publish_lock_holder("acme", "hello") is not None


def test_reaper_resumes_a_step_whose_holder_died_and_nothing_else(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn, SETTINGS)
    ledger = StepLedger(redis_conn, SETTINGS)
    store.create(_release())
    queue = Queue("edgebot-publish", connection=redis_conn, job_class=EdgebotJob, serializer=SERIALIZER)
    kwargs = {"function": "workers.jobs.sign_release", "args": ["r-000001"], "queue": "edgebot-publish"}
    dead = ledger.claim("r-000001", "sign", job_id="r-000001-sign-release", holder="dead", **kwargs)  # type: ignore
    assert dead.lease is not None
    assert reap(redis_conn, SETTINGS) == [], "the lease is alive: nothing to resume"
    _expire(redis_conn, dead.lease.key)  # its holder died: nobody renews it
    resumed = reap(redis_conn, SETTINGS)
    assert resumed == ["r-000001-sign-release-a2"]
    assert reap(redis_conn, SETTINGS) == [], "the new attempt is queued: not resumed twice"
    job = EdgebotJob.fetch(resumed[0], connection=redis_conn, serializer=SERIALIZER)
    assert job.get_status() == JobStatus.QUEUED and job.func_name == "workers.jobs.sign_release"
    assert job.args == ["r-000001"] and queue.job_ids == [resumed[0]]
    entry = ledger.entries("r-000001")["sign"]
    assert entry.job_id == resumed[0] and entry.attempt == 2
    release = store.require("r-000001")
    assert release.events[-1]["what"] == "resumed" and "sign resumed (attempt 2)" in release.notes[-1]
    late = ledger.claim("r-000001", "sign", job_id="r-000001-sign-release", holder="rq-rerun", **kwargs)  # type: ignore
    assert late.outcome == "superseded", "RQ re-running the old job id does nothing"

    def fail(r: Release) -> None:
        r.state = FAILED

    store.update("r-000001", fail)
    reap(redis_conn, SETTINGS)
    assert ledger.inflight() == [], "an ended release leaves the in-flight set"


def test_a_dead_schedulers_lock_is_freed_a_live_ones_kept(redis_conn: redis.Redis) -> None:
    from rq.utils import now, utcformat

    redis_conn.set("rq:scheduler-lock:q-live", "live", ex=61)
    redis_conn.hset("rq:scheduler:live", "last_heartbeat", utcformat(now()))
    redis_conn.set("rq:scheduler-lock:q-dead", "dead", ex=61)
    redis_conn.hset("rq:scheduler:dead", "last_heartbeat", "2020-01-01T00:00:00.000000Z")
    freed = break_dead_scheduler_locks(redis_conn, ["q-live", "q-dead", "q-none"], stale_after=5)
    assert freed == ["q-dead"]
    assert redis_conn.get("rq:scheduler-lock:q-live") == b"live" and not redis_conn.exists("rq:scheduler-lock:q-dead")


def test_reaper_trusts_a_pending_status_only_where_the_job_really_waits(redis_conn: redis.Redis) -> None:
    """RQ 3.0's Job.retry writes SCHEDULED at once and the registry entry in a pipeline: a worker killed in between
    leaves a job that says scheduled and never runs. The reaper resumes it; a job really in its queue it leaves."""
    store = ReleaseStore(redis_conn, SETTINGS)
    ledger = StepLedger(redis_conn, SETTINGS)
    store.create(_release())
    queue = Queue("edgebot-publish", connection=redis_conn, job_class=EdgebotJob, serializer=SERIALIZER)
    job = queue.enqueue_call("workers.jobs.sign_release", args=("r-000001",), job_id="r-000001-sign-release")
    claim = ledger.claim("r-000001", "sign", job_id=job.id, function="workers.jobs.sign_release", args=["r-000001"],
                         queue=queue.name, holder="retry-in-flight")
    assert claim.lease is not None and claim.lease.release()
    assert reap(redis_conn, SETTINGS) == [], "queued for real: RQ will run it"
    queue.remove(job.id)
    job.set_status(JobStatus.SCHEDULED)  # status written, registry entry lost with the worker
    assert reap(redis_conn, SETTINGS) == ["r-000001-sign-release-a2"]
