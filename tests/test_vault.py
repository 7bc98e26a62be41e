"""``vault:<path>#<key>`` references against a real OpenBao (``bao server -dev``): login (token, AppRole, Kubernetes),
policies, cache and invalidation, token renewal and re-login, namespaces, TLS, and the words of every failure.

Time is an injected fake clock: cache expiry and token renewal are crossed by moving it, never by sleeping. The
Vault-side TTLs are real (30 s tokens), which is why each test reads what it needs within a second or two.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edgebot.config import parse_config
from edgebot.errors import ConfigError, SecretUnavailable
from edgebot.secrets import SecretRef, SecretResolver
from sandbox.bao import BaoServer, TokenReviewStandIn
from workers.vault import VaultReader, VaultSettings, build_resolver, parse_vault_settings

TOKEN_RE = re.compile(r"\b[sbr]\.[A-Za-z0-9]{16,}")  # OpenBao service / batch / recovery token shapes


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    with BaoServer(tmp_path_factory.mktemp("bao")) as server:
        yield server


@pytest.fixture
def disposable_bao(tmp_path: Path) -> Iterator[BaoServer]:
    """A server of its own, for tests that seal or stop it."""
    with BaoServer(tmp_path / "bao") as server:
        yield server


def token_reader(bao: BaoServer, token: str, clock: FakeClock | None = None, **settings: Any) -> VaultReader:
    values: dict[str, Any] = {"url": bao.url, "auth": "token", "token": SecretRef("env", "VAULT_TOKEN")}
    values.update(settings)
    return VaultReader(VaultSettings(**values), environ={"VAULT_TOKEN": token},
                       clock=clock or FakeClock())


def unavailable(reader: VaultReader, path: str, key: str) -> str:
    with pytest.raises(SecretUnavailable) as info:
        reader(path, key)
    return str(info.value)


def assert_no_credentials(message: str, *secrets: str) -> None:
    assert TOKEN_RE.search(message) is None, message
    for secret in secrets:
        assert secret not in message


def _instant(text: str) -> datetime:
    """Vault's RFC 3339 times have up to nanoseconds (Go trims trailing zeros); microseconds are enough here."""
    match = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?Z", text)
    assert match, text
    base = datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC)
    micros = int((match.group(2) or "0")[:6].ljust(6, "0"))
    return base.replace(microsecond=micros)


# -- reading ---------------------------------------------------------------------------------------------------------


def test_token_auth_reads_both_path_spellings(bao: BaoServer) -> None:
    bao.put_secret("edgebot/spelling", {"password": "exch-pass-1", "username": "acme/edgebot"})
    bao.write_policy("spelling", bao.read_only_policy(["secret/data/edgebot/spelling"]))
    token = bao.create_token(["spelling"])
    reader = token_reader(bao, token)

    assert reader("secret/data/edgebot/spelling", "password") == "exch-pass-1"
    assert reader("edgebot/spelling", "username") == "acme/edgebot"
    assert reader("/secret/data/edgebot/spelling/", "password") == "exch-pass-1"
    assert token not in repr(reader)


def test_approle_policy_allows_one_path_only(bao: BaoServer) -> None:
    bao.put_secret("edgebot/publisher", {"password": "allowed-value"})
    bao.put_secret("edgebot/signing-only", {"private_key": "forbidden-value"})
    bao.write_policy("publisher", bao.read_only_policy(["secret/data/edgebot/publisher"]))
    role_id, secret_id = bao.approle("publisher", ["publisher"])
    settings = parse_vault_settings({"url": bao.url, "auth": "approle", "role_id": "env:ROLE_ID",
                                     "secret_id": "env:SECRET_ID"})
    reader = VaultReader(settings, environ={"ROLE_ID": role_id, "SECRET_ID": secret_id}, clock=FakeClock())

    assert reader("secret/data/edgebot/publisher", "password") == "allowed-value"
    message = unavailable(reader, "secret/data/edgebot/signing-only", "private_key")
    assert message.startswith("vault:secret/data/edgebot/signing-only#private_key: ")
    assert "may not read secret/data/edgebot/signing-only" in message
    assert not re.search(r"sealed|unreachable|unavailable", message)  # a policy problem: retrying will not help
    assert_no_credentials(message, role_id, secret_id, "forbidden-value", bao.root_token)


def test_approle_bad_credentials_are_named_not_shown(bao: BaoServer) -> None:
    role_id, _ = bao.approle("publisher-bad", ["default"])
    wrong = "0b5e1c4e-aaaa-bbbb-cccc-000000000000"
    settings = parse_vault_settings({"url": bao.url, "auth": "approle", "role_id": "env:ROLE_ID",
                                     "secret_id": "file:/run/secrets/secret-id"})
    reader = VaultReader(settings, environ={"ROLE_ID": role_id}, clock=FakeClock())
    message = unavailable(reader, "edgebot/publisher", "password")
    assert "file:/run/secrets/secret-id" in message and "cannot read the file" in message

    missing = VaultReader(settings, environ={}, clock=FakeClock())
    assert "environment variable ROLE_ID is not set" in unavailable(missing, "edgebot/publisher", "password")

    settings = parse_vault_settings({"url": bao.url, "auth": "approle", "role_id": "env:ROLE_ID",
                                     "secret_id": "env:SECRET_ID"})
    reader = VaultReader(settings, environ={"ROLE_ID": role_id, "SECRET_ID": wrong}, clock=FakeClock())
    message = unavailable(reader, "edgebot/publisher", "password")
    assert "rejected the AppRole login" in message and "env:SECRET_ID" in message
    assert_no_credentials(message, wrong, role_id)


def test_revoked_or_wrong_token(bao: BaoServer) -> None:
    reader = token_reader(bao, "s.notarealtokenatall0000000")
    message = unavailable(reader, "edgebot/spelling", "password")
    assert "rejected the token from env:VAULT_TOKEN" in message
    assert_no_credentials(message, "notarealtokenatall")

    no_env = VaultReader(VaultSettings(url=bao.url, token=SecretRef("env", "VAULT_TOKEN")), environ={})
    assert "environment variable VAULT_TOKEN is not set" in unavailable(no_env, "edgebot/spelling", "password")


def test_missing_path_key_and_odd_values(bao: BaoServer) -> None:
    bao.put_secret("edgebot/keys", {"password": "p", "username": "u"})
    bao.client().secrets.kv.v2.create_or_update_secret(path="edgebot/odd", secret={"number": 5, "blank": ""})
    reader = token_reader(bao, bao.root_token, cache_ttl=0)

    message = unavailable(reader, "secret/data/edgebot/keys", "token")
    assert message == ("vault:secret/data/edgebot/keys#token: no key 'token' at secret/data/edgebot/keys "
                       "(keys there: password, username)")
    message = unavailable(reader, "edgebot/absent", "password")
    assert message.startswith("vault:edgebot/absent#password: no secret at secret/data/edgebot/absent")
    assert "not a string" in unavailable(reader, "edgebot/odd", "number")
    assert "is empty" in unavailable(reader, "edgebot/odd", "blank")
    assert "not a KV v2 secret path" in unavailable(reader, "secret/data/../sys/seal", "x")

    bao.delete_secret("edgebot/keys")  # KV v2 soft delete: the latest version is gone
    assert "no secret at secret/data/edgebot/keys" in unavailable(reader, "edgebot/keys", "password")
    assert_no_credentials(message, bao.root_token)


# -- cache -----------------------------------------------------------------------------------------------------------


def test_cache_until_invalidate_or_ttl(bao: BaoServer) -> None:
    clock = FakeClock()
    bao.put_secret("edgebot/rotating", {"password": "v1"})
    reader = token_reader(bao, bao.root_token, clock, cache_ttl=60)
    assert reader("edgebot/rotating", "password") == "v1"

    bao.put_secret("edgebot/rotating", {"password": "v2"})
    assert reader("secret/data/edgebot/rotating", "password") == "v1"  # cached, whichever spelling
    reader.invalidate("secret/data/edgebot/rotating")
    assert reader("edgebot/rotating", "password") == "v2"

    bao.put_secret("edgebot/rotating", {"password": "v3"})
    clock.advance(59)
    assert reader("edgebot/rotating", "password") == "v2"
    clock.advance(2)
    assert reader("edgebot/rotating", "password") == "v3"

    bao.put_secret("edgebot/rotating", {"password": "v4"})
    reader.invalidate()
    assert reader("edgebot/rotating", "password") == "v4"


# -- token lifetime --------------------------------------------------------------------------------------------------


def test_token_renewed_when_a_third_of_its_ttl_is_left(bao: BaoServer) -> None:
    clock = FakeClock()
    bao.put_secret("edgebot/renew", {"password": "r"})
    token = bao.create_token(["default", "renew"], ttl="30s")
    bao.write_policy("renew", bao.read_only_policy(["secret/data/edgebot/renew"]))
    reader = token_reader(bao, token, clock, cache_ttl=0)

    assert reader("edgebot/renew", "password") == "r"
    before = bao.lookup_token(token)
    clock.advance(15)  # 15 of 30 s left: no renewal yet
    assert reader("edgebot/renew", "password") == "r"
    assert not bao.lookup_token(token).get("last_renewal_time")

    clock.advance(7)  # 8 of 30 s left, under a third
    assert reader("edgebot/renew", "password") == "r"
    after = bao.lookup_token(token)
    assert after.get("last_renewal_time")
    assert _instant(after["expire_time"]) > _instant(before["expire_time"])


def test_renewal_also_on_a_cache_hit(bao: BaoServer) -> None:
    clock = FakeClock()
    bao.put_secret("edgebot/renew-cached", {"password": "c"})
    bao.write_policy("renew-cached", bao.read_only_policy(["secret/data/edgebot/renew-cached"]))
    token = bao.create_token(["default", "renew-cached"], ttl="30s")
    reader = token_reader(bao, token, clock, cache_ttl=3600)
    assert reader("edgebot/renew-cached", "password") == "c"
    clock.advance(25)
    assert reader("edgebot/renew-cached", "password") == "c"  # from the cache, and the token renewed meanwhile
    assert bao.lookup_token(token).get("last_renewal_time")


def test_approle_logs_in_again_when_its_token_expired_or_was_revoked(bao: BaoServer) -> None:
    clock = FakeClock()
    bao.put_secret("edgebot/relogin", {"password": "again"})
    bao.write_policy("relogin", bao.read_only_policy(["secret/data/edgebot/relogin"]))
    role_id, secret_id = bao.approle("relogin", ["relogin"], token_ttl="30s", token_max_ttl="60s")
    settings = parse_vault_settings({"url": bao.url, "auth": "approle", "role_id": "env:R", "secret_id": "env:S",
                                     "cache_ttl": 0})
    reader = VaultReader(settings, environ={"R": role_id, "S": secret_id}, clock=clock)

    assert reader("edgebot/relogin", "password") == "again"
    tokens = len(bao.token_accessors())
    assert reader("edgebot/relogin", "password") == "again"
    assert len(bao.token_accessors()) == tokens  # same token while it is fresh

    clock.advance(31)  # the token's TTL ran out: a new login, not a renewal
    assert reader("edgebot/relogin", "password") == "again"
    assert len(bao.token_accessors()) == tokens + 1

    bao.client().sys.revoke_prefix("auth/relogin-none")  # unrelated prefix: nothing happens
    bao.client().sys.revoke_prefix("auth/approle/login")  # every AppRole token, ours included
    assert len(bao.token_accessors()) < tokens + 1
    assert reader("edgebot/relogin", "password") == "again"  # 403 on a dead token: logged in again, retried


def test_kubernetes_login_through_token_review(bao: BaoServer, tmp_path: Path) -> None:
    bao.put_secret("edgebot/k8s", {"password": "from-k8s"})
    bao.write_policy("k8s-signer", bao.read_only_policy(["secret/data/edgebot/k8s"]))
    with TokenReviewStandIn() as reviewer:
        bao.kubernetes_role("signer", ["k8s-signer"], reviewer=reviewer, service_account="edgebot-signer",
                            namespace="edge")
        jwt_file = tmp_path / "token"
        jwt_file.write_text(reviewer.issue_jwt("edge", "edgebot-signer") + "\n")
        settings = parse_vault_settings({"url": bao.url, "auth": "kubernetes", "role": "signer",
                                         "jwt_path": str(jwt_file)})
        assert VaultReader(settings, clock=FakeClock())("edgebot/k8s", "password") == "from-k8s"
        assert reviewer.reviews >= 1

        other = reviewer.issue_jwt("edge", "someone-else")
        jwt_file.write_text(other)
        message = unavailable(VaultReader(settings, clock=FakeClock()), "edgebot/k8s", "password")
        assert "rejected the Kubernetes login as role 'signer'" in message
        assert_no_credentials(message, other, other.split(".")[1])

        jwt_file.unlink()
        message = unavailable(VaultReader(settings, clock=FakeClock()), "edgebot/k8s", "password")
        assert f"cannot read the Kubernetes service-account token {jwt_file}" in message


def test_namespace_header(bao: BaoServer) -> None:
    bao.create_namespace("team1")
    bao.put_secret("edgebot/ns", {"password": "in-team1"}, namespace="team1")
    bao.put_secret("edgebot/ns", {"password": "in-root"})
    assert token_reader(bao, bao.root_token, namespace="team1")("edgebot/ns", "password") == "in-team1"
    assert token_reader(bao, bao.root_token)("edgebot/ns", "password") == "in-root"


def test_tls_verified_with_ca_cert(tmp_path: Path) -> None:
    with BaoServer(tmp_path / "tls-bao", tls=True) as server:
        server.put_secret("edgebot/tls", {"password": "over-tls"})
        trusted = token_reader(server, server.root_token, ca_cert=str(server.ca_cert))
        assert trusted("edgebot/tls", "password") == "over-tls"

        untrusted = token_reader(server, server.root_token)
        message = unavailable(untrusted, "edgebot/tls", "password")
        assert "cannot verify the TLS certificate" in message and "vault.ca_cert" in message
        assert "unreachable" not in message

        absent = token_reader(server, server.root_token, ca_cert=str(tmp_path / "nope.pem"))
        assert "is not a readable file" in unavailable(absent, "edgebot/tls", "password")


# -- Vault down ------------------------------------------------------------------------------------------------------


def test_sealed_then_unsealed_then_unreachable(disposable_bao: BaoServer) -> None:
    bao = disposable_bao
    bao.put_secret("edgebot/down", {"password": "up"})
    reader = token_reader(bao, bao.root_token, cache_ttl=0)
    assert reader("edgebot/down", "password") == "up"

    bao.seal()
    message = unavailable(reader, "secret/data/edgebot/down", "password")
    assert message == f"vault:secret/data/edgebot/down#password: Vault at {bao.url} is sealed (an operator must " \
                      "unseal it)"
    fresh = token_reader(bao, bao.root_token)  # sealed already at login
    assert "sealed" in unavailable(fresh, "edgebot/down", "password")

    bao.unseal()
    assert reader("edgebot/down", "password") == "up"

    bao.stop()
    message = unavailable(reader, "edgebot/down", "password")
    assert "unreachable" in message and "connection refused" in message and bao.url in message
    assert_no_credentials(message, bao.root_token)


# -- wiring ----------------------------------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "slack": {"bot_token": "env:SLACK_BOT_TOKEN", "signing_secret": "env:SLACK_SIGNING_SECRET"},
    "redis": {"url": "redis://127.0.0.1:6379/0"},
    "exchange": {"url": "https://hub.example/edge-exchange/v1", "username": "acme/edgebot",
                 "password": "vault:secret/data/edgebot/e2e#password"},
    "signing": {"private_key": "vault:edgebot/e2e#private_key"},
    "registries": {"icr": {"kind": "icr", "host": "us.icr.io", "namespace": "edge", "push_username": "iamapikey",
                           "push_password": "env:ICR_PUSH_KEY"}},
    "services": {"hello": {"source": "https://git.example/hello.git", "org": "acme", "arches": ["amd64"]}},
}


def test_build_resolver_end_to_end(bao: BaoServer) -> None:
    bao.put_secret("edgebot/e2e", {"password": "exchange-pw", "private_key": "-----BEGIN PRIVATE KEY-----x"})
    data = copy.deepcopy(BASE)
    data["vault"] = {"url": bao.url, "token": "env:BAO_TOKEN", "cache_ttl": 30}
    environ = {"BAO_TOKEN": bao.root_token, "ICR_PUSH_KEY": "icr-key"}
    config = parse_config(data, environ={})
    resolver = build_resolver(config, environ=environ)

    secret = resolver.resolve(SecretRef.parse("vault:secret/data/edgebot/e2e#password", where="x"))
    assert secret.reveal() == "exchange-pw"
    assert "exchange-pw" not in repr(secret)
    assert resolver.resolve(config.signing.private_key).reveal().startswith("-----BEGIN PRIVATE KEY-----")
    assert resolver.resolve(config.registries["icr"].push_password).reveal() == "icr-key"  # env still works

    plain = build_resolver(parse_config(BASE, environ={}), environ=environ)
    assert type(plain) is SecretResolver
    with pytest.raises(SecretUnavailable, match="no Vault access configured"):
        plain.resolve(config.exchange.password)


# -- settings --------------------------------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = parse_vault_settings({"url": "https://vault.example:8200/", "token": "file:/vault/token"})
    assert settings == VaultSettings(url="https://vault.example:8200", token=SecretRef("file", "/vault/token"))
    k8s = parse_vault_settings({"url": "http://v:8200", "auth": "kubernetes", "role": "signer",
                                "auth_mount": "/kubernetes-east/", "namespace": "team1/", "cache_ttl": 0})
    assert (k8s.login_mount, k8s.namespace, k8s.cache_ttl) == ("kubernetes-east", "team1", 0.0)
    assert k8s.jwt_path == "/var/run/secrets/kubernetes.io/serviceaccount/token"


@pytest.mark.parametrize(("table", "expected"), [
    ({"url": "http://v:8200", "token": "s.literaltoken1234567890abc"}, "vault.token: a secret must be a reference"),
    ({"url": "http://v:8200", "token": "vault:secret/data/t#token"}, "vault.token: the credential Vault is logged"),
    ({"url": "http://v:8200", "token": "env:T", "tokn": "x"}, "unknown key(s) tokn in [vault]"),
    ({"token": "env:T"}, "vault.url is required"),
    ({"url": "v:8200", "token": "env:T"}, "vault.url must be the Vault address"),
    ({"url": "http://v:8200/v1", "token": "env:T"}, "vault.url must be the Vault address"),
    ({"url": "http://v:8200", "auth": "ldap"}, "vault.auth must be one of token, approle, kubernetes"),
    ({"url": "http://v:8200"}, "vault.token is required with auth = \"token\""),
    ({"url": "http://v:8200", "auth": "approle", "role_id": "env:R"}, "vault.secret_id is required"),
    ({"url": "http://v:8200", "auth": "approle", "role_id": "env:R", "secret_id": "literal-secret-id"},
     "vault.secret_id: a secret must be a reference"),
    ({"url": "http://v:8200", "auth": "kubernetes"}, "vault.role is required with auth = \"kubernetes\""),
    ({"url": "http://v:8200", "token": "env:T", "role_id": "env:R"}, "vault.role_id is only used with auth"),
    ({"url": "http://v:8200", "token": "env:T", "auth_mount": "x"}, "vault.auth_mount is only used"),
    ({"url": "http://v:8200", "token": "env:T", "cache_ttl": -1}, "vault.cache_ttl must be a number of seconds"),
    ({"url": "http://v:8200", "token": "env:T", "timeout": 0}, "vault.timeout must be a number of seconds"),
    ({"url": "http://v:8200", "token": "env:T", "timeout": True}, "vault.timeout must be a number of seconds"),
    ({"url": "http://v:8200", "token": "env:T", "mount": "/"}, "vault.mount must name the KV v2 mount"),
    ({"url": "http://v:8200", "token": "env:T", "namespace": 3}, "vault.namespace must be a non-empty string"),
])
def test_settings_mistakes_name_the_key(table: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_vault_settings(table)
    assert expected in str(info.value)
    assert "literaltoken" not in str(info.value) and "literal-secret-id" not in str(info.value)


def test_literal_token_in_config_refused_by_build_resolver() -> None:
    data = copy.deepcopy(BASE)
    data["vault"] = {"url": "http://127.0.0.1:8200", "token": "s.AbCdEf0123456789AbCdEf01"}
    config = parse_config(data, environ={})  # [vault] arrives unparsed; the worker's resolver checks it
    with pytest.raises(ConfigError, match="vault.token: a secret must be a reference") as info:
        build_resolver(config, environ={})
    assert "AbCdEf0123456789" not in str(info.value)


def test_release_revokes_only_a_token_this_process_logged_in_for(bao: BaoServer) -> None:
    """RQ forks a work horse per job: a horse revokes the token it logged in for at the end of its job, never the
    one it inherited from the worker process, nor a configured token."""
    import os

    bao.put_secret("edgebot/release", {"password": "rel"})
    bao.write_policy("release", bao.read_only_policy(["secret/data/edgebot/release"]))
    role_id, secret_id = bao.approle("release", ["release"])
    settings = parse_vault_settings({"url": bao.url, "auth": "approle", "role_id": "env:R", "secret_id": "env:S",
                                     "cache_ttl": 0})
    environ = {"R": role_id, "S": secret_id}

    own = VaultReader(settings, environ=environ, clock=FakeClock())
    tokens = len(bao.token_accessors())
    assert own("edgebot/release", "password") == "rel"
    assert len(bao.token_accessors()) == tokens + 1
    own.release()
    assert len(bao.token_accessors()) == tokens, "the token this process logged in for is revoked"
    assert own("edgebot/release", "password") == "rel"  # the next job logs in again
    assert len(bao.token_accessors()) == tokens + 1

    parent = VaultReader(settings, environ=environ, clock=FakeClock())
    parent.login()
    with_parent = len(bao.token_accessors())
    pid = os.fork()
    if pid == 0:  # the work horse: reads with the inherited token, then ends its job
        code = 0 if parent("edgebot/release", "password") == "rel" else 3
        parent.release()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(bao.token_accessors()) == with_parent, "the inherited token is neither revoked nor replaced"
    assert parent("edgebot/release", "password") == "rel"
    assert len(bao.token_accessors()) == with_parent

    configured = bao.create_token(["release"])
    static = token_reader(bao, configured, cache_ttl=0)
    assert static("edgebot/release", "password") == "rel"
    static.release()
    assert bao.lookup_token(configured)["ttl"] > 0, "a configured token is never revoked"
    own.release()
