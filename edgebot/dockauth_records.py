"""What edgebot knows about the registry tokens it stored for nodes (dockauths): per service version, arch and
registry, the user name and when the token expires — never the token.

Written by the publish worker when it publishes (``workers/dockauths.py``), refreshed by the daily check and by
``edgebot dockauth refresh``; read by the bot for ``/edge status SERVICE``, which holds no Exchange credential. One
Redis hash per service: ``{prefix}:dockauths:{org}:{service}``, field ``{version}|{arch}|{registry}``, value JSON.

An OpenShift service-account token (``oc create token``) is a JWT whose ``exp`` says when nodes stop being able to pull
with it; other tokens (htpasswd passwords, API keys) have no expiry edgebot can read (``expires_at`` None).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from edgebot.settings import Settings


@dataclass(frozen=True)
class DockauthRecord:
    org: str
    service: str
    """The catalog name."""
    url: str
    """The service's Exchange url (from its definition): with version and arch, the Exchange service id."""
    version: str
    arch: str
    registry: str
    """``host[:port]`` exactly as in the dockauth (agents use an auth only on an exact match)."""
    username: str
    expires_at: float | None
    """The token's JWT ``exp`` (seconds since the epoch); None when the token carries none."""
    service_id: str = ""
    dockauth_id: int | None = None
    checked_at: float = 0.0

    @property
    def field(self) -> str:
        return f"{self.version}|{self.arch}|{self.registry}"

    def expires_within(self, window: float, now: float) -> bool:
        return self.expires_at is not None and self.expires_at - now <= window


def key(settings: Settings, org: str, service: str) -> str:
    return f"{settings.key_prefix}:dockauths:{org}:{service}"


def warned_key(settings: Settings, record: DockauthRecord) -> str:
    """Set (NX, expiring after the warning window) when the channel was warned about this token: once per window."""
    expiry = int(record.expires_at or 0)
    return (f"{settings.key_prefix}:dockauth-warned:{record.org}:{record.service}:{record.version}:{record.arch}:"
            f"{record.registry}:{expiry}")


def save(connection: Any, settings: Settings, records: list[DockauthRecord], *, pipe: Any = None) -> None:
    """Store (or replace) ``records``; with ``pipe``, as part of the caller's MULTI."""
    target = pipe if pipe is not None else connection.pipeline()
    for record in records:
        target.hset(key(settings, record.org, record.service), record.field, json.dumps(asdict(record)))
    if pipe is None:
        target.execute()


def remove(connection: Any, settings: Settings, records: list[DockauthRecord]) -> None:
    for record in records:
        connection.hdel(key(settings, record.org, record.service), record.field)


def read(connection: Any, settings: Settings, org: str, service: str) -> list[DockauthRecord]:
    """The service's records, by version, arch, registry (unreadable entries skipped)."""
    found: list[DockauthRecord] = []
    known = set(DockauthRecord.__dataclass_fields__)
    for raw in connection.hgetall(key(settings, org, service)).values():
        try:
            data = json.loads(raw)
            found.append(DockauthRecord(**{k: v for k, v in data.items() if k in known}))
        except (TypeError, ValueError):
            continue
    return sorted(found, key=lambda r: (r.version, r.arch, r.registry))


def expiring(records: list[DockauthRecord], *, window: float, now: float | None = None) -> list[DockauthRecord]:
    """Those whose token expires within ``window`` seconds (or has expired)."""
    now = time.time() if now is None else now
    return [r for r in records if r.expires_within(window, now)]
