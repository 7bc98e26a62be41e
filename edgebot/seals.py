"""Seals: what the bot decided and what the publish worker read, tamper-evident for anyone else with Redis access.

Every role writes the release record through the same Redis, and a build worker runs repository-controlled
Dockerfiles next to a root-equivalent Docker daemon: treat it as compromised. So the publish worker, which signs and
publishes, acts on a record field only if it wrote that field itself or it carries a seal of a role that holds the
seal key (``[trust] seal_key``: the bot and the publish workers, never the build workers):

* ``intake``   (bot)       who asked for what: release id, channel, requester, service, version, org, registry,
                           arches and flags; so a forged or altered release is refused.
* ``source``   (publish)   what ``prepare`` read from git: the commit and each arch's expanded definition; so a
                           deployment cannot be swapped by editing the definition in the record.
* ``decision`` (bot)       one approver's decision: who, through which approver entry of the policy (the user or
                           the user group the bot resolved at click time), approve or reject, and exactly which
                           coverage digest the card showed; so a quorum cannot be forged.

A seal is HMAC-SHA256 over the purpose and the canonical JSON of its payload (sorted keys, no spaces), written as
``hmac-sha256:<hex>``. The checks themselves live with their users (workers/trust.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgebot.release import Decision, Release

PREFIX = "hmac-sha256:"
MIN_KEY_BYTES = 32


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the seal key must have at least {MIN_KEY_BYTES} bytes (it has {len(key)}): generate "
                             "one with `openssl rand -hex 32`")
        self._key = key

    @classmethod
    def from_secret(cls, text: str) -> Sealer:
        return cls(text.strip().encode())

    def seal(self, purpose: str, payload: Mapping[str, Any]) -> str:
        message = purpose.encode() + b"\n" + canonical(payload)
        return PREFIX + hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def valid(self, purpose: str, payload: Mapping[str, Any], seal: str) -> bool:
        return bool(seal) and hmac.compare_digest(self.seal(purpose, payload), seal)

    def __repr__(self) -> str:  # never the key
        return "Sealer(<key>)"


def canonical(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def digest(value: Any) -> str:
    """sha256 of a JSON value's canonical form (a definition, say), for payloads that must stay small."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# -- payloads ---------------------------------------------------------------------------------------------------------

def intake_payload(release: Release) -> dict[str, Any]:
    payload = {
        "release_id": release.release_id, "team_id": release.team_id, "channel_id": release.channel_id,
        "user_id": release.user_id, "service": release.service, "version": release.version, "org": release.org,
        "registry": release.registry, "arches": list(release.arches), "dry_run": release.dry_run,
        "overwrite": release.overwrite, "rollout_only": list(release.rollout_only),
    }
    if release.kind != "publish":  # a deploy sealed as such (a publish's payload is unchanged: older seals verify)
        payload["kind"] = release.kind
    if release.public is not None:  # --public / --private: sealed when given (older seals verify unchanged)
        payload["public"] = release.public
    return payload


def source_payload(release: Release) -> dict[str, Any]:
    return {
        "release_id": release.release_id, "commit": release.commit_sha,
        "definitions": {arch: digest(release.result(arch).definition) for arch in release.arches},
        "built": {arch: dict(release.result(arch).built_containers) for arch in release.arches},
        "tags": {arch: release.result(arch).image_tag for arch in release.arches},
        **({"service_policies": {arch: digest(release.result(arch).service_policy) for arch in release.arches}}
           if any(release.result(arch).service_policy for arch in release.arches) else {}),
        **({"external": {arch: dict(release.result(arch).external_pins) for arch in release.arches}}
           if any(release.result(arch).external_pins for arch in release.arches) else {}),
        **({"cluster": {arch: {"archive": hashlib.sha256(release.result(arch).cluster_archive.encode()).hexdigest(),
                               "pins": dict(release.result(arch).cluster_pins)} for arch in release.arches}}
           if any(release.result(arch).cluster_archive or release.result(arch).cluster_pins
                  for arch in release.arches) else {}),
    }


def decision_payload(release_id: str, kind: str, round_: int, decision: Decision) -> dict[str, Any]:
    return {
        "release_id": release_id, "kind": kind, "round": round_, "user_id": decision.user_id, "via": decision.via,
        "outcome": decision.outcome, "covers_digest": decision.covers_digest, "at": decision.at,
    }
