"""The service policy (``horizon/service.policy.json``): read and checked like ``hzn exchange service publish -p``.

What ``hzn`` does with the file (open-horizon/anax, commit 2f3fa5a, ``cli/exchange/service.go`` ``ServiceAddPolicy``,
called by ``ServicePublish`` after the service is published, for the one arch it publishes):

1. unmarshal it into ``exchangecommon.ServicePolicy`` (``label``, ``description``, ``properties``, ``constraints``;
   other fields are ignored, as Go's ``json.Unmarshal`` ignores them);
2. ``ExternalPolicy.ValidateAndNormalize`` (``externalpolicy/external_policy.go``): every property as
   ``PropertyList.Validate`` checks it (``externalpolicy/property_list.go``: a name and a non-null value, a declared
   type among six, a value that fits it, a ``version`` that ``IsVersionString`` accepts),
   ``openhorizon.allowPrivileged`` a boolean (the strings ``"true"``/``"false"`` are turned into one), and the
   constraints through the constraint language plugin (here ``edgebot.constraints``: what the agbot refuses raises
   ``ConstraintError``);
3. add the built-in service properties, replacing any the file sets (``openhorizon.service.url``, ``.name``,
   ``.org``, ``.version``, ``.arch``: ``externalpolicy/builtin_properties.go``), and validate again;
4. ``PUT orgs/{org}/services/{url}_{version}_{arch}/policy`` with that body, expecting 201.

edgebot reads the file once in prepare (before anything is built: an invalid policy is refused naming the file and
the problem), keeps one body per arch in the sealed record, and publish PUTs it for each arch after the service.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebot.constraints import ConstraintError, compile_constraints
from edgebot.errors import StepFailed
from edgebot.release import Release
from workers.definition import ServiceDefinition
from workers.exchange import ExchangeClient
from workers.git_auth import git_auth_for
from workers.source import read_file_at

if TYPE_CHECKING:
    from workers.context import WorkerContext

POLICY_FILE = "service.policy.json"
"""The file name ``hzn dev service new`` creates in ``horizon/`` (``[services.X] service_policy`` overrides it)."""

TYPES = ("string", "version", "boolean", "int", "float", "list of strings")
"""anax ``isValidPropertyType`` (and exchange-api ``PutServicePolicyRequest.getAnyProblem``), besides undeclared."""

PRIVILEGED = "openhorizon.allowPrivileged"
BUILT_IN = ("openhorizon.service.url", "openhorizon.service.name", "openhorizon.service.org",
            "openhorizon.service.version", "openhorizon.service.arch")


class ServicePolicyError(ValueError):
    """A service policy edgebot will not publish; ``str()`` names the file and the problem."""


def _go(value: Any) -> str:
    """A value the way Go's ``%v`` shows it in anax's messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def is_version_string(text: str) -> bool:
    """anax ``externalpolicy.IsVersionString``: one to three dot-separated decimal numbers, no leading zeros (or
    ``INFINITY``)."""
    if text == "INFINITY":
        return True
    parts = text.split(".")
    if not 1 <= len(parts) <= 3:
        return False
    return all(p and p.isascii() and p.isdigit() and not (len(p) > 1 and p[0] == "0") for p in parts)


def _property_problem(prop: Any) -> str:
    """``PropertyList.Validate`` for one property: anax's reason, or ""."""
    if not isinstance(prop, dict):
        return f"a property must be a JSON object with name, value and type, not {_go(prop)}"
    name, value, declared = prop.get("name"), prop.get("value"), prop.get("type", "")
    if not isinstance(name, str) or not isinstance(declared, str):
        return f"the name and type of property {_go(prop)} must be strings"
    if name == "" or value is None:
        return f"Property must include a name and a value: {_go(prop)}"
    if declared not in (*TYPES, ""):
        return (f"Property {name} has invalid property type {declared}. Allowed property types are: version, "
                "string, int, boolean, float, and list of strings.")
    if isinstance(value, bool):
        if declared not in ("boolean", ""):
            return f"Property value is of type bool, expected type {declared}"
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return f"Value {value} of property {name} is not a number"
        if declared == "int" and float(value) != int(value):
            return f"Value {_go(value)} of property {name} is not an integer type"
        if declared not in ("int", "float", ""):
            return f"Property value is of type float64, expected type {declared}"
    elif isinstance(value, str):
        if declared == "version" and not is_version_string(value):
            return f"Property {name} with value {value} is not a valid verion string"
        if declared not in ("string", "version", "list of strings", ""):
            return f"Property value is of type string, expected type {declared}"
    else:
        kind = "map[string]interface {}" if isinstance(value, dict) else "[]interface {}"
        return f"Property {name} has invalid value type {kind}"
    return ""


def read_policy(text: str, *, file_name: str) -> dict[str, Any]:
    """The file's policy (``label``, ``description``, ``properties``, ``constraints``), checked as ``hzn`` checks it;
    :class:`ServicePolicyError` naming ``file_name`` and the problem otherwise."""
    def refuse(problem: str) -> ServicePolicyError:
        return ServicePolicyError(f"{file_name}: {problem}. Nothing was built; fix the file and publish again.")

    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise refuse(f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise refuse("the policy must be a JSON object with properties and constraints")
    for key in ("label", "description"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise refuse(f"{key} must be a string")
    properties = raw.get("properties") or []
    if not isinstance(properties, list):
        raise refuse("properties must be a list of {\"name\", \"value\", \"type\"} objects")
    for prop in properties:
        problem = _property_problem(prop)
        if problem:
            raise refuse(f"properties contains an invalid property: {problem}")
    properties = [dict(p) for p in properties]
    for prop in properties:  # ValidateAndNormalize: "true"/"false" become a boolean, anything else is refused
        if prop["name"] == PRIVILEGED and not isinstance(prop["value"], bool):
            if prop["value"] not in ("true", "false"):
                raise refuse(f"Property {PRIVILEGED} must have a boolean value (true or false)")
            prop["value"] = prop["value"] == "true"
    constraints = raw.get("constraints") or []
    if isinstance(constraints, str):  # ConstraintExpression is a []string: a bare string fails to unmarshal
        raise refuse("constraints must be a list of strings, e.g. [\"purpose == test\"]")
    if not isinstance(constraints, list):
        raise refuse("constraints must be a list of strings")
    try:
        compile_constraints(constraints)
    except ConstraintError as exc:
        raise refuse(f"the agbot would refuse it: {exc}") from None
    return {"label": raw.get("label") or "", "description": raw.get("description") or "",
            "properties": properties, "constraints": list(constraints)}


def exchange_body(policy: dict[str, Any], *, url: str, org: str, version: str, arch: str) -> dict[str, Any]:
    """The body of ``PUT orgs/{org}/services/{id}/policy`` for one arch: the file's policy with the built-in service
    properties set (replacing any the file has), as ``hzn`` sends it (exchange-api ``PutServicePolicyRequest``)."""
    values = dict(zip(BUILT_IN, (url, url, org, version, arch), strict=True))
    kept = [p for p in policy.get("properties") or [] if p.get("name") not in values]
    properties = kept + [{"name": name, "value": value} for name, value in values.items()]
    body: dict[str, Any] = {"properties": properties, "constraints": list(policy.get("constraints") or [])}
    if policy.get("label"):
        body["label"] = policy["label"]
    if policy.get("description"):
        body["description"] = policy["description"]
    return body


def same_policy(stored: dict[str, Any] | None, body: dict[str, Any]) -> bool:
    """Whether the Exchange's policy (``GET …/policy``) is the one ``body`` would write (lastUpdated aside). The
    Exchange may answer an undeclared type as ``"type": null`` and a number as a float, and stores the label as the
    description when there is none (``PutServicePolicyRequest.toServicePolicyRow``)."""
    if stored is None:
        return False

    def value(v: Any) -> Any:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    def key(props: Any) -> list[str]:
        return sorted(json.dumps({k: value(v) for k, v in p.items() if v is not None}, sort_keys=True)
                      for p in props or [] if isinstance(p, dict))

    return (key(stored.get("properties")) == key(body.get("properties"))
            and list(stored.get("constraints") or []) == list(body.get("constraints") or [])
            and (stored.get("label") or "") == (body.get("label") or "")
            and (stored.get("description") or "") == (body.get("description") or body.get("label") or ""))


def for_release(ctx: WorkerContext, release: Release, sha: str,
                definitions: Mapping[str, ServiceDefinition]) -> dict[str, dict[str, Any]]:
    """prepare: arch -> the policy body to publish for it, from the service's policy file at ``sha`` ({} when the
    source has none). An invalid file fails the release (StepFailed naming the file and the problem)."""
    service = ctx.config.services[release.service]
    path = f"{service.horizon_dir.strip('/')}/{service.service_policy}"
    cache = Path(ctx.config.settings.source_cache_dir)
    text = read_file_at(service.source, sha, path, cache, max_bytes=ctx.config.settings.source_file_max_bytes,
                        auth=git_auth_for(service, ctx.resolver))
    if text is None:
        return {}
    try:
        policy = read_policy(text, file_name=f"{path} at {sha[:12]}")
    except ServicePolicyError as exc:
        raise StepFailed(f"the service policy is not publishable: {exc}") from None
    return {arch: exchange_body(policy, url=d.url, org=release.org, version=release.version, arch=arch)
            for arch, d in definitions.items()}


def publish(client: ExchangeClient, org: str, service_id: str, body: dict[str, Any]) -> str:
    """After the service: PUT its policy unless the Exchange holds the same one. Returns what was done."""
    if not body:
        return ""
    if same_policy(client.get_service_policy(org, service_id), body):
        return "policy unchanged"
    client.put_service_policy(org, service_id, body)
    return "policy published"
