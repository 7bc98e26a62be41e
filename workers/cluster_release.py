"""The pipeline's side of cluster services (``clusterDeployment``): what prepare reads and pins, what sign signs,
what trust rebuilds and what verify checks. The archive format and the signed object are in ``workers/cluster.py``.

* prepare reads the operator archive from the repository at the release commit (a regular file, at most
  ``cluster_archive_max_bytes``), checks it, and pins every ``image:`` by tag that is not the release's own image the
  way third-party device images are pinned (``workers.external_images``; ``pin = false`` keeps tags). The archive (as
  base64) and the pins are recorded per arch and sealed with the source (``edgebot.seals.source_payload``).
* sign rewrites the release's own image tags to the pushed digests, rebuilds the archive deterministically and signs
  the ``clusterDeployment`` string with the deployment's key and routine (anax ``kube_deployment.go`` ``Sign()``).
* trust rebuilds that string from the sealed inputs and compares it with the recorded one before signing and
  publishing (``expected_cluster_deployment``).
"""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebot.config import ServiceConfig
from edgebot.errors import StepFailed
from edgebot.release import Release
from workers import cluster, external_images
from workers.definition import ServiceDefinition
from workers.source import GitAuth, read_blob_at

if TYPE_CHECKING:
    from workers.context import WorkerContext


def prepare(ctx: WorkerContext, release: Release, *, service: ServiceConfig, sha: str, image_base: str,
            definitions: dict[str, ServiceDefinition], auth: GitAuth | None) -> dict[str, tuple[str, dict[str, str]]]:
    """arch -> (the archive as base64, image tag -> pinned reference) for a definition with a clusterDeployment;
    {} for a device-only service. DefinitionError/SourceError/StepFailed say what to fix."""
    if not any(d.cluster_archive for d in definitions.values()):
        return {}
    settings = ctx.config.settings
    cap = settings.cluster_archive_max_bytes
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for arch, definition in definitions.items():
        own = {arch: f"{image_base}_{arch}:{release.version}"}
        path = definition.cluster_archive
        data = read_blob_at(service.source, sha, path, Path(settings.source_cache_dir), cap, auth=auth,
                            setting="cluster_archive_max_bytes")
        if data is None:
            raise StepFailed(f"{path} (clusterDeployment.operatorYamlArchive) is missing at commit {sha[:12]} of "
                             f"{service.name}'s source: commit the operator YAML archive")
        members = cluster.read_archive(data, path, max_bytes=cap)
        external = cluster.classify(cluster.images(members), own_tags=own, image_base=image_base, name=path)
        names = {f"image {ref} in {path}": ref for ref in external}
        pins = external_images.pin(ctx, {arch: replace(definition, external=names)}, service=release.service,
                                   pin_tags=service.pin).get(arch, {})
        out[arch] = (base64.b64encode(data).decode("ascii"), {names[name]: ref for name, ref in pins.items()})
    return out


def image_pins(release: Release, arch: str) -> dict[str, str]:
    """Every tag the operator YAMLs of ``arch`` may name -> its pinned reference: the third-party pins, and the
    arch's release image tag -> its pushed digest."""
    res = release.result(arch)
    return {**res.cluster_pins, **({res.image_tag: res.pinned_image} if res.pinned_image else {})}


def expected_cluster_deployment(release: Release, arch: str) -> str:
    """The ``clusterDeployment`` string for ``arch``, rebuilt from the sealed archive and pins and the pushed digests
    ("" for a device-only service)."""
    res = release.result(arch)
    if not res.cluster_archive:
        return ""
    spec: Any = res.definition.get("clusterDeployment")
    if not isinstance(spec, dict):
        raise StepFailed(f"the definition of {arch} lost its clusterDeployment: publish again")
    text, _ = cluster.cluster_deployment_string(spec, res.cluster_archive, image_pins(release, arch))
    return text
