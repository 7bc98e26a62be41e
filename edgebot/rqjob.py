"""Moved to edgebot.jobs (kept only until the tests' imports follow)."""

from edgebot.jobs import *  # noqa: F403
from edgebot.jobs import PUBLISH_QUEUE, SERIALIZER, EdgebotJob, build_queue, retry_policy  # noqa: F401


def job_id(release_id: str, step: str, arch: str = "") -> str:
    return "-".join(p for p in (release_id, step, arch) if p)
