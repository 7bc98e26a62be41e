"""`/edge deploy SERVICE VERSION` and `/edge rollback SERVICE --to VERSION`: move the rollout stages to a version that
is already in the Exchange, without a build.

A deploy is a release of its own kind (``Release.kind``): the bot records it (sealed, like a publish) and queues
:func:`check`, which

1. reads the version's service definition at its git ref (``ServiceConfig.ref_for``), for the service URL the
   Exchange ids are made of (and what prepare would read, sealed the same way);
2. reads the deployment policies and patterns of the rollout, for the arches they cover (a policy on ``*`` covers
   every arch of the catalog);
3. reads each covered arch's service from the Exchange and verifies its deployment signature against the keys stored
   with the service (``GET orgs/{org}/services/{id}/keys``, ``keys/{keyid}``) as an agent does: anax
   ``policy/workload.go`` ``Workload.HasValidSignature`` accepts a deployment that any one of them verifies
   (``rsapss-tool/verify.InputVerifiedByAnyKey``), and declines it silently otherwise; and checks that its images are
   in the registry whose approval rules apply;

and records the service ids, deployment strings and signatures once. A version missing for a covered arch, a
signature no stored key verifies, a version not in the Exchange at all: the release fails with that reason before
anything moves. Then the approval gate (``workers.gate.request``, same policy as a publish, over
``approvals.deploy_covers``), or straight on. :func:`go` (a step per approval round, like publish) verifies it all
again from the Exchange and the seals, counts the sealed approvals against this worker's own policy, and only then
enqueues the rollout (``workers.rollout_watch.start``: stages, polls, health, fallback as for a publish).
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebot import approvals, fleet_messages
from edgebot.config import RegistryConfig
from edgebot.errors import StepFailed
from edgebot.ids import docker_image_base
from edgebot.jobs import Step, enqueue_step
from edgebot.release import AWAITING_APPROVAL, PUBLISHING, QUEUED, ROLLING_OUT, Release
from workers import failures, gate, trust
from workers.context import WorkerContext
from workers.definition import ServiceDefinition, read_definition
from workers.exchange import service_id
from workers.git_auth import git_auth_for
from workers.rollout import covered_arches, stages_of
from workers.signing import fingerprint
from workers.source import SourceError, read_file_at, resolve_ref
from workers.verify import images_of, key_that_verifies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Found:
    """One arch of the version as the Exchange holds it, verified."""

    service_id: str
    deployment: str
    signature: str
    key: str
    """The name of the stored key that verifies the signature."""


def read_source(ctx: WorkerContext, release: Release) -> tuple[str, dict[str, ServiceDefinition]]:
    """The commit of the version's ref and each arch's expanded definition (what prepare reads, nothing built)."""
    service = ctx.config.services[release.service]
    registry = ctx.config.registries[release.registry]
    cache = Path(ctx.config.settings.source_cache_dir)
    cap = ctx.config.settings.source_file_max_bytes
    ref = service.ref_for(release.version)
    auth = git_auth_for(service, ctx.resolver)
    try:
        sha = release.commit_sha or resolve_ref(service.source, ref, cache, auth=auth)
    except SourceError as exc:
        if getattr(exc, "transient", False):
            raise
        raise StepFailed(f"{release.service} {release.version} is not a version of its source ({exc}), so it was "
                         "never published: only a published version can be deployed. Nothing moved.") from None
    horizon = service.horizon_dir.strip("/")
    text = read_file_at(service.source, sha, f"{horizon}/service.definition.json", cache, max_bytes=cap, auth=auth)
    if text is None:
        raise StepFailed(f"{horizon}/service.definition.json is missing at `{ref}` ({sha[:12]}) of {service.name}'s "
                         "source, so edgebot cannot tell which service of the Exchange this version is. Nothing moved.")
    hzn_json = read_file_at(service.source, sha, f"{horizon}/hzn.json", cache, max_bytes=cap, auth=auth)
    base = docker_image_base(registry.host, registry.namespace, service.image_base)
    definitions = {arch: read_definition(text, hzn_json, org=release.org, version=release.version, arch=arch,
                                         image_base=base, max_bytes=cap) for arch in release.arches}
    return sha, definitions


def covered(ctx: WorkerContext, client: Any, release: Release, url: str) -> dict[str, list[str]]:
    """arch -> the policies/patterns of the rollout that deploy ``url`` on it (a missing object, created from the
    service's source when its stage begins, is taken to cover every arch of the catalog)."""
    service = ctx.config.services[release.service]
    arches: dict[str, list[str]] = {}
    for stage in stages_of(service, release):
        for target in stage.targets:
            body = client.get_deployment_object(target.kind, release.org, target.name)
            reached = (set(service.arches) if body is None else
                       covered_arches(target.kind, body, release.org, url, service.arches))
            for arch in reached:
                arches.setdefault(arch, []).append(f"{target.kind} `{target.name}`")
    return arches


def _image_host(image: str) -> str:
    """The registry of an image reference as Docker reads it (no domain part: ``docker.io``)."""
    first, sep, _ = image.partition("/")
    return first if sep and ("." in first or ":" in first or first == "localhost") else "docker.io"


def verify_arch(client: Any, release: Release, registry: RegistryConfig, url: str, arch: str) -> Found | None:
    """The version's service for ``arch`` from the Exchange, its signature verified against the keys stored with it,
    its images in ``registry``; None when the Exchange has no such service. Raises StepFailed naming the problem."""
    sid = service_id(url, release.version, arch)
    record = client.get_service(release.org, sid)
    if record is None:
        return None
    deployment = str(record.get("deployment") or "")
    signature = str(record.get("deploymentSignature") or "")
    verified_by, key_count = key_that_verifies(client, release.org, sid, deployment, signature)  # as agents do
    if not verified_by:
        raise StepFailed(f"the deployment signature of `{release.org}/{sid}` verifies with none of the {key_count} "
                         "key(s) stored with the service: agents would decline it without reporting an error. "
                         "Nothing moved; publish the version again signed with a key stored with the service (or "
                         "store the key that signed it).")
    cluster = str(record.get("clusterDeployment") or "")
    if cluster and not key_that_verifies(client, release.org, sid, cluster,
                                         str(record.get("clusterDeploymentSignature") or ""))[0]:
        raise StepFailed(f"the clusterDeploymentSignature of `{release.org}/{sid}` verifies with none of the key(s) "
                         "stored with the service: edge clusters would decline it. Nothing moved; publish the version "
                         "again.")
    images = images_of(deployment)
    if images is None:
        raise StepFailed(f"the deployment of `{release.org}/{sid}` is not JSON; nothing moved")
    elsewhere = sorted({host for image in images if (host := _image_host(image)) != registry.host})
    if elsewhere:
        raise StepFailed(f"the images of `{release.org}/{sid}` are in {', '.join(elsewhere)}, not in registry "
                         f"`{registry.alias}` ({registry.host}) whose approval rules this deploy was asked under: "
                         "deploy with `--registry` naming the registry they were pushed to. Nothing moved.")
    return Found(sid, deployment, signature, verified_by)


def verify(ctx: WorkerContext, release: Release, url: str) -> dict[str, Found]:
    """Every arch the rollout covers, from the Exchange and verified; StepFailed (nothing moved) otherwise."""
    registry = ctx.config.registries[release.registry]
    client = ctx.exchange(release.org)
    try:
        needed = covered(ctx, client, release, url)
        found = {arch: f for arch in release.arches if (f := verify_arch(client, release, registry, url, arch))}
    finally:
        client.close()
    if not found:
        raise StepFailed(f"{release.service} {release.version} is not in the Exchange of org `{release.org}` for any "
                         f"arch (no service `{service_id(url, release.version, release.arches[0])}`): only a "
                         "published version can be deployed. Publish it first. Nothing moved.")
    missing = sorted(set(needed) - set(found))
    if missing:
        arch = missing[0]
        raise StepFailed(f"{release.service} {release.version} is not in the Exchange for {', '.join(missing)} "
                         f"(no service `{service_id(url, release.version, arch)}`), but {', '.join(needed[arch])} "
                         f"deploys it on {arch}: publish {release.version} for {', '.join(missing)} first, or deploy "
                         "with `--policy` naming only objects of the arches it has. Nothing moved.")
    return found


def _url(definitions: dict[str, ServiceDefinition]) -> str:
    return next(iter(definitions.values())).url


# -- step 1: check ------------------------------------------------------------------------------------------------

def check(ctx: WorkerContext, release_id: str) -> None:
    release = ctx.store.require(release_id)
    if not release.is_deploy:
        raise trust.SecurityCheckFailed(f"release {release.release_id} is not a deploy", nothing="Nothing was moved")
    if release.is_final or release.state != QUEUED:  # resumed after it moved on
        if release.state == AWAITING_APPROVAL and release.approval is None:  # killed before it asked: ask now
            gate.request(ctx, release_id)
        return
    sealer = ctx.sealer()
    trust.check_intake(sealer, release)  # a deploy the bot did not record moves nothing
    ctx.reporter.ensure_root(release_id)
    registry = ctx.config.registries[release.registry]
    with failures.translated("source", release, registry, ctx=ctx):
        sha, definitions = read_source(ctx, release)
    with failures.translated("deploy", release, registry, ctx=ctx):
        found = verify(ctx, release, _url(definitions))
    policy = ctx.config.approval_policy(org=release.org, service=release.service, registry=release.registry)

    def record(r: Release) -> bool:
        if r.state != QUEUED:
            return False
        r.commit_sha = r.commit_sha or sha
        for arch in r.arches:
            res = r.result(arch)
            res.definition = res.definition or definitions[arch].raw
            if arch in found and not res.service_id:
                f = found[arch]
                res.service_id, res.deployment, res.signature = f.service_id, f.deployment, f.signature
                res.signature_fingerprint = fingerprint(base64.b64decode(f.signature))
                res.publish_action = "already in the Exchange"
        r.key_name = ", ".join(sorted({f.key for f in found.values()}))
        trust.seal_source(sealer, r)
        r.event("deploy_checked", services={a: f.service_id for a, f in found.items()},
                keys={a: f.key for a, f in found.items()})
        if policy.needed:
            r.state = AWAITING_APPROVAL  # gate.request records the request and posts the card next
            return False
        r.state = PUBLISHING
        return True

    def then(r: Release, go_on: bool, pipe: Any) -> None:
        if go_on:
            enqueue_step(ctx.redis, ctx.config.settings, Step.DEPLOY, release_id, pipe=pipe)

    ctx.store.update(release_id, record, fence=ctx.lease, active=True, then=then)
    ctx.reporter.note(release_id, fleet_messages.deploy_checked(ctx.store.require(release_id),
                                                          {a: f.key for a, f in found.items()}))
    ctx.reporter.refresh_root(release_id)
    if policy.needed:
        with failures.translated("approval", release, registry, ctx=ctx):
            gate.request(ctx, release_id)


# -- step 2: go -----------------------------------------------------------------------------------------------------

def go(ctx: WorkerContext, release_id: str, round_: int = 1) -> None:
    """Verify the deploy again (seals, the Exchange as it is now, the approvals under this worker's policy) and start
    the rollout in the same write. A record or an Exchange that changed since the check moves nothing."""
    release = ctx.store.require(release_id)
    if release.is_final or release.state == ROLLING_OUT or release.rollout:
        return
    if release.approval is not None and release.approval.round > round_:
        return  # that round was superseded
    registry = ctx.config.registries[release.registry]
    sealer = ctx.sealer()
    if not release.is_deploy:
        raise trust.SecurityCheckFailed(f"release {release.release_id} is not a deploy", nothing="Nothing was moved")
    trust.check_intake(sealer, release)
    trust.check_source(sealer, release)
    url = str(release.result(release.arches[0]).definition.get("url") or "")
    with failures.translated("deploy", release, registry, ctx=ctx):
        found = verify(ctx, release, url)
    for arch in release.arches:
        res, now = release.result(arch), found.get(arch)
        live = (now.service_id, now.deployment, now.signature) if now else ("", "", "")
        if live != (res.service_id, res.deployment, res.signature):
            raise StepFailed(f"{release.service} {release.version} for {arch} changed in the Exchange since edgebot "
                             "checked it (republished with --overwrite?): nothing moved; deploy it again.")
    policy = ctx.config.approval_policy(org=release.org, service=release.service, registry=release.registry)
    if policy.needed:
        approval = release.approval
        if approval is None or approval.quorum_at is None:
            raise trust.SecurityCheckFailed(f"deploy {release.release_id} reached the rollout without an approval "
                                            f"(the approval policy asks for {policy.required})",
                                            nothing="Nothing was moved")
        digest = approvals.covers_digest(approvals.deploy_covers(release, gate.targets(ctx, release)))
        if digest != approval.covers_digest:
            gate.request(ctx, release_id, invalidated=approval.covers_digest)
            return
        try:
            trust.check_approvals(sealer, release, approval, policy, digest)
        except trust.SecurityCheckFailed as exc:
            raise trust.SecurityCheckFailed(exc.problem, nothing="Nothing was moved") from None

    def start(r: Release) -> bool:
        if r.is_final or r.state == ROLLING_OUT:
            return False
        r.state = ROLLING_OUT
        r.event("deploying", services=[found[a].service_id for a in sorted(found)])
        return True

    def then(r: Release, starts: bool, pipe: Any) -> None:
        if starts:
            enqueue_step(ctx.redis, ctx.config.settings, Step.START_ROLLOUT, release_id, pipe=pipe)

    ctx.store.update(release_id, start, fence=ctx.lease, active=True, then=then)
    ctx.reporter.refresh_root(release_id)
