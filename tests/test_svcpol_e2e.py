"""Issue 15, end to end: service policies and dependencies. Signed slash commands to the real bot, real RQ workers
(one per arch), real Redis, Docker and TLS registry, git; the Exchange stand-in's simulated agbot merges each
version's service policy when it matches nodes (``sandbox/fleet.py policy_compatible``).

* a release whose source has ``horizon/service.policy.json`` PUTs it for every arch after the service, with the
  built-in service properties; nodes whose own constraints rely on a property of that service policy (and that
  satisfy its constraints) get the version through the rollout's deployment policy;
* an invalid policy, or a ``requiredServices`` entry the Exchange does not hold, is refused in prepare: nothing
  built, the thread says what is wrong (the file and the problem; the service, org, arch, range and "publish it
  first"); a dependency that is there passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rq.job import Job

from edgebot.jobs import Step
from edgebot.release import Release
from sandbox.exchange_service_policy import stored_policy
from sandbox.processes import add_commit
from sandbox.stack import CHANNEL_ID, EXCHANGE_PASSWORD, EXCHANGE_USER, ORG, Stack, wait_until

pytestmark = pytest.mark.slow

VERSIONS = ("2.0.0",)
TOML = """
[[services.hello.rollout]]
stage = "fleet"
policies = ["hello-fleet"]
"""
PRIORITY = {"priority_value": 1, "retries": 1, "retry_durations": 3600}
DEFINITION = (Path(__file__).parent.parent / "examples/hello/horizon/service.definition.json").read_text()
POLICY = {"label": "hello needs a GPU and offers a camera",
          "properties": [{"name": "camera", "value": True, "type": "boolean"}, {"name": "model", "value": "2.1.0",
                                                                                "type": "version"}],
          "constraints": ["gpu == true"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("svcpol")
    settings = {"rollout_poll_interval": 0.5, "rollout_offline_after": 4.0, "rollout_stage_timeout": 240.0,
                "rollout_failure_threshold": 0, "duplicate_window": 1, "rollout_pull_grace": 30.0,
                "rollout_diagnose_after": 60.0}
    with Stack(workdir, docker=docker_daemon, registry=registry, versions=VERSIONS, arches=("amd64", "arm64"),
               settings=settings, extra_toml=TOML) as running:
        fleet = running.exchange.fleet
        fleet.apply_delay, fleet.heartbeat_interval = 0.3, 0.5
        running.exchange.add_user(ORG, EXCHANGE_USER, EXCHANGE_PASSWORD, admin=True)  # sees the org's nodes
        running.wait_workers(3)
        yield running


def _exchange(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.exchange.url + "/", auth=(f"{ORG}/{EXCHANGE_USER}", EXCHANGE_PASSWORD))


def _publish(stack: Stack, text: str) -> Release:
    release_id = stack.start_release(text)
    stack.wait_final(release_id, timeout=400)
    store = stack.store()
    wait_until(lambda: store.require(release_id).summary_ts or store.require(release_id).state == "failed",
               timeout=30, what="the summary")
    return store.require(release_id)


def _thread_says(stack: Stack, release: Release, words: str) -> None:
    wait_until(lambda: words in json.dumps(stack.slack.thread(CHANNEL_ID, release.message_ts), ensure_ascii=False),
               timeout=30, what=f"{words!r} in the thread")


def _built_nothing(stack: Stack, release: Release) -> None:
    for arch in ("amd64", "arm64"):
        assert not Job.exists(Step.BUILD.job_id(release.release_id, arch), connection=stack.redis())
        assert not (release.results.get(arch) and release.results[arch].digest)
    assert not any(sid.startswith(f"hello_{release.version}_") for sid in stack.exchange.services(ORG))


def test_the_service_policy_is_published_for_every_arch_and_nodes_match_through_it(stack: Stack) -> None:
    fleet = stack.exchange.fleet
    nodes = [fleet.add_node(ORG, f"cam-{i}", "amd64", properties=[
        {"name": "site", "value": "berlin"}, {"name": "gpu", "value": True}]) for i in (1, 2)]
    with stack.exchange.state.lock:  # their node policies want a camera: only hello's service policy offers one
        for node_id in nodes:
            stack.exchange.state.nodes[ORG][node_id]["constraints"] = ["camera == true"]
    deployment_policy = {"label": "hello-fleet", "service": {"name": "hello", "org": "$HZN_ORG_ID", "arch": "*",
                         "serviceVersions": [{"version": "$SERVICE_VERSION", "priority": PRIORITY}]},
                         "constraints": ["site == berlin"]}  # created by the rollout (rollout_create)
    add_commit(stack.source_path, {"horizon/service.policy.json": json.dumps(POLICY),
                                   "horizon/deployment.policy.json": json.dumps(deployment_policy)}, tag="v2.0.1")

    release = _publish(stack, "publish hello 2.0.1 --registry local")
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish"))
    for arch in ("amd64", "arm64"):
        stored = stored_policy(stack.exchange.state, ORG, f"hello_2.0.1_{arch}")
        assert stored is not None, arch
        props = {p["name"]: p["value"] for p in stored["properties"]}
        assert props["camera"] is True and props["model"] == "2.1.0"
        assert props["openhorizon.service.arch"] == arch and props["openhorizon.service.version"] == "2.0.1"
        assert stored["constraints"] == ["gpu == true"] and stored["label"] == POLICY["label"]
        assert "policy published" in release.results[arch].publish_action
    verified = ":mag: Verified in the Exchange for `amd64`, `arm64`"  # the check after publish, in the summary
    assert any(n.startswith(verified) for n in release.notes), release.notes
    puts = [r["path"] for r in stack.exchange.requests() if r["method"] == "PUT" and r["path"].endswith("/policy")]
    assert sorted(p.split("/")[-2] for p in puts) == ["hello_2.0.1_amd64", "hello_2.0.1_arm64"]
    wait_until(lambda: all(fleet.running(n) == {"hello": "2.0.1"} for n in nodes), timeout=60,
               what="the nodes to run 2.0.1 through the merged service policy")

    # the policy is sealed with the definitions: the same version again changes nothing
    again = _publish(stack, "publish hello 2.0.1 --registry local")
    assert again.state == "succeeded" and "policy unchanged" in again.results["amd64"].publish_action


@pytest.mark.parametrize(("policy", "problem"), [
    ({"properties": [{"name": "fps", "value": 2.5, "type": "int"}]}, "Value 2.5 of property fps is not an integer"),
    ({"constraints": ["NOT gpu == true"]}, "has no NOT"),
])
def test_an_invalid_service_policy_is_refused_before_the_build(stack: Stack, policy: dict[str, Any],
                                                               problem: str) -> None:
    tag = "v2.0.2" if "properties" in policy else "v2.0.3"
    add_commit(stack.source_path, {"horizon/service.policy.json": json.dumps(policy)}, tag=tag)
    release = _publish(stack, f"publish hello {tag[1:]} --registry local")
    assert release.state == "failed"
    assert "horizon/service.policy.json" in release.error and problem in release.error, release.error
    assert "Nothing was built" in release.error
    _built_nothing(stack, release)
    _thread_says(stack, release, "horizon/service.policy.json")


def _with_dependency(version_range: str) -> str:
    definition = json.loads("\n".join(line for line in DEFINITION.splitlines()[3:]))
    definition["requiredServices"] = [{"url": "gps", "org": ORG, "versionRange": version_range, "arch": "$ARCH"}]
    return json.dumps(definition, indent=2)


def test_a_missing_dependency_is_refused_before_the_build_and_a_present_one_passes(stack: Stack) -> None:
    add_commit(stack.source_path, {"horizon/service.definition.json": _with_dependency("[1.0.0,2.0.0)"),
                                   "horizon/service.policy.json": json.dumps(POLICY)}, tag="v2.0.4")
    release = _publish(stack, "publish hello 2.0.4 --registry local")
    assert release.state == "failed"
    for words in ("`acme/gps` (amd64) in `[1.0.0,2.0.0)`", "no version of it is in the Exchange", "publish it first",
                  "Nothing was built"):
        assert words in release.error, (words, release.error)
    _built_nothing(stack, release)
    _thread_says(stack, release, "publish it first")

    with _exchange(stack) as c:  # the dependency, published for both arches (not signed: the Exchange allows it)
        for arch in ("amd64", "arm64"):
            body = {"label": "gps", "public": False, "url": "gps", "version": "1.4.0", "arch": arch,
                    "sharable": "multiple", "deployment": "", "deploymentSignature": ""}
            assert c.post(f"orgs/{ORG}/services", json=body).status_code == 201, arch
    add_commit(stack.source_path, {"index.html": "hello 2.0.5\n"}, tag="v2.0.5")
    release = _publish(stack, "publish hello 2.0.5 --registry local")
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish"))
    assert stack.exchange.service(ORG, "hello_2.0.5_arm64")["requiredServices"][0]["url"] == "gps"  # type: ignore


def _verify(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgebot", "--config", str(stack.config_path), "verify", *args],
                          capture_output=True, text=True, env=stack.env(), timeout=120)


def _arch_section(output: str, arch: str) -> str:
    return output.split(f"\n{arch}:\n", 1)[1].split(":\n", 1)[0]


def test_verify_reports_a_tampered_deployment_and_a_deleted_image_per_arch(stack: Stack) -> None:
    good = _verify(stack, "hello", "2.0.1")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "hello 2.0.1 in org `acme` verifies for `amd64`, `arm64`" in good.stdout
    for line in ("signature verifies with stored key `edgebot.public.pem`", "service policy is present",
                 "is pinned, in its registry, for arm64"):
        assert line in good.stdout, line

    state = stack.exchange.state
    with state.lock:  # the deployment string changed in the Exchange: its signature no longer covers it
        record = state.services[ORG]["hello_2.0.1_amd64"]
        original = record["deployment"]
        record["deployment"] = original.replace('"hello"', '"hello2"', 1)
    try:
        tampered = _verify(stack, "hello", "2.0.1")
    finally:
        with state.lock:
            record["deployment"] = original
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert "does not verify for `amd64`" in tampered.stdout
    assert "signature verifies with none of the 1 key(s) stored with the service" in _arch_section(tampered.stdout,
                                                                                                  "amd64")
    assert ":x:" not in _arch_section(tampered.stdout, "arm64")

    store = stack.store()
    published = next(r for r in (store.require(i) for i in stack.release_ids())
                     if r.version == "2.0.5" and r.state == "succeeded")
    digest = published.results["arm64"].digest
    with stack.registry._http() as http:  # type: ignore[union-attr]  # the registry's own API, as an admin would
        assert http.delete(f"/v2/edge/hello_arm64/manifests/{digest}").status_code == 202
    deleted = _verify(stack, "hello", "2.0.5")
    assert deleted.returncode == 1, deleted.stdout + deleted.stderr
    assert "does not verify for `arm64`" in deleted.stdout and "`amd64`" not in deleted.stdout.splitlines()[0]
    arm = _arch_section(deleted.stdout, "arm64")
    assert f"hello_arm64@{digest}` is not in its registry" in arm, arm
    assert "dependency `acme/gps` (arm64) in `[1.0.0,2.0.0)` is published" in arm
    assert ":x:" not in _arch_section(deleted.stdout, "amd64")


def test_slash_verify_queues_a_job_that_posts_the_report_in_the_channel(stack: Stack) -> None:
    refused = stack.command("verify nosuch 1.0.0").json()
    assert refused["response_type"] == "ephemeral" and "`nosuch` is not in edgebot's catalog" in refused["text"]
    before = len(stack.slack.messages(CHANNEL_ID))
    answer = stack.command("verify hello 2.0.1").json()
    assert answer["response_type"] == "ephemeral" and "Verifying" in answer["text"], answer
    verdict = "hello 2.0.1 in org `acme` verifies for `amd64`, `arm64`"
    report = wait_until(lambda: [m for m in stack.slack.messages(CHANNEL_ID)[before:] if verdict in m["text"]],
                        timeout=120, what="the verify report in the channel")
    assert not report[0].get("thread_ts") or report[0]["thread_ts"] == report[0]["ts"]  # a message of its own
    assert "signature verifies with stored key `edgebot.public.pem`" in json.dumps(report[0]["blocks"])
    jobs = [k.decode() for k in stack.redis().scan_iter("rq:job:v-*-verify")]
    assert jobs and all(k.count("-") == 2 for k in jobs), jobs  # v-<16 hex>-verify: ids only, deterministic
