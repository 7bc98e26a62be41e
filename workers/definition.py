"""Read ``horizon/service.definition.json`` the way ``hzn exchange service publish`` reads it, then refuse what edgebot
cannot publish faithfully.

hzn strips ``/* */`` comments with ``(?s)/\\*.*?\\*/``, expands ``$VAR``/``${VAR}`` with Go's ``os.Expand`` (undefined
names become ``""`` with a warning) and unmarshals the result (anax ``cli/cliutils/cliutils.go`` ``ReadJsonFile``,
``cli/cliconfig/config.go``). Variables come from ``horizon/hzn.json`` — its known top-level fields and its
``MetadataVars`` — but never override what is already set; edgebot sets ``HZN_ORG_ID``, ``SERVICE_VERSION``, ``ARCH``
and ``DOCKER_IMAGE_BASE`` from the command, the catalog and the chosen registry, so those always win.

Where hzn would only warn (an undefined variable, a foreign image it would push as-is), edgebot refuses with a message
that names the file, the field and what to do: a release that silently ships ``""`` or an image it never built is worse
than one that does not start.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFINITION_FILE = "horizon/service.definition.json"
HZN_JSON_FILE = "horizon/hzn.json"

#: Largest definition (and hzn.json) read_definition accepts, before and after ``$VAR`` expansion: the same default as
#: ``settings.source_file_max_bytes``, which caps the files when they are read from git. Expansion is capped too, or a
#: small file that repeats a long hzn.json value would blow up in memory.
DEFINITION_MAX_BYTES = 1024 * 1024

#: The variables edgebot sets itself, overriding horizon/hzn.json.
EDGEBOT_VARS = ("HZN_ORG_ID", "SERVICE_VERSION", "ARCH", "DOCKER_IMAGE_BASE")

#: anax ``cli/cliconfig/config.go`` ``HorizonCliConfig``: the only top-level hzn.json fields hzn turns into variables.
HZN_JSON_FIELDS = (
    "HZN_EXCHANGE_USER_AUTH", "HZN_EXCHANGE_NODE_AUTH", "HZN_ORG_ID", "HZN_LANG", "HORIZON_URL", "HZN_EXCHANGE_URL",
    "HZN_HTTP_RETRIES", "HZN_HTTP_RETRY_INTERVAL", "HZN_FSS_CSSURL", "HZN_AGBOT_URL", "HZN_PRIVATE_KEY_FILE",
    "HZN_PUBLIC_KEY_FILE", "HZN_DEVICE_ID", "HZN_PATTERN", "HZN_DEV_FSS_IMAGE_REPO", "HZN_DEV_FSS_IMAGE_TAG",
    "HZN_DEV_FSS_CSS_PORT", "HZN_DEV_FSS_MONGO_IMAGE", "HZN_DEV_FSS_WORKING_DIR", "HZN_REGISTER_HTTP_TIMEOUT",
)

_SHARABLE = ("exclusive", "single", "singleton", "multiple")
_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
# cutil.ParseDockerImagePath, with Go's ASCII \S spelled out and $ anchored at the very end as in Go.
_NOT_SPACE = r"[^\t\n\f\r ]"
_RE_DIGEST = re.compile(rf"({_NOT_SPACE}*)@({_NOT_SPACE}+)\Z")
_RE_TAG = re.compile(rf"([^/ ]*)({_NOT_SPACE}*):([^:/ ]+)\Z")
_RE_NO_TAG = re.compile(rf"([^/ ]*)({_NOT_SPACE}*)\Z")


class DefinitionError(Exception):
    """A definition edgebot will not publish. ``str()`` names the file, the field and what to do."""


# -- hzn's text processing ---------------------------------------------------------------------------------------------

def strip_comments(text: str) -> str:
    """Remove ``/* … */`` comments exactly like hzn (even inside JSON strings, as hzn does)."""
    return _COMMENT.sub("", text)


def _is_special(c: str) -> bool:
    return c in "*#$@!?-0123456789"


def _is_alnum(c: str) -> bool:
    return c == "_" or ("0" <= c <= "9") or ("a" <= c <= "z") or ("A" <= c <= "Z")


def _shell_name(s: str, k: int) -> tuple[str, int]:
    """Go ``os.getShellName`` on ``s[k:]``: the name and how many characters it consumed."""
    n = len(s)
    if s[k] == "{":
        if n - k > 2 and _is_special(s[k + 1]) and s[k + 2] == "}":
            return s[k + 1], 3
        for i in range(1, n - k):
            if s[k + i] == "}":
                if i == 1:
                    return "", 2  # bad syntax: eat "${}"
                return s[k + 1:k + i], i + 1
        return "", 1  # bad syntax: eat "${"
    if _is_special(s[k]):
        return s[k], 1
    i = k
    while i < n and _is_alnum(s[i]):
        i += 1
    return s[k:i], i - k


def _expand(text: str, lookup: Callable[[str], str]) -> list[tuple[str, int, bool]]:
    """Go ``os.Expand`` as pieces ``(text, offset in input, literal?)`` so positions can be mapped back."""
    pieces: list[tuple[str, int, bool]] = []
    i = j = 0
    n = len(text)
    while j < n:
        if text[j] == "$" and j + 1 < n:
            if j > i:
                pieces.append((text[i:j], i, True))
            name, w = _shell_name(text, j + 1)
            if name == "" and w > 0:
                pass  # invalid syntax: the characters are eaten
            elif name == "":
                pieces.append(("$", j, True))  # "$" not followed by a name stays
            else:
                pieces.append((lookup(name), j, False))
            j += w
            i = j + 1
        j += 1
    if i < n:
        pieces.append((text[i:], i, True))
    return pieces


def expand_vars(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``$VAR`` and ``${VAR}`` with Go ``os.Expand`` semantics.

    Returns the text and the names that expanded to ``""`` because they are unset or empty (the names hzn warns
    about), in order of first appearance. Go details kept: ``$$``, ``$1``, ``$*`` … are one-character special names;
    ``${}`` and an unclosed ``${`` are eaten; a ``$`` not followed by a name (or at the very end) stays.
    """
    lookup, undefined = _recording_lookup(env)
    return "".join(p for p, _, _ in _expand(text, lookup)), undefined


def _recording_lookup(env: Mapping[str, str]) -> tuple[Callable[[str], str], list[str]]:
    """A variable lookup that also records, in order, the names that expand to "" (unset or empty)."""
    undefined: list[str] = []

    def lookup(name: str) -> str:
        value = env.get(name, "")
        if value == "" and name not in undefined:
            undefined.append(name)
        return value

    return lookup, undefined


# -- hzn.json ---------------------------------------------------------------------------------------------------------

class _Pairs(list):  # type: ignore[type-arg]
    """A JSON object as its ordered (key, value) pairs, distinct from a JSON array."""


def hzn_json_vars(text: str, *, file_name: str = HZN_JSON_FILE) -> dict[str, str]:
    """The variables hzn sets from a hzn.json: known top-level fields (non-empty) plus ``MetadataVars``.

    Mirrors Go's ``json.Unmarshal`` into ``HorizonCliConfig``: comments stripped, no variable expansion, unknown keys
    ignored, keys matched exactly or else case-insensitively, ``null`` leaves a field alone, a wrong type is an error.
    A top-level field wins over a ``MetadataVars`` entry of the same name (hzn sets the metadata ones first).
    """
    try:
        doc = json.loads(strip_comments(text), object_pairs_hook=_Pairs, parse_constant=_reject_constant)
    except ValueError as exc:
        raise DefinitionError(f"{file_name}: not valid JSON ({_json_reason(exc)}): fix the file") from None
    if doc is None:
        return {}
    if not isinstance(doc, _Pairs):
        raise DefinitionError(f"{file_name}: must be a JSON object with MetadataVars")
    by_folded = {name.casefold(): name for name in (*HZN_JSON_FIELDS, "MetadataVars")}
    top: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for key, value in doc:
        name = key if key in by_folded.values() else by_folded.get(key.casefold())
        if name is None:
            continue
        if value is None:
            if name == "MetadataVars":
                metadata.clear()  # Go sets a map to nil on null
            continue
        if name == "MetadataVars":
            if not isinstance(value, _Pairs):
                raise DefinitionError(f"{file_name}: MetadataVars must be an object of strings")
            for var, var_value in value:
                if var_value is None:
                    var_value = ""
                if not isinstance(var_value, str):
                    raise DefinitionError(
                        f"{file_name}: MetadataVars.{var} must be a string; quote it: \"{var}\": \"{var_value}\""
                    )
                metadata[var] = var_value
        elif isinstance(value, str):
            top[name] = value
        else:
            raise DefinitionError(f"{file_name}: {key} must be a string")
    return {**metadata, **{k: v for k, v in top.items() if v != ""}}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_reason(exc: ValueError) -> str:
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)


# -- image references -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageRef:
    """``[[host][:port]/]path[:tag][@digest]`` split like anax ``cutil.ParseDockerImagePath``."""

    host: str
    path: str
    tag: str
    digest: str

    @property
    def repository(self) -> str:
        return f"{self.host}/{self.path}" if self.host else self.path

    @property
    def pinned(self) -> bool:
        """True for ``…@sha256:<64 hex>``: the content is fixed whatever the registry does later."""
        return bool(_DIGEST.match(self.digest))

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image_ref(ref: str) -> ImageRef:
    """Parse an image reference; the first segment is a registry host only if it contains ``.`` or ``:``."""
    digest = ""
    rest = ref
    m = _RE_DIGEST.match(ref)
    if m:
        rest, digest = m.group(1), m.group(2)
    if rest == "":
        raise DefinitionError(f"cannot parse image reference {ref!r}: expected [host[:port]/]path[:tag][@digest]")
    tag = ""
    m = _RE_TAG.match(rest)
    if m:
        host, path, tag = m.group(1), m.group(2), m.group(3)
    else:
        m = _RE_NO_TAG.match(rest)
        if not m:
            raise DefinitionError(f"cannot parse image reference {ref!r}: expected [host[:port]/]path[:tag][@digest]")
        host, path = m.group(1), m.group(2)
    if "." not in host and ":" not in host:
        host, path = "", host + path  # Docker Hub: the first segment is part of the path
    else:
        path = path.removeprefix("/")
    if path == "":
        raise DefinitionError(f"cannot parse image reference {ref!r}: it has no repository path")
    return ImageRef(host=host, path=path, tag=tag, digest=digest)


# -- the definition ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServiceDefinition:
    """A definition accepted for one (org, version, arch). ``raw`` is JSON-safe: it is stored with the release."""

    raw: dict[str, Any]
    org: str
    url: str
    version: str
    arch: str
    deployment: dict[str, Any]
    built: dict[str, str] = field(default_factory=dict)
    external: dict[str, str] = field(default_factory=dict)
    """container -> an image edgebot does not build, referenced by tag (pinned to a digest at release time, unless the
    catalog says ``pin = false``); images pinned by digest in the definition are not listed."""
    cluster_archive: str = ""
    """The repository path of ``clusterDeployment.operatorYamlArchive`` ("" for a device-only service)."""

    def exchange_body(self, deployment_string: str, signature: str, cluster_deployment: str = "",
                      cluster_signature: str = "") -> dict[str, Any]:
        """The body of ``POST orgs/{org}/services`` / ``PUT …/{id}``, as hzn sends it (anax exchange.ServiceDefinition).

        ``deployment_string`` must be the exact signed string. No ``org`` (the URL carries it), no ``owner``.
        """
        if not signature:
            raise ValueError("exchange_body needs the deployment signature")
        try:
            signed = json.loads(deployment_string)
        except ValueError:
            raise ValueError("exchange_body needs the deployment as a JSON string") from None
        services = signed.get("services") if isinstance(signed, dict) else None
        if not isinstance(services, dict) or set(services) != set(self.deployment.get("services", {})):
            raise ValueError("the deployment string does not belong to this definition (its containers differ)")
        if bool(self.cluster_archive) != bool(cluster_deployment) or (cluster_deployment and not cluster_signature):
            raise ValueError("exchange_body needs the signed clusterDeployment exactly when the definition has one")
        raw = self.raw
        return {
            "label": raw.get("label") or "",
            "description": raw.get("description") or "",
            "public": bool(raw.get("public") or False),
            "documentation": raw.get("documentation") or "",
            "url": self.url,
            "version": self.version,
            "arch": self.arch,
            "sharable": raw.get("sharable") or "",
            "matchHardware": raw.get("matchHardware"),
            "requiredServices": _required_services(raw.get("requiredServices")),
            "userInput": _user_inputs(raw.get("userInput")),
            "deployment": deployment_string,
            "deploymentSignature": signature,
            "clusterDeployment": cluster_deployment,
            "clusterDeploymentSignature": cluster_signature,
        }


def _required_services(value: Any) -> list[dict[str, str]] | None:
    """exchangecommon.ServiceDependency, after hzn's SupportVersionRange (version copied into versionRange)."""
    if value is None:
        return None
    out = []
    for dep in value:
        item = {"url": dep.get("url") or "", "org": dep.get("org") or ""}
        if dep.get("version"):
            item["version"] = dep["version"]
        item["versionRange"] = dep.get("versionRange") or dep.get("version") or ""
        item["arch"] = dep.get("arch") or ""
        out.append(item)
    return out


def _user_inputs(value: Any) -> list[dict[str, str]] | None:
    if value is None:
        return None
    return [{k: ui.get(k) or "" for k in ("name", "label", "type", "defaultValue")} for ui in value]


def read_definition(definition_text: str, hzn_json_text: str | None, *, org: str, version: str, arch: str,
                    image_base: str, definition_name: str = DEFINITION_FILE,
                    hzn_json_name: str = HZN_JSON_FILE, max_bytes: int = DEFINITION_MAX_BYTES) -> ServiceDefinition:
    """Read, expand and check one definition for one arch; raise :class:`DefinitionError` with what to fix.

    A definition or hzn.json over ``max_bytes`` bytes is refused before it is parsed, and so is a definition whose
    ``$VAR`` expansion would grow past ``max_bytes`` characters.
    """
    if not (org and version and arch and image_base):
        raise ValueError("read_definition needs org, version, arch and image_base")
    for name, content in ((definition_name, definition_text), (hzn_json_name, hzn_json_text)):
        size = len(content.encode("utf-8")) if content is not None else 0
        if size > max_bytes:
            raise DefinitionError(f"{name} is {size} bytes, over the {max_bytes}-byte cap (setting "
                                  "source_file_max_bytes): shrink the file")
    env = hzn_json_vars(hzn_json_text, file_name=hzn_json_name) if hzn_json_text is not None else {}
    env.update({"HZN_ORG_ID": org, "SERVICE_VERSION": version, "ARCH": arch, "DOCKER_IMAGE_BASE": image_base})

    stripped, strip_origin = _strip_with_origin(definition_text)
    recording, undefined = _recording_lookup(env)
    expanded = [len(stripped)]

    def lookup(name: str) -> str:
        value = recording(name)
        expanded[0] += len(value)
        if expanded[0] > max_bytes:
            raise DefinitionError(f"{definition_name}: expanding its $VARs (from {hzn_json_name}) would make it longer "
                                  f"than the {max_bytes}-character cap (setting source_file_max_bytes): use fewer or "
                                  "shorter variables")
        return value

    pieces = _expand(stripped, lookup)
    text = "".join(p for p, _, _ in pieces)
    f = definition_name
    if undefined:
        names = ", ".join("$" + n for n in undefined)
        where = f"MetadataVars in {hzn_json_name}" + ("" if hzn_json_text is not None else " (create the file)")
        raise DefinitionError(
            f"{f}: uses undefined variable{'s' if len(undefined) > 1 else ''} {names}: define "
            f"{'them' if len(undefined) > 1 else 'it'} in {where}, or remove {'them' if len(undefined) > 1 else 'it'}. "
            f"edgebot itself sets only {', '.join(EDGEBOT_VARS)}"
        )
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        line, col = _original_position(definition_text, strip_origin, pieces, exc.pos)
        raise DefinitionError(f"{f}: not valid JSON at line {line}, column {col} ({exc.msg}): fix the file") from None
    except ValueError as exc:
        raise DefinitionError(f"{f}: not valid JSON ({exc}): fix the file") from None
    if not isinstance(raw, dict):
        raise DefinitionError(f"{f}: must be a JSON object (the service definition)")

    _check_types(raw, f)
    if raw.get("version") != version:
        raise DefinitionError(
            f"{f}: \"version\" is {_show(raw.get('version'))} but the release is {version}: "
            f"set \"version\": \"$SERVICE_VERSION\""
        )
    if raw.get("arch") != arch:
        raise DefinitionError(
            f"{f}: \"arch\" is {_show(raw.get('arch'))} but this build is for {arch}: set \"arch\": \"$ARCH\""
        )
    if raw.get("org") and raw["org"] != org:
        raise DefinitionError(
            f"{f}: \"org\" is {_show(raw['org'])} but the release is for org {org}: "
            f"set \"org\": \"$HZN_ORG_ID\" or remove it"
        )
    if not raw.get("url"):
        raise DefinitionError(f"{f}: \"url\" is missing: set \"url\" to the service name, e.g. \"$SERVICE_NAME\"")
    if not raw.get("label"):
        raise DefinitionError(f"{f}: \"label\" is missing (the Exchange requires it): e.g. \"$SERVICE_NAME for $ARCH\"")
    if raw.get("sharable") not in _SHARABLE:
        raise DefinitionError(
            f"{f}: \"sharable\" is {_show(raw.get('sharable'))}: use \"multiple\", \"singleton\" or \"exclusive\""
        )
    deployment = raw.get("deployment")
    if isinstance(deployment, str) and deployment:
        raise DefinitionError(
            f"{f}: \"deployment\" is a string (pre-signed): edgebot builds, pins and signs the deployment itself, so "
            f"make \"deployment\" an object with \"services\" and drop \"deploymentSignature\""
        )
    if deployment in (None, "", {}) and raw.get("clusterDeployment") not in (None, "", {}):
        raise DefinitionError(
            f"{f}: has a \"clusterDeployment\" but no \"deployment\": edgebot publishes cluster services beside a "
            f"device deployment only; add a \"deployment\" (or publish this cluster-only service with hzn)"
        )
    if not isinstance(deployment, dict):
        raise DefinitionError(
            f"{f}: \"deployment\" must be an object like {{\"services\": {{\"<container>\": {{\"image\": …}}}}}}"
        )
    cluster_archive = ""
    if raw.get("clusterDeployment") not in (None, "", {}):
        cluster_archive = cluster_archive_path(raw["clusterDeployment"], definition_name)
    services = deployment.get("services")
    if not isinstance(services, dict) or not services:
        raise DefinitionError(
            f"{f}: \"deployment.services\" is missing or empty: add at least one container, e.g. "
            f"\"services\": {{\"<name>\": {{\"image\": \"${{DOCKER_IMAGE_BASE}}_$ARCH:$SERVICE_VERSION\"}}}}"
        )
    expected = f"{image_base}_{arch}:{version}"
    built: dict[str, str] = {}
    external: dict[str, str] = {}
    for name, spec in services.items():
        image = spec.get("image") if isinstance(spec, dict) else None
        if not isinstance(image, str) or not image:
            raise DefinitionError(
                f"{f}: container \"{name}\" in deployment.services has no \"image\": "
                f"set \"image\": \"${{DOCKER_IMAGE_BASE}}_$ARCH:$SERVICE_VERSION\""
            )
        if image == expected:
            built[name] = image
            continue
        try:
            ref = parse_image_ref(image)
        except DefinitionError:
            raise DefinitionError(
                f"{f}: container \"{name}\" uses image {image!r}, which is not an image reference: use "
                f"\"${{DOCKER_IMAGE_BASE}}_$ARCH:$SERVICE_VERSION\" (here {expected}) for the image edgebot builds, "
                f"or [host[:port]/]path[:tag][@sha256:<64 hex>] for a prebuilt one"
            ) from None
        if ref.digest and not ref.pinned:
            raise DefinitionError(f"{f}: container \"{name}\": {image} has a digest that is not sha256:<64 hex>")
        if ref.repository.startswith(f"{image_base}_") and not ref.pinned:  # our own image, another arch or version
            raise DefinitionError(
                f"{f}: container \"{name}\" uses image {image}, which looks like the image edgebot builds but is "
                f"not this release's: use \"${{DOCKER_IMAGE_BASE}}_$ARCH:$SERVICE_VERSION\" (here {expected}), or pin "
                f"a prebuilt image by digest (<image>@sha256:<64 hex>)"
            )
        if not ref.pinned:
            external[name] = image  # pinned at release time to its registry digest (workers.external_images)
    return ServiceDefinition(raw=raw, org=org, url=raw["url"], version=version, arch=arch, deployment=deployment,
                             built=built, external=external, cluster_archive=cluster_archive)


def cluster_archive_path(cluster: Any, definition_name: str) -> str:
    """The repository path of the archive named by ``clusterDeployment.operatorYamlArchive`` (relative to the
    definition file's directory, as hzn reads it); DefinitionError when the object is malformed or the path leaves the
    repository (anax would also read an absolute path: edgebot reads only the repository). The archive itself is
    read and checked in prepare (``workers.cluster``)."""
    f = definition_name
    if not isinstance(cluster, dict):
        raise DefinitionError(f"{f}: \"clusterDeployment\" must be an object like "
                              "{\"operatorYamlArchive\": \"<path to a .tar.gz of operator YAMLs>\"}")
    if "metadata" in cluster:  # anax kube_deployment.go Sign(): hzn refuses it too
        raise DefinitionError(f"{f}: \"clusterDeployment.metadata\" must not be set (hzn sets it from the operator "
                              "YAMLs): remove it")
    path = cluster.get("operatorYamlArchive")
    if not isinstance(path, str) or not path.strip():
        raise DefinitionError(f"{f}: \"clusterDeployment.operatorYamlArchive\" must be a non-empty string: the path "
                              "of the operator YAML archive (.tar.gz), relative to the definition file")
    if path.startswith("/"):
        raise DefinitionError(f"{f}: \"clusterDeployment.operatorYamlArchive\" is an absolute path ({path}): use a "
                              "path inside the repository, relative to the definition file")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(definition_name), path))
    if joined in (".", "") or joined.startswith("../") or joined == "..":
        raise DefinitionError(f"{f}: \"clusterDeployment.operatorYamlArchive\" ({path}) points outside the "
                              "repository: keep the archive inside it")
    pvc = cluster.get("mmsPVC")
    if pvc is not None and not isinstance(pvc, dict):
        raise DefinitionError(f"{f}: \"clusterDeployment.mmsPVC\" must be an object like "
                              "{\"enable\": true, \"pvcSizeGB\": 10}")
    if isinstance(pvc, dict) and not isinstance(pvc.get("enable", False), bool):
        raise DefinitionError(f"{f}: \"clusterDeployment.mmsPVC.enable\" must be true or false")
    return joined


def _check_types(raw: dict[str, Any], f: str) -> None:
    """The type errors Go's json.Unmarshal into common.ServiceFile would stop hzn with, said plainly."""
    for key in ("org", "label", "description", "documentation", "url", "version", "arch", "sharable",
                "deploymentSignature"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise DefinitionError(f"{f}: \"{key}\" must be a string, not {_show(raw[key])}")
    if raw.get("public") is not None and not isinstance(raw["public"], bool):
        raise DefinitionError(f"{f}: \"public\" must be true or false, not {_show(raw['public'])}")
    if raw.get("matchHardware") is not None and not isinstance(raw["matchHardware"], dict):
        raise DefinitionError(f"{f}: \"matchHardware\" must be an object")
    for key, fields in (("requiredServices", ("url", "org", "version", "versionRange", "arch")),
                        ("userInput", ("name", "label", "type", "defaultValue"))):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise DefinitionError(f"{f}: \"{key}\" must be a list of objects")
        for n, item in enumerate(value):
            for name in fields:
                if item.get(name) is not None and not isinstance(item[name], str):
                    raise DefinitionError(f"{f}: \"{key}[{n}].{name}\" must be a string, not {_show(item[name])}")


def _show(value: Any) -> str:
    if value is None:
        return "missing"
    return json.dumps(value, ensure_ascii=False)


def _strip_with_origin(text: str) -> tuple[str, list[int]]:
    """strip_comments, plus the original offset of every kept character."""
    kept: list[str] = []
    origin: list[int] = []
    last = 0
    for m in _COMMENT.finditer(text):
        kept.append(text[last:m.start()])
        origin.extend(range(last, m.start()))
        last = m.end()
    kept.append(text[last:])
    origin.extend(range(last, len(text)))
    return "".join(kept), origin


def _original_position(original: str, strip_origin: list[int], pieces: list[tuple[str, int, bool]],
                       pos: int) -> tuple[int, int]:
    """Map an offset in the expanded text back to (line, column) in the file as written (1-based)."""
    offset = len(original)
    seen = 0
    for piece, start, literal in pieces:
        if pos < seen + len(piece):
            at = start + (pos - seen if literal else 0)
            offset = strip_origin[at] if at < len(strip_origin) else len(original)
            break
        seen += len(piece)
    line = original.count("\n", 0, offset) + 1
    column = offset - (original.rfind("\n", 0, offset) + 1) + 1
    return line, column


# -- pinning and the signed string ------------------------------------------------------------------------------------

def pin_images(deployment: dict[str, Any], pinned: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``deployment`` with the images of the named containers replaced by ``host/path@sha256:…``."""
    services = deployment.get("services")
    if not isinstance(services, dict):
        raise DefinitionError("cannot pin images: the deployment has no \"services\"")
    out = copy.deepcopy(deployment)
    for name, ref in pinned.items():
        if name not in services or not isinstance(services[name], dict):
            raise DefinitionError(f"cannot pin container \"{name}\": the deployment has no such container")
        parsed = parse_image_ref(ref)
        if not parsed.pinned or parsed.tag:
            raise DefinitionError(f"cannot pin container \"{name}\" to {ref}: expected host/path@sha256:<64 hex>")
        out["services"][name]["image"] = ref
    return out


def deployment_string(deployment: dict[str, Any]) -> str:
    """The one serialization that is signed and uploaded: compact, keys sorted at every level, UTF-8."""
    return json.dumps(deployment, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
