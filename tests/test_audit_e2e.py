"""The audit trail end to end: the real Bolt app and real RQ workers (a publish worker ships the stream), real Redis
(with the roles' ACL users), Docker and registry; stand-ins for Slack and the Exchange. A publish with an approval and
a cancelled release produce exactly the expected action lines in the file sink, with the record's digests and
signature fingerprints, and no secret anywhere in the file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgebot import approval_messages, approvals
from edgebot.release import Release
from sandbox.stack import (
    APP_TOKEN,
    APPROVER,
    BOT_TOKEN,
    CHANNEL_ID,
    EXCHANGE_PASSWORD,
    PULL_PASSWORD,
    PUSH_PASSWORD,
    REQUESTER,
    SIGNING_SECRET,
    Stack,
    wait_until,
)

pytestmark = pytest.mark.slow

VERSIONS = ("7.4.0", "7.4.1")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("audit")
    sink = workdir / "audit" / "audit.jsonl"
    sink.parent.mkdir()
    extra = f"""
[approvals.services.hello-one]
approvers = ["{APPROVER}"]
required = 1
[audit]
sink = "file:{sink}"
"""
    with Stack(workdir, docker=docker_daemon, registry=registry, versions=VERSIONS, arches=("amd64",),
               extra_services={"hello-one": ["amd64"]}, extra_toml=extra,
               settings={"reaper_interval": 2.0}) as running:
        running.wait_workers(2)
        running.audit_file = sink  # type: ignore[attr-defined]
        yield running


def _request(stack: Stack, text: str) -> str:
    before = set(stack.release_ids())
    assert stack.command(text).status_code == 200
    (release_id,) = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, what="the release record")
    return str(release_id)


def _waiting(stack: Stack, release_id: str) -> Release:
    def carded() -> Release | None:
        release = stack.store().require(release_id)
        assert not release.is_final, (release.state, release.error, stack.log_tail("worker-publish"))
        return release if release.approval is not None and release.approval.card_ts else None

    return wait_until(carded, timeout=180, interval=0.25, what="the approval card")  # type: ignore[no-any-return]


def _lines(stack: Stack) -> list[dict[str, Any]]:
    path: Path = stack.audit_file  # type: ignore[attr-defined]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_publish_approval_and_cancel_each_leave_their_lines_and_nothing_secret(stack: Stack) -> None:
    published = _request(stack, "publish hello-one 7.4.0 --registry local")
    release = _waiting(stack, published)
    assert release.approval is not None
    stack.platform().block_action(action_id=approval_messages.APPROVE_ACTION, value=approvals.button_value(release),
                                  user_id=APPROVER, channel_id=CHANNEL_ID, message_ts=release.approval.card_ts)
    final = stack.wait_final(published)
    assert final.state == "succeeded", (final.error, stack.log_tail("worker-publish"))

    cancelled = _request(stack, "publish hello-one 7.4.1 --registry local")
    waiting = _waiting(stack, cancelled)
    stack.platform().block_action(action_id="release_cancel", value=cancelled, user_id=REQUESTER,
                                  channel_id=CHANNEL_ID, message_ts=waiting.message_ts)
    assert stack.wait_final(cancelled).state == "cancelled"

    expected = {published: [("publish.requested", REQUESTER), ("approval.approved", APPROVER),
                            ("publish.completed", ""), ("release.succeeded", "")],
                cancelled: [("publish.requested", REQUESTER), ("release.cancelled", REQUESTER)]}
    want = sum(len(v) for v in expected.values())
    lines = wait_until(lambda: _lines(stack) if len(_lines(stack)) >= want else None, timeout=120,
                       what="the audit lines in the file sink")
    ids = [line["id"] for line in lines]
    assert len(set(ids)) == len(ids) == want, ids  # exactly one line per action
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
    for release_id, actions in expected.items():
        assert [(x["action"], x["user_id"]) for x in lines if x["release_id"] == release_id] == actions
    result = final.results["amd64"]
    for line in lines:
        if line["release_id"] == published and line["action"] != "publish.requested":
            assert line["digests"] == {"amd64": result.digest}
            assert line["signatures"] == {"amd64": result.signature_fingerprint}
            assert line["key_fingerprint"] == final.public_key_fingerprint
        assert line["service"] == "hello-one" and line["channel_id"] == CHANNEL_ID

    text = Path(stack.audit_file).read_text()  # type: ignore[attr-defined]
    seal = (stack.workdir / "seal.key").read_text().strip()
    private_key = [ln for ln in stack.key_file.read_text().splitlines() if ln and not ln.startswith("-----")]
    secrets = [BOT_TOKEN, SIGNING_SECRET, APP_TOKEN, EXCHANGE_PASSWORD, PUSH_PASSWORD, PULL_PASSWORD, seal,
               result.signature, result.deployment, *private_key]
    for secret in secrets:
        assert secret and secret not in text
    mode = Path(stack.audit_file).stat().st_mode & 0o777  # type: ignore[attr-defined]
    assert mode == 0o600
