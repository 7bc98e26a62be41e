"""What the publish worker checks itself before it signs or publishes: it trusts no record field it cannot verify.

The release record lives in a Redis that build workers can write, and build workers run repository-controlled
Dockerfiles: a compromised one could forge a quorum, swap the deployment, point the release at another commit or
make up a release. The publish worker therefore acts only on

* a request the bot sealed (who asked for what, edgebot.seals ``intake``);
* the commit and definitions its own ``prepare`` read from git and sealed (``source``);
* a deployment string it rebuilds itself from those definitions and the pushed digests, byte for byte;
* approvals the bot sealed, each over exactly the coverage the worker recomputes, counted against the approval
  policy of the worker's own config: distinct users, each an approver of the policy (directly or through the user
  group the bot resolved), never the requester unless the policy allows it, at least ``required`` of them.

Any mismatch is a :class:`SecurityCheckFailed`: the release fails with a security alert in its thread, and nothing is
signed or published. Without ``[trust] seal_key`` (only allowed when nothing needs approval) the seals are not
checked; the deployment is still rebuilt.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgebot import approvals
from edgebot.approvals import ApprovalPolicy, Kind
from edgebot.errors import StepFailed
from edgebot.release import Approval, Decision, Release, RequestStatus
from edgebot.seals import Sealer, decision_payload, intake_payload, source_payload
from workers.definition import deployment_string, pin_images
from workers.images import pinned_reference
from workers.registry_api import ImageMismatch, RegistryReader, RegistryReadError

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger(__name__)


class SecurityCheckFailed(StepFailed):
    """The record holds something the publish worker cannot verify: stop, sign and publish nothing, alert."""

    def __init__(self, problem: str, *, nothing: str = "Nothing was signed or published") -> None:
        super().__init__(f":rotating_light: Security check failed: {problem}. {nothing}; the "
                         "record may have been written by something other than edgebot's bot and publish workers "
                         "(a compromised build worker?). Investigate before publishing this version again.")
        self.problem = problem


def check_intake(sealer: Sealer | None, release: Release) -> None:
    if sealer is not None and not sealer.valid("intake", intake_payload(release), release.intake_seal):
        raise SecurityCheckFailed(f"release {release.release_id} ({release.service} {release.version}, org "
                                  f"{release.org}, requested by {release.user_id}) does not carry the bot's seal")


def seal_source(sealer: Sealer | None, release: Release) -> None:
    """In prepare's record write: seal the commit and the definitions it read (once; a re-run keeps the first)."""
    if sealer is not None and not release.source_seal:
        release.source_seal = sealer.seal("source", source_payload(release))


def check_source(sealer: Sealer | None, release: Release) -> None:
    if sealer is not None and not sealer.valid("source", source_payload(release), release.source_seal):
        raise SecurityCheckFailed(f"the commit or a service definition of release {release.release_id} is not what "
                                  "prepare read from git")


def expected_deployment(release: Release, arch: str) -> str:
    """The deployment string for ``arch``, rebuilt from the definition and the pushed digest."""
    res = release.result(arch)
    pins = {**res.external_pins, **{name: res.pinned_image for name in res.built_containers}}
    return deployment_string(pin_images(res.definition["deployment"], pins))


def expected_cluster_deployment(release: Release, arch: str) -> str:
    """The ``clusterDeployment`` string for ``arch`` ("" for a device-only service): workers/cluster_release.py."""
    from workers.cluster_release import expected_cluster_deployment as rebuild

    return rebuild(release, arch)


def check_deployments(release: Release) -> None:
    for arch in release.arches:
        res = release.result(arch)
        try:
            expected_pin = pinned_reference(res.image_tag, res.digest)
        except ValueError:
            raise SecurityCheckFailed(f"the digest reported for {arch} ({res.digest[:80]!r}) is not a sha256 "
                                      "digest") from None
        if res.pinned_image != expected_pin:
            raise SecurityCheckFailed(f"the pinned image of {arch} ({res.pinned_image}) is not the pushed digest "
                                      f"({expected_pin})")
        if res.deployment and res.deployment != expected_deployment(release, arch):
            raise SecurityCheckFailed(f"the deployment of {arch} in the record differs from the one rebuilt from the "
                                      "service definition and the pushed digest")
        if res.cluster_deployment and res.cluster_deployment != expected_cluster_deployment(release, arch):
            raise SecurityCheckFailed(f"the clusterDeployment of {arch} in the record differs from the one rebuilt "
                                      "from the sealed operator archive, its pins and the pushed digests")


def check_pushed_images(ctx: WorkerContext, release: Release) -> None:
    """Read each pinned image back from the registry (manifest and config, each checked against its sha256) and
    check it is an image of its arch: a build worker cannot make the worker sign a digest it never pushed."""
    registry = ctx.config.registries[release.registry]
    creds = ctx.node_credentials(registry)
    ca = ctx.resolver.resolve(registry.ca_cert).reveal() if registry.ca_cert is not None else None
    with RegistryReader(registry.host, username=creds[0] if creds else "", password=creds[1].reveal() if creds else "",
                        ca_pem=ca, timeout=ctx.config.settings.registry_timeout) as reader:
        for arch in release.arches:
            res = release.result(arch)
            repository = res.image_tag.rpartition(":")[0]
            if not repository.startswith(registry.host + "/"):
                raise SecurityCheckFailed(f"the image of {arch} ({repository}) is not in registry {registry.host}")
            try:
                found, variant = reader.image_arch(repository[len(registry.host) + 1:], res.digest)
            except ImageMismatch as exc:
                raise SecurityCheckFailed(f"the pushed image of {arch} does not check out: {exc}") from None
            except RegistryReadError as exc:
                raise StepFailed(f"sign: could not read the pushed image of {arch} back: {exc}", transient=True) \
                    from None
            if found != arch:
                raise SecurityCheckFailed(f"{repository}@{res.digest} is an image for {found}"
                                          f"{'/' + variant if variant else ''}, not {arch}")


def check_release(sealer: Sealer | None, release: Release) -> None:
    """Everything but the approvals: the request, the source, the pins and the deployments."""
    check_intake(sealer, release)
    check_source(sealer, release)
    check_deployments(release)


def check_approvals(sealer: Sealer | None, release: Release, approval: Approval, policy: ApprovalPolicy,
                    covers_digest: str, *, requester: str | None = None) -> list[Decision]:
    """The approvals that count for ``covers_digest`` (the coverage the worker recomputed) under ``policy``.

    A decision without the bot's seal is evidence of tampering (SecurityCheckFailed), as is a quorum that the
    counted approvals do not make. ``requester``: who asked (four-eyes); the release's requester by default, the
    rollback request's requester for a rollback.
    """
    requester = release.user_id if requester is None else requester
    if sealer is None:
        raise SecurityCheckFailed("this release needs approval but the publish worker has no [trust] seal_key to "
                                  "verify approvals with")
    counted: dict[str, Decision] = {}
    refused: list[str] = []
    for decision in approval.decisions:
        payload = decision_payload(release.release_id, approval.kind, approval.round, decision)
        if not sealer.valid("decision", payload, decision.seal):
            raise SecurityCheckFailed(f"a decision attributed to {decision.user_id} ({decision.outcome}, round "
                                      f"{approval.round}) does not carry the bot's seal")
        if decision.outcome != "approved" or decision.covers_digest != covers_digest:
            continue
        if decision.via not in policy.approvers or (decision.via != decision.user_id
                                                    and not decision.via.startswith("S")):
            refused.append(f"{decision.user_id} is not an approver of the policy")
        elif decision.user_id == requester and not policy.allow_requester:
            what = "release" if requester == release.user_id else approval.kind
            refused.append(f"{decision.user_id} requested the {what} (four-eyes)")
        else:
            counted.setdefault(decision.user_id, decision)
    if len(counted) < policy.required:
        why = "; ".join(refused) or "no other sealed approval covers what would ship"
        raise SecurityCheckFailed(f"the record claims a quorum, but only {len(counted)} of the {policy.required} "
                                  f"approvals the policy needs verify ({why})")
    return list(counted.values())


def check_rollback(sealer: Sealer | None, release: Release, user_id: str, policy: ApprovalPolicy) -> None:
    """Before the rollback job writes anything: where this worker's policy asks for approval, the release's rollback
    request must be approved by sealed decisions over exactly what the rollback would move now (the objects of the
    record and the versions they get back), counted like a publish's, four-eyes against who asked for it."""
    if not policy.needed:
        return
    nothing = "Nothing was moved"
    request = release.rollback_request
    if request is None or request.status != RequestStatus.APPROVED or request.quorum_at is None:
        raise SecurityCheckFailed(f"a rollback of release {release.release_id} was queued without an approved "
                                  f"rollback request (the approval policy asks for {policy.required})",
                                  nothing=nothing)
    if request.kind != Kind.ROLLBACK or request.requested_by != user_id:
        raise SecurityCheckFailed(f"the rollback job of release {release.release_id} names {user_id}, but the "
                                  f"approved request was made by {request.requested_by or 'nobody'}", nothing=nothing)
    digest = approvals.covers_digest(approvals.rollback_covers(release))
    if digest != request.covers_digest:
        raise SecurityCheckFailed(f"what the rollback of release {release.release_id} would move is not what its "
                                  "request covered when it was approved", nothing=nothing)
    try:
        check_approvals(sealer, release, request, policy, digest, requester=request.requested_by)
    except SecurityCheckFailed as exc:
        raise SecurityCheckFailed(exc.problem, nothing=nothing) from None
