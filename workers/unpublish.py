"""No half publish: when the publish step fails for good, undo what this release created in the Exchange and record
exactly what is left there, per arch.

A transient failure (the key PUT or a dockauth POST answered 502) is retried by RQ: the retry finds the service this
release POSTed (recognized by its own signature, see ``pipeline._action``) and adds what is missing. This module runs
when there is no retry left, or the failure is permanent (a 403 or 400 on the key or a dockauth): it is the publish
job's ``fail`` handler (``workers/jobs.py``), run under the step's lease before the release is marked failed.

* A service this release POSTed (``ArchResult.exchange_write == "create"`` and the live deployment signature is the
  release's own) is DELETEd, in every arch: exchange-api ``route/service/Service.scala`` deleteService answers 204 and
  the service's keys, dockauths and policy go with it (their tables' foreign keys cascade on delete,
  ``table/service/key/ServiceKeys.scala``, ``table/service/dockerauth/ServiceDockAuths.scala``).
* A version that existed before this release (an ``--overwrite`` PUT, or an "already published" one) is never
  deleted: what it holds now (this release's content or the earlier one, the key, the dockauth registries) is said.

The result goes to ``ArchResult.exchange_state``; the summary (``messages.exchange_state_lines``) shows it.
"""

from __future__ import annotations

import logging
from typing import Any

from edgebot.lease import Lease
from edgebot.release import RUNNING, Release
from workers import progress
from workers.context import WorkerContext
from workers.exchange import ExchangeClient, ExchangeError, service_id

log = logging.getLogger(__name__)


def publish_failed(ctx: WorkerContext, release_id: str, message: str, detail: list[str] | None = None) -> None:
    """The publish job's failure handler: undo this release's creations, record what is left, then fail."""
    release = ctx.store.require(release_id)
    if not release.is_final and not release.dry_run and release.stage("publish").status == RUNNING:
        _undo_and_record(ctx, release, fence=ctx.lease)
    progress.fail(ctx, release_id, message, detail)


def undo_after_give_up(ctx: WorkerContext, release_id: str) -> None:
    """The reaper gave up on a publish step whose workers kept dying (the release is failed already): the same undo
    and record as :func:`publish_failed`, so a release failed by the reaper leaves no half publish either."""
    release = ctx.store.require(release_id)
    if release.dry_run or not any(release.result(a).exchange_write for a in release.arches):
        return  # no attempt got as far as a service write: nothing of this release is in the Exchange
    _undo_and_record(ctx, release)


def _undo_and_record(ctx: WorkerContext, release: Release, fence: Lease | None = None) -> None:
    states = exchange_after_failure(ctx, release)

    def keep(r: Release) -> None:
        for arch, state in states.items():
            r.result(arch).exchange_state = state

    ctx.store.update(release.release_id, keep, fence=fence)


def exchange_after_failure(ctx: WorkerContext, release: Release) -> dict[str, dict[str, Any]]:
    """Per arch: undo this release's POST, then what the Exchange holds (never raises: an unreadable Exchange is
    reported as such, with the command that finishes the job by hand)."""
    states: dict[str, dict[str, Any]] = {}
    try:
        client = ctx.exchange(release.org)
    except Exception as exc:  # no client: say it, per arch
        reason = _reason(exc)
        return {arch: {"service_id": _sid(release, arch), "service": "unknown", "error": reason}
                for arch in release.arches}
    key_name = release.key_name or ctx.config.signing.key_name
    try:
        for arch in release.arches:
            states[arch] = _one_arch(client, release, arch, key_name)
    finally:
        client.close()
    return states


def _sid(release: Release, arch: str) -> str:
    url = release.result(arch).definition.get("url", "")
    return service_id(str(url), release.version, arch) if url else ""


def _one_arch(client: ExchangeClient, release: Release, arch: str, key_name: str) -> dict[str, Any]:
    res = release.result(arch)
    sid = _sid(release, arch)
    state: dict[str, Any] = {"service_id": sid}
    if not sid:
        state["service"] = "absent"
        return state
    try:
        live = client.get_service(release.org, sid)
        ours = (res.exchange_write == "create" and live is not None and bool(res.signature)
                and live.get("deploymentSignature") == res.signature)
        if ours:
            client.delete_service(release.org, sid)
            live = client.get_service(release.org, sid)
            state["undone"] = live is None
            state["origin"] = "created"
            if live is not None:  # refused without an error: say it is still there
                state["service"] = "present"
                return {**state, **_parts(client, release, sid, key_name)}
            state["service"] = "absent"
            return state
        if live is None:
            state["service"] = "absent"
            return state
        state["service"] = "present"
        same = bool(res.deployment) and live.get("deployment") == res.deployment
        if res.exchange_write == "overwrite":
            state["origin"] = "overwritten" if same else "preexisting"
        else:
            state["origin"] = "preexisting"
        state["content"] = "this release" if same else "earlier"
        return {**state, **_parts(client, release, sid, key_name)}
    except ExchangeError as exc:
        log.warning("release %s: could not check or undo %s/%s after the failed publish: %s", release.release_id,
                    release.org, sid, exc)
        return {**state, "service": "unknown", "error": _reason(exc)}


def _parts(client: ExchangeClient, release: Release, sid: str, key_name: str) -> dict[str, Any]:
    """Key present? Which registries have a dockauth? (Never the tokens.)"""
    return {"key": key_name, "key_present": client.get_key(release.org, sid, key_name) is not None,
            "dockauths": sorted({str(d.get("registry", "")) for d in client.list_dockauths(release.org, sid)})}


def _reason(exc: Exception) -> str:
    if isinstance(exc, ExchangeError):
        return f"{exc.method} {exc.path} answered {exc.status}" if exc.status else "the Exchange could not be reached"
    return type(exc).__name__
