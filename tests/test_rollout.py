"""Pure rollout logic: the node-details summary per stage and the policy/pattern bodies."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from edgebot.constraints import ConstraintError, Constraints
from edgebot.fleet_summary import (
    StageCounts,
    Target,
    compile_constraints,
    explain,
    heartbeat_age,
    no_node_reason,
    progress_bar,
    summarize,
    verdict,
)
from edgebot.node_details import from_dicts
from edgebot.release import RolloutStatus
from workers.rollout import (
    RolloutRefused,
    agbot_priority_problem,
    agbot_refusal,
    keep_only,
    move,
    pinned,
    put_body,
)

FAILED, HEALTHY, RUNNING, TIMED_OUT = (RolloutStatus.FAILED, RolloutStatus.HEALTHY, RolloutStatus.RUNNING,
                                       RolloutStatus.TIMED_OUT)

ORG = "acme"
NOW = time.time()


def stamp(age: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW - age)) + ".000000Z[UTC]"


def node(name: str, *, version: str | None = None, state: str = "running", age: float = 1.0, pattern: str = "",
         group: str = "canary", arch: str = "amd64", errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    services = [] if version is None else [{
        "agreementId": "a", "orgid": ORG, "serviceUrl": "hello", "version": version, "arch": arch,
        "containerStatus": [{"name": "hello", "image": "x", "created": 1, "state": state}], "configState": "active"}]
    return {"id": f"{ORG}/{name}", "name": name, "arch": arch, "pattern": pattern, "lastHeartbeat": stamp(age),
            "services": services, "errors": errors or [], "properties": [{"name": "group", "value": group}]}


def agent_error(message: str, version: str = "2.0.0") -> dict[str, Any]:
    return {"record_id": "1", "message": message, "event_code": "error_image_load", "hidden": False,
            "workload": {"url": "hello", "org": ORG, "version": version, "arch": "amd64"}, "timestamp": stamp(1)}


CANARY = Target("policy", "hello-canary", "*", ("group == canary",))


def test_summary_counts_each_bucket_once() -> None:
    nodes = [
        node("new-1", version="2.0.0"),
        node("new-2", version="2.0.0"),
        node("old", version="1.0.0"),
        node("crashed", version="2.0.0", state="exited"),
        node("fell-back", version="1.0.0", errors=[agent_error(
            'Error pulling image: Get "https://reg.example:5000/v2/": x509: certificate signed by unknown authority')]),
        node("asleep", version="1.0.0", age=3600),
        node("fresh"),
        node("other-group", version="1.0.0", group="fleet"),
        node("pattern-node", version="1.0.0", pattern=f"{ORG}/web"),
        node("arm", version="1.0.0", arch="arm64"),
    ]
    counts = summarize(from_dicts(nodes), org=ORG, url="hello", version="2.0.0", targets=[CANARY],
                       offline_after=600, now=NOW)
    assert counts.as_dict() == {"total": 8, "new": 2, "starting": 0, "old": 2, "failing": 2, "offline": 1,
                                "waiting": 1}
    assert counts.online == 7
    assert counts.problems == [
        "crashed: the service's container does not stay up on 2.0.0: container hello is exited",
        "fell-back cannot pull from reg.example:5000: certificate signed by unknown authority — install the "
        "registry CA on the node (/etc/docker/certs.d/reg.example:5000/ca.crt)",
    ]
    arm_only = Target("policy", "hello-arm", "arm64", ())
    web = Target("pattern", "web")
    both = summarize(from_dicts(nodes), org=ORG, url="hello", version="2.0.0", targets=[arm_only, web],
                     offline_after=600,
                     now=NOW)
    assert both.total == 2 and both.old == 2


def test_policy_constraints_with_parentheses_select_their_nodes_and_not_halts() -> None:
    nodes = [node("c", version="1.0.0", group="canary"), node("b", version="1.0.0", group="beta"),
             node("f", version="1.0.0", group="fleet"), node("arm", version="1.0.0", group="beta", arch="arm64")]
    either = Target("policy", "p", "amd64", ("(group == canary || group == beta) && group != fleet",))
    counts = summarize(from_dicts(nodes), org=ORG, url="hello", version="2.0.0", targets=[either],
                       offline_after=600, now=NOW)
    assert (counts.total, counts.old) == (2, 2)
    refused = Target("policy", "p", "*", ("NOT group == fleet",))
    with pytest.raises(ConstraintError, match="has no NOT"):
        summarize(from_dicts(nodes), org=ORG, url="hello", version="2.0.0", targets=[refused],
                  offline_after=600, now=NOW)


def test_errors_about_another_service_or_version_do_not_count() -> None:
    other = agent_error("boom", version="1.0.0")
    nodes = [node("n", version="1.0.0", errors=[other, {**agent_error("hidden"), "hidden": True}])]
    counts = summarize(from_dicts(nodes), org=ORG, url="hello", version="2.0.0", targets=[CANARY],
                       offline_after=600, now=NOW)
    assert (counts.old, counts.failing) == (1, 0)


@pytest.mark.parametrize(("message", "words"), [
    ('Get "https://r.example/v2/": x509: certificate signed by unknown authority',
     "n1 cannot pull from r.example: certificate signed by unknown authority — install the registry CA"),
    ('Head "https://r.example/v2/edge/hello/manifests/sha256:1": no basic auth credentials',
     "n1 has no credentials for registry r.example"),
    ("There is no public key available to verify the deployment signature", "n1: signature not verified"),
    ("something else", "n1: something else"),
])
def test_agent_errors_in_the_users_words(message: str, words: str) -> None:
    assert explain("n1", message, "2.0.0").startswith(words)


def test_verdict() -> None:
    def counts(**values: int) -> StageCounts:
        return StageCounts(**values)

    ok = {"healthy_share": 1.0, "failure_threshold": 0, "elapsed": 1.0, "timeout": 60.0}
    assert verdict(counts(total=4, new=3, offline=1), **ok) == HEALTHY  # offline nodes are not waited for
    assert verdict(counts(total=4, new=3, old=1), **ok) == RUNNING
    assert verdict(counts(total=4, new=3, failing=1), **ok) == FAILED
    assert verdict(counts(total=4, new=3, failing=1), **{**ok, "failure_threshold": 1}) == HEALTHY
    assert verdict(counts(total=10, new=9, old=1), **{**ok, "healthy_share": 0.9}) == HEALTHY
    assert verdict(counts(total=4, new=3, old=1), **{**ok, "elapsed": 61.0}) == TIMED_OUT
    assert verdict(counts(total=2, offline=2), **ok) == RUNNING, "nothing online: nothing could be checked"
    assert verdict(counts(), **ok) == FAILED, "a stage that matches no node observed nothing: it halts"
    assert verdict(counts(total=2, new=1, starting=1), **ok) == RUNNING, "a node still pulling is waited for"


def test_constraints_and_heartbeats_and_bar() -> None:
    # an unquoted list ("zone in eu,us") is refused by the agbot; the old reader accepted it
    match = compile_constraints(['group == "canary" && tier >= 2', 'zone in "eu,us" || zone == test'])
    assert match({"group": "canary", "tier": "3", "zone": "eu"})
    assert not match({"group": "canary", "tier": "1", "zone": "eu"})
    assert not match({"group": "canary", "tier": "x", "zone": "eu"})
    assert isinstance(match, Constraints)  # also takes the Exchange's typed property list
    assert match([{"name": "group", "value": "canary"}, {"name": "tier", "value": 2},
                  {"name": "zone", "value": "test"}])
    with pytest.raises(ConstraintError, match="at position 8"):
        compile_constraints(["zone in eu,us"])
    assert heartbeat_age(stamp(30), NOW) == pytest.approx(30, abs=1)
    assert heartbeat_age("garbage", NOW) == float("inf")
    assert progress_bar(1, 4, width=8) == "[██░░░░░░] 25%"
    assert progress_bar(0, 0, width=4) == "[████] 100%"


# -- bodies -----------------------------------------------------------------------------------------------------------
def policy(*versions: tuple[str, int], arch: str = "*") -> dict[str, Any]:
    return {"label": "p", "description": "keep me", "owner": f"{ORG}/alice", "created": "t", "lastUpdated": "t",
            "service": {"name": "hello", "org": ORG, "arch": arch, "nodeHealth": {"missing_heartbeat_interval": 600},
                        "serviceVersions": [{"version": v, "priority": {"priority_value": p},
                                             "upgradePolicy": {"lifecycle": "immediate"}} for v, p in versions]},
            "properties": [{"name": "x", "value": 1}], "constraints": ["group == canary"]}


def pattern() -> dict[str, Any]:
    def entry(url: str, arch: str, version: str) -> dict[str, Any]:
        return {"serviceUrl": url, "serviceOrgid": ORG, "serviceArch": arch, "agreementLess": False,
                "serviceVersions": [{"version": version, "priority": {}, "upgradePolicy": {}}]}

    return {"label": "web", "public": False, "services": [entry("hello", "amd64", "1.0.0"),
                                                          entry("hello", "arm64", "1.0.0"),
                                                          entry("other", "amd64", "3.0.0")],
            "agreementProtocols": [{"name": "Basic"}]}


MOVE = {"org": ORG, "url": "hello", "version": "2.0.0", "published_arches": ["amd64", "arm64"],
        "catalog_arches": ["amd64", "arm64"], "retries": 2, "retry_durations": 3600}


def test_move_policy_puts_new_first_and_keeps_the_old_as_fallback() -> None:
    before = policy(("1.0.0", 1), ("0.9.0", 2))
    original = copy.deepcopy(before)
    moved = move(Target("policy", "p"), before, **MOVE)
    assert before == original, "the input is not modified"
    assert moved.changed and moved.previous == {"*": "1.0.0"}
    versions = moved.body["service"]["serviceVersions"]
    assert versions == [
        {"version": "2.0.0", "priority": {"priority_value": 1, "retries": 2, "retry_durations": 3600},
         "upgradePolicy": {"lifecycle": "immediate"}},
        {"version": "1.0.0", "priority": {"priority_value": 2, "retries": 2, "retry_durations": 3600},
         "upgradePolicy": {"lifecycle": "immediate"}},
    ]
    assert {k: v for k, v in moved.body.items() if k != "service"} == {
        k: v for k, v in put_body(before).items() if k != "service"}
    assert "owner" not in moved.body and moved.body["description"] == "keep me"
    again = move(Target("policy", "p"), moved.body, **MOVE)
    assert not again.changed and again.previous == {"*": "1.0.0"}, "moving twice is a no-op"


def test_move_refuses_an_arch_that_was_not_published() -> None:
    with pytest.raises(RolloutRefused, match="deploys hello on arm64, but 2.0.0 was not published for arm64"):
        move(Target("policy", "p"), policy(("1.0.0", 1)), **{**MOVE, "published_arches": ["amd64"]})
    moved = move(Target("policy", "p"), policy(("1.0.0", 1), arch="amd64"), **{**MOVE, "published_arches": ["amd64"]})
    assert moved.changed
    with pytest.raises(RolloutRefused, match="does not deploy acme/other"):
        move(Target("policy", "p"), policy(("1.0.0", 1)), **{**MOVE, "url": "other"})


def test_move_pattern_changes_only_the_service_entries() -> None:
    before = pattern()
    moved = move(Target("pattern", "web"), before, **MOVE)
    assert pinned("pattern", moved.body, ORG, "hello") == {"amd64": ["2.0.0", "1.0.0"], "arm64": ["2.0.0", "1.0.0"]}
    assert moved.body["services"][2] == before["services"][2]
    assert moved.previous == {"amd64": "1.0.0", "arm64": "1.0.0"}
    with pytest.raises(RolloutRefused, match="arm64"):
        move(Target("pattern", "web"), before, **{**MOVE, "published_arches": ["amd64"]})


def test_keep_only_settles_and_rolls_back() -> None:
    moved = move(Target("policy", "p"), policy(("1.0.0", 1)), **MOVE).body
    settled, changed = keep_only(Target("policy", "p"), moved, org=ORG, url="hello", versions={"*": "2.0.0"})
    assert changed and pinned("policy", settled, ORG, "hello") == {"*": ["2.0.0"]}
    assert settled["service"]["serviceVersions"][0]["priority"] == {"priority_value": 1, "retries": 2,
                                                                    "retry_durations": 3600}
    back, changed = keep_only(Target("policy", "p"), settled, org=ORG, url="hello", versions={"*": "1.0.0"})
    assert changed and pinned("policy", back, ORG, "hello") == {"*": ["1.0.0"]}
    assert agbot_refusal("policy", back, ORG, "hello") == "", "what a rollback writes, the agbot accepts"
    same, changed = keep_only(Target("policy", "p"), back, org=ORG, url="hello", versions={"*": "1.0.0"})
    assert not changed and same == put_body(back)
    # a version pinned as {"priority_value": 1} alone (what the agbot drops) is written without a priority, or with
    # the configured retries
    bare = keep_only(Target("policy", "p"), policy(("2.0.0", 1), ("1.0.0", 2)), org=ORG, url="hello",
                     versions={"*": "1.0.0"})[0]
    assert "priority" not in bare["service"]["serviceVersions"][0]
    filled = keep_only(Target("policy", "p"), policy(("2.0.0", 1), ("1.0.0", 2)), org=ORG, url="hello",
                       versions={"*": "1.0.0"}, retries=1, retry_durations=60)[0]
    assert filled["service"]["serviceVersions"][0]["priority"] == {"priority_value": 1, "retries": 1,
                                                                   "retry_durations": 60}


@pytest.mark.parametrize(("priority", "refused"), [
    (None, ""),
    ({}, ""),
    ({"priority_value": 1, "retries": 2, "retry_durations": 3600}, ""),
    ({"priority_value": 1}, "both must be non-zero"),
    ({"priority_value": 2, "retries": 0, "retry_durations": 3600}, "both must be non-zero"),
    ({"priority_value": 1, "retries": 2}, "both must be non-zero"),
    ({"priority_value": 0, "retries": 1}, "all must be zero"),
    ({"verified_durations": 30}, "all must be zero"),
])
def test_the_agbots_priority_rule(priority: dict[str, int] | None, refused: str) -> None:
    """anax businesspolicy ServiceRef.Validate, which edgebot checks before every write."""
    entry: dict[str, Any] = {"version": "1.0.0"} if priority is None else {"version": "1.0.0", "priority": priority}
    problem = agbot_priority_problem([entry])
    assert (refused in problem) if refused else problem == ""


def test_not_started_counts_as_starting_until_the_pull_grace() -> None:
    pulling = node("pulling", version="2.0.0", state="not started")
    unreported = {**node("unreported", version="2.0.0"), "services": [{**node("x", version="2.0.0")["services"][0],
                                                                       "containerStatus": []}]}
    crashed = node("crashed", version="2.0.0", state="exited")
    nodes = [pulling, unreported, crashed, node("new", version="2.0.0")]
    early = summarize(from_dicts(nodes), org=ORG, url="hello", version="2.0.0", targets=[CANARY],
                      offline_after=600, now=NOW,
                      pull_grace=300, elapsed=100)
    assert (early.new, early.starting, early.failing) == (1, 2, 1), "an empty containerStatus is not running"
    late = summarize(from_dicts(nodes), org=ORG, url="hello", version="2.0.0", targets=[CANARY],
                     offline_after=600, now=NOW,
                     pull_grace=300, elapsed=301)
    assert (late.new, late.starting, late.failing) == (1, 0, 3)
    assert any("still not started 301 s after the stage began" in p for p in late.problems)


def test_a_stage_without_nodes_says_why() -> None:
    assert no_node_reason([CANARY], ORG, 12) == (
        "the constraints of policy `hello-canary` (group == canary) match no node (among the 12 node(s) the Exchange "
        "showed); the stage halted: no node was seen")
    assert no_node_reason([Target("pattern", "web")], ORG, 0).startswith(
        "no node of org acme is registered with pattern `web` (the Exchange showed no node of the org at all)")


@pytest.mark.parametrize(("setting", "value"), [("rollout_fallback_retries", 0),
                                                ("rollout_fallback_retry_durations", 0)])
def test_settings_the_agbot_would_refuse_are_refused_at_load(setting: str, value: int) -> None:
    from edgebot.config import ConfigError, parse_config

    data = {"slack": {"bot_token": "env:BOT", "signing_secret": "env:SIGNING"}, "redis": {"url": "redis://x"},
            "exchange": {"url": "http://x/v1", "username": f"{ORG}/edgebot", "password": "env:EXCHANGE_PW"},
            "signing": {"private_key": "file:/nonexistent"},
            "registries": {"local": {"host": "r.example", "push_username": "u", "push_password": "env:PUSH"}},
            "services": {"hello": {"source": "/x", "org": ORG, "arches": ["amd64"]}}}
    assert parse_config(data, environ={}).settings.rollout_drop_fallback is False, "the fallback stays by default"
    with pytest.raises(ConfigError, match=f"{setting} = 0: must be at least 1; the agbot drops"):
        parse_config({**data, "settings": {setting: value}}, environ={})


# -- both directions (anax compcheck/policy_check.go CheckPolicyCompatiblility -> policy/policy_file.go Are_Compatible)
def _props(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def _policy_node(name: str, properties: list[dict[str, Any]], constraints: list[str] | None = None) -> dict[str, Any]:
    found = node(name, version="1.0.0")
    found.update(properties=properties, constraints=constraints or [])
    return found


# anax compcheck/policy_check_test.go Test_policyCompatible_with_Pols: node, service and deployment policy
ANAX_NODE_PROPS = _props({"prop3": "val3", "prop4": "some value"})
ANAX_NODE_CONSTRAINTS = ["prop1 == val1", "prop5 == val5"]
ANAX_POLICY = Target("policy", "bp", "amd64", ("prop3 == val3", 'prop4 == "some value"'),
                     tuple(_props({"prop1": "val1", "prop2": "val2"})), (
                         ("amd64", ('prop4 == "some value"',), tuple(_props({"prop5": "val5", "prop6": "val6"}))),))


def test_anax_compcheck_vectors_both_directions() -> None:
    from edgebot.fleet_summary import members

    compatible = _policy_node("n1", ANAX_NODE_PROPS, ANAX_NODE_CONSTRAINTS)
    other = _policy_node("n2", _props({"prop3": "val3", "prop4": "some other value"}), ANAX_NODE_CONSTRAINTS)
    assert [n.name for n in members(from_dicts([compatible, other]), ORG, [ANAX_POLICY])] == ["n1"]
    # without the service policy, prop5 (which the node's constraints ask for) is offered by nobody: refused
    bare = Target("policy", "bp", "amd64", ANAX_POLICY.constraints, ANAX_POLICY.properties)
    assert members(from_dicts([compatible]), ORG, [bare]) == []
    # service arch "*" (the same test's input3): each arch's service policy merged for the nodes of that arch
    service_policy = ANAX_POLICY.service_policies[0][1:]
    every_arch = Target("policy", "bp", "*", ANAX_POLICY.constraints, ANAX_POLICY.properties,
                        (("amd64", *service_policy), ("arm64", *service_policy)))
    arm = {**_policy_node("n3", ANAX_NODE_PROPS, ANAX_NODE_CONSTRAINTS), "arch": "arm64"}
    assert [n.name for n in members(from_dicts([compatible, other, arm]), ORG, [every_arch])] == ["n1", "n3"]
    assert members(from_dicts([arm]), ORG, [ANAX_POLICY]) == [], "an amd64 policy does not reach an arm64 node"
    only_amd64 = Target("policy", "bp", "*", ANAX_POLICY.constraints, ANAX_POLICY.properties,
                        (("amd64", *service_policy),))
    assert members(from_dicts([arm]), ORG, [only_amd64]) == [], "arm64 has no service policy offering prop5"


def test_a_nodes_own_constraints_refuse_the_policy_and_the_node_is_not_counted() -> None:
    """Fails on the old membership (the policy's constraints only): the refused node was counted and waited for."""
    from edgebot.fleet_summary import placements

    policy = Target("policy", "hello-canary", "*", ("group == canary",), tuple(_props({"tier": "prod"})))
    nodes = [_policy_node("ok", _props({"group": "canary"}), ["tier == prod"]),
             _policy_node("picky", _props({"group": "canary"}), ["tier == test"]),
             _policy_node("any", _props({"group": "canary"}))]
    nodes[1]["services"] = []  # it never gets an agreement
    counts = summarize(from_dicts(nodes), org=ORG, url="hello", version="1.0.0", targets=[policy],
                       offline_after=60, now=NOW)
    assert counts.total == 2 and counts.new == 2
    assert counts.refused == {("hello-canary", ("tier == test",)): ["picky"]}
    placed = {n.name: p for n, p, _ in placements(from_dicts(nodes), ORG, [policy])}
    assert placed == {"ok": "member", "picky": "refused", "any": "member"}
    assert verdict(counts, healthy_share=1.0, failure_threshold=0, elapsed=1, timeout=60) == HEALTHY


def test_a_nodes_constraints_see_the_services_builtin_properties() -> None:
    """anax externalpolicy/builtin_properties.go CreateServiceBuiltInPolicy: openhorizon.service.* are offered."""
    from edgebot.fleet_summary import members

    policy = Target("policy", "p", "*", ("group == canary",))
    wants_hello = _policy_node("a", _props({"group": "canary"}),
                               ['openhorizon.service.url == hello && openhorizon.service.version in [1.0.0,2.0.0)'])
    wants_other = _policy_node("b", _props({"group": "canary"}), ["openhorizon.service.url == other"])
    assert [n.name for n in members(from_dicts([wants_hello, wants_other]), ORG, [policy],
                                    url="hello", version="1.5.0")] \
        == ["a"]
    assert members(from_dicts([wants_hello]), ORG, [policy], url="hello", version="2.0.0") == []


@pytest.mark.parametrize(("prop", "constraint"), [
    ({"name": "memory", "value": 4096, "type": "int"}, "memory >= 2048"),
    ({"name": "fw", "value": "1.2.3", "type": "version"}, "fw in [1.0.0,2.0.0)"),
    ({"name": "gpu", "value": True, "type": "boolean"}, "gpu == true"),
    ({"name": "zones", "value": "eu,us", "type": "list of strings"}, 'zones in "us,asia"'),
    ({"name": "tier", "value": "prod", "type": "string"}, "tier == prod"),
])
def test_typed_node_properties_compare_as_anax_compares_them(prop: dict[str, Any], constraint: str) -> None:
    """Node properties are read raw, with their Exchange type (a "list of strings" was flattened to a plain string
    before, and matched nothing)."""
    from edgebot.fleet_summary import members

    n = _policy_node("n", [prop])
    assert [m.name for m in members(from_dicts([n]), ORG, [Target("policy", "p", "*", (constraint,))])] == ["n"]
    # and the other way: the same typed property offered by the policy, the constraint on the node
    typed = Target("policy", "p", "*", (), (prop,))
    assert members(from_dicts([_policy_node("m", [], [constraint])]), ORG, [typed])[0].name == "m"


def test_a_node_constraint_the_agbot_cannot_read_halts_naming_node_and_expression() -> None:
    from edgebot.fleet_summary import NodeConstraintError

    nodes = [_policy_node("fine", _props({"group": "canary"})),
             _policy_node("broken", _props({"group": "canary"}), ["tier == (prod"])]
    with pytest.raises(NodeConstraintError) as caught:
        summarize(from_dicts(nodes), org=ORG, url="hello", version="1.0.0", targets=[CANARY], offline_after=60, now=NOW)
    assert caught.value.node == f"{ORG}/broken" and "tier == (prod" in str(caught.value)
    # a node the policy does not reach is never evaluated the other way (the agbot stops at the first direction)
    nodes[1]["properties"] = _props({"group": "fleet"})
    assert summarize(from_dicts(nodes), org=ORG, url="hello", version="1.0.0", targets=[CANARY], offline_after=60,
                     now=NOW).total == 1


def test_node_side_messages() -> None:
    from edgebot.fleet_messages import rollout_constraints_unreadable, rollout_node_constraints_refuse

    line = rollout_node_constraints_refuse("hello-canary", ["tier == test"], ["n2", "n1"])
    assert line == ("2 node(s) left out of the stage: the node's constraints refuse the policy `hello-canary` "
                    "(tier == test does not hold on the policy's and service policy's properties); the agreement bot "
                    "makes no agreement there and their agents report nothing (n1, n2)")
    assert rollout_constraints_unreadable("canary", "node acme/x: why").startswith(
        "rollout stage canary halted: node acme/x: why. Which nodes the stage reaches cannot be known")


def test_targets_keep_what_membership_needs_through_the_release_record() -> None:
    from workers.rollout import target_of

    body = {"service": {"name": "hello", "org": ORG, "arch": "amd64"}, "constraints": ["a == b"],
            "properties": [{"name": "tier", "value": 1, "type": "int"}]}
    member = target_of("policy", "p", body, ORG, "hello")
    assert Target.from_info(member.as_info()) == member and member.properties == ({"name": "tier", "value": 1,
                                                                                    "type": "int"},)
    assert Target.from_info({"kind": "policy", "name": "old", "arch": "*", "constraints": ["x == y"]}) == Target(
        "policy", "old", "*", ("x == y",))


# -- templates read like hzn (anax cli/exchange/business.go BusinessAddPolicy, cli/exchange/pattern.go PatternPublish)
POLICY_TEMPLATE = """/* hzn dev style */
{
  "name": "policy-$SERVICE_NAME", "org": "$HZN_ORG_ID", "owner": "someone/else",
  "label": "$SERVICE_NAME for ${ARCH}", "description": "by $HZN_ORG_ID",
  "service": {"name": "$SERVICE_NAME", "org": "$HZN_ORG_ID", "arch": "$ARCH",
              "serviceVersions": [{"version": "$SERVICE_VERSION",
                                   "priority": {"priority_value": 1, "retries": 1, "retry_durations": 60}}]},
  "properties": [{"name": "tier", "value": 2, "type": "int"}],
  "constraints": ["group == $GROUP"]
}"""
PATTERN_TEMPLATE = """{
  "name": "pattern-${SERVICE_NAME}-$ARCH", "org": "$HZN_ORG_ID",
  "label": "Edge $SERVICE_NAME Service Pattern for $ARCH", "public": false,
  "services": [{"serviceUrl": "$SERVICE_NAME", "serviceOrgid": "$HZN_ORG_ID", "serviceArch": "$ARCH",
                "serviceVersions": [{"version": "$SERVICE_VERSION"}]}]
}"""


def _read(kind: str, text: str, *, arches: tuple[str, ...] = ("arm64",), env: dict[str, str] | None = None) -> Any:
    from workers.rollout_create import read_template

    return read_template(kind, text, {"GROUP": "canary"} if env is None else env, path=f"horizon/{kind}.json",
                         org=ORG, version="1.2.3", url="hello", arches=arches)


def test_a_policy_template_is_read_like_hzn_writes_it() -> None:
    body = _read("policy", POLICY_TEMPLATE)
    assert "name" not in body and "org" not in body and "owner" not in body, "CLI-only and server keys dropped"
    assert body["label"] == "hello for arm64" and body["description"] == f"by {ORG}"
    assert body["service"] == {"name": "hello", "org": ORG, "arch": "arm64", "serviceVersions": [
        {"version": "1.2.3", "priority": {"priority_value": 1, "retries": 1, "retry_durations": 60}}]}
    assert body["constraints"] == ["group == canary"]


def test_a_pattern_template_is_read_like_hzn_writes_it() -> None:
    body = _read("pattern", PATTERN_TEMPLATE, arches=("amd64",))
    assert body == {"label": "Edge hello Service Pattern for amd64", "public": False, "services": [
        {"serviceUrl": "hello", "serviceOrgid": ORG, "serviceArch": "amd64",
         "serviceVersions": [{"version": "1.2.3"}]}]}


@pytest.mark.parametrize(("variable", "value"), [("$SERVICE_NAME", "hello"), ("${SERVICE_VERSION}", "1.2.3"),
                                                 ("$HZN_ORG_ID", ORG), ("$ARCH", "arm64")])
def test_each_hzn_dev_variable_is_substituted(variable: str, value: str) -> None:
    body = _read("policy", POLICY_TEMPLATE.replace('"by $HZN_ORG_ID"', f'"x {variable} y"'), env={
        "GROUP": "g", "SERVICE_NAME": "from-hzn-json", "SERVICE_VERSION": "0.0.0", "ARCH": "s390x"})
    assert body["description"] == f"x {value} y", "the release's values win over hzn.json's"


@pytest.mark.parametrize(("kind", "old", "new", "words"), [
    ("policy", '"constraints": ["group == $GROUP"]', '"constraint": ["group == $GROUP"]',
     "constraint is not a field of the Exchange's body"),
    ("policy", '"constraints": ["group == $GROUP"]', '"constraints": []', "constraints is empty"),
    ("policy", '"label": "$SERVICE_NAME for ${ARCH}", ', "", "label is required"),
    ("policy", '"value": 2, "type": "int"', '"value": "2", "type": "int"', "properties[0] (tier): value '2'"),
    ("policy", '"value": 2, "type": "int"', '"value": 2, "type": "integer"', "properties[0].type 'integer'"),
    ("policy", '"version": "$SERVICE_VERSION"', '"version": 1', "service.serviceVersions[0].version must be a string"),
    ("policy", '"serviceVersions": [{', '"serviceVersions": [], "x": [{', "service.serviceVersions is empty"),
    ("policy", '"org": "$HZN_ORG_ID", "owner"', '"org": "other", "owner"', "org is 'other'"),
    ("pattern", '"public": false', '"public": "no"', "public must be a boolean"),
    ("pattern", '"serviceArch": "$ARCH",', "", "services[0].serviceArch is required"),
    ("pattern", '"label"', '"labels"', "labels is not a field"),
])
def test_a_body_the_exchange_would_misread_is_refused_naming_the_field(kind: str, old: str, new: str,
                                                                      words: str) -> None:
    from edgebot.errors import StepFailed

    template = POLICY_TEMPLATE if kind == "policy" else PATTERN_TEMPLATE
    assert old in template
    with pytest.raises(StepFailed) as refused:
        _read(kind, template.replace(old, new))
    assert words in str(refused.value) and "no node moved" in str(refused.value), str(refused.value)


def test_arch_is_refused_when_the_release_has_several_and_undefined_variables_are_named() -> None:
    from edgebot.errors import StepFailed

    with pytest.raises(StepFailed, match=r"uses \$ARCH, but this release publishes amd64, arm64"):
        _read("policy", POLICY_TEMPLATE, arches=("amd64", "arm64"))
    with pytest.raises(StepFailed, match=r"undefined variable\(s\) \$GROUP"):
        _read("policy", POLICY_TEMPLATE, env={})


def test_the_schema_check_agrees_with_jsonschema() -> None:
    """The hand-written check of workers.exchange_schema against the jsonschema package, on good and bad bodies."""
    import jsonschema

    from workers.exchange_schema import json_schema, validate

    good_policy = _read("policy", POLICY_TEMPLATE)
    good_pattern = _read("pattern", PATTERN_TEMPLATE)
    cases = [("policy", good_policy), ("pattern", good_pattern), ("policy", {**good_policy, "constraint": []}),
             ("policy", {**good_policy, "service": {"name": "x"}}), ("pattern", {**good_pattern, "public": 1}),
             ("policy", {**good_policy, "properties": [{"name": "a", "value": [1, {"b": None}]}]}),
             ("pattern", {"services": [{"serviceVersions": [{"version": "1", "priority": {"x": "y"}}]}]})]
    for kind, body in cases:
        theirs = list(jsonschema.Draft202012Validator(json_schema(kind)).iter_errors(body))
        assert bool(theirs) == bool(validate(kind, body)), (kind, body, theirs, validate(kind, body))
