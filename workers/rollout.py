"""Rollout bodies: how a deployment policy or pattern is changed to move, settle or roll back a service version.

Pure functions over the object as the Exchange returns it. Only the ``serviceVersions`` of the entries that deploy the
service (``service`` of a policy; the matching ``services[]`` entries of a pattern) change; everything else in the
body stays as it was (a pattern can list other services: they are left alone).

- move: the new version first (priority 1), the version that was first becomes the fallback (priority 2, with
  retries), so Open Horizon's own per-node fallback still works;
- settle (only when ``rollout_drop_fallback`` is on, never on a pattern): once the stage is healthy, only the new
  version (the fallback dropped);
- roll back: only the previous version again.

Every body is checked with the agbot's own rule (:func:`agbot_refusal`, anax ``ServiceRef.Validate``) before it is
written: the Exchange stores a policy the agbot drops, and then nothing moves and nobody is told. The write itself is a
PATCH of :data:`PATCH_ATTRIBUTE` only, so a human's concurrent edit of the other attributes survives.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgebot.config import RolloutStageConfig, ServiceConfig
from edgebot.fleet_summary import Target
from edgebot.release import Release

READ_ONLY_FIELDS = ("owner", "created", "lastUpdated")
"""Fields the Exchange adds to what it stores; not part of a PUT body."""
PATCH_ATTRIBUTE = {"policy": "service", "pattern": "services"}
"""The one attribute a rollout changes (exchange-api ``PatchBusinessPolicyRequest`` / ``PatchPatternRequest``)."""


class RolloutRefused(Exception):
    """The object cannot be moved to the new version; the message says why and what to do."""


@dataclass(frozen=True)
class Moved:
    body: dict[str, Any]
    previous: dict[str, str]
    """arch (``*`` for a policy on every arch) -> the version that was priority 1 before."""
    changed: bool


def entries(kind: str, body: dict[str, Any], org: str, url: str) -> list[tuple[str, dict[str, Any]]]:
    """(arch, the dict holding ``serviceVersions``) for every place of ``body`` that deploys ``org/url``."""
    if kind == "policy":
        service = body.get("service") or {}
        if service.get("name") == url and service.get("org") == org:
            return [(str(service.get("arch") or "*"), service)]
        return []
    return [(str(s.get("serviceArch") or "*"), s) for s in body.get("services") or []
            if s.get("serviceUrl") == url and s.get("serviceOrgid") == org]


def ordered_versions(holder: dict[str, Any]) -> list[dict[str, Any]]:
    """``serviceVersions`` by priority (``priority_value`` ascending; entries without one last, in list order)."""
    def rank(indexed: tuple[int, dict[str, Any]]) -> tuple[float, int]:
        index, entry = indexed
        priority = entry.get("priority")
        value = priority.get("priority_value") if isinstance(priority, dict) else None
        return (float(value) if isinstance(value, int | float) else math.inf, index)

    return [entry for _, entry in sorted(enumerate(holder.get("serviceVersions") or []), key=rank)]


def pinned(kind: str, body: dict[str, Any], org: str, url: str) -> dict[str, list[str]]:
    """arch -> the versions pinned for ``org/url``, by priority (what a verify after a PUT compares)."""
    return {arch: [str(v.get("version")) for v in ordered_versions(holder)]
            for arch, holder in entries(kind, body, org, url)}


def covered_arches(kind: str, body: dict[str, Any], org: str, url: str, catalog_arches: Iterable[str]) -> set[str]:
    """The arches the object deploys ``org/url`` to; a policy on ``*`` covers every arch the catalog builds."""
    covered: set[str] = set()
    for arch, _ in entries(kind, body, org, url):
        covered |= set(catalog_arches) if arch in ("*", "") else {arch}
    return covered


def put_body(body: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in body.items() if k not in READ_ONLY_FIELDS}


def _priority(value: int, retries: int, retry_durations: int) -> dict[str, int]:
    return {"priority_value": value, "retries": retries, "retry_durations": retry_durations}


def move(target: Target, body: dict[str, Any], *, org: str, url: str, version: str, published_arches: Iterable[str],
         catalog_arches: Iterable[str], retries: int, retry_durations: int) -> Moved:
    """The body with ``version`` at priority 1 and the previous first version at priority 2 (idempotent)."""
    places = entries(target.kind, body, org, url)
    if not places:
        raise RolloutRefused(f"{target.kind} `{target.name}` does not deploy {org}/{url}: check the rollout "
                             "stages of the service in edgebot's catalog")
    missing = sorted(covered_arches(target.kind, body, org, url, catalog_arches) - set(published_arches))
    if missing:
        raise RolloutRefused(f"{target.kind} `{target.name}` deploys {url} on {', '.join(missing)}, but {version} "
                             f"was not published for {', '.join(missing)}: publish {version} for "
                             f"{'every arch' if len(missing) > 1 else missing[0]} first (no node was moved)")
    new_body = put_body(body)
    previous: dict[str, str] = {}
    changed = False
    for arch, holder in entries(target.kind, new_body, org, url):
        versions = ordered_versions(holder)
        if not versions:
            raise RolloutRefused(f"{target.kind} `{target.name}` pins no version of {url} for {arch}")
        first = versions[0]
        if first.get("version") == version:  # already moved (a retried job): keep it, remember the fallback
            if len(versions) > 1:
                previous[arch] = str(versions[1].get("version"))
            continue
        previous[arch] = str(first.get("version"))
        newest = {k: copy.deepcopy(v) for k, v in first.items()
                  if k not in ("version", "priority", "deployment_overrides", "deployment_overrides_signature")}
        newest.update(version=version, priority=_priority(1, retries, retry_durations))
        fallback = {**copy.deepcopy(first), "priority": _priority(2, retries, retry_durations)}
        holder["serviceVersions"] = [newest, fallback]
        changed = True
    return Moved(new_body, previous, changed)


def keep_only(target: Target, body: dict[str, Any], *, org: str, url: str, versions: dict[str, str],
              retries: int = 0, retry_durations: int = 0) -> tuple[dict[str, Any], bool]:
    """The body pinning exactly ``versions[arch]`` (priority 1, no fallback) where it deploys ``org/url``; used to
    settle a healthy stage (the new version) and to roll back (the previous one). Arches not in ``versions`` stay.
    The priority kept is one the agbot accepts: ``retries``/``retry_durations`` fill a priority that lacks them; with
    none given, the priority is dropped (a single version needs none)."""
    new_body = put_body(body)
    changed = False
    for arch, holder in entries(target.kind, new_body, org, url):
        want = versions.get(arch)
        if want is None:
            continue
        current = ordered_versions(holder)
        if [v.get("version") for v in current] == [want]:
            continue
        template = next((v for v in current if v.get("version") == want), None)
        entry: dict[str, Any] = copy.deepcopy(template) if template is not None else {"version": want}
        priority = entry.get("priority")
        priority = {**(priority if isinstance(priority, dict) else {}), "priority_value": 1}
        if not priority.get("retries") or not priority.get("retry_durations"):
            priority.update(retries=retries, retry_durations=retry_durations)
        if agbot_priority_problem([{"version": want, "priority": priority}]):
            entry.pop("priority", None)  # no priority at all: valid for the agbot, and one version needs none
        else:
            entry["priority"] = priority
        holder["serviceVersions"] = [entry]
        changed = True
    return new_body, changed


def agbot_priority_problem(versions: list[dict[str, Any]]) -> str:
    """Why the agreement bot would drop these ``serviceVersions`` ("" when it accepts them): anax
    ``businesspolicy/business_policy.go`` ``ServiceRef.Validate``. A non-zero ``priority_value`` needs non-zero
    ``retries`` and ``retry_durations``; a zero or absent one needs ``retries``, ``retry_durations`` and
    ``verified_durations`` all zero."""
    for entry in versions:
        priority = entry.get("priority")
        if priority is None:
            continue
        if not isinstance(priority, dict):
            return f"version {entry.get('version')}: priority is not an object"
        try:
            value, retries, durations, verified = (int(priority.get(k) or 0) for k in (
                "priority_value", "retries", "retry_durations", "verified_durations"))
        except (TypeError, ValueError):
            return f"version {entry.get('version')}: priority fields must be integers"
        if value != 0 and (retries == 0 or durations == 0):
            return (f"version {entry.get('version')}: priority_value {value} with retries {retries} and "
                    f"retry_durations {durations} (both must be non-zero)")
        if value == 0 and (retries or durations or verified):
            return (f"version {entry.get('version')}: no priority_value, but retries/retry_durations/"
                    "verified_durations are set (all must be zero)")
    return ""


def agbot_refusal(kind: str, body: dict[str, Any], org: str, url: str) -> str:
    """Why the agbot would drop ``body`` as far as ``org/url`` goes ("" when it would accept it)."""
    for arch, holder in entries(kind, body, org, url):
        problem = agbot_priority_problem(list(holder.get("serviceVersions") or []))
        if problem:
            return f"{url} on {arch}: {problem}"
    return ""


def target_of(kind: str, name: str, body: dict[str, Any], org: str, url: str) -> Target:
    """What membership needs of a moved object, kept in the release so polls read no policy."""
    if kind == "policy":
        service = body.get("service") or {}
        properties = tuple(p for p in body.get("properties") or () if isinstance(p, dict))
        return Target(kind, name, str(service.get("arch") or "*"), tuple(body.get("constraints") or ()), properties)
    return Target(kind, name)


def stages_of(service: ServiceConfig, release: Release) -> tuple[RolloutStageConfig, ...]:
    """The catalog's stages, or one stage "override" with only the objects ``--policy`` selected."""
    if not release.rollout_only:
        return service.rollout
    chosen = tuple(t for stage in service.rollout for t in stage.targets if t.name in release.rollout_only)
    return (RolloutStageConfig("override", chosen),)
