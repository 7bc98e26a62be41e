"""The release store against a real Redis: atomic updates under contention, duplicates, indexes, expiry."""

from __future__ import annotations

import threading

import redis

from edgebot.release import FAILED, Release
from edgebot.settings import Settings
from edgebot.store import ReleaseStore


def _release(release_id: str = "r-000001") -> Release:
    return Release(release_id=release_id, team_id="T1", channel_id="C1", user_id="U1", service="hello",
                   version="1.0.0", org="acme", registry="local", arches=["amd64", "arm64"])


def test_create_get_and_indexes(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn)
    store.create(_release())
    loaded = store.require("r-000001")
    assert loaded.arches == ["amd64", "arm64"] and loaded.state == "queued"
    assert [r.release_id for r in store.active_in_channel("T1", "C1")] == ["r-000001"]
    assert [r.release_id for r in store.history("acme", "hello")] == ["r-000001"]


def test_concurrent_updates_lose_nothing(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn)
    store.create(_release())
    threads = [
        threading.Thread(target=lambda i=i: store.update("r-000001", lambda r: r.notes.append(f"n{i}")))
        for i in range(40)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(store.require("r-000001").notes) == sorted(f"n{i}" for i in range(40))


def test_final_state_leaves_active_set_and_expires(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn, Settings(release_ttl=1000))

    def finish(r: Release) -> None:
        r.state = FAILED

    store.create(_release())
    released = store.update("r-000001", finish).release
    assert released.ended_at is not None
    assert store.active_in_channel("T1", "C1") == []
    assert 0 < redis_conn.ttl(store.key("r-000001")) <= 1000


def test_duplicate_claim_within_window(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn, Settings(duplicate_window=30))
    key = store.dedupe_key("T1", "C1", "U1", "publish hello 1.0.0 --registry local")
    assert store.claim_duplicate(key, "r-aaaaaa") is None
    assert store.claim_duplicate(key, "r-bbbbbb") == "r-aaaaaa"
    other = store.dedupe_key("T1", "C1", "U2", "publish hello 1.0.0 --registry local")
    assert store.claim_duplicate(other, "r-cccccc") is None
