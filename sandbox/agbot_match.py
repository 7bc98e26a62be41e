"""The simulated agbot's policy match for one node, one deployment policy, one service version.

anax (commit 2f3fa5a) ``agreementbot/agreementworker.go`` (the non-pattern case of the workload loop): for each
version of the deployment policy's service, by priority, the agbot reads that version's service policy
(``GetServicePolicyWithId`` for ``{org}/{url}_{version}_{arch}``), adds the built-in service properties
(``externalpolicy.CreateServiceBuiltInPolicy`` via ``compcheck.AddDefaultPropertiesToServicePolicy``: url, name, org,
version, arch) and checks the node's policy against the deployment policy merged with it
(``checkPolicyCompatibility``; ``ExternalPolicy.MergeWith(…, false)``: both constraint lists, properties of both with
the first of a name kept). The node's properties must satisfy every merged constraint and the merged properties the
node's constraints. A version whose service policy does not fit is not proposed; a policy that fits no version makes
no agreement. Constraints the agbot cannot read match nothing. The constraint language is ``edgebot.constraints``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgebot.constraints import ConstraintError, compatible
from sandbox.exchange_routes import ExchangeState
from sandbox.exchange_rules import form_id
from sandbox.exchange_service_policy import stored_policy


def _merged(*lists: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``PropertyList.MergeWith(…, false)``: the first property of each name wins."""
    seen: set[str] = set()
    out = []
    for props in lists:
        for prop in props:
            name = str(prop.get("name"))
            if name not in seen:
                seen.add(name)
                out.append(prop)
    return out


def version_fits(state: ExchangeState, policy: dict[str, Any], node_arch: str, details: dict[str, Any],
                 version: str) -> bool:
    """Whether the agbot would propose ``version`` of the policy's service to the node (policy match only)."""
    service = policy.get("service") or {}
    svc_org, url = str(service.get("org") or ""), str(service.get("name") or "")
    svc_policy = stored_policy(state, svc_org, form_id(url, version, node_arch)) or {}
    built_in = [{"name": "openhorizon.service.url", "value": url}, {"name": "openhorizon.service.name", "value": url},
                {"name": "openhorizon.service.org", "value": svc_org},
                {"name": "openhorizon.service.version", "value": version, "type": "version"},
                {"name": "openhorizon.service.arch", "value": node_arch}]
    properties = _merged(policy.get("properties") or [], svc_policy.get("properties") or [], built_in)
    constraints = [*(policy.get("constraints") or []), *(svc_policy.get("constraints") or [])]
    try:
        return compatible(constraints, properties, details.get("constraints") or [], details.get("properties") or [])
    except ConstraintError:
        return False


def fitting_versions(state: ExchangeState, policy: dict[str, Any], node_arch: str, details: dict[str, Any],
                     versions: Iterable[str]) -> tuple[str, ...]:
    """The policy's versions (in priority order) the agbot would propose to the node."""
    return tuple(v for v in versions if version_fits(state, policy, node_arch, details, v))
