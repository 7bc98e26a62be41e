"""The `/edge` command grammar: text in, a command or a :class:`UsageError` out. Never anything else.

    /edge publish SERVICE VERSION --registry ALIAS [--arch a,b] [--org ORG] [--policy NAME] [--dry-run] [--overwrite]
    /edge status [RELEASE]
    /edge history SERVICE [--limit N]
    /edge cancel RELEASE
    /edge rollout SERVICE [VERSION]
    /edge rollback SERVICE [--to VERSION [--policy NAME] [--registry ALIAS]]
    /edge deploy SERVICE VERSION [--policy NAME] [--registry ALIAS]
    /edge verify SERVICE VERSION [--org ORG]
    /edge help [publish]

Slack clients turn ``--`` into an em dash when "smart punctuation" is on, so ``—registry`` reads as ``--registry``.
Only the shape is checked here; whether SERVICE and ALIAS exist is the catalog's business (:mod:`bot.intake`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgebot.errors import UsageError
from edgebot.ids import GO_ARCHES, RELEASE_ID_RE, VERSION_RE
from edgebot.messages import (
    CANCEL_USAGE,
    DEPLOY_USAGE,
    HELP_USAGE,
    HISTORY_USAGE,
    PUBLISH_USAGE,
    ROLLBACK_USAGE,
    ROLLOUT_USAGE,
    STATUS_USAGE,
    VERIFY_USAGE,
)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ORG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DASHES = ("\u2014", "\u2013", "\u2012", "\u2015", "\u2212")  # em, en, figure dash, bar, minus
_ARCH_HINTS = {"x86_64": "amd64", "aarch64": "arm64", "armhf": "arm", "armv7": "arm", "ppc64el": "ppc64le"}
_VALUE_FLAGS = ("registry", "arch", "org", "policy")
_BOOL_FLAGS = ("dry-run", "overwrite", "public", "private")


@dataclass(frozen=True)
class PublishCommand:
    service: str
    version: str
    registry: str
    arches: tuple[str, ...] | None = None
    org: str | None = None
    dry_run: bool = False
    overwrite: bool = False
    policies: tuple[str, ...] | None = None
    """``--policy a,b``: roll out through only these of the service's catalog policies/patterns."""
    public: bool | None = None
    """``--public`` (True) / ``--private`` (False) override the definition's ``public`` (``hzn … publish --public``);
    None: the definition decides."""


@dataclass(frozen=True)
class HelpCommand:
    topic: str = ""


@dataclass(frozen=True)
class StatusCommand:
    release_id: str | None = None
    service: str | None = None
    """``/edge status SERVICE``: the service's recorded dockauth expiries (a name that is not a release id)."""


@dataclass(frozen=True)
class CancelCommand:
    release_id: str


@dataclass(frozen=True)
class HistoryCommand:
    service: str
    limit: int = 10


@dataclass(frozen=True)
class RolloutCommand:
    service: str
    version: str | None = None


@dataclass(frozen=True)
class RollbackCommand:
    service: str


@dataclass(frozen=True)
class DeployCommand:
    """``/edge deploy SERVICE VERSION`` (or ``/edge rollback SERVICE --to VERSION``, ``as_rollback``): move the
    rollout stages to a version already in the Exchange, without a build."""

    service: str
    version: str
    policies: tuple[str, ...] | None = None
    registry: str | None = None
    """Which registry's approval rules apply (the images of the version must be in it); default: see bot.intake."""
    as_rollback: bool = False


@dataclass(frozen=True)
class VerifyCommand:
    """``/edge verify SERVICE VERSION [--org ORG]``: read the version back from the Exchange (issue 15)."""

    service: str
    version: str
    org: str | None = None


Command = (PublishCommand | HelpCommand | StatusCommand | HistoryCommand | CancelCommand | RolloutCommand
           | RollbackCommand | DeployCommand | VerifyCommand)
MAX_HISTORY = 25


def parse(text: str) -> Command:
    """Parse the text after ``/edge``. Raises :class:`UsageError` (and nothing else) for anything it refuses."""
    words = [_normalize_dashes(w) for w in (text or "").split()]
    if not words:
        return HelpCommand()
    verb, rest = words[0].lower(), words[1:]
    if verb in ("help", "-h", "--help", "?"):
        if len(rest) > 1 or (rest and rest[0].lower() not in ("publish", "status", "history")):
            raise UsageError(f"I have no help on {' '.join(rest)!r}.", HELP_USAGE)
        return HelpCommand(rest[0].lower() if rest else "")
    if verb == "publish":
        return _parse_publish(rest)
    if verb == "status":
        return _parse_status(rest)
    if verb == "history":
        return _parse_history(rest)
    if verb == "rollout":
        return _parse_rollout(rest)
    if verb == "deploy":
        return _parse_deploy(rest, as_rollback=False)
    if verb == "rollback":
        if any(w.startswith("--") for w in rest):
            return _parse_deploy(rest, as_rollback=True)
        if len(rest) != 1 or not _NAME_RE.match(rest[0]):
            problem = "SERVICE missing." if not rest else (
                f"Unexpected extra words: {' '.join(_quote(w) for w in rest[1:])}." if len(rest) > 1
                else f"{_quote(rest[0])} is not a service name.")
            raise UsageError(problem, ROLLBACK_USAGE)
        return RollbackCommand(rest[0])
    if verb == "verify":
        return _parse_verify(rest)
    if verb == "cancel":
        if not rest:
            raise UsageError("RELEASE missing: which release to cancel (`/edge status` lists them).", CANCEL_USAGE)
        status = _parse_status(rest)
        if status.service:  # a name: `status` shows a service, cancel needs a release
            raise UsageError(f"{_quote(rest[0])} is not a release id (they look like `r-7f3a9c0d12e4b856`).",
                             CANCEL_USAGE)
        return CancelCommand(status.release_id or "")
    raise UsageError(
        f"Unknown command {_quote(words[0])}. I know `publish`, `deploy`, `status`, `history`, `rollout`, "
        "`rollback`, `verify`, `cancel` and `help`.",
        PUBLISH_USAGE,
    )


def _parse_status(words: list[str]) -> StatusCommand:
    if not words:
        return StatusCommand()
    if len(words) > 1:
        raise UsageError(f"Unexpected extra words: {' '.join(_quote(w) for w in words[1:])}.", STATUS_USAGE)
    if not RELEASE_ID_RE.match(words[0].lower()):
        if _NAME_RE.match(words[0]) and not words[0].startswith("r-"):
            return StatusCommand(service=words[0])  # the listener answers for a name outside the catalog
        raise UsageError(f"{_quote(words[0])} is not a release id (they look like `r-7f3a9c0d12e4b856`) nor a "
                         "service name.", STATUS_USAGE)
    return StatusCommand(words[0].lower())


def _parse_rollout(words: list[str]) -> RolloutCommand:
    if not words:
        raise UsageError("SERVICE missing.", ROLLOUT_USAGE)
    if len(words) > 2:
        raise UsageError(f"Unexpected extra words: {' '.join(_quote(w) for w in words[2:])}.", ROLLOUT_USAGE)
    if not _NAME_RE.match(words[0]):
        raise UsageError(f"{_quote(words[0])} is not a service name.", ROLLOUT_USAGE)
    if len(words) == 2 and not VERSION_RE.match(words[1]):
        raise UsageError(f"{_quote(words[1])} is not a version (`1`, `1.2` or `1.2.3`).", ROLLOUT_USAGE)
    return RolloutCommand(words[0], words[1] if len(words) == 2 else None)


def _parse_history(words: list[str]) -> HistoryCommand:
    limit = 10
    positional: list[str] = []
    i = 0
    while i < len(words):
        name, eq, value = words[i].partition("=")
        if name.lower() == "--limit":
            if not eq:
                if i + 1 >= len(words):
                    raise UsageError("`--limit` needs a number.", HISTORY_USAGE)
                value = words[i + 1]
                i += 1
            if not value.isdigit() or not 1 <= int(value) <= MAX_HISTORY:
                raise UsageError(f"`--limit` takes a number from 1 to {MAX_HISTORY}.", HISTORY_USAGE)
            limit = int(value)
        elif name.startswith("--"):
            raise UsageError(f"Unknown option {_quote(words[i])}.", HISTORY_USAGE)
        else:
            positional.append(words[i])
        i += 1
    if len(positional) != 1:
        problem = "SERVICE missing." if not positional else (
            f"Unexpected extra words: {' '.join(_quote(w) for w in positional[1:])}.")
        raise UsageError(problem, HISTORY_USAGE)
    if not _NAME_RE.match(positional[0]):
        raise UsageError(f"{_quote(positional[0])} is not a service name.", HISTORY_USAGE)
    return HistoryCommand(positional[0], limit)


def _options(words: list[str], usage: str, valued: tuple[str, ...],
             switches: frozenset[str] = frozenset()) -> tuple[list[str], dict[str, str], set[str]]:
    """Split ``words`` into positional words, ``--name VALUE`` / ``--name=VALUE`` options (names in ``valued``) and
    ``--switch``es; an unknown option, one given twice, a missing value or a value given to a switch is a usage error
    naming it."""
    positional: list[str] = []
    values: dict[str, str] = {}
    flags: set[str] = set()
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--"):
            positional.append(word)
            i += 1
            continue
        name, eq, value = word[2:].partition("=")
        name = name.lower()
        if name in switches:
            if eq:
                raise UsageError(f"`--{name}` takes no value.", usage)
            if name in flags:
                raise UsageError(f"`--{name}` is given twice.", usage)
            flags.add(name)
            i += 1
            continue
        if name not in valued:
            raise UsageError(f"Unknown option {_quote(word)}.", usage)
        if name in values:
            raise UsageError(f"`--{name}` is given twice.", usage)
        if not eq:
            if i + 1 >= len(words) or words[i + 1].startswith("--"):
                raise UsageError(f"`--{name}` needs a value.", usage)
            value = words[i + 1]
            i += 1
        if not value:
            raise UsageError(f"`--{name}` needs a value.", usage)
        values[name] = value
        i += 1
    return positional, values, flags


def _policies(values: dict[str, str], usage: str) -> tuple[str, ...] | None:
    """``--policy a,b``: the names in order, each once; None without the option."""
    if "policy" not in values:
        return None
    policies = tuple(dict.fromkeys(p.strip() for p in values["policy"].split(",")))
    bad = [p for p in policies if not _NAME_RE.match(p)]
    if bad:
        raise UsageError(f"{_quote(bad[0])} is not a policy or pattern name.", usage)
    return policies


def _parse_publish(words: list[str]) -> PublishCommand:
    positional, values, flags = _options(words, PUBLISH_USAGE, _VALUE_FLAGS, frozenset(_BOOL_FLAGS))
    if len(positional) < 2:
        missing = "SERVICE and VERSION" if not positional else "VERSION"
        raise UsageError(f"{missing} missing.", PUBLISH_USAGE)
    if len(positional) > 2:
        extra = " ".join(_quote(w) for w in positional[2:])
        raise UsageError(f"Unexpected extra words: {extra}.", PUBLISH_USAGE)
    service, version = positional
    if not _NAME_RE.match(service):
        raise UsageError(f"{_quote(service)} is not a service name (lower-case letters, digits, `.`, `_`, `-`).",
                         PUBLISH_USAGE)
    if not VERSION_RE.match(version):
        raise UsageError(
            f"Version {_quote(version)} would be refused by the Exchange: it accepts `1`, `1.2` or `1.2.3` "
            "(digits only, no `v` prefix or `-suffix`).",
            PUBLISH_USAGE,
        )
    if "registry" not in values:
        raise UsageError("`--registry ALIAS` is required: it says where the images go.", PUBLISH_USAGE)
    registry = values["registry"]
    if not _NAME_RE.match(registry):
        raise UsageError(f"{_quote(registry)} is not a registry alias.", PUBLISH_USAGE)
    arches = _parse_arches(values["arch"]) if "arch" in values else None
    org = values.get("org")
    if org is not None and not _ORG_RE.match(org):
        raise UsageError(f"{_quote(org)} is not an Exchange org name.", PUBLISH_USAGE)
    policies = _policies(values, PUBLISH_USAGE)
    if "public" in flags and "private" in flags:
        raise UsageError("`--public` and `--private` contradict each other: give one of them (or neither, and the "
                         "definition's `public` decides).", PUBLISH_USAGE)
    return PublishCommand(
        service=service,
        version=version,
        registry=registry,
        arches=arches,
        org=org,
        dry_run="dry-run" in flags,
        overwrite="overwrite" in flags,
        policies=policies,
        public=True if "public" in flags else False if "private" in flags else None,
    )


def _parse_deploy(words: list[str], *, as_rollback: bool) -> DeployCommand:
    """``deploy SERVICE VERSION [--policy a,b] [--registry ALIAS]`` or ``rollback SERVICE --to VERSION [...]``."""
    usage = ROLLBACK_USAGE if as_rollback else DEPLOY_USAGE
    known = ("to", "policy", "registry") if as_rollback else ("policy", "registry")
    positional, values, _ = _options(words, usage, known)
    wanted = 1 if as_rollback else 2
    if len(positional) < wanted:
        raise UsageError("SERVICE missing." if not positional else "VERSION missing.", usage)
    if len(positional) > wanted:
        raise UsageError(f"Unexpected extra words: {' '.join(_quote(w) for w in positional[wanted:])}.", usage)
    service = positional[0]
    if not _NAME_RE.match(service):
        raise UsageError(f"{_quote(service)} is not a service name.", usage)
    if as_rollback and "to" not in values:
        raise UsageError("`--policy` and `--registry` go with `--to VERSION` (the version to roll back to).", usage)
    version = values["to"] if as_rollback else positional[1]
    if not VERSION_RE.match(version):
        raise UsageError(f"{_quote(version)} is not a version (`1`, `1.2` or `1.2.3`).", usage)
    registry = values.get("registry")
    if registry is not None and not _NAME_RE.match(registry):
        raise UsageError(f"{_quote(registry)} is not a registry alias.", usage)
    policies = _policies(values, usage)
    return DeployCommand(service, version, policies=policies, registry=registry, as_rollback=as_rollback)


def _parse_arches(value: str) -> tuple[str, ...]:
    arches: list[str] = []
    for arch in value.split(","):
        arch = arch.strip().lower()
        if not arch:
            raise UsageError("`--arch` takes a comma-separated list such as `amd64,arm64`.", PUBLISH_USAGE)
        if arch not in GO_ARCHES:
            hint = f" (did you mean `{_ARCH_HINTS[arch]}`?)" if arch in _ARCH_HINTS else ""
            raise UsageError(
                f"{_quote(arch)} is not an Open Horizon arch{hint}; use one of {', '.join(GO_ARCHES)}.", PUBLISH_USAGE
            )
        if arch not in arches:
            arches.append(arch)
    return tuple(arches)


def _normalize_dashes(word: str) -> str:
    for dash in _DASHES:
        if word.startswith(dash):
            return "--" + word[len(dash):].lstrip("-" + "".join(_DASHES))
    return word


def _quote(word: str, limit: int = 40) -> str:
    """Echo user input back safely: inside code quotes, without backticks, bounded in length."""
    cleaned = word.replace("`", "'")
    if len(cleaned) > limit:
        cleaned = cleaned[:limit] + "…"
    return f"`{cleaned}`"


def _parse_verify(words: list[str]) -> VerifyCommand:
    """``verify SERVICE VERSION [--org ORG]``."""
    positional, values, _ = _options(words, VERIFY_USAGE, ("org",))
    org = values.get("org")
    if org is not None and not _ORG_RE.match(org):
        raise UsageError(f"{_quote(org)} is not an Exchange org name.", VERIFY_USAGE)
    if len(positional) < 2:
        raise UsageError("SERVICE missing." if not positional else "VERSION missing.", VERIFY_USAGE)
    if len(positional) > 2:
        raise UsageError(f"Unexpected extra words: {' '.join(_quote(w) for w in positional[2:])}.", VERIFY_USAGE)
    service, version = positional
    if not _NAME_RE.match(service):
        raise UsageError(f"{_quote(service)} is not a service name.", VERIFY_USAGE)
    if not VERSION_RE.match(version):
        raise UsageError(f"{_quote(version)} is not a version (`1`, `1.2` or `1.2.3`).", VERIFY_USAGE)
    return VerifyCommand(service, version, org)
