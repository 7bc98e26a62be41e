"""The publish pipeline: prepare (source + definition checks) → build/push per arch → sign → publish.

Each step reads the release record, does its work, writes its output to the record *once* (a retry reuses what an
earlier attempt stored: commit SHA, digest, deployment string, signature) and reports to the thread. The write that
decides to move on enqueues the next step in the same MULTI (``then=``): a step killed at any point has either not
moved on, and is resumed to decide again, or has moved on, and its resumed attempt finds that in the record.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rq import Queue, Worker

from edgebot.errors import ReleaseEnded, StepFailed
from edgebot.ids import docker_image_base, image_repository
from edgebot.jobs import SERIALIZER, Step, build_queue, enqueue_step
from edgebot.release import (
    BUILDING,
    DONE,
    PENDING,
    PUBLISHING,
    QUEUED,
    ROLLING_OUT,
    RUNNING,
    SKIPPED,
    STAGES,
    SUCCEEDED,
    ArchResult,
    Release,
)
from edgebot.secrets import Secret
from workers import (
    build_report,
    builders,
    cluster_release,
    dependencies,
    dockauths,
    external_images,
    failures,
    gate,
    service_policy,
    trust,
    verify,
)
from workers.context import WorkerContext
from workers.definition import ServiceDefinition, read_definition
from workers.exchange import publish_service, service_id
from workers.git_auth import git_auth_for
from workers.images import BuildLimits, pinned_reference
from workers.progress import set_stage
from workers.registries import node_token_notes
from workers.signing import fingerprint, public_key_fingerprint, sign_deployment, verify_deployment
from workers.source import checkout, read_file_at, resolve_ref, same_tree

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def _enqueue(ctx: WorkerContext, step: Step, release_id: str, *args: str) -> Any:
    """A ``then`` for :func:`set_stage`: enqueue ``step`` in the same MULTI when the write decided to move on."""

    def then(release: Release, move_on: bool | None, pipe: Any) -> None:
        if move_on:
            enqueue_step(ctx.redis, ctx.config.settings, step, release_id, *args, pipe=pipe)

    return then


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
    if release.is_final or release.stage("source").status == DONE:  # resumed after it moved on: nothing left
        return
    sealer = ctx.sealer()
    trust.check_intake(sealer, release)  # a release the bot did not record is never built
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
    auth = git_auth_for(service, ctx.resolver)  # a private source's token or deploy key (read when git fetches)
    with failures.translated("source", release, registry):
        sha = release.commit_sha or resolve_ref(service.source, ref, cache, auth=auth)
        definitions: dict[str, ServiceDefinition] = {}
        base = docker_image_base(registry.host, registry.namespace, service.image_base)
        horizon = service.horizon_dir.strip("/")
        definition_path = f"{horizon}/service.definition.json"
        cap = ctx.config.settings.source_file_max_bytes
        definition_text = read_file_at(service.source, sha, definition_path, cache, max_bytes=cap, auth=auth)
        if definition_text is None:
            raise StepFailed(f"{definition_path} is missing at commit {sha[:12]} of {service.name}'s source")
        hzn_json = read_file_at(service.source, sha, f"{horizon}/hzn.json", cache, max_bytes=cap, auth=auth)
        for arch in release.arches:
            definition = read_definition(
                definition_text, hzn_json, org=release.org, version=release.version, arch=arch, image_base=base,
                max_bytes=cap,
            )
            if release.public is not None:  # --public / --private (sealed by the bot) over the definition's
                definition = replace(definition, raw={**definition.raw, "public": release.public})
            definitions[arch] = definition
        policies = service_policy.for_release(ctx, release, sha, definitions)  # refused before any build
        external = external_images.pin(ctx, definitions, service=release.service, pin_tags=service.pin)
        clusters = cluster_release.prepare(ctx, release, service=service, sha=sha, image_base=base,
                                           definitions=definitions, auth=auth)  # operator archive: read, pinned
    with failures.translated("source", release, registry, ctx=ctx), ctx.exchange(release.org) as deps_client:
        dependencies.check(deps_client, definitions, org=release.org, service=release.service,
                           version=release.version)  # every requiredServices entry in the Exchange first
    with failures.translated("source", release, registry, ctx=ctx):
        published = _published_digests(ctx, release, definitions)
    unchanged = _published_from_same_inputs(ctx, release, sha, published)
    missing = [a for a in release.arches if live_build_workers(ctx, a) == 0]
    if missing:
        raise StepFailed(
            "no live build worker serves " + ", ".join(missing) + ": start one with "
            + " and ".join(f"`edgebot worker --arch {a}`" for a in missing) + ", then publish again"
        )

    def record(r: Release) -> tuple[bool, bool]:
        r.commit_sha = r.commit_sha or sha
        for arch, definition in definitions.items():
            result = r.result(arch)
            if not result.definition:
                result.definition = definition.raw
                result.built_containers = dict(definition.built)
                result.service_policy = policies.get(arch, {})  # sealed with the definition
                result.external_pins = dict(external.get(arch, {}))
                result.cluster_archive, result.cluster_pins = clusters.get(arch, ("", {}))
            result.published_digest = result.published_digest or published.get(arch, "")
            result.image_tag = result.image_tag or (
                f"{image_repository(registry.host, registry.namespace, service.image_base, arch)}:{r.version}"
            )
            r.arch_step("build", arch)
            r.arch_step("push", arch)
            if arch in unchanged and not result.digest:  # nothing to build: what is published is this commit's
                result.digest = unchanged[arch]
                result.pinned_image = pinned_reference(result.image_tag.rpartition(":")[0], unchanged[arch])
                for step in ("build", "push"):
                    r.arch_step(step, arch).mark(SKIPPED, "published from the same build inputs: not rebuilt")
        r.event("source", commit=r.commit_sha, ref=ref)
        trust.seal_source(sealer, r)
        starts = r.stage("build").status == PENDING
        r.stage("build").mark(RUNNING)
        return starts, starts and build_report.fan_in(r)  # every arch unchanged: straight on to sign

    def start_builds(r: Release, decided: tuple[bool, bool] | None, pipe: Any) -> None:
        starts, signs = decided or (False, False)
        for arch in r.arches if starts and not signs else ():
            if not r.result(arch).digest:
                enqueue_step(ctx.redis, ctx.config.settings, Step.BUILD, release_id, arch, pipe=pipe)
        if signs:
            enqueue_step(ctx.redis, ctx.config.settings, Step.SIGN, release_id, pipe=pipe)

    set_stage(ctx, release_id, "source", DONE, note=f"{len(release.arches)} definition(s) checked", extra=record,
              then=start_builds)
    ctx.reporter.stage(release_id, "build")
    ctx.reporter.refresh_root(release_id)


def _published_digests(ctx: WorkerContext, release: Release,
                       definitions: dict[str, ServiceDefinition]) -> dict[str, str]:
    """The republish guard, before anything is built or pushed: per arch whose version is already in the Exchange,
    the image digest its published deployment pins ("unpinned" when it names none). The build worker (which holds no
    Exchange credential) then pushes without moving that version's tag (``images.push_guarded``)."""
    if release.dry_run:
        return {}
    found: dict[str, str] = {}
    client = ctx.exchange(release.org)
    try:
        for arch, definition in definitions.items():
            live = client.get_service(release.org, service_id(definition.url, release.version, arch))
            if live is not None:
                found[arch] = published_image_digest(live.get("deployment"), definition.built) or "unpinned"
    finally:
        client.close()
    return found


def _published_from_same_inputs(ctx: WorkerContext, release: Release, sha: str,
                                published: dict[str, str]) -> dict[str, str]:
    """arch -> digest, for the arches whose version is in the Exchange with the image an earlier edgebot release
    built (its record's seals verify) from this commit, or from one whose build inputs are the same: the build
    context at both commits identical but for the service policy file, and no build arg naming ``{commit}``.
    Nothing to rebuild there, so a change of the service policy alone publishes without a build. Never with
    --overwrite (a rebuild is asked for) or for a dry run."""
    wanted = {arch: digest for arch, digest in published.items() if digest}
    if release.overwrite or release.dry_run or not wanted:
        return {}
    service = ctx.config.services[release.service]
    cache = Path(ctx.config.settings.source_cache_dir)
    policy_file = f"{service.horizon_dir.strip('/')}/{service.service_policy}"
    commit_in_args = any("{commit}" in template for _, template in service.build.args)
    sealer = ctx.sealer()
    found: dict[str, str] = {}
    for earlier in ctx.store.history(release.org, release.service, limit=50):
        if (earlier.release_id == release.release_id or earlier.version != release.version or earlier.is_deploy
                or earlier.state not in (SUCCEEDED, ROLLING_OUT) or not earlier.commit_sha):
            continue
        if earlier.commit_sha != sha and (commit_in_args or not same_tree(
                service.source, earlier.commit_sha, sha, service.context, cache, leaving_out=(policy_file,))):
            continue
        try:
            trust.check_source(sealer, earlier)
        except Exception:  # a record whose seal does not verify vouches for nothing
            continue
        found.update({arch: digest for arch, digest in wanted.items()
                      if arch in earlier.results and earlier.results[arch].digest == digest})
    return found


def published_image_digest(deployment: Any, built: dict[str, str]) -> str:
    """The ``sha256:…`` the published deployment string pins for the first of the containers edgebot builds."""
    try:
        services = json.loads(deployment).get("services", {}) if isinstance(deployment, str) and deployment else {}
    except (ValueError, AttributeError):
        return ""
    for name in sorted(built):
        image = services.get(name, {}).get("image", "") if isinstance(services.get(name), dict) else ""
        _, at, digest = str(image).partition("@")
        if at and digest.startswith("sha256:"):
            return digest
    return ""


# -- step 2: build and push one arch ----------------------------------------------------------------------------------

def build(ctx: WorkerContext, release_id: str, arch: str) -> None:
    """Build and push one arch. Runs on a build worker, whose Redis user may not write the record: every move is a
    build report (workers.build_report) that a publish worker applies, the fan-in included."""
    release = ctx.store.require(release_id)
    if release.is_final:
        return
    service = ctx.config.services[release.service]
    registry = ctx.config.registries[release.registry]
    result = release.result(arch)
    earlier = build_report.read(ctx, release_id, arch) or build_report.BuildReport()  # a resumed attempt's
    image_id = result.image_id or earlier.image_id
    repository, _, tag = result.image_tag.rpartition(":")
    if result.digest or earlier.digest or (release.dry_run and image_id):
        return  # reported already: that report's apply job (queued with it) moves the release on
    builder = builders.for_release(ctx, service, registry)  # the catalog's choice: Docker Engine or buildah
    workdir = Path(ctx.config.settings.work_dir) / f"{release_id}-{arch}"
    try:
        if not image_id:
            build_report.stage(ctx, release_id, arch, ("build", RUNNING, ""))
            with failures.translated("build", release, registry, arch=arch, ctx=ctx):
                shutil.rmtree(workdir, ignore_errors=True)
                tree = checkout(service.source, release.commit_sha, workdir,
                                Path(ctx.config.settings.source_cache_dir), auth=git_auth_for(service, ctx.resolver))
                built = builder.build(builders.BuildRequest(
                    context_dir=tree / service.context,
                    dockerfile=service.dockerfile_for(arch),
                    tag=result.image_tag,
                    arch=arch,
                    # no labels: the legacy builder would add a commit step for them (the arch is checked from the
                    # image config; the record and the Exchange service name the commit). A rebuild of the same
                    # commit hits the cache and yields the same digest: republishing is a no-op, not a conflict
                    log_lines=ctx.config.settings.build_log_lines,
                    root=tree,  # context, Dockerfile and .dockerignore must resolve inside the checkout
                    limits=BuildLimits.from_settings(ctx.config.settings),
                    version=release.version, commit=release.commit_sha,
                    watch=build_report.watch(ctx, release_id, arch),  # issue 14: "step N/M" and the whole log
                ))
            image_id = built.image_id
            # issue 14: the catalog's smoke command in the image, for its platform, before anything is pushed
            smoked = builder.smoke(built.tag, arch)
            after = (("push", SKIPPED, "dry run") if release.dry_run else ("push", RUNNING, ""))
            build_report.stage(ctx, release_id, arch, ("build", DONE, image_id[7:19]), after, image_id=image_id,
                               smoke=smoked)
            if release.dry_run:
                return
        elif release.dry_run:
            return
        else:
            build_report.stage(ctx, release_id, arch, ("push", RUNNING, ""))
        with failures.translated("push", release, registry, arch=arch, ctx=ctx):
            notes = builder.before_push()  # OpenShift: the route's CA trusted, token expiry
            digest = builder.push(  # a published version's tag never moves (prepare read the Exchange)
                repository, tag, published_digest=result.published_digest, overwrite=release.overwrite,
                release_id=release_id)
        build_report.stage(ctx, release_id, arch, ("push", DONE, digest[:19]), digest=digest, notes=notes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        builder.close()


def apply_build_report(ctx: WorkerContext, release_id: str, arch: str) -> None:
    """On a publish worker: a build report applied to the record, the fan-in enqueuing sign (workers.build_report)."""
    build_report.apply(ctx, release_id, arch)


# -- step 3: sign -----------------------------------------------------------------------------------------------------

def sign(ctx: WorkerContext, release_id: str) -> None:
    """Sign every arch's deployment, then ask for approval when the release's policy needs it. Without approval, the
    write that records the signatures enqueues publish; with it, the approval that completes the quorum does."""
    release = ctx.store.require(release_id)
    if release.is_final:
        return
    policy = ctx.config.approval_policy(org=release.org, service=release.service, registry=release.registry)
    needs_approval = policy.needed and not release.dry_run
    if release.stage("sign").status not in (DONE, SKIPPED):
        _sign_all(ctx, release, go_on=not needs_approval)
    if needs_approval:
        registry = ctx.config.registries[release.registry]
        with failures.translated("approval", release, registry, ctx=ctx):  # reads the Exchange for the card
            gate.request(ctx, release_id)


def _to_publishing(r: Release) -> bool:
    """Move a release that has just built or signed on to publishing (True); a re-run never moves it back."""
    if r.state != BUILDING:
        return False
    r.state = PUBLISHING
    return True


def _sign_all(ctx: WorkerContext, release: Release, *, go_on: bool) -> None:
    release_id = release.release_id
    then = _enqueue(ctx, Step.PUBLISH, release_id)
    if release.dry_run:
        set_stage(ctx, release_id, "sign", SKIPPED, note="dry run: nothing pushed, nothing to sign",
                  extra=_to_publishing, then=then)
        return
    set_stage(ctx, release_id, "sign", RUNNING)
    trust.check_release(ctx.sealer(), release)  # sign only what this worker can rebuild and verify
    trust.check_pushed_images(ctx, release)
    registry = ctx.config.registries[release.registry]
    with failures.translated("sign", release, registry, ctx=ctx):
        signer = ctx.signer()
        public_pem = signer.public_key_pem()
        signed: dict[str, tuple[str, str, str, str]] = {}
        for arch in release.arches:
            res = release.result(arch)
            if res.signature:
                if not verify_deployment(public_pem, res.deployment, res.signature) or (
                        res.cluster_deployment
                        and not verify_deployment(public_pem, res.cluster_deployment, res.cluster_signature)):
                    raise StepFailed(f"the stored signature of {arch} does not verify with the configured key "
                                     f"{signer.key_name}: was the signing key rotated mid-release? Publish again.")
                continue
            deployment = trust.expected_deployment(release, arch)
            cluster_deployment = cluster_release.expected_cluster_deployment(release, arch)
            signed[arch] = (deployment, sign_deployment(signer, deployment), cluster_deployment,
                            sign_deployment(signer, cluster_deployment) if cluster_deployment else "")

    def record(r: Release) -> bool:
        for arch, (deployment, signature, cluster_deployment, cluster_signature) in signed.items():
            res = r.result(arch)
            if not res.signature:  # written once: a concurrent attempt that got here first wins
                res.deployment, res.signature = deployment, signature
                res.cluster_deployment, res.cluster_signature = cluster_deployment, cluster_signature
                res.signature_fingerprint = fingerprint(base64.b64decode(signature))
        r.key_name = signer.key_name
        r.public_key_fingerprint = public_key_fingerprint(public_pem)
        r.event("signed", key=signer.key_name)
        return go_on and _to_publishing(r)

    set_stage(ctx, release_id, "sign", DONE, note=f"key {signer.key_name}", extra=record, then=then)
    ctx.reporter.refresh_root(release_id)


# -- step 4: publish --------------------------------------------------------------------------------------------------

def publish(ctx: WorkerContext, release_id: str, round_: int = 1) -> None:
    """Publish every arch to the Exchange, for approval round ``round_`` (1 when no approval is needed).

    A publish job of an earlier round than the release's current approval does nothing (that round was superseded);
    one that finds the release changed since its round was approved asks for the next round and ends: that round's
    quorum enqueues the next round's publish, a step of its own.
    """
    release = ctx.store.require(release_id)
    if release.is_final or release.stage("publish").status == DONE:  # resumed after it moved on: nothing left
        return
    if release.approval is not None and release.approval.round > round_:
        log.info("release %s: publish of approval round %s superseded by round %s", release_id, round_,
                 release.approval.round)
        return
    registry = ctx.config.registries[release.registry]
    with failures.translated("approval", release, registry, ctx=ctx):
        if not gate.recheck(ctx, release):  # changed since it was approved: asked again, nothing published
            return
    set_stage(ctx, release_id, "publish", RUNNING)
    actions: dict[str, tuple[str, str]] = {}
    adopted: dict[str, str] = {}
    adopted_cluster: dict[str, str] = {}
    node_creds: tuple[str, Secret] | None = None
    policy_actions: dict[str, str] = {}  # arch -> what was done with its service policy
    verified = ""  # the verify note of the summary
    token_notes: list[str] = []
    with failures.translated("publish", release, registry, ctx=ctx):
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
                token_notes = node_token_notes(registry, node_creds, window=ctx.config.settings.token_expiry_warning)
                extra, extra_notes = external_images.node_dockauths(  # sidecars' registries get theirs too
                    ctx, [_definition(release, a) for a in release.arches], registry)
                dockauths += extra
                token_notes += extra_notes
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
                    cluster_signature = res.cluster_signature
                    if res.cluster_deployment and not verify_deployment(public_pem, res.cluster_deployment,
                                                                        cluster_signature):
                        raise StepFailed(f"the clusterDeployment signature of {arch} does not verify with the current "
                                         "public key: the signing key was rotated after this release was signed. "
                                         "Nothing was published; publish again.")
                    if (live and res.cluster_deployment and live.get("clusterDeployment") == res.cluster_deployment
                            and verify_deployment(public_pem, res.cluster_deployment,
                                                  str(live.get("clusterDeploymentSignature") or ""))):
                        cluster_signature = adopted_cluster[arch] = live["clusterDeploymentSignature"]
                    body = definition.exchange_body(res.deployment, signature, res.cluster_deployment,
                                                    cluster_signature)
                    outcome = publish_service(client, release.org, body, key_name=release.key_name or
                                              ctx.config.signing.key_name, public_key_pem=public_pem,
                                              dockauths=dockauths, overwrite=release.overwrite,
                                              before_write=_recorder(ctx, release_id, arch))
                    actions[arch] = (outcome.service_id, _action(res, live, outcome.action))
                    policy_done = service_policy.publish(client, release.org, outcome.service_id,
                                                         res.service_policy)  # after the service
                    if policy_done:
                        policy_actions[arch] = policy_done
                verified = verify.after_publish(ctx, client, release)  # read back as nodes will meet it
        finally:
            client.close()

    def record(r: Release) -> bool:
        for arch, signature in adopted.items():
            r.result(arch).signature = signature
            r.result(arch).signature_fingerprint = fingerprint(base64.b64decode(signature))
        for arch, signature in adopted_cluster.items():
            r.result(arch).cluster_signature = signature
        for arch, (sid, action) in actions.items():
            r.result(arch).service_id = sid
            r.result(arch).publish_action = {"unchanged": "already published"}.get(action, action)
            if arch in policy_actions:
                r.result(arch).publish_action += f", {policy_actions[arch]}"
        r.notes.extend(n for n in token_notes if n not in r.notes)
        if verified and verified not in r.notes:
            r.notes.append(verified)
        if registry.node_credentials() is None:
            r.notes.append(f"Registry `{registry.alias}` has no pull credential: no dockauth was stored, so nodes "
                           "pull anonymously. Set pull_username/pull_password if the registry is private.")
        elif registry.reuse_push_credentials_for_nodes and not registry.pull_username:
            r.notes.append(f":warning: nodes got the *push* credential of `{registry.alias}` as their dockauth "
                           "(reuse_push_credentials_for_nodes = true): any user of the org can read it back.")
        r.state = ROLLING_OUT if rolls_out else SUCCEEDED
        r.event("published", services=[sid for sid, _ in actions.values()])
        return rolls_out

    rolls_out = bool(ctx.config.services[release.service].rollout) and not release.dry_run
    set_stage(ctx, release_id, "publish", DONE, note=", ".join(sorted({a for _, a in actions.values()})), extra=record,
              then=_enqueue(ctx, Step.START_ROLLOUT, release_id))
    if not release.dry_run:
        _record_dockauths(ctx, release_id, registry.host, node_creds)
    if rolls_out:  # the rollout watch posts the summary when the fleet has moved (or rolled back)
        ctx.reporter.refresh_root(release_id)
    else:
        ctx.reporter.summary(release_id)


def _record_dockauths(ctx: WorkerContext, release_id: str, host: str, node_creds: tuple[str, Secret] | None) -> None:
    """Registry, user and expiry of the dockauths just stored (never the token), for the daily check and
    ``/edge status SERVICE``; the release is published either way, so a failure here is only logged."""
    try:
        dockauths.record_published(ctx, ctx.store.require(release_id), host, node_creds)
    except Exception as exc:
        log.warning("release %s: could not record the dockauth expiries (%s)", release_id, type(exc).__name__)


def _recorder(ctx: WorkerContext, release_id: str, arch: str) -> Callable[[str], None]:
    """``before_write`` for :func:`publish_service`: record "create" / "overwrite" for ``arch`` before the service
    POST / PUT is sent (fenced by the step's lease), so a retry completes it and a failure undoes exactly it."""

    def record(what: str) -> None:
        def mutate(r: Release) -> None:
            r.result(arch).exchange_write = what

        ctx.store.update(release_id, mutate, fence=ctx.lease, active=True)

    return record


def _action(res: ArchResult, live: dict[str, Any] | None, action: str) -> str:
    """What this release did to the arch's service. An earlier attempt's write that this one found in place (a
    retry after the key or a dockauth failed transiently) is still this release's: the POST is recognized by the
    release's own signature (RSA-PSS is randomized: no other write carries it)."""
    if action != "unchanged":
        return action
    if res.exchange_write == "create" and live is not None and live.get("deploymentSignature") == res.signature:
        return "created"
    if res.exchange_write == "overwrite":
        return "updated"
    return action


def _definition(release: Release, arch: str) -> ServiceDefinition:
    res = release.result(arch)
    raw = res.definition
    return ServiceDefinition(raw=raw, org=release.org, url=raw["url"], version=release.version, arch=arch,
                             deployment=raw["deployment"], built=dict(res.built_containers),
                             cluster_archive=str(raw["clusterDeployment"]["operatorYamlArchive"])
                             if res.cluster_archive else "")
