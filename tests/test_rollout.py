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
    counts = summarize(nodes, org=ORG, url="hello", version="2.0.0", targets=[CANARY], offline_after=600, now=NOW)
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
    both = summarize(nodes, org=ORG, url="hello", version="2.0.0", targets=[arm_only, web], offline_after=600,
                     now=NOW)
    assert both.total == 2 and both.old == 2


def test_policy_constraints_with_parentheses_select_their_nodes_and_not_halts() -> None:
    nodes = [node("c", version="1.0.0", group="canary"), node("b", version="1.0.0", group="beta"),
             node("f", version="1.0.0", group="fleet"), node("arm", version="1.0.0", group="beta", arch="arm64")]
    either = Target("policy", "p", "amd64", ("(group == canary || group == beta) && group != fleet",))
    counts = summarize(nodes, org=ORG, url="hello", version="2.0.0", targets=[either], offline_after=600, now=NOW)
    assert (counts.total, counts.old) == (2, 2)
    refused = Target("policy", "p", "*", ("NOT group == fleet",))
    with pytest.raises(ConstraintError, match="has no NOT"):
        summarize(nodes, org=ORG, url="hello", version="2.0.0", targets=[refused], offline_after=600, now=NOW)


def test_errors_about_another_service_or_version_do_not_count() -> None:
    other = agent_error("boom", version="1.0.0")
    nodes = [node("n", version="1.0.0", errors=[other, {**agent_error("hidden"), "hidden": True}])]
    counts = summarize(nodes, org=ORG, url="hello", version="2.0.0", targets=[CANARY], offline_after=600, now=NOW)
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
    early = summarize(nodes, org=ORG, url="hello", version="2.0.0", targets=[CANARY], offline_after=600, now=NOW,
                      pull_grace=300, elapsed=100)
    assert (early.new, early.starting, early.failing) == (1, 2, 1), "an empty containerStatus is not running"
    late = summarize(nodes, org=ORG, url="hello", version="2.0.0", targets=[CANARY], offline_after=600, now=NOW,
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
