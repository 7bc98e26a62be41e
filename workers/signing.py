"""Sign deployment strings the way hzn does and verify them the way edge agents do.

hzn (rsapss-tool ``sign``): RSASSA-PSS, SHA-256 digest, MGF1-SHA-256, Go's ``PSSSaltLengthAuto`` which *signs* with the
maximum salt length (key bytes − 32 − 2), standard base64 with padding. The agent (rsapss-tool ``verify``) hashes the
deployment string exactly as stored, auto-detects the salt length and accepts any key that verifies: a PKIX
``PUBLIC KEY`` PEM, or a self-issued x509 certificate that passes its checks (see :func:`verify_deployment`).

A signer only ever exposes its public half: private key bytes never reach a repr, a str, an exception or a log.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MIN_KEY_BITS = 2048
#: rsapss-tool ``constants.MaxSelfSignedCertExpirationDays``: longest validity an agent accepts for a signing cert.
MAX_CERT_DAYS = 3653

_PSS_SIGN = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
_PSS_VERIFY = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


class SigningError(Exception):
    """A key that cannot sign or verify edgebot's deployments; ``str()`` says what key is needed, never key bytes."""


class Signer(Protocol):
    """Anything that signs with RSA-PSS/SHA-256/max salt (a PEM key here, Vault Transit elsewhere)."""

    key_name: str

    def public_key_pem(self) -> bytes:
        """The PKIX ``PUBLIC KEY`` PEM uploaded as the service key (what agents accept)."""
        ...

    def sign(self, data: bytes) -> str:
        """Standard base64 (with padding) of the RSA-PSS signature of ``data``."""
        ...


_VALIDATED: set[bytes] = set()
"""sha256 of PEM keys whose RSA parameters OpenSSL already checked in this process (or in the worker it was forked
from: the worker warms it at start). The check costs ~25 ms for a 2048-bit key and ~190 ms for a 4096-bit one, and
sign and publish load the key in every job; byte-identical keys need it once. A new or rotated key is checked."""


class PemSigner:
    """An RSA private key from PEM: PKCS#1 (``RSA PRIVATE KEY``, what hzn writes) or PKCS#8, optionally encrypted."""

    __slots__ = ("_key", "key_name")

    def __init__(self, private_key_pem: bytes, key_name: str, password: bytes | None = None) -> None:
        if not key_name:
            raise SigningError("the signing key needs a name (it is the key name stored with the service)")
        digest = hashlib.sha256(private_key_pem + b"\0" + (password or b"")).digest()
        try:
            key = serialization.load_pem_private_key(private_key_pem, password=password,
                                                     unsafe_skip_rsa_key_validation=digest in _VALIDATED)
        except TypeError:
            problem = "it is encrypted: give its password" if password is None else "it is not encrypted: no password"
            raise SigningError(f"signing key {key_name}: {problem}") from None
        except (ValueError, UnsupportedAlgorithm):
            raise SigningError(
                f"signing key {key_name} could not be read: it must be an RSA private key in PEM "
                "(-----BEGIN RSA PRIVATE KEY----- or -----BEGIN PRIVATE KEY-----), with the right password if encrypted"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SigningError(
                f"signing key {key_name} is not an RSA key: Open Horizon agents verify RSA-PSS only; "
                f"use an RSA key of at least {MIN_KEY_BITS} bits (`hzn key create` makes 4096-bit ones)"
            )
        _check_size(key.key_size, f"signing key {key_name}")
        _VALIDATED.add(digest)
        self._key = key
        self.key_name = key_name

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self._key.sign(data, _PSS_SIGN, hashes.SHA256())).decode("ascii")

    def __repr__(self) -> str:
        return (f"PemSigner(key_name={self.key_name!r}, bits={self._key.key_size}, "
                f"public_key={public_key_fingerprint(self.public_key_pem())})")

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a PemSigner holds a private key and cannot be pickled")


def _check_size(bits: int, what: str) -> None:
    if bits < MIN_KEY_BITS:
        raise SigningError(
            f"{what} has {bits} bits: use an RSA key of at least {MIN_KEY_BITS} bits "
            "(`hzn key create` makes 4096-bit ones)"
        )


def sign_deployment(signer: Signer, deployment_string: str) -> str:
    """Sign the exact UTF-8 bytes of ``deployment_string``; the signature is checked against the signer's public key
    before it is returned, so a misbehaving signer (wrong key, wrong padding) fails here rather than on every node."""
    signature = signer.sign(deployment_string.encode("utf-8"))
    if not verify_deployment(signer.public_key_pem(), deployment_string, signature):
        raise SigningError(
            f"the signature made with key {signer.key_name} does not verify with that key's public key: "
            "check that the signer uses RSA-PSS with SHA-256 and that its public key matches"
        )
    return signature


def verify_deployment(public_key_pem: bytes, deployment_string: str, signature_b64: str) -> bool:
    """Verify like an edge agent: SHA-256 over the exact string, PSS with the salt length auto-detected.

    ``public_key_pem`` is a PKIX ``PUBLIC KEY`` or a self-issued x509 ``CERTIFICATE`` that an agent would accept
    (current, at most 3653 days of validity, serial > 0, basic constraints present, not a CA, key usage exactly
    digital signature, issuer == subject with a common name). Returns False when the signature does not match;
    raises :class:`SigningError` when the key itself is one an agent would not use.
    """
    public_key = _load_verifying_key(public_key_pem)
    try:
        signature = base64.b64decode(signature_b64.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        public_key.verify(signature, deployment_string.encode("utf-8"), _PSS_VERIFY, hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _first_pem_label(pem: bytes) -> str:
    m = _PEM_BEGIN.search(pem)
    return m.group(1).decode("ascii") if m else ""


def _load_verifying_key(pem: bytes) -> rsa.RSAPublicKey:
    """The first PEM block as a certificate or a PKIX key, as rsapss-tool reads it; PKCS#1 public keys are refused."""
    label = _first_pem_label(pem)
    key: Any
    if label == "CERTIFICATE":
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise SigningError("the certificate could not be parsed: give a PEM CERTIFICATE or PUBLIC KEY") from None
        _check_agent_cert(cert)
        key = cert.public_key()
    elif label == "PUBLIC KEY":
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            raise SigningError("the public key could not be parsed: give a PEM PUBLIC KEY or CERTIFICATE") from None
    else:
        found = f"a {label!r} PEM" if label else "no PEM block"
        raise SigningError(
            f"agents accept a PEM 'PUBLIC KEY' (PKIX) or a self-signed 'CERTIFICATE'; this is {found}"
        )
    if not isinstance(key, rsa.RSAPublicKey):
        raise SigningError("the public key is not RSA: agents verify RSA-PSS signatures only")
    _check_size(key.key_size, "the public key")
    return key


def _check_agent_cert(cert: x509.Certificate) -> None:
    """rsapss-tool ``verify.verify``: the checks an agent makes before trusting a certificate's key."""
    now = dt.datetime.now(dt.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start or now > end:
        raise SigningError(f"the signing certificate is not valid now (valid {start:%Y-%m-%d} to {end:%Y-%m-%d})")
    if (end - start).total_seconds() > MAX_CERT_DAYS * 86400:
        raise SigningError(f"the signing certificate is valid for more than {MAX_CERT_DAYS} days: agents refuse it")
    if cert.serial_number < 1:
        raise SigningError("the signing certificate's serial number is not positive: agents refuse it")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise SigningError("the signing certificate has no basic constraints: agents refuse it") from None
    if constraints.ca:
        raise SigningError("the signing certificate is a CA: agents accept only self-signed leaf certificates")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise SigningError("the signing certificate has no key usage: agents need exactly digitalSignature") from None
    others = (usage.content_commitment, usage.key_encipherment, usage.data_encipherment, usage.key_agreement,
              usage.key_cert_sign, usage.crl_sign)
    if not usage.digital_signature or any(others):
        raise SigningError("the signing certificate's key usage must be exactly digitalSignature")
    common_names = cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not common_names or not common_names[0].value or cert.issuer != cert.subject:
        raise SigningError("the signing certificate is not self-issued (issuer must equal subject, with a CN)")


def fingerprint(data: bytes) -> str:
    """``sha256:<hex>`` of some bytes (a signature, a key): short, stable, safe to show."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def public_key_fingerprint(public_key_pem: bytes) -> str:
    """``sha256:<hex>`` over the DER SubjectPublicKeyInfo, so a key and a certificate for it match."""
    key = _load_any_public_key(public_key_pem)
    return fingerprint(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _load_any_public_key(pem: bytes) -> Any:
    try:
        if _first_pem_label(pem) == "CERTIFICATE":
            return x509.load_pem_x509_certificate(pem).public_key()
        return serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningError("the public key could not be parsed: give a PEM PUBLIC KEY or CERTIFICATE") from None


def generate_private_key_pem(bits: int = 4096) -> bytes:
    """A new RSA key as unencrypted PKCS#1 PEM (``RSA PRIVATE KEY``), the format ``hzn key create`` writes."""
    _check_size(bits, "the requested key")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
