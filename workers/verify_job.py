"""`/edge verify SERVICE VERSION [--org ORG]` and `edgebot verify …`: a catalog service's version, checked by
:mod:`workers.verify` (its URL and expected service policy read from the source at the version's git ref).

The bot holds no Exchange credentials, so `/edge verify` only queues :func:`run` on the publish queue (job id
``v-<hash of channel, service, version, org, minute>-verify``: the same command twice in a minute is one job); the job
posts the report in the channel, as a message of its own. ``edgebot verify`` prints the same report.
"""

from __future__ import annotations

import logging
from typing import Any

from edgebot import fleet_messages
from edgebot.release import Release
from workers.context import WorkerContext
from workers.verify import Report, verify_version

log = logging.getLogger(__name__)


def for_catalog(ctx: WorkerContext, service_name: str, version: str, org: str) -> Report:
    """`/edge verify`, `edgebot verify`: the catalog service's version (its URL from the definition at the version's git
    ref, as deploy reads it; the source's service policy, when it has a valid one, as the expected policy), every arch
    of the catalog. StepFailed when the source has no such version."""
    from edgebot.errors import StepFailed
    from workers import deploy, service_policy

    service = ctx.config.services[service_name]
    probe = Release(release_id="verify", team_id="", channel_id="", user_id="", service=service_name, version=version,
                    org=org, registry=next(iter(ctx.config.registries)), arches=list(service.arches))
    sha, definitions = deploy.read_source(ctx, probe)
    try:
        expected: dict[str, dict[str, Any]] | None = service_policy.for_release(ctx, probe, sha, definitions)
    except StepFailed:
        expected = None  # the file is invalid: it was never published by edgebot; report what is there
    url = next(iter(definitions.values())).url
    with ctx.exchange(org) as client:
        return verify_version(ctx, client, org, url, version, service.arches, expected)


def run(ctx: WorkerContext, verify_id: str, service: str, version: str, org: str, team_id: str,
        channel_id: str) -> None:
    """The `/edge verify` job: the report (or why there is none) as a message of its own in the channel."""
    from edgebot.errors import StepFailed
    from workers.exchange import ExchangeError

    if service not in ctx.config.services:  # the catalog changed since the bot checked: nothing to read
        msg = fleet_messages.verify_failed(service, version, org, "the service is no longer in edgebot's catalog")
    else:
        try:
            report = for_catalog(ctx, service, version, org)
            msg = fleet_messages.verify_report(service, version, org, report.as_data())
        except (StepFailed, ExchangeError) as exc:
            msg = fleet_messages.verify_failed(service, version, org, str(exc))
    reporter = ctx.reporter
    if reporter.limiter is not None:
        reporter.limiter.acquire(team_id, "chat.postMessage")
    try:
        reporter.client.chat_postMessage(channel=channel_id, **msg.as_kwargs())
    except Exception as exc:  # noqa: BLE001 - logged: nobody else to tell
        log.warning("verify %s: posting the report failed: %s", verify_id, type(exc).__name__)

