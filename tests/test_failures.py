"""What users read when a step fails: client errors mapped once, to advice, with transient vs permanent decided.

The x509 message itself is produced for real by tests/test_real_parts.py (a registry in a network namespace);
here its translation into advice is checked, with the same text Docker prints."""

from __future__ import annotations

import pytest

from edgebot.config import RegistryConfig
from edgebot.errors import StepFailed
from edgebot.jobs import retry_policy
from edgebot.release import Release
from edgebot.secrets import SecretRef
from edgebot.settings import Settings
from workers import exchange, images
from workers.definition import DefinitionError
from workers.failures import translated

ADDRESS = "default-route-openshift-image-registry.apps.ocp.example.com"
X509 = (f'Get "https://{ADDRESS}/v2/": x509: certificate signed by unknown authority')


def _registry() -> RegistryConfig:
    return RegistryConfig(alias="ocp", kind="ocp", host=ADDRESS, namespace="edge", push_username="edgebot-pusher",
                          push_password=SecretRef("env", "OCP_PUSH_TOKEN"))


def _release() -> Release:
    return Release(release_id="r-000001", team_id="T", channel_id="C", user_id="U", service="hello",
                   version="1.0.0", org="acme", registry="ocp", arches=["amd64"])


def _fail(exc: Exception, stage: str = "push") -> StepFailed:
    with pytest.raises(StepFailed) as info, translated(stage, _release(), _registry(), arch="amd64"):
        raise exc
    return info.value


def test_untrusted_registry_ca_becomes_install_advice() -> None:
    failure = _fail(images.PushFailed(X509))
    assert f"/etc/docker/certs.d/{ADDRESS}/ca.crt" in str(failure) and "every edge node" in str(failure)
    assert not failure.transient


def test_refused_push_credentials_name_the_reference_not_the_secret() -> None:
    failure = _fail(images.PushFailed("unauthorized: authentication required"))
    assert "edgebot-pusher" in str(failure) and "env:OCP_PUSH_TOKEN" in str(failure)
    assert not failure.transient


def test_registry_5xx_is_transient() -> None:
    assert _fail(images.PushFailed("received unexpected HTTP status: 502 Bad Gateway", transient=True)).transient


def test_exchange_errors_by_status() -> None:
    assert _fail(exchange.ExchangeUnavailable("the Exchange answered 502", status=502), "publish").transient
    auth = _fail(exchange.ExchangeAuthError("401", status=401), "publish")
    assert "exchange.username" in str(auth) and not auth.transient
    invalid = _fail(exchange.ExchangeInvalid("version '1.2.3-rc' is not valid", status=400), "publish")
    assert "version '1.2.3-rc' is not valid" in str(invalid) and not invalid.transient


def test_definition_errors_are_permanent_and_explained() -> None:
    failure = _fail(DefinitionError("arch is arm64 but the command builds amd64"), "source")
    assert "not publishable" in str(failure) and not failure.transient


def test_unknown_errors_show_no_internals() -> None:
    failure = _fail(RuntimeError("secret-looking internal detail"), "sign")
    assert "secret-looking" not in str(failure) and "worker log" in str(failure)


def test_retry_policy_is_exponential_with_jitter_and_bounded() -> None:
    policy = retry_policy(Settings(step_retries=4, retry_backoff=2.0))
    assert policy is not None and policy.max == 4
    intervals = list(policy.intervals)
    assert len(intervals) == 4
    for n, interval in enumerate(intervals):
        assert 0.75 * 2.0 * 2**n - 1 <= interval <= 1.25 * 2.0 * 2**n + 1
    assert retry_policy(Settings(step_retries=0)) is None
