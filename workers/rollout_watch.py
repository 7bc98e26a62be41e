"""The rollout watch: move each stage's policies/patterns to the new version, poll node-details, settle or roll back.

- ``start``: first, can the Exchange identity see the org's nodes at all (node-details shows a standard user only the
  nodes it owns, a hub admin none: an org admin is needed, or the watch would count a partial fleet as healthy)?
  Then every object of every stage is read and checked (exists, deploys the service, every covered arch published,
  a priority the agbot accepts, constraints the agbot can read — the policies' and those of every node they reach),
  so a refusal moves nothing; then stage 1 begins.
- a stage begins by moving its objects (per object: Redis lock → re-read → PATCH of ``service``/``services`` →
  verify), then schedules a poll. A pattern's thread message says that every node of the pattern restarts.
- ``poll`` is a short job: it reads the org's node-details (one GET per org per poll interval, shared through Redis
  by every rollout of that org), stores the stage's counts, repaints the stage's thread message and either
  schedules itself again with ``enqueue_in`` (no worker is held between polls) or ends the stage:
  healthy → drop the fallback (only if configured, only from policies) and begin the next stage, or end the release
  ``succeeded``; failed / timed out / no node matched → re-point every object edgebot changed to its previous
  version (``rolled_back``), or end
  ``failed`` when automatic rollback is off.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgebot import fleet_messages, fleet_summary, node_details
from edgebot.config import RolloutStageConfig, ServiceConfig
from edgebot.constraints import ConstraintError
from edgebot.errors import ReleaseEnded, StepFailed
from edgebot.jobs import Step, enqueue_step
from edgebot.release import FAILED, ROLLED_BACK, ROLLING_OUT, SUCCEEDED, Release, RolloutStageState, RolloutStatus
from workers import failures, trust
from workers.context import WorkerContext
from workers.exchange import fleet_visibility_problem
from workers.git_auth import git_auth_for
from workers.progress import fail
from workers.rollout import (
    PATCH_ATTRIBUTE,
    RolloutRefused,
    agbot_refusal,
    keep_only,
    move,
    pinned,
    stages_of,
    target_of,
)
from workers.rollout_create import body_from_source

log = logging.getLogger(__name__)


def _service_url(release: Release) -> str:
    first = release.results[release.arches[0]]
    return str(first.definition["url"])


@contextmanager
def object_lock(ctx: WorkerContext, org: str, kind: str, name: str) -> Iterator[None]:
    """One writer per policy/pattern across every worker (the Exchange has no ETags)."""
    timeout = ctx.config.settings.rollout_lock_timeout
    lock = ctx.redis.lock(f"{ctx.config.settings.key_prefix}:lock:exchange:{org}:{kind}:{name}", timeout=timeout,
                          blocking_timeout=timeout)
    if not lock.acquire():
        raise StepFailed(f"{kind} {name} is being changed by another release; try again", transient=True)
    try:
        yield
    finally:
        try:
            lock.release()
        except Exception:  # expired: nothing to release
            log.warning("the lock on %s %s had expired before release", kind, name)


def write_object(ctx: WorkerContext, client: Any, org: str, kind: str, name: str, url: str,
                 change: Any, create: Any = None) -> dict[str, Any]:
    """Re-read → change → PATCH → verify, under the object's lock. ``change(body)`` returns (new body, result,
    changed); only the body's ``service`` (policy) / ``services`` (pattern) is sent, so whatever else a human changed
    meanwhile stays. A body the agbot would drop is never written. A missing object is created (POST) from
    ``create()`` passed through ``change`` when ``create`` is given. Returns the result of ``change``."""
    with object_lock(ctx, org, kind, name):
        body = client.get_deployment_object(kind, org, name)
        if body is None and create is None:
            raise StepFailed(f"{kind} `{name}` does not exist in org {org}: create it (hzn exchange "
                             f"{'deployment addpolicy' if kind == 'policy' else 'pattern publish'}) and publish again")
        new_body, result, changed = change(body if body is not None else create())
        refusal = agbot_refusal(kind, new_body, org, url) if changed or body is None else ""
        if refusal:
            raise StepFailed(f"edgebot did not write {kind} `{name}`: the agreement bot would drop it ({refusal}; "
                             "anax ServiceRef.Validate), and no node would move; fix the priority in the "
                             f"{kind} or in edgebot's rollout settings")
        if body is None:
            client.create_deployment_object(kind, org, name, new_body)
            result = {**result, "created": True, "previous": {}}
            changed = True
        elif changed:
            attribute = PATCH_ATTRIBUTE[kind]
            client.patch_deployment_object(kind, org, name, attribute, new_body.get(attribute))
        if changed:
            stored = client.get_deployment_object(kind, org, name) or {}
            if pinned(kind, stored, org, url) != pinned(kind, new_body, org, url):
                raise StepFailed(f"{kind} `{name}` did not keep edgebot's change (someone else wrote it at the same "
                                 "time); the rollout stopped", transient=True)
    return result  # type: ignore[no-any-return]


def _schedule_poll(ctx: WorkerContext, release_id: str, stage: int, poll: int, pipe: Any) -> None:
    """Poll ``poll`` of stage ``stage`` in one poll interval, in the MULTI of the write that decided it."""
    enqueue_step(ctx.redis, ctx.config.settings, Step.POLL_ROLLOUT, release_id, str(stage), str(poll), pipe=pipe,
                 delay=ctx.config.settings.rollout_poll_interval)


# -- start --------------------------------------------------------------------------------------------------------
def start(ctx: WorkerContext, release_id: str) -> None:
    release = ctx.store.require(release_id)
    if release.is_final:
        return
    if release.rollout:  # a retry: resume where the first attempt stopped (moving objects again is a no-op)
        if not any(s.status == RolloutStatus.RUNNING for s in release.rollout):
            pending = [i for i, s in enumerate(release.rollout) if s.status == RolloutStatus.PENDING]
            if pending:
                begin_stage(ctx, release_id, pending[0])
        return
    service = ctx.config.services[release.service]
    registry = ctx.config.registries[release.registry]
    if release.is_deploy:  # a deploy rolls out only what the bot sealed and workers/deploy.py verified
        trust.check_intake(ctx.sealer(), release)
    url = _service_url(release)
    with failures.translated("rollout", release, registry, ctx=ctx):
        client = ctx.exchange(release.org)
        try:
            blind = fleet_visibility_problem(client, release.org)
            if blind:
                raise StepFailed(f"rollout refused, nothing was moved: {blind}")
            members: list[fleet_summary.Target] = []
            for stage in stages_of(service, release):  # check everything before moving anything
                for target in stage.targets:
                    body = client.get_deployment_object(target.kind, release.org, target.name)
                    if body is None:  # can it be created from the service's horizon/ files? (when its stage begins)
                        body = body_from_source(service, release, target, Path(ctx.config.settings.source_cache_dir),
                                                auth=git_auth_for(service, ctx.resolver))
                    _move(ctx, service, release, target.kind, target.name, body, url)
                    member = target_of(target.kind, target.name, body, release.org, url)
                    members.append(member)
                    try:  # which nodes it reaches must be known before anything moves: never guessed
                        fleet_summary.compile_constraints(member.constraints)
                    except ConstraintError as exc:
                        raise StepFailed(f"rollout refused: the constraints of {target.kind} `{target.name}` cannot "
                                         f"be evaluated the way the agreement bot reads them: {exc}. Nothing moved; "
                                         "fix the constraints (the agbot would refuse them too) and publish again.") \
                            from None
            unreadable = _node_side_problem(client, release, url, members)
            if unreadable:
                raise StepFailed(unreadable)
        except RolloutRefused as refused:
            raise StepFailed(f"rollout refused: {refused}") from None
        finally:
            client.close()

    def planned(r: Release) -> None:
        if not r.rollout:
            r.rollout = [RolloutStageState(name=s.name) for s in stages_of(service, release)]
            r.event("rollout", stages=[s.name for s in r.rollout])

    ctx.store.update(release_id, planned, active=True)
    begin_stage(ctx, release_id, 0)


def _move(ctx: WorkerContext, service: ServiceConfig, release: Release, kind: str, name: str, body: dict[str, Any],
          url: str) -> Any:
    st = ctx.config.settings
    from edgebot.fleet_summary import Target

    moved = move(Target(kind, name), body, org=release.org, url=url, version=release.version,
                 published_arches=_published_arches(release), catalog_arches=service.arches,
                 retries=st.rollout_fallback_retries,
                 retry_durations=st.rollout_fallback_retry_durations)
    refusal = agbot_refusal(kind, moved.body, release.org, url)
    if refusal:
        raise RolloutRefused(f"{kind} `{name}` would be dropped by the agreement bot ({refusal}; anax "
                             "ServiceRef.Validate): fix its priorities first (no node was moved)")
    return moved


def _published_arches(release: Release) -> list[str]:
    """The arches of the version in the Exchange: a publish's, or those a deploy found there (workers/deploy.py)."""
    if not release.is_deploy:
        return list(release.arches)
    return [a for a in release.arches if (res := release.results.get(a)) is not None and res.service_id]


def begin_stage(ctx: WorkerContext, release_id: str, index: int) -> None:
    release = ctx.store.require(release_id)
    if release.is_final:
        return
    service = ctx.config.services[release.service]
    stage: RolloutStageConfig = stages_of(service, release)[index]
    registry = ctx.config.registries[release.registry]
    url = _service_url(release)
    moved: list[dict[str, Any]] = []
    with failures.translated("rollout", release, registry, ctx=ctx):
        client = ctx.exchange(release.org)
        try:
            service_policies = _service_policies(client, release, url)
            for target in stage.targets:
                def change(body: dict[str, Any], kind: str = target.kind, name: str = target.name) -> Any:
                    result = _move(ctx, service, release, kind, name, body, url)
                    member = target_of(kind, name, body, release.org, url)
                    if kind == "policy":
                        member = replace(member, service_policies=tuple(
                            p for p in service_policies if member.arch in ("*", "", p[0])))
                    info = {**member.as_info(), "previous": result.previous}
                    return result.body, info, result.changed

                def create(target: Any = target) -> dict[str, Any]:
                    return body_from_source(service, release, target, Path(ctx.config.settings.source_cache_dir),
                                            auth=git_auth_for(service, ctx.resolver))

                info = write_object(ctx, client, release.org, target.kind, target.name, url, change, create)
                moved.append(info)
                _remember(ctx, release_id, index, info)  # at once: a failure on the next object rolls this one back
        except RolloutRefused as refused:
            raise StepFailed(f"rollout refused: {refused}") from None
        finally:
            client.close()

    patterns = [m["name"] for m in moved if m["kind"] == "pattern"]

    def running(r: Release) -> bool:
        state = r.rollout[index]
        starts = state.status == RolloutStatus.PENDING
        if patterns and not state.note:
            # anax agreementbot: a pattern change cancels every agreement made under the pattern
            state.note = (f"changing pattern {', '.join(f'`{p}`' for p in patterns)} restarts every node of the "
                          "pattern once (the agreement bot cancels and remakes all of its agreements, even on nodes "
                          "already running the new version)")
        if state.started_at is None:
            state.started_at = time.time()
        state.status = RolloutStatus.RUNNING
        r.state = ROLLING_OUT
        if starts:
            r.event("stage_started", stage=state.name, objects=[f"{m['kind']} {m['name']}" for m in moved])
        return starts

    def first_poll(r: Release, starts: bool, pipe: Any) -> None:
        if starts:
            _schedule_poll(ctx, release_id, index, 1, pipe)

    ctx.store.update(release_id, running, active=True, then=first_poll)
    ctx.reporter.rollout_stage(release_id, index)
    ctx.reporter.refresh_root(release_id)


def _remember(ctx: WorkerContext, release_id: str, index: int, info: dict[str, Any]) -> None:
    """Record one moved object (and the versions it pinned before) in the stage, once."""

    def keep(r: Release) -> None:
        targets = r.rollout[index].targets
        if not any((t["kind"], t["name"]) == (info["kind"], info["name"]) for t in targets):
            targets.append(info)

    ctx.store.update(release_id, keep)


def _service_policies(client: Any, release: Release, url: str) -> tuple[tuple[str, tuple[str, ...],
                                                                              tuple[dict[str, Any], ...]], ...]:
    """Per arch, the service policy of the version rolled out (read once when a stage begins, so polls read nothing
    but node-details): the agbot merges it into every deployment policy of the service (anax
    ``agreementbot/agreementworker.go``, ``compcheck.GetServicePolicyWithId``)."""
    from workers.exchange import service_id

    found = []
    for arch in release.arches:
        policy = client.get_service_policy(release.org, service_id(url, release.version, arch)) or {}
        constraints = tuple(str(c) for c in policy.get("constraints") or ())
        properties = tuple(p for p in policy.get("properties") or () if isinstance(p, dict))
        if constraints or properties:
            found.append((arch, constraints, properties))
    return tuple(found)


def _node_side_problem(client: Any, release: Release, url: str, members: list[fleet_summary.Target]) -> str:
    """Before anything moves: can every node the stages reach be placed, i.e. can the node policy constraints of
    every node that meets a policy be read (with the new version's service policies merged in)? The refusal, or ""."""
    service_policies = _service_policies(client, release, url)
    targets = [replace(m, service_policies=tuple(p for p in service_policies if m.arch in ("*", "", p[0])))
               if m.kind == "policy" else m for m in members]
    nodes = node_details.decode(client.node_details_raw(release.org))
    try:
        for _ in fleet_summary.placements(nodes, release.org, targets, url=url, version=release.version):
            pass
    except (fleet_summary.NodeConstraintError, ConstraintError) as exc:
        return fleet_messages.rollout_refused_constraints_unreadable(str(exc))
    return ""


# -- poll ---------------------------------------------------------------------------------------------------------
def shared_node_details(ctx: WorkerContext, org: str) -> list[node_details.Node]:
    """The org's node-details, fetched at most once per poll interval by all rollouts of all workers."""
    st = ctx.config.settings
    key = f"{st.key_prefix}:rollout:node-details:{org}"
    cached = ctx.redis.get(key)
    if cached is None:
        lock = ctx.redis.lock(f"{key}:fetch", timeout=st.exchange_timeout + 5,
                              blocking_timeout=st.exchange_timeout + 5)
        with lock:
            cached = ctx.redis.get(key)
            if cached is None:
                client = ctx.exchange(org)
                try:
                    cached = client.node_details_raw(org)
                finally:
                    client.close()
                ctx.redis.set(key, cached, px=max(1, int(st.rollout_poll_interval * 1000)))
    try:
        return node_details.decode(cached)
    except node_details.NodeDetailsUnreadable as exc:
        raise StepFailed(fleet_messages.node_details_unreadable(org, str(exc))) from None


def poll(ctx: WorkerContext, release_id: str, index: int, count: int) -> None:
    release = ctx.store.require(release_id)
    if release.is_final or index >= len(release.rollout):
        return
    status = release.rollout[index].status
    if status == RolloutStatus.HEALTHY:  # a retry of the poll that ended the stage: finish what it started
        _stage_healthy(ctx, release_id, index)
        return
    if status in (RolloutStatus.FAILED, RolloutStatus.TIMED_OUT):
        _stage_failed(ctx, release_id, index, status,
                      fleet_summary.StageCounts.from_dict(release.rollout[index].counts))
        return
    if status != RolloutStatus.RUNNING:
        return
    st = ctx.config.settings
    service = ctx.config.services[release.service]
    stage_config = stages_of(service, release)[index]
    registry = ctx.config.registries[release.registry]
    with failures.translated("rollout", release, registry, ctx=ctx):
        nodes = shared_node_details(ctx, release.org)
    state = release.rollout[index]
    targets = [fleet_summary.Target.from_info(t) for t in state.targets]
    elapsed = time.time() - (state.started_at or time.time())
    try:
        counts = fleet_summary.summarize(nodes, org=release.org, url=_service_url(release), version=release.version,
                                         targets=targets, offline_after=st.rollout_offline_after, now=time.time(),
                                         pull_grace=st.rollout_pull_grace, elapsed=elapsed)
    except (fleet_summary.NodeConstraintError, ConstraintError) as exc:
        # which nodes the stage reaches is unknown: halt (the same path as a policy's unreadable constraints at
        # start), never guess
        raise StepFailed(fleet_messages.rollout_constraints_unreadable(release.rollout[index].name, str(exc))) from None
    share = stage_config.healthy_share if stage_config.healthy_share is not None else st.rollout_healthy_share
    timeout = stage_config.timeout if stage_config.timeout is not None else st.rollout_stage_timeout
    outcome = fleet_summary.verdict(counts, healthy_share=share, failure_threshold=st.rollout_failure_threshold,
                                    elapsed=elapsed, timeout=timeout)
    no_node = fleet_summary.no_node_reason(targets, release.org, len(nodes)) if counts.total == 0 else ""
    refused = [fleet_messages.rollout_node_constraints_refuse(policy, list(own), names)
               for (policy, own), names in sorted(counts.refused.items())]

    def record(r: Release) -> bool:
        s = r.rollout[index]
        first = s.polls < count  # a re-run of a poll that was already recorded schedules nothing more
        s.counts = counts.as_dict()
        s.problems = counts.problems[: st.rollout_report_nodes]
        s.polls = max(s.polls, count)
        if outcome != RolloutStatus.RUNNING:
            s.status = outcome
            s.ended_at = time.time()
            if no_node:
                s.note = no_node
            r.event("stage_" + outcome, stage=s.name, **counts.as_dict())
        if refused and REFUSED_MARK not in s.note:  # once per stage: the diagnosis of nodes left out
            text = "\n".join(refused)
            s.note = f"{s.note}\n{text}" if s.note else text
            r.event("rollout_diagnosis", stage=s.name, causes=refused)
        return first

    def next_poll(r: Release, first: bool, pipe: Any) -> None:
        if first and outcome == RolloutStatus.RUNNING:
            _schedule_poll(ctx, release_id, index, count + 1, pipe)

    ctx.store.update(release_id, record, active=True, then=next_poll)
    if (outcome == RolloutStatus.RUNNING and elapsed > st.rollout_diagnose_after and (counts.old or counts.waiting)
            and ctx.redis.set(f"{st.key_prefix}:rollout:diagnosed:{release_id}:{index}", "1", nx=True,
                              ex=int(timeout) + 3600)):
        _post_diagnosis(ctx, release, index, nodes, targets)
    ctx.reporter.rollout_stage(release_id, index)
    if outcome == RolloutStatus.RUNNING:
        return
    if outcome == RolloutStatus.HEALTHY:
        _stage_healthy(ctx, release_id, index)
    else:
        _stage_failed(ctx, release_id, index, outcome, counts)


REFUSED_MARK = "the node's constraints refuse the policy"
"""Part of :func:`edgebot.fleet_messages.rollout_node_constraints_refuse`: a stage's note names such nodes once."""


# -- diagnosis of nodes that stay on the old version ----------------------------------------------------------------
def _post_diagnosis(ctx: WorkerContext, release: Release, index: int, nodes: list[node_details.Node],
                    targets: list[fleet_summary.Target]) -> None:
    """Once per stage, after ``rollout_diagnose_after``: why do online nodes still run the old version? The agent
    never says (a signature or key it rejects is logged on the node and the agreement declined; anax
    ``persistence/surface_errors.go`` surfaces no such event), so edgebot checks what the agent checks and adds one
    line per cause, with the nodes it applies to, to the stage's thread message."""
    url = _service_url(release)
    st = ctx.config.settings
    stuck: dict[str, list[str]] = {}  # arch -> node names
    moment = time.time()
    for node in fleet_summary.members(nodes, release.org, targets, url=url, version=release.version):
        bucket, _ = fleet_summary.classify(node, org=release.org, url=url, version=release.version,
                                           offline_after=st.rollout_offline_after, now=moment)
        if bucket in (fleet_summary.OLD, fleet_summary.WAITING):
            stuck.setdefault(node.arch or "", []).append(node.label)
    if not stuck:
        return
    groups: dict[str, list[str]] = {}
    try:
        client = ctx.exchange(release.org)
        try:
            for arch, names in sorted(stuck.items()):
                for cause in _causes(client, release.org, url, release.version, arch):
                    groups.setdefault(cause, []).extend(names)
        finally:
            client.close()
    except Exception as exc:  # a diagnosis is advice: never the reason a rollout fails
        log.warning("rollout diagnosis of %s failed: %s", release.release_id, exc)
        return
    lines = [f"{len(names)} node(s) still on the old version: {cause} ({', '.join(sorted(names)[:10])}"
             f"{', …' if len(names) > 10 else ''})" for cause, names in groups.items()]
    text = "\n".join(lines)

    def noted(r: Release) -> None:
        s = r.rollout[index]
        if text not in s.note:
            s.note = f"{s.note}\n{text}" if s.note else text
            r.event("rollout_diagnosis", stage=s.name, causes=list(groups))

    ctx.store.update(release.release_id, noted)


def _image_host(image: str) -> str:
    """The registry of an image reference as Docker reads it (no domain part: ``docker.io``)."""
    first, sep, _ = image.partition("/")
    return first if sep and ("." in first or ":" in first or first == "localhost") else "docker.io"


def _causes(client: Any, org: str, url: str, version: str, arch: str) -> list[str]:
    """What an agent of ``arch`` would refuse about ``org/url`` ``version``: the service for its arch, the deployment
    signature against every key stored with the service (anax verifies with any of them), and a dockauth whose
    registry equals each image's ``host[:port]`` (anax ``container/imagepull.go``)."""
    from workers.exchange import service_id
    from workers.signing import SigningError, verify_deployment

    sid = service_id(url, version, arch)
    record = client.get_service(org, sid)
    if record is None:
        return [f"{url} {version} is not published for {arch or 'their arch'}: the agent has nothing to run"]
    causes = []
    keys = client.list_keys(org, sid)
    verified = False
    for name in keys:
        text = client.get_key(org, sid, name)
        try:
            verified = bool(text) and verify_deployment(text.encode(), str(record.get("deployment") or ""),
                                                        str(record.get("deploymentSignature") or ""))
        except SigningError:
            verified = False
        if verified:
            break
    if not verified:
        causes.append(f"the deployment signature of {sid} verifies with none of the {len(keys)} key(s) stored with "
                      "the service, so the agent declines it without reporting an error: publish it again signed "
                      "with a key stored with the service (or store the key that signed it)")
    try:
        deployment = json.loads(str(record.get("deployment") or "{}"))
    except ValueError:
        deployment = {}
    registries = {str(d.get("registry")) for d in client.list_dockauths(org, sid)}
    for container in sorted((deployment.get("services") or {}).values(), key=lambda c: str(c.get("image"))):
        host = _image_host(str(container.get("image") or ""))
        if host != "docker.io" and host not in registries:
            causes.append(f"no dockauth of {sid} has registry {host} (an agent uses a dockauth only when it equals "
                          "the image's host[:port]): publish with the registry's pull credential")
    if not causes:
        causes.append(f"{sid}, its signature and its dockauths check out, and these nodes and the policy accept "
                      "each other's constraints: their agents have not acted yet (`hzn eventlog list` on a node, "
                      "`hzn deploycheck policy`)")
    return causes


def _stage_healthy(ctx: WorkerContext, release_id: str, index: int) -> None:
    release = ctx.store.require(release_id)
    if ctx.config.settings.rollout_drop_fallback:
        _repoint(ctx, release, [index], new=True)  # policies only: on a pattern it would restart every node again
    if index + 1 < len(release.rollout):
        if release.rollout[index + 1].status == RolloutStatus.PENDING:
            begin_stage(ctx, release_id, index + 1)
        return

    def done(r: Release) -> None:
        r.state = SUCCEEDED
        r.ended_at = time.time()
        r.event("rolled_out", stages=[s.name for s in r.rollout])

    ctx.store.update(release_id, done, active=True)
    ctx.reporter.summary(release_id)


def _stage_failed(ctx: WorkerContext, release_id: str, index: int, outcome: RolloutStatus,
                  counts: fleet_summary.StageCounts) -> None:
    release = ctx.store.require(release_id)
    st = ctx.config.settings
    stage = release.rollout[index]
    why = (f"{counts.failing} node(s) failed on {release.version} (more than the {st.rollout_failure_threshold} "
           "allowed)" if outcome == RolloutStatus.FAILED else
           f"only {counts.new} of {counts.online} online node(s) ran {release.version} when the stage timed out")
    if counts.total == 0 and outcome == RolloutStatus.FAILED:
        why = stage.note or "no node belongs to this stage; the stage halted: no node was seen"
    rolled_back = False
    if st.rollout_auto_rollback:
        _repoint(ctx, release, list(range(index + 1)), new=False)
        rolled_back = True

    def end(r: Release) -> None:
        if r.is_final:
            return
        r.state = ROLLED_BACK if rolled_back else FAILED
        r.ended_at = time.time()
        r.error = (f"rollout stage {stage.name}: {why}; "
                   + ("every policy/pattern edgebot changed points to the previous version again" if rolled_back
                      else "automatic rollback is off: the nodes keep what they run now"))
        r.error_detail = list(r.rollout[index].problems)
        if rolled_back:
            for s in r.rollout[: index + 1]:
                s.status = (RolloutStatus.ROLLED_BACK if s.status in (RolloutStatus.HEALTHY, RolloutStatus.RUNNING)
                            else s.status)
        r.event("rolled_back" if rolled_back else "failed", error=r.error)

    ctx.store.update(release_id, end)
    for i in range(index + 1):
        ctx.reporter.rollout_stage(release_id, i)
    ctx.reporter.summary(release_id)


def abort(ctx: WorkerContext, release_id: str, message: str, detail: list[str] | None = None) -> None:
    """A rollout job failed for good (Exchange down past its retries, a refusal, a bug): put back what was moved
    (when automatic rollback is on), then end the release like any failed step."""
    release = ctx.store.get(release_id)
    moved = [i for i, s in enumerate(release.rollout) if s.targets] if release and not release.is_final else []
    if not moved or not ctx.config.settings.rollout_auto_rollback:
        fail(ctx, release_id, message, detail)
        return
    assert release is not None
    try:
        _repoint(ctx, release, moved, new=False)
    except (StepFailed, ReleaseEnded) as exc:
        fail(ctx, release_id, f"{message}; the rollback failed too: {exc}", detail)
        return

    def end(r: Release) -> None:
        if r.is_final:
            return
        r.state, r.ended_at = ROLLED_BACK, time.time()
        r.error, r.error_detail = f"{message}; every policy/pattern edgebot changed points to the previous version " \
            "again", list(detail or [])
        for s in r.rollout:
            s.status = RolloutStatus.ROLLED_BACK if s.targets else s.status
            s.ended_at = s.ended_at or (time.time() if s.targets else None)
        r.event("rolled_back", error=message)

    ctx.store.update(release_id, end)
    for index in moved:
        ctx.reporter.rollout_stage(release_id, index)
    ctx.reporter.summary(release_id)


def rollback(ctx: WorkerContext, release_id: str, user_id: str) -> None:
    """`/edge rollback`: every object the release moved pins its previous version again; the release (finished or
    still rolling out) ends ``rolled_back``. A rollout still being watched stops at its next poll."""
    release = ctx.store.require(release_id)
    moved = [i for i, s in enumerate(release.rollout) if s.targets]
    if not moved or release.state == ROLLED_BACK:
        return
    policy = ctx.config.approval_policy(org=release.org, service=release.service, registry=release.registry)
    try:  # before anything is written: a quorum forged in Redis moves nothing (workers/trust.py)
        trust.check_rollback(ctx.sealer(), release, user_id, policy)
    except trust.SecurityCheckFailed as exc:
        problem, alert_text = exc.problem, str(exc)
        log.error("release %s: rollback refused: %s", release_id, problem)

        def alert(r: Release) -> None:
            r.event("rollback_refused", by=user_id, problem=problem)

        ctx.store.update(release_id, alert)
        ctx.reporter.note(release_id, fleet_messages.rollback_refused_alert(alert_text))
        return

    def stop(r: Release) -> None:  # first, so a poll running now cannot move the fleet on
        r.state, r.ended_at = ROLLED_BACK, time.time()
        r.error = f"rolled back by <@{user_id}>: every policy/pattern this release changed pins its previous version"
        for s in r.rollout:
            if s.targets:
                s.status, s.note = RolloutStatus.ROLLED_BACK, f"rolled back by <@{user_id}>"
                s.ended_at = s.ended_at or time.time()
        r.event("rolled_back", by=user_id)

    ctx.store.update(release_id, stop)
    _repoint(ctx, release, moved, new=False)
    for index in moved:
        ctx.reporter.rollout_stage(release_id, index)
    ctx.reporter.refresh_root(release_id)


def rollback_failed(ctx: WorkerContext, release_id: str, message: str, detail: list[str] | None = None) -> None:
    """The rollback's Exchange writes failed for good: say so in the record (the thread shows it in the stages)."""

    def note(r: Release) -> None:
        r.error = f"{r.error}; the rollback did not complete: {message}"
        for s in r.rollout:
            if s.targets:
                s.note = f"rollback did not complete: {message}"

    ctx.store.update(release_id, note)
    for index, s in enumerate(ctx.store.require(release_id).rollout):
        if s.targets:
            ctx.reporter.rollout_stage(release_id, index)


def _repoint(ctx: WorkerContext, release: Release, indexes: list[int], *, new: bool) -> None:
    """Settle (``new``: only the new version) or roll back (only the previous one) the objects of ``indexes``."""
    url = _service_url(release)
    registry = ctx.config.registries[release.registry]
    with failures.translated("rollout", release, registry, ctx=ctx):
        client = ctx.exchange(release.org)
        try:
            for index in indexes:
                for target in release.rollout[index].targets:
                    if target.get("created") and not new:  # it did not exist before this release: remove it
                        with object_lock(ctx, release.org, target["kind"], target["name"]):
                            client.delete_deployment_object(target["kind"], release.org, target["name"])
                        continue
                    if new and target["kind"] == "pattern":
                        continue  # a second pattern change would restart every node of the pattern again
                    previous: dict[str, str] = target.get("previous", {})
                    versions = {arch: release.version for arch in previous} if new else previous
                    if not versions:
                        continue
                    member = fleet_summary.Target(target["kind"], target["name"])

                    def change(body: dict[str, Any], member: fleet_summary.Target = member,
                               versions: dict[str, str] = versions) -> Any:
                        new_body, changed = keep_only(
                            member, body, org=release.org, url=url, versions=versions,
                            retries=ctx.config.settings.rollout_fallback_retries,
                            retry_durations=ctx.config.settings.rollout_fallback_retry_durations)
                        return new_body, {}, changed

                    write_object(ctx, client, release.org, target["kind"], target["name"], url, change)
        finally:
            client.close()
