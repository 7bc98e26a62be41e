"""The Exchange stand-in's service policy routes: ``GET/PUT/DELETE orgs/{org}/services/{service}/policy``.

Modelled on exchange-api (commit dfaabdc) ``route/service/Policy.scala`` and the classes it uses:

* ``PUT`` (the owner or an org admin: ``exchAuth(TService(...), Access.WRITE)``) reads the body as
  ``PutServicePolicyRequest(label, description, properties: List[OneProperty], constraints: List[String])``: a body
  that does not fit the case class is a 400, a ``type`` outside ``string, int, float, boolean, list of strings,
  version`` is a 400 ``property.type.must.be`` (``getAnyProblem``); nothing else is checked — the constraints are
  stored as text, never parsed (that is the agbot's job). It upserts the row (``ServicePolicyRow.upsert``; the
  description defaults to the label) and answers 201 ``policy.added.or.updated``; a service that does not exist is a
  404 ``service.not.found``.
* ``GET`` (read access to the service: public services of other orgs too) answers 200 with
  ``ServicePolicy(label, description, properties, constraints, lastUpdated)``, or 404 ``not.found`` without a row.
* ``DELETE`` answers 204, or 404 ``service.policy.not.found`` without a row.
* The row's foreign key to the service cascades (``table/service/policy/ServicePolicies.scala``: ``onDelete =
  ForeignKeyAction.Cascade``): deleting the service deletes its policy (``forget_service``).
"""

from __future__ import annotations

import copy
from typing import Any

from sandbox.exchange_routes import _SVC, ROUTES, Call, ExchangeState, Handler, Reply, _service, now, ok
from sandbox.exchange_rules import MESSAGES, ApiError, bad_input, not_found

TYPES = ("string", "int", "float", "boolean", "list of strings", "version")
"""exchange-api ``PutServicePolicyRequest.getAnyProblem`` ``validTypes``, in its order (the message lists them)."""

MESSAGES.update({
    "policy.added.or.updated": ("policy added or updated", "Die Richtlinie wurde hinzugefügt oder aktualisiert"),
    "service.policy.not.found": ("policy for service '{0}' not found",
                                 "Die Richtlinie für den Service '{0}' wurde nicht gefunden"),
    "service.policy.deleted": ("service policy deleted", "Die Servicerichtlinie wurde gelöscht"),
    "property.type.must.be": ("The properties.type value '{0}' must be 1 of: {1}",
                              "Der Wert '{0}' für 'properties.type' muss einer der folgenden sein: {1}"),
})

def _table(state: ExchangeState) -> dict[tuple[str, str], dict[str, Any]]:
    """(org, service id) -> the stored row (``ExchangeState.service_policies``, also what the simulated agbot reads)."""
    return state.service_policies


def _request(body: dict[str, Any]) -> dict[str, Any]:
    """The body as ``PutServicePolicyRequest``: what does not fit the case class is a 400, as the real server's
    JSON reader answers it."""
    for key in ("label", "description"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise bad_input("error.parsing.input.json", f"{key} must be a string")
    properties = body.get("properties")
    if properties is None:
        properties = []
    if not isinstance(properties, list):
        raise bad_input("error.parsing.input.json", "properties must be a list")
    stored = []
    for prop in properties:
        if not isinstance(prop, dict) or not isinstance(prop.get("name"), str):
            raise bad_input("error.parsing.input.json", "a property needs a string name")
        declared = prop.get("type")
        if declared is not None and not isinstance(declared, str):
            raise bad_input("error.parsing.input.json", "properties.type must be a string")
        if declared is not None and declared not in TYPES:
            raise ApiError(400, "invalid-input", "property.type.must.be", declared, ", ".join(TYPES))
        row = {"name": prop["name"], "value": copy.deepcopy(prop.get("value"))}
        if declared is not None:
            row["type"] = declared
        stored.append(row)
    constraints = body.get("constraints")
    if constraints is None:
        constraints = []
    if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
        raise bad_input("error.parsing.input.json", "constraints must be a list of strings")
    label = body.get("label") or ""
    return {"label": label, "description": body.get("description") or label, "properties": stored,
            "constraints": list(constraints)}


def policy_get(state: ExchangeState, c: Call) -> Reply:
    org, sid, _ = _service(state, c)
    row = _table(state).get((org, sid))
    if row is None:
        raise not_found()
    return Reply(200, copy.deepcopy(row))


def policy_put(state: ExchangeState, c: Call) -> Reply:
    org, sid, _ = _service(state, c, write="UPDATE")
    _table(state)[(org, sid)] = {**_request(c.json()), "lastUpdated": now()}
    return ok(201, "policy.added.or.updated")


def policy_delete(state: ExchangeState, c: Call) -> Reply:
    org, sid, _ = _service(state, c, write="DELETE")
    if _table(state).pop((org, sid), None) is None:
        raise not_found("service.policy.not.found", f"{org}/{sid}")
    return Reply(204)


def forget_service(state: ExchangeState, org: str, sid: str) -> None:
    """The service row is gone: its policy row goes with it (the foreign key cascades)."""
    _table(state).pop((org, sid), None)


def stored_policy(state: ExchangeState, org: str, sid: str) -> dict[str, Any] | None:
    """The stored policy of a service (for the simulated agbot and tests), or None."""
    row = _table(state).get((org, sid))
    return copy.deepcopy(row) if row is not None else None


HANDLERS: dict[str, Handler] = {"GET": policy_get, "PUT": policy_put, "DELETE": policy_delete}
ROUTE: tuple[str, ...] = (*_SVC, "policy")
ROUTES[:] = [(pattern, handlers) for pattern, handlers in ROUTES if pattern != ROUTE] + [(ROUTE, HANDLERS)]
