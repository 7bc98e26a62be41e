"""Access rules: most specific rule wins, user groups resolved (and cached) at request time, config mistakes named."""

from __future__ import annotations

import pytest

from bot.access import AccessCheck, mention, parse_access
from edgebot.errors import ConfigError

TABLE = {
    "publish": ["S0PLATFORM"],
    "orgs": {"acme": {"publish": ["U0ACMELEAD"]}},
    "services": {"hello": {"publish": ["U0ALICE", "S0HELLO"]}, "open": {"cancel": ["U0ALICE"]}},
}


def _check(groups: dict[str, set[str]], calls: list[str] | None = None,
           clock: list[float] | None = None) -> AccessCheck:
    def members(group: str) -> set[str]:
        if calls is not None:
            calls.append(group)
        return groups.get(group, set())

    now = clock or [0.0]
    return AccessCheck(parse_access(TABLE), members, cache_ttl=60, clock=lambda: now[0])


def test_most_specific_rule_wins() -> None:
    check = _check({"S0HELLO": {"U0BOB"}, "S0PLATFORM": {"U0OPS"}})
    assert check.allowed("publish", "U0ALICE", org="acme", service="hello")[0]
    assert check.allowed("publish", "U0BOB", org="acme", service="hello")[0]  # via S0HELLO
    assert not check.allowed("publish", "U0ACMELEAD", org="acme", service="hello")[0]  # service rule overrides org
    assert check.allowed("publish", "U0ACMELEAD", org="acme", service="other")[0]
    assert not check.allowed("publish", "U0OPS", org="acme", service="other")[0]  # org rule overrides global
    assert check.allowed("publish", "U0OPS", org="beta", service="other")[0]  # global rule via S0PLATFORM
    allowed, holders = check.allowed("publish", "U0NOBODY", org="beta", service="open")
    assert not allowed and holders == ("S0PLATFORM",)  # "open" names only cancel: publish falls back to global


def test_no_rule_means_everyone() -> None:
    check = AccessCheck(parse_access(None), lambda g: set())
    assert check.allowed("publish", "U0ANYONE", org="acme", service="hello") == (True, ())


def test_group_membership_is_cached_then_re_read() -> None:
    calls: list[str] = []
    clock = [0.0]
    groups = {"S0HELLO": {"U0BOB"}}
    check = _check(groups, calls, clock)
    assert check.allowed("publish", "U0BOB", org="acme", service="hello")[0]
    groups["S0HELLO"] = set()
    assert check.allowed("publish", "U0BOB", org="acme", service="hello")[0]  # cached
    clock[0] = 61
    assert not check.allowed("publish", "U0BOB", org="acme", service="hello")[0]  # re-read after the TTL
    assert calls == ["S0HELLO", "S0HELLO"]


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"deploy": ["U0A"]}, "unknown permission 'deploy'"),
        ({"publish": "U0A"}, "access.publish must be a list"),
        ({"publish": ["alice"]}, "Slack user ids (U…) and user group ids (S…)"),
        ({"services": {"hello": "U0A"}}, "[access.services.hello] must be a table"),
    ],
)
def test_config_mistakes(table: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_access(table)
    assert fragment in str(info.value)


def test_mentions() -> None:
    assert mention("U0ALICE") == "<@U0ALICE>" and mention("S0HELLO") == "<!subteam^S0HELLO>"
