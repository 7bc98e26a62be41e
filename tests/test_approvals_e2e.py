"""Approvals end to end: signed block_actions and view_submission payloads posted to the real Bolt app (gunicorn),
real RQ workers (the expiry runs on the scheduler of a worker), real Redis, Docker and registry; stand-ins for Slack
and the Exchange. What counts is read back from the release record, the Slack stand-in and the Exchange stand-in."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from edgebot import approval_messages, approvals
from edgebot.approvals import Refusal
from edgebot.jobs import Step, enqueue_step
from edgebot.release import Decision, Release
from sandbox.stack import APPROVER, CHANNEL_ID, ORG, REQUESTER, Stack, wait_until
from workers.trust import expected_deployment

pytestmark = pytest.mark.slow

APPROVER2, LEAD, OUTSIDER = "U0APPROVER2", "U0LEAD", "U0MALLORY"
APPROVALS = """
[approvals]
approvers = ["U0APPROVER", "U0APPROVER2", "S0LEADS"]
required = 2
[approvals.services.hello-one]
required = 1
[approvals.services.hello-quick]
required = 1
timeout_minutes = 0.1
[approvals.services.hello-dev]
required = 0
"""
VERSIONS = tuple(f"2.0.{n}" for n in range(10))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("approvals")
    one = ["amd64"]
    with Stack(workdir, docker=docker_daemon, registry=registry, versions=VERSIONS, arches=("amd64",),
               extra_services={"hello-one": one, "hello-quick": one, "hello-dev": one},
               extra_toml=APPROVALS, settings={"scheduler_stale_after": 3}) as running:
        running.slack.add_user(APPROVER2, "approver2")
        running.slack.add_user(LEAD, "lead")
        running.slack.add_user(OUTSIDER, "mallory")
        running.slack.add_usergroup("S0LEADS", "leads", [LEAD])
        running.wait_workers(2)
        yield running


def _request(stack: Stack, text: str) -> str:
    before = set(stack.release_ids())
    response = stack.command(text)
    assert response.status_code == 200, response.text
    (release_id,) = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, what="the release record")
    return str(release_id)


def _waiting(stack: Stack, release_id: str, round_: int = 1) -> Release:
    store = stack.store()

    def carded() -> Release | None:
        release = store.require(release_id)
        assert not release.is_final, (release.state, release.error, stack.log_tail("worker-publish"))
        ok = release.approval is not None and release.approval.card_ts and release.approval.round == round_
        return release if ok else None

    return wait_until(carded, timeout=180, interval=0.25, what="the approval card")  # type: ignore[no-any-return]


def _click(stack: Stack, release: Release, user_id: str, action: str = approval_messages.APPROVE_ACTION,
           card_ts: str = "") -> httpx.Response:
    assert release.approval is not None
    ts = card_ts or release.approval.card_ts
    message = stack.slack.api_message(CHANNEL_ID, ts)
    assert message is not None
    buttons = {e["action_id"]: e["value"] for b in message.get("blocks", []) if b["type"] == "actions"
               for e in b["elements"]}
    value = buttons.get(action) or approvals.button_value(release)
    response = stack.platform().block_action(action_id=action, value=value, user_id=user_id, channel_id=CHANNEL_ID,
                                             message_ts=ts)
    assert response.status_code == 200, response.text
    return response


def _answers(stack: Stack, user_id: str) -> list[str]:
    return [e["text"] for e in stack.slack.ephemerals(CHANNEL_ID) if e["user"] == user_id]


def _answer(stack: Stack, user_id: str, count: int) -> str:
    """The ``count``-th ephemeral answer to ``user_id`` (Bolt answers through the response_url after the ack)."""
    return str(wait_until(lambda: _answers(stack, user_id)[count - 1] if len(_answers(stack, user_id)) >= count
                          else None, timeout=20, what=f"answer #{count} to {user_id}"))


def _click_answer(stack: Stack, release: Release, user_id: str, action: str = approval_messages.APPROVE_ACTION,
                  card_ts: str = "") -> str:
    """Click, and return the ephemeral answer the click got."""
    seen = len(_answers(stack, user_id))
    _click(stack, release, user_id, action, card_ts)
    return _answer(stack, user_id, seen + 1)


def _card(stack: Stack, release: Release) -> dict[str, Any]:
    assert release.approval is not None
    card = stack.slack.find_message(CHANNEL_ID, release.approval.card_ts)
    assert card is not None
    return card


def _has_buttons(message: dict[str, Any]) -> bool:
    return any(b["type"] == "actions" for b in message.get("blocks") or [])


def _service_writes(stack: Stack, sid: str, since: int = 0) -> list[dict[str, Any]]:
    """Successful writes of service ``sid`` among the Exchange's requests from index ``since`` on (a POST of a new
    service goes to .../services, so ``since`` must exclude other releases' writes)."""
    return [r for r in stack.exchange.requests()[since:] if r["method"] in ("POST", "PUT")
            and r["path"].rstrip("/").endswith(("/services", f"/services/{sid}")) and r["status"] == 201]


def test_two_of_m_with_four_eyes_a_user_group_and_double_clicks(stack: Stack) -> None:
    release_id = _request(stack, "publish hello 2.0.0 --registry local")
    release = _waiting(stack, release_id)
    since = len(stack.exchange.requests())
    assert release.state == "awaiting_approval"
    assert stack.exchange.service(ORG, "hello_2.0.0_amd64") is None, "nothing is published before approval"
    card = _card(stack, release)
    text = json.dumps(card["blocks"])
    res = release.results["amd64"]
    for fragment in (res.pinned_image, res.signature_fingerprint[:23], release.commit_sha, "<!subteam^S0LEADS>",
                     f"<@{APPROVER}>", "new service `hello_2.0.0_amd64`", release.public_key_fingerprint[:23]):
        assert fragment in text, fragment
    covered = release.approval.covers  # type: ignore[union-attr]
    assert covered["digests"] == {"amd64": res.digest} and covered["key"] == release.public_key_fingerprint

    assert "you requested" in _click_answer(stack, release, REQUESTER).lower()
    assert "not an approver" in _click_answer(stack, release, OUTSIDER)
    assert "counts: 1 of 2" in _click_answer(stack, release, APPROVER)
    wait_until(lambda: "approvals 1 of 2: <@U0APPROVER>" in json.dumps(_card(stack, release)["blocks"]),
               timeout=20, what="the card to show 1 of 2")
    assert "already approved" in _click_answer(stack, release, APPROVER)  # a double click
    assert stack.store().require(release_id).state == "awaiting_approval"

    assert "being published now" in _click_answer(stack, release, LEAD)  # member of S0LEADS, resolved now
    final = stack.wait_final(release_id)
    assert final.state == "succeeded", (final.error, stack.log_tail("worker-publish"))
    assert final.approval is not None and final.approval.quorum_at is not None
    assert [(d.user_id, d.outcome) for d in final.approval.decisions] == [(APPROVER, "approved"), (LEAD, "approved")]
    assert all(d.covers_digest == final.approval.covers_digest for d in final.approval.decisions)
    refused = [e["reason"] for e in final.events if e["what"] == "approval_refused"]
    assert refused == [Refusal.REQUESTER, Refusal.NOT_APPROVER, Refusal.ALREADY]
    assert len(_service_writes(stack, "hello_2.0.0_amd64", since)) == 1
    wait_until(lambda: not _has_buttons(_card(stack, final)), timeout=20, what="the card to lose its buttons")
    assert "Approved" in _card(stack, final)["text"]
    assert "already ended" in _click_answer(stack, final, APPROVER2)  # after the release ended
    status = stack.command(f"status {release_id}").json()["text"]
    assert f"approvals 2 of 2: <@{APPROVER}>, <@{LEAD}>" in status
    assert f"slack.com/archives/{CHANNEL_ID}/p{final.message_ts.replace('.', '')}" in status, "a link to the thread"
    history = stack.command("history hello").json()["text"]
    assert f"approved by <@{APPROVER}>, <@{LEAD}>" in history


def test_concurrent_clicks_publish_exactly_once(stack: Stack) -> None:
    release_id = _request(stack, "publish hello 2.0.1 --registry local")
    release = _waiting(stack, release_id)
    since = len(stack.exchange.requests())
    assert "counts: 1 of 2" in _click_answer(stack, release, APPROVER)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def click(user_id: str) -> None:
        try:
            barrier.wait(timeout=10)
            _click(stack, release, user_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    clickers = [threading.Thread(target=click, args=(u,)) for u in (APPROVER2, LEAD, APPROVER2, LEAD)]
    for t in clickers:
        t.start()
    for t in clickers:
        t.join(timeout=30)
    assert not errors, errors
    final = stack.wait_final(release_id)
    assert final.state == "succeeded", final.error
    assert final.approval is not None and len(final.approval.approvals()) == 2
    assert [e["what"] for e in final.events].count("quorum") == 1
    assert len(_service_writes(stack, "hello_2.0.1_amd64", since)) == 1, "exactly one publish"
    from rq.job import Job

    from edgebot.jobs import SERIALIZER

    job = Job.fetch(Step.PUBLISH.job_id(release_id), connection=stack.redis(), serializer=SERIALIZER)
    # the job ends after the record does (it still flushes its thread repaints): wait for it, do not race it
    wait_until(lambda: job.get_status(refresh=True) in ("finished", "failed"), timeout=60, what="the publish job")
    assert job.get_status() == "finished"


def test_reject_with_a_reason_ends_the_release_and_publishes_nothing(stack: Stack) -> None:
    release_id = _request(stack, "publish hello-one 2.0.2 --registry local")
    release = _waiting(stack, release_id)
    assert "not an approver" in _click_answer(stack, release, OUTSIDER, approval_messages.REJECT_ACTION)
    assert not [v for v in stack.slack.views() if v["user"] == OUTSIDER]
    _click(stack, release, APPROVER2, approval_messages.REJECT_ACTION)
    view = wait_until(lambda: [v for v in stack.slack.views() if v["user"] == APPROVER2], timeout=20,
                      what="the reject modal")[-1]["view"]
    assert view["callback_id"] == approval_messages.REJECT_CALLBACK
    platform = stack.platform()
    empty = platform.view_submission(callback_id=approval_messages.REJECT_CALLBACK,
                                     private_metadata=view["private_metadata"], user_id=APPROVER2,
                                     values={"reason": {"reason_input": {"type": "plain_text_input", "value": " "}}})
    assert empty.json()["response_action"] == "errors"
    assert stack.store().require(release_id).state == "awaiting_approval"
    reason = "CVE-2026-1234 in the base image"
    submitted = platform.view_submission(
        callback_id=approval_messages.REJECT_CALLBACK, private_metadata=view["private_metadata"], user_id=APPROVER2,
        values={"reason": {"reason_input": {"type": "plain_text_input", "value": reason}}})
    assert submitted.status_code == 200 and not submitted.content.strip(), submitted.text  # modal closes
    final = stack.wait_final(release_id)
    assert final.state == "rejected" and reason in final.error
    assert final.approval is not None
    assert [(d.user_id, d.outcome, d.reason) for d in final.approval.decisions] == [(APPROVER2, "rejected", reason)]
    wait_until(lambda: stack.store().require(release_id).summary_ts, timeout=20, what="the summary")
    summary = stack.slack.find_message(CHANNEL_ID, stack.store().require(release_id).summary_ts)
    assert summary is not None and f"<@{REQUESTER}>" in summary["text"] and reason in summary["text"]
    wait_until(lambda: not _has_buttons(_card(stack, final)), timeout=20, what="the card to lose its buttons")
    assert stack.exchange.service(ORG, "hello_2.0.2_amd64") is None
    digest, _ = stack.registry.manifest("edge/hello_amd64", "2.0.2")  # type: ignore[union-attr]
    assert digest == final.results["amd64"].digest, "the pushed image stays in place"


def test_expiry_needs_no_click_and_later_clicks_are_told_why(stack: Stack) -> None:
    release_id = _request(stack, "publish hello-quick 2.0.3 --registry local")
    release = _waiting(stack, release_id)
    final = stack.wait_final(release_id, timeout=120)  # 6 s timeout: the scheduled expiry job ends it
    assert final.state == "expired" and "0 of 1 approvals" in final.error
    wait_until(lambda: not _has_buttons(_card(stack, final)), timeout=20, what="the card to lose its buttons")
    assert "already ended (expired)" in _click_answer(stack, release, APPROVER)
    assert stack.exchange.service(ORG, "hello_2.0.3_amd64") is None


def test_a_service_that_needs_no_approval_publishes_straight_away(stack: Stack) -> None:
    release_id = _request(stack, "publish hello-dev 2.0.4 --registry local")
    final = stack.wait_final(release_id)
    assert final.state == "succeeded" and final.approval is None


def test_approval_does_not_cover_a_release_that_changed_after_it_and_each_round_publishes(stack: Stack) -> None:
    """Round 1 is approved, publish finds the record changed and asks round 2; round 2 is approved, publish finds it
    changed again (put back) and asks round 3; round 3's approval publishes, exactly once."""
    release_id = _request(stack, "publish hello-one 2.0.5 --registry local")
    release = _waiting(stack, release_id)
    first_card = release.approval.card_ts  # type: ignore[union-attr]
    built = release.results["amd64"].digest
    mark = len(stack.exchange.requests())

    def digest(value: str) -> Any:
        def tamper(r: Release) -> None:  # the build worker reports another image, consistently, after the approval
            res = r.results["amd64"]
            res.digest = value
            res.pinned_image = f"{res.image_tag.rpartition(':')[0]}@{value}"
            res.deployment = expected_deployment(r, "amd64")
        return tamper

    stack.store().update(release_id, digest("sha256:" + "0" * 64))
    _click(stack, release, APPROVER)  # the card still matches its request, so this completes the quorum…
    again = _waiting(stack, release_id, round_=2)  # …but publish finds the record changed and asks again
    assert again.approval is not None and again.approval.card_ts != first_card
    assert again.approval.covers["digests"]["amd64"] == "sha256:" + "0" * 64
    assert [a.round for a in again.approval_history] == [1]
    assert any("changed after it was approved" in n for n in again.notes)
    assert stack.exchange.service(ORG, "hello_2.0.5_amd64") is None, "nothing published"
    wait_until(lambda: "outdated" in (stack.slack.find_message(CHANNEL_ID, first_card) or {}).get("text", ""),
               timeout=20, what="the first card to say it is outdated")
    assert "outdated" in _click_answer(stack, release, APPROVER2, card_ts=first_card)  # a stale client

    stack.store().update(release_id, digest(built))  # put back: round 2 now covers something else again
    _click(stack, again, APPROVER)
    third = _waiting(stack, release_id, round_=3)  # round 2's own publish step ran and asked again
    assert third.approval is not None and third.approval.covers["digests"]["amd64"] == built
    assert [a.round for a in third.approval_history] == [1, 2]
    assert stack.exchange.service(ORG, "hello_2.0.5_amd64") is None, "still nothing published"

    _click(stack, third, APPROVER)
    final = stack.wait_final(release_id)
    assert final.state == "succeeded", (final.error, final.error_detail)
    assert final.approval is not None and final.approval.round == 3 and final.approval.quorum_at is not None
    assert len(_service_writes(stack, "hello_2.0.5_amd64", since=mark)) == 1, "published exactly once"
    assert [e["what"] for e in final.events].count("published") == 1


def test_root_message_status_and_cancel_buttons(stack: Stack) -> None:
    release_id = _request(stack, "publish hello-one 2.0.6 --registry local")
    release = _waiting(stack, release_id)
    root = stack.slack.api_message(CHANNEL_ID, release.message_ts)
    assert root is not None and _has_buttons(root)
    platform = stack.platform()
    seen = len(_answers(stack, OUTSIDER))
    platform.block_action(action_id="release_status", value=release_id, user_id=OUTSIDER, channel_id=CHANNEL_ID,
                          message_ts=release.message_ts)
    assert "waiting for approval" in _answer(stack, OUTSIDER, seen + 1)
    seen = len(_answers(stack, REQUESTER))
    for _ in range(2):  # a double click on Cancel
        platform.block_action(action_id="release_cancel", value=release_id, user_id=REQUESTER,
                              channel_id=CHANNEL_ID, message_ts=release.message_ts)
    first, second = _answer(stack, REQUESTER, seen + 1), _answer(stack, REQUESTER, seen + 2)
    answers = sorted([first, second], key=lambda text: "already ended" in text)  # either may arrive first
    assert answers[0].startswith(f"Cancelled `{release_id}`") and "already ended (cancelled)" in answers[1], answers
    final = stack.wait_final(release_id)
    assert final.state == "cancelled"
    wait_until(lambda: not _has_buttons(_card(stack, final)), timeout=20, what="the card to lose its buttons")
    wait_until(lambda: not _has_buttons(stack.slack.api_message(CHANNEL_ID, final.message_ts) or {}), timeout=20,
               what="the root to lose its buttons")


def test_expiry_still_runs_when_the_worker_holding_the_scheduler_is_killed(stack: Stack) -> None:
    import signal

    release_id = _request(stack, "publish hello-quick 2.0.8 --registry local")
    _waiting(stack, release_id)  # the expiry job now waits in RQ's scheduled registry
    stack.stop_process("worker-publish", signal.SIGKILL)  # the only publish worker: it held the scheduler lock
    stack.start_worker("publish", "--publish")
    final = stack.wait_final(release_id, timeout=180)
    assert final.state == "expired", (final.state, final.error, stack.log_tail("worker-publish"))
    assert [e["what"] for e in final.events].count("expired") == 1


# -- a compromised build worker: Redis access, no seal key ------------------------------------------------------------

def _forge(stack: Stack, release_id: str, change: Any) -> Release:
    """Write the record as a hand in Redis would, then enqueue the publish job as a build worker could."""
    store = stack.store()
    store.update(release_id, change)
    enqueue_step(stack.redis(), store.settings, Step.PUBLISH, release_id)
    final = stack.wait_final(release_id)
    assert final.state == "failed" and "Security check failed" in final.error, (final.state, final.error)
    return final


def test_a_forged_quorum_of_made_up_users_publishes_nothing_and_alerts_the_thread(stack: Stack) -> None:
    release_id = _request(stack, "publish hello 2.0.7 --registry local")  # two approvals needed
    _waiting(stack, release_id)

    def quorum(r: Release) -> None:
        assert r.approval is not None
        for user in ("U0GHOST1", "U0GHOST2"):
            r.approval.decisions.append(Decision(user_id=user, outcome="approved", at=r.approval.requested_at,
                                                 covers_digest=r.approval.covers_digest, via=user))
        r.approval.quorum_at, r.state = r.approval.requested_at, "publishing"

    final = _forge(stack, release_id, quorum)
    assert "U0GHOST1" in final.error and "does not carry the bot's seal" in final.error
    assert stack.exchange.service(ORG, "hello_2.0.7_amd64") is None, "nothing published"
    wait_until(lambda: "Security check failed" in json.dumps(stack.slack.thread(CHANNEL_ID, final.message_ts)),
               timeout=30, what="the alert in the thread")


def test_a_privileged_deployment_swapped_in_after_the_approval_publishes_nothing(stack: Stack) -> None:
    release_id = _request(stack, "publish hello-one 2.0.9 --registry local")
    release = _waiting(stack, release_id)

    def privileged(r: Release) -> None:  # definition and deployment changed together, so they look consistent
        res = r.results["amd64"]
        for service in res.definition["deployment"]["services"].values():
            service.update(privileged=True, binds=["/:/host"])
        res.deployment = expected_deployment(r, "amd64")

    stack.store().update(release_id, privileged)
    _click(stack, release, APPROVER)  # a real approval of what the card showed
    final = stack.wait_final(release_id)
    assert final.state == "failed" and "not what prepare read from git" in final.error, (final.state, final.error)
    assert stack.exchange.service(ORG, "hello_2.0.9_amd64") is None, "nothing published"
