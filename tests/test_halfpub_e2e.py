"""No half publish, and the republish guard before the push (issue 12), end to end: real bot, workers, Redis, Docker
Engine and TLS registry; the Exchange stand-in answers a failed key or dockauth write as a real server would (403,
400, 502 before any processing). What is in the Exchange and in the registry is read back, not taken from edgebot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgebot import messages
from edgebot.release import Release
from sandbox.processes import add_commit
from sandbox.stack import CHANNEL_ID, ORG, PULL_PASSWORD, PULL_USER, Stack, wait_until
from workers.registry_api import RegistryReader

pytestmark = pytest.mark.slow

# a version space of this module's own: the registry is shared by every module's stack (session fixture), and
# test_publish_e2e asserts that its dry run of 1.0.3 left no tag there
VERSIONS = ("7.1.0", "7.1.1", "7.1.2", "7.1.3", "7.1.4", "7.1.5", "7.1.6", "7.1.7")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("halfpub")
    with Stack(workdir, docker=docker_daemon, registry=registry, versions=VERSIONS, arches=("amd64", "arm64"),
               settings={"retry_backoff": 1, "duplicate_window": 1}) as running:
        running.wait_workers(3)
        yield running


def _publish(stack: Stack, text: str) -> Release:
    return stack.finished(stack.start_release(text), timeout=180)


def _summary(stack: Stack, release: Release) -> str:
    thread = stack.slack.thread(CHANNEL_ID, release.message_ts)
    return json.dumps(next(m for m in thread if m["ts"] == release.summary_ts))


def _requests(stack: Stack, method: str, fragment: str) -> list[dict[str, Any]]:
    return [r for r in stack.exchange.requests() if r["method"] == method and fragment in r["path"]]


def test_a_key_upload_failing_after_the_service_post_undoes_this_release_in_every_arch(stack: Stack) -> None:
    """The arm64 key PUT is refused for good (403) after amd64 is complete and arm64's service was POSTed: both
    services this release created are deleted, and the summary says so instead of "key … in the Exchange"."""
    stack.exchange.fail_next("PUT", r"/services/hello_7\.1\.1_arm64/keys/", 403)
    release = _publish(stack, "publish hello 7.1.1 --registry local")
    assert release.state == "failed", release.error
    assert "403" in release.error
    for arch in ("amd64", "arm64"):
        assert stack.exchange.service(ORG, f"hello_7.1.1_{arch}") is None, arch
        assert stack.exchange.keys(ORG, f"hello_7.1.1_{arch}") == {}
        assert stack.exchange.dockauths(ORG, f"hello_7.1.1_{arch}") == []
        assert [r["status"] for r in _requests(stack, "DELETE", f"/services/hello_7.1.1_{arch}")] == [204]
    summary = _summary(stack, release)
    assert f"{ORG}/hello_7.1.1_amd64` removed" in summary and f"{ORG}/hello_7.1.1_arm64` removed" in summary
    assert "in the Exchange · public key" not in summary  # never the success claim
    assert summary.count("removed") >= 2


def test_a_transient_key_failure_completes_on_retry_as_this_release_s_creation(stack: Stack) -> None:
    stack.exchange.fail_next("PUT", r"/services/hello_7\.1\.0_amd64/keys/", 502)
    release = _publish(stack, "publish hello 7.1.0 --registry local")
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish"))
    host = stack.registry.address  # type: ignore[union-attr]
    for arch in ("amd64", "arm64"):
        sid = f"hello_7.1.0_{arch}"
        assert release.results[arch].publish_action == "created", arch  # not "already published": it was ours
        assert stack.exchange.keys(ORG, sid)["edgebot.public.pem"].startswith("-----BEGIN PUBLIC KEY-----")
        assert [(d["registry"], d["username"], d["token"]) for d in stack.exchange.dockauths(ORG, sid)] == [
            (host, PULL_USER, PULL_PASSWORD)]
    assert [r["status"] for r in _requests(stack, "PUT", "/services/hello_7.1.0_amd64/keys/")][:1] == [502]
    assert not _requests(stack, "DELETE", "/services/hello_7.1.0")


def test_a_refused_dockauth_never_deletes_a_version_that_existed_before(stack: Stack) -> None:
    """7.1.2 amd64 is published first; a release of 7.1.2 for both arches whose arm64 dockauth POST is refused (400)
    removes arm64 (its creation) and keeps amd64, saying that it was already published and what it holds."""
    first = _publish(stack, "publish hello 7.1.2 --registry local --arch amd64")
    assert first.state == "succeeded", first.error
    before = stack.exchange.service(ORG, "hello_7.1.2_amd64")
    stack.exchange.fail_next("POST", r"/services/hello_7\.1\.2_arm64/dockauths$", 400)
    release = _publish(stack, "publish hello 7.1.2 --registry local")
    assert release.state == "failed", release.error
    assert stack.exchange.service(ORG, "hello_7.1.2_amd64") == before  # untouched
    assert stack.exchange.keys(ORG, "hello_7.1.2_amd64")
    assert stack.exchange.service(ORG, "hello_7.1.2_arm64") is None
    assert not _requests(stack, "DELETE", "/services/hello_7.1.2_amd64")
    summary = _summary(stack, release)
    assert f"{ORG}/hello_7.1.2_arm64` removed" in summary
    assert f"{ORG}/hello_7.1.2_amd64` was already published before this release" in summary
    assert "key `edgebot.public.pem` present" in summary
    assert PULL_PASSWORD not in summary


def test_a_republish_with_different_content_is_refused_with_the_registry_tag_unchanged(stack: Stack) -> None:
    first = _publish(stack, "publish hello 7.1.3 --registry local --arch amd64")
    assert first.state == "succeeded", first.error
    registry = stack.registry
    assert registry is not None
    path = first.results["amd64"].image_tag.split("/", 1)[1].rsplit(":", 1)[0]

    def tag_digest() -> str | None:
        with RegistryReader(registry.address, username=PULL_USER, password=PULL_PASSWORD,
                            ca_pem=registry.ca_path.read_text()) as reader:
            return reader.tag_digest(path, "7.1.3")

    published = tag_digest()
    assert published == first.results["amd64"].digest
    dockerfile = (Path(__file__).parent.parent / "examples/hello/Dockerfile.amd64").read_text()
    add_commit(stack.source_path, {"Dockerfile.amd64": dockerfile + 'LABEL changed="yes"\n'}, tag="v7.1.3")
    again = _publish(stack, "publish hello 7.1.3 --registry local --arch amd64")
    assert again.state == "failed"
    assert "already published" in again.error and "--overwrite" in again.error
    assert tag_digest() == published, "the published version's tag was moved"
    assert stack.exchange.service(ORG, "hello_7.1.3_amd64")["deployment"] == first.results["amd64"].deployment
    assert again.stage("sign").status != "done"  # refused before anything was signed
    expected_root = messages.root_message(again).text
    wait_until(lambda: stack.slack.thread(CHANNEL_ID, again.message_ts)[0]["text"] == expected_root, timeout=30,
               what="the root to show the refusal")


def test_exchange_failing_past_the_retries_undoes_the_release(stack: Stack) -> None:
    """The key PUT keeps answering 502: once RQ has given up, the service this release POSTed is deleted too."""
    stack.exchange.fail_next("PUT", r"/services/hello_7\.1\.4_amd64/keys/", 502, count=50)
    release = _publish(stack, "publish hello 7.1.4 --registry local --arch amd64")
    assert release.state == "failed", release.error
    assert stack.exchange.service(ORG, "hello_7.1.4_amd64") is None
    assert f"{ORG}/hello_7.1.4_amd64` removed" in _summary(stack, release)


def test_the_daily_dockauth_check_runs_in_the_publish_worker_and_schedules_its_next_run(stack: Stack) -> None:
    """Publishing recorded the dockauths (registry and user; this registry's token is a password, no expiry) and
    scheduled the check; a run of the check job in the real publish worker records its run and schedules the next."""
    from edgebot import dockauth_records
    from edgebot.jobs import DOCKAUTH_CHECK_OWNER, Step, enqueue_step

    settings = stack.store().settings
    connection = stack.redis()
    records = dockauth_records.read(connection, settings, ORG, "hello")
    assert records and {r.username for r in records} == {PULL_USER} and PULL_PASSWORD not in repr(records)
    connection.delete(f"{settings.key_prefix}:dockauth-check:last")
    enqueue_step(connection, settings, Step.CHECK_DOCKAUTHS, DOCKAUTH_CHECK_OWNER, tag="now")
    wait_until(lambda: connection.get(f"{settings.key_prefix}:dockauth-check:last"), timeout=60,
               what="the dockauth check to run")
    assert connection.get(f"{settings.key_prefix}:dockauth-check:next")


def test_status_of_a_service_answers_from_the_recorded_dockauths(stack: Stack) -> None:
    response = stack.command("status hello")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["response_type"] == "ephemeral"
    host = stack.registry.address  # type: ignore[union-attr]
    assert "registry tokens stored for nodes" in answer["text"] and host in answer["text"]
    assert "no expiry" in answer["text"] and PULL_PASSWORD not in json.dumps(answer)


def test_an_overwritten_version_is_never_deleted_and_the_summary_says_what_it_holds(stack: Stack) -> None:
    """--overwrite of 7.1.2 (amd64 published by an earlier test, arm64 not): amd64 is PUT, arm64 POSTed, then the
    arm64 key is refused. arm64 (this release's creation) is deleted; amd64 existed before and is kept, holding this
    release's content, which the summary says (the earlier content cannot be put back)."""
    before = stack.exchange.service(ORG, "hello_7.1.2_amd64")
    assert before is not None and stack.exchange.service(ORG, "hello_7.1.2_arm64") is None
    dockerfile = (Path(__file__).parent.parent / "examples/hello/Dockerfile.amd64").read_text()
    add_commit(stack.source_path, {"Dockerfile.amd64": dockerfile + 'LABEL overwritten="yes"\n'}, tag="v7.1.2")
    stack.exchange.fail_next("PUT", r"/services/hello_7\.1\.2_arm64/keys/", 403)
    release = _publish(stack, "publish hello 7.1.2 --registry local --overwrite")
    assert release.state == "failed", release.error
    after = stack.exchange.service(ORG, "hello_7.1.2_amd64")
    assert after is not None and after["deployment"] != before["deployment"]  # replaced, and kept
    assert after["deployment"] == release.results["amd64"].deployment
    assert stack.exchange.service(ORG, "hello_7.1.2_arm64") is None
    assert not _requests(stack, "DELETE", "/services/hello_7.1.2_amd64")
    summary = _summary(stack, release)
    assert f"{ORG}/hello_7.1.2_amd64` now holds this release's content (--overwrite" in summary
    assert f"{ORG}/hello_7.1.2_arm64` removed" in summary


def test_a_release_the_reaper_failed_after_its_post_has_its_services_removed(stack: Stack) -> None:
    """The reaper's give-up on a publish step (its workers kept dying after the POST) runs the same undo as a failed
    publish job: the services this release created are deleted and the record says what is left, per arch."""
    from edgebot.config import load_config
    from edgebot.secrets import SecretResolver
    from workers.context import WorkerContext
    from workers.unpublish import undo_after_give_up

    release = _publish(stack, "publish hello 7.1.5 --registry local")
    assert release.state == "succeeded", release.error
    store = stack.store()
    for arch in ("amd64", "arm64"):
        assert stack.exchange.service(ORG, f"hello_7.1.5_{arch}") is not None
    env = stack.env("publish")
    ctx = WorkerContext(load_config(stack.config_path, environ=env), SecretResolver(environ=env))

    def as_if_created(r: Release) -> None:  # the state a first POST leaves: this release created both services
        for arch in r.arches:
            r.result(arch).exchange_write = "create"
        r.mark_failed("the publish was interrupted 3 times", step="publish", attempts=3, job="j")

    store.update(release.release_id, as_if_created)
    undo_after_give_up(ctx, release.release_id)
    after = store.require(release.release_id)
    for arch in ("amd64", "arm64"):
        assert stack.exchange.service(ORG, f"hello_7.1.5_{arch}") is None, arch
        assert after.result(arch).exchange_state == {"service_id": f"hello_7.1.5_{arch}", "undone": True,
                                                     "origin": "created", "service": "absent"}


def test_public_overrides_the_definition_in_the_exchange_and_a_republish_must_say_overwrite(stack: Stack) -> None:
    """`--public` (hzn … publish --public) over a definition that says private: every arch goes to the Exchange
    public, and the same version published again with `--private` is different content (refused unless
    --overwrite), the public version untouched."""
    from sandbox.stack import APPROVER  # a release manager: the sandbox has no `public` rule

    definition = (Path(__file__).parent.parent / "examples/hello/horizon/service.definition.json").read_text()
    assert '"public": false' in definition, "the definition says private"
    release = stack.finished(stack.start_release("publish hello 7.1.6 --registry local --public", user_id=APPROVER),
                             timeout=180)
    assert release.state == "succeeded", release.error
    for arch in ("amd64", "arm64"):
        assert stack.exchange.service(ORG, f"hello_7.1.6_{arch}")["public"] is True, arch  # type: ignore[index]
    again = _publish(stack, "publish hello 7.1.6 --registry local --private")
    assert again.state == "failed" and "--overwrite" in again.error, again.error
    assert stack.exchange.service(ORG, "hello_7.1.6_amd64")["public"] is True  # type: ignore[index]


def test_a_change_of_the_service_policy_alone_publishes_it_without_a_rebuild(stack: Stack) -> None:
    """A new commit that changes only horizon/service.policy.json, for a version already published: nothing is built
    or pushed (the build context is the same), the service stays as it is, and its policy is replaced."""
    from rq.job import Job

    from edgebot.jobs import Step
    from sandbox.exchange_service_policy import stored_policy

    first_policy = {"properties": [{"name": "camera", "value": True, "type": "boolean"}], "constraints": []}
    add_commit(stack.source_path, {"horizon/service.policy.json": json.dumps(first_policy)}, tag="v7.1.7")
    first = _publish(stack, "publish hello 7.1.7 --registry local")
    assert first.state == "succeeded", first.error
    services = {arch: stack.exchange.service(ORG, f"hello_7.1.7_{arch}") for arch in ("amd64", "arm64")}

    second_policy = {"properties": [{"name": "camera", "value": False, "type": "boolean"}], "constraints": []}
    add_commit(stack.source_path, {"horizon/service.policy.json": json.dumps(second_policy)}, tag="v7.1.7")
    again = _publish(stack, "publish hello 7.1.7 --registry local")
    assert again.state == "succeeded", again.error
    assert again.commit_sha != first.commit_sha
    for arch in ("amd64", "arm64"):
        assert not Job.exists(Step.BUILD.job_id(again.release_id, arch), connection=stack.redis()), arch
        assert again.arch_steps["build"][arch].status == "skipped", arch
        assert again.results[arch].digest == first.results[arch].digest, arch
        assert stack.exchange.service(ORG, f"hello_7.1.7_{arch}") == services[arch], "the service is untouched"
        stored = stored_policy(stack.exchange.state, ORG, f"hello_7.1.7_{arch}")
        assert stored is not None and stored["properties"][0] == {"name": "camera", "value": False,
                                                                   "type": "boolean"}, stored
        assert "policy published" in again.results[arch].publish_action, again.results[arch].publish_action
