"""The step ledger: which step of which release is in flight, under which RQ job, and whether it finished.

A job that starts a step *claims* it (:meth:`StepLedger.claim`): one Lua script checks the ledger entry and takes the
step's lease (edgebot.lease) in the same atomic step, so there is never a moment where a step is in flight without
a lease or leased without a ledger entry. The entry (a field of ``<prefix>:steps:<release_id>``, or of
``<prefix>:build-steps:<release_id>`` for a build step, see :meth:`StepLedger.steps_key`) records the job id
that currently owns the step, its attempt number and how to enqueue it again (function, args, queue); the release
is listed in ``<prefix>:inflight`` while any of its steps is.

Outcomes of a claim:

* ``claimed``    the step is this job's: it holds the lease and runs;
* ``held``       another live process holds the lease (a work horse whose ``rq worker`` was SIGKILLed finishes on
                 its own, and RQ may re-run the same job id meanwhile): this job does nothing;
* ``superseded`` the reaper handed the step to a newer attempt (another job id): this job does nothing;
* ``done``       the step already finished: this job does nothing.

A step that finishes marks its entry done with :meth:`complete` (fenced by its lease). The reaper
(workers.reaper) re-enqueues every entry that is still running while nobody holds its lease and its job is not
waiting in a queue: a new job id with an attempt suffix (``r-7f3a9c-build-arch-amd64-a2``), up to
``settings.step_max_attempts`` attempts; when the last one dies too, the reaper fails the release and marks the entry
done in the same MULTI, so a step that kills its worker every time (a build that exhausts memory) ends instead of
being resumed for ever.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import redis

from edgebot.lease import Lease, fence_key, lease_key
from edgebot.settings import Settings


class LedgerStatus(StrEnum):
    """A step in the ledger: in flight (claimed, or waiting to be resumed) or finished."""

    RUNNING = "running"
    DONE = "done"


# KEYS[1] steps hash, KEYS[2] lease, KEYS[3] fence counter, KEYS[4] inflight zset
# ARGV[1] step, ARGV[2] job id, ARGV[3] entry json (used when absent), ARGV[4] holder, ARGV[5] ttl ms,
# ARGV[6] key ttl s, ARGV[7] release id, ARGV[8] now
# -> {outcome, token, entry json}
CLAIM = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local entry
if raw then
  entry = cjson.decode(raw)
  if entry['status'] == 'done' then return {'done', 0, raw} end
  if entry['job_id'] ~= ARGV[2] then return {'superseded', 0, raw} end
else
  entry = cjson.decode(ARGV[3])
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'held', 0, raw or ARGV[3]} end
local token = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('SET', KEYS[2], token .. ':' .. ARGV[4], 'PX', ARGV[5])
entry['status'] = 'running'
entry['released_at'] = 0
entry['claimed_at'] = tonumber(ARGV[8])
entry['token'] = token
local encoded = cjson.encode(entry)
redis.call('HSET', KEYS[1], ARGV[1], encoded)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[7])
return {'claimed', token, encoded}
"""

# KEYS[1] steps hash, KEYS[2] lease; ARGV[1] step, ARGV[2] lease value, ARGV[3] now -> 1 done, 0 lease lost
COMPLETE = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
local entry = cjson.decode(redis.call('HGET', KEYS[1], ARGV[1]))
entry['status'] = 'done'
entry['done_at'] = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(entry))
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS[1] steps hash, KEYS[2] lease; ARGV[1] step, ARGV[2] lease value, ARGV[3] now -> 1 released, 0 lease lost
RELEASE_FOR_RETRY = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
local entry = cjson.decode(redis.call('HGET', KEYS[1], ARGV[1]))
entry['released_at'] = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(entry))
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS[1] inflight zset, KEYS[2] steps hash, KEYS[3] build steps hash; ARGV[1] release id, ARGV[2] release final
# ('1'/'0') -> 1 removed from inflight (nothing running, or the release ended), 0 kept
FORGET = """
if ARGV[2] ~= '1' then
  for i = 2, 3 do
    for _, raw in ipairs(redis.call('HVALS', KEYS[i])) do
      if cjson.decode(raw)['status'] == 'running' then return 0 end
    end
  end
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""


def is_build_step(step: str) -> bool:
    """``build-<arch>``: the one kind of step a build worker runs."""
    return step.startswith("build-")


@dataclass
class StepEntry:
    step: str
    job_id: str
    base_job_id: str
    function: str
    args: list[str]
    queue: str
    attempt: int = 1
    status: LedgerStatus = LedgerStatus.RUNNING
    token: int = 0
    claimed_at: float = 0.0
    done_at: float = 0.0
    released_at: float = 0.0
    """When the step gave its lease back for an RQ retry (a transient failure); 0 while a holder has it."""

    @classmethod
    def from_json(cls, raw: str | bytes) -> StepEntry:
        data = json.loads(raw)
        known = set(cls.__dataclass_fields__)
        entry = cls(**{k: v for k, v in data.items() if k in known})
        entry.status = LedgerStatus(entry.status)
        return entry

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    def next_attempt_id(self) -> str:
        """Job ids allow only ``[A-Za-z0-9_-]``: the attempt is a ``-aN`` suffix on the first attempt's id."""
        return f"{self.base_job_id}-a{self.attempt + 1}"


@dataclass(frozen=True)
class Claim:
    outcome: str
    entry: StepEntry
    lease: Lease | None = None


class StepLedger:
    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.redis = connection
        self.settings = settings
        self.prefix = settings.key_prefix

    def steps_key(self, release_id: str, step: str = "") -> str:
        """Where ``step``'s entry lives: build steps (``build-<arch>``) in a hash of their own, the one a build
        worker's Redis user may write (edgebot.redis_acl); every other step where only the bot and publish workers
        can write, so a build worker cannot forge the entry of a publish step for the reaper to resume."""
        if is_build_step(step):
            return f"{self.prefix}:build-steps:{release_id}"
        return f"{self.prefix}:steps:{release_id}"

    @property
    def inflight_key(self) -> str:
        return f"{self.prefix}:inflight"

    def claim(self, release_id: str, step: str, *, job_id: str, function: str, args: list[str], queue: str,
              holder: str) -> Claim:
        fresh = StepEntry(step=step, job_id=job_id, base_job_id=job_id, function=function, args=list(args),
                          queue=queue)
        ttl = self.settings.lease_ttl
        outcome, token, raw = self.redis.eval(  # type: ignore[misc]
            CLAIM, 4, self.steps_key(release_id, step), lease_key(self.prefix, release_id, step),
            fence_key(self.prefix, release_id), self.inflight_key,
            step, job_id, fresh.to_json(), holder, max(1, int(ttl * 1000)), self.settings.release_ttl, release_id,
            time.time(),
        )
        outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
        entry = StepEntry.from_json(raw)
        lease = None
        if outcome == "claimed":
            lease = Lease(self.redis, lease_key(self.prefix, release_id, step), int(token), holder, ttl)
        return Claim(outcome, entry, lease)

    def complete(self, release_id: str, step: str, lease: Lease) -> bool:
        """Mark the step done and free its lease, if the lease is still ours (False: it was lost meanwhile)."""
        return bool(self.redis.eval(COMPLETE, 2, self.steps_key(release_id, step), lease.key, step, lease.value,
                                    time.time()))

    def release_for_retry(self, release_id: str, step: str, lease: Lease) -> bool:
        """Give the lease back so RQ's retry of the same job id can claim it; the entry stays running, and the reaper
        leaves it alone for ``lease_ttl`` (RQ marks the job scheduled right after the wrapper returns)."""
        return bool(self.redis.eval(RELEASE_FOR_RETRY, 2, self.steps_key(release_id, step), lease.key, step,
                                    lease.value, time.time()))

    def entries(self, release_id: str) -> dict[str, StepEntry]:
        found: dict[str, StepEntry] = {}
        for build in (False, True):  # each hash holds only its own kind of step: anything else there is ignored
            key = self.steps_key(release_id, "build-" if build else "")
            raw: dict[Any, Any] = self.redis.hgetall(key)  # type: ignore[assignment]
            for k, v in raw.items():
                name = k.decode() if isinstance(k, bytes) else k
                if is_build_step(name) == build:
                    found[name] = StepEntry.from_json(v)
        return found

    def inflight(self) -> list[str]:
        members: list[bytes | str] = self.redis.zrange(self.inflight_key, 0, -1)  # type: ignore[assignment]
        return [m.decode() if isinstance(m, bytes) else m for m in members]

    def forget_if_idle(self, release_id: str, *, release_final: bool) -> bool:
        return bool(self.redis.eval(FORGET, 3, self.inflight_key, self.steps_key(release_id),
                                    self.steps_key(release_id, "build-"), release_id,
                                    "1" if release_final else "0"))

    def lease_holder(self, release_id: str, step: str) -> str | None:
        raw = self.redis.get(lease_key(self.prefix, release_id, step))
        return raw.decode() if isinstance(raw, bytes) else raw  # type: ignore[return-value]
