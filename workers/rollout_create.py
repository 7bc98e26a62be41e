"""Create a missing deployment policy or pattern from the service's own source, read the way hzn reads it.

When a rollout stage names an object that does not exist in the Exchange yet and the service's ``horizon/`` directory
(at the release's commit) holds ``deployment.policy.json`` (a policy) or ``pattern.json`` (a pattern), edgebot
creates the object from that file when the stage begins. The file is read as ``hzn exchange deployment addpolicy -f``
and ``hzn exchange pattern publish -f`` read it (anax ``cli/exchange/business.go`` ``BusinessAddPolicy``,
``cli/exchange/pattern.go`` ``PatternPublish``, both through ``cliconfig.ReadJsonFileWithLocalConfig``):

* ``/* */`` comments stripped, ``$VAR``/``${VAR}`` expanded (Go ``os.Expand``) from ``hzn.json`` (its top-level
  fields and ``MetadataVars``), with the variables of a ``hzn dev`` template (anax ``cli/dev/patterndefinition.go``)
  set from the release: ``$HZN_ORG_ID`` (the org), ``$SERVICE_NAME`` (the published service's ``url``),
  ``$SERVICE_VERSION`` (the version) and ``$ARCH`` (the release's arch; with several arches ``$ARCH`` is ambiguous
  and refused, since hzn would take the publishing machine's). An undefined variable is an error that names it.
* CLI-only keys are dropped: ``name`` (hzn names the object from the command line, ``-p`` for a pattern; edgebot from
  its catalog) and ``org`` (hzn refuses a file whose ``org`` is not the command's org: so does edgebot), and the
  fields the Exchange adds itself (``owner``, ``created``, ``lastUpdated``).
* The body is checked against the Exchange's OpenAPI document (:mod:`workers.exchange_schema`), and a policy as
  ``BusinessPolicy.Validate`` checks it (``service.name``/``org`` set, ``serviceVersions`` not empty, typed
  properties) and without constraints refused, as ``addpolicy`` refuses it without ``--no-constraints``
  (it would deploy the service to every node of the org). Each refusal names the field.

The created object pins what the file says (normally ``$SERVICE_VERSION``); a rollback deletes it again, since it did
not exist before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebot.config import RolloutTarget, ServiceConfig
from edgebot.errors import StepFailed
from edgebot.release import Release
from workers.exchange_schema import validate

if TYPE_CHECKING:
    from workers.git_auth import GitAuth

FILES = {"policy": "deployment.policy.json", "pattern": "pattern.json"}
CLI_ONLY = ("name", "org")
"""Keys of a hzn template file that are not part of the Exchange body."""
SERVER_FIELDS = ("owner", "created", "lastUpdated")
"""Fields the Exchange sets itself (a file copied from ``hzn exchange … list`` output has them)."""
PROPERTY_TYPES = {"": (str, int, float, bool), "string": (str,), "version": (str,), "list of strings": (str,),
                  "int": (int, float), "float": (int, float), "boolean": (bool,)}
"""anax ``externalpolicy/property_list.go`` ``PropertyList.Validate``: which JSON value each declared type takes."""


def source_path(service: ServiceConfig, kind: str) -> str:
    return f"{service.horizon_dir.strip('/')}/{FILES[kind]}"


def body_from_source(service: ServiceConfig, release: Release, target: RolloutTarget,
                     cache_dir: Path, auth: GitAuth | None = None) -> dict[str, Any]:
    """The object's body from the service's source at the release's commit; StepFailed saying what to do if none.
    ``auth``: a private source's credentials (workers.git_auth)."""
    from workers.definition import DefinitionError, hzn_json_vars
    from workers.source import read_file_at

    path = source_path(service, target.kind)
    text = read_file_at(service.source, release.commit_sha, path, cache_dir, auth=auth)
    if text is None:
        raise StepFailed(f"{target.kind} `{target.name}` does not exist in org {release.org}, and {path} is not in "
                         f"{service.name}'s source at {release.commit_sha[:12]}: create the {target.kind} (hzn "
                         f"exchange {'deployment addpolicy' if target.kind == 'policy' else 'pattern publish'}) or add "
                         "the file, then publish again; the service was published, no node moved")
    hzn_json = read_file_at(service.source, release.commit_sha, f"{service.horizon_dir.strip('/')}/hzn.json",
                            cache_dir, auth=auth)
    try:
        env = hzn_json_vars(hzn_json) if hzn_json is not None else {}
    except DefinitionError as exc:
        raise StepFailed(f"{exc} (needed to read {path})") from None
    url = str(release.results[release.arches[0]].definition.get("url") or "") if release.arches else ""
    return read_template(target.kind, text, env, path=path, org=release.org, version=release.version, url=url,
                         arches=release.arches)


def read_template(kind: str, text: str, env: dict[str, str], *, path: str, org: str, version: str, url: str,
                  arches: Sequence[str]) -> dict[str, Any]:
    """A ``kind`` ("policy" | "pattern") template's text as the Exchange body hzn would send (pure)."""
    from workers.definition import expand_vars, strip_comments

    env = {**env, "HZN_ORG_ID": org, "SERVICE_VERSION": version}
    if url:
        env["SERVICE_NAME"] = url
    if len(set(arches)) == 1:
        env["ARCH"] = arches[0]
    else:
        env.pop("ARCH", None)
    expanded, undefined = expand_vars(strip_comments(text), env)
    if "ARCH" in undefined and len(set(arches)) > 1:
        raise StepFailed(f"{path}: uses $ARCH, but this release publishes {', '.join(sorted(set(arches)))}: hzn would "
                         f"take the publishing machine's arch. Write the arch in the file (\"*\" for every arch"
                         f"{' in a policy' if kind == 'policy' else ''}), then publish again; no node moved")
    if undefined:
        raise StepFailed(f"{path}: uses undefined variable(s) {', '.join('$' + n for n in undefined)}: define them "
                         "in hzn.json's MetadataVars (edgebot sets HZN_ORG_ID, SERVICE_NAME, SERVICE_VERSION and, for "
                         "a single-arch release, ARCH), then publish again; no node moved")
    try:
        body = json.loads(expanded)
    except ValueError as exc:
        raise StepFailed(f"{path} is not valid JSON after expansion ({exc}): fix the file, then publish again; no node "
                         "moved") from None
    if not isinstance(body, dict):
        raise StepFailed(f"{path} must hold one JSON object (the {kind}); no node moved")
    file_org = body.get("org")
    if file_org not in (None, "", org):
        raise StepFailed(f"{path}: org is {file_org!r}, but the release publishes to org {org} (hzn refuses a file "
                         "whose org is not the command's org): fix org or remove it, then publish again; no node moved")
    body = {k: v for k, v in body.items() if k not in CLI_ONLY + SERVER_FIELDS}
    problems = validate(kind, body) or (_policy_problems(body) if kind == "policy" else [])
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise StepFailed(f"{path} is not a {kind} the Exchange accepts: {shown}. Fix the file, then publish again; "
                         "no node moved")
    return body


def _policy_problems(body: dict[str, Any]) -> list[str]:
    """anax ``BusinessPolicy.Validate`` / ``ServiceRef.Validate`` / ``PropertyList.Validate`` (the priority rule is
    :func:`workers.rollout.agbot_refusal`'s, checked before every write), and ``addpolicy``'s no-constraints refusal."""
    service = body["service"]
    found = [f"service.{name} is empty" for name in ("name", "org") if not service.get(name)]
    if not service.get("serviceVersions"):
        found.append("service.serviceVersions is empty")
    for i, prop in enumerate(body.get("properties") or []):
        declared = str(prop.get("type") or "")
        value = prop.get("value")
        allowed = PROPERTY_TYPES.get(declared)
        if allowed is None:
            found.append(f"properties[{i}].type {declared!r} is not one of version, string, int, boolean, float, "
                         "list of strings")
        elif value is None or not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed) \
                or (declared == "int" and isinstance(value, float) and not value.is_integer()):
            found.append(f"properties[{i}] ({prop.get('name')}): value {value!r} is not of type {declared or 'any'}")
    if not body.get("constraints"):
        found.append("constraints is empty: the policy would deploy the service to every node of the org (hzn "
                     "exchange deployment addpolicy refuses it without --no-constraints); add constraints")
    return found
