"""Leases with fencing tokens: who may write for a step of a release, right now.

A lease is one Redis key, ``<prefix>:lease:<release_id>:<step>``, whose value is ``<token>:<holder>`` and which
expires after ``settings.lease_ttl`` unless its holder renews it. The token comes from ``INCR`` on the release's
fence counter (``<prefix>:fence:<release_id>``), so every lease ever granted for a release has a larger token than
the ones before it: a holder that was paused (GC, a frozen VM, a SIGSTOP) and whose lease was meanwhile granted to a
new attempt can never pass for the current holder again, even if it is the same process.

Checks are atomic with what they guard:

* record writes: ``ReleaseStore.update(..., fence=lease)`` WATCHes the lease key next to the record and compares its
  value before the MULTI; a lease that changes or expires before EXEC aborts the write (Redis ≥ 6.0.9 counts an
  expiry as a modification of a watched key) and the retry sees it gone;
* external side effects (registry push, Exchange writes): :meth:`Lease.check` runs one Lua script that compares
  the value and extends the TTL in the same step, so the lease is guaranteed to outlive the call it precedes by
  at least ``lease_ttl`` — a call that takes longer than that is the one window fencing cannot close without the
  remote side checking tokens itself (docs/recovery.md).

A lost lease raises :class:`edgebot.errors.LeaseLost`; nothing is ever cleaned up by hand: a dead holder's lease
simply expires.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import redis

from edgebot.errors import LeaseLost

log = logging.getLogger(__name__)

# KEYS[1] lease, KEYS[2] fence counter; ARGV[1] holder, ARGV[2] ttl ms, ARGV[3] counter ttl s
# -> token (>0) when granted, 0 when someone else holds it
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
"""

# KEYS[1] lease; ARGV[1] expected value, ARGV[2] ttl ms -> 1 still ours (TTL extended), 0 lost
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] lease; ARGV[1] expected value -> 1 released, 0 it was not ours any more
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_key(prefix: str, release_id: str, step: str) -> str:
    return f"{prefix}:lease:{release_id}:{step}"


def fence_key(prefix: str, release_id: str) -> str:
    return f"{prefix}:fence:{release_id}"


@dataclass
class Lease:
    """A granted lease. ``value`` (``<token>:<holder>``) is what the key must still hold for the lease to be ours."""

    redis: redis.Redis
    key: str
    token: int
    holder: str
    ttl: float
    lost: bool = field(default=False)

    @property
    def value(self) -> str:
        return f"{self.token}:{self.holder}"

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def renew(self) -> bool:
        """Extend the TTL if the lease is still ours; remember (for good) when it is not."""
        if self.lost:
            return False
        if not self.redis.eval(RENEW, 1, self.key, self.value, self.ttl_ms):
            self.lost = True
        return not self.lost

    def check(self, what: str = "write") -> None:
        """Raise LeaseLost unless the lease is still ours; on success it is good for another ``ttl`` seconds."""
        if not self.renew():
            raise LeaseLost(f"lease {self.key} (token {self.token}) was lost before {what}")

    def verify_watched(self, pipe: Any) -> None:
        """Inside a WATCH block (``pipe`` in immediate mode): watch the lease key and compare its value."""
        pipe.watch(self.key)
        current = pipe.get(self.key)
        if current is None or (current.decode() if isinstance(current, bytes) else current) != self.value:
            self.lost = True
            raise LeaseLost(f"lease {self.key} (token {self.token}) is no longer held")

    def release(self) -> bool:
        return bool(self.redis.eval(RELEASE, 1, self.key, self.value))


def acquire(connection: redis.Redis, prefix: str, release_id: str, step: str, holder: str, ttl: float,
            counter_ttl: int) -> Lease | None:
    """Grant the lease of ``step`` to ``holder`` unless someone holds it; None when it is held."""
    key = lease_key(prefix, release_id, step)
    token = int(connection.eval(ACQUIRE, 2, key, fence_key(prefix, release_id), holder,  # type: ignore[arg-type]
                                max(1, int(ttl * 1000)), counter_ttl))
    return Lease(connection, key, token, holder, ttl) if token else None


class LeaseKeeper:
    """Renews a lease every ``interval`` seconds in a daemon thread while its holder works (``with`` block).

    A renewal that finds the lease gone marks it lost and stops; the holder's next fenced write or
    :meth:`Lease.check` then raises LeaseLost. Redis being briefly unreachable is retried at the next tick: the lease
    survives an outage shorter than its TTL.
    """

    def __init__(self, lease: Lease, interval: float) -> None:
        self.lease = lease
        self.interval = max(0.05, interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-keeper {lease.key}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self.lease

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop renewing (before the holder frees the lease, so no renewal finds it gone and cries "lost")."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.lease.renew():
                    log.warning("lease %s (token %s) lost; the step will stop at its next write", self.lease.key,
                                self.lease.token)
                    return
            except redis.RedisError as exc:
                log.warning("lease %s: renewal failed (%s); retrying", self.lease.key, exc)
