"""An independent verifier: `openssl dgst` checks a deployment signature the way an agent does (RSA-PSS, SHA-256,
MGF1-SHA-256), from the public key, the exact signed string and the base64 signature — not edgebot's code."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path


def openssl_verify(tmp_path: Path, public_pem: bytes | str, data: str, signature_b64: str,
                   saltlen: str = "auto") -> subprocess.CompletedProcess[str]:
    """``saltlen``: ``auto`` (what agents accept), ``max``, or a number of bytes."""
    key = tmp_path / "pub.pem"
    key.write_bytes(public_pem.encode() if isinstance(public_pem, str) else public_pem)
    (tmp_path / "data").write_bytes(data.encode())
    (tmp_path / "sig").write_bytes(base64.b64decode(signature_b64, validate=True))
    return subprocess.run(
        ["openssl", "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", f"rsa_pss_saltlen:{saltlen}",
         "-sigopt", "rsa_mgf1_md:sha256", "-verify", str(key), "-signature", str(tmp_path / "sig"),
         str(tmp_path / "data")], capture_output=True, text=True, check=False)


def openssl_says(tmp_path: Path, public_pem: bytes | str, data: str, signature_b64: str, saltlen: str = "auto") -> str:
    """What openssl prints: ``Verified OK``, or ``Verification failure`` and its reasons."""
    done = openssl_verify(tmp_path, public_pem, data, signature_b64, saltlen)
    return (done.stdout + done.stderr).strip()
