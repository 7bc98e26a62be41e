"""A token bucket in Redis shared by every process that calls Slack: one bucket per (team_id, method).

Slack rate-limits chat.update and chat.postMessage per workspace, so a limiter per thread or per process would let
N workers together exceed it and trigger a 429 storm. The bucket lives in Redis and is refilled and spent in one Lua
script using Redis's own clock, so all workers agree. A 429 that still happens is honoured by slack_sdk's retry
handler (Retry-After). Every call that had to wait is counted in Redis (``edgebot_slack_ratelimit_waits_total`` and
``…_wait_seconds_total`` by method, :func:`edgebot.metrics.ratelimit_wait`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from edgebot import metrics

_SCRIPT = """
local key = KEYS[1]
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', key, math.ceil(capacity / rate) + 60)
return tostring(wait)
"""


class SlackRateLimiter:
    """``acquire(team_id, method)`` blocks until a call is allowed (or ``max_wait`` passes, then lets it through)."""

    def __init__(self, connection: redis.Redis, *, per_minute: dict[str, float], burst: int = 5,
                 prefix: str = "edgebot", max_wait: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.redis = connection
        self.per_minute = per_minute
        self.burst = burst
        self.prefix = prefix
        self.max_wait = max_wait
        self._sleep = sleep
        self._script = connection.register_script(_SCRIPT)

    def try_acquire(self, team_id: str, method: str) -> float:
        """Take a token if there is one: 0.0; otherwise the seconds until one is due (nothing taken)."""
        rate = self.per_minute.get(method)
        if not rate:
            return 0.0
        key = f"{self.prefix}:ratelimit:{team_id}:{method}"
        return float(self._script(keys=[key], args=[self.burst, rate / 60.0]))

    def acquire(self, team_id: str, method: str) -> float:
        """Wait for a token; return the seconds waited."""
        waited = 0.0
        while True:
            wait = self.try_acquire(team_id, method)
            if wait <= 0 or waited >= self.max_wait:
                metrics.ratelimit_wait(self.redis, self.prefix, method, waited)
                return waited
            self._sleep(wait)
            waited += wait
