"""`edgebot worker`: a real RQ worker on edgebot's queues, with edgebot's safe job class and JSON serializer.

    edgebot worker --arch amd64            builds amd64 images (needs a Docker Engine that builds amd64)
    edgebot worker --publish               source, signing and Exchange publish (holds the signing key)
    edgebot worker --publish --arch amd64  both, for small installs and the sandbox
    edgebot worker --arch auto             every arch its Engine builds: native, and through QEMU (workers.arches)

A build worker serves an emulated arch (QEMU) only while no native worker of that arch is live (workers.arches).

Every worker runs RQ's scheduler (``--with-scheduler``) for its queues: when the one holding a queue's scheduler lock
dies, another worker of that queue takes over at its next maintenance pass (``settings.maintenance_interval``), as
soon as the dead one's heartbeat is ``settings.scheduler_stale_after`` old (workers.reaper), not after RQ's fixed
61-second lock TTL. Publish workers (and only they: the reaper re-enqueues steps of every kind, which a build
worker's Redis user may not) also run edgebot's reaper every ``settings.reaper_interval`` seconds: steps whose lease
expired are resumed.

Roles (edgebot.redis_acl): a worker without ``--publish`` is a build worker. It authenticates as the build user,
holds no Slack token (``WorkerContext.reports_to_slack``) and reports through Redis; publish workers also serve the
build-reports queue and apply those reports. Each queue runs only its own steps (:func:`edgebot.jobs.allowed_on`,
checked against the queue the job was taken from): a job a build worker pushed onto the reports queue that names
any other function is refused, and its release, if it names one, fails with a security alert.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import threading
import time

import redis
from rq import Queue, Worker
from rq.job import Job

from edgebot import logs, metrics, redis_conn
from edgebot.config import load_config
from edgebot.errors import SecretUnavailable
from edgebot.jobs import PUBLISH_QUEUE, SERIALIZER, EdgebotJob, RefusedJob, build_queue, check_queue
from edgebot.redis_acl import BUILD_REPORTS_QUEUE
from edgebot.settings import Settings
from workers import arches as arch_support
from workers.arches import ArchSupport, native_marker_queue
from workers.health import start_health_server
from workers.vault import build_resolver


def queue_names(arches: list[str], publish: bool, native: tuple[str, ...] = ()) -> list[str]:
    names = [PUBLISH_QUEUE, BUILD_REPORTS_QUEUE] if publish else []
    names += [build_queue(a) for a in arches]
    names += [native_marker_queue(a) for a in arches if a in native]  # marks this worker native for a
    return names


def served_arches(requested: list[str], docker_url: str | None) -> list[ArchSupport]:
    """The arches a build worker serves (``auto``: every one its Engine builds), each native or emulated."""
    if not requested:
        return []
    try:
        found = arch_support.detect(docker_url)
    except Exception as exc:  # an Engine that cannot be reached: explicit arches still serve, as configured
        logging.getLogger(__name__).warning("cannot read the Docker Engine's arch (%s)", type(exc).__name__)
        found = arch_support.supported(platform.machine())
    return arch_support.plan(requested, found)


def run_worker(
    config_path: str, *, arches: list[str], publish: bool, burst: bool = False, name: str | None = None
) -> bool:
    os.environ["EDGEBOT_CONFIG"] = os.path.abspath(config_path)
    config = load_config(config_path)
    logs.configure_from(config.settings)
    resolver = build_resolver(config)
    from workers.context import resilient_redis

    password = resolver.resolve(config.redis_password).reveal() if config.redis_password else None
    connection = resilient_redis(config, password)
    metrics.install(connection, config.settings.key_prefix)
    served = served_arches(arches, config.docker_url)
    if served:
        print("edgebot worker: builds " + "; ".join(s.line() for s in served), flush=True)
    arches = [s.arch for s in served]
    names = queue_names(arches, publish, native=tuple(s.arch for s in served if s.native))
    if not names:
        raise SystemExit("edgebot worker: give --publish and/or --arch ARCH (which queues to serve)")
    _preload(arches, publish)
    if not publish:
        from workers import context

        context.current().reports_to_slack = False  # the work horses inherit it
    queues = [Queue(n, connection=connection, job_class=EdgebotJob, serializer=SERIALIZER) for n in names]
    worker = EdgebotWorker(
        queues,
        settings=config.settings,
        publish=publish,
        connection=connection,
        job_class=EdgebotJob,
        serializer=SERIALIZER,
        worker_ttl=config.settings.worker_ttl,
        maintenance_interval=config.settings.maintenance_interval,
        name=name,
        emulated=[s.arch for s in served if not s.native],
    )
    # its own connection, without the reconnect retries: /healthz and a scrape must answer "Redis is down" at once
    probe = redis_conn.from_config(config, password, socket_timeout=2, socket_connect_timeout=2)
    if not publish:  # the fleet-wide series read keys a build worker's Redis user may not (edgebot.redis_acl)
        config = dataclasses.replace(config, settings=dataclasses.replace(config.settings, metrics_fleet=False))
    server = start_health_server(probe, config, port=config.settings.metrics_port)
    if server is not None:
        server.health.worker_key = worker.key
    return worker.work(with_scheduler=True, burst=burst)


class EdgebotWorker(Worker):
    """RQ's worker plus edgebot's recovery checks in its loop (see workers.reaper).

    RQ checks ``should_run_maintenance_tasks`` before every dequeue and after every ``dequeue_timeout`` of waiting;
    the timeout is capped at the reaper interval so an idle worker reaps on time.
    """

    def __init__(self, *args: object, settings: Settings, publish: bool = True, emulated: list[str] | None = None,
                 **kwargs: object) -> None:
        self.edgebot_settings = settings  # before RQ's __init__, which reads dequeue_timeout
        self.reaps = publish
        self._last_reaped = 0.0
        self._audit_pass: threading.Thread | None = None
        self.emulated = list(emulated or [])
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def heartbeat(self, *args: object, **kwargs: object) -> None:
        super().heartbeat(*args, **kwargs)  # type: ignore[arg-type]
        if self.emulated and self.get_state() == "idle":  # before each dequeue (RQ heart-beats first)
            self._listen_around_native_workers()

    def _listen_around_native_workers(self) -> None:
        """Leave an emulated arch's build queue to the native workers of that arch while one is live (the queue
        list RQ's next dequeue reads; an idle wait of ``dequeue_timeout`` at most before it is read again)."""
        try:
            ttl = self.edgebot_settings.worker_ttl
            skip = {build_queue(a) for a in arch_support.deferred(self.connection, self.emulated, ttl)}
        except redis.RedisError:
            return  # keep the last list: RQ's own loop deals with a Redis that is down
        keep = [q for q in self.queues if q.name not in skip]
        if not keep:  # nothing left to serve now: wait on a queue that never gets jobs, then look again
            keep = [Queue(arch_support.PARKED_QUEUE, connection=self.connection, job_class=EdgebotJob,
                          serializer=SERIALIZER)]
        if [q.name for q in keep] != [q.name for q in self._ordered_queues]:
            self.log.info("building from %s", ", ".join(q.name for q in keep))
            self._ordered_queues = keep

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Refuse a job whose function does not run on the queue it was taken from (RQ then fails it: the job
        class checks the same in the work horse, see EdgebotJob)."""
        job.dequeued_from = queue.name  # type: ignore[attr-defined]
        try:
            check_queue(job, queue.name)
        except RefusedJob as refused:
            self.log.error("%s", refused)
            from workers.refused import alert

            alert(job, queue.name)
        super().execute_job(job, queue)

    @property
    def dequeue_timeout(self) -> int:
        return max(1, min(super().dequeue_timeout, int(self.edgebot_settings.reaper_interval)))

    @property
    def _reaper_due(self) -> bool:
        return self.reaps and time.monotonic() - self._last_reaped >= self.edgebot_settings.reaper_interval

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return bool(super().should_run_maintenance_tasks) or self._reaper_due

    def run_maintenance_tasks(self) -> None:
        if super().should_run_maintenance_tasks:
            if self.scheduler is not None:
                from workers.reaper import break_dead_scheduler_locks

                try:
                    break_dead_scheduler_locks(self.connection, self.queue_names(),
                                               self.edgebot_settings.scheduler_stale_after)
                except Exception:
                    self.log.exception("checking the scheduler locks failed")
            super().run_maintenance_tasks()
        if self._reaper_due:
            self._last_reaped = time.monotonic()
            from workers.reaper import reap

            try:
                reap(self.connection, self.edgebot_settings)
            except Exception:  # a reaper bug must never stop the worker; the next pass retries
                self.log.exception("the reaper failed")
            from workers.audit_ship import ship_in_background

            # the audit trail to its sink (edgebot.audit), in a thread: a slow sink never holds up the worker's loop
            self._audit_pass = ship_in_background(self.connection, self.edgebot_settings, self._audit_pass)


def _preload(arches: list[str], publish: bool = False) -> None:
    """Import the step code and build the context in the parent: RQ forks a work horse per job, and each fork then
    starts warm (no re-import of docker/httpx, no config re-read) instead of paying that on every step."""
    import workers.pipeline  # noqa: F401
    from workers import context

    if arches:
        import workers.images  # noqa: F401
    ctx = context.current()
    if publish:  # the Exchange clients' TLS context (CA bundle loaded once), inherited by every work horse
        from workers.exchange import tls_context

        tls_context(ctx.config.exchange.ca_cert)
    from workers.vault import VaultReader

    reader = ctx.resolver.vault
    if isinstance(reader, VaultReader):  # log in once here: the work horses inherit the token
        try:
            reader.login()
        except SecretUnavailable as exc:
            logging.getLogger(__name__).warning("cannot log in to Vault at start (%s); each job will try", exc)
    if publish and not ctx.config.signing.transit_key:
        try:  # OpenSSL checks the key's RSA parameters once here, not in every sign and publish job
            ctx.signer()
        except Exception as exc:  # the jobs report it, with the reference, where a user sees it
            logging.getLogger(__name__).warning("the signing key could not be loaded at start: %s",
                                                type(exc).__name__)
        finally:  # keep only the key's digest (workers.signing): each job reads the key itself, as before
            ctx.resolver.invalidate(ctx.config.signing.private_key)
