"""What a registry of a given kind needs before a push: the OpenShift route's CA trusted by the Docker Engine, and a
word in the thread when a service-account token is about to expire.

OpenShift (``kind = "ocp"``): the image registry's route is signed by the cluster's CA, so the Docker Engine that
pushes must trust it through ``certs.d/<host[:port]>/ca.crt`` (the IEAM private-registry guide's step). Before the
push, :func:`ensure_docker_trusts` checks that file for the worker's *local* Docker Engine (a ``unix://`` socket):
already there → nothing to do; missing and allowed (``settings.install_registry_ca``, writable) → installs it;
otherwise the step fails with the exact file to create and where. A remote Engine (``tcp://``) cannot be checked
from here: the push then fails with x509, which the pipeline turns into the same advice.

Service-account tokens from ``oc create token`` are JWTs with an ``exp`` claim. It is read without verifying the
signature (only the cluster can verify it, and the date is all that is needed); a token that expires within
``settings.token_expiry_warning`` seconds gets a note in the thread, for the push token (the build worker) and the
pull token nodes get as their dockauth (the publish worker). Notes name the reference, never the token.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from edgebot.config import RegistryConfig
from edgebot.errors import StepFailed
from edgebot.fleet_messages import remaining
from edgebot.secrets import Secret, SecretRef

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger(__name__)


def before_push(ctx: WorkerContext, registry: RegistryConfig, *, now: float | None = None) -> list[str]:
    """Checks before pushing to ``registry`` (raises :class:`StepFailed`); returns notes for the thread."""
    if registry.kind != "ocp":
        return []
    settings = ctx.config.settings
    if registry.ca_cert is not None:
        ca_pem = ctx.resolver.resolve(registry.ca_cert).reveal()
        ensure_docker_trusts(registry, ca_pem, docker_url=ctx.config.docker_url,
                             certs_dir=Path(settings.docker_certs_dir), install=settings.install_registry_ca)
    _, token = ctx.push_credentials(registry)
    note = token_expiry_note(registry, registry.push_username, token, registry.push_password, role="push",
                             window=settings.token_expiry_warning, now=now)
    return [note] if note else []


def node_token_notes(registry: RegistryConfig, credentials: tuple[str, Secret] | None, *, window: float,
                     now: float | None = None) -> list[str]:
    """The note for the pull token nodes get as their dockauth (OpenShift only), if it expires soon."""
    if registry.kind != "ocp" or credentials is None:
        return []
    ref = registry.node_credentials()
    assert ref is not None
    note = token_expiry_note(registry, credentials[0], credentials[1], ref[1], role="pull", window=window, now=now)
    return [note] if note else []


# -- the route's CA --------------------------------------------------------------------------------------------------

def certs_d_path(certs_dir: Path, host: str) -> Path:
    """``<certs_dir>/<host[:port]>/ca.crt``: where the Docker Engine looks for a registry's CA."""
    if not host or "/" in host or host.startswith("."):
        raise ValueError(f"not a registry host[:port]: {host!r}")
    return certs_dir / host / "ca.crt"


def ensure_docker_trusts(registry: RegistryConfig, ca_pem: str, *, docker_url: str | None, certs_dir: Path,
                         install: bool) -> str:
    """Make sure the local Docker Engine trusts ``ca_pem`` for ``registry.host``; returns what was found or done.

    Raises :class:`StepFailed` saying exactly which file to install where when it cannot."""
    wanted = _fingerprints(ca_pem)
    if not wanted:
        raise StepFailed(f"registries.{registry.alias}.ca_cert ({registry.ca_cert}) holds no PEM certificate: give "
                         "the CA that signed the route's certificate (-----BEGIN CERTIFICATE-----)")
    target = certs_d_path(certs_dir, registry.host)
    if docker_url and not docker_url.startswith("unix://"):
        log.info("Docker Engine at %s is remote: cannot check its %s; a push it refuses with x509 says so",
                 docker_url, target)
        return f"remote Docker Engine: {target} not checked"
    install_hint = (f"install the CA from {registry.ca_cert} as {target} on the build host (as root: "
                    f"`install -D -m 0644 <the CA file> {target}`), and the same file on every edge node that pulls "
                    f"from {registry.host}")
    try:
        present = target.read_text()
    except FileNotFoundError:
        present = None
    except OSError as exc:
        raise StepFailed(f"cannot read {target} ({exc.strerror}): {install_hint}") from None
    if present is not None:
        if wanted <= _fingerprints(present):
            return f"{target} trusts the route's CA"
        raise StepFailed(f"the Docker Engine of this worker trusts another CA for {registry.host}: {target} does not "
                         f"hold the CA from {registry.ca_cert}. Add that CA to {target} (keep the others it needs) "
                         f"on the build host and on every edge node that pulls from {registry.host}")
    if not install:
        raise StepFailed(f"the Docker Engine of this worker does not trust {registry.host}'s CA: {install_hint} "
                         "(settings.install_registry_ca is off, so edgebot does not install it itself)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(".ca.crt.edgebot-tmp")
        temporary.write_text(ca_pem if ca_pem.endswith("\n") else ca_pem + "\n")
        temporary.chmod(0o644)
        temporary.replace(target)
    except OSError as exc:
        raise StepFailed(f"the Docker Engine of this worker does not trust {registry.host}'s CA and edgebot cannot "
                         f"install it ({exc.strerror}): {install_hint}") from None
    log.info("installed the CA of registry %s (%s) as %s", registry.alias, registry.ca_cert, target)
    return f"installed {target}"


def _fingerprints(pem: str) -> set[bytes]:
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        return set()
    return {c.fingerprint(hashes.SHA256()) for c in certificates}


# -- service-account tokens ------------------------------------------------------------------------------------------

def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (seconds since the epoch) of a JWT, read without verifying it; None if there is none."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def token_expiry_note(registry: RegistryConfig, username: str, token: Secret, ref: SecretRef, *, role: str,
                      window: float, now: float | None = None) -> str | None:
    """A thread note when the service-account token expires within ``window`` seconds (or has expired)."""
    expiry = jwt_expiry(token.reveal())
    if expiry is None or window <= 0:
        return None
    now = time.time() if now is None else now
    left = expiry - now
    if left > window:
        return None
    when = dt.datetime.fromtimestamp(expiry, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    state = "expired" if left <= 0 else f"expires in {remaining(left)}"
    who = "nodes pull with it (the dockauth)" if role == "pull" else "the build workers push with it"
    return (f":warning: the OpenShift service-account token of `{registry.alias}` ({username}, from {ref}) {state} "
            f"({when}); {who}. Create a new one (`oc create token {username} -n {registry.namespace} "
            f"--duration=8760h`) and store it where {ref} points.")
