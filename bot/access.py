"""Who may do what: the ``[access]`` table of the config, checked before anything is queued.

    [access]                        # every org and service
    publish = ["S0RELEASERS"]       # Slack user ids (U…/W…) and user group ids (S…)
    [access.orgs.acme]              # overrides [access] for one org
    publish = ["S0ACME"]
    [access.services.hello]         # overrides the org's and the global rule for one service
    publish = ["U0ALICE", "S0HELLO"]

The most specific rule that names a permission wins (service, then org, then global). With no rule for a
permission at all, everyone in a channel the bot is in may use it. User groups are resolved when the command arrives
(``usergroups.users.list``), cached for a minute, so a change in Slack applies without a restart.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgebot.errors import ConfigError

PERMISSIONS = ("publish", "approve", "cancel", "rollback")
_PRINCIPAL_RE = re.compile(r"^[UWS][A-Z0-9]{2,}$")


@dataclass(frozen=True)
class AccessPolicy:
    rules: dict[tuple[str, str], dict[str, tuple[str, ...]]] = field(default_factory=dict)
    """(scope, name) -> permission -> principals; scope is "global", "org" or "service"."""

    def principals(self, permission: str, *, org: str, service: str) -> tuple[str, ...] | None:
        for key in (("service", service), ("org", org), ("global", "")):
            granted = self.rules.get(key, {}).get(permission)
            if granted is not None:
                return granted
        return None


def parse_access(table: Mapping[str, Any] | None) -> AccessPolicy:
    rules: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {}
    if not table:
        return AccessPolicy(rules)

    def grants(where: str, body: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for permission, principals in body.items():
            if permission not in PERMISSIONS:
                raise ConfigError(f"{where}: unknown permission {permission!r}; known: {', '.join(PERMISSIONS)}")
            if not isinstance(principals, list) or not all(isinstance(p, str) and _PRINCIPAL_RE.match(p)
                                                            for p in principals):
                raise ConfigError(f"{where}.{permission} must be a list of Slack user ids (U…) and user group ids (S…)")
            out[permission] = tuple(principals)
        return out

    top = {k: v for k, v in table.items() if k not in ("orgs", "services")}
    rules[("global", "")] = grants("access", top)
    for scope, key in (("org", "orgs"), ("service", "services")):
        for name, body in (table.get(key) or {}).items():
            if not isinstance(body, Mapping):
                raise ConfigError(f"[access.{key}.{name}] must be a table")
            rules[(scope, name)] = grants(f"access.{key}.{name}", body)
    return AccessPolicy(rules)


GroupMembers = Callable[[str], set[str]]


class AccessCheck:
    def __init__(self, policy: AccessPolicy, members_of: GroupMembers, *, cache_ttl: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._members_of = members_of
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self.cache_ttl = cache_ttl
        self._clock = clock

    def allowed(self, permission: str, user_id: str, *, org: str, service: str) -> tuple[bool, tuple[str, ...]]:
        """(allowed?, who holds the permission) — the second part names the principals for the refusal."""
        principals = self.policy.principals(permission, org=org, service=service)
        if principals is None:
            return True, ()
        if user_id in principals:
            return True, principals
        for group in (p for p in principals if p.startswith("S")):
            if user_id in self._group(group):
                return True, principals
        return False, principals

    def _group(self, group_id: str) -> set[str]:
        now = self._clock()
        cached = self._cache.get(group_id)
        if cached and now - cached[0] < self.cache_ttl:
            return cached[1]
        members = self._members_of(group_id)
        self._cache[group_id] = (now, members)
        return members


def mention(principal: str) -> str:
    return f"<!subteam^{principal}>" if principal.startswith("S") else f"<@{principal}>"
