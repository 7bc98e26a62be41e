"""What is in the Exchange for a version, checked the way nodes will meet it (``hzn exchange service verify`` and more).

Per arch, from the Exchange and the registries (never from edgebot's own record):

* the service exists (``GET orgs/{org}/services/{url}_{version}_{arch}``);
* its ``deploymentSignature`` verifies over the exact ``deployment`` string with one of the keys stored with the
  service, as the agent verifies it: anax ``policy/workload.go`` ``Workload.HasValidSignature`` accepts a deployment
  that any one stored key verifies (``rsapss-tool/verify.InputVerifiedByAnyKey``) and declines it silently otherwise;
* each image reference of the deployment is pinned by digest, exists in its registry under that digest (manifest and
  config read back and checked against their sha256: ``workers.registry_api``) as an image of the arch, and has a
  dockauth whose ``registry`` is the image's ``host[:port]`` exactly (anax ``container/imagepull.go`` uses an auth
  only on an exact match) — unless edgebot's config has no pull credential for that registry, or no entry for it
  at all (nodes pull anonymously);
* the service policy is present (and, when the source has one, is the one the source says: ``service_policy``);
* each ``requiredServices`` entry has a published version inside its range (``dependencies``).

``/edge deploy`` uses :func:`key_that_verifies` before it moves anything; publish runs :func:`verify_version` after
its writes (the result is a note of the summary); ``/edge verify`` and ``edgebot verify`` print :func:`verify_version`
through ``edgebot.fleet_messages.verify_report``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgebot import fleet_messages
from edgebot.release import Release
from workers import cluster, dependencies, external_images
from workers.definition import DefinitionError, parse_image_ref
from workers.exchange import ExchangeClient, service_id
from workers.registry_api import ImageMismatch, RegistryReader, RegistryReadError
from workers.service_policy import same_policy
from workers.signing import SigningError, verify_deployment

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger(__name__)
SERVICE, SIGNATURE, IMAGE, DOCKAUTH, POLICY, DEPENDENCY = (
    "service", "signature", "image", "dockauth", "policy", "dependency")


@dataclass(frozen=True)
class Check:
    """One finding: ``kind`` (one of the constants above), whether it holds, what it is about, and the detail."""

    kind: str
    ok: bool
    subject: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "ok": self.ok, "subject": self.subject, "detail": self.detail}


@dataclass
class ArchReport:
    arch: str
    service_id: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def problems(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


@dataclass
class Report:
    org: str
    url: str
    version: str
    arches: dict[str, ArchReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.arches) and all(a.ok for a in self.arches.values())

    def as_data(self) -> dict[str, dict[str, Any]]:
        """arch -> {"service_id", "checks": [...]}: what ``edgebot.fleet_messages.verify_report`` renders."""
        return {arch: {"service_id": a.service_id, "checks": [c.as_dict() for c in a.checks]}
                for arch, a in sorted(self.arches.items())}


def key_that_verifies(client: ExchangeClient, org: str, sid: str, deployment: str,
                      signature: str) -> tuple[str, int]:
    """(name of the first stored key that verifies ``signature`` over ``deployment``, or "", number of keys)."""
    keys = client.list_keys(org, sid)
    for name in keys:  # anax Workload.HasValidSignature: any one stored key that verifies is enough
        pem = client.get_key(org, sid, name)
        try:
            if pem and deployment and verify_deployment(pem.encode(), deployment, signature):
                return name, len(keys)
        except SigningError:  # a key an agent would not use either
            continue
    return "", len(keys)


def images_of(deployment: str) -> list[str] | None:
    """Every container's image reference, or None when the deployment is not the JSON an agent reads."""
    try:
        services = json.loads(deployment).get("services") or {}
        return [str(c.get("image") or "") for c in services.values()]
    except (ValueError, AttributeError):
        return None


def check_images(ctx: WorkerContext, images: list[str], arch: str, dockauth_hosts: set[str]) -> list[Check]:
    checks: list[Check] = []
    readers: dict[str, RegistryReader] = {}
    try:
        for image in images:
            try:
                ref = parse_image_ref(image)
            except DefinitionError as exc:
                checks.append(Check(IMAGE, False, image, f"cannot be read as an image reference ({exc})"))
                continue
            host, api_host, path = external_images.api_location(ref)
            registry = external_images.registry_for(ctx.config.registries.values(), host)
            if not ref.pinned:
                checks.append(Check(IMAGE, False, image, "is not pinned by digest: the tag can move under nodes"))
            else:
                reader = readers.get(api_host) or readers.setdefault(
                    api_host, external_images.reader_for(ctx, api_host, registry))
                checks.append(_image_check(reader, image, path, ref.digest, arch))
            if host in dockauth_hosts:
                checks.append(Check(DOCKAUTH, True, host))
            elif registry is None or ctx.node_credentials(registry) is None:  # no credential to give: public
                checks.append(Check(DOCKAUTH, True, host, "anonymous"))
            else:
                checks.append(Check(DOCKAUTH, False, host, "no dockauth for this registry: nodes cannot pull"))
    finally:
        for reader in readers.values():
            reader.close()
    return checks


def _image_check(reader: RegistryReader, image: str, path: str, digest: str, arch: str) -> Check:
    try:
        found, variant = reader.image_arch(path, digest)
    except ImageMismatch as exc:
        return Check(IMAGE, False, image, f"is not in its registry: {exc}")
    except RegistryReadError as exc:
        return Check(IMAGE, False, image, f"could not be read: {exc}")
    if found != arch:
        return Check(IMAGE, False, image, f"is an image for {found}{'/' + variant if variant else ''}, not {arch}")
    return Check(IMAGE, True, image, digest)


def verify_arch(ctx: WorkerContext, client: ExchangeClient, org: str, url: str, version: str, arch: str,
                expected_policy: Mapping[str, Any] | None = None) -> ArchReport:
    """``expected_policy``: the body the source says ({}: the source has none; None: unknown)."""
    sid = service_id(url, version, arch)
    report = ArchReport(arch, sid)
    record = client.get_service(org, sid)
    if record is None:
        report.checks.append(Check(SERVICE, False, f"{org}/{sid}", "is not in the Exchange"))
        return report
    report.checks.append(Check(SERVICE, True, f"{org}/{sid}"))
    deployment = str(record.get("deployment") or "")
    signature = str(record.get("deploymentSignature") or "")
    key, count = key_that_verifies(client, org, sid, deployment, signature)
    report.checks.append(Check(SIGNATURE, bool(key), key or f"{count} key(s)",
                               "" if key else f"verifies with none of the {count} key(s) stored with the service: "
                                              "agents decline it without reporting an error"))
    images = images_of(deployment)
    if images is None:
        report.checks.append(Check(IMAGE, False, "deployment", "is not JSON: agents cannot read it"))
    else:
        hosts = {str(d.get("registry") or "") for d in client.list_dockauths(org, sid)}
        report.checks.extend(check_images(ctx, images, arch, hosts))
    cluster_deployment = str(record.get("clusterDeployment") or "")
    if cluster_deployment:
        report.checks.extend(check_cluster(ctx, client, org, sid, arch, cluster_deployment,
                                           str(record.get("clusterDeploymentSignature") or "")))
    stored = client.get_service_policy(org, sid)
    if expected_policy:
        ok = same_policy(stored, dict(expected_policy))
        report.checks.append(Check(POLICY, ok, "service policy", "" if ok else (
            "is missing" if stored is None else "differs from the source's service policy file")))
    elif stored is not None:
        report.checks.append(Check(POLICY, True, "service policy"))
    for entry in record.get("requiredServices") or []:
        dep = dependencies.Dependency(str(entry.get("org") or org), str(entry.get("url") or ""),
                                      str(entry.get("arch") or arch),
                                      str(entry.get("versionRange") or entry.get("version") or ""))
        problem = dependencies.check_one(client, dep)
        report.checks.append(Check(DEPENDENCY, problem is None, str(dep), problem.reason if problem else ""))
    return report


def check_cluster(ctx: WorkerContext, client: ExchangeClient, org: str, sid: str, arch: str, text: str,
                  signature: str) -> list[Check]:
    """A cluster service: ``clusterDeploymentSignature`` over the exact ``clusterDeployment`` string with a stored
    key (anax ``agreementbot``/``governance`` hand both to the kube operator worker, which verifies them the way the
    device deployment is verified), and the images of its operator YAMLs like device images."""
    key, count = key_that_verifies(client, org, sid, text, signature)
    checks = [Check(SIGNATURE, bool(key), "clusterDeployment " + (key or f"{count} key(s)"),
                    "" if key else f"clusterDeploymentSignature verifies with none of the {count} key(s) stored with "
                                   "the service: agents decline it")]
    try:
        refs = cluster.images(cluster.archive_of(text))
    except DefinitionError as exc:
        return [*checks, Check(IMAGE, False, "clusterDeployment", f"cannot be unpacked: {exc}")]
    hosts = {str(d.get("registry") or "") for d in client.list_dockauths(org, sid)}
    return [*checks, *check_images(ctx, refs, arch, hosts)]


def verify_version(ctx: WorkerContext, client: ExchangeClient, org: str, url: str, version: str,
                   arches: Iterable[str], expected_policies: Mapping[str, Mapping[str, Any]] | None = None) -> Report:
    report = Report(org, url, version)
    for arch in arches:
        expected = None if expected_policies is None else expected_policies.get(arch, {})
        report.arches[arch] = verify_arch(ctx, client, org, url, version, arch, expected)
    return report


def after_publish(ctx: WorkerContext, client: ExchangeClient, release: Release) -> str:
    """publish: the same check right after the writes, as a note for the summary ("" for a dry run). A check that
    cannot run (a registry down) says so; it never fails a publish that already happened."""

    if release.dry_run or not release.arches:
        return ""
    url = str(release.result(release.arches[0]).definition.get("url") or "")
    try:
        report = verify_version(ctx, client, release.org, url, release.version, release.arches,
                                {arch: release.result(arch).service_policy for arch in release.arches})
    except Exception as exc:  # noqa: BLE001 - reported, never raised: the publish itself succeeded
        log.warning("release %s: verify after publish failed: %s", release.release_id, type(exc).__name__)
        return f":warning: The check after publish could not run ({type(exc).__name__}): run `/edge verify " \
               f"{release.service} {release.version}` later."
    return fleet_messages.verify_note(report.as_data())

