"""`/edge rollout SERVICE [VERSION]`: how far the fleet runs a version, read-only and ephemeral.

The bot never talks to the Exchange. While a rollout of the org is being watched, the node-details answer of the
current poll interval is in Redis (shared by every rollout of the org): it is summarized here, live, with the same
pure code the watch uses (:mod:`edgebot.fleet_summary`). Otherwise the counts are those of the release record's last
poll, and the answer says so.
"""

from __future__ import annotations

import time

from edgebot import fleet_messages, messages, node_details
from edgebot.config import Config
from edgebot.fleet_summary import Target, summarize
from edgebot.release import Release
from edgebot.store import ReleaseStore

HISTORY_DEPTH = 25
"""How many past releases of the service are searched for its last rollout."""


def answer(service_name: str, version: str | None, config: Config, store: ReleaseStore) -> messages.Message:
    service = config.services.get(service_name)
    if service is None:
        known = ", ".join(f"`{s}`" for s in sorted(config.services))
        return messages.usage_error(f"`{service_name}` is not in edgebot's catalog. Known services: {known}.",
                                    messages.ROLLOUT_USAGE)
    if not service.rollout:
        return messages.usage_error(f"`{service_name}` has no rollout stages in the catalog: publishing it does not "
                                    "move any node.", messages.ROLLOUT_USAGE)
    releases = [r for r in store.history(service.org, service_name, HISTORY_DEPTH) if r.rollout]
    release: Release | None = next((r for r in releases if version in (None, r.version)), None) or \
        (releases[0] if releases else None)
    if release is None:
        return fleet_messages.rollout_state_message(service_name, None, version or "", [], live=False)
    wanted = version or release.version
    raw = store.redis.get(f"{config.settings.key_prefix}:rollout:node-details:{release.org}")
    try:
        nodes = node_details.decode(raw) if raw else None
    except node_details.NodeDetailsUnreadable:  # the watch halts on it and says why; show the recorded counts
        nodes = None
    stages: list[tuple[str, str, dict[str, int]]] = []
    for stage in release.rollout:
        if nodes is not None and stage.targets:
            url = str(release.results[release.arches[0]].definition.get("url", service_name))
            targets = [Target.from_info(t) for t in stage.targets]
            try:
                counts = summarize(nodes, org=release.org, url=url, version=wanted, targets=targets,
                                   offline_after=config.settings.rollout_offline_after, now=time.time()).as_dict()
            except ValueError:  # constraints that cannot be read: the watch halts the stage and says why
                counts = stage.counts if wanted == release.version else {}
        else:
            counts = stage.counts if wanted == release.version else {}
        stages.append((stage.name, stage.status, counts))
    return fleet_messages.rollout_state_message(service_name, release, wanted, stages, live=nodes is not None)
