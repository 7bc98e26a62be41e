"""Who may do what: the ``[access]`` table of the config (parsed by :func:`edgebot.config.parse_access`), checked
before anything is queued.

    [access]                        # every org and service
    release_managers = ["S0RELMGR"] # hold every permission that no rule below names
    publish = ["S0RELEASERS"]       # Slack user ids (U…/W…) and user group ids (S…); ["*"]: everyone, on purpose
    [access.orgs.acme]              # overrides [access] for one org
    publish = ["S0ACME"]
    [access.services.hello]         # overrides the org's and the global rule for one service
    publish = ["U0ALICE", "S0HELLO"]

The most specific rule that names a permission wins (service, then org, then global). With no rule for a permission,
only the release managers hold it: nobody acts unless the config says so (the bot refuses to start while nobody may
publish a catalog service, see :func:`edgebot.config.access_problem`). A release to another org than the catalog's
(``--org``) must pass the rules of both orgs. User groups are resolved when the command arrives
(``usergroups.users.list``), cached for a minute, so a change in Slack applies without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edgebot.config import ACCESS_PERMISSIONS, EVERYONE, AccessPolicy, parse_access

PERMISSIONS = ACCESS_PERMISSIONS
__all__ = ["PERMISSIONS", "AccessCheck", "AccessPolicy", "mention", "parse_access"]


GroupMembers = Callable[[str], set[str]]


class AccessCheck:
    def __init__(self, policy: AccessPolicy, members_of: GroupMembers, *, cache_ttl: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._members_of = members_of
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self.cache_ttl = cache_ttl
        self._clock = clock

    def allowed(self, permission: str, user_id: str, *, org: str, service: str,
                catalog_org: str | None = None) -> tuple[bool, tuple[str, ...]]:
        """(allowed?, who holds the permission) — the second part names the principals for the refusal.

        ``catalog_org``: the service's own org when ``org`` is another one (``--org``): the rules of both apply.
        """
        holders: tuple[str, ...] = ()
        for each in dict.fromkeys((catalog_org or org, org)):
            holders = self.policy.holders(permission, org=each, service=service)
            if not self._holds(user_id, holders):
                return False, holders
        return True, holders

    def _holds(self, user_id: str, principals: tuple[str, ...]) -> bool:
        if EVERYONE in principals or user_id in principals:
            return True
        return any(user_id in self._group(group) for group in principals if group.startswith("S"))

    def _group(self, group_id: str) -> set[str]:
        now = self._clock()
        cached = self._cache.get(group_id)
        if cached and now - cached[0] < self.cache_ttl:
            return cached[1]
        members = self._members_of(group_id)
        self._cache[group_id] = (now, members)
        return members


def mention(principal: str) -> str:
    if principal == EVERYONE:
        return "everyone"
    return f"<!subteam^{principal}>" if principal.startswith("S") else f"<@{principal}>"
