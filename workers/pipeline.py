"""The publish pipeline: prepare (source + definition checks) → build/push per arch → sign → publish.

Each step reads the release record, does its work, writes its output to the record *once* (a retry reuses what an
earlier attempt stored: commit SHA, digest, deployment string, signature), reports to the thread, and enqueues the
next step with a deterministic job id so a step can never be queued twice.
"""

from __future__ import annotations

import base64
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rq import Queue, Worker
from rq.exceptions import DuplicateJobError

from edgebot.config import RegistryConfig
from edgebot.errors import ReleaseEnded, StepFailed
from edgebot.ids import docker_image_base, image_repository
from edgebot.release import (
    BUILDING,
    DONE,
    FAILED,
    FAILED_STEP,
    PUBLISHING,
    QUEUED,
    ROLLING_OUT,
    RUNNING,
    SKIPPED,
    STAGES,
    SUCCEEDED,
    Release,
    StepState,
)
from edgebot.rqjob import JOBS_MODULE, PUBLISH_QUEUE, SERIALIZER, EdgebotJob, build_queue, job_id, retry_policy
from workers import failures
from workers.context import WorkerContext
from workers.definition import ServiceDefinition, deployment_string, pin_images, read_definition

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)


# -- record helpers ----------------------------------------------------------------------------------------------

def _mark(step: StepState, status: str, note: str | None = None) -> None:
    now = time.time()
    if status == RUNNING and step.started_at is None:
        step.started_at = now
    if status in (DONE, FAILED_STEP, SKIPPED):
        step.started_at = step.started_at or now
        step.ended_at = now
    step.status = status
    if note is not None:
        step.note = note


def set_stage(ctx: WorkerContext, release_id: str, stage: str, status: str, *, arch: str = "",
              note: str | None = None, extra: Callable[[Release], None] | None = None) -> Release:
    def mutate(r: Release) -> None:
        if r.is_final:  # cancelled (or failed by another arch) while this step ran: stop, write nothing more
            raise ReleaseEnded(f"release {release_id} is {r.state}")
        _mark(r.arch_step(stage, arch) if arch else r.stage(stage), status, note)
        if extra is not None:
            extra(r)

    release = ctx.store.update(release_id, mutate, fence=ctx.lease)
    ctx.reporter.stage(release_id, stage)
    return release


def fail(ctx: WorkerContext, release_id: str, message: str, detail: list[str] | None = None) -> None:
    """End the release as failed: the running stage (and arch) marked failed, the summary posted once."""
    failed_stages: list[str] = []

    def mutate(r: Release) -> None:
        if r.is_final:
            return
        r.state = FAILED
        r.error = message
        r.error_detail = list(detail or [])
        r.event("failed", error=message)
        for name, step in r.stages.items():
            if step.status == RUNNING:
                _mark(step, FAILED_STEP)
                failed_stages.append(name)
        for name, per_arch in r.arch_steps.items():
            for step in per_arch.values():
                if step.status == RUNNING:
                    _mark(step, FAILED_STEP)
                    if name not in failed_stages:
                        failed_stages.append(name)

    ctx.store.update(release_id, mutate, fence=ctx.lease)
    for stage in failed_stages:
        ctx.reporter.stage(release_id, stage)
    ctx.reporter.summary(release_id)


def enqueue(ctx: WorkerContext, queue_name: str, function: str, release_id: str, *args: str) -> None:
    queue = Queue(queue_name, connection=ctx.redis, job_class=EdgebotJob, serializer=SERIALIZER)
    step = function if not args else f"{function}-{args[0]}"
    try:
        queue.enqueue_call(
            f"{JOBS_MODULE}.{function}",
            args=(release_id, *args),
            job_id=job_id(release_id, step.replace("_", "-")),
            timeout=ctx.config.settings.job_timeout,
            result_ttl=ctx.config.settings.job_result_ttl,
            retry=retry_policy(ctx.config.settings),
            unique=True,
        )
    except DuplicateJobError:
        log.info("release %s: %s already queued", release_id, step)


def live_build_workers(ctx: WorkerContext, arch: str) -> int:
    queue = Queue(build_queue(arch), connection=ctx.redis, serializer=SERIALIZER)
    horizon = time.time() - 2 * ctx.config.settings.worker_ttl - 10
    alive = 0
    for worker in Worker.all(connection=ctx.redis, queue=queue):
        beat = worker.last_heartbeat
        if beat is not None and beat.timestamp() >= horizon:
            alive += 1
    return alive


# -- step 1: source and definitions --------------------------------------------------------------------------------

def prepare(ctx: WorkerContext, release_id: str) -> None:
    release = ctx.store.require(release_id)
    if release.is_final:
        return
    ctx.reporter.ensure_root(release_id)
    service = ctx.config.services[release.service]
    registry = ctx.config.registries[release.registry]
    ref = service.ref_for(release.version)

    def starting(r: Release) -> None:
        if r.state == QUEUED:  # a resumed prepare must not move a release that got further back to building
            r.state = BUILDING
        r.source_ref = ref
        for stage in STAGES:
            r.stage(stage)

    set_stage(ctx, release_id, "source", RUNNING, extra=starting)
    ctx.reporter.refresh_root(release_id)
    cache = Path(ctx.config.settings.source_cache_dir)
    with failures.translated("source", release, registry):
        from workers.source import read_file_at, resolve_ref

        sha = release.commit_sha or resolve_ref(service.source, ref, cache)
        definitions: dict[str, ServiceDefinition] = {}
        base = docker_image_base(registry.host, registry.namespace, service.image_base)
        horizon = service.horizon_dir.strip("/")
        definition_path = f"{horizon}/service.definition.json"
        definition_text = read_file_at(service.source, sha, definition_path, cache)
        if definition_text is None:
            raise StepFailed(f"{definition_path} is missing at commit {sha[:12]} of {service.name}'s source")
        hzn_json = read_file_at(service.source, sha, f"{horizon}/hzn.json", cache)
        for arch in release.arches:
            definitions[arch] = read_definition(
                definition_text, hzn_json, org=release.org, version=release.version, arch=arch, image_base=base
            )
    missing = [a for a in release.arches if live_build_workers(ctx, a) == 0]
    if missing:
        raise StepFailed(
            "no live build worker serves " + ", ".join(missing) + ": start one with "
            + " and ".join(f"`edgebot worker --arch {a}`" for a in missing) + ", then publish again"
        )

    def record(r: Release) -> None:
        r.commit_sha = r.commit_sha or sha
        for arch, definition in definitions.items():
            result = r.result(arch)
            if not result.definition:
                result.definition = definition.raw
                result.built_containers = dict(definition.built)
            result.image_tag = result.image_tag or (
                f"{image_repository(registry.host, registry.namespace, service.image_base, arch)}:{r.version}"
            )
            r.arch_step("build", arch)
            r.arch_step("push", arch)
        r.event("source", commit=r.commit_sha, ref=ref)

    set_stage(ctx, release_id, "source", DONE, note=f"{len(release.arches)} definition(s) checked", extra=record)
    ctx.reporter.refresh_root(release_id)
    set_stage(ctx, release_id, "build", RUNNING)
    for arch in release.arches:
        enqueue(ctx, build_queue(arch), "build_arch", release_id, arch)


# -- step 2: build and push one arch ----------------------------------------------------------------------------------

def build(ctx: WorkerContext, release_id: str, arch: str) -> None:
    release = ctx.store.require(release_id)
    if release.is_final:
        return
    service = ctx.config.services[release.service]
    registry = ctx.config.registries[release.registry]
    result = release.result(arch)
    repository, _, tag = result.image_tag.rpartition(":")
    if not (result.digest or (release.dry_run and result.image_id)):
        from workers.images import build_image

        client = ctx.docker()
        workdir = Path(ctx.config.settings.work_dir) / f"{release_id}-{arch}"
        try:
            if not result.image_id:
                set_stage(ctx, release_id, "build", RUNNING, arch=arch)
                with failures.translated("build", release, registry, arch=arch, ctx=ctx):
                    from workers.source import checkout

                    shutil.rmtree(workdir, ignore_errors=True)
                    tree = checkout(service.source, release.commit_sha, workdir,
                                    Path(ctx.config.settings.source_cache_dir))
                    built = build_image(
                        client,
                        context_dir=tree / service.context,
                        dockerfile=service.dockerfile_for(arch),
                        tag=result.image_tag,
                        arch=arch,
                        # only labels that are the same for the same commit: a rebuild then hits the cache and
                        # yields the same digest, so republishing a version is a no-op rather than a conflict
                        labels={"org.opencontainers.image.revision": release.commit_sha},
                        log_lines=ctx.config.settings.build_log_lines,
                    )

                def built_ok(r: Release) -> None:
                    r.result(arch).image_id = r.result(arch).image_id or built.image_id

                set_stage(ctx, release_id, "build", DONE, arch=arch, note=built.image_id[7:19], extra=built_ok)
            if release.dry_run:
                set_stage(ctx, release_id, "push", SKIPPED, arch=arch, note="dry run")
            else:
                set_stage(ctx, release_id, "push", RUNNING, arch=arch)
                with failures.translated("push", release, registry, arch=arch, ctx=ctx):
                    from workers.registries import before_push

                    notes = before_push(ctx, registry)  # OpenShift: the route's CA trusted, token expiry
                    digest = push_with_fresh_credentials(ctx, client, registry, repository, tag)

                def pushed(r: Release) -> None:
                    res = r.result(arch)
                    res.digest = res.digest or digest
                    res.pinned_image = res.pinned_image or f"{repository}@{res.digest}"
                    r.notes.extend(n for n in notes if n not in r.notes)

                set_stage(ctx, release_id, "push", DONE, arch=arch, note=digest[:19], extra=pushed)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            client.close()
    _arch_done(ctx, release_id)


def push_with_fresh_credentials(ctx: WorkerContext, client: docker.DockerClient, registry: RegistryConfig,
                                repository: str, tag: str) -> str:
    """Push with the registry's push credential; when the registry refuses it (rotated since it was read), read it
    again from its reference and push once more."""
    from workers.images import credentials_refused, push_image

    def push() -> str:
        username, password = ctx.push_credentials(registry)
        ctx.check_lease(f"the push to {repository}")  # a step that lost its lease pushes nothing
        return push_image(client, repository=repository, tag=tag, username=username, password=password.reveal())

    return ctx.with_fresh_credentials(push, [registry.push_password], refused=credentials_refused,
                                      what=f"registry {registry.host}")


def _arch_done(ctx: WorkerContext, release_id: str) -> None:
    """Fan-in: the build that completes the set of arches (exactly one, thanks to WATCH) starts signing."""
    completed: list[bool] = []

    def mutate(r: Release) -> None:
        completed.clear()
        def finished(arch: str) -> bool:
            res = r.results.get(arch)
            return bool(res and (res.digest or (r.dry_run and res.image_id)))

        everything = all(finished(a) for a in r.arches)
        if everything and r.stage("build").status == RUNNING and not r.is_final:
            _mark(r.stage("build"), DONE)
            pushes = [s.started_at for s in r.arch_steps.get("push", {}).values() if s.started_at]
            r.stage("push").started_at = min(pushes, default=None)
            _mark(r.stage("push"), SKIPPED if r.dry_run else DONE)
            completed.append(True)

    ctx.store.update(release_id, mutate, fence=ctx.lease)
    if completed:
        ctx.reporter.stage(release_id, "build")
        ctx.reporter.stage(release_id, "push")
        enqueue(ctx, PUBLISH_QUEUE, "sign_release", release_id)


# -- step 3: sign -----------------------------------------------------------------------------------------------------

def sign(ctx: WorkerContext, release_id: str) -> None:
    release = ctx.store.require(release_id)
    if release.is_final:
        return
    if release.dry_run:
        set_stage(ctx, release_id, "sign", SKIPPED, note="dry run: nothing pushed, nothing to sign")
        enqueue(ctx, PUBLISH_QUEUE, "publish_release", release_id)
        return
    set_stage(ctx, release_id, "sign", RUNNING)
    registry = ctx.config.registries[release.registry]
    with failures.translated("sign", release, registry, ctx=ctx):
        from workers.signing import fingerprint, public_key_fingerprint, sign_deployment, verify_deployment

        signer = ctx.signer()
        public_pem = signer.public_key_pem()
        signed: dict[str, tuple[str, str]] = {}
        for arch in release.arches:
            res = release.result(arch)
            if res.signature:
                if not verify_deployment(public_pem, res.deployment, res.signature):
                    raise StepFailed(f"the stored signature of {arch} does not verify with the configured key "
                                     f"{signer.key_name}: was the signing key rotated mid-release? Publish again.")
                continue
            pins = {name: res.pinned_image for name in res.built_containers}
            deployment = res.deployment or deployment_string(pin_images(res.definition["deployment"], pins))
            signed[arch] = (deployment, sign_deployment(signer, deployment))

    def record(r: Release) -> None:
        for arch, (deployment, signature) in signed.items():
            res = r.result(arch)
            if not res.signature:  # written once: a concurrent attempt that got here first wins
                res.deployment, res.signature = deployment, signature
                res.signature_fingerprint = fingerprint(base64.b64decode(signature))
        r.key_name = signer.key_name
        r.public_key_fingerprint = public_key_fingerprint(public_pem)
        if r.state == BUILDING:  # a re-run sign (resumed) never moves a release back from approval or publish
            r.state = PUBLISHING
        r.event("signed", key=signer.key_name)

    set_stage(ctx, release_id, "sign", DONE, note=f"key {signer.key_name}", extra=record)
    ctx.reporter.refresh_root(release_id)
    from workers import gate

    with failures.translated("approval", release, registry, ctx=ctx):  # reads the Exchange for the card
        waiting = gate.request(ctx, release_id)
    if not waiting:
        enqueue(ctx, PUBLISH_QUEUE, "publish_release", release_id)


# -- step 4: publish --------------------------------------------------------------------------------------------------

def publish(ctx: WorkerContext, release_id: str) -> None:
    from workers.signing import fingerprint

    release = ctx.store.require(release_id)
    if release.is_final:
        return
    registry = ctx.config.registries[release.registry]
    from workers import gate

    with failures.translated("approval", release, registry, ctx=ctx):
        if not gate.recheck(ctx, release):  # changed since it was approved: asked again, nothing published
            return
    set_stage(ctx, release_id, "publish", RUNNING)
    actions: dict[str, tuple[str, str]] = {}
    adopted: dict[str, str] = {}
    token_notes: list[str] = []
    with failures.translated("publish", release, registry, ctx=ctx):
        from workers.exchange import publish_service, service_id

        client = ctx.exchange(release.org)
        try:
            if release.dry_run:
                for arch in release.arches:
                    definition = _definition(release, arch)
                    sid = service_id(definition.url, release.version, arch)
                    existing = client.get_service(release.org, sid)
                    actions[arch] = (sid, "would create" if existing is None else "exists: would be checked")
            else:
                public_pem = ctx.signer().public_key_pem()
                node_creds = ctx.node_credentials(registry)
                dockauths = [(registry.host, node_creds[0], node_creds[1].reveal())] if node_creds else []
                from workers.registries import node_token_notes

                token_notes = node_token_notes(registry, node_creds, window=ctx.config.settings.token_expiry_warning)
                from workers.signing import verify_deployment

                for arch in release.arches:
                    if ctx.store.require(release_id).is_final:  # cancelled between two arches' writes
                        raise ReleaseEnded(f"release {release_id} ended during publish")
                    res = release.result(arch)
                    definition = _definition(release, arch)
                    signature = res.signature
                    if not verify_deployment(public_pem, res.deployment, signature):  # nodes would refuse it
                        raise StepFailed(f"the signature of {arch} does not verify with the current public key "
                                         f"({ctx.config.signing.source}): the signing key was rotated after this "
                                         "release was signed. Nothing was published; publish again.")
                    live = client.get_service(release.org, service_id(definition.url, release.version, arch))
                    if (live and live.get("deployment") == res.deployment and live.get("deploymentSignature")
                            and verify_deployment(public_pem, res.deployment, live["deploymentSignature"])):
                        # Same bytes already live, signed by our key: RSA-PSS is randomized, so keep the live
                        # signature and let this be the "already published" no-op it is.
                        signature = adopted[arch] = live["deploymentSignature"]
                    body = definition.exchange_body(res.deployment, signature)
                    outcome = publish_service(client, release.org, body, key_name=release.key_name or
                                              ctx.config.signing.key_name, public_key_pem=public_pem,
                                              dockauths=dockauths, overwrite=release.overwrite)
                    actions[arch] = (outcome.service_id, outcome.action)
        finally:
            client.close()

    def record(r: Release) -> None:
        for arch, signature in adopted.items():
            r.result(arch).signature = signature
            r.result(arch).signature_fingerprint = fingerprint(base64.b64decode(signature))
        for arch, (sid, action) in actions.items():
            r.result(arch).service_id = sid
            r.result(arch).publish_action = {"unchanged": "already published"}.get(action, action)
        r.notes.extend(n for n in token_notes if n not in r.notes)
        if registry.node_credentials() is None:
            r.notes.append(f"Registry `{registry.alias}` has no pull credential: no dockauth was stored, so nodes "
                           "pull anonymously. Set pull_username/pull_password if the registry is private.")
        elif registry.reuse_push_credentials_for_nodes and not registry.pull_username:
            r.notes.append(f":warning: nodes got the *push* credential of `{registry.alias}` as their dockauth "
                           "(reuse_push_credentials_for_nodes = true): any user of the org can read it back.")
        r.state = ROLLING_OUT if rolls_out else SUCCEEDED
        r.event("published", services=[sid for sid, _ in actions.values()])

    rolls_out = bool(ctx.config.services[release.service].rollout) and not release.dry_run
    set_stage(ctx, release_id, "publish", DONE, note=", ".join(sorted({a for _, a in actions.values()})), extra=record)
    if rolls_out:  # the rollout watch posts the summary when the fleet has moved (or rolled back)
        ctx.reporter.refresh_root(release_id)
        enqueue(ctx, PUBLISH_QUEUE, "start_rollout", release_id)
    else:
        ctx.reporter.summary(release_id)


def _definition(release: Release, arch: str) -> ServiceDefinition:
    res = release.result(arch)
    raw = res.definition
    return ServiceDefinition(raw=raw, org=release.org, url=raw["url"], version=release.version, arch=arch,
                             deployment=raw["deployment"], built=dict(res.built_containers))
