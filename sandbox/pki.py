"""A throwaway certificate authority for tests and the sandbox: a CA and the server certificates it signs.

The private-registry scenario edgebot exists for is a registry whose certificate is signed by a CA nobody trusts by
default (OpenShift's route CA). Tests make such a CA here, give the registry a certificate from it, and then prove
that Docker refuses the registry until the CA is installed in ``certs.d``. EC P-256 keys: quick to make, and every
client involved (Go's crypto/tls in dockerd and the registry, Python's ssl) accepts them.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)
BACKDATE = datetime.timedelta(hours=1)  # tolerate a little clock skew between the test and the servers


@dataclass
class TestCA:
    """A self-signed CA. ``key`` is kept out of the repr; write it nowhere: only server keys leave this object."""

    __test__ = False  # not a pytest test class, despite the name

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def create(cls, common_name: str = "edgebot test CA") -> TestCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def common_name(self) -> str:
        return str(self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue_server_cert(self, dns_names: list[str], ip_addresses: list[str] | None = None) -> tuple[bytes, bytes]:
        """A TLS server certificate for ``dns_names`` (the first is also the CN) and ``ip_addresses``.

        Returns ``(cert_pem, key_pem)``; the key is unencrypted PKCS#8, as the registry and most servers want it.
        """
        if not dns_names:
            raise ValueError("a server certificate needs at least one DNS name")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names)]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ip_addresses or [])]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    # -- write helpers ------------------------------------------------------------------------------------------------

    def write_cert(self, path: Path) -> Path:
        """Write the CA certificate (public) to ``path``; returns it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.cert_pem)
        return path

    def write_server_cert(self, directory: Path, dns_names: list[str], ip_addresses: list[str] | None = None,
                          *, stem: str = "server") -> tuple[Path, Path]:
        """Issue a server certificate and write ``<stem>.crt`` and ``<stem>.key`` (mode 0600) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cert_pem, key_pem = self.issue_server_cert(dns_names, ip_addresses)
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(cert_pem)
        key_path.touch(mode=0o600, exist_ok=True)
        key_path.chmod(0o600)  # before the key is in it
        key_path.write_bytes(key_pem)
        return cert_path, key_path
