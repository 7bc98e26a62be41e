"""`edgebot worker`: a real RQ worker on edgebot's queues, with edgebot's safe job class and JSON serializer.

    edgebot worker --arch amd64            builds amd64 images (needs a Docker Engine that builds amd64)
    edgebot worker --publish               source, signing and Exchange publish (holds the signing key)
    edgebot worker --publish --arch amd64  both, for small installs and the sandbox

Every worker runs RQ's scheduler (``--with-scheduler``): when the one holding the scheduler lock dies, another takes
over at its next maintenance pass (``settings.maintenance_interval``).
"""

from __future__ import annotations

import logging
import os

from rq import Queue, Worker

from edgebot import logs, metrics
from edgebot.config import load_config
from edgebot.errors import SecretUnavailable
from edgebot.rqjob import PUBLISH_QUEUE, SERIALIZER, EdgebotJob, build_queue
from workers.health import start_health_server
from workers.vault import build_resolver


def queue_names(arches: list[str], publish: bool) -> list[str]:
    names = [PUBLISH_QUEUE] if publish else []
    names += [build_queue(a) for a in arches]
    return names


def run_worker(
    config_path: str, *, arches: list[str], publish: bool, burst: bool = False, name: str | None = None
) -> bool:
    os.environ["EDGEBOT_CONFIG"] = os.path.abspath(config_path)
    config = load_config(config_path)
    logs.configure_from(config.settings)
    resolver = build_resolver(config)
    import redis

    password = resolver.resolve(config.redis_password).reveal() if config.redis_password else None
    connection = redis.Redis.from_url(config.redis_url, password=password)
    metrics.install(connection, config.settings.key_prefix)
    names = queue_names(arches, publish)
    if not names:
        raise SystemExit("edgebot worker: give --publish and/or --arch ARCH (which queues to serve)")
    _preload(arches)
    queues = [Queue(n, connection=connection, job_class=EdgebotJob, serializer=SERIALIZER) for n in names]
    worker = Worker(
        queues,
        connection=connection,
        job_class=EdgebotJob,
        serializer=SERIALIZER,
        worker_ttl=config.settings.worker_ttl,
        maintenance_interval=config.settings.maintenance_interval,
        name=name,
    )
    server = start_health_server(connection, config, port=config.settings.metrics_port)
    if server is not None:
        server.health.worker_key = worker.key
    return worker.work(with_scheduler=True, burst=burst)


def _preload(arches: list[str]) -> None:
    """Import the step code and build the context in the parent: RQ forks a work horse per job, and each fork then
    starts warm (no re-import of docker/httpx, no config re-read) instead of paying that on every step."""
    import workers.pipeline  # noqa: F401
    from workers import context

    if arches:
        import workers.images  # noqa: F401
    ctx = context.current()
    from workers.vault import VaultReader

    reader = ctx.resolver.vault
    if isinstance(reader, VaultReader):  # log in once here: the work horses inherit the token
        try:
            reader.login()
        except SecretUnavailable as exc:
            logging.getLogger(__name__).warning("cannot log in to Vault at start (%s); each job will try", exc)
