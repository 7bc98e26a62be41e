"""One place that turns client errors into what a user reads in the thread, and decides what is worth a retry.

Transient: registry or Exchange 5xx (502/504), timeouts, refused connections, Vault unavailable — retried with
exponential backoff and jitter a bounded number of times (RQ ``Retry``, run by a worker's scheduler). Permanent:
400/401/403, an invalid definition, a failed build — the release fails at once with the reason and what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from edgebot.config import RegistryConfig
from edgebot.errors import LeaseLost, ReleaseEnded, SecretUnavailable, StepFailed
from edgebot.release import Release
from edgebot.settings import Settings

if TYPE_CHECKING:
    from workers.context import WorkerContext


@contextmanager
def translated(stage: str, release: Release, registry: RegistryConfig, *, arch: str = "",
               ctx: WorkerContext | None = None) -> Iterator[None]:
    """Run a step's client calls; re-raise anything they throw as a :class:`StepFailed` a user can act on."""
    try:
        yield
    except (StepFailed, ReleaseEnded, LeaseLost):
        raise
    except SecretUnavailable as exc:
        raise StepFailed(f"{stage}: a secret could not be read: {exc}", transient=_vault_down(exc)) from None
    except Exception as exc:  # mapped by type below; anything unknown is reported without internals
        certs_dir = (ctx.config.settings if ctx is not None else Settings()).docker_certs_dir
        raise _translate(stage, release, registry, arch, exc, certs_dir) from None


def _vault_down(exc: Exception) -> bool:
    text = str(exc).lower()
    return "sealed" in text or "unreachable" in text or "unavailable" in text


def _translate(stage: str, release: Release, registry: RegistryConfig, arch: str, exc: Exception,
               certs_dir: str) -> StepFailed:
    from workers import definition, exchange, images, signing, source

    where = f"{stage} ({arch})" if arch else stage
    if isinstance(exc, definition.DefinitionError):
        return StepFailed(f"the service definition is not publishable: {exc}")
    if isinstance(exc, source.SourceError):
        return StepFailed(f"source: {exc}", transient=bool(getattr(exc, "transient", False)))
    if isinstance(exc, images.BuildFailed):
        return StepFailed(f"build of {arch} failed: {exc}", detail=list(exc.log_tail))
    if isinstance(exc, images.WrongArchitecture):
        return StepFailed(
            f"the image built for {exc.expected} is {exc.actual}: the build cache or base image is for another "
            f"platform. Use a base image for {exc.expected} in {arch}'s Dockerfile, or run the {arch} build on a "
            f"worker of that arch (`edgebot worker --arch {arch}`)."
        )
    if isinstance(exc, images.PushFailed):
        return _push_failure(registry, arch, exc, certs_dir)
    if isinstance(exc, images.ImageError):
        return StepFailed(f"{where}: {exc}")
    if isinstance(exc, exchange.ServiceExistsDifferent):
        return StepFailed(str(exc))
    if isinstance(exc, exchange.ExchangeAuthError):
        return StepFailed(
            "the Exchange refused edgebot's credentials (401): check exchange.username and the secret behind "
            "exchange.password in the config"
        )
    if isinstance(exc, exchange.ExchangeForbidden):
        return StepFailed(
            f"the Exchange answered 403 to {exc.method} {exc.path}: the configured user may not write services in "
            f"org {release.org}, or another user owns this service"
        )
    if isinstance(exc, exchange.ExchangeInvalid):
        return StepFailed(f"the Exchange refused the service definition: {exc}")
    if isinstance(exc, exchange.ExchangeError):
        return StepFailed(f"{where}: {exc}", transient=bool(exc.transient))
    if isinstance(exc, signing.SigningError):
        return StepFailed(f"signing: {exc}")
    return StepFailed(f"{where} failed unexpectedly ({type(exc).__name__}); the worker log has the details")


def _push_failure(registry: RegistryConfig, arch: str, exc: Exception, certs_dir: str) -> StepFailed:
    text = str(exc)
    lowered = text.lower()
    host = registry.host
    if "x509" in lowered or "certificate signed by unknown authority" in lowered:
        return StepFailed(
            f"push of {arch} to {host} failed: this worker's Docker Engine does not trust the registry's "
            f"certificate (x509: certificate signed by unknown authority). Install the registry's CA as "
            f"{certs_dir.rstrip('/')}/{host}/ca.crt on the build host (settings.docker_certs_dir) — every edge node "
            f"that pulls needs it too, as /etc/docker/certs.d/{host}/ca.crt."
        )
    if any(word in lowered for word in ("unauthorized", "authentication required", "denied", "401")):
        return StepFailed(
            f"push of {arch} to {host} was refused: the registry did not accept the push credentials of "
            f"`{registry.alias}` (user {registry.push_username}, password from {registry.push_password}). Check "
            "them, and that the user may push to the namespace."
        )
    return StepFailed(f"push of {arch} to {host} failed: {text}", transient=bool(getattr(exc, "transient", False)))
