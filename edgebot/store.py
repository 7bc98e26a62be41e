"""Release records in Redis: create (with duplicate suppression), read, and atomic read-modify-write updates.

Keys (prefix from settings, default ``edgebot``)::

    edgebot:release:<release_id>            JSON record (see edgebot.release)
    edgebot:dedupe:<sha256>                 release id of a recent identical command (expires after the window)
    edgebot:active:<team_id>:<channel_id>   set of active release ids in a channel
    edgebot:history:<org>:<service>         sorted set of release ids by creation time
    edgebot:publish-lock:<org>:<service>    id of the one release allowed to publish the service now (expires
                                            ``publish_lock_ttl`` after the release's last update; freed when it ends)

No key or value ever holds a secret: records carry ids, refs, digests and signatures only.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import redis

from edgebot import audit, metrics
from edgebot.errors import ReleaseEnded
from edgebot.release import FINAL_STATES, Release
from edgebot.settings import Settings

if TYPE_CHECKING:
    from edgebot.lease import Lease

T = TypeVar("T")


@dataclass(frozen=True)
class Updated(Generic[T]):
    """What :meth:`ReleaseStore.update` wrote, and what the mutation decided (its return value)."""

    release: Release
    decided: T


class ReleaseNotFound(KeyError):
    pass


class ReleaseIdTaken(Exception):
    """:meth:`ReleaseStore.create` found a record under the new release's id: nothing was written (the caller picks
    another id)."""


class PublishLocked(Exception):
    """Another active release holds the service's publish lock; ``holder`` is that release."""

    def __init__(self, holder: Release) -> None:
        super().__init__(holder.release_id)
        self.holder = holder


class ReleaseStore:
    def __init__(self, connection: redis.Redis, settings: Settings | None = None) -> None:
        self.redis = connection
        self.settings = settings or Settings()
        self.prefix = self.settings.key_prefix

    # -- keys ---------------------------------------------------------------------------------------------------
    def key(self, release_id: str) -> str:
        return f"{self.prefix}:release:{release_id}"

    def active_key(self, team_id: str, channel_id: str) -> str:
        return f"{self.prefix}:active:{team_id}:{channel_id}"

    def history_key(self, org: str, service: str) -> str:
        return f"{self.prefix}:history:{org}:{service}"

    def publish_lock_key(self, org: str, service: str) -> str:
        return f"{self.prefix}:publish-lock:{org}:{service}"

    def dedupe_key(self, *parts: str) -> str:
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
        return f"{self.prefix}:dedupe:{digest}"

    # -- create -------------------------------------------------------------------------------------------------
    def claim_duplicate(self, dedupe_key: str, release_id: str) -> str | None:
        """Claim ``dedupe_key`` for ``release_id``; return the id of the release that already holds it, if any."""
        window = max(1, self.settings.duplicate_window)
        if self.redis.set(dedupe_key, release_id, nx=True, ex=window):
            return None
        holder = self.redis.get(dedupe_key)
        if holder is None:  # expired between the two calls: take it
            return None if self.redis.set(dedupe_key, release_id, nx=True, ex=window) else self.claim_duplicate(
                dedupe_key, release_id
            )
        holder_id = holder.decode() if isinstance(holder, bytes) else str(holder)
        return holder_id if holder_id != release_id else None

    def release_duplicate_claim(self, dedupe_key: str, release_id: str) -> None:
        """Undo :meth:`claim_duplicate` for a release that was refused after all (only if it still holds it)."""
        self.redis.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
                        "return 0", 1, dedupe_key, release_id)

    def create(self, release: Release, then: Callable[[Any], None] | None = None) -> None:
        """Write a new record and its indexes in one MULTI; ``then(pipeline)`` adds more (the first job) to it.

        A release that publishes (not a dry run) takes its service's publish lock in the same transaction, or raises
        :class:`PublishLocked` naming the active release that holds it, and nothing is written. A record that already
        exists under the release's id raises :class:`ReleaseIdTaken`, and nothing is written either.
        """
        lock_key = None if release.dry_run else self.publish_lock_key(release.org, release.service)
        key = self.key(release.release_id)
        while True:
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)  # an id collision must never attach this release to another one's record
                    if pipe.exists(key):
                        raise ReleaseIdTaken(release.release_id)
                    if lock_key is not None:
                        pipe.watch(lock_key)
                        raw = pipe.get(lock_key)
                        holder_id = raw.decode() if isinstance(raw, bytes) else str(raw or "")
                        if holder_id and holder_id != release.release_id:
                            holder = self.get(holder_id)
                            if holder is not None and not holder.is_final:
                                raise PublishLocked(holder)
                    pipe.multi()
                    if lock_key is not None:
                        pipe.set(lock_key, release.release_id, ex=max(1, self.settings.publish_lock_ttl))
                    pipe.set(key, _dumps(release), nx=True)
                    pipe.sadd(self.active_key(release.team_id, release.channel_id), release.release_id)
                    pipe.zadd(self.history_key(release.org, release.service), {release.release_id: release.created_at})
                    audit.record(pipe, self.settings, None, release)  # its audit line, in the same MULTI
                    if then is not None:
                        then(pipe)
                    results = pipe.execute()
                    if not results[1 if lock_key is not None else 0]:  # cannot happen under the WATCH: say so loudly
                        raise ReleaseIdTaken(release.release_id)
                    return
                except redis.WatchError:
                    continue

    def publish_lock_holder(self, org: str, service: str) -> str | None:
        raw = self.redis.get(self.publish_lock_key(org, service))
        return raw.decode() if isinstance(raw, bytes) else raw  # type: ignore[return-value]

    # -- read ---------------------------------------------------------------------------------------------------
    def get(self, release_id: str) -> Release | None:
        raw = self.redis.get(self.key(release_id))
        return None if raw is None else Release.from_dict(json.loads(raw))

    def require(self, release_id: str) -> Release:
        release = self.get(release_id)
        if release is None:
            raise ReleaseNotFound(release_id)
        return release

    def active_in_channel(self, team_id: str, channel_id: str) -> list[Release]:
        ids = sorted(m.decode() if isinstance(m, bytes) else m for m in
                     self.redis.smembers(self.active_key(team_id, channel_id)))  # type: ignore[union-attr]
        return [r for r in (self.get(i) for i in ids) if r is not None]

    def history(self, org: str, service: str, limit: int = 10) -> list[Release]:
        ids: list[bytes | str] = self.redis.zrevrange(  # type: ignore[assignment]
            self.history_key(org, service), 0, max(0, limit - 1))
        found = (self.get(i.decode() if isinstance(i, bytes) else i) for i in ids)
        return [r for r in found if r is not None]

    # -- update -------------------------------------------------------------------------------------------------
    def update(self, release_id: str, mutate: Callable[[Release], T], *, fence: Lease | None = None,
               active: bool = False, then: Callable[[Release, T, Any], None] | None = None) -> Updated[T]:
        """Atomically apply ``mutate`` to the stored record (optimistic WATCH/MULTI, retried on conflict).

        ``mutate`` returns what it decided (``Updated.decided``; None for a plain change) and may raise to abort
        without writing. It can run more than once under contention, so it must only change the record it is given.
        ``active``: raise :class:`ReleaseEnded` (writing nothing) when the release has already ended. With ``fence``,
        the write happens only while that lease is still held (its key is watched and compared in the same
        transaction); otherwise LeaseLost is raised and nothing is written. ``then(release, decided, pipeline)`` may
        add commands (an RQ enqueue, see edgebot.jobs.enqueue_step) to the same MULTI, so they happen exactly when
        this write does: the outbox.

        The release's publish lock is refreshed by every update of an active release and deleted in the same MULTI
        as the update that makes the release final.
        """
        key = self.key(release_id)
        while True:
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    if fence is not None:
                        fence.verify_watched(pipe)
                    raw = pipe.get(key)
                    if raw is None:
                        raise ReleaseNotFound(release_id)
                    release = Release.from_dict(json.loads(raw))  # type: ignore[arg-type]
                    was_final = release.is_final
                    before = Release.from_dict(json.loads(raw))  # type: ignore[arg-type]  # for edgebot.audit
                    if active and was_final:
                        raise ReleaseEnded(f"release {release_id} is {release.state}")
                    lock_key = self.publish_lock_key(release.org, release.service)
                    pipe.watch(lock_key)
                    lock_holder = pipe.get(lock_key)
                    holds_lock = (lock_holder.decode() if isinstance(lock_holder, bytes) else lock_holder) == release_id
                    decided = mutate(release)
                    release.updated_at = time.time()
                    pipe.multi()
                    if release.is_final and not was_final:
                        release.ended_at = release.ended_at or release.updated_at
                        pipe.set(key, _dumps(release))
                        pipe.srem(self.active_key(release.team_id, release.channel_id), release.release_id)
                        pipe.expire(key, self.settings.release_ttl)
                        metrics.record_final(pipe, release, self.prefix)  # outcome counter, stage durations
                        if holds_lock:
                            pipe.delete(lock_key)
                    else:
                        pipe.set(key, _dumps(release), keepttl=True)
                        if holds_lock and not release.is_final:
                            pipe.expire(lock_key, max(1, self.settings.publish_lock_ttl))
                    audit.record(pipe, self.settings, before, release)  # the actions' audit lines, same MULTI
                    if then is not None:
                        then(release, decided, pipe)
                    pipe.execute()
                    return Updated(release, decided)
                except redis.WatchError:
                    continue


def _dumps(release: Release) -> str:
    return json.dumps(release.to_dict(), separators=(",", ":"), sort_keys=True)


__all__ = ["FINAL_STATES", "PublishLocked", "ReleaseIdTaken", "ReleaseNotFound", "ReleaseStore", "Updated"]
