"""workers.signing: RSA-PSS/SHA-256/max-salt signatures that an independent verifier (openssl) and the agent's rules
accept; key handling that never leaks private key material."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import pickle

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tests.openssl_check import openssl_verify
from workers.signing import (
    PemSigner,
    SigningError,
    fingerprint,
    generate_private_key_pem,
    public_key_fingerprint,
    sign_deployment,
    verify_deployment,
)

DEPLOYMENT = '{"services":{"hello":{"environment":["WHO=wörld"],"image":"reg.example.com:5000/t/hello_amd64@sha256:' \
             + "ab" * 32 + '"}}}'


@pytest.fixture(scope="module")
def pem_2048() -> bytes:
    return generate_private_key_pem(2048)


@pytest.fixture(scope="module")
def pem_4096() -> bytes:
    return generate_private_key_pem()  # the default, like `hzn key create` (slow: generated once per module)


def _body_lines(pem: bytes) -> list[bytes]:
    """The base64 lines of a PEM: what must never show up in a repr, a str or an error."""
    return [line for line in pem.splitlines() if line and not line.startswith(b"-----")]


def _rsa(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _rsa_public(pem: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def _max_salt(bits: int) -> int:
    return (bits + 7) // 8 - 32 - 2


def _cert_pem(key: rsa.RSAPrivateKey, *, ca: bool = False, days: int = 1461, usage_sign_only: bool = True) -> bytes:
    """A certificate shaped like the one `hzn key create` writes (rsapss-tool generatekeys)."""
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "edgebot@example.com")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=12))
        .not_valid_after(now - dt.timedelta(hours=12) + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=not usage_sign_only,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


# -- round trips -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fixture", "bits"), [("pem_2048", 2048), ("pem_4096", 4096)])
def test_sign_and_verify_round_trip_with_max_salt(request, fixture, bits):
    pem = request.getfixturevalue(fixture)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # PKCS#1, what hzn reads
    signer = PemSigner(pem, "service.public.pem")
    signature = sign_deployment(signer, DEPLOYMENT)
    raw = base64.b64decode(signature, validate=True)
    assert len(raw) == bits // 8 and base64.b64encode(raw).decode() == signature  # standard base64 with padding
    if bits == 4096:
        assert len(signature) == 684
    assert verify_deployment(signer.public_key_pem(), DEPLOYMENT, signature)
    assert not verify_deployment(signer.public_key_pem(), DEPLOYMENT + " ", signature)

    # The salt is the maximum (emLen - hLen - 2): verification with exactly that salt length succeeds …
    key = _rsa_public(signer.public_key_pem())
    exact = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=_max_salt(bits))
    key.verify(raw, DEPLOYMENT.encode(), exact, hashes.SHA256())
    # … and fails for a different message, and for a shorter salt length.
    with pytest.raises(InvalidSignature):
        key.verify(raw, DEPLOYMENT.replace("hello", "hellp").encode(), exact, hashes.SHA256())
    with pytest.raises(InvalidSignature):
        key.verify(raw, DEPLOYMENT.encode(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                   hashes.SHA256())


def test_signatures_are_randomized_but_all_verify(pem_2048):
    signer = PemSigner(pem_2048, "k")
    first, second = sign_deployment(signer, DEPLOYMENT), sign_deployment(signer, DEPLOYMENT)
    assert first != second
    assert verify_deployment(signer.public_key_pem(), DEPLOYMENT, first)
    assert verify_deployment(signer.public_key_pem(), DEPLOYMENT, second)


def test_pkcs8_and_encrypted_pkcs8_keys_sign_the_same_way(pem_2048):
    key = _rsa(pem_2048)
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"s3cret-pass"))
    reference = PemSigner(pem_2048, "k").public_key_pem()
    for signer in (PemSigner(pkcs8, "k"), PemSigner(encrypted, "k", password=b"s3cret-pass")):
        assert signer.public_key_pem() == reference
        assert verify_deployment(reference, DEPLOYMENT, sign_deployment(signer, DEPLOYMENT))


def test_public_key_is_pkix_pem(pem_2048):
    public = PemSigner(pem_2048, "k").public_key_pem()
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----\n")


# -- an independent verifier ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["pem_2048", "pem_4096"])
def test_openssl_verifies_the_signature_and_rejects_a_tampered_deployment(request, tmp_path, fixture):
    signer = PemSigner(request.getfixturevalue(fixture), "k")
    signature = sign_deployment(signer, DEPLOYMENT)
    ok = openssl_verify(tmp_path, signer.public_key_pem(), DEPLOYMENT, signature)
    assert ok.returncode == 0 and "Verified OK" in ok.stdout, ok.stderr
    tampered = openssl_verify(tmp_path, signer.public_key_pem(), DEPLOYMENT.replace("wörld", "world"), signature)
    assert tampered.returncode != 0 and "Verified OK" not in tampered.stdout


def test_verification_auto_detects_the_salt_like_an_agent(pem_2048):
    """A signer with a short salt (e.g. another tool) still verifies: agents do not assume the salt length."""
    key = _rsa(pem_2048)
    sig = key.sign(DEPLOYMENT.encode(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                   hashes.SHA256())
    assert verify_deployment(PemSigner(pem_2048, "k").public_key_pem(), DEPLOYMENT, base64.b64encode(sig).decode())
    assert not verify_deployment(PemSigner(pem_2048, "k").public_key_pem(), DEPLOYMENT, "not base64!")


# -- certificates and key formats the agent accepts -------------------------------------------------------------------

def test_a_self_signed_certificate_like_hzn_key_create_makes_is_accepted(pem_2048):
    key = _rsa(pem_2048)
    cert = _cert_pem(key)
    signature = sign_deployment(PemSigner(pem_2048, "k"), DEPLOYMENT)
    assert verify_deployment(cert, DEPLOYMENT, signature)
    assert not verify_deployment(cert, DEPLOYMENT + "x", signature)
    assert public_key_fingerprint(cert) == public_key_fingerprint(PemSigner(pem_2048, "k").public_key_pem())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"ca": True}, "is a CA"), ({"days": 4000}, "more than 3653 days"),
     ({"usage_sign_only": False}, "exactly digitalSignature")],
)
def test_certificates_an_agent_would_refuse_are_refused(pem_2048, kwargs, message):
    key = _rsa(pem_2048)
    signature = sign_deployment(PemSigner(pem_2048, "k"), DEPLOYMENT)
    with pytest.raises(SigningError, match=message):
        verify_deployment(_cert_pem(key, **kwargs), DEPLOYMENT, signature)


def test_a_pkcs1_public_key_is_refused_as_agents_do(pem_2048):
    key = _rsa(pem_2048)
    pkcs1 = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    assert pkcs1.startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    with pytest.raises(SigningError, match="RSA PUBLIC KEY"):
        verify_deployment(pkcs1, DEPLOYMENT, sign_deployment(PemSigner(pem_2048, "k"), DEPLOYMENT))


# -- keys that cannot be used ------------------------------------------------------------------------------------------

def test_non_rsa_and_small_keys_are_refused_with_what_is_needed():
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(SigningError, match="not an RSA key.*at least 2048 bits"):
        PemSigner(ec_pem, "ec")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    with pytest.raises(SigningError, match="has 1024 bits: use an RSA key of at least 2048 bits") as exc:
        PemSigner(small, "small")
    assert not any(line.decode() in str(exc.value) for line in _body_lines(small))
    with pytest.raises(SigningError, match="at least 2048"):
        generate_private_key_pem(1024)


def test_sign_deployment_refuses_a_signer_whose_public_key_does_not_match(pem_2048, pem_4096):
    class Mismatched:
        key_name = "mismatched"

        def public_key_pem(self) -> bytes:
            return PemSigner(pem_4096, "other").public_key_pem()

        def sign(self, data: bytes) -> str:
            return PemSigner(pem_2048, "k").sign(data)

    with pytest.raises(SigningError, match="does not verify with that key's public key"):
        sign_deployment(Mismatched(), DEPLOYMENT)


# -- secrets stay secret -----------------------------------------------------------------------------------------------

def test_private_key_material_never_appears_in_repr_str_or_errors(pem_2048):
    signer = PemSigner(pem_2048, "service.private.key")
    lines = _body_lines(pem_2048)
    for text in (repr(signer), str(signer), f"{signer}", repr([signer])):
        assert "service.private.key" in text and "sha256:" in text
        assert not any(line.decode() in text for line in lines)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(signer)

    key = _rsa(pem_2048)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"correct horse"))
    for pem, password, message in ((encrypted, b"wrong", "could not be read"), (encrypted, None, "give its password"),
                                   (pem_2048[:-200], None, "could not be read")):
        with pytest.raises(SigningError, match=message) as exc:
            PemSigner(pem, "k", password=password)
        text = str(exc.value) + repr(exc.value)
        assert "correct horse" not in text and "wrong" not in text
        assert not any(line.decode() in text for line in _body_lines(pem))
        assert exc.value.__cause__ is None and exc.value.__suppress_context__


# -- fingerprints ------------------------------------------------------------------------------------------------------

def test_fingerprints_are_stable_and_over_the_spki_der(pem_2048):
    assert fingerprint(b"abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    public = PemSigner(pem_2048, "k").public_key_pem()
    der = serialization.load_pem_public_key(public).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    expected = "sha256:" + hashlib.sha256(der).hexdigest()
    assert public_key_fingerprint(public) == expected
    assert public_key_fingerprint(PemSigner(pem_2048, "again").public_key_pem()) == expected


def test_key_parameters_are_checked_once_per_key_and_a_broken_key_is_still_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from workers import signing

    good = signing.generate_private_key_pem(2048)
    signing.PemSigner(good, "k.pem")
    assert len(signing._VALIDATED) >= 1
    again = signing.PemSigner(good, "k.pem")  # same bytes: OpenSSL's RSA check is not repeated
    assert again.public_key_pem() == signing.PemSigner(good, "k.pem").public_key_pem()

    numbers = serialization.load_pem_private_key(good, None).private_numbers()  # type: ignore[union-attr]
    broken_numbers = rsa.RSAPrivateNumbers(p=numbers.p, q=numbers.q, d=numbers.d + 2, dmp1=numbers.dmp1,
                                           dmq1=numbers.dmq1, iqmp=numbers.iqmp,
                                           public_numbers=numbers.public_numbers)
    broken = broken_numbers.private_key(unsafe_skip_rsa_key_validation=True).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(signing.SigningError, match="could not be read"):
        signing.PemSigner(broken, "k.pem")  # new bytes: checked, and refused
