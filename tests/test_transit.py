"""Transit signing against a real OpenBao: the private key stays in Vault, the signature is what hzn makes and what
agents (and openssl) accept, with the least-privilege policy shipped in ``deploy/vault/edgebot-publish.hcl``."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgebot.config import parse_config
from edgebot.errors import ConfigError, SecretUnavailable
from edgebot.secrets import SecretRef
from sandbox.bao import BaoServer
from tests.openssl_check import openssl_says
from workers.config_check import run_checks
from workers.context import signer_for
from workers.signing import SigningError, public_key_fingerprint, sign_deployment, verify_deployment
from workers.transit import TransitSigner
from workers.vault import VaultReader, VaultSettings, build_resolver

KEY = "edgebot-signing"  # the key deploy/vault/edgebot-publish.hcl names
POLICY = Path(__file__).resolve().parent.parent / "deploy" / "vault" / "edgebot-publish.hcl"
DEPLOYMENT = json.dumps({"services": {"hello": {"image": "us.icr.io/edge/hello_amd64@sha256:" + "ab" * 32}}},
                        sort_keys=True, separators=(",", ":"))


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    with BaoServer(tmp_path_factory.mktemp("bao-transit")) as server:
        server.transit_key(KEY)
        server.write_policy("edgebot-publish", POLICY.read_text())
        yield server


def reader_for(bao: BaoServer, token: str) -> VaultReader:
    return VaultReader(VaultSettings(url=bao.url, token=SecretRef("env", "T")), environ={"T": token})


def publisher(bao: BaoServer) -> VaultReader:
    """Logged in with exactly the shipped publish policy."""
    return reader_for(bao, bao.create_token(["edgebot-publish"]))


def test_transit_signature_is_what_agents_and_openssl_accept(bao: BaoServer, tmp_path: Path) -> None:
    signer = TransitSigner(publisher(bao), KEY, "edgebot.public.pem")
    public = signer.public_key_pem()
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----")
    root_view = bao.client().secrets.transit.read_key(name=KEY)["data"]
    assert public.decode() == root_view["keys"]["1"]["public_key"]
    assert root_view["type"] == "rsa-4096" and not root_view["exportable"]  # the private key cannot leave Vault

    signature = sign_deployment(signer, DEPLOYMENT)  # checks itself against the public key before returning
    assert not signature.startswith("vault:") and base64.b64encode(base64.b64decode(signature)).decode() == signature
    assert len(base64.b64decode(signature)) == 512  # RSA-4096
    assert verify_deployment(public, DEPLOYMENT, signature)
    assert not verify_deployment(public, DEPLOYMENT + " ", signature)
    # openssl as the agent verifies (salt auto-detected) …
    assert openssl_says(tmp_path, public, DEPLOYMENT, signature, "auto") == "Verified OK"
    # … and OpenBao's PSS salt is the maximum length, exactly like hzn's (Go's PSSSaltLengthAuto when signing)
    assert openssl_says(tmp_path, public, DEPLOYMENT, signature, "max") == "Verified OK"
    assert "Verification failure" in openssl_says(tmp_path, public, DEPLOYMENT, signature, "32")
    assert "Verification failure" in openssl_says(tmp_path, public, DEPLOYMENT + "x", signature, "auto")
    assert KEY in repr(signer) and "PRIVATE" not in repr(signer)


def test_the_publish_policy_allows_this_key_and_nothing_else_of_transit(bao: BaoServer) -> None:
    bao.transit_key("other-key", key_type="rsa-2048")
    reader = publisher(bao)
    other = TransitSigner(reader, "other-key", "x.pem")
    with pytest.raises(SecretUnavailable) as info:
        other.public_key_pem()
    assert str(info.value) == "vault-transit:transit/other-key: permission denied: the role may not read " \
                              "transit/keys/other-key"
    token = bao.create_token(["edgebot-publish"])
    client = bao.client(token)
    for forbidden in (lambda: client.secrets.transit.rotate_key(name=KEY),
                      lambda: client.secrets.transit.export_key(name=KEY, key_type="signing-key"),
                      lambda: client.secrets.transit.update_key_configuration(name=KEY, exportable=True),
                      lambda: client.secrets.transit.sign_data(name="other-key", hash_input="YQ==")):
        with pytest.raises(Exception) as refused:
            forbidden()
        assert type(refused.value).__name__ == "Forbidden"
    # a role that may read the key but not sign with it: the refusal names the sign path
    bao.write_policy("read-only-key", f'path "transit/keys/{KEY}" {{\n  capabilities = ["read"]\n}}\n')
    read_only = TransitSigner(reader_for(bao, bao.create_token(["read-only-key"])), KEY, "k.pem")
    assert read_only.public_key_pem().startswith(b"-----BEGIN PUBLIC KEY-----")
    with pytest.raises(SecretUnavailable, match=f"the role may not sign with transit/sign/{KEY}$"):
        read_only.sign(b"data")


def test_keys_agents_cannot_use_are_refused(bao: BaoServer) -> None:
    bao.transit_key("ecdsa-key", key_type="ecdsa-p256")
    root = reader_for(bao, bao.root_token)
    with pytest.raises(SigningError, match="is a ecdsa-p256 key: Open Horizon agents verify RSA-PSS only") as info:
        TransitSigner(root, "ecdsa-key", "k.pem").public_key_pem()
    assert "type=rsa-4096" in str(info.value)
    with pytest.raises(SecretUnavailable) as missing:
        TransitSigner(root, "absent", "k.pem").sign(b"x")
    assert str(missing.value) == ("vault-transit:transit/absent: no Transit key 'absent' at transit/ (create it with "
                                  "`bao write -f transit/keys/absent type=rsa-4096`)")
    with pytest.raises(SecretUnavailable, match="no Transit key 'edgebot-signing' at elsewhere/"):
        TransitSigner(root, KEY, "k.pem", mount="elsewhere").public_key_pem()


def test_rotation_signs_with_the_version_whose_public_key_is_uploaded(bao: BaoServer) -> None:
    bao.transit_key("rotating")
    root = reader_for(bao, bao.root_token)
    before = TransitSigner(root, "rotating", "k.pem")
    old_public = before.public_key_pem()
    bao.rotate_transit_key("rotating")
    after = TransitSigner(root, "rotating", "k.pem")
    assert after.key_version == 2 and before.key_version == 1
    assert public_key_fingerprint(after.public_key_pem()) != public_key_fingerprint(old_public)
    # a signer keeps signing with the version it read: its signature and its public key always match
    assert verify_deployment(old_public, DEPLOYMENT, sign_deployment(before, DEPLOYMENT))
    new_signature = sign_deployment(after, DEPLOYMENT)
    assert not verify_deployment(old_public, DEPLOYMENT, new_signature)


def test_vault_down_while_signing_is_a_clear_transient_failure(tmp_path: Path) -> None:
    with BaoServer(tmp_path / "bao") as bao:
        bao.transit_key(KEY)
        signer = TransitSigner(reader_for(bao, bao.root_token), KEY, "k.pem")
        signer.public_key_pem()
        bao.seal()
        with pytest.raises(SecretUnavailable) as sealed:
            signer.sign(b"data")
        assert str(sealed.value) == f"vault-transit:transit/{KEY}: Vault at {bao.url} is sealed (an operator must " \
                                    "unseal it)"
        bao.stop()
        with pytest.raises(SecretUnavailable, match="is unreachable") as gone:
            signer.sign(b"data")
        assert bao.root_token not in str(gone.value)


# -- configuration ---------------------------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "slack": {"bot_token": "env:SLACK_BOT_TOKEN", "signing_secret": "env:SLACK_SIGNING_SECRET"},
    "redis": {"url": "redis://127.0.0.1:1/0"},
    "exchange": {"url": "https://hub.example/edge-exchange/v1", "username": "acme/edgebot", "password": "env:EX"},
    "signing": {"transit_key": KEY, "key_name": "release.pem"},
    "registries": {"icr": {"kind": "icr", "host": "us.icr.io", "namespace": "edge", "push_username": "iamapikey",
                           "push_password": "env:ICR_PUSH_KEY"}},
    "services": {"hello": {"source": "https://git.example/hello.git", "org": "acme", "arches": ["amd64"]}},
    "vault": {"url": "http://127.0.0.1:8200", "token": "env:BAO_TOKEN"},
}


def test_config_transit_key_shape() -> None:
    config = parse_config(BASE, environ={})
    assert (config.signing.transit_key, config.signing.transit_mount, config.signing.private_key) == (KEY, "transit",
                                                                                                    None)
    assert config.signing.source == f"vault-transit:transit/{KEY}"
    other = copy.deepcopy(BASE)
    other["signing"]["transit_mount"] = "/signing-transit/"
    assert parse_config(other, environ={}).signing.source == f"vault-transit:signing-transit/{KEY}"


@pytest.mark.parametrize(("signing", "drop_vault", "expected"), [
    ({"transit_key": KEY, "private_key": "env:K"}, False, "[signing] has both private_key and transit_key: choose one"),
    ({"transit_key": KEY}, True, "signing.transit_key signs through Vault's Transit engine: add a [vault] table"),
    ({"transit_key": "transit/edgebot-signing"}, False, "signing.transit_key must be the name of a Transit key"),
    ({"transit_key": KEY, "transit_mount": "/"}, False, "signing.transit_mount must be the path"),
    ({"private_key": "env:K", "transit_mount": "transit"}, False, "signing.transit_mount is only used with"),
    ({"key_name": "k.pem"}, False, "signing.private_key is required"),
])
def test_config_signing_mistakes(signing: dict[str, str], drop_vault: bool, expected: str) -> None:
    data = copy.deepcopy(BASE)
    data["signing"] = signing
    if drop_vault:
        del data["vault"]
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ={})
    assert expected in str(info.value)


def test_worker_signer_and_config_check_use_transit(bao: BaoServer) -> None:
    data = copy.deepcopy(BASE)
    data["vault"]["url"] = bao.url
    config = parse_config(data, environ={})
    resolver = build_resolver(config, environ={"BAO_TOKEN": bao.create_token(["edgebot-publish"])})
    signer = signer_for(config, resolver)
    assert isinstance(signer, TransitSigner) and signer.key_name == "release.pem"
    assert verify_deployment(signer.public_key_pem(), DEPLOYMENT, sign_deployment(signer, DEPLOYMENT))

    lines = {line.item: line for line in run_checks(config, resolver, timeout=5)}
    line = lines["signing key release.pem"]
    assert line.ok and line.detail.startswith(f"signs and verifies (vault-transit:transit/{KEY}); public key sha256:")
    assert not any("signing.private_key" in item for item in lines)

    denied = build_resolver(config, environ={"BAO_TOKEN": bao.create_token(["default"])})
    line = {line.item: line for line in run_checks(config, denied, timeout=5)}["signing key release.pem"]
    assert not line.ok and line.detail == (f"vault-transit:transit/{KEY}: permission denied: the role may not read "
                                           f"transit/keys/{KEY}")
