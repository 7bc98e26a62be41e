"""Approval policy, what an approval covers, the kinds of approval and why a click does not count: shared by the
workers (who ask) and the bot (whose desk, ``bot.approve``, counts the clicks).

    [approvals]                         # defaults for every org; no [approvals] table: nothing needs approval
    approvers = ["S0RELEASE"]           # Slack user ids (U…/W…) and user group ids (S…)
    required = 1                        # distinct approvals needed (N of M)
    allow_requester = false             # four-eyes: the requester's own click does not count
    timeout_minutes = 30                # how long the request stays open before the release expires
    [approvals.orgs.dev]
    required = 0                        # the dev org ships without approval
    [approvals.registries.icr]          # per registry alias …
    required = 2
    [approvals.services.hello]          # … and per catalog service
    approvers = ["U0ALICE", "S0HELLO"]

Rules are merged field by field, most specific last: global, org, registry, service. User groups are resolved when
the button is clicked, so a change of membership in Slack applies at once.

What an approval covers is recorded as a dict and its sha256 (``covers_digest``): the commit, the sha256 of each
arch's expanded service definition and of its exact deployment string, the pushed digests, the signature
fingerprints, the signing key's fingerprint and the deployment policies or patterns the release will move. Publish
recomputes it from what it verified (workers/trust.py) and asks again when it differs; a click on a card whose digest
is not the current one does not count.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edgebot.errors import ConfigError
from edgebot.release import EXPIRED, Release, RequestStatus

_PRINCIPAL_RE = re.compile(r"^[UWS][A-Z0-9]{2,}$")
_FIELDS = {"approvers", "required", "allow_requester", "timeout_minutes"}
DEFAULT_TIMEOUT_MINUTES = 30.0


@dataclass(frozen=True)
class ApprovalPolicy:
    approvers: tuple[str, ...] = ()
    required: int = 0
    allow_requester: bool = False
    timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES

    @property
    def needed(self) -> bool:
        return self.required > 0

    @property
    def timeout_seconds(self) -> float:
        return self.timeout_minutes * 60


@dataclass(frozen=True)
class ApprovalRules:
    rules: dict[tuple[str, str], dict[str, Any]]
    """(scope, name) -> the fields that rule sets; scope is global, org, registry or service."""

    def policy_for(self, *, org: str, service: str, registry: str) -> ApprovalPolicy:
        merged: dict[str, Any] = {}
        for key in (("global", ""), ("org", org), ("registry", registry), ("service", service)):
            merged.update(self.rules.get(key, {}))
        if "approvers" in merged:
            merged["approvers"] = tuple(merged["approvers"])
        return ApprovalPolicy(**merged)


def parse_approvals(table: Mapping[str, Any] | None) -> ApprovalRules:
    """Validate the ``[approvals]`` table; every mistake is a ConfigError that names the key and the fix."""
    rules: dict[tuple[str, str], dict[str, Any]] = {}
    if not table:
        return ApprovalRules(rules)

    def fields(where: str, body: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key not in _FIELDS:
                raise ConfigError(f"[{where}]: unknown key {key!r}; known: {', '.join(sorted(_FIELDS))}")
            if key == "approvers":
                if not isinstance(value, list) or not all(isinstance(p, str) and _PRINCIPAL_RE.match(p)
                                                          for p in value):
                    raise ConfigError(f"[{where}] approvers must be a list of Slack user ids (U…) and user group "
                                      "ids (S…)")
            elif key == "required":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigError(f"[{where}] required must be a whole number ≥ 0 (0: no approval needed)")
            elif key == "allow_requester":
                if not isinstance(value, bool):
                    raise ConfigError(f"[{where}] allow_requester must be true or false")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"[{where}] timeout_minutes must be a number of minutes > 0")
            out[key] = value
        return out

    rules[("global", "")] = fields("approvals", {k: v for k, v in table.items()
                                                 if k not in ("orgs", "registries", "services")})
    for scoped, where, body in scoped_tables(table, "approvals",
                                             (("org", "orgs"), ("registry", "registries"), ("service", "services"))):
        rules[scoped] = fields(where, body)
    return ApprovalRules(rules)


def scoped_tables(table: Mapping[str, Any], section: str, scopes: tuple[tuple[str, str], ...],
                  ) -> Iterator[tuple[tuple[str, str], str, Mapping[str, Any]]]:
    """The per-scope tables of a rules section (``[section.orgs.NAME]`` …) as ((scope, name), where, body), each
    checked to be a table; shared by ``[approvals]`` and ``[access]``."""
    for scope, key in scopes:
        sub = table.get(key) or {}
        if not isinstance(sub, Mapping):
            raise ConfigError(f"[{section}.{key}] must be a table of tables")
        for name, body in sub.items():
            if not isinstance(body, Mapping):
                raise ConfigError(f"[{section}.{key}.{name}] must be a table")
            yield (scope, name), f"{section}.{key}.{name}", body


def check_reachable(rules: ApprovalRules, *, services: dict[str, tuple[str, set[str]]]) -> None:
    """Refuse a policy that can never be met: approvals required but nobody named who may give them.

    ``services`` maps each catalog service to (org, registry aliases).
    """
    for service, (org, registries) in services.items():
        for registry in sorted(registries) or [""]:
            policy = rules.policy_for(org=org, service=service, registry=registry)
            if policy.needed and not policy.approvers:
                raise ConfigError(f"[approvals]: service {service!r} (org {org!r}) needs {policy.required} "
                                  "approval(s) but no approvers are named: set approvers = [\"U…\", \"S…\"]")
            users = [p for p in policy.approvers if not p.startswith("S")]
            if policy.needed and len(users) == len(policy.approvers) and len(set(users)) < policy.required:
                raise ConfigError(f"[approvals]: service {service!r} needs {policy.required} distinct approvals but "
                                  f"only {len(set(users))} approver(s) are named; add approvers or a user group")


# -- what an approval covers ------------------------------------------------------------------------------------

def covers(release: Release, targets: list[str]) -> dict[str, Any]:
    """Everything that ships, as recorded: the approval is for exactly these bytes and these targets — the commit,
    each arch's whole expanded service definition (so every field of the Exchange body: ``requiredServices``,
    ``userInput``, ``public``, ``matchHardware``…), the exact deployment string, digest and signature, the key."""
    return {
        "commit": release.commit_sha,
        "definitions": {arch: hashlib.sha256(json.dumps(release.result(arch).definition, sort_keys=True,
                                                        separators=(",", ":")).encode()).hexdigest()
                        for arch in release.arches},
        "deployments": {arch: hashlib.sha256(release.result(arch).deployment.encode()).hexdigest()
                        for arch in release.arches},
        "digests": {arch: release.result(arch).digest for arch in release.arches},
        "signatures": {arch: release.result(arch).signature_fingerprint for arch in release.arches},
        "key": release.public_key_fingerprint,
        "targets": sorted(targets),
        **({"service_policies": {arch: hashlib.sha256(json.dumps(release.result(arch).service_policy, sort_keys=True,
                                                                 separators=(",", ":")).encode()).hexdigest()
                                 for arch in release.arches}}  # issue 15: the policy is approved with the service
           if any(release.result(arch).service_policy for arch in release.arches) else {}),
        **({"cluster_deployments": {arch: hashlib.sha256(release.result(arch).cluster_deployment.encode()).hexdigest()
                                    for arch in release.arches}}  # the signed operator archive, when there is one
           if any(release.result(arch).cluster_deployment for arch in release.arches) else {}),
    }


def deploy_covers(release: Release, targets: list[str]) -> dict[str, Any]:
    """What approving a deploy (`/edge deploy`, `/edge rollback --to`) covers: the version, the service id of each
    arch in the Exchange, the sha256 of its exact deployment string and its signature's fingerprint (each verified
    against a key stored with the service), and the deployment policies or patterns it moves."""
    arches = [a for a in release.arches if release.result(a).service_id]
    return {
        "deploy": release.version,
        "kind": release.kind,
        "services": {arch: release.result(arch).service_id for arch in arches},
        "deployments": {arch: hashlib.sha256(release.result(arch).deployment.encode()).hexdigest() for arch in arches},
        "signatures": {arch: release.result(arch).signature_fingerprint for arch in arches},
        "targets": sorted(targets),
    }


def covers_of(release: Release, targets: list[str]) -> dict[str, Any]:
    """What the approval gate of this release covers: a publish's (:func:`covers`) or a deploy's."""
    return deploy_covers(release, targets) if release.is_deploy else covers(release, targets)


def covers_digest(covered: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(covered, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def button_value(release: Release) -> str:
    """What the Approve/Reject buttons carry: the release and the digest of what the card shows."""
    digest = release.approval.covers_digest if release.approval else ""
    return f"{release.release_id}:{digest[:32]}"


def parse_button_value(value: str) -> tuple[str, str]:
    release_id, _, digest = (value or "").partition(":")
    return release_id, digest


# -- kinds of approval, and why a click does not count ----------------------------------------------------------

class Kind(StrEnum):
    """What an approval card approves (the value is ``Approval.kind``). The bot's desk keys everything that differs
    between kinds by it (``bot.approve.KINDS``): a new kind is one more member here and one more entry there."""

    PUBLISH = "publish"
    """The gate before publish: ``release.approval``, asked by the workers once every arch is signed (or, for a
    deploy of a version already in the Exchange, once workers/deploy.py verified it; quorum then queues that)."""
    ROLLBACK = "rollback"
    """`/edge rollback` under an approval policy: ``release.rollback_request``, asked by the bot."""


class Refusal(StrEnum):
    """Why a click on an approval card (of any kind) did not count; its author is told exactly this
    (``edgebot.approval_messages.click_refused``) and the audit trail records it."""

    UNKNOWN = "unknown"
    """There is no such release (any more)."""
    ENDED = "ended"
    """The request is over without this click: the release ended, or the request was rejected or expired."""
    NOT_WAITING = "not_waiting"
    """No open request with a card."""
    QUORUM_REACHED = "quorum_reached"
    """The request already has its approvals; what it approved is under way."""
    EXPIRED = "expired"
    """The click came after the deadline (it closes the request at once, before the scheduled expiry runs)."""
    OUTDATED = "outdated"
    """The card shows something else than what the request covers now."""
    REQUESTER = "requester"
    """Four-eyes: who asked may not approve (unless the policy allows it)."""
    NOT_APPROVER = "not_approver"
    ALREADY = "already"
    """A second approval by the same person does not count twice."""


def mark_expired(release: Release) -> None:
    """End a release whose approval request ran out (the scheduled expiry, or a click after the deadline)."""
    approval = release.approval
    assert approval is not None
    minutes = round((approval.expires_at - approval.requested_at) / 60)
    release.state = EXPIRED
    outcome = ("nothing moved" if release.is_deploy else
               "the images stay in the registry, nothing was published")
    release.error = (f"nobody approved it within {minutes} minute(s) ({len(approval.approvals())} of "
                     f"{approval.required} approvals); {outcome}")
    release.event("expired", approvals=len(approval.approvals()), required=approval.required)


def mark_rollback_expired(release: Release) -> None:
    """Close a rollback request that ran out (a click after the deadline; ``workers.gate.expire_rollback`` does the
    same for the scheduled expiry). The fleet stays where it is."""
    request = release.rollback_request
    assert request is not None
    request.status = RequestStatus.EXPIRED
    release.event("rollback_request_expired", approvals=len(request.approvals()), required=request.required)


# -- rollback requests ---------------------------------------------------------------------------------------------

def rollback_covers(release: Release) -> dict[str, Any]:
    """What approving a rollback covers: which release, and every object it moved with the versions it gets back."""
    return {
        "rollback_of": release.release_id,
        "version": release.version,
        "targets": sorted(f"{t['kind']}:{t['name']}:" + ",".join(f"{a}={v}" for a, v in sorted(
            (t.get("previous") or {}).items())) for s in release.rollout for t in s.targets),
    }


def rollback_button_value(release: Release) -> str:
    digest = release.rollback_request.covers_digest if release.rollback_request else ""
    return f"{release.release_id}:{digest[:32]}"
