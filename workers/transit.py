"""Sign deployments with Vault's / OpenBao's Transit engine: the private key never leaves Vault.

:class:`TransitSigner` has the interface of :class:`workers.signing.PemSigner`:

* ``sign(data)`` — ``POST <mount>/sign/<key>`` with ``hash_algorithm=sha2-256``, ``signature_algorithm=pss`` and the
  key version pinned to the one whose public key :meth:`public_key_pem` returns. Vault answers
  ``vault:v<N>:<standard base64>``; the prefix is stripped, leaving exactly what hzn writes. Vault and OpenBao sign
  PSS with Go's ``PSSSaltLengthAuto``, i.e. the maximum salt length (key bytes − 32 − 2), like hzn; MGF1 uses SHA-256.
  Agents auto-detect the salt anyway.
* ``public_key_pem()`` — ``GET <mount>/keys/<key>``: the PKIX ``PUBLIC KEY`` PEM of the latest version, which is
  what gets uploaded to the Exchange.

The key must be an RSA Transit key of at least 2048 bits (create it with ``type=rsa-4096``, what ``hzn key create``
makes); anything else is refused with the command that makes a usable one. The worker's Vault role needs ``update``
on ``<mount>/sign/<key>`` and ``read`` on ``<mount>/keys/<key>`` and nothing else of Transit
(``deploy/vault/edgebot-publish.hcl``).

Vault problems (sealed, unreachable, permission denied, no such key) are :class:`~edgebot.errors.SecretUnavailable`
naming ``vault-transit:<mount>/<key>``, so the pipeline retries what a retry may cure; a key of the wrong kind is a
:class:`~workers.signing.SigningError`.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import hvac

from workers.signing import SigningError, _check_size, public_key_fingerprint
from workers.vault import VaultReader

_PREFIX_RE = re.compile(r"^vault:v(\d+):")
RSA_TYPES = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}


class TransitSigner:
    """Signs through ``<mount>/sign/<key>`` with the credentials of ``reader`` (the worker's Vault login)."""

    __slots__ = ("_public", "_reader", "_version", "key_name", "mount", "transit_key")

    def __init__(self, reader: VaultReader, transit_key: str, key_name: str, *, mount: str = "transit") -> None:
        if not key_name:
            raise SigningError("the signing key needs a name (it is the key name stored with the service)")
        self._reader = reader
        self.transit_key = transit_key
        self.mount = mount.strip("/")
        self.key_name = key_name
        self._public: bytes | None = None
        self._version = 0

    @property
    def ref(self) -> str:
        return f"vault-transit:{self.mount}/{self.transit_key}"

    @property
    def key_version(self) -> int:
        """The Transit key version this signer signs with (the latest one when the public key was read)."""
        self._load()
        return self._version

    def public_key_pem(self) -> bytes:
        self._load()
        assert self._public is not None
        return self._public

    def sign(self, data: bytes) -> str:
        version = self.key_version
        path = f"{self.mount}/sign/{self.transit_key}"

        def sign(client: hvac.Client) -> Any:
            return client.secrets.transit.sign_data(
                name=self.transit_key, hash_input=base64.b64encode(data).decode("ascii"), key_version=version,
                hash_algorithm="sha2-256", signature_algorithm="pss", mount_point=self.mount)

        answer = self._reader.call(self.ref, sign, api_path=path, action="sign with",
                                   missing=f"no Transit key {self.transit_key!r} at {self.mount}/ (create it with "
                                           f"`bao write -f {self.mount}/keys/{self.transit_key} type=rsa-4096`)")
        signature = str((answer.get("data") or {}).get("signature") or "")
        match = _PREFIX_RE.match(signature)
        if not match:
            raise SigningError(f"{self.ref}: Vault answered without a vault:v<N>: signature")
        if int(match.group(1)) != version:
            raise SigningError(f"{self.ref}: Vault signed with key version {match.group(1)}, not {version}")
        return signature[match.end():]

    def _load(self) -> None:
        if self._public is not None:
            return
        path = f"{self.mount}/keys/{self.transit_key}"

        def read(client: hvac.Client) -> Any:
            return client.secrets.transit.read_key(name=self.transit_key, mount_point=self.mount)

        answer = self._reader.call(self.ref, read, api_path=path,
                                   missing=f"no Transit key {self.transit_key!r} at {self.mount}/ (create it with "
                                           f"`bao write -f {self.mount}/keys/{self.transit_key} type=rsa-4096`)")
        data = answer.get("data") or {}
        key_type = str(data.get("type") or "")
        if key_type not in RSA_TYPES:
            raise SigningError(
                f"{self.ref} is a {key_type or 'typeless'} key: Open Horizon agents verify RSA-PSS only. Create an "
                f"RSA key: `bao write -f {self.mount}/keys/<name> type=rsa-4096`")
        _check_size(RSA_TYPES[key_type], self.ref)
        try:
            version = int(data.get("latest_version") or 0)
            public = str(data["keys"][str(version)]["public_key"]).encode()
        except (KeyError, TypeError, ValueError):
            raise SigningError(f"{self.ref}: Vault returned no public key for the latest key version") from None
        public_key_fingerprint(public)  # parses it: a PEM agents cannot read fails here, not on the nodes
        self._public, self._version = public, version

    def __repr__(self) -> str:
        return f"TransitSigner({self.ref}, key_name={self.key_name!r})"

    __str__ = __repr__
