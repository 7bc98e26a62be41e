"""The builder interface: build one arch's image, then push it (guarded) and return its digest.

Two builders, chosen per service by the catalog (``[services.X.build] builder``, edgebot.build_inputs):

* :class:`EngineBuilder` — the Docker Engine through docker-py (workers.images), as edgebot always built: legacy
  builder, build args, ``pull``; no build secrets and no registry cache (refused at config load).
* :class:`BuildahBuilderAdapter` — buildah (workers.buildah): BuildKit-syntax Dockerfiles (``RUN --mount=type=cache|
  secret``), build secrets from references, a registry-backed layer cache, daemonless; pushes straight to the
  registry with a 0600 authfile.

Both keep the same guarantees: the context checked by ``build_context``, the image's arch verified, a published
version's tag never moved (``push_guarded``), a credential the registry refuses read again once, and nothing secret
in a message. The pipeline's build step makes one call, :func:`for_release`, and uses what it returns.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgebot.config import RegistryConfig, ServiceConfig
from edgebot.errors import StepFailed
from workers import smoke_run
from workers.build_log import Watch
from workers.buildah import BuildahBuilder, BuildahOptions, RegistryAccess, cert_dir
from workers.images import BuildLimits, BuiltImage, build_image, credentials_refused, push_guarded, push_image
from workers.registries import before_push, certs_d_path, token_expiry_note

if TYPE_CHECKING:
    import docker

    from edgebot.settings import Settings
    from workers.context import WorkerContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildRequest:
    """One arch's build, as the pipeline asks for it; the service's build inputs are the builder's."""

    context_dir: Path
    dockerfile: str
    tag: str
    arch: str
    root: Path
    """The checkout the context, Dockerfile and .dockerignore must resolve inside."""
    version: str
    commit: str
    labels: dict[str, str] = field(default_factory=dict)
    log_lines: int = 25
    limits: BuildLimits = BuildLimits()
    watch: Watch | None = None
    """Sees every output line: "step N/M" progress and the whole log (workers.build_log)."""


class Builder(Protocol):
    name: str

    def build(self, request: BuildRequest) -> BuiltImage:
        """Build the image (raises BuildFailed / WrongArchitecture)."""

    def smoke(self, image: str, arch: str) -> dict[str, Any]:
        """The service's smoke run in the built image, for its platform, before the push: {} when none is configured,
        the passed result for the build report, or StepFailed (workers.smoke_run)."""

    def before_push(self) -> list[str]:
        """Checks before pushing (raises StepFailed); returns notes for the thread."""

    def push(self, repository: str, tag: str, *, published_digest: str, overwrite: bool, release_id: str) -> str:
        """Push the built ``repository:tag`` under the republish guard; returns the digest (raises PushFailed,
        RepublishRefused)."""

    def close(self) -> None:
        """Release what the builder holds (a Docker client)."""


def for_release(ctx: WorkerContext, service: ServiceConfig, registry: RegistryConfig) -> Builder:
    """The builder the catalog chose for ``service``, set up to push to ``registry``."""
    if service.build.builder == "buildah":
        return BuildahBuilderAdapter(ctx, service, registry)
    return EngineBuilder(ctx, service, registry)


class EngineBuilder:
    """The Docker Engine (docker-py), today's path unchanged: workers.images.build_image / push_image."""

    name = "engine"

    def __init__(self, ctx: WorkerContext, service: ServiceConfig, registry: RegistryConfig,
                 client: docker.DockerClient | None = None) -> None:
        self.ctx, self.service, self.registry = ctx, service, registry
        self.client = client or ctx.docker()

    def build(self, request: BuildRequest) -> BuiltImage:
        inputs = self.service.build
        assert not inputs.secrets, "build secrets on the Engine builder are refused at config load"
        return build_image(self.client, context_dir=request.context_dir, dockerfile=request.dockerfile,
                           tag=request.tag, arch=request.arch, labels=request.labels, log_lines=request.log_lines,
                           root=request.root, limits=request.limits, pull=inputs.pull,
                           on_line=request.watch.line if request.watch is not None else None,
                           build_args=inputs.build_args(version=request.version, arch=request.arch,
                                                        commit=request.commit))

    def smoke(self, image: str, arch: str) -> dict[str, Any]:
        return smoke_run.check(self.client, image, arch, self.service.smoke, self.ctx.config.settings,
                               service=self.service.name)

    def before_push(self) -> list[str]:
        return before_push(self.ctx, self.registry)  # OpenShift: the route's CA trusted by the Engine, token expiry

    def push(self, repository: str, tag: str, *, published_digest: str, overwrite: bool, release_id: str) -> str:
        return push_guarded(self.client, repository=repository, tag=tag, published_digest=published_digest,
                            overwrite=overwrite, release_id=release_id,
                            push=lambda t: push_with_fresh_credentials(self.ctx, self.client, self.registry,
                                                                       repository, t))

    def close(self) -> None:
        self.client.close()


def push_with_fresh_credentials(ctx: WorkerContext, client: docker.DockerClient, registry: RegistryConfig,
                                repository: str, tag: str) -> str:
    """Push with the registry's push credential; when the registry refuses it (rotated since it was read), read it
    again from its reference and push once more."""
    def push() -> str:
        username, password = ctx.push_credentials(registry)
        ctx.check_lease(f"the push to {repository}")  # a step that lost its lease pushes nothing
        return push_image(client, repository=repository, tag=tag, username=username, password=password.reveal(),
                          settings=ctx.config.settings)  # skopeo (parallel gzip) or the Engine: settings.push_tool

    return ctx.with_fresh_credentials(push, [registry.push_password], refused=credentials_refused,
                                      what=f"registry {registry.host}")


def buildah_options(settings: Settings) -> BuildahOptions:
    storage = Path(settings.buildah_dir or Path(settings.work_dir) / "buildah")
    return BuildahOptions(storage=storage, storage_driver=settings.buildah_storage_driver,
                          isolation=settings.buildah_isolation, timeout=settings.buildah_timeout)


class BuildahBuilderAdapter:
    """buildah (workers.buildah) with the service's build inputs, the registry's credential and CA."""

    name = "buildah"

    def __init__(self, ctx: WorkerContext, service: ServiceConfig, registry: RegistryConfig) -> None:
        self.ctx, self.service, self.registry = ctx, service, registry
        self._certs: Path | None = None
        self._buildah: BuildahBuilder | None = None

    @property
    def buildah(self) -> BuildahBuilder:
        """Set up on first use, inside the step's error translation (the CA reference is read here)."""
        if self._buildah is None:
            settings = self.ctx.config.settings
            ca_ref = self.registry.ca_cert
            ca_pem = self.ctx.resolver.resolve(ca_ref).reveal() if ca_ref is not None else None
            try:
                engine_certs: Path | None = certs_d_path(Path(settings.docker_certs_dir), self.registry.host).parent
            except ValueError:
                engine_certs = None
            self._certs = Path(tempfile.mkdtemp(prefix="edgebot-certs-"))
            access = RegistryAccess(host=self.registry.host, credentials=self._credentials,
                                    cert_dir=cert_dir(self._certs, ca_pem=ca_pem, certs_d=engine_certs))
            self._buildah = BuildahBuilder(buildah_options(settings), access)
        return self._buildah

    def _credentials(self) -> tuple[str, str]:
        username, password = self.ctx.push_credentials(self.registry)
        return username, password.reveal()

    def build(self, request: BuildRequest) -> BuiltImage:
        inputs = self.service.build
        secrets = {sid: self.ctx.resolver.resolve(ref).reveal() for sid, ref in inputs.secrets}
        if request.watch is not None:
            request.watch.hide(secrets.values())  # buildah scrubs them too; the log file is scrubbed again
        repository = request.tag.rpartition(":")[0]
        return self.buildah.build(
            context_dir=request.context_dir, dockerfile=request.dockerfile, tag=request.tag, arch=request.arch,
            root=request.root, labels=request.labels, log_lines=request.log_lines, limits=request.limits,
            build_args=inputs.build_args(version=request.version, arch=request.arch, commit=request.commit),
            secrets=secrets, pull=inputs.pull, cache=inputs.cache_repository(repository),
            on_line=request.watch.line if request.watch is not None else None)

    def before_push(self) -> list[str]:
        """buildah trusts the registry's CA through ``--cert-dir``: only the token's expiry is worth a note."""
        if self.registry.kind != "ocp":
            return []
        _, token = self.ctx.push_credentials(self.registry)
        settings = self.ctx.config.settings
        note = token_expiry_note(self.registry, self.registry.push_username, token, self.registry.push_password,
                                 role="push", window=settings.token_expiry_warning)
        return [note] if note else []

    def push(self, repository: str, tag: str, *, published_digest: str, overwrite: bool, release_id: str) -> str:
        source = f"{repository}:{tag}"

        def push(t: str) -> str:
            def once() -> str:
                self.ctx.check_lease(f"the push to {repository}")  # a step that lost its lease pushes nothing
                return self.buildah.push(source, f"{repository}:{t}")

            return self.ctx.with_fresh_credentials(once, [self.registry.push_password], refused=credentials_refused,
                                                   what=f"registry {self.registry.host}")

        # buildah pushes the local image to any tag: the release-scoped tag needs no local tag
        return push_guarded(None, repository=repository, tag=tag, published_digest=published_digest,
                            overwrite=overwrite, release_id=release_id, push=push, retag=lambda scoped: None)

    def smoke(self, image: str, arch: str) -> dict[str, Any]:
        if self.service.smoke is not None:  # refused at config load; kept so no configuration ships unchecked
            raise StepFailed(f"{self.service.name}: a smoke run needs builder = \"engine\" (the image must be in "
                             "the Docker Engine to run); remove [services.X.smoke] or build with the Engine")
        return {}

    def close(self) -> None:
        if self._certs is not None:
            shutil.rmtree(self._certs, ignore_errors=True)
