"""What the publish worker verifies before it signs or publishes (workers.trust), played as a compromised build
worker would: records written by hand with the build role's Redis access, but without the seal key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgebot import approvals
from edgebot.approvals import ApprovalPolicy
from edgebot.release import AWAITING_APPROVAL, Approval, Decision, Release, RequestStatus, RolloutStageState
from edgebot.seals import Sealer, decision_payload, intake_payload
from tests.test_messages import T0, _release
from workers import trust
from workers.trust import SecurityCheckFailed

SEALER = Sealer(b"k" * 32)
POLICY = ApprovalPolicy(approvers=("U0ALICE", "U0BOB", "S0LEADS"), required=2)
DEFINITION = {"url": "hello", "deployment": {"services": {"hello": {"image": "us.icr.io/edge/hello_ARCH:1.2.3"}}}}


def _sealed(**overrides: Any) -> Release:
    """A release as the bot and prepare leave it: intake and source sealed, deployments rebuilt from the pins."""
    release = _release(state=AWAITING_APPROVAL, ended_at=None, **overrides)
    for arch in release.arches:
        res = release.result(arch)
        res.definition = json.loads(json.dumps(DEFINITION).replace("ARCH", arch))
        res.built_containers = {"hello": f"us.icr.io/edge/hello_{arch}"}
        res.deployment = trust.expected_deployment(release, arch)
    release.intake_seal = SEALER.seal("intake", intake_payload(release))
    trust.seal_source(SEALER, release)
    return release


def _approval(release: Release, *decisions: tuple[str, str]) -> Approval:
    covered = approvals.covers(release, [])
    approval = Approval(required=2, approvers=list(POLICY.approvers), allow_requester=False, requested_at=T0,
                        expires_at=T0 + 60, covers=covered, covers_digest=approvals.covers_digest(covered),
                        quorum_at=T0 + 10)
    for user_id, via in decisions:
        decision = Decision(user_id=user_id, outcome="approved", at=T0 + 5, covers_digest=approval.covers_digest,
                            via=via)
        decision.seal = SEALER.seal("decision", decision_payload(release.release_id, "publish", 1, decision))
        approval.decisions.append(decision)
    release.approval = approval
    return approval


def test_a_release_the_bot_and_prepare_sealed_verifies() -> None:
    release = _sealed()
    trust.check_release(SEALER, release)
    approval = _approval(release, ("U0ALICE", "U0ALICE"), ("U0CAROL", "S0LEADS"))
    counted = trust.check_approvals(SEALER, release, approval, POLICY, approval.covers_digest)
    assert sorted(d.user_id for d in counted) == ["U0ALICE", "U0CAROL"]


@pytest.mark.parametrize("field, value", [("user_id", "U0MALLORY"), ("org", "acme-x"), ("version", "6.6.6"),
                                          ("arches", ["amd64"]), ("dry_run", True)])
def test_a_release_altered_after_the_bot_recorded_it_is_refused(field: str, value: Any) -> None:
    release = _sealed()
    setattr(release, field, value)
    with pytest.raises(SecurityCheckFailed, match="does not carry the bot's seal"):
        trust.check_release(SEALER, release)


def test_a_made_up_release_is_refused() -> None:
    release = _sealed()
    release.intake_seal = ""
    with pytest.raises(SecurityCheckFailed, match="Nothing was signed or published"):
        trust.check_intake(SEALER, release)


def test_a_privileged_deployment_swapped_into_the_definition_is_refused() -> None:
    release = _sealed()
    res = release.result("amd64")
    res.definition["deployment"]["services"]["hello"].update(privileged=True, binds=["/:/host"])
    res.deployment = trust.expected_deployment(release, "amd64")  # consistent with the altered definition
    with pytest.raises(SecurityCheckFailed, match="not what prepare read from git"):
        trust.check_release(SEALER, release)


@pytest.mark.parametrize("field, value", [("cluster_archive", "H4sIAAAAAAAA"),
                                          ("cluster_pins", {"busybox:1": "evil.example/b@sha256:" + "00" * 32})])
def test_an_operator_archive_or_its_pins_swapped_after_prepare_are_refused(field: str, value: Any) -> None:
    release = _sealed()  # sealed without a cluster archive: one added later is not what prepare read
    setattr(release.result("arm64"), field, value)
    with pytest.raises(SecurityCheckFailed, match="not what prepare read from git"):
        trust.check_release(SEALER, release)


def test_another_commit_is_refused() -> None:
    release = _sealed()
    release.commit_sha = "f" * 40
    with pytest.raises(SecurityCheckFailed, match="commit"):
        trust.check_release(SEALER, release)


def test_a_deployment_that_is_not_the_rebuilt_one_is_refused() -> None:
    release = _sealed()
    release.result("arm64").deployment = release.result("arm64").deployment.replace("hello", "evil")
    with pytest.raises(SecurityCheckFailed, match="deployment of arm64"):
        trust.check_deployments(release)


def test_a_cluster_deployment_that_is_not_the_rebuilt_one_is_refused() -> None:
    import base64

    from workers import cluster

    release = _sealed()
    res = release.result("amd64")
    res.definition = {**res.definition, "clusterDeployment": {"operatorYamlArchive": "op.tgz"}}
    res.pinned_image = f"us.icr.io/edge/hello_amd64@sha256:{'ab' * 32}"
    res.digest = f"sha256:{'ab' * 32}"
    res.image_tag = "us.icr.io/edge/hello_amd64:1.2.3"
    yaml = f"image: {res.image_tag}\n".encode()
    res.cluster_archive = base64.b64encode(cluster.build_archive([cluster.Member("op.yaml", yaml)])).decode()
    res.deployment = trust.expected_deployment(release, "amd64")
    res.cluster_deployment = trust.expected_cluster_deployment(release, "amd64")
    assert res.pinned_image in json.dumps(cluster.images(cluster.archive_of(res.cluster_deployment)))
    trust.check_deployments(release)
    res.cluster_deployment = res.cluster_deployment.replace('"namespace":""', '"namespace":"evil"')
    with pytest.raises(SecurityCheckFailed, match="clusterDeployment of amd64"):
        trust.check_deployments(release)


def test_a_pin_that_is_not_the_pushed_digest_is_refused() -> None:
    release = _sealed()
    release.result("amd64").pinned_image = "evil.example/x@sha256:" + "00" * 32
    with pytest.raises(SecurityCheckFailed, match="pinned image of amd64"):
        trust.check_deployments(release)


def test_a_forged_quorum_of_made_up_users_is_refused() -> None:
    release = _sealed()
    approval = _approval(release)
    for user in ("U0GHOST1", "U0GHOST2"):  # what a hand in Redis can write: no seal key
        approval.decisions.append(Decision(user_id=user, outcome="approved", at=T0, via=user,
                                           covers_digest=approval.covers_digest, seal="hmac-sha256:" + "0" * 64))
    with pytest.raises(SecurityCheckFailed, match="U0GHOST1.*does not carry the bot's seal"):
        trust.check_approvals(SEALER, release, approval, POLICY, approval.covers_digest)


def test_a_sealed_decision_replayed_on_another_release_or_round_is_refused() -> None:
    release = _sealed()
    approval = _approval(release, ("U0ALICE", "U0ALICE"), ("U0BOB", "U0BOB"))
    other = _sealed(release_id="r-000001")
    other.approval = Approval(**{**approval.__dict__, "decisions": list(approval.decisions)})
    with pytest.raises(SecurityCheckFailed, match="does not carry the bot's seal"):
        trust.check_approvals(SEALER, other, other.approval, POLICY, approval.covers_digest)
    approval.round = 2
    with pytest.raises(SecurityCheckFailed, match="does not carry the bot's seal"):
        trust.check_approvals(SEALER, release, approval, POLICY, approval.covers_digest)


def test_sealed_approvals_still_count_only_under_this_workers_policy() -> None:
    release = _sealed()
    approval = _approval(release, ("U0ALICE", "U0ALICE"), ("U0REQUESTER", "S0LEADS"))  # four-eyes
    with pytest.raises(SecurityCheckFailed, match=r"only 1 of the 2 .*U0REQUESTER requested the release"):
        trust.check_approvals(SEALER, release, approval, POLICY, approval.covers_digest)
    approval = _approval(release, ("U0ALICE", "U0ALICE"), ("U0EVE", "S0OTHER"))  # a group the policy does not name
    with pytest.raises(SecurityCheckFailed, match="U0EVE is not an approver of the policy"):
        trust.check_approvals(SEALER, release, approval, POLICY, approval.covers_digest)
    approval = _approval(release, ("U0ALICE", "U0ALICE"), ("U0ALICE", "U0ALICE"))  # the same person twice
    with pytest.raises(SecurityCheckFailed, match="only 1 of the 2"):
        trust.check_approvals(SEALER, release, approval, POLICY, approval.covers_digest)


def test_approvals_of_other_coverage_do_not_count() -> None:
    release = _sealed()
    approval = _approval(release, ("U0ALICE", "U0ALICE"), ("U0BOB", "U0BOB"))
    with pytest.raises(SecurityCheckFailed, match="only 0 of the 2"):
        trust.check_approvals(SEALER, release, approval, POLICY, "0" * 64)


def test_without_a_seal_key_approvals_cannot_be_verified() -> None:
    release = _sealed()
    approval = _approval(release, ("U0ALICE", "U0ALICE"), ("U0BOB", "U0BOB"))
    with pytest.raises(SecurityCheckFailed, match="no \\[trust\\] seal_key"):
        trust.check_approvals(None, release, approval, POLICY, approval.covers_digest)


def test_a_short_seal_key_is_refused_and_the_key_never_shows() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Sealer(b"short")
    assert "k" * 32 not in repr(SEALER)


# -- the rollback job (issue 12): a rollback request's quorum is verified like a publish's ---------------------------

def _rolled_out(requested_by: str = "U0CAROL", *decisions: tuple[str, str], seal: bool = True) -> Release:
    release = _sealed()
    release.rollout = [RolloutStageState(name="canary", targets=[
        {"kind": "policy", "name": "hello-canary", "previous": {"*": "1.2.2"}}])]
    covered = approvals.rollback_covers(release)
    request = Approval(required=2, approvers=list(POLICY.approvers), allow_requester=False, requested_at=T0,
                       expires_at=T0 + 60, covers=covered, covers_digest=approvals.covers_digest(covered),
                       kind="rollback", requested_by=requested_by, quorum_at=T0 + 10, status=RequestStatus.APPROVED)
    for user_id, via in decisions:
        decision = Decision(user_id=user_id, outcome="approved", at=T0 + 5, covers_digest=request.covers_digest,
                            via=via)
        if seal:
            decision.seal = SEALER.seal("decision", decision_payload(release.release_id, "rollback", 1, decision))
        request.decisions.append(decision)
    release.rollback_request = request
    return release


def test_an_approved_rollback_request_verifies() -> None:
    release = _rolled_out("U0CAROL", ("U0ALICE", "U0ALICE"), ("U0BOB", "U0BOB"))
    trust.check_rollback(SEALER, release, "U0CAROL", POLICY)
    trust.check_rollback(SEALER, _rolled_out("U0CAROL"), "U0CAROL", ApprovalPolicy())  # nothing to verify


@pytest.mark.parametrize("forge, words", [
    (lambda r: setattr(r, "rollback_request", None), "without an approved rollback request"),
    (lambda r: r.rollback_request.decisions.clear(), r"only 0 of the 2"),
    (lambda r: r.rollback_request.decisions.append(Decision(
        user_id="U0GHOST", outcome="approved", at=T0, via="U0GHOST", covers_digest=r.rollback_request.covers_digest)),
     "U0GHOST.*does not carry the bot's seal"),
    (lambda r: r.rollout[0].targets[0]["previous"].update({"*": "0.0.1"}), "not what its request covered"),
])
def test_a_forged_rollback_quorum_is_refused(forge: Any, words: str) -> None:
    release = _rolled_out("U0CAROL", ("U0ALICE", "U0ALICE"), ("U0BOB", "U0BOB"))
    forge(release)
    with pytest.raises(SecurityCheckFailed, match=words) as refused:
        trust.check_rollback(SEALER, release, "U0CAROL", POLICY)
    assert "Nothing was moved" in str(refused.value)


def test_sealed_rollback_approvals_count_only_under_the_policy_and_four_eyes() -> None:
    release = _rolled_out("U0ALICE", ("U0ALICE", "U0ALICE"), ("U0BOB", "U0BOB"))  # the requester approved
    with pytest.raises(SecurityCheckFailed, match="U0ALICE requested the rollback"):
        trust.check_rollback(SEALER, release, "U0ALICE", POLICY)
    release = _rolled_out("U0CAROL", ("U0ALICE", "U0ALICE"), ("U0EVE", "U0EVE"))  # not an approver
    with pytest.raises(SecurityCheckFailed, match="U0EVE is not an approver"):
        trust.check_rollback(SEALER, release, "U0CAROL", POLICY)
    release = _rolled_out("U0CAROL", ("U0ALICE", "U0ALICE"), ("U0BOB", "U0BOB"))
    with pytest.raises(SecurityCheckFailed, match="names U0ALICE"):  # the job claims someone else asked
        trust.check_rollback(SEALER, release, "U0ALICE", POLICY)
