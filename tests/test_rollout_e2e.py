"""End to end rollout: signed slash commands to the real bot, real RQ workers (with RQ's scheduler running the polls),
real Redis, Docker and registry; the Exchange stand-in's simulated agents verify what was published and report in
node-details. Stages: canary (policy hello-canary) then fleet (policy hello-fleet).

The stand-in is as hard as a real hub (docs: ../shared/reference/ieam-rollout-facts.md): edgebot's Exchange user must be
an org admin to see the fleet, agents report "not started" while they pull, a signature they cannot verify is
declined silently, the agbot ignores a policy with an invalid priority, and a pattern change restarts every node of
the pattern. The fallback (priority 2) stays in the policies after a healthy stage (rollout_drop_fallback is off)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from edgebot.release import Release
from sandbox.stack import CHANNEL_ID, EXCHANGE_PASSWORD, EXCHANGE_USER, ORG, Stack, wait_until

pytestmark = pytest.mark.slow

VERSIONS = ("3.0.0", "3.0.1", "3.0.2", "3.0.3", "3.0.4", "3.0.5")
ROLLOUT = """
[[services.hello.rollout]]
stage = "canary"
policies = ["hello-canary"]

[[services.hello.rollout]]
stage = "fleet"
policies = ["hello-fleet"]

[[services.hello-new.rollout]]
stage = "fresh"
policies = ["hello-fresh"]

[[services.hello-gated.rollout]]
stage = "gated"
policies = ["hello-gated-fleet"]

[[services.hello-pat.rollout]]  # deployed by a pattern, not a policy
stage = "pattern"
patterns = ["hello-pattern"]

[[services.hello-none.rollout]]  # a policy whose constraints match no node
stage = "nowhere"
policies = ["hello-nowhere"]

[[services.hello-picky.rollout]]  # a policy some nodes' own constraints refuse
stage = "picky"
policies = ["hello-picky"]

[approvals]                   # only hello-gated asks for approval (of its publish and of its rollback)
approvers = ["U0APPROVER"]
required = 0
[approvals.services.hello-gated]
required = 1
"""
CANARY = [f"{ORG}/canary-{i}" for i in (1, 2, 3)]
FLEET = [f"{ORG}/fleet-{i}" for i in range(1, 9)]
ASLEEP = f"{ORG}/fleet-asleep"
PRIORITY = {"priority_value": 1, "retries": 1, "retry_durations": 3600}
"""A priority the agbot accepts (anax ServiceRef.Validate); ``{"priority_value": 1}`` alone makes it drop the policy."""
PULL_GRACE = 30.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("rollout")
    settings = {"rollout_poll_interval": 0.5, "rollout_offline_after": 4.0, "rollout_stage_timeout": 240.0,
                "rollout_failure_threshold": 0, "rollout_report_nodes": 5, "duplicate_window": 1,
                "rollout_pull_grace": PULL_GRACE, "rollout_diagnose_after": 3.0}
    with Stack(workdir, docker=docker_daemon, registry=registry, versions=VERSIONS, settings=settings,
               extra_services={"hello-seed": ["amd64"], "hello-new": ["amd64"], "hello-gated": ["amd64"],
                               "hello-pat": ["amd64"], "hello-none": ["amd64"], "hello-picky": ["amd64"]},
               extra_toml=ROLLOUT) as running:
        fleet = running.exchange.fleet
        fleet.apply_delay, fleet.heartbeat_interval = 0.3, 0.5
        running.wait_workers(2)
        _seed(running)
        yield running


def _seed(stack: Stack) -> None:
    """3.0.0 published by edgebot (a catalog entry without rollout), the two policies pinned to it, and the nodes."""
    release = _publish(stack, "publish hello-seed 3.0.0 --registry local")
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish"))
    with httpx.Client(base_url=stack.exchange.url + "/", auth=(f"{ORG}/{EXCHANGE_USER}", EXCHANGE_PASSWORD)) as c:
        for name, group in (("hello-canary", "canary"), ("hello-fleet", "fleet")):
            body = {"label": name, "description": "kept as is", "service": {
                "name": "hello", "org": ORG, "arch": "*", "serviceVersions": [
                    {"version": "3.0.0", "priority": PRIORITY, "upgradePolicy": {}}],
                "nodeHealth": {"missing_heartbeat_interval": 600}},
                "properties": [{"name": "owner", "value": "team-edge"}], "constraints": [f"group == {group}"]}
            assert c.post(f"orgs/{ORG}/business/policies/{name}", json=body).status_code == 201
    fleet = stack.exchange.fleet
    for node_id in CANARY + FLEET + [ASLEEP]:
        group = "canary" if "canary" in node_id else "fleet"
        fleet.add_node(ORG, node_id.split("/")[1], "amd64", properties=[{"name": "group", "value": group}])
    fleet.set_online(ASLEEP, False)
    wait_until(lambda: all(fleet.running(n) == {"hello": "3.0.0"} for n in CANARY + FLEET), timeout=60,
               what="every online node to run 3.0.0")


def _publish(stack: Stack, text: str) -> Release:
    release_id = _start(stack, text)
    return _finish(stack, release_id)


def _start(stack: Stack, text: str) -> str:
    before = set(stack.release_ids())
    response = stack.command(text)
    assert response.status_code == 200, response.text
    new = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, what="a new release record")
    return str(new.pop())


def _finish(stack: Stack, release_id: str) -> Release:
    stack.wait_final(release_id, timeout=300)
    store = stack.store()
    wait_until(lambda: store.require(release_id).summary_ts, timeout=30, what="the summary")
    return store.require(release_id)


def _policy_versions(stack: Stack, name: str) -> list[str]:
    versions = stack.exchange.policies(ORG)[name]["service"]["serviceVersions"]
    return [v["version"] for v in sorted(versions, key=lambda v: v["priority"]["priority_value"])]


def _thread(stack: Stack, release: Release) -> str:
    return json.dumps(stack.slack.thread(CHANNEL_ID, release.message_ts), ensure_ascii=False)


def _wait_rolling(stack: Stack, release_id: str) -> Release:
    store = stack.store()
    return wait_until(  # type: ignore[no-any-return]
        lambda: (r := store.require(release_id)).rollout and r.rollout[0].status == "running" and r,
        timeout=300, what="the canary stage to start")


def test_full_rollout_moves_every_stage_and_counts_offline_nodes(stack: Stack) -> None:
    release = _publish(stack, "publish hello 3.0.1 --registry local")
    assert release.state == "succeeded", (release.error, release.error_detail, stack.log_tail("worker-publish"))
    fleet = stack.exchange.fleet
    assert all(fleet.running(n) == {"hello": "3.0.1"} for n in CANARY + FLEET)
    assert fleet.running(ASLEEP) == {}, "an offline node acts on nothing"
    canary, rest = release.rollout
    assert (canary.name, canary.status, rest.name, rest.status) == ("canary", "healthy", "fleet", "healthy")
    assert canary.counts == {"total": 3, "new": 3, "starting": 0, "old": 0, "failing": 0, "offline": 0,
                             "waiting": 0}
    assert rest.counts["new"] == 8 and rest.counts["offline"] == 1 and rest.counts["total"] == 9
    assert canary.targets[0]["previous"] == {"*": "3.0.0"}
    # healthy stages keep the fallback (IEAM's per-node safety net); the rest of each policy is as it was
    for name in ("hello-canary", "hello-fleet"):
        policy = stack.exchange.policies(ORG)[name]
        assert _policy_versions(stack, name) == ["3.0.1", "3.0.0"]
        assert policy["description"] == "kept as is" and policy["service"]["nodeHealth"] == {
            "missing_heartbeat_interval": 600} and policy["properties"] == [{"name": "owner", "value": "team-edge"}]
    # one message per stage, edited in place, with the bar and the counts
    thread = stack.slack.thread(CHANNEL_ID, release.message_ts)
    for stage in ("canary", "fleet"):
        ts = release.progress_ts[f"rollout:{stage}"]
        message = next(m for m in thread if m["ts"] == ts)
        assert f"Rollout · {stage}" in message["text"] and "█" in message["text"]
    fleet_msg = next(m for m in thread if m["ts"] == release.progress_ts["rollout:fleet"])
    assert "8 of 8 online node(s) run 3.0.1" in fleet_msg["text"] and "offline 1" in fleet_msg["text"]
    assert len([m for m in thread if "Rollout ·" in m.get("text", "")]) == 2
    # polls share one node-details GET per interval: never one request per node (plus one when the rollout starts:
    # every node the stages reach must be placeable before anything moves)
    details = [r for r in stack.exchange.requests() if r["path"].endswith("/node-details")]
    node_paths = [r for r in stack.exchange.requests() if "/nodes/" in r["path"]]
    assert details and not node_paths
    assert len(details) <= canary.polls + rest.polls + 1


def test_failing_stage_rolls_back_and_nodes_return(stack: Stack) -> None:
    fleet = stack.exchange.fleet
    for node in CANARY[:2]:
        fleet.set_failing(node, ["3.0.2"])
    try:
        release = _publish(stack, "publish hello 3.0.2 --registry local")
    finally:
        for node in CANARY[:2]:
            fleet.set_failing(node, failing=False)
    assert release.state == "rolled_back", (release.error, stack.log_tail("worker-publish"))
    assert "2 node(s) failed on 3.0.2" in release.error
    assert any("canary-1: the service's container does not stay up on 3.0.2" in line
               for line in release.error_detail)
    assert release.rollout[1].status == "pending", "the fleet stage never started"
    assert _policy_versions(stack, "hello-canary") == ["3.0.1"]
    assert _policy_versions(stack, "hello-fleet") == ["3.0.1", "3.0.0"], "never moved: its fallback stays"
    wait_until(lambda: all(fleet.running(n) == {"hello": "3.0.1"} and not fleet.errors(n) for n in CANARY),
               timeout=60, what="the canaries back on 3.0.1")
    assert "canary-1" in _thread(stack, release) and "rolled back" in _thread(stack, release)


def _drop_dockauth(stack: Stack, sid: str) -> None:
    with stack.exchange.state.lock:
        stack.exchange.state.dockauths.pop((ORG, sid), None)


@pytest.mark.parametrize(("version", "sabotage", "words"), [
    # (a signature the agent cannot verify is not here: real agents decline it silently, the node stays on its old
    # version and the stage waits; the stand-in's test_fleet shows that)
    ("3.0.4", "dockauth", "has no credentials for registry"),
    ("3.0.5", "ca", "certificate signed by unknown authority — install the registry CA on the node"),
])
def test_nodes_refuse_and_say_why(stack: Stack, version: str, sabotage: str, words: str) -> None:
    """The canaries go offline until edgebot has published and moved their policy; then the Exchange is tampered
    with (or the node's CA trust removed), the canaries come back, refuse the new version and fall back."""
    fleet = stack.exchange.fleet
    for node in CANARY:
        fleet.set_online(node, False)
    try:
        release_id = _start(stack, f"publish hello {version} --registry local")
        _wait_rolling(stack, release_id)
        sid = f"hello_{version}_amd64"
        if sabotage == "dockauth":
            _drop_dockauth(stack, sid)
        for node in CANARY:
            if sabotage == "ca":
                fleet.set_trusts_ca(node, False)
            fleet.set_online(node, True)
        release = _finish(stack, release_id)
    finally:
        for node in CANARY:
            fleet.set_online(node, True)
            fleet.set_trusts_ca(node, True)
    assert release.state == "rolled_back", (release.error, stack.log_tail("worker-publish"))
    assert release.error_detail and all(words in line for line in release.error_detail), release.error_detail
    host = stack.registry.address  # type: ignore[union-attr]
    assert host in release.error_detail[0]
    assert words in _thread(stack, release)
    assert _policy_versions(stack, "hello-canary") == ["3.0.1"]
    wait_until(lambda: all(fleet.running(n) == {"hello": "3.0.1"} for n in CANARY), timeout=60,
               what="the canaries back on 3.0.1")


def test_watch_holds_no_worker_and_survives_a_worker_restart(stack: Stack) -> None:
    """While the canaries are offline the stage cannot end; meanwhile the next poll waits in RQ's scheduled registry
    (no worker is busy with it), the publish worker is replaced, and the new one finishes the rollout."""
    from rq import Queue
    from rq.registry import ScheduledJobRegistry

    from edgebot.jobs import PUBLISH_QUEUE, SERIALIZER
    from sandbox.processes import add_commit

    # a version of its own: the canaries failed 3.0.5 in test_nodes_refuse_and_say_why, and an agent does not try a
    # version again that it fell back from within retry_durations
    add_commit(stack.source_path, {"index.html": "3.0.8\n"}, tag="v3.0.8")
    fleet = stack.exchange.fleet
    for node in CANARY:
        fleet.set_online(node, False)
    try:
        release_id = _start(stack, "publish hello 3.0.8 --registry local --arch amd64")
        _wait_rolling(stack, release_id)
        scheduled = ScheduledJobRegistry(queue=Queue(PUBLISH_QUEUE, connection=stack.redis(), serializer=SERIALIZER))
        wait_until(lambda: any(f"{release_id}-rollout-poll-" in j for j in scheduled.get_job_ids()), timeout=60,
                   what="a poll waiting in the scheduled registry")
        stack.stop_process("worker-publish")
        before = stack.store().require(release_id).rollout[0].polls
        stack.start_worker("publish-2", "--publish")
        wait_until(lambda: stack.store().require(release_id).rollout[0].polls > before, timeout=120,
                   what="the new worker to poll")
        for node in CANARY:
            fleet.set_online(node, True)
        release = _finish(stack, release_id)
    finally:
        for node in CANARY:
            fleet.set_online(node, True)
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish-2"))
    assert all(fleet.running(n) == {"hello": "3.0.8"} for n in CANARY + FLEET)


def test_rollout_command_shows_the_fleet_state(stack: Stack) -> None:
    last = stack.store().history(ORG, "hello", 1)[0]
    body = stack.command("rollout hello").json()
    assert body["response_type"] == "ephemeral", body
    assert f"hello {last.version}" in body["text"] and last.release_id in body["text"]
    assert f"{len(CANARY)} of {len(CANARY)} online node(s) run {last.version}" in body["text"]
    assert "fleet" in body["text"] and "offline 1" in body["text"]
    refused = stack.command("rollout hello-seed").json()
    assert "has no rollout stages" in refused["text"] and "Usage:" in refused["text"]
    assert "is not in edgebot's catalog" in stack.command("rollout nosuch").json()["text"]


def test_exchange_down_past_the_retries_rolls_back(stack: Stack) -> None:
    current = _policy_versions(stack, "hello-canary")
    # the Exchange's node-details goes down when the canary policy is moved (after the start's checks read it), so
    # every poll of the canary stage fails
    stack.exchange.before_next("PATCH", r"/business/policies/hello-canary$", lambda: stack.exchange.fail_next(
        "GET", r"/node-details$", 502, count=1000))
    try:
        release = _publish(stack, "publish hello 3.0.2 --registry local")
    finally:
        with stack.exchange.state.lock:
            stack.exchange.state.faults.clear()
    assert release.state == "rolled_back", (release.error, stack.log_tail("worker-publish-2"))
    assert "502" in release.error and "points to the previous version again" in release.error
    assert _policy_versions(stack, "hello-canary") == current[:1], "the previous version again (without fallback)"
    assert release.rollout[0].status == "rolled_back" and release.rollout[1].status == "pending"


def test_policy_option_rolls_out_through_the_chosen_catalog_object_only(stack: Stack) -> None:
    fleet_before = _policy_versions(stack, "hello-fleet")
    refused = stack.command("publish hello 3.0.1 --registry local --policy some-other-policy").json()
    assert "is not one of `hello`'s rollout policies or patterns" in refused["text"]
    assert "`hello-canary`, `hello-fleet`" in refused["text"]
    release = _publish(stack, "publish hello 3.0.1 --registry local --policy hello-canary")
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish-2"))
    assert [s.name for s in release.rollout] == ["override"]
    assert [t["name"] for t in release.rollout[0].targets] == ["hello-canary"]
    assert _policy_versions(stack, "hello-canary")[0] == "3.0.1"
    assert _policy_versions(stack, "hello-fleet") == fleet_before
    fleet = stack.exchange.fleet
    assert all(fleet.running(n) == {"hello": "3.0.1"} for n in CANARY)


def test_failure_on_the_second_object_of_a_stage_puts_the_first_back(stack: Stack) -> None:
    canary_before, fleet_before = _policy_versions(stack, "hello-canary"), _policy_versions(stack, "hello-fleet")
    stack.exchange.fail_next("PATCH", r"/business/policies/hello-fleet$", 502, count=1000)
    try:
        release = _publish(stack, "publish hello 3.0.4 --registry local --policy hello-canary,hello-fleet")
    finally:
        with stack.exchange.state.lock:
            stack.exchange.state.faults.clear()
    assert release.state == "rolled_back", (release.error, stack.log_tail("worker-publish-2"))
    assert "hello-fleet" in release.error or "502" in release.error
    assert [t["name"] for t in release.rollout[0].targets] == ["hello-canary"]
    assert _policy_versions(stack, "hello-canary") == canary_before[:1], "the previous version again"
    assert _policy_versions(stack, "hello-fleet") == fleet_before
    patches = [r for r in stack.exchange.requests() if r["method"] == "PATCH" and r["path"].endswith("/hello-canary")]
    assert len(patches) >= 2, "moved, then put back"
    assert not [r for r in stack.exchange.requests() if r["method"] == "PUT" and "/business/policies/" in r["path"]]


def test_rollback_command_puts_the_last_rollout_back(stack: Stack) -> None:
    nothing = stack.command("rollback hello").json()
    assert "has no rollout to roll back" in nothing["text"], "the last rollout was rolled back already"
    release = _publish(stack, "publish hello 3.0.2 --registry local")
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish-2"))
    previous = {t["name"]: t["previous"]["*"] for s in release.rollout for t in s.targets}
    assert _policy_versions(stack, "hello-canary")[0] == "3.0.2"
    ack = stack.command("rollback hello").json()
    assert ack["response_type"] == "ephemeral" and release.release_id in ack["text"], ack
    store = stack.store()
    wait_until(lambda: store.require(release.release_id).state == "rolled_back", timeout=60, what="the rollback")
    wait_until(lambda: all(_policy_versions(stack, n) == [v] for n, v in previous.items()), timeout=60,
               what="the policies to pin the previous versions")
    fleet = stack.exchange.fleet
    wait_until(lambda: all(fleet.running(n) == {"hello": previous["hello-canary"]} for n in CANARY), timeout=60,
               what="the canaries on the previous version")
    wait_until(lambda: "rolled back by" in _thread(stack, release), timeout=30, what="the thread to say it")


FRESH_POLICY = """/* created by edgebot when the Exchange does not have it yet */
{
    "label": "$SERVICE_NAME on fresh nodes",
    "service": {"name": "$SERVICE_NAME", "org": "$HZN_ORG_ID", "arch": "*",
                "serviceVersions": [{"version": "$SERVICE_VERSION", "priority": {"priority_value": 1,
                                                                                 "retries": 1,
                                                                                 "retry_durations": 3600}}]},
    "constraints": ["group == fresh"]
}
"""


def test_missing_policy_is_created_from_the_service_source(stack: Stack) -> None:
    from sandbox.processes import add_commit

    refused = _publish(stack, "publish hello-new 3.0.5 --registry local")
    assert refused.state == "failed" and "deployment.policy.json is not in hello-new's source" in refused.error
    assert "hello-fresh" not in stack.exchange.policies(ORG)
    fleet = stack.exchange.fleet
    fresh = [fleet.add_node(ORG, f"fresh-{i}", "amd64", properties=[{"name": "group", "value": "fresh"}])
             for i in (1, 2)]
    add_commit(stack.source_path, {"horizon/deployment.policy.json": FRESH_POLICY}, tag="v3.0.6")
    release = _publish(stack, "publish hello-new 3.0.6 --registry local")
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish-2"))
    policy = stack.exchange.policies(ORG)["hello-fresh"]
    assert policy["label"] == "hello on fresh nodes" and policy["owner"] == f"{ORG}/{EXCHANGE_USER}"
    assert _policy_versions(stack, "hello-fresh") == ["3.0.6"]
    assert release.rollout[0].targets[0]["created"] is True
    assert all(fleet.running(n) == {"hello": "3.0.6"} for n in fresh)
    assert release.rollout[0].counts["new"] == 2


def test_rollback_deletes_a_policy_the_release_created(stack: Stack) -> None:
    with stack.exchange.state.lock:
        del stack.exchange.state.policies[ORG]["hello-fresh"]
    fleet = stack.exchange.fleet
    fresh = [n for n in fleet.nodes if "/fresh-" in n]
    for node in fresh:
        fleet.set_failing(node, ["3.0.6"])
    # without its policy the node stops 3.0.6; only then does the rollout start from a known state
    wait_until(lambda: all(fleet.running(n) == {} for n in fresh), timeout=30, what="the fresh nodes to stop 3.0.6")
    try:
        release = _publish(stack, "publish hello-new 3.0.6 --registry local")
    finally:
        for node in fresh:
            fleet.set_failing(node, failing=False)
    assert release.state == "rolled_back", (release.error, stack.log_tail("worker-publish-2"))
    assert "hello-fresh" not in stack.exchange.policies(ORG)
    wait_until(lambda: all(fleet.running(n) == {} for n in fresh), timeout=60, what="the fresh nodes to stop it")


def _click(stack: Stack, message_ts: str, action_id: str, user_id: str) -> str:
    """Click ``action_id`` on the message as ``user_id``; the ephemeral answer the click got."""
    message = stack.slack.api_message(CHANNEL_ID, message_ts)
    assert message is not None
    value = next(e["value"] for b in message.get("blocks", []) if b["type"] == "actions" for e in b["elements"]
                 if e["action_id"] == action_id)
    seen = len(stack.slack.ephemerals(CHANNEL_ID))
    stack.platform().block_action(action_id=action_id, value=value, user_id=user_id, channel_id=CHANNEL_ID,
                                  message_ts=message_ts)
    answers = wait_until(lambda: stack.slack.ephemerals(CHANNEL_ID)[seen:], timeout=20, what="the click's answer")
    return str(answers[0]["text"])


def test_rollback_under_the_approval_policy_needs_a_second_person(stack: Stack) -> None:
    from sandbox.processes import add_commit
    from sandbox.stack import APPROVER, REQUESTER

    with httpx.Client(base_url=stack.exchange.url + "/", auth=(f"{ORG}/{EXCHANGE_USER}", EXCHANGE_PASSWORD)) as c:
        body = {"label": "gated", "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": [
            {"version": "3.0.0", "priority": PRIORITY}]}, "constraints": ["group == gated"]}
        assert c.post(f"orgs/{ORG}/business/policies/hello-gated-fleet", json=body).status_code == 201
    fleet = stack.exchange.fleet
    gated = [fleet.add_node(ORG, f"gated-{i}", "amd64", properties=[{"name": "group", "value": "gated"}])
             for i in (1, 2)]
    add_commit(stack.source_path, {"index.html": "gated 3.0.7\n"}, tag="v3.0.7")
    store = stack.store()

    release_id = _start(stack, "publish hello-gated 3.0.7 --registry local")  # the publish asks for approval too
    card = wait_until(lambda: (r := store.require(release_id)).approval and r.approval.card_ts, timeout=240,
                      what="the publish's approval card")
    assert "being published now" in _click(stack, card, "approve_release", APPROVER)
    release = _finish(stack, release_id)
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish"))
    assert _policy_versions(stack, "hello-gated-fleet") == ["3.0.7", "3.0.0"]

    asked = stack.command("rollback hello-gated").json()
    assert "needs 1 approval(s)" in asked["text"], asked
    request_card = wait_until(lambda: (r := store.require(release_id)).rollback_request and
                              r.rollback_request.card_ts, timeout=30, what="the rollback card")
    again = stack.command("rollback hello-gated").json()  # asked twice: still one request, one card
    assert "needs 1 approval(s)" in again["text"]
    assert store.require(release_id).rollback_request.card_ts == request_card  # type: ignore[union-attr]
    assert store.require(release_id).state == "succeeded", "nothing moves before the approval"
    assert _policy_versions(stack, "hello-gated-fleet") == ["3.0.7", "3.0.0"]

    assert "you requested" in _click(stack, request_card, "approve_rollback", REQUESTER).lower()  # four-eyes
    assert "being rolled back now" in _click(stack, request_card, "approve_rollback", APPROVER)
    wait_until(lambda: store.require(release_id).state == "rolled_back", timeout=60, what="the rollback")
    wait_until(lambda: _policy_versions(stack, "hello-gated-fleet") == ["3.0.0"], timeout=60,
               what="the policy to pin 3.0.0 again")
    wait_until(lambda: all(fleet.running(n) == {"hello": "3.0.0"} for n in gated), timeout=60,
               what="the gated nodes back on 3.0.0")
    final = store.require(release_id)
    assert final.rollback_request is not None and final.rollback_request.status == "approved"
    assert [(d.user_id, d.outcome) for d in final.rollback_request.decisions] == [(APPROVER, "approved")]
    wait_until(lambda: not any(b["type"] == "actions" for b in
                               (stack.slack.find_message(CHANNEL_ID, request_card) or {}).get("blocks", [])),
               timeout=30, what="the rollback card to lose its buttons")


def test_pattern_rollout_end_to_end(stack: Stack) -> None:
    """A service deployed by a pattern: the pattern's serviceVersions move, pattern nodes follow, other services of
    the pattern and the rest of its body stay as they were. The pattern changes once (the fallback is never dropped
    from a pattern: a second change would restart every node again), so every node restarts once, and the thread
    says so."""
    from sandbox.processes import add_commit

    with httpx.Client(base_url=stack.exchange.url + "/", auth=(f"{ORG}/{EXCHANGE_USER}", EXCHANGE_PASSWORD)) as c:
        body = {"label": "hello by pattern", "description": "kept as is", "public": False, "services": [
            {"serviceUrl": "hello", "serviceOrgid": ORG, "serviceArch": "amd64",
             "serviceVersions": [{"version": "3.0.0", "priority": PRIORITY}]}]}
        assert c.post(f"orgs/{ORG}/patterns/hello-pattern", json=body).status_code == 201
    fleet = stack.exchange.fleet
    nodes = [fleet.add_node(ORG, f"pat-{i}", "amd64", pattern=f"{ORG}/hello-pattern") for i in (1, 2, 3)]
    wait_until(lambda: all(fleet.running(n) == {"hello": "3.0.0"} for n in nodes), timeout=60,
               what="the pattern's nodes on 3.0.0")
    add_commit(stack.source_path, {"index.html": "pattern 3.0.9\n"}, tag="v3.0.9")

    release = _publish(stack, "publish hello-pat 3.0.9 --registry local")
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish"))
    assert [(t["kind"], t["name"]) for s in release.rollout for t in s.targets] == [("pattern", "hello-pattern")]
    assert release.rollout[0].status == "healthy" and release.rollout[0].counts.get("new") == 3
    assert all(fleet.running(n) == {"hello": "3.0.9"} for n in nodes)
    pattern = stack.exchange.patterns(ORG)["hello-pattern"]
    assert [v["version"] for v in pattern["services"][0]["serviceVersions"]] == ["3.0.9", "3.0.0"], "fallback kept"
    assert pattern["description"] == "kept as is"
    assert "Rollout · pattern" in _thread(stack, release)
    assert "restarts every node of the pattern once" in _thread(stack, release)
    assert [fleet.restarts(n) for n in nodes] == [1, 1, 1], "one pattern change, one restart per node"
    writes = [r["method"] for r in stack.exchange.requests() if r["path"].endswith("/patterns/hello-pattern")
              and r["method"] != "GET"]
    assert writes == ["POST", "PATCH"], writes


def _policy_writes(stack: Stack, name: str) -> list[str]:
    return [r["method"] for r in stack.exchange.requests()
            if r["path"].endswith(f"/business/policies/{name}") and r["method"] != "GET"]


def test_a_standard_exchange_user_is_refused_before_anything_moves(stack: Stack) -> None:
    """node-details shows a standard user only the nodes it owns ([] here): the rollout refuses to start, saying which
    role is needed, instead of counting an empty fleet as healthy."""
    from sandbox.processes import add_commit

    add_commit(stack.source_path, {"index.html": "3.1.0\n"}, tag="v3.1.0")
    before = {name: _policy_versions(stack, name) for name in ("hello-canary", "hello-fleet")}
    writes = {name: len(_policy_writes(stack, name)) for name in before}
    stack.exchange.add_user(ORG, EXCHANGE_USER, EXCHANGE_PASSWORD, admin=False)
    try:
        release = _publish(stack, "publish hello 3.1.0 --registry local")
    finally:
        stack.exchange.add_user(ORG, EXCHANGE_USER, EXCHANGE_PASSWORD, admin=True)
    assert release.state == "failed", (release.state, release.error)
    assert f"{ORG}/{EXCHANGE_USER} is a standard user of org {ORG}" in release.error
    assert f"admin role of org {ORG}" in release.error and "nothing was moved" in release.error
    assert {name: _policy_versions(stack, name) for name in before} == before
    assert {name: len(_policy_writes(stack, name)) for name in before} == writes, "not one write"
    assert "admin role" in _thread(stack, release)


def test_a_slow_pull_completes_and_a_humans_edit_of_the_constraints_survives(stack: Stack) -> None:
    """Every node reports "not started" for 5 polls while it pulls: counted as starting, not failing, and the stage
    ends healthy. A human edits hello-fleet's constraints between edgebot's re-read and its write: edgebot PATCHes
    only ``service``, so the edit stays."""
    from sandbox.processes import add_commit

    add_commit(stack.source_path, {"index.html": "3.1.1\n"}, tag="v3.1.1")
    fleet = stack.exchange.fleet
    edited = ['group == "fleet"']

    def human_edit() -> None:
        with stack.exchange.state.lock:
            stack.exchange.state.policies[ORG]["hello-fleet"]["constraints"] = list(edited)

    stack.exchange.before_next("PATCH", r"/business/policies/hello-fleet$", human_edit)
    fleet.pull_time = 2.5  # five poll intervals
    try:
        release_id = _start(stack, "publish hello 3.1.1 --registry local")
        store = stack.store()
        wait_until(lambda: (r := store.require(release_id)).rollout and r.rollout[0].counts.get("starting", 0) > 0,
                   timeout=300, what="the canaries counted as starting while they pull")
        release = _finish(stack, release_id)
    finally:
        fleet.pull_time = 0.0
    assert release.state == "succeeded", (release.error, release.error_detail, stack.log_tail("worker-publish-2"))
    assert all(s.status == "healthy" and s.counts["failing"] == 0 for s in release.rollout)
    assert all(fleet.running(n) == {"hello": "3.1.1"} for n in CANARY + FLEET)
    policy = stack.exchange.policies(ORG)["hello-fleet"]
    assert policy["constraints"] == edited, "the human's edit survived edgebot's write"
    assert _policy_versions(stack, "hello-fleet")[0] == "3.1.1"
    assert "PUT" not in _policy_writes(stack, "hello-fleet")


def test_a_stage_that_matches_no_node_halts(stack: Stack) -> None:
    from sandbox.processes import add_commit

    with httpx.Client(base_url=stack.exchange.url + "/", auth=(f"{ORG}/{EXCHANGE_USER}", EXCHANGE_PASSWORD)) as c:
        body = {"label": "nowhere", "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": [
            {"version": "3.0.0", "priority": PRIORITY}]}, "constraints": ["group == nowhere"]}
        assert c.post(f"orgs/{ORG}/business/policies/hello-nowhere", json=body).status_code == 201
    add_commit(stack.source_path, {"index.html": "3.1.2\n"}, tag="v3.1.2")
    release = _publish(stack, "publish hello-none 3.1.2 --registry local")
    assert release.state == "rolled_back", (release.state, release.error)
    assert "the constraints of policy `hello-nowhere` (group == nowhere) match no node" in release.error
    assert release.rollout[0].status == "failed" and release.rollout[0].counts["total"] == 0
    assert _policy_versions(stack, "hello-nowhere") == ["3.0.0"]
    assert "match no node" in _thread(stack, release) and "healthy" not in release.rollout[0].note


def test_a_policy_the_agbot_would_drop_is_never_written(stack: Stack) -> None:
    """hello-fresh is missing; the service's template pins ``{"priority_value": 1}`` without retries: the Exchange
    would store it, the agbot would drop it and no node would move. edgebot refuses to create it."""
    from sandbox.processes import add_commit

    assert "hello-fresh" not in stack.exchange.policies(ORG)
    template = FRESH_POLICY.replace('"retries": 1,', "").replace('"retry_durations": 3600', "").replace(
        '"priority_value": 1,', '"priority_value": 1')
    assert '"retries"' not in template
    add_commit(stack.source_path, {"horizon/deployment.policy.json": template}, tag="v3.1.3")
    writes = len(_policy_writes(stack, "hello-fresh"))
    release = _publish(stack, "publish hello-new 3.1.3 --registry local")
    assert release.state == "failed", (release.state, release.error)
    assert "would be dropped by the agreement bot" in release.error and "retries 0" in release.error
    assert "hello-fresh" not in stack.exchange.policies(ORG)
    assert len(_policy_writes(stack, "hello-fresh")) == writes, "nothing was written"


def _tamper_signature(stack: Stack, sid: str) -> None:
    """The stored signature replaced by one of a key the service does not have."""
    state = stack.exchange.state
    with state.lock:
        record = state.services[ORG][sid]
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signature = other.sign(record["deployment"].encode(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                               salt_length=padding.PSS.MAX_LENGTH), hashes.SHA256())
        record["deploymentSignature"] = base64.b64encode(signature).decode()
        state.generation += 1


def test_a_wrong_key_is_diagnosed_within_the_diagnosis_time(stack: Stack) -> None:
    """The agent declines a signature it cannot verify without any error: the canaries stay on the old version, and
    edgebot names the cause in the thread after rollout_diagnose_after (3 s here), not at the stage timeout."""
    from sandbox.processes import add_commit

    add_commit(stack.source_path, {"index.html": "3.1.4\n"}, tag="v3.1.4")
    fleet = stack.exchange.fleet
    old = {n: fleet.running(n) for n in CANARY}
    for node in CANARY:
        fleet.set_online(node, False)
    store = stack.store()
    try:
        release_id = _start(stack, "publish hello 3.1.4 --registry local")
        _wait_rolling(stack, release_id)
        _tamper_signature(stack, "hello_3.1.4_amd64")
        for node in CANARY:
            fleet.set_online(node, True)
        note = wait_until(lambda: "verifies with none" in (n := store.require(release_id).rollout[0].note) and n,
                          timeout=60, what="the diagnosis")
    finally:
        for node in CANARY:
            fleet.set_online(node, True)
    assert "3 node(s) still on the old version" in note and "hello_3.1.4_amd64" in note
    assert all(name.split("/")[1] in note for name in CANARY)
    assert store.require(release_id).rollout[0].status == "running", "diagnosed long before the stage timeout"
    assert all(fleet.running(n) == old[n] and not fleet.errors(n) for n in CANARY), "declined silently"
    wait_until(lambda: "verifies with none" in _thread(stack, store.require(release_id)), timeout=30,
               what="the thread to name the cause")
    ack = stack.command("rollback hello").json()
    assert release_id in ack["text"], ack
    wait_until(lambda: store.require(release_id).state == "rolled_back", timeout=60, what="the rollback")
    # the record says rolled_back before the policies are re-pointed: wait for the writes too (the next test counts
    # the writes to these policies)
    wait_until(lambda: all("3.1.4" not in _policy_versions(stack, name) for name in ("hello-canary", "hello-fleet")),
               timeout=60, what="the policies to pin the previous version again")


def test_constraints_the_agbot_cannot_read_halt_the_rollout_before_anything_moves(stack: Stack) -> None:
    """anax's constraint language has no NOT: a policy using it is refused by the agbot and would reach no node. The
    rollout says so, naming the policy and the reason, and writes nothing, instead of guessing which nodes match."""
    from sandbox.processes import add_commit

    add_commit(stack.source_path, {"index.html": "3.1.5\n"}, tag="v3.1.5")
    policies = stack.exchange.state.policies[ORG]
    with stack.exchange.state.lock:
        kept = list(policies["hello-fleet"]["constraints"])
        policies["hello-fleet"]["constraints"] = ['NOT group == "canary"']
    before = {name: _policy_versions(stack, name) for name in ("hello-canary", "hello-fleet")}
    writes = {name: len(_policy_writes(stack, name)) for name in before}
    try:
        release = _publish(stack, "publish hello 3.1.5 --registry local")
    finally:
        with stack.exchange.state.lock:
            policies["hello-fleet"]["constraints"] = kept
    assert release.state == "failed", (release.state, release.error)
    assert "constraints of policy `hello-fleet` cannot be evaluated" in release.error and "NOT" in release.error
    assert "Nothing moved" in release.error
    assert {name: _policy_versions(stack, name) for name in before} == before
    assert {name: len(_policy_writes(stack, name)) for name in before} == writes, "not one write"


def test_nodes_whose_own_constraints_refuse_the_policy_are_not_counted(stack: Stack) -> None:
    """Two of five nodes meet hello-picky's constraints but their node policy asks for ``tier == test`` while the policy
    offers ``tier == prod``: the agbot never makes an agreement with them (anax compcheck CheckPolicyCompatiblility,
    both directions). A fifth fails the new version's service policy (merged into the deployment policy). The stage
    counts the two nodes that can run the new version and goes healthy, instead of waiting for the others until its
    timeout and rolling back; the thread names the cause for the two that refuse the policy."""
    from sandbox.processes import add_commit

    fleet = stack.exchange.fleet
    props = [{"name": "group", "value": "picky"}, {"name": "hw", "value": "big"}]
    easy = [fleet.add_node(ORG, f"picky-{i}", "amd64", properties=props, constraints=constraints)
            for i, constraints in ((1, []), (2, ["tier == prod"]))]
    picky = [fleet.add_node(ORG, f"picky-{i}", "amd64", properties=props, constraints=["tier == test"])
             for i in (3, 4)]
    # the service policy of the new version asks for big hardware: the agbot merges its constraints into the
    # deployment policy's, so picky-small keeps the fallback (3.0.0) and is not part of the stage either
    small = fleet.add_node(ORG, "picky-small", "amd64", properties=[{"name": "group", "value": "picky"},
                                                                   {"name": "hw", "value": "small"}])
    fleet.set_service_policy(ORG, "hello_3.1.6_amd64", {"properties": [], "constraints": ["hw == big"]})
    with httpx.Client(base_url=stack.exchange.url + "/", auth=(f"{ORG}/{EXCHANGE_USER}", EXCHANGE_PASSWORD)) as c:
        body = {"label": "picky", "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": [
            {"version": "3.0.0", "priority": PRIORITY}]}, "properties": [{"name": "tier", "value": "prod"}],
            "constraints": ["group == picky"]}
        assert c.post(f"orgs/{ORG}/business/policies/hello-picky", json=body).status_code == 201
    wait_until(lambda: all(fleet.running(n) == {"hello": "3.0.0"} for n in [*easy, small]), timeout=60,
               what="the compatible nodes to run 3.0.0")
    assert all(fleet.running(n) == {} for n in picky), "the agbot makes no agreement with a node that refuses it"
    add_commit(stack.source_path, {"index.html": "3.1.6\n"}, tag="v3.1.6")
    release = _publish(stack, "publish hello-picky 3.1.6 --registry local")
    assert release.state == "succeeded", (release.state, release.error)
    stage = release.rollout[0]
    assert stage.status == "healthy" and stage.counts["total"] == 2 and stage.counts["new"] == 2, stage.counts
    assert all(fleet.running(n) == {"hello": "3.1.6"} for n in easy)
    assert all(fleet.running(n) == {} for n in picky)
    assert fleet.running(small) == {"hello": "3.0.0"}, "the service policy refuses it 3.1.6; it keeps the fallback"
    assert "2 node(s) left out of the stage: the node's constraints refuse the policy `hello-picky`" in stage.note
    assert "picky-3, picky-4" in stage.note and "tier == test" in stage.note
    assert "the node's constraints refuse the policy" in _thread(stack, release)


def test_a_node_constraint_that_cannot_be_read_refuses_the_rollout_before_anything_moves(stack: Stack) -> None:
    """A node of hello-picky carries a node policy constraint the agbot's language cannot read (it has no NOT): which
    nodes the rollout reaches is unknown, so it is refused before anything moves, naming the node and the
    expression, instead of guessing whether that node counts."""
    from sandbox.processes import add_commit

    fleet = stack.exchange.fleet
    odd = fleet.add_node(ORG, "picky-odd", "amd64", properties=[{"name": "group", "value": "picky"}],
                         constraints=["NOT tier == test"])
    before = _policy_versions(stack, "hello-picky")
    writes = len(_policy_writes(stack, "hello-picky"))
    add_commit(stack.source_path, {"index.html": "3.1.7\n"}, tag="v3.1.7")
    try:
        release = _publish(stack, "publish hello-picky 3.1.7 --registry local")
    finally:
        fleet.set_node_policy(odd, constraints=["tier == nowhere"])  # readable again: later tests are not refused
    assert release.state == "failed", (release.state, release.error)
    assert "rollout refused, nothing was moved" in release.error and f"node {odd}" in release.error
    assert "NOT tier == test" in release.error and "no NOT" in release.error
    assert _policy_versions(stack, "hello-picky") == before
    assert len(_policy_writes(stack, "hello-picky")) == writes, "not one write"


def test_a_node_constraint_that_becomes_unreadable_halts_the_stage(stack: Stack) -> None:
    """The same node policy set while the stage runs (hzn policy update on a node): the next poll cannot know which
    nodes count, so the stage halts and what moved is put back, naming the node and the expression."""
    from sandbox.processes import add_commit

    fleet = stack.exchange.fleet
    odd = f"{ORG}/picky-odd"
    before = _policy_versions(stack, "hello-picky")
    add_commit(stack.source_path, {"index.html": "3.1.8\n"}, tag="v3.1.8")
    # the node's policy changes while edgebot moves hello-picky (after the start's checks, before the first poll)
    stack.exchange.before_next("PATCH", r"/business/policies/hello-picky$", lambda: fleet.set_node_policy(
        odd, constraints=['tier == "prod']))
    try:
        release = _publish(stack, "publish hello-picky 3.1.8 --registry local")
    finally:
        fleet.set_node_policy(odd, constraints=["tier == nowhere"])
    assert release.state == "rolled_back", (release.state, release.error)
    assert "rollout stage picky halted" in release.error and f"node {odd}" in release.error
    assert "tier == \"prod" in release.error
    assert _policy_versions(stack, "hello-picky") == before[:1], "the previous version pinned again"
