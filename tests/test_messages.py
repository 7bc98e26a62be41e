"""Snapshot tests of every user-facing message, plus Slack's limits on each of them.

Regenerate after an intended wording change: EDGEBOT_UPDATE_SNAPSHOTS=1 pytest tests/test_messages.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebot import approval_messages, fleet_messages, messages
from edgebot.dockauth_records import DockauthRecord
from edgebot.release import (
    DONE,
    FAILED,
    FAILED_STEP,
    REJECTED,
    ROLLED_BACK,
    RUNNING,
    SUCCEEDED,
    ArchResult,
    Release,
    RolloutStageState,
    StageState,
)
from edgebot.smoke import SmokeResult
from tests.snapshot import check_snapshot

SNAPSHOTS = Path(__file__).parent / "snapshots"
T0 = 1_800_000_000.0


def _release(**overrides: object) -> Release:
    release = Release(
        release_id="r-7f3a9c", team_id="T0EDGE", channel_id="C0RELEASES", user_id="U0REQUESTER", service="hello",
        version="1.2.3", org="acme", registry="icr", arches=["amd64", "arm64"], created_at=T0, updated_at=T0,
        command_text="publish hello 1.2.3 --registry icr",
    )
    release.commit_sha = "0123456789abcdef0123456789abcdef01234567"
    release.source_ref = "v1.2.3"
    release.stages = {
        "source": StageState(DONE, T0, T0 + 1.5, "2 definition(s) checked"),
        "build": StageState(DONE, T0 + 2, T0 + 14.25),
        "push": StageState(DONE, T0 + 2, T0 + 20),
        "sign": StageState(DONE, T0 + 20, T0 + 21, "key edgebot.public.pem"),
        "publish": StageState(DONE, T0 + 21, T0 + 95, "created"),
    }
    release.arch_steps = {
        "build": {"amd64": StageState(DONE, T0 + 2, T0 + 9), "arm64": StageState(DONE, T0 + 2, T0 + 14)}
    }
    for arch in release.arches:
        release.results[arch] = ArchResult(
            image_tag=f"us.icr.io/edge/hello_{arch}:1.2.3",
            digest="sha256:" + "ab" * 32,
            pinned_image=f"us.icr.io/edge/hello_{arch}@sha256:" + "ab" * 32,
            signature="QUJD" * 171,
            signature_fingerprint="sha256:" + "cd" * 32,
            service_id=f"hello_1.2.3_{arch}",
            publish_action="created",
        )
    release.key_name = "edgebot.public.pem"
    release.public_key_fingerprint = "sha256:" + "ef" * 32
    release.state = SUCCEEDED
    release.ended_at = T0 + 96
    for key, value in overrides.items():
        setattr(release, key, value)
    return release


def _failed_build() -> Release:
    release = _release(state=FAILED, error="build of arm64 failed: The command '/bin/sh -c make' returned 2")
    release.arch_steps["build"]["arm64"] = StageState(FAILED_STEP, T0 + 2, T0 + 5)
    release.results["arm64"].log_tail = [f"step {i}: compiling module_{i}.c" for i in range(25)]
    release.results["arm64"].pinned_image = ""
    release.results["arm64"].signature = ""
    release.error_detail = release.results["arm64"].log_tail
    return release


def _smoke_failed(code: int | None = 7) -> Release:
    """Issue 14: the arm64 smoke run failed before its push (its last lines are the error's detail)."""
    tail = ("self-test: 11 of 12 checks", "self-test: <!here> libfoo missing")
    result = SmokeResult("/bin/app --self-test", code, tail, 30.0)
    release = _release(state=FAILED, error=messages.smoke_failed("hello", "arm64", result))
    release.arch_steps["build"]["arm64"] = StageState(FAILED_STEP, T0 + 2, T0 + 5)
    release.results["arm64"].pinned_image = ""
    release.results["arm64"].signature = ""
    release.error_detail = list(result.tail)
    return release


def _rolled_out(failed: bool = False) -> Release:
    policy = {"kind": "policy", "name": "hello-canary", "arch": "*", "constraints": ["group == canary"],
              "previous": {"*": "1.2.2"}}
    canary = RolloutStageState("canary", "rolled_back" if failed else "healthy", T0 + 96, T0 + 140, [policy],
                               {"total": 4, "new": 1 if failed else 3, "old": 0, "failing": 2 if failed else 0,
                                "offline": 1, "waiting": 0}, polls=9)
    fleet = RolloutStageState("fleet", "pending" if failed else "healthy")
    if failed:
        canary.problems = [
            "node-17 cannot pull from us.icr.io: certificate signed by unknown authority — install the registry CA "
            "on the node (/etc/docker/certs.d/us.icr.io/ca.crt)",
            "node-18 has no credentials for registry us.icr.io — publish with a registry that has a pull credential "
            "(the service's dockauth), or give the node one",
        ]
        return _release(state=ROLLED_BACK, rollout=[canary, fleet], error_detail=canary.problems,
                        error="rollout stage canary: 2 node(s) failed on 1.2.3 (more than the 0 allowed); every "
                              "policy/pattern edgebot changed points to the previous version again")
    fleet.started_at, fleet.ended_at, fleet.targets = T0 + 140, T0 + 300, [{**policy, "name": "hello-fleet"}]
    fleet.counts = {"total": 120, "new": 118, "old": 0, "failing": 0, "offline": 2, "waiting": 0}
    return _release(rollout=[canary, fleet])


def _approved_and_rolled_out() -> Release:
    from edgebot.release import Approval, Decision

    release = _release()
    release.approval = Approval(required=1, approvers=["S0LEADS"], allow_requester=False, requested_at=T0 + 21,
                                expires_at=T0 + 1821, covers={}, covers_digest="d" * 64, card_ts="1800000021.000100",
                                decisions=[Decision("U0ALICE", "approved", T0 + 30, "d" * 64)], quorum_at=T0 + 30)
    release.rollout = [RolloutStageState(name="canary", status="healthy", counts={"total": 3, "new": 3}),
                       RolloutStageState(name="fleet", status="healthy",
                                         counts={"total": 24, "new": 23, "offline": 1})]
    return release


HOSTILE = "<!channel> urgent: <https://evil.example/login|re-run the build> & ``` <!here>"


def _hostile_build() -> Release:
    release = _failed_build()
    release.error = f"build of arm64 failed: {HOSTILE}"
    release.results["arm64"].log_tail = ["step 1: compiling", HOSTILE, "```"]
    release.error_detail = release.results["arm64"].log_tail
    return release


def _hostile_rejection() -> Release:
    from tests.test_approvals import _card

    return _card(REJECTED, f"rejected by <@U0ALICE>: {HOSTILE}. The images stay in the registry; nothing was "
                           "published")


def _hostile_rollout() -> Release:
    release = _rolled_out(failed=True)
    release.rollout[0].problems = [f"node-17 failed: {HOSTILE}"]
    return release


def _half_published(unknown: bool = False) -> Release:
    """A publish that failed after the service POST: amd64 was this release's creation (removed again), arm64 was
    already published before (kept, its key missing); or the Exchange could not be read back."""
    release = _release(state="failed", ended_at=T0 + 99,
                       error="the Exchange answered 403 to PUT orgs/acme/services/hello_1.2.3_arm64/keys/k")
    release.stages["publish"] = StageState(FAILED_STEP, T0 + 21, T0 + 95)
    release.results["amd64"].exchange_state = {"service_id": "hello_1.2.3_amd64", "service": "absent",
                                               "undone": True, "origin": "created"}
    release.results["arm64"].exchange_state = (
        {"service_id": "hello_1.2.3_arm64", "service": "unknown", "error": "GET orgs/acme/services answered 502"}
        if unknown else
        {"service_id": "hello_1.2.3_arm64", "service": "present", "origin": "preexisting", "content": "earlier",
         "key": "edgebot.public.pem", "key_present": False, "dockauths": ["us.icr.io"]})
    return release


def _dockauths() -> list[DockauthRecord]:
    ocp = "default-route-openshift-image-registry.apps.ocp.example.com"
    return [DockauthRecord(org="acme", service="hello", url="hello", version="1.2.3", arch=arch, registry=ocp,
                           username="puller", expires_at=T0 + days * 86400, service_id=f"hello_1.2.3_{arch}")
            for arch, days in (("amd64", 3), ("arm64", 40))]


CASES = {
    "dockauth_expiry_warning": lambda: fleet_messages.dockauth_expiry_warning("hello", "acme", _dockauths()[:1],
                                                                              now=T0),
    "dockauth_status": lambda: fleet_messages.dockauth_status("hello", "acme", _dockauths(), now=T0, window=14 * 86400),
    "dockauth_status_none": lambda: fleet_messages.dockauth_status("hello", "acme", [], now=T0, window=14 * 86400),
    "summary_half_publish_undone": lambda: messages.summary_message(_half_published()),
    "summary_half_publish_unknown": lambda: messages.summary_message(_half_published(unknown=True)),
    "rollout_stage_healthy": lambda: fleet_messages.rollout_stage_message(_rolled_out(), 1),
    "rollout_stage_rolled_back": lambda: fleet_messages.rollout_stage_message(_rolled_out(failed=True), 0),
    "rollout_stage_pending": lambda: fleet_messages.rollout_stage_message(_rolled_out(failed=True), 1),
    "summary_rolled_out": lambda: messages.summary_message(_rolled_out()),
    "rollout_state": lambda: fleet_messages.rollout_state_message(
        "hello", _rolled_out(), "1.2.3", [(s.name, s.status, s.counts) for s in _rolled_out().rollout], live=False),
    "rollout_state_none": lambda: fleet_messages.rollout_state_message("hello", None, "", [], live=False),
    "summary_rolled_back": lambda: messages.summary_message(_rolled_out(failed=True)),
    "help": lambda: messages.help_message(),
    "help_publish": lambda: messages.help_message("publish"),
    "usage_error": lambda: messages.usage_error("Unknown registry alias `dockerhub`.", messages.PUBLISH_USAGE),
    "not_in_channel": lambda: messages.not_in_channel("C0RELEASES"),
    "missing_scope": lambda: messages.missing_scope("im:read"),
    "root_succeeded": lambda: messages.root_message(_release()),
    "root_queued": lambda: messages.root_message(_release(state="queued", commit_sha="")),
    "stage_source": lambda: messages.stage_message(_release(), "source"),
    "stage_build": lambda: messages.stage_message(_release(), "build"),
    "stage_build_failed": lambda: messages.stage_message(_failed_build(), "build"),
    "summary_smoke_failed": lambda: messages.summary_message(_smoke_failed()),
    "summary_smoke_timeout": lambda: messages.summary_message(_smoke_failed(None)),
    "summary_smoke_not_started": lambda: messages.summary_message(_release(
        state=FAILED, error=messages.smoke_not_started("arm64", "/bin/app --self-test",
                                                       'exec: "/bin/app": no such file or directory'))),
    "summary_succeeded": lambda: messages.summary_message(_release()),
    "summary_failed": lambda: messages.summary_message(_failed_build()),
    "summary_dry_run": lambda: messages.summary_message(_release(dry_run=True)),
    "root_dry_run": lambda: messages.root_message(_release(dry_run=True)),
    "not_allowed": lambda: messages.not_allowed("publish", "hello", "acme", ["<@U0LEAD>", "<!subteam^S0OPS>"]),
    "cancel_refused_published": lambda: messages.cancel_refused(_release()),
    "cancelled_ack": lambda: messages.cancelled_ack(_release(state="cancelled"), 1, 2),
    "status_none": lambda: messages.status_list("C0RELEASES", []),
    "status_list": lambda: messages.status_list("C0RELEASES", [_release(state="building", ended_at=None)]),
    "status_detail": lambda: messages.status_detail(_release()),
    "status_detail_approved_rolled_out": lambda: messages.status_detail(
        _approved_and_rolled_out(), "https://edge-sandbox.slack.com/archives/C0RELEASES/p1800000000000100"),
    "history_with_approver": lambda: messages.history_message("hello", "acme", [_approved_and_rolled_out()]),
    "history": lambda: messages.history_message("hello", "acme", [_release(), _failed_build()]),
    "publish_locked": lambda: messages.publish_locked(_release(state="building", ended_at=None)),
    "resumed": lambda: messages.resumed_message("build-amd64", 2, ["commit `0123456789ab`",
                                                                  "amd64 digest `sha256:abababababab`"]),
    "summary_resumed": lambda: messages.summary_message(_release(notes=[messages.resumed_note("sign", 2)])),
    "cancel_too_late": lambda: messages.cancel_too_late(_release(state="rolling_out", ended_at=None)),
    "release_elsewhere": lambda: messages.release_elsewhere("r-7f3a9c0d12e4b856"),
    "history_elsewhere": lambda: messages.history_message("hello", "acme", [_release()], elsewhere=3),
    "history_only_elsewhere": lambda: messages.history_message("hello", "acme", [], elsewhere=2),
    # untrusted text: a build error and log, a reject reason, node errors with `<!channel>` and a spoofed link
    "summary_failed_hostile": lambda: messages.summary_message(_hostile_build()),
    "stage_build_failed_hostile": lambda: messages.stage_message(_hostile_build(), "build"),
    "approval_card_rejected_hostile": lambda: approval_messages.approval_card(_hostile_rejection()),
    "rollout_stage_hostile": lambda: fleet_messages.rollout_stage_message(_hostile_rollout(), 0),
    # deploys of a version already in the Exchange (no build) and a refused rollback
    "deploy_checked": lambda: fleet_messages.deploy_checked(_deployed(), {"amd64": "edgebot.public.pem"}),
    "deploy_queued": lambda: fleet_messages.deploy_queued_ack(_deployed(state="queued", rollout_only=["hello-canary"])),
    "summary_deployed": lambda: messages.summary_message(_deployed()),
    "root_rollback_to": lambda: messages.root_message(_deployed(kind="rollback", state="rolling_out", ended_at=None)),
    # verify (issue 15): a report with a problem per arch, everything verified, the summary's notes, the refusals
    "verify_report_problems": lambda: fleet_messages.verify_report("hello", "1.2.3", "acme", _verify_data(bad=True)),
    "verify_report_ok": lambda: fleet_messages.verify_report("hello", "1.2.3", "acme", _verify_data(bad=False)),
    "verify_queued": lambda: fleet_messages.verify_queued("hello", "1.2.3", "acme"),
    "verify_failed": lambda: fleet_messages.verify_failed("hello", "9.9.9", "acme", "hello 9.9.9 is not a version of "
                                                          "its source (unknown ref v9.9.9)"),
    "summary_verified": lambda: messages.summary_message(_release(notes=[
        fleet_messages.verify_note(_verify_data(bad=False)), fleet_messages.verify_note(_verify_data(bad=True))])),
    "rollback_refused_alert": lambda: fleet_messages.rollback_refused_alert(
        ":rotating_light: Security check failed: a decision attributed to U0GHOST (approved, round 1) does not "
        "carry the bot's seal. Nothing was moved; investigate."),
}


def _verify_data(*, bad: bool) -> dict[str, dict[str, object]]:
    image = "icr.io/edge/hello_{arch}@sha256:" + "ab" * 32

    def checks(arch: str, broken: bool) -> list[dict[str, object]]:
        def check(kind: str, ok: bool, subject: str, detail: str = "") -> dict[str, object]:
            return {"kind": kind, "ok": ok, "subject": subject, "detail": detail}

        return [
            check("service", True, f"acme/hello_1.2.3_{arch}"),
            check("signature", not (broken and arch == "amd64"), "edgebot.public.pem" if arch != "amd64" or not broken
                  else "1 key(s)", "verifies with none of the 1 key(s) stored with the service: agents decline it "
                  "without reporting an error" if broken and arch == "amd64" else ""),
            check("image", not (broken and arch == "arm64"), image.format(arch=arch),
                  "is not in its registry: icr.io has nothing at /v2/edge/hello_arm64/manifests/sha256:abab…"
                  if broken and arch == "arm64" else "sha256:" + "ab" * 32),
            check("dockauth", True, "icr.io"),
            check("policy", True, "service policy"),
            check("dependency", not broken, "`acme/gps` (" + arch + ") in `[1.0.0,2.0.0)`",
                  "no version of it is in the Exchange" if broken else ""),
        ]

    return {arch: {"service_id": f"hello_1.2.3_{arch}", "checks": checks(arch, bad)} for arch in ("amd64", "arm64")}


def _deployed(**overrides: object) -> Release:
    """A deploy of 1.2.2 found in the Exchange for amd64 only (the rollout's policies cover only amd64)."""
    release = _release(kind="deploy", version="1.2.2", command_text="deploy hello 1.2.2", stages={}, arch_steps={})
    for arch in release.arches:
        release.results[arch] = ArchResult(definition={"url": "hello"})
    release.results["amd64"] = ArchResult(
        definition={"url": "hello"}, service_id="hello_1.2.2_amd64", deployment="{}", signature="QUJD" * 171,
        signature_fingerprint="sha256:" + "cd" * 32, publish_action="already in the Exchange")
    for key, value in overrides.items():
        setattr(release, key, value)
    return release


@pytest.mark.parametrize("name", sorted(CASES))
def test_snapshot(name: str) -> None:
    check_snapshot(name, CASES[name]())


@pytest.mark.parametrize("name", sorted(CASES))
def test_within_slack_limits(name: str) -> None:
    msg = CASES[name]()
    assert msg.text, "every message has a plain-text fallback"
    assert len(msg.blocks) <= messages.MAX_BLOCKS
    for block in msg.blocks:
        texts = [block["text"]["text"]] if "text" in block else [e["text"] for e in block.get("elements", [])]
        assert all(len(t) <= messages.MAX_TEXT for t in texts)


def test_summary_shows_what_shipped_per_arch() -> None:
    text = messages.summary_message(_release()).text
    for arch in ("amd64", "arm64"):
        assert f"us.icr.io/edge/hello_{arch}@sha256:{'ab' * 32}" in text
        assert f"acme/hello_1.2.3_{arch}" in text
    assert "<@U0REQUESTER>" in text
    assert "edgebot.public.pem" in text


def test_many_arches_and_huge_logs_stay_within_limits() -> None:
    release = _failed_build()
    release.results["arm64"].log_tail = ["x" * 500] * 40
    release.error_detail = ["y" * 500] * 40
    for msg in (messages.stage_message(release, "build"), messages.summary_message(release)):
        assert all(len(b.get("text", {}).get("text", "")) <= messages.MAX_TEXT for b in msg.blocks)


# -- a build you can watch (issue 14) -----------------------------------------------------------------------------

def _building(now: float) -> Release:
    """amd64 at step 3 of 7 for 42 s, arm64 built: the build stage message a progress report repaints."""
    release = _release(state="building", ended_at=None)
    release.stages["build"] = StageState(RUNNING, now - 42, None)
    release.arch_steps = {"build": {"amd64": StageState(RUNNING, now - 42, None,
                                                        messages.build_progress_note(3, 7)),
                                    "arm64": StageState(DONE, now - 42, now - 5, "4f2a9c0d12e4")}}
    return release


WATCH_CASES = {
    "stage_build_progress": lambda now: messages.stage_message(_building(now), "build"),
    "build_log_not_attached": lambda now: messages.build_log_not_attached("arm64", "missing_scope"),
    "build_log_not_attached_other": lambda now: messages.build_log_not_attached("amd64", "upload_http_400"),
    "build_log_comment_failed": lambda now: messages.Message(
        text=messages.build_log_comment("arm64", failed=True, size=5 * 1024**2)),
    "build_log_comment_built": lambda now: messages.Message(
        text=messages.build_log_comment("amd64", failed=False, size=300)),
}


@pytest.mark.parametrize("name", sorted(WATCH_CASES))
def test_snapshot_of_a_build_you_can_watch(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    now = T0 + 1000
    monkeypatch.setattr("edgebot.release.time.time", lambda: now)
    check_snapshot(name, WATCH_CASES[name](now))
