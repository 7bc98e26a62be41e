"""Every tunable of edgebot, with its default, in one place.

Values come from the ``[settings]`` table of the config file, then from ``EDGEBOT_<NAME>`` environment variables
(upper case), so a test or a deployment can set any TTL or interval to seconds without touching code.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Settings:
    # -- Redis / RQ ---------------------------------------------------------------------------------------------
    key_prefix: str = "edgebot"
    """Prefix of every Redis key edgebot writes (release records, locks, caches)."""
    release_ttl: int = 30 * 24 * 3600
    """Seconds a finished release record is kept (the audit history)."""
    job_timeout: int = 1800
    """Seconds one RQ job (a build, say) may run before RQ kills it."""
    job_result_ttl: int = 3600
    short_job_timeout: int = 60
    """Seconds a bookkeeping job (an approval or rollback request's expiry) may run."""
    scheduler_early_tolerance: float = 1.0
    """Seconds early a delayed job may run: RQ's scheduler enqueues it when its second is due, possibly a fraction
    before the exact time (an expiry that finds itself early re-schedules itself)."""
    worker_ttl: int = 60
    """RQ worker heartbeat TTL: a worker silent this long counts as dead."""
    maintenance_interval: int = 60
    """Seconds between RQ maintenance passes (dead-scheduler takeover, abandoned jobs)."""
    # -- observability (docs/production.md#metrics-and-logs) --------------------------------------------------------
    metrics_port: int = 0
    """Port of a worker's HTTP endpoint for /metrics and /healthz (0: off). The bot serves both on its own port."""
    metrics_fleet: bool = True
    """Whether this process's /metrics includes the fleet-wide ``edgebot_*`` series (read from Redis at each scrape).
    Every process reports the same values; turning it off on workers spares Redis when the bot already serves them."""
    log_format: str = "text"
    """``text`` (human-readable lines) or ``json`` (one JSON object per line, with the release id when known)."""
    log_level: str = "INFO"
    # -- Slack side ---------------------------------------------------------------------------------------------
    channel_check_ttl: int = 60
    """Seconds a positive "the bot is in this channel" answer is cached."""
    duplicate_window: int = 10
    """Seconds in which the same command from the same user in the same channel is the same release."""
    slack_update_per_minute: float = 50.0
    """chat.update calls per minute per workspace, shared by every worker (Slack's tier 3: ~50)."""
    slack_post_per_minute: float = 60.0
    """chat.postMessage calls per minute per workspace, shared by every worker."""
    slack_burst: int = 5
    """Calls a bucket may make at once before the per-minute rate applies."""
    slack_timeout: int = 15
    """Seconds one Slack Web API call may take (bot and workers)."""
    slack_ratelimited_retries: int = 30
    """How many 429 answers one Slack call rides out, waiting each Retry-After, before it gives up."""
    build_log_lines: int = 25
    """Lines of build log shown in the thread when a build fails."""
    bot_redis_timeout: float = 5.0
    """Seconds the bot waits for Redis to accept a connection, and for each command's answer, before the request
    fails (the user gets an apology, not silence)."""
    access_group_cache_ttl: float = 60.0
    """Seconds each bot process caches the members of a user group named in ``[access]`` (approvers' groups are
    read again at every click)."""
    max_request_bytes: int = 1024 * 1024
    """Largest request body the bot accepts on its Slack endpoint (Slack's own payloads are a few KiB): a larger one
    is answered 413 before anything reads it."""
    # -- pipeline -----------------------------------------------------------------------------------------------
    source_cache_dir: str = "/var/cache/edgebot/sources"
    work_dir: str = "/var/lib/edgebot/work"
    source_file_max_bytes: int = 1024 * 1024
    """Largest file read from a service's repository (service.definition.json, hzn.json, policy and pattern
    templates): a larger one fails the release, naming the file, before it is read."""
    cluster_archive_max_bytes: int = 10 * 1024 * 1024
    """Largest ``clusterDeployment`` operator YAML archive (.tar.gz) read from a service's repository, and largest
    size it may unpack to (workers/cluster.py)."""
    build_file_max_bytes: int = 1024 * 1024
    """Largest Dockerfile or .dockerignore a build accepts (each must be a regular file inside the checkout)."""
    build_memory: int = 2 * 1024**3
    """Bytes of memory each build container (a ``RUN`` step) may use; 0: no limit."""
    build_memory_swap: int = 2 * 1024**3
    """Bytes of memory + swap each build container may use (equal to ``build_memory``: no swap); 0: Docker's default
    (twice ``build_memory``), -1: unlimited swap."""
    build_cpu_shares: int = 512
    """CPU weight of build containers (Docker's default is 1024): builds yield to the worker itself; 0: default."""
    build_cpuset_cpus: str = ""
    """CPUs build containers may run on (``0-1``, ``0,2``); empty: all. (No CFS quota: see docs/configuration.md.)"""
    build_network_mode: str = "none"
    """Network of build containers: ``none`` (no network, the default), ``default``/``bridge``, ``host`` or a
    network's name (one network for every service this worker builds)."""
    step_retries: int = 3
    """Attempts of a step that failed transiently (registry or Exchange 5xx, timeouts), with backoff."""
    retry_backoff: float = 2.0
    """Base of the exponential backoff between transient-failure retries (seconds)."""
    exchange_timeout: float = 30.0
    """Seconds one Exchange HTTP call may take."""
    registry_timeout: float = 30.0
    """Seconds one Registry API call of the publish worker may take (reading back a pushed manifest before signing)."""
    docker_timeout: float = 600.0
    """Seconds one Docker Engine API call (a build, a push) may take before the worker gives up on it."""
    worker_redis_timeout: float = 30.0
    """Socket timeout of a worker's Redis connection (a command that gets no answer this long is retried)."""
    redis_backoff_cap: float = 1.0
    """Longest pause, in seconds, between two reconnection attempts while Redis is down (see redis_reconnect_for)."""
    thread_lock_timeout: float = 30.0
    """Seconds the per-release lock around a thread repaint (re-read → render → Slack call) is held at most."""
    report_flush_timeout: float = 120.0
    """Seconds a job waits, when its step ends, for its queued thread repaints to reach Slack."""
    # -- registries ---------------------------------------------------------------------------------------------
    docker_certs_dir: str = "/etc/docker/certs.d"
    """Where the build worker's local Docker Engine looks for registry CAs (``<dir>/<host[:port]>/ca.crt``)."""
    install_registry_ca: bool = True
    """Let build workers install an OpenShift route's CA into ``docker_certs_dir`` when it is missing (needs root)."""
    token_expiry_warning: int = 7 * 24 * 3600
    """Seconds before a registry service-account token expires (its JWT ``exp``) from which the thread warns."""
    dockauth_check_interval: int = 24 * 3600
    """Seconds between two runs of the scheduled check of the dockauths of deployed versions (publish queue)."""
    dockauth_expiry_warning: int = 14 * 24 * 3600
    """A dockauth token of a deployed version expiring within this many seconds is warned about in the service's
    channel (once per this window) and shown by ``/edge status SERVICE``."""
    # -- rollout (docs/configuration.md, "Rollout") ----------------------------------------------------------------
    rollout_poll_interval: float = 15.0
    """Seconds between two polls of a rollout; one ``GET orgs/{org}/node-details`` per org per interval."""
    rollout_offline_after: float = 600.0
    """A node whose last heartbeat is older than this many seconds counts as offline (counted, not waited for)."""
    rollout_healthy_share: float = 1.0
    """Share of a stage's online nodes that must run the new version for the stage to end healthy (0..1)."""
    rollout_failure_threshold: int = 0
    """A stage fails when more than this many of its nodes fail on the new version."""
    rollout_stage_timeout: float = 1800.0
    """Seconds a stage may take to become healthy before it fails."""
    rollout_auto_rollback: bool = True
    """On a failed stage, re-point every policy/pattern edgebot changed to the previous version."""
    rollout_drop_fallback: bool = False
    """Once a stage is healthy, drop the previous version (the priority-2 fallback) from its policies (never from a
    pattern: that is a second pattern change, which restarts every node of the pattern again). Off by default: the
    fallback is IEAM's per-node safety net for nodes that join or fail later."""
    rollout_fallback_retries: int = 2
    """``retries`` of the priority-1 version before an agent falls back to priority 2."""
    rollout_fallback_retry_durations: int = 3600
    """``retry_durations`` (seconds) in which those retries are counted."""
    rollout_pull_grace: float = 900.0
    """Seconds a node of a stage may report its new containers ``"not started"`` (pulling) or nothing yet before it
    counts as failing; until then it counts as starting."""
    rollout_diagnose_after: float = 600.0
    """Seconds after a stage begins from which its nodes still heartbeating on the old version are diagnosed by
    edgebot (signature against the service's keys, dockauth registry, arch), since the agent never says why."""
    rollout_report_nodes: int = 10
    """Failing nodes listed by name, with their error, when a stage fails."""
    rollout_lock_timeout: float = 30.0
    """Seconds the per-policy/pattern write lock is held at most (re-read → PUT → verify)."""
    # -- leases, locks, crash recovery (see docs/recovery.md) ------------------------------------------------------
    lease_ttl: float = 30.0
    """Seconds a step's lease lives without renewal: a dead holder's step is resumed this long after it died."""
    lease_renew_interval: float = 10.0
    """Seconds between renewals of a running step's lease (keep it well under ``lease_ttl``)."""
    reaper_interval: float = 10.0
    """Seconds between a worker's checks for steps whose lease expired (they are re-enqueued as a new attempt)."""
    step_max_attempts: int = 3
    """Attempts a step gets when its holder keeps dying (a build killed by the OOM killer, a host lost): the reaper
    fails the release, naming the step and the attempts, instead of resuming it once more."""
    publish_lock_ttl: int = 24 * 3600
    """Seconds the one-publish-per-service lock outlives the last update of an abandoned release."""
    redis_reconnect_for: float = 60.0
    """Seconds a worker keeps retrying Redis commands through a connection loss (a Redis restart) before failing."""
    scheduler_stale_after: float = 15.0
    """Seconds without a heartbeat after which a worker takes the RQ scheduler lock from a dead scheduler."""
    # -- buildah, the daemonless builder (docs/configuration.md, "Build inputs"; docs/architecture.md) ------------
    buildah_dir: str = ""
    """Where build workers keep buildah's image store (``--root``, ``--runroot`` under it): empty for
    ``<work_dir>/buildah``. It is the host's local layer cache; workers of one host may share it (containers/storage
    locks it)."""
    buildah_storage_driver: str = "vfs"
    """``--storage-driver``: ``vfs`` works in any container (copies whole layers: slower, more disk); ``overlay``
    when the kernel allows overlay mounts where the worker runs."""
    buildah_isolation: str = "oci"
    """``--isolation`` of ``RUN`` steps: ``oci`` (namespaces; the build network setting and the limits apply) or
    ``chroot`` (for a pod without the privileges ``oci`` needs; then ``RUN`` steps share the host network)."""
    buildah_timeout: float = 3600.0
    """Seconds one ``buildah bud`` or ``buildah push`` may run before it is killed and the step fails."""
    # smoke run per arch (issue 14, workers/smoke_run.py): limits of the container each built image runs its
    # ``[services.X.smoke]`` command in (no network, always removed)
    smoke_memory: int = 512 * 1024**2
    """Bytes of memory (and memory + swap: no swap) the smoke run's container may use; 0: no limit."""
    smoke_pids: int = 256
    """Processes the smoke run's container may have at once; 0: no limit."""
    smoke_log_lines: int = 15
    """The smoke run's last output lines kept for the approval card and a failure's thread message."""
    # -- Redis high availability (edgebot.durability, docs/production.md#redis-high-availability) -------------------
    redis_wait_replicas: int = 0
    """Replicas that must confirm a release's intake (and an approval or rejection) before the bot acknowledges it
    (Redis ``WAIT``). 0: off, nothing is asked (a single node). Behind Sentinel: 1 (or the number of replicas)."""
    redis_wait_timeout_ms: int = 1000
    """Milliseconds the bot waits for those replicas; fewer by then: the release is withdrawn and the requester told
    "not queued, send it again" (an approval: told it may be lost in a failover)."""
    # a build you can watch (issue 14, workers/build_log.py): progress repaints and the full log as a file
    build_progress_interval: float = 5.0
    """Seconds between two progress reports ("step N/M") of one arch's build; each is a build report and a repaint
    of the build stage message (through the shared Slack rate limiter)."""
    build_log_max_bytes: int = 5 * 1024**2
    """Bytes of one arch's build log kept for the file attached to the thread; a longer log keeps its head and tail
    with a marker line where it was cut."""
    build_log_ttl: int = 24 * 3600
    """Seconds the build log waits in Redis for a publish worker to attach it to the thread."""
    # -- audit trail (edgebot/audit.py, workers/audit_ship.py; docs/production.md, "Audit trail") ----------------
    audit_stream_max: int = 100_000
    """About how many audit entries the Redis stream ``<prefix>:audit`` keeps (XADD MAXLEN ~): the buffer between an
    action and the sink. The sink is what users keep; entries trimmed before they were shipped are lost."""
    audit_batch: int = 500
    """Audit lines the shipper reads and sends to the sink at once (one NDJSON POST for an HTTP sink)."""
    audit_http_timeout: float = 10.0
    """Seconds one POST to an HTTP audit sink may take before it counts as failed (and is retried)."""
    audit_http_retries: int = 3
    """Retries of a POST that failed with a 5xx or a timeout, in one shipping pass (then the next pass tries again)."""
    # -- push (workers.skopeo_push) --
    push_tool: str = "skopeo"
    """How build workers push: ``"skopeo"`` (``skopeo copy docker-daemon:… docker://…``: parallel gzip, streamed,
    blobs the registry has skipped; the push leaves from the worker's host) or ``"engine"`` (the Docker Engine's own
    push, single-threaded gzip, leaves from the Engine's host: for a remote Engine the worker cannot reach the
    registry from)."""
    push_compress_format: str = "gzip"
    """Layer compression of a skopeo push (``--dest-compress-format``): ``gzip`` is what every Docker Engine on the
    nodes can pull (``zstd`` needs Docker 23+/containerd 1.5+ on every node)."""
    push_compress_level: int = 0
    """gzip level of a skopeo push (``--dest-compress-level``, 1 fastest … 9 smallest; 0: skopeo's default). The
    compressed bytes, hence the image digest, depend on it: changing it makes a rebuild of an already published
    version a different image (refused without ``--overwrite``)."""
    push_retry_times: int = 0
    """skopeo's own retries of a failed blob or manifest upload (``--retry-times``); 0: the step's retries decide."""

    @classmethod
    def load(cls, table: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults, overridden by the config file's ``[settings]`` table, overridden by ``EDGEBOT_*`` env vars."""
        environ = os.environ if environ is None else environ
        known = {f.name: f for f in fields(cls)}
        values: dict[str, tuple[Any, bool]] = {}
        problems: list[str] = []
        for name, value in (table or {}).items():
            if name not in known:
                problems.append(f"unknown setting {name!r} in [settings]")
                continue
            values[name] = (value, False)
        for name in known:
            env_value = environ.get(f"EDGEBOT_{name.upper()}")
            if env_value is not None:
                values[name] = (env_value, True)
        coerced: dict[str, Any] = {}
        for name, (value, from_env) in values.items():
            try:
                coerced[name] = _coerce(known[name], value, from_env=from_env)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:  # every mistake at once, not the first one only
            unknown = [p for p in problems if p.startswith("unknown setting")]
            tail = f"; known: {', '.join(sorted(known))}" if unknown else ""
            raise ValueError("; ".join(problems) + tail)
        return dataclasses.replace(cls(), **coerced)


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _coerce(field: dataclasses.Field[Any], value: Any, *, from_env: bool = False) -> Any:
    """A setting's value as its type says. Strict in the file (TOML has types: a boolean is ``true``/``false``, a
    number is not a string): ``rollout_auto_rollback = "flase"`` is an error, not False. An ``EDGEBOT_*``
    variable is text: booleans are 1/true/yes/on or 0/false/no/off, numbers must parse."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    where = f"EDGEBOT_{field.name.upper()}" if from_env else f"setting {field.name!r}"
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if from_env and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        hint = "1/true/yes/on or 0/false/no/off" if from_env else "true or false, without quotes"
        raise ValueError(f"{where} must be a boolean ({hint}), got {value!r}")
    if kind in ("int", "float"):
        if isinstance(value, bool) or (not from_env and not isinstance(value, (int, float))):
            raise ValueError(f"{where} must be a number (an {kind}, without quotes), got {value!r}")
        try:
            number = float(value) if kind == "float" else int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be an {kind}, got {value!r}") from None
        if kind == "int" and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{where} must be a whole number, got {value!r}")
        return number
    if not from_env and not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {value!r}")
    return str(value)
