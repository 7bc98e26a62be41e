"""The audit trail users can keep: one JSON line per action, written with the action, shipped to a sink.

Every write of a release record goes through :class:`edgebot.store.ReleaseStore` (``create``, ``update``); both call
:func:`record` with the record before and after, inside the MULTI that writes it. :func:`actions` (pure) compares the
two and names the actions the write makes happen; each becomes one entry of the Redis stream ``<prefix>:audit``
(XADD, capped at about ``settings.audit_stream_max`` entries) in that same transaction: an action without its audit
entry cannot happen, and an entry never describes an action that did not happen. A publish worker ships the stream to
the configured sink (workers/audit_ship.py), where users keep it beyond the record's 30-day retention.

    [audit]
    sink = "file:/var/log/edgebot/audit.jsonl"   # or "stdout", or "https://siem.example/ingest"
    auth_header = "env:EDGEBOT_AUDIT_TOKEN"       # optional, HTTP only: the Authorization header's value

A line (:func:`line`) says who did what to which release, with the digests, the signature and key fingerprints and the
policies moved; never a secret: no token, password, deployment signature body, seal or command text. Text fields are
bounded (:data:`TEXT_MAX`).
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edgebot.errors import ConfigError, refuse_unknown_keys
from edgebot.secrets import SecretRef

if TYPE_CHECKING:
    from edgebot.release import Release
    from edgebot.settings import Settings

TEXT_MAX = 300
"""Characters kept of any text field of a line (an error message, a rejection's reason, a name)."""
FIELD = "line"
"""The stream entry's one field: the line's JSON (without its ``id``, which is the entry's stream id)."""

ACTIONS = ("publish.requested", "deploy.requested", "rollback.requested", "approval.approved", "approval.rejected",
           "approval.expired", "rollback.approved", "rollback.rejected", "rollback.expired", "release.cancelled",
           "publish.completed", "publish.failed", "deploy.failed", "rollout.started", "release.succeeded",
           "rollback.completed")
"""Every action a line may name."""


# -- configuration -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditConfig:
    kind: str
    """file | stdout | http"""
    target: str = ""
    """The file's path, or the endpoint's URL."""
    auth_header: SecretRef | None = None
    """HTTP only: the value of the ``Authorization`` header (a secret reference)."""


def parse_audit(table: Any) -> AuditConfig | None:
    """``[audit]`` → :class:`AuditConfig` (None when absent: no sink, the stream alone), or a ConfigError naming the
    fix."""
    if table is None:
        return None
    example = 'e.g. sink = "file:/var/log/edgebot/audit.jsonl", "stdout" or "https://siem.example/ingest"'
    if not isinstance(table, dict):
        raise ConfigError(f"[audit] must be a table with a sink: {example}")
    refuse_unknown_keys(table, "[audit]", {"sink", "auth_header"})
    sink = table.get("sink")
    if not isinstance(sink, str) or not sink.strip():
        raise ConfigError(f"audit.sink is required ({example})")
    sink = sink.strip()
    auth = table.get("auth_header")
    if sink == "stdout":
        config = AuditConfig("stdout")
    elif sink.startswith("file:"):
        path = sink[len("file:"):]
        if not path.startswith("/"):
            raise ConfigError(f"audit.sink {sink!r}: the file must be an absolute path, e.g. "
                              "file:/var/log/edgebot/audit.jsonl")
        config = AuditConfig("file", path)
    elif sink.startswith(("http://", "https://")):
        problem = http_problem(sink)
        if problem:
            raise ConfigError(f"audit.sink: {problem}")
        config = AuditConfig("http", sink)
    else:
        raise ConfigError(f"audit.sink {sink!r} is not a sink ({example})")
    if auth is not None:
        if config.kind != "http":
            raise ConfigError("audit.auth_header applies to an HTTP sink only; remove it, or send to an https:// URL")
        config = AuditConfig(config.kind, config.target, SecretRef.parse(auth, where="audit.auth_header"))
    return config


def http_problem(url: str) -> str | None:
    """Why ``url`` may not receive audit lines (None: it may): https only, except to this machine (loopback)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return f"{url!r} has no host"
    if parts.scheme == "https":
        return None
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme == "http" and loopback:
        return None
    return (f"{url!r} is not https: audit lines name who released what, so they travel over TLS only "
            "(plain http is accepted for a loopback address, e.g. a local forwarder)")


# -- keys ----------------------------------------------------------------------------------------------------------
def stream_key(prefix: str) -> str:
    return f"{prefix}:audit"


def shipped_key(prefix: str) -> str:
    """The id of the last stream entry the sink accepted."""
    return f"{prefix}:audit-shipped"


def shipped_count_key(prefix: str) -> str:
    """How many entries were shipped (or counted lost): with the stream's ``entries-added``, tells entries trimmed
    before they were shipped."""
    return f"{prefix}:audit-shipped-count"


def ship_lock_key(prefix: str) -> str:
    return f"{prefix}:audit-ship-lock"


# -- what a write did ------------------------------------------------------------------------------------------------
def actions(before: Release | None, after: Release) -> list[tuple[str, dict[str, Any]]]:
    """The actions the write from ``before`` (None: the record is created) to ``after`` makes happen, in order, each
    with what is particular to it (who, a reason, an error)."""
    found: list[tuple[str, dict[str, Any]]] = []
    if before is None:
        kind = {"deploy": "deploy.requested", "rollback": "rollback.requested"}.get(after.kind, "publish.requested")
        found.append((kind, {"user_id": after.user_id}))
    new_events = after.events[len(before.events):] if before is not None else []
    for request, prefix in (("approval", "approval"), ("rollback_request", "rollback")):
        was, now = getattr(before, request, None), getattr(after, request)
        if now is None:
            continue
        same_round = was is not None and was.requested_at == now.requested_at and was.round == now.round
        for decision in now.decisions[len(was.decisions) if was is not None and same_round else 0:]:
            extra = {"user_id": decision.user_id, "round": now.round, "covers": decision.covers_digest}
            if decision.reason:
                extra["reason"] = decision.reason
            found.append((f"{prefix}.{decision.outcome}", extra))
    for event in new_events:
        what = event.get("what")
        if what == "rollback_requested":
            found.append(("rollback.requested", {"user_id": event.get("by", "")}))
        elif what == "published":
            found.append(("publish.completed", {}))
        elif what == "rollout":
            found.append(("rollout.started", {}))
        elif what == "rollback_request_expired":
            found.append(("rollback.expired", {}))
        elif what == "rolled_back":
            found.append(("rollback.completed", {"user_id": event.get("by", "")}))
    if before is not None and after.state != before.state:
        state = str(after.state)
        if state == "cancelled":
            found.append(("release.cancelled", {"user_id": _by(new_events, "cancelled")}))
        elif state == "failed":
            found.append(("deploy.failed" if after.is_deploy else "publish.failed", {"error": after.error}))
        elif state == "expired":
            found.append(("approval.expired", {}))
        elif state == "succeeded":
            found.append(("release.succeeded", {}))
    return found


def _by(events: list[dict[str, Any]], what: str) -> str:
    return next((str(e.get("by", "")) for e in events if e.get("what") == what), "")


def _text(value: Any) -> str:
    text = str(value or "")
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 1] + "…"


def line(action: str, release: Release, extra: dict[str, Any] | None = None, *,
         at: float | None = None) -> dict[str, Any]:
    """One audit line (without its ``id``): the action, who, which release, and what it covers. Only ids, names,
    digests and fingerprints: every field is chosen here, never copied wholesale from the record."""
    extra = dict(extra or {})
    body: dict[str, Any] = {
        "at": round(at if at is not None else time.time(), 3),
        "action": action,
        "release_id": _text(release.release_id),
        "kind": _text(release.kind),
        "team_id": _text(release.team_id),
        "channel_id": _text(release.channel_id),
        "user_id": _text(extra.pop("user_id", "") or ""),
        "requester_id": _text(release.user_id),
        "service": _text(release.service),
        "org": _text(release.org),
        "version": _text(release.version),
        "registry": _text(release.registry),
        "state": _text(release.state),
        "dry_run": bool(release.dry_run),
        "commit": _text(release.commit_sha),
        "digests": {_text(a): _text(r.digest) for a, r in sorted(release.results.items()) if r.digest},
        "signatures": {_text(a): _text(r.signature_fingerprint) for a, r in sorted(release.results.items())
                       if r.signature_fingerprint},
        "key_fingerprint": _text(release.public_key_fingerprint),
        "policies": policies_moved(release),
    }
    for key in ("reason", "error", "covers", "round"):
        if key in extra:
            body[key] = extra[key] if key == "round" else _text(extra[key])
    return body


def policies_moved(release: Release) -> list[dict[str, str]]:
    """The deployment policies and patterns the rollout changed (or is changing): kind, name, stage."""
    moved: list[dict[str, str]] = []
    for stage in release.rollout:
        if str(stage.status) == "pending":
            continue
        for target in stage.targets:
            moved.append({"stage": _text(stage.name), "kind": _text(target.get("kind")),
                          "name": _text(target.get("name")), "arch": _text(target.get("arch"))})
    return moved


def record(pipe: Any, settings: Settings, before: Release | None, after: Release) -> int:
    """Add the audit entries of this write to ``pipe`` (the MULTI that writes ``after``); return how many."""
    found = actions(before, after)
    for action, extra in found:
        payload = json.dumps(line(action, after, extra), separators=(",", ":"), sort_keys=True)
        pipe.xadd(stream_key(settings.key_prefix), {FIELD: payload}, maxlen=max(1, settings.audit_stream_max),
                  approximate=True)
    return len(found)


__all__ = ["ACTIONS", "AuditConfig", "actions", "http_problem", "line", "parse_audit", "policies_moved", "record",
           "ship_lock_key", "shipped_count_key", "shipped_key", "stream_key"]
