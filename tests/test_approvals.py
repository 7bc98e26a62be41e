"""The approval policy, what an approval covers, which clicks count, and the approval card (snapshot-tested).

Regenerate the snapshots after an intended wording change: EDGEBOT_UPDATE_SNAPSHOTS=1 pytest tests/test_approvals.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.approve import refusal
from edgebot import approval_messages, approvals
from edgebot.approvals import Kind, Refusal
from edgebot.config import parse_config
from edgebot.errors import ConfigError
from edgebot.release import (
    AWAITING_APPROVAL,
    CANCELLED,
    EXPIRED,
    PUBLISHING,
    REJECTED,
    Approval,
    Decision,
    Release,
    RolloutStageState,
)
from sandbox.slack_api import _view_problems
from tests.snapshot import check_snapshot
from tests.test_messages import T0, _release

SNAPSHOTS = Path(__file__).parent / "snapshots"

BASE_CONFIG: dict[str, Any] = {
    "slack": {"bot_token": "env:SLACK_BOT_TOKEN", "signing_secret": "env:SLACK_SIGNING_SECRET"},
    "redis": {"url": "redis://localhost:6379/0"},
    "exchange": {"url": "https://hub/edge-exchange/v1", "username": "acme/edgebot", "password": "env:EX"},
    "signing": {"private_key": "file:/run/key.pem"},
    "registries": {"icr": {"host": "us.icr.io", "namespace": "edge", "push_username": "iamapikey",
                           "push_password": "env:ICR_KEY"}},
    "services": {"hello": {"source": "/srv/git/hello.git", "org": "acme", "arches": ["amd64"],
                           "image_base": "hello"}},
}


def _config(approvals_table: dict[str, Any] | None) -> Any:
    data = dict(BASE_CONFIG)
    if approvals_table is not None:
        data["approvals"] = approvals_table
        data["trust"] = {"seal_key": "env:EDGEBOT_SEAL_KEY"}
    return parse_config(data, environ={})


# -- policy -------------------------------------------------------------------------------------------------------

def test_no_approvals_table_means_nothing_needs_approval() -> None:
    policy = _config(None).approval_policy(org="acme", service="hello", registry="icr")
    assert not policy.needed and policy.required == 0


def test_rules_merge_field_by_field_most_specific_last() -> None:
    rules = approvals.parse_approvals({
        "approvers": ["S0RELEASE"], "required": 1, "timeout_minutes": 30,
        "orgs": {"dev": {"required": 0}, "acme": {"required": 2}},
        "registries": {"icr": {"timeout_minutes": 5}},
        "services": {"hello": {"approvers": ["U0ALICE", "U0BOB"], "allow_requester": True}},
    })
    hello = rules.policy_for(org="acme", service="hello", registry="icr")
    assert hello == approvals.ApprovalPolicy(approvers=("U0ALICE", "U0BOB"), required=2, allow_requester=True,
                                             timeout_minutes=5)
    other = rules.policy_for(org="acme", service="other", registry="local")
    assert other.approvers == ("S0RELEASE",) and other.required == 2 and not other.allow_requester
    assert other.timeout_seconds == 1800
    assert not rules.policy_for(org="dev", service="other", registry="local").needed


@pytest.mark.parametrize(("table", "fragment"), [
    ({"required": -1}, "required must be a whole number"),
    ({"required": True}, "required must be a whole number"),
    ({"approvers": ["alice"]}, "Slack user ids"),
    ({"allow_requester": "no"}, "true or false"),
    ({"timeout_minutes": 0}, "minutes > 0"),
    ({"quorum": 2}, "unknown key 'quorum'"),
    ({"orgs": {"acme": "strict"}}, "[approvals.orgs.acme] must be a table"),
])
def test_bad_approvals_tables_are_refused_with_the_key_and_the_fix(table: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as refused:
        approvals.parse_approvals(table)
    assert fragment in str(refused.value)


def test_approvals_without_a_seal_key_are_refused_at_start_up_with_what_to_add() -> None:
    data = {**BASE_CONFIG, "approvals": {"required": 1, "approvers": ["U0ALICE"]}}
    with pytest.raises(ConfigError, match=r"add \[trust\] seal_key = \"env:EDGEBOT_SEAL_KEY\""):
        parse_config(data, environ={})
    assert parse_config({**data, "trust": {"seal_key": "file:/run/secrets/seal"}}, environ={}).seal_key is not None
    assert parse_config(dict(BASE_CONFIG), environ={}).seal_key is None  # nothing needs approval: optional


def test_a_policy_that_can_never_be_met_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match="no approvers are named"):
        _config({"required": 1})
    with pytest.raises(ConfigError, match="needs 2 distinct approvals but only 1"):
        _config({"required": 2, "approvers": ["U0ALICE", "U0ALICE"]})
    assert _config({"required": 2, "approvers": ["U0ALICE", "S0LEADS"]}).approval_policy(
        org="acme", service="hello", registry="icr").required == 2


# -- what an approval covers -------------------------------------------------------------------------------------

def _signed(**overrides: Any) -> Release:
    release = _release(state=AWAITING_APPROVAL, ended_at=None, **overrides)
    for arch in release.arches:
        image = f"us.icr.io/edge/hello_{arch}@sha256:ab"
        release.result(arch).deployment = json.dumps({"services": {"hello": {"image": image}}}, separators=(",", ":"))
    return release


def test_covers_changes_with_every_thing_that_ships() -> None:
    base = approvals.covers_digest(approvals.covers(_signed(), ["policy:hello-fleet"]))
    assert base == approvals.covers_digest(approvals.covers(_signed(), ["policy:hello-fleet"]))
    changed_deployment = _signed()
    changed_deployment.result("arm64").deployment += " "
    changed_digest = _signed()
    changed_digest.result("amd64").digest = "sha256:" + "00" * 32
    changed_signature = _signed()
    changed_signature.result("amd64").signature_fingerprint = "sha256:" + "11" * 32
    changed_key = _signed(public_key_fingerprint="sha256:" + "22" * 32)
    changed_commit = _signed(commit_sha="f" * 40)
    changed_body = _signed()  # a field of the Exchange body that is not the deployment
    changed_body.result("amd64").definition = {"requiredServices": [{"url": "evil", "versionRange": "[0,INFINITY)"}]}
    changed_policy = _signed()  # issue 15: the service policy PUT with the service is approved with it
    changed_policy.result("amd64").service_policy = {"properties": [], "constraints": ["gpu == true"]}
    changed_cluster = _signed()  # issue 15: the signed operator archive of a cluster service
    changed_cluster.result("amd64").cluster_deployment = '{"operatorYamlArchive":"AA=="}'
    for other in (changed_deployment, changed_digest, changed_signature, changed_key, changed_commit, changed_body,
                  changed_policy, changed_cluster):
        assert approvals.covers_digest(approvals.covers(other, ["policy:hello-fleet"])) != base
    assert approvals.covers_digest(approvals.covers(_signed(), ["policy:hello-canary"])) != base


# -- which clicks count -------------------------------------------------------------------------------------------

def _waiting(required: int = 2, allow_requester: bool = False, decisions: list[Decision] | None = None) -> Release:
    release = _signed()
    covered = approvals.covers(release, [])
    release.approval = Approval(required=required, approvers=["U0ALICE", "S0LEADS"], allow_requester=allow_requester,
                                requested_at=T0, expires_at=T0 + 1800, covers=covered,
                                covers_digest=approvals.covers_digest(covered), card_ts="1800000000.000100",
                                decisions=list(decisions or []))
    return release


def test_refusals_say_exactly_why_a_click_does_not_count() -> None:
    release = _waiting()
    digest = release.approval.covers_digest[:32]  # type: ignore[union-attr]
    now = T0 + 60
    assert refusal(Kind.PUBLISH, None, "U0ALICE", digest, now, is_approver=True) == Refusal.UNKNOWN
    assert refusal(Kind.PUBLISH, release, "U0ALICE", digest, now, is_approver=True) is None
    assert refusal(Kind.PUBLISH, release, "U0MALLORY", digest, now, is_approver=False) == Refusal.NOT_APPROVER
    assert refusal(Kind.PUBLISH, release, "U0REQUESTER", digest, now, is_approver=True) == Refusal.REQUESTER
    assert refusal(Kind.PUBLISH, _waiting(allow_requester=True), "U0REQUESTER", digest, now, is_approver=True) is None
    assert refusal(Kind.PUBLISH, release, "U0ALICE", "0" * 32, now, is_approver=True) == Refusal.OUTDATED
    assert refusal(Kind.PUBLISH, release, "U0ALICE", digest, T0 + 1800, is_approver=True) == Refusal.EXPIRED
    twice = _waiting(decisions=[Decision("U0ALICE", "approved", T0 + 10, release.approval.covers_digest)])  # type: ignore[union-attr]
    assert refusal(Kind.PUBLISH, twice, "U0ALICE", digest, now, is_approver=True) == Refusal.ALREADY
    assert refusal(Kind.PUBLISH, twice, "U0ALICE", digest, now, is_approver=True, approving=False) is None
    no_card = _waiting()
    no_card.approval.card_ts = ""  # type: ignore[union-attr]
    assert refusal(Kind.PUBLISH, no_card, "U0ALICE", digest, now, is_approver=True) == Refusal.NOT_WAITING
    assert refusal(Kind.PUBLISH, _approved(), "U0CAROL", digest, now, is_approver=True) == Refusal.QUORUM_REACHED
    ended = _waiting()
    ended.state = CANCELLED
    assert refusal(Kind.PUBLISH, ended, "U0ALICE", digest, now, is_approver=True) == Refusal.ENDED


def test_an_approval_of_an_older_round_does_not_count_towards_the_new_one() -> None:
    release = _waiting(decisions=[Decision("U0ALICE", "approved", T0 + 10, "stale-digest")])
    assert release.approval is not None and release.approval.approvals() == []
    assert not release.approval.approved_by("U0ALICE")


def test_button_value_round_trips_and_carries_no_secret() -> None:
    release = _waiting()
    value = approvals.button_value(release)
    assert approvals.parse_button_value(value) == (release.release_id, release.approval.covers_digest[:32])  # type: ignore[union-attr]


def test_mark_expired_ends_the_release_and_says_what_stays() -> None:
    release = _waiting(decisions=[Decision("U0ALICE", "approved", T0 + 10, "")])
    approvals.mark_expired(release)
    assert release.state == EXPIRED and "30 minute(s)" in release.error and "0 of 2" in release.error
    assert release.events[-1]["what"] == "expired"


def test_release_with_approval_round_trips_through_json() -> None:
    release = _waiting(decisions=[Decision("U0ALICE", "approved", T0 + 10, "d", "")])
    again = Release.from_dict(json.loads(json.dumps(release.to_dict())))
    assert again == release and isinstance(again.approval, Approval)


# -- the card and the answers (snapshots) --------------------------------------------------------------------------

def _approved() -> Release:
    release = _waiting()
    assert release.approval is not None
    for user in ("U0ALICE", "U0BOB"):
        release.approval.decisions.append(Decision(user, "approved", T0 + 30, release.approval.covers_digest))
    release.approval.quorum_at = T0 + 31
    release.state = PUBLISHING
    return release


def _card(state: str, error: str = "") -> Release:
    release = _waiting()
    release.state, release.error = state, error
    return release


def _with_changes() -> Release:
    release = _waiting()
    assert release.approval is not None
    release.approval.exchange_changes = {"amd64": "new service `hello_1.2.3_amd64`",
                                         "arm64": "no change: `hello_1.2.3_arm64` is already published"}
    release.approval.covers["targets"] = ["policy:hello-canary", "policy:hello-fleet"]
    release.approval.decisions.append(Decision("U0ALICE", "approved", T0 + 30, release.approval.covers_digest))
    return release


def _with_smoke() -> Release:
    """Issue 14: each arch's smoke run under its digest; arm64's output is a build worker's claim (hostile here)."""
    release = _waiting()
    release.result("amd64").smoke = {"command": "/bin/app --self-test", "exit_code": 0, "timeout": 30.0,
                                     "tail": ["self-test: 12 checks", "self-test: ok (x86_64)"]}
    release.result("arm64").smoke = {"command": "/bin/app --self-test", "exit_code": 0, "timeout": 30.0,
                                     "tail": ["<!channel> ```", *[f"line {i}" for i in range(200)], "ok (aarch64)"]}
    return release


def _with_service_policy() -> Release:
    release = _waiting()
    for arch in release.arches:
        release.result(arch).service_policy = {"properties": [
            {"name": "camera", "value": True, "type": "boolean"}, {"name": "openhorizon.service.arch", "value": arch}],
            "constraints": ["gpu == true", "site in \"berlin,paris\""]}
    return release


def _with_sidecar_public() -> Release:
    """A sidecar referenced by tag, pinned at release time, and `--public` over a private definition."""
    release = _waiting()
    release.public = True
    for arch in release.arches:
        res = release.result(arch)
        res.definition = {**res.definition, "public": True, "deployment": {"services": {
            "hello": {"image": res.image_tag}, "metrics": {"image": "quay.io/prometheus/node-exporter:v1.8.0"}}}}
        res.external_pins = {"metrics": f"quay.io/prometheus/node-exporter@sha256:{arch[0] * 64}"}
    return release


def _with_cluster() -> Release:
    """A cluster service: the operator YAMLs name the release image (rewritten to its digest) and a pinned sidecar."""
    from workers import cluster

    release = _waiting()
    for arch in release.arches:
        res = release.result(arch)
        side = f"quay.io/op/side@sha256:{arch[0] * 64}"
        yaml = f"containers:\n  - image: {res.pinned_image}\n  - image: {side}\n".encode()
        members = [cluster.Member("op.yaml", yaml)]
        archive = cluster.build_archive(members)
        res.cluster_deployment = cluster.go_json(cluster.cluster_object({"operatorYamlArchive": "op.tgz"}, archive,
                                                                        members))
        res.cluster_pins = {"quay.io/op/side:1.0": side}
    return release


def _rollback_request(status: str = "open") -> Release:
    release = _approved()
    release.state = "succeeded"
    release.rollout = [RolloutStageState(name="canary", status="healthy", targets=[
        {"kind": "policy", "name": "hello-canary", "previous": {"*": "1.2.2"}}])]
    covered = approvals.rollback_covers(release)
    release.rollback_request = Approval(
        required=1, approvers=["S0LEADS"], allow_requester=False, requested_at=T0 + 600, expires_at=T0 + 2400,
        covers=covered, covers_digest=approvals.covers_digest(covered), card_ts="1800000600.000100", kind="rollback",
        requested_by="U0ONCALL", status=status)
    if status == "rejected":
        release.rollback_request.decisions.append(Decision("U0ALICE", "rejected", T0 + 700, "", "the canary is fine"))
    return release


def _deploy_waiting(kind: str = "deploy") -> Release:
    """A deploy of 1.2.2 (already in the Exchange, nothing built) waiting for its approval."""
    release = _waiting()
    release.kind, release.version = kind, "1.2.2"
    for arch in release.arches:
        res = release.result(arch)
        res.image_tag = res.pinned_image = res.digest = ""
        res.service_id = f"hello_1.2.2_{arch}"
        image = f"us.icr.io/edge/hello_{arch}@sha256:{'ab' * 32}"
        res.deployment = json.dumps({"services": {"hello": {"image": image}}}, separators=(",", ":"))
    covered = approvals.deploy_covers(release, ["policy:hello-canary", "policy:hello-fleet"])
    assert release.approval is not None
    release.approval.covers, release.approval.covers_digest = covered, approvals.covers_digest(covered)
    return release


CASES = {
    "approval_card_deploy": lambda: approval_messages.approval_card(_deploy_waiting()),
    "approval_card_rollback_to": lambda: approval_messages.approval_card(_deploy_waiting("rollback")),
    "approval_card_open": lambda: approval_messages.approval_card(_with_changes()),
    "approval_card_smoke": lambda: approval_messages.approval_card(_with_smoke()),
    "approval_card_service_policy": lambda: approval_messages.approval_card(_with_service_policy()),
    "approval_card_sidecar_public": lambda: approval_messages.approval_card(_with_sidecar_public()),
    "approval_card_cluster": lambda: approval_messages.approval_card(_with_cluster()),
    "approval_card_approved": lambda: approval_messages.approval_card(_approved()),
    "approval_card_rejected": lambda: approval_messages.approval_card(
        _card(REJECTED, "rejected by <@U0ALICE>: CVE-2026-1234 in the base image")),
    "approval_card_expired": lambda: approval_messages.approval_card(_card(EXPIRED, "nobody approved it")),
    "approval_card_cancelled": lambda: approval_messages.approval_card(_card(CANCELLED, "cancelled")),
    "approval_superseded": lambda: approval_messages.superseded_card(_waiting()),
    **{f"click_refused_{reason}": (lambda reason=reason: approval_messages.click_refused(
        reason, _waiting(), "r-7f3a9c", approvers=["U0ALICE", "S0LEADS"]))
       for reason in (Refusal.ENDED, Refusal.NOT_WAITING, Refusal.QUORUM_REACHED, Refusal.EXPIRED,
                      Refusal.OUTDATED, Refusal.REQUESTER, Refusal.NOT_APPROVER, Refusal.ALREADY)},
    "rollback_card_open": lambda: approval_messages.rollback_card(_rollback_request()),
    "rollback_card_rejected": lambda: approval_messages.rollback_card(_rollback_request("rejected")),
    "rollback_card_approved": lambda: approval_messages.rollback_card(_rollback_request("approved")),
    "click_refused_rollback_closed": lambda: approval_messages.click_refused(
        Refusal.ENDED, _rollback_request("expired"), "r-7f3a9c", kind=Kind.ROLLBACK),
    "click_refused_unknown": lambda: approval_messages.click_refused(Refusal.UNKNOWN, None, "r-gone00"),
    "approval_counted": lambda: approval_messages.approval_counted(_with_changes(), False),
    "approval_quorum": lambda: approval_messages.approval_counted(_approved(), True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_snapshot(name: str) -> None:
    check_snapshot(name, CASES[name]())


def test_open_card_has_both_buttons_bound_to_what_it_shows_and_closed_cards_have_none() -> None:
    release = _with_changes()
    card = approval_messages.approval_card(release)
    buttons = [e for b in card.blocks if b["type"] == "actions" for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == [approval_messages.APPROVE_ACTION, approval_messages.REJECT_ACTION]
    assert {b["value"] for b in buttons} == {approvals.button_value(release)}
    assert "<!subteam^S0LEADS>" in card.blocks[0]["text"]["text"]  # approvers are notified
    for closed in (_approved(), _card(REJECTED, "x"), _card(EXPIRED, "x")):
        assert not [b for b in approval_messages.approval_card(closed).blocks if b["type"] == "actions"]


def test_reject_modal_is_a_valid_slack_view() -> None:
    view = approval_messages.reject_modal(_waiting(), "r-7f3a9c:abc")
    assert _view_problems(view) == []
    assert view["private_metadata"] == "r-7f3a9c:abc" and view["callback_id"] == approval_messages.REJECT_CALLBACK


def test_rollback_refusals_follow_the_same_rules_as_a_publish() -> None:
    release = _rollback_request()
    request = release.rollback_request
    assert request is not None
    digest, now = request.covers_digest[:32], T0 + 900
    assert refusal(Kind.ROLLBACK, release, "U0ALICE", digest, now, is_approver=True) is None
    assert refusal(Kind.ROLLBACK, release, "U0ONCALL", digest, now, is_approver=True) == Refusal.REQUESTER
    assert refusal(Kind.ROLLBACK, release, "U0EVE", digest, now, is_approver=False) == Refusal.NOT_APPROVER
    assert refusal(Kind.ROLLBACK, release, "U0ALICE", "0" * 32, now, is_approver=True) == Refusal.OUTDATED
    assert refusal(Kind.ROLLBACK, release, "U0ALICE", digest, T0 + 2400, is_approver=True) == \
        Refusal.EXPIRED
    assert refusal(Kind.ROLLBACK, _rollback_request("rejected"), "U0ALICE", digest, now, is_approver=True) == \
        Refusal.ENDED
    assert refusal(Kind.ROLLBACK, _rollback_request("approved"), "U0ALICE", digest, now, is_approver=True) == \
        Refusal.QUORUM_REACHED
    rolled_back = _rollback_request()
    rolled_back.state = "rolled_back"
    assert refusal(Kind.ROLLBACK, rolled_back, "U0ALICE", digest, now, is_approver=True) == Refusal.ENDED
    assert approvals.rollback_covers(release)["targets"] == ["policy:hello-canary:*=1.2.2"]


def test_ended_says_whether_the_request_closed_or_the_release_ended() -> None:
    """One refusal (ENDED) for every kind: a rollback request that closed says how and what to do; a request whose
    release ended names the release's state."""
    closed = approval_messages.click_refused(Refusal.ENDED, _rollback_request("rejected"), "r-7f3a9c",
                                             kind=Kind.ROLLBACK).text
    assert "The rollback request for" in closed and "was rejected" in closed and "/edge rollback" in closed
    rolled_back = _rollback_request("approved")
    rolled_back.state = "rolled_back"
    ended = approval_messages.click_refused(Refusal.ENDED, rolled_back, "r-7f3a9c", kind=Kind.ROLLBACK).text
    assert "already ended (rolled back)" in ended
    assert ended == approval_messages.click_refused(Refusal.ENDED, rolled_back, "r-7f3a9c").text


def test_the_rollback_reject_modal_is_a_valid_slack_view() -> None:
    view = approval_messages.reject_modal(_rollback_request(), "r-7f3a9c:abc", kind=Kind.ROLLBACK)
    assert _view_problems(view) == []
    assert view["callback_id"] == approval_messages.REJECT_ROLLBACK_CALLBACK
