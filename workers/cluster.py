"""Cluster services: the ``clusterDeployment`` of a definition, with its operator YAML archive, as hzn publishes it.

anax ``cli/kube_deployment/kube_deployment.go`` ``Sign()`` (what ``hzn exchange service publish`` runs for a
``clusterDeployment``): the ``operatorYamlArchive`` path (relative to the definition file's directory, or absolute) is
read and replaced by its standard base64; ``metadata`` set by hand is refused; ``metadata.namespace`` is set to the
namespace found in the YAMLs (``common/deploymentconfig.go`` ``GetKubeOperatorNamespace``: the name of a v1
``Namespace``, else the namespace of an apps/v1 ``Deployment``, else ""); an ``mmsPVC`` that is not enabled is
dropped; the object is ``json.Marshal``-ed (map keys sorted, compact, ``<``, ``>``, ``&``, U+2028 and U+2029 escaped)
and those bytes are signed with ``sign.Sha256HashOfInput`` — the same RSA-PSS/SHA-256 routine as the device
``deployment`` (``workers.signing.sign_deployment``). The agent verifies ``clusterDeploymentSignature`` over the
``clusterDeployment`` string with the service's keys and unpacks the tar.gz (``GetYamlFromTarGz``).

edgebot differs from hzn where hzn would ship something it never checked: the archive must be inside the repository
(no absolute path, no ``..`` escape, no symlink), a gzip'd tar of YAML files and directories with safe relative names,
at most ``cluster_archive_max_bytes``. Images: ``image:`` lines naming the release's own image tag are rewritten to the
pushed digest at sign time, other tags are pinned like third-party device images (``workers.external_images``), and
the archive is rebuilt deterministically (sorted members, mtime/uid/gid 0, gzip mtime 0) so the same inputs sign the
same bytes (a republish is a no-op). The YAML text is edited on the ``image:`` lines only, never re-serialized.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import io
import json
import math
import re
import secrets
import tarfile
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

from workers.definition import DefinitionError, parse_image_ref

YAML_SUFFIXES = (".yaml", ".yml")

#: ``image: <ref>`` on one YAML line (a mapping value or a list item), optionally quoted, optionally commented.
IMAGE_LINE = re.compile(
    r"""^(?P<lead>[ \t]*(?:-[ \t]+)?image:[ \t]+)(?P<q>["']?)(?P<ref>[^"'\s#]+)(?P=q)(?P<tail>[ \t]*(?:\#.*)?)$""",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Member:
    """One entry of the operator archive: a directory (``data`` None) or a YAML file."""

    name: str
    data: bytes | None


# -- the archive -------------------------------------------------------------------------------------------------------

def read_archive(data: bytes, name: str, *, max_bytes: int) -> list[Member]:
    """The members of an operator archive, checked; DefinitionError naming the archive (and member) otherwise.

    ``max_bytes`` caps the archive and, separately, its unpacked size (a gzip bomb is refused, not unpacked)."""
    if len(data) > max_bytes:
        raise DefinitionError(f"{name} is {len(data)} bytes, over the {max_bytes}-byte cap (setting "
                              "cluster_archive_max_bytes): shrink the archive")
    try:
        raw = _gunzip(data, max_bytes)
    except (OSError, EOFError, gzip.BadGzipFile):
        raise DefinitionError(f"{name} is not a gzip'd tar (.tar.gz): build it with `tar czf` of the operator "
                              "YAMLs") from None
    if raw is None:
        raise DefinitionError(f"{name} unpacks to more than {max_bytes} bytes (setting cluster_archive_max_bytes): "
                              "shrink the archive")
    members: list[Member] = []
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for info in tar:
                member = info.name
                clean = member.removeprefix("./").rstrip("/") if member not in ("./", ".") else "."
                parts = clean.split("/")
                if (member.startswith("/") or any(p in ("..", "") for p in parts) or "\\" in member
                        or any(ord(c) < 32 for c in member)):
                    raise DefinitionError(f"{name}: member {member!r} has an unsafe name (absolute or with ..): "
                                          "use plain relative paths")
                if info.isdir():
                    if clean != ".":
                        members.append(Member(clean, None))
                    continue
                if not info.isreg():
                    kind = "a symlink" if info.issym() else "a hard link" if info.islnk() else "not a regular file"
                    raise DefinitionError(f"{name}: member {member!r} is {kind}: the archive may hold only "
                                          "directories and YAML files")
                if not clean.lower().endswith(YAML_SUFFIXES):
                    raise DefinitionError(f"{name}: member {member!r} is not a YAML file (.yaml/.yml): the archive "
                                          "may hold only the operator YAMLs")
                if clean in seen:
                    raise DefinitionError(f"{name}: member {member!r} appears twice")
                seen.add(clean)
                extracted = tar.extractfile(info)
                body = extracted.read() if extracted is not None else b""
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError:
                    raise DefinitionError(f"{name}: member {member!r} is not UTF-8 text") from None
                members.append(Member(clean, body))
    except tarfile.TarError:
        raise DefinitionError(f"{name} is not a gzip'd tar (.tar.gz): build it with `tar czf` of the operator "
                              "YAMLs") from None
    if not any(m.data is not None for m in members):
        raise DefinitionError(f"{name} holds no YAML file: add the operator YAMLs")
    return members


def _gunzip(data: bytes, limit: int) -> bytes | None:
    with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as gz:
        out = gz.read(limit + 1)
    return None if len(out) > limit else out


def build_archive(members: list[Member]) -> bytes:
    """A tar.gz of ``members``: sorted by name, mode 0644/0755, uid/gid 0, no names, mtime 0, gzip mtime 0 — the
    same members always give the same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for m in sorted(members, key=lambda m: m.name):
            info = tarfile.TarInfo(m.name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if m.data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
    return gzip.compress(buf.getvalue(), compresslevel=9, mtime=0)


def images(members: list[Member]) -> list[str]:
    """Every ``image:`` reference in the YAMLs, each once, in order."""
    found: list[str] = []
    for m in members:
        if m.data is not None:
            for match in IMAGE_LINE.finditer(m.data.decode("utf-8")):
                if match.group("ref") not in found:
                    found.append(match.group("ref"))
    return found


def classify(refs: list[str], *, own_tags: dict[str, str], image_base: str, name: str) -> list[str]:
    """The references that are neither this arch's release image (``own_tags``: arch -> tag) nor pinned by digest
    (to pin from their registry); DefinitionError for an image that looks like ours but is not this arch's release
    image (another version, or another arch's image that would run on this arch's clusters)."""
    external: list[str] = []
    for ref in refs:
        if ref in own_tags.values():
            continue
        try:
            parsed = parse_image_ref(ref)
        except DefinitionError:
            raise DefinitionError(f"{name}: `image: {ref}` is not an image reference") from None
        if parsed.digest and not parsed.pinned:
            raise DefinitionError(f"{name}: `image: {ref}` has a digest that is not sha256:<64 hex>")
        if parsed.repository.startswith(f"{image_base}_") and not parsed.pinned:
            arches = ", ".join(sorted(own_tags))
            raise DefinitionError(f"{name}: `image: {ref}` looks like the image edgebot builds but is not the "
                                  f"{arches} image of this release ({', '.join(sorted(own_tags.values()))}); hzn "
                                  "publishes the same operator archive for every arch, so name the image of the arch "
                                  "you publish the cluster service for (e.g. `--arch amd64`), or pin an image by "
                                  "digest")
        if not parsed.pinned:
            external.append(ref)
    return external


def rewrite(members: list[Member], pins: dict[str, str]) -> list[Member]:
    """``members`` with every ``image:`` value found in ``pins`` replaced (quotes, indent and comments kept)."""
    def one(match: re.Match[str]) -> str:
        ref = match.group("ref")
        new = pins.get(ref, ref)
        return f"{match.group('lead')}{match.group('q')}{new}{match.group('q')}{match.group('tail')}"

    return [m if m.data is None else Member(m.name, IMAGE_LINE.sub(one, m.data.decode("utf-8")).encode("utf-8"))
            for m in members]


def namespace(members: list[Member]) -> str:
    """anax ``getK8sNamespaceObjectFromYaml``: bodies split on every ``---``; the name of the last v1 Namespace,
    else the namespace of the first apps/v1 Deployment that has one (read before any Namespace), else ""."""
    found = ""
    for m in members:
        if m.data is None:
            continue
        for doc_text in m.data.decode("utf-8").split("---"):
            try:
                doc = yaml.safe_load(doc_text)
            except yaml.YAMLError:
                continue  # anax ignores what it cannot decode
            if not isinstance(doc, dict):
                continue
            meta: dict[str, Any] = doc["metadata"] if isinstance(doc.get("metadata"), dict) else {}
            if doc.get("kind") == "Namespace" and doc.get("apiVersion") == "v1":
                found = str(meta.get("name") or "")
            elif doc.get("kind") == "Deployment" and doc.get("apiVersion") == "apps/v1" and found == "":
                found = str(meta.get("namespace") or "")
    return found


# -- the signed string -------------------------------------------------------------------------------------------------

def go_json(value: Any) -> str:
    """Go ``json.Marshal`` of a decoded JSON value: map keys sorted, compact, HTML-escaped (``<`` ``>`` ``&`` as
    ``\\u003c`` ``\\u003e`` ``\\u0026``), U+2028/U+2029 escaped, floats as Go's ``floatEncoder`` writes them."""
    floats: list[str] = []
    nonce = secrets.token_hex(8)
    text = json.dumps(_go_numbers(value, floats, nonce), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    for n, number in enumerate(floats):
        text = text.replace(f'"\\u0000{nonce}:{n}\\u0000"', number, 1)
    return text


def _go_numbers(value: Any, floats: list[str], nonce: str) -> Any:
    """``value`` with each float replaced by a placeholder string (NUL-delimited, with a random ``nonce`` so no
    string of the input can look like one) and its Go text appended to ``floats``."""
    if isinstance(value, float):
        floats.append(_go_float(value))
        return f"\0{nonce}:{len(floats) - 1}\0"
    if isinstance(value, dict):
        return {k: _go_numbers(v, floats, nonce) for k, v in value.items()}
    if isinstance(value, list):
        return [_go_numbers(v, floats, nonce) for v in value]
    return value


def _go_float(f: float) -> str:
    """encoding/json ``floatEncoder`` for float64: shortest digits, ``'f'`` format unless abs < 1e-6 or >= 1e21,
    then ``'e'`` with ``e-09`` cleaned up to ``e-9``."""
    if math.isnan(f) or math.isinf(f):
        raise ValueError("JSON has no NaN or infinity")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    if abs(f) < 1e-6 or abs(f) >= 1e21:
        text = repr(f)  # Python's shortest repr in e-form: 1e-07, 1.5e+21 (Go: the same digits, 2+ exponent digits)
        if "e" not in text:
            text = f"{f:e}"
        mantissa, _, exponent = text.partition("e")
        sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
        return f"{mantissa}e{sign}{digits.zfill(2) if sign == '+' else digits}"
    if f.is_integer():
        return str(int(f))
    return format(Decimal(repr(f)), "f")


def cluster_object(spec: dict[str, Any], archive: bytes, members: list[Member]) -> dict[str, Any]:
    """The ``clusterDeployment`` object hzn signs, from the definition's and the (rebuilt) archive."""
    out = copy.deepcopy(spec)
    out["operatorYamlArchive"] = base64.b64encode(archive).decode("ascii")
    out["metadata"] = {"namespace": namespace(members)}
    pvc = out.get("mmsPVC")
    if isinstance(pvc, dict) and pvc.get("enable") is not True:
        del out["mmsPVC"]  # anax: "mmsPVC is not enabled for this cluster service"
    return out


def cluster_deployment_string(spec: dict[str, Any], archive_b64: str, pins: dict[str, str]) -> tuple[str, bytes]:
    """(the ``clusterDeployment`` string to sign and publish, the rebuilt archive) from the archive as read from the
    repository (``archive_b64``) and the image pins (tag -> ``host/path@sha256:…``)."""
    original = base64.b64decode(archive_b64)
    members = rewrite(read_archive(original, "operatorYamlArchive", max_bytes=_rebuild_limit(original)), pins)
    archive = build_archive(members)
    return go_json(cluster_object(spec, archive, members)), archive


def archive_of(cluster_deployment: str) -> list[Member]:
    """The members of a published ``clusterDeployment`` string's archive (for verify), DefinitionError if broken."""
    try:
        doc = json.loads(cluster_deployment)
        data = base64.b64decode(doc["operatorYamlArchive"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise DefinitionError("clusterDeployment has no readable operatorYamlArchive") from None
    return read_archive(data, "operatorYamlArchive", max_bytes=_rebuild_limit(data))


def _rebuild_limit(data: bytes) -> int:
    """A cap for re-reading an archive already checked against the setting (prepare sealed it; verify reads what
    the Exchange holds): deflate expands at most ~1032:1, so this never refuses a real archive of that size."""
    return (len(data) + 1) * 1100


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
