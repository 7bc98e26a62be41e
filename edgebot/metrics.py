"""Prometheus metrics, kept in Redis so every process and replica reports the same fleet-wide numbers.

edgebot runs as several processes: gunicorn workers behind the bot's Service, RQ workers on many hosts, and each RQ
job in a work horse that RQ forks and that exits when the job ends. A counter held in a process's memory would be
reset with every horse and split between gunicorn workers, so edgebot writes what it counts to Redis (one HINCRBY,
in the same MULTI as the state change where there is one) and :class:`FleetCollector` reads Redis at scrape time:

    edgebot_releases_total{outcome}              releases that reached a final state, by that state
    edgebot_stage_duration_seconds{stage}        histogram of each pipeline stage's duration, observed when the
                                                 release ends (from the record's stage timings)
    edgebot_call_errors_total{system,call,reason} failed Slack Web API and Horizon Exchange calls
    edgebot_queue_depth{queue}                   jobs waiting in each RQ queue
    edgebot_queue_workers{queue}                 workers registered on each queue (0: nobody builds that arch)
    edgebot_releases_active{state}               active releases by state
    edgebot_approvals_pending                    active releases waiting for approval
    edgebot_rollout_nodes{state}                 nodes of the rollout stages running now, by node state
    edgebot_release_idle_seconds{state}          longest time an active release in that state went without a change
                                                 to its record (0 when none): a stuck release
    edgebot_slack_ratelimit_waits_total{method}  Slack calls that waited for the shared token bucket
    edgebot_slack_ratelimit_wait_seconds_total{method}  seconds those calls waited
    edgebot_metrics_redis_up                     1 if the scrape could read Redis

Since every target reports the same fleet-wide series, aggregate them with ``max`` (not ``sum``) across instances,
and serve them from few processes (``settings.metrics_fleet``): each scrape costs a handful of Redis reads plus one
SCAN for the per-channel active-release sets.
Recording never fails the caller: a metric that cannot be written is logged at debug level and dropped. Labels are
bounded (states, stage names, API method names, error codes, status codes), never ids or user input.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from edgebot.release import ACTIVE_STATES, AWAITING_APPROVAL, FINAL_STATES, Release

log = logging.getLogger(__name__)

STAGE_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, math.inf)
"""Upper bounds (seconds) of the stage-duration histogram: a source fetch takes seconds, a build up to job_timeout."""
_SEP = "\x1f"
_ROLLOUT_STATES = ("new", "old", "failing", "offline", "waiting")
"""Node states of a rollout stage's counts (always reported, 0 when no rollout runs)."""


def releases_key(prefix: str) -> str:
    return f"{prefix}:metrics:releases"


def stage_key(prefix: str, stage: str) -> str:
    return f"{prefix}:metrics:stage:{stage}"


def stages_index_key(prefix: str) -> str:
    return f"{prefix}:metrics:stages"


def call_errors_key(prefix: str) -> str:
    return f"{prefix}:metrics:call_errors"


def ratelimit_waits_key(prefix: str) -> str:
    return f"{prefix}:metrics:slack_waits"


def _bucket_field(seconds: float) -> str:
    bound = next(b for b in STAGE_BUCKETS if seconds <= b)
    return "le:+Inf" if math.isinf(bound) else f"le:{bound:g}"


# -- recording ----------------------------------------------------------------------------------------------------

def record_final(pipe: Any, release: Release, prefix: str) -> None:
    """Count ``release``'s outcome and observe its stage durations, queued on ``pipe`` (the MULTI that makes the
    release final, so a release is counted exactly once whatever process ends it)."""
    pipe.hincrby(releases_key(prefix), release.state, 1)
    for stage, step in release.stages.items():
        if step.started_at is None or step.ended_at is None or step.ended_at < step.started_at:
            continue
        seconds = step.ended_at - step.started_at
        key = stage_key(prefix, stage)
        pipe.sadd(stages_index_key(prefix), stage)
        pipe.hincrby(key, _bucket_field(seconds), 1)
        pipe.hincrby(key, "count", 1)
        pipe.hincrbyfloat(key, "sum", seconds)


class CallErrorRecorder:
    """Counts failed external calls in Redis (see the module doc for why not in process memory)."""

    def __init__(self, connection: redis.Redis, prefix: str) -> None:
        self.redis = connection
        self.prefix = prefix

    def record(self, system: str, call: str, reason: str) -> None:
        try:
            self.redis.hincrby(call_errors_key(self.prefix), _SEP.join((system, call, reason)), 1)
        except Exception:  # metrics never fail the caller (Redis down is reported by the scrape itself)
            log.debug("could not count a %s call error", system, exc_info=True)


_RECORDER: CallErrorRecorder | None = None


def install(connection: redis.Redis | None, prefix: str = "edgebot") -> None:
    """Where this process counts call errors (the bot and each worker call it once at start; forks inherit it).
    ``None`` stops counting."""
    global _RECORDER
    _RECORDER = None if connection is None else CallErrorRecorder(connection, prefix)


def call_error(system: str, call: str, reason: str) -> None:
    """Count one failed call of ``system`` ("slack", "exchange"); a no-op until :func:`install` ran."""
    if _RECORDER is not None:
        _RECORDER.record(system, call, reason)


def ratelimit_wait(connection: redis.Redis, prefix: str, method: str, seconds: float) -> None:
    """Count one Slack call of ``method`` (``chat.update``…: a bounded label) that waited ``seconds`` for the shared
    token bucket (:mod:`edgebot.ratelimit`). Never fails the caller."""
    if seconds <= 0:
        return
    try:
        pipe = connection.pipeline(transaction=False)
        pipe.hincrby(ratelimit_waits_key(prefix), f"count{_SEP}{method}", 1)
        pipe.hincrbyfloat(ratelimit_waits_key(prefix), f"seconds{_SEP}{method}", seconds)
        pipe.execute()
    except Exception:  # metrics never fail the caller
        log.debug("could not count a rate-limit wait of %s", method, exc_info=True)


def exchange_route(method: str, path: str) -> str:
    """``GET orgs/acme/services/x/keys/k`` → ``GET orgs/{}/services/{}/keys/{}``: bounded label values."""
    parts = [p for p in path.split("?")[0].strip("/").split("/") if p]
    return f"{method} " + "/".join(p if i % 2 == 0 else "{}" for i, p in enumerate(parts))


# -- reading at scrape time -----------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FleetCollector(Collector):
    """Reads the fleet-wide numbers from Redis on every scrape."""

    def __init__(self, connection: redis.Redis, prefix: str, queues: Iterable[str] = ()) -> None:
        self.redis = connection
        self.prefix = prefix
        self.known_queues = tuple(queues)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("edgebot_metrics_redis_up", "1 if this scrape could read edgebot's Redis")
        try:
            metrics = list(self._collect())
        except redis.RedisError as exc:
            log.warning("metrics: cannot read Redis (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _collect(self) -> Iterator[Metric]:
        yield self._releases()
        yield self._stages()
        yield self._call_errors()
        yield from self._ratelimit_waits()
        yield from self._queues()
        yield from self._active()

    def _releases(self) -> Metric:
        family = CounterMetricFamily("edgebot_releases", "Releases that reached a final state, by outcome",
                                     labels=["outcome"])
        counts = {_text(k): int(v) for k, v in self.redis.hgetall(releases_key(self.prefix)).items()}  # type: ignore[union-attr]
        for outcome in sorted(FINAL_STATES | set(counts)):
            family.add_metric([outcome], counts.get(outcome, 0))
        return family

    def _stages(self) -> Metric:
        family = HistogramMetricFamily("edgebot_stage_duration_seconds",
                                       "Duration of each pipeline stage, observed when the release ends",
                                       labels=["stage"])
        stages = sorted(_text(s) for s in self.redis.smembers(stages_index_key(self.prefix)))  # type: ignore[union-attr]
        for stage in stages:
            raw = {_text(k): v for k, v in self.redis.hgetall(stage_key(self.prefix, stage)).items()}  # type: ignore[union-attr]
            cumulative, buckets = 0, []
            for bound in STAGE_BUCKETS:
                cumulative += int(raw.get(_bucket_field(bound), 0))
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric([stage], buckets, float(raw.get("sum", 0.0)))
        return family

    def _call_errors(self) -> Metric:
        family = CounterMetricFamily("edgebot_call_errors", "Failed Slack Web API and Horizon Exchange calls",
                                     labels=["system", "call", "reason"])
        for field, value in sorted(self.redis.hgetall(call_errors_key(self.prefix)).items()):  # type: ignore[union-attr]
            labels = _text(field).split(_SEP)
            if len(labels) == 3:
                family.add_metric(labels, int(value))
        return family

    def _ratelimit_waits(self) -> Iterator[Metric]:
        waits = CounterMetricFamily("edgebot_slack_ratelimit_waits", "Slack calls that waited for edgebot's shared "
                                    "rate-limit token bucket, by API method", labels=["method"])
        seconds = CounterMetricFamily("edgebot_slack_ratelimit_wait_seconds", "Seconds Slack calls waited for "
                                      "edgebot's shared rate-limit token bucket, by API method", labels=["method"])
        raw = {_text(k): v for k, v in self.redis.hgetall(ratelimit_waits_key(self.prefix)).items()}  # type: ignore[union-attr]
        methods = sorted({field.split(_SEP, 1)[1] for field in raw if _SEP in field})
        for method in methods:
            waits.add_metric([method], int(raw.get(f"count{_SEP}{method}", 0)))
            seconds.add_metric([method], float(raw.get(f"seconds{_SEP}{method}", 0.0)))
        yield waits
        yield seconds

    def _queues(self) -> Iterator[Metric]:
        from rq import Queue
        from rq import worker_registration as registration

        depth = GaugeMetricFamily("edgebot_queue_depth", "Jobs waiting in each edgebot RQ queue", labels=["queue"])
        workers = GaugeMetricFamily("edgebot_queue_workers", "Workers registered on each edgebot RQ queue",
                                    labels=["queue"])
        registered = {_text(k).removeprefix(Queue.redis_queue_namespace_prefix)
                      for k in self.redis.smembers(Queue.redis_queues_keys)}  # type: ignore[union-attr]
        for name in sorted({q for q in registered if q.startswith("edgebot-")} | set(self.known_queues)):
            queue = Queue(name, connection=self.redis)
            depth.add_metric([name], queue.count)
            workers.add_metric([name], len(registration.get_keys(queue=queue, connection=self.redis)))
        yield depth
        yield workers

    def _active(self) -> Iterator[Metric]:
        ids: set[str] = set()
        for key in self.redis.scan_iter(match=f"{self.prefix}:active:*", count=500):
            ids |= {_text(m) for m in self.redis.smembers(key)}  # type: ignore[union-attr]
        records = [json.loads(raw) for raw in (self.redis.mget([f"{self.prefix}:release:{i}" for i in sorted(ids)])
                                               if ids else []) if raw is not None]  # type: ignore[union-attr]
        by_state = {state: 0 for state in ACTIVE_STATES}
        idle = {state: 0.0 for state in ACTIVE_STATES}
        nodes = {state: 0 for state in _ROLLOUT_STATES}
        now = time.time()
        for record in records:
            state = record.get("state")
            if state in by_state:
                by_state[state] += 1
                updated = record.get("updated_at")
                if isinstance(updated, (int, float)) and not isinstance(updated, bool):
                    idle[state] = max(idle[state], now - updated)
            for node_state, count in _rollout_counts(record).items():
                nodes[node_state] = nodes.get(node_state, 0) + count
        active = GaugeMetricFamily("edgebot_releases_active", "Active releases by state", labels=["state"])
        for state in sorted(by_state):
            active.add_metric([state], by_state[state])
        yield active
        stuck = GaugeMetricFamily("edgebot_release_idle_seconds", "Longest time an active release in this state has "
                                  "gone without a change to its record (0: none in this state)", labels=["state"])
        for state in sorted(idle):
            stuck.add_metric([state], round(idle[state], 3))
        yield stuck
        yield GaugeMetricFamily("edgebot_approvals_pending", "Active releases waiting for an approval",
                                value=by_state[AWAITING_APPROVAL])
        rollout = GaugeMetricFamily("edgebot_rollout_nodes", "Nodes of the active releases' rollouts, by node state",
                                    labels=["state"])
        for state in sorted(nodes):
            rollout.add_metric([state], nodes[state])
        yield rollout


def _rollout_counts(record: Mapping[str, Any]) -> dict[str, int]:
    """Node counts by state of the rollout stages running now, from a release record's ``rollout`` field.

    The field is the list of rollout stages (``edgebot.release.RolloutStageState``): ``[{"name": "canary",
    "status": "running", "counts": {"total": 10, "new": 7, "old": 2, "failing": 1, "offline": 0, "waiting": 0}},
    …]``; the counts of each ``running`` stage are added (``total`` is their sum and is left out). A single
    ``{"counts": {…}}`` mapping is read the same way. A record without the field (no rollout, or written by a version
    without rollouts) counts nothing; so does anything malformed.
    """
    rollout = record.get("rollout")
    if isinstance(rollout, Mapping):
        stages: list[Any] = [{"status": "running", **rollout}]
    elif isinstance(rollout, list):
        stages = rollout
    else:
        return {}
    totals: dict[str, int] = {}
    for stage in stages:
        if not isinstance(stage, Mapping) or stage.get("status") != "running":
            continue
        counts = stage.get("counts")
        if not isinstance(counts, Mapping):
            continue
        for state, count in counts.items():
            if state != "total" and isinstance(count, int) and not isinstance(count, bool) and count >= 0:
                totals[str(state)] = totals.get(str(state), 0) + count
    return totals


def edgebot_queues(config: Any) -> list[str]:
    """Every queue the config implies (the publish queue, one build queue per arch of a catalog service), so the
    depth and worker count of a queue nobody has used yet are reported as 0 rather than missing."""
    from edgebot.jobs import PUBLISH_QUEUE, build_queue

    arches = sorted({arch for service in config.services.values() for arch in service.arches})
    return [PUBLISH_QUEUE, *(build_queue(arch) for arch in arches)]


# -- exposition -----------------------------------------------------------------------------------------------------

def build_registry(connection: redis.Redis, prefix: str, queues: Iterable[str] = (), *, fleet: bool = True,
                   extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """This process's own collectors (CPU, memory, open fds, GC, and ``extra``), plus the fleet-wide one if
    ``fleet`` (``settings.metrics_fleet``)."""
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    registry = CollectorRegistry(auto_describe=False)
    if fleet:
        registry.register(FleetCollector(connection, prefix, queues))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, *extra):
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The body and content type of a ``/metrics`` answer."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
