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


def test_no_rule_means_nobody_but_the_release_managers() -> None:
    check = AccessCheck(parse_access(None), lambda g: set())
    assert check.allowed("publish", "U0ANYONE", org="acme", service="hello") == (False, ())
    managed = AccessCheck(parse_access({"release_managers": ["U0BOSS", "S0MGRS"], "publish": ["U0ALICE"]}),
                          lambda g: {"U0DEPUTY"} if g == "S0MGRS" else set())
    for user in ("U0BOSS", "U0DEPUTY"):  # no cancel rule: the release managers hold it, and only they
        assert managed.allowed("cancel", user, org="acme", service="hello")[0]
    assert managed.allowed("cancel", "U0ALICE", org="acme", service="hello") == (False, ("U0BOSS", "S0MGRS"))
    assert not managed.allowed("publish", "U0BOSS", org="acme", service="hello")[0], "a rule names publish"


def test_everyone_only_when_the_config_says_so() -> None:
    check = AccessCheck(parse_access({"publish": ["*"]}), lambda g: set())
    assert check.allowed("publish", "U0ANYONE", org="acme", service="hello")[0]
    assert not check.allowed("cancel", "U0ANYONE", org="acme", service="hello")[0]
    assert mention("*") == "everyone"


def test_another_org_must_pass_the_rules_of_both_orgs() -> None:
    """`--org` picks the target org: its rules apply, and the catalog org's too, so a looser org loosens nothing."""
    check = AccessCheck(parse_access({"publish": ["*"], "orgs": {"acme": {"publish": ["U0LEAD"]}}}), lambda g: set())
    assert not check.allowed("publish", "U0ANYONE", org="acme-x", service="hello", catalog_org="acme")[0]
    assert check.allowed("publish", "U0LEAD", org="acme-x", service="hello", catalog_org="acme")[0]
    assert check.allowed("publish", "U0ANYONE", org="acme-x", service="hello")[0], "without it, only the target's"
    strict_target = AccessCheck(parse_access({"publish": ["*"], "orgs": {"prod": {"publish": ["U0LEAD"]}}}),
                                lambda g: set())
    assert strict_target.allowed("publish", "U0ANYONE", org="prod", service="hello",
                                 catalog_org="acme") == (False, ("U0LEAD",))


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
        ({"promote": ["U0A"]}, "unknown permission 'promote'"),
        ({"publish": "U0A"}, "access.publish must be a list"),
        ({"publish": ["alice"]}, "Slack user ids (U…) and user group ids (S…)"),
        ({"services": {"hello": "U0A"}}, "[access.services.hello] must be a table"),
        ({"approve": ["U0A"]}, "access.approve is not an [access] permission: who may approve is set by [approvals]"),
        ({"services": {"hello": {"approve": ["U0A"]}}}, "access.services.hello.approve is not an [access] permission"),
        ({"publish": ["*", "U0A"]}, '"*" (everyone) stands alone'),
        ({"release_managers": ["*"]}, "access.release_managers must be a list of Slack user ids"),
        ({"orgs": ["acme"]}, "[access.orgs] must be a table of tables"),
    ],
)
def test_config_mistakes(table: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_access(table)
    assert fragment in str(info.value)


def test_mentions() -> None:
    assert mention("U0ALICE") == "<@U0ALICE>" and mention("S0HELLO") == "<!subteam^S0HELLO>"


def test_deploy_and_rollback_to_need_their_own_permission_falling_back_to_publish() -> None:
    from bot.grammar import DeployCommand
    from bot.intake import deploy_permission

    table = {"publish": ["U0ALICE"], "services": {"hello": {"deploy": ["U0OPS"]}}}
    check = AccessCheck(parse_access(table), lambda group: set(), cache_ttl=60)
    deploy, back = DeployCommand("hello", "1.0.0"), DeployCommand("hello", "1.0.0", as_rollback=True)
    assert deploy_permission(check, deploy, "acme") == "deploy"
    assert deploy_permission(check, back, "acme") == "publish"  # no rule names rollback: publish applies
    assert deploy_permission(check, DeployCommand("other", "1.0.0"), "acme") == "publish"
    assert check.allowed("deploy", "U0OPS", org="acme", service="hello")[0]
    assert not check.allowed("deploy", "U0ALICE", org="acme", service="hello")[0]
