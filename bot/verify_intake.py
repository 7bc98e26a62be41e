"""`/edge verify SERVICE VERSION [--org ORG]` (issue 15): the bot's side. It holds no Exchange credential, so it only
checks what it can (the catalog, the org, that it can post in the channel) and queues the verify job on the publish
queue (``Step.VERIFY``, id from the command and the minute: the same command twice is one job); the worker posts the
report in the channel (``workers/verify_job.py``). Reading is not releasing: anyone in the channel may ask."""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Any

from rq.exceptions import DuplicateJobError

from bot.grammar import VerifyCommand
from bot.intake import ChannelCheck
from edgebot import fleet_messages, messages
from edgebot.config import Config
from edgebot.errors import UsageError
from edgebot.jobs import Step, enqueue_step
from edgebot.store import ReleaseStore


def verify_job_id(team_id: str, channel_id: str, service: str, version: str, org: str, now: float) -> str:
    """The verify id (``v-`` + 16 hex digits) of the command in this channel and minute (hashlib only: the bot does
    not import the workers)."""
    digest = hashlib.sha256("\0".join((team_id, channel_id, service, version, org, str(int(now // 60))))
                            .encode()).hexdigest()
    return f"v-{digest[:16]}"


def accept_verify(parsed: VerifyCommand, command: dict[str, Any], config: Config, store: ReleaseStore,
                  channels: ChannelCheck) -> messages.Message:
    service = config.services.get(parsed.service)
    if service is None:
        known = ", ".join(f"`{s}`" for s in sorted(config.services))
        raise UsageError(f"`{parsed.service}` is not in edgebot's catalog. Known services: {known}.",
                         messages.VERIFY_USAGE)
    org = parsed.org or service.org
    if org not in service.allowed_orgs:
        raise UsageError(f"Org `{org}` is not one the catalog allows for `{service.name}`: "
                         + ", ".join(f"`{o}`" for o in service.allowed_orgs) + ".", messages.VERIFY_USAGE)
    team_id, channel_id = command.get("team_id", ""), command.get("channel_id", "")
    channels.require_member(team_id, channel_id)  # the report is posted there
    verify_id = verify_job_id(team_id, channel_id, service.name, parsed.version, org, time.time())
    with contextlib.suppress(DuplicateJobError):  # the same command this minute: that job posts the report
        enqueue_step(store.redis, config.settings, Step.VERIFY, verify_id, service.name, parsed.version, org,
                     team_id, channel_id, unique=True)
    return fleet_messages.verify_queued(service.name, parsed.version, org)
