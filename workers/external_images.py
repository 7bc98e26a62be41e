"""Images a service uses but edgebot does not build (sidecars, third-party images in ``deployment.services``).

``hzn exchange service publish`` replaces the tag of every image of a deployment by its sha256 digest (read through the
local Docker Engine, which pulls the image with ``-P``), unless ``-I`` / ``--dont-change-image-tag`` says to keep tags
(anax ``cli/cliutils``, the ``exServicePublishCmd`` flags of ``cli/hzn.go``). edgebot does the same in ``prepare``, on
the publish worker, before anything is built, without an Engine:

* each image referenced by tag is resolved with the registry's own API (``workers.registry_api.RegistryReader``), with
  the pull credential and CA of the ``[registries]`` entry whose ``host`` is the image's (anonymously where there is
  none), to the digest of the image for the arch being published: the tag's own manifest, or the ``linux/<arch>``
  entry of a multi-arch index, read back and checked to be an image of that arch;
* the catalog's ``pin = false`` keeps the tags, as ``hzn … -I`` does (the tag can then move under the nodes; ``/edge
  verify`` says so);
* the pins are recorded per arch and sealed with the source (``edgebot.seals.source_payload``), shown on the approval
  card, and the sign step pins them into the signed deployment beside the built image;
* every registry an image of the deployment comes from gets its dockauth when edgebot's config has a pull credential
  for it (anax ``container/imagepull.go`` uses a dockauth only for an exact ``host[:port]`` match).

Docker Hub: references without a host are Docker Hub's; its API is ``registry-1.docker.io`` and official images live
under ``library/`` (as the Engine reads them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from edgebot.config import RegistryConfig
from edgebot.errors import StepFailed
from workers.definition import ImageRef, ServiceDefinition, parse_image_ref
from workers.registry_api import ImageMismatch, RegistryReader, RegistryReadError

if TYPE_CHECKING:
    from workers.context import WorkerContext

DOCKER_HUB = "docker.io"


def registry_for(registries: Iterable[RegistryConfig], host: str) -> RegistryConfig | None:
    """The configured registry whose ``host`` is exactly ``host`` (the way anax matches dockauths)."""
    return next((r for r in registries if r.host == host), None)


def api_location(ref: ImageRef) -> tuple[str, str, str]:
    """(registry host as nodes name it, host the registry API answers on, repository path there)."""
    host = ref.host or DOCKER_HUB
    if host == DOCKER_HUB:
        return host, "registry-1.docker.io", ref.path if "/" in ref.path else f"library/{ref.path}"
    return host, host, ref.path


def reader_for(ctx: WorkerContext, api_host: str, registry: RegistryConfig | None) -> RegistryReader:
    """A registry API client with the pull credential and CA of ``registry`` (anonymous, system CAs without one)."""
    creds = ctx.node_credentials(registry) if registry is not None else None
    ca = (ctx.resolver.resolve(registry.ca_cert).reveal()
          if registry is not None and registry.ca_cert is not None else None)
    return RegistryReader(api_host, username=creds[0] if creds else "", password=creds[1].reveal() if creds else "",
                          ca_pem=ca, timeout=ctx.config.settings.registry_timeout)


def pin(ctx: WorkerContext, definitions: Mapping[str, ServiceDefinition], *, service: str,
        pin_tags: bool = True) -> dict[str, dict[str, str]]:
    """arch -> container -> ``host/path@sha256:…`` for every image referenced by tag (empty with ``pin_tags``
    False). StepFailed, with what to do, when a tag is missing, has no image for the arch, or cannot be read."""
    pins: dict[str, dict[str, str]] = {arch: {} for arch in definitions}
    if not pin_tags:
        return pins
    readers: dict[str, RegistryReader] = {}
    try:
        for arch, definition in definitions.items():
            for container, image in sorted(definition.external.items()):
                ref = parse_image_ref(image)
                host, api_host, path = api_location(ref)
                registry = registry_for(ctx.config.registries.values(), host)
                reader = readers.get(api_host) or readers.setdefault(api_host, reader_for(ctx, api_host, registry))
                tag = ref.tag or "latest"
                try:
                    digest = reader.platform_digest(path, tag, arch)
                except ImageMismatch as exc:
                    reason = (f"the tag `{tag}` does not exist there" if "has nothing at" in str(exc) else str(exc))
                    raise StepFailed(f"container `{container}` of {service} ({arch}) uses `{image}`, which cannot "
                                     f"be pinned: {reason}. Push the image (for {arch}) or fix the tag in the "
                                     "definition; `pin = false` in the catalog keeps tags, as `hzn … -I` does") \
                        from None
                except RegistryReadError as exc:
                    hint = ("" if registry is not None else f" (no [registries] entry has host `{host}`: add one with "
                            "pull_username/pull_password if the registry is private)")
                    raise StepFailed(f"container `{container}` of {service} ({arch}): `{image}` could not be "
                                     f"resolved to a digest: {exc}{hint}", transient="refused" not in str(exc)) \
                        from None
                repository = f"{ref.host}/{ref.path}" if ref.host else ref.path
                pins[arch][container] = f"{repository}@{digest}"
    finally:
        for reader in readers.values():
            reader.close()
    return pins


def image_hosts(images: Iterable[str]) -> list[str]:
    """The registry hosts (as nodes name them) of ``images``, each once, in order."""
    hosts: list[str] = []
    for image in images:
        host = api_location(parse_image_ref(image))[0]
        if host not in hosts:
            hosts.append(host)
    return hosts


def node_dockauths(ctx: WorkerContext, definitions: Iterable[ServiceDefinition],
                   release_registry: RegistryConfig) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(the dockauths — registry, username, token — for the other registries the deployment's images come from,
    the thread notes for hosts nodes pull from anonymously). Tokens are for the Exchange call only."""
    others, anonymous = dockauth_registries(ctx, definitions, release_registry)
    found: list[tuple[str, str, str]] = []
    notes: list[str] = []
    for registry in others:
        creds = ctx.node_credentials(registry)
        if creds is None:
            anonymous.append(registry.host)
        else:
            found.append((registry.host, creds[0], creds[1].reveal()))
    if anonymous:
        notes.append("Nodes pull the images from " + ", ".join(f"`{h}`" for h in anonymous) + " anonymously: edgebot "
                     "has no pull credential for them (add a `[registries]` entry with that `host` and "
                     "pull_username/pull_password if one is private).")
    return found, notes


def dockauth_registries(ctx: WorkerContext, definitions: Iterable[ServiceDefinition],
                        release_registry: RegistryConfig) -> tuple[list[RegistryConfig], list[str]]:
    """(configured registries other than the release's that images of the deployment come from, hosts with no
    ``[registries]`` entry: nodes pull those anonymously)."""
    images = [str(spec.get("image") or "") for d in definitions
              for spec in (d.deployment.get("services") or {}).values() if isinstance(spec, dict)]
    found: list[RegistryConfig] = []
    anonymous: list[str] = []
    for host in image_hosts(i for i in images if i):
        if host == release_registry.host:
            continue
        registry = registry_for(ctx.config.registries.values(), host)
        if registry is None:
            anonymous.append(host)
        elif registry not in found:
            found.append(registry)
    return found, anonymous
