"""The shared Slack token bucket against a real Redis: burst, refill, shared across limiter instances (processes)."""

from __future__ import annotations

import threading

import redis

from edgebot.ratelimit import SlackRateLimiter


def test_burst_then_wait_and_buckets_are_per_team_and_method(redis_conn: redis.Redis) -> None:
    limiter = SlackRateLimiter(redis_conn, per_minute={"chat.update": 60.0}, burst=3)
    assert [limiter.try_acquire("T1", "chat.update") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.try_acquire("T1", "chat.update")
    assert 0.5 < wait <= 1.0  # 1 token per second: the next one is due within a second
    assert limiter.try_acquire("T2", "chat.update") == 0.0  # another workspace has its own bucket
    assert limiter.try_acquire("T1", "auth.test") == 0.0  # methods without a limit are never held back


def test_instances_share_one_bucket(redis_conn: redis.Redis) -> None:
    first = SlackRateLimiter(redis_conn, per_minute={"chat.postMessage": 6.0}, burst=2)
    second = SlackRateLimiter(redis_conn, per_minute={"chat.postMessage": 6.0}, burst=2)
    assert first.try_acquire("T1", "chat.postMessage") == 0.0
    assert second.try_acquire("T1", "chat.postMessage") == 0.0
    assert first.try_acquire("T1", "chat.postMessage") > 0 and second.try_acquire("T1", "chat.postMessage") > 0


def test_acquire_sleeps_until_a_token_is_due_and_concurrent_callers_get_one_each(redis_conn: redis.Redis) -> None:
    slept: list[float] = []
    lock = threading.Lock()

    def fake_sleep(seconds: float) -> None:  # no real waiting in tests; the bucket refills with Redis's clock
        with lock:
            slept.append(seconds)
        threading.Event().wait(0.05)

    limiter = SlackRateLimiter(redis_conn, per_minute={"chat.update": 1200.0}, burst=5, sleep=fake_sleep)
    threads = [threading.Thread(target=limiter.acquire, args=("T1", "chat.update")) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert slept, "15 of the 20 callers had to wait for the 20-per-second refill"
    assert all(0 < s <= 0.05 + 1e-6 for s in slept)
