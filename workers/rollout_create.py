"""Create a missing deployment policy or pattern from the service's own source, as `hzn exchange … publish -f` would.

When a rollout stage names an object that does not exist in the Exchange yet and the service's ``horizon/`` directory
(at the release's commit) holds ``deployment.policy.json`` (a policy) or ``pattern.json`` (a pattern), edgebot
creates the object from that file when the stage begins. The file is read like ``service.definition.json``:
``/* */`` comments stripped, ``$VAR``/``${VAR}`` expanded from ``hzn.json`` plus ``HZN_ORG_ID`` and
``SERVICE_VERSION``; an undefined variable is an error that names it. The created object pins what the file says
(normally ``$SERVICE_VERSION``); a rollback deletes it again, since it did not exist before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgebot.config import RolloutTarget, ServiceConfig
from edgebot.errors import StepFailed
from edgebot.release import Release

FILES = {"policy": "deployment.policy.json", "pattern": "pattern.json"}


def source_path(service: ServiceConfig, kind: str) -> str:
    return f"{service.horizon_dir.strip('/')}/{FILES[kind]}"


def body_from_source(service: ServiceConfig, release: Release, target: RolloutTarget,
                     cache_dir: Path) -> dict[str, Any]:
    """The object's body from the service's source at the release's commit; StepFailed saying what to do if none."""
    from workers.definition import expand_vars, hzn_json_vars, strip_comments
    from workers.source import read_file_at

    path = source_path(service, target.kind)
    text = read_file_at(service.source, release.commit_sha, path, cache_dir)
    if text is None:
        raise StepFailed(f"{target.kind} `{target.name}` does not exist in org {release.org}, and {path} is not in "
                         f"{service.name}'s source at {release.commit_sha[:12]}: create the {target.kind} (hzn "
                         f"exchange {'deployment addpolicy' if target.kind == 'policy' else 'pattern publish'}) or add "
                         "the file, then publish again; the service was published, no node moved")
    hzn_json = read_file_at(service.source, release.commit_sha, f"{service.horizon_dir.strip('/')}/hzn.json",
                            cache_dir)
    env = hzn_json_vars(hzn_json) if hzn_json is not None else {}
    env.update({"HZN_ORG_ID": release.org, "SERVICE_VERSION": release.version})
    expanded, undefined = expand_vars(strip_comments(text), env)
    if undefined:
        raise StepFailed(f"{path}: uses undefined variable(s) {', '.join('$' + n for n in undefined)}: define them "
                         "in hzn.json's MetadataVars (edgebot sets HZN_ORG_ID and SERVICE_VERSION)")
    try:
        body = json.loads(expanded)
    except ValueError as exc:
        raise StepFailed(f"{path} is not valid JSON after expansion ({exc}): fix the file") from None
    if not isinstance(body, dict):
        raise StepFailed(f"{path} must hold one JSON object (the {target.kind})")
    return body
