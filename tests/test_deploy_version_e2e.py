"""`/edge deploy SERVICE VERSION` and `/edge rollback SERVICE --to VERSION` end to end (issue 13), and the rollback
job's verification of its approvals (issue 12): signed slash commands to the real bot, real RQ workers (the
scheduler runs the polls), real Redis, Docker and registry; the Exchange stand-in's simulated agents run what the
policies say (and verify signatures like anax: a deployment no stored key verifies is declined silently).

Versions: 5.0.0 published by edgebot without a rollout (``hello-seed``), 5.0.1 published and rolled out by ``hello``
through the canary and fleet policies. Everything after that moves the fleet between those two without a build."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from rq.job import Job

from edgebot.jobs import Step, enqueue_step
from edgebot.release import Decision, Release
from sandbox.stack import APPROVER, CHANNEL_ID, EXCHANGE_PASSWORD, EXCHANGE_USER, ORG, REQUESTER, Stack, wait_until

pytestmark = pytest.mark.slow

VERSIONS = ("5.0.0", "5.0.1", "5.0.2")
TOML = """
[[services.hello.rollout]]
stage = "canary"
policies = ["hello-canary"]

[[services.hello.rollout]]
stage = "fleet"
policies = ["hello-fleet"]

[[services.hello-two.rollout]]  # amd64 and arm64 in the catalog; 5.0.x is only in the Exchange for amd64
stage = "both"
policies = ["hello-two-fleet"]

[[services.hello-gated.rollout]]
stage = "gated"
policies = ["hello-gated-fleet"]

[approvals]                   # only hello-gated asks for approval (of a deploy like of a publish, and of a rollback)
approvers = ["U0APPROVER"]
required = 0
[approvals.services.hello-gated]
required = 1
"""
CANARY = [f"{ORG}/canary-{i}" for i in (1, 2)]
FLEET = [f"{ORG}/fleet-{i}" for i in (1, 2, 3)]
GATED = [f"{ORG}/gated-{i}" for i in (1, 2)]
PRIORITY = {"priority_value": 1, "retries": 1, "retry_durations": 3600}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("deploy-version")
    settings = {"rollout_poll_interval": 0.5, "rollout_offline_after": 4.0, "rollout_stage_timeout": 240.0,
                "rollout_failure_threshold": 0, "duplicate_window": 1, "rollout_pull_grace": 30.0,
                "rollout_diagnose_after": 60.0}
    with Stack(workdir, docker=docker_daemon, registry=registry, versions=VERSIONS, settings=settings,
               extra_services={"hello-seed": ["amd64"], "hello-two": ["amd64", "arm64"], "hello-gated": ["amd64"]},
               extra_toml=TOML) as running:
        fleet = running.exchange.fleet
        fleet.apply_delay, fleet.heartbeat_interval = 0.3, 0.5
        running.exchange.add_user(ORG, EXCHANGE_USER, EXCHANGE_PASSWORD, admin=True)  # sees the org's nodes
        running.wait_workers(2)
        _seed(running)
        yield running


def _seed(stack: Stack) -> None:
    seed = _publish(stack, "publish hello-seed 5.0.0 --registry local")
    assert seed.state == "succeeded", (seed.error, stack.log_tail("worker-publish"))
    with httpx.Client(base_url=stack.exchange.url + "/", auth=(f"{ORG}/{EXCHANGE_USER}", EXCHANGE_PASSWORD)) as c:
        for name, group in (("hello-canary", "canary"), ("hello-fleet", "fleet"), ("hello-gated-fleet", "gated")):
            body = {"label": name, "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": [
                {"version": "5.0.0", "priority": PRIORITY}]}, "constraints": [f"group == {group}"]}
            assert c.post(f"orgs/{ORG}/business/policies/{name}", json=body).status_code == 201
    fleet = stack.exchange.fleet
    for node_id in CANARY + FLEET + GATED:
        group = node_id.split("/")[1].split("-")[0]
        fleet.add_node(ORG, node_id.split("/")[1], "amd64", properties=[{"name": "group", "value": group}])
    wait_until(lambda: all(fleet.running(n) == {"hello": "5.0.0"} for n in CANARY + FLEET + GATED), timeout=60,
               what="every node to run 5.0.0")
    rolled = _publish(stack, "publish hello 5.0.1 --registry local")
    assert rolled.state == "succeeded", (rolled.error, stack.log_tail("worker-publish"))
    assert _versions(stack, "hello-canary") == _versions(stack, "hello-fleet") == ["5.0.1", "5.0.0"]


def _start(stack: Stack, text: str, user_id: str = REQUESTER) -> str:
    return stack.start_release(text, user_id=user_id)


def _publish(stack: Stack, text: str) -> Release:
    return stack.finished(stack.start_release(text))


def _versions(stack: Stack, name: str) -> list[str]:
    versions = stack.exchange.policies(ORG)[name]["service"]["serviceVersions"]
    return [v["version"] for v in sorted(versions, key=lambda v: v["priority"]["priority_value"])]


def _thread(stack: Stack, release: Release) -> str:
    return json.dumps(stack.slack.thread(CHANNEL_ID, release.message_ts), ensure_ascii=False)


def _service_writes(stack: Stack, since: int) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in stack.exchange.requests()[since:]
            if r["method"] in ("POST", "PUT", "PATCH", "DELETE") and "/services" in r["path"]]


def _built_nothing(stack: Stack, release: Release) -> None:
    """No build, push, sign or publish step ever ran for the release."""
    assert not release.stages and not release.arch_steps
    assert not {"source", "signed", "published"} & {e["what"] for e in release.events}
    for arch in ("amd64", "arm64"):
        assert not Job.exists(Step.BUILD.job_id(release.release_id, arch), connection=stack.redis())
    assert not Job.exists(Step.PUBLISH.job_id(release.release_id), connection=stack.redis())


def _click(stack: Stack, message_ts: str, action_id: str, user_id: str) -> str:
    message = stack.slack.api_message(CHANNEL_ID, message_ts)
    assert message is not None
    value = next(e["value"] for b in message.get("blocks", []) if b["type"] == "actions" for e in b["elements"]
                 if e["action_id"] == action_id)
    seen = len(stack.slack.ephemerals(CHANNEL_ID))
    stack.platform().block_action(action_id=action_id, value=value, user_id=user_id, channel_id=CHANNEL_ID,
                                  message_ts=message_ts)
    answers = wait_until(lambda: stack.slack.ephemerals(CHANNEL_ID)[seen:], timeout=20, what="the click's answer")
    return str(answers[0]["text"])


# -- refused before anything moves ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("deploy nosuch 5.0.0", "`nosuch` is not in edgebot's catalog"),
    ("deploy hello-seed 5.0.0", "has no rollout stages"),
    ("deploy hello 5.0.0 --policy hello-elsewhere", "`--policy hello-elsewhere` is not one of"),
    ("deploy hello 5.0.0 --registry dockerhub", "Unknown registry alias `dockerhub`"),
    ("deploy hello v5", "is not a version"),
    ("rollback hello --policy hello-canary", "go with `--to VERSION`"),
])
def test_what_the_bot_can_decide_is_refused_ephemerally(stack: Stack, text: str, words: str) -> None:
    before = set(stack.release_ids())
    answer = stack.command(text).json()
    assert answer["response_type"] == "ephemeral" and words in answer["text"], answer
    assert set(stack.release_ids()) == before, "nothing recorded, nothing queued"


def _tamper_signature(stack: Stack, sid: str) -> str:
    """The stored signature replaced by one of a key the service does not have; returns the original."""
    state = stack.exchange.state
    with state.lock:
        record = state.services[ORG][sid]
        original = str(record["deploymentSignature"])
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signature = other.sign(record["deployment"].encode(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                               salt_length=padding.PSS.MAX_LENGTH), hashes.SHA256())
        record["deploymentSignature"] = base64.b64encode(signature).decode()
        state.generation += 1
    return original


def _restore_signature(stack: Stack, sid: str, signature: str) -> None:
    state = stack.exchange.state
    with state.lock:
        state.services[ORG][sid]["deploymentSignature"] = signature
        state.generation += 1


@pytest.mark.parametrize("text, words", [
    ("deploy hello 5.0.2", "hello 5.0.2 is not in the Exchange of org"),  # a tag in git, never published
    ("deploy hello 9.9.9", "hello 9.9.9 is not a version of its source"),
    ("deploy hello-two 5.0.0", "is not in the Exchange for arm64"),
    ("deploy hello 5.0.0", "verifies with none of the 1 key(s) stored with the service"),
])
def test_what_the_worker_finds_fails_the_deploy_in_its_thread_and_moves_nothing(stack: Stack, text: str,
                                                                                 words: str) -> None:
    before = {n: _versions(stack, n) for n in ("hello-canary", "hello-fleet")}
    seen = len(stack.exchange.requests())
    tampered = _tamper_signature(stack, "hello_5.0.0_amd64") if "none of" in words else ""
    try:
        release = _publish(stack, text)
    finally:
        if tampered:
            _restore_signature(stack, "hello_5.0.0_amd64", tampered)
    assert release.state == "failed" and words in release.error, (release.error, stack.log_tail("worker-publish"))
    assert "Nothing moved" in release.error and not release.rollout
    assert {n: _versions(stack, n) for n in before} == before
    assert not [r for r in stack.exchange.requests()[seen:] if r["method"] in ("PATCH", "PUT", "POST", "DELETE")]
    assert not Job.exists(Step.START_ROLLOUT.job_id(release.release_id), connection=stack.redis())
    wait_until(lambda: words in _thread(stack, release), timeout=30, what="the reason in the thread")
    _built_nothing(stack, release)


# -- deploy and rollback --to move the fleet without a build -------------------------------------------------------

def test_rollback_to_and_deploy_of_published_versions_move_the_fleet_without_a_build(stack: Stack) -> None:
    fleet = stack.exchange.fleet
    seen = len(stack.exchange.requests())
    back = _publish(stack, "rollback hello --to 5.0.0")
    assert back.state == "succeeded" and back.kind == "rollback", (back.error, stack.log_tail("worker-publish"))
    assert [(s.name, s.status) for s in back.rollout] == [("canary", "healthy"), ("fleet", "healthy")]
    assert back.rollout[0].targets[0]["previous"] == {"*": "5.0.1"}
    assert _versions(stack, "hello-canary") == _versions(stack, "hello-fleet") == ["5.0.0", "5.0.1"]
    assert all(fleet.running(n) == {"hello": "5.0.0"} for n in CANARY + FLEET)
    assert back.results["amd64"].service_id == "hello_5.0.0_amd64"
    _built_nothing(stack, back)

    forward = _publish(stack, "deploy hello 5.0.1")
    assert forward.state == "succeeded" and forward.kind == "deploy", (forward.error, stack.log_tail("worker-publish"))
    assert _versions(stack, "hello-canary") == _versions(stack, "hello-fleet") == ["5.0.1", "5.0.0"]
    assert all(fleet.running(n) == {"hello": "5.0.1"} for n in CANARY + FLEET)
    _built_nothing(stack, forward)
    assert not _service_writes(stack, seen), "no service, key or dockauth of the Exchange was written"
    thread = _thread(stack, forward)
    assert "is in the Exchange" in thread and "verifies with key" in thread and "is rolled out" in thread

    # the plain /edge rollback still puts the last rollout (this deploy) back
    ack = stack.command("rollback hello").json()
    assert forward.release_id in ack["text"], ack
    store = stack.store()
    wait_until(lambda: store.require(forward.release_id).state == "rolled_back", timeout=60, what="the rollback")
    wait_until(lambda: _versions(stack, "hello-canary") == ["5.0.0"], timeout=60, what="5.0.0 pinned again")


# -- approvals: a deploy under the approval policy, and forged quorums -----------------------------------------------

def _card(stack: Stack, release_id: str) -> str:
    store = stack.store()

    def carded() -> str | None:
        release = store.require(release_id)
        assert not release.is_final, (release.state, release.error, stack.log_tail("worker-publish"))
        return release.approval.card_ts if release.approval is not None and release.approval.card_ts else None

    return str(wait_until(carded, timeout=120, what="the deploy's approval card"))


def test_a_deploy_under_the_approval_policy_needs_a_second_person(stack: Stack) -> None:
    release_id = _start(stack, "deploy hello-gated 5.0.1")
    card_ts = _card(stack, release_id)
    card = json.dumps(stack.slack.find_message(CHANNEL_ID, card_ts))
    assert "a deploy of version 5.0.1, already in the Exchange" in card and "hello_5.0.1_amd64" in card
    assert "policy:hello-gated-fleet" in card
    assert _versions(stack, "hello-gated-fleet") == ["5.0.0"], "nothing moves before the approval"
    assert "you requested" in _click(stack, card_ts, "approve_release", REQUESTER).lower()  # four-eyes
    assert "being rolled out now" in _click(stack, card_ts, "approve_release", APPROVER)
    final = stack.wait_final(release_id, timeout=240)
    assert final.state == "succeeded", (final.error, stack.log_tail("worker-publish"))
    assert _versions(stack, "hello-gated-fleet") == ["5.0.1", "5.0.0"]
    fleet = stack.exchange.fleet
    assert all(fleet.running(n) == {"hello": "5.0.1"} for n in GATED)


def _ghosts(request: Any) -> None:
    for user in ("U0GHOST1", "U0GHOST2"):  # what a hand in Redis can write: no seal key
        request.decisions.append(Decision(user_id=user, outcome="approved", at=request.requested_at,
                                          covers_digest=request.covers_digest, via=user))
    request.quorum_at = request.requested_at


def test_a_forged_deploy_quorum_moves_nothing_and_alerts_the_thread(stack: Stack) -> None:
    release_id = _start(stack, "deploy hello-gated 5.0.0")
    _card(stack, release_id)
    store = stack.store()

    def forge(r: Release) -> None:
        _ghosts(r.approval)
        r.state = "publishing"

    store.update(release_id, forge)
    enqueue_step(stack.redis(), store.settings, Step.DEPLOY, release_id)  # as a build worker could
    final = stack.wait_final(release_id)
    assert final.state == "failed" and "Security check failed" in final.error, (final.state, final.error)
    assert "U0GHOST1" in final.error and "Nothing was moved" in final.error
    assert _versions(stack, "hello-gated-fleet") == ["5.0.1", "5.0.0"], "the fleet did not move"
    assert not final.rollout


def test_a_rollback_whose_quorum_was_forged_in_redis_moves_nothing(stack: Stack) -> None:
    """Issue 12: the rollback job verifies the request's approvals like a publish's before it writes anything."""
    store = stack.store()
    asked = stack.command("rollback hello-gated").json()
    assert "needs 1 approval(s)" in asked["text"], asked
    last = next(r for r in store.history(ORG, "hello-gated", 10) if r.rollout)
    wait_until(lambda: (r := store.require(last.release_id)).rollback_request and r.rollback_request.card_ts,
               timeout=30, what="the rollback card")

    def forge(r: Release) -> None:
        assert r.rollback_request is not None
        _ghosts(r.rollback_request)
        r.rollback_request.status = "approved"

    store.update(last.release_id, forge)
    enqueue_step(stack.redis(), store.settings, Step.ROLLBACK, last.release_id, REQUESTER)  # as a build worker could
    wait_until(lambda: "Security check failed" in _thread(stack, last), timeout=60, what="the alert in the thread")
    after = store.require(last.release_id)
    assert after.state == "succeeded" and any(e["what"] == "rollback_refused" for e in after.events)
    assert "U0GHOST1" in _thread(stack, last)
    assert _versions(stack, "hello-gated-fleet") == ["5.0.1", "5.0.0"], "the fleet did not move"
    assert all(stack.exchange.fleet.running(n) == {"hello": "5.0.1"} for n in GATED)
