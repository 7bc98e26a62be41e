"""Acknowledge only what a replica holds: ``WAIT numreplicas timeout`` after a decision's transaction.

With Redis Sentinel, a master that dies takes the writes its replicas had not received yet; a replica becomes master
without them. A release the bot answered "queued" for, or an approval it answered "counted" for, must not be among
them. So with ``settings.redis_wait_replicas`` > 0 the bot asks Redis, after the intake's (or the click's) MULTI,
to wait until that many replicas acknowledged it (``redis_wait_timeout_ms`` at most), and answers only then.

How: ``WAIT`` covers the writes of *the connection it is sent on*. A pooled client may send it on another connection
than the MULTI's, so one non-transactional round trip on one connection sends ``EXISTS record`` (the record is on the
master we are talking to: after a failover between the MULTI and here, it would be missing), ``INCR`` of a marker key
(this connection's write comes after the MULTI, so waiting for it waits for the MULTI too: replication is one ordered
stream) and ``WAIT``. With ``redis_wait_replicas = 0`` (a single node) nothing is sent at all.

When fewer replicas confirm, an intake is withdrawn (:func:`withdraw`): the record is marked cancelled in one more
update — every job checks the record before it acts, so nothing of it runs — and that update is waited for too. The
requester is told "not queued, send it again" (edgebot.messages.not_durable); if even the withdrawal is unconfirmed,
the answer says it might still run after a failover and how to check. A decision (approve, reject) cannot be taken
back safely (a quorum may already have queued the publish): the approver is told it may be lost in a failover and to
check the card.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from edgebot.release import CANCELLED, PENDING, RUNNING, SKIPPED, Release
from edgebot.settings import Settings
from edgebot.store import ReleaseNotFound, ReleaseStore

log = logging.getLogger(__name__)

UNCONFIRMED_EVENT = "unconfirmed"


class NotDurable(Exception):
    """The intake's MULTI was not confirmed by enough replicas: the release was withdrawn (``withdrawn``: the
    withdrawal itself is confirmed, or the record is gone, so it will not run)."""

    def __init__(self, release: Release, *, wanted: int, timeout_ms: int, withdrawn: bool) -> None:
        super().__init__(release.release_id)
        self.release, self.wanted, self.timeout_ms, self.withdrawn = release, wanted, timeout_ms, withdrawn


@dataclass(frozen=True)
class Confirmation:
    confirmed: bool
    replicas: int
    """How many replicas acknowledged (-1: not asked, the check is off)."""
    present: bool = True
    """The record was on the master that answered."""


OFF = Confirmation(confirmed=True, replicas=-1)


def marker_key(settings: Settings) -> str:
    return f"{settings.key_prefix}:wait-marker"


def confirm(connection: redis.Redis, settings: Settings, record_key: str) -> Confirmation:
    """Did ``settings.redis_wait_replicas`` replicas receive everything written before now, ``record_key`` included?
    Free (no Redis call) when the setting is 0."""
    wanted = settings.redis_wait_replicas
    if wanted <= 0:
        return OFF
    with connection.pipeline(transaction=False) as pipe:
        pipe.exists(record_key)
        pipe.incr(marker_key(settings))
        pipe.wait(wanted, max(1, settings.redis_wait_timeout_ms))
        present, _, acked = pipe.execute()
    replicas = int(acked)
    return Confirmation(confirmed=bool(present) and replicas >= wanted, replicas=replicas, present=bool(present))


def withdraw(store: ReleaseStore, release: Release) -> bool:
    """Mark an unconfirmed intake cancelled so that nothing of it runs; True when that is certain (the withdrawal is
    confirmed by the replicas, or the record is not on the master at all: it went with the master, job included)."""
    wanted, timeout = store.settings.redis_wait_replicas, store.settings.redis_wait_timeout_ms

    def mutate(r: Release) -> None:
        if r.is_final:
            return
        r.state = CANCELLED
        r.error = (f"not queued: fewer than {wanted} Redis replica(s) confirmed the request within {timeout} ms, "
                   "so it was never acknowledged")
        r.event(UNCONFIRMED_EVENT, wanted=wanted, timeout_ms=timeout)
        for step in [*r.stages.values(), *(s for per in r.arch_steps.values() for s in per.values())]:
            if step.status in (RUNNING, PENDING):
                step.status, step.note = SKIPPED, "not queued"

    try:
        store.update(release.release_id, mutate)
    except ReleaseNotFound:
        return True
    except redis.RedisError as exc:
        log.warning("release %s: could not withdraw the unconfirmed request: %s", release.release_id,
                    type(exc).__name__)
        return False
    try:
        again = confirm(store.redis, store.settings, store.key(release.release_id))
    except redis.RedisError:
        return False
    return again.confirmed or not again.present


__all__ = ["OFF", "Confirmation", "NotDurable", "confirm", "marker_key", "withdraw"]
