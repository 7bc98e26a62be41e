"""Registry tokens stored for nodes (dockauths): recorded at publish, checked daily, refreshed on demand.

An OpenShift service-account token in a dockauth has an expiry (its JWT ``exp``); when it passes, nodes can no longer
pull the version's image, silently (the agent declines the agreement). So:

* at publish, the publish worker records each dockauth's registry, user and expiry per version and arch in Redis
  (``edgebot/dockauth_records.py``; never the token), and makes sure the daily check is scheduled;
* the daily check (a publish-queue job, ``Step.CHECK_DOCKAUTHS``, id ``edgebot-dockauth-check-<slot>``) reads the
  Exchange dockauths of the versions the service's catalog policies and patterns currently pin
  (``workers/rollout.pinned``), records them, and warns in the service's channel, once per warning window, about
  each token expiring within ``settings.dockauth_expiry_warning``; it schedules its next run in the MULTI of its own
  record write (a lost run is re-scheduled by the next publish: the schedule marker expires);
* ``edgebot dockauth refresh SERVICE [--org ORG]`` replaces those dockauths with the current pull credential of the
  registry they name: ``PUT orgs/{org}/services/{service}/dockauths/{dockauthid}`` with the POST's body (exchange-api
  ``route/service/dockerauth/DockerAuth.scala`` putDockerAuth, ``PostPutServiceDockAuthRequest.scala``).

Tokens are read from the Exchange only to decode their ``exp``; they are never logged, printed or stored.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from edgebot import dockauth_records, fleet_messages
from edgebot.config import ServiceConfig
from edgebot.dockauth_records import DockauthRecord
from edgebot.errors import UsageError
from edgebot.jobs import DOCKAUTH_CHECK_OWNER, Step, enqueue_step
from edgebot.release import Release
from edgebot.secrets import Secret
from edgebot.settings import Settings
from workers.context import WorkerContext
from workers.exchange import ExchangeClient, service_id
from workers.registries import jwt_expiry
from workers.rollout import pinned

log = logging.getLogger(__name__)


# -- at publish -------------------------------------------------------------------------------------------------------

def record_published(ctx: WorkerContext, release: Release, registry_host: str,
                     credentials: tuple[str, Secret] | None) -> None:
    """Record the dockauth this release stored for each arch (registry, user, expiry; never the token)."""
    if credentials is None or release.dry_run:
        return
    username, token = credentials
    expiry = jwt_expiry(token.reveal())
    now = time.time()
    records = []
    for arch in release.arches:
        res = release.result(arch)
        url = str(res.definition.get("url", ""))
        if url and res.service_id:
            records.append(DockauthRecord(org=release.org, service=release.service, url=url, version=release.version,
                                          arch=arch, registry=registry_host, username=username, expires_at=expiry,
                                          service_id=res.service_id, checked_at=now))
    settings = ctx.config.settings
    dockauth_records.save(ctx.redis, settings, records)
    ensure_scheduled(ctx.redis, settings)


# -- the schedule -----------------------------------------------------------------------------------------------------

def _schedule_key(settings: Settings) -> str:
    return f"{settings.key_prefix}:dockauth-check:next"


def _next_slot(settings: Settings, now: float) -> int:
    return int(now // max(1, settings.dockauth_check_interval)) + 1


def _schedule(connection: Any, settings: Settings, slot: int, now: float, pipe: Any) -> None:
    interval = max(1, settings.dockauth_check_interval)
    pipe.set(_schedule_key(settings), str(slot), ex=2 * interval + 60)
    enqueue_step(connection, settings, Step.CHECK_DOCKAUTHS, DOCKAUTH_CHECK_OWNER, pipe=pipe,
                 delay=max(0.0, slot * interval - now), tag=str(slot))


def ensure_scheduled(connection: Any, settings: Settings, now: float | None = None) -> bool:
    """Schedule the next daily check unless one is (the marker is set NX; it expires if that run is lost)."""
    now = time.time() if now is None else now
    slot = _next_slot(settings, now)
    if not connection.set(_schedule_key(settings), str(slot), nx=True, ex=2 * max(1, settings.dockauth_check_interval)
                          + 60):
        return False
    with connection.pipeline() as pipe:
        _schedule(connection, settings, slot, now, pipe)
        pipe.execute()
    return True


# -- which versions are deployed, and their dockauths -----------------------------------------------------------------

def deployed_versions(client: ExchangeClient, service: ServiceConfig, org: str, url: str,
                      recorded: list[DockauthRecord]) -> set[tuple[str, str]]:
    """(version, arch) the service's catalog policies and patterns pin now; without rollout targets, the versions
    edgebot recorded at publish."""
    if not service.rollout:
        return {(r.version, r.arch) for r in recorded}
    found: set[tuple[str, str]] = set()
    for stage in service.rollout:
        for target in stage.targets:
            body = client.get_deployment_object(target.kind, org, target.name)
            if body is None:
                continue
            for arch, versions in pinned(target.kind, body, org, url).items():
                arches = service.arches if arch in ("*", "") else (arch,)
                found |= {(version, a) for version in versions for a in arches}
    return found


def live_records(client: ExchangeClient, service: ServiceConfig, org: str, url: str,
                 deployed: set[tuple[str, str]], now: float) -> list[DockauthRecord]:
    """What the Exchange holds for the deployed versions, one record per dockauth (the token only decoded)."""
    records: list[DockauthRecord] = []
    for version, arch in sorted(deployed):
        sid = service_id(url, version, arch)
        for auth in client.list_dockauths(org, sid):
            token = str(auth.get("token") or "")
            records.append(DockauthRecord(
                org=org, service=service.name, url=url, version=version, arch=arch,
                registry=str(auth.get("registry", "")), username=str(auth.get("username", "")),
                expires_at=jwt_expiry(token), service_id=sid, dockauth_id=_int(auth.get("dockAuthId")),
                checked_at=now))
    return records


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _url(recorded: list[DockauthRecord]) -> str:
    return next((r.url for r in reversed(recorded) if r.url), "")


# -- the daily check --------------------------------------------------------------------------------------------------

def check(ctx: WorkerContext, now: float | None = None) -> list[DockauthRecord]:
    """Check every catalog service in each of its orgs; warn about expiring tokens. Returns those warned about."""
    now = time.time() if now is None else now
    settings = ctx.config.settings
    warned: list[DockauthRecord] = []
    for service in ctx.config.services.values():
        for org in service.allowed_orgs:
            try:
                warned += _check_service(ctx, service, org, now)
            except Exception as exc:  # one service's Exchange trouble must not stop the others' check
                log.warning("dockauth check of %s in org %s failed: %s", service.name, org, type(exc).__name__)
    with ctx.redis.pipeline() as pipe:  # the run's own write re-schedules it
        pipe.set(f"{settings.key_prefix}:dockauth-check:last", str(now))
        _schedule(ctx.redis, settings, _next_slot(settings, now), now, pipe)
        pipe.execute()
    return warned


def _check_service(ctx: WorkerContext, service: ServiceConfig, org: str, now: float) -> list[DockauthRecord]:
    settings = ctx.config.settings
    recorded = dockauth_records.read(ctx.redis, settings, org, service.name)
    url = _url(recorded)
    if not url:  # edgebot never published it here: nothing recorded to follow
        return []
    client = ctx.exchange(org)
    try:
        deployed = deployed_versions(client, service, org, url, recorded)
        live = live_records(client, service, org, url, deployed, now)
    finally:
        client.close()
    fresh = {r.field for r in live}
    stale = [r for r in recorded if r.field not in fresh and (r.version, r.arch) not in deployed]
    if service.rollout:
        dockauth_records.remove(ctx.redis, settings, stale)  # no longer deployed: no longer followed
    dockauth_records.save(ctx.redis, settings, live)
    window = settings.dockauth_expiry_warning
    due = [r for r in dockauth_records.expiring(live, window=window, now=now)
           if ctx.redis.set(dockauth_records.warned_key(settings, r), "1", nx=True, ex=max(1, window))]
    if due:
        channel = service.channel or _latest_channel(ctx, org, service.name)
        if not channel:
            log.warning("dockauths of %s expire soon but it has no channel to warn in (catalog `channel`)",
                        service.name)
            return due
        msg = fleet_messages.dockauth_expiry_warning(service.name, org, due, now=now)
        try:
            ctx.reporter.client.chat_postMessage(channel=channel, **msg.as_kwargs())
        except Exception as exc:
            for r in due:  # not said: say it at the next run
                ctx.redis.delete(dockauth_records.warned_key(settings, r))
            log.warning("could not warn channel %s about expiring dockauths of %s: %s", channel, service.name,
                        type(exc).__name__)
    return due


def _latest_channel(ctx: WorkerContext, org: str, service: str) -> str:
    latest = ctx.store.history(org, service, 1)
    return latest[0].channel_id if latest else ""


# -- edgebot dockauth refresh -----------------------------------------------------------------------------------------

def refresh(ctx: WorkerContext, service_name: str, org: str | None = None, now: float | None = None) -> list[str]:
    """Replace the dockauths of the deployed versions with the current pull credential of the registry each names
    (a registry alias of the config with the same ``host``). Returns one line per dockauth (never a token)."""
    now = time.time() if now is None else now
    service = ctx.config.services.get(service_name)
    if service is None:
        known = ", ".join(sorted(ctx.config.services))
        raise UsageError(f"{service_name!r} is not in edgebot's catalog (known: {known})")
    org = org or service.org
    if org not in service.allowed_orgs:
        raise UsageError(f"{service_name} is not published to org {org!r} (its orgs: "
                         f"{', '.join(service.allowed_orgs)})")
    settings = ctx.config.settings
    recorded = dockauth_records.read(ctx.redis, settings, org, service.name)
    url = _url(recorded)
    if not url:
        raise UsageError(f"edgebot has recorded no published version of {service_name} in org {org}: nothing to "
                         "refresh (publish it with edgebot first)")
    credentials: dict[str, tuple[str, str, str]] = {}  # host -> (alias, user, token)
    for alias, registry in sorted(ctx.config.registries.items()):
        creds = ctx.node_credentials(registry) if registry.node_credentials() is not None else None
        if creds is not None and registry.host not in credentials:
            credentials[registry.host] = (alias, creds[0], creds[1].reveal())
    lines: list[str] = []
    client = ctx.exchange(org)
    try:
        deployed = deployed_versions(client, service, org, url, recorded)
        live = live_records(client, service, org, url, deployed, now)
        current = {(a.get("dockAuthId"), a.get("registry")): a for r in {x.service_id for x in live}
                   for a in client.list_dockauths(org, r)}
        updated: list[DockauthRecord] = []
        for record in live:
            where = f"{org}/{record.service_id} dockauth {record.dockauth_id} ({record.registry})"
            cred = credentials.get(record.registry)
            if cred is None or record.dockauth_id is None:
                lines.append(fleet_messages.dockauth_refresh_line("skipped", where))
                updated.append(record)
                continue
            alias, username, token = cred
            stored = current.get((record.dockauth_id, record.registry), {})
            expiry = jwt_expiry(token)
            if stored.get("token") == token and stored.get("username") == username:
                lines.append(fleet_messages.dockauth_refresh_line("unchanged", where, alias=alias, expires_at=expiry,
                                                            now=now))
                updated.append(record)
                continue
            client.update_dockauth(org, record.service_id, record.dockauth_id, record.registry, username, token)
            lines.append(fleet_messages.dockauth_refresh_line("replaced", where, alias=alias, username=username,
                                                        expires_at=expiry, was=record.expires_at, now=now))
            updated.append(replace(record, username=username, expires_at=expiry, checked_at=now))
    finally:
        client.close()
    dockauth_records.save(ctx.redis, settings, updated)
    if not lines:
        lines.append(f"no dockauth found on the deployed versions of {service_name} in org {org}")
    return lines
