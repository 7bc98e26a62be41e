"""The Exchange stand-in's rules: ids, versions and ranges, body validation, and the (translated) messages.

Kept apart from the HTTP plumbing so the rules read like the Scala they mirror (exchange-api 2.154.0):
``ServicesTQ.formId``, ``utility/Version.scala`` and ``VersionRange.scala``, ``PostPutServiceRequest.getAnyProblem``,
``BusinessUtils.getAnyProblem``, ``PatternUtils.validatePatternServices`` and ``messages.txt`` / ``messages_de.txt``.
Where the real server rejects a body because its JSON does not fit a Scala case class (an object where a string is
expected, a missing non-optional field), the stand-in answers 400 the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+){0,2}")
SHARABLE = ("exclusive", "single", "singleton", "multiple")
_SANITIZE_RE = re.compile(r"[$!*,;/?@&~=%]")
_SCHEME_RE = re.compile(r"^[A-Za-z0-9+.-]*?://")
_URL_SCHEMES = ("http", "https", "ftp", "file", "jar")  # what java.net.URL knows without extra handlers

# -- messages -----------------------------------------------------------------------------------------------------
# ``code`` values (ApiRespType) and ``msg`` templates, in English and German. Both are translated by the real server
# (``api.language``), which is why clients must branch on the HTTP status only.
API_TYPES = {
    "en": {"ok": "ok", "invalid-credentials": "invalid-credentials", "access-denied": "access-denied",
           "already-exists": "already-exists", "invalid-input": "invalid-input", "not-found": "not-found",
           "internal_error": "internal_error", "database-connection-error": "database-connection-error",
           "database-timeout": "database-timeout"},
    "de": {"ok": "OK", "invalid-credentials": "Ungültige_Berechtigungsnachweise", "access-denied": "Zugriff_verweigert",
           "already-exists": "Bereits_vorhanden", "invalid-input": "Ungültige_Eingabe", "not-found": "Nicht_gefunden",
           "internal_error": "Interner_Fehler", "database-connection-error": "Datenbankverbindungsfehler",
           "database-timeout": "Datenbankzeitlimit_überschritten"},
}

MESSAGES: dict[str, tuple[str, str]] = {  # key -> (en, de); {0}… are positional arguments
    "invalid.credentials": ("invalid credentials", "Ungültige Berechtigungsnachweise"),
    "access.denied.no.auth": ("Access denied: '{0}' does not have authorization: {1}",
                              "Zugriff verweigert: '{0}' verfügt nicht über die Autorisierung: {1}"),
    "unrecognized.route": ("unrecognized route", "Nicht erkannte Route"),
    "method.not.allowed": ("HTTP method not allowed, supported methods: {0}",
                           "HTTP-Methode nicht zulässig, unterstützte Methoden: {0}"),
    "unsupported.media.type": ("The request's Content-Type is not supported. Expected: application/json",
                               "Der Content-Type der Anforderung wird nicht unterstützt. Erwartet: application/json"),
    "error.parsing.input.json": ("Error parsing the input body json: {0}",
                                 "Fehler beim Parsen des Hauptteils der Eingabe-JSON: {0}"),
    "invalid.input.message": ("invalid input: {0}", "Ungültige Eingabe: {0}"),
    "not.found": ("not found", "Nicht gefunden"),
    "user.not.found": ("user '{0}' not found", "Benutzer '{0}' nicht gefunden"),
    "org.not.found": ("org '{0}' not found", "Die Organisation (org) '{0}' wurde nicht gefunden"),
    "db.threw.exception": ("DB access threw exception: {0}", "Der Datenbankzugriff hat die folgende Ausnahmebedingung "
                                                             "ausgelöst: {0}"),
    "internal.error": ("internal error: {0}", "Interner Fehler: {0}"),
    # services
    "documentation.field.not.valid.url": ("the 'documentation' field is not valid URL format.",
                                          "Das Feld 'documentation' hat kein gültiges URL-Format."),
    "version.not.valid.format": ("version '{0}' is not valid version format.",
                                 "Die Version '{0}' hat kein gültiges Versionsformat."),
    "arch.cannot.be.empty": ("arch can not be empty.", "Die Angabe der Architektur (arch) darf nicht leer sein."),
    "service.id.does.not.match": (
        "the service id specified in the URL does not match the url, version, and arch in the body.",
        "Die in der URL angegebene Service-ID stimmt nicht mit der URL, der Version und der Architektur im Hauptteil "
        "überein."),
    "invalid.sharable.value": ("invalid value '{0}' for the sharable attribute.",
                               "Ungültiger Wert '{0}' für das gemeinsam nutzbare Attribut."),
    "no.version.range.in.req.service": (
        "required service '{0}' does not contain a versionRange",
        "Der erforderliche Service '{0}' enthält keinen Versionsbereich (versionRange)"),
    "req.service.has.wrong.arch": (
        "required service '{0}' has arch '{1}', which is different than this service's arch '{2}'",
        "Der erforderliche Service '{0}' hat die Architektur '{1}', die sich von der Architektur '{2}' dieses Service "
        "unterscheidet."),
    "service.def.not.signed": ("this service definition does not appear to be signed.",
                               "Diese Servicedefinition ist nicht signiert."),
    "req.service.not.in.exchange": (
        "the following required service does not exist in the exchange: org= {0}, url= {1}, version= {2}, arch= {3}",
        "Der folgende erforderliche Service ist im Exchange nicht vorhanden: Organisation = {0}, URL = {1}, "
        "Version= {2}, Architektur = {3}"),
    "service.created": ("service '{0}' created", "Der Service '{0}' wurde erstellt"),
    "service.already.exists": ("service '{0}' already exists: duplicate key value violates unique constraint",
                               "Der Service '{0}' ist bereits vorhanden: doppelter Schlüsselwert"),
    "service.updated": ("service updated", "Der Service wurde aktualisiert"),
    "service.not.found": ("service '{0}' not found", "Der Service '{0}' wurde nicht gefunden"),
    "service.deleted": ("service deleted", "Der Service wurde gelöscht"),
    "policy.added.or.updated": ("policy added or updated", "Richtlinie hinzugefügt oder aktualisiert"),
    # keys and dockauths
    "key.added.or.updated": ("key added or updated", "Der Schlüssel wurde hinzugefügt oder aktualisiert"),
    "key.must.not.be.empty": ("the key must not be empty", "Der Schlüssel darf nicht leer sein"),
    "no.service.keys.found": ("no keys for service '{0}' found", "Keine Schlüssel für den Service '{0}' gefunden"),
    "service.key.not.found": ("key '{0}' for service '{1}' not found",
                              "Der Schlüssel '{0}' für den Service '{1}' wurde nicht gefunden"),
    "service.key.deleted": ("service key deleted", "Der Serviceschlüssel wurde gelöscht"),
    "service.keys.deleted": ("service keys deleted", "Die Serviceschlüssel wurden gelöscht"),
    "dockauth.num.added": ("dockauth {0} added", "'dockauth' {0} wurde hinzugefügt"),
    "dockauth.resource.updated": ("dockauth resource updated", "Die Ressource 'dockauth' wurde aktualisiert"),
    "dockauth.fields.required": ("registry and token are required", "'registry' und 'token' sind erforderlich"),
    "no.dockauths.found.for.service": ("no dockauths for service '{0}' found",
                                       "Keine 'dockauths' für den Service '{0}' gefunden"),
    "dockauth.updated": ("dockauth {0} updated", "'dockauth' {0} wurde aktualisiert"),
    "dockauth.not.found": ("dockauth {0} not found", "'dockAuthId' {0} wurde nicht gefunden"),
    "dockauth.must.be.int": ("dockauthid must be an integer: {0}", "'dockauthid' muss eine ganze Zahl sein: {0}"),
    "service.dockauths.deleted": ("service dockauths deleted", "Service-'dockauths' gelöscht"),
    # deployment policies and patterns
    "buspol.created": ("business policy '{0}' created", "Die Geschäftsrichtlinie '{0}' wurde erstellt"),
    "buspol.already.exists": ("business policy '{0}' already exists: duplicate key value violates unique constraint",
                              "Die Geschäftsrichtlinie '{0}' ist bereits vorhanden: doppelter Schlüsselwert"),
    "buspol.updated": ("business policy updated", "Die Geschäftsrichtlinie wurde aktualisiert"),
    "business.policy.not.found": ("business policy '{0}' not found",
                                  "Die Geschäftsrichtlinie '{0}' wurde nicht gefunden"),
    "business.policy.deleted": ("business policy deleted", "Geschäftsrichtlinie wurde gelöscht"),
    "pattern.created": ("pattern '{0}' created", "Das Muster '{0}' wurde erstellt"),
    "pattern.already.exists": ("pattern '{0}' already exists: duplicate key value violates unique constraint",
                               "Das Muster '{0}' ist bereits vorhanden: doppelter Schlüsselwert"),
    "pattern.updated": ("pattern updated", "Das Muster wurde aktualisiert"),
    "pattern.id.not.found": ("pattern '{0}' not found", "Das Muster '{0}' wurde nicht gefunden"),
    "pattern.deleted": ("pattern deleted", "Das Muster wurde gelöscht"),
    "no.service.ref.specified.for.service": ("a service reference must specify name, org, and arch",
                                             "Für einen Service müssen 'name', 'org' und 'arch' angegeben werden"),
    "no.version.specified.for.service2": ("no versions specified for the service",
                                          "Für den Service wurden keine Versionen angegeben"),
    "no.version.specified.for.service": ("no versions specified for service '{0}', '{1}', '{2}'",
                                         "Keine Versionen für Service '{0}', '{1}', '{2}' angegeben"),
    "no.services.defined.in.pattern": (
        "no services defined in the pattern or the services field was empty",
        "Im Muster wurden keine Services gefunden oder das Feld für die Services war leer"),
    "pattern.definition.not.signed": ("this pattern definition does not appear to be signed.",
                                      "Diese Musterdefinition ist nicht signiert."),
    "service.not.in.exchange.no.index": (
        "the following referenced service does not exist in the exchange: org= {0}, url= {1}, version= {2}, arch= {3}",
        "Der folgende referenzierte Service ist im Exchange nicht vorhanden: Organisation = {0}, URL = {1}, "
        "Version= {2}, Architektur = {3}"),
    # nodes
    "search.fields.required": ("orgid, serviceURL, serviceVersion and serviceArch are required",
                               "'orgid', 'serviceURL', 'serviceVersion' und 'serviceArch' sind erforderlich"),
}


def translate(language: str, key: str, *args: object) -> str:
    en, de = MESSAGES.get(key, (key, key))
    return (de if language == "de" else en).format(*args)


def api_type(language: str, code: str) -> str:
    return API_TYPES.get(language, API_TYPES["en"]).get(code, code)


class ApiError(Exception):
    """An error answer: HTTP status, ApiRespType code and a message key (translated when the answer is written)."""

    def __init__(self, status: int, code: str, key: str, *args: object, headers: dict[str, str] | None = None) -> None:
        super().__init__(key)
        self.status, self.code, self.key, self.args_ = status, code, key, args
        self.headers = headers or {}


def bad_input(key: str, *args: object) -> ApiError:
    return ApiError(400, "invalid-input", key, *args)


def not_found(key: str = "not.found", *args: object) -> ApiError:
    return ApiError(404, "not-found", key, *args)


# -- ids and versions ---------------------------------------------------------------------------------------------
def form_id(url: str, version: str, arch: str) -> str:
    """``ServicesTQ.formId`` without the org: scheme stripped, ``$!*,;/?@&~=%`` → ``-``, ``_version_arch``."""
    return f"{_SANITIZE_RE.sub('-', _SCHEME_RE.sub('', url, count=1))}_{version}_{arch}"


def valid_version(version: object) -> bool:
    return isinstance(version, str) and VERSION_RE.fullmatch(version) is not None


def _version_key(version: str) -> tuple[float, ...] | None:
    """(major, minor, mod); INFINITY sorts above everything; None when invalid (Version.isValid false)."""
    text = version.strip().lower()
    if text == "infinity":
        return (float("inf"), 0.0, 0.0)
    if not VERSION_RE.fullmatch(text):
        return None
    parts = [float(p) for p in text.split(".")]
    return tuple(parts + [0.0] * (3 - len(parts)))


def in_range(version: str, spec: str) -> bool:
    """``Version(version) in VersionRange(spec)``, OSGi style as the Exchange reads it.

    ``[1.0.0,2.0.0)`` bounds with inclusive ``[ ]`` / exclusive ``( )``; a single version ``1.2.3`` means
    ``[1.2.3,INFINITY)`` (a minimum, not an exact match); ``[1.2.3,1.2.3]`` is the exact version.
    """
    v = _version_key(version)
    parts = [p.strip() for p in spec.strip().lower().split(",")]
    if v is None or len(parts) not in (1, 2) or not parts[0] or (len(parts) == 2 and not parts[1]):
        return False
    first, second = parts[0], (parts[1] if len(parts) == 2 else "infinity")
    floor_inclusive = not first.startswith("(")
    floor = _version_key(first.lstrip("[("))
    ceiling_inclusive = second.endswith("]")
    ceiling = _version_key(second.rstrip("])"))
    if floor is None or ceiling is None:
        return False
    if (floor > v) if floor_inclusive else (floor >= v):
        return False
    return not ((v > ceiling) if ceiling_inclusive else (v >= ceiling))


# -- bodies -------------------------------------------------------------------------------------------------------
def _string(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    """A Scala ``String`` (required, non-null) or ``Option[String]`` field: anything but a string is a 400."""
    value = body.get(name)
    if value is None:
        if required:
            raise bad_input("invalid.input.message", f"{name} is required")
        return None
    if not isinstance(value, str):
        raise bad_input("error.parsing.input.json", f"{name} must be a string, not {type(value).__name__}")
    return value


def _list_of_objects(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise bad_input("error.parsing.input.json", f"{name} must be a list of objects")
    return value


def _object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_input("error.parsing.input.json", f"{name} must be an object")
    return value


def _valid_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme.lower() in _URL_SCHEMES and (bool(parts.netloc) or parts.scheme.lower() in ("file", "jar"))


ServiceRow = tuple[str, str, str, str]  # (org, url, version, arch) of a stored service


def validate_service(body: dict[str, Any], org: str, url_id: str | None,
                     existing: Callable[[], Iterable[ServiceRow]]) -> dict[str, Any]:
    """``PostPutServiceRequest``: check a service body and return what the Exchange stores (its known fields).

    ``url_id`` is the id in a PUT URL (None for POST). ``existing`` lists stored services, for requiredServices.
    """
    label = _string(body, "label", required=True)
    url = _string(body, "url", required=True)
    version = _string(body, "version", required=True)
    arch = _string(body, "arch", required=True)
    sharable = _string(body, "sharable", required=True)
    assert label is not None and url is not None and version is not None and arch is not None and sharable is not None
    if not isinstance(body.get("public"), bool):
        raise bad_input("error.parsing.input.json", "public is required and must be a boolean")
    description = _string(body, "description", required=False)
    documentation = _string(body, "documentation", required=False) or ""
    deployment = {name: _string(body, name, required=False) or "" for name in
                  ("deployment", "deploymentSignature", "clusterDeployment", "clusterDeploymentSignature")}
    match_hardware, image_store = _object(body, "matchHardware"), _object(body, "imageStore")
    required = _list_of_objects(body, "requiredServices")
    user_input = _list_of_objects(body, "userInput")

    if documentation and not _valid_url(documentation):
        raise bad_input("documentation.field.not.valid.url")
    if not valid_version(version):
        raise bad_input("version.not.valid.format", version)
    if arch == "":
        raise bad_input("arch.cannot.be.empty")
    if url_id is not None and form_id(url, version, arch) != url_id:
        raise bad_input("service.id.does.not.match")
    if sharable not in SHARABLE:
        raise bad_input("invalid.sharable.value", sharable)
    refs = []
    for dep in required:
        ref = {"url": _string(dep, "url", required=True), "org": _string(dep, "org", required=True)}
        for optional in ("version", "versionRange"):
            if dep.get(optional) is not None:
                ref[optional] = _string(dep, optional, required=False)
        ref["arch"] = _string(dep, "arch", required=True)
        if ref.get("version") is None and ref.get("versionRange") is None:
            raise bad_input("no.version.range.in.req.service", ref["url"])
        if ref["arch"] != arch:
            raise bad_input("req.service.has.wrong.arch", ref["url"], ref["arch"], arch)
        refs.append(ref)
    if deployment["deployment"] and not deployment["deploymentSignature"]:
        raise bad_input("service.def.not.signed")
    # exchange-api route/service/PostPutServiceRequest.scala validate(): a non-empty clusterDeployment needs a
    # non-empty clusterDeploymentSignature; neither deployment is required (the "service.no.deployment" check is
    # commented out there) and neither string is parsed or verified: the agent verifies them.
    if deployment["clusterDeployment"] and not deployment["clusterDeploymentSignature"]:
        raise bad_input("service.def.not.signed")
    rows = list(existing()) if refs else []
    for ref in refs:
        spec = str(ref["versionRange"] if ref.get("versionRange") is not None else ref.get("version") or "")
        if not any((r_org, r_url, r_arch) == (ref["org"], ref["url"], ref["arch"]) and in_range(r_version, spec)
                   for r_org, r_url, r_version, r_arch in rows):
            raise bad_input("req.service.not.in.exchange", ref["org"], ref["url"], spec, ref["arch"])
    return {
        "label": label, "description": label if description is None else description, "public": body["public"],
        "documentation": documentation, "url": url, "version": version, "arch": arch, "sharable": sharable,
        "matchHardware": match_hardware, "requiredServices": refs, "userInput": user_input, **deployment,
        "imageStore": image_store,
    }


def _service_versions(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise bad_input("error.parsing.input.json", "serviceVersions must be a list of objects")
    for entry in value:
        version = _string(entry, "version", required=True)
        if not valid_version(version):
            raise bad_input("version.not.valid.format", version)
    return value


def _must_exist(org: str, url: str, versions: list[dict[str, Any]], arch: str,
                existing: Callable[[], Iterable[ServiceRow]]) -> None:
    """``validateServiceIds``: every pinned version must be a published service (arch ``*`` or ``""``: any)."""
    rows = set(existing())
    for entry in versions:
        if not any((r_org, r_url, r_version) == (org, url, entry["version"]) and arch in ("*", "", r_arch)
                   for r_org, r_url, r_version, r_arch in rows):
            raise bad_input("service.not.in.exchange.no.index", org, url, entry["version"], arch)


def validate_policy(body: dict[str, Any], existing: Callable[[], Iterable[ServiceRow]]) -> dict[str, Any]:
    """``PostPutBusinessPolicyRequest`` + ``BusinessUtils.getAnyProblem`` + ``validateServiceIds``."""
    _string(body, "label", required=True)
    service = body.get("service")
    if not isinstance(service, dict):
        raise bad_input("invalid.input.message", "service is required")
    names = [_string(service, key, required=False) for key in ("name", "org", "arch")]
    if any(value is None for value in names) or service.get("serviceVersions") is None:
        raise bad_input("no.service.ref.specified.for.service")
    versions = _service_versions(service["serviceVersions"])
    if not versions:
        raise bad_input("no.version.specified.for.service2")
    name, svc_org, arch = (str(value) for value in names)
    _must_exist(svc_org, name, versions, arch, existing)
    return body


def validate_pattern(body: dict[str, Any], existing: Callable[[], Iterable[ServiceRow]]) -> dict[str, Any]:
    """``PostPutPatternRequest`` + ``PatternUtils.validatePatternServices`` + ``validateServiceIds``."""
    _string(body, "label", required=True)
    if body.get("services") is None:
        raise bad_input("invalid.input.message", "services is required")
    services = _list_of_objects(body, "services")
    if not services:
        raise bad_input("no.services.defined.in.pattern")
    for entry in services:
        url, svc_org, arch = (_string(entry, key, required=True) for key in ("serviceUrl", "serviceOrgid",
                                                                              "serviceArch"))
        if entry.get("serviceVersions") is None:
            raise bad_input("invalid.input.message", "serviceVersions is required")
        versions = _service_versions(entry["serviceVersions"])
        if not versions:
            raise bad_input("no.version.specified.for.service", svc_org, url, arch)
        for version in versions:
            if version.get("deployment_overrides") and not version.get("deployment_overrides_signature"):
                raise bad_input("pattern.definition.not.signed")
        _must_exist(str(svc_org), str(url), versions, str(arch), existing)
    return body


def agbot_priority_problem(versions: Iterable[dict[str, Any]]) -> str:
    """Why the agreement bot would refuse these ``serviceVersions`` ("" when it accepts them): anax
    ``businesspolicy/business_policy.go`` ``ServiceRef.Validate``. A non-zero ``priority_value`` needs non-zero
    ``retries`` and ``retry_durations``; a zero or absent one needs ``retries``, ``retry_durations`` and
    ``verified_durations`` all zero. The Exchange stores such a policy without complaint; the agbot drops it."""
    for entry in versions:
        priority = entry.get("priority") or {}
        if not isinstance(priority, dict):
            return f"version {entry.get('version')}: priority must be an object"
        value = priority.get("priority_value") or 0
        retries, durations = priority.get("retries") or 0, priority.get("retry_durations") or 0
        verified = priority.get("verified_durations") or 0
        if value != 0 and (retries == 0 or durations == 0):
            return (f"version {entry.get('version')}: priority_value {value} needs non-zero retries and "
                    "retry_durations")
        if value == 0 and (retries or durations or verified):
            return (f"version {entry.get('version')}: without a priority_value, retries, retry_durations and "
                    "verified_durations must be zero")
    return ""
