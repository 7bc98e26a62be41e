"""The Exchange's request bodies for deployment policies and patterns, as its OpenAPI document defines them.

The schemas below are copied verbatim (``$ref`` shortened to the schema's name) from exchange-api
``docs/openapi-3-developer.json`` (2.154.0, commit dfaabdc, sha256 ``fb364767…``; the copy in the shared reference
notes). That document is generated from Scala annotations, and :func:`validate` reads four of its artefacts the way the
server behaves, not as written:

* ``jsonFormats`` (json4s's ``Formats`` member of the Scala request class) is listed as required; no client sends it
  and the server never reads it from the body: it is dropped;
* a field typed ``{"type": "object"}`` with nothing else (``OneProperty.value``, ``OneUserInputValue.value``: Scala
  ``Any``) takes any JSON value;
* ``additionalProperties: {"type": "object"}`` (``priority``, ``nodeHealth``, ``dataVerification``: Scala
  ``Map[String, Any]``) takes any JSON value per key;
* a top-level key the request class does not define is refused here, naming it (the server would ignore it silently:
  a misspelt ``constraint`` would deploy the service everywhere).

No dependency: the subset of JSON Schema these schemas use (type, required, properties, items, additionalProperties,
$ref) is checked by hand; ``tests/test_rollout.py`` checks the same bodies with the ``jsonschema`` package too.
"""

from __future__ import annotations

from typing import Any

BODY = {"policy": "PostPutBusinessPolicyRequest", "pattern": "PostPutPatternRequest"}
"""The request schema of each kind of deployment object (POST/PUT ``orgs/{org}/business/policies/{name}`` and
``orgs/{org}/patterns/{name}``)."""

SCHEMAS: dict[str, dict[str, Any]] = {
    'BService': {'required': ['arch', 'name', 'org', 'serviceVersions'],
     'type': 'object',
     'properties': {'name': {'type': 'string'},
                    'org': {'type': 'string'},
                    'arch': {'type': 'string'},
                    'serviceVersions': {'type': 'array', 'items': {'$ref': 'BServiceVersions'}},
                    'nodeHealth': {'type': 'object', 'additionalProperties': {'type': 'object'}},
                    'clusterNamespace': {'type': 'string'}}},
    'BServiceVersions': {'required': ['version'],
     'type': 'object',
     'properties': {'version': {'type': 'string'},
                    'priority': {'type': 'object', 'additionalProperties': {'type': 'object'}},
                    'upgradePolicy': {'type': 'object', 'additionalProperties': {'type': 'string'}}}},
    'OneProperty': {'required': ['name', 'value'],
     'type': 'object',
     'properties': {'name': {'type': 'string'}, 'type': {'type': 'string'}, 'value': {'type': 'object'}}},
    'OneSecretBindingService': {'required': ['secrets', 'serviceOrgid', 'serviceUrl'],
     'type': 'object',
     'properties': {'serviceOrgid': {'type': 'string'},
                    'serviceUrl': {'type': 'string'},
                    'serviceArch': {'type': 'string'},
                    'serviceVersionRange': {'type': 'string'},
                    'secrets': {'type': 'array',
                                'items': {'type': 'object', 'additionalProperties': {'type': 'string'}}},
                    'enableNodeLevelSecrets': {'type': 'boolean', 'default': False}}},
    'OneUserInputService': {'required': ['inputs', 'serviceOrgid', 'serviceUrl'],
     'type': 'object',
     'properties': {'serviceOrgid': {'type': 'string'},
                    'serviceUrl': {'type': 'string'},
                    'serviceArch': {'type': 'string'},
                    'serviceVersionRange': {'type': 'string'},
                    'inputs': {'type': 'array', 'items': {'$ref': 'OneUserInputValue'}}}},
    'OneUserInputValue': {'required': ['name', 'value'],
     'type': 'object',
     'properties': {'name': {'type': 'string'}, 'value': {'type': 'object'}}},
    'PServiceVersions': {'required': ['version'],
     'type': 'object',
     'properties': {'version': {'type': 'string'},
                    'deployment_overrides': {'type': 'string'},
                    'deployment_overrides_signature': {'type': 'string'},
                    'priority': {'type': 'object', 'additionalProperties': {'type': 'object'}},
                    'upgradePolicy': {'type': 'object', 'additionalProperties': {'type': 'string'}}}},
    'PServices': {'required': ['serviceArch', 'serviceOrgid', 'serviceUrl', 'serviceVersions'],
     'type': 'object',
     'properties': {'serviceUrl': {'type': 'string'},
                    'serviceOrgid': {'type': 'string'},
                    'serviceArch': {'type': 'string'},
                    'agreementLess': {'type': 'boolean'},
                    'serviceVersions': {'type': 'array', 'items': {'$ref': 'PServiceVersions'}},
                    'dataVerification': {'type': 'object', 'additionalProperties': {'type': 'object'}},
                    'nodeHealth': {'type': 'object', 'additionalProperties': {'type': 'object'}}}},
    'PostPutBusinessPolicyRequest': {'required': ['jsonFormats', 'label', 'service'],
     'type': 'object',
     'properties': {'description': {'type': 'string'},
                    'label': {'type': 'string'},
                    'secretBinding': {'type': 'array', 'items': {'$ref': 'OneSecretBindingService'}},
                    'service': {'$ref': 'BService'},
                    'properties': {'type': 'array', 'items': {'$ref': 'OneProperty'}},
                    'constraints': {'type': 'array', 'items': {'type': 'string'}},
                    'jsonFormats': {'$ref': 'Formats'},
                    'userInput': {'type': 'array', 'items': {'$ref': 'OneUserInputService'}}}},
    'PostPutPatternRequest': {'required': ['jsonFormats', 'label', 'services'],
     'type': 'object',
     'properties': {'clusterNamespace': {'type': 'string'},
                    'services': {'type': 'array', 'items': {'$ref': 'PServices'}},
                    'description': {'type': 'string'},
                    'label': {'type': 'string'},
                    'secretBinding': {'type': 'array', 'items': {'$ref': 'OneSecretBindingService'}},
                    'public': {'type': 'boolean'},
                    'agreementProtocols': {'type': 'array',
                                           'items': {'type': 'object', 'additionalProperties': {'type': 'string'}}},
                    'jsonFormats': {'$ref': 'Formats'},
                    'userInput': {'type': 'array', 'items': {'$ref': 'OneUserInputService'}}}},
}

_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "boolean": (bool,), "array": (list,), "object": (dict,),
                                       "integer": (int,), "number": (int, float)}


def _any(schema: dict[str, Any]) -> bool:
    """A Scala ``Any`` as the generator wrote it: ``{"type": "object"}`` and nothing else."""
    return schema == {"type": "object"}


def _problems(value: Any, schema: dict[str, Any], where: str, top: bool) -> list[str]:
    if "$ref" in schema:
        return _problems(value, SCHEMAS[schema["$ref"]], where, top)
    if _any(schema):
        return []
    kind = schema.get("type")
    if kind in _TYPES and (not isinstance(value, _TYPES[kind]) or (kind != "boolean" and isinstance(value, bool))):
        article = "an" if kind[0] in "aeiou" else "a"
        return [f"{where or 'the body'} must be {article} {kind}, not {type(value).__name__} {value!r:.40}"]
    found: list[str] = []
    if kind == "array":
        for i, item in enumerate(value):
            found += _problems(item, schema.get("items") or {}, f"{where}[{i}]", False)
    if kind == "object":
        props: dict[str, Any] = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name != "jsonFormats" and name not in value:
                found.append(f"{_join(where, name)} is required")
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in props:
                found += _problems(item, props[name], _join(where, name), False)
            elif isinstance(extra, dict):
                found += [] if _any(extra) else _problems(item, extra, _join(where, name), False)
            elif top:
                found.append(f"{_join(where, name)} is not a field of the Exchange's body (misspelt?)")
    return found


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def validate(kind: str, body: Any) -> list[str]:
    """What is wrong with ``body`` as a ``kind`` ("policy" | "pattern") request body, one line per field (empty: it
    is one the Exchange reads as intended)."""
    return _problems(body, {"$ref": BODY[kind]}, "", True)


def json_schema(kind: str) -> dict[str, Any]:
    """The schema for ``kind`` as standard JSON Schema with the corrections above (for the ``jsonschema`` check in
    the tests)."""
    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return {"$ref": f"#/$defs/{node['$ref']}"}
            if _any(node):
                return {}
            fixed = {k: fix(v) for k, v in node.items()}
            if "required" in fixed:
                fixed["required"] = [r for r in fixed["required"] if r != "jsonFormats"]
            if "properties" in fixed:
                fixed["properties"] = {k: v for k, v in fixed["properties"].items() if k != "jsonFormats"}
            return fixed
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    top = fix(SCHEMAS[BODY[kind]])
    top["additionalProperties"] = False
    return {**top, "$defs": {name: fix(schema) for name, schema in SCHEMAS.items()}}
